//! `rebuild`: projections rebuilt from the log into a new version beside
//! the serving one, then the switch.
//!
//! - The new version is the next free number; its collections are the
//!   runbook's names suffixed `__vN` (see `projections::Collection`). The
//!   serving version keeps answering queries (and its projector keeps
//!   applying) until the switch, which is one atomic change of the store's
//!   registry of active versions.
//! - **Resumable**: a rebuild stopped anywhere leaves its version with a
//!   checkpoint; the next rebuild finds that inactive version and resumes
//!   it from the checkpoint. Every batch is applied with its checkpoint, and
//!   a batch applied again changes nothing, so the result is the same as
//!   one uninterrupted rebuild.
//! - `--until-position N` / `--until-time T` build the state as of that
//!   point and do not switch: serving an old state would go back in time.
//!   The version stays beside the serving one for inspection (`status`
//!   lists it), and `verify`-style comparisons.
//! - After the switch the previous version is dropped, unless `keep_old`.
//!
//! The tool appends nothing to the log.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use events_schema::Envelope;
use futures_util::future::BoxFuture;
use projections::{
    LogMessage, LogSource, Projection, ProjectionError, ProjectionVersion, ReadStore, Runner, RunnerConfig,
};
use serde::Serialize;

use crate::export::rate;
use crate::progress::Progress;

/// Versions from this number on are `verify`'s shadows, never served.
pub const SHADOW_VERSION_BASE: u32 = 1_000_000;
/// Messages read per round when looking for the position of a time.
const TIME_SCAN_BATCH_MESSAGES: u32 = 5_000;
/// Catch-up rounds before the switch: the first reaches the log's end as it
/// was, the next ones the events appended meanwhile.
const CATCH_UP_ROUNDS_MAX: u32 = 5;

/// Where a rebuild stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Position(u64),
    /// The last event whose `occurredAt` is at or before this time (the
    /// events' own time: an imported log has new server timestamps).
    Time(DateTime<Utc>),
}

#[derive(Debug, Clone)]
pub struct RebuildOptions {
    pub projections: Vec<Projection>,
    pub until: Option<Until>,
    pub batch_size_max: u32,
    /// Keep the previously serving version after the switch.
    pub keep_old: bool,
    /// Commit every batch (see `RunnerConfig::commit_every_batch`).
    pub commit_every_batch: bool,
}

impl RebuildOptions {
    pub fn all() -> RebuildOptions {
        RebuildOptions {
            projections: Projection::ALL.to_vec(),
            until: None,
            batch_size_max: projections::BATCH_SIZE_DEFAULT,
            keep_old: false,
            commit_every_batch: false,
        }
    }
}

/// One projection's rebuild.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetSummary {
    pub projection: String,
    /// The version serving before.
    pub previous_version: u32,
    pub version: u32,
    /// The checkpoint an interrupted rebuild of this version had reached.
    pub resumed_from: u64,
    pub position: u64,
    pub switched: bool,
    pub dropped_previous: bool,
}

/// What `rebuild` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebuildSummary {
    pub targets: Vec<TargetSummary>,
    /// Every target holds every event up to here.
    pub position: u64,
    /// Events read and applied by this run.
    pub events: u64,
    pub switched: bool,
    pub seconds: f64,
    pub events_per_second: u64,
}

/// A log source cut at a position.
#[derive(Debug)]
pub struct UntilSource {
    inner: Arc<dyn LogSource>,
    limit: u64,
}

impl UntilSource {
    pub fn new(inner: Arc<dyn LogSource>, limit: u64) -> UntilSource {
        UntilSource { inner, limit }
    }
}

impl LogSource for UntilSource {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        Box::pin(async move {
            if position > self.limit {
                return Ok(Vec::new());
            }
            let wanted =
                u32::try_from((self.limit - position.max(1) + 1).min(u64::from(max_messages))).unwrap_or(max_messages);
            let mut messages = self.inner.read_from(position, wanted).await?;
            messages.retain(|m| m.position <= self.limit);
            Ok(messages)
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(async move { Ok(self.inner.last_position().await?.min(self.limit)) })
    }
}

/// The position of the last event at or before `time`: the event before
/// the first one whose `occurredAt` is later (read in log order).
pub async fn position_at_time(source: &dyn LogSource, time: DateTime<Utc>) -> anyhow::Result<u64> {
    let end = source.last_position().await?;
    let mut next = 1u64;
    // Each round moves `next` on by at least one message, up to `end`.
    while next <= end {
        let batch = source.read_from(next, TIME_SCAN_BATCH_MESSAGES).await?;
        let Some(last) = batch.last() else { break };
        for message in &batch {
            let envelope = Envelope::decode(&message.payload)
                .map_err(|e| anyhow::anyhow!("position {}: unreadable event: {e}", message.position))?;
            if envelope.header.occurred_at > time {
                return Ok(message.position - 1);
            }
        }
        next = last.position + 1;
    }
    Ok(end)
}

/// Resolves `until` to a position.
pub async fn resolve_until(source: &dyn LogSource, until: Until) -> anyhow::Result<u64> {
    match until {
        Until::Position(position) => Ok(position),
        Until::Time(time) => position_at_time(source, time).await,
    }
}

/// A runner over `targets`, without a lease: the tool is the only writer of
/// versions that are not serving.
pub(crate) fn tool_runner(
    store: Arc<dyn ReadStore>,
    source: Arc<dyn LogSource>,
    targets: Vec<ProjectionVersion>,
    batch_size_max: u32,
    commit_every_batch: bool,
    purpose: &str,
) -> Result<Runner, ProjectionError> {
    let owner = format!("halobuzz-replay-{}", std::process::id());
    let keys: Vec<String> = targets.iter().map(|t| t.key()).collect();
    let config = RunnerConfig {
        lease_key: format!("replay-{purpose}:{}", keys.join(",")),
        targets,
        batch_size_max,
        commit_every_batch,
        ..RunnerConfig::new(owner)
    };
    Runner::new(store, source, config)
}

/// Runs `catch_up` with the progress shown from the runner's status.
pub(crate) async fn catch_up_with_progress(
    runner: &Runner,
    progress: &Progress,
    goal: u64,
) -> Result<u64, ProjectionError> {
    progress.set_total(goal);
    let mut status = runner.status();
    let catch_up = runner.catch_up();
    tokio::pin!(catch_up);
    loop {
        tokio::select! {
            done = &mut catch_up => return done,
            changed = status.changed() => {
                if changed.is_err() {
                    return catch_up.await;
                }
                let applied = status.borrow().applied;
                progress.set(applied);
            }
        }
    }
}

/// Rebuilds `options.projections` from `source` into `store`.
pub async fn rebuild(
    store: Arc<dyn ReadStore>,
    source: Arc<dyn LogSource>,
    options: &RebuildOptions,
    progress: &Progress,
) -> anyhow::Result<RebuildSummary> {
    let started = Instant::now();
    anyhow::ensure!(!options.projections.is_empty(), "no projection to rebuild");
    let limit = match options.until {
        Some(until) => Some(resolve_until(source.as_ref(), until).await?),
        None => None,
    };
    let source: Arc<dyn LogSource> = match limit {
        Some(limit) => Arc::new(UntilSource::new(source, limit)),
        None => source,
    };

    // Plan: one new (or resumed) version per projection.
    let checkpoints = store.checkpoints().await.context("reading the checkpoints")?;
    let mut planned = Vec::new();
    for projection in options.projections.iter().copied().collect::<BTreeSet<_>>() {
        let active = store.active_version(projection).await.context("reading the active versions")?;
        let floor = active.max(projection.code_version());
        let mut versions: Vec<_> =
            checkpoints.iter().filter(|c| c.projection == projection && c.version < SHADOW_VERSION_BASE).collect();
        versions.sort_by_key(|c| c.version);
        let leftover = versions.iter().rev().find(|c| !c.active && c.version > floor).copied();
        let (version, resumed_from) = match leftover {
            Some(c) if limit.is_some_and(|limit| c.position > limit) => {
                // Built past the wanted point: start it again.
                store.drop_version(ProjectionVersion::new(projection, c.version)).await?;
                (c.version, 0)
            }
            Some(c) => (c.version, c.position),
            None => {
                let highest = versions.last().map_or(0, |c| c.version);
                (floor.max(highest) + 1, 0)
            }
        };
        planned.push(TargetSummary {
            projection: projection.name().to_string(),
            previous_version: active,
            version,
            resumed_from,
            position: 0,
            switched: false,
            dropped_previous: false,
        });
    }
    let targets: Vec<ProjectionVersion> = planned
        .iter()
        .map(|t| Projection::parse(&t.projection).map(|p| ProjectionVersion::new(p, t.version)))
        .collect::<Option<_>>()
        .context("a planned projection has no name")?;
    let resumed_min = planned.iter().map(|t| t.resumed_from).min().unwrap_or(0);
    tracing::info!(?targets, resumed_min, ?limit, "rebuilding");

    let runner = tool_runner(
        store.clone(),
        source.clone(),
        targets.clone(),
        options.batch_size_max,
        options.commit_every_batch,
        "rebuild",
    )?;
    let mut position = 0;
    let rounds = if limit.is_some() { 1 } else { CATCH_UP_ROUNDS_MAX };
    for round in 0..rounds {
        let goal = source.last_position().await?;
        position = catch_up_with_progress(&runner, progress, goal).await.context("rebuilding")?;
        let now = source.last_position().await?;
        if now <= position || round + 1 == rounds {
            break;
        }
    }
    progress.finish();
    let switched = limit.is_none();
    if switched {
        // Events appended after the last round are applied by the serving
        // projector, which moves to the new version once it is active.
        for (target, summary) in targets.iter().zip(planned.iter_mut()) {
            store.activate(*target).await.with_context(|| format!("switching to {target}"))?;
            summary.switched = true;
        }
        for (target, summary) in targets.iter().zip(planned.iter_mut()) {
            if !options.keep_old && summary.previous_version != target.version {
                let old = ProjectionVersion::new(target.projection, summary.previous_version);
                match store.drop_version(old).await {
                    Ok(()) => summary.dropped_previous = true,
                    Err(e) => tracing::warn!(%old, error = %e, "could not drop the previous version"),
                }
            }
        }
    }
    for summary in &mut planned {
        summary.position = position;
    }
    let events = position.saturating_sub(resumed_min);
    Ok(RebuildSummary {
        targets: planned,
        position,
        events,
        switched,
        seconds: started.elapsed().as_secs_f64(),
        events_per_second: rate(events, started),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::testing::{Generator, GeneratorConfig, MemoryLog};

    #[tokio::test]
    async fn a_time_resolves_to_the_last_event_at_or_before_it() {
        let events: Vec<_> = Generator::log(GeneratorConfig::default(), 2_000).collect();
        let times: Vec<_> =
            events.iter().map(|p| Envelope::decode(p).map(|e| e.header.occurred_at).unwrap_or_default()).collect();
        let log = MemoryLog::from_events(events);
        let at = times[1_234];
        let expected = times.iter().position(|t| *t > at).map_or(2_000, |first_later| first_later as u64);
        assert!(expected >= 1_235);
        assert_eq!(position_at_time(&log, at).await.unwrap(), expected);
        assert_eq!(position_at_time(&log, times[0] - chrono::Duration::seconds(1)).await.unwrap(), 0);
        assert_eq!(position_at_time(&log, times[1_999] + chrono::Duration::days(1)).await.unwrap(), 2_000);
        let cut = UntilSource::new(Arc::new(log), 777);
        assert_eq!(cut.last_position().await.unwrap(), 777);
        let read = cut.read_from(700, 500).await.unwrap();
        assert_eq!((read.len(), read.last().map(|m| m.position)), (78, Some(777)));
    }
}

/// What `drop` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DropSummary {
    /// `projection@version`, each dropped.
    pub dropped: Vec<String>,
}

/// Drops `version` of each of `projections`: a version kept beside the
/// serving one (`rebuild --keep-old`), or a past state built with
/// `--until-*`. Every projection is checked first, so a refusal (the
/// serving version, or no such version) drops nothing.
pub async fn drop_versions(
    store: &dyn ReadStore,
    projections: &[Projection],
    version: u32,
) -> anyhow::Result<DropSummary> {
    anyhow::ensure!(!projections.is_empty(), "no projection to drop");
    let checkpoints = store.checkpoints().await.context("reading the checkpoints")?;
    let mut targets = Vec::with_capacity(projections.len());
    for projection in projections {
        let target = ProjectionVersion::new(*projection, version);
        let active = store.active_version(*projection).await.context("reading the serving version")?;
        anyhow::ensure!(active != version, "{target} serves queries: it cannot be dropped");
        anyhow::ensure!(
            checkpoints.iter().any(|c| c.projection == *projection && c.version == version),
            "{target} does not exist (`status` lists the versions)"
        );
        targets.push(target);
    }
    let mut dropped = Vec::with_capacity(targets.len());
    for target in targets {
        store.drop_version(target).await.with_context(|| format!("dropping {target}"))?;
        dropped.push(target.to_string());
    }
    Ok(DropSummary { dropped })
}
