//! The api crate's integration tests, in one binary: the `halobuzz-api`
//! binary run as an operator would run it.

mod operator;
mod startup;
