//! The JetStream adapter of the event-log port.
//!
//! Appends, direct gets and stream management go through the raw JetStream
//! API (`$JS.API...` requests and publishes with headers) rather than
//! async-nats' typed helpers: the raw replies carry the JetStream error codes
//! we classify on (10071 wrong last sequence, 10163 not ready, ...), and
//! async-nats 0.51 has no atomic-batch publisher nor batched direct get.
//!
//! This module connects and keeps the stream's settings; `config` holds
//! [`LogConfig`], `wire` the pure part (headers, error codes, reply
//! decoding and error classification), `append` the appends and atomic
//! batches, `read` the direct gets and the ordered consumer, and
//! `multi_last` the coalesced reads of several subjects' last messages.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, PersistenceMode};
use async_nats::{Client, ConnectOptions, Request, ServerAddr};
use backon::Retryable as _;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde::de::DeserializeOwned;

mod append;
mod config;
mod consistent;
mod multi_last;
mod read;
mod wire;

pub use self::config::LogConfig;
use self::config::stream_matches;
use self::wire::{
    ApiReply, ERR_STREAM_NAME_IN_USE, ERR_STREAM_NOT_FOUND, StreamInfoReply, classify, decode_reply, request_error,
};
use super::{AppendRequest, Appended, EventLog, LogError, StoredMessage, check_server_version};

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
    /// `STREAM.MSG.GET`: answered by the stream leader only.
    subject_msg_get: String,
    /// The highest position this process has seen appended or read: the
    /// fence of reads on a replicated stream (see `consistent.rs`).
    seen_position: std::sync::atomic::AtomicU64,
    /// Callers waiting for a coalesced `last_on_subjects`.
    multi_last: multi_last::Coalescer,
    /// The stream of command records (`hbcmd.>`), on the same connections;
    /// `None` in the records stream's own adapter.
    records: Option<JetStreamLog>,
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

async fn connect_client(config: &LogConfig, name: &str, addresses: Vec<ServerAddr>) -> Result<Client, LogError> {
    let options = match &config.token {
        Some(token) => ConnectOptions::with_token(token.0.clone()),
        None => ConnectOptions::new(),
    };
    options
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
        if config.max_age_ms != 0 {
            return Err(LogError::Invalid("the ledger's stream keeps every message: max_age_ms must be 0".into()));
        }
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

        let records_config = config.records_stream();
        records_config.validate()?;
        let records = JetStreamLog::on_connections(
            client.clone(),
            read_client.clone(),
            records_config,
            server_version.clone(),
            None,
        );
        let log = JetStreamLog::on_connections(client, read_client, config, server_version, Some(records.clone()));
        log.retrying("ensure stream", || log.ensure_stream()).await?;
        records.retrying("ensure stream", || records.ensure_stream()).await?;
        tracing::info!(
            stream = %log.inner.config.stream_name,
            server_version = %log.inner.server_version,
            replicas = log.inner.config.replicas,
            idempotency_horizon_ms = log.inner.config.idempotency_horizon_ms,
            "event log ready"
        );
        Ok(log)
    }

    fn on_connections(
        client: Client,
        read_client: Client,
        config: LogConfig,
        server_version: String,
        records: Option<JetStreamLog>,
    ) -> JetStreamLog {
        JetStreamLog {
            inner: Arc::new(Inner {
                subject_direct_get: format!("$JS.API.DIRECT.GET.{}", config.stream_name),
                subject_stream_info: format!("$JS.API.STREAM.INFO.{}", config.stream_name),
                subject_msg_get: format!("$JS.API.STREAM.MSG.GET.{}", config.stream_name),
                seen_position: std::sync::atomic::AtomicU64::new(0),
                multi_last: multi_last::Coalescer::default(),
                read_client,
                client,
                config,
                server_version,
                records,
            }),
        }
    }

    /// The adapter of the stream holding `subject`: the records stream for
    /// `hbcmd.` subjects, else this one.
    fn holding(&self, subject: &str) -> &JetStreamLog {
        match &self.inner.records {
            Some(records) if LogConfig::is_record_subject(subject) => records,
            _ => self,
        }
    }

    /// The adapter of the command records' stream (its name, its figures).
    pub fn records(&self) -> Option<&JetStreamLog> {
        self.inner.records.as_ref()
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
    /// `Unavailable`, or the retries of the configuration's schedule
    /// (`LogConfig::retry_schedule`) are spent.
    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, LogError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LogError>>,
    {
        attempt
            .retry(self.inner.config.retry_schedule())
            .when(LogError::is_unavailable)
            .notify(|error, delay| {
                let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                tracing::warn!(what, delay_ms, %error, "retrying");
            })
            .await
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
                    // The records' horizon is a floor (see `stream_matches`).
                    if !wanted.max_age.is_zero() {
                        update.max_age = found.max_age.max(wanted.max_age);
                    }
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
}

impl EventLog for JetStreamLog {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>> {
        async move {
            let log = self.holding(&request.subject);
            let appended = log.append_with_retries(request).await?;
            log.observe(appended.position);
            Ok(appended)
        }
        .boxed()
    }

    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        async move {
            if let Some(request) = requests.iter().find(|r| !std::ptr::eq(self.holding(&r.subject), self)) {
                return Err(LogError::Invalid(format!(
                    "{} is a command record's subject: records are never in a ledger batch",
                    request.subject
                )));
            }
            let positions = self.append_atomic_with_retries(requests).await?;
            if let Some(last) = positions.iter().max() {
                self.observe(*last);
            }
            Ok(positions)
        }
        .boxed()
    }

    fn last_on_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Option<StoredMessage>, LogError>> {
        let log = self.holding(subject);
        log.retrying("last on subject", move || log.last_on_subject_consistent_once(subject)).boxed()
    }

    fn last_on_subjects<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        self.last_on_subjects_appended_expecting_empty(subjects, 0)
    }

    fn last_on_subjects_appended_expecting_empty<'a>(
        &'a self,
        subjects: &'a [String],
        appended_expecting_empty: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        async move {
            let Some(records) = &self.inner.records else {
                return self.last_on_subjects_here(subjects, appended_expecting_empty).await;
            };
            let (in_records, here): (Vec<usize>, Vec<usize>) =
                (0..subjects.len()).partition(|index| LogConfig::is_record_subject(&subjects[*index]));
            if in_records.is_empty() {
                return self.last_on_subjects_here(subjects, appended_expecting_empty).await;
            }
            // Records are only ever appended expecting their subject empty;
            // of the ledger's subjects, those among the caller's last ones.
            let expecting_from = subjects.len().saturating_sub(appended_expecting_empty);
            let here_expecting = here.iter().filter(|index| **index >= expecting_from).count();
            let here_subjects: Vec<String> = here.iter().map(|index| subjects[*index].clone()).collect();
            let record_subjects: Vec<String> = in_records.iter().map(|index| subjects[*index].clone()).collect();
            let (found_here, found_records) = futures_util::future::try_join(
                async {
                    if here_subjects.is_empty() {
                        Ok(Vec::new())
                    } else {
                        self.last_on_subjects_here(&here_subjects, here_expecting).await
                    }
                },
                records.last_on_subjects_here(&record_subjects, record_subjects.len()),
            )
            .await?;
            let mut found: Vec<Option<StoredMessage>> = vec![None; subjects.len()];
            for (index, message) in here.into_iter().zip(found_here).chain(in_records.into_iter().zip(found_records)) {
                found[index] = message;
            }
            Ok(found)
        }
        .boxed()
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
        self.holding(subject).read_from_inner(Some(subject), position, max_messages).boxed()
    }

    fn read_stream(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        self.read_stream_ordered(position)
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, LogError>> {
        self.retrying("last position", || self.last_position_once()).boxed()
    }
}

impl JetStreamLog {
    /// `last_on_subjects` on this adapter's own stream.
    async fn last_on_subjects_here(
        &self,
        subjects: &[String],
        appended_expecting_empty: usize,
    ) -> Result<Vec<Option<StoredMessage>>, LogError> {
        self.retrying("last on subjects", move || {
            self.last_on_subjects_consistent_once(subjects, appended_expecting_empty)
        })
        .await
    }
}
