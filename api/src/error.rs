//! `AppError`: every failure the API answers, and the ONE place where each
//! becomes an RFC 9457 `application/problem+json` answer.
//!
//! Status per code (the contract's codes, and the choices it leaves to us):
//!
//! | code | status |
//! | --- | --- |
//! | `malformed_json` (not JSON, syntax error, empty body) | 400 |
//! | `invalid_signature` (a Stripe webhook whose signature does not verify, or is stale) | 400 |
//! | `payment_provider_error` (Stripe refused or failed a call; details logged) | 502 |
//! | `validation_failed`, `amount_out_of_range`, `below_minimum` (read, but not acceptable) | 422 |
//! | `unsupported_media_type` (a body without `Content-Type: application/json`) | 415 |
//! | `payload_too_large` (over `BODY_BYTES_MAX`) | 413 |
//! | `unauthorized` (no, bad, expired token; wrong password), `session_revoked` (the token's login ended, or the user's sessions were revoked after it was issued), `refresh_token_reused` (a refresh token presented again: its login ends) | 401 |
//! | `forbidden`, `self_gift_forbidden` | 403 |
//! | `not_found` (unknown id, unknown route, unparseable id in a path) | 404 |
//! | `method_not_allowed` | 405 |
//! | `insufficient_funds`, `insufficient_earnings` | 402 |
//! | `conflict`, `email_taken`, `username_taken`, `stream_already_live`, `stream_not_live`, `payout_not_pending`, `too_many_pending_payouts`, `idempotency_key_reused`, `contention` | 409 |
//! | `rate_limited` (with `Retry-After`) | 429 |
//! | `internal` (details logged, never sent) | 500 |
//! | `maintenance`, `projection_lagging`, `unavailable` (with `Retry-After`) | 503 |
//!
//! 400 means "we could not read it", 422 "we read it and it is not
//! acceptable". Client errors (4xx) are logged at debug level, never as
//! errors; 5xx are logged as errors with their cause, which never reaches
//! the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use commands::handler::CommandError;
use commands::log::LogError;
use domain::DomainError;
use projections::ProjectionError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Where problem types are documented (`type` is this plus the code).
pub const PROBLEM_TYPE_BASE: &str = "https://api.halobuzz.com/problems/";

/// An RFC 9457 problem document, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `https://api.halobuzz.com/problems/<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// A stable machine word (`insufficient_funds`, `validation_failed`, ...).
    pub code: String,
    /// The offending field, for validation failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Everything the API can answer instead of a success.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A request field we reject before any command runs.
    #[error("{field}: {reason}")]
    Validation { field: String, reason: String },
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A Stripe webhook that does not verify: nothing is recorded.
    #[error("the Stripe signature does not verify: {0}")]
    InvalidSignature(#[from] crate::stripe::SignatureError),
    /// A call to Stripe failed: the cause is logged, not sent.
    #[error("the payment provider failed")]
    PaymentProvider(String),
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than this service accepts (BODY_BYTES_MAX)")]
    PayloadTooLarge,
    #[error("the request's body did not arrive in time (HTTP_BODY_TIMEOUT_MS)")]
    RequestTimeout,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("the idempotency key was used before for a different request")]
    IdempotencyKeyReused,
    /// The first answer to a rejected command, answered again to a repeat
    /// of its `Idempotency-Key` (see `routes::guarded`).
    #[error("{}", .0.detail)]
    Remembered(Box<Problem>),
    #[error("too many concurrent changes to the same account; retry")]
    Contention,
    #[error("too many requests; retry in {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("the service is in maintenance: commands are paused, queries still answer")]
    Maintenance,
    #[error("the read models reached position {reached}, not {wanted}, within the wait")]
    ProjectionLagging { wanted: u64, reached: u64 },
    /// A dependency (event log, read store) cannot answer now.
    #[error("a dependency is unavailable")]
    Unavailable(String),
    /// A bug or corrupt data: the cause is logged, the client sees a generic
    /// message.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn validation(field: impl Into<String>, reason: impl Into<String>) -> AppError {
        AppError::Validation { field: field.into(), reason: reason.into() }
    }

    pub fn not_found(what: impl Into<String>) -> AppError {
        AppError::NotFound(what.into())
    }

    /// The status and the stable code of the contract.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Domain(e) => (domain_status(e), e.code()),
            AppError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            AppError::InvalidSignature(_) => (StatusCode::BAD_REQUEST, "invalid_signature"),
            AppError::PaymentProvider(_) => (StatusCode::BAD_GATEWAY, "payment_provider_error"),
            AppError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            AppError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AppError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            AppError::IdempotencyKeyReused => (StatusCode::CONFLICT, "idempotency_key_reused"),
            // The body keeps the first answer's own code; metrics and logs
            // count a replayed rejection as such.
            AppError::Remembered(p) => {
                (StatusCode::from_u16(p.status).unwrap_or(StatusCode::CONFLICT), "remembered_rejection")
            }
            AppError::Contention => (StatusCode::CONFLICT, "contention"),
            AppError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AppError::Maintenance => (StatusCode::SERVICE_UNAVAILABLE, "maintenance"),
            AppError::ProjectionLagging { .. } => (StatusCode::SERVICE_UNAVAILABLE, "projection_lagging"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Whether this rejection was decided from the state of the ledger (and
    /// so must be answered again to a repeat of its key, however the state
    /// changed since): the domain's rejections and unknown ids. Malformed
    /// or invalid requests are not: like Stripe, the memory keeps only the
    /// answers of requests that started executing.
    pub fn is_decided_rejection(&self) -> bool {
        match self {
            // About the caller's credentials, not the command: a repeat
            // with a new token is decided afresh.
            AppError::Domain(
                DomainError::Validation { .. } | DomainError::SessionRevoked | DomainError::RefreshTokenReused,
            ) => false,
            AppError::Domain(_) | AppError::NotFound(_) => true,
            _ => false,
        }
    }

    /// The problem document sent to the client.
    pub fn problem(&self) -> Problem {
        if let AppError::Remembered(problem) = self {
            return (**problem).clone();
        }
        let (status, code) = self.status_and_code();
        let detail = match self {
            // Internal causes stay in the log.
            AppError::Unavailable(_) => "a dependency of the service is unavailable; retry shortly".to_string(),
            AppError::Internal(_) => "an internal error occurred; it has been logged".to_string(),
            AppError::PaymentProvider(_) => "the payment provider could not complete the request; retry".to_string(),
            other => other.to_string(),
        };
        let field = match self {
            AppError::Validation { field, .. } => Some(field.clone()),
            AppError::Domain(DomainError::Validation { field, .. }) => Some((*field).to_string()),
            _ => None,
        };
        Problem {
            problem_type: format!("{PROBLEM_TYPE_BASE}{code}"),
            title: title(status, code),
            status: status.as_u16(),
            detail,
            code: code.to_string(),
            field,
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            AppError::RateLimited { retry_after_s } => Some((*retry_after_s).max(1)),
            AppError::Maintenance => Some(60),
            AppError::ProjectionLagging { .. } | AppError::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

/// Statuses of the domain's rejections (see the table above).
fn domain_status(e: &DomainError) -> StatusCode {
    match e {
        DomainError::Validation { .. } | DomainError::AmountOutOfRange | DomainError::BelowMinimum { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        DomainError::InsufficientFunds { .. } | DomainError::InsufficientEarnings { .. } => {
            StatusCode::PAYMENT_REQUIRED
        }
        DomainError::StreamNotFound
        | DomainError::UserNotFound
        | DomainError::PayoutNotFound
        | DomainError::AdjustmentNotFound => StatusCode::NOT_FOUND,
        DomainError::SelfGift
        | DomainError::NotStreamHost
        | DomainError::NotSessionOwner
        | DomainError::SelfApprovalForbidden => StatusCode::FORBIDDEN,
        DomainError::SessionRevoked | DomainError::RefreshTokenReused => StatusCode::UNAUTHORIZED,
        DomainError::TooManyPendingPayouts { .. }
        | DomainError::PayoutNotPending
        | DomainError::PaymentNotResolvable
        | DomainError::StreamNotLive
        | DomainError::StreamAlreadyLive
        | DomainError::StreamAlreadyExists
        | DomainError::UserAlreadyRegistered
        | DomainError::EmailTaken
        | DomainError::UsernameTaken
        | DomainError::AdjustmentNotProposed
        | DomainError::AdjustmentAlreadyExists => StatusCode::CONFLICT,
    }
}

fn title(status: StatusCode, code: &str) -> String {
    match code {
        "insufficient_funds" => "Insufficient funds".into(),
        "insufficient_earnings" => "Insufficient earnings".into(),
        "stream_not_live" => "Stream not live".into(),
        "idempotency_key_reused" => "Idempotency key reused".into(),
        "projection_lagging" => "Read models lagging".into(),
        "validation_failed" => "Validation failed".into(),
        "session_revoked" => "Session revoked".into(),
        "refresh_token_reused" => "Refresh token reused".into(),
        _ => status.canonical_reason().unwrap_or("Error").to_string(),
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            match &self {
                AppError::Maintenance | AppError::ProjectionLagging { .. } => {
                    tracing::debug!(code, error = %self, "request refused")
                }
                AppError::Unavailable(cause) | AppError::Internal(cause) | AppError::PaymentProvider(cause) => {
                    tracing::error!(code, %cause, "request failed")
                }
                other => tracing::error!(code, error = %other, "request failed"),
            }
        } else {
            // The client's mistake, not ours: not an error in our logs.
            tracing::debug!(code, error = %self, "request rejected");
        }
        let problem = self.problem();
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after_s() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, AppError::Remembered(_)) {
            headers.insert(header::HeaderName::from_static("idempotency-replayed"), HeaderValue::from_static("true"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<CommandError> for AppError {
    fn from(e: CommandError) -> AppError {
        match e {
            CommandError::Domain(d) => AppError::Domain(d),
            CommandError::IdempotencyKeyReused => AppError::IdempotencyKeyReused,
            CommandError::Contention { .. } => AppError::Contention,
            CommandError::Log(log) => log.into(),
            CommandError::Corrupt { position, reason } => {
                AppError::Internal(format!("corrupt event at position {position}: {reason}"))
            }
            e @ CommandError::PostingScanTooLong { .. } => AppError::Internal(e.to_string()),
        }
    }
}

impl From<LogError> for AppError {
    fn from(e: LogError) -> AppError {
        match e {
            LogError::Unavailable(cause) => AppError::Unavailable(format!("event log: {cause}")),
            // A conflict that escaped the retry loop is contention.
            LogError::Conflict { .. } | LogError::Duplicate { .. } => AppError::Contention,
            other => AppError::Internal(format!("event log: {other}")),
        }
    }
}

impl From<ProjectionError> for AppError {
    fn from(e: ProjectionError) -> AppError {
        match e {
            ProjectionError::BadCursor => AppError::validation("cursor", "is not a cursor this service issued"),
            ProjectionError::InvalidInput(reason) => AppError::validation("query", reason),
            ProjectionError::Lagging { wanted, reached } => AppError::ProjectionLagging { wanted, reached },
            ProjectionError::Store(cause) | ProjectionError::Source(cause) => {
                AppError::Unavailable(format!("read store: {cause}"))
            }
            other => AppError::Internal(format!("read store: {other}")),
        }
    }
}

impl From<crate::stripe::GatewayError> for AppError {
    fn from(e: crate::stripe::GatewayError) -> AppError {
        AppError::PaymentProvider(e.to_string())
    }
}

impl From<crate::stripe::EventError> for AppError {
    fn from(e: crate::stripe::EventError) -> AppError {
        match e {
            crate::stripe::EventError::NotJson(reason) => AppError::MalformedJson(reason),
            crate::stripe::EventError::Missing(field) => {
                AppError::MalformedJson(format!("not a Stripe event: no valid `{field}`"))
            }
        }
    }
}

/// The result of every handler.
pub type ApiResult<T> = Result<T, AppError>;
