//! The whole service as production runs it (deploy/compose.yaml), on
//! loopback, all real processes: three nats-server nodes in a cluster with
//! the stream at 3 replicas, two `halobuzz-api` processes with
//! `HALOBUZZ_ROLE=api`, two with `HALOBUZZ_ROLE=workers` (one active, one
//! standby), MongoDB (the surrogate, a replica set) as the read store.
//!
//! Gifts flow through both API replicas, each retried with its
//! `Idempotency-Key` until it gets a definitive answer, as a mobile app
//! does, while the test kills with SIGKILL in turn: the stream's leader
//! node (restarted after a pause), one API replica (restarted), and the
//! active workers process. Then: every acknowledged gift charged once and
//! credited to its host once, the trial balance zero, the audit clean, the
//! standby active within its lease, a read with `minPosition` from one
//! replica's command answered by the other, and no 5xx outside the windows
//! when something was down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use commands::log::{EventLog, JetStreamLog, LogConfig};
use commands::reactor::ReactorConfig;
use commands::testing::NatsCluster;
use halobuzz_tests::cluster::{Remote, ServiceProcess, reactor_of, with_role};
use halobuzz_tests::http::{ADMIN_EMAIL, PASSWORD, test_env};
use projections::mongo_server::{Topology, database_name, surrogate_target};
use replay_tools::Progress;
use reqwest::Method;
use serde_json::json;
use tokio::sync::Mutex;

/// Viewers sending gifts at once (one gift in flight each).
const VIEWERS: usize = 8;
/// Each viewer's coins; below the four-eyes threshold of an adjustment.
const VIEWER_COINS: i64 = 9_000;
/// The gift every viewer sends, and its price.
const GIFT_ID: &str = "heart";
const GIFT_COINS: i64 = 5;
/// A viewer's pause between two gifts: the load stays within what the
/// surrogate read store projects on two shared cores.
const GIFT_PAUSE_MS: u64 = 30;
/// How long one gift is retried before the test fails it.
const GIFT_RETRY_MS_MAX: u64 = 90_000;
/// A pause between two attempts of a gift.
const RETRY_PAUSE_MS: u64 = 200;
/// Down time of a killed node or replica before its restart.
const DOWN_MS: u64 = 3_000;
/// Load between two faults.
const BETWEEN_FAULTS_MS: u64 = 4_000;
/// After a restart, answers may still fail while clients reconnect.
const RECOVERY_GRACE_MS: u64 = 3_000;
/// How long the final checks wait for the read models and the reactor.
const SETTLE_MS_MAX: u64 = 180_000;
const HOST_SHARE_BPS: u32 = 7_000;

/// A gift's outcome: the answer it ended with, how many attempts it took.
#[derive(Debug, Clone)]
struct Sent {
    viewer: usize,
    status: u16,
    position: u64,
    balance: i64,
}

/// A 5xx or a failed request, with when and from which replica.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    replica: usize,
    what: String,
}

/// When something was down: from its kill to its recovery plus the grace.
#[derive(Debug, Clone)]
struct Window {
    what: String,
    from: Instant,
    to: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_on_a_three_node_cluster_keeps_every_gift_exact_through_kills() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    let mongo = surrogate_target(Topology::ReplicaSet).await;
    let database = database_name("cluster");
    let nats_urls = cluster.urls().join(",");
    let mut env: Vec<(String, String)> =
        test_env(&nats_urls, std::path::Path::new("/unused")).into_iter().filter(|(k, _)| k != "DATA_DIR").collect();
    env.extend([
        ("NATS_STREAM_REPLICAS".to_string(), "3".to_string()),
        ("MONGODB_URI".to_string(), mongo.uri.clone()),
        ("MONGODB_DB".to_string(), database.clone()),
        ("HOST_SHARE_BPS".to_string(), HOST_SHARE_BPS.to_string()),
        ("RUST_LOG".to_string(), "warn".to_string()),
    ]);
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_halobuzz-api-node"));
    // The first workers process takes the leases; the second stands by.
    let mut workers = vec![ServiceProcess::start(&binary, "workers1", &with_role(&env, "workers")).await];
    wait_reactor_status(&workers[0], "active").await;
    workers.push(ServiceProcess::start(&binary, "workers2", &with_role(&env, "workers")).await);
    let mut api = vec![
        ServiceProcess::start(&binary, "api1", &with_role(&env, "api")).await,
        ServiceProcess::start(&binary, "api2", &with_role(&env, "api")).await,
    ];
    let remotes: Vec<Remote> = api.iter().map(|p| Remote::new(&p.base())).collect();
    let mut log_config = LogConfig::new(cluster.urls());
    log_config.replicas = 3;
    let log = JetStreamLog::connect(log_config).await.expect("the test's own connection to the cluster");
    let setup_s = started.elapsed().as_secs_f64();

    // Given an admin, a live host and funded viewers who joined, through
    // the first replica.
    let first = &remotes[0];
    let admin = register(first, "admin", ADMIN_EMAIL).await;
    let host = register(first, "cluster_host", "cluster_host@test.halobuzz.com").await;
    let stream =
        first.post("/api/v1/streams", Some(&host.token), &json!({"title": "Cluster night", "category": "music"})).await;
    assert_eq!(stream.status, 201, "{}", stream.text);
    let stream_id = stream.body["streamId"].as_str().expect("a stream id").to_string();
    let mut viewers = Vec::with_capacity(VIEWERS);
    for index in 0..VIEWERS {
        let name = format!("cluster_viewer_{index}");
        let viewer = register(first, &name, &format!("{name}@test.halobuzz.com")).await;
        let funded = first
            .post(
                "/api/v1/admin/adjustments",
                Some(&admin.token),
                &json!({"userId": viewer.id, "coins": VIEWER_COINS, "reason": "cluster test"}),
            )
            .await;
        assert_eq!(funded.status, 201, "{}", funded.text);
        let joined = first.post(&format!("/api/v1/streams/{stream_id}/join"), Some(&viewer.token), &json!({})).await;
        assert_eq!(joined.status, 200, "{}", joined.text);
        viewers.push(viewer);
    }

    // When gifts flow through both replicas while nodes and processes die.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<Failure>::new()));
    let mut load = Vec::with_capacity(VIEWERS);
    for (index, viewer) in viewers.iter().enumerate() {
        let (remotes, stop, failures) = (remotes.clone(), stop.clone(), failures.clone());
        let (token, path) = (viewer.token.clone(), format!("/api/v1/streams/{stream_id}/gifts"));
        load.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut number = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("cluster-{index}-{number}");
                sent.push(send_until_definitive(&remotes, index, number, &path, &token, &key, &failures).await);
                number += 1;
                tokio::time::sleep(Duration::from_millis(GIFT_PAUSE_MS)).await;
            }
            sent
        }));
    }
    let load_started = Instant::now();
    let mut windows = Vec::new();
    tokio::time::sleep(Duration::from_millis(BETWEEN_FAULTS_MS)).await;

    let leader = cluster.stream_leader(log.stream_name()).await.expect("the stream has a leader");
    let from = Instant::now();
    cluster.kill9(leader);
    tokio::time::sleep(Duration::from_millis(DOWN_MS)).await;
    cluster.restart(leader).await;
    windows.push(Window { what: format!("stream leader node {leader} down"), from, to: grace_after_now() });
    tokio::time::sleep(Duration::from_millis(BETWEEN_FAULTS_MS)).await;

    let from = Instant::now();
    api[0].kill9();
    tokio::time::sleep(Duration::from_millis(DOWN_MS)).await;
    api[0].restart().await;
    windows.push(Window { what: "API replica api1 down".into(), from, to: grace_after_now() });
    tokio::time::sleep(Duration::from_millis(BETWEEN_FAULTS_MS)).await;

    let active = active_workers(&workers).await;
    let standby = 1 - active;
    let from = Instant::now();
    workers[active].kill9();
    wait_reactor_status(&workers[standby], "active").await;
    let takeover = from.elapsed();
    // The workers serve no client request: no window for them.
    tokio::time::sleep(Duration::from_millis(BETWEEN_FAULTS_MS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for task in load {
        sent.extend(task.await.expect("a load task"));
    }
    let load_s = load_started.elapsed().as_secs_f64();

    // Then every gift got a definitive answer, and every one was accepted
    // (the viewers had the coins).
    let refused: Vec<&Sent> = sent.iter().filter(|s| s.status != 201).collect();
    assert!(refused.is_empty(), "gifts refused: {refused:?}");
    let lease_ttl = ReactorConfig::default().lease_ttl;
    let takeover_max = lease_ttl + lease_ttl / 3 + Duration::from_millis(RECOVERY_GRACE_MS);
    assert!(takeover <= takeover_max, "the standby took {takeover:?} (lease {lease_ttl:?})");

    // Each viewer charged exactly once per acknowledged gift: the last
    // answer's balance, and the wallet read on the other replica.
    let mut per_viewer: BTreeMap<usize, (u64, i64, u64)> = BTreeMap::new();
    for s in &sent {
        let entry = per_viewer.entry(s.viewer).or_insert((0, i64::MAX, 0));
        entry.0 += 1;
        if s.position > entry.2 {
            entry.1 = s.balance;
            entry.2 = s.position;
        }
    }
    let second = &remotes[1];
    for (index, (count, last_balance, last_position)) in &per_viewer {
        let expected = VIEWER_COINS - GIFT_COINS * i64::try_from(*count).expect("a count");
        assert_eq!(*last_balance, expected, "viewer {index}: the last gift's balance after {count} gifts");
        let wallet =
            settled_get(second, &format!("/api/v1/wallet?minPosition={last_position}"), &viewers[*index].token, |_| {
                true
            })
            .await;
        assert_eq!(wallet.body["coins"], json!(expected), "viewer {index}: {}", wallet.text);
    }

    // A read with `minPosition` from one replica's command, answered by the
    // other replica.
    let body = json!({"giftId": GIFT_ID, "quantity": 1});
    let last_gift = first
        .send(Method::POST, &format!("/api/v1/streams/{stream_id}/gifts"), Some(&viewers[0].token), Some(&body), None)
        .await
        .expect("a gift after the faults");
    assert_eq!(last_gift.status, 201, "{}", last_gift.text);
    let read =
        second.get(&format!("/api/v1/wallet?minPosition={}", last_gift.position()), Some(&viewers[0].token)).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["coins"], last_gift.body["balance"], "{}", read.text);

    // The host credited once per gift, by the reactor that took over.
    let gifts = u64::try_from(sent.len()).expect("a count") + 1;
    let share = domain::money::host_share_coins(GIFT_COINS, HOST_SHARE_BPS).expect("a share");
    let expected_earnings = share * i64::try_from(gifts).expect("a count");
    let end = log.last_position().await.expect("the log's end");
    let wallet = settled_get(second, &format!("/api/v1/wallet?minPosition={end}"), &host.token, |r| {
        r.body["earnings"].as_i64().is_some_and(|e| e >= expected_earnings)
    })
    .await;
    // Settled: the reactor's position passed every gift; no late credit.
    wait_reactor_passes(&workers[standby], &log).await;
    let end = log.last_position().await.expect("the log's end");
    let wallet_after = settled_get(second, &format!("/api/v1/wallet?minPosition={end}"), &host.token, |_| true).await;
    assert_eq!(wallet.body["earnings"], json!(expected_earnings), "{}", wallet.text);
    assert_eq!(wallet_after.body["earnings"], json!(expected_earnings), "{}", wallet_after.text);

    let trial =
        settled_get(first, &format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), &admin.token, |_| {
            true
        })
        .await;
    assert_eq!(trial.body["totalCoins"], json!(0), "{}", trial.text);
    let audit = replay_tools::audit_log(&log, Vec::new(), None, &Progress::hidden()).await.expect("the audit runs");
    assert!(audit.passed, "{:#?}", audit.findings);

    // Nothing answered 5xx (or failed) except while something was down.
    let failures = failures.lock().await.clone();
    let outside: Vec<&Failure> =
        failures.iter().filter(|f| !windows.iter().any(|w| w.from <= f.at && f.at <= w.to)).collect();
    assert!(outside.is_empty(), "failures outside the fault windows: {outside:#?}\nwindows: {windows:#?}");

    println!("cluster test: 3 nats nodes (replicas 3), 2 API replicas, 2 workers, MongoDB surrogate (replica set)");
    println!(
        "  setup {setup_s:.1} s; load {load_s:.1} s: {gifts} gifts acknowledged, {:.0} gifts/s",
        gifts as f64 / load_s
    );
    for window in &windows {
        let inside: Vec<&Failure> = failures.iter().filter(|f| window.from <= f.at && f.at <= window.to).collect();
        let per_replica: Vec<usize> =
            (0..remotes.len()).map(|r| inside.iter().filter(|f| f.replica == r).count()).collect();
        let down_s = (window.to - window.from).as_secs_f64();
        let first = inside.first().map_or("", |f| f.what.as_str());
        println!(
            "  {}: {} failed attempts (5xx or no answer; per replica {per_replica:?}) in {down_s:.1} s, each retried; first: {first:.120}",
            window.what,
            inside.len()
        );
    }
    println!(
        "  standby workers active {} ms after the active one's kill (lease {} ms)",
        takeover.as_millis(),
        lease_ttl.as_millis()
    );
    println!("  trial balance 0; audit passed over {} messages", end);
    // The processes stop before their database goes.
    drop(api);
    drop(workers);
    let store = projections::MongoStore::connect(&mongo.uri, Some(&database)).await.expect("connect");
    store.drop_database().await.expect("drop");
}

/// The end of a fault window: now plus the recovery grace.
fn grace_after_now() -> Instant {
    Instant::now() + Duration::from_millis(RECOVERY_GRACE_MS)
}

struct Registered {
    id: String,
    token: String,
}

async fn register(remote: &Remote, name: &str, email: &str) -> Registered {
    let body = json!({"email": email, "username": name, "password": PASSWORD});
    let answer = remote.post("/api/v1/auth/register", None, &body).await;
    assert_eq!(answer.status, 201, "register {name}: {}", answer.text);
    Registered {
        id: answer.body["user"]["id"].as_str().expect("an id").to_string(),
        token: answer.body["accessToken"].as_str().expect("a token").to_string(),
    }
}

/// One gift, retried with its key on either replica until an answer that
/// is not a 5xx (a mobile app's retry loop); every failed attempt noted.
async fn send_until_definitive(
    remotes: &[Remote],
    viewer: usize,
    number: usize,
    path: &str,
    token: &str,
    key: &str,
    failures: &Mutex<Vec<Failure>>,
) -> Sent {
    let body = json!({"giftId": GIFT_ID, "quantity": 1});
    let deadline = Instant::now() + Duration::from_millis(GIFT_RETRY_MS_MAX);
    // Bounded by the deadline.
    for attempt in 0.. {
        let replica = (number + attempt) % remotes.len();
        let what = match remotes[replica].send(Method::POST, path, Some(token), Some(&body), Some(key)).await {
            Ok(answer) if answer.status < 500 && answer.status != 408 && answer.status != 429 => {
                let balance = answer.body["balance"].as_i64().unwrap_or(i64::MIN);
                let position = answer.body["position"].as_u64().unwrap_or(0);
                return Sent { viewer, status: answer.status, position, balance };
            }
            Ok(answer) => format!("{} {}", answer.status, answer.text),
            Err(error) => format!("no answer: {error}"),
        };
        failures.lock().await.push(Failure { at: Instant::now(), replica, what });
        assert!(Instant::now() < deadline, "gift {key}: no definitive answer in {GIFT_RETRY_MS_MAX} ms");
        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
    }
    unreachable!("the loop returns or fails")
}

/// GET until 200 and `check` holds (the read models catch up), bounded.
async fn settled_get(
    remote: &Remote,
    path: &str,
    token: &str,
    check: impl Fn(&halobuzz_tests::http::Resp) -> bool,
) -> halobuzz_tests::http::Resp {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_MS_MAX);
    loop {
        let answer = remote.get(path, Some(token)).await;
        if answer.status == 200 && check(&answer) {
            return answer;
        }
        // 503 projection_lagging is the only other answer expected here.
        assert!(answer.status == 200 || answer.status == 503, "GET {path}: {} {}", answer.status, answer.text);
        assert!(Instant::now() < deadline, "GET {path} never settled: {} {}", answer.status, answer.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the process's reactor reports `status` (bounded).
async fn wait_reactor_status(process: &ServiceProcess, status: &str) {
    halobuzz_tests::cluster::wait_reactor_status(process, status, Duration::from_millis(SETTLE_MS_MAX)).await;
}

/// Which of the workers processes holds the reactor's lease.
async fn active_workers(workers: &[ServiceProcess]) -> usize {
    for (index, process) in workers.iter().enumerate() {
        let health = Remote::new(&process.base()).get("/health", None).await;
        if reactor_of(&health.body).0 == "active" {
            return index;
        }
    }
    panic!("no workers process is active");
}

/// Waits until the reactor of `process` has read past the log's last
/// ledger message (its own credits included).
async fn wait_reactor_passes(process: &ServiceProcess, log: &JetStreamLog) {
    const TAIL_MESSAGES: u32 = 5_000;
    let remote = Remote::new(&process.base());
    let deadline = Instant::now() + Duration::from_millis(SETTLE_MS_MAX);
    loop {
        let last = log.last_position().await.expect("the log's end");
        let tail = log.read_from(last.saturating_sub(u64::from(TAIL_MESSAGES)).max(1), TAIL_MESSAGES).await;
        let last_ledger = tail
            .expect("the log's tail")
            .iter()
            .rev()
            .find(|m| m.subject.starts_with("hb.ledger."))
            .map_or(0, |m| m.position);
        let health = remote.get("/health", None).await;
        let (status, position) = reactor_of(&health.body);
        if status == "active" && position >= last_ledger {
            return;
        }
        assert!(Instant::now() < deadline, "the reactor stays at {position} ({status}); last ledger {last_ledger}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
