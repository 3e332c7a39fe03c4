//! QUIC on the proxy's port (issue 11): each shard owns a UDP socket of one SO_REUSEPORT
//! group (`crate::udp`), a quinn-proto endpoint driving its connections (`endpoint`, `conn`), and
//! issues connection IDs that name it (`cid`), by which the kernel steers packets (`steer`)
//! or, where it cannot, the shards hand them to each other (`handover`).
//! HTTP/3 runs on them through the `h3` crate's traits (`h3_quic`).

pub mod cid;
pub mod conn;
pub mod endpoint;
pub mod h3_quic;
pub mod handover;
pub mod steer;

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod test_support;
