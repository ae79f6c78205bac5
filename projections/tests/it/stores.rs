//! The stores every conformance case and specification runs against: the
//! embedded store, and MongoDB in both topologies (SecantusDB, started by
//! the harness; a real MongoDB as well when `MONGODB_URI` is set).

use std::future::Future;
use std::sync::Arc;

use projections::mongo_server::{Topology, database_name, surrogate_target};
use projections::{MongoStore, ReadStore};

/// Runs `case` against the MongoDB surrogate of `topology`, in a database
/// of its own, dropped after; for the replica set, against the server
/// `MONGODB_URI` names as well when it is set. A server that cannot be
/// had fails the test.
pub async fn on_mongodb<F, Fut>(topology: Topology, case: &str, run: F)
where
    F: Fn(Arc<dyn ReadStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut targets = vec![surrogate_target(topology).await];
    if topology == Topology::ReplicaSet
        && let Ok(uri) = std::env::var("MONGODB_URI")
        && !uri.trim().is_empty()
    {
        targets.push(projections::mongo_server::MongoTarget { label: "MONGODB_URI".into(), uri, transactions: None });
    }
    for target in targets {
        let database = database_name(case);
        let store = MongoStore::connect(&target.uri, Some(&database))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {} ({}): {e}", target.label, target.uri));
        if let Some(transactions) = target.transactions {
            assert_eq!(store.uses_transactions(), transactions, "{} runs transactions?", target.label);
        }
        store.drop_database().await.unwrap();
        run(Arc::new(store.clone())).await;
        store.drop_database().await.unwrap();
    }
}

/// For each case (an `async fn(Arc<dyn ReadStore>)` of the module that
/// invokes it): a test on the embedded store, and one on MongoDB in each
/// topology.
macro_rules! every_store {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (store, _dir) = crate::support::sqlite().await;
                    super::$case(store).await;
                }
            )*
        }

        mod mongodb_replica_set {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::stores::on_mongodb(
                        projections::mongo_server::Topology::ReplicaSet,
                        stringify!($case),
                        super::$case,
                    )
                    .await;
                }
            )*
        }

        mod mongodb_standalone {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::stores::on_mongodb(
                        projections::mongo_server::Topology::Standalone,
                        stringify!($case),
                        super::$case,
                    )
                    .await;
                }
            )*
        }
    };
}
