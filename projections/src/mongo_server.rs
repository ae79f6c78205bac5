//! The MongoDB wire-protocol server the tests run the MongoDB adapter
//! against: SecantusDB (`secantusd-py`, installed pinned under `.tools/` by
//! `scripts/ensure-mongo-surrogate.sh`), started on a free loopback port in
//! a folder of its own, as a one-member replica set (transactions) or
//! `--standalone` (the guarded path without transactions).
//!
//! A test that needs it and cannot get it fails: there is no skip. When
//! `MONGODB_URI` is set, [`mongo_targets`] adds that server, so the same
//! tests also run against a real MongoDB.
//!
//! The surrogate is not MongoDB: the adapter follows MongoDB's
//! documentation wherever the surrogate is more lenient (README, "Tests").

use std::fmt;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The variable naming the `secantusd-py` executable (`scripts/test.sh`
/// sets it from `scripts/ensure-mongo-surrogate.sh`).
pub const SECANTUSD_BIN_VAR: &str = "SECANTUSD_BIN";
/// How long a server may take to listen (a Python process importing
/// WiredTiger on a loaded machine).
const STARTUP_TIMEOUT_MS: u64 = 60_000;
/// Start attempts (a free port can be taken between probing and binding).
const START_ATTEMPTS_MAX: usize = 3;
/// WiredTiger's cache per test server: the tests' data is small.
const CACHE_SIZE: &str = "256M";
/// MongoDB's limit on database names, in bytes.
pub const DATABASE_NAME_BYTES_MAX: usize = 63;

/// How the server presents itself to drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// A one-member replica set: sessions and transactions.
    ReplicaSet,
    /// A standalone server: no transactions.
    Standalone,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::ReplicaSet => "replica-set",
            Topology::Standalone => "standalone",
        }
    }
}

/// A running SecantusDB. Dropping it kills the process and deletes its
/// folder; a watchdog shell kills it too when the test process dies
/// without dropping it (a shared server, a killed test run).
pub struct MongoSurrogate {
    topology: Topology,
    port: u16,
    dir: PathBuf,
    watchdog: Option<Child>,
}

impl fmt::Debug for MongoSurrogate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSurrogate").field("uri", &self.uri()).field("topology", &self.topology).finish()
    }
}

/// The path of `secantusd-py`: `$SECANTUSD_BIN`, else the pinned install
/// the script makes (running the script when it is missing). Panics with
/// what to do when neither works.
pub fn secantusd_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        if let Ok(path) = std::env::var(SECANTUSD_BIN_VAR) {
            let path = PathBuf::from(path);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(format!("{SECANTUSD_BIN_VAR}={} is not a file", path.display()))
            };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-mongo-surrogate.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} failed ({})", script.display(), output.status))
        }
    });
    match found {
        Ok(path) => path.clone(),
        Err(error) => panic!(
            "the MongoDB tests need SecantusDB and could not get it: {error}\n\
             Run scripts/ensure-mongo-surrogate.sh (needs python3 -m venv and access to PyPI) \
             and set {SECANTUSD_BIN_VAR} to the path it prints."
        ),
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("no free port: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("no local address: {e}")).port()
}

/// The script the watchdog shell runs: it starts the server, records its
/// pid, and kills it when the owner (the test process) is gone or when it
/// is told to stop.
const WATCHDOG_SCRIPT: &str = r#"owner="$1"; shift
"$@" &
server=$!
echo "$server" > "$WATCHDOG_DIR/server.pid"
trap 'kill -9 "$server" 2>/dev/null; exit 0' TERM INT
while kill -0 "$owner" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 1 & wait $!; done
kill -9 "$server" 2>/dev/null
rm -rf "$WATCHDOG_DIR/data"
"#;

impl MongoSurrogate {
    /// Starts a server of its own (for tests that kill or restart it).
    /// Blocking: call it from `spawn_blocking` or use [`Self::start`].
    pub fn start_blocking(topology: Topology) -> MongoSurrogate {
        let binary = secantusd_binary();
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("halobuzz-secantus-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("data"))
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
            let mut server = MongoSurrogate { topology, port, dir, watchdog: None };
            match server.spawn_ready(&binary) {
                Ok(()) => return server,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("SecantusDB did not start after {START_ATTEMPTS_MAX} attempts: {last_failure}");
    }

    /// [`Self::start_blocking`] off the async runtime's workers.
    pub async fn start(topology: Topology) -> MongoSurrogate {
        match tokio::task::spawn_blocking(move || MongoSurrogate::start_blocking(topology)).await {
            Ok(server) => server,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    /// The server of `topology` shared by every test of this process,
    /// started on first use. It is never dropped: its watchdog stops it
    /// when the process exits. Each test uses a database of its own
    /// ([`database_name`]).
    pub async fn shared(topology: Topology) -> &'static MongoSurrogate {
        static REPLICA_SET: OnceLock<MongoSurrogate> = OnceLock::new();
        static STANDALONE: OnceLock<MongoSurrogate> = OnceLock::new();
        let cell = match topology {
            Topology::ReplicaSet => &REPLICA_SET,
            Topology::Standalone => &STANDALONE,
        };
        if let Some(server) = cell.get() {
            return server;
        }
        let started =
            tokio::task::spawn_blocking(move || cell.get_or_init(|| MongoSurrogate::start_blocking(topology)));
        match started.await {
            Ok(server) => server,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }

    fn spawn_ready(&mut self, binary: &Path) -> Result<(), String> {
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("cannot clone a log handle: {e}"))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("secantus-watchdog")
            .arg(std::process::id().to_string())
            .arg(binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--storage-path"])
            .arg(self.dir.join("data"))
            .args(["--cache-size", CACHE_SIZE, "--log-level", "WARNING", "--enable-test-commands"])
            .env("WATCHDOG_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if self.topology == Topology::Standalone {
            command.arg("--standalone");
        }
        self.watchdog = Some(command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?);
        let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            let exited = self.watchdog.as_mut().and_then(|w| w.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let why = if exited.is_some() { "exited" } else { "did not listen in time" };
                let failure = format!("SecantusDB on port {} {why}\n--- log ---\n{}", self.port, self.log_tail());
                self.kill();
                return Err(failure);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn topology(&self) -> Topology {
        self.topology
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URI the driver discovers the topology from (a replica set
    /// member is found as one).
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=10000", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("secantusd.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        const TAIL_BYTES_MAX: usize = 8 * 1024;
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(TAIL_BYTES_MAX);
        let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text[start..].to_string()
    }

    /// SIGKILL the server and its watchdog, and wait for them.
    pub fn kill(&mut self) {
        let pid = std::fs::read_to_string(self.dir.join("server.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<u32>() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).stderr(Stdio::null()).status();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for MongoSurrogate {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database name of its own for one test run: `label` (letters, digits
/// and `_` kept), then a process and counter suffix, at most 63 bytes
/// (MongoDB's limit).
pub fn database_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let suffix = format!("_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let clean: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let room = DATABASE_NAME_BYTES_MAX - suffix.len();
    format!("{}{suffix}", &clean[..clean.len().min(room)])
}

/// A MongoDB server a test runs against.
#[derive(Debug, Clone)]
pub struct MongoTarget {
    /// `secantus-replica-set`, `secantus-standalone` or `MONGODB_URI`.
    pub label: String,
    pub uri: String,
    /// Whether the adapter must find transactions there (`None`: a real
    /// server, whatever it is).
    pub transactions: Option<bool>,
}

/// The servers the MongoDB tests run against: the surrogate in both
/// topologies, always, and the server `MONGODB_URI` names when it is set.
pub async fn mongo_targets() -> Vec<MongoTarget> {
    let mut targets = Vec::with_capacity(3);
    for topology in [Topology::ReplicaSet, Topology::Standalone] {
        let server = MongoSurrogate::shared(topology).await;
        targets.push(MongoTarget {
            label: format!("secantus-{}", topology.name()),
            uri: server.uri(),
            transactions: Some(topology == Topology::ReplicaSet),
        });
    }
    if let Ok(uri) = std::env::var("MONGODB_URI")
        && !uri.trim().is_empty()
    {
        targets.push(MongoTarget { label: "MONGODB_URI".into(), uri, transactions: None });
    }
    targets
}

/// The shared surrogate of one topology, for tests that run once per
/// topology.
pub async fn surrogate_target(topology: Topology) -> MongoTarget {
    let server = MongoSurrogate::shared(topology).await;
    MongoTarget {
        label: format!("secantus-{}", topology.name()),
        uri: server.uri(),
        transactions: Some(topology == Topology::ReplicaSet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_fit_mongodbs_limit_and_differ() {
        let long = database_name(&"generated_log_projects_consistently".repeat(4));
        assert!(long.len() <= DATABASE_NAME_BYTES_MAX, "{long}");
        assert_ne!(database_name("a"), database_name("a"));
        assert!(database_name("a-b.c").starts_with("a_b_c_"));
    }
}
