//! The user ledger: purchases, refunds, host credits, payouts, adjustments.

use domain::ledger::{
    ADJUSTMENT_COINS_MAX, GiftToCredit, LedgerCommand::*, PENDING_PAYOUTS_MAX, PayoutPolicy, payout_fiat,
};
use events_schema::{Account, Event, Money};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::spec::*;

fn purchase(coins: i64) -> domain::ledger::LedgerCommand {
    PurchaseCoins { payment_id: format!("pi_{coins}"), coins, source_position: 0 }
}

fn gift(position: u64, viewer: Uuid, coins: i64) -> GiftToCredit {
    GiftToCredit {
        source_position: position,
        viewer_id: viewer,
        stream_id: user(900),
        coins,
        host_share_bps: 7000,
        sent_at: at(0),
        matures_at: at(0),
    }
}

fn payout(id: u128, coins: i64) -> domain::ledger::LedgerCommand {
    RequestPayout {
        payout_id: user(500 + id),
        coins,
        destination: "acct_123".into(),
        policy: policy(),
        requested_at: at(0),
    }
}

#[test]
fn a_purchase_moves_coins_from_stripe_to_the_wallet() {
    let u = user(1);
    let event = ledger_of(u).when(purchase(500)).then_event();
    assert!(matches!(&event, Event::CoinsPurchased(e) if e.coins == 500 && e.payment_id == "pi_500"));
    assert_eq!(transfers(&event), vec![(Account::ExternalStripe, Account::Wallet(u), 500)]);
    assert_eq!(balances(&event), (500, 0, 0));
}

#[test]
fn a_purchase_of_no_coins_is_rejected() {
    ledger_of(user(1)).when(purchase(0)).then_error("validation_failed");
    ledger_of(user(1)).when(purchase(-5)).then_error("validation_failed");
    ledger_of(user(1))
        .when(PurchaseCoins { payment_id: " ".into(), coins: 5, source_position: 0 })
        .then_error("validation_failed");
}

#[test]
fn a_purchase_that_would_overflow_the_wallet_is_rejected_not_wrapped() {
    ledger_of(user(1)).given(&[purchase(i64::MAX)]).when(purchase(1)).then_error("amount_out_of_range");
}

#[test]
fn a_refund_may_drive_the_wallet_negative_and_then_blocks_spending() {
    let u = user(1);
    let spec = ledger_of(u).given(&[purchase(100), Adjust { coins: -60, reason: "fix".into(), admin_id: user(9) }]);
    let event = spec.when(RefundPurchase { payment_id: "pi_100".into(), coins: 100, source_position: 0 }).then_event();
    assert_eq!(transfers(&event), vec![(Account::Wallet(u), Account::ExternalStripe, 100)]);
    assert_eq!(balances(&event), (-60, 0, 0));

    let negative = ledger_of(u).given(&[purchase(100), Adjust { coins: -60, reason: "fix".into(), admin_id: user(9) }]);
    let negative = negative.given(&[RefundPurchase { payment_id: "pi_100".into(), coins: 100, source_position: 0 }]);
    // Even a debit of one coin is refused while the wallet is negative.
    negative.when(Adjust { coins: -1, reason: "x".into(), admin_id: user(9) }).then_error("insufficient_funds");
    // Back at zero, the wallet can spend again.
    let back = ledger_of(u)
        .given(&[purchase(100), Adjust { coins: -60, reason: "fix".into(), admin_id: user(9) }])
        .given(&[RefundPurchase { payment_id: "pi_100".into(), coins: 100, source_position: 0 }, purchase(61)]);
    let event = back.when(Adjust { coins: -1, reason: "x".into(), admin_id: user(9) }).then_event();
    assert_eq!(balances(&event), (0, 0, 0));
}

#[test]
fn credited_gifts_are_split_per_gift_and_rounded_down_for_the_host() {
    let host = user(2);
    let viewer = user(3);
    let event = ledger_of(host)
        .when(CreditGifts {
            gifts: vec![gift(10, viewer, 1), gift(11, viewer, 1), gift(12, viewer, 1), gift(13, viewer, 10)],
        })
        .then_event();
    // 1 coin at 70% gives the host 0, three times; 10 coins give 7. A single
    // gift of 13 would have given 9: batching never changes the split.
    assert_eq!(
        transfers(&event),
        vec![(Account::TransitGifts, Account::Earnings(host), 7), (Account::TransitGifts, Account::PlatformRevenue, 6)]
    );
    assert_eq!(balances(&event), (0, 7, 0));
    assert_eq!(commit(&event).state_after.last_credited_position, 13);
    let Event::GiftsReceived(received) = &event else { panic!("gifts received") };
    let host_coins: Vec<i64> = received.gifts.iter().map(|g| g.host_coins).collect();
    assert_eq!(host_coins, vec![0, 0, 0, 7]);
}

#[test]
fn one_coin_gifts_credit_the_platform_alone_and_still_advance_the_position() {
    let host = user(2);
    let event =
        ledger_of(host).when(CreditGifts { gifts: vec![gift(4, user(3), 1), gift(5, user(3), 1)] }).then_event();
    assert_eq!(transfers(&event), vec![(Account::TransitGifts, Account::PlatformRevenue, 2)]);
    assert_eq!(balances(&event), (0, 0, 0));
    assert_eq!(commit(&event).state_after.last_credited_position, 5);
}

#[test]
fn gifts_already_credited_are_never_credited_again() {
    let host = user(2);
    let viewer = user(3);
    let spec = ledger_of(host).given(&[CreditGifts { gifts: vec![gift(10, viewer, 100), gift(20, viewer, 100)] }]);
    spec.when(CreditGifts { gifts: vec![gift(10, viewer, 100), gift(20, viewer, 100)] }).then_nothing();

    let spec = ledger_of(host).given(&[CreditGifts { gifts: vec![gift(10, viewer, 100), gift(20, viewer, 100)] }]);
    let event = spec.when(CreditGifts { gifts: vec![gift(20, viewer, 100), gift(30, viewer, 100)] }).then_event();
    let Event::GiftsReceived(received) = &event else { panic!("gifts received") };
    assert_eq!(received.gifts.len(), 1, "only the gift at position 30 is new");
    assert_eq!(balances(&event), (0, 210, 0));
}

#[test]
fn a_host_cannot_be_credited_their_own_gift() {
    let host = user(2);
    ledger_of(host).when(CreditGifts { gifts: vec![gift(1, host, 5)] }).then_error("self_gift_forbidden");
}

#[test]
fn a_credit_with_an_impossible_share_is_rejected() {
    let g = GiftToCredit { host_share_bps: 10_001, ..gift(1, user(3), 5) };
    ledger_of(user(2)).when(CreditGifts { gifts: vec![g] }).then_error("validation_failed");
}

fn host_with_earnings(coins: i64) -> LedgerSpec {
    ledger_of(user(2))
        .given(&[CreditGifts { gifts: vec![GiftToCredit { host_share_bps: 10_000, ..gift(1, user(3), coins) }] }])
}

#[test]
fn a_payout_request_holds_earnings_and_prices_them_exactly() {
    let host = user(2);
    let event = host_with_earnings(5000).when(payout(1, 1234)).then_event();
    assert_eq!(transfers(&event), vec![(Account::Earnings(host), Account::PayoutHold(host), 1234)]);
    assert_eq!(balances(&event), (0, 3766, 1234));
    let Event::PayoutRequested(requested) = &event else { panic!("payout requested") };
    assert_eq!(requested.fiat, Money { amount: Decimal::new(1234, 2), currency: "usd".into() });
    assert_eq!(commit(&event).state_after.pending_payouts.len(), 1);
}

#[test]
fn payout_fiat_rounds_toward_zero_to_the_cent() {
    let rate = Money { amount: Decimal::new(33, 4), currency: "eur".into() };
    assert_eq!(payout_fiat(1001, &rate).expect("priced").amount, Decimal::new(330, 2));
    let zero = Money { amount: Decimal::ZERO, currency: "eur".into() };
    assert_eq!(payout_fiat(1, &zero).map_err(|e| e.code()), Err("validation_failed"));
}

#[test]
fn a_payout_below_the_minimum_is_rejected() {
    host_with_earnings(5000).when(payout(1, 999)).then_error("below_minimum");
}

#[test]
fn a_payout_beyond_earnings_is_rejected() {
    host_with_earnings(1500).when(payout(1, 1501)).then_error("insufficient_earnings");
}

#[test]
fn pending_payouts_are_bounded() {
    let mut spec = host_with_earnings(1000 * (PENDING_PAYOUTS_MAX as i64 + 1));
    for i in 0..PENDING_PAYOUTS_MAX as u128 {
        spec = spec.given(&[payout(i, 1000)]);
    }
    spec.when(payout(99, 1000)).then_error("too_many_pending_payouts");
}

#[test]
fn a_payout_id_cannot_be_pending_twice() {
    host_with_earnings(5000).given(&[payout(1, 1000)]).when(payout(1, 1000)).then_error("validation_failed");
}

#[test]
fn approval_pays_the_hold_out() {
    let host = user(2);
    let event = host_with_earnings(5000)
        .given(&[payout(1, 2000)])
        .when(ApprovePayout { payout_id: user(501), external_ref: "po_1".into() })
        .then_event();
    assert_eq!(transfers(&event), vec![(Account::PayoutHold(host), Account::ExternalPayouts, 2000)]);
    assert_eq!(balances(&event), (0, 3000, 0));
    assert!(commit(&event).state_after.pending_payouts.is_empty());
}

#[test]
fn rejection_releases_the_hold_to_earnings() {
    let host = user(2);
    let event = host_with_earnings(5000)
        .given(&[payout(1, 2000)])
        .when(RejectPayout { payout_id: user(501), reason: "kyc".into() })
        .then_event();
    assert_eq!(transfers(&event), vec![(Account::PayoutHold(host), Account::Earnings(host), 2000)]);
    assert_eq!(balances(&event), (0, 5000, 0));
}

#[test]
fn a_decided_or_unknown_payout_cannot_be_decided_again() {
    let approved = host_with_earnings(5000)
        .given(&[payout(1, 2000), ApprovePayout { payout_id: user(501), external_ref: "po_1".into() }]);
    approved.when(RejectPayout { payout_id: user(501), reason: "late".into() }).then_error("payout_not_pending");
    host_with_earnings(5000)
        .when(ApprovePayout { payout_id: user(777), external_ref: "po".into() })
        .then_error("payout_not_pending");
    host_with_earnings(5000)
        .given(&[payout(1, 2000)])
        .when(ApprovePayout { payout_id: user(501), external_ref: "".into() })
        .then_error("validation_failed");
}

#[test]
fn an_adjustment_moves_coins_between_the_platform_and_the_wallet() {
    let u = user(4);
    let admin = user(9);
    let credit = ledger_of(u).when(Adjust { coins: 300, reason: "goodwill".into(), admin_id: admin }).then_event();
    assert_eq!(transfers(&credit), vec![(Account::PlatformAdjustments, Account::Wallet(u), 300)]);
    let debit = ledger_of(u)
        .given(&[Adjust { coins: 300, reason: "goodwill".into(), admin_id: admin }])
        .when(Adjust { coins: -100, reason: "duplicate".into(), admin_id: admin })
        .then_event();
    assert_eq!(transfers(&debit), vec![(Account::Wallet(u), Account::PlatformAdjustments, 100)]);
    assert_eq!(balances(&debit), (200, 0, 0));
}

#[test]
fn an_adjustment_needs_a_reason_an_amount_and_cannot_overdraw() {
    let admin = user(9);
    ledger_of(user(4)).when(Adjust { coins: 0, reason: "x".into(), admin_id: admin }).then_error("validation_failed");
    ledger_of(user(4)).when(Adjust { coins: 5, reason: "  ".into(), admin_id: admin }).then_error("validation_failed");
    ledger_of(user(4)).when(Adjust { coins: -5, reason: "x".into(), admin_id: admin }).then_error("insufficient_funds");
    // One adjustment moves at most ADJUSTMENT_COINS_MAX coins either way.
    for coins in [i64::MIN, -ADJUSTMENT_COINS_MAX - 1, ADJUSTMENT_COINS_MAX + 1, i64::MAX] {
        ledger_of(user(4)).when(Adjust { coins, reason: "x".into(), admin_id: admin }).then_error("validation_failed");
    }
    let Event::LedgerAdjusted(adjusted) = ledger_of(user(4))
        .when(Adjust { coins: ADJUSTMENT_COINS_MAX, reason: "x".into(), admin_id: admin })
        .then_event()
    else {
        panic!("an adjustment")
    };
    assert_eq!(adjusted.commit.state_after.wallet_coins, ADJUSTMENT_COINS_MAX);
}

#[test]
fn a_payout_policy_with_a_zero_minimum_still_needs_positive_coins() {
    let p = PayoutPolicy { min_coins: 0, ..policy() };
    host_with_earnings(10)
        .when(RequestPayout { payout_id: user(1), coins: 0, destination: "d".into(), policy: p, requested_at: at(0) })
        .then_error("validation_failed");
}
