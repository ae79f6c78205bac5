//! Ending sessions: a user's logout, and an admin's revocation of every
//! session of a user. Rotation is the refresh route's (`routes::auth`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use domain::session::End;
use domain::user::RevokeSessions;
use events_schema::{Actor, Event};
use uuid::Uuid;

use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{AdminOnly, ApiJson, ApiPath, AuthUser, CommandMeta, Privileged};
use crate::routes::doc::{BodyRefusals, CommandRefusals, IdempotencyKey, NeedsAdmin, Unauthorized, UnknownUser};
use crate::routes::{find_event, guarded, replayed};
use crate::state::{AppState, command_context, fingerprint};
use crate::views::{LogoutRequest, SessionsRevokedView};

/// Ends the login of a refresh token of the caller's: every refresh token
/// of that login stops working. Access tokens already issued expire on
/// their own (15 minutes).
#[utoipa::path(
    post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = LogoutRequest,
    security(("bearerAuth" = [])),
    responses(
        (status = 204, description = "The login's refresh tokens no longer work (also when it had ended already)"),
        BodyRefusals, CommandRefusals, Unauthorized,
        (status = 403, description = "`forbidden`: the refresh token is another user's", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiJson(body): ApiJson<LogoutRequest>,
) -> ApiResult<StatusCode> {
    // The caller is authenticated by the access token; the body names the
    // login. A token that is not a valid refresh token of ours names none:
    // `401`, as `/auth/refresh` answers it (no schema can tell a signed
    // token from any other string, so it is not a validation error).
    let not_a_refresh_token = || AppError::Unauthorized("the refresh token is invalid or expired");
    let (owner, claims) = app.auth.verify_refresh(&body.refresh_token).map_err(|_| not_a_refresh_token())?;
    if owner != caller.id {
        // Never end someone else's session, whatever token one holds.
        return Err(AppError::Forbidden("the refresh token is another user's"));
    }
    let family_id = claims.family().ok_or_else(not_a_refresh_token)?;
    app.commands.end_session(End { family_id, user_id: caller.id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every session of a user: their refresh tokens stop working, and
/// their access tokens issued before are refused by every command that
/// moves coins and every privileged route (a new login works).
#[utoipa::path(
    post, path = "/api/v1/admin/users/{id}/sessions/revoke", tag = "admin",
    params(("id" = Uuid, Path, description = "The user whose sessions end"), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = SessionsRevokedView),
        CommandRefusals, Unauthorized, NeedsAdmin, UnknownUser,
    )
)]
pub async fn revoke_sessions(
    State(app): State<AppState>,
    admin: Privileged<AdminOnly>,
    ApiPath(user_id): ApiPath<Uuid>,
    meta: CommandMeta,
) -> ApiResult<impl IntoResponse> {
    let ctx = command_context(
        format!("user:{}", admin.user.id),
        meta.idempotency_key.as_deref(),
        fingerprint(&meta.request_line, &user_id),
        meta.request_id.as_deref(),
        Actor::admin(admin.user.id),
    );
    let command = RevokeSessions { user_id, revoked_by: admin.user.id };
    let run = async { app.commands.revoke_sessions(&ctx, command).await.map_err(AppError::from) };
    let outcome = guarded(&app, "revoke_sessions", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (revoked, _) = find_event(&outcome.events, |e| match e {
        Event::UserSessionsRevoked(r) => Some(r),
        _ => None,
    })?;
    let answer =
        SessionsRevokedView { user_id, sessions_epoch: revoked.state_after.sessions_epoch, position: outcome.position };
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(answer)))
}
