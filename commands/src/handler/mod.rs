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
//!
//! # Modules
//!
//! - this one: `Commands` and every command of the design, each stating
//!   which subjects its decision reads and which decider decides;
//! - `engine`: the load-decide-seal-append loop (`execute`,
//!   `execute_with`) and the last messages it decides from;
//! - `idempotency`: `CommandContext`, the `command.recorded` record, and
//!   the first answer read back through it;
//! - `stripe`: the Stripe protocol (record, decision, posting, mark) and
//!   `settle_payment`.
//!
//! The subject names are in [`crate::subjects`] (re-exported here).

mod controls;
mod engine;
mod idempotency;
mod stripe;

use std::sync::Arc;

use domain::DomainError;
use domain::gift;
use domain::ledger::{self, GiftToCredit, LedgerCommand, LedgerState, PayoutPolicy};
use domain::session::{self, RotationState};
use domain::stream::{self, StartStream, StreamCommand};
use domain::user::{self, ChangeRoles, Register, RegistrationState, RevokeSessions};
use events_schema::{Actor, Envelope, Event, ReservationKind, SchemaError, UserSnapshot};
use uuid::Uuid;

pub use self::engine::Lasts;
pub use self::idempotency::{CommandContext, command_record_subject, repair_record_request, scope_of};
pub use self::stripe::{POSTING_SCAN_MESSAGES_MAX, StripeOutcome};
use crate::aggregate_cache::AggregateCache;
use crate::log::{EventLog, LogError};
use crate::retry::RetrySchedule;
pub use crate::subjects::{
    adjustment_subject, channel_subject, ledger_subject, payment_subject, payout_reference_subject,
    reservation_subject, session_subject, stream_subject, stripe_event_subject, user_subject,
};

/// How many times a command is decided again after losing a race.
pub const CONFLICT_RETRY_MAX: u32 = 16;
/// The longest pause between two tries after a conflict.
pub const CONFLICT_DELAY_MS_MAX: u64 = 50;
/// The cap of the first pause after a conflict: a lost race is usually
/// over within a millisecond (the winner's append is done).
const CONFLICT_DELAY_MS_FIRST: u64 = 1;
/// The pauses between tries after lost races (every conflict loop of the
/// handler: commands, payment decisions, postings).
const CONFLICT_RETRIES: RetrySchedule = RetrySchedule {
    delay_ms_first: CONFLICT_DELAY_MS_FIRST,
    delay_ms_max: CONFLICT_DELAY_MS_MAX,
    retries_max: CONFLICT_RETRY_MAX,
};
/// Atomic batches one process keeps in flight. The server accepts at most
/// 50 per stream (ADR-50) and refuses more with an error the adapter
/// retries after a pause; queueing here instead keeps the pause away.
pub const ATOMIC_BATCHES_IN_FLIGHT_MAX: usize = 40;

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

/// The holder of an access token, as a command that moves coins from their
/// side checks it: a token issued before the user's sessions were revoked
/// (a lower epoch) is refused. The check reads the user aggregate in the
/// same read as the command's other aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    /// The sessions epoch the token carries.
    pub sessions_epoch: u64,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRefresh {
    /// The family moved to `generation`: the new refresh token carries it.
    /// `user` is the user as the decision read it (roles, sessions epoch),
    /// for the new tokens' claims.
    Rotated { generation: u64, user: UserSnapshot, position: u64 },
    /// The token was an older generation: the family is ended now, and the
    /// caller refused (`refresh_token_reused`).
    Reused { position: u64 },
}

/// The configuration the deciders take from outside.
#[derive(Debug, Clone)]
pub struct CommandConfig {
    /// `HOST_SHARE_BPS`.
    pub host_share_bps: u32,
    pub payout_policy: PayoutPolicy,
    /// `ADMIN_EMAILS`.
    pub admin_emails: Vec<String>,
    /// `EARNINGS_HOLD_HOURS`: a gift's host earnings become payable that
    /// long after the gift (0: at once).
    pub earnings_hold_hours: u32,
    /// `IDEMPOTENCY_HORIZON_HOURS`: how long a command's id is remembered
    /// (its record's age limit, `LogConfig::idempotency_horizon_ms`); the
    /// gift reactor writes no missing record for an event older than that.
    pub idempotency_horizon_hours: u32,
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
        let user_subject = user_subject(command.user_id);
        let email_subject = reservation_subject(ReservationKind::Email, &user::normalize_email(&command.email));
        let name_subject = reservation_subject(ReservationKind::Username, &user::username_key(&command.username));
        let subjects = vec![user_subject.clone(), email_subject.clone(), name_subject.clone()];
        self.execute(Some(ctx), &ctx.actor, subjects, |lasts| {
            let u = lasts.state(&user_subject, None, user::evolve);
            let e = lasts.state(&email_subject, None, user::evolve_reservation);
            let n = lasts.state(&name_subject, None, user::evolve_reservation);
            user::decide_register(RegistrationState { user: &u, email: &e, username: &n }, &command)
        })
        .await
    }

    pub async fn change_roles(&self, ctx: &CommandContext, command: ChangeRoles) -> Result<Outcome, CommandError> {
        let user_subject = user_subject(command.user_id);
        self.execute(Some(ctx), &ctx.actor, vec![user_subject.clone()], |lasts| {
            user::decide_roles(&lasts.state(&user_subject, None, user::evolve), &command)
        })
        .await
    }

    /// Revokes every session of a user (the sessions epoch goes up).
    pub async fn revoke_sessions(
        &self,
        ctx: &CommandContext,
        command: RevokeSessions,
    ) -> Result<Outcome, CommandError> {
        let user_subject = user_subject(command.user_id);
        self.execute(Some(ctx), &ctx.actor, vec![user_subject.clone()], |lasts| {
            user::decide_revoke_sessions(&lasts.state(&user_subject, None, user::evolve), &command)
        })
        .await
    }

    /// Exchanges a refresh token: rotates its family, or ends it when the
    /// token was already exchanged. No idempotency record: a refresh is
    /// answered once, and a repeat of the same token is exactly the reuse
    /// the family must end on. Two concurrent refreshes with one token both
    /// expect the family's subject where they read it: one appends, the
    /// other conflicts, reads again and finds a reuse.
    pub async fn refresh_session(&self, command: session::Rotate) -> Result<SessionRefresh, CommandError> {
        let session_subject = session_subject(command.family_id);
        let user_subject = user_subject(command.user_id);
        let subjects = vec![session_subject.clone(), user_subject.clone()];
        // The user the accepted decision read, for the new tokens.
        let read_user: std::sync::Mutex<Option<UserSnapshot>> = std::sync::Mutex::new(None);
        let outcome = self
            .execute(None, &Actor::user(command.user_id), subjects, |lasts| {
                let session = lasts.state(&session_subject, None, session::evolve);
                let user = lasts.state(&user_subject, None, user::evolve);
                let decided = session::decide_rotate(RotationState { session: &session, user: &user }, &command);
                *read_user.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = user;
                decided
            })
            .await?;
        let user = read_user.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        match (outcome.events.first().map(|e| &e.event), user) {
            (Some(Event::SessionRotated(rotated)), Some(user)) => {
                Ok(SessionRefresh::Rotated { generation: rotated.generation, user, position: outcome.position })
            }
            (Some(Event::SessionEnded(_)), _) => Ok(SessionRefresh::Reused { position: outcome.position }),
            _ => Err(CommandError::Corrupt {
                position: outcome.position,
                reason: "a refresh decided neither a rotation nor an end".into(),
            }),
        }
    }

    /// Ends one of the caller's logins (logout).
    pub async fn end_session(&self, command: session::End) -> Result<Outcome, CommandError> {
        let session_subject = session_subject(command.family_id);
        self.execute(None, &Actor::user(command.user_id), vec![session_subject.clone()], |lasts| {
            session::decide_end(&lasts.state(&session_subject, None, session::evolve), &command)
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
        let ledger_subject = ledger_subject(user_id);
        self.execute_with(Some(ctx), &ctx.actor, vec![ledger_subject.clone()], Some(&ledger_subject), |lasts| {
            ledger::decide(&lasts.state(&ledger_subject, ledger::initial_state(user_id), ledger::evolve), &command)
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
        let requested_at = chrono::Utc::now();
        let command = LedgerCommand::RequestPayout { payout_id, coins, destination, policy, requested_at };
        let ledger_subject = ledger_subject(user_id);
        let reference_subject = payout_reference_subject(payout_id);
        let subjects = vec![ledger_subject.clone(), reference_subject.clone()];
        self.execute_with(Some(ctx), &ctx.actor, subjects, Some(&ledger_subject), |lasts| {
            ledger::decide_payout_request(
                &lasts.state(&ledger_subject, ledger::initial_state(user_id), ledger::evolve),
                &lasts.state(&reference_subject, None, user::evolve_reservation),
                &command,
            )
        })
        .await
    }

    /// A payout request by the holder of a token: refused when the token's
    /// session was revoked (the user aggregate, read with the ledger).
    pub async fn request_payout_by(
        &self,
        ctx: &CommandContext,
        caller: Caller,
        payout_id: Uuid,
        coins: i64,
        destination: String,
    ) -> Result<Outcome, CommandError> {
        let policy = self.config.payout_policy.clone();
        let requested_at = chrono::Utc::now();
        let command = LedgerCommand::RequestPayout { payout_id, coins, destination, policy, requested_at };
        let ledger_subject = ledger_subject(caller.user_id);
        let user_subject = user_subject(caller.user_id);
        let reference_subject = payout_reference_subject(payout_id);
        let subjects = vec![ledger_subject.clone(), user_subject.clone(), reference_subject.clone()];
        self.execute_with(Some(ctx), &ctx.actor, subjects, Some(&ledger_subject), |lasts| {
            user::check_session_of(&lasts.state(&user_subject, None, user::evolve), caller.sessions_epoch)?;
            ledger::decide_payout_request(
                &lasts.state(&ledger_subject, ledger::initial_state(caller.user_id), ledger::evolve),
                &lasts.state(&reference_subject, None, user::evolve_reservation),
                &command,
            )
        })
        .await
    }

    /// A gift by the holder of a token: `send_gift`, refused when the
    /// token's session was revoked. The user aggregate is one more subject
    /// of the gift's one read (no extra round trip).
    pub async fn send_gift_by(
        &self,
        ctx: &CommandContext,
        caller: Caller,
        stream_id: Uuid,
        gift_id: String,
        quantity: i64,
        unit_coins: i64,
    ) -> Result<Outcome, CommandError> {
        self.gift(ctx, caller.user_id, Some(caller.sessions_epoch), stream_id, gift_id, quantity, unit_coins).await
    }

    /// The viewer's side of a gift, at the configured host share (no token
    /// behind it: the API sends gifts with `send_gift_by`).
    pub async fn send_gift(
        &self,
        ctx: &CommandContext,
        viewer_id: Uuid,
        stream_id: Uuid,
        gift_id: String,
        quantity: i64,
        unit_coins: i64,
    ) -> Result<Outcome, CommandError> {
        self.gift(ctx, viewer_id, None, stream_id, gift_id, quantity, unit_coins).await
    }

    /// A gift, with the token's sessions epoch checked when there is one.
    #[allow(clippy::too_many_arguments)]
    async fn gift(
        &self,
        ctx: &CommandContext,
        viewer_id: Uuid,
        sessions_epoch: Option<u64>,
        stream_id: Uuid,
        gift_id: String,
        quantity: i64,
        unit_coins: i64,
    ) -> Result<Outcome, CommandError> {
        let ledger_subject = ledger_subject(viewer_id);
        let stream_subject = stream_subject(stream_id);
        let user_subject = user_subject(viewer_id);
        let command =
            gift::SendGift { stream_id, gift_id, quantity, unit_coins, host_share_bps: self.config.host_share_bps };
        let mut subjects = vec![ledger_subject.clone(), stream_subject.clone()];
        if sessions_epoch.is_some() {
            subjects.push(user_subject.clone());
        }
        self.execute_with(Some(ctx), &ctx.actor, subjects, Some(&ledger_subject), |lasts| {
            if let Some(epoch) = sessions_epoch {
                user::check_session_of(&lasts.state(&user_subject, None, user::evolve), epoch)?;
            }
            let viewer = lasts.state(&ledger_subject, ledger::initial_state(viewer_id), ledger::evolve);
            let stream = lasts.state(&stream_subject, None, stream::evolve);
            gift::decide(gift::GiftState { viewer: &viewer, stream: &stream }, &command)
        })
        .await
    }

    /// Credits a batch of gifts to their host. Exactly once without a
    /// command record: the host's ledger remembers the last position
    /// credited, and gifts at or before it are skipped.
    pub async fn credit_gifts(&self, host_id: Uuid, gifts: Vec<GiftToCredit>) -> Result<Outcome, CommandError> {
        let ledger_subject = ledger_subject(host_id);
        let command = LedgerCommand::CreditGifts { gifts };
        self.execute_with(
            None,
            &Actor::system("gift-reactor"),
            vec![ledger_subject.clone()],
            Some(&ledger_subject),
            |lasts| {
                ledger::decide(&lasts.state(&ledger_subject, ledger::initial_state(host_id), ledger::evolve), &command)
            },
        )
        .await
    }

    pub async fn start_stream(&self, ctx: &CommandContext, command: StartStream) -> Result<Outcome, CommandError> {
        let stream_subject = stream_subject(command.stream_id);
        let channel_subject = channel_subject(command.host_id);
        self.execute(Some(ctx), &ctx.actor, vec![stream_subject.clone(), channel_subject.clone()], |lasts| {
            let channel = lasts.state(&channel_subject, None, stream::evolve_channel);
            let stream = lasts.state(&stream_subject, None, stream::evolve);
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
        let stream_subject = stream_subject(stream_id);
        let mut subjects = vec![stream_subject.clone()];
        if matches!(command, StreamCommand::End { .. }) {
            // Ending writes the host's channel too; the host is in the
            // stream's own state, which never changes.
            let lasts = self.load(std::slice::from_ref(&stream_subject)).await?;
            if let Some(stream) = lasts.state(&stream_subject, None, stream::evolve) {
                subjects.push(channel_subject(stream.host_id));
            }
        }
        self.execute(Some(ctx), &ctx.actor, subjects, |lasts| {
            stream::decide(stream_id, &lasts.state(&stream_subject, None, stream::evolve), &command)
        })
        .await
    }

    /// The current state of one user's ledger.
    pub async fn ledger_state(&self, user_id: Uuid) -> Result<(LedgerState, u64), CommandError> {
        let ledger_subject = ledger_subject(user_id);
        let lasts = self.load(std::slice::from_ref(&ledger_subject)).await?;
        let position = lasts.max_position();
        Ok((lasts.state(&ledger_subject, ledger::initial_state(user_id), ledger::evolve), position))
    }
}

fn corrupt(position: u64, error: SchemaError) -> CommandError {
    CommandError::Corrupt { position, reason: error.to_string() }
}
