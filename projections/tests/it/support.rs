//! Building logs of hand-written events for specifications.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use events_schema::{
    Account, Actor, CoinsPurchased, Envelope, Event, EventMeta, GENESIS_HASH, LedgerCommit, LedgerSnapshot, Transfer,
};
use projections::testing::MemoryLog;
use projections::{ProjectionError, ReadStore, Runner, RunnerConfig, RunnerExit, SqliteStore};
use tempfile::TempDir;
use uuid::Uuid;

/// A log being written by a test: each event sealed on its subject's chain.
pub struct Given {
    pub log: Arc<MemoryLog>,
    chains: HashMap<String, (u64, String)>,
    clock: DateTime<Utc>,
    counter: u64,
    /// Ledger state per user, so that commits carry the right `stateAfter`.
    ledgers: HashMap<Uuid, LedgerSnapshot>,
}

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

impl Given {
    pub fn new() -> Given {
        Given {
            log: Arc::new(MemoryLog::new()),
            chains: HashMap::new(),
            clock: t0(),
            counter: 0,
            ledgers: HashMap::new(),
        }
    }

    /// Appends `event` one second after the previous one; returns its position.
    pub fn event(&mut self, event: Event) -> u64 {
        self.counter += 1;
        self.clock += Duration::seconds(1);
        let mut tail = [0u8; 10];
        tail[..8].copy_from_slice(&self.counter.to_be_bytes());
        let meta = EventMeta {
            event_id: uuid::Builder::from_unix_timestamp_millis(self.clock.timestamp_millis() as u64, &tail)
                .into_uuid(),
            occurred_at: self.clock,
            command_id: format!("cmd-{}", self.counter),
            correlation_id: format!("corr-{}", self.counter),
            actor: Actor::system("test"),
        };
        let subject = format!("{}.{}", event.aggregate_kind().as_str(), event.aggregate_id());
        let (sequence, prev) = self.chains.get(&subject).cloned().unwrap_or((0, GENESIS_HASH.to_string()));
        let envelope = Envelope::seal(&meta, event, sequence + 1, &prev);
        self.chains.insert(subject, (sequence + 1, envelope.header.hash.clone()));
        self.log.append(Bytes::from(envelope.encode()))
    }

    /// Moves the clock on (the next event occurs `by` plus a second later).
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
    }

    pub fn raw(&mut self, bytes: &[u8]) -> u64 {
        self.log.append(Bytes::copy_from_slice(bytes))
    }

    /// When the event at `position` occurred.
    pub fn time(&self, position: u64) -> DateTime<Utc> {
        Envelope::decode(&self.log.get(position).unwrap()).unwrap().header.occurred_at
    }

    pub fn envelope(&self, position: u64) -> Envelope {
        Envelope::decode(&self.log.get(position).unwrap()).unwrap()
    }

    /// A commit of `user` with the state its transfers give.
    pub fn commit(&mut self, user: Uuid, transfers: Vec<Transfer>) -> LedgerCommit {
        self.commit_with(user, transfers, |_| {})
    }

    pub fn commit_with(
        &mut self,
        user: Uuid,
        transfers: Vec<Transfer>,
        edit: impl FnOnce(&mut LedgerSnapshot),
    ) -> LedgerCommit {
        let s = self.ledgers.entry(user).or_default();
        for t in &transfers {
            for (account, sign) in [(t.from, -1), (t.to, 1)] {
                match account {
                    Account::Wallet(o) if o == user => s.wallet_coins += sign * t.amount_coins,
                    Account::Earnings(o) if o == user => s.earnings_coins += sign * t.amount_coins,
                    Account::PayoutHold(o) if o == user => s.held_coins += sign * t.amount_coins,
                    _ => {}
                }
            }
        }
        edit(s);
        LedgerCommit { transfers, state_after: s.clone() }
    }
}

/// `user` buys `coins` with Stripe payment `payment_id`; its position.
pub fn purchase(given: &mut Given, user: Uuid, payment_id: &str, coins: i64) -> u64 {
    let commit = given.commit(user, vec![transfer(Account::ExternalStripe, Account::Wallet(user), coins)]);
    given.event(Event::CoinsPurchased(CoinsPurchased {
        user_id: user,
        payment_id: payment_id.into(),
        coins,
        source_position: 0,
        commit,
    }))
}

pub fn transfer(from: Account, to: Account, amount_coins: i64) -> Transfer {
    Transfer { from, to, amount_coins }
}

/// A fresh embedded store in a temporary directory.
pub async fn sqlite() -> (Arc<SqliteStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

/// Runs every projection over the log, to its end.
pub async fn project_all(store: Arc<dyn ReadStore>, log: Arc<MemoryLog>) -> u64 {
    let runner = Runner::new(store, log, RunnerConfig::new("test")).unwrap();
    runner.catch_up().await.unwrap()
}

/// The log projected into a fresh embedded store.
pub async fn projected(given: &Given) -> (Arc<SqliteStore>, TempDir) {
    let (store, dir) = sqlite().await;
    project_all(store.clone(), given.log.clone()).await;
    (store, dir)
}

/// splitmix64, for kill points that are random but reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// The runner run in a task until `stop` is sent (or dropped).
pub fn spawn_until_stopped(
    runner: Arc<Runner>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<RunnerExit, ProjectionError>>) {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    (stop, task)
}
