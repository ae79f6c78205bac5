//! The projections crate's integration tests, in one binary.

#[macro_use]
mod stores;
mod conformance;
mod generator;
mod mongo;
mod runs;
mod specs;
mod stripe_sessions;
mod support;
