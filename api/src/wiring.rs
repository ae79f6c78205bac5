//! The connections a `Config` names, made in one place for the service
//! and the operator tools (`halobuzz-replay`): the event log (`NATS_URL`,
//! or the managed nats-server of `DATA_DIR`) and the read store
//! (`MONGODB_URI`, or the SQLite file in `DATA_DIR`).
//!
//! With no `NATS_URL` the service runs its own nats-server on
//! `DATA_DIR/nats`. Two servers must never share that folder, so a tool run
//! beside the service first looks for the running one
//! (`ManagedServer::UseRunning`) and starts one of its own only when none
//! answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use commands::log::{EventLog, JetStreamLog};
use commands::managed::{ManagedConfig, ManagedNats, SyncMode};
use projections::{LogSource, MongoStore, ReadStore, SqliteStore};
use tokio::io::AsyncReadExt;

use crate::config::Config;
use crate::source::EventLogSource;

/// How long a tool waits for an already running managed server to greet
/// it before starting one of its own.
const PROBE_TIMEOUT_MS: u64 = 1_500;

/// What to do about the managed nats-server when `NATS_URL` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagedServer {
    /// Start it: the service owns `DATA_DIR/nats`.
    Start,
    /// Use the one already running on `DATA_DIR` if it answers, else start
    /// one: a tool run beside the service.
    UseRunning,
}

/// The event log, and the managed server started for it, if any (to be
/// stopped after everything that uses the log).
#[derive(Debug)]
pub struct LogConnection {
    pub log: JetStreamLog,
    pub managed: Option<ManagedNats>,
}

impl LogConnection {
    /// The log as the projectors read it.
    pub fn source(&self) -> Arc<dyn LogSource> {
        let log: Arc<dyn EventLog> = Arc::new(self.log.clone());
        Arc::new(EventLogSource::new(log))
    }

    /// Closes the log, then stops the managed server started for it, if any.
    pub async fn close(self) {
        drop(self.log);
        if let Some(server) = self.managed
            && let Err(e) = server.shutdown().await
        {
            tracing::warn!(error = %e, "stopping the managed nats-server");
        }
    }
}

/// Connects the event log `config` names: `NATS_URL` (comma-separated
/// servers, with `NATS_TOKEN`), else the managed nats-server on `DATA_DIR`.
pub async fn open_log(config: &Config, managed: ManagedServer) -> anyhow::Result<LogConnection> {
    let (urls, token, server) = match config.external_nats() {
        Some((urls, token)) => (urls, token, None),
        None => {
            let running = match managed {
                ManagedServer::Start => None,
                ManagedServer::UseRunning => running_managed_url(&config.data_dir).await,
            };
            match running {
                Some(url) => (vec![url], commands::managed::running_token(&config.data_dir), None),
                None => {
                    let server = start_managed(config).await?;
                    (vec![server.url().to_string()], Some(server.token().clone()), Some(server))
                }
            }
        }
    };
    let log_config = config.log_config(urls, token);
    match JetStreamLog::connect(log_config).await.context("connecting the event log (NATS_URL)") {
        Ok(log) => Ok(LogConnection { log, managed: server }),
        Err(e) => {
            if let Some(server) = server
                && let Err(stop) = server.shutdown().await
            {
                tracing::warn!(error = %stop, "stopping the managed nats-server");
            }
            Err(e)
        }
    }
}

async fn start_managed(config: &Config) -> anyhow::Result<ManagedNats> {
    let sync = if config.nats_sync_always { SyncMode::Always } else { SyncMode::Interval };
    let managed_config =
        ManagedConfig { port: Some(config.nats_port), ..ManagedConfig::new(config.data_dir.clone(), sync) };
    ManagedNats::start_with(managed_config)
        .await
        .context("starting the managed nats-server on DATA_DIR (NATS_URL is not set)")
}

/// The URL of a managed server already running on `data_dir`, if one
/// greets a client on the port its configuration names. A NATS server
/// speaks first (`INFO {...}`), so reading its greeting tells it from
/// another program that took the port since.
async fn running_managed_url(data_dir: &Path) -> Option<String> {
    let port = commands::managed::running_port(data_dir)?;
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut greeting = [0u8; 5];
        stream.read_exact(&mut greeting).await.ok()?;
        (&greeting == b"INFO ").then_some(())
    };
    tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), probe).await.ok()??;
    let url = format!("nats://127.0.0.1:{port}");
    tracing::info!(%url, "using the managed nats-server already running on DATA_DIR");
    Some(url)
}

/// Opens the read store `config` names: `MONGODB_URI`, else the SQLite
/// file in `DATA_DIR` (created if needed).
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ReadStore>> {
    Ok(match &config.mongodb_uri {
        Some(uri) => Arc::new(
            MongoStore::connect(uri, config.mongodb_db.as_deref())
                .await
                .context("connecting the read store (MONGODB_URI)")?,
        ),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating DATA_DIR {}", config.data_dir.display()))?;
            Arc::new(SqliteStore::open(&config.data_dir).await.context("opening the embedded read store (DATA_DIR)")?)
        }
    })
}
