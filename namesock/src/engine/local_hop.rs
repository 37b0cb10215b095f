//! The sockets of a local hop: the program's socket and the engine's end of it (client), the
//! engine's delivery and the socket its program accepted (server). They never leave the host,
//! so the engine tunes them for a hop of microseconds, not for a network:
//!
//! - **Congestion control:** Reno ([`Congestion::LOCAL_HOP`], see `congestion.rs`).
//! - **Kernel buffers, bounded** ([`hop_buffer`]). The session's own buffers do what a
//!   network needs (the replay buffer keeps what the path has not confirmed and grows with its
//!   bandwidth-delay product), so a hop's kernel buffers only bridge the engine's turns. Left
//!   to the kernel they grow as a network socket's would: a loopback connection starts with a
//!   send buffer for ten 64 KiB segments (about 1.3 MB) and grows both buffers up to
//!   `net.ipv4.tcp_wmem` and `tcp_rmem`'s maximum. A busy session whose program writes faster
//!   than its path takes kept about 1.4 MB in its hop's two sockets, and a thousand of them
//!   passed the kernel's TCP memory pressure threshold (`net.ipv4.tcp_mem`, one pool for
//!   every socket of the host, flow paths and other programs' connections included), where
//!   the kernel prunes receive queues and drops segments on every socket.
//!
//! The program's socket is the program's: its send buffer is bounded only if the program did
//! not choose one (`SO_SNDBUF`) itself, and its receive buffer is left alone (it grows only as
//! fast as the program reads). A program that asks for other sizes later gets them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::OnceLock;

use super::congestion::Congestion;
use super::sys;

/// What the engine asks for with `SO_SNDBUF` on a local hop socket (the kernel doubles it
/// for its bookkeeping: 256 KiB), which keeps one bulk session at its rate of more than a
/// GB/s (half of it did not; docs/architecture.md, "Local hops").
pub const HOP_SEND_BUFFER: libc::c_int = 128 * 1024;

/// What the engine asks for with `SO_RCVBUF` on its own end of a hop (128 KiB once doubled):
/// half the send buffer's, since the program's send buffer in front of it holds what the
/// engine has not yet taken. A busy session keeps both full while its path is the slower, so
/// this half is what each one holds the less: a third less kernel memory with 1,000 busy
/// sessions, at the same rate in bulk and with many (docs/architecture.md, "Local hops").
pub const HOP_RECEIVE_BUFFER: libc::c_int = 64 * 1024;

/// What the engine asks for with the buffer option `name` (`SO_SNDBUF` or `SO_RCVBUF`).
pub fn hop_buffer(name: libc::c_int) -> libc::c_int {
    if name == libc::SO_RCVBUF {
        HOP_RECEIVE_BUFFER
    } else {
        HOP_SEND_BUFFER
    }
}

/// The engine's end of a hop, or a listener all of whose connections are such ends (they
/// inherit both buffers and the algorithm): Reno, both buffers bounded. Best effort: the hop
/// works either way, only costs more.
pub fn engine_end(fd: RawFd) {
    reno(fd);
    for name in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        bound(fd, name);
    }
}

/// A program's socket of a hop: Reno, and its send buffer bounded unless the program chose
/// it. `chosen_on` tells whether it did: the socket itself before it connects, or the
/// listener an accepted socket inherited its buffers from (an established socket has
/// already grown its own).
pub fn program_end(fd: RawFd, chosen_on: RawFd) {
    reno(fd);
    if !program_chose_send_buffer(chosen_on) {
        bound(fd, libc::SO_SNDBUF);
    }
}

fn reno(fd: RawFd) {
    if let Err(e) = Congestion::LOCAL_HOP.apply(fd) {
        tracing::debug!(fd, error = %e, "local hop keeps the host's congestion control");
    }
}

fn bound(fd: RawFd, name: libc::c_int) {
    if let Err(e) = sys::setsockopt_int(fd, libc::SOL_SOCKET, name, hop_buffer(name)) {
        tracing::debug!(fd, name, error = %e, "local hop keeps the kernel's buffer size");
    }
}

/// Whether `fd`'s send buffer differs from a new TCP socket's (the program set `SO_SNDBUF`).
fn program_chose_send_buffer(fd: RawFd) -> bool {
    match (send_buffer(fd), new_socket_send_buffer()) {
        (Ok(now), Some(fresh)) => now != fresh,
        // Unknown: leave the program's socket alone.
        _ => true,
    }
}

fn send_buffer(fd: RawFd) -> io::Result<libc::c_int> {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)
}

/// A new TCP socket's send buffer in this process's network namespace (`tcp_wmem`'s default),
/// read once from a probe socket.
fn new_socket_send_buffer() -> Option<libc::c_int> {
    static FRESH: OnceLock<Option<libc::c_int>> = OnceLock::new();
    *FRESH.get_or_init(|| {
        let probe = sys::tcp_socket(libc::AF_INET)
            .or_else(|_| sys::tcp_socket(libc::AF_INET6))
            .ok()?;
        send_buffer(probe.as_raw_fd()).ok()
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use super::*;

    fn buffers(fd: RawFd) -> [libc::c_int; 2] {
        [libc::SO_SNDBUF, libc::SO_RCVBUF]
            .map(|name| sys::getsockopt_int(fd, libc::SOL_SOCKET, name).unwrap())
    }

    /// What the kernel reports for the bound: twice what it was given, which it first caps
    /// at `net.core.wmem_max` / `rmem_max` (208 KiB by default).
    fn bounded(name: libc::c_int) -> libc::c_int {
        let max = if name == libc::SO_SNDBUF {
            "wmem_max"
        } else {
            "rmem_max"
        };
        let max: libc::c_int = std::fs::read_to_string(format!("/proc/sys/net/core/{max}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        2 * hop_buffer(name).min(max)
    }

    /// The engine's ends: what a tuned listener accepts, and a socket tuned before it
    /// connects, keep both bounds and run Reno after the handshake (when the kernel would
    /// have grown a loopback socket's send buffer to ten 64 KiB segments).
    #[test]
    fn an_engine_end_keeps_its_bounds_through_the_handshake() {
        // Each starts from other sizes, so that the bounds seen are the engine's doing even
        // where the host's default happens to equal one.
        let other = |fd: RawFd| {
            for name in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                sys::setsockopt_int(fd, libc::SOL_SOCKET, name, 8192).unwrap();
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        other(listener.as_raw_fd());
        engine_end(listener.as_raw_fd());
        let dialled = sys::tcp_socket(libc::AF_INET).unwrap();
        other(dialled.as_raw_fd());
        engine_end(dialled.as_raw_fd());
        sys::connect_blocking(dialled.as_raw_fd(), &listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let both = [bounded(libc::SO_SNDBUF), bounded(libc::SO_RCVBUF)];
        for fd in [accepted.as_raw_fd(), dialled.as_raw_fd()] {
            assert_eq!(buffers(fd), both);
            assert_eq!(Congestion::of(fd).unwrap(), Congestion::LOCAL_HOP);
        }
        // Unbounded, the same handshake grows the send buffer far past the bound.
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(plain.local_addr().unwrap()).unwrap();
        let grown = buffers(client.as_raw_fd())[0];
        assert!(grown > both[0], "{grown}");
    }

    /// A send buffer a program might choose: under any host's `wmem_max`, unlike the bound.
    const CHOICE: libc::c_int = 48 * 1024;

    /// A program's socket: its send buffer is bounded unless the program chose one, before it
    /// connects or on the listener it accepts from; its receive buffer is never touched.
    #[test]
    fn a_programs_socket_is_bounded_only_where_the_program_chose_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fresh = sys::tcp_socket(libc::AF_INET).unwrap();
        let rcvbuf = buffers(fresh.as_raw_fd())[1];
        let send_bound = bounded(libc::SO_SNDBUF);
        program_end(fresh.as_raw_fd(), fresh.as_raw_fd());
        assert_eq!(buffers(fresh.as_raw_fd()), [send_bound, rcvbuf]);

        let chosen = sys::tcp_socket(libc::AF_INET).unwrap();
        sys::setsockopt_int(
            chosen.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            CHOICE,
        )
        .unwrap();
        program_end(chosen.as_raw_fd(), chosen.as_raw_fd());
        assert_eq!(
            buffers(chosen.as_raw_fd())[0],
            2 * CHOICE,
            "the program's choice stays"
        );

        // Accepted sockets: judged by their listener.
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        program_end(accepted.as_raw_fd(), listener.as_raw_fd());
        assert_eq!(buffers(accepted.as_raw_fd())[0], send_bound);
        let chose = TcpListener::bind("127.0.0.1:0").unwrap();
        sys::setsockopt_int(chose.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, CHOICE).unwrap();
        let _other = TcpStream::connect(chose.local_addr().unwrap()).unwrap();
        let (theirs, _) = chose.accept().unwrap();
        program_end(theirs.as_raw_fd(), chose.as_raw_fd());
        assert_eq!(buffers(theirs.as_raw_fd())[0], 2 * CHOICE);

        // Bounded sockets still carry everything.
        let data = vec![7u8; 3 << 20];
        let writer = std::thread::spawn(move || {
            accepted.write_all(&data).unwrap();
        });
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), 3 << 20);
    }
}
