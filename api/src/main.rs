//! `halobuzz-api`: the HaloBuzz ledger service. Configuration comes from the
//! environment (see `api::config`); a bad value stops start-up with one line
//! naming the variable.

use std::process::ExitCode;

/// jemalloc: glibc malloc cost a fifth of the CPU (see the workspace's
/// Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Threads of the blocking pool, at most.
const BLOCKING_THREADS_MAX: usize = 64;

fn main() -> ExitCode {
    // The blocking pool runs SQLite calls, event decoding and password
    // hashing, each bounded on its own; the pool's bound caps the threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("halobuzz-api: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(api::service::run_from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halobuzz-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
