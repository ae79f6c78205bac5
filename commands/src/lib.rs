//! Command handling: load an aggregate, decide, append with optimistic
//! concurrency, retry; the event-log port and its JetStream adapter; the gift
//! reactor.
//!
//! Filled by the event-log issue. It must never read a read model: every
//! decision is made from the log alone.
