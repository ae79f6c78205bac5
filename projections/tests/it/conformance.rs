//! One conformance suite over the read-store port: every case is a generic
//! function of a store, run against the embedded store and against MongoDB
//! in both topologies (the surrogate always, a real server too when
//! `MONGODB_URI` is set: `stores::on_mongodb`).

use std::sync::Arc;

use events_schema::{Account, Event, StreamSnapshot, StreamStarted, StreamStatus, ViewerJoined};
use projections::testing::{Generator, GeneratorConfig, MemoryLog, checksum};
use projections::{
    Collection, PageRequest, PayoutStatus, Projection, ProjectionError, ProjectionVersion, ReadStore, ResolutionStatus,
    Runner, RunnerConfig, StripePaymentFilter, TransactionFilter, runner::project_messages,
};
use uuid::Uuid;

use crate::support::{Given, project_all, purchase, sqlite};

fn small_log(events: u64) -> Arc<MemoryLog> {
    let config = GeneratorConfig { users: 150, hosts: 6, seed: 7, ..GeneratorConfig::default() };
    Arc::new(MemoryLog::from_events(Generator::log(config, events)))
}

/// A generated log projected: the ledger balances, wallets are the sum of
/// their transactions, leaderboards add up to the streams' gifts, and the
/// store's documents equal the embedded store's for the same log.
pub async fn generated_log_projects_consistently(store: Arc<dyn ReadStore>) {
    let log = small_log(4_000);
    let position = project_all(store.clone(), log.clone()).await;
    assert_eq!(position, 4_000);
    let targets = ProjectionVersion::all_current();

    let trial = store.trial_balance(&PageRequest::first(200)).await.unwrap();
    assert_eq!(trial.total_coins, 0);
    assert_eq!(trial.position, 4_000);
    assert!(trial.accounts_count > 10);
    let mut sum = 0i64;
    let mut page = PageRequest::first(7);
    let mut pages = 0;
    loop {
        let t = store.trial_balance(&page).await.unwrap();
        sum += t.items.iter().map(|a| a.balance).sum::<i64>();
        pages += 1;
        match t.next_cursor {
            Some(c) => page = PageRequest::after(7, Some(c)),
            None => break,
        }
    }
    assert_eq!(sum, 0);
    assert_eq!(pages, trial.accounts_count.div_ceil(7));

    let mut after: Option<String> = None;
    let mut wallets = Vec::new();
    loop {
        let page = store.scan(Projection::Wallets.current(), Collection::Wallets, after.as_deref(), 100).await.unwrap();
        wallets.extend(page.docs);
        match page.next_key {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    assert!(wallets.len() > 50);
    for doc in wallets.iter().take(40) {
        let projections::AnyDoc::Wallet(w) = doc else { panic!("not a wallet: {doc:?}") };
        let mut net = 0i64;
        let mut page = PageRequest::first(50);
        loop {
            let txs = store.transactions(w.user_id, TransactionFilter::default(), &page).await.unwrap();
            net += txs.items.iter().map(|t| t.coins).sum::<i64>();
            match txs.next_cursor {
                Some(c) => page = PageRequest::after(50, Some(c)),
                None => break,
            }
        }
        assert_eq!(net, w.coins + w.earnings + w.held, "user {}", w.user_id);
        let entries = store.ledger_entries(Account::Wallet(w.user_id), &PageRequest::first(1)).await.unwrap();
        if let Some(last) = entries.items.first() {
            assert_eq!(last.balance_after, w.coins);
        }
    }

    // Every payout is found by its id, whatever its status.
    let all_payouts = store.payouts(None, &PageRequest::first(200)).await.unwrap().items;
    assert!(all_payouts.iter().any(|p| p.status != PayoutStatus::Pending), "settled payouts in the log");
    for p in &all_payouts {
        assert_eq!(store.payout(p.id).await.unwrap().as_ref(), Some(p));
    }
    assert_eq!(store.payout(Uuid::now_v7()).await.unwrap(), None);

    let live = store.live_streams(None, &PageRequest::first(200)).await.unwrap();
    assert!(!live.items.is_empty());
    for s in &live.items {
        assert!(s.is_live && s.viewers <= s.peak_viewers);
        let board = store.leaderboard(s.id, &PageRequest::first(200)).await.unwrap();
        assert_eq!(board.items.iter().map(|e| e.coins).sum::<i64>(), s.gifts_coins);
    }
    let viewers: Vec<i64> = live.items.iter().map(|s| s.viewers).collect();
    assert!(viewers.windows(2).all(|w| w[0] >= w[1]), "most viewers first: {viewers:?}");

    // The reconciliation: every Stripe payment, paged by id; each credited
    // purchase issued its package's coins, each refund reversed its share;
    // the flagged payments (unknown users) are the only mismatches.
    let all = StripePaymentFilter::default();
    let payments = every_payment(store.as_ref(), &all).await;
    assert!(payments.len() > 20, "{} payments", payments.len());
    assert!(payments.windows(2).all(|w| w[0].payment_id < w[1].payment_id), "by PaymentIntent id");
    let mut flagged = 0;
    let mut disputed = 0;
    let mut dismissed = 0;
    for p in &payments {
        if p.payment_id.starts_with("pi_flagged_") {
            flagged += 1;
            assert_eq!(p.mismatches(), vec!["unknown_user".to_string()]);
            if p.stripe.resolution.is_some() {
                dismissed += 1;
                assert_eq!(p.status(), "resolved");
            } else {
                assert_eq!(p.status(), "open");
            }
        } else if !p.stripe.disputes.is_empty() {
            // A lost dispute: its coins match, the dispute is flagged.
            disputed += 1;
            assert_eq!(p.mismatches(), vec!["disputed".to_string()], "{p:?}");
            assert_eq!(p.coins_reversed, p.coins_reversal_expected(), "{p:?}");
        } else {
            assert_eq!(p.mismatches(), Vec::<String>::new(), "{p:?}");
            assert_eq!(p.coins_issued, p.stripe.coins_expected);
            assert_eq!(p.status(), "clear");
        }
    }
    assert!(disputed > 0, "the generator disputes some payments");
    // The filters: by flag, open (flagged, not resolved), resolved.
    let by_flag = StripePaymentFilter { flag: Some("unknown_user".into()), status: None };
    let unknown: Vec<_> = every_payment(store.as_ref(), &by_flag).await;
    assert_eq!(unknown.len(), flagged);
    assert!(unknown.iter().all(|p| p.payment_id.starts_with("pi_flagged_")));
    let open = StripePaymentFilter { flag: None, status: Some(ResolutionStatus::Open) };
    assert_eq!(every_payment(store.as_ref(), &open).await.len(), flagged - dismissed + disputed);
    let resolved = StripePaymentFilter { flag: None, status: Some(ResolutionStatus::Resolved) };
    assert_eq!(every_payment(store.as_ref(), &resolved).await.len(), dismissed);
    assert!(dismissed > 0, "the generator dismisses some flagged payments");
    assert!(flagged > 0);
    let one = store.stripe_payment(&payments[0].payment_id).await.unwrap();
    assert_eq!(one.as_ref(), Some(&payments[0]));

    let (reference, _dir) = sqlite().await;
    project_all(reference.clone(), log).await;
    assert_eq!(
        checksum(&*store, &targets).await.unwrap(),
        checksum(&*reference, &targets).await.unwrap(),
        "the store's documents differ from the embedded store's"
    );
}

/// A batch applied again, whole or overlapping, changes nothing.
pub async fn reapplying_a_batch_changes_nothing(store: Arc<dyn ReadStore>) {
    let log = small_log(3_000);
    let targets = ProjectionVersion::all_current();
    store.prepare(&targets).await.unwrap();
    let zero = vec![0u64; targets.len()];
    let messages = projections::LogSource::read_from(&*log, 1, 3_000).await.unwrap();
    let first = project_messages(&messages[..2_000], 1, &zero, &targets).unwrap();
    store.apply(first.clone()).await.unwrap();
    let before = checksum(&*store, &targets).await.unwrap();
    let again = store.apply(first.clone()).await.unwrap();
    assert_eq!(again.applied, 0);
    assert_eq!(again.skipped, first.changes.len() as u64);
    assert_eq!(checksum(&*store, &targets).await.unwrap(), before);
    // Overlapping: 1500..3000 after 1..2000 applies only 2001..3000.
    let overlapping = project_messages(&messages[1_499..], 1_500, &zero, &targets).unwrap();
    store.apply(overlapping).await.unwrap();
    let (reference, _dir) = sqlite().await;
    reference.prepare(&targets).await.unwrap();
    reference.apply(project_messages(&messages, 1, &zero, &targets).unwrap()).await.unwrap();
    assert_eq!(checksum(&*store, &targets).await.unwrap(), checksum(&*reference, &targets).await.unwrap());
    let checkpoints = store.checkpoints().await.unwrap();
    assert!(checkpoints.iter().all(|c| c.position == 3_000));
}

/// The lease is compare and set: free or expired or already ours. On the
/// real clock, since MongoDB reads the server's (`$$NOW`) and the embedded
/// store the caller's.
pub async fn lease_is_compare_and_set(store: Arc<dyn ReadStore>) {
    let key = "projector-test";
    let now = || {
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
    };
    let wait = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
    assert!(store.acquire_lease(key, "a", 1_500, now()).await.unwrap());
    assert!(!store.acquire_lease(key, "b", 1_500, now()).await.unwrap(), "held by a");
    wait(1_000).await;
    assert!(store.acquire_lease(key, "a", 1_500, now()).await.unwrap(), "a renews");
    wait(1_000).await;
    assert!(!store.acquire_lease(key, "b", 1_500, now()).await.unwrap(), "renewed: still a's");
    wait(800).await;
    assert!(store.acquire_lease(key, "b", 60_000, now()).await.unwrap(), "expired: b takes over");
    assert!(!store.acquire_lease(key, "a", 60_000, now()).await.unwrap(), "a lost it");
    store.release_lease(key, "a").await.unwrap();
    assert!(!store.acquire_lease(key, "a", 60_000, now()).await.unwrap(), "a cannot release b's lease");
    store.release_lease(key, "b").await.unwrap();
    assert!(store.acquire_lease(key, "a", 60_000, now()).await.unwrap(), "released: a takes it at once");
    assert!(store.acquire_lease("other", "b", 60_000, now()).await.unwrap(), "leases are per key");
}

/// A new version builds beside the active one, which keeps serving; the
/// switch is atomic; the old version is then retired.
pub async fn versions_build_side_by_side_and_switch(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let u = Uuid::from_u128(1);
    purchase(&mut given, u, "pi_1", 100);
    let v1 = ProjectionVersion::new(Projection::Wallets, 1);
    let v2 = ProjectionVersion::new(Projection::Wallets, 2);
    let log = given.log.clone();
    let runner = |targets: Vec<ProjectionVersion>| {
        let mut config = RunnerConfig::new("versions");
        config.targets = targets;
        Runner::new(store.clone(), log.clone(), config).unwrap()
    };
    runner(vec![v1]).catch_up().await.unwrap();
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 100);

    purchase(&mut given, u, "pi_2", 50);
    // v2 builds from the start into its own collection; v1 still serves.
    runner(vec![v2]).catch_up().await.unwrap();
    assert_eq!(store.active_version(Projection::Wallets).await.unwrap(), 1);
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 100, "v1 serves until the switch");
    let v2_docs = store.scan(v2, Collection::Wallets, None, 10).await.unwrap();
    assert_eq!(v2_docs.docs.len(), 1);

    runner(vec![v2]).build_and_switch().await.unwrap();
    assert_eq!(store.active_version(Projection::Wallets).await.unwrap(), 2);
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 150, "v2 serves after the switch");
    let checkpoints = store.checkpoints().await.unwrap();
    let active: Vec<(u32, bool)> =
        checkpoints.iter().filter(|c| c.projection == Projection::Wallets).map(|c| (c.version, c.active)).collect();
    assert_eq!(active, vec![(1, false), (2, true)]);

    // The old version's runner finds itself retired; nothing is applied.
    match runner(vec![v1]).catch_up().await {
        Err(ProjectionError::Retired { version: 1, active: 2, .. }) => {}
        other => panic!("expected Retired, got {other:?}"),
    }
    let batch =
        projections::ProjectedBatch { targets: vec![v1], to_position: 99, changes: vec![], ..Default::default() };
    assert!(matches!(store.apply(batch).await, Err(ProjectionError::Retired { .. })));
    assert!(store.activate(v1).await.is_err(), "no going back");
    assert!(store.drop_version(v2).await.is_err(), "the active version is not dropped");
    store.drop_version(v1).await.unwrap();
    let v1_left = store.scan(v1, Collection::Wallets, None, 10).await.unwrap().docs;
    if store.backend() == "mongodb" {
        // Version 1's names are the runbook's: once it is dropped they
        // become views of the serving version, which the admin panel reads.
        assert_eq!(v1_left, store.scan(v2, Collection::Wallets, None, 10).await.unwrap().docs);
    } else {
        assert!(v1_left.is_empty(), "{v1_left:?}");
    }
    let versions: Vec<u32> = store
        .checkpoints()
        .await
        .unwrap()
        .iter()
        .filter(|c| c.projection == Projection::Wallets)
        .map(|c| c.version)
        .collect();
    assert_eq!(versions, vec![2], "the dropped version's checkpoint is gone");
    assert_eq!(store.wallet(u).await.unwrap().unwrap().coins, 150);
}

/// Cursor paging is keyset: a page after a cursor is the same whatever
/// was inserted before it meanwhile.
pub async fn paging_is_stable_under_inserts(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let u = Uuid::from_u128(1);
    let buy = |given: &mut Given, n: i64| purchase(given, u, &format!("pi_{n}"), n);
    for n in 1..=7 {
        buy(&mut given, n);
    }
    project_all(store.clone(), given.log.clone()).await;
    let all = TransactionFilter::default();
    let page1 = store.transactions(u, all, &PageRequest::first(3)).await.unwrap();
    assert_eq!(page1.items.iter().map(|t| t.coins).collect::<Vec<_>>(), vec![7, 6, 5]);
    for n in 8..=9 {
        buy(&mut given, n);
    }
    project_all(store.clone(), given.log.clone()).await;
    let page2 = store.transactions(u, all, &PageRequest::after(3, page1.next_cursor.clone())).await.unwrap();
    assert_eq!(page2.items.iter().map(|t| t.coins).collect::<Vec<_>>(), vec![4, 3, 2]);
    let page3 = store.transactions(u, all, &PageRequest::after(3, page2.next_cursor.clone())).await.unwrap();
    assert_eq!(page3.items.iter().map(|t| t.coins).collect::<Vec<_>>(), vec![1]);
    assert_eq!(page3.next_cursor, None);
    let first = store.transactions(u, all, &PageRequest::default()).await.unwrap();
    assert_eq!(first.items.len(), 9);
    assert_eq!(PageRequest { limit: Some(1_000), cursor: None }.limit(), 200);
    assert_eq!(PageRequest::default().limit(), 50);

    let entries = store.ledger_entries(Account::Wallet(u), &PageRequest::first(4)).await.unwrap();
    assert_eq!(entries.items.iter().map(|e| e.balance_after).collect::<Vec<_>>(), vec![45, 36, 28, 21]);
    let more = store.ledger_entries(Account::Wallet(u), &PageRequest::after(4, entries.next_cursor)).await.unwrap();
    assert_eq!(more.items.iter().map(|e| e.balance_after).collect::<Vec<_>>(), vec![15, 10, 6, 3]);

    for bad in ["zz", "00", "not a cursor", &"ab".repeat(600)] {
        let e = store.transactions(u, all, &PageRequest::after(3, Some(bad.to_string()))).await.unwrap_err();
        assert!(e.is_client_error(), "{bad:?}: {e}");
    }
}

/// Live streams: most viewers first, by category, paged by (viewers, id).
pub async fn live_streams_most_viewers_first(store: Arc<dyn ReadStore>) {
    let mut given = Given::new();
    let at = crate::support::t0();
    let mut streams = Vec::new();
    for (n, (category, viewers)) in [("music", 3u128), ("gaming", 5), ("music", 1), ("music", 4)].iter().enumerate() {
        let (stream, host) = (Uuid::from_u128(100 + n as u128), Uuid::from_u128(200 + n as u128));
        let snapshot = StreamSnapshot { host_id: host, status: StreamStatus::Live, started_at: at };
        given.event(Event::StreamStarted(StreamStarted {
            stream_id: stream,
            host_id: host,
            title: format!("s{n}"),
            category: category.to_string(),
            state_after: snapshot.clone(),
        }));
        for v in 0..*viewers {
            given.event(Event::ViewerJoined(ViewerJoined {
                stream_id: stream,
                viewer_id: Uuid::from_u128(1_000 + v),
                state_after: snapshot.clone(),
            }));
        }
        streams.push(stream);
    }
    project_all(store.clone(), given.log.clone()).await;
    let all = store.live_streams(None, &PageRequest::default()).await.unwrap();
    assert_eq!(all.items.iter().map(|s| s.viewers).collect::<Vec<_>>(), vec![5, 4, 3, 1]);
    let music = store.live_streams(Some("music"), &PageRequest::first(2)).await.unwrap();
    assert_eq!(music.items.iter().map(|s| s.id).collect::<Vec<_>>(), vec![streams[3], streams[0]]);
    let rest = store.live_streams(Some("Music "), &PageRequest::after(2, music.next_cursor)).await.unwrap();
    assert_eq!(rest.items.iter().map(|s| s.id).collect::<Vec<_>>(), vec![streams[2]]);
    assert_eq!(rest.next_cursor, None);
    assert!(store.stream(Uuid::from_u128(999)).await.unwrap().is_none());
}

every_store!(
    generated_log_projects_consistently,
    reapplying_a_batch_changes_nothing,
    lease_is_compare_and_set,
    versions_build_side_by_side_and_switch,
    paging_is_stable_under_inserts,
    live_streams_most_viewers_first,
);

/// Every payment the filter lists, page after page (13 a page).
async fn every_payment(store: &dyn ReadStore, filter: &StripePaymentFilter) -> Vec<projections::StripePaymentDoc> {
    let mut payments = Vec::new();
    let mut page = PageRequest::first(13);
    loop {
        let p = store.stripe_payments(filter, &page).await.unwrap();
        payments.extend(p.items);
        match p.next_cursor {
            Some(c) => page = PageRequest::after(13, Some(c)),
            None => return payments,
        }
    }
}
