//! End-to-end tests, the load generator and the benchmarks that cross crates.
//!
//! [`http`] starts the real service (the `api` crate's `Service`, the very
//! router the `halobuzz-api` binary serves) on a loopback port against a real
//! nats-server (`commands::testing::NatsServer`) and an SQLite read store in
//! a temporary folder, and talks to it over HTTP. It never holds production
//! code. [`stripe`] starts localstripe and signs webhooks with Stripe's own
//! Node library. [`latency`] holds the benchmarks' percentiles. [`cluster`]
//! runs the service as separate processes (killed and restarted by the
//! multi-node test) and talks to them as a client that sees replicas die.

pub mod cluster;
pub mod http;
pub mod latency;
pub mod stripe;
