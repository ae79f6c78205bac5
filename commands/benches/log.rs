//! Raw throughput of the JetStream event log on this machine, against a real
//! nats-server started by the test harness, with `sync_interval: always` and
//! with the server's default interval; then on a 3-node cluster with the
//! stream at 3 replicas (`always`, as the cluster harness runs), where a
//! read goes to the leader when it must (see the adapter's `consistent.rs`):
//! the cost of replicas on the same machine, in the same run.
//!
//! Run: `cargo bench -p commands --bench log` (prints a Markdown table;
//! `BENCH_CLUSTER=0` leaves the cluster out).
//! Sizes: `BENCH_MESSAGES` (default 100,000, for windowed appends and
//! reads), `BENCH_SEQUENTIAL` (default 10,000), `BENCH_WINDOW` (appends in
//! flight, default 256), `BENCH_PAYLOAD_BYTES` (default 300),
//! `BENCH_BATCH` (messages per atomic batch, default 100).

use std::time::{Duration, Instant};

use bytes::Bytes;
use commands::log::{AppendRequest, EventLog, JetStreamLog};
use commands::testing::{NatsCluster, NatsServer, SyncMode, nats_server_version};
use futures_util::{StreamExt, TryStreamExt};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

struct Sizes {
    messages: u64,
    sequential: u64,
    window: usize,
    payload_bytes: usize,
    batch: u64,
}

fn report(setup: &str, operation: &str, messages: u64, payload_bytes: usize, elapsed: Duration) {
    // Integer arithmetic (the workspace lints float arithmetic).
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    let rate = messages.saturating_mul(1_000_000) / micros;
    let bytes_per_second = rate.saturating_mul(payload_bytes as u64);
    let sync = setup;
    println!(
        "| {sync} | {operation} | {messages} | {} | {rate} | {}.{} |",
        elapsed.as_millis(),
        bytes_per_second / 1_000_000,
        bytes_per_second / 100_000 % 10
    );
}

fn request(subject: String, payload: &Bytes, msg_id: String, expected: u64) -> AppendRequest {
    AppendRequest { subject, payload: payload.clone(), msg_id: Some(msg_id), expected_last_subject_seq: expected }
}

/// The 50th and 99th percentiles of `latencies` (sorted here), in µs.
fn percentiles_us(latencies: &mut [Duration]) -> (u128, u128) {
    latencies.sort_unstable();
    let at = |per_mille: usize| {
        let index = (latencies.len().saturating_sub(1) * per_mille) / 1_000;
        latencies.get(index).map_or(0, Duration::as_micros)
    };
    (at(500), at(990))
}

async fn bench(sync: &str, log: &JetStreamLog, sizes: &Sizes) {
    let payload = Bytes::from((0..sizes.payload_bytes).map(|index| b'a' + (index % 26) as u8).collect::<Vec<u8>>());

    // Sequential: one append at a time, on 1,000 subjects with real
    // expectations (what one command handler does).
    const SEQUENTIAL_SUBJECTS: u64 = 1_000;
    let mut last = vec![0_u64; SEQUENTIAL_SUBJECTS as usize];
    let mut latencies = Vec::with_capacity(sizes.sequential as usize);
    let started = Instant::now();
    for index in 0..sizes.sequential {
        let slot = (index % SEQUENTIAL_SUBJECTS) as usize;
        let one = Instant::now();
        let appended = log
            .append(request(format!("hb.seq.{slot}"), &payload, format!("seq-{index}"), last[slot]))
            .await
            .expect("sequential append");
        latencies.push(one.elapsed());
        last[slot] = appended.position;
    }
    let elapsed = started.elapsed();
    let (p50, p99) = percentiles_us(&mut latencies);
    report(
        sync,
        &format!("append, sequential (p50 {p50} µs, p99 {p99} µs)"),
        sizes.sequential,
        sizes.payload_bytes,
        elapsed,
    );

    // Windowed: up to `window` appends in flight, one subject each.
    let started = Instant::now();
    let appended = futures_util::stream::iter(0..sizes.messages)
        .map(|index| log.append(request(format!("hb.win.{index}"), &payload, format!("win-{index}"), 0)))
        .buffer_unordered(sizes.window)
        .try_fold(0_u64, |count, _| async move { Ok(count + 1) })
        .await
        .expect("windowed appends");
    report(sync, &format!("append, {} in flight", sizes.window), appended, sizes.payload_bytes, started.elapsed());

    // Atomic batches, sequentially.
    let batches = (sizes.messages / 10 / sizes.batch).max(1);
    let started = Instant::now();
    for batch in 0..batches {
        let requests = (0..sizes.batch)
            .map(|index| request(format!("hb.batch.{batch}.{index}"), &payload, format!("batch-{batch}-{index}"), 0))
            .collect();
        log.append_atomic(requests).await.expect("atomic batch");
    }
    report(
        sync,
        &format!("append_atomic, batches of {}", sizes.batch),
        batches * sizes.batch,
        sizes.payload_bytes,
        started.elapsed(),
    );

    let total = log.last_position().await.expect("last position");

    // read_from, in pages of 8,192 (the size one direct get returns).
    const PAGE: u32 = 8_192;
    let started = Instant::now();
    let mut next = 1;
    let mut read = 0_u64;
    while next <= total {
        let page = log.read_from(next, PAGE).await.expect("read_from");
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        read += page.len() as u64;
    }
    assert_eq!(read, total);
    report(sync, "read_from, pages of 8192", read, sizes.payload_bytes, started.elapsed());

    let started = Instant::now();
    let read = log.read_stream(1).try_fold(0_u64, |count, _| async move { Ok(count + 1) }).await.expect("read_stream");
    assert_eq!(read, total);
    report(sync, "read_stream (ordered pull consumer)", read, sizes.payload_bytes, started.elapsed());

    let started = Instant::now();
    let read = log
        .read_stream_direct_get(1)
        .try_fold(0_u64, |count, _| async move { Ok(count + 1) })
        .await
        .expect("read_stream_direct_get");
    assert_eq!(read, total);
    report(
        sync,
        "read_stream_direct_get (batched direct get, comparison)",
        read,
        sizes.payload_bytes,
        started.elapsed(),
    );

    // Aggregate loads: last message of a subject, one at a time.
    let loads = sizes.sequential.min(SEQUENTIAL_SUBJECTS * 5);
    let started = Instant::now();
    for index in 0..loads {
        log.last_on_subject(&format!("hb.seq.{}", index % SEQUENTIAL_SUBJECTS))
            .await
            .expect("last_on_subject")
            .expect("present");
    }
    report(sync, "last_on_subject, sequential", loads, sizes.payload_bytes, started.elapsed());

    // A command's load: its aggregate and its (new, empty) record, one
    // coalesced read each, sequentially.
    let started = Instant::now();
    for index in 0..loads {
        let subjects = [format!("hb.seq.{}", index % SEQUENTIAL_SUBJECTS), format!("hb.none.{index}")];
        let found = log.last_on_subjects(&subjects).await.expect("last_on_subjects");
        assert!(found[0].is_some() && found[1].is_none());
    }
    report(sync, "last_on_subjects (one found, one empty), sequential", loads, sizes.payload_bytes, started.elapsed());

    // The same, the empty one being a command's record (appended only
    // expecting it empty), as the command handler reads it.
    let started = Instant::now();
    for index in 0..loads {
        let subjects = [format!("hb.seq.{}", index % SEQUENTIAL_SUBJECTS), format!("hb.none.r{index}")];
        let found = log.last_on_subjects_appended_expecting_empty(&subjects, 1).await.expect("last_on_subjects");
        assert!(found[0].is_some() && found[1].is_none());
    }
    report(sync, "the same, the empty one a command record", loads, sizes.payload_bytes, started.elapsed());
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let sizes = Sizes {
        messages: env_number("BENCH_MESSAGES", 100_000),
        sequential: env_number("BENCH_SEQUENTIAL", 10_000),
        window: env_number("BENCH_WINDOW", 256) as usize,
        payload_bytes: env_number("BENCH_PAYLOAD_BYTES", 300) as usize,
        batch: env_number("BENCH_BATCH", 100).clamp(1, 1_000),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    println!(
        "nats-server {}, {} cores, payload {} bytes\n",
        nats_server_version(),
        std::thread::available_parallelism().map_or(0, usize::from),
        sizes.payload_bytes
    );
    println!("| setup | operation | messages | ms | msgs/s | MB/s (payload) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (sync, label) in [(SyncMode::Always, "1 server, always"), (SyncMode::Interval, "1 server, interval (default)")]
    {
        runtime.block_on(async {
            let server = NatsServer::start_with(sync).await;
            bench(label, &server.event_log().await, &sizes).await;
        });
    }
    if env_number("BENCH_CLUSTER", 1) != 0 {
        runtime.block_on(async {
            let cluster = NatsCluster::start(3).await;
            let log = JetStreamLog::connect(cluster.log_config(3)).await.expect("connect to the cluster");
            bench("3 nodes, replicas 3, always", &log, &sizes).await;
        });
    }
}
