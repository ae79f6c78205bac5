//! Sessions: rotation on every refresh, reuse ending the family, logout,
//! and every session of a user revoked at once.

use domain::session::{self, End, Rotate, RotationState, SessionState};
use domain::user::{self, RevokeSessions, UserState};
use events_schema::{Event, Role, SessionEndReason, UserRegistered};
use uuid::Uuid;

use crate::spec::*;

fn family() -> Uuid {
    user(900)
}

/// The user, registered, then given these decisions' events.
fn registered() -> UserState {
    user::evolve(
        None,
        &Event::UserRegistered(UserRegistered {
            user_id: user(1),
            email: "ann@example.com".into(),
            username: "ann".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec![Role::User],
        }),
    )
}

/// A family and its user, built from earlier decisions.
struct Given {
    session: SessionState,
    user: UserState,
}

fn given() -> Given {
    Given { session: None, user: registered() }
}

impl Given {
    /// Given the events of these accepted rotations (each must be accepted).
    fn rotated(mut self, generations: &[u64]) -> Given {
        for generation in generations {
            let events = self.rotate(*generation, 0).expect("a given rotation is accepted");
            self.session = events.iter().fold(self.session, session::evolve);
        }
        self
    }

    fn ended(mut self) -> Given {
        let events = session::decide_end(&self.session, &End { family_id: family(), user_id: user(1) }).expect("ends");
        self.session = events.iter().fold(self.session, session::evolve);
        self
    }

    fn revoked(mut self) -> Given {
        let events =
            user::decide_revoke_sessions(&self.user, &RevokeSessions { user_id: user(1), revoked_by: user(2) })
                .expect("revoked");
        self.user = events.iter().fold(self.user, user::evolve);
        self
    }

    fn rotate(&self, generation: u64, sessions_epoch: u64) -> Result<Vec<Event>, domain::DomainError> {
        let command = Rotate { family_id: family(), user_id: user(1), generation, sessions_epoch };
        session::decide_rotate(RotationState { session: &self.session, user: &self.user }, &command)
    }
}

fn code(result: Result<Vec<Event>, domain::DomainError>) -> &'static str {
    match result {
        Err(e) => e.code(),
        Ok(events) => panic!("expected a rejection, got {events:?}"),
    }
}

#[test]
fn a_fresh_login_rotates_from_generation_0_to_1() {
    let events = given().rotate(0, 0).expect("rotated");
    let [Event::SessionRotated(rotated)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((rotated.family_id, rotated.user_id, rotated.generation), (family(), user(1), 1));
    assert_eq!(events[0].aggregate_id(), family().to_string(), "one subject per family");
}

#[test]
fn only_the_current_generation_rotates() {
    let events = given().rotated(&[0, 1, 2]).rotate(3, 0).expect("the current one rotates");
    let [Event::SessionRotated(rotated)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(rotated.generation, 4);
}

#[test]
fn a_rotated_token_presented_again_ends_the_family() {
    let given = given().rotated(&[0, 1]);
    let events = given.rotate(0, 0).expect("a reuse appends the end");
    let [Event::SessionEnded(ended)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((ended.reason, ended.generation), (SessionEndReason::Reuse, 2));
    // Then even the newest token of the family is refused, and the reused
    // one again is a reuse, which records nothing more.
    let after = Given { session: events.iter().fold(given.session, session::evolve), user: given.user };
    assert_eq!(code(after.rotate(2, 0)), "session_revoked");
    assert_eq!(code(after.rotate(0, 0)), "refresh_token_reused");
}

#[test]
fn a_generation_never_issued_is_refused() {
    assert_eq!(code(given().rotate(1, 0)), "session_revoked");
    assert_eq!(code(given().rotated(&[0]).rotate(5, 0)), "session_revoked");
}

#[test]
fn a_family_of_another_user_is_refused() {
    let given = given().rotated(&[0]);
    let command = Rotate { family_id: family(), user_id: user(7), generation: 1, sessions_epoch: 0 };
    let user7 = given.user.clone();
    let refused = session::decide_rotate(RotationState { session: &given.session, user: &user7 }, &command);
    assert_eq!(code(refused), "session_revoked");
    let logout = session::decide_end(&given.session, &End { family_id: family(), user_id: user(7) });
    assert_eq!(code(logout), "forbidden");
}

#[test]
fn logout_ends_the_family_once() {
    let events = session::decide_end(&None, &End { family_id: family(), user_id: user(1) }).expect("ends");
    let [Event::SessionEnded(ended)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((ended.reason, ended.generation), (SessionEndReason::Logout, 0));
    let ended = given().rotated(&[0]).ended();
    assert_eq!(code(ended.rotate(1, 0)), "session_revoked", "no token of it refreshes");
    assert_eq!(session::decide_end(&ended.session, &End { family_id: family(), user_id: user(1) }), Ok(vec![]));
}

#[test]
fn revoking_every_session_raises_the_epoch_and_refuses_older_tokens() {
    let given = given().rotated(&[0]).revoked();
    assert_eq!(given.user.as_ref().map(|u| u.sessions_epoch), Some(1));
    assert_eq!(code(given.rotate(1, 0)), "session_revoked");
    // A token issued after the revocation carries the new epoch.
    assert!(given.rotate(1, 1).is_ok());
    let user = given.user.as_ref().expect("registered");
    assert_eq!(user::check_sessions_epoch(user, 0).map_err(|e| e.code()), Err("session_revoked"));
    assert_eq!(user::check_sessions_epoch(user, 1), Ok(()));
    // Twice: the epoch goes on up; the roles stay.
    let twice = given.revoked();
    assert_eq!(twice.user.as_ref().map(|u| (u.sessions_epoch, u.roles.clone())), Some((2, vec![Role::User])));
}

#[test]
fn an_unknown_user_has_no_session_to_revoke_or_refresh() {
    let command = RevokeSessions { user_id: user(1), revoked_by: user(2) };
    assert_eq!(user::decide_revoke_sessions(&None, &command).map_err(|e| e.code()), Err("not_found"));
    let rotate = Rotate { family_id: family(), user_id: user(1), generation: 0, sessions_epoch: 0 };
    let refused = session::decide_rotate(RotationState { session: &None, user: &None }, &rotate);
    assert_eq!(code(refused), "not_found");
    assert_eq!(user::check_session_of(&None, 0).map_err(|e| e.code()), Err("session_revoked"));
}

#[test]
fn a_role_change_keeps_the_sessions_epoch() {
    let given = given().revoked();
    let command = user::ChangeRoles { user_id: user(1), grant: vec![Role::Ops], revoke: vec![] };
    let events = user::decide_roles(&given.user, &command).expect("granted");
    let state = events.iter().fold(given.user, user::evolve);
    assert_eq!(state.map(|u| u.sessions_epoch), Some(1));
}
