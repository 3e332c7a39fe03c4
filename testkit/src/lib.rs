//! Harness shared by the integration tests: a scratch PostgreSQL database, a private
//! nats-server with JetStream, and the real `zcproxy-control` binary, all started and cleaned
//! up by the test.

pub mod veth;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const PG: &str = "postgres://postgres@127.0.0.1:5432";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
/// Created at start-up by `--bootstrap-reader-key`, as a Helm release does for its proxies.
pub const READER_KEY: &str = "test-reader-key-0123456789";

/// A binary of this workspace, next to the running test or benchmark (`target/<profile>/`).
/// `cargo test --workspace` builds every package's binaries before any test runs.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().expect("executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build -p {}` or `cargo test --workspace`",
        bin.display(),
        if name == "zcproxy-control" {
            "zcproxy-control"
        } else {
            "zcproxy"
        }
    );
    bin
}

pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 14000 + (std::process::id() % 60) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn psql(db: &str, sql: &str) {
    let out = Command::new("psql")
        .args([
            &format!("{PG}/{db}"),
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .output()
        .expect("psql is installed");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn psql_value(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([&format!("{PG}/{db}"), "-At", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A database created for one test and dropped afterwards.
pub struct ScratchDb {
    pub name: String,
}

impl ScratchDb {
    pub fn new() -> ScratchDb {
        static N: AtomicU16 = AtomicU16::new(0);
        let name = format!(
            "zc_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        ScratchDb { name }
    }
    pub fn url(&self) -> String {
        format!("{PG}/{}", self.name)
    }
    pub fn value(&self, sql: &str) -> String {
        psql_value(&self.name, sql)
    }
}

impl Default for ScratchDb {
    fn default() -> Self {
        ScratchDb::new()
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{PG}/postgres"),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A nats-server with JetStream owned by the test (so the test may kill it).
pub struct Nats {
    pub port: u16,
    pub store: PathBuf,
    child: Option<Child>,
}

impl Nats {
    pub fn start() -> Nats {
        let port = free_port();
        let store = std::env::temp_dir().join(format!("zc-nats-{}-{port}", std::process::id()));
        let mut n = Nats {
            port,
            store,
            child: None,
        };
        n.restart();
        n
    }
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    pub fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        self.child = Some(child);
        wait_port(self.port);
    }
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Control {
    pub addr: SocketAddr,
    pub db_url: String,
    child: Option<Child>,
}

impl Control {
    pub fn start(db_url: &str, nats_url: &str) -> Control {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Control::start_at(db_url, nats_url, addr)
    }

    /// An address where no control plane answers (for outage tests).
    pub fn dummy() -> Control {
        Control {
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
            db_url: String::new(),
            child: None,
        }
    }

    /// Starts the control plane on `addr` (e.g. to restart it where clients expect it).
    pub fn start_at(db_url: &str, nats_url: &str, addr: SocketAddr) -> Control {
        let mut cmd = Command::new(workspace_bin("zcproxy-control"));
        cmd.arg("serve")
            .env("ZCPROXY_DATABASE_URL", db_url)
            .env("ZCPROXY_NATS_URL", nats_url)
            .env("ZCPROXY_LISTEN", addr.to_string())
            .env("ZCPROXY_BOOTSTRAP_API_KEY", ADMIN_KEY)
            .env("ZCPROXY_BOOTSTRAP_READER_KEY", READER_KEY)
            .env("ZCPROXY_WORKERS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if std::env::var_os("ZCPROXY_TEST_LOG").is_none() {
            cmd.stderr(Stdio::null());
        }
        let child = cmd.spawn().expect("start zcproxy-control");
        let c = Control {
            addr,
            db_url: db_url.to_string(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() || c.get_anon("/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "control plane did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// Creates an API key with `role` and returns its secret.
    pub fn create_key(&self, role: &str) -> String {
        let r = self.send(
            "POST",
            ADMIN_KEY,
            "/v1/api-keys",
            &format!(r#"{{"name":"key-{role}","role":"{role}"}}"#),
        );
        assert_eq!(r.0, 201, "{r:?}");
        r.1["key"].as_str().expect("key in the answer").to_string()
    }

    /// The policy snapshot, as the data plane would load it.
    pub fn snapshot(&self) -> serde_json::Value {
        let r = self.get(ADMIN_KEY, "/v1/policy/snapshot");
        assert_eq!(r.0, 200, "{r:?}");
        r.1
    }

    /// Sends a write and asserts it succeeded (2xx).
    pub fn ok(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let r = if method == "DELETE" {
            self.delete(ADMIN_KEY, path)
        } else {
            self.send(method, ADMIN_KEY, path, body)
        };
        assert!((200..300).contains(&r.0), "{method} {path}: {r:?}");
        r.1
    }

    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    fn finish(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> (u16, serde_json::Value, String) {
        let mut resp = resp.expect("HTTP exchange");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, json, ctype)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get_anon(&self, path: &str) -> (u16, serde_json::Value, String) {
        Self::finish(Self::agent().get(&self.url(path)).call())
    }

    pub fn get(&self, key: &str, path: &str) -> (u16, serde_json::Value, String) {
        Self::finish(
            Self::agent()
                .get(&self.url(path))
                .header("Authorization", &format!("Bearer {key}"))
                .call(),
        )
    }

    pub fn delete(&self, key: &str, path: &str) -> (u16, serde_json::Value, String) {
        Self::finish(
            Self::agent()
                .delete(&self.url(path))
                .header("Authorization", &format!("Bearer {key}"))
                .call(),
        )
    }

    pub fn send(
        &self,
        method: &str,
        key: &str,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value, String) {
        let agent = Self::agent();
        let auth = format!("Bearer {key}");
        let req = match method {
            "POST" => agent.post(&self.url(path)),
            "PUT" => agent.put(&self.url(path)),
            "PATCH" => agent.patch(&self.url(path)),
            other => panic!("method {other}"),
        };
        Self::finish(
            req.header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .send(body),
        )
    }

    /// Sends an admin write and returns the revision it reports in `X-Policy-Revision`.
    pub fn revision_of(&self, method: &str, path: &str, body: &str) -> Option<u64> {
        let agent = Self::agent();
        let url = self.url(path);
        let auth = format!("Bearer {ADMIN_KEY}");
        let resp = match method {
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "POST" | "PUT" | "PATCH" => {
                let req = match method {
                    "POST" => agent.post(&url),
                    "PUT" => agent.put(&url),
                    _ => agent.patch(&url),
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(body)
            }
            other => panic!("method {other}"),
        }
        .expect("HTTP exchange");
        resp.headers()
            .get("X-Policy-Revision")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = ureq::get(&self.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `f` with a client of the test's NATS on a throwaway runtime.
fn with_nats<T, F: std::future::Future<Output = T>>(
    nats_url: &str,
    f: impl FnOnce(async_nats::Client) -> F,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats_url)
            .await
            .expect("connect to test NATS");
        f(client).await
    })
}

/// Publishes each JSON value on the policy subject, as a replaying broker would.
pub fn publish_raw(nats_url: &str, events: &[serde_json::Value]) {
    with_nats(nats_url, |client| async move {
        for e in events {
            client
                .publish(policy::SUBJECT, serde_json::to_vec(e).unwrap().into())
                .await
                .unwrap();
        }
        client.flush().await.unwrap();
    })
}

/// Reads every event in the JetStream stream, in stream order, as (revision, json).
pub fn stream_events(nats_url: &str) -> Vec<serde_json::Value> {
    with_nats(nats_url, |client| async move {
        use futures_util::StreamExt;
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .get_stream("ZCPROXY_POLICY")
            .await
            .expect("stream exists");
        let count = stream.info().await.unwrap().state.messages;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut out = Vec::new();
        while (out.len() as u64) < count {
            match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                Ok(Some(Ok(m))) => out.push(serde_json::from_slice(&m.payload).unwrap()),
                _ => break,
            }
        }
        out
    })
}

/// Waits until `f` holds or panics after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a proxy following a control plane needs: the control plane on a scratch database
/// with a private NATS, a reader key for the proxy, and a global rule letting proxies reach
/// upstreams on loopback (protected unless a rule names it). Fields drop in order: the
/// control plane stops before its broker and database go.
pub struct PolicyStack {
    pub control: Control,
    pub nats: Nats,
    pub reader: String,
    pub db: ScratchDb,
}

impl PolicyStack {
    pub fn start() -> PolicyStack {
        let db = ScratchDb::new();
        let nats = Nats::start();
        let control = Control::start(&db.url(), &nats.url());
        let reader = control.create_key("reader");
        control.ok(
            "POST",
            "/v1/rules",
            r#"{"action":"allow","destinations":["127.0.0.0/8"]}"#,
        );
        PolicyStack {
            control,
            nats,
            reader,
            db,
        }
    }
}

/// Lets this process hold as many descriptors as its hard limit allows (load generators and
/// tests that hold thousands of sockets).
pub fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
