//! What only the MongoDB adapter has: its defects' tests (issue 14), the
//! runner killed at random points, and transient and refused errors,
//! against the surrogate (SecantusDB) in both topologies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use events_schema::{Event, Role, StreamSnapshot, StreamStarted, StreamStatus, UserRegistered, ViewerJoined};
use mongodb::bson::{Bson, doc};
use projections::mongo_server::{MongoSurrogate, Topology, database_name, surrogate_target};
use projections::testing::{Generator, GeneratorConfig, MemoryLog, checksum};
use projections::{
    Collection, MongoStore, PageRequest, Projection, ProjectionError, ProjectionVersion, ReadStore, Runner,
    RunnerConfig, TransactionFilter,
};
use uuid::Uuid;

use crate::support::{Given, Rng, project_all, purchase, sqlite};

/// A store in a fresh database of the shared surrogate of `topology`.
async fn fresh(topology: Topology, label: &str) -> Arc<MongoStore> {
    fresh_at(&surrogate_target(topology).await.uri, label).await
}

async fn fresh_at(uri: &str, label: &str) -> Arc<MongoStore> {
    let store = MongoStore::connect(uri, Some(&database_name(label))).await.expect("connect to the surrogate");
    store.drop_database().await.unwrap();
    Arc::new(store)
}

const TOPOLOGIES: [Topology; 2] = [Topology::ReplicaSet, Topology::Standalone];

/// Defect 1: MongoDB's first batch is 101 documents by default, and a
/// single batch closes the cursor. Scans, pages and lookups past 101 come
/// back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_pages_and_viewer_lists_return_every_document_past_101() {
    for topology in TOPOLOGIES {
        let store = fresh(topology, "past_101").await;
        let mut given = Given::new();
        let buyer = Uuid::from_u128(1);
        for n in 0..160 {
            purchase(&mut given, buyer, &format!("pi_{n}"), 1);
        }
        for n in 0..130u128 {
            purchase(&mut given, Uuid::from_u128(10_000 + n), &format!("pi_other_{n}"), 1);
        }
        let (stream, host) = (Uuid::from_u128(5), Uuid::from_u128(6));
        let snapshot = StreamSnapshot { host_id: host, status: StreamStatus::Live, started_at: crate::support::t0() };
        given.event(Event::StreamStarted(StreamStarted {
            stream_id: stream,
            host_id: host,
            title: "t".into(),
            category: "music".into(),
            state_after: snapshot.clone(),
        }));
        for v in 0..150u128 {
            given.event(Event::ViewerJoined(ViewerJoined {
                stream_id: stream,
                viewer_id: Uuid::from_u128(50_000 + v),
                state_after: snapshot.clone(),
            }));
        }
        project_all(store.clone(), given.log.clone()).await;
        let wallets = store.scan(Projection::Wallets.current(), Collection::Wallets, None, 5_000).await.unwrap();
        assert_eq!((wallets.docs.len(), wallets.next_key), (131, None), "{topology:?}");
        let page = store.transactions(buyer, TransactionFilter::default(), &PageRequest::first(150)).await.unwrap();
        assert_eq!(page.items.len(), 150, "{topology:?}");
        let viewers =
            store.scan(Projection::Streams.current(), Collection::StreamViewers, None, 5_000).await.unwrap().docs;
        assert_eq!(viewers.len(), 150, "{topology:?}");
        assert_eq!(store.stream(stream).await.unwrap().unwrap().viewers, 150);
        store.drop_database().await.unwrap();
    }
}

/// Defect 2: a batch's writes are grouped by collection: a thousand
/// generated events cost a few dozen commands, not thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_costs_a_few_commands_per_collection_not_one_per_event() {
    let store = fresh(Topology::ReplicaSet, "commands_per_batch").await;
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), 1_000)));
    let targets = ProjectionVersion::all_current();
    store.prepare(&targets).await.unwrap();
    let messages = projections::LogSource::read_from(&*log, 1, 1_000).await.unwrap();
    let batch = projections::runner::project_messages(&messages, 1, &vec![0; targets.len()], &targets).unwrap();
    let before = store.commands_started();
    store.apply(batch).await.unwrap();
    let commands = store.commands_started() - before;
    println!("1,000 events applied in {commands} commands");
    assert!(commands < 120, "{commands} commands for 1,000 events");
    store.drop_database().await.unwrap();
}

/// Defect 4: a duplicate on a unique field other than `_id` (another
/// user's email) is an error, not "already applied"; the runner stops on
/// it with the error in its status, rather than retry it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_email_stops_the_runner_with_the_error() {
    for topology in TOPOLOGIES {
        let store = fresh(topology, "duplicate_email").await;
        let mut given = Given::new();
        for n in 1..=2u128 {
            given.event(Event::UserRegistered(UserRegistered {
                user_id: Uuid::from_u128(n),
                email: "same@example.com".into(),
                username: format!("user{n}"),
                password_hash: "h".into(),
                roles: vec![Role::User],
            }));
        }
        let runner = Runner::new(store.clone(), given.log.clone(), RunnerConfig::new("dup")).unwrap();
        let status = runner.status();
        let exit = tokio::time::timeout(Duration::from_secs(30), runner.run(std::future::pending())).await;
        match exit {
            Ok(Err(ProjectionError::StoreRefused(reason))) => assert!(reason.contains("11000"), "{reason}"),
            other => panic!("{topology:?}: expected the runner to stop on the duplicate, got {other:?}"),
        }
        let error = status.borrow().last_error.clone().unwrap_or_default();
        assert!(error.contains("refused"), "{error}");
        assert_eq!(store.user_by_id(Uuid::from_u128(2)).await.unwrap(), None);
        store.drop_database().await.unwrap();
    }
}

/// Defect 5: a URI asking for secondaries (`readPreference=
/// secondaryPreferred`) does not reach the transactions, which read and
/// write on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_run_on_the_primary_whatever_the_uris_read_preference() {
    let server = surrogate_target(Topology::ReplicaSet).await;
    let uri = format!("{}&readPreference=secondaryPreferred", server.uri);
    let store = fresh_at(&uri, "secondary_preferred").await;
    assert!(store.uses_transactions());
    let mut given = Given::new();
    purchase(&mut given, Uuid::from_u128(1), "pi_1", 100);
    assert_eq!(project_all(store.clone(), given.log.clone()).await, 1);
    assert_eq!(store.wallet(Uuid::from_u128(1)).await.unwrap().unwrap().coins, 100);
    store.drop_database().await.unwrap();
}

/// Defect 9: a bookkeeping number stored by hand as a Double reads as its
/// whole number; one that is not a whole number is an error, never a
/// default version or checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_numbers_of_any_whole_type_read_and_others_are_refused() {
    let store = fresh(Topology::Standalone, "bookkeeping").await;
    let versions = store.database().collection::<mongodb::bson::Document>("projection_versions");
    versions.insert_one(doc! {"_id": "wallets", "active": 2.0}).await.unwrap();
    assert_eq!(store.active_version(Projection::Wallets).await.unwrap(), 2);
    versions.update_one(doc! {"_id": "wallets"}, doc! {"$set": {"active": 2.5}}).await.unwrap();
    assert!(matches!(store.active_version(Projection::Wallets).await, Err(ProjectionError::Corrupt { .. })));
    let checkpoints = store.database().collection::<mongodb::bson::Document>("projector_checkpoints");
    checkpoints
        .insert_one(doc! {"_id": "users@1", "projection": "users", "version": 1i32, "position": Bson::Double(42.0)})
        .await
        .unwrap();
    versions.delete_one(doc! {"_id": "wallets"}).await.unwrap();
    let read = store.checkpoints().await.unwrap();
    assert_eq!(
        read.iter().map(|c| (c.projection, c.version, c.position)).collect::<Vec<_>>(),
        vec![(Projection::Users, 1, 42)]
    );
    checkpoints.update_one(doc! {"_id": "users@1"}, doc! {"$set": {"position": "42"}}).await.unwrap();
    assert!(store.checkpoints().await.is_err(), "a string is not a position");
    store.drop_database().await.unwrap();
}

/// Defect 10: the lease runs on the server's clock: a caller whose clock
/// is an hour ahead does not take a lease another holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_runs_on_the_servers_clock() {
    let store = fresh(Topology::ReplicaSet, "lease_clock").await;
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!(store.acquire_lease("projector", "a", 60_000, now).await.unwrap());
    assert!(!store.acquire_lease("projector", "b", 60_000, now + 3_600_000).await.unwrap(), "b's clock is ahead");
    store.drop_database().await.unwrap();
}

/// Defect 10: a third version re-points the runbook names, which are views
/// once version 1 is dropped, in place where the server allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_views_follow_every_switch() {
    for topology in TOPOLOGIES {
        let store = fresh(topology, "views_follow").await;
        let mut given = Given::new();
        let u = Uuid::from_u128(1);
        purchase(&mut given, u, "pi_1", 100);
        let log = given.log.clone();
        let runner = |version: u32| {
            let mut config = RunnerConfig::new("views");
            config.targets = vec![ProjectionVersion::new(Projection::Wallets, version)];
            Runner::new(store.clone(), log.clone(), config).unwrap()
        };
        runner(1).catch_up().await.unwrap();
        runner(2).build_and_switch().await.unwrap();
        store.drop_version(ProjectionVersion::new(Projection::Wallets, 1)).await.unwrap();
        purchase(&mut given, u, "pi_2", 50);
        runner(3).build_and_switch().await.unwrap();
        let v1 = ProjectionVersion::new(Projection::Wallets, 1);
        let v3 = ProjectionVersion::new(Projection::Wallets, 3);
        let through_view = store.scan(v1, Collection::Wallets, None, 10).await.unwrap().docs;
        assert_eq!(through_view, store.scan(v3, Collection::Wallets, None, 10).await.unwrap().docs, "{topology:?}");
        assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 150);
        store.drop_database().await.unwrap();
    }
}

/// Defect 3: transient errors (here injected by the server: a
/// `TransientTransactionError`) are retried, and a refused command (here
/// "not supported on a view") stops the runner with its error. A server of
/// its own: the fail point is server-wide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_refused_ones_stop_the_runner() {
    let server = MongoSurrogate::start(Topology::ReplicaSet).await;
    let store = fresh_at(&server.uri(), "fail_points").await;
    let admin = mongodb::Client::with_uri_str(server.uri()).await.unwrap().database("admin");
    let mut given = Given::new();
    purchase(&mut given, Uuid::from_u128(1), "pi_1", 100);
    store.prepare(&ProjectionVersion::all_current()).await.unwrap();
    admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": {"times": 2}, "data": {
            "failCommands": ["update"], "errorCode": 112, "errorLabels": ["TransientTransactionError"],
        }})
        .await
        .expect("failCommand fail point");
    let runner = Runner::new(store.clone(), given.log.clone(), RunnerConfig::new("transient")).unwrap();
    let status = runner.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.borrow().checkpoint < 1 {
        assert!(Instant::now() < deadline, "never caught up: {:?}", status.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(task.await.unwrap().unwrap(), projections::RunnerExit::Shutdown);
    assert_eq!(store.wallet(Uuid::from_u128(1)).await.unwrap().unwrap().coins, 100);

    purchase(&mut given, Uuid::from_u128(1), "pi_2", 5);
    admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {
            "failCommands": ["update"], "errorCode": 166,
        }})
        .await
        .unwrap();
    let runner = Runner::new(store.clone(), given.log.clone(), RunnerConfig::new("refused")).unwrap();
    let status = runner.status();
    match tokio::time::timeout(Duration::from_secs(30), runner.run(std::future::pending())).await {
        Ok(Err(ProjectionError::StoreRefused(_))) => {}
        other => panic!("expected the runner to stop on the refused command, got {other:?}"),
    }
    assert!(status.borrow().last_error.is_some());
    admin.run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"}).await.unwrap();
}

const MONGO_KILLS: usize = 12;
const MONGO_LOG_EVENTS: u64 = 12_000;

/// The runner killed at random points (its task aborted wherever it is:
/// reading, inside a transaction, between the writes and the checkpoint
/// of the standalone path), on a new connection each time, ends equal to
/// a clean rebuild on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_killed_at_random_points_on_mongodb_ends_equal_to_a_clean_rebuild() {
    let log = Arc::new(MemoryLog::from_events(Generator::log(GeneratorConfig::default(), MONGO_LOG_EVENTS)));
    let targets = ProjectionVersion::all_current();
    let (clean, _clean_dir) = sqlite().await;
    project_all(clean.clone(), log.clone()).await;
    let expected = checksum(&*clean, &targets).await.unwrap();
    for topology in TOPOLOGIES {
        let started = Instant::now();
        let uri = surrogate_target(topology).await.uri;
        let database = database_name("killed_runner");
        let mut rng = Rng(20_261_206);
        let mut points: Vec<u64> = (0..MONGO_KILLS).map(|_| 1 + rng.below(MONGO_LOG_EVENTS * 9 / 10)).collect();
        points.sort_unstable();
        let mut killed_at = Vec::new();
        for point in &points {
            let store = Arc::new(MongoStore::connect(&uri, Some(&database)).await.unwrap());
            let mut config = RunnerConfig::new("node-1");
            config.batch_size_max = 100 + u32::try_from(rng.below(1_500)).unwrap();
            let runner = Runner::new(store.clone(), log.clone(), config).unwrap();
            let status = runner.status();
            let handle = tokio::spawn(async move { runner.run(std::future::pending()).await });
            let deadline = Instant::now() + Duration::from_secs(120);
            while status.borrow().applied < *point && !handle.is_finished() {
                assert!(Instant::now() < deadline, "the kill point was not reached");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Somewhere inside the next batch, most of the time.
            tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
            handle.abort();
            let _ = handle.await;
            killed_at.push(status.borrow().applied);
        }
        let store = Arc::new(MongoStore::connect(&uri, Some(&database)).await.unwrap());
        assert_eq!(project_all(store.clone(), log.clone()).await, MONGO_LOG_EVENTS);
        let resumed = checksum(&*store, &targets).await.unwrap();
        println!("{topology:?}: killed {MONGO_KILLS} times after applying {killed_at:?}; {:.1?}", started.elapsed());
        assert_eq!(resumed, expected, "{topology:?}");
        let trial = store.trial_balance(&PageRequest::default()).await.unwrap();
        assert_eq!(trial.total_coins, 0);
        store.drop_database().await.unwrap();
    }
}
