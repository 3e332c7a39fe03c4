//! Network namespaces the tests create and always delete (the guard's drop runs on a
//! failed assertion too), joined by a veth pair with two RX and two TX queues.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its stderr when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `zcxdp-PID-TAG`, replacing a stale one of the same name.
    pub fn new(tag: &str) -> Netns {
        let name = format!("zcxdp-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Moves this thread into the namespace until the guard drops (setns is per thread:
    /// other tests keep their namespace).
    pub fn enter(&self) -> Entered {
        let home = File::open("/proc/thread-self/ns/net").expect("open own netns");
        let target = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        // SAFETY: both are namespace descriptors; setns affects only this thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        Entered { home }
    }
}

impl Netns {
    /// Runs `f` on a new thread inside the namespace (optionally pinned to `cpu`).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        cpu: Option<usize>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            let target = File::open(&path).expect("open netns");
            // SAFETY: a namespace descriptor; setns affects only this thread, which ends
            // with `f`.
            let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Runs a shell command with the namespace's own /sys (ip netns exec remounts it).
    pub fn sh(&self, script: &str) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .expect("run ip netns exec")
    }
}

/// Pins this thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Returns the thread to the namespace it came from.
pub struct Entered {
    home: File,
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Two namespaces joined by a veth pair: `A_IF` in `a` (198.18.0.1/24, 2001:db8::1/64),
/// `B_IF` in `b` (198.18.0.2/24, 2001:db8::2/64), 2 RX and 2 TX queues each, both up.
/// Fields drop in order: `b` then `a`.
pub struct Pair {
    pub b: Netns,
    pub a: Netns,
}

pub const A_IF: &str = "zx0";
pub const B_IF: &str = "zx1";
pub const A_V4: &str = "198.18.0.1";
pub const B_V4: &str = "198.18.0.2";
pub const A_V6: &str = "2001:db8::1";
pub const B_V6: &str = "2001:db8::2";

impl Pair {
    pub fn new(tag: &str) -> Pair {
        let a = Netns::new(&format!("{tag}-a"));
        let b = Netns::new(&format!("{tag}-b"));
        a.ip(&[
            "link",
            "add",
            A_IF,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            B_IF,
            "numrxqueues",
            "2",
            "numtxqueues",
            "2",
            "netns",
            &b.name,
        ]);
        for (ns, dev, v4, v6) in [(&a, A_IF, A_V4, A_V6), (&b, B_IF, B_V4, B_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        Pair { b, a }
    }
}
