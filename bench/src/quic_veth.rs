//! `zcbench-quic --veth`: the QUIC paths over a veth pair (issue 21), the client in a
//! network namespace on one end, zcproxy on the other twice side by side: on its kernel
//! UDP socket, and on AF_XDP on the same interface (the XDP program takes only the second
//! proxy's port). veth has no zero-copy AF_XDP: the kernel copies each frame into the
//! UMEM, as it copies each datagram into a socket buffer, so this compares the paths'
//! software (socket layer, GRO/GSO vs rings and our own Ethernet/IP/UDP), not a NIC's DMA.

use std::net::SocketAddr;
use std::path::Path;

use testkit::veth::{enter_netns, VethPair};

use crate::peers::{self, Handshake, Running, ZcOptions};
use crate::samples::Samples;
use crate::{cpu, h3_download, handshakes, measure_datagrams, Args, Client, DatagramPath};

const BACKENDS: [&str; 2] = ["socket", "af_xdp"];

/// Measures with `source` (the download server) and `echo` (the UDP echo), both on
/// loopback here, as the proxies' upstreams.
pub fn run(args: &Args, cores: usize, dir: &Path, source: SocketAddr, echo: SocketAddr) {
    let Some(pair) = VethPair::new("q", cores as u32) else {
        std::process::exit(1);
    };
    let port = args.base_port;
    let anonymous = format!("[policy]\nanonymous_clients = [\"{}/24\"]\n", pair.host_ip);
    let extra = args.zc_config.as_deref().unwrap_or("");
    let configs = [
        format!("{extra}\n{anonymous}"),
        format!(
            "{extra}\n[quic]\npacket_io = \"af_xdp\"\n[quic.af_xdp]\ninterface = \"{}\"\n{anonymous}",
            pair.host
        ),
    ];
    let listen = pair.host_ip.parse().expect("the pair's address");
    let started: Option<Vec<(Running, std::path::PathBuf)>> = BACKENDS
        .iter()
        .zip(&configs)
        .enumerate()
        .map(|(i, (name, config))| {
            let opts = ZcOptions {
                bin: &args.zcproxy,
                listen,
                cores,
                config: Some(config),
            };
            let p = port + 2 * i as u16;
            let label = format!("zcproxy ({name})");
            let proxy = peers::zcproxy(dir, &opts, p, p + 1, Handshake::Connect, &label);
            if proxy.is_none() {
                eprintln!("zcbench-quic: zcproxy on {name} did not start");
            }
            Some((proxy?, dir.join("zcproxy").join(format!("zcproxy-{p}.pem"))))
        })
        .collect();
    let Some(proxies) = started else {
        // Dropped before leaving: the proxies that did start stop, the pair goes.
        drop(pair);
        std::process::exit(1);
    };
    // The servers listen here; the client from now on speaks from the namespace.
    enter_netns(&pair.ns).expect("enter the namespace");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = rt.enter();
    let local = tokio::task::LocalSet::new();
    let mut s = Samples::default();
    let gb = args.bytes as f64 / 1e9;
    for run in 0..args.runs {
        eprintln!("run {}/{}", run + 1, args.runs);
        // Both backends in turn within a run, so noise hits both.
        for (name, (proxy, cert)) in BACKENDS.iter().zip(&proxies) {
            let client = Client::new(proxy.addr.expect("proxy address"), cert);
            local.block_on(&rt, async {
                for streams in [1usize, 8] {
                    let c0 = cpu(proxy);
                    match h3_download(&client, source, args.bytes, streams).await {
                        Ok(t) => {
                            s.add(
                                &format!("{name} h3 {streams}"),
                                args.bytes as f64 * 8.0 / t / 1e9,
                            );
                            s.add(&format!("{name} h3 {streams} cpu"), (cpu(proxy) - c0) / gb);
                        }
                        Err(e) => eprintln!("{name} HTTP/3 CONNECT x{streams}: {e}"),
                    }
                }
                match DatagramPath::flow(&client, echo).await {
                    Ok(path) => {
                        let key = format!("{name} udp");
                        measure_datagrams(&path, proxy, args, &key, &mut s).await;
                    }
                    Err(e) => eprintln!("{name} CONNECT-UDP: {e}"),
                }
                let c0 = cpu(proxy);
                let rate = handshakes(&client, args.concurrency, args.seconds).await;
                s.add(&format!("{name} handshakes"), rate);
                s.add(
                    &format!("{name} handshake cpu"),
                    (cpu(proxy) - c0) * 1e6 / (rate * args.seconds as f64),
                );
            });
        }
    }
    report(args, cores, &s);
}

fn report(args: &Args, cores: usize, s: &Samples) {
    println!(
        "\nzcproxy QUIC over veth (client in a namespace), {cores} core(s), medians of {} run(s)\n",
        args.runs
    );
    println!("| measure | kernel UDP socket | AF_XDP (copy mode) | AF_XDP / socket |");
    println!("|---|---|---|---|");
    let rows: [(&str, &str); 12] = [
        ("HTTP/3 CONNECT, 1 stream, Gbit/s", "h3 1"),
        ("HTTP/3 CONNECT, 8 streams, Gbit/s", "h3 8"),
        ("proxy CPU s/GB, 1 stream", "h3 1 cpu"),
        ("proxy CPU s/GB, 8 streams", "h3 8 cpu"),
        ("CONNECT-UDP 64 B round trips/s", "udp 64"),
        ("CONNECT-UDP 1,200 B round trips/s", "udp 1200"),
        ("proxy CPU µs per 64 B round trip", "udp 64 cpu"),
        ("proxy CPU µs per 1,200 B round trip", "udp 1200 cpu"),
        ("datagrams lost (64 B / run)", "udp 64 lost"),
        ("one round trip p50 µs", "udp rtt50"),
        ("QUIC handshakes/s", "handshakes"),
        ("proxy CPU µs per handshake", "handshake cpu"),
    ];
    for (label, key) in rows {
        let [a, b] = BACKENDS.map(|name| s.median(&format!("{name} {key}")));
        let ratio = if a > 0.0 {
            format!("{:.2}", b / a)
        } else {
            "–".to_string()
        };
        println!("| {label} | {a:.2} | {b:.2} | {ratio} |");
    }
}
