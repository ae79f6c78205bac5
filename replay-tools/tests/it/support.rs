//! Shared setup: a nats-server with a generated log in it.

use std::sync::Arc;

use bytes::Bytes;
use commands::log::{EventLog, JetStreamLog};
use commands::testing::{NatsServer, SyncMode};
use projections::testing::{Generator, GeneratorConfig};
use projections::{LogSource, ReadStore, SqliteStore};

/// A server holding the first `events` events of the default generator.
pub async fn server_with_log(events: u64) -> (NatsServer, JetStreamLog) {
    let server = NatsServer::start_with(SyncMode::Interval).await;
    let log = server.event_log().await;
    let published = replay_tools::testing::publish_events(&log, generated(events)).await.expect("publish");
    assert_eq!(published, events);
    assert_eq!(log.last_position().await.expect("last position"), events);
    (server, log)
}

pub fn generated(events: u64) -> impl Iterator<Item = Bytes> {
    Generator::log(GeneratorConfig { users: 300, hosts: 12, ..GeneratorConfig::default() }, events)
}

pub fn source(log: &JetStreamLog) -> Arc<dyn LogSource> {
    let log: Arc<dyn EventLog> = Arc::new(log.clone());
    Arc::new(api::source::EventLogSource::new(log))
}

pub async fn sqlite(dir: &std::path::Path) -> Arc<dyn ReadStore> {
    Arc::new(SqliteStore::open(dir).await.expect("sqlite store"))
}

/// Runs `halobuzz-replay` with the API's environment pointing at `nats_url`
/// and `data_dir`, plus `env`; returns (exit code, stdout, stderr).
pub async fn run_replay(
    nats_url: &str,
    data_dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_halobuzz-replay"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("NATS_URL", nats_url)
        .env("DATA_DIR", data_dir)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
