//! Test and benchmark support, public so that the `tests` crate can reuse
//! it against real NATS: a deterministic generator of realistic, consistent
//! event logs (built with `events-schema` types and sealed, hash chains
//! intact), in-memory and file-backed log sources, and a checksum of every
//! collection of a store.
//!
//! Nothing here is used by the runner or the stores.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use events_schema::{
    Account, Actor, ActorKind, CoinsPurchased, CommandRecorded, Envelope, Event, EventMeta, GENESIS_HASH, GiftSent,
    GiftsReceived, LedgerAdjusted, LedgerCommit, LedgerSnapshot, Money, PaymentFlag, PaymentFlagged, PaymentPosted,
    PaymentPurchase, PaymentPurchaseCredited, PaymentRefundRecorded, PaymentSnapshot, PayoutApproved, PayoutRejected,
    PayoutRequested, PendingPayout, PurchaseRefunded, ReceivedGift, ReservationClaimed, ReservationKind, Role,
    StreamEnded, StreamSnapshot, StreamStarted, StreamStatus, StripeEventRecorded, Transfer, UserRegistered,
    UserRolesChanged, UserSnapshot, ViewerJoined, ViewerLeft,
};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ProjectionError;
use crate::model::ProjectionVersion;
use crate::source::{LogMessage, LogSource};
use crate::store::{ReadStore, SCAN_LIMIT_MAX};

// ---------------------------------------------------------------------------
// Log sources

/// An in-memory log: positions are 1-based indexes. For tests; a long log
/// costs its full size in memory (see `FileLog` for benchmarks).
#[derive(Debug, Default)]
pub struct MemoryLog {
    messages: RwLock<Vec<Bytes>>,
}

impl MemoryLog {
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    pub fn from_events(events: impl IntoIterator<Item = Bytes>) -> MemoryLog {
        MemoryLog { messages: RwLock::new(events.into_iter().collect()) }
    }

    /// Appends stored bytes; returns their position.
    pub fn append(&self, payload: Bytes) -> u64 {
        let mut messages = self.messages.write().unwrap_or_else(PoisonError::into_inner);
        messages.push(payload);
        messages.len() as u64
    }

    pub fn len(&self) -> u64 {
        self.messages.read().unwrap_or_else(PoisonError::into_inner).len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message at a position, for assertions.
    pub fn get(&self, position: u64) -> Option<Bytes> {
        let index = usize::try_from(position.checked_sub(1)?).ok()?;
        self.messages.read().unwrap_or_else(PoisonError::into_inner).get(index).cloned()
    }
}

impl LogSource for MemoryLog {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        let messages = self.messages.read().unwrap_or_else(PoisonError::into_inner);
        let start = usize::try_from(position.max(1) - 1).unwrap_or(usize::MAX).min(messages.len());
        let end = start.saturating_add(usize::try_from(max_messages).unwrap_or(usize::MAX)).min(messages.len());
        let out = messages[start..end]
            .iter()
            .enumerate()
            .map(|(i, payload)| LogMessage { position: (start + i + 1) as u64, payload: payload.clone() })
            .collect();
        Box::pin(std::future::ready(Ok(out)))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(std::future::ready(Ok(self.len())))
    }
}

/// Messages between two entries of a `FileLog`'s sparse index.
const FILE_INDEX_STRIDE: u64 = 4_096;
/// The largest record a `FileLog` accepts (a sealed batch of 10,000 gifts
/// is ~1.2 MB).
const FILE_RECORD_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// A log in a file of length-prefixed records, read sequentially with a small
/// buffer: a long log at constant memory, for benchmarks. Its reads are
/// blocking file reads (fine for a benchmark, not for a server).
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    len: u64,
    /// File offset of positions 1, 1 + stride, 1 + 2 * stride, ...
    index: Vec<u64>,
    cursor: Mutex<FileCursor>,
}

#[derive(Debug)]
struct FileCursor {
    reader: BufReader<File>,
    /// The position the reader is at.
    next_position: u64,
}

fn io_err(e: std::io::Error) -> ProjectionError {
    ProjectionError::Source(e.to_string())
}

impl FileLog {
    /// Writes `events` to a new file at `path`; returns how many.
    pub fn write(path: &Path, events: impl IntoIterator<Item = Bytes>) -> std::io::Result<u64> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut count = 0u64;
        for event in events {
            let len = u32::try_from(event.len())
                .ok()
                .filter(|l| *l <= FILE_RECORD_BYTES_MAX)
                .ok_or_else(|| std::io::Error::other("record too large"))?;
            out.write_all(&len.to_le_bytes())?;
            out.write_all(&event)?;
            count += 1;
        }
        out.flush()?;
        Ok(count)
    }

    /// Opens a file written by `write`, indexing it in one pass.
    pub fn open(path: &Path) -> Result<FileLog, ProjectionError> {
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let mut index = Vec::new();
        let mut offset = 0u64;
        let mut len = 0u64;
        let mut header = [0u8; 4];
        loop {
            match reader.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(io_err(e)),
            }
            if len.is_multiple_of(FILE_INDEX_STRIDE) {
                index.push(offset);
            }
            let record = u32::from_le_bytes(header);
            reader.seek_relative(i64::from(record)).map_err(io_err)?;
            offset += 4 + u64::from(record);
            len += 1;
        }
        let reader = BufReader::new(File::open(path).map_err(io_err)?);
        Ok(FileLog {
            path: path.to_path_buf(),
            len,
            index,
            cursor: Mutex::new(FileCursor { reader, next_position: 1 }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_blocking(&self, position: u64, max: u32) -> Result<Vec<LogMessage>, ProjectionError> {
        let position = position.max(1);
        if position > self.len {
            return Ok(Vec::new());
        }
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        if cursor.next_position != position {
            // Seek to the indexed position at or before, then skip forward.
            let slot = (position - 1) / FILE_INDEX_STRIDE;
            let offset = self.index.get(usize::try_from(slot).unwrap_or(usize::MAX)).copied().unwrap_or(0);
            cursor.reader.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            cursor.next_position = slot * FILE_INDEX_STRIDE + 1;
            let mut header = [0u8; 4];
            while cursor.next_position < position {
                cursor.reader.read_exact(&mut header).map_err(io_err)?;
                cursor.reader.seek_relative(i64::from(u32::from_le_bytes(header))).map_err(io_err)?;
                cursor.next_position += 1;
            }
        }
        let count = u64::from(max).min(self.len - position + 1);
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        let mut header = [0u8; 4];
        for _ in 0..count {
            cursor.reader.read_exact(&mut header).map_err(io_err)?;
            let record = u32::from_le_bytes(header);
            if record > FILE_RECORD_BYTES_MAX {
                return Err(ProjectionError::Source("corrupt log file".into()));
            }
            let mut payload = vec![0u8; usize::try_from(record).unwrap_or(0)];
            cursor.reader.read_exact(&mut payload).map_err(io_err)?;
            out.push(LogMessage { position: cursor.next_position, payload: Bytes::from(payload) });
            cursor.next_position += 1;
        }
        Ok(out)
    }
}

impl LogSource for FileLog {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        Box::pin(std::future::ready(self.read_blocking(position, max_messages)))
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(std::future::ready(Ok(self.len)))
    }
}

// ---------------------------------------------------------------------------
// Checksums

/// One collection's document count and order-independent digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionChecksum {
    pub documents: u64,
    /// Wrapping sum of the first 16 bytes of each document's SHA-256 (of its
    /// JSON): independent of the order documents are scanned in.
    pub digest: u128,
}

/// A checksum of every collection of some projections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreChecksum {
    /// By collection base name (so two versions of a projection compare).
    pub collections: BTreeMap<&'static str, CollectionChecksum>,
}

impl std::fmt::Display for StoreChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, c) in &self.collections {
            writeln!(f, "{name}: {} documents, digest {:032x}", c.documents, c.digest)?;
        }
        Ok(())
    }
}

/// Scans every collection of `targets` and checksums it. Memory is bounded
/// by one scan page.
pub async fn checksum(store: &dyn ReadStore, targets: &[ProjectionVersion]) -> Result<StoreChecksum, ProjectionError> {
    let mut out = StoreChecksum::default();
    for target in targets {
        for collection in target.projection.collections() {
            let mut sum = CollectionChecksum { documents: 0, digest: 0 };
            let mut after: Option<String> = None;
            // Bounded by the collection's size: each page moves the key on.
            loop {
                let page = store.scan(*target, *collection, after.as_deref(), SCAN_LIMIT_MAX).await?;
                for doc in &page.docs {
                    let json = serde_json::to_vec(doc).map_err(|e| ProjectionError::Store(e.to_string()))?;
                    let hash = Sha256::digest(&json);
                    let mut first = [0u8; 16];
                    first.copy_from_slice(&hash[..16]);
                    sum.digest = sum.digest.wrapping_add(u128::from_le_bytes(first));
                    sum.documents += 1;
                }
                match page.next_key {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
            out.collections.insert(collection.base_name(), sum);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The generator

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
            _ => self.change_roles(),
        }
    }

    fn register(&mut self) {
        let n = self.users.len();
        let id = self.uuid();
        let email = format!("user{n}@example.com");
        let username = format!("user{n}");
        let roles = if n == 0 { vec![Role::User, Role::Admin, Role::Finance] } else { vec![Role::User] };
        let meta = self.meta(Actor::user(id));
        let mut user_chain = Chain::new();
        self.emit(
            &meta,
            Event::UserRegistered(UserRegistered {
                user_id: id,
                email: email.clone(),
                username: username.clone(),
                password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${n}"),
                roles: roles.clone(),
            }),
            Some(&mut user_chain),
        );
        for (kind, value) in [(ReservationKind::Email, &email), (ReservationKind::Username, &username)] {
            let meta = self.meta(Actor::user(id));
            let event = Event::ReservationClaimed(ReservationClaimed { kind, value: value.clone(), user_id: id });
            self.emit(&meta, event, None);
        }
        let meta = self.meta(Actor::user(id));
        self.emit(
            &meta,
            Event::CommandRecorded(CommandRecorded {
                scope: format!("user:{id}"),
                command_id: format!("register-{n}"),
                fingerprint: format!("{:064x}", n),
                event_count: 3,
                event_positions: Vec::new(),
            }),
            None,
        );
        self.users.push(GenUser {
            id,
            email,
            username,
            roles,
            user_chain,
            ledger_chain: Chain::new(),
            ledger: LedgerSnapshot::default(),
        });
        if self.hosts.len() < usize::try_from(self.config.hosts).unwrap_or(0) && n > 0 {
            self.hosts.push(GenHost { user: n, channel: Chain::new(), live: None, pending: Vec::new() });
        }
    }

    fn random_user(&mut self) -> usize {
        self.rng.index(self.users.len())
    }

    fn purchase(&mut self, with_session: bool) {
        let user = self.random_user();
        let id = self.users[user].id;
        let coins = PACKAGES[self.rng.index(PACKAGES.len())];
        self.counter += 1;
        let payment_id = format!("pi_{}", self.counter);
        let stripe_event_id = format!("evt_{}", self.counter);
        if with_session {
            // The Stripe event is recorded first, then the purchase: the
            // order the webhook handler appends them in.
            let session_id = format!("cs_{}", self.counter);
            let body = serde_json::json!({
                "id": stripe_event_id,
                "type": "checkout.session.completed",
                "data": {"object": {
                    "id": session_id, "object": "checkout.session", "payment_intent": payment_id,
                    "payment_status": "paid", "client_reference_id": id.to_string(),
                    "metadata": {"userId": id.to_string(), "packageId": format!("coins-{coins}")}
                }}
            })
            .to_string();
            let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(stripe_event_id.clone()) });
            let event = Event::StripeEventRecorded(StripeEventRecorded {
                stripe_event_id: stripe_event_id.clone(),
                stripe_event_type: "checkout.session.completed".into(),
                stripe_created: self.clock.timestamp(),
                body,
            });
            self.emit(&meta, event, None);
        }
        let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(stripe_event_id) });
        // The webhook's single appends: the payment's decision, its posting
        // on the buyer's ledger (naming the decision's position), the mark.
        let purchase = PaymentPurchase {
            user_id: id,
            package_id: format!("coins-{coins}"),
            coins,
            amount_cents: coins,
            currency: "usd".into(),
        };
        let state_after = PaymentSnapshot {
            purchase: Some(purchase.clone()),
            posted_position: Some(0),
            ..PaymentSnapshot::default()
        };
        let credited = Event::PaymentPurchaseCredited(PaymentPurchaseCredited {
            payment_id: payment_id.clone(),
            stripe_event_id: format!("evt_{}", self.counter),
            purchase,
            state_after: state_after.clone(),
        });
        let mut chain = Chain::new();
        let decision = self.emit(&meta, credited, Some(&mut chain));
        let commit =
            self.commit(user, vec![transfer(Account::ExternalStripe, Account::Wallet(id), coins)], PendingEdit::None);
        let event = Event::CoinsPurchased(CoinsPurchased {
            user_id: id,
            payment_id: payment_id.clone(),
            coins,
            source_position: decision,
            commit,
        });
        let ledger_position = self.ledger_event(user, &meta, event);
        let posted = Event::PaymentPosted(PaymentPosted {
            payment_id: payment_id.clone(),
            posted_position: decision,
            ledger_position,
            state_after: PaymentSnapshot { posted_position: Some(decision), ..state_after },
        });
        self.emit(&meta, posted, Some(&mut chain));
        self.payment_chains.insert(payment_id.clone(), chain);
        // Now and then a flagged payment beside it.
        if self.rng.percent(5) {
            let flagged = Event::PaymentFlagged(PaymentFlagged {
                payment_id: format!("pi_flagged_{}", self.counter),
                stripe_event_id: format!("evt_f{}", self.counter),
                flag: PaymentFlag::UnknownUser,
                detail: "nobody".into(),
                state_after: PaymentSnapshot {
                    flags: vec![PaymentFlag::UnknownUser],
                    posted_position: Some(0),
                    ..PaymentSnapshot::default()
                },
            });
            self.emit(&meta, flagged, None);
        }
        if self.purchases.len() >= PURCHASES_TRACKED_MAX
            && let Some((_, dropped, _, _)) = self.purchases.pop_front()
        {
            self.payment_chains.remove(&dropped);
        }
        self.purchases.push_back((user, payment_id, coins, decision));
    }

    fn refund(&mut self) {
        let Some((user, payment_id, coins, posted)) = self.purchases.pop_front() else {
            return self.purchase(false);
        };
        let id = self.users[user].id;
        let bought = coins;
        // Partial or full; may drive the wallet negative, as refunds may.
        let coins = if self.rng.percent(50) { coins } else { (coins / 2).max(1) };
        let meta = self.meta(Actor { kind: ActorKind::Stripe, id: Some(format!("evt_r{}", self.counter)) });
        // A cent per coin: the refund's share of the amount is its coins.
        let purchase = PaymentPurchase {
            user_id: id,
            package_id: format!("coins-{bought}"),
            coins: bought,
            amount_cents: bought,
            currency: "usd".into(),
        };
        let state_after = PaymentSnapshot {
            purchase: Some(purchase),
            charge_amount_cents: bought,
            amount_refunded_cents: coins,
            coins_reversed: coins,
            flags: vec![],
            posted_position: Some(posted),
        };
        let mut chain = self.payment_chains.remove(&payment_id).unwrap_or_else(Chain::new);
        let recorded = Event::PaymentRefundRecorded(PaymentRefundRecorded {
            payment_id: payment_id.clone(),
            stripe_event_id: Some(format!("evt_r{}", self.counter)),
            charge_amount_cents: bought,
            amount_refunded_cents: coins,
            coins,
            state_after: state_after.clone(),
        });
        let decision = self.emit(&meta, recorded, Some(&mut chain));
        let commit =
            self.commit(user, vec![transfer(Account::Wallet(id), Account::ExternalStripe, coins)], PendingEdit::None);
        let event = Event::PurchaseRefunded(PurchaseRefunded {
            user_id: id,
            payment_id: payment_id.clone(),
            coins,
            source_position: decision,
            commit,
        });
        let ledger_position = self.ledger_event(user, &meta, event);
        let posted = Event::PaymentPosted(PaymentPosted {
            payment_id,
            posted_position: decision,
            ledger_position,
            state_after: PaymentSnapshot { posted_position: Some(decision), ..state_after },
        });
        self.emit(&meta, posted, Some(&mut chain));
    }

    fn start_stream(&mut self) {
        if self.hosts.is_empty() {
            return self.purchase(false);
        }
        let offline: Vec<usize> = (0..self.hosts.len()).filter(|h| self.hosts[*h].live.is_none()).collect();
        if offline.is_empty() {
            return self.join();
        }
        let h = offline[self.rng.index(offline.len())];
        let host_id = self.users[self.hosts[h].user].id;
        let stream_id = self.uuid();
        let meta = self.meta(Actor::user(host_id));
        let snapshot = StreamSnapshot { host_id, status: StreamStatus::Live, started_at: meta.occurred_at };
        let categories = ["music", "gaming", "talk", "sports"];
        let category = categories[self.rng.index(categories.len())].to_string();
        let mut chain = Chain::new();
        let event = Event::StreamStarted(StreamStarted {
            stream_id,
            host_id,
            title: format!("stream {}", self.counter),
            category,
            state_after: snapshot.clone(),
        });
        self.emit(&meta, event, Some(&mut chain));
        let mut channel = std::mem::replace(&mut self.hosts[h].channel, Chain::new());
        let event = Event::ChannelWentLive(events_schema::ChannelWentLive { host_id, stream_id });
        self.emit(&meta, event, Some(&mut channel));
        self.hosts[h].channel = channel;
        self.hosts[h].live = Some(GenStream { id: stream_id, chain, snapshot, viewers: Vec::new() });
    }

    fn live_host(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.hosts.len()).filter(|h| self.hosts[*h].live.is_some()).collect();
        if live.is_empty() { None } else { Some(live[self.rng.index(live.len())]) }
    }

    fn end_stream(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_id = self.users[self.hosts[h].user].id;
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        let meta = self.meta(Actor::user(host_id));
        let state_after = StreamSnapshot { status: StreamStatus::Ended, ..stream.snapshot.clone() };
        let event = Event::StreamEnded(StreamEnded { stream_id: stream.id, host_id, ended_by: host_id, state_after });
        self.emit(&meta, event, Some(&mut stream.chain));
        let mut channel = std::mem::replace(&mut self.hosts[h].channel, Chain::new());
        let event = Event::ChannelWentOffline(events_schema::ChannelWentOffline { host_id, stream_id: stream.id });
        self.emit(&meta, event, Some(&mut channel));
        self.hosts[h].channel = channel;
    }

    fn join(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_user = self.hosts[h].user;
        let viewer = self.random_user();
        if viewer == host_user {
            return;
        }
        let viewer_id = self.users[viewer].id;
        let meta = self.meta(Actor::user(viewer_id));
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        let event =
            Event::ViewerJoined(ViewerJoined { stream_id: stream.id, viewer_id, state_after: stream.snapshot.clone() });
        self.emit(&meta, event, Some(&mut stream.chain));
        // Repeated joins happen (a second device): the projection dedupes.
        if !stream.viewers.contains(&viewer) && stream.viewers.len() < VIEWERS_TRACKED_MAX {
            stream.viewers.push(viewer);
        }
        self.hosts[h].live = Some(stream);
    }

    fn leave(&mut self) {
        let Some(h) = self.live_host() else { return self.join() };
        let Some(mut stream) = self.hosts[h].live.take() else { return };
        // Mostly a viewer present; sometimes one who is not (a stale client).
        let viewer = if !stream.viewers.is_empty() && self.rng.percent(90) {
            let i = self.rng.index(stream.viewers.len());
            stream.viewers.swap_remove(i)
        } else {
            self.random_user()
        };
        let viewer_id = self.users[viewer].id;
        let meta = self.meta(Actor::user(viewer_id));
        let event =
            Event::ViewerLeft(ViewerLeft { stream_id: stream.id, viewer_id, state_after: stream.snapshot.clone() });
        self.emit(&meta, event, Some(&mut stream.chain));
        self.hosts[h].live = Some(stream);
    }

    fn gift(&mut self) {
        let Some(h) = self.live_host() else { return self.start_stream() };
        let host_user = self.hosts[h].user;
        let (stream_id, present) = match &self.hosts[h].live {
            Some(s) => (s.id, s.viewers.clone()),
            None => return,
        };
        let viewer = if !present.is_empty() && self.rng.percent(80) {
            present[self.rng.index(present.len())]
        } else {
            self.random_user()
        };
        if viewer == host_user {
            return;
        }
        let (gift_id, unit_coins) = GIFTS[self.rng.index(GIFTS.len())];
        let quantity = i64::try_from(self.rng.below(3)).unwrap_or(0) + 1;
        let coins = unit_coins * quantity;
        if self.users[viewer].ledger.wallet_coins < coins {
            return self.purchase(false);
        }
        let viewer_id = self.users[viewer].id;
        let host_id = self.users[host_user].id;
        let meta = self.meta(Actor::user(viewer_id));
        let commit = self.commit(
            viewer,
            vec![transfer(Account::Wallet(viewer_id), Account::TransitGifts, coins)],
            PendingEdit::None,
        );
        let event = Event::GiftSent(GiftSent {
            user_id: viewer_id,
            stream_id,
            host_id,
            gift_id: gift_id.to_string(),
            quantity,
            unit_coins,
            coins,
            host_share_bps: HOST_SHARE_BPS,
            commit,
        });
        let position = self.ledger_event(viewer, &meta, event);
        self.hosts[h].pending.push(PendingCredit {
            source_position: position,
            viewer_id,
            stream_id,
            coins,
            host_share_bps: HOST_SHARE_BPS,
        });
        if self.hosts[h].pending.len() >= PENDING_CREDITS_MAX {
            self.credit(h);
        }
    }

    fn credit_host(&mut self) {
        let with_pending: Vec<usize> = (0..self.hosts.len()).filter(|h| !self.hosts[*h].pending.is_empty()).collect();
        if with_pending.is_empty() {
            return self.gift();
        }
        let h = with_pending[self.rng.index(with_pending.len())];
        self.credit(h);
    }

    /// The gift reactor's batch: the host's side of its pending gifts.
    fn credit(&mut self, h: usize) {
        let pending = std::mem::take(&mut self.hosts[h].pending);
        let Some(last) = pending.last().map(|p| p.source_position) else { return };
        let user = self.hosts[h].user;
        let host_id = self.users[user].id;
        let mut gifts = Vec::with_capacity(pending.len());
        let (mut host_total, mut platform_total) = (0i64, 0i64);
        for p in pending {
            let host_coins = p.coins * i64::from(p.host_share_bps) / 10_000;
            host_total += host_coins;
            platform_total += p.coins - host_coins;
            gifts.push(ReceivedGift {
                source_position: p.source_position,
                viewer_id: p.viewer_id,
                stream_id: p.stream_id,
                coins: p.coins,
                host_coins,
            });
        }
        let mut transfers = Vec::with_capacity(2);
        if host_total > 0 {
            transfers.push(transfer(Account::TransitGifts, Account::Earnings(host_id), host_total));
        }
        if platform_total > 0 {
            transfers.push(transfer(Account::TransitGifts, Account::PlatformRevenue, platform_total));
        }
        let meta = self.meta(Actor::system("gift-reactor"));
        let commit = self.commit(user, transfers, PendingEdit::CreditedUpTo(last));
        let event = Event::GiftsReceived(GiftsReceived { user_id: host_id, gifts, commit });
        self.ledger_event(user, &meta, event);
    }

    fn request_payout(&mut self) {
        let h = self.rng.index(self.hosts.len().max(1));
        let Some(user) = self.hosts.get(h).map(|h| h.user) else { return self.purchase(false) };
        let s = &self.users[user].ledger;
        if s.earnings_coins < PAYOUT_MIN_COINS || s.pending_payouts.len() >= PENDING_PAYOUTS_MAX {
            return self.credit_host();
        }
        let coins = PAYOUT_MIN_COINS
            + i64::try_from(self.rng.below(u64::try_from(s.earnings_coins - PAYOUT_MIN_COINS + 1).unwrap_or(1)))
                .unwrap_or(0);
        let id = self.users[user].id;
        let payout_id = self.uuid();
        let meta = self.meta(Actor::user(id));
        // 0.01 usd per coin, exact: coins / 100 with two decimals.
        let amount = format!("{}.{:02}", coins / 100, coins % 100).parse().unwrap_or_default();
        let commit = self.commit(
            user,
            vec![transfer(Account::Earnings(id), Account::PayoutHold(id), coins)],
            PendingEdit::Add(PendingPayout { payout_id, coins }),
        );
        let event = Event::PayoutRequested(PayoutRequested {
            user_id: id,
            payout_id,
            coins,
            fiat: Money { amount, currency: "usd".into() },
            destination: format!("acct_{}", user),
            commit,
        });
        self.ledger_event(user, &meta, event);
    }

    fn settle_payout(&mut self) {
        let with_pending: Vec<usize> = (0..self.hosts.len())
            .filter(|h| !self.users[self.hosts[*h].user].ledger.pending_payouts.is_empty())
            .collect();
        if with_pending.is_empty() {
            return self.request_payout();
        }
        let user = self.hosts[with_pending[self.rng.index(with_pending.len())]].user;
        let id = self.users[user].id;
        let PendingPayout { payout_id, coins } = self.users[user].ledger.pending_payouts[0].clone();
        let admin = self.users[0].id;
        let meta = self.meta(Actor::admin(admin));
        if self.rng.percent(80) {
            let commit = self.commit(
                user,
                vec![transfer(Account::PayoutHold(id), Account::ExternalPayouts, coins)],
                PendingEdit::Remove(payout_id),
            );
            let event = Event::PayoutApproved(PayoutApproved {
                user_id: id,
                payout_id,
                coins,
                external_ref: format!("po_{}", self.counter),
                commit,
            });
            self.ledger_event(user, &meta, event);
        } else {
            let commit = self.commit(
                user,
                vec![transfer(Account::PayoutHold(id), Account::Earnings(id), coins)],
                PendingEdit::Remove(payout_id),
            );
            let event = Event::PayoutRejected(PayoutRejected {
                user_id: id,
                payout_id,
                coins,
                reason: "destination account closed".into(),
                commit,
            });
            self.ledger_event(user, &meta, event);
        }
    }

    fn adjust(&mut self) {
        let user = self.random_user();
        let id = self.users[user].id;
        let admin = self.users[0].id;
        let wallet = self.users[user].ledger.wallet_coins;
        let (coins, transfers) = if wallet >= 50 && self.rng.percent(40) {
            (-50, vec![transfer(Account::Wallet(id), Account::PlatformAdjustments, 50)])
        } else {
            (25, vec![transfer(Account::PlatformAdjustments, Account::Wallet(id), 25)])
        };
        let meta = self.meta(Actor::admin(admin));
        let commit = self.commit(user, transfers, PendingEdit::None);
        let event = Event::LedgerAdjusted(LedgerAdjusted {
            user_id: id,
            coins,
            reason: "support ticket".into(),
            admin_id: admin,
            commit,
        });
        self.ledger_event(user, &meta, event);
    }

    fn command_record(&mut self) {
        let user = self.random_user();
        let id = self.users[user].id;
        let meta = self.meta(Actor::user(id));
        let event = Event::CommandRecorded(CommandRecorded {
            scope: format!("user:{id}"),
            command_id: format!("key-{}", self.counter),
            fingerprint: format!("{:064x}", self.counter),
            event_count: 1,
            event_positions: Vec::new(),
        });
        self.emit(&meta, event, None);
    }

    fn change_roles(&mut self) {
        let user = self.random_user();
        let u = &mut self.users[user];
        let (granted, revoked) = if u.roles.contains(&Role::Ops) {
            u.roles.retain(|r| *r != Role::Ops);
            (vec![], vec![Role::Ops])
        } else {
            u.roles.push(Role::Ops);
            (vec![Role::Ops], vec![])
        };
        let state_after = UserSnapshot { email: u.email.clone(), username: u.username.clone(), roles: u.roles.clone() };
        let id = u.id;
        let admin = self.users[0].id;
        let meta = self.meta(Actor::admin(admin));
        let event = Event::UserRolesChanged(UserRolesChanged { user_id: id, granted, revoked, state_after });
        let mut chain = std::mem::replace(&mut self.users[user].user_chain, Chain::new());
        self.emit(&meta, event, Some(&mut chain));
        self.users[user].user_chain = chain;
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
