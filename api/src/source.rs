//! The projectors' log source over the event-log port: `projections` does
//! not depend on `commands`, so the process that runs both adapts one to the
//! other here.
//!
//! Two ways to read. Following the log's head, pages come from batched
//! direct gets (stateless, any replica answers). Far behind it (a rebuild, a
//! projector catching up), a page that came back full is the sign: the next
//! pages come from one pipelined ordered read (`EventLog::read_stream`),
//! kept open between calls while they ask for the position it is at, which
//! delivers about twice as fast as direct gets. When the stream reaches the
//! end it was opened for, reading falls back to direct gets.

use std::sync::Arc;
use std::time::Duration;

use commands::log::{EventLog, LogError, StoredMessage};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use projections::{LogMessage, LogSource, ProjectionError};
use tokio::sync::Mutex;

/// How long a page read from the open stream waits for more messages once
/// none is ready, before it is returned short.
const STREAM_PAGE_WAIT: Duration = Duration::from_millis(5);

/// [`LogSource`] over any [`EventLog`] (the JetStream log in the service).
pub struct EventLogSource {
    log: Arc<dyn EventLog>,
    /// The open pipelined read, with the position it delivers next.
    open: Mutex<Option<OpenRead>>,
}

struct OpenRead {
    next_position: u64,
    messages: BoxStream<'static, Result<StoredMessage, LogError>>,
    /// The stream has ended (it must not be polled again).
    ended: bool,
}

impl std::fmt::Debug for EventLogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLogSource").finish_non_exhaustive()
    }
}

impl EventLogSource {
    pub fn new(log: Arc<dyn EventLog>) -> EventLogSource {
        EventLogSource { log, open: Mutex::new(None) }
    }
}

fn source_error(e: LogError) -> ProjectionError {
    ProjectionError::Source(e.to_string())
}

fn message(m: StoredMessage) -> LogMessage {
    LogMessage { position: m.position, payload: m.payload }
}

/// Up to `max_messages` from the open read: the first awaited, the rest as
/// long as they keep coming. `None` when the read has ended (or failed).
async fn page_of(open: &mut OpenRead, max_messages: u32) -> Result<Option<Vec<LogMessage>>, ProjectionError> {
    if open.ended {
        return Ok(None);
    }
    let mut page = Vec::with_capacity(max_messages.min(8_192) as usize);
    let Some(first) = open.messages.next().await else {
        open.ended = true;
        return Ok(None);
    };
    page.push(message(first.map_err(source_error)?));
    while page.len() < max_messages as usize {
        let next = match open.messages.next().now_or_never() {
            Some(next) => next,
            None => match tokio::time::timeout(STREAM_PAGE_WAIT, open.messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(m)) => page.push(message(m)),
            Some(Err(e)) => return Err(source_error(e)),
            None => {
                open.ended = true;
                break;
            }
        }
    }
    open.next_position = page.last().map_or(open.next_position, |m| m.position + 1);
    Ok(Some(page))
}

impl LogSource for EventLogSource {
    fn read_from(&self, position: u64, max_messages: u32) -> BoxFuture<'_, Result<Vec<LogMessage>, ProjectionError>> {
        Box::pin(async move {
            let mut open = self.open.lock().await;
            if let Some(read) = open.as_mut().filter(|r| r.next_position == position) {
                match page_of(read, max_messages).await {
                    Ok(Some(page)) => return Ok(page),
                    // Ended: the log's end as it was when the read opened.
                    Ok(None) => {}
                    Err(e) => {
                        *open = None;
                        return Err(e);
                    }
                }
            }
            *open = None;
            let page: Vec<LogMessage> = self
                .log
                .read_from(position, max_messages)
                .await
                .map_err(source_error)?
                .into_iter()
                .map(message)
                .collect();
            // A full page: far behind the head; stream the next pages.
            if page.len() as u64 >= u64::from(max_messages)
                && let Some(last) = page.last()
            {
                let next_position = last.position + 1;
                *open = Some(OpenRead { next_position, messages: self.log.read_stream(next_position), ended: false });
            }
            Ok(page)
        })
    }

    fn last_position(&self) -> BoxFuture<'_, Result<u64, ProjectionError>> {
        Box::pin(async move { self.log.last_position().await.map_err(source_error) })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use commands::log::AppendRequest;
    use commands::testing::NatsServer;

    use super::*;

    async fn log_of(server: &NatsServer, count: u64) -> Arc<dyn EventLog> {
        let log = Arc::new(server.event_log().await);
        for i in 1..=count {
            let request = AppendRequest {
                subject: format!("hb.user.{i}"),
                payload: Bytes::from(format!("message {i}")),
                msg_id: Some(format!("m{i}")),
                expected_last_subject_seq: 0,
            };
            log.append(request).await.expect("append");
        }
        log
    }

    /// Pages in order and without gaps, whether they come from direct gets
    /// or from the stream opened after a full page, and wherever a reader
    /// jumps to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pages_are_contiguous_through_direct_gets_and_the_open_stream() {
        let server = NatsServer::start().await;
        let source = EventLogSource::new(log_of(&server, 2_500).await);
        let mut next = 1u64;
        let mut pages = 0;
        while next <= 2_500 {
            let page = source.read_from(next, 300).await.expect("page");
            assert!(!page.is_empty() && page.len() <= 300);
            for m in &page {
                assert_eq!(m.position, next);
                assert_eq!(m.payload, Bytes::from(format!("message {next}")));
                next += 1;
            }
            pages += 1;
        }
        assert!(pages >= 9, "{pages} pages");
        assert!(source.open.lock().await.is_some(), "full pages opened a stream");
        // At the end: nothing more, and a jump back reads from there.
        assert!(source.read_from(2_501, 300).await.expect("end").is_empty());
        let again = source.read_from(1_000, 10).await.expect("jump");
        assert_eq!(again.iter().map(|m| m.position).collect::<Vec<_>>(), (1_000..1_010).collect::<Vec<_>>());
        let jump = source.read_from(42, 5).await.expect("another jump");
        assert_eq!(jump.first().map(|m| m.position), Some(42));
    }
}
