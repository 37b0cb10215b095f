//! The few libc calls the engine needs that std and mio do not offer: socket options,
//! non-blocking dials from a chosen local address, the host's addresses, flags on a caller's
//! fd, and the service table's locks.

use std::fs::File;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::congestion::Congestion;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(super) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `v` outlives the call and the length is exactly its size; an invalid fd or option
    // is reported as an error, never undefined behaviour.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(super) fn getsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` outlive the call and `len` is exactly `v`'s size; an invalid fd or
    // option is reported as an error.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// This process's (soft, hard) open-file limits.
pub fn nofile_limits() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct that we own.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises this process's soft open-file limit to its hard limit. Returns the (soft, hard)
/// limits before and the soft limit now in force.
pub fn raise_nofile() -> io::Result<(u64, u64, u64)> {
    let (soft, hard) = nofile_limits()?;
    if soft < hard {
        let raised = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads one rlimit struct that we own; raising the soft limit up to
        // the hard one needs no privilege.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) })?;
    }
    Ok((soft, hard, hard.max(soft)))
}

pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Sends an acknowledgement this socket is holding back (delayed ACK) now.
pub fn ack_now(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1)
}

/// Gives the allocator's free memory back to the kernel (glibc's `malloc_trim`): the buffers
/// of a busy period, freed when its sessions went idle, otherwise stay in the process's
/// memory wherever a chunk still in use sits above them in the heap.
pub fn return_free_memory() {
    // SAFETY: no arguments to uphold; glibc takes its arenas' locks itself.
    unsafe { libc::malloc_trim(0) };
}

/// SO_LINGER {on, 0}: the next close sends a RST, so the peer program sees ECONNRESET.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `l` outlives the call; the length is its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// A socket address in the C layout.
pub fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Reads a C socket address (AF_INET or AF_INET6).
///
/// # Safety
/// `sa` must point to a valid socket address of its family's size.
pub unsafe fn from_sockaddr(sa: *const libc::sockaddr) -> Option<SocketAddr> {
    // SAFETY: the caller guarantees `sa` points to an address of the family it names.
    unsafe {
        match (*sa).sa_family as libc::c_int {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// A new non-blocking TCP socket of `domain`, neither bound nor connected.
pub fn tcp_socket(domain: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking TCP socket, bound but not yet connected: its local address is known
/// before the peer can see the connection.
pub struct Dialer(std::net::TcpStream);

impl Dialer {
    /// A socket for reaching `remote`, bound to `local` (port 0 when `local` is an IP only).
    pub fn new(remote: &SocketAddr, local: Option<IpAddr>) -> io::Result<Dialer> {
        let domain = if remote.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let owned = tcp_socket(domain)?;
        let fd = owned.as_raw_fd();
        if let Some(ip) = local {
            let (ss, len) = sockaddr(&SocketAddr::new(ip, 0));
            // SAFETY: `ss` holds a valid address of length `len`.
            cvt(unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) })?;
        }
        Ok(Dialer(std::net::TcpStream::from(owned)))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    pub fn set_nodelay(&self) -> io::Result<()> {
        set_nodelay(self.0.as_raw_fd())
    }

    /// A dial that stays on this host ([`super::local_hop::engine_end`]).
    pub fn for_local_hop(&self) {
        super::local_hop::engine_end(self.0.as_raw_fd())
    }

    /// Starts the connect (it completes in the background: wait for writable).
    pub fn connect(self, remote: SocketAddr) -> io::Result<mio::net::TcpStream> {
        let (ss, len) = sockaddr(&remote);
        // SAFETY: `ss` holds a valid address of length `len`.
        let r = unsafe {
            libc::connect(
                self.0.as_raw_fd(),
                (&ss as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(mio::net::TcpStream::from_std(self.0))
    }
}

/// What a flow path's socket is tuned with ([`PathTuning::tune`]).
#[derive(Debug, Clone, Copy)]
pub struct PathTuning {
    /// The kernel gives up on a path whose data stays unacknowledged this long (netlink
    /// cannot see a broken route upstream).
    pub user_timeout: Duration,
    /// TCP keepalive probes after this much silence.
    pub keepalive: Duration,
    /// The congestion control, if not the host's default (`NAMESOCK_PATH_CONGESTION`).
    pub congestion: Option<Congestion>,
}

impl PathTuning {
    /// Options for a flow path: no Nagle delay, the user timeout, keepalives and the
    /// congestion control if one is configured. Set on a
    /// dial's socket before it connects, and on the engine's listener, whose accepted paths
    /// inherit them (Linux copies a listener's options into each connection it accepts;
    /// `sys::tests` checks it), so a new path costs no system call for them.
    pub fn tune(&self, fd: RawFd) -> io::Result<()> {
        set_nodelay(fd)?;
        let ms = self.user_timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        let secs = self.keepalive.as_secs().clamp(1, 3600) as libc::c_int;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs)?;
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
        match self.congestion {
            Some(cc) => cc.apply(fd),
            None => Ok(()),
        }
    }
}

/// Starts a non-blocking TCP connect of a flow path to `remote`, from `local` if given (a
/// multihomed client pins a path to one interface's address this way), registered with
/// `registry` under `token` for both readiness kinds (the dial's completion comes as
/// writable).
pub fn dial_registered(
    registry: &mio::Registry,
    token: mio::Token,
    remote: SocketAddr,
    local: Option<IpAddr>,
    timers: PathTuning,
) -> io::Result<mio::net::TcpStream> {
    let dialer = Dialer::new(&remote, local)?;
    // Best effort: a path works without them, only notices a dead peer later.
    let _ = timers.tune(dialer.0.as_raw_fd());
    let mut stream = dialer.connect(remote)?;
    registry.register(
        &mut stream,
        token,
        mio::Interest::READABLE | mio::Interest::WRITABLE,
    )?;
    Ok(stream)
}

/// The addresses of this host's interfaces that are up: global ones first, loopback last
/// (so that a client on the same host still reaches us); link-local IPv6 is left out (it
/// needs a scope that means nothing to a peer).
pub fn local_addrs() -> io::Result<Vec<IpAddr>> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs.
    cvt(unsafe { libc::getifaddrs(&mut ifap) })?;
    let mut global = Vec::new();
    let mut loopback = Vec::new();
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_uint;
        let up = ifa.ifa_flags & want == want;
        if ifa.ifa_addr.is_null() || !up {
            continue;
        }
        // SAFETY: getifaddrs gives a valid address of the family it names.
        let Some(sa) = (unsafe { from_sockaddr(ifa.ifa_addr) }) else {
            continue;
        };
        let ip = sa.ip();
        match ip {
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {}
            _ if ip.is_loopback() => loopback.push(ip),
            _ if ip.is_unspecified() || ip.is_multicast() => {}
            _ => global.push(ip),
        }
    }
    // SAFETY: `ifap` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    global.sort();
    global.dedup();
    loopback.sort();
    loopback.dedup();
    global.extend(loopback);
    Ok(global)
}

/// The addresses configured on interface `index`, whatever its state.
pub fn addrs_of_interface(index: u32) -> io::Result<Vec<IpAddr>> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs.
    cvt(unsafe { libc::getifaddrs(&mut ifap) })?;
    let mut out = Vec::new();
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated interface name owned by the list.
        if unsafe { libc::if_nametoindex(ifa.ifa_name) } != index {
            continue;
        }
        // SAFETY: getifaddrs gives a valid address of the family it names.
        if let Some(sa) = unsafe { from_sockaddr(ifa.ifa_addr) } {
            out.push(sa.ip());
        }
    }
    // SAFETY: `ifap` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    Ok(out)
}

/// The address family (AF_INET/AF_INET6) of a socket.
pub fn socket_domain(fd: RawFd) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` outlive the call and describe a c_int.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// The shortest round trip the kernel measured on a TCP connection (`tcpi_min_rtt`, over
/// its last five minutes): the path's own, since the kernel answers a segment in its softirq,
/// without waiting for either engine's loop. `None` before the first measurement.
pub fn tcp_min_rtt(fd: RawFd) -> io::Result<Option<Duration>> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which outlives the call.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    // A kernel older than the field (4.10) leaves it zero, and an unmeasured one is ~0.
    let known = len as usize >= mem::offset_of!(libc::tcp_info, tcpi_min_rtt) + 4
        && info.tcpi_min_rtt != 0
        && info.tcpi_min_rtt != u32::MAX;
    Ok(known.then(|| Duration::from_micros(u64::from(info.tcpi_min_rtt))))
}

/// Whether a read on a socket would return something now: bytes, or the end of the stream
/// (which FIONREAD does not count: it says 0 for a socket whose peer closed).
pub fn has_input(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`, which outlives the call; MSG_PEEK
    // leaves the socket's queue as it is, MSG_DONTWAIT keeps the call from blocking.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

pub fn get_fl(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL only reads the descriptor's flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

pub fn set_fl(fd: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFL only changes the descriptor's status flags.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// Blocking connect of the caller's fd (retried on EINTR).
pub fn connect_blocking(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    loop {
        // SAFETY: `ss` holds a valid address of length `len`.
        let r = unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // An interrupted connect goes on in the background; EISCONN ends it.
            Some(libc::EALREADY) | Some(libc::EINPROGRESS) => {
                wait_writable(fd)?;
            }
            Some(libc::EISCONN) => return Ok(()),
            _ => return Err(e),
        }
    }
}

fn wait_writable(fd: RawFd) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 5_000) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(())
}

/// Writes all of `buf` to the caller's (blocking) fd.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length. MSG_NOSIGNAL: no SIGPIPE for the program.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if e.kind() == io::ErrorKind::WouldBlock {
                wait_writable(fd)?;
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// flock(2) on `file` with `op` (`LOCK_NB` included or not). `Ok(false)`: another open file
/// holds a conflicting lock.
pub fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock on a descriptor the caller owns.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes a POSIX record lock on all of `file` without waiting; `false` if another process
/// holds it. Unlike `flock`, the lock belongs to this process: a forked child does not
/// inherit it, and it goes when the process dies.
pub fn try_process_lock(file: &File) -> io::Result<bool> {
    // SAFETY: an all-zero `flock` struct is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_SETLK on a descriptor the caller owns, with a valid flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EAGAIN) => Ok(false),
        _ => Err(e),
    }
}

/// Whether process `pid` exists (it may belong to another user).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub fn getpid() -> u32 {
    std::process::id()
}

pub fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() as u32 }
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a valid ucred.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// Room for one descriptor's control message.
const FD_CMSG_SPACE: usize = 24;

/// Sends `fd` over the Unix stream socket `sock` (SCM_RIGHTS, with one data byte).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; FD_CMSG_SPACE / 8];
    // SAFETY: msghdr is plain old data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: `msg` has a control buffer of msg_controllen bytes (checked against its size),
    // so the first header and its data (one RawFd) lie inside it.
    unsafe {
        debug_assert!(msg.msg_controllen <= FD_CMSG_SPACE);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: `msg` describes valid buffers.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
    if n == 1 {
        Ok(())
    } else if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::ErrorKind::WriteZero.into())
    }
}

/// Receives one descriptor sent by [`send_fd`] (close-on-exec); anything else is an error.
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; FD_CMSG_SPACE / 8];
    // SAFETY: msghdr is plain old data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = FD_CMSG_SPACE;
    // SAFETY: `msg` describes valid buffers.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled msg_controllen bytes of `control`; CMSG_FIRSTHDR checks that a
    // header fits, and a header of type SCM_RIGHTS with length CMSG_LEN(4) carries one fd.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            || (*cmsg).cmsg_len != libc::CMSG_LEN(mem::size_of::<RawFd>() as u32) as usize
        {
            None
        } else {
            Some(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            )))
        }
    };
    match fd {
        Some(fd) if n == 1 && msg.msg_flags & libc::MSG_CTRUNC == 0 => Ok(fd),
        _ => Err(io::ErrorKind::InvalidData.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    /// The six options of a flow path, as read back from `fd`.
    fn path_options(fd: RawFd) -> [libc::c_int; 6] {
        [
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
            (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
            (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
            (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
        ]
        .map(|(level, name)| getsockopt_int(fd, level, name).unwrap())
    }

    /// The engine tunes its listener once and its dials before they connect: both ends of
    /// a path must come out with every option set.
    #[test]
    fn paths_accepted_from_a_tuned_listener_and_tuned_dials_carry_every_option() {
        let cubic: Congestion = "cubic".parse().unwrap();
        let timers = PathTuning {
            user_timeout: Duration::from_millis(15_000),
            keepalive: Duration::from_secs(5),
            congestion: Some(cubic),
        };
        let want = [1, 15_000, 1, 5, 5, 3];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        timers.tune(listener.as_raw_fd()).unwrap();
        let remote = listener.local_addr().unwrap();
        let poll = mio::Poll::new().unwrap();
        let dialled =
            dial_registered(poll.registry(), mio::Token(1), remote, None, timers).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        assert_eq!(path_options(accepted.as_raw_fd()), want, "accepted");
        assert_eq!(path_options(dialled.as_raw_fd()), want, "dialled");
        for fd in [accepted.as_raw_fd(), dialled.as_raw_fd()] {
            assert_eq!(Congestion::of(fd).unwrap(), cubic);
        }
        drop(dialled);
        let mut rest = Vec::new();
        accepted.read_to_end(&mut rest).unwrap();
    }

    /// A loopback connection's handshake is measured (a few µs, under 50 ms however loaded
    /// the machine); a socket that never connected has no round trip.
    #[test]
    fn the_kernels_minimum_round_trip_of_a_connection_is_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut dialled = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut dialled, b"ping").unwrap();
        let mut got = [0; 4];
        accepted.read_exact(&mut got).unwrap();
        let rtt = tcp_min_rtt(dialled.as_raw_fd()).unwrap().expect("measured");
        assert!(rtt < Duration::from_millis(50), "{rtt:?}");
        let unconnected = tcp_socket(libc::AF_INET).unwrap();
        assert_eq!(tcp_min_rtt(unconnected.as_raw_fd()).unwrap(), None);
        assert!(tcp_min_rtt(listener.as_raw_fd()).is_ok());
    }

    #[test]
    fn raise_nofile_lifts_the_soft_limit_to_the_hard_one() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_nofile.
        cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).unwrap();
        let lowered = libc::rlimit {
            rlim_cur: (lim.rlim_max / 2).max(64).min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as in raise_nofile; lowering the soft limit needs no privilege.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }).unwrap();
        let (soft, hard, now) = raise_nofile().unwrap();
        assert_eq!((soft, hard), (lowered.rlim_cur, lim.rlim_max));
        assert_eq!(now, lim.rlim_max);
        // SAFETY: as above.
        cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).unwrap();
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
