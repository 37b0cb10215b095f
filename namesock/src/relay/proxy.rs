//! A proxy relay (docs/protocol.md, "Proxy sessions"): a client sends a connection to an
//! ordinary address (a server without namesock) through the relay as a namesock session; the
//! session's stream opens with the destination, and the relay holds the one plain TCP
//! connection to it while the client moves. Sans-IO: the header and the relay's rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First bytes of a proxy session's stream.
pub const MAGIC: &[u8; 4] = b"NSPX";
pub const VERSION: u8 = 1;
/// Bytes before the address: magic, version, family.
pub const HEAD_LEN: usize = 6;

/// Malformed proxy input, or a rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("not a proxy header (bad magic)")]
    BadMagic,
    #[error("proxy header version {0} is not supported (this build speaks version 1)")]
    Version(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("{0:?} is not an address range (ADDR/PREFIX, e.g. 192.0.2.0/24)")]
    BadRule(String),
}

/// `"NSPX" version:u8=1 family:u8 (4 => ip:4 | 6 => ip:16) port:u16`.
pub fn encode(dest: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    namesock_resolver::record::encode_locator(out, &dest);
}

/// The whole header's length from its first [`HEAD_LEN`] bytes.
pub fn len_from_head(head: &[u8; HEAD_LEN]) -> Result<usize, ProxyError> {
    if &head[..4] != MAGIC {
        return Err(ProxyError::BadMagic);
    }
    if head[4] != VERSION {
        return Err(ProxyError::Version(head[4]));
    }
    match head[5] {
        4 => Ok(HEAD_LEN + 4 + 2),
        6 => Ok(HEAD_LEN + 16 + 2),
        f => Err(ProxyError::Family(f)),
    }
}

/// Decodes a whole header (its length from [`len_from_head`]).
pub fn decode(bytes: &[u8]) -> Result<SocketAddr, ProxyError> {
    let head: &[u8; HEAD_LEN] = bytes.first_chunk().ok_or(ProxyError::BadMagic)?;
    let len = len_from_head(head)?;
    let body = bytes.get(HEAD_LEN..len).ok_or(ProxyError::BadMagic)?;
    let (ip, port) = body.split_at(body.len() - 2);
    let ip = match ip.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(ip).expect("4 bytes"))),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).expect("16 bytes"))),
    };
    Ok(SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])))
}

/// An address range a proxy relay serves (`--allow-dest`): `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestRule {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for DestRule {
    type Err = ProxyError;

    fn from_str(s: &str) -> Result<DestRule, ProxyError> {
        let bad = || ProxyError::BadRule(s.to_owned());
        let (net, prefix) = s.split_once('/').ok_or_else(bad)?;
        let net: IpAddr = net.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        Ok(DestRule { net, prefix })
    }
}

impl DestRule {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// May a client connect to `dest` through this relay? Only inside a configured range (none
/// by default: an open TCP proxy is a hazard).
pub fn dest_allowed(rules: &[DestRule], dest: SocketAddr) -> bool {
    rules.iter().any(|r| r.contains(dest.ip()))
}

/// Does a client's connect to `dest` go through the proxy? Loopback and unspecified
/// addresses stay local (the proxy could not reach this host's loopback anyway).
pub fn proxiable(dest: SocketAddr) -> bool {
    !dest.ip().is_loopback() && !dest.ip().is_unspecified() && dest.port() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_say_why() {
        for dest in ["192.0.2.7:80", "[2001:db8::7]:443"] {
            let dest: SocketAddr = dest.parse().unwrap();
            let mut out = Vec::new();
            encode(dest, &mut out);
            assert_eq!(len_from_head(out[..6].try_into().unwrap()), Ok(out.len()));
            assert_eq!(decode(&out), Ok(dest));
        }
        assert_eq!(len_from_head(b"GET / "), Err(ProxyError::BadMagic));
        assert_eq!(len_from_head(b"NSPX\x02\x04"), Err(ProxyError::Version(2)));
        assert_eq!(len_from_head(b"NSPX\x01\x05"), Err(ProxyError::Family(5)));
    }

    #[test]
    fn only_configured_ranges_are_served() {
        let rules: Vec<DestRule> = ["10.1.2.0/24", "2001:db8::/32"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let ok = |a: &str| dest_allowed(&rules, a.parse().unwrap());
        assert!(ok("10.1.2.9:22"));
        assert!(ok("[::ffff:10.1.2.9]:22"));
        assert!(ok("[2001:db8:1::1]:80"));
        assert!(!ok("10.1.3.9:22"));
        assert!(!ok("[2001:db9::1]:80"));
        assert!(!dest_allowed(&[], "10.1.2.9:22".parse().unwrap()));
        assert!(
            "0.0.0.0/0"
                .parse::<DestRule>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!("10.0.0.0/33".parse::<DestRule>().is_err());
        assert!("10.0.0.0".parse::<DestRule>().is_err());
        assert!(!proxiable("127.0.0.1:80".parse().unwrap()));
        assert!(proxiable("10.1.2.9:80".parse().unwrap()));
    }
}
