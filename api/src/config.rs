//! The environment both binaries read (`../shared/spec/api.md`,
//! "Configuration"). A bad value stops start-up with one line naming the
//! variable.

use std::path::PathBuf;
use std::time::Duration;

use commands::handler::CommandConfig;
use commands::log::LogConfig;
use domain::ledger::PayoutPolicy;
use events_schema::Money;
use rust_decimal::Decimal;

/// Which parts of the service an instance runs, so that replicas scale
/// apart (`HALOBUZZ_ROLE`: `all`, the default; `api`; `workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceRole {
    /// The HTTP API, the projectors and the gift reactor.
    All,
    /// The HTTP API only.
    Api,
    /// The projectors and the gift reactor only (with `/health` and
    /// `/metrics`).
    Workers,
}

impl InstanceRole {
    pub fn serves_api(self) -> bool {
        matches!(self, InstanceRole::All | InstanceRole::Api)
    }
    pub fn runs_workers(self) -> bool {
        matches!(self, InstanceRole::All | InstanceRole::Workers)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Everything read from the environment.
#[derive(Clone)]
pub struct Config {
    pub port: u16,
    pub app_env: String,
    pub data_dir: PathBuf,
    /// `None`: start and supervise a local nats-server.
    pub nats_url: Option<String>,
    /// The token an external NATS (`NATS_URL`) wants from its clients
    /// (`NATS_TOKEN`; deploy/nats.conf asks for one). The managed server
    /// makes its own.
    pub nats_token: Option<String>,
    pub nats_stream_replicas: usize,
    /// `true` for `NATS_SYNC=always` (the default).
    pub nats_sync_always: bool,
    pub mongodb_uri: Option<String>,
    /// `None`: the database `MONGODB_URI` names, else `halobuzz`.
    pub mongodb_db: Option<String>,
    pub jwt_secret: String,
    pub jwt_refresh_secret: String,
    pub stripe_secret_key: Option<String>,
    pub stripe_webhook_secrets: Vec<String>,
    pub stripe_api_base: Option<String>,
    /// Where Stripe's hosted checkout sends the buyer after paying
    /// (`STRIPE_SUCCESS_URL`) or giving up (`STRIPE_CANCEL_URL`).
    pub stripe_success_url: String,
    pub stripe_cancel_url: String,
    pub host_share_bps: u32,
    pub payout_policy: PayoutPolicy,
    pub admin_emails: Vec<String>,
    /// `None`: any origin.
    pub cors_origins: Option<Vec<String>>,
    /// `None`: no rate limit (`RATE_LIMIT_MAX_REQUESTS=0`).
    pub rate_limit: Option<RateLimit>,
    /// Login and registration per email (`RATE_LIMIT_EMAIL_MAX_REQUESTS`
    /// per `RATE_LIMIT_WINDOW_MS`, default 10; `0` disables, and so does
    /// `RATE_LIMIT_MAX_REQUESTS=0`): guessing one account's password from
    /// many addresses is limited too.
    pub email_rate_limit: Option<RateLimit>,
    /// Proxies in front of the service whose `X-Forwarded-For` entries are
    /// believed for the per-IP limit (`TRUST_PROXY_HOPS`, default 0: the
    /// peer address is the client). See `routes::client_ip`.
    pub trust_proxy_hops: u32,
    pub maintenance_mode: bool,
    pub log_format: LogFormat,
    pub metrics_token: Option<String>,
    pub role: InstanceRole,
    /// The largest request body accepted.
    pub body_bytes_max: usize,
    /// The managed nats-server's preferred port (`NATS_PORT`, default 4222;
    /// another free port when taken). Unused with `NATS_URL`.
    pub nats_port: u16,
    /// The gifts viewers can send (`GIFT_CATALOG`): a gift command takes the
    /// unit price from here, never from the client.
    pub gift_catalog: Vec<GiftItem>,
    /// The coin packages on sale (`COIN_PACKAGES`).
    pub coin_packages: Vec<CoinPackage>,
    /// Events per projector batch (`PROJECTOR_BATCH_EVENTS`): two batches
    /// are in memory at once, so this bounds the projector's memory.
    pub projector_batch_events: u32,
    /// The slow-client limits of the HTTP server.
    pub http: HttpLimits,
    /// Adjustments of this many coins or more, either way, need a second
    /// admin (`ADJUSTMENT_APPROVAL_COINS`, default 10000; 0: every one).
    pub adjustment_approval_coins: i64,
    /// Host earnings from a gift become payable this long after it
    /// (`EARNINGS_HOLD_HOURS`, default 72; 0: at once).
    pub earnings_hold_hours: u32,
    /// A command's id is remembered this long at least
    /// (`IDEMPOTENCY_HORIZON_HOURS`, default and floor 24, the contract's):
    /// the age of its record in the records stream (decision 0017).
    pub idempotency_horizon_hours: u32,
}

/// What a slow or flooding client may hold (`../shared/spec/api.md`,
/// "Limits that protect the service").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this, or the connection is
    /// closed (`HTTP_HEADER_TIMEOUT_MS`, default 10000). Also the longest
    /// an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// A request's body must arrive within this once the request holds its
    /// slot (`HTTP_BODY_TIMEOUT_MS`, default 30000): else `408` and the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Requests in flight, per kind: the Stripe webhook
    /// (`HTTP_WEBHOOK_IN_FLIGHT_MAX`, default 256), commands (other POSTs,
    /// `HTTP_COMMANDS_IN_FLIGHT_MAX`, default 1024) and queries
    /// (`HTTP_QUERIES_IN_FLIGHT_MAX`, default 1024); more wait for a slot
    /// of their own kind. Health, metrics and the docs take none.
    pub webhook_in_flight_max: usize,
    pub commands_in_flight_max: usize,
    pub queries_in_flight_max: usize,
}

/// One gift of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftItem {
    pub id: String,
    pub name: String,
    /// Price of one unit, in coins.
    pub coins: i64,
}

/// One coin package of the shop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinPackage {
    pub id: String,
    pub coins: i64,
    pub price: Money,
}

/// Events per projector batch by default: the runner's own default.
const PROJECTOR_BATCH_EVENTS_DEFAULT: u32 = projections::BATCH_SIZE_DEFAULT;
/// Gift ids are at most this long (the domain's limit).
const GIFT_ID_CHARS_MAX: usize = 100;
/// The catalog and the package list hold at most this many entries.
const CATALOG_ENTRIES_MAX: usize = 200;

/// `id:coins:Name`, comma-separated.
const DEFAULT_GIFT_CATALOG: &str =
    "rose:1:Rose,heart:5:Heart,star:10:Star,diamond:50:Diamond,crown:100:Crown,rocket:500:Rocket,castle:1000:Castle";
/// `id:coins:amount[:currency]`, comma-separated.
const DEFAULT_COIN_PACKAGES: &str = "coins_100:100:0.99,coins_500:500:4.99,coins_1200:1200:9.99,coins_2500:2500:19.99";

impl std::fmt::Debug for Config {
    // Secrets never reach a log, even through Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("port", &self.port)
            .field("app_env", &self.app_env)
            .field("data_dir", &self.data_dir)
            .field("nats_url", &self.nats_url.as_ref().map(|_| "<set>"))
            .field("nats_token", &self.nats_token.as_ref().map(|_| "<set>"))
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("mongodb", &self.mongodb_uri.as_ref().map(|_| "<set>"))
            .field("role", &self.role)
            .field("maintenance_mode", &self.maintenance_mode)
            .field("trust_proxy_hops", &self.trust_proxy_hops)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub window: Duration,
    pub requests_max: u32,
}

/// A variable with a bad value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// The shortest `NATS_TOKEN` production accepts (a guessable token is no
/// authentication).
pub const NATS_TOKEN_CHARS_MIN: usize = 32;
/// The shortest idempotency horizon: the contract remembers an
/// `Idempotency-Key` at least a day.
pub const IDEMPOTENCY_HORIZON_HOURS_MIN: u32 = 24;
/// The longest earnings hold (`EARNINGS_HOLD_HOURS`), and the longest
/// idempotency horizon: a year.
pub const EARNINGS_HOLD_HOURS_MAX: u32 = 24 * 366;

/// Trusted proxies in a row, at most (`TRUST_PROXY_HOPS`).
pub const TRUST_PROXY_HOPS_MAX: u32 = 8;

const DEV_JWT_SECRET: &str = "halobuzz-development-access-secret-change-me";
const DEV_JWT_REFRESH_SECRET: &str = "halobuzz-development-refresh-secret-change-me";
/// Secrets published in the source (and the README's examples): refused
/// outside development and test.
const DEV_SECRETS: &[&str] = &[DEV_JWT_SECRET, DEV_JWT_REFRESH_SECRET];

/// The environments that may run with development secrets and defaults:
/// exactly `development` and `test`. Any other name, misspelt or not, gets
/// production's checks.
pub fn is_development(app_env: &str) -> bool {
    matches!(app_env, "development" | "test")
}

/// The environment's name. The runbook sets `NODE_ENV` (its deployments
/// predate this service); the contract names `APP_ENV`. Either is read, and
/// two that disagree stop start-up: guessing could mean development secrets
/// in production.
fn environment(var: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    match (var("APP_ENV"), var("NODE_ENV")) {
        (Some(app), Some(node)) if app != node => Err(ConfigError {
            name: "APP_ENV",
            reason: format!("is {app:?} but NODE_ENV is {node:?}: set one, or both alike"),
        }),
        (Some(env), _) | (None, Some(env)) => Ok(env),
        (None, None) => Ok("development".into()),
    }
}

/// A variable's value, trimmed; empty counts as unset.
fn set(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// Whether the process environment names production (for the log format,
/// chosen before the rest of the configuration is read and checked).
pub fn production_from_env() -> bool {
    environment(&|name: &str| set(std::env::var(name).ok())).is_ok_and(|env| !is_development(&env))
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads any environment (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &str| set(get(name));
        let app_env = environment(&var)?;
        // Fail closed: every environment but the two named ones is held to
        // production's rules (`prod`, `staging`, `Production` alike).
        let production = !is_development(&app_env);
        let secret = |name: &'static str, dev: &str| -> Result<String, ConfigError> {
            match var(name) {
                Some(s) if production && DEV_SECRETS.contains(&s.as_str()) => Err(ConfigError {
                    name,
                    reason: format!("is a public development secret: refused with APP_ENV {app_env:?}"),
                }),
                Some(s) if s.len() >= 32 => Ok(s),
                Some(_) => Err(ConfigError { name, reason: "must be at least 32 characters".into() }),
                None if production => Err(ConfigError {
                    name,
                    reason: format!(
                        "is required with APP_ENV {app_env:?} (only development and test use development secrets)"
                    ),
                }),
                None => {
                    tracing::warn!("{name} is not set: using a development secret");
                    Ok(dev.to_string())
                }
            }
        };
        let jwt_secret = secret("JWT_SECRET", DEV_JWT_SECRET)?;
        let jwt_refresh_secret = secret("JWT_REFRESH_SECRET", DEV_JWT_REFRESH_SECRET)?;
        if production && jwt_secret == jwt_refresh_secret {
            return Err(ConfigError {
                name: "JWT_REFRESH_SECRET",
                reason: "must differ from JWT_SECRET (a refresh token must never pass for an access token)".into(),
            });
        }
        let rate_max: u32 = parse(&var, "RATE_LIMIT_MAX_REQUESTS", 100)?;
        let rate_window_ms: u64 = parse(&var, "RATE_LIMIT_WINDOW_MS", 900_000)?;
        let rate_limit = (rate_max > 0 && rate_window_ms > 0)
            .then(|| RateLimit { window: Duration::from_millis(rate_window_ms), requests_max: rate_max });
        let email_max: u32 = parse(&var, "RATE_LIMIT_EMAIL_MAX_REQUESTS", 10)?;
        let email_rate_limit =
            rate_limit.filter(|_| email_max > 0).map(|limit| RateLimit { requests_max: email_max, ..limit });
        let trust_proxy_hops: u32 = parse(&var, "TRUST_PROXY_HOPS", 0)?;
        if trust_proxy_hops > TRUST_PROXY_HOPS_MAX {
            return Err(ConfigError {
                name: "TRUST_PROXY_HOPS",
                reason: format!("at most {TRUST_PROXY_HOPS_MAX} proxies in a row"),
            });
        }
        let rate: Decimal = parse(&var, "COIN_PAYOUT_RATE", Decimal::new(1, 2))?;
        if rate <= Decimal::ZERO {
            return Err(ConfigError { name: "COIN_PAYOUT_RATE", reason: "must be positive".into() });
        }
        let host_share_bps: u32 = parse(&var, "HOST_SHARE_BPS", 7000)?;
        if host_share_bps > 10_000 {
            return Err(ConfigError { name: "HOST_SHARE_BPS", reason: "at most 10000 basis points".into() });
        }
        let min_coins: i64 = parse(&var, "PAYOUT_MIN_COINS", 1000)?;
        if min_coins < 1 {
            return Err(ConfigError { name: "PAYOUT_MIN_COINS", reason: "must be at least 1".into() });
        }
        let replicas: usize = parse(&var, "NATS_STREAM_REPLICAS", 1)?;
        if !(1..=5).contains(&replicas) {
            return Err(ConfigError { name: "NATS_STREAM_REPLICAS", reason: "must be between 1 and 5".into() });
        }
        let nats_sync_always = match var("NATS_SYNC").as_deref() {
            None | Some("always") => true,
            Some("interval") => false,
            Some(_) => return Err(ConfigError { name: "NATS_SYNC", reason: "must be `always` or `interval`".into() }),
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None if production => LogFormat::Json,
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(ConfigError { name: "LOG_FORMAT", reason: "must be `json` or `pretty`".into() }),
        };
        let role = match var("HALOBUZZ_ROLE").as_deref() {
            None | Some("all") => InstanceRole::All,
            Some("api") => InstanceRole::Api,
            Some("workers") => InstanceRole::Workers,
            Some(_) => {
                return Err(ConfigError { name: "HALOBUZZ_ROLE", reason: "must be `all`, `api` or `workers`".into() });
            }
        };
        let list = |name: &str| -> Vec<String> {
            var(name)
                .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default()
        };
        let cors_origins = match var("CORS_ORIGIN").as_deref() {
            None | Some("*") if production => {
                return Err(ConfigError {
                    name: "CORS_ORIGIN",
                    reason: format!("must list the allowed origins with APP_ENV {app_env:?} (no any-origin)"),
                });
            }
            None | Some("*") => None,
            Some(_) => Some(list("CORS_ORIGIN")),
        };
        let nats_token = var("NATS_TOKEN");
        if production && nats_token.as_ref().is_some_and(|token| token.len() < NATS_TOKEN_CHARS_MIN) {
            return Err(ConfigError {
                name: "NATS_TOKEN",
                reason: format!("must be at least {NATS_TOKEN_CHARS_MIN} characters with APP_ENV {app_env:?}"),
            });
        }
        let metrics_token = var("METRICS_TOKEN");
        if production && metrics_token.is_none() {
            return Err(ConfigError {
                name: "METRICS_TOKEN",
                reason: format!("is required with APP_ENV {app_env:?} (/metrics is never open)"),
            });
        }
        let http = HttpLimits {
            header_timeout: Duration::from_millis(positive(&var, "HTTP_HEADER_TIMEOUT_MS", 10_000)?),
            body_timeout: Duration::from_millis(positive(&var, "HTTP_BODY_TIMEOUT_MS", 30_000)?),
            webhook_in_flight_max: positive(&var, "HTTP_WEBHOOK_IN_FLIGHT_MAX", 256)?,
            commands_in_flight_max: positive(&var, "HTTP_COMMANDS_IN_FLIGHT_MAX", 1024)?,
            queries_in_flight_max: positive(&var, "HTTP_QUERIES_IN_FLIGHT_MAX", 1024)?,
        };
        let adjustment_approval_coins: i64 = parse(&var, "ADJUSTMENT_APPROVAL_COINS", 10_000)?;
        if adjustment_approval_coins < 0 {
            return Err(ConfigError { name: "ADJUSTMENT_APPROVAL_COINS", reason: "must not be negative".into() });
        }
        let earnings_hold_hours: u32 = parse(&var, "EARNINGS_HOLD_HOURS", 72)?;
        if earnings_hold_hours > EARNINGS_HOLD_HOURS_MAX {
            return Err(ConfigError {
                name: "EARNINGS_HOLD_HOURS",
                reason: format!("at most {EARNINGS_HOLD_HOURS_MAX} (a year)"),
            });
        }
        let idempotency_horizon_hours: u32 = parse(&var, "IDEMPOTENCY_HORIZON_HOURS", IDEMPOTENCY_HORIZON_HOURS_MIN)?;
        if !(IDEMPOTENCY_HORIZON_HOURS_MIN..=EARNINGS_HOLD_HOURS_MAX).contains(&idempotency_horizon_hours) {
            return Err(ConfigError {
                name: "IDEMPOTENCY_HORIZON_HOURS",
                reason: format!(
                    "from {IDEMPOTENCY_HORIZON_HOURS_MIN} (the contract remembers a key a day) to \
                     {EARNINGS_HOLD_HOURS_MAX} (a year)"
                ),
            });
        }
        Ok(Config {
            http,
            adjustment_approval_coins,
            earnings_hold_hours,
            idempotency_horizon_hours,
            port: parse(&var, "PORT", 5010)?,
            app_env,
            data_dir: var("DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("./data")),
            nats_url: var("NATS_URL"),
            nats_token,
            nats_stream_replicas: replicas,
            nats_sync_always,
            mongodb_uri: var("MONGODB_URI"),
            mongodb_db: var("MONGODB_DB"),
            jwt_secret,
            jwt_refresh_secret,
            stripe_secret_key: var("STRIPE_SECRET_KEY"),
            stripe_webhook_secrets: list("STRIPE_WEBHOOK_SECRET"),
            stripe_api_base: var("STRIPE_API_BASE"),
            stripe_success_url: var("STRIPE_SUCCESS_URL")
                .unwrap_or_else(|| "https://halobuzz.com/coins/success?session_id={CHECKOUT_SESSION_ID}".into()),
            stripe_cancel_url: var("STRIPE_CANCEL_URL").unwrap_or_else(|| "https://halobuzz.com/coins".into()),
            host_share_bps,
            payout_policy: PayoutPolicy {
                rate_per_coin: Money { amount: rate, currency: var("PAYOUT_CURRENCY").unwrap_or_else(|| "usd".into()) },
                min_coins,
            },
            admin_emails: list("ADMIN_EMAILS").into_iter().map(|e| e.to_lowercase()).collect(),
            cors_origins,
            rate_limit,
            email_rate_limit,
            trust_proxy_hops,
            maintenance_mode: parse_bool(&var, "MAINTENANCE_MODE")?,
            log_format,
            metrics_token,
            role,
            body_bytes_max: parse(&var, "BODY_BYTES_MAX", 64 * 1024)?,
            nats_port: parse(&var, "NATS_PORT", 4222)?,
            gift_catalog: parse_catalog(var("GIFT_CATALOG").as_deref().unwrap_or(DEFAULT_GIFT_CATALOG))?,
            coin_packages: parse_packages(var("COIN_PACKAGES").as_deref().unwrap_or(DEFAULT_COIN_PACKAGES))?,
            projector_batch_events: {
                let events: u32 = parse(&var, "PROJECTOR_BATCH_EVENTS", PROJECTOR_BATCH_EVENTS_DEFAULT)?;
                if !(1..=projections::BATCH_SIZE_MAX).contains(&events) {
                    return Err(ConfigError {
                        name: "PROJECTOR_BATCH_EVENTS",
                        reason: format!("must be 1 to {}", projections::BATCH_SIZE_MAX),
                    });
                }
                events
            },
        })
    }

    /// The event log's settings for the servers `urls` (with the `token`
    /// they want): the stream's replicas and the idempotency horizon from
    /// the environment, the rest the adapter's defaults.
    pub fn log_config(&self, urls: Vec<String>, token: Option<commands::managed::NatsToken>) -> LogConfig {
        let mut log_config = LogConfig::new(urls);
        log_config.replicas = self.nats_stream_replicas;
        log_config.token = token;
        log_config.idempotency_horizon_ms = u64::from(self.idempotency_horizon_hours) * 3_600_000;
        log_config
    }

    /// The servers of an external NATS (`NATS_URL`, comma-separated), with
    /// the token it wants (`NATS_TOKEN`); `None` when the service manages
    /// its own nats-server.
    pub fn external_nats(&self) -> Option<(Vec<String>, Option<commands::managed::NatsToken>)> {
        let urls = self.nats_url.as_ref()?;
        let urls = urls.split(',').map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        Some((urls, self.nats_token.clone().map(commands::managed::NatsToken)))
    }

    /// What the deciders take from the configuration. `ADMIN_EMAILS` grants
    /// roles at registration only in development and test: elsewhere
    /// registering an address proves nothing about owning it, and the first
    /// admin is granted by the operator command (`halobuzz-api roles`).
    pub fn command_config(&self) -> CommandConfig {
        CommandConfig {
            host_share_bps: self.host_share_bps,
            payout_policy: self.payout_policy.clone(),
            earnings_hold_hours: self.earnings_hold_hours,
            idempotency_horizon_hours: self.idempotency_horizon_hours,
            admin_emails: if self.is_development() { self.admin_emails.clone() } else { Vec::new() },
        }
    }

    /// `APP_ENV` is `development` or `test` (see [`is_development`]).
    pub fn is_development(&self) -> bool {
        is_development(&self.app_env)
    }

    /// The catalog entry of a gift.
    pub fn gift(&self, id: &str) -> Option<&GiftItem> {
        self.gift_catalog.iter().find(|g| g.id == id)
    }
}

fn parse_catalog(text: &str) -> Result<Vec<GiftItem>, ConfigError> {
    let bad = |reason: String| ConfigError { name: "GIFT_CATALOG", reason };
    let mut items: Vec<GiftItem> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(id), Some(coins), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("{entry:?} is not id:coins:name")));
        };
        let id = id.trim();
        if id.is_empty() || id.chars().count() > GIFT_ID_CHARS_MAX {
            return Err(bad(format!("gift id {id:?} must be 1 to {GIFT_ID_CHARS_MAX} characters")));
        }
        let coins: i64 = coins.trim().parse().map_err(|_| bad(format!("{entry:?}: coins is not a number")))?;
        if coins < 1 {
            return Err(bad(format!("{entry:?}: a gift costs at least 1 coin")));
        }
        if items.iter().any(|g| g.id == id) {
            return Err(bad(format!("gift id {id:?} appears twice")));
        }
        items.push(GiftItem { id: id.to_string(), name: name.trim().to_string(), coins });
    }
    if items.is_empty() || items.len() > CATALOG_ENTRIES_MAX {
        return Err(bad(format!("must list 1 to {CATALOG_ENTRIES_MAX} gifts")));
    }
    Ok(items)
}

fn parse_packages(text: &str) -> Result<Vec<CoinPackage>, ConfigError> {
    let bad = |reason: String| ConfigError { name: "COIN_PACKAGES", reason };
    let mut packages: Vec<CoinPackage> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
        let (id, coins, amount, currency) = match parts.as_slice() {
            [id, coins, amount] => (*id, *coins, *amount, "usd"),
            [id, coins, amount, currency] => (*id, *coins, *amount, *currency),
            _ => return Err(bad(format!("{entry:?} is not id:coins:amount[:currency]"))),
        };
        let coins: i64 = coins.parse().map_err(|_| bad(format!("{entry:?}: coins is not a number")))?;
        let amount: Decimal = amount.parse().map_err(|_| bad(format!("{entry:?}: amount is not a decimal")))?;
        if id.is_empty() || coins < 1 || amount <= Decimal::ZERO || currency.is_empty() {
            return Err(bad(format!("{entry:?}: needs an id, positive coins and a positive amount")));
        }
        if packages.iter().any(|p| p.id == id) {
            return Err(bad(format!("package id {id:?} appears twice")));
        }
        packages.push(CoinPackage {
            id: id.to_string(),
            coins,
            price: Money { amount, currency: currency.to_lowercase() },
        });
    }
    if packages.len() > CATALOG_ENTRIES_MAX {
        return Err(bad(format!("must list at most {CATALOG_ENTRIES_MAX} packages")));
    }
    Ok(packages)
}

fn parse<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError { name, reason: format!("cannot read {v:?}") }),
    }
}

/// A number that must be at least 1 (a zero timeout or pool would refuse
/// everything).
fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    let value = parse(var, name, default)?;
    if value < T::from(1) {
        return Err(ConfigError { name, reason: "must be at least 1".into() });
    }
    Ok(value)
}

fn parse_bool(var: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    match var(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ConfigError { name, reason: format!("must be true or false, not {v:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))
    }

    #[test]
    fn the_defaults_hold_a_catalog_and_packages() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 5010);
        assert_eq!(c.role, InstanceRole::All);
        assert_eq!(c.gift("rose").map(|g| g.coins), Some(1));
        assert_eq!(c.coin_packages.first().map(|p| p.price.amount.to_string()), Some("0.99".into()));
        assert!(c.rate_limit.is_some());
    }

    #[test]
    fn the_runbooks_node_env_sets_the_environment_unless_app_env_disagrees() {
        let secrets = [
            ("JWT_SECRET", "a".repeat(32)),
            ("JWT_REFRESH_SECRET", "b".repeat(32)),
            ("CORS_ORIGIN", "https://halobuzz.com".into()),
            ("METRICS_TOKEN", "scrape".into()),
        ];
        let with = |pairs: &[(&str, &str)]| {
            let mut all: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
            all.extend_from_slice(pairs);
            config(&all)
        };
        assert_eq!(with(&[("NODE_ENV", "production")]).unwrap().app_env, "production");
        assert_eq!(with(&[("APP_ENV", "production"), ("NODE_ENV", "production")]).unwrap().app_env, "production");
        assert_eq!(with(&[]).unwrap().app_env, "development");
        let disagree = with(&[("APP_ENV", "development"), ("NODE_ENV", "production")]).unwrap_err();
        assert_eq!(disagree.name, "APP_ENV");
        assert!(disagree.reason.contains("NODE_ENV is \"production\""), "{disagree}");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        assert_eq!(config(&[("PORT", "http")]).unwrap_err().name, "PORT");
        assert_eq!(config(&[("GIFT_CATALOG", "rose:zero:Rose")]).unwrap_err().name, "GIFT_CATALOG");
        assert_eq!(config(&[("GIFT_CATALOG", "rose:1:Rose,rose:2:Rose")]).unwrap_err().name, "GIFT_CATALOG");
        assert_eq!(config(&[("COIN_PACKAGES", "p:100")]).unwrap_err().name, "COIN_PACKAGES");
        assert_eq!(config(&[("HALOBUZZ_ROLE", "everything")]).unwrap_err().name, "HALOBUZZ_ROLE");
        assert_eq!(config(&[("APP_ENV", "production")]).unwrap_err().name, "JWT_SECRET");
        // The runbook's name for it counts alike.
        assert_eq!(config(&[("NODE_ENV", "production")]).unwrap_err().name, "JWT_SECRET");
    }

    /// A production-like environment with everything it requires, plus
    /// `pairs` (which override).
    fn production_like(env: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let access = "p".repeat(40);
        let refresh = "q".repeat(40);
        let mut all: Vec<(&str, &str)> = pairs.to_vec();
        all.extend_from_slice(&[
            ("APP_ENV", env),
            ("JWT_SECRET", &access),
            ("JWT_REFRESH_SECRET", &refresh),
            ("CORS_ORIGIN", "https://halobuzz.com"),
            ("METRICS_TOKEN", "scrape-token"),
        ]);
        // The first of a name wins (`config` finds the first).
        config(&all)
    }

    #[test]
    fn only_development_and_test_start_with_development_secrets() {
        assert!(config(&[("APP_ENV", "development")]).is_ok());
        assert!(config(&[("APP_ENV", "test")]).is_ok());
        for env in ["production", "prod", "staging", "Production", "dev", "testing"] {
            let missing = config(&[("APP_ENV", env)]).unwrap_err();
            assert_eq!(missing.name, "JWT_SECRET", "{env}: {missing}");
            assert!(production_like(env, &[]).is_ok(), "{env}: a complete configuration starts");
            for (name, value) in [("JWT_SECRET", DEV_JWT_SECRET), ("JWT_REFRESH_SECRET", DEV_JWT_REFRESH_SECRET)] {
                let public = production_like(env, &[(name, value)]).unwrap_err();
                assert_eq!(public.name, name, "{env}: {public}");
            }
            let same = "s".repeat(40);
            let equal = production_like(env, &[("JWT_SECRET", &same), ("JWT_REFRESH_SECRET", &same)]).unwrap_err();
            assert_eq!(equal.name, "JWT_REFRESH_SECRET", "{env}: {equal}");
            for origin in ["", "*"] {
                assert_eq!(production_like(env, &[("CORS_ORIGIN", origin)]).unwrap_err().name, "CORS_ORIGIN");
            }
            assert_eq!(production_like(env, &[("METRICS_TOKEN", " ")]).unwrap_err().name, "METRICS_TOKEN");
        }
    }

    #[test]
    fn admin_emails_grant_nothing_outside_development_and_test() {
        let test = config(&[("APP_ENV", "test"), ("ADMIN_EMAILS", "boss@x.io")]).unwrap();
        assert_eq!(test.command_config().admin_emails, vec!["boss@x.io"]);
        for env in ["production", "staging"] {
            let c = production_like(env, &[("ADMIN_EMAILS", "boss@x.io")]).unwrap();
            assert!(c.command_config().admin_emails.is_empty(), "{env}");
        }
    }

    #[test]
    fn zero_disables_the_rate_limit_and_lists_are_read() {
        let c = config(&[
            ("RATE_LIMIT_MAX_REQUESTS", "0"),
            ("ADMIN_EMAILS", " A@x.io, b@y.io ,"),
            ("GIFT_CATALOG", "kiss:3:A kiss"),
            ("COIN_PACKAGES", "small:10:0.10:eur"),
        ])
        .unwrap();
        assert!(c.rate_limit.is_none());
        assert_eq!(c.admin_emails, vec!["a@x.io", "b@y.io"]);
        assert_eq!(c.command_config().admin_emails, vec!["a@x.io", "b@y.io"], "development grants");
        assert_eq!(c.gift_catalog, vec![GiftItem { id: "kiss".into(), name: "A kiss".into(), coins: 3 }]);
        assert_eq!(c.coin_packages[0].price.currency, "eur");
    }
}
