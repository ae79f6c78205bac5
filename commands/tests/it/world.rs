//! A running command side for tests: a real nats-server, the JetStream log,
//! the command handlers, and helpers to read the whole log back.

use std::collections::BTreeMap;
use std::sync::Arc;

use commands::handler::{CommandConfig, CommandContext, Commands};
use commands::log::{EventLog, JetStreamLog, LogConfig};
use commands::reactor::{GiftReactor, ReactorConfig};
use commands::testing::NatsServer;
use domain::ledger::PayoutPolicy;
use domain::stream::StartStream;
use domain::user::Register;
use events_schema::{Account, Actor, Envelope, Event, Money};
use futures_util::StreamExt;
use rust_decimal::Decimal;
use uuid::Uuid;

pub fn config() -> CommandConfig {
    CommandConfig {
        host_share_bps: 7000,
        payout_policy: PayoutPolicy {
            rate_per_coin: Money { amount: Decimal::new(1, 2), currency: "usd".into() },
            min_coins: 1000,
        },
        admin_emails: vec!["boss@halobuzz.com".into()],
        earnings_hold_hours: 0,
        idempotency_horizon_hours: 24,
    }
}

pub struct World {
    pub server: NatsServer,
    pub log: Arc<JetStreamLog>,
    pub commands: Commands,
}

impl World {
    pub async fn start() -> World {
        World::start_with(|c| c).await
    }

    pub async fn start_with(tune: impl FnOnce(LogConfig) -> LogConfig) -> World {
        crate::support::init_tracing();
        let server = NatsServer::start().await;
        let log = Arc::new(JetStreamLog::connect(tune(server.log_config())).await.expect("event log connects"));
        let commands = Commands::new(log.clone(), config());
        World { server, log, commands }
    }

    pub async fn reactor(&self, config: ReactorConfig) -> GiftReactor {
        GiftReactor::start(self.commands.clone(), self.log.client().clone(), self.log.stream_name(), config)
            .await
            .expect("reactor starts")
    }

    /// Every stored event, in log order, with its position.
    /// Every event of the ledger's stream, then every command record of
    /// the records stream (with that stream's positions).
    pub async fn read_all(&self) -> Vec<(u64, Envelope)> {
        let mut out = Vec::new();
        let records = self.log.records().expect("the ledger has a records stream");
        for log in [&*self.log, records] {
            let mut stream = log.read_stream(1);
            while let Some(message) = stream.next().await {
                let message = message.expect("the log reads back");
                let envelope = Envelope::verify(&message.payload).expect("every stored event verifies");
                out.push((message.position, envelope));
            }
        }
        out
    }

    pub async fn last_position(&self) -> u64 {
        self.log.last_position().await.expect("last position")
    }

    /// Buys coins for `user` by an admin adjustment.
    pub async fn fund(&self, user: Uuid, coins: i64) {
        let ctx = ctx(admin(), &format!("fund-{user}-{coins}"));
        self.commands
            .ledger(
                &ctx,
                user,
                domain::ledger::LedgerCommand::Adjust { coins, reason: "test".into(), admin_id: admin() },
            )
            .await
            .expect("funded");
    }

    pub async fn start_stream(&self, host: Uuid) -> Uuid {
        let stream_id = Uuid::now_v7();
        let command = StartStream {
            stream_id,
            host_id: host,
            title: "live".into(),
            category: "music".into(),
            at: chrono::Utc::now(),
        };
        self.commands.start_stream(&ctx(host, &format!("start-{stream_id}")), command).await.expect("stream starts");
        stream_id
    }
}

pub fn admin() -> Uuid {
    Uuid::from_u128(0xad)
}

/// A user's idempotent command context; the fingerprint follows the key.
pub fn ctx(user: Uuid, key: &str) -> CommandContext {
    CommandContext {
        scope: format!("user:{user}"),
        command_id: key.to_string(),
        fingerprint: format!("fp:{key}"),
        correlation_id: format!("corr:{key}"),
        actor: Actor::user(user),
    }
}

/// Every account's balance, from the transfers of every ledger commit; and
/// the check that they sum to zero.
pub fn balances(events: &[(u64, Envelope)]) -> BTreeMap<Account, i64> {
    let mut balances: BTreeMap<Account, i64> = BTreeMap::new();
    for (_, envelope) in events {
        if let Some(commit) = envelope.event.ledger_commit() {
            for t in &commit.transfers {
                *balances.entry(t.from).or_default() -= t.amount_coins;
                *balances.entry(t.to).or_default() += t.amount_coins;
            }
        }
    }
    let total: i128 = balances.values().map(|b| i128::from(*b)).sum();
    assert_eq!(total, 0, "all balances sum to zero");
    balances
}

pub fn balance(balances: &BTreeMap<Account, i64>, account: Account) -> i64 {
    balances.get(&account).copied().unwrap_or(0)
}

/// Every gift credited to a host, by source position: each must appear once.
pub fn credited_positions(events: &[(u64, Envelope)]) -> Vec<u64> {
    let mut positions: Vec<u64> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::GiftsReceived(r) => Some(r.gifts.iter().map(|g| g.source_position)),
            _ => None,
        })
        .flatten()
        .collect();
    positions.sort_unstable();
    positions
}

pub fn gift_positions(events: &[(u64, Envelope)]) -> Vec<u64> {
    events.iter().filter(|(_, e)| matches!(e.event, Event::GiftSent(_))).map(|(p, _)| *p).collect()
}

/// Events of commands with an id that have no record yet.
/// The meta of an event a run of the command `ctx` writes now.
pub fn meta_of(ctx: &CommandContext) -> events_schema::EventMeta {
    events_schema::EventMeta {
        event_id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        command_id: ctx.command_id.clone(),
        correlation_id: ctx.correlation_id.clone(),
        actor: ctx.actor.clone(),
    }
}

pub fn unrecorded(events: &[(u64, Envelope)]) -> usize {
    let recorded: std::collections::HashSet<(String, String)> = events
        .iter()
        .filter_map(|(_, e)| match &e.event {
            Event::CommandRecorded(r) => Some((r.scope.clone(), r.command_id.clone())),
            _ => None,
        })
        .collect();
    events
        .iter()
        .filter(|(_, e)| e.header.command_fingerprint.is_some())
        .filter(|(_, e)| {
            let scope = commands::handler::scope_of(&e.header.actor).unwrap_or_default();
            !recorded.contains(&(scope, e.header.command_id.clone()))
        })
        .count()
}

/// Waits until the reactor has credited every gift in the log and every
/// command's event has its record (bounded).
pub async fn wait_for_credits(world: &World, timeout: std::time::Duration) -> Vec<(u64, Envelope)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let events = world.read_all().await;
        let sent = gift_positions(&events);
        let credited = credited_positions(&events);
        if (credited.len() >= sent.len() && unrecorded(&events) == 0) || tokio::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A new user registered under `name` (`<name>@example.com`); its id.
pub async fn register_user(world: &World, name: &str) -> Uuid {
    let user_id = Uuid::now_v7();
    let register = Register {
        user_id,
        email: format!("{name}@example.com"),
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        admin_emails: vec![],
    };
    world.commands.register(&ctx(user_id, "reg"), register).await.expect("registered");
    user_id
}
