//! The redirect program's two maps: the XSKMAP (one AF_XDP socket per RX queue) and the
//! per-CPU verdict counters the data plane reads for `zcproxy_xdp_verdicts_total{reason}`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::bpf::{self, MapType};
use crate::error::{Error, Result};

/// Why the program passed or redirected a frame: one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Reason {
    /// UDP to the proxy's address and port, handed to the queue's socket.
    Redirected = 0,
    /// Would have been redirected but the queue has no socket in the map: passed to the
    /// kernel (which answers with ICMP port unreachable or a kernel socket takes it).
    RedirectNoSocket,
    /// Not IPv4 or IPv6 (ARP, LLDP, more than two VLAN tags, ...).
    PassNotIp,
    /// IP but not UDP (TCP, ICMP, ICMPv6/NDP, ...).
    PassNotUdp,
    /// UDP to another port.
    PassOtherPort,
    /// UDP to the port but another destination address.
    PassOtherAddress,
    /// An IPv4 fragment (more-fragments set or an offset): the kernel reassembles it.
    PassFragment,
    /// IPv6 with an extension header before UDP.
    PassExtHeader,
    /// The frame ends inside the headers or the UDP length runs past it.
    PassTruncated,
    /// Header fields no valid packet has (IP version, IHL < 5, UDP length < 8).
    PassMalformed,
}

impl Reason {
    /// Every reason, in counter-index order.
    pub const ALL: [Reason; 10] = [
        Reason::Redirected,
        Reason::RedirectNoSocket,
        Reason::PassNotIp,
        Reason::PassNotUdp,
        Reason::PassOtherPort,
        Reason::PassOtherAddress,
        Reason::PassFragment,
        Reason::PassExtHeader,
        Reason::PassTruncated,
        Reason::PassMalformed,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Redirected => "redirected",
            Reason::RedirectNoSocket => "redirect_no_socket",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotUdp => "pass_not_udp",
            Reason::PassOtherPort => "pass_other_port",
            Reason::PassOtherAddress => "pass_other_address",
            Reason::PassFragment => "pass_fragment",
            Reason::PassExtHeader => "pass_ext_header",
            Reason::PassTruncated => "pass_truncated",
            Reason::PassMalformed => "pass_malformed",
        }
    }

    /// Whether the frame went to an AF_XDP socket.
    pub fn is_redirect(self) -> bool {
        self == Reason::Redirected
    }
}

/// Counter totals over all CPUs, one per [`Reason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdicts([u64; Reason::ALL.len()]);

impl Verdicts {
    /// The count for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }

    /// (reason, count) pairs in counter order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// All frames the program saw.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// What moved between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &Verdicts) -> Verdicts {
        let mut d = *self;
        for (v, e) in d.0.iter_mut().zip(earlier.0.iter()) {
            *v = v.saturating_sub(*e);
        }
        d
    }
}

/// The per-CPU array of counters: a plain add on the CPU's own slot in the program, summed
/// here when read (no atomics on the packet path).
#[derive(Debug)]
pub struct VerdictCounters {
    fd: OwnedFd,
    cpus: usize,
}

impl VerdictCounters {
    pub(crate) fn create() -> Result<Self> {
        let fd = bpf::map_create(
            MapType::PercpuArray,
            4,
            8,
            Reason::ALL.len() as u32,
            "zcp_verdicts",
        )?;
        Ok(VerdictCounters {
            fd,
            cpus: bpf::possible_cpus()?,
        })
    }

    /// The map's descriptor (for the program's map loads).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sums every CPU's counters. One lookup per reason; meant for a metrics scrape, not
    /// the packet path.
    pub fn read(&self) -> Result<Verdicts> {
        let mut out = Verdicts::default();
        let mut buf = vec![0u8; 8 * self.cpus];
        for reason in Reason::ALL {
            let key = (reason as u32).to_ne_bytes();
            if bpf::map_lookup(self.fd.as_fd(), &key, &mut buf)? {
                out.0[reason as usize] = buf
                    .chunks_exact(8)
                    .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .sum();
            }
        }
        Ok(out)
    }
}

/// The XSKMAP: slot `i` holds the AF_XDP socket bound to RX queue `i`. The program
/// redirects a frame to the slot of the queue it arrived on; an empty slot passes it.
#[derive(Debug)]
pub struct XskMap {
    fd: OwnedFd,
    slots: u32,
}

impl XskMap {
    pub(crate) fn create(slots: u32) -> Result<Self> {
        if slots == 0 {
            return Err(Error::Invalid("an XSKMAP needs at least one slot".into()));
        }
        let fd = bpf::map_create(MapType::Xskmap, 4, 4, slots, "zcp_xsks")?;
        Ok(XskMap { fd, slots })
    }

    /// The map's descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Number of queue slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Puts an AF_XDP socket (bound, with an RX ring) in `queue`'s slot. The map holds a
    /// reference to the socket until the slot is cleared or the map is freed.
    pub fn insert(&self, queue: u32, xsk: BorrowedFd<'_>) -> Result<()> {
        self.check(queue)?;
        let fd = xsk.as_raw_fd() as u32;
        bpf::map_update(
            self.fd.as_fd(),
            &queue.to_ne_bytes(),
            &fd.to_ne_bytes(),
            bpf::BPF_ANY,
        )
    }

    /// Empties `queue`'s slot; `Ok(false)` when it was empty.
    pub fn remove(&self, queue: u32) -> Result<bool> {
        self.check(queue)?;
        bpf::map_delete(self.fd.as_fd(), &queue.to_ne_bytes())
    }

    fn check(&self, queue: u32) -> Result<()> {
        if queue >= self.slots {
            return Err(Error::Invalid(format!(
                "queue {queue} is past the XSKMAP's {} slots",
                self.slots
            )));
        }
        Ok(())
    }
}
