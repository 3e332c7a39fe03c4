//! QUIC on the proxy's port (issue 11): each shard owns a UDP socket of one SO_REUSEPORT
//! group and the QUIC connections whose IDs name it (`steer`).

pub mod steer;
pub mod udp;
