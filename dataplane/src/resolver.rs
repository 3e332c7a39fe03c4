//! Name resolution for every core: hickory-resolver (reads /etc/resolv.conf and /etc/hosts,
//! answers RFC 6761 names such as `localhost` and `.invalid` itself, caches answers, bounds
//! each query's time) on one thread of its own with a current-thread tokio runtime. A core
//! hands a query over a bounded channel and waits for the answer without blocking; a query
//! whose asker gave up (its deadline passed, its client left) is dropped on the resolver
//! thread at once, its packets abandoned. Unlike the blocking getaddrinfo pool it replaces,
//! a name whose DNS never answers holds no thread: thousands can wait at once, each for its
//! own timeout, while other names resolve.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use tokio::sync::oneshot;

use crate::config;

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The DNS said no, or had no address (the client's name is to blame).
    #[error("{0}")]
    NotFound(String),
    /// More queries are waiting than the resolver takes (the proxy is overloaded).
    #[error("too many names being resolved")]
    Busy,
    /// The resolver thread is gone.
    #[error("the resolver stopped")]
    Stopped,
}

struct Query {
    host: String,
    reply: oneshot::Sender<Result<Vec<IpAddr>, String>>,
}

/// The handle cores resolve through.
pub struct Resolver {
    queries: flume::Sender<Query>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
}

/// Takes a query's place among those in flight until dropped (answered or abandoned).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Resolver {
    /// Starts the resolver thread with `cfg`'s name servers (or the system's). Fails with
    /// the reason when the system configuration cannot be read.
    pub fn start(cfg: &config::Resolver) -> io::Result<Resolver> {
        let mut builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| {
                io::Error::other(format!(
                    "system resolver configuration (/etc/resolv.conf): {e}"
                ))
            })?
        } else {
            let servers = cfg.nameservers.iter().map(|a| name_server(*a)).collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        if let Some(ms) = cfg.timeout_ms {
            opts.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = cfg.attempts {
            opts.attempts = n;
        }
        opts.cache_size = cfg.cache_size;
        // A and AAAA asked together, IPv4 addresses first by default: a CONNECT tries them
        // in that order, and a SOCKS5 UDP flow uses the first (so where /etc/hosts names
        // only IPv4 for a name that also has an IPv6 answer, such as localhost, IPv4 stays
        // what is used, as with getaddrinfo).
        opts.ip_strategy = match cfg.prefer {
            config::AddressFamily::Ipv4 => LookupIpStrategy::Ipv4AndIpv6,
            config::AddressFamily::Ipv6 => LookupIpStrategy::Ipv6AndIpv4,
        };
        opts.use_hosts_file = if cfg.hosts_file {
            ResolveHosts::Always
        } else {
            ResolveHosts::Never
        };
        let (queries, rx) = flume::bounded::<Query>(cfg.max_in_flight.max(1));
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("zcproxy-resolver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    // Built inside the runtime: its connections are spawned on it.
                    let resolver = match builder.build() {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = started_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    // Ends when every core's handle is dropped.
                    while let Ok(q) = rx.recv_async().await {
                        tokio::spawn(answer(resolver.clone(), q));
                    }
                });
            })?;
        match started.recv() {
            Ok(Ok(())) => Ok(Resolver {
                queries,
                in_flight: Arc::new(AtomicUsize::new(0)),
                max_in_flight: cfg.max_in_flight.max(1),
            }),
            Ok(Err(e)) => Err(io::Error::other(format!("resolver: {e}"))),
            Err(_) => Err(io::Error::other("resolver thread ended at start")),
        }
    }

    /// Names being resolved now, on all cores.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The addresses of `host`. Dropping the future abandons the query.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ResolveError::Busy);
        }
        let slot = Slot(self.in_flight.clone());
        let (reply, answer) = oneshot::channel();
        let query = Query {
            host: host.to_string(),
            reply,
        };
        self.queries.try_send(query).map_err(|e| match e {
            flume::TrySendError::Full(_) => ResolveError::Busy,
            flume::TrySendError::Disconnected(_) => ResolveError::Stopped,
        })?;
        let result = answer.await.map_err(|_| ResolveError::Stopped)?;
        drop(slot);
        result.map_err(ResolveError::NotFound)
    }

    /// `host`'s addresses with `port`.
    pub async fn socket_addrs(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let ips = self.lookup(host).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// Resolves one query unless its asker leaves first.
async fn answer(resolver: TokioResolver, mut q: Query) {
    let lookup = resolver.lookup_ip(q.host.as_str());
    tokio::select! {
        found = lookup => {
            let result = match found {
                Ok(ips) => {
                    let ips: Vec<IpAddr> = ips.iter().collect();
                    if ips.is_empty() {
                        Err("no addresses".to_string())
                    } else {
                        Ok(ips)
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let _ = q.reply.send(result);
        }
        // The core gave up on it: stop asking.
        () = q.reply.closed() => {}
    }
}

/// A name server at `addr`, over UDP with TCP for truncated answers.
fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}
