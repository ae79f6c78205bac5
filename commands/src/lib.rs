//! Command handling: load an aggregate, decide, append with optimistic
//! concurrency, retry; the event-log port and its JetStream adapter; the gift
//! reactor.
//!
//! Filled by the event-log issue. It must never read a read model: every
//! decision is made from the log alone.
//!
//! Settings come in as values ([`log::LogConfig`],
//! [`managed::ManagedConfig`]): the service's environment is read by
//! `api::Config` alone (only the binary lookup reads `NATS_SERVER_BIN` and
//! `HALOBUZZ_TOOLS_DIR`).
//!
//! # Modules
//!
//! - [`handler`]: every command of the design as a load-decide-append loop
//!   ([`handler::Commands`]): the aggregates a decision reads are loaded from
//!   the last message of their subjects, the events are sealed into their
//!   hash chains and appended together (atomic batch) with the command's
//!   idempotency record, and a lost race is decided again (bounded). A
//!   Stripe event is single appends instead, each guarded by its subject's
//!   expected position (record, payment decision, posting on the buyer's
//!   ledger, mark), exactly once by the decision's position.
//! - [`subjects`]: the subject of each aggregate (`hb.<kind>.<id>`).
//! - [`retry`]: the one retry schedule (bounded, jittered exponential
//!   back-off) every retry loop of the crate takes its pauses from.
//! - `aggregate_cache`: the handler's bounded memory of last events by
//!   subject and position; a decision made from it is trusted only when
//!   its append is guarded by the cached position.
//! - [`reactor`]: the gift reactor, crediting hosts in batches, exactly once,
//!   one active instance (pinned JetStream consumer) and standbys.
//! - [`projector_errors`]: the projectors' current errors, by projection,
//!   in a key-value bucket the API's projector process writes and
//!   `halobuzz-replay status` reads (not the read store, which may be what
//!   refuses writes).
//! - [`rejections`]: the first answers of rejected commands, by idempotency
//!   key, in a key-value bucket apart from the log (24 h).
//! - [`log`]: the event-log port ([`log::EventLog`]: append under optimistic
//!   concurrency, atomic multi-subject batches, last message of a subject,
//!   last messages of several subjects as of one position (coalesced across
//!   callers into batched direct gets), ordered reads from a position, one
//!   subject's messages from a position, last position) and its NATS JetStream
//!   adapter ([`log::JetStreamLog`]), which creates or checks the `HALOBUZZ`
//!   stream, refuses servers older than 2.12, classifies failures
//!   ([`log::LogError`]) and retries the transient ones with the expected
//!   sequence and the message id (or the bytes) as the guard against double
//!   appends. Byte-level: payloads are opaque.
//! - [`managed`]: the embedded default, a local `nats-server` child with
//!   JetStream on `DATA_DIR`, supervised (restarted when it dies) and stopped
//!   cleanly; also the lookup (or pinned install) of the `nats-server`
//!   binary.
//! - `testing` (feature `testing`, for tests and benches only): the harness
//!   every crate's tests use: real `nats-server` processes, single
//!   (`testing::NatsServer`) or a loopback cluster (`testing::NatsCluster`),
//!   with kill -9 and restart.

mod aggregate_cache;
pub mod handler;
pub mod log;
pub mod managed;
pub mod projector_errors;
pub mod reactor;
pub mod rejections;
pub mod retry;
pub mod subjects;
#[cfg(feature = "testing")]
pub mod testing;
