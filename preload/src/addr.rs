//! `struct sockaddr` <-> `SocketAddr`.

use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};

/// Reads an AF_INET or AF_INET6 address; `None` for anything else (or a short length).
///
/// # Safety
/// `sa` is null or valid for reads of `len` bytes.
pub unsafe fn read(sa: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // Only as much as an address can use (a caller may pass any larger length).
    let len = (len as usize).min(mem::size_of::<sockaddr_storage>());
    // SAFETY: the caller promises `len` readable bytes at `sa`; u8 has no alignment.
    let bytes = unsafe { std::slice::from_raw_parts(sa.cast::<u8>(), len) };
    namesock::interpose::sockaddr_from_bytes(bytes)
}

/// `addr` in the C layout, and its length.
pub fn to_storage(addr: &SocketAddr) -> (sockaddr_storage, socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all zeros is a valid value.
    let mut ss: sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut ss).cast::<sockaddr_in>().write(sin) };
            mem::size_of::<sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut ss).cast::<sockaddr_in6>().write(sin6) };
            mem::size_of::<sockaddr_in6>()
        }
    };
    (ss, len as socklen_t)
}

/// Writes `addr` the way the kernel fills an address out-parameter: at most `*len` bytes,
/// and `*len` set to the full size. Nothing happens when either pointer is null.
///
/// # Safety
/// `out` is null or valid for writes of `*len` bytes; `len` is null or valid.
pub unsafe fn write(addr: &SocketAddr, out: *mut sockaddr, len: *mut socklen_t) {
    if out.is_null() || len.is_null() {
        return;
    }
    let (ss, full) = to_storage(addr);
    // SAFETY: `len` is valid (checked non-null; the caller vouches for it).
    let room = unsafe { *len };
    let n = room.min(full) as usize;
    // SAFETY: `out` holds `room` >= `n` bytes; `ss` holds `full` >= `n` bytes; no overlap.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const ss).cast::<u8>(), out.cast::<u8>(), n);
        *len = full;
    }
}

/// `addr` as the given socket family shows it: IPv4 in an AF_INET6 socket is v4-mapped;
/// `None` for an IPv6 address that an AF_INET socket cannot show.
pub fn for_family(addr: SocketAddr, family: libc::c_int) -> Option<SocketAddr> {
    match (addr, family) {
        (SocketAddr::V4(a), libc::AF_INET6) => Some(SocketAddr::V6(SocketAddrV6::new(
            a.ip().to_ipv6_mapped(),
            a.port(),
            0,
            0,
        ))),
        (SocketAddr::V6(a), libc::AF_INET) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, a.port()))),
        (addr, _) => Some(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for a in ["240.78.1.2:8000", "[100::4e53:0:102]:443", "[::1%3]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, len) = to_storage(&a);
            // SAFETY: `ss` holds `len` bytes.
            let back = unsafe { read((&raw const ss).cast(), len) };
            assert_eq!(back, Some(a));
        }
    }

    #[test]
    fn writes_truncate_like_the_kernel() {
        let a: SocketAddr = "[100::4e53:0:102]:443".parse().unwrap();
        let mut buf = [0xffu8; 8];
        let mut len: socklen_t = 8;
        // SAFETY: `buf` holds `len` bytes.
        unsafe { write(&a, buf.as_mut_ptr().cast(), &mut len) };
        assert_eq!(len as usize, mem::size_of::<sockaddr_in6>());
        assert_eq!(&buf[..2], &(libc::AF_INET6 as u16).to_ne_bytes());
    }

    #[test]
    fn families() {
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:1.2.3.4]:5".parse().unwrap();
        assert_eq!(for_family(v4, libc::AF_INET6), Some(mapped));
        assert_eq!(for_family(mapped, libc::AF_INET), Some(v4));
        assert_eq!(
            for_family("[2001:db8::1]:5".parse().unwrap(), libc::AF_INET),
            None
        );
    }
}
