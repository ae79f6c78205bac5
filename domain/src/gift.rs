//! A gift from a viewer to a live stream's host: the viewer's side. The
//! host's side is `LedgerCommand::CreditGifts`, written by the gift reactor.

use events_schema::{Account, Event, GiftSent, StreamStatus, Transfer};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ledger::{LedgerState, require_spendable, require_text};
use crate::money::{BPS_WHOLE, checked_coins};
use crate::stream::StreamState;

/// The most units of one gift in one command.
pub const GIFT_QUANTITY_MAX: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendGift {
    pub stream_id: Uuid,
    /// The catalog id of the gift.
    pub gift_id: String,
    pub quantity: i64,
    /// The catalog price of one unit.
    pub unit_coins: i64,
    /// `HOST_SHARE_BPS` in force now.
    pub host_share_bps: u32,
}

/// What a gift decision reads: the viewer's ledger and the stream.
#[derive(Debug, Clone, Copy)]
pub struct GiftState<'a> {
    pub viewer: &'a LedgerState,
    pub stream: &'a StreamState,
}

pub fn decide(state: GiftState<'_>, command: &SendGift) -> Result<Vec<Event>, DomainError> {
    let viewer = state.viewer.user_id;
    let stream = state.stream.as_ref().ok_or(DomainError::StreamNotFound)?;
    require_text("giftId", &command.gift_id, 100)?;
    if !(1..=GIFT_QUANTITY_MAX).contains(&command.quantity) {
        return Err(DomainError::invalid("quantity", format!("must be between 1 and {GIFT_QUANTITY_MAX}")));
    }
    if command.unit_coins <= 0 {
        return Err(DomainError::invalid("unitCoins", "a gift costs a positive number of coins"));
    }
    if command.host_share_bps > BPS_WHOLE {
        return Err(DomainError::invalid("hostShareBps", "at most 10000 basis points"));
    }
    if stream.host_id == viewer {
        return Err(DomainError::SelfGift);
    }
    if stream.status != StreamStatus::Live {
        return Err(DomainError::StreamNotLive);
    }
    let coins = checked_coins(command.unit_coins.checked_mul(command.quantity))?;
    require_spendable(&state.viewer.snapshot, coins)?;
    let transfers = vec![Transfer { from: Account::Wallet(viewer), to: Account::TransitGifts, amount_coins: coins }];
    let commit = crate::ledger::commit_for_gift(state.viewer, transfers)?;
    Ok(vec![Event::GiftSent(GiftSent {
        user_id: viewer,
        stream_id: command.stream_id,
        host_id: stream.host_id,
        gift_id: command.gift_id.clone(),
        quantity: command.quantity,
        unit_coins: command.unit_coins,
        coins,
        host_share_bps: command.host_share_bps,
        commit,
    })])
}
