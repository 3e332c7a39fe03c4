//! The server side the QUIC unit tests share: a shard endpoint on a loopback UDP socket with
//! a freshly generated identity, and a client thread running quinn on its own runtime.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::ServerConfig;

use super::endpoint::{server_config, Endpoint, EndpointOptions};
use crate::identity::{Identity, Origin};
use crate::metrics::QuicMetrics;
use crate::packet_io::socket::SocketIo;
use crate::packet_io::Packets;
use crate::udp::{self, Offloads};

pub struct TestServer {
    pub addr: SocketAddr,
    /// The generated certificate, for the client to trust.
    pub cert: PathBuf,
    pub metrics: Arc<QuicMetrics>,
    dir: PathBuf,
    socket: Option<(socket2::Socket, Offloads)>,
    server: Arc<ServerConfig>,
}

impl TestServer {
    /// Binds a socket and generates an identity offering `alpn`; `name` keeps the files of
    /// concurrent tests apart.
    pub fn new(name: &str, alpn: &[u8]) -> TestServer {
        let dir = std::env::temp_dir().join(format!("zcproxy-{name}-{}", std::process::id()));
        let (socket, offloads) = udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let identity = Arc::new(Identity::generate(addr, &dir).unwrap());
        let Origin::Generated { written_to } = identity.origin().clone() else {
            unreachable!()
        };
        TestServer {
            addr,
            cert: written_to,
            metrics: Arc::default(),
            dir,
            socket: Some((socket, offloads)),
            server: server_config(&identity, &[alpn], Default::default()).unwrap(),
        }
    }

    /// The endpoint on the socket, its receive task started; call inside the shard runtime.
    pub fn endpoint(&mut self) -> Rc<Endpoint> {
        let (socket, offloads) = self.socket.take().expect("one endpoint per server");
        let io = SocketIo::new(socket, offloads, self.metrics.clone(), Arc::default()).unwrap();
        let endpoint = Endpoint::new(
            Packets::Socket(io),
            EndpointOptions {
                shard: 0,
                server: self.server.clone(),
                handshake_timeout: Duration::from_secs(10),
                retry_above: usize::MAX,
                shards: 1,
                handover: None,
                metrics: self.metrics.clone(),
            },
        );
        crate::rt::spawn(endpoint.clone().run());
        endpoint
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `client` on a thread of its own with a current-thread tokio runtime (quinn's).
pub fn client_thread<F, Fut>(client: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client())
    })
}
