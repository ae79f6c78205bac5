//! Integration tests of the `commands` crate, against real nats-server
//! processes started by `commands::testing` (never mocks, never skipped).

mod cluster;
mod conformance;
mod durability;
mod handler;
mod load;
mod managed;
mod reactor;
mod records;
mod retries;
mod stripe;
mod stripe_interleavings;
mod support;
mod world;
