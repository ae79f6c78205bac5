//! replay-tools against real nats-servers and real SQLite stores: export,
//! import (with resume and tampering), audit, rebuild (killed midway),
//! verify, status, and the CLI binary's exit codes and JSON.

mod cli;
mod copy;
mod mongo;
mod rebuild;
mod stripe;
mod support;
