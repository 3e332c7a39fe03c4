//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a relay socket for one client, bound to the address
//! the client reached the proxy on, that takes datagrams with a SOCKS UDP header from that
//! client only and sends their payloads on, and wraps what comes back from the destinations
//! the client sent to. The association lives exactly as long as its TCP control connection.
//!
//! Per association: the relay socket, one upstream socket for every destination (dual-stack:
//! IPv4 destinations as mapped addresses), the table of destinations ([`flows`]) and of
//! names ([`names`]). Datagrams are read and sent in batches (recvmmsg/sendmmsg) through the
//! shard's one datagram buffer; replies get their header written in front of the payload in
//! that buffer, so nothing is copied in user space.

mod flows;
mod names;
mod relay;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use policy::Protocol;
use proto::{Failure, FailureKind, TargetAddr};

use super::socks_commands::SocksClient;
use super::ProtocolGuard;
use crate::admission::{self, Principal};
use crate::metrics::ErrorKind;
use crate::rt;
use crate::sessions::Session;
use crate::shard::Shard;
use crate::stream::Deadlines;
use crate::udp;

use flows::Flows;
use names::Names;

/// Where the client's datagrams must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    ip: IpAddr,
    /// 0: learned from the first datagram.
    port: u16,
}

impl Expected {
    /// The client's address is the one its control connection comes from (a client
    /// behind NAT cannot know its own); the port is the one the request named when it
    /// named that address or none (RFC 1928: zeros when the client does not know yet).
    fn new(control_peer: IpAddr, requested: &TargetAddr) -> Expected {
        let ip = policy::address::canonical(control_peer);
        let port = match requested {
            TargetAddr::Ip(a)
                if a.ip().is_unspecified() || policy::address::canonical(a.ip()) == ip =>
            {
                a.port()
            }
            _ => 0,
        };
        Expected { ip, port }
    }

    fn matches(&self, from: SocketAddr) -> bool {
        policy::address::canonical(from.ip()) == self.ip
            && (self.port == 0 || from.port() == self.port)
    }
}

/// One association's state, shared by its loops (all on one shard, never across a wait
/// while borrowed).
struct Association<'a> {
    shard: &'a Shard,
    session: &'a Session,
    principal: &'a Principal,
    relay: rt::UdpSocket,
    upstream: rt::UdpSocket,
    /// The upstream socket is IPv6 with IPv4 mapped (else IPv4 only).
    dual_stack: bool,
    expected: Expected,
    /// The client's datagram address, once known.
    client: Cell<Option<SocketAddr>>,
    flows: RefCell<Flows>,
    names: RefCell<Names>,
    /// The session's clock: client and flow datagrams touch it.
    clock: Deadlines,
    relay_drops: RefCell<udp::Overflows>,
    upstream_drops: RefCell<udp::Overflows>,
}

fn internal(what: &str, e: std::io::Error) -> Failure {
    Failure::new(FailureKind::Internal, format!("{what}: {e}"))
}

/// Carries out UDP ASSOCIATE for an authenticated client: refuses it, or answers with the
/// relay's address and relays until the control connection ends.
pub(super) async fn associate(
    shard: &Shard,
    session: &Session,
    principal: &Principal,
    requested: &TargetAddr,
    local: std::io::Result<SocketAddr>,
    mut client: impl SocksClient,
) {
    let cfg = &shard.shared.config.socks5_udp;
    if !cfg.enabled {
        let f = Failure::new(FailureKind::Unsupported, "UDP ASSOCIATE is disabled");
        return client.refused(&f).await;
    }
    let Some(_slot) = CoreSlot::take(shard, cfg.max_associations_per_core) else {
        shard.metrics().socks5_udp.refused.inc();
        let f = Failure::new(FailureKind::Internal, "UDP association limit of this core");
        return client.refused(&f).await;
    };
    let permit =
        match admission::associate(shard, session, principal, cfg.max_associations_per_user) {
            Ok(p) => p,
            Err(f) => {
                if f.kind == FailureKind::UserLimit {
                    shard.metrics().socks5_udp.refused.inc();
                }
                return client.refused(&f).await;
            }
        };
    let _open = ProtocolGuard::new(shard, Protocol::Socks5Udp);
    let local = match local {
        Ok(a) => a,
        Err(e) => return client.refused(&internal("control address", e)).await,
    };
    let sockets = (|| {
        let ports = cfg.port_range().unwrap_or(None);
        let local_ip = policy::address::canonical(local.ip());
        let relay = udp::relay(local_ip, ports, cfg.socket_buffer)
            .and_then(rt::UdpSocket::new)
            .map_err(|e| internal("relay socket", e))?;
        let upstream =
            udp::any_destination(cfg.socket_buffer).map_err(|e| internal("upstream socket", e))?;
        let dual_stack = upstream
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.is_ipv6());
        let upstream = rt::UdpSocket::new(upstream).map_err(|e| internal("upstream socket", e))?;
        Ok::<_, Failure>((relay, upstream, dual_stack))
    })();
    let (relay, upstream, dual_stack) = match sockets {
        Ok(s) => s,
        Err(f) => {
            shard.metrics().failure(f.kind);
            return client.refused(&f).await;
        }
    };
    let bound = match relay.local_addr() {
        Ok(a) => a,
        Err(e) => return client.refused(&internal("relay address", e)).await,
    };
    let advertised = SocketAddr::new(cfg.advertised_address.unwrap_or(bound.ip()), bound.port());
    let started = Instant::now();
    if !client.granted(advertised).await {
        return;
    }
    shard.metrics().handshake_seconds.observe(started.elapsed());
    let policy = shard.policy();
    let assoc = Association {
        shard,
        session,
        principal,
        relay,
        upstream,
        dual_stack,
        expected: Expected::new(session.client.ip(), requested),
        client: Cell::new(None),
        flows: RefCell::new(Flows::new(
            cfg.max_destinations_per_association,
            policy.revision,
        )),
        names: RefCell::new(Names::new(
            cfg.dns_cache(),
            cfg.max_destinations_per_association,
        )),
        clock: session.deadlines().clone(),
        relay_drops: RefCell::default(),
        upstream_drops: RefCell::default(),
    };
    drop(policy);
    tracing::debug!(client = %session.client, relay = %bound, %advertised, "UDP association");
    let stream = client.into_stream();
    match relay::run(&assoc, stream.stream()).await {
        relay::End::ControlClosed => {}
        relay::End::Idle => shard.metrics().error(ErrorKind::IdleTimeout),
        relay::End::Failed(e) => {
            tracing::warn!(client = %session.client, error = %e, "UDP association failed");
            shard.metrics().error(ErrorKind::RelayReset);
        }
    }
    assoc.count_kernel_drops();
    drop(permit);
}

/// One of the core's SOCKS5 UDP association slots, given back when dropped.
struct CoreSlot<'a>(&'a Shard);

impl<'a> CoreSlot<'a> {
    fn take(shard: &'a Shard, max: usize) -> Option<CoreSlot<'a>> {
        let open = shard.udp_associations.get();
        (open < max).then(|| {
            shard.udp_associations.set(open + 1);
            CoreSlot(shard)
        })
    }
}

impl Drop for CoreSlot<'_> {
    fn drop(&mut self) {
        let open = &self.0.udp_associations;
        open.set(open.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_the_control_connection() {
        let peer: IpAddr = "192.0.2.10".parse().unwrap();
        let at = |s: &str| TargetAddr::Ip(s.parse().unwrap());
        let from = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Zeros: any port of the control connection's address.
        let e = Expected::new(peer, &at("0.0.0.0:0"));
        assert!(e.matches(from("192.0.2.10:4000")));
        assert!(!e.matches(from("192.0.2.11:4000")));
        // The same address with a port: that port only.
        let e = Expected::new(peer, &at("192.0.2.10:5000"));
        assert!(e.matches(from("192.0.2.10:5000")));
        assert!(!e.matches(from("192.0.2.10:5001")));
        // An unspecified address with a port: that port of the control's address.
        let e = Expected::new(peer, &at("0.0.0.0:5000"));
        assert_eq!(
            e,
            Expected {
                ip: peer,
                port: 5000
            }
        );
        // Another address (a client behind NAT naming its private one): learned.
        let e = Expected::new(peer, &at("10.0.0.5:5000"));
        assert_eq!(e, Expected { ip: peer, port: 0 });
        // IPv4-mapped control addresses (a dual-stack listener) are IPv4.
        let mapped: IpAddr = "::ffff:192.0.2.10".parse().unwrap();
        assert!(Expected::new(mapped, &at("0.0.0.0:0")).matches(from("192.0.2.10:1")));
        let e = Expected::new(peer, &TargetAddr::Domain("client.example".into(), 5000));
        assert_eq!(e.port, 0);
    }
}
