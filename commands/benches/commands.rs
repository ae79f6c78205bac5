//! Gift commands through the command handler against the raw JetStream
//! publish of the same messages, and the server's ceiling for the
//! handler's appends (the same appends with their headers, nothing else);
//! command latency on a fresh account and on
//! one with 1,000,000 prior commits; a hot host receiving 10,000 gifts from
//! 1,000 viewers through the reactor.
//!
//! Run: `cargo bench -p commands --bench commands`. Sizes:
//! `BENCH_GIFTS` (default 60,000), `BENCH_CONCURRENCY` (gifts in flight,
//! comma-separated; default `64,256`),
//! `BENCH_PRIOR_COMMITS` (default 1,000,000), `BENCH_SAMPLES` (default 2,000);
//! `BENCH_ONLY=throughput|latency|hot` runs one part; `BENCH_SYNC=always|interval`
//! one sync mode. `BENCH_ONLY=memory` runs only the nats-server's resident
//! memory as gift commands accumulate (`BENCH_MEMORY_COMMANDS`, default
//! 3,000,000, sampled every `BENCH_MEMORY_STEP`, default 500,000; sync
//! `interval`; command records kept `BENCH_MEMORY_HORIZON_S`, default 60,
//! where production keeps them 24 hours: the bench shows memory following
//! one horizon of commands in minutes): not part of the default run, it
//! takes minutes.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::Bytes;
use commands::handler::{CommandConfig, CommandContext, Commands, ledger_subject};
use commands::log::{EventLog, JetStreamLog, LogConfig};
use commands::reactor::{GiftReactor, ReactorConfig};
use commands::testing::{NatsServer, SyncMode};
use domain::Loaded;
use domain::ledger::{self, LedgerCommand, PayoutPolicy};
use domain::stream::StartStream;
use events_schema::{Actor, Envelope, Event, EventMeta, Money};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use uuid::Uuid;

/// The allocator of `halobuzz-api`, which runs these handlers.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const WINDOW: usize = 256;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().replace('_', "").parse().ok()).unwrap_or(default)
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    count.saturating_mul(1_000_000) / u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

fn config() -> CommandConfig {
    CommandConfig {
        host_share_bps: 7000,
        payout_policy: PayoutPolicy {
            rate_per_coin: Money { amount: Decimal::new(1, 2), currency: "usd".into() },
            min_coins: 1000,
        },
        admin_emails: vec![],
        earnings_hold_hours: 0,
        idempotency_horizon_hours: 24,
    }
}

fn ctx(user: Uuid, key: String) -> CommandContext {
    CommandContext {
        scope: format!("user:{user}"),
        fingerprint: key.clone(),
        correlation_id: key.clone(),
        command_id: key,
        actor: Actor::user(user),
    }
}

struct Setup {
    server: NatsServer,
    log: Arc<JetStreamLog>,
    commands: Commands,
}

async fn setup(sync: SyncMode) -> Setup {
    setup_with(sync, |config| config).await
}

async fn setup_with(sync: SyncMode, tune: impl FnOnce(LogConfig) -> LogConfig) -> Setup {
    let server = NatsServer::start_with(sync).await;
    let log = Arc::new(JetStreamLog::connect(tune(server.log_config())).await.expect("the event log connects"));
    let commands = Commands::new(log.clone(), config());
    Setup { server, log, commands }
}

async fn fund(commands: &Commands, user: Uuid, coins: i64) {
    let admin = Uuid::nil();
    commands
        .ledger(
            &ctx(admin, format!("fund-{user}")),
            user,
            LedgerCommand::Adjust { coins, reason: "bench".into(), admin_id: admin },
        )
        .await
        .expect("funded");
}

async fn start_stream(commands: &Commands, host: Uuid) -> Uuid {
    let stream_id = Uuid::now_v7();
    let command = StartStream {
        stream_id,
        host_id: host,
        title: "bench".into(),
        category: "music".into(),
        at: chrono::Utc::now(),
    };
    commands.start_stream(&ctx(host, format!("start-{stream_id}")), command).await.expect("started");
    stream_id
}

/// Gift commands from `concurrency` viewers at once; returns gifts/s and the
/// sizes of the messages one command appended.
async fn handler_throughput(s: &Setup, gifts: u64, concurrency: usize) -> (u64, Vec<usize>) {
    let viewers: Vec<Uuid> = (0..concurrency).map(|_| Uuid::now_v7()).collect();
    for v in &viewers {
        fund(&s.commands, *v, 1_000_000_000).await;
    }
    let stream_id = start_stream(&s.commands, Uuid::now_v7()).await;
    let before = s.log.last_position().await.expect("position");
    let per_viewer = gifts / concurrency as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for v in viewers {
        let commands = s.commands.clone();
        tasks.push(tokio::spawn(async move {
            for g in 0..per_viewer {
                commands.send_gift(&ctx(v, format!("g{g}")), v, stream_id, "rose".into(), 1, 10).await.expect("gift");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let rate = per_second(per_viewer * concurrency as u64, started.elapsed());
    // One gift commit and one command record, as stored.
    let sample = s.log.read_from(before + 1, 256).await.expect("read");
    let size_of = |prefix: &str| {
        sample.iter().find(|m| m.subject.starts_with(prefix)).map(|m| m.payload.len()).expect("a sample message")
    };
    // The record is in the records stream.
    let records = s.log.records().expect("a records stream");
    let record = records.read_from(0, 1).await.expect("read a record");
    let record_bytes = record.first().map(|m| m.payload.len()).expect("a sample record");
    (rate, vec![size_of("hb.ledger."), record_bytes])
}

/// Raw async JetStream publish (no expectations, no reads), `WINDOW` in
/// flight, of `count` messages cycling through `sizes`; with `msg_ids`,
/// each carries a unique `Nats-Msg-Id`, as the handler's commits do (the
/// server then remembers it for the duplicate window).
async fn raw_publish(s: &Setup, count: u64, sizes: &[usize], msg_ids: bool) -> u64 {
    let js = async_nats::jetstream::new(s.log.client().clone());
    let payloads: Vec<Bytes> = sizes.iter().map(|n| Bytes::from(vec![b'x'; *n])).collect();
    let run = Uuid::now_v7();
    let started = Instant::now();
    let published = futures_util::stream::iter(0..count)
        .map(|i| {
            let js = js.clone();
            let payload = payloads[(i as usize) % payloads.len()].clone();
            async move {
                let subject = format!("hb.raw.{}", i % 1024);
                let ack = if msg_ids {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("{run}-{i}").as_str());
                    js.publish_with_headers(subject, headers, payload).await.expect("publish")
                } else {
                    js.publish(subject, payload).await.expect("publish")
                };
                ack.await.expect("ack");
            }
        })
        .buffer_unordered(WINDOW)
        .count()
        .await;
    per_second(published as u64, started.elapsed())
}

/// What a commit of `raw_protocol` carries.
#[derive(Clone, Copy)]
struct CommitHeaders {
    msg_id: bool,
    expected_sequence: bool,
}

/// The handler's appends and nothing else: `concurrency` senders, each
/// appending a commit to its own subject (with `headers`: a `Nats-Msg-Id`,
/// and the expected last subject sequence from its previous ack), then,
/// with `record`, a command record on a new subject expecting it empty:
/// with both headers and the record, what the handler appends for every
/// gift, without its reads, decisions and sealing. This is the server's
/// ceiling for the handler's append protocol; returns commands/s.
async fn raw_protocol(
    s: &Setup,
    commands: u64,
    sizes: &[usize],
    concurrency: usize,
    headers: CommitHeaders,
    record: bool,
) -> u64 {
    let js = async_nats::jetstream::new(s.log.client().clone());
    let commit_payload = Bytes::from(vec![b'x'; sizes[0]]);
    let record_payload = Bytes::from(vec![b'x'; sizes[sizes.len() - 1]]);
    let run = Uuid::now_v7().simple().to_string();
    let per_sender = commands / concurrency as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..concurrency {
        let (js, commit_payload, record_payload, run) =
            (js.clone(), commit_payload.clone(), record_payload.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let ledger = format!("hb.rawp.{run}.{sender}");
            let mut last_seq = 0u64;
            for k in 0..per_sender {
                let mut commit_headers = async_nats::HeaderMap::new();
                if headers.msg_id {
                    commit_headers.insert("Nats-Msg-Id", format!("{run}-{sender}-{k}").as_str());
                }
                if headers.expected_sequence {
                    commit_headers.insert("Nats-Expected-Last-Subject-Sequence", last_seq.to_string().as_str());
                }
                let ack = js
                    .publish_with_headers(ledger.clone(), commit_headers, commit_payload.clone())
                    .await
                    .expect("publish");
                last_seq = ack.await.expect("commit ack").sequence;
                if record {
                    let mut record_headers = async_nats::HeaderMap::new();
                    record_headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
                    let subject = format!("hb.rawr.{run}.{sender}.{k}");
                    let ack = js
                        .publish_with_headers(subject, record_headers, record_payload.clone())
                        .await
                        .expect("publish");
                    ack.await.expect("record ack");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    per_second(per_sender * concurrency as u64, started.elapsed())
}

/// Sequential gifts, alternating between two viewers so that both see the
/// same server (its background work after the prefill, its caches);
/// returns each viewer's latencies, sorted.
async fn latencies(s: &Setup, viewers: [Uuid; 2], stream_id: Uuid, samples: u64) -> [Vec<Duration>; 2] {
    let mut out = [Vec::with_capacity(samples as usize), Vec::with_capacity(samples as usize)];
    for g in 0..samples {
        for (which, viewer) in viewers.iter().enumerate() {
            let started = Instant::now();
            s.commands
                .send_gift(&ctx(*viewer, format!("lat{g}")), *viewer, stream_id, "rose".into(), 1, 1)
                .await
                .expect("gift");
            out[which].push(started.elapsed());
        }
    }
    for latencies in &mut out {
        latencies.sort_unstable();
    }
    out
}

/// Appends `count` valid purchase commits to `user`'s ledger directly (raw
/// publish of sealed commits), so that the account has a long history.
async fn prefill(s: &Setup, user: Uuid, count: u64) {
    let js = async_nats::jetstream::new(s.log.client().clone());
    let subject = ledger_subject(user);
    let mut loaded = Loaded::new(ledger::initial_state(user));
    let meta = EventMeta {
        event_id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        command_id: "prefill".into(),
        correlation_id: "prefill".into(),
        actor: Actor::system("bench"),
    };
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<async_nats::jetstream::context::PublishAckFuture>(WINDOW);
    let waiter = tokio::spawn(async move {
        while let Some(ack) = receiver.recv().await {
            ack.await.expect("prefill ack");
        }
    });
    for i in 0..count {
        let command = LedgerCommand::PurchaseCoins { payment_id: format!("pi_{i}"), coins: 1, source_position: 0 };
        let events = ledger::decide(&loaded.state, &command).expect("purchase");
        for event in events {
            let envelope: Envelope = loaded.seal(&EventMeta { event_id: Uuid::now_v7(), ..meta.clone() }, event);
            let ack = js.publish(subject.clone(), Bytes::from(envelope.encode())).await.expect("publish");
            sender.send(ack).await.expect("waiter");
            loaded = loaded.apply(&envelope, ledger::evolve);
        }
    }
    drop(sender);
    waiter.await.expect("acks");
    let _: Option<&Event> = None;
}

fn sync_name(sync: SyncMode) -> &'static str {
    match sync {
        SyncMode::Always => "always",
        SyncMode::Interval => "interval",
    }
}

fn ratio_of(rate: u64, raw: u64) -> String {
    let hundredths = rate * 100 / raw.max(1);
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// Prints the row of the handler-vs-raw table; returns the row of the
/// ceiling table (the same run's raw publish against the handler's appends
/// alone).
async fn throughput(sync: SyncMode, gifts: u64, concurrency: usize) -> String {
    let s = setup(sync).await;
    let (handler_rate, sizes) = handler_throughput(&s, gifts, concurrency).await;
    let messages_per_command = sizes.len() as u64;
    let raw_messages = raw_publish(&s, gifts * messages_per_command, &sizes, false).await;
    let raw_commands = raw_messages / messages_per_command.max(1);
    let raw_id_messages = raw_publish(&s, gifts * messages_per_command, &sizes, true).await;
    let raw_id_commands = raw_id_messages / messages_per_command.max(1);
    let both = CommitHeaders { msg_id: true, expected_sequence: true };
    let commit_alone = raw_protocol(&s, gifts, &sizes, concurrency, both, false).await;
    let expected_only = CommitHeaders { msg_id: false, ..both };
    let commit_expected_only = raw_protocol(&s, gifts, &sizes, concurrency, expected_only, false).await;
    let id_only = CommitHeaders { expected_sequence: false, ..both };
    let commit_id_only = raw_protocol(&s, gifts, &sizes, concurrency, id_only, false).await;
    let appends_alone = raw_protocol(&s, gifts, &sizes, concurrency, both, true).await;
    println!(
        "| {} | {concurrency} | {handler_rate} gifts/s | {raw_messages} msgs/s = {raw_commands} commands/s | **{}** | {raw_id_messages} msgs/s = {raw_id_commands} commands/s | {} | {:?} |",
        sync_name(sync),
        ratio_of(handler_rate, raw_commands),
        ratio_of(handler_rate, raw_id_commands),
        sizes
    );
    format!(
        "| {} | {concurrency} | {raw_messages} msgs/s | {commit_alone} msgs/s ({}) | {commit_expected_only} msgs/s ({}) | {commit_id_only} msgs/s ({}) | {appends_alone} commands/s = {} msgs/s | {} | {} |",
        sync_name(sync),
        ratio_of(commit_alone, raw_messages),
        ratio_of(commit_expected_only, raw_messages),
        ratio_of(commit_id_only, raw_messages),
        appends_alone * messages_per_command,
        ratio_of(appends_alone, raw_commands),
        ratio_of(handler_rate, appends_alone),
    )
}

async fn latency(sync: SyncMode, prior: u64, samples: u64) {
    let s = setup(sync).await;
    let stream_id = start_stream(&s.commands, Uuid::now_v7()).await;
    let fresh = Uuid::now_v7();
    fund(&s.commands, fresh, 1_000_000).await;
    let old = Uuid::now_v7();
    let started = Instant::now();
    prefill(&s, old, prior).await;
    let prefill_time = started.elapsed();
    // Warm up both paths once.
    latencies(&s, [fresh, old], stream_id, 50).await;
    let [a, b] = latencies(&s, [fresh, old], stream_id, samples).await;
    let (a50, a99, b50, b99) = (percentile(&a, 500), percentile(&a, 990), percentile(&b, 500), percentile(&b, 990));
    println!(
        "| {} | fresh account | {} µs | {} µs |\n| {} | account with {prior} prior commits (prefilled in {:?}) | {} µs | {} µs |",
        sync_name(sync),
        a50.as_micros(),
        a99.as_micros(),
        sync_name(sync),
        prefill_time,
        b50.as_micros(),
        b99.as_micros()
    );
    println!(
        "  p50 ratio {}.{:02}, p99 ratio {}.{:02} (goal: within 1.2)",
        b50.as_micros() / a50.as_micros().max(1),
        b50.as_micros() * 100 / a50.as_micros().max(1) % 100,
        b99.as_micros() / a99.as_micros().max(1),
        b99.as_micros() * 100 / a99.as_micros().max(1) % 100
    );
}

/// The hot host: `viewers` viewers send `gifts` gifts to one host, as fast as
/// they can (`rate_per_s` None) or paced to a total rate; returns the rate
/// the gifts were sent at.
async fn hot_host(sync: SyncMode, viewers: usize, gifts: u64, rate_per_s: Option<u64>) -> u64 {
    let s = setup(sync).await;
    let host = Uuid::now_v7();
    let stream_id = start_stream(&s.commands, host).await;
    let ids: Vec<Uuid> = (0..viewers).map(|_| Uuid::now_v7()).collect();
    for v in &ids {
        fund(&s.commands, *v, 1_000_000).await;
    }
    let reactor =
        GiftReactor::start(s.commands.clone(), s.log.client().clone(), s.log.stream_name(), ReactorConfig::default())
            .await
            .expect("reactor");
    let first = s.log.last_position().await.expect("position") + 1;
    let per_viewer = gifts / viewers as u64;
    // How far the reactor's checkpoint trails the log's head while gifts
    // arrive (sampled every 50 ms).
    let behind_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (log, stats, behind_max) = (s.log.clone(), reactor.stats().clone(), behind_max.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let Ok(head) = log.last_position().await else { continue };
                let behind = head.saturating_sub(stats.position.load(std::sync::atomic::Ordering::Relaxed));
                behind_max.fetch_max(behind, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (commands, v) = (s.commands.clone(), *v);
            // Paced: each viewer sends one gift every `viewers / rate`
            // seconds, the viewers spread evenly over that period.
            let period = rate_per_s.map(|r| Duration::from_micros(viewers as u64 * 1_000_000 / r.max(1)));
            let phase = period.map(|p| p * u32::try_from(i).unwrap_or(0) / u32::try_from(viewers).unwrap_or(1));
            tokio::spawn(async move {
                let start = tokio::time::Instant::now() + phase.unwrap_or_default();
                for g in 0..per_viewer {
                    if let Some(period) = period {
                        tokio::time::sleep_until(start + period * u32::try_from(g).unwrap_or(0)).await;
                    }
                    commands
                        .send_gift(&ctx(v, format!("h{g}")), v, stream_id, "rose".into(), 1, 10)
                        .await
                        .expect("gift");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let sent_in = started.elapsed();
    let total = per_viewer * viewers as u64;
    // Wait until the host has every gift.
    let deadline = Instant::now() + Duration::from_secs(120);
    while reactor.stats().gifts.load(std::sync::atomic::Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sampler.abort();
    let commits = reactor.stats().commits.load(std::sync::atomic::Ordering::Relaxed);
    reactor.shutdown().await;
    // Credit lag: from the server's timestamp of each gift to that of the
    // host commit that credited it.
    let mut sent_at = std::collections::HashMap::new();
    let mut lags = Vec::new();
    let mut stream = s.log.read_stream(first);
    while let Some(m) = stream.next().await {
        let m = m.expect("read");
        let Ok(e) = Envelope::decode(&m.payload) else { continue };
        match e.event {
            Event::GiftSent(_) => {
                sent_at.insert(m.position, m.timestamp);
            }
            Event::GiftsReceived(r) => {
                for g in r.gifts {
                    if let Some(t) = sent_at.get(&g.source_position) {
                        lags.push((m.timestamp - *t).to_std().unwrap_or_default());
                    }
                }
            }
            _ => {}
        }
    }
    lags.sort_unstable();
    println!(
        "| {} | {} | {viewers} viewers, {total} gifts in {:?} ({} gifts/s) | {commits} host commits ({} gifts per commit) | lag p50 {} ms, p99 {} ms, max {} ms | reactor checkpoint at most {} positions behind |",
        sync_name(sync),
        rate_per_s.map_or_else(|| "as fast as possible".to_string(), |r| format!("paced at {r} gifts/s")),
        sent_in,
        per_second(total, sent_in),
        total / commits.max(1),
        percentile(&lags, 500).as_millis(),
        percentile(&lags, 990).as_millis(),
        lags.last().copied().unwrap_or_default().as_millis(),
        behind_max.load(std::sync::atomic::Ordering::Relaxed)
    );
    per_second(total, sent_in)
}

/// `BENCH_SYNC=always|interval` runs one sync mode (default: both).
/// `VmRSS` and `VmHWM` of a process, in MiB (0 when unreadable).
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Messages the records stream holds now.
async fn records_held(log: &JetStreamLog) -> u64 {
    let Some(records) = log.records() else { return 0 };
    let context = async_nats::jetstream::new(log.client().clone());
    let mut stream = context.get_stream(records.stream_name()).await.expect("records stream");
    stream.info().await.expect("records stream info").state.messages
}

/// The nats-server's resident memory as gift commands accumulate: each gift
/// is a commit on the viewer's ledger and a command record on a subject of
/// its own in the records stream, kept `horizon_s`; sampled every `step`
/// commands.
async fn server_memory(total: u64, step: u64, horizon_s: u64) {
    const VIEWERS: u64 = 256;
    let s = setup_with(SyncMode::Interval, |mut config| {
        config.idempotency_horizon_ms = horizon_s * 1_000;
        config
    })
    .await;
    let pid = s.server.pid().expect("the server runs");
    let viewers: Vec<Uuid> = (0..VIEWERS).map(|_| Uuid::now_v7()).collect();
    for v in &viewers {
        fund(&s.commands, *v, 1_000_000_000_000).await;
    }
    let stream_id = start_stream(&s.commands, Uuid::now_v7()).await;
    let (rss, hwm) = memory_mib(pid);
    let held = records_held(&s.log).await;
    println!("| 0 | {} | {held} | {rss} | {hwm} | 0 |", s.log.last_position().await.expect("position"));
    let started = Instant::now();
    let steps = total.div_ceil(step.max(1));
    for round in 0..steps {
        let per_viewer = step / VIEWERS;
        let mut tasks = Vec::new();
        for v in viewers.iter().copied() {
            let commands = s.commands.clone();
            tasks.push(tokio::spawn(async move {
                for g in 0..per_viewer {
                    let key = format!("m{round}-{g}");
                    commands.send_gift(&ctx(v, key), v, stream_id, "rose".into(), 1, 10).await.expect("gift");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let done = (round + 1) * per_viewer * VIEWERS;
        let (rss, hwm) = memory_mib(pid);
        let position = s.log.last_position().await.expect("position");
        let held = records_held(&s.log).await;
        println!("| {done} | {position} | {held} | {rss} | {hwm} | {} |", started.elapsed().as_secs());
    }
}

fn syncs() -> Vec<SyncMode> {
    match std::env::var("BENCH_SYNC").as_deref() {
        Ok("always") => vec![SyncMode::Always],
        Ok("interval") => vec![SyncMode::Interval],
        _ => vec![SyncMode::Always, SyncMode::Interval],
    }
}

fn main() {
    let gifts = env_number("BENCH_GIFTS", 60_000);
    // Gifts in flight: 64 viewers at once, and as many as the raw
    // publish's window.
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, WINDOW]);
    let prior = env_number("BENCH_PRIOR_COMMITS", 1_000_000);
    let samples = env_number("BENCH_SAMPLES", 2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // `BENCH_ONLY=throughput|latency|hot` runs one part.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    runtime.block_on(async {
        if only == "memory" {
            let total = env_number("BENCH_MEMORY_COMMANDS", 3_000_000);
            let step = env_number("BENCH_MEMORY_STEP", 500_000);
            let horizon_s = env_number("BENCH_MEMORY_HORIZON_S", 60);
            println!(
                "## nats-server resident memory as gift commands accumulate (sync interval, 256 viewers, \
                 records kept {horizon_s} s)"
            );
            println!("| gift commands | ledger messages | records held | nats-server VmRSS MiB | VmHWM MiB | seconds |");
            println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
            server_memory(total, step, horizon_s).await;
            return;
        }
        if run("throughput") {
        println!("## gift commands through the handler vs raw JetStream publish ({gifts} gifts, raw window {WINDOW})");
        println!("| sync | gifts in flight | handler | raw publish of the same messages | ratio | raw, each with a Nats-Msg-Id | ratio | message sizes (commit, record) |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        let mut ceilings = Vec::new();
        for sync in syncs() {
            for concurrency in &concurrencies {
                ceilings.push(throughput(sync, gifts, *concurrency).await);
            }
        }
        println!("\n## the server's ceiling: the handler's appends alone, no reads, no sealing (same runs)");
        println!("| sync | in flight | raw publish ({WINDOW} in flight) | a commit alone, with Nats-Msg-Id and expected sequence (of raw) | expected sequence only | Nats-Msg-Id only | commit + record, as the handler appends | of raw | handler / its appends alone |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for row in ceilings {
            println!("{row}");
        }
        }
        if run("latency") {
        println!("\n## command latency, sequential gifts ({samples} samples each, the two accounts alternating)");
        println!("| sync | account | p50 | p99 |");
        println!("| --- | --- | --- | --- |");
        latency(SyncMode::Interval, prior, samples).await;
        }
        if run("hot") {
        println!("\n## hot host");
        // As fast as the viewers can, then paced at half that rate (the
        // latency of a system at saturation is its queue).
        for sync in syncs() {
            let burst = hot_host(sync, 1_000, 10_000, None).await;
            hot_host(sync, 1_000, 10_000, Some(burst / 2)).await;
        }
        }
    });
}
