//! `status`: where every projector and the gift reactor stand against the
//! log: position and lag in events, and the error a projector stopped on
//! (from the `HALOBUZZ_PROJECTORS` bucket the API's projector process
//! writes). Reads only.

use anyhow::Context;
use async_nats::jetstream::kv;
use commands::log::{EventLog, JetStreamLog};
use commands::projector_errors;
use commands::reactor::LEASE_BUCKET;
use projections::ReadStore;
use serde::{Deserialize, Serialize};

use crate::audit::NamedCheckpoint;

/// The reactor's lease key (`ReactorConfig::default().lease_key`).
pub const REACTOR_LEASE_KEY: &str = "gift-reactor";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorStatus {
    pub projection: String,
    pub version: u32,
    /// Whether this version serves the queries.
    pub active: bool,
    pub position: u64,
    pub lag_events: u64,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The error its runner stopped on (or is retrying), as the API process
    /// that runs the projectors published it; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProjectorErrorView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorErrorView {
    pub message: String,
    /// Whether the runner stopped on it (else it retries).
    pub stopped: bool,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReactorStatus {
    /// Every gift at or before this position is credited.
    pub position: u64,
    /// Ledger commits after the checkpoint: the reactor reads only ledger
    /// subjects, so it is compared with the last of those.
    pub lag_events: u64,
    pub last_ledger_position: u64,
    pub owner: String,
    /// Whether an instance holds the lease now.
    pub leased: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub stream: String,
    pub last_position: u64,
    pub projectors: Vec<ProjectorStatus>,
    /// `None` when no reactor ever ran against this log.
    pub reactor: Option<ReactorStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    owner: String,
    expires_at_ms: i64,
    checkpoint: u64,
}

/// The reactor's checkpoint and lease, if it ever ran.
pub async fn reactor_status(log: &JetStreamLog, last_position: u64) -> anyhow::Result<Option<ReactorStatus>> {
    let context = async_nats::jetstream::new(log.client().clone());
    let Ok(bucket) = context.get_key_value(LEASE_BUCKET).await else { return Ok(None) };
    let entry = bucket.entry(REACTOR_LEASE_KEY).await.context("reading the reactor's lease")?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
    let lease: Lease = serde_json::from_slice(&entry.value).context("the reactor's lease is unreadable")?;
    // The newest ledger commit; a server that cannot answer a wildcard
    // lookup gets the log's last position (a lag that counts every event).
    let last_ledger = match log.last_on_subject("hb.ledger.>").await {
        Ok(Some(message)) => message.position,
        Ok(None) => 0,
        Err(_) => last_position,
    };
    Ok(Some(ReactorStatus {
        position: lease.checkpoint,
        lag_events: last_ledger.saturating_sub(lease.checkpoint),
        last_ledger_position: last_ledger,
        owner: lease.owner,
        leased: lease.expires_at_ms > chrono::Utc::now().timestamp_millis(),
    }))
}

/// Every projector's and the reactor's position and lag.
pub async fn status(log: &JetStreamLog, store: &dyn ReadStore) -> anyhow::Result<StatusReport> {
    let last_position = log.last_position().await.context("reading the log's last position")?;
    let mut checkpoints = store.checkpoints().await.context("reading the projectors' checkpoints")?;
    checkpoints.sort_by_key(|c| (c.projection, c.version));
    // Errors live beside the log, not in the store (which may be what
    // refuses writes); a status without them is still worth printing.
    let mut errors = match projector_errors::read_all(log).await {
        Ok(errors) => errors,
        Err(e) => {
            tracing::warn!(error = %e, "the projectors' errors are unreadable: not shown");
            Default::default()
        }
    };
    let mut projectors: Vec<ProjectorStatus> = checkpoints
        .into_iter()
        .map(|c| {
            let name = c.projection.name().to_string();
            let error = errors.remove_entry(&name).and_then(|(name, e)| {
                if e.version == c.version {
                    Some(error_view(e))
                } else {
                    errors.insert(name, e);
                    None
                }
            });
            ProjectorStatus {
                projection: name,
                version: c.version,
                active: c.active,
                position: c.position,
                lag_events: last_position.saturating_sub(c.position),
                updated_at: c.updated_at,
                error,
            }
        })
        .collect();
    // A version that failed before its first checkpoint has no row yet.
    for projection in projections::Projection::ALL {
        let Some(e) = errors.remove(projection.name()) else { continue };
        let active = store.active_version(projection).await.is_ok_and(|v| v == e.version);
        projectors.push(ProjectorStatus {
            projection: projection.name().to_string(),
            version: e.version,
            active,
            position: 0,
            lag_events: last_position,
            updated_at: e.at,
            error: Some(error_view(e)),
        });
    }
    Ok(StatusReport {
        stream: log.stream_name().to_string(),
        last_position,
        projectors,
        reactor: reactor_status(log, last_position).await?,
    })
}

fn error_view(e: projector_errors::ProjectorError) -> ProjectorErrorView {
    ProjectorErrorView { message: e.error, stopped: e.stopped, at: e.at }
}

/// The checkpoints the audit checks the zero sum at: the serving
/// projectors' and the reactor's.
pub fn audit_checkpoints(report: &StatusReport) -> Vec<NamedCheckpoint> {
    let mut out: Vec<NamedCheckpoint> = report
        .projectors
        .iter()
        .filter(|p| p.active)
        .map(|p| NamedCheckpoint { name: format!("projector {}@{}", p.projection, p.version), position: p.position })
        .collect();
    if let Some(reactor) = &report.reactor {
        out.push(NamedCheckpoint { name: "gift reactor".into(), position: reactor.position });
    }
    out
}
