//! Rebuild, verify and audit against MongoDB (the SecantusDB surrogate, in
//! both topologies), as against the embedded store in `rebuild.rs`.

use std::sync::Arc;

use mongodb::bson::doc;
use projections::mongo_server::{MongoSurrogate, Topology, database_name, surrogate_target};
use projections::testing::checksum;
use projections::{MongoStore, Projection, ProjectionVersion, ReadStore, RunnerConfig};
use replay_tools::{Progress, RebuildOptions};

use crate::support::{server_with_log, source};

async fn active_versions(store: &dyn ReadStore) -> Vec<ProjectionVersion> {
    let mut out = Vec::new();
    for p in Projection::ALL {
        out.push(ProjectionVersion::new(p, store.active_version(p).await.expect("active version")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_verify_and_audit_on_mongodb_agree_with_the_log() {
    let events = 4_000;
    let (_server, log) = server_with_log(events).await;
    for topology in [Topology::ReplicaSet, Topology::Standalone] {
        let uri = surrogate_target(topology).await.uri;
        let mongo = MongoStore::connect(&uri, Some(&database_name("replay_rebuild"))).await.expect("connect");
        mongo.drop_database().await.expect("drop");
        let store: Arc<dyn ReadStore> = Arc::new(mongo.clone());
        // The serving version 1, as the API's projector applies it.
        let runner = projections::Runner::new(store.clone(), source(&log), RunnerConfig::new("test")).expect("runner");
        assert_eq!(runner.catch_up().await.expect("catch up"), events);
        let serving = checksum(store.as_ref(), &active_versions(store.as_ref()).await).await.expect("checksum");

        let report = replay_tools::verify(store.clone(), source(&log), &Projection::ALL, 1_000, &Progress::hidden())
            .await
            .expect("verify");
        assert!(report.consistent, "{topology:?}: {report:#?}");

        let ledger = replay_tools::audit::read_model_ledger(store.as_ref()).await.expect("read").expect("still");
        let audit = replay_tools::audit_log(&log, Vec::new(), Some(ledger), &Progress::hidden()).await.expect("audit");
        assert!(audit.passed, "{topology:?}: {:#?}", audit.findings);
        assert_eq!(audit.read_model_compared_at, Some(events));

        // A rebuild builds version 2 beside version 1, switches, drops 1:
        // the runbook names become views of version 2.
        let options = RebuildOptions { batch_size_max: 1_000, ..RebuildOptions::all() };
        let summary =
            replay_tools::rebuild(store.clone(), source(&log), &options, &Progress::hidden()).await.expect("rebuild");
        assert!(summary.switched);
        assert_eq!(summary.position, events);
        let rebuilt = checksum(store.as_ref(), &active_versions(store.as_ref()).await).await.expect("checksum");
        assert_eq!(rebuilt, serving, "{topology:?}");
        let first = projections::ProjectionVersion::new(Projection::Wallets, 1);
        let through_view = checksum(store.as_ref(), &[first]).await.expect("checksum of the runbook names");
        assert_eq!(through_view.collections.get("wallets"), rebuilt.collections.get("wallets"), "{topology:?}");

        // One wallet changed behind the projector's back: verify finds it.
        let wallets = mongo.database().collection::<mongodb::bson::Document>("wallets__v2");
        wallets.update_one(doc! {}, doc! {"$inc": {"coins": 1i64}}).await.expect("update");
        let report = replay_tools::verify(store.clone(), source(&log), &Projection::ALL, 1_000, &Progress::hidden())
            .await
            .expect("verify");
        assert!(!report.consistent, "{topology:?}");
        assert_eq!(report.differences, 1);
        mongo.drop_database().await.expect("drop");
    }
}

/// Runs the binary with the API's environment on `nats_url`, `data_dir`
/// and the MongoDB `uri`/`database`; returns (exit code, stdout, stderr).
async fn replay_on_mongo(
    nats_url: &str,
    data_dir: &std::path::Path,
    uri: &str,
    database: &str,
    args: &[&str],
) -> (i32, String, String) {
    crate::support::run_replay(nats_url, data_dir, &[("MONGODB_URI", uri), ("MONGODB_DB", database)], args).await
}

/// Issue 14, defect 3: the API's projector stops on a write the store
/// refuses (the surrogate's `failCommand` fail point: "not supported on a
/// view", 166), and `halobuzz-replay status`, another process, shows the
/// error of every projection it ran, in JSON and in text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_stopped_by_a_refused_write_shows_its_error_in_status() {
    use std::time::{Duration, Instant};

    let events = 200;
    let (nats, _log) = server_with_log(events).await;
    // A surrogate of its own: the fail point is server-wide.
    let mongo = MongoSurrogate::start(Topology::ReplicaSet).await;
    let uri = mongo.uri();
    let database = database_name("projector_error");
    let data = tempfile::tempdir().expect("tempdir");
    let env: std::collections::HashMap<&str, String> = [
        ("APP_ENV", "test".to_string()),
        ("NATS_URL", nats.url()),
        ("DATA_DIR", data.path().to_string_lossy().into_owned()),
        ("MONGODB_URI", uri.clone()),
        ("MONGODB_DB", database.clone()),
    ]
    .into_iter()
    .collect();
    let config = api::Config::from_lookup(|name| env.get(name).cloned()).expect("a valid configuration");
    let service = api::Service::start(config).await.expect("the service starts");
    let status = service.state().workers.projector.clone().expect("the service runs the projector");
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.borrow().checkpoint < events {
        assert!(Instant::now() < deadline, "never caught up: {:?}", status.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // From now on every update is refused: the lease's next renewal (or
    // the next batch) stops the projector.
    let admin = mongodb::Client::with_uri_str(&uri).await.expect("client").database("admin");
    admin
        .run_command(doc! {"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": {
            "failCommands": ["update"], "errorCode": 166,
        }})
        .await
        .expect("failCommand fail point");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !service.state().projector_failed() {
        assert!(Instant::now() < deadline, "the projector did not stop: {:?}", status.borrow());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.run_command(doc! {"configureFailPoint": "failCommand", "mode": "off"}).await.expect("fail point off");

    // The error reaches the bucket beside the log shortly after.
    let deadline = Instant::now() + Duration::from_secs(20);
    let projectors = loop {
        let (code, out, err) = replay_on_mongo(&nats.url(), data.path(), &uri, &database, &["status", "--json"]).await;
        assert_eq!(code, 0, "{err}");
        let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
        let projectors = report["projectors"].as_array().cloned().unwrap_or_default();
        if projectors.iter().any(|p| p["error"]["stopped"] == true) {
            break projectors;
        }
        assert!(Instant::now() < deadline, "no error in status: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(projectors.len(), Projection::ALL.len(), "{projectors:?}");
    for p in &projectors {
        let message = p["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("read store refused") && message.contains("166"), "{p}");
        assert_eq!(p["error"]["stopped"], true, "{p}");
    }
    let (code, text, err) = replay_on_mongo(&nats.url(), data.path(), &uri, &database, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(text.matches("  error (stopped since ").count(), Projection::ALL.len(), "{text}");

    service.shutdown().await;
}
