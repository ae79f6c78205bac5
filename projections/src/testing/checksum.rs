//! An order-independent checksum of every collection of a store.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::ProjectionError;
use crate::model::ProjectionVersion;
use crate::store::{ReadStore, SCAN_LIMIT_MAX};

/// One collection's document count and order-independent digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionChecksum {
    pub documents: u64,
    /// Wrapping sum of the first 16 bytes of each document's SHA-256 (of its
    /// JSON): independent of the order documents are scanned in.
    pub digest: u128,
}

/// A checksum of every collection of some projections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreChecksum {
    /// By collection base name (so two versions of a projection compare).
    pub collections: BTreeMap<&'static str, CollectionChecksum>,
}

impl std::fmt::Display for StoreChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, c) in &self.collections {
            writeln!(f, "{name}: {} documents, digest {:032x}", c.documents, c.digest)?;
        }
        Ok(())
    }
}

/// Scans every collection of `targets` and checksums it. Memory is bounded
/// by one scan page.
pub async fn checksum(store: &dyn ReadStore, targets: &[ProjectionVersion]) -> Result<StoreChecksum, ProjectionError> {
    let mut out = StoreChecksum::default();
    for target in targets {
        for collection in target.projection.collections() {
            let mut sum = CollectionChecksum { documents: 0, digest: 0 };
            let mut after: Option<String> = None;
            // Bounded by the collection's size: each page moves the key on.
            loop {
                let page = store.scan(*target, *collection, after.as_deref(), SCAN_LIMIT_MAX).await?;
                for doc in &page.docs {
                    let json = serde_json::to_vec(doc).map_err(|e| ProjectionError::Store(e.to_string()))?;
                    let hash = Sha256::digest(&json);
                    let mut first = [0u8; 16];
                    first.copy_from_slice(&hash[..16]);
                    sum.digest = sum.digest.wrapping_add(u128::from_le_bytes(first));
                    sum.documents += 1;
                }
                match page.next_key {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
            out.collections.insert(collection.base_name(), sum);
        }
    }
    Ok(out)
}
