//! Finance reads through HTTP on both read stores: an account's balance at
//! a time or position, and its statement as JSON and streamed CSV, checked
//! against the entries route; bad input answered 4xx problem+json.

use halobuzz_tests::http::TestApp;
use projections::mongo_server::{Topology, database_name, surrogate_target};
use reqwest::Method;
use serde_json::{Value, json};

async fn on_both_stores(run: impl AsyncFn(&TestApp, &str)) {
    let app = TestApp::start().await;
    run(&app, "sqlite").await;
    app.stop().await;
    let uri = surrogate_target(Topology::ReplicaSet).await.uri;
    let database = database_name("finance");
    let app = TestApp::start_with(&[("MONGODB_URI", uri.as_str()), ("MONGODB_DB", database.as_str())]).await;
    run(&app, "mongodb").await;
    app.stop().await;
    let store = projections::MongoStore::connect(&uri, Some(&database)).await.expect("connect");
    store.drop_database().await.expect("drop");
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_at_a_time_and_a_statement_agree_with_the_entries() {
    on_both_stores(async |app, store| {
        let scene = app.stream_scene("finance", 1_000).await;
        let account = format!("wallet:{}", scene.viewer.id);
        let before_gifts = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut last = 0;
        for _ in 0..5 {
            let r = app.gift(&scene.viewer.token, scene.stream, "rose", 7).await;
            assert_eq!(r.status, 201, "{store}: {}", r.text);
            last = r.position();
        }
        let admin = &scene.admin;
        // The balance at a time before the gifts: the funding alone.
        let at = app
            .get(
                &format!("/api/v1/ledger/accounts/{account}/balance?at={}&minPosition={last}", iso(before_gifts)),
                Some(&admin.token),
            )
            .await;
        assert_eq!(at.status, 200, "{store}: {}", at.text);
        assert_eq!(at.body["balance"], json!(1_000), "{store}: {}", at.text);
        assert!(at.body["asOf"]["position"].as_u64().is_some_and(|p| p > 0 && p < last), "{store}: {}", at.text);
        // At the last gift's position, and now: 1000 - 5 * 7.
        let at_position =
            app.get(&format!("/api/v1/ledger/accounts/{account}/balance?position={last}"), Some(&admin.token)).await;
        // The gift's answer is its record's position, just after its commit.
        assert_eq!(at_position.body["balance"], json!(965), "{store}: {}", at_position.text);
        let as_of = at_position.body["asOf"]["position"].as_u64().unwrap_or(0);
        assert!(as_of > 0 && as_of <= last, "{store}: {}", at_position.text);
        // The owner may read their own account; another user may not.
        let own = app.get(&format!("/api/v1/ledger/accounts/{account}/balance"), Some(&scene.viewer.token)).await;
        assert_eq!((own.status, own.body["balance"].clone()), (200, json!(965)), "{store}: {}", own.text);
        let other = app.get(&format!("/api/v1/ledger/accounts/{account}/balance"), Some(&scene.host.token)).await;
        assert_eq!(other.status, 403, "{store}");

        // The entries route, newest first, for the comparison.
        let entries =
            app.get(&format!("/api/v1/ledger/accounts/{account}/entries?limit=200"), Some(&admin.token)).await;
        let items = entries.body["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 6, "{store}: {}", entries.text);
        let newest_balance = items[0]["balanceAfter"].as_i64().expect("a balance");

        let from = iso(before_gifts - chrono::Duration::hours(1));
        let to = iso(chrono::Utc::now() + chrono::Duration::minutes(1));
        let json_statement = app
            .get(&format!("/api/v1/ledger/accounts/{account}/statement?from={from}&to={to}"), Some(&admin.token))
            .await;
        assert_eq!(json_statement.status, 200, "{store}: {}", json_statement.text);
        let body = &json_statement.body;
        assert_eq!(
            (body["openingBalance"].clone(), body["closingBalance"].clone()),
            (json!(0), json!(newest_balance)),
            "{store}"
        );
        let listed: Vec<Value> = body["entries"].as_array().expect("entries").clone();
        let mut expected: Vec<Value> = items.clone();
        expected.reverse();
        assert_eq!(listed, expected, "{store}: the window's entries, oldest first, as the entries route has them");

        // CSV, by Accept and by format=csv: the same bytes.
        let csv = app
            .request_with(
                Method::GET,
                &format!("/api/v1/ledger/accounts/{account}/statement?from={from}&to={to}"),
                Some(&admin.token),
                None,
                &[("Accept", "text/csv")],
            )
            .await;
        assert_eq!(csv.status, 200, "{store}: {}", csv.text);
        assert!(csv.content_type().starts_with("text/csv"), "{store}: {}", csv.content_type());
        let by_format = app
            .get(
                &format!("/api/v1/ledger/accounts/{account}/statement?from={from}&to={to}&format=csv"),
                Some(&admin.token),
            )
            .await;
        assert_eq!(by_format.text, csv.text, "{store}");
        let mut lines = csv.text.lines();
        assert_eq!(lines.next(), Some("position,seq,time,eventType,counterparty,coins,balanceAfter"));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 1 + 6, "{store}: an opening row and every entry: {}", csv.text);
        assert_eq!(rows[0][3], "opening_balance");
        let sum: i64 = rows.iter().map(|r| r[5].parse::<i64>().expect("coins")).sum();
        assert_eq!(sum, newest_balance, "{store}: the rows sum to the closing balance");
        assert_eq!(rows.last().map(|r| r[6]), Some(newest_balance.to_string().as_str()), "{store}");

        // A window after the funding only: its opening balance is the funding.
        let mid = app
            .get(
                &format!("/api/v1/ledger/accounts/{account}/statement?from={}&to={to}", iso(before_gifts)),
                Some(&admin.token),
            )
            .await;
        assert_eq!(
            (mid.body["openingBalance"].clone(), mid.body["entries"].as_array().map(Vec::len)),
            (json!(1_000), Some(5)),
            "{store}: {}",
            mid.text
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_finance_reads_are_clear_4xx_problems() {
    let app = TestApp::start().await;
    let admin = app.admin().await;
    let account = format!("wallet:{}", admin.id);
    let now = chrono::Utc::now();
    for (path, status, field) in [
        (format!("/api/v1/ledger/accounts/{account}/balance?at=yesterday"), 422, "at"),
        (format!("/api/v1/ledger/accounts/{account}/balance?at=2026-01-01T00:00:00Z&position=3"), 422, "at"),
        ("/api/v1/ledger/accounts/not-an-account/balance".to_string(), 404, ""),
        (format!("/api/v1/ledger/accounts/wallet:nope/statement?from={}&to={}", iso(now), iso(now)), 404, ""),
        (
            format!(
                "/api/v1/ledger/accounts/{account}/statement?from={}&to={}",
                iso(now),
                iso(now - chrono::Duration::days(1))
            ),
            422,
            "from",
        ),
        (
            format!(
                "/api/v1/ledger/accounts/{account}/statement?from={}&to={}",
                iso(now - chrono::Duration::days(3653)),
                iso(now)
            ),
            422,
            "to",
        ),
        (format!("/api/v1/ledger/accounts/{account}/statement?from=2026-13-01&to={}", iso(now)), 422, "from"),
        (format!("/api/v1/ledger/accounts/{account}/statement?to={}", iso(now)), 422, "from"),
        (
            format!("/api/v1/ledger/accounts/{account}/statement?from={}&to={}&format=xml", iso(now), iso(now)),
            422,
            "format",
        ),
    ] {
        let r = app.get(&path, Some(&admin.token)).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert_eq!(r.content_type(), "application/problem+json", "{path}");
        if !field.is_empty() {
            assert_eq!(r.body["field"], json!(field), "{path}: {}", r.text);
        }
    }
    app.stop().await;
}

/// The sum of one kind over every day of a daily answer.
fn kind_total(daily: &Value, kind: &str) -> i64 {
    daily["days"].as_array().map_or(0, |days| days.iter().map(|d| d[kind].as_i64().unwrap_or(0)).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_totals_count_gifts_sent_and_credited_and_every_day_is_there() {
    on_both_stores(async |app, store| {
        let scene = app.stream_scene("daily", 1_000).await;
        let mut gifted = 0;
        let mut credited = 0;
        for quantity in [1, 3, 7] {
            let r = app.gift(&scene.viewer.token, scene.stream, "rose", quantity).await;
            assert_eq!(r.status, 201, "{store}: {}", r.text);
            let coins = r.body["coins"].as_i64().expect("the gift's coins");
            gifted += coins;
            // The host's share, rounded down per gift (HOST_SHARE_BPS 7000).
            credited += coins * 7_000 / 10_000;
        }
        let settled = app.settle_reactor().await;
        let admin = &scene.admin;
        let daily = app.get(&format!("/api/v1/ledger/daily?minPosition={settled}"), Some(&admin.token)).await;
        assert_eq!(daily.status, 200, "{store}: {}", daily.text);
        let days = daily.body["days"].as_array().expect("days");
        assert_eq!(days.len(), 30, "{store}: the default window, every day present: {}", daily.text);
        let today = chrono::Utc::now().date_naive().to_string();
        assert_eq!(days[29]["day"], json!(today), "{store}: today last");
        assert_eq!(daily.body["to"], json!(today), "{store}");
        assert_eq!(days[0]["day"], daily.body["from"], "{store}");
        assert!(daily.body["position"].as_u64().is_some_and(|p| p >= settled), "{store}: {}", daily.text);
        // Funding by adjustment is in no kind; nothing was bought, paid
        // out or reversed.
        assert_eq!(kind_total(&daily.body, "giftedCoins"), gifted, "{store}: {}", daily.text);
        assert_eq!(kind_total(&daily.body, "creditedCoins"), credited, "{store}: {}", daily.text);
        for kind in ["purchasedCoins", "paidOutCoins", "reversedCoins"] {
            assert_eq!(kind_total(&daily.body, kind), 0, "{store}: {kind}: {}", daily.text);
        }
        let one = app.get("/api/v1/ledger/daily?days=1", Some(&admin.token)).await;
        assert_eq!(one.body["days"].as_array().map(Vec::len), Some(1), "{store}: {}", one.text);
        let year = app.get("/api/v1/ledger/daily?days=366", Some(&admin.token)).await;
        assert_eq!(year.body["days"].as_array().map(Vec::len), Some(366), "{store}: {}", year.text);
        assert_eq!(kind_total(&year.body, "giftedCoins"), gifted, "{store}");

        // Out of range or not a number: 422 problem+json.
        for days in ["0", "367", "-1", "thirty", "1.5"] {
            let r = app.get(&format!("/api/v1/ledger/daily?days={days}"), Some(&admin.token)).await;
            assert_eq!(r.status, 422, "{store}: days={days}: {}", r.text);
            assert_eq!(r.body["code"], json!("validation_failed"), "{store}: {}", r.text);
            assert_eq!(r.headers["content-type"], "application/problem+json", "{store}");
        }
        // Finance, ops and admins; not users.
        let refused = app.get("/api/v1/ledger/daily", Some(&scene.viewer.token)).await;
        assert_eq!(refused.status, 403, "{store}: {}", refused.text);
        assert_eq!(app.get("/api/v1/ledger/daily", None).await.status, 401, "{store}");
    })
    .await;
}
