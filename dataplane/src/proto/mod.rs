//! Sans-IO protocol cores: parsers and encoders over byte slices, no sockets, no clocks.
//!
//! Every parser takes the bytes received so far and answers `Ok(None)` when it needs more,
//! `Ok(Some((value, consumed)))` when it has a complete message, or a typed error that names
//! the client as the party at fault.

pub mod chunked;
pub mod http;
pub mod sniff;
pub mod socks4;
pub mod socks5;
pub mod target;

pub use target::TargetAddr;
