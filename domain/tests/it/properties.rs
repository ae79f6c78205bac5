//! Properties of the ledger over random interleavings of every kind of
//! commit across many users, checked after every step.

use std::collections::BTreeMap;

use domain::Loaded;
use domain::gift::{self, GiftState, SendGift};
use domain::ledger::{self, GiftToCredit, LedgerCommand, LedgerState, PENDING_PAYOUTS_MAX, PayoutPolicy};
use domain::stream::StreamState;
use events_schema::{Account, Actor, Envelope, Event, EventMeta, GENESIS_HASH, Money, StreamSnapshot, StreamStatus};
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::spec::{at, user};

const USERS: usize = 20;
const PAYOUT_MIN_COINS: i64 = 100;
const HOST_SHARE_BPS: u32 = 7000;

#[derive(Debug, Clone)]
enum Op {
    Purchase { user: usize, coins: i64 },
    Refund { pick: usize, fraction_bps: i64 },
    Gift { viewer: usize, host: usize, unit_coins: i64, quantity: i64 },
    Credit { host: usize, batch_max: usize, replay: bool },
    RequestPayout { host: usize, coins: i64 },
    Approve { host: usize, pick: usize },
    Reject { host: usize, pick: usize },
    Adjust { user: usize, coins: i64 },
    ToggleStream { host: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let u = 0..USERS;
    prop_oneof![
        3 => (u.clone(), 1i64..=5000).prop_map(|(user, coins)| Op::Purchase { user, coins }),
        1 => (any::<usize>(), 1i64..=10_000).prop_map(|(pick, fraction_bps)| Op::Refund { pick, fraction_bps }),
        6 => (u.clone(), u.clone(), 1i64..=400, 1i64..=5)
            .prop_map(|(viewer, host, unit_coins, quantity)| Op::Gift { viewer, host, unit_coins, quantity }),
        3 => (u.clone(), 1usize..=30, any::<bool>()).prop_map(|(host, batch_max, replay)| Op::Credit { host, batch_max, replay }),
        2 => (u.clone(), 1i64..=3000).prop_map(|(host, coins)| Op::RequestPayout { host, coins }),
        1 => (u.clone(), any::<usize>()).prop_map(|(host, pick)| Op::Approve { host, pick }),
        1 => (u.clone(), any::<usize>()).prop_map(|(host, pick)| Op::Reject { host, pick }),
        1 => (u.clone(), -2000i64..=2000).prop_map(|(user, coins)| Op::Adjust { user, coins }),
        1 => u.prop_map(|host| Op::ToggleStream { host }),
    ]
}

struct Purchase {
    user: usize,
    payment_id: String,
    coins: i64,
    refunded_coins: i64,
}

struct QueuedGift {
    host: usize,
    gift: GiftToCredit,
}

/// Everything a run has written, and a model of every account's balance
/// computed from the transfers alone.
struct World {
    ledgers: Vec<Loaded<LedgerState>>,
    histories: Vec<Vec<Envelope>>,
    streams: Vec<StreamState>,
    purchases: Vec<Purchase>,
    uncredited: Vec<QueuedGift>,
    credited: Vec<QueuedGift>,
    balances: BTreeMap<Account, i64>,
    position: u64,
    ids: u128,
}

impl World {
    fn new() -> World {
        World {
            ledgers: (0..USERS).map(|i| Loaded::new(ledger::initial_state(user(i as u128)))).collect(),
            histories: (0..USERS).map(|_| Vec::new()).collect(),
            streams: (0..USERS)
                .map(|i| {
                    Some(StreamSnapshot { host_id: user(i as u128), status: StreamStatus::Live, started_at: at(0) })
                })
                .collect(),
            purchases: Vec::new(),
            uncredited: Vec::new(),
            credited: Vec::new(),
            balances: BTreeMap::new(),
            position: 0,
            ids: 0,
        }
    }

    fn next_id(&mut self) -> u128 {
        self.ids += 1;
        self.ids
    }

    fn meta(&mut self) -> EventMeta {
        let n = self.next_id();
        EventMeta {
            event_id: Uuid::from_u128(n),
            occurred_at: at(n as i64),
            command_id: format!("cmd-{n}"),
            correlation_id: format!("corr-{n}"),
            actor: Actor::system("proptest"),
        }
    }

    fn decide(&self, who: usize, command: &LedgerCommand) -> Result<Vec<Event>, &'static str> {
        ledger::decide(&self.ledgers[who].state, command).map_err(|e| e.code())
    }

    /// Appends accepted events to `who`'s ledger; returns their positions.
    fn commit(&mut self, who: usize, events: Vec<Event>) -> Vec<u64> {
        let mut positions = Vec::new();
        for event in events {
            let prev = self.ledgers[who].state.clone();
            ledger::check_commit(&prev, &event).expect("every new commit keeps the invariants");
            let meta = self.meta();
            let envelope = self.ledgers[who].seal(&meta, event);
            let commit = envelope.event.ledger_commit().expect("a ledger commit").clone();
            for t in &commit.transfers {
                *self.balances.entry(t.from).or_default() -= t.amount_coins;
                *self.balances.entry(t.to).or_default() += t.amount_coins;
            }
            let after = commit.state_after.wallet_coins;
            if !matches!(envelope.event, Event::PurchaseRefunded(_)) && after < 0 {
                assert!(after >= prev.snapshot.wallet_coins, "only a refund drives a wallet further below zero");
            }
            let loaded = std::mem::replace(&mut self.ledgers[who], Loaded::new(prev));
            self.ledgers[who] = loaded.apply(&envelope, ledger::evolve);
            self.histories[who].push(envelope);
            self.position += 1;
            positions.push(self.position);
        }
        positions
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Purchase { user, coins } => {
                let payment_id = format!("pi_{}", self.next_id());
                let events = self.decide(
                    user,
                    &LedgerCommand::PurchaseCoins { payment_id: payment_id.clone(), coins, source_position: 0 },
                );
                self.commit(user, events.expect("a purchase is always accepted"));
                self.purchases.push(Purchase { user, payment_id, coins, refunded_coins: 0 });
            }
            Op::Refund { pick, fraction_bps } => {
                if self.purchases.is_empty() {
                    return;
                }
                let i = pick % self.purchases.len();
                let p = &self.purchases[i];
                let remaining = p.coins - p.refunded_coins;
                if remaining == 0 {
                    return;
                }
                // A partial refund of part of what remains, rounded up; a
                // fraction of 10000 refunds it all.
                let coins = (remaining * fraction_bps + 9_999) / 10_000;
                let (who, payment_id) = (p.user, p.payment_id.clone());
                let events = self.decide(who, &LedgerCommand::RefundPurchase { payment_id, coins, source_position: 0 });
                self.commit(who, events.expect("a refund is always accepted"));
                self.purchases[i].refunded_coins += coins;
            }
            Op::Gift { viewer, host, unit_coins, quantity } => {
                let command = SendGift {
                    stream_id: user(1000 + host as u128),
                    gift_id: "rose".into(),
                    quantity,
                    unit_coins,
                    host_share_bps: HOST_SHARE_BPS,
                };
                let result = gift::decide(
                    GiftState { viewer: &self.ledgers[viewer].state, stream: &self.streams[host] },
                    &command,
                )
                .map_err(|e| e.code());
                let live = self.streams[host].as_ref().map(|s| s.status) == Some(StreamStatus::Live);
                let coins = unit_coins * quantity;
                let expected = if viewer == host {
                    Err("self_gift_forbidden")
                } else if !live {
                    Err("stream_not_live")
                } else if self.ledgers[viewer].state.snapshot.wallet_coins < coins {
                    Err("insufficient_funds")
                } else {
                    Ok(())
                };
                assert_eq!(result.as_ref().map(|_| ()).map_err(|e| *e), expected);
                if let Ok(events) = result {
                    let positions = self.commit(viewer, events);
                    self.uncredited.push(QueuedGift {
                        host,
                        gift: GiftToCredit {
                            source_position: positions[0],
                            viewer_id: user(viewer as u128),
                            stream_id: command.stream_id,
                            coins,
                            host_share_bps: HOST_SHARE_BPS,
                            sent_at: at(0),
                            matures_at: at(0),
                        },
                    });
                }
            }
            Op::Credit { host, batch_max, replay } => {
                let mut batch: Vec<GiftToCredit> = Vec::new();
                if replay {
                    // A reactor restarted after a crash sends gifts again
                    // that were already credited.
                    let again = self.credited.iter().filter(|q| q.host == host).rev().take(3);
                    let mut again: Vec<GiftToCredit> = again.map(|q| q.gift.clone()).collect();
                    again.reverse();
                    batch.extend(again);
                }
                let mut fresh = Vec::new();
                let mut kept = Vec::new();
                for q in self.uncredited.drain(..) {
                    if q.host == host && fresh.len() < batch_max {
                        fresh.push(q);
                    } else {
                        kept.push(q);
                    }
                }
                self.uncredited = kept;
                batch.extend(fresh.iter().map(|q| q.gift.clone()));
                let events =
                    self.decide(host, &LedgerCommand::CreditGifts { gifts: batch }).expect("credits are accepted");
                assert_eq!(events.is_empty(), fresh.is_empty(), "a credit commit exactly when there is something new");
                if let Some(Event::GiftsReceived(received)) = events.first() {
                    assert_eq!(received.gifts.len(), fresh.len(), "replayed gifts are skipped");
                }
                self.commit(host, events);
                self.credited.extend(fresh);
            }
            Op::RequestPayout { host, coins } => {
                let payout_id = Uuid::from_u128(self.next_id());
                let policy = PayoutPolicy {
                    rate_per_coin: Money { amount: Decimal::new(1, 2), currency: "usd".into() },
                    min_coins: PAYOUT_MIN_COINS,
                };
                let snap = &self.ledgers[host].state.snapshot;
                let expected = if coins < PAYOUT_MIN_COINS {
                    Err("below_minimum")
                } else if snap.earnings_coins < coins {
                    Err("insufficient_earnings")
                } else if snap.pending_payouts.len() >= PENDING_PAYOUTS_MAX {
                    Err("too_many_pending_payouts")
                } else {
                    Ok(())
                };
                let command = LedgerCommand::RequestPayout {
                    payout_id,
                    coins,
                    destination: "acct".into(),
                    policy,
                    requested_at: at(0),
                };
                let result = self.decide(host, &command);
                assert_eq!(result.as_ref().map(|_| ()).map_err(|e| *e), expected);
                if let Ok(events) = result {
                    self.commit(host, events);
                }
            }
            Op::Approve { host, pick } | Op::Reject { host, pick } => {
                let pending = &self.ledgers[host].state.snapshot.pending_payouts;
                let payout_id = if pending.is_empty() {
                    Uuid::from_u128(u128::MAX)
                } else {
                    pending[pick % pending.len()].payout_id
                };
                let command = if matches!(op, Op::Approve { .. }) {
                    LedgerCommand::ApprovePayout { payout_id, external_ref: "po".into() }
                } else {
                    LedgerCommand::RejectPayout { payout_id, reason: "no".into() }
                };
                let result = self.decide(host, &command);
                if pending.is_empty() {
                    assert_eq!(result, Err("payout_not_pending"));
                } else {
                    self.commit(host, result.expect("a pending payout can be decided"));
                }
            }
            Op::Adjust { user, coins } => {
                let wallet = self.ledgers[user].state.snapshot.wallet_coins;
                let expected = if coins == 0 {
                    Err("validation_failed")
                } else if coins < 0 && wallet < -coins {
                    Err("insufficient_funds")
                } else {
                    Ok(())
                };
                let command = LedgerCommand::Adjust { coins, reason: "prop".into(), admin_id: Uuid::nil() };
                let result = self.decide(user, &command);
                assert_eq!(result.as_ref().map(|_| ()).map_err(|e| *e), expected);
                if let Ok(events) = result {
                    self.commit(user, events);
                }
            }
            Op::ToggleStream { host } => {
                if let Some(s) = self.streams[host].as_mut() {
                    s.status = if s.status == StreamStatus::Live { StreamStatus::Ended } else { StreamStatus::Live };
                }
            }
        }
    }

    fn balance(&self, account: Account) -> i64 {
        self.balances.get(&account).copied().unwrap_or(0)
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        let total: i128 = self.balances.values().map(|b| i128::from(*b)).sum();
        assert_eq!(total, 0, "all balances sum to zero");
        for (i, loaded) in self.ledgers.iter().enumerate() {
            let u = user(i as u128);
            let snap = &loaded.state.snapshot;
            // The state carried in the commits is the state the transfers give.
            assert_eq!(snap.wallet_coins, self.balance(Account::Wallet(u)));
            assert_eq!(snap.earnings_coins, self.balance(Account::Earnings(u)));
            assert_eq!(snap.held_coins, self.balance(Account::PayoutHold(u)));
            ledger::check_snapshot(snap).expect("earnings and hold non-negative, hold equals pending payouts");
        }
        let in_transit: i64 = self.uncredited.iter().map(|q| q.gift.coins).sum();
        assert!(self.balance(Account::TransitGifts) >= 0, "transit never below zero");
        assert_eq!(self.balance(Account::TransitGifts), in_transit, "transit holds exactly the uncredited gifts");
    }
}

/// Verifies a user's stored chain and rebuilds the state from it alone.
fn replay_chain(user_id: Uuid, stored: &[Vec<u8>]) -> Result<LedgerState, String> {
    let mut loaded = Loaded::new(ledger::initial_state(user_id));
    for (i, bytes) in stored.iter().enumerate() {
        let envelope = Envelope::verify(bytes).map_err(|e| format!("event {i}: {e}"))?;
        if envelope.header.prev_hash != loaded.last_hash {
            return Err(format!("event {i}: chain broken"));
        }
        if envelope.header.sequence != i as u64 + 1 {
            return Err(format!("event {i}: sequence {}", envelope.header.sequence));
        }
        ledger::check_commit(&loaded.state, &envelope.event).map_err(|e| format!("event {i}: {e}"))?;
        loaded = loaded.apply(&envelope, ledger::evolve);
    }
    Ok(loaded.state)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn balances_sum_to_zero_and_constraints_hold_after_any_interleaving(
        ops in prop::collection::vec(op(), 1..60),
        tamper in (any::<usize>(), any::<usize>(), any::<usize>(), 1u8..=255),
    ) {
        let mut world = World::new();
        for op in &ops {
            world.step(op);
            world.check();
        }
        // Rebuilding every ledger from its stored events alone gives the
        // same state, and every hash chain verifies.
        let mut stored: Vec<Vec<Vec<u8>>> = Vec::new();
        for (i, history) in world.histories.iter().enumerate() {
            let bytes: Vec<Vec<u8>> = history.iter().map(Envelope::encode).collect();
            let rebuilt = replay_chain(user(i as u128), &bytes).expect("every chain verifies");
            prop_assert_eq!(&rebuilt, &world.ledgers[i].state);
            if let Some(first) = history.first() {
                prop_assert_eq!(first.header.prev_hash.as_str(), GENESIS_HASH);
            }
            stored.push(bytes);
        }
        // Any altered byte of any stored event breaks its chain.
        let (who, which, at_byte, xor) = tamper;
        let with_events: Vec<usize> = (0..USERS).filter(|i| !stored[*i].is_empty()).collect();
        if !with_events.is_empty() {
            let who = with_events[who % with_events.len()];
            let chain = &mut stored[who];
            let which = which % chain.len();
            let at_byte = at_byte % chain[which].len();
            chain[which][at_byte] ^= xor;
            prop_assert!(replay_chain(user(who as u128), chain).is_err(), "an altered byte went unnoticed");
        }
    }
}
