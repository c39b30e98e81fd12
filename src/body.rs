//! The one body type regate's responses carry: either a stream passed through untouched
//! from the other side, or a small buffer regate wrote itself.

use bytes::Bytes;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;

pub type Body = Either<Incoming, Either<Full<Bytes>, Empty<Bytes>>>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Either::Left(Full::new(bytes.into())))
}

pub fn empty() -> Body {
    Either::Right(Either::Right(Empty::new()))
}

pub fn stream(incoming: Incoming) -> Body {
    Either::Left(incoming)
}
