//! `export`: the whole log, in order, to a compressed file (see `archive`).
//!
//! An ordered consumer reads the stream from position 1 up to its last
//! position as it was at the start; a blocking thread frames and compresses
//! what arrives, so that reading and compressing overlap. Nothing is
//! written to the log.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use commands::log::{EventLog, JetStreamLog};
use futures_util::StreamExt;
use serde::Serialize;

use crate::archive::{ArchiveHeader, ArchiveWriter, ArchivedMessage};
use crate::progress::Progress;

/// Messages handed to the compressing thread at once.
const EXPORT_BATCH_MESSAGES: usize = 1_024;
/// Batches queued for the compressing thread, at most.
const EXPORT_QUEUE_BATCHES: usize = 8;

/// What `export` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportSummary {
    pub file: PathBuf,
    pub stream: String,
    pub events: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub file_bytes: u64,
    pub payload_bytes: u64,
    pub seconds: f64,
    pub events_per_second: u64,
}

/// Exports every message of the log to `out`.
pub async fn export(log: &JetStreamLog, out: &Path, progress: &Progress) -> anyhow::Result<ExportSummary> {
    let started = Instant::now();
    let end = log.last_position().await.context("reading the log's last position")?;
    progress.set_total(end);
    let header = ArchiveHeader {
        format: "halobuzz-log".into(),
        version: 1,
        stream: log.stream_name().to_string(),
        first_position: 1,
        last_position: end,
        exported_at: chrono::Utc::now(),
        server_version: log.server_version().to_string(),
    };
    let writer = ArchiveWriter::create(out, &header)?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<ArchivedMessage>>(EXPORT_QUEUE_BATCHES);
    let compressor = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, PathBuf)> {
        let mut writer = writer;
        while let Some(batch) = receiver.blocking_recv() {
            for message in &batch {
                writer.write(message)?;
            }
        }
        Ok(writer.finish()?)
    });

    let mut payload_bytes = 0u64;
    let mut count = 0u64;
    let read = async {
        if end == 0 {
            return Ok::<(), anyhow::Error>(());
        }
        // Created through the log's bounded retries, like every read.
        let mut messages = log.ordered_messages(1).await.context("reading the stream")?;
        let mut batch = Vec::with_capacity(EXPORT_BATCH_MESSAGES);
        let mut expected = 1u64;
        // Bounded: one message per round, stops at `end`.
        while let Some(message) = messages.next().await {
            let message = message.context("reading the stream")?;
            let info = message.info().map_err(|e| anyhow::anyhow!("message metadata: {e}"))?;
            let position = info.stream_sequence;
            anyhow::ensure!(
                position == expected,
                "the log has no message at position {expected} (found {position} next): a log with gaps cannot be \
                 exported faithfully"
            );
            expected += 1;
            let mut headers: Vec<(String, String)> = Vec::new();
            if let Some(map) = &message.headers {
                for (name, values) in map.iter() {
                    for value in values {
                        headers.push((name.to_string(), value.as_str().to_string()));
                    }
                }
            }
            headers.sort();
            let timestamp_ns = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX);
            let payload: Bytes = message.payload.clone();
            payload_bytes += payload.len() as u64;
            batch.push(ArchivedMessage {
                position,
                timestamp_ns,
                subject: message.subject.to_string(),
                headers,
                payload,
            });
            count += 1;
            if batch.len() >= EXPORT_BATCH_MESSAGES || position >= end {
                progress.set(position);
                if sender.send(std::mem::take(&mut batch)).await.is_err() {
                    break; // the compressor failed: its error is reported below
                }
            }
            if position >= end {
                break;
            }
        }
        anyhow::ensure!(expected > end, "the stream ended at position {} before {end}", expected - 1);
        Ok(())
    };
    let read_result = read.await;
    drop(sender);
    let written = compressor.await.map_err(|e| anyhow::anyhow!("the compressing thread failed: {e}"))?;
    read_result?;
    let (file_bytes, file) = written.context("writing the export file")?;
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    Ok(ExportSummary {
        file,
        stream: header.stream,
        events: count,
        first_position: if count == 0 { 0 } else { 1 },
        last_position: end,
        file_bytes,
        payload_bytes,
        seconds,
        events_per_second: rate(count, started),
    })
}

/// Events per second since `started`, in integers.
pub(crate) fn rate(events: u64, started: Instant) -> u64 {
    let micros = started.elapsed().as_micros().max(1);
    u64::try_from(u128::from(events) * 1_000_000 / micros).unwrap_or(u64::MAX)
}
