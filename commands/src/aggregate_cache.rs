//! The last events the command handler has seen, by subject, decoded.
//!
//! Two uses, both safe against any staleness:
//! - a subject read again at the same position reuses the decoded event
//!   (a position names one immutable message, so nothing can differ);
//! - a subject a command always writes when accepted (a viewer's ledger for
//!   a gift) may be served without reading it: the append is guarded by the
//!   position the decision saw, so a stale entry ends in a conflict, never
//!   in a wrong commit. The handler never trusts a rejection, or a decision
//!   that did not write the subject, made from a cached entry: it reads the
//!   log and decides again. After a conflict it reads the log for the rest
//!   of the command, and an append whose position a retry found by message
//!   id is not remembered (the message there may be another run's).
//!
//! Bounded: at most [`ENTRIES_MAX`] entries of at most [`ENVELOPE_BYTES_MAX`]
//! stored bytes each; when full, it starts over empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use events_schema::Envelope;

/// Subjects remembered at once.
pub const ENTRIES_MAX: usize = 4_096;
/// Larger events (a host credit of hundreds of gifts) are not kept.
pub const ENVELOPE_BYTES_MAX: usize = 4_096;

/// One subject's last event as last seen: its position and the event.
#[derive(Debug, Clone)]
pub struct Cached {
    pub position: u64,
    pub envelope: Arc<Envelope>,
}

#[derive(Debug, Default)]
pub struct AggregateCache {
    entries: Mutex<HashMap<String, Cached>>,
}

impl AggregateCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Cached>> {
        // Plain data: a panic elsewhere cannot leave it half-updated.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, subject: &str) -> Option<Cached> {
        self.lock().get(subject).cloned()
    }

    /// The decoded event stored at `position` on `subject`, if it is the
    /// one remembered.
    pub fn at(&self, subject: &str, position: u64) -> Option<Arc<Envelope>> {
        self.lock().get(subject).filter(|c| c.position == position).map(|c| c.envelope.clone())
    }

    /// Remembers `envelope` (of `stored_bytes` bytes) as the event at
    /// `position` on `subject`, unless a later one is remembered already.
    pub fn put(&self, subject: &str, position: u64, envelope: Arc<Envelope>, stored_bytes: usize) {
        if stored_bytes > ENVELOPE_BYTES_MAX || position == 0 {
            return;
        }
        let mut entries = self.lock();
        if let Some(existing) = entries.get_mut(subject) {
            if existing.position < position {
                *existing = Cached { position, envelope };
            }
            return;
        }
        if entries.len() >= ENTRIES_MAX {
            entries.clear();
        }
        entries.insert(subject.to_owned(), Cached { position, envelope });
    }

    pub fn forget(&self, subject: &str) {
        self.lock().remove(subject);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events_schema::{Actor, Event, EventMeta};

    fn envelope(sequence: u64) -> Arc<Envelope> {
        let meta = EventMeta {
            event_id: uuid::Uuid::now_v7(),
            occurred_at: chrono::Utc::now(),
            command_id: "c".into(),
            correlation_id: "c".into(),
            actor: Actor::system("test"),
        };
        let event = Event::CommandRecorded(events_schema::events::CommandRecorded {
            scope: "user:x".into(),
            command_id: "c".into(),
            fingerprint: "f".into(),
            event_count: 1,
            event_positions: vec![sequence],
        });
        Arc::new(Envelope::seal(&meta, event, sequence, events_schema::GENESIS_HASH))
    }

    #[test]
    fn a_later_position_replaces_an_earlier_one_never_the_reverse() {
        let cache = AggregateCache::default();
        cache.put("hb.ledger.a", 10, envelope(1), 100);
        cache.put("hb.ledger.a", 7, envelope(2), 100);
        assert_eq!(cache.get("hb.ledger.a").map(|c| c.position), Some(10));
        assert!(cache.at("hb.ledger.a", 7).is_none());
        cache.put("hb.ledger.a", 12, envelope(3), 100);
        assert_eq!(cache.at("hb.ledger.a", 12).map(|e| e.header.sequence), Some(3));
        cache.forget("hb.ledger.a");
        assert!(cache.get("hb.ledger.a").is_none());
    }

    #[test]
    fn it_stays_bounded_and_skips_large_events() {
        let cache = AggregateCache::default();
        cache.put("hb.ledger.big", 1, envelope(1), ENVELOPE_BYTES_MAX + 1);
        assert!(cache.is_empty());
        for i in 0..(ENTRIES_MAX + 10) {
            cache.put(&format!("hb.ledger.{i}"), 1, envelope(1), 10);
            assert!(cache.len() <= ENTRIES_MAX);
        }
        assert!(!cache.is_empty());
    }
}
