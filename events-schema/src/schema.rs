//! JSON Schema (2020-12) of every event type, generated from the types.
//! The files under `events-schema/schemas/` are these, committed; a test
//! fails when they drift from the code.

use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Value, json};

use crate::*;

fn payload_schema<T: JsonSchema>() -> Value {
    let generator = SchemaGenerator::default();
    generator.into_root_schema_for::<T>().to_value()
}

/// The schema of a whole stored event of one type: the envelope's header
/// fields with `type`, `schemaVersion` and `payload` pinned to that type.
fn envelope_schema(type_name: &str, version: u16, payload: Value) -> Value {
    let mut header = payload_schema::<Header>();
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://halobuzz.dev/schemas/{type_name}.v{version}.json"),
        "title": format!("{type_name} v{version}"),
        "type": "object",
    });
    let header_props =
        header.get_mut("properties").and_then(Value::as_object_mut).map(std::mem::take).unwrap_or_default();
    let mut required: Vec<Value> = header.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut props = header_props;
    props.insert("type".into(), json!({ "const": type_name }));
    props.insert("schemaVersion".into(), json!({ "const": version }));
    let mut payload = payload;
    let mut defs = serde_json::Map::new();
    for source in [&mut header, &mut payload] {
        if let Some(Value::Object(d)) = source.as_object_mut().and_then(|m| m.remove("$defs")) {
            defs.extend(d);
        }
    }
    if let Some(m) = payload.as_object_mut() {
        m.remove("$schema");
    }
    props.insert("payload".into(), payload);
    required.push(json!("type"));
    required.push(json!("payload"));
    root["properties"] = Value::Object(props);
    root["required"] = Value::Array(required);
    root["additionalProperties"] = json!(false);
    if !defs.is_empty() {
        root["$defs"] = Value::Object(defs);
    }
    root
}

/// `value` with every object's keys in sorted order. Whether `serde_json`
/// keeps insertion order (its `preserve_order` feature, which another crate
/// of the build may turn on) must not change the committed files.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `(file name, schema)` for every current event type, keys sorted.
pub fn event_schemas() -> Vec<(String, Value)> {
    EVENT_TYPES
        .iter()
        .map(|(type_name, version)| {
            let payload = match *type_name {
                "user.registered" => payload_schema::<UserRegistered>(),
                "user.roles_changed" => payload_schema::<UserRolesChanged>(),
                "reservation.claimed" => payload_schema::<ReservationClaimed>(),
                "ledger.coins_purchased" => payload_schema::<CoinsPurchased>(),
                "ledger.purchase_refunded" => payload_schema::<PurchaseRefunded>(),
                "ledger.gift_sent" => payload_schema::<GiftSent>(),
                "ledger.gifts_received" => payload_schema::<GiftsReceived>(),
                "ledger.payout_requested" => payload_schema::<PayoutRequested>(),
                "ledger.payout_approved" => payload_schema::<PayoutApproved>(),
                "ledger.payout_rejected" => payload_schema::<PayoutRejected>(),
                "ledger.adjusted" => payload_schema::<LedgerAdjusted>(),
                "stream.started" => payload_schema::<StreamStarted>(),
                "stream.viewer_joined" => payload_schema::<ViewerJoined>(),
                "stream.viewer_left" => payload_schema::<ViewerLeft>(),
                "stream.ended" => payload_schema::<StreamEnded>(),
                "channel.went_live" => payload_schema::<ChannelWentLive>(),
                "channel.went_offline" => payload_schema::<ChannelWentOffline>(),
                "stripe.event_recorded" => payload_schema::<StripeEventRecorded>(),
                "command.recorded" => payload_schema::<CommandRecorded>(),
                "payment.purchase_credited" => payload_schema::<PaymentPurchaseCredited>(),
                "payment.refund_recorded" => payload_schema::<PaymentRefundRecorded>(),
                "payment.dispute_recorded" => payload_schema::<PaymentDisputeRecorded>(),
                "payment.resolved" => payload_schema::<PaymentResolved>(),
                "payment.flagged" => payload_schema::<PaymentFlagged>(),
                "payment.posted" => payload_schema::<PaymentPosted>(),
                "user.sessions_revoked" => payload_schema::<UserSessionsRevoked>(),
                "session.rotated" => payload_schema::<SessionRotated>(),
                "session.ended" => payload_schema::<SessionEnded>(),
                "adjustment.proposed" => payload_schema::<AdjustmentProposed>(),
                "adjustment.approved" => payload_schema::<AdjustmentApproved>(),
                "adjustment.rejected" => payload_schema::<AdjustmentRejected>(),
                other => unreachable!("EVENT_TYPES lists {other} without a schema"),
            };
            let file = format!("{type_name}.v{version}.json");
            (file, sorted(envelope_schema(type_name, *version, payload)))
        })
        .collect()
}
