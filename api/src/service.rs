//! Start-up, serving and shutdown of the service: the event log (an
//! external NATS, or a managed local nats-server), the read store (MongoDB
//! or the embedded SQLite file), the workers (projector runner and gift
//! reactor, unless `HALOBUZZ_ROLE=api`), and the HTTP server.
//!
//! Shutdown order: stop accepting and drain requests (bounded), stop the
//! reactor at a clean point (its batch finished and checkpointed), stop the
//! projector between batches, stop the managed nats-server last (everything
//! above still needs it).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use commands::handler::Commands;
use commands::log::{EventLog, JetStreamLog};
use commands::managed::ManagedNats;
use commands::reactor::{GiftReactor, ReactorConfig};
use commands::rejections::Rejections;
use projections::{ProjectionError, ReadStore, Runner, RunnerConfig, RunnerExit};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::auth::Auth;
use crate::config::{Config, LogFormat};
use crate::metrics::{AppendCounts, MeteredLog, Metrics};
use crate::ratelimit::RateLimiter;
use crate::source::EventLogSource;
use crate::state::{AppState, Inner, WorkerView};
use crate::wiring::{LogConnection, ManagedServer, open_log, open_store};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_MS_MAX: u64 = 10_000;
/// How long the projector gets to finish its batch at shutdown.
const PROJECTOR_STOP_MS_MAX: u64 = 30_000;
/// How long the reactor gets to finish its batch at shutdown.
const REACTOR_STOP_MS_MAX: u64 = 30_000;

struct ProjectorTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<RunnerExit, ProjectionError>>,
}

/// A started service: dependencies connected, workers running, ready to
/// serve HTTP.
pub struct Service {
    state: AppState,
    projector: Option<ProjectorTask>,
    reactor: Option<GiftReactor>,
    managed: Arc<Mutex<Option<ManagedNats>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("config", &self.state.config).finish_non_exhaustive()
    }
}

impl Service {
    /// Connects everything `config` names and starts the workers.
    pub async fn start(config: Config) -> anyhow::Result<Service> {
        if !config.is_development() && !config.admin_emails.is_empty() {
            tracing::warn!(
                app_env = config.app_env,
                "ADMIN_EMAILS grants nothing outside development and test: grant roles with `halobuzz-api roles grant`"
            );
        }
        let metrics = Arc::new(Metrics::default());
        let LogConnection { log: jetstream, managed } = open_log(&config, ManagedServer::Start).await?;
        let raw_log: Arc<dyn EventLog> = Arc::new(jetstream.clone());
        let log: Arc<dyn EventLog> = Arc::new(MeteredLog::new(raw_log.clone(), AppendCounts(metrics.clone())));
        let commands = Commands::new(log.clone(), config.command_config());
        let rejections = Rejections::open(jetstream.client(), config.nats_stream_replicas)
            .await
            .context("opening the rejection memory (a JetStream key-value bucket)")?;

        let store = open_store(&config).await?;
        // Queries need the tables even before a projector ran (HALOBUZZ_ROLE=api):
        // those of the serving versions, which a rebuild may have moved past
        // the code's (an older build's tables stay beside them, unprepared).
        let serving = projections::serving_targets(store.as_ref()).await.context("reading the serving versions")?;
        store.prepare(&serving).await.context("preparing the read store")?;

        let mut workers = WorkerView::default();
        let mut projector = None;
        let mut reactor = None;
        if config.role.runs_workers() {
            let owner = format!("halobuzz-{}-{}", std::process::id(), Uuid::now_v7());
            let source: Arc<dyn projections::LogSource> = Arc::new(EventLogSource::new(raw_log.clone()));
            // The projector's progress, relayed from each runner: a rebuild
            // (`halobuzz-replay rebuild`) that switches versions retires the
            // running one, and a new runner takes the new versions over.
            let (status_sender, status) = tokio::sync::watch::channel(projections::RunnerStatus::starting());
            workers.projector = Some(status);
            let failed = workers.projector_failed.clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let store_for_runner = store.clone();
            let batch_size_max = config.projector_batch_events;
            let errors = spawn_error_publisher(jetstream.clone(), config.nats_stream_replicas);
            let handle = tokio::spawn(async move {
                let relays = Relays { status: status_sender, errors };
                run_projectors(store_for_runner, source, owner, batch_size_max, relays, stopped, failed).await
            });
            projector = Some(ProjectorTask { stop, handle });
            let reactor_config = ReactorConfig { replicas: config.nats_stream_replicas, ..ReactorConfig::default() };
            let started = GiftReactor::start(
                commands.clone(),
                jetstream.client().clone(),
                jetstream.stream_name(),
                reactor_config,
            )
            .await
            .map_err(|e| anyhow::anyhow!("starting the gift reactor: {e}"))?;
            workers.reactor = Some(started.stats().clone());
            reactor = Some(started);
        }

        let auth = Auth::new(&config.jwt_secret, &config.jwt_refresh_secret).map_err(|e| anyhow::anyhow!("{e}"))?;
        let managed = Arc::new(Mutex::new(managed));
        let stripe = crate::stripe::Gateway::new(&config).map_err(|e| anyhow::anyhow!("STRIPE_SECRET_KEY: {e}"))?;
        let state = AppState::new(Inner {
            stripe,
            limiter: config.rate_limit.map(RateLimiter::new),
            email_limiter: config.email_rate_limit.map(RateLimiter::new),
            config,
            commands,
            log,
            rejections,
            store,
            auth,
            metrics,
            workers,
            managed: managed.clone(),
            started: Instant::now(),
        });
        Ok(Service { state, projector, reactor, managed })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The HTTP router of this service (what `serve` serves).
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.state.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` completes, drains the
    /// requests in flight (bounded), then stops the workers and the managed
    /// server.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let app = self.router();
        let limits = self.state.config.http;
        let (drain, draining) = oneshot::channel::<()>();
        let mut server = tokio::spawn(crate::server::serve(listener, app, limits, draining));
        let served = tokio::select! {
            ended = &mut server => Some(ended),
            () = shutdown => None,
        };
        let result = match served {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(anyhow::anyhow!("HTTP server: {e}")),
            Some(Err(e)) => Err(anyhow::anyhow!("HTTP server task: {e}")),
            None => {
                tracing::info!("shutting down: draining requests in flight");
                let _ = drain.send(());
                match tokio::time::timeout(Duration::from_millis(DRAIN_MS_MAX), &mut server).await {
                    Ok(_) => {}
                    Err(_) => {
                        tracing::warn!(
                            drain_ms = DRAIN_MS_MAX,
                            "requests still in flight after the drain time: closing"
                        );
                        server.abort();
                    }
                }
                Ok(())
            }
        };
        self.shutdown().await;
        result
    }

    /// Stops the workers at a clean point, then the managed nats-server.
    pub async fn shutdown(self) {
        if let Some(reactor) = self.reactor
            && tokio::time::timeout(Duration::from_millis(REACTOR_STOP_MS_MAX), reactor.shutdown()).await.is_err()
        {
            tracing::warn!("the gift reactor did not stop in time; its lease expires by itself");
        }
        if let Some(task) = self.projector {
            let _ = task.stop.send(());
            if tokio::time::timeout(Duration::from_millis(PROJECTOR_STOP_MS_MAX), task.handle).await.is_err() {
                tracing::warn!("the projector did not stop in time");
            }
        }
        let managed = self.managed.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(server) = managed
            && let Err(e) = server.shutdown().await
        {
            tracing::warn!(error = %e, "stopping the managed nats-server");
        }
        tracing::info!("stopped");
    }
}

/// Most runner restarts after a version switch, per process.
const PROJECTOR_SWITCHES_MAX: u32 = 10_000;

/// Runs the projectors on the versions that serve (`serving_targets`) until
/// `stopped` fires; when a rebuild switches to newer versions (the runner
/// retires), starts again on those. Relays each runner's status.
async fn run_projectors(
    store: Arc<dyn ReadStore>,
    source: Arc<dyn projections::LogSource>,
    owner: String,
    batch_size_max: u32,
    relays: Relays,
    mut stopped: oneshot::Receiver<()>,
    failed: Arc<std::sync::atomic::AtomicBool>,
) -> Result<RunnerExit, ProjectionError> {
    let mut exit = Ok(RunnerExit::Retired);
    for _ in 0..PROJECTOR_SWITCHES_MAX {
        let targets = match projections::serving_targets(store.as_ref()).await {
            Ok(targets) => targets,
            Err(e) => {
                exit = Err(e);
                break;
            }
        };
        let runner_config =
            RunnerConfig { batch_size_max, targets: targets.clone(), ..RunnerConfig::new(owner.clone()) };
        let runner = match Runner::new(store.clone(), source.clone(), runner_config) {
            Ok(runner) => runner,
            Err(e) => {
                exit = Err(e);
                break;
            }
        };
        let mut status = runner.status();
        let relay = async {
            while status.changed().await.is_ok() {
                let current = status.borrow().clone();
                if let Some(state) = reported_state(&current) {
                    relays.report(&targets, state);
                }
                relays.status.send_replace(current);
            }
            std::future::pending::<()>().await;
        };
        exit = tokio::select! {
            exit = runner.run(async { let _ = (&mut stopped).await; }) => exit,
            () = relay => unreachable!("the relay never ends"),
        };
        relays.status.send_replace(runner.status().borrow().clone());
        match &exit {
            Ok(RunnerExit::Retired) => tracing::info!("projector retired: a newer version took over; following it"),
            Ok(RunnerExit::Shutdown) => break,
            Err(e) => {
                relays.report(&targets, ErrorState::Failing { error: e.to_string(), stopped: true });
                break;
            }
        }
    }
    match &exit {
        Ok(RunnerExit::Shutdown) => tracing::info!("projector stopped"),
        Ok(RunnerExit::Retired) => tracing::warn!("projector retired too often: stopped"),
        Err(e) => {
            failed.store(true, Ordering::Relaxed);
            tracing::error!(error = %e, "projector stopped on an error: read models no longer advance");
        }
    }
    exit
}

/// Where `run_projectors` relays to: the runner's status (for `/health`,
/// metrics and read-your-writes) and its error state (for other processes).
struct Relays {
    status: tokio::sync::watch::Sender<projections::RunnerStatus>,
    errors: tokio::sync::watch::Sender<ErrorReport>,
}

impl Relays {
    fn report(&self, targets: &[projections::ProjectionVersion], state: ErrorState) {
        let report = ErrorReport { targets: targets.to_vec(), state };
        self.errors.send_if_modified(|current| {
            let changed = *current != report;
            if changed {
                *current = report;
            }
            changed
        });
    }
}

/// A runner's error state, as published for other processes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ErrorState {
    /// Nothing known yet: nothing is written.
    Unknown,
    /// The runner applies batches: no error.
    Healthy,
    Failing {
        error: String,
        stopped: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorReport {
    targets: Vec<projections::ProjectionVersion>,
    state: ErrorState,
}

/// What a status says about errors, if anything. Only the active runner
/// speaks: a standby's (or a starting runner's) view would overwrite the
/// active replica's. A stopped runner's error is reported on its exit.
fn reported_state(status: &projections::RunnerStatus) -> Option<ErrorState> {
    match (&status.last_error, status.role) {
        (Some(error), projections::RunnerRole::Active) => {
            Some(ErrorState::Failing { error: error.clone(), stopped: false })
        }
        (None, projections::RunnerRole::Active) if status.batches_applied > 0 => Some(ErrorState::Healthy),
        _ => None,
    }
}

/// Tries per error state written to the bucket before it gives up (logged);
/// the next state change is written afresh.
const ERROR_PUBLISH_TRIES_MAX: u32 = 3;
/// The pause between those tries.
const ERROR_PUBLISH_RETRY_MS: u64 = 1_000;

/// Starts the task that writes the projectors' error states to the
/// `HALOBUZZ_PROJECTORS` bucket (`commands::projector_errors`), where
/// `halobuzz-replay status` reads them. The runner never waits for it: the
/// states go through a watch channel (the latest wins), each write is
/// bounded, and a failure is only logged. It ends once the sender is
/// dropped and the last state is written.
fn spawn_error_publisher(log: JetStreamLog, replicas: usize) -> tokio::sync::watch::Sender<ErrorReport> {
    use commands::projector_errors::{self as errors, ProjectorError};
    let (sender, mut receiver) =
        tokio::sync::watch::channel(ErrorReport { targets: Vec::new(), state: ErrorState::Unknown });
    tokio::spawn(async move {
        let mut bucket = None;
        // What this process last wrote, per projection name.
        let mut written: std::collections::HashMap<String, (u32, ErrorState)> = std::collections::HashMap::new();
        while receiver.changed().await.is_ok() {
            let report = receiver.borrow_and_update().clone();
            if report.state == ErrorState::Unknown {
                continue;
            }
            for target in &report.targets {
                let name = target.projection.name().to_string();
                let wanted = (target.version, report.state.clone());
                if written.get(&name) == Some(&wanted) {
                    continue;
                }
                for attempt in 1..=ERROR_PUBLISH_TRIES_MAX {
                    let result = async {
                        if bucket.is_none() {
                            bucket = Some(errors::bucket(&log, replicas).await?);
                        }
                        let Some(store) = bucket.as_ref() else { return Ok(()) };
                        match &report.state {
                            ErrorState::Failing { error, stopped } => {
                                let value = ProjectorError::new(target.version, error, *stopped, chrono::Utc::now());
                                errors::set(store, &name, &value).await
                            }
                            _ => errors::clear(store, &name).await,
                        }
                    }
                    .await;
                    match result {
                        Ok(()) => {
                            written.insert(name.clone(), wanted.clone());
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(projection = %name, attempt, error = %e, "publishing the projector's error state failed");
                            if attempt < ERROR_PUBLISH_TRIES_MAX {
                                tokio::time::sleep(Duration::from_millis(ERROR_PUBLISH_RETRY_MS)).await;
                            }
                        }
                    }
                }
            }
        }
    });
    sender
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Sets up logging: JSON lines or human-readable, filtered by `RUST_LOG`
/// (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The binary: configuration from the environment, then serve on `PORT`
/// until SIGTERM or Ctrl-C.
pub async fn run_from_env() -> anyhow::Result<()> {
    // Logging first (the configuration warns about development secrets);
    // its format is read on its own, and checked again with the rest.
    let format = match std::env::var("LOG_FORMAT").ok().as_deref().map(str::trim) {
        Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        _ if crate::config::production_from_env() => LogFormat::Json,
        _ => LogFormat::Pretty,
    };
    init_tracing(format);
    let config = Config::from_env()?;
    let port = config.port;
    tracing::info!(?config, "starting");
    let service = Service::start(config).await?;
    let listener = TcpListener::bind(("0.0.0.0", port)).await.with_context(|| format!("binding PORT {port}"))?;
    tracing::info!(port, "listening");
    service.serve(listener, shutdown_signal()).await
}
