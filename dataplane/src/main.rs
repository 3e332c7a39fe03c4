//! `zcproxy`: command line, start-up and shutdown.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use policy::{Rule, User};
use zcproxy::config::{Config, LogFormat};
use zcproxy::identity::{Identity, Origin, Pair};
use zcproxy::live::status::{PolicyStatus, Source};
use zcproxy::live::{control, Compiler, PolicyBus};
use zcproxy::shared::Shared;
use zcproxy::{admin, shard_loop};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "zcproxy",
    version,
    about = "Zero-copy forward proxy: SOCKS5, SOCKS4/4a, HTTP and CONNECT on one port"
)]
struct Cli {
    /// Configuration file (TOML); flags override it.
    #[arg(short, long, env = "ZCPROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Validate a configuration file and exit.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Address for every proxy protocol.
    #[arg(long, env = "ZCPROXY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Admin address (/metrics, /healthz, /readyz).
    #[arg(long, env = "ZCPROXY_ADMIN")]
    admin: Option<SocketAddr>,
    /// Number of shards, one per core (default: all CPUs).
    #[arg(long, env = "ZCPROXY_CORES")]
    cores: Option<usize>,
    /// Add a user (repeatable); clients must then authenticate.
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    users: Vec<String>,
    /// Allow destinations in this network even if internal (repeatable).
    #[arg(long = "allow-destination", value_name = "CIDR")]
    allow_destinations: Vec<IpNet>,
    /// Follow this control plane for users and rules (live, over NATS).
    #[arg(long, env = "ZCPROXY_CONTROL_URL", value_name = "URL")]
    control_url: Option<String>,
    /// NATS server carrying the control plane's policy events.
    #[arg(long, env = "ZCPROXY_NATS_URL", value_name = "URL")]
    nats_url: Option<String>,
    /// Where the last good policy snapshot is kept (used when the control plane is down at
    /// start).
    #[arg(long, env = "ZCPROXY_POLICY_CACHE", value_name = "FILE")]
    policy_cache: Option<PathBuf>,
    /// PEM certificate chain for QUIC (with --tls-key); without, one is generated at start.
    #[arg(
        long,
        env = "ZCPROXY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "ZCPROXY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve only TCP (no QUIC on UDP).
    #[arg(long)]
    no_quic: bool,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Print an Argon2id PHC hash for a password read from standard input.
    HashPassword,
    /// Exit 0 when URL answers 200 (container health checks; the image has no shell).
    Probe {
        #[arg(default_value = "http://127.0.0.1:9901/readyz")]
        url: String,
    },
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(a) = cli.admin {
        cfg.admin = Some(a);
    }
    if let Ok(token) = std::env::var("ZCPROXY_ADMIN_TOKEN") {
        cfg.admin_token = Some(token);
    }
    if cli.cores.is_some() {
        cfg.cores = cli.cores;
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        cfg.tls.cert = Some(cert.clone());
        cfg.tls.key = Some(key.clone());
    }
    if cli.no_quic {
        cfg.quic.enabled = false;
    }
    if let Some(u) = &cli.control_url {
        cfg.control.url = Some(u.clone());
    }
    if let Some(u) = &cli.nats_url {
        cfg.control.nats_url = u.clone();
    }
    if let Some(p) = &cli.policy_cache {
        cfg.control.cache_file = Some(p.clone());
    }
    if let Some(f) = cli.log_format {
        cfg.log_format = match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        };
    }
    for spec in &cli.users {
        let (name, password) = spec
            .split_once(':')
            .ok_or_else(|| format!("--user {spec:?}: expected NAME:PASSWORD"))?;
        let password_hash = policy::password::hash(password).map_err(|e| e.to_string())?;
        cfg.policy.users.push(User {
            name: name.to_string(),
            password_hash,
            enabled: true,
            max_tunnels: None,
            rules: vec![],
        });
    }
    for net in &cli.allow_destinations {
        cfg.policy.rules.insert(0, Rule::allow_destination(*net));
    }
    Ok(cfg)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Lifts the soft open-file limit to the hard one: every tunnel needs two descriptors.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("zcproxy: cannot read a password from standard input");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("zcproxy: empty password");
        return ExitCode::from(2);
    }
    match policy::password::hash(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zcproxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the shards take their policy from, and the control thread feeding it (if any) or
/// the compiler of the file's policy (for reloads).
type PolicySource = (
    Arc<PolicyBus>,
    Arc<PolicyStatus>,
    Option<control::ControlThread>,
    Option<Compiler>,
);

/// The policy bus the shards start from: fed by the control thread when a control plane is
/// configured, or holding the static policy forever.
fn policy_source(cfg: &Config) -> Result<PolicySource, String> {
    let cores = cfg.core_count();
    if cfg.control.url.is_none() {
        let mut compiler = Compiler::new(cfg.own_endpoints());
        let live = compiler.compile(&cfg.policy).map_err(|e| e.to_string())?;
        let status = PolicyStatus::new(Source::Static, std::time::Duration::ZERO);
        return Ok((
            Arc::new(PolicyBus::new(cores, Arc::new(live))),
            Arc::new(status),
            None,
            Some(compiler),
        ));
    }
    let key = cfg.control.resolve_api_key().map_err(|e| e.to_string())?;
    let status = Arc::new(PolicyStatus::new(
        Source::Control,
        cfg.control.stale_after(),
    ));
    let (bus, thread) = control::start(
        cfg.control.clone(),
        key,
        cfg.own_endpoints(),
        cfg.policy.clone(),
        cores,
        status.clone(),
    )?;
    Ok((bus, status, Some(thread), None))
}

/// Reads the configuration again for a reload: the file and the flags, as at start, but the
/// `--user` flags' users keep the hashes made at start (hashing again would make every
/// one of them look re-keyed, and end their sessions).
fn reloader_loader(cli: Cli, started: &Config) -> zcproxy::reload::Loader {
    let flag_users: Vec<User> = started
        .policy
        .users
        .iter()
        .filter(|u| {
            cli.users
                .iter()
                .any(|s| s.split_once(':').map(|(n, _)| n) == Some(&*u.name))
        })
        .cloned()
        .collect();
    Box::new(move || {
        let mut cfg = load(&cli)?;
        for user in cfg.policy.users.iter_mut() {
            if let Some(kept) = flag_users.iter().find(|k| k.name == user.name) {
                user.password_hash = kept.password_hash.clone();
            }
        }
        Ok(cfg)
    })
}

/// The TLS identity (loaded, or generated and written out), shared by QUIC and TLS on the
/// TCP port, and the line that says where its certificate is and its fingerprint.
fn tls_identity(cfg: &Config) -> Result<(Arc<Identity>, String), String> {
    let identity = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let default = Pair {
                cert: cert.clone(),
                key: key.clone(),
            };
            let more = cfg.tls.certificates.iter().map(|p| Pair {
                cert: p.cert.clone(),
                key: p.key.clone(),
            });
            let pairs = std::iter::once(default).chain(more).collect();
            Identity::from_pairs(pairs, cfg.tls.refuse_unknown_names)
        }
        _ => Identity::generate(cfg.listen, &cfg.tls.generated_dir),
    }
    .map_err(|e| format!("TLS: {e}"))?;
    let identity = Arc::new(identity);
    let fingerprint = identity.fingerprint();
    let banner = match identity.origin() {
        Origin::Generated { written_to } => {
            tracing::info!(certificate = %written_to.display(), sha256 = %fingerprint, "TLS with a generated certificate");
            format!(
                "  TLS (HTTPS proxy on tcp/{port}, HTTP/3 on udp/{port}): self-signed certificate for localhost in {} (SHA-256 {fingerprint}): clients trust that file",
                written_to.display(),
                port = cfg.listen.port(),
            )
        }
        Origin::Files { pairs, .. } => {
            let cert = &pairs[0].cert;
            tracing::info!(certificate = %cert.display(), sha256 = %fingerprint, "TLS with the configured certificate");
            format!(
                "  TLS (HTTPS proxy on tcp/{port}, HTTP/3 on udp/{port}): certificate {} (SHA-256 {fingerprint})",
                cert.display(),
                port = cfg.listen.port(),
            )
        }
    };
    zcproxy::identity::spawn_reloader(identity.clone(), Duration::from_secs(cfg.tls.reload_secs));
    Ok((identity, banner))
}

/// QUIC's server configuration over the identity.
fn quic_setup(
    cfg: &Config,
    identity: &Arc<Identity>,
) -> Result<Arc<quinn_proto::ServerConfig>, String> {
    let transport = zcproxy::quic::endpoint::Transport {
        max_streams: cfg.quic.max_streams_per_connection,
        idle_timeout: cfg.timeouts.idle(),
        stream_window: cfg.quic.stream_window,
        connection_window: cfg.quic.connection_window,
    };
    zcproxy::quic::endpoint::server_config(identity, &[b"h3"], transport)
        .map_err(|e| format!("QUIC: {e}"))
}

fn run(cfg: Config, cli: Cli) -> Result<(), String> {
    raise_nofile_limit();
    let (bus, status, _control, compiler) = policy_source(&cfg)?;
    let loader = cli.config.is_some().then(|| reloader_loader(cli, &cfg));
    let mut shared = Shared::new(cfg, bus, status).map_err(|e| format!("start-up: {e}"))?;
    let wants_tls = shared.config.quic.enabled || shared.config.tls.tcp;
    let mut tls_in_use = None;
    let quic_banner = match wants_tls {
        false => String::new(),
        true => match tls_identity(&shared.config) {
            Ok((identity, banner)) => {
                tls_in_use = Some(identity.clone());
                if shared.config.quic.enabled {
                    shared.quic = Some(quic_setup(&shared.config, &identity)?);
                }
                if shared.config.tls.tcp {
                    let clients = match &shared.config.tls.client_ca {
                        Some(ca) => Some(
                            zcproxy::identity::client_verifier(
                                ca,
                                shared.config.tls.require_client_cert,
                            )
                            .map_err(|e| format!("TLS client CAs: {e}"))?,
                        ),
                        None => None,
                    };
                    match zcproxy::stream::ktls::probe() {
                        Ok(()) => shared.ktls = shared.config.tls.ktls,
                        Err(e) => {
                            tracing::info!(error = %e, "kernel TLS not available: TLS tunnels are relayed by copy")
                        }
                    }
                    shared.tls_tcp = Some(Arc::new(identity.tcp_server_config(
                        shared.config.h2.enabled,
                        clients,
                        shared.ktls,
                    )));
                }
                banner
            }
            // A certificate the operator configured must work; a generated one that cannot
            // be written (a read-only file system) leaves the plain protocols serving.
            Err(e) if shared.config.tls.cert.is_none() => {
                tracing::warn!(error = %e, "QUIC and TLS disabled: set tls.generated_dir to a writable directory or configure tls.cert and tls.key");
                format!("  QUIC and TLS disabled: {e}")
            }
            Err(e) => return Err(e),
        },
    };
    let shared = Arc::new(shared);
    let reloader = loader.map(|load| {
        Arc::new(zcproxy::reload::Reloader::new(
            shared.clone(),
            load,
            compiler,
            tls_in_use,
        ))
    });
    let admin_listener = match shared.config.admin {
        Some(addr) => {
            Some(std::net::TcpListener::bind(addr).map_err(|e| format!("admin {addr}: {e}"))?)
        }
        None => None,
    };
    zcproxy::auth::prepare();
    let shard_loop::Shards { handles, stop } = shard_loop::start(shared.clone())
        .map_err(|e| format!("listen {}: {e}", shared.config.listen))?;
    if let Some(l) = admin_listener {
        let admin = admin::Admin {
            shared: shared.clone(),
            reloader: reloader.clone(),
            token: shared.config.admin_token.clone(),
        };
        admin::start(admin, l).map_err(|e| e.to_string())?;
    }
    let listen = shared.config.listen;
    tracing::info!(%listen, cores = shared.cores, relay = ?shared.config.relay, "zcproxy listening");
    // The example works as printed: with the credentials it needs where loopback clients
    // may not go anonymously.
    let policy = shared.bus.mailbox(0).latest();
    let creds = match policy.users().next() {
        Some(u) if !policy.anonymous_allowed(listen.ip()) => format!("{}:PASSWORD@", u.name),
        _ => String::new(),
    };
    eprintln!(
        "zcproxy listening on {listen} ({} cores; SOCKS5, SOCKS4/4a, HTTP and CONNECT on this one port)\n  try: curl -x socks5h://{creds}{listen} http://example.com/   or   curl -x http://{creds}{listen} http://example.com/{}",
        shared.cores,
        shared.config.admin.map(|a| format!("\n  metrics: curl http://{a}/metrics")).unwrap_or_default()
    );
    if !quic_banner.is_empty() {
        eprintln!("{quic_banner}");
    }

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| e.to_string())?;
    // SIGHUP reloads (as POST /reload does); SIGTERM or SIGINT ends the wait.
    let waiter = std::thread::spawn(move || {
        for signal in signals.forever() {
            if signal != signal_hook::consts::SIGHUP {
                return;
            }
            match &reloader {
                Some(r) => match r.reload() {
                    Ok(report) => admin::log_report(&report),
                    Err(e) => tracing::warn!(error = %e, "reload on SIGHUP refused"),
                },
                None => tracing::warn!("SIGHUP: nothing to reload without a configuration file"),
            }
        }
    });
    // Either a signal arrives or every shard has died; the second is an error.
    loop {
        if waiter.is_finished() {
            break;
        }
        if handles.iter().all(|h| h.is_finished()) {
            return Err("every shard stopped".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracing::info!(
        drain_secs = shared.config.timeouts.drain_secs,
        "shutting down: draining tunnels"
    );
    shared.lifecycle.draining.store(true, Ordering::Release);
    drop(stop);
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "shard failed"),
            Err(_) => tracing::error!("shard panicked"),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::HashPassword) => return hash_password(),
        Some(Command::Probe { url }) => {
            return match ureq::get(url).call() {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("zcproxy: {url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {}
    }
    if let Some(path) = &cli.check_config {
        return match Config::from_file(path)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string()))
        {
            Ok(p) => {
                println!("{}: ok ({} users)", path.display(), p.user_count());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("zcproxy: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("zcproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("zcproxy: {e}");
        return ExitCode::from(2);
    }
    init_logging(&cfg);
    match run(cfg, cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zcproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
