//! The Stripe payment: a purchase credited once per PaymentIntent, refunds
//! reversed from the running `amount_refunded`, in any order.

use domain::ledger::{self, LedgerState};
use domain::payment::{
    self, Buyer, DisputeSeen, EffectKind, LedgerEffect, Offered, PackageRef, PaymentCommand, PaymentState, Posting,
    Price, Resolve, coins_due_back,
};
use events_schema::{Event, PaymentFlag, PaymentSnapshot};
use proptest::prelude::*;

use crate::spec::user;

/// A payment and its buyer's ledger, moved by accepted decisions, with a
/// log position for every event.
struct World {
    payment: PaymentState,
    ledger: LedgerState,
    position: u64,
}

fn world() -> World {
    World { payment: payment::initial_state("pi_1"), ledger: ledger::initial_state(user(1)), position: 0 }
}

impl World {
    /// Decides, appends; then posts and marks what the decision made
    /// pending, as the command side does. Returns the decision's events.
    fn run(&mut self, command: PaymentCommand) -> Vec<Event> {
        let events = self.decide(command);
        if let Some(posting) = payment::pending(&self.payment) {
            let ledger_position = self.post(&posting);
            self.decide(PaymentCommand::MarkPosted { ledger_position });
        }
        assert_eq!(payment::pending(&self.payment), None, "nothing left pending");
        events
    }

    /// Decides and appends, only.
    fn decide(&mut self, command: PaymentCommand) -> Vec<Event> {
        let events = payment::decide(&self.payment, &command).unwrap_or_else(|e| panic!("{command:?} rejected: {e}"));
        assert!(events.len() <= 1, "one event per decision: {events:?}");
        for event in &events {
            assert!(event.ledger_commit().is_none(), "a payment decision writes the payment alone");
            self.position += 1;
            self.payment = payment::at(payment::evolve(self.payment.clone(), event), self.position);
        }
        events
    }

    /// Posts on the buyer's ledger; returns the commit's position.
    fn post(&mut self, posting: &Posting) -> u64 {
        let events = payment::post(posting, &self.ledger).expect("the posting is accepted");
        let [event] = &events[..] else { panic!("one commit: {events:?}") };
        assert!(payment::is_posting_of(event, posting));
        ledger::check_commit(&self.ledger, event).expect("the commit keeps every invariant");
        self.ledger = ledger::evolve(self.ledger.clone(), event);
        self.position += 1;
        self.position
    }

    fn wallet(&self) -> i64 {
        self.ledger.snapshot.wallet_coins
    }
}

fn usd(amount_cents: i64) -> Price {
    Price { amount_cents, currency: "usd".into() }
}

fn confirm(event: &str) -> PaymentCommand {
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event.into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: "coins_500".into(), coins: Some(500), price: Some(usd(499)) },
        amount_cents: 499,
        currency: "usd".into(),
        offered: Offered::NotStated,
    }
}

fn refund(event: &str, amount_refunded_cents: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund { stripe_event_id: event.into(), charge_amount_cents: 499, amount_refunded_cents }
}

#[test]
fn a_purchase_is_credited_once_whichever_confirmation_comes_first_and_however_often() {
    let mut w = world();
    let events = w.run(confirm("evt_session"));
    assert!(matches!(&events[..], [Event::PaymentPurchaseCredited(_)]), "{events:?}");
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
        package: PackageRef { id: "coins_500".into(), coins: Some(500), price: Some(usd(499)) },
        amount_cents: 499,
        currency: "usd".into(),
        offered: Offered::NotStated,
    };
    let events = w.run(unknown_user.clone());
    assert!(matches!(&events[..], [Event::PaymentFlagged(f)] if f.flag == PaymentFlag::UnknownUser));
    assert!(w.run(unknown_user).is_empty());
    let unknown_package = PaymentCommand::ConfirmPurchase {
        stripe_event_id: "evt_2".into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: "coins_9".into(), coins: None, price: None },
        amount_cents: 499,
        currency: "usd".into(),
        offered: Offered::NotStated,
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
fn a_posting_goes_to_the_buyers_ledger_only() {
    let mut w = world();
    w.decide(confirm("evt_1"));
    let posting = payment::pending(&w.payment).expect("pending");
    let other = ledger::initial_state(user(2));
    assert_eq!(payment::post(&posting, &other).map_err(|e| e.code()), Err("validation_failed"));
    assert_eq!(payment::ledger_user(&payment::initial_state("pi_1"), &confirm("evt_1")), Some(user(1)));
}

#[test]
fn a_confirmed_purchase_is_pending_until_posted_and_marked() {
    let mut w = world();
    // When the purchase is confirmed: the payment alone records it.
    let events = w.decide(confirm("evt_p"));
    let [Event::PaymentPurchaseCredited(credited)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(credited.state_after.posted_position, Some(0));
    assert_eq!(w.wallet(), 0, "nothing posted yet");
    // Then its effect is pending, at the decision's position.
    let posting = payment::pending(&w.payment).expect("pending");
    let effect = LedgerEffect { user_id: user(1), kind: EffectKind::Purchase, coins: 500 };
    assert_eq!(posting, Posting { payment_id: "pi_1".into(), source_position: 1, effect });
    // No other decision is taken while it is pending.
    for command in [confirm("evt_other"), refund("evt_r", 100), PaymentCommand::Settle] {
        let refused = payment::decide(&w.payment, &command).map_err(|e| e.code());
        assert_eq!(refused, Err("validation_failed"), "{command:?}");
    }
    // The posting: the ledger's commit names the decision.
    let commit = payment::post(&posting, &w.ledger).expect("posted");
    let [Event::CoinsPurchased(purchased)] = &commit[..] else { panic!("{commit:?}") };
    assert_eq!((purchased.payment_id.as_str(), purchased.coins, purchased.source_position), ("pi_1", 500, 1));
    let ledger_position = w.post(&posting);
    assert_eq!(w.wallet(), 500);
    assert!(payment::pending(&w.payment).is_some(), "pending until marked");
    // The mark.
    let events = w.decide(PaymentCommand::MarkPosted { ledger_position });
    let [Event::PaymentPosted(posted)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((posted.posted_position, posted.ledger_position), (1, 2));
    assert_eq!(posted.state_after.posted_position, Some(1));
    assert_eq!(payment::pending(&w.payment), None);
    assert_eq!(payment::posted_position(&w.payment), 1);
    // Marking again decides nothing.
    assert!(w.decide(PaymentCommand::MarkPosted { ledger_position }).is_empty());
}

#[test]
fn a_refund_of_a_posted_purchase_is_pending_with_the_coins_due_back() {
    let mut w = world();
    w.run(confirm("evt_p"));
    let events = w.decide(refund("evt_r", 100));
    let [Event::PaymentRefundRecorded(recorded)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((recorded.coins, recorded.state_after.coins_reversed), (101, 101));
    assert_eq!(recorded.state_after.posted_position, Some(1), "the purchase's decision is posted");
    let posting = payment::pending(&w.payment).expect("pending");
    assert_eq!(posting.effect, LedgerEffect { user_id: user(1), kind: EffectKind::Refund, coins: 101 });
    assert_eq!(posting.source_position, w.position);
    let ledger_position = w.post(&posting);
    assert_eq!(w.wallet(), 399);
    w.decide(PaymentCommand::MarkPosted { ledger_position });
    assert_eq!(payment::pending(&w.payment), None);
    // A refund that moves nothing is never pending.
    w.run(refund("evt_r_late", 50));
    assert_eq!(payment::pending(&w.payment), None);
}

#[test]
fn a_commit_posts_only_its_own_decision() {
    let mut w = world();
    w.decide(confirm("evt_p"));
    let posting = payment::pending(&w.payment).expect("pending");
    let commit = payment::post(&posting, &w.ledger).expect("posted").remove(0);
    assert!(payment::is_posting_of(&commit, &posting));
    let later = Posting { source_position: posting.source_position + 3, ..posting.clone() };
    assert!(!payment::is_posting_of(&commit, &later));
    let other = Posting { payment_id: "pi_2".into(), ..posting.clone() };
    assert!(!payment::is_posting_of(&commit, &other));
    // A commit of the atomic-batch era (no source position) posts nothing
    // pending.
    let legacy = ledger::decide(
        &w.ledger,
        &ledger::LedgerCommand::PurchaseCoins { payment_id: "pi_1".into(), coins: 500, source_position: 0 },
    )
    .expect("a commit")
    .remove(0);
    assert!(!payment::is_posting_of(&legacy, &Posting { source_position: 0, ..posting }));
}

#[test]
fn a_payment_written_in_atomic_batches_has_nothing_pending() {
    // Its last event carries no posted position: its effects were appended
    // with it.
    let purchase = events_schema::PaymentPurchase {
        user_id: user(1),
        package_id: "coins_500".into(),
        coins: 500,
        amount_cents: 499,
        currency: "usd".into(),
    };
    let legacy = Event::PaymentPurchaseCredited(events_schema::PaymentPurchaseCredited {
        payment_id: "pi_1".into(),
        stripe_event_id: "evt_p".into(),
        purchase: purchase.clone(),
        state_after: PaymentSnapshot { purchase: Some(purchase), ..PaymentSnapshot::default() },
    });
    let state = payment::at(payment::evolve(payment::initial_state("pi_1"), &legacy), 7);
    assert_eq!(payment::pending(&state), None);
    assert_eq!(payment::posted_position(&state), 7);
    // Its next decision writes the posted position out.
    let events = payment::decide(&state, &refund("evt_r", 499)).expect("decided");
    let [Event::PaymentRefundRecorded(recorded)] = &events[..] else { panic!("{events:?}") };
    assert_eq!((recorded.coins, recorded.state_after.posted_position), (500, Some(7)));
    let state = payment::at(payment::evolve(state, &events[0]), 9);
    assert_eq!(payment::pending(&state).map(|p| p.source_position), Some(9));
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

/// The independent model of a refund's coins: the least whole number of
/// coins `k` with `k / coins >= refunded / amount` (that is
/// `k * amount >= coins * refunded`), found by bisection in u128 (no
/// overflow for any i64 operands), capped at all the coins. Not the code's
/// formula: no ceiling division appears here.
fn model_coins_due_back(coins: i64, amount_cents: i64, refunded_cents: i64) -> i64 {
    if coins <= 0 || amount_cents <= 0 || refunded_cents <= 0 {
        return 0;
    }
    let (coins_wide, amount, refunded) =
        (coins.unsigned_abs() as u128, amount_cents.unsigned_abs() as u128, refunded_cents.unsigned_abs() as u128);
    let owed = coins_wide * refunded;
    // Smallest k in [0, coins] with k * amount >= owed; coins itself when
    // the refund is the whole amount or more.
    let (mut low, mut high) = (0u128, coins_wide);
    while low < high {
        let middle = low + (high - low) / 2;
        if middle * amount >= owed {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    i64::try_from(low).expect("at most the coins, an i64")
}

#[test]
fn the_model_of_a_refunds_coins_agrees_with_worked_examples() {
    // 100 of 499 cents of 500 coins: 100.2 coins, so 101.
    assert_eq!(model_coins_due_back(500, 499, 100), 101);
    // Exact shares are not rounded up.
    assert_eq!(model_coins_due_back(500, 500, 100), 100);
    assert_eq!(model_coins_due_back(500, 499, 499), 500);
    assert_eq!(model_coins_due_back(500, 499, 1_000), 500);
    assert_eq!(model_coins_due_back(7, 3, 1), 3);
    assert_eq!(model_coins_due_back(i64::MAX, 3, 1), i64::MAX / 3 + 1);
}

/// A package of `coins` coins sold for `amount_cents`.
fn confirm_package(event: &str, coins: i64, amount_cents: i64) -> PaymentCommand {
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event.into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: format!("coins_{coins}"), coins: Some(coins), price: Some(usd(amount_cents)) },
        amount_cents,
        currency: "usd".into(),
        offered: Offered::NotStated,
    }
}

fn refund_of(event: &str, charge_amount_cents: i64, amount_refunded_cents: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund { stripe_event_id: event.into(), charge_amount_cents, amount_refunded_cents }
}

/// A package and its refunds: coins from 1 to ten million, a price from one
/// cent to ten thousand dollars, refunds as parts of the price (0 to all of
/// it, both ends likelier), in any order around the purchase.
fn package_and_refunds() -> impl Strategy<Value = (i64, i64, Vec<i64>, usize, bool)> {
    (1i64..=10_000_000, 1i64..=1_000_000).prop_flat_map(|(coins, amount)| {
        let part = prop_oneof![Just(0i64), Just(amount), Just(1i64.min(amount)), 0i64..=amount];
        (Just(coins), Just(amount), proptest::collection::vec(part, 0..6), 0usize..6, any::<bool>())
    })
}

proptest! {
    /// Whatever the package, the price, and the order and repetition of the
    /// purchase and refund events, the wallet ends at the coins bought less
    /// the model's coins for the highest refund; the coins reversed never
    /// shrink and never pass the coins bought.
    #[test]
    fn coins_reversed_depend_only_on_the_highest_refund_whatever_the_order(
        (coins, amount, refunds, purchase_at, settle_after_each) in package_and_refunds(),
    ) {
        let mut w = world();
        let mut commands: Vec<PaymentCommand> =
            refunds.iter().enumerate().map(|(i, r)| refund_of(&format!("evt_r{i}"), amount, *r)).collect();
        commands.insert(purchase_at.min(commands.len()), confirm_package("evt_p", coins, amount));
        let mut reversed_before = 0;
        for command in commands {
            w.run(command);
            if settle_after_each {
                w.run(PaymentCommand::Settle);
            }
            let reversed = w.payment.snapshot.coins_reversed;
            prop_assert!(reversed >= reversed_before, "reversed coins shrank: {reversed_before} -> {reversed}");
            prop_assert!((0..=coins).contains(&reversed), "reversed {reversed} of {coins}");
            prop_assert!(w.wallet() >= 0, "wallet {}", w.wallet());
            reversed_before = reversed;
        }
        w.run(PaymentCommand::Settle);
        let highest = refunds.iter().copied().max().unwrap_or(0);
        let due_back = model_coins_due_back(coins, amount, highest);
        prop_assert_eq!(w.wallet(), coins - due_back);
        prop_assert_eq!(w.payment.snapshot.coins_reversed, due_back);
        prop_assert_eq!(w.payment.snapshot.flags.clone(), Vec::<PaymentFlag>::new());
    }

    /// The code's rounding against the model, on operands of any size: the
    /// ceiling of the share, and never more than all the coins.
    #[test]
    fn coins_due_back_matches_the_model(
        coins in 1i64..=i64::MAX,
        amount in 1i64..=i64::MAX,
        refunded in 0i64..=i64::MAX,
    ) {
        let expected = model_coins_due_back(coins, amount, refunded);
        prop_assert_eq!(coins_due_back(coins, amount, refunded), Ok(expected));
        prop_assert!(expected <= coins);
    }

    /// Small operands, where most shares are not whole: the same check on
    /// the values a coin shop sells.
    #[test]
    fn coins_due_back_matches_the_model_on_shop_sized_values(
        coins in 1i64..=5_000,
        amount in 1i64..=5_000,
        refunded in 0i64..=5_100,
    ) {
        prop_assert_eq!(coins_due_back(coins, amount, refunded), Ok(model_coins_due_back(coins, amount, refunded)));
    }
}

#[test]
fn the_payment_subject_is_its_paymentintent_id() {
    let mut w = world();
    let events = w.run(confirm("evt_p"));
    let payment_event = events.first().expect("a payment event");
    assert_eq!(payment_event.aggregate_id(), "pi_1");
    // A PaymentIntent id is its own token.
    assert_eq!(events_schema::payment_token("pi_3Abc-9"), "pi_3Abc-9");
    // Any other id: its SHA-256, written down here as `sha256sum` printed it
    // (`printf 'pi.1 *' | sha256sum`), not computed by the code under test.
    assert_eq!(
        events_schema::payment_token("pi.1 *"),
        "sha256-4a95917ca39be0f6698ea5f5a3a751a2d7f60bcf77cb4a40da206ea0d3225965"
    );
    assert_eq!(
        events_schema::payment_token("pi_3Abc>"),
        "sha256-c4a49ed5943cf161c4cef8a6e8f754789c060f271e29dcc3304b83e414fe793e"
    );
    for id in ["pi.1 *", "pi_3Abc>", ""] {
        let token = events_schema::payment_token(id);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{token}");
    }
}

// Disputes (chargebacks).

/// A dispute event of dispute `id` for `amount_cents`: `withdrawn` and
/// `reinstated` say which funds movements it reports.
fn dispute(event: &str, id: &str, amount_cents: i64, withdrawn: bool, reinstated: bool) -> PaymentCommand {
    PaymentCommand::RecordDispute {
        stripe_event_id: event.into(),
        dispute: DisputeSeen {
            dispute_id: id.into(),
            amount_cents,
            currency: "usd".into(),
            status: if reinstated { "won".into() } else { "needs_response".into() },
            reason: "fraudulent".into(),
            fee_cents: if withdrawn { 1500 } else { 0 },
            balance_transactions: u32::from(withdrawn),
            funds_withdrawn: withdrawn,
            funds_reinstated: reinstated,
        },
    }
}

/// Runs `Settle` until it decides nothing (a bounded number of times).
fn settle(w: &mut World) {
    for _ in 0..8 {
        if w.run(PaymentCommand::Settle).is_empty() {
            return;
        }
    }
    panic!("settling did not end");
}

#[test]
fn withdrawn_funds_reverse_the_disputed_share_once_and_a_won_dispute_credits_it_back_once() {
    let mut w = world();
    w.run(confirm("evt_p"));
    let created = w.run(dispute("evt_d1", "dp_1", 499, false, false));
    let [Event::PaymentDisputeRecorded(recorded)] = &created[..] else { panic!("{created:?}") };
    assert_eq!(recorded.coins, 0, "opened, no funds moved yet");
    assert_eq!(w.payment.snapshot.flags, vec![PaymentFlag::Disputed]);
    assert_eq!(w.wallet(), 500);
    let withdrawn = w.run(dispute("evt_d2", "dp_1", 499, true, false));
    let [Event::PaymentDisputeRecorded(recorded)] = &withdrawn[..] else { panic!("{withdrawn:?}") };
    assert_eq!((recorded.coins, recorded.dispute.fee_cents), (500, 1500));
    assert_eq!(w.wallet(), 0);
    assert!(w.run(dispute("evt_d2", "dp_1", 499, true, false)).is_empty(), "a repeat changes nothing");
    let reinstated = w.run(dispute("evt_d3", "dp_1", 499, false, true));
    let [Event::PaymentDisputeRecorded(recorded)] = &reinstated[..] else { panic!("{reinstated:?}") };
    assert_eq!(recorded.coins, -500);
    assert_eq!(recorded.dispute.status, "won");
    assert_eq!(w.wallet(), 500);
    assert!(w.run(dispute("evt_d3", "dp_1", 499, false, true)).is_empty());
    assert!(w.run(dispute("evt_d2", "dp_1", 499, true, false)).is_empty(), "a late withdrawal changes nothing");
    let snapshot = &w.payment.snapshot;
    assert_eq!((snapshot.coins_dispute_withdrawn, snapshot.coins_dispute_reinstated), (500, 500));
    assert_eq!(snapshot.disputes.len(), 1, "remembered");
}

#[test]
fn a_dispute_reverses_the_ceiling_of_its_share_never_more_than_refunds_left() {
    let mut w = world();
    w.run(confirm("evt_p"));
    // 400 of 499 cents refunded: ceil(500 * 400 / 499) = 401 coins.
    w.run(refund("evt_r", 400));
    assert_eq!(w.wallet(), 99);
    // A dispute of 200 cents would be 201 coins: only 99 are left.
    w.run(dispute("evt_d", "dp_1", 200, true, false));
    assert_eq!(w.wallet(), 0);
    assert_eq!(w.payment.snapshot.disputes[0].coins_reversed, 99);
    // Won: the 99 come back, not 201.
    w.run(dispute("evt_w", "dp_1", 200, false, true));
    assert_eq!(w.wallet(), 99);
}

#[test]
fn a_partial_dispute_reverses_the_ceiling_of_its_share() {
    let mut w = world();
    w.run(confirm("evt_p"));
    // 100 of 499 cents: ceil(500 * 100 / 499) = 101.
    w.run(dispute("evt_d", "dp_1", 100, true, false));
    assert_eq!(w.wallet(), 399);
}

#[test]
fn a_dispute_before_its_purchase_is_kept_and_applied_by_settling() {
    let mut w = world();
    let events = w.run(dispute("evt_d", "dp_1", 499, true, false));
    assert_eq!(events.len(), 1, "the dispute is remembered");
    assert_eq!(w.wallet(), 0);
    w.run(confirm("evt_p"));
    assert_eq!(w.wallet(), 500);
    settle(&mut w);
    assert_eq!(w.wallet(), 0);
    // Won later: credited back.
    w.run(dispute("evt_w", "dp_1", 499, false, true));
    assert_eq!(w.wallet(), 500);
}

#[test]
fn a_reinstatement_seen_before_its_withdrawal_leaves_the_coins_alone() {
    let mut w = world();
    w.run(confirm("evt_p"));
    w.run(dispute("evt_w", "dp_1", 499, false, true));
    assert!(w.run(dispute("evt_d", "dp_1", 499, true, false)).iter().all(|e| match e {
        Event::PaymentDisputeRecorded(r) => r.coins == 0,
        _ => false,
    }));
    assert_eq!(w.wallet(), 500);
}

#[test]
fn a_refund_after_a_won_dispute_is_caught_up_by_settling() {
    let mut w = world();
    w.run(confirm("evt_p"));
    w.run(dispute("evt_d", "dp_1", 499, true, false));
    assert_eq!(w.wallet(), 0);
    // Refunds have no room while the dispute holds everything.
    w.run(refund("evt_r", 100));
    assert_eq!(w.wallet(), 0);
    w.run(dispute("evt_w", "dp_1", 499, false, true));
    assert_eq!(w.wallet(), 500);
    settle(&mut w);
    assert_eq!(w.wallet(), 399, "the refund's 101 coins");
}

#[test]
fn a_dispute_of_a_pending_decision_waits_and_its_reversal_posts_to_the_buyer() {
    let mut w = world();
    w.run(confirm("evt_p"));
    w.decide(dispute("evt_d", "dp_1", 499, true, false));
    let posting = payment::pending(&w.payment).expect("pending");
    assert_eq!(posting.effect, LedgerEffect { user_id: user(1), kind: EffectKind::Refund, coins: 500 });
    let refused = payment::decide(&w.payment, &dispute("evt_w", "dp_1", 499, false, true)).map_err(|e| e.code());
    assert_eq!(refused, Err("validation_failed"), "post it first");
    let ledger_position = w.post(&posting);
    w.decide(PaymentCommand::MarkPosted { ledger_position });
    w.decide(dispute("evt_w", "dp_1", 499, false, true));
    let posting = payment::pending(&w.payment).expect("pending");
    assert_eq!(posting.effect, LedgerEffect { user_id: user(1), kind: EffectKind::Purchase, coins: 500 });
}

/// One event of the property test's payment.
#[derive(Debug, Clone)]
enum Happening {
    Purchase,
    Refund(i64),
    /// Dispute index (0 or 1), amount, withdrawn, reinstated.
    Dispute(usize, i64, bool, bool),
}

/// The independent model: what the buyer keeps, from the facts alone.
fn model_net_coins(coins: i64, amount: i64, happenings: &[Happening]) -> i64 {
    if !happenings.iter().any(|h| matches!(h, Happening::Purchase)) {
        return 0;
    }
    let highest_refund =
        happenings.iter().filter_map(|h| if let Happening::Refund(r) = h { Some(*r) } else { None }).max();
    let mut held = model_coins_due_back(coins, amount, highest_refund.unwrap_or(0));
    for index in 0..2 {
        let events: Vec<_> = happenings
            .iter()
            .filter_map(|h| match h {
                Happening::Dispute(i, a, w, r) if *i == index => Some((*a, *w, *r)),
                _ => None,
            })
            .collect();
        let withdrawn = events.iter().any(|e| e.1);
        let reinstated = events.iter().any(|e| e.2);
        let disputed = events.iter().map(|e| e.0).max().unwrap_or(0);
        if withdrawn && !reinstated {
            held += model_coins_due_back(coins, amount, disputed);
        }
    }
    coins - held.min(coins)
}

fn happenings() -> impl Strategy<Value = (i64, i64, Vec<Happening>)> {
    (1i64..=5_000, 1i64..=5_000).prop_flat_map(|(coins, amount)| {
        let part = prop_oneof![Just(amount), 0i64..=amount];
        let happening = prop_oneof![
            1 => Just(Happening::Purchase),
            2 => part.clone().prop_map(Happening::Refund),
            4 => (0usize..2, part, any::<bool>(), prop::bool::weighted(0.3))
                .prop_map(|(i, a, w, r)| Happening::Dispute(i, a, w, r)),
        ];
        (Just(coins), Just(amount), proptest::collection::vec(happening, 1..14))
    })
}

proptest! {
    /// Purchases, refunds and disputes in any order and repetition: after
    /// settling, the buyer keeps what the model says; at every step the
    /// coins reversed never pass the coins bought, reinstatements never
    /// pass what disputes withdrew, and the ledger holds exactly what the
    /// payment decided.
    #[test]
    fn net_coins_match_the_model_whatever_the_order_of_purchases_refunds_and_disputes(
        (coins, amount, happened) in happenings(),
    ) {
        let mut w = world();
        for (n, happening) in happened.iter().enumerate() {
            let command = match happening {
                Happening::Purchase => confirm_package(&format!("evt_p{n}"), coins, amount),
                Happening::Refund(r) => refund_of(&format!("evt_r{n}"), amount, *r),
                Happening::Dispute(i, a, wd, rs) => {
                    let PaymentCommand::RecordDispute { dispute: mut seen, .. } =
                        dispute("x", &format!("dp_{i}"), *a, *wd, *rs) else { unreachable!() };
                    seen.amount_cents = *a;
                    PaymentCommand::RecordDispute { stripe_event_id: format!("evt_d{n}"), dispute: seen }
                }
            };
            w.run(command);
            settle(&mut w);
            let s = &w.payment.snapshot;
            let held: i64 = s.coins_reversed + s.disputes.iter().map(|d| d.coins_reversed).sum::<i64>();
            let bought = s.purchase.as_ref().map_or(0, |p| p.coins);
            prop_assert!((0..=bought).contains(&held), "held {held} of {bought}");
            prop_assert!(s.coins_dispute_reinstated <= s.coins_dispute_withdrawn);
            prop_assert_eq!(w.wallet(), bought - held, "the ledger holds what the payment decided");
        }
        prop_assert_eq!(w.wallet(), model_net_coins(coins, amount, &happened));
    }
}

// Paid amounts.

fn confirm_paying(event: &str, paid_cents: i64, currency: &str, offered: Offered) -> PaymentCommand {
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event.into(),
        buyer: Buyer::Known(user(1)),
        package: PackageRef { id: "coins_500".into(), coins: Some(500), price: Some(usd(499)) },
        amount_cents: paid_cents,
        currency: currency.into(),
        offered,
    }
}

#[test]
fn a_purchase_is_credited_only_when_paid_equals_the_offered_price_the_catalogue_offers() {
    // The price stated and paid, the catalogue's: credited.
    let mut w = world();
    let events = w.run(confirm_paying("evt_1", 499, "usd", Offered::Stated(usd(499))));
    assert!(matches!(&events[..], [Event::PaymentPurchaseCredited(_)]), "{events:?}");
    assert_eq!(w.wallet(), 500);
    // Stated nowhere (created before the rule): held to the current price.
    let mut w = world();
    w.run(confirm_paying("evt_1", 499, "usd", Offered::NotStated));
    assert_eq!(w.wallet(), 500);
}

#[test]
fn a_payment_other_than_the_price_offered_is_flagged_amount_mismatch_and_never_credited() {
    let cases = [
        // An underpaid Payment Link (no price stated).
        ("underpaid", confirm_paying("evt_1", 100, "usd", Offered::NotStated)),
        // Overpaid is not the price either.
        ("overpaid", confirm_paying("evt_1", 999, "usd", Offered::NotStated)),
        // Paid in another currency.
        ("currency", confirm_paying("evt_1", 499, "eur", Offered::NotStated)),
        // Paid what was stated, but the stated price is not the catalogue's
        // (an old intent after a price change, or a forged metadata).
        ("not on offer", confirm_paying("evt_1", 100, "usd", Offered::Stated(usd(100)))),
        // Stated, but paid less.
        ("below stated", confirm_paying("evt_1", 400, "usd", Offered::Stated(usd(499)))),
        ("unreadable", confirm_paying("evt_1", 499, "usd", Offered::Unreadable("priceCents \"4.99\"".into()))),
    ];
    for (case, command) in cases {
        let mut w = world();
        let events = w.run(command.clone());
        let [Event::PaymentFlagged(flagged)] = &events[..] else { panic!("{case}: {events:?}") };
        assert_eq!(flagged.flag, PaymentFlag::AmountMismatch, "{case}");
        assert!(flagged.detail.starts_with("paid "), "{case}: {}", flagged.detail);
        assert_eq!(w.wallet(), 0, "{case}");
        assert_eq!(w.payment.snapshot.purchase, None, "{case}");
        assert!(w.run(command).is_empty(), "{case}: flagged once");
    }
    // A package without a price on offer credits nothing.
    let mut w = world();
    let mut command = confirm_paying("evt_1", 499, "usd", Offered::NotStated);
    if let PaymentCommand::ConfirmPurchase { package, .. } = &mut command {
        package.price = None;
    }
    w.run(command);
    assert_eq!(w.payment.snapshot.flags, vec![PaymentFlag::AmountMismatch]);
}

// Resolutions.

fn resolve(action: Resolve) -> PaymentCommand {
    PaymentCommand::Resolve { resolved_by: user(9), note: "support ticket 42".into(), action }
}

fn credit_to_user_1() -> Resolve {
    Resolve::Credit { user_id: user(1), package_id: "coins_500".into(), coins: 500 }
}

#[test]
fn a_flagged_payment_is_credited_once_by_its_resolution_and_posted_like_a_purchase() {
    let mut w = world();
    let unknown = PaymentCommand::ConfirmPurchase {
        stripe_event_id: "evt_1".into(),
        buyer: Buyer::Unknown("typo".into()),
        package: PackageRef { id: "coins_500".into(), coins: Some(500), price: Some(usd(499)) },
        amount_cents: 499,
        currency: "usd".into(),
        offered: Offered::NotStated,
    };
    w.run(unknown.clone());
    let claim = w.payment.snapshot.claim.clone().expect("what Stripe said is kept");
    assert_eq!((claim.user_id.as_str(), claim.amount_cents), ("typo", 499));
    // A refund seen before the resolution is settled after it.
    w.run(refund("evt_r", 100));
    let events = w.run(resolve(credit_to_user_1()));
    let [Event::PaymentResolved(resolved)] = &events[..] else { panic!("{events:?}") };
    assert_eq!(resolved.purchase.as_ref().map(|p| (p.coins, p.amount_cents)), Some((500, 499)));
    assert_eq!(w.wallet(), 500);
    settle(&mut w);
    assert_eq!(w.wallet(), 399);
    // Once: again, dismissing, or Stripe's repeat change nothing.
    for again in [resolve(credit_to_user_1()), resolve(Resolve::Dismiss)] {
        assert_eq!(payment::decide(&w.payment, &again).map_err(|e| e.code()), Err("payment_not_resolvable"));
    }
    assert!(w.run(unknown).is_empty());
}

#[test]
fn a_resolution_of_an_unflagged_or_credited_payment_or_without_a_note_is_refused() {
    let mut w = world();
    assert_eq!(
        payment::decide(&w.payment, &resolve(Resolve::Dismiss)).map_err(|e| e.code()),
        Err("payment_not_resolvable"),
        "nothing to resolve"
    );
    w.run(confirm("evt_p"));
    w.run(dispute("evt_d", "dp_1", 499, true, false));
    // Disputed (flagged) but credited: no credit; a dismissal closes it.
    assert_eq!(
        payment::decide(&w.payment, &resolve(credit_to_user_1())).map_err(|e| e.code()),
        Err("payment_not_resolvable")
    );
    let blank = PaymentCommand::Resolve { resolved_by: user(9), note: " ".into(), action: Resolve::Dismiss };
    assert_eq!(payment::decide(&w.payment, &blank).map_err(|e| e.code()), Err("validation_failed"));
    let events = w.run(resolve(Resolve::Dismiss));
    assert!(matches!(&events[..], [Event::PaymentResolved(r)] if r.purchase.is_none()), "{events:?}");
    assert_eq!(w.wallet(), 0, "a dismissal moves nothing");
}
