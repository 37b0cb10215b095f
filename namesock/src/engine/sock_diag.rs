//! What the kernel knows of a TCP socket the engine does not hold: the bytes it has received
//! and not read, and those it has written that its peer has not acknowledged, asked of
//! `NETLINK_SOCK_DIAG` by the socket's addresses (as `ss` does).
//!
//! The engine needs it at process exit, for the program's end of each relay connection: bytes
//! still on their way to the engine's end (which the engine's own socket cannot see yet), and
//! bytes the program never read (with which the kernel's close would send a reset).

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `idiag_cookie` that matches any socket.
const NO_COOKIE: u32 = !0;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `inet_diag_msg`'s `idiag_rqueue`, after the netlink header; `idiag_wqueue` follows it.
const RQUEUE_AT: usize = mem::size_of::<libc::nlmsghdr>() + 4 + mem::size_of::<SockId>() + 4;

/// A TCP socket's queues, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queues {
    /// Received, not yet read by its owner.
    pub unread: u32,
    /// Written, not yet acknowledged by the peer (a FIN counts as one).
    pub unacknowledged: u32,
}

/// A netlink socket for socket diagnostics.
pub struct SockDiag {
    fd: OwnedFd,
}

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        // SAFETY: plain socket(2); the result is checked before it is owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        Ok(SockDiag {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The queues of the TCP socket bound to `local` and connected to `peer`. `None`: no
    /// such socket.
    pub fn queues(&self, local: SocketAddr, peer: SocketAddr) -> io::Result<Option<Queues>> {
        let (family, src, dst) = match (local.ip(), peer.ip()) {
            (IpAddr::V4(l), IpAddr::V4(p)) => {
                (libc::AF_INET, pad16(&l.octets()), pad16(&p.octets()))
            }
            (IpAddr::V6(l), IpAddr::V6(p)) => (libc::AF_INET6, l.octets(), p.octets()),
            _ => return Err(io::ErrorKind::InvalidInput.into()),
        };
        let req = Request {
            header: libc::nlmsghdr {
                nlmsg_len: mem::size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            family: family as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: !0,
            id: SockId {
                sport: local.port().to_be_bytes(),
                dport: peer.port().to_be_bytes(),
                src,
                dst,
                interface: 0,
                cookie: [NO_COOKIE; 2],
            },
        };
        // SAFETY: `req` is a plain repr(C) value that outlives the call, sent whole; the
        // kernel's address is the default (zeroed) netlink destination.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                (&raw const req).cast(),
                mem::size_of::<Request>(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 512];
        // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which outlives the call.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        parse_reply(&buf[..n as usize])
    }
}

fn pad16(v4: &[u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(v4);
    a
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn parse_reply(buf: &[u8]) -> io::Result<Option<Queues>> {
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short sock_diag reply");
    let kind = buf
        .get(4..6)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .ok_or_else(short)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = u32_at(buf, mem::size_of::<libc::nlmsghdr>()).ok_or_else(short)? as i32;
        return match -errno {
            0 => Err(short()),
            libc::ENOENT => Ok(None),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    Ok(Some(Queues {
        unread: u32_at(buf, RQUEUE_AT).ok_or_else(short)?,
        unacknowledged: u32_at(buf, RQUEUE_AT + 4).ok_or_else(short)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// A loopback pair whose receiving end takes nothing until asked.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let w = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        (w, r)
    }

    fn queues(diag: &SockDiag, s: &TcpStream) -> Option<Queues> {
        diag.queues(s.local_addr().unwrap(), s.peer_addr().unwrap())
            .unwrap()
    }

    /// Polls (for up to 5 s) until `s`'s queues are `want`.
    fn settles_at(diag: &SockDiag, s: &TcpStream, want: Queues) -> Option<Queues> {
        let start = Instant::now();
        loop {
            let got = queues(diag, s);
            if got == Some(want) || start.elapsed() > Duration::from_secs(5) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    const EMPTY: Queues = Queues {
        unread: 0,
        unacknowledged: 0,
    };

    #[test]
    fn bytes_held_back_by_the_peers_window_count_until_the_peer_reads_them() {
        let diag = SockDiag::open().unwrap();
        let (mut w, mut r) = pair();
        assert_eq!(queues(&diag, &w), Some(EMPTY));
        // More than the reader's window and the writer's buffer together: the rest waits.
        w.set_nonblocking(true).unwrap();
        let chunk = [7u8; 64 * 1024];
        let mut written = 0usize;
        loop {
            match w.write(&chunk) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
        let held = queues(&diag, &w).unwrap().unacknowledged;
        assert!(held > 0, "{written} bytes written, none held back");
        let unread = queues(&diag, &r).unwrap().unread;
        assert!(unread > 0, "the reader's queue holds what it did not read");
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), written);
        // Everything and the FIN acknowledged, and read.
        assert_eq!(settles_at(&diag, &w, EMPTY), Some(EMPTY));
        assert_eq!(queues(&diag, &r), Some(EMPTY));
    }

    #[test]
    fn bytes_received_and_not_read_are_unread() {
        let diag = SockDiag::open().unwrap();
        let (mut w, r) = pair();
        w.write_all(b"twelve bytes").unwrap();
        let want = Queues {
            unread: 12,
            unacknowledged: 0,
        };
        assert_eq!(settles_at(&diag, &r, want), Some(want));
    }

    #[test]
    fn a_socket_that_is_not_there_is_none() {
        let diag = SockDiag::open().unwrap();
        let (w, _r) = pair();
        let elsewhere = SocketAddr::new(w.local_addr().unwrap().ip(), 1);
        let peer = w.peer_addr().unwrap();
        assert_eq!(diag.queues(elsewhere, peer).unwrap(), None);
    }

    /// A program's dual-stack socket that reached the engine's IPv4 relay is an AF_INET6
    /// socket; the engine knows it by the IPv4 addresses its own end sees.
    #[test]
    fn a_dual_stack_socket_is_found_by_its_ipv4_addresses() {
        let diag = SockDiag::open().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mapped = format!("[::ffff:127.0.0.1]:{}", l.local_addr().unwrap().port());
        let _program = TcpStream::connect(mapped).unwrap();
        let (engine, _) = l.accept().unwrap();
        let (ours, program) = (engine.local_addr().unwrap(), engine.peer_addr().unwrap());
        assert!(program.is_ipv4());
        assert_eq!(diag.queues(program, ours).unwrap(), Some(EMPTY));
    }

    #[test]
    fn refuses_mixed_families() {
        let diag = SockDiag::open().unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        assert!(diag.queues(v4, v6).is_err());
    }
}
