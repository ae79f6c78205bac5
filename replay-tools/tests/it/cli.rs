//! The `halobuzz-replay` binary: exit codes and `--json` output.

use std::path::Path;

use commands::testing::{NatsServer, SyncMode};
use serde_json::Value;

use crate::copy::{alter_one_byte, rewrite};
use crate::support::server_with_log;

/// Runs the binary with the API's environment pointing at `nats_url` and
/// `data_dir`; returns (exit code, stdout, stderr).
async fn replay(nats_url: &str, data_dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_halobuzz-replay"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "test")
        .env("NATS_URL", nats_url)
        .env("DATA_DIR", data_dir)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
    assert_eq!(projectors.len(), 8);
    assert!(
        projectors.iter().all(|p| p["version"] == 2 && p["active"] == true && p["lagEvents"] == 0),
        "{projectors:?}"
    );

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
