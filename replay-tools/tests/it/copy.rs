//! Export and import between two real nats-servers; resume; tampering.

use std::path::Path;
use std::time::Duration;

use commands::log::{EventLog, JetStreamLog};
use commands::testing::{NatsServer, SyncMode};
use futures_util::StreamExt;
use replay_tools::archive::{ArchiveReader, ArchiveWriter, ArchivedMessage, Item};
use replay_tools::{ImportError, ImportOptions, Progress};

use crate::support::server_with_log;

/// Every message of `path`, in order.
pub fn read_all(path: &Path) -> Vec<ArchivedMessage> {
    let mut reader = ArchiveReader::open(path).expect("open export");
    let mut out = Vec::new();
    // Bounded by the file.
    loop {
        match reader.next_item().expect("read export") {
            Item::Message(m) => out.push(m),
            Item::End(_) => return out,
        }
    }
}

/// Rewrites `from` to `to`, passing each message through `change`.
pub fn rewrite(from: &Path, to: &Path, change: impl Fn(&mut ArchivedMessage)) {
    let header = ArchiveReader::open(from).expect("open").header().clone();
    let mut writer = ArchiveWriter::create(to, &header).expect("create");
    for mut message in read_all(from) {
        change(&mut message);
        writer.write(&message).expect("write");
    }
    writer.finish().expect("finish");
}

/// Changes one digit of the event's `occurredAt` (the JSON stays valid,
/// its hash no longer matches).
pub fn alter_one_byte(message: &mut ArchivedMessage) {
    let mut bytes = message.payload.to_vec();
    let at = bytes.windows(4).position(|w| w == b"2026").expect("a year in the event");
    bytes[at + 3] = if bytes[at + 3] == b'7' { b'8' } else { b'7' };
    message.payload = bytes.into();
}

async fn assert_same_log(a: &JetStreamLog, b: &JetStreamLog) {
    let end = a.last_position().await.expect("last");
    assert_eq!(b.last_position().await.expect("last"), end);
    let mut left = a.read_stream(1);
    let mut right = b.read_stream(1);
    for position in 1..=end {
        let l = left.next().await.expect("a message").expect("read");
        let r = right.next().await.expect("a message").expect("read");
        assert_eq!(l.position, position);
        assert_eq!((r.position, &r.subject, &r.payload, &r.msg_id), (l.position, &l.subject, &l.payload, &l.msg_id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_copies_the_log_verbatim_and_it_audits_clean() {
    let events = 3_000;
    let (_a, log_a) = server_with_log(events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("log.hblog.gz");
    let exported = replay_tools::export(&log_a, &file, &Progress::hidden()).await.expect("export");
    assert_eq!((exported.events, exported.last_position), (events, events));
    assert!(!dir.path().join("log.hblog.gz.partial").exists());

    let b = NatsServer::start_with(SyncMode::Interval).await;
    let log_b = b.event_log().await;
    let imported =
        replay_tools::import(&log_b, &file, ImportOptions::default(), &Progress::hidden()).await.expect("import");
    assert_eq!((imported.events, imported.written, imported.last_position), (events, events, events));
    assert_same_log(&log_a, &log_b).await;

    // Headers too: an export of the copy holds the same records but for
    // the server timestamps.
    let again = dir.path().join("again.hblog.gz");
    replay_tools::export(&log_b, &again, &Progress::hidden()).await.expect("export the copy");
    let (first, second) = (read_all(&file), read_all(&again));
    assert_eq!(first.len(), second.len());
    for (x, y) in first.iter().zip(&second) {
        assert_eq!((x.position, &x.subject, &x.headers, &x.payload), (y.position, &y.subject, &y.headers, &y.payload));
    }
    // Every message keeps its Nats-Msg-Id, and command records, appended
    // without one, are copied without one.
    let is_record = |m: &replay_tools::archive::ArchivedMessage| m.subject.starts_with("hb.command.");
    assert!(first.iter().any(is_record), "the log holds command records");
    assert!(first.iter().all(|m| m.msg_id().is_some() != is_record(m)), "ids kept, none added");
    // The generated log holds atomic batches (registrations, streams with
    // their channels), and the copy stored them with the same batch
    // headers (compared above): import sent them again as batches.
    let batch_header = |m: &ArchivedMessage, name: &str| m.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let commits = first.iter().filter(|m| batch_header(m, "Nats-Batch-Commit")).count();
    let in_batches = first.iter().filter(|m| batch_header(m, "Nats-Batch-Id")).count();
    assert!(commits > 10 && in_batches > 2 * commits, "{commits} batches, {in_batches} messages in them");

    let report = replay_tools::audit_log(&log_b, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(report.passed, "{:#?}", report.findings);
    assert_eq!(report.events, events);
    assert_eq!(report.total_coins_at_end, 0);
    assert!(report.ledger_commits > 100);
    let from_file = replay_tools::audit_file(&file, &Progress::hidden()).await.expect("audit the file");
    assert!(from_file.passed);
    assert_eq!(from_file.reconciliation.coins_purchased, report.reconciliation.coins_purchased);

    // A second import into the now full stream is refused.
    match replay_tools::import(&log_b, &file, ImportOptions::default(), &Progress::hidden()).await {
        Err(ImportError::NotEmpty { messages, .. }) => assert_eq!(messages, events),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_where_it_stopped() {
    let events = 6_000;
    let (_a, log_a) = server_with_log(events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("log.hblog.gz");
    replay_tools::export(&log_a, &file, &Progress::hidden()).await.expect("export");

    let b = NatsServer::start_with(SyncMode::Interval).await;
    let log_b = b.event_log().await;
    // Well before the end: thousands of events still to go when it stops.
    let stop_at = 300 + rand::random_range(0..1_500u64);
    let task = {
        let (log_b, file) = (log_b.clone(), file.clone());
        tokio::spawn(
            async move { replay_tools::import(&log_b, &file, ImportOptions::default(), &Progress::hidden()).await },
        )
    };
    // Bounded: 30 s.
    for _ in 0..15_000 {
        if log_b.last_position().await.expect("last") >= stop_at || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    let _ = task.await;
    // The aborted import's publishes still land: a flush returns once the
    // server has read every message sent on the connection before it, and
    // the stream then stores them from its own queue, which nothing can be
    // waited on. So the condition is a count that no longer moves: the
    // same in 5 reads 20 ms apart (bounded: 10 s).
    log_b.client().flush().await.expect("flush");
    let mut partial = log_b.last_position().await.expect("last");
    let mut unchanged = 0;
    for _ in 0..500 {
        if unchanged == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = log_b.last_position().await.expect("last");
        unchanged = if now == partial { unchanged + 1 } else { 0 };
        partial = now;
    }
    assert_eq!(unchanged, 5, "the stream kept growing after the import was aborted");
    assert!(partial > 0 && partial < events, "interrupted at {partial}");

    match replay_tools::import(&log_b, &file, ImportOptions::default(), &Progress::hidden()).await {
        Err(ImportError::NotEmpty { messages, .. }) => assert_eq!(messages, partial),
        other => panic!("expected a refusal without --resume, got {other:?}"),
    }
    let resumed =
        replay_tools::import(&log_b, &file, ImportOptions { resume: true, dry_run: false }, &Progress::hidden())
            .await
            .expect("resume");
    assert_eq!(resumed.already_present, partial);
    assert_eq!(resumed.written, events - partial);
    assert_same_log(&log_a, &log_b).await;

    // Resuming a finished import checks and writes nothing.
    let again =
        replay_tools::import(&log_b, &file, ImportOptions { resume: true, dry_run: false }, &Progress::hidden())
            .await
            .expect("resume a finished import");
    assert_eq!((again.already_present, again.written), (events, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_byte_is_named_by_import_and_audit() {
    let events = 2_000;
    let target = 1_234;
    let (_a, log_a) = server_with_log(events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("log.hblog.gz");
    replay_tools::export(&log_a, &file, &Progress::hidden()).await.expect("export");
    let tampered = dir.path().join("tampered.hblog.gz");
    rewrite(&file, &tampered, |m| {
        if m.position == target {
            alter_one_byte(m);
        }
    });
    let subject = read_all(&file).into_iter().find(|m| m.position == target).map(|m| m.subject).expect("subject");

    // import refuses at the altered event, naming it; nothing after it is written.
    let b = NatsServer::start_with(SyncMode::Interval).await;
    let log_b = b.event_log().await;
    let error = replay_tools::import(&log_b, &tampered, ImportOptions::default(), &Progress::hidden())
        .await
        .expect_err("a tampered file is refused")
        .to_string();
    assert!(error.contains(&format!("position {target}")) && error.contains(&subject), "{error}");
    assert!(log_b.last_position().await.expect("last") < target);
    let dry = replay_tools::verify_file(&tampered, &Progress::hidden()).await.expect_err("dry run refuses too");
    assert!(dry.to_string().contains(&format!("position {target}")), "{dry}");

    // audit of the file names it.
    let report = replay_tools::audit_file(&tampered, &Progress::hidden()).await.expect("audit");
    assert!(!report.passed);
    let finding = &report.findings[0];
    assert_eq!(
        (finding.check, finding.position, finding.subject.as_deref()),
        ("hash_chain", Some(target), Some(subject.as_str()))
    );
    assert_eq!(report.failures, 1, "one altered event is one finding: {:#?}", report.findings);

    // audit of a live log holding the altered event names it too: the
    // tampered copy is written the way a disk edit would leave it.
    let c = NatsServer::start_with(SyncMode::Interval).await;
    let log_c = c.event_log().await;
    let messages = read_all(&tampered);
    replay_tools::testing::publish_raw(&log_c, messages.iter().map(|m| (m.subject.clone(), m.payload.clone())))
        .await
        .expect("publish");
    let live = replay_tools::audit_log(&log_c, Vec::new(), None, &Progress::hidden()).await.expect("audit");
    assert!(!live.passed);
    assert_eq!(live.findings[0].position, Some(target));
    assert_eq!(live.findings[0].subject.as_deref(), Some(subject.as_str()));
}
