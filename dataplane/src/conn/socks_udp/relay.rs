//! The loops of one association: datagrams from the client (batched, to their
//! destinations), replies from destinations (batched, wrapped in place, to the client),
//! names being resolved, flows expiring, and the control connection whose end ends it all.

use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use policy::Protocol;
use proto::socks5::udp::{self as header, canonical, UdpHeaderError, REPLY_ROOM};
use proto::TargetAddr;

use super::flows::Admit;
use super::names::Lookup;
use super::Association;
use crate::metrics::socks_udp::UdpDrop;
use crate::rt;
use crate::stream::{Expired, Stream};
use crate::sys;
use crate::udp::{self, SendBatch, BATCH};

/// Why an association ended.
pub enum End {
    /// The client closed (or broke) the TCP control connection.
    ControlClosed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A relay socket failed.
    Failed(io::Error),
}

/// Runs the association until its control connection ends, it goes idle or a socket fails.
pub async fn run(a: &Association<'_>, control: &Stream) -> End {
    let closed = pin!(control_closed(control));
    let idle = pin!(async {
        a.clock.expired().await;
        End::Idle
    });
    let from_client = pin!(async { End::Failed(a.client_loop().await) });
    let from_upstream = pin!(async { End::Failed(a.upstream_loop().await) });
    let resolving = pin!(a.resolve_names());
    let expiring = pin!(a.expire_flows());
    let background = pin!(rt::race(resolving, expiring));
    let ends = pin!(rt::race(closed, idle));
    let relays = pin!(rt::race(from_client, from_upstream));
    let relays = pin!(async {
        match rt::race(relays, background).await {
            rt::Either::Left(rt::Either::Left(e) | rt::Either::Right(e)) => e,
            rt::Either::Right(rt::Either::Left(never) | rt::Either::Right(never)) => match never {},
        }
    });
    match rt::race(ends, relays).await {
        rt::Either::Left(rt::Either::Left(e) | rt::Either::Right(e)) => e,
        rt::Either::Right(e) => e,
    }
}

/// Resolves when the client closes its control connection (or it breaks). Bytes it sends
/// there have no meaning after the request and are read and dropped.
/// Waits until the control connection ends; its wait shares the association's clock, so
/// an idle association ends here as well.
async fn control_closed(control: &Stream) -> End {
    let mut buf = [0u8; 256];
    loop {
        match control.try_read(&mut buf) {
            Ok(0) => return End::ControlClosed,
            Ok(_) => {}
            Err(e) if sys::would_block(&e) => match control.readiness(false).await {
                Err(e) if Expired::of(&e).is_some() => return End::Idle,
                Err(_) => return End::ControlClosed,
                Ok(()) => {}
            },
            Err(_) => return End::ControlClosed,
        }
    }
}

/// The address to give a socket of the upstream family: IPv4 as mapped IPv6 on a
/// dual-stack socket.
fn for_socket(dest: SocketAddr, dual_stack: bool) -> SocketAddr {
    match dest {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0).into()
        }
        other => other,
    }
}

impl Association<'_> {
    fn metrics(&self) -> &crate::metrics::Socks5UdpMetrics {
        &self.shard.metrics().socks5_udp
    }

    /// The policy in force, with the flows re-checked if it changed since they were.
    fn sync_policy(&self) {
        let policy = self.shard.policy();
        let revoked = self
            .flows
            .borrow_mut()
            .recheck(policy.revision, |dest, host| {
                self.allowed(&policy, host, dest)
            });
        self.metrics().flows_revoked.add(revoked as u64);
    }

    fn allowed(
        &self,
        policy: &crate::live::LivePolicy,
        host: Option<&str>,
        dest: SocketAddr,
    ) -> bool {
        crate::admission::allows(
            policy,
            self.session,
            self.principal,
            Protocol::Socks5Udp,
            host,
            dest,
        )
    }

    /// Admits a datagram to `dest`: its flow exists or the policy allows a new one.
    fn admit(&self, dest: SocketAddr, host: Option<&Rc<str>>, now: Instant) -> Result<(), UdpDrop> {
        if !self.dual_stack && dest.is_ipv6() {
            return Err(UdpDrop::UpstreamSend);
        }
        let admitted = self.flows.borrow_mut().admit(dest, host, now, || {
            self.allowed(&self.shard.policy(), host.map(|h| &**h), dest)
        })?;
        if admitted == Admit::Opened {
            self.metrics().flows_opened.inc();
        }
        Ok(())
    }

    /// Whether a datagram from `from` is the client's (learning its port on the first one
    /// when the request did not name it).
    fn is_the_client(&self, from: SocketAddr) -> bool {
        match self.client.get() {
            Some(c) => canonical(from) == c,
            None if self.expected.matches(from) => {
                self.client.set(Some(canonical(from)));
                true
            }
            None => false,
        }
    }

    /// Reads the client's datagrams and sends each payload on, until a socket fails.
    async fn client_loop(&self) -> io::Error {
        let mut busy = 0;
        loop {
            match self.client_batch() {
                Ok(()) => busy = yield_when_busy(busy).await,
                Err(e) if sys::would_block(&e) => {
                    busy = 0;
                    if let Err(e) = self.relay.readable().await {
                        return e;
                    }
                }
                Err(e) if is_icmp(&e) => {}
                Err(e) => return e,
            }
        }
    }

    /// One batch from the client: parse, admit, send on in one call.
    fn client_batch(&self) -> io::Result<()> {
        let relay_fd = self.relay.as_raw_fd();
        self.shard.with_datagrams(|batch| {
            let n = batch.recv(relay_fd)?;
            if n > 1 {
                self.metrics().batched_calls.inc();
            }
            let now = Instant::now();
            self.sync_policy();
            let mut out = SendBatch::default();
            for i in 0..n {
                let Some((r, data)) = batch.get(i) else { break };
                let new = self.relay_drops.borrow_mut().new_since(&r);
                self.metrics().drop_n(UdpDrop::ClientBuffer, new);
                if !self.is_the_client(r.from) {
                    self.metrics().drop(UdpDrop::ForeignSource);
                    continue;
                }
                // Only the client's own datagrams keep the association alive: anyone can
                // send to the relay's port.
                self.clock.touch();
                if r.truncated {
                    self.metrics().drop(UdpDrop::TooLarge);
                    continue;
                }
                if let Some((dest, payload)) = self.route(data, now) {
                    out.push(for_socket(dest, self.dual_stack), payload);
                }
            }
            self.flush(
                &out,
                self.upstream.as_raw_fd(),
                Direction::ToUpstream,
                &[0; BATCH],
            );
            Ok(())
        })
    }

    /// Where a client datagram goes and what it carries, or why not (counted). Datagrams
    /// to names not yet resolved are queued and go later.
    fn route<'d>(&self, data: &'d [u8], now: Instant) -> Option<(SocketAddr, &'d [u8])> {
        let h = match header::parse(data) {
            Ok(h) => h,
            Err(e) => {
                self.metrics().drop(match e {
                    UdpHeaderError::Fragment(_) => UdpDrop::Fragment,
                    _ => UdpDrop::Malformed,
                });
                return None;
            }
        };
        let payload = &data[h.len..];
        match h.target {
            TargetAddr::Ip(dest) => {
                let dest = canonical(dest);
                match self.admit(dest, None, now) {
                    Ok(()) => Some((dest, payload)),
                    Err(why) => {
                        self.metrics().drop(why);
                        None
                    }
                }
            }
            TargetAddr::Domain(host, port) => {
                let host: Rc<str> = host.into();
                let lookup = self.names.borrow_mut().lookup(&host, port, payload, now);
                match lookup {
                    Lookup::Ready(ips) => self
                        .pick(&host, &ips, port, now)
                        .map(|dest| (dest, payload)),
                    Lookup::Queued => None,
                    Lookup::Failed => {
                        self.metrics().drop(UdpDrop::Resolve);
                        None
                    }
                    Lookup::Full => {
                        self.metrics().drop(UdpDrop::ResolvePending);
                        None
                    }
                }
            }
        }
    }

    /// The first of a name's addresses the datagram may go to (counted when none).
    fn pick(&self, host: &Rc<str>, ips: &[IpAddr], port: u16, now: Instant) -> Option<SocketAddr> {
        let mut why = UdpDrop::Resolve;
        for ip in ips {
            let dest = SocketAddr::new(policy::address::canonical(*ip), port);
            match self.admit(dest, Some(host), now) {
                Ok(()) => return Some(dest),
                Err(w) => why = w,
            }
        }
        self.metrics().drop(why);
        None
    }

    /// Sends a batch; what the kernel refuses is counted and skipped, what it has no room
    /// for now is dropped (UDP: the sender's pacing is not the relay's to fix).
    fn flush(&self, out: &SendBatch<'_>, fd: i32, dir: Direction, headers: &[usize; BATCH]) {
        let m = self.metrics();
        let mut at = 0;
        while at < out.len() {
            match out.send(fd, at) {
                Ok(0) => break,
                Ok(n) => {
                    let bytes: usize = (at..at + n)
                        .filter_map(|i| out.get(i).map(|(_, d)| d.len() - headers[i]))
                        .sum();
                    dir.count(self, n as u64, bytes as u64);
                    if n > 1 {
                        m.batched_calls.inc();
                    }
                    at += n;
                }
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    m.drop(UdpDrop::TooLarge);
                    at += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    m.drop_n(dir.drop_reason(), (out.len() - at) as u64);
                    return;
                }
                Err(_) => {
                    m.drop(dir.drop_reason());
                    at += 1;
                }
            }
        }
    }

    /// Reads replies from destinations and sends them to the client, until a socket fails.
    async fn upstream_loop(&self) -> io::Error {
        let mut busy = 0;
        loop {
            match self.upstream_batch() {
                Ok(()) => busy = yield_when_busy(busy).await,
                Err(e) if sys::would_block(&e) => {
                    busy = 0;
                    if let Err(e) = self.upstream.readable().await {
                        return e;
                    }
                }
                // An ICMP error for an earlier send (port unreachable, …): UDP goes on.
                Err(e) if is_icmp(&e) => {}
                Err(e) => return e,
            }
        }
    }

    /// One batch of replies: each from a flow of this association gets its header written
    /// in front of it, in the buffer it was read into, and all go to the client in one call.
    fn upstream_batch(&self) -> io::Result<()> {
        let fd = self.upstream.as_raw_fd();
        self.shard.with_datagrams(|batch| {
            let n = batch.recv(fd)?;
            if n > 1 {
                self.metrics().batched_calls.inc();
            }
            let now = Instant::now();
            self.sync_policy();
            let client = self.client.get();
            let mut starts = [None; BATCH];
            for (i, start) in starts.iter_mut().enumerate().take(n) {
                let Some((r, slot)) = batch.get_mut(i) else {
                    break;
                };
                let new = self.upstream_drops.borrow_mut().new_since(&r);
                self.metrics().drop_n(UdpDrop::UpstreamBuffer, new);
                let from = canonical(r.from);
                if client.is_none() || !self.flows.borrow_mut().reply(from, now) {
                    self.metrics().drop(UdpDrop::Unsolicited);
                    continue;
                }
                self.clock.touch();
                if r.truncated {
                    self.metrics().drop(UdpDrop::TooLarge);
                    continue;
                }
                let Some(room) = slot.first_chunk_mut::<REPLY_ROOM>() else {
                    continue;
                };
                *start = Some(header::prepend_reply_header(from, room));
            }
            let Some(client) = client else { return Ok(()) };
            let mut out = SendBatch::default();
            let mut headers = [0; BATCH];
            for (i, start) in starts.iter().enumerate().take(n) {
                if let (Some(start), Some((_, slot))) = (start, batch.get_with_room(i)) {
                    headers[out.len()] = REPLY_ROOM - start;
                    out.push(client, &slot[*start..]);
                }
            }
            self.flush(&out, self.relay.as_raw_fd(), Direction::ToClient, &headers);
            Ok(())
        })
    }

    /// Resolves the names datagrams wait for, a few at once, and sends those datagrams.
    async fn resolve_names(&self) -> Infallible {
        let resolver = &self.shard.shared.workers.resolver;
        let timeout = self.shard.shared.config.timeouts.connect();
        let mut running = FuturesUnordered::new();
        loop {
            let (host, result) = poll_fn(|cx| {
                for host in self.names.borrow_mut().take_requests(cx.waker()) {
                    self.metrics().resolutions.inc();
                    running.push(async move {
                        let answer = rt::timeout(timeout, resolver.lookup(&host)).await;
                        (host, answer)
                    });
                }
                match running.poll_next_unpin(cx) {
                    Poll::Ready(Some(done)) => Poll::Ready(done),
                    _ => Poll::Pending,
                }
            })
            .await;
            let ips = result.ok().and_then(Result::ok);
            let now = Instant::now();
            let (resolved, waiting) = self.names.borrow_mut().complete(&host, ips, now);
            self.send_waiting(&host, resolved.as_deref(), waiting, now);
        }
    }

    /// Sends the datagrams that waited for `host` (one by one: this is the rare path).
    fn send_waiting(
        &self,
        host: &Rc<str>,
        ips: Option<&[IpAddr]>,
        waiting: Vec<(u16, Vec<u8>)>,
        now: Instant,
    ) {
        let Some(ips) = ips else {
            self.metrics()
                .drop_n(UdpDrop::Resolve, waiting.len() as u64);
            return;
        };
        self.sync_policy();
        let fd = self.upstream.as_raw_fd();
        for (port, payload) in waiting {
            let Some(dest) = self.pick(host, ips, port, now) else {
                continue;
            };
            match udp::send(fd, for_socket(dest, self.dual_stack), &payload, None) {
                Ok(_) => Direction::ToUpstream.count(self, 1, payload.len() as u64),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    self.metrics().drop(UdpDrop::TooLarge)
                }
                Err(_) => self.metrics().drop(UdpDrop::UpstreamSend),
            }
        }
    }

    /// Forgets destinations quiet for `flow_idle_secs`.
    async fn expire_flows(&self) -> Infallible {
        let idle = self.shard.shared.config.socks5_udp.flow_idle();
        let tick = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        loop {
            rt::sleep(tick).await;
            let gone = self.flows.borrow_mut().expire(Instant::now(), idle);
            self.metrics().flows_expired.add(gone as u64);
            self.sync_policy();
        }
    }

    /// Drops after the last read are reported by no read: counted when the association ends.
    pub(super) fn count_kernel_drops(&self) {
        for (socket, seen, why) in [
            (&self.relay, &self.relay_drops, UdpDrop::ClientBuffer),
            (
                &self.upstream,
                &self.upstream_drops,
                UdpDrop::UpstreamBuffer,
            ),
        ] {
            if let Some(total) = udp::drops(socket.as_raw_fd()) {
                let new = seen.borrow_mut().catch_up(total);
                self.metrics().drop_n(why, new);
            }
        }
    }
}

/// Batches one loop reads in a row before it lets the shard's other tasks run: a client
/// sending flat out must not starve the rest of the core.
const BATCHES_BEFORE_YIELD: u32 = 16;

async fn yield_when_busy(busy: u32) -> u32 {
    if busy + 1 >= BATCHES_BEFORE_YIELD {
        rt::yield_now().await;
        0
    } else {
        busy + 1
    }
}

/// Errors a UDP socket reports for an earlier datagram (an ICMP message), not for itself.
fn is_icmp(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE)
    )
}

#[derive(Clone, Copy)]
enum Direction {
    ToUpstream,
    ToClient,
}

impl Direction {
    fn count(self, a: &Association<'_>, datagrams: u64, bytes: u64) {
        let (m, shard) = (a.metrics(), a.shard.metrics());
        match self {
            Direction::ToUpstream => {
                m.datagrams_to_upstream.add(datagrams);
                m.bytes_to_upstream.add(bytes);
                shard.bytes_client_to_upstream.add(bytes);
            }
            Direction::ToClient => {
                m.datagrams_to_client.add(datagrams);
                m.bytes_to_client.add(bytes);
                shard.bytes_upstream_to_client.add(bytes);
            }
        }
    }

    fn drop_reason(self) -> UdpDrop {
        match self {
            Direction::ToUpstream => UdpDrop::UpstreamSend,
            Direction::ToClient => UdpDrop::ClientSend,
        }
    }
}
