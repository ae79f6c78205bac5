//! A user journey through HTTP with `MONGODB_URI` set: the API's read
//! models on MongoDB (the SecantusDB surrogate, as a replica set and
//! standalone), exact balances, and the health check naming the backend.

use halobuzz_tests::http::TestApp;
use projections::mongo_server::{Topology, database_name, surrogate_target};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_with_mongodb_uri_keeps_every_balance_exact() {
    for topology in [Topology::ReplicaSet, Topology::Standalone] {
        let uri = surrogate_target(topology).await.uri;
        let database = database_name("journey");
        let app = TestApp::start_with(&[("MONGODB_URI", uri.as_str()), ("MONGODB_DB", database.as_str())]).await;
        let health = app.get("/health", None).await;
        assert_eq!(health.body["checks"]["readStore"]["backend"], json!("mongodb"), "{}", health.text);

        let admin = app.admin().await;
        let [host, viewer] = app.register_all(["host_1", "viewer_1"]).await;
        let taken = app
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": viewer.email, "username": "someone_else", "password": halobuzz_tests::http::PASSWORD}),
            )
            .await;
        assert_eq!(taken.status, 409, "{}", taken.text);
        app.fund(&admin, &viewer, 1_000).await;
        let stream = app.start_stream(&host, "Mongo night").await;
        let joined = app.post(&format!("/api/v1/streams/{stream}/join"), Some(&viewer.token), json!({})).await;
        assert_eq!(joined.status, 200, "{}", joined.text);
        let gift = app.gift(&viewer.token, stream, "crown", 3).await;
        assert_eq!(gift.status, 201, "{}", gift.text);
        let last = gift.position();
        let board = app.get(&format!("/api/v1/streams/{stream}/leaderboard?minPosition={last}"), None).await;
        assert_eq!(board.body["items"], json!([{"userId": viewer.id.to_string(), "coins": 300}]), "{topology:?}");
        let seen = app.get(&format!("/api/v1/streams/{stream}?minPosition={last}"), None).await;
        assert_eq!((seen.body["viewers"].clone(), seen.body["giftsCoins"].clone()), (json!(1), json!(300)));

        let settled = app.settle_reactor().await;
        let wallet = app.wallet(&host, settled).await;
        assert_eq!(wallet["earnings"], json!(210), "{topology:?}: {wallet}");
        let payout =
            app.post("/api/v1/payouts", Some(&host.token), json!({"coins": 200, "destination": "iban:DE00"})).await;
        assert_eq!(payout.status, 201, "{}", payout.text);
        let end = app.settle_reactor().await.max(payout.position());
        let trial =
            app.get(&format!("/api/v1/ledger/trial-balance?limit=200&minPosition={end}"), Some(&admin.token)).await;
        assert_eq!(trial.status, 200, "{}", trial.text);
        assert_eq!(trial.body["totalCoins"], json!(0), "{topology:?}");
        let health = app.get("/health", None).await;
        assert_eq!(health.body["checks"]["projector"]["status"], json!("up"), "{}", health.text);
        app.stop().await;
        let store = projections::MongoStore::connect(&uri, Some(&database)).await.expect("connect");
        store.drop_database().await.expect("drop");
    }
}
