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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => runtime.block_on(api::service::run_from_env()),
        Some("roles") => runtime.block_on(api::operator::run_roles(&args[1..])).map(|done| println!("{done}")),
        Some(_) => Err(anyhow::anyhow!("unknown arguments; run without any to serve, or {}", api::operator::USAGE)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halobuzz-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}
