//! Name resolution through the proxy's own resolver against a DNS server of the test's (on
//! loopback; the proxy is pointed at it with `[resolver] nameservers`, so nothing reaches
//! the machine's DNS): names under `ok.test` resolve to 127.0.0.1, names under `drop.test`
//! are never answered. Hundreds of names that never resolve, from SOCKS5 UDP clients, hold
//! no thread: another client's CONNECT by name resolves at once meanwhile.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::socks_udp::{associate, client_socket, wrap};
use common::{socks5, Dest, Proxy};

/// What the DNS server saw.
#[derive(Default)]
struct Seen {
    answered: AtomicUsize,
    dropped: AtomicUsize,
}

/// The DNS server: its address, and the queries it answered and dropped.
fn dns_server() -> (SocketAddr, Arc<Seen>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    std::thread::spawn(move || {
        socket
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            match answer(&buf[..n]) {
                Some(reply) => {
                    counter.answered.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&reply, from);
                }
                None => {
                    counter.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    (addr, seen)
}

/// The reply to a query for a name under `ok.test` (A: 127.0.0.1, other types: no data);
/// `None` for any other name, which goes unanswered.
fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let n = labels.len();
    if n < 2 || labels[n - 2] != "ok" || labels[n - 1] != "test" {
        return None;
    }
    let a = qtype == 1;
    let mut reply = query[..2].to_vec();
    // A response, recursion desired and available; one question; one answer (A) or one
    // authority record (an SOA, which makes "no such data" cacheable, RFC 2308).
    reply.extend_from_slice(&[0x81, 0x80, 0, 1, 0, u8::from(a), 0, u8::from(!a), 0, 0]);
    reply.extend_from_slice(query.get(12..question_end)?);
    if a {
        // The name by pointer to the question, A, IN, TTL 60, 127.0.0.1.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    } else {
        // SOA, IN, TTL 60: root mname and rname, then serial, refresh, retry, expire and a
        // negative TTL of 60.
        reply.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
        for v in [1u32, 60, 60, 60, 60] {
            reply.extend_from_slice(&v.to_be_bytes());
        }
    }
    Some(reply)
}

fn proxy_with_dns(dns: SocketAddr) -> Proxy {
    Proxy::builder()
        .allow_loopback()
        .config(&format!(
            "[resolver]\nnameservers = [\"{dns}\"]\ntimeout_ms = 3000\nattempts = 1\n"
        ))
        .start()
}

/// Defect 7: names for SOCKS5 UDP datagrams were resolved by a blocking getaddrinfo each, on
/// 8 threads shared with TCP CONNECT: one client's names that never resolve stalled every
/// client's CONNECT by name.
#[test]
fn names_that_never_resolve_do_not_hold_up_other_clients() {
    let (dns, seen) = dns_server();
    let echo = common::echo_server();
    let proxy = proxy_with_dns(dns);
    // 10 associations, 60 datagrams each to a distinct name DNS never answers.
    let mut held = Vec::new();
    for a in 0..10 {
        let client = client_socket(100);
        let (control, relay) = associate(&proxy, None, client.local_addr().unwrap());
        for i in 0..60 {
            let name = format!("n{a}-{i}.drop.test");
            client
                .send_to(&wrap(Dest::Name(&name, 7), b"never"), relay)
                .unwrap();
        }
        held.push((client, control));
    }
    testkit::eventually(10, "the DNS server saw the queries", || {
        seen.dropped.load(Ordering::Relaxed) >= 600
    });
    // Another client's CONNECT by name, while 600 names wait for answers that never come.
    for i in 0..5 {
        let started = Instant::now();
        let name = format!("host{i}.ok.test");
        let (mut s, _) = socks5(proxy.addr, Dest::Name(&name, echo.port()), None, 1)
            .unwrap_or_else(|code| panic!("CONNECT {name}: reply {code}"));
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "CONNECT {name} took {:?}",
            started.elapsed()
        );
    }
    // Names are answered from the cache the second time: no new query.
    let answered_before = seen.answered.load(Ordering::Relaxed);
    assert!(answered_before >= 5, "the names were asked for");
    let (mut s, _) = socks5(
        proxy.addr,
        Dest::Name("host0.ok.test", echo.port()),
        None,
        1,
    )
    .expect("a cached name");
    s.write_all(b"z").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(seen.answered.load(Ordering::Relaxed), answered_before);
    drop(held);
}

/// A name the DNS never answers fails once the query's timeout passed (the client gets
/// "host unreachable"-class reply 4), and a name that does not exist under RFC 6761
/// (`.invalid`) fails at once without a query.
#[test]
fn unanswered_and_special_names_fail_with_a_reason() {
    let (dns, seen) = dns_server();
    let proxy = proxy_with_dns(dns);
    let started = Instant::now();
    let refused = socks5(proxy.addr, Dest::Name("silent.drop.test", 80), None, 1).err();
    assert_eq!(refused, Some(4), "an unanswered name");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let queries = seen.dropped.load(Ordering::Relaxed) + seen.answered.load(Ordering::Relaxed);
    let refused = socks5(proxy.addr, Dest::Name("nothing.invalid", 80), None, 1).err();
    assert_eq!(refused, Some(4), ".invalid");
    let after = seen.dropped.load(Ordering::Relaxed) + seen.answered.load(Ordering::Relaxed);
    assert_eq!(after, queries, "no query for .invalid");
    assert!(proxy.metric("zcproxy_errors_total", &["kind=\"resolve\""]) >= 1.0);
}
