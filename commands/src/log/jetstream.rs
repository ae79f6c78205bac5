//! The JetStream adapter of the event-log port.
//!
//! Appends, direct gets and stream management go through the raw JetStream
//! API (`$JS.API...` requests and publishes with headers) rather than
//! async-nats' typed helpers: the raw replies carry the JetStream error codes
//! we classify on (10071 wrong last sequence, 10163 not ready, ...), and
//! async-nats 0.51 has no atomic-batch publisher nor batched direct get.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{
    Config as StreamConfig, DiscardPolicy, PersistenceMode, RetentionPolicy, StorageType,
};
use async_nats::{Client, ConnectOptions, HeaderMap, Message, Request, ServerAddr};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use serde::Deserialize;
use serde::de::DeserializeOwned;

mod multi_last;

use super::{ATOMIC_BATCH_SIZE_MAX, AppendRequest, Appended, EventLog, LogError, StoredMessage, check_server_version};

const HEADER_MSG_ID: &str = "Nats-Msg-Id";
const HEADER_EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
const HEADER_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";
const HEADER_STREAM_SEQUENCE: &str = "Nats-Sequence";
const HEADER_STREAM_SUBJECT: &str = "Nats-Subject";
const HEADER_STREAM_TIMESTAMP: &str = "Nats-Time-Stamp";

// JetStream error codes (nats-server's jetstream_errors_generated.go).
const ERR_CLUSTER_NOT_AVAILABLE: u64 = 10008;
const ERR_CLUSTER_NOT_LEADER: u64 = 10009;
const ERR_STREAM_NAME_IN_USE: u64 = 10058;
const ERR_STREAM_NOT_FOUND: u64 = 10059;
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
const ERR_DUPLICATE_MESSAGE_IN_PROCESS: u64 = 10158;
const ERR_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY: u64 = 10163;
/// "wrong last sequence" without the number: the server refuses to check an
/// expectation while another append with an expectation on the same subject
/// is still in flight (replicated streams, atomic batches). That state lasts
/// milliseconds and the in-flight append may be this very append's earlier
/// try, so it is retried like `Unavailable`: the retry then sees the real
/// outcome (10071 wrong last sequence, or our own stored copy).
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
const ERR_NO_MESSAGE_FOUND: u64 = 10037;
const ERR_ATOMIC_BATCH_CONTAINS_DUPLICATE: u64 = 10201;
const ERR_ATOMIC_BATCH_TOO_MANY_INFLIGHT: u64 = 10210;
/// "No suitable peers for placement": a cluster still forming (or a peer
/// restarting) cannot place a replicated stream yet.
const ERR_CLUSTER_NO_PEERS: u64 = 10005;

/// Batches a single direct get may return; larger reads are split. Bounded so
/// that one reply burst stays well inside the client's subscription buffer
/// (65,536 messages by default).
const DIRECT_GET_BATCH_SIZE_MAX: u32 = 8_192;
/// Batches read ahead by `read_stream` while the caller consumes one.
const READ_STREAM_PREFETCH_BATCHES: usize = 2;
/// Cap of the first retry delay; each retry doubles it up to
/// `retry_delay_ms_max`.
const RETRY_DELAY_MS_MIN: u64 = 100;

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
    /// Cap of one retry delay (see `retry_delay`: half fixed, half jitter).
    pub retry_delay_ms_max: u64,
    /// Deny deletes and purges on the stream: the ledger is append-only, and
    /// positions must stay dense for replays and audits.
    pub deny_delete_and_purge: bool,
    /// Bytes of messages one batched read of last messages asks the server
    /// for at most (`max_bytes`); the rest comes in follow-up requests.
    pub multi_last_bytes_max: usize,
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
        }
    }

    /// Defaults, overridden by the environment: `NATS_URL` (comma-separated;
    /// when unset, `fallback_urls`, e.g. the managed server's), `NATS_STREAM`,
    /// `NATS_STREAM_REPLICAS`, `NATS_DUPLICATE_WINDOW_MS`.
    pub fn from_env(fallback_urls: Vec<String>) -> Result<LogConfig, LogError> {
        let urls = match std::env::var("NATS_URL") {
            Ok(urls) if !urls.trim().is_empty() => {
                urls.split(',').map(|url| url.trim().to_owned()).filter(|url| !url.is_empty()).collect()
            }
            _ => fallback_urls,
        };
        let mut config = LogConfig::new(urls);
        if let Ok(name) = std::env::var("NATS_STREAM") {
            config.stream_name = name;
        }
        if let Ok(replicas) = std::env::var("NATS_STREAM_REPLICAS") {
            config.replicas = replicas
                .trim()
                .parse()
                .map_err(|_| LogError::Invalid(format!("NATS_STREAM_REPLICAS={replicas:?} is not a number")))?;
        }
        if let Ok(window) = std::env::var("NATS_DUPLICATE_WINDOW_MS") {
            config.duplicate_window_ms = window
                .trim()
                .parse()
                .map_err(|_| LogError::Invalid(format!("NATS_DUPLICATE_WINDOW_MS={window:?} is not a number")))?;
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), LogError> {
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
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(LogError::Invalid("timeouts must be positive".into()));
        }
        Ok(())
    }

    /// The stream configuration this adapter needs.
    fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            name: self.stream_name.clone(),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            // The ledger keeps everything: no limit may ever discard a commit.
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
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

/// The JetStream adapter. Cheap to clone (one shared connection).
#[derive(Clone)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The connection of the coalesced reads.
    read_client: Client,
    config: LogConfig,
    server_version: String,
    subject_direct_get: String,
    subject_stream_info: String,
    /// Callers waiting for a coalesced `last_on_subjects`.
    multi_last: multi_last::Coalescer,
}

impl fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("urls", &self.inner.config.urls)
            .field("stream", &self.inner.config.stream_name)
            .field("server_version", &self.inner.server_version)
            .finish()
    }
}

/// A JetStream API error body: `{"code":400,"err_code":10071,"description":...}`.
#[derive(Debug, Clone, Deserialize)]
struct ApiError {
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {}, err_code {})", self.description, self.code, self.err_code)
    }
}

/// A publish acknowledgement.
#[derive(Debug, Clone, Deserialize)]
struct PubAck {
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    /// Messages stored by a committed atomic batch.
    #[serde(default)]
    count: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StreamInfoReply {
    config: StreamConfig,
    state: StreamStateReply,
}

#[derive(Debug, Deserialize)]
struct StreamStateReply {
    last_seq: u64,
}

/// Outcome of one try of an atomic batch.
enum BatchOutcome {
    Committed(PubAck),
    /// Refused whole because some message id is already stored.
    DuplicateIds,
}

/// Outcome of one JetStream API call before classification.
enum ApiReply<T> {
    Ok(T),
    Err(ApiError),
}

fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<ApiReply<T>, LogError> {
    #[derive(Deserialize)]
    struct MaybeError {
        error: Option<ApiError>,
    }
    let probe: MaybeError = serde_json::from_slice(payload)
        .map_err(|err| LogError::Invalid(format!("undecodable JetStream reply: {err}")))?;
    if let Some(error) = probe.error {
        return Ok(ApiReply::Err(error));
    }
    serde_json::from_slice(payload)
        .map(ApiReply::Ok)
        .map_err(|err| LogError::Invalid(format!("unexpected JetStream reply: {err}")))
}

/// Classification of API errors that carry no append context.
fn classify(error: &ApiError) -> LogError {
    match error.err_code {
        ERR_CLUSTER_NOT_AVAILABLE
        | ERR_CLUSTER_NOT_LEADER
        | ERR_DUPLICATE_MESSAGE_IN_PROCESS
        | ERR_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY
        | ERR_WRONG_LAST_SEQUENCE_CONSTANT
        | ERR_ATOMIC_BATCH_TOO_MANY_INFLIGHT
        | ERR_CLUSTER_NO_PEERS => LogError::Unavailable(error.to_string()),
        _ if error.code == 503 => LogError::Unavailable(error.to_string()),
        _ => LogError::Invalid(error.to_string()),
    }
}

fn is_wrong_last_sequence(error: &ApiError) -> bool {
    error.err_code == ERR_WRONG_LAST_SEQUENCE
}

/// The subject's actual last position, from "wrong last sequence: 12".
fn current_from_description(description: &str) -> Option<u64> {
    description.rsplit(':').next()?.trim().parse().ok()
}

fn request_error(err: async_nats::RequestError) -> LogError {
    use async_nats::RequestErrorKind as Kind;
    match err.kind() {
        Kind::TimedOut => LogError::Unavailable("timed out waiting for the server".into()),
        Kind::NoResponders => LogError::Unavailable("no responders (stream leader down, or stream missing)".into()),
        Kind::InvalidSubject | Kind::MaxPayloadExceeded => LogError::Invalid(err.to_string()),
        Kind::Other => LogError::Unavailable(err.to_string()),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

/// Parses a message returned by a direct get.
fn stored_from_direct(message: Message) -> Result<StoredMessage, LogError> {
    let headers =
        message.headers.as_ref().ok_or_else(|| LogError::Invalid("direct get reply without headers".into()))?;
    let position = header(headers, HEADER_STREAM_SEQUENCE)
        .and_then(|seq| seq.trim().parse().ok())
        .ok_or_else(|| LogError::Invalid("direct get reply without Nats-Sequence".into()))?;
    let subject = header(headers, HEADER_STREAM_SUBJECT)
        .ok_or_else(|| LogError::Invalid("direct get reply without Nats-Subject".into()))?
        .to_owned();
    let timestamp = header(headers, HEADER_STREAM_TIMESTAMP)
        .and_then(parse_timestamp)
        .ok_or_else(|| LogError::Invalid("direct get reply without a valid Nats-Time-Stamp".into()))?;
    let msg_id = header(headers, HEADER_MSG_ID).map(str::to_owned);
    Ok(StoredMessage { position, subject, payload: message.payload, msg_id, timestamp })
}

/// Direct get stamps messages in RFC 3339 or in Go's default time format
/// (`2022-08-06 00:29:27.587861324 +0000 UTC`) depending on the version.
fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    // Go's format ends with a zone abbreviation that chrono cannot parse; the
    // numeric offset before it is enough.
    let without_zone = text.rsplit_once(' ').map_or(text, |(head, _)| head);
    if let Ok(time) = DateTime::parse_from_str(without_zone, "%Y-%m-%d %H:%M:%S%.f %z") {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok().map(|naive| naive.and_utc())
}

/// The `Nats-Msg-Id` of a message whose headers come base64-encoded in NATS
/// wire form (`NATS/1.0\r\nName: value\r\n...`), as `STREAM.MSG.GET` returns
/// them.
fn msg_id_from_encoded_headers(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case(HEADER_MSG_ID).then(|| value.trim().to_owned())
    })
}

fn append_headers(request: &AppendRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(msg_id) = &request.msg_id {
        headers.insert(HEADER_MSG_ID, msg_id.as_str());
    }
    headers.insert(HEADER_EXPECTED_LAST_SUBJECT_SEQ, request.expected_last_subject_seq.to_string());
    headers
}

/// A batch id: 22 random alphanumerics (the server accepts up to 64).
fn new_batch_id() -> String {
    const BATCH_ID_LEN: usize = 22;
    let mut rng = rand::rng();
    (0..BATCH_ID_LEN).map(|_| char::from(rng.sample(rand::distr::Alphanumeric))).collect()
}

fn validate_append(request: &AppendRequest) -> Result<(), LogError> {
    match request.msg_id.as_deref() {
        Some(id) if id.is_empty() || id.contains(char::is_whitespace) => {
            return Err(LogError::Invalid(format!("append to {} with an invalid message id", request.subject)));
        }
        // Without an id a retry is recognised by its bytes, which is sound
        // only where one message at most can ever land: an empty subject.
        None if request.expected_last_subject_seq != 0 => {
            return Err(LogError::Invalid(format!(
                "append to {} without a message id expects position {}: only an append expecting an empty \
                 subject may go without one",
                request.subject, request.expected_last_subject_seq
            )));
        }
        _ => {}
    }
    if request.subject.is_empty() || request.subject.contains(char::is_whitespace) {
        return Err(LogError::Invalid(format!("invalid subject {:?}", request.subject)));
    }
    Ok(())
}

async fn connect_client(config: &LogConfig, name: &str, addresses: Vec<ServerAddr>) -> Result<Client, LogError> {
    ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        // Keep reconnecting for ever: while disconnected, operations fail
        // with `Unavailable` after their timeout, which callers handle.
        .max_reconnects(None)
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        })
        .connect(addresses)
        .await
        .map_err(|err| LogError::Unavailable(format!("cannot connect to NATS: {err}")))
}

impl JetStreamLog {
    /// Connects, refuses a server older than [`super::MIN_SERVER_VERSION`],
    /// and creates the stream or brings an existing one to the settings the
    /// ledger needs. An existing stream whose storage or retention differ
    /// (JetStream cannot change those) is refused with `Invalid`.
    pub async fn connect(config: LogConfig) -> Result<JetStreamLog, LogError> {
        config.validate()?;
        let addresses = config
            .urls
            .iter()
            .map(|url| {
                url.parse::<ServerAddr>().map_err(|err| LogError::Invalid(format!("bad NATS URL {url:?}: {err}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = connect_client(&config, "halobuzz-ledger", addresses.clone()).await?;
        // Reads go over a connection of their own: nats-server reads each
        // connection in one goroutine, and a batched read answered inline
        // would otherwise queue the appends behind it.
        let read_client = connect_client(&config, "halobuzz-ledger-reads", addresses).await?;

        let server_version = client.server_info().version;
        check_server_version(&server_version)?;

        let log = JetStreamLog {
            inner: Arc::new(Inner {
                subject_direct_get: format!("$JS.API.DIRECT.GET.{}", config.stream_name),
                subject_stream_info: format!("$JS.API.STREAM.INFO.{}", config.stream_name),
                multi_last: multi_last::Coalescer::default(),
                read_client,
                client,
                config,
                server_version,
            }),
        };
        log.retrying("ensure stream", || log.ensure_stream()).await?;
        tracing::info!(
            stream = %log.inner.config.stream_name,
            server_version = %log.inner.server_version,
            replicas = log.inner.config.replicas,
            "event log ready"
        );
        Ok(log)
    }

    /// Version of the server this client first connected to.
    pub fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    /// Name of the JetStream stream holding the log.
    pub fn stream_name(&self) -> &str {
        &self.inner.config.stream_name
    }

    /// The settings in use.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// The underlying connection (for health checks and tools).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// Runs `attempt` until it succeeds, fails with something other than
    /// `Unavailable`, or `append_retry_max` retries are spent.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, LogError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LogError>>,
    {
        let retry_max = self.inner.config.append_retry_max;
        let mut tries: u32 = 0;
        loop {
            match attempt().await {
                Err(LogError::Unavailable(reason)) if tries < retry_max => {
                    tries += 1;
                    let delay = self.retry_delay(tries);
                    tracing::warn!(what, tries, delay_ms = delay.as_millis() as u64, %reason, "retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Delay before retry number `tries` (1-based): a cap doubling from
    /// `RETRY_DELAY_MS_MIN` up to `retry_delay_ms_max`, half of it fixed and
    /// half random ("equal jitter"): the fixed half makes the retries span a
    /// leader election (a few seconds) even when every try fails at once
    /// (no responders), the random half spreads the writers out.
    fn retry_delay(&self, tries: u32) -> Duration {
        let cap_ms = RETRY_DELAY_MS_MIN
            .saturating_mul(1_u64 << tries.saturating_sub(1).min(20))
            .min(self.inner.config.retry_delay_ms_max.max(RETRY_DELAY_MS_MIN));
        let half_ms = cap_ms / 2;
        Duration::from_millis(half_ms + rand::rng().random_range(0..=cap_ms - half_ms))
    }

    /// A JetStream API request with a JSON body.
    async fn api<T: DeserializeOwned>(&self, subject: String, body: Bytes) -> Result<ApiReply<T>, LogError> {
        let request = Request::new().payload(body).timeout(Some(self.request_timeout()));
        let reply = self.inner.client.send_request(subject, request).await.map_err(request_error)?;
        decode_reply(&reply.payload)
    }

    async fn ensure_stream(&self) -> Result<(), LogError> {
        let config = &self.inner.config;
        let wanted = config.stream_config();
        match self.api::<StreamInfoReply>(self.inner.subject_stream_info.clone(), Bytes::new()).await? {
            ApiReply::Ok(info) => {
                let found = info.config;
                if found.storage != wanted.storage || found.retention != wanted.retention {
                    return Err(LogError::Invalid(format!(
                        "stream {} exists with storage {:?} and retention {:?}; the ledger needs \
                         file storage and limits retention, which JetStream cannot change in place",
                        config.stream_name, found.storage, found.retention
                    )));
                }
                if found.persist_mode == Some(PersistenceMode::Async) {
                    return Err(LogError::Invalid(format!(
                        "stream {} acknowledges before storing (persist_mode async): an \
                         acknowledged append could be lost, and JetStream cannot change this \
                         in place",
                        config.stream_name
                    )));
                }
                if !stream_matches(&found, &wanted) {
                    tracing::warn!(stream = %config.stream_name, "stream settings differ from the ledger's; updating");
                    let mut update = wanted.clone();
                    // Servers before 2.12 refuse to change it; later ones
                    // would silently reset the operator's choice.
                    update.max_consumers = found.max_consumers;
                    // Keep subjects the operator added: only require ours.
                    for subject in &found.subjects {
                        if !update.subjects.contains(subject) {
                            update.subjects.push(subject.clone());
                        }
                    }
                    self.stream_call("UPDATE", &update).await?;
                }
                Ok(())
            }
            ApiReply::Err(error) if error.err_code == ERR_STREAM_NOT_FOUND => {
                tracing::info!(stream = %config.stream_name, replicas = config.replicas, "creating stream");
                self.stream_call("CREATE", &wanted).await
            }
            ApiReply::Err(error) => Err(classify(&error)),
        }
    }

    async fn stream_call(&self, verb: &str, config: &StreamConfig) -> Result<(), LogError> {
        let body = serde_json::to_vec(config).map_err(|err| LogError::Invalid(format!("stream config: {err}")))?;
        let subject = format!("$JS.API.STREAM.{verb}.{}", config.name);
        match self.api::<StreamInfoReply>(subject, body.into()).await? {
            ApiReply::Ok(info) => {
                if !info.config.allow_atomic_publish || !info.config.allow_direct {
                    // A server that accepts but drops the fields would lose
                    // atomicity silently: refuse instead.
                    return Err(LogError::Invalid(format!(
                        "stream {} was {verb}D without allow_atomic/allow_direct: the server \
                         does not support them",
                        config.name
                    )));
                }
                Ok(())
            }
            // Another instance created it between our look and our create:
            // retrying `ensure_stream` validates theirs.
            ApiReply::Err(error) if error.err_code == ERR_STREAM_NAME_IN_USE && verb == "CREATE" => {
                Err(LogError::Unavailable(format!("stream {} was created concurrently", config.name)))
            }
            ApiReply::Err(error) => match classify(&error) {
                unavailable @ LogError::Unavailable(_) => Err(unavailable),
                _ => Err(LogError::Invalid(format!("cannot {verb} stream {}: {error}", config.name))),
            },
        }
    }

    /// One try of one append; the ack or a classified error.
    async fn append_once(&self, request: &AppendRequest) -> Result<PubAck, LogError> {
        let message = Request::new()
            .headers(append_headers(request))
            .payload(request.payload.clone())
            .timeout(Some(self.request_timeout()));
        let reply = self.inner.client.send_request(request.subject.clone(), message).await.map_err(request_error)?;
        match decode_reply::<PubAck>(&reply.payload)? {
            ApiReply::Ok(ack) => Ok(ack),
            ApiReply::Err(error) if is_wrong_last_sequence(&error) => Err(LogError::Conflict {
                subject: request.subject.clone(),
                expected: request.expected_last_subject_seq,
                current: current_from_description(&error.description),
            }),
            ApiReply::Err(error) => Err(classify(&error)),
        }
    }

    async fn append_with_retries(&self, request: AppendRequest) -> Result<Appended, LogError> {
        validate_append(&request)?;
        let retry_max = self.inner.config.append_retry_max;
        let mut tries: u32 = 0;
        loop {
            match self.append_once(&request).await {
                Ok(ack) if ack.duplicate && tries == 0 => {
                    return Err(LogError::Duplicate { position: ack.seq });
                }
                // A retry acknowledged as a duplicate: an earlier try of THIS
                // append was stored (its ack was lost); the ack carries the
                // original position.
                Ok(ack) => return Ok(Appended { position: ack.seq, found_by_id: ack.duplicate }),
                Err(conflict @ LogError::Conflict { .. }) => {
                    // nats-server checks the expected sequence BEFORE the
                    // message id, so a repeat of a stored append (a retry
                    // after a lost ack, or a repeated command) comes back as
                    // a conflict: its own first copy moved the subject.
                    // Our message, if stored, is the first on the subject
                    // after the expected position; look there.
                    return match self.find_landed(&request).await? {
                        Some(position) if tries > 0 => Ok(Appended { position, found_by_id: true }),
                        Some(position) => Err(LogError::Duplicate { position }),
                        None => Err(conflict),
                    };
                }
                Err(LogError::Unavailable(reason)) if tries < retry_max => {
                    tries += 1;
                    let delay = self.retry_delay(tries);
                    tracing::warn!(
                        subject = %request.subject,
                        msg_id = request.msg_id.as_deref().unwrap_or("(none)"),
                        tries,
                        delay_ms = delay.as_millis() as u64,
                        %reason,
                        "append outcome unknown; retrying the same message"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Where `request` was stored, if it was: our message, if stored, is the
    /// first one on its subject after the position it expected, and carries
    /// our message id (or, for an append without one, our bytes). Asked of the
    /// stream leader (`STREAM.MSG.GET`, not a direct get that a lagging
    /// follower may answer): the answer decides between success and
    /// conflict.
    async fn find_landed(&self, request: &AppendRequest) -> Result<Option<u64>, LogError> {
        #[derive(Deserialize)]
        struct MsgGetReply {
            message: RawStoredMessage,
        }
        #[derive(Deserialize)]
        struct RawStoredMessage {
            seq: u64,
            #[serde(default)]
            hdrs: Option<String>,
            #[serde(default)]
            data: Option<String>,
        }
        let body = serde_json::json!({
            "seq": request.expected_last_subject_seq + 1,
            "next_by_subj": request.subject,
        })
        .to_string();
        let subject = format!("$JS.API.STREAM.MSG.GET.{}", self.inner.config.stream_name);
        let reply = self
            .retrying("find landed append", || self.api::<MsgGetReply>(subject.clone(), body.clone().into()))
            .await?;
        let message = match reply {
            ApiReply::Ok(reply) => reply.message,
            ApiReply::Err(error) if error.err_code == ERR_NO_MESSAGE_FOUND || error.code == 404 => return Ok(None),
            ApiReply::Err(error) => return Err(classify(&error)),
        };
        let ours = match &request.msg_id {
            Some(msg_id) => message.hdrs.as_deref().and_then(msg_id_from_encoded_headers).as_ref() == Some(msg_id),
            None => {
                use base64::Engine as _;
                // The server leaves `data` out for an empty payload.
                let stored = base64::engine::general_purpose::STANDARD.decode(message.data.as_deref().unwrap_or(""));
                stored.is_ok_and(|bytes| bytes == request.payload)
            }
        };
        Ok(ours.then_some(message.seq))
    }

    /// One try of an atomic batch (ADR-50): the first message opens the batch
    /// (a request, answered with an empty reply or an error), the middle ones
    /// are plain publishes, the last commits (a request answered with the
    /// batch's pub ack, whose `seq` is the last message's position).
    async fn append_atomic_once(&self, requests: &[AppendRequest]) -> Result<BatchOutcome, LogError> {
        let batch_id = new_batch_id();
        let last_index = requests.len() - 1;
        for (index, request) in requests.iter().enumerate() {
            let mut headers = append_headers(request);
            headers.insert(HEADER_BATCH_ID, batch_id.as_str());
            headers.insert(HEADER_BATCH_SEQUENCE, (index + 1).to_string());
            if index == last_index {
                headers.insert(HEADER_BATCH_COMMIT, "1");
            }
            if index == 0 || index == last_index {
                let message = Request::new()
                    .headers(headers)
                    .payload(request.payload.clone())
                    .timeout(Some(self.request_timeout()));
                let reply =
                    self.inner.client.send_request(request.subject.clone(), message).await.map_err(request_error)?;
                if index != last_index && reply.payload.is_empty() {
                    continue; // batch opened
                }
                match decode_reply::<PubAck>(&reply.payload)? {
                    ApiReply::Ok(ack) if index == last_index => return Ok(BatchOutcome::Committed(ack)),
                    ApiReply::Ok(_) => continue,
                    ApiReply::Err(error) if is_wrong_last_sequence(&error) => {
                        return Err(self.locate_batch_conflict(requests, &error).await);
                    }
                    ApiReply::Err(error) if error.err_code == ERR_ATOMIC_BATCH_CONTAINS_DUPLICATE => {
                        return Ok(BatchOutcome::DuplicateIds);
                    }
                    ApiReply::Err(error) => return Err(classify(&error)),
                }
            } else {
                self.inner
                    .client
                    .publish_with_headers(request.subject.clone(), headers, request.payload.clone())
                    .await
                    .map_err(|err| LogError::Unavailable(format!("batch publish: {err}")))?;
            }
        }
        Err(LogError::Invalid("empty batch".into()))
    }

    /// The server does not say which message of a batch failed its
    /// expectation; find the first one whose subject moved.
    async fn locate_batch_conflict(&self, requests: &[AppendRequest], error: &ApiError) -> LogError {
        for request in requests {
            if let Ok(last) = self.last_on_subject_once(&request.subject).await {
                let current = last.map_or(0, |message| message.position);
                if current != request.expected_last_subject_seq {
                    return LogError::Conflict {
                        subject: request.subject.clone(),
                        expected: request.expected_last_subject_seq,
                        current: Some(current),
                    };
                }
            }
        }
        // Raced or unreadable: report the first message, with what we know.
        LogError::Conflict {
            subject: requests[0].subject.clone(),
            expected: requests[0].expected_last_subject_seq,
            current: current_from_description(&error.description),
        }
    }

    async fn append_atomic_with_retries(&self, requests: Vec<AppendRequest>) -> Result<Vec<u64>, LogError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if requests.len() > ATOMIC_BATCH_SIZE_MAX {
            return Err(LogError::Invalid(format!(
                "atomic batch of {} messages: at most {ATOMIC_BATCH_SIZE_MAX}",
                requests.len()
            )));
        }
        let mut subjects = HashSet::with_capacity(requests.len());
        for request in &requests {
            validate_append(request)?;
            // The server checks every expectation against the stream as it
            // was before the batch, so a second message on a subject could
            // never carry a correct one.
            if !subjects.insert(request.subject.as_str()) {
                return Err(LogError::Invalid(format!(
                    "atomic batch with two messages on {}: one per subject",
                    request.subject
                )));
            }
        }
        let count = requests.len() as u64;
        let retry_max = self.inner.config.append_retry_max;
        let mut tries: u32 = 0;
        loop {
            match self.append_atomic_once(&requests).await {
                Ok(BatchOutcome::Committed(ack)) => {
                    if ack.count.is_some_and(|stored| stored != count) || ack.seq < count {
                        return Err(LogError::Invalid(format!(
                            "atomic batch of {count} acknowledged as {:?} messages ending at {}",
                            ack.count, ack.seq
                        )));
                    }
                    let first = ack.seq + 1 - count;
                    return Ok((first..=ack.seq).collect());
                }
                // Some message id is already stored: a previous try of this
                // batch (whose ack was lost) or a caller's repeat. Resolve
                // the positions of the stored copy.
                Ok(BatchOutcome::DuplicateIds) => {
                    return match self.find_landed_batch(&requests).await? {
                        Some(positions) if tries > 0 => Ok(positions),
                        Some(positions) => {
                            Err(LogError::Duplicate { position: positions.last().copied().unwrap_or_default() })
                        }
                        None => Err(LogError::Invalid(
                            "atomic batch refused: some of its message ids are already stored, \
                             but not as this batch"
                                .into(),
                        )),
                    };
                }
                // As for single appends: a stored copy of this batch makes
                // its expectations fail.
                Err(conflict @ LogError::Conflict { .. }) => {
                    return match self.find_landed_batch(&requests).await? {
                        Some(positions) if tries > 0 => Ok(positions),
                        Some(positions) => {
                            Err(LogError::Duplicate { position: positions.last().copied().unwrap_or_default() })
                        }
                        None => Err(conflict),
                    };
                }
                Err(LogError::Unavailable(reason)) if tries < retry_max => {
                    tries += 1;
                    let delay = self.retry_delay(tries);
                    tracing::warn!(
                        messages = count,
                        tries,
                        delay_ms = delay.as_millis() as u64,
                        %reason,
                        "atomic batch outcome unknown; retrying with the same message ids"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Positions of a batch stored earlier, if every message of it is found.
    async fn find_landed_batch(&self, requests: &[AppendRequest]) -> Result<Option<Vec<u64>>, LogError> {
        let mut positions = Vec::with_capacity(requests.len());
        for request in requests {
            match self.find_landed(request).await? {
                Some(position) => positions.push(position),
                None => return Ok(None),
            }
        }
        Ok(Some(positions))
    }

    /// One direct get with a JSON request; `None` when nothing matches.
    async fn direct_get(&self, body: String) -> Result<Option<StoredMessage>, LogError> {
        let request = Request::new().payload(body.into()).timeout(Some(self.request_timeout()));
        let reply = self
            .inner
            .client
            .send_request(self.inner.subject_direct_get.clone(), request)
            .await
            .map_err(request_error)?;
        match reply.status.map(|status| status.as_u16()) {
            None | Some(200) => stored_from_direct(reply).map(Some),
            Some(404) => Ok(None),
            Some(503) => Err(LogError::Unavailable(format!("direct get: {}", reply.description.unwrap_or_default()))),
            Some(status) => Err(LogError::Invalid(format!(
                "direct get failed with status {status}: {}",
                reply.description.unwrap_or_default()
            ))),
        }
    }

    async fn last_on_subject_once(&self, subject: &str) -> Result<Option<StoredMessage>, LogError> {
        self.direct_get(serde_json::json!({ "last_by_subj": subject }).to_string()).await
    }

    /// One batched direct get: up to `batch` messages from `position` on.
    /// The server streams them to a private inbox and ends with an empty
    /// `204 EOB` message (or answers `404` when nothing is at or after
    /// `position`).
    async fn direct_get_batch(&self, position: u64, batch: u32) -> Result<Vec<StoredMessage>, LogError> {
        self.direct_get_batch_on(None, position, batch).await
    }

    /// A batched direct get of the messages on `subject` (every subject
    /// when `None`), from `position` on (`next_by_subj`).
    async fn direct_get_batch_on(
        &self,
        subject: Option<&str>,
        position: u64,
        batch: u32,
    ) -> Result<Vec<StoredMessage>, LogError> {
        let batch = batch.clamp(1, DIRECT_GET_BATCH_SIZE_MAX);
        let body = match subject {
            None => serde_json::json!({ "seq": position.max(1), "batch": batch }),
            Some(subject) => serde_json::json!({ "seq": position.max(1), "batch": batch, "next_by_subj": subject }),
        };
        let (messages, _end) = self.batched_direct_get(&self.inner.client, body.to_string(), batch as usize).await?;
        Ok(messages)
    }

    /// Sends one batched direct get on `client` and collects its messages
    /// (at most `messages_max`) up to the end marker, whose headers it
    /// returns (`None` when nothing matched: `404`).
    async fn batched_direct_get(
        &self,
        client: &Client,
        body: String,
        messages_max: usize,
    ) -> Result<(Vec<StoredMessage>, Option<HeaderMap>), LogError> {
        let inbox = client.new_inbox();
        let mut replies =
            client.subscribe(inbox.clone()).await.map_err(|err| LogError::Unavailable(format!("subscribe: {err}")))?;
        client
            .publish_with_reply(self.inner.subject_direct_get.clone(), inbox, body.into())
            .await
            .map_err(|err| LogError::Unavailable(format!("direct get publish: {err}")))?;
        self.collect_batch(&mut replies, messages_max).await
    }

    /// The replies of one batched direct get, up to its end marker.
    async fn collect_batch(
        &self,
        replies: &mut (impl futures_util::Stream<Item = Message> + Unpin),
        messages_max: usize,
    ) -> Result<(Vec<StoredMessage>, Option<HeaderMap>), LogError> {
        let mut messages = Vec::with_capacity(messages_max.min(DIRECT_GET_BATCH_SIZE_MAX as usize));
        // One more reply than messages: the end-of-batch marker.
        for _ in 0..=messages_max {
            let reply = match tokio::time::timeout(self.request_timeout(), replies.next()).await {
                Ok(Some(reply)) => reply,
                Ok(None) => return Err(LogError::Unavailable("connection closed during a batched read".into())),
                Err(_) => {
                    return Err(if messages.is_empty() {
                        // No responders also ends here: nothing answers a
                        // direct get while the stream has no leader.
                        LogError::Unavailable("timed out waiting for a batched read".into())
                    } else {
                        LogError::Unavailable("batched read stalled midway".into())
                    });
                }
            };
            match reply.status.map(|status| status.as_u16()) {
                None | Some(200) => messages.push(stored_from_direct(reply)?),
                Some(204) => return Ok((messages, Some(reply.headers.unwrap_or_default()))),
                Some(404) if messages.is_empty() => return Ok((messages, None)),
                // The server could not load a message it had found.
                Some(404) => {
                    return Err(LogError::Unavailable(format!(
                        "batched read failed midway: {}",
                        reply.description.unwrap_or_default()
                    )));
                }
                Some(503) => {
                    return Err(LogError::Unavailable(format!(
                        "batched read: {}",
                        reply.description.unwrap_or_default()
                    )));
                }
                Some(status) => {
                    return Err(LogError::Invalid(format!(
                        "batched read failed with status {status}: {}",
                        reply.description.unwrap_or_default()
                    )));
                }
            }
        }
        Err(LogError::Invalid(format!(
            "batched read of at most {messages_max} returned more messages without an end marker"
        )))
    }

    /// Up to `max_messages` messages from `position` on, of `subject` only
    /// when given, in batched direct gets.
    async fn read_from_inner(
        &self,
        subject: Option<&str>,
        position: u64,
        max_messages: u32,
    ) -> Result<Vec<StoredMessage>, LogError> {
        let mut out: Vec<StoredMessage> = Vec::with_capacity(max_messages.min(DIRECT_GET_BATCH_SIZE_MAX) as usize);
        let mut next = position.max(1);
        // Each round returns at least one message or ends the read, so at
        // most `max_messages` rounds.
        for _ in 0..max_messages {
            let wanted = max_messages - out.len() as u32;
            if wanted == 0 {
                break;
            }
            let batch = self.retrying("read", || self.direct_get_batch_on(subject, next, wanted)).await?;
            let Some(last) = batch.last() else { break };
            next = last.position + 1;
            out.extend(batch);
        }
        Ok(out)
    }

    async fn last_position_once(&self) -> Result<u64, LogError> {
        match self.api::<StreamInfoReply>(self.inner.subject_stream_info.clone(), Bytes::new()).await? {
            ApiReply::Ok(info) => Ok(info.state.last_seq),
            ApiReply::Err(error) => Err(classify(&error)),
        }
    }

    /// The messages of an ordered consumer from `start` (a position, 1 or
    /// more). Creating the consumer is a JetStream API request, so it goes
    /// through the bounded retries like every other read: right after a
    /// leader change it can time out. `read_stream` and replay-tools' export
    /// (which keeps every header verbatim) read through this.
    pub async fn ordered_messages(
        &self,
        start: u64,
    ) -> Result<async_nats::jetstream::consumer::pull::Ordered, LogError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let context = async_nats::jetstream::new(self.inner.client.clone());
        self.retrying("ordered consumer", || async {
            let stream = context
                .get_stream_no_info(self.stream_name())
                .await
                .map_err(|err| LogError::Unavailable(format!("stream: {err}")))?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start.max(1) },
                    ..OrderedConfig::default()
                })
                .await
                .map_err(|err| LogError::Unavailable(format!("creating the ordered consumer: {err}")))?;
            consumer
                .messages()
                .await
                .map_err(|err| LogError::Unavailable(format!("pulling from the ordered consumer: {err}")))
        })
        .await
    }

    /// [`EventLog::read_stream`]: an ordered pull consumer (an ephemeral,
    /// flow-controlled, server-side cursor that the client recreates on a
    /// gap) from `position`, stopped at the log's end. Twice as fast as
    /// batched direct gets in the benchmark: its messages carry their
    /// position in the reply subject instead of five headers to parse.
    fn read_stream_ordered(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        let log = self.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<StoredMessage, LogError>>(1_024);
        tokio::spawn(async move {
            let run = async {
                let end = log.retrying("last position", || log.last_position_once()).await?;
                let start = position.max(1);
                if start > end {
                    return Ok(());
                }
                let mut messages = log.ordered_messages(start).await?;
                // Bounded: one message per round, stops at `end`.
                while let Some(message) = messages.next().await {
                    let message =
                        message.map_err(|err| LogError::Unavailable(format!("reading the ordered consumer: {err}")))?;
                    let info = message.info().map_err(|err| LogError::Invalid(format!("ordered consumer: {err}")))?;
                    let position = info.stream_sequence;
                    let nanos = info.published.unix_timestamp_nanos();
                    let timestamp = DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(i64::MAX));
                    let msg_id =
                        message.headers.as_ref().and_then(|headers| header(headers, HEADER_MSG_ID)).map(str::to_owned);
                    let stored = StoredMessage {
                        position,
                        subject: message.subject.to_string(),
                        payload: message.payload.clone(),
                        msg_id,
                        timestamp,
                    };
                    // `pending` 0: caught up (also ends the read if the last
                    // messages were deleted, where `end` would never come).
                    let caught_up = position >= end || info.pending == 0;
                    if sender.send(Ok(stored)).await.is_err() || caught_up {
                        break;
                    }
                }
                Ok::<(), LogError>(())
            };
            if let Err(error) = run.await {
                let _ = sender.send(Err(error)).await;
            }
        });
        receiver_stream(receiver).boxed()
    }

    /// Like [`EventLog::read_stream`], but through batched direct gets (up to
    /// 8,192 messages per request, one batch prefetched). Stateless on the
    /// server, and served by any replica; half as fast as the ordered
    /// consumer in the benchmark. Kept for comparison and for servers where
    /// consumers are not allowed.
    pub fn read_stream_direct_get(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        let log = self.clone();
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<Result<Vec<StoredMessage>, LogError>>(READ_STREAM_PREFETCH_BATCHES);
        tokio::spawn(async move {
            let end = match log.retrying("last position", || log.last_position_once()).await {
                Ok(end) => end,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let mut next = position.max(1);
            // Each round advances `next` by at least one, up to `end`.
            while next <= end {
                let wanted = u32::try_from(end - next + 1).unwrap_or(u32::MAX).min(DIRECT_GET_BATCH_SIZE_MAX);
                // Nothing where the leader said there is: the direct get was
                // answered by a follower still catching up. Retry (bounded)
                // rather than end the stream early.
                let read = || async {
                    let batch = log.direct_get_batch(next, wanted).await?;
                    if batch.is_empty() {
                        return Err(LogError::Unavailable(format!(
                            "no message at position {next} yet (replica behind)"
                        )));
                    }
                    Ok(batch)
                };
                match log.retrying("read", read).await {
                    Ok(mut batch) => {
                        batch.retain(|message| message.position <= end);
                        let Some(last) = batch.last() else { break };
                        next = last.position + 1;
                        if sender.send(Ok(batch)).await.is_err() {
                            return; // the reader went away
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        });
        receiver_stream(receiver)
            .flat_map(|batch| {
                let items: Vec<Result<StoredMessage, LogError>> = match batch {
                    Ok(messages) => messages.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                futures_util::stream::iter(items)
            })
            .boxed()
    }
}

fn receiver_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )
}

/// Compares the settings the ledger cares about.
fn stream_matches(found: &StreamConfig, wanted: &StreamConfig) -> bool {
    wanted.subjects.iter().all(|subject| found.subjects.contains(subject))
        && found.num_replicas == wanted.num_replicas
        && found.max_messages < 0
        && found.max_bytes < 0
        && found.max_messages_per_subject < 0
        && found.max_age.is_zero()
        && found.duplicate_window == wanted.duplicate_window
        && found.allow_direct
        && found.allow_atomic_publish
        && found.deny_delete == wanted.deny_delete
        && found.deny_purge == wanted.deny_purge
}

impl EventLog for JetStreamLog {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>> {
        self.append_with_retries(request).boxed()
    }

    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        self.append_atomic_with_retries(requests).boxed()
    }

    fn last_on_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Option<StoredMessage>, LogError>> {
        self.retrying("last on subject", move || self.last_on_subject_once(subject)).boxed()
    }

    fn last_on_subjects<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        self.retrying("last on subjects", move || self.last_on_subjects_once(subjects)).boxed()
    }

    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<StoredMessage>, LogError>> {
        self.read_from_inner(None, position, max_messages).boxed()
    }

    fn read_subject_from<'a>(
        &'a self,
        subject: &'a str,
        position: u64,
        max_messages: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, LogError>> {
        self.read_from_inner(Some(subject), position, max_messages).boxed()
    }

    fn read_stream(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        self.read_stream_ordered(position)
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, LogError>> {
        self.retrying("last position", || self.last_position_once()).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_both_formats() {
        let go = parse_timestamp("2022-08-06 00:29:27.587861324 +0000 UTC").expect("go format");
        let rfc = parse_timestamp("2022-08-06T00:29:27.587861324Z").expect("rfc 3339");
        assert_eq!(go, rfc);
        assert_eq!(go.timestamp(), 1_659_745_767);
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn conflict_descriptions_yield_the_current_position() {
        assert_eq!(current_from_description("wrong last sequence: 12"), Some(12));
        assert_eq!(current_from_description("wrong last sequence"), None);
    }

    #[test]
    fn errors_are_classified() {
        let error = |code, err_code| ApiError { code, err_code, description: String::new() };
        assert!(classify(&error(503, ERR_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY)).is_unavailable());
        assert!(classify(&error(503, 10_999)).is_unavailable());
        assert!(classify(&error(500, ERR_CLUSTER_NOT_AVAILABLE)).is_unavailable());
        assert!(!classify(&error(400, 10_999)).is_unavailable());
        assert!(is_wrong_last_sequence(&error(400, ERR_WRONG_LAST_SEQUENCE)));
        // In flight elsewhere: retried, not reported as a conflict at once.
        assert!(!is_wrong_last_sequence(&error(400, ERR_WRONG_LAST_SEQUENCE_CONSTANT)));
        assert!(classify(&error(400, ERR_WRONG_LAST_SEQUENCE_CONSTANT)).is_unavailable());
    }

    #[test]
    fn msg_ids_are_found_in_encoded_headers() {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD
            .encode("NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 3\r\nNats-Msg-Id: cmd-42\r\n\r\n");
        assert_eq!(msg_id_from_encoded_headers(&encoded).as_deref(), Some("cmd-42"));
        let without = base64::engine::general_purpose::STANDARD.encode("NATS/1.0\r\nOther: x\r\n\r\n");
        assert_eq!(msg_id_from_encoded_headers(&without), None);
        assert_eq!(msg_id_from_encoded_headers("not base64!"), None);
    }

    #[test]
    fn only_an_append_expecting_an_empty_subject_may_go_without_a_message_id() {
        let append = |msg_id: Option<&str>, expected| AppendRequest {
            subject: "hb.command.abc".into(),
            payload: Bytes::from_static(b"record"),
            msg_id: msg_id.map(str::to_owned),
            expected_last_subject_seq: expected,
        };
        assert_eq!(validate_append(&append(None, 0)), Ok(()));
        assert_eq!(validate_append(&append(Some("cmd-1"), 7)), Ok(()));
        assert!(matches!(validate_append(&append(None, 7)), Err(LogError::Invalid(_))));
        assert!(matches!(validate_append(&append(Some(""), 0)), Err(LogError::Invalid(_))));
        assert!(matches!(validate_append(&append(Some("a b"), 0)), Err(LogError::Invalid(_))));
    }

    #[test]
    fn batch_ids_are_random() {
        let (a, b) = (new_batch_id(), new_batch_id());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
