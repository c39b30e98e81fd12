//! Full TLS records for HTTP/2.
//!
//! The h2 crate writes each DATA frame as its own write (a 9-byte header chained to a 16 KiB
//! payload) and flushes after every frame. Over TLS that makes two records per frame (16,384
//! bytes and then the 9 left over, each with its own AEAD pass and 22 bytes of overhead) and
//! a `writev` per frame: 65,536 system calls and 131,072 records for a 1 GiB blob, which the
//! client then has to decrypt too. [`Coalesce`] sits between h2 and the TLS stream: it
//! gathers writes into one buffer and hands TLS whole 16 KiB records, up to four at a time.
//!
//! Flushes are deferred: h2 flushes after every frame while it still has more to write in
//! the same turn, so a `poll_flush` that follows new bytes only wakes the task and answers
//! `Ready`. What was owed then leaves at the first of: the next `poll_flush` with no write
//! since (h2 flushes at the end of every turn), [`MAX_DEFERRED`] deferrals in a row (a
//! connection busy enough to write on every turn), the next `poll_read` (the self-wake
//! brings the connection's task back, and an HTTP/2 connection reads its socket on every
//! turn: it must, to see the peer's frames), or shutdown. So the bytes leave within one
//! turn of the task, however h2 spaces its flushes; the tests drive the writer the ways a
//! later h2 might (a flush per frame, one flush per turn and none on idle turns, a flush and
//! then only reads).
//!
//! Why not flush on every `poll_flush`: measured with benches/ab_h2.py (5 interleaved
//! rounds, 1 GiB over h2, even with bodies cut so each frame fills one record), that is a
//! write system call per 16 KiB frame (69,100 per GiB against 18,926), 1.51 against 1.00
//! CPU s per GiB, and 24% less throughput (518 against 681 MiB/s).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext one TLS record carries (RFC 8446 §5.1).
const RECORD: usize = 16 * 1024;
/// Written out once this much is gathered: four records per system call.
const CAPACITY: usize = 4 * RECORD;
/// Flushes deferred in a row at most; the next one writes.
const MAX_DEFERRED: u8 = 8;

pub struct Coalesce<T> {
    inner: T,
    /// Bytes accepted from h2 and not yet written to `inner`, from `sent` on.
    buf: Vec<u8>,
    sent: usize,
    /// A write came in since the last `poll_flush`.
    fresh: bool,
    /// Flushes deferred since bytes last went out.
    deferred: u8,
    /// A flush answered `Ready` for bytes still in `buf`.
    owed: bool,
}

impl<T> Coalesce<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(CAPACITY),
            sent: 0,
            fresh: false,
            deferred: 0,
            owed: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Writes `buf[sent..]` to `inner` up to `end`; `Ready` once all of it is written.
    fn drain(&mut self, cx: &mut Context<'_>, end: usize) -> Poll<io::Result<()>> {
        while self.sent < end {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..end])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.drain(..self.sent);
        self.sent = 0;
        self.deferred = 0;
        self.owed = false;
        Poll::Ready(Ok(()))
    }

    /// Writes out the whole records gathered, keeping a partial one for the next write.
    fn drain_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let end = self.buf.len() - self.buf.len() % RECORD;
        self.drain(cx, end.max(self.sent))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.owed {
            // Bytes a flush already answered for go out before the task waits for the
            // peer. A full socket leaves them for the next call; this task is woken when
            // it can write.
            let end = this.buf.len();
            match this.drain(cx, end) {
                Poll::Ready(Ok(())) => {
                    if let Poll::Ready(Err(e)) = Pin::new(&mut this.inner).poll_flush(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= CAPACITY {
            std::task::ready!(this.drain_records(cx))?;
        }
        let mut taken = 0;
        for b in bufs {
            let room = CAPACITY - this.buf.len();
            if room == 0 {
                break;
            }
            let n = b.len().min(room);
            this.buf.extend_from_slice(&b[..n]);
            taken += n;
        }
        if taken > 0 {
            this.fresh = true;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.sent < this.buf.len() {
            if std::mem::take(&mut this.fresh) && this.deferred < MAX_DEFERRED {
                // h2 may have more frames this turn: answer now, finish on a later flush
                // or read (see the module doc).
                this.deferred += 1;
                this.owed = true;
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
            let end = this.buf.len();
            std::task::ready!(this.drain(cx, end))?;
        }
        this.fresh = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let end = this.buf.len();
        std::task::ready!(this.drain(cx, end))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
