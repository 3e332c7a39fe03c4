//! The UMEM: one shard's packet memory, shared with the kernel.
//!
//! An area of `frames` equal frames of `frame_size` bytes (2048 or 4096: the kernel's
//! aligned-chunk mode, where any address inside a frame names the frame). It is mapped
//! with 2 MiB huge pages where the system has them reserved (`vm.nr_hugepages`): a
//! 16 MiB UMEM then needs 8 TLB entries instead of 4096. Without reserved huge pages the
//! mapping falls back to normal pages, and [`Umem::hugepages`] says which one it got.
//!
//! Frames are named by their offset in the area (the `addr` of ring descriptors). Which
//! frames the application owns at a given moment is its business (see [`FramePool`]); the
//! UMEM only maps addresses to bytes.

use std::io;
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// `MAP_HUGE_2MB`: `21 << MAP_HUGE_SHIFT` (log2 of the page size in the flag's top bits).
const MAP_HUGE_2MB: libc::c_int = 21 << 26;
const HUGE_PAGE: usize = 2 << 20;

/// Whether to back the UMEM with huge pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugePages {
    /// 2 MiB pages where available, else normal pages.
    #[default]
    Auto,
    /// Normal pages only.
    Never,
    /// 2 MiB pages or fail.
    Require,
}

/// How to build a [`Umem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UmemConfig {
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Number of frames.
    pub frames: u32,
    /// Bytes the kernel leaves free before received data (besides its own 256).
    pub headroom: u32,
    /// Huge pages or not.
    pub hugepages: HugePages,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_size: 4096,
            frames: 4096,
            headroom: 0,
            hugepages: HugePages::Auto,
        }
    }
}

/// The packet memory of one XSK socket (or of several sharing it).
#[derive(Debug)]
pub struct Umem {
    area: NonNull<u8>,
    /// Bytes mapped (the frames, rounded up to a huge page when huge-backed).
    mapped: usize,
    frame_size: u32,
    frames: u32,
    headroom: u32,
    hugepages: bool,
}

// SAFETY: the area is plain memory owned by this value; moving it to another thread moves
// the only handle (the rings that refer into it belong to the same socket).
unsafe impl Send for Umem {}

impl Umem {
    /// Maps the area for `config`.
    pub fn new(config: &UmemConfig) -> Result<Self> {
        if config.frame_size != 2048 && config.frame_size != 4096 {
            return Err(Error::Invalid(format!(
                "UMEM frame size {} (2048 or 4096)",
                config.frame_size
            )));
        }
        if config.frames == 0 || config.headroom + 256 + 64 > config.frame_size {
            return Err(Error::Invalid(format!(
                "UMEM of {} frames with headroom {}",
                config.frames, config.headroom
            )));
        }
        let len = config.frame_size as usize * config.frames as usize;
        let huge_len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let mapped = match config.hugepages {
            HugePages::Never => None,
            HugePages::Auto => map(huge_len, libc::MAP_HUGETLB | MAP_HUGE_2MB).ok(),
            HugePages::Require => Some(
                map(huge_len, libc::MAP_HUGETLB | MAP_HUGE_2MB).map_err(|source| {
                    Error::Sys {
                        op: "mmap(MAP_HUGETLB) of the UMEM (are 2 MiB pages reserved in vm.nr_hugepages?)",
                        source,
                    }
                })?,
            ),
        };
        let (area, mapped, hugepages) = match mapped {
            Some(area) => (area, huge_len, true),
            None => {
                let area = map(len, 0).map_err(|source| Error::Sys {
                    op: "mmap of the UMEM",
                    source,
                })?;
                (area, len, false)
            }
        };
        Ok(Umem {
            area,
            mapped,
            frame_size: config.frame_size,
            frames: config.frames,
            headroom: config.headroom,
            hugepages,
        })
    }

    /// Bytes per frame.
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// Number of frames.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The configured headroom.
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// Bytes of frames (what the kernel pins and charges to RLIMIT_MEMLOCK).
    pub fn len(&self) -> usize {
        self.frame_size as usize * self.frames as usize
    }

    /// Never: a UMEM has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Whether the area is backed by 2 MiB pages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// The address of every frame, in order: to seed a [`FramePool`].
    pub fn frame_addrs(&self) -> impl DoubleEndedIterator<Item = u64> + use<> {
        let size = u64::from(self.frame_size);
        (0..u64::from(self.frames)).map(move |i| i * size)
    }

    /// The start of the frame `addr` falls in (a received descriptor's `addr` points past
    /// the headroom).
    pub fn frame_of(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.area.as_ptr()
    }

    fn check(&self, addr: u64, len: usize) -> Option<usize> {
        let at = usize::try_from(addr).ok()?;
        let end = at.checked_add(len)?;
        let frame = self.frame_of(addr) as usize;
        (end <= self.len() && end <= frame + self.frame_size as usize).then_some(at)
    }

    /// The `len` bytes at `addr`, or `None` when they leave the frame or the UMEM.
    ///
    /// # Safety
    /// The caller must own the frame: taken from the RX or completion ring and not yet
    /// given to the fill or TX ring (the kernel writes frames it owns at any time).
    pub unsafe fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let at = self.check(addr, len)?;
        // SAFETY: `check` keeps the range inside the mapping; the caller guarantees the
        // kernel does not write it meanwhile.
        Some(unsafe { std::slice::from_raw_parts(self.area.as_ptr().add(at), len) })
    }

    /// The `len` bytes at `addr`, writable, or `None` when they leave the frame or UMEM.
    ///
    /// # Safety
    /// As for [`Umem::frame`], and no other reference to the frame may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame_mut(&self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let at = self.check(addr, len)?;
        // SAFETY: as in `frame`; the caller guarantees exclusivity.
        Some(unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(at), len) })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the area was mapped with this length and is unmapped once; the socket
        // that registered it is closed first (it owns the rings and is dropped before).
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.mapped) };
    }
}

fn map(len: usize, extra: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address the kernel picks; the result is
    // checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))
}

/// A stack of free frame addresses, sized once: taking and giving back never allocates.
/// One per shard, single-threaded, like the UMEM it belongs to.
#[derive(Debug)]
pub struct FramePool {
    free: Vec<u64>,
}

impl FramePool {
    /// Every frame of `umem` free.
    pub fn new(umem: &Umem) -> Self {
        let mut free = Vec::with_capacity(umem.frames() as usize);
        free.extend(umem.frame_addrs().rev());
        FramePool { free }
    }

    /// A free frame, if any.
    pub fn take(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Gives a frame back. Giving more frames than the pool was built with is a bug in
    /// the caller; the pool never grows past its capacity (the extra address is dropped).
    pub fn give(&mut self, addr: u64) {
        if self.free.len() < self.free.capacity() {
            self.free.push(addr);
        }
    }

    /// Free frames.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// No free frame.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_addressed_by_offset_and_bounded() {
        let u = Umem::new(&UmemConfig {
            frames: 4,
            hugepages: HugePages::Never,
            ..Default::default()
        })
        .unwrap();
        assert!(!u.hugepages());
        assert_eq!(u.frame_addrs().collect::<Vec<_>>(), [0, 4096, 8192, 12288]);
        assert_eq!(u.frame_of(4096 + 256 + 7), 4096);
        // SAFETY: no socket: the test owns every frame.
        unsafe {
            u.frame_mut(4096 + 256, 3).unwrap().copy_from_slice(b"abc");
            assert_eq!(u.frame(4096 + 256, 3).unwrap(), b"abc");
            assert!(
                u.frame(4096 + 4000, 200).is_none(),
                "crosses into the next frame"
            );
            assert!(u.frame(16384, 1).is_none(), "past the UMEM");
        }
        let mut pool = FramePool::new(&u);
        assert_eq!(pool.take(), Some(0));
        assert_eq!(pool.len(), 3);
        pool.give(0);
        pool.give(0); // one too many: dropped, the pool does not grow
        assert_eq!(pool.len(), 4);
    }

    #[test]
    fn bad_frame_sizes_are_refused() {
        for frame_size in [0, 1000, 3000, 8192] {
            let c = UmemConfig {
                frame_size,
                ..Default::default()
            };
            assert!(
                matches!(Umem::new(&c), Err(Error::Invalid(_))),
                "{frame_size}"
            );
        }
    }

    /// Auto takes huge pages when the system has enough reserved, else normal pages.
    #[test]
    fn hugepages_auto_falls_back() {
        let free = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().find_map(|l| {
                    l.strip_prefix("HugePages_Free:")
                        .map(|v| v.trim().parse::<u64>())
                })
            })
            .and_then(|v| v.ok())
            .unwrap_or(0);
        let u = Umem::new(&UmemConfig {
            frames: 512,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(u.hugepages(), free >= 1, "HugePages_Free {free}");
    }
}
