//! How long regate waits for each side before it gives up. Not configuration keys: the
//! defaults are the behaviour; the fields exist so that tests can use short values instead of
//! waiting out real 10-30 s timers. A module of its own so the server, the proxy and the
//! config all point down to it, never at each other.
//!
//! The registry's read timeout is not here: `upstream.read_timeout` sets it.

use std::time::Duration;

/// Read once at start; a reload keeps the timeouts the server started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A client that has not finished its TLS handshake by then is dropped.
    pub handshake: Duration,
    /// A client that has not sent its whole request head by then is dropped (slowloris),
    /// whatever it speaks: the first request of a connection (HTTP/1 or HTTP/2) and each
    /// HTTP/1 head after it. It also closes an HTTP/1 keep-alive connection left idle that
    /// long (hyper starts the timer when the previous response is done); real clients send
    /// a head in one packet.
    pub request_head: Duration,
    /// A client that sends nothing of a request body for this long, while the registry
    /// waits for it, is cut off (408): a stalled upload would otherwise hold two
    /// connections forever. Only silence counts, so a slow but live upload is never cut
    /// (nginx's `client_body_timeout` works the same way, at 60 s).
    pub client_body_idle: Duration,
    /// A TCP connect to the registry that takes longer than this fails the request with
    /// 503 instead of hanging it.
    pub upstream_connect: Duration,
    /// How long shutdown waits for requests in flight (a blob upload) before it stops
    /// anyway.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(10),
            request_head: Duration::from_secs(10),
            client_body_idle: Duration::from_secs(30),
            upstream_connect: Duration::from_secs(5),
            drain: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values the README promises; the integration tests run with shorter ones.
    #[test]
    fn the_defaults_are_the_documented_ones() {
        let t = Timeouts::default();
        assert_eq!(t.handshake, Duration::from_secs(10));
        assert_eq!(t.request_head, Duration::from_secs(10));
        assert_eq!(t.client_body_idle, Duration::from_secs(30));
        assert_eq!(t.upstream_connect, Duration::from_secs(5));
        assert_eq!(t.drain, Duration::from_secs(30));
    }
}
