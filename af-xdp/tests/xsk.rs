//! AF_XDP end to end, in two network namespaces joined by a veth pair with two queues:
//! the program attached on A's side steers UDP to A's address and port into one XSK per
//! queue, replies built by hand leave through the XSK's TX ring and reach B's socket,
//! and meanwhile the kernel behind the program still answers ARP, NDP, ICMP, TCP and UDP
//! to other ports. Every wait has a deadline.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use af_xdp::bpf::XdpMd;
use af_xdp::program::action;
use af_xdp::{
    attach, AttachMode, BoundMode, Error, Filter, FramePool, Interface, Reason, RedirectProgram,
    Umem, UmemConfig, XdpMode, XskConfig, XskMode, XskSocket,
};
use common::frame::{parse_udp, udp4_frame, udp_reply, Csum};
use common::netns::{Netns, Pair, A_IF, A_V4, A_V6, B_IF, B_V4};

const PORT: u16 = 4433;
const PER_SENDER: usize = 32;

/// One shard's socket with its frame pool: half the frames in the fill ring, the rest
/// for replies.
struct Shard {
    sock: XskSocket,
    pool: FramePool,
}

impl Shard {
    fn new(iface: &Interface, queue: u32) -> Shard {
        let umem = Umem::new(&UmemConfig {
            frames: 1024,
            ..Default::default()
        })
        .unwrap();
        let config = XskConfig {
            queue,
            rx_size: 512,
            tx_size: 512,
            fill_size: 512,
            completion_size: 512,
            ..Default::default()
        };
        let sock = XskSocket::new(umem, iface, &config).unwrap();
        let pool = FramePool::new(sock.umem());
        let mut s = Shard { sock, pool };
        let pool = &mut s.pool;
        assert_eq!(s.sock.rings().fill.push_with(512, || pool.take()), 512);
        s
    }

    /// Takes what the RX ring holds (copies, for the test), refills the fill ring.
    fn recv(&mut self, out: &mut Vec<Vec<u8>>) -> usize {
        let (umem, rings) = self.sock.parts();
        let mut n = 0;
        for d in rings.rx.recv(64) {
            // SAFETY: taken from the RX ring, ours until given back below.
            let bytes = unsafe { umem.frame(d.addr, d.len as usize) }.expect("inside its frame");
            out.push(bytes.to_vec());
            self.pool.give(umem.frame_of(d.addr));
            n += 1;
        }
        let pool = &mut self.pool;
        rings.fill.push_with(n as u32, || pool.take());
        self.sock.wake_rx().unwrap();
        n
    }

    fn send(&mut self, frame: &[u8]) {
        let addr = self.pool.take().expect("a free frame");
        // SAFETY: from the pool: in no ring.
        assert!(
            unsafe { self.sock.send_copy(addr, frame) }.unwrap(),
            "TX ring full"
        );
    }

    fn complete(&mut self) -> usize {
        let (umem, rings) = self.sock.parts();
        let mut n = 0;
        for addr in rings.completion.recv(64) {
            self.pool.give(umem.frame_of(addr));
            n += 1;
        }
        n
    }
}

/// A UDP client in B pinned to `cpu`: sends PER_SENDER datagrams tagged `tag` to `dst`,
/// then collects the replies (at most 10 s).
fn sender(
    b: &Netns,
    cpu: usize,
    dst: SocketAddr,
    tag: String,
) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    b.spawn_in(Some(cpu), move || {
        let any: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .unwrap();
        let s = UdpSocket::bind(any).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        for i in 0..PER_SENDER {
            s.send_to(format!("{tag}-{i:03}").as_bytes(), dst).unwrap();
        }
        let mut replies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 2048];
        while replies.len() < PER_SENDER && Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                assert_eq!(
                    from, dst,
                    "the reply comes from the proxy's address and port"
                );
                replies.push(buf[..n].to_vec());
            }
        }
        replies.sort();
        replies
    })
}

#[test]
fn udp_reaches_the_xsk_replies_leave_by_tx_and_the_kernel_keeps_the_rest() {
    if !common::root_or_skip(
        "udp_reaches_the_xsk_replies_leave_by_tx_and_the_kernel_keeps_the_rest",
    ) {
        return;
    }
    let pair = Pair::new("xsk");
    // XPS in B: what CPU 0 sends leaves by TX queue 0, CPU 1's by queue 1; veth hands a
    // frame to the peer's RX queue of the same number.
    let xps = pair.b.sh(&format!(
        "echo 1 > /sys/class/net/{B_IF}/queues/tx-0/xps_cpus && \
         echo 2 > /sys/class/net/{B_IF}/queues/tx-1/xps_cpus"
    ));
    let two_cpus = af_xdp::bpf::possible_cpus().unwrap() >= 2;
    let steered = xps.status.success() && two_cpus;

    let _in_a = pair.a.enter();
    let iface = Interface::by_name(A_IF).unwrap();
    assert_eq!(iface.rx_queues().unwrap(), 2);
    let filter = Filter {
        port: PORT,
        ipv4: vec![A_V4.parse().unwrap()],
        ipv6: vec![A_V6.parse().unwrap()],
    };
    let prog = RedirectProgram::load(&filter, 2).unwrap();
    let link = attach(prog.fd(), A_IF, AttachMode::Auto).unwrap();
    assert_eq!(link.mode(), XdpMode::Native);
    let mut shards: Vec<Shard> = (0..2).map(|q| Shard::new(&iface, q)).collect();
    for s in &shards {
        assert_eq!(s.sock.mode(), BoundMode::Copy, "veth has no zero-copy");
        s.sock.register(prog.xsk_map()).unwrap();
    }

    // With a socket in the queue's slot the program redirects (test runs do not deliver).
    let probe = udp4_frame(
        &[],
        B_V4.parse().unwrap(),
        A_V4.parse().unwrap(),
        1,
        PORT,
        b"x",
    );
    for q in 0..2 {
        let before = prog.verdicts().unwrap();
        let out = prog
            .test_run(&probe, Some(XdpMd::ingress(iface.index, q)))
            .unwrap();
        assert_eq!(out.retval, action::REDIRECT);
        let moved = prog.verdicts().unwrap().since(&before);
        assert_eq!((moved.get(Reason::Redirected), moved.total()), (1, 1));
    }
    let start = prog.verdicts().unwrap();

    // The kernel still answers ARP/NDP and echo requests (this also resolves B's
    // neighbours before the datagrams, so none waits in B's neighbour queue and leaves
    // from whatever CPU the resolution finishes on).
    for dst in [A_V4, A_V6] {
        let dst: IpAddr = dst.parse().unwrap();
        let ok = pair.b.spawn_in(None, move || {
            common::icmp::ping(dst, Duration::from_secs(3))
        });
        assert!(
            ok.join().unwrap(),
            "ping {dst} from B while the program is attached"
        );
    }

    let v4 = SocketAddr::new(A_V4.parse().unwrap(), PORT);
    let v6 = SocketAddr::new(A_V6.parse().unwrap(), PORT);
    let senders: Vec<_> = [(0, v4, "v4"), (1, v4, "v4"), (0, v6, "v6"), (1, v6, "v6")]
        .into_iter()
        .map(|(cpu, dst, fam)| {
            let tag = format!("{fam}-cpu{cpu}");
            (tag.clone(), sender(&pair.b, cpu % 2, dst, tag))
        })
        .collect();

    let total = senders.len() * PER_SENDER;
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut replied = [0u64; 2];
    let mut partial = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < total && Instant::now() < deadline {
        let mut got = 0;
        for (q, shard) in shards.iter_mut().enumerate() {
            let mut frames = Vec::new();
            got += shard.recv(&mut frames);
            for f in &frames {
                let p = parse_udp(f).unwrap_or_else(|| panic!("not a UDP frame: {f:02x?}"));
                // veth passes the sender's offloaded (partial) checksum on as is.
                partial += u64::from(p.csum == Csum::Partial);
                assert_eq!(p.dport, PORT);
                assert!(p.dst == v4.ip() || p.dst == v6.ip(), "to {}", p.dst);
                let text = String::from_utf8(p.payload.to_vec()).unwrap();
                assert!(seen.insert(text, q as u32).is_none(), "a datagram twice");
                let mut reply = b"reply:".to_vec();
                reply.extend_from_slice(p.payload);
                shard.send(&udp_reply(&p, &reply));
                replied[q] += 1;
            }
            shard.sock.wake_tx().unwrap();
            shard.complete();
        }
        if got == 0 {
            shards[0]
                .sock
                .poll_readable(Duration::from_millis(5))
                .unwrap();
        }
    }

    // Every datagram arrived once, byte for byte.
    let mut expected: Vec<String> = Vec::new();
    for (tag, _) in &senders {
        expected.extend((0..PER_SENDER).map(|i| format!("{tag}-{i:03}")));
    }
    expected.sort();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);

    // Everything queued leaves and completes.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (q, shard) in shards.iter_mut().enumerate() {
        while shard.sock.counters().tx_completions < replied[q] {
            assert!(Instant::now() < deadline, "TX completions of queue {q}");
            shard.sock.wake_tx().unwrap();
            shard.complete();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // Every reply sent from the TX rings reached its socket in B, byte for byte.
    for (tag, handle) in senders {
        let replies = handle.join().unwrap();
        let want: Vec<Vec<u8>> = (0..PER_SENDER)
            .map(|i| format!("reply:{tag}-{i:03}").into_bytes())
            .collect();
        assert_eq!(replies, want, "replies to {tag}");
    }
    // Which queue each sender's datagrams came in on.
    let mut per_queue = [0usize; 2];
    for (payload, &q) in &seen {
        per_queue[q as usize] += 1;
        if steered {
            let cpu = if payload.contains("-cpu0-") { 0 } else { 1 };
            assert_eq!(
                q, cpu,
                "{payload}: sent from CPU {cpu} (XPS: TX queue {cpu})"
            );
        }
    }
    eprintln!(
        "per RX queue: {per_queue:?} (XPS steering {steered}); {partial} of {total} UDP checksums partial"
    );
    if steered {
        assert_eq!(per_queue, [total / 2, total / 2]);
    }

    // TCP and UDP to another port are the kernel's.
    let listener = TcpListener::bind((A_V4.parse::<IpAddr>().unwrap(), 8080)).unwrap();
    let kernel_udp = UdpSocket::bind((A_V4.parse::<IpAddr>().unwrap(), 5353)).unwrap();
    kernel_udp
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let client = pair.b.spawn_in(None, || {
        let to = SocketAddr::new(A_V4.parse().unwrap(), 8080);
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"hello over tcp").unwrap();
        let mut back = [0u8; 14];
        c.read_exact(&mut back).unwrap();
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.send_to(b"to the kernel", (A_V4, 5353)).unwrap();
        back
    });
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no TCP connection from B: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut msg = [0u8; 14];
    conn.read_exact(&mut msg).unwrap();
    conn.write_all(&msg).unwrap();
    assert_eq!(&client.join().unwrap(), b"hello over tcp");
    let mut buf = [0u8; 64];
    let (n, _) = kernel_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to the kernel");

    // The program's counters: every datagram redirected; ARP, NDP, ICMP and TCP passed.
    let moved = prog.verdicts().unwrap().since(&start);
    eprintln!(
        "verdicts: {:?}",
        moved.iter().filter(|(_, n)| *n > 0).collect::<Vec<_>>()
    );
    assert_eq!(moved.get(Reason::Redirected), total as u64);
    assert_eq!(moved.get(Reason::RedirectNoSocket), 0);
    assert!(moved.get(Reason::PassNotIp) >= 1, "ARP");
    assert!(moved.get(Reason::PassNotUdp) >= 4, "ICMP, NDP, TCP");
    assert!(moved.get(Reason::PassOtherPort) >= 1, "UDP to 5353");

    for (q, shard) in shards.iter().enumerate() {
        let stats = shard.sock.statistics().unwrap();
        let counters = shard.sock.counters();
        let huge = shard.sock.umem().hugepages();
        eprintln!("queue {q}: UMEM on 2 MiB pages: {huge}\n  {stats:?}\n  {counters:?}");
        assert_eq!(
            (
                stats.rx_dropped,
                stats.rx_invalid_descs,
                stats.tx_invalid_descs
            ),
            (0, 0, 0)
        );
        assert_eq!(counters.rx_frames, per_queue[q] as u64);
        assert_eq!(counters.tx_frames, replied[q]);
        assert_eq!(counters.tx_completions, replied[q]);
    }
}

/// veth has no AF_XDP zero-copy: asking for it fails with one line naming the interface,
/// auto takes copy mode.
#[test]
fn zero_copy_is_refused_on_veth_and_auto_takes_copy() {
    if !common::root_or_skip("zero_copy_is_refused_on_veth_and_auto_takes_copy") {
        return;
    }
    let pair = Pair::new("zc");
    let _in_a = pair.a.enter();
    let iface = Interface::by_name(A_IF).unwrap();
    let umem = || {
        Umem::new(&UmemConfig {
            frames: 64,
            ..Default::default()
        })
        .unwrap()
    };
    let zc = XskConfig {
        mode: XskMode::ZeroCopy,
        ..Default::default()
    };
    let e = XskSocket::new(umem(), &iface, &zc).unwrap_err();
    assert!(matches!(e, Error::ZeroCopyRefused { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "zero-copy AF_XDP refused by the driver of {A_IF} (queue 0): "
        )),
        "{e}"
    );
    let auto = XskSocket::new(umem(), &iface, &XskConfig::default()).unwrap();
    assert_eq!(auto.mode(), BoundMode::Copy);

    // One socket per queue: a second is refused; a queue past the device's too.
    let e = XskSocket::new(umem(), &iface, &XskConfig::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("queue 0 of {A_IF} already has an AF_XDP socket: not replaced")
    );
    let past = XskConfig {
        queue: 7,
        ..Default::default()
    };
    let e = XskSocket::new(umem(), &iface, &past).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{A_IF} has no queue 7 (2 RX queues)")
    );
    let copy = XskConfig {
        queue: 1,
        mode: XskMode::Copy,
        ..Default::default()
    };
    assert_eq!(
        XskSocket::new(umem(), &iface, &copy).unwrap().mode(),
        BoundMode::Copy
    );
}

/// Without CAP_IPC_LOCK the UMEM's pages count against RLIMIT_MEMLOCK: a UMEM larger than
/// the limit fails with one line naming both. (This thread only drops the capability.)
#[test]
fn a_umem_over_the_memlock_limit_names_the_limit() {
    if !common::root_or_skip("a_umem_over_the_memlock_limit_names_the_limit") {
        return;
    }
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) }, 0);
    if r.rlim_cur == libc::RLIM_INFINITY || r.rlim_cur > (64 << 20) {
        eprintln!(
            "skipped: RLIMIT_MEMLOCK is {} here, no UMEM goes over it cheaply",
            r.rlim_cur
        );
        return;
    }
    let limit = r.rlim_cur;
    let frames = (limit / 4096 + 2048) as u32; // 8 MiB over the limit
    let e = std::thread::spawn(move || {
        common::drop_caps_on_this_thread(&[common::CAP_IPC_LOCK]);
        let umem = Umem::new(&UmemConfig {
            frames,
            ..Default::default()
        })
        .unwrap();
        XskSocket::new(
            umem,
            &Interface::by_name("lo").unwrap(),
            &XskConfig::default(),
        )
        .unwrap_err()
    })
    .join()
    .unwrap();
    assert!(matches!(e, Error::LockedMemory { .. }), "{e:?}");
    let mib = |b: u64| b >> 20;
    assert_eq!(
        e.to_string(),
        format!(
            "locked memory limit too low for a {} MiB UMEM (RLIMIT_MEMLOCK {} MiB): raise it or give CAP_IPC_LOCK",
            mib(u64::from(frames) * 4096),
            mib(limit)
        )
    );
}

/// An AF_XDP socket needs CAP_NET_RAW; without it, one line says so.
#[test]
fn without_cap_net_raw_the_socket_is_refused_by_name() {
    if !common::root_or_skip("without_cap_net_raw_the_socket_is_refused_by_name") {
        return;
    }
    let e = std::thread::spawn(|| {
        common::drop_caps_on_this_thread(&[common::CAP_NET_RAW]);
        let umem = Umem::new(&UmemConfig {
            frames: 64,
            ..Default::default()
        })
        .unwrap();
        XskSocket::new(
            umem,
            &Interface::by_name("lo").unwrap(),
            &XskConfig::default(),
        )
        .unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "socket(AF_XDP) not permitted: needs CAP_NET_RAW (or root)"
    );
}
