//! The client's path manager, sans-IO: how a client follows a peer that moves.
//!
//! A [`PathManager`] owns one client [`Session`] and decides which flow paths it should have:
//! the first dials (happy eyeballs), re-dial rounds with backoff and a fresh GNS lookup when no
//! path is left, make-before-break when the server announces a move, standby paths from the
//! other local addresses of a multihomed client, GNS lookups while the peer's stream is stopped
//! or no path is left (every 10 ms, within a budget: `quiet`) and when a path that owes an
//! answer stays silent, a record the GNS store
//! published (newer, with new locators: dialled at once), and the connect timeout. It holds
//! the peer's locators and record sequence (nowhere else does), and the state of every path
//! it asked for.
//!
//! Inputs: path events from the driver (a dial started, connected, failed; a path lost; a
//! frame received), GNS answers, local address changes and the time. Outputs: [`Action`]s
//! (dial this address from that local address, close a path, resolve the peer, report the
//! connect's outcome). Nothing here touches a socket, a thread or a clock: the engine maps
//! the actions onto IO, and the simulation onto its virtual network.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use namesock_identity::PublicKey;
use tracing::debug;

use crate::session::{Event, Session};
use crate::wire::{PathId, ResetReason};
pub use quiet::{QUIET_LOOKUP_BURST, QUIET_LOOKUP_EVERY, QUIET_LOOKUP_SPACING};
use quiet::{QuietLookups, Silence};

/// Happy eyeballs: start the next locator's dial this long after the previous one.
pub const STAGGER: Duration = Duration::from_millis(250);
/// Re-dial backoff while a session has no path.
pub const BACKOFF_MIN: Duration = Duration::from_millis(25);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A dial still connecting after this long is abandoned at the next round.
pub const DIAL_STALE: Duration = Duration::from_millis(900);
/// At most this many paths (active and standby) per multihomed client session.
pub const MAX_STANDBY: usize = 3;
/// At most this many dials in flight per session.
pub const MAX_DIALS: usize = 16;

/// An OPEN (a new session from a ticket) that has no OPEN_ACK this long (or four of its
/// parent's round trips, if longer) falls back to HELLO. Sooner: when its one dial has not
/// connected within [`STAGGER`] (or two of the parent's round trips), or its path is suspect
/// (no answer within the suspicion delay, 200 ms or three round trips, the parent's until the
/// path measures its own): a server that knows the ticket answers in one round trip.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// A fresh path number, unique in this process (server paths draw from the same counter, so
/// a driver can file every path under its number).
pub fn next_path_id() -> PathId {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    loop {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// Why a dial did not connect, as far as the connect's outcome cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// Nobody listens there (ECONNREFUSED).
    Refused,
    HostUnreachable,
    NetUnreachable,
    /// Anything else (a timeout, a reset, a local error).
    Other,
}

impl DialError {
    pub fn from_errno(errno: Option<i32>) -> DialError {
        match errno {
            Some(libc::ECONNREFUSED) => DialError::Refused,
            Some(libc::EHOSTUNREACH) => DialError::HostUnreachable,
            Some(libc::ENETUNREACH) => DialError::NetUnreachable,
            _ => DialError::Other,
        }
    }
}

/// Why a connect failed (the driver adds the target and port for the program's error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Every locator refused the TCP connection right after a fresh resolve, or the server
    /// does not serve the port.
    Refused,
    TimedOut,
    HostUnreachable,
    NetUnreachable,
    /// The server reset the session during the handshake.
    Reset(ResetReason),
    /// The server refused the session by policy (allow list, limits): a signed REFUSE.
    Denied(ResetReason),
}

/// Where the lookup that may confirm a refusal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefusalLookup {
    None,
    /// A lookup asked before the refusal is in flight: ask again when it answers.
    Wanted,
    Asked,
}

/// What the driver must do for the path manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `remote` (from `local`, when given) as path `path`; report
    /// `dial_failed`, `path_connected` or (later) `path_closed`.
    Dial {
        path: PathId,
        remote: SocketAddr,
        local: Option<IpAddr>,
    },
    /// Close this path's connection (the session already forgot it).
    Close { path: PathId },
    /// Ask the GNS for the peer's record; answer with `resolved`.
    Resolve,
    /// The handshake succeeded: hand the session to the program.
    Established { peer: PublicKey, remote: SocketAddr },
    /// The connect failed: tell the program and drop the session.
    Failed(ConnectFailure),
    /// The session's OPEN failed (its dial failed, its path closed, the server refused it or
    /// did not answer in time): the ticket is spent; drop the session and connect again with
    /// a HELLO. The program has seen nothing yet.
    OpenFailed,
    /// The established session was reset (by the peer, or its linger ran out): the program
    /// sees ECONNRESET.
    Reset(ResetReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPathState {
    Dialing,
    Open,
}

/// One path the manager asked for.
#[derive(Debug, Clone)]
pub struct ClientPath {
    pub id: PathId,
    pub state: ClientPathState,
    pub remote: SocketAddr,
    /// The local address asked for (a standby path), or the one the connection got.
    pub local: Option<IpAddr>,
    /// A multihomed client's extra path, pinned to one more local address.
    pub standby: bool,
    /// The path goes through a relay the peer's record lists: the driver opens it with the
    /// relay preamble naming the peer's GUID (`relay::wire::Preamble::Connect`).
    pub relay: bool,
    started: Instant,
    /// Paths to close once this one has carried a frame from the peer (make-before-break).
    replaces: Vec<PathId>,
}

/// A record as the path manager needs it: sequence, locators (of the session's port), relays.
pub type RecordLocators = (u64, Vec<SocketAddr>, Vec<SocketAddr>);

/// Where the peer can be reached: its record and its latest announcement, in one place.
#[derive(Debug, Clone, Default)]
struct PeerLocators {
    /// The newest record's sequence and locators.
    record_seq: u64,
    record: Vec<SocketAddr>,
    /// The newest move acted on (a MOVED frame, or a record newer than the last one), and
    /// where the peer went; dialled first.
    moved_seq: u64,
    moved: Vec<SocketAddr>,
    /// The newest record's relays: dialled after its locators.
    relays: Vec<SocketAddr>,
}

/// Whether locators on this host (loopback, or the unspecified address, which reaches this
/// host too) taken from a record or a MOVED are dialled. A record is read by other hosts:
/// such a locator is a mistake or an attack (it would reach whatever listens on this host at
/// that port), so it is refused; a lab on one host's loopback says `Dial`
/// (`NAMESOCK_DIAL_LOOPBACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopbackLocators {
    #[default]
    Refuse,
    Dial,
}

impl LoopbackLocators {
    /// `locators` without the ones this setting refuses (logged: who published them
    /// should know).
    pub fn filter(self, locators: Vec<SocketAddr>, from: &'static str) -> Vec<SocketAddr> {
        if self == LoopbackLocators::Dial {
            return locators;
        }
        let (local, reachable): (Vec<SocketAddr>, Vec<SocketAddr>) =
            locators.into_iter().partition(|a| on_this_host(a.ip()));
        if !local.is_empty() {
            tracing::warn!(
                ?local,
                from,
                "ignoring locators on this host's loopback: a record or MOVED must name \
                 addresses other hosts can reach"
            );
        }
        reachable
    }
}

/// Loopback (IPv4-mapped too) or unspecified: an address that means this host when dialled.
fn on_this_host(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

/// A client session and the paths under it.
pub struct PathManager {
    session: Session,
    peer: PeerLocators,
    loopback: LoopbackLocators,
    paths: Vec<ClientPath>,
    dial_queue: VecDeque<SocketAddr>,
    next_dial: Option<Instant>,
    backoff: Duration,
    need_path: bool,
    resolving: bool,
    /// Lookups of a silence (the peer's stream stopped, or no path left) and their budget.
    quiet: QuietLookups,
    /// The latest failed dial's error, whether every dial of this round was refused, and
    /// whether this round dials a record looked up after a round was refused. Refusals fail a
    /// connect only then: a server that moved has not always republished when its record is
    /// read, so a lookup must answer after the refusal, and the next round be refused too.
    last_error: Option<DialError>,
    round_refused: bool,
    round_resolved: bool,
    /// The lookup asked because a round was refused.
    refusal_lookup: RefusalLookup,
    /// That lookup answered; the next round dials its record.
    fresh_record: bool,
    /// A dial of this session connected once: the peer was there, so later refusals mean
    /// it is moving (the GNS may not know yet), not that nobody serves the name.
    ever_connected: bool,
    /// Local addresses a standby path was tried from (until the addresses change).
    standby_tried: HashSet<IpAddr>,
    /// When the latest round of dials started.
    last_round: Option<Instant>,
    /// Until the session is established (then `None`): when the connect gives up.
    connect_deadline: Option<Instant>,
    /// Both directions finished, the session was reset, or the connect failed: nothing
    /// more to dial for.
    closed: bool,
    /// The session opens with an OPEN (until it is established), and the program's connect
    /// gives up at this instant: whatever goes wrong before OPEN_ACK ends it with
    /// `Action::OpenFailed` rather than a retry. An OPEN that carried early data waits for
    /// its answer until then (a HELLO could deliver the bytes twice).
    opening: Option<Instant>,
    actions: VecDeque<Action>,
}

impl PathManager {
    /// Starts dialing `locators`, then `relays` (from the peer's record with sequence
    /// `record_seq`) for the new client `session`; the connect fails at `connect_deadline`.
    /// `loopback` says whether locators on this host are dialled.
    pub fn new(
        now: Instant,
        session: Session,
        record_seq: u64,
        (locators, relays): (Vec<SocketAddr>, Vec<SocketAddr>),
        connect_deadline: Instant,
        loopback: LoopbackLocators,
    ) -> PathManager {
        let mut pm = PathManager {
            session,
            peer: PeerLocators {
                record_seq,
                record: loopback.filter(locators, "record"),
                relays: loopback.filter(relays, "record's relays"),
                ..PeerLocators::default()
            },
            loopback,
            paths: Vec::new(),
            dial_queue: VecDeque::new(),
            next_dial: None,
            backoff: BACKOFF_MIN,
            need_path: true,
            resolving: false,
            quiet: QuietLookups::new(now),
            last_error: None,
            round_refused: true,
            round_resolved: false,
            refusal_lookup: RefusalLookup::None,
            fresh_record: false,
            ever_connected: false,
            standby_tried: HashSet::new(),
            last_round: None,
            connect_deadline: Some(connect_deadline),
            closed: false,
            opening: None,
            actions: VecDeque::new(),
        };
        pm.start_round(now, true);
        pm
    }

    /// Starts the client `session` made with `Session::client_open`: one dial to `addr`
    /// (where its ticket's session went), OPEN on it. Anything but OPEN_ACK within
    /// [`OPEN_TIMEOUT`] (four of `parent_rtt`, if longer; and before `connect_deadline`) ends
    /// in `Action::OpenFailed`; once established, the session follows its peer as any other
    /// (`record_seq` and `addr` are what it knows of the peer until a lookup).
    pub fn new_open(
        now: Instant,
        session: Session,
        record_seq: u64,
        (addr, parent_rtt): (SocketAddr, Option<Duration>),
        connect_deadline: Instant,
        loopback: LoopbackLocators,
    ) -> PathManager {
        let parent_rtt = parent_rtt.unwrap_or_default();
        let deadline = connect_deadline.min(now + OPEN_TIMEOUT.max(parent_rtt * 4));
        let mut pm = PathManager::new(
            now,
            session,
            record_seq,
            (vec![addr], Vec::new()),
            deadline,
            loopback,
        );
        pm.opening = Some(connect_deadline);
        // The dial's cut-off (see `handle_timeout`): a far server's SYN takes its round trip.
        pm.next_dial = pm.next_dial.map(|_| now + STAGGER.max(parent_rtt * 2));
        if pm.paths.is_empty() {
            // The address was filtered out: nothing to OPEN on.
            pm.open_failed(now);
        }
        pm
    }

    /// The OPEN failed: everything stops and the driver connects again with a HELLO.
    /// Returns whether this session was still opening (else nothing changes).
    fn open_failed(&mut self, now: Instant) -> bool {
        if self.opening.is_none() || !self.is_connecting() {
            return false;
        }
        debug!("OPEN failed: falling back to HELLO");
        self.opening = None;
        self.connect_deadline = None;
        self.stop();
        let paths: Vec<PathId> = self.paths.iter().map(|p| p.id).collect();
        for p in paths {
            self.close_path(now, p);
        }
        self.actions.push_back(Action::OpenFailed);
        true
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, for the program's bytes and the frames out. Call [`PathManager::process`]
    /// after anything that may raise session events.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The paths asked for and not yet closed.
    pub fn paths(&self) -> &[ClientPath] {
        &self.paths
    }

    pub fn path(&self, id: PathId) -> Option<&ClientPath> {
        self.paths.iter().find(|p| p.id == id)
    }

    /// Still waiting for the handshake (the program's connect has no answer yet).
    pub fn is_connecting(&self) -> bool {
        self.connect_deadline.is_some()
    }

    /// Closed, reset or failed: nothing more to dial for.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// No path at all: re-dialing.
    pub fn needs_path(&self) -> bool {
        self.need_path
    }

    /// The next action for the driver. Session events are taken first.
    pub fn poll_action(&mut self, now: Instant, local: &[IpAddr]) -> Option<Action> {
        self.process(now, local);
        self.actions.pop_front()
    }

    /// When `handle_timeout` has work: the session's timers, the next dial, the connect
    /// deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.session.poll_timeout(),
            self.next_dial,
            self.connect_deadline,
            self.quiet.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Heap capacity of the action and dial queues and of the session's buffers.
    #[cfg(test)]
    fn queue_capacity(&self) -> usize {
        self.actions.capacity() + self.dial_queue.capacity() + self.session.buffer_capacity()
    }

    pub fn handle_timeout(&mut self, now: Instant, local: &[IpAddr]) {
        self.quiet_lookup(now);
        if self.session.poll_timeout().is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
            // The session's timers fire rarely once it is idle (its keepalive): queues left
            // empty give their capacity back then, as the session's buffers do.
            if self.actions.is_empty() {
                self.actions = VecDeque::new();
            }
            if self.dial_queue.is_empty() {
                self.dial_queue = VecDeque::new();
            }
        }
        if self.connect_deadline.is_some_and(|d| d <= now) {
            match self.opening {
                // The server may have taken the early data: its OPEN_ACK is waited for as
                // long as the connect may take.
                Some(until) if until > now && self.session.early_data_may_have_arrived() => {
                    self.connect_deadline = Some(until);
                }
                _ => {
                    if self.open_failed(now) {
                        return;
                    }
                }
            }
        }
        if self.connect_deadline.is_some_and(|d| d <= now) {
            let failure = match self.last_error {
                Some(DialError::HostUnreachable) => ConnectFailure::HostUnreachable,
                Some(DialError::NetUnreachable) => ConnectFailure::NetUnreachable,
                Some(DialError::Refused) if self.round_refused => ConnectFailure::Refused,
                _ => ConnectFailure::TimedOut,
            };
            self.fail(failure);
            return;
        }
        // An OPEN's one dial that has not connected within its cut-off: the ticket's address
        // may be gone (the server moved); HELLO looks the peer up again. A connected one waits
        // for OPEN_ACK (the path's suspicion delay) and dials nothing else.
        if self.opening.is_some() && self.next_dial.is_some_and(|t| t <= now) {
            self.next_dial = None;
            let connected = self.paths.iter().any(|p| p.state == ClientPathState::Open);
            if !connected && self.open_failed(now) {
                return;
            }
        }
        if self.next_dial.is_some_and(|t| t <= now) {
            self.next_dial = None;
            if !self.dial_queue.is_empty() {
                self.dial_next(now);
            } else if self.need_path {
                self.start_round(now, self.is_connecting());
            }
        }
        self.process(now, local);
    }

    /// A dial of ours connected, with `local_addr` as its local address.
    pub fn path_connected(
        &mut self,
        now: Instant,
        path: PathId,
        local_addr: SocketAddr,
        local: &[IpAddr],
    ) {
        if self.closed {
            self.close_path(now, path);
            return;
        }
        // Make-before-break: the paths this one replaces close once it carries a frame.
        let replaces: Vec<PathId> = if self.need_path || self.peer.moved.is_empty() {
            Vec::new()
        } else {
            self.paths
                .iter()
                .filter(|o| {
                    o.id != path
                        && o.state == ClientPathState::Open
                        && !self.peer.moved.contains(&o.remote)
                })
                .map(|o| o.id)
                .collect()
        };
        let Some(p) = self.paths.iter_mut().find(|p| p.id == path) else {
            return;
        };
        p.state = ClientPathState::Open;
        p.local = Some(local_addr.ip());
        p.replaces = replaces;
        debug!(path, remote = %p.remote, local = %local_addr, "path connected");
        self.need_path = false;
        self.ever_connected = true;
        self.last_error = None;
        self.backoff = BACKOFF_MIN;
        self.next_dial = None;
        self.dial_queue.clear();
        self.session.path_opened(now, path);
        // The other dials of this round are not needed.
        let others: Vec<PathId> = self
            .paths
            .iter()
            .filter(|o| o.id != path && o.state == ClientPathState::Dialing && !o.standby)
            .map(|o| o.id)
            .collect();
        for p in others {
            self.close_path(now, p);
        }
        self.ensure_standby(now, local);
        self.process(now, local);
    }

    /// A dial of ours did not connect (at once or later). The driver closed it.
    pub fn dial_failed(&mut self, now: Instant, path: PathId, error: DialError) {
        let Some(p) = self.forget(now, path) else {
            return;
        };
        if self.open_failed(now) {
            return;
        }
        debug!(path, remote = %p.remote, ?error, "dial failed");
        if p.standby {
            // Not part of a round: just forget it.
            return;
        }
        if error != DialError::Refused {
            self.round_refused = false;
        }
        self.last_error = Some(error);
        if self.dial_queue.is_empty() {
            self.check_round(now);
        } else {
            self.dial_next(now);
        }
    }

    /// A connected path broke (the peer closed it, a write failed, its local address went
    /// away, it broke the protocol). The driver closed it.
    pub fn path_closed(&mut self, now: Instant, path: PathId) {
        if self.forget(now, path).is_some() {
            self.open_failed(now);
        }
    }

    /// Frames arrived on `path` (and were handed to the session): the paths it replaces
    /// after a move can go.
    pub fn frames_received(&mut self, now: Instant, path: PathId) {
        let Some(p) = self.paths.iter_mut().find(|p| p.id == path) else {
            return;
        };
        for old in std::mem::take(&mut p.replaces) {
            debug!(path = old, "closing the path replaced after MOVED");
            self.close_path(now, old);
        }
    }

    /// The GNS answered our `Resolve` with the peer's record: its sequence, locators and
    /// relays (`None`: it could not).
    pub fn resolved(&mut self, now: Instant, record: Option<RecordLocators>, local: &[IpAddr]) {
        self.resolving = false;
        match self.refusal_lookup {
            RefusalLookup::Asked => {
                self.refusal_lookup = RefusalLookup::None;
                self.fresh_record = record.is_some();
            }
            // This answer was asked before the refusal: ask again.
            RefusalLookup::Wanted => {
                self.refusal_lookup = RefusalLookup::Asked;
                self.resolve();
            }
            RefusalLookup::None => {}
        }
        if let Some(record) = record {
            self.apply_record(now, record);
        }
        self.process(now, local);
    }

    /// The GNS store says the peer's record changed (the engine watched it and read it
    /// verified, unasked): taken like a lookup's answer, so a newer record with new
    /// locators is dialled at once, while the old paths live.
    pub fn record_published(&mut self, now: Instant, record: RecordLocators, local: &[IpAddr]) {
        if self.closed {
            return;
        }
        self.apply_record(now, record);
        self.process(now, local);
    }

    /// Takes the peer's record (sequence, locators, relays) unless it is older than the one
    /// known: new locators are dialled now when no path is left; a newer record while a path
    /// lives counts as a move (make-before-break).
    fn apply_record(&mut self, now: Instant, (seq, locators, relays): RecordLocators) {
        if seq < self.peer.record_seq {
            return;
        }
        let locators = self.loopback.filter(locators, "record");
        self.peer.relays = self.loopback.filter(relays, "record's relays");
        let fresh: Vec<SocketAddr> = locators
            .iter()
            .filter(|a| !self.peer.record.contains(a))
            .copied()
            .collect();
        let newer = seq > self.peer.record_seq;
        self.peer.record_seq = seq;
        self.peer.record = locators.clone();
        if self.need_path && !fresh.is_empty() {
            debug!(?fresh, "new locators from the GNS: dialing them now");
            self.quiet.end();
            for addr in fresh {
                self.dial(now, addr, None);
            }
        } else if newer && !self.need_path && !self.closed {
            self.peer_moved(now, seq, locators);
        }
    }

    /// This host's addresses changed (`local`: the ones it has now). Paths on vanished
    /// addresses were reported with `path_closed` first. `added`: an address or link came
    /// up, so hanging dials start over from it and standby paths may be possible.
    pub fn addresses_changed(&mut self, now: Instant, added: bool, local: &[IpAddr]) {
        if !added || self.closed {
            return;
        }
        if self.need_path {
            // Dials started before the change may hang on a route that is gone.
            self.backoff = BACKOFF_MIN;
            self.next_dial = None;
            let hanging: Vec<PathId> = self
                .paths
                .iter()
                .filter(|p| p.state == ClientPathState::Dialing)
                .map(|p| p.id)
                .collect();
            for p in hanging {
                self.close_path(now, p);
            }
            self.start_round(now, self.is_connecting());
        } else {
            self.standby_tried.clear();
            self.ensure_standby(now, local);
        }
        self.process(now, local);
    }

    /// Takes the session's events and reacts to those about paths and the connect. Returns
    /// whether there were any (the driver then moves the program's bytes again).
    pub fn process(&mut self, now: Instant, local: &[IpAddr]) -> bool {
        let mut any = false;
        while let Some(ev) = self.session.poll_event() {
            any = true;
            self.on_event(now, ev, local);
        }
        any
    }

    fn on_event(&mut self, now: Instant, ev: Event, local: &[IpAddr]) {
        // An OPEN gets one try: a path lost or suspect, or a REFUSE, before OPEN_ACK.
        let open_over = match &ev {
            Event::PathDead(_) | Event::NeedPath | Event::Reset { .. } => true,
            // A slow answer to an OPEN that carried early data is waited for (above).
            Event::PathSuspect(p) => {
                self.session.is_handshaking(*p) && !self.session.early_data_may_have_arrived()
            }
            _ => false,
        };
        if open_over && self.open_failed(now) {
            return;
        }
        match ev {
            Event::Established { peer } => {
                self.opening = None;
                if self.connect_deadline.take().is_none() {
                    return;
                }
                // The path that carried HELLO_ACK may already be gone: any address will do.
                let remote = self
                    .paths
                    .iter()
                    .rev()
                    .find(|p| p.state == ClientPathState::Open)
                    .map_or(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)), |p| p.remote);
                self.actions.push_back(Action::Established { peer, remote });
                self.ensure_standby(now, local);
            }
            Event::PathDead(p) => {
                debug!(path = p, "path dead (silence or protocol error)");
                self.close_path(now, p);
            }
            Event::NeedPath => {
                if self.closed {
                    return;
                }
                self.need_path = true;
                // A path that connects and dies at once must not make a busy loop.
                let spaced = self.last_round.map(|t| t + BACKOFF_MIN);
                if self.next_dial.is_none() && spaced.is_some_and(|t| now < t) {
                    self.next_dial = spaced;
                } else if self.next_dial.is_none() {
                    debug!("no path left: re-dialing");
                    self.resolve();
                    self.start_round(now, self.is_connecting());
                }
                // An established session's last path died: the server may be moving, and
                // its new record is worth asking for sooner than the rounds' backoff.
                if !self.is_connecting() {
                    self.quiet.stopped(Silence::NoPath, now);
                    self.quiet_lookup(now);
                }
            }
            Event::PathSuspect(p) => {
                // An OPEN has its one path (see `open_over`): nothing else is dialed.
                if self.closed || self.need_path || self.opening.is_some() {
                    return;
                }
                if self.session.is_handshaking(p) {
                    // HELLO or RESUME unanswered: the path may be cut without a word (the
                    // peer moved). Dial afresh beside it rather than wait for it to die.
                    debug!(path = p, "handshake unanswered: dialing another path");
                    self.resolve();
                    self.start_round(now, false);
                } else if !self.resolving {
                    // Silence where an answer is owed: if the server moved without a MOVED
                    // reaching us (its old address went first), the GNS already knows where.
                    debug!(path = p, "path suspect: asking the GNS");
                    self.resolve();
                }
            }
            Event::PathQuiet(p) => {
                // The peer's stream stopped: if the server moved and its old address went
                // first, the GNS knows where as soon as the server republished, well before
                // the PING that probes the pause goes unanswered.
                self.quiet.stopped(Silence::Stream(p), now);
                self.quiet_lookup(now);
            }
            Event::Moved { seq, locators } => self.peer_moved(now, seq, locators),
            Event::Closed => {
                debug!("session closed");
                self.stop();
            }
            Event::Reset { reason } => {
                debug!(?reason, "session reset");
                let connecting = self.connect_deadline.take().is_some();
                self.stop();
                self.actions.push_back(if !connecting {
                    Action::Reset(reason)
                } else if reason == ResetReason::PortRefused {
                    Action::Failed(ConnectFailure::Refused)
                } else if reason.refuses_connect() {
                    Action::Failed(ConnectFailure::Denied(reason))
                } else {
                    Action::Failed(ConnectFailure::Reset(reason))
                });
            }
        }
    }

    /// The server announced (MOVED) or published (a newer record) these locators. Unless a
    /// live path already goes to one of them, dial them while the old path lives
    /// (make-before-break); the old path is dropped once a new one carried a frame.
    fn peer_moved(&mut self, now: Instant, seq: u64, locators: Vec<SocketAddr>) {
        if seq <= self.peer.moved_seq || self.closed {
            return;
        }
        debug!(seq, ?locators, "peer moved");
        // Where the server went is known: the silence's lookups have done their work.
        self.quiet.end();
        self.peer.moved_seq = seq;
        self.peer.moved = self.loopback.filter(locators, "MOVED");
        let current_ok = self
            .paths
            .iter()
            .any(|p| p.state == ClientPathState::Open && self.peer.moved.contains(&p.remote));
        if !current_ok {
            let cands: Vec<SocketAddr> = self
                .candidates()
                .into_iter()
                .filter(|a| self.peer.moved.contains(a))
                .collect();
            for a in cands {
                self.dial(now, a, None);
            }
            return;
        }
        // The old address still works and the server gained one: a standby path to the new
        // address (from the active path's local one), so that losing the old costs no
        // reconnect when it goes before a MOVED could say so.
        let Some(active) = self.active() else {
            return;
        };
        let (remote, from) = (active.remote, active.local);
        let new_remote = self.peer.moved.iter().copied().find(|a| {
            !a.ip().is_loopback()
                && a.is_ipv4() == remote.is_ipv4()
                && !self.paths.iter().any(|p| p.remote == *a)
        });
        if let (Some(addr), Some(from)) = (new_remote, from)
            && self.paths.len() < MAX_STANDBY
        {
            debug!(%addr, "standby path to the server's new address");
            self.dial(now, addr, Some(from));
        }
    }

    /// The newest open path to a remote host (the one standby paths back up).
    fn active(&self) -> Option<&ClientPath> {
        self.paths
            .iter()
            .rev()
            .find(|p| p.state == ClientPathState::Open && !p.remote.ip().is_loopback())
    }

    /// Candidate addresses for a new path: MOVED ones first (newest news), then the record's;
    /// IPv6 and IPv4 interleaved (happy eyeballs), no duplicates.
    fn candidates(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = Vec::new();
        for a in self.peer.moved.iter().chain(&self.peer.record) {
            if !all.contains(a) {
                all.push(*a);
            }
        }
        let (v6, v4): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.is_ipv6());
        let mut out = Vec::with_capacity(v6.len() + v4.len() + self.peer.relays.len());
        let (mut i6, mut i4) = (v6.into_iter(), v4.into_iter());
        loop {
            match (i6.next(), i4.next()) {
                (None, None) => break,
                (a, b) => out.extend(a.into_iter().chain(b)),
            }
        }
        // Relays last: a direct path costs the relay nothing and no detour; in a staggered
        // first round the relay is dialled one stagger after the last direct locator.
        for r in &self.peer.relays {
            if !out.contains(r) {
                out.push(*r);
            }
        }
        out
    }

    /// Starts a round of dials: staggered (first connect) or all at once (re-dial).
    fn start_round(&mut self, now: Instant, staggered: bool) {
        let first = self.last_round.is_none();
        self.round_refused = true;
        self.round_resolved = std::mem::take(&mut self.fresh_record);
        self.last_round = Some(now);
        self.dial_queue = self.candidates().into();
        self.next_dial = None;
        // Give up on dials that have hung for a while (a SYN into a black hole).
        let stale: Vec<PathId> = self
            .paths
            .iter()
            .filter(|p| p.state == ClientPathState::Dialing && now - p.started > DIAL_STALE)
            .map(|p| p.id)
            .collect();
        for p in stale {
            self.close_path(now, p);
        }
        if staggered {
            self.dial_next(now);
            if !first {
                self.resolve();
            }
        } else {
            while let Some(addr) = self.dial_queue.pop_front() {
                self.dial(now, addr, None);
            }
            // Re-dialing: try again after the backoff even while these dials hang, and ask
            // the GNS each time (the peer may have moved too).
            self.next_dial = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.resolve();
        }
        self.check_round(now);
    }

    fn dial_next(&mut self, now: Instant) {
        if let Some(addr) = self.dial_queue.pop_front() {
            self.dial(now, addr, None);
            if !self.dial_queue.is_empty() {
                self.next_dial = Some(now + STAGGER);
            } else {
                // The last of the round: if it hangs, another round (with a fresh lookup)
                // after the backoff; stale dials are given up then.
                self.next_dial = Some(now + self.backoff.max(STAGGER));
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Asks the driver for a dial, from `from` if given (then it is a standby path).
    fn dial(&mut self, now: Instant, remote: SocketAddr, from: Option<IpAddr>) {
        let dialing = self
            .paths
            .iter()
            .filter(|p| p.state == ClientPathState::Dialing);
        let already = dialing
            .clone()
            .any(|p| p.remote == remote && (from.is_none() || p.local == from));
        if already || dialing.count() >= MAX_DIALS {
            return;
        }
        let id = next_path_id();
        debug!(path = id, %remote, ?from, "dialing");
        self.paths.push(ClientPath {
            id,
            state: ClientPathState::Dialing,
            remote,
            local: from,
            standby: from.is_some(),
            relay: from.is_none() && self.peer.relays.contains(&remote),
            started: now,
            replaces: Vec::new(),
        });
        self.actions.push_back(Action::Dial {
            path: id,
            remote,
            local: from,
        });
    }

    /// After a dial ended: if nothing is left in flight and no path is open, the round failed.
    fn check_round(&mut self, now: Instant) {
        if !self.need_path || !self.dial_queue.is_empty() || !self.paths.is_empty() {
            return;
        }
        // Every locator refused the TCP connection, again after a lookup that answered after
        // a refusal: nobody listens there any more.
        if self.is_connecting()
            && !self.ever_connected
            && self.round_refused
            && self.round_resolved
            && self.last_error.is_some()
        {
            self.fail(ConnectFailure::Refused);
            return;
        }
        if self.round_refused && self.refusal_lookup == RefusalLookup::None {
            self.refusal_lookup = if self.resolving {
                RefusalLookup::Wanted
            } else {
                RefusalLookup::Asked
            };
        }
        // A failed round is retried after the backoff at the latest.
        let retry = now + self.backoff;
        if self.next_dial.is_none_or(|t| t > retry) {
            self.next_dial = Some(retry);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        self.resolve();
    }

    /// A multihomed client keeps one more path per local address (of the active path's
    /// family), so that losing an interface costs no reconnect: the session just carries on
    /// over the survivor.
    fn ensure_standby(&mut self, now: Instant, local: &[IpAddr]) {
        if self.is_connecting() || self.need_path || self.closed {
            return;
        }
        let Some(active) = self.active().map(|p| p.remote) else {
            return;
        };
        let used: Vec<IpAddr> = self.paths.iter().filter_map(|p| p.local).collect();
        let mut room = MAX_STANDBY.saturating_sub(self.paths.len());
        for &ip in local {
            if room == 0 {
                break;
            }
            if ip.is_loopback()
                || ip.is_ipv4() != active.is_ipv4()
                || used.contains(&ip)
                || !self.standby_tried.insert(ip)
            {
                continue;
            }
            room -= 1;
            debug!(local = %ip, remote = %active, "standby path");
            self.dial(now, active, Some(ip));
        }
    }

    /// The lookup of a silence, if one is due (see `quiet`): the series ends once the stream
    /// flows again (a stopped stream that lost its path goes on as a session without one),
    /// or a path is back.
    fn quiet_lookup(&mut self, now: Instant) {
        let Some(silence) = self.quiet.due(now) else {
            return;
        };
        let lasts = match silence {
            Silence::Stream(p) => !self.need_path && self.session.stream_stopped(p),
            Silence::NoPath => self.need_path,
        };
        if self.closed || !lasts {
            self.quiet.end();
            return;
        }
        if self.quiet.ask(now, self.resolving) {
            match silence {
                Silence::Stream(p) => debug!(path = p, "path quiet: asking the GNS"),
                Silence::NoPath => debug!("no path left: asking the GNS"),
            }
            self.resolve();
        }
    }

    fn resolve(&mut self) {
        if !self.resolving {
            self.resolving = true;
            self.actions.push_back(Action::Resolve);
        }
    }

    /// Nothing more to dial for.
    fn stop(&mut self) {
        self.closed = true;
        self.need_path = false;
        self.next_dial = None;
        self.dial_queue.clear();
    }

    fn fail(&mut self, failure: ConnectFailure) {
        debug!(?failure, "connect failed");
        self.connect_deadline = None;
        self.stop();
        self.actions.push_back(Action::Failed(failure));
    }

    /// Closes one of our paths: the session forgets it, the driver closes it.
    fn close_path(&mut self, now: Instant, path: PathId) {
        if self.forget(now, path).is_some() {
            self.actions.push_back(Action::Close { path });
        }
    }

    /// Drops a path from the table and the session; with no open path left, the session
    /// needs one.
    fn forget(&mut self, now: Instant, path: PathId) -> Option<ClientPath> {
        let i = self.paths.iter().position(|p| p.id == path)?;
        let p = self.paths.remove(i);
        if p.state == ClientPathState::Open {
            self.session.path_closed(now, path);
        }
        if !self.closed && !self.paths.iter().any(|o| o.state == ClientPathState::Open) {
            self.need_path = true;
        }
        Some(p)
    }
}

mod quiet;
#[cfg(test)]
mod tests;
