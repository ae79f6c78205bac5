//! The canonical encoding and the hash chain.

use events_schema::canonical::to_canonical;
use events_schema::{Envelope, Event, GENESIS_HASH, SchemaError, subject};
use serde_json::Value;

use crate::samples::{envelopes, events, meta};

#[test]
fn a_sealed_event_verifies_and_decodes_to_itself() {
    for envelope in envelopes() {
        let bytes = envelope.encode();
        assert_eq!(Envelope::verify(&bytes).as_ref(), Ok(&envelope));
        assert_eq!(Envelope::decode(&bytes).as_ref(), Ok(&envelope));
        assert_eq!(envelope.header.hash.len(), 64);
    }
}

#[test]
fn events_chain_to_the_previous_event_of_their_aggregate() {
    let first = Envelope::seal(&meta(1), events()[3].clone(), 1, GENESIS_HASH);
    let second = Envelope::seal(&meta(2), events()[4].clone(), 2, &first.header.hash);
    assert_eq!(second.header.prev_hash, first.header.hash);
    assert_ne!(second.header.hash, first.header.hash);
    assert_eq!(first.subject(), subject("ledger", &first.header.aggregate_id));
    assert!(first.subject().starts_with("hb.ledger."));
}

#[test]
fn any_altered_byte_of_any_stored_event_is_detected() {
    for envelope in envelopes() {
        let bytes = envelope.encode();
        for i in 0..bytes.len() {
            for xor in [0x01u8, 0x20, 0x80] {
                let mut altered = bytes.clone();
                altered[i] ^= xor;
                assert!(
                    Envelope::verify(&altered).is_err(),
                    "{}: byte {i} ^ {xor:#x} went unnoticed",
                    envelope.type_name()
                );
            }
        }
    }
}

#[test]
fn the_hash_does_not_depend_on_whitespace_or_key_order() {
    for envelope in envelopes() {
        let value: Value = serde_json::from_slice(&envelope.encode()).expect("json");
        let pretty = serde_json::to_vec_pretty(&value).expect("json");
        assert_eq!(Envelope::verify(&pretty).as_ref(), Ok(&envelope));
        // Keys in reverse order, written by hand.
        let map = value.as_object().expect("object");
        let mut keys: Vec<&String> = map.keys().collect();
        keys.reverse();
        let reordered = format!(
            "{{{}}}",
            keys.iter()
                .map(|k| format!("{}:{}", serde_json::to_string(k).expect("key"), map[k.as_str()]))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(Envelope::verify(reordered.as_bytes()).as_ref(), Ok(&envelope));
    }
}

#[test]
fn canonical_json_sorts_keys_and_has_no_whitespace() {
    let value: Value = serde_json::from_str(r#"{ "b": [1, {"z": null, "a": true}], "a": "x\"y" }"#).expect("json");
    assert_eq!(String::from_utf8(to_canonical(&value)).expect("utf8"), r#"{"a":"x\"y","b":[1,{"a":true,"z":null}]}"#);
}

fn decode_value(value: Value) -> Result<Envelope, SchemaError> {
    Envelope::decode(&serde_json::to_vec(&value).expect("json"))
}

#[test]
fn unknown_types_versions_and_mismatched_aggregates_are_refused() {
    let good: Value = serde_json::from_slice(&envelopes()[0].encode()).expect("json");

    let mut unknown = good.clone();
    unknown["type"] = Value::from("user.teleported");
    assert_eq!(decode_value(unknown), Err(SchemaError::UnknownType("user.teleported".into())));

    let mut future = good.clone();
    future["schemaVersion"] = Value::from(7);
    assert!(matches!(decode_value(future), Err(SchemaError::UnknownVersion { version: 7, .. })));

    let mut moved = good.clone();
    moved["aggregateId"] = Value::from("someone-else");
    assert!(matches!(decode_value(moved), Err(SchemaError::Invalid { .. })));

    let mut extra = good;
    extra["surprise"] = Value::from(1);
    assert!(matches!(decode_value(extra), Err(SchemaError::Invalid { .. })));

    assert!(matches!(Envelope::decode(b"[1,2]"), Err(SchemaError::Json(_))));
    assert!(matches!(Envelope::decode(b"not json"), Err(SchemaError::Json(_))));
}

#[test]
fn accounts_read_back_from_their_strings() {
    use events_schema::Account;
    let u = crate::samples::id(1);
    for account in Account::every_kind(u) {
        assert_eq!(account.to_string().parse::<Account>(), Ok(account));
    }
    for bad in ["", "wallet", "wallet:", "wallet:not-a-uuid", "platform:cash", "transit:x"] {
        assert!(bad.parse::<Account>().is_err(), "{bad:?}");
    }
}

#[test]
fn every_event_names_its_aggregate_and_type() {
    for event in events() {
        assert!(event.type_name().starts_with(event.aggregate_kind().as_str()), "{}", event.type_name());
        assert!(!event.aggregate_id().is_empty());
        assert!(matches!(event.ledger_commit().is_some(), x if x == event.type_name().starts_with("ledger.")));
        let _: &Event = &event;
    }
}
