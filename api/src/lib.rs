//! The axum HTTP server: auth, command routes, query routes, the Stripe
//! webhook, health, metrics and OpenAPI.
//!
//! Filled by the API issue. It holds no state of its own: any number of
//! replicas can run side by side.
