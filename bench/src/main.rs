//! `zcbench`: zcproxy, a direct connection and peer proxies measured side by side in one run
//! on loopback. See docs/benchmarks.md for how to read the table.

mod cpus;
mod load;
mod peers;
mod procstat;
mod report;
mod servers;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use peers::{Handshake, Running, ZcOptions};
use report::Row;

#[derive(Parser)]
#[command(about = "Side-by-side proxy benchmark on loopback")]
struct Args {
    /// zcproxy binary (build with cargo build --release).
    #[arg(long, default_value = "target/release/zcproxy")]
    zcproxy: PathBuf,
    /// A second zcproxy binary (e.g. the previous release) measured in the same run as the
    /// contenders `before-socks5` and `before-connect`.
    #[arg(long)]
    zcproxy_before: Option<PathBuf>,
    /// The runtime spikes (`cargo build --release -p zcbench --features compio-spike`): the
    /// same SOCKS5 path on compio and on monoio.
    #[arg(long, default_value = "target/release/zcspike-compio")]
    spike: PathBuf,
    #[arg(long, default_value = "target/release/zcspike-monoio")]
    spike_monoio: PathBuf,
    /// Shards for zcproxy (default: one per CPU it may use).
    #[arg(long)]
    cores: Option<usize>,
    /// Run every proxy on these CPUs (e.g. `1`) and the load and upstreams on the others:
    /// tunnels/s then measures the proxy, not what the shared machine has left.
    #[arg(long, value_parser = cpus::CpuSet::parse)]
    proxy_cpus: Option<cpus::CpuSet>,
    /// Bytes per throughput run.
    #[arg(long, default_value_t = 2 << 30)]
    bytes: u64,
    /// Seconds of the tunnels-per-second run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency of the tunnels-per-second run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Idle tunnels for the memory measurement.
    #[arg(long, default_value_t = 9000)]
    idle: usize,
    /// Contenders, comma-separated.
    #[arg(
        long,
        default_value = "direct,zcproxy-socks5,zcproxy-connect,zcproxy-copy,fast-socks5,socks5-rs,danted,microsocks,squid,tinyproxy"
    )]
    only: String,
    /// Extra TOML for every zcproxy contender, e.g. '[limits]\npipe_size = 1048576'.
    #[arg(long)]
    zc_config: Option<String>,
    /// Measure every contender this many times (interleaved) and report medians; the idle
    /// tunnels are measured in the first run only.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// First port to use (each contender takes two after it; all below 32768).
    #[arg(long, default_value_t = 26000)]
    base_port: u16,
}

fn start(args: &Args, dir: &std::path::Path, name: &str, port: u16) -> Option<Running> {
    let cores = cpus::shards(args.cores, args.proxy_cpus.as_ref());
    let zc_bin = |bin: &std::path::Path, config, hs, label| {
        let opts = ZcOptions {
            bin,
            cores,
            config,
            listen: peers::LOOPBACK,
        };
        peers::zcproxy(dir, &opts, port, port + 1, hs, label)
    };
    let zc = |config, hs, label| zc_bin(&args.zcproxy, config, hs, label);
    let before = |hs, label| {
        let bin = args.zcproxy_before.as_deref()?;
        zc_bin(bin, None, hs, label)
    };
    let spike = |flags: &[&str], label| peers::spike(&args.spike, port, cores, flags, label);
    match name {
        "direct" => Some(peers::direct()),
        "zcproxy-socks5" => zc(None, Handshake::Socks5, "zcproxy (SOCKS5, splice)"),
        "zcproxy-connect" => zc(None, Handshake::Connect, "zcproxy (CONNECT, splice)"),
        "zcproxy-auth" => {
            let (user, pass) = peers::BENCH_CREDENTIALS;
            let hash = policy::password::hash(pass).ok()?;
            let config = format!(
                "[policy]\n[[policy.users]]\nname = \"{user}\"\npassword_hash = \"{hash}\"\n"
            );
            zc(
                Some(&config),
                Handshake::Socks5Auth,
                "zcproxy (SOCKS5, password)",
            )
        }
        "zcproxy-copy" => zc(
            Some("relay = \"copy\"\n"),
            Handshake::Socks5,
            "zcproxy (SOCKS5, copy)",
        ),
        "zcproxy-epoll" => zc(
            Some("driver = \"epoll\"\n"),
            Handshake::Socks5,
            "zcproxy (SOCKS5, epoll driver)",
        ),
        "before-socks5" => before(Handshake::Socks5, "zcproxy before (SOCKS5, splice)"),
        "before-connect" => before(Handshake::Connect, "zcproxy before (CONNECT, splice)"),
        "monoio-spike" => peers::spike(
            &args.spike_monoio,
            port,
            cores,
            &[],
            "monoio spike (SOCKS5, splice)",
        ),
        "compio" => spike(&[], "compio spike (SOCKS5, splice)"),
        "compio-multishot" => spike(&["--multishot"], "compio spike, multishot accept"),
        "compio-defer" => spike(&["--defer-taskrun"], "compio spike, DEFER_TASKRUN"),
        "compio-both" => spike(
            &["--multishot", "--defer-taskrun"],
            "compio spike, multishot + DEFER_TASKRUN",
        ),
        "fast-socks5" => peers::fast_socks5(port, false),
        "fast-socks5-auth" => peers::fast_socks5(port, true),
        "socks5-rs" => peers::socks5_rs(port, cores, false),
        "socks5-rs-auth" => peers::socks5_rs(port, cores, true),
        "danted" => peers::danted(dir, port),
        "microsocks" => peers::microsocks(port),
        "squid" => peers::squid(dir, port),
        "tinyproxy" => peers::tinyproxy(dir, port),
        other => {
            eprintln!("zcbench: unknown contender {other}");
            None
        }
    }
}

/// The upstreams every contender is measured against.
struct Upstreams {
    source: std::net::SocketAddr,
    /// Thread per connection: holds thousands of idle tunnels.
    echo: std::net::SocketAddr,
    /// Fixed thread pool: tunnel churn and round trips without a thread spawn per tunnel.
    echo_pool: std::net::SocketAddr,
}

fn measure(args: &Args, via: &Running, up: &Upstreams, idle: usize) -> Option<Row> {
    let (source, echo) = (up.source, up.echo);
    let gib = args.bytes as f64 / 1e9;
    let cpu0 = via.pid().map(procstat::cpu_seconds);
    let t1 = load::download(via, source, args.bytes, 1)
        .map_err(|e| eprintln!("{}: 1 stream: {e}", via.name))
        .ok()?;
    let t8 = load::download(via, source, args.bytes, 8)
        .map_err(|e| eprintln!("{}: 8 streams: {e}", via.name))
        .ok()?;
    let cpu = cpu0
        .zip(via.pid().map(procstat::cpu_seconds))
        .and_then(|(a, b)| procstat::cpu_spent(a, b))
        .map(|spent| spent / (2.0 * gib));
    let cpu_t0 = via.pid().map(procstat::cpu_seconds);
    let tunnels = load::tunnels_per_second(
        via,
        up.echo_pool,
        args.concurrency,
        Duration::from_secs(args.seconds),
        1_000_000,
    );
    let done = tunnels.per_second * args.seconds as f64;
    let cpu_us_per_tunnel = cpu_t0
        .zip(via.pid().map(procstat::cpu_seconds))
        .filter(|_| done > 0.0)
        .and_then(|(a, b)| procstat::cpu_spent(a, b))
        .map(|spent| spent * 1e6 / done);
    let rtt = load::ping_pong(via, up.echo_pool, 5000).unwrap_or((f64::NAN, f64::NAN));
    let (idle_open, idle_kib_each, idle_threads) = if idle > 0 {
        let before = via.pid().map(procstat::pss_kib);
        let held = load::idle_tunnels(via, echo, idle, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        let after = via.pid().map(procstat::pss_kib);
        let threads = via.pid().map(procstat::threads);
        let open = held.len();
        let each = before
            .zip(after)
            .filter(|_| open > 0)
            .map(|(b, a)| a.saturating_sub(b) as f64 / open as f64);
        (Some(open), each, threads)
    } else {
        (None, None, None)
    };
    Some(Row {
        name: via.name.clone(),
        gbps_1: args.bytes as f64 * 8.0 / t1 / 1e9,
        gbps_8: args.bytes as f64 * 8.0 / t8 / 1e9,
        cpu_s_per_gb: cpu,
        tunnels,
        cpu_us_per_tunnel,
        rtt,
        idle_open,
        idle_kib_each,
        idle_threads,
    })
}

fn main() {
    let args = Args::parse();
    testkit::raise_nofile();
    if let Some(proxies) = &args.proxy_cpus {
        match cpus::split(proxies.clone()) {
            Ok(load) => {
                eprintln!("zcbench: proxies on CPUs {proxies}, load and upstreams on {load}")
            }
            Err(e) => {
                eprintln!("zcbench: --proxy-cpus: {e}");
                std::process::exit(2);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("zcbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // Peers that drop privileges must be able to read their config.
    let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let source = servers::source(args.base_port - 2);
    let upstreams = Upstreams {
        source,
        echo: servers::echo(args.base_port - 1),
        echo_pool: servers::echo_pool(args.base_port - 3, args.concurrency + 8),
    };
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        let idle = if run == 0 { args.idle } else { 0 };
        let mut rows = Vec::new();
        for (i, name) in args.only.split(',').map(str::trim).enumerate() {
            let port = args.base_port + 2 * i as u16;
            let Some(running) = start(&args, &dir, name, port) else {
                continue;
            };
            eprintln!("zcbench: run {}: measuring {}", run + 1, running.name);
            if let Some(row) = measure(&args, &running, &upstreams, idle) {
                rows.push(row);
            }
            drop(running);
            std::thread::sleep(Duration::from_millis(500));
        }
        runs.push(rows);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let runs = report::Runs(runs);
    runs.print_table(args.concurrency);
    runs.print_targets();
}
