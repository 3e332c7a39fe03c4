//! Test harness: runs the real `zcproxy` binary and real upstream servers on loopback.
#![allow(dead_code)]

pub mod certs;
pub mod h2;
pub mod h3;
pub mod origin;
pub mod socks_udp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Ports below 32768 only (the kernel hands out the range above to outgoing connections);
/// each test process starts at its own offset so parallel processes rarely collide.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 120) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        let v4 = TcpListener::bind(("127.0.0.1", port));
        let v6 = TcpListener::bind(("::1", port));
        if v4.is_ok() && v6.is_ok() {
            return port;
        }
    }
}

/// The binary under test: this build's, or the one `ZCPROXY_TEST_BIN` names (to show that
/// a test fails on an older binary).
pub fn bin() -> String {
    std::env::var("ZCPROXY_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_zcproxy").into())
}

pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The proxy's own TMPDIR: what it generates (its certificate) stays apart from other
    /// proxies, even one that later gets the same port, and is removed with it.
    pub tmp: tempfile_path::TempDir,
    _config: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    /// A file removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A directory removed with its contents when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub struct ProxyBuilder {
    args: Vec<String>,
    config: Option<String>,
    prefix: Vec<String>,
    need_ready: bool,
    ipv6: bool,
    listen_ip: Option<String>,
}

impl ProxyBuilder {
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    /// Lets the proxy reach upstream servers on loopback (denied by default).
    pub fn allow_loopback(self) -> Self {
        self.arg("--allow-destination")
            .arg("127.0.0.0/8")
            .arg("--allow-destination")
            .arg("::1/128")
    }
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }
    /// Listens on [::1] instead of 127.0.0.1.
    pub fn listen_ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }
    /// Listens on `ip` (an address of an interface the test made) instead of 127.0.0.1.
    pub fn listen_ip(mut self, ip: &str) -> Self {
        self.listen_ip = Some(ip.to_string());
        self
    }
    /// Start-up waits for /healthz only (for proxies that are expected not to be ready).
    pub fn unready(mut self) -> Self {
        self.need_ready = false;
        self
    }
    /// Runs the proxy under a wrapper command (e.g. prlimit).
    pub fn wrapper(mut self, words: &[&str]) -> Self {
        self.prefix = words.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn start(self) -> Proxy {
        let host = match &self.listen_ip {
            Some(ip) => ip.as_str(),
            None if self.ipv6 => "[::1]",
            None => "127.0.0.1",
        };
        let addr: SocketAddr = format!("{host}:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = self.config.map(|text| {
            let path = std::env::temp_dir().join(format!(
                "zcproxy-test-{}-{}.toml",
                std::process::id(),
                addr.port()
            ));
            std::fs::write(&path, text).unwrap();
            tempfile_path::TempPath(path)
        });
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--admin")
            .arg(admin.to_string());
        if let Some(c) = &config {
            cmd.arg("--config").arg(&c.0);
        }
        let tmp = tempfile_path::TempDir(std::env::temp_dir().join(format!(
            "zcproxy-test-{}-{}.d",
            std::process::id(),
            addr.port()
        )));
        std::fs::create_dir_all(&tmp.0).unwrap();
        cmd.env("TMPDIR", &tmp.0)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("ZCPROXY_TEST_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().expect("start zcproxy");
        let proxy = Proxy {
            child,
            addr,
            admin,
            tmp,
            _config: config,
        };
        if self.need_ready {
            proxy.wait_ready();
        } else {
            proxy.wait_for("/healthz");
        }
        proxy
    }
}

impl Proxy {
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder {
            args: vec![],
            config: None,
            prefix: vec![],
            need_ready: true,
            ipv6: false,
            listen_ip: None,
        }
    }

    /// A proxy with two cores that may reach loopback upstreams.
    pub fn start_default() -> Proxy {
        Proxy::builder()
            .arg("--cores")
            .arg("2")
            .allow_loopback()
            .start()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&self) {
        self.wait_for("/readyz")
    }

    fn wait_for(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.admin, path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("proxy did not answer 200 on {path}");
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").expect("metrics").1
    }

    /// Sum of every series of `name` whose labels contain all of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        sum_metric(&self.metrics(), name, labels)
    }

    pub fn terminate(mut self) -> ExitStatus {
        // SAFETY: sending SIGTERM to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open descriptors of the proxy process, as (sockets, pipes, total).
    pub fn fd_counts(&self) -> (usize, usize, usize) {
        let (mut sockets, mut pipes, mut total) = (0, 0, 0);
        for entry in std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .flatten()
        {
            total += 1;
            if let Ok(target) = std::fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if t.starts_with("socket:") {
                    sockets += 1;
                } else if t.starts_with("pipe:") {
                    pipes += 1;
                }
            }
        }
        (sockets, pipes, total)
    }

    /// [`Proxy::fd_counts`] once two looks 100 ms apart agree: the admin connection of a
    /// scrape just answered may still be closing.
    pub fn settled_fd_counts(&self) -> (usize, usize, usize) {
        let mut last = self.fd_counts();
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.fd_counts();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }

    /// The configuration file the proxy was started with, if any.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self._config.as_ref().map(|c| c.0.as_path())
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("the proxy's /proc status")
    }
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples a process's resident memory every 50 ms while it runs; the largest value seen.
pub struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        let (stop, peak) = (
            std::sync::Arc::new(AtomicBool::new(false)),
            std::sync::Arc::new(AtomicU64::new(0)),
        );
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    pub fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// A two-thread tokio runtime for clients that drive many streams at once.
pub fn runtime_multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `len` bytes of the seeded test pattern.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut data = vec![0u8; len];
    Pattern::new(seed).fill(&mut data);
    bytes::Bytes::from(data)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sum_metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|lab| rest.contains(lab)))
                .then(|| value.parse::<f64>().ok())?
        })
        .collect();
    // A renamed series or a mistyped label must not pass as a count of zero.
    assert!(
        !values.is_empty(),
        "no series {name}{labels:?} in the metrics"
    );
    values.iter().sum()
}

/// A minimal HTTP GET for the admin endpoints: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    admin_request(addr, "GET", path)
}

/// A bodiless request to the admin listener: (status, body).
pub fn admin_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Runs curl and returns (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub enum Dest<'a> {
    Addr(SocketAddr),
    Name(&'a str, u16),
}

/// SOCKS5 handshake by hand. Err(reply code) when the proxy refuses (0xff: no method,
/// 0xfe: bad credentials).
pub fn socks5(
    proxy: SocketAddr,
    dest: Dest<'_>,
    creds: Option<(&str, &str)>,
    cmd: u8,
) -> Result<(TcpStream, SocketAddr), u8> {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let method = if creds.is_some() { 2 } else { 0 };
    s.write_all(&[5, 1, method]).unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).map_err(|_| 0xfd)?;
    if sel[1] == 0xff {
        return Err(0xff);
    }
    if let Some((u, p)) = creds {
        let mut msg = vec![1, u.len() as u8];
        msg.extend_from_slice(u.as_bytes());
        msg.push(p.len() as u8);
        msg.extend_from_slice(p.as_bytes());
        s.write_all(&msg).unwrap();
        let mut st = [0u8; 2];
        s.read_exact(&mut st).map_err(|_| 0xfd)?;
        if st[1] != 0 {
            return Err(0xfe);
        }
    }
    let mut req = vec![5, cmd, 0];
    match dest {
        Dest::Addr(SocketAddr::V4(a)) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Addr(SocketAddr::V6(a)) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
            req.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Name(h, p) => {
            req.push(3);
            req.push(h.len() as u8);
            req.extend_from_slice(h.as_bytes());
            req.extend_from_slice(&p.to_be_bytes());
        }
    }
    s.write_all(&req).unwrap();
    let bound = read_socks5_reply(&mut s)?;
    Ok((s, bound))
}

pub fn read_socks5_reply(s: &mut TcpStream) -> Result<SocketAddr, u8> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).map_err(|_| 0xfd)?;
    let addr = match head[3] {
        1 => {
            let mut b = [0u8; 6];
            s.read_exact(&mut b).map_err(|_| 0xfd)?;
            SocketAddr::from(([b[0], b[1], b[2], b[3]], u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let mut b = [0u8; 18];
            s.read_exact(&mut b).map_err(|_| 0xfd)?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[..16]);
            SocketAddr::from((ip, u16::from_be_bytes([b[16], b[17]])))
        }
        _ => return Err(0xfc),
    };
    if head[1] != 0 {
        return Err(head[1]);
    }
    Ok(addr)
}

/// A deterministic byte stream (xorshift), so both ends can generate and check it.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Accepts connections on loopback and hands each to `serve` on its own thread.
pub fn spawn_server(addr: &str, serve: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    // free_port only probes; another thread may take the port before this bind: try again.
    let listener = (0..20)
        .find_map(|_| {
            let port = free_port();
            TcpListener::bind(format!("{addr}:{port}").replace("::1:", "[::1]:")).ok()
        })
        .expect("a free loopback port");
    let local = listener.local_addr().unwrap();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(s));
        }
    });
    local
}

/// An echo server: what comes in goes back out; FIN is answered with FIN.
pub fn echo_server() -> SocketAddr {
    spawn_server("127.0.0.1", |mut s| {
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// An upstream that accepts and holds every connection, on one thread.
pub fn holding_server() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    addr
}

/// A UDP server on `bind` that answers each datagram with what `reply` makes of it and
/// counts the answers sent; it stops after 30 s without a datagram.
pub fn udp_server(
    bind: &str,
    reply: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let socket = std::net::UdpSocket::bind(bind).unwrap();
    let addr = socket.local_addr().unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if socket.send_to(&reply(&buf[..n]), from).is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    (addr, answered)
}

/// A UDP echo server on 127.0.0.1 that counts the datagrams it sent back (see
/// [`udp_server`]).
pub fn udp_echo_counted() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    udp_server("127.0.0.1:0", <[u8]>::to_vec)
}

/// A UDP echo server on loopback (see [`udp_echo_counted`]).
pub fn udp_echo() -> SocketAddr {
    udp_echo_counted().0
}
