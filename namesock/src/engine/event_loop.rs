//! The engine thread: a mio loop that maps IO onto the sans-IO core (the [`Endpoint`], each
//! client's [`PathManager`](crate::path_manager::PathManager), each [`Session`]) and the
//! core's decisions back onto IO. Client and server specifics live in `client.rs` and
//! `server.rs`; this file has the loop, the flow paths' IO and the timers.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use namesock_identity::Keypair;
use namesock_resolver::Record;

use crate::config::Config;
use crate::endpoint::{ConnKey, Endpoint};
use crate::session::SessionConfig;
use crate::shared_lookup::SharedLookups;
use crate::spare_paths::SparePaths;
use crate::ticket::ClientTickets;
use crate::ticket_store::TicketStore;
use crate::timers::Timers;
use crate::wire::PathId;

use super::client::{Connecting, PendingApp};
use super::conn::{Conn, Side};
use super::netlink::{AddrChange, AddrMonitor};
use super::path::{FlowPath, PathState, ReadOutcome, SCRATCH_LEN, WRITE_CAP};
use super::record_watch::RecordWatch;
use super::send_share::SendShare;
use super::server::Server;
use super::snapshot::{CONTROL, ControlServer, EngineCounters, RecentPaths};
use super::{Command, Shared, local_hop, sys};

pub(super) const WAKER: Token = Token(0);
pub(super) const RELAY_V4: Token = Token(1);
pub(super) const RELAY_V6: Token = Token(2);
pub(super) const LISTENER: Token = Token(3);
/// Descriptors one session holds in this process: the program's socket, the engine's end of
/// it and a flow path.
const FDS_PER_SESSION: u64 = 3;
/// Descriptors left for everything else the program and the engine open.
const FD_HEADROOM: u64 = 64;

const MONITOR: Token = Token(4);
pub(super) const RECORD_WATCH: Token = Token(6);
const FIRST_DYNAMIC: usize = 16;

/// What a mio token stands for.
pub(super) enum Io {
    Path(PathId),
    App(ConnKey),
    Pending(u64),
    /// A control connection being answered.
    Control,
    /// A server's control connection to one of its relays (index in `Server::links`).
    RelayLink(usize),
    /// A spare path waiting for the next dial to its address (`crate::spare_paths`; its id
    /// is the token).
    Spare,
}

pub(crate) struct Engine {
    pub(super) poll: Poll,
    pub(super) cfg: Config,
    pub(super) session_cfg: SessionConfig,
    rx: Receiver<Command>,
    pub(super) tx: SyncSender<Command>,
    pub(super) waker: Arc<Waker>,
    pub(super) shared: Arc<Shared>,
    pub(super) relay_v4: Option<TcpListener>,
    pub(super) relay_v6: Option<TcpListener>,
    monitor: Option<AddrMonitor>,
    /// This host's addresses (refreshed on every change the monitor reports).
    pub(super) local_addrs: Vec<IpAddr>,
    /// The file store's records, watched once a client session exists (`record_watch.rs`).
    pub(super) record_watch: Option<RecordWatch>,
    pub(super) record_watch_tried: bool,
    /// Routing of arriving paths, the connection-ID table, session numbers.
    pub(super) endpoint: Endpoint,
    pub(super) server: Option<Server>,
    pub(super) client_key: Arc<Keypair>,
    pub(super) connecting: HashMap<ConnKey, Connecting>,
    /// Established sessions' lookups, shared by target (`crate::shared_lookup`).
    pub(super) lookups: SharedLookups<Record>,
    pub(super) conns: HashMap<ConnKey, Conn>,
    /// The soft open-file limit until the engine raised it (then `u64::MAX`).
    fd_soft_limit: u64,
    pub(super) secrets: HashMap<[u8; super::relay::SECRET_LEN], ConnKey>,
    pub(super) paths: HashMap<PathId, FlowPath>,
    pub(super) pending: HashMap<u64, (Token, PendingApp)>,
    pub(super) io: HashMap<Token, Io>,
    next_token: usize,
    pub(super) next_pending: u64,
    pub(super) dirty: HashSet<ConnKey>,
    /// Threads waiting (at process exit) for half-closed sessions to finish.
    pub(super) drain_waiters: Vec<SyncSender<()>>,
    /// While they wait: when to look again (`exit_drain`).
    pub(super) drain_recheck_at: Option<Instant>,
    /// Sessions by deadline, so that a loop turn costs what it touches, not every session;
    /// deadlines are coalesced across sessions (`crate::timers`).
    timers: Timers<ConnKey>,
    /// Sessions whose deadline may have changed this turn (besides `dirty`).
    touched: Vec<ConnKey>,
    /// Something happened whose sessions are not known (an address change, a rare command):
    /// recompute every session's deadline at the end of the turn. What a connect brings (its
    /// commands, the pairing, an arriving path) marks its own session, so a busy server with
    /// thousands of lingering sessions does not recompute them all per connection.
    touched_all: bool,
    /// Every flow path's reads go through this one buffer (the loop is single-threaded), so
    /// an idle session holds no IO buffers (a program's bytes are read straight into its
    /// session's replay buffer).
    pub(super) scratch: Vec<u8>,
    /// Every flow path's frames are encoded here and written from here while its socket keeps
    /// up, so a busy path holds no write buffer of its own (`FlowPath::send_frames`).
    staging: Vec<u8>,
    /// The bytes in flight granted to each session sending at full speed.
    send_share: SendShare,
    /// The control socket `namesock sessions` reads (none if it could not be made).
    pub(super) control: Option<ControlServer>,
    /// Refusals, by reason.
    pub(super) counters: EngineCounters,
    /// Tickets of this engine's client sessions: later connects to the same server and port
    /// open with one OPEN frame (see `crate::ticket`).
    pub(super) tickets: ClientTickets,
    /// Where tickets pass between this user's processes (`NAMESOCK_SHARE_TICKETS`).
    pub(super) ticket_store: Option<TicketStore>,
    /// Paths dialled ahead to peers just connected to (`NAMESOCK_SPARE_PATHS`).
    pub(super) spares: SparePaths<mio::net::TcpStream>,
    /// Addresses of recently closed paths (for the moves in a snapshot).
    pub(super) recent_paths: RecentPaths,
    /// When the engine last gave free memory back to the kernel ([`TRIM_EVERY`]).
    trimmed: Instant,
    /// When a program's bytes last moved through the engine (either way).
    moved_at: Option<Instant>,
}

/// How often the engine gives the allocator's free memory back to the kernel, at most (and
/// only on a turn it woke for anyway), while bytes move and for [`TRIM_AFTER_KEEPALIVES`]
/// keepalive intervals after, when the sessions that moved them give their buffers back:
/// that memory leaves the process within a second, not only when the heap's top happens to
/// be free. An engine at rest does not trim (each trim walks the allocator's free chunks).
const TRIM_EVERY: Duration = Duration::from_secs(1);
const TRIM_AFTER_KEEPALIVES: u32 = 3;

fn session_config(cfg: &Config) -> SessionConfig {
    SessionConfig {
        replay_capacity: cfg.replay_bytes,
        recv_capacity: cfg.replay_bytes,
        keepalive_interval: cfg.keepalive(),
        path_dead_after: cfg.path_dead(),
        suspect_after: cfg.suspect(),
        linger: cfg.linger(),
        ack_delay: crate::session::ACK_DELAY,
    }
}

/// The listener programs' sockets connect to; what it accepts inherits its `TCP_NODELAY`
/// (the engine's end of a program's socket forwards each write at once) and the tuning of a
/// local hop's engine end.
fn bind_relay(ip: IpAddr) -> Option<TcpListener> {
    match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(l) => {
            let _ = sys::set_nodelay(l.as_raw_fd());
            local_hop::engine_end(l.as_raw_fd());
            Some(l)
        }
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
        let control = match ControlServer::open(poll.registry()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no control socket: `namesock sessions` will not see this process");
                None
            }
        };
        let shared = Arc::new(Shared {
            deliveries: Default::default(),
            relay_v4: relay_v4.as_ref().and_then(|l| l.local_addr().ok()),
            relay_v6: relay_v6.as_ref().and_then(|l| l.local_addr().ok()),
            gns: Default::default(),
            local_guid: Default::default(),
            control_path: control.as_ref().map(|c| c.path.clone()),
            children_path: Default::default(),
            records: Default::default(),
        });
        // A client proves a stable identity when this user has one; otherwise a fresh key
        // per process (the server learns a GUID either way).
        let user_key = Keypair::load(&cfg.key_path()).ok();
        // Tickets go from process to process only under the user's own key: a fresh key's
        // would serve no later process.
        let ticket_store = user_key
            .as_ref()
            .filter(|_| cfg.share_tickets)
            .map(|k| TicketStore::new(k.public().guid()));
        let client_key = Arc::new(user_key.unwrap_or_else(Keypair::generate));
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
            local_addrs: sys::local_addrs().unwrap_or_default(),
            record_watch: None,
            record_watch_tried: false,
            endpoint: Endpoint::new(),
            server: None,
            client_key,
            connecting: HashMap::new(),
            lookups: SharedLookups::default(),
            conns: HashMap::new(),
            fd_soft_limit: sys::nofile_limits().map_or(u64::MAX, |(soft, _)| soft),
            secrets: HashMap::new(),
            paths: HashMap::new(),
            pending: HashMap::new(),
            io: HashMap::new(),
            next_token: FIRST_DYNAMIC,
            next_pending: 1,
            dirty: HashSet::new(),
            drain_waiters: Vec::new(),
            drain_recheck_at: None,
            timers: Timers::new(Instant::now()),
            touched: Vec::new(),
            touched_all: false,
            scratch: vec![0; SCRATCH_LEN],
            staging: Vec::with_capacity(WRITE_CAP),
            send_share: SendShare::default(),
            control,
            counters: EngineCounters::default(),
            tickets: ClientTickets::default(),
            ticket_store,
            spares: SparePaths::default(),
            recent_paths: RecentPaths::default(),
            trimmed: Instant::now(),
            moved_at: None,
        };
        Ok((engine, waker, shared))
    }

    pub(super) fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// How this engine's flow paths are tuned (`sys::PathTuning::tune`).
    pub(super) fn path_tuning(&self) -> sys::PathTuning {
        sys::PathTuning {
            user_timeout: self.cfg.path_dead(),
            keepalive: self.cfg.keepalive(),
            congestion: self.cfg.path_congestion,
        }
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
                    // A pairing or an arriving path marks the session it joins or makes.
                    RELAY_V4 | RELAY_V6 => self.accept_relay(ev.token(), now),
                    LISTENER => self.accept_paths(now),
                    MONITOR => {
                        self.touched_all = true;
                        self.on_addr_change(now)
                    }
                    RECORD_WATCH => self.on_record_watch(),
                    CONTROL => self.accept_control(now),
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
            // Driving a session may dirty another (a connect failing removes its parts):
            // drive until nothing is left.
            while !self.dirty.is_empty() {
                let dirty: Vec<ConnKey> = self.dirty.drain().collect();
                for &key in &dirty {
                    self.drive(key, Instant::now());
                }
                self.touched.extend(dirty);
            }
            self.dial_spares(Instant::now());
            self.reschedule(Instant::now());
            self.answer_exit_drain(Instant::now());
        }
    }

    /// Commands from other threads. `false`: every sender is gone.
    fn drain_commands(&mut self, now: Instant) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => {
                    self.touched_all |= !cmd.marks_its_sessions();
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
            Command::Abandon { secret } => self.abandon(&secret),
            Command::Serve {
                port,
                deliver_to,
                reply,
            } => self.serve(port, deliver_to, reply),
            Command::Unserve { port } => self.unserve(port),
            Command::Resolved { conn, result } => self.on_resolved(conn, *result, now),
            Command::Reresolved { target, result } => self.on_reresolved(target, *result, now),
            Command::RecordChanged { guid, result } => self.on_record_changed(guid, *result, now),
            Command::RelayResolved { link, result } => self.on_relay_resolved(link, *result, now),
            Command::Published { result } => self.on_published(*result, now),
            Command::Drain { reply } => {
                self.hand_over_tickets(now);
                self.drain_waiters.push(reply);
            }
            Command::Withdraw { reply } => self.withdraw(reply),
        }
    }

    // ---------------------------------------------------------------- I/O events

    /// Notes which session an IO event concerns, so that its deadline is recomputed.
    fn touch_io(&mut self, token: Token) {
        match self.io.get(&token) {
            Some(Io::Path(p)) => {
                // A path that may present HELLO or RESUME marks the session it makes or joins.
                if let Some(key) = self.paths.get(p).and_then(|fp| fp.conn) {
                    self.touched.push(key)
                }
            }
            Some(Io::App(key)) => self.touched.push(*key),
            // A pairing marks its session.
            Some(Io::Pending(_))
            | Some(Io::Control)
            | Some(Io::RelayLink(_))
            | Some(Io::Spare)
            | None => {}
        }
    }

    /// Files the sessions touched this turn under their current deadlines.
    fn reschedule(&mut self, now: Instant) {
        // The list keeps its capacity from turn to turn (no allocation per turn).
        let mut keys = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.touched_all) {
            keys.clear();
            keys.extend(self.conns.keys().copied());
        } else {
            // A busy session is touched by each of its sockets' events and by its drive:
            // compute its deadline once.
            keys.sort_unstable();
            keys.dedup();
        }
        for &key in &keys {
            match self.conns.get(&key) {
                Some(c) => self.timers.set(key, c.deadline(), now),
                None => self.timers.remove(key),
            }
        }
        keys.clear();
        self.touched = keys;
    }

    fn on_io(&mut self, token: Token, ev: &mio::event::Event, now: Instant) {
        match self.io.get(&token) {
            Some(Io::Path(p)) => {
                let p = *p;
                self.on_path(p, ev, now)
            }
            Some(Io::App(key)) => {
                let key = *key;
                let Some(c) = self.conns.get_mut(&key) else {
                    return;
                };
                let Conn { side, app, .. } = c;
                if let Some(app) = app {
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
                                if let Side::Server(s) = side {
                                    s.session.app_abort();
                                }
                            }
                        }
                    } else {
                        app.on_event(ev);
                    }
                }
                self.dirty.insert(key);
            }
            Some(Io::Pending(id)) => {
                let id = *id;
                self.on_pending_app(id);
            }
            Some(Io::Control) => self.on_control_writable(token),
            Some(Io::RelayLink(i)) => {
                let i = *i;
                self.on_link(i, ev, now)
            }
            Some(Io::Spare) => self.on_spare(token),
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
                    self.dial_failed(pid, &e, now);
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
        fp.read_to_end |= ev.is_read_closed() || ev.is_error();
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read_path(pid, now);
        }
        if let Some(k) = self.paths.get(&pid).and_then(|fp| fp.conn) {
            self.dirty.insert(k);
        } else if let Some(fp) = self.paths.get_mut(&pid) {
            // Unattached server path: flush a RESET, then close.
            let done = fp.flush().is_err() || fp.pending() == 0;
            if fp.state == PathState::Closing && done {
                self.close_path(pid, now);
            }
        }
    }

    /// Reads frames from a path into its session (or, for a new server path, its first
    /// frame: HELLO or RESUME, routed by the endpoint).
    pub(super) fn read_path(&mut self, pid: PathId, now: Instant) {
        loop {
            let Some(fp) = self.paths.get_mut(&pid) else {
                return;
            };
            let outcome = match fp.conn {
                Some(key) => {
                    let Some(c) = self.conns.get_mut(&key) else {
                        return;
                    };
                    let session = c.session_mut();
                    if let Some(rtt) = fp.transport_rtt(now) {
                        session.set_transport_rtt(pid, rtt);
                    }
                    let mut failed = None;
                    let mut got_frame = false;
                    let outcome = fp.read_frames(&mut self.scratch, |frame| {
                        got_frame = true;
                        match session.handle_record(now, pid, frame) {
                            Ok(()) => true,
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        }
                    });
                    self.dirty.insert(key);
                    if got_frame && let Some(client) = c.client() {
                        client.pm.frames_received(now, pid);
                    }
                    if let Some(e) = failed {
                        self.counters.frame_refused(e.kind());
                        tracing::debug!(path = pid, error = %e, "session refused a frame: closing path");
                        self.close_path(pid, now);
                        return;
                    }
                    outcome
                }
                None => {
                    let (outcome, routed) = self.read_first_frame(pid, now);
                    if routed {
                        // Attached (or closing): read on with the session.
                        if self.paths.get(&pid).is_some_and(|fp| fp.conn.is_some()) {
                            continue;
                        }
                        return;
                    }
                    outcome
                }
            };
            match outcome {
                ReadOutcome::Open => return,
                ReadOutcome::Closed(e) => {
                    tracing::debug!(path = pid, error = ?e, "path closed");
                    self.close_path(pid, now);
                    return;
                }
                ReadOutcome::Malformed(e) => {
                    self.counters.malformed(e.kind());
                    tracing::debug!(path = pid, error = %e, "malformed frame: closing path");
                    self.close_path(pid, now);
                    return;
                }
            }
        }
    }

    /// Closes a path the engine lost (read or write failed, the peer closed it, its address
    /// went away, it broke the protocol) and tells its owner.
    pub(super) fn close_path(&mut self, pid: PathId, now: Instant) {
        let Some(fp) = self.drop_path(pid) else {
            return;
        };
        let Some(key) = fp.conn else {
            self.endpoint.path_gone(pid);
            return;
        };
        if let Some(c) = self.conns.get_mut(&key) {
            match &mut c.side {
                Side::Client(client) => client.pm.path_closed(now, pid),
                Side::Server(s) => {
                    s.paths.retain(|p| *p != pid);
                    s.session.path_closed(now, pid);
                }
            }
            self.dirty.insert(key);
        }
    }

    /// Removes a path's socket from the loop and the tables, telling nobody.
    pub(super) fn drop_path(&mut self, pid: PathId) -> Option<FlowPath> {
        let mut fp = self.paths.remove(&pid)?;
        self.recent_paths.push(pid, fp.local, fp.remote);
        self.io.remove(&fp.token);
        let _ = self.poll.registry().deregister(&mut fp.stream);
        Some(fp)
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
        self.drop_spares("this host's addresses changed");
        self.local_addrs = sys::local_addrs().unwrap_or_default();
        if let Some(gns) = self.shared.gns_if_open() {
            gns.local_addresses_changed();
        }
        let mut gone: Vec<IpAddr> = Vec::new();
        let mut link_down: Vec<IpAddr> = Vec::new();
        let mut added = false;
        for ch in &changes {
            match ch {
                AddrChange::Removed(ip) => gone.push(*ip),
                AddrChange::Added(_) | AddrChange::LinkUp(_) | AddrChange::DefaultRoute => {
                    added = true
                }
                AddrChange::LinkDown(index) => {
                    // Its addresses may stay configured, but nothing gets through them.
                    let addrs = sys::addrs_of_interface(*index).unwrap_or_default();
                    link_down.extend(addrs);
                }
                AddrChange::Overflow => {
                    added = true;
                    gone.extend(
                        self.paths
                            .values()
                            .filter_map(|p| p.local.map(|a| a.ip()))
                            .filter(|ip| !self.local_addrs.contains(ip)),
                    );
                }
            }
        }
        // An address that went away takes its paths with it, at once.
        if !gone.is_empty() || !link_down.is_empty() {
            let mut still = self.local_addrs.clone();
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
                self.close_path(p, now);
            }
        }
        if added {
            let local = &self.local_addrs;
            for (key, c) in &mut self.conns {
                if let Some(client) = c.client() {
                    client.pm.addresses_changed(now, true, local);
                    self.dirty.insert(*key);
                }
            }
        }
        if self.server.is_some() {
            self.relay_links_addresses_changed(added, now);
            self.publish_addresses(added, now);
        }
    }

    /// A new session is about to take descriptors: when the sessions would pass the soft
    /// open-file limit, raise it to the hard one. Only then: a program that never needs more
    /// keeps the limit it had (a program using select(2) relies on descriptors staying below
    /// FD_SETSIZE, and a larger limit slows every loop that closes descriptors up to it).
    pub(super) fn make_room_for_a_session(&mut self) {
        let need = (self.conns.len() as u64 + 1) * FDS_PER_SESSION + FD_HEADROOM;
        if need <= self.fd_soft_limit {
            return;
        }
        self.fd_soft_limit = u64::MAX;
        match sys::raise_nofile() {
            Ok((soft, hard, now)) => tracing::info!(
                soft,
                hard,
                now,
                sessions = self.conns.len(),
                "open-file soft limit raised to the hard limit"
            ),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }

    // ---------------------------------------------------------------- timers

    fn next_timeout(&mut self) -> Option<Instant> {
        let sessions = self.timers.next_wakeup();
        let connects = self.connecting.values().map(|r| r.deadline).min();
        let pairing = self.pending_deadline();
        let server = self.server.as_ref().and_then(|s| {
            let links = s.links.iter().filter_map(|l| l.retry_at()).min();
            [s.refresh_at, s.publish_at]
                .into_iter()
                .flatten()
                .chain(links)
                .min()
        });
        [
            sessions,
            connects,
            pairing,
            self.endpoint.poll_timeout(),
            self.spares.next_expiry(),
            server,
            self.drain_recheck_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_timers(&mut self, now: Instant) {
        self.expire_connects(now);
        self.expire_spares(now);
        self.relay_timers(now);
        let mut due = Vec::new();
        while let Some(key) = self.timers.pop_due(now) {
            due.push(key);
        }
        for key in due {
            // Rescheduled at the end of the turn, whatever happens here.
            self.dirty.insert(key);
            let local = &self.local_addrs;
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            match &mut c.side {
                Side::Client(client) => {
                    client.pm.handle_timeout(now, local);
                    if client.pair_deadline.is_some_and(|d| d <= now) {
                        tracing::debug!("the program never attached its socket: session aborted");
                        client.pair_deadline = None;
                        if let Some(s) = client.secret.take() {
                            self.secrets.remove(&s);
                        }
                        client.pm.session_mut().app_abort();
                    }
                }
                Side::Server(s) => {
                    if s.session.poll_timeout().is_some_and(|t| t <= now) {
                        s.session.handle_timeout(now);
                    }
                }
            }
        }
        self.expire_pending(now);
        for pid in self.endpoint.handle_timeout(now) {
            self.counters.path_refused("FirstFrameTimeout");
            tracing::debug!(path = pid, "no HELLO or RESUME in time: path closed");
            self.drop_path(pid);
        }
        self.refresh_record(now);
        self.publish_settled(now);
        let settling = self.session_cfg.keepalive_interval * TRIM_AFTER_KEEPALIVES;
        if now.saturating_duration_since(self.trimmed) >= TRIM_EVERY
            && self
                .moved_at
                .is_some_and(|t| now.saturating_duration_since(t) <= settling)
        {
            self.trimmed = now;
            sys::return_free_memory();
        }
    }

    // ---------------------------------------------------------------- the driver

    /// Moves everything of one session as far as it goes: relay, decisions, frames out.
    fn drive(&mut self, key: ConnKey, now: Instant) {
        for _ in 0..64 {
            let Some(c) = self.conns.get_mut(&key) else {
                return;
            };
            if let Some((app, session)) = c.app_and_session() {
                session.set_send_share(self.send_share.share(now));
                if app.pump(session) {
                    self.moved_at = Some(now);
                }
                if session.send_blocked() {
                    self.send_share.full(key, now);
                }
            }
            // A client's decisions first (they may open or close paths); a server's events
            // after its frames went out: a session an OPEN made is delivered to the program
            // (a loopback connect) after its OPEN_ACK left, not before.
            let client_progress = match c.side {
                Side::Client(_) => Some(self.client_actions(key, now)),
                Side::Server(_) => None,
            };
            let Some(c) = self.conns.get_mut(&key) else {
                return;
            };
            let paths = c.path_ids();
            let session = c.session_mut();
            let mut failed = Vec::new();
            for pid in paths {
                let Some(fp) = self.paths.get_mut(&pid) else {
                    continue;
                };
                if fp.state != PathState::Open {
                    continue;
                }
                let sent = fp.send_frames(&mut self.staging, |buf| {
                    session.transmit_into(now, pid, buf)
                });
                if let Err(e) = sent {
                    tracing::debug!(path = pid, error = %e, "path write failed");
                    failed.push(pid);
                }
            }
            for p in &failed {
                self.close_path(*p, now);
            }
            let progressed = match client_progress {
                Some(progressed) => progressed,
                None => self.server_events(key),
            };
            if !progressed && failed.is_empty() {
                break;
            }
        }
        // Closed both ways and everything handed over: the program's socket is done even if
        // the (server) session still lingers for a late resume.
        if let Some(c) = self.conns.get_mut(&key)
            && c.is_closed()
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

    /// Resets the program's socket (ECONNRESET): the session was reset.
    pub(super) fn reset_app(&mut self, key: ConnKey) {
        if let Some(c) = self.conns.get_mut(&key)
            && let Some(mut app) = c.app.take()
        {
            self.io.remove(&app.token);
            let _ = self.poll.registry().deregister(&mut app.stream);
            app.reset();
        }
    }

    /// Drops a session once it is finished and its last bytes reached the program.
    fn maybe_finish(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let app_done = c
            .app
            .as_ref()
            .is_none_or(|a| a.passed_eof() || a.failed || a.connecting);
        if !(c.session().is_finished() && app_done) {
            return;
        }
        tracing::debug!("session finished");
        self.remove_conn(key);
    }

    /// Removes a session and everything it holds.
    pub(super) fn remove_conn(&mut self, key: ConnKey) {
        let Some(mut c) = self.conns.remove(&key) else {
            return;
        };
        self.timers.remove(key);
        let paths = c.path_ids();
        match &mut c.side {
            Side::Client(client) => {
                if let Some(s) = client.secret.take() {
                    self.secrets.remove(&s);
                }
                if client.cached {
                    self.shared.records.lock().session_ended(&client.target);
                }
            }
            Side::Server(s) => {
                self.endpoint.session_ended(&s.session.conn_id());
            }
        }
        if let Some(mut app) = c.app.take() {
            self.io.remove(&app.token);
            let _ = self.poll.registry().deregister(&mut app.stream);
        }
        for p in paths {
            if let Some(mut fp) = self.drop_path(p) {
                let _ = fp.flush();
            }
        }
    }
}
