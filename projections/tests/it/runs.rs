//! The projector runner: crashes, active/standby, read your writes, and
//! an unreadable event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::LogSource;
use projections::testing::{Generator, GeneratorConfig, MemoryLog, checksum};
use projections::{
    Projection, ProjectionError, ProjectionVersion, ReadStore, Runner, RunnerConfig, RunnerRole, SqliteStore,
    wait_for_position, wait_for_store_position,
};
use uuid::Uuid;

use crate::support::{Given, Rng, project_all, purchase, spawn_until_stopped, sqlite};

const KILLS: usize = 50;
const LOG_EVENTS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_killed_at_50_random_points_ends_equal_to_a_clean_rebuild() {
    let started = Instant::now();
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), LOG_EVENTS)));
    let targets = ProjectionVersion::all_current();
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_126u64);
    let mut rng = Rng(seed);
    // Kill points spread over the log, in log order; none in the last
    // batches, so that a fault armed at a point has a batch to fire in.
    let mut points: Vec<u64> = (0..KILLS).map(|_| 1 + rng.below(LOG_EVENTS * 95 / 100)).collect();
    points.sort_unstable();
    let mut kill_points = Vec::new();
    let mut killed_at = Vec::new();
    let (mut mid_batch, mut aborted) = (0, 0);
    for (kill, point) in points.iter().enumerate() {
        // A restart: a new store instance on the same file, as a new process.
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let mut config = RunnerConfig::new("node-1");
        config.batch_size_max = 100 + u32::try_from(rng.below(2_000)).unwrap();
        let runner = Runner::new(store.clone(), log.clone(), config).unwrap();
        let status = runner.status();
        let handle = tokio::spawn(async move { runner.run(std::future::pending()).await });
        wait_until("the kill point", Duration::from_secs(120), || {
            status.borrow().applied >= *point || handle.is_finished()
        })
        .await;
        killed_at.push(status.borrow().applied);
        if kill % 2 == 0 {
            // Die inside the next batch's transaction, after a random
            // number of its writes: the transaction is rolled back.
            store.fail_after_writes(1 + rng.below(300));
            wait_until("the injected fault", Duration::from_secs(60), || handle.is_finished()).await;
            match handle.await.unwrap() {
                Err(ProjectionError::InjectedFault { .. }) => mid_batch += 1,
                other => panic!("the runner stopped by itself: {other:?}"),
            }
        } else {
            // Die wherever it is: reading, decoding, or waiting on a commit.
            handle.abort();
            let _ = handle.await;
            aborted += 1;
        }
        store.fail_after_writes(0);
        let checkpoints = store.checkpoints().await.unwrap();
        kill_points.push(checkpoints.iter().map(|c| c.position).min().unwrap_or(0));
        drop(store);
    }
    let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    assert_eq!(project_all(store.clone(), log.clone()).await, LOG_EVENTS);

    let (clean, _clean_dir) = sqlite().await;
    project_all(clean.clone(), log.clone()).await;
    let resumed = checksum(&*store, &targets).await.unwrap();
    assert_eq!(resumed, checksum(&*clean, &targets).await.unwrap());

    let distinct: std::collections::BTreeSet<u64> = killed_at.iter().copied().collect();
    println!(
        "killed {KILLS} times ({mid_batch} inside a transaction, {aborted} aborted) after applying {killed_at:?}; \
         committed checkpoints then {kill_points:?}; {:.1?}\n{resumed}",
        started.elapsed()
    );
    assert_eq!(mid_batch, KILLS / 2);
    assert!(distinct.len() >= 40, "kills at too few distinct points: {killed_at:?}");
    assert!(killed_at.iter().any(|p| *p > LOG_EVENTS / 2), "no kill in the second half");
    assert!(kill_points.windows(2).all(|w| w[0] <= w[1]), "a committed checkpoint went back: {kill_points:?}");
    let trial = store.trial_balance(&projections::PageRequest::default()).await.unwrap();
    assert_eq!(trial.total_coins, 0);
}

/// A short lease, still well above a batch's duration (a debug build on a
/// busy machine), since the lease is renewed between batches.
fn fast_lease(owner: &str) -> RunnerConfig {
    let mut config = RunnerConfig::new(owner);
    config.batch_size_max = 500;
    config.lease_ttl_ms = 2_000;
    config.lease_renew_ms = 400;
    config.standby_poll_ms = 100;
    config.idle_poll_ms = 10;
    config
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_runner_applies_and_a_standby_takes_over_within_a_lease() {
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), 5_000)));
    let dir = tempfile::tempdir().unwrap();
    let a_store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let b_store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let a = Arc::new(Runner::new(a_store.clone(), log.clone(), fast_lease("a")).unwrap());
    let a_status = a.status();
    let a_task = tokio::spawn({
        let a = a.clone();
        async move { a.run(std::future::pending()).await }
    });
    wait_until("a is active", Duration::from_secs(5), || a_status.borrow().role == RunnerRole::Active).await;
    let b = Arc::new(Runner::new(b_store.clone(), log.clone(), fast_lease("b")).unwrap());
    let b_status = b.status();
    let (stop_b, stop_b_rx) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn({
        let b = b.clone();
        async move {
            b.run(async {
                let _ = stop_b_rx.await;
            })
            .await
        }
    });
    wait_until("a has caught up", Duration::from_secs(20), || a_status.borrow().checkpoint == 5_000).await;
    wait_until("b stands by", Duration::from_secs(5), || b_status.borrow().role == RunnerRole::Standby).await;
    // Each of b's tries of the lease that a holds publishes its status
    // again: after three refused tries, b has had three chances to apply.
    let mut b_tries = b_status.clone();
    b_tries.mark_unchanged();
    for attempt in 1..=3 {
        tokio::time::timeout(Duration::from_secs(5), b_tries.changed())
            .await
            .unwrap_or_else(|_| panic!("b's lease try {attempt} within 5 s"))
            .unwrap();
        let status = b_tries.borrow_and_update().clone();
        assert_eq!(status.role, RunnerRole::Standby, "a holds the lease (try {attempt})");
        assert_eq!((status.batches_applied, status.applied), (0, 0), "a standby applies nothing (try {attempt})");
    }

    // The active one dies without giving the lease up: b takes over once
    // the lease expires, and applies what is appended meanwhile.
    a_task.abort();
    let _ = a_task.await;
    let died = Instant::now();
    let mut given_log = Given::new();
    let u = Uuid::from_u128(77);
    purchase(&mut given_log, u, "pi_x", 5);
    log.append(given_log.log.get(1).unwrap());
    wait_until("b is active", Duration::from_secs(5), || b_status.borrow().role == RunnerRole::Active).await;
    let takeover = died.elapsed();
    wait_until("b has caught up", Duration::from_secs(10), || b_status.borrow().checkpoint == 5_001).await;
    assert!(takeover < Duration::from_secs(4), "takeover took {takeover:?} with a 2 s lease");
    assert_eq!(b_store.wallet(u).await.unwrap().unwrap().coins, 5);

    // A graceful stop gives the lease up at once.
    stop_b.send(()).unwrap();
    assert_eq!(b_task.await.unwrap().unwrap(), projections::RunnerExit::Shutdown);
    assert_eq!(b_status.borrow().role, RunnerRole::Stopped);
    let key = &b.config().lease_key;
    assert!(key.starts_with("projector:users@1,wallets@1,"), "{key}");
    assert!(b_store.acquire_lease(key, "c", 60_000, chrono_now_ms()).await.unwrap());

    let (clean, _clean_dir) = sqlite().await;
    project_all(clean.clone(), log.clone()).await;
    let targets = ProjectionVersion::all_current();
    assert_eq!(checksum(&*b_store, &targets).await.unwrap(), checksum(&*clean, &targets).await.unwrap());
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_position_within_a_timeout() {
    let mut given = Given::new();
    let (store, _dir) = sqlite().await;
    let mut config = RunnerConfig::new("rw");
    config.idle_poll_ms = 5;
    let runner = Arc::new(Runner::new(store.clone(), given.log.clone(), config).unwrap());
    let mut status = runner.status();
    let (stop, task) = spawn_until_stopped(runner.clone());
    let u = Uuid::from_u128(5);
    for n in 1..=20 {
        let position = purchase(&mut given, u, &format!("pi_{n}"), 10);
        // The command's answer carries `position`; the query waits for it.
        wait_for_store_position(&*store, &[Projection::Wallets], position, Duration::from_secs(5)).await.unwrap();
        assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 10 * n);
        wait_for_position(&mut status, position, Duration::from_secs(5)).await.unwrap();
    }
    let started = Instant::now();
    match wait_for_store_position(&*store, &[Projection::Wallets], 1_000, Duration::from_millis(200)).await {
        Err(ProjectionError::Lagging { wanted: 1_000, reached: 20 }) => {}
        other => panic!("expected Lagging, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(wait_for_position(&mut status, 1_000, Duration::from_millis(50)).await.is_err());
    let s = status.borrow().clone();
    assert_eq!((s.checkpoint, s.last_position, s.lag_events), (20, 20, 0));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unreadable_event_stops_the_runner_just_before_it() {
    let mut given = Given::new();
    let u = Uuid::from_u128(5);
    for n in 1..=3 {
        purchase(&mut given, u, &format!("pi_{n}"), 10);
    }
    let bad = given.raw(br#"{"type":"ledger.coins_purchased","schemaVersion":1,"payload":{}}"#);
    purchase(&mut given, u, "pi_9", 10);
    let (store, _dir) = sqlite().await;
    let runner = Runner::new(store.clone(), given.log.clone(), RunnerConfig::new("x")).unwrap();
    match runner.run(std::future::pending()).await {
        Err(ProjectionError::Decode { position, .. }) => assert_eq!(position, bad),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let checkpoints = store.checkpoints().await.unwrap();
    assert!(checkpoints.iter().all(|c| c.position == bad - 1), "{checkpoints:?}");
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 30);
}

#[tokio::test]
async fn runner_config_is_bounded() {
    let (store, _dir) = sqlite().await;
    let log: Arc<MemoryLog> = Arc::new(MemoryLog::new());
    let store: Arc<dyn ReadStore> = store;
    for bad in [
        RunnerConfig { batch_size_max: 0, ..RunnerConfig::new("x") },
        RunnerConfig { batch_size_max: projections::BATCH_SIZE_MAX + 1, ..RunnerConfig::new("x") },
        RunnerConfig { targets: vec![], ..RunnerConfig::new("x") },
        RunnerConfig { lease_renew_ms: 4_000, ..RunnerConfig::new("x") },
    ] {
        assert!(Runner::new(store.clone(), log.clone(), bad).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_new_version_builds_beside_the_old_and_takes_over_once_caught_up() {
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), 3_000)));
    let (store, _dir) = sqlite().await;
    project_all(store.clone(), log.clone()).await;
    let before = checksum(&*store, &[Projection::Streams.current()]).await.unwrap();
    // The next deployment's code builds streams@2; streams@1 serves meanwhile.
    let v2 = ProjectionVersion::new(Projection::Streams, 2);
    let mut config = RunnerConfig::new("deploy-2");
    config.targets = vec![v2];
    config.idle_poll_ms = 5;
    let runner = Arc::new(Runner::new(store.clone(), log.clone(), config).unwrap());
    let (stop, task) = spawn_until_stopped(runner.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.active_version(Projection::Streams).await.unwrap() != 2 {
        assert!(Instant::now() < deadline, "streams@2 never took over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = checksum(&*store, &[v2]).await.unwrap();
    assert_eq!(after, before, "the same code builds the same documents");
    // The old version's runner, still deployed somewhere, stops by itself.
    let mut old = RunnerConfig::new("deploy-1");
    old.targets = vec![Projection::Streams.current()];
    let old = Runner::new(store.clone(), log.clone(), old).unwrap();
    assert_eq!(old.run(std::future::pending()).await.unwrap(), projections::RunnerExit::Retired);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// The names of the embedded store's query indexes (neither unique nor
/// partial).
fn query_indexes(store: &SqliteStore) -> Vec<String> {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE 'CREATE INDEX%' AND sql NOT LIKE '% WHERE %'
             ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_built_from_far_behind_gets_its_query_indexes_near_the_head() {
    let events = 3_000;
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), events)));
    let targets = ProjectionVersion::all_current();
    let messages = log.read_from(1, u32::try_from(events).unwrap()).await.unwrap();
    let (first, rest) = messages.split_at(2_000);
    let batch = |part: &[projections::LogMessage], from: u64, checkpoint: u64, behind_events: u64| {
        let mut batch =
            projections::runner::project_messages(part, from, &vec![checkpoint; targets.len()], &targets).unwrap();
        batch.behind_events = behind_events;
        batch
    };

    // Given a store that applies the first 2,000 events as if a million
    // more were waiting behind them,
    let (store, _dir) = crate::support::sqlite().await;
    store.prepare(&targets).await.unwrap();
    store.apply(batch(first, 1, 0, 1_000_000)).await.unwrap();
    // then it has its tables and unique indexes, and no query index yet,
    assert_eq!(query_indexes(&store), Vec::<String>::new());
    // and its queries answer as those of a store indexed from the start.
    let (reference, _reference_dir) = crate::support::sqlite().await;
    reference.prepare(&targets).await.unwrap();
    reference.apply(batch(first, 1, 0, 0)).await.unwrap();
    let indexes = query_indexes(&reference);
    for name in ["transactions_user_created", "transactions_type_status", "gift_leaderboards_stream_coins"] {
        assert!(indexes.iter().any(|i| i == name), "{name} in {indexes:?}");
    }
    let user_id = {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        let id: Vec<u8> = conn
            .query_row("SELECT user_id FROM transactions GROUP BY user_id ORDER BY COUNT(*) DESC LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        Uuid::from_slice(&id).unwrap()
    };
    let page = projections::PageRequest::first(50);
    let filter = projections::TransactionFilter { kind: None, status: None };
    let unindexed = store.transactions(user_id, filter, &page).await.unwrap();
    assert!(!unindexed.items.is_empty());
    assert_eq!(unindexed, reference.transactions(user_id, filter, &page).await.unwrap());

    // When the rest comes near the head, the query indexes are built,
    store.apply(batch(rest, 2_001, 2_000, 0)).await.unwrap();
    assert_eq!(query_indexes(&store), indexes);
    // and the documents are those of the store indexed from the start.
    reference.apply(batch(rest, 2_001, 2_000, 0)).await.unwrap();
    assert_eq!(checksum(&*store, &targets).await.unwrap(), checksum(&*reference, &targets).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_reaches_the_database_file_without_the_writer_checkpointing() {
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), 3_000)));
    let (store, _dir) = crate::support::sqlite().await;
    let size = || std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    let before = size();
    // The writer never checkpoints (wal_autocheckpoint = 0): the batches'
    // pages go to the WAL, and the checkpointer thread copies them.
    project_all(store.clone(), log).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while size() < before + 512 * 1024 {
        assert!(Instant::now() < deadline, "the database file stayed at {} bytes", size());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Given an embedded store whose `stripe_payments` table an older build made
/// (before the Stripe side's columns), with a row in it, when the store is
/// prepared, then it refuses with the table, the missing columns and the
/// rebuild to run, and creates or changes nothing: the old table keeps its
/// columns and its row, and no other projection's table appears.
#[tokio::test]
async fn a_table_made_by_an_older_build_is_refused_with_the_rebuild_to_run() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join(projections::sqlite::SQLITE_FILE_NAME)).unwrap();
        conn.execute_batch(
            "CREATE TABLE stripe_payments (payment_id TEXT PRIMARY KEY, user_id BLOB, coins_issued INTEGER NOT NULL,
                coins_reversed INTEGER NOT NULL, stripe_session_id TEXT, position INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO stripe_payments VALUES ('pi_1', NULL, 500, 0, 'cs_1', 7);",
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).await.unwrap();

    let error = store.prepare(&ProjectionVersion::all_current()).await.unwrap_err();

    let ProjectionError::SchemaMismatch { table, projection, difference } = &error else {
        panic!("expected a schema mismatch, got {error}");
    };
    assert_eq!((table.as_str(), projection.as_str()), ("stripe_payments", "stripe_payments"));
    assert_eq!(
        difference,
        "missing: package_id, coins_expected, amount_cents, currency, charge_amount_cents, amount_refunded_cents, \
         flags, disputes, coins_refund_reversed, coins_dispute_withdrawn, coins_dispute_reinstated, claimed_user_id, \
         claimed_package_id, resolution; not made by this build: none"
    );
    assert!(error.to_string().contains("`halobuzz-replay rebuild --projection stripe_payments`"), "{error}");
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    let kept: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM stripe_payments), (SELECT count(*) FROM pragma_table_info('stripe_payments'))",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(kept, (1, 6), "the old table keeps its row and its columns");
    let users_tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'users'", [], |row| row.get(0)).unwrap();
    assert_eq!(users_tables, 0, "a refused prepare creates no table");
}

/// Given a store this build prepared, when it is opened and prepared again,
/// then its tables pass the column check.
#[tokio::test]
async fn a_store_this_build_made_prepares_again() {
    let mut given = Given::new();
    let user = Uuid::from_u128(7);
    purchase(&mut given, user, "pi_7", 100);
    let dir = tempfile::tempdir().unwrap();
    let targets = ProjectionVersion::all_current();
    let first = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    first.prepare(&targets).await.unwrap();
    project_all(first.clone(), given.log.clone()).await;
    let tables_of = |path: &std::path::Path| -> Vec<String> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let made = tables_of(first.path());
    drop(first);

    // Reopened (a restart of the same build): the column check passes and
    // the DDL changes nothing, the rows projected before are kept.
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    reopened.prepare(&targets).await.expect("the same build's tables pass the column check");
    assert_eq!(tables_of(reopened.path()), made, "preparing again makes no table");
    assert_eq!(reopened.wallet(user).await.unwrap().map(|w| w.coins), Some(100), "rows are kept");

    // Version 2 beside version 1, then version 1 again: both pass.
    let second_version: Vec<ProjectionVersion> =
        Projection::ALL.iter().map(|p| ProjectionVersion::new(*p, 2)).collect();
    reopened.prepare(&second_version).await.expect("version 2 is made beside version 1");
    reopened.prepare(&targets).await.expect("version 1 still passes with version 2 beside it");
    let with_second = tables_of(reopened.path());
    assert!(with_second.contains(&"wallets__v2".to_string()), "{with_second:?}");
    assert!(made.iter().all(|table| with_second.contains(table)), "version 1's tables are kept: {with_second:?}");
    assert_eq!(reopened.wallet(user).await.unwrap().map(|w| w.coins), Some(100), "the active version is served");
}

/// Given wallets version 2 switched in and version 1 dropped, when a
/// runner still configured for version 1 starts (a standby that read the
/// versions before the switch), then it is retired at once and prepares
/// nothing: version 1's table is not made again (on MongoDB its names are
/// then views of version 2, which cannot be written).
#[tokio::test]
async fn a_runner_on_a_retired_version_stops_before_preparing_it() {
    let mut given = Given::new();
    let user = Uuid::from_u128(7);
    purchase(&mut given, user, "pi_7", 100);
    let (store, _dir) = sqlite().await;
    let runner = |version: u32| {
        let mut config = RunnerConfig::new("retired");
        config.targets = vec![ProjectionVersion::new(Projection::Wallets, version)];
        Runner::new(store.clone(), given.log.clone(), config).unwrap()
    };
    runner(1).catch_up().await.unwrap();
    runner(2).build_and_switch().await.unwrap();
    store.drop_version(ProjectionVersion::new(Projection::Wallets, 1)).await.unwrap();
    let wallets_tables = || {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        conn.query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'wallets'", [], |row| row.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(wallets_tables(), 0, "version 1 dropped");

    match runner(1).catch_up().await {
        Err(ProjectionError::Retired { version: 1, active: 2, .. }) => {}
        other => panic!("expected Retired, got {other:?}"),
    }
    assert_eq!(wallets_tables(), 0, "the retired runner prepared nothing");
}
