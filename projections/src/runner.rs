//! The projector runner: reads the log in order from its checkpoints, in
//! bounded batches, and applies each batch with its checkpoints through the
//! read-store port.
//!
//! - **Pipelined**: while a batch is applied (on the store's thread), the
//!   next one is read and decoded (on another), so the two cores share the
//!   work. At most one batch is read ahead: memory is bounded by two batches
//!   whatever the log's length.
//! - **Active/standby**: only the holder of the lease applies; it renews the
//!   lease (compare and set) well before expiry, and a standby takes over
//!   within a lease's lifetime once the active one stops renewing.
//!   Correctness does not depend on the lease: a batch applied twice changes
//!   nothing. The lease keeps standbys from wasting work.
//! - **Versions**: a target newer than the active version builds side by
//!   side and is activated once caught up; a retired target stops its runner.
//! - **Shutdown**: stops between batches, never inside one.

mod batch;
mod wait;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ProjectionError;
use crate::change::ProjectedBatch;
use crate::model::{Projection, ProjectionVersion};
use crate::source::LogSource;
use crate::store::ReadStore;
pub use batch::project_messages;
use batch::read_and_project;
pub use wait::{wait_for_position, wait_for_store_position};

/// The largest batch a runner may be configured with: a batch is one store
/// transaction, and two are in memory at once.
pub const BATCH_SIZE_MAX: u32 = 10_000;
/// The default batch when catching up (a caught-up runner's batches are
/// whatever arrived since the last one): big enough that a transaction's
/// commit, which writes every page the batch touched, is amortised over
/// many events; small enough that it commits in well under a second.
pub const BATCH_SIZE_DEFAULT: u32 = 5_000;
/// The back-off after a transient failure (a store or log unreachable, an
/// election, a transaction conflict): from 50 ms, doubling, jittered, to
/// at most 5 s between tries, and at most `RETRY_CONSECUTIVE_MAX` tries in
/// a row (about 40 minutes at 5 s) before the runner stops with the last
/// error, which `/health` and `halobuzz-replay status` then show. Any
/// success starts the schedule again.
const RETRY_DELAY_MS_MIN: u64 = 50;
const RETRY_DELAY_MS_MAX: u64 = 5_000;
const RETRY_CONSECUTIVE_MAX: usize = 500;

fn retry_schedule() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(RETRY_DELAY_MS_MIN))
        .with_max_delay(Duration::from_millis(RETRY_DELAY_MS_MAX))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(RETRY_CONSECUTIVE_MAX)
        .build()
}

/// How a runner behaves.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The lease's key: runners with the same key are active/standby. Empty
    /// (the default): derived from the targets (`projector:users@1,...`), so
    /// that the runners of the same versions share a lease while a new
    /// version's runner builds beside the old version's, which keeps applying.
    pub lease_key: String,
    /// This instance (host name + process id, or a UUID).
    pub owner_id: String,
    /// The projections applied, each at its version; at most 255.
    pub targets: Vec<ProjectionVersion>,
    /// Events per batch (1..=`BATCH_SIZE_MAX`).
    pub batch_size_max: u32,
    /// How long to wait before looking for new events when caught up.
    pub idle_poll_ms: u64,
    /// How long a lease lasts without renewal. The lease is renewed between
    /// batches: keep it well above the longest batch's duration.
    pub lease_ttl_ms: u64,
    /// How often the active runner renews; well below the ttl.
    pub lease_renew_ms: u64,
    /// How often a standby tries to take the lease.
    pub standby_poll_ms: u64,
    /// Commit every batch with its checkpoint, instead of letting the store
    /// group the batches of a long catch-up into fewer commits (faster).
    /// A process killed mid-way then loses at most one batch of work.
    pub commit_every_batch: bool,
}

impl RunnerConfig {
    /// Every projection at the version this code builds, with defaults that
    /// let a standby take over within about 5 s.
    pub fn new(owner_id: impl Into<String>) -> RunnerConfig {
        RunnerConfig {
            lease_key: String::new(),
            owner_id: owner_id.into(),
            targets: ProjectionVersion::all_current(),
            batch_size_max: BATCH_SIZE_DEFAULT,
            idle_poll_ms: 50,
            lease_ttl_ms: 5_000,
            lease_renew_ms: 1_000,
            standby_poll_ms: 500,
            commit_every_batch: false,
        }
    }

    fn validate(&self) -> Result<(), ProjectionError> {
        if self.targets.is_empty() || self.targets.len() > usize::from(u8::MAX) {
            return Err(ProjectionError::InvalidInput("a runner has 1 to 255 targets".into()));
        }
        let mut projections: Vec<Projection> = self.targets.iter().map(|t| t.projection).collect();
        projections.sort_unstable();
        projections.dedup();
        if projections.len() != self.targets.len() {
            return Err(ProjectionError::InvalidInput("a runner has one version of each projection at most".into()));
        }
        if !(1..=BATCH_SIZE_MAX).contains(&self.batch_size_max) {
            return Err(ProjectionError::InvalidInput(format!("batch_size_max must be 1..={BATCH_SIZE_MAX}")));
        }
        if self.lease_renew_ms == 0 || self.lease_renew_ms.saturating_mul(2) > self.lease_ttl_ms {
            return Err(ProjectionError::InvalidInput("lease_renew_ms must be at most half lease_ttl_ms".into()));
        }
        Ok(())
    }
}

/// What a runner is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerRole {
    Starting,
    /// Another instance holds the lease.
    Standby,
    Active,
    Stopped,
}

/// A runner's progress, published after every batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerStatus {
    pub role: RunnerRole,
    /// The lowest committed checkpoint of the targets: every event up to it
    /// is applied and visible to queries.
    pub checkpoint: u64,
    /// The last position applied, perhaps in a transaction the store still
    /// holds open (see `ProjectedBatch::hold_open`).
    pub applied: u64,
    /// The log's last position when last looked at.
    pub last_position: u64,
    /// `last_position - checkpoint`.
    pub lag_events: u64,
    pub batches_applied: u64,
    pub events_read: u64,
    /// The last failure, transient (being retried) or not (the runner
    /// stopped on it); cleared by the next batch applied.
    pub last_error: Option<String>,
}

impl RunnerStatus {
    /// A runner that has read nothing yet.
    pub fn starting() -> RunnerStatus {
        RunnerStatus {
            role: RunnerRole::Starting,
            checkpoint: 0,
            applied: 0,
            last_position: 0,
            lag_events: 0,
            batches_applied: 0,
            events_read: 0,
            last_error: None,
        }
    }
}

/// Why `run` returned without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerExit {
    /// The shutdown signal fired; the runner stopped between batches.
    Shutdown,
    /// A target was replaced by a newer version.
    Retired,
}

/// A projector runner over a store and a log.
#[derive(Debug)]
pub struct Runner {
    store: Arc<dyn ReadStore>,
    source: Arc<dyn LogSource>,
    config: RunnerConfig,
    status: watch::Sender<RunnerStatus>,
}

/// A batch read and projected, not yet applied.
#[derive(Debug)]
struct Prepared {
    /// The events before `error`, if any; all of them otherwise.
    batch: ProjectedBatch,
    messages: u32,
    last_position: u64,
    /// An event that could not be read: the runner applies what precedes
    /// it, then stops there.
    error: Option<ProjectionError>,
}

enum Step {
    Applied,
    Idle,
}

/// State kept between batches: checkpoints and the batch read ahead.
struct Cursor {
    /// Applied (perhaps held open by the store, not yet committed).
    checkpoints: Vec<u64>,
    ahead: Option<JoinHandle<Result<Prepared, ProjectionError>>>,
    /// The last batch applied is held open: flush before idling or leaving.
    uncommitted: bool,
}

impl Cursor {
    fn discard_ahead(&mut self) {
        if let Some(handle) = self.ahead.take() {
            handle.abort();
        }
    }
}

fn now_ms() -> i64 {
    chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).timestamp_millis()
}

impl Runner {
    pub fn new(
        store: Arc<dyn ReadStore>,
        source: Arc<dyn LogSource>,
        config: RunnerConfig,
    ) -> Result<Runner, ProjectionError> {
        config.validate()?;
        let mut config = config;
        if config.lease_key.is_empty() {
            let targets: Vec<String> = config.targets.iter().map(|t| t.key()).collect();
            config.lease_key = format!("projector:{}", targets.join(","));
        }
        let (status, _) = watch::channel(RunnerStatus::starting());
        Ok(Runner { store, source, config, status })
    }

    /// Progress, for health, metrics and read-your-writes waits.
    pub fn status(&self) -> watch::Receiver<RunnerStatus> {
        self.status.subscribe()
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Runs until `shutdown` completes (then stops between batches and
    /// gives the lease up) or a target is retired. Transient store and log
    /// failures are retried with back-off; an unreadable event or a corrupt
    /// store stops the runner with the error.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<RunnerExit, ProjectionError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let config = &self.config;
        let mut cursor: Option<Cursor> = None;
        let mut renew_at_ms = 0i64;
        let mut retries = retry_schedule();
        let mut pending_activation: Vec<ProjectionVersion> = Vec::new();
        let exit = loop {
            if (&mut shutdown).now_or_never().is_some() {
                break Ok(RunnerExit::Shutdown);
            }
            let now = now_ms();
            if cursor.is_none() || now >= renew_at_ms {
                match self.store.acquire_lease(&config.lease_key, &config.owner_id, config.lease_ttl_ms, now).await {
                    Ok(true) => {
                        renew_at_ms = now.saturating_add(i64::try_from(config.lease_renew_ms).unwrap_or(i64::MAX));
                    }
                    Ok(false) => {
                        if let Some(mut c) = cursor.take() {
                            tracing::warn!(lease = %config.lease_key, "projector lease lost: standing by");
                            c.discard_ahead();
                        }
                        self.publish(|s| s.role = RunnerRole::Standby);
                        if wait_or_shutdown(&mut shutdown, config.standby_poll_ms).await {
                            break Ok(RunnerExit::Shutdown);
                        }
                        continue;
                    }
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "projector lease check failed");
                        if let Some(mut c) = cursor.take() {
                            c.discard_ahead();
                        }
                        match self.back_off(&mut retries, &mut shutdown, e).await {
                            Ok(()) => continue,
                            Err(exit) => break exit,
                        }
                    }
                    Err(e) => break self.stop_on(e),
                }
            }
            if cursor.is_none() {
                // Just became active (or recovered): the store's checkpoints
                // are the truth, whatever another instance did meanwhile.
                match self.start().await {
                    Ok((c, pending)) => {
                        tracing::info!(lease = %config.lease_key, owner = %config.owner_id, checkpoint = c.checkpoints.iter().min().copied().unwrap_or(0), "projector active");
                        cursor = Some(c);
                        pending_activation = pending;
                        self.publish(|s| s.role = RunnerRole::Active);
                    }
                    Err(ProjectionError::Retired { projection, version, active }) => {
                        tracing::info!(%projection, version, active, "projection version retired: runner stops");
                        break Ok(RunnerExit::Retired);
                    }
                    Err(e) if is_transient(&e) => {
                        tracing::warn!(error = %e, "projector start failed, retrying");
                        match self.back_off(&mut retries, &mut shutdown, e).await {
                            Ok(()) => continue,
                            Err(exit) => break exit,
                        }
                    }
                    Err(e) => break self.stop_on(e),
                }
            }
            let Some(c) = cursor.as_mut() else { continue };
            match self.step(c, true).await {
                Ok(Step::Applied) => retries = retry_schedule(),
                Ok(Step::Idle) => {
                    retries = retry_schedule();
                    if !pending_activation.is_empty()
                        && let Err(e) = self.activate_caught_up(&mut pending_activation).await
                    {
                        tracing::warn!(error = %e, "projection version switch failed, will retry");
                    }
                    if wait_or_shutdown(&mut shutdown, config.idle_poll_ms).await {
                        break Ok(RunnerExit::Shutdown);
                    }
                }
                Err(ProjectionError::Retired { projection, version, active }) => {
                    tracing::info!(%projection, version, active, "projection version retired: runner stops");
                    break Ok(RunnerExit::Retired);
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "projector batch failed, retrying from the checkpoints");
                    if let Some(mut c) = cursor.take() {
                        c.discard_ahead();
                    }
                    if let Err(exit) = self.back_off(&mut retries, &mut shutdown, e).await {
                        break exit;
                    }
                }
                Err(e) => break self.stop_on(e),
            }
        };
        if let Some(mut c) = cursor.take() {
            c.discard_ahead();
            if c.uncommitted
                && let Err(e) = self.store.flush().await
            {
                tracing::warn!(error = %e, "projector flush at shutdown failed");
            }
            // Let a standby take over now rather than when the lease expires.
            if let Err(e) = self.store.release_lease(&config.lease_key, &config.owner_id).await {
                tracing::warn!(error = %e, "projector lease release failed");
            }
        }
        self.publish(|s| s.role = RunnerRole::Stopped);
        exit
    }

    /// Applies batches until every target has reached the log's last
    /// position as it was when called; returns that position. Takes no lease:
    /// for rebuilds into a new version, tools and tests, where the caller
    /// makes sure no other runner applies the same targets.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let (mut cursor, _) = self.start().await?;
        let goal = self.source.last_position().await?;
        self.publish(|s| s.role = RunnerRole::Active);
        let result = loop {
            if cursor.checkpoints.iter().all(|c| *c >= goal) {
                if cursor.uncommitted {
                    if let Err(e) = self.store.flush().await {
                        break Err(e);
                    }
                    cursor.uncommitted = false;
                    self.publish(|s| {
                        s.checkpoint = goal;
                        s.lag_events = s.last_position.saturating_sub(goal);
                    });
                }
                break Ok(goal);
            }
            match self.step(&mut cursor, false).await {
                Ok(Step::Applied) => {}
                Ok(Step::Idle) => break Ok(cursor.checkpoints.iter().min().copied().unwrap_or(0)),
                Err(e) => break Err(e),
            }
        };
        cursor.discard_ahead();
        self.publish(|s| s.role = RunnerRole::Stopped);
        result
    }

    /// Builds `self`'s targets (newer versions) up to the log's end, then
    /// makes them the active versions: the atomic switch. The old versions
    /// keep serving until then; drop them with `ReadStore::drop_version`
    /// once their runners have stopped.
    pub async fn build_and_switch(&self) -> Result<u64, ProjectionError> {
        let position = self.catch_up().await?;
        let mut pending = self.config.targets.clone();
        self.activate_caught_up(&mut pending).await?;
        Ok(position)
    }

    async fn start(&self) -> Result<(Cursor, Vec<ProjectionVersion>), ProjectionError> {
        // Retired before anything is prepared: a retired version's
        // collections may be gone, or (MongoDB, version 1) be views of the
        // serving version, which cannot be written.
        let mut pending = Vec::new();
        for target in &self.config.targets {
            let active = self.store.active_version(target.projection).await?;
            if target.version < active {
                return Err(ProjectionError::Retired {
                    projection: target.projection.name().to_string(),
                    version: target.version,
                    active,
                });
            }
            if target.version > active {
                tracing::info!(%target, active, "building a new projection version side by side");
                pending.push(*target);
            }
        }
        self.store.prepare(&self.config.targets).await?;
        let stored = self.store.checkpoints().await?;
        let checkpoints: Vec<u64> = self
            .config
            .targets
            .iter()
            .map(|target| {
                stored
                    .iter()
                    .find(|c| c.projection == target.projection && c.version == target.version)
                    .map_or(0, |c| c.position)
            })
            .collect();
        let checkpoint = checkpoints.iter().min().copied().unwrap_or(0);
        self.publish(|s| {
            s.checkpoint = checkpoint;
            s.applied = checkpoint;
        });
        Ok((Cursor { checkpoints, ahead: None, uncommitted: false }, pending))
    }

    async fn activate_caught_up(&self, pending: &mut Vec<ProjectionVersion>) -> Result<(), ProjectionError> {
        let last = self.source.last_position().await?;
        let stored = self.store.checkpoints().await?;
        let mut remaining = Vec::new();
        for target in pending.drain(..) {
            let reached = stored
                .iter()
                .find(|c| c.projection == target.projection && c.version == target.version)
                .map_or(0, |c| c.position);
            if reached >= last {
                self.store.activate(target).await?;
                tracing::info!(%target, position = reached, "projection version activated");
            } else {
                remaining.push(target);
            }
        }
        *pending = remaining;
        Ok(())
    }

    /// After a transient failure: waits the schedule's next delay (its
    /// error recorded in the status), or stops with the error once the
    /// schedule is spent. `Err` is the runner's exit.
    async fn back_off(
        &self,
        retries: &mut backon::ExponentialBackoff,
        shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
        error: ProjectionError,
    ) -> Result<(), Result<RunnerExit, ProjectionError>> {
        let Some(delay) = retries.next() else {
            tracing::error!(error = %error, tries = RETRY_CONSECUTIVE_MAX, "projector gives up after transient failures");
            return Err(self.stop_on(error));
        };
        self.publish(|s| s.last_error = Some(error.to_string()));
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(RETRY_DELAY_MS_MAX);
        if wait_or_shutdown(shutdown, delay_ms).await {
            return Err(Ok(RunnerExit::Shutdown));
        }
        Ok(())
    }

    /// Stops on an error that retrying would not cure: logged, and kept in
    /// the status for `/health`.
    fn stop_on(&self, error: ProjectionError) -> Result<RunnerExit, ProjectionError> {
        tracing::error!(error = %error, "projector stopped");
        self.publish(|s| s.last_error = Some(error.to_string()));
        Err(error)
    }

    /// Applies `batch`; with `hold_lease`, renews the lease every
    /// `lease_renew_ms` while the store works, so that a long batch does
    /// not outlive it (a standby would take over mid-batch). A lease lost
    /// meanwhile abandons the batch (a transient error: the runner then
    /// finds itself standby).
    async fn apply_holding_lease(
        &self,
        batch: ProjectedBatch,
        hold_lease: bool,
    ) -> Result<crate::change::ApplyOutcome, ProjectionError> {
        let apply = self.store.apply(batch);
        if !hold_lease {
            return apply.await;
        }
        let config = &self.config;
        let renew = async {
            loop {
                tokio::time::sleep(Duration::from_millis(config.lease_renew_ms)).await;
                match self.store.acquire_lease(&config.lease_key, &config.owner_id, config.lease_ttl_ms, now_ms()).await
                {
                    Ok(true) => {}
                    Ok(false) => return ProjectionError::Store("projector lease lost during a batch".into()),
                    // Tried again at the next renewal; the lease lasts
                    // at least two renewals.
                    Err(e) => tracing::warn!(error = %e, "projector lease renewal during a batch failed"),
                }
            }
        };
        tokio::select! {
            outcome = apply => outcome,
            lost = renew => Err(lost),
        }
    }

    /// Reads, projects and applies one batch; starts reading the next one
    /// before applying this one.
    async fn step(&self, cursor: &mut Cursor, hold_lease: bool) -> Result<Step, ProjectionError> {
        let from = cursor.checkpoints.iter().min().copied().unwrap_or(0).saturating_add(1);
        let prepared = match cursor.ahead.take() {
            Some(handle) => {
                handle.await.map_err(|e| ProjectionError::Source(format!("read-ahead task failed: {e}")))??
            }
            None => {
                read_and_project(
                    self.source.clone(),
                    from,
                    cursor.checkpoints.clone(),
                    self.config.targets.clone(),
                    self.config.batch_size_max,
                )
                .await?
            }
        };
        if let Some(error) = prepared.error {
            cursor.discard_ahead();
            if prepared.batch.to_position >= from {
                self.store.apply(prepared.batch).await?;
            }
            return Err(error);
        }
        if prepared.messages == 0 {
            let checkpoint = from - 1;
            if cursor.uncommitted {
                self.store.flush().await?;
                cursor.uncommitted = false;
            }
            self.publish(|s| {
                s.last_position = prepared.last_position.max(checkpoint);
                s.checkpoint = checkpoint;
                s.applied = checkpoint;
                s.lag_events = s.last_position - checkpoint;
            });
            return Ok(Step::Idle);
        }
        let to = prepared.batch.to_position;
        let after: Vec<u64> = cursor.checkpoints.iter().map(|c| (*c).max(to)).collect();
        let full = prepared.messages >= self.config.batch_size_max;
        let mut prepared = prepared;
        // More is waiting: the store may commit this batch with the next.
        prepared.batch.hold_open = full && !self.config.commit_every_batch;
        prepared.batch.behind_events = prepared.last_position.saturating_sub(to);
        if full {
            cursor.ahead = Some(tokio::spawn(read_and_project(
                self.source.clone(),
                to.saturating_add(1),
                after.clone(),
                self.config.targets.clone(),
                self.config.batch_size_max,
            )));
        }
        let outcome = match self.apply_holding_lease(prepared.batch, hold_lease).await {
            Ok(outcome) => outcome,
            Err(e) => {
                cursor.discard_ahead();
                return Err(e);
            }
        };
        cursor.checkpoints = after;
        cursor.uncommitted = !outcome.committed;
        let messages = prepared.messages;
        self.publish(|s| {
            // Only what is committed is visible to queries.
            if outcome.committed {
                s.checkpoint = to;
            }
            s.applied = to;
            s.last_position = prepared.last_position.max(to);
            s.lag_events = s.last_position.saturating_sub(s.checkpoint);
            s.batches_applied += 1;
            s.events_read += u64::from(messages);
            s.last_error = None;
        });
        Ok(Step::Applied)
    }

    fn publish(&self, f: impl FnOnce(&mut RunnerStatus)) {
        self.status.send_modify(f);
    }
}

/// Worth retrying: the store or the log failed for now (unreachable, an
/// election, a conflict). A refused operation (`StoreRefused`), a corrupt
/// document or an unreadable event fails again, so it stops the runner.
fn is_transient(e: &ProjectionError) -> bool {
    matches!(e, ProjectionError::Store(_) | ProjectionError::Source(_))
}

/// Sleeps `ms`, or less when shutdown fires; true when it fired.
async fn wait_or_shutdown(shutdown: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>, ms: u64) -> bool {
    tokio::select! {
        _ = shutdown.as_mut() => true,
        _ = tokio::time::sleep(Duration::from_millis(ms)) => false,
    }
}
