//! Rebuild, verify and audit against MongoDB (the SecantusDB surrogate, in
//! both topologies), as against the embedded store in `rebuild.rs`.

use std::sync::Arc;

use mongodb::bson::doc;
use projections::mongo_server::{Topology, database_name, surrogate_target};
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
