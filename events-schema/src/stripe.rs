//! Stripe's own event JSON, read by the few fields the ledger needs: the
//! one reader that the webhook (`api`) and the read models (`projections`)
//! share, so that both read a field the same way.
//!
//! A Stripe event is stored as Stripe sent it (`StripeEventRecorded::body`),
//! not in one of our shapes: fields are looked up by name, never through
//! Stripe's full typed objects, so that any API version works (and stand-ins
//! such as localstripe that send older shapes). A field that refers to
//! another object (`payment_intent` on a Checkout Session or a Charge) is
//! either that object's id or, when the sender expanded it, the object
//! itself: `StripeObject::id_of` reads both.

use serde_json::Value;

use crate::events::StripeEventRecorded;

/// The type of the event that completes a Checkout Session.
pub const CHECKOUT_SESSION_COMPLETED: &str = "checkout.session.completed";

/// A Stripe event's body, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEventBody {
    event: Value,
}

impl StripeEventBody {
    /// Parses a body; fails only when it is not JSON.
    pub fn parse(body: &str) -> Result<StripeEventBody, serde_json::Error> {
        Ok(StripeEventBody { event: serde_json::from_str(body)? })
    }

    /// The event's `id` (`evt_...`).
    pub fn id(&self) -> Option<&str> {
        self.event.get("id").and_then(Value::as_str)
    }

    /// The event's `type` (`payment_intent.succeeded`, ...).
    pub fn kind(&self) -> Option<&str> {
        self.event.get("type").and_then(Value::as_str)
    }

    /// The event's `created`, in seconds since the epoch.
    pub fn created_s(&self) -> Option<i64> {
        self.event.get("created").and_then(Value::as_i64)
    }

    /// The object the event is about (`data.object`); an event without one
    /// reads as an object without fields.
    pub fn object(&self) -> StripeObject<'_> {
        StripeObject { object: self.event.get("data").and_then(|data| data.get("object")).unwrap_or(&Value::Null) }
    }
}

/// A Stripe object inside an event (or an object nested in one), read by
/// field name. Every reader answers `None` for a missing field or one of
/// another JSON type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StripeObject<'a> {
    object: &'a Value,
}

impl<'a> StripeObject<'a> {
    /// A text field.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.object.get(name).and_then(Value::as_str)
    }

    /// An integer field (amounts are in the currency's minor unit).
    pub fn integer(&self, name: &str) -> Option<i64> {
        self.object.get(name).and_then(Value::as_i64)
    }

    /// A nested object (`metadata`); `None` when absent or not an object.
    pub fn nested(&self, name: &str) -> Option<StripeObject<'a>> {
        self.object.get(name).filter(|value| value.is_object()).map(|object| StripeObject { object })
    }

    /// The objects of an array field (`balance_transactions`); elements
    /// that are not objects are skipped, a missing field is empty.
    pub fn objects(&self, name: &str) -> Vec<StripeObject<'a>> {
        match self.object.get(name) {
            Some(Value::Array(items)) => {
                items.iter().filter(|item| item.is_object()).map(|object| StripeObject { object }).collect()
            }
            _ => Vec::new(),
        }
    }

    /// The id of the object that field `name` refers to: the field itself
    /// when it is an id, or the `id` of the object when it was expanded.
    pub fn id_of(&self, name: &str) -> Option<&'a str> {
        match self.object.get(name)? {
            Value::String(id) => Some(id),
            Value::Object(expanded) => expanded.get("id").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// The prefix of the four dispute events (`charge.dispute.created`,
/// `.funds_withdrawn`, `.funds_reinstated`, `.closed`).
pub const DISPUTE_EVENT_PREFIX: &str = "charge.dispute.";
/// Balance transactions read from one dispute, at most (Stripe lists one
/// per withdrawal or reinstatement: a handful).
pub const DISPUTE_BALANCE_TRANSACTIONS_MAX: usize = 64;

/// A dispute (chargeback), read from a `charge.dispute.*` event by the
/// fields of Stripe's dispute object the ledger needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeDispute {
    /// `id` (`dp_...`).
    pub dispute_id: String,
    /// `payment_intent` (an id or the expanded object); `None` for a
    /// dispute of a charge made without one.
    pub payment_id: Option<String>,
    /// `charge` (an id or the expanded object).
    pub charge_id: Option<String>,
    /// `amount`: the disputed amount, in the minor unit.
    pub amount_cents: i64,
    pub currency: String,
    pub status: String,
    pub reason: String,
    /// The sum of the balance transactions' `fee` (Stripe's dispute fee,
    /// less any it gave back), in the minor unit.
    pub fee_cents: i64,
    /// How many balance transactions were listed (at most
    /// `DISPUTE_BALANCE_TRANSACTIONS_MAX` are read).
    pub balance_transactions: u32,
    /// Funds were withdrawn: the event is `funds_withdrawn`, or a balance
    /// transaction has a negative `amount`.
    pub funds_withdrawn: bool,
    /// Funds were given back: the event is `funds_reinstated`, or a
    /// balance transaction has a positive `amount`.
    pub funds_reinstated: bool,
}

/// The dispute of a `charge.dispute.*` event; `None` for any other event
/// or a dispute object without an `id`.
pub fn dispute(body: &StripeEventBody) -> Option<StripeDispute> {
    let kind = body.kind()?.strip_prefix(DISPUTE_EVENT_PREFIX)?;
    let object = body.object();
    let mut fee_cents: i64 = 0;
    let mut funds_withdrawn = kind == "funds_withdrawn";
    let mut funds_reinstated = kind == "funds_reinstated";
    let transactions = object.objects("balance_transactions");
    let transactions = &transactions[..transactions.len().min(DISPUTE_BALANCE_TRANSACTIONS_MAX)];
    for transaction in transactions {
        fee_cents = fee_cents.saturating_add(transaction.integer("fee").unwrap_or(0));
        match transaction.integer("amount") {
            Some(amount) if amount < 0 => funds_withdrawn = true,
            Some(amount) if amount > 0 => funds_reinstated = true,
            _ => {}
        }
    }
    Some(StripeDispute {
        dispute_id: object.text("id")?.to_string(),
        payment_id: object.id_of("payment_intent").map(str::to_string),
        charge_id: object.id_of("charge").map(str::to_string),
        amount_cents: object.integer("amount").unwrap_or(0).max(0),
        currency: object.text("currency").unwrap_or_default().to_string(),
        status: object.text("status").unwrap_or_default().to_string(),
        reason: object.text("reason").unwrap_or_default().to_string(),
        fee_cents,
        balance_transactions: u32::try_from(transactions.len()).unwrap_or(u32::MAX),
        funds_withdrawn,
        funds_reinstated,
    })
}

/// A completed Checkout Session and the PaymentIntent it paid with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub session_id: String,
    pub payment_id: String,
}

/// The Checkout Session of a recorded `checkout.session.completed`, with
/// its PaymentIntent (an id, or an expanded PaymentIntent); `None` for any
/// other event, or a session that names no PaymentIntent.
pub fn checkout_session(record: &StripeEventRecorded) -> Option<CheckoutSession> {
    if record.stripe_event_type != CHECKOUT_SESSION_COMPLETED {
        return None;
    }
    let body = StripeEventBody::parse(&record.body).ok()?;
    let session = body.object();
    Some(CheckoutSession {
        session_id: session.text("id")?.to_string(),
        payment_id: session.id_of("payment_intent")?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(kind: &str, object: Value) -> StripeEventRecorded {
        StripeEventRecorded {
            stripe_event_id: "evt_1".into(),
            stripe_event_type: kind.into(),
            stripe_created: 5,
            body: serde_json::json!({"id": "evt_1", "type": kind, "created": 5, "data": {"object": object}})
                .to_string(),
        }
    }

    #[test]
    fn a_session_names_its_payment_intent_by_id() {
        let record = recorded(CHECKOUT_SESSION_COMPLETED, serde_json::json!({"id": "cs_1", "payment_intent": "pi_1"}));
        let expected = CheckoutSession { session_id: "cs_1".into(), payment_id: "pi_1".into() };
        assert_eq!(checkout_session(&record), Some(expected));
    }

    #[test]
    fn a_session_with_an_expanded_payment_intent_names_its_id() {
        let object = serde_json::json!({"id": "cs_2", "payment_intent": {"id": "pi_2", "object": "payment_intent"}});
        let record = recorded(CHECKOUT_SESSION_COMPLETED, object);
        let expected = CheckoutSession { session_id: "cs_2".into(), payment_id: "pi_2".into() };
        assert_eq!(checkout_session(&record), Some(expected));
    }

    #[test]
    fn a_session_without_a_payment_intent_or_another_event_names_none() {
        let unpaid = recorded(CHECKOUT_SESSION_COMPLETED, serde_json::json!({"id": "cs_3", "payment_intent": null}));
        assert_eq!(checkout_session(&unpaid), None);
        let expanded_without_id =
            recorded(CHECKOUT_SESSION_COMPLETED, serde_json::json!({"id": "cs_3", "payment_intent": {}}));
        assert_eq!(checkout_session(&expanded_without_id), None);
        let other = recorded("payment_intent.succeeded", serde_json::json!({"id": "pi_4"}));
        assert_eq!(checkout_session(&other), None);
        let not_json = StripeEventRecorded { body: "{".into(), ..recorded(CHECKOUT_SESSION_COMPLETED, Value::Null) };
        assert_eq!(checkout_session(&not_json), None);
    }

    fn dispute_event(kind: &str, object: Value) -> StripeEventBody {
        let body = serde_json::json!({"id": "evt_d", "type": kind, "created": 5, "data": {"object": object}});
        StripeEventBody::parse(&body.to_string()).expect("JSON")
    }

    #[test]
    fn a_dispute_is_read_from_stripes_dispute_object() {
        let object = serde_json::json!({
            "id": "dp_1", "object": "dispute", "amount": 499, "currency": "usd", "status": "needs_response",
            "reason": "fraudulent", "charge": "ch_1", "payment_intent": {"id": "pi_1"},
            "balance_transactions": [{"id": "txn_1", "object": "balance_transaction", "amount": -499,
                "fee": 1500, "type": "adjustment"}]
        });
        let read = dispute(&dispute_event("charge.dispute.created", object)).expect("a dispute");
        let expected = StripeDispute {
            dispute_id: "dp_1".into(),
            payment_id: Some("pi_1".into()),
            charge_id: Some("ch_1".into()),
            amount_cents: 499,
            currency: "usd".into(),
            status: "needs_response".into(),
            reason: "fraudulent".into(),
            fee_cents: 1500,
            balance_transactions: 1,
            funds_withdrawn: true,
            funds_reinstated: false,
        };
        assert_eq!(read, expected);
    }

    #[test]
    fn the_event_type_says_funds_moved_when_no_balance_transaction_does() {
        let object = serde_json::json!({"id": "dp_2", "amount": 100, "balance_transactions": []});
        let withdrawn = dispute(&dispute_event("charge.dispute.funds_withdrawn", object.clone())).expect("dispute");
        assert!(withdrawn.funds_withdrawn && !withdrawn.funds_reinstated);
        let reinstated = dispute(&dispute_event("charge.dispute.funds_reinstated", object.clone())).expect("dispute");
        assert!(reinstated.funds_reinstated && !reinstated.funds_withdrawn);
        let closed = dispute(&dispute_event("charge.dispute.closed", object.clone())).expect("dispute");
        assert!(!closed.funds_reinstated && !closed.funds_withdrawn);
        assert_eq!(dispute(&dispute_event("charge.refunded", object)), None);
        assert_eq!(dispute(&dispute_event("charge.dispute.created", serde_json::json!({"amount": 1}))), None);
    }

    #[test]
    fn fields_are_read_by_name_and_type() {
        let body = StripeEventBody::parse(
            r#"{"id":"evt_9","type":"charge.refunded","created":7,"data":{"object":{"amount":499,
                "payment_intent":{"id":"pi_9"},"metadata":{"userId":"u"},"currency":"usd"}}}"#,
        )
        .expect("JSON");
        assert_eq!((body.id(), body.kind(), body.created_s()), (Some("evt_9"), Some("charge.refunded"), Some(7)));
        let object = body.object();
        assert_eq!(object.integer("amount"), Some(499));
        assert_eq!(object.text("amount"), None, "a number is not text");
        assert_eq!(object.text("currency"), Some("usd"));
        assert_eq!(object.id_of("payment_intent"), Some("pi_9"));
        assert_eq!(object.nested("metadata").and_then(|m| m.text("userId")), Some("u"));
        assert_eq!(object.nested("currency"), None, "text is not an object");
        let empty = StripeEventBody::parse(r#"{"id":"evt_0"}"#).expect("JSON");
        assert_eq!(empty.object().text("id"), None);
        assert_eq!(empty.kind(), None);
    }
}
