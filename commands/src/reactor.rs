//! The gift reactor: reads viewer-side gift commits in log order and
//! appends the host-side credits, batched per host.
//!
//! Exactly once. A host's ledger records the last source position it was
//! credited up to, and a credit skips every gift at or before it. That guard
//! is sound because the reactor reads the log strictly in order: when a
//! host is credited up to position P, every earlier gift to it has been
//! credited. So a batch replayed after a crash (credited, checkpoint not yet
//! saved) credits nothing twice, and two instances racing on one host are
//! serialised by the optimistic concurrency of the host's subject.
//!
//! Records. A command that writes one aggregate appends its event, then
//! its record; the reactor reads the ledger and the records' subjects, and
//! writes the record of an event whose command died in between (none seen
//! two seconds later), before its checkpoint moves past it.
//!
//! Active and standby. One instance holds a lease in a JetStream key-value
//! bucket (compare-and-set on the entry's revision), renews it, and keeps
//! its checkpoint in it. A standby takes the lease over when it expires,
//! and resumes from that checkpoint. (A pinned-client consumer was the first
//! design; its redeliveries come out of order after a crash, which breaks
//! the positional guard, so it was dropped.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::kv;
use bytes::Bytes;
use domain::ledger::GiftToCredit;
use events_schema::{Envelope, Event};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

mod pending;

use self::pending::{CommandKey, PendingRecords};
use crate::handler::{CommandError, Commands, command_record_subject, repair_record_request};
use crate::log::LogError;
use crate::retry::RetrySchedule;

/// The key-value bucket holding the workers' leases and checkpoints.
pub const LEASE_BUCKET: &str = "HALOBUZZ_LEASES";

#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// The lease's key: one per deployment.
    pub lease_key: String,
    /// The most messages taken into one batch.
    pub batch_size_max: usize,
    /// How long a batch waits for more messages after its first.
    pub batch_delay: Duration,
    /// How long a lease lasts unless renewed; a standby takes over after it.
    pub lease_ttl: Duration,
    /// How many hosts of one batch are credited at once.
    pub hosts_in_flight_max: usize,
    /// Replicas of the lease bucket (as the event stream's).
    pub replicas: usize,
    /// Test hook: stop dead after this many credit commits, before the
    /// checkpoint is saved, as a crash would.
    pub crash_after_commits: Option<u64>,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            lease_key: "gift-reactor".into(),
            batch_size_max: 1_000,
            batch_delay: Duration::from_millis(20),
            lease_ttl: Duration::from_secs(3),
            hosts_in_flight_max: 16,
            replicas: 1,
            crash_after_commits: None,
        }
    }
}

/// What the reactor has done, for metrics and tests.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Host-side commits appended.
    pub commits: AtomicU64,
    /// Gifts credited (in those commits).
    pub gifts: AtomicU64,
    /// Log position up to which every gift is credited, as this instance
    /// reached it (saved in the lease now and then: `saved_checkpoint`).
    pub position: AtomicU64,
    /// 1 while this instance holds the lease.
    pub active: AtomicU64,
    /// Command records written for events whose command died before
    /// writing them.
    pub records_repaired: AtomicU64,
}

/// The subjects the reactor acts on: ledger commits, command records.
const LEDGER_PREFIX: &str = "hb.ledger.";
const RECORD_PREFIX: &str = "hb.command.";

/// Messages read ahead of the batch being credited, at most.
const READ_AHEAD_MAX: usize = 20_000;
/// How often the active reactor saves its checkpoint (with its lease) while
/// busy; when idle, every third of the lease's lifetime.
const CHECKPOINT_SAVE_EVERY: Duration = Duration::from_millis(250);

/// How old an event must be before the reactor checks its command's
/// record: the command writes it right after the event, so a younger one is
/// most likely being written now.
const RECORD_GRACE: Duration = Duration::from_secs(2);
/// Events waiting for their record check, at most; past it, the oldest are
/// checked at once.
const PENDING_RECORDS_MAX: usize = 100_000;
/// Command records looked up in one batched read.
const RECORD_LOOKUPS_PER_READ: usize = 256;

/// The pauses of one host's credit, or one record check, that failed: at
/// most `retries_max` of them, then the reactor drops its consumer and
/// resumes from its checkpoint (a replayed credit is skipped by the host's
/// own guard, so nothing is credited twice, and no gift is dropped).
const STEP_RETRIES: RetrySchedule =
    RetrySchedule { delay_ms_first: STEP_RETRY_DELAY_MS_FIRST, delay_ms_max: RETRY_DELAY_MS_MAX, retries_max: 8 };
/// The pauses of the worker between failed rounds (the lease unreachable,
/// the consumer interrupted). A worker lives until it is stopped, so a
/// series of rounds that keeps failing is started again (with an error
/// logged) rather than given up: given up, gifts would stay uncredited.
const ROUND_RETRIES: RetrySchedule =
    RetrySchedule { delay_ms_first: STEP_RETRY_DELAY_MS_FIRST, delay_ms_max: RETRY_DELAY_MS_MAX, retries_max: 8 };
/// The cap of the first pause after a failure.
const STEP_RETRY_DELAY_MS_FIRST: u64 = 100;
/// The cap of any pause after a failure.
const RETRY_DELAY_MS_MAX: u64 = 2_000;

/// The lease entry's value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Lease {
    owner: String,
    expires_at_ms: i64,
    /// Every gift at or before this position is credited.
    checkpoint: u64,
}

/// A running reactor.
#[derive(Debug)]
pub struct GiftReactor {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    stats: Arc<ReactorStats>,
}

impl GiftReactor {
    /// Starts the reactor on `client`'s JetStream, reading `stream_name`.
    pub async fn start(
        commands: Commands,
        client: async_nats::Client,
        stream_name: &str,
        config: ReactorConfig,
    ) -> Result<GiftReactor, async_nats::Error> {
        let js = async_nats::jetstream::new(client);
        let bucket = lease_bucket(&js, config.replicas).await?;
        let stream = js.get_stream(stream_name).await?;
        let (stop, stop_rx) = watch::channel(false);
        let stats = Arc::new(ReactorStats::default());
        let worker =
            Worker { commands, bucket, stream, config, stats: stats.clone(), owner: Uuid::now_v7().to_string() };
        let task = tokio::spawn(worker.run(stop_rx));
        Ok(GiftReactor { task, stop, stats })
    }

    pub fn stats(&self) -> &Arc<ReactorStats> {
        &self.stats
    }

    /// Stops at a clean point and releases the lease: the batch in hand is
    /// finished and checkpointed, or left to whoever comes next.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops dead, as a crash would (the lease runs out by itself).
    pub fn kill(self) {
        self.task.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The checkpoint the reactor of `lease_key` last saved (every gift at or
/// before it is credited), or `None` before any reactor ran. For operators
/// (`replay-tools status`) and tests; the running reactor's own progress is
/// `ReactorStats::position`, saved every `CHECKPOINT_SAVE_EVERY` at most.
pub async fn saved_checkpoint(client: &async_nats::Client, lease_key: &str) -> Result<Option<u64>, async_nats::Error> {
    let js = async_nats::jetstream::new(client.clone());
    let Ok(bucket) = js.get_key_value(LEASE_BUCKET).await else {
        return Ok(None);
    };
    let Some(value) = bucket.get(lease_key).await? else {
        return Ok(None);
    };
    let lease: Lease = serde_json::from_slice(&value)?;
    Ok(Some(lease.checkpoint))
}

/// The bucket of leases, created when missing.
pub async fn lease_bucket(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(LEASE_BUCKET).await {
        return Ok(store);
    }
    let store = js
        .create_key_value(kv::Config {
            bucket: LEASE_BUCKET.into(),
            description: "HaloBuzz workers' leases and checkpoints".into(),
            history: 1,
            num_replicas: replicas,
            ..kv::Config::default()
        })
        .await?;
    Ok(store)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

struct Worker {
    commands: Commands,
    bucket: kv::Store,
    stream: async_nats::jetstream::stream::Stream,
    config: ReactorConfig,
    stats: Arc<ReactorStats>,
    owner: String,
}

/// A held lease: the revision to renew from, and the checkpoint.
struct Held {
    revision: u64,
    checkpoint: u64,
}

enum Flow {
    Stop,
    Crash,
    LostLease,
}

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut pauses = ROUND_RETRIES.delays();
        while !*stop.borrow() {
            let held = match self.acquire().await {
                Ok(Some(held)) => held,
                Ok(None) => {
                    // Another instance is active: stand by.
                    if !pause(self.config.lease_ttl / 3, &mut stop).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "gift reactor: cannot reach the lease; retrying");
                    if !pause(next_round_pause(&mut pauses), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            pauses = ROUND_RETRIES.delays();
            self.stats.active.store(1, Ordering::Relaxed);
            self.stats.position.store(held.checkpoint, Ordering::Relaxed);
            tracing::info!(checkpoint = held.checkpoint, owner = %self.owner, "gift reactor: active");
            let flow = self.active(held, &mut stop).await;
            self.stats.active.store(0, Ordering::Relaxed);
            match flow {
                Ok(Flow::Stop) | Ok(Flow::Crash) => return,
                Ok(Flow::LostLease) => tracing::warn!("gift reactor: lease lost; standing by"),
                Err(error) => {
                    tracing::warn!(%error, "gift reactor: interrupted; resuming from the checkpoint");
                    if !pause(next_round_pause(&mut pauses), &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    fn lease(&self, checkpoint: u64, ttl: Duration) -> Bytes {
        let lease = Lease {
            owner: self.owner.clone(),
            expires_at_ms: now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            checkpoint,
        };
        // A struct of plain fields always serialises.
        Bytes::from(serde_json::to_vec(&lease).unwrap_or_default())
    }

    /// Takes the lease when it is free, expired or ours.
    async fn acquire(&self) -> Result<Option<Held>, async_nats::Error> {
        let key = self.config.lease_key.as_str();
        match self.bucket.entry(key).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let current: Lease = serde_json::from_slice(&entry.value)?;
                if current.owner != self.owner && current.expires_at_ms > now_ms() {
                    return Ok(None);
                }
                let value = self.lease(current.checkpoint, self.config.lease_ttl);
                match self.bucket.update(key, value, entry.revision).await {
                    Ok(revision) => Ok(Some(Held { revision, checkpoint: current.checkpoint })),
                    // Another standby was quicker.
                    Err(_) => Ok(None),
                }
            }
            _ => match self.bucket.create(key, self.lease(0, self.config.lease_ttl)).await {
                Ok(revision) => Ok(Some(Held { revision, checkpoint: 0 })),
                Err(_) => Ok(None),
            },
        }
    }

    /// Renews the lease with a new checkpoint; `false` when it was lost.
    async fn renew(&self, held: &mut Held, checkpoint: u64, ttl: Duration) -> bool {
        let value = self.lease(checkpoint, ttl);
        match self.bucket.update(self.config.lease_key.as_str(), value, held.revision).await {
            Ok(revision) => {
                held.revision = revision;
                held.checkpoint = checkpoint;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "gift reactor: lease renewal refused");
                false
            }
        }
    }

    async fn active(&self, mut held: Held, stop: &mut watch::Receiver<bool>) -> Result<Flow, async_nats::Error> {
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                // The whole stream, not `hb.ledger.>` and `hb.command.>`: a
                // consumer with several wildcard filters makes nats-server
                // look up the next match subject by subject, which under a
                // stream of writes starved the reactor (2,000 messages/s
                // delivered, lag in seconds). Other messages are skipped
                // here, at a fraction of that cost.
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: held.checkpoint + 1 },
                ..OrderedConfig::default()
            })
            .await?;
        let messages = consumer.messages().await?;
        // A reader task keeps the consumer pulling while a batch is being
        // credited, so that the next batch is already here when it is done.
        let (read_tx, mut read_rx) = tokio::sync::mpsc::channel(READ_AHEAD_MAX);
        let _reader = AbortOnDrop(tokio::spawn(read_ahead(messages, read_tx)));
        let renew_every = self.config.lease_ttl / 3;
        let mut renewed_at = tokio::time::Instant::now();
        let mut pending = PendingRecords::default();
        // Every message up to here is credited (the saved checkpoint, then
        // each batch's last position).
        let mut credited_to = held.checkpoint;
        loop {
            // The first message of a batch, the stop, or time to renew.
            let first = tokio::select! {
                _ = stop.changed() => {
                    // Release, with the checkpoint reached: a standby may
                    // take over at once.
                    let checkpoint = pending.checkpoint(credited_to);
                    self.renew(&mut held, checkpoint, Duration::ZERO).await;
                    return Ok(Flow::Stop);
                }
                next = tokio::time::timeout(renew_every, read_rx.recv()) => match next {
                    Ok(Some(m)) => m?,
                    Ok(None) => return Err("the ordered consumer ended".into()),
                    Err(_) => {
                        // Idle: check the records that have aged meanwhile.
                        if self.check_records(&mut pending, stop).await? == Step::Stopped {
                            return Ok(Flow::Stop);
                        }
                        let checkpoint = pending.checkpoint(credited_to);
                        if !self.renew(&mut held, checkpoint, self.config.lease_ttl).await {
                            return Ok(Flow::LostLease);
                        }
                        renewed_at = tokio::time::Instant::now();
                        self.stats.position.store(checkpoint, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.config.batch_delay;
            while batch.len() < self.config.batch_size_max {
                // What is already read first; then wait until the deadline.
                let next = match read_rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) => tokio::time::timeout_at(deadline, read_rx.recv()).await.ok().flatten(),
                };
                match next {
                    Some(m) => batch.push(m?),
                    None => break,
                }
            }
            let last_position = batch.last().and_then(|m| m.info().ok()).map(|i| i.stream_sequence).unwrap_or(0);
            if self.credit_batch(&batch, &mut pending, stop).await? == Step::Stopped {
                return Ok(Flow::Stop);
            }
            credited_to = last_position;
            if let Some(limit) = self.config.crash_after_commits
                && self.stats.commits.load(Ordering::Relaxed) >= limit
            {
                return Ok(Flow::Crash);
            }
            if self.check_records(&mut pending, stop).await? == Step::Stopped {
                return Ok(Flow::Stop);
            }
            let checkpoint = pending.checkpoint(credited_to);
            self.stats.position.store(checkpoint, Ordering::Relaxed);
            // The saved checkpoint only bounds the replay after a crash (a
            // replayed credit is skipped by the host's own guard), so under
            // load it is saved with the lease now and then, not after every
            // batch (a key-value write per batch doubled each batch's round
            // trips); once caught up (nothing read ahead), at once.
            if renewed_at.elapsed() >= CHECKPOINT_SAVE_EVERY || (read_rx.is_empty() && checkpoint != held.checkpoint) {
                if !self.renew(&mut held, checkpoint, self.config.lease_ttl).await {
                    return Ok(Flow::LostLease);
                }
                renewed_at = tokio::time::Instant::now();
            }
        }
    }

    /// Credits every gift of the batch, host by host, and queues the events
    /// whose command record is to be checked; `Stopped` when stopping
    /// before the batch is done, an error when a host's credit kept
    /// failing.
    async fn credit_batch(
        &self,
        batch: &[async_nats::jetstream::Message],
        pending: &mut PendingRecords,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, CommandError> {
        let mut hosts: Vec<Uuid> = Vec::new();
        let mut gifts: HashMap<Uuid, Vec<GiftToCredit>> = HashMap::new();
        let hold_hours = self.commands.config().earnings_hold_hours;
        let mut recorded: Vec<(u64, Envelope, i64)> = Vec::new();
        let mut resolved: Vec<CommandKey> = Vec::new();
        let horizon_ms = i64::from(self.commands.config().idempotency_horizon_hours) * 3_600_000;
        let forgotten_before_ms = now_ms().saturating_sub(horizon_ms);
        for message in batch {
            let Ok(info) = message.info() else {
                tracing::error!(subject = %message.subject, "gift reactor: a message without JetStream metadata");
                continue;
            };
            let position = info.stream_sequence;
            // Only ledger commits and command records concern the reactor
            // (it reads the whole stream, see `active`).
            if !(message.subject.starts_with(LEDGER_PREFIX) || message.subject.starts_with(RECORD_PREFIX)) {
                continue;
            }
            let envelope = match Envelope::decode(&message.payload) {
                Ok(e) => e,
                Err(error) => {
                    // An unreadable commit cannot be credited; audit reports it.
                    tracing::error!(position, %error, "gift reactor: unreadable ledger commit skipped");
                    continue;
                }
            };
            if let Event::CommandRecorded(record) = &envelope.event {
                resolved.push((record.scope.clone(), record.command_id.clone()));
                continue;
            }
            let stored_at_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            // A record older than the horizon has expired by design: none
            // is written again for an event that old (a reactor replaying
            // an old log, or a log imported after a disaster, whose server
            // times are all recent, would otherwise rewrite every one). The
            // event's own time decides.
            let occurred_at_ms = envelope.header.occurred_at.timestamp_millis();
            if envelope.header.command_fingerprint.is_some() && occurred_at_ms > forgotten_before_ms {
                recorded.push((position, envelope.clone(), stored_at_ms));
            }
            if let Event::GiftSent(sent) = envelope.event {
                let entry = gifts.entry(sent.host_id).or_insert_with(|| {
                    hosts.push(sent.host_id);
                    Vec::new()
                });
                let sent_at = envelope.header.occurred_at;
                entry.push(GiftToCredit {
                    source_position: position,
                    viewer_id: sent.user_id,
                    stream_id: sent.stream_id,
                    coins: sent.coins,
                    host_share_bps: sent.host_share_bps,
                    sent_at,
                    matures_at: sent_at + chrono::Duration::hours(i64::from(hold_hours)),
                });
            }
        }
        let credits = futures_util::stream::iter(hosts.into_iter().map(|host| {
            let host_gifts = gifts.remove(&host).unwrap_or_default();
            let mut stop = stop.clone();
            async move { self.credit_host(host, host_gifts, &mut stop).await }
        }))
        .buffer_unordered(self.config.hosts_in_flight_max.max(1));
        let results: Vec<Result<Step, CommandError>> = credits.collect().await;
        if combined(results)? == Step::Stopped {
            return Ok(Step::Stopped);
        }
        for (position, envelope, stored_at_ms) in recorded {
            pending.push(position, envelope, stored_at_ms);
        }
        for key in &resolved {
            pending.resolve(key);
        }
        Ok(Step::Done)
    }

    /// Writes the records still missing for events old enough that their
    /// command has had every chance to write them (or for all, past the
    /// queue's bound); `Stopped` when stopping meanwhile, an error when a
    /// record kept failing.
    async fn check_records(
        &self,
        pending: &mut PendingRecords,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, LogError> {
        let ripe_before_ms = now_ms() - i64::try_from(RECORD_GRACE.as_millis()).unwrap_or(i64::MAX);
        let mut ripe = Vec::new();
        pending.trim();
        while let Some((_, key, stored_at_ms, _)) = pending.entries.front() {
            let open = pending.open.contains(key);
            if open && *stored_at_ms > ripe_before_ms && pending.entries.len() <= PENDING_RECORDS_MAX {
                break;
            }
            if let Some((position, key, _, envelope)) = pending.entries.pop_front()
                && pending.open.remove(&key)
            {
                ripe.push((position, envelope));
            }
        }
        // Most records are there (written right after their event, in the
        // records stream the reactor does not read): look them up in
        // batched reads, and repair only the missing.
        let mut missing = Vec::new();
        for chunk in ripe.chunks(RECORD_LOOKUPS_PER_READ) {
            let subjects: Vec<String> = chunk.iter().filter_map(|(_, e)| command_record_subject(e)).collect();
            if subjects.len() != chunk.len() {
                missing.extend(chunk.iter().cloned());
                continue;
            }
            // A replica's "empty" is checked by the repair's own read.
            match self.commands.log().last_on_subjects_appended_expecting_empty(&subjects, subjects.len()).await {
                Ok(found) => {
                    missing.extend(chunk.iter().zip(found).filter(|(_, f)| f.is_none()).map(|(entry, _)| entry.clone()))
                }
                Err(error) => {
                    tracing::warn!(%error, "gift reactor: cannot look command records up; checking one by one");
                    missing.extend(chunk.iter().cloned());
                }
            }
        }
        let repairs = futures_util::stream::iter(missing.into_iter().map(|(position, envelope)| {
            let mut stop = stop.clone();
            async move { self.ensure_record(position, &envelope, &mut stop).await }
        }))
        .buffer_unordered(self.config.hosts_in_flight_max.max(1));
        let repaired: Vec<Result<Step, LogError>> = repairs.collect().await;
        combined(repaired)
    }

    /// Writes the record of the command of `envelope` when it is missing,
    /// retrying a failure (`STEP_RETRIES`).
    async fn ensure_record(
        &self,
        position: u64,
        envelope: &Envelope,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, LogError> {
        let (Some(subject), Some(request)) =
            (command_record_subject(envelope), repair_record_request(envelope, position))
        else {
            return Ok(Step::Done);
        };
        let log = self.commands.log();
        let mut pauses = STEP_RETRIES.delays();
        loop {
            let result = match log.last_on_subject(&subject).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => match log.append(request.clone()).await {
                    Ok(_) => {
                        self.stats.records_repaired.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    // Written meanwhile by the command itself.
                    Err(LogError::Conflict { .. } | LogError::Duplicate { .. }) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(Step::Done),
                Err(error) => {
                    let Some(delay) = pauses.next() else { return Err(error) };
                    tracing::warn!(position, %error, "gift reactor: cannot check a command record; retrying");
                    if !pause(delay, stop).await {
                        return Ok(Step::Stopped);
                    }
                }
            }
        }
    }

    /// Credits one host's gifts, retrying a failure (`STEP_RETRIES`); past
    /// those retries the error goes up, and the reactor resumes from its
    /// checkpoint: a gift is never dropped.
    async fn credit_host(
        &self,
        host: Uuid,
        gifts: Vec<GiftToCredit>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Step, CommandError> {
        let count = gifts.len() as u64;
        let mut pauses = STEP_RETRIES.delays();
        loop {
            match self.commands.credit_gifts(host, gifts.clone()).await {
                Ok(outcome) => {
                    if !outcome.events.is_empty() {
                        self.stats.commits.fetch_add(1, Ordering::Relaxed);
                        self.stats.gifts.fetch_add(count, Ordering::Relaxed);
                    }
                    return Ok(Step::Done);
                }
                Err(error) => {
                    let Some(delay) = pauses.next() else { return Err(error) };
                    tracing::warn!(%host, %error, "gift reactor: credit failed; retrying");
                    if !pause(delay, stop).await {
                        return Ok(Step::Stopped);
                    }
                }
            }
        }
    }
}

/// Forwards the consumer's messages to the batching loop until either ends.
async fn read_ahead(
    mut messages: async_nats::jetstream::consumer::pull::Ordered,
    read_tx: tokio::sync::mpsc::Sender<Result<async_nats::jetstream::Message, async_nats::Error>>,
) {
    while let Some(next) = messages.next().await {
        let failed = next.is_err();
        let next = next.map_err(async_nats::Error::from);
        if read_tx.send(next).await.is_err() || failed {
            return;
        }
    }
}

/// Aborts its task when dropped (the reader dies with its batching loop).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a step of the active reactor ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Done,
    /// Asked to stop before the step was done.
    Stopped,
}

/// The first error of several steps run together, else `Stopped` if any
/// stopped.
fn combined<E>(results: Vec<Result<Step, E>>) -> Result<Step, E> {
    let mut step = Step::Done;
    for result in results {
        if result? == Step::Stopped {
            step = Step::Stopped;
        }
    }
    Ok(step)
}

/// The pause after a failed round; a series that ran out starts again,
/// with an error logged (see `ROUND_RETRIES`).
fn next_round_pause(pauses: &mut backon::ExponentialBackoff) -> Duration {
    if let Some(delay) = pauses.next() {
        return delay;
    }
    tracing::error!(
        rounds = ROUND_RETRIES.retries_max,
        "gift reactor: still failing after a series of retries; going on"
    );
    *pauses = ROUND_RETRIES.delays();
    pauses.next().unwrap_or(Duration::from_millis(RETRY_DELAY_MS_MAX))
}

/// Sleeps; `false` when asked to stop meanwhile.
async fn pause(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        _ = tokio::time::sleep(delay) => !*stop.borrow(),
    }
}
