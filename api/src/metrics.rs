//! Prometheus metrics, exposed in the text format 0.0.4 through
//! `prometheus-client` (the Prometheus project's own Rust client): request
//! counts and latency histograms by route and status, event-log appends and
//! conflicts (through [`MeteredLog`], a decorator of the event-log port),
//! command outcomes, and the workers' gauges, read at scrape time.
//!
//! Hot path: a request costs two look-ups in read-locked maps (no global
//! mutex) and the update of its own series. Label values are bounded by
//! construction: methods are folded into a fixed set, routes are matched
//! paths (never raw URLs), commands and outcomes are static names; the
//! request series are capped anyway (`SERIES_MAX`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use commands::log::{AppendRequest, AppendWatch, Appended, EventLog, LogError, Watched};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Most request series (method, route, status) kept; past it, new ones are
/// folded into an `other` series.
const SERIES_MAX: usize = 1_000;

/// A request series: method, matched route, status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// A command series: the command and its outcome (`accepted`, `repeated`,
/// or the error code).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_S)
}

/// Every counter of the process, registered once in `registry`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_durations: Family<RequestLabels, Histogram, fn() -> Histogram>,
    requests_in_flight: Gauge,
    /// Request series created so far, for `SERIES_MAX`.
    request_series: AtomicUsize,
    commands: Family<CommandLabels, Counter>,
    pub appends_ok: Counter,
    pub append_messages: Counter,
    pub append_conflicts: Counter,
    pub append_duplicates: Counter,
    pub append_unavailable: Counter,
    pub append_errors: Counter,
    pub rate_limited: Counter,
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

impl Gauges {
    /// Name, help and value of each gauge; absent ones are not exposed.
    fn series(&self) -> [(&'static str, &'static str, Option<u64>); 11] {
        [
            ("halobuzz_uptime_seconds", "Seconds since the process started", Some(self.uptime_s)),
            ("halobuzz_log_last_position", "Position of the last message in the event log", self.log_last_position),
            (
                "halobuzz_projector_checkpoint_position",
                "Log position every read model has reached",
                self.projector_checkpoint,
            ),
            (
                "halobuzz_projector_lag_events",
                "Events in the log not yet in the read models",
                self.projector_lag_events,
            ),
            ("halobuzz_projector_batches_total", "Batches applied by this process's projector", self.projector_batches),
            (
                "halobuzz_reactor_commits_total",
                "Host credit commits appended by this process's gift reactor",
                self.reactor_commits,
            ),
            ("halobuzz_reactor_gifts_total", "Gifts credited by this process's gift reactor", self.reactor_gifts),
            (
                "halobuzz_reactor_checkpoint_position",
                "Log position up to which every gift is credited",
                self.reactor_position,
            ),
            ("halobuzz_reactor_active", "1 while this process's gift reactor holds the lease", self.reactor_active),
            ("process_resident_memory_bytes", "Resident memory (VmRSS)", self.resident_bytes),
            ("process_resident_memory_peak_bytes", "Peak resident memory (VmHWM)", self.resident_peak_bytes),
        ]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        // Help texts without their final period: the registry adds it.
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route and status",
            requests.clone(),
        );
        let request_durations = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register("http_request_duration_seconds", "Time to answer HTTP requests", request_durations.clone());
        let requests_in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "HTTP requests being answered", requests_in_flight.clone());
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "halobuzz_commands",
            "Commands handled, by command and outcome (accepted, repeated, or the error code)",
            commands.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let appends_ok =
            counter("halobuzz_log_appends", "Appends acknowledged by the event log (single or atomic batch)");
        let append_messages = counter("halobuzz_log_appended_messages", "Messages stored by acknowledged appends");
        let append_conflicts =
            counter("halobuzz_log_append_conflicts", "Appends refused by optimistic concurrency (then decided again)");
        let append_duplicates =
            counter("halobuzz_log_append_duplicates", "Appends recognised as duplicates of stored messages");
        let append_unavailable =
            counter("halobuzz_log_append_unavailable", "Appends that failed because the log was unavailable");
        let append_errors = counter("halobuzz_log_append_errors", "Appends that failed otherwise");
        let rate_limited = counter("halobuzz_rate_limited", "Requests refused by the rate limiter");
        Metrics {
            registry,
            requests,
            request_durations,
            requests_in_flight,
            request_series: AtomicUsize::new(0),
            commands,
            appends_ok,
            append_messages,
            append_conflicts,
            append_duplicates,
            append_unavailable,
            append_errors,
            rate_limited,
        }
    }
}

/// The method as a label: the standard ones, else `other` (a client may send
/// any token as a method).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.into_iter().find(|known| *known == method).unwrap_or("other")
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut labels = RequestLabels { method: method_label(method), route: route.to_string(), status };
        if self.requests.get(&labels).is_none() {
            // A new series (or one that two requests create at once: then
            // counted twice, which only makes the bound stricter).
            if self.request_series.fetch_add(1, Ordering::Relaxed) >= SERIES_MAX {
                self.request_series.fetch_sub(1, Ordering::Relaxed);
                labels = RequestLabels { method: "other", route: "other".to_string(), status: 0 };
            }
        }
        self.requests.get_or_create(&labels).inc();
        self.request_durations.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Counts a request in flight until the guard is dropped (answered or
    /// cancelled).
    pub fn request_in_flight(&self) -> InFlight {
        self.requests_in_flight.inc();
        InFlight(self.requests_in_flight.clone())
    }

    pub fn count_command(&self, command: &'static str, outcome: &'static str) {
        self.commands.get_or_create(&CommandLabels { command, outcome }).inc();
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut scrape = Registry::default();
        for (name, help, value) in gauges.series() {
            if let Some(value) = value {
                scrape.register(name, help, ConstGauge::new(value));
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &scrape);
        out
    }
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `(VmRSS, VmHWM)` in bytes, from `/proc/self/status` (Linux). Kept by
/// hand: prometheus-client has no process collector, and these 12 lines
/// read the two fields the runbook watches without another dependency.
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

/// The event-log port with its appends counted (a [`Watched`] log; reads
/// pass through).
pub type MeteredLog = Watched<AppendCounts>;

/// Counts each append's outcome into the metrics.
#[derive(Debug)]
pub struct AppendCounts(pub Arc<Metrics>);

impl AppendCounts {
    fn count_error(&self, e: &LogError) {
        let counter = match e {
            LogError::Conflict { .. } => &self.0.append_conflicts,
            LogError::Duplicate { .. } => &self.0.append_duplicates,
            LogError::Unavailable(_) => &self.0.append_unavailable,
            _ => &self.0.append_errors,
        };
        counter.inc();
    }
}

impl AppendWatch for AppendCounts {
    type Kept = ();

    fn before_append(&self, _request: &AppendRequest) {}

    fn after_append<'a>(
        &'a self,
        _inner: &'a dyn EventLog,
        _kept: (),
        result: &'a Result<Appended, LogError>,
    ) -> impl Future<Output = ()> + Send + 'a {
        match result {
            Ok(_) => {
                self.0.appends_ok.inc();
                self.0.append_messages.inc();
            }
            Err(e) => self.count_error(e),
        }
        std::future::ready(())
    }

    fn after_append_atomic(&self, messages: usize, result: &Result<Vec<u64>, LogError>) {
        match result {
            Ok(_) => {
                self.0.appends_ok.inc();
                self.0.append_messages.inc_by(messages as u64);
            }
            Err(e) => self.count_error(e),
        }
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

    /// Every metric of the exposition keeps the name and type it had when
    /// the text was written by hand, and every line is a comment or a sample.
    #[test]
    fn the_exposition_keeps_its_names_and_types() {
        let m = Metrics::default();
        m.observe_request("GET", "/health", 200, Duration::from_micros(10));
        m.count_command("register", "accepted");
        m.appends_ok.inc();
        let gauges = Gauges {
            uptime_s: 3,
            log_last_position: Some(7),
            projector_checkpoint: Some(6),
            projector_lag_events: Some(1),
            projector_batches: Some(2),
            reactor_commits: Some(0),
            reactor_gifts: Some(0),
            reactor_position: Some(5),
            reactor_active: Some(1),
            resident_bytes: Some(1024),
            resident_peak_bytes: Some(2048),
        };
        let text = m.render(&gauges);
        let expected_types = [
            ("http_requests_total", "counter"),
            ("http_request_duration_seconds", "histogram"),
            ("http_requests_in_flight", "gauge"),
            ("halobuzz_commands_total", "counter"),
            ("halobuzz_log_appends_total", "counter"),
            ("halobuzz_log_appended_messages_total", "counter"),
            ("halobuzz_log_append_conflicts_total", "counter"),
            ("halobuzz_log_append_duplicates_total", "counter"),
            ("halobuzz_log_append_unavailable_total", "counter"),
            ("halobuzz_log_append_errors_total", "counter"),
            ("halobuzz_rate_limited_total", "counter"),
            ("halobuzz_uptime_seconds", "gauge"),
            ("halobuzz_log_last_position", "gauge"),
            ("halobuzz_projector_checkpoint_position", "gauge"),
            ("halobuzz_projector_lag_events", "gauge"),
            ("halobuzz_projector_batches_total", "gauge"),
            ("halobuzz_reactor_commits_total", "gauge"),
            ("halobuzz_reactor_gifts_total", "gauge"),
            ("halobuzz_reactor_checkpoint_position", "gauge"),
            ("halobuzz_reactor_active", "gauge"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_resident_memory_peak_bytes", "gauge"),
        ];
        let types: Vec<(&str, &str)> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_once(' ')).collect();
        let mut sorted_types = types.clone();
        sorted_types.sort_unstable();
        let mut sorted_expected = expected_types.to_vec();
        sorted_expected.sort_unstable();
        assert_eq!(sorted_types, sorted_expected, "{text}");
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                assert!(!line.ends_with(".."), "{line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line: series and value");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                types.iter().any(|(family, _)| name == *family
                    || name.strip_prefix(*family).is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                "{line}"
            );
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(text.contains("halobuzz_uptime_seconds 3\n"), "{text}");
        assert!(text.contains("halobuzz_log_appends_total 1\n"), "{text}");
        assert!(text.contains("# HELP halobuzz_rate_limited_total Requests refused by the rate limiter.\n"), "{text}");
    }

    #[test]
    fn absent_gauges_are_not_exposed_and_odd_methods_are_folded() {
        let m = Metrics::default();
        m.observe_request("BREW", "unmatched", 405, Duration::from_micros(10));
        let text = m.render(&Gauges::default());
        assert!(!text.contains("halobuzz_reactor_active"), "{text}");
        assert!(text.contains("http_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 1"), "{text}");
    }
}
