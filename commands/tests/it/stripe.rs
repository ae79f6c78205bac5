//! Stripe events against a real server, in single appends: the record, the
//! payment's decision, its posting on the buyer's ledger, its mark. A crash
//! between any two steps is completed by the next delivery, exactly once,
//! and racing deliveries credit once.

use commands::handler::{Commands, ledger_subject, payment_subject, stripe_event_subject};
use commands::log::{AppendRequest, EventLog};
use commands::testing::stripe::{confirm_500_coins as confirm, recorded as record};
use domain::ledger::LedgerCommand;
use domain::payment::{self, PaymentCommand};
use events_schema::{Actor, Envelope, Event};
use uuid::Uuid;

use crate::support::{Spy, SpyLog};
use crate::world::{World, admin, config, ctx, register_user};

fn refund(event_id: &str, amount_refunded_cents: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund { stripe_event_id: event_id.into(), charge_amount_cents: 499, amount_refunded_cents }
}

async fn deliver(c: &Commands, event_id: &str, payment_id: &str, command: PaymentCommand) -> (u64, bool, Vec<Event>) {
    let event_type = match command {
        PaymentCommand::RecordRefund { .. } => "charge.refunded",
        _ => "payment_intent.succeeded",
    };
    let outcome = c
        .stripe_event(record(event_id, event_type), Some((payment_id.to_string(), command)))
        .await
        .unwrap_or_else(|e| panic!("{event_id} handled: {e}"));
    (outcome.position, outcome.recorded, outcome.events.into_iter().map(|e| e.event).collect())
}

/// Appends `event` on `subject` as a run of the handler would, then dies:
/// nothing follows it.
async fn append_alone(world: &World, subject: &str, event: Event) -> u64 {
    commands::testing::append_alone(&world.log, subject, event, Actor::stripe("evt_crashed")).await.expect("appended")
}

/// The payment's state as its last message gives it.
async fn payment_state(world: &World, payment_id: &str) -> payment::PaymentState {
    let last = world.log.last_on_subject(&payment_subject(payment_id)).await.expect("last").expect("a payment");
    let envelope = Envelope::decode(&last.payload).expect("decodes");
    payment::at(payment::evolve(payment::initial_state(payment_id), &envelope.event), last.position)
}

/// The decision of `command` on the payment as stored, appended alone.
async fn decide_alone(world: &World, payment_id: &str, command: PaymentCommand) -> u64 {
    let state = match world.log.last_on_subject(&payment_subject(payment_id)).await.expect("last") {
        None => payment::initial_state(payment_id),
        Some(_) => payment_state(world, payment_id).await,
    };
    let events = payment::decide(&state, &command).expect("decided");
    let [event] = &events[..] else { panic!("one decision: {events:?}") };
    append_alone(world, &payment_subject(payment_id), event.clone()).await
}

/// Every ledger commit posting `payment_id`, as (position, source position, coins).
async fn postings(world: &World, payment_id: &str) -> Vec<(u64, u64, i64)> {
    world
        .read_all()
        .await
        .into_iter()
        .filter_map(|(position, e)| match e.event {
            Event::CoinsPurchased(p) if p.payment_id == payment_id => Some((position, p.source_position, p.coins)),
            Event::PurchaseRefunded(r) if r.payment_id == payment_id => Some((position, r.source_position, -r.coins)),
            _ => None,
        })
        .collect()
}

async fn wallet(world: &World, user: Uuid) -> i64 {
    world.commands.ledger_state(user).await.expect("ledger").0.snapshot.wallet_coins
}

#[tokio::test]
async fn a_decision_appended_but_not_posted_is_posted_once_by_the_next_delivery() {
    let world = World::start().await;
    let c = &world.commands;
    let ann = register_user(&world, "ann").await;
    // The first delivery recorded the event and decided, then died.
    append_alone(&world, &stripe_event_subject("evt_1"), Event::StripeEventRecorded(record("evt_1", "x"))).await;
    let decision = decide_alone(&world, "pi_1", confirm("evt_1", ann)).await;
    assert_eq!(wallet(&world, ann).await, 0);
    assert!(payment::pending(&payment_state(&world, "pi_1").await).is_some());

    // Stripe delivers it again: a repeat, which completes the decision.
    let (position, recorded, events) = deliver(c, "evt_1", "pi_1", confirm("evt_1", ann)).await;
    assert!(!recorded, "a repeat");
    assert!(matches!(&events[..], [Event::CoinsPurchased(_), Event::PaymentPosted(_)]), "{events:?}");
    assert_eq!(position, world.last_position().await, "the answer's position is the mark's");
    assert_eq!(postings(&world, "pi_1").await.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(), [(decision, 500)]);
    let state = payment_state(&world, "pi_1").await;
    assert_eq!((payment::pending(&state), payment::posted_position(&state)), (None, decision));
    assert_eq!(wallet(&world, ann).await, 500);

    // Again, and the other confirmation: nothing more.
    let before = world.last_position().await;
    let (position, _, events) = deliver(c, "evt_1", "pi_1", confirm("evt_1", ann)).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(position, before, "a repeat answers the payment's last position");
    let (_, recorded, events) = deliver(c, "evt_2", "pi_1", confirm("evt_2", ann)).await;
    assert!(recorded);
    assert!(matches!(&events[..], [Event::StripeEventRecorded(_)]), "{events:?}");
    assert_eq!(postings(&world, "pi_1").await.len(), 1);
    assert_eq!(wallet(&world, ann).await, 500);
}

#[tokio::test]
async fn a_pending_decision_is_completed_by_a_delivery_of_another_event_first() {
    let world = World::start().await;
    let c = &world.commands;
    let bob = register_user(&world, "bob").await;
    // The purchase was decided, not posted; then a refund arrives.
    let decision = decide_alone(&world, "pi_2", confirm("evt_p", bob)).await;
    let (_, recorded, events) = deliver(c, "evt_r", "pi_2", refund("evt_r", 100)).await;
    assert!(recorded);
    let kinds: Vec<&str> = events.iter().map(Event::type_name).collect();
    assert_eq!(
        kinds,
        [
            "stripe.event_recorded",
            "ledger.coins_purchased",
            "payment.posted",
            "payment.refund_recorded",
            "ledger.purchase_refunded",
            "payment.posted"
        ]
    );
    let found = postings(&world, "pi_2").await;
    assert_eq!(found.iter().map(|p| p.2).collect::<Vec<_>>(), [500, -101]);
    assert_eq!(found[0].1, decision);
    assert_eq!(wallet(&world, bob).await, 399);
}

#[tokio::test]
async fn a_posting_not_marked_is_found_on_the_ledger_and_not_posted_again() {
    let world = World::start().await;
    let c = &world.commands;
    let cara = register_user(&world, "cara").await;
    // The first delivery recorded, decided and posted, then died before
    // the mark; the buyer's ledger moved on since (two adjustments).
    append_alone(&world, &stripe_event_subject("evt_3"), Event::StripeEventRecorded(record("evt_3", "x"))).await;
    let decision = decide_alone(&world, "pi_3", confirm("evt_3", cara)).await;
    let posting = payment::pending(&payment_state(&world, "pi_3").await).expect("pending");
    let (ledger, _) = c.ledger_state(cara).await.expect("ledger");
    let commit = payment::post(&posting, &ledger).expect("a commit").remove(0);
    let posted_at = append_alone(&world, &ledger_subject(cara), commit).await;
    for n in 1..=2 {
        let adjust = LedgerCommand::Adjust { coins: n, reason: "goodwill".into(), admin_id: admin() };
        c.ledger(&ctx(admin(), &format!("adjust-{n}")), cara, adjust).await.expect("adjusted");
    }
    assert_eq!(wallet(&world, cara).await, 503);

    // The repeat finds the posting, marks it, posts nothing.
    let (_, recorded, events) = deliver(c, "evt_3", "pi_3", confirm("evt_3", cara)).await;
    assert!(!recorded);
    let [Event::PaymentPosted(mark)] = &events[..] else { panic!("only the mark: {events:?}") };
    assert_eq!((mark.posted_position, mark.ledger_position), (decision, posted_at));
    assert_eq!(postings(&world, "pi_3").await, [(posted_at, decision, 500)]);
    assert_eq!(wallet(&world, cara).await, 503);
    let (_, _, events) = deliver(c, "evt_3", "pi_3", confirm("evt_3", cara)).await;
    assert!(events.is_empty(), "{events:?}");

    // Refunds go on from there.
    deliver(c, "evt_3r", "pi_3", refund("evt_3r", 499)).await;
    assert_eq!(wallet(&world, cara).await, 3);
    assert_eq!(postings(&world, "pi_3").await.iter().map(|p| p.2).sum::<i64>(), 0);
}

#[tokio::test]
async fn concurrent_deliveries_of_both_purchase_events_credit_once() {
    let world = World::start().await;
    let dan = register_user(&world, "dan").await;
    // A refund seen first, so that settling races too.
    deliver(&world.commands, "evt_4r", "pi_4", refund("evt_4r", 250)).await;
    let deliveries = (0..16).map(|i| {
        let c = world.commands.clone();
        let event_id = if i % 2 == 0 { "evt_4s" } else { "evt_4i" };
        tokio::spawn(async move { deliver(&c, event_id, "pi_4", confirm(event_id, dan)).await })
    });
    let answers: Vec<_> =
        futures_util::future::join_all(deliveries).await.into_iter().map(|r| r.expect("ran")).collect();
    assert_eq!(answers.iter().filter(|(_, recorded, _)| *recorded).count(), 2, "each event id recorded once");
    let found = postings(&world, "pi_4").await;
    // ceil(500 * 250 / 499) = 251, reversed once.
    assert_eq!(found.iter().map(|p| p.2).collect::<Vec<_>>(), [500, -251], "{found:?}");
    let mut sources: Vec<u64> = found.iter().map(|p| p.1).collect();
    sources.dedup();
    assert_eq!(sources.len(), 2, "each decision posted once");
    let everything = world.read_all().await;
    let count = |name: &str| everything.iter().filter(|(_, e)| e.event.type_name() == name).count();
    assert_eq!(count("payment.purchase_credited"), 1);
    assert_eq!(count("payment.posted"), 2);
    assert_eq!(payment::pending(&payment_state(&world, "pi_4").await), None);
    assert_eq!(wallet(&world, dan).await, 249);
    // Every answer's position shows the coins.
    let last_answer = answers.iter().map(|(p, _, _)| *p).max().unwrap_or(0);
    assert!(last_answer >= found.iter().map(|p| p.0).max().unwrap_or(0));
}

#[tokio::test]
async fn a_subject_reads_from_a_position_skipping_other_subjects() {
    let world = World::start().await;
    let mut positions = Vec::new();
    for n in 0..7u64 {
        let subject = if n % 2 == 0 { "hb.test.a" } else { "hb.test.b" };
        let expected = world.log.last_on_subject(subject).await.expect("last").map_or(0, |m| m.position);
        let request = AppendRequest {
            subject: subject.into(),
            payload: format!("{n}").into(),
            msg_id: Some(Uuid::now_v7().to_string()),
            expected_last_subject_seq: expected,
        };
        positions.push((subject, world.log.append(request).await.expect("appended").position));
    }
    let on_a: Vec<u64> = positions.iter().filter(|(s, _)| *s == "hb.test.a").map(|(_, p)| *p).collect();
    assert_eq!(read_a(&world, 0, 100).await, on_a);
    assert_eq!(read_a(&world, on_a[1], 100).await, on_a[1..]);
    assert_eq!(read_a(&world, on_a[1] + 1, 1).await, on_a[2..3]);
    assert_eq!(read_a(&world, on_a[3] + 1, 10).await, Vec::<u64>::new());
}

async fn read_a(world: &World, from: u64, max: u32) -> Vec<u64> {
    let messages = world.log.read_subject_from("hb.test.a", from, max).await.expect("read");
    assert!(messages.iter().all(|m| m.subject == "hb.test.a"));
    messages.into_iter().map(|m| m.position).collect()
}

#[tokio::test]
async fn racing_completions_of_one_pending_decision_post_it_once() {
    let world = World::start().await;
    let eve = register_user(&world, "eve").await;
    for round in 0..5 {
        let payment_id = format!("pi_5_{round}");
        let event_id = format!("evt_5_{round}");
        // A decision left pending, and other commits on the ledger after
        // it, so that the completers both race and look through the ledger.
        let decision = decide_alone(&world, &payment_id, confirm(&event_id, eve)).await;
        let adjust = LedgerCommand::Adjust { coins: 1, reason: "goodwill".into(), admin_id: admin() };
        world.commands.ledger(&ctx(admin(), &format!("adjust-5-{round}")), eve, adjust).await.expect("adjusted");
        let completions = (0..8).map(|_| {
            let c = world.commands.clone();
            let (payment_id, event_id) = (payment_id.clone(), event_id.clone());
            tokio::spawn(async move { deliver(&c, &event_id, &payment_id, confirm(&event_id, eve)).await })
        });
        for answer in futures_util::future::join_all(completions).await {
            answer.expect("ran");
        }
        let found = postings(&world, &payment_id).await;
        assert_eq!(found.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(), [(decision, 500)], "round {round}");
        assert_eq!(payment::pending(&payment_state(&world, &payment_id).await), None);
    }
    assert_eq!(wallet(&world, eve).await, 5 * 501);
}

/// A Stripe purchase moves the buyer's ledger outside the commands' own
/// appends: the handler keeps its view of the ledger in step, so the
/// buyer's next gift is decided once, with no conflict.
#[tokio::test]
async fn a_stripe_credit_keeps_the_handlers_view_of_the_ledger() {
    let world = World::start().await;
    let spy = std::sync::Arc::new(SpyLog::new(world.log.clone(), Spy::default()));
    let c = Commands::new(spy.clone(), config());
    let ann = register_user(&world, "ann").await;
    let stream = world.start_stream(Uuid::now_v7()).await;
    // The handler has the ledger in view: its own last append.
    c.ledger(
        &ctx(ann, "buy"),
        ann,
        LedgerCommand::PurchaseCoins { payment_id: "pi_0".into(), coins: 10, source_position: 0 },
    )
    .await
    .expect("bought");

    let (_, recorded, events) = deliver(&c, "evt_1", "pi_1", confirm("evt_1", ann)).await;
    assert!(recorded);
    assert!(events.iter().any(|e| matches!(e, Event::CoinsPurchased(_))), "{events:?}");
    // Acceptable on the ledger before the purchase too: a stale view would
    // be caught only by the append's expected position.
    let gift = c.send_gift(&ctx(ann, "g1"), ann, stream, "rose".into(), 1, 5).await.expect("sent");
    assert!(!gift.repeated);

    assert_eq!(spy.watch().conflicts(), 0, "decided once, on the ledger as the purchase left it");
    assert_eq!(wallet(&world, ann).await, 10 + 500 - 5);
}
