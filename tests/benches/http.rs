//! Load generator and HTTP benchmark of the real `halobuzz-api` binary with
//! its embedded defaults (a managed nats-server, the SQLite read store, the
//! projector and the gift reactor in the process):
//!
//! - gifts per second through HTTP at saturation (closed loop, one viewer
//!   per connection so that no two requests race on one ledger);
//! - p50/p99 latency at half that rate (open loop: requests leave on a fixed
//!   schedule and latency counts from the scheduled time, so a slow server
//!   cannot hide its queue);
//! - the same generator against a trivial route of the same server
//!   (`GET /api/v1/gifts/catalog`): the HTTP ceiling;
//! - resident memory of the server process (VmHWM, VmRSS) and of its
//!   nats-server child;
//!
//! each with `NATS_SYNC=interval` and `NATS_SYNC=always`.
//!
//! Run: `cargo bench -p halobuzz-tests --bench http` (it builds the server
//! first with `cargo build --profile bench -p api --bin halobuzz-api`).
//!
//! `BENCH_MODE=statement` measures a finance read instead: it sends
//! `BENCH_STATEMENT_ENTRIES` gifts (default 1,000,000; each is an entry of
//! `transit:gifts`), waits for the projector, then streams the account's
//! CSV statement over the window and reports rows per second, megabytes
//! per second, and the server's resident memory sampled while it streams
//! (the goal: flat in the number of entries).
//!
//! `BENCH_MODE=scaling` (`BENCH_MODE=scaling cargo bench -p halobuzz-tests
//! --bench http`) compares two topologies in one run, with the same
//! generator, viewers, connections and phases:
//!
//! - A: one `halobuzz-api` process (all roles) on its managed nats-server,
//!   as above, with `NATS_SYNC=always` (the cluster nodes' setting;
//!   `BENCH_SYNC=interval` changes A's only);
//! - B: two API replicas (`HALOBUZZ_ROLE=api`) and one workers process
//!   (`HALOBUZZ_ROLE=workers`: the projector and the gift reactor) on a
//!   three-node NATS cluster (`commands::testing::NatsCluster`, each node
//!   `sync_interval: always`) with the stream at `NATS_STREAM_REPLICAS=3`,
//!   started as the cluster test starts them (`halobuzz_tests::cluster`).
//!   Generator connection `i` goes to replica `i % 2`, and so does
//!   open-loop request `i`: the load is split evenly. Each process has its
//!   own embedded SQLite read store in its own `DATA_DIR` (SQLite is not
//!   shared between processes here): gifts never read a read model
//!   (commands decide from the log), the workers process projects into its
//!   file as A's process does into its own, and the replicas' files stay
//!   empty, for the bench reads nothing through them. The MongoDB surrogate
//!   of the cluster test is a Python process that would compete for the
//!   same cores and be measured with the rest.
//!
//! For each: gifts/s at saturation; p50/p99 at half of its own saturation
//! rate; for B also at half of A's rate (the same offered load, the fairer
//! comparison); the trivial route; the non-2xx answers and the errors (no
//! answer) of every phase; each process's CPU over the saturation phase
//! (the stream leader's node named) and the CPU per gift, with how busy
//! the whole machine was; each process's resident memory; then B/A. Every
//! process is checked healthy (the reactor active) before the measurement
//! and after it, and is killed at the end, also on a panic. The cost of
//! replicas=3 on one append's latency, without HTTP, is measured by
//! `cargo bench -p commands --bench log`.
//!
//! Sizes: `BENCH_SECONDS` (per phase, default 10), `BENCH_CONCURRENCY`
//! (default 64), `BENCH_SYNC` (`interval`, `always` or `both`, the default;
//! in the scaling mode `always` unless `interval`); `BENCH_SERVER_ENV`
//! (`K=V K=V`) adds variables to the server's environment (e.g.
//! `HALOBUZZ_ROLE=api` to measure without the workers; the scaling mode
//! sets the roles itself and drops a `HALOBUZZ_ROLE` given here).

// Rates, latencies and memory are measurements, not money: floats are the
// right tool for them here.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commands::log::LogConfig;
use commands::testing::NatsCluster;
use futures_util::StreamExt;
use halobuzz_tests::cluster::{ServiceProcess, wait_reactor_status, with_role};
use halobuzz_tests::latency::{ms, percentile};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
/// The admin `ADMIN_EMAILS` names (it funds the viewers).
const ADMIN_EMAIL: &str = "admin@bench.halobuzz.com";
/// Longest wait for the server to answer /health after start.
const READY_MS_MAX: u64 = 120_000;
/// Longest a request may take before the generator counts it as an error
/// (keeps every phase bounded when a process hangs).
const REQUEST_MS_MAX: u64 = 30_000;
/// Longest wait for the projector to catch up after the load.
const CATCH_UP_MS_MAX: u64 = 120_000;
/// Longest wait for a workers process's reactor to take its lease.
const REACTOR_ACTIVE_MS_MAX: u64 = 60_000;
/// Nodes of the scaling mode's NATS cluster, and the stream's replicas.
const CLUSTER_NODES: usize = 3;
/// API replicas of the scaling mode's topology B.
const API_REPLICAS: usize = 2;
/// /proc's CPU times are in USER_HZ ticks, 100 per second on Linux
/// whatever the kernel's own HZ.
const USER_HZ: f64 = 100.0;
/// Requests in flight at most in the open-loop phase (a server slower than
/// the schedule makes the generator drop requests rather than queue them
/// without bound; drops are reported).
const OPEN_LOOP_IN_FLIGHT_MAX: u64 = 4_096;
/// Viewers of the open loop: enough that one viewer's gifts are far apart
/// (a person does not send concurrent gifts; two at once on one ledger
/// race, and the loser is decided again).
const OPEN_LOOP_VIEWERS: usize = 512;
/// Registrations in flight during the setup.
const SETUP_IN_FLIGHT_MAX: usize = 8;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Builds (if needed) and locates the server binary. It is built with the
/// bench profile (release, plus line tables), whose dependencies this very
/// bench has just built; the variables cargo sets for a running bench are
/// removed so that the nested build sees the same environment as a plain
/// `cargo build` and reuses its artifacts.
fn server_binary() -> PathBuf {
    let root = workspace_root();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--profile", "bench", "-p", "api", "--bin", "halobuzz-api"]).current_dir(&root);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let keep = matches!(name.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR") || name.starts_with("CARGO_REGISTRIES_");
        if (name.starts_with("CARGO_") && !keep) || matches!(name.as_str(), "MAKEFLAGS" | "MFLAGS" | "OUT_DIR") {
            build.env_remove(&name);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building halobuzz-api failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() { target } else { root.join(target) };
    let binary = target.join("release").join("halobuzz-api");
    assert!(binary.exists(), "no binary at {}", binary.display());
    binary
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// `(VmHWM, VmRSS)` of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|k| k.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

/// CPU time (user and system, every thread) a process has used so far, in
/// seconds; 0 when it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from its ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / USER_HZ
}

/// The machine's CPU time since boot, all CPUs: (busy, all) in ticks, and
/// the number of CPUs (/proc/stat). Busy includes every other process on
/// the machine: a busy machine shows here.
fn machine_ticks() -> (u64, u64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.strip_prefix("cpu").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        .count();
    let Some(first) = stat.lines().next() else { return (0, 0, cpus) };
    // user nice system idle iowait irq softirq steal (guest is in user).
    let ticks: Vec<u64> = first.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    let all: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all, cpus)
}

/// The nats-server processes among this process's children (the scaling
/// mode's cluster nodes), each with its node index: the harness starts
/// node `i` with `-c <dir>/n<i>/nats-server.conf`.
fn nats_children() -> Vec<(Option<usize>, u32)> {
    children_of(std::process::id())
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nats-server"))
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let index = (0..CLUSTER_NODES).find(|i| cmdline.contains(&format!("/n{i}/nats-server.conf")));
            (index, pid)
        })
        .collect()
}

/// The environment every server process of the bench gets (both
/// topologies of the scaling mode alike).
fn service_env() -> Vec<(String, String)> {
    [
        // Only development and test let ADMIN_EMAILS grant the bench its admin.
        ("APP_ENV", "test"),
        ("RATE_LIMIT_MAX_REQUESTS", "0"),
        ("ADMIN_EMAILS", ADMIN_EMAIL),
        // The setup funds viewers with large adjustments: not what four
        // eyes is about here.
        ("ADJUSTMENT_APPROVAL_COINS", "1000000000000"),
        ("JWT_SECRET", "bench-access-secret-0123456789-0123456789"),
        ("JWT_REFRESH_SECRET", "bench-refresh-secret-0123456789-012345678"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `BENCH_SERVER_ENV`: extra `K=V` pairs for the server.
fn server_env() -> Vec<(String, String)> {
    std::env::var("BENCH_SERVER_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

struct Server {
    child: Child,
    base: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(binary: &PathBuf, sync: &str) -> Server {
        let data = tempfile::Builder::new().prefix("halobuzz-bench-").tempdir().expect("a temp dir");
        let port = free_port();
        let child = Command::new(binary)
            .env("PORT", port.to_string())
            .env("NATS_PORT", free_port().to_string())
            .env("DATA_DIR", data.path())
            .env("NATS_SYNC", sync)
            .env_remove("NATS_URL")
            .env_remove("MONGODB_URI")
            .env_remove("HALOBUZZ_ROLE")
            .envs(service_env())
            .envs(server_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the server starts");
        Server { child, base: format!("http://127.0.0.1:{port}"), _data: data }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful: the server stops its managed nats-server), then
    /// wait (see `Drop`).
    fn stop(self) {
        drop(self);
    }
}

/// Also on a panic: the server, and with it its nats-server child, never
/// outlives the bench.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generator's HTTP client: many idle connections, every request
/// bounded.
fn bench_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_millis(REQUEST_MS_MAX))
        .build()
        .expect("a client")
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    match request.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

struct Setup {
    stream: String,
    viewers: Vec<String>,
    admin: String,
}

async fn setup(client: &reqwest::Client, base: &str, viewers: usize) -> Setup {
    let register = |name: String, email: String| {
        let client = client.clone();
        let url = format!("{base}/api/v1/auth/register");
        async move {
            let (status, body) = call(
                &client,
                reqwest::Method::POST,
                url,
                None,
                Some(json!({"email": email, "username": name, "password": PASSWORD})),
            )
            .await;
            assert_eq!(status, 201, "register: {body}");
            (
                body["user"]["id"].as_str().unwrap_or_default().to_string(),
                body["accessToken"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let (_, admin) = register("admin".into(), ADMIN_EMAIL.into()).await;
    let (_, host) = register("host".into(), "host@bench.halobuzz.com".into()).await;
    let admin = &admin;
    let register = &register;
    let tokens: Vec<String> = futures_util::stream::iter(0..viewers)
        .map(|i| async move {
            let (id, token) = register(format!("viewer_{i}"), format!("viewer{i}@bench.halobuzz.com")).await;
            let (status, body) = call(
                client,
                reqwest::Method::POST,
                format!("{base}/api/v1/admin/adjustments"),
                Some(admin),
                Some(json!({"userId": id, "coins": 1_000_000_000_i64, "reason": "bench"})),
            )
            .await;
            assert_eq!(status, 201, "fund: {body}");
            token
        })
        .buffered(SETUP_IN_FLIGHT_MAX)
        .collect()
        .await;
    let (status, body) = call(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v1/streams"),
        Some(&host),
        Some(json!({"title": "bench", "category": "bench"})),
    )
    .await;
    assert_eq!(status, 201, "stream: {body}");
    Setup { stream: body["streamId"].as_str().unwrap_or_default().to_string(), viewers: tokens, admin: admin.clone() }
}

fn gift_request(client: &reqwest::Client, base: &str, stream: &str, token: &str, key: u64) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/api/v1/streams/{stream}/gifts"))
        .bearer_auth(token)
        .header("Idempotency-Key", format!("bench-{key}"))
        .header("content-type", "application/json")
        .body(r#"{"giftId":"rose","quantity":1}"#)
}

/// Requests that did not succeed.
#[derive(Debug, Default, Clone, Copy)]
struct Failures {
    /// Answered with a status other than 2xx.
    non_2xx: u64,
    /// Not answered: connection error or timeout.
    errors: u64,
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "non-2xx {}, errors {}", self.non_2xx, self.errors)
    }
}

/// How a request ended.
enum Answer {
    Success,
    Non2xx,
    Error,
}

/// Counters shared by the generator's tasks.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn count(&self, answer: &Answer) {
        let counter = match answer {
            Answer::Success => &self.ok,
            Answer::Non2xx => &self.non_2xx,
            Answer::Error => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn failures(&self) -> Failures {
        Failures { non_2xx: self.non_2xx.load(Ordering::Relaxed), errors: self.errors.load(Ordering::Relaxed) }
    }
}

/// What a closed loop measured.
#[derive(Debug, Clone, Copy)]
struct Saturation {
    per_s: f64,
    /// Successful requests.
    ok: u64,
    failures: Failures,
}

/// Closed loop: `concurrency` workers send back to back for `seconds`;
/// worker `i` sends to `bases[i % bases.len()]` (the load split evenly
/// over the replicas, each connection pinned to one).
async fn saturate(
    client: &reqwest::Client,
    bases: &[String],
    setup: Option<&Setup>,
    concurrency: usize,
    seconds: u64,
) -> Saturation {
    let tally = Arc::new(Tally::default());
    let keys = Arc::new(AtomicU64::new(rand_seed()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (client, base, tally, keys) =
            (client.clone(), bases[worker % bases.len()].clone(), tally.clone(), keys.clone());
        let gift = setup.map(|s| (s.stream.clone(), s.viewers[worker % s.viewers.len()].clone()));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let request = match &gift {
                    Some((stream, token)) => {
                        gift_request(&client, &base, stream, token, keys.fetch_add(1, Ordering::Relaxed))
                    }
                    None => client.get(format!("{base}/api/v1/gifts/catalog")),
                };
                tally.count(&answer(request).await);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = tally.ok.load(Ordering::Relaxed);
    Saturation { per_s: ok as f64 / elapsed, ok, failures: tally.failures() }
}

/// Sends the request and reads its body: how it ended.
async fn answer(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            match r.bytes().await {
                Ok(_) if status.is_success() => Answer::Success,
                Ok(_) => Answer::Non2xx,
                Err(_) => Answer::Error,
            }
        }
        Err(_) => Answer::Error,
    }
}

/// Whether the request answered a success.
async fn succeeded(request: reqwest::RequestBuilder) -> bool {
    matches!(answer(request).await, Answer::Success)
}

fn rand_seed() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()) % (1 << 40),
    )
    .unwrap_or(0)
        << 20
}

/// What an open loop measured.
struct OpenLoop {
    rate_per_s: f64,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    failures: Failures,
    /// Requests not sent because too many were in flight.
    dropped: u64,
}

impl OpenLoop {
    fn p50_ms(&self) -> f64 {
        ms(percentile(&self.latencies, 500))
    }

    fn p99_ms(&self) -> f64 {
        ms(percentile(&self.latencies, 990))
    }

    fn line(&self) -> String {
        format!(
            "open loop at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   ({} answered, {}, dropped {})",
            self.rate_per_s,
            self.p50_ms(),
            self.p99_ms(),
            ms(self.latencies.last().copied().unwrap_or_default()),
            self.latencies.len(),
            self.failures,
            self.dropped
        )
    }
}

/// Open loop at `rate` gifts per second for `seconds`: latency from each
/// request's scheduled time. Request `i` goes to `bases[i % bases.len()]`.
async fn open_loop(client: &reqwest::Client, bases: &[String], setup: &Setup, rate: f64, seconds: u64) -> OpenLoop {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (rate * seconds as f64) as u64;
    let in_flight = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Tally::default());
    let dropped = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let keys = rand_seed() + (1 << 19);
    let started = tokio::time::Instant::now();
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        if in_flight.load(Ordering::Relaxed) >= OPEN_LOOP_IN_FLIGHT_MAX {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(i).unwrap_or(0);
        let token = &setup.viewers[index % setup.viewers.len()];
        let request = gift_request(client, &bases[index % bases.len()], &setup.stream, token, keys + i);
        let (tx, in_flight, tally) = (tx.clone(), in_flight.clone(), tally.clone());
        tokio::spawn(async move {
            let answer = answer(request).await;
            if matches!(answer, Answer::Success) {
                let _ = tx.send(scheduled.elapsed());
            }
            tally.count(&answer);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while let Some(l) = rx.recv().await {
        latencies.push(l);
    }
    latencies.sort();
    OpenLoop { rate_per_s: rate, latencies, failures: tally.failures(), dropped: dropped.load(Ordering::Relaxed) }
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_millis(READY_MS_MAX);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not become healthy in {READY_MS_MAX} ms");
}

/// One scraped counter or gauge from /metrics.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the projector of the process at `base` has every event
/// (bounded): the lag it last reported (`u64::MAX`: none) and the seconds
/// waited.
async fn catch_up(client: &reqwest::Client, base: &str) -> (u64, f64) {
    let catch_up = Instant::now();
    let mut lag = u64::MAX;
    while catch_up.elapsed() < Duration::from_millis(CATCH_UP_MS_MAX) {
        let health: Value = match client.get(format!("{base}/health")).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        lag = health["checks"]["projector"]["lagEvents"].as_u64().unwrap_or(u64::MAX);
        if lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (lag, catch_up.elapsed().as_secs_f64())
}

async fn bench(binary: &PathBuf, sync: &str, seconds: u64, concurrency: usize) {
    let server = Server::start(binary, sync);
    let client = bench_client();
    wait_ready(&client, &server.base).await;
    let bases = std::slice::from_ref(&server.base);
    let s = setup(&client, &server.base, concurrency.max(OPEN_LOOP_VIEWERS)).await;
    let (_, setup_rss) = memory_mib(server.pid());
    // Warm-up: connections, caches, the SQLite file.
    let _ = saturate(&client, bases, Some(&s), concurrency, 2).await;
    let gifts = saturate(&client, bases, Some(&s), concurrency, seconds).await;
    let half = open_loop(&client, bases, &s, gifts.per_s / 2.0, seconds).await;
    let trivial = saturate(&client, bases, None, concurrency, seconds.min(5)).await;
    // Let the workers catch up, and see how far behind they were.
    let (lag, catch_up_s) = catch_up(&client, &server.base).await;
    let metrics = match client.get(format!("{}/metrics", server.base)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let (hwm, rss) = memory_mib(server.pid());
    let nats: Vec<(f64, f64)> = children_of(server.pid()).into_iter().map(memory_mib).collect();
    println!("--- NATS_SYNC={sync}, {concurrency} connections, {seconds} s per phase ---");
    println!("gifts/s at saturation (closed loop):      {:>10.0}   ({})", gifts.per_s, gifts.failures);
    println!("{} (half of saturation)", half.line());
    println!("trivial route GET /api/v1/gifts/catalog:   {:>10.0} req/s   ({})", trivial.per_s, trivial.failures);
    println!(
        "server process memory: VmHWM {hwm:.1} MiB, VmRSS {rss:.1} MiB (VmRSS {setup_rss:.1} MiB after the setup)"
    );
    for (i, (h, r)) in nats.iter().enumerate() {
        println!("nats-server child {i}: VmHWM {h:.1} MiB, VmRSS {r:.1} MiB");
    }
    println!(
        "after the load: projector lag {lag} events, caught up in {catch_up_s:.1} s; appends {}, conflicts {}, reactor commits {}, reactor gifts {}",
        metric(&metrics, "halobuzz_log_appends_total"),
        metric(&metrics, "halobuzz_log_append_conflicts_total"),
        metric(&metrics, "halobuzz_reactor_commits_total"),
        metric(&metrics, "halobuzz_reactor_gifts_total"),
    );
    server.stop();
}

/// The processes of one topology of the scaling mode, as the generator
/// sees them.
struct Topology {
    label: String,
    /// The base URLs of the processes that serve the API; the generator
    /// spreads its connections over them.
    bases: Vec<String>,
    /// The process running the projector and the gift reactor.
    workers_base: String,
    /// Every process of the topology (service and nats-server), by name,
    /// for CPU and memory.
    processes: Vec<(String, u32)>,
}

/// One process's share of a topology's figures.
struct ProcessFigures {
    name: String,
    /// CPU seconds over the saturation phase.
    saturation_cpu_s: f64,
    /// VmHWM and VmRSS at the end, MiB.
    hwm_mib: f64,
    rss_mib: f64,
}

/// What one topology measured.
struct Figures {
    label: String,
    saturation: Saturation,
    /// Wall-clock seconds of the saturation phase (CPU per second).
    saturation_s: f64,
    half_own: OpenLoop,
    /// At half of the other topology's saturation rate (B only).
    half_other: Option<OpenLoop>,
    trivial: Saturation,
    processes: Vec<ProcessFigures>,
    /// The generator's (this process's) CPU seconds over the saturation.
    generator_cpu_s: f64,
    /// Busy CPUs of the whole machine over the saturation phase, and the
    /// machine's CPUs (other processes on the machine show here).
    machine_busy_cpus: f64,
    machine_cpus: usize,
    lag: u64,
    catch_up_s: f64,
    /// Processes that were not healthy after the measurement.
    unhealthy_after: Vec<String>,
}

impl Figures {
    /// CPU seconds of the service and nats-server processes per successful
    /// gift at saturation, in ms.
    fn server_cpu_ms_per_gift(&self) -> f64 {
        let cpu: f64 = self.processes.iter().map(|p| p.saturation_cpu_s).sum();
        cpu * 1000.0 / (self.saturation.ok.max(1) as f64)
    }

    fn generator_cpu_ms_per_gift(&self) -> f64 {
        self.generator_cpu_s * 1000.0 / (self.saturation.ok.max(1) as f64)
    }

    fn rss_mib(&self) -> f64 {
        self.processes.iter().map(|p| p.rss_mib).sum()
    }
}

/// Why a process is not healthy (`None`: it is): `/health` answers 200
/// `healthy`, and a process running the workers has its reactor active.
async fn unhealthy(client: &reqwest::Client, base: &str, runs_workers: bool) -> Option<String> {
    let response = match client.get(format!("{base}/health")).send().await {
        Ok(r) => r,
        Err(e) => return Some(format!("{base}: no answer to /health: {e}")),
    };
    let status = response.status().as_u16();
    let health: Value = response.json().await.unwrap_or(Value::Null);
    let reactor = health["checks"]["reactor"]["status"].as_str().unwrap_or("");
    if status != 200 || health["status"] != "healthy" || (runs_workers && reactor != "active") {
        return Some(format!("{base}: /health {status} {health}"));
    }
    None
}

/// Every process of `topology` that is not healthy, with why.
async fn unhealthy_processes(client: &reqwest::Client, topology: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    for base in &topology.bases {
        out.extend(unhealthy(client, base, *base == topology.workers_base).await);
    }
    if !topology.bases.contains(&topology.workers_base) {
        out.extend(unhealthy(client, &topology.workers_base, true).await);
    }
    out
}

/// The phases of the scaling mode on one topology: setup, warm-up,
/// saturation (with each process's CPU), half of its own rate, half of
/// `other_rate_per_s` when given, the trivial route, the projector's
/// catch-up, memory.
async fn measure(topology: &Topology, seconds: u64, concurrency: usize, other_rate_per_s: Option<f64>) -> Figures {
    let client = bench_client();
    let bases = &topology.bases;
    let s = setup(&client, &bases[0], concurrency.max(OPEN_LOOP_VIEWERS)).await;
    // Every process healthy (the reactor may still be taking its lease).
    let deadline = Instant::now() + Duration::from_millis(REACTOR_ACTIVE_MS_MAX);
    loop {
        let unhealthy = unhealthy_processes(&client, topology).await;
        if unhealthy.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{}: not healthy before measuring: {unhealthy:#?}", topology.label);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Warm-up: connections, caches, the SQLite files.
    let _ = saturate(&client, bases, Some(&s), concurrency, 2).await;
    let cpu_before: Vec<f64> = topology.processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    let generator_before = cpu_seconds(std::process::id());
    let (busy_before, all_before, machine_cpus) = machine_ticks();
    let started = Instant::now();
    let saturation = saturate(&client, bases, Some(&s), concurrency, seconds).await;
    let saturation_s = started.elapsed().as_secs_f64();
    let (busy_after, all_after, _) = machine_ticks();
    let generator_cpu_s = cpu_seconds(std::process::id()) - generator_before;
    let cpu_after: Vec<f64> = topology.processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    let machine_busy_cpus = busy_after.saturating_sub(busy_before) as f64
        / (all_after.saturating_sub(all_before).max(1) as f64)
        * machine_cpus as f64;
    let half_own = open_loop(&client, bases, &s, saturation.per_s / 2.0, seconds).await;
    let half_other = match other_rate_per_s {
        Some(rate) => Some(open_loop(&client, bases, &s, rate / 2.0, seconds).await),
        None => None,
    };
    let trivial = saturate(&client, bases, None, concurrency, seconds.min(5)).await;
    let (lag, catch_up_s) = catch_up(&client, &topology.workers_base).await;
    let processes = topology
        .processes
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|((name, pid), (before, after))| {
            let (hwm_mib, rss_mib) = memory_mib(*pid);
            ProcessFigures { name: name.clone(), saturation_cpu_s: after - before, hwm_mib, rss_mib }
        })
        .collect();
    let unhealthy_after = unhealthy_processes(&client, topology).await;
    Figures {
        label: topology.label.clone(),
        saturation,
        saturation_s,
        half_own,
        half_other,
        trivial,
        processes,
        generator_cpu_s,
        machine_busy_cpus,
        machine_cpus,
        lag,
        catch_up_s,
        unhealthy_after,
    }
}

fn print_figures(f: &Figures, other: &str) {
    println!("--- {} ---", f.label);
    println!("gifts/s at saturation (closed loop):      {:>10.0}   ({})", f.saturation.per_s, f.saturation.failures);
    println!("{} (half of its own saturation)", f.half_own.line());
    if let Some(half) = &f.half_other {
        println!("{} (half of {other}'s saturation)", half.line());
    }
    println!("trivial route GET /api/v1/gifts/catalog:   {:>10.0} req/s   ({})", f.trivial.per_s, f.trivial.failures);
    let per_s = f.saturation_s.max(1e-9);
    println!(
        "CPU over the saturation phase ({:.1} s; CPUs busy = CPU s per s): machine {:.2} of {} CPUs busy (everything on it), generator {:.2}",
        f.saturation_s,
        f.machine_busy_cpus,
        f.machine_cpus,
        f.generator_cpu_s / per_s
    );
    for p in &f.processes {
        println!(
            "  {:<34} CPUs busy {:.2}; VmHWM {:.1} MiB, VmRSS {:.1} MiB",
            p.name,
            p.saturation_cpu_s / per_s,
            p.hwm_mib,
            p.rss_mib
        );
    }
    println!(
        "CPU per gift at saturation: {:.3} ms in the service and nats-server processes, {:.3} ms in the generator",
        f.server_cpu_ms_per_gift(),
        f.generator_cpu_ms_per_gift()
    );
    println!("after the load: projector lag {} events, caught up in {:.1} s", f.lag, f.catch_up_s);
    if f.unhealthy_after.is_empty() {
        println!("every process healthy after the measurement");
    } else {
        println!("NOT HEALTHY after the measurement: {:#?}", f.unhealthy_after);
    }
}

/// `b / a`, or `-` when `a` is zero.
fn ratio(b: f64, a: f64) -> String {
    if a > 0.0 { format!("{:.2}", b / a) } else { "-".into() }
}

fn print_comparison(a: &Figures, b: &Figures) {
    println!("--- B/A (same generator, viewers, connections and phases; A ran first) ---");
    println!("{:<44} {:>12} {:>12} {:>8}", "", "A", "B", "B/A");
    let row = |name: &str, a: f64, b: f64| println!("{name:<44} {a:>12.2} {b:>12.2} {:>8}", ratio(b, a));
    row("gifts/s at saturation", a.saturation.per_s, b.saturation.per_s);
    row("p50 ms at half of its own saturation", a.half_own.p50_ms(), b.half_own.p50_ms());
    row("p99 ms at half of its own saturation", a.half_own.p99_ms(), b.half_own.p99_ms());
    if let Some(half) = &b.half_other {
        let name = format!("p50 ms at half of A's ({:.0}/s)", half.rate_per_s);
        row(&name, a.half_own.p50_ms(), half.p50_ms());
        let name = format!("p99 ms at half of A's ({:.0}/s)", half.rate_per_s);
        row(&name, a.half_own.p99_ms(), half.p99_ms());
    }
    row("trivial route req/s", a.trivial.per_s, b.trivial.per_s);
    row("CPU ms per gift (service + nats)", a.server_cpu_ms_per_gift(), b.server_cpu_ms_per_gift());
    row("CPU ms per gift (generator)", a.generator_cpu_ms_per_gift(), b.generator_cpu_ms_per_gift());
    row("VmRSS MiB, all processes, at the end", a.rss_mib(), b.rss_mib());
    let failures = |f: &Figures| {
        let mut phases = vec![f.saturation.failures, f.half_own.failures, f.trivial.failures];
        phases.extend(f.half_other.as_ref().map(|h| h.failures));
        let dropped = f.half_own.dropped + f.half_other.as_ref().map_or(0, |h| h.dropped);
        (phases.iter().map(|p| p.non_2xx).sum::<u64>(), phases.iter().map(|p| p.errors).sum::<u64>(), dropped)
    };
    let (a_non_2xx, a_errors, a_dropped) = failures(a);
    let (b_non_2xx, b_errors, b_dropped) = failures(b);
    println!(
        "non-2xx / errors / dropped, every phase:     A {a_non_2xx} / {a_errors} / {a_dropped}, B {b_non_2xx} / {b_errors} / {b_dropped}"
    );
}

/// The scaling bench (`BENCH_MODE=scaling`): A, one process on one
/// nats-server, then B, two API replicas and a workers process on a
/// three-node cluster; both measured by `measure`, then compared.
async fn scaling_bench(binary: &PathBuf, sync: &str, seconds: u64, concurrency: usize) {
    let extra: Vec<(String, String)> = server_env().into_iter().filter(|(k, _)| k != "HALOBUZZ_ROLE").collect();
    let a = {
        let server = Server::start(binary, sync);
        wait_ready(&bench_client(), &server.base).await;
        let mut processes = vec![("halobuzz-api (all roles)".to_string(), server.pid())];
        processes.extend(children_of(server.pid()).into_iter().map(|pid| ("nats-server (managed)".to_string(), pid)));
        let topology = Topology {
            label: format!("A: one halobuzz-api process (all roles) on one managed nats-server, NATS_SYNC={sync}"),
            bases: vec![server.base.clone()],
            workers_base: server.base.clone(),
            processes,
        };
        let figures = measure(&topology, seconds, concurrency, None).await;
        server.stop();
        figures
    };
    print_figures(&a, "A");
    let b = {
        // Dropped in reverse order, also on a panic: the service processes
        // (SIGKILL), then every node.
        let cluster = NatsCluster::start(CLUSTER_NODES).await;
        let mut env = service_env();
        env.extend([
            ("NATS_URL".to_string(), cluster.urls().join(",")),
            ("NATS_STREAM_REPLICAS".to_string(), CLUSTER_NODES.to_string()),
        ]);
        env.extend(extra);
        // As the cluster test: the workers first (they take the leases).
        let workers = ServiceProcess::start(binary, "bench-workers", &with_role(&env, "workers")).await;
        wait_reactor_status(&workers, "active", Duration::from_millis(REACTOR_ACTIVE_MS_MAX)).await;
        let mut api = Vec::with_capacity(API_REPLICAS);
        for replica in 1..=API_REPLICAS {
            api.push(ServiceProcess::start(binary, &format!("bench-api{replica}"), &with_role(&env, "api")).await);
        }
        let pid = |p: &ServiceProcess| p.pid().unwrap_or_else(|| panic!("{} is not running", p.name()));
        let mut processes: Vec<(String, u32)> =
            api.iter().map(|p| (format!("halobuzz-api {} (role api)", p.name()), pid(p))).collect();
        processes.push(("halobuzz-api bench-workers (role workers)".to_string(), pid(&workers)));
        let nodes = nats_children();
        assert_eq!(nodes.len(), CLUSTER_NODES, "the cluster's nodes among this process's children: {nodes:?}");
        // Every append goes through the stream's leader.
        let leader = cluster
            .wait_for_stream_leader(LogConfig::DEFAULT_STREAM_NAME, Duration::from_millis(REACTOR_ACTIVE_MS_MAX))
            .await;
        processes.extend(nodes.into_iter().map(|(index, pid)| {
            let name = match index {
                Some(i) if i == leader => format!("nats-server node {i} (stream leader)"),
                Some(i) => format!("nats-server node {i}"),
                None => format!("nats-server pid {pid}"),
            };
            (name, pid)
        }));
        let topology = Topology {
            label: format!(
                "B: {API_REPLICAS} API replicas + 1 workers process on a {CLUSTER_NODES}-node NATS cluster (stream replicas {CLUSTER_NODES}, sync always)"
            ),
            bases: api.iter().map(ServiceProcess::base).collect(),
            workers_base: workers.base(),
            processes,
        };
        let figures = measure(&topology, seconds, concurrency, Some(a.saturation.per_s)).await;
        if !figures.unhealthy_after.is_empty() {
            for process in api.iter().chain(std::iter::once(&workers)) {
                eprintln!("--- {}'s log ---\n{}", process.name(), process.log_tail());
            }
        }
        drop(api);
        drop(workers);
        drop(cluster);
        figures
    };
    print_figures(&b, "A");
    print_comparison(&a, &b);
    let unhealthy: Vec<&String> = a.unhealthy_after.iter().chain(&b.unhealthy_after).collect();
    assert!(
        unhealthy.is_empty(),
        "processes not healthy after the measurement (figures above are suspect): {unhealthy:#?}"
    );
}

/// Sends `gifts` gifts from the setup's viewers, `concurrency` at a time
/// (each worker its own viewer); returns the failures.
async fn send_gifts(client: &reqwest::Client, base: &str, s: &Setup, concurrency: usize, gifts: u64) -> u64 {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let keys = rand_seed();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (client, base, next, failed) = (client.clone(), base.to_string(), next.clone(), failed.clone());
        let (stream, token) = (s.stream.clone(), s.viewers[worker % s.viewers.len()].clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < gifts {
                let key = keys.wrapping_add(next.load(Ordering::Relaxed)).wrapping_mul(31).wrapping_add(worker as u64);
                if !succeeded(gift_request(&client, &base, &stream, &token, key)).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    failed.load(Ordering::Relaxed)
}

/// The statement bench (`BENCH_MODE=statement`).
async fn statement_bench(binary: &PathBuf, entries: u64, concurrency: usize) {
    let server = Server::start(binary, "interval");
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("a client");
    wait_ready(&client, &server.base).await;
    let s = setup(&client, &server.base, concurrency).await;
    let from = chrono::Utc::now() - chrono::Duration::hours(1);
    let seeding = Instant::now();
    let failures = send_gifts(&client, &server.base, &s, concurrency, entries).await;
    let seeding_s = seeding.elapsed().as_secs_f64();
    // The projector must have every entry before the statement is read.
    let deadline = Instant::now() + Duration::from_secs(1_800);
    while Instant::now() < deadline {
        let health: Value = match client.get(format!("{}/health", server.base)).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if health["checks"]["projector"]["lagEvents"].as_u64() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let to = chrono::Utc::now() + chrono::Duration::minutes(1);
    let (hwm_before, rss_before) = memory_mib(server.pid());
    // Resident memory sampled while the statement streams.
    let streaming = Arc::new(AtomicBool::new(true));
    let peak_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (streaming, peak_kib, pid) = (streaming.clone(), peak_kib.clone(), server.pid());
        std::thread::spawn(move || {
            while streaming.load(Ordering::Relaxed) {
                let (_, rss) = memory_mib(pid);
                peak_kib.fetch_max((rss * 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let url = format!(
        "{}/api/v1/ledger/accounts/transit:gifts/statement?from={}&to={}&format=csv",
        server.base,
        stamp(from),
        stamp(to)
    );
    let started = Instant::now();
    let mut response = client.get(url).bearer_auth(&s.admin).send().await.expect("the statement answers");
    let status = response.status().as_u16();
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Ok(Some(chunk)) = response.chunk().await {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    streaming.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let rows = lines.saturating_sub(2);
    println!("--- statement: {entries} gifts sent in {seeding_s:.1} s (failures {failures}) ---");
    println!(
        "CSV statement of transit:gifts: status {status}, {rows} entry rows, {:.1} MB in {seconds:.2} s: {:.0} rows/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        rows as f64 / seconds.max(1e-9),
        bytes as f64 / 1e6 / seconds.max(1e-9)
    );
    println!(
        "server memory: VmRSS {rss_before:.1} MiB before, peak VmRSS {:.1} MiB while streaming (VmHWM {hwm_before:.1} MiB before, over the seeding)",
        peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    );
    server.stop();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read from the args.
    if std::env::var("BENCH_MODE").as_deref() == Ok("scaling") {
        let seconds = env_number("BENCH_SECONDS", 10);
        let concurrency = usize::try_from(env_number("BENCH_CONCURRENCY", 64)).unwrap_or(64).max(1);
        // The cluster's nodes sync every write: so does A's server, unless asked.
        let sync = if std::env::var("BENCH_SYNC").as_deref() == Ok("interval") { "interval" } else { "always" };
        let binary = server_binary();
        println!(
            "command: BENCH_MODE=scaling cargo bench -p halobuzz-tests --bench http  (BENCH_SECONDS={seconds} BENCH_CONCURRENCY={concurrency}, viewers {}, A's NATS_SYNC={sync})",
            concurrency.max(OPEN_LOOP_VIEWERS)
        );
        println!("server: {} (every process of A and B)", binary.display());
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        runtime.block_on(scaling_bench(&binary, sync, seconds, concurrency));
        return;
    }
    if std::env::var("BENCH_MODE").as_deref() == Ok("statement") {
        let entries = env_number("BENCH_STATEMENT_ENTRIES", 1_000_000);
        let concurrency = usize::try_from(env_number("BENCH_CONCURRENCY", 64)).unwrap_or(64).max(1);
        let binary = server_binary();
        println!(
            "command: BENCH_MODE=statement cargo bench -p halobuzz-tests --bench http  (BENCH_STATEMENT_ENTRIES={entries} BENCH_CONCURRENCY={concurrency})"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        runtime.block_on(statement_bench(&binary, entries, concurrency));
        return;
    }
    let seconds = env_number("BENCH_SECONDS", 10);
    let concurrency = usize::try_from(env_number("BENCH_CONCURRENCY", 64)).unwrap_or(64).max(1);
    let syncs: Vec<&str> = match std::env::var("BENCH_SYNC").as_deref() {
        Ok("interval") => vec!["interval"],
        Ok("always") => vec!["always"],
        _ => vec!["interval", "always"],
    };
    let binary = server_binary();
    println!(
        "command: cargo bench -p halobuzz-tests --bench http  (BENCH_SECONDS={seconds} BENCH_CONCURRENCY={concurrency})"
    );
    println!(
        "server: {} (embedded defaults: managed nats-server, SQLite, projector and reactor in process)",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    for sync in syncs {
        runtime.block_on(bench(&binary, sync, seconds, concurrency));
    }
}
