//! A deterministic generator of consistent, sealed event logs.

mod activity;
mod payments;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use events_schema::{
    Account, Actor, Envelope, Event, EventMeta, GENESIS_HASH, LedgerCommit, LedgerSnapshot, PendingPayout, Role,
    StreamSnapshot, Transfer,
};
use uuid::Uuid;

/// What the generator makes.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Users registered (the first `hosts` of them host streams).
    pub users: u32,
    pub hosts: u32,
    pub start: DateTime<Utc>,
}

impl Default for GeneratorConfig {
    fn default() -> GeneratorConfig {
        GeneratorConfig {
            seed: 42,
            users: 2_000,
            hosts: 40,
            start: DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default(),
        }
    }
}

/// splitmix64: deterministic and good enough for test data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).unwrap_or(0)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// A subject's hash chain.
#[derive(Debug, Clone)]
struct Chain {
    sequence: u64,
    hash: String,
}

impl Chain {
    fn new() -> Chain {
        Chain { sequence: 0, hash: GENESIS_HASH.to_string() }
    }
}

#[derive(Debug)]
struct GenUser {
    id: Uuid,
    email: String,
    username: String,
    roles: Vec<Role>,
    sessions_epoch: u64,
    user_chain: Chain,
    ledger_chain: Chain,
    ledger: LedgerSnapshot,
}

#[derive(Debug)]
struct GenStream {
    id: Uuid,
    chain: Chain,
    snapshot: StreamSnapshot,
    /// Viewers present (user indexes), bounded by `VIEWERS_TRACKED_MAX`.
    viewers: Vec<usize>,
}

#[derive(Debug)]
struct PendingCredit {
    source_position: u64,
    viewer_id: Uuid,
    stream_id: Uuid,
    coins: i64,
    host_share_bps: u32,
}

#[derive(Debug)]
struct GenHost {
    user: usize,
    channel: Chain,
    live: Option<GenStream>,
    pending: Vec<PendingCredit>,
}

/// Viewers the generator remembers per stream (joins beyond are repeats).
const VIEWERS_TRACKED_MAX: usize = 300;
/// Gifts a host accumulates before the (simulated) reactor credits them.
const PENDING_CREDITS_MAX: usize = 64;
/// Recent purchases remembered for refunds.
const PURCHASES_TRACKED_MAX: usize = 256;
const GIFTS: [(&str, i64); 5] = [("rose", 1), ("heart", 5), ("star", 10), ("crown", 100), ("rocket", 500)];
const PACKAGES: [i64; 4] = [100, 500, 1_000, 5_000];
const HOST_SHARE_BPS: u32 = 7_000;
const PAYOUT_MIN_COINS: i64 = 1_000;
const PENDING_PAYOUTS_MAX: usize = 20;

/// An endless, deterministic, consistent event log: users register (with
/// their reservations and command records), buy coins (some through
/// Checkout Sessions), get refunds, start, join, leave and end streams,
/// send gifts that the hosts' credits follow in batches, request payouts
/// that are paid or rejected, and get adjusted. Every ledger commit carries
/// the state its transfers give, every subject's hash chain is intact, and
/// gift credits name their source positions (the generator knows the
/// position each event will have in a log that holds only its events).
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    config: GeneratorConfig,
    users: Vec<GenUser>,
    hosts: Vec<GenHost>,
    /// (buyer, payment id, coins, position of its last posted decision).
    purchases: VecDeque<(usize, String, i64, u64)>,
    /// The hash chains of the payments of `purchases` (a refund continues
    /// its payment's chain, then drops it).
    payment_chains: BTreeMap<String, Chain>,
    queue: VecDeque<Bytes>,
    /// Position the next sealed event will have.
    next_position: u64,
    clock: DateTime<Utc>,
    counter: u64,
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Generator {
        let rng = Rng(config.seed);
        let clock = config.start;
        Generator {
            rng,
            config,
            users: Vec::new(),
            hosts: Vec::new(),
            purchases: VecDeque::new(),
            payment_chains: BTreeMap::new(),
            queue: VecDeque::new(),
            next_position: 1,
            clock,
            counter: 0,
        }
    }

    /// The first `events` events of a generator with `config`.
    pub fn log(config: GeneratorConfig, events: u64) -> impl Iterator<Item = Bytes> {
        Generator::new(config).take(usize::try_from(events).unwrap_or(usize::MAX))
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.rng.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    fn meta(&mut self, actor: Actor) -> EventMeta {
        self.counter += 1;
        self.clock += Duration::milliseconds(i64::try_from(self.rng.below(40)).unwrap_or(0));
        let mut tail = [0u8; 10];
        tail[..8].copy_from_slice(&self.counter.to_be_bytes());
        let millis = u64::try_from(self.clock.timestamp_millis()).unwrap_or(0);
        let event_id = uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid();
        EventMeta {
            event_id,
            occurred_at: self.clock,
            command_id: format!("cmd-{}", self.counter),
            correlation_id: format!("corr-{}", self.counter),
            actor,
        }
    }

    /// Seals `event` on `chain` and queues it; returns its position.
    fn emit(&mut self, meta: &EventMeta, event: Event, chain: Option<&mut Chain>) -> u64 {
        let mut fresh = Chain::new();
        let chain = chain.unwrap_or(&mut fresh);
        let envelope = Envelope::seal(meta, event, chain.sequence + 1, &chain.hash);
        chain.sequence += 1;
        chain.hash = envelope.header.hash.clone();
        self.queue.push_back(Bytes::from(envelope.encode()));
        let position = self.next_position;
        self.next_position += 1;
        position
    }

    /// A user's ledger commit of `transfers` (and a pending-payout change),
    /// with the state after it.
    fn commit(&mut self, user: usize, transfers: Vec<Transfer>, pending: PendingEdit) -> LedgerCommit {
        let u = &mut self.users[user];
        let id = u.id;
        let mut s = u.ledger.clone();
        for t in &transfers {
            for (account, sign) in [(t.from, -1i64), (t.to, 1i64)] {
                let delta = sign * t.amount_coins;
                match account {
                    Account::Wallet(o) if o == id => s.wallet_coins += delta,
                    Account::Earnings(o) if o == id => s.earnings_coins += delta,
                    Account::PayoutHold(o) if o == id => s.held_coins += delta,
                    _ => {}
                }
            }
        }
        match pending {
            PendingEdit::None => {}
            PendingEdit::Add(p) => s.pending_payouts.push(p),
            PendingEdit::Remove(id) => s.pending_payouts.retain(|p| p.payout_id != id),
            PendingEdit::CreditedUpTo(position) => s.last_credited_position = position,
        }
        u.ledger = s.clone();
        LedgerCommit { transfers, state_after: s }
    }

    fn ledger_event(&mut self, user: usize, meta: &EventMeta, event: Event) -> u64 {
        let mut chain = std::mem::replace(&mut self.users[user].ledger_chain, Chain::new());
        let position = self.emit(meta, event, Some(&mut chain));
        self.users[user].ledger_chain = chain;
        position
    }

    fn step(&mut self) {
        let registered = self.users.len();
        let wanted = usize::try_from(self.config.users.max(2)).unwrap_or(2);
        if registered < wanted && (registered < 10 || self.rng.percent(8)) {
            self.register();
            return;
        }
        match self.rng.below(100) {
            0..12 => self.purchase(false),
            12..15 => self.purchase(true),
            15..16 => self.refund(),
            16..19 => self.start_stream(),
            19..21 => self.end_stream(),
            21..38 => self.join(),
            38..46 => self.leave(),
            46..78 => self.gift(),
            78..86 => self.credit_host(),
            86..89 => self.request_payout(),
            89..92 => self.settle_payout(),
            92..94 => self.adjust(),
            94..97 => self.command_record(),
            97..99 => self.change_roles(),
            _ => self.session(),
        }
    }
}

enum PendingEdit {
    None,
    Add(PendingPayout),
    Remove(Uuid),
    CreditedUpTo(u64),
}

fn transfer(from: Account, to: Account, amount_coins: i64) -> Transfer {
    Transfer { from, to, amount_coins }
}

impl Iterator for Generator {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        // Every step emits at least one event in practice; the bound keeps a
        // step that emits none (every fallback declined) from spinning.
        for _ in 0..1_000 {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            self.step();
        }
        self.queue.pop_front()
    }
}
