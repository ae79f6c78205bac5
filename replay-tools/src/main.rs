//! `halobuzz-replay`: the operator CLI. Parses flags, connects as
//! `halobuzz-api` would (same environment), runs one operation of the
//! `replay_tools` library, prints its summary (or JSON with `--json`) and
//! exits with its status:
//!
//! - 0: done, every check passed;
//! - 1: the operation failed (message on stderr, and `{"ok":false,...}`
//!   on stdout with `--json`);
//! - 2: bad usage (clap);
//! - 3: the operation ran and found problems (`audit` failures, `verify`
//!   differences).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// The same allocator as `halobuzz-api` (see the workspace's Cargo.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use api::wiring::{LogConnection, ManagedServer, open_log, open_store};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use projections::Projection;
use replay_tools::{ImportOptions, Progress, ProgressMode, RebuildOptions, Until};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(name = "halobuzz-replay", version, about = "Rebuild, verify, export, import, audit and inspect the HaloBuzz ledger", long_about = None)]
struct Cli {
    /// Print the summary as one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rebuild read models from the log into a new version, then switch to it.
    Rebuild(RebuildArgs),
    /// Rebuild into a shadow and compare with the serving read models.
    Verify(ProjectionArgs),
    /// Write the whole log to a compressed file.
    Export {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Load an export file into an empty stream, verifying every hash chain.
    Import {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Continue an interrupted import of this same file (the stream must
        /// hold exactly a prefix of it).
        #[arg(long)]
        resume: bool,
        /// Read and verify the file only; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check every hash chain, the zero sum, every account constraint, the
    /// holds and the Stripe reconciliation.
    Audit {
        /// Audit an export file instead of the live log.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Each projector's and the gift reactor's position and lag.
    Status,
    /// Drop a version that does not serve: one kept by `rebuild --keep-old`
    /// (on MongoDB, dropping version 1 frees the runbook's names for the
    /// serving version) or a past state built with `--until-*`.
    Drop {
        #[command(flatten)]
        projections: ProjectionArgs,
        /// The version to drop (`status` lists them).
        #[arg(long, value_name = "N")]
        version: u32,
    },
}

#[derive(Debug, Args)]
struct ProjectionArgs {
    /// A projection (repeatable): users, wallets, transactions, streams,
    /// payouts, ledger, gift_leaderboards, stripe_payments.
    #[arg(long = "projection", value_name = "NAME", value_parser = parse_projection, conflicts_with = "all")]
    projections: Vec<Projection>,
    /// Every projection (the default).
    #[arg(long)]
    all: bool,
    /// Events per batch.
    #[arg(long, default_value_t = projections::BATCH_SIZE_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=i64::from(projections::BATCH_SIZE_MAX)))]
    batch: u32,
}

impl ProjectionArgs {
    fn selected(&self) -> Vec<Projection> {
        if self.projections.is_empty() { Projection::ALL.to_vec() } else { self.projections.clone() }
    }
}

#[derive(Debug, Args)]
struct RebuildArgs {
    #[command(flatten)]
    projections: ProjectionArgs,
    /// Build the state as of this log position (no switch).
    #[arg(long, value_name = "N", conflicts_with = "until_time")]
    until_position: Option<u64>,
    /// Build the state as of this time, RFC 3339 (no switch).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    until_time: Option<DateTime<Utc>>,
    /// Keep the previously serving version after the switch.
    #[arg(long)]
    keep_old: bool,
    /// Commit every batch with its checkpoint: slower, but a rebuild that
    /// is killed loses at most one batch (by default a long rebuild
    /// commits up to 1,000,000 events or 10 s at a time).
    #[arg(long)]
    commit_every_batch: bool,
}

fn parse_projection(name: &str) -> Result<Projection, String> {
    Projection::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
        format!("unknown projection {name:?}; one of {}", names.join(", "))
    })
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// What a command printed, and whether its checks passed.
struct Outcome {
    json: serde_json::Value,
    text: String,
    passed: bool,
}

fn outcome<T: Serialize>(value: &T, text: String, passed: bool) -> anyhow::Result<Outcome> {
    Ok(Outcome { json: serde_json::to_value(value)?, text, passed })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Warnings only (the API's warning about development JWT secrets is
    // not the tool's business: it signs no token).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,api::config=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json = cli.json;
    let result = runtime.block_on(run(cli));
    match result {
        Ok(outcome) => {
            if json {
                let mut value = outcome.json;
                if let Some(map) = value.as_object_mut() {
                    map.insert("ok".into(), serde_json::Value::Bool(outcome.passed));
                }
                println!("{value}");
            } else {
                print!("{}", outcome.text);
            }
            if outcome.passed { ExitCode::SUCCESS } else { ExitCode::from(3) }
        }
        Err(error) => {
            let message = format!("{error:#}");
            if json {
                println!("{}", serde_json::json!({ "ok": false, "error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let mode = if cli.quiet { ProgressMode::Hidden } else { ProgressMode::detect() };
    // `audit --in` and `import --dry-run` read a file only.
    match &cli.command {
        Command::Audit { input: Some(file) } => {
            let progress = Progress::new(mode, "audit", 0);
            let report = replay_tools::audit_file(file, &progress).await?;
            return audit_outcome(&report);
        }
        Command::Import { input, dry_run: true, .. } => {
            let progress = Progress::new(mode, "verify", 0);
            let summary = replay_tools::verify_file(input, &progress).await?;
            let text = format!(
                "{}: {} events on {} subjects up to position {}, every hash chain intact (dry run: nothing written)\n",
                summary.file.display(),
                summary.events,
                summary.subjects,
                summary.last_position
            );
            return outcome(&summary, text, true);
        }
        _ => {}
    }
    let config = api::Config::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let connection = open_log(&config, ManagedServer::UseRunning).await?;
    let result = run_connected(cli, mode, &config, &connection).await;
    connection.close().await;
    result
}

async fn run_connected(
    cli: Cli,
    mode: ProgressMode,
    config: &api::Config,
    connection: &LogConnection,
) -> anyhow::Result<Outcome> {
    let log = &connection.log;
    match cli.command {
        Command::Export { out } => {
            let progress = Progress::new(mode, "export", 0);
            let summary = replay_tools::export(log, &out, &progress).await.context("export failed")?;
            let text = format!(
                "exported {} events (positions {}..={}) of stream {} to {}: {} bytes compressed from {} bytes of \
                 payloads, {:.1} s, {} events/s\n",
                summary.events,
                summary.first_position,
                summary.last_position,
                summary.stream,
                summary.file.display(),
                summary.file_bytes,
                summary.payload_bytes,
                summary.seconds,
                summary.events_per_second
            );
            outcome(&summary, text, true)
        }
        Command::Import { input, resume, dry_run } => {
            let progress = Progress::new(mode, "import", 0);
            let summary = replay_tools::import(log, &input, ImportOptions { resume, dry_run }, &progress)
                .await
                .context("import failed")?;
            let text = format!(
                "imported {} events into stream {} ({} written now, {} already there and checked), {} subjects, \
                 every hash chain intact, up to position {}; {:.1} s, {} events/s\n",
                summary.events,
                summary.stream,
                summary.written,
                summary.already_present,
                summary.subjects,
                summary.last_position,
                summary.seconds,
                summary.events_per_second
            );
            outcome(&summary, text, true)
        }
        Command::Audit { input: _ } => {
            // Checkpoints of the projectors (when the store opens) and of the
            // reactor, for the zero sum at each.
            let (checkpoints, read_model) = match open_store(config).await {
                Ok(store) => {
                    let report = replay_tools::status(log, store.as_ref()).await?;
                    let ledger = replay_tools::audit::read_model_ledger(store.as_ref()).await?;
                    if ledger.is_none() {
                        tracing::warn!("the ledger read model kept moving: not compared with the log");
                    }
                    (replay_tools::status::audit_checkpoints(&report), ledger)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no read store: the zero sum is checked at the end only");
                    (Vec::new(), None)
                }
            };
            let progress = Progress::new(mode, "audit", 0);
            let report =
                replay_tools::audit_log(log, checkpoints, read_model, &progress).await.context("audit failed")?;
            audit_outcome(&report)
        }
        Command::Drop { projections, version } => {
            let store = open_store(config).await?;
            let summary = replay_tools::drop_versions(store.as_ref(), &projections.selected(), version)
                .await
                .context("drop failed")?;
            outcome(&summary, format!("dropped {}\n", summary.dropped.join(", ")), true)
        }
        Command::Status => {
            let store = open_store(config).await?;
            let report = replay_tools::status(log, store.as_ref()).await.context("status failed")?;
            let mut text = format!("stream {}: last position {}\n", report.stream, report.last_position);
            for p in &report.projectors {
                text.push_str(&format!(
                    "projector {}@{}{}: position {}, lag {} events (updated {})\n",
                    p.projection,
                    p.version,
                    if p.active { " (serving)" } else { "" },
                    p.position,
                    p.lag_events,
                    p.updated_at.to_rfc3339()
                ));
                if let Some(e) = &p.error {
                    text.push_str(&format!(
                        "  error ({} since {}): {}\n",
                        if e.stopped { "stopped" } else { "retrying" },
                        e.at.to_rfc3339(),
                        e.message
                    ));
                }
            }
            match &report.reactor {
                Some(r) => text.push_str(&format!(
                    "gift reactor: position {}, lag {} events (last ledger commit at {}), {}\n",
                    r.position,
                    r.lag_events,
                    r.last_ledger_position,
                    if r.leased { format!("active: {}", r.owner) } else { "no active instance".to_string() }
                )),
                None => text.push_str("gift reactor: never ran on this log\n"),
            }
            outcome(&report, text, true)
        }
        Command::Rebuild(args) => {
            let store = open_store(config).await?;
            let until = match (args.until_position, args.until_time) {
                (Some(position), _) => Some(Until::Position(position)),
                (None, Some(time)) => Some(Until::Time(time)),
                (None, None) => None,
            };
            let options = RebuildOptions {
                projections: args.projections.selected(),
                until,
                batch_size_max: args.projections.batch,
                keep_old: args.keep_old,
                commit_every_batch: args.commit_every_batch,
            };
            let progress = Progress::new(mode, "rebuild", 0);
            let summary = replay_tools::rebuild(store, connection.source(), &options, &progress)
                .await
                .context("rebuild failed")?;
            let mut text = String::new();
            for t in &summary.targets {
                text.push_str(&format!(
                    "{}: version {} built up to position {}{}{}{}\n",
                    t.projection,
                    t.version,
                    t.position,
                    if t.resumed_from > 0 { format!(" (resumed from {})", t.resumed_from) } else { String::new() },
                    if t.switched {
                        format!(", now serving (was version {})", t.previous_version)
                    } else {
                        ", not switched (built up to a point in the past)".to_string()
                    },
                    if t.dropped_previous {
                        format!(", version {} dropped", t.previous_version)
                    } else {
                        String::new()
                    },
                ));
            }
            text.push_str(&format!(
                "{} events in {:.1} s, {} events/s\n",
                summary.events, summary.seconds, summary.events_per_second
            ));
            outcome(&summary, text, true)
        }
        Command::Verify(args) => {
            let store = open_store(config).await?;
            let progress = Progress::new(mode, "verify", 0);
            let report = replay_tools::verify(store, connection.source(), &args.selected(), args.batch, &progress)
                .await
                .context("verify failed")?;
            let mut text = String::new();
            for c in &report.collections {
                text.push_str(&format!(
                    "{} ({}@{}, position {}): {} live, {} rebuilt, {} differences\n",
                    c.collection,
                    c.projection,
                    c.live_version,
                    c.position,
                    c.live_documents,
                    c.rebuilt_documents,
                    c.differences
                ));
                for d in &c.examples {
                    text.push_str(&format!("  {:?} {}\n", d.kind, d.id));
                }
            }
            if report.live_moved {
                text.push_str("note: the serving read models moved during the comparison; run again when quieter\n");
            }
            text.push_str(if report.consistent {
                "verify: the read models equal a rebuild from the log\n"
            } else {
                "verify: DIFFERENCES FOUND\n"
            });
            let passed = report.consistent;
            outcome(&report, text, passed)
        }
    }
}

fn audit_outcome(report: &replay_tools::AuditReport) -> anyhow::Result<Outcome> {
    let mut text = format!(
        "audited {} ({} events, {} subjects, {} ledger commits, {} users, {} accounts)\n",
        report.source, report.events, report.subjects, report.ledger_commits, report.users, report.accounts
    );
    text.push_str(&format!(
        "zero sum at the end: {}; transit:gifts {} ({} gifts not yet credited)\n",
        report.total_coins_at_end, report.transit_gifts_coins, report.gifts_uncredited
    ));
    for c in &report.checkpoints {
        text.push_str(&format!("zero sum at {} (position {}): {}\n", c.name, c.position, c.total_coins));
    }
    if let Some(position) = report.read_model_compared_at {
        text.push_str(&format!("ledger read model compared with the log at position {position}\n"));
    }
    let r = &report.reconciliation;
    text.push_str(&format!(
        "stripe: {} payments, {} coins purchased, {} refunded, external:stripe {}: {}\n",
        r.payments,
        r.coins_purchased,
        r.coins_refunded,
        r.external_stripe_coins,
        if r.balanced { "reconciled" } else { "NOT RECONCILED" }
    ));
    if r.decisions_unposted > 0 {
        text.push_str(&format!(
            "stripe: {} payment decisions not posted yet (the next delivery of their events posts them)\n",
            r.decisions_unposted
        ));
    }
    for finding in &report.findings {
        text.push_str(&format!("FAILED {finding}\n"));
    }
    if report.failures as usize > report.findings.len() {
        text.push_str(&format!("... and {} more\n", report.failures as usize - report.findings.len()));
    }
    text.push_str(if report.passed { "audit: passed\n" } else { "audit: FAILED\n" });
    outcome(report, text, report.passed)
}
