//! The admin listener for operators: probes answered while a scraper stalls, `POST /reload`
//! and SIGHUP putting the configuration file's policy and live limits in force (and naming
//! what needs a restart), a file that does not validate changing nothing, and `POST /drain`
//! draining as SIGTERM does.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{admin_request, curl, http_get, Proxy};

/// "wonderland", as `zcproxy hash-password` makes it.
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$BZLBZP7FSPh0A8cqXic8LQ$gzcbUZxX0vmlA5VGwoW/dDVEd5Zim7/QelstpJg+so4";

fn config(users: &[&str], password_checks: u32, idle_secs: u32) -> String {
    let mut text = format!(
        "[timeouts]\nidle_secs = {idle_secs}\n[limits]\npassword_checks_per_core = {password_checks}\n"
    );
    for u in users {
        text.push_str(&format!(
            "[[policy.users]]\nname = \"{u}\"\npassword_hash = \"{HASH}\"\n"
        ));
    }
    text
}

/// Whether `user` gets a page through the proxy (HTTP forwarding to a loopback origin).
fn served(proxy: &Proxy, origin: std::net::SocketAddr, user: &str) -> bool {
    let p = format!("http://{user}:wonderland@{}", proxy.addr);
    let (code, body, _) = curl(&["-s", "-f", "-x", &p, &format!("http://{origin}/hello")]);
    code == 0 && body == b"hello\n"
}

/// The hand-written admin loop served one connection at a time: a scraper that sent half
/// a request held every probe up for its read timeout.
#[test]
fn probes_are_answered_while_scrapers_stall() {
    let proxy = Proxy::start_default();
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(proxy.admin).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(http_get(proxy.admin, "/healthz").map(|r| r.0), Some(200));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1000), "healthz took {took:?}");
    // The stalled ones are closed after the 2 s head timeout, not held.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        let closed = s.read_to_end(&mut sink);
        assert!(
            closed.is_ok(),
            "a stalled scraper was not closed: {closed:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn reload_puts_the_files_policy_and_limits_in_force() {
    let origin = common::origin::start("127.0.0.1");
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("2")
        .config(&config(&["alice"], 4, 300))
        .start();
    let path = proxy.config_path().unwrap().to_path_buf();
    assert!(served(&proxy, origin.addr, "alice"));
    assert!(!served(&proxy, origin.addr, "bob"));
    // A tunnel of alice's open across the reloads: her standing does not change.
    let echo = common::echo_server();
    let (mut tunnel, _) = common::socks5(
        proxy.addr,
        common::Dest::Addr(echo),
        Some(("alice", "wonderland")),
        1,
    )
    .unwrap();

    std::fs::write(&path, config(&["alice", "bob"], 2, 5)).unwrap();
    let (status, report) = admin_request(proxy.admin, "POST", "/reload").unwrap();
    assert_eq!(status, 200, "{report}");
    assert!(
        report.contains("policy: revision 1 in force (2 users)"),
        "{report}"
    );
    assert!(
        report.contains("limits: limits.password_checks_per_core in force"),
        "{report}"
    );
    assert!(
        report.contains("needs a restart: timeouts.idle_secs"),
        "{report}"
    );
    testkit::eventually(10, "revision 1 on both cores", || {
        proxy.metric("zcproxy_policy_revision", &[]) == 2.0
    });
    assert!(served(&proxy, origin.addr, "bob"));

    // SIGHUP does the same: bob removed again.
    std::fs::write(&path, config(&["alice"], 2, 5)).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    testkit::eventually(10, "revision 2 on every core", || {
        proxy.metric("zcproxy_policy_revision", &[]) == 4.0
    });
    assert!(!served(&proxy, origin.addr, "bob"));

    // A file that does not load changes nothing.
    std::fs::write(&path, "[limits]\nno_such_key = 1\n").unwrap();
    let (status, report) = admin_request(proxy.admin, "POST", "/reload").unwrap();
    assert_eq!(status, 422, "{report}");
    assert!(report.contains("no_such_key"), "{report}");
    assert!(served(&proxy, origin.addr, "alice"));
    assert_eq!(proxy.metric("zcproxy_policy_revision", &[]), 4.0);

    tunnel.write_all(b"still").unwrap();
    let mut back = [0u8; 5];
    tunnel.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still");
}

#[test]
fn post_drain_drains_like_sigterm() {
    let proxy = Proxy::builder().allow_loopback().start();
    assert_eq!(
        admin_request(proxy.admin, "GET", "/drain").map(|r| r.0),
        Some(405)
    );
    let echo = common::echo_server();
    let (mut tunnel, _) = common::socks5(proxy.addr, common::Dest::Addr(echo), None, 1).unwrap();
    let (status, body) = admin_request(proxy.admin, "POST", "/drain").unwrap();
    assert_eq!((status, body.as_str()), (202, "draining\n"));
    testkit::eventually(10, "not ready while draining", || {
        http_get(proxy.admin, "/readyz").map(|r| r.0) == Some(503)
    });
    // The live tunnel keeps working while it drains.
    tunnel.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    tunnel.read_exact(&mut b).unwrap();
    drop(tunnel);
    let started = Instant::now();
    let mut proxy = proxy;
    let status = loop {
        if let Some(s) = proxy.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no exit after drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
