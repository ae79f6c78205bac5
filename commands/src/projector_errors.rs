//! The projectors' errors, published for other processes: the API process
//! that runs the projectors writes each projection's current error (set
//! when its runner fails, deleted when it applies again) to the
//! `HALOBUZZ_PROJECTORS` key-value bucket, and `halobuzz-replay status`
//! reads it. Not in the read store: the store may be what refuses writes.
//!
//! Every call is bounded by `KV_TIMEOUT_MS`; callers treat a failure as
//! something to log, never as a reason to stop a projector.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::JetStreamLog;

/// The bucket of the projectors' errors, one key per projection name.
pub const PROJECTOR_BUCKET: &str = "HALOBUZZ_PROJECTORS";
/// The longest error text kept (in bytes, cut at a character boundary), so
/// that a value stays well under `VALUE_BYTES_MAX`.
pub const ERROR_BYTES_MAX: usize = 2_048;
/// The bucket's largest value.
const VALUE_BYTES_MAX: i32 = 4_096;
/// The bucket's largest size: one small value per projection.
const BUCKET_BYTES_MAX: i64 = 1024 * 1024;
/// How long one key-value call (open, put, delete, read) may take.
pub const KV_TIMEOUT_MS: u64 = 2_000;
/// The most keys `read_all` reads (there are a handful of projections).
const KEYS_MAX: usize = 64;

/// A projection's error, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorError {
    /// The version whose runner failed.
    pub version: u32,
    /// The error's text, at most `ERROR_BYTES_MAX` bytes.
    pub error: String,
    /// Whether the runner stopped on it (else it retries a transient one).
    pub stopped: bool,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl ProjectorError {
    /// `error` cut to `ERROR_BYTES_MAX` bytes.
    pub fn new(version: u32, error: &str, stopped: bool, at: chrono::DateTime<chrono::Utc>) -> ProjectorError {
        let mut end = error.len().min(ERROR_BYTES_MAX);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        ProjectorError { version, error: error[..end].to_string(), stopped, at }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(bytes: &[u8]) -> Result<ProjectorError, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorErrorsError {
    #[error("the {PROJECTOR_BUCKET} bucket did not answer within {KV_TIMEOUT_MS} ms")]
    Timeout,
    #[error("the {PROJECTOR_BUCKET} bucket: {0}")]
    Kv(String),
}

async fn bounded<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, ProjectorErrorsError> {
    match tokio::time::timeout(Duration::from_millis(KV_TIMEOUT_MS), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ProjectorErrorsError::Kv(e.to_string())),
        Err(_) => Err(ProjectorErrorsError::Timeout),
    }
}

/// The bucket, created when missing (one value per key, small values).
pub async fn bucket(log: &JetStreamLog, replicas: usize) -> Result<kv::Store, ProjectorErrorsError> {
    let js = jetstream::new(log.client().clone());
    if let Ok(Ok(store)) =
        tokio::time::timeout(Duration::from_millis(KV_TIMEOUT_MS), js.get_key_value(PROJECTOR_BUCKET)).await
    {
        return Ok(store);
    }
    bounded(js.create_key_value(kv::Config {
        bucket: PROJECTOR_BUCKET.into(),
        description: "HaloBuzz projectors' current errors, by projection".into(),
        history: 1,
        max_value_size: VALUE_BYTES_MAX,
        max_bytes: BUCKET_BYTES_MAX,
        num_replicas: replicas,
        ..kv::Config::default()
    }))
    .await
}

/// Records `error` as `projection`'s current error.
pub async fn set(store: &kv::Store, projection: &str, error: &ProjectorError) -> Result<(), ProjectorErrorsError> {
    bounded(store.put(projection, error.encode())).await.map(|_| ())
}

/// Clears `projection`'s error.
pub async fn clear(store: &kv::Store, projection: &str) -> Result<(), ProjectorErrorsError> {
    bounded(store.delete(projection)).await
}

/// Every projection's current error, by projection name; empty when the
/// bucket does not exist (no projector ever ran against this server).
/// Unreadable values are skipped.
pub async fn read_all(log: &JetStreamLog) -> Result<HashMap<String, ProjectorError>, ProjectorErrorsError> {
    use futures_util::StreamExt;
    let js = jetstream::new(log.client().clone());
    let Ok(Ok(store)) =
        tokio::time::timeout(Duration::from_millis(KV_TIMEOUT_MS), js.get_key_value(PROJECTOR_BUCKET)).await
    else {
        return Ok(HashMap::new());
    };
    let keys: Vec<String> = bounded(async {
        let keys = store.keys().await?;
        Ok::<_, async_nats::Error>(keys.take(KEYS_MAX).filter_map(|k| async { k.ok() }).collect().await)
    })
    .await?;
    let mut out = HashMap::new();
    for key in keys {
        let Some(entry) = bounded(store.entry(key.clone())).await? else { continue };
        if entry.operation != kv::Operation::Put {
            continue;
        }
        match ProjectorError::decode(&entry.value) {
            Ok(error) => {
                out.insert(key, error);
            }
            Err(e) => tracing::warn!(key, error = %e, "an unreadable projector error: skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_projector_error_encodes_as_small_camel_case_json_and_back() {
        let at = chrono::DateTime::from_timestamp_millis(1_780_000_000_000).unwrap_or_default();
        let error = ProjectorError::new(2, "the store refused an operation: code 166", true, at);
        let bytes = error.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(json["version"], 2);
        assert_eq!(json["error"], "the store refused an operation: code 166");
        assert_eq!(json["stopped"], true);
        assert_eq!(json["at"], "2026-05-28T20:26:40Z");
        assert_eq!(ProjectorError::decode(&bytes).ok(), Some(error));
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary_and_fits_a_value() {
        let long = "é".repeat(ERROR_BYTES_MAX);
        let error = ProjectorError::new(1, &long, false, chrono::Utc::now());
        assert!(error.error.len() <= ERROR_BYTES_MAX && error.error.len() >= ERROR_BYTES_MAX - 1);
        assert!(error.error.chars().all(|c| c == 'é'));
        assert!(error.encode().len() < usize::try_from(VALUE_BYTES_MAX).unwrap_or(0));
    }
}
