//! `status`: where every projector and the gift reactor stand against the
//! log: position and lag in events. Reads only.

use anyhow::Context;
use async_nats::jetstream::kv;
use commands::log::{EventLog, JetStreamLog};
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
    let projectors = checkpoints
        .into_iter()
        .map(|c| ProjectorStatus {
            projection: c.projection.name().to_string(),
            version: c.version,
            active: c.active,
            position: c.position,
            lag_events: last_position.saturating_sub(c.position),
            updated_at: c.updated_at,
        })
        .collect();
    Ok(StatusReport {
        stream: log.stream_name().to_string(),
        last_position,
        projectors,
        reactor: reactor_status(log, last_position).await?,
    })
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
