//! A stream plus the bytes read from it that no parser has consumed yet.

use std::io;

use super::Stream;

/// How much a read asks for when the buffer has less room than this.
const READ_CHUNK: usize = 8192;

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The peer closed before a whole message arrived.
    Eof,
    Io(io::Error),
    /// The bytes do not form a valid message.
    Protocol(E),
    /// More than the allowed bytes without a complete message.
    TooLarge,
}

pub struct BufStream {
    stream: Stream,
    buf: Vec<u8>,
}

impl BufStream {
    pub fn new(stream: Stream) -> BufStream {
        BufStream {
            stream,
            buf: Vec::new(),
        }
    }

    /// The bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Belongs to another session from now on (see [`Stream::rebind`]).
    pub fn rebind(&mut self, handle: &crate::revoke::RevokeHandle, deadlines: &super::Deadlines) {
        self.stream.rebind(handle, deadlines);
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Reads once more and appends; returns how many bytes came (0 at end of stream). The
    /// buffer is reused across reads: it grows only when a message needs more room.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        let len = self.buf.len();
        let n = self.stream.read_into(self.buf.spare_capacity_mut()).await?;
        // SAFETY: recv initialised the first n bytes of the spare capacity.
        unsafe { self.buf.set_len(len + n) };
        Ok(n)
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Removes and returns up to `n` buffered bytes.
    pub fn take_front(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.buf.len());
        self.buf.drain(..n).collect()
    }

    /// Parses one message, reading as needed, and consumes its bytes.
    pub async fn read_message<T, E>(
        &mut self,
        max: usize,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> Result<T, ReadError<E>> {
        loop {
            match parse(&self.buf) {
                Ok(Some((value, n))) => {
                    self.consume(n);
                    return Ok(value);
                }
                Ok(None) if self.buf.len() >= max => return Err(ReadError::TooLarge),
                Ok(None) => match self.read_more().await {
                    Ok(0) => return Err(ReadError::Eof),
                    Ok(_) => {}
                    Err(e) => return Err(ReadError::Io(e)),
                },
                Err(e) => return Err(ReadError::Protocol(e)),
            }
        }
    }

    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Splits into the stream and the unconsumed bytes (to be forwarded before relaying).
    pub fn into_parts(self) -> (Stream, Vec<u8>) {
        (self.stream, self.buf)
    }
}
