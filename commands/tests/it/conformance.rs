//! Conformance of the JetStream adapter to the `EventLog` port, each test on
//! its own fresh single server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use commands::log::{
    EventLog, JetStreamLog, LogConfig, LogError, MIN_SERVER_VERSION, ServerVersion, check_server_version,
};
use commands::testing::{NatsServer, nats_server_version};
use futures_util::{FutureExt, TryStreamExt};

use crate::support::{init_tracing, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_server_passes_the_version_check() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;
    let version = check_server_version(log.server_version()).expect("the harness server is recent");
    assert!(version >= MIN_SERVER_VERSION);
    assert_eq!(log.server_version(), nats_server_version());
    assert_eq!(log.stream_name(), "HALOBUZZ");
    // The unit side of the refusal (no old server can be installed here).
    for old in ["2.9.25", "2.11.9"] {
        assert!(matches!(check_server_version(old), Err(LogError::ServerTooOld { .. })));
    }
    for recent in ["2.12.0", "2.15.1"] {
        assert_eq!(check_server_version(recent).ok(), ServerVersion::parse(recent));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expected_sequence_is_a_conflict_and_appends_nothing() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;

    let first = log.append(request("hb.user.1", "a", "m-1", 0)).await.expect("first");
    assert_eq!(first.position, 1);

    // The subject is no longer empty.
    match log.append(request("hb.user.1", "b", "m-2", 0)).await {
        Err(LogError::Conflict { subject, expected, current }) => {
            assert_eq!(subject, "hb.user.1");
            assert_eq!(expected, 0);
            assert_eq!(current, Some(1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // An expectation from the future is as wrong.
    assert!(matches!(
        log.append(request("hb.user.1", "b", "m-3", 7)).await,
        Err(LogError::Conflict { expected: 7, .. })
    ));
    assert_eq!(log.last_position().await.expect("last"), 1);

    // The right expectation goes through; other subjects are independent.
    let second = log.append(request("hb.user.1", "b", "m-4", 1)).await.expect("second");
    assert_eq!(second.position, 2);
    let other = log.append(request("hb.user.2", "c", "m-5", 0)).await.expect("other");
    assert_eq!(other.position, 3);
    // A later position elsewhere does not move this subject's expectation.
    let third = log.append(request("hb.user.1", "d", "m-6", 2)).await.expect("third");
    assert_eq!(third.position, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_message_id_returns_the_original_position_and_appends_nothing() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;

    let original = log.append(request("hb.user.1", "a", "cmd-42", 0)).await.expect("append");
    log.append(request("hb.user.2", "x", "cmd-43", 0)).await.expect("append");

    // The same append again.
    assert_eq!(
        log.append(request("hb.user.1", "a", "cmd-42", 0)).await,
        Err(LogError::Duplicate { position: original.position })
    );
    // Even with another payload and an expectation that would pass: the id
    // decides (dedupe is checked before the expectation).
    assert_eq!(
        log.append(request("hb.user.1", "other", "cmd-42", 1)).await,
        Err(LogError::Duplicate { position: original.position })
    );
    assert_eq!(log.last_position().await.expect("last"), 2);
    let stored = log.last_on_subject("hb.user.1").await.expect("get").expect("some");
    assert_eq!(stored.payload, Bytes::from("a"));
    assert_eq!(stored.msg_id.as_deref(), Some("cmd-42"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_get_of_an_unknown_subject_is_none() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;

    assert_eq!(log.last_on_subject("hb.user.nobody").await.expect("get"), None);
    assert_eq!(log.last_position().await.expect("last"), 0);
    assert!(log.read_from(1, 10).await.expect("read").is_empty());

    log.append(request("hb.user.7", "v1", "a", 0)).await.expect("append");
    log.append(request("hb.user.8", "w1", "b", 0)).await.expect("append");
    log.append(request("hb.user.7", "v2", "c", 1)).await.expect("append");
    let last = log.last_on_subject("hb.user.7").await.expect("get").expect("some");
    assert_eq!(last.position, 3);
    assert_eq!(last.subject, "hb.user.7");
    assert_eq!(last.payload, Bytes::from("v2"));
    assert_eq!(last.msg_id.as_deref(), Some("c"));
    let now_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs() as i64;
    assert!((now_s - last.timestamp.timestamp()).abs() < 60, "timestamp {} is off", last.timestamp);
    // Still none for a subject that shares a prefix.
    assert_eq!(log.last_on_subject("hb.user.70").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_messages_of_several_subjects_come_in_one_read() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;
    let subjects = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();

    // An empty log, and an empty question.
    assert_eq!(log.last_on_subjects(&subjects(&["hb.user.1", "hb.user.2"])).await.expect("read"), vec![None, None]);
    assert!(log.last_on_subjects(&[]).await.expect("read").is_empty());

    log.append(request("hb.user.1", "a1", "a", 0)).await.expect("append");
    log.append(request("hb.user.2", "b1", "b", 0)).await.expect("append");
    log.append(request("hb.user.1", "a2", "c", 1)).await.expect("append");
    let lasts = log
        .last_on_subjects(&subjects(&["hb.user.1", "hb.user.nobody", "hb.user.2", "hb.user.1", "hb.user.10"]))
        .await
        .expect("read");
    let seen: Vec<Option<(u64, Bytes)>> =
        lasts.iter().map(|m| m.as_ref().map(|m| (m.position, m.payload.clone()))).collect();
    assert_eq!(
        seen,
        vec![Some((3, Bytes::from("a2"))), None, Some((2, Bytes::from("b1"))), Some((3, Bytes::from("a2"))), None],
        "in the order asked, a repeated subject twice, a missing or prefix-sharing one as none"
    );
    assert_eq!(lasts[0].as_ref().and_then(|m| m.msg_id.as_deref()), Some("c"));

    // A wildcard would read many subjects: refused, not expanded.
    for bad in ["hb.user.*", "hb.>", "hb..1"] {
        assert!(matches!(log.last_on_subjects(&subjects(&[bad])).await, Err(LogError::Invalid(_))), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_last_messages_each_get_their_own_answers() {
    init_tracing();
    const SUBJECTS: u64 = 300;
    const READERS: u64 = 400;
    let server = NatsServer::start().await;
    let log = Arc::new(server.event_log().await);
    for i in 0..SUBJECTS {
        log.append(request(&format!("hb.user.{i}"), &format!("v{i}"), &format!("m{i}"), 0)).await.expect("append");
    }
    // Many callers at once, more subjects than one request takes: each
    // gets the messages of its own subjects, in its order.
    let tasks: Vec<_> = (0..READERS)
        .map(|r| {
            let log = log.clone();
            tokio::spawn(async move {
                let wanted: Vec<String> = [r % SUBJECTS, (r * 7 + 3) % SUBJECTS, SUBJECTS + r]
                    .iter()
                    .map(|i| format!("hb.user.{i}"))
                    .collect();
                let lasts = log.last_on_subjects(&wanted).await.expect("read");
                let payloads: Vec<Option<Bytes>> = lasts.into_iter().map(|m| m.map(|m| m.payload)).collect();
                let expected = vec![
                    Some(Bytes::from(format!("v{}", r % SUBJECTS))),
                    Some(Bytes::from(format!("v{}", (r * 7 + 3) % SUBJECTS))),
                    None,
                ];
                assert_eq!(payloads, expected, "reader {r}");
            })
        })
        .collect();
    // Callers that give up midway (a dropped HTTP request), some of them
    // while leading a round, strand nobody.
    let quitters: Vec<_> = (0..READERS)
        .map(|r| {
            let log = log.clone();
            tokio::spawn(async move {
                let wanted = vec![format!("hb.user.{}", r % SUBJECTS)];
                let _ = tokio::time::timeout(std::time::Duration::from_micros(r % 300), log.last_on_subjects(&wanted))
                    .await;
            })
        })
        .collect();
    for task in tasks.into_iter().chain(quitters) {
        task.await.expect("reader");
    }
    // Lone callers that give up while leading their own round.
    for _ in 0..16 {
        let wanted = vec!["hb.user.1".to_owned()];
        // Polled once (it leads, sends its request, waits), then dropped.
        // (Rarely the reply is routed within that one poll, when the OS
        // preempts the thread between the request and the wait.)
        let _ = log.last_on_subjects(&wanted).now_or_never();
    }
    let after = tokio::time::timeout(std::time::Duration::from_secs(2), log.last_on_subjects(&["hb.user.0".into()]))
        .await
        .expect("a read after the quitters is answered at once")
        .expect("read");
    assert_eq!(after[0].as_ref().map(|m| m.payload.clone()), Some(Bytes::from("v0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_messages_larger_than_one_reply_come_in_several_rounds() {
    init_tracing();
    let server = NatsServer::start().await;
    let mut config = server.log_config();
    // Each reply carries about one message.
    config.multi_last_bytes_max = 100;
    let log = JetStreamLog::connect(config).await.expect("connects");
    let big = |tag: usize| format!("{tag}-{}", "x".repeat(300));
    let wanted: Vec<String> = (0..20).map(|i| format!("hb.user.{i}")).collect();
    for (i, subject) in wanted.iter().enumerate() {
        log.append(request(subject, &big(i), &format!("m{i}"), 0)).await.expect("append");
    }
    let lasts = log.last_on_subjects(&wanted).await.expect("read");
    for (i, last) in lasts.iter().enumerate() {
        let last = last.as_ref().unwrap_or_else(|| panic!("subject {i} answered"));
        assert_eq!(last.payload, Bytes::from(big(i)));
        assert_eq!(last.position, i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_every_message_in_order_from_any_position() {
    init_tracing();
    const MESSAGES: u64 = 1_000;
    const SUBJECTS: u64 = 7;
    let server = NatsServer::start().await;
    let log = server.event_log().await;

    let mut last_on: HashMap<String, u64> = HashMap::new();
    let mut expected_payloads = Vec::new();
    for index in 1..=MESSAGES {
        let subject = format!("hb.account.{}", index % SUBJECTS);
        let payload = format!("payload-{index}-{}", "x".repeat((index % 50) as usize));
        let expected = last_on.get(&subject).copied().unwrap_or(0);
        let appended = log.append(request(&subject, &payload, &format!("id-{index}"), expected)).await.expect("append");
        assert_eq!(appended.position, index);
        last_on.insert(subject.clone(), appended.position);
        expected_payloads.push((subject, payload));
    }
    assert_eq!(log.last_position().await.expect("last"), MESSAGES);

    let check = |messages: &[commands::log::StoredMessage], from: u64| {
        for (offset, message) in messages.iter().enumerate() {
            let position = from + offset as u64;
            assert_eq!(message.position, position);
            let (subject, payload) = &expected_payloads[(position - 1) as usize];
            assert_eq!(&message.subject, subject);
            assert_eq!(message.payload, Bytes::from(payload.clone()));
            assert_eq!(message.msg_id.as_deref(), Some(format!("id-{position}").as_str()));
        }
        for pair in messages.windows(2) {
            assert!(pair[0].timestamp <= pair[1].timestamp);
        }
    };

    let all = log.read_from(1, 5_000).await.expect("read all");
    assert_eq!(all.len() as u64, MESSAGES);
    check(&all, 1);
    for (from, max, expected_len) in [
        (0, 5, 5),
        (1, 1, 1),
        (500, 10, 10),
        (321, 333, 333),
        (990, 100, 11),
        (1_000, 10, 1),
        (1_001, 10, 0),
        (5_000, 10, 0),
    ] {
        let read = log.read_from(from, max).await.expect("read");
        assert_eq!(read.len(), expected_len, "read_from({from}, {max})");
        check(&read, from.max(1));
    }

    let streamed: Vec<_> = log.read_stream(1).try_collect().await.expect("stream all");
    assert_eq!(streamed, all);
    let tail: Vec<_> = log.read_stream(600).try_collect().await.expect("stream tail");
    assert_eq!(tail.len(), 401);
    check(&tail, 600);
    let beyond: Vec<_> = log.read_stream(1_001).try_collect().await.expect("stream beyond");
    assert!(beyond.is_empty());
    let by_direct_get: Vec<_> = log.read_stream_direct_get(250).try_collect().await.expect("direct get stream");
    assert_eq!(by_direct_get.len(), 751);
    check(&by_direct_get, 250);

    // Through the dyn port, too.
    let port: Arc<dyn EventLog> = Arc::new(log.clone());
    assert_eq!(port.read_from(999, 5).await.expect("dyn read").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_batch_lands_whole_or_not_at_all() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;
    log.append(request("hb.user.viewer", "v1", "seed-1", 0)).await.expect("seed");
    log.append(request("hb.user.host", "h1", "seed-2", 0)).await.expect("seed");

    // A good batch: consecutive positions, in request order.
    let positions = log
        .append_atomic(vec![
            request("hb.user.viewer", "v2", "batch-1-a", 1),
            request("hb.user.host", "h2", "batch-1-b", 2),
            request("hb.stripe.evt_1", "s1", "batch-1-c", 0),
        ])
        .await
        .expect("batch");
    assert_eq!(positions, vec![3, 4, 5]);
    let read = log.read_from(3, 10).await.expect("read");
    let subjects: Vec<_> = read.iter().map(|message| message.subject.as_str()).collect();
    assert_eq!(subjects, ["hb.user.viewer", "hb.user.host", "hb.stripe.evt_1"]);
    assert_eq!(read[1].msg_id.as_deref(), Some("batch-1-b"));

    // The second message expects a stale position: nothing lands, not even
    // the first message whose expectation holds.
    let refused = log
        .append_atomic(vec![
            request("hb.user.viewer", "v3", "batch-2-a", 3),
            request("hb.user.host", "h3", "batch-2-b", 2),
            request("hb.stripe.evt_2", "s2", "batch-2-c", 0),
        ])
        .await;
    match refused {
        Err(LogError::Conflict { subject, expected, current }) => {
            assert_eq!(subject, "hb.user.host");
            assert_eq!(expected, 2);
            assert_eq!(current, Some(4));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.last_position().await.expect("last"), 5);
    assert_eq!(log.last_on_subject("hb.user.viewer").await.expect("get").map(|m| m.position), Some(3));
    assert_eq!(log.last_on_subject("hb.stripe.evt_2").await.expect("get"), None);
    assert_eq!(log.read_from(6, 10).await.expect("read"), Vec::new());

    // The same batch again (ids already stored): a duplicate, nothing lands.
    let again = log
        .append_atomic(vec![
            request("hb.user.viewer", "v2", "batch-1-a", 1),
            request("hb.user.host", "h2", "batch-1-b", 2),
            request("hb.stripe.evt_1", "s1", "batch-1-c", 0),
        ])
        .await;
    assert_eq!(again, Err(LogError::Duplicate { position: 5 }));
    assert_eq!(log.last_position().await.expect("last"), 5);

    // Corrected, it goes through.
    let positions = log
        .append_atomic(vec![
            request("hb.user.viewer", "v3", "batch-3-a", 3),
            request("hb.user.host", "h3", "batch-3-b", 4),
        ])
        .await
        .expect("batch");
    assert_eq!(positions, vec![6, 7]);

    // A batch of one, and an empty batch.
    assert_eq!(log.append_atomic(vec![request("hb.user.solo", "s", "batch-4", 0)]).await.expect("one"), vec![8]);
    assert_eq!(log.append_atomic(Vec::new()).await.expect("empty"), Vec::<u64>::new());

    // Refused before sending: two messages on one subject, too many messages.
    assert!(matches!(
        log.append_atomic(vec![
            request("hb.user.twice", "a", "batch-5-a", 0),
            request("hb.user.twice", "b", "batch-5-b", 0),
        ])
        .await,
        Err(LogError::Invalid(_))
    ));
    let too_many = (0..=commands::log::ATOMIC_BATCH_SIZE_MAX)
        .map(|index| request(&format!("hb.many.{index}"), "m", &format!("many-{index}"), 0))
        .collect();
    assert!(matches!(log.append_atomic(too_many).await, Err(LogError::Invalid(_))));
    assert_eq!(log.last_position().await.expect("last"), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_atomic_batch_lands_whole() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;
    let batch = (0..commands::log::ATOMIC_BATCH_SIZE_MAX)
        .map(|index| request(&format!("hb.big.{index}"), "payload", &format!("big-{index}"), 0))
        .collect();
    let positions = log.append_atomic(batch).await.expect("batch of 1000");
    assert_eq!(positions, (1..=1_000).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_creates_checks_and_repairs_the_stream() {
    init_tracing();
    let server = NatsServer::start().await;
    let log = server.event_log().await;
    log.append(request("hb.user.1", "a", "a", 0)).await.expect("append");

    // A second connection validates the existing stream and keeps the data.
    let again = server.event_log().await;
    assert_eq!(again.last_position().await.expect("last"), 1);

    // Drifted settings are brought back.
    let mut drifted = server.log_config();
    drifted.duplicate_window_ms = 30_000;
    JetStreamLog::connect(drifted).await.expect("update");
    let context = async_nats::jetstream::new(log.client().clone());
    let mut stream = context.get_stream("HALOBUZZ").await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.duplicate_window.as_millis(), 30_000);
    assert!(info.config.allow_atomic_publish);
    assert!(info.config.allow_direct);
    assert!(info.config.deny_delete && info.config.deny_purge);
    assert_eq!(info.config.max_messages, -1);

    // The records stream keeps each record for the horizon, a floor: a
    // longer one raises it, a client with the default never shortens it.
    let records_age = |context: async_nats::jetstream::Context| async move {
        let mut stream = context.get_stream("HALOBUZZ_COMMANDS").await.expect("records stream");
        stream.info().await.expect("info").config.max_age
    };
    assert_eq!(records_age(context.clone()).await, Duration::from_secs(24 * 3600));
    let mut longer = server.log_config();
    longer.idempotency_horizon_ms = 48 * 3_600_000;
    JetStreamLog::connect(longer).await.expect("update");
    assert_eq!(records_age(context.clone()).await, Duration::from_secs(48 * 3600));
    server.event_log().await;
    assert_eq!(records_age(context.clone()).await, Duration::from_secs(48 * 3600));

    // A stream JetStream cannot convert (memory storage) is refused.
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: "MEMORY".into(),
            subjects: vec!["mem.>".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create memory stream");
    let mut memory = server.log_config();
    memory.stream_name = "MEMORY".into();
    memory.subjects = vec!["mem.>".into()];
    match JetStreamLog::connect(memory).await {
        Err(LogError::Invalid(reason)) => assert!(reason.contains("storage"), "{reason}"),
        other => panic!("expected Invalid, got {other:?}"),
    }

    // Bad settings are refused before connecting.
    let mut bad = server.log_config();
    bad.replicas = 0;
    assert!(matches!(JetStreamLog::connect(bad).await, Err(LogError::Invalid(_))));
    let mut expiring = server.log_config();
    expiring.max_age_ms = 60_000;
    assert!(matches!(JetStreamLog::connect(expiring).await, Err(LogError::Invalid(_))), "a ledger never expires");
    let nobody = LogConfig::new(Vec::<String>::new());
    assert!(matches!(JetStreamLog::connect(nobody).await, Err(LogError::Invalid(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_unavailable() {
    init_tracing();
    let mut server = NatsServer::start().await;
    let mut config = server.log_config();
    config.request_timeout_ms = 500;
    config.append_retry_max = 2;
    config.retry_delay_ms_max = 50;
    let log = JetStreamLog::connect(config).await.expect("connect");
    server.kill9();
    match log.append(request("hb.user.1", "a", "a", 0)).await {
        Err(LogError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(log.last_position().await.is_err_and(|error| error.is_unavailable()));
}
