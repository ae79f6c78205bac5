//! The service as separate processes, for the multi-node test: a
//! `halobuzz-api` process (the `halobuzz-api-node` binary: the same entry)
//! with its own environment and port, that a test kills with SIGKILL and
//! starts again; and an HTTP client that reports a dead replica as an error
//! instead of panicking, as a mobile app sees it.
//!
//! The multi-node test (tests/tests/it/cluster.rs) and the scaling bench
//! (`BENCH_MODE=scaling`, tests/benches/http.rs) start their processes
//! through these, each with [`with_role`] on one shared environment.
//!
//! Panics on setup failures: tests fail, they never skip.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;

use crate::http::Resp;

/// How long a process gets to answer `/health` with 200 after its start.
const READY_MS_MAX: u64 = 90_000;
/// How long one request may take before the client gives up on it.
const REQUEST_MS_MAX: u64 = 10_000;
/// The last bytes of a process's log shown in a failure.
const LOG_TAIL_BYTES_MAX: u64 = 8 * 1024;

/// One `halobuzz-api` process. Dropping it kills it.
pub struct ServiceProcess {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for ServiceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProcess").field("name", &self.name).field("port", &self.port).finish_non_exhaustive()
    }
}

impl ServiceProcess {
    /// Starts `binary` as `name` with exactly `env` (plus `PATH`, its own
    /// `PORT` and `DATA_DIR`) and waits until `/health` answers 200.
    pub async fn start(binary: &Path, name: &str, env: &[(String, String)]) -> ServiceProcess {
        let dir = tempfile::Builder::new().prefix(&format!("halobuzz-{name}-")).tempdir().expect("a folder");
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        drop(listener);
        let mut process =
            ServiceProcess { name: name.into(), binary: binary.into(), env: env.to_vec(), port, dir, child: None };
        process.spawn();
        process.wait_ready().await;
        process
    }

    fn spawn(&mut self) {
        let log = File::options().create(true).append(true).open(self.log_path()).expect("a log file");
        let child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PORT", self.port.to_string())
            .env("DATA_DIR", self.dir.path().join("data"))
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::from(log.try_clone().expect("the log file again")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.binary.display()));
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id while it runs (the bench reads its CPU and memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder, and waits until ready.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_ready().await;
    }

    /// Waits until `/health` answers 200; panics with the log's tail.
    pub async fn wait_ready(&mut self) {
        let client = Remote::new(&self.base());
        let deadline = Instant::now() + Duration::from_millis(READY_MS_MAX);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{} exited with {status} at start\n--- its log ---\n{}", self.name, self.log_tail());
            }
            if let Ok(health) = client.send(Method::GET, "/health", None, None, None).await
                && health.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy after {READY_MS_MAX} ms\n--- its log ---\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("service.log")
    }

    /// The last lines of the process's log (stdout and stderr).
    pub fn log_tail(&self) -> String {
        let Ok(mut file) = File::open(self.log_path()) else {
            return "(no log)".into();
        };
        let length = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL_BYTES_MAX)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `env` with `HALOBUZZ_ROLE=role` appended (last, so that it wins over a
/// role already in `env`).
pub fn with_role(env: &[(String, String)], role: &str) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push(("HALOBUZZ_ROLE".into(), role.into()));
    env
}

/// The reactor's status and position in a `/health` answer (`""` and 0
/// when the process runs none).
pub fn reactor_of(health: &Value) -> (&str, u64) {
    let reactor = &health["checks"]["reactor"];
    (reactor["status"].as_str().unwrap_or(""), reactor["position"].as_u64().unwrap_or(0))
}

/// Waits until the process's reactor reports `status` (`active`: it holds
/// the lease); panics after `timeout` with the process's log.
pub async fn wait_reactor_status(process: &ServiceProcess, status: &str, timeout: Duration) {
    let remote = Remote::new(&process.base());
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(health) = remote.send(Method::GET, "/health", None, None, None).await
            && reactor_of(&health.body).0 == status
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}'s reactor never {status} in {} ms\n--- its log ---\n{}",
            process.name(),
            timeout.as_millis(),
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP client of one replica; a refused connection or a timeout is an
/// `Err`, as a client sees a dead replica.
#[derive(Debug, Clone)]
pub struct Remote {
    pub base: String,
    client: reqwest::Client,
}

impl Remote {
    pub fn new(base: &str) -> Remote {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(REQUEST_MS_MAX))
            .pool_max_idle_per_host(64)
            .build()
            .expect("an HTTP client");
        Remote { base: base.into(), client }
    }

    /// A request; `body` as JSON, `idempotency_key` as the header.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Resp, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        Ok(crate::http::into_resp(response).await)
    }

    /// A GET that must be answered (setup and checks, not under faults).
    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, None, None).await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// A POST that must be answered.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.send(Method::POST, path, token, Some(body), None).await.unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }
}
