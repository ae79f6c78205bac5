//! End-to-end tests, the load generator and the benchmarks that cross crates.
//!
//! Filled as the crates above it grow. It never holds production code.
