//! The committed JSON Schema files are the ones the code generates.

use std::path::PathBuf;

use events_schema::{EVENT_TYPES, schema::event_schemas};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

#[test]
fn committed_schemas_match_the_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let generated = event_schemas();
    assert_eq!(generated.len(), EVENT_TYPES.len(), "one schema per event type");
    let mut drifted = Vec::new();
    for (file, schema) in &generated {
        let text = serde_json::to_string_pretty(schema).expect("a schema serialises") + "\n";
        let path = dir().join(file);
        if update {
            std::fs::create_dir_all(dir()).expect("schemas dir");
            std::fs::write(&path, &text).expect("schema written");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            drifted.push(file.clone());
        }
    }
    let committed = std::fs::read_dir(dir()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(committed, generated.len(), "no stale schema files in {}", dir().display());
    assert!(
        drifted.is_empty(),
        "schemas drifted from the code: {drifted:?}; if the change is intended (and old events still read), run UPDATE_SCHEMAS=1 cargo test -p events-schema"
    );
}

#[test]
fn every_sample_matches_its_schema_shape() {
    // A light structural check without a validator crate: every property a
    // stored event has is declared in its schema, and every required one is
    // present.
    for envelope in crate::samples::envelopes() {
        let value: serde_json::Value = serde_json::from_slice(&envelope.encode()).expect("json");
        let (_, schema) = event_schemas()
            .into_iter()
            .find(|(file, _)| file.starts_with(&format!("{}.v", envelope.type_name())))
            .expect("a schema for every type");
        let props = schema["properties"].as_object().expect("properties");
        for key in value.as_object().expect("object").keys() {
            assert!(props.contains_key(key), "{}: {key} is not in the schema", envelope.type_name());
        }
        for required in schema["required"].as_array().expect("required") {
            let key = required.as_str().expect("a name");
            assert!(value.get(key).is_some(), "{}: {key} is required", envelope.type_name());
        }
        let payload_props = schema["properties"]["payload"]["properties"].as_object().expect("payload properties");
        for key in value["payload"].as_object().expect("payload").keys() {
            assert!(payload_props.contains_key(key), "{}: payload.{key} is not in the schema", envelope.type_name());
        }
    }
}
