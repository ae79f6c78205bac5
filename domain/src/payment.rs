//! The Stripe payment: one aggregate per PaymentIntent
//! (`hb.payment.<PaymentIntent id>`), the memory that makes Stripe's
//! at-least-once, any-order webhooks change the ledger exactly once.
//!
//! It holds what the payment bought (user, package, coins, amount), the
//! highest running `amount_refunded` Stripe reported with its charge's
//! `amount`, the coins reversed so far, and its flags. From these:
//!
//! - a purchase is credited once, whichever of `checkout.session.completed`
//!   and `payment_intent.succeeded` comes first, however often: once the
//!   purchase is known, a confirmation decides nothing;
//! - the coins due back after refunds are `ceil(coins * amount_refunded /
//!   amount)`; each decision reverses only what is due and not reversed yet,
//!   so a refund event out of order (a lower `amount_refunded`) or a repeat
//!   changes nothing;
//! - a refund seen before its purchase is kept (amounts recorded, nothing
//!   reversed); `Settle`, run after the purchase is credited, reverses it.
//!
//! A decision writes at most one event on the payment and one on the
//! buyer's ledger (the ledger's own decider builds that commit, so it
//! balances by construction).

use events_schema::{
    Event, PaymentFlag, PaymentFlagged, PaymentPurchase, PaymentPurchaseCredited, PaymentRefundRecorded,
    PaymentSnapshot,
};
use uuid::Uuid;

use crate::error::DomainError;
use crate::ledger::{self, LedgerCommand, LedgerState};

/// Stripe ids and free text from Stripe events are at most this long.
pub const STRIPE_TEXT_CHARS_MAX: usize = 255;

/// A payment: its PaymentIntent id and what its events established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    pub payment_id: String,
    pub snapshot: PaymentSnapshot,
}

/// A payment no event has touched yet.
pub fn initial_state(payment_id: &str) -> PaymentState {
    PaymentState { payment_id: payment_id.to_string(), snapshot: PaymentSnapshot::default() }
}

/// Records a payment event: the state it carries becomes the state.
pub fn evolve(state: PaymentState, event: &Event) -> PaymentState {
    let snapshot = match event {
        Event::PaymentPurchaseCredited(e) => &e.state_after,
        Event::PaymentRefundRecorded(e) => &e.state_after,
        Event::PaymentFlagged(e) => &e.state_after,
        _ => return state,
    };
    PaymentState { payment_id: state.payment_id, snapshot: snapshot.clone() }
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
}

/// What a verified Stripe event asks of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// `payment_intent.succeeded`, or `checkout.session.completed` with
    /// `payment_status: paid`.
    ConfirmPurchase { stripe_event_id: String, buyer: Buyer, package: PackageRef, amount_cents: i64, currency: String },
    /// `charge.refunded`: the charge's `amount` and running
    /// `amount_refunded`.
    RecordRefund { stripe_event_id: String, charge_amount_cents: i64, amount_refunded_cents: i64 },
    /// Reverses what earlier refunds made due, if the purchase is known.
    Settle,
    /// An event that names no payment to credit (a paid session without a
    /// PaymentIntent).
    Flag { stripe_event_id: String, flag: PaymentFlag, detail: String },
}

/// Whose ledger a decision on `state` writes, if any: the one the command
/// side must load (and pass to `decide`) beside the payment.
pub fn ledger_user(state: &PaymentState, command: &PaymentCommand) -> Option<Uuid> {
    match command {
        PaymentCommand::ConfirmPurchase { buyer: Buyer::Known(user), .. } if state.snapshot.purchase.is_none() => {
            Some(*user)
        }
        PaymentCommand::ConfirmPurchase { .. } | PaymentCommand::Flag { .. } => None,
        PaymentCommand::RecordRefund { .. } | PaymentCommand::Settle => {
            state.snapshot.purchase.as_ref().map(|p| p.user_id)
        }
    }
}

/// Decides a Stripe event against a payment and, when the decision moves
/// coins, the buyer's ledger (`ledger_user` says whose; `None` is only
/// valid when it says nobody's). `Ok(vec![])`: nothing changes.
pub fn decide(
    state: &PaymentState,
    ledger: Option<&LedgerState>,
    command: &PaymentCommand,
) -> Result<Vec<Event>, DomainError> {
    require_id("paymentId", &state.payment_id)?;
    let needed = ledger_user(state, command);
    let ledger = match (needed, ledger) {
        (None, _) => None,
        (Some(user), Some(l)) if l.user_id == user => Some(l),
        (Some(_), _) => return Err(DomainError::invalid("ledger", "the buyer's ledger was not loaded")),
    };
    match command {
        PaymentCommand::ConfirmPurchase { stripe_event_id, buyer, package, amount_cents, currency } => {
            require_id("stripeEventId", stripe_event_id)?;
            if state.snapshot.purchase.is_some() {
                // Credited already, by this event or the other kind.
                return Ok(vec![]);
            }
            let user_id = match buyer {
                Buyer::Known(user) => *user,
                Buyer::Unknown(named) => return Ok(flag(state, stripe_event_id, PaymentFlag::UnknownUser, named)),
            };
            let Some(coins) = package.coins else {
                return Ok(flag(state, stripe_event_id, PaymentFlag::UnknownPackage, &package.id));
            };
            if *amount_cents < 0 {
                return Err(DomainError::invalid("amount", "a payment is not negative"));
            }
            require_text("currency", currency)?;
            let purchase = PaymentPurchase {
                user_id,
                package_id: package.id.clone(),
                coins,
                amount_cents: *amount_cents,
                currency: currency.clone(),
            };
            let Some(ledger) = ledger else { unreachable!("a known buyer's ledger is checked above") };
            let mut events =
                ledger::decide(ledger, &LedgerCommand::PurchaseCoins { payment_id: state.payment_id.clone(), coins })?;
            let state_after = PaymentSnapshot { purchase: Some(purchase.clone()), ..state.snapshot.clone() };
            events.push(Event::PaymentPurchaseCredited(PaymentPurchaseCredited {
                payment_id: state.payment_id.clone(),
                stripe_event_id: stripe_event_id.clone(),
                purchase,
                state_after,
            }));
            Ok(events)
        }
        PaymentCommand::RecordRefund { stripe_event_id, charge_amount_cents, amount_refunded_cents } => {
            require_id("stripeEventId", stripe_event_id)?;
            if *charge_amount_cents <= 0 || *amount_refunded_cents < 0 || amount_refunded_cents > charge_amount_cents {
                let detail = format!("amount {charge_amount_cents}, amount_refunded {amount_refunded_cents}");
                return Ok(flag(state, stripe_event_id, PaymentFlag::InvalidRefund, &detail));
            }
            let mut after = state.snapshot.clone();
            // Refunds only grow: a lower running total is an older event.
            if *amount_refunded_cents > after.amount_refunded_cents || after.charge_amount_cents == 0 {
                after.charge_amount_cents = *charge_amount_cents;
                after.amount_refunded_cents = *amount_refunded_cents;
            }
            reverse_due(state, ledger, after, Some(stripe_event_id.clone()))
        }
        PaymentCommand::Settle => reverse_due(state, ledger, state.snapshot.clone(), None),
        PaymentCommand::Flag { stripe_event_id, flag: f, detail } => {
            require_id("stripeEventId", stripe_event_id)?;
            Ok(flag(state, stripe_event_id, *f, detail))
        }
    }
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

/// The events that record `after` (new refund amounts, perhaps) and reverse
/// what is due and not reversed yet.
fn reverse_due(
    state: &PaymentState,
    ledger: Option<&LedgerState>,
    mut after: PaymentSnapshot,
    stripe_event_id: Option<String>,
) -> Result<Vec<Event>, DomainError> {
    let mut events = Vec::with_capacity(2);
    let mut coins = 0;
    if let (Some(purchase), Some(ledger)) = (&after.purchase, ledger) {
        let due = coins_due_back(purchase.coins, after.charge_amount_cents, after.amount_refunded_cents)?;
        coins = due.checked_sub(after.coins_reversed).ok_or(DomainError::AmountOutOfRange)?.max(0);
        if coins > 0 {
            events =
                ledger::decide(ledger, &LedgerCommand::RefundPurchase { payment_id: state.payment_id.clone(), coins })?;
            after.coins_reversed = after.coins_reversed.checked_add(coins).ok_or(DomainError::AmountOutOfRange)?;
        }
    }
    if after == state.snapshot {
        // An older or repeated refund, or nothing pending: nothing changes.
        return Ok(vec![]);
    }
    events.push(Event::PaymentRefundRecorded(PaymentRefundRecorded {
        payment_id: state.payment_id.clone(),
        stripe_event_id,
        charge_amount_cents: after.charge_amount_cents,
        amount_refunded_cents: after.amount_refunded_cents,
        coins,
        state_after: after,
    }));
    Ok(events)
}

/// A flag event, unless the payment carries this flag already.
fn flag(state: &PaymentState, stripe_event_id: &str, flag: PaymentFlag, detail: &str) -> Vec<Event> {
    if state.snapshot.flags.contains(&flag) {
        return vec![];
    }
    let mut after = state.snapshot.clone();
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
