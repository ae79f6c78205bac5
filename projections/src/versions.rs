//! Which version of each projection a serving projector applies.

use crate::ProjectionError;
use crate::model::{Projection, ProjectionVersion};
use crate::store::ReadStore;

/// For each projection, the version to apply: the active one, or the
/// version this code builds when that is newer (it then builds side by side
/// and takes over once caught up). A version activated by a rebuild
/// (`halobuzz-replay rebuild`) is newer than the code's: a projector started
/// with `ProjectionVersion::all_current()` would stop as retired at once.
pub async fn serving_targets(store: &dyn ReadStore) -> Result<Vec<ProjectionVersion>, ProjectionError> {
    let mut targets = Vec::with_capacity(Projection::ALL.len());
    for projection in Projection::ALL {
        let active = store.active_version(projection).await?;
        targets.push(ProjectionVersion::new(projection, active.max(projection.code_version())));
    }
    Ok(targets)
}
