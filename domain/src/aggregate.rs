//! An aggregate's state with its place in its hash chain, and the sealing of
//! new events into envelopes.

use events_schema::{Envelope, Event, EventMeta, GENESIS_HASH};

/// A decider's state together with the position of its aggregate's last
/// event: how many events it has (`sequence`) and the last one's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<S> {
    pub state: S,
    pub sequence: u64,
    pub last_hash: String,
}

impl<S> Loaded<S> {
    /// An aggregate with no event yet.
    pub fn new(state: S) -> Loaded<S> {
        Loaded { state, sequence: 0, last_hash: GENESIS_HASH.to_string() }
    }

    /// Seals `event` as this aggregate's next event.
    pub fn seal(&self, meta: &EventMeta, event: Event) -> Envelope {
        Envelope::seal(meta, event, self.sequence + 1, &self.last_hash)
    }

    /// `seal`, for a command with an idempotency id and content hash.
    pub fn seal_for_command(&self, meta: &EventMeta, fingerprint: Option<&str>, event: Event) -> Envelope {
        Envelope::seal_for_command(meta, fingerprint, event, self.sequence + 1, &self.last_hash)
    }

    /// `seal_for_command`, with the stored bytes written in the same pass.
    pub fn seal_encoded(&self, meta: &EventMeta, fingerprint: Option<&str>, event: Event) -> (Envelope, Vec<u8>) {
        Envelope::seal_encoded(meta, fingerprint, event, self.sequence + 1, &self.last_hash)
    }

    /// Moves past `envelope` with `evolve`, keeping the chain position.
    pub fn apply(self, envelope: &Envelope, evolve: impl FnOnce(S, &Event) -> S) -> Loaded<S> {
        Loaded {
            state: evolve(self.state, &envelope.event),
            sequence: envelope.header.sequence,
            last_hash: envelope.header.hash.clone(),
        }
    }
}
