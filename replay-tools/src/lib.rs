//! The operator tools of the HaloBuzz ledger (binary `halobuzz-replay`):
//! rebuild and verify the read models from the log, export the log to a
//! file and import it back, audit the ledger, and report the workers'
//! positions.
//!
//! What it owns: the export file format (`archive`), the hash-chain
//! verification in log order (`chain`), the audit's checks (`audit`), and
//! the choice of versions for a side-by-side rebuild (`rebuild`). It reads
//! the log through `commands`' JetStream adapter and writes read models
//! only through `projections`' runner and read-store port, with the same
//! environment and connections as `halobuzz-api` (`api::wiring`).
//!
//! Key decision: every operation is a library function with a serialisable
//! summary, and the CLI (`main.rs`) only parses flags, prints and picks the
//! exit status, so every operation is tested without a process.
//!
//! It must never append a domain event: the only writes to the log are
//! `import`'s verbatim copies of an export into an empty stream (or the
//! rest of an interrupted import). It must never write a read-model version
//! that serves queries: rebuilds and verifications build new versions
//! beside it, and a rebuild's only change to the serving side is the
//! atomic switch of the version registry.

pub mod archive;
pub mod audit;
pub mod chain;
pub mod export;
pub mod import;
pub mod progress;
pub mod rebuild;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;

pub use audit::{AuditReport, Auditor, NamedCheckpoint, audit_file, audit_log};
pub use export::{ExportSummary, export};
pub use import::{ImportError, ImportOptions, ImportSummary, import, verify_file};
pub use progress::{Progress, ProgressMode};
pub use rebuild::{DropSummary, RebuildOptions, RebuildSummary, Until, drop_versions, rebuild};
pub use status::{StatusReport, status};
pub use verify::{VerifyReport, verify};
