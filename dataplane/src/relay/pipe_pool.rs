//! A bounded per-shard pool of pipes for splice(2).
//!
//! A tunnel direction takes a pipe only when its source is readable and gives it back as soon
//! as the pipe is empty, so idle tunnels hold no pipe (and no pipe pages: the per-user
//! `pipe-user-pages-soft` limit would otherwise be hit at about a thousand tunnels).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes spliced in and not yet spliced out.
    pub buffered: usize,
    pub capacity: usize,
}

impl Pipe {
    fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid two-element array for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // Growing can fail past the per-user pipe page limit; the default size still works.
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        // SAFETY: as above.
        let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Pipe {
            read,
            write,
            buffered: 0,
            capacity: usize::try_from(capacity).unwrap_or(4096).max(4096),
        })
    }

    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }
}

pub struct PipePool {
    free: Vec<Pipe>,
    max_free: usize,
    pipe_size: usize,
    in_use: usize,
}

impl PipePool {
    pub fn new(max_free: usize, pipe_size: usize) -> PipePool {
        PipePool {
            free: Vec::with_capacity(max_free),
            max_free,
            pipe_size,
            in_use: 0,
        }
    }

    pub fn take(&mut self) -> io::Result<Pipe> {
        let pipe = match self.free.pop() {
            Some(p) => p,
            None => Pipe::new(self.pipe_size)?,
        };
        self.in_use += 1;
        Ok(pipe)
    }

    /// Returns a pipe. One still holding bytes (its peer failed mid-way) is closed instead.
    pub fn give(&mut self, pipe: Pipe) {
        self.in_use -= 1;
        if pipe.buffered == 0 && self.free.len() < self.max_free {
            self.free.push(pipe);
        }
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_and_bounds() {
        let mut pool = PipePool::new(2, 128 * 1024);
        let a = pool.take().unwrap();
        assert!(a.capacity >= 64 * 1024);
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert_eq!(pool.in_use(), 3);
        let (a_fd, b_fd) = (a.read_fd(), b.read_fd());
        pool.give(a);
        pool.give(b);
        // The pool is full: the third pipe is closed, not kept.
        pool.give(c);
        assert_eq!((pool.in_use(), pool.pooled()), (0, 2));
        // Reuse is last in, first out.
        let mut dirty = pool.take().unwrap();
        assert_eq!(dirty.read_fd(), b_fd);
        // A pipe still holding bytes is closed instead of pooled.
        dirty.buffered = 10;
        pool.give(dirty);
        assert_eq!(pool.pooled(), 1);
        assert_eq!(pool.take().unwrap().read_fd(), a_fd);
    }
}
