//! `halobuzz-api`: the HaloBuzz ledger service. Configuration comes from the
//! environment (see `api::config`); a bad value stops start-up with one line
//! naming the variable.
//!
//! `halobuzz-api roles grant|revoke --email <email> --role <role>` is the
//! operator command that grants and revokes roles (see `api::operator`).

use std::process::ExitCode;

/// jemalloc: glibc malloc cost a fifth of the CPU (see the workspace's
/// Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    api::cli::main()
}
