//! Golden fixtures: stored events of every type and version, which must keep
//! reading. A fixture is written once and never regenerated; a change that
//! breaks one needs an upcaster, not a new fixture.

use std::path::PathBuf;

use events_schema::canonical::{sha256_hex, to_canonical};
use events_schema::{EVENT_TYPES, Envelope, Event};
use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn write_missing() -> bool {
    std::env::var_os("WRITE_MISSING_FIXTURES").is_some()
}

fn write_if_missing(file: &str, value: &Value) {
    let path = dir().join(file);
    if !path.exists() && write_missing() {
        std::fs::create_dir_all(dir()).expect("fixtures dir");
        let text = serde_json::to_string_pretty(value).expect("json") + "\n";
        std::fs::write(&path, text).expect("fixture written");
    }
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).unwrap_or_else(|e| {
        panic!(
            "fixture {file} is missing ({e}); a new event type writes its first fixture with WRITE_MISSING_FIXTURES=1"
        )
    })
}

/// `stream.started` as version 1 wrote it, before streams had a category.
fn stream_started_v1() -> Value {
    let sample = crate::samples::envelopes()
        .into_iter()
        .find(|e| matches!(e.event, Event::StreamStarted(_)))
        .expect("a stream.started sample");
    let mut value: Value = serde_json::from_slice(&sample.encode()).expect("json");
    let map = value.as_object_mut().expect("object");
    map.remove("hash");
    map.insert("schemaVersion".into(), Value::from(1));
    map["payload"].as_object_mut().expect("payload").remove("category");
    let hash = sha256_hex(&to_canonical(&value));
    value.as_object_mut().expect("object").insert("hash".into(), Value::String(hash));
    value
}

#[test]
fn every_current_event_type_has_a_fixture_that_still_reads_and_round_trips() {
    for sample in crate::samples::envelopes() {
        let file = format!("{}.v{}.json", sample.type_name(), sample.header.schema_version);
        write_if_missing(&file, &serde_json::from_slice(&sample.encode()).expect("json"));
    }
    for (type_name, version) in EVENT_TYPES {
        let file = format!("{type_name}.v{version}.json");
        let bytes = read(&file);
        let envelope = Envelope::verify(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(envelope.type_name(), *type_name, "{file}");
        assert_eq!(envelope.header.schema_version, *version, "{file}");
        // Re-encoding a current-version event gives the same canonical bytes
        // the fixture holds, so its hash still verifies.
        let stored: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(envelope.encode(), to_canonical(&stored), "{file} round-trips");
    }
}

#[test]
fn stream_started_version_1_upcasts_to_the_general_category() {
    write_if_missing("stream.started.v1.json", &stream_started_v1());
    let bytes = read("stream.started.v1.json");
    let stored: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(stored["schemaVersion"], 1);
    assert!(stored["payload"].get("category").is_none(), "version 1 had no category");
    // The hash covers the bytes as stored, before upcasting.
    let envelope = Envelope::verify(&bytes).expect("a version 1 event verifies");
    assert_eq!(envelope.header.schema_version, 2);
    let Event::StreamStarted(started) = &envelope.event else { panic!("stream.started") };
    assert_eq!(started.category, "general");
    assert_eq!(started.title, "Friday");
}

#[test]
fn the_fixture_folder_holds_nothing_unexpected() {
    let mut expected: Vec<String> = EVENT_TYPES.iter().map(|(t, v)| format!("{t}.v{v}.json")).collect();
    expected.push("stream.started.v1.json".into());
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .expect("fixtures dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, expected);
}

#[test]
fn purchases_and_payments_stored_before_single_appends_read_with_nothing_pending() {
    // Written when a purchase was one atomic batch: no `sourcePosition` in
    // the ledger commit, no `postedPosition` in the payment's state.
    let bytes = read("ledger.coins_purchased.v1.json");
    assert!(!String::from_utf8_lossy(&bytes).contains("sourcePosition"));
    let Event::CoinsPurchased(purchased) = Envelope::verify(&bytes).expect("verifies").event else {
        panic!("ledger.coins_purchased")
    };
    assert_eq!(purchased.source_position, 0);
    let bytes = read("payment.purchase_credited.v1.json");
    assert!(!String::from_utf8_lossy(&bytes).contains("postedPosition"));
    let Event::PaymentPurchaseCredited(credited) = Envelope::verify(&bytes).expect("verifies").event else {
        panic!("payment.purchase_credited")
    };
    assert_eq!(credited.state_after.posted_position, None);
}

#[test]
fn users_stored_before_sessions_could_be_revoked_read_at_sessions_epoch_0() {
    let bytes = read("user.roles_changed.v1.json");
    assert!(!String::from_utf8_lossy(&bytes).contains("sessionsEpoch"));
    let Event::UserRolesChanged(changed) = Envelope::verify(&bytes).expect("verifies").event else {
        panic!("user.roles_changed")
    };
    assert_eq!(changed.state_after.sessions_epoch, 0);
}
