//! Users: registration with unique email and username, roles, and the
//! sessions epoch (every session of a user revoked at once).
//!
//! Uniqueness is a decision on three aggregates at once: the user and one
//! reservation for each unique value. The command layer appends all three
//! atomically, each expecting its subject to be empty, so that two racing
//! registrations cannot both win.

use events_schema::{
    Event, ReservationClaimed, ReservationKind, Role, UserRegistered, UserRolesChanged, UserSessionsRevoked,
    UserSnapshot,
};
use unicode_normalization::UnicodeNormalization;
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

/// Revokes every session of a user: tokens issued before carry a lower
/// sessions epoch than the one this records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeSessions {
    pub user_id: Uuid,
    /// The admin who revokes them.
    pub revoked_by: Uuid,
}

/// NFKC, trimmed and lower case: the form that is stored and kept unique
/// (NFKC first, so that look-alike compositions and full-width letters
/// cannot claim a second account for the same address).
pub fn normalize_email(email: &str) -> String {
    email.nfkc().collect::<String>().trim().to_lowercase()
}

/// Unicode's format characters (general category Cf, Unicode 15.1): the
/// invisible and bidirectional controls that make one address look like
/// another. Listed here because the standard library knows only Cc.
const FORMAT_CHARS: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// A control (Cc) or format (Cf) character.
fn is_control_or_format(c: char) -> bool {
    c.is_control() || FORMAT_CHARS.iter().any(|(first, last)| (*first..=*last).contains(&c))
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
        && !email.chars().any(|c| c.is_whitespace() || is_control_or_format(c))
}

fn valid_username(username: &str) -> bool {
    let n = username.chars().count();
    (USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&n)
        && username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// The checks of a registration's email and username that need no state:
/// the API runs them before it spends a password hash on the request.
pub fn check_registration(email: &str, username: &str) -> Result<(), DomainError> {
    if !valid_email(&normalize_email(email)) {
        return Err(DomainError::invalid("email", "is not an email address"));
    }
    if !valid_username(username.trim()) {
        return Err(DomainError::invalid(
            "username",
            format!("{USERNAME_CHARS_MIN} to {USERNAME_CHARS_MAX} letters, digits, '_' or '.'"),
        ));
    }
    Ok(())
}

pub fn decide_register(state: RegistrationState<'_>, command: &Register) -> Result<Vec<Event>, DomainError> {
    check_registration(&command.email, &command.username)?;
    let email = normalize_email(&command.email);
    let username = command.username.trim().to_string();
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

/// Every session of the user ends: the sessions epoch goes up by one, and
/// every token issued before (which carries the old epoch) is refused.
pub fn decide_revoke_sessions(state: &UserState, command: &RevokeSessions) -> Result<Vec<Event>, DomainError> {
    let user = state.as_ref().ok_or(DomainError::UserNotFound)?;
    let sessions_epoch = user.sessions_epoch.checked_add(1).ok_or(DomainError::AmountOutOfRange)?;
    let state_after = UserSnapshot { sessions_epoch, ..user.clone() };
    Ok(vec![Event::UserSessionsRevoked(UserSessionsRevoked {
        user_id: command.user_id,
        revoked_by: command.revoked_by,
        state_after,
    })])
}

/// Whether a token carrying `token_epoch` is still good for `user`: one
/// issued before the user's sessions were revoked is not. Checked by every
/// command that moves coins from the user's side, every privileged route
/// and every refresh.
pub fn check_sessions_epoch(user: &UserSnapshot, token_epoch: u64) -> Result<(), DomainError> {
    if token_epoch < user.sessions_epoch {
        return Err(DomainError::SessionRevoked);
    }
    Ok(())
}

/// `check_sessions_epoch` on a user that may not exist (a token of an
/// unknown user is refused alike).
pub fn check_session_of(state: &UserState, token_epoch: u64) -> Result<(), DomainError> {
    check_sessions_epoch(state.as_ref().ok_or(DomainError::SessionRevoked)?, token_epoch)
}

fn dedup(roles: impl Iterator<Item = Role>) -> Vec<Role> {
    let mut v: Vec<Role> = roles.collect();
    v.sort();
    v.dedup();
    v
}

pub fn evolve(state: UserState, event: &Event) -> UserState {
    match event {
        Event::UserRegistered(e) => Some(UserSnapshot {
            email: e.email.clone(),
            username: e.username.clone(),
            roles: e.roles.clone(),
            sessions_epoch: 0,
        }),
        Event::UserRolesChanged(e) => Some(e.state_after.clone()),
        Event::UserSessionsRevoked(e) => Some(e.state_after.clone()),
        _ => state,
    }
}

pub fn evolve_reservation(state: ReservationState, event: &Event) -> ReservationState {
    match event {
        Event::ReservationClaimed(e) => Some(e.user_id),
        _ => state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_nfkc_normalised_and_refuse_control_and_format_characters() {
        // Full-width letters and a ligature fold to the plain address.
        assert_eq!(normalize_email(" ＢＯＳＳ@ﬁrm.io "), "boss@firm.io");
        assert!(check_registration("ＢＯＳＳ@ﬁrm.io", "boss").is_ok());
        for bad in
            ["bo\u{202E}ss@x.io", "bo\u{200B}ss@x.io", "boss@x\u{0007}.io", "\u{FEFF}boss@x.io", "bo\u{2066}ss@x.io"]
        {
            assert!(check_registration(bad, "boss").is_err(), "{bad:?}");
        }
        assert!(check_registration("ünïcödé@exämple.io", "boss").is_ok(), "letters stay allowed");
    }
}
