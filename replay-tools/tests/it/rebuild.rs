//! Rebuild (side by side, switch, killed midway), verify, until-position,
//! against a real nats-server and real SQLite stores.

use std::sync::Arc;
use std::time::Duration;

use projections::testing::checksum;
use projections::{Collection, Projection, ProjectionError, ProjectionVersion, ReadStore, RunnerConfig};
use replay_tools::verify::DifferenceKind;
use replay_tools::{Progress, RebuildOptions, Until};

use crate::support::{server_with_log, source, sqlite};

async fn active_versions(store: &dyn ReadStore) -> Vec<ProjectionVersion> {
    let mut out = Vec::new();
    for p in Projection::ALL {
        out.push(ProjectionVersion::new(p, store.active_version(p).await.expect("active version")));
    }
    out
}

fn options(batch: u32) -> RebuildOptions {
    RebuildOptions { batch_size_max: batch, ..RebuildOptions::all() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_midway_and_run_again_gives_the_same_result() {
    let events = 40_000;
    let (_server, log) = server_with_log(events).await;

    // The reference: one uninterrupted rebuild.
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = sqlite(reference_dir.path()).await;
    let started = std::time::Instant::now();
    let summary = replay_tools::rebuild(reference.clone(), source(&log), &options(500), &Progress::hidden())
        .await
        .expect("rebuild");
    let duration = started.elapsed();
    assert!(summary.switched);
    assert_eq!(summary.position, events);
    let expected = checksum(reference.as_ref(), &active_versions(reference.as_ref()).await).await.expect("checksum");
    assert!(expected.collections.values().any(|c| c.documents > 1_000), "{expected}");

    // Aborted once its checkpoints pass a random point in the first half:
    // the task commits every batch, so that its checkpoints pass through
    // that point, and owns its store, so that the abort drops the
    // connection and rolls back what was not committed, as a killed
    // process would.
    let dir = tempfile::tempdir().expect("tempdir");
    let observer = sqlite(dir.path()).await;
    let abort_at = rand::random_range(2_000..20_000u64);
    let task = {
        let (path, source) = (dir.path().to_path_buf(), source(&log));
        let options = RebuildOptions { commit_every_batch: true, ..options(500) };
        tokio::spawn(async move {
            let store = sqlite(&path).await;
            replay_tools::rebuild(store, source, &options, &Progress::hidden()).await
        })
    };
    let deadline = std::time::Instant::now() + duration * 20 + Duration::from_secs(10);
    let mut seen = 0;
    while seen < abort_at {
        assert!(std::time::Instant::now() < deadline, "the rebuild stalled at checkpoint {seen}");
        assert!(!task.is_finished(), "the rebuild ended before checkpoint {abort_at}");
        let checkpoints = observer.checkpoints().await.expect("checkpoints");
        seen = checkpoints.iter().filter(|c| c.version == 2).map(|c| c.position).min().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    task.abort();
    assert!(task.await.is_err(), "the rebuild was aborted before its end (at checkpoint {seen})");
    // No wait here: the aborted task's last store call (a blocking one)
    // runs to its end and may still commit a batch, so the rebuild below
    // resumes at or after the checkpoint read now, never before it.
    let checkpoints = observer.checkpoints().await.expect("checkpoints");
    let interrupted = checkpoints.iter().filter(|c| c.version == 2).map(|c| c.position).min().unwrap_or(0);
    assert!(interrupted < events, "the rebuild was stopped before its end (at {interrupted})");
    assert!(checkpoints.iter().all(|c| !(c.version == 2 && c.active)), "not switched yet: {checkpoints:?}");
    eprintln!("rebuild aborted past checkpoint {abort_at}, checkpoint {interrupted} of {events}");
    drop(observer);

    let store = sqlite(dir.path()).await;
    let again = replay_tools::rebuild(store.clone(), source(&log), &options(500), &Progress::hidden())
        .await
        .expect("rebuild again");
    assert!(again.targets.iter().all(|t| t.version == 2), "the interrupted version is resumed: {:?}", again.targets);
    let resumed_from = again.targets.iter().map(|t| t.resumed_from).min().expect("targets");
    assert!(
        (interrupted..events).contains(&resumed_from),
        "resumed from {resumed_from}: at or past the interruption ({interrupted}), before the end"
    );
    assert_eq!(again.position, events);
    let got = checksum(store.as_ref(), &active_versions(store.as_ref()).await).await.expect("checksum");
    assert_eq!(got, expected, "killed and resumed:\n{got}\nuninterrupted:\n{expected}");

    // A further rebuild builds version 3 and drops version 2.
    let third = replay_tools::rebuild(store.clone(), source(&log), &options(5_000), &Progress::hidden())
        .await
        .expect("third rebuild");
    assert!(third.targets.iter().all(|t| t.version == 3 && t.previous_version == 2 && t.dropped_previous));
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    assert!(checkpoints.iter().all(|c| c.version == 3 && c.active), "{checkpoints:?}");
    assert_eq!(checksum(store.as_ref(), &active_versions(store.as_ref()).await).await.expect("checksum"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_changed_document_by_collection_and_id() {
    let events = 5_000;
    let (_server, log) = server_with_log(events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite(dir.path()).await;
    // The serving version 1, applied as the API's projector applies it.
    let runner = projections::Runner::new(store.clone(), source(&log), RunnerConfig::new("test")).expect("runner");
    assert_eq!(runner.catch_up().await.expect("catch up"), events);

    let report = replay_tools::verify(store.clone(), source(&log), &Projection::ALL, 1_000, &Progress::hidden())
        .await
        .expect("verify");
    assert!(report.consistent, "{report:#?}");
    assert!(!report.live_moved);
    assert_eq!(report.collections.len(), Projection::ALL.iter().map(|p| p.collections().len()).sum::<usize>());
    assert!(store.checkpoints().await.expect("checkpoints").iter().all(|c| c.version == 1), "the shadow is dropped");

    // One wallet changed behind the projector's back.
    let path = dir.path().join(projections::sqlite::SQLITE_FILE_NAME);
    let user = {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute("UPDATE wallets SET coins = coins + 1 WHERE user_id = (SELECT min(user_id) FROM wallets)", [])
            .expect("update");
        let page = store.scan(Projection::Wallets.current(), Collection::Wallets, None, 1).await.expect("scan");
        match &page.docs[0] {
            projections::AnyDoc::Wallet(w) => w.user_id.to_string(),
            other => panic!("not a wallet: {other:?}"),
        }
    };
    let report = replay_tools::verify(store.clone(), source(&log), &Projection::ALL, 1_000, &Progress::hidden())
        .await
        .expect("verify");
    assert!(!report.consistent);
    assert_eq!(report.differences, 1);
    let wallets = report.collections.iter().find(|c| c.collection == "wallets").expect("wallets");
    assert_eq!(wallets.differences, 1);
    assert_eq!(wallets.examples[0].kind, DifferenceKind::Different);
    assert_eq!(wallets.examples[0].id, user);

    // The audit compares the ledger read model with the log: equal, until
    // one account's balance is changed behind the projector's back.
    let ledger = replay_tools::audit::read_model_ledger(store.as_ref()).await.expect("read").expect("still");
    let audit = replay_tools::audit_log(&log, Vec::new(), Some(ledger), &Progress::hidden()).await.expect("audit");
    assert!(audit.passed, "{:#?}", audit.findings);
    assert_eq!(audit.read_model_compared_at, Some(events));
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute(
            "UPDATE ledger_accounts SET balance = balance + 5 WHERE account = (SELECT min(account) FROM ledger_accounts)",
            [],
        )
        .expect("update");
    }
    let ledger = replay_tools::audit::read_model_ledger(store.as_ref()).await.expect("read").expect("still");
    let audit = replay_tools::audit_log(&log, Vec::new(), Some(ledger), &Progress::hidden()).await.expect("audit");
    assert!(!audit.passed);
    let checks: Vec<&str> = audit.findings.iter().map(|f| f.check).collect();
    assert_eq!(checks, ["read_model", "read_model"], "the total and the account: {:#?}", audit.findings);
    assert!(audit.findings.iter().any(|f| f.detail.contains("in the log") && f.position == Some(events)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_position_builds_a_past_state_beside_the_serving_one() {
    let events = 3_000;
    let (_server, log) = server_with_log(events).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ReadStore> = sqlite(dir.path()).await;
    let until = 1_777;
    let summary = replay_tools::rebuild(
        store.clone(),
        source(&log),
        &RebuildOptions { until: Some(Until::Position(until)), projections: vec![Projection::Ledger], ..options(500) },
        &Progress::hidden(),
    )
    .await
    .expect("rebuild");
    assert!(!summary.switched);
    assert_eq!((summary.position, summary.targets.len()), (until, 1));
    assert_eq!(store.active_version(Projection::Ledger).await.expect("active"), 1);
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    let built = checkpoints.iter().find(|c| c.projection == Projection::Ledger && c.version == 2).expect("version 2");
    assert_eq!((built.position, built.active), (until, false));

    // The same state as a full rebuild of a log that ends there.
    let cut_dir = tempfile::tempdir().expect("tempdir");
    let cut = sqlite(cut_dir.path()).await;
    let limited: Arc<dyn projections::LogSource> =
        Arc::new(replay_tools::rebuild::UntilSource::new(source(&log), until));
    replay_tools::rebuild(cut.clone(), limited, &options(500), &Progress::hidden())
        .await
        .expect("rebuild of the cut log");
    let ledger_v2 = [ProjectionVersion::new(Projection::Ledger, 2)];
    assert_eq!(
        checksum(store.as_ref(), &ledger_v2).await.expect("checksum"),
        checksum(cut.as_ref(), &ledger_v2).await.expect("checksum")
    );

    // A full rebuild afterwards resumes that version and switches.
    let full = replay_tools::rebuild(
        store.clone(),
        source(&log),
        &RebuildOptions { projections: vec![Projection::Ledger], ..options(500) },
        &Progress::hidden(),
    )
    .await
    .expect("full rebuild");
    assert!(full.switched);
    assert_eq!((full.targets[0].version, full.targets[0].resumed_from, full.position), (2, until, events));
    assert_eq!(store.active_version(Projection::Ledger).await.expect("active"), 2);
}

/// Given an embedded store whose `stripe_payments` table an older build made
/// (before the Stripe side's columns), which the store refuses to prepare,
/// when the projections are rebuilt beside it (keeping the old tables),
/// then the serving versions prepare, they hold what a rebuild into an
/// empty store holds, and the old table is still there as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_made_by_an_older_build_is_replaced_by_a_rebuild() {
    let events = 5_000;
    let (_server, log) = server_with_log(events).await;
    let reference_dir = tempfile::tempdir().expect("tempdir");
    let reference = sqlite(reference_dir.path()).await;
    replay_tools::rebuild(reference.clone(), source(&log), &options(500), &Progress::hidden())
        .await
        .expect("reference rebuild");
    let expected = checksum(reference.as_ref(), &active_versions(reference.as_ref()).await).await.expect("checksum");

    let dir = tempfile::tempdir().expect("tempdir");
    let old_table = "CREATE TABLE stripe_payments (payment_id TEXT PRIMARY KEY, user_id BLOB, coins_issued INTEGER NOT \
                     NULL, coins_reversed INTEGER NOT NULL, stripe_session_id TEXT, position INTEGER NOT NULL) \
                     WITHOUT ROWID; INSERT INTO stripe_payments VALUES ('pi_old', NULL, 500, 0, 'cs_old', 7);";
    rusqlite::Connection::open(dir.path().join(projections::sqlite::SQLITE_FILE_NAME))
        .expect("open")
        .execute_batch(old_table)
        .expect("the older build's table");
    let store = sqlite(dir.path()).await;
    let refused = store.prepare(&projections::serving_targets(store.as_ref()).await.expect("serving")).await;
    assert!(matches!(refused, Err(ProjectionError::SchemaMismatch { .. })), "{refused:?}");

    let summary = replay_tools::rebuild(
        store.clone(),
        source(&log),
        &RebuildOptions { keep_old: true, ..options(500) },
        &Progress::hidden(),
    )
    .await
    .expect("rebuild beside the old table");
    assert!(summary.switched);

    let serving = projections::serving_targets(store.as_ref()).await.expect("serving");
    assert!(serving.iter().all(|t| t.version == 2), "{serving:?}");
    store.prepare(&serving).await.expect("the serving versions prepare");
    let got = checksum(store.as_ref(), &serving).await.expect("checksum");
    assert_eq!(got, expected, "rebuilt beside the old table:\n{got}\ninto an empty store:\n{expected}");
    let old_rows: i64 = rusqlite::Connection::open(dir.path().join(projections::sqlite::SQLITE_FILE_NAME))
        .expect("open")
        .query_row("SELECT count(*) FROM stripe_payments WHERE payment_id = 'pi_old'", [], |row| row.get(0))
        .expect("the old table");
    assert_eq!(old_rows, 1, "the old table is kept as it was");
}
