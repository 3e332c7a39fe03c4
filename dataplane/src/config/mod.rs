//! Proxy configuration: a TOML file, overridden by command-line flags, over built-in defaults.

mod packet_io;

pub use packet_io::{AfXdp, PacketIoFallback, PacketIoKind, ZeroCopy};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use policy::{CompiledPolicy, PolicyDoc, PolicyError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("invalid setting: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// How tunnel bytes move once a tunnel is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayMode {
    /// splice(2) through a pipe, issued inline after io_uring readiness (default).
    Splice,
    /// Plain recv/send through a user-space buffer (for comparison and odd sockets).
    Copy,
}

/// Which kernel interface the shards' runtime waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoDriver {
    /// io_uring where the kernel (and seccomp) allow it, epoll otherwise (default).
    Auto,
    /// io_uring or refuse to start: for operators who would rather know.
    IoUring,
    /// epoll even where io_uring works.
    Epoll,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Whole handshake, first byte to tunnel established (slowloris guard).
    pub handshake_ms: u64,
    /// Name resolution plus TCP connect to the upstream.
    pub connect_ms: u64,
    /// A tunnel with no bytes either way for this long is closed.
    pub idle_secs: u64,
    /// On SIGTERM, how long live tunnels may drain before they are closed.
    pub drain_secs: u64,
    /// How long a SOCKS BIND waits for the inbound connection.
    pub bind_accept_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake_ms: 10_000,
            connect_ms: 10_000,
            idle_secs: 300,
            drain_secs: 30,
            bind_accept_secs: 60,
        }
    }
}

impl Timeouts {
    pub fn handshake(&self) -> Duration {
        Duration::from_millis(self.handshake_ms)
    }
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
    pub fn bind_accept(&self) -> Duration {
        Duration::from_secs(self.bind_accept_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections one core holds at most; more are accepted and closed at once.
    pub max_connections_per_core: usize,
    /// Idle pipes a core keeps for reuse. Pipes in use are not bounded by this: a tunnel
    /// direction holds one only while bytes are in flight.
    pub pipe_pool_per_core: usize,
    /// Pipe capacity in bytes (F_SETPIPE_SZ); the kernel rounds up to a power of two pages.
    pub pipe_size: usize,
    /// Verified credentials each core remembers.
    pub credential_cache_per_core: usize,
    /// Argon2id verifications one core runs at once (identical concurrent checks share one);
    /// more are refused at once. Bounds what a storm of bogus credentials can take.
    pub password_checks_per_core: usize,
    /// Threads verifying passwords for all cores; with Argon2's memory cost (19 MiB by
    /// default) this bounds the memory password checks hold at once. 0: one per core.
    pub password_threads: usize,
    /// No longer used: names are resolved asynchronously (`[resolver]`). Accepted so that
    /// older configuration files still load.
    pub resolver_threads: usize,
    /// Bytes one core lets HTTP/2 and HTTP/3 tunnel streams hold together: each stream
    /// commits its receive window (what its client may send ahead of the upstream) plus one
    /// read buffer toward the client, a connection at most twice its connection window. A
    /// stream past the budget is refused (REFUSED_STREAM, H3_REQUEST_REJECTED) so the client
    /// may retry. 0: a quarter of the machine's memory shared by the cores.
    pub tunnel_buffer_per_core: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections_per_core: 50_000,
            pipe_pool_per_core: 64,
            pipe_size: 256 * 1024,
            credential_cache_per_core: 4096,
            password_checks_per_core: 4,
            password_threads: 0,
            resolver_threads: 8,
            tunnel_buffer_per_core: 0,
        }
    }
}

/// What to serve when the control plane cannot be reached at start-up, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The last snapshot written to `control.cache_file`.
    Cache,
    /// The `[policy]` of this config file.
    Config,
}

/// QUIC (HTTP/3 CONNECT and CONNECT-UDP) on the proxy's port number, over UDP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quic {
    pub enabled: bool,
    /// The CONNECT-UDP URI template (RFC 9298 §3): a path, or an https:// URI whose path is
    /// used, with `{target_host}` and `{target_port}` once each.
    pub udp_template: String,
    /// Request streams a client may have open at once on one connection (QUIC flow
    /// control holds back the next until one ends).
    pub max_streams_per_connection: u32,
    /// CONNECT-UDP flows one connection may have at once (the next is answered 429).
    pub max_flows_per_connection: usize,
    /// Handshakes in progress on a core beyond which new clients must first prove their
    /// address with a Retry (an Initial flood costs one stateless packet each; 0: always).
    pub retry_above_handshakes: usize,
    /// Let the kernel steer each packet to the core owning its connection (a BPF program
    /// on the socket group). Off, or where it cannot be attached, the cores hand packets
    /// to each other instead (counted as handed over).
    pub kernel_steering: bool,
    /// Bytes a client may send on one stream ahead of its upstream taking them (QUIC
    /// stream flow control): what one tunnel buffers at most on the way up.
    pub stream_window: u32,
    /// Bytes a client may send on all streams of a connection together ahead of their
    /// upstreams; also what the proxy queues toward the client at most per connection.
    pub connection_window: u32,
    /// What carries the QUIC plane's packets: the kernel's UDP socket, or AF_XDP.
    pub packet_io: PacketIoKind,
    pub af_xdp: AfXdp,
}

impl Default for Quic {
    fn default() -> Self {
        Quic {
            enabled: true,
            udp_template: proto::masque::DEFAULT_TEMPLATE.to_string(),
            max_streams_per_connection: 256,
            max_flows_per_connection: 256,
            retry_above_handshakes: 256,
            kernel_steering: true,
            stream_window: 1 << 20,
            connection_window: 16 << 20,
            packet_io: PacketIoKind::Socket,
            af_xdp: AfXdp::default(),
        }
    }
}

/// SOCKS5 UDP ASSOCIATE (RFC 1928 §7): a relay socket per association.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Socks5Udp {
    pub enabled: bool,
    /// The address replies name for the relay socket (BND.ADDR) instead of the one the
    /// client reached the proxy on: the public address of a proxy behind NAT.
    pub advertised_address: Option<IpAddr>,
    /// Ports relay sockets bind, "LOW-HIGH" (for firewall or NAT port forwarding); any
    /// free port when unset.
    pub ports: Option<String>,
    /// Associations one core holds at once; more are refused.
    pub max_associations_per_core: usize,
    /// Associations one user holds at once on all cores together.
    pub max_associations_per_user: u32,
    /// Destinations one association sends to at once; a datagram to one more is dropped
    /// until a flow expires.
    pub max_destinations_per_association: usize,
    /// A destination nothing was sent to or received from for this long is forgotten
    /// (its replies are dropped from then on).
    pub flow_idle_secs: u64,
    /// How long a resolved destination name is reused by its association.
    pub dns_cache_secs: u64,
    /// Bytes of each relay socket buffer (a burst one side sends faster than the other
    /// takes).
    pub socket_buffer: usize,
}

impl Default for Socks5Udp {
    fn default() -> Self {
        Socks5Udp {
            enabled: true,
            advertised_address: None,
            ports: None,
            max_associations_per_core: 4096,
            max_associations_per_user: 64,
            max_destinations_per_association: 1024,
            flow_idle_secs: 120,
            dns_cache_secs: 60,
            socket_buffer: 1 << 20,
        }
    }
}

impl Socks5Udp {
    /// The relay port range, if one is set and valid.
    pub fn port_range(&self) -> Result<Option<(u16, u16)>, ConfigError> {
        let Some(text) = &self.ports else {
            return Ok(None);
        };
        let bad = || {
            ConfigError::Invalid(format!(
                "socks5_udp.ports {text:?}: expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535"
            ))
        };
        let (low, high) = text.split_once('-').ok_or_else(bad)?;
        let low: u16 = low.trim().parse().map_err(|_| bad())?;
        let high: u16 = high.trim().parse().map_err(|_| bad())?;
        if low == 0 || low > high {
            return Err(bad());
        }
        Ok(Some((low, high)))
    }
    pub fn flow_idle(&self) -> Duration {
        Duration::from_secs(self.flow_idle_secs)
    }
    pub fn dns_cache(&self) -> Duration {
        Duration::from_secs(self.dns_cache_secs)
    }
}

/// The proxy's TLS identity, shared by every TLS listener (QUIC now).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain, leaf first (with `key`). Without both, a self-signed
    /// certificate is generated at start.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// More certificates, each served to clients whose SNI one of its names covers
    /// (subjectAltName DNS names, `*.` wildcards); `cert`/`key` is the default.
    pub certificates: Vec<CertPair>,
    /// A client naming (SNI) a host no certificate covers gets a handshake alert instead
    /// of the default certificate. Clients that send no SNI (by address) get the default.
    pub refuse_unknown_names: bool,
    /// PEM bundle of the CAs whose client certificates are accepted: a verified
    /// certificate's subject common name is the user (who must exist and be enabled), as
    /// an alternative to passwords. A request's own credentials still take precedence.
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate from `client_ca` (the handshake fails).
    pub require_client_cert: bool,
    /// How often the files are checked for changes, reloaded without a restart (0: never).
    pub reload_secs: u64,
    /// Where a generated certificate is written (the certificate only, for clients to trust).
    pub generated_dir: PathBuf,
    /// Terminate TLS on the TCP port (an "HTTPS proxy"): a ClientHello there is answered
    /// with this identity, and the plaintext inside is served like any client of the port.
    pub tcp: bool,
    /// Hand a tunnel's TLS session to the kernel after a CONNECT inside TLS, so that it is
    /// spliced like a plain one — where the kernel has TLS (`zcproxy_ktls_available`).
    pub ktls: bool,
}

/// A certificate chain file and its key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            certificates: Vec::new(),
            refuse_unknown_names: false,
            client_ca: None,
            require_client_cert: false,
            reload_secs: 5,
            generated_dir: std::env::temp_dir().join("zcproxy"),
            tcp: true,
            ktls: true,
        }
    }
}

/// HTTP/2 to the proxy (ALPN `h2` inside TLS, or a plaintext connection that opens with
/// the HTTP/2 preface): CONNECT tunnels and CONNECT-UDP flows multiplexed as streams.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H2 {
    /// Offer `h2` in TLS ALPN (off: TLS clients get HTTP/1.1 only).
    pub enabled: bool,
    /// Streams a client may have open at once on one connection (SETTINGS).
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream ahead of its upstream taking them: what one
    /// tunnel buffers at most on the way up.
    pub stream_window: u32,
    /// Bytes a client may send on all streams of a connection together ahead of their
    /// upstreams.
    pub connection_window: u32,
    /// Largest request header section accepted (HPACK-decoded).
    pub max_header_list_size: u32,
    /// Streams a client may reset soon after opening them before the connection is closed
    /// with ENHANCE_YOUR_CALM, once they are most of its streams (the "rapid reset"
    /// pattern, CVE-2023-44487).
    pub max_premature_resets: u32,
}

impl Default for H2 {
    fn default() -> Self {
        H2 {
            enabled: true,
            max_concurrent_streams: 256,
            stream_window: 1 << 20,
            connection_window: 16 << 20,
            max_header_list_size: 16 * 1024,
            max_premature_resets: 100,
        }
    }
}

/// Name resolution (hickory-resolver on a thread of its own): the system's configuration
/// unless name servers are given here.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resolver {
    /// Name servers ("ip:port"), asked over UDP (TCP for truncated answers). Empty: those
    /// of /etc/resolv.conf, with its search list, ndots, timeout and attempts.
    pub nameservers: Vec<SocketAddr>,
    /// How long one query to one server may take (default: resolv.conf's, else 5 s).
    pub timeout_ms: Option<u64>,
    /// Queries per server before giving up on a name (default: resolv.conf's, else 2).
    pub attempts: Option<usize>,
    /// Answers kept (for their TTL).
    pub cache_size: u64,
    /// Look in /etc/hosts first.
    pub hosts_file: bool,
    /// Names being resolved at once for all cores; more are refused at once. A name whose
    /// DNS never answers holds one place until its timeout, no thread.
    pub max_in_flight: usize,
    /// Which addresses of a name with both come first ("ipv4" or "ipv6"); both are asked
    /// for at once, and a CONNECT tries them in order.
    pub prefer: AddressFamily,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver {
            nameservers: Vec::new(),
            timeout_ms: None,
            attempts: None,
            cache_size: 4096,
            hosts_file: true,
            max_in_flight: 4096,
            prefer: AddressFamily::Ipv4,
        }
    }
}

/// Where live policy comes from. Without `url` the proxy runs on its static `[policy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Control {
    /// Control plane base URL, e.g. `http://zcproxy-control:8080`.
    pub url: Option<String>,
    /// A reader API key (prefer `api_key_file` or ZCPROXY_CONTROL_API_KEY).
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub nats_url: String,
    pub subject: String,
    /// Last good snapshot, rewritten after every change (at most once a second).
    pub cache_file: Option<PathBuf>,
    pub fallback: Vec<Fallback>,
    /// How long start-up waits for the first snapshot before falling back.
    pub startup_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// The policy counts as stale once it has not been known current for this long.
    pub stale_after_secs: u64,
    /// Whether /readyz stays 200 while the policy is stale.
    pub ready_while_stale: bool,
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            url: None,
            api_key: None,
            api_key_file: None,
            nats_url: "nats://127.0.0.1:4222".into(),
            subject: policy::SUBJECT.into(),
            cache_file: None,
            fallback: vec![Fallback::Cache, Fallback::Config],
            startup_timeout_ms: 5_000,
            request_timeout_ms: 3_000,
            stale_after_secs: 10,
            ready_while_stale: true,
            retry_min_ms: 100,
            retry_max_ms: 5_000,
        }
    }
}

impl Control {
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.stale_after_secs)
    }
    pub fn retry(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.retry_min_ms.max(1)),
            Duration::from_millis(self.retry_max_ms.max(self.retry_min_ms.max(1))),
        )
    }

    /// The API key: ZCPROXY_CONTROL_API_KEY, then `api_key_file`, then `api_key`.
    pub fn resolve_api_key(&self) -> Result<String, ConfigError> {
        if let Ok(k) = std::env::var("ZCPROXY_CONTROL_API_KEY") {
            if !k.is_empty() {
                return Ok(k);
            }
        }
        if let Some(path) = &self.api_key_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            return Ok(text.trim().to_string());
        }
        self.api_key.clone().ok_or_else(|| {
            ConfigError::Invalid(
                "control.url is set but no API key: set ZCPROXY_CONTROL_API_KEY, control.api_key_file or control.api_key".into(),
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The one port every protocol is served on.
    pub listen: SocketAddr,
    /// Admin HTTP listener: /metrics, /healthz, /readyz, and POST /drain and /reload. None
    /// disables it.
    pub admin: Option<SocketAddr>,
    /// With it, POST /drain and /reload need `Authorization: Bearer <token>` from every
    /// client (also ZCPROXY_ADMIN_TOKEN); without it, they are taken from loopback only.
    pub admin_token: Option<String>,
    /// Shards (one thread pinned to one CPU each). None: every CPU.
    pub cores: Option<usize>,
    /// Pin each shard to its CPU.
    pub pin_cores: bool,
    pub relay: RelayMode,
    pub driver: IoDriver,
    pub log_format: LogFormat,
    /// tracing filter, e.g. "info" or "zcproxy=debug".
    pub log_level: String,
    /// Name this proxy gives itself in Via headers.
    pub via_name: String,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub control: Control,
    pub quic: Quic,
    pub socks5_udp: Socks5Udp,
    pub tls: Tls,
    pub h2: H2,
    pub resolver: Resolver,
    pub policy: PolicyDoc,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:1080".parse().expect("static address"),
            admin: Some("127.0.0.1:9901".parse().expect("static address")),
            admin_token: None,
            cores: None,
            pin_cores: true,
            relay: RelayMode::Splice,
            driver: IoDriver::Auto,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            via_name: "zcproxy".into(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            control: Control::default(),
            quic: Quic::default(),
            socks5_udp: Socks5Udp::default(),
            tls: Tls::default(),
            h2: H2::default(),
            resolver: Resolver::default(),
            policy: PolicyDoc::default(),
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn core_count(&self) -> usize {
        self.cores.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The proxy's own endpoints: requests for them would loop.
    pub fn own_endpoints(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.listen];
        v.extend(self.admin);
        v
    }

    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<CompiledPolicy, ConfigError> {
        if self.cores == Some(0) {
            return Err(ConfigError::Invalid("cores must be at least 1".into()));
        }
        if self.limits.pipe_size < 4096 || self.limits.pipe_size > 1 << 20 {
            return Err(ConfigError::Invalid(
                "limits.pipe_size must be between 4096 and 1048576".into(),
            ));
        }
        let t = &self.timeouts;
        // Zero would close every tunnel (idle) or every BIND (bind_accept) at once.
        if t.handshake_ms == 0 || t.connect_ms == 0 || t.idle_secs == 0 || t.bind_accept_secs == 0 {
            return Err(ConfigError::Invalid(
                "timeouts.handshake_ms, connect_ms, idle_secs and bind_accept_secs must be positive"
                    .into(),
            ));
        }
        if self.limits.password_checks_per_core == 0 || self.limits.resolver_threads == 0 {
            return Err(ConfigError::Invalid(
                "limits.password_checks_per_core and limits.resolver_threads must be positive"
                    .into(),
            ));
        }
        if let Some(url) = &self.control.url {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "control.url {url:?}: expected http:// or https://"
                )));
            }
            self.control.resolve_api_key()?;
        }
        if !self.tls.certificates.is_empty() && self.tls.cert.is_none() {
            return Err(ConfigError::Invalid(
                "tls.certificates need a default certificate: set tls.cert and tls.key".into(),
            ));
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::Invalid(
                "admin_token (or ZCPROXY_ADMIN_TOKEN) must not be empty".into(),
            ));
        }
        if self.quic.enabled && self.quic.packet_io == PacketIoKind::AfXdp {
            self.quic.af_xdp.validate(self.core_count())?;
        }
        if self.tls.require_client_cert && self.tls.client_ca.is_none() {
            return Err(ConfigError::Invalid(
                "tls.require_client_cert needs tls.client_ca".into(),
            ));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both, or neither for a generated certificate"
                    .into(),
            ));
        }
        let h2 = &self.h2;
        // RFC 9113 §6.5.2: windows are at most 2^31-1; below the 64 KiB default, a tunnel
        // would crawl.
        let window = 65_535..=(i32::MAX as u32);
        if !window.contains(&h2.stream_window) || !window.contains(&h2.connection_window) {
            return Err(ConfigError::Invalid(
                "h2.stream_window and h2.connection_window must be between 65535 and 2147483647"
                    .into(),
            ));
        }
        if h2.max_concurrent_streams == 0 || h2.max_header_list_size < 1024 {
            return Err(ConfigError::Invalid(
                "h2.max_concurrent_streams must be positive and h2.max_header_list_size at least 1024"
                    .into(),
            ));
        }
        let q = &self.quic;
        if q.stream_window < 65_535 || q.connection_window < q.stream_window {
            return Err(ConfigError::Invalid(
                "quic.stream_window must be at least 65535 and quic.connection_window at least quic.stream_window"
                    .into(),
            ));
        }
        if let Err(e) = proto::masque::Template::parse(&self.quic.udp_template) {
            return Err(ConfigError::Invalid(format!(
                "quic.udp_template {:?}: {e}",
                self.quic.udp_template
            )));
        }
        if self.quic.max_streams_per_connection == 0 || self.quic.max_flows_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "quic.max_streams_per_connection and quic.max_flows_per_connection must be at least 1".into(),
            ));
        }
        // A QUIC connection ID names its core in one byte (see quic/steer.rs).
        if self.quic.enabled && self.core_count() > 256 {
            return Err(ConfigError::Invalid(
                "QUIC steers to at most 256 cores: set fewer cores or quic.enabled = false".into(),
            ));
        }
        let u = &self.socks5_udp;
        u.port_range()?;
        if u.max_associations_per_user == 0
            || u.max_destinations_per_association == 0
            || u.flow_idle_secs == 0
            || u.socket_buffer < 4096
        {
            return Err(ConfigError::Invalid(
                "socks5_udp.max_associations_per_user, max_destinations_per_association and flow_idle_secs must be positive, socket_buffer at least 4096".into(),
            ));
        }
        if self.admin == Some(self.listen) {
            return Err(ConfigError::Invalid("admin and listen must differ".into()));
        }
        Ok(CompiledPolicy::compile(
            &self.policy,
            &self.own_endpoints(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_timeouts_and_pools_are_refused() {
        let mut cfg = Config::default();
        cfg.timeouts.idle_secs = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("idle_secs"));
        let mut cfg = Config::default();
        cfg.timeouts.bind_accept_secs = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = Config::default();
        cfg.limits.resolver_threads = 0;
        assert!(cfg.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/zcproxy.toml");
        let cfg = Config::from_file(&path).unwrap();
        let policy = cfg.validate().unwrap();
        assert!(policy.user_by_name("alice").is_some());
        assert_eq!(cfg.listen.port(), 1080);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Config>("lisen = \"127.0.0.1:1\"").is_err());
        let cfg: Config = toml::from_str("cores = 0").unwrap();
        assert!(cfg.validate().is_err());
        let cfg: Config = toml::from_str("[limits]\npipe_size = 10").unwrap();
        assert!(cfg.validate().is_err());
        for ports in ["1-", "0-10", "10-9", "a-b", "70000-70001"] {
            let cfg: Config =
                toml::from_str(&format!("[socks5_udp]\nports = \"{ports}\"")).unwrap();
            assert!(cfg.validate().is_err(), "{ports}");
        }
        let cfg: Config = toml::from_str("[socks5_udp]\nports = \"20000-20099\"").unwrap();
        assert_eq!(cfg.socks5_udp.port_range().unwrap(), Some((20000, 20099)));
    }
}
