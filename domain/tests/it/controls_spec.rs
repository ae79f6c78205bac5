//! Money-out controls: the payout's reference in the log, nobody settling
//! their own payout or adjusting their own wallet, four eyes on large
//! adjustments.

use domain::adjustment::{self, AdjustmentState, AdjustmentStatus, Propose, needs_approval};
use domain::ledger::{self, GiftToCredit, LedgerCommand, LedgerState};
use events_schema::{Account, Event, ReservationKind};

use uuid::Uuid;

use crate::spec::*;

fn host_with_earnings(host: Uuid) -> LedgerState {
    let gifts = vec![GiftToCredit {
        source_position: 10,
        viewer_id: user(3),
        stream_id: user(900),
        coins: 10_000,
        host_share_bps: 7000,
        sent_at: at(0),
        matures_at: at(0),
    }];
    ledger_of(host).given(&[LedgerCommand::CreditGifts { gifts }]).state
}

fn request(payout: Uuid, coins: i64) -> LedgerCommand {
    LedgerCommand::RequestPayout {
        payout_id: payout,
        coins,
        destination: "acct_1".into(),
        policy: policy(),
        requested_at: at(0),
    }
}

fn apply(state: LedgerState, events: &[Event]) -> LedgerState {
    events.iter().fold(state, |s, e| if e.ledger_commit().is_some() { ledger::evolve(s, e) } else { s })
}

#[test]
fn a_payout_request_writes_the_logs_reference_from_its_id_to_the_ledger() {
    let host = user(2);
    let payout = user(501);
    let events = ledger::decide_payout_request(&host_with_earnings(host), &None, &request(payout, 2000)).unwrap();
    let [Event::PayoutRequested(requested), Event::ReservationClaimed(reference)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(requested.payout_id, payout);
    assert_eq!(
        (reference.kind, reference.value.as_str(), reference.user_id),
        (ReservationKind::Payout, payout.to_string().as_str(), host)
    );
    assert_eq!(events[1].aggregate_id(), events_schema::reservation_id(ReservationKind::Payout, &payout.to_string()));
    // An id the log already refers to is never requested twice.
    let taken = ledger::decide_payout_request(&host_with_earnings(host), &Some(user(77)), &request(payout, 2000));
    assert_eq!(taken.unwrap_err().code(), "validation_failed");
    // The ledger's own rules still decide.
    let over = ledger::decide_payout_request(&host_with_earnings(host), &None, &request(payout, 7001));
    assert_eq!(over.unwrap_err().code(), "insufficient_earnings");
}

#[test]
fn nobody_settles_their_own_payout_and_another_admin_may() {
    let host = user(2);
    let payout = user(501);
    let requested = ledger::decide_payout_request(&host_with_earnings(host), &None, &request(payout, 2000)).unwrap();
    let state = apply(host_with_earnings(host), &requested);
    let approve = LedgerCommand::ApprovePayout { payout_id: payout, external_ref: "po_1".into() };
    let reject = LedgerCommand::RejectPayout { payout_id: payout, reason: "kyc".into() };
    for command in [&approve, &reject] {
        let own = ledger::decide_settlement(&state, host, command).unwrap_err();
        assert_eq!(own.code(), "self_approval_forbidden");
    }
    let approved = ledger::decide_settlement(&state, user(9), &approve).unwrap();
    assert!(matches!(&approved[..], [Event::PayoutApproved(p)] if p.payout_id == payout && p.coins == 2000));
    let rejected = ledger::decide_settlement(&state, user(9), &reject).unwrap();
    assert!(matches!(&rejected[..], [Event::PayoutRejected(p)] if p.payout_id == payout));
    // A settlement entry point never decides anything else.
    let other = ledger::decide_settlement(&state, user(9), &request(user(502), 1000));
    assert_eq!(other.unwrap_err().code(), "validation_failed");
}

#[test]
fn an_admin_does_not_adjust_their_own_wallet() {
    let admin = user(9);
    ledger_of(admin)
        .when(LedgerCommand::Adjust { coins: 5, reason: "me".into(), admin_id: admin })
        .then_error("self_approval_forbidden");
    ledger_of(admin).when(LedgerCommand::Adjust { coins: 5, reason: "them".into(), admin_id: user(8) }).then_event();
}

#[test]
fn the_approval_threshold_counts_either_sign_and_is_inclusive() {
    assert!(needs_approval(10_000, 10_000));
    assert!(needs_approval(-10_000, 10_000));
    assert!(!needs_approval(9_999, 10_000));
    assert!(!needs_approval(-9_999, 10_000));
    assert!(needs_approval(1, 0), "a threshold of 0 puts every adjustment through four eyes");
    assert!(needs_approval(i64::MIN, 10_000), "no overflow at the edge");
}

fn propose(id: u128, target: Uuid, coins: i64, by: Uuid) -> Propose {
    Propose { adjustment_id: user(id), user_id: target, coins, reason: "duplicate credit".into(), admin_id: by }
}

fn evolve_all(state: AdjustmentState, events: &[Event]) -> AdjustmentState {
    events.iter().fold(state, adjustment::evolve)
}

#[test]
fn four_eyes_propose_then_another_admin_approves_once() {
    let (target, proposer, approver) = (user(1), user(9), user(8));
    let proposed = adjustment::decide_propose(&None, &propose(70, target, 25_000, proposer)).unwrap();
    assert!(matches!(&proposed[..], [Event::AdjustmentProposed(p)] if p.proposed_by == proposer && p.coins == 25_000));
    let state = evolve_all(None, &proposed);
    assert_eq!(state.as_ref().map(|a| a.status), Some(AdjustmentStatus::Proposed));
    let ledger = ledger::initial_state(target);

    // The proposer cannot approve, nor can the adjusted user.
    assert_eq!(adjustment::decide_approve(&state, &ledger, proposer).unwrap_err().code(), "self_approval_forbidden");
    assert_eq!(adjustment::decide_approve(&state, &ledger, target).unwrap_err().code(), "self_approval_forbidden");

    let approved = adjustment::decide_approve(&state, &ledger, approver).unwrap();
    let [Event::LedgerAdjusted(adjusted), Event::AdjustmentApproved(approval)] = &approved[..] else {
        panic!("{approved:?}")
    };
    ledger::check_commit(&ledger, &approved[0]).expect("the applied adjustment keeps every invariant");
    assert_eq!(transfers(&approved[0]), vec![(Account::PlatformAdjustments, Account::Wallet(target), 25_000)]);
    assert_eq!((adjusted.admin_id, approval.approved_by, approval.proposed_by), (approver, approver, proposer));

    // Loaded from its last event alone, it is applied; a repeat moves nothing.
    let after = adjustment::evolve(None, &approved[1]);
    assert_eq!(after.as_ref().map(|a| a.status), Some(AdjustmentStatus::Applied));
    assert_eq!(
        adjustment::decide_approve(&after, &ledger::evolve(ledger, &approved[0]), user(7)).unwrap_err().code(),
        "adjustment_not_proposed"
    );
    assert_eq!(adjustment::decide_reject(&after, user(7), "late").unwrap_err().code(), "adjustment_not_proposed");
}

#[test]
fn four_eyes_reject_moves_nothing_and_closes_the_proposal() {
    let (target, proposer) = (user(1), user(9));
    let state = evolve_all(None, &adjustment::decide_propose(&None, &propose(71, target, -50_000, proposer)).unwrap());
    assert_eq!(adjustment::decide_reject(&state, target, "mine").unwrap_err().code(), "self_approval_forbidden");
    assert_eq!(adjustment::decide_reject(&state, user(8), " ").unwrap_err().code(), "validation_failed");
    // The proposer may withdraw their own proposal: it moves nothing.
    let rejected = adjustment::decide_reject(&state, proposer, "typo").unwrap();
    assert!(matches!(&rejected[..], [Event::AdjustmentRejected(r)] if r.rejected_by == proposer && r.coins == -50_000));
    assert!(rejected.iter().all(|e| e.ledger_commit().is_none()));
    let after = adjustment::evolve(None, &rejected[0]);
    assert_eq!(after.as_ref().map(|a| a.status), Some(AdjustmentStatus::Rejected));
    let ledger = ledger::initial_state(target);
    assert_eq!(adjustment::decide_approve(&after, &ledger, user(8)).unwrap_err().code(), "adjustment_not_proposed");
}

#[test]
fn four_eyes_refusals_before_and_at_approval() {
    let (target, proposer) = (user(1), user(9));
    // Nobody proposes an adjustment of their own wallet.
    assert_eq!(
        adjustment::decide_propose(&None, &propose(72, proposer, 20_000, proposer)).unwrap_err().code(),
        "self_approval_forbidden"
    );
    for coins in [0, ledger::ADJUSTMENT_COINS_MAX + 1] {
        let refused = adjustment::decide_propose(&None, &propose(72, target, coins, proposer)).unwrap_err();
        assert_eq!(refused.code(), "validation_failed");
    }
    let proposed = adjustment::decide_propose(&None, &propose(72, target, -20_000, proposer)).unwrap();
    let state = evolve_all(None, &proposed);
    // The same id again is a conflict.
    assert_eq!(adjustment::decide_propose(&state, &propose(72, target, 5, proposer)).unwrap_err().code(), "conflict");
    // A debit is checked against the wallet as it is at approval.
    let empty = ledger::initial_state(target);
    assert_eq!(adjustment::decide_approve(&state, &empty, user(8)).unwrap_err().code(), "insufficient_funds");
    // An unknown proposal.
    assert_eq!(adjustment::decide_approve(&None, &empty, user(8)).unwrap_err().code(), "not_found");
    assert_eq!(adjustment::decide_reject(&None, user(8), "x").unwrap_err().code(), "not_found");
}

// Earnings maturity: the clock arrives in the commands (a gift's time, a
// payout request's time); the state keeps hourly buckets within the hold.

const HOLD_HOURS: i64 = 72;

/// A time in seconds since the Unix epoch (the maturity tests put gifts on
/// and off whole hours).
fn ts(unix_s: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(unix_s, 0).expect("a valid time")
}
const HOUR_S: i64 = 3600;

fn held_gift(position: u64, sent_s: i64, coins: i64, hold_hours: i64) -> GiftToCredit {
    GiftToCredit {
        source_position: position,
        viewer_id: user(3),
        stream_id: user(900),
        coins,
        host_share_bps: 7000,
        sent_at: ts(sent_s),
        matures_at: ts(sent_s + hold_hours * HOUR_S),
    }
}

fn payout_ts(payout: u128, coins: i64, now_s: i64) -> LedgerCommand {
    LedgerCommand::RequestPayout {
        payout_id: user(500 + payout),
        coins,
        destination: "acct_1".into(),
        policy: policy(),
        requested_at: ts(now_s),
    }
}

fn credit(gifts: Vec<GiftToCredit>) -> LedgerCommand {
    LedgerCommand::CreditGifts { gifts }
}

#[test]
fn a_gift_exactly_the_hold_old_is_payable_and_a_second_younger_is_not() {
    let host = user(2);
    let t = 1_000 * HOUR_S; // on the hour
    let spec = || ledger_of(host).given(&[credit(vec![held_gift(10, t, 10_000, HOLD_HOURS)])]);
    let state = spec().state;
    assert_eq!(state.snapshot.earnings_coins, 7_000);
    assert_eq!(ledger::earnings_available(&state.snapshot, ts(t)), 0);
    assert_eq!(ledger::earnings_available(&state.snapshot, ts(t + HOLD_HOURS * HOUR_S - 1)), 0);
    assert_eq!(ledger::earnings_available(&state.snapshot, ts(t + HOLD_HOURS * HOUR_S)), 7_000);
    spec().when(payout_ts(1, 1_000, t + HOLD_HOURS * HOUR_S - 1)).then_error("insufficient_earnings");
    let event = spec().when(payout_ts(1, 7_000, t + HOLD_HOURS * HOUR_S)).then_event();
    assert_eq!(commit(&event).state_after.maturing, vec![], "what matured leaves the state");

    // A gift one second past the hour matures at the next whole hour: up
    // to an hour late, never early.
    let late = ledger_of(host).given(&[credit(vec![held_gift(10, t + 1, 10_000, HOLD_HOURS)])]);
    let end = t + 1 + HOLD_HOURS * HOUR_S;
    assert_eq!(ledger::earnings_available(&late.state.snapshot, ts(end)), 0);
    assert_eq!(ledger::earnings_available(&late.state.snapshot, ts(t + (HOLD_HOURS + 1) * HOUR_S)), 7_000);
    // A hold of zero: payable at once, and nothing is kept.
    let at_once = ledger_of(host).given(&[credit(vec![held_gift(10, t + 1, 10_000, 0)])]);
    assert!(at_once.state.snapshot.maturing.is_empty());
    at_once.when(payout_ts(1, 7_000, t + 1)).then_event();
}

#[test]
fn payouts_racing_gifts_take_only_matured_earnings() {
    let host = user(2);
    let t = 2_000 * HOUR_S;
    // An old gift has matured; a new one lands just before the request.
    let spec = || {
        ledger_of(host).given(&[
            credit(vec![held_gift(10, t, 10_000, HOLD_HOURS)]),
            credit(vec![held_gift(20, t + HOLD_HOURS * HOUR_S + 10, 100_000, HOLD_HOURS)]),
        ])
    };
    let now = t + HOLD_HOURS * HOUR_S + 11;
    assert_eq!(spec().state.snapshot.earnings_coins, 77_000);
    spec().when(payout_ts(1, 7_001, now)).then_error("insufficient_earnings");
    let requested = spec().when(payout_ts(1, 7_000, now)).then_event();
    assert_eq!(balances(&requested), (0, 70_000, 7_000));
    // A second request at the same moment finds nothing more matured.
    let after = spec().given(&[payout_ts(1, 7_000, now)]);
    after.when(payout_ts(2, 1_000, now)).then_error("insufficient_earnings");
    // A gift credited after the request does not change what was held; it
    // matures on its own clock.
    let later = spec().given(&[payout_ts(1, 7_000, now), credit(vec![held_gift(30, now + 5, 10_000, HOLD_HOURS)])]);
    let snap = &later.state.snapshot;
    assert_eq!((snap.earnings_coins, snap.held_coins), (77_000, 7_000));
    assert_eq!(ledger::earnings_available(snap, ts(now + 6)), 0);
    assert_eq!(ledger::earnings_available(snap, ts(now + (HOLD_HOURS + 1) * HOUR_S)), 77_000);
    // A rejected payout gives back matured coins: payable again at once.
    let rejected = spec()
        .given(&[payout_ts(1, 7_000, now)])
        .given(&[LedgerCommand::RejectPayout { payout_id: user(501), reason: "kyc".into() }]);
    assert_eq!(ledger::earnings_available(&rejected.state.snapshot, ts(now)), 7_000);
}

/// A million gifts, one every ten seconds for four months, credited in
/// batches as the reactor does: the state never holds more than the hold's
/// hours of buckets (73 for 72 hours), and what is payable is exactly the
/// host's share of the gifts at least the hold old (on the hour).
#[test]
fn the_maturity_state_stays_bounded_under_a_million_gifts() {
    let host = user(2);
    let mut state = ledger::initial_state(host);
    let gifts_total: u64 = 1_000_000;
    let batch: u64 = 10_000;
    let start = 3_000 * HOUR_S;
    let mut sent: Vec<(i64, i64)> = Vec::new(); // (matures at, host coins), for the exact check
    for first in (1..=gifts_total).step_by(usize::try_from(batch).expect("small")) {
        let gifts: Vec<GiftToCredit> = (first..first + batch)
            .map(|p| held_gift(p, start + 10 * i64::try_from(p).expect("small"), 10, HOLD_HOURS))
            .collect();
        let last_sent = gifts.last().map(|g| g.sent_at).expect("a gift");
        sent.extend(gifts.iter().map(|g| (g.matures_at.timestamp(), 7)));
        let events = ledger::decide(&state, &credit(gifts)).expect("credited");
        for event in &events {
            ledger::check_commit(&state, event).expect("every invariant");
            state = ledger::evolve(state, event);
        }
        let buckets = state.snapshot.maturing.len();
        assert!(buckets <= usize::try_from(HOLD_HOURS + 1).expect("small"), "{buckets} buckets");
        // Exactly what has matured by the whole hour at or after its end.
        let now = last_sent.timestamp();
        let exact: i64 = sent
            .iter()
            .filter(|(m, _)| m.div_euclid(HOUR_S) * HOUR_S + if m % HOUR_S == 0 { 0 } else { HOUR_S } <= now)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(ledger::earnings_available(&state.snapshot, last_sent), exact);
    }
    assert_eq!(state.snapshot.earnings_coins, 7_000_000);
    let encoded = serde_json::to_vec(&state.snapshot).expect("json");
    assert!(encoded.len() < 4_096, "the carried state stays small: {} bytes", encoded.len());
}

#[test]
fn a_hold_longer_than_the_buckets_merges_late_never_early() {
    let host = user(2);
    let hold = 24 * 366; // a year: more hours than buckets
    let mut state = ledger::initial_state(host);
    let start = 4_000 * HOUR_S;
    for hour in 0..400u64 {
        let g = held_gift(hour + 1, start + i64::try_from(hour).expect("small") * HOUR_S, 100, hold);
        let events = ledger::decide(&state, &credit(vec![g])).expect("credited");
        ledger::check_commit(&state, &events[0]).expect("every invariant");
        state = ledger::evolve(state, &events[0]);
        assert!(state.snapshot.maturing.len() <= ledger::MATURING_BUCKETS_MAX);
    }
    let first_matures = start + hold * HOUR_S;
    // Never early: nothing before the first gift's hold ends.
    assert_eq!(ledger::earnings_available(&state.snapshot, ts(first_matures - 1)), 0);
    // Everything once the last gift's hold ends.
    let last_matures = start + 399 * HOUR_S + hold * HOUR_S;
    assert_eq!(ledger::earnings_available(&state.snapshot, ts(last_matures)), 28_000);
}
