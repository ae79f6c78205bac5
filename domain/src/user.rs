//! Users: registration with unique email and username, and roles.
//!
//! Uniqueness is a decision on three aggregates at once: the user and one
//! reservation for each unique value. The command layer appends all three
//! atomically, each expecting its subject to be empty, so that two racing
//! registrations cannot both win.

use events_schema::{Event, ReservationClaimed, ReservationKind, Role, UserRegistered, UserRolesChanged, UserSnapshot};
use uuid::Uuid;

use crate::error::DomainError;

/// A user: `None` until registered.
pub type UserState = Option<UserSnapshot>;
/// A reservation: the user holding the value, if claimed.
pub type ReservationState = Option<Uuid>;

pub const EMAIL_CHARS_MAX: usize = 254;
pub const USERNAME_CHARS_MIN: usize = 3;
pub const USERNAME_CHARS_MAX: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub user_id: Uuid,
    pub email: String,
    pub username: String,
    /// An argon2 PHC string, hashed by the caller: passwords never reach the
    /// domain or the log.
    pub password_hash: String,
    /// `ADMIN_EMAILS`, normalised: these users get `admin` and `finance`.
    pub admin_emails: Vec<String>,
}

/// What a registration decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationState<'a> {
    pub user: &'a UserState,
    pub email: &'a ReservationState,
    pub username: &'a ReservationState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRoles {
    pub user_id: Uuid,
    pub grant: Vec<Role>,
    pub revoke: Vec<Role>,
}

/// Trimmed and lower case: the form that is stored and kept unique.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Lower case: usernames are unique regardless of case.
pub fn username_key(username: &str) -> String {
    username.trim().to_lowercase()
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().count() <= EMAIL_CHARS_MAX
        && !email.chars().any(char::is_whitespace)
}

fn valid_username(username: &str) -> bool {
    let n = username.chars().count();
    (USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&n)
        && username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

pub fn decide_register(state: RegistrationState<'_>, command: &Register) -> Result<Vec<Event>, DomainError> {
    let email = normalize_email(&command.email);
    let username = command.username.trim().to_string();
    if !valid_email(&email) {
        return Err(DomainError::invalid("email", "is not an email address"));
    }
    if !valid_username(&username) {
        return Err(DomainError::invalid(
            "username",
            format!("{USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} letters, digits, '_' or '.'"),
        ));
    }
    if command.password_hash.is_empty() {
        return Err(DomainError::invalid("password", "is required"));
    }
    if state.user.is_some() {
        return Err(DomainError::UserAlreadyRegistered);
    }
    if state.email.is_some() {
        return Err(DomainError::EmailTaken);
    }
    if state.username.is_some() {
        return Err(DomainError::UsernameTaken);
    }
    let mut roles = vec![Role::User];
    if command.admin_emails.iter().any(|a| normalize_email(a) == email) {
        roles.extend([Role::Admin, Role::Finance]);
    }
    Ok(vec![
        Event::UserRegistered(UserRegistered {
            user_id: command.user_id,
            email: email.clone(),
            username: username.clone(),
            password_hash: command.password_hash.clone(),
            roles,
        }),
        Event::ReservationClaimed(ReservationClaimed {
            kind: ReservationKind::Email,
            value: email,
            user_id: command.user_id,
        }),
        Event::ReservationClaimed(ReservationClaimed {
            kind: ReservationKind::Username,
            value: username_key(&username),
            user_id: command.user_id,
        }),
    ])
}

/// Grants and revokes roles. Everyone keeps `user`. Nothing to record when
/// nothing changes.
pub fn decide_roles(state: &UserState, command: &ChangeRoles) -> Result<Vec<Event>, DomainError> {
    let user = state.as_ref().ok_or(DomainError::UserNotFound)?;
    if command.revoke.contains(&Role::User) {
        return Err(DomainError::invalid("revoke", "the user role cannot be revoked"));
    }
    if command.grant.iter().any(|r| command.revoke.contains(r)) {
        return Err(DomainError::invalid("grant", "a role cannot be granted and revoked at once"));
    }
    let granted: Vec<Role> = dedup(command.grant.iter().filter(|r| !user.roles.contains(r)).copied());
    let revoked: Vec<Role> = dedup(command.revoke.iter().filter(|r| user.roles.contains(r)).copied());
    if granted.is_empty() && revoked.is_empty() {
        return Ok(vec![]);
    }
    let mut roles: Vec<Role> = user.roles.iter().filter(|r| !revoked.contains(r)).copied().collect();
    roles.extend(granted.iter().copied());
    roles.sort();
    let state_after = UserSnapshot { roles, ..user.clone() };
    Ok(vec![Event::UserRolesChanged(UserRolesChanged { user_id: command.user_id, granted, revoked, state_after })])
}

fn dedup(roles: impl Iterator<Item = Role>) -> Vec<Role> {
    let mut v: Vec<Role> = roles.collect();
    v.sort();
    v.dedup();
    v
}

pub fn evolve(state: UserState, event: &Event) -> UserState {
    match event {
        Event::UserRegistered(e) => {
            Some(UserSnapshot { email: e.email.clone(), username: e.username.clone(), roles: e.roles.clone() })
        }
        Event::UserRolesChanged(e) => Some(e.state_after.clone()),
        _ => state,
    }
}

pub fn evolve_reservation(state: ReservationState, event: &Event) -> ReservationState {
    match event {
        Event::ReservationClaimed(e) => Some(e.user_id),
        _ => state,
    }
}
