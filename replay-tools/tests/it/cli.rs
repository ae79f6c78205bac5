//! The `halobuzz-replay` binary: exit codes and `--json` output.

use std::path::Path;

use commands::testing::{NatsServer, SyncMode};
use serde_json::Value;

use crate::copy::{alter_one_byte, rewrite};
use crate::support::server_with_log;

/// Runs the binary with the API's environment pointing at `nats_url` and
/// `data_dir`; returns (exit code, stdout, stderr).
async fn replay(nats_url: &str, data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    crate::support::run_replay(nats_url, data_dir, &[], args).await
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_answers_with_exit_codes_and_json() {
    let events = 2_000;
    let (server, _log) = server_with_log(events).await;
    let url = server.url();
    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path();

    // status before any projector ran.
    let (code, out, err) = replay(&url, dir, &["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let status = json(&out);
    assert_eq!((status["ok"].as_bool(), status["lastPosition"].as_u64()), (Some(true), Some(events)));

    // rebuild everything, then status shows version 2 serving, no lag.
    let (code, out, err) = replay(&url, dir, &["rebuild", "--all", "--json", "--batch", "1000"]).await;
    assert_eq!(code, 0, "{err}");
    let rebuild = json(&out);
    assert_eq!((rebuild["switched"].as_bool(), rebuild["position"].as_u64()), (Some(true), Some(events)));
    let (code, out, _) = replay(&url, dir, &["status", "--json"]).await;
    assert_eq!(code, 0);
    let projectors = json(&out)["projectors"].as_array().cloned().unwrap_or_default();
    assert_eq!(projectors.len(), projections::Projection::ALL.len());
    assert!(
        projectors.iter().all(|p| p["version"] == 2 && p["active"] == true && p["lagEvents"] == 0),
        "{projectors:?}"
    );

    // A rebuild that keeps the old version, then `drop`: the serving
    // version and a missing one are refused, the kept one goes.
    let (code, _, err) = replay(&url, dir, &["rebuild", "--projection", "wallets", "--keep-old", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let wallets_versions = |out: &str| -> Vec<(u64, bool)> {
        json(out)["projectors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["projection"] == "wallets")
            .map(|p| (p["version"].as_u64().unwrap_or(0), p["active"].as_bool().unwrap_or(false)))
            .collect()
    };
    let (_, out, _) = replay(&url, dir, &["status", "--json"]).await;
    assert_eq!(wallets_versions(&out), vec![(2, false), (3, true)]);
    let (code, out, err) = replay(&url, dir, &["drop", "--projection", "wallets", "--version", "3", "--json"]).await;
    assert_eq!((code, json(&out)["ok"].as_bool()), (1, Some(false)));
    assert!(err.contains("wallets@3 serves queries"), "{err}");
    let (code, out, err) = replay(&url, dir, &["drop", "--projection", "wallets", "--version", "2"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "dropped wallets@2\n");
    let (_, out, _) = replay(&url, dir, &["status", "--json"]).await;
    assert_eq!(wallets_versions(&out), vec![(3, true)]);
    let (code, _, err) = replay(&url, dir, &["drop", "--projection", "wallets", "--version", "2"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("wallets@2 does not exist"), "{err}");

    // verify agrees; the human output says so.
    let (code, out, err) = replay(&url, dir, &["verify", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["consistent"].as_bool(), Some(true));
    let (code, out, _) = replay(&url, dir, &["verify", "--projection", "wallets"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("the read models equal a rebuild"), "{out}");

    // audit passes, with the zero sum at the projectors' checkpoints.
    let (code, out, err) = replay(&url, dir, &["audit", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let audit = json(&out);
    assert_eq!(audit["passed"].as_bool(), Some(true));
    assert!(audit["checkpoints"].as_array().is_some_and(|c| !c.is_empty()), "{audit}");

    // export, then an altered copy: audit of the file exits 3 and names it.
    let file = dir.join("log.hblog.gz");
    let (code, out, err) = replay(&url, dir, &["export", "--out", file.to_str().unwrap_or_default(), "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["events"].as_u64(), Some(events));
    let tampered = dir.join("tampered.hblog.gz");
    rewrite(&file, &tampered, |m| {
        if m.position == 777 {
            alter_one_byte(m);
        }
    });
    let (code, out, _) = replay(&url, dir, &["audit", "--in", tampered.to_str().unwrap_or_default(), "--json"]).await;
    assert_eq!(code, 3, "failed checks exit 3: {out}");
    let audit = json(&out);
    assert_eq!((audit["ok"].as_bool(), audit["findings"][0]["position"].as_u64()), (Some(false), Some(777)));

    // import into the non-empty stream: refused, exit 1, the reason on
    // stderr and in the JSON.
    let (code, out, err) = replay(&url, dir, &["import", "--in", file.to_str().unwrap_or_default(), "--json"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("import failed") && err.contains("already holds 2000 messages"), "{err}");
    assert_eq!(json(&out)["ok"].as_bool(), Some(false));

    // import of the tampered file into an empty server: refused, naming it.
    let fresh = NatsServer::start_with(SyncMode::Interval).await;
    let (code, _, err) = replay(&fresh.url(), dir, &["import", "--in", tampered.to_str().unwrap_or_default()]).await;
    assert_eq!(code, 1);
    assert!(err.contains("position 777"), "{err}");

    // bad usage and a missing file.
    let (code, _, err) = replay(&url, dir, &["rebuild", "--projection", "nope"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = replay(&url, dir, &["audit", "--in", "/nonexistent/file.gz"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/file.gz"), "{err}");
    // A bad environment variable is named.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_halobuzz-replay"))
        .args(["status"])
        .env("NATS_STREAM_REPLICAS", "seven")
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("NATS_STREAM_REPLICAS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_with_sigkill_and_run_again_gives_the_same_result() {
    use projections::testing::checksum;
    use projections::{Projection, ProjectionVersion};

    let events = 30_000;
    let (server, _log) = server_with_log(events).await;
    let url = server.url();
    // The reference, uninterrupted.
    let reference = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let (code, _, err) = replay(&url, reference.path(), &["rebuild", "--all", "--batch", "500", "--quiet"]).await;
    assert_eq!(code, 0, "{err}");
    let duration = started.elapsed();
    let versions: Vec<ProjectionVersion> = Projection::ALL.iter().map(|p| ProjectionVersion::new(*p, 2)).collect();
    let expected = {
        let store = crate::support::sqlite(reference.path()).await;
        checksum(store.as_ref(), &versions).await.expect("checksum")
    };

    // kill -9 at a random point, then the same command again. The killed
    // run commits every batch, so that its checkpoints pass through the
    // kill point (by default a rebuild this short is one commit).
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_halobuzz-replay"))
        .args(["rebuild", "--all", "--batch", "500", "--commit-every-batch", "--quiet"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("NATS_URL", &url)
        .env("DATA_DIR", data.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts");
    // Killed once its checkpoints pass a random point in the first half,
    // which leaves thousands of events (dozens of commits) to go.
    let kill_at = rand::random_range(2_000..15_000u64);
    let observer = crate::support::sqlite(data.path()).await;
    let deadline = std::time::Instant::now() + duration * 20 + std::time::Duration::from_secs(10);
    let mut seen = 0;
    while seen < kill_at {
        assert!(std::time::Instant::now() < deadline, "the rebuild stalled at checkpoint {seen}");
        assert!(child.try_wait().expect("try_wait").is_none(), "the rebuild ended before checkpoint {kill_at}");
        let checkpoints = observer.checkpoints().await.expect("checkpoints");
        seen = checkpoints.iter().filter(|c| c.version == 2).map(|c| c.position).min().unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    drop(observer);
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait");
    assert!(!status.success(), "killed before the end: {status:?}");
    let interrupted = {
        let store = crate::support::sqlite(data.path()).await;
        let checkpoints = store.checkpoints().await.expect("checkpoints");
        assert!(checkpoints.iter().all(|c| !(c.version == 2 && c.active)), "not switched: {checkpoints:?}");
        checkpoints.iter().filter(|c| c.version == 2).map(|c| c.position).min().unwrap_or(0)
    };
    let (code, out, err) = replay(&url, data.path(), &["rebuild", "--all", "--batch", "500", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let summary = json(&out);
    let resumed: Vec<u64> =
        summary["targets"].as_array().into_iter().flatten().filter_map(|t| t["resumedFrom"].as_u64()).collect();
    assert_eq!(resumed.iter().min().copied(), Some(interrupted), "{summary}");
    eprintln!("killed at checkpoint {interrupted} of {events}; resumed");
    let store = crate::support::sqlite(data.path()).await;
    assert_eq!(checksum(store.as_ref(), &versions).await.expect("checksum"), expected);
    assert!(Projection::ALL.len() == versions.len());
    for p in Projection::ALL {
        assert_eq!(store.active_version(p).await.expect("active"), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_url_the_running_managed_server_of_data_dir_is_used() {
    // The API's managed server on DATA_DIR, which wants its token.
    let data = tempfile::tempdir().expect("tempdir");
    let managed = commands::managed::ManagedNats::start(data.path().to_path_buf(), SyncMode::Interval)
        .await
        .expect("the managed server starts");
    let config = commands::log::LogConfig {
        token: Some(managed.token().clone()),
        ..commands::log::LogConfig::new([managed.url().to_owned()])
    };
    let log = commands::log::JetStreamLog::connect(config).await.expect("connect with the token");
    let published = replay_tools::testing::publish_events(&log, crate::support::generated(25)).await.expect("publish");
    assert_eq!(published, 25);
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_halobuzz-replay"))
        .args(["status", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("DATA_DIR", data.path())
        .output()
        .await
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(json(&stdout)["lastPosition"].as_u64(), Some(25), "the running server's log, with its token");
    assert_eq!(managed.restarts(), 0);
    // A second server would have written a fresh token.
    assert_eq!(
        commands::managed::running_token(data.path()).as_ref(),
        Some(managed.token()),
        "no second server was started on DATA_DIR"
    );
    managed.shutdown().await.expect("stops");
}
