//! Test and benchmark support: publishes a generated log
//! (`projections::testing::Generator`) into a real stream, fast (pipelined
//! publishes), the way the command side appends it: a unique `Nats-Msg-Id`
//! on every message but command records, which go without one, and the
//! commands that write several aggregates as atomic batches (a
//! registration with its reservations and record; a stream started or
//! ended with its host's channel), through the log's own
//! `append_atomic`. Never used by the operations.

use std::collections::{HashMap, VecDeque};

use anyhow::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use commands::log::{AppendRequest, EventLog, JetStreamLog};
use events_schema::{Envelope, Event};

/// Publishes awaiting their ack, at most.
const PUBLISH_IN_FLIGHT_MAX: usize = 1_024;
/// Messages of one atomic batch, at most (a registration: the user, two
/// reservations and the record).
const BATCH_MESSAGES_MAX: usize = 4;

/// One message to publish, decoded enough to place it.
struct Pending {
    subject: String,
    msg_id: Option<String>,
    payload: Bytes,
    event: Event,
}

/// Whether `next` joins the atomic batch that `first` opened.
fn joins(first: &Event, next: &Event) -> bool {
    matches!(
        (first, next),
        (Event::UserRegistered(_), Event::ReservationClaimed(_) | Event::CommandRecorded(_))
            | (Event::StreamStarted(_), Event::ChannelWentLive(_))
            | (Event::StreamEnded(_), Event::ChannelWentOffline(_))
    )
}

/// Whether `event` opens an atomic batch.
fn opens_batch(event: &Event) -> bool {
    matches!(event, Event::UserRegistered(_) | Event::StreamStarted(_) | Event::StreamEnded(_))
}

/// Publishes `events` in order; returns how many. The stream must hold no
/// other writer's messages meanwhile: positions are predicted, and every
/// acknowledgement is checked against its prediction.
pub async fn publish_events(log: &JetStreamLog, events: impl IntoIterator<Item = Bytes>) -> anyhow::Result<u64> {
    let context = async_nats::jetstream::new(log.client().clone());
    let mut in_flight = VecDeque::with_capacity(PUBLISH_IN_FLIGHT_MAX);
    let start = log.last_position().await.map_err(|e| anyhow::anyhow!("last position: {e}"))?;
    let mut last_on_subject: HashMap<String, u64> = HashMap::new();
    let mut count = 0u64;
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH_MESSAGES_MAX);
    let mut events = events.into_iter().peekable();
    while let Some(payload) = events.next() {
        batch.push(pending(payload)?);
        if opens_batch(&batch[0].event) {
            while batch.len() < BATCH_MESSAGES_MAX {
                let Some(next) = events.peek() else { break };
                let next = pending(next.clone())?;
                if !joins(&batch[0].event, &next.event) {
                    break;
                }
                events.next();
                batch.push(next);
            }
            if batch.len() > 1 {
                // The batch's expectations need the positions before it.
                settle_all(&mut in_flight).await?;
                let requests = batch
                    .iter()
                    .map(|m| AppendRequest {
                        subject: m.subject.clone(),
                        payload: m.payload.clone(),
                        msg_id: m.msg_id.clone(),
                        expected_last_subject_seq: last_on_subject.get(&m.subject).copied().unwrap_or(0),
                    })
                    .collect();
                let positions = log.append_atomic(requests).await.map_err(|e| anyhow::anyhow!("atomic batch: {e}"))?;
                for (message, position) in batch.drain(..).zip(positions) {
                    count += 1;
                    anyhow::ensure!(position == start + count, "batch message stored at {position}");
                    last_on_subject.insert(message.subject, position);
                }
                continue;
            }
        }
        let Some(message) = batch.pop() else { continue };
        let mut headers = HeaderMap::new();
        if let Some(msg_id) = &message.msg_id {
            headers.insert("Nats-Msg-Id", msg_id.as_str());
        }
        count += 1;
        last_on_subject.insert(message.subject.clone(), start + count);
        let ack = context
            .publish_with_headers(message.subject, headers, message.payload)
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
        in_flight.push_back((start + count, ack));
        if in_flight.len() >= PUBLISH_IN_FLIGHT_MAX
            && let Some((position, ack)) = in_flight.pop_front()
        {
            settle(position, ack.await)?;
        }
    }
    settle_all(&mut in_flight).await?;
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

type AckFuture = async_nats::jetstream::context::PublishAckFuture;

fn pending(payload: Bytes) -> anyhow::Result<Pending> {
    let envelope = Envelope::decode(&payload).context("a generated event decodes")?;
    let subject = envelope.subject();
    // The generator gives the events of one command one event id; the
    // subject and sequence make an id unique per message.
    let msg_id = match envelope.event {
        Event::CommandRecorded(_) => None,
        _ => Some(format!("{subject}#{}", envelope.header.sequence)),
    };
    Ok(Pending { subject, msg_id, payload, event: envelope.event })
}

fn settle(
    position: u64,
    ack: Result<async_nats::jetstream::publish::PublishAck, async_nats::jetstream::context::PublishError>,
) -> anyhow::Result<()> {
    let ack = ack.map_err(|e| anyhow::anyhow!("publish ack: {e}"))?;
    anyhow::ensure!(ack.sequence == position, "message {position} stored at {}", ack.sequence);
    Ok(())
}

async fn settle_all(in_flight: &mut VecDeque<(u64, AckFuture)>) -> anyhow::Result<()> {
    while let Some((position, ack)) = in_flight.pop_front() {
        settle(position, ack.await)?;
    }
    Ok(())
}
