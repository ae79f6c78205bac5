//! Idempotency: a command that names an id (`CommandContext`) appends a
//! `command.recorded` event, expecting its subject empty; a repeat finds the
//! record and answers the first answer, read back from the log. A
//! single-event command's record goes to the records stream
//! (`hbcmd.<hash of scope and id>`), where it expires after the
//! idempotency horizon; a command that writes several aggregates keeps its
//! record in its atomic batch, on `hb.command.<hash>` in the ledger's
//! stream (decision 0017).

use bytes::Bytes;
use chrono::Utc;
use events_schema::{Actor, ActorKind, CommandRecorded, Envelope, Event, EventMeta, GENESIS_HASH, command_record_id};
use uuid::Uuid;

use super::engine::Lasts;
use super::{CommandError, Commands, Outcome, corrupt};
use crate::log::{AppendRequest, LogError, StoredMessage};
use crate::subjects::{legacy_record_subject, record_subject};

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

impl Commands {
    /// The answer of an earlier run of the command, if it was recorded.
    async fn recorded(&self, ctx: &CommandContext) -> Result<Option<Outcome>, CommandError> {
        let subjects =
            [record_subject(&ctx.scope, &ctx.command_id), legacy_record_subject(&ctx.scope, &ctx.command_id)];
        let found = self.log.last_on_subjects(&subjects).await?;
        match found.into_iter().flatten().next() {
            None => Ok(None),
            Some(msg) => self.answer_from_record(ctx, &msg).await.map(Some),
        }
    }

    /// The first answer, read back from the log through the command's
    /// record. Its position is the last event's (a record in the records
    /// stream counts in another sequence).
    pub(super) async fn answer_from_record(
        &self,
        ctx: &CommandContext,
        msg: &StoredMessage,
    ) -> Result<Outcome, CommandError> {
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
        let mut position = if record.event_positions.is_empty() { msg.position } else { 0 };
        for m in stored {
            position = position.max(m.position);
            events.push(Envelope::decode(&m.payload).map_err(|e| corrupt(m.position, e))?);
        }
        Ok(Outcome { position, events, repeated: true })
    }

    /// Appends the record of a command whose event is at `position`. The
    /// event is stored whatever happens here, so the answer is a success:
    /// if the record cannot be written now, the reactor writes it. `ours`:
    /// this run appended the event (else the answer is a repeat's).
    pub(super) async fn record_after(
        &self,
        ctx: &CommandContext,
        actor: &Actor,
        position: u64,
        events: Vec<Envelope>,
        ours: bool,
    ) -> Result<Outcome, CommandError> {
        let request = record_request(ctx, actor, vec![position], events.len(), record_subject);
        match self.log.append(request).await {
            Ok(_) => Ok(Outcome { position, events, repeated: !ours }),
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
    pub(super) async fn complete_unrecorded(
        &self,
        ctx: &CommandContext,
        lasts: &Lasts,
    ) -> Result<Option<Outcome>, CommandError> {
        for last in lasts.entries.values() {
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
}

/// The message id of a single-aggregate command's event: the same for every
/// run of the command, so that JetStream drops a second one inside its
/// duplicate window.
pub(super) fn command_msg_id(ctx: &CommandContext) -> String {
    format!("cmd-{}", command_record_id(&ctx.scope, &ctx.command_id))
}

/// The append of a command's record, on a subject that must be empty: its
/// uniqueness comes from the subject, so a racing repeat loses as a
/// conflict. `subject` builds it from the scope and id: `record_subject`
/// (the records stream) or `legacy_record_subject` (the ledger's, for a
/// record inside an atomic batch).
pub(super) fn record_request(
    ctx: &CommandContext,
    actor: &Actor,
    event_positions: Vec<u64>,
    event_count: usize,
    subject: fn(&str, &str) -> String,
) -> AppendRequest {
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
    let (_, bytes) = Envelope::seal_encoded(&meta, None, record, 1, GENESIS_HASH);
    AppendRequest {
        subject: subject(&ctx.scope, &ctx.command_id),
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
    Some(record_request(&ctx, &ctx.actor, vec![position], 1, record_subject))
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
