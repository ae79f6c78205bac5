//! The Stripe protocol: a verified Stripe event in single guarded appends
//! (its record, the payment's decision, the posting of a decision that
//! moves coins on the buyer's ledger, the mark `payment.posted`), exactly
//! once by the decision's position; see `Commands::stripe_event`.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use domain::DomainError;
use domain::ledger::{self, LedgerState};
use domain::payment::{self, Buyer, PaymentCommand, PaymentState, Posting};
use events_schema::{Actor, Envelope, Event, EventMeta, PaymentSnapshot, StripeEventRecorded, payment_token};
use uuid::Uuid;

use super::engine::Last;
use super::{CONFLICT_RETRIES, CONFLICT_RETRY_MAX, CommandError, Commands, Outcome, corrupt};
use crate::log::{AppendRequest, LogError};
use crate::retry::RetrySchedule;
use crate::subjects::{ledger_subject, payment_subject, stripe_event_subject, user_subject};

/// Messages of a buyer's ledger one posting reads, at most, looking for an
/// earlier posting of the same payment decision (only after a crash or a
/// race: the common path reads none).
pub const POSTING_SCAN_MESSAGES_MAX: u32 = 1_000_000;
/// Messages per read of that scan.
const POSTING_SCAN_BATCH_MAX: u32 = 1_024;
/// Reads of that scan that may come back short of the ledger's last
/// message (a lagging replica) before it gives up.
const POSTING_SCAN_SHORT_READS_MAX: u32 = 16;
/// The longest pause before a read that came back short is tried again.
const POSTING_SCAN_SHORT_READ_DELAY_MS_MAX: u64 = 16;
/// The pauses between those reads: a replica catches up within
/// milliseconds.
const POSTING_SCAN_SHORT_READ_RETRIES: RetrySchedule = RetrySchedule {
    delay_ms_first: 1,
    delay_ms_max: POSTING_SCAN_SHORT_READ_DELAY_MS_MAX,
    retries_max: POSTING_SCAN_SHORT_READS_MAX,
};

/// `Settle` steps run after a purchase or a dispute, at most: each decides
/// one reversal (a refund's catch-up, then one per dispute), so a payment
/// with up to this many disputes less one is settled in one handling (a
/// charge has one dispute at most; a PaymentIntent rarely more than one
/// charge). A step with nothing to do decides nothing and costs no append.
pub const SETTLE_STEPS_MAX: usize = 8;

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

impl Commands {
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
        let record_subject = stripe_event_subject(&stripe_event_id);
        // Everything the common path reads, at once: the record, the
        // payment, and for a purchase its buyer's registration and ledger.
        let buyer = match &payment {
            Some((_, PaymentCommand::ConfirmPurchase { buyer: Buyer::Known(user), .. })) => Some(*user),
            _ => None,
        };
        let payment_last = async {
            match &payment {
                Some((id, _)) => self.last(&payment_subject(id)).await.map(Some),
                None => Ok(None),
            }
        };
        let registered = async {
            match buyer {
                Some(user) => {
                    let user_subject = user_subject(user);
                    let lasts = self.load(std::slice::from_ref(&user_subject)).await?;
                    Ok(lasts.state(&user_subject, None, domain::user::evolve).is_some())
                }
                None => Ok(false),
            }
        };
        let ledger_last = async {
            match buyer {
                Some(user) => self.last(&ledger_subject(user)).await.map(|last| Some((user, last))),
                None => Ok(None),
            }
        };
        let (record_last, payment_last, registered, ledger_last) =
            tokio::try_join!(self.last(&record_subject), payment_last, registered, ledger_last)?;

        let mut written = Written::default();
        let (recorded, record_position) = if record_last.envelope.is_some() {
            (false, record_last.position)
        } else {
            let event = Event::StripeEventRecorded(record);
            let msg_id = format!("stripe-{stripe_event_id}");
            match self.append_on(&record_subject, &record_last, &meta, event, msg_id).await? {
                Appending::Stored(stored) => {
                    let (last, envelope) = *stored;
                    written.push(last.position, envelope);
                    (true, last.position)
                }
                Appending::Duplicate(position) => (false, position),
                // A concurrent delivery of the same event recorded it.
                Appending::Conflict => (false, self.last(&record_subject).await?.position),
            }
        };
        let mut position = record_position;
        if let (Some((payment_id, command)), Some(payment_last)) = (payment, payment_last) {
            let command = match command {
                PaymentCommand::ConfirmPurchase {
                    stripe_event_id,
                    buyer: Buyer::Known(user),
                    package,
                    amount_cents,
                    currency,
                    offered,
                } if !registered => {
                    let buyer = Buyer::Unknown(user.to_string());
                    PaymentCommand::ConfirmPurchase { stripe_event_id, buyer, package, amount_cents, currency, offered }
                }
                other => other,
            };
            let settles =
                matches!(command, PaymentCommand::ConfirmPurchase { .. } | PaymentCommand::RecordDispute { .. });
            let mut commands = vec![command];
            if settles {
                commands.extend(std::iter::repeat_n(PaymentCommand::Settle, SETTLE_STEPS_MAX));
            }
            let ledger = ledger_last.filter(|_| registered);
            let payment_position =
                self.run_payment(&meta, &payment_id, &commands, payment_last, ledger, &mut written).await?;
            position = position.max(payment_position);
        }
        let position = if written.events.is_empty() { position } else { written.position };
        Ok(StripeOutcome { position, recorded, events: written.events })
    }

    /// Reverses what refunds or disputes seen before the purchase made due,
    /// if anything (decided, posted, marked, in up to `SETTLE_STEPS_MAX`
    /// steps), after completing a pending decision.
    pub async fn settle_payment(&self, payment_id: &str) -> Result<Outcome, CommandError> {
        let meta = fresh_command_meta(Actor::system("stripe-settle"));
        let last = self.last(&payment_subject(payment_id)).await?;
        let mut written = Written::default();
        let settles = [const { PaymentCommand::Settle }; SETTLE_STEPS_MAX];
        let position = self.run_payment(&meta, payment_id, &settles, last, None, &mut written).await?;
        let position = if written.events.is_empty() { position } else { written.position };
        Ok(Outcome { position, events: written.events, repeated: false })
    }

    /// Resolves a flagged payment (finance's `Resolve`), as an event on the
    /// payment, by `actor`: refused (nothing appended) when the payment is
    /// unknown (`None`), or the domain refuses (not flagged, already
    /// resolved or credited, a bad note). A credit is posted and marked by
    /// the Stripe exactly-once protocol, like a purchase, and refunds or
    /// disputes seen before it are then settled.
    pub async fn resolve_payment(
        &self,
        payment_id: &str,
        actor: Uuid,
        command: PaymentCommand,
    ) -> Result<Option<Outcome>, CommandError> {
        let meta = fresh_command_meta(Actor::user(actor));
        let last = self.last(&payment_subject(payment_id)).await?;
        if last.envelope.is_none() {
            return Ok(None);
        }
        // Refused before anything is appended (a decision left pending by a
        // crash is completed first only when the resolution may go ahead).
        let state = payment_state(payment_id, &last);
        let after_pending = match payment::pending(&state) {
            // The pending decision's effect does not change what decides a
            // resolution (flags, resolution, purchase): decide on its state
            // as if posted.
            Some(posting) => payment::PaymentState {
                snapshot: PaymentSnapshot { posted_position: Some(posting.source_position), ..state.snapshot.clone() },
                ..state.clone()
            },
            None => state,
        };
        payment::decide(&after_pending, &command)?;
        let mut commands = vec![command];
        commands.extend(std::iter::repeat_n(PaymentCommand::Settle, SETTLE_STEPS_MAX));
        let mut written = Written::default();
        let position = self.run_payment(&meta, payment_id, &commands, last, None, &mut written).await?;
        let resolved = written.events.iter().any(|e| matches!(e.event, Event::PaymentResolved(_)));
        if !resolved {
            // A concurrent resolution won: this one is refused now.
            return Err(DomainError::PaymentNotResolvable.into());
        }
        let position = if written.events.is_empty() { position } else { written.position };
        Ok(Some(Outcome { position, events: written.events, repeated: false }))
    }

    /// Decides `commands` in order on the payment whose last message is
    /// `last`, completing (posting, marking) every decision that moves coins
    /// before the next, and a decision found pending before anything.
    /// `ledger`: the buyer's ledger, when already read. Returns the
    /// position of the payment's last message.
    async fn run_payment(
        &self,
        meta: &EventMeta,
        payment_id: &str,
        commands: &[PaymentCommand],
        mut last: Last,
        mut ledger: Option<(Uuid, Last)>,
        written: &mut Written,
    ) -> Result<u64, CommandError> {
        let payment_subject = payment_subject(payment_id);
        let mut next = 0;
        let mut conflicts: u32 = 0;
        let mut pauses = CONFLICT_RETRIES.delays();
        // Without conflicts: a completion first, then per command a decision
        // and its completion, then the last look; each conflict may add a
        // reload and the completion of the winner's decision.
        let steps_max = 2 + 2 * commands.len() + 2 * (CONFLICT_RETRY_MAX as usize + 1);
        for _ in 0..steps_max {
            let state = payment_state(payment_id, &last);
            if let Some(posting) = payment::pending(&state) {
                self.complete(meta, &payment_subject, &mut last, &posting, &mut ledger, written).await?;
                continue;
            }
            let Some(command) = commands.get(next) else { return Ok(last.position) };
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
                let ledger_last = self.ledger_last(effect.user_id, &mut ledger).await?;
                let trial = Posting { payment_id: payment_id.to_string(), source_position: last.position + 1, effect };
                if let Err(rejection) = payment::post(&trial, &ledger_state(trial.effect.user_id, ledger_last)) {
                    without_effect(meta, payment_id, &rejection);
                    next += 1;
                    continue;
                }
            }
            match self.append_on(&payment_subject, &last, meta, event, Uuid::now_v7().to_string()).await? {
                Appending::Stored(stored) => {
                    let (new_last, envelope) = *stored;
                    written.push(new_last.position, envelope);
                    last = new_last;
                    next += 1;
                }
                Appending::Duplicate(_) | Appending::Conflict => {
                    conflicts += 1;
                    let Some(pause) = pauses.next() else { break };
                    tokio::time::sleep(pause).await;
                    last = self.last(&payment_subject).await?;
                }
            }
        }
        Err(CommandError::Contention { tries: conflicts.max(1) })
    }

    /// Posts the pending `posting` and marks it posted on the payment whose
    /// last message (the pending decision) is `last`.
    async fn complete(
        &self,
        meta: &EventMeta,
        payment_subject: &str,
        last: &mut Last,
        posting: &Posting,
        ledger: &mut Option<(Uuid, Last)>,
        written: &mut Written,
    ) -> Result<(), CommandError> {
        let ledger_position = self.post(meta, posting, ledger, written).await?;
        let state = payment_state(&posting.payment_id, last);
        let mark = payment::decide(&state, &PaymentCommand::MarkPosted { ledger_position })?;
        let Some(event) = mark.into_iter().next() else { return Ok(()) };
        let msg_id = format!("posted-{}-{}", payment_token(&posting.payment_id), posting.source_position);
        match self.append_on(payment_subject, last, meta, event, msg_id).await? {
            Appending::Stored(stored) => {
                let (new_last, envelope) = *stored;
                written.push(new_last.position, envelope);
                *last = new_last;
            }
            // Only a mark can follow a pending decision: another run
            // marked it.
            Appending::Duplicate(_) | Appending::Conflict => *last = self.last(payment_subject).await?,
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
        ledger: &mut Option<(Uuid, Last)>,
        written: &mut Written,
    ) -> Result<u64, CommandError> {
        let user = posting.effect.user_id;
        let ledger_subject = ledger_subject(user);
        let mut last = match ledger.take() {
            Some((owner, last)) if owner == user => last,
            _ => self.last(&ledger_subject).await?,
        };
        // Messages of the ledger up to here are known not to post it.
        let mut scanned = posting.source_position;
        let mut pauses = CONFLICT_RETRIES.delays();
        for _ in 0..=CONFLICT_RETRY_MAX {
            if last.position > scanned {
                if let Some(position) = self.find_posting(&ledger_subject, posting, scanned, last.position).await? {
                    *ledger = Some((user, last));
                    return Ok(position);
                }
                scanned = last.position;
            }
            let commit = payment::post(posting, &ledger_state(user, &last))?;
            let Some(event) = commit.into_iter().next() else {
                return Err(CommandError::Corrupt {
                    position: posting.source_position,
                    reason: "a posting decided no commit".into(),
                });
            };
            let msg_id = format!("post-{}-{}", payment_token(&posting.payment_id), posting.source_position);
            match self.append_on(&ledger_subject, &last, meta, event, msg_id).await? {
                Appending::Stored(stored) => {
                    let (new_last, envelope) = *stored;
                    let position = new_last.position;
                    written.push(position, envelope);
                    *ledger = Some((user, new_last));
                    return Ok(position);
                }
                // The message id is the decision's: a posting of it is
                // stored there (a concurrent run's, or ours whose ack was
                // lost).
                Appending::Duplicate(position) => return Ok(position),
                Appending::Conflict => {
                    let Some(pause) = pauses.next() else { break };
                    tokio::time::sleep(pause).await;
                    last = self.last(&ledger_subject).await?;
                }
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// The position of a message of `ledger_subject` after `after` and at most
    /// `up_to` (the ledger's last, as read) that posts `posting`, if any.
    /// Reads every message in between: a read that comes back short of
    /// `up_to` (a replica that lags) is tried again, a bounded number of
    /// times.
    async fn find_posting(
        &self,
        ledger_subject: &str,
        posting: &Posting,
        after: u64,
        up_to: u64,
    ) -> Result<Option<u64>, CommandError> {
        let mut next = after + 1;
        let mut read: u32 = 0;
        let mut short_read_pauses = POSTING_SCAN_SHORT_READ_RETRIES.delays();
        while next <= up_to {
            if read >= POSTING_SCAN_MESSAGES_MAX {
                return Err(CommandError::PostingScanTooLong { subject: ledger_subject.to_string(), messages: read });
            }
            let batch = self.log.read_subject_from(ledger_subject, next, POSTING_SCAN_BATCH_MAX).await?;
            if batch.is_empty() {
                let Some(pause) = short_read_pauses.next() else {
                    return Err(CommandError::Log(LogError::Unavailable(format!(
                        "{ledger_subject} reads end before position {up_to}, its last"
                    ))));
                };
                tokio::time::sleep(pause).await;
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
    async fn ledger_last<'a>(
        &self,
        user: Uuid,
        ledger: &'a mut Option<(Uuid, Last)>,
    ) -> Result<&'a Last, CommandError> {
        if ledger.as_ref().is_none_or(|(owner, _)| *owner != user) {
            *ledger = Some((user, self.last(&ledger_subject(user)).await?));
        }
        match ledger {
            Some((_, last)) => Ok(last),
            None => unreachable!("the ledger was just read"),
        }
    }

    /// The last message of `subject`, read from the log (not the cache:
    /// the Stripe path appends on subjects commands write too).
    async fn last(&self, subject: &str) -> Result<Last, CommandError> {
        match self.log.last_on_subject(subject).await? {
            None => Ok(Last::none()),
            Some(message) => {
                let envelope = Envelope::decode(&message.payload).map_err(|e| corrupt(message.position, e))?;
                Ok(Last { position: message.position, envelope: Some(Arc::new(envelope)) })
            }
        }
    }

    /// Appends `event` alone on `subject`, expecting `last` to be its last
    /// message, under `msg_id`.
    async fn append_on(
        &self,
        subject: &str,
        last: &Last,
        meta: &EventMeta,
        event: Event,
        msg_id: String,
    ) -> Result<Appending, CommandError> {
        let meta = EventMeta { event_id: Uuid::now_v7(), occurred_at: Utc::now(), ..meta.clone() };
        let envelope = last.chain().seal(&meta, event);
        let request = AppendRequest {
            subject: subject.to_string(),
            payload: Bytes::from(envelope.encode()),
            msg_id: Some(msg_id),
            expected_last_subject_seq: last.position,
        };
        let stored_bytes = request.payload.len();
        // The handler's cache follows the subject (a Stripe posting moves a
        // buyer's ledger that commands write too).
        match self.log.append(request).await {
            Ok(appended) => {
                self.remember(subject, appended, &envelope, stored_bytes);
                let next = Last { position: appended.position, envelope: Some(Arc::new(envelope.clone())) };
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
}

/// How a guarded single append ended, short of an error.
enum Appending {
    /// Stored; the subject's new last message and the sealed event (boxed: the
    /// other answers are small).
    Stored(Box<(Last, Envelope)>),
    /// A message with this id is stored already, at this position.
    Duplicate(u64),
    /// The subject moved since its last message was read.
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

/// The payment whose last message is `last`, at its position.
fn payment_state(payment_id: &str, last: &Last) -> PaymentState {
    match last.event() {
        Some(event) => payment::at(payment::evolve(payment::initial_state(payment_id), event), last.position),
        None => payment::initial_state(payment_id),
    }
}

/// The ledger of `user` whose last message is `last`.
fn ledger_state(user: Uuid, last: &Last) -> LedgerState {
    match last.event() {
        Some(event) => ledger::evolve(ledger::initial_state(user), event),
        None => ledger::initial_state(user),
    }
}

/// The meta of a payment command no client named (a settlement, a
/// resolution): a command id of its own; each event's id and time are
/// drawn when it is sealed.
fn fresh_command_meta(actor: Actor) -> EventMeta {
    let command_id = Uuid::now_v7().to_string();
    EventMeta {
        event_id: Uuid::nil(),
        occurred_at: Utc::now(),
        command_id: command_id.clone(),
        correlation_id: command_id,
        actor,
    }
}
