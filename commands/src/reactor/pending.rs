//! The events whose command record the reactor has not seen yet.

use events_schema::Envelope;

/// A command's identity: its scope and id.
pub(super) type CommandKey = (String, String);

/// Events whose command record has not been seen yet, in log order. The
/// reactor reads the records' subjects too: a record normally follows its
/// event within milliseconds and resolves it without a lookup. The
/// checkpoint never moves past the first unresolved event.
#[derive(Default)]
pub(super) struct PendingRecords {
    /// (position, key, stored at in ms, envelope), in log order.
    pub(super) entries: std::collections::VecDeque<(u64, CommandKey, i64, Envelope)>,
    pub(super) open: std::collections::HashSet<CommandKey>,
}

impl PendingRecords {
    pub(super) fn push(&mut self, position: u64, envelope: Envelope, stored_at_ms: i64) {
        let Some(scope) = crate::handler::scope_of(&envelope.header.actor) else { return };
        let key = (scope, envelope.header.command_id.clone());
        self.open.insert(key.clone());
        self.entries.push_back((position, key, stored_at_ms, envelope));
    }

    pub(super) fn resolve(&mut self, key: &CommandKey) {
        self.open.remove(key);
    }

    /// Drops resolved entries from the front.
    pub(super) fn trim(&mut self) {
        while let Some((_, key, _, _)) = self.entries.front() {
            if self.open.contains(key) {
                break;
            }
            self.entries.pop_front();
        }
    }

    /// The checkpoint to save after crediting up to `position`.
    pub(super) fn checkpoint(&mut self, position: u64) -> u64 {
        self.trim();
        match self.entries.front() {
            Some((first, _, _, _)) => first.saturating_sub(1).min(position),
            None => position,
        }
    }
}
