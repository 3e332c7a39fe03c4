//! Per-core pool of copy buffers for the user-space relay path, so a copy burst does not
//! allocate and zero 64 KiB each time a socket becomes readable.

pub struct BufPool {
    free: Vec<Box<[u8]>>,
    max_free: usize,
    size: usize,
}

impl BufPool {
    pub fn new(max_free: usize, size: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            max_free,
            size,
        }
    }

    pub fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    /// Keeps the buffer for reuse unless the pool already holds `max_free`.
    pub fn give(&mut self, buf: Box<[u8]>) {
        if self.free.len() < self.max_free && buf.len() == self.size {
            self.free.push(buf);
        }
    }

    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::BufPool;

    #[test]
    fn reuses_up_to_the_bound() {
        let mut pool = BufPool::new(1, 4096);
        let a = pool.take();
        let b = pool.take();
        assert_eq!((a.len(), b.len()), (4096, 4096));
        let a_ptr = a.as_ptr();
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.pooled(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr);
        pool.give(vec![0u8; 10].into_boxed_slice());
        assert_eq!(pool.pooled(), 0, "a buffer of another size is not kept");
    }
}
