//! Hash-chain verification, message by message, in log order: each stored
//! event must hash to its own `hash`, sit on the subject its aggregate
//! names, follow the previous event of that subject by one `sequence`, and
//! carry that event's hash as its `prevHash`. Shared by import (which
//! refuses a file that fails) and audit (which reports every failure).

use std::collections::HashMap;

use events_schema::{Envelope, GENESIS_HASH, SchemaError};

/// What is wrong with one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("unreadable event: {0}")]
    Unreadable(SchemaError),
    #[error("content altered: {0}")]
    Altered(SchemaError),
    #[error("stored on {found} but its aggregate's subject is {expected}")]
    WrongSubject { expected: String, found: String },
    #[error("sequence {found} where {expected} was expected")]
    Sequence { expected: u64, found: u64 },
    #[error("prevHash {found} is not the previous event's hash {expected}")]
    BrokenLink { expected: String, found: String },
}

/// A fault, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}, subject {subject}: {fault}")]
pub struct ChainError {
    pub position: u64,
    pub subject: String,
    pub fault: ChainFault,
}

/// The last link of a subject's chain.
#[derive(Debug, Clone)]
struct Link {
    sequence: u64,
    hash: [u8; 32],
}

/// The state of every chain seen so far. Memory: one entry per subject.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    links: HashMap<String, Link>,
    messages: u64,
}

impl ChainVerifier {
    pub fn new() -> ChainVerifier {
        ChainVerifier::default()
    }

    /// Subjects seen.
    pub fn subjects(&self) -> u64 {
        self.links.len() as u64
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Checks the next message of the log and moves its subject's chain on.
    /// A message that fails still moves its chain on when it could be read
    /// (so that one altered event is reported once, not with every event
    /// after it on the subject).
    pub fn check(&mut self, position: u64, subject: &str, payload: &[u8]) -> Result<Envelope, ChainError> {
        self.link(position, subject, hash_check(payload))
    }

    /// The order-dependent half of `check`: the link to the subject's
    /// previous event, given the message's own `hash_check`.
    pub fn link(&mut self, position: u64, subject: &str, checked: HashChecked) -> Result<Envelope, ChainError> {
        self.messages += 1;
        let error = |fault| ChainError { position, subject: subject.to_string(), fault };
        let (envelope, altered) = match checked {
            HashChecked::Intact(envelope) => (envelope, None),
            HashChecked::Altered(envelope, hash) => (envelope, Some(hash)),
            HashChecked::Unreadable(e) => return Err(error(ChainFault::Unreadable(e))),
        };
        let expected_subject = envelope.subject();
        let previous = self.links.get(subject).cloned();
        let own_hash = parse_hash(&envelope.header.hash);
        self.links.insert(subject.to_string(), Link { sequence: envelope.header.sequence, hash: own_hash });
        if let Some(altered) = altered {
            return Err(error(ChainFault::Altered(altered)));
        }
        if expected_subject != subject {
            return Err(error(ChainFault::WrongSubject { expected: expected_subject, found: subject.to_string() }));
        }
        let (expected_sequence, expected_prev) = match &previous {
            Some(link) => (link.sequence + 1, hex(&link.hash)),
            None => (1, GENESIS_HASH.to_string()),
        };
        if envelope.header.sequence != expected_sequence {
            return Err(error(ChainFault::Sequence { expected: expected_sequence, found: envelope.header.sequence }));
        }
        if envelope.header.prev_hash != expected_prev {
            return Err(error(ChainFault::BrokenLink {
                expected: expected_prev,
                found: envelope.header.prev_hash.clone(),
            }));
        }
        Ok(envelope)
    }
}

/// A message's own hash, checked apart from its chain (so that many can be
/// checked in parallel).
#[derive(Debug)]
pub enum HashChecked {
    Intact(Envelope),
    /// Readable, but its content does not hash to its `hash`.
    Altered(Envelope, SchemaError),
    Unreadable(SchemaError),
}

/// Reads a stored event and checks its own hash.
pub fn hash_check(payload: &[u8]) -> HashChecked {
    match Envelope::verify(payload) {
        Ok(envelope) => HashChecked::Intact(envelope),
        Err(hash @ SchemaError::HashMismatch { .. }) => match Envelope::decode(payload) {
            Ok(envelope) => HashChecked::Altered(envelope, hash),
            Err(e) => HashChecked::Unreadable(e),
        },
        Err(e) => HashChecked::Unreadable(e),
    }
}

fn parse_hash(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let bytes = text.as_bytes();
    if bytes.len() == 64 {
        for (i, chunk) in bytes.chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).ok().and_then(|s| u8::from_str_radix(s, 16).ok());
            match pair {
                Some(b) => out[i] = b,
                // Not a hash: keep an impossible value so that the next
                // link is reported as broken.
                None => return [0xff; 32],
            }
        }
        out
    } else {
        [0xff; 32]
    }
}

fn hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::testing::{Generator, GeneratorConfig};

    fn subject_of(payload: &[u8]) -> String {
        Envelope::decode(payload).map(|e| e.subject()).unwrap_or_default()
    }

    #[test]
    fn a_generated_log_verifies() {
        let mut verifier = ChainVerifier::new();
        for (index, payload) in Generator::log(GeneratorConfig::default(), 3_000).enumerate() {
            let subject = subject_of(&payload);
            verifier.check(index as u64 + 1, &subject, &payload).unwrap();
        }
        assert!(verifier.subjects() > 10);
    }

    #[test]
    fn an_altered_byte_names_its_position_and_subject() {
        let log: Vec<_> = Generator::log(GeneratorConfig::default(), 500).collect();
        let target = 321;
        let mut verifier = ChainVerifier::new();
        for (index, payload) in log.iter().enumerate() {
            let position = index as u64 + 1;
            let subject = subject_of(payload);
            let mut bytes = payload.to_vec();
            if position == target {
                // Change one digit of the occurredAt year: still JSON.
                let at = bytes.windows(4).position(|w| w == b"2026").expect("a year");
                bytes[at + 3] = b'7';
            }
            let result = verifier.check(position, &subject, &bytes);
            if position == target {
                let error = result.unwrap_err();
                assert_eq!(error.position, target);
                assert_eq!(error.subject, subject);
                assert!(matches!(error.fault, ChainFault::Altered(_)), "{error}");
            } else {
                result.unwrap();
            }
        }
    }

    #[test]
    fn a_missing_event_breaks_the_chain() {
        let log: Vec<_> = Generator::log(GeneratorConfig::default(), 500).collect();
        let subjects: Vec<String> = log.iter().map(|p| subject_of(p)).collect();
        // A subject with at least three events: drop its second.
        let dropped = subjects
            .iter()
            .find(|s| subjects.iter().filter(|t| t == s).count() >= 3)
            .expect("a subject with three events")
            .clone();
        let second = subjects.iter().enumerate().filter(|(_, s)| **s == dropped).nth(1).map(|(i, _)| i).unwrap_or(0);
        let mut verifier = ChainVerifier::new();
        let mut failures = Vec::new();
        for (index, payload) in log.iter().enumerate() {
            if index == second {
                continue;
            }
            if let Err(e) = verifier.check(index as u64 + 1, &subjects[index], payload) {
                failures.push(e);
            }
        }
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].subject, dropped);
        assert!(matches!(failures[0].fault, ChainFault::Sequence { expected: 2, found: 3 }), "{}", failures[0]);
    }
}
