//! The AF_XDP plane of the whole process: the XDP program on `quic.af_xdp.interface`
//! (UDP to the proxy's address and port → the RX queue's AF_XDP socket, everything else →
//! the kernel), attached through a BPF link, and each shard's socket made here, before any
//! shard starts, so that a backend that cannot run fails start-up with one line.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use af_xdp::attach::attach_to;
use af_xdp::{
    AttachMode, Filter, Interface, Reason, RedirectProgram, XdpLink, XskConfig, XskSocket,
};
use af_xdp::{HugePages, Umem, UmemConfig};

use crate::config::{AfXdp, ZeroCopy};

/// The program, its link and what replies need to know of the interface. Shared by the
/// shards' backends; dropping the last one detaches the program (so does the process
/// dying: the kernel closes the link).
pub struct XdpPlane {
    program: RedirectProgram,
    link: XdpLink,
    /// The interface's MAC: every reply's source.
    pub mac: [u8; 6],
    /// The address and port the proxy serves QUIC on.
    pub local: SocketAddr,
    pub interface: Interface,
    /// The interface's RX queues (a queue without a socket passes its frames to the
    /// kernel, where no UDP socket takes them).
    pub rx_queues: u32,
}

impl XdpPlane {
    /// Loads and attaches the program for `listen` on `cfg.interface`.
    pub fn start(cfg: &AfXdp, listen: SocketAddr) -> af_xdp::Result<XdpPlane> {
        let interface = Interface::by_name(&cfg.interface)?;
        let filter = Filter::for_listen(listen);
        let link_info = af_xdp::netlink::link(interface.index)?;
        let program = RedirectProgram::load(&filter, link_info.rx_queues.max(1))?;
        let link = attach_to(program.fd(), interface.clone(), AttachMode::Auto)?;
        tracing::info!(
            interface = %interface.name,
            mode = link.mode().as_str(),
            program = program.id().unwrap_or(0),
            rx_queues = link_info.rx_queues,
            "XDP program attached: UDP to the proxy's port goes to the cores' AF_XDP sockets"
        );
        Ok(XdpPlane {
            program,
            link,
            mac: link_info.mac,
            local: listen,
            interface,
            rx_queues: link_info.rx_queues,
        })
    }

    /// Shard `shard`'s socket on its queue (`cfg.queue(shard)`), with its own UMEM,
    /// registered in the program's map.
    pub fn socket(self: &Arc<Self>, cfg: &AfXdp, shard: usize) -> af_xdp::Result<XskSocket> {
        let umem = Umem::new(&UmemConfig {
            frame_size: cfg.frame_size,
            frames: cfg.frames,
            headroom: 0,
            hugepages: HugePages::Auto,
        })?;
        // Half the frames receive, half send: every ring can hold all of its half.
        let half = cfg.frames / 2;
        let config = XskConfig {
            queue: cfg.queue(shard),
            mode: match cfg.zero_copy {
                ZeroCopy::Auto => af_xdp::XskMode::Auto,
                ZeroCopy::On => af_xdp::XskMode::ZeroCopy,
                ZeroCopy::Off => af_xdp::XskMode::Copy,
            },
            rx_size: half,
            tx_size: half,
            fill_size: half,
            completion_size: half,
        };
        let socket = XskSocket::new(umem, &self.interface, &config)?;
        if cfg.busy_poll > 0 {
            busy_poll(socket.as_fd(), cfg.busy_poll)?;
        }
        socket.register(self.program.xsk_map())?;
        tracing::info!(
            core = shard,
            queue = config.queue,
            zero_copy = matches!(socket.mode(), af_xdp::BoundMode::ZeroCopy),
            hugepages = socket.umem().hugepages(),
            frames = cfg.frames,
            "AF_XDP socket bound"
        );
        Ok(socket)
    }

    pub fn mode(&self) -> &'static str {
        self.link.mode().as_str()
    }

    /// The program's verdict counters, summed over CPUs.
    pub fn verdicts(&self) -> Option<af_xdp::Verdicts> {
        self.program.verdicts().ok()
    }
}

/// Lets reads of `fd` busy-poll the queue for up to `usecs` (preferring it to interrupts,
/// a batch of RX frames at a time): lower latency for a core spent polling.
fn busy_poll(fd: BorrowedFd<'_>, usecs: u32) -> af_xdp::Result<()> {
    let budget = i32::try_from(super::RX_BATCH).unwrap_or(64);
    let usecs = i32::try_from(usecs).unwrap_or(i32::MAX);
    for (name, option, value) in [
        (
            "setsockopt(SO_PREFER_BUSY_POLL)",
            libc::SO_PREFER_BUSY_POLL,
            1,
        ),
        ("setsockopt(SO_BUSY_POLL)", libc::SO_BUSY_POLL, usecs),
        (
            "setsockopt(SO_BUSY_POLL_BUDGET)",
            libc::SO_BUSY_POLL_BUDGET,
            budget,
        ),
    ] {
        // SAFETY: an int option of the size given on a socket we hold.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(af_xdp::Error::sys(name, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Renders `zcproxy_xdp_verdicts_total{reason}` (zeros without an XDP plane, so dashboards
/// and alerts find the series on every proxy).
pub fn render_verdicts(out: &mut String, plane: Option<&XdpPlane>) {
    let verdicts = plane.and_then(XdpPlane::verdicts);
    let name = "zcproxy_xdp_verdicts_total";
    let _ = writeln!(
        out,
        "# HELP {name} What the XDP program did with each frame of quic.af_xdp.interface, by reason\n# TYPE {name} counter"
    );
    for reason in Reason::ALL {
        let n = verdicts.as_ref().map_or(0, |v| v.get(reason));
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", reason.label());
    }
}
