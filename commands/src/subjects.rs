//! The subjects of the aggregates: `hb.<kind>.<id>`, built with
//! `events_schema::subject` (only `events-schema` knows the stored names).

use events_schema::{
    AggregateKind, Event, ReservationKind, command_record_id, expiring_record_subject, payment_token, reservation_id,
    subject,
};
use uuid::Uuid;

/// The subject an event is appended to.
pub(crate) fn event_subject(event: &Event) -> String {
    subject(event.aggregate_kind().as_str(), &event.aggregate_id())
}

/// Subjects of the aggregates.
pub fn ledger_subject(user_id: Uuid) -> String {
    subject(AggregateKind::Ledger.as_str(), &user_id.to_string())
}
pub fn user_subject(user_id: Uuid) -> String {
    subject(AggregateKind::User.as_str(), &user_id.to_string())
}
pub fn stream_subject(stream_id: Uuid) -> String {
    subject(AggregateKind::Stream.as_str(), &stream_id.to_string())
}
pub fn channel_subject(host_id: Uuid) -> String {
    subject(AggregateKind::Channel.as_str(), &host_id.to_string())
}
pub fn reservation_subject(kind: ReservationKind, value: &str) -> String {
    subject(AggregateKind::Reservation.as_str(), &reservation_id(kind, value))
}
/// The log's reference from a payout id to its ledger (written with the
/// request).
pub fn payout_reference_subject(payout_id: Uuid) -> String {
    reservation_subject(ReservationKind::Payout, &payout_id.to_string())
}
/// A proposed adjustment (four eyes).
pub fn adjustment_subject(adjustment_id: Uuid) -> String {
    subject(AggregateKind::Adjustment.as_str(), &adjustment_id.to_string())
}
/// The session aggregate of one login (a refresh-token family).
pub fn session_subject(family_id: Uuid) -> String {
    subject(AggregateKind::Session.as_str(), &family_id.to_string())
}
/// The payment aggregate of a PaymentIntent.
pub fn payment_subject(payment_id: &str) -> String {
    subject(AggregateKind::Payment.as_str(), &payment_token(payment_id))
}
/// Where a Stripe event is recorded, once: its id must be a plain Stripe id
/// (`events_schema::is_plain_stripe_id`), which the webhook checks.
pub fn stripe_event_subject(stripe_event_id: &str) -> String {
    subject(AggregateKind::Stripe.as_str(), stripe_event_id)
}
/// The subject of the record of the command `command_id` in `scope`, in
/// the records stream, where it expires after the idempotency horizon.
pub(crate) fn record_subject(scope: &str, command_id: &str) -> String {
    expiring_record_subject(&command_record_id(scope, command_id))
}
/// Where logs written before decision 0017 keep the same record: in the
/// ledger's stream, for ever. Still looked up, in the same read, so that a
/// command recorded before the upgrade is still answered as a repeat.
pub(crate) fn legacy_record_subject(scope: &str, command_id: &str) -> String {
    subject(AggregateKind::Command.as_str(), &command_record_id(scope, command_id))
}
