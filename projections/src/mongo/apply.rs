//! A batch applied to MongoDB: cut into parts of at most
//! [`TRANSACTION_CHANGES_MAX`] changes, each part's guarded writes and
//! checkpoints in one transaction where the deployment runs them.

use std::collections::{BTreeSet, HashMap};

use mongodb::ClientSession;
use mongodb::bson::{Bson, doc};
use mongodb::options::{ReadConcern, WriteConcern};
use uuid::Uuid;

use super::writes::{self, PlanInputs};
use super::{MongoStore, TRANSACTION_CHANGES_MAX, classify, primary};
use super::{documents, queries, registry};
use crate::ProjectionError;
use crate::change::{ApplyOutcome, Change, PositionedChange, ProjectedBatch};
use crate::model::{Collection, Projection};
use crate::store::StoreResult;

/// The changes of `batch` cut at event boundaries into parts of at most
/// `max` changes (an event with more changes than `max` stays whole), each
/// part with the position of its last event; the last part ends at the
/// batch's `to_position`.
pub fn split_batch(batch: &ProjectedBatch, max: usize) -> Vec<(u64, &[PositionedChange])> {
    let changes = batch.changes.as_slice();
    let mut parts = Vec::new();
    let mut start = 0;
    while changes.len() - start > max {
        // The end of the event that holds change `start + max`.
        let mut end = start + max;
        let position = changes[end - 1].position;
        while end < changes.len() && changes[end].position == position {
            end += 1;
        }
        if end == changes.len() {
            break;
        }
        parts.push((position, &changes[start..end]));
        start = end;
    }
    parts.push((batch.to_position, &changes[start..]));
    parts
}

impl MongoStore {
    /// Applies the changes of one part of a batch, ending at `to_position`,
    /// with the targets' checkpoints, in `session` when given.
    async fn apply_in(
        &self,
        batch: &ProjectedBatch,
        changes: &[PositionedChange],
        to_position: u64,
        mut session: Option<&mut ClientSession>,
    ) -> StoreResult<ApplyOutcome> {
        let mut checkpoints = Vec::with_capacity(batch.targets.len());
        for target in &batch.targets {
            let active = self.active_version_with(target.projection, session.as_deref_mut()).await?;
            if target.version < active {
                return Err(ProjectionError::Retired {
                    projection: target.projection.name().to_string(),
                    version: target.version,
                    active,
                });
            }
            checkpoints.push(self.checkpoint_of(&target.key(), session.as_deref_mut()).await?);
        }
        let part = ProjectedBatch {
            targets: batch.targets.clone(),
            to_position,
            changes: changes.to_vec(),
            ..Default::default()
        };
        let mut inputs = self.plan_inputs(&part, &checkpoints, session.as_deref_mut()).await?;
        let planned = writes::plan_batch(&part, &checkpoints, &mut inputs)?;
        for command in writes::update_commands(&planned.writes)? {
            self.run_update(command, session.as_deref_mut()).await?;
        }
        // Checkpoints last: without a transaction, a crash before them means
        // the batch is replayed, which the guards make harmless.
        let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
        let mut checkpoint_writes = Vec::with_capacity(batch.targets.len());
        for target in &batch.targets {
            checkpoint_writes.push(registry::checkpoint_write(target.projection, target.version, to_position, now)?);
        }
        for command in writes::update_commands(&checkpoint_writes)? {
            self.run_update(command, session.as_deref_mut()).await?;
        }
        Ok(ApplyOutcome { applied: planned.applied, skipped: planned.skipped, committed: true })
    }

    /// What the plan needs to know, as of the checkpoints: the platform
    /// accounts' balances (the last entry at or before the checkpoint), the
    /// Checkout Sessions of the purchases, and the viewers and streams that
    /// joins and leaves name.
    async fn plan_inputs(
        &self,
        batch: &ProjectedBatch,
        checkpoints: &[u64],
        mut session: Option<&mut ClientSession>,
    ) -> StoreResult<PlanInputs> {
        let mut inputs = PlanInputs::default();
        let mut payments: BTreeSet<String> = BTreeSet::new();
        // (target) -> viewer keys and stream ids.
        let mut viewer_keys: HashMap<u8, BTreeSet<(Uuid, Uuid)>> = HashMap::new();
        for pc in &batch.changes {
            let index = usize::from(pc.target);
            let (Some(target), Some(checkpoint)) = (batch.targets.get(index), checkpoints.get(index)) else {
                continue;
            };
            if pc.position <= *checkpoint {
                continue;
            }
            match &pc.change {
                Change::Posting(p)
                    if p.balance_after.is_none() && !inputs.balances.contains_key(&(pc.target, p.account)) =>
                {
                    let (filter, sort) = queries::balance_at_query(p.account, *checkpoint)?;
                    let entries = Collection::LedgerEntries.physical_name(target.version);
                    let last = self.find(&entries, filter, sort, 1, session.as_deref_mut()).await?;
                    let balance = last.first().map(documents::read_entry).transpose()?.map_or(0, |e| e.balance_after);
                    inputs.balances.insert((pc.target, p.account), balance);
                }
                Change::Transaction(t) => {
                    if let Some(payment) = &t.metadata.payment_id {
                        payments.insert(payment.clone());
                    }
                }
                Change::ViewerJoined { stream_id, viewer_id } | Change::ViewerLeft { stream_id, viewer_id } => {
                    viewer_keys.entry(pc.target).or_default().insert((*stream_id, *viewer_id));
                }
                _ => {}
            }
        }
        if let Some(target) = batch.targets.iter().find(|t| t.projection == Projection::Transactions)
            && !payments.is_empty()
        {
            let limit = u32::try_from(payments.len()).unwrap_or(u32::MAX);
            let ids: Vec<Bson> = payments.into_iter().map(Bson::String).collect();
            let name = Collection::StripeSessions.physical_name(target.version);
            let found = self.find(&name, doc! {"_id": {"$in": ids}}, doc! {}, limit, session.as_deref_mut()).await?;
            for d in found {
                if let (Ok(payment), Ok(s)) = (d.get_str("_id"), d.get_str("sessionId")) {
                    inputs.sessions.insert(payment.to_string(), s.to_string());
                }
            }
        }
        for (target_index, keys) in viewer_keys {
            let Some(target) = batch.targets.get(usize::from(target_index)) else { continue };
            let ids: Vec<Bson> = keys.iter().map(|(s, v)| Bson::String(writes::viewer_id_key(*s, *v))).collect();
            let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            let name = Collection::StreamViewers.physical_name(target.version);
            for d in self.find(&name, doc! {"_id": {"$in": ids}}, doc! {}, limit, session.as_deref_mut()).await? {
                let viewer = documents::read_viewer(&d)?;
                inputs.viewers.insert((target_index, viewer.0, viewer.1), viewer.2);
            }
            let streams: BTreeSet<Uuid> = keys.iter().map(|(s, _)| *s).collect();
            let limit = u32::try_from(streams.len()).unwrap_or(u32::MAX);
            let ids: Vec<Bson> = streams.iter().map(|s| Bson::String(s.to_string())).collect();
            let name = Collection::Streams.physical_name(target.version);
            for d in self.find(&name, doc! {"_id": {"$in": ids}}, doc! {}, limit, session.as_deref_mut()).await? {
                let stream = documents::read_stream(&d)?;
                inputs.live.insert((target_index, stream.id), stream.is_live);
            }
        }
        Ok(inputs)
    }

    pub(super) async fn apply_batch(&self, batch: ProjectedBatch) -> StoreResult<ApplyOutcome> {
        let mut total = ApplyOutcome { applied: 0, skipped: 0, committed: true };
        for (to_position, changes) in split_batch(&batch, TRANSACTION_CHANGES_MAX) {
            let outcome = if self.transactions {
                self.apply_in_transaction(&batch, changes, to_position).await?
            } else {
                self.apply_in(&batch, changes, to_position, None).await?
            };
            total.applied += outcome.applied;
            total.skipped += outcome.skipped;
        }
        Ok(total)
    }

    /// One part of a batch in one transaction: on the primary, majority
    /// read and write concerns (the URI's read preference, perhaps
    /// `secondaryPreferred`, is not allowed in a transaction).
    async fn apply_in_transaction(
        &self,
        batch: &ProjectedBatch,
        changes: &[PositionedChange],
        to_position: u64,
    ) -> StoreResult<ApplyOutcome> {
        let mut session = self.client.start_session().await.map_err(classify)?;
        session
            .start_transaction()
            .selection_criteria(primary())
            .read_concern(ReadConcern::majority())
            .write_concern(WriteConcern::majority())
            .await
            .map_err(classify)?;
        match self.apply_in(batch, changes, to_position, Some(&mut session)).await {
            Ok(outcome) => {
                session.commit_transaction().await.map_err(classify)?;
                Ok(outcome)
            }
            Err(e) => {
                if let Err(abort) = session.abort_transaction().await {
                    tracing::warn!(error = %abort, "mongodb transaction abort failed");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_batch_is_cut_at_event_boundaries() {
        let change = |position| PositionedChange {
            position,
            target: 0,
            change: Change::StreamGifts { stream_id: Uuid::from_u128(1), coins: 1 },
        };
        let batch = ProjectedBatch {
            targets: vec![Projection::Streams.current()],
            to_position: 9,
            changes: vec![change(1), change(2), change(2), change(2), change(3), change(4)],
            ..Default::default()
        };
        let parts: Vec<(u64, usize)> = split_batch(&batch, 2).iter().map(|(to, c)| (*to, c.len())).collect();
        assert_eq!(parts, vec![(2, 4), (9, 2)], "an event's changes stay together; the last part ends the batch");
        let whole: Vec<(u64, usize)> = split_batch(&batch, 6).iter().map(|(to, c)| (*to, c.len())).collect();
        assert_eq!(whole, vec![(9, 6)]);
    }
}
