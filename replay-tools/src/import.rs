//! `import`: an export file back into the log's stream, verbatim: the same
//! subjects, payloads, headers and positions.
//!
//! - **Verified while read**: every message goes through the hash-chain
//!   verifier before it is published; the first that fails stops the
//!   import with its position and subject. Nothing after it is written.
//! - **Empty stream only**, unless `--resume`: a stream that already holds
//!   messages is refused, except when it holds exactly a prefix of this
//!   file (an interrupted import), which `--resume` checks message by
//!   message and continues after.
//! - **Headers verbatim**: JetStream stores the headers a message was
//!   published with, so they are sent again as they are: the `Nats-Msg-Id`
//!   when there is one (the command side recognises its own appends by it) and the original
//!   `Nats-Expected-Last-Subject-Sequence`, which the server checks again
//!   and which holds again, positions being the same: each subject's chain
//!   is re-checked by the server too. The messages of an atomic batch
//!   (stored with their `Nats-Batch-Id`, `-Sequence` and `-Commit` headers)
//!   are sent again as the same atomic batch, with the same headers. No
//!   header is added (an added expectation would be stored and make the
//!   copy differ).
//! - **Exact positions**: publishes are pipelined (a bounded number in
//!   flight, acks awaited in order) on one connection, which the server
//!   stores in order; every ack must carry the message's original position.
//!   The first that does not (another writer, a lost publish) stops the
//!   import: the stream then needs `--resume` (when it holds a prefix of
//!   the file, which resume checks message by message) or, when it does
//!   not, to be deleted and imported again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use async_nats::HeaderMap;
use commands::log::{EventLog, JetStreamLog};
use futures_util::StreamExt;
use serde::Serialize;

use crate::archive::{ArchiveReader, ArchivedMessage, Item};
use crate::chain::{ChainVerifier, HashChecked, hash_check};
use crate::export::rate;
use crate::progress::Progress;

/// Publishes awaiting their ack, at most.
const IMPORT_IN_FLIGHT_MAX: usize = 1_024;
const IMPORT_BATCH_MESSAGES: usize = 1_024;
const IMPORT_QUEUE_BATCHES: usize = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Continue an interrupted import of the same file.
    pub resume: bool,
    /// Read and verify the file; write nothing.
    pub dry_run: bool,
}

/// What `import` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    pub file: PathBuf,
    pub stream: String,
    /// Messages in the file.
    pub events: u64,
    /// Messages found already imported (`--resume`) and checked.
    pub already_present: u64,
    /// Messages written now.
    pub written: u64,
    pub subjects: u64,
    pub last_position: u64,
    pub dry_run: bool,
    pub seconds: f64,
    pub events_per_second: u64,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "the stream {stream} already holds {messages} messages: import writes only into an empty stream (use --resume to continue an interrupted import of this same file)"
    )]
    NotEmpty { stream: String, messages: u64 },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A batch read and verified by the reading thread.
type Batch = Result<Vec<ArchivedMessage>, String>;

/// Reads, verifies and hands over every message of `input` (blocking).
/// The reading thread's error when the writing side stopped first (the
/// writer's own error is then the one to report).
const READER_STOPPED: &str = "the import stopped";

fn read_verified(input: PathBuf, sender: tokio::sync::mpsc::Sender<Batch>) -> Result<(u64, u64, u64), String> {
    let mut reader = ArchiveReader::open(&input).map_err(|e| e.to_string())?;
    let mut verifier = ChainVerifier::new();
    let mut expected = reader.header().first_position.max(1);
    if expected != 1 {
        return Err(format!("the file starts at position {expected}: only whole logs (from 1) can be imported"));
    }
    let mut pending: Vec<ArchivedMessage> = Vec::with_capacity(IMPORT_BATCH_MESSAGES);
    // Bounded by the file's length.
    loop {
        let item = reader.next_item().map_err(|e| e.to_string())?;
        let end = match item {
            Item::Message(message) => {
                if message.position != expected {
                    return Err(format!(
                        "the file jumps from position {} to {}: not a whole log",
                        expected - 1,
                        message.position
                    ));
                }
                expected += 1;
                pending.push(message);
                None
            }
            Item::End(trailer) => Some(trailer),
        };
        if pending.len() >= IMPORT_BATCH_MESSAGES || (end.is_some() && !pending.is_empty()) {
            // Each message's own hash in parallel, then the links in order.
            let checked = hash_check_parallel(&pending);
            for (message, checked) in pending.iter().zip(checked) {
                verifier.link(message.position, &message.subject, checked).map_err(|e| {
                    format!("hash chain check failed at position {}, subject {}: {}", e.position, e.subject, e.fault)
                })?;
            }
            if sender.blocking_send(Ok(std::mem::take(&mut pending))).is_err() {
                return Err(READER_STOPPED.into());
            }
        }
        if let Some(trailer) = end {
            return Ok((trailer.count, trailer.last_position, verifier.subjects()));
        }
    }
}

/// `hash_check` of every message, on this thread and one more.
fn hash_check_parallel(messages: &[ArchivedMessage]) -> Vec<HashChecked> {
    let (first, second) = messages.split_at(messages.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| second.iter().map(|m| hash_check(&m.payload)).collect::<Vec<_>>());
        let mut out: Vec<HashChecked> = first.iter().map(|m| hash_check(&m.payload)).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            // A panic in the helper: check the second half here.
            Err(_) => out.extend(second.iter().map(|m| hash_check(&m.payload))),
        }
        out
    })
}

/// Reads and verifies `input` without writing anything.
pub async fn verify_file(input: &Path, progress: &Progress) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let header = ArchiveReader::open(input).map_err(|e| ImportError::Refused(e.to_string()))?.header().clone();
    progress.set_total(header.last_position);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(IMPORT_QUEUE_BATCHES);
    let path = input.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || read_verified(path, sender));
    let mut seen = 0u64;
    while let Some(batch) = receiver.recv().await {
        seen += batch.map_err(ImportError::Refused)?.len() as u64;
        progress.set(seen);
    }
    let (count, last, subjects) =
        reading.await.map_err(|e| anyhow::anyhow!("reading thread: {e}"))?.map_err(ImportError::Refused)?;
    progress.finish();
    Ok(ImportSummary {
        file: input.to_path_buf(),
        stream: header.stream,
        events: count,
        already_present: 0,
        written: 0,
        subjects,
        last_position: last,
        dry_run: true,
        seconds: started.elapsed().as_secs_f64(),
        events_per_second: rate(count, started),
    })
}

/// Imports `input` into the log's stream.
pub async fn import(
    log: &JetStreamLog,
    input: &Path,
    options: ImportOptions,
    progress: &Progress,
) -> Result<ImportSummary, ImportError> {
    if options.dry_run {
        return verify_file(input, progress).await;
    }
    let started = Instant::now();
    let header = ArchiveReader::open(input).map_err(|e| ImportError::Refused(e.to_string()))?.header().clone();
    let present = log.last_position().await.context("reading the stream's last position")?;
    if present > 0 && !options.resume {
        return Err(ImportError::NotEmpty { stream: log.stream_name().to_string(), messages: present });
    }
    if present > header.last_position {
        return Err(ImportError::Refused(format!(
            "the stream holds {present} messages, more than the file's {}: it is not an interrupted import of this file",
            header.last_position
        )));
    }
    progress.set_total(header.last_position);

    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(IMPORT_QUEUE_BATCHES);
    let path = input.to_path_buf();
    let reading = tokio::task::spawn_blocking(move || read_verified(path, sender));
    let context = async_nats::jetstream::new(log.client().clone());
    let mut stored = log.read_stream(1);
    let mut in_flight: std::collections::VecDeque<(u64, String, async_nats::jetstream::context::PublishAckFuture)> =
        std::collections::VecDeque::with_capacity(IMPORT_IN_FLIGHT_MAX);
    let mut written = 0u64;
    let mut checked = 0u64;
    let mut batch_open: Vec<ArchivedMessage> = Vec::new();
    let mut done = 0u64;
    let run = async {
        while let Some(batch) = receiver.recv().await {
            for message in batch.map_err(ImportError::Refused)? {
                if message.position <= present {
                    // Resuming: this one must already be there, identical.
                    let found = stored
                        .next()
                        .await
                        .ok_or_else(|| {
                            ImportError::Refused(format!("the stream ends before position {}", message.position))
                        })?
                        .context("reading the stream")?;
                    if found.position != message.position
                        || found.subject != message.subject
                        || found.payload != message.payload
                        || found.msg_id.as_deref() != message.msg_id()
                    {
                        return Err(ImportError::Refused(format!(
                            "cannot resume: the stream's message at position {} ({}) is not the file's ({}): the \
                             stream does not hold an interrupted import of this file",
                            found.position, found.subject, message.subject
                        )));
                    }
                    checked += 1;
                } else if header_value(&message, HEADER_BATCH_ID).is_some() {
                    // An atomic batch: gather it whole, then send it as one.
                    let commit = header_value(&message, HEADER_BATCH_COMMIT).is_some();
                    batch_open.push(message);
                    if commit {
                        while let Some((position, subject, ack)) = in_flight.pop_front() {
                            settle(position, &subject, ack.await)?;
                            written += 1;
                        }
                        written += publish_batch_again_if_stale(log, &std::mem::take(&mut batch_open)).await?;
                    }
                } else {
                    if let Some(open) = batch_open.first() {
                        return Err(ImportError::Refused(format!(
                            "the atomic batch starting at position {} has no commit message",
                            open.position
                        )));
                    }
                    let ack = context
                        .publish_with_headers(message.subject.clone(), headers_of(&message), message.payload.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("publishing position {}: {e}", message.position))?;
                    in_flight.push_back((message.position, message.subject, ack));
                    if in_flight.len() >= IMPORT_IN_FLIGHT_MAX
                        && let Some((position, subject, ack)) = in_flight.pop_front()
                    {
                        settle(position, &subject, ack.await)?;
                        written += 1;
                    }
                }
                done += 1;
                if done.is_multiple_of(1_024) {
                    progress.set(done);
                }
            }
        }
        while let Some((position, subject, ack)) = in_flight.pop_front() {
            settle(position, &subject, ack.await)?;
            written += 1;
        }
        if let Some(open) = batch_open.first() {
            return Err(ImportError::Refused(format!(
                "the atomic batch starting at position {} has no commit message",
                open.position
            )));
        }
        Ok::<(), ImportError>(())
    };
    let result = run.await;
    if result.is_err() {
        // Let the publishes already sent settle, so that the stream is in
        // its final state when the error is reported (and `--resume` sees
        // it as it will stay).
        while let Some((_, _, ack)) = in_flight.pop_front() {
            let _ = ack.await;
        }
    }
    drop(receiver);
    let read = reading.await.map_err(|e| anyhow::anyhow!("reading thread: {e}"))?;
    // A file the reader refused (an altered or cut message) is the cause of
    // whatever the writing side saw after the reader stopped (an atomic
    // batch that never got its commit message): the reader's refusal names
    // the culprit, so it is the one reported.
    if result.is_err()
        && let Err(refused) = &read
        && refused != READER_STOPPED
    {
        return Err(ImportError::Refused(refused.clone()));
    }
    result?;
    let (count, last, subjects) = read.map_err(ImportError::Refused)?;
    let now_last = log.last_position().await.context("reading the stream's last position")?;
    if now_last != last {
        return Err(ImportError::Refused(format!(
            "after the import the stream ends at {now_last}, the file at {last}: another writer appended meanwhile"
        )));
    }
    progress.set(done);
    progress.finish();
    Ok(ImportSummary {
        file: input.to_path_buf(),
        stream: log.stream_name().to_string(),
        events: count,
        already_present: checked,
        written,
        subjects,
        last_position: last,
        dry_run: false,
        seconds: started.elapsed().as_secs_f64(),
        events_per_second: rate(count, started),
    })
}

const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";

fn header_value<'a>(message: &'a ArchivedMessage, name: &str) -> Option<&'a str> {
    message.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The message's stored headers, as they were.
fn headers_of(message: &ArchivedMessage) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &message.headers {
        headers.append(name.as_str(), value.as_str());
    }
    headers
}

/// The server's answer to a batch whose id it still holds, incomplete,
/// from an import that stopped in the middle of sending it.
const ERR_ATOMIC_BATCH_INCOMPLETE: &str = "\"err_code\":10176";
/// How long the server keeps an incomplete atomic batch before dropping it
/// (nats-server's 10 s batch timeout), and a margin.
const STALE_BATCH_WAIT_MS: u64 = 11_000;

/// `publish_batch`, sent once more after the server dropped a stale batch:
/// an interrupted import may have left the same batch id open on the
/// server (its first messages sent, never committed, nothing stored), and
/// a resume sending it again within the server's batch timeout is refused
/// as incomplete. Nothing of a refused batch is stored, so sending it
/// again once the stale one is dropped is safe. One retry, bounded.
async fn publish_batch_again_if_stale(log: &JetStreamLog, batch: &[ArchivedMessage]) -> Result<u64, ImportError> {
    match publish_batch(log, batch).await {
        Err(ImportError::Refused(detail)) if detail.contains(ERR_ATOMIC_BATCH_INCOMPLETE) => {
            tracing::warn!(%detail, "an atomic batch left open by an interrupted import: sending it again");
            tokio::time::sleep(std::time::Duration::from_millis(STALE_BATCH_WAIT_MS)).await;
            publish_batch(log, batch).await
        }
        other => other,
    }
}

/// Sends the messages of one atomic batch again, as one atomic batch with
/// their original headers (ADR-50: the first and the last are requests,
/// the middle ones plain publishes); returns how many were stored.
async fn publish_batch(log: &JetStreamLog, batch: &[ArchivedMessage]) -> Result<u64, ImportError> {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        error: Option<serde_json::Value>,
    }
    let client = log.client();
    let last_index = batch.len().saturating_sub(1);
    let first_position = batch.first().map_or(0, |m| m.position);
    for (index, message) in batch.iter().enumerate() {
        let refused = |detail: String| {
            ImportError::Refused(format!(
                "the atomic batch at positions {first_position}..={} ({}) was refused: {detail}",
                first_position + last_index as u64,
                message.subject
            ))
        };
        if index == 0 || index == last_index {
            let request = async_nats::Request::new()
                .headers(headers_of(message))
                .payload(message.payload.clone())
                .timeout(Some(std::time::Duration::from_millis(log.config().request_timeout_ms)));
            let reply =
                client.send_request(message.subject.clone(), request).await.map_err(|e| refused(e.to_string()))?;
            if index != last_index && reply.payload.is_empty() {
                continue; // the batch is open
            }
            let reply: Reply =
                serde_json::from_slice(&reply.payload).map_err(|e| refused(format!("unreadable reply: {e}")))?;
            if let Some(error) = reply.error {
                return Err(refused(error.to_string()));
            }
            if index == last_index && reply.seq != message.position {
                return Err(refused(format!("stored ending at {}, not {}", reply.seq, message.position)));
            }
        } else {
            client
                .publish_with_headers(message.subject.clone(), headers_of(message), message.payload.clone())
                .await
                .map_err(|e| refused(e.to_string()))?;
        }
    }
    Ok(batch.len() as u64)
}

fn settle(
    position: u64,
    subject: &str,
    ack: Result<async_nats::jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError>,
) -> Result<(), ImportError> {
    match ack {
        Ok(ack) if ack.sequence == position && !ack.duplicate => Ok(()),
        Ok(ack) if ack.duplicate => Err(ImportError::Refused(format!(
            "position {position} ({subject}) was taken for a duplicate of position {} (same Nats-Msg-Id inside the \
             duplicate window)",
            ack.sequence
        ))),
        Ok(ack) => Err(ImportError::Refused(format!(
            "position {position} ({subject}) was stored at {}: the stream moved under the import",
            ack.sequence
        ))),
        Err(e) => Err(ImportError::Refused(format!(
            "position {position} ({subject}) was refused: {e} (another writer on the stream? stop it and run import \
             --resume)"
        ))),
    }
}
