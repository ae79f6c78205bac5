//! The load-decide-seal-append engine every command goes through: the
//! last messages of the subjects a decision reads (one coalesced read,
//! with the command's record; the subject the command writes may come
//! from the handler's cache, guarded by its append), the decision, the
//! sealing into hash chains, the append under optimistic concurrency, and
//! on a conflict a new load and decision (bounded).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use domain::{DomainError, Loaded};
use events_schema::{Actor, Envelope, Event, EventMeta};
use uuid::Uuid;

use super::idempotency::{CommandContext, command_msg_id, record_request};
use super::{CONFLICT_RETRIES, CONFLICT_RETRY_MAX, CommandError, Commands, Outcome, corrupt};
use crate::log::{AppendRequest, Appended, LogError, StoredMessage};
use crate::subjects::{event_subject, legacy_record_subject, record_subject};

/// The last messages of the subjects a decision reads, by subject.
#[derive(Debug, Default)]
pub struct Lasts {
    pub(super) entries: HashMap<String, Last>,
}

/// A subject's last message: the position the next append on the subject
/// expects, and the event there (the aggregate's state, and the hash
/// chain the next event continues).
#[derive(Debug, Clone)]
pub(super) struct Last {
    /// Position of the subject's last message, 0 when it has none.
    pub(super) position: u64,
    pub(super) envelope: Option<Arc<Envelope>>,
}

impl Last {
    /// The last message of a subject that has none.
    pub(super) fn none() -> Last {
        Last { position: 0, envelope: None }
    }

    /// The event of the last message.
    pub(super) fn event(&self) -> Option<&Event> {
        self.envelope.as_ref().map(|envelope| &envelope.event)
    }

    /// The hash chain the next event on the subject continues.
    pub(super) fn chain(&self) -> Loaded<()> {
        match &self.envelope {
            Some(e) => Loaded { state: (), sequence: e.header.sequence, last_hash: e.header.hash.clone() },
            None => Loaded::new(()),
        }
    }
}

impl Lasts {
    /// The state of the aggregate on `subject`, from its last event alone.
    pub fn state<S>(&self, subject: &str, initial: S, evolve: impl FnOnce(S, &Event) -> S) -> S {
        match self.entries.get(subject).and_then(Last::event) {
            Some(event) => evolve(initial, event),
            None => initial,
        }
    }

    /// The position the next append on `subject` expects, and the chain it
    /// continues; `None` for a subject that was not read.
    fn chain(&self, subject: &str) -> Option<(u64, Loaded<()>)> {
        let last = self.entries.get(subject)?;
        Some((last.position, last.chain()))
    }

    pub(super) fn max_position(&self) -> u64 {
        self.entries.values().map(|l| l.position).max().unwrap_or(0)
    }
}

impl Commands {
    /// Reads the last message of every subject, as of one position.
    pub async fn load(&self, subjects: &[String]) -> Result<Lasts, CommandError> {
        let messages = self.log.last_on_subjects(subjects).await?;
        self.lasts_of(subjects, messages)
    }

    /// The last messages of `subjects`, decoded from `messages`, in order.
    fn lasts_of(&self, subjects: &[String], messages: Vec<Option<StoredMessage>>) -> Result<Lasts, CommandError> {
        let mut lasts = Lasts::default();
        for (subject, message) in subjects.iter().zip(messages) {
            lasts.entries.insert(subject.clone(), self.decoded(subject, message)?);
        }
        Ok(lasts)
    }

    /// A subject's last message, decoded, or the same event decoded before.
    fn decoded(&self, subject: &str, last: Option<StoredMessage>) -> Result<Last, CommandError> {
        let Some(msg) = last else { return Ok(Last::none()) };
        if let Some(envelope) = self.cache.at(subject, msg.position) {
            return Ok(Last { position: msg.position, envelope: Some(envelope) });
        }
        let envelope = Arc::new(Envelope::decode(&msg.payload).map_err(|e| corrupt(msg.position, e))?);
        self.cache.put(subject, msg.position, envelope.clone(), msg.payload.len());
        Ok(Last { position: msg.position, envelope: Some(envelope) })
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
    pub(super) async fn execute<F>(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        subjects: Vec<String>,
        decide: F,
    ) -> Result<Outcome, CommandError>
    where
        F: Fn(&Lasts) -> Result<Vec<Event>, DomainError>,
    {
        self.execute_with(ctx, actor, subjects, None, decide).await
    }

    /// `execute`, where `written`, a subject every accepted decision of the
    /// command appends to, may come from the handler's cache instead of the
    /// log (see `aggregate_cache`): the append's expected position guards
    /// it. A decision from a cached entry that is a rejection, or that does
    /// not append to `written`, is made again from the log.
    pub(super) async fn execute_with<F>(
        &self,
        ctx: Option<&CommandContext>,
        actor: &Actor,
        subjects: Vec<String>,
        written: Option<&str>,
        decide: F,
    ) -> Result<Outcome, CommandError>
    where
        F: Fn(&Lasts) -> Result<Vec<Event>, DomainError>,
    {
        let mut trust_cache = written.is_some();
        let mut pauses = CONFLICT_RETRIES.delays();
        // Each turn is a try (the first, then one per pause), or a decision
        // from the cache made again from the log (at most once: the cache
        // is not trusted after it).
        for _ in 0..CONFLICT_RETRY_MAX + 2 {
            let cached = written.filter(|_| trust_cache).and_then(|w| Some((w, self.cache.get(w)?)));
            // The aggregates (but a cached one) and the command's record,
            // in one read.
            let mut wanted: Vec<String> =
                subjects.iter().filter(|s| cached.as_ref().is_none_or(|(w, _)| s.as_str() != *w)).cloned().collect();
            let aggregates_read = wanted.len();
            if let Some(c) = ctx {
                // Where a single-event command's record is, and where a
                // batch's (or any record before decision 0017) is.
                wanted.push(record_subject(&c.scope, &c.command_id));
                wanted.push(legacy_record_subject(&c.scope, &c.command_id));
            }
            // Records are only ever appended expecting their subject empty.
            let records = if ctx.is_some() { 2 } else { 0 };
            let mut messages = self.log.last_on_subjects_appended_expecting_empty(&wanted, records).await?;
            let record = if ctx.is_some() {
                let legacy = messages.pop().flatten();
                messages.pop().flatten().or(legacy)
            } else {
                None
            };
            if let (Some(ctx), Some(record)) = (ctx, record) {
                return self.answer_from_record(ctx, &record).await;
            }
            let mut lasts = self.lasts_of(&wanted[..aggregates_read], messages)?;
            if let Some((subject, entry)) = &cached {
                let last = Last { position: entry.position, envelope: Some(entry.envelope.clone()) };
                lasts.entries.insert((*subject).to_owned(), last);
            }
            let decided = decide(&lasts);
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
                        && let Some(outcome) = self.complete_unrecorded(ctx, &lasts).await?
                    {
                        return Ok(outcome);
                    }
                    return Err(rejection.into());
                }
            };
            if events.is_empty() {
                return Ok(Outcome { position: lasts.max_position(), events: vec![], repeated: false });
            }
            let single = events.len() == 1 && ctx.is_some();
            let (mut requests, envelopes) = self.seal_all(ctx, actor, &lasts, events, !single)?;
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
                    let Some(pause) = pauses.next() else { break };
                    tokio::time::sleep(pause).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Contention { tries: CONFLICT_RETRY_MAX + 1 })
    }

    /// Keeps an event this handler appended as its subject's last; forgets
    /// the subject when the append's position was found by message id (the
    /// message stored there may be another run's of the same command).
    pub(super) fn remember(&self, subject: &str, appended: Appended, envelope: &Envelope, stored_bytes: usize) {
        if appended.found_by_id {
            self.cache.forget(subject);
        } else {
            self.cache.put(subject, appended.position, Arc::new(envelope.clone()), stored_bytes);
        }
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
        lasts: &Lasts,
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
            let (expected, chain) = lasts.chain(&subject).ok_or_else(|| CommandError::Corrupt {
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
            requests.push(record_request(ctx, actor, vec![], event_count, legacy_record_subject));
        }
        Ok((requests, envelopes))
    }
}
