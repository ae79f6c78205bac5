//! Extractors that answer bad input with OUR problem+json (never axum's
//! plain-text rejections): JSON bodies, query strings, path ids, the bearer
//! token (with the per-user rate limit), the roles a route needs, and the
//! `Idempotency-Key`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use events_schema::Role;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::AppError;
use crate::state::AppState;

/// `Idempotency-Key` is at most this long (the contract).
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;
/// `X-Request-Id` values longer than this are ignored.
const REQUEST_ID_CHARS_MAX: usize = 128;

/// A JSON body; any failure to read it is a problem+json 4xx.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    match rejection {
        // Read as JSON, but not of the expected shape: a missing field, a
        // wrong type, a number out of range.
        JsonRejection::JsonDataError(e) => AppError::validation("body", data_error_reason(&e.body_text())),
        JsonRejection::JsonSyntaxError(e) => AppError::MalformedJson(e.body_text()),
        JsonRejection::MissingJsonContentType(_) => AppError::UnsupportedMediaType,
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        other => AppError::MalformedJson(other.body_text()),
    }
}

/// serde's message without axum's prefix ("Failed to deserialize the JSON
/// body into the target type: ").
fn data_error_reason(text: &str) -> String {
    text.split_once(": ").map(|(_, rest)| rest).unwrap_or(text).to_string()
}

/// A query string; a bad one is `validation_failed`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(e) => Err(AppError::validation("query", data_error_reason(&e.body_text()))),
        }
    }
}

/// `?minPosition=N`, accepted by every query.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Consistency {
    /// Answer once the read models reached this log position (≤ 5 s)
    #[serde(rename = "minPosition")]
    pub min_position: Option<u64>,
}

impl<S: Send + Sync> FromRequestParts<S> for Consistency {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "minPosition")]
            min_position: Option<String>,
        }
        let ApiQuery(raw) = ApiQuery::<Raw>::from_request_parts(parts, state).await?;
        let min_position = match raw.min_position {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| AppError::validation("minPosition", "must be a non-negative integer"))?,
            ),
        };
        Ok(Consistency { min_position })
    }
}

/// An id in the path. An id that cannot be one names nothing: `not_found`.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(_) => Err(AppError::not_found("no resource has this id")),
        }
    }
}

/// The caller, from a valid access token. Also counts the request against
/// the caller's rate limit.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    /// The sessions epoch the token carries: commands that move coins and
    /// privileged routes refuse it once lower than the user's
    /// (`AppState::roles_checked`, `commands::handler::Caller`).
    pub sessions_epoch: u64,
}

impl AuthUser {
    /// The caller as a command that moves coins checks it.
    pub fn caller(&self) -> commands::handler::Caller {
        commands::handler::Caller { user_id: self.id, sessions_epoch: self.sessions_epoch }
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(AppError::Unauthorized("an access token is required (Authorization: Bearer <token>)"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(AppError::Unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let (id, claims) = app.auth.verify_access(token)?;
        if let Some(limiter) = &app.limiter
            && let Err(refused) = limiter.check(&format!("user:{id}"))
        {
            app.metrics.rate_limited.inc();
            return Err(AppError::RateLimited { retry_after_s: refused.retry_after.as_secs().max(1) });
        }
        Ok(AuthUser { id, sessions_epoch: claims.sessions_epoch })
    }
}

/// A caller holding one of the roles `R` names, read from the log (so that
/// a revoked role stops working at once, whatever the token says), with a
/// token issued since the user's sessions were last revoked.
#[derive(Debug, Clone)]
pub struct Privileged<R: RoleSet> {
    pub user: AuthUser,
    pub roles: Vec<Role>,
    _set: std::marker::PhantomData<R>,
}

/// The roles a route accepts.
pub trait RoleSet: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// `admin` only.
#[derive(Debug, Clone, Copy)]
pub struct AdminOnly;
impl RoleSet for AdminOnly {
    const ROLES: &'static [Role] = &[Role::Admin];
}

/// `admin` or `finance`.
#[derive(Debug, Clone, Copy)]
pub struct FinanceOrAdmin;
impl RoleSet for FinanceOrAdmin {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Finance];
}

/// `admin`, `finance` or `ops`: the console's overview.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleReader;
impl RoleSet for ConsoleReader {
    const ROLES: &'static [Role] = &[Role::Admin, Role::Finance, Role::Ops];
}

impl<S, R> FromRequestParts<S> for Privileged<R>
where
    AppState: FromRef<S>,
    S: Send + Sync,
    R: RoleSet,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let app = AppState::from_ref(state);
        let roles = app.roles_checked(&user).await?;
        if !roles.iter().any(|r| R::ROLES.contains(r)) {
            return Err(AppError::Forbidden("this route needs a role the caller does not hold"));
        }
        Ok(Privileged { user, roles, _set: std::marker::PhantomData })
    }
}

/// The command's request line and keys: `Idempotency-Key` (validated),
/// `X-Request-Id` (the correlation id, when sane).
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub idempotency_key: Option<String>,
    pub request_id: Option<String>,
    /// `METHOD /path`, part of the fingerprint.
    pub request_line: String,
}

impl<S: Send + Sync> FromRequestParts<S> for CommandMeta {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let idempotency_key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => {
                let key = value
                    .to_str()
                    .map_err(|_| AppError::validation("Idempotency-Key", "must be visible ASCII"))?
                    .to_string();
                // Printable ASCII only (HeaderValue::to_str lets a tab through).
                if key.bytes().any(|b| !(b' '..=b'~').contains(&b)) {
                    return Err(AppError::validation("Idempotency-Key", "must be printable ASCII"));
                }
                let chars = key.chars().count();
                if chars == 0 || chars > IDEMPOTENCY_KEY_CHARS_MAX {
                    return Err(AppError::validation(
                        "Idempotency-Key",
                        format!("must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} characters"),
                    ));
                }
                Some(key)
            }
        };
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= REQUEST_ID_CHARS_MAX)
            .map(str::to_string);
        Ok(CommandMeta { idempotency_key, request_id, request_line: format!("{} {}", parts.method, parts.uri.path()) })
    }
}
