//! Read your writes: waiting until the projections reach a position.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::RunnerStatus;
use crate::ProjectionError;
use crate::model::Projection;
use crate::store::ReadStore;

/// Waits until a runner's checkpoint reaches `position` (read your writes
/// in the process that runs the projector).
pub async fn wait_for_position(
    status: &mut watch::Receiver<RunnerStatus>,
    position: u64,
    timeout: Duration,
) -> Result<u64, ProjectionError> {
    let reached = match tokio::time::timeout(timeout, status.wait_for(|s| s.checkpoint >= position)).await {
        Ok(Ok(s)) => Some(s.checkpoint),
        _ => None,
    };
    reached.ok_or_else(|| ProjectionError::Lagging { wanted: position, reached: status.borrow().checkpoint })
}

/// How often `wait_for_store_position` looks at the checkpoints, at most.
const STORE_POLL_MS_MAX: u64 = 50;

/// Waits until the active versions of `projections` have all reached
/// `position`, polling the store's checkpoints (read your writes in an API
/// replica that does not run the projector). Bounded by `timeout`.
pub async fn wait_for_store_position(
    store: &dyn ReadStore,
    projections: &[Projection],
    position: u64,
    timeout: Duration,
) -> Result<u64, ProjectionError> {
    let deadline = Instant::now() + timeout;
    let mut poll_ms = 2;
    loop {
        let checkpoints = store.checkpoints().await?;
        let reached = projections
            .iter()
            .map(|p| checkpoints.iter().find(|c| c.projection == *p && c.active).map_or(0, |c| c.position))
            .min()
            .unwrap_or(u64::MAX);
        if reached >= position {
            return Ok(reached);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ProjectionError::Lagging { wanted: position, reached });
        }
        tokio::time::sleep(Duration::from_millis(poll_ms).min(deadline - now)).await;
        poll_ms = (poll_ms * 2).min(STORE_POLL_MS_MAX);
    }
}
