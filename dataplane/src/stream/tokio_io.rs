//! A [`Stream`] as tokio's `AsyncRead`/`AsyncWrite`, for protocol libraries written against
//! those traits (the `h2` crate). They need no tokio runtime: readiness comes from the
//! shard's runtime, through a wait future kept between polls (the runtime's readiness is
//! an async call, not a poll function).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Stream;
use crate::sys;

type Wait = Pin<Box<dyn Future<Output = io::Result<()>>>>;

pub struct TokioIo {
    stream: Rc<Stream>,
    /// Bytes read from the stream before it was handed over (a sniffed preface), served
    /// first.
    early: Vec<u8>,
    early_at: usize,
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    /// Set once any byte came from the stream (early bytes included).
    received: Rc<std::cell::Cell<bool>>,
    shutdown: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl TokioIo {
    pub fn new(stream: Rc<Stream>, early: Vec<u8>) -> TokioIo {
        TokioIo {
            received: Rc::new(std::cell::Cell::new(!early.is_empty())),
            stream,
            early,
            early_at: 0,
            read_wait: None,
            write_wait: None,
            shutdown: None,
        }
    }

    /// Tells, after the adapter was handed to a library, whether the peer sent anything.
    pub fn received(&self) -> Rc<std::cell::Cell<bool>> {
        self.received.clone()
    }

    /// Polls the stream's readiness for reading (or writing), keeping the wait between polls.
    fn poll_ready(&mut self, cx: &mut Context<'_>, write: bool) -> Poll<io::Result<()>> {
        let slot = if write {
            &mut self.write_wait
        } else {
            &mut self.read_wait
        };
        let wait = slot.get_or_insert_with(|| {
            let stream = self.stream.clone();
            // Reads wait on the session's clock (a multiplexed connection holds it busy
            // while streams are open, so its driver decides on idleness, not the client's
            // PINGs); a write also ends when the peer took nothing for the idle timeout.
            Box::pin(async move {
                if write {
                    stream.readiness_op(true).await
                } else {
                    stream.readiness(false).await
                }
            })
        });
        let result = ready!(wait.as_mut().poll(cx));
        *slot = None;
        match result {
            Err(e) if !sys::is_spurious(&e) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for TokioIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.early_at < this.early.len() {
            let n = buf.remaining().min(this.early.len() - this.early_at);
            buf.put_slice(&this.early[this.early_at..this.early_at + n]);
            this.early_at += n;
            if this.early_at == this.early.len() {
                this.early = Vec::new();
                this.early_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    if n > 0 {
                        this.received.set(true);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if sys::would_block(&e) => ready!(this.poll_ready(cx, false))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TokioIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match this.stream.try_write(data) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if sys::would_block(&e) => ready!(this.poll_ready(cx, true))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.stream.try_flush() {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if sys::would_block(&e) => ready!(this.poll_ready(cx, true))?,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let stream = this.stream.clone();
        let shutdown = this
            .shutdown
            .get_or_insert_with(|| Box::pin(async move { stream.shutdown_write().await }));
        ready!(shutdown.as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}
