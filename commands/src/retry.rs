//! The one retry schedule of the crate: bounded, jittered exponential
//! back-off, from the `backon` crate. Every retry loop (the log adapter's
//! unknown outcomes, the handler's lost races, the reactor's failed
//! credits, the managed server's restarts) takes its pauses from a
//! [`RetrySchedule`] that states its own limits: either through backon's
//! `Retryable` (a schedule is a `BackoffBuilder`), or, where the loop
//! decides more than "retry or not", by taking [`RetrySchedule::delays`]
//! one at a time.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The limits of one retry loop: at most `retries_max` pauses, each drawn
/// from `[cap / 2, cap]` ("equal jitter"), where `cap` starts at
/// `delay_ms_first` and doubles after each retry up to `delay_ms_max`.
/// The fixed half makes a series of retries span a known time even when
/// every try fails at once (a leader election, a server restarting); the
/// random half spreads concurrent writers apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Cap of the first pause.
    pub delay_ms_first: u64,
    /// Cap of every pause.
    pub delay_ms_max: u64,
    /// Pauses, so tries after the first, at most.
    pub retries_max: u32,
}

impl RetrySchedule {
    /// The pauses, in order: `retries_max` of them, then `None`.
    pub fn delays(&self) -> ExponentialBackoff {
        // backon's jitter adds up to 100% of the current delay, so half
        // caps give pauses in [cap / 2, cap].
        let first = Duration::from_micros(self.delay_ms_first.max(1).saturating_mul(500));
        let max = Duration::from_micros(self.delay_ms_max.max(self.delay_ms_first).max(1).saturating_mul(500));
        ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(usize::try_from(self.retries_max).unwrap_or(usize::MAX))
            .build()
    }

    /// The longest the pauses can add up to: a bound for callers that must
    /// say how long a series of retries may take.
    pub fn total_delay_ms_max(&self) -> u64 {
        let mut cap = self.delay_ms_first.max(1);
        let mut total: u64 = 0;
        for _ in 0..self.retries_max {
            total = total.saturating_add(cap.min(self.delay_ms_max.max(1)));
            cap = cap.saturating_mul(2);
        }
        total
    }
}

impl BackoffBuilder for RetrySchedule {
    type Backoff = ExponentialBackoff;

    fn build(self) -> ExponentialBackoff {
        self.delays()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_are_bounded_in_number_and_length() {
        let schedule = RetrySchedule { delay_ms_first: 100, delay_ms_max: 2_000, retries_max: 6 };
        let delays: Vec<Duration> = schedule.delays().collect();
        assert_eq!(delays.len(), 6);
        let caps_ms = [100u64, 200, 400, 800, 1_600, 2_000];
        for (delay, cap_ms) in delays.iter().zip(caps_ms) {
            let delay_us = delay.as_micros();
            assert!(delay_us >= u128::from(cap_ms) * 500, "{delay:?} below half of {cap_ms} ms");
            assert!(delay_us <= u128::from(cap_ms) * 1_000, "{delay:?} above {cap_ms} ms");
        }
        assert_eq!(schedule.total_delay_ms_max(), 100 + 200 + 400 + 800 + 1_600 + 2_000);
    }

    #[test]
    fn pauses_are_jittered() {
        let schedule = RetrySchedule { delay_ms_first: 1_000, delay_ms_max: 1_000, retries_max: 32 };
        let delays: std::collections::HashSet<Duration> = schedule.delays().collect();
        assert!(delays.len() > 1, "every pause the same: {delays:?}");
    }

    #[test]
    fn no_retries_means_no_pause() {
        let schedule = RetrySchedule { delay_ms_first: 10, delay_ms_max: 10, retries_max: 0 };
        assert_eq!(schedule.delays().count(), 0);
    }
}
