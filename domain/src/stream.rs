//! The stream lifecycle, and the host's channel that allows one live stream
//! per host. Starting and ending a stream write both aggregates at once.

use chrono::{DateTime, Utc};
use events_schema::{
    ChannelWentLive, ChannelWentOffline, Event, StreamEnded, StreamSnapshot, StreamStarted, StreamStatus, ViewerJoined,
    ViewerLeft,
};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ledger::require_text;

/// A stream: `None` until it starts.
pub type StreamState = Option<StreamSnapshot>;
/// A host's channel: the id of its live stream, if any.
pub type ChannelState = Option<Uuid>;

pub const TITLE_CHARS_MAX: usize = 140;
pub const CATEGORY_CHARS_MAX: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartStream {
    pub stream_id: Uuid,
    pub host_id: Uuid,
    pub title: String,
    pub category: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCommand {
    Join {
        viewer_id: Uuid,
    },
    Leave {
        viewer_id: Uuid,
    },
    /// Ended by `by`, who must be the host unless `by_admin`.
    End {
        by: Uuid,
        by_admin: bool,
    },
}

/// Starts a stream on the host's channel: one live stream per host.
pub fn decide_start(
    channel: &ChannelState,
    stream: &StreamState,
    command: &StartStream,
) -> Result<Vec<Event>, DomainError> {
    require_text("title", &command.title, TITLE_CHARS_MAX)?;
    require_text("category", &command.category, CATEGORY_CHARS_MAX)?;
    if stream.is_some() {
        return Err(DomainError::StreamAlreadyExists);
    }
    if channel.is_some() {
        return Err(DomainError::StreamAlreadyLive);
    }
    let state_after = StreamSnapshot { host_id: command.host_id, status: StreamStatus::Live, started_at: command.at };
    Ok(vec![
        Event::StreamStarted(StreamStarted {
            stream_id: command.stream_id,
            host_id: command.host_id,
            title: command.title.trim().to_string(),
            category: command.category.trim().to_lowercase(),
            state_after,
        }),
        Event::ChannelWentLive(ChannelWentLive { host_id: command.host_id, stream_id: command.stream_id }),
    ])
}

pub fn decide(stream_id: Uuid, state: &StreamState, command: &StreamCommand) -> Result<Vec<Event>, DomainError> {
    let stream = state.as_ref().ok_or(DomainError::StreamNotFound)?;
    let live = stream.status == StreamStatus::Live;
    Ok(match command {
        StreamCommand::Join { viewer_id } => {
            if !live {
                return Err(DomainError::StreamNotLive);
            }
            vec![Event::ViewerJoined(ViewerJoined { stream_id, viewer_id: *viewer_id, state_after: stream.clone() })]
        }
        // Leaving an ended stream is already true: nothing to record.
        StreamCommand::Leave { .. } if !live => vec![],
        StreamCommand::Leave { viewer_id } => {
            vec![Event::ViewerLeft(ViewerLeft { stream_id, viewer_id: *viewer_id, state_after: stream.clone() })]
        }
        StreamCommand::End { by, by_admin } => {
            if *by != stream.host_id && !by_admin {
                return Err(DomainError::NotStreamHost);
            }
            if !live {
                return Err(DomainError::StreamNotLive);
            }
            let state_after = StreamSnapshot { status: StreamStatus::Ended, ..stream.clone() };
            vec![
                Event::StreamEnded(StreamEnded { stream_id, host_id: stream.host_id, ended_by: *by, state_after }),
                Event::ChannelWentOffline(ChannelWentOffline { host_id: stream.host_id, stream_id }),
            ]
        }
    })
}

pub fn evolve(state: StreamState, event: &Event) -> StreamState {
    match event {
        Event::StreamStarted(e) => Some(e.state_after.clone()),
        Event::ViewerJoined(e) => Some(e.state_after.clone()),
        Event::ViewerLeft(e) => Some(e.state_after.clone()),
        Event::StreamEnded(e) => Some(e.state_after.clone()),
        _ => state,
    }
}

pub fn evolve_channel(state: ChannelState, event: &Event) -> ChannelState {
    match event {
        Event::ChannelWentLive(e) => Some(e.stream_id),
        Event::ChannelWentOffline(_) => None,
        _ => state,
    }
}
