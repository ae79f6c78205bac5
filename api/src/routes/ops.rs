//! Health, metrics, the OpenAPI document and the page that browses it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use projections::RunnerRole;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{AppError, Problem};
use crate::metrics::{Gauges, resident_memory};
use crate::state::AppState;
use crate::views::ts;

/// How long a health probe waits for a dependency.
const PROBE_TIMEOUT_MS: u64 = 2_000;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// `healthy`, or `unhealthy` when a dependency is down (then 503).
    pub status: String,
    #[serde(serialize_with = "ts")]
    pub timestamp: chrono::DateTime<Utc>,
    /// Seconds since the process started.
    pub uptime: u64,
    /// `APP_ENV`.
    pub environment: String,
    /// `HALOBUZZ_ROLE`: `all`, `api` or `workers`.
    pub role: String,
    pub version: String,
    pub checks: HealthChecks,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthChecks {
    pub nats: DependencyCheck,
    pub read_store: DependencyCheck,
    pub projector: ProjectorCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reactor: Option<ReactorCheck>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyCheck {
    /// `up` or `down`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The event log's last position (NATS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_position: Option<u64>,
    /// `sqlite` or `mongodb` (read store); `managed` or `external` (NATS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorCheck {
    /// `up`, `standby` (another replica applies), `down` (stopped on an
    /// error), or `remote` (this process runs no projector).
    pub status: String,
    /// The log position every read model has reached.
    pub checkpoint: Option<u64>,
    /// Events in the log not yet in the read models.
    pub lag_events: Option<u64>,
    /// Why the projector stopped (`down`), or the transient failure it is
    /// retrying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactorCheck {
    /// `active` (holds the lease) or `standby`.
    pub status: String,
    /// Every gift up to this position is credited to its host.
    pub position: u64,
    /// Log positions past `position` (any subject): an upper bound on the
    /// gifts not credited yet; absent while the log is unreachable.
    pub lag_events: Option<u64>,
    pub commits: u64,
    pub gifts: u64,
}

async fn probe<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), f).await {
        Ok(Ok(v)) => Ok(v),
        // The state, not the error's text (addresses, versions): that goes to the log.
        Ok(Err(e)) => Err(crate::server::probe_failed(&e)),
        Err(_) => Err("timeout".into()),
    }
}

/// Liveness and the state of the dependencies, in the runbook's format.
#[utoipa::path(
    get, path = "/health", tag = "operations",
    responses(
        (status = 200, description = "Healthy", body = HealthView),
        (status = 503, description = "A dependency is down (`status: unhealthy`)", body = HealthView),
    )
)]
pub async fn health(State(app): State<AppState>) -> Response {
    let (last_position, checkpoints) = tokio::join!(probe(app.log.last_position()), probe(app.store.checkpoints()));
    let managed_failed = app.managed_failed();
    let nats_up = last_position.is_ok() && managed_failed != Some(true);
    let nats = DependencyCheck {
        status: if nats_up { "up" } else { "down" }.into(),
        detail: match (&last_position, managed_failed) {
            (Err(e), _) => Some(e.clone()),
            (Ok(_), Some(true)) => Some("supervisor_gave_up".into()),
            _ => None,
        },
        last_position: last_position.as_ref().ok().copied(),
        backend: Some(if managed_failed.is_some() { "managed" } else { "external" }.into()),
    };
    let read_store = DependencyCheck {
        status: if checkpoints.is_ok() { "up" } else { "down" }.into(),
        detail: checkpoints.as_ref().err().cloned(),
        last_position: None,
        backend: Some(app.store.backend().into()),
    };
    let store_checkpoint = checkpoints.as_ref().ok().map(|cs| {
        projections::Projection::ALL
            .iter()
            .map(|p| cs.iter().find(|c| c.projection == *p && c.active).map_or(0, |c| c.position))
            .min()
            .unwrap_or(0)
    });
    let projector = match &app.workers.projector {
        Some(status) => {
            let s = status.borrow().clone();
            let state = if app.projector_failed() {
                "down"
            } else if s.role == RunnerRole::Standby {
                "standby"
            } else {
                "up"
            };
            let checkpoint = store_checkpoint.unwrap_or(s.checkpoint).max(s.checkpoint);
            ProjectorCheck {
                status: state.into(),
                checkpoint: Some(checkpoint),
                lag_events: last_position.as_ref().ok().map(|last| last.saturating_sub(checkpoint)),
                error: s.last_error,
            }
        }
        None => ProjectorCheck {
            status: "remote".into(),
            checkpoint: store_checkpoint,
            lag_events: match (&last_position, store_checkpoint) {
                (Ok(last), Some(c)) => Some(last.saturating_sub(c)),
                _ => None,
            },
            error: None,
        },
    };
    let reactor = app.workers.reactor.as_ref().map(|stats| {
        let position = stats.position.load(Ordering::Relaxed);
        ReactorCheck {
            status: if stats.active.load(Ordering::Relaxed) == 1 { "active" } else { "standby" }.into(),
            position,
            lag_events: last_position.as_ref().ok().map(|last| last.saturating_sub(position)),
            commits: stats.commits.load(Ordering::Relaxed),
            gifts: stats.gifts.load(Ordering::Relaxed),
        }
    });
    let healthy = nats_up && checkpoints.is_ok() && !app.projector_failed();
    let view = HealthView {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        timestamp: Utc::now(),
        uptime: app.started.elapsed().as_secs(),
        environment: app.config.app_env.clone(),
        role: match app.config.role {
            crate::config::InstanceRole::All => "all",
            crate::config::InstanceRole::Api => "api",
            crate::config::InstanceRole::Workers => "workers",
        }
        .into(),
        version: env!("CARGO_PKG_VERSION").into(),
        checks: HealthChecks { nats, read_store, projector, reactor },
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(view)).into_response()
}

/// Compares in constant time, so that the token cannot be guessed byte by
/// byte from response times.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus text exposition. With `METRICS_TOKEN` set, it needs
/// `Authorization: Bearer <METRICS_TOKEN>`.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, description = "`METRICS_TOKEN` is set and not given", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &app.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.as_bytes(), token.as_bytes()) {
            return AppError::Unauthorized("the metrics need the METRICS_TOKEN bearer token").into_response();
        }
    }
    let last_position = probe(app.log.last_position()).await.ok();
    let (resident, peak) = resident_memory();
    let mut gauges = Gauges {
        uptime_s: app.started.elapsed().as_secs(),
        log_last_position: last_position,
        resident_bytes: resident,
        resident_peak_bytes: peak,
        ..Gauges::default()
    };
    if let Some(status) = &app.workers.projector {
        let s = status.borrow().clone();
        gauges.projector_checkpoint = Some(s.checkpoint);
        gauges.projector_lag_events = Some(last_position.unwrap_or(s.last_position).saturating_sub(s.checkpoint));
        gauges.projector_batches = Some(s.batches_applied);
    }
    if let Some(stats) = &app.workers.reactor {
        gauges.reactor_commits = Some(stats.commits.load(Ordering::Relaxed));
        gauges.reactor_gifts = Some(stats.gifts.load(Ordering::Relaxed));
        gauges.reactor_position = Some(stats.position.load(Ordering::Relaxed));
        gauges.reactor_active = Some(stats.active.load(Ordering::Relaxed));
    }
    let body = app.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], body)
        .into_response()
}

/// The OpenAPI 3.1 document of every route, generated from the handlers.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi_json(State(app): State<AppState>) -> Response {
    // The log's last position bounds `minPosition`; without it the bound
    // is left out (the document still answers).
    let last_position = probe(app.log.last_position()).await.ok();
    Json(crate::openapi::document(&app.config, last_position)).into_response()
}

/// A self-contained page (no CDN) that fetches the OpenAPI document and
/// lists and browses the operations.
#[utoipa::path(get, path = "/docs", tag = "operations", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("../docs.html"))
}
