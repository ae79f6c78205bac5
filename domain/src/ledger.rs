//! The user ledger: a user's wallet, earnings and payout hold, as one
//! aggregate. Every decision is one commit of transfers that balances to
//! zero by construction and carries the state after it.

use events_schema::{
    Account, CoinsPurchased, Event, GiftsReceived, LedgerAdjusted, LedgerCommit, LedgerSnapshot, Money, PayoutApproved,
    PayoutRejected, PayoutRequested, PendingPayout, PurchaseRefunded, ReceivedGift, Transfer,
};
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use crate::error::{DomainError, Violation};
use crate::money::{checked_coins, host_share_coins};

/// At most this many payouts may be pending for one user, so that the state
/// carried in every commit stays small.
pub const PENDING_PAYOUTS_MAX: usize = 20;
/// At most this many gifts are credited in one host commit.
pub const CREDIT_BATCH_GIFTS_MAX: usize = 10_000;
/// Free-text fields (reasons, destinations, references) are at most this long.
pub const TEXT_CHARS_MAX: usize = 500;
/// The most coins one admin adjustment moves either way: a correction, not
/// a way to the edge of `i64` (where the next one would overflow a
/// balance and be refused for a reason no client can see).
pub const ADJUSTMENT_COINS_MAX: i64 = 1_000_000_000_000;

/// A user ledger: whose it is, and its balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerState {
    pub user_id: Uuid,
    pub snapshot: LedgerSnapshot,
}

/// The ledger of a user with no commit yet.
pub fn initial_state(user_id: Uuid) -> LedgerState {
    LedgerState { user_id, snapshot: LedgerSnapshot::default() }
}

/// How a payout is priced, from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutPolicy {
    /// Money paid per coin (`COIN_PAYOUT_RATE`, default 0.01 usd).
    pub rate_per_coin: Money,
    /// The smallest payout (`PAYOUT_MIN_COINS`, default 1000).
    pub min_coins: i64,
}

/// One viewer-side gift to credit to its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftToCredit {
    /// Log position of the viewer's `ledger.gift_sent` commit.
    pub source_position: u64,
    pub viewer_id: Uuid,
    pub stream_id: Uuid,
    pub coins: i64,
    pub host_share_bps: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerCommand {
    /// A Stripe payment was confirmed: the posting of the payment's
    /// decision at `source_position` (0: none named).
    PurchaseCoins {
        payment_id: String,
        coins: i64,
        source_position: u64,
    },
    /// A Stripe payment was refunded, in part or in full. May drive the
    /// wallet negative.
    RefundPurchase {
        payment_id: String,
        coins: i64,
        source_position: u64,
    },
    /// The host's side of gifts, batched by the gift reactor.
    CreditGifts {
        gifts: Vec<GiftToCredit>,
    },
    RequestPayout {
        payout_id: Uuid,
        coins: i64,
        destination: String,
        policy: PayoutPolicy,
    },
    ApprovePayout {
        payout_id: Uuid,
        external_ref: String,
    },
    RejectPayout {
        payout_id: Uuid,
        reason: String,
    },
    /// A manual correction: positive credits the wallet, negative debits it.
    Adjust {
        coins: i64,
        reason: String,
        admin_id: Uuid,
    },
}

/// Decides a command against a user's ledger. `Ok(vec![])` means there is
/// nothing to do (gifts already credited).
pub fn decide(state: &LedgerState, command: &LedgerCommand) -> Result<Vec<Event>, DomainError> {
    let user = state.user_id;
    let snap = &state.snapshot;
    let event = match command {
        LedgerCommand::PurchaseCoins { payment_id, coins, source_position } => {
            require_text("paymentId", payment_id, 255)?;
            require_positive("coins", *coins)?;
            let transfers = vec![transfer(Account::ExternalStripe, Account::Wallet(user), *coins)];
            Event::CoinsPurchased(CoinsPurchased {
                user_id: user,
                payment_id: payment_id.clone(),
                coins: *coins,
                source_position: *source_position,
                commit: build_commit(state, transfers, PendingChange::None)?,
            })
        }
        LedgerCommand::RefundPurchase { payment_id, coins, source_position } => {
            require_text("paymentId", payment_id, 255)?;
            require_positive("coins", *coins)?;
            let transfers = vec![transfer(Account::Wallet(user), Account::ExternalStripe, *coins)];
            Event::PurchaseRefunded(PurchaseRefunded {
                user_id: user,
                payment_id: payment_id.clone(),
                coins: *coins,
                source_position: *source_position,
                commit: build_commit(state, transfers, PendingChange::None)?,
            })
        }
        LedgerCommand::CreditGifts { gifts } => return decide_credit(state, gifts),
        LedgerCommand::RequestPayout { payout_id, coins, destination, policy } => {
            require_text("destination", destination, TEXT_CHARS_MAX)?;
            require_positive("coins", *coins)?;
            if *coins < policy.min_coins {
                return Err(DomainError::BelowMinimum { coins: *coins, min_coins: policy.min_coins });
            }
            if snap.earnings_coins < *coins {
                return Err(DomainError::InsufficientEarnings {
                    needed_coins: *coins,
                    available_coins: snap.earnings_coins,
                });
            }
            if snap.pending_payouts.len() >= PENDING_PAYOUTS_MAX {
                return Err(DomainError::TooManyPendingPayouts { max: PENDING_PAYOUTS_MAX });
            }
            if snap.pending_payouts.iter().any(|p| p.payout_id == *payout_id) {
                return Err(DomainError::invalid("payoutId", "a payout with this id is already pending"));
            }
            let fiat = payout_fiat(*coins, &policy.rate_per_coin)?;
            let transfers = vec![transfer(Account::Earnings(user), Account::PayoutHold(user), *coins)];
            let pending = PendingPayout { payout_id: *payout_id, coins: *coins };
            Event::PayoutRequested(PayoutRequested {
                user_id: user,
                payout_id: *payout_id,
                coins: *coins,
                fiat,
                destination: destination.clone(),
                commit: build_commit(state, transfers, PendingChange::Add(pending))?,
            })
        }
        LedgerCommand::ApprovePayout { payout_id, external_ref } => {
            require_text("externalRef", external_ref, TEXT_CHARS_MAX)?;
            let coins = pending_coins(snap, *payout_id)?;
            let transfers = vec![transfer(Account::PayoutHold(user), Account::ExternalPayouts, coins)];
            Event::PayoutApproved(PayoutApproved {
                user_id: user,
                payout_id: *payout_id,
                coins,
                external_ref: external_ref.clone(),
                commit: build_commit(state, transfers, PendingChange::Remove(*payout_id))?,
            })
        }
        LedgerCommand::RejectPayout { payout_id, reason } => {
            require_text("reason", reason, TEXT_CHARS_MAX)?;
            let coins = pending_coins(snap, *payout_id)?;
            let transfers = vec![transfer(Account::PayoutHold(user), Account::Earnings(user), coins)];
            Event::PayoutRejected(PayoutRejected {
                user_id: user,
                payout_id: *payout_id,
                coins,
                reason: reason.clone(),
                commit: build_commit(state, transfers, PendingChange::Remove(*payout_id))?,
            })
        }
        LedgerCommand::Adjust { coins, reason, admin_id } => {
            require_text("reason", reason, TEXT_CHARS_MAX)?;
            if *coins == 0 {
                return Err(DomainError::invalid("coins", "an adjustment is not zero"));
            }
            if coins.unsigned_abs() > ADJUSTMENT_COINS_MAX.unsigned_abs() {
                return Err(DomainError::invalid("coins", format!("at most {ADJUSTMENT_COINS_MAX} either way")));
            }
            let transfers = if *coins > 0 {
                vec![transfer(Account::PlatformAdjustments, Account::Wallet(user), *coins)]
            } else {
                // An adjustment is a correction, not a chargeback: it may not
                // drive the wallet below zero.
                let debit = coins.checked_neg().ok_or(DomainError::AmountOutOfRange)?;
                require_spendable(snap, debit)?;
                vec![transfer(Account::Wallet(user), Account::PlatformAdjustments, debit)]
            };
            Event::LedgerAdjusted(LedgerAdjusted {
                user_id: user,
                coins: *coins,
                reason: reason.clone(),
                admin_id: *admin_id,
                commit: build_commit(state, transfers, PendingChange::None)?,
            })
        }
    };
    Ok(vec![event])
}

fn decide_credit(state: &LedgerState, gifts: &[GiftToCredit]) -> Result<Vec<Event>, DomainError> {
    if gifts.len() > CREDIT_BATCH_GIFTS_MAX {
        return Err(DomainError::invalid("gifts", format!("at most {CREDIT_BATCH_GIFTS_MAX} per batch")));
    }
    let user = state.user_id;
    let mut last_position = state.snapshot.last_credited_position;
    let mut received = Vec::with_capacity(gifts.len());
    let mut host_total: i64 = 0;
    let mut platform_total: i64 = 0;
    for gift in gifts {
        // Exactly once: a gift at or before the last credited position was
        // credited by an earlier commit (the reactor may replay after a crash).
        if gift.source_position <= last_position {
            continue;
        }
        require_positive("coins", gift.coins)?;
        if gift.viewer_id == user {
            return Err(DomainError::SelfGift);
        }
        let host_coins = host_share_coins(gift.coins, gift.host_share_bps)?;
        host_total = checked_coins(host_total.checked_add(host_coins))?;
        platform_total = checked_coins(platform_total.checked_add(gift.coins - host_coins))?;
        last_position = gift.source_position;
        received.push(ReceivedGift {
            source_position: gift.source_position,
            viewer_id: gift.viewer_id,
            stream_id: gift.stream_id,
            coins: gift.coins,
            host_coins,
        });
    }
    if received.is_empty() {
        return Ok(vec![]);
    }
    let mut transfers = Vec::with_capacity(2);
    if host_total > 0 {
        transfers.push(transfer(Account::TransitGifts, Account::Earnings(user), host_total));
    }
    if platform_total > 0 {
        transfers.push(transfer(Account::TransitGifts, Account::PlatformRevenue, platform_total));
    }
    let commit = build_commit(state, transfers, PendingChange::CreditedUpTo(last_position))?;
    Ok(vec![Event::GiftsReceived(GiftsReceived { user_id: user, gifts: received, commit })])
}

/// Records a ledger event: the state it carries becomes the state. This is
/// what lets an aggregate load from its last commit alone; so `evolve` checks
/// only what holds of the carried state by itself (in debug builds), and
/// replays check the transition with `check_commit`.
pub fn evolve(state: LedgerState, event: &Event) -> LedgerState {
    match event.ledger_commit() {
        Some(commit) => {
            debug_assert_eq!(check_snapshot(&commit.state_after), Ok(()), "a stored state breaks a constraint");
            LedgerState { user_id: state.user_id, snapshot: commit.state_after.clone() }
        }
        None => state,
    }
}

/// Replays `event` on `prev` and checks every invariant of a commit: each
/// transfer positive and between two accounts, touching this user's accounts
/// and no other user's; the carried state equal to what the transfers give;
/// earnings and hold non-negative; the hold equal to the pending payouts.
pub fn check_commit(prev: &LedgerState, event: &Event) -> Result<(), Violation> {
    let commit = event.ledger_commit().ok_or(Violation::NotALedgerCommit)?;
    let change = match event {
        Event::PayoutRequested(e) => PendingChange::Add(PendingPayout { payout_id: e.payout_id, coins: e.coins }),
        Event::PayoutApproved(e) => PendingChange::Remove(e.payout_id),
        Event::PayoutRejected(e) => PendingChange::Remove(e.payout_id),
        Event::GiftsReceived(e) => match e.gifts.last() {
            Some(last) => PendingChange::CreditedUpTo(last.source_position),
            None => PendingChange::None,
        },
        _ => PendingChange::None,
    };
    let next = next_snapshot(prev, &commit.transfers, change).map_err(|e| match e {
        NextError::Violation(v) => v,
        NextError::Overflow => Violation::Overflow,
    })?;
    if next != commit.state_after {
        return Err(Violation::StateMismatch);
    }
    check_snapshot(&next)
}

/// The constraints of a user's accounts that hold after every commit.
pub fn check_snapshot(snap: &LedgerSnapshot) -> Result<(), Violation> {
    if snap.earnings_coins < 0 {
        return Err(Violation::NegativeBalance { account: "earnings", balance_coins: snap.earnings_coins });
    }
    if snap.held_coins < 0 {
        return Err(Violation::NegativeBalance { account: "payout_hold", balance_coins: snap.held_coins });
    }
    let pending_coins =
        snap.pending_payouts.iter().try_fold(0i64, |sum, p| sum.checked_add(p.coins)).ok_or(Violation::Overflow)?;
    if pending_coins != snap.held_coins {
        return Err(Violation::HoldMismatch { held_coins: snap.held_coins, pending_coins });
    }
    Ok(())
}

enum PendingChange {
    None,
    Add(PendingPayout),
    Remove(Uuid),
    CreditedUpTo(u64),
}

enum NextError {
    Violation(Violation),
    Overflow,
}

/// Builds the commit of `transfers` and asserts its invariants: a failure
/// here is a bug in a decider, never bad input, which `decide` has rejected.
fn build_commit(
    state: &LedgerState,
    transfers: Vec<Transfer>,
    change: PendingChange,
) -> Result<LedgerCommit, DomainError> {
    let state_after = match next_snapshot(state, &transfers, change) {
        Ok(next) => next,
        Err(NextError::Overflow) => return Err(DomainError::AmountOutOfRange),
        Err(NextError::Violation(v)) => panic!("a decider built an invalid commit: {v}"),
    };
    if let Err(v) = check_snapshot(&state_after) {
        panic!("a decider broke a ledger constraint: {v}");
    }
    Ok(LedgerCommit { transfers, state_after })
}

fn next_snapshot(
    prev: &LedgerState,
    transfers: &[Transfer],
    change: PendingChange,
) -> Result<LedgerSnapshot, NextError> {
    let user = prev.user_id;
    let mut next = prev.snapshot.clone();
    for (index, t) in transfers.iter().enumerate() {
        if t.amount_coins <= 0 {
            return Err(NextError::Violation(Violation::NonPositiveTransfer { index, amount_coins: t.amount_coins }));
        }
        if t.from == t.to {
            return Err(NextError::Violation(Violation::SelfTransfer { index }));
        }
        for (account, sign) in [(t.from, -1i64), (t.to, 1i64)] {
            let Some(owner) = account.owner() else { continue };
            if owner != user {
                return Err(NextError::Violation(Violation::ForeignAccount { index, account: account.to_string() }));
            }
            let balance = match account {
                Account::Wallet(_) => &mut next.wallet_coins,
                Account::Earnings(_) => &mut next.earnings_coins,
                _ => &mut next.held_coins,
            };
            let delta = t.amount_coins.checked_mul(sign).ok_or(NextError::Overflow)?;
            *balance = balance.checked_add(delta).ok_or(NextError::Overflow)?;
        }
    }
    // A commit moves coins. It may move none of this user's own (a batch of
    // one-coin gifts gives the host nothing and the platform everything),
    // but it still records the batch.
    if transfers.is_empty() {
        return Err(NextError::Violation(Violation::EmptyCommit));
    }
    match change {
        PendingChange::None => {}
        PendingChange::Add(p) => next.pending_payouts.push(p),
        PendingChange::Remove(id) => next.pending_payouts.retain(|p| p.payout_id != id),
        PendingChange::CreditedUpTo(position) => next.last_credited_position = position,
    }
    Ok(next)
}

/// The commit of a gift's viewer side, built by `gift::decide`.
pub(crate) fn commit_for_gift(state: &LedgerState, transfers: Vec<Transfer>) -> Result<LedgerCommit, DomainError> {
    build_commit(state, transfers, PendingChange::None)
}

fn transfer(from: Account, to: Account, amount_coins: i64) -> Transfer {
    Transfer { from, to, amount_coins }
}

fn pending_coins(snap: &LedgerSnapshot, payout_id: Uuid) -> Result<i64, DomainError> {
    snap.pending_payouts.iter().find(|p| p.payout_id == payout_id).map(|p| p.coins).ok_or(DomainError::PayoutNotPending)
}

/// Spending needs a wallet that covers it: a wallet driven negative by a
/// refund blocks all spending until it is back at zero.
pub(crate) fn require_spendable(snap: &LedgerSnapshot, coins: i64) -> Result<(), DomainError> {
    if snap.wallet_coins < coins {
        return Err(DomainError::InsufficientFunds { needed_coins: coins, available_coins: snap.wallet_coins });
    }
    Ok(())
}

pub(crate) fn require_positive(field: &'static str, coins: i64) -> Result<(), DomainError> {
    if coins <= 0 {
        return Err(DomainError::invalid(field, "must be a positive number of coins"));
    }
    Ok(())
}

pub(crate) fn require_text(field: &'static str, text: &str, chars_max: usize) -> Result<(), DomainError> {
    if text.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > chars_max {
        return Err(DomainError::invalid(field, format!("must be at most {chars_max} characters")));
    }
    Ok(())
}

/// What `coins` are worth at `rate`, rounded toward zero to the currency's
/// cents: the platform never pays out a fraction of a cent it does not owe.
pub fn payout_fiat(coins: i64, rate: &Money) -> Result<Money, DomainError> {
    if rate.amount <= Decimal::ZERO {
        return Err(DomainError::invalid("rate", "the payout rate must be positive"));
    }
    let amount = Decimal::from(coins)
        .checked_mul(rate.amount)
        .ok_or(DomainError::AmountOutOfRange)?
        .round_dp_with_strategy(2, RoundingStrategy::ToZero);
    Ok(Money { amount, currency: rate.currency.clone() })
}
