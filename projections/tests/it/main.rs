//! The projections crate's integration tests, in one binary.

mod conformance;
mod generator;
mod runs;
mod specs;
mod stripe_sessions;
mod support;
