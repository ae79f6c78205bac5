//! Start-up of the `halobuzz-api` binary outside development and test: each
//! refused configuration stops it with one line naming the variable, and a
//! non-zero exit, before it connects to anything.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use commands::managed::NatsToken;
use commands::testing::NatsServer;

/// How long a refusal may take (it happens before any connection).
const REFUSAL_MS_MAX: u64 = 20_000;

const ACCESS: &str = "an-access-secret-for-the-start-up-tests-0001";
const REFRESH: &str = "a-refresh-secret-for-the-start-up-tests-0002";
const NATS_TOKEN: &str = "a-nats-token-for-the-start-up-tests-00000003";

/// Runs the binary with exactly `env` (plus `PATH`); its exit success and
/// its standard error.
fn run(env: &[(&str, &str)]) -> (bool, String) {
    let data = tempfile::tempdir().expect("a temporary folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_halobuzz-api"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data.path())
        // Nothing listens there: a configuration that passed would fail
        // on connecting, with another message.
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            let output = child.wait_with_output().expect("the child's output");
            return (status.success(), String::from_utf8_lossy(&output.stderr).into_owned());
        }
        if started.elapsed() > Duration::from_millis(REFUSAL_MS_MAX) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {REFUSAL_MS_MAX} ms with {env:?}: not refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A complete configuration for `app_env`, with `overrides` on top (an
/// empty value unsets).
fn with<'a>(app_env: &'a str, overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("APP_ENV", app_env),
        ("JWT_SECRET", ACCESS),
        ("JWT_REFRESH_SECRET", REFRESH),
        ("CORS_ORIGIN", "https://halobuzz.com"),
        ("METRICS_TOKEN", "a-scrape-token"),
    ];
    for (name, value) in overrides {
        env.retain(|(n, _)| n != name);
        env.push((name, value));
    }
    env
}

fn assert_refused(env: &[(&str, &str)], variable: &str) {
    let (success, stderr) = run(env);
    assert!(!success, "{env:?}: exit status zero");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{env:?}: one line, not {stderr:?}");
    assert!(lines[0].contains(variable), "{env:?}: {:?} does not name {variable}", lines[0]);
}

#[test]
fn production_like_environments_refuse_missing_public_or_equal_secrets() {
    for app_env in ["production", "prod", "staging", "Production"] {
        assert_refused(&with(app_env, &[("JWT_SECRET", "")]), "JWT_SECRET");
        assert_refused(&with(app_env, &[("JWT_REFRESH_SECRET", "")]), "JWT_REFRESH_SECRET");
        assert_refused(&with(app_env, &[("JWT_SECRET", "halobuzz-development-access-secret-change-me")]), "JWT_SECRET");
        assert_refused(
            &with(app_env, &[("JWT_REFRESH_SECRET", "halobuzz-development-refresh-secret-change-me")]),
            "JWT_REFRESH_SECRET",
        );
        assert_refused(&with(app_env, &[("JWT_REFRESH_SECRET", ACCESS)]), "JWT_REFRESH_SECRET");
    }
    // The runbook's name for the environment counts alike.
    assert_refused(&[("NODE_ENV", "production")], "JWT_SECRET");
}

#[test]
fn production_refuses_an_open_cors_or_metrics() {
    for app_env in ["production", "staging"] {
        assert_refused(&with(app_env, &[("CORS_ORIGIN", "")]), "CORS_ORIGIN");
        assert_refused(&with(app_env, &[("CORS_ORIGIN", "*")]), "CORS_ORIGIN");
        assert_refused(&with(app_env, &[("METRICS_TOKEN", "")]), "METRICS_TOKEN");
        assert_refused(&with(app_env, &[("NATS_TOKEN", "short-nats-token")]), "NATS_TOKEN");
    }
}

#[test]
fn a_complete_production_configuration_gets_past_the_checks() {
    // It fails later, on the unreachable NATS: the configuration passed.
    let (success, stderr) = run(&with("production", &[("NATS_TOKEN", NATS_TOKEN)]));
    assert!(!success);
    assert!(stderr.contains("NATS") || stderr.contains("event log"), "{stderr}");
    for variable in ["JWT_SECRET", "CORS_ORIGIN", "METRICS_TOKEN"] {
        assert!(!stderr.contains(variable), "{stderr}");
    }
}

/// A deployment's NATS asks its clients for a token (deploy/nats.conf): the
/// service presents `NATS_TOKEN` with `NATS_URL`, and without it the server
/// turns it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_nats_with_a_token_is_reached_with_nats_token() {
    let server = NatsServer::start_with_token(NatsToken(NATS_TOKEN.into())).await;
    let url = server.url();
    // The operator command connects as the service does; an unknown email
    // answers after reading the log, so the connection was accepted.
    let env = with("production", &[("NATS_URL", url.as_str()), ("NATS_TOKEN", NATS_TOKEN)]);
    let output = operator_grant(&env);
    assert!(!output.0 && output.1.contains("no user"), "with the token: {}", output.1);

    let env = with("production", &[("NATS_URL", url.as_str())]);
    let output = operator_grant(&env);
    assert!(!output.0 && !output.1.contains("no user"), "without the token: {}", output.1);
    assert!(output.1.contains("event log"), "without the token: {}", output.1);
}

/// `halobuzz-api roles grant` for an email nobody registered, with exactly
/// `env`: its success and standard error.
fn operator_grant(env: &[(&str, &str)]) -> (bool, String) {
    let data = tempfile::tempdir().expect("a temporary folder");
    let output = Command::new(env!("CARGO_BIN_EXE_halobuzz-api"))
        .args(["roles", "grant", "--email", "nobody@halobuzz.com", "--role", "admin"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data.path())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}
