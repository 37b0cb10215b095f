//! The engine thread: a mio loop that drives sessions, flow paths and relays.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use namesock_identity::{Keypair, PublicKey};
use namesock_resolver::{GnsError, Record, Target};

use crate::config::Config;
use crate::session::{Acceptor, Event, Session, SessionConfig};
use crate::wire::{ConnId, Frame, Hello, PathId, ResetReason, Resume};

use super::netlink::{AddrChange, AddrMonitor};
use super::path::{FlowPath, PathState, ReadOutcome, SCRATCH_LEN};
use super::relay::{AppSide, SECRET_LEN};
use super::{Command, ConnectError, Ready, ServeError, SessionInfo, Shared, sys};

const WAKER: Token = Token(0);
const RELAY_V4: Token = Token(1);
const RELAY_V6: Token = Token(2);
const LISTENER: Token = Token(3);
const MONITOR: Token = Token(4);
const FIRST_DYNAMIC: usize = 16;

/// Happy eyeballs: start the next locator's dial this long after the previous one.
const STAGGER: Duration = Duration::from_millis(250);
/// Re-dial backoff while a session has no path.
const BACKOFF_MIN: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A dial still connecting after this long is abandoned at the next round.
const DIAL_STALE: Duration = Duration::from_millis(900);
/// At most this many paths (active and standby) per multihomed client session.
const MAX_STANDBY: usize = 3;
/// At most this many dials in flight per session.
const MAX_DIALS: usize = 16;
/// A program has this long to attach its fd to the relay after `connect_fd` got its answer.
const PAIR_TIMEOUT: Duration = Duration::from_secs(10);
/// A server path must present HELLO or RESUME within this long.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on server paths that have not yet presented HELLO/RESUME.
const MAX_UNATTACHED: usize = 256;
/// Bound on relay connections that have not yet sent their secret.
const MAX_PENDING_APPS: usize = 256;

enum Io {
    Path(PathId),
    App(u64),
    Pending(u64),
}

/// A relay connection from the program that has not yet said which session it is for.
struct PendingApp {
    stream: TcpStream,
    got: [u8; SECRET_LEN],
    len: usize,
    since: Instant,
}

struct Conn {
    session: Session,
    server: bool,
    port: u16,
    // client
    target: Option<Target>,
    peer_name: Option<String>,
    reply: Option<SyncSender<Result<Ready, ConnectError>>>,
    deadline: Option<Instant>,
    secret: Option<[u8; SECRET_LEN]>,
    pair_deadline: Option<Instant>,
    locators: Vec<SocketAddr>,
    record_seq: u64,
    moved: Vec<SocketAddr>,
    moved_seq: u64,
    dial_queue: VecDeque<SocketAddr>,
    next_dial: Option<Instant>,
    backoff: Duration,
    need_path: bool,
    resolving: bool,
    /// errno of the latest failed dial, and whether every dial of this round was refused.
    last_error: Option<i32>,
    round_refused: bool,
    round_resolved: bool,
    // both
    app: Option<AppSide>,
    delivery: Option<SocketAddr>,
    paths: Vec<PathId>,
    /// Both directions finished and confirmed (a server session still lingers for resumes),
    /// or the session was reset: nothing more to dial or relay.
    closed: bool,
    /// Local addresses a standby path was tried from (until the addresses change).
    standby_tried: HashSet<std::net::IpAddr>,
    /// When the latest round of dials started.
    last_round: Option<Instant>,
    /// The deadline this session is filed under in the engine's timer heap.
    timer: Option<Instant>,
}

/// A connect request waiting for its GNS answer (the session needs the peer's GUID).
struct Connecting {
    target: Target,
    port: u16,
    reply: SyncSender<Result<Ready, ConnectError>>,
    deadline: Instant,
}

/// Server side state, set up by the first `serve`.
struct Server {
    listener: TcpListener,
    port: u16,
    key: Arc<Keypair>,
    acceptor: Acceptor,
    services: HashMap<u16, SocketAddr>,
    _lock: File,
    publishing: bool,
    republish: bool,
    registered: bool,
    published: Option<(u64, Vec<SocketAddr>)>,
    waiters: Vec<SyncSender<Result<(), ServeError>>>,
    /// When to publish again although nothing changed: records and name bindings expire.
    refresh_at: Option<Instant>,
    /// Publish attempts that failed in a row (retried sooner).
    failures: u32,
}

/// Time until the next publish: well before a record expires, or soon after a failure (the
/// GNS may be back), backing off to a minute.
fn refresh_delay(failures: u32) -> Duration {
    if failures == 0 {
        namesock_resolver::RECORD_LIFETIME / 4
    } else {
        Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60))
    }
}

pub(crate) struct Engine {
    poll: Poll,
    cfg: Config,
    session_cfg: SessionConfig,
    rx: Receiver<Command>,
    tx: SyncSender<Command>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    relay_v4: Option<TcpListener>,
    relay_v6: Option<TcpListener>,
    monitor: Option<AddrMonitor>,
    server: Option<Server>,
    client_key: Arc<Keypair>,
    connecting: HashMap<u64, Connecting>,
    conns: HashMap<u64, Conn>,
    /// Server sessions by connection ID (where a RESUME finds its session).
    by_conn_id: HashMap<ConnId, u64>,
    secrets: HashMap<[u8; SECRET_LEN], u64>,
    paths: HashMap<PathId, FlowPath>,
    pending: HashMap<u64, (Token, PendingApp)>,
    io: HashMap<Token, Io>,
    next_token: usize,
    next_path: PathId,
    next_key: u64,
    dirty: HashSet<u64>,
    /// Threads waiting (at process exit) for half-closed sessions to finish.
    drain_waiters: Vec<SyncSender<()>>,
    /// Sessions by deadline, so that a loop turn costs what it touches, not every session.
    /// Entries whose deadline no longer matches `Conn::timer` are stale and skipped.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Sessions whose deadline may have changed this turn (besides `dirty`).
    touched: Vec<u64>,
    /// Something happened whose sessions are not known (a command, an accept, an address
    /// change): recompute every session's deadline at the end of the turn.
    touched_all: bool,
    /// Server paths accepted and not yet attached, by accept time (oldest first).
    unattached: VecDeque<(Instant, PathId)>,
    /// Every read and relay goes through this one buffer (the loop is single-threaded), so
    /// an idle session holds no IO buffers.
    scratch: Vec<u8>,
}

fn session_config(cfg: &Config) -> SessionConfig {
    SessionConfig {
        replay_capacity: cfg.replay_bytes,
        recv_capacity: cfg.replay_bytes,
        keepalive_interval: cfg.keepalive(),
        path_dead_after: cfg.path_dead(),
        suspect_after: cfg.suspect(),
        linger: cfg.linger(),
    }
}

fn bind_relay(ip: std::net::IpAddr) -> Option<TcpListener> {
    match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(%ip, error = %e, "no relay listener on this loopback address");
            None
        }
    }
}

impl Engine {
    pub(crate) fn new(
        cfg: Config,
        rx: Receiver<Command>,
        tx: SyncSender<Command>,
    ) -> io::Result<(Engine, Arc<Waker>, Arc<Shared>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut relay_v4 = bind_relay(Ipv4Addr::LOCALHOST.into());
        let mut relay_v6 = bind_relay(Ipv6Addr::LOCALHOST.into());
        if relay_v4.is_none() && relay_v6.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no loopback address for the relay (is `lo` up?)",
            ));
        }
        for (l, t) in [(&mut relay_v4, RELAY_V4), (&mut relay_v6, RELAY_V6)] {
            if let Some(l) = l {
                poll.registry().register(l, t, Interest::READABLE)?;
            }
        }
        let monitor = match AddrMonitor::open() {
            Ok(m) => {
                poll.registry().register(
                    &mut SourceFd(&m.as_raw_fd()),
                    MONITOR,
                    Interest::READABLE,
                )?;
                Some(m)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no address monitor: address changes are noticed by keepalive only");
                None
            }
        };
        let shared = Arc::new(Shared {
            deliveries: Default::default(),
            relay_v4: relay_v4.as_ref().and_then(|l| l.local_addr().ok()),
            relay_v6: relay_v6.as_ref().and_then(|l| l.local_addr().ok()),
            gns: Default::default(),
            local_guid: Default::default(),
        });
        // A client proves a stable identity when this user has one; otherwise a fresh key
        // per process (the server learns a GUID either way).
        let client_key =
            Arc::new(Keypair::load(&cfg.key_path()).unwrap_or_else(|_| Keypair::generate()));
        let engine = Engine {
            poll,
            session_cfg: session_config(&cfg),
            cfg,
            rx,
            tx,
            waker: waker.clone(),
            shared: shared.clone(),
            relay_v4,
            relay_v6,
            monitor,
            server: None,
            client_key,
            connecting: HashMap::new(),
            conns: HashMap::new(),
            by_conn_id: HashMap::new(),
            secrets: HashMap::new(),
            paths: HashMap::new(),
            pending: HashMap::new(),
            io: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            next_path: 1,
            next_key: 1,
            dirty: HashSet::new(),
            drain_waiters: Vec::new(),
            timers: BinaryHeap::new(),
            touched: Vec::new(),
            touched_all: false,
            unattached: VecDeque::new(),
            scratch: vec![0; SCRATCH_LEN],
        };
        Ok((engine, waker, shared))
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self
                .next_timeout()
                .map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(error = %e, "engine poll failed; engine stops");
                return;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    RELAY_V4 | RELAY_V6 => {
                        self.touched_all = true;
                        self.accept_relay(ev.token(), now)
                    }
                    LISTENER => {
                        self.touched_all = true;
                        self.accept_paths(now)
                    }
                    MONITOR => {
                        self.touched_all = true;
                        self.on_addr_change(now)
                    }
                    t => {
                        self.touch_io(t);
                        self.on_io(t, ev, now)
                    }
                }
            }
            if !self.drain_commands(now) {
                tracing::debug!("all handles gone; engine stops");
                return;
            }
            self.on_timers(Instant::now());
            let dirty: Vec<u64> = self.dirty.drain().collect();
            for &key in &dirty {
                self.drive(key, Instant::now());
            }
            self.touched.extend(dirty);
            self.reschedule();
            if !self.drain_waiters.is_empty() && !self.draining() {
                for w in self.drain_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
    }

    /// Commands from other threads. `false`: every sender is gone.
    fn drain_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    self.touched_all = true;
                    self.on_command(cmd, now)
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Connect {
                target,
                port,
                reply,
            } => self.start_connect(target, port, reply, now),
            Command::Abandon { secret } => {
                if let Some(key) = self.secrets.remove(&secret)
                    && let Some(c) = self.conns.get_mut(&key)
                {
                    c.session.app_abort();
                    self.dirty.insert(key);
                }
            }
            Command::Serve {
                port,
                deliver_to,
                reply,
            } => self.serve(port, deliver_to, reply),
            Command::Unserve { port } => {
                if let Some(s) = &mut self.server {
                    s.services.remove(&port);
                }
            }
            Command::Resolved { conn, result } => self.on_resolved(conn, result, now),
            Command::Published { result } => self.on_published(result, now),
            Command::Drain { reply } => self.drain_waiters.push(reply),
        }
    }

    // ---------------------------------------------------------------- client: connect

    fn start_connect(
        &mut self,
        target: Target,
        port: u16,
        reply: SyncSender<Result<Ready, ConnectError>>,
        now: Instant,
    ) {
        // The session is created once the record (and so the peer's GUID) is known; until
        // then the request waits in `connecting`.
        let key = self.next_key;
        self.next_key += 1;
        self.resolve(key, &target);
        self.connecting.insert(
            key,
            Connecting {
                target,
                port,
                reply,
                deadline: now + self.cfg.connect_timeout(),
            },
        );
    }

    fn resolve(&self, key: u64, target: &Target) {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        let target = target.clone();
        let spawned = std::thread::Builder::new()
            .name("namesock-resolve".into())
            .spawn(move || {
                let result = shared.gns().and_then(|g| g.resolve(&target));
                if tx.send(Command::Resolved { conn: key, result }).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a resolver thread");
        }
    }

    fn on_resolved(&mut self, key: u64, result: Result<Record, GnsError>, now: Instant) {
        if let Some(req) = self.connecting.remove(&key) {
            let rec = match result {
                Ok(rec) => rec,
                Err(e) => {
                    let err = if e.is_not_found() {
                        ConnectError::UnknownName(req.target)
                    } else {
                        ConnectError::Gns(e)
                    };
                    let _ = req.reply.send(Err(err));
                    return;
                }
            };
            if now >= req.deadline {
                let _ = req.reply.send(Err(ConnectError::TimedOut));
                return;
            }
            let conn_id: ConnId = rand::random();
            let nonce: [u8; 32] = rand::random();
            let session = Session::client(
                self.session_cfg,
                self.client_key.clone(),
                rec.guid,
                req.port,
                conn_id,
                nonce,
                now,
            );
            let peer_name = match &req.target {
                Target::Name(n) => Some(n.clone()),
                Target::Guid(_) => rec.names.first().cloned(),
            };
            tracing::debug!(target = %req.target, port = req.port, locators = ?rec.locators, "connecting");
            self.conns.insert(
                key,
                Conn {
                    session,
                    server: false,
                    port: req.port,
                    target: Some(req.target),
                    peer_name,
                    reply: Some(req.reply),
                    deadline: Some(req.deadline),
                    secret: None,
                    pair_deadline: None,
                    locators: rec.locators,
                    record_seq: rec.seq,
                    moved: Vec::new(),
                    moved_seq: 0,
                    dial_queue: VecDeque::new(),
                    next_dial: None,
                    backoff: BACKOFF_MIN,
                    need_path: true,
                    resolving: false,
                    last_error: None,
                    round_refused: true,
                    round_resolved: true,
                    app: None,
                    delivery: None,
                    paths: Vec::new(),
                    closed: false,
                    standby_tried: HashSet::new(),
                    last_round: None,
                    timer: None,
                },
            );
            self.start_round(key, now, true);
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.resolving = false;
        match result {
            Ok(rec) if rec.seq >= c.record_seq => {
                let fresh: Vec<SocketAddr> = rec
                    .locators
                    .iter()
                    .filter(|a| !c.locators.contains(a))
                    .copied()
                    .collect();
                let newer = rec.seq > c.record_seq;
                c.record_seq = rec.seq;
                c.locators = rec.locators.clone();
                c.round_resolved = true;
                if c.need_path && !fresh.is_empty() {
                    tracing::debug!(?fresh, "new locators from the GNS: dialing them now");
                    for addr in fresh {
                        self.dial(key, addr, now);
                    }
                } else if newer && !c.need_path && !c.closed {
                    self.peer_moved(key, rec.seq, rec.locators, now);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "re-resolve failed"),
        }
    }

    /// The server announced (MOVED) or published (a newer record) these locators. Unless a
    /// live path already goes to one of them, dial them while the old path lives
    /// (make-before-break); the old path is dropped once a new one carried a frame.
    fn peer_moved(&mut self, key: u64, seq: u64, locators: Vec<SocketAddr>, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if seq <= c.moved_seq {
            return;
        }
        tracing::debug!(seq, ?locators, "peer moved");
        c.moved_seq = seq;
        c.moved = locators;
        let current_ok = c.paths.iter().any(|p| {
            self.paths
                .get(p)
                .is_some_and(|fp| fp.state == PathState::Open && c.moved.contains(&fp.remote))
        });
        if !current_ok {
            let cands: Vec<SocketAddr> = Self::candidates(c)
                .into_iter()
                .filter(|a| c.moved.contains(a))
                .collect();
            for a in cands {
                self.dial(key, a, now);
            }
            return;
        }
        // The old address still works and the server gained one: a standby path to the new
        // address (from the active path's local one), so that losing the old costs no
        // reconnect when it goes before a MOVED could say so.
        let (open, active) = Self::open_and_active(&self.paths, c);
        let Some((remote, local)) = active.map(|fp| (fp.remote, fp.local)) else {
            return;
        };
        let new_remote = c.moved.iter().copied().find(|a| {
            !a.ip().is_loopback()
                && a.is_ipv4() == remote.is_ipv4()
                && !open.iter().any(|fp| fp.remote == *a)
        });
        if let (Some(addr), Some(local)) = (new_remote, local)
            && open.len() < MAX_STANDBY
        {
            tracing::debug!(%addr, "standby path to the server's new address");
            self.dial_from(key, addr, Some(local.ip()), now);
        }
    }

    /// A session's paths that are not closing, and the newest open one to a remote host (the
    /// one standby paths back up).
    fn open_and_active<'a>(
        paths: &'a HashMap<PathId, FlowPath>,
        c: &Conn,
    ) -> (Vec<&'a FlowPath>, Option<&'a FlowPath>) {
        let open: Vec<&FlowPath> = c
            .paths
            .iter()
            .filter_map(|p| paths.get(p))
            .filter(|fp| fp.state != PathState::Closing)
            .collect();
        let active = open
            .iter()
            .rev()
            .find(|fp| fp.state == PathState::Open && !fp.remote.ip().is_loopback())
            .copied();
        (open, active)
    }

    /// Candidate addresses for a new path: MOVED ones first (newest news), then the record's;
    /// IPv6 and IPv4 interleaved (happy eyeballs), no duplicates.
    fn candidates(c: &Conn) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        for a in c.moved.iter().chain(c.locators.iter()) {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        // Loopback locators mean "the peer is on this host": dial them only when it is (one of
        // its other addresses is ours, or it published nothing else). Elsewhere they would
        // reach whatever engine of this host happens to use that port.
        let (lo, global): (Vec<&SocketAddr>, Vec<&SocketAddr>) =
            all.iter().partition(|a| a.ip().is_loopback());
        if !lo.is_empty() && !global.is_empty() {
            let ours = sys::local_addrs().unwrap_or_default();
            if !global.iter().any(|a| ours.contains(&a.ip())) {
                all.retain(|a| !a.ip().is_loopback());
            }
        }
        let (v6, v4): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.is_ipv6());
        let mut out = Vec::with_capacity(v6.len() + v4.len());
        let (mut i6, mut i4) = (v6.into_iter(), v4.into_iter());
        loop {
            match (i6.next(), i4.next()) {
                (None, None) => break,
                (a, b) => out.extend(a.into_iter().chain(b)),
            }
        }
        out
    }

    /// Starts a round of dials: staggered (first connect) or all at once (re-dial).
    fn start_round(&mut self, key: u64, now: Instant, staggered: bool) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.round_refused = true;
        c.last_round = Some(now);
        c.dial_queue = Self::candidates(c).into();
        c.next_dial = None;
        // Give up on dials that have hung for a while (a SYN into a black hole).
        let stale: Vec<PathId> = c
            .paths
            .iter()
            .copied()
            .filter(|p| {
                self.paths.get(p).is_some_and(|fp| {
                    fp.state == PathState::Connecting && now - fp.started > DIAL_STALE
                })
            })
            .collect();
        for p in stale {
            self.close_path(p, now, false);
        }
        if staggered {
            self.dial_next(key, now);
        } else {
            while let Some(addr) = self
                .conns
                .get_mut(&key)
                .and_then(|c| c.dial_queue.pop_front())
            {
                self.dial(key, addr, now);
            }
            // Re-dialing: try again after the backoff even while these dials hang, and ask
            // the GNS each time (the peer may have moved too).
            if let Some(c) = self.conns.get_mut(&key) {
                c.next_dial = Some(now + c.backoff);
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                if !c.resolving
                    && let Some(t) = c.target.clone()
                {
                    c.resolving = true;
                    self.resolve(key, &t);
                }
            }
        }
        self.check_round(key, now);
    }

    fn dial_next(&mut self, key: u64, now: Instant) {
        while let Some(addr) = self
            .conns
            .get_mut(&key)
            .and_then(|c| c.dial_queue.pop_front())
        {
            if self.dial(key, addr, now) {
                if let Some(c) = self.conns.get_mut(&key)
                    && !c.dial_queue.is_empty()
                {
                    c.next_dial = Some(now + STAGGER);
                }
                return;
            }
        }
    }

    /// Starts one dial; `false` if it failed at once.
    fn dial(&mut self, key: u64, addr: SocketAddr, now: Instant) -> bool {
        self.dial_from(key, addr, None, now)
    }

    /// Starts one dial, from `local` if given (then it is a standby path); `false` if it
    /// failed at once.
    fn dial_from(
        &mut self,
        key: u64,
        addr: SocketAddr,
        local: Option<std::net::IpAddr>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.conns.get_mut(&key) else {
            return false;
        };
        let dialing = c
            .paths
            .iter()
            .filter(|p| {
                self.paths
                    .get(p)
                    .is_some_and(|fp| fp.state == PathState::Connecting)
            })
            .count();
        let already = c.paths.iter().any(|p| {
            self.paths.get(p).is_some_and(|fp| {
                fp.state == PathState::Connecting
                    && fp.remote == addr
                    && (local.is_none() || fp.local.map(|a| a.ip()) == local)
            })
        });
        if already || dialing >= MAX_DIALS {
            return true;
        }
        match sys::dial(addr, local) {
            Ok(mut stream) => {
                let token = Token(self.next_token);
                self.next_token += 1;
                if let Err(e) = self.poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    tracing::warn!(error = %e, "cannot register a flow path");
                    return false;
                }
                let pid = self.next_path;
                self.next_path = self.next_path.wrapping_add(1).max(1);
                let mut fp = FlowPath::new(stream, token, addr, PathState::Connecting);
                fp.conn = Some(key);
                fp.started = now;
                fp.standby = local.is_some();
                self.paths.insert(pid, fp);
                self.io.insert(token, Io::Path(pid));
                c.paths.push(pid);
                tracing::debug!(path = pid, %addr, ?local, "dialing");
                true
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "dial failed at once");
                Self::note_dial_error(c, &e);
                false
            }
        }
    }

    fn note_dial_error(c: &mut Conn, e: &io::Error) {
        let errno = e.raw_os_error();
        if errno != Some(libc::ECONNREFUSED) {
            c.round_refused = false;
        }
        c.last_error = errno.or(c.last_error);
    }

    /// After a dial ended: if nothing is left in flight and no path is open, the round failed.
    fn check_round(&mut self, key: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if !c.need_path || !c.dial_queue.is_empty() {
            return;
        }
        let in_flight = c.paths.iter().any(|p| self.paths.contains_key(p));
        if in_flight {
            return;
        }
        // Every locator refused the TCP connection right after a fresh resolve: nobody
        // listens there any more.
        if c.reply.is_some() && c.round_refused && c.round_resolved && c.last_error.is_some() {
            let target = c.target.as_ref().map(|t| t.to_string()).unwrap_or_default();
            let port = c.port;
            self.fail_connect(key, ConnectError::Refused { target, port });
            return;
        }
        c.round_resolved = false;
        if c.next_dial.is_none() {
            c.next_dial = Some(now + c.backoff);
            c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
        }
        if !c.resolving
            && let Some(t) = c.target.clone()
        {
            c.resolving = true;
            self.resolve(key, &t);
        }
    }

    fn fail_connect(&mut self, key: u64, err: ConnectError) {
        if let Some(mut c) = self.conns.remove(&key) {
            tracing::debug!(error = %err, "connect failed");
            if let Some(r) = c.reply.take() {
                let _ = r.send(Err(err));
            }
            self.remove_parts(key, c);
        }
    }

    // ---------------------------------------------------------------- I/O events

    /// Notes which session an IO event concerns, so that its deadline is recomputed.
    fn touch_io(&mut self, token: Token) {
        match self.io.get(&token) {
            Some(Io::Path(p)) => match self.paths.get(p).and_then(|fp| fp.conn) {
                Some(key) => self.touched.push(key),
                // A path that may present HELLO or RESUME: any session, or a new one.
                None => self.touched_all = true,
            },
            Some(Io::App(key)) => self.touched.push(*key),
            Some(Io::Pending(_)) => self.touched_all = true,
            None => {}
        }
    }

    /// Files the sessions touched this turn under their current deadlines.
    fn reschedule(&mut self) {
        let keys: Vec<u64> = if std::mem::take(&mut self.touched_all) {
            self.touched.clear();
            self.conns.keys().copied().collect()
        } else {
            std::mem::take(&mut self.touched)
        };
        for key in keys {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            let deadline = [
                c.session.poll_timeout(),
                c.next_dial,
                c.reply.as_ref().and(c.deadline),
                c.pair_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            if deadline != c.timer {
                c.timer = deadline;
                if let Some(t) = deadline {
                    self.timers.push(Reverse((t, key)));
                }
            }
        }
        // Stale entries are bounded: rebuild the heap when they outnumber the live ones.
        if self.timers.len() > 4 * self.conns.len() + 1024 {
            self.timers = self
                .conns
                .iter()
                .filter_map(|(key, c)| c.timer.map(|t| Reverse((t, *key))))
                .collect();
        }
    }

    fn on_io(&mut self, token: Token, ev: &mio::event::Event, now: Instant) {
        match self.io.get(&token) {
            Some(Io::Path(p)) => {
                let p = *p;
                self.on_path(p, ev, now)
            }
            Some(Io::App(key)) => {
                let key = *key;
                if let Some(c) = self.conns.get_mut(&key) {
                    if let Some(app) = &mut c.app {
                        if app.connecting {
                            match app.stream.take_error() {
                                Ok(None) if app.stream.peer_addr().is_ok() => {
                                    app.connecting = false;
                                    app.readable = true;
                                    app.writable = true;
                                }
                                Ok(None) => {}
                                Ok(Some(e)) | Err(e) => {
                                    tracing::debug!(error = %e, "cannot deliver the session to the program");
                                    app.failed = true;
                                    c.session.app_abort();
                                }
                            }
                        } else {
                            app.readable |=
                                ev.is_readable() || ev.is_read_closed() || ev.is_error();
                            app.writable |= ev.is_writable() || ev.is_error();
                        }
                    }
                    self.dirty.insert(key);
                }
            }
            Some(Io::Pending(id)) => {
                let id = *id;
                self.on_pending_app(id, now);
            }
            None => {}
        }
    }

    fn on_path(&mut self, pid: PathId, ev: &mio::event::Event, now: Instant) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        if fp.state == PathState::Connecting {
            match fp.stream.take_error() {
                Ok(None) if fp.stream.peer_addr().is_ok() => self.path_connected(pid, now),
                Ok(None) => return,
                Ok(Some(e)) | Err(e) => {
                    tracing::debug!(path = pid, remote = %fp.remote, error = %e, "dial failed");
                    let key = fp.conn;
                    if fp.standby {
                        // Not part of a round: just forget it.
                        self.close_path(pid, now, false);
                        return;
                    }
                    if let Some(c) = key.and_then(|k| self.conns.get_mut(&k)) {
                        Self::note_dial_error(c, &e);
                    }
                    self.close_path(pid, now, false);
                    if let Some(k) = key {
                        if self.conns.get(&k).is_some_and(|c| c.dial_queue.is_empty()) {
                            self.check_round(k, now);
                        } else {
                            self.dial_next(k, now);
                        }
                    }
                    return;
                }
            }
        }
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        if ev.is_writable() || ev.is_error() {
            fp.writable = true;
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read_path(pid, now);
        }
        if let Some(k) = self.paths.get(&pid).and_then(|fp| fp.conn) {
            self.dirty.insert(k);
        } else if let Some(fp) = self.paths.get_mut(&pid) {
            // Unattached server path: flush a RESET, then close.
            let done = fp.flush().is_err() || fp.pending() == 0;
            if fp.state == PathState::Closing && done {
                self.close_path(pid, now, false);
            }
        }
    }

    fn path_connected(&mut self, pid: PathId, now: Instant) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        let _ = sys::tune_flow_path(
            fp.stream.as_raw_fd(),
            self.cfg.path_dead(),
            self.cfg.keepalive(),
        );
        fp.state = PathState::Open;
        fp.writable = true;
        fp.opened = true;
        fp.local = fp.stream.local_addr().ok();
        let Some(key) = fp.conn else {
            return;
        };
        tracing::debug!(path = pid, remote = %fp.remote, local = ?fp.local, "path connected");
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        // Make-before-break: the paths this one replaces close once it carries a frame.
        if !c.need_path {
            let remote_moved: Vec<PathId> = c
                .paths
                .iter()
                .copied()
                .filter(|p| *p != pid)
                .filter(|p| {
                    self.paths.get(p).is_some_and(|o| {
                        o.state == PathState::Open
                            && !c.moved.is_empty()
                            && !c.moved.contains(&o.remote)
                    })
                })
                .collect();
            if let Some(fp) = self.paths.get_mut(&pid) {
                fp.replaces = remote_moved;
            }
        }
        c.need_path = false;
        c.backoff = BACKOFF_MIN;
        c.next_dial = None;
        c.dial_queue.clear();
        c.session.path_opened(now, pid);
        // The other dials of this round are not needed.
        let others: Vec<PathId> = c
            .paths
            .iter()
            .copied()
            .filter(|p| {
                *p != pid
                    && self
                        .paths
                        .get(p)
                        .is_some_and(|o| o.state == PathState::Connecting && !o.standby)
            })
            .collect();
        for p in others {
            self.close_path(p, now, false);
        }
        self.dirty.insert(key);
        self.ensure_standby(key, now);
    }

    /// A multihomed client keeps one more path per local address (of the active path's
    /// family), so that losing an interface costs no reconnect: the session just carries on
    /// over the survivor.
    fn ensure_standby(&mut self, key: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.server || c.reply.is_some() || c.need_path || c.closed {
            return;
        }
        let (open, active) = Self::open_and_active(&self.paths, c);
        let Some(active) = active.map(|fp| fp.remote) else {
            return;
        };
        let used: Vec<std::net::IpAddr> = open
            .iter()
            .filter_map(|fp| fp.local.map(|a| a.ip()))
            .collect();
        let mut room = MAX_STANDBY.saturating_sub(open.len());
        let mut dials = Vec::new();
        for ip in sys::local_addrs().unwrap_or_default() {
            if room == 0 {
                break;
            }
            if ip.is_loopback()
                || ip.is_ipv4() != active.is_ipv4()
                || used.contains(&ip)
                || c.standby_tried.contains(&ip)
            {
                continue;
            }
            c.standby_tried.insert(ip);
            dials.push(ip);
            room -= 1;
        }
        for ip in dials {
            tracing::debug!(local = %ip, remote = %active, "standby path");
            self.dial_from(key, active, Some(ip), now);
        }
    }

    /// Reads frames from a path into its session (or, for a new server path, its first
    /// frame: HELLO or RESUME).
    fn read_path(&mut self, pid: PathId, now: Instant) {
        loop {
            let Some(fp) = self.paths.get_mut(&pid) else {
                return;
            };
            let outcome;
            match fp.conn {
                Some(key) => {
                    let Some(c) = self.conns.get_mut(&key) else {
                        return;
                    };
                    let mut failed = None;
                    let mut got_frame = false;
                    outcome = fp.read_frames(&mut self.scratch, |frame| {
                        got_frame = true;
                        match c.session.handle_frame(now, pid, frame) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        }
                    });
                    if got_frame && !fp.replaces.is_empty() {
                        let old = std::mem::take(&mut fp.replaces);
                        for p in old {
                            tracing::debug!(path = p, "closing the path replaced after MOVED");
                            self.close_path(p, now, true);
                        }
                    }
                    if let Some(e) = failed {
                        tracing::debug!(path = pid, error = %e, "session refused a frame: closing path");
                        self.close_path(pid, now, true);
                        return;
                    }
                    self.dirty.insert(key);
                }
                None => {
                    let mut first = None;
                    outcome = fp.read_frames(&mut self.scratch, |frame| {
                        first = Some(frame.into_owned());
                        false
                    });
                    if let Some(frame) = first {
                        match frame {
                            Frame::Hello(h) => self.on_hello(pid, h, now),
                            Frame::Resume(r) => self.on_resume(pid, r, now),
                            other => {
                                tracing::debug!(path = pid, frame = ?std::mem::discriminant(&other), "path did not start with HELLO or RESUME");
                                self.close_path(pid, now, false);
                                return;
                            }
                        }
                        // Attached (or closing): read on with the session.
                        if self.paths.get(&pid).is_some_and(|fp| fp.conn.is_some()) {
                            continue;
                        }
                        return;
                    }
                }
            }
            match outcome {
                ReadOutcome::Open => return,
                ReadOutcome::Closed(e) => {
                    tracing::debug!(path = pid, error = ?e, "path closed");
                    self.close_path(pid, now, true);
                    return;
                }
                ReadOutcome::Malformed(e) => {
                    tracing::debug!(path = pid, error = %e, "malformed frame: closing path");
                    self.close_path(pid, now, true);
                    return;
                }
            }
        }
    }

    /// Closes a path; `notify`: tell its session (a path that was in use).
    fn close_path(&mut self, pid: PathId, now: Instant, notify: bool) {
        let Some(mut fp) = self.paths.remove(&pid) else {
            return;
        };
        self.io.remove(&fp.token);
        let _ = self.poll.registry().deregister(&mut fp.stream);
        if let Some(key) = fp.conn
            && let Some(c) = self.conns.get_mut(&key)
        {
            c.paths.retain(|p| *p != pid);
            if (fp.opened || c.server) && (notify || fp.state != PathState::Connecting) {
                c.session.path_closed(now, pid);
            }
            if !c.server
                && !c.closed
                && !c.paths.iter().any(|p| {
                    self.paths
                        .get(p)
                        .is_some_and(|o| o.state == PathState::Open)
                })
            {
                c.need_path = true;
            }
            self.dirty.insert(key);
        }
    }

    // ---------------------------------------------------------------- relay (client)

    fn accept_relay(&mut self, which: Token, now: Instant) {
        loop {
            let l = if which == RELAY_V4 {
                &self.relay_v4
            } else {
                &self.relay_v6
            };
            let Some(l) = l else {
                return;
            };
            match l.accept() {
                Ok((mut stream, _)) => {
                    if self.pending.len() >= MAX_PENDING_APPS {
                        continue;
                    }
                    let token = self.token();
                    let id = self.next_key;
                    self.next_key += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.io.insert(token, Io::Pending(id));
                    self.pending.insert(
                        id,
                        (
                            token,
                            PendingApp {
                                stream,
                                got: [0; SECRET_LEN],
                                len: 0,
                                since: now,
                            },
                        ),
                    );
                    self.on_pending_app(id, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "relay accept failed");
                    return;
                }
            }
        }
    }

    /// Reads a relay connection's secret and hands it to its session.
    fn on_pending_app(&mut self, id: u64, _now: Instant) {
        use std::io::Read;
        let Some((_, p)) = self.pending.get_mut(&id) else {
            return;
        };
        while p.len < SECRET_LEN {
            match p.stream.read(&mut p.got[p.len..]) {
                Ok(0) => {
                    self.drop_pending(id);
                    return;
                }
                Ok(n) => p.len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_pending(id);
                    return;
                }
            }
        }
        let Some((token, p)) = self.pending.remove(&id) else {
            return;
        };
        let key = self.secrets.remove(&p.got);
        match key.and_then(|k| self.conns.get_mut(&k).map(|c| (k, c))) {
            Some((key, c)) if c.app.is_none() => {
                self.io.insert(token, Io::App(key));
                c.app = Some(AppSide::new(p.stream, token, false));
                c.pair_deadline = None;
                self.dirty.insert(key);
            }
            _ => {
                // Unknown secret, or the session died meanwhile: the program sees a reset.
                self.io.remove(&token);
                let mut s = p.stream;
                let _ = self.poll.registry().deregister(&mut s);
                let _ = sys::set_linger_zero(s.as_raw_fd());
            }
        }
    }

    fn drop_pending(&mut self, id: u64) {
        if let Some((token, mut p)) = self.pending.remove(&id) {
            self.io.remove(&token);
            let _ = self.poll.registry().deregister(&mut p.stream);
        }
    }

    // ---------------------------------------------------------------- server

    fn serve(
        &mut self,
        port: u16,
        deliver_to: SocketAddr,
        reply: SyncSender<Result<(), ServeError>>,
    ) {
        if self.server.is_none() {
            match self.start_server() {
                Ok(s) => self.server = Some(s),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let Some(s) = &mut self.server else {
            return;
        };
        s.services.insert(port, deliver_to);
        tracing::debug!(port, %deliver_to, "serving");
        if s.published.is_some() && !s.publishing {
            let _ = reply.send(Ok(()));
            return;
        }
        s.waiters.push(reply);
        if !s.publishing {
            self.publish();
        }
    }

    fn start_server(&mut self) -> Result<Server, ServeError> {
        let key_path = self.cfg.key_path();
        let key = Keypair::load_or_create(&key_path)?;
        let mut lock_name = key_path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock_path = key_path.with_file_name(lock_name);
        let lock = match sys::try_lock(&lock_path) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(ServeError::KeyInUse {
                    key: key_path,
                    lock: lock_path,
                });
            }
            Err(source) => {
                return Err(ServeError::Lock {
                    lock: lock_path,
                    source,
                });
            }
        };
        let port = self.cfg.engine_port;
        let bind = |ip: std::net::IpAddr| TcpListener::bind(SocketAddr::new(ip, port));
        // [::] is dual-stack on Linux; a host without IPv6 gets 0.0.0.0.
        let mut listener = bind(Ipv6Addr::UNSPECIFIED.into())
            .or_else(|_| bind(Ipv4Addr::UNSPECIFIED.into()))
            .map_err(|source| ServeError::Bind { port, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { port, source })?
            .port();
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|source| ServeError::Bind { port, source })?;
        let key = Arc::new(key);
        *self.shared.local_guid.lock() = Some(key.guid());
        // Sessions we open as a client from now on prove the same identity.
        self.client_key = key.clone();
        tracing::info!(guid = %key.guid(), engine_port = bound, "server side started");
        Ok(Server {
            listener,
            port: bound,
            acceptor: Acceptor::new(self.session_cfg, key.clone()),
            key,
            services: HashMap::new(),
            _lock: lock,
            publishing: false,
            republish: false,
            registered: false,
            published: None,
            waiters: Vec::new(),
            refresh_at: None,
            failures: 0,
        })
    }

    /// Publishes this host's addresses off the loop (coalescing changes that come meanwhile).
    fn publish(&mut self) {
        let Some(s) = &mut self.server else {
            return;
        };
        if s.publishing {
            s.republish = true;
            return;
        }
        s.publishing = true;
        s.republish = false;
        let key = s.key.clone();
        let port = s.port;
        let name = if s.registered {
            None
        } else {
            self.cfg.name.clone()
        };
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("namesock-publish".into())
            .spawn(move || {
                let locators: Vec<SocketAddr> = sys::local_addrs()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .take(namesock_resolver::record::MAX_LOCATORS)
                    .collect();
                let names: Vec<String> = name.iter().cloned().collect();
                let result = shared.gns().and_then(|g| {
                    let rec = g.publish(&key, &locators, &names)?;
                    if let Some(n) = &name {
                        g.register(&key, n)?;
                    }
                    Ok((rec, locators))
                });
                if tx.send(Command::Published { result }).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn the publisher thread");
            s.publishing = false;
        }
    }

    fn on_published(&mut self, result: Result<(Record, Vec<SocketAddr>), GnsError>, now: Instant) {
        let Some(s) = &mut self.server else {
            return;
        };
        s.publishing = false;
        s.failures = if result.is_ok() { 0 } else { s.failures + 1 };
        s.refresh_at = Some(now + refresh_delay(s.failures));
        match result {
            Ok((rec, locators)) => {
                tracing::debug!(seq = rec.seq, ?locators, "published");
                s.registered = true;
                let changed = s.published.as_ref().is_some_and(|(_, l)| *l != locators);
                s.published = Some((rec.seq, locators.clone()));
                for w in s.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
                if changed {
                    for (key, c) in &mut self.conns {
                        if c.server {
                            c.session.announce_moved(rec.seq, locators.clone());
                            self.dirty.insert(*key);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing failed");
                let mut waiters = std::mem::take(&mut s.waiters);
                if let Some(first) = waiters.pop() {
                    let _ = first.send(Err(ServeError::Publish(e)));
                }
                for w in waiters {
                    let _ = w.send(Err(ServeError::EngineGone));
                }
            }
        }
        if s.republish {
            self.publish();
        }
    }

    fn accept_paths(&mut self, now: Instant) {
        loop {
            let Some(s) = &self.server else {
                return;
            };
            match s.listener.accept() {
                Ok((mut stream, remote)) => {
                    let paths = &self.paths;
                    self.unattached
                        .retain(|(_, p)| paths.get(p).is_some_and(|fp| fp.conn.is_none()));
                    if self.unattached.len() >= MAX_UNATTACHED {
                        continue;
                    }
                    let _ = sys::tune_flow_path(
                        stream.as_raw_fd(),
                        self.cfg.path_dead(),
                        self.cfg.keepalive(),
                    );
                    let token = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    let pid = self.next_path;
                    self.next_path = self.next_path.wrapping_add(1).max(1);
                    let mut fp = FlowPath::new(stream, token, remote, PathState::Open);
                    fp.started = now;
                    fp.writable = true;
                    self.paths.insert(pid, fp);
                    self.io.insert(token, Io::Path(pid));
                    self.unattached.push_back((now, pid));
                    tracing::debug!(path = pid, %remote, "flow path accepted");
                    self.read_path(pid, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "engine accept failed");
                    return;
                }
            }
        }
    }

    /// Sends a RESET on a path that carries no session, then closes it.
    fn refuse_path(&mut self, pid: PathId, reason: ResetReason, now: Instant) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        fp.queue(&Frame::Reset { reason });
        fp.state = PathState::Closing;
        if fp.flush().is_err() || fp.pending() == 0 {
            self.close_path(pid, now, false);
        }
    }

    fn on_hello(&mut self, pid: PathId, hello: Hello, now: Instant) {
        let Some(s) = &self.server else {
            self.close_path(pid, now, false);
            return;
        };
        let Some(deliver_to) = s.services.get(&hello.port).copied() else {
            tracing::debug!(port = hello.port, "HELLO for a port not served: refused");
            self.refuse_path(pid, ResetReason::PortRefused, now);
            return;
        };
        if self.by_conn_id.contains_key(&hello.conn_id) {
            tracing::debug!("HELLO for a connection id in use: path closed");
            self.close_path(pid, now, false);
            return;
        }
        let session = match s.acceptor.accept_hello(now, &hello, pid) {
            Ok(session) => session,
            Err(e) => {
                tracing::debug!(error = %e, "HELLO refused");
                self.refuse_path(pid, ResetReason::AuthFailed, now);
                return;
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        fp.conn = Some(key);
        fp.opened = true;
        let info = SessionInfo {
            peer_guid: hello.client_key.guid(),
            peer_name: None,
            peer_addr: fp.remote,
            service_port: hello.port,
        };
        tracing::debug!(path = pid, peer = %info.peer_guid, port = hello.port, "session accepted");
        let mut c = Conn {
            session,
            server: true,
            port: hello.port,
            target: None,
            peer_name: None,
            reply: None,
            deadline: None,
            secret: None,
            pair_deadline: None,
            locators: Vec::new(),
            record_seq: 0,
            moved: Vec::new(),
            moved_seq: 0,
            dial_queue: VecDeque::new(),
            next_dial: None,
            backoff: BACKOFF_MIN,
            need_path: false,
            resolving: false,
            last_error: None,
            round_refused: false,
            round_resolved: false,
            app: None,
            delivery: None,
            paths: vec![pid],
            closed: false,
            standby_tried: HashSet::new(),
            last_round: None,
            timer: None,
        };
        // Deliver: connect to the program's listener; its accept sees our local address,
        // which is known (and recorded) before the connection can be accepted.
        let deliver = || -> io::Result<(SocketAddr, TcpStream)> {
            let loopback = if deliver_to.is_ipv4() {
                std::net::IpAddr::from(Ipv4Addr::LOCALHOST)
            } else {
                std::net::IpAddr::from(Ipv6Addr::LOCALHOST)
            };
            let local_ip = if deliver_to.ip().is_loopback() {
                deliver_to.ip()
            } else {
                loopback
            };
            let dialer = sys::Dialer::new(&deliver_to, Some(local_ip))?;
            let local = dialer.local_addr()?;
            self.shared.deliveries.lock().insert(local, info.clone());
            match dialer.connect(deliver_to) {
                Ok(stream) => Ok((local, stream)),
                Err(e) => {
                    self.shared.deliveries.lock().remove(&local);
                    Err(e)
                }
            }
        };
        match deliver() {
            Ok((local, mut stream)) => {
                let token = Token(self.next_token);
                self.next_token += 1;
                c.delivery = Some(local);
                match self.poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        self.io.insert(token, Io::App(key));
                        c.app = Some(AppSide::new(stream, token, true));
                    }
                    Err(_) => c.session.app_abort(),
                }
            }
            Err(e) => {
                tracing::debug!(%deliver_to, error = %e, "cannot deliver the session");
                c.session.app_abort();
            }
        }
        self.by_conn_id.insert(hello.conn_id, key);
        self.conns.insert(key, c);
        self.dirty.insert(key);
    }

    fn on_resume(&mut self, pid: PathId, resume: Resume, now: Instant) {
        let Some(key) = self.by_conn_id.get(&resume.conn_id).copied() else {
            tracing::debug!(
                path = pid,
                "RESUME for an unknown session: reset on that path"
            );
            self.refuse_path(pid, ResetReason::LingerExpired, now);
            return;
        };
        let Some(c) = self.conns.get_mut(&key).filter(|c| c.server) else {
            self.close_path(pid, now, false);
            return;
        };
        // Verified before anything of the live session is touched.
        if let Err(e) = c.session.verify_resume(&resume) {
            tracing::debug!(path = pid, error = %e, "RESUME refused: path closed, session untouched");
            self.close_path(pid, now, false);
            return;
        }
        c.session.attach_resume(now, &resume, pid);
        c.paths.push(pid);
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        fp.conn = Some(key);
        fp.opened = true;
        tracing::debug!(path = pid, remote = %fp.remote, "session resumed on a new path");
        if let Some(d) = c.delivery
            && let Some(info) = self.shared.deliveries.lock().get_mut(&d)
        {
            info.peer_addr = fp.remote;
        }
        self.dirty.insert(key);
    }

    // ---------------------------------------------------------------- mobility

    fn on_addr_change(&mut self, now: Instant) {
        let mut changes = Vec::new();
        if let Some(m) = &self.monitor
            && let Err(e) = m.read(&mut changes)
        {
            tracing::debug!(error = %e, "address monitor read failed");
        }
        if changes.is_empty() {
            return;
        }
        tracing::debug!(?changes, "local addresses changed");
        let mut gone: Vec<std::net::IpAddr> = Vec::new();
        let mut link_down: Vec<std::net::IpAddr> = Vec::new();
        let mut added = false;
        for ch in &changes {
            match ch {
                AddrChange::Removed(ip) => gone.push(*ip),
                AddrChange::Added(_) | AddrChange::LinkUp(_) => added = true,
                AddrChange::LinkDown(index) => {
                    // Its addresses may stay configured, but nothing gets through them.
                    let addrs = sys::addrs_of_interface(*index).unwrap_or_default();
                    link_down.extend(addrs);
                }
                AddrChange::Overflow => {
                    added = true;
                    if let Ok(now_addrs) = sys::local_addrs() {
                        gone.extend(
                            self.paths
                                .values()
                                .filter_map(|p| p.local.map(|a| a.ip()))
                                .filter(|ip| !now_addrs.contains(ip)),
                        );
                    }
                }
            }
        }
        // An address that went away takes its paths with it, at once.
        if !gone.is_empty() || !link_down.is_empty() {
            let mut still = sys::local_addrs().unwrap_or_default();
            still.retain(|ip| !link_down.contains(ip));
            gone.extend(link_down.iter().copied());
            let dead: Vec<PathId> = self
                .paths
                .iter()
                .filter(|(_, p)| {
                    p.local
                        .is_some_and(|a| gone.contains(&a.ip()) && !still.contains(&a.ip()))
                })
                .map(|(id, _)| *id)
                .collect();
            for p in dead {
                tracing::debug!(path = p, "local address gone: path dead");
                self.close_path(p, now, true);
            }
        }
        // Clients without a path try again right away on a new address.
        if added {
            let waiting: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.server && c.need_path)
                .map(|(k, _)| *k)
                .collect();
            for key in waiting {
                // Dials started before the change may hang on a route that is gone: start
                // over from the new address at once.
                let Some(c) = self.conns.get_mut(&key) else {
                    continue;
                };
                c.backoff = BACKOFF_MIN;
                c.next_dial = None;
                let hanging: Vec<PathId> = c
                    .paths
                    .iter()
                    .copied()
                    .filter(|p| {
                        self.paths
                            .get(p)
                            .is_some_and(|fp| fp.state == PathState::Connecting)
                    })
                    .collect();
                for p in hanging {
                    self.close_path(p, now, false);
                }
                let staggered = self.conns.get(&key).is_some_and(|c| c.reply.is_some());
                self.start_round(key, now, staggered);
            }
        }
        if added {
            let live: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.server && !c.need_path)
                .map(|(k, _)| *k)
                .collect();
            for key in live {
                if let Some(c) = self.conns.get_mut(&key) {
                    c.standby_tried.clear();
                }
                self.ensure_standby(key, now);
            }
        }
        if self.server.is_some() {
            self.publish();
        }
    }

    /// Is a session still delivering what its program sent? (At exit: a program that
    /// half-closed waits for the session to close; bytes still unread from a program's socket
    /// are waited for too. What sits unconfirmed in a replay buffer of a session that the
    /// program left open cannot be told apart from an idle one, and is not waited for.)
    fn draining(&self) -> bool {
        self.conns.values().any(|c| {
            let Some(a) = c.app.as_ref().filter(|a| !a.failed && !a.connecting) else {
                return false;
            };
            if c.closed || c.session.is_finished() {
                return false;
            }
            a.read_eof() || a.backlog() > 0
        })
    }

    // ---------------------------------------------------------------- timers

    fn next_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for r in self.connecting.values() {
            at(Some(r.deadline));
        }
        // A stale top costs one early wake-up, after which `on_timers` drops it.
        at(self.timers.peek().map(|Reverse((t, _))| *t));
        for (_, p) in self.pending.values() {
            at(Some(p.since + PAIR_TIMEOUT));
        }
        at(self
            .unattached
            .front()
            .map(|(since, _)| *since + FIRST_FRAME_TIMEOUT));
        at(self.server.as_ref().and_then(|s| s.refresh_at));
        next
    }

    fn on_timers(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .connecting
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(r) = self.connecting.remove(&k) {
                let _ = r.reply.send(Err(ConnectError::TimedOut));
            }
        }
        let mut due = Vec::new();
        while let Some(&Reverse((t, key))) = self.timers.peek()
            && t <= now
        {
            self.timers.pop();
            if let Some(c) = self.conns.get_mut(&key)
                && c.timer == Some(t)
            {
                c.timer = None;
                due.push(key);
            }
        }
        for key in due {
            // Rescheduled at the end of the turn, whatever happens here.
            self.dirty.insert(key);
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            if c.session.poll_timeout().is_some_and(|t| t <= now) {
                c.session.handle_timeout(now);
                self.dirty.insert(key);
            }
            if c.reply.is_some() && c.deadline.is_some_and(|d| d <= now) {
                let err = match c.last_error {
                    Some(libc::EHOSTUNREACH) => ConnectError::HostUnreachable,
                    Some(libc::ENETUNREACH) => ConnectError::NetUnreachable,
                    Some(libc::ECONNREFUSED) if c.round_refused => ConnectError::Refused {
                        target: c.target.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                        port: c.port,
                    },
                    _ => ConnectError::TimedOut,
                };
                self.fail_connect(key, err);
                continue;
            }
            if c.pair_deadline.is_some_and(|d| d <= now) {
                tracing::debug!("the program never attached its socket: session aborted");
                c.pair_deadline = None;
                if let Some(s) = c.secret.take() {
                    self.secrets.remove(&s);
                }
                c.session.app_abort();
                self.dirty.insert(key);
            }
            if c.next_dial.is_some_and(|t| t <= now) {
                c.next_dial = None;
                if !c.dial_queue.is_empty() {
                    self.dial_next(key, now);
                } else if c.need_path {
                    let staggered = c.reply.is_some();
                    self.start_round(key, now, staggered);
                }
            }
        }
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, p))| p.since + PAIR_TIMEOUT <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            self.drop_pending(id);
        }
        while let Some(&(since, pid)) = self.unattached.front()
            && since + FIRST_FRAME_TIMEOUT <= now
        {
            self.unattached.pop_front();
            if self.paths.get(&pid).is_some_and(|p| p.conn.is_none()) {
                self.close_path(pid, now, false);
            }
        }
        if let Some(s) = &mut self.server
            && s.refresh_at.is_some_and(|t| t <= now)
        {
            s.refresh_at = None;
            // The name binding expires like the record: claim it again too.
            s.registered = false;
            self.publish();
        }
    }

    // ---------------------------------------------------------------- the driver

    /// Moves everything of one session as far as it goes: relay, events, frames out.
    fn drive(&mut self, key: u64, now: Instant) {
        for _ in 0..64 {
            let Some(c) = self.conns.get_mut(&key) else {
                return;
            };
            if let Some(app) = &mut c.app {
                app.pump(&mut c.session, &mut self.scratch);
            }
            let mut progressed = false;
            while let Some(ev) = self
                .conns
                .get_mut(&key)
                .and_then(|c| c.session.poll_event())
            {
                progressed = true;
                self.on_event(key, ev, now);
            }
            let Some(c) = self.conns.get_mut(&key) else {
                return;
            };
            let mut failed = Vec::new();
            for pid in &c.paths {
                let Some(fp) = self.paths.get_mut(pid) else {
                    continue;
                };
                if fp.state != PathState::Open {
                    continue;
                }
                loop {
                    while fp.has_room() && c.session.transmit_into(now, *pid, fp.write_buf()) {}
                    if fp.pending() == 0 || !fp.writable {
                        break;
                    }
                    if let Err(e) = fp.flush() {
                        tracing::debug!(path = pid, error = %e, "path write failed");
                        failed.push(*pid);
                        break;
                    }
                    if fp.pending() > 0 {
                        break; // socket full: wait for writable
                    }
                }
            }
            for p in &failed {
                self.close_path(*p, now, true);
            }
            if !progressed && failed.is_empty() {
                break;
            }
        }
        // Closed both ways and everything handed over: the program's socket is done even if
        // the (server) session still lingers for a late resume.
        if let Some(c) = self.conns.get_mut(&key)
            && c.closed
            && c.app
                .as_ref()
                .is_some_and(|a| a.passed_eof() && a.read_eof())
            && let Some(mut app) = c.app.take()
        {
            self.io.remove(&app.token);
            let _ = self.poll.registry().deregister(&mut app.stream);
        }
        self.maybe_finish(key);
    }

    fn on_event(&mut self, key: u64, ev: Event, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        match ev {
            Event::Established { peer } => {
                if c.server {
                    return;
                }
                self.established(key, peer, now);
                self.ensure_standby(key, now);
            }
            Event::Readable | Event::Writable => {}
            Event::PathDead(p) => {
                tracing::debug!(path = p, "path dead (silence or protocol error)");
                self.close_path(p, now, false);
            }
            Event::NeedPath => {
                if c.server || c.closed {
                    return;
                }
                c.need_path = true;
                // A path that connects and dies at once must not make a busy loop.
                let spaced = c.last_round.map(|t| t + BACKOFF_MIN);
                if c.next_dial.is_none() && spaced.is_some_and(|t| now < t) {
                    c.next_dial = spaced;
                } else if c.next_dial.is_none() {
                    tracing::debug!("no path left: re-dialing");
                    let staggered = c.reply.is_some();
                    if !c.resolving
                        && let Some(t) = c.target.clone()
                    {
                        c.resolving = true;
                        self.resolve(key, &t);
                    }
                    self.start_round(key, now, staggered);
                }
            }
            Event::PathSuspect(p) => {
                // Silence where an answer is owed: if the server moved without a MOVED
                // reaching us (its old address went first), the GNS already knows where.
                if c.server || c.closed || c.need_path || c.resolving {
                    return;
                }
                if let Some(t) = c.target.clone() {
                    tracing::debug!(path = p, "path suspect: asking the GNS");
                    c.resolving = true;
                    self.resolve(key, &t);
                }
            }
            Event::Moved { seq, locators } => {
                if !c.server {
                    self.peer_moved(key, seq, locators, now);
                }
            }
            Event::Closed => {
                tracing::debug!("session closed");
                c.closed = true;
                c.need_path = false;
                c.next_dial = None;
                c.dial_queue.clear();
            }
            Event::Reset { reason } => {
                tracing::debug!(?reason, "session reset");
                // Nothing more to dial for.
                c.closed = true;
                c.need_path = false;
                c.next_dial = None;
                c.dial_queue.clear();
                if let Some(r) = c.reply.take() {
                    let err = match reason {
                        ResetReason::PortRefused => ConnectError::Refused {
                            target: c.target.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                            port: c.port,
                        },
                        other => ConnectError::Reset(other),
                    };
                    let _ = r.send(Err(err));
                }
                if let Some(mut app) = c.app.take() {
                    self.io.remove(&app.token);
                    let _ = self.poll.registry().deregister(&mut app.stream);
                    app.reset();
                }
            }
        }
    }

    fn established(&mut self, key: u64, peer: PublicKey, now: Instant) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let peer_addr = c.paths.iter().rev().find_map(|p| {
            self.paths
                .get(p)
                .filter(|fp| fp.state == PathState::Open)
                .map(|fp| fp.remote)
        });
        let Some(reply) = c.reply.take() else {
            return;
        };
        let info = SessionInfo {
            peer_guid: peer.guid(),
            peer_name: c.peer_name.clone(),
            peer_addr: peer_addr.unwrap_or_else(|| SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
            service_port: c.port,
        };
        tracing::debug!(peer = %info.peer_guid, addr = %info.peer_addr, "session established");
        let secret: [u8; SECRET_LEN] = rand::random();
        if reply.send(Ok(Ready { secret, info })).is_err() {
            c.session.app_abort();
            return;
        }
        c.secret = Some(secret);
        c.pair_deadline = Some(now + PAIR_TIMEOUT);
        self.secrets.insert(secret, key);
    }

    /// Drops a session once it is finished and its last bytes reached the program.
    fn maybe_finish(&mut self, key: u64) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let app_done = c
            .app
            .as_ref()
            .is_none_or(|a| a.passed_eof() || a.failed || a.connecting);
        if !(c.session.is_finished() && app_done) {
            return;
        }
        let Some(c) = self.conns.remove(&key) else {
            return;
        };
        tracing::debug!("session finished");
        self.remove_parts(key, c);
    }

    fn remove_parts(&mut self, _key: u64, mut c: Conn) {
        if c.server {
            self.by_conn_id.remove(&c.session.conn_id());
        }
        if let Some(s) = c.secret.take() {
            self.secrets.remove(&s);
        }
        if let Some(d) = c.delivery.take() {
            self.shared.deliveries.lock().remove(&d);
        }
        if let Some(mut app) = c.app.take() {
            self.io.remove(&app.token);
            let _ = self.poll.registry().deregister(&mut app.stream);
        }
        for p in c.paths.drain(..) {
            if let Some(mut fp) = self.paths.remove(&p) {
                self.io.remove(&fp.token);
                let _ = fp.flush();
                let _ = self.poll.registry().deregister(&mut fp.stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_refreshed_well_before_they_expire_and_failures_retried_soon() {
        assert!(refresh_delay(0) * 2 < namesock_resolver::RECORD_LIFETIME);
        assert_eq!(refresh_delay(1), Duration::from_secs(2));
        assert_eq!(refresh_delay(2), Duration::from_secs(4));
        assert_eq!(refresh_delay(40), Duration::from_secs(60));
    }
}
