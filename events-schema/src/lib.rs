//! The stored shape of every event: versioned serde types inside one
//! envelope, the canonical encoding and hash chain over it, upcasters for
//! older versions, and the generated JSON Schema files.
//!
//! Key decision: this is the only crate that knows the JSON shape of an
//! event. Everything else reads and writes events through `Envelope::encode`,
//! `Envelope::decode` and `Envelope::verify`. It must never do IO beyond
//! formatting, and never depend on another crate of the workspace.

pub mod account;
pub mod canonical;
pub mod envelope;
pub mod events;
pub mod schema;
pub mod stripe;
pub mod upcast;

pub use account::{Account, AccountParseError};
pub use envelope::{
    Actor, ActorKind, Envelope, EventMeta, GENESIS_HASH, Header, RECORD_SUBJECT_PREFIX, expiring_record_subject,
    subject,
};
pub use events::*;

/// Why stored bytes could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// Not JSON, or not an envelope.
    Json(String),
    UnknownType(String),
    UnknownVersion {
        type_name: String,
        version: u16,
    },
    /// JSON of the right type whose fields do not match its schema.
    Invalid {
        type_name: String,
        reason: String,
    },
    /// The content does not hash to the stored hash: it was altered.
    HashMismatch {
        stored: String,
        computed: String,
    },
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaError::Json(e) => write!(f, "not a stored event: {e}"),
            SchemaError::UnknownType(t) => write!(f, "unknown event type {t:?}"),
            SchemaError::UnknownVersion { type_name, version } => {
                write!(f, "no upcaster for {type_name} version {version}")
            }
            SchemaError::Invalid { type_name, reason } => write!(f, "invalid {type_name}: {reason}"),
            SchemaError::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch: stored {stored}, content hashes to {computed}")
            }
        }
    }
}

impl std::error::Error for SchemaError {}
