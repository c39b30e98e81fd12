//! Requests with both `Content-Length` and `Transfer-Encoding`, seen where hyper cannot
//! show them.
//!
//! RFC 9112 section 6.3 lets a server refuse such a request (it is how request smuggling
//! starts) and makes it close the connection after answering. nginx (>= 1.21.1) answers
//! 400. hyper reads it as chunked, turns keep-alive off, and drops `Content-Length` from the
//! headers it hands over (it skips the header when it comes after `Transfer-Encoding`,
//! and removes it when it came before), so the request a handler gets looks like any
//! chunked request. That is safe as long as hyper keeps doing exactly that; regate
//! refuses the request itself rather than depend on it.
//!
//! [`Framed`] sits between the HTTP/1 connection and hyper and follows the request
//! stream as hyper reads it: each head parsed with httparse (hyper's own parser, same
//! defaults), then its body skipped by the same framing rules (chunked, or
//! `Content-Length`), so it knows where the next head starts. A head with both headers is
//! recorded by its position on the connection, method and target; the service asks
//! [`Conflicts::take`] for each request and answers 400. Anything it cannot follow
//! (HTTP/2's preface, an upgrade, a head hyper refuses anyway) stops the tracking for
//! that connection: hyper's own behaviour is the fallback, as before.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// hyper's limits (server.rs): a head longer than this is refused by hyper (431).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// A chunk-size line or a trailer line longer than this: hyper refuses it too.
const MAX_LINE: usize = 8 * 1024;

/// The requests of one connection that came with both headers, by position.
#[derive(Default)]
pub struct Conflicts {
    any: AtomicBool,
    heads: Mutex<Vec<(u64, String, String)>>,
}

impl Conflicts {
    /// Whether request number `index` (from 0) on this connection, `method target`, came
    /// with both `Content-Length` and `Transfer-Encoding`.
    pub fn take(&self, index: u64, method: &str, target: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut heads) = self.heads.lock() else {
            return false;
        };
        let before = heads.len();
        heads.retain(|(i, m, t)| !(*i == index && m == method && t == target));
        heads.len() != before
    }

    fn record(&self, index: u64, method: &str, target: &str) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.push((index, method.to_owned(), target.to_owned()));
            self.any.store(true, Ordering::Release);
        }
    }
}

enum State {
    /// Reading a request head (bytes so far in `Tracker::line`).
    Head,
    /// Skipping a `Content-Length` body.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    /// Reading trailer lines up to the empty one.
    Trailers,
    /// Not following this connection (HTTP/2, an upgrade, a head hyper refuses).
    Lost,
}

/// Follows the request stream of one HTTP/1 connection.
struct Tracker {
    state: State,
    /// A partial head, chunk-size line or trailer line.
    line: Vec<u8>,
    /// Heads parsed so far: the position of the next request.
    heads: u64,
    conflicts: Arc<Conflicts>,
}

impl Tracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Lost => return,
                State::Head => self.head(bytes),
                State::Fixed(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = match left - n {
                        0 => State::Head,
                        left => State::Fixed(left),
                    };
                    &bytes[n as usize..]
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = State::ChunkData(left - n);
                    if left - n == 0 {
                        // The CRLF after the data is read as an (empty) line.
                        self.state = State::ChunkSize;
                        self.line.push(b'-');
                    }
                    &bytes[n as usize..]
                }
                State::ChunkSize | State::Trailers => self.line_of(bytes),
            };
        }
    }

    /// A head, from `bytes` and what came before; returns what follows it.
    fn head<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let before = self.line.len();
        let parsed = if before == 0 {
            parse_head(bytes)
        } else {
            self.line.extend_from_slice(bytes);
            parse_head(&self.line)
        };
        let head = match parsed {
            Parsed::Partial if before + bytes.len() < MAX_HEAD => {
                if before == 0 {
                    self.line.extend_from_slice(bytes);
                }
                return &[];
            }
            Parsed::Head(head) => head,
            Parsed::Partial | Parsed::Unfollowable => {
                self.state = State::Lost;
                self.line = Vec::new();
                return &[];
            }
        };
        if let Some((method, target)) = &head.conflict {
            self.conflicts.record(self.heads, method, target);
        }
        self.heads += 1;
        self.state = head.body;
        self.line.clear();
        if self.line.capacity() > 4096 {
            self.line = Vec::new();
        }
        // The head ended `head.len - before` bytes into this read.
        &bytes[head.len.saturating_sub(before)..]
    }

    /// A chunk-size or trailer line; returns what follows it.
    fn line_of<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let Some(end) = bytes.iter().position(|b| *b == b'\n') else {
            self.line.extend_from_slice(bytes);
            if self.line.len() > MAX_LINE {
                self.state = State::Lost;
            }
            return &[];
        };
        self.line.extend_from_slice(&bytes[..end]);
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        self.state = match self.state {
            // The CRLF that ends chunk data (marked with '-' by `feed`).
            State::ChunkSize if line == b"-" => State::ChunkSize,
            State::ChunkSize => {
                let size = line
                    .split(|b| *b == b';')
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok())
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                match size {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Lost,
                }
            }
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Lost,
        };
        &bytes[end + 1..]
    }
}

enum Parsed {
    Partial,
    Head(Head),
    /// HTTP/2's preface, or a head hyper refuses.
    Unfollowable,
}

struct Head {
    /// Its length in bytes.
    len: usize,
    /// Method and target, when it has both `Content-Length` and `Transfer-Encoding`.
    conflict: Option<(String, String)>,
    /// What follows it.
    body: State,
}

fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        // HTTP/2 with prior knowledge is no HTTP/1 head.
        Ok(httparse::Status::Partial) if !buf.starts_with(b"PRI * HTTP/2.0") => {
            return Parsed::Partial
        }
        _ => return Parsed::Unfollowable,
    };
    let (mut cl, mut te, mut chunked, mut length) = (false, false, false, None);
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl = true;
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // As hyper: the last line decides, and chunked must be its last coding.
            chunked = std::str::from_utf8(h.value).ok().is_some_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    let conflict = (cl && te).then(|| {
        (
            req.method.unwrap_or_default().to_owned(),
            req.path.unwrap_or_default().to_owned(),
        )
    });
    let body = match (te, chunked, length) {
        // hyper refuses these, or stops speaking HTTP/1 on this connection.
        _ if upgrade => State::Lost,
        (true, false, _) => State::Lost,
        (true, true, _) => State::ChunkSize,
        (false, _, Some(0)) => State::Head,
        (false, _, Some(n)) => State::Fixed(n),
        (false, _, None) if cl => State::Lost,
        (false, _, None) => State::Head,
    };
    Parsed::Head(Head {
        len,
        conflict,
        body,
    })
}

/// An HTTP/1 connection's IO, with the request stream followed on the way to hyper.
pub struct Framed<T> {
    inner: T,
    tracker: Tracker,
}

impl<T> Framed<T> {
    pub fn new(inner: T) -> (Self, Arc<Conflicts>) {
        let conflicts = Arc::new(Conflicts::default());
        let tracker = Tracker {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            conflicts: conflicts.clone(),
        };
        (Framed { inner, tracker }, conflicts)
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Between requests: lets go of a partial line's buffer (park.rs).
    pub fn shrink(&mut self) {
        if self.tracker.line.is_empty() {
            self.tracker.line = Vec::new();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Framed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.tracker.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

super::write_through!(Framed, inner);

#[cfg(test)]
mod tests {
    use super::*;

    fn follow(chunks: &[&[u8]]) -> (Tracker, Arc<Conflicts>) {
        let conflicts = Arc::new(Conflicts::default());
        let mut t = Tracker {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            conflicts: conflicts.clone(),
        };
        for c in chunks {
            t.feed(c);
        }
        (t, conflicts)
    }

    const STREAM: &[u8] = b"PATCH /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
15;ext=1\r\nContent-Length: 1\r\n\r\n\r\n0\r\nTrailer: y\r\n\r\n\
PUT /b HTTP/1.1\r\nContent-Length: 24\r\n\r\nTransfer-Encoding: x\r\n\r\n\
POST /c HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
GET /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n";

    #[test]
    fn follows_heads_and_bodies_in_any_split() {
        // Whole, byte by byte, and in every two-part split: the same heads, and only the
        // third and fourth (not the look-alikes inside bodies) have both headers.
        let mut splits: Vec<Vec<&[u8]>> = vec![vec![STREAM], STREAM.chunks(1).collect()];
        for i in 1..STREAM.len() {
            splits.push(vec![&STREAM[..i], &STREAM[i..]]);
        }
        for chunks in splits {
            let (t, c) = follow(&chunks);
            assert_eq!(t.heads, 4, "{chunks:?}");
            assert!(matches!(
                t.state,
                State::ChunkSize | State::Trailers | State::Head
            ));
            assert!(!c.take(0, "PATCH", "/a"));
            assert!(!c.take(1, "PUT", "/b"));
            assert!(c.take(2, "POST", "/c"), "{chunks:?}");
            assert!(c.take(3, "GET", "/d"));
            assert!(!c.take(3, "GET", "/d"), "taken once");
        }
    }

    #[test]
    fn what_it_cannot_follow_it_leaves_to_hyper() {
        let (t, _) = follow(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert!(matches!(t.state, State::Lost));
        let (t, _) = follow(&[b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"]);
        assert!(matches!(t.state, State::Lost));
        let (t, _) = follow(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"]);
        assert!(matches!(t.state, State::Lost));
        let (t, _) = follow(&[b"\x00\x01 nonsense\r\n\r\n"]);
        assert!(matches!(t.state, State::Lost));
        let (t, c) = follow(&[&vec![b'a'; MAX_HEAD + 1]]);
        assert!(matches!(t.state, State::Lost));
        assert!(!c.take(0, "GET", "/"));
    }
}
