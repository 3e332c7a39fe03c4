//! A veth pair between this network namespace and one the test or benchmark makes, for the
//! kernel-bypass path: the proxy on the `host` end (an XDP program can attach there), the
//! clients in namespace `ns` on the other. Addresses from 198.19.0.0/16 (benchmarking
//! space, RFC 2544): nothing leaves the pair. Removed when dropped.

use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

pub struct VethPair {
    pub ns: String,
    /// The end in this namespace, and the other end's name (in `ns`).
    pub host: String,
    pub peer: String,
    /// Its address, and the other end's (in `ns`).
    pub host_ip: String,
    pub peer_ip: String,
}

/// Runs `ip` quietly; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl VethPair {
    /// A pair named after `tag` and this process, each end with `queues` RX and TX queues;
    /// `None` (said on stderr) without root or iproute2.
    pub fn new(tag: &str, queues: u32) -> Option<VethPair> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || !ip(&["-V"]) {
            eprintln!("skipped: needs root and iproute2 for network namespaces and XDP");
            return None;
        }
        // Apart per process and per tag: tests of one process run side by side, and two
        // pairs with one subnet in this namespace would mix up their routes.
        let tag_sum: u32 = tag.bytes().map(u32::from).sum();
        let n = (std::process::id() + tag_sum * 37) % 200 + 20;
        let pair = VethPair {
            ns: format!("zcx{tag}{n}"),
            host: format!("zcx{tag}{n}a"),
            peer: format!("zcx{tag}{n}b"),
            host_ip: format!("198.19.{n}.1"),
            peer_ip: format!("198.19.{n}.2"),
        };
        let peer = pair.peer.clone();
        let _ = ip(&["netns", "del", &pair.ns]);
        let _ = ip(&["link", "del", &pair.host]);
        let q = queues.to_string();
        let host_addr = format!("{}/24", pair.host_ip);
        let peer_addr = format!("{}/24", pair.peer_ip);
        let steps: [&[&str]; 8] = [
            &["netns", "add", &pair.ns],
            &[
                "link",
                "add",
                &pair.host,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
            ],
            &["link", "set", &peer, "netns", &pair.ns],
            &["addr", "add", &host_addr, "dev", &pair.host],
            &["link", "set", &pair.host, "up"],
            &["-n", &pair.ns, "addr", "add", &peer_addr, "dev", &peer],
            &["-n", &pair.ns, "link", "set", &peer, "up"],
            &["-n", &pair.ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            assert!(ip(step), "ip {step:?}");
        }
        Some(pair)
    }

    /// The command prefix that runs a program in the namespace.
    pub fn exec(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns]
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Moves the calling thread into namespace `ns` (sockets it makes from now on are there).
pub fn enter_netns(ns: &str) -> std::io::Result<()> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns on a descriptor we hold; it moves this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).expect("setns into the test's namespace");
        f()
    })
    .join()
    .expect("the thread in the namespace")
}
