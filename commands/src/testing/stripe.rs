//! Stripe fixtures for tests of the handler's Stripe path.

use domain::payment::{Buyer, Offered, PackageRef, PaymentCommand, Price};
use events_schema::StripeEventRecorded;
use uuid::Uuid;

/// A verified Stripe event as the webhook records it, with a minimal body.
pub fn recorded(event_id: &str, event_type: &str) -> StripeEventRecorded {
    StripeEventRecorded {
        stripe_event_id: event_id.into(),
        stripe_event_type: event_type.into(),
        stripe_created: 1_750_000_000,
        body: format!(r#"{{"id":"{event_id}","type":"{event_type}"}}"#),
    }
}

/// `buyer`'s paid purchase of the 500-coin package, for 499 cents.
pub fn confirm_500_coins(event_id: &str, buyer: Uuid) -> PaymentCommand {
    PaymentCommand::ConfirmPurchase {
        stripe_event_id: event_id.into(),
        buyer: Buyer::Known(buyer),
        package: PackageRef {
            id: "coins_500".into(),
            coins: Some(500),
            price: Some(Price { amount_cents: 499, currency: "usd".into() }),
        },
        amount_cents: 499,
        currency: "usd".into(),
        offered: Offered::NotStated,
    }
}
