//! The local address monitor: an rtnetlink socket subscribed to IPv4 and IPv6 address
//! changes, so that losing an address is noticed the moment it happens, and to new default
//! routes, which often come a few milliseconds after a new address (until then nothing
//! beyond the address's own subnet is reachable from it).

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One address appearing or going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrChange {
    Added(IpAddr),
    Removed(IpAddr),
    /// An interface lost carrier or went down (its addresses may stay, unusable).
    LinkDown(u32),
    /// An interface came (back) up.
    LinkUp(u32),
    /// A default route appeared (or was replaced).
    DefaultRoute,
    /// The kernel dropped notifications (ENOBUFS): rescan everything.
    Overflow,
}

pub struct AddrMonitor {
    fd: OwnedFd,
}

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

impl AddrMonitor {
    pub fn open() -> io::Result<AddrMonitor> {
        // SAFETY: plain socket(2); the result is checked and owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is fresh and owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is valid.
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = RTMGRP_LINK
            | RTMGRP_IPV4_IFADDR
            | RTMGRP_IPV6_IFADDR
            | RTMGRP_IPV4_ROUTE
            | RTMGRP_IPV6_ROUTE;
        // SAFETY: `sa` is a valid sockaddr_nl of the given length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(AddrMonitor { fd })
    }

    /// Reads every pending notification (non-blocking) into `out`.
    pub fn read(&self, out: &mut Vec<AddrChange>) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        out.push(AddrChange::Overflow);
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            parse(&buf[..n as usize], out);
        }
    }
}

impl AsRawFd for AddrMonitor {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses a datagram of netlink messages (RTM_NEWADDR / RTM_DELADDR / RTM_NEWLINK /
/// RTM_DELLINK / RTM_NEWROUTE).
fn parse(mut buf: &[u8], out: &mut Vec<AddrChange>) {
    const NLMSG_HDR: usize = mem::size_of::<libc::nlmsghdr>();
    const IFA_HDR: usize = mem::size_of::<libc::ifaddrmsg>();
    while buf.len() >= NLMSG_HDR {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < NLMSG_HDR || len > buf.len() {
            return;
        }
        let msg = &buf[NLMSG_HDR..len];
        // ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
        if (ty == libc::RTM_NEWLINK || ty == libc::RTM_DELLINK) && msg.len() >= 16 {
            let index = u32::from_ne_bytes(msg[4..8].try_into().unwrap());
            let flags = u32::from_ne_bytes(msg[8..12].try_into().unwrap());
            let running = flags & (libc::IFF_UP | libc::IFF_RUNNING) as u32
                == (libc::IFF_UP | libc::IFF_RUNNING) as u32;
            out.push(if ty == libc::RTM_NEWLINK && running {
                AddrChange::LinkUp(index)
            } else {
                AddrChange::LinkDown(index)
            });
        }
        // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type (u8 each), flags.
        // Only a unicast route to everywhere matters; the others come and go with addresses.
        if ty == libc::RTM_NEWROUTE && msg.len() >= 12 && msg[1] == 0 && msg[7] == libc::RTN_UNICAST
        {
            out.push(AddrChange::DefaultRoute);
        }
        if (ty == libc::RTM_NEWADDR || ty == libc::RTM_DELADDR) && msg.len() >= IFA_HDR {
            let family = msg[0] as libc::c_int;
            let (mut local, mut address) = (None, None);
            let mut attrs = &msg[IFA_HDR..];
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let aty = u16::from_ne_bytes([attrs[2], attrs[3]]);
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let data = &attrs[4..alen];
                let ip = match (family, data.len()) {
                    (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(
                        <[u8; 4]>::try_from(data).unwrap(),
                    ))),
                    (libc::AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(data).unwrap(),
                    ))),
                    _ => None,
                };
                match aty {
                    libc::IFA_LOCAL => local = ip,
                    libc::IFA_ADDRESS => address = ip,
                    _ => {}
                }
                attrs = &attrs[align4(alen).min(attrs.len())..];
            }
            // IFA_LOCAL is the interface's own address on point-to-point links.
            if let Some(ip) = local.or(address) {
                out.push(if ty == libc::RTM_NEWADDR {
                    AddrChange::Added(ip)
                } else {
                    AddrChange::Removed(ip)
                });
            }
        }
        buf = &buf[align4(len).min(buf.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deladdr() {
        // nlmsghdr(16) + ifaddrmsg(8) + rtattr IFA_ADDRESS(4+4) + rtattr IFA_LOCAL(4+4)
        let mut m = Vec::new();
        m.extend_from_slice(&40u32.to_ne_bytes());
        m.extend_from_slice(&libc::RTM_DELADDR.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&[libc::AF_INET as u8, 24, 0, 0, 2, 0, 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&libc::IFA_ADDRESS.to_ne_bytes());
        m.extend_from_slice(&[10, 0, 0, 1]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&libc::IFA_LOCAL.to_ne_bytes());
        m.extend_from_slice(&[10, 0, 0, 2]);
        let mut out = Vec::new();
        parse(&m, &mut out);
        assert_eq!(out, vec![AddrChange::Removed("10.0.0.2".parse().unwrap())]);
    }

    #[test]
    fn parses_a_new_default_route_and_ignores_other_routes() {
        // nlmsghdr(16) + rtmsg(12)
        let route = |ty: u16, dst_len: u8, kind: u8| {
            let mut m = Vec::new();
            m.extend_from_slice(&28u32.to_ne_bytes());
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(&[0u8; 10]);
            m.extend_from_slice(&[libc::AF_INET6 as u8, dst_len, 0, 0, 254, 3, 0, kind]);
            m.extend_from_slice(&[0u8; 4]);
            m
        };
        let mut out = Vec::new();
        parse(&route(libc::RTM_NEWROUTE, 0, libc::RTN_UNICAST), &mut out);
        assert_eq!(out, vec![AddrChange::DefaultRoute]);
        out.clear();
        parse(&route(libc::RTM_NEWROUTE, 64, libc::RTN_UNICAST), &mut out);
        parse(&route(libc::RTM_DELROUTE, 0, libc::RTN_UNICAST), &mut out);
        parse(
            &route(libc::RTM_NEWROUTE, 0, libc::RTN_UNREACHABLE),
            &mut out,
        );
        assert_eq!(out, vec![]);
    }

    #[test]
    fn opens() {
        let mon = AddrMonitor::open().unwrap();
        let mut out = Vec::new();
        mon.read(&mut out).unwrap();
    }
}
