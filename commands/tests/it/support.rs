//! Helpers shared by the integration tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use commands::handler::repair_record_request;
use commands::log::{AppendRequest, AppendWatch, Appended, EventLog, LogError, Watched};
use events_schema::Envelope;

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
pub type SpyLog = Watched<Spy>;

#[derive(Debug, Default)]
pub struct Spy {
    conflicts: AtomicU64,
    record_next_commit: AtomicBool,
}

impl Spy {
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::SeqCst)
    }

    pub fn record_next_commit_first(&self) {
        self.record_next_commit.store(true, Ordering::SeqCst);
    }
}

impl AppendWatch for Spy {
    /// A commit's payload (the commit decides the record).
    type Kept = Option<Bytes>;

    fn before_append(&self, request: &AppendRequest) -> Option<Bytes> {
        request.subject.starts_with("hb.ledger.").then(|| request.payload.clone())
    }

    async fn after_append<'a>(
        &'a self,
        inner: &'a dyn EventLog,
        commit: Option<Bytes>,
        result: &'a Result<Appended, LogError>,
    ) {
        match (result, commit) {
            (Err(LogError::Conflict { .. }), _) => {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
            }
            (Ok(appended), Some(payload)) if self.record_next_commit.swap(false, Ordering::SeqCst) => {
                let envelope = Envelope::decode(&payload).expect("a commit decodes");
                let record =
                    repair_record_request(&envelope, appended.position).expect("a commit of a command with an id");
                inner.append(record).await.expect("the reactor's record");
            }
            _ => {}
        }
    }

    fn after_append_atomic(&self, _messages: usize, _result: &Result<Vec<u64>, LogError>) {}
}
