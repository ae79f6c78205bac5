//! The stored shape of events: schema files, golden fixtures, upcasting and
//! the hash chain.

mod chain;
mod fixtures;
mod samples;
mod schemas;
