//! The HTTP API of the HaloBuzz ledger (binary `halobuzz-api`): auth
//! (argon2 passwords, HS256 JWTs), the command routes (each a command of
//! `commands`, answered with its log `position`), the query routes (read
//! models of `projections`, with `minPosition` for read-your-writes),
//! health, Prometheus metrics and the OpenAPI 3.1 document; and the process
//! that runs it all: the managed nats-server by default, the projector
//! runner and the gift reactor (`HALOBUZZ_ROLE`).
//!
//! Key decisions: every error goes through one `AppError` that becomes
//! RFC 9457 problem+json in one place (`error.rs`); request and response
//! types are the API's own (`views.rs`), never an event's or a read model's
//! stored shape; a command's answer is built from the events it appended,
//! so that a repeated `Idempotency-Key` gets the very same body.
//!
//! It must never hold state of its own: the log and the read store hold
//! everything, so any number of replicas run side by side. What lives in
//! memory (rate-limit windows, metrics) is per-replica soft state that may
//! be lost at any time. It must never decide a command itself (the
//! deciders do), nor serialise an event for a client.
//!
//! # Modules
//!
//! - [`config`]: the environment, checked at start.
//! - [`service`]: start-up, serving, graceful shutdown; [`server`]: the
//!   HTTP/1 server with the slow-client limits and the per-kind pools.
//! - [`routes`]: the router and the handlers; [`extract`]: extractors that
//!   answer bad input with problem+json; [`views`]: request/response types.
//! - [`auth`]: passwords and tokens; [`ratelimit`]; [`metrics`] (with the
//!   metered event log); [`source`]: the projectors' log source over the
//!   event log; [`openapi`]; [`state`].
//! - [`cli`]: the process entry (runtime, arguments, exit status).
//! - [`operator`]: the operator command (`halobuzz-api roles ...`).
//! - [`wiring`]: the event log and the read store a `Config` names, for
//!   the service and the replay tools.
//! - [`stripe`]: the Stripe client (async-stripe), the webhook signature
//!   verifier and the reading of webhook events by the fields they need.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod service;
pub mod source;
pub mod state;
pub mod stripe;
pub mod views;
pub mod wiring;

pub use config::Config;
pub use error::AppError;
pub use service::Service;
