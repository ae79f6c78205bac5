//! The chart of accounts. An account is stored as one string, `kind:owner`
//! for per-user accounts and `kind:name` for the platform's own.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// One account of the ledger. Per-user accounts belong to that user's ledger
/// aggregate and are constrained; the platform's accounts are unconstrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// Coins a user can spend.
    Wallet(Uuid),
    /// A host's earnings from gifts.
    Earnings(Uuid),
    /// Earnings reserved by pending payouts.
    PayoutHold(Uuid),
    /// Gifts debited from viewers, not yet credited to hosts.
    TransitGifts,
    /// The platform's commission on gifts.
    PlatformRevenue,
    /// Manual corrections by admins.
    PlatformAdjustments,
    /// Coins issued against Stripe payments.
    ExternalStripe,
    /// Coins redeemed for money.
    ExternalPayouts,
}

impl Account {
    /// One account of every kind, `user`'s where the kind has an owner: for
    /// the checks that must cover each kind.
    pub fn every_kind(user: Uuid) -> [Account; 8] {
        // A new kind fails this match until it joins the list.
        match Account::TransitGifts {
            Account::Wallet(_) | Account::Earnings(_) | Account::PayoutHold(_) => {}
            Account::TransitGifts | Account::PlatformRevenue | Account::PlatformAdjustments => {}
            Account::ExternalStripe | Account::ExternalPayouts => {}
        }
        [
            Account::Wallet(user),
            Account::Earnings(user),
            Account::PayoutHold(user),
            Account::TransitGifts,
            Account::PlatformRevenue,
            Account::PlatformAdjustments,
            Account::ExternalStripe,
            Account::ExternalPayouts,
        ]
    }

    /// The user whose aggregate owns this account, for per-user accounts.
    pub fn owner(&self) -> Option<Uuid> {
        match self {
            Account::Wallet(u) | Account::Earnings(u) | Account::PayoutHold(u) => Some(*u),
            _ => None,
        }
    }

    /// Whether the account is one of a user's constrained accounts.
    pub fn is_constrained(&self) -> bool {
        self.owner().is_some() || matches!(self, Account::TransitGifts)
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Wallet(u) => write!(f, "wallet:{u}"),
            Account::Earnings(u) => write!(f, "earnings:{u}"),
            Account::PayoutHold(u) => write!(f, "payout_hold:{u}"),
            Account::TransitGifts => f.write_str("transit:gifts"),
            Account::PlatformRevenue => f.write_str("platform:revenue"),
            Account::PlatformAdjustments => f.write_str("platform:adjustments"),
            Account::ExternalStripe => f.write_str("external:stripe"),
            Account::ExternalPayouts => f.write_str("external:payouts"),
        }
    }
}

/// The reason an account string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountParseError(pub String);

impl fmt::Display for AccountParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an account: {:?}", self.0)
    }
}

impl std::error::Error for AccountParseError {}

impl FromStr for Account {
    type Err = AccountParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AccountParseError(s.chars().take(80).collect());
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        let user = || Uuid::parse_str(rest).map_err(|_| err());
        Ok(match (kind, rest) {
            ("wallet", _) => Account::Wallet(user()?),
            ("earnings", _) => Account::Earnings(user()?),
            ("payout_hold", _) => Account::PayoutHold(user()?),
            ("transit", "gifts") => Account::TransitGifts,
            ("platform", "revenue") => Account::PlatformRevenue,
            ("platform", "adjustments") => Account::PlatformAdjustments,
            ("external", "stripe") => Account::ExternalStripe,
            ("external", "payouts") => Account::ExternalPayouts,
            _ => return Err(err()),
        })
    }
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Account {
    fn schema_name() -> Cow<'static, str> {
        "Account".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A ledger account: wallet:<user>, earnings:<user>, payout_hold:<user>, transit:gifts, platform:revenue, platform:adjustments, external:stripe or external:payouts.",
            "pattern": "^((wallet|earnings|payout_hold):[0-9a-f-]{36}|transit:gifts|platform:(revenue|adjustments)|external:(stripe|payouts))$"
        })
    }
}
