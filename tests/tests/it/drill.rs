//! The disaster-recovery drill: a journey of thousands of commands through
//! the API; export the log; destroy the nats-server's data folder and the
//! read store; import into a fresh server; rebuild; every API query
//! answers exactly as before.

use std::collections::BTreeMap;
use std::sync::Arc;

use commands::log::EventLog;
use commands::testing::{NatsServer, SyncMode};
use futures_util::future::join_all;
use halobuzz_tests::http::{TestApp, User};
use projections::{LogSource, ReadStore, SqliteStore};
use replay_tools::{ImportOptions, Progress, RebuildOptions};
use serde_json::{Value, json};
use uuid::Uuid;

const HOSTS: usize = 4;
const VIEWERS: usize = 24;
const GIFTS: usize = 2_400;
const IN_FLIGHT: usize = 32;
/// Pages of a list read at most.
const PAGES_MAX: usize = 1_000;

/// Every message of an export file.
fn read_all(path: &std::path::Path) -> Vec<replay_tools::archive::ArchivedMessage> {
    let mut reader = replay_tools::archive::ArchiveReader::open(path).expect("open the export");
    let mut out = Vec::new();
    // Bounded by the file.
    loop {
        match reader.next_item().expect("read the export") {
            replay_tools::archive::Item::Message(m) => out.push(m),
            replay_tools::archive::Item::End(_) => return out,
        }
    }
}

/// Every page of a list, as one array.
async fn all_pages(app: &TestApp, path: &str, token: Option<&str>, min_position: u64) -> Value {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..PAGES_MAX {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=200&minPosition={min_position}&cursor={c}"),
            None => format!("{path}{sep}limit=200&minPosition={min_position}"),
        };
        let r = app.get(&url, token).await;
        assert_eq!(r.status, 200, "GET {url}: {}", r.text);
        items.extend(r.body["items"].as_array().cloned().unwrap_or_default());
        let mut rest = r.body.clone();
        if let Some(map) = rest.as_object_mut() {
            map.remove("items");
            map.remove("nextCursor");
        }
        match r.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return json!({"items": items, "rest": rest}),
        }
    }
    panic!("{path}: more than {PAGES_MAX} pages");
}

/// The answers of every query route, for every user and stream.
async fn snapshot(app: &TestApp, admin: &User, users: &[User], streams: &[Uuid], at: u64) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for user in users.iter().chain([admin]) {
        let token = Some(user.token.as_str());
        for path in ["/api/v1/users/me", "/api/v1/wallet"] {
            let r = app.get(&format!("{path}?minPosition={at}"), token).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            out.insert(format!("{} {path}", user.username), r.body);
        }
        for path in ["/api/v1/transactions", "/api/v1/payouts"] {
            out.insert(format!("{} {path}", user.username), all_pages(app, path, token, at).await);
        }
        for account in [format!("wallet:{}", user.id), format!("earnings:{}", user.id)] {
            let path = format!("/api/v1/ledger/accounts/{account}/entries");
            out.insert(path.clone(), all_pages(app, &path, Some(&admin.token), at).await);
        }
    }
    for stream in streams {
        let r = app.get(&format!("/api/v1/streams/{stream}?minPosition={at}"), None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        out.insert(format!("stream {stream}"), r.body);
        let path = format!("/api/v1/streams/{stream}/leaderboard");
        out.insert(path.clone(), all_pages(app, &path, None, at).await);
    }
    let admin_token = Some(admin.token.as_str());
    for (path, token) in [
        ("/api/v1/streams/live", None),
        ("/api/v1/admin/payouts", admin_token),
        ("/api/v1/admin/payouts?status=pending", admin_token),
        ("/api/v1/ledger/trial-balance", admin_token),
        ("/api/v1/ledger/accounts/transit:gifts/entries", admin_token),
        ("/api/v1/ledger/accounts/platform:revenue/entries", admin_token),
        ("/api/v1/ledger/accounts/platform:adjustments/entries", admin_token),
        ("/api/v1/ledger/accounts/external:payouts/entries", admin_token),
    ] {
        out.insert(path.to_string(), all_pages(app, path, token, at).await);
    }
    out
}

/// Runs `calls` with at most `IN_FLIGHT` at once.
async fn in_chunks<F: std::future::Future<Output = ()>>(calls: Vec<F>) {
    let mut calls = calls.into_iter().peekable();
    while calls.peek().is_some() {
        join_all(calls.by_ref().take(IN_FLIGHT)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disaster_recovery_drill_restores_every_answer() {
    let mut app = TestApp::start().await;
    let admin = app.admin().await;
    let mut hosts = Vec::new();
    for i in 0..HOSTS {
        hosts.push(app.register(&format!("drill_host_{i}")).await);
    }
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push(app.register(&format!("drill_viewer_{i}")).await);
    }
    for viewer in &viewers {
        app.fund(&admin, viewer, 50_000).await;
    }
    let mut streams = Vec::new();
    for host in &hosts {
        streams.push(app.start_stream(host, "drill").await);
    }
    in_chunks(
        viewers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (app, stream) = (&app, streams[i % HOSTS]);
                async move {
                    let r = app.post(&format!("/api/v1/streams/{stream}/join"), Some(&v.token), json!({})).await;
                    assert_eq!(r.status, 200, "{}", r.text);
                }
            })
            .collect(),
    )
    .await;

    // Thousands of gifts, some of them repeated with their Idempotency-Key.
    let catalog = ["rose", "heart", "star", "crown"];
    in_chunks(
        (0..GIFTS)
            .map(|n| {
                let app = &app;
                let viewer = &viewers[n % VIEWERS];
                let stream = streams[(n / VIEWERS + n) % HOSTS];
                async move {
                    let key = format!("drill-gift-{n}");
                    let body = json!({"giftId": catalog[n % catalog.len()], "quantity": 1 + n % 3});
                    let path = format!("/api/v1/streams/{stream}/gifts");
                    let tries = if n % 50 == 0 { 2 } else { 1 };
                    for _ in 0..tries {
                        let r = app
                            .request_with(
                                reqwest::Method::POST,
                                &path,
                                Some(&viewer.token),
                                Some(body.clone()),
                                &[("Idempotency-Key", key.as_str())],
                            )
                            .await;
                        assert_eq!(r.status, 201, "{}", r.text);
                    }
                }
            })
            .collect(),
    )
    .await;
    for (i, host) in hosts.iter().enumerate().take(2) {
        let r = app.post(&format!("/api/v1/streams/{}/end", streams[i]), Some(&host.token), json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let settled = app.settle_reactor().await;

    // Payouts: one paid, one rejected, one left pending per host.
    for host in &hosts {
        let wallet = app.wallet(host, settled).await;
        assert!(wallet["earnings"].as_i64().unwrap_or(0) > 600, "{wallet}");
        let mut ids = Vec::new();
        let mut requested = 0;
        for _ in 0..3 {
            let r =
                app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 200, "destination": "iban:DE00"})).await;
            assert_eq!(r.status, 201, "{}", r.text);
            requested = r.position();
            ids.push(r.body["payoutId"].as_str().unwrap_or_default().to_string());
        }
        let r = app
            .decide_payout(&admin, &ids[0], &format!("approve?minPosition={requested}"), json!({"externalRef": "wire"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = app
            .decide_payout(&admin, &ids[1], &format!("reject?minPosition={requested}"), json!({"reason": "kyc"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for viewer in viewers.iter().take(5) {
        let r = app
            .post(
                "/api/v1/admin/adjustments",
                Some(&admin.token),
                json!({"userId": viewer.id, "coins": -100, "reason": "drill correction"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let at = app.settle_reactor().await;
    let users: Vec<User> = hosts.iter().chain(&viewers).cloned().collect();
    let before = snapshot(&app, &admin, &users, &streams, at).await;
    let transactions: usize = before
        .iter()
        .filter(|(k, _)| k.ends_with("/api/v1/transactions"))
        .map(|(_, v)| v["items"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(transactions > GIFTS, "the snapshot holds every transaction: {transactions}");
    let trial = &before["/api/v1/ledger/trial-balance"];
    assert_eq!(trial["rest"]["totalCoins"], json!(0), "{trial}");
    // Each gift is one commit in the ledger (its record is in the records
    // stream), besides the hosts' credits, registrations and payouts.
    assert!(at > GIFTS as u64 + 500, "a journey of thousands of commands: {at} events");

    // Export, then lose everything.
    let backup = tempfile::tempdir().expect("tempdir");
    let file = backup.path().join("halobuzz.hblog.gz");
    let exported = replay_tools::export(&app.log, &file, &Progress::hidden()).await.expect("export");
    assert_eq!(exported.last_position, at);
    let server = app.nats.take().expect("the app's own server");
    let nats_data = server.data_dir();
    let store_data = app.data_dir.take().expect("the app's data folder");
    let store_path = store_data.path().to_path_buf();
    app.stop().await;
    drop(server);
    drop(store_data);
    assert!(!nats_data.exists() && !store_path.exists(), "the nats-server's data folder and the read store are gone");

    // Restore: a fresh server, import, rebuild.
    let fresh = NatsServer::start_with(SyncMode::Interval).await;
    let log = fresh.event_log().await;
    let imported =
        replay_tools::import(&log, &file, ImportOptions::default(), &Progress::hidden()).await.expect("import");
    assert_eq!((imported.events, imported.last_position), (at, at));
    // Subjects, order, headers and payloads as they were (an export of the
    // restored log equals the first but for the servers' timestamps).
    let again = backup.path().join("again.hblog.gz");
    replay_tools::export(&log, &again, &Progress::hidden()).await.expect("export the restored log");
    let (first, second) = (read_all(&file), read_all(&again));
    assert_eq!(first.len() as u64, at);
    let mut header_names = std::collections::BTreeSet::new();
    for (x, y) in first.iter().zip(&second) {
        assert_eq!((x.position, &x.subject, &x.headers, &x.payload), (y.position, &y.subject, &y.headers, &y.payload));
        header_names.extend(x.headers.iter().map(|(name, _)| name.clone()));
    }
    assert!(header_names.contains("Nats-Msg-Id"), "{header_names:?}");
    let restored = tempfile::tempdir().expect("tempdir");
    {
        let store: Arc<dyn ReadStore> = Arc::new(SqliteStore::open(restored.path()).await.expect("store"));
        let events: Arc<dyn EventLog> = Arc::new(log.clone());
        let source: Arc<dyn LogSource> = Arc::new(api::source::EventLogSource::new(events));
        let rebuilt = replay_tools::rebuild(store.clone(), source, &RebuildOptions::all(), &Progress::hidden())
            .await
            .expect("rebuild");
        assert!(rebuilt.switched && rebuilt.position == at, "{rebuilt:?}");
        // The audit passes, and the rebuilt ledger read model equals the
        // log's balances.
        let ledger = replay_tools::audit::read_model_ledger(store.as_ref()).await.expect("read model").expect("still");
        let audit = replay_tools::audit_log(&log, Vec::new(), Some(ledger), &Progress::hidden()).await.expect("audit");
        assert!(audit.passed, "{:#?}", audit.findings);
        assert_eq!(audit.read_model_compared_at, Some(at));
    }

    // The API on the restored log and store answers exactly as before.
    let app = TestApp::start_on(&fresh.url(), restored.path(), &[]).await;
    let after = snapshot(&app, &admin, &users, &streams, at).await;
    assert_eq!(after.len(), before.len());
    for (key, value) in &before {
        assert_eq!(after.get(key), Some(value), "{key} answers differently after the restore");
    }
    // And nothing was appended by the restore (the reactor found every
    // gift credited already).
    assert_eq!(app.settle_reactor().await, at);
    // `status` sees the restarted reactor caught up with the last ledger
    // commit (found by a wildcard lookup).
    let reactor = replay_tools::status::reactor_status(&app.log, at).await.expect("status").expect("a reactor lease");
    assert_eq!(reactor.last_ledger_position, app.last_ledger_position().await);
    assert_eq!((reactor.lag_events, reactor.leased), (0, true), "{reactor:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_the_api_serves_switches_and_the_projector_follows() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let viewer = app.register("rebuild_viewer").await;
    let mut others = Vec::new();
    for i in 0..8 {
        others.push(app.register(&format!("rebuild_other_{i}")).await);
    }
    // A few thousand events for the rebuild to chew on.
    in_chunks(
        (0..1_500)
            .map(|n| {
                let (app, admin, user) = (&app, &admin, &others[n % others.len()]);
                async move {
                    app.fund(admin, user, 1).await;
                }
            })
            .collect(),
    )
    .await;
    let last = app.fund(&admin, &viewer, 2_000).await;
    let before = app.wallet(&viewer, last).await;
    assert_eq!(before["coins"], json!(2_000));

    // The rebuild runs in the same data folder as the serving API, which
    // keeps answering (and accepting commands) during it.
    let store: Arc<dyn ReadStore> = Arc::new(SqliteStore::open(&app.data_path).await.expect("store"));
    let events: Arc<dyn EventLog> = Arc::new(app.log.clone());
    let source: Arc<dyn LogSource> = Arc::new(api::source::EventLogSource::new(events));
    let rebuild = {
        let (store, source) = (store.clone(), source.clone());
        tokio::spawn(async move {
            replay_tools::rebuild(
                store,
                source,
                &RebuildOptions { batch_size_max: 50, ..RebuildOptions::all() },
                &Progress::hidden(),
            )
            .await
        })
    };
    let mut during = 0;
    // Bounded: the rebuild of a few hundred events ends in seconds.
    for _ in 0..2_000 {
        if rebuild.is_finished() {
            break;
        }
        // Commands are accepted and queries answered (the embedded store's
        // readers never wait for its writer; the serving projector's own
        // writes may wait behind the rebuild's transactions, so a
        // read-your-writes wait is not asserted here).
        app.fund(&admin, &viewer, 1).await;
        during += 1;
        let wallet = app.get("/api/v1/wallet", Some(&viewer.token)).await;
        assert_eq!(wallet.status, 200, "served during the rebuild: {}", wallet.text);
    }
    let summary = rebuild.await.expect("the rebuild task").expect("rebuild");
    eprintln!("{during} commands and queries answered during the rebuild");
    assert!(during >= 3, "the API served during the rebuild ({during} round trips)");
    assert!(summary.switched && summary.targets.iter().all(|t| t.version == 2 && t.dropped_previous), "{summary:?}");

    // After the switch the API serves version 2, and its projector applies
    // new commands to it.
    let position = app.fund(&admin, &viewer, 5).await;
    let wallet = app.wallet(&viewer, position).await;
    assert_eq!(wallet["coins"], json!(2_000 + during + 5));
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    assert!(checkpoints.iter().all(|c| c.version == 2 && c.active && c.position >= position), "{checkpoints:?}");
    let health = app.get("/health", None).await;
    assert_eq!(health.status, 200, "{}", health.text);
    app.stop().await;
}
