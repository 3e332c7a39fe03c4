//! `zcbench-udpio`: the data plane's batched UDP IO (`zcproxy::udp`: recvmmsg with UDP_GRO
//! and SO_RXQ_OVFL, sendmsg with UDP_SEGMENT, sendmmsg) against quinn-udp's
//! `UdpSocketState`, side by side in one run on loopback, for the issue that asks to replace
//! ours by quinn-udp unless it is measured slower.
//!
//! Measures, each for both implementations in turn (the order flips every run so that
//! warm-up and noise hit both):
//! - receive, GRO: a sender thread blasts GSO trains from one peer at a socket bound as the
//!   QUIC socket is (`udp::bind`: GRO on, 4 MiB buffers); the receiver drains it;
//! - receive, single: the same with single datagrams from several peers (sendmmsg), which
//!   loopback does not coalesce;
//! - receive, queued: single datagrams queued while the receiver waits, then drained: the
//!   cost of a read with full batches, whatever the sender's speed;
//! - send, GSO: trains of `--segments` datagrams to one peer, as QUIC sends;
//! - send, single: one datagram per call to several peers;
//! - send, batched: several peers, ours with `SendBatch` (sendmmsg, as the SOCKS5 relay
//!   sends); quinn-udp has no batched send, so one call per datagram.
//!
//! The sender side of the receive measures is the same code (`zcproxy::udp`) for both.
//! Sends go to sockets nobody reads (once full, the kernel drops what arrives), so only
//! the sender's work is measured. CPU time is the measuring thread's own (RUSAGE_THREAD),
//! which includes the kernel's loopback delivery done in its context. Every loop is
//! bounded by a count and a deadline.

mod samples;

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use samples::Samples;
use zcproxy::udp::{self, Overflows, RecvBatch, SendBatch, BATCH};

#[derive(Parser)]
#[command(about = "zcproxy's batched UDP IO against quinn-udp, on loopback")]
struct Args {
    /// Datagrams per measure.
    #[arg(long, default_value_t = 500_000)]
    count: u64,
    /// Repeat every measure this many times and report medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Payload bytes of each datagram (QUIC's usual packet size).
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Datagrams per GSO train (the proxy's QUIC connections send up to this many).
    #[arg(long, default_value_t = udp::MAX_GSO_SEGMENTS)]
    segments: usize,
    /// Peers single datagrams come from or go to.
    #[arg(long, default_value_t = 8)]
    peers: usize,
    /// Seconds at most per measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Buffers per quinn-udp receive call (its BATCH_SIZE by default; ours reads BATCH).
    #[arg(long, default_value_t = quinn_udp::BATCH_SIZE)]
    quinn_slots: usize,
    /// Two CPUs, e.g. `0,1`: the measuring thread on the first, the receive measures'
    /// sender on the second.
    #[arg(long)]
    pin: Option<String>,
    /// Only check what each implementation reports (truncation, drops, ECN, destination
    /// address, headroom) and exit.
    #[arg(long)]
    probe: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Imp {
    Ours,
    Quinn,
}

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Imp::Ours => "zcproxy udp",
            Imp::Quinn => "quinn-udp",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Measure {
    RecvGro,
    RecvSingle,
    RecvQueued,
    SendGso,
    SendSingle,
    SendBatched,
}

const MEASURES: [Measure; 6] = [
    Measure::RecvGro,
    Measure::RecvSingle,
    Measure::RecvQueued,
    Measure::SendGso,
    Measure::SendSingle,
    Measure::SendBatched,
];

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::RecvGro => "receive, GSO trains from 1 peer (GRO)",
            Measure::RecvSingle => "receive, single datagrams from N peers",
            Measure::RecvQueued => "receive, single datagrams already queued",
            Measure::SendGso => "send, GSO trains to 1 peer",
            Measure::SendSingle => "send, 1 datagram per call to N peers",
            Measure::SendBatched => "send, batched to N peers (quinn-udp: 1 per call)",
        }
    }

    fn is_receive(self) -> bool {
        matches!(
            self,
            Measure::RecvGro | Measure::RecvSingle | Measure::RecvQueued
        )
    }
}

/// One measure of one implementation.
struct Outcome {
    per_second: f64,
    cpu_ns: f64,
    /// Receive measures: datagrams sent but not read, and the kernel's drop count.
    lost: Option<(u64, u64)>,
}

/// User + system CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it for the calling thread.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data (all zero: empty); pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(
        rc,
        0,
        "pinning to CPU {cpu}: {}",
        io::Error::last_os_error()
    );
}

/// Waits up to `ms` for `events` on `fd`; whether they came.
fn wait_for(fd: RawFd, events: libc::c_short, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

/// A socket bound as the proxy binds its QUIC socket (reuseport, 4 MiB buffers, GRO,
/// SO_RXQ_OVFL), as a std socket.
fn proxy_socket() -> UdpSocket {
    let (socket, offloads) = udp::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    assert!(
        offloads.gro && offloads.gso,
        "this kernel lacks UDP GRO or GSO: {offloads:?}"
    );
    socket.into()
}

fn local(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local address")
}

fn quinn_state(s: &UdpSocket) -> UdpSocketState {
    UdpSocketState::new(s.into()).expect("quinn-udp socket state")
}

fn set_int(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: a plain int option on our own descriptor.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// What a receiver has read so far. Every datagram is split out of its GRO train and its
/// first byte read, as the proxy touches each.
#[derive(Default)]
struct Tally {
    datagrams: u64,
    touched: u64,
    overflows: u64,
    last: Option<Instant>,
}

impl Tally {
    fn read(&mut self, data: &[u8], stride: usize) {
        for d in data.chunks(stride.max(1)) {
            self.datagrams += 1;
            self.touched = self.touched.wrapping_add(u64::from(d[0]));
        }
        self.last = Some(Instant::now());
    }
}

/// One receive call of an implementation over its own buffers.
trait Reader {
    fn read(&mut self, socket: &UdpSocket, tally: &mut Tally) -> io::Result<()>;
}

/// Ours as the QUIC endpoint reads: BATCH slots of a GRO train each, drop counts followed.
struct OursReader {
    batch: RecvBatch,
    overflows: Overflows,
}

impl Reader for OursReader {
    fn read(&mut self, socket: &UdpSocket, tally: &mut Tally) -> io::Result<()> {
        let n = self.batch.recv(socket.as_raw_fd())?;
        for i in 0..n {
            let Some((r, data)) = self.batch.get(i) else {
                break;
            };
            tally.overflows += self.overflows.new_since(&r);
            tally.read(data, r.stride);
        }
        Ok(())
    }
}

/// quinn-udp as quinn's endpoint reads: `slots` buffers of a GRO train each.
struct QuinnReader<'a> {
    state: UdpSocketState,
    iovs: Vec<IoSliceMut<'a>>,
    metas: Vec<RecvMeta>,
}

impl<'a> QuinnReader<'a> {
    fn new(socket: &UdpSocket, buf: &'a mut [u8], slots: usize) -> QuinnReader<'a> {
        let slot = buf.len() / slots;
        QuinnReader {
            state: quinn_state(socket),
            iovs: buf.chunks_mut(slot).map(IoSliceMut::new).collect(),
            metas: vec![RecvMeta::default(); slots],
        }
    }
}

impl Reader for QuinnReader<'_> {
    fn read(&mut self, socket: &UdpSocket, tally: &mut Tally) -> io::Result<()> {
        let n = self
            .state
            .recv(socket.into(), &mut self.iovs, &mut self.metas)?;
        for (meta, buf) in self.metas.iter().zip(&self.iovs).take(n) {
            tally.read(&buf[..meta.len], meta.stride);
        }
        Ok(())
    }
}

/// Bytes of a receive slot: a whole GRO train, as both read.
const SLOT: usize = 65_535;

/// Runs `f` with a reader of `imp` on `socket`.
fn with_reader<R>(
    imp: Imp,
    socket: &UdpSocket,
    slots: usize,
    f: impl FnOnce(&mut dyn Reader) -> R,
) -> R {
    match imp {
        Imp::Ours => f(&mut OursReader {
            batch: RecvBatch::default(),
            overflows: Overflows::default(),
        }),
        Imp::Quinn => {
            let mut buf = vec![0u8; slots * SLOT];
            f(&mut QuinnReader::new(socket, &mut buf, slots))
        }
    }
}

/// The sender of the receive measures, the same for both: `count` datagrams to `to`,
/// as GSO trains from one socket or as sendmmsg batches from `peers` sockets.
struct Blast {
    to: SocketAddr,
    count: u64,
    size: usize,
    segments: usize,
    peers: usize,
    trains: bool,
}

impl Blast {
    fn sockets(&self) -> Vec<UdpSocket> {
        let n = if self.trains { 1 } else { self.peers.max(1) };
        (0..n).map(|_| proxy_socket()).collect()
    }

    /// Sends until `count` datagrams or `limit` more may go, or `deadline`; how many went.
    fn send(&self, sockets: &[UdpSocket], data: &[u8], limit: u64, deadline: Instant) -> u64 {
        let mut sent = 0u64;
        let mut turn = 0usize;
        while sent < limit && Instant::now() < deadline {
            let s = &sockets[turn % sockets.len()];
            turn += 1;
            let fd = s.as_raw_fd();
            let result = if self.trains {
                let n = (limit - sent).min(self.segments as u64) as usize;
                let gso = (n > 1).then_some(self.size);
                udp::send(fd, self.to, &data[..n * self.size], gso).map(|_| n)
            } else {
                let n = (limit - sent).min(BATCH as u64) as usize;
                let mut batch = SendBatch::default();
                for _ in 0..n {
                    batch.push(self.to, &data[..self.size]);
                }
                let mut from = 0;
                while from < n && Instant::now() < deadline {
                    match batch.send(fd, from) {
                        Ok(k) => from += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            wait_for(fd, libc::POLLOUT, 10);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => panic!("sender: {e}"),
                    }
                }
                Ok(from)
            };
            match result {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_for(fd, libc::POLLOUT, 10);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("sender: {e}"),
            }
        }
        sent
    }
}

/// How long a socket stays quiet after the sender finished before the rest count as lost.
const QUIET_MS: i32 = 50;

/// Receive rate with a sender thread blasting concurrently.
fn receive_concurrent(
    imp: Imp,
    blast_trains: bool,
    args: &Args,
    cpus: Option<(usize, usize)>,
) -> Outcome {
    let rx = proxy_socket();
    let blast = Blast {
        to: local(&rx),
        count: args.count,
        size: args.size,
        segments: args.segments,
        peers: args.peers,
        trains: blast_trains,
    };
    let go = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let sender = {
        let (go, done) = (go.clone(), done.clone());
        std::thread::spawn(move || {
            if let Some((_, b)) = cpus {
                pin_to(b);
            }
            let sockets = blast.sockets();
            let data = vec![0x5a_u8; blast.segments.max(1) * blast.size];
            go.wait();
            let sent = blast.send(&sockets, &data, blast.count, deadline);
            done.store(true, Ordering::Release);
            sent
        })
    };
    let fd = rx.as_raw_fd();
    let (tally, started, cpu) = with_reader(imp, &rx, args.quinn_slots, |reader| {
        let mut tally = Tally::default();
        go.wait();
        let (started, cpu0) = (Instant::now(), thread_cpu());
        while tally.datagrams < args.count && Instant::now() < deadline {
            match reader.read(&rx, &mut tally) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let finished = done.load(Ordering::Acquire);
                    let ms = if finished { QUIET_MS } else { 10 };
                    if !wait_for(fd, libc::POLLIN, ms) && finished {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{}: receive: {e}", imp.name()),
            }
        }
        (tally, started, thread_cpu() - cpu0)
    });
    let sent = sender.join().expect("sender thread");
    let elapsed = tally.last.map_or(0.0, |t| (t - started).as_secs_f64());
    std::hint::black_box(tally.touched);
    Outcome {
        per_second: tally.datagrams as f64 / elapsed,
        cpu_ns: cpu.as_nanos() as f64 / tally.datagrams.max(1) as f64,
        lost: Some((
            sent.saturating_sub(tally.datagrams),
            u64::from(udp::drops(fd).unwrap_or(0)),
        )),
    }
}

/// Receive cost with full batches: datagrams are queued (fewer than the socket buffer
/// holds) with nobody reading, then drained; only the draining is timed.
fn receive_queued(imp: Imp, args: &Args) -> Outcome {
    let rx = proxy_socket();
    let blast = Blast {
        to: local(&rx),
        count: args.count,
        size: args.size,
        segments: 1,
        peers: args.peers,
        trains: false,
    };
    let sockets = blast.sockets();
    let data = vec![0x5a_u8; args.size];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    // Well under what 4 MiB (doubled by the kernel) holds of 1,200-byte datagrams.
    let round = 1024u64;
    let fd = rx.as_raw_fd();
    let (mut sent, mut busy, mut cpu) = (0u64, Duration::ZERO, Duration::ZERO);
    let tally = with_reader(imp, &rx, args.quinn_slots, |reader| {
        let mut tally = Tally::default();
        while sent < args.count && Instant::now() < deadline {
            let queued = blast.send(&sockets, &data, round.min(args.count - sent), deadline);
            sent += queued;
            let want = tally.datagrams + queued;
            let (t0, c0) = (Instant::now(), thread_cpu());
            while tally.datagrams < want && Instant::now() < deadline {
                match reader.read(&rx, &mut tally) {
                    Ok(()) => {}
                    // Loopback delivers before the send returns; an empty socket here means
                    // a drop, which the loss column shows.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("{}: receive: {e}", imp.name()),
                }
            }
            busy += t0.elapsed();
            cpu += thread_cpu() - c0;
        }
        tally
    });
    std::hint::black_box(tally.touched);
    Outcome {
        per_second: tally.datagrams as f64 / busy.as_secs_f64(),
        cpu_ns: cpu.as_nanos() as f64 / tally.datagrams.max(1) as f64,
        lost: Some((
            sent.saturating_sub(tally.datagrams),
            u64::from(udp::drops(fd).unwrap_or(0)),
        )),
    }
}

/// Send rate of `imp` to sockets nobody reads.
fn send(imp: Imp, measure: Measure, args: &Args) -> Outcome {
    let tx = proxy_socket();
    let fd = tx.as_raw_fd();
    let peers = if measure == Measure::SendGso {
        1
    } else {
        args.peers.max(1)
    };
    let sinks: Vec<UdpSocket> = (0..peers).map(|_| proxy_socket()).collect();
    let to: Vec<SocketAddr> = sinks.iter().map(local).collect();
    let state = (imp == Imp::Quinn).then(|| quinn_state(&tx));
    let segments = if measure == Measure::SendGso {
        args.segments.max(1)
    } else {
        1
    };
    let data = vec![0x5a_u8; segments * args.size];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let (started, cpu0) = (Instant::now(), thread_cpu());
    let mut sent = 0u64;
    let mut turn = 0usize;
    let mut batch_from = 0usize;
    while sent < args.count && Instant::now() < deadline {
        let n = (args.count - sent).min(segments as u64) as usize;
        let train = &data[..n * args.size];
        let gso = (n > 1).then_some(args.size);
        let result = match (&state, measure) {
            (None, Measure::SendBatched) => {
                // As the SOCKS5 relay sends: a batch to several destinations per call.
                let k = ((args.count - sent) as usize).min(BATCH);
                let mut batch = SendBatch::default();
                for i in 0..k {
                    batch.push(to[(turn + i) % peers], &data[..args.size]);
                }
                match batch.send(fd, batch_from) {
                    Ok(m) if batch_from + m < k => {
                        batch_from += m;
                        Ok(0)
                    }
                    Ok(m) => {
                        let whole = batch_from + m;
                        batch_from = 0;
                        turn += whole;
                        Ok(whole)
                    }
                    Err(e) => Err(e),
                }
            }
            (None, _) => {
                let dest = to[turn % peers];
                turn += 1;
                udp::send(fd, dest, train, gso).map(|_| n)
            }
            (Some(state), _) => {
                let t = Transmit {
                    destination: to[turn % peers],
                    ecn: None,
                    contents: train,
                    segment_size: gso,
                    src_ip: None,
                };
                turn += 1;
                state.try_send((&tx).into(), &t).map(|()| n)
            }
        };
        match result {
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_for(fd, libc::POLLOUT, 10);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{}: send: {e}", imp.name()),
        }
    }
    let cpu = thread_cpu() - cpu0;
    Outcome {
        per_second: sent as f64 / started.elapsed().as_secs_f64(),
        cpu_ns: cpu.as_nanos() as f64 / sent.max(1) as f64,
        lost: None,
    }
}

fn measure(imp: Imp, m: Measure, args: &Args, cpus: Option<(usize, usize)>) -> Outcome {
    match m {
        Measure::RecvGro => receive_concurrent(imp, true, args, cpus),
        Measure::RecvSingle => receive_concurrent(imp, false, args, cpus),
        Measure::RecvQueued => receive_queued(imp, args),
        _ => send(imp, m, args),
    }
}

fn parse_pin(text: &str) -> (usize, usize) {
    let (a, b) = text.split_once(',').expect("--pin takes two CPUs: A,B");
    let cpu = |s: &str| s.trim().parse::<usize>().expect("--pin: a CPU number");
    (cpu(a), cpu(b))
}

fn main() {
    let args = Args::parse();
    if args.probe {
        probe();
        return;
    }
    let cpus = args.pin.as_deref().map(parse_pin);
    if let Some((a, _)) = cpus {
        pin_to(a);
    }
    let both = [Imp::Ours, Imp::Quinn];
    let mut s = Samples::default();
    let started = Instant::now();
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        for m in MEASURES {
            let mut got = Vec::new();
            // Every other run starts with the other implementation.
            let order: Vec<Imp> = if run % 2 == 0 {
                both.to_vec()
            } else {
                both.iter().rev().copied().collect()
            };
            for imp in order {
                let o = measure(imp, m, &args, cpus);
                eprintln!(
                    "  {} / {}: {:.0} datagrams/s, {:.0} ns CPU each{}",
                    m.name(),
                    imp.name(),
                    o.per_second,
                    o.cpu_ns,
                    o.lost.map_or(String::new(), |(l, d)| format!(
                        ", {l} lost (kernel drop count {d}: GRO trains count once)"
                    ))
                );
                let key = format!("{} | {}", m.name(), imp.name());
                s.add(&format!("{key} rate"), o.per_second);
                s.add(&format!("{key} cpu"), o.cpu_ns);
                if let Some((lost, _)) = o.lost {
                    s.add(&format!("{key} lost"), lost as f64);
                }
                got.push((imp, o));
            }
            let of = |imp: Imp| got.iter().find(|(i, _)| *i == imp).map(|(_, o)| o);
            if let (Some(ours), Some(quinn)) = (of(Imp::Ours), of(Imp::Quinn)) {
                s.add(
                    &format!("{} ratio rate", m.name()),
                    quinn.per_second / ours.per_second,
                );
                s.add(
                    &format!("{} ratio cpu", m.name()),
                    quinn.cpu_ns / ours.cpu_ns,
                );
            }
        }
    }
    println!(
        "\nUDP IO on loopback, {} datagrams of {} B per measure, GSO trains of {}, {} peers, \
         quinn-udp reading {} buffers per call and ours {}, medians of {} run(s), {:.0} s in all\n",
        args.count,
        args.size,
        args.segments,
        args.peers,
        args.quinn_slots,
        BATCH,
        args.runs,
        started.elapsed().as_secs_f64()
    );
    println!("| measure | implementation | datagrams/s | CPU ns per datagram | lost |");
    println!("|---|---|---|---|---|");
    for m in MEASURES {
        for imp in both {
            let key = format!("{} | {}", m.name(), imp.name());
            let lost = if m.is_receive() {
                format!("{:.0}", s.median(&format!("{key} lost")))
            } else {
                "–".into()
            };
            println!(
                "| {key} | {:.0} | {:.0} | {lost} |",
                s.median(&format!("{key} rate")),
                s.median(&format!("{key} cpu")),
            );
        }
    }
    println!("\n| measure | quinn-udp / ours, datagrams/s | quinn-udp / ours, CPU per datagram |");
    println!("|---|---|---|");
    for m in MEASURES {
        println!(
            "| {} | {:.2} | {:.2} |",
            m.name(),
            s.median(&format!("{} ratio rate", m.name())),
            s.median(&format!("{} ratio cpu", m.name())),
        );
    }
}

/// What each implementation reports of a few datagrams, each on a socket of its own bound
/// as the QUIC socket is.
fn probe() {
    for imp in [Imp::Ours, Imp::Quinn] {
        println!("{}:", imp.name());
        let rx = proxy_socket();
        let to = local(&rx);
        let tx = proxy_socket();
        let txfd = tx.as_raw_fd();
        // ECT(0) on everything sent, to see whether the receiver reports it.
        set_int(txfd, libc::IPPROTO_IP, libc::IP_TOS, 0b10);
        let state = (imp == Imp::Quinn).then(|| quinn_state(&rx));
        let send = |len: usize, gso: Option<usize>| {
            udp::send(txfd, to, &vec![7u8; len], gso).expect("send");
        };
        let mut qbuf = vec![0u8; 4 * (SLOT + 22)];
        let mut read = |slot: usize, headroom: usize| -> String {
            assert!(wait_for(rx.as_raw_fd(), libc::POLLIN, 1000), "nothing came");
            match &state {
                None => {
                    let mut batch = RecvBatch::new(slot, headroom);
                    assert_eq!(batch.recv(rx.as_raw_fd()).expect("read"), 1);
                    let (r, room) = batch.get_with_room(0).expect("one datagram");
                    format!(
                        "len {} stride {} truncated {} overflows {:?}, {} bytes with the headroom",
                        r.len,
                        r.stride,
                        r.truncated,
                        r.overflows,
                        room.len()
                    )
                }
                Some(state) => {
                    // Headroom: each buffer starts `headroom` bytes into its slot.
                    let mut iovs: Vec<IoSliceMut> = qbuf
                        .chunks_mut(headroom + slot)
                        .map(|c| IoSliceMut::new(&mut c[headroom..]))
                        .collect();
                    let mut metas = [RecvMeta::default(); 4];
                    let n = state
                        .recv((&rx).into(), &mut iovs, &mut metas)
                        .expect("read");
                    assert_eq!(n, 1);
                    let m = metas[0];
                    format!(
                        "len {} stride {} ecn {:?} dst_ip {:?}, read {} bytes into its slot",
                        m.len, m.stride, m.ecn, m.dst_ip, headroom
                    )
                }
            }
        };
        send(2000, None);
        println!("  2,000 B into a 1,500 B buffer: {}", read(1500, 0));
        send(1200, None);
        println!("  1,200 B, ECT(0), 22 B headroom: {}", read(SLOT, 22));
        send(4800, Some(1200));
        println!(
            "  GSO train 4 x 1,200 B, ECT(0), 22 B headroom: {}",
            read(SLOT, 22)
        );
        // Overflow the socket once: from then on every datagram queued carries the running
        // drop count (SO_RXQ_OVFL, which udp::bind asks for) in one more control message.
        set_int(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        for _ in 0..200 {
            let _ = udp::send(txfd, to, &[0u8; 1000], None);
        }
        let mut drain = RecvBatch::default();
        while drain.recv(rx.as_raw_fd()).is_ok() {}
        set_int(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
        println!(
            "  after {:?} drops (SO_MEMINFO):",
            udp::drops(rx.as_raw_fd())
        );
        send(1200, None);
        println!("    1,200 B, ECT(0): {}", read(SLOT, 0));
        send(4800, Some(1200));
        println!("    GSO train 4 x 1,200 B, ECT(0): {}", read(SLOT, 0));
        if let Some(state) = &state {
            println!(
                "  max_gso_segments {}, gro_segments {}, may_fragment {}, BATCH_SIZE {}",
                state.max_gso_segments(),
                state.gro_segments(),
                state.may_fragment(),
                quinn_udp::BATCH_SIZE
            );
        } else {
            println!(
                "  MAX_GSO_SEGMENTS {}, BATCH {}",
                udp::MAX_GSO_SEGMENTS,
                BATCH
            );
        }
    }
}
