//! Many tasks waiting for one descriptor to take more: the runtime keeps one waiter per
//! descriptor, so one task waits on it and the others wait here to be woken with it.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::task::{Poll, Waker};

#[derive(Default)]
pub struct WriteWait {
    waiting: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl WriteWait {
    /// Waits until `ready` (the descriptor's own wait) resolves, running it in one task at
    /// a time; the others resolve when it does.
    pub async fn wait<F: Future<Output = io::Result<()>>>(&self, ready: F) -> io::Result<()> {
        if self.waiting.replace(true) {
            let mut registered = false;
            poll_fn(|cx| {
                if registered {
                    return Poll::Ready(());
                }
                registered = true;
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
            return Ok(());
        }
        // Whatever ends the wait (readiness, an error, the task dropped) hands it on.
        struct Handover<'a>(&'a WriteWait);
        impl Drop for Handover<'_> {
            fn drop(&mut self) {
                self.0.waiting.set(false);
                self.0.waiters.borrow_mut().drain(..).for_each(Waker::wake);
            }
        }
        let _handover = Handover(self);
        ready.await
    }
}
