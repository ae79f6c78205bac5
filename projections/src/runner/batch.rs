//! A runner's batch: read from the log, decoded and projected for every
//! target past its checkpoint.

use std::sync::Arc;

use events_schema::Envelope;

use super::Prepared;
use crate::ProjectionError;
use crate::change::{PositionedChange, ProjectedBatch};
use crate::model::ProjectionVersion;
use crate::projection::project;
use crate::source::{LogMessage, LogSource};

/// Reads up to `max` messages from `from` and projects them for every target
/// past its checkpoint; decoding runs on the blocking pool so that it
/// overlaps the store's work on the previous batch.
pub(super) async fn read_and_project(
    source: Arc<dyn LogSource>,
    from: u64,
    checkpoints: Vec<u64>,
    targets: Vec<ProjectionVersion>,
    max: u32,
) -> Result<Prepared, ProjectionError> {
    let messages = source.read_from(from, max).await?;
    let last_position = source.last_position().await?;
    let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
    tokio::task::spawn_blocking(move || {
        let (batch, error) = project_prefix(&messages, from, &checkpoints, &targets);
        Ok(Prepared { batch, messages: count, last_position, error })
    })
    .await
    .map_err(|e| ProjectionError::Source(format!("decode task failed: {e}")))?
}

/// Decodes messages and projects each for every target past its checkpoint.
/// Messages before `from` (a source that returned too much) are ignored.
pub fn project_messages(
    messages: &[LogMessage],
    from: u64,
    checkpoints: &[u64],
    targets: &[ProjectionVersion],
) -> Result<ProjectedBatch, ProjectionError> {
    match project_prefix(messages, from, checkpoints, targets) {
        (batch, None) => Ok(batch),
        (_, Some(error)) => Err(error),
    }
}

/// Like `project_messages`, but keeps the batch of the events before an
/// unreadable one, with the error.
fn project_prefix(
    messages: &[LogMessage],
    from: u64,
    checkpoints: &[u64],
    targets: &[ProjectionVersion],
) -> (ProjectedBatch, Option<ProjectionError>) {
    let mut changes = Vec::with_capacity(messages.len().saturating_mul(targets.len()));
    let mut scratch = Vec::with_capacity(8);
    let mut to_position = from.saturating_sub(1);
    for message in messages {
        if message.position < from || message.position <= to_position {
            continue;
        }
        let envelope = match Envelope::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(source) => {
                let error = ProjectionError::Decode { position: message.position, source };
                return (
                    ProjectedBatch {
                        targets: targets.to_vec(),
                        to_position,
                        changes,
                        hold_open: false,
                        behind_events: 0,
                    },
                    Some(error),
                );
            }
        };
        to_position = message.position;
        for (index, target) in targets.iter().enumerate() {
            if checkpoints.get(index).is_some_and(|c| message.position <= *c) {
                continue;
            }
            project(target.projection, &envelope, message.position, &mut scratch);
            let target = u8::try_from(index).unwrap_or(u8::MAX);
            changes.extend(scratch.drain(..).map(|change| PositionedChange {
                position: message.position,
                target,
                change,
            }));
        }
    }
    (ProjectedBatch { targets: targets.to_vec(), to_position, changes, hold_open: false, behind_events: 0 }, None)
}
