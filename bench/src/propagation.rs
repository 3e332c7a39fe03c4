//! `zcpropagation`: how long a policy change takes from the control plane's API answer to
//! enforcement on every core of a running proxy, and how long a revoked tunnel survives.
//!
//! Starts its own stack on loopback (scratch PostgreSQL database, private nats-server, the
//! release control plane and proxy) and tears it down afterwards.

mod stats;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use testkit::{Control, PolicyStack, ADMIN_KEY};

#[derive(Parser)]
#[command(about = "Policy propagation latency: API answer -> enforced on every core")]
struct Args {
    /// Policy changes to time.
    #[arg(long, default_value_t = 300)]
    changes: usize,
    /// Tunnel revocations to time (each creates a user: one Argon2id hash).
    #[arg(long, default_value_t = 30)]
    revocations: usize,
    /// Proxy shards.
    #[arg(long, default_value_t = 2)]
    cores: usize,
}

fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("proxy admin");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The lowest policy revision any core enforces.
fn min_core_revision(admin: SocketAddr) -> u64 {
    admin_get(admin, "/metrics")
        .lines()
        .filter(|l| l.starts_with("zcproxy_policy_revision{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .min()
        .unwrap_or(0)
}

/// Sends an admin request and returns the revision it committed (X-Policy-Revision).
fn change(agent: &ureq::Agent, control: &Control, method: &str, path: &str, body: &str) -> u64 {
    let url = control.url(path);
    let auth = format!("Bearer {ADMIN_KEY}");
    let req = match method {
        "POST" => agent.post(&url),
        "PATCH" => agent.patch(&url),
        _ => panic!("method {method}"),
    };
    let resp = req
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(body)
        .expect("control plane answers");
    assert!(
        resp.status().is_success(),
        "{method} {path}: {}",
        resp.status()
    );
    resp.headers()
        .get("X-Policy-Revision")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("X-Policy-Revision")
}

fn delete(agent: &ureq::Agent, control: &Control, path: &str) {
    let resp = agent
        .delete(&control.url(path))
        .header("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .call()
        .expect("control plane answers");
    assert!(resp.status().is_success(), "DELETE {path}");
}

fn socks5_tunnel(proxy: SocketAddr, user: &str, pass: &str, dest: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.write_all(&[5, 1, 2]).unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).unwrap();
    let mut m = vec![1, user.len() as u8];
    m.extend_from_slice(user.as_bytes());
    m.push(pass.len() as u8);
    m.extend_from_slice(pass.as_bytes());
    s.write_all(&m).unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(b[1], 0, "{user} authenticated");
    let SocketAddr::V4(d) = dest else {
        panic!("IPv4 echo")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&d.ip().octets());
    req.extend_from_slice(&d.port().to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "tunnel opened");
    s
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "| {what} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        ms.len(),
        stats::percentile(&ms, 0.5),
        stats::percentile(&ms, 0.9),
        stats::percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let args = Args::parse();
    let stack = PolicyStack::start();
    let (control, nats, reader) = (&stack.control, &stack.nats, &stack.reader);
    control.ok("POST", "/v1/users", r#"{"name":"bench","password":"pw"}"#);

    let listen: SocketAddr = format!("127.0.0.1:{}", testkit::free_port())
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", testkit::free_port())
        .parse()
        .unwrap();
    let config = std::env::temp_dir().join(format!("zcpropagation-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\nadmin = \"{admin}\"\ncores = {}\n[control]\nurl = \"http://{}\"\napi_key = \"{reader}\"\nnats_url = \"{}\"\n",
            args.cores,
            control.addr,
            nats.url()
        ),
    )
    .unwrap();
    let _proxy = Proxy(
        Command::new(testkit::workspace_bin("zcproxy"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start zcproxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !TcpStream::connect(admin).is_ok_and(|_| admin_get(admin, "/readyz").contains(" 200 ")) {
        assert!(Instant::now() < deadline, "proxy did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();

    // API answer -> every core's policy_revision gauge shows the new revision (the gauge is
    // written after the swap and the re-check of live sessions).
    let mut api_ms = Vec::with_capacity(args.changes);
    let mut enforced_ms = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let sent = Instant::now();
        let body = format!(r#"{{"max_tunnels":{}}}"#, 1000 + i);
        let rev = change(&agent, control, "PATCH", "/v1/users/bench", &body);
        let answered = Instant::now();
        let limit = answered + Duration::from_secs(10);
        while min_core_revision(admin) < rev {
            assert!(
                Instant::now() < limit,
                "revision {rev} not enforced in 10 s"
            );
        }
        enforced_ms.push(answered.elapsed().as_secs_f64() * 1e3);
        api_ms.push((answered - sent).as_secs_f64() * 1e3);
    }

    // API answer to DELETE a user -> that user's live tunnel is closed.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut revoke_ms = Vec::with_capacity(args.revocations);
    for i in 0..args.revocations {
        let name = format!("victim{i}");
        let rev = change(
            &agent,
            control,
            "POST",
            "/v1/users",
            &format!(r#"{{"name":"{name}","password":"pw"}}"#),
        );
        while min_core_revision(admin) < rev {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut tunnel = socks5_tunnel(listen, &name, "pw", echo_addr);
        tunnel
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        delete(&agent, control, &format!("/v1/users/{name}"));
        let answered = Instant::now();
        let mut b = [0u8; 1];
        let _ = tunnel.read(&mut b); // returns on reset or close
        revoke_ms.push(answered.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&config);

    println!("| measurement | samples | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    report("API request (send -> answer)", api_ms);
    report("API answer -> enforced on every core", enforced_ms);
    report("API answer (DELETE user) -> live tunnel closed", revoke_ms);
}
