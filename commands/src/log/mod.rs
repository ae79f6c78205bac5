//! The event-log port ([`EventLog`]) and its NATS JetStream adapter
//! ([`JetStreamLog`]).
//!
//! The port is byte-level: a message is a subject, an opaque payload and,
//! usually, a message id. What the bytes mean is `events-schema`'s business.
//!
//! Positions are JetStream stream sequences: they start at 1, grow by one per
//! stored message, and are never reused (the stream denies deletes and
//! purges), so a position is a stable address for a commit.
//!
//! # Optimistic concurrency
//!
//! Every append names the last position it expects on its subject
//! (`expected_last_subject_seq`, 0 = the subject must be empty). A writer that
//! lost a race gets [`LogError::Conflict`] and must reload and decide again.
//!
//! # Retries and idempotency
//!
//! Only [`LogError::Unavailable`] is retried (bounded, with jitter). Retrying
//! an append whose outcome is unknown (a timeout: the message may or may not
//! have been stored) is safe only because each append carries an expected
//! sequence and either a `Nats-Msg-Id` or, when it expects an empty subject,
//! bytes that no other append carries (a command record), and the adapter
//! recognises its own stored copy:
//!
//! - if the retry's expectation still holds, the stream's id deduplication
//!   (inside its duplicate window) acknowledges it as a duplicate, and the
//!   ack carries the original position;
//! - if the first try was stored, the expectation no longer holds (the first
//!   copy moved the subject), and nats-server checks expectations *before*
//!   ids, so the retry is refused as a wrong last sequence; the adapter then
//!   looks at the first message after the expected position on the subject
//!   (asking the stream leader) and, when it carries our id (for an append
//!   without one: our bytes), that is the original.
//!
//! Either way a retry that finds the original returns it as a success. On
//! the *first* try the same findings mean the caller repeated a message id
//! (a repeated command), and give [`LogError::Duplicate`] with the original
//! position: nothing is appended.
//!
//! The duplicate window is minutes long and held by the server: it is a first
//! line against double appends, not the idempotency guarantee of the ledger
//! (see the design, "Idempotency").

mod jetstream;
mod watched;

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

pub use jetstream::{JetStreamLog, LogConfig};
pub use watched::{AppendWatch, Watched};

/// Oldest nats-server release the ledger accepts: 2.12 brought atomic batch
/// publish, which older servers silently ignore (the headers are stored as
/// plain headers and every message lands on its own).
pub const MIN_SERVER_VERSION: ServerVersion = ServerVersion { major: 2, minor: 12, patch: 0 };

/// Most messages in one atomic batch (a server limit, ADR-50).
pub const ATOMIC_BATCH_SIZE_MAX: usize = 1_000;

/// One message to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// Aggregate subject, `hb.<kind>.<id>`.
    pub subject: String,
    /// Opaque bytes (the serialized commit).
    pub payload: Bytes,
    /// Deduplication id (`Nats-Msg-Id`), unique per logical append. `None`
    /// spares the server its duplicate bookkeeping, and is accepted only
    /// for an append that expects its subject empty and whose bytes no
    /// other append carries (a command record, with its own event id): a
    /// retry whose first try was stored is then recognised by its bytes.
    pub msg_id: Option<String>,
    /// Position of the last message on `subject` the writer saw; 0 means the
    /// subject must still be empty.
    pub expected_last_subject_seq: u64,
}

/// An acknowledged append: the message is stored (and on disk, with
/// `sync_interval: always` or on a quorum of replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Stream sequence of the stored message.
    pub position: u64,
    /// The position came from a retry that found a message with this
    /// message id (or, without one, these bytes) already stored: an earlier
    /// try of this append whose acknowledgement was lost, or another append
    /// under the same id, whose content may differ from this request's.
    pub found_by_id: bool,
}

/// A message read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Stream sequence.
    pub position: u64,
    pub subject: String,
    pub payload: Bytes,
    /// The `Nats-Msg-Id` it was appended with, if any.
    pub msg_id: Option<String>,
    /// When the server stored it.
    pub timestamp: DateTime<Utc>,
}

/// Why a log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The subject's last position is not the expected one (another writer
    /// won the race): reload and decide again. `current` is the subject's
    /// actual last position, when known.
    #[error("conflict on {subject}: expected last position {expected}, found {current:?}")]
    Conflict { subject: String, expected: u64, current: Option<u64> },
    /// The message (its id, or without one its bytes) was already stored,
    /// at `position`; nothing was appended.
    #[error("duplicate: already stored at position {position}")]
    Duplicate { position: u64 },
    /// The log could not be reached or could not answer in time (timeout, no
    /// responders, leader election, connection closed). The outcome of an
    /// append that failed this way is unknown unless the same message is
    /// retried.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// The server is older than the ledger needs.
    #[error("nats-server {found} is too old: {required} or newer is required")]
    ServerTooOld { found: String, required: String },
    /// Anything else: a bad request, a misconfigured stream, a bug.
    #[error("event log error: {0}")]
    Invalid(String),
}

impl LogError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, LogError::Unavailable(_))
    }
}

/// The event-log port.
///
/// Methods return boxed futures (rather than `async fn`) so that the trait is
/// dyn-compatible: callers may hold an `Arc<dyn EventLog>` or be generic over
/// `L: EventLog`. The box costs one allocation per call, nothing next to a
/// network round trip.
pub trait EventLog: Send + Sync + fmt::Debug {
    /// Appends one message under optimistic concurrency on its subject.
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>>;

    /// Appends all messages or none (JetStream atomic batch). Each message
    /// keeps its own expected last subject sequence; a batch holds at most
    /// [`ATOMIC_BATCH_SIZE_MAX`] messages and at most one message per
    /// subject. Returns the positions, in request order (they are
    /// consecutive).
    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>>;

    /// The last message on `subject`, or `None` when it has none yet.
    ///
    /// It sees every append acknowledged to this process before it, on a
    /// replicated stream too (the JetStream adapter asks the leader). An
    /// append acknowledged to another process a moment ago may not be seen
    /// yet (a follower lagging by milliseconds); an append decided on such a
    /// read is refused with [`LogError::Conflict`], never stored.
    fn last_on_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Option<StoredMessage>, LogError>>;

    /// The last message on each of `subjects`, in their order (`None` for a
    /// subject with none yet), all as of one position of the log. The
    /// JetStream adapter sends concurrent callers' subjects together in one
    /// batched direct get. What it sees is as for `last_on_subject`: a
    /// subject read as empty is empty on the leader.
    fn last_on_subjects<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>>;

    /// As [`EventLog::last_on_subjects`], except for the last
    /// `appended_expecting_empty` subjects: ones the caller only ever
    /// appends to expecting them empty (a command's record). For those an
    /// empty answer may come from a lagging replica: were the subject not
    /// empty, the append that follows would be refused. On a replicated
    /// stream this spares the leader a second read per command.
    fn last_on_subjects_appended_expecting_empty<'a>(
        &'a self,
        subjects: &'a [String],
        appended_expecting_empty: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        let _ = appended_expecting_empty;
        self.last_on_subjects(subjects)
    }

    /// Up to `max_messages` messages from `position` on (inclusive), in log
    /// order, fewer when the log ends first. Position 0 reads from the start.
    /// Stateless (batched direct gets), so any replica may answer: one that
    /// lags returns fewer messages, never a gap or a different order. Poll it
    /// to follow the log.
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<StoredMessage>, LogError>>;

    /// Up to `max_messages` messages on `subject` from `position` on
    /// (inclusive), in log order. Like `read_from`, any replica may answer,
    /// and one that lags returns fewer: a caller that must see every
    /// message up to a known one reads until it has seen that one.
    fn read_subject_from<'a>(
        &'a self,
        subject: &'a str,
        position: u64,
        max_messages: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, LogError>>;

    /// Every message from `position` on, in log order, up to the end of the
    /// log as it was when the read started; then the stream ends. Delivery is
    /// pipelined, so this is the fast path for replays and rebuilds.
    fn read_stream(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>>;

    /// Position of the last stored message (0 for an empty log).
    fn last_position(&self) -> BoxFuture<'_, Result<u64, LogError>>;
}

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl ServerVersion {
    /// Parses `2.15.1`, `v2.15.1` or `2.12.0-RC.3` (the pre-release suffix
    /// is ignored: release candidates carry their release's features).
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let core = text.split(['-', '+', ' ']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(ServerVersion { major, minor, patch })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Refuses a server version older than [`MIN_SERVER_VERSION`] (or one that
/// does not parse: better to stop than to run on features that may be
/// silently missing).
pub fn check_server_version(found: &str) -> Result<ServerVersion, LogError> {
    let too_old = || LogError::ServerTooOld { found: found.to_owned(), required: MIN_SERVER_VERSION.to_string() };
    let version = ServerVersion::parse(found).ok_or_else(too_old)?;
    if version < MIN_SERVER_VERSION {
        return Err(too_old());
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = |major, minor, patch| ServerVersion { major, minor, patch };
        assert_eq!(ServerVersion::parse("2.15.1"), Some(v(2, 15, 1)));
        assert_eq!(ServerVersion::parse("v2.12.0"), Some(v(2, 12, 0)));
        assert_eq!(ServerVersion::parse("2.12.0-RC.3"), Some(v(2, 12, 0)));
        assert_eq!(ServerVersion::parse(" 2.10.22\n"), Some(v(2, 10, 22)));
        assert_eq!(ServerVersion::parse("2.12"), None);
        assert_eq!(ServerVersion::parse("2.12.0.1"), None);
        assert_eq!(ServerVersion::parse("banana"), None);
        assert_eq!(ServerVersion::parse(""), None);
    }

    #[test]
    fn old_servers_are_refused() {
        for old in ["2.9.25", "2.11.9", "2.10.0", "1.99.99", "garbage"] {
            match check_server_version(old) {
                Err(LogError::ServerTooOld { found, required }) => {
                    assert_eq!(found, old);
                    assert_eq!(required, "2.12.0");
                }
                other => panic!("{old} should be refused, got {other:?}"),
            }
        }
        for ok in ["2.12.0", "2.12.1", "2.15.1", "3.0.0", "v2.14.0"] {
            assert!(check_server_version(ok).is_ok(), "{ok} should pass");
        }
    }
}
