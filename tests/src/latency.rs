//! Latency figures for the benchmarks.

use std::time::Duration;

/// The `per_mille`-th latency of `sorted` (500: the median), zero if empty.
pub fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

/// A duration in milliseconds (a figure for a report, never money).
#[allow(clippy::float_arithmetic)]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
