//! The read side: pure projections (event in, document changes out), the
//! read-store port with its embedded (SQLite) and MongoDB adapters, the
//! projector runner with checkpoints, leases and versions, and the queries
//! the API serves.
//!
//! Key decisions:
//! - A projection is a pure function of one event and its log position
//!   (`projection::project`); what needs the current value (running
//!   balances, distinct viewers, increments) is a named store operation
//!   (`change::Change`) that each adapter implements, so the projections
//!   stay pure and testable without a store.
//! - Every batch is applied with its checkpoints, atomically (SQLite, MongoDB
//!   with transactions) or idempotently (MongoDB without: every document
//!   keeps the position of the last event applied, updates apply only to
//!   older documents, the checkpoint is written last). Applying an event
//!   twice changes nothing; a runner killed anywhere resumes and ends equal
//!   to a rebuild.
//! - A new projection version builds beside the old one (suffixed
//!   collections) and takes over through a registry of active versions.
//!
//! It must never append an event, never depend on `commands` or `domain`,
//! and never read event JSON itself: events are read through
//! `events_schema::Envelope::decode` only.

pub mod change;
mod error;
pub mod model;
pub mod mongo;
/// The MongoDB surrogate the tests start (SecantusDB); tests and benches only.
#[cfg(any(test, feature = "testing"))]
pub mod mongo_server;
pub mod projection;
pub mod runner;
pub mod source;
pub mod sqlite;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod versions;

pub use change::{ApplyOutcome, Change, PositionedChange, Posting, ProjectedBatch};
pub use error::ProjectionError;
pub use model::{
    AccountBalance, AdjustmentDoc, AdjustmentStatus, Checkpoint, Collection, DayTotals, DisputeDoc, LeaderboardEntry,
    LedgerDayDoc, LedgerEntryDoc, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, Page, PageRequest, PayoutDoc, PayoutStatus,
    Projection, ProjectionVersion, ResolutionDoc, ResolutionStatus, StreamDoc, StripePaymentDoc, StripePaymentFilter,
    StripeSide, TransactionDoc, TransactionFilter, TrialBalance, TxMetadata, TxStatus, TxType, UserDoc, WalletDoc,
};
pub use mongo::MongoStore;
pub use projection::project;
pub use runner::{
    BATCH_SIZE_DEFAULT, BATCH_SIZE_MAX, Runner, RunnerConfig, RunnerExit, RunnerRole, RunnerStatus, wait_for_position,
    wait_for_store_position,
};
pub use source::{LogMessage, LogSource};
pub use sqlite::SqliteStore;
pub use store::{AnyDoc, ReadStore, ScanPage};
pub use versions::serving_targets;
