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
use domain::payment::{self, Buyer, PaymentCommand};
use domain::stream::{self, StartStream, StreamCommand};
use domain::user::{self, ChangeRoles, Register, RegistrationState};
use domain::{DomainError, Loaded, gift};
use events_schema::{
    Actor, ActorKind, AggregateKind, CommandRecorded, Envelope, Event, EventMeta, GENESIS_HASH, ReservationKind,
    SchemaError, StripeEventRecorded, command_record_id, payment_token, reservation_id, subject,
};
use futures_util::future::try_join_all;
use rand::Rng;
use uuid::Uuid;

use crate::log::{AppendRequest, EventLog, LogError, StoredMessage};

/// How many times a command is decided again after losing a race.
pub const CONFLICT_RETRY_MAX: u32 = 16;
/// The longest pause between two tries after a conflict.
pub const CONFLICT_DELAY_MS_MAX: u64 = 50;
/// Atomic batches one process keeps in flight. The server accepts at most
/// 50 per stream (ADR-50) and refuses more with an error the adapter
/// retries after a pause; queueing here instead keeps the pause away.
pub const ATOMIC_BATCHES_IN_FLIGHT_MAX: usize = 40;

/// Who asks, and under which id, for an idempotent command. Build it with
/// `CommandContext::new`, which derives the scope from the actor, so that a
/// record can be rebuilt from an event's header alone.
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

impl CommandContext {
    /// The context of a command sent by `actor` under `command_id`, whose
    /// content hashes to `fingerprint`. `None` for a system actor, whose
    /// commands are idempotent by the state they change.
    pub fn new(
        actor: Actor,
        command_id: String,
        fingerprint: String,
        correlation_id: String,
    ) -> Option<CommandContext> {
        let scope = scope_of(&actor)?;
        Some(CommandContext { scope, command_id, fingerprint, correlation_id, actor })
    }
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

/// What a verified Stripe event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeOutcome {
    /// The log position of the event's record (of the first delivery's, for
    /// a repeat), or of the last settling commit.
    pub position: u64,
    /// `false` when the event id was recorded before: a repeat changes
    /// nothing.
    pub recorded: bool,
    /// The events appended for it (record, payment, ledger), in order.
    pub events: Vec<Envelope>,
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
/// The payment aggregate of a PaymentIntent.
pub fn payment_subject(payment_id: &str) -> String {
    subject(AggregateKind::Payment.as_str(), &payment_token(payment_id))
}
/// Where a Stripe event is recorded, once: its id must be a plain Stripe id
/// (`events_schema::is_plain_stripe_id`), which the webhook checks.
pub fn stripe_event_subject(stripe_event_id: &str) -> String {
    subject(AggregateKind::Stripe.as_str(), stripe_event_id)
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

    /// Records a verified Stripe event once (its subject must be empty) and,
    /// in the same atomic batch, what it changes: the payment aggregate and
    /// the buyer's ledger (`domain::payment`). A repeated event id changes
    /// nothing. A purchase is followed by a settling step that reverses a
    /// refund seen before it; that step also runs on a repeat, so a crash
    /// between the two is repaired by Stripe's next delivery.
    ///
    /// A buyer named as `Buyer::Known` is checked against the log: one with
    /// no registration becomes `Buyer::Unknown` (recorded and flagged). A
    /// decision the domain rejects (say, coins that would overflow) still
    /// records the event, so that Stripe stops retrying it; the rejection
    /// is logged.
    pub async fn stripe_event(
        &self,
        record: StripeEventRecorded,
        payment: Option<(String, PaymentCommand)>,
    ) -> Result<StripeOutcome, CommandError> {
        let actor = Actor::stripe(&record.stripe_event_id);
        let record_s = stripe_event_subject(&record.stripe_event_id);
        let payment = match payment {
            Some((id, command)) => Some((id, self.resolve_buyer(command).await?)),
            None => None,
        };
        let payment_s = payment.as_ref().map(|(id, _)| payment_subject(id));
        let mut outcome = None;
        for _ in 0..=CONFLICT_RETRY_MAX {
            // The ledger a decision writes depends on the payment's state
            // (a refund reverses the buyer's coins): read it first, and
            // decide again if it changed in between.
            let ledger_user = match (&payment, &payment_s) {
                (Some((id, command)), Some(s)) => {
                    let snap = self.load(std::slice::from_ref(s)).await?;
                    payment::ledger_user(&snap.state(s, payment::initial_state(id), payment::evolve), command)
                }
                _ => None,
            };
            let mut subjects = vec![record_s.clone()];
            subjects.extend(payment_s.clone());
            subjects.extend(ledger_user.map(ledger_subject));
            let stale = std::sync::atomic::AtomicBool::new(false);
            let decided = self
                .execute(None, &actor, subjects, |snap| {
                    if snap.entries.get(&record_s).is_some_and(|l| l.envelope.is_some()) {
                        return Ok(vec![]);
                    }
                    let mut events = vec![Event::StripeEventRecorded(record.clone())];
                    let (Some((id, command)), Some(s)) = (&payment, &payment_s) else { return Ok(events) };
                    let state = snap.state(s, payment::initial_state(id), payment::evolve);
                    if payment::ledger_user(&state, command) != ledger_user {
                        stale.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Ok(vec![]);
                    }
                    let ledger =
                        ledger_user.map(|u| snap.state(&ledger_subject(u), ledger::initial_state(u), ledger::evolve));
                    match payment::decide(&state, ledger.as_ref(), command) {
                        Ok(more) => events.extend(more),
                        Err(rejection) => {
                            tracing::warn!(
                                stripe_event_id = %record.stripe_event_id,
                                payment_id = %id,
                                %rejection,
                                "a Stripe event is recorded without effect"
                            );
                        }
                    }
                    Ok(events)
                })
                .await?;
            if stale.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            outcome = Some(decided);
            break;
        }
        let Some(decided) = outcome else { return Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 }) };
        let recorded = !decided.events.is_empty();
        let mut result = StripeOutcome { position: decided.position, recorded, events: decided.events };
        if let Some((id, PaymentCommand::ConfirmPurchase { .. })) = &payment {
            let settled = self.settle_payment(id).await?;
            if !settled.events.is_empty() {
                result.position = settled.position;
                result.events.extend(settled.events);
            }
        }
        Ok(result)
    }

    /// Reverses what refunds seen before the purchase made due, if anything.
    pub async fn settle_payment(&self, payment_id: &str) -> Result<Outcome, CommandError> {
        let s = payment_subject(payment_id);
        for _ in 0..=CONFLICT_RETRY_MAX {
            let snap = self.load(std::slice::from_ref(&s)).await?;
            let state = snap.state(&s, payment::initial_state(payment_id), payment::evolve);
            let Some(user) = payment::ledger_user(&state, &PaymentCommand::Settle) else {
                return Ok(Outcome { position: snap.max_position(), events: vec![], repeated: false });
            };
            if state.snapshot.amount_refunded_cents == 0 {
                return Ok(Outcome { position: snap.max_position(), events: vec![], repeated: false });
            }
            let ledger_s = ledger_subject(user);
            let stale = std::sync::atomic::AtomicBool::new(false);
            let outcome = self
                .execute(None, &Actor::system("stripe-settle"), vec![s.clone(), ledger_s.clone()], |snap| {
                    let state = snap.state(&s, payment::initial_state(payment_id), payment::evolve);
                    if payment::ledger_user(&state, &PaymentCommand::Settle) != Some(user) {
                        stale.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Ok(vec![]);
                    }
                    let ledger = snap.state(&ledger_s, ledger::initial_state(user), ledger::evolve);
                    payment::decide(&state, Some(&ledger), &PaymentCommand::Settle)
                })
                .await?;
            if !stale.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(outcome);
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// A purchase's buyer as the log knows it: a named user id with no
    /// registration is unknown.
    async fn resolve_buyer(&self, command: PaymentCommand) -> Result<PaymentCommand, CommandError> {
        let PaymentCommand::ConfirmPurchase {
            stripe_event_id,
            buyer: Buyer::Known(user_id),
            package,
            amount_cents,
            currency,
        } = command
        else {
            return Ok(command);
        };
        let s = user_subject(user_id);
        let snap = self.load(std::slice::from_ref(&s)).await?;
        let buyer = match snap.state(&s, None, domain::user::evolve) {
            Some(_) => Buyer::Known(user_id),
            None => Buyer::Unknown(user_id.to_string()),
        };
        Ok(PaymentCommand::ConfirmPurchase { stripe_event_id, buyer, package, amount_cents, currency })
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
        match self.log.last_on_subject(&record_subject(&ctx.scope, &ctx.command_id)).await? {
            None => Ok(None),
            Some(msg) => self.answer_from_record(ctx, &msg).await.map(Some),
        }
    }

    /// The first answer, read back from the log through the command's record.
    async fn answer_from_record(&self, ctx: &CommandContext, msg: &StoredMessage) -> Result<Outcome, CommandError> {
        let envelope = Envelope::decode(&msg.payload).map_err(|e| corrupt(msg.position, e))?;
        let Event::CommandRecorded(record) = &envelope.event else {
            return Err(CommandError::Corrupt { position: msg.position, reason: "not a command record".into() });
        };
        if record.fingerprint != ctx.fingerprint {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let mut stored = Vec::with_capacity(record.event_positions.len().max(1));
        if record.event_positions.is_empty() {
            // One atomic batch: the events are the messages just before.
            let count = u64::from(record.event_count);
            let first = msg.position.checked_sub(count).ok_or_else(|| CommandError::Corrupt {
                position: msg.position,
                reason: "a record counts more events than precede it".into(),
            })?;
            stored = self.log.read_from(first, record.event_count).await?;
        } else {
            for position in &record.event_positions {
                stored.extend(self.log.read_from(*position, 1).await?);
            }
        }
        let mut events = Vec::with_capacity(stored.len());
        for m in stored {
            events.push(Envelope::decode(&m.payload).map_err(|e| corrupt(m.position, e))?);
        }
        Ok(Outcome { position: msg.position, events, repeated: true })
    }

    /// The load-decide-append loop every command goes through.
    ///
    /// A command that writes one aggregate appends its event alone (one
    /// message, the fast path), with a message id derived from the command,
    /// then its record. A command that writes several aggregates appends
    /// them and its record in one atomic batch (JetStream 2.12), which costs
    /// the server several milliseconds per batch. A crash between the event
    /// and its record is covered twice: a repeat inside the duplicate window
    /// hits the message id, and the gift reactor writes a missing record
    /// from the event's header within seconds.
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
            let record_lookup = async {
                match ctx {
                    Some(c) => self.log.last_on_subject(&record_subject(&c.scope, &c.command_id)).await,
                    None => Ok(None),
                }
            };
            let (snapshot, record) = tokio::join!(self.load(&subjects), record_lookup);
            let (snapshot, record) = (snapshot?, record?);
            if let (Some(ctx), Some(record)) = (ctx, record) {
                return self.answer_from_record(ctx, &record).await;
            }
            let events = match decide(&snapshot) {
                Ok(events) => events,
                Err(rejection) => {
                    // The first run may have appended its event and died
                    // before its record: then the event is the aggregate's
                    // last, and it is the answer.
                    if let Some(ctx) = ctx
                        && let Some(outcome) = self.complete_unrecorded(ctx, &snapshot).await?
                    {
                        return Ok(outcome);
                    }
                    return Err(rejection.into());
                }
            };
            if events.is_empty() {
                return Ok(Outcome { position: snapshot.max_position(), events: vec![], repeated: false });
            }
            let single = events.len() == 1 && ctx.is_some();
            let (mut requests, envelopes) = self.seal_all(ctx, actor, &snapshot, events, !single)?;
            let appended = if single {
                let Some(ctx) = ctx else { unreachable!("single implies a context") };
                let mut request = requests.remove(0);
                request.msg_id = command_msg_id(ctx);
                match self.log.append(request).await {
                    Ok(appended) => return self.record_after(ctx, actor, appended.position, envelopes).await,
                    // The event of an earlier run of this command, inside
                    // the duplicate window: record it, answer with it.
                    Err(LogError::Duplicate { position }) => {
                        let original = self.read_envelope(position).await?;
                        return self.record_after(ctx, actor, position, vec![original]).await;
                    }
                    Err(other) => Err(other),
                }
            } else if requests.len() == 1 {
                let request = requests.remove(0);
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
                    // aggregate: load and decide again.
                    let ceiling_ms = (1u64 << attempt.min(6)).min(CONFLICT_DELAY_MS_MAX);
                    let delay_ms = rand::rng().random_range(0..=ceiling_ms);
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// Appends the record of a command whose event is at `position`. The
    /// event is stored whatever happens here, so the answer is a success:
    /// if the record cannot be written now, the reactor writes it.
    async fn record_after(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        position: u64,
        events: Vec<Envelope>,
    ) -> Result<Outcome, CommandError> {
        let request = record_request(ctx, actor, vec![position], events.len());
        match self.log.append(request).await {
            Ok(appended) => Ok(Outcome { position: appended.position, events, repeated: false }),
            Err(LogError::Conflict { .. } | LogError::Duplicate { .. }) => match self.recorded(ctx).await? {
                // Another run (or the reactor) recorded it first.
                Some(first) => Ok(first),
                None => Ok(Outcome { position, events, repeated: false }),
            },
            Err(error) => {
                tracing::warn!(%error, position, "command record not written; the reactor will write it");
                Ok(Outcome { position, events, repeated: false })
            }
        }
    }

    /// When the aggregate's last event is this command's, unrecorded (a run
    /// that died between its event and its record), records and returns it.
    async fn complete_unrecorded(
        &self,
        ctx: &CommandContext,
        snapshot: &Snapshot,
    ) -> Result<Option<Outcome>, CommandError> {
        for last in snapshot.entries.values() {
            let Some(envelope) = &last.envelope else { continue };
            let header = &envelope.header;
            let same_sender = scope_of(&header.actor).as_deref() == Some(ctx.scope.as_str());
            if same_sender
                && header.command_id == ctx.command_id
                && header.command_fingerprint.as_deref() == Some(&ctx.fingerprint)
            {
                let outcome = self.record_after(ctx, &ctx.actor, last.position, vec![envelope.clone()]).await?;
                return Ok(Some(Outcome { repeated: true, ..outcome }));
            }
        }
        Ok(None)
    }

    async fn read_envelope(&self, position: u64) -> Result<Envelope, CommandError> {
        let stored = self.log.read_from(position, 1).await?;
        let message = stored.into_iter().next().ok_or_else(|| CommandError::Corrupt {
            position,
            reason: "an acknowledged message cannot be read back".into(),
        })?;
        Envelope::decode(&message.payload).map_err(|e| corrupt(position, e))
    }

    fn seal_all(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        snapshot: &Snapshot,
        events: Vec<Event>,
        with_record: bool,
    ) -> Result<(Vec<AppendRequest>, Vec<Envelope>), CommandError> {
        let occurred_at = Utc::now();
        let (command_id, correlation_id) = match ctx {
            Some(c) => (c.command_id.clone(), c.correlation_id.clone()),
            None => {
                let id = Uuid::now_v7().to_string();
                (id.clone(), id)
            }
        };
        let fingerprint = ctx.map(|c| c.fingerprint.as_str());
        let meta = EventMeta { event_id: Uuid::nil(), occurred_at, command_id, correlation_id, actor: actor.clone() };
        let mut requests = Vec::with_capacity(events.len() + 1);
        let mut envelopes = Vec::with_capacity(events.len());
        let event_count = events.len();
        for event in events {
            let subject = subject(event.aggregate_kind().as_str(), &event.aggregate_id());
            // A decider writes only aggregates it has read: their last
            // position is the expected one, their chain continues.
            let (expected, chain) = snapshot.chain(&subject).ok_or_else(|| CommandError::Corrupt {
                position: 0,
                reason: format!("a decision wrote {subject}, which it did not read"),
            })?;
            let meta = EventMeta { event_id: Uuid::now_v7(), ..meta.clone() };
            let envelope = chain.seal_for_command(&meta, fingerprint, event);
            requests.push(AppendRequest {
                subject,
                payload: Bytes::from(envelope.encode()),
                msg_id: envelope.header.event_id.to_string(),
                expected_last_subject_seq: expected,
            });
            envelopes.push(envelope);
        }
        if with_record && let Some(ctx) = ctx {
            requests.push(record_request(ctx, actor, vec![], event_count));
        }
        Ok((requests, envelopes))
    }
}

/// The message id of a single-aggregate command's event: the same for every
/// run of the command, so that JetStream drops a second one inside its
/// duplicate window.
fn command_msg_id(ctx: &CommandContext) -> String {
    format!("cmd-{}", command_record_id(&ctx.scope, &ctx.command_id))
}

/// The append of a command's record, on a subject that must be empty: its
/// uniqueness comes from the subject, so a racing repeat loses as a
/// conflict.
fn record_request(ctx: &CommandContext, actor: &Actor, event_positions: Vec<u64>, event_count: usize) -> AppendRequest {
    let record = Event::CommandRecorded(CommandRecorded {
        scope: ctx.scope.clone(),
        command_id: ctx.command_id.clone(),
        fingerprint: ctx.fingerprint.clone(),
        event_count: u32::try_from(event_count).unwrap_or(u32::MAX),
        event_positions,
    });
    let meta = EventMeta {
        event_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        command_id: ctx.command_id.clone(),
        correlation_id: ctx.correlation_id.clone(),
        actor: actor.clone(),
    };
    let envelope = Envelope::seal(&meta, record, 1, GENESIS_HASH);
    AppendRequest {
        subject: envelope.subject(),
        payload: Bytes::from(envelope.encode()),
        msg_id: envelope.header.event_id.to_string(),
        expected_last_subject_seq: 0,
    }
}

/// The record of a command whose event carries its id and fingerprint but
/// has no record yet; the reactor writes it for events it reads.
pub fn repair_record_request(envelope: &Envelope, position: u64) -> Option<AppendRequest> {
    let fingerprint = envelope.header.command_fingerprint.clone()?;
    let scope = scope_of(&envelope.header.actor)?;
    let ctx = CommandContext {
        scope,
        command_id: envelope.header.command_id.clone(),
        fingerprint,
        correlation_id: envelope.header.correlation_id.clone(),
        actor: envelope.header.actor.clone(),
    };
    Some(record_request(&ctx, &ctx.actor, vec![position], 1))
}

/// The id space of a command sent by `actor`: its user for users and
/// admins, Stripe's for Stripe.
pub fn scope_of(actor: &Actor) -> Option<String> {
    match actor.kind {
        ActorKind::User | ActorKind::Admin => actor.id.as_ref().map(|id| format!("user:{id}")),
        ActorKind::Stripe => Some("stripe".into()),
        ActorKind::System => None,
    }
}

/// The subject of a command's record.
pub fn command_record_subject(envelope: &Envelope) -> Option<String> {
    let scope = scope_of(&envelope.header.actor)?;
    Some(record_subject(&scope, &envelope.header.command_id))
}

fn corrupt(position: u64, error: SchemaError) -> CommandError {
    CommandError::Corrupt { position, reason: error.to_string() }
}
