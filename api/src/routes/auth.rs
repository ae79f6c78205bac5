//! Registration, login, token refresh (rotating the session).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use commands::handler::{CommandError, SessionRefresh};
use domain::DomainError;
use domain::session::Rotate;
use domain::user::{self, Register};
use events_schema::{Actor, Event};
use uuid::Uuid;

use crate::auth::{SessionClaims, check_password};
use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiJson, CommandMeta};
use crate::routes::doc::{BodyRefusals, CommandRefusals, IdempotencyKey, Throttled, Unavailable};
use crate::routes::{find_event, guarded, replayed};
use crate::state::{AppState, command_context, fingerprint};
use crate::views::{AuthResponse, LoginRequest, RefreshRequest, RegisterRequest, TokensResponse, UserView};

const WRONG_CREDENTIALS: AppError = AppError::Unauthorized("the email or the password is wrong");

/// Registers a user and logs them in. Users whose email is in `ADMIN_EMAILS`
/// get `admin` and `finance`.
#[utoipa::path(
    post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Registered", body = AuthResponse),
        BodyRefusals, CommandRefusals,
        (status = 409, description = "`email_taken`, `username_taken`, `idempotency_key_reused`, `contention`", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: per client address, per email, or a full password-hashing queue", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn register(
    State(app): State<AppState>,
    meta: CommandMeta,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    check_password(&body.password)?;
    crate::views::check_email_shape(&body.email)?;
    user::check_registration(&body.email, &body.username)?;
    app.limit_email(&body.email)?;
    let email = user::normalize_email(&body.email);
    // The fingerprint leaves the password out: a fast hash of a password
    // must never be stored. A repeat is checked against the argon2 hash.
    let print = fingerprint(&meta.request_line, &(&email, body.username.trim()));
    let user_id = Uuid::now_v7();
    // Registrations have no user yet: keys are scoped to the email.
    let ctx = command_context(
        format!("register:{email}"),
        meta.idempotency_key.as_deref(),
        print,
        meta.request_id.as_deref(),
        Actor::user(user_id),
    );
    let password_hash = app.auth.hash_password(body.password.clone()).await?;
    let command = Register { user_id, email, username: body.username, password_hash, admin_emails: vec![] };
    let run = async { app.commands.register(&ctx, command).await.map_err(AppError::from) };
    let outcome = guarded(&app, "register", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (registered, envelope) = find_event(&outcome.events, |e| match e {
        Event::UserRegistered(r) => Some(r),
        _ => None,
    })?;
    if outcome.repeated && !app.auth.verify_password(body.password, Some(registered.password_hash.clone())).await? {
        return Err(AppError::IdempotencyKeyReused);
    }
    let tokens = app.auth.issue(registered.user_id, &registered.roles, SessionClaims::login(0))?;
    let user = UserView::new(
        registered.user_id,
        &registered.email,
        &registered.username,
        &registered.roles,
        envelope.header.occurred_at,
    );
    let answer = AuthResponse {
        user,
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        position: Some(outcome.position),
    };
    Ok((StatusCode::CREATED, replayed(outcome.repeated), Json(answer)))
}

/// Logs a user in with email and password.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        BodyRefusals, Unavailable,
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: per client address, per email, or a full password-hashing queue", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
pub async fn login(State(app): State<AppState>, ApiJson(body): ApiJson<LoginRequest>) -> ApiResult<Json<AuthResponse>> {
    app.limit_email(&body.email)?;
    if body.password.chars().count() > crate::auth::PASSWORD_CHARS_MAX {
        return Err(WRONG_CREDENTIALS);
    }
    // The users read model first; the log when it has not caught up with a
    // registration yet (login right after registering).
    let found = match app.store.user_by_email(&body.email).await? {
        Some(doc) => Some((doc.id, doc.password_hash, doc.email, doc.username, doc.created_at)),
        None => app
            .registration_from_log(&body.email)
            .await?
            .map(|(r, envelope)| (r.user_id, r.password_hash, r.email, r.username, envelope.header.occurred_at)),
    };
    let hash = found.as_ref().map(|f| f.1.clone());
    if !app.auth.verify_password(body.password, hash).await? {
        return Err(WRONG_CREDENTIALS);
    }
    let Some((id, _, email, username, created_at)) = found else { return Err(WRONG_CREDENTIALS) };
    // Roles and sessions epoch from the log: the tokens carry the current
    // ones (a login after a revocation works).
    let current = app.user_from_log(id).await?;
    let (roles, sessions_epoch) = current.map(|u| (u.roles, u.sessions_epoch)).unwrap_or_default();
    let tokens = app.auth.issue(id, &roles, SessionClaims::login(sessions_epoch))?;
    Ok(Json(AuthResponse {
        user: UserView::new(id, &email, &username, &roles, created_at),
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        position: None,
    }))
}

/// Exchanges a refresh token for a new pair of tokens. Rotates: the
/// presented refresh token stops working, and the client must keep the new
/// one. A token that was already exchanged is `refresh_token_reused`, and
/// every token of its login stops working.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token no longer works", body = TokensResponse),
        BodyRefusals, Throttled, Unavailable,
        (status = 401, description = "`unauthorized`: invalid or expired refresh token; `session_revoked`: its login was ended (logout, reuse) or every session of the user revoked; `refresh_token_reused`: already exchanged, and now every token of its login is revoked", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`contention`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn refresh(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> ApiResult<Json<TokensResponse>> {
    let (user_id, claims) = app.auth.verify_refresh(&body.refresh_token)?;
    let family_id = claims.family().ok_or(AppError::Unauthorized("the token is invalid or expired"))?;
    let command = Rotate { family_id, user_id, generation: claims.generation, sessions_epoch: claims.sessions_epoch };
    let refreshed = match app.commands.refresh_session(command).await {
        Ok(refreshed) => refreshed,
        Err(CommandError::Domain(DomainError::UserNotFound)) => {
            return Err(AppError::Unauthorized("the token's user does not exist"));
        }
        Err(e) => return Err(e.into()),
    };
    let (generation, user) = match refreshed {
        SessionRefresh::Rotated { generation, user, .. } => (generation, user),
        SessionRefresh::Reused { .. } => return Err(DomainError::RefreshTokenReused.into()),
    };
    let session = SessionClaims { family_id, generation, sessions_epoch: user.sessions_epoch };
    let tokens = app.auth.issue(user_id, &user.roles, session)?;
    Ok(Json(TokensResponse { access_token: tokens.access_token, refresh_token: tokens.refresh_token }))
}
