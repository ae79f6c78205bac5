//! The Stripe payment: one aggregate per PaymentIntent
//! (`hb.payment.<PaymentIntent id>`), the memory that makes Stripe's
//! at-least-once, any-order webhooks change the ledger exactly once.
//!
//! It holds what the payment bought (user, package, coins, amount), the
//! highest running `amount_refunded` Stripe reported with its charge's
//! `amount`, the coins reversed so far, its flags, and the position of its
//! last decision whose ledger effect is posted. From these:
//!
//! - a purchase is credited once, whichever of `checkout.session.completed`
//!   and `payment_intent.succeeded` comes first, however often: once the
//!   purchase is known, a confirmation decides nothing;
//! - the coins due back after refunds are `ceil(coins * amount_refunded /
//!   amount)`; each decision reverses only what is due and not reversed yet,
//!   so a refund event out of order (a lower `amount_refunded`) or a repeat
//!   changes nothing;
//! - a refund seen before its purchase is kept (amounts recorded, nothing
//!   reversed); `Settle`, run after the purchase is posted, reverses it;
//! - a dispute (chargeback) is remembered forever, its facts merged over
//!   every `charge.dispute.*` event (funds withdrawn, funds reinstated,
//!   status, fee). While its funds are withdrawn and not reinstated it holds
//!   `ceil(coins * disputed / amount)` coins reversed, never more than
//!   refunds left; once reinstated it credits back what it held. A dispute
//!   seen before its purchase, or one that refunds left no room for, is
//!   applied by `Settle` later.
//!
//! So, whatever the order and repetition of the events, once `Settle` has
//! nothing left to do, the coins the buyer keeps are `coins - min(coins,
//! refund_due + sum of the withdrawn, not reinstated disputes' shares)`
//! (the property test's model). Each decision moves coins one way only
//! (a refund's or dispute's reversal, or a won dispute's credit back).
//!
//! # Decide, post, mark
//!
//! A decision writes one event, on the payment alone. When it moves coins
//! (`payment.purchase_credited`, `payment.refund_recorded` with coins), its
//! ledger effect is *pending* until the command side has posted it on the
//! buyer's ledger (`post`: a commit carrying the decision's log position as
//! its `sourcePosition`, built by the ledger's own decider, so that it
//! balances by construction) and marked it (`MarkPosted`:
//! `payment.posted`). No decision is taken while one is pending, so a
//! pending decision is always the payment's last event, and whoever loads
//! the payment completes it first (`pending`). `is_posting_of` tells
//! whether a ledger commit already posts it, so that a decision is posted
//! once however many times its completion is attempted.

use events_schema::{
    Event, PaymentClaim, PaymentDispute, PaymentDisputeRecorded, PaymentFlag, PaymentFlagged, PaymentPosted,
    PaymentPurchase, PaymentPurchaseCredited, PaymentRefundRecorded, PaymentResolution, PaymentResolved,
    PaymentSnapshot, ResolutionAction,
};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ledger::{self, LedgerCommand, LedgerState};

/// Stripe ids and free text from Stripe events are at most this long.
pub const STRIPE_TEXT_CHARS_MAX: usize = 255;

/// A payment: its PaymentIntent id, what its events established, and
/// where its last event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    pub payment_id: String,
    pub snapshot: PaymentSnapshot,
    /// Log position of the payment's last event, 0 before any. Positions
    /// are the log's: whoever loads the state sets it (`at`).
    pub position: u64,
    /// What the last event asks of the buyer's ledger, when it is a
    /// decision that moves coins.
    pub last_effect: Option<LedgerEffect>,
}

/// Which way a decision moves the buyer's coins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectKind {
    /// `external:stripe -> wallet` (`ledger.coins_purchased`).
    Purchase,
    /// `wallet -> external:stripe` (`ledger.purchase_refunded`).
    Refund,
}

/// What a decision asks of the buyer's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEffect {
    pub user_id: Uuid,
    pub kind: EffectKind,
    /// Positive.
    pub coins: i64,
}

/// A decision whose ledger effect is not posted yet: the decision at
/// `source_position` of payment `payment_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub payment_id: String,
    pub source_position: u64,
    pub effect: LedgerEffect,
}

/// A payment no event has touched yet.
pub fn initial_state(payment_id: &str) -> PaymentState {
    PaymentState {
        payment_id: payment_id.to_string(),
        snapshot: PaymentSnapshot::default(),
        position: 0,
        last_effect: None,
    }
}

/// Records a payment event: the state it carries becomes the state, and
/// its ledger effect the last one. The position stays the loader's to set
/// (`at`).
pub fn evolve(state: PaymentState, event: &Event) -> PaymentState {
    let snapshot = match event {
        Event::PaymentPurchaseCredited(e) => &e.state_after,
        Event::PaymentRefundRecorded(e) => &e.state_after,
        Event::PaymentFlagged(e) => &e.state_after,
        Event::PaymentPosted(e) => &e.state_after,
        Event::PaymentDisputeRecorded(e) => &e.state_after,
        Event::PaymentResolved(e) => &e.state_after,
        _ => return state,
    };
    PaymentState {
        payment_id: state.payment_id,
        snapshot: snapshot.clone(),
        position: state.position,
        last_effect: effect(event),
    }
}

/// The state whose last event is at `position`.
pub fn at(state: PaymentState, position: u64) -> PaymentState {
    PaymentState { position, ..state }
}

/// What a payment event asks of the buyer's ledger, if anything.
pub fn effect(event: &Event) -> Option<LedgerEffect> {
    match event {
        Event::PaymentPurchaseCredited(e) => {
            Some(LedgerEffect { user_id: e.purchase.user_id, kind: EffectKind::Purchase, coins: e.purchase.coins })
        }
        Event::PaymentRefundRecorded(e) if e.coins > 0 => {
            let purchase = e.state_after.purchase.as_ref()?;
            Some(LedgerEffect { user_id: purchase.user_id, kind: EffectKind::Refund, coins: e.coins })
        }
        Event::PaymentResolved(e) => {
            let purchase = e.purchase.as_ref()?;
            Some(LedgerEffect { user_id: purchase.user_id, kind: EffectKind::Purchase, coins: purchase.coins })
        }
        Event::PaymentDisputeRecorded(e) if e.coins != 0 => {
            let purchase = e.state_after.purchase.as_ref()?;
            // A won dispute credits back: the purchase's direction.
            let kind = if e.coins > 0 { EffectKind::Refund } else { EffectKind::Purchase };
            Some(LedgerEffect { user_id: purchase.user_id, kind, coins: e.coins.checked_abs()? })
        }
        _ => None,
    }
}

/// The position of the payment's last decision whose ledger effect is
/// posted. A payment whose last event was written before decisions were
/// posted apart (no `postedPosition`) had every effect appended with its
/// decision: everything up to its last event is posted.
pub fn posted_position(state: &PaymentState) -> u64 {
    state.snapshot.posted_position.unwrap_or(state.position)
}

/// The decision to post before anything else is decided: the last event,
/// when it moves coins and lies beyond the posted position.
pub fn pending(state: &PaymentState) -> Option<Posting> {
    let effect = state.last_effect.as_ref()?;
    (state.position > posted_position(state)).then(|| Posting {
        payment_id: state.payment_id.clone(),
        source_position: state.position,
        effect: effect.clone(),
    })
}

/// The buyer named by a purchase event, as the command side found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buyer {
    /// A registered user.
    Known(Uuid),
    /// What the event named (possibly nothing), which is no registered user.
    Unknown(String),
}

/// The package named by a purchase event, as the configuration knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRef {
    pub id: String,
    /// `None`: no package of this id is on sale.
    pub coins: Option<i64>,
    /// The price the catalogue offers for it (`None`: unknown package, or
    /// a price Stripe cannot take).
    pub price: Option<Price>,
}

/// An amount in a currency's minor unit (as Stripe counts it), with the
/// lowercase ISO code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount_cents: i64,
    pub currency: String,
}

/// The price a Checkout Session or PaymentIntent says this service offered
/// (`metadata.priceCents`, `metadata.priceCurrency`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// Neither field: an object created before prices were stated; the
    /// package's current price holds.
    NotStated,
    Stated(Price),
    /// A field missing or unreadable (what it said, for finance).
    Unreadable(String),
}

/// A dispute as one `charge.dispute.*` event described it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisputeSeen {
    pub dispute_id: String,
    /// The disputed amount, in the minor unit.
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub reason: String,
    /// The fee Stripe charged for it (the balance transactions' fees).
    pub fee_cents: i64,
    /// How many balance transactions the event listed (more is later).
    pub balance_transactions: u32,
    pub funds_withdrawn: bool,
    pub funds_reinstated: bool,
}

/// How a flagged payment is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolve {
    /// Credit `coins` (the named package's) to `user_id`, once.
    Credit { user_id: Uuid, package_id: String, coins: i64 },
    /// Close the flags without coins.
    Dismiss,
}

/// A resolution's note is 1 to this many characters.
pub const RESOLUTION_NOTE_CHARS_MAX: usize = 500;

/// What a verified Stripe event (or the command side, completing a
/// decision) asks of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// `payment_intent.succeeded`, or `checkout.session.completed` with
    /// `payment_status: paid`.
    ConfirmPurchase {
        stripe_event_id: String,
        buyer: Buyer,
        package: PackageRef,
        /// What Stripe says was paid.
        amount_cents: i64,
        currency: String,
        /// The price the object says was offered.
        offered: Offered,
    },
    /// `charge.refunded`: the charge's `amount` and running
    /// `amount_refunded`.
    RecordRefund { stripe_event_id: String, charge_amount_cents: i64, amount_refunded_cents: i64 },
    /// `charge.dispute.*`: a dispute's facts, merged with what is known.
    RecordDispute { stripe_event_id: String, dispute: DisputeSeen },
    /// Finance settles a flagged payment (`resolved_by`, with a note).
    Resolve { resolved_by: Uuid, note: String, action: Resolve },
    /// Reverses what earlier refunds or disputes made due, if the purchase
    /// is known: one step per decision (a refund's, then each dispute's);
    /// run until it decides nothing.
    Settle,
    /// An event that names no payment to credit (a paid session without a
    /// PaymentIntent).
    Flag { stripe_event_id: String, flag: PaymentFlag, detail: String },
    /// The pending decision is posted, by the commit at `ledger_position`.
    MarkPosted { ledger_position: u64 },
}

/// Whose ledger a decision on `state` may post to, if anyone's: the buyer
/// of a purchase not known yet, or of the purchase known.
pub fn ledger_user(state: &PaymentState, command: &PaymentCommand) -> Option<Uuid> {
    match command {
        PaymentCommand::ConfirmPurchase { buyer: Buyer::Known(user), .. } if state.snapshot.purchase.is_none() => {
            Some(*user)
        }
        PaymentCommand::Resolve { action: Resolve::Credit { user_id, .. }, .. } => Some(*user_id),
        PaymentCommand::ConfirmPurchase { .. } | PaymentCommand::Flag { .. } => None,
        PaymentCommand::Resolve { action: Resolve::Dismiss, .. } => None,
        PaymentCommand::RecordRefund { .. }
        | PaymentCommand::RecordDispute { .. }
        | PaymentCommand::Settle
        | PaymentCommand::MarkPosted { .. } => state.snapshot.purchase.as_ref().map(|p| p.user_id),
    }
}

/// Decides a command against a payment: at most one event, on the payment.
/// `Ok(vec![])`: nothing changes. While a decision is pending, only
/// `MarkPosted` is decided; anything else is refused (post it first).
pub fn decide(state: &PaymentState, command: &PaymentCommand) -> Result<Vec<Event>, DomainError> {
    require_id("paymentId", &state.payment_id)?;
    if let PaymentCommand::MarkPosted { ledger_position } = command {
        return Ok(mark_posted(state, *ledger_position));
    }
    if pending(state).is_some() {
        return Err(DomainError::invalid("payment", "a decision is pending its posting: post it first"));
    }
    // Every decision carries the posted position forward (written out for
    // a payment whose last event predates it).
    let mut base = PaymentSnapshot { posted_position: Some(posted_position(state)), ..state.snapshot.clone() };
    match command {
        PaymentCommand::ConfirmPurchase { stripe_event_id, buyer, package, amount_cents, currency, offered } => {
            require_id("stripeEventId", stripe_event_id)?;
            if state.snapshot.purchase.is_some() {
                // Credited already, by this event or the other kind.
                return Ok(vec![]);
            }
            if base.claim.is_none() {
                // Kept from the first confirmation decided: what Stripe said,
                // credited or not.
                let user_id = match buyer {
                    Buyer::Known(user) => user.to_string(),
                    Buyer::Unknown(named) => named.clone(),
                };
                let text = |value: &str| value.chars().take(STRIPE_TEXT_CHARS_MAX).collect::<String>();
                base.claim = Some(PaymentClaim {
                    user_id: text(&user_id),
                    package_id: text(&package.id),
                    amount_cents: (*amount_cents).max(0),
                    currency: text(currency),
                });
            }
            let user_id = match buyer {
                Buyer::Known(user) => *user,
                Buyer::Unknown(named) => {
                    return Ok(flag(state, base, stripe_event_id, PaymentFlag::UnknownUser, named));
                }
            };
            let Some(coins) = package.coins else {
                return Ok(flag(state, base, stripe_event_id, PaymentFlag::UnknownPackage, &package.id));
            };
            if coins <= 0 {
                return Err(DomainError::invalid("coins", "a package credits coins"));
            }
            if *amount_cents < 0 {
                return Err(DomainError::invalid("amount", "a payment is not negative"));
            }
            require_text("currency", currency)?;
            let paid = Price { amount_cents: *amount_cents, currency: currency.clone() };
            if let Some(detail) = price_mismatch(&paid, offered, package.price.as_ref()) {
                return Ok(flag(state, base, stripe_event_id, PaymentFlag::AmountMismatch, &detail));
            }
            let purchase = PaymentPurchase {
                user_id,
                package_id: package.id.clone(),
                coins,
                amount_cents: *amount_cents,
                currency: currency.clone(),
            };
            let state_after = PaymentSnapshot { purchase: Some(purchase.clone()), ..base };
            Ok(vec![Event::PaymentPurchaseCredited(PaymentPurchaseCredited {
                payment_id: state.payment_id.clone(),
                stripe_event_id: stripe_event_id.clone(),
                purchase,
                state_after,
            })])
        }
        PaymentCommand::RecordRefund { stripe_event_id, charge_amount_cents, amount_refunded_cents } => {
            require_id("stripeEventId", stripe_event_id)?;
            if *charge_amount_cents <= 0 || *amount_refunded_cents < 0 || amount_refunded_cents > charge_amount_cents {
                let detail = format!("amount {charge_amount_cents}, amount_refunded {amount_refunded_cents}");
                return Ok(flag(state, base, stripe_event_id, PaymentFlag::InvalidRefund, &detail));
            }
            let mut after = base.clone();
            // Refunds only grow: a lower running total is an older event.
            if *amount_refunded_cents > after.amount_refunded_cents || after.charge_amount_cents == 0 {
                after.charge_amount_cents = *charge_amount_cents;
                after.amount_refunded_cents = *amount_refunded_cents;
            }
            reverse_due(state, &base, after, Some(stripe_event_id.clone()))
        }
        PaymentCommand::RecordDispute { stripe_event_id, dispute } => {
            require_id("stripeEventId", stripe_event_id)?;
            require_id("disputeId", &dispute.dispute_id)?;
            record_dispute(state, &base, dispute, Some(stripe_event_id.clone()))
        }
        PaymentCommand::Settle => {
            let refund = reverse_due(state, &base, base.clone(), None)?;
            if !refund.is_empty() {
                return Ok(refund);
            }
            settle_disputes(state, &base)
        }
        PaymentCommand::Resolve { resolved_by, note, action } => resolve(state, base, *resolved_by, note, action),
        PaymentCommand::Flag { stripe_event_id, flag: f, detail } => {
            require_id("stripeEventId", stripe_event_id)?;
            Ok(flag(state, base, stripe_event_id, *f, detail))
        }
        PaymentCommand::MarkPosted { .. } => Ok(vec![]),
    }
}

/// The buyer's ledger commit that posts `posting`, built by the ledger's
/// own decider on `ledger` (the buyer's).
pub fn post(posting: &Posting, ledger: &LedgerState) -> Result<Vec<Event>, DomainError> {
    if ledger.user_id != posting.effect.user_id {
        return Err(DomainError::invalid("ledger", "a payment posts to its buyer's ledger"));
    }
    let payment_id = posting.payment_id.clone();
    let (coins, source_position) = (posting.effect.coins, posting.source_position);
    let command = match posting.effect.kind {
        EffectKind::Purchase => LedgerCommand::PurchaseCoins { payment_id, coins, source_position },
        EffectKind::Refund => LedgerCommand::RefundPurchase { payment_id, coins, source_position },
    };
    ledger::decide(ledger, &command)
}

/// Whether `event` (a commit on the buyer's ledger) posts `posting`.
/// Commits of the atomic-batch era (no source position) post nothing
/// pending: their decisions were never pending.
pub fn is_posting_of(event: &Event, posting: &Posting) -> bool {
    let (payment_id, source_position) = match event {
        Event::CoinsPurchased(e) => (&e.payment_id, e.source_position),
        Event::PurchaseRefunded(e) => (&e.payment_id, e.source_position),
        _ => return false,
    };
    source_position != 0 && source_position == posting.source_position && *payment_id == posting.payment_id
}

/// `ceil(coins * amount_refunded / amount)`: the coins a refund of
/// `amount_refunded` out of `amount` takes back, rounded against the buyer
/// so that a partial refund never leaves a fraction of a coin bought for
/// nothing. 0 without a refund; all the coins for a full one.
pub fn coins_due_back(coins: i64, amount_cents: i64, amount_refunded_cents: i64) -> Result<i64, DomainError> {
    if amount_cents <= 0 || amount_refunded_cents <= 0 || coins <= 0 {
        return Ok(0);
    }
    let refunded = i128::from(amount_refunded_cents.min(amount_cents));
    let numerator = i128::from(coins).checked_mul(refunded).ok_or(DomainError::AmountOutOfRange)?;
    let amount = i128::from(amount_cents);
    // Positive operands: the ceiling of the quotient.
    let due = (numerator + amount - 1) / amount;
    i64::try_from(due).map_err(|_| DomainError::AmountOutOfRange)
}

/// The event that records `after` (new refund amounts, perhaps) and
/// reverses what is due and not reversed yet (its ledger effect), unless
/// nothing changes from `base`.
fn reverse_due(
    state: &PaymentState,
    base: &PaymentSnapshot,
    mut after: PaymentSnapshot,
    stripe_event_id: Option<String>,
) -> Result<Vec<Event>, DomainError> {
    let mut coins = 0;
    if let Some(purchase) = &after.purchase {
        let due = coins_due_back(purchase.coins, after.charge_amount_cents, after.amount_refunded_cents)?;
        let wanted = due.checked_sub(after.coins_reversed).ok_or(DomainError::AmountOutOfRange)?.max(0);
        // Disputes may hold the rest reversed already: never more than the
        // purchase in total.
        coins = wanted.min(coins_left(purchase, &after)?);
        if coins > 0 {
            after.coins_reversed = after.coins_reversed.checked_add(coins).ok_or(DomainError::AmountOutOfRange)?;
        }
    }
    if after == *base {
        // An older or repeated refund, or nothing due: nothing changes.
        return Ok(vec![]);
    }
    Ok(vec![Event::PaymentRefundRecorded(PaymentRefundRecorded {
        payment_id: state.payment_id.clone(),
        stripe_event_id,
        charge_amount_cents: after.charge_amount_cents,
        amount_refunded_cents: after.amount_refunded_cents,
        coins,
        state_after: after,
    })])
}

/// Why `paid` may not be credited, if it may not: the price offered
/// (stated, or else the package's current one) must be one the catalogue
/// offers for the package (`catalogue`), and what was paid must equal it.
pub fn price_mismatch(paid: &Price, offered: &Offered, catalogue: Option<&Price>) -> Option<String> {
    let show = |p: &Price| format!("{} {}", p.amount_cents, p.currency);
    let Some(catalogue) = catalogue else {
        return Some(format!("paid {}; the package has no price on offer", show(paid)));
    };
    let expected = match offered {
        Offered::NotStated => catalogue,
        Offered::Stated(stated) if stated == catalogue => stated,
        Offered::Stated(stated) => {
            return Some(format!(
                "paid {}; offered {}, not the catalogue's {}",
                show(paid),
                show(stated),
                show(catalogue)
            ));
        }
        Offered::Unreadable(said) => {
            return Some(format!("paid {}; the price offered is unreadable: {said}", show(paid)));
        }
    };
    (paid != expected).then(|| format!("paid {}; offered {}", show(paid), show(expected)))
}

/// A flagged payment's resolution: refused unless the payment is flagged
/// and not resolved yet, and (for a credit) not credited.
fn resolve(
    state: &PaymentState,
    base: PaymentSnapshot,
    resolved_by: Uuid,
    note: &str,
    action: &Resolve,
) -> Result<Vec<Event>, DomainError> {
    let note_chars = note.chars().count();
    if note.trim().is_empty() || note_chars > RESOLUTION_NOTE_CHARS_MAX {
        return Err(DomainError::invalid("note", format!("1 to {RESOLUTION_NOTE_CHARS_MAX} characters")));
    }
    if base.flags.is_empty() || base.resolution.is_some() {
        return Err(DomainError::PaymentNotResolvable);
    }
    let (resolution, purchase) = match action {
        Resolve::Dismiss => (
            PaymentResolution {
                action: ResolutionAction::Dismiss,
                resolved_by,
                note: note.to_string(),
                user_id: None,
                package_id: None,
                coins: 0,
            },
            None,
        ),
        Resolve::Credit { user_id, package_id, coins } => {
            if base.purchase.is_some() {
                return Err(DomainError::PaymentNotResolvable);
            }
            if *coins <= 0 {
                return Err(DomainError::invalid("coins", "a package credits coins"));
            }
            require_id("packageId", package_id)?;
            // What Stripe said was paid, when a confirmation said it.
            let (amount_cents, currency) =
                base.claim.as_ref().map_or((0, String::new()), |c| (c.amount_cents, c.currency.clone()));
            let purchase = PaymentPurchase {
                user_id: *user_id,
                package_id: package_id.clone(),
                coins: *coins,
                amount_cents,
                currency,
            };
            let resolution = PaymentResolution {
                action: ResolutionAction::Credit,
                resolved_by,
                note: note.to_string(),
                user_id: Some(*user_id),
                package_id: Some(package_id.clone()),
                coins: *coins,
            };
            (resolution, Some(purchase))
        }
    };
    let state_after = PaymentSnapshot {
        purchase: purchase.clone().or(base.purchase.clone()),
        resolution: Some(resolution.clone()),
        ..base
    };
    Ok(vec![Event::PaymentResolved(PaymentResolved {
        payment_id: state.payment_id.clone(),
        resolution,
        purchase,
        state_after,
    })])
}

/// Coins of `purchase` that neither refunds nor disputes hold reversed.
fn coins_left(purchase: &PaymentPurchase, snapshot: &PaymentSnapshot) -> Result<i64, DomainError> {
    let held = snapshot
        .disputes
        .iter()
        .try_fold(snapshot.coins_reversed, |total, d| total.checked_add(d.coins_reversed))
        .ok_or(DomainError::AmountOutOfRange)?;
    Ok(purchase.coins.checked_sub(held).ok_or(DomainError::AmountOutOfRange)?.max(0))
}

/// Whether a dispute status is final: kept over any other, so that a late
/// `needs_response` does not undo a `won`.
fn is_final_status(status: &str) -> bool {
    matches!(status, "won" | "lost" | "warning_closed")
}

/// `old` (if known) with what `seen` adds: facts only grow (flags OR-ed,
/// amounts and fees their highest), so that any order ends the same.
fn merge_dispute(old: Option<&PaymentDispute>, seen: &DisputeSeen) -> PaymentDispute {
    let text = |value: &str| value.chars().take(STRIPE_TEXT_CHARS_MAX).collect::<String>();
    let mut merged =
        old.cloned().unwrap_or_else(|| PaymentDispute { dispute_id: text(&seen.dispute_id), ..Default::default() });
    merged.amount_cents = merged.amount_cents.max(seen.amount_cents.max(0));
    if merged.currency.is_empty() {
        merged.currency = text(&seen.currency);
    }
    if !seen.status.is_empty() && !is_final_status(&merged.status) {
        merged.status = text(&seen.status);
    }
    if merged.reason.is_empty() {
        merged.reason = text(&seen.reason);
    }
    // The fee of the latest list of balance transactions (Stripe only adds
    // to it): a won dispute's fee given back lowers it.
    if seen.balance_transactions > merged.balance_transactions
        || (seen.balance_transactions == merged.balance_transactions && seen.fee_cents > merged.fee_cents)
    {
        merged.balance_transactions = seen.balance_transactions;
        merged.fee_cents = seen.fee_cents;
    }
    merged.funds_withdrawn |= seen.funds_withdrawn;
    merged.funds_reinstated |= seen.funds_reinstated;
    merged
}

/// The coins `dispute` moves now on `snapshot` (positive: reversed;
/// negative: credited back), with `dispute` and the totals updated.
fn apply_dispute(snapshot: &mut PaymentSnapshot, dispute: &mut PaymentDispute) -> Result<i64, DomainError> {
    let Some(purchase) = snapshot.purchase.clone() else { return Ok(0) };
    if dispute.funds_reinstated {
        // Won: what it holds goes back, once (it then holds nothing).
        let back = dispute.coins_reversed;
        if back == 0 {
            return Ok(0);
        }
        dispute.coins_reversed = 0;
        snapshot.coins_dispute_reinstated =
            snapshot.coins_dispute_reinstated.checked_add(back).ok_or(DomainError::AmountOutOfRange)?;
        return back.checked_neg().ok_or(DomainError::AmountOutOfRange);
    }
    if !dispute.funds_withdrawn {
        return Ok(0);
    }
    let share = coins_due_back(purchase.coins, purchase.amount_cents, dispute.amount_cents)?;
    let wanted = share.checked_sub(dispute.coins_reversed).ok_or(DomainError::AmountOutOfRange)?.max(0);
    let coins = wanted.min(coins_left(&purchase, snapshot)?);
    if coins <= 0 {
        return Ok(0);
    }
    dispute.coins_reversed = dispute.coins_reversed.checked_add(coins).ok_or(DomainError::AmountOutOfRange)?;
    snapshot.coins_dispute_withdrawn =
        snapshot.coins_dispute_withdrawn.checked_add(coins).ok_or(DomainError::AmountOutOfRange)?;
    Ok(coins)
}

/// The event recording `seen` (merged into its dispute) and what it moves,
/// unless nothing changes.
fn record_dispute(
    state: &PaymentState,
    base: &PaymentSnapshot,
    seen: &DisputeSeen,
    stripe_event_id: Option<String>,
) -> Result<Vec<Event>, DomainError> {
    let mut after = base.clone();
    let index = after.disputes.iter().position(|d| d.dispute_id == seen.dispute_id);
    let mut dispute = merge_dispute(index.map(|i| &after.disputes[i]), seen);
    // The dispute's own share first, then the others': place it in the
    // list with its old holding so that `coins_left` counts the others.
    let index = match index {
        Some(i) => i,
        None => {
            after.disputes.push(dispute.clone());
            after.disputes.len() - 1
        }
    };
    after.disputes[index].coins_reversed = dispute.coins_reversed;
    let coins = apply_dispute(&mut after, &mut dispute)?;
    after.disputes[index] = dispute.clone();
    if !after.flags.contains(&PaymentFlag::Disputed) {
        after.flags.push(PaymentFlag::Disputed);
    }
    if after == *base {
        return Ok(vec![]);
    }
    Ok(vec![Event::PaymentDisputeRecorded(PaymentDisputeRecorded {
        payment_id: state.payment_id.clone(),
        stripe_event_id,
        dispute,
        coins,
        state_after: after,
    })])
}

/// The first dispute whose withdrawn share is not all reversed yet (seen
/// before the purchase, or short of room when it came), applied now.
fn settle_disputes(state: &PaymentState, base: &PaymentSnapshot) -> Result<Vec<Event>, DomainError> {
    for index in 0..base.disputes.len() {
        let mut after = base.clone();
        let mut dispute = after.disputes[index].clone();
        let coins = apply_dispute(&mut after, &mut dispute)?;
        if coins != 0 {
            after.disputes[index] = dispute.clone();
            return Ok(vec![Event::PaymentDisputeRecorded(PaymentDisputeRecorded {
                payment_id: state.payment_id.clone(),
                stripe_event_id: None,
                dispute,
                coins,
                state_after: after,
            })]);
        }
    }
    Ok(vec![])
}

/// The mark of the pending decision as posted, if one is pending.
fn mark_posted(state: &PaymentState, ledger_position: u64) -> Vec<Event> {
    let Some(posting) = pending(state) else { return vec![] };
    let state_after = PaymentSnapshot { posted_position: Some(posting.source_position), ..state.snapshot.clone() };
    vec![Event::PaymentPosted(PaymentPosted {
        payment_id: state.payment_id.clone(),
        posted_position: posting.source_position,
        ledger_position,
        state_after,
    })]
}

/// A flag event, unless the payment carries this flag already.
fn flag(
    state: &PaymentState,
    mut after: PaymentSnapshot,
    stripe_event_id: &str,
    flag: PaymentFlag,
    detail: &str,
) -> Vec<Event> {
    if state.snapshot.flags.contains(&flag) {
        return vec![];
    }
    after.flags.push(flag);
    vec![Event::PaymentFlagged(PaymentFlagged {
        payment_id: state.payment_id.clone(),
        stripe_event_id: stripe_event_id.to_string(),
        flag,
        detail: detail.chars().take(STRIPE_TEXT_CHARS_MAX).collect(),
        state_after: after,
    })]
}

fn require_id(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.len() > STRIPE_TEXT_CHARS_MAX {
        return Err(DomainError::invalid(field, format!("1 to {STRIPE_TEXT_CHARS_MAX} characters")));
    }
    Ok(())
}

fn require_text(field: &'static str, value: &str) -> Result<(), DomainError> {
    require_id(field, value)
}
