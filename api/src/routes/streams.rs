//! Streams (start, join, leave, end, live list, one stream, leaderboard)
//! and gifts (catalog, send).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::Utc;
use domain::stream::{StartStream, StreamCommand};
use events_schema::{Actor, Event, Role};
use projections::{PageRequest, Projection};
use uuid::Uuid;

use crate::error::{ApiResult, AppError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, AuthUser, CommandMeta, Consistency};
use crate::routes::doc::{
    BodyRefusals, CommandRefusals, IdempotencyKey, NotFound, QueryRefusals, StreamNotLive, Throttled, Unauthorized,
};
use crate::routes::{find_event, guarded, replayed};
use crate::state::{AppState, command_context, fingerprint};
use crate::views::{
    GiftCatalogItem, GiftSentView, LeaderboardPage, LiveStreamsQuery, PageQuery, PositionView, SendGiftRequest,
    StartStreamRequest, StreamCreated, StreamPage, StreamView,
};

/// The gifts viewers can send (`GIFT_CATALOG`).
#[utoipa::path(get, path = "/api/v1/gifts/catalog", tag = "gifts", responses((status = 200, body = [GiftCatalogItem]), Throttled))]
pub async fn gift_catalog(State(app): State<AppState>) -> Json<Vec<GiftCatalogItem>> {
    Json(
        app.config
            .gift_catalog
            .iter()
            .map(|g| GiftCatalogItem { id: g.id.clone(), name: g.name.clone(), coins: g.coins })
            .collect(),
    )
}

fn user_ctx(caller: &AuthUser, meta: &CommandMeta, body: &impl serde::Serialize) -> commands::handler::CommandContext {
    command_context(
        format!("user:{}", caller.id),
        meta.idempotency_key.as_deref(),
        fingerprint(&meta.request_line, body),
        meta.request_id.as_deref(),
        Actor::user(caller.id),
    )
}

/// Starts a stream hosted by the caller (one live stream per host).
#[utoipa::path(
    post, path = "/api/v1/streams", tag = "streams",
    request_body = StartStreamRequest,
    params(IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = StreamCreated),
        BodyRefusals, CommandRefusals, Unauthorized,
        (status = 409, description = "`stream_already_live`, `idempotency_key_reused`, `contention`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn start(
    State(app): State<AppState>,
    caller: AuthUser,
    meta: CommandMeta,
    ApiJson(body): ApiJson<StartStreamRequest>,
) -> ApiResult<impl IntoResponse> {
    let ctx = user_ctx(&caller, &meta, &body);
    let command = StartStream {
        stream_id: Uuid::now_v7(),
        host_id: caller.id,
        title: body.title,
        category: body.category,
        at: Utc::now(),
    };
    let run = async { app.commands.start_stream(&ctx, command).await.map_err(AppError::from) };
    let outcome = guarded(&app, "start_stream", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (started, _) = find_event(&outcome.events, |e| match e {
        Event::StreamStarted(s) => Some(s),
        _ => None,
    })?;
    let answer = StreamCreated { stream_id: started.stream_id, position: outcome.position };
    Ok((StatusCode::CREATED, replayed(outcome.repeated), Json(answer)))
}

async fn stream_command(
    app: &AppState,
    caller: &AuthUser,
    meta: &CommandMeta,
    stream_id: Uuid,
    name: &'static str,
    command: StreamCommand,
) -> ApiResult<impl IntoResponse + use<>> {
    let ctx = user_ctx(caller, meta, &());
    let run = async { app.commands.stream(&ctx, stream_id, command).await.map_err(AppError::from) };
    let outcome = guarded(app, name, &ctx, meta.idempotency_key.is_some(), run).await?;
    Ok((StatusCode::OK, replayed(outcome.repeated), Json(PositionView { position: outcome.position })))
}

/// Ends a live stream: its host, or an admin.
#[utoipa::path(
    post, path = "/api/v1/streams/{id}/end", tag = "streams",
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PositionView),
        CommandRefusals, Unauthorized,
        (status = 403, description = "Neither the host nor an admin", body = Problem, content_type = "application/problem+json"),
        NotFound, StreamNotLive,
    )
)]
pub async fn end(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(stream_id): ApiPath<Uuid>,
    meta: CommandMeta,
) -> ApiResult<impl IntoResponse> {
    let by_admin = app.roles_checked(&caller).await?.contains(&Role::Admin);
    stream_command(&app, &caller, &meta, stream_id, "end_stream", StreamCommand::End { by: caller.id, by_admin }).await
}

/// Joins a live stream as a viewer.
#[utoipa::path(
    post, path = "/api/v1/streams/{id}/join", tag = "streams",
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PositionView),
        CommandRefusals, Unauthorized, NotFound, StreamNotLive,
    )
)]
pub async fn join(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(stream_id): ApiPath<Uuid>,
    meta: CommandMeta,
) -> ApiResult<impl IntoResponse> {
    stream_command(&app, &caller, &meta, stream_id, "join_stream", StreamCommand::Join { viewer_id: caller.id }).await
}

/// Leaves a stream (leaving an ended stream changes nothing).
#[utoipa::path(
    post, path = "/api/v1/streams/{id}/leave", tag = "streams",
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 200, body = PositionView),
        CommandRefusals, Unauthorized, NotFound,
    )
)]
pub async fn leave(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(stream_id): ApiPath<Uuid>,
    meta: CommandMeta,
) -> ApiResult<impl IntoResponse> {
    stream_command(&app, &caller, &meta, stream_id, "leave_stream", StreamCommand::Leave { viewer_id: caller.id }).await
}

/// Live streams, most viewers first.
#[utoipa::path(
    get, path = "/api/v1/streams/live", tag = "streams",
    params(LiveStreamsQuery, Consistency),
    responses((status = 200, body = StreamPage), QueryRefusals)
)]
pub async fn live(
    State(app): State<AppState>,
    ApiQuery(query): ApiQuery<LiveStreamsQuery>,
    consistency: Consistency,
) -> ApiResult<Json<StreamPage>> {
    app.wait_for(consistency.min_position, &[Projection::Streams]).await?;
    let category = query.category.map(|c| c.trim().to_lowercase());
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    Ok(Json(app.store.live_streams(category.as_deref(), &page).await?.into()))
}

/// One stream.
#[utoipa::path(
    get, path = "/api/v1/streams/{id}", tag = "streams",
    params(("id" = Uuid, Path), Consistency),
    responses((status = 200, body = StreamView), QueryRefusals, NotFound)
)]
pub async fn get_stream(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<Uuid>,
    consistency: Consistency,
) -> ApiResult<Json<StreamView>> {
    app.wait_for(consistency.min_position, &[Projection::Streams]).await?;
    let doc = app.store.stream(stream_id).await?.ok_or_else(|| AppError::not_found("no such stream"))?;
    Ok(Json(doc.into()))
}

/// A stream's top gifters, most coins first.
#[utoipa::path(
    get, path = "/api/v1/streams/{id}/leaderboard", tag = "streams",
    params(
        ("id" = Uuid, Path),
        PageQuery, Consistency,
    ),
    responses((status = 200, body = LeaderboardPage), QueryRefusals, NotFound)
)]
pub async fn leaderboard(
    State(app): State<AppState>,
    ApiPath(stream_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<PageQuery>,
    consistency: Consistency,
) -> ApiResult<Json<LeaderboardPage>> {
    app.wait_for(consistency.min_position, &[Projection::Streams, Projection::GiftLeaderboards]).await?;
    if app.store.stream(stream_id).await?.is_none() {
        return Err(AppError::not_found("no such stream"));
    }
    let page = PageRequest { limit: query.limit, cursor: query.cursor };
    Ok(Json(app.store.leaderboard(stream_id, &page).await?.into()))
}

/// Sends a gift to a live stream's host; the price comes from the catalog.
#[utoipa::path(
    post, path = "/api/v1/streams/{id}/gifts", tag = "gifts",
    request_body = SendGiftRequest,
    params(("id" = Uuid, Path), IdempotencyKey),
    security(("bearerAuth" = [])),
    responses(
        (status = 201, body = GiftSentView),
        BodyRefusals, CommandRefusals, Unauthorized,
        (status = 402, description = "`insufficient_funds`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`self_gift_forbidden`: to one's own stream", body = Problem, content_type = "application/problem+json"),
        NotFound,
        (status = 409, description = "`stream_not_live`, `idempotency_key_reused`, `contention`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (unknown gift, quantity out of 1..=10000), `amount_out_of_range`", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn send_gift(
    State(app): State<AppState>,
    caller: AuthUser,
    ApiPath(stream_id): ApiPath<Uuid>,
    meta: CommandMeta,
    ApiJson(body): ApiJson<SendGiftRequest>,
) -> ApiResult<impl IntoResponse> {
    let unit_coins = app
        .config
        .gift(&body.gift_id)
        .map(|g| g.coins)
        .ok_or_else(|| AppError::validation("giftId", "is not in the gift catalog"))?;
    let ctx = user_ctx(&caller, &meta, &body);
    let run = async {
        let gift_id = body.gift_id.clone();
        app.commands
            .send_gift_by(&ctx, caller.caller(), stream_id, gift_id, body.quantity, unit_coins)
            .await
            .map_err(AppError::from)
    };
    let outcome = guarded(&app, "send_gift", &ctx, meta.idempotency_key.is_some(), run).await?;
    let (sent, _) = find_event(&outcome.events, |e| match e {
        Event::GiftSent(g) => Some(g),
        _ => None,
    })?;
    let answer = GiftSentView {
        gift_id: sent.gift_id.clone(),
        quantity: sent.quantity,
        coins: sent.coins,
        balance: sent.commit.state_after.wallet_coins,
        position: outcome.position,
    };
    Ok((StatusCode::CREATED, replayed(outcome.repeated), Json(answer)))
}
