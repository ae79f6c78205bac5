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
//! Sizes: `BENCH_SECONDS` (per phase, default 10), `BENCH_CONCURRENCY`
//! (default 64), `BENCH_SYNC` (`interval`, `always` or `both`, the default);
//! `BENCH_SERVER_ENV` (`K=V K=V`) adds variables to the server's
//! environment (e.g. `HALOBUZZ_ROLE=api` to measure without the workers).

// Rates, latencies and memory are measurements, not money: floats are the
// right tool for them here.
#![allow(clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use halobuzz_tests::latency::{ms, percentile};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
/// Longest wait for the server to answer /health after start.
const READY_MS_MAX: u64 = 120_000;
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
            // Only development and test let ADMIN_EMAILS grant the bench its admin.
            .env("APP_ENV", "test")
            .env("RATE_LIMIT_MAX_REQUESTS", "0")
            .env("ADMIN_EMAILS", "admin@bench.halobuzz.com")
            // The setup funds viewers with large adjustments: not what four
            // eyes is about here.
            .env("ADJUSTMENT_APPROVAL_COINS", "1000000000000")
            .env("JWT_SECRET", "bench-access-secret-0123456789-0123456789")
            .env("JWT_REFRESH_SECRET", "bench-refresh-secret-0123456789-012345678")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
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

    /// SIGTERM (graceful), then wait.
    fn stop(mut self) {
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
    let (_, admin) = register("admin".into(), "admin@bench.halobuzz.com".into()).await;
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

/// Closed loop: `concurrency` workers send back to back for `seconds`.
/// Returns (successes per second, failures).
async fn saturate(
    client: &reqwest::Client,
    base: &str,
    setup: Option<&Setup>,
    concurrency: usize,
    seconds: u64,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(AtomicU64::new(rand_seed()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (client, base, ok, failed, keys) =
            (client.clone(), base.to_string(), ok.clone(), failed.clone(), keys.clone());
        let gift = setup.map(|s| (s.stream.clone(), s.viewers[worker % s.viewers.len()].clone()));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let request = match &gift {
                    Some((stream, token)) => {
                        gift_request(&client, &base, stream, token, keys.fetch_add(1, Ordering::Relaxed))
                    }
                    None => client.get(format!("{base}/api/v1/gifts/catalog")),
                };
                let good = succeeded(request).await;
                if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (ok.load(Ordering::Relaxed) as f64 / elapsed, failed.load(Ordering::Relaxed))
}

/// Sends the request and reads its body: whether it answered a success.
async fn succeeded(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(r) => {
            let status = r.status();
            let _ = r.bytes().await;
            status.is_success()
        }
        Err(_) => false,
    }
}

fn rand_seed() -> u64 {
    u64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()) % (1 << 40),
    )
    .unwrap_or(0)
        << 20
}

/// Open loop at `rate` gifts per second for `seconds`: latency from each
/// request's scheduled time. Returns (sorted latencies, failures, dropped).
async fn open_loop(
    client: &reqwest::Client,
    base: &str,
    setup: &Setup,
    rate: f64,
    seconds: u64,
) -> (Vec<Duration>, u64, u64) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (rate * seconds as f64) as u64;
    let in_flight = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
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
        let token = &setup.viewers[usize::try_from(i).unwrap_or(0) % setup.viewers.len()];
        let request = gift_request(client, base, &setup.stream, token, keys + i);
        let (tx, in_flight, failed, stop) = (tx.clone(), in_flight.clone(), failed.clone(), stop.clone());
        tokio::spawn(async move {
            let good = succeeded(request).await;
            if good && !stop.load(Ordering::Relaxed) {
                let _ = tx.send(scheduled.elapsed());
            } else if !good {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    while let Some(l) = rx.recv().await {
        latencies.push(l);
    }
    latencies.sort();
    (latencies, failed.load(Ordering::Relaxed), dropped.load(Ordering::Relaxed))
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

async fn bench(binary: &PathBuf, sync: &str, seconds: u64, concurrency: usize) {
    let server = Server::start(binary, sync);
    let client = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("a client");
    wait_ready(&client, &server.base).await;
    let s = setup(&client, &server.base, concurrency.max(OPEN_LOOP_VIEWERS)).await;
    let (_, setup_rss) = memory_mib(server.pid());
    // Warm-up: connections, caches, the SQLite file.
    let _ = saturate(&client, &server.base, Some(&s), concurrency, 2).await;
    let (gifts_per_s, gift_failures) = saturate(&client, &server.base, Some(&s), concurrency, seconds).await;
    let half = gifts_per_s / 2.0;
    let (latencies, open_failures, dropped) = open_loop(&client, &server.base, &s, half, seconds).await;
    let (trivial_per_s, trivial_failures) = saturate(&client, &server.base, None, concurrency, seconds.min(5)).await;
    // Let the workers catch up, and see how far behind they were.
    let catch_up = Instant::now();
    let mut lag = u64::MAX;
    while catch_up.elapsed() < Duration::from_secs(120) {
        let health: Value = match client.get(format!("{}/health", server.base)).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        lag = health["checks"]["projector"]["lagEvents"].as_u64().unwrap_or(u64::MAX);
        if lag == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up_s = catch_up.elapsed().as_secs_f64();
    let metrics = match client.get(format!("{}/metrics", server.base)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let (hwm, rss) = memory_mib(server.pid());
    let nats: Vec<(f64, f64)> = children_of(server.pid()).into_iter().map(memory_mib).collect();
    println!("--- NATS_SYNC={sync}, {concurrency} connections, {seconds} s per phase ---");
    println!("gifts/s at saturation (closed loop):      {gifts_per_s:>10.0}   (failures {gift_failures})");
    println!(
        "open loop at half ({half:.0}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   ({} answered, failures {open_failures}, dropped {dropped})",
        ms(percentile(&latencies, 500)),
        ms(percentile(&latencies, 990)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    );
    println!("trivial route GET /api/v1/gifts/catalog:   {trivial_per_s:>10.0} req/s   (failures {trivial_failures})");
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
