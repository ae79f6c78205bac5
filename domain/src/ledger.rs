//! The user ledger: a user's wallet, earnings and payout hold, as one
//! aggregate. Every decision is one commit of transfers that balances to
//! zero by construction and carries the state after it.

use chrono::{DateTime, Utc};
use events_schema::{
    Account, CoinsPurchased, Event, GiftsReceived, LedgerAdjusted, LedgerCommit, LedgerSnapshot, MaturingEarnings,
    Money, PayoutApproved, PayoutRejected, PayoutRequested, PendingPayout, PurchaseRefunded, ReceivedGift,
    ReservationClaimed, ReservationKind, Transfer,
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
    /// When the gift was sent (its commit's time): the credit's clock.
    pub sent_at: DateTime<Utc>,
    /// When the host's share becomes payable: `sent_at` plus
    /// `EARNINGS_HOLD_HOURS`. Equal to `sent_at`: payable at once.
    pub matures_at: DateTime<Utc>,
}

/// At most this many maturity buckets (one per hour) are carried in a
/// ledger's state, whatever the hold and the number of gifts: past it, the
/// two earliest merge into the later hour (coins mature later, never
/// earlier). A 72-hour hold needs at most 73.
pub const MATURING_BUCKETS_MAX: usize = 200;

const SECONDS_PER_HOUR: i64 = 3600;

/// The whole hour at or after `t` (hours since the Unix epoch): a bucket
/// matures at a whole hour, so a gift matures at the first whole hour at or
/// after its hold ends (up to an hour late, never early).
pub fn hour_at_or_after(t: DateTime<Utc>) -> i64 {
    let secs = t.timestamp();
    let exact = secs.rem_euclid(SECONDS_PER_HOUR) == 0 && t.timestamp_subsec_nanos() == 0;
    secs.div_euclid(SECONDS_PER_HOUR) + i64::from(!exact)
}

/// The whole hour at or before `t`: buckets at or before it have matured.
fn hour_at_or_before(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(SECONDS_PER_HOUR)
}

/// Earnings payable at `now`: the balance less what has not matured yet.
pub fn earnings_available(snap: &LedgerSnapshot, now: DateTime<Utc>) -> i64 {
    let hour = hour_at_or_before(now);
    let maturing =
        snap.maturing.iter().filter(|b| b.matures_at_hour > hour).fold(0i64, |sum, b| sum.saturating_add(b.coins));
    snap.earnings_coins.saturating_sub(maturing).clamp(0, snap.earnings_coins.max(0))
}

/// `maturing` without the buckets matured at `now`.
fn pruned(maturing: &[MaturingEarnings], now: DateTime<Utc>) -> Vec<MaturingEarnings> {
    let hour = hour_at_or_before(now);
    maturing.iter().filter(|b| b.matures_at_hour > hour).cloned().collect()
}

/// Adds `coins` maturing at `hour`, keeping the buckets sorted, one per
/// hour, and at most `MATURING_BUCKETS_MAX`.
fn add_maturing(maturing: &mut Vec<MaturingEarnings>, hour: i64, coins: i64) -> Result<(), DomainError> {
    match maturing.binary_search_by_key(&hour, |b| b.matures_at_hour) {
        Ok(i) => maturing[i].coins = checked_coins(maturing[i].coins.checked_add(coins))?,
        Err(i) => maturing.insert(i, MaturingEarnings { matures_at_hour: hour, coins }),
    }
    while maturing.len() > MATURING_BUCKETS_MAX {
        let first = maturing.remove(0);
        maturing[0].coins = checked_coins(maturing[0].coins.checked_add(first.coins))?;
    }
    Ok(())
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
    /// At most the earnings matured at `requested_at` (the clock arrives in
    /// the command).
    RequestPayout {
        payout_id: Uuid,
        coins: i64,
        destination: String,
        policy: PayoutPolicy,
        requested_at: DateTime<Utc>,
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
        LedgerCommand::RequestPayout { payout_id, coins, destination, policy, requested_at } => {
            require_text("destination", destination, TEXT_CHARS_MAX)?;
            require_positive("coins", *coins)?;
            if *coins < policy.min_coins {
                return Err(DomainError::BelowMinimum { coins: *coins, min_coins: policy.min_coins });
            }
            let available = earnings_available(snap, *requested_at);
            if available < *coins {
                return Err(DomainError::InsufficientEarnings { needed_coins: *coins, available_coins: available });
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
            // What matured by now leaves the state.
            let maturing = pruned(&snap.maturing, *requested_at);
            Event::PayoutRequested(PayoutRequested {
                user_id: user,
                payout_id: *payout_id,
                coins: *coins,
                fiat,
                destination: destination.clone(),
                commit: build_commit_maturing(state, transfers, PendingChange::Add(pending), maturing)?,
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
            if *admin_id == user {
                return Err(DomainError::SelfApprovalForbidden);
            }
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

/// A payout request together with the log's reference from its id to this
/// ledger (a `reservation.claimed` of kind `payout`, appended in the same
/// atomic batch): what lets an approval find the payout from the log alone.
/// `reference` is the reservation of the payout id as the log has it.
pub fn decide_payout_request(
    state: &LedgerState,
    reference: &Option<Uuid>,
    command: &LedgerCommand,
) -> Result<Vec<Event>, DomainError> {
    let LedgerCommand::RequestPayout { payout_id, .. } = command else {
        return Err(DomainError::invalid("command", "not a payout request"));
    };
    if reference.is_some() {
        return Err(DomainError::invalid("payoutId", "a payout with this id was already requested"));
    }
    let mut events = decide(state, command)?;
    events.push(Event::ReservationClaimed(ReservationClaimed {
        kind: ReservationKind::Payout,
        value: payout_id.to_string(),
        user_id: state.user_id,
    }));
    Ok(events)
}

/// Approving or rejecting a payout by `admin_id`: nobody settles their own
/// payout (four eyes), whatever roles they hold.
pub fn decide_settlement(
    state: &LedgerState,
    admin_id: Uuid,
    command: &LedgerCommand,
) -> Result<Vec<Event>, DomainError> {
    if !matches!(command, LedgerCommand::ApprovePayout { .. } | LedgerCommand::RejectPayout { .. }) {
        return Err(DomainError::invalid("command", "not a payout settlement"));
    }
    if admin_id == state.user_id {
        return Err(DomainError::SelfApprovalForbidden);
    }
    decide(state, command)
}

fn decide_credit(state: &LedgerState, gifts: &[GiftToCredit]) -> Result<Vec<Event>, DomainError> {
    if gifts.len() > CREDIT_BATCH_GIFTS_MAX {
        return Err(DomainError::invalid("gifts", format!("at most {CREDIT_BATCH_GIFTS_MAX} per batch")));
    }
    let user = state.user_id;
    let mut last_position = state.snapshot.last_credited_position;
    // The credit's clock: the latest gift's time.
    let now = gifts.iter().map(|g| g.sent_at).max();
    let mut maturing = match now {
        Some(now) => pruned(&state.snapshot.maturing, now),
        None => state.snapshot.maturing.clone(),
    };
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
        if host_coins > 0 && gift.matures_at > gift.sent_at {
            add_maturing(&mut maturing, hour_at_or_after(gift.matures_at), host_coins)?;
        }
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
    let commit = build_commit_maturing(state, transfers, PendingChange::CreditedUpTo(last_position), maturing)?;
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
    let mut next = next_snapshot(prev, &commit.transfers, change).map_err(|e| match e {
        NextError::Violation(v) => v,
        NextError::Overflow => Violation::Overflow,
    })?;
    // The maturity schedule is not a balance: only host credits and payout
    // requests change it (by the clock in their command, which the event
    // does not keep), and `check_snapshot` bounds it against the earnings.
    if matches!(event, Event::GiftsReceived(_) | Event::PayoutRequested(_)) {
        next.maturing = commit.state_after.maturing.clone();
    }
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
    check_maturing(snap)
}

/// The maturity buckets: at most `MATURING_BUCKETS_MAX`, one per hour in
/// order, each positive, together at most the earnings.
fn check_maturing(snap: &LedgerSnapshot) -> Result<(), Violation> {
    let m = &snap.maturing;
    let ordered = m.windows(2).all(|w| w[0].matures_at_hour < w[1].matures_at_hour);
    let total = m.iter().try_fold(0i64, |sum, b| sum.checked_add(b.coins)).ok_or(Violation::Overflow)?;
    if m.len() > MATURING_BUCKETS_MAX || !ordered || m.iter().any(|b| b.coins <= 0) || total > snap.earnings_coins {
        return Err(Violation::MaturingMismatch { maturing_coins: total, earnings_coins: snap.earnings_coins });
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
    build_commit_maturing(state, transfers, change, state.snapshot.maturing.clone())
}

/// `build_commit`, with the maturity schedule after the commit.
fn build_commit_maturing(
    state: &LedgerState,
    transfers: Vec<Transfer>,
    change: PendingChange,
    maturing: Vec<MaturingEarnings>,
) -> Result<LedgerCommit, DomainError> {
    let state_after = match next_snapshot(state, &transfers, change) {
        Ok(next) => LedgerSnapshot { maturing, ..next },
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
