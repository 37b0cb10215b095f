//! What every interposer (the preload's hooks, the seccomp supervisor) decides the same way
//! about a program's socket: which sockets namesock carries, where the engine delivers a
//! listener's sessions, and which errno a failed serve means. They differ only in how they get
//! at the socket (a hooked libc call, a descriptor copied out of a supervised process).

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use libc::{c_int, socklen_t};
use namesock_identity::KeyFileError;

use crate::engine::{ServeError, StartError};

/// An integer socket option, or `None` when it cannot be read (not a socket, ...).
pub fn sockopt_int(fd: RawFd, level: c_int, name: c_int) -> Option<c_int> {
    let mut v: c_int = 0;
    let mut len = mem::size_of::<c_int>() as socklen_t;
    // SAFETY: `v` and `len` describe a c_int that outlives the call.
    let r = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// The family of an AF_INET/AF_INET6 stream socket; `None` for any other socket.
pub fn tcp_family(fd: RawFd) -> Option<c_int> {
    let family = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let stream = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_STREAM;
    (stream && matches!(family, libc::AF_INET | libc::AF_INET6)).then_some(family)
}

/// An AF_INET or AF_INET6 address in the C layout (`struct sockaddr_in`/`sockaddr_in6`, as
/// bytes); `None` for any other family or a short buffer.
pub fn sockaddr_from_bytes(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?) as c_int;
    match family {
        libc::AF_INET if bytes.len() >= mem::size_of::<libc::sockaddr_in>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if bytes.len() >= mem::size_of::<libc::sockaddr_in6>() => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let flowinfo = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
            let octets: [u8; 16] = bytes[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(bytes[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flowinfo,
                scope,
            )))
        }
        _ => None,
    }
}

/// The local address of a socket (`getsockname`), if it is an IP one.
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getsockname)
}

/// The peer address of a connected socket (`getpeername`), if it is an IP one; `None` for
/// a socket that is not connected (any more).
pub fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    name_of(fd, libc::getpeername)
}

fn name_of(
    fd: RawFd,
    call: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int,
) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: `call` is getsockname or getpeername; `ss` holds `len` bytes.
    if unsafe { call(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` (<= size of `ss`) bytes of `ss`, which is plain data.
    let bytes = unsafe { std::slice::from_raw_parts((&raw const ss).cast::<u8>(), len as usize) };
    sockaddr_from_bytes(bytes)
}

/// The address the engine delivers a listener's sessions to: the listener's own, or loopback
/// when it is bound to a wildcard address.
pub fn delivery_address(fd: RawFd, family: c_int) -> Option<SocketAddr> {
    let bound = local_addr(fd)?;
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // A dual-stack `::` listener accepts IPv4 too: deliver over 127.0.0.1, which exists
        // wherever `lo` is up (`::1` may not).
        IpAddr::V6(ip)
            if ip.is_unspecified()
                && family == libc::AF_INET6
                && sockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) == Some(0) =>
        {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, bound.port()))
}

/// Whether the listener `fd` is served to other hosts by name ([`crate::config::Config::exposes`]:
/// not when the program bound it to loopback, unless `NAMESOCK_SERVE` names its port).
pub fn exposed(fd: RawFd) -> bool {
    let Some(bound) = local_addr(fd) else {
        return false;
    };
    // A configuration that does not load fails the serve that follows, with its reason.
    let exposed = crate::engine::config().map_or(true, |cfg| cfg.exposes(&bound));
    if !exposed {
        tracing::info!(%bound, "listener not served by name (bound to loopback, or NAMESOCK_HIDE)");
    }
    exposed
}

/// Why the configured proxy relay cannot be used (the connect fails: never a silent direct
/// connection the user asked not to make).
#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("namesock configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("NAMESOCK_PROXY={0:?}: expected NAME:PORT (a name or <guid> in the zone)")]
    Malformed(String),
    #[error("NAMESOCK_PROXY: {0}")]
    Target(std::io::Error),
}

/// The proxy relay connections to ordinary addresses go through (`NAMESOCK_PROXY`), if any.
pub fn proxy() -> Result<Option<(crate::engine::Target, u16)>, ProxyConfigError> {
    let Some(via) = crate::config::Config::load()?.proxy else {
        return Ok(None);
    };
    let (host, port) = via
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .ok_or_else(|| ProxyConfigError::Malformed(via.clone()))?;
    let target = crate::api::parse_target(host).map_err(ProxyConfigError::Target)?;
    Ok(Some((target, port)))
}

/// The errno a failed `serve` turns into for the program's listen.
pub fn serve_errno(e: &ServeError) -> c_int {
    match e {
        ServeError::PortInUse { .. } => libc::EADDRINUSE,
        ServeError::Bind { source, .. }
        | ServeError::Start(StartError::Io(source))
        | ServeError::Key(KeyFileError::Io { source, .. }) => {
            source.raw_os_error().unwrap_or(libc::EIO)
        }
        ServeError::Key(_) => libc::EACCES,
        ServeError::Start(StartError::Config(_) | StartError::PathCongestion { .. }) => {
            libc::EINVAL
        }
        ServeError::Publish(_) | ServeError::EngineGone => libc::EIO,
        // An allow list that cannot be read whole must not fall back to serving everyone.
        ServeError::Allow(_) => libc::EACCES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_bytes_round_trip() {
        for text in [
            "240.78.1.2:8000",
            "[100::4e53:0:7]:443",
            "[::ffff:1.2.3.4]:53",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            let (ss, len) = crate::engine::sys::sockaddr(&addr);
            // SAFETY: `ss` is plain data of at least `len` bytes.
            let bytes =
                unsafe { std::slice::from_raw_parts((&raw const ss).cast::<u8>(), len as usize) };
            assert_eq!(sockaddr_from_bytes(bytes), Some(addr));
            assert_eq!(sockaddr_from_bytes(&bytes[..len as usize - 1]), None);
        }
        assert_eq!(sockaddr_from_bytes(&[1, 0, 0, 0]), None); // AF_UNIX
        assert_eq!(sockaddr_from_bytes(&[]), None);
    }

    #[test]
    fn tcp_sockets_only() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(tcp_family(tcp.as_raw_fd()), Some(libc::AF_INET));
        assert_eq!(tcp_family(udp.as_raw_fd()), None);
        let delivery = delivery_address(tcp.as_raw_fd(), libc::AF_INET).unwrap();
        assert_eq!(delivery, tcp.local_addr().unwrap());
    }
}
