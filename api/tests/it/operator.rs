//! The operator command end to end: the `halobuzz-api roles` binary, with
//! a production-like environment, against a real nats-server holding a
//! registered user.

use std::process::Command;
use std::sync::Arc;

use commands::handler::{CommandConfig, CommandContext, Commands, user_subject};
use commands::log::EventLog;
use commands::testing::NatsServer;
use domain::ledger::PayoutPolicy;
use domain::user::Register;
use events_schema::{Actor, ActorKind, Envelope, Event, Money, Role};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Runs `halobuzz-api roles <args>` against `nats_url`; success, stdout,
/// stderr.
fn roles(nats_url: &str, args: &[&str]) -> (bool, String, String) {
    let data = tempfile::tempdir().expect("a temporary folder");
    let output = Command::new(env!("CARGO_BIN_EXE_halobuzz-api"))
        .arg("roles")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("APP_ENV", "production")
        .env("NATS_URL", nats_url)
        .env("DATA_DIR", data.path())
        .env("JWT_SECRET", "an-access-secret-for-the-operator-test-0001")
        .env("JWT_REFRESH_SECRET", "a-refresh-secret-for-the-operator-test-0002")
        .env("CORS_ORIGIN", "https://halobuzz.com")
        .env("METRICS_TOKEN", "a-scrape-token")
        .env("USER", "carol")
        .output()
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roles_subcommand_grants_and_revokes_by_email_with_the_operator_as_actor() {
    let server = NatsServer::start().await;
    let log: Arc<dyn EventLog> = Arc::new(server.event_log().await);
    let policy =
        PayoutPolicy { rate_per_coin: Money { amount: Decimal::new(1, 2), currency: "usd".into() }, min_coins: 1 };
    let commands = Commands::new(
        log.clone(),
        CommandConfig {
            host_share_bps: 7000,
            payout_policy: policy,
            admin_emails: vec![],
            earnings_hold_hours: 0,
            idempotency_horizon_hours: 24,
        },
    );
    let user_id = Uuid::now_v7();
    let ctx = CommandContext {
        scope: "register:first@halobuzz.com".into(),
        command_id: Uuid::now_v7().to_string(),
        fingerprint: "registration".into(),
        correlation_id: "registration".into(),
        actor: Actor::user(user_id),
    };
    let register = Register {
        user_id,
        email: "first@halobuzz.com".into(),
        username: "first".into(),
        password_hash: "$argon2id$not-checked-here".into(),
        admin_emails: vec![],
    };
    commands.register(&ctx, register).await.expect("registered");
    let roles_in_log = || async {
        let s = user_subject(user_id);
        let snapshot = commands.load(std::slice::from_ref(&s)).await.expect("the user");
        snapshot.state(&s, None, domain::user::evolve).map(|u| u.roles).unwrap_or_default()
    };

    let (ok, stdout, stderr) = roles(&server.url(), &["grant", "--email", "First@HaloBuzz.com", "--role", "admin"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&user_id.to_string()) && stdout.contains("admin"), "{stdout}");
    assert_eq!(roles_in_log().await, vec![Role::User, Role::Admin]);
    let last = log.last_position().await.expect("the log's end");
    let recent = log.read_from(last.saturating_sub(1), 2).await.expect("the last events");
    let change = recent
        .iter()
        .map(|m| Envelope::decode(&m.payload).expect("an envelope"))
        .find(|e| matches!(e.event, Event::UserRolesChanged(_)))
        .expect("a role change");
    assert_eq!(change.header.actor.kind, ActorKind::System);
    assert_eq!(change.header.actor.id.as_deref(), Some("operator:carol"), "the login name by default");

    let (ok, _, stderr) = roles(&server.url(), &["revoke", "--email", "first@halobuzz.com", "--role", "admin"]);
    assert!(ok, "{stderr}");
    assert_eq!(roles_in_log().await, vec![Role::User]);

    // An unknown email and bad arguments: one line, non-zero, nothing appended.
    let before = log.last_position().await.expect("the log's end");
    let (ok, _, stderr) = roles(&server.url(), &["grant", "--email", "nobody@halobuzz.com", "--role", "admin"]);
    assert!(!ok && stderr.contains("no user") && stderr.trim().lines().count() == 1, "{stderr}");
    let (ok, _, stderr) = roles(&server.url(), &["grant", "--email", "first@halobuzz.com", "--role", "root"]);
    assert!(!ok && stderr.contains("--role"), "{stderr}");
    assert_eq!(log.last_position().await.expect("the log's end"), before);
}
