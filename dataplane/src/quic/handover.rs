//! Handing QUIC datagrams to the core that owns their connection, for when the kernel does
//! not steer them (the reuseport program could not be attached): a shard that reads a
//! datagram whose destination connection ID names another shard pushes it onto that
//! shard's bounded lock-free queue and signals its eventfd; the owner drains the queue into
//! its own endpoint. No lock is taken on either side, and a full queue drops the datagram
//! (QUIC recovers it as a loss) rather than making the reader wait.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;

use crate::rt;

/// Datagrams waiting for one shard before more are dropped.
const QUEUE: usize = 4096;

/// A datagram read on one core for a connection of another.
pub struct Handed {
    pub from: SocketAddr,
    /// The local address it came to, where the packet IO saw it.
    pub to: Option<std::net::IpAddr>,
    /// How it came (a bypass backend's next hop), for the owner to answer through.
    pub hop: Option<crate::packet_io::Hop>,
    pub data: BytesMut,
    pub received: Instant,
}

struct Inbox {
    queue: ArrayQueue<Handed>,
    wake: OwnedFd,
}

/// Every shard's inbox; shared by all shards.
pub struct Handover {
    inboxes: Box<[Inbox]>,
}

impl Handover {
    pub fn new(shards: usize) -> io::Result<Handover> {
        let inboxes = (0..shards)
            .map(|_| {
                // SAFETY: eventfd returns a new descriptor we own, or -1.
                let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Inbox {
                    queue: ArrayQueue::new(QUEUE),
                    // SAFETY: `fd` was just created and is owned by nothing else.
                    wake: unsafe { OwnedFd::from_raw_fd(fd) },
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Handover { inboxes })
    }

    /// Queues `handed` for shard `to` and wakes it; `false` if its queue is full (or there
    /// is no such shard) and the datagram was dropped.
    pub fn send(&self, to: usize, handed: Handed) -> bool {
        let Some(inbox) = self.inboxes.get(to) else {
            return false;
        };
        if inbox.queue.push(handed).is_err() {
            return false;
        }
        let one = 1u64;
        // SAFETY: an 8-byte write of a u64 to an eventfd we own. A failure means the
        // counter is saturated, which still leaves the owner woken.
        unsafe { libc::write(inbox.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        true
    }

    /// What shard `shard` waits on, made on its own thread.
    pub fn waiter(&self, shard: usize) -> io::Result<rt::EventWait> {
        let inbox = self
            .inboxes
            .get(shard)
            .ok_or_else(|| io::Error::other("no such shard"))?;
        rt::EventWait::new(inbox.wake.as_fd())
    }

    /// The next datagram handed to `shard`.
    pub fn take(&self, shard: usize) -> Option<Handed> {
        self.inboxes.get(shard)?.queue.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_their_shard_in_order_and_a_full_queue_drops() {
        let handover = Handover::new(2).unwrap();
        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let handed = |b: u8| Handed {
            from,
            to: None,
            hop: None,
            data: BytesMut::from(&[b][..]),
            received: Instant::now(),
        };
        assert!(handover.send(1, handed(1)));
        assert!(handover.send(1, handed(2)));
        assert!(!handover.send(2, handed(3)), "no shard 2");
        assert!(handover.take(0).is_none());
        assert_eq!(&handover.take(1).unwrap().data[..], [1]);
        assert_eq!(&handover.take(1).unwrap().data[..], [2]);
        for i in 0..QUEUE {
            assert!(handover.send(0, handed(i as u8)));
        }
        assert!(!handover.send(0, handed(0)), "full");
    }
}
