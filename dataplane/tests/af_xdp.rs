//! QUIC over AF_XDP (issue 21): the proxy serves on one end of a veth pair the test makes
//! (two queues, the XDP program attached natively, copy-mode AF_XDP sockets for 2 cores);
//! third-party clients run in a network namespace on the other end. Needs root and
//! iproute2; without them each test says so and does nothing.

mod common;

use std::process::Command;

use common::h3::aioquic_in;
use common::{origin, Proxy};
use testkit::veth::{in_netns, VethPair};

/// The test's veth pair, and the proxy's configuration on its host end.
struct Net(VethPair);

impl std::ops::Deref for Net {
    type Target = VethPair;
    fn deref(&self) -> &VethPair {
        &self.0
    }
}

impl Net {
    fn new(tag: &str) -> Option<Net> {
        VethPair::new(tag, 2).map(Net)
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "cores = 2\n[quic]\npacket_io = \"af_xdp\"\n[quic.af_xdp]\ninterface = \"{}\"\nframes = 4096\n{extra}\n[policy]\nanonymous_clients = [\"{}/24\"]\n",
            self.host, self.host_ip
        )
    }
}

/// aioquic's CONNECT-UDP (10,000 datagrams, every one the echo sent accounted for) and
/// CONNECT (64 MiB byte-exact) through the AF_XDP path, with ARP, ICMP echo, SOCKS5 and
/// an HTTPS proxy over TCP to the same address still answered by the kernel; the metrics
/// show the frames took AF_XDP.
#[test]
fn third_party_clients_are_served_over_af_xdp() {
    let Some(net) = Net::new("a") else { return };
    let proxy = Proxy::builder()
        .listen_ip(&net.host_ip)
        .allow_loopback()
        .config(&net.config("busy_poll = 50\n"))
        .start();
    let exec = net.exec();
    let run = common::h3::aioquic_connect_udp_accounted(&exec, &proxy, 10_000);
    assert!(run.received >= 5_000, "{}", run.stdout);

    let tcp_echo = common::echo_server();
    let stdout = aioquic_in(
        &exec,
        &proxy,
        "aioquic_connect.py",
        &[&tcp_echo.to_string(), &(64 << 20).to_string()],
    );
    assert!(stdout.contains("ok"), "{stdout}");

    // ICMP to the address (after ARP): the program passes both to the kernel, which answers.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/icmp_ping.py");
    let mut args: Vec<&str> = exec.to_vec();
    args.extend(["python3", script, &net.host_ip]);
    let (code, out, err) = run_in(&args);
    assert_eq!(code, 0, "ping: {}{err}", String::from_utf8_lossy(&out));
    // The same address over TCP: the program passes it to the kernel.
    let origin = origin::start("127.0.0.1");
    let mut args: Vec<&str> = exec.to_vec();
    let proxy_url = format!("socks5h://{}", proxy.addr);
    let url = format!("http://{}/hello", origin.addr);
    args.extend(["curl", "-sS", "-x", &proxy_url, &url]);
    let (code, body, err) = run_in(&args);
    assert_eq!((code, body.as_slice()), (0, &b"hello\n"[..]), "{err}");
    // And TLS to the proxy (an HTTPS proxy) on the same port.
    let mut args: Vec<&str> = exec.to_vec();
    let https_proxy = format!("https://{}", proxy.addr);
    args.extend(["curl", "-sS", "--proxy-insecure", "-x", &https_proxy, &url]);
    let (code, body, err) = run_in(&args);
    assert_eq!(
        (code, body.as_slice()),
        (0, &b"hello\n"[..]),
        "HTTPS proxy: {err}"
    );

    let metrics = proxy.metrics();
    let metric = |name: &str, labels: &[&str]| common::sum_metric(&metrics, name, labels) as u64;
    let rx = metric(
        "zcproxy_packet_io_frames_total",
        &["backend=\"af_xdp\"", "direction=\"rx\""],
    );
    let tx = metric(
        "zcproxy_packet_io_frames_total",
        &["backend=\"af_xdp\"", "direction=\"tx\""],
    );
    assert!(rx >= 10_000 && tx >= 10_000, "rx {rx} tx {tx}");
    // Both cores on AF_XDP, none fell back to the socket.
    assert_eq!(
        metric(
            "zcproxy_packet_io_backend",
            &["backend=\"af_xdp\"", "fallback=\"false\""]
        ),
        2
    );
    let redirected = metric("zcproxy_xdp_verdicts_total", &["reason=\"redirected\""]);
    assert!(redirected >= rx, "redirected {redirected}, received {rx}");
    assert!(metric("zcproxy_xdp_verdicts_total", &["reason=\"pass_not_udp\""]) > 0);
    assert!(
        metric("zcproxy_xdp_verdicts_total", &["reason=\"pass_not_ip\""]) > 0,
        "ARP"
    );
}

/// Runs `args` (a command under `ip netns exec`): exit code, stdout, stderr.
fn run_in(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A backend that cannot run fails start-up with one line saying why (no such interface,
/// no privilege, locked memory), or falls back to the socket when allowed (said in the
/// log and the metrics); a second proxy on an interface whose XDP hook is taken is refused.
#[test]
fn af_xdp_start_failures_say_why_or_fall_back() {
    let Some(net) = Net::new("f") else { return };
    let bad =
        "cores = 1\n[quic]\npacket_io = \"af_xdp\"\n[quic.af_xdp]\ninterface = \"zcx-none0\"\n";
    let path = std::env::temp_dir().join(format!("zcproxy-afxdp-{}.toml", std::process::id()));
    std::fs::write(&path, bad).unwrap();
    // Its own temporary directory: the proxy writes a generated certificate there.
    let scratch = std::env::temp_dir().join(format!("zcproxy-afxdp-{}.d", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let out = Command::new(common::bin())
        .env("TMPDIR", &scratch)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:1",
            "--config",
        ])
        .arg(&path)
        .output()
        .expect("zcproxy");
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot run") && err.contains("zcx-none0"),
        "{err}"
    );

    // Without the privilege (CAP_BPF, CAP_NET_ADMIN dropped), and without CAP_IPC_LOCK
    // under a 1 MiB locked-memory limit for a 16 MiB UMEM: one line each, naming why.
    let config = std::env::temp_dir().join(format!("zcproxy-afxdp-{}-ok.toml", std::process::id()));
    std::fs::write(&config, net.config("")).unwrap();
    let refused = |prefix: &[&str]| {
        let out = Command::new(prefix[0])
            .args(&prefix[1..])
            .arg(common::bin())
            .env("TMPDIR", &scratch)
            .args([
                "--listen",
                &format!("{}:0", net.host_ip),
                "--admin",
                "127.0.0.1:1",
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .expect("zcproxy");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&["setpriv", "--bounding-set=-bpf,-net_admin,-sys_admin", "--"]);
    assert!(
        err.contains("cannot run") && err.contains("CAP_BPF"),
        "{err}"
    );
    let err = refused(&[
        "setpriv",
        "--bounding-set=-ipc_lock",
        "--",
        "prlimit",
        "--memlock=1048576:1048576",
    ]);
    assert!(err.contains("locked memory"), "{err}");
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&scratch);

    let fallback = Proxy::builder()
        .allow_loopback()
        .config(&format!("{bad}fallback = \"socket\"\n"))
        .start();
    assert_eq!(
        fallback.metric(
            "zcproxy_packet_io_backend",
            &["backend=\"socket\"", "fallback=\"true\""]
        ),
        1.0
    );

    let first = Proxy::builder()
        .listen_ip(&net.host_ip)
        .config(&net.config(""))
        .start();
    assert_eq!(
        first.metric("zcproxy_packet_io_backend", &["backend=\"af_xdp\""]),
        2.0
    );
    let second = Command::new(common::bin())
        .args([
            "--listen",
            &format!("{}:0", net.host_ip),
            "--admin",
            "127.0.0.1:1",
        ])
        .arg("--config")
        .arg(first.config_path().expect("config"))
        .output()
        .expect("zcproxy");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("already attached"), "{err}");
    drop(first);
    // Detached with the first proxy (the kernel frees the link's attachment shortly after
    // the process is gone): the interface takes a program again.
    let index = af_xdp::Interface::by_name(&net.host).unwrap().index;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while af_xdp::netlink::xdp_attached(index).unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "still attached after the proxy exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let again = Proxy::builder()
        .listen_ip(&net.host_ip)
        .config(&net.config(""))
        .start();
    assert_eq!(
        again.metric("zcproxy_packet_io_backend", &["backend=\"af_xdp\""]),
        2.0
    );
}

/// The Rust h3 client (quinn) over AF_XDP: 100 CONNECT streams at once on one connection,
/// each 64 KiB echoed byte-exact; then one tunnel whose client moves to a new UDP port
/// every fourth chunk, handed to its core by connection ID when the NIC queue is not its.
/// The proxy's kernel knows no neighbour here (ARP off on its end, the client given the
/// proxy's MAC statically): every answer goes to the next hop learned from the client's
/// frames, also on a core the datagram was handed to.
#[test]
fn rust_h3_client_runs_100_streams_and_migrates_over_af_xdp() {
    use common::h3::{
        echo_chunk, echo_through, generated_cert, open_h3, open_tunnel, quinn_client,
    };
    let Some(net) = Net::new("h") else { return };
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", net.host)).unwrap();
    let routes: [&[&str]; 3] = [
        &["link", "set", "dev", &net.host, "arp", "off"],
        &[
            "-n",
            &net.ns,
            "neigh",
            "replace",
            &net.host_ip,
            "lladdr",
            mac.trim(),
            "dev",
            &net.peer,
            "nud",
            "permanent",
        ],
        &["neigh", "flush", "dev", &net.host],
    ];
    for args in routes {
        assert!(testkit::veth::ip(args), "ip {args:?}");
    }
    let proxy = Proxy::builder()
        .listen_ip(&net.host_ip)
        .allow_loopback()
        .config(&net.config(""))
        .start();
    let echo = common::echo_server();
    let (cert, addr) = (generated_cert(&proxy), proxy.addr);
    let rebinds = in_netns(&net.ns, move || {
        common::h3::runtime().block_on(async move {
            let ep = quinn_client(&cert, b"h3");
            let any = || std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            ep.rebind(any()).unwrap();
            let (_quic, send, drive) = open_h3(&ep, addr).await;
            let tasks: Vec<_> = (0..100u8)
                .map(|i| {
                    let mut send = send.clone();
                    tokio::spawn(async move {
                        let data = common::pattern(64 * 1024, u64::from(i)).to_vec();
                        let got = echo_through(&mut send, echo, data.clone()).await;
                        assert!(got == data, "stream {i}");
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let mut send = send;
            let (mut tx, mut rx) = open_tunnel(&mut send, echo, None).await;
            let mut rebinds = 0;
            for chunk_no in 0..32u32 {
                echo_chunk(&mut tx, &mut rx, chunk_no).await;
                if chunk_no % 4 == 3 {
                    ep.rebind(any()).unwrap();
                    rebinds += 1;
                }
            }
            tx.finish().await.unwrap();
            drive.abort();
            ep.close(0u32.into(), b"done");
            rebinds
        })
    });
    assert_eq!(rebinds, 8);
    assert!(proxy.metric("zcproxy_quic_migrations_total", &[]) >= 1.0);
    assert_eq!(
        proxy.metric("zcproxy_packet_io_drops_total", &["reason=\"no_route\""]),
        0.0,
        "every answer found its next hop"
    );
    assert!(
        proxy.metric(
            "zcproxy_packet_io_frames_total",
            &["backend=\"af_xdp\"", "direction=\"rx\""]
        ) > 1000.0
    );
}
