//! The contenders: zcproxy and the peer proxies from Debian, each started with a config
//! that lets loopback clients reach loopback upstreams without authentication.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    None,
    Socks5,
    /// SOCKS5 with RFC 1929 username/password ([`BENCH_CREDENTIALS`]).
    Socks5Auth,
    Connect,
}

/// The user every `-auth` contender is configured with.
pub const BENCH_CREDENTIALS: (&str, &str) = ("bench", "bench-password");

pub struct Running {
    pub name: String,
    pub handshake: Handshake,
    pub addr: Option<SocketAddr>,
    pub child: Option<Child>,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SAFETY: signalling our own child; SIGTERM lets forking servers stop their
            // children too.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_listening(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn spawn(
    name: &str,
    handshake: Handshake,
    addr: SocketAddr,
    cmd: &mut Command,
) -> Option<Running> {
    crate::cpus::bind_proxy(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let running = Running {
        name: name.to_string(),
        handshake,
        addr: Some(addr),
        child: Some(child),
    };
    if wait_listening(addr) {
        Some(running)
    } else {
        eprintln!("zcbench: {name} did not start listening on {addr}; skipped");
        None
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write peer config");
    p
}

pub fn direct() -> Running {
    Running {
        name: "direct".into(),
        handshake: Handshake::None,
        addr: None,
        child: None,
    }
}

pub struct ZcOptions<'a> {
    pub bin: &'a Path,
    pub cores: usize,
    /// Extra configuration (TOML) for variants such as `relay = "copy"`.
    pub config: Option<&'a str>,
    /// The address it listens on (loopback but for the veth runs of zcbench-quic).
    pub listen: std::net::IpAddr,
}

/// Where the proxies listen unless a benchmark says otherwise.
pub const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

pub fn zcproxy(
    dir: &Path,
    opts: &ZcOptions<'_>,
    port: u16,
    admin: u16,
    handshake: Handshake,
    label: &str,
) -> Option<Running> {
    let addr = SocketAddr::new(opts.listen, port);
    let mut cmd = Command::new(opts.bin);
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--admin",
        &format!("127.0.0.1:{admin}"),
    ])
    .args([
        "--cores",
        &opts.cores.to_string(),
        "--allow-destination",
        "127.0.0.0/8",
    ])
    .env("RUST_LOG", "warn");
    if let Some(text) = opts.config {
        cmd.arg("--config")
            .arg(write(dir, &format!("zcproxy-{port}.toml"), text));
    }
    spawn(label, handshake, addr, &mut cmd)
}

pub fn danted(dir: &Path, port: u16) -> Option<Running> {
    let conf = write(
        dir,
        "danted.conf",
        &format!(
            "logoutput: /dev/null\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
             clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
             client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\nsocks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n"
        ),
    );
    let pid = dir.join("danted.pid");
    spawn(
        "danted (SOCKS5)",
        Handshake::Socks5,
        ([127, 0, 0, 1], port).into(),
        Command::new("danted")
            .arg("-f")
            .arg(conf)
            .arg("-p")
            .arg(pid),
    )
}

pub fn microsocks(port: u16) -> Option<Running> {
    spawn(
        "microsocks (SOCKS5)",
        Handshake::Socks5,
        ([127, 0, 0, 1], port).into(),
        Command::new("microsocks").args(["-i", "127.0.0.1", "-p", &port.to_string()]),
    )
}

pub fn squid(dir: &Path, port: u16) -> Option<Running> {
    let d = dir.display();
    let conf = write(
        dir,
        "squid.conf",
        &format!(
            "http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\n\
             access_log none\ncache_log /dev/null\ncache_store_log none\npid_filename {d}/squid.pid\n\
             coredump_dir {d}\nshutdown_lifetime 0 seconds\nmax_filedescriptors 20000\n\
             cache_effective_user proxy\n"
        ),
    );
    spawn(
        "squid (CONNECT)",
        Handshake::Connect,
        ([127, 0, 0, 1], port).into(),
        Command::new("squid").args(["-N", "-f"]).arg(conf),
    )
}

pub fn tinyproxy(dir: &Path, port: u16) -> Option<Running> {
    let conf = write(
        dir,
        "tinyproxy.conf",
        &format!(
            "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 10000\n\
             Allow 127.0.0.1\nLogLevel Critical\n"
        ),
    );
    spawn(
        "tinyproxy (CONNECT)",
        Handshake::Connect,
        ([127, 0, 0, 1], port).into(),
        Command::new("tinyproxy").arg("-d").arg("-c").arg(conf),
    )
}

/// Where `cargo install` put the Rust peers (see docs/benchmarks.md for the commands).
const RUST_PEERS: &str = "/opt/zcbench-peers";

/// fast-socks5's `server` example (tokio, one worker per CPU it may use), with or without
/// username/password.
pub fn fast_socks5(port: u16, auth: bool) -> Option<Running> {
    let mut cmd = Command::new(format!("{RUST_PEERS}/fast-socks5/bin/server"));
    cmd.args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "error");
    let (user, pass) = BENCH_CREDENTIALS;
    let (label, hs) = if auth {
        cmd.args(["password", "--username", user, "--password", pass]);
        ("fast-socks5 (SOCKS5, password)", Handshake::Socks5Auth)
    } else {
        cmd.arg("no-auth");
        ("fast-socks5 (SOCKS5)", Handshake::Socks5)
    };
    spawn(label, hs, ([127, 0, 0, 1], port).into(), &mut cmd)
}

/// socks5-rs (tokio), as many worker threads as zcproxy has shards, with or without
/// username/password.
pub fn socks5_rs(port: u16, threads: usize, auth: bool) -> Option<Running> {
    let mut cmd = Command::new(format!("{RUST_PEERS}/bin/socks5-rs"));
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--work-threads", &threads.to_string()])
        .env("RUST_LOG", "error");
    let (user, pass) = BENCH_CREDENTIALS;
    let (label, hs) = if auth {
        cmd.args(["--username", user, "--password", pass]);
        ("socks5-rs (SOCKS5, password)", Handshake::Socks5Auth)
    } else {
        ("socks5-rs (SOCKS5)", Handshake::Socks5)
    };
    spawn(label, hs, ([127, 0, 0, 1], port).into(), &mut cmd)
}

/// A runtime spike of zcproxy's SOCKS5 path (`zcspike-compio`, `zcspike-monoio`; issue 10).
pub fn spike(bin: &Path, port: u16, cores: usize, flags: &[&str], label: &str) -> Option<Running> {
    spawn(
        label,
        Handshake::Socks5,
        ([127, 0, 0, 1], port).into(),
        Command::new(bin)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--cores",
                &cores.to_string(),
            ])
            .args(flags),
    )
}
