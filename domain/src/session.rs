//! Sessions: one aggregate per login (a refresh-token family,
//! `hb.session.<family id>`), which rotates its refresh token on every use
//! and ends on logout or when a rotated token comes back (reuse).
//!
//! A login appends nothing: a family with no event is live at generation 0,
//! so that logging in costs no write. Each refresh presents the generation
//! its token carries; only the current one rotates (to the next), an older
//! one is a reuse and ends the whole family. Which user's tokens are
//! revoked altogether is the user aggregate's `sessions_epoch`
//! (`user::check_sessions_epoch`): a refresh checks both.

use events_schema::{Event, SessionEndReason, SessionEnded, SessionRotated};
use uuid::Uuid;

use crate::error::DomainError;
use crate::user::{UserState, check_sessions_epoch};

/// A family's state: `None` until its first rotation (live, generation 0).
pub type SessionState = Option<Session>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    /// The generation of the only refresh token that is accepted.
    pub generation: u64,
    /// Set once the family ended: no token of it is accepted again.
    pub ended: Option<SessionEndReason>,
}

/// A refresh token presented for a new pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotate {
    pub family_id: Uuid,
    pub user_id: Uuid,
    /// The generation the presented token carries.
    pub generation: u64,
    /// The sessions epoch the presented token carries.
    pub sessions_epoch: u64,
}

/// A user ends one of their logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub family_id: Uuid,
    pub user_id: Uuid,
}

/// What a rotation reads: the family and its user.
#[derive(Debug, Clone, Copy)]
pub struct RotationState<'a> {
    pub session: &'a SessionState,
    pub user: &'a UserState,
}

/// The current generation of a family (0 before its first rotation), and
/// the user it belongs to once it has an event.
fn current(session: &SessionState) -> (u64, Option<Uuid>) {
    session.map_or((0, None), |s| (s.generation, Some(s.user_id)))
}

/// Rotates the family to the next generation; a token of an older
/// generation is a reuse, and ends the family (the one decision that
/// refuses the caller yet appends: the API answers it
/// `refresh_token_reused`).
pub fn decide_rotate(state: RotationState<'_>, command: &Rotate) -> Result<Vec<Event>, DomainError> {
    let user = state.user.as_ref().ok_or(DomainError::UserNotFound)?;
    check_sessions_epoch(user, command.sessions_epoch)?;
    let (generation, owner) = current(state.session);
    if owner.is_some_and(|o| o != command.user_id) {
        // Families are drawn at random and signed into the token: another
        // user's family here is a forged token, whatever it claims.
        return Err(DomainError::SessionRevoked);
    }
    let ended = state.session.and_then(|s| s.ended);
    if command.generation < generation {
        // A rotated token came back: refused, and the family ends (once).
        return match ended {
            Some(_) => Err(DomainError::RefreshTokenReused),
            None => Ok(vec![Event::SessionEnded(SessionEnded {
                family_id: command.family_id,
                user_id: command.user_id,
                generation,
                reason: SessionEndReason::Reuse,
            })]),
        };
    }
    if ended.is_some() || command.generation > generation {
        // Ended; or a generation the family never issued.
        return Err(DomainError::SessionRevoked);
    }
    let next = generation.checked_add(1).ok_or(DomainError::SessionRevoked)?;
    Ok(vec![Event::SessionRotated(SessionRotated {
        family_id: command.family_id,
        user_id: command.user_id,
        generation: next,
    })])
}

/// Ends the family on logout. Ending an ended family records nothing; a
/// family of another user is refused (never end someone else's session).
pub fn decide_end(session: &SessionState, command: &End) -> Result<Vec<Event>, DomainError> {
    let (generation, owner) = current(session);
    if owner.is_some_and(|o| o != command.user_id) {
        return Err(DomainError::NotSessionOwner);
    }
    if session.is_some_and(|s| s.ended.is_some()) {
        return Ok(vec![]);
    }
    Ok(vec![Event::SessionEnded(SessionEnded {
        family_id: command.family_id,
        user_id: command.user_id,
        generation,
        reason: SessionEndReason::Logout,
    })])
}

/// Every session event carries the whole state: the family's last event is
/// enough to load it.
pub fn evolve(state: SessionState, event: &Event) -> SessionState {
    match event {
        Event::SessionRotated(e) => Some(Session { user_id: e.user_id, generation: e.generation, ended: None }),
        Event::SessionEnded(e) => Some(Session { user_id: e.user_id, generation: e.generation, ended: Some(e.reason) }),
        _ => state,
    }
}
