//! The process entry of `halobuzz-api`: the async runtime, the arguments
//! (none: serve; `roles ...`: the operator command), the exit status. The
//! binary is this call and its allocator, so that the tests' process
//! binary (`halobuzz-tests`'s `halobuzz-api-node`) runs the very same
//! start-up.

use std::process::ExitCode;

/// Threads of the blocking pool, at most.
const BLOCKING_THREADS_MAX: usize = 64;

/// Runs `halobuzz-api` with the process's arguments and environment.
pub fn main() -> ExitCode {
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => runtime.block_on(crate::service::run_from_env()),
        Some("roles") => runtime.block_on(crate::operator::run_roles(&args[1..])).map(|done| println!("{done}")),
        Some(_) => Err(anyhow::anyhow!("unknown arguments; run without any to serve, or {}", crate::operator::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halobuzz-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
