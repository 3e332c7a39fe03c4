//! The AF_XDP plane of the whole process: the XDP program on `quic.af_xdp.interface`
//! (UDP to the proxy's address and port → the RX queue's AF_XDP socket, everything else →
//! the kernel), attached through a BPF link, and each shard's socket made here, before any
//! shard starts, so that a backend that cannot run fails start-up with one line.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
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
}

impl XdpPlane {
    /// Loads and attaches the program for `listen` on `cfg.interface`.
    pub fn start(cfg: &AfXdp, listen: SocketAddr) -> af_xdp::Result<XdpPlane> {
        let interface = Interface::by_name(&cfg.interface)?;
        let filter = match listen.ip() {
            ip if ip.is_unspecified() => Filter::any_address(listen.port()),
            IpAddr::V4(v4) => Filter {
                port: listen.port(),
                ipv4: vec![v4],
                ipv6: Vec::new(),
            },
            IpAddr::V6(v6) => Filter {
                port: listen.port(),
                ipv4: Vec::new(),
                ipv6: vec![v6],
            },
        };
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
