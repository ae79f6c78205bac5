//! Specifications of every decider, and the ledger's properties.

mod controls_spec;
mod gift_spec;
mod ledger_spec;
mod payment_spec;
mod properties;
mod session_spec;
mod spec;
mod stream_spec;
mod user_spec;
