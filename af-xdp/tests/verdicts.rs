//! The redirect program judged frame by frame with BPF_PROG_TEST_RUN: the verdict (the
//! program's return value) and the one counter that moved, for every kind of frame the
//! issue names. No socket is in the XSKMAP here, so a frame the program takes comes back
//! XDP_PASS and counts as `redirect_no_socket`; tests/xsk.rs checks `redirected` (and
//! XDP_REDIRECT) with a socket in the map.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use af_xdp::bpf::{self, XdpMd};
use af_xdp::insn::{Asm, Reg, Size};
use af_xdp::program::{action, Filter, MAX_ADDRESSES};
use af_xdp::{Error, Reason, RedirectProgram};
use common::frame::*;

const PORT: u16 = 4433;
const US4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const US6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
const PAYLOAD: &[u8] = b"quic initial, more or less";

/// Our addresses (with another of each family first, so the match is not always the first
/// compare).
fn filter() -> Filter {
    Filter {
        port: PORT,
        ipv4: vec![Ipv4Addr::new(203, 0, 113, 9), US4],
        ipv6: vec![Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7), US6],
    }
}

fn load(f: &Filter) -> RedirectProgram {
    RedirectProgram::load(f, 2).unwrap()
}

/// Runs `frame` once and returns (retval, the one reason whose counter moved by one).
fn judge(p: &RedirectProgram, frame: &[u8]) -> (u32, Reason) {
    let before = p.verdicts().unwrap();
    let out = p.test_run(frame, None).unwrap();
    let moved = p.verdicts().unwrap().since(&before);
    assert_eq!(
        moved.total(),
        1,
        "exactly one counter moves per frame: {moved:?}"
    );
    let reason = moved.iter().find(|&(_, n)| n == 1).unwrap().0;
    (out.retval, reason)
}

/// The frame is taken by the program (no socket in the map: passed and counted so).
fn assert_taken(p: &RedirectProgram, frame: &[u8], what: &str) {
    assert_eq!(
        judge(p, frame),
        (action::PASS, Reason::RedirectNoSocket),
        "{what}"
    );
}

fn assert_passed(p: &RedirectProgram, frame: &[u8], reason: Reason, what: &str) {
    assert_eq!(judge(p, frame), (action::PASS, reason), "{what}");
}

fn v4(tags: &[u16], dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    udp4_frame(tags, PEER4, dst, 50000, dport, PAYLOAD)
}

fn v6(tags: &[u16], dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    udp6_frame(tags, PEER6, dst, 50000, dport, PAYLOAD)
}

#[test]
fn ipv4_udp_is_taken_by_address_and_port() {
    if !common::root_or_skip("ipv4_udp_is_taken_by_address_and_port") {
        return;
    }
    let p = load(&filter());
    assert_taken(&p, &v4(&[], US4, PORT), "IPv4 UDP to our address and port");
    assert_passed(
        &p,
        &v4(&[], US4, 443),
        Reason::PassOtherPort,
        "another port",
    );
    assert_passed(
        &p,
        &v4(&[], US4, PORT + 1),
        Reason::PassOtherPort,
        "port + 1",
    );
    assert_passed(
        &p,
        &v4(&[], OTHER4, PORT),
        Reason::PassOtherAddress,
        "another address",
    );
    let first = v4(&[], Ipv4Addr::new(203, 0, 113, 9), PORT);
    assert_taken(&p, &first, "the first address of the list");
}

#[test]
fn ipv4_options_fragments_and_other_protocols() {
    if !common::root_or_skip("ipv4_options_fragments_and_other_protocols") {
        return;
    }
    let p = load(&filter());
    let udp = udp4(PEER4, US4, 50000, PORT, PAYLOAD);
    let frame = |frag: u16, options: &[u8], proto: u8, l4: &[u8]| {
        ethernet(
            MAC_A,
            MAC_B,
            &[],
            ETH_IPV4,
            &ipv4(PEER4, US4, proto, frag, options, l4),
        )
    };
    // Router alert (4 bytes), then a 40-byte run of NOPs + EOL: IHL 6 and IHL 15.
    assert_taken(&p, &frame(0, &[0x94, 4, 0, 0], PROTO_UDP, &udp), "IHL 6");
    let mut long = vec![1u8; 39];
    long.push(0);
    assert_taken(&p, &frame(0, &long, PROTO_UDP, &udp), "IHL 15");
    assert_taken(
        &p,
        &frame(0x4000, &[], PROTO_UDP, &udp),
        "don't-fragment set",
    );
    assert_passed(
        &p,
        &frame(0x2000, &[], PROTO_UDP, &udp),
        Reason::PassFragment,
        "first fragment (MF)",
    );
    assert_passed(
        &p,
        &frame(0x0003, &[], PROTO_UDP, &udp),
        Reason::PassFragment,
        "later fragment",
    );
    assert_passed(
        &p,
        &frame(0x0003, &[], PROTO_UDP, &udp[..8]),
        Reason::PassFragment,
        "last fragment",
    );
    let tcp = tcp4_syn(PEER4, US4, 50000, PORT);
    assert_passed(
        &p,
        &frame(0, &[], PROTO_TCP, &tcp),
        Reason::PassNotUdp,
        "TCP to the port",
    );
    assert_passed(
        &p,
        &frame(0, &[], 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
        Reason::PassNotUdp,
        "ICMP",
    );
    let arp = ethernet(
        [0xff; 6],
        MAC_B,
        &[],
        ETH_ARP,
        &arp_request(MAC_B, PEER4, US4),
    );
    assert_passed(&p, &arp, Reason::PassNotIp, "ARP");
    let lldp = ethernet([1, 0x80, 0xc2, 0, 0, 0xe], MAC_B, &[], 0x88cc, &[0; 46]);
    assert_passed(&p, &lldp, Reason::PassNotIp, "LLDP");
}

#[test]
fn malformed_headers_are_passed() {
    if !common::root_or_skip("malformed_headers_are_passed") {
        return;
    }
    let p = load(&filter());
    let good = v4(&[], US4, PORT);
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    assert_passed(&p, &ihl4, Reason::PassMalformed, "IHL 4");
    let mut version6 = good.clone();
    version6[14] = 0x65;
    assert_passed(
        &p,
        &version6,
        Reason::PassMalformed,
        "IPv4 ethertype, version 6",
    );
    let mut short_udp_len = good.clone();
    short_udp_len[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes());
    assert_passed(&p, &short_udp_len, Reason::PassMalformed, "UDP length 7");
    let mut long_udp_len = good.clone();
    let past = (8 + PAYLOAD.len() + 1) as u16;
    long_udp_len[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&past.to_be_bytes());
    assert_passed(
        &p,
        &long_udp_len,
        Reason::PassTruncated,
        "UDP length past the frame",
    );
    let mut v6_version4 = v6(&[], US6, PORT);
    v6_version4[14] = 0x40;
    assert_passed(
        &p,
        &v6_version4,
        Reason::PassMalformed,
        "IPv6 ethertype, version 4",
    );
    // Ethernet padding after a short datagram is not a truncation.
    let mut padded = udp4_frame(&[], PEER4, US4, 1, PORT, b"x");
    padded.resize(60, 0);
    assert_taken(&p, &padded, "padded to the Ethernet minimum");
}

#[test]
fn ipv6_udp_is_taken_and_extension_headers_passed() {
    if !common::root_or_skip("ipv6_udp_is_taken_and_extension_headers_passed") {
        return;
    }
    let p = load(&filter());
    assert_taken(&p, &v6(&[], US6, PORT), "IPv6 UDP to our address and port");
    assert_taken(
        &p,
        &v6(&[], Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7), PORT),
        "first address",
    );
    assert_passed(&p, &v6(&[], US6, 53), Reason::PassOtherPort, "another port");
    assert_passed(
        &p,
        &v6(&[], OTHER6, PORT),
        Reason::PassOtherAddress,
        "another address",
    );
    // Differs from ours only in the last word, then only in the first.
    let last = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
    assert_passed(
        &p,
        &v6(&[], last, PORT),
        Reason::PassOtherAddress,
        "last word differs",
    );
    let first = Ipv6Addr::new(0x2002, 0xdb8, 0, 0, 0, 0, 0, 1);
    assert_passed(
        &p,
        &v6(&[], first, PORT),
        Reason::PassOtherAddress,
        "first word differs",
    );
    let udp = udp6(PEER6, US6, 50000, PORT, PAYLOAD);
    let mut hbh = vec![PROTO_UDP, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop: PadN
    hbh.extend_from_slice(&udp);
    let frame = ethernet(MAC_A, MAC_B, &[], ETH_IPV6, &ipv6(PEER6, US6, 0, &hbh));
    assert_passed(&p, &frame, Reason::PassExtHeader, "hop-by-hop before UDP");
    let mut frag = vec![PROTO_UDP, 0, 0, 1, 0, 0, 0, 1]; // fragment header, MF
    frag.extend_from_slice(&udp);
    let frame = ethernet(MAC_A, MAC_B, &[], ETH_IPV6, &ipv6(PEER6, US6, 44, &frag));
    assert_passed(&p, &frame, Reason::PassExtHeader, "fragment header");
    // Neighbour solicitation (ICMPv6 135): NDP stays with the kernel.
    let ns = [135u8, 0, 0, 0, 0, 0, 0, 0];
    let frame = ethernet(
        MAC_A,
        MAC_B,
        &[],
        ETH_IPV6,
        &ipv6(PEER6, US6, PROTO_ICMPV6, &ns),
    );
    assert_passed(&p, &frame, Reason::PassNotUdp, "NDP");
    let frame = ethernet(
        MAC_A,
        MAC_B,
        &[],
        ETH_IPV6,
        &ipv6(PEER6, US6, PROTO_TCP, &[0; 20]),
    );
    assert_passed(&p, &frame, Reason::PassNotUdp, "TCP over IPv6");
}

#[test]
fn vlan_and_qinq_tags_are_skipped() {
    if !common::root_or_skip("vlan_and_qinq_tags_are_skipped") {
        return;
    }
    let p = load(&filter());
    for tags in [
        &[TPID_8021Q][..],
        &[TPID_8021AD],
        &[TPID_8021AD, TPID_8021Q],
        &[TPID_8021Q, TPID_8021Q],
    ] {
        assert_taken(&p, &v4(tags, US4, PORT), &format!("IPv4 under {tags:x?}"));
        assert_taken(&p, &v6(tags, US6, PORT), &format!("IPv6 under {tags:x?}"));
        assert_passed(
            &p,
            &v4(tags, US4, 80),
            Reason::PassOtherPort,
            "tagged, other port",
        );
    }
    let three = [TPID_8021AD, TPID_8021Q, TPID_8021Q];
    assert_passed(&p, &v4(&three, US4, PORT), Reason::PassNotIp, "three tags");
    let arp = ethernet(
        [0xff; 6],
        MAC_B,
        &[TPID_8021Q],
        ETH_ARP,
        &arp_request(MAC_B, PEER4, US4),
    );
    assert_passed(&p, &arp, Reason::PassNotIp, "tagged ARP");
}

/// Every frame cut at every length from the Ethernet header's end to one byte short: never
/// taken, always passed, always counted as truncated (the cut lands in a header or leaves
/// the UDP length pointing past the frame). The kernel refuses test frames shorter than an
/// Ethernet header, so those lengths cannot be run.
#[test]
fn truncated_frames_are_passed_at_every_length() {
    if !common::root_or_skip("truncated_frames_are_passed_at_every_length") {
        return;
    }
    let p = load(&filter());
    let udp = udp4(PEER4, US4, 50000, PORT, PAYLOAD);
    let with_options = ethernet(
        MAC_A,
        MAC_B,
        &[],
        ETH_IPV4,
        &ipv4(PEER4, US4, PROTO_UDP, 0, &[1, 1, 1, 0], &udp),
    );
    let frames = [
        ("IPv4", v4(&[], US4, PORT)),
        ("IPv4 with options", with_options),
        ("IPv6", v6(&[], US6, PORT)),
        ("QinQ IPv4", v4(&[TPID_8021AD, TPID_8021Q], US4, PORT)),
        ("VLAN IPv6", v6(&[TPID_8021Q], US6, PORT)),
    ];
    for (what, full) in &frames {
        assert_taken(&p, full, what);
        for len in 14..full.len() {
            assert_passed(
                &p,
                &full[..len],
                Reason::PassTruncated,
                &format!("{what} cut at {len}"),
            );
        }
        for len in [0, 1, 13] {
            let e = p.test_run(&full[..len], None).unwrap_err();
            assert!(e.to_string().contains("Invalid argument"), "{len}: {e}");
        }
    }
}

#[test]
fn an_empty_address_list_takes_any_address() {
    if !common::root_or_skip("an_empty_address_list_takes_any_address") {
        return;
    }
    let p = load(&Filter::any_address(PORT));
    for dst in [
        US4,
        OTHER4,
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(10, 1, 2, 3),
    ] {
        assert_taken(&p, &v4(&[], dst, PORT), &format!("to {dst}"));
    }
    for dst in [US6, OTHER6, Ipv6Addr::LOCALHOST] {
        assert_taken(&p, &v6(&[], dst, PORT), &format!("to {dst}"));
    }
    assert_passed(&p, &v4(&[], US4, 4434), Reason::PassOtherPort, "other port");
    // A filter with only IPv4 addresses takes IPv6 to any address.
    let only4 = load(&Filter {
        port: PORT,
        ipv4: vec![US4],
        ipv6: vec![],
    });
    assert_taken(
        &only4,
        &v6(&[], OTHER6, PORT),
        "IPv6 when only IPv4 addresses are listed",
    );
    assert_passed(
        &only4,
        &v4(&[], OTHER4, PORT),
        Reason::PassOtherAddress,
        "other IPv4",
    );
}

/// A filter for a listen address takes its family only: an IPv4 proxy leaves IPv6 to
/// the port alone (and the reverse); 0.0.0.0 takes any IPv4 destination and no IPv6.
#[test]
fn a_listen_address_takes_its_own_family_only() {
    if !common::root_or_skip("a_listen_address_takes_its_own_family_only") {
        return;
    }
    let v4_only = load(&Filter::for_listen((US4, PORT).into()));
    assert_taken(&v4_only, &v4(&[], US4, PORT), "to the IPv4 address");
    for dst in [US6, OTHER6] {
        let what = format!("IPv6 to {dst} from an IPv4 proxy");
        assert_passed(
            &v4_only,
            &v6(&[], dst, PORT),
            Reason::PassOtherAddress,
            &what,
        );
    }
    let v6_only = load(&Filter::for_listen((US6, PORT).into()));
    assert_taken(&v6_only, &v6(&[], US6, PORT), "to the IPv6 address");
    let what = "IPv4 from an IPv6 proxy";
    assert_passed(
        &v6_only,
        &v4(&[], US4, PORT),
        Reason::PassOtherAddress,
        what,
    );
    let any4 = load(&Filter::for_listen((Ipv4Addr::UNSPECIFIED, PORT).into()));
    assert_taken(&any4, &v4(&[], OTHER4, PORT), "any IPv4 on 0.0.0.0");
    let what = "IPv6 on 0.0.0.0";
    assert_passed(&any4, &v6(&[], US6, PORT), Reason::PassOtherAddress, what);
    let any = load(&Filter::for_listen((Ipv6Addr::UNSPECIFIED, PORT).into()));
    assert_taken(&any, &v4(&[], OTHER4, PORT), "IPv4 on ::");
    assert_taken(&any, &v6(&[], OTHER6, PORT), "IPv6 on ::");
}

/// The queue index comes from the context: a frame seen on loopback's queue 0 is judged
/// the same; a queue the device does not have is refused by the kernel.
#[test]
fn the_ingress_context_is_accepted() {
    if !common::root_or_skip("the_ingress_context_is_accepted") {
        return;
    }
    let p = load(&filter());
    let out = p
        .test_run(&v4(&[], US4, PORT), Some(XdpMd::ingress(1, 0)))
        .unwrap();
    assert_eq!(out.retval, action::PASS);
    assert!(p
        .test_run(&v4(&[], US4, PORT), Some(XdpMd::ingress(1, 5)))
        .is_err());
    assert_eq!(p.verdicts().unwrap().get(Reason::RedirectNoSocket), 1);
}

#[test]
fn too_many_addresses_are_refused_before_loading() {
    let f = Filter {
        port: PORT,
        ipv4: vec![US4; MAX_ADDRESSES + 1],
        ipv6: vec![],
    };
    let e = RedirectProgram::load(&f, 1).unwrap_err();
    assert!(e.to_string().contains("at most 16 addresses"), "{e}");
}

/// A program reading past `data_end` is refused, and the error carries the verifier's log
/// with its last line in the message.
#[test]
fn the_verifier_log_comes_back_on_refusal() {
    if !common::root_or_skip("the_verifier_log_comes_back_on_refusal") {
        return;
    }
    let mut a = Asm::new();
    a.ldx(Size::W, Reg::R2, Reg::R1, 0);
    a.ldx(Size::B, Reg::R0, Reg::R2, 20); // no bounds check
    a.exit();
    let e = bpf::prog_load_xdp(&a.finish().unwrap(), "Apache-2.0", "bad").unwrap_err();
    match &e {
        Error::Verifier { log, .. } => assert!(log.contains("invalid access to packet"), "{log}"),
        other => panic!("expected a verifier error, got {other}"),
    }
    assert!(
        e.to_string()
            .ends_with("): R2 offset is outside of the packet"),
        "{e}"
    );
    assert_eq!(e.to_string().lines().count(), 1);
}

/// Without CAP_BPF/CAP_SYS_ADMIN (this thread only), loading fails with one line naming the
/// privilege.
#[test]
fn without_privilege_the_error_says_which() {
    if !common::root_or_skip("without_privilege_the_error_says_which") {
        return;
    }
    let e = std::thread::spawn(|| {
        use common::*;
        drop_caps_on_this_thread(&[CAP_BPF, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_PERFMON]);
        RedirectProgram::load(&filter(), 1).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(matches!(e, Error::NotPermitted { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "bpf(2) BPF_MAP_CREATE not permitted: needs CAP_BPF and CAP_NET_ADMIN (or root)"
    );
}

/// CAP_BPF and CAP_NET_ADMIN are enough: without CAP_SYS_ADMIN and CAP_PERFMON the
/// verifier runs its unprivileged pointer rules (no pointer leaks, Spectre sanitising),
/// and the program still loads and judges frames the same.
#[test]
fn cap_bpf_and_cap_net_admin_are_enough() {
    if !common::root_or_skip("cap_bpf_and_cap_net_admin_are_enough") {
        return;
    }
    let (retval, reason) = std::thread::spawn(|| {
        use common::*;
        drop_caps_on_this_thread(&[CAP_SYS_ADMIN, CAP_PERFMON]);
        let p = load(&filter());
        judge(&p, &v4(&[TPID_8021Q], US4, PORT))
    })
    .join()
    .unwrap();
    assert_eq!((retval, reason), (action::PASS, Reason::RedirectNoSocket));
}
