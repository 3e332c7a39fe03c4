//! zcproxy data plane: one port, every forward-proxy protocol, thread per core, splice relay.

pub mod admin;
pub mod auth;
pub mod config;
pub mod conn;
pub mod dial;
pub mod live;
pub mod metrics;
pub mod proto;
pub mod relay;
pub mod sessions;
pub mod shard;
pub mod shared;
