//! A 3-node cluster with an R3 stream: kill -9 the stream leader while
//! appending; every acknowledged append is present exactly once afterwards.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commands::log::{EventLog, JetStreamLog, LogError};
use commands::testing::NatsCluster;
use futures_util::TryStreamExt;

use crate::support::{init_tracing, request};

const WRITERS: usize = 4;
const SUBJECTS_PER_WRITER: usize = 4;
/// Acknowledged appends before the kill, and after it.
const ACKS_BEFORE_KILL: u64 = 300;
const ACKS_AFTER_KILL: u64 = 300;
/// The whole test stays well under a minute.
const TEST_BUDGET: Duration = Duration::from_secs(50);
const WRITE_BUDGET: Duration = Duration::from_secs(35);

/// What one writer saw.
#[derive(Default)]
struct WriterReport {
    /// msg id -> acknowledged position.
    acked: HashMap<String, u64>,
    /// Appends that failed as Unavailable after every retry: outcome unknown.
    unknown: Vec<String>,
    conflicts: u64,
}

async fn writer(log: JetStreamLog, writer_index: usize, stop: Arc<AtomicBool>, acks: Arc<AtomicU64>) -> WriterReport {
    let mut report = WriterReport::default();
    let subjects: Vec<String> =
        (0..SUBJECTS_PER_WRITER).map(|index| format!("hb.cluster.w{writer_index}.s{index}")).collect();
    // Last position known per subject; `None` = unknown (reload first).
    let mut last: Vec<Option<u64>> = vec![Some(0); SUBJECTS_PER_WRITER];
    let started = Instant::now();
    let mut sequence: u64 = 0;
    // Bounded by the stop flag and the write budget.
    while !stop.load(Ordering::SeqCst) && started.elapsed() < WRITE_BUDGET {
        sequence += 1;
        let slot = (sequence as usize) % SUBJECTS_PER_WRITER;
        let expected = match last[slot] {
            Some(position) => position,
            None => match log.last_on_subject(&subjects[slot]).await {
                Ok(message) => message.map_or(0, |message| message.position),
                Err(_) => continue,
            },
        };
        let msg_id = format!("w{writer_index}-{sequence}");
        match log.append(request(&subjects[slot], &format!("payload {msg_id}"), &msg_id, expected)).await {
            Ok(appended) => {
                report.acked.insert(msg_id, appended.position);
                last[slot] = Some(appended.position);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(LogError::Conflict { .. }) => {
                // Only after an unknown outcome on this subject (or a stale
                // follower read): reload and go on.
                report.conflicts += 1;
                last[slot] = None;
            }
            Err(LogError::Unavailable(_)) => {
                report.unknown.push(msg_id);
                last[slot] = None;
            }
            Err(other) => panic!("writer {writer_index}: unexpected error {other:?}"),
        }
    }
    report
}

async fn wait_for_acks(acks: &AtomicU64, target: u64, deadline: Instant) {
    // Bounded by the deadline.
    while acks.load(Ordering::SeqCst) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_the_death_of_the_stream_leader() {
    init_tracing();
    let test_started = Instant::now();
    let mut cluster = NatsCluster::start(3).await;
    let mut config = cluster.log_config(3);
    // Short request timeouts so a dead connection is noticed fast; the
    // retries (with the same message id) cover the failover.
    config.request_timeout_ms = 2_000;
    config.append_retry_max = 8;
    let log = JetStreamLog::connect(config).await.expect("connect to the cluster");
    let stream = log.stream_name().to_owned();
    let leader = cluster.wait_for_stream_leader(&stream, Duration::from_secs(15)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| tokio::spawn(writer(log.clone(), index, Arc::clone(&stop), Arc::clone(&acks))))
        .collect();

    let write_deadline = Instant::now() + WRITE_BUDGET;
    wait_for_acks(&acks, ACKS_BEFORE_KILL, write_deadline).await;
    let acks_at_kill = acks.load(Ordering::SeqCst);
    assert!(acks_at_kill >= ACKS_BEFORE_KILL, "only {acks_at_kill} appends before the kill");
    let killed_at = Instant::now();
    cluster.kill9(leader);
    wait_for_acks(&acks, acks_at_kill + ACKS_AFTER_KILL, write_deadline).await;
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    for handle in writers {
        reports.push(handle.await.expect("writer task"));
    }
    let acks_total = acks.load(Ordering::SeqCst);
    assert!(
        acks_total >= acks_at_kill + ACKS_AFTER_KILL,
        "writes did not resume after the leader died: {acks_at_kill} before, {acks_total} in all"
    );
    let new_leader = cluster.wait_for_stream_leader(&stream, Duration::from_secs(15)).await;
    assert_ne!(new_leader, leader);

    // Read everything back through the survivors.
    let stored: Vec<_> = log.read_stream(1).try_collect().await.expect("read back");
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (offset, message) in stored.iter().enumerate() {
        assert_eq!(message.position, offset as u64 + 1, "positions are dense");
        let msg_id = message.msg_id.clone().expect("every message has an id");
        assert_eq!(message.payload, format!("payload {msg_id}").into_bytes());
        seen.entry(msg_id).or_default().push(message.position);
    }
    for (msg_id, positions) in &seen {
        assert_eq!(positions.len(), 1, "{msg_id} stored {} times", positions.len());
    }
    let mut acked_total = 0;
    let mut unknown_total = 0;
    let mut unknown_stored = 0;
    let mut conflicts = 0;
    for report in &reports {
        for (msg_id, position) in &report.acked {
            assert_eq!(
                seen.get(msg_id).map(Vec::as_slice),
                Some([*position].as_slice()),
                "acknowledged {msg_id} at {position} is missing or moved"
            );
        }
        acked_total += report.acked.len();
        unknown_total += report.unknown.len();
        unknown_stored += report.unknown.iter().filter(|id| seen.contains_key(*id)).count();
        conflicts += report.conflicts;
    }
    // Nothing is stored that was neither acknowledged nor of unknown outcome.
    assert_eq!(stored.len(), acked_total + unknown_stored);
    eprintln!(
        "cluster failover: {acked_total} acknowledged ({acks_at_kill} before the kill), \
         {unknown_total} unknown outcomes ({unknown_stored} of them stored), {conflicts} conflicts; \
         leader {leader} -> {new_leader}; {} ms of writes after the kill; test took {} ms",
        killed_at.elapsed().as_millis(),
        test_started.elapsed().as_millis()
    );
    assert!(test_started.elapsed() < TEST_BUDGET + Duration::from_secs(10));
}

/// Appends then reads on a replicated stream, as a command and the next
/// one do: every read sees every append acknowledged to this process
/// before it, whichever replica answers (a follower may lag the leader),
/// for a subject it has never seen (a registration, then an adjustment of
/// that user) and for one it has (a role granted, then checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_on_a_replicated_stream_sees_every_append_acknowledged_before_it() {
    const ROUNDS: u64 = 400;
    init_tracing();
    let cluster = NatsCluster::start(3).await;
    let log = JetStreamLog::connect(cluster.log_config(3)).await.expect("connect to the cluster");
    let _ = cluster.wait_for_stream_leader(log.stream_name(), Duration::from_secs(15)).await;
    let known = "hb.test.known".to_string();
    let mut known_last = 0;
    let mut stale = Vec::new();
    for round in 0..ROUNDS {
        let fresh = format!("hb.test.fresh-{round}");
        let appended = log
            .append_atomic(vec![
                request(&fresh, &format!("fresh {round}"), &format!("fresh-{round}"), 0),
                request(&known, &format!("known {round}"), &format!("known-{round}"), known_last),
            ])
            .await
            .expect("an append");
        known_last = appended[1];
        let read = log.last_on_subjects(&[fresh.clone(), known.clone()]).await.expect("a read");
        let positions: Vec<Option<u64>> = read.iter().map(|m| m.as_ref().map(|m| m.position)).collect();
        if positions != vec![Some(appended[0]), Some(appended[1])] {
            stale.push((round, appended.clone(), positions));
        }
        // As the handler reads: the aggregates checked, its own record not.
        let spared = log
            .last_on_subjects_appended_expecting_empty(&[fresh.clone(), format!("hb.test.record-{round}")], 1)
            .await
            .expect("a read");
        if spared[0].as_ref().map(|m| m.position) != Some(appended[0]) || spared[1].is_some() {
            stale.push((round, appended.clone(), spared.iter().map(|m| m.as_ref().map(|m| m.position)).collect()));
        }
        let single = log.last_on_subject(&fresh).await.expect("a read").map(|m| m.position);
        if single != Some(appended[0]) {
            stale.push((round, appended, vec![single]));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {ROUNDS} rounds read stale state: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}
