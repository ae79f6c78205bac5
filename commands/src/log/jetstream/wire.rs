//! The wire: JetStream's headers and error codes, the decoding of its
//! replies, the classification of its errors, the parsing of the messages
//! a direct get returns. Pure functions, unit-tested without a server.

use std::fmt;

use async_nats::jetstream::stream::Config as StreamConfig;
use async_nats::{HeaderMap, Message};
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::Rng;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::log::{AppendRequest, LogError, StoredMessage};

pub(super) const HEADER_MSG_ID: &str = "Nats-Msg-Id";
pub(super) const HEADER_EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
pub(super) const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
pub(super) const HEADER_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
pub(super) const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";
pub(super) const HEADER_STREAM_SEQUENCE: &str = "Nats-Sequence";
pub(super) const HEADER_STREAM_SUBJECT: &str = "Nats-Subject";
pub(super) const HEADER_STREAM_TIMESTAMP: &str = "Nats-Time-Stamp";

// JetStream error codes (nats-server's jetstream_errors_generated.go).
pub(super) const ERR_CLUSTER_NOT_AVAILABLE: u64 = 10008;
pub(super) const ERR_CLUSTER_NOT_LEADER: u64 = 10009;
pub(super) const ERR_STREAM_NAME_IN_USE: u64 = 10058;
pub(super) const ERR_STREAM_NOT_FOUND: u64 = 10059;
pub(super) const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
pub(super) const ERR_DUPLICATE_MESSAGE_IN_PROCESS: u64 = 10158;
pub(super) const ERR_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY: u64 = 10163;
/// "wrong last sequence" without the number: the server refuses to check an
/// expectation while another append with an expectation on the same subject
/// is still in flight (replicated streams, atomic batches). That state lasts
/// milliseconds and the in-flight append may be this very append's earlier
/// try, so it is retried like `Unavailable`: the retry then sees the real
/// outcome (10071 wrong last sequence, or our own stored copy).
pub(super) const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
pub(super) const ERR_NO_MESSAGE_FOUND: u64 = 10037;
pub(super) const ERR_ATOMIC_BATCH_CONTAINS_DUPLICATE: u64 = 10201;
pub(super) const ERR_ATOMIC_BATCH_TOO_MANY_INFLIGHT: u64 = 10210;
/// "No suitable peers for placement": a cluster still forming (or a peer
/// restarting) cannot place a replicated stream yet.
pub(super) const ERR_CLUSTER_NO_PEERS: u64 = 10005;

/// A JetStream API error body: `{"code":400,"err_code":10071,"description":...}`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ApiError {
    pub(super) code: u16,
    #[serde(default)]
    pub(super) err_code: u64,
    #[serde(default)]
    pub(super) description: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {}, err_code {})", self.description, self.code, self.err_code)
    }
}

/// A publish acknowledgement.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct PubAck {
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) duplicate: bool,
    /// Messages stored by a committed atomic batch.
    #[serde(default)]
    pub(super) count: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamInfoReply {
    pub(super) config: StreamConfig,
    pub(super) state: StreamStateReply,
}

#[derive(Debug, Deserialize)]
pub(super) struct StreamStateReply {
    pub(super) last_seq: u64,
    /// Messages held now (fewer than `last_seq` once records expire).
    #[serde(default)]
    pub(super) messages: u64,
}

/// Outcome of one JetStream API call before classification.
pub(super) enum ApiReply<T> {
    Ok(T),
    Err(ApiError),
}

pub(super) fn decode_reply<T: DeserializeOwned>(payload: &[u8]) -> Result<ApiReply<T>, LogError> {
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
pub(super) fn classify(error: &ApiError) -> LogError {
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

pub(super) fn is_wrong_last_sequence(error: &ApiError) -> bool {
    error.err_code == ERR_WRONG_LAST_SEQUENCE
}

/// The subject's actual last position, from "wrong last sequence: 12".
pub(super) fn current_from_description(description: &str) -> Option<u64> {
    description.rsplit(':').next()?.trim().parse().ok()
}

pub(super) fn request_error(err: async_nats::RequestError) -> LogError {
    use async_nats::RequestErrorKind as Kind;
    match err.kind() {
        Kind::TimedOut => LogError::Unavailable("timed out waiting for the server".into()),
        Kind::NoResponders => LogError::Unavailable("no responders (stream leader down, or stream missing)".into()),
        Kind::InvalidSubject | Kind::MaxPayloadExceeded => LogError::Invalid(err.to_string()),
        Kind::Other => LogError::Unavailable(err.to_string()),
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

/// Parses a message returned by a direct get.
pub(super) fn stored_from_direct(message: Message) -> Result<StoredMessage, LogError> {
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
pub(super) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
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
pub(super) fn msg_id_from_encoded_headers(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case(HEADER_MSG_ID).then(|| value.trim().to_owned())
    })
}

pub(super) fn append_headers(request: &AppendRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(msg_id) = &request.msg_id {
        headers.insert(HEADER_MSG_ID, msg_id.as_str());
    }
    headers.insert(HEADER_EXPECTED_LAST_SUBJECT_SEQ, request.expected_last_subject_seq.to_string());
    headers
}

/// A batch id: 22 random alphanumerics (the server accepts up to 64).
pub(super) fn new_batch_id() -> String {
    const BATCH_ID_LEN: usize = 22;
    let mut rng = rand::rng();
    (0..BATCH_ID_LEN).map(|_| char::from(rng.sample(rand::distr::Alphanumeric))).collect()
}

pub(super) fn validate_append(request: &AppendRequest) -> Result<(), LogError> {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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
    fn replies_decode_as_answers_or_api_errors() {
        match decode_reply::<PubAck>(br#"{"stream":"HALOBUZZ","seq":7,"duplicate":true}"#) {
            Ok(ApiReply::Ok(ack)) => {
                assert_eq!(ack.seq, 7);
                assert!(ack.duplicate);
                assert_eq!(ack.count, None);
            }
            other => panic!("an ack, got {:?}", other.map(|_| ())),
        }
        let refused = br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 12"}}"#;
        match decode_reply::<PubAck>(refused) {
            Ok(ApiReply::Err(error)) => {
                assert!(is_wrong_last_sequence(&error));
                assert_eq!(current_from_description(&error.description), Some(12));
            }
            other => panic!("an API error, got {:?}", other.map(|_| ())),
        }
        assert!(matches!(decode_reply::<PubAck>(b"not json"), Err(LogError::Invalid(_))));
        // Valid JSON of another shape: not an ack, and not an API error.
        assert!(matches!(decode_reply::<PubAck>(br#"{"stream":"HALOBUZZ"}"#), Err(LogError::Invalid(_))));
    }

    #[test]
    fn appends_carry_their_expectation_and_their_message_id_when_they_have_one() {
        let mut request = AppendRequest {
            subject: "hb.ledger.u".into(),
            payload: Bytes::from_static(b"commit"),
            msg_id: Some("cmd-9".into()),
            expected_last_subject_seq: 41,
        };
        let headers = append_headers(&request);
        assert_eq!(header(&headers, HEADER_MSG_ID), Some("cmd-9"));
        assert_eq!(header(&headers, HEADER_EXPECTED_LAST_SUBJECT_SEQ), Some("41"));
        request.msg_id = None;
        request.expected_last_subject_seq = 0;
        let headers = append_headers(&request);
        assert_eq!(header(&headers, HEADER_MSG_ID), None);
        assert_eq!(header(&headers, HEADER_EXPECTED_LAST_SUBJECT_SEQ), Some("0"));
    }

    fn direct_reply(headers: &[(&str, &str)]) -> Message {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        Message {
            subject: "_INBOX.x".into(),
            reply: None,
            payload: Bytes::from_static(b"payload"),
            headers: Some(map),
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn direct_get_replies_become_stored_messages() {
        let full = [
            (HEADER_STREAM_SEQUENCE, "42"),
            (HEADER_STREAM_SUBJECT, "hb.user.1"),
            (HEADER_STREAM_TIMESTAMP, "2022-08-06T00:29:27.587861324Z"),
            (HEADER_MSG_ID, "m-1"),
        ];
        let stored = stored_from_direct(direct_reply(&full)).expect("a stored message");
        assert_eq!(stored.position, 42);
        assert_eq!(stored.subject, "hb.user.1");
        assert_eq!(stored.msg_id.as_deref(), Some("m-1"));
        assert_eq!(stored.payload, Bytes::from_static(b"payload"));
        assert_eq!(stored.timestamp.timestamp(), 1_659_745_767);
        // Each of the three server headers is required.
        for missing in 0..3 {
            let partial: Vec<(&str, &str)> =
                full.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, h)| *h).collect();
            assert!(matches!(stored_from_direct(direct_reply(&partial)), Err(LogError::Invalid(_))), "{partial:?}");
        }
        let no_headers = Message { headers: None, ..direct_reply(&full) };
        assert!(matches!(stored_from_direct(no_headers), Err(LogError::Invalid(_))));
    }

    #[test]
    fn batch_ids_are_random() {
        let (a, b) = (new_batch_id(), new_batch_id());
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
