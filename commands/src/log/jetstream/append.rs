//! Appends: single messages and atomic batches, retried when their
//! outcome is unknown, with the stored copy of an earlier try recognised
//! by its message id (or its bytes).

use std::collections::HashSet;

use async_nats::Request;
use serde::Deserialize;

use super::JetStreamLog;
use super::wire::{
    ApiError, ApiReply, ERR_ATOMIC_BATCH_CONTAINS_DUPLICATE, ERR_NO_MESSAGE_FOUND, HEADER_BATCH_COMMIT,
    HEADER_BATCH_ID, HEADER_BATCH_SEQUENCE, PubAck, append_headers, classify, current_from_description, decode_reply,
    is_wrong_last_sequence, msg_id_from_encoded_headers, new_batch_id, request_error, validate_append,
};
use crate::log::{ATOMIC_BATCH_SIZE_MAX, AppendRequest, Appended, LogError};

/// Outcome of one try of an atomic batch.
pub(super) enum BatchOutcome {
    Committed(PubAck),
    /// Refused whole because some message id is already stored.
    DuplicateIds,
}

impl JetStreamLog {
    /// One try of one append; the ack or a classified error.
    pub(super) async fn append_once(&self, request: &AppendRequest) -> Result<PubAck, LogError> {
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

    pub(super) async fn append_with_retries(&self, request: AppendRequest) -> Result<Appended, LogError> {
        validate_append(&request)?;
        let mut delays = self.inner.config.retry_schedule().delays();
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
                Err(LogError::Unavailable(reason)) => {
                    let Some(delay) = delays.next() else { return Err(LogError::Unavailable(reason)) };
                    tries += 1;
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
    pub(super) async fn find_landed(&self, request: &AppendRequest) -> Result<Option<u64>, LogError> {
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
    pub(super) async fn append_atomic_once(&self, requests: &[AppendRequest]) -> Result<BatchOutcome, LogError> {
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
    pub(super) async fn locate_batch_conflict(&self, requests: &[AppendRequest], error: &ApiError) -> LogError {
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

    pub(super) async fn append_atomic_with_retries(&self, requests: Vec<AppendRequest>) -> Result<Vec<u64>, LogError> {
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
        let mut delays = self.inner.config.retry_schedule().delays();
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
                Err(LogError::Unavailable(reason)) => {
                    let Some(delay) = delays.next() else { return Err(LogError::Unavailable(reason)) };
                    tries += 1;
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
    pub(super) async fn find_landed_batch(&self, requests: &[AppendRequest]) -> Result<Option<Vec<u64>>, LogError> {
        let mut positions = Vec::with_capacity(requests.len());
        for request in requests {
            match self.find_landed(request).await? {
                Some(position) => positions.push(position),
                None => return Ok(None),
            }
        }
        Ok(Some(positions))
    }
}
