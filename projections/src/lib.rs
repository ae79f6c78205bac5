//! Pure projections (event in, document changes out), the projector runner
//! with checkpoints, and the read-store port with its MongoDB and embedded
//! adapters.
//!
//! Filled by the projections issue. It must never append an event and never
//! depend on `commands`.
