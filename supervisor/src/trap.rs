//! What the supervisor does with each trapped call.
//!
//! - `connect` to a synthetic address: a session through this process's engine, and the
//!   program's own socket (copied out with `pidfd_getfd`: the same open socket, so its
//!   options and flags stay as the program set them) connected to the engine's relay, as the
//!   preload's `connect` hook does. The call returns 0 once the session is established, for
//!   blocking and non-blocking sockets alike (the preload's semantics), or the engine's errno.
//! - `connect` to port 53 (UDP or TCP): the socket is connected to the DNS stub instead
//!   ([`crate::dns`]), which answers zone names and forwards the rest to that server.
//! - `listen` on a TCP socket: the supervisor listens on the program's socket itself, then
//!   the engine serves the port, delivering sessions to it (as the preload's `listen`).
//! - Anything else continues untouched (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
//!
//! The address is read from the program's memory and the notification checked to be still
//! valid afterwards (the thread may have died, and its number been reused). The supervisor is
//! not a sandbox: a program that rewrites the address after the check only fools itself.
//! Calls that take time (sessions, serving) run on worker threads, at most [`MAX_WORKERS`]
//! at once; past that a connect fails with EAGAIN.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use namesock::engine;
use namesock::interpose::{self, delivery_address, serve_errno, sockopt_int, tcp_family};
use namesock::synthetic;
use parking_lot::Mutex;

use crate::dns::{self, Stub};
use crate::sys::{self, Listener, Notif, Trapped};

/// Calls carried out at once on worker threads.
pub const MAX_WORKERS: usize = 256;
/// Longest address read from a program (a `sockaddr_in6` is 28 bytes).
const MAX_SOCKADDR: usize = 128;
/// The DNS port.
const DNS_PORT: u16 = 53;

pub struct Supervisor {
    listener: Listener,
    stub: Arc<Stub>,
    workers: AtomicUsize,
    /// Service ports the engine serves for the supervised programs.
    served: Mutex<HashSet<u16>>,
}

/// Why a trapped call gets the answer it gets.
enum Verdict {
    Continue,
    Return(i64),
    Fail(i32),
}

impl Supervisor {
    pub fn new(listener: Listener, stub: Arc<Stub>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            listener,
            stub,
            workers: AtomicUsize::new(0),
            served: Mutex::new(HashSet::new()),
        })
    }

    /// Answers trapped calls until no process uses the filter any more.
    pub fn run(self: Arc<Self>) {
        loop {
            let notif = match self.listener.recv() {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("seccomp listener: {e}");
                    return;
                }
            };
            let verdict = match Trapped::of(notif.nr) {
                Trapped::Connect => self.connect(notif),
                Trapped::Listen => self.spawn(notif, Supervisor::listen),
                Trapped::SendTo => Some(self.send_to(notif)),
                Trapped::Other(nr) => {
                    tracing::warn!(nr, "unexpected trapped system call");
                    Some(Verdict::Continue)
                }
            };
            if let Some(verdict) = verdict {
                self.answer(notif.id, verdict);
            }
        }
    }

    fn answer(&self, id: u64, verdict: Verdict) {
        let sent = match verdict {
            Verdict::Continue => self.listener.proceed(id),
            Verdict::Return(v) => self.listener.succeed(id, v),
            Verdict::Fail(errno) => self.listener.fail(id, errno),
        };
        if let Err(e) = sent {
            // ENOENT: the caller went away (killed) meanwhile.
            tracing::debug!(id, "answering a trapped call: {e}");
        }
    }

    /// Runs `work` on a worker thread (answering from there); `None` = answered later.
    fn spawn(
        self: &Arc<Self>,
        notif: Notif,
        work: fn(&Supervisor, Notif) -> Verdict,
    ) -> Option<Verdict> {
        let taken = self
            .workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WORKERS).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return Some(Verdict::Fail(libc::EAGAIN));
        }
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("namesock-trap".into())
            .spawn(move || {
                let verdict = work(&me, notif);
                me.answer(notif.id, verdict);
                me.workers.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(_) => None,
            Err(_) => {
                self.workers.fetch_sub(1, Ordering::AcqRel);
                Some(Verdict::Fail(libc::EAGAIN))
            }
        }
    }

    /// The address a trapped connect names, read from the caller's memory; `None` when it is
    /// not an IP address (or unreadable: the kernel will say EFAULT itself).
    fn connect_target(&self, notif: &Notif) -> Option<SocketAddr> {
        self.read_sockaddr(notif, notif.args[1], notif.args[2])
    }

    fn read_sockaddr(&self, notif: &Notif, at: u64, len: u64) -> Option<SocketAddr> {
        let len = (len as usize).min(MAX_SOCKADDR);
        let mut buf = [0u8; MAX_SOCKADDR];
        let n = sys::read_memory(notif.tid, at, &mut buf[..len]).ok()?;
        interpose::sockaddr_from_bytes(&buf[..n])
    }

    /// A `sendto` with a destination: a datagram to a synthetic address goes nowhere
    /// (ENETUNREACH, as a connect of a UDP socket to one); a DNS query to port 53 that names
    /// the zone is not sent (ENETUNREACH: the resolver tries, times out and fails; it cannot
    /// be answered, since such resolvers take answers only from the server's address); the
    /// rest continues.
    fn send_to(&self, notif: Notif) -> Verdict {
        let Some(to) = self.read_sockaddr(&notif, notif.args[4], notif.args[5]) else {
            return Verdict::Continue;
        };
        if synthetic::is_synthetic(to.ip()) {
            return Verdict::Fail(libc::ENETUNREACH);
        }
        if to.port() != DNS_PORT {
            return Verdict::Continue;
        }
        let len = (notif.args[2] as usize).min(dns::MAX_MESSAGE);
        let mut query = vec![0u8; len];
        let Ok(n) = sys::read_memory(notif.tid, notif.args[1], &mut query) else {
            return Verdict::Continue;
        };
        if !self.listener.id_valid(notif.id) {
            return Verdict::Fail(libc::EINTR);
        }
        match dns::answer(&query[..n]) {
            dns::Answer::Forward => Verdict::Continue,
            dns::Answer::Local(_) => {
                tracing::info!(%to, "a DNS query for the zone sent without connect: not sent");
                Verdict::Fail(libc::ENETUNREACH)
            }
        }
    }

    fn connect(self: &Arc<Self>, notif: Notif) -> Option<Verdict> {
        let Some(to) = self.connect_target(&notif) else {
            return Some(Verdict::Continue);
        };
        // The memory was read from the thread whose call this is, if it still waits (TOCTOU:
        // a dead thread's number may be reused by another process).
        if !self.listener.id_valid(notif.id) {
            return None;
        }
        if synthetic::is_synthetic(to.ip()) {
            return self.spawn(notif, Supervisor::connect_session);
        }
        if to.port() == DNS_PORT {
            return Some(self.redirect_dns(&notif, to));
        }
        Some(Verdict::Continue)
    }

    /// The caller's descriptor `args[0]`, copied into the supervisor (checked valid after).
    fn caller_fd(&self, notif: &Notif) -> Result<OwnedFd, Verdict> {
        let fd = notif.args[0] as RawFd;
        let copy = sys::tgid_of(notif.tid)
            .and_then(|pid| sys::copy_fd(pid, fd))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBADF) => Verdict::Fail(libc::EBADF),
                _ => {
                    tracing::warn!(
                        tid = notif.tid,
                        fd,
                        "cannot reach the program's socket: {e}"
                    );
                    Verdict::Fail(libc::EACCES)
                }
            })?;
        if !self.listener.id_valid(notif.id) {
            return Err(Verdict::Fail(libc::EINTR));
        }
        Ok(copy)
    }

    fn connect_session(&self, notif: Notif) -> Verdict {
        let Some(to) = self.connect_target(&notif) else {
            return Verdict::Fail(libc::EFAULT);
        };
        let copy = match self.caller_fd(&notif) {
            Ok(copy) => copy,
            Err(verdict) => return verdict,
        };
        let fd = copy.as_raw_fd();
        if tcp_family(fd).is_none() {
            // Only TCP is carried: a UDP or raw socket to a synthetic address goes nowhere.
            return Verdict::Fail(libc::ENETUNREACH);
        }
        let Some((target, port)) = synthetic::target_for(&to) else {
            tracing::info!(%to, "no name behind this synthetic address");
            return Verdict::Fail(libc::EHOSTUNREACH);
        };
        if sys::has_peer(fd) {
            return Verdict::Fail(libc::EISCONN);
        }
        match engine::connect_fd(fd, &target, port) {
            Ok(info) => {
                tracing::debug!(tid = notif.tid, %target, port, peer = %info.peer_addr, "connected");
                Verdict::Return(0)
            }
            Err(e) => {
                tracing::info!(%target, port, "connect failed: {e}");
                Verdict::Fail(e.errno())
            }
        }
    }

    /// Connects a DNS socket to the stub instead of `server`.
    fn redirect_dns(&self, notif: &Notif, server: SocketAddr) -> Verdict {
        let copy = match self.caller_fd(notif) {
            Ok(copy) => copy,
            Err(verdict) => return verdict,
        };
        let fd = copy.as_raw_fd();
        let kind = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE);
        let udp = match kind {
            Some(libc::SOCK_DGRAM) => true,
            Some(libc::SOCK_STREAM) => false,
            _ => return Verdict::Continue,
        };
        let family = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN);
        match self.attach_to_stub(fd, family, udp, server) {
            Ok(()) => Verdict::Return(0),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                if errno != libc::EINPROGRESS {
                    tracing::warn!(%server, "cannot redirect a DNS socket to the stub: {e}");
                }
                Verdict::Fail(errno)
            }
        }
    }

    fn attach_to_stub(
        &self,
        fd: RawFd,
        family: Option<libc::c_int>,
        udp: bool,
        server: SocketAddr,
    ) -> io::Result<()> {
        let stub = self.stub.addr(udp)?;
        let (loopback, stub) = match family {
            Some(libc::AF_INET) => (SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), stub),
            Some(libc::AF_INET6) => {
                let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
                (
                    SocketAddr::from((mapped, 0)),
                    SocketAddr::new(mapped.into(), stub.port()),
                )
            }
            _ => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        };
        // Bound first, so that the stub knows the socket before its first query arrives.
        let local = match interpose::local_addr(fd).filter(|a| a.port() != 0) {
            Some(local) => local,
            None => {
                sys::bind(fd, &loopback)?;
                interpose::local_addr(fd).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?
            }
        };
        self.stub
            .expect(local, server)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENOBUFS))?;
        tracing::debug!(%server, %local, udp, "DNS socket redirected to the stub");
        sys::connect(fd, &stub)
    }

    fn listen(&self, notif: Notif) -> Verdict {
        let copy = match self.caller_fd(&notif) {
            Ok(copy) => copy,
            Err(verdict) => return verdict,
        };
        let fd = copy.as_raw_fd();
        let Some(family) = tcp_family(fd) else {
            return Verdict::Continue;
        };
        if let Err(e) = sys::listen(fd, notif.args[1] as libc::c_int) {
            return Verdict::Fail(e.raw_os_error().unwrap_or(libc::EIO));
        }
        let Some(deliver_to) = delivery_address(fd, family) else {
            return Verdict::Return(0);
        };
        let port = deliver_to.port();
        if self.served.lock().contains(&port) || !interpose::exposed(fd) {
            return Verdict::Return(0);
        }
        match engine::serve(port, deliver_to) {
            Ok(()) => {
                tracing::debug!(port, %deliver_to, "serving");
                self.served.lock().insert(port);
                Verdict::Return(0)
            }
            Err(e) => {
                eprintln!("namesock: cannot serve port {port} by name: {e}");
                Verdict::Fail(serve_errno(&e))
            }
        }
    }
}
