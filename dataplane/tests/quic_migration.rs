//! A client that changes its address mid-transfer (quinn rebinding to a new port, as after
//! a NAT rebinding) keeps its HTTP/3 CONNECT tunnel on a proxy with two cores: with the
//! kernel steering packets by connection ID, and with the cores handing them to each other.

mod common;

use std::time::Duration;

use common::h3::{echo_chunk, generated_cert, open_h3, open_tunnel, quinn_client, runtime};
use common::Proxy;

/// Echoes 64 chunks of 64 KiB through one tunnel, rebinding the client to a new UDP port
/// after every fourth, until at least `min_rebinds` are done and `until` holds.
fn migrating_transfer(proxy: &Proxy, min_rebinds: usize, until: impl Fn() -> bool) -> usize {
    let echo = common::echo_server();
    let cert = generated_cert(proxy);
    let addr = proxy.addr;
    runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let (_quic, mut send, drive) = open_h3(&ep, addr).await;
        let (mut tx, mut rx) = open_tunnel(&mut send, echo, None).await;
        let mut rebinds = 0;
        let mut chunk_no = 0u32;
        while chunk_no < 64 || rebinds < min_rebinds || !until() {
            assert!(chunk_no < 400, "never saw what it waited for");
            echo_chunk(&mut tx, &mut rx, chunk_no).await;
            chunk_no += 1;
            if chunk_no.is_multiple_of(4) {
                ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                    .unwrap();
                rebinds += 1;
            }
        }
        tx.finish().await.unwrap();
        drive.abort();
        ep.close(0u32.into(), b"done");
        rebinds
    })
}

#[test]
fn a_migrating_client_stays_on_its_core_when_the_kernel_steers() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("2")
        .start();
    migrating_transfer(&proxy, 8, || true);
    assert!(proxy.metric("zcproxy_quic_migrations_total", &[]) >= 1.0);
    assert_eq!(
        proxy.metric("zcproxy_quic_packets_handed_over_total", &[]),
        0.0,
        "the kernel put every packet on its connection's core"
    );
}

#[test]
fn a_migrating_client_is_handed_to_its_core_without_kernel_steering() {
    let proxy = Proxy::builder()
        .allow_loopback()
        .arg("--cores")
        .arg("2")
        .config("[quic]\nkernel_steering = false\n")
        .start();
    let handed = || proxy.metric("zcproxy_quic_packets_handed_over_total", &[]) > 0.0;
    migrating_transfer(&proxy, 8, handed);
    assert!(proxy.metric("zcproxy_quic_migrations_total", &[]) >= 1.0);
    // Every packet handed over is taken by its owner (the last may still be on its way).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let over = proxy.metric("zcproxy_quic_packets_handed_over_total", &[]);
        let taken = proxy.metric("zcproxy_quic_packets_taken_over_total", &[]);
        if over > 0.0 && taken == over {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "handed {over}, taken {taken}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
