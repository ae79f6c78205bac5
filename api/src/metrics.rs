//! Hand-rolled Prometheus metrics: request counts and latency histograms by
//! route and status, event-log appends and conflicts (through
//! [`MeteredLog`], a decorator of the event-log port), command outcomes, and
//! the workers' gauges, read at scrape time.
//!
//! Counters are atomics; the per-series maps are behind a read-mostly lock
//! and bounded (`SERIES_MAX`): routes are matched paths, never raw URLs, so
//! the label space is small by construction, and the bound guards it anyway.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use commands::log::{AppendRequest, Appended, EventLog, LogError, StoredMessage};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// The same bounds in microseconds, for integer comparisons on the hot path.
const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
/// Most label combinations kept per metric; past it, new ones are folded
/// into an `other` series.
const SERIES_MAX: usize = 1_000;

#[derive(Debug, Default)]
struct Histogram {
    /// Non-cumulative counts per bucket, then the `+Inf` bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = LATENCY_BUCKETS_US.iter().position(|b| us <= *b).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// A request series: method, matched route, status.
type RequestKey = (String, String, u16);

/// Every counter of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: RwLock<HashMap<RequestKey, Arc<Histogram>>>,
    /// Commands by name and outcome (`accepted`, `repeated`, or the error code).
    commands: RwLock<HashMap<(String, String), Arc<AtomicU64>>>,
    pub appends_ok: AtomicU64,
    pub append_messages: AtomicU64,
    pub append_conflicts: AtomicU64,
    pub append_duplicates: AtomicU64,
    pub append_unavailable: AtomicU64,
    pub append_errors: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// Gauges read at scrape time from the workers and dependencies.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub uptime_s: u64,
    pub log_last_position: Option<u64>,
    pub projector_checkpoint: Option<u64>,
    pub projector_lag_events: Option<u64>,
    pub projector_batches: Option<u64>,
    pub reactor_commits: Option<u64>,
    pub reactor_gifts: Option<u64>,
    pub reactor_position: Option<u64>,
    pub reactor_active: Option<u64>,
    pub resident_bytes: Option<u64>,
    pub resident_peak_bytes: Option<u64>,
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method.to_string(), route.to_string(), status);
        let found = self.requests.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let histogram = match found {
            Some(h) => h,
            None => {
                let mut map = self.requests.write().unwrap_or_else(PoisonError::into_inner);
                let key = if map.len() >= SERIES_MAX && !map.contains_key(&key) {
                    ("other".to_string(), "other".to_string(), 0)
                } else {
                    key
                };
                map.entry(key).or_default().clone()
            }
        };
        histogram.observe(elapsed);
    }

    pub fn count_command(&self, command: &'static str, outcome: &str) {
        let key = (command.to_string(), outcome.to_string());
        let found = self.commands.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let counter = match found {
            Some(c) => c,
            None => {
                let mut map = self.commands.write().unwrap_or_else(PoisonError::into_inner);
                let key = if map.len() >= SERIES_MAX && !map.contains_key(&key) {
                    ("other".to_string(), "other".to_string())
                } else {
                    key
                };
                map.entry(key).or_default().clone()
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP http_requests_total HTTP requests answered, by method, matched route and status.\n");
        out.push_str("# TYPE http_requests_total counter\n");
        let requests = self.requests.read().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<&RequestKey> = requests.keys().collect();
        keys.sort();
        for key in &keys {
            let (method, route, status) = key;
            let count = requests[*key].count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        out.push_str("# HELP http_request_duration_seconds Time to answer HTTP requests.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for key in &keys {
            let (method, route, status) = key;
            let h = &requests[*key];
            let labels = format!("method=\"{method}\",route=\"{}\",status=\"{status}\"", escape(route));
            let mut cumulative = 0u64;
            for (i, bound) in LATENCY_BUCKETS_S.iter().enumerate() {
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
            }
            cumulative += h.buckets[LATENCY_BUCKETS_S.len()].load(Ordering::Relaxed);
            let _ = writeln!(out, "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            let sum_us = h.sum_us.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}.{:06}",
                sum_us / 1_000_000,
                sum_us % 1_000_000
            );
            let _ =
                writeln!(out, "http_request_duration_seconds_count{{{labels}}} {}", h.count.load(Ordering::Relaxed));
        }
        drop(requests);

        out.push_str("# HELP halobuzz_commands_total Commands handled, by command and outcome (accepted, repeated, or the error code).\n");
        out.push_str("# TYPE halobuzz_commands_total counter\n");
        let commands = self.commands.read().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<&(String, String)> = commands.keys().collect();
        keys.sort();
        for key in keys {
            let _ = writeln!(
                out,
                "halobuzz_commands_total{{command=\"{}\",outcome=\"{}\"}} {}",
                key.0,
                escape(&key.1),
                commands[key].load(Ordering::Relaxed)
            );
        }
        drop(commands);

        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: Option<u64>| {
            if let Some(value) = value {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
            }
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "halobuzz_log_appends_total",
            "Appends acknowledged by the event log (single or atomic batch).",
            load(&self.appends_ok),
        );
        counter(
            &mut out,
            "halobuzz_log_appended_messages_total",
            "Messages stored by acknowledged appends.",
            load(&self.append_messages),
        );
        counter(
            &mut out,
            "halobuzz_log_append_conflicts_total",
            "Appends refused by optimistic concurrency (then decided again).",
            load(&self.append_conflicts),
        );
        counter(
            &mut out,
            "halobuzz_log_append_duplicates_total",
            "Appends recognised as duplicates of stored messages.",
            load(&self.append_duplicates),
        );
        counter(
            &mut out,
            "halobuzz_log_append_unavailable_total",
            "Appends that failed because the log was unavailable.",
            load(&self.append_unavailable),
        );
        counter(
            &mut out,
            "halobuzz_log_append_errors_total",
            "Appends that failed otherwise.",
            load(&self.append_errors),
        );
        counter(
            &mut out,
            "halobuzz_rate_limited_total",
            "Requests refused by the rate limiter.",
            load(&self.rate_limited),
        );
        gauge(&mut out, "halobuzz_uptime_seconds", "Seconds since the process started.", Some(gauges.uptime_s));
        gauge(
            &mut out,
            "halobuzz_log_last_position",
            "Position of the last message in the event log.",
            gauges.log_last_position,
        );
        gauge(
            &mut out,
            "halobuzz_projector_checkpoint_position",
            "Log position every read model has reached.",
            gauges.projector_checkpoint,
        );
        gauge(
            &mut out,
            "halobuzz_projector_lag_events",
            "Events in the log not yet in the read models.",
            gauges.projector_lag_events,
        );
        gauge(
            &mut out,
            "halobuzz_projector_batches_total",
            "Batches applied by this process's projector.",
            gauges.projector_batches,
        );
        gauge(
            &mut out,
            "halobuzz_reactor_commits_total",
            "Host credit commits appended by this process's gift reactor.",
            gauges.reactor_commits,
        );
        gauge(
            &mut out,
            "halobuzz_reactor_gifts_total",
            "Gifts credited by this process's gift reactor.",
            gauges.reactor_gifts,
        );
        gauge(
            &mut out,
            "halobuzz_reactor_checkpoint_position",
            "Log position up to which every gift is credited.",
            gauges.reactor_position,
        );
        gauge(
            &mut out,
            "halobuzz_reactor_active",
            "1 while this process's gift reactor holds the lease.",
            gauges.reactor_active,
        );
        gauge(&mut out, "process_resident_memory_bytes", "Resident memory (VmRSS).", gauges.resident_bytes);
        gauge(
            &mut out,
            "process_resident_memory_peak_bytes",
            "Peak resident memory (VmHWM).",
            gauges.resident_peak_bytes,
        );
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `(VmRSS, VmHWM)` in bytes, from `/proc/self/status` (Linux).
pub fn resident_memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The event-log port with its appends counted. Reads pass through.
#[derive(Debug)]
pub struct MeteredLog {
    inner: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
}

impl MeteredLog {
    pub fn new(inner: Arc<dyn EventLog>, metrics: Arc<Metrics>) -> MeteredLog {
        MeteredLog { inner, metrics }
    }

    fn count_error(&self, e: &LogError) {
        let counter = match e {
            LogError::Conflict { .. } => &self.metrics.append_conflicts,
            LogError::Duplicate { .. } => &self.metrics.append_duplicates,
            LogError::Unavailable(_) => &self.metrics.append_unavailable,
            _ => &self.metrics.append_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl EventLog for MeteredLog {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>> {
        Box::pin(async move {
            let result = self.inner.append(request).await;
            match &result {
                Ok(_) => {
                    self.metrics.appends_ok.fetch_add(1, Ordering::Relaxed);
                    self.metrics.append_messages.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.count_error(e),
            }
            result
        })
    }

    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            let result = self.inner.append_atomic(requests).await;
            match &result {
                Ok(positions) => {
                    self.metrics.appends_ok.fetch_add(1, Ordering::Relaxed);
                    self.metrics.append_messages.fetch_add(positions.len() as u64, Ordering::Relaxed);
                }
                Err(e) => self.count_error(e),
            }
            result
        })
    }

    fn last_on_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Option<StoredMessage>, LogError>> {
        self.inner.last_on_subject(subject)
    }

    fn last_on_subjects<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        self.inner.last_on_subjects(subjects)
    }

    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<StoredMessage>, LogError>> {
        self.inner.read_from(position, max_messages)
    }

    fn read_subject_from<'a>(
        &'a self,
        subject: &'a str,
        position: u64,
        max_messages: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, LogError>> {
        self.inner.read_subject_from(subject, position, max_messages)
    }

    fn read_stream(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        self.inner.read_stream(position)
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, LogError>> {
        self.inner.last_position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_in_the_exposition() {
        let m = Metrics::default();
        m.observe_request("POST", "/api/v1/streams/{id}/gifts", 201, Duration::from_micros(700));
        m.observe_request("POST", "/api/v1/streams/{id}/gifts", 201, Duration::from_millis(20));
        m.count_command("send_gift", "accepted");
        let text = m.render(&Gauges::default());
        assert!(
            text.contains("http_requests_total{method=\"POST\",route=\"/api/v1/streams/{id}/gifts\",status=\"201\"} 2")
        );
        assert!(text.contains("le=\"0.001\"} 1"));
        assert!(text.contains("le=\"0.025\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("halobuzz_commands_total{command=\"send_gift\",outcome=\"accepted\"} 1"));
    }
}
