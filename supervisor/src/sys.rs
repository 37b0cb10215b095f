//! The system-call edge of the supervisor: the seccomp filter and its listener, descriptors
//! passed between processes, and reads of a supervised process's memory. All of the crate's
//! `unsafe` is here, each block with the invariant it relies on.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_long, c_uint, sock_filter, sock_fprog};

/// `AUDIT_ARCH_*` of the native system-call ABI, which the filter checks first.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
/// x86-64's x32 ABI sets this bit in the system-call number; the filter masks it off, so an
/// x32 `connect` is trapped as a native one.
#[cfg(target_arch = "x86_64")]
const SYSCALL_MASK: u32 = !0x4000_0000;
#[cfg(not(target_arch = "x86_64"))]
const SYSCALL_MASK: u32 = !0;

// Classic BPF opcodes (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    }
}

/// Offsets of the two halves of `args[4]` (little-endian): `sendto`'s destination address.
const ARG4_LO: u32 = 16 + 4 * 8;
const ARG4_HI: u32 = ARG4_LO + 4;

/// The filter: another ABI (a 32-bit `int 0x80` call) fails with ENOSYS, as it would bypass
/// the rest; `connect`, `listen` and a `sendto` that names a destination (DNS without
/// `connect`, as musl sends it) go to the supervisor; `io_uring_setup` fails with ENOSYS
/// (io_uring connects would bypass the filter; programs fall back to ordinary calls);
/// everything else, `sendto` on a connected socket (`send`) included, runs unobserved, at no
/// cost beyond this filter.
const FILTER: [sock_filter; 17] = [
    /* 0 */ stmt(LD_W_ABS, ARCH_OFFSET),
    /* 1 */ jeq(AUDIT_ARCH, 1, 0),
    /* 2 */ stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
    /* 3 */ stmt(LD_W_ABS, NR_OFFSET),
    /* 4 */ stmt(ALU_AND_K, SYSCALL_MASK),
    /* 5 */ jeq(libc::SYS_connect as u32, 9, 0),
    /* 6 */ jeq(libc::SYS_listen as u32, 8, 0),
    /* 7 */ jeq(libc::SYS_io_uring_setup as u32, 8, 0),
    /* 8 */ jeq(libc::SYS_sendto as u32, 1, 0),
    /* 9 */ stmt(RET_K, RET_ALLOW),
    /* 10 */ stmt(LD_W_ABS, ARG4_LO),
    /* 11 */ jeq(0, 0, 3),
    /* 12 */ stmt(LD_W_ABS, ARG4_HI),
    /* 13 */ jeq(0, 0, 1),
    /* 14 */ stmt(RET_K, RET_ALLOW),
    /* 15 */ stmt(RET_K, libc::SECCOMP_RET_USER_NOTIF),
    /* 16 */ stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
];

/// The system calls the filter sends to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trapped {
    Connect,
    Listen,
    SendTo,
    Other(i32),
}

impl Trapped {
    pub fn of(nr: i32) -> Trapped {
        match (nr as u32 & SYSCALL_MASK) as c_long {
            libc::SYS_connect => Trapped::Connect,
            libc::SYS_listen => Trapped::Listen,
            libc::SYS_sendto => Trapped::SendTo,
            _ => Trapped::Other(nr),
        }
    }
}

fn cvt(r: c_long) -> io::Result<c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// In the child between fork and exec: `no_new_privs`, die with the supervisor, default
/// signal mask, then the filter; the listener's descriptor number.
///
/// Async-signal-safe: system calls on stack data only, no allocation.
pub fn install_filter_in_child() -> io::Result<RawFd> {
    // SAFETY: prctl with integer arguments; sigprocmask with a set on the stack.
    unsafe {
        let mut empty: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) as c_long)?;
        cvt(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as c_long)?;
    }
    let prog = sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr().cast_mut(),
    };
    let seccomp = |flags: libc::c_ulong| {
        // SAFETY: `prog` points at FILTER, a static program of `len` instructions, which the
        // kernel copies before returning.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const sock_fprog,
            )
        })
    };
    // WAIT_KILLABLE_RECV (5.19): once the supervisor holds a notification, only a fatal signal
    // interrupts the call. Without it a signal (Go preempts its threads with SIGURG) would
    // restart a connect the supervisor is already carrying out.
    let listener = match seccomp(
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            seccomp(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?
        }
        r => r?,
    };
    Ok(listener as RawFd)
}

/// Makes `command`'s child install the filter between fork and exec and send the listener's
/// descriptor over the Unix socket `sock` (which the child inherits until exec).
pub fn filter_before_exec(command: &mut std::process::Command, sock: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY (the pre_exec contract): the closure runs in the forked child before exec and
    // only makes system calls on stack data (`install_filter_in_child`, `send_fd`, close): no
    // allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            let listener = install_filter_in_child()?;
            send_fd(sock, listener)?;
            libc::close(listener);
            Ok(())
        });
    }
}

/// A connected pair of Unix stream sockets (close-on-exec).
pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } as c_long)?;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Buffer for one `SCM_RIGHTS` control message carrying one descriptor (aligned for
/// `cmsghdr`).
#[repr(C, align(8))]
struct FdCmsg([u8; 24]);

/// Sends `fd` over the Unix socket `sock`. Async-signal-safe (stack only).
pub fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = FdCmsg([0; 24]);
    // SAFETY: msghdr is plain data; every pointer in it refers to a live stack buffer of the
    // stated size; CMSG_* stay inside `cmsg`, which has room for CMSG_SPACE(sizeof(int)).
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(mem::size_of::<c_int>() as c_uint) as usize;
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(mem::size_of::<c_int>() as c_uint) as usize;
        libc::CMSG_DATA(header).cast::<c_int>().write_unaligned(fd);
        cvt(libc::sendmsg(sock, &msg, 0) as c_long)?;
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
pub fn recv_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cmsg = FdCmsg([0; 24]);
    // SAFETY: as in `send_fd`; the kernel writes at most `msg_controllen` bytes of control
    // data, and a descriptor is taken only from an SCM_RIGHTS message of the right length.
    unsafe {
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.0.len();
        let n = cvt(libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) as c_long)?;
        let header = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || header.is_null()
            || (*header).cmsg_type != libc::SCM_RIGHTS
            || (*header).cmsg_len < libc::CMSG_LEN(mem::size_of::<c_int>() as c_uint) as usize
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no descriptor received",
            ));
        }
        let fd = libc::CMSG_DATA(header).cast::<c_int>().read_unaligned();
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// One trapped system call.
#[derive(Debug, Clone, Copy)]
pub struct Notif {
    pub id: u64,
    /// The calling thread (a thread ID, not necessarily the process ID).
    pub tid: u32,
    pub nr: i32,
    pub args: [u64; 6],
}

/// The seccomp listener: where the supervisor receives trapped calls and answers them.
#[derive(Debug)]
pub struct Listener(OwnedFd);

impl Listener {
    pub fn new(fd: OwnedFd) -> Listener {
        Listener(fd)
    }

    /// Waits for a notification; `Ok(None)` once no process uses the filter any more.
    pub fn recv(&self) -> io::Result<Option<Notif>> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on the stack.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if pfd.revents & libc::POLLIN == 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0
            {
                return Ok(None);
            }
            // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed and fills it.
            let mut n: libc::seccomp_notif = unsafe { mem::zeroed() };
            // SAFETY: NOTIF_RECV writes one seccomp_notif into `n`.
            let r = unsafe {
                libc::ioctl(
                    self.0.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_RECV,
                    &mut n as *mut libc::seccomp_notif,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                // ENOENT: the caller died (or was interrupted) before we took its call.
                if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) {
                    continue;
                }
                return Err(e);
            }
            return Ok(Some(Notif {
                id: n.id,
                tid: n.pid,
                nr: n.data.nr,
                args: n.data.args,
            }));
        }
    }

    /// Is the call `id` still waiting for its answer (the caller alive, not interrupted)?
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: ID_VALID reads one u64 from the pointer.
        unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                &id as *const u64,
            ) == 0
        }
    }

    fn send(&self, id: u64, val: i64, error: i32, flags: u32) -> io::Result<()> {
        let resp = libc::seccomp_notif_resp {
            id,
            val,
            error,
            flags,
        };
        // SAFETY: NOTIF_SEND reads one seccomp_notif_resp.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &resp as *const libc::seccomp_notif_resp,
            )
        };
        cvt(r as c_long).map(drop)
    }

    /// Let the call run as if untrapped.
    pub fn proceed(&self, id: u64) -> io::Result<()> {
        self.send(id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
    }

    /// The call returns `val`.
    pub fn succeed(&self, id: u64, val: i64) -> io::Result<()> {
        self.send(id, val, 0, 0)
    }

    /// The call fails with `errno`.
    pub fn fail(&self, id: u64, errno: i32) -> io::Result<()> {
        self.send(id, 0, -errno, 0)
    }
}

/// Reads `buf.len()` bytes at `addr` in the memory of thread `tid`; how many were read.
pub fn read_memory(tid: u32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which we own; the remote range is only read by the
    // kernel, which checks it against the other process's mappings.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    cvt(n as c_long).map(|n| n as usize)
}

/// The process (thread group) that thread `tid` belongs to.
pub fn tgid_of(tid: u32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Tgid in /proc status"))
}

/// A copy of descriptor `fd` of the process `pid` (`pidfd_getfd`: the same open file, as
/// after a `dup` in that process), close-on-exec.
pub fn copy_fd(pid: u32, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the result is checked and owned at once.
    let pidfd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) })?;
    // SAFETY: fresh descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: pidfd_getfd takes descriptors and flags; the result is checked and owned.
    let copy = cvt(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })?;
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// `listen(2)` on a descriptor the supervisor holds.
pub fn listen(fd: RawFd, backlog: c_int) -> io::Result<()> {
    // SAFETY: listen takes integers.
    cvt(unsafe { libc::listen(fd, backlog) } as c_long).map(drop)
}

/// `connect(2)` of a (blocking or not) socket to `addr`; EINPROGRESS is an error here.
pub fn connect(fd: RawFd, addr: &std::net::SocketAddr) -> io::Result<()> {
    let (ss, len) = storage(addr);
    // SAFETY: `ss` holds `len` bytes of a valid address.
    cvt(unsafe { libc::connect(fd, (&raw const ss).cast(), len) } as c_long).map(drop)
}

/// `bind(2)` to `addr`.
pub fn bind(fd: RawFd, addr: &std::net::SocketAddr) -> io::Result<()> {
    let (ss, len) = storage(addr);
    // SAFETY: `ss` holds `len` bytes of a valid address.
    cvt(unsafe { libc::bind(fd, (&raw const ss).cast(), len) } as c_long).map(drop)
}

/// Is the socket connected (has a peer)?
pub fn has_peer(fd: RawFd) -> bool {
    // SAFETY: sockaddr_storage is plain data of the stated length.
    unsafe {
        let mut ss: libc::sockaddr_storage = mem::zeroed();
        let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getpeername(fd, (&raw mut ss).cast(), &mut len) == 0
    }
}

fn storage(addr: &std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeros is valid.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        std::net::SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        std::net::SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut ss).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Blocks `signals` in the calling thread (and the threads it starts later).
pub fn block_signals(signals: &[c_int]) -> io::Result<()> {
    // SAFETY: a sigset on the stack, filled by sigaddset.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// Waits for one of `signals` (which the caller has blocked): the signal, and whether a
/// process sent it (`kill`, `sigqueue`) rather than the kernel (a terminal's ^C, which reaches
/// the whole foreground process group, the program included, by itself).
pub fn wait_signal(signals: &[c_int]) -> io::Result<(c_int, bool)> {
    // SAFETY: a sigset on the stack, filled by sigaddset; sigwaitinfo writes a siginfo_t.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        let mut info: libc::siginfo_t = mem::zeroed();
        let sig = libc::sigwaitinfo(&set, &mut info);
        if sig < 0 {
            return Err(io::Error::last_os_error());
        }
        // SI_USER (0), SI_QUEUE (-1), SI_TKILL (-6)...: sent by a process.
        Ok((sig, info.si_code <= 0))
    }
}

/// Sends `signal` to process `pid`.
pub fn kill(pid: u32, signal: c_int) {
    // SAFETY: kill takes integers.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}
