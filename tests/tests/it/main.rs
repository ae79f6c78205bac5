//! The end-to-end tests: the real service over real HTTP, a real
//! nats-server, a real SQLite read store. One binary, one module per
//! concern.

mod authz;
mod bad_input;
mod cluster;
mod concurrency;
mod console;
mod drill;
mod finance_reads;
mod fuzz;
mod journey;
mod mongo_journey;
mod openapi;
mod ops;
mod payout_controls;
mod security;
mod sessions;
mod stripe;
mod stripe_disputes;
mod stripe_paid;
