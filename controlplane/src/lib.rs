//! zcproxy control plane: users and ACL rules in PostgreSQL behind an API-key-protected HTTP
//! API; every change bumps one global revision and is published to NATS through an outbox.

pub mod api;
pub mod db;
pub mod metrics;
pub mod problem;
pub mod publisher;
pub mod settings;
