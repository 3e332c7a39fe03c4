//! SIGTERM with an HTTP/3 tunnel open: the proxy sends GOAWAY (no new requests on that
//! connection), lets the open tunnel run to its end, then closes the connection with
//! H3_NO_ERROR and exits cleanly.

mod common;

use std::time::Duration;

use bytes::Buf;
use common::h3::{
    connect_request, generated_cert, open_h3, open_tunnel, quinn_client, round_trip, runtime,
};
use common::Proxy;

#[test]
fn sigterm_sends_goaway_and_lets_open_tunnels_finish() {
    let mut proxy = Proxy::builder()
        .allow_loopback()
        .config("[timeouts]\ndrain_secs = 20\n")
        .start();
    let echo = common::echo_server();
    let cert = generated_cert(&proxy);
    let (addr, pid) = (proxy.addr, proxy.pid());
    let close = runtime().block_on(async move {
        let ep = quinn_client(&cert, b"h3");
        let (quic, mut send, drive) = open_h3(&ep, addr).await;
        let (mut tx, mut rx) = open_tunnel(&mut send, echo, None).await;
        round_trip(&mut tx, &mut rx, b"before").await.unwrap();

        // SAFETY: signalling the proxy this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        // New requests are refused once the GOAWAY is in; the open tunnel still works.
        let refused = async {
            loop {
                match send.send_request(connect_request(echo, None)).await {
                    Err(_) => return,
                    Ok(mut s) => {
                        if s.recv_response().await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .expect("no GOAWAY");
        for _ in 0..5 {
            round_trip(&mut tx, &mut rx, b"during the drain")
                .await
                .unwrap();
        }
        tx.finish().await.unwrap();
        while let Some(mut chunk) = rx.recv_data().await.unwrap() {
            chunk.advance(chunk.remaining());
        }
        // The tunnel is over: the proxy closes the connection instead of letting it idle.
        let reason = tokio::time::timeout(Duration::from_secs(5), quic.closed())
            .await
            .expect("the proxy did not close the connection");
        drive.abort();
        reason
    });
    match close {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(0x100), "{c:?}")
        }
        other => panic!("closed by {other}"),
    }
    let status = proxy.child.wait().unwrap();
    assert!(status.success(), "{status}");
}
