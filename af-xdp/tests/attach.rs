//! Attaching the redirect program to a veth in a network namespace the test creates:
//! native mode takes on veth, a second attach is refused naming the holder, dropping the
//! link detaches, a process killed with SIGKILL leaves nothing attached, and a driver's
//! refusal of native mode falls back to generic.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use af_xdp::netlink::{self, Attached, AttachedMode};
use af_xdp::{attach, AttachMode, Error, Filter, Interface, RedirectProgram, XdpMode};
use common::netns::{Netns, Pair, A_IF, B_IF};

fn program() -> RedirectProgram {
    RedirectProgram::load(&Filter::any_address(4433), 2).unwrap()
}

fn attached(ifname: &str) -> Option<Attached> {
    netlink::xdp_attached(Interface::by_name(ifname).unwrap().index).unwrap()
}

/// Whether `ifname` has no program within 5 s: the kernel frees a closed link's
/// attachment after the close returns (seen late on a loaded machine).
fn detached_soon(ifname: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while attached(ifname).is_some() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

#[test]
fn native_on_veth_second_attach_refused_detached_on_drop() {
    if !common::root_or_skip("native_on_veth_second_attach_refused_detached_on_drop") {
        return;
    }
    let pair = Pair::new("att");
    let _in_a = pair.a.enter();

    let e = attach(program().fd(), "eth9", AttachMode::Auto).unwrap_err();
    assert_eq!(e.to_string(), "interface eth9 does not exist");

    let first = program();
    let link = attach(first.fd(), A_IF, AttachMode::Auto).unwrap();
    assert_eq!(link.mode(), XdpMode::Native, "veth has native XDP");
    let first_id = first.id().unwrap();
    assert_eq!(
        attached(A_IF),
        Some(Attached {
            prog_id: first_id,
            mode: AttachedMode::Driver
        })
    );
    assert!(link.id().unwrap() > 0);

    let second = program();
    for mode in [AttachMode::Auto, AttachMode::Native, AttachMode::Generic] {
        let e = attach(second.fd(), A_IF, mode).unwrap_err();
        assert!(
            matches!(e, Error::AlreadyAttached { .. }),
            "{mode:?}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "an XDP program is already attached to {A_IF} (prog id {first_id}): not replaced"
            ),
        );
    }
    // The same program twice is refused as well: one link per interface.
    assert!(matches!(
        attach(first.fd(), A_IF, AttachMode::Auto),
        Err(Error::AlreadyAttached { .. })
    ));

    drop(link);
    assert!(detached_soon(A_IF), "dropping the link detaches");

    let again = attach(second.fd(), A_IF, AttachMode::Auto).unwrap();
    assert_eq!(again.mode(), XdpMode::Native);
    // The link holds the program: dropping our program descriptor keeps it attached.
    let second_id = second.id().unwrap();
    drop(second);
    assert_eq!(attached(A_IF).map(|a| a.prog_id), Some(second_id));
    drop(again);
    assert!(detached_soon(A_IF));
}

#[test]
fn generic_mode_when_asked_and_when_native_is_refused() {
    if !common::root_or_skip("generic_mode_when_asked_and_when_native_is_refused") {
        return;
    }
    let pair = Pair::new("gen");
    let _in_a = pair.a.enter();
    let p = program();
    let link = attach(p.fd(), A_IF, AttachMode::Generic).unwrap();
    assert_eq!(link.mode(), XdpMode::Generic);
    assert_eq!(attached(A_IF).map(|a| a.mode), Some(AttachedMode::Generic));
    drop(link);

    // veth refuses native XDP (without multi-buffer) when the peer's MTU does not fit a
    // page: native alone fails with one line naming the interface, auto falls back.
    pair.b.ip(&["link", "set", B_IF, "mtu", "9000"]);
    let e = attach(p.fd(), A_IF, AttachMode::Native).unwrap_err();
    assert!(matches!(e, Error::XdpRefused { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "XDP refused by the driver of {A_IF} in native mode: "
        )),
        "{msg}"
    );
    assert!(msg.contains("MTU too large"), "{msg}");
    assert_eq!(msg.lines().count(), 1);
    let link = attach(p.fd(), A_IF, AttachMode::Auto).unwrap();
    assert_eq!(link.mode(), XdpMode::Generic, "auto falls back to generic");
}

const CHILD_ENV: &str = "ZCXDP_CRASH_CHILD_NETNS";

/// Not a test of its own: the process the crash test starts and kills. It attaches in the
/// namespace it is given, says so, and waits to be killed (at most 60 s).
#[test]
fn crash_child_holds_a_link_until_killed() {
    let Ok(netns) = std::env::var(CHILD_ENV) else {
        return;
    };
    let ns = Netns { name: netns };
    let _in = ns.enter();
    let p = program();
    let _link = attach(p.fd(), A_IF, AttachMode::Auto).unwrap();
    println!("ATTACHED {}", p.id().unwrap());
    std::thread::sleep(Duration::from_secs(60));
    std::mem::forget(ns); // never reached in the crash test; the parent owns the namespace
}

/// The crash-safety the link gives: a process holding the link dies by SIGKILL (no drop,
/// no cleanup), and the kernel detaches the program when it closes the descriptors.
#[test]
fn the_program_detaches_when_its_process_is_killed() {
    if !common::root_or_skip("the_program_detaches_when_its_process_is_killed") {
        return;
    }
    let pair = Pair::new("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_holds_a_link_until_killed",
            "--nocapture",
        ])
        .env(CHILD_ENV, &pair.a.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    let child_prog = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("ATTACHED ")
                .map(|id| id.parse::<u32>().unwrap())
        })
        .expect("the child attached");

    let _in_a = pair.a.enter();
    assert_eq!(attached(A_IF).map(|a| a.prog_id), Some(child_prog));
    let ours = program();
    let e = attach(ours.fd(), A_IF, AttachMode::Auto).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "an XDP program is already attached to {A_IF} (prog id {child_prog}): not replaced"
        )
    );

    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while attached(A_IF).is_some() {
        assert!(
            Instant::now() < deadline,
            "still attached 5 s after the holder died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let link = attach(ours.fd(), A_IF, AttachMode::Auto).unwrap();
    assert_eq!(link.mode(), XdpMode::Native);
}
