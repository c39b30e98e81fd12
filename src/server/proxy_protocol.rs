//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a balancer in TCP
//! mode (haproxy `send-proxy`/`send-proxy-v2`, an AWS NLB, Traefik, nginx's stream
//! module) writes the client's address before the connection's own bytes, so regate sees
//! the client, not the balancer, in `ip` rules, the login throttle and the logs.
//!
//! `server.proxy_protocol: true` reads the header from the peers of
//! `server.trusted_proxies` only, and from them it is optional (a health check or an
//! operator's curl from that host may come without one). A header from any other peer is
//! a client claiming an address: the connection is closed. The header comes before TLS,
//! so it is read here, at accept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::acl::IpNet;

/// The version 2 signature.
const V2: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line (the spec's bound), CRLF included.
const V1_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("a PROXY header from {0}, which is not in server.trusted_proxies")]
    Untrusted(IpAddr),
    #[error("a malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("no PROXY header or request within {0:?}")]
    Timeout(Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Not a header: HTTP or TLS.
    Other,
    /// Could still be either: wait for more.
    Unsure,
    V1,
    V2,
}

fn start(bytes: &[u8]) -> Start {
    let is_prefix = |sig: &[u8]| {
        let n = bytes.len().min(sig.len());
        bytes[..n] == sig[..n]
    };
    match (is_prefix(b"PROXY "), is_prefix(&V2)) {
        (true, _) if bytes.len() >= 6 => Start::V1,
        (_, true) if bytes.len() >= V2.len() => Start::V2,
        (false, false) => Start::Other,
        _ => Start::Unsure,
    }
}

/// The client's address on a connection from `peer`: from a PROXY header when one comes
/// (and `peer` is trusted), else `peer`. Only the header's bytes are consumed.
pub async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[IpNet],
    limit: Duration,
) -> Result<SocketAddr, ProxyError> {
    tokio::time::timeout(limit, read(stream, peer, trusted))
        .await
        .unwrap_or(Err(ProxyError::Timeout(limit)))
}

async fn read(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &[IpNet],
) -> Result<SocketAddr, ProxyError> {
    let mut buf = [0u8; 16 + 216];
    // Look without taking: what is not a header stays for TLS or HTTP.
    let kind = loop {
        let n = stream.peek(&mut buf[..16]).await?;
        if n == 0 {
            return Ok(peer);
        }
        match start(&buf[..n]) {
            Start::Unsure if n < 16 => tokio::time::sleep(Duration::from_millis(5)).await,
            Start::Unsure => break Start::Other,
            other => break other,
        }
    };
    if kind == Start::Other {
        return Ok(peer);
    }
    if !trusted.iter().any(|n| n.contains(peer.ip())) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    match kind {
        Start::V1 => {
            let mut line = Vec::with_capacity(V1_MAX);
            while !line.ends_with(b"\r\n") {
                if line.len() >= V1_MAX {
                    return Err(ProxyError::Malformed(
                        "a version 1 line longer than 107 bytes",
                    ));
                }
                line.push(stream.read_u8().await?);
            }
            parse_v1(&line[..line.len() - 2]).map(|a| a.unwrap_or(peer))
        }
        _ => {
            stream.read_exact(&mut buf[..16]).await?;
            let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
            let mut rest = vec![0u8; len];
            stream.read_exact(&mut rest).await?;
            parse_v2(buf[12], buf[13], &rest).map(|a| a.unwrap_or(peer))
        }
    }
}

/// `PROXY TCP4 SRC DST SPORT DPORT` (CRLF removed); `None` for `UNKNOWN`.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let bad = ProxyError::Malformed;
    let line = std::str::from_utf8(line).map_err(|_| bad("not text"))?;
    let mut words = line.split(' ');
    if words.next() != Some("PROXY") {
        return Err(bad("no PROXY"));
    }
    let family = words.next().ok_or(bad("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = words.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(bad("not four fields after the protocol"));
    };
    let ip: IpAddr = match family {
        "TCP4" => src
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| bad("a TCP4 source that is not an IPv4 address"))?,
        "TCP6" => src
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| bad("a TCP6 source that is not an IPv6 address"))?,
        _ => return Err(bad("a protocol other than TCP4, TCP6, UNKNOWN")),
    };
    let port: u16 = sport
        .parse()
        .map_err(|_| bad("a source port that is not one"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Version 2 after its signature: `LOCAL` (the proxy's own health check) and families
/// other than TCP over IPv4 or IPv6 keep the connection's address.
fn parse_v2(ver_cmd: u8, family: u8, rest: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let bad = ProxyError::Malformed;
    if ver_cmd >> 4 != 2 {
        return Err(bad("version 2 signature with another version"));
    }
    match ver_cmd & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(bad("a command other than LOCAL or PROXY")),
    }
    match family {
        0x11 => {
            let a: [u8; 12] = rest
                .get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("short IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Ok(Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[8], a[9]]),
            )))
        }
        0x21 => {
            let a: [u8; 36] = rest
                .get(..36)
                .and_then(|s| s.try_into().ok())
                .ok_or(bad("short IPv6 addresses"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(src);
            let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
            Ok(Some(SocketAddr::new(
                ip,
                u16::from_be_bytes([a[32], a[33]]),
            )))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn v2(cmd: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut out = V2.to_vec();
        out.push(0x20 | cmd);
        out.push(family);
        out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        out.extend_from_slice(addrs);
        out
    }

    #[test]
    fn headers_of_both_versions() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443").unwrap(),
            Some("192.0.2.7:56324".parse().unwrap())
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 ::1 4000 443").unwrap(),
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN").unwrap(), None);
        assert!(parse_v1(b"PROXY TCP4 999.0.0.1 1.1.1.1 1 2").is_err());
        assert!(parse_v1(b"PROXY TCP4 1.2.3.4 1.1.1.1 1").is_err());
        let addrs = [192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187];
        assert_eq!(
            parse_v2(0x21, 0x11, &addrs).unwrap(),
            Some("192.0.2.9:8080".parse().unwrap())
        );
        assert_eq!(parse_v2(0x20, 0x11, &addrs).unwrap(), None, "LOCAL");
        assert!(parse_v2(0x21, 0x11, &addrs[..5]).is_err());
        assert_eq!(start(b"GET / HTTP/1.1"), Start::Other);
        assert_eq!(start(b"PUT /v2/"), Start::Other);
        assert_eq!(start(b"PRO"), Start::Unsure);
        assert_eq!(start(&[0x16, 3, 1]), Start::Other);
        assert_eq!(start(&v2(1, 0x11, &addrs)), Start::V2);
    }

    /// Over a socket: only the header's bytes are taken, the request after it stays; an
    /// untrusted peer's header closes the connection; no header keeps the peer.
    #[tokio::test]
    async fn only_the_header_is_consumed_and_only_from_trusted_peers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let trusted = [IpNet::parse("127.0.0.1").unwrap()];
        let addrs = [192, 0, 2, 9, 127, 0, 0, 1, 0x1f, 0x90, 1, 187];
        for (sent, want) in [
            (v2(1, 0x11, &addrs), Some("192.0.2.9:8080")),
            (
                b"PROXY TCP4 198.51.100.4 127.0.0.1 5555 80\r\n".to_vec(),
                Some("198.51.100.4:5555"),
            ),
            (Vec::new(), None),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut data = sent.clone();
            data.extend_from_slice(b"GET / HTTP/1.1\r\n");
            client.write_all(&data).await.unwrap();
            let (mut conn, peer) = listener.accept().await.unwrap();
            let got = accept(&mut conn, peer, &trusted, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(got, want.map_or(peer, |w| w.parse().unwrap()));
            let mut rest = [0u8; 16];
            conn.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
        }
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&v2(1, 0x11, &addrs)).await.unwrap();
        let (mut conn, peer) = listener.accept().await.unwrap();
        assert!(matches!(
            accept(&mut conn, peer, &[], Duration::from_secs(5)).await,
            Err(ProxyError::Untrusted(_))
        ));
    }
}
