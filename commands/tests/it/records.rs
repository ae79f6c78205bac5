//! Command records kept for the idempotency horizon (decision 0017): a
//! single-event command's record goes to the records stream, whose age
//! limit removes it after the horizon; a record written before the change,
//! in the ledger's stream, still answers its repeat.

use std::time::Duration;

use commands::log::{AppendRequest, EventLog};
use events_schema::{Account, ActorKind, CommandRecorded, Envelope, Event, GENESIS_HASH, command_record_id, subject};
use uuid::Uuid;

use crate::world::{World, balance, balances, ctx, meta_of};

/// Messages the stream `name` holds now.
async fn held(world: &World, name: &str) -> u64 {
    let context = async_nats::jetstream::new(world.log.client().clone());
    let mut stream = context.get_stream(name).await.expect("stream");
    stream.info().await.expect("info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_is_remembered_for_the_horizon_then_forgotten_and_the_ledger_keeps_no_record() {
    let world = World::start_with(|mut c| {
        c.idempotency_horizon_ms = 3_000;
        c.duplicate_window_ms = 1_000;
        c
    })
    .await;
    let records = world.log.records().expect("a records stream").stream_name().to_owned();
    assert_eq!(records, "HALOBUZZ_COMMANDS");
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    world.fund(viewer, 100).await;
    let stream_id = world.start_stream(host).await;
    let key = ctx(viewer, "gift-1");

    // Given a gift, when it is repeated inside the horizon, then the first
    // answer comes back and nothing is appended.
    let first = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("sent");
    let ledger_last = world.last_position().await;
    assert_eq!(first.position, ledger_last, "the answer's position is the gift's, in the ledger");
    tokio::time::sleep(Duration::from_millis(1_200)).await; // past the duplicate window
    let again = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("answer");
    assert!(again.repeated);
    assert_eq!((again.position, &again.events), (first.position, &first.events));
    assert_eq!(world.last_position().await, ledger_last, "nothing appended to the ledger");

    // The ledger's stream holds the gift and no record of it; the records
    // stream holds it (and the funding's).
    let mut ledger = Vec::new();
    let mut stored = world.log.read_stream(1);
    while let Some(message) = futures_util::StreamExt::next(&mut stored).await {
        ledger.push(Envelope::verify(&message.expect("reads").payload).expect("verifies"));
    }
    let recorded_in_ledger: Vec<&str> = ledger
        .iter()
        .filter_map(|e| match &e.event {
            Event::CommandRecorded(r) => Some(r.command_id.as_str()),
            _ => None,
        })
        .collect();
    assert!(!recorded_in_ledger.contains(&"gift-1"), "{recorded_in_ledger:?}");
    assert_eq!(held(&world, &records).await, 2, "the funding's record and the gift's");

    // After the horizon the records are gone: the server holds nothing for
    // them, and the id is forgotten (a repeat is a new gift).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while held(&world, &records).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the records did not expire");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let later = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("sent anew");
    assert!(!later.repeated, "past the horizon the key is forgotten");
    assert!(later.position > first.position);
    let all = world.read_all().await;
    assert_eq!(balance(&balances(&all), Account::Wallet(viewer)), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_recorded_in_the_ledger_before_the_records_stream_still_answers_its_repeat() {
    let world = World::start_with(|mut c| {
        c.duplicate_window_ms = 1_000;
        c
    })
    .await;
    let (viewer, host) = (Uuid::now_v7(), Uuid::now_v7());
    world.fund(viewer, 100).await;
    let stream_id = world.start_stream(host).await;
    let key = ctx(viewer, "old-gift");

    // Given a log written before decision 0017: a gift and, after it, its
    // record on `hb.command.<id>` in the ledger's stream.
    let gift = crate::handler::orphan_gift(&world, viewer, stream_id, "old-gift", 30).await;
    let record = Event::CommandRecorded(CommandRecorded {
        scope: key.scope.clone(),
        command_id: key.command_id.clone(),
        fingerprint: key.fingerprint.clone(),
        event_count: 1,
        event_positions: vec![gift],
    });
    assert_eq!(key.actor.kind, ActorKind::User);
    let meta = meta_of(&key);
    let (_, bytes) = Envelope::seal_encoded(&meta, None, record, 1, GENESIS_HASH);
    let legacy = subject("command", &command_record_id(&key.scope, &key.command_id));
    world
        .log
        .append(AppendRequest {
            subject: legacy,
            payload: bytes::Bytes::from(bytes),
            msg_id: None,
            expected_last_subject_seq: 0,
        })
        .await
        .expect("the old record");
    let before = world.last_position().await;
    tokio::time::sleep(Duration::from_millis(1_200)).await; // past the duplicate window

    // When the command is repeated (deciding again would succeed: 70 coins
    // left), then the old record answers it and nothing is appended.
    let again = world.commands.send_gift(&key, viewer, stream_id, "rose".into(), 1, 30).await.expect("answer");
    assert!(again.repeated);
    assert_eq!(again.position, gift);
    assert_eq!(again.events.len(), 1);
    assert_eq!(world.last_position().await, before);
    let records = world.log.records().expect("a records stream").stream_name().to_owned();
    assert_eq!(held(&world, &records).await, 1, "only the funding's record is in the records stream");
    assert_eq!(balance(&balances(&world.read_all().await), Account::Wallet(viewer)), 70);
}
