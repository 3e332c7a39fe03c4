//! One shard per core: a single-threaded io_uring (or epoll) executor pinned to its CPU with its own
//! SO_REUSEPORT listener on the shared address. What shards share: the per-user tunnel
//! counters (touched once per tunnel), the policy bus (read when a policy is published), the
//! metrics blocks (each shard writes only its own) and two worker pools (name resolution,
//! password verification; see `workers.rs`), each reached through a bounded queue.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{PacketIoFallback, PacketIoKind};
use crate::conn;
use crate::metrics::ErrorKind;
use crate::packet_io::af_xdp::{XdpIo, XdpPlane};
use crate::packet_io::socket::SocketIo;
use crate::packet_io::{PacketIo, Packets};
use crate::quic::endpoint::{Endpoint, EndpointOptions};
use crate::quic::handover::Handover;
use crate::quic::steer;
use crate::rt::{self, TcpListener};
use crate::shard::Shard;
use crate::shared::Shared;
use crate::udp::{self, Offloads};

/// Binds one SO_REUSEPORT listener (the kernel spreads connections across them).
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Swaps in each policy the control thread publishes, as soon as the doorbell rings.
async fn follow_policy(shard: Rc<Shard>) {
    let mailbox = shard.shared.bus.mailbox(shard.id);
    while mailbox.rung().await {
        shard.apply_limits();
        let latest = mailbox.latest();
        if !Arc::ptr_eq(&latest, &shard.policy()) {
            shard.install(latest);
        }
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, stop: flume::Receiver<()>) {
    let mut last_warning: Option<Instant> = None;
    // One stop future for the shard's life: registering a fresh channel waiter on every
    // accept would take the channel's lock once per connection.
    let mut stopped = std::pin::pin!(stop.recv_async());
    loop {
        let accepting = std::pin::pin!(listener.accept());
        let accepted = match rt::race(accepting, stopped.as_mut()).await {
            rt::Either::Left(r) => r,
            rt::Either::Right(_) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                shard.metrics().accepted.inc();
                let Some(guard) = shard.enter() else {
                    shard.metrics().error(ErrorKind::ConnectionLimit);
                    continue;
                };
                rt::spawn(async move {
                    conn::serve(guard.shard(), stream, peer).await;
                    drop(guard);
                });
            }
            Err(e) if crate::sys::is_spurious(&e) => {}
            Err(e) => {
                shard.metrics().error(ErrorKind::Accept);
                if is_resource_exhaustion(&e) {
                    // Out of descriptors: back off instead of spinning, and say so (at most
                    // once a second) so an operator can raise the limit.
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                        tracing::warn!(core = shard.id, error = %e, "accept failed; backing off");
                        last_warning = Some(Instant::now());
                    }
                    rt::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    shard.start_draining();
    // Draining: live tunnels get until the deadline to finish on their own.
    let deadline = Instant::now() + shard.shared.config.timeouts.drain();
    while shard.active_connections() > 0 && Instant::now() < deadline {
        rt::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        core = shard.id,
        remaining = shard.active_connections(),
        "shard stopped"
    );
}

/// Serves QUIC on the shard's UDP socket: each connection HTTP/3, counted as active.
async fn quic_loop(shard: Rc<Shard>, endpoint: Rc<Endpoint>) {
    rt::spawn(endpoint.clone().run());
    loop {
        let conn = endpoint.accept().await;
        shard.metrics().accepted.inc();
        if shard.is_draining() {
            conn.refuse(h3::error::Code::H3_NO_ERROR.value(), b"draining");
            continue;
        }
        let Some(guard) = shard.enter() else {
            shard.metrics().error(ErrorKind::ConnectionLimit);
            conn.refuse(
                h3::error::Code::H3_EXCESSIVE_LOAD.value(),
                b"connection limit",
            );
            continue;
        };
        let peer = conn.remote_address();
        let shard = shard.clone();
        rt::spawn(async move {
            conn::h3::serve(shard, conn, peer).await;
            drop(guard);
        });
    }
}

/// One shard's sockets: its TCP listener and, with QUIC on, its packet IO's socket (and
/// the shards' handover queues when nothing steers by connection ID).
pub struct ShardSockets {
    pub tcp: std::net::TcpListener,
    pub udp: Option<QuicSocket>,
    pub handover: Option<Arc<Handover>>,
}

/// What a shard's QUIC endpoint reads and writes, made before the shard starts.
pub enum QuicSocket {
    /// The kernel's UDP socket (bound by [`udp::bind`]).
    Udp(socket2::Socket, Offloads),
    /// An AF_XDP socket on one of the interface's queues.
    AfXdp(Arc<XdpPlane>, Box<af_xdp::XskSocket>),
}

fn run_shard(
    id: usize,
    shared: Arc<Shared>,
    sockets: ShardSockets,
    stop: flume::Receiver<()>,
) -> io::Result<()> {
    let ShardSockets {
        tcp: listener,
        udp,
        handover,
    } = sockets;
    let shard = Rc::new(Shard::new(id, shared.clone()));
    shard
        .metrics()
        .policy_revision
        .set(shard.policy().revision as i64);
    let runtime = rt::build_runtime(shared.config.driver)?;
    let io_uring = rt::on_io_uring(&runtime);
    shard.metrics().io_uring.set(io_uring as i64);
    if id == 0 {
        tracing::info!(io_uring, driver = ?shared.config.driver, "shard runtime");
    }
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let _listening = shared.lifecycle.listening();
        rt::spawn(follow_policy(shard.clone()));
        if let (Some(socket), Some(server)) = (udp, shared.quic.clone()) {
            let options = EndpointOptions {
                shard: id,
                server,
                handshake_timeout: shared.config.timeouts.handshake(),
                retry_above: shared.config.quic.retry_above_handshakes,
                metrics: shard.metrics().quic.clone(),
                shards: shared.cores,
                handover,
            };
            let metrics = shard.metrics();
            let io = match socket {
                QuicSocket::Udp(socket, offloads) => Packets::Socket(SocketIo::new(
                    socket,
                    offloads,
                    metrics.quic.clone(),
                    metrics.packet_io.clone(),
                )?),
                QuicSocket::AfXdp(plane, xsk) => {
                    let busy_poll = shared.config.quic.af_xdp.busy_poll > 0;
                    Packets::AfXdp(XdpIo::new(
                        plane,
                        *xsk,
                        busy_poll,
                        metrics.packet_io.clone(),
                    )?)
                }
            };
            metrics.packet_io.set_backend(io.backend().label());
            let endpoint = Endpoint::new(io, options);
            rt::spawn(endpoint.clone().run_handed());
            rt::spawn(quic_loop(shard.clone(), endpoint));
        }
        accept_loop(shard, listener, stop).await;
        Ok(())
    })
}

/// Running shards. Dropping `stop` stops every shard.
pub struct Shards {
    pub handles: Vec<JoinHandle<io::Result<()>>>,
    pub stop: flume::Sender<()>,
}

/// The shards' UDP sockets (with what the kernel offloads for each), and the handover
/// queues if the kernel does not steer.
type UdpSockets = (Vec<(socket2::Socket, Offloads)>, Option<Arc<Handover>>);

/// The shards' sockets for QUIC, and the handover queues if nothing steers.
type QuicSockets = (Vec<QuicSocket>, Option<Arc<Handover>>);

/// Makes the shards' QUIC sockets: AF_XDP ones where configured (falling back to UDP
/// sockets if that is allowed and AF_XDP cannot run), else UDP sockets.
fn bind_quic(shared: &Shared) -> io::Result<QuicSockets> {
    if shared.quic.is_none() {
        return Ok((Vec::new(), None));
    }
    let quic = &shared.config.quic;
    if quic.packet_io == PacketIoKind::AfXdp {
        match start_af_xdp(shared) {
            Ok(sockets) => {
                // NIC queues spread packets by address and port, not connection ID.
                let handover = (shared.cores > 1)
                    .then(|| Handover::new(shared.cores).map(Arc::new))
                    .transpose()?;
                return Ok((sockets, handover));
            }
            Err(e) if quic.af_xdp.fallback == PacketIoFallback::Socket => {
                tracing::warn!(error = %e, "AF_XDP cannot run: QUIC is served on the kernel's UDP socket instead (quic.af_xdp.fallback = \"socket\")");
                shared
                    .metrics
                    .iter()
                    .for_each(|m| m.packet_io.fallback.set(1));
            }
            Err(e) => {
                return Err(io::Error::other(format!(
                    "quic.packet_io = \"af_xdp\" cannot run: {e}"
                )))
            }
        }
    }
    let (sockets, handover) = bind_udp(shared)?;
    let sockets = sockets
        .into_iter()
        .map(|(s, o)| QuicSocket::Udp(s, o))
        .collect();
    Ok((sockets, handover))
}

/// Attaches the XDP program and makes every shard's AF_XDP socket.
fn start_af_xdp(shared: &Shared) -> af_xdp::Result<Vec<QuicSocket>> {
    let cfg = &shared.config.quic.af_xdp;
    let plane = Arc::new(XdpPlane::start(cfg, shared.config.listen)?);
    let sockets = (0..shared.cores)
        .map(|shard| {
            let xsk = plane.socket(cfg, shard)?;
            Ok(QuicSocket::AfXdp(plane.clone(), Box::new(xsk)))
        })
        .collect::<af_xdp::Result<Vec<_>>>()?;
    let served: std::collections::HashSet<u32> = (0..shared.cores).map(|c| cfg.queue(c)).collect();
    let unserved = (0..plane.rx_queues).filter(|q| !served.contains(q)).count();
    if unserved > 0 {
        tracing::warn!(
            interface = %cfg.interface,
            rx_queues = plane.rx_queues,
            cores = shared.cores,
            "{unserved} RX queue(s) have no core's AF_XDP socket: QUIC clients hashed there get no answer. Give the NIC one queue per core (ethtool -L) or list every queue in quic.af_xdp.queues"
        );
    }
    let _ = shared.xdp.set(plane);
    Ok(sockets)
}

/// Binds the shards' UDP sockets for QUIC, in shard order (a socket's place in the
/// reuseport group is its shard), and attaches the connection-ID steering program; where
/// it cannot be attached (or `quic.kernel_steering` is off) the shards hand each other
/// what they read for one another.
fn bind_udp(shared: &Shared) -> io::Result<UdpSockets> {
    let sockets = (0..shared.cores)
        .map(|_| udp::bind(shared.config.listen))
        .collect::<io::Result<Vec<_>>>()?;
    let steered = match sockets.first() {
        _ if shared.cores < 2 => true,
        Some((first, _)) if shared.config.quic.kernel_steering => {
            match steer::attach(first, shared.cores) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "QUIC packets cannot be steered by connection ID in the kernel; the cores hand them to each other");
                    false
                }
            }
        }
        _ => false,
    };
    let handover = match steered {
        true => None,
        false => Some(Arc::new(Handover::new(shared.cores)?)),
    };
    Ok((sockets, handover))
}

/// Starts `shared.cores` shards. Listeners are bound here, before any thread starts, so a
/// taken port fails start-up at once.
pub fn start(shared: Arc<Shared>) -> io::Result<Shards> {
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let listeners = (0..shared.cores)
        .map(|_| bind_listener(shared.config.listen))
        .collect::<io::Result<Vec<_>>>()?;
    let (udp, handover) = bind_quic(&shared)?;
    let mut udp = udp.into_iter();
    let core_ids = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(shared.cores);
    for (id, tcp) in listeners.into_iter().enumerate() {
        let sockets = ShardSockets {
            tcp,
            udp: udp.next(),
            handover: handover.clone(),
        };
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        let core = (shared.config.pin_cores && !core_ids.is_empty())
            .then(|| core_ids[id % core_ids.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("zcproxy-core-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                run_shard(id, shared, sockets, stop)
            })?;
        handles.push(handle);
    }
    Ok(Shards {
        handles,
        stop: stop_tx,
    })
}
