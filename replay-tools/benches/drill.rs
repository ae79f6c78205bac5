//! The drill's figures on 1,000,000 events (`BENCH_EVENTS` to change):
//! a generated, consistent log (`projections::testing::Generator`)
//! published to a real nats-server (`NATS_SYNC`-like `BENCH_SYNC`:
//! `interval`, the default, or `always`), then, timed:
//!
//! 1. the raw in-order JetStream read of every message (the adapter's
//!    ordered consumer), the yardstick;
//! 2. export to a file (and, apart, reading and verifying it alone);
//! 3. import into a fresh nats-server;
//! 4. rebuild of every projection into a fresh SQLite store from the
//!    imported log, with the process's peak memory during the rebuild
//!    (VmHWM, reset before it through /proc/self/clear_refs).
//!
//! Run: `cargo bench -p replay-tools --bench drill`. Prints a table.

// Rates and ratios for the report only.
#![allow(clippy::float_arithmetic)]

use std::sync::Arc;
use std::time::Instant;

/// The allocator of `halobuzz-replay`, so that the steps run as in the tool.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use commands::log::EventLog;
use commands::testing::{NatsServer, SyncMode};
use futures_util::StreamExt;
use projections::testing::{Generator, GeneratorConfig};
use projections::{LogSource, ReadStore, SqliteStore};
use replay_tools::{ImportOptions, Progress, RebuildOptions};

fn rate(events: u64, seconds: f64) -> String {
    let per_second = if seconds > 0.0 { events as f64 / seconds } else { 0.0 };
    format!("{per_second:.0}")
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let events: u64 = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let sync = match std::env::var("BENCH_SYNC").as_deref() {
        Ok("always") => SyncMode::Always,
        _ => SyncMode::Interval,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let source_server = NatsServer::start_with(sync).await;
        let log = source_server.event_log().await;
        let started = Instant::now();
        let published = replay_tools::testing::publish_events(&log, Generator::log(GeneratorConfig::default(), events))
            .await
            .expect("publish");
        println!("setup: generated and published {published} events in {:.1} s ({sync:?})", started.elapsed().as_secs_f64());

        // 1. The raw in-order read.
        let started = Instant::now();
        let mut stream = log.read_stream(1);
        let mut read = 0u64;
        let mut bytes = 0u64;
        while let Some(message) = stream.next().await {
            let message = message.expect("read");
            read += 1;
            bytes += message.payload.len() as u64;
        }
        let raw_s = started.elapsed().as_secs_f64();
        assert_eq!(read, events);

        // 2. Export.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bench.hblog.gz");
        let exported = replay_tools::export(&log, &file, &Progress::hidden()).await.expect("export");
        drop(log);
        drop(source_server);

        // 2b. Import's reading half alone: gunzip and every hash chain.
        let verified = replay_tools::verify_file(&file, &Progress::hidden()).await.expect("verify the file");

        // 3. Import into a fresh server.
        let target_server = NatsServer::start_with(sync).await;
        let target = target_server.event_log().await;
        let imported =
            replay_tools::import(&target, &file, ImportOptions::default(), &Progress::hidden()).await.expect("import");

        // 4. Rebuild from the imported log into a fresh store.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let hwm_before = proc_status_kib("VmHWM:");
        let store_dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ReadStore> = Arc::new(SqliteStore::open(store_dir.path()).await.expect("store"));
        let events_log: Arc<dyn EventLog> = Arc::new(target.clone());
        let source: Arc<dyn LogSource> = Arc::new(api::source::EventLogSource::new(events_log));
        let rebuilt = replay_tools::rebuild(store, source, &RebuildOptions::all(), &Progress::hidden())
            .await
            .expect("rebuild");
        let hwm = proc_status_kib("VmHWM:");
        assert_eq!(rebuilt.position, events);

        let drill_s = exported.seconds + imported.seconds + rebuilt.seconds;
        println!();
        println!("| step ({events} events) | wall time | events/s |");
        println!("| --- | ---: | ---: |");
        println!("| raw in-order JetStream read (ordered consumer), {} MB of payloads | {raw_s:.1} s | {} |", bytes / 1_000_000, rate(events, raw_s));
        println!(
            "| export (file {} MB) | {:.1} s | {} |",
            exported.file_bytes / 1_000_000,
            exported.seconds,
            rate(events, exported.seconds)
        );
        println!(
            "| (read and verify the file only: import --dry-run) | {:.1} s | {} |",
            verified.seconds,
            rate(events, verified.seconds)
        );
        println!("| import (verifying every chain) | {:.1} s | {} |", imported.seconds, rate(events, imported.seconds));
        println!(
            "| rebuild, every projection into SQLite | {:.1} s | {} |",
            rebuilt.seconds,
            rate(rebuilt.events, rebuilt.seconds)
        );
        println!("| the drill: export + import + rebuild | {drill_s:.1} s | |");
        println!();
        println!(
            "rebuild / raw read: {:.2}; peak memory of the process during the rebuild (VmHWM): {} MiB (reset from {} MiB)",
            (rebuilt.events as f64 / rebuilt.seconds) / (events as f64 / raw_s),
            hwm / 1024,
            hwm_before / 1024
        );
    });
}
