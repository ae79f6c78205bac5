//! The Stripe payment: a purchase credited once per PaymentIntent, refunds
//! reversed from the running `amount_refunded`, in any order.

use domain::ledger::{self, LedgerState};
use domain::payment::{self, Buyer, PackageRef, PaymentCommand, PaymentState, coins_due_back};
use events_schema::{Event, PaymentFlag};
use proptest::prelude::*;
use uuid::Uuid;

use crate::spec::user;

/// A payment and its buyer's ledger, moved by accepted decisions.
struct World {
    payment: PaymentState,
    ledger: LedgerState,
}

fn world() -> World {
    World { payment: payment::initial_state("pi_1"), ledger: ledger::initial_state(user(1)) }
}

impl World {
    /// Decides and applies; returns the events.
    fn run(&mut self, command: PaymentCommand) -> Vec<Event> {
        let events = payment::decide(&self.payment, Some(&self.ledger), &command)
            .unwrap_or_else(|e| panic!("{command:?} rejected: {e}"));
        for event in &events {
            if event.ledger_commit().is_some() {
                ledger::check_commit(&self.ledger, event).expect("the commit keeps every invariant");
                self.ledger = ledger::evolve(self.ledger.clone(), event);
            } else {
                self.payment = payment::evolve(self.payment.clone(), event);
            }
        }
        events
    }

    fn wallet(&self) -> i64 {
        self.ledger.snapshot.wallet_coins
    }
}

fn confirm(event: &str) -> PaymentCommand {
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event.into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: "coins_500".into(), coins: Some(500) },
        amount_cents: 499,
        currency: "usd".into(),
    }
}

fn refund(event: &str, amount_refunded_cents: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund { stripe_event_id: event.into(), charge_amount_cents: 499, amount_refunded_cents }
}

#[test]
fn a_purchase_is_credited_once_whichever_confirmation_comes_first_and_however_often() {
    let mut w = world();
    let events = w.run(confirm("evt_session"));
    assert_eq!(events.len(), 2, "the ledger's commit and the payment's record");
    assert_eq!(w.wallet(), 500);
    assert!(w.run(confirm("evt_intent")).is_empty());
    assert!(w.run(confirm("evt_session")).is_empty());
    assert_eq!(w.wallet(), 500);
}

#[test]
fn a_partial_refund_reverses_the_ceiling_of_its_share_and_a_full_one_the_rest() {
    let mut w = world();
    w.run(confirm("evt_p"));
    // 100 of 499 cents: ceil(500 * 100 / 499) = 101 coins.
    w.run(refund("evt_r1", 100));
    assert_eq!(w.wallet(), 399);
    assert_eq!(w.payment.snapshot.coins_reversed, 101);
    w.run(refund("evt_r2", 499));
    assert_eq!(w.wallet(), 0);
    assert_eq!(w.payment.snapshot.coins_reversed, 500);
    // The partial one again, late: nothing changes.
    assert!(w.run(refund("evt_r1", 100)).is_empty());
    assert_eq!(w.wallet(), 0);
}

#[test]
fn a_refund_before_its_purchase_is_kept_and_applied_by_settling_after_the_purchase() {
    let mut w = world();
    let events = w.run(refund("evt_r", 250));
    assert_eq!(events.len(), 1, "only the payment records the refund");
    assert_eq!(w.wallet(), 0);
    assert!(w.run(PaymentCommand::Settle).is_empty(), "nothing to reverse without a purchase");
    w.run(confirm("evt_p"));
    assert_eq!(w.wallet(), 500);
    w.run(PaymentCommand::Settle);
    // ceil(500 * 250 / 499) = 251.
    assert_eq!(w.wallet(), 249);
    assert!(w.run(PaymentCommand::Settle).is_empty());
}

#[test]
fn an_unknown_user_or_package_is_flagged_once_and_not_credited() {
    let mut w = world();
    let unknown_user = PaymentCommand::ConfirmPurchase {
        stripe_event_id: "evt_1".into(),
        buyer: Buyer::Unknown("nobody".into()),
        package: PackageRef { id: "coins_500".into(), coins: Some(500) },
        amount_cents: 499,
        currency: "usd".into(),
    };
    let events = w.run(unknown_user.clone());
    assert!(matches!(&events[..], [Event::PaymentFlagged(f)] if f.flag == PaymentFlag::UnknownUser));
    assert!(w.run(unknown_user).is_empty());
    let unknown_package = PaymentCommand::ConfirmPurchase {
        stripe_event_id: "evt_2".into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: "coins_9".into(), coins: None },
        amount_cents: 499,
        currency: "usd".into(),
    };
    w.run(unknown_package);
    assert_eq!(w.payment.snapshot.flags, vec![PaymentFlag::UnknownUser, PaymentFlag::UnknownPackage]);
    assert_eq!(w.wallet(), 0);
}

#[test]
fn a_refund_above_its_amount_is_flagged_not_reversed() {
    let mut w = world();
    w.run(confirm("evt_p"));
    let events = w.run(refund("evt_r", 500));
    assert!(matches!(&events[..], [Event::PaymentFlagged(f)] if f.flag == PaymentFlag::InvalidRefund));
    assert_eq!(w.wallet(), 500);
}

#[test]
fn a_decision_that_moves_coins_needs_the_buyers_ledger() {
    let state = payment::initial_state("pi_1");
    let other = ledger::initial_state(user(2));
    let result = payment::decide(&state, Some(&other), &confirm("evt_1"));
    assert_eq!(result.map_err(|e| e.code()), Err("validation_failed"));
    assert_eq!(payment::ledger_user(&state, &confirm("evt_1")), Some(user(1)));
}

#[test]
fn coins_due_back_rounds_up_and_never_overflows() {
    assert_eq!(coins_due_back(500, 499, 0), Ok(0));
    assert_eq!(coins_due_back(500, 499, 1), Ok(2));
    assert_eq!(coins_due_back(500, 499, 499), Ok(500));
    assert_eq!(coins_due_back(500, 499, 10_000), Ok(500), "at most everything");
    assert_eq!(coins_due_back(i64::MAX, i64::MAX, i64::MAX - 1), Ok(i64::MAX - 1));
    assert_eq!(coins_due_back(i64::MAX, 3, 1), Ok(i64::MAX / 3 + 1));
}

fn buyer_ledger_total(w: &World) -> i64 {
    w.ledger.snapshot.wallet_coins
}

proptest! {
    /// Whatever the order and repetition of the purchase and refund events,
    /// the wallet ends at the coins bought less the ceiling of the highest
    /// refund's share.
    #[test]
    fn coins_reversed_depend_only_on_the_highest_refund_whatever_the_order(
        refunds in proptest::collection::vec(0i64..=499, 0..6),
        purchase_at in 0usize..6,
        settle_after_each in any::<bool>(),
    ) {
        let mut w = world();
        let mut commands: Vec<PaymentCommand> =
            refunds.iter().enumerate().map(|(i, r)| refund(&format!("evt_r{i}"), *r)).collect();
        commands.insert(purchase_at.min(commands.len()), confirm("evt_p"));
        for command in commands {
            w.run(command);
            if settle_after_each {
                w.run(PaymentCommand::Settle);
            }
        }
        w.run(PaymentCommand::Settle);
        let highest = refunds.iter().copied().max().unwrap_or(0);
        let expected = 500 - coins_due_back(500, 499, highest).expect("in range");
        prop_assert_eq!(buyer_ledger_total(&w), expected);
        prop_assert_eq!(w.payment.snapshot.coins_reversed, 500 - expected);
    }
}

#[test]
fn the_payment_subject_is_its_paymentintent_id() {
    let mut w = world();
    let events = w.run(confirm("evt_p"));
    let payment_event = events.iter().find(|e| e.ledger_commit().is_none()).expect("a payment event");
    assert_eq!(payment_event.aggregate_id(), "pi_1");
    assert_eq!(events_schema::payment_token("pi.1 *"), format!("sha256-{}", sha("pi.1 *")));
    let _ = Uuid::nil();
}

fn sha(s: &str) -> String {
    events_schema::canonical::sha256_hex(s.as_bytes())
}
