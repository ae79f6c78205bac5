//! Registration and roles.

use domain::user::{self, ChangeRoles, Register, RegistrationState, UserState};
use events_schema::{Event, ReservationKind, Role, reservation_id};

use crate::spec::*;

fn register(email: &str, username: &str) -> Register {
    Register {
        user_id: user(1),
        email: email.into(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        admin_emails: vec!["Boss@HaloBuzz.com".into()],
    }
}

fn decide(
    state: (UserState, Option<uuid::Uuid>, Option<uuid::Uuid>),
    command: &Register,
) -> Result<Vec<Event>, &'static str> {
    let (u, e, n) = state;
    user::decide_register(RegistrationState { user: &u, email: &e, username: &n }, command).map_err(|e| e.code())
}

#[test]
fn registration_claims_the_email_and_the_username_with_the_user() {
    let events = decide((None, None, None), &register(" Ann@Example.com ", "Ann_1")).expect("registered");
    let [Event::UserRegistered(reg), Event::ReservationClaimed(email), Event::ReservationClaimed(name)] =
        events.as_slice()
    else {
        panic!("user.registered and two reservations: {events:?}")
    };
    assert_eq!(
        (reg.email.as_str(), reg.username.as_str(), reg.roles.as_slice()),
        ("ann@example.com", "Ann_1", &[Role::User][..])
    );
    assert_eq!((email.kind, email.value.as_str()), (ReservationKind::Email, "ann@example.com"));
    assert_eq!((name.kind, name.value.as_str()), (ReservationKind::Username, "ann_1"));
    // Reservations are keyed by a hash of the value: any email is a subject token.
    assert_eq!(events[1].aggregate_id(), reservation_id(ReservationKind::Email, "ann@example.com"));
    assert!(events[1].aggregate_id().chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    let state = events.iter().fold(None, user::evolve);
    assert_eq!(state.map(|s| s.roles), Some(vec![Role::User]));
}

#[test]
fn admin_emails_get_admin_and_finance() {
    let events = decide((None, None, None), &register("boss@halobuzz.com", "boss")).expect("registered");
    let Event::UserRegistered(reg) = &events[0] else { panic!("registered") };
    assert_eq!(reg.roles, vec![Role::User, Role::Admin, Role::Finance]);
}

#[test]
fn a_taken_email_or_username_is_refused() {
    let other = Some(user(2));
    assert_eq!(decide((None, other, None), &register("a@b.co", "ann")), Err("email_taken"));
    assert_eq!(decide((None, None, other), &register("a@b.co", "ann")), Err("username_taken"));
}

#[test]
fn a_user_registers_once() {
    let existing =
        decide((None, None, None), &register("a@b.co", "ann")).expect("registered").iter().fold(None, user::evolve);
    assert_eq!(decide((existing, None, None), &register("c@d.co", "bob")), Err("conflict"));
}

#[test]
fn malformed_emails_and_usernames_are_refused() {
    for email in ["", "no-at", "@b.co", "a@b", "a@.co", "a b@c.co", "a@b@c.co"] {
        assert_eq!(decide((None, None, None), &register(email, "ann")), Err("validation_failed"), "{email:?}");
    }
    for name in ["ab", "with space", "x".repeat(31).as_str(), "emoji🙂"] {
        assert_eq!(decide((None, None, None), &register("a@b.co", name)), Err("validation_failed"), "{name:?}");
    }
    let no_hash = Register { password_hash: String::new(), ..register("a@b.co", "ann") };
    assert_eq!(decide((None, None, None), &no_hash), Err("validation_failed"));
}

fn registered() -> UserState {
    decide((None, None, None), &register("a@b.co", "ann")).expect("registered").iter().fold(None, user::evolve)
}

#[test]
fn roles_are_granted_and_revoked() {
    let grant = ChangeRoles { user_id: user(1), grant: vec![Role::Finance, Role::Ops, Role::Ops], revoke: vec![] };
    let events = user::decide_roles(&registered(), &grant).expect("granted");
    let Event::UserRolesChanged(changed) = &events[0] else { panic!("roles changed") };
    assert_eq!(changed.granted, vec![Role::Finance, Role::Ops]);
    let state = events.iter().fold(registered(), user::evolve);
    assert_eq!(state.as_ref().map(|s| s.roles.clone()), Some(vec![Role::User, Role::Finance, Role::Ops]));

    let revoke = ChangeRoles { user_id: user(1), grant: vec![], revoke: vec![Role::Ops] };
    let events = user::decide_roles(&state, &revoke).expect("revoked");
    let state = events.iter().fold(state, user::evolve);
    assert_eq!(state.map(|s| s.roles), Some(vec![Role::User, Role::Finance]));
}

#[test]
fn role_changes_that_change_nothing_record_nothing() {
    let same = ChangeRoles { user_id: user(1), grant: vec![Role::User], revoke: vec![Role::Admin] };
    assert_eq!(user::decide_roles(&registered(), &same), Ok(vec![]));
}

#[test]
fn the_user_role_stays_and_unknown_users_have_no_roles() {
    let revoke_user = ChangeRoles { user_id: user(1), grant: vec![], revoke: vec![Role::User] };
    assert_eq!(user::decide_roles(&registered(), &revoke_user).map_err(|e| e.code()), Err("validation_failed"));
    let both = ChangeRoles { user_id: user(1), grant: vec![Role::Ops], revoke: vec![Role::Ops] };
    assert_eq!(user::decide_roles(&registered(), &both).map_err(|e| e.code()), Err("validation_failed"));
    let grant = ChangeRoles { user_id: user(1), grant: vec![Role::Admin], revoke: vec![] };
    assert_eq!(user::decide_roles(&None, &grant).map_err(|e| e.code()), Err("not_found"));
}
