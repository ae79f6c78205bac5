//! A Checkout Session reaches the purchase it paid for, whether its event
//! names the PaymentIntent by id or carries it expanded: the projections
//! read the session with the webhook's own reader
//! (`events_schema::stripe`).

use events_schema::{Event, StripeEventRecorded};
use projections::testing::{Generator, GeneratorConfig};
use projections::{PageRequest, ReadStore, TransactionFilter};
use uuid::Uuid;

use crate::support::{Given, projected, purchase};

/// A recorded `checkout.session.completed` of `session`, paying with
/// `payment_intent` (an id, or an expanded PaymentIntent).
fn session_completed(session: &str, payment_intent: serde_json::Value) -> Event {
    Event::StripeEventRecorded(StripeEventRecorded {
        stripe_event_id: format!("evt_{session}"),
        stripe_event_type: "checkout.session.completed".into(),
        stripe_created: 1_767_225_600,
        body: serde_json::json!({"id": format!("evt_{session}"), "type": "checkout.session.completed",
            "data": {"object": {"id": session, "object": "checkout.session", "payment_status": "paid",
                "payment_intent": payment_intent}}})
        .to_string(),
    })
}

#[tokio::test]
async fn a_session_reaches_stripe_payments_and_transactions_by_id_or_expanded() {
    let mut given = Given::new();
    let user = Uuid::from_u128(1);
    given.event(session_completed("cs_by_id", serde_json::json!("pi_by_id")));
    purchase(&mut given, user, "pi_by_id", 500);
    given.event(session_completed(
        "cs_expanded",
        serde_json::json!({"id": "pi_expanded", "object": "payment_intent", "amount": 499, "status": "succeeded"}),
    ));
    purchase(&mut given, user, "pi_expanded", 100);
    // An expanded PaymentIntent recorded after its purchase.
    purchase(&mut given, user, "pi_late", 1_000);
    given.event(session_completed("cs_late", serde_json::json!({"id": "pi_late", "object": "payment_intent"})));
    let (store, _dir) = projected(&given).await;

    for (payment, session) in [("pi_by_id", "cs_by_id"), ("pi_expanded", "cs_expanded"), ("pi_late", "cs_late")] {
        let doc = store.stripe_payment(payment).await.unwrap().unwrap_or_else(|| panic!("{payment} projected"));
        assert_eq!(doc.stripe_session_id.as_deref(), Some(session), "stripe_payments of {payment}");
    }
    let transactions = store.transactions(user, TransactionFilter::default(), &PageRequest::default()).await.unwrap();
    let sessions: Vec<(Option<&str>, Option<&str>)> = transactions
        .items
        .iter()
        .map(|t| (t.metadata.payment_id.as_deref(), t.metadata.stripe_session_id.as_deref()))
        .collect();
    assert_eq!(
        sessions,
        vec![
            (Some("pi_late"), Some("cs_late")),
            (Some("pi_expanded"), Some("cs_expanded")),
            (Some("pi_by_id"), Some("cs_by_id")),
        ]
    );
}

/// The generated logs hold sessions of both shapes, and every one of them
/// reaches its payment's row (so the conformance runs cover both).
#[tokio::test]
async fn generated_sessions_of_both_shapes_reach_their_payments() {
    let mut shapes = (0, 0);
    let mut sessions = Vec::new();
    let given = Given::new();
    for bytes in Generator::log(GeneratorConfig { users: 50, hosts: 5, ..GeneratorConfig::default() }, 4_000) {
        let envelope = events_schema::Envelope::decode(&bytes).unwrap();
        if let Event::StripeEventRecorded(record) = &envelope.event
            && let Some(session) = events_schema::stripe::checkout_session(record)
        {
            let body: serde_json::Value = serde_json::from_str(&record.body).unwrap();
            match body["data"]["object"]["payment_intent"] {
                serde_json::Value::String(_) => shapes.0 += 1,
                serde_json::Value::Object(_) => shapes.1 += 1,
                ref other => panic!("payment_intent of another shape: {other}"),
            }
            sessions.push(session);
        }
        given.log.append(bytes);
    }
    assert!(shapes.0 > 0 && shapes.1 > 0, "sessions by id and expanded: {shapes:?}");
    let (store, _dir) = projected(&given).await;
    for session in &sessions {
        let doc = store.stripe_payment(&session.payment_id).await.unwrap();
        let doc = doc.unwrap_or_else(|| panic!("{} projected", session.payment_id));
        assert_eq!(doc.stripe_session_id.as_deref(), Some(session.session_id.as_str()));
    }
}
