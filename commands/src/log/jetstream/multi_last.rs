//! Coalesced reads of "the last message on each of these subjects".
//!
//! Every command loads the aggregates it decides on and its own record: a
//! direct get each used to be a server request each. Here concurrent
//! callers' subjects go out together in one batched direct get
//! (`multi_last`, nats-server 2.11+), so that the server parses one request
//! for a whole group and answers every subject of it as of one position of
//! the log.
//!
//! A caller queues its subjects and, when fewer than
//! [`REQUESTS_IN_FLIGHT_MAX`] requests are out, leads a round: it takes the
//! queue (up to [`SUBJECTS_PER_REQUEST_MAX`] subjects, its own among them),
//! sends one request and hands each caller its answer; then, if callers
//! wait, a spawned task takes its slot and goes on until the queue is
//! empty. While the slots are busy, callers only queue: the busier the log,
//! the larger the rounds; an idle log answers a lone caller at once, with
//! no task in between. A caller that gives up while leading cannot strand
//! the queue: its slot's guard hands on; the other callers of its round
//! get `Unavailable` and retry.
//!
//! The replies of every round come in on one wildcard inbox subscription,
//! routed to their round by one task, which ends when the log is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::Message;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::JetStreamLog;
use crate::log::{LogError, StoredMessage};

/// Subjects in one batched request. The server refuses more than 1,024
/// answers per request; fewer keeps one reply burst small.
const SUBJECTS_PER_REQUEST_MAX: usize = 256;
/// Requests out at once. While they are out, new callers queue, and the
/// next round takes them all: the busier the log, the larger the rounds.
const REQUESTS_IN_FLIGHT_MAX: usize = 2;
/// Follow-up requests for a group whose answers exceeded the server's byte
/// limit per request (each returns at least one more message).
const ROUNDS_PER_GROUP_MAX: usize = SUBJECTS_PER_REQUEST_MAX;

type Answer = Result<Vec<Option<StoredMessage>>, LogError>;

/// One caller's wait.
struct Wanted {
    subjects: Vec<String>,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct State {
    queue: Vec<Wanted>,
    in_flight: usize,
}

/// The queue of callers, the count of requests out, and the one inbox
/// subscription their replies come in on.
pub(super) struct Coalescer {
    state: Mutex<State>,
    replies: tokio::sync::OnceCell<ReplyMux>,
    /// Dropped with the log: ends the task that routes replies.
    _log_alive: oneshot::Sender<()>,
    log_dropped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Default for Coalescer {
    fn default() -> Coalescer {
        let (alive, dropped) = oneshot::channel();
        Coalescer {
            state: Mutex::default(),
            replies: tokio::sync::OnceCell::new(),
            _log_alive: alive,
            log_dropped: Mutex::new(Some(dropped)),
        }
    }
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

/// Replies to every round on one wildcard inbox subscription
/// (`<inbox>.<round>`), routed to their round by a task: a round costs the
/// server one request, not a subscription made and removed.
struct ReplyMux {
    prefix: String,
    next_round: AtomicU64,
    routes: Routes,
}

/// A round's place in the routes, removed when the round ends however it
/// ends. Its channel holds at most the round's replies (one per subject and
/// an end marker), so it needs no other bound.
struct Route {
    round: u64,
    routes: Routes,
}

impl Drop for Route {
    fn drop(&mut self) {
        lock_plain(&self.routes).remove(&self.round);
    }
}

/// A request slot and the group of callers its round is answering. Held
/// by a caller leading a round itself or by a leader task. Dropped midway
/// (a caller that gave up, a task that panicked), it puts the callers it
/// had not answered back at the front of the queue and hands the slot on,
/// so nobody waits on a leader that left.
struct LeaderSlot {
    log: JetStreamLog,
    held: bool,
    group: Vec<Wanted>,
}

impl LeaderSlot {
    /// Takes the next group; `false`, with the slot released, when the
    /// queue is empty.
    fn take_group(&mut self) -> bool {
        match self.log.inner.multi_last.next_group() {
            Some(group) => {
                self.group = group;
                true
            }
            None => {
                self.held = false;
                false
            }
        }
    }

    /// Answers the group; its callers leave the slot only once answered.
    async fn answer(&mut self) {
        let answers = self.log.answers_for(&self.group).await;
        for (wanted, answer) in self.group.drain(..).zip(answers) {
            // A caller that gave up (timed out, dropped) is gone.
            let _ = wanted.reply.send(answer);
        }
    }

    /// Releases the slot, or hands it (with the next group) to a task
    /// when callers wait.
    fn hand_on(&mut self) {
        if !self.held {
            return;
        }
        let mut next = LeaderSlot { log: self.log.clone(), held: true, group: Vec::new() };
        self.held = false;
        if !next.take_group() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    next.answer().await;
                    while next.take_group() {
                        next.answer().await;
                    }
                });
            }
            // Outside a runtime nobody can lead: the waiting callers get
            // `Unavailable` (their answers are dropped) and retry.
            Err(_) => {
                let mut state = self.log.inner.multi_last.lock();
                state.queue.clear();
                state.in_flight -= 1;
                next.held = false;
                next.group.clear();
            }
        }
    }
}

impl Drop for LeaderSlot {
    fn drop(&mut self) {
        if !self.group.is_empty() {
            let unanswered: Vec<Wanted> = self.group.drain(..).collect();
            let mut state = self.log.inner.multi_last.lock();
            state.queue.splice(0..0, unanswered);
        }
        self.hand_on();
    }
}

/// Locks a mutex over plain data, which a panic elsewhere cannot leave
/// half-updated: a poisoned lock is used as is.
fn lock_plain<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Coalescer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock_plain(&self.state)
    }

    /// Takes the next group off the queue, or releases the caller's slot
    /// when the queue is empty.
    fn next_group(&self) -> Option<Vec<Wanted>> {
        let mut state = self.lock();
        if state.queue.is_empty() {
            state.in_flight -= 1;
            return None;
        }
        let mut subjects = 0;
        let mut taken = 0;
        for wanted in &state.queue {
            if taken > 0 && subjects + wanted.subjects.len() > SUBJECTS_PER_REQUEST_MAX {
                break;
            }
            subjects += wanted.subjects.len();
            taken += 1;
        }
        Some(state.queue.drain(..taken).collect())
    }
}

impl JetStreamLog {
    /// One try of [`crate::log::EventLog::last_on_subjects`], coalesced with
    /// concurrent callers.
    pub(super) async fn last_on_subjects_once(&self, subjects: &[String]) -> Answer {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        if subjects.len() > SUBJECTS_PER_REQUEST_MAX {
            return Err(LogError::Invalid(format!(
                "{} subjects in one read: at most {SUBJECTS_PER_REQUEST_MAX}",
                subjects.len()
            )));
        }
        if let Some(bad) = subjects.iter().find(|s| !is_literal_subject(s)) {
            return Err(LogError::Invalid(format!("not a literal subject: {bad:?}")));
        }
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut state = self.inner.multi_last.lock();
            state.queue.push(Wanted { subjects: subjects.to_vec(), reply });
            let free = state.in_flight < REQUESTS_IN_FLIGHT_MAX;
            if free {
                state.in_flight += 1;
            }
            free
        };
        if lead {
            // One round here, which takes this caller's subjects with the
            // rest of the queue; then the slot goes to a task if callers
            // wait. If this caller gives up midway, the slot hands on.
            let mut slot = LeaderSlot { log: self.clone(), held: true, group: Vec::new() };
            if slot.take_group() {
                slot.answer().await;
            }
            slot.hand_on();
        }
        let dropped = || LogError::Unavailable("a coalesced read was dropped".into());
        match tokio::time::timeout(self.request_timeout() * 2, answer).await {
            Ok(answer) => answer.unwrap_or_else(|_| Err(dropped())),
            Err(_) => Err(LogError::Unavailable("timed out waiting for a coalesced read".into())),
        }
    }

    /// Each caller's answer, from one read of the group's subjects.
    async fn answers_for(&self, group: &[Wanted]) -> Vec<Answer> {
        let mut seen: HashSet<&str> = HashSet::with_capacity(group.iter().map(|w| w.subjects.len()).sum());
        let unique: Vec<String> =
            group.iter().flat_map(|w| w.subjects.iter()).filter(|s| seen.insert(s.as_str())).cloned().collect();
        match self.multi_last(&unique).await {
            Ok(found) => group.iter().map(|w| Ok(w.subjects.iter().map(|s| found.get(s).cloned()).collect())).collect(),
            Err(error) => group.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// The last message on each subject that has one, as of one position:
    /// batched direct gets with `multi_last`, repeated with the same
    /// `up_to_seq` when the server stopped early at its byte limit.
    async fn multi_last(&self, subjects: &[String]) -> Result<HashMap<String, StoredMessage>, LogError> {
        let mut found: HashMap<String, StoredMessage> = HashMap::with_capacity(subjects.len());
        let mut up_to_seq: Option<u64> = None;
        // What the answering replica must have: everything this process
        // has seen before the read (see `consistent.rs`).
        let fence = self.seen_position();
        for _ in 0..ROUNDS_PER_GROUP_MAX {
            let missing: Vec<&String> = subjects.iter().filter(|s| !found.contains_key(*s)).collect();
            if missing.is_empty() {
                return Ok(found);
            }
            match self.multi_last_request(&missing, up_to_seq, fence, &mut found).await? {
                BatchEnd::Complete => return Ok(found),
                BatchEnd::Partial { up_to } => up_to_seq = Some(up_to),
            }
        }
        // Never an answer with subjects left unread: a missing message
        // would read as an empty aggregate.
        Err(LogError::Unavailable(format!(
            "multi-last read of {} subjects unfinished after {ROUNDS_PER_GROUP_MAX} rounds",
            subjects.len()
        )))
    }

    async fn multi_last_request(
        &self,
        subjects: &[&String],
        up_to_seq: Option<u64>,
        fence: u64,
        found: &mut HashMap<String, StoredMessage>,
    ) -> Result<BatchEnd, LogError> {
        let bytes_max = self.inner.config.multi_last_bytes_max.max(1);
        let body = match up_to_seq {
            None => serde_json::json!({ "multi_last": subjects, "max_bytes": bytes_max }),
            Some(up_to) => serde_json::json!({ "multi_last": subjects, "max_bytes": bytes_max, "up_to_seq": up_to }),
        };
        let mux = self.reply_mux().await?;
        let round = mux.next_round.fetch_add(1, Ordering::Relaxed);
        let (sender, mut receiver) = mpsc::unbounded_channel();
        lock_plain(&mux.routes).insert(round, sender);
        let _route = Route { round, routes: mux.routes.clone() };
        self.inner
            .read_client
            .publish_with_reply(
                self.inner.subject_direct_get.clone(),
                format!("{}.{round}", mux.prefix),
                body.to_string().into(),
            )
            .await
            .map_err(|err| LogError::Unavailable(format!("multi-last publish: {err}")))?;
        let mut replies = futures_util::stream::poll_fn(|cx| receiver.poll_recv(cx));
        let (messages, end) = self.collect_batch(&mut replies, subjects.len()).await?;
        for message in messages {
            found.insert(message.subject.clone(), message);
        }
        // No end marker: none of the subjects has a message.
        let Some(headers) = end else { return Ok(BatchEnd::Complete) };
        let number = |name: &str| -> Option<u64> { headers.get(name).and_then(|v| v.as_str().trim().parse().ok()) };
        // A follower behind what this process has seen answers from the
        // past: asked again (another replica, or the same one caught up).
        if let Some(answered_up_to) = number(HEADER_UP_TO_SEQUENCE)
            && answered_up_to < fence
        {
            return Err(LogError::Unavailable(format!(
                "a replica at position {answered_up_to} answered a read that must see {fence}"
            )));
        }
        match (number(HEADER_NUM_PENDING).unwrap_or(0), number(HEADER_UP_TO_SEQUENCE)) {
            (0, _) => Ok(BatchEnd::Complete),
            (_, Some(up_to)) => Ok(BatchEnd::Partial { up_to }),
            (_, None) => Err(LogError::Invalid("multi-last read stopped early without its Nats-UpTo-Sequence".into())),
        }
    }
}

impl JetStreamLog {
    /// The reply subscription, made on first use, with its routing task.
    async fn reply_mux(&self) -> Result<&ReplyMux, LogError> {
        let coalescer = &self.inner.multi_last;
        coalescer
            .replies
            .get_or_try_init(|| async {
                let client = &self.inner.read_client;
                let prefix = format!("{}.ml", client.new_inbox());
                let mut subscriber = client
                    .subscribe(format!("{prefix}.*"))
                    .await
                    .map_err(|err| LogError::Unavailable(format!("subscribe: {err}")))?;
                let routes: Routes = Arc::default();
                let task_routes = routes.clone();
                let log_dropped = lock_plain(&coalescer.log_dropped).take();
                tokio::spawn(async move {
                    let Some(mut log_dropped) = log_dropped else { return };
                    loop {
                        tokio::select! {
                            _ = &mut log_dropped => break,
                            reply = subscriber.next() => {
                                let Some(reply) = reply else { break };
                                let round = reply.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
                                if let Some(sender) = round.and_then(|r| lock_plain(&task_routes).get(&r).cloned()) {
                                    // A round that ended (timed out) is gone.
                                    let _ = sender.send(reply);
                                }
                            }
                        }
                    }
                });
                Ok(ReplyMux { prefix, next_round: AtomicU64::new(0), routes })
            })
            .await
    }
}

const HEADER_NUM_PENDING: &str = "Nats-Num-Pending";
const HEADER_UP_TO_SEQUENCE: &str = "Nats-UpTo-Sequence";

/// How a batched reply ended.
enum BatchEnd {
    /// Every subject with a message was answered.
    Complete,
    /// The server stopped at its byte limit; ask again for the rest, as of
    /// the same position.
    Partial { up_to: u64 },
}

/// A subject the server matches literally: no wildcard token, no empty
/// token, no whitespace (a multi-last filter would expand wildcards).
fn is_literal_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| !token.is_empty() && token != "*" && token != ">")
        && !subject.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literal_subjects_are_read() {
        assert!(is_literal_subject("hb.ledger.0190-abc"));
        assert!(!is_literal_subject("hb.ledger.*"));
        assert!(!is_literal_subject("hb.>"));
        assert!(!is_literal_subject("hb..x"));
        assert!(!is_literal_subject("hb.a b"));
        assert!(!is_literal_subject(""));
    }
}
