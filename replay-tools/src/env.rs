//! The tool's connections, from the environment `halobuzz-api` reads
//! (`api::Config`): the event log (`NATS_URL`, or the managed nats-server
//! of `DATA_DIR`) and the read store (`MONGODB_URI`, or the SQLite file in
//! `DATA_DIR`).
//!
//! With no `NATS_URL`, the API runs its own nats-server on
//! `DATA_DIR/nats`. Two servers must never share that folder, so the tool
//! first looks for the running one (its port is in
//! `DATA_DIR/nats-server.conf`) and starts a managed server of its own
//! only when none answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::Config;
use api::source::EventLogSource;
use commands::log::{EventLog, JetStreamLog, LogConfig};
use commands::managed::{ManagedConfig, ManagedNats, SyncMode};
use projections::{LogSource, MongoStore, ReadStore, SqliteStore};

/// How long the tool waits for an already running managed server.
const PROBE_TIMEOUT_MS: u64 = 1_500;

/// The event log, and the managed server the tool started, if any.
#[derive(Debug)]
pub struct LogConnection {
    pub log: JetStreamLog,
    managed: Option<ManagedNats>,
}

impl LogConnection {
    /// Connects as the API would.
    pub async fn open(config: &Config) -> anyhow::Result<LogConnection> {
        let (urls, managed) = match &config.nats_url {
            Some(urls) => {
                (urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect::<Vec<_>>(), None)
            }
            None => match running_managed_url(&config.data_dir).await {
                Some(url) => (vec![url], None),
                None => {
                    let sync = if config.nats_sync_always { SyncMode::Always } else { SyncMode::Interval };
                    let managed_config = ManagedConfig {
                        port: Some(config.nats_port),
                        ..ManagedConfig::new(config.data_dir.clone(), sync)
                    };
                    let server = ManagedNats::start_with(managed_config)
                        .await
                        .context("starting a managed nats-server on DATA_DIR (NATS_URL is not set)")?;
                    (vec![server.url().to_string()], Some(server))
                }
            },
        };
        let mut log_config = LogConfig::new(urls);
        log_config.replicas = config.nats_stream_replicas;
        let log = JetStreamLog::connect(log_config).await.context("connecting the event log (NATS_URL)")?;
        Ok(LogConnection { log, managed })
    }

    /// The log as the projectors read it.
    pub fn source(&self) -> Arc<dyn LogSource> {
        let log: Arc<dyn EventLog> = Arc::new(self.log.clone());
        Arc::new(EventLogSource::new(log))
    }

    /// Stops the managed server the tool started, if any.
    pub async fn close(self) {
        drop(self.log);
        if let Some(server) = self.managed
            && let Err(e) = server.shutdown().await
        {
            tracing::warn!(error = %e, "stopping the managed nats-server");
        }
    }
}

/// The URL of a managed server already running on `data_dir`, if one
/// answers on the port its configuration file names.
async fn running_managed_url(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("nats-server.conf")).ok()?;
    let port: u16 = text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("listen:")?;
        rest.trim().trim_matches('"').rsplit(':').next()?.parse().ok()
    })?;
    let url = format!("nats://127.0.0.1:{port}");
    let probe = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .max_reconnects(1)
        .connect(url.as_str());
    match tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS * 2), probe).await {
        Ok(Ok(client)) => {
            drop(client);
            tracing::info!(%url, "using the managed nats-server already running on DATA_DIR");
            Some(url)
        }
        _ => None,
    }
}

/// Opens the read store as the API would.
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
