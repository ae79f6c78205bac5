//! Reads that see every append acknowledged before them, on a replicated
//! stream too.
//!
//! With `allow_direct`, every replica answers direct gets, and a follower
//! may lag the leader by a few milliseconds. An append decided on a stale
//! read is refused (its expected last subject sequence), but a decision
//! that writes nothing on the subject it read is not: a user registered a
//! moment ago read as unknown, a role granted read as missing. Measured on a
//! 3-node cluster: one read in seven after an append missed it. So, when
//! the stream has more than one replica:
//!
//! - a subject a direct get finds empty is asked again of the stream leader
//!   (`STREAM.MSG.GET`, answered by the leader only): empty there is empty;
//!   but a subject only ever appended to expecting it empty (a command's
//!   record) is not: the append would be refused if it were not;
//! - a coalesced read answered by a replica whose last position (the
//!   `Nats-UpTo-Sequence` of its end marker) is behind the highest position
//!   this process has seen (its appends and reads) is `Unavailable`, and
//!   retried: another replica answers, or the same one has caught up;
//! - a single subject's read goes to the leader.
//!
//! A single-replica stream is answered by its one server, which has every
//! acknowledged message: nothing changes there.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::future::try_join_all;
use serde::Deserialize;

use super::JetStreamLog;
use super::wire::{ApiReply, ERR_NO_MESSAGE_FOUND, classify, msg_id_from_encoded_headers, parse_timestamp};
use crate::log::{LogError, StoredMessage};

impl JetStreamLog {
    /// Whether followers may answer reads (more than one replica).
    pub(super) fn replicated(&self) -> bool {
        self.inner.config.replicas > 1
    }

    /// Notes a position this process has seen acknowledged or read: later
    /// reads must not answer from before it.
    pub(super) fn observe(&self, position: u64) {
        self.inner.seen_position.fetch_max(position, Ordering::Relaxed);
    }

    /// The highest position this process has seen.
    pub(super) fn seen_position(&self) -> u64 {
        self.inner.seen_position.load(Ordering::Relaxed)
    }

    /// One try of `last_on_subject`.
    pub(super) async fn last_on_subject_consistent_once(
        &self,
        subject: &str,
    ) -> Result<Option<StoredMessage>, LogError> {
        let found = if self.replicated() {
            self.leader_last_on_subject_once(subject).await?
        } else {
            self.last_on_subject_once(subject).await?
        };
        if let Some(message) = &found {
            self.observe(message.position);
        }
        Ok(found)
    }

    /// One try of `last_on_subjects`: the coalesced read (checked against
    /// the fence in `multi_last`), then, on a replicated stream, the leader
    /// asked about each subject found empty but the last
    /// `appended_expecting_empty` (see the port).
    pub(super) async fn last_on_subjects_consistent_once(
        &self,
        subjects: &[String],
        appended_expecting_empty: usize,
    ) -> Result<Vec<Option<StoredMessage>>, LogError> {
        let mut found = self.last_on_subjects_once(subjects).await?;
        if self.replicated() {
            let checked = found.len().saturating_sub(appended_expecting_empty);
            let empty: Vec<usize> = (0..checked).filter(|index| found[*index].is_none()).collect();
            let asked = try_join_all(empty.iter().map(|index| self.leader_last_on_subject_once(&subjects[*index])));
            for (index, message) in empty.into_iter().zip(asked.await?) {
                found[index] = message;
            }
        }
        if let Some(last) = found.iter().flatten().map(|message| message.position).max() {
            self.observe(last);
        }
        Ok(found)
    }

    /// The last message on `subject`, asked of the stream leader.
    pub(super) async fn leader_last_on_subject_once(&self, subject: &str) -> Result<Option<StoredMessage>, LogError> {
        #[derive(Deserialize)]
        struct MsgGetReply {
            message: RawStoredMessage,
        }
        #[derive(Deserialize)]
        struct RawStoredMessage {
            subject: String,
            seq: u64,
            #[serde(default)]
            hdrs: Option<String>,
            #[serde(default)]
            data: Option<String>,
            time: String,
        }
        let body = serde_json::json!({ "last_by_subj": subject }).to_string();
        let message = match self.api::<MsgGetReply>(self.inner.subject_msg_get.clone(), Bytes::from(body)).await? {
            ApiReply::Ok(reply) => reply.message,
            ApiReply::Err(error) if error.err_code == ERR_NO_MESSAGE_FOUND || error.code == 404 => return Ok(None),
            ApiReply::Err(error) => return Err(classify(&error)),
        };
        use base64::Engine as _;
        // The server leaves `data` out for an empty payload.
        let payload = base64::engine::general_purpose::STANDARD
            .decode(message.data.as_deref().unwrap_or(""))
            .map_err(|err| LogError::Invalid(format!("undecodable message data from the leader: {err}")))?;
        let timestamp = parse_timestamp(&message.time).ok_or_else(|| {
            LogError::Invalid(format!("undecodable message time from the leader: {:?}", message.time))
        })?;
        Ok(Some(StoredMessage {
            position: message.seq,
            subject: message.subject,
            payload: Bytes::from(payload),
            msg_id: message.hdrs.as_deref().and_then(msg_id_from_encoded_headers),
            timestamp,
        }))
    }
}
