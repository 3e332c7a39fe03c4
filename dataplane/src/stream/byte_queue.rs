//! A first-in first-out run of bytes on a buffer borrowed from a per-thread pool: what TLS
//! holds between the socket and rustls (ciphertext read but not processed, ciphertext not
//! yet sent, plaintext decrypted but not yet taken). An empty queue gives its buffer back,
//! so an idle TLS connection holds none; a busy one reuses the same few buffers instead of
//! allocating (and zeroing) one per burst. Thread-per-core: the pool is the core's.

use std::cell::RefCell;

/// The pooled buffer size: room for the socket's bursts and more than one whole record.
pub const SIZE: usize = 64 * 1024;
/// Buffers a thread keeps for reuse (4 MiB).
const KEEP: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Vec<u8> {
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; SIZE])
}

fn give(buf: Vec<u8>) {
    // A buffer that grew past the size (an outsized handshake flight) is not kept.
    if buf.len() == SIZE {
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEEP {
                pool.push(buf);
            }
        });
    }
}

/// Bytes `buf[start..end]`, in order; `buf` is empty while the queue is.
#[derive(Default)]
pub struct ByteQueue {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ByteQueue {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front; the buffer goes back to the pool once none are left.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            give(std::mem::take(&mut self.buf));
        }
    }

    /// Free room after the bytes, at least `at_least` of it (moving the bytes to the front,
    /// or growing the buffer, when there is less); fill some and [`ByteQueue::commit`] it.
    pub fn spare(&mut self, at_least: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = take();
        }
        if self.buf.len() - self.end < at_least && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < at_least {
            self.buf.resize(self.end + at_least, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Appends `n` bytes written into [`ByteQueue::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
        if self.is_empty() {
            self.consume(0);
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.spare(data.len())[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// Moves up to `dst.len()` bytes from the front into `dst`.
    pub fn pop_into(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len());
        dst[..n].copy_from_slice(&self.bytes()[..n]);
        self.consume(n);
        n
    }
}

impl Drop for ByteQueue {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_come_out_in_order_across_compaction_and_growth() {
        let mut q = ByteQueue::default();
        let data: Vec<u8> = (0..SIZE + 100).map(|i| i as u8).collect();
        q.push(&data[..SIZE - 10]);
        let mut out = vec![0; SIZE * 2];
        let mut got = q.pop_into(&mut out[..1000]);
        // Needs compaction (room after the bytes: 10) and then growth.
        q.push(&data[SIZE - 10..]);
        assert_eq!(q.len(), data.len() - 1000);
        got += q.pop_into(&mut out[got..]);
        assert_eq!(&out[..got], &data[..]);
        assert!(q.is_empty());
        assert!(q.buf.is_empty(), "an empty queue holds no buffer");
    }

    #[test]
    fn an_empty_queue_returns_its_buffer_for_reuse() {
        let mut q = ByteQueue::default();
        q.push(b"abc");
        let ptr = q.buf.as_ptr();
        q.consume(3);
        assert!(q.buf.is_empty());
        let mut r = ByteQueue::default();
        r.push(b"d");
        assert_eq!(r.buf.as_ptr(), ptr, "the pooled buffer is taken again");
        let spare = r.spare(1).len();
        r.commit(0);
        assert_eq!(spare, SIZE - 1);
        assert_eq!(r.bytes(), b"d");
    }
}
