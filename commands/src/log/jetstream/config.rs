//! The adapter's settings, and the stream configuration they ask for.

use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType};

use crate::log::LogError;
use crate::managed::NatsToken;
use crate::retry::RetrySchedule;

/// Cap of the first retry delay; each retry doubles it up to
/// `retry_delay_ms_max`.
const RETRY_DELAY_MS_FIRST: u64 = 100;

/// Settings of the JetStream adapter. Names carry their units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Every server URL the client may use (a cluster: give them all, so that
    /// a reconnect can reach any survivor).
    pub urls: Vec<String>,
    /// Stream name (`NATS_STREAM`, default `HALOBUZZ`).
    pub stream_name: String,
    /// Subjects the stream captures (default `hb.>`).
    pub subjects: Vec<String>,
    /// Stream replicas (`NATS_STREAM_REPLICAS`, default 1; 3 in production).
    pub replicas: usize,
    /// Window in which the server drops a repeated `Nats-Msg-Id`.
    pub duplicate_window_ms: u64,
    /// Time allowed for the TCP + NATS handshake of one connect attempt.
    pub connect_timeout_ms: u64,
    /// Time allowed for one request (an append's ack, a direct get, ...).
    pub request_timeout_ms: u64,
    /// Retries of an operation that failed with `Unavailable` (so at most
    /// `append_retry_max + 1` tries).
    pub append_retry_max: u32,
    /// Cap of one retry delay (see `retry_schedule`: half fixed, half
    /// jitter).
    pub retry_delay_ms_max: u64,
    /// Deny deletes and purges on the stream: the ledger is append-only, and
    /// positions must stay dense for replays and audits.
    pub deny_delete_and_purge: bool,
    /// Bytes of messages one batched read of last messages asks the server
    /// for at most (`max_bytes`); the rest comes in follow-up requests.
    pub multi_last_bytes_max: usize,
    /// The token the server wants from its clients (the managed server's;
    /// `NATS_URL` servers authenticate as their URL says).
    pub token: Option<NatsToken>,
    /// How long a command's record is kept, and so its id remembered
    /// (`IDEMPOTENCY_HORIZON_HOURS`; the contract's floor is 24 hours): the
    /// `max_age` of the records stream (`records_stream`), so that the
    /// server's memory follows the commands of one horizon, not the log.
    pub idempotency_horizon_ms: u64,
    /// Messages older than this are removed; 0 keeps every message, as the
    /// ledger's stream must. Only `records_stream` sets it.
    pub max_age_ms: u64,
}

impl LogConfig {
    pub const DEFAULT_STREAM_NAME: &'static str = "HALOBUZZ";
    pub const DEFAULT_SUBJECTS: &'static str = "hb.>";

    /// Defaults for the given server URLs.
    pub fn new<I, S>(urls: I) -> LogConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        LogConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            stream_name: Self::DEFAULT_STREAM_NAME.to_owned(),
            subjects: vec![Self::DEFAULT_SUBJECTS.to_owned()],
            replicas: 1,
            duplicate_window_ms: 2 * 60 * 1_000,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            // With the delays below, the retries wait 2.5 to 5 s in all (plus
            // the tries' own timeouts): enough to ride out a stream leader
            // election.
            append_retry_max: 6,
            retry_delay_ms_max: 2_000,
            deny_delete_and_purge: true,
            multi_last_bytes_max: 4 * 1024 * 1024,
            token: None,
            idempotency_horizon_ms: 24 * 60 * 60 * 1_000,
            max_age_ms: 0,
        }
    }

    /// The settings of the stream of command records that go with this
    /// ledger stream: `<stream_name>_COMMANDS` on `hbcmd.>`, each record
    /// kept for the idempotency horizon (decision 0017).
    pub fn records_stream(&self) -> LogConfig {
        LogConfig {
            stream_name: format!("{}_COMMANDS", self.stream_name),
            subjects: vec![format!("{}.>", events_schema::RECORD_SUBJECT_PREFIX)],
            max_age_ms: self.idempotency_horizon_ms,
            // A record carries no message id; the server wants a window no
            // longer than the age limit.
            duplicate_window_ms: self.duplicate_window_ms.min(self.idempotency_horizon_ms),
            ..self.clone()
        }
    }

    /// Whether `subject` belongs to the records stream.
    pub fn is_record_subject(subject: &str) -> bool {
        subject.strip_prefix(events_schema::RECORD_SUBJECT_PREFIX).is_some_and(|rest| rest.starts_with('.'))
    }

    /// The schedule of every retry of an `Unavailable` failure: at most
    /// `append_retry_max` pauses, the first capped at 100 ms, each cap
    /// doubling up to `retry_delay_ms_max`; half of each pause fixed, half
    /// random, so that the retries span a leader election (a few seconds)
    /// even when every try fails at once (no responders), while concurrent
    /// writers are spread out.
    pub fn retry_schedule(&self) -> RetrySchedule {
        RetrySchedule {
            delay_ms_first: RETRY_DELAY_MS_FIRST,
            delay_ms_max: self.retry_delay_ms_max.max(RETRY_DELAY_MS_FIRST),
            retries_max: self.append_retry_max,
        }
    }

    pub(super) fn validate(&self) -> Result<(), LogError> {
        if self.urls.is_empty() {
            return Err(LogError::Invalid("no NATS server URL given".into()));
        }
        if self.stream_name.is_empty()
            || self.stream_name.contains(|c: char| c == '.' || c == '*' || c == '>' || c.is_whitespace())
        {
            return Err(LogError::Invalid(format!(
                "stream name {:?} must be non-empty, without '.', '*', '>' or spaces",
                self.stream_name
            )));
        }
        if self.subjects.is_empty() {
            return Err(LogError::Invalid("the stream needs at least one subject".into()));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(LogError::Invalid(format!("stream replicas must be 1 to 5, not {}", self.replicas)));
        }
        if self.duplicate_window_ms == 0 {
            return Err(LogError::Invalid("the duplicate window must be positive: retries rely on it".into()));
        }
        if self.idempotency_horizon_ms == 0 {
            return Err(LogError::Invalid("the idempotency horizon must be positive".into()));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(LogError::Invalid("timeouts must be positive".into()));
        }
        Ok(())
    }

    /// The stream configuration this adapter needs: the ledger keeps every
    /// message (`max_age_ms` 0); the records stream keeps one horizon.
    pub(super) fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.stream_name.clone(),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            // The ledger keeps everything: no limit but the records stream's
            // age may ever discard a message.
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::from_millis(self.max_age_ms),
            max_message_size: -1,
            max_consumers: -1,
            discard: DiscardPolicy::Old,
            duplicate_window: Duration::from_millis(self.duplicate_window_ms),
            allow_direct: true,
            allow_atomic_publish: true,
            deny_delete: self.deny_delete_and_purge,
            deny_purge: self.deny_delete_and_purge,
            ..StreamConfig::default()
        }
    }
}

/// Compares the settings the ledger cares about.
pub(super) fn stream_matches(found: &StreamConfig, wanted: &StreamConfig) -> bool {
    wanted.subjects.iter().all(|subject| found.subjects.contains(subject))
        && found.num_replicas == wanted.num_replicas
        && found.max_messages < 0
        && found.max_bytes < 0
        && found.max_messages_per_subject < 0
        // The ledger keeps every message; the records stream keeps them at
        // least the horizon (a floor: a tool with the default never
        // shortens an operator's longer one).
        && (if wanted.max_age.is_zero() { found.max_age.is_zero() } else { found.max_age >= wanted.max_age })
        && found.duplicate_window == wanted.duplicate_window
        && found.allow_direct
        && found.allow_atomic_publish
        && found.deny_delete == wanted.deny_delete
        && found.deny_purge == wanted.deny_purge
}
