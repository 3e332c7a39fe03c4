//! Batched datagram IO: several datagrams, from or to any peers, in one `recvmmsg` or
//! `sendmmsg` call. At the packet rates UDP relays see, the syscall is the cost; a batch
//! divides it by up to [`BATCH`].

use std::io;
use std::mem::zeroed;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

use super::{received, Cmsg, Received};

/// Datagrams one batched call may carry.
pub const BATCH: usize = 8;
/// Bytes a slot takes by default: a whole GRO train.
const SLOT: usize = 65_535;

/// Buffers for reading several datagrams, from any peers, in one `recvmmsg` call (each may
/// itself be a GRO train of one peer's datagrams). Each slot may keep `headroom` bytes in
/// front of what is read, for a header to be written there before the datagram is sent on
/// without a copy.
pub struct RecvBatch {
    bufs: Vec<u8>,
    slot: usize,
    headroom: usize,
    addrs: Vec<SockAddrStorage>,
    cmsgs: Vec<Cmsg>,
    got: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new(SLOT, 0)
    }
}

impl RecvBatch {
    /// [`BATCH`] slots of `slot` bytes, each read `headroom` bytes in.
    pub fn new(slot: usize, headroom: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![0; BATCH * (headroom + slot)],
            slot,
            headroom,
            addrs: (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect(),
            cmsgs: (0..BATCH).map(|_| Cmsg([0; 64])).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }

    fn stride(&self) -> usize {
        self.headroom + self.slot
    }

    /// Reads what is queued, up to [`BATCH`] datagrams, without waiting (`WouldBlock`:
    /// nothing). Returns how many; [`RecvBatch::get`] gives each.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.got.clear();
        let (stride, headroom, slot) = (self.stride(), self.headroom, self.slot);
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.bufs[i * stride + headroom..].as_mut_ptr().cast(),
            iov_len: slot,
        });
        // SAFETY: mmsghdr is a plain C struct; zero is a valid start.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, m) in msgs.iter_mut().enumerate() {
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut SockAddrStorage).cast();
            m.msg_hdr.msg_namelen = self.addrs[i].size_of();
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = self.cmsgs[i].0.len();
        }
        // SAFETY: every pointer in `msgs` refers to a live buffer of this batch (or a local
        // array) of the stated size, for the length of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = crate::sys::check(n as isize)?;
        for (i, m) in msgs.iter().take(n).enumerate() {
            // SAFETY: the kernel filled message `i` and its name points at `addrs[i]`.
            let r = unsafe { received(&m.msg_hdr, &self.addrs[i], m.msg_len as usize) }?;
            self.got.push(r);
        }
        Ok(self.got.len())
    }

    /// Datagram `i` of the last read and its bytes.
    pub fn get(&self, i: usize) -> Option<(Received, &[u8])> {
        let r = *self.got.get(i)?;
        let at = i * self.stride() + self.headroom;
        Some((r, &self.bufs[at..at + r.len.min(self.slot)]))
    }

    /// Datagram `i` of the last read with the headroom in front of it: its bytes start at
    /// `headroom`.
    pub fn get_with_room(&self, i: usize) -> Option<(Received, &[u8])> {
        let r = *self.got.get(i)?;
        let at = i * self.stride();
        Some((r, &self.bufs[at..at + self.headroom + r.len.min(self.slot)]))
    }

    /// [`RecvBatch::get_with_room`], writable (to put a header in the headroom).
    pub fn get_mut(&mut self, i: usize) -> Option<(Received, &mut [u8])> {
        let r = *self.got.get(i)?;
        let at = i * self.stride();
        let end = at + self.headroom + r.len.min(self.slot);
        Some((r, &mut self.bufs[at..end]))
    }
}

/// Datagrams gathered for one `sendmmsg` call: destinations and the byte ranges to send,
/// borrowed from the buffers they were read into.
pub struct SendBatch<'a> {
    to: [Option<SockAddr>; BATCH],
    data: [&'a [u8]; BATCH],
    len: usize,
}

impl Default for SendBatch<'_> {
    fn default() -> Self {
        SendBatch {
            to: Default::default(),
            data: [&[]; BATCH],
            len: 0,
        }
    }
}

impl<'a> SendBatch<'a> {
    /// Adds a datagram; false when the batch is full (send it first).
    pub fn push(&mut self, to: SocketAddr, data: &'a [u8]) -> bool {
        if self.len == BATCH {
            return false;
        }
        self.to[self.len] = Some(SockAddr::from(to));
        self.data[self.len] = data;
        self.len += 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The destination and bytes of datagram `i`.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &'a [u8])> {
        let to = self.to.get(i)?.as_ref()?.as_socket()?;
        Some((to, self.data[i]))
    }

    /// Sends the datagrams from the first not yet sent, without waiting: `Ok(n)` says how
    /// many the kernel took (the rest wait for the socket to be writable); an error is
    /// about the first of them, which the caller may skip (`skip_one`) and go on.
    pub fn send(&self, fd: RawFd, from: usize) -> io::Result<usize> {
        let count = self.len.saturating_sub(from);
        if count == 0 {
            return Ok(0);
        }
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.data[i].as_ptr() as *mut libc::c_void,
            iov_len: self.data[i].len(),
        });
        // SAFETY: mmsghdr is a plain C struct; zero is a valid start.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (k, m) in msgs.iter_mut().take(count).enumerate() {
            let i = from + k;
            let Some(to) = &self.to[i] else {
                return Err(io::Error::other("a datagram without a destination"));
            };
            m.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_namelen = to.len();
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `msgs` refers to live memory of the stated size (the
        // batch's addresses and the borrowed data) for the length of the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), count as u32, libc::MSG_DONTWAIT) };
        crate::sys::check(n as isize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::bind;
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// One batched read returns datagrams of several peers, each with its source and
    /// bytes.
    #[test]
    fn a_batched_read_returns_several_peers_datagrams() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let peers: Vec<_> = (0..5)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, p) in peers.iter().enumerate() {
            p.send_to(&[i as u8; 100], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = RecvBatch::default();
        let n = batch.recv(rx.as_raw_fd()).unwrap();
        assert_eq!(n, 5, "all five queued datagrams in one call");
        for i in 0..n {
            let (r, data) = batch.get(i).unwrap();
            let sender = peers
                .iter()
                .position(|p| p.local_addr().unwrap() == r.from)
                .expect("a known peer");
            assert_eq!(data, &[sender as u8; 100][..]);
        }
        assert!(batch.get(n).is_none());
    }
    /// Headroom stays in front of each datagram read, and a batch of sends to several
    /// destinations leaves in one call, each datagram whole.
    #[test]
    fn headroom_is_kept_and_a_send_batch_reaches_every_destination() {
        let (rx, _) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap().as_socket().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"payload", to).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = RecvBatch::new(2048, 22);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
        let (r, slot) = batch.get_mut(0).unwrap();
        assert_eq!((r.len, slot.len()), (7, 29));
        assert_eq!(&slot[22..], b"payload");

        let sinks: Vec<_> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let bodies: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 100 + i]).collect();
        let mut out = SendBatch::default();
        for (s, b) in sinks.iter().zip(&bodies) {
            assert!(out.push(s.local_addr().unwrap(), b));
        }
        assert_eq!(out.send(rx.as_raw_fd(), 0).unwrap(), 3);
        for (s, b) in sinks.iter().zip(&bodies) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 256];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b[..], to));
        }
        assert_eq!(out.send(rx.as_raw_fd(), 3).unwrap(), 0);
    }
}
