//! decide+evolve for one gift and for a host credit batch of 1,000 gifts,
//! with and without sealing (canonical encoding and SHA-256 of the commit).
//!
//! Run: `cargo bench -p domain --bench decide`. Goals: a gift under 2 µs,
//! a batch of 1,000 under 1 ms.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use domain::Loaded;
use domain::gift::{self, GiftState, SendGift};
use domain::ledger::{self, GiftToCredit, LedgerCommand};
use events_schema::{Actor, EventMeta, StreamSnapshot, StreamStatus};
use uuid::Uuid;

const ROUNDS: usize = 7;

/// Runs `f` repeatedly for about `budget` per round and returns the median
/// nanoseconds per call over the rounds.
fn measure(name: &str, budget: Duration, mut f: impl FnMut()) -> u128 {
    let mut per_call = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let mut calls: u64 = 0;
        while started.elapsed() < budget {
            f();
            calls += 1;
        }
        per_call.push(started.elapsed().as_nanos() / u128::from(calls));
    }
    per_call.sort_unstable();
    let median = per_call[ROUNDS / 2];
    println!("{name:<44} {median:>12} ns/op  (min {}, max {})", per_call[0], per_call[ROUNDS - 1]);
    median
}

fn main() {
    let viewer_id = Uuid::from_u128(1);
    let host_id = Uuid::from_u128(2);
    let started_at = Utc.timestamp_opt(1_750_000_000, 0).single().expect("a time");
    let stream = Some(StreamSnapshot { host_id, status: StreamStatus::Live, started_at });
    let viewer = {
        let s = ledger::initial_state(viewer_id);
        let events = ledger::decide(
            &s,
            &LedgerCommand::PurchaseCoins { payment_id: "pi".into(), coins: 1_000_000_000, source_position: 0 },
        )
        .expect("purchase");
        events.iter().fold(s, ledger::evolve)
    };
    let send = SendGift {
        stream_id: Uuid::from_u128(3),
        gift_id: "rose".into(),
        quantity: 1,
        unit_coins: 10,
        host_share_bps: 7000,
    };
    let meta = EventMeta {
        event_id: Uuid::from_u128(9),
        occurred_at: started_at,
        command_id: "cmd".into(),
        correlation_id: "corr".into(),
        actor: Actor::user(viewer_id),
    };
    let budget = Duration::from_millis(300);

    let gift_ns = measure("gift: decide+evolve", budget, || {
        let events = gift::decide(GiftState { viewer: &viewer, stream: &stream }, black_box(&send)).expect("accepted");
        black_box(events.iter().fold(viewer.clone(), ledger::evolve));
    });
    let loaded_viewer = Loaded::new(viewer.clone());
    let gift_sealed_ns = measure("gift: decide+seal+evolve", budget, || {
        let events = gift::decide(GiftState { viewer: &viewer, stream: &stream }, black_box(&send)).expect("accepted");
        let mut l = loaded_viewer.clone();
        for e in events {
            let envelope = l.seal(&meta, e);
            l = l.apply(&envelope, ledger::evolve);
        }
        black_box(l);
    });

    let host = ledger::initial_state(host_id);
    let gifts: Vec<GiftToCredit> = (1..=1000u64)
        .map(|i| GiftToCredit {
            source_position: i,
            viewer_id: Uuid::from_u128(100 + u128::from(i % 50)),
            stream_id: Uuid::from_u128(3),
            coins: 10 + (i as i64 % 7),
            host_share_bps: 7000,
            sent_at: Default::default(),
            matures_at: Default::default(),
        })
        .collect();
    let credit = LedgerCommand::CreditGifts { gifts };
    let batch_ns = measure("credit batch of 1,000: decide+evolve", budget, || {
        let events = ledger::decide(&host, black_box(&credit)).expect("accepted");
        black_box(events.iter().fold(host.clone(), ledger::evolve));
    });
    let loaded_host = Loaded::new(host.clone());
    let batch_sealed_ns = measure("credit batch of 1,000: decide+seal+evolve", budget, || {
        let events = ledger::decide(&host, black_box(&credit)).expect("accepted");
        let mut l = loaded_host.clone();
        for e in events {
            let envelope = l.seal(&meta, e);
            l = l.apply(&envelope, ledger::evolve);
        }
        black_box(l);
    });
    println!();
    println!("gift decide+evolve: {} ns (goal < 2000 ns); with sealing {} ns", gift_ns, gift_sealed_ns);
    println!(
        "batch of 1,000 decide+evolve: {} µs (goal < 1000 µs); with sealing {} µs",
        batch_ns / 1000,
        batch_sealed_ns / 1000
    );
}
