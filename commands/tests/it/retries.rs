//! Retries after a lost acknowledgement: the append was stored, its ack never
//! arrived, the adapter retries the same message (its message id, or for an
//! append without one its bytes, tell the stored copy) and must return the
//! ORIGINAL position as a success, having appended nothing more. Reads
//! retry their requests too.

use std::time::{Duration, Instant};

use commands::log::{AppendRequest, EventLog, JetStreamLog, LogError};
use commands::testing::NatsServer;
use futures_util::TryStreamExt;

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

/// A server, a log connected to it directly, a proxy that can lose replies,
/// and a log connected through the proxy (requests time out after 1 s).
async fn through_a_lossy_proxy() -> (NatsServer, JetStreamLog, LossyProxy, JetStreamLog) {
    init_tracing();
    let server = NatsServer::start().await;
    let direct = server.event_log().await;
    let proxy = LossyProxy::start(server.port()).await;
    let mut config = server.log_config();
    config.urls = vec![proxy.url()];
    config.request_timeout_ms = 1_000;
    let log = JetStreamLog::connect(config).await.expect("connect through the proxy");
    (server, direct, proxy, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_whose_ack_was_lost_returns_the_original_position() {
    let (_server, direct, proxy, log) = through_a_lossy_proxy().await;

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
async fn a_retried_append_without_a_message_id_is_found_by_its_bytes() {
    let (_server, direct, proxy, log) = through_a_lossy_proxy().await;
    let without_id = |subject: &str, payload: &str| AppendRequest { msg_id: None, ..request(subject, payload, "-", 0) };

    // As a command record: a new subject, expected empty, no message id.
    proxy.lose_replies_from(PUB_ACK_MARKER);
    let pending = tokio::spawn({
        let log = log.clone();
        let record = without_id("hb.command.1", "record of command 1");
        async move { log.append(record).await }
    });
    wait_until_stored(&direct, 1).await;
    // Time is the condition: the first try's (1 s) request timeout.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    proxy.restore();

    let outcome = pending.await.expect("append task");
    assert_eq!(outcome.map(|appended| (appended.position, appended.found_by_id)), Ok((1, true)));
    assert_eq!(direct.last_position().await.expect("last"), 1, "nothing appended twice");

    // Other bytes on that subject are somebody else's: a conflict.
    assert!(matches!(
        log.append(without_id("hb.command.1", "another record")).await,
        Err(LogError::Conflict { expected: 0, current: Some(1), .. })
    ));
    // The same bytes again, on a first try: a duplicate of the stored one.
    assert_eq!(
        log.append(without_id("hb.command.1", "record of command 1")).await,
        Err(LogError::Duplicate { position: 1 })
    );
    assert_eq!(direct.last_position().await.expect("last"), 1, "nothing appended");
    let stored = direct.last_on_subject("hb.command.1").await.expect("read").expect("stored");
    assert_eq!(stored.msg_id, None, "no message id sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_atomic_batch_whose_ack_was_lost_returns_the_original_positions() {
    let (_server, direct, proxy, log) = through_a_lossy_proxy().await;
    log.append(request("hb.user.a", "seed", "seed", 0)).await.expect("seed");

    // The batch-open reply (empty) gets through, the commit's ack does not.
    proxy.lose_replies_from(PUB_ACK_MARKER);
    let pending = tokio::spawn({
        let log = log.clone();
        async move {
            log.append_atomic(vec![
                request("hb.user.a", "a2", "batch-a", 1),
                request("hb.user.b", "b1", "batch-b", 0),
                // The handler's batches end with a record without an id.
                AppendRequest { msg_id: None, ..request("hb.user.c", "c1", "-", 0) },
            ])
            .await
        }
    });
    wait_until_stored(&direct, 4).await;
    // Time is the condition: the first try's (1 s) request timeout.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    proxy.restore();

    let outcome = pending.await.expect("batch task");
    assert_eq!(outcome, Ok(vec![2, 3, 4]));
    assert_eq!(direct.last_position().await.expect("last"), 4, "nothing appended twice");
}

/// The reply to a consumer's creation.
const CONSUMER_CREATED_MARKER: &[u8] = b"io.nats.jetstream.api.v1.consumer_create_response";

/// Creating the consumer of an ordered read is a request like any other:
/// when its reply is lost, it is retried, and the read returns everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_read_whose_consumer_reply_was_lost_is_retried() {
    let (_server, direct, proxy, log) = through_a_lossy_proxy().await;
    for i in 1..=3 {
        direct.append(request(&format!("hb.user.{i}"), "x", &format!("m-{i}"), 0)).await.expect("append");
    }

    proxy.lose_replies_from(CONSUMER_CREATED_MARKER);
    let reading = tokio::spawn({
        let log = log.clone();
        async move { log.read_stream(1).try_collect::<Vec<_>>().await }
    });
    // Time is the condition: the first try's (1 s) request timeout.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    proxy.restore();

    let read = reading.await.expect("read task").expect("read, the lost reply retried");
    assert_eq!(read.iter().map(|m| m.position).collect::<Vec<_>>(), vec![1, 2, 3]);
}
