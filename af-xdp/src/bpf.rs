//! The bpf(2) commands this crate needs, called through `syscall(SYS_bpf)`.
//!
//! No libbpf: each command's attribute block is a `repr(C)` prefix of the kernel's
//! `union bpf_attr` holding only the fields used (the kernel zero-fills the rest of its
//! copy). Objects come back as [`OwnedFd`]s, so maps, programs and links are released by
//! drop, and by the kernel when the process dies.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};
use crate::insn::Insn;

/// bpf(2) command numbers (enum bpf_cmd).
mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const PROG_LOAD: u32 = 5;
    pub const PROG_TEST_RUN: u32 = 10;
    pub const OBJ_GET_INFO_BY_FD: u32 = 15;
    pub const LINK_CREATE: u32 = 28;
}

/// Map types used here (enum bpf_map_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MapType {
    /// One value per index.
    Array = 2,
    /// One value per index and CPU: counters without atomics or cache-line bouncing.
    PercpuArray = 6,
    /// AF_XDP sockets by RX queue index, the target of `bpf_redirect_map`.
    Xskmap = 17,
}

/// Program type XDP (enum bpf_prog_type).
pub const PROG_TYPE_XDP: u32 = 6;
/// Attach type BPF_XDP (enum bpf_attach_type), for BPF_LINK_CREATE.
pub const ATTACH_TYPE_XDP: u32 = 37;
/// `BPF_ANY` for map updates: create or replace.
pub const BPF_ANY: u64 = 0;

/// Helper numbers (enum bpf_func_id).
pub mod helper {
    /// `void *bpf_map_lookup_elem(map, key)`.
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `long bpf_redirect_map(map, key, flags)`; not GPL-only.
    pub const REDIRECT_MAP: i32 = 51;
    /// `long bpf_xdp_get_buff_len(xdp_md)`: the frame's length (kernel ≥ 5.18).
    pub const XDP_GET_BUFF_LEN: i32 = 188;
    /// `long bpf_xdp_load_bytes(xdp_md, offset, buf, len)` (kernel ≥ 5.18).
    pub const XDP_LOAD_BYTES: i32 = 189;
}

/// Calls bpf(2), retrying on EINTR.
///
/// The kernel refuses a block whose bytes past the command's last field are not zero, so
/// every block spells out its padding as fields (`Default` zeroes them).
///
/// # Safety
/// `attr` must be the attribute block of `cmd`, and every pointer stored in it must point
/// at memory valid (and writable where the kernel writes) for the call.
unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    loop {
        // SAFETY: the caller guarantees `attr` and the buffers it points at; `size_of::<T>`
        // is the size of the block the kernel may read and write.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr as *mut T,
                size_of::<T>() as libc::c_long,
            )
        };
        if rc >= 0 {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes ownership of a descriptor bpf(2) just returned.
fn owned(rc: libc::c_long) -> OwnedFd {
    // SAFETY: a successful bpf(2) command that creates an object returns a new descriptor
    // that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// A kernel object name (maps, programs): at most 15 bytes of [A-Za-z0-9_.], NUL-padded.
fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out
        .iter_mut()
        .zip(
            name.bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.'),
        )
        .take(15)
    {
        *o = b;
    }
    out
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// Creates a map; `name` shows in `bpftool map`.
pub fn map_create(
    kind: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: kind as u32,
        key_size,
        value_size,
        max_entries,
        map_name: obj_name(name),
        ..Default::default()
    };
    // SAFETY: MAP_CREATE's block holds no pointers.
    match unsafe { sys_bpf(cmd::MAP_CREATE, &mut attr) } {
        Ok(fd) => Ok(owned(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && kind == MapType::Xskmap => {
            Err(Error::Unsupported {
                what: "XSKMAP (AF_XDP)",
                source: e,
            })
        }
        Err(e) => Err(Error::bpf("BPF_MAP_CREATE", e)),
    }
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Sets `key` to `value` (BPF_ANY: create or replace). The slices must have the map's key
/// and value sizes (for per-CPU maps, the value size rounded to 8 times the possible CPUs).
pub fn map_update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags,
        ..Default::default()
    };
    // SAFETY: key and value point at live slices the kernel only reads.
    unsafe { sys_bpf(cmd::MAP_UPDATE_ELEM, &mut attr) }
        .map(drop)
        .map_err(|e| Error::bpf("BPF_MAP_UPDATE_ELEM", e))
}

/// Reads `key` into `value`; `Ok(false)` when the key has no value (ENOENT).
pub fn map_lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key is read, value written, both live for the call and of the map's sizes
    // (the caller sized them).
    match unsafe { sys_bpf(cmd::MAP_LOOKUP_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::bpf("BPF_MAP_LOOKUP_ELEM", e)),
    }
}

/// Deletes `key`; `Ok(false)` when it had no value.
pub fn map_delete(map: BorrowedFd<'_>, key: &[u8]) -> Result<bool> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: key points at a live slice the kernel only reads.
    match unsafe { sys_bpf(cmd::MAP_DELETE_ELEM, &mut attr) } {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(Error::bpf("BPF_MAP_DELETE_ELEM", e)),
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Verifier log size for a refused program: plenty for a few hundred instructions.
const LOG_SIZE: usize = 1 << 20;

/// Loads an XDP program (expected attach type BPF_XDP, for BPF_LINK_CREATE). `license`
/// matters only for GPL-only helpers; the redirect program uses none. On refusal the
/// program is loaded once more with the verifier log on, and the log is returned in
/// [`Error::Verifier`].
pub fn prog_load_xdp(insns: &[Insn], license: &str, name: &str) -> Result<OwnedFd> {
    let license = CString::new(license).map_err(|_| Error::Invalid("license has a NUL".into()))?;
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: obj_name(name),
            expected_attach_type: ATTACH_TYPE_XDP,
            ..Default::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        let mut tries = 0;
        loop {
            // SAFETY: insns, license and the log buffer outlive the call; the log buffer is
            // writable for log_size bytes.
            match unsafe { sys_bpf(cmd::PROG_LOAD, &mut attr) } {
                // The verifier can give up on a transient condition (libbpf retries too).
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < 5 => tries += 1,
                other => return other,
            }
        }
    };
    match load(None) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(Error::bpf("BPF_PROG_LOAD", e)),
        Err(first) => {
            let mut buf = vec![0u8; LOG_SIZE];
            match load(Some(&mut buf)) {
                // Loaded with the log on: whatever failed the first time passed now.
                Ok(fd) => Ok(owned(fd)),
                Err(_) => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    let log = String::from_utf8_lossy(&buf[..end]).into_owned();
                    if log.is_empty() {
                        Err(Error::bpf("BPF_PROG_LOAD", first))
                    } else {
                        Err(Error::Verifier { source: first, log })
                    }
                }
            }
        }
    }
}

/// The context of an XDP test run (`struct xdp_md`): which interface and RX queue the
/// frame seems to arrive on. `data`/`data_end` are filled in by [`prog_test_run_xdp`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    /// ifindex of the interface (0: none; then `rx_queue_index` must be 0).
    pub ingress_ifindex: u32,
    /// RX queue (below the interface's real RX queue count).
    pub rx_queue_index: u32,
    egress_ifindex: u32,
}

impl XdpMd {
    /// A frame arriving on `ifindex`, queue `queue`.
    pub fn ingress(ifindex: u32, queue: u32) -> Self {
        XdpMd {
            ingress_ifindex: ifindex,
            rx_queue_index: queue,
            ..Default::default()
        }
    }
}

/// What a test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// The program's return value (an XDP action: 1 drop, 2 pass, 4 redirect...).
    pub retval: u32,
    /// Bytes of frame written to `data_out`.
    pub data_size_out: u32,
    /// Average run time in nanoseconds.
    pub duration_ns: u32,
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the last field.
    _pad: u32,
}

/// Runs an XDP program once on `frame` (BPF_PROG_TEST_RUN), optionally as if received on
/// `ctx`'s interface and queue; the frame as the program left it goes to `data_out`. The
/// kernel refuses frames shorter than an Ethernet header (14 bytes) with EINVAL.
pub fn prog_test_run_xdp(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ctx: Option<XdpMd>,
    data_out: Option<&mut [u8]>,
) -> Result<TestOutcome> {
    let mut md = ctx.map(|mut md| {
        md.data = 0;
        md.data_end = frame.len() as u32;
        md
    });
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    if let Some(out) = data_out {
        attr.data_out = out.as_mut_ptr() as u64;
        attr.data_size_out = out.len() as u32;
    }
    if let Some(md) = md.as_mut() {
        attr.ctx_in = md as *mut XdpMd as u64;
        attr.ctx_size_in = size_of::<XdpMd>() as u32;
    }
    // SAFETY: frame and ctx are read, data_out written up to data_size_out; all outlive
    // the call.
    unsafe { sys_bpf(cmd::PROG_TEST_RUN, &mut attr) }
        .map_err(|e| Error::bpf("BPF_PROG_TEST_RUN", e))?;
    Ok(TestOutcome {
        retval: attr.retval,
        data_size_out: attr.data_size_out,
        duration_ns: attr.duration,
    })
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches an XDP program to an interface through a BPF link (kernel ≥ 5.9); `flags` is
/// the mode (XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE). The raw errno is returned so the
/// caller can name the interface and fall back between modes.
pub fn link_create_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: ATTACH_TYPE_XDP,
        flags,
    };
    // SAFETY: LINK_CREATE's block as filled holds no pointers.
    unsafe { sys_bpf(cmd::LINK_CREATE, &mut attr) }.map(owned)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The first fields of `struct bpf_prog_info`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    kind: u32,
    id: u32,
    tag: [u8; 8],
}

/// The first fields of `struct bpf_link_info`.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    kind: u32,
    id: u32,
    prog_id: u32,
}

fn obj_info<T>(fd: BorrowedFd<'_>, info: &mut T) -> Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: `info` is writable for info_len bytes; the kernel writes at most that many.
    unsafe { sys_bpf(cmd::OBJ_GET_INFO_BY_FD, &mut attr) }
        .map(drop)
        .map_err(|e| Error::bpf("BPF_OBJ_GET_INFO_BY_FD", e))
}

/// The kernel's id of a loaded program (what `bpftool prog` and `ip link` show).
pub fn prog_id(prog: BorrowedFd<'_>) -> Result<u32> {
    let mut info = ProgInfo::default();
    obj_info(prog, &mut info)?;
    Ok(info.id)
}

/// The ids of a link and of the program it holds.
pub fn link_ids(link: BorrowedFd<'_>) -> Result<(u32, u32)> {
    let mut info = LinkInfo::default();
    obj_info(link, &mut info)?;
    Ok((info.id, info.prog_id))
}

/// Number of possible CPUs (`/sys/devices/system/cpu/possible`): the number of values a
/// per-CPU map holds per key.
pub fn possible_cpus() -> Result<usize> {
    let text =
        std::fs::read_to_string("/sys/devices/system/cpu/possible").map_err(|e| Error::Sys {
            op: "reading /sys/devices/system/cpu/possible",
            source: e,
        })?;
    let bad = || Error::Invalid(format!("cannot parse possible CPUs {:?}", text.trim()));
    let mut max = 0usize;
    for part in text.trim().split(',') {
        let last = part.rsplit('-').next().ok_or_else(bad)?;
        max = max.max(last.parse::<usize>().map_err(|_| bad())?);
    }
    Ok(max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_blocks_have_the_kernel_layout() {
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert_eq!(size_of::<ElemAttr>(), 32);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(size_of::<XdpMd>(), 24);
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
        assert_eq!(size_of::<Insn>(), 8);
    }

    #[test]
    fn object_names_are_cut_and_cleaned() {
        assert_eq!(&obj_name("zcp_xsks")[..9], b"zcp_xsks\0");
        assert_eq!(obj_name("a-very-long-name-indeed")[15], 0);
        assert_eq!(&obj_name("a-b")[..3], b"ab\0");
    }

    #[test]
    fn possible_cpus_is_at_least_one() {
        assert!(possible_cpus().unwrap() >= 1);
    }
}
