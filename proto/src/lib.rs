//! Sans-IO protocol cores: parsers and encoders over byte slices, no sockets, no clocks.
//!
//! Every parser takes the bytes received so far and answers `Ok(None)` when it needs more,
//! `Ok(Some((value, consumed)))` when it has a complete message, or a typed error that names
//! the client as the party at fault. [`failure`] is the protocol-neutral outcome of a
//! request that each protocol maps to its own codes. No runtime, no sockets, no clocks.

pub mod capsule;
pub mod chunked;
pub mod failure;
pub mod http;
pub mod http_datagram;
pub mod masque;
pub mod packet;
pub mod proxy_status;
pub mod sniff;
pub mod socks4;
pub mod socks5;
pub mod target;
pub mod tls_hello;
pub mod varint;

pub use failure::{Blame, Failure, FailureKind};
pub use target::TargetAddr;
