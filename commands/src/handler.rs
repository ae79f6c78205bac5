//! Command handling: load the aggregates a decision reads from the last
//! message of their subjects, decide, seal, append them together under
//! optimistic concurrency, and on a conflict load and decide again.
//!
//! Idempotency. A command that names an id (`CommandContext`) appends,
//! in the same atomic batch as its events, a `command.recorded` event on the
//! subject `hb.command.<hash of scope and id>` expecting that subject to be
//! empty. A repeat of the command finds the record and gets the first
//! answer, read back from the log, and appends nothing, however long after:
//! the guarantee lives in the log itself, not in JetStream's duplicate
//! window. Only accepted commands are recorded: a rejected command appends
//! nothing, and its repeat is decided afresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use domain::ledger::{self, GiftToCredit, LedgerCommand, LedgerState, PayoutPolicy};
use domain::stream::{self, StartStream, StreamCommand};
use domain::user::{self, ChangeRoles, Register, RegistrationState};
use domain::{DomainError, Loaded, gift};
use events_schema::{
    Actor, AggregateKind, CommandRecorded, Envelope, Event, EventMeta, GENESIS_HASH, ReservationKind, SchemaError,
    command_record_id, reservation_id, subject,
};
use futures_util::future::try_join_all;
use rand::Rng;
use uuid::Uuid;

use crate::log::{AppendRequest, EventLog, LogError};

/// How many times a command is decided again after losing a race.
pub const CONFLICT_RETRY_MAX: u32 = 16;
/// The longest pause between two tries after a conflict.
pub const CONFLICT_DELAY_MS_MAX: u64 = 50;
/// Atomic batches one process keeps in flight. The server accepts at most
/// 50 per stream (ADR-50) and refuses more with an error the adapter
/// retries after a pause; queueing here instead keeps the pause away.
pub const ATOMIC_BATCHES_IN_FLIGHT_MAX: usize = 40;

/// Who asks, and under which id, for an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    /// The id space of `command_id`: `user:<id>` for a client's
    /// `Idempotency-Key`, `stripe` for a Stripe object id.
    pub scope: String,
    pub command_id: String,
    /// A hash of the command's content, so that a reused id with other
    /// content is told apart from a repeat.
    pub fingerprint: String,
    pub correlation_id: String,
    pub actor: Actor,
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The log position of the command's last message: a query with
    /// `minPosition` at least this sees the command's effects.
    pub position: u64,
    /// The events appended, in order (the record excluded).
    pub events: Vec<Envelope>,
    /// Whether this is the answer of an earlier, identical command.
    pub repeated: bool,
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("the idempotency key was used before for a different command")]
    IdempotencyKeyReused,
    #[error("gave up after {tries} conflicts on the same aggregates")]
    Contention { tries: u32 },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the stored event at position {position} cannot be read: {reason}")]
    Corrupt { position: u64, reason: String },
}

/// The configuration the deciders take from outside.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// `HOST_SHARE_BPS`.
    pub host_share_bps: u32,
    pub payout_policy: PayoutPolicy,
    /// `ADMIN_EMAILS`.
    pub admin_emails: Vec<String>,
}

/// The last message of each subject a decision reads.
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: HashMap<String, Last>,
}

#[derive(Debug, Clone)]
struct Last {
    /// Position of the subject's last message, 0 when it has none.
    position: u64,
    envelope: Option<Envelope>,
}

impl Snapshot {
    /// The state of the aggregate on `subject`, from its last event alone.
    pub fn state<S>(&self, subject: &str, initial: S, evolve: impl FnOnce(S, &Event) -> S) -> S {
        match self.entries.get(subject).and_then(|l| l.envelope.as_ref()) {
            Some(envelope) => evolve(initial, &envelope.event),
            None => initial,
        }
    }

    fn chain(&self, subject: &str) -> Option<(u64, Loaded<()>)> {
        let last = self.entries.get(subject)?;
        let loaded = match &last.envelope {
            Some(e) => Loaded { state: (), sequence: e.header.sequence, last_hash: e.header.hash.clone() },
            None => Loaded::new(()),
        };
        Some((last.position, loaded))
    }

    fn max_position(&self) -> u64 {
        self.entries.values().map(|l| l.position).max().unwrap_or(0)
    }
}

/// Subjects of the aggregates.
pub fn ledger_subject(user_id: Uuid) -> String {
    subject(AggregateKind::Ledger.as_str(), &user_id.to_string())
}
pub fn user_subject(user_id: Uuid) -> String {
    subject(AggregateKind::User.as_str(), &user_id.to_string())
}
pub fn stream_subject(stream_id: Uuid) -> String {
    subject(AggregateKind::Stream.as_str(), &stream_id.to_string())
}
pub fn channel_subject(host_id: Uuid) -> String {
    subject(AggregateKind::Channel.as_str(), &host_id.to_string())
}
pub fn reservation_subject(kind: ReservationKind, value: &str) -> String {
    subject(AggregateKind::Reservation.as_str(), &reservation_id(kind, value))
}
fn record_subject(scope: &str, command_id: &str) -> String {
    subject(AggregateKind::Command.as_str(), &command_record_id(scope, command_id))
}

/// The command side: every command of the design, each a load-decide-append
/// loop over the event log.
#[derive(Debug, Clone)]
pub struct Commands {
    log: Arc<dyn EventLog>,
    config: Arc<CommandConfig>,
    batches_in_flight: Arc<tokio::sync::Semaphore>,
}

impl Commands {
    pub fn new(log: Arc<dyn EventLog>, config: CommandConfig) -> Commands {
        let batches_in_flight = Arc::new(tokio::sync::Semaphore::new(ATOMIC_BATCHES_IN_FLIGHT_MAX));
        Commands { log, config: Arc::new(config), batches_in_flight }
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn config(&self) -> &CommandConfig {
        &self.config
    }

    /// Registers a user, claiming the email and the username in the log.
    pub async fn register(&self, ctx: &CommandContext, command: Register) -> Result<Outcome, CommandError> {
        let command = Register { admin_emails: self.config.admin_emails.clone(), ..command };
        let user_s = user_subject(command.user_id);
        let email_s = reservation_subject(ReservationKind::Email, &user::normalize_email(&command.email));
        let name_s = reservation_subject(ReservationKind::Username, &user::username_key(&command.username));
        let subjects = vec![user_s.clone(), email_s.clone(), name_s.clone()];
        self.execute(Some(ctx), &ctx.actor, subjects, |snap| {
            let u = snap.state(&user_s, None, user::evolve);
            let e = snap.state(&email_s, None, user::evolve_reservation);
            let n = snap.state(&name_s, None, user::evolve_reservation);
            user::decide_register(RegistrationState { user: &u, email: &e, username: &n }, &command)
        })
        .await
    }

    pub async fn change_roles(&self, ctx: &CommandContext, command: ChangeRoles) -> Result<Outcome, CommandError> {
        let user_s = user_subject(command.user_id);
        self.execute(Some(ctx), &ctx.actor, vec![user_s.clone()], |snap| {
            user::decide_roles(&snap.state(&user_s, None, user::evolve), &command)
        })
        .await
    }

    /// Any command on one user's ledger.
    pub async fn ledger(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        command: LedgerCommand,
    ) -> Result<Outcome, CommandError> {
        let s = ledger_subject(user_id);
        self.execute(Some(ctx), &ctx.actor, vec![s.clone()], |snap| {
            ledger::decide(&snap.state(&s, ledger::initial_state(user_id), ledger::evolve), &command)
        })
        .await
    }

    /// A payout request, priced with the configured policy.
    pub async fn request_payout(
        &self,
        ctx: &CommandContext,
        user_id: Uuid,
        payout_id: Uuid,
        coins: i64,
        destination: String,
    ) -> Result<Outcome, CommandError> {
        let policy = self.config.payout_policy.clone();
        self.ledger(ctx, user_id, LedgerCommand::RequestPayout { payout_id, coins, destination, policy }).await
    }

    /// The viewer's side of a gift, at the configured host share.
    pub async fn send_gift(
        &self,
        ctx: &CommandContext,
        viewer_id: Uuid,
        stream_id: Uuid,
        gift_id: String,
        quantity: i64,
        unit_coins: i64,
    ) -> Result<Outcome, CommandError> {
        let ledger_s = ledger_subject(viewer_id);
        let stream_s = stream_subject(stream_id);
        let command =
            gift::SendGift { stream_id, gift_id, quantity, unit_coins, host_share_bps: self.config.host_share_bps };
        self.execute(Some(ctx), &ctx.actor, vec![ledger_s.clone(), stream_s.clone()], |snap| {
            let viewer = snap.state(&ledger_s, ledger::initial_state(viewer_id), ledger::evolve);
            let stream = snap.state(&stream_s, None, stream::evolve);
            gift::decide(gift::GiftState { viewer: &viewer, stream: &stream }, &command)
        })
        .await
    }

    /// Credits a batch of gifts to their host. Exactly once without a
    /// command record: the host's ledger remembers the last position
    /// credited, and gifts at or before it are skipped.
    pub async fn credit_gifts(&self, host_id: Uuid, gifts: Vec<GiftToCredit>) -> Result<Outcome, CommandError> {
        let s = ledger_subject(host_id);
        let command = LedgerCommand::CreditGifts { gifts };
        self.execute(None, &Actor::system("gift-reactor"), vec![s.clone()], |snap| {
            ledger::decide(&snap.state(&s, ledger::initial_state(host_id), ledger::evolve), &command)
        })
        .await
    }

    pub async fn start_stream(&self, ctx: &CommandContext, command: StartStream) -> Result<Outcome, CommandError> {
        let stream_s = stream_subject(command.stream_id);
        let channel_s = channel_subject(command.host_id);
        self.execute(Some(ctx), &ctx.actor, vec![stream_s.clone(), channel_s.clone()], |snap| {
            let channel = snap.state(&channel_s, None, stream::evolve_channel);
            let stream = snap.state(&stream_s, None, stream::evolve);
            stream::decide_start(&channel, &stream, &command)
        })
        .await
    }

    /// Join, leave or end a stream.
    pub async fn stream(
        &self,
        ctx: &CommandContext,
        stream_id: Uuid,
        command: StreamCommand,
    ) -> Result<Outcome, CommandError> {
        let stream_s = stream_subject(stream_id);
        let mut subjects = vec![stream_s.clone()];
        if matches!(command, StreamCommand::End { .. }) {
            // Ending writes the host's channel too; the host is in the
            // stream's own state, which never changes.
            let last = self.load(std::slice::from_ref(&stream_s)).await?;
            if let Some(s) = last.state(&stream_s, None, stream::evolve) {
                subjects.push(channel_subject(s.host_id));
            }
        }
        self.execute(Some(ctx), &ctx.actor, subjects, |snap| {
            stream::decide(stream_id, &snap.state(&stream_s, None, stream::evolve), &command)
        })
        .await
    }

    /// Reads the last message of every subject, concurrently.
    pub async fn load(&self, subjects: &[String]) -> Result<Snapshot, CommandError> {
        let lasts = try_join_all(subjects.iter().map(|s| self.log.last_on_subject(s))).await?;
        let mut snapshot = Snapshot::default();
        for (subject, last) in subjects.iter().zip(lasts) {
            let entry = match last {
                None => Last { position: 0, envelope: None },
                Some(msg) => {
                    let envelope = Envelope::decode(&msg.payload).map_err(|e| corrupt(msg.position, e))?;
                    Last { position: msg.position, envelope: Some(envelope) }
                }
            };
            snapshot.entries.insert(subject.clone(), entry);
        }
        Ok(snapshot)
    }

    /// The current state of one user's ledger.
    pub async fn ledger_state(&self, user_id: Uuid) -> Result<(LedgerState, u64), CommandError> {
        let s = ledger_subject(user_id);
        let snap = self.load(std::slice::from_ref(&s)).await?;
        let position = snap.max_position();
        Ok((snap.state(&s, ledger::initial_state(user_id), ledger::evolve), position))
    }

    /// The answer of an earlier run of the command, if it was recorded.
    async fn recorded(&self, ctx: &CommandContext) -> Result<Option<Outcome>, CommandError> {
        let Some(msg) = self.log.last_on_subject(&record_subject(&ctx.scope, &ctx.command_id)).await? else {
            return Ok(None);
        };
        let envelope = Envelope::decode(&msg.payload).map_err(|e| corrupt(msg.position, e))?;
        let Event::CommandRecorded(record) = &envelope.event else {
            return Err(CommandError::Corrupt { position: msg.position, reason: "not a command record".into() });
        };
        if record.fingerprint != ctx.fingerprint {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let count = u64::from(record.event_count);
        let first = msg.position.checked_sub(count).ok_or_else(|| CommandError::Corrupt {
            position: msg.position,
            reason: "a record counts more events than precede it".into(),
        })?;
        let stored = self.log.read_from(first, record.event_count).await?;
        let mut events = Vec::with_capacity(stored.len());
        for m in stored {
            events.push(Envelope::decode(&m.payload).map_err(|e| corrupt(m.position, e))?);
        }
        Ok(Some(Outcome { position: msg.position, events, repeated: true }))
    }

    /// The load-decide-append loop every command goes through.
    async fn execute<F>(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        subjects: Vec<String>,
        decide: F,
    ) -> Result<Outcome, CommandError>
    where
        F: Fn(&Snapshot) -> Result<Vec<Event>, DomainError>,
    {
        for attempt in 0..=CONFLICT_RETRY_MAX {
            let snapshot = self.load(&subjects).await?;
            let events = match decide(&snapshot) {
                Ok(events) => events,
                Err(rejection) => {
                    // The command may have been accepted before, and be
                    // rejected now only because its first run spent the
                    // coins: the first answer wins.
                    if let Some(ctx) = ctx
                        && let Some(first) = self.recorded(ctx).await?
                    {
                        return Ok(first);
                    }
                    return Err(rejection.into());
                }
            };
            if events.is_empty() {
                if let Some(ctx) = ctx
                    && let Some(first) = self.recorded(ctx).await?
                {
                    return Ok(first);
                }
                return Ok(Outcome { position: snapshot.max_position(), events: vec![], repeated: false });
            }
            let (requests, envelopes) = self.seal_all(ctx, actor, &snapshot, events)?;
            let appended = if requests.len() == 1 {
                let request = requests.into_iter().next().expect("one request");
                self.log.append(request).await.map(|a| vec![a.position])
            } else {
                // The semaphore is never closed, so a permit always comes.
                let _permit = self.batches_in_flight.acquire().await;
                self.log.append_atomic(requests).await
            };
            match appended {
                Ok(positions) => {
                    let position = positions.last().copied().unwrap_or(0);
                    return Ok(Outcome { position, events: envelopes, repeated: false });
                }
                Err(LogError::Conflict { .. } | LogError::Duplicate { .. }) => {
                    // Lost a race: either an identical command won (its
                    // record is there now), or another command changed an
                    // aggregate: decide again on the new state.
                    if let Some(ctx) = ctx
                        && let Some(first) = self.recorded(ctx).await?
                    {
                        return Ok(first);
                    }
                    let ceiling_ms = (1u64 << attempt.min(6)).min(CONFLICT_DELAY_MS_MAX);
                    let delay_ms = rand::rng().random_range(0..=ceiling_ms);
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    fn seal_all(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        snapshot: &Snapshot,
        events: Vec<Event>,
    ) -> Result<(Vec<AppendRequest>, Vec<Envelope>), CommandError> {
        let occurred_at = Utc::now();
        let (command_id, correlation_id) = match ctx {
            Some(c) => (c.command_id.clone(), c.correlation_id.clone()),
            None => {
                let id = Uuid::now_v7().to_string();
                (id.clone(), id)
            }
        };
        let meta = |event_id| EventMeta {
            event_id,
            occurred_at,
            command_id: command_id.clone(),
            correlation_id: correlation_id.clone(),
            actor: actor.clone(),
        };
        let mut requests = Vec::with_capacity(events.len() + 1);
        let mut envelopes = Vec::with_capacity(events.len());
        let event_count = u32::try_from(events.len()).unwrap_or(u32::MAX);
        for event in events {
            let subject = subject(event.aggregate_kind().as_str(), &event.aggregate_id());
            // A decider writes only aggregates it has read: their last
            // position is the expected one, their chain continues.
            let (expected, chain) = snapshot.chain(&subject).ok_or_else(|| CommandError::Corrupt {
                position: 0,
                reason: format!("a decision wrote {subject}, which it did not read"),
            })?;
            let envelope = chain.seal(&meta(Uuid::now_v7()), event);
            requests.push(AppendRequest {
                subject,
                payload: Bytes::from(envelope.encode()),
                msg_id: envelope.header.event_id.to_string(),
                expected_last_subject_seq: expected,
            });
            envelopes.push(envelope);
        }
        if let Some(ctx) = ctx {
            let record = Event::CommandRecorded(CommandRecorded {
                scope: ctx.scope.clone(),
                command_id: ctx.command_id.clone(),
                fingerprint: ctx.fingerprint.clone(),
                event_count,
            });
            let envelope = Envelope::seal(&meta(Uuid::now_v7()), record, 1, GENESIS_HASH);
            // The record's uniqueness comes from its subject expecting to be
            // empty, not from its message id: a repeat racing the first run
            // must lose on the subject, as a conflict, not as a half-duplicate
            // batch.
            requests.push(AppendRequest {
                subject: envelope.subject(),
                payload: Bytes::from(envelope.encode()),
                msg_id: envelope.header.event_id.to_string(),
                expected_last_subject_seq: 0,
            });
        }
        Ok((requests, envelopes))
    }
}

fn corrupt(position: u64, error: SchemaError) -> CommandError {
    CommandError::Corrupt { position, reason: error.to_string() }
}
