//! Command handling: load the aggregates a decision reads from the last
//! message of their subjects (one coalesced read, with the command's
//! record; the subject the command writes may come from the handler's
//! cache, guarded by its append), decide, seal, append under optimistic
//! concurrency, and on a conflict load and decide again.
//!
//! Idempotency. A command that names an id (`CommandContext`) appends a
//! `command.recorded` event on the subject `hb.command.<hash of scope and
//! id>` expecting that subject to be empty: right after its one event, or
//! in the same atomic batch as its events when it writes several
//! aggregates. A repeat of the command finds the record and gets the first
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
use domain::payment::{self, Buyer, PaymentCommand, PaymentState, Posting};
use domain::stream::{self, StartStream, StreamCommand};
use domain::user::{self, ChangeRoles, Register, RegistrationState};
use domain::{DomainError, Loaded, gift};
use events_schema::{
    Actor, ActorKind, AggregateKind, CommandRecorded, Envelope, Event, EventMeta, GENESIS_HASH, ReservationKind,
    SchemaError, StripeEventRecorded, command_record_id, payment_token, reservation_id, subject,
};
use rand::Rng;
use uuid::Uuid;

use crate::aggregate_cache::AggregateCache;
use crate::log::{AppendRequest, Appended, EventLog, LogError, StoredMessage};

/// How many times a command is decided again after losing a race.
pub const CONFLICT_RETRY_MAX: u32 = 16;
/// The longest pause between two tries after a conflict.
pub const CONFLICT_DELAY_MS_MAX: u64 = 50;
/// Atomic batches one process keeps in flight. The server accepts at most
/// 50 per stream (ADR-50) and refuses more with an error the adapter
/// retries after a pause; queueing here instead keeps the pause away.
pub const ATOMIC_BATCHES_IN_FLIGHT_MAX: usize = 40;
/// Messages of a buyer's ledger one posting reads, at most, looking for an
/// earlier posting of the same payment decision (only after a crash or a
/// race: the common path reads none).
pub const POSTING_SCAN_MESSAGES_MAX: u32 = 1_000_000;
/// Messages per read of that scan.
const POSTING_SCAN_BATCH_MAX: u32 = 1_024;
/// Reads of that scan that may come back short of the ledger's last
/// message (a lagging replica) before it gives up.
const POSTING_SCAN_SHORT_READS_MAX: u32 = 16;

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
    #[error("looked through {messages} messages of {subject} for a posting without reaching its end")]
    PostingScanTooLong { subject: String, messages: u32 },
}

/// What a verified Stripe event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeOutcome {
    /// The log position of the last message this handling appended (the
    /// record, or the last mark of a posted decision); when it appended
    /// nothing (a repeat), the highest of its record's and its payment's
    /// last positions. A query at this position sees the coins posted.
    pub position: u64,
    /// `false` when the event id was recorded before: a repeat, which
    /// changes nothing unless it completes a decision an earlier delivery
    /// left pending.
    pub recorded: bool,
    /// The events appended for it (record, payment decisions, ledger
    /// commits, marks), in order.
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
    envelope: Option<Arc<Envelope>>,
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

/// The subject an event is appended to.
fn event_subject(event: &Event) -> String {
    subject(event.aggregate_kind().as_str(), &event.aggregate_id())
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
    cache: Arc<AggregateCache>,
}

impl Commands {
    pub fn new(log: Arc<dyn EventLog>, config: CommandConfig) -> Commands {
        let batches_in_flight = Arc::new(tokio::sync::Semaphore::new(ATOMIC_BATCHES_IN_FLIGHT_MAX));
        Commands { log, config: Arc::new(config), batches_in_flight, cache: Arc::default() }
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
        self.execute_with(Some(ctx), &ctx.actor, vec![s.clone()], Some(&s), |snap| {
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
        let subjects = vec![ledger_s.clone(), stream_s.clone()];
        self.execute_with(Some(ctx), &ctx.actor, subjects, Some(&ledger_s), |snap| {
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
        self.execute_with(None, &Actor::system("gift-reactor"), vec![s.clone()], Some(&s), |snap| {
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

    /// Records a verified Stripe event once and carries out what it asks of
    /// its payment, in single appends, each guarded by its subject's
    /// expected last position:
    ///
    /// 1. the record, on `hb.stripe.<event id>`, which must be empty. A
    ///    repeat finds it and goes on all the same: the first delivery may
    ///    have died after it, and the steps below change nothing twice;
    /// 2. the decision, on the payment (`domain::payment::decide`). One
    ///    that moves coins leaves the payment *pending*;
    /// 3. the posting of a pending decision on the buyer's ledger: a commit
    ///    naming the decision's position (`sourcePosition`), appended only
    ///    after looking on the ledger for one that already does (see
    ///    `post`);
    /// 4. the mark, `payment.posted`, on the payment.
    ///
    /// Whoever loads a payment with a pending decision completes 3 and 4
    /// first, so a crash between any two steps is completed by Stripe's
    /// next delivery, exactly once. A purchase is followed by settling: a
    /// refund seen before it is reversed (decided, posted, marked) right
    /// after. The answer comes once everything is posted.
    ///
    /// A buyer named as `Buyer::Known` is checked against the log: one with
    /// no registration becomes `Buyer::Unknown` (recorded and flagged). A
    /// decision the domain rejects (say, coins that would overflow the
    /// wallet) is not taken, and the event stays recorded, so that Stripe
    /// stops retrying it; the rejection is logged.
    pub async fn stripe_event(
        &self,
        record: StripeEventRecorded,
        payment: Option<(String, PaymentCommand)>,
    ) -> Result<StripeOutcome, CommandError> {
        let stripe_event_id = record.stripe_event_id.clone();
        let meta = EventMeta {
            event_id: Uuid::nil(),
            occurred_at: Utc::now(),
            command_id: stripe_event_id.clone(),
            correlation_id: stripe_event_id.clone(),
            actor: Actor::stripe(&stripe_event_id),
        };
        let record_s = stripe_event_subject(&stripe_event_id);
        // Everything the common path reads, at once: the record, the
        // payment, and for a purchase its buyer's registration and ledger.
        let buyer = match &payment {
            Some((_, PaymentCommand::ConfirmPurchase { buyer: Buyer::Known(user), .. })) => Some(*user),
            _ => None,
        };
        let payment_tip = async {
            match &payment {
                Some((id, _)) => self.tip(&payment_subject(id)).await.map(Some),
                None => Ok(None),
            }
        };
        let registered = async {
            match buyer {
                Some(user) => {
                    let s = user_subject(user);
                    let snap = self.load(std::slice::from_ref(&s)).await?;
                    Ok(snap.state(&s, None, domain::user::evolve).is_some())
                }
                None => Ok(false),
            }
        };
        let ledger_tip = async {
            match buyer {
                Some(user) => self.tip(&ledger_subject(user)).await.map(|tip| Some((user, tip))),
                None => Ok(None),
            }
        };
        let (record_tip, payment_tip, registered, ledger_tip) =
            tokio::try_join!(self.tip(&record_s), payment_tip, registered, ledger_tip)?;

        let mut written = Written::default();
        let (recorded, record_position) = if record_tip.last.is_some() {
            (false, record_tip.position)
        } else {
            let event = Event::StripeEventRecorded(record);
            let msg_id = format!("stripe-{stripe_event_id}");
            match self.append_on(&record_s, &record_tip, &meta, event, msg_id).await? {
                Appending::Stored(stored) => {
                    let (tip, envelope) = *stored;
                    written.push(tip.position, envelope);
                    (true, tip.position)
                }
                Appending::Duplicate(position) => (false, position),
                // A concurrent delivery of the same event recorded it.
                Appending::Conflict => (false, self.tip(&record_s).await?.position),
            }
        };
        let mut position = record_position;
        if let (Some((payment_id, command)), Some(payment_tip)) = (payment, payment_tip) {
            let command = match command {
                PaymentCommand::ConfirmPurchase {
                    stripe_event_id,
                    buyer: Buyer::Known(user),
                    package,
                    amount_cents,
                    currency,
                } if !registered => {
                    let buyer = Buyer::Unknown(user.to_string());
                    PaymentCommand::ConfirmPurchase { stripe_event_id, buyer, package, amount_cents, currency }
                }
                other => other,
            };
            let settles = matches!(command, PaymentCommand::ConfirmPurchase { .. });
            let mut commands = vec![command];
            if settles {
                commands.push(PaymentCommand::Settle);
            }
            let ledger = ledger_tip.filter(|_| registered);
            let payment_position =
                self.run_payment(&meta, &payment_id, &commands, payment_tip, ledger, &mut written).await?;
            position = position.max(payment_position);
        }
        let position = if written.events.is_empty() { position } else { written.position };
        Ok(StripeOutcome { position, recorded, events: written.events })
    }

    /// Reverses what refunds seen before the purchase made due, if anything
    /// (decided, posted, marked), after completing a pending decision.
    pub async fn settle_payment(&self, payment_id: &str) -> Result<Outcome, CommandError> {
        let command_id = Uuid::now_v7().to_string();
        let meta = EventMeta {
            event_id: Uuid::nil(),
            occurred_at: Utc::now(),
            command_id: command_id.clone(),
            correlation_id: command_id,
            actor: Actor::system("stripe-settle"),
        };
        let tip = self.tip(&payment_subject(payment_id)).await?;
        let mut written = Written::default();
        let position = self.run_payment(&meta, payment_id, &[PaymentCommand::Settle], tip, None, &mut written).await?;
        let position = if written.events.is_empty() { position } else { written.position };
        Ok(Outcome { position, events: written.events, repeated: false })
    }

    /// Decides `commands` in order on the payment whose last message is
    /// `tip`, completing (posting, marking) every decision that moves coins
    /// before the next, and a decision found pending before anything.
    /// `ledger`: the buyer's ledger, when already read. Returns the
    /// position of the payment's last message.
    async fn run_payment(
        &self,
        meta: &EventMeta,
        payment_id: &str,
        commands: &[PaymentCommand],
        mut tip: Tip,
        mut ledger: Option<(Uuid, Tip)>,
        written: &mut Written,
    ) -> Result<u64, CommandError> {
        let payment_s = payment_subject(payment_id);
        let mut next = 0;
        let mut conflicts = 0;
        // Without conflicts: a completion first, then per command a decision
        // and its completion, then the last look; each conflict may add a
        // reload and the completion of the winner's decision.
        let steps_max = 2 + 2 * commands.len() + 2 * (CONFLICT_RETRY_MAX as usize + 1);
        for _ in 0..steps_max {
            let state = payment_state(payment_id, &tip);
            if let Some(posting) = payment::pending(&state) {
                self.complete(meta, &payment_s, &mut tip, &posting, &mut ledger, written).await?;
                continue;
            }
            let Some(command) = commands.get(next) else { return Ok(tip.position) };
            let event = match payment::decide(&state, command) {
                Ok(events) => events.into_iter().next(),
                Err(rejection) => {
                    without_effect(meta, payment_id, &rejection);
                    None
                }
            };
            let Some(event) = event else {
                next += 1;
                continue;
            };
            // A decision that moves coins is taken only if the buyer's ledger
            // would accept its posting now, so that none stays pending for
            // good.
            if let Some(effect) = payment::effect(&event) {
                let ledger_tip = self.ledger_tip(effect.user_id, &mut ledger).await?;
                let trial = Posting { payment_id: payment_id.to_string(), source_position: tip.position + 1, effect };
                if let Err(rejection) = payment::post(&trial, &ledger_state(trial.effect.user_id, ledger_tip)) {
                    without_effect(meta, payment_id, &rejection);
                    next += 1;
                    continue;
                }
            }
            match self.append_on(&payment_s, &tip, meta, event, Uuid::now_v7().to_string()).await? {
                Appending::Stored(stored) => {
                    let (new_tip, envelope) = *stored;
                    written.push(new_tip.position, envelope);
                    tip = new_tip;
                    next += 1;
                }
                Appending::Duplicate(_) | Appending::Conflict => {
                    conflicts += 1;
                    if conflicts > CONFLICT_RETRY_MAX {
                        break;
                    }
                    conflict_pause(conflicts).await;
                    tip = self.tip(&payment_s).await?;
                }
            }
        }
        Err(CommandError::Contention { tries: conflicts.max(1) })
    }

    /// Posts the pending `posting` and marks it posted on the payment whose
    /// last message (the pending decision) is `tip`.
    async fn complete(
        &self,
        meta: &EventMeta,
        payment_s: &str,
        tip: &mut Tip,
        posting: &Posting,
        ledger: &mut Option<(Uuid, Tip)>,
        written: &mut Written,
    ) -> Result<(), CommandError> {
        let ledger_position = self.post(meta, posting, ledger, written).await?;
        let state = payment_state(&posting.payment_id, tip);
        let mark = payment::decide(&state, &PaymentCommand::MarkPosted { ledger_position })?;
        let Some(event) = mark.into_iter().next() else { return Ok(()) };
        let msg_id = format!("posted-{}-{}", payment_token(&posting.payment_id), posting.source_position);
        match self.append_on(payment_s, tip, meta, event, msg_id).await? {
            Appending::Stored(stored) => {
                let (new_tip, envelope) = *stored;
                written.push(new_tip.position, envelope);
                *tip = new_tip;
            }
            // Only a mark can follow a pending decision: another run
            // marked it.
            Appending::Duplicate(_) | Appending::Conflict => *tip = self.tip(payment_s).await?,
        }
        Ok(())
    }

    /// Posts `posting` on the buyer's ledger, once: returns the position of
    /// the commit that posts it, this one's or an earlier one's.
    ///
    /// A posting of the decision at position P lies after P on the ledger.
    /// So when the ledger's last message is before P (the common path: the
    /// decision was just appended), nothing can have posted it, and the
    /// commit is appended at once. Otherwise the ledger's messages after P,
    /// up to its last, are read first, looking for one; the commit is then
    /// appended expecting that last position, so that a concurrent posting
    /// makes it conflict, and the next try reads what came since.
    async fn post(
        &self,
        meta: &EventMeta,
        posting: &Posting,
        ledger: &mut Option<(Uuid, Tip)>,
        written: &mut Written,
    ) -> Result<u64, CommandError> {
        let user = posting.effect.user_id;
        let ledger_s = ledger_subject(user);
        let mut tip = match ledger.take() {
            Some((owner, tip)) if owner == user => tip,
            _ => self.tip(&ledger_s).await?,
        };
        // Messages of the ledger up to here are known not to post it.
        let mut scanned = posting.source_position;
        for attempt in 1..=CONFLICT_RETRY_MAX + 1 {
            if tip.position > scanned {
                if let Some(position) = self.find_posting(&ledger_s, posting, scanned, tip.position).await? {
                    *ledger = Some((user, tip));
                    return Ok(position);
                }
                scanned = tip.position;
            }
            let commit = payment::post(posting, &ledger_state(user, &tip))?;
            let Some(event) = commit.into_iter().next() else {
                return Err(CommandError::Corrupt {
                    position: posting.source_position,
                    reason: "a posting decided no commit".into(),
                });
            };
            let msg_id = format!("post-{}-{}", payment_token(&posting.payment_id), posting.source_position);
            match self.append_on(&ledger_s, &tip, meta, event, msg_id).await? {
                Appending::Stored(stored) => {
                    let (new_tip, envelope) = *stored;
                    let position = new_tip.position;
                    written.push(position, envelope);
                    *ledger = Some((user, new_tip));
                    return Ok(position);
                }
                // The message id is the decision's: a posting of it is
                // stored there (a concurrent run's, or ours whose ack was
                // lost).
                Appending::Duplicate(position) => return Ok(position),
                Appending::Conflict => {
                    conflict_pause(attempt).await;
                    tip = self.tip(&ledger_s).await?;
                }
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// The position of a message of `ledger_s` after `after` and at most
    /// `up_to` (the ledger's last, as read) that posts `posting`, if any.
    /// Reads every message in between: a read that comes back short of
    /// `up_to` (a replica that lags) is tried again, a bounded number of
    /// times.
    async fn find_posting(
        &self,
        ledger_s: &str,
        posting: &Posting,
        after: u64,
        up_to: u64,
    ) -> Result<Option<u64>, CommandError> {
        let mut next = after + 1;
        let mut read: u32 = 0;
        let mut short_reads: u32 = 0;
        while next <= up_to {
            if read >= POSTING_SCAN_MESSAGES_MAX {
                return Err(CommandError::PostingScanTooLong { subject: ledger_s.to_string(), messages: read });
            }
            let batch = self.log.read_subject_from(ledger_s, next, POSTING_SCAN_BATCH_MAX).await?;
            if batch.is_empty() {
                short_reads += 1;
                if short_reads > POSTING_SCAN_SHORT_READS_MAX {
                    return Err(CommandError::Log(LogError::Unavailable(format!(
                        "{ledger_s} reads end before position {up_to}, its last"
                    ))));
                }
                tokio::time::sleep(Duration::from_millis(u64::from(short_reads))).await;
                continue;
            }
            for message in batch {
                if message.position > up_to {
                    return Ok(None);
                }
                let envelope = Envelope::decode(&message.payload).map_err(|e| corrupt(message.position, e))?;
                if payment::is_posting_of(&envelope.event, posting) {
                    return Ok(Some(message.position));
                }
                read += 1;
                next = message.position + 1;
            }
        }
        Ok(None)
    }

    /// The buyer's ledger as last read, read now if it is not `user`'s.
    async fn ledger_tip<'a>(&self, user: Uuid, ledger: &'a mut Option<(Uuid, Tip)>) -> Result<&'a Tip, CommandError> {
        if ledger.as_ref().is_none_or(|(owner, _)| *owner != user) {
            *ledger = Some((user, self.tip(&ledger_subject(user)).await?));
        }
        match ledger {
            Some((_, tip)) => Ok(tip),
            None => unreachable!("the ledger was just read"),
        }
    }

    /// The last message of `subject`, as a writer needs it.
    async fn tip(&self, subject: &str) -> Result<Tip, CommandError> {
        match self.log.last_on_subject(subject).await? {
            None => Ok(Tip { position: 0, chain: Loaded::new(()), last: None }),
            Some(message) => {
                let envelope = Envelope::decode(&message.payload).map_err(|e| corrupt(message.position, e))?;
                let chain = Loaded { state: (), sequence: envelope.header.sequence, last_hash: envelope.header.hash };
                Ok(Tip { position: message.position, chain, last: Some(envelope.event) })
            }
        }
    }

    /// Appends `event` alone on `subject`, expecting `tip` to be its last
    /// message, under `msg_id`.
    async fn append_on(
        &self,
        subject: &str,
        tip: &Tip,
        meta: &EventMeta,
        event: Event,
        msg_id: String,
    ) -> Result<Appending, CommandError> {
        let meta = EventMeta { event_id: Uuid::now_v7(), occurred_at: Utc::now(), ..meta.clone() };
        let envelope = tip.chain.seal(&meta, event);
        let request = AppendRequest {
            subject: subject.to_string(),
            payload: Bytes::from(envelope.encode()),
            msg_id: Some(msg_id),
            expected_last_subject_seq: tip.position,
        };
        let stored_bytes = request.payload.len();
        // The handler's cache follows the subject (a Stripe posting moves a
        // buyer's ledger that commands write too).
        match self.log.append(request).await {
            Ok(appended) => {
                self.remember(subject, appended, &envelope, stored_bytes);
                let chain =
                    Loaded { state: (), sequence: envelope.header.sequence, last_hash: envelope.header.hash.clone() };
                let next = Tip { position: appended.position, chain, last: Some(envelope.event.clone()) };
                Ok(Appending::Stored(Box::new((next, envelope))))
            }
            Err(LogError::Duplicate { position }) => {
                self.cache.forget(subject);
                Ok(Appending::Duplicate(position))
            }
            Err(LogError::Conflict { .. }) => {
                self.cache.forget(subject);
                Ok(Appending::Conflict)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Reads the last message of every subject, as of one position.
    pub async fn load(&self, subjects: &[String]) -> Result<Snapshot, CommandError> {
        let lasts = self.log.last_on_subjects(subjects).await?;
        self.snapshot_of(subjects, lasts)
    }

    /// The snapshot of `subjects` from their last messages, in order.
    fn snapshot_of(&self, subjects: &[String], lasts: Vec<Option<StoredMessage>>) -> Result<Snapshot, CommandError> {
        let mut snapshot = Snapshot::default();
        for (subject, last) in subjects.iter().zip(lasts) {
            snapshot.entries.insert(subject.clone(), self.decoded(subject, last)?);
        }
        Ok(snapshot)
    }

    /// A subject's last message, decoded, or the same event decoded before.
    fn decoded(&self, subject: &str, last: Option<StoredMessage>) -> Result<Last, CommandError> {
        let Some(msg) = last else { return Ok(Last { position: 0, envelope: None }) };
        if let Some(envelope) = self.cache.at(subject, msg.position) {
            return Ok(Last { position: msg.position, envelope: Some(envelope) });
        }
        let envelope = Arc::new(Envelope::decode(&msg.payload).map_err(|e| corrupt(msg.position, e))?);
        self.cache.put(subject, msg.position, envelope.clone(), msg.payload.len());
        Ok(Last { position: msg.position, envelope: Some(envelope) })
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
        self.execute_with(ctx, actor, subjects, None, decide).await
    }

    /// `execute`, where `written`, a subject every accepted decision of the
    /// command appends to, may come from the handler's cache instead of the
    /// log (see `aggregate_cache`): the append's expected position guards
    /// it. A decision from a cached entry that is a rejection, or that does
    /// not append to `written`, is made again from the log.
    async fn execute_with<F>(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        subjects: Vec<String>,
        written: Option<&str>,
        decide: F,
    ) -> Result<Outcome, CommandError>
    where
        F: Fn(&Snapshot) -> Result<Vec<Event>, DomainError>,
    {
        let mut trust_cache = written.is_some();
        let mut attempt: u32 = 0;
        // Each turn is an attempt, or a decision from the cache made again
        // from the log (at most once: the cache is not trusted after it).
        for _ in 0..=(CONFLICT_RETRY_MAX + 1) {
            if attempt > CONFLICT_RETRY_MAX {
                break;
            }
            let cached = written.filter(|_| trust_cache).and_then(|w| Some((w, self.cache.get(w)?)));
            // The aggregates (but a cached one) and the command's record,
            // in one read.
            let mut wanted: Vec<String> =
                subjects.iter().filter(|s| cached.as_ref().is_none_or(|(w, _)| s.as_str() != *w)).cloned().collect();
            let aggregates_read = wanted.len();
            if let Some(c) = ctx {
                wanted.push(record_subject(&c.scope, &c.command_id));
            }
            let mut lasts = self.log.last_on_subjects(&wanted).await?;
            let record = if ctx.is_some() { lasts.pop().flatten() } else { None };
            if let (Some(ctx), Some(record)) = (ctx, record) {
                return self.answer_from_record(ctx, &record).await;
            }
            let mut snapshot = self.snapshot_of(&wanted[..aggregates_read], lasts)?;
            if let Some((subject, entry)) = &cached {
                let last = Last { position: entry.position, envelope: Some(entry.envelope.clone()) };
                snapshot.entries.insert((*subject).to_owned(), last);
            }
            let decided = decide(&snapshot);
            if let Some((subject, _)) = &cached {
                let writes_it =
                    decided.as_ref().is_ok_and(|events| events.iter().any(|e| event_subject(e) == *subject));
                if !writes_it {
                    // Only an append guards a cached entry: read the log.
                    // Not an attempt of its own.
                    trust_cache = false;
                    continue;
                }
            }
            let events = match decided {
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
                request.msg_id = Some(command_msg_id(ctx));
                let (subject, stored_bytes) = (request.subject.clone(), request.payload.len());
                match self.log.append(request).await {
                    Ok(appended) => {
                        self.remember(&subject, appended, &envelopes[0], stored_bytes);
                        if appended.found_by_id {
                            // Found by its message id after a lost ack: the
                            // event there may be a concurrent repeat's, and
                            // then this run repeats it.
                            let stored = self.read_envelope(appended.position).await?;
                            if stored.header.event_id != envelopes[0].header.event_id {
                                return self.record_after(ctx, actor, appended.position, vec![stored], false).await;
                            }
                        }
                        return self.record_after(ctx, actor, appended.position, envelopes, true).await;
                    }
                    // The event of an earlier run of this command, inside
                    // the duplicate window: record it, answer with it.
                    Err(LogError::Duplicate { position }) => {
                        let original = self.read_envelope(position).await?;
                        return self.record_after(ctx, actor, position, vec![original], false).await;
                    }
                    Err(other) => Err(other),
                }
            } else if requests.len() == 1 {
                let request = requests.remove(0);
                let (subject, stored_bytes) = (request.subject.clone(), request.payload.len());
                let appended = self.log.append(request).await;
                if let (Ok(appended), Some(envelope)) = (&appended, envelopes.first()) {
                    self.remember(&subject, *appended, envelope, stored_bytes);
                }
                appended.map(|a| vec![a.position])
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
                    for subject in &subjects {
                        self.cache.forget(subject);
                    }
                    // Another handler writes here too: read the log from
                    // now on.
                    trust_cache = false;
                    let ceiling_ms = (1u64 << attempt.min(6)).min(CONFLICT_DELAY_MS_MAX);
                    let delay_ms = rand::rng().random_range(0..=ceiling_ms);
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    attempt += 1;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// Keeps an event this handler appended as its subject's last; forgets
    /// the subject when the append's position was found by message id (the
    /// message stored there may be another run's of the same command).
    fn remember(&self, subject: &str, appended: Appended, envelope: &Envelope, stored_bytes: usize) {
        if appended.found_by_id {
            self.cache.forget(subject);
        } else {
            self.cache.put(subject, appended.position, Arc::new(envelope.clone()), stored_bytes);
        }
    }

    /// Appends the record of a command whose event is at `position`. The
    /// event is stored whatever happens here, so the answer is a success:
    /// if the record cannot be written now, the reactor writes it. `ours`:
    /// this run appended the event (else the answer is a repeat's).
    async fn record_after(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        position: u64,
        events: Vec<Envelope>,
        ours: bool,
    ) -> Result<Outcome, CommandError> {
        let request = record_request(ctx, actor, vec![position], events.len());
        match self.log.append(request).await {
            Ok(appended) => Ok(Outcome { position: appended.position, events, repeated: !ours }),
            Err(LogError::Conflict { .. } | LogError::Duplicate { .. }) => match self.recorded(ctx).await? {
                // Another run recorded it first, or the reactor did, for
                // this run's event (which keeps this run a first run).
                Some(first) => {
                    let same_events =
                        first.events.iter().map(|e| e.header.event_id).eq(events.iter().map(|e| e.header.event_id));
                    Ok(Outcome { repeated: !(ours && same_events), ..first })
                }
                None => Ok(Outcome { position, events, repeated: !ours }),
            },
            Err(error) => {
                tracing::warn!(%error, position, "command record not written; the reactor will write it");
                Ok(Outcome { position, events, repeated: !ours })
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
                let outcome =
                    self.record_after(ctx, &ctx.actor, last.position, vec![(**envelope).clone()], false).await?;
                return Ok(Some(outcome));
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
            let subject = event_subject(&event);
            // A decider writes only aggregates it has read: their last
            // position is the expected one, their chain continues.
            let (expected, chain) = snapshot.chain(&subject).ok_or_else(|| CommandError::Corrupt {
                position: 0,
                reason: format!("a decision wrote {subject}, which it did not read"),
            })?;
            let meta = EventMeta { event_id: Uuid::now_v7(), ..meta.clone() };
            let (envelope, bytes) = chain.seal_encoded(&meta, fingerprint, event);
            requests.push(AppendRequest {
                subject,
                payload: Bytes::from(bytes),
                msg_id: Some(envelope.header.event_id.to_string()),
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

/// A subject's last message as a writer needs it: the position the next
/// append expects, the hash chain it continues, the last event.
#[derive(Debug, Clone)]
struct Tip {
    /// 0 when the subject has no message.
    position: u64,
    chain: Loaded<()>,
    last: Option<Event>,
}

/// How a guarded single append ended, short of an error.
enum Appending {
    /// Stored; the subject's new tip and the sealed event (boxed: the
    /// other answers are small).
    Stored(Box<(Tip, Envelope)>),
    /// A message with this id is stored already, at this position.
    Duplicate(u64),
    /// The subject moved since its tip was read.
    Conflict,
}

/// What one handling appended, in order.
#[derive(Debug, Default)]
struct Written {
    events: Vec<Envelope>,
    /// The position of the last one.
    position: u64,
}

impl Written {
    fn push(&mut self, position: u64, envelope: Envelope) {
        self.events.push(envelope);
        self.position = self.position.max(position);
    }
}

/// Logs a payment decision the domain refused: the Stripe event stays
/// recorded (Stripe stops retrying it), without effect.
fn without_effect(meta: &EventMeta, payment_id: &str, rejection: &DomainError) {
    tracing::warn!(
        stripe_event_id = %meta.command_id,
        payment_id,
        %rejection,
        "a Stripe event is recorded without effect"
    );
}

/// The payment whose last message is `tip`, at its position.
fn payment_state(payment_id: &str, tip: &Tip) -> PaymentState {
    match &tip.last {
        Some(event) => payment::at(payment::evolve(payment::initial_state(payment_id), event), tip.position),
        None => payment::initial_state(payment_id),
    }
}

/// The ledger of `user` whose last message is `tip`.
fn ledger_state(user: Uuid, tip: &Tip) -> LedgerState {
    match &tip.last {
        Some(event) => ledger::evolve(ledger::initial_state(user), event),
        None => ledger::initial_state(user),
    }
}

/// A jittered pause after the `attempt`-th conflict, growing up to
/// `CONFLICT_DELAY_MS_MAX`.
async fn conflict_pause(attempt: u32) {
    let ceiling_ms = (1u64 << attempt.min(6)).min(CONFLICT_DELAY_MS_MAX);
    let delay_ms = rand::rng().random_range(0..=ceiling_ms);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
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
    let (envelope, bytes) = Envelope::seal_encoded(&meta, None, record, 1, GENESIS_HASH);
    AppendRequest {
        subject: envelope.subject(),
        payload: Bytes::from(bytes),
        // The subject is the command's and must be empty: the expected
        // sequence alone keeps the record unique, and a message id would
        // only cost the server its duplicate bookkeeping.
        msg_id: None,
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
