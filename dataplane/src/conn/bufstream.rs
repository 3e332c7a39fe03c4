//! A socket plus the bytes read from it that no parser has consumed yet.

use std::io;
use std::os::fd::AsRawFd;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::relay::sys;

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
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl BufStream {
    /// Wraps a socket, switching it to non-blocking mode for the relay's direct syscalls.
    pub fn new(stream: TcpStream) -> BufStream {
        prepare(&stream);
        BufStream {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads once more and appends; returns how many bytes came (0 at end of stream).
    pub async fn read_more(&mut self) -> io::Result<usize> {
        loop {
            let chunk = Vec::with_capacity(READ_CHUNK);
            let (res, chunk) = self.stream.read(chunk).await;
            match res {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || sys::is_spurious(&e) => {
                    self.stream.readable(false).await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Parses one message, reading as needed, and consumes its bytes.
    pub async fn read_message<T, E>(
        &mut self,
        max: usize,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
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

    pub async fn write_all(&mut self, data: Vec<u8>) -> io::Result<()> {
        write_all(&mut self.stream, data).await
    }

    /// Hands over the unconsumed bytes (to be forwarded before relaying).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Puts a socket in the mode the relay needs: non-blocking (for inline splice) and no Nagle
/// delay (a proxy must not add latency to small writes).
pub fn prepare(stream: &TcpStream) {
    let _ = sys::set_nonblocking(stream.as_raw_fd());
    let _ = stream.set_nodelay(true);
}

pub async fn write_all(stream: &mut TcpStream, mut data: Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        let (res, back) = stream.write(data.slice(sent..)).await;
        data = back.into_inner();
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || sys::is_spurious(&e) => {
                stream.writable(false).await?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
