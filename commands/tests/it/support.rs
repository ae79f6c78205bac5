//! Helpers shared by the integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use commands::handler::repair_record_request;
use commands::log::{AppendRequest, Appended, EventLog, JetStreamLog, LogError, StoredMessage};
use events_schema::Envelope;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// Logs of the code under test, shown for failing tests (`RUST_LOG` filters).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub fn request(subject: &str, payload: &str, msg_id: &str, expected: u64) -> AppendRequest {
    AppendRequest {
        subject: subject.to_owned(),
        payload: Bytes::from(payload.to_owned()),
        msg_id: Some(msg_id.to_owned()),
        expected_last_subject_seq: expected,
    }
}

/// A TCP proxy in front of a server that can lose what the server sends:
/// once armed with a marker, the first chunk from the server containing it
/// (e.g. a publish ack) and everything after it are dropped, so a request
/// reaches the server but its reply never comes back. `restore` then cuts
/// every connection through the proxy (the client reconnects, cleanly).
pub struct LossyProxy {
    port: u16,
    state: std::sync::Arc<LossState>,
    cut: tokio::sync::watch::Sender<u64>,
    accept_task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct LossState {
    marker: std::sync::Mutex<Option<&'static [u8]>>,
    losing: std::sync::atomic::AtomicBool,
}

impl LossState {
    /// Whether to drop this chunk (and, from then on, every chunk).
    fn drops(&self, chunk: &[u8]) -> bool {
        use std::sync::atomic::Ordering;
        if self.losing.load(Ordering::SeqCst) {
            return true;
        }
        let marker = *self.marker.lock().expect("marker lock");
        let hit = marker.is_some_and(|marker| chunk.windows(marker.len()).any(|window| window == marker));
        if hit {
            self.losing.store(true, Ordering::SeqCst);
        }
        hit
    }
}

impl LossyProxy {
    pub async fn start(upstream_port: u16) -> LossyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let state = std::sync::Arc::new(LossState::default());
        let (cut, cut_receiver) = tokio::sync::watch::channel(0_u64);
        let accept_state = std::sync::Arc::clone(&state);
        let accept_task = tokio::spawn(async move {
            // Ends when the test aborts it (Drop).
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let state = std::sync::Arc::clone(&accept_state);
                // Only cuts after this connection opened concern it.
                let mut cut_up = cut_receiver.clone();
                cut_up.borrow_and_update();
                let mut cut_down = cut_up.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                        _ = cut_up.changed() => {}
                    }
                });
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buffer = vec![0_u8; 64 * 1024];
                    loop {
                        tokio::select! {
                            read = server_read.read(&mut buffer) => {
                                let Ok(length) = read else { break };
                                if length == 0 {
                                    break;
                                }
                                if state.drops(&buffer[..length]) {
                                    continue;
                                }
                                if client_write.write_all(&buffer[..length]).await.is_err() {
                                    break;
                                }
                            }
                            _ = cut_down.changed() => break,
                        }
                    }
                });
            }
        });
        LossyProxy { port, state, cut, accept_task }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Lose the first server chunk containing `marker` and all after it.
    pub fn lose_replies_from(&self, marker: &'static [u8]) {
        *self.state.marker.lock().expect("marker lock") = Some(marker);
    }

    /// Stop losing, and cut every connection through the proxy.
    pub fn restore(&self) {
        *self.state.marker.lock().expect("marker lock") = None;
        self.state.losing.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// The log, watched: counts the conflicts the handler's appends meet, and
/// can play the gift reactor at the worst moment (once armed, it writes the
/// command record of the next single gift commit right after that commit
/// lands, before the handler writes its own).
#[derive(Debug)]
pub struct SpyLog {
    inner: Arc<JetStreamLog>,
    conflicts: AtomicU64,
    record_next_commit: AtomicBool,
}

impl SpyLog {
    pub fn new(inner: Arc<JetStreamLog>) -> SpyLog {
        SpyLog { inner, conflicts: Default::default(), record_next_commit: Default::default() }
    }

    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::SeqCst)
    }

    pub fn record_next_commit_first(&self) {
        self.record_next_commit.store(true, Ordering::SeqCst);
    }

    async fn append_watched(&self, request: AppendRequest) -> Result<Appended, LogError> {
        let is_commit = request.subject.starts_with("hb.ledger.");
        let payload = request.payload.clone();
        let appended = self.inner.append(request).await;
        match &appended {
            Err(LogError::Conflict { .. }) => {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            Ok(appended) if is_commit && self.record_next_commit.swap(false, Ordering::SeqCst) => {
                let envelope = Envelope::decode(&payload).expect("a commit decodes");
                let record =
                    repair_record_request(&envelope, appended.position).expect("a commit of a command with an id");
                self.inner.append(record).await.expect("the reactor's record");
            }
            _ => {}
        }
        appended
    }
}

impl EventLog for SpyLog {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<Appended, LogError>> {
        self.append_watched(request).boxed()
    }

    fn append_atomic(&self, requests: Vec<AppendRequest>) -> BoxFuture<'_, Result<Vec<u64>, LogError>> {
        self.inner.append_atomic(requests)
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
