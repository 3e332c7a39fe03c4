//! Tunnel relay: byte-exact bulk transfers, half-close, resets, many idle tunnels.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::{socks5, spawn_server, Dest, Pattern, Proxy};
use testkit::raise_nofile;

const GIB: u64 = 1 << 30;

/// Upstream that checks an upload of `len` pattern bytes, then sends `len` pattern bytes back
/// (different seed) and reports the upload verdict as the final byte.
fn bulk_server(len: u64) -> SocketAddr {
    spawn_server("127.0.0.1", move |mut s| {
        let mut expect = Pattern::new(1);
        let (mut buf, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        let mut left = len;
        let mut ok = true;
        while left > 0 {
            let k = (left.min(buf.len() as u64)) as usize;
            // Read exactly k so the pattern chunks stay aligned with the generator's.
            if s.read_exact(&mut buf[..k]).is_err() {
                ok = false;
                break;
            }
            expect.fill(&mut want[..k]);
            ok &= buf[..k] == want[..k];
            left -= k as u64;
        }
        let mut gen = Pattern::new(2);
        let mut left = len;
        while left > 0 {
            let k = (left.min(buf.len() as u64)) as usize;
            gen.fill(&mut buf[..k]);
            if s.write_all(&buf[..k]).is_err() {
                return;
            }
            left -= k as u64;
        }
        let _ = s.write_all(&[ok as u8]);
    })
}

fn bulk_through(proxy: &Proxy, server: SocketAddr, len: u64) {
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    let mut writer = s.try_clone().unwrap();
    let upload = std::thread::spawn(move || {
        let mut gen = Pattern::new(1);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let k = (left.min(buf.len() as u64)) as usize;
            gen.fill(&mut buf[..k]);
            writer.write_all(&buf[..k]).unwrap();
            left -= k as u64;
        }
    });
    let mut expect = Pattern::new(2);
    let (mut buf, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = len;
    while left > 0 {
        let k = (left.min(buf.len() as u64)) as usize;
        s.read_exact(&mut buf[..k]).unwrap();
        expect.fill(&mut want[..k]);
        assert!(
            buf[..k] == want[..k],
            "download corrupted {} bytes before the end",
            left
        );
        left -= k as u64;
    }
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict).unwrap();
    upload.join().unwrap();
    assert_eq!(verdict[0], 1, "upload arrived corrupted");
}

#[test]
fn one_gib_each_way_byte_exact_with_splice() {
    let proxy = Proxy::start_default();
    bulk_through(&proxy, bulk_server(GIB), GIB);
    let spliced = proxy.metric("zcproxy_splice_bytes_total", &[]);
    assert!(
        spliced >= 2.0 * GIB as f64,
        "splice carried {spliced} bytes"
    );
    // Pipes went back to the pool once the bytes were through.
    assert!(proxy.metric("zcproxy_pipes_pooled", &[]) >= 1.0);
    assert_eq!(proxy.metric("zcproxy_pipes_in_use", &[]), 0.0);
    assert!(proxy.metric("zcproxy_bytes_client_to_upstream_total", &[]) >= GIB as f64);
    assert!(proxy.metric("zcproxy_bytes_upstream_to_client_total", &[]) >= GIB as f64);
}

/// The copy path is the one every stream that is not a plain socket takes (TLS without kTLS,
/// h2 and QUIC streams): byte-exact both ways, FIN and RST propagated.
#[test]
fn copy_mode_keeps_the_relay_contract() {
    let proxy = Proxy::builder()
        .config("relay = \"copy\"\ncores = 1\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n")
        .start();
    let len = 64 << 20;
    bulk_through(&proxy, bulk_server(len), len);
    assert_eq!(proxy.metric("zcproxy_splice_bytes_total", &[]), 0.0);
    assert!(proxy.metric("zcproxy_copy_bytes_total", &[]) >= 2.0 * len as f64);
    check_half_close(&proxy);
    check_upstream_reset(&proxy);
    assert_eq!(proxy.metric("zcproxy_splice_bytes_total", &[]), 0.0);
}

#[test]
fn half_close_is_propagated_both_ways() {
    check_half_close(&Proxy::start_default());
}

fn check_half_close(proxy: &Proxy) {
    // The server reads until FIN, then answers with everything it got, then closes.
    let server = spawn_server("127.0.0.1", |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(b"got:").unwrap();
        s.write_all(&got).unwrap();
    });
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    s.write_all(b"question").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"got:question");

    // The other way: the server closes its side first; the client can still send. What the
    // server then reads comes back to this thread: an assertion in the server's thread could
    // never fail the test.
    let (late_tx, late_rx) = std::sync::mpsc::channel();
    let server = spawn_server("127.0.0.1", move |mut s| {
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = late_tx.send(got);
    });
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    let mut greeting = Vec::new();
    s.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello");
    s.write_all(b"late data").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = [0u8; 1];
    assert_eq!(s.read(&mut rest).unwrap(), 0);
    let late = late_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the server read to the end");
    assert_eq!(late, b"late data");
}

#[test]
fn upstream_reset_reaches_the_client_as_a_reset() {
    check_upstream_reset(&Proxy::start_default());
}

fn check_upstream_reset(proxy: &Proxy) {
    let server = spawn_server("127.0.0.1", |mut s| {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        let sock = socket2::SockRef::from(&s);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // RST
    });
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    s.write_all(b"ping").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let err = s.read(&mut buf).expect_err("a reset, not an orderly close");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"relay_reset\""]) >= 1.0);
}

#[test]
fn client_data_sent_with_the_request_is_not_lost() {
    let server = common::echo_server();
    let proxy = Proxy::start_default();
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    // Greeting, request and payload in one write: the proxy must forward the early payload.
    let mut msg = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    msg.extend_from_slice(&server.port().to_be_bytes());
    msg.extend_from_slice(b"early bird");
    s.write_all(&msg).unwrap();
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..3], &[5, 0, 5]);
    let mut echoed = [0u8; 10];
    s.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"early bird");
}

/// On the epoll driver (hosts whose seccomp profile blocks io_uring) the relay keeps its
/// whole contract: byte-exact both ways through splice, FIN and RST propagated, idle timeout.
#[test]
fn epoll_driver_keeps_the_relay_contract() {
    let proxy = Proxy::builder()
        .config("driver = \"epoll\"\ncores = 1\n[timeouts]\nidle_secs = 1\n[[policy.rules]]\naction = \"allow\"\ndestinations = [\"127.0.0.0/8\"]\n")
        .start();
    let len = 64 << 20;
    bulk_through(&proxy, bulk_server(len), len);
    assert!(proxy.metric("zcproxy_splice_bytes_total", &[]) >= 2.0 * len as f64);
    assert_eq!(proxy.metric("zcproxy_copy_bytes_total", &[]), 0.0);
    check_half_close(&proxy);
    check_upstream_reset(&proxy);

    let server = common::echo_server();
    let (mut s, _) = socks5(proxy.addr, Dest::Addr(server), None, 1).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).expect("closed, not timed out"), 0);
    assert_eq!(proxy.metric("zcproxy_io_uring", &[]), 0.0);

    // And `io-uring` means io_uring (this kernel has it; elsewhere the proxy refuses to start).
    let uring = Proxy::builder()
        .config("driver = \"io-uring\"\ncores = 1\n")
        .start();
    assert_eq!(uring.metric("zcproxy_io_uring", &[]), 1.0);
}

#[test]
fn nine_thousand_idle_tunnels_hold_no_pipes_and_little_memory() {
    raise_nofile();
    const TUNNELS: usize = 9000;
    // The upstream keeps every accepted socket open (one thread, no per-connection threads).
    let listener = std::net::TcpListener::bind(("127.0.0.1", common::free_port())).unwrap();
    let upstream = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
            if held.len() == TUNNELS {
                tx.send(held).unwrap();
                return;
            }
        }
    });
    let proxy = Proxy::start_default();
    let rss_before = proxy.rss_kib();
    let mut clients = Vec::with_capacity(TUNNELS);
    for _ in 0..TUNNELS {
        let (s, _) = socks5(proxy.addr, Dest::Addr(upstream), None, 1).expect("tunnel");
        clients.push(s);
    }
    let mut held = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("all tunnels reached upstream");
    let (sockets, pipes, _) = proxy.fd_counts();
    let rss_after = proxy.rss_kib();
    assert!(sockets >= 2 * TUNNELS, "proxy holds {sockets} sockets");
    assert!(pipes <= 2 * 64, "idle tunnels hold {pipes} pipe fds");
    let per_tunnel = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / TUNNELS as f64;
    assert!(
        per_tunnel < 20.0 * 1024.0,
        "{per_tunnel} bytes of RSS per idle tunnel"
    );
    // And they still work: a byte each way through a sample of them. The upstream does not
    // know which accepted socket belongs to which client, so it answers whoever speaks.
    for i in (0..TUNNELS).step_by(997) {
        clients[i].write_all(b"x").unwrap();
    }
    let mut seen = 0;
    for s in held.iter_mut() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if let Ok(1) = s.read(&mut b) {
            s.write_all(b"y").unwrap();
            seen += 1;
        }
    }
    // Give stragglers a moment, then count again.
    std::thread::sleep(Duration::from_millis(200));
    for s in held.iter_mut() {
        let mut b = [0u8; 1];
        if let Ok(1) = s.read(&mut b) {
            s.write_all(b"y").unwrap();
            seen += 1;
        }
    }
    assert_eq!(seen, TUNNELS.div_ceil(997));
    for i in (0..TUNNELS).step_by(997) {
        let mut b = [0u8; 1];
        clients[i]
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        clients[i].read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
    }
    // The sample traffic used pipes and gave every one back; still no pipe per tunnel.
    assert!(proxy.metric("zcproxy_pipes_pooled", &[]) >= 1.0);
    assert_eq!(proxy.metric("zcproxy_pipes_in_use", &[]), 0.0);
    let (_, pipes_after, _) = proxy.fd_counts();
    assert!(
        pipes_after <= 2 * 2 * 64,
        "{pipes_after} pipe fds after traffic"
    );
    eprintln!(
        "9000 idle tunnels: {per_tunnel:.0} bytes RSS each, {pipes} pipe fds, {sockets} sockets"
    );
}
