//! Upcasters: older schema versions of an event, read as the current one.
//! They work on the JSON payload before it is typed, so that the Rust types
//! only ever describe the current version.

use serde_json::Value;

use crate::SchemaError;

/// Turns a stored payload of `type_name` at `from_version` into the payload
/// of the current version, one version step at a time.
pub fn upcast(type_name: &str, from_version: u16, mut payload: Value) -> Result<Value, SchemaError> {
    let current = crate::current_version(type_name).ok_or_else(|| SchemaError::UnknownType(type_name.to_string()))?;
    if from_version == 0 || from_version > current {
        return Err(SchemaError::UnknownVersion { type_name: type_name.to_string(), version: from_version });
    }
    // Bounded by the version numbers themselves: each step raises `version`.
    let mut version = from_version;
    while version < current {
        payload = step(type_name, version, payload)?;
        version += 1;
    }
    Ok(payload)
}

fn step(type_name: &str, version: u16, mut payload: Value) -> Result<Value, SchemaError> {
    match (type_name, version) {
        // Version 1 of `stream.started` had no category: such streams were
        // listed under "general" by the old backend, and still are.
        ("stream.started", 1) => {
            let map = payload.as_object_mut().ok_or_else(|| SchemaError::Invalid {
                type_name: type_name.to_string(),
                reason: "payload is not an object".to_string(),
            })?;
            map.entry("category").or_insert_with(|| Value::String("general".to_string()));
            Ok(payload)
        }
        _ => Err(SchemaError::UnknownVersion { type_name: type_name.to_string(), version }),
    }
}
