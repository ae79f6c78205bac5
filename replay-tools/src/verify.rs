//! `verify`: every projection rebuilt from the log into a shadow version,
//! as far as the serving version's checkpoint, then compared document by
//! document with the serving version; differences are reported by
//! collection and document id. The shadow is dropped at the end. Nothing is
//! written to the serving versions, nothing to the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use projections::store::SCAN_LIMIT_MAX;
use projections::{AnyDoc, Collection, LogSource, Projection, ProjectionVersion, ReadStore};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::progress::Progress;
use crate::rebuild::{SHADOW_VERSION_BASE, UntilSource, catch_up_with_progress, tool_runner};

/// Differences listed per collection, at most (all are counted).
const DIFFERENCES_LISTED_MAX: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// In the rebuild, not in the serving version.
    MissingInLive,
    /// In the serving version, not in the rebuild.
    ExtraInLive,
    /// In both, with different contents.
    Different,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub id: String,
    pub kind: DifferenceKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionReport {
    pub collection: String,
    pub projection: String,
    pub live_version: u32,
    pub position: u64,
    pub live_documents: u64,
    pub rebuilt_documents: u64,
    pub differences: u64,
    /// The first differences, by id.
    pub examples: Vec<Difference>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub collections: Vec<CollectionReport>,
    pub differences: u64,
    /// A serving checkpoint moved while comparing: new events changed the
    /// serving documents, and differences may come from them.
    pub live_moved: bool,
    pub consistent: bool,
    pub seconds: f64,
}

/// A stable id of a document within its collection.
pub fn doc_id(doc: &AnyDoc) -> String {
    match doc {
        AnyDoc::User(d) => d.id.to_string(),
        AnyDoc::Wallet(d) => d.user_id.to_string(),
        AnyDoc::Transaction(d) => d.id.to_string(),
        AnyDoc::StripeSession(payment, session) => format!("{payment}/{session}"),
        AnyDoc::Stream(d) => d.id.to_string(),
        AnyDoc::StreamViewer(stream, viewer) => format!("{stream}/{viewer}"),
        AnyDoc::Payout(d) => d.id.to_string(),
        AnyDoc::LedgerEntry(d) => d.key(),
        AnyDoc::LedgerAccount(d) => d.account.to_string(),
        AnyDoc::Leaderboard(d) => format!("{}/{}", d.stream_id, d.user_id),
        AnyDoc::StripePayment(d) => d.payment_id.clone(),
        AnyDoc::Adjustment(d) => d.id.to_string(),
        AnyDoc::LedgerDay(d) => d.day.to_string(),
    }
}

fn digest(doc: &AnyDoc) -> anyhow::Result<[u8; 16]> {
    let json = serde_json::to_vec(doc)?;
    let hash = Sha256::digest(&json);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    Ok(out)
}

/// Every document of a collection, by id, as digests.
async fn load(
    store: &dyn ReadStore,
    target: ProjectionVersion,
    collection: Collection,
) -> anyhow::Result<HashMap<String, [u8; 16]>> {
    let mut out = HashMap::new();
    let mut after: Option<String> = None;
    // Bounded by the collection's size: each page moves the key on.
    loop {
        let page = store.scan(target, collection, after.as_deref(), SCAN_LIMIT_MAX).await?;
        for doc in &page.docs {
            out.insert(doc_id(doc), digest(doc)?);
        }
        match page.next_key {
            Some(key) => after = Some(key),
            None => return Ok(out),
        }
    }
}

async fn live_checkpoints(
    store: &dyn ReadStore,
    projections: &[Projection],
) -> anyhow::Result<BTreeMap<Projection, (u32, u64)>> {
    let checkpoints = store.checkpoints().await?;
    let mut out = BTreeMap::new();
    for projection in projections {
        let active = store.active_version(*projection).await?;
        let position =
            checkpoints.iter().find(|c| c.projection == *projection && c.version == active).map_or(0, |c| c.position);
        out.insert(*projection, (active, position));
    }
    Ok(out)
}

/// Drops every shadow version left by an earlier, interrupted verify.
async fn drop_shadows(store: &dyn ReadStore) -> anyhow::Result<()> {
    for c in store.checkpoints().await? {
        if c.version >= SHADOW_VERSION_BASE && !c.active {
            store.drop_version(ProjectionVersion::new(c.projection, c.version)).await?;
        }
    }
    Ok(())
}

/// Verifies the serving versions of `projections` against a rebuild.
pub async fn verify(
    store: Arc<dyn ReadStore>,
    source: Arc<dyn LogSource>,
    projections: &[Projection],
    batch_size_max: u32,
    progress: &Progress,
) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    drop_shadows(store.as_ref()).await.context("dropping old shadows")?;
    let before = live_checkpoints(store.as_ref(), projections).await?;
    // One shadow runner per serving checkpoint (usually one for all).
    let mut groups: BTreeMap<u64, Vec<ProjectionVersion>> = BTreeMap::new();
    for (projection, (active, position)) in &before {
        groups.entry(*position).or_default().push(ProjectionVersion::new(*projection, SHADOW_VERSION_BASE + active));
    }
    for (position, shadows) in &groups {
        let limited: Arc<dyn LogSource> = Arc::new(UntilSource::new(source.clone(), *position));
        let runner = tool_runner(store.clone(), limited, shadows.clone(), batch_size_max, false, "verify")?;
        let reached = catch_up_with_progress(&runner, progress, *position).await.context("building the shadow")?;
        anyhow::ensure!(
            reached >= *position,
            "the log ends at {reached}, before the read models' checkpoint {position}: the read store is ahead of \
             this log (a different log, or a restore of the store without its log)"
        );
    }
    progress.finish();

    let mut collections = Vec::new();
    let mut total = 0u64;
    for (projection, (active, position)) in &before {
        let live = ProjectionVersion::new(*projection, *active);
        let shadow = ProjectionVersion::new(*projection, SHADOW_VERSION_BASE + active);
        for collection in projection.collections() {
            let mut live_docs = load(store.as_ref(), live, *collection).await?;
            let rebuilt_docs = load(store.as_ref(), shadow, *collection).await?;
            let live_documents = live_docs.len() as u64;
            let rebuilt_documents = rebuilt_docs.len() as u64;
            let mut differences = Vec::new();
            for (id, digest) in rebuilt_docs {
                match live_docs.remove(&id) {
                    None => differences.push(Difference { id, kind: DifferenceKind::MissingInLive }),
                    Some(live_digest) if live_digest != digest => {
                        differences.push(Difference { id, kind: DifferenceKind::Different })
                    }
                    Some(_) => {}
                }
            }
            differences.extend(live_docs.into_keys().map(|id| Difference { id, kind: DifferenceKind::ExtraInLive }));
            differences.sort_by(|a, b| a.id.cmp(&b.id));
            let count = differences.len() as u64;
            total += count;
            differences.truncate(DIFFERENCES_LISTED_MAX);
            collections.push(CollectionReport {
                collection: collection.base_name().to_string(),
                projection: projection.name().to_string(),
                live_version: *active,
                position: *position,
                live_documents,
                rebuilt_documents,
                differences: count,
                examples: differences,
            });
        }
    }
    let after = live_checkpoints(store.as_ref(), projections).await?;
    drop_shadows(store.as_ref()).await.context("dropping the shadow")?;
    let live_moved = after != before;
    Ok(VerifyReport {
        collections,
        differences: total,
        live_moved,
        consistent: total == 0,
        seconds: started.elapsed().as_secs_f64(),
    })
}
