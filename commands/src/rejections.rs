//! The memory of rejected commands: the first answer to a command whose
//! decision was a rejection (insufficient funds, a stream not live...), so
//! that the same `Idempotency-Key` gets the same answer later even when the
//! state has changed since (design, "Idempotency"; contract: "the same key
//! from the same user returns the first answer, with the same status").
//!
//! Accepted commands are remembered by the log itself (`command.recorded`);
//! a rejection appends nothing to the log, so it is kept here: a JetStream
//! key-value bucket apart from the event stream (`HALOBUZZ_IDEMPOTENCY`),
//! shared by every API replica, whose entries expire after
//! [`REJECTION_TTL`] (the contract remembers keys at least 24 hours).
//! The value is opaque bytes: what a rejection looks like to a client is the
//! API's business. The API also keeps here, in a scope of its own, what a
//! coin purchase under a key made (a purchase appends nothing either: the
//! webhook does): the Stripe object's id, never its secrets.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::log::LogError;

/// The bucket of remembered rejections.
pub const REJECTION_BUCKET: &str = "HALOBUZZ_IDEMPOTENCY";

/// How long a rejection is remembered.
pub const REJECTION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest remembered answer; a bigger one is not remembered.
pub const REJECTION_BYTES_MAX: usize = 16 * 1024;

/// Remembered rejections, keyed by a command's scope and id.
#[derive(Debug, Clone)]
pub struct Rejections {
    store: kv::Store,
}

impl Rejections {
    /// Opens the bucket, creating it when missing.
    pub async fn open(client: &async_nats::Client, replicas: usize) -> Result<Rejections, LogError> {
        let js = jetstream::new(client.clone());
        if let Ok(store) = js.get_key_value(REJECTION_BUCKET).await {
            return Ok(Rejections { store });
        }
        let store = js
            .create_key_value(kv::Config {
                bucket: REJECTION_BUCKET.into(),
                description: "HaloBuzz: first answers of rejected commands, and purchases' Stripe ids, by idempotency key".into(),
                history: 1,
                max_age: REJECTION_TTL,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..kv::Config::default()
            })
            .await
            .map_err(|e| LogError::Unavailable(format!("creating the {REJECTION_BUCKET} bucket: {e}")))?;
        Ok(Rejections { store })
    }

    /// The remembered answer of command `command_id` in `scope`, if any.
    pub async fn get(&self, scope: &str, command_id: &str) -> Result<Option<Bytes>, LogError> {
        self.store
            .get(entry_key(scope, command_id))
            .await
            .map_err(|e| LogError::Unavailable(format!("reading a remembered rejection: {e}")))
    }

    /// Remembers `answer` for command `command_id` in `scope`, unless an
    /// answer is already remembered (the first answer wins).
    pub async fn remember(&self, scope: &str, command_id: &str, answer: Bytes) -> Result<(), LogError> {
        if answer.len() > REJECTION_BYTES_MAX {
            return Err(LogError::Invalid(format!("a rejection of {} bytes is too large to remember", answer.len())));
        }
        match self.store.create(entry_key(scope, command_id), answer).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(LogError::Unavailable(format!("remembering a rejection: {e}"))),
        }
    }
}

/// Bucket keys allow few characters; a client's key may be any visible
/// ASCII, so the entry key is the hash of scope and id.
fn entry_key(scope: &str, command_id: &str) -> String {
    let mut hasher = Sha256::new();
    // The scope's length first: no two (scope, id) pairs hash the same bytes.
    hasher.update((scope.len() as u64).to_be_bytes());
    hasher.update(scope.as_bytes());
    hasher.update(command_id.as_bytes());
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_are_bucket_safe_and_separate_scopes() {
        let key = entry_key("user:1", "a key/with spaces*and>wildcards");
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(entry_key("user:1", "k"), entry_key("user:2", "k"));
        assert_ne!(entry_key("user:1", "k\nx"), entry_key("user:1\nk", "x"));
    }
}
