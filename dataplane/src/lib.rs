//! zcproxy data plane: one port, every forward-proxy protocol, thread per core, splice relay.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod buffer_budget;
pub mod config;
pub mod conn;
pub mod dial;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod packet_io;
pub mod principal;
pub mod quic;
pub mod relay;
pub mod reload;
pub mod resolver;
pub mod revoke;
pub mod rt;
pub mod sessions;
pub mod shard;
pub mod shard_loop;
pub mod shared;
pub mod stream;
pub mod sys;
pub mod udp;
pub mod workers;
