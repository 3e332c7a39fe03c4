//! The XDP program: UDP to the proxy's address and port goes to the RX queue's AF_XDP
//! socket, everything else to the kernel.
//!
//! Passing is the default so the same interface keeps serving TCP (SOCKS, HTTP, TLS), the
//! kernel keeps answering ARP and NDP, and a frame the program does not understand is the
//! kernel's to judge. The program is assembled in Rust ([`crate::insn`]) and loaded with
//! bpf(2); every direct packet read sits behind a `data_end` check the verifier can follow,
//! and the UDP header (at an offset that depends on IPv4 options) is read with
//! `bpf_xdp_load_bytes`, so CAP_BPF + CAP_NET_ADMIN suffice (no CAP_PERFMON). Needs kernel
//! 5.18 (that helper and `bpf_xdp_get_buff_len`); the BPF link needs 5.9.
//!
//! Addresses are compared inline (one 32-bit compare per IPv4 address, four per IPv6
//! address), which needs no hash map and keeps the verifier's work linear: at most
//! [`MAX_ADDRESSES`] per family. A proxy listening on the unspecified address gives an
//! empty list: any address.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::bpf::{self, helper, TestOutcome, XdpMd};
use crate::error::{Error, Result};
use crate::insn::{Alu, Asm, Cond, Insn, Label, Reg, Size};
use crate::maps::{Reason, VerdictCounters, Verdicts, XskMap};

/// XDP actions (enum xdp_action).
pub mod action {
    /// Error in the program: dropped, traced.
    pub const ABORTED: u32 = 0;
    /// Dropped.
    pub const DROP: u32 = 1;
    /// Up the kernel's stack.
    pub const PASS: u32 = 2;
    /// Back out of the interface it came in on.
    pub const TX: u32 = 3;
    /// To the target `bpf_redirect_map` chose (here an AF_XDP socket).
    pub const REDIRECT: u32 = 4;
}

/// Most addresses per family the program compares inline.
pub const MAX_ADDRESSES: usize = 16;

/// The license string given to the kernel. The program calls only `bpf_map_lookup_elem`
/// and `bpf_redirect_map`, neither GPL-only, so the workspace's own license is accepted.
pub const LICENSE: &str = "Apache-2.0";

const ETH_P_IPV4: i32 = 0x0800;
const ETH_P_IPV6: i32 = 0x86dd;
const ETH_P_8021Q: i32 = 0x8100;
const ETH_P_8021AD: i32 = 0x88a8;
const IPPROTO_UDP: i32 = 17;
/// IPv6 next-header values that are extension headers (RFC 8200, IANA "IPv6 Extension
/// Header Types"): hop-by-hop, routing, fragment, ESP, AH, destination options, mobility,
/// HIP, shim6, and the two experimental values.
const IPV6_EXT_HEADERS: [i32; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

/// Which UDP datagrams the program takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// The proxy's UDP port.
    pub port: u16,
    /// IPv4 destinations to take; empty: any.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 destinations to take; empty: any.
    pub ipv6: Vec<Ipv6Addr>,
}

impl Filter {
    /// Datagrams to `port` on any address (a proxy bound to 0.0.0.0 / ::).
    pub fn any_address(port: u16) -> Self {
        Filter {
            port,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
        }
    }

    /// Datagrams to `port` that a socket bound to `listen` would get: its address only
    /// (an IPv4-mapped IPv6 address is IPv4), nothing of the other family; 0.0.0.0 takes
    /// any IPv4 destination, `::` any destination of both families (as a dual-stack
    /// socket). A family is shut off with its unspecified address as the only entry: no
    /// packet is sent to 0.0.0.0 or `::`.
    pub fn for_listen(listen: std::net::SocketAddr) -> Self {
        let none4 = vec![Ipv4Addr::UNSPECIFIED];
        let none6 = vec![Ipv6Addr::UNSPECIFIED];
        let ip = match listen.ip() {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(v6),
            },
            v4 => v4,
        };
        let (ipv4, ipv6) = match ip {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => (Vec::new(), none6),
            std::net::IpAddr::V4(v4) => (vec![v4], none6),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => (Vec::new(), Vec::new()),
            std::net::IpAddr::V6(v6) => (none4, vec![v6]),
        };
        Filter {
            port: listen.port(),
            ipv4,
            ipv6,
        }
    }

    fn check(&self) -> Result<()> {
        if self.ipv4.len() > MAX_ADDRESSES || self.ipv6.len() > MAX_ADDRESSES {
            return Err(Error::Invalid(format!(
                "at most {MAX_ADDRESSES} addresses per family (got {} IPv4, {} IPv6)",
                self.ipv4.len(),
                self.ipv6.len()
            )));
        }
        Ok(())
    }
}

/// Assembles the program for `filter`, with map loads of `xsks` (the XSKMAP) and
/// `counters` (per-CPU u64 per [`Reason`]).
///
/// Registers: R6 the context, R7 the reason counted, R8 the L3 header (a packet pointer),
/// R9 the offset of the L3 and then the UDP header (a scalar), R2/R3 `data`/`data_end`
/// until the UDP header (helper calls clobber them after).
pub fn assemble(filter: &Filter, xsks: i32, counters: i32) -> Result<Vec<Insn>> {
    use Reg::*;
    filter.check()?;
    let mut a = Asm::new();
    let pass: Vec<Label> = Reason::ALL.iter().map(|_| a.label()).collect();
    let to = |r: Reason| pass[r as usize];
    let truncated = to(Reason::PassTruncated);
    let malformed = to(Reason::PassMalformed);
    let (vlan1, vlan2, l3, ipv4, ipv6, v6udp, take) = (
        a.label(),
        a.label(),
        a.label(),
        a.label(),
        a.label(),
        a.label(),
        a.label(),
    );

    a.mov64_reg(R6, R1);
    a.ldx(Size::W, R2, R6, 0); // xdp_md.data
    a.ldx(Size::W, R3, R6, 4); // xdp_md.data_end

    // Ethernet, then up to two VLAN tags (802.1Q, 802.1ad): R5 = ethertype, R8 = L3.
    // The ethertype sits at 12, 16 or 20; each tag moves L3 4 bytes on.
    ethertype(&mut a, 12, truncated);
    a.jmp_imm(Cond::Eq, R5, ETH_P_8021Q, vlan1);
    a.jmp_imm(Cond::Eq, R5, ETH_P_8021AD, vlan1);
    a.ja(l3);
    a.bind(vlan1);
    ethertype(&mut a, 16, truncated);
    a.jmp_imm(Cond::Eq, R5, ETH_P_8021Q, vlan2);
    a.jmp_imm(Cond::Eq, R5, ETH_P_8021AD, vlan2);
    a.ja(l3);
    a.bind(vlan2);
    ethertype(&mut a, 20, truncated);
    a.bind(l3);
    a.jmp_imm(Cond::Eq, R5, ETH_P_IPV4, ipv4);
    a.jmp_imm(Cond::Eq, R5, ETH_P_IPV6, ipv6);
    a.ja(to(Reason::PassNotIp));

    // IPv4: version 4, IHL >= 5 (options allowed), UDP, not a fragment.
    a.bind(ipv4);
    need(&mut a, R8, 20, truncated);
    a.ldx(Size::B, R4, R8, 0);
    a.mov64_reg(R5, R4).alu64_imm(Alu::Rsh, R5, 4);
    a.jmp_imm(Cond::Ne, R5, 4, malformed);
    a.alu64_imm(Alu::And, R4, 0x0f);
    a.jmp_imm(Cond::Lt, R4, 5, malformed);
    a.ldx(Size::B, R5, R8, 9);
    a.jmp_imm(Cond::Ne, R5, IPPROTO_UDP, to(Reason::PassNotUdp));
    a.ldx(Size::H, R5, R8, 6).be16(R5);
    a.alu64_imm(Alu::And, R5, 0x3fff); // MF | fragment offset
    a.jmp_imm(Cond::Ne, R5, 0, to(Reason::PassFragment));
    a.alu64_imm(Alu::Lsh, R4, 2);
    a.alu64_reg(Alu::Add, R9, R4);
    udp(&mut a, filter.port, &to);
    if filter.ipv4.is_empty() {
        a.ja(take);
    } else {
        a.ldx(Size::W, R5, R8, 16);
        for addr in &filter.ipv4 {
            a.jmp32_imm(Cond::Eq, R5, word(&addr.octets()), take);
        }
        a.ja(to(Reason::PassOtherAddress));
    }

    // IPv6: version 6, UDP directly after the fixed header.
    a.bind(ipv6);
    need(&mut a, R8, 40, truncated);
    a.ldx(Size::B, R4, R8, 0).alu64_imm(Alu::Rsh, R4, 4);
    a.jmp_imm(Cond::Ne, R4, 6, malformed);
    a.ldx(Size::B, R5, R8, 6);
    a.jmp_imm(Cond::Eq, R5, IPPROTO_UDP, v6udp);
    for ext in IPV6_EXT_HEADERS {
        a.jmp_imm(Cond::Eq, R5, ext, to(Reason::PassExtHeader));
    }
    a.ja(to(Reason::PassNotUdp));
    a.bind(v6udp);
    a.alu64_imm(Alu::Add, R9, 40);
    udp(&mut a, filter.port, &to);
    if filter.ipv6.is_empty() {
        a.ja(take);
    } else {
        for addr in &filter.ipv6 {
            let next = a.label();
            let o = addr.octets();
            for (i, chunk) in o.chunks_exact(4).enumerate() {
                a.ldx(Size::W, R5, R8, 24 + 4 * i as i16);
                a.jmp32_imm(Cond::Ne, R5, word(chunk), next);
            }
            a.ja(take);
            a.bind(next);
        }
        a.ja(to(Reason::PassOtherAddress));
    }

    // Taken: is there a socket on this queue? Count, then redirect (XDP_PASS if the slot
    // emptied meanwhile: the flags' low bits are the fallback action).
    a.bind(take);
    a.ldx(Size::W, R2, R6, 16); // xdp_md.rx_queue_index
    a.stx(Size::W, R10, -8, R2);
    a.ld_map_fd(R1, xsks);
    a.mov64_reg(R2, R10).alu64_imm(Alu::Add, R2, -8);
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, to(Reason::RedirectNoSocket));
    a.mov64_imm(R7, Reason::Redirected as i32);
    count(&mut a, counters);
    a.ld_map_fd(R1, xsks);
    a.ldx(Size::W, R2, R6, 16);
    a.mov64_imm(R3, action::PASS as i32);
    a.call(helper::REDIRECT_MAP);
    a.exit();

    // Passed: R7 = reason, count, XDP_PASS.
    let count_pass = a.label();
    for reason in Reason::ALL {
        if !a.is_referenced(to(reason)) {
            continue;
        }
        a.bind(to(reason));
        a.mov64_imm(R7, reason as i32);
        a.ja(count_pass);
    }
    a.bind(count_pass);
    count(&mut a, counters);
    a.mov64_imm(R0, action::PASS as i32);
    a.exit();
    a.finish()
}

/// `if base + len > data_end goto fail`, which also proves to the verifier that
/// `base[0..len]` may be read.
fn need(a: &mut Asm, base: Reg, len: i32, fail: Label) {
    a.mov64_reg(Reg::R4, base).alu64_imm(Alu::Add, Reg::R4, len);
    a.jmp_reg(Cond::Gt, Reg::R4, Reg::R3, fail);
}

/// R5 = the ethertype at `at` (host order), R8 = the header after it, R9 = its offset.
fn ethertype(a: &mut Asm, at: i16, truncated: Label) {
    use Reg::*;
    need(a, R2, i32::from(at) + 2, truncated);
    a.ldx(Size::H, R5, R2, at).be16(R5);
    a.mov64_reg(R8, R2)
        .alu64_imm(Alu::Add, R8, i32::from(at) + 2);
    a.mov64_imm(R9, i32::from(at) + 2);
}

/// The UDP header at offset R9: whole, to `port`, its length at least 8 and within the
/// frame (a datagram cut short is not the proxy's). Clobbers R0-R5 and R9.
///
/// The header is read with `bpf_xdp_load_bytes` at a scalar offset, and the length checked
/// against `bpf_xdp_get_buff_len`, rather than through a packet pointer moved by a
/// variable amount (IHL, UDP length): the verifier allows variable packet-pointer
/// arithmetic only with CAP_PERFMON, and this way CAP_BPF + CAP_NET_ADMIN load the program.
fn udp(a: &mut Asm, port: u16, to: &impl Fn(Reason) -> Label) {
    use Reg::*;
    const HDR: i16 = -16;
    a.mov64_reg(R1, R6);
    a.mov64_reg(R2, R9);
    a.mov64_reg(R3, R10).alu64_imm(Alu::Add, R3, i32::from(HDR));
    a.mov64_imm(R4, 8);
    a.call(helper::XDP_LOAD_BYTES);
    a.jmp_imm(Cond::Ne, R0, 0, to(Reason::PassTruncated));
    a.ldx(Size::H, R5, R10, HDR + 2).be16(R5);
    a.jmp_imm(Cond::Ne, R5, i32::from(port), to(Reason::PassOtherPort));
    a.ldx(Size::H, R5, R10, HDR + 4).be16(R5);
    a.jmp_imm(Cond::Lt, R5, 8, to(Reason::PassMalformed));
    a.alu64_reg(Alu::Add, R9, R5); // where the datagram ends
    a.mov64_reg(R1, R6);
    a.call(helper::XDP_GET_BUFF_LEN);
    a.jmp_reg(Cond::Gt, R9, R0, to(Reason::PassTruncated));
}

/// `counters[R7] += 1` on this CPU's slot. Clobbers R0-R5.
fn count(a: &mut Asm, counters: i32) {
    use Reg::*;
    let done = a.label();
    a.stx(Size::W, R10, -4, R7);
    a.ld_map_fd(R1, counters);
    a.mov64_reg(R2, R10).alu64_imm(Alu::Add, R2, -4);
    a.call(helper::MAP_LOOKUP_ELEM);
    a.jmp_imm(Cond::Eq, R0, 0, done);
    a.ldx(Size::DW, R1, R0, 0);
    a.alu64_imm(Alu::Add, R1, 1);
    a.stx(Size::DW, R0, 0, R1);
    a.bind(done);
}

/// Four packet bytes as the 32-bit word a `LDX W` of them yields on this host.
fn word(bytes: &[u8]) -> i32 {
    i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The loaded program with its maps. Dropping it unloads the program unless a link still
/// holds it (see [`mod@crate::attach`]).
#[derive(Debug)]
pub struct RedirectProgram {
    prog: OwnedFd,
    xsks: XskMap,
    verdicts: VerdictCounters,
    filter: Filter,
}

impl RedirectProgram {
    /// Creates the maps (`queues` XSKMAP slots: the interface's RX queue count) and loads
    /// the program for `filter`.
    pub fn load(filter: &Filter, queues: u32) -> Result<Self> {
        let xsks = XskMap::create(queues)?;
        let verdicts = VerdictCounters::create()?;
        let insns = assemble(filter, xsks.fd().as_raw_fd(), verdicts.fd().as_raw_fd())?;
        let prog = bpf::prog_load_xdp(&insns, LICENSE, "zcp_redirect")?;
        Ok(RedirectProgram {
            prog,
            xsks,
            verdicts,
            filter: filter.clone(),
        })
    }

    /// The program's descriptor (to attach it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The kernel's id of the program.
    pub fn id(&self) -> Result<u32> {
        bpf::prog_id(self.prog.as_fd())
    }

    /// The filter it was built for.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The queue → socket map.
    pub fn xsk_map(&self) -> &XskMap {
        &self.xsks
    }

    /// The verdict counters summed over CPUs.
    pub fn verdicts(&self) -> Result<Verdicts> {
        self.verdicts.read()
    }

    /// Runs the program once on `frame` (BPF_PROG_TEST_RUN), as received on `ingress`'s
    /// interface and queue when given.
    pub fn test_run(&self, frame: &[u8], ingress: Option<XdpMd>) -> Result<TestOutcome> {
        bpf::prog_test_run_xdp(self.prog.as_fd(), frame, ingress, None)
    }
}
