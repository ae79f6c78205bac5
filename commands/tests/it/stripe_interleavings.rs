//! The Stripe path (record, decision, posting, mark; purchases, refunds,
//! settling; repeats; deliveries that die between two steps) interleaved at
//! random with gifts, gift credits, payouts and adjustments on the same
//! users, against a real nats-server. After every step: every ledger
//! invariant (balances sum to zero, each ledger's state is what its
//! transfers give, hold equals pending payouts, no wallet negative by its
//! holder's own spending) and no payment decision posted twice. At the end,
//! once Stripe has delivered every event again (it retries until answered):
//! every decision posted exactly once, nothing pending, and each buyer's
//! coins from each payment what an independent model says.
//!
//! A crash is a delivery whose steps are appended one by one (as
//! `commands::testing::append_alone` does) and that stops after one of
//! them; the next delivery may come to the long-lived handler (whose view of
//! the ledgers the crashed one never updated) or to a new one on the same
//! log (another process). `STRIPE_INTERLEAVING_CASES` (default 12) sets the number of runs.

use std::collections::{BTreeMap, BTreeSet};

use commands::handler::{CommandError, Commands, ledger_subject, payment_subject, stripe_event_subject};
use commands::log::EventLog;
use domain::ledger::{self, GiftToCredit, LedgerCommand};
use domain::payment::{self, Buyer, Offered, PackageRef, PaymentCommand, Price};
use events_schema::{Account, Actor, Envelope, Event, StripeEventRecorded};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::world::{World, admin, balance, balances, config, ctx, register_user};

/// Payments per run, each bought by one of the buyers.
const PAYMENTS: usize = 2;
/// Buyers per run; they are also the viewers of the host's stream.
const BUYERS: usize = 2;
/// Refund events per payment: Stripe's running `amount_refunded`, growing.
const REFUNDS_PER_PAYMENT: usize = 3;
/// The gift's unit price.
const GIFT_UNIT_COINS: i64 = 7;
/// Gifts per credit, as a reactor batches them.
const CREDIT_BATCH_GIFTS: usize = 20;

fn cases() -> u32 {
    // Not PROPTEST_CASES: each case runs against a real server (about a
    // second), so the pure properties' 10,000 would take hours.
    std::env::var("STRIPE_INTERLEAVING_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12)
}

/// Where a delivery dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// It does not: the handler runs it through.
    Never,
    AfterRecord,
    AfterDecision,
    AfterPosting,
}

#[derive(Debug, Clone)]
enum Op {
    /// A purchase event: the Checkout Session's or the PaymentIntent's.
    Confirm {
        payment: usize,
        via_intent: bool,
        crash: Crash,
        new_handler: bool,
    },
    Refund {
        payment: usize,
        which: usize,
        crash: Crash,
        new_handler: bool,
    },
    Settle {
        payment: usize,
    },
    Gift {
        viewer: usize,
        quantity: i64,
    },
    Credit {
        replay: bool,
    },
    RequestPayout {
        coins: i64,
    },
    Approve {
        pick: usize,
    },
    Reject {
        pick: usize,
    },
    Adjust {
        user: usize,
        coins: i64,
    },
}

/// A package, its price, and its refund events' running amounts.
#[derive(Debug, Clone)]
struct Sale {
    coins: i64,
    amount_cents: i64,
    refunded_cents: [i64; REFUNDS_PER_PAYMENT],
}

fn sale() -> impl Strategy<Value = Sale> {
    (1i64..=3_000, 1i64..=2_000).prop_flat_map(|(coins, amount_cents)| {
        proptest::array::uniform3(1i64..=amount_cents).prop_map(move |mut refunded_cents| {
            refunded_cents.sort_unstable();
            Sale { coins, amount_cents, refunded_cents }
        })
    })
}

fn crash() -> impl Strategy<Value = Crash> {
    prop_oneof![
        3 => Just(Crash::Never),
        1 => Just(Crash::AfterRecord),
        1 => Just(Crash::AfterDecision),
        1 => Just(Crash::AfterPosting),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PAYMENTS, any::<bool>(), crash(), any::<bool>())
            .prop_map(|(payment, via_intent, crash, new_handler)| Op::Confirm { payment, via_intent, crash, new_handler }),
        3 => (0..PAYMENTS, 0..REFUNDS_PER_PAYMENT, crash(), any::<bool>())
            .prop_map(|(payment, which, crash, new_handler)| Op::Refund { payment, which, crash, new_handler }),
        1 => (0..PAYMENTS).prop_map(|payment| Op::Settle { payment }),
        4 => (0..BUYERS, 1i64..=60).prop_map(|(viewer, quantity)| Op::Gift { viewer, quantity }),
        2 => any::<bool>().prop_map(|replay| Op::Credit { replay }),
        2 => (1_000i64..=3_000).prop_map(|coins| Op::RequestPayout { coins }),
        1 => any::<usize>().prop_map(|pick| Op::Approve { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Reject { pick }),
        2 => (0..BUYERS + 1, -400i64..=400).prop_map(|(user, coins)| Op::Adjust { user, coins }),
    ]
}

/// One run's users, stream and payments.
struct Run<'w> {
    world: &'w World,
    buyers: [Uuid; BUYERS],
    host: Uuid,
    stream: Uuid,
    sales: Vec<Sale>,
    payment_ids: Vec<String>,
    /// Every Stripe event some delivery started, with what it carries:
    /// Stripe delivers each again until one is answered.
    attempted: BTreeMap<String, (usize, PaymentCommand)>,
    keys: u64,
}

impl Run<'_> {
    fn key(&mut self, what: &str) -> String {
        self.keys += 1;
        format!("{what}-{}", self.keys)
    }

    fn buyer_of(&self, payment: usize) -> Uuid {
        self.buyers[payment % BUYERS]
    }

    fn confirm_event(&self, payment: usize, via_intent: bool) -> (String, PaymentCommand) {
        let event_id = format!("evt_{}_{}", self.payment_ids[payment], if via_intent { "intent" } else { "session" });
        let sale = &self.sales[payment];
        let command = PaymentCommand::ConfirmPurchase {
            stripe_event_id: event_id.clone(),
            buyer: Buyer::Known(self.buyer_of(payment)),
            package: PackageRef {
                id: format!("coins_{}", sale.coins),
                coins: Some(sale.coins),
                price: Some(Price { amount_cents: sale.amount_cents, currency: "usd".into() }),
            },
            amount_cents: sale.amount_cents,
            currency: "usd".into(),
            offered: Offered::NotStated,
        };
        (event_id, command)
    }

    fn refund_event(&self, payment: usize, which: usize) -> (String, PaymentCommand) {
        let event_id = format!("evt_{}_refund_{which}", self.payment_ids[payment]);
        let sale = &self.sales[payment];
        let command = PaymentCommand::RecordRefund {
            stripe_event_id: event_id.clone(),
            charge_amount_cents: sale.amount_cents,
            amount_refunded_cents: sale.refunded_cents[which],
        };
        (event_id, command)
    }

    /// A handler: the run's long-lived one, or a new one on the same log.
    fn handler(&self, new_handler: bool) -> Commands {
        if new_handler { Commands::new(self.world.log.clone(), config()) } else { self.world.commands.clone() }
    }

    async fn deliver(&mut self, payment: usize, event: (String, PaymentCommand), crash: Crash, new_handler: bool) {
        let (event_id, command) = event;
        self.attempted.insert(event_id.clone(), (payment, command.clone()));
        let payment_id = self.payment_ids[payment].clone();
        match crash {
            Crash::Never => {
                let handler = self.handler(new_handler);
                handler
                    .stripe_event(record(&event_id, &command), Some((payment_id, command)))
                    .await
                    .unwrap_or_else(|e| panic!("{event_id} handled: {e}"));
            }
            crash => self.deliver_and_die(&event_id, &payment_id, command, crash).await,
        }
    }

    /// The steps of a delivery, appended one by one as a handler would,
    /// until the one after which it dies. A payment with a decision pending
    /// is left to a handler (this delivery dies at its record).
    async fn deliver_and_die(&self, event_id: &str, payment_id: &str, command: PaymentCommand, crash: Crash) {
        let log = &self.world.log;
        let record_subject = stripe_event_subject(event_id);
        if log.last_on_subject(&record_subject).await.expect("the record's subject").is_none() {
            let event = Event::StripeEventRecorded(record(event_id, &command));
            append_alone(self.world, &record_subject, event).await;
        }
        if crash == Crash::AfterRecord {
            return;
        }
        let state = payment_state(self.world, payment_id).await;
        if payment::pending(&state).is_some() {
            return;
        }
        let Ok(events) = payment::decide(&state, &command) else { return };
        let [decision] = &events[..] else { return };
        append_alone(self.world, &payment_subject(payment_id), decision.clone()).await;
        if crash == Crash::AfterDecision {
            return;
        }
        let Some(posting) = payment::pending(&payment_state(self.world, payment_id).await) else { return };
        let buyer = posting.effect.user_id;
        let (ledger, _) = fresh(self.world).ledger_state(buyer).await.expect("the buyer's ledger");
        let commit = payment::post(&posting, &ledger).expect("a posting of a pending decision").remove(0);
        append_alone(self.world, &ledger_subject(buyer), commit).await;
        // Crash::AfterPosting: the mark never comes.
    }

    async fn step(&mut self, op: &Op) {
        let commands = self.world.commands.clone();
        match *op {
            Op::Confirm { payment, via_intent, crash, new_handler } => {
                let event = self.confirm_event(payment, via_intent);
                self.deliver(payment, event, crash, new_handler).await;
            }
            Op::Refund { payment, which, crash, new_handler } => {
                let event = self.refund_event(payment, which);
                self.deliver(payment, event, crash, new_handler).await;
            }
            Op::Settle { payment } => {
                commands.settle_payment(&self.payment_ids[payment]).await.expect("settled");
            }
            Op::Gift { viewer, quantity } => {
                let viewer = self.buyers[viewer];
                let key = self.key("gift");
                let sent = commands
                    .send_gift(&ctx(viewer, &key), viewer, self.stream, "rose".into(), quantity, GIFT_UNIT_COINS)
                    .await;
                allow_only(sent, &["insufficient_funds"], "gift");
            }
            Op::Credit { replay } => {
                let events = self.world.read_all().await;
                let credited: BTreeSet<u64> = crate::world::credited_positions(&events).into_iter().collect();
                let mut gifts: Vec<GiftToCredit> = events
                    .iter()
                    .filter_map(|(position, e)| match &e.event {
                        Event::GiftSent(g) if g.host_id == self.host && (replay || !credited.contains(position)) => {
                            Some(GiftToCredit {
                                source_position: *position,
                                viewer_id: g.user_id,
                                stream_id: g.stream_id,
                                coins: g.coins,
                                host_share_bps: g.host_share_bps,
                                sent_at: e.header.occurred_at,
                                matures_at: e.header.occurred_at,
                            })
                        }
                        _ => None,
                    })
                    .collect();
                gifts.truncate(CREDIT_BATCH_GIFTS);
                if !gifts.is_empty() {
                    commands.credit_gifts(self.host, gifts).await.expect("credited");
                }
            }
            Op::RequestPayout { coins } => {
                let key = self.key("payout");
                let requested = commands
                    .request_payout(&ctx(self.host, &key), self.host, Uuid::now_v7(), coins, "acct_1".into())
                    .await;
                allow_only(requested, &["insufficient_earnings", "too_many_pending_payouts"], "payout request");
            }
            Op::Approve { pick } | Op::Reject { pick } => {
                let (ledger, _) = commands.ledger_state(self.host).await.expect("the host's ledger");
                let pending = &ledger.snapshot.pending_payouts;
                if pending.is_empty() {
                    return;
                }
                let payout_id = pending[pick % pending.len()].payout_id;
                let command = if matches!(op, Op::Approve { .. }) {
                    LedgerCommand::ApprovePayout { payout_id, external_ref: "po_1".into() }
                } else {
                    LedgerCommand::RejectPayout { payout_id, reason: "no".into() }
                };
                let key = self.key("decide-payout");
                commands.ledger(&ctx(admin(), &key), self.host, command).await.expect("a pending payout is decided");
            }
            Op::Adjust { user, coins } => {
                let user = if user < BUYERS { self.buyers[user] } else { self.host };
                if coins == 0 {
                    return;
                }
                let key = self.key("adjust");
                let command = LedgerCommand::Adjust { coins, reason: "prop".into(), admin_id: admin() };
                let adjusted = commands.ledger(&ctx(admin(), &key), user, command).await;
                allow_only(adjusted, &["insufficient_funds"], "adjustment");
            }
        }
    }

    /// Stripe's retries: every event some delivery started is delivered
    /// again (to a new handler), and every payment settled.
    async fn drain(&mut self) {
        let attempted: Vec<(String, (usize, PaymentCommand))> =
            self.attempted.iter().map(|(id, v)| (id.clone(), v.clone())).collect();
        for (event_id, (payment, command)) in attempted {
            self.deliver(payment, (event_id, command), Crash::Never, true).await;
        }
        for payment_id in &self.payment_ids {
            fresh(self.world).settle_payment(payment_id).await.expect("settled");
        }
    }

    /// The invariants that hold after every step.
    async fn check(&self) -> Result<Vec<(u64, Envelope)>, TestCaseError> {
        let events = self.world.read_all().await;
        let balances = balances(&events);
        let handler = fresh(self.world);
        for user in self.buyers.iter().chain([&self.host]) {
            let (state, _) = handler.ledger_state(*user).await.expect("a ledger");
            let snap = &state.snapshot;
            prop_assert_eq!(snap.wallet_coins, balance(&balances, Account::Wallet(*user)));
            prop_assert_eq!(snap.earnings_coins, balance(&balances, Account::Earnings(*user)));
            prop_assert_eq!(snap.held_coins, balance(&balances, Account::PayoutHold(*user)));
            prop_assert!(ledger::check_snapshot(snap).is_ok(), "{:?}: {snap:?}", ledger::check_snapshot(snap));
        }
        for (position, envelope) in &events {
            // Only a refund takes a wallet below zero: never its holder's
            // own spending, nor an admin's debit.
            let spent = match &envelope.event {
                Event::GiftSent(g) => Some(&g.commit),
                Event::LedgerAdjusted(a) if a.coins < 0 => Some(&a.commit),
                _ => None,
            };
            if let Some(commit) = spent {
                prop_assert!(commit.state_after.wallet_coins >= 0, "spent below zero at {position}: {envelope:?}");
            }
        }
        let mut records: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, envelope) in &events {
            if let Event::StripeEventRecorded(r) = &envelope.event {
                *records.entry(r.stripe_event_id.as_str()).or_default() += 1;
            }
        }
        prop_assert!(records.values().all(|n| *n == 1), "an event recorded twice: {records:?}");
        for payment_id in &self.payment_ids {
            let (decisions, postings) = decisions_and_postings(&events, payment_id);
            let mut sources: Vec<u64> = postings.iter().map(|(_, source, _)| *source).collect();
            sources.sort_unstable();
            let distinct = sources.len();
            sources.dedup();
            prop_assert_eq!(sources.len(), distinct, "{} has a decision posted twice: {:?}", payment_id, postings);
            for (_, source, coins) in &postings {
                prop_assert_eq!(decisions.get(source), Some(coins), "{}: a posting of no decision", payment_id);
            }
        }
        Ok(events)
    }

    /// After the retries: each decision posted exactly once, nothing
    /// pending, and the coins each payment left with its buyer what the
    /// model says.
    async fn check_settled(&self, events: &[(u64, Envelope)]) -> Result<(), TestCaseError> {
        for (payment, payment_id) in self.payment_ids.iter().enumerate() {
            let state = payment_state(self.world, payment_id).await;
            prop_assert_eq!(payment::pending(&state), None, "{} left pending", payment_id);
            let (decisions, postings) = decisions_and_postings(events, payment_id);
            let posted: BTreeMap<u64, i64> = postings.iter().map(|(_, source, coins)| (*source, *coins)).collect();
            prop_assert_eq!(&posted, &decisions, "{}: every decision posted once", payment_id);
            let purchases = events
                .iter()
                .filter(|(_, e)| matches!(&e.event, Event::PaymentPurchaseCredited(p) if &p.payment_id == payment_id))
                .count();
            let confirmed = self
                .attempted
                .values()
                .any(|(p, c)| *p == payment && matches!(c, PaymentCommand::ConfirmPurchase { .. }));
            prop_assert_eq!(purchases, usize::from(confirmed), "{}: credited once when bought", payment_id);
            let sale = &self.sales[payment];
            let highest_refund = self
                .attempted
                .values()
                .filter_map(|(p, c)| match c {
                    PaymentCommand::RecordRefund { amount_refunded_cents, .. } if *p == payment => {
                        Some(*amount_refunded_cents)
                    }
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            let expected = if confirmed {
                sale.coins - model_coins_due_back(sale.coins, sale.amount_cents, highest_refund)
            } else {
                0
            };
            let net: i64 = postings.iter().map(|(_, _, coins)| coins).sum();
            prop_assert_eq!(net, expected, "{}: {:?}, refunded up to {}", payment_id, sale, highest_refund);
        }
        Ok(())
    }
}

/// Least `k` with `k * amount >= coins * refunded`, by counting up in u128:
/// the model of a refund's coins (at most all of them).
fn model_coins_due_back(coins: i64, amount_cents: i64, refunded_cents: i64) -> i64 {
    let owed = u128::from(coins.unsigned_abs()) * u128::from(refunded_cents.unsigned_abs());
    let amount = u128::from(amount_cents.unsigned_abs());
    let mut k: i64 = 0;
    while k < coins && u128::from(k.unsigned_abs()) * amount < owed {
        k += 1;
    }
    k
}

/// A ledger commit posting a payment's decision: (position, source
/// position, signed coins).
type Posted = (u64, u64, i64);

/// A payment's coin-moving decisions (position -> signed coins) and the
/// ledger commits posting them.
fn decisions_and_postings(events: &[(u64, Envelope)], payment_id: &str) -> (BTreeMap<u64, i64>, Vec<Posted>) {
    let mut decisions = BTreeMap::new();
    let mut postings = Vec::new();
    for (position, envelope) in events {
        match &envelope.event {
            Event::PaymentPurchaseCredited(p) if p.payment_id == payment_id => {
                decisions.insert(*position, p.purchase.coins);
            }
            Event::PaymentRefundRecorded(r) if r.payment_id == payment_id && r.coins > 0 => {
                decisions.insert(*position, -r.coins);
            }
            Event::CoinsPurchased(p) if p.payment_id == payment_id => {
                postings.push((*position, p.source_position, p.coins));
            }
            Event::PurchaseRefunded(r) if r.payment_id == payment_id => {
                postings.push((*position, r.source_position, -r.coins));
            }
            _ => {}
        }
    }
    (decisions, postings)
}

/// Accepted, or refused with one of `codes` (decided from the state).
fn allow_only<T>(result: Result<T, CommandError>, codes: &[&str], what: &str) {
    match result {
        Ok(_) => {}
        Err(CommandError::Domain(e)) if codes.contains(&e.code()) => {}
        Err(e) => panic!("{what}: {e}"),
    }
}

fn record(event_id: &str, command: &PaymentCommand) -> StripeEventRecorded {
    let event_type = match command {
        PaymentCommand::RecordRefund { .. } => "charge.refunded",
        _ => "payment_intent.succeeded",
    };
    StripeEventRecorded {
        stripe_event_id: event_id.into(),
        stripe_event_type: event_type.into(),
        stripe_created: 1_750_000_000,
        body: format!(r#"{{"id":"{event_id}","type":"{event_type}"}}"#),
    }
}

/// A handler with nothing in view: reads everything from the log.
fn fresh(world: &World) -> Commands {
    Commands::new(world.log.clone(), config())
}

async fn append_alone(world: &World, subject: &str, event: Event) -> u64 {
    commands::testing::append_alone(&world.log, subject, event, Actor::stripe("evt_crashed")).await.expect("appended")
}

async fn payment_state(world: &World, payment_id: &str) -> payment::PaymentState {
    match world.log.last_on_subject(&payment_subject(payment_id)).await.expect("the payment's subject") {
        None => payment::initial_state(payment_id),
        Some(last) => {
            let envelope = Envelope::decode(&last.payload).expect("decodes");
            payment::at(payment::evolve(payment::initial_state(payment_id), &envelope.event), last.position)
        }
    }
}

async fn run_case(world: &World, run_number: u64, sales: Vec<Sale>, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut buyers = [Uuid::nil(); BUYERS];
    for (i, buyer) in buyers.iter_mut().enumerate() {
        *buyer = register_user(world, &format!("buyer{i}_{run_number}")).await;
    }
    let host = register_user(world, &format!("host_{run_number}")).await;
    let stream = world.start_stream(host).await;
    let payment_ids = (0..PAYMENTS).map(|p| format!("pi_{run_number}_{p}")).collect();
    let mut run = Run { world, buyers, host, stream, sales, payment_ids, attempted: BTreeMap::new(), keys: 0 };
    for op in ops {
        run.step(op).await;
        run.check().await?;
    }
    run.drain().await;
    let events = run.check().await?;
    run.check_settled(&events).await
}

#[test]
fn the_stripe_path_interleaved_with_gifts_payouts_and_adjustments_keeps_every_invariant() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    // One server for every run: each run has its own users and payments,
    // and the invariants that span the log (sums to zero, one record per
    // event id) hold across runs too.
    let world = runtime.block_on(World::start());
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        // Each shrinking step is a run against the server: keep it short.
        max_shrink_iters: 64,
        ..Config::default()
    });
    let strategy = (proptest::collection::vec(sale(), PAYMENTS), proptest::collection::vec(op(), 1..24));
    let runs = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |(sales, ops)| {
        let run_number = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(run_case(&world, run_number, sales, &ops))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(runs.load(std::sync::atomic::Ordering::Relaxed) >= u64::from(cases()), "every case ran");
    // Each run credited at least one purchase somewhere, or the property
    // would check nothing of the Stripe path: the log has postings.
    let events = runtime.block_on(world.read_all());
    assert!(
        events.iter().any(|(_, e)| matches!(e.event, Event::CoinsPurchased(_))),
        "no run posted a purchase: the strategy generates no Stripe path"
    );
}
