//! The operator command: `halobuzz-api roles grant|revoke --email <email>
//! --role <role> [--role <role>...] [--operator <name>]`.
//!
//! It grants and revokes roles by email, the way the first admin of a
//! deployment is made outside development and test (where `ADMIN_EMAILS`
//! grants nothing). It reads the service's environment, talks to the event
//! log only (no read model: the user is found by the email's reservation
//! in the log), and appends the very role events the admin route appends,
//! with the operator as actor (`system`, id `operator:<name>`).
//!
//! Whoever can run it can reach NATS with the service's environment, and
//! so could append anything anyway: it needs no token of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use commands::handler::Commands;
use commands::log::{EventLog, JetStreamLog};
use domain::user::ChangeRoles;
use events_schema::{Actor, Event, Role};
use uuid::Uuid;

use crate::auth::{parse_role, role_name};
use crate::config::Config;
use crate::state::{command_context, fingerprint, registration_in_log};

/// How the operator command is called.
pub const USAGE: &str = "usage: halobuzz-api roles grant|revoke --email <email> --role <admin|finance|ops> \
                         [--role ...] [--operator <name>]";
/// Roles named in one call, at most (as the admin route).
const ROLES_PER_CALL_MAX: usize = 8;
/// An operator's name, at most this many characters.
const OPERATOR_CHARS_MAX: usize = 64;
/// How long the look-up of the managed nats-server waits.
const PROBE_TIMEOUT_MS: u64 = 1_500;

/// A parsed `roles` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesCall {
    pub grant: bool,
    pub email: String,
    pub roles: Vec<Role>,
    pub operator: String,
}

/// What the command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesDone {
    pub user_id: Uuid,
    pub roles: Vec<Role>,
    /// The log position of the role change; `None` when nothing changed.
    pub position: Option<u64>,
}

impl std::fmt::Display for RolesDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = self.roles.iter().map(|r| role_name(*r)).collect();
        write!(f, "user {}: roles {}", self.user_id, roles.join(", "))?;
        match self.position {
            Some(position) => write!(f, " (position {position})"),
            None => write!(f, " (unchanged)"),
        }
    }
}

/// Reads the arguments after `roles`. `default_operator` names the operator
/// when `--operator` is not given (the login name, `USER`).
pub fn parse_roles_args(args: &[String], default_operator: Option<String>) -> anyhow::Result<RolesCall> {
    let mut args = args.iter();
    let grant = match args.next().map(String::as_str) {
        Some("grant") => true,
        Some("revoke") => false,
        _ => bail!("{USAGE}"),
    };
    let (mut email, mut roles, mut operator) = (None, Vec::new(), default_operator);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { bail!("{flag} needs a value; {USAGE}") };
        match flag.as_str() {
            "--email" => email = Some(value.trim().to_string()),
            "--role" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let role = parse_role(name).filter(|r| *r != Role::User);
                    let Some(role) = role else { bail!("--role: unknown role {name:?} (admin, finance or ops)") };
                    if !roles.contains(&role) {
                        roles.push(role);
                    }
                }
            }
            "--operator" => operator = Some(value.trim().to_string()),
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let Some(email) = email.filter(|e| !e.is_empty()) else { bail!("--email is required; {USAGE}") };
    if roles.is_empty() || roles.len() > ROLES_PER_CALL_MAX {
        bail!("--role: name 1 to {ROLES_PER_CALL_MAX} roles; {USAGE}");
    }
    let operator = operator.filter(|o| !o.is_empty()).unwrap_or_else(|| "unknown".into());
    if operator.chars().count() > OPERATOR_CHARS_MAX || operator.chars().any(char::is_control) {
        bail!("--operator: at most {OPERATOR_CHARS_MAX} printable characters");
    }
    Ok(RolesCall { grant, email, roles, operator })
}

/// Connects to the service's event log: `NATS_URL`, or the managed
/// nats-server running on `DATA_DIR` (its port is in
/// `DATA_DIR/nats-server.conf`). It never starts a server: roles belong in
/// the log the service uses.
pub async fn connect(config: &Config) -> anyhow::Result<JetStreamLog> {
    let (urls, token) = match config.external_nats() {
        Some(external) => external,
        None => {
            let port = commands::managed::running_port(&config.data_dir).with_context(|| {
                format!("NATS_URL is not set and no managed nats-server has run on {}", config.data_dir.display())
            })?;
            (vec![format!("nats://127.0.0.1:{port}")], commands::managed::running_token(&config.data_dir))
        }
    };
    let mut log_config = config.log_config(urls, token);
    log_config.connect_timeout_ms = log_config.connect_timeout_ms.min(PROBE_TIMEOUT_MS * 4);
    tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS * 8), JetStreamLog::connect(log_config))
        .await
        .context("connecting the event log (NATS_URL): no answer in time")?
        .context("connecting the event log (NATS_URL)")
}

/// Grants or revokes `call.roles` to the user registered with `call.email`
/// on `log`, as the admin route would, with the operator as actor.
pub async fn change_roles(log: Arc<dyn EventLog>, config: &Config, call: &RolesCall) -> anyhow::Result<RolesDone> {
    let Some((registered, _)) = registration_in_log(log.as_ref(), &call.email).await? else {
        bail!("no user is registered with the email {:?}", call.email);
    };
    let user_id = registered.user_id;
    let commands = Commands::new(log, config.command_config());
    let (grant, revoke) = if call.grant { (call.roles.clone(), vec![]) } else { (vec![], call.roles.clone()) };
    let names = |roles: &[Role]| roles.iter().map(|r| role_name(*r)).collect::<Vec<_>>();
    let print =
        fingerprint(&format!("OPERATOR roles/{user_id}"), &(user_id, names(&grant), names(&revoke), &call.operator));
    let ctx = command_context(
        format!("operator:{}", call.operator),
        None,
        print,
        None,
        Actor::system(&format!("operator:{}", call.operator)),
    );
    let outcome = commands
        .change_roles(&ctx, ChangeRoles { user_id, grant, revoke })
        .await
        .map_err(|e| anyhow::anyhow!("the role change was refused: {e}"))?;
    let changed = outcome.events.iter().find_map(|e| match &e.event {
        Event::UserRolesChanged(c) => Some(c.state_after.roles.clone()),
        _ => None,
    });
    let position = changed.is_some().then_some(outcome.position);
    let roles = match changed {
        Some(roles) => roles,
        None => {
            let s = commands::handler::user_subject(user_id);
            let snapshot = commands.load(std::slice::from_ref(&s)).await?;
            snapshot.state(&s, None, domain::user::evolve).map(|u| u.roles).unwrap_or_default()
        }
    };
    Ok(RolesDone { user_id, roles, position })
}

/// `halobuzz-api roles ...`: the environment, the log, the change; one line
/// saying what was done.
pub async fn run_roles(args: &[String]) -> anyhow::Result<String> {
    let call = parse_roles_args(args, std::env::var("USER").ok())?;
    let config = Config::from_env()?;
    let log: Arc<dyn EventLog> = Arc::new(connect(&config).await?);
    let done = change_roles(log, &config, &call).await?;
    Ok(done.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn arguments_name_the_action_the_email_and_the_roles() {
        let call = parse_roles_args(&args("grant --email Boss@x.io --role admin --role finance,admin"), None).unwrap();
        assert_eq!(
            call,
            RolesCall {
                grant: true,
                email: "Boss@x.io".into(),
                roles: vec![Role::Admin, Role::Finance],
                operator: "unknown".into()
            }
        );
        let revoke = parse_roles_args(&args("revoke --role ops --email a@x.io --operator alice"), None).unwrap();
        assert!(!revoke.grant);
        assert_eq!(revoke.operator, "alice");
        for bad in [
            "",
            "promote --email a@x.io --role admin",
            "grant --role admin",
            "grant --email a@x.io",
            "grant --email a@x.io --role root",
            "grant --email a@x.io --role user",
            "grant --email a@x.io --role",
        ] {
            assert!(parse_roles_args(&args(bad), None).is_err(), "{bad:?}");
        }
    }
}
