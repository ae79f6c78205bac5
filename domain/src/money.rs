//! Coin arithmetic: checked, integer, and the per-gift host share.

use crate::error::DomainError;

/// Basis points in a whole.
pub const BPS_WHOLE: u32 = 10_000;

/// Turns a checked operation's `None` into the domain's overflow error.
pub fn checked_coins(value: Option<i64>) -> Result<i64, DomainError> {
    value.ok_or(DomainError::AmountOutOfRange)
}

/// The host's share of one gift: `floor(coins * bps / 10000)`. Rounded per
/// gift, so that batching gifts never changes the split.
pub fn host_share_coins(coins: i64, host_share_bps: u32) -> Result<i64, DomainError> {
    if host_share_bps > BPS_WHOLE {
        return Err(DomainError::invalid("hostShareBps", "at most 10000 basis points"));
    }
    if coins < 0 {
        return Err(DomainError::AmountOutOfRange);
    }
    // In i128 the product cannot overflow, and the quotient is at most
    // `coins`, so it fits back in an i64.
    let share = i128::from(coins) * i128::from(host_share_bps) / i128::from(BPS_WHOLE);
    i64::try_from(share).map_err(|_| DomainError::AmountOutOfRange)
}
