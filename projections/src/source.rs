//! The log the projectors read: a small port, so that this crate does not
//! depend on `commands` (the API adapts its JetStream log to it).

use std::fmt;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::ProjectionError;

/// One stored event: its log position and its stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// 1-based, gapless in JetStream (the stream denies deletes).
    pub position: u64,
    /// The envelope's stored bytes: `Envelope::decode` reads them.
    pub payload: Bytes,
}

/// An ordered, append-only log, read from a position on.
///
/// Boxed futures rather than `async fn` so that the trait is dyn-compatible
/// (`Arc<dyn LogSource>`).
pub trait LogSource: Send + Sync + fmt::Debug {
    /// Up to `max_messages` messages from `position` on (inclusive), in log
    /// order; fewer (or none) when the log ends first.
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>>;

    /// Position of the last stored message (0 for an empty log).
    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>>;
}
