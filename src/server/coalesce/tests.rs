use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

use super::*;

/// Records every write it is given; answers `Pending` to the next `stall` writes.
#[derive(Default)]
struct Wire {
    writes: Vec<Vec<u8>>,
    flushes: usize,
    stall: usize,
    shut: bool,
}

impl AsyncWrite for Wire {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stall > 0 {
            self.stall -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Like TLS with a full send buffer: takes at most 40,000 bytes at once.
        let n = buf.len().min(40_000);
        self.writes.push(buf[..n].to_vec());
        Poll::Ready(Ok(n))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shut = true;
        Poll::Ready(Ok(()))
    }
}

/// The peer has nothing to say: a read waits.
impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

struct Count(AtomicUsize);
impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn waker() -> (Arc<Count>, Waker) {
    let c = Arc::new(Count(AtomicUsize::new(0)));
    (c.clone(), Waker::from(c))
}

/// What h2 writes for one DATA frame: a 9-byte header chained to the payload.
fn frame(i: usize) -> (Vec<u8>, Vec<u8>) {
    let head = vec![i as u8; 9];
    let payload = (0..RECORD).map(|j| (i + j) as u8).collect();
    (head, payload)
}

/// Writes until all of `bufs` is taken, as tokio's `poll_write_buf` would.
fn write_all(c: &mut Coalesce<Wire>, cx: &mut Context<'_>, mut bufs: Vec<&[u8]>) {
    while !bufs.is_empty() {
        let slices: Vec<io::IoSlice> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        match Pin::new(&mut *c).poll_write_vectored(cx, &slices) {
            Poll::Ready(Ok(mut n)) => {
                assert!(n > 0);
                while n > 0 {
                    let k = n.min(bufs[0].len());
                    bufs[0] = &bufs[0][k..];
                    n -= k;
                    if bufs[0].is_empty() {
                        bufs.remove(0);
                    }
                }
            }
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => {}
        }
    }
}

fn flush(c: &mut Coalesce<Wire>, cx: &mut Context<'_>) {
    while Pin::new(&mut *c).poll_flush(cx).is_pending() {}
}

#[test]
fn frames_become_whole_records_and_every_byte_arrives_in_order() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    let mut expected = Vec::new();
    for i in 0..20 {
        let (head, payload) = frame(i);
        expected.extend_from_slice(&head);
        expected.extend_from_slice(&payload);
        write_all(&mut c, &mut cx, vec![&head, &payload]);
        // h2 flushes after every frame.
        flush(&mut c, &mut cx);
    }
    // The end of h2's turn: a flush with nothing written since sends the rest.
    flush(&mut c, &mut cx);
    let wire = &c.inner;
    let got: Vec<u8> = wire.writes.concat();
    assert_eq!(got, expected);
    // Fewer, larger writes, most of them ending on a record boundary (the wire takes
    // 40,000 bytes at most, so some stop mid-record and the next completes it).
    assert!(
        wire.writes.len() < 20,
        "{} writes for 20 frames",
        wire.writes.len()
    );
    let ends = wire.writes.iter().scan(0, |at, w| {
        *at += w.len();
        Some(*at)
    });
    let on_record = ends.filter(|at| at % RECORD == 0).count();
    assert!(on_record >= 4, "only {on_record} writes end on a record");
}

#[test]
fn the_first_flush_after_a_write_wakes_and_the_second_sends() {
    let (count, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    write_all(&mut c, &mut cx, vec![b"HEADERS"]);
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        1,
        "a deferred flush wakes its task"
    );
    assert!(c.inner.writes.is_empty());
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(c.inner.writes.concat(), b"HEADERS");
    assert_eq!(c.inner.flushes, 1);
    // Nothing gathered: a flush goes straight through.
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(c.inner.flushes, 2);
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
}

#[test]
fn a_connection_writing_on_every_turn_is_still_flushed() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    // A small answer per turn, each turn ending with a flush: the buffer never fills.
    let mut turns = 0;
    while c.inner.writes.is_empty() {
        write_all(&mut c, &mut cx, vec![b"a small answer"]);
        assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
        turns += 1;
        assert!(turns <= MAX_DEFERRED as usize + 1, "held for {turns} turns");
    }
    assert_eq!(c.inner.writes.concat(), b"a small answer".repeat(turns));
}

#[test]
fn a_stalled_wire_holds_writes_back_without_losing_any() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    let (head, payload) = frame(1);
    for _ in 0..4 {
        write_all(&mut c, &mut cx, vec![&payload]);
    }
    assert!(c.inner.writes.is_empty());
    // The buffer is full: the next write must wait for the wire.
    c.inner.stall = 3;
    let slices = [io::IoSlice::new(&head)];
    for _ in 0..3 {
        assert!(Pin::new(&mut c)
            .poll_write_vectored(&mut cx, &slices)
            .is_pending());
    }
    write_all(&mut c, &mut cx, vec![&head]);
    let mut expected = payload.repeat(4);
    expected.extend_from_slice(&head);
    assert!(Pin::new(&mut c).poll_shutdown(&mut cx).is_ready());
    assert!(c.inner.shut);
    assert_eq!(c.inner.writes.concat(), expected);
}

/// A later h2 that batches: it writes a turn's frames, flushes once at the end of the
/// turn, and on a turn with nothing to send does not flush at all, only reads. The bytes
/// a Ready flush answered for leave on that next turn's read, not whenever something else
/// happens to be written.
#[test]
fn one_flush_per_turn_and_none_on_idle_turns_holds_nothing() {
    let (wakes, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    let (head, payload) = frame(5);
    write_all(&mut c, &mut cx, vec![b"HEADERS"]);
    write_all(&mut c, &mut cx, vec![&head, &payload]);
    // End of the turn: one flush, deferred (it wakes the task).
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    // The woken turn has nothing to write: it only reads, and waits for the peer.
    let mut space = [0u8; 64];
    let mut read = ReadBuf::new(&mut space);
    assert!(Pin::new(&mut c).poll_read(&mut cx, &mut read).is_pending());
    let mut expected = b"HEADERS".to_vec();
    expected.extend_from_slice(&head);
    expected.extend_from_slice(&payload);
    assert_eq!(c.inner.writes.concat(), expected, "held past the flush");
    assert_eq!(c.inner.flushes, 1, "and the wire flushed");
    // Nothing owed any more: a read is only a read.
    let writes = c.inner.writes.len();
    assert!(Pin::new(&mut c).poll_read(&mut cx, &mut read).is_pending());
    assert_eq!(c.inner.writes.len(), writes);
}

/// A writer that flushes once and then waits for the peer, on a wire that is full for a
/// while: the read does not wait for the write, and the bytes go out on a later read.
#[test]
fn owed_bytes_wait_for_a_full_wire_without_blocking_reads() {
    let (_, w) = waker();
    let mut cx = Context::from_waker(&w);
    let mut c = Coalesce::new(Wire::default());
    write_all(&mut c, &mut cx, vec![b"an answer"]);
    assert!(Pin::new(&mut c).poll_flush(&mut cx).is_ready());
    c.inner.stall = 1;
    let mut space = [0u8; 8];
    let mut read = ReadBuf::new(&mut space);
    assert!(Pin::new(&mut c).poll_read(&mut cx, &mut read).is_pending());
    assert!(c.inner.writes.is_empty());
    assert!(Pin::new(&mut c).poll_read(&mut cx, &mut read).is_pending());
    assert_eq!(c.inner.writes.concat(), b"an answer");
}
