//! The four single-producer/single-consumer rings an XSK socket shares with the kernel.
//!
//! Each ring is an mmap of the socket: a producer index, a consumer index, a flags word
//! and a power-of-two array of entries. We own one index per ring (the producer of the
//! fill and TX rings, the consumer of the RX and completion rings) and read the other.
//! Entries are written before our index is published with a Release store, and the
//! kernel's index is read with Acquire before its entries, the same pairing as the
//! kernel's `smp_store_release`/`smp_load_acquire` in net/xdp/xsk_queue.h. Both indexes
//! are cached so a batch touches the shared cache lines once.
//!
//! Batches move addresses and descriptors only; nothing here allocates.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// A received or to-be-sent frame: `len` bytes at UMEM offset `addr` (`struct xdp_desc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Desc {
    /// Offset of the first byte in the UMEM.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// Flags (XDP_PKT_CONTD for multi-buffer frames; 0 here).
    pub options: u32,
}

/// Per-ring counters for the data plane's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Entries moved through the ring by us (produced or consumed).
    pub entries: u64,
    /// Producer rings: times a push found no free slot. Consumer rings: times a poll
    /// found nothing.
    pub full_or_empty: u64,
    /// Fill ring only: pushes that found the kernel had taken every frame given before
    /// (it may have had none for a while: starvation).
    pub starved: u64,
}

/// One mapped ring. `T` is u64 (fill, completion) or [`Desc`] (RX, TX).
#[derive(Debug)]
pub(crate) struct Ring<T> {
    area: NonNull<u8>,
    area_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    stats: RingStats,
    _own: PhantomData<T>,
}

// SAFETY: the mapping is owned by this value; the kernel is the only other party.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Wraps the ring mapped at `area` (`area_len` bytes) with the kernel's offsets.
    ///
    /// # Safety
    /// `area` must be the mapping of this ring with `size` entries (a power of two) laid
    /// out at the offsets given by XDP_MMAP_OFFSETS, and must not be unmapped elsewhere.
    pub(crate) unsafe fn new(
        area: NonNull<u8>,
        area_len: usize,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> Self {
        // SAFETY: the offsets come from the kernel for this mapping and are in bounds.
        let at = |o: u64| unsafe { NonNull::new_unchecked(area.as_ptr().add(o as usize)) };
        let producer: NonNull<AtomicU32> = at(off.producer).cast();
        let consumer: NonNull<AtomicU32> = at(off.consumer).cast();
        // SAFETY: the indexes are aligned u32s in the mapping, shared with the kernel.
        let (p, c) = unsafe {
            (
                producer.as_ref().load(Ordering::Acquire),
                consumer.as_ref().load(Ordering::Acquire),
            )
        };
        Ring {
            area,
            area_len,
            producer,
            consumer,
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
            cached_prod: p,
            cached_cons: c,
            stats: RingStats::default(),
            _own: PhantomData,
        }
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn load(&self, index: NonNull<AtomicU32>) -> u32 {
        // SAFETY: the index is an aligned u32 in our mapping; the kernel writes it too,
        // hence the atomic.
        unsafe { index.as_ref() }.load(Ordering::Acquire)
    }

    fn store(&self, index: NonNull<AtomicU32>, value: u32) {
        // SAFETY: as in `load`; we are the only writer of this index.
        unsafe { index.as_ref() }.store(value, Ordering::Release)
    }

    /// Whether the kernel asks to be woken (XDP_USE_NEED_WAKEUP) to process this ring.
    pub(crate) fn needs_wakeup(&self) -> bool {
        // Order our index store before the flag read (the kernel sets the flag, then
        // re-reads our index), so a wakeup is not missed.
        fence(Ordering::SeqCst);
        // SAFETY: an aligned u32 in our mapping.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    pub(crate) fn stats(&self) -> RingStats {
        self.stats
    }

    /// Producer: writes up to `max` entries taken from `next` (stopping at its first
    /// `None`) and publishes them. Returns how many.
    pub(crate) fn produce(&mut self, max: u32, mut next: impl FnMut() -> Option<T>) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < max {
            self.cached_cons = self.load(self.consumer);
            free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        if free == 0 {
            self.stats.full_or_empty += 1;
            return 0;
        }
        let mut n = 0;
        while n < free.min(max) {
            let Some(item) = next() else { break };
            let slot = (self.cached_prod.wrapping_add(n) & self.mask) as usize;
            // SAFETY: slot < size; the slot is free (between the consumer and producer
            // index in the producer's favour), so the kernel does not read it.
            unsafe { self.entries.as_ptr().add(slot).write(item) };
            n += 1;
        }
        if n > 0 {
            self.cached_prod = self.cached_prod.wrapping_add(n);
            self.store(self.producer, self.cached_prod);
            self.stats.entries += u64::from(n);
        }
        n
    }

    /// Producer: entries published and not yet consumed by the kernel.
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.load(self.consumer);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    pub(crate) fn note_starved(&mut self) {
        self.stats.starved += 1;
    }

    /// Consumer: up to `max` entries ready, as (first index, count). They stay in the
    /// ring until [`Ring::release`].
    pub(crate) fn peek(&mut self, max: u32) -> (u32, u32) {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready < max {
            self.cached_prod = self.load(self.producer);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        if ready == 0 {
            self.stats.full_or_empty += 1;
        }
        (self.cached_cons, ready.min(max))
    }

    /// Consumer: the entry at ring index `i` (from [`Ring::peek`]'s range).
    pub(crate) fn entry(&self, i: u32) -> T {
        // SAFETY: masked into the array; the entry was published by the kernel's Release
        // store of the producer index we loaded with Acquire, and stays until we release.
        unsafe { self.entries.as_ptr().add((i & self.mask) as usize).read() }
    }

    /// Consumer: gives `n` entries from the front back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        if n > 0 {
            self.cached_cons = self.cached_cons.wrapping_add(n);
            self.store(self.consumer, self.cached_cons);
            self.stats.entries += u64::from(n);
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the ring's own mapping, unmapped once.
        unsafe { libc::munmap(self.area.as_ptr().cast(), self.area_len) };
    }
}

/// Entries taken from a consumer ring. Iterating yields them oldest first; dropping the
/// batch gives the slots of those yielded back to the kernel (those not yet yielded stay
/// in the ring for the next batch).
pub struct Batch<'r, T: Copy> {
    ring: &'r mut Ring<T>,
    next: u32,
    end: u32,
    start: u32,
}

impl<'r, T: Copy> Batch<'r, T> {
    pub(crate) fn new(ring: &'r mut Ring<T>, max: u32) -> Self {
        let (start, n) = ring.peek(max);
        Batch {
            ring,
            next: start,
            end: start.wrapping_add(n),
            start,
        }
    }

    /// Entries in the batch not yet yielded.
    pub fn remaining(&self) -> u32 {
        self.end.wrapping_sub(self.next)
    }
}

impl<T: Copy> Iterator for Batch<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.next == self.end {
            return None;
        }
        let e = self.ring.entry(self.next);
        self.next = self.next.wrapping_add(1);
        Some(e)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining() as usize;
        (n, Some(n))
    }
}

impl<T: Copy> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        self.ring.release(self.next.wrapping_sub(self.start));
    }
}

/// The fill ring: frames given to the kernel to receive into.
#[derive(Debug)]
pub struct FillRing(pub(crate) Ring<u64>);

impl FillRing {
    /// Gives up to `max` frames taken from `next` (frame addresses); returns how many.
    pub fn push_with(&mut self, max: u32, next: impl FnMut() -> Option<u64>) -> u32 {
        if self.0.stats.entries > 0 && self.0.outstanding() == 0 {
            self.0.note_starved();
        }
        self.0.produce(max, next)
    }

    /// Gives the frames of `addrs` (as many as fit); returns how many.
    pub fn push_slice(&mut self, addrs: &[u64]) -> usize {
        let mut it = addrs.iter().copied();
        self.push_with(addrs.len() as u32, || it.next()) as usize
    }

    /// Frames given and not yet taken by the kernel.
    pub fn outstanding(&mut self) -> u32 {
        self.0.outstanding()
    }

    /// Whether the kernel needs a wakeup (`poll`/`recvfrom`) to take frames.
    pub fn needs_wakeup(&self) -> bool {
        self.0.needs_wakeup()
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

/// The RX ring: frames received.
#[derive(Debug)]
pub struct RxRing(pub(crate) Ring<Desc>);

impl RxRing {
    /// Up to `max` received frames; see [`Batch`].
    pub fn recv(&mut self, max: u32) -> Batch<'_, Desc> {
        Batch::new(&mut self.0, max)
    }

    /// Counters (`full_or_empty`: polls that found nothing).
    pub fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

/// The TX ring: frames to send.
#[derive(Debug)]
pub struct TxRing(pub(crate) Ring<Desc>);

impl TxRing {
    /// Queues up to `max` descriptors taken from `next`; returns how many. They leave
    /// when the kernel is woken ([`crate::XskSocket::wake_tx`]) and come back through the
    /// completion ring.
    pub fn push_with(&mut self, max: u32, next: impl FnMut() -> Option<Desc>) -> u32 {
        self.0.produce(max, next)
    }

    /// Queues the descriptors of `descs` (as many as fit); returns how many.
    pub fn push_slice(&mut self, descs: &[Desc]) -> usize {
        let mut it = descs.iter().copied();
        self.push_with(descs.len() as u32, || it.next()) as usize
    }

    /// Whether the kernel needs a wakeup (`sendto`) to send (always in copy mode).
    pub fn needs_wakeup(&self) -> bool {
        self.0.needs_wakeup()
    }

    /// Descriptors queued and not yet taken by the kernel.
    pub fn outstanding(&mut self) -> u32 {
        self.0.outstanding()
    }

    /// Counters (`full_or_empty`: pushes that found no free slot).
    pub fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

/// The completion ring: frames the kernel has sent, back to us.
#[derive(Debug)]
pub struct CompletionRing(pub(crate) Ring<u64>);

impl CompletionRing {
    /// Up to `max` sent frames' addresses; see [`Batch`].
    pub fn recv(&mut self, max: u32) -> Batch<'_, u64> {
        Batch::new(&mut self.0, max)
    }

    /// Counters (`entries`: TX completions).
    pub fn stats(&self) -> RingStats {
        self.0.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring over leaked plain memory, the test playing the kernel's side through the
    /// returned pointer (u64 words: producer at 0, consumer at 1, entries from 8).
    fn ring<T: Copy>(size: u32) -> (Ring<T>, *mut u64) {
        let len = 64 + size as usize * std::mem::size_of::<T>();
        let mem: &'static mut [u64] = Vec::leak(vec![0u64; len.div_ceil(8)]);
        let base = mem.as_mut_ptr();
        let area = NonNull::new(base.cast::<u8>()).unwrap();
        let off = libc::xdp_ring_offset {
            producer: 0,
            consumer: 8,
            flags: 16,
            desc: 64,
        };
        // SAFETY: the memory is leaked, so it outlives the ring; each test forgets the
        // ring so it does not munmap heap memory.
        (unsafe { Ring::new(area, 0, &off, size) }, base)
    }

    fn get(mem: *mut u64, word: usize) -> u64 {
        // SAFETY: inside the leaked ring memory.
        unsafe { mem.add(word).read_volatile() }
    }

    fn set(mem: *mut u64, word: usize, v: u64) {
        // SAFETY: inside the leaked ring memory.
        unsafe { mem.add(word).write_volatile(v) }
    }

    #[test]
    fn producer_fills_free_slots_and_counts_full() {
        let (mut r, mem) = ring::<u64>(4);
        let mut src = 10..;
        assert_eq!(r.produce(3, || src.next()), 3);
        assert_eq!(get(mem, 0), 3, "published");
        assert_eq!(r.produce(3, || src.next()), 1, "one slot left");
        assert_eq!(r.produce(1, || src.next()), 0);
        assert_eq!(r.stats().full_or_empty, 1);
        set(mem, 1, 2); // the kernel consumed two
        assert_eq!(r.produce(8, || src.next()), 2);
        assert_eq!(get(mem, 0), 6);
        let entries: Vec<u64> = (8..12).map(|w| get(mem, w)).collect();
        assert_eq!(entries, [14, 15, 12, 13], "wrapped around");
        assert_eq!(r.stats().entries, 6);
        std::mem::forget(r);
    }

    #[test]
    fn consumer_batches_release_what_was_yielded() {
        let (mut r, mem) = ring::<u64>(4);
        for i in 0..4 {
            set(mem, 8 + i, 100 + i as u64);
        }
        set(mem, 0, 3); // the kernel produced three
        {
            let mut b = Batch::new(&mut r, 8);
            assert_eq!(b.remaining(), 3);
            assert_eq!(b.next(), Some(100));
            assert_eq!(b.next(), Some(101));
        }
        assert_eq!(get(mem, 1), 2, "two released");
        assert_eq!(Batch::new(&mut r, 8).collect::<Vec<_>>(), [102]);
        assert_eq!(get(mem, 1), 3);
        assert_eq!(Batch::new(&mut r, 8).count(), 0);
        assert_eq!(r.stats().full_or_empty, 1, "one empty poll");
        std::mem::forget(r);
    }
}
