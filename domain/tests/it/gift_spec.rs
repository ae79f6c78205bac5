//! A gift, on the viewer's side.

use domain::gift::{self, GIFT_QUANTITY_MAX, GiftState, SendGift};
use domain::ledger::{self, LedgerCommand, LedgerState};
use domain::stream::StreamState;
use events_schema::{Account, Event, StreamSnapshot, StreamStatus};
use uuid::Uuid;

use crate::spec::*;

fn viewer_with(coins: i64) -> LedgerState {
    ledger_of(user(1))
        .given(&[LedgerCommand::PurchaseCoins { payment_id: "pi".into(), coins, source_position: 0 }])
        .state
}

fn stream(host: Uuid, status: StreamStatus) -> StreamState {
    Some(StreamSnapshot { host_id: host, status, started_at: at(0) })
}

fn send(quantity: i64, unit_coins: i64) -> SendGift {
    SendGift { stream_id: user(700), gift_id: "rose".into(), quantity, unit_coins, host_share_bps: 7000 }
}

fn when(viewer: &LedgerState, stream: &StreamState, command: SendGift) -> Result<Vec<Event>, String> {
    gift::decide(GiftState { viewer, stream }, &command).map_err(|e| e.code().to_string())
}

#[test]
fn a_gift_to_a_live_stream_moves_coins_from_the_wallet_to_transit() {
    let viewer = viewer_with(100);
    let host = user(2);
    let events = when(&viewer, &stream(host, StreamStatus::Live), send(3, 10)).expect("accepted");
    let [event] = events.as_slice() else { panic!("one event") };
    ledger::check_commit(&viewer, event).expect("invariants hold");
    assert_eq!(transfers(event), vec![(Account::Wallet(user(1)), Account::TransitGifts, 30)]);
    assert_eq!(balances(event), (70, 0, 0));
    let Event::GiftSent(sent) = event else { panic!("gift sent") };
    assert_eq!((sent.host_id, sent.coins, sent.quantity, sent.host_share_bps), (host, 30, 3, 7000));
}

#[test]
fn a_gift_beyond_the_wallet_is_rejected() {
    assert_eq!(
        when(&viewer_with(29), &stream(user(2), StreamStatus::Live), send(3, 10)),
        Err("insufficient_funds".into())
    );
}

#[test]
fn a_gift_to_an_ended_or_unknown_stream_is_rejected() {
    let viewer = viewer_with(100);
    assert_eq!(when(&viewer, &stream(user(2), StreamStatus::Ended), send(1, 10)), Err("stream_not_live".into()));
    assert_eq!(when(&viewer, &None, send(1, 10)), Err("not_found".into()));
}

#[test]
fn a_host_cannot_gift_their_own_stream() {
    assert_eq!(
        when(&viewer_with(100), &stream(user(1), StreamStatus::Live), send(1, 10)),
        Err("self_gift_forbidden".into())
    );
}

#[test]
fn zero_negative_and_huge_quantities_are_rejected() {
    let viewer = viewer_with(100);
    let live = stream(user(2), StreamStatus::Live);
    for quantity in [0, -1, GIFT_QUANTITY_MAX + 1, i64::MAX] {
        assert_eq!(when(&viewer, &live, send(quantity, 10)), Err("validation_failed".into()), "quantity {quantity}");
    }
    assert_eq!(when(&viewer, &live, send(1, 0)), Err("validation_failed".into()));
    assert_eq!(when(&viewer, &live, send(2, i64::MAX)), Err("amount_out_of_range".into()));
    let empty_id = SendGift { gift_id: String::new(), ..send(1, 10) };
    assert_eq!(when(&viewer, &live, empty_id), Err("validation_failed".into()));
}
