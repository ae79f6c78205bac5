//! Test and benchmark support: publishes a generated log
//! (`projections::testing::Generator`) into a real stream, fast (pipelined
//! publishes), with the headers the command side appends them with: a
//! unique `Nats-Msg-Id` on every message but command records, which go
//! without one. Never used by the operations.

use std::collections::VecDeque;

use anyhow::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use commands::log::JetStreamLog;
use events_schema::{Envelope, Event};

/// Publishes awaiting their ack, at most.
const PUBLISH_IN_FLIGHT_MAX: usize = 1_024;

/// Publishes `events` in order; returns how many.
pub async fn publish_events(log: &JetStreamLog, events: impl IntoIterator<Item = Bytes>) -> anyhow::Result<u64> {
    let context = async_nats::jetstream::new(log.client().clone());
    let mut in_flight = VecDeque::with_capacity(PUBLISH_IN_FLIGHT_MAX);
    let mut count = 0u64;
    for payload in events {
        let envelope = Envelope::decode(&payload).context("a generated event decodes")?;
        let mut headers = HeaderMap::new();
        // The generator gives the events of one command one event id; the
        // subject and sequence make an id unique per message.
        let subject = envelope.subject();
        if !matches!(envelope.event, Event::CommandRecorded(_)) {
            headers.insert("Nats-Msg-Id", format!("{subject}#{}", envelope.header.sequence).as_str());
        }
        let ack = context
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        in_flight.push_back(ack);
        if in_flight.len() >= PUBLISH_IN_FLIGHT_MAX
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
        }
        count += 1;
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
    }
    Ok(count)
}

/// Publishes raw `(subject, payload)` messages in order, without checking
/// them (tests of tampering).
pub async fn publish_raw(
    log: &JetStreamLog,
    messages: impl IntoIterator<Item = (String, Bytes)>,
) -> anyhow::Result<u64> {
    let context = async_nats::jetstream::new(log.client().clone());
    let mut in_flight = VecDeque::with_capacity(PUBLISH_IN_FLIGHT_MAX);
    let mut count = 0u64;
    for (subject, payload) in messages {
        let ack = context.publish(subject, payload).await.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        in_flight.push_back(ack);
        if in_flight.len() >= PUBLISH_IN_FLIGHT_MAX
            && let Some(ack) = in_flight.pop_front()
        {
            ack.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
        }
        count += 1;
    }
    while let Some(ack) = in_flight.pop_front() {
        ack.await.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
    }
    Ok(count)
}
