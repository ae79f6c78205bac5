//! Projection throughput into the embedded store, against the raw read of
//! the same events, and peak memory, at 100,000 and 1,000,000 generated
//! events.
//!
//! A MongoDB row follows: the same generated events projected into the
//! MongoDB adapter on the SecantusDB surrogate (a Python server), as a
//! replica set (transactions) and standalone, at `BENCH_MONGO_EVENTS`
//! (default 20,000): events/s is the surrogate's figure, not MongoDB's;
//! the commands sent per 1,000 events is the figure that carries over to a
//! real server.
//!
//! `cargo bench -p projections --bench project` (sizes: `BENCH_EVENTS=100000,1000000`;
//! `BENCH_BATCH` overrides the runner's batch size; `BENCH_KEEP_DIR=dir` keeps
//! the generated logs there, to profile one child:
//! `project-… --child project-sqlite dir/log-100000.bin dir`).
//!
//! Each measurement runs in a child process of its own, so that its peak
//! resident memory (`VmHWM` in `/proc/self/status`) is its own. The log is
//! generated once per size into a file of length-prefixed records and read
//! back through `FileLog` (constant memory); "memory read" loads it into a
//! `MemoryLog` first, so its peak grows with the log by design.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use events_schema::Envelope;
use projections::mongo_server::{MongoSurrogate, Topology};
use projections::testing::{FileLog, Generator, GeneratorConfig, MemoryLog, checksum};
use projections::{LogSource, MongoStore, ProjectionVersion, ReadStore, Runner, RunnerConfig, SqliteStore};

const READ_BATCH: u32 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_EVENTS")
        .unwrap_or_else(|_| "100000,1000000".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // BENCH_KEEP_DIR keeps the generated logs there (to profile a child).
    let keep = std::env::var("BENCH_KEEP_DIR").ok().map(PathBuf::from);
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("halobuzz-projections-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir).expect("bench directory");
    println!("projections benchmark: {} cores; every figure is one run in a child process", cores());
    println!("{:>10} {:<28} {:>14} {:>12} {:>12}", "events", "what", "events/s", "seconds", "VmHWM MiB");
    for events in sizes {
        let file = dir.join(format!("log-{events}.bin"));
        let started = Instant::now();
        let written = FileLog::write(&file, Generator::log(GeneratorConfig::default(), events)).expect("write log");
        report(events, "generate + seal (file)", written, started.elapsed(), None);
        run_children(&["read-file", "read-decode", "read-memory", "project-sqlite"], &file, &dir);
        if keep.is_none() {
            let _ = std::fs::remove_file(&file);
        }
    }
    let mongo_events: u64 =
        std::env::var("BENCH_MONGO_EVENTS").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(20_000);
    if mongo_events > 0 {
        let file = dir.join(format!("log-mongo-{mongo_events}.bin"));
        FileLog::write(&file, Generator::log(GeneratorConfig::default(), mongo_events)).expect("write log");
        run_children(&["project-mongodb-replica-set", "project-mongodb-standalone"], &file, &dir);
        let _ = std::fs::remove_file(&file);
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs each mode in a child process of this bench over the log `file`,
/// printing its report (or, when it fails, its output on stderr).
fn run_children(modes: &[&str], file: &Path, dir: &Path) {
    for mode in modes {
        let out = Command::new(std::env::current_exe().expect("current exe"))
            .args(["--child", mode, file.to_str().unwrap_or_default(), &dir.to_string_lossy()])
            .output()
            .expect("child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!("{mode} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        print!("{stdout}");
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Rates are the only floats here: events per second of a run, never money.
#[allow(clippy::float_arithmetic)]
fn report(events: u64, what: &str, count: u64, elapsed: Duration, vmhwm_kib: Option<u64>) {
    let rate = count as f64 / elapsed.as_secs_f64();
    let memory = vmhwm_kib.map_or_else(|| "-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    println!("{events:>10} {what:<28} {rate:>14.0} {:>12.2} {memory:>12}", elapsed.as_secs_f64());
}

fn vmhwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn child(args: &[String]) {
    let (Some(mode), Some(file), Some(dir)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: --child MODE FILE DIR");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let file = PathBuf::from(file);
        let log = FileLog::open(&file).expect("open log");
        let events = log.len();
        match mode.as_str() {
            "read-file" => {
                let started = Instant::now();
                let count = read_all(&log, false).await;
                report(events, "raw read (file source)", count, started.elapsed(), vmhwm_kib());
            }
            "read-decode" => {
                let started = Instant::now();
                let count = read_all(&log, true).await;
                report(events, "read + Envelope::decode", count, started.elapsed(), vmhwm_kib());
            }
            "read-memory" => {
                let memory = MemoryLog::from_events(FileRecords::new(&log));
                let started = Instant::now();
                let count = read_all(&memory, false).await;
                report(events, "raw read (in-memory source)", count, started.elapsed(), vmhwm_kib());
            }
            "project-sqlite" => project(log, Path::new(dir)).await,
            "project-mongodb-replica-set" => project_mongodb(log, Topology::ReplicaSet).await,
            "project-mongodb-standalone" => project_mongodb(log, Topology::Standalone).await,
            other => {
                eprintln!("unknown mode {other}");
                std::process::exit(2);
            }
        }
    });
}

async fn read_all(source: &dyn LogSource, decode: bool) -> u64 {
    let mut position = 1;
    let mut count = 0u64;
    loop {
        let batch = source.read_from(position, READ_BATCH).await.expect("read");
        let Some(last) = batch.last() else { break };
        position = last.position + 1;
        for m in &batch {
            if decode {
                std::hint::black_box(Envelope::decode(&m.payload).expect("decode"));
            }
            count += 1;
        }
    }
    count
}

async fn project(log: FileLog, dir: &Path) {
    let events = log.len();
    let store_dir = dir.join(format!("sqlite-{events}"));
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = Arc::new(SqliteStore::open(&store_dir).await.expect("open store"));
    let mut config = RunnerConfig::new("bench");
    if let Some(batch) = std::env::var("BENCH_BATCH").ok().and_then(|b| b.parse().ok()) {
        config.batch_size_max = batch;
    }
    let runner = Runner::new(store.clone(), Arc::new(log), config).expect("runner");
    let started = Instant::now();
    let reached = runner.catch_up().await.expect("catch up");
    let elapsed = started.elapsed();
    assert_eq!(reached, events);
    report(events, "project into SQLite", events, elapsed, vmhwm_kib());
    let trial = store.trial_balance(&projections::PageRequest::first(1)).await.expect("trial balance");
    assert_eq!(trial.total_coins, 0, "the ledger balances");
    let sums = checksum(&*store, &ProjectionVersion::all_current()).await.expect("checksum");
    let documents: u64 = sums.collections.values().map(|c| c.documents).sum();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) / (1024 * 1024);
    let wal = PathBuf::from(format!("{}-wal", store.path().display()));
    println!(
        "{events:>10} {:<28} {documents} documents, database {} MiB + WAL {} MiB",
        "  (store)",
        size(store.path()),
        size(&wal)
    );
    drop(store);
    if std::env::var_os("BENCH_KEEP_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&store_dir);
    }
}

/// The MongoDB row: a surrogate of its own, the runner's default batches.
async fn project_mongodb(log: FileLog, topology: Topology) {
    let events = log.len();
    let server = MongoSurrogate::start(topology).await;
    let store = Arc::new(MongoStore::connect(&server.uri(), Some("halobuzz_bench")).await.expect("connect"));
    let runner = Runner::new(store.clone(), Arc::new(log), RunnerConfig::new("bench")).expect("runner");
    let before = store.commands_started();
    let started = Instant::now();
    let reached = runner.catch_up().await.expect("catch up");
    let elapsed = started.elapsed();
    assert_eq!(reached, events);
    let commands = store.commands_started() - before;
    let what = format!("MongoDB (surrogate, {})", topology.name());
    report(events, &what, events, elapsed, vmhwm_kib());
    let trial = store.trial_balance(&projections::PageRequest::first(1)).await.expect("trial balance");
    assert_eq!(trial.total_coins, 0, "the ledger balances");
    println!(
        "{events:>10} {:<28} {commands} commands, {} per 1,000 events (the figure that carries over)",
        "  (commands)",
        commands.saturating_mul(1_000) / events.max(1)
    );
}

/// The records of a `FileLog`, in order, as an iterator (to fill a
/// `MemoryLog`).
struct FileRecords<'a> {
    log: &'a FileLog,
    position: u64,
    buffer: std::vec::IntoIter<projections::LogMessage>,
}

impl<'a> FileRecords<'a> {
    fn new(log: &'a FileLog) -> FileRecords<'a> {
        FileRecords { log, position: 1, buffer: Vec::new().into_iter() }
    }
}

impl Iterator for FileRecords<'_> {
    type Item = bytes::Bytes;

    fn next(&mut self) -> Option<bytes::Bytes> {
        if let Some(m) = self.buffer.next() {
            return Some(m.payload);
        }
        let batch = futures_util::FutureExt::now_or_never(self.log.read_from(self.position, READ_BATCH))?.ok()?;
        self.position = batch.last()?.position + 1;
        self.buffer = batch.into_iter();
        self.buffer.next().map(|m| m.payload)
    }
}
