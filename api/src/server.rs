//! The HTTP/1 server in front of the router: what `axum::serve` did, plus
//! the limits that keep slow clients from holding the service
//! (`../shared/spec/api.md`, "Limits that protect the service").
//!
//! - Headers: hyper's header read timeout, which needs a timer that
//!   `axum::serve` does not install (`HTTP_HEADER_TIMEOUT_MS`); a connection
//!   that has not sent a request's head in time is closed. It also bounds
//!   how long an idle keep-alive connection is kept.
//! - Bodies: the body of a request must arrive within
//!   `HTTP_BODY_TIMEOUT_MS` of the request getting its slot; otherwise the
//!   answer is `408` and the connection is closed.
//! - In-flight requests: one pool per kind (the Stripe webhook, commands,
//!   queries), so that a flood of one kind (say, webhooks dribbling their
//!   bodies) cannot starve the others; health, metrics and the docs take no
//!   slot and always answer.
//! - Headers on every answer: `X-Content-Type-Options: nosniff`; on the auth
//!   routes (whose answers carry tokens) `Cache-Control: no-store`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tower::ServiceExt;

use crate::config::HttpLimits;
use crate::error::AppError;

/// How long the accept loop pauses after an accept error (out of file
/// descriptors, typically), so that it does not spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 50;
/// The webhook's path: its own pool.
const WEBHOOK_PATH: &str = "/api/v1/webhooks/stripe";
/// Paths that take no slot: they must answer whatever else is queued.
const UNLIMITED_PATHS: &[&str] = &["/health", "/metrics", "/docs", "/api/v1/openapi.json"];
/// Answers under this prefix carry tokens (register, login, refresh...).
const TOKEN_ROUTES_PREFIX: &str = "/api/v1/auth/";

/// The router with its per-kind pools and the body timeout.
#[derive(Clone)]
struct Front {
    router: Router,
    body_timeout: Duration,
    webhook: Arc<Semaphore>,
    commands: Arc<Semaphore>,
    queries: Arc<Semaphore>,
}

impl Front {
    fn new(router: Router, limits: &HttpLimits) -> Front {
        Front {
            router,
            body_timeout: limits.body_timeout,
            webhook: Arc::new(Semaphore::new(limits.webhook_in_flight_max)),
            commands: Arc::new(Semaphore::new(limits.commands_in_flight_max)),
            queries: Arc::new(Semaphore::new(limits.queries_in_flight_max)),
        }
    }

    /// The pool a request waits in, if any.
    fn pool_of(&self, method: &Method, path: &str) -> Option<&Arc<Semaphore>> {
        if UNLIMITED_PATHS.contains(&path) {
            None
        } else if path == WEBHOOK_PATH {
            Some(&self.webhook)
        } else if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
            Some(&self.queries)
        } else {
            Some(&self.commands)
        }
    }

    async fn handle(self, peer: SocketAddr, mut request: Request<Incoming>) -> Response {
        request.extensions_mut().insert(ConnectInfo(peer));
        let tokens = request.uri().path().starts_with(TOKEN_ROUTES_PREFIX);
        // The pools are never closed: `acquire_owned` cannot fail.
        let _slot = match self.pool_of(request.method(), request.uri().path()) {
            Some(pool) => pool.clone().acquire_owned().await.ok(),
            None => None,
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let request = if request.body().is_end_stream() {
            request.map(Body::new)
        } else {
            let flag = timed_out.clone();
            let deadline = Box::pin(tokio::time::sleep(self.body_timeout));
            request.map(|inner| Body::new(TimedBody { inner, deadline, timed_out: flag }))
        };
        let mut response = match self.router.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if timed_out.load(Ordering::Relaxed) {
            response = AppError::RequestTimeout.into_response();
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let headers = response.headers_mut();
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if tokens {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}

/// A request body that fails once its deadline passes (and says so in
/// `timed_out`, so that the answer becomes `408`).
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("the request body did not arrive within HTTP_BODY_TIMEOUT_MS".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` until `draining` fires; then stops
/// accepting, lets each connection finish its request in flight (idle ones
/// close at once), and returns when all have closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    mut draining: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let front = Front::new(router, &limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let (stop, stopping) = watch::channel(false);
    // Every connection task holds a sender: when all are dropped, all
    // connections have closed.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)).await;
                    continue;
                }
            },
            _ = &mut draining => break,
        };
        // Small answers go out at once (as `axum::serve` does).
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let front = front.clone();
            async move { Ok::<_, Infallible>(front.handle(peer, request).await) }
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(connection);
            let mut stop_asked = false;
            loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, %peer, "connection closed on an error");
                        }
                        break;
                    }
                    changed = stopping.changed(), if !stop_asked => {
                        stop_asked = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    let _ = all_closed.recv().await;
    Ok(())
}

/// What `/health` says of a dependency whose probe failed: its state
/// (`unreachable`), never the error's text, which goes to the log.
pub fn probe_failed(error: &dyn std::fmt::Display) -> String {
    tracing::warn!(%error, "a health probe failed");
    "unreachable".into()
}
