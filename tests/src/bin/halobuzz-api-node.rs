//! `halobuzz-api` as the cluster test runs it: the same entry
//! (`api::cli::main`) and allocator, built by cargo with this crate's tests
//! so that the test never starts a stale binary of another package.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    api::cli::main()
}
