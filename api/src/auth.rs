//! Passwords (argon2id PHC strings) and tokens (JWT, HS256 only).
//!
//! Access tokens live 15 minutes and are signed with `JWT_SECRET`; refresh
//! tokens live 30 days and are signed with `JWT_REFRESH_SECRET`, so that
//! neither can stand in for the other even if the `typ` claim were ignored.
//! Verification accepts HS256 and nothing else: `alg: none` and every other
//! algorithm are refused before the signature is looked at.
//!
//! Sessions live in the log, not in the API: a refresh token names its
//! login (`fam`, the session family) and its place in it (`gen`), and both
//! tokens carry the user's sessions epoch (`sep`). A refresh rotates the
//! family (`commands::Commands::refresh_session`), and a token of an older
//! generation or epoch is refused; commands that move coins and privileged
//! routes refuse an access token of an older epoch. Tokens issued before
//! these claims existed read as epoch 0 and generation 0, their `jti` as
//! their family (decision 0013). Roles are carried in the access token for
//! the clients' convenience, but privileged routes re-read them from the
//! log, so a revoked role stops working at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm as Argon2Algorithm, Argon2, Block, Params, Version};
use chrono::Utc;
use events_schema::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::AppError;

/// Lifetime of an access token.
pub const ACCESS_TOKEN_TTL_S: i64 = 15 * 60;
/// Lifetime of a refresh token.
pub const REFRESH_TOKEN_TTL_S: i64 = 30 * 24 * 60 * 60;
/// Clock skew tolerated between replicas when checking `exp`.
const TOKEN_LEEWAY_S: u64 = 5;
/// A token longer than this is not one of ours (and is not parsed).
pub const TOKEN_CHARS_MAX: usize = 4096;
/// Passwords: at least this many characters...
pub const PASSWORD_CHARS_MIN: usize = 8;
/// ... and at most this many (argon2 takes any length; the bound keeps a
/// request from buying seconds of CPU).
pub const PASSWORD_CHARS_MAX: usize = 128;
/// Hashes computed at once: each takes `PASSWORD_MEMORY_KIB` of memory and
/// milliseconds of CPU, so the bound caps both.
const HASHES_IN_FLIGHT_MAX: usize = 2;
/// argon2id cost: OWASP's m=7 MiB, t=5, p=1, as strong as the crate's default
/// m=19 MiB, t=2 (same CPU, less memory). The memory comes from a buffer
/// per hashing slot, reused: hashing never allocates 7 MiB afresh, so it
/// leaves nothing behind in the allocator.
const PASSWORD_MEMORY_KIB: u32 = 7 * 1024;
const PASSWORD_ITERATIONS: u32 = 5;
const PASSWORD_LANES: u32 = 1;
/// Stored hashes with a larger memory cost than this are refused rather
/// than verified (a tampered record must not make us allocate gigabytes).
const PASSWORD_MEMORY_KIB_MAX: u32 = 64 * 1024;
/// How long a request waits for a hashing slot before giving up.
const HASH_WAIT_MS_MAX: u64 = 10_000;
/// Hashes running or waiting, at most: beyond it a login or registration
/// is answered `429` at once instead of queueing (a queue of seconds would
/// hold every login behind a flood).
const HASH_QUEUE_MAX: usize = 32;
/// The `Retry-After` of a full hashing queue.
const HASH_QUEUE_RETRY_AFTER_S: u64 = 1;

const TYP_ACCESS: &str = "access";
const TYP_REFRESH: &str = "refresh";

/// The claims of both token kinds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// `access` or `refresh`.
    pub typ: String,
    /// The roles when the token was issued (informational: privileged routes
    /// re-read them).
    #[serde(default)]
    pub roles: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    /// Unique per token.
    pub jti: String,
    /// The login (session family) the token belongs to; absent in tokens
    /// issued before sessions were rotated (their `jti` stands for it).
    #[serde(default, rename = "fam", skip_serializing_if = "Option::is_none")]
    pub family_id: Option<Uuid>,
    /// Refresh tokens: the family's generation the token was issued at.
    #[serde(default, rename = "gen")]
    pub generation: u64,
    /// The user's sessions epoch when the token was issued.
    #[serde(default, rename = "sep")]
    pub sessions_epoch: u64,
}

impl Claims {
    /// The token's session family: `fam`, or for a token issued before
    /// families existed its `jti` (a UUID, unique per token).
    pub fn family(&self) -> Option<Uuid> {
        self.family_id.or_else(|| Uuid::parse_str(&self.jti).ok())
    }
}

/// Where in its session a new pair of tokens stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionClaims {
    pub family_id: Uuid,
    pub generation: u64,
    pub sessions_epoch: u64,
}

impl SessionClaims {
    /// A new login: a new family at generation 0.
    pub fn login(sessions_epoch: u64) -> SessionClaims {
        SessionClaims { family_id: Uuid::now_v7(), generation: 0, sessions_epoch }
    }
}

/// A pair of fresh tokens.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

/// The signing keys, and the password hasher's slots.
#[derive(Clone)]
pub struct Auth {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    validation: Validation,
    hash_slots: Arc<Semaphore>,
    /// Places in the hashing queue (running and waiting).
    hash_queue: Arc<Semaphore>,
    /// The slots' memory: at most `HASHES_IN_FLIGHT_MAX` buffers.
    hash_memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// A hash of a random password, verified against when an email is
    /// unknown, so that a login takes as long whether or not the user exists.
    dummy_hash: Arc<String>,
}

impl std::fmt::Debug for Auth {
    // Keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

// Request types holding a password or a token: their Debug never shows it
// (a request logged by mistake must not leak it). Defined here, beside the
// rest of the secrets' handling, rather than derived in `views`.
impl std::fmt::Debug for crate::views::RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("email", &self.email)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

impl std::fmt::Debug for crate::views::LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("email", &self.email).field("password", &REDACTED).finish()
    }
}

impl std::fmt::Debug for crate::views::RefreshRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRequest").field("refresh_token", &REDACTED).finish()
    }
}

impl std::fmt::Debug for crate::views::LogoutRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogoutRequest").field("refresh_token", &REDACTED).finish()
    }
}

/// What Debug shows instead of a secret.
const REDACTED: &str = "<redacted>";

/// The token's role strings.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Admin => "admin",
        Role::Finance => "finance",
        Role::Ops => "ops",
    }
}

pub fn parse_role(name: &str) -> Option<Role> {
    [Role::User, Role::Admin, Role::Finance, Role::Ops].into_iter().find(|r| role_name(*r) == name)
}

impl Auth {
    pub fn new(access_secret: &str, refresh_secret: &str) -> Result<Auth, AppError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = TOKEN_LEEWAY_S;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let mut memory = Vec::new();
        let dummy = hash_blocking(&mut memory, &Uuid::now_v7().to_string())?;
        Ok(Auth {
            access_encoding: EncodingKey::from_secret(access_secret.as_bytes()),
            access_decoding: DecodingKey::from_secret(access_secret.as_bytes()),
            refresh_encoding: EncodingKey::from_secret(refresh_secret.as_bytes()),
            refresh_decoding: DecodingKey::from_secret(refresh_secret.as_bytes()),
            validation,
            hash_slots: Arc::new(Semaphore::new(HASHES_IN_FLIGHT_MAX)),
            hash_queue: Arc::new(Semaphore::new(HASH_QUEUE_MAX)),
            hash_memory: Arc::new(Mutex::new(vec![memory])),
            dummy_hash: Arc::new(dummy),
        })
    }

    /// Issues an access and a refresh token for `user_id`, in `session`.
    pub fn issue(&self, user_id: Uuid, roles: &[Role], session: SessionClaims) -> Result<TokenPair, AppError> {
        let now = Utc::now().timestamp();
        let roles: Vec<String> = roles.iter().map(|r| role_name(*r).to_string()).collect();
        let claims = |typ: &str, ttl_s: i64| Claims {
            sub: user_id.to_string(),
            typ: typ.to_string(),
            roles: roles.clone(),
            iat: now,
            exp: now + ttl_s,
            jti: Uuid::now_v7().to_string(),
            family_id: Some(session.family_id),
            generation: session.generation,
            sessions_epoch: session.sessions_epoch,
        };
        let header = Header::new(Algorithm::HS256);
        let sign = |claims: &Claims, key: &EncodingKey| {
            jsonwebtoken::encode(&header, claims, key).map_err(|e| AppError::Internal(format!("token signing: {e}")))
        };
        Ok(TokenPair {
            access_token: sign(&claims(TYP_ACCESS, ACCESS_TOKEN_TTL_S), &self.access_encoding)?,
            refresh_token: sign(&claims(TYP_REFRESH, REFRESH_TOKEN_TTL_S), &self.refresh_encoding)?,
        })
    }

    /// The user of a valid access token.
    pub fn verify_access(&self, token: &str) -> Result<(Uuid, Claims), AppError> {
        self.verify(token, &self.access_decoding, TYP_ACCESS)
    }

    /// The user of a valid refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<(Uuid, Claims), AppError> {
        self.verify(token, &self.refresh_decoding, TYP_REFRESH)
    }

    fn verify(&self, token: &str, key: &DecodingKey, typ: &str) -> Result<(Uuid, Claims), AppError> {
        const INVALID: AppError = AppError::Unauthorized("the token is invalid or expired");
        if token.len() > TOKEN_CHARS_MAX {
            return Err(INVALID);
        }
        // `decode` refuses any `alg` outside `validation.algorithms` (and
        // `none` is not even an algorithm it can parse).
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|_| INVALID)?;
        if data.header.alg != Algorithm::HS256 || data.claims.typ != typ {
            return Err(INVALID);
        }
        let user_id = Uuid::parse_str(&data.claims.sub).map_err(|_| INVALID)?;
        Ok((user_id, data.claims))
    }

    /// Hashes a password off the async workers, at most
    /// `HASHES_IN_FLIGHT_MAX` at once.
    pub async fn hash_password(&self, password: String) -> Result<String, AppError> {
        self.with_memory(move |memory| hash_blocking(memory, &password)).await?
    }

    /// Whether `password` matches the PHC string `hash` (`None`: the user is
    /// unknown; a dummy hash is checked so that timing tells nothing).
    pub async fn verify_password(&self, password: String, hash: Option<String>) -> Result<bool, AppError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let matches = self.with_memory(move |memory| verify_blocking(memory, &password, &hash)).await?;
        Ok(known && matches)
    }

    /// Runs `work` on the blocking pool with a hashing slot and its memory.
    async fn with_memory<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let Ok(_place) = self.hash_queue.clone().try_acquire_owned() else {
            return Err(AppError::RateLimited { retry_after_s: HASH_QUEUE_RETRY_AFTER_S });
        };
        let _slot = match tokio::time::timeout(Duration::from_millis(HASH_WAIT_MS_MAX), self.hash_slots.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            _ => return Err(AppError::Unavailable("password hashing is saturated".into())),
        };
        let pool = self.hash_memory.clone();
        let mut memory = pool.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            let result = work(&mut memory);
            // Back to the pool, which holds one buffer per slot at most.
            let mut buffers = pool.lock().unwrap_or_else(PoisonError::into_inner);
            if buffers.len() < HASHES_IN_FLIGHT_MAX {
                buffers.push(memory);
            }
            result
        })
        .await
        .map_err(|e| AppError::Internal(format!("hashing task: {e}")))
    }
}

fn password_params() -> Result<Params, AppError> {
    Params::new(PASSWORD_MEMORY_KIB, PASSWORD_ITERATIONS, PASSWORD_LANES, None)
        .map_err(|e| AppError::Internal(format!("argon2 parameters: {e}")))
}

/// `memory` sized for `blocks` (grown once, then reused).
fn blocks_of(memory: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

/// argon2id of `password` with a fresh salt, as a PHC string.
fn hash_blocking(memory: &mut Vec<Block>, password: &str) -> Result<String, AppError> {
    let failed = |e: &dyn std::fmt::Display| AppError::Internal(format!("password hashing: {e}"));
    let params = password_params()?;
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buffer = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buffer).map_err(|e| failed(&e))?;
    let argon2 = Argon2::new(Argon2Algorithm::Argon2id, Version::V0x13, params.clone());
    let blocks = blocks_of(memory, params.block_count());
    let mut raw = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut raw, blocks).map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Argon2Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&raw).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Whether `password` hashes to the PHC string `phc` (any argon2 variant and
/// parameters, up to `PASSWORD_MEMORY_KIB_MAX`).
fn verify_blocking(memory: &mut Vec<Block>, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params)) = (Argon2Algorithm::try_from(parsed.algorithm), Params::try_from(&parsed)) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    if params.m_cost() > PASSWORD_MEMORY_KIB_MAX {
        return false;
    }
    let mut salt_buffer = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buffer) else { return false };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let blocks = blocks_of(memory, params.block_count());
    let mut raw = vec![0u8; expected.len()];
    if argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut raw, blocks).is_err() {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(&raw).is_ok_and(|computed| computed == expected)
}

/// Checks a password's length before it is hashed.
pub fn check_password(password: &str) -> Result<(), AppError> {
    let n = password.chars().count();
    if !(PASSWORD_CHARS_MIN..=PASSWORD_CHARS_MAX).contains(&n) {
        return Err(AppError::validation(
            "password",
            format!("must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new("a-test-access-secret-of-at-least-32-chars", "a-test-refresh-secret-of-at-least-32-chars").unwrap()
    }

    #[test]
    fn an_access_token_round_trips_and_is_not_a_refresh_token() {
        let auth = auth();
        let user = Uuid::now_v7();
        let session = SessionClaims { family_id: Uuid::now_v7(), generation: 3, sessions_epoch: 2 };
        let pair = auth.issue(user, &[Role::User, Role::Admin], session).unwrap();
        let (id, claims) = auth.verify_access(&pair.access_token).unwrap();
        assert_eq!(id, user);
        assert_eq!(claims.roles, vec!["user", "admin"]);
        assert_eq!((claims.family(), claims.sessions_epoch), (Some(session.family_id), 2));
        let (_, refresh) = auth.verify_refresh(&pair.refresh_token).unwrap();
        assert_eq!((refresh.family(), refresh.generation, refresh.sessions_epoch), (Some(session.family_id), 3, 2));
        assert!(auth.verify_refresh(&pair.access_token).is_err());
        assert!(auth.verify_access(&pair.refresh_token).is_err());
        assert_eq!(auth.verify_refresh(&pair.refresh_token).unwrap().0, user);
    }

    #[test]
    fn a_token_issued_before_sessions_reads_as_epoch_0_generation_0_and_its_jti_as_family() {
        let auth = auth();
        let now = Utc::now().timestamp();
        let jti = Uuid::now_v7();
        let old = serde_json::json!({
            "sub": Uuid::now_v7().to_string(), "typ": "refresh", "roles": ["user"],
            "iat": now, "exp": now + 60, "jti": jti.to_string(),
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &old,
            &EncodingKey::from_secret(b"a-test-refresh-secret-of-at-least-32-chars"),
        )
        .unwrap();
        let (_, claims) = auth.verify_refresh(&token).unwrap();
        assert_eq!((claims.family(), claims.generation, claims.sessions_epoch), (Some(jti), 0, 0));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let auth = auth();
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            typ: "access".into(),
            roles: vec!["admin".into()],
            iat: now,
            exp: now + 60,
            jti: "x".into(),
            family_id: None,
            generation: 0,
            sessions_epoch: 0,
        };
        let b64 = |v: &serde_json::Value| {
            use base64_engine::encode;
            encode(&serde_json::to_vec(v).unwrap())
        };
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&serde_json::to_value(&claims).unwrap())
        );
        assert!(auth.verify_access(&none).is_err());
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(b"a-test-access-secret-of-at-least-32-chars"),
        )
        .unwrap();
        assert!(auth.verify_access(&hs512).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let auth = auth();
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: Uuid::now_v7().to_string(),
            typ: "access".into(),
            roles: vec![],
            iat: now - 3600,
            exp: now - 600,
            jti: "x".into(),
            family_id: None,
            generation: 0,
            sessions_epoch: 0,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"a-test-access-secret-of-at-least-32-chars"),
        )
        .unwrap();
        assert!(auth.verify_access(&token).is_err());
    }

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let auth = auth();
        let hash = auth.hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(auth.verify_password("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!auth.verify_password("wrong horse".into(), Some(hash)).await.unwrap());
        assert!(!auth.verify_password("correct horse".into(), None).await.unwrap());
        // Hashes made elsewhere with other parameters (the crate's default).
        use argon2::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let other = Argon2::default().hash_password(b"pw of another tool", &salt).unwrap().to_string();
        assert!(auth.verify_password("pw of another tool".into(), Some(other.clone())).await.unwrap());
        assert!(!auth.verify_password("not it".into(), Some(other)).await.unwrap());
        assert!(!auth.verify_password("x".into(), Some("not a phc string".into())).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_hashing_queue_answers_429_at_once() {
        let auth = auth();
        // Every place taken (hashes running and waiting), as under a flood.
        let taken = auth.hash_queue.clone().acquire_many_owned(HASH_QUEUE_MAX as u32).await.unwrap();
        let started = std::time::Instant::now();
        let refused = auth.hash_password("correct horse".into()).await.unwrap_err();
        assert!(matches!(refused, AppError::RateLimited { retry_after_s: HASH_QUEUE_RETRY_AFTER_S }), "{refused:?}");
        assert!(auth.verify_password("correct horse".into(), None).await.is_err(), "logins alike");
        assert!(started.elapsed() < Duration::from_millis(100), "at once, not after a wait");
        drop(taken);
        assert!(auth.hash_password("correct horse".into()).await.is_ok(), "a place is free again");
    }

    #[test]
    fn requests_holding_secrets_never_show_them_in_debug() {
        use crate::views::{LoginRequest, LogoutRequest, RefreshRequest, RegisterRequest};
        let secret = "hunter2-correct-horse";
        let register = RegisterRequest { email: "a@x.io".into(), username: "abc".into(), password: secret.into() };
        let login = LoginRequest { email: "a@x.io".into(), password: secret.into() };
        let refresh = RefreshRequest { refresh_token: secret.into() };
        let logout = LogoutRequest { refresh_token: secret.into() };
        for shown in [format!("{register:?}"), format!("{login:?}"), format!("{refresh:?}"), format!("{logout:?}")] {
            assert!(!shown.contains(secret) && shown.contains(REDACTED), "{shown}");
        }
        assert!(format!("{login:?}").contains("a@x.io"));
    }

    /// Unpadded URL-safe base64, enough to forge a token in a test.
    mod base64_engine {
        pub fn encode(bytes: &[u8]) -> String {
            const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            out
        }
    }
}
