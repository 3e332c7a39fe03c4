//! The handle through which a policy change ends one connection's work.
//!
//! It is owned by the connection (and dropped with it), never a descriptor number that the
//! kernel may have handed to someone else meanwhile. Revoking wakes the connection's task,
//! which stops; the sockets it owns see the flag as they are dropped and close with a reset
//! (see the stream module). The same handle later says "reset this h2/QUIC stream" or
//! "drop this UDP flow" to whoever owns one.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

#[derive(Default)]
struct State {
    revoked: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

#[derive(Clone, Default)]
pub struct RevokeHandle(Rc<State>);

impl RevokeHandle {
    pub fn revoke(&self) {
        self.0.revoked.set(true);
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.0.revoked.get()
    }

    /// Resolves once [`RevokeHandle::revoke`] has been called (by one waiter at a time).
    pub async fn revoked(&self) {
        poll_fn(|cx| {
            if self.is_revoked() {
                Poll::Ready(())
            } else {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn revoking_wakes_the_waiter_and_every_clone_sees_it() {
        let handle = RevokeHandle::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(handle.revoked());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let clone = handle.clone();
        assert!(!clone.is_revoked());
        clone.revoke();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(handle.is_revoked());
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
