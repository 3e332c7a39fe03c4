//! The crate's one error type.
//!
//! Every variant's message names the cause the way an operator needs it at start-up: which
//! interface, which privilege, which limit. Each message is one line (the verifier's full
//! log is kept in its variant, not printed), so a start failure reads as one line in the log.

use std::fmt;
use std::io;

/// Why an AF_XDP or XDP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name resolves to no interface in this network namespace.
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),

    /// The interface name is not a valid C string or longer than IFNAMSIZ.
    #[error("invalid interface name {0:?}")]
    BadInterfaceName(String),

    /// bpf(2) or an XDP socket refused for lack of capabilities.
    #[error("{op} not permitted: needs {needs} (or root)")]
    NotPermitted {
        /// The operation refused, e.g. "bpf(2) BPF_PROG_LOAD".
        op: &'static str,
        /// The capabilities it takes.
        needs: &'static str,
    },

    /// The kernel's verifier refused the program. `log` holds the verifier's whole log.
    #[error(
        "the kernel's verifier refused the XDP program ({source}): {}",
        last_line(log)
    )]
    Verifier {
        /// The errno of BPF_PROG_LOAD.
        source: io::Error,
        /// The verifier log (log level 1).
        log: String,
    },

    /// The driver (or the generic XDP path) refused to attach the program.
    #[error(
        "XDP refused by the driver of {ifname} in {mode} mode: {source}{}",
        hint(source)
    )]
    XdpRefused {
        /// The interface.
        ifname: String,
        /// "native" or "generic".
        mode: &'static str,
        /// The errno of BPF_LINK_CREATE.
        source: io::Error,
    },

    /// Another XDP program (ours from another process, or someone else's) holds the interface.
    #[error(
        "an XDP program is already attached to {ifname}{}: not replaced",
        match prog_id { Some(id) => format!(" (prog id {id})"), None => String::new() }
    )]
    AlreadyAttached {
        /// The interface.
        ifname: String,
        /// The attached program's id, where netlink told it.
        prog_id: Option<u32>,
    },

    /// Pinning the UMEM exceeded RLIMIT_MEMLOCK (the process lacks CAP_IPC_LOCK).
    #[error(
        "locked memory limit too low for a {} UMEM (RLIMIT_MEMLOCK {}): raise it or give CAP_IPC_LOCK",
        Size(*bytes as u64),
        match limit { Some(l) => Size(*l).to_string(), None => "unlimited".to_string() }
    )]
    LockedMemory {
        /// The UMEM's size.
        bytes: usize,
        /// The soft RLIMIT_MEMLOCK in bytes (None: unlimited).
        limit: Option<u64>,
    },

    /// The driver cannot do AF_XDP zero-copy on this interface (veth, most virtual NICs).
    #[error("zero-copy AF_XDP refused by the driver of {ifname} (queue {queue}): {source}")]
    ZeroCopyRefused {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
        /// The errno of bind(2).
        source: io::Error,
    },

    /// Another AF_XDP socket is bound to the queue already.
    #[error("queue {queue} of {ifname} already has an AF_XDP socket: not replaced")]
    QueueBusy {
        /// The interface.
        ifname: String,
        /// The queue.
        queue: u32,
    },

    /// The queue index is past the interface's queues.
    #[error("{ifname} has no queue {queue} ({queues} RX queues)")]
    NoSuchQueue {
        /// The interface.
        ifname: String,
        /// The queue asked for.
        queue: u32,
        /// How many RX queues it has.
        queues: u32,
    },

    /// The kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS off) or no such BPF feature.
    #[error("{what} is not supported by this kernel: {source}")]
    Unsupported {
        /// The missing feature.
        what: &'static str,
        /// The errno that said so.
        source: io::Error,
    },

    /// A bpf(2) command failed for another reason.
    #[error("bpf(2) {op} failed: {source}")]
    Bpf {
        /// The command, e.g. "BPF_MAP_CREATE".
        op: &'static str,
        /// The errno.
        source: io::Error,
    },

    /// Another system call (socket, setsockopt, mmap, netlink) failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// The call and what it was for, e.g. "setsockopt(XDP_UMEM_REG)".
        op: &'static str,
        /// The errno.
        source: io::Error,
    },

    /// A caller's argument is out of range (ring size not a power of two, too many
    /// addresses, a label never bound...).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps the errno of a bpf(2) command: EPERM to [`Error::NotPermitted`], the rest to
    /// [`Error::Bpf`].
    pub(crate) fn bpf(op: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) => Error::NotPermitted {
                op: bpf_op_name(op),
                needs: NEEDS_BPF,
            },
            _ => Error::Bpf { op, source },
        }
    }

    /// Maps the errno of a socket call: EPERM/EACCES to [`Error::NotPermitted`],
    /// EAFNOSUPPORT to [`Error::Unsupported`], the rest to [`Error::Sys`].
    pub fn sys(op: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::NotPermitted {
                op,
                needs: NEEDS_NET_ADMIN,
            },
            Some(libc::EAFNOSUPPORT) => Error::Unsupported {
                what: "AF_XDP",
                source,
            },
            _ => Error::Sys { op, source },
        }
    }
}

/// What bpf(2) needs for maps, XDP programs and links.
pub(crate) const NEEDS_BPF: &str = "CAP_BPF and CAP_NET_ADMIN";
/// What netlink queries and other socket calls need.
pub(crate) const NEEDS_NET_ADMIN: &str = "CAP_NET_ADMIN";
/// What an AF_XDP socket needs.
pub(crate) const NEEDS_NET_RAW: &str = "CAP_NET_RAW";

/// "bpf(2) BPF_X" for the messages of [`Error::NotPermitted`].
fn bpf_op_name(op: &'static str) -> &'static str {
    match op {
        "BPF_MAP_CREATE" => "bpf(2) BPF_MAP_CREATE",
        "BPF_PROG_LOAD" => "bpf(2) BPF_PROG_LOAD",
        "BPF_PROG_TEST_RUN" => "bpf(2) BPF_PROG_TEST_RUN",
        "BPF_LINK_CREATE" => "bpf(2) BPF_LINK_CREATE",
        _ => "bpf(2)",
    }
}

/// The last non-empty line of a verifier log: the line that says what it refused.
fn last_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.starts_with("processed "))
        .unwrap_or("(no log)")
}

/// What an errno from attaching XDP usually means, for the operator.
fn hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ERANGE) => " (MTU too large for XDP on this driver: lower it)",
        Some(libc::ENOSPC) => {
            " (fewer RX queues than the peer's TX queues on veth: create it with numrxqueues)"
        }
        Some(libc::EOPNOTSUPP) => " (driver has no XDP support in this mode)",
        _ => "",
    }
}

/// A byte count in the unit an operator reads limits in.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        const GIB: u64 = 1024 * MIB;
        let b = self.0;
        if b >= GIB && b.is_multiple_of(GIB) {
            write!(f, "{} GiB", b / GIB)
        } else if b >= MIB && b.is_multiple_of(MIB) {
            write!(f, "{} MiB", b / MIB)
        } else if b >= KIB && b.is_multiple_of(KIB) {
            write!(f, "{} KiB", b / KIB)
        } else {
            write!(f, "{b} bytes")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_one_line_naming_the_cause() {
        let e = Error::LockedMemory {
            bytes: 16 << 20,
            limit: Some(8 << 20),
        };
        assert_eq!(
            e.to_string(),
            "locked memory limit too low for a 16 MiB UMEM (RLIMIT_MEMLOCK 8 MiB): raise it or give CAP_IPC_LOCK"
        );
        let e = Error::AlreadyAttached {
            ifname: "veth0".into(),
            prog_id: Some(42),
        };
        assert_eq!(
            e.to_string(),
            "an XDP program is already attached to veth0 (prog id 42): not replaced"
        );
        let e = Error::bpf("BPF_PROG_LOAD", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(
            e.to_string(),
            "bpf(2) BPF_PROG_LOAD not permitted: needs CAP_BPF and CAP_NET_ADMIN (or root)"
        );
        let e = Error::Verifier {
            source: io::Error::from_raw_os_error(libc::EACCES),
            log: "0: (b7) r0 = 2\ninvalid access to packet\nprocessed 3 insns\n".into(),
        };
        assert!(e.to_string().ends_with(": invalid access to packet"), "{e}");
        assert_eq!(e.to_string().lines().count(), 1);
    }
}
