//! The operator CLI: rebuild, verify, export, import, audit, status.
//!
//! Filled by the replay issue. It must never write a read model that the API
//! is serving: rebuilds go side by side and then switch.
