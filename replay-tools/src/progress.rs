//! Progress of a long operation: a bar with rate and ETA when stderr is a
//! terminal (indicatif), a plain line every few seconds otherwise, nothing
//! at all for library callers and tests.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How often the plain-line reporter writes a line, at most.
const PLAIN_LINE_INTERVAL_MS: u64 = 5_000;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Nothing (tests, `--json` pipelines still get the plain lines on
    /// stderr unless `--quiet`).
    Hidden,
    /// Plain lines on stderr.
    Lines,
    /// An indicatif bar on stderr.
    Bar,
}

impl ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    pub fn detect() -> ProgressMode {
        if std::io::stderr().is_terminal() { ProgressMode::Bar } else { ProgressMode::Lines }
    }
}

/// One operation's progress, in events.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    label: String,
    bar: Option<ProgressBar>,
    plain: Mutex<PlainState>,
}

#[derive(Debug)]
struct PlainState {
    started: Instant,
    last_line: Instant,
    total: u64,
    position: u64,
}

impl Progress {
    pub fn new(mode: ProgressMode, label: &str, total: u64) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{msg:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} events {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            mode,
            label: label.to_string(),
            bar,
            plain: Mutex::new(PlainState { started: now, last_line: now, total, position: 0 }),
        }
    }

    /// A progress that shows nothing.
    pub fn hidden() -> Progress {
        Progress::new(ProgressMode::Hidden, "", 0)
    }

    pub fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
        self.plain.lock().unwrap_or_else(std::sync::PoisonError::into_inner).total = total;
    }

    /// Sets the count of events done.
    pub fn set(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            return;
        }
        let mut state = self.plain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.position = position;
        if self.mode == ProgressMode::Lines
            && state.last_line.elapsed() >= Duration::from_millis(PLAIN_LINE_INTERVAL_MS)
        {
            state.last_line = Instant::now();
            eprintln!("{}", plain_line(&self.label, &state));
        }
    }

    pub fn inc(&self, delta: u64) {
        let position = self.plain.lock().unwrap_or_else(std::sync::PoisonError::into_inner).position + delta;
        self.set(position);
    }

    /// Ends the display (the bar stays on screen with its last figures).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        } else if self.mode == ProgressMode::Lines {
            let state = self.plain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            eprintln!("{} (done)", plain_line(&self.label, &state));
        }
    }
}

fn plain_line(label: &str, state: &PlainState) -> String {
    let seconds = state.started.elapsed().as_millis().max(1);
    let rate = u128::from(state.position) * 1_000 / seconds;
    let eta = match (rate, state.total.saturating_sub(state.position)) {
        (0, _) => "?".to_string(),
        (rate, left) => format!("{}s", u128::from(left) / rate),
    };
    format!("{label}: {}/{} events, {rate} events/s, eta {eta}", state.position, state.total)
}
