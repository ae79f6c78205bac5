//! [`Watched`]: the event-log port with its appends watched. Appends are the
//! one thing a wrapper of the log looks at (the API's metrics, a test's
//! spy); reads pass through, written here once.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use super::{AppendRequest, Appended, EventLog, LogError, StoredMessage};

/// What a [`Watched`] log does around each append.
pub trait AppendWatch: Send + Sync + std::fmt::Debug {
    /// What the watch keeps of a single append's request while it is
    /// appended (`()` when it needs nothing).
    type Kept: Send;

    /// Before a single append is sent.
    fn before_append(&self, request: &AppendRequest) -> Self::Kept;

    /// After a single append has its answer; `inner` is the watched log.
    fn after_append<'a>(
        &'a self,
        inner: &'a dyn EventLog,
        kept: Self::Kept,
        result: &'a Result<Appended, LogError>,
    ) -> impl Future<Output = ()> + Send + 'a;

    /// After an atomic batch of `messages` has its answer.
    fn after_append_atomic(&self, messages: usize, result: &Result<Vec<u64>, LogError>);
}

/// An event log whose appends `watch` sees; everything else is `inner`'s.
#[derive(Debug)]
pub struct Watched<W> {
    inner: Arc<dyn EventLog>,
    watch: W,
}

impl<W: AppendWatch> Watched<W> {
    pub fn new(inner: Arc<dyn EventLog>, watch: W) -> Watched<W> {
        Watched { inner, watch }
    }

    /// The watch, for its owner to read what it saw.
    pub fn watch(&self) -> &W {
        &self.watch
    }
}

impl<W: AppendWatch> EventLog for Watched<W> {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>> {
        Box::pin(async move {
            let kept = self.watch.before_append(&request);
            let result = self.inner.append(request).await;
            self.watch.after_append(self.inner.as_ref(), kept, &result).await;
            result
        })
    }

    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        Box::pin(async move {
            let messages = requests.len();
            let result = self.inner.append_atomic(requests).await;
            self.watch.after_append_atomic(messages, &result);
            result
        })
    }

    fn last_on_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<Option<StoredMessage>, LogError>> {
        self.inner.last_on_subject(subject)
    }

    fn last_on_subjects<'a>(
        &'a self,
        subjects: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        self.inner.last_on_subjects(subjects)
    }

    fn last_on_subjects_appended_expecting_empty<'a>(
        &'a self,
        subjects: &'a [String],
        appended_expecting_empty: usize,
    ) -> BoxFuture<'a, Result<Vec<Option<StoredMessage>>, LogError>> {
        self.inner.last_on_subjects_appended_expecting_empty(subjects, appended_expecting_empty)
    }

    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<StoredMessage>, LogError>> {
        self.inner.read_from(position, max_messages)
    }

    fn read_subject_from<'a>(
        &'a self,
        subject: &'a str,
        position: u64,
        max_messages: u32,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, LogError>> {
        self.inner.read_subject_from(subject, position, max_messages)
    }

    fn read_stream(&self, position: u64) -> BoxStream<'static, Result<StoredMessage, LogError>> {
        self.inner.read_stream(position)
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, LogError>> {
        self.inner.last_position()
    }
}
