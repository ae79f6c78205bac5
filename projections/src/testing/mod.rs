//! Test and benchmark support, public so that the `tests` crate can reuse
//! it against real NATS: a deterministic generator of realistic, consistent
//! event logs (built with `events-schema` types and sealed, hash chains
//! intact), in-memory and file-backed log sources, and a checksum of every
//! collection of a store.
//!
//! Nothing here is used by the runner or the stores.

mod checksum;
mod generator;
mod logs;

pub use checksum::{CollectionChecksum, StoreChecksum, checksum};
pub use generator::{Generator, GeneratorConfig};
pub use logs::{FileLog, MemoryLog};
