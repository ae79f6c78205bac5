//! Projection specifications: given events (sealed with events-schema
//! types), then documents (read back through the port's queries).

use events_schema::{
    Account, ChannelWentLive, CommandRecorded, Event, GiftSent, GiftsReceived, LedgerAdjusted, Money, PayoutApproved,
    PayoutRejected, PayoutRequested, PendingPayout, PurchaseRefunded, ReceivedGift, ReservationClaimed,
    ReservationKind, Role, StreamEnded, StreamSnapshot, StreamStarted, StreamStatus, StripeEventRecorded,
    UserRegistered, UserRolesChanged, UserSnapshot, ViewerJoined, ViewerLeft,
};
use projections::change::Change;
use projections::model::{PayoutStatus, TxStatus, TxType};
use projections::testing::checksum;
use projections::{
    PageRequest, Projection, ProjectionVersion, ReadStore, TransactionFilter, project, runner::project_messages,
};
use uuid::Uuid;

use std::sync::Arc;

use crate::support::{Given, project_all, purchase, transfer};

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn register(given: &mut Given, user: Uuid, name: &str) -> u64 {
    given.event(Event::UserRegistered(UserRegistered {
        user_id: user,
        email: format!("{name}@example.com"),
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec![Role::User],
    }))
}

fn start(given: &mut Given, stream: Uuid, host: Uuid, category: &str) -> u64 {
    let at = crate::support::t0();
    given.event(Event::StreamStarted(StreamStarted {
        stream_id: stream,
        host_id: host,
        title: "Evening set".into(),
        category: category.into(),
        state_after: StreamSnapshot { host_id: host, status: StreamStatus::Live, started_at: at },
    }))
}

fn snapshot(host: Uuid) -> StreamSnapshot {
    StreamSnapshot { host_id: host, status: StreamStatus::Live, started_at: crate::support::t0() }
}

fn gift(given: &mut Given, viewer: Uuid, stream: Uuid, host: Uuid, coins: i64) -> u64 {
    let commit = given.commit(viewer, vec![transfer(Account::Wallet(viewer), Account::TransitGifts, coins)]);
    given.event(Event::GiftSent(GiftSent {
        user_id: viewer,
        stream_id: stream,
        host_id: host,
        gift_id: "rose".into(),
        quantity: coins,
        unit_coins: 1,
        coins,
        host_share_bps: 7_000,
        commit,
    }))
}

pub async fn registered_user_is_found_by_id_and_by_normalised_email(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let p = register(&mut given, id(1), "ada");
    project_all(store.clone(), given.log.clone()).await;

    let user = store.user_by_id(id(1)).await.unwrap().expect("user");
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.username, "ada");
    assert_eq!(user.roles, vec![Role::User]);
    assert_eq!(user.password_hash, "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
    assert_eq!(user.created_at, given.time(p));
    assert_eq!(user.position, p);
    assert_eq!(store.user_by_email("  ADA@Example.com ").await.unwrap(), Some(user));
    assert_eq!(store.user_by_email("bob@example.com").await.unwrap(), None);
}

pub async fn roles_change_replaces_the_roles(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    register(&mut given, id(1), "ada");
    let p = given.event(Event::UserRolesChanged(UserRolesChanged {
        user_id: id(1),
        granted: vec![Role::Finance],
        revoked: vec![],
        state_after: UserSnapshot {
            email: "ada@example.com".into(),
            username: "ada".into(),
            roles: vec![Role::User, Role::Finance],
            sessions_epoch: 0,
        },
    }));
    project_all(store.clone(), given.log.clone()).await;
    let user = store.user_by_id(id(1)).await.unwrap().unwrap();
    assert_eq!(user.roles, vec![Role::User, Role::Finance]);
    assert_eq!(user.position, p);
}

pub async fn purchase_makes_wallet_transaction_stripe_payment_and_two_entries(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let u = id(1);
    let p1 = purchase(&mut given, u, "pi_1", 500);
    let p2 = purchase(&mut given, u, "pi_2", 100);
    project_all(store.clone(), given.log.clone()).await;

    let wallet = store.wallet(u).await.unwrap().unwrap();
    assert_eq!((wallet.coins, wallet.earnings, wallet.held, wallet.position), (600, 0, 0, p2));

    let txs = store.transactions(u, TransactionFilter::default(), &PageRequest::default()).await.unwrap();
    assert_eq!(txs.next_cursor, None);
    assert_eq!(txs.items.len(), 2);
    let newest = &txs.items[0];
    assert_eq!((newest.kind, newest.status, newest.coins), (TxType::Purchase, TxStatus::Completed, 100));
    assert_eq!(newest.metadata.payment_id.as_deref(), Some("pi_2"));
    assert_eq!(newest.id, given.envelope(p2).header.event_id);
    assert_eq!((newest.wallet_after, newest.position), (600, p2));
    assert_eq!(txs.items[1].position, p1);

    let payment = store.stripe_payment("pi_1").await.unwrap().unwrap();
    assert_eq!((payment.user_id, payment.coins_issued, payment.coins_reversed), (Some(u), 500, 0));

    let stripe = store.ledger_entries(Account::ExternalStripe, &PageRequest::default()).await.unwrap();
    let balances: Vec<(u64, i64, i64)> = stripe.items.iter().map(|e| (e.position, e.coins, e.balance_after)).collect();
    assert_eq!(balances, vec![(p2, -100, -600), (p1, -500, -500)]);
    let wallet_entries = store.ledger_entries(Account::Wallet(u), &PageRequest::default()).await.unwrap();
    assert_eq!(wallet_entries.items[0].balance_after, 600);
    assert_eq!(wallet_entries.items[0].counterparty, Account::ExternalStripe);
}

pub async fn checkout_session_reaches_the_purchase_whichever_is_recorded_first(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let u = id(1);
    let session = |payment: &str, session: &str| {
        Event::StripeEventRecorded(StripeEventRecorded {
            stripe_event_id: format!("evt_{session}"),
            stripe_event_type: "checkout.session.completed".into(),
            stripe_created: 1_767_225_600,
            body: serde_json::json!({"type": "checkout.session.completed",
                "data": {"object": {"id": session, "payment_intent": payment}}})
            .to_string(),
        })
    };
    // Session first, then the purchase; and the other way round.
    given.event(session("pi_1", "cs_1"));
    purchase(&mut given, u, "pi_1", 500);
    purchase(&mut given, u, "pi_2", 100);
    given.event(session("pi_2", "cs_2"));
    project_all(store.clone(), given.log.clone()).await;

    let txs = store.transactions(u, TransactionFilter::default(), &PageRequest::default()).await.unwrap();
    let sessions: Vec<Option<&str>> = txs.items.iter().map(|t| t.metadata.stripe_session_id.as_deref()).collect();
    assert_eq!(sessions, vec![Some("cs_2"), Some("cs_1")]);
    assert_eq!(store.stripe_payment("pi_2").await.unwrap().unwrap().stripe_session_id.as_deref(), Some("cs_2"));
}

pub async fn refund_reverses_coins_and_may_drive_the_wallet_negative(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let (u, host, stream) = (id(1), id(2), id(3));
    purchase(&mut given, u, "pi_1", 100);
    start(&mut given, stream, host, "music");
    gift(&mut given, u, stream, host, 80);
    let commit = given.commit(u, vec![transfer(Account::Wallet(u), Account::ExternalStripe, 100)]);
    let p = given.event(Event::PurchaseRefunded(PurchaseRefunded {
        user_id: u,
        payment_id: "pi_1".into(),
        coins: 100,
        source_position: 0,
        commit,
    }));
    project_all(store.clone(), given.log.clone()).await;
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, -80);
    let payment = store.stripe_payment("pi_1").await.unwrap().unwrap();
    assert_eq!((payment.coins_issued, payment.coins_reversed), (100, 100));
    let filter = TransactionFilter { kind: Some(TxType::Refund), status: None };
    let refunds = store.transactions(u, filter, &PageRequest::default()).await.unwrap();
    assert_eq!(refunds.items.len(), 1);
    assert_eq!((refunds.items[0].coins, refunds.items[0].position), (-100, p));
}

pub async fn gifts_fill_the_stream_the_leaderboard_and_the_host_credit_empties_transit(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let (a, b, host, stream) = (id(1), id(2), id(9), id(100));
    purchase(&mut given, a, "pi_a", 1_000);
    purchase(&mut given, b, "pi_b", 1_000);
    start(&mut given, stream, host, "music");
    let g1 = gift(&mut given, a, stream, host, 10);
    let g2 = gift(&mut given, b, stream, host, 500);
    let g3 = gift(&mut given, a, stream, host, 7);
    // The reactor credits the host: floor(V * 0.7) per gift.
    let gifts = vec![
        ReceivedGift { source_position: g1, viewer_id: a, stream_id: stream, coins: 10, host_coins: 7 },
        ReceivedGift { source_position: g2, viewer_id: b, stream_id: stream, coins: 500, host_coins: 350 },
        ReceivedGift { source_position: g3, viewer_id: a, stream_id: stream, coins: 7, host_coins: 4 },
    ];
    let commit = given.commit_with(
        host,
        vec![
            transfer(Account::TransitGifts, Account::Earnings(host), 361),
            transfer(Account::TransitGifts, Account::PlatformRevenue, 156),
        ],
        |s| s.last_credited_position = g3,
    );
    let credit = given.event(Event::GiftsReceived(GiftsReceived { user_id: host, gifts, commit }));
    project_all(store.clone(), given.log.clone()).await;

    let s = store.stream(stream).await.unwrap().unwrap();
    assert_eq!(s.gifts_coins, 517);
    let board = store.leaderboard(stream, &PageRequest::default()).await.unwrap();
    let board: Vec<(Uuid, i64)> = board.items.iter().map(|e| (e.user_id, e.coins)).collect();
    assert_eq!(board, vec![(b, 500), (a, 17)]);

    let host_wallet = store.wallet(host).await.unwrap().unwrap();
    assert_eq!((host_wallet.coins, host_wallet.earnings, host_wallet.position), (0, 361, credit));
    let host_txs = store.transactions(host, TransactionFilter::default(), &PageRequest::default()).await.unwrap();
    let t = &host_txs.items[0];
    assert_eq!(
        (t.kind, t.coins, t.metadata.gifts_count, t.metadata.stream_id),
        (TxType::GiftReceived, 361, Some(3), Some(stream))
    );
    let viewer_txs = store
        .transactions(a, TransactionFilter { kind: Some(TxType::GiftSent), status: None }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(viewer_txs.items.iter().map(|t| t.coins).collect::<Vec<_>>(), vec![-7, -10]);
    assert_eq!(viewer_txs.items[0].metadata.host_id, Some(host));

    // transit:gifts went 10, 510, 517, then -361 and -156 in one commit.
    let transit = store.ledger_entries(Account::TransitGifts, &PageRequest::default()).await.unwrap();
    let transit: Vec<(u64, u32, i64, i64)> =
        transit.items.iter().map(|e| (e.position, e.seq, e.coins, e.balance_after)).collect();
    assert_eq!(
        transit,
        vec![(credit, 2, -156, 0), (credit, 0, -361, 156), (g3, 1, 7, 517), (g2, 1, 500, 510), (g1, 1, 10, 10)]
    );
    let trial = store.trial_balance(&PageRequest::default()).await.unwrap();
    assert_eq!(trial.total_coins, 0);
    assert_eq!(trial.position, credit);
    let revenue = trial.items.iter().find(|a| a.account == Account::PlatformRevenue).unwrap();
    assert_eq!(revenue.balance, 156);
    let transit = trial.items.iter().find(|a| a.account == Account::TransitGifts).unwrap();
    assert_eq!(transit.balance, 0);
}

pub async fn viewers_are_distinct_viewers_present_and_peak_is_their_maximum(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let (host, stream) = (id(9), id(100));
    start(&mut given, stream, host, "gaming");
    given.event(Event::ChannelWentLive(ChannelWentLive { host_id: host, stream_id: stream }));
    let join = |given: &mut Given, v: u128| {
        given.event(Event::ViewerJoined(ViewerJoined {
            stream_id: stream,
            viewer_id: id(v),
            state_after: snapshot(host),
        }))
    };
    let leave = |given: &mut Given, v: u128| {
        given.event(Event::ViewerLeft(ViewerLeft { stream_id: stream, viewer_id: id(v), state_after: snapshot(host) }))
    };
    join(&mut given, 1);
    join(&mut given, 1); // a second device: still one viewer
    join(&mut given, 2);
    join(&mut given, 3);
    leave(&mut given, 2);
    leave(&mut given, 2); // already gone
    leave(&mut given, 7); // never joined
    project_all(store.clone(), given.log.clone()).await;
    let s = store.stream(stream).await.unwrap().unwrap();
    assert_eq!((s.viewers, s.peak_viewers, s.is_live, s.status), (2, 3, true, StreamStatus::Live));
    assert_eq!(s.start_time, crate::support::t0());
    assert_eq!(s.category, "gaming");
    let live = store.live_streams(None, &PageRequest::default()).await.unwrap();
    assert_eq!(live.items.len(), 1);

    let end = given.event(Event::StreamEnded(StreamEnded {
        stream_id: stream,
        host_id: host,
        ended_by: host,
        state_after: StreamSnapshot { status: StreamStatus::Ended, ..snapshot(host) },
    }));
    join(&mut given, 4); // after the end: counts nobody
    project_all(store.clone(), given.log.clone()).await;
    let s = store.stream(stream).await.unwrap().unwrap();
    assert_eq!((s.viewers, s.peak_viewers, s.is_live, s.status), (0, 3, false, StreamStatus::Ended));
    assert_eq!(s.end_time, Some(given.time(end)));
    assert!(store.live_streams(None, &PageRequest::default()).await.unwrap().items.is_empty());
}

fn payout_events(given: &mut Given, host: Uuid, payout: Uuid, coins: i64) -> u64 {
    let commit =
        given.commit_with(host, vec![transfer(Account::Earnings(host), Account::PayoutHold(host), coins)], |s| {
            s.pending_payouts.push(PendingPayout { payout_id: payout, coins })
        });
    given.event(Event::PayoutRequested(PayoutRequested {
        user_id: host,
        payout_id: payout,
        coins,
        fiat: Money { amount: "12.34".parse().unwrap(), currency: "usd".into() },
        destination: "acct_1".into(),
        commit,
    }))
}

pub async fn payouts_go_from_pending_to_paid_or_rejected_and_their_requests_follow(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let host = id(9);
    let commit = given.commit(host, vec![transfer(Account::PlatformAdjustments, Account::Earnings(host), 5_000)]);
    // An adjustment cannot credit earnings in the domain; a test may, to
    // give the host something to cash out without a stream.
    given.event(Event::LedgerAdjusted(LedgerAdjusted {
        user_id: host,
        coins: 5_000,
        reason: "seed".into(),
        admin_id: id(1),
        commit,
    }));
    let (paid, rejected) = (id(50), id(51));
    let r1 = payout_events(&mut given, host, paid, 1_234);
    payout_events(&mut given, host, rejected, 1_000);
    let commit =
        given.commit_with(host, vec![transfer(Account::PayoutHold(host), Account::ExternalPayouts, 1_234)], |s| {
            s.pending_payouts.retain(|p| p.payout_id != paid)
        });
    let approve = given.event(Event::PayoutApproved(PayoutApproved {
        user_id: host,
        payout_id: paid,
        coins: 1_234,
        external_ref: "po_123".into(),
        commit,
    }));
    project_all(store.clone(), given.log.clone()).await;
    let pending = store.payouts(Some(PayoutStatus::Pending), &PageRequest::default()).await.unwrap();
    assert_eq!(pending.items.iter().map(|p| p.id).collect::<Vec<_>>(), vec![rejected]);
    let p = store.user_payouts(host, &PageRequest::default()).await.unwrap().items;
    let paid_doc = p.iter().find(|p| p.id == paid).unwrap();
    assert_eq!(paid_doc.status, PayoutStatus::Paid);
    assert_eq!(paid_doc.external_ref.as_deref(), Some("po_123"));
    assert_eq!(paid_doc.fiat.amount.to_string(), "12.34");
    assert_eq!(paid_doc.fiat.currency, "usd");
    assert_eq!(paid_doc.requested_at, given.time(r1));
    assert_eq!(paid_doc.settled_at, Some(given.time(approve)));
    let wallet = store.wallet(host).await.unwrap().unwrap();
    assert_eq!((wallet.earnings, wallet.held), (5_000 - 1_234 - 1_000, 1_000));

    let commit =
        given.commit_with(host, vec![transfer(Account::PayoutHold(host), Account::Earnings(host), 1_000)], |s| {
            s.pending_payouts.clear()
        });
    given.event(Event::PayoutRejected(PayoutRejected {
        user_id: host,
        payout_id: rejected,
        coins: 1_000,
        reason: "closed account".into(),
        commit,
    }));
    project_all(store.clone(), given.log.clone()).await;
    assert!(store.payouts(Some(PayoutStatus::Pending), &PageRequest::default()).await.unwrap().items.is_empty());
    let rejected_doc = store.payouts(Some(PayoutStatus::Rejected), &PageRequest::default()).await.unwrap().items;
    assert_eq!(rejected_doc[0].reason.as_deref(), Some("closed account"));
    // The requests' transactions follow their payouts; the net of a
    // user's transactions is their total balance.
    let txs = store.transactions(host, TransactionFilter::default(), &PageRequest::default()).await.unwrap().items;
    let requests: Vec<(Option<Uuid>, TxStatus, i64)> = txs
        .iter()
        .filter(|t| t.kind == TxType::PayoutRequested)
        .map(|t| (t.metadata.payout_id, t.status, t.coins))
        .collect();
    assert_eq!(requests, vec![(Some(rejected), TxStatus::Rejected, 0), (Some(paid), TxStatus::Paid, 0)]);
    let wallet = store.wallet(host).await.unwrap().unwrap();
    assert_eq!(txs.iter().map(|t| t.coins).sum::<i64>(), wallet.coins + wallet.earnings + wallet.held);
    let pending_txs = store
        .transactions(host, TransactionFilter { kind: None, status: Some(TxStatus::Pending) }, &PageRequest::default())
        .await
        .unwrap();
    assert!(pending_txs.items.is_empty());
}

pub async fn events_a_projection_does_not_use_still_move_its_checkpoint(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    given.event(Event::ReservationClaimed(ReservationClaimed {
        kind: ReservationKind::Email,
        value: "ada@example.com".into(),
        user_id: id(1),
    }));
    given.event(Event::ChannelWentLive(ChannelWentLive { host_id: id(9), stream_id: id(100) }));
    let last = given.event(Event::CommandRecorded(CommandRecorded {
        scope: "user:1".into(),
        command_id: "k".into(),
        fingerprint: "f".into(),
        event_count: 1,
        event_positions: Vec::new(),
    }));
    project_all(store.clone(), given.log.clone()).await;
    let checkpoints = store.checkpoints().await.unwrap();
    assert_eq!(checkpoints.len(), Projection::ALL.len());
    assert!(checkpoints.iter().all(|c| c.position == last && c.active), "{checkpoints:?}");
    let sums = checksum(&*store, &ProjectionVersion::all_current()).await.unwrap();
    assert!(sums.collections.values().all(|c| c.documents == 0), "{sums}");
}

pub async fn the_same_event_applied_twice_changes_nothing(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let (u, host, stream) = (id(1), id(9), id(100));
    register(&mut given, u, "ada");
    purchase(&mut given, u, "pi_1", 100);
    start(&mut given, stream, host, "music");
    given.event(Event::ViewerJoined(ViewerJoined { stream_id: stream, viewer_id: u, state_after: snapshot(host) }));
    gift(&mut given, u, stream, host, 30);
    let targets = ProjectionVersion::all_current();
    store.prepare(&targets).await.unwrap();
    let messages = futures_util::future::try_join_all((1..=given.log.len()).map(|p| {
        let log = given.log.clone();
        async move { projections::LogSource::read_from(&*log, p, 1).await.map(|mut m| m.remove(0)) }
    }))
    .await
    .unwrap();
    let zero = vec![0; targets.len()];
    // Each event alone, then each event again: the second time is skipped.
    for m in &messages {
        let batch = project_messages(std::slice::from_ref(m), m.position, &zero, &targets).unwrap();
        store.apply(batch).await.unwrap();
    }
    let before = checksum(&*store, &targets).await.unwrap();
    for m in &messages {
        let batch = project_messages(std::slice::from_ref(m), m.position, &zero, &targets).unwrap();
        let outcome = store.apply(batch.clone()).await.unwrap();
        assert_eq!((outcome.applied, outcome.skipped), (0, batch.changes.len() as u64));
    }
    assert_eq!(checksum(&*store, &targets).await.unwrap(), before);
    let s = store.stream(stream).await.unwrap().unwrap();
    assert_eq!((s.viewers, s.gifts_coins), (1, 30));
}

#[test]
fn postings_of_a_user_carry_balances_walked_back_from_the_state_after() {
    let mut given = Given::new();
    let u = id(1);
    given.commit(u, vec![transfer(Account::ExternalStripe, Account::Wallet(u), 100)]);
    // Two transfers into the same wallet in one commit: 100 -> 130 -> 150.
    let commit = given.commit(
        u,
        vec![
            transfer(Account::PlatformAdjustments, Account::Wallet(u), 30),
            transfer(Account::PlatformAdjustments, Account::Wallet(u), 20),
        ],
    );
    let p = given.event(Event::LedgerAdjusted(LedgerAdjusted {
        user_id: u,
        coins: 50,
        reason: "r".into(),
        admin_id: id(2),
        commit,
    }));
    let mut changes = Vec::new();
    project(Projection::Ledger, &given.envelope(p), p, &mut changes);
    let postings: Vec<(Account, u32, i64, Option<i64>)> = changes
        .iter()
        .map(|c| match c {
            Change::Posting(p) => (p.account, p.seq, p.coins, p.balance_after),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        postings,
        vec![
            (Account::PlatformAdjustments, 0, -30, None),
            (Account::Wallet(u), 1, 30, Some(130)),
            (Account::PlatformAdjustments, 2, -20, None),
            (Account::Wallet(u), 3, 20, Some(150)),
        ]
    );
}

/// The five kinds of coins per UTC day: each from its own transfers, the
/// host's share only, payout requests, rejections and adjustments in none;
/// days summed over several batches; a range reads only its days.
pub async fn daily_totals_count_each_kind_on_the_day_its_commit_occurred(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let (viewer, host, stream, payout, rejected) = (id(1), id(9), id(100), id(50), id(51));
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 1, d).unwrap();
    // 2026-01-01 (t0 is its midnight).
    purchase(&mut given, viewer, "pi_1", 1_000);
    start(&mut given, stream, host, "music");
    let g1 = gift(&mut given, viewer, stream, host, 100);
    let g2 = gift(&mut given, viewer, stream, host, 11);
    // The first batch ends here: the day's row is summed on over batches.
    project_all(store.clone(), given.log.clone()).await;
    let gifts = vec![
        ReceivedGift { source_position: g1, viewer_id: viewer, stream_id: stream, coins: 100, host_coins: 70 },
        ReceivedGift { source_position: g2, viewer_id: viewer, stream_id: stream, coins: 11, host_coins: 7 },
    ];
    let commit = given.commit_with(
        host,
        vec![
            transfer(Account::TransitGifts, Account::Earnings(host), 77),
            transfer(Account::TransitGifts, Account::PlatformRevenue, 34),
        ],
        |s| s.last_credited_position = g2,
    );
    given.event(Event::GiftsReceived(GiftsReceived { user_id: host, gifts, commit }));
    let commit = given.commit(viewer, vec![transfer(Account::Wallet(viewer), Account::ExternalStripe, 300)]);
    let day_one_last = given.event(Event::PurchaseRefunded(PurchaseRefunded {
        user_id: viewer,
        payment_id: "pi_1".into(),
        coins: 300,
        source_position: 0,
        commit,
    }));
    // 2026-01-03: an adjustment, two payout requests, one paid, one rejected.
    given.advance(chrono::Duration::days(2));
    let commit = given.commit(host, vec![transfer(Account::PlatformAdjustments, Account::Earnings(host), 5_000)]);
    given.event(Event::LedgerAdjusted(LedgerAdjusted {
        user_id: host,
        coins: 5_000,
        reason: "seed".into(),
        admin_id: id(2),
        commit,
    }));
    payout_events(&mut given, host, payout, 1_234);
    payout_events(&mut given, host, rejected, 1_000);
    let commit =
        given.commit_with(host, vec![transfer(Account::PayoutHold(host), Account::ExternalPayouts, 1_234)], |s| {
            s.pending_payouts.retain(|p| p.payout_id != payout)
        });
    given.event(Event::PayoutApproved(PayoutApproved {
        user_id: host,
        payout_id: payout,
        coins: 1_234,
        external_ref: "po_1".into(),
        commit,
    }));
    let commit =
        given.commit_with(host, vec![transfer(Account::PayoutHold(host), Account::Earnings(host), 1_000)], |s| {
            s.pending_payouts.clear()
        });
    given.event(Event::PayoutRejected(PayoutRejected {
        user_id: host,
        payout_id: rejected,
        coins: 1_000,
        reason: "no".into(),
        commit,
    }));
    let last = purchase(&mut given, viewer, "pi_2", 250);
    project_all(store.clone(), given.log.clone()).await;

    let days = store.ledger_days(day(1), day(31)).await.unwrap();
    let found: Vec<(chrono::NaiveDate, [i64; 5], u64)> = days
        .iter()
        .map(|d| {
            let t = &d.totals;
            (
                d.day,
                [t.purchased_coins, t.gifted_coins, t.credited_coins, t.paid_out_coins, t.reversed_coins],
                d.position,
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![(day(1), [1_000, 111, 77, 0, 300], day_one_last), (day(3), [250, 0, 0, 1_234, 0], last)],
        "purchased, gifted, credited, paid out, reversed"
    );
    assert_eq!(store.ledger_days(day(2), day(3)).await.unwrap().len(), 1, "only the range's days");
    assert!(store.ledger_days(day(2), day(2)).await.unwrap().is_empty(), "a day nothing moved on has no document");
    let year = chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
    assert_eq!(store.ledger_days(day(1), year).await.unwrap().len(), 2, "365 days may be asked");
    let day_367 = chrono::NaiveDate::from_ymd_opt(2027, 1, 2).unwrap();
    assert!(
        matches!(store.ledger_days(day(1), day_367).await, Err(projections::ProjectionError::InvalidInput(_))),
        "at most 366 days"
    );
    assert!(
        matches!(store.ledger_days(day(3), day(1)).await, Err(projections::ProjectionError::InvalidInput(_))),
        "a range runs forward"
    );
}

every_store!(
    daily_totals_count_each_kind_on_the_day_its_commit_occurred,
    registered_user_is_found_by_id_and_by_normalised_email,
    roles_change_replaces_the_roles,
    purchase_makes_wallet_transaction_stripe_payment_and_two_entries,
    checkout_session_reaches_the_purchase_whichever_is_recorded_first,
    refund_reverses_coins_and_may_drive_the_wallet_negative,
    gifts_fill_the_stream_the_leaderboard_and_the_host_credit_empties_transit,
    viewers_are_distinct_viewers_present_and_peak_is_their_maximum,
    payouts_go_from_pending_to_paid_or_rejected_and_their_requests_follow,
    events_a_projection_does_not_use_still_move_its_checkpoint,
    the_same_event_applied_twice_changes_nothing,
);
