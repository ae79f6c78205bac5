//! Acknowledged appends survive a SIGKILL of the server (`sync_interval:
//! always`).

use std::collections::HashMap;

use bytes::Bytes;
use commands::log::{EventLog, LogError};
use commands::testing::NatsServer;
use futures_util::{StreamExt, TryStreamExt};

use crate::support::{init_tracing, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill9_and_restart() {
    init_tracing();
    const MESSAGES: u64 = 500;
    const IN_FLIGHT_MAX: usize = 32;
    let mut server = NatsServer::start().await;
    let mut config = server.log_config();
    // Short timeouts: the first reads after the restart may go to the dead
    // connection until the client notices and reconnects.
    config.request_timeout_ms = 1_000;
    config.append_retry_max = 5;
    let log = commands::log::JetStreamLog::connect(config).await.expect("connect");

    // Appends in flight concurrently, one subject each (expected 0), so the
    // kill can land while the server is busy.
    let acked: Vec<(u64, u64)> = futures_util::stream::iter(1..=MESSAGES)
        .map(|index| {
            let log = log.clone();
            async move {
                let appended = log
                    .append(request(
                        &format!("hb.durable.{index}"),
                        &format!("payload-{index}"),
                        &format!("durable-{index}"),
                        0,
                    ))
                    .await?;
                Ok::<_, LogError>((index, appended.position))
            }
        })
        .buffer_unordered(IN_FLIGHT_MAX)
        .try_collect()
        .await
        .expect("appends");
    assert_eq!(acked.len() as u64, MESSAGES);

    server.kill9();
    server.restart().await;

    // The same client reconnects by itself (same port).
    let stored: Vec<_> = log.read_stream(1).try_collect().await.expect("read after restart");
    assert_eq!(stored.len() as u64, MESSAGES);
    let by_position: HashMap<u64, _> = stored.iter().map(|message| (message.position, message)).collect();
    for (index, position) in acked {
        let message = by_position[&position];
        assert_eq!(message.subject, format!("hb.durable.{index}"));
        assert_eq!(message.payload, Bytes::from(format!("payload-{index}")));
        assert_eq!(message.msg_id.as_deref(), Some(format!("durable-{index}").as_str()));
    }

    // Subject state is intact: expectations keep working after recovery.
    let last = log.last_on_subject("hb.durable.7").await.expect("get").expect("some");
    let next = log
        .append(request("hb.durable.7", "after", "durable-after", last.position))
        .await
        .expect("append after restart");
    assert_eq!(next.position, MESSAGES + 1);
    assert!(matches!(
        log.append(request("hb.durable.8", "x", "durable-conflict", 0)).await,
        Err(LogError::Conflict { .. })
    ));
    // And the server's duplicate window was rebuilt from the store: with
    // an expectation that holds, only the message id can refuse this.
    let last_9 = log.last_on_subject("hb.durable.9").await.expect("get").expect("some");
    assert_eq!(
        log.append(request("hb.durable.9", "payload-9", "durable-9", last_9.position)).await,
        Err(LogError::Duplicate { position: last_9.position })
    );
}
