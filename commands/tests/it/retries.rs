//! Retries after a lost acknowledgement: the append was stored, its ack never
//! arrived, the adapter retries with the same message id and must return the
//! ORIGINAL position as a success, having appended nothing more.

use std::time::{Duration, Instant};

use commands::log::{EventLog, JetStreamLog};
use commands::testing::NatsServer;

use crate::support::{LossyProxy, init_tracing, request};

/// Every publish ack carries the stored sequence.
const PUB_ACK_MARKER: &[u8] = b"\"seq\":";

/// Waits until the server itself (not through the proxy) holds `position`.
async fn wait_until_stored(server_log: &JetStreamLog, position: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Bounded by the deadline.
    while server_log.last_position().await.expect("direct read") < position {
        assert!(Instant::now() < deadline, "position {position} never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_ack_was_lost_returns_the_original_position() {
    init_tracing();
    let server = NatsServer::start().await;
    let direct = server.event_log().await;
    let proxy = LossyProxy::start(server.port()).await;
    let mut config = server.log_config();
    config.urls = vec![proxy.url()];
    config.request_timeout_ms = 1_000;
    let log = JetStreamLog::connect(config).await.expect("connect through the proxy");

    let first = log.append(request("hb.user.1", "one", "m-1", 0)).await.expect("append");
    assert_eq!(first.position, 1);
    assert!(!first.found_by_id, "stored by this very try");

    // The next append reaches the server, its ack is lost.
    proxy.lose_replies_from(PUB_ACK_MARKER);
    let pending = tokio::spawn({
        let log = log.clone();
        async move { log.append(request("hb.user.1", "two", "m-2", 1)).await }
    });
    wait_until_stored(&direct, 2).await;
    // The first try times out; the connection is then cut and restored.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    proxy.restore();

    let outcome = pending.await.expect("append task");
    assert_eq!(outcome.as_ref().map(|appended| appended.position), Ok(2), "the original position, as a success");
    // Found by its message id: the caller cannot tell its own copy from
    // another append's under the same id (the handler's cache forgets it).
    assert_eq!(outcome.map(|appended| appended.found_by_id), Ok(true));
    assert_eq!(direct.last_position().await.expect("last"), 2, "nothing appended twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_atomic_batch_whose_ack_was_lost_returns_the_original_positions() {
    init_tracing();
    let server = NatsServer::start().await;
    let direct = server.event_log().await;
    let proxy = LossyProxy::start(server.port()).await;
    let mut config = server.log_config();
    config.urls = vec![proxy.url()];
    config.request_timeout_ms = 1_000;
    let log = JetStreamLog::connect(config).await.expect("connect through the proxy");
    log.append(request("hb.user.a", "seed", "seed", 0)).await.expect("seed");

    // The batch-open reply (empty) gets through, the commit's ack does not.
    proxy.lose_replies_from(PUB_ACK_MARKER);
    let pending = tokio::spawn({
        let log = log.clone();
        async move {
            log.append_atomic(vec![
                request("hb.user.a", "a2", "batch-a", 1),
                request("hb.user.b", "b1", "batch-b", 0),
                request("hb.user.c", "c1", "batch-c", 0),
            ])
            .await
        }
    });
    wait_until_stored(&direct, 4).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    proxy.restore();

    let outcome = pending.await.expect("batch task");
    assert_eq!(outcome, Ok(vec![2, 3, 4]));
    assert_eq!(direct.last_position().await.expect("last"), 4, "nothing appended twice");
}
