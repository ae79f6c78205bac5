//! The OpenAPI document covers every route of the contract, and /docs
//! browses it without any CDN.

use halobuzz_tests::http::TestApp;

/// Every route of `shared/spec/api.md` this service implements.
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/docs"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/users/me"),
    ("get", "/api/v1/wallet"),
    ("get", "/api/v1/transactions"),
    ("get", "/api/v1/coins/packages"),
    ("post", "/api/v1/coins/checkout"),
    ("post", "/api/v1/coins/payment-intent"),
    ("post", "/api/v1/webhooks/stripe"),
    ("get", "/api/v1/gifts/catalog"),
    ("post", "/api/v1/streams"),
    ("post", "/api/v1/streams/{id}/end"),
    ("post", "/api/v1/streams/{id}/join"),
    ("post", "/api/v1/streams/{id}/leave"),
    ("get", "/api/v1/streams/live"),
    ("get", "/api/v1/streams/{id}"),
    ("get", "/api/v1/streams/{id}/leaderboard"),
    ("post", "/api/v1/streams/{id}/gifts"),
    ("post", "/api/v1/payouts"),
    ("get", "/api/v1/payouts"),
    ("get", "/api/v1/admin/payouts"),
    ("post", "/api/v1/admin/payouts/{id}/approve"),
    ("post", "/api/v1/admin/payouts/{id}/reject"),
    ("post", "/api/v1/admin/adjustments"),
    ("post", "/api/v1/admin/users/{id}/roles"),
    ("post", "/api/v1/admin/users/{id}/sessions/revoke"),
    ("post", "/api/v1/admin/payments/{paymentId}/resolve"),
    ("get", "/api/v1/ledger/accounts/{account}/entries"),
    ("get", "/api/v1/ledger/trial-balance"),
    ("get", "/api/v1/ledger/reconciliation"),
    // v1.1, money out and finance reads.
    ("get", "/api/v1/admin/adjustments"),
    ("post", "/api/v1/admin/adjustments/{id}/approve"),
    ("post", "/api/v1/admin/adjustments/{id}/reject"),
    ("get", "/api/v1/ledger/accounts/{account}/balance"),
    ("get", "/api/v1/ledger/accounts/{account}/statement"),
    // The console's chart.
    ("get", "/api/v1/ledger/daily"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_docs_needs_no_cdn() {
    let app = TestApp::start().await;
    let doc = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc.body["openapi"]);
    let paths = doc.body["paths"].as_object().cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for (method, path) in CONTRACT_ROUTES {
        if paths.get(*path).and_then(|p| p.get(*method)).is_none() {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(missing.is_empty(), "undocumented routes: {missing:?}");
    let documented: usize = paths.values().map(|p| p.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(documented, CONTRACT_ROUTES.len(), "the document has routes the contract does not");
    // Every error response is a problem document.
    let problem = &doc.body["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(problem["properties"].get(field).is_some(), "Problem lacks {field}");
    }
    assert!(doc.body["components"]["securitySchemes"]["bearerAuth"].is_object());

    let page = app.get("/docs", None).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.text.contains("/api/v1/openapi.json"));
    assert!(!page.text.contains("<script src"), "the page loads no script from elsewhere");
    assert!(!page.text.contains("<link"), "the page loads no stylesheet from elsewhere");
    assert!(!page.text.contains("https://"), "the page names no external host");
    app.stop().await;
}
