//! The engine: one background thread per process running a mio loop over every flow path,
//! listener and application-side socket, a thin driver around the sans-IO core: the
//! [`Session`](crate::session::Session), the server's [`Endpoint`](crate::endpoint::Endpoint)
//! and each client's [`PathManager`](crate::path_manager::PathManager). The rules below marked
//! *(core)* are decided there, and tested in virtual time; the engine only carries them out.
//!
//! # How it works
//!
//! - **One engine per process**, started by the first call that needs it. Other threads talk
//!   to it through a bounded command channel plus a mio `Waker`; they block, the loop never
//!   does. GNS resolves and publishes run on short-lived threads and report back through the
//!   same channel; a connect to a peer with a live client session needs no resolve (its
//!   verified record is in `Shared`'s `record_cache`). The handle is a leaked pointer tagged with the pid (no lock to be caught
//!   held by `fork`): a forked child starts its own engine on first use, sessions inherited
//!   from the parent stay with the parent's engine.
//! - **A loop turn costs what it touches.** Each session is filed in a timer heap under its
//!   next deadline (the session's own, a re-dial, the connect timeout); a turn recomputes the
//!   deadlines of the sessions its events, timers and driving touched, and all of them only
//!   after a rare event (a command, an accept, an address change). Every read goes through
//!   one engine-wide scratch buffer; a path keeps only a partial frame, a program is read
//!   only as far as its replay buffer has room, the receive buffer is written out in place,
//!   and drained stream buffers give their memory back, so an idle session costs little
//!   more than its sockets.
//! - **The program's socket is a real kernel socket.** Client: `connect_fd` waits for the
//!   session to be established, connects the caller's fd to the engine's loopback relay
//!   listener (127.0.0.1 or ::1 by the fd's family, temporarily blocking, flags restored) and
//!   writes a 16-byte random secret that pairs the connection with its session. Server: the
//!   engine connects to the program's own listener (`deliver_to`); the connection's 4-tuple
//!   is recorded *before* the connect and removed before the engine's end closes, so
//!   `claim_delivery(fd, listener)` answers the program's accept at once, and only for that socket
//!   (`delivery.rs`: no local user can pass for a delivery).
//! - **The relay is bounded both ways** (64 KiB per direction): the engine reads from the
//!   program only while `Session::app_write` takes bytes (replay room), so a full replay
//!   buffer is backpressure on the program, never loss. Program EOF becomes
//!   `app_shutdown_write` (FIN), the peer's FIN becomes `shutdown(SHUT_WR)`, a RESET (or the
//!   linger running out) closes the program's socket with `SO_LINGER {1, 0}`: ECONNRESET.
//! - **Flow paths** are TCP connections with `TCP_NODELAY`, `TCP_USER_TIMEOUT` (= path-dead
//!   time) and keepalive; frames are written while the path's 128 KiB write buffer has room
//!   and read into a buffer of at most one frame plus 64 KiB.
//! - **Client dialing** *(core: `PathManager`)*: the first connect races the locators happy-eyeballs style (IPv6 and
//!   IPv4 interleaved, the next one 250 ms after the previous); a dead path (`NeedPath`) is
//!   re-dialed at once to the MOVED and last-known locators together, and again every backoff
//!   tick (25 ms doubling to 1 s; a dial still hanging after 0.9 s is started afresh) with a
//!   fresh GNS resolve each time, until a path connects or the session's linger ends it. If every locator refused
//!   the TCP connect, and refused again in the next round, which dials a record looked up
//!   after the first refusal, and no dial of this connect ever connected, connect fails with
//!   ECONNREFUSED; otherwise it retries (the peer may be
//!   moving) until the connect timeout: ETIMEDOUT, or EHOSTUNREACH/ENETUNREACH when that was
//!   the last dial's error. A server's `RESET(PortRefused)` is ECONNREFUSED, a name with no
//!   record [`ConnectError::UnknownName`].
//! - **Mobility** *(core: `PathManager`, except noticing address changes)*: an rtnetlink socket (address and link groups) in the loop. A vanished local
//!   address (or an interface going down) kills its paths at once; a new one restarts any
//!   hanging dials. A server republishes its addresses off the loop on every change
//!   (coalesced) and sends MOVED on its sessions; a client that gets MOVED while its path is
//!   still alive dials the new address first (make-before-break) and drops the old path once
//!   the new one carried a frame; if the old address is still announced too, it opens a
//!   standby path to the new one instead. A server whose old address vanished before a MOVED
//!   could be sent on it is found through the GNS: a client engine watches the file store's
//!   records (`record_watch`: one inotify watch; a peer's changed record is read verified and
//!   handed to `PathManager::record_published`), a client whose peer's stream stops
//!   (`Event::PathQuiet`) or whose last path died asks the GNS at once and every 10 ms while
//!   it lasts (within a budget; sessions to one target share one lookup per 5 ms), a path
//!   that owes an answer and stays silent (`Event::PathSuspect`, after `NAMESOCK_SUSPECT_MS`
//!   or 3 RTTs) triggers a lookup too, and a newer record counts as MOVED. A multihomed client keeps a standby path from each other
//!   local address of the active path's family (at most 3 paths), so losing an interface
//!   costs no reconnect.
//! - **Server side** *(core: `Endpoint` routes HELLO and RESUME)*: the identity from the key
//!   file, this process's entry in the identity's service table (`service_table`: every
//!   process of one identity serves its own ports from its own engine, and each publishes the
//!   merged record; a port another process serves gets [`ServeError::PortInUse`]), the engine
//!   port on `[::]` (dual-stack; `NAMESOCK_ENGINE_PORT`, 0 = ephemeral), HELLO for a served port ->
//!   `Acceptor::accept_hello` -> delivery, any other port -> `RESET(PortRefused)`. RESUME:
//!   unknown connection ID -> RESET on that path only; otherwise `verify_resume` before
//!   anything of the session is touched, then `attach_resume`. A forged or replayed RESUME
//!   just loses its own path.
//! - **Relays** *(core: `relay::Registration`, and the path manager for when a client dials
//!   one)*: a server with `NAMESOCK_RELAY` keeps a control connection to each relay
//!   (`relay_link`), re-made at once when its local address went away, else after 100 ms
//!   doubling to 30 s; the relay's DIAL becomes a dial-back that the endpoint treats as a path
//!   arriving on the engine port. A client's path to a relay opens with the CONNECT preamble
//!   naming the server's GUID; HELLO or RESUME follow unchanged.
//! - **`namesock sessions`**: a Unix control socket in a 0700 directory of this user
//!   (`crate::control`), one more token in the loop; a connection from the same uid gets a
//!   JSON snapshot of the engine's state at that moment (`snapshot`), and nothing is done
//!   for it otherwise. Refused paths and frames are counted by reason where the driver
//!   receives the refusal. The socket is removed at exit.
//! - **At exit** (atexit), the process waits up to min(linger, 30 s) for sessions to deliver
//!   the program's last bytes and end, as the kernel would for a plain socket, and up to 2 s
//!   more for the peer's end (`exit_drain`). Bytes a program wrote that have not reached
//!   the engine's socket yet are waited for too: the kernel tells how many its socket has
//!   unacknowledged (`sock_diag`). A socket the program leaves open is closed for it as its
//!   kernel would after the exit: FIN, or RESET over unread bytes.

mod allow;
mod client;
pub mod congestion;
mod conn;
mod delivery;
mod event_loop;
mod exit_drain;
pub mod local_hop;
mod netlink;
mod path;
mod record_watch;
mod relay;
mod relay_link;
mod send_share;
mod server;
pub mod service_table;
pub mod snapshot;
mod sock_diag;
mod spare;

pub use allow::AllowFileError;
pub use delivery::claim_delivery;
pub(crate) mod sys;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use namesock_identity::{Guid, KeyFileError};
pub use namesock_resolver::Target;
use namesock_resolver::{Gns, GnsError};
use parking_lot::Mutex;

use crate::config::{Config, ConfigError};
use crate::record_cache::RecordCache;
use crate::wire::ResetReason;
pub use server::PublishError;

/// What a program may learn about the session behind its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The peer's identity (for a server: the client's key).
    pub peer_guid: Guid,
    /// The peer's name: for a client, the name it dialled (or the one the GUID's record
    /// claims); for a server, the client's verified name (filled by `TcpListener::accept`).
    pub peer_name: Option<String>,
    /// The real network address of the peer on the session's current flow path.
    pub peer_addr: SocketAddr,
    /// The service port the client asked for.
    pub service_port: u16,
}

/// Why the engine could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("namesock configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot start the namesock engine: {0}")]
    Io(#[from] io::Error),
    /// `NAMESOCK_PATH_CONGESTION` names an algorithm this kernel does not offer, or does
    /// not let this user choose (`net.ipv4.tcp_allowed_congestion_control`).
    #[error("NAMESOCK_PATH_CONGESTION={name}: {source}")]
    PathCongestion {
        name: congestion::Congestion,
        source: io::Error,
    },
}

/// Why a session could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Start(#[from] StartError),
    /// The name or GUID has no record in the GNS.
    #[error("{0} is not in the GNS")]
    UnknownName(Target),
    /// The GNS could not be asked, or its answer did not verify.
    #[error("GNS: {0}")]
    Gns(#[source] GnsError),
    /// The peer does not serve this port, or its engine port is closed.
    #[error("{target} refused port {port}")]
    Refused { target: String, port: u16 },
    #[error("no path to the peer within the connect timeout")]
    TimedOut,
    #[error("host unreachable")]
    HostUnreachable,
    #[error("network unreachable")]
    NetUnreachable,
    /// The handshake failed (the peer could not prove its GUID, or reset the session).
    #[error("the peer reset the session: {0:?}")]
    Reset(ResetReason),
    /// The peer refused the session by policy (its allow list, its limits), signed.
    #[error("refused by {guid}: {}", reason.describe())]
    Denied { guid: Guid, reason: ResetReason },
    /// The caller's socket is unusable or could not be connected to the relay.
    #[error("cannot attach the socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the namesock engine stopped")]
    EngineGone,
}

impl ConnectError {
    /// The errno a program would expect from connect(2) for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            ConnectError::Start(StartError::Io(e)) | ConnectError::Socket(e) => {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
            ConnectError::Start(StartError::Config(_) | StartError::PathCongestion { .. }) => {
                libc::EINVAL
            }
            ConnectError::UnknownName(_)
            | ConnectError::Refused { .. }
            | ConnectError::Denied { .. } => libc::ECONNREFUSED,
            ConnectError::Gns(_) | ConnectError::HostUnreachable => libc::EHOSTUNREACH,
            ConnectError::TimedOut => libc::ETIMEDOUT,
            ConnectError::NetUnreachable => libc::ENETUNREACH,
            ConnectError::Reset(_) => libc::ECONNRESET,
            ConnectError::EngineGone => libc::EIO,
        }
    }
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> io::Error {
        let errno = e.errno();
        io::Error::new(io::Error::from_raw_os_error(errno).kind(), e)
    }
}

/// Why this process cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// Another program of this identity on this host serves the port (or the record is full).
    #[error("port {port} is not served by name: {conflict}")]
    PortInUse {
        port: u16,
        conflict: service_table::PortConflict,
    },
    #[error("cannot listen on engine port {port}: {source}")]
    Bind { port: u16, source: io::Error },
    #[error("cannot publish this host's addresses: {0}")]
    Publish(#[source] server::PublishError),
    #[error(transparent)]
    Allow(#[from] allow::AllowFileError),
    #[error("the namesock engine stopped")]
    EngineGone,
}

/// What the loop tells a waiting `connect_fd`.
pub(crate) struct Ready {
    secret: [u8; relay::SECRET_LEN],
    info: SessionInfo,
}

/// Requests to the loop, and results of off-loop work. Results come boxed: a record is about
/// 400 bytes, and the channel's 1,024 slots are as large as its largest command (a 464-byte
/// command made a process's first connect fault in 475 KB, about 270 µs).
pub(crate) enum Command {
    Connect {
        target: Target,
        port: u16,
        reply: SyncSender<Result<Ready, ConnectError>>,
    },
    /// The caller could not attach its fd: drop the session.
    Abandon {
        secret: [u8; relay::SECRET_LEN],
    },
    Serve {
        port: u16,
        deliver_to: SocketAddr,
        reply: SyncSender<Result<(), ServeError>>,
    },
    Unserve {
        port: u16,
    },
    /// A connect's first lookup.
    Resolved {
        conn: u64,
        result: Box<Result<namesock_resolver::Record, GnsError>>,
    },
    /// A lookup established sessions asked for (`Engine::lookups`).
    Reresolved {
        target: namesock_resolver::Target,
        result: Box<Result<namesock_resolver::Record, GnsError>>,
    },
    /// A watched peer's record, read again because the store changed (`record_watch`).
    RecordChanged {
        guid: Guid,
        result: Box<Result<namesock_resolver::Record, GnsError>>,
    },
    /// A named relay's record (`relay_link`).
    RelayResolved {
        link: usize,
        result: Box<Result<namesock_resolver::Record, relay_link::RelayResolveError>>,
    },
    Published {
        result: Box<Result<server::Published, server::PublishError>>,
    },
    /// Reply once no half-closed session still has bytes to deliver.
    Drain {
        reply: SyncSender<()>,
    },
    /// At exit: take this process's ports out of the record, then reply.
    Withdraw {
        reply: SyncSender<()>,
    },
}

impl Command {
    /// Whether the command's handler marks every session it changes (`Engine::dirty`), so
    /// the turn need not recompute every session's deadline after it. These are the ones a
    /// program's connects send, one or two per connection; the rest are rare.
    fn marks_its_sessions(&self) -> bool {
        matches!(
            self,
            Command::Connect { .. }
                | Command::Abandon { .. }
                | Command::Resolved { .. }
                | Command::Reresolved { .. }
                | Command::RecordChanged { .. }
        )
    }
}

/// The part of the engine other threads read directly (short critical sections only, and
/// never across a fork: a child uses its own engine).
pub(crate) struct Shared {
    /// Deliveries whose engine end is open (what the program's accept sees as its peer).
    deliveries: delivery::Deliveries,
    relay_v4: Option<SocketAddr>,
    relay_v6: Option<SocketAddr>,
    gns: Mutex<Option<Arc<Gns>>>,
    local_guid: Mutex<Option<Guid>>,
    /// The control socket (removed at exit).
    control_path: Option<PathBuf>,
    /// The socket forked children ask about deliveries, once serving (removed at exit).
    children_path: Mutex<Option<PathBuf>>,
    /// Verified records of the peers of live client sessions: the loop's connects and the
    /// program's name lookups (`synthetic::lookup`) take them instead of asking the GNS.
    records: Mutex<RecordCache>,
}

impl Shared {
    pub(crate) fn gns(&self) -> Result<Arc<Gns>, GnsError> {
        let mut g = self.gns.lock();
        if let Some(gns) = &*g {
            return Ok(gns.clone());
        }
        let gns = Arc::new(Gns::from_env()?);
        *g = Some(gns.clone());
        Ok(gns)
    }

    /// The GNS client if one was opened already (never opens one).
    pub(crate) fn gns_if_open(&self) -> Option<Arc<Gns>> {
        self.gns.lock().clone()
    }
}

/// Whether this process's engine, if it runs, has a live session with `target` whose record
/// the GNS verified recently (see `record_cache`): a lookup of `target` would say what the
/// engine already knows. Never starts the engine.
pub(crate) fn knows_live_peer(target: &Target) -> bool {
    current().is_some_and(|h| {
        let unix_now = namesock_resolver::record::unix_now();
        h.shared
            .records
            .lock()
            .lookup(target, std::time::Instant::now(), unix_now)
            .is_some()
    })
}

/// A running engine, as seen from the program's threads.
pub(crate) struct Handle {
    pid: u32,
    tx: SyncSender<Command>,
    waker: Arc<mio::Waker>,
    shared: Arc<Shared>,
    cfg: Config,
}

/// Bound of the command channel: callers block (never the loop) when it is full.
const COMMAND_QUEUE: usize = 1024;

impl Handle {
    fn send(&self, cmd: Command) -> Result<(), ()> {
        self.tx.send(cmd).map_err(drop)?;
        self.waker.wake().map_err(drop)
    }
}

/// The engine of this process. A pointer rather than a lock-protected slot, so that a child
/// forked while another thread was starting the engine never finds a lock held forever.
static ENGINE: AtomicPtr<Handle> = AtomicPtr::new(std::ptr::null_mut());
/// Pid of the process whose thread is starting an engine right now (0: nobody).
static STARTING: AtomicU32 = AtomicU32::new(0);

fn current() -> Option<&'static Handle> {
    current_in(sys::getpid())
}

/// The engine of process `me` (this one), if it has started (not the parent's, after a fork).
fn current_in(me: u32) -> Option<&'static Handle> {
    let p = ENGINE.load(Ordering::Acquire);
    // SAFETY: a non-null ENGINE points to a leaked `Handle` that is never freed.
    let h = unsafe { p.as_ref() }?;
    (h.pid == me).then_some(h)
}

/// The engine of this process, started on first use (and anew in a forked child).
pub(crate) fn handle() -> Result<&'static Handle, StartError> {
    let me = sys::getpid();
    loop {
        if let Some(h) = current_in(me) {
            return Ok(h);
        }
        let starting = STARTING.load(Ordering::Acquire);
        if starting == me {
            // Another thread of this process is starting it.
            std::thread::yield_now();
            continue;
        }
        // 0, or a stale pid inherited from a parent that forked mid-start.
        if STARTING
            .compare_exchange(starting, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            continue;
        }
        let result = start();
        if let Ok(h) = &result {
            // Leaked on purpose: one per process, and the child of a fork must not free the
            // parent's (its thread does not exist there).
            ENGINE.store(Box::into_raw(Box::new(h.clone_parts())), Ordering::Release);
        }
        STARTING.store(0, Ordering::Release);
        result?;
    }
}

impl Handle {
    fn clone_parts(&self) -> Handle {
        Handle {
            pid: self.pid,
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            shared: self.shared.clone(),
            cfg: self.cfg.clone(),
        }
    }
}

fn start() -> Result<Handle, StartError> {
    let cfg = Config::load()?;
    crate::logging::init(&cfg);
    if let Some(cc) = cfg.path_congestion {
        cc.check_available()
            .map_err(|source| StartError::PathCongestion { name: cc, source })?;
    }
    let (tx, rx): (SyncSender<Command>, Receiver<Command>) = mpsc::sync_channel(COMMAND_QUEUE);
    let (engine, waker, shared) = event_loop::Engine::new(cfg.clone(), rx, tx.clone())?;
    std::thread::Builder::new()
        .name("namesock-engine".into())
        .spawn(move || engine.run())?;
    // SAFETY: registers a plain extern "C" function; atexit has no other preconditions.
    unsafe { libc::atexit(drain_at_exit) };
    tracing::debug!(pid = sys::getpid(), "engine started");
    Ok(Handle {
        pid: sys::getpid(),
        tx,
        waker,
        shared,
        cfg,
    })
}

/// A process's first connect: the engine starts on a thread of its own while this one looks
/// `target` up (the connect then takes the record: `synthetic::take_recent_lookup`), so the
/// connect waits for the longer of the two, not both. Where the program's own `getaddrinfo`
/// just looked the target up, the engine starts here.
fn start_while_looking_up(target: &Target) -> Result<&'static Handle, StartError> {
    if crate::synthetic::recent_lookup_serves(target) {
        return handle();
    }
    std::thread::scope(|s| {
        // A `namesock-` thread: the preload's hooks pass its calls straight to libc.
        let starting = std::thread::Builder::new()
            .name("namesock-start".into())
            .spawn_scoped(s, handle);
        let Ok(starting) = starting else {
            return handle();
        };
        crate::synthetic::look_up_ahead(target);
        starting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Longest wait at process exit for this process's ports to leave the record.
const WITHDRAW_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest wait at process exit for sessions to deliver what the program sent.
const EXIT_DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// At exit, the program's last bytes may still sit in the engine (a kernel socket would have
/// delivered them after exit): wait, bounded, for every half-closed session to finish.
extern "C" fn drain_at_exit() {
    // Never unwind into libc.
    let _ = std::panic::catch_unwind(|| {
        let Some(h) = current() else {
            return;
        };
        // This process's ports leave the record first: new clients are refused at once
        // rather than dialling an engine that is about to close. On the engine's side: this
        // thread's thread-locals (the logger's among them) are gone by now.
        let (reply, rx) = mpsc::sync_channel(1);
        if h.send(Command::Withdraw { reply }).is_ok() {
            let _ = rx.recv_timeout(WITHDRAW_MAX);
        }
        let (reply, rx) = mpsc::sync_channel(1);
        if h.send(Command::Drain { reply }).is_ok() {
            let limit = h.cfg.linger().min(EXIT_DRAIN_MAX);
            let _ = rx.recv_timeout(limit);
        }
        if let Some(path) = &h.shared.control_path {
            let _ = std::fs::remove_file(path);
        }
        if let Some(path) = h.shared.children_path.lock().take() {
            let _ = std::fs::remove_file(path);
        }
    });
}

/// The effective configuration of this process's engine (starting it if needed).
pub fn config() -> Result<Config, StartError> {
    Ok(handle()?.cfg.clone())
}

/// The GNS this process's engine uses.
pub fn gns() -> Result<Arc<Gns>, ConnectError> {
    handle()?.shared.gns().map_err(ConnectError::Gns)
}

/// Establishes a session to `target:port` and connects `fd` (a fresh, unconnected AF_INET or
/// AF_INET6 SOCK_STREAM socket of the caller) to the engine's loopback relay for it.
///
/// Blocks up to the connect timeout. On success `fd` is a connected TCP socket carrying the
/// session's bytes; its O_NONBLOCK flag is as it was.
pub fn connect_fd(fd: RawFd, target: &Target, port: u16) -> Result<SessionInfo, ConnectError> {
    let h = match current() {
        Some(h) => h,
        None => start_while_looking_up(target)?,
    };
    let relay = match sys::socket_domain(fd).map_err(ConnectError::Socket)? {
        libc::AF_INET => h.shared.relay_v4,
        // Without ::1 (IPv6 off), a dual-stack socket still reaches 127.0.0.1 as v4-mapped.
        libc::AF_INET6 => h.shared.relay_v6.or_else(|| {
            h.shared.relay_v4.map(|a| match a {
                SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), a.port()),
                v6 => v6,
            })
        }),
        _ => None,
    }
    .ok_or_else(|| ConnectError::Socket(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)))?;
    let (reply, rx) = mpsc::sync_channel(1);
    h.send(Command::Connect {
        target: target.clone(),
        port,
        reply,
    })
    .map_err(|()| ConnectError::EngineGone)?;
    let ready = rx.recv().map_err(|_| ConnectError::EngineGone)??;
    let attach = || -> io::Result<()> {
        let flags = sys::get_fl(fd)?;
        let nonblocking = flags & libc::O_NONBLOCK != 0;
        if nonblocking {
            sys::set_fl(fd, flags & !libc::O_NONBLOCK)?;
        }
        local_hop::program_end(fd, fd);
        let r = sys::connect_blocking(fd, &relay).and_then(|()| sys::write_all(fd, &ready.secret));
        if nonblocking {
            sys::set_fl(fd, flags)?;
        }
        r
    };
    if let Err(e) = attach() {
        let _ = h.send(Command::Abandon {
            secret: ready.secret,
        });
        return Err(ConnectError::Socket(e));
    }
    Ok(ready.info)
}

/// Establishes a session to `target:port` and returns a std TCP stream carrying it.
pub fn connect(
    target: &Target,
    port: u16,
) -> Result<(std::net::TcpStream, SessionInfo), ConnectError> {
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(ConnectError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is fresh and owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let info = connect_fd(fd, target, port)?;
    Ok((std::net::TcpStream::from(owned), info))
}

/// Serves service `port`: sessions for it are delivered by connecting to `deliver_to` (where
/// the program's own listening socket accepts, e.g. 127.0.0.1:8000).
///
/// The first call starts the server side: loads (or creates) the identity, takes an entry in
/// its service table, binds the engine port. Every call publishes the identity's merged
/// record (and registers `NAMESOCK_NAME` once) and returns once that is done: with
/// [`ServeError::PortInUse`] if another process of the identity serves `port`.
pub fn serve(port: u16, deliver_to: SocketAddr) -> Result<(), ServeError> {
    let h = handle()?;
    let (reply, rx) = mpsc::sync_channel(1);
    h.send(Command::Serve {
        port,
        deliver_to,
        reply,
    })
    .map_err(|()| ServeError::EngineGone)?;
    rx.recv().map_err(|_| ServeError::EngineGone)?
}

/// Stops delivering new sessions for `port` (existing ones go on); later HELLOs for it are
/// refused.
pub fn unserve(port: u16) {
    if let Some(h) = current() {
        let _ = h.send(Command::Unserve { port });
    }
}

/// The GUID this process serves as (its key file's), once `serve` has succeeded.
pub fn local_guid() -> Option<Guid> {
    let h = current()?;
    *h.shared.local_guid.lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command channel's slots are written at engine start, each as large as the largest
    /// command: a process's first connect pays for every page of them.
    #[test]
    fn commands_are_small_so_the_channel_costs_little_to_create() {
        let slots = COMMAND_QUEUE * std::mem::size_of::<Command>();
        assert!(slots <= 64 * 1024, "{slots} bytes of channel slots");
    }
}
