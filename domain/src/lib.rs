//! The pure core: deciders for the user, the user ledger, the stream, the
//! gift, the Stripe payment and the login session, in the shape `decide(&state, &command) ->
//! Result<Vec<Event>, DomainError>` and `evolve(state, &event) -> state`,
//! with the chart of accounts and the coin economy.
//!
//! Key decisions: events are the `events-schema` types themselves (this
//! crate depends on it, never the reverse); every ledger commit is built
//! from transfers, so it balances to zero by construction, and carries the
//! state after it. This crate must never do IO, read a clock, draw a random
//! number or run async code: time and ids arrive inside the commands.

pub mod adjustment;
pub mod aggregate;
pub mod error;
pub mod gift;
pub mod ledger;
pub mod money;
pub mod payment;
pub mod session;
pub mod stream;
pub mod user;

pub use aggregate::Loaded;
pub use error::{DomainError, Violation};
