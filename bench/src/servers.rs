//! Upstream servers the load talks to through each proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

fn spawn(port: u16, serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind bench server");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Reads an 8-byte little-endian length, then sends that many bytes and closes.
pub fn source(port: u16) -> SocketAddr {
    spawn(port, |mut s| {
        let mut len = [0u8; 8];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut left = u64::from_le_bytes(len);
        let buf = vec![0x5au8; 1 << 20];
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            if s.write_all(&buf[..k]).is_err() {
                return;
            }
            left -= k as u64;
        }
    })
}

/// Echoes until end of stream.
pub fn echo(port: u16) -> SocketAddr {
    spawn(port, |mut s| {
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Echo served by a fixed pool of threads, each taking one connection at a time: no thread
/// is created per tunnel, so the harness spends less of the shared cores than the proxy does.
pub fn echo_pool(port: u16, workers: usize) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind bench server");
    let addr = listener.local_addr().expect("local addr");
    for _ in 0..workers {
        let listener = listener.try_clone().expect("clone listener");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 16384];
            for mut s in listener.incoming().flatten() {
                let _ = s.set_nodelay(true);
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
    addr
}
