//! Socket hooks: only the calls that name addresses. The program's fd stays a real TCP
//! socket; the engine relays its bytes, so read/write/poll/sendfile/... need no hook.

use std::io::Write;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use libc::{c_int, c_uint, sockaddr, socklen_t};
use namesock::engine;
use namesock::interpose::{self, delivery_address, exposed, serve_errno, tcp_family};
use namesock::relay::proxy;
use namesock::synthetic;

use crate::fds::{self, FdState};
use crate::guard::set_errno;
use crate::{addr, real::call as real};

/// -1 with `errno`.
fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

/// `socket`: a new fd has no history, whatever was closed behind our back under its number.
pub fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int {
    // SAFETY: socket(2) takes plain integers.
    let fd = unsafe { real::socket(domain, kind, protocol) };
    if fd >= 0 {
        forget(fd);
    }
    fd
}

/// `connect`: a synthetic address is a session through the engine; anything else is the
/// real connect.
///
/// # Safety
/// `sa` holds `len` bytes.
pub unsafe fn connect(fd: RawFd, sa: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's address.
    let dest = unsafe { addr::read(sa, len) };
    let Some(to) = dest.filter(|a| synthetic::is_synthetic(a.ip())) else {
        if let Some(dest) = dest
            && proxy::proxiable(dest)
            && tcp_family(fd).is_some()
        {
            match interpose::proxy() {
                Ok(Some(via)) => return connect_via(fd, dest, via),
                Ok(None) => {}
                Err(e) => {
                    namesock::logging::init_from_env();
                    tracing::error!(fd, %dest, "connect refused: {e}");
                    return fail(libc::EINVAL);
                }
            }
        }
        // SAFETY: the caller's arguments unchanged.
        return unsafe { real::connect(fd, sa, len) };
    };
    namesock::logging::init_from_env();
    if tcp_family(fd).is_none() {
        // Only TCP is carried: a UDP or raw socket to a synthetic address goes nowhere.
        tracing::debug!(fd, %to, "not a TCP socket: synthetic addresses are unreachable");
        return fail(libc::ENETUNREACH);
    }
    let Some((target, port)) = synthetic::target_for(&to) else {
        tracing::info!(fd, %to, "no name behind this synthetic address");
        return fail(libc::EHOSTUNREACH);
    };
    if !fds::fits(fd) {
        return fail(libc::EMFILE);
    }
    if let Some(FdState::Client { .. }) = fds::get(fd) {
        // Connected already (programs that connect again to learn a non-blocking connect's
        // outcome expect this answer).
        return fail(libc::EISCONN);
    }
    match engine::connect_fd(fd, &target, port) {
        Ok(info) => {
            tracing::debug!(fd, %target, port, peer = %info.peer_addr, "connected");
            fds::set(fd, FdState::Client { peer: to });
            0
        }
        Err(e) => {
            tracing::info!(fd, %target, port, "connect failed: {e}");
            if matches!(e, engine::ConnectError::Start(_)) {
                say_once_cannot_start(&e);
            }
            fail(e.errno())
        }
    }
}

/// An engine that cannot start (its configuration, this host) fails every connect the same
/// way: the program gets its errno each time, its user the reason once, on stderr, as for a
/// listen that cannot be served (logging is off unless `NAMESOCK_LOG` is set).
fn say_once_cannot_start(e: &engine::ConnectError) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let _ = writeln!(std::io::stderr(), "namesock: cannot connect by name: {e}");
    }
}

/// A connect to an ordinary address through the proxy relay: a session to the relay whose
/// stream opens with the destination; the relay holds the plain connection to it.
fn connect_via(fd: RawFd, dest: SocketAddr, (relay, port): (engine::Target, u16)) -> c_int {
    namesock::logging::init_from_env();
    if !fds::fits(fd) {
        return fail(libc::EMFILE);
    }
    if let Some(FdState::Client { .. }) = fds::get(fd) {
        return fail(libc::EISCONN);
    }
    if let Err(e) = engine::connect_fd(fd, &relay, port) {
        tracing::info!(fd, %dest, %relay, port, "connect through the proxy relay failed: {e}");
        return fail(e.errno());
    }
    // The destination goes first on the stream: the program is still in connect, so nothing
    // of its own can come before it. A fresh socket's send buffer takes these few bytes at once.
    let mut header = Vec::with_capacity(24);
    proxy::encode(dest, &mut header);
    // SAFETY: `fd` is the caller's open socket; ManuallyDrop keeps it open after the write.
    let mut sock = mem::ManuallyDrop::new(unsafe {
        <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    if let Err(e) = sock.write_all(&header) {
        tracing::info!(fd, %dest, error = %e, "cannot send the destination to the proxy relay");
        return fail(e.raw_os_error().unwrap_or(libc::EIO));
    }
    tracing::debug!(fd, %dest, %relay, port, "connected through the proxy relay");
    fds::set(fd, FdState::Client { peer: dest });
    0
}

/// `getpeername`: the synthetic address a client connected to, the real client of a
/// delivered session; otherwise (and for every error) the real answer.
///
/// # Safety
/// The contract of getpeername(2).
pub unsafe fn getpeername(fd: RawFd, sa: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments unchanged.
    let r = unsafe { real::getpeername(fd, sa, len) };
    if r == 0
        && let Some(FdState::Client { peer } | FdState::Delivered { peer }) = fds::get(fd)
    {
        // SAFETY: `sa`/`len` were valid for the real call, which succeeded.
        unsafe { addr::write(&peer, sa, len) };
    }
    r
}

/// `listen`: the real listen, then the engine serves the port, delivering sessions to this
/// socket. If the engine cannot serve, listen fails (with the reason on stderr): a server
/// silently reachable only by plain TCP would be "something else".
pub fn listen(fd: RawFd, backlog: c_int) -> c_int {
    // SAFETY: listen(2) takes plain integers.
    let r = unsafe { real::listen(fd, backlog) };
    if r != 0 || matches!(fds::get(fd), Some(FdState::Listening { .. })) {
        return r;
    }
    let Some(family) = tcp_family(fd) else {
        return r;
    };
    let Some(deliver_to) = delivery_address(fd, family) else {
        return r;
    };
    namesock::logging::init_from_env();
    if !exposed(fd) {
        return r;
    }
    if !fds::fits(fd) {
        return fail(libc::EMFILE);
    }
    let port = deliver_to.port();
    match engine::serve(port, deliver_to) {
        Ok(()) => {
            tracing::debug!(fd, port, %deliver_to, "serving");
            fds::set(fd, FdState::Listening { port });
            0
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "namesock: cannot serve port {port} by name: {e}"
            );
            fail(serve_errno(&e))
        }
    }
}

/// `accept`/`accept4`: the real accept; a session the engine delivered shows its real client
/// address (in `sa` and later in getpeername) instead of the engine's loopback end.
///
/// # Safety
/// The contract of accept4(2).
pub unsafe fn accept4(fd: RawFd, sa: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut ss_len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: our own buffer of `ss_len` bytes.
    let new = unsafe { real::accept4(fd, (&raw mut ss).cast(), &mut ss_len, flags) };
    if new < 0 {
        return new;
    }
    forget(new);
    // SAFETY: the kernel wrote `ss_len` bytes.
    let relay_peer = unsafe { addr::read((&raw const ss).cast(), ss_len) };
    let delivered = relay_peer
        .filter(|p| p.ip().to_canonical().is_loopback())
        .filter(|_| matches!(fds::get(fd), Some(FdState::Listening { .. })))
        // Only a live delivery of this engine, by its exact 4-tuple, once.
        .and_then(|p| engine::claim_delivery(new, fd).map(|info| (p, info)));
    let shown = match delivered {
        Some((relay, info)) => {
            let family = if relay.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            let peer = addr::for_family(info.peer_addr, family)
                .or_else(|| guid_address(&info.peer_guid, info.peer_addr.port(), family))
                .unwrap_or(relay);
            tracing::debug!(fd, new, %relay, %peer, guid = %info.peer_guid, "delivered session");
            fds::set(new, FdState::Delivered { peer });
            Some(peer)
        }
        None => relay_peer,
    };
    match shown {
        // SAFETY: `sa`/`len` are the caller's (null or valid).
        Some(peer) => unsafe { addr::write(&peer, sa, len) },
        None if !sa.is_null() && !len.is_null() => {
            // Not an IP socket: hand over what the kernel said.
            // SAFETY: `sa` holds `*len` bytes; `ss` holds `ss_len`.
            unsafe {
                let n = (*len).min(ss_len) as usize;
                std::ptr::copy_nonoverlapping((&raw const ss).cast::<u8>(), sa.cast::<u8>(), n);
                *len = ss_len;
            }
        }
        None => {}
    }
    new
}

/// A client's IPv6 address cannot show in an AF_INET socket: show the synthetic IPv4 address
/// of its GUID instead (which getnameinfo turns into `<guid>.<zone>`).
fn guid_address(guid: &namesock::identity::Guid, port: u16, family: c_int) -> Option<SocketAddr> {
    let zone = synthetic::gns().ok()?.zone().to_owned();
    let (v4, v6) = synthetic::assign(&format!("{guid}.{zone}")).ok()?;
    Some(if family == libc::AF_INET {
        SocketAddr::new(v4.into(), port)
    } else {
        SocketAddr::new(v6.into(), port)
    })
}

/// Forgets an fd that is closed or reused; a listener's port stops being served.
fn forget(fd: RawFd) {
    if let Some(FdState::Listening { port }) = fds::take(fd) {
        tracing::debug!(fd, port, "listener closed: unserving");
        engine::unserve(port);
    }
}

/// After `new` became a copy of `old` (dup, dup2, dup3): the copy is the same connection, with
/// the same peer. A listener's copy is not a second listener: closing one of them does not
/// stop the engine serving (the port is unserved when the original closes).
fn copied(old: RawFd, new: RawFd) {
    forget(new);
    if let Some(state @ (FdState::Client { .. } | FdState::Delivered { .. })) = fds::get(old) {
        fds::set(new, state);
    }
}

pub fn dup(fd: RawFd) -> c_int {
    // SAFETY: dup(2) takes a plain integer.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        copied(fd, new);
    }
    new
}

pub fn dup3(old: RawFd, new: RawFd, flags: Option<c_int>) -> c_int {
    // SAFETY: dup2(2)/dup3(2) take plain integers.
    let r = unsafe {
        match flags {
            Some(flags) => real::dup3(old, new, flags),
            None => real::dup2(old, new),
        }
    };
    // dup2(fd, fd) does nothing (and dup3 refuses it).
    if r >= 0 && old != new {
        copied(old, new);
    }
    r
}

pub fn close(fd: RawFd) -> c_int {
    forget(fd);
    // SAFETY: close(2) takes a plain integer.
    unsafe { real::close(fd) }
}

pub fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: close_range(2) takes plain integers.
    let r = unsafe { real::close_range(first, last, flags) };
    if r == 0 && flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        let end = last.min(fds::MAX_FD as c_uint - 1);
        for fd in first..=end {
            forget(fd as RawFd);
        }
    }
    r
}
