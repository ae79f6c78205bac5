//! The envelope every stored event travels in, its stored encoding, and the
//! hash chain that makes the log tamper-evident.
//!
//! A stored event is the canonical JSON of the envelope (see `canonical`),
//! whose `hash` is the SHA-256 of that same encoding without the `hash` key,
//! and whose `prevHash` is the `hash` of the previous event on the same
//! aggregate subject (`GENESIS_HASH` for the first).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::canonical::{map_to_canonical_with_slot, sha256_hex, to_canonical};
use crate::{Event, SchemaError};

/// The `prevHash` of the first event of every aggregate.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    pub kind: ActorKind,
    /// The user's id for users and admins; the component's name for the
    /// system (`gift-reactor`); the Stripe event id for Stripe.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Admin,
    System,
    Stripe,
}

impl Actor {
    pub fn user(id: Uuid) -> Actor {
        Actor { kind: ActorKind::User, id: Some(id.to_string()) }
    }
    pub fn admin(id: Uuid) -> Actor {
        Actor { kind: ActorKind::Admin, id: Some(id.to_string()) }
    }
    pub fn system(component: &str) -> Actor {
        Actor { kind: ActorKind::System, id: Some(component.to_string()) }
    }
    /// Stripe, through the webhook event `stripe_event_id`.
    pub fn stripe(stripe_event_id: &str) -> Actor {
        Actor { kind: ActorKind::Stripe, id: Some(stripe_event_id.to_string()) }
    }
}

/// What arrives with a command and ends up in the envelope: ids and time come
/// from outside the domain, never from a clock or a generator inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// UUID v7.
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub command_id: String,
    pub correlation_id: String,
    pub actor: Actor,
}

/// The envelope fields other than `type` and `payload`, in their stored shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// UUID v7: unique, and ordered by creation time.
    pub event_id: Uuid,
    pub schema_version: u16,
    pub aggregate_id: String,
    /// 1 for an aggregate's first event, then one more for each event.
    pub sequence: u64,
    pub occurred_at: DateTime<Utc>,
    pub command_id: String,
    /// The command's content hash, for commands with an idempotency id: the
    /// record of the command can be rebuilt from the event alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_fingerprint: Option<String>,
    pub correlation_id: String,
    pub actor: Actor,
    pub prev_hash: String,
    pub hash: String,
}

/// The stored shape of an envelope, read in one pass by `Envelope::decode`:
/// the header's fields, `type`, and the payload left unparsed.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireEnvelope<'a> {
    event_id: Uuid,
    schema_version: u16,
    aggregate_id: String,
    sequence: u64,
    occurred_at: DateTime<Utc>,
    command_id: String,
    #[serde(default)]
    command_fingerprint: Option<String>,
    correlation_id: String,
    actor: Actor,
    prev_hash: String,
    hash: String,
    #[serde(rename = "type", borrow)]
    type_name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a serde_json::value::RawValue,
}

/// One stored event: the header and the typed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub header: Header,
    pub event: Event,
}

impl Envelope {
    /// Builds the envelope of `event`, the `sequence`-th of its aggregate,
    /// chained after `prev_hash`, and computes its hash.
    pub fn seal(meta: &EventMeta, event: Event, sequence: u64, prev_hash: &str) -> Envelope {
        Self::seal_for_command(meta, None, event, sequence, prev_hash)
    }

    /// `seal`, for an event of a command with an idempotency id whose content
    /// hashes to `fingerprint`.
    pub fn seal_for_command(
        meta: &EventMeta,
        fingerprint: Option<&str>,
        event: Event,
        sequence: u64,
        prev_hash: &str,
    ) -> Envelope {
        Self::seal_encoded(meta, fingerprint, event, sequence, prev_hash).0
    }

    /// `seal_for_command`, with the stored bytes (`encode`) written in the
    /// same pass: a writer needs both, and building the JSON tree twice was
    /// most of the cost of a command on the client.
    pub fn seal_encoded(
        meta: &EventMeta,
        fingerprint: Option<&str>,
        event: Event,
        sequence: u64,
        prev_hash: &str,
    ) -> (Envelope, Vec<u8>) {
        let header = Header {
            event_id: meta.event_id,
            schema_version: event.schema_version(),
            aggregate_id: event.aggregate_id(),
            sequence,
            occurred_at: meta.occurred_at,
            command_id: meta.command_id.clone(),
            command_fingerprint: fingerprint.map(str::to_string),
            correlation_id: meta.correlation_id.clone(),
            actor: meta.actor.clone(),
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        let mut envelope = Envelope { header, event };
        let (without_hash, slot) = map_to_canonical_with_slot(&envelope.to_map_without_hash(), "hash");
        envelope.header.hash = sha256_hex(&without_hash);
        let bytes = slot.fill(&without_hash, "hash", &envelope.header.hash);
        (envelope, bytes)
    }

    /// The permanent event type name.
    pub fn type_name(&self) -> &'static str {
        self.event.type_name()
    }

    /// The subject the event is stored under: `hb.<kind>.<aggregate id>`.
    pub fn subject(&self) -> String {
        subject(self.event.aggregate_kind().as_str(), &self.header.aggregate_id)
    }

    /// The stored bytes: canonical JSON, hash included.
    pub fn encode(&self) -> Vec<u8> {
        let (without_hash, slot) = map_to_canonical_with_slot(&self.to_map_without_hash(), "hash");
        slot.fill(&without_hash, "hash", &self.header.hash)
    }

    fn to_map_without_hash(&self) -> Map<String, Value> {
        // Both serialisations are of plain data types with string keys:
        // they cannot fail, and a failure would be a bug in this crate.
        let mut map = match serde_json::to_value(&self.header) {
            Ok(Value::Object(map)) => map,
            other => unreachable!("a header serialises to an object: {other:?}"),
        };
        map.remove("hash");
        match serde_json::to_value(&self.event) {
            Ok(Value::Object(event)) => map.extend(event),
            other => unreachable!("an event serialises to an object: {other:?}"),
        }
        map
    }

    /// Reads stored bytes, upcasting an older schema version to the current
    /// one. Does not check the hash: see `verify`.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, SchemaError> {
        // The fast path reads events of the current schema version straight
        // into their types; anything else (an older version to upcast, or a
        // malformed event, whose error the general path words) takes the
        // general path through `serde_json::Value`. Both give the same
        // envelope: the fast path only accepts what the general one accepts.
        if let Some(envelope) = Self::decode_current(bytes) {
            return Ok(envelope);
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))?;
        Self::from_value(value)
    }

    /// Decodes an event stored at its type's current schema version in one
    /// pass over the bytes (the payload is kept as a borrowed slice until the
    /// type is known), or `None`.
    fn decode_current(bytes: &[u8]) -> Option<Envelope> {
        let wire: WireEnvelope<'_> = serde_json::from_slice(bytes).ok()?;
        if crate::current_version(&wire.type_name)? != wire.schema_version {
            return None;
        }
        // `type` first, so that the adjacently tagged `Event` reads its
        // payload without buffering it.
        let payload = wire.payload.get();
        let mut tagged = String::with_capacity(payload.len() + wire.type_name.len() + 24);
        tagged.push_str("{\"type\":");
        tagged.push_str(&serde_json::to_string(&*wire.type_name).ok()?);
        tagged.push_str(",\"payload\":");
        tagged.push_str(payload);
        tagged.push('}');
        let event: Event = serde_json::from_str(&tagged).ok()?;
        if wire.aggregate_id != event.aggregate_id() {
            return None;
        }
        let header = Header {
            event_id: wire.event_id,
            schema_version: wire.schema_version,
            aggregate_id: wire.aggregate_id,
            sequence: wire.sequence,
            occurred_at: wire.occurred_at,
            command_id: wire.command_id,
            command_fingerprint: wire.command_fingerprint,
            correlation_id: wire.correlation_id,
            actor: wire.actor,
            prev_hash: wire.prev_hash,
            hash: wire.hash,
        };
        Some(Envelope { header, event })
    }

    fn from_value(value: Value) -> Result<Envelope, SchemaError> {
        let Value::Object(mut map) = value else {
            return Err(SchemaError::Json("an event is a JSON object".into()));
        };
        let type_name = match map.remove("type") {
            Some(Value::String(t)) => t,
            _ => return Err(SchemaError::Json("`type` is missing or not a string".into())),
        };
        let stored_version = map
            .get("schemaVersion")
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(|| SchemaError::Json("`schemaVersion` is missing or not a small integer".into()))?;
        let current = crate::current_version(&type_name).ok_or_else(|| SchemaError::UnknownType(type_name.clone()))?;
        let mut payload = map.remove("payload").ok_or_else(|| SchemaError::Json("`payload` is missing".into()))?;
        if stored_version != current {
            payload = crate::upcast::upcast(&type_name, stored_version, payload)?;
            map.insert("schemaVersion".into(), Value::from(current));
        }
        let header: Header = serde_json::from_value(Value::Object(map))
            .map_err(|e| SchemaError::Invalid { type_name: type_name.clone(), reason: e.to_string() })?;
        let mut tagged = Map::with_capacity(2);
        tagged.insert("type".into(), Value::String(type_name.clone()));
        tagged.insert("payload".into(), payload);
        let event: Event = serde_json::from_value(Value::Object(tagged))
            .map_err(|e| SchemaError::Invalid { type_name: type_name.clone(), reason: e.to_string() })?;
        if header.aggregate_id != event.aggregate_id() {
            return Err(SchemaError::Invalid {
                type_name,
                reason: format!(
                    "aggregateId {:?} is not the payload's {:?}",
                    header.aggregate_id,
                    event.aggregate_id()
                ),
            });
        }
        Ok(Envelope { header, event })
    }

    /// Reads stored bytes and checks that their hash is the hash of their
    /// content. The link to the previous event is the caller's to check
    /// (`header.prev_hash`), since only it knows the previous event.
    pub fn verify(bytes: &[u8]) -> Result<Envelope, SchemaError> {
        let mut value: Value = serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))?;
        let stored_hash = match value.as_object_mut().and_then(|m| m.remove("hash")) {
            Some(Value::String(h)) => h,
            _ => return Err(SchemaError::Json("`hash` is missing or not a string".into())),
        };
        let computed = sha256_hex(&to_canonical(&value));
        if computed != stored_hash {
            return Err(SchemaError::HashMismatch { stored: stored_hash, computed });
        }
        if let Value::Object(map) = &mut value {
            map.insert("hash".into(), Value::String(stored_hash));
        }
        Self::from_value(value)
    }
}

/// The subject of an aggregate: `hb.<kind>.<id>`.
pub fn subject(kind: &str, aggregate_id: &str) -> String {
    format!("hb.{kind}.{aggregate_id}")
}

/// The first token of the subjects of expiring command records: a stream of
/// their own, outside the ledger's `hb.>`, keeps them for the idempotency
/// horizon only (decision 0017).
pub const RECORD_SUBJECT_PREFIX: &str = "hbcmd";

/// Where the record of a command (`command_record_id`) is kept while its id
/// is remembered: `hbcmd.<record id>`. Logs written before decision 0017
/// hold records on `subject("command", record_id)` in the ledger's stream,
/// for ever.
pub fn expiring_record_subject(record_id: &str) -> String {
    format!("{RECORD_SUBJECT_PREFIX}.{record_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general(bytes: &[u8]) -> Result<Envelope, SchemaError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| SchemaError::Json(e.to_string()))?;
        Envelope::from_value(value)
    }

    /// Every fixture reads the same through the one-pass path as through
    /// `serde_json::Value`; older versions are left to the general path.
    #[test]
    fn the_fast_path_reads_every_fixture_as_the_general_path_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut current = 0;
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            let value: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
            let bytes = crate::canonical::to_canonical(&value);
            let expected = general(&bytes).expect("the general path reads every fixture");
            match Envelope::decode_current(&bytes) {
                Some(fast) => {
                    assert_eq!(fast, expected, "{}", path.display());
                    current += 1;
                }
                None => assert_ne!(
                    value["schemaVersion"].as_u64(),
                    crate::current_version(value["type"].as_str().unwrap_or_default()).map(u64::from),
                    "{} is current yet missed the fast path",
                    path.display()
                ),
            }
        }
        assert!(current >= 19, "only {current} fixtures took the fast path");
    }

    #[test]
    fn the_fast_path_refuses_what_the_general_path_refuses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let value: Value =
            serde_json::from_slice(&std::fs::read(dir.join("ledger.coins_purchased.v1.json")).expect("read"))
                .expect("json");
        let mut wrong_aggregate = value.clone();
        wrong_aggregate["aggregateId"] = Value::from("00000000-0000-0000-0000-000000000000");
        let mut unknown_field = value.clone();
        unknown_field["extra"] = Value::from(1);
        let mut unknown_type = value;
        unknown_type["type"] = Value::from("ledger.nothing");
        for bad in [wrong_aggregate, unknown_field, unknown_type] {
            let bytes = crate::canonical::to_canonical(&bad);
            assert!(Envelope::decode_current(&bytes).is_none());
            assert!(Envelope::decode(&bytes).is_err());
            assert_eq!(Envelope::decode(&bytes).err(), general(&bytes).err());
        }
    }

    /// The bytes written while sealing are the envelope's encoding, as
    /// `verify` checks it: every fixture, re-sealed.
    #[test]
    fn sealed_bytes_are_the_canonical_encoding_with_the_hash() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let path = entry.expect("entry").path();
            let stored = Envelope::decode(&std::fs::read(&path).expect("read")).expect("decodes");
            let meta = EventMeta {
                event_id: stored.header.event_id,
                occurred_at: stored.header.occurred_at,
                command_id: stored.header.command_id.clone(),
                correlation_id: stored.header.correlation_id.clone(),
                actor: stored.header.actor.clone(),
            };
            let fingerprint = stored.header.command_fingerprint.as_deref();
            let (sealed, bytes) = Envelope::seal_encoded(
                &meta,
                fingerprint,
                stored.event.clone(),
                stored.header.sequence,
                &stored.header.prev_hash,
            );
            assert_eq!(bytes, sealed.encode(), "{}", path.display());
            let verified = Envelope::verify(&bytes).expect("the sealed bytes verify");
            assert_eq!(verified, sealed, "{}", path.display());
            let mut value: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(crate::canonical::to_canonical(&value), bytes, "{} is canonical", path.display());
            value.as_object_mut().expect("object").remove("hash");
            assert_eq!(sealed.header.hash, sha256_hex(&to_canonical(&value)));
        }
    }
}
