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

    // Clients need the token kept in the data directory, readable by its
    // owner only; a client without it is refused.
    let token_path = data.path().join("nats-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_path).expect("token").permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(commands::managed::running_token(data.path()).as_ref(), Some(managed.token()));
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(managed.url())
        .await
        .map(|_| ());
    assert!(anonymous.is_err(), "a client without the token is refused");

    let mut config = LogConfig::new([managed.url().to_owned()]);
    config.token = Some(managed.token().clone());
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
    let config = LogConfig { token: Some(again.token().clone()), ..LogConfig::new([again.url().to_owned()]) };
    let log = JetStreamLog::connect(config).await.expect("connect again");
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

/// Given a test harness folder whose test process died by a signal (its
/// `Drop` never ran) with its nats-server still running, when the harness
/// reaps, then that server is stopped and the folder deleted; a folder
/// whose owner lives (this process's own server) is left alone.
#[tokio::test]
async fn the_harness_stops_servers_that_a_killed_test_process_left_behind() {
    let own = commands::testing::NatsServer::start().await;
    let root = std::env::temp_dir().join(format!("halobuzz-nats-orphan-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("the orphan's folder");
    // An owner that has exited.
    let mut owner = std::process::Command::new("true").spawn().expect("a short-lived owner");
    owner.wait().expect("the owner exits");
    std::fs::write(root.join("owner.pid"), owner.id().to_string()).expect("owner.pid");
    let config = root.join("nats-server.conf");
    std::fs::write(&config, "listen: 127.0.0.1:-1\n").expect("a config");
    let mut orphan = std::process::Command::new(commands::testing::nats_server_binary_or_panic())
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the orphaned server starts");
    std::fs::write(root.join("servers.pid"), format!("{}\n", orphan.id())).expect("servers.pid");
    // The reaper recognises a server by its command line (nats-server, in
    // the harness folder): wait until the child has exec'd into it, rather
    // than for a time.
    let cmdline = format!("/proc/{}/cmdline", orphan.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&cmdline).unwrap_or_default()).into_owned();
        if text.contains("nats-server") && text.contains(root.to_string_lossy().as_ref()) {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan's command line is still {text:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(orphan.try_wait().expect("its status").is_none(), "the orphan runs before the reaping");

    let reaped = commands::testing::reap_orphans();

    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = orphan.try_wait().expect("its status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the orphaned server still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!status.success(), "killed, not exited: {status}");
    assert!(reaped >= 1, "{reaped}");
    assert!(!root.exists(), "the orphan's folder is deleted");
    let log = own.event_log().await;
    assert_eq!(log.last_position().await.expect("this process's server still answers"), 0);
}
