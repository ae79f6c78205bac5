//! The managed nats-server: starts, serves appends, is restarted by its
//! supervisor when killed, stops cleanly and leaves its data for the next
//! start.

use std::time::{Duration, Instant};

use commands::log::{EventLog, JetStreamLog, LogConfig};
use commands::managed::{ManagedNats, SyncMode, installed_version, pinned_version};

use crate::support::{init_tracing, request};

fn is_alive(pid: u32) -> bool {
    // Signal 0 checks existence without touching the process. A zombie
    // still "exists", so the shutdown path must have reaped it.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managed_server_is_supervised_and_keeps_its_data() {
    init_tracing();
    let data = tempfile::tempdir().expect("tempdir");
    let managed = ManagedNats::start(data.path().to_path_buf(), SyncMode::Always).await.expect("start");
    assert!(data.path().join("nats-server.conf").exists());
    let config_text = std::fs::read_to_string(data.path().join("nats-server.conf")).expect("conf");
    assert!(config_text.contains("sync_interval: always"));

    let mut config = LogConfig::new([managed.url().to_owned()]);
    config.request_timeout_ms = 2_000;
    config.append_retry_max = 8;
    let log = JetStreamLog::connect(config.clone()).await.expect("connect");
    let first = log.append(request("hb.user.1", "one", "m-1", 0)).await.expect("append");
    assert_eq!(first.position, 1);

    // Kill the child behind the supervisor's back.
    let pid = managed.child_pid().expect("a child runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the child");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Bounded by the deadline.
    while managed.restarts() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(managed.restarts(), 1, "the supervisor restarted the server");
    assert!(!managed.has_failed());
    let new_pid = managed.child_pid().expect("a child runs again");
    assert_ne!(new_pid, pid);

    // Same URL: the client reconnects and the data is there.
    let second = log.append(request("hb.user.1", "two", "m-2", 1)).await.expect("append after restart");
    assert_eq!(second.position, 2);

    managed.shutdown().await.expect("clean shutdown");
    assert!(!is_alive(new_pid), "the server process is gone after shutdown");

    // A second start on the same data reads what the first wrote.
    let again = ManagedNats::start(data.path().to_path_buf(), SyncMode::Interval).await.expect("start again");
    let log = JetStreamLog::connect(LogConfig::new([again.url().to_owned()])).await.expect("connect again");
    assert_eq!(log.last_position().await.expect("last"), 2);
    let last = log.last_on_subject("hb.user.1").await.expect("get").expect("some");
    assert_eq!(last.payload, bytes::Bytes::from("two"));
    let pid = again.child_pid().expect("runs");
    drop(again);
    // Drop kills (SIGKILL) without waiting; give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn the_installed_binary_is_recent_enough() {
    let version = installed_version().expect("a nats-server is available");
    commands::log::check_server_version(&version).expect("recent enough");
    assert!(!pinned_version().is_empty());
}
