//! The `ip:` condition: an address or CIDR block, parsed and compared without a crate.
//! `server.trusted_proxies` uses the same blocks.

use std::net::IpAddr;

/// An address block. IPv4-mapped IPv6 is folded to IPv4 on both sides, as Go's `net` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    pub(super) addr: IpAddr,
    pub(super) prefix: u8,
}

impl IpNet {
    /// A bare address (a /32 or /128) or `addr/prefix`.
    pub fn parse(raw: &str) -> Option<IpNet> {
        let (addr, prefix) = match raw.split_once('/') {
            None => {
                let addr: IpAddr = raw.parse().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().ok()?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let prefix: u8 = prefix.parse().ok()?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                (prefix <= max).then_some((addr, prefix))?
            }
        };
        Some(match addr {
            // Go keeps only the IPv4 part of the mask for a mapped network.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpNet {
                    addr: IpAddr::V4(v4),
                    prefix: prefix.saturating_sub(96),
                },
                None => IpNet { addr, prefix },
            },
            IpAddr::V4(_) => IpNet { addr, prefix },
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        let (net, ip, bits) = match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n).into(), u32::from(i).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix);
        // A shift by the full width (prefix 0) means every address is inside.
        (net ^ ip).checked_shr(host_bits).unwrap_or(0) == 0
    }
}
