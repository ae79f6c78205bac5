//! Reads: direct gets (one subject's last message, batches from a
//! position), the ordered consumer of `read_stream`, the log's last
//! position.

use async_nats::{Client, HeaderMap, Message, Request};
use bytes::Bytes;
use chrono::DateTime;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::JetStreamLog;
use super::wire::{ApiReply, HEADER_MSG_ID, StreamInfoReply, classify, header, request_error, stored_from_direct};
use crate::log::{LogError, StoredMessage};

/// Batches a single direct get may return; larger reads are split. Bounded so
/// that one reply burst stays well inside the client's subscription buffer
/// (65,536 messages by default).
pub(super) const DIRECT_GET_BATCH_SIZE_MAX: u32 = 8_192;
/// Batches read ahead by `read_stream` while the caller consumes one.
pub(super) const READ_STREAM_PREFETCH_BATCHES: usize = 2;

impl JetStreamLog {
    /// One direct get with a JSON request; `None` when nothing matches.
    pub(super) async fn direct_get(&self, body: String) -> Result<Option<StoredMessage>, LogError> {
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

    pub(super) async fn last_on_subject_once(&self, subject: &str) -> Result<Option<StoredMessage>, LogError> {
        self.direct_get(serde_json::json!({ "last_by_subj": subject }).to_string()).await
    }

    /// One batched direct get: up to `batch` messages from `position` on.
    /// The server streams them to a private inbox and ends with an empty
    /// `204 EOB` message (or answers `404` when nothing is at or after
    /// `position`).
    pub(super) async fn direct_get_batch(&self, position: u64, batch: u32) -> Result<Vec<StoredMessage>, LogError> {
        self.direct_get_batch_on(None, position, batch).await
    }

    /// A batched direct get of the messages on `subject` (every subject
    /// when `None`), from `position` on (`next_by_subj`).
    pub(super) async fn direct_get_batch_on(
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
    pub(super) async fn batched_direct_get(
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
    pub(super) async fn collect_batch(
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
    pub(super) async fn read_from_inner(
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

    pub(super) async fn last_position_once(&self) -> Result<u64, LogError> {
        Ok(self.state_once().await?.0)
    }

    /// The last position, and how many messages the stream holds.
    async fn state_once(&self) -> Result<(u64, u64), LogError> {
        match self.api::<StreamInfoReply>(self.inner.subject_stream_info.clone(), Bytes::new()).await? {
            ApiReply::Ok(info) => Ok((info.state.last_seq, info.state.messages)),
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
    pub(super) fn read_stream_ordered(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        let log = self.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<StoredMessage, LogError>>(1_024);
        tokio::spawn(async move {
            let run = async {
                let (end, held) = log.retrying("last position", || log.state_once()).await?;
                let start = position.max(1);
                // Nothing held: every record of the records stream expired.
                if start > end || held == 0 {
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
