//! The one error type of this crate.

use events_schema::SchemaError;

/// Why a projection, a store operation, a query or the runner failed.
///
/// Client mistakes (`BadCursor`, `InvalidInput`) are separated from technical
/// failures so that the API can answer 400 for the former and 503 for the
/// latter without inspecting messages.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A stored event could not be read. The runner stops rather than skip
    /// it: a skipped event would leave every read model silently wrong.
    #[error("event at position {position} is unreadable: {source}")]
    Decode {
        position: u64,
        #[source]
        source: SchemaError,
    },
    /// The log source failed (unreachable, timed out).
    #[error("log source: {0}")]
    Source(String),
    /// The read store failed (unreachable, a constraint, a full disk).
    #[error("read store: {0}")]
    Store(String),
    /// The read store refused an operation that would fail again if
    /// retried (a write to a view, an index conflict, a document too
    /// large, a duplicate on a unique field other than the key, a read
    /// preference refused in a transaction, missing privileges). The
    /// runner stops on it, with the error, rather than retry it forever;
    /// `Store` errors are the transient ones.
    #[error("read store refused: {0}")]
    StoreRefused(String),
    /// A stored document could not be read back as its type: a bug or a
    /// hand-edited store, never bad client input.
    #[error("corrupt document in {collection}: {reason}")]
    Corrupt { collection: String, reason: String },
    /// This projection version was replaced by a newer one: its runner stops.
    #[error("projection {projection} version {version} is retired (active version {active})")]
    Retired { projection: String, version: u32, active: u32 },
    /// A wait for a log position ran out of time.
    #[error("read models at position {reached}, {wanted} not reached in time")]
    Lagging { wanted: u64, reached: u64 },
    /// A paging cursor that this crate did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// A query argument outside its domain (an unknown status, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A table of a projection version exists with other columns than this
    /// build makes: an older build created it, and no migration runs in
    /// place (the rows' new fields would be guesses). The projection is
    /// rebuilt from the log beside it; the table is left as it is.
    #[error(
        "table {table} has other columns than this build makes ({difference}): rebuild the projection from the \
         log with `halobuzz-replay rebuild --projection {projection}`"
    )]
    SchemaMismatch { table: String, projection: String, difference: String },
    /// An injected fault, for crash tests (see `SqliteStore::fail_after_writes`).
    #[error("injected fault after {writes} writes")]
    InjectedFault { writes: u64 },
}

impl ProjectionError {
    /// Whether the caller (not the system) is at fault.
    pub fn is_client_error(&self) -> bool {
        matches!(self, ProjectionError::BadCursor | ProjectionError::InvalidInput(_))
    }

    pub(crate) fn store(e: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Store(e.to_string())
    }

    pub(crate) fn corrupt(collection: &str, reason: impl std::fmt::Display) -> ProjectionError {
        ProjectionError::Corrupt { collection: collection.to_string(), reason: reason.to_string() }
    }
}
