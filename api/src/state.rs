//! What every handler reaches: the command side, the read store, the keys,
//! the metrics and the workers' progress. Nothing here is state of the API's
//! own: the log and the read store hold everything; the rest (metrics, rate
//! windows, the workers' watch channels) is per-process soft state.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use commands::handler::{CommandContext, Commands, user_subject};
use commands::log::EventLog;
use commands::managed::ManagedNats;
use commands::reactor::ReactorStats;
use commands::rejections::Rejections;
use domain::user;
use events_schema::{Actor, Envelope, Event, ReservationKind, Role, UserRegistered, UserSnapshot};
use projections::{Projection, ReadStore, RunnerRole, RunnerStatus, wait_for_position, wait_for_store_position};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::Config;
use crate::error::{ApiResult, AppError};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// The longest a query waits for `minPosition` (the contract's 5 s).
pub const MIN_POSITION_WAIT_MS_MAX: u64 = 5_000;
/// Messages read around a reservation to find its registration.
const REGISTRATION_SCAN_MESSAGES_MAX: u32 = 8;

/// The shared state of the handlers (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The workers running in this process, if any, as the API sees them.
#[derive(Debug, Default)]
pub struct WorkerView {
    pub projector: Option<watch::Receiver<RunnerStatus>>,
    /// Set when the projector task ended other than by a shutdown.
    pub projector_failed: Arc<AtomicBool>,
    pub reactor: Option<Arc<ReactorStats>>,
}

#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub commands: Commands,
    /// The (metered) event log the commands append to.
    pub log: Arc<dyn EventLog>,
    /// The first answers of rejected commands, by idempotency key.
    pub rejections: Rejections,
    pub store: Arc<dyn ReadStore>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<RateLimiter>,
    /// Login and registration per email.
    pub email_limiter: Option<RateLimiter>,
    pub workers: WorkerView,
    /// The managed nats-server, when this process supervises one (taken out
    /// at shutdown).
    pub managed: Arc<Mutex<Option<ManagedNats>>>,
    pub started: Instant,
    /// The Stripe client of the coin shop.
    pub stripe: crate::stripe::Gateway,
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl Inner {
    /// Waits until the read models of `projections` have reached
    /// `min_position` (at most 5 s, then `projection_lagging`).
    ///
    /// A position beyond the log's last one is `validation_failed` at once:
    /// without a write it would never be reached. The whole wait, the
    /// look-up of the log's end included, is bounded by the contract's 5 s.
    pub async fn wait_for(&self, min_position: Option<u64>, projections: &[Projection]) -> ApiResult<()> {
        let Some(position) = min_position.filter(|p| *p > 0) else { return Ok(()) };
        let started = Instant::now();
        let timeout = Duration::from_millis(MIN_POSITION_WAIT_MS_MAX);
        match tokio::time::timeout(timeout, self.wait_within(position, projections, timeout, started)).await {
            Ok(result) => result,
            // A dependency that did not answer in time: what this process knows.
            Err(_) => {
                let reached = self.workers.projector.as_ref().map_or(0, |s| s.borrow().checkpoint);
                Err(AppError::ProjectionLagging { wanted: position, reached })
            }
        }
    }

    async fn wait_within(
        &self,
        position: u64,
        projections: &[Projection],
        timeout: Duration,
        started: Instant,
    ) -> ApiResult<()> {
        let local_checkpoint = self.workers.projector.as_ref().map(|s| s.borrow().checkpoint);
        if local_checkpoint.is_some_and(|c| c >= position) {
            return Ok(());
        }
        // Only a position not yet reached costs a look-up of the log's end.
        let last = self.log.last_position().await?;
        if position > last {
            return Err(AppError::validation(
                "minPosition",
                format!("is beyond the log's last position ({last}): it would never be reached"),
            ));
        }
        let timeout = timeout.saturating_sub(started.elapsed());
        if let Some(status) = &self.workers.projector {
            let mut status = status.clone();
            let (role, checkpoint) = {
                let s = status.borrow();
                (s.role, s.checkpoint)
            };
            if checkpoint >= position {
                return Ok(());
            }
            // The local runner's progress is pushed to us; a standby's does
            // not move, so then the store's checkpoints are polled instead.
            if role == RunnerRole::Active {
                wait_for_position(&mut status, position, timeout).await?;
                return Ok(());
            }
        }
        wait_for_store_position(self.store.as_ref(), projections, position, timeout).await?;
        Ok(())
    }

    /// Counts a login or a registration against its email's limit.
    pub fn limit_email(&self, email: &str) -> ApiResult<()> {
        let Some(limiter) = &self.email_limiter else { return Ok(()) };
        match limiter.check(&format!("email:{}", user::normalize_email(email))) {
            Ok(()) => Ok(()),
            Err(refused) => {
                self.metrics.rate_limited.inc();
                Err(AppError::RateLimited { retry_after_s: refused.retry_after.as_secs().max(1) })
            }
        }
    }

    /// A user's current state, from the log (authoritative, never lagging).
    pub async fn user_from_log(&self, user_id: Uuid) -> ApiResult<Option<UserSnapshot>> {
        let s = user_subject(user_id);
        let snapshot = self.commands.load(std::slice::from_ref(&s)).await?;
        Ok(snapshot.state(&s, None, user::evolve))
    }

    /// A user's current roles, from the log. An unknown user has none.
    pub async fn roles_of(&self, user_id: Uuid) -> ApiResult<Vec<Role>> {
        Ok(self.user_from_log(user_id).await?.map(|u| u.roles).unwrap_or_default())
    }

    /// The caller's current roles, from the log, once their token is known
    /// not to predate a revocation of the user's sessions (`session_revoked`
    /// otherwise): every privileged decision goes through here, and it
    /// costs no read more than the roles did.
    pub async fn roles_checked(&self, caller: &crate::extract::AuthUser) -> ApiResult<Vec<Role>> {
        let current = self.user_from_log(caller.id).await?;
        user::check_session_of(&current, caller.sessions_epoch)?;
        Ok(current.map(|u| u.roles).unwrap_or_default())
    }

    /// The registration of the user holding `email`, read from the log: the
    /// fallback of login and `/users/me` while the users projection has not
    /// caught up. The registration is appended in one atomic batch with the
    /// email's reservation, so it sits just before it.
    pub async fn registration_from_log(&self, email: &str) -> ApiResult<Option<(UserRegistered, Envelope)>> {
        Ok(registration_in_log(self.log.as_ref(), email).await?)
    }

    /// Whether the projector of this process stopped on an error.
    pub fn projector_failed(&self) -> bool {
        self.workers.projector_failed.load(Ordering::Relaxed)
    }

    /// Whether the managed nats-server's supervisor gave up.
    pub fn managed_failed(&self) -> Option<bool> {
        self.managed.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(ManagedNats::has_failed)
    }
}

/// The registration of the user holding `email`, read from the log (the
/// API's login fallback and the operator command's look-up). The email's
/// reservation (`hb.reservation.email.<email>`) is claimed in one atomic
/// batch with the registration, so the registration sits just before it.
pub async fn registration_in_log(
    log: &dyn EventLog,
    email: &str,
) -> Result<Option<(UserRegistered, Envelope)>, commands::log::LogError> {
    let email = user::normalize_email(email);
    let s = commands::handler::reservation_subject(ReservationKind::Email, &email);
    let Some(claim) = log.last_on_subject(&s).await? else { return Ok(None) };
    let first = claim.position.saturating_sub(u64::from(REGISTRATION_SCAN_MESSAGES_MAX / 2)).max(1);
    for message in log.read_from(first, REGISTRATION_SCAN_MESSAGES_MAX).await? {
        let Ok(envelope) = Envelope::decode(&message.payload) else { continue };
        if let Event::UserRegistered(registered) = &envelope.event
            && registered.email == email
        {
            return Ok(Some((registered.clone(), envelope)));
        }
    }
    Ok(None)
}

/// SHA-256 (hex) of a request's canonical form: method, path and the typed
/// body serialised (fixed field order, no whitespace), so that the same
/// request always has the same fingerprint and a changed one never does.
pub fn fingerprint(request_line: &str, body: &impl serde::Serialize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request_line.as_bytes());
    hasher.update(b"\n");
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    format!("{:x}", hasher.finalize())
}

/// A command's context: scope `user:<id>`, the `Idempotency-Key` (or a fresh
/// id), the request's fingerprint.
pub fn command_context(
    scope: String,
    key: Option<&str>,
    fingerprint: String,
    correlation_id: Option<&str>,
    actor: Actor,
) -> CommandContext {
    let command_id = key.map(str::to_string).unwrap_or_else(|| Uuid::now_v7().to_string());
    let correlation_id = correlation_id.map(str::to_string).unwrap_or_else(|| command_id.clone());
    CommandContext { scope, command_id, fingerprint, correlation_id, actor }
}
