//! The sans-IO session state machine: one reliable byte stream in each direction, carried
//! over any number of flow paths that come and go.
//!
//! Nothing here touches a socket, a thread or a clock: the engine feeds in frames, path
//! events, application bytes and the current time, and takes out frames per path, bytes for
//! the application, events and the next timer deadline (the quinn-proto / rustls shape).
//!
//! The rules, in short (`docs/protocol.md` has the full version):
//! - Every stream position is acknowledged cumulatively. The ACK value is what the
//!   application has *consumed*, so it is also the flow-control edge: a sender never sends
//!   beyond `ack + window` (the window comes from the handshake).
//! - The replay buffer keeps every byte until the peer confirms it (ACK, or `received` in
//!   RESUME/RESUME_ACK); it is bounded, and when full the application must wait.
//! - One active path, the newest live one, carries the stream; the others are standby with
//!   keepalives. When the active path changes, sending rewinds to what the peer confirmed and
//!   the receiver drops what it already has by offset.
//! - The FIN occupies one stream position after the last byte, so it is acknowledged and
//!   resent exactly like data.

mod acceptor;
mod auth;
mod cadence;
mod error;
mod handshake;
mod keys;
mod path;
mod recv;
mod ring;
mod send;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Guid, Keypair, PublicKey};
use tracing::{debug, warn};

pub use acceptor::Acceptor;
pub use error::{HandshakeError, ResumeError, SessionError};
pub use keys::{CryptoError, RECORDS_PER_KEY, TicketSecret, open_tag, open_tag_verifies};

use crate::copy;
use crate::ticket::{OpenTicket, Ticket};
use crate::wire::{
    ConnId, Frame, FrameRef, MAX_LOCATORS, PathId, Record, ResetReason, ResumeBody, SealedRef,
    TAG_LEN,
};
use cadence::Cadence;
pub use cadence::{FLOWING_AFTER, STREAM_STOP_FLOOR};
use handshake::{echo_of, seal_resume};
use keys::SessionKeys;
use path::{Path, PathState, PingInFlight};
use recv::RecvStream;
use send::{Chunk, SendStream};

/// A frame on its way out. A DATA payload is named by its stream positions and read from the
/// replay buffer only when the frame is encoded.
type Outgoing = Frame<Range<u64>>;

/// More paths than this and the oldest is dropped: every table stays bounded.
const MAX_PATHS: usize = 8;
/// A drained stream buffer holding more memory than this gives it back: an idle session
/// after a bulk transfer should cost what an idle session costs.
const KEEP_WHEN_EMPTY: usize = 64 * 1024;
/// Upper bound on how much the application may consume before an ACK goes out.
const MAX_ACK_EVERY: u64 = 64 * 1024;
/// A bare ACK for less than this (the program read a short message) waits up to
/// [`ACK_DELAY`] for a frame of ours to ride on: the answer to a request, our FIN. Less when
/// the buffers are small (a quarter of our receive window, which bounds what the peer may
/// send, and of our replay buffer: the peer's is configured alike), so a sender whose buffer
/// (64 KiB at the start) is full is never held back by it.
const HOLD_ACK_BELOW: u64 = 4 * 1024;
/// How long a small ACK waits for company by default: far below the 200 ms after which a
/// sender suspects a silent path, above the few hundred microseconds a program takes to
/// answer.
pub const ACK_DELAY: Duration = Duration::from_millis(5);
/// A session remembers its last this many moves.
pub const MAX_MOVES: usize = 8;

/// Tunables of one session. The defaults suit interactive and bulk traffic alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Bytes written but not yet confirmed by the peer, at most. The buffer starts smaller
    /// and grows toward this with the path's bandwidth-delay product.
    pub replay_capacity: usize,
    /// Bytes received but not yet read by the application, at most (the advertised window).
    pub recv_capacity: usize,
    /// A path that received nothing this long gets a PING.
    pub keepalive_interval: Duration,
    /// A path that received nothing this long is dead.
    pub path_dead_after: Duration,
    /// A path that owes us an answer this long (or three round trips, if longer) is suspect.
    pub suspect_after: Duration,
    /// A session without a live path this long ends with `Reset { LingerExpired }`.
    pub linger: Duration,
    /// A bare ACK of a short message waits this long at most for a frame to ride on
    /// ([`HOLD_ACK_BELOW`]); zero sends every ACK at once.
    pub ack_delay: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            replay_capacity: 4 << 20,
            recv_capacity: 4 << 20,
            keepalive_interval: Duration::from_secs(5),
            path_dead_after: Duration::from_secs(15),
            suspect_after: Duration::from_millis(200),
            linger: Duration::from_secs(60),
            ack_delay: ACK_DELAY,
        }
    }
}

impl SessionConfig {
    /// What the server's buffer budget counts a session at: the receive window at its cap
    /// (the peer was promised it and may fill it) and the replay buffer at its start (it grows
    /// only while the path confirms a full buffer within two round trips; see `send`).
    pub fn budgeted_buffers(&self) -> usize {
        send::START_LIMIT.min(self.replay_capacity) + self.recv_capacity
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// What the driver must react to. Each kind is queued at most once at a time, except
/// `PathDead`, which is bounded by the number of paths. (Bytes to read and room to write
/// are not events: a driver moves the program's bytes whenever it handled input, and asks
/// `app_readable` and `app_room`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Client: HELLO_ACK verified. Server: the client proved it holds the session keys (its
    /// first sealed record opened, or a RESUME did): only now may the program see it.
    Established { peer: PublicKey },
    /// Silence or a protocol error on this path: the engine closes it.
    PathDead(PathId),
    /// The path owes an answer and has been silent for a while (raised again, at doubling
    /// intervals, until something arrives or the path is dead). Not fatal: a client asks the
    /// GNS whether the server moved.
    PathSuspect(PathId),
    /// Client: the peer's stream, once flowing, stopped on this path (nothing for 10 ms, or
    /// longer on a bursty stream or a slow path; see `STREAM_STOP_FLOOR`, `FLOWING_AFTER`). The first sign of a silent
    /// move, well before the PING that probes the pause and the `PathSuspect` after it: the
    /// path manager asks the GNS at once and again while the stream stays stopped (bounded
    /// by its budget), so a server republished in a DNS zone is found within a lookup.
    PathQuiet(PathId),
    /// Client: no path left at all; dial and call `path_opened` again.
    NeedPath,
    /// Client: the server announced new addresses (every MOVED frame; the path manager
    /// ignores sequences it has seen).
    Moved { seq: u64, locators: Vec<SocketAddr> },
    /// Orderly end: both directions finished and confirmed.
    Closed,
    /// The peer reset, authentication failed, or the linger period expired.
    Reset { reason: ResetReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Both directions finished. A client is done; a server stays resumable for the linger
    /// period so that a client that lost the last ACK can still learn it by resuming.
    Closed,
    /// A server's linger after `Closed` ran out.
    Done,
    Reset,
}

pub struct Session {
    role: Role,
    cfg: SessionConfig,
    key: Arc<Keypair>,
    conn_id: ConnId,
    /// The server's GUID: the client's target, or the server's own.
    server_guid: Guid,
    peer: Option<PublicKey>,
    /// Client, until HELLO_ACK: the service port its HELLOs ask for. Every path opened
    /// meanwhile carries a HELLO of its own (connection ID and ephemeral key): a server
    /// answers a HELLO once, so no two paths ever share path number 0, and whichever HELLO is
    /// answered first makes the session.
    connecting: Option<u16>,
    /// Client: the connection ID for the next HELLO (the caller's first, then random ones).
    next_conn_id: Option<ConnId>,
    /// Client of an OPEN, until its path opens: the ticket the OPEN uses. The session then
    /// waits for OPEN_ACK on that one path; any other path before it is refused (a child
    /// number is used once, so there is no second OPEN: the engine falls back to HELLO).
    opening: Option<Box<OpenTicket>>,
    /// The session was made by an OPEN (no handshake).
    by_open: bool,
    /// Client of an OPEN: what became of the stream bytes sent behind it before OPEN_ACK.
    early: EarlyData,
    /// Client of an OPEN: the server's key its ticket names (the session's peer once
    /// OPEN_ACK opened with the child keys).
    peer_expected: Option<PublicKey>,
    /// When the full handshake that began this session's chain of OPENs was (its own
    /// HELLO's, or its parent's `origin`): tickets die 10 minutes after it.
    origin: Instant,
    /// From the handshake on (a client's after HELLO_ACK).
    keys: Option<SessionKeys>,
    /// Server: the client proved it holds the keys. A client has nothing to prove.
    proven: bool,
    /// Client: freshness of the last RESUME sent. Server: highest accepted.
    freshness: u64,
    linger: Duration,
    send: SendStream,
    recv: RecvStream,
    paths: Vec<Path>,
    live_seq: u64,
    no_live_since: Option<Instant>,
    state: State,
    events: VecDeque<Event>,
    /// Server: the latest announcement (a client passes MOVED on to its path manager, which
    /// keeps where the peer is).
    announced: Option<(u64, Vec<SocketAddr>)>,
    /// Client: the highest ACK/received value the server provably has (PONG or RESUME_ACK).
    confirmed: u64,
    ping_tokens: u64,
    /// When the session was created.
    created: Instant,
    /// The last moves (the active path changed), oldest first, at most `MAX_MOVES`.
    moves: VecDeque<Move>,
    /// The active path that was lost with no live path left, and the last time it was heard:
    /// the next path to become live is a move from it.
    lost_active: Option<(PathId, Instant)>,
    /// Client: the rhythm of the peer's stream, to notice at once when it stops (boxed: a
    /// server and an idle client never need it).
    cadence: Option<Box<Cadence>>,
    /// A bare ACK held back (see [`HOLD_ACK_BELOW`]).
    held_ack: HeldAck,
}

/// Whether a bare ACK is being held back for a frame to ride on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldAck {
    No,
    /// It goes out bare at this instant at the latest.
    Until(Instant),
    /// Its time passed: it goes out with the next frame the path may send.
    Due,
}

/// Client of an OPEN: the program's bytes may follow the OPEN on its path before OPEN_ACK
/// (early data), and whether they did decides how a failed OPEN may fall back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EarlyData {
    /// None went out.
    None,
    /// Some went out: the server may have taken them with the OPEN.
    Sent,
    /// Some went out, and the server's signed REFUSE of the OPEN says it took none.
    Refused,
}

/// The active path changed to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub from: PathId,
    pub to: PathId,
    /// When the new path carried its first frame (its handshake answer, or the RESUME).
    pub at: Instant,
    /// From the last frame heard on the old active path to the first frame on the new one.
    pub outage: Duration,
}

/// Where a session stands, for people looking at it (`namesock sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Open, with a live path.
    Live,
    /// Open, with no live path: a client re-dials, a server waits for a RESUME.
    Resuming,
    /// Both directions finished; a server lingers for a late resume.
    Closing,
    /// Reset, or the server's linger ran out.
    Closed,
}

/// One path as the session sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathStats {
    pub id: PathId,
    /// HELLO or RESUME sent, not yet answered.
    pub handshaking: bool,
    /// The path carrying the stream (the others are standby).
    pub active: bool,
    /// Owes an answer and has been silent past the suspicion delay.
    pub suspect: bool,
    /// Round-trip time of the latest answered PING, else (client) of the handshake.
    pub rtt: Option<Duration>,
    /// The shortest round trip its TCP connection measured, as the engine last read it from
    /// the kernel ([`Session::set_transport_rtt`]).
    pub transport_rtt: Option<Duration>,
    /// When a frame last arrived on it.
    pub last_heard: Instant,
}

/// A read-only view of a session: what `namesock sessions` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub role: Role,
    pub state: SessionState,
    /// The key this end proves.
    pub local_guid: Guid,
    /// The peer's verified key (a client knows it once HELLO_ACK verified).
    pub peer: Option<PublicKey>,
    pub created: Instant,
    /// The program's bytes sent to the peer at least once.
    pub bytes_sent: u64,
    /// The peer's bytes received.
    pub bytes_received: u64,
    /// Bytes in the replay buffer: written, not yet confirmed by the peer.
    pub unacked: u64,
    /// The most the replay buffer may hold now (its path's limit or the engine's share).
    pub replay_limit: u64,
    /// Heap memory the session's buffers hold (see [`Session::buffer_capacity`]).
    pub buffer_bytes: u64,
    pub paths: Vec<PathStats>,
    /// The last moves, oldest first.
    pub moves: Vec<Move>,
    /// Made by an OPEN from a ticket (no handshake), not by HELLO.
    pub by_ticket: bool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("conn_id", &ConnIdHex(&self.conn_id))
            .field("state", &self.state)
            .field("paths", &self.paths.len())
            .finish()
    }
}

struct ConnIdHex<'a>(&'a ConnId);

impl fmt::Debug for ConnIdHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

fn window_of(cfg: &SessionConfig) -> u32 {
    u32::try_from(cfg.recv_capacity).unwrap_or(u32::MAX)
}

impl Session {
    fn new(
        role: Role,
        cfg: SessionConfig,
        key: Arc<Keypair>,
        conn_id: ConnId,
        server_guid: Guid,
        now: Instant,
    ) -> Session {
        Session {
            role,
            key,
            conn_id,
            server_guid,
            peer: None,
            connecting: None,
            next_conn_id: None,
            opening: None,
            by_open: false,
            early: EarlyData::None,
            peer_expected: None,
            origin: now,
            keys: None,
            proven: role == Role::Client,
            freshness: 0,
            linger: cfg.linger,
            send: SendStream::new(cfg.replay_capacity),
            recv: RecvStream::new(cfg.recv_capacity),
            paths: Vec::new(),
            live_seq: 0,
            no_live_since: None,
            state: State::Open,
            events: VecDeque::new(),
            announced: None,
            confirmed: 0,
            ping_tokens: 0,
            created: now,
            moves: VecDeque::new(),
            lost_active: None,
            cadence: None,
            held_ack: HeldAck::No,
            cfg,
        }
    }

    /// Client: whether the peer's stream stopped on `path` (`Event::PathQuiet`), nothing came
    /// since, and the path lives.
    pub fn stream_stopped(&self, path: PathId) -> bool {
        let stopped = self
            .cadence
            .as_ref()
            .is_some_and(|c| c.stopped && c.path == path);
        stopped && self.index(path).is_some_and(|i| self.paths[i].is_live())
    }

    /// Client: a frame from the peer on path `i`; DATA with payload is the stream's rhythm,
    /// FIN its end (nothing more to wait for).
    fn watch_stream<P: AsRef<[u8]>>(&mut self, now: Instant, i: usize, frame: &Frame<P>) {
        match frame {
            Frame::Data { payload, .. } if !payload.as_ref().is_empty() => {
                let p = &self.paths[i];
                let (rtt, probe) = (p.quiet_rtt(), p.suspect_delay(self.cfg.suspect_after));
                self.cadence
                    .get_or_insert_with(|| Box::new(Cadence::new(now, p.id)))
                    .data(now, p.id, rtt, probe);
            }
            Frame::Fin { .. } => self.cadence = None,
            _ => {}
        }
    }

    /// Whether `path` still waits for the answer to its HELLO or RESUME.
    pub fn is_handshaking(&self, path: PathId) -> bool {
        self.index(path)
            .is_some_and(|i| self.paths[i].state == PathState::Handshaking)
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }

    /// The session's ticket, once it has keys and a verified peer: what a later OPEN to the
    /// same peer uses (see `crate::ticket`). A server session has it from the HELLO on, proven
    /// or not: only the client that made the HELLO's ephemeral key can derive it, so the
    /// ticket of a replayed HELLO is of use to nobody.
    pub fn ticket(&self) -> Option<Ticket> {
        let (keys, peer) = (self.keys.as_ref()?, self.peer?);
        if self.connecting.is_some() {
            return None;
        }
        Some(Ticket {
            conn_id: self.conn_id,
            secret: *keys.ticket(),
            peer,
            origin: self.origin,
            rtt: self.active().and_then(|i| self.paths[i].quiet_rtt()),
            peer_window: self.send.peer_window(),
        })
    }

    /// The session was made by an OPEN (no handshake).
    pub fn by_open(&self) -> bool {
        self.by_open
    }

    /// The GUID the client dialled (a server session: its own).
    pub fn server_guid(&self) -> Guid {
        self.server_guid
    }

    /// The peer's key: the client's from the start, the server's once HELLO_ACK verified.
    pub fn peer(&self) -> Option<PublicKey> {
        self.peer
    }

    /// What `namesock sessions` shows: a copy of the session's counters, its paths and its
    /// last moves. Reads nothing but the session.
    pub fn stats(&self) -> SessionStats {
        let active = self.active();
        let state = match self.state {
            State::Open if active.is_some() => SessionState::Live,
            State::Open => SessionState::Resuming,
            State::Closed => SessionState::Closing,
            State::Done | State::Reset => SessionState::Closed,
        };
        SessionStats {
            role: self.role,
            state,
            local_guid: self.key.guid(),
            peer: self.peer,
            created: self.created,
            bytes_sent: self.send.sent(),
            bytes_received: self.recv.bytes(),
            unacked: self.send.replay_len() as u64,
            replay_limit: self.send.limit() as u64,
            buffer_bytes: self.buffer_capacity() as u64,
            paths: self
                .paths
                .iter()
                .enumerate()
                .map(|(i, p)| PathStats {
                    id: p.id,
                    handshaking: p.state == PathState::Handshaking,
                    active: active == Some(i),
                    suspect: p.suspicions > 0,
                    rtt: p.rtt.or(p.handshake_rtt),
                    transport_rtt: p.transport_rtt,
                    last_heard: p.last_recv,
                })
                .collect(),
            moves: self.moves.iter().copied().collect(),
            by_ticket: self.by_open,
        }
    }

    /// Client: a new flow path is connected. Queues HELLO (not yet established) or RESUME.
    pub fn path_opened(&mut self, now: Instant, path: PathId) {
        if self.role != Role::Client || self.state != State::Open {
            debug!(path, "path_opened ignored: not an open client session");
            return;
        }
        self.detach(path);
        if self.by_open && self.connecting.is_some() {
            let Some(ticket) = self.opening.take() else {
                debug!(
                    path,
                    "a second path before OPEN_ACK: refused (the OPEN is not repeated)"
                );
                self.events.push_back(Event::PathDead(path));
                return;
            };
            let p = self.new_open(now, path, &ticket);
            self.paths.push(p);
            return;
        }
        let mut p = match (self.connecting, &self.keys) {
            (Some(port), _) => {
                let (hello, ephemeral) = self.new_hello(port);
                let mut p = Path::new(
                    path,
                    PathState::Handshaking,
                    now,
                    Frame::Hello(hello.clone()),
                );
                p.hello = Some(Box::new((hello, ephemeral)));
                p
            }
            (None, Some(keys)) => {
                self.freshness += 1;
                let body = ResumeBody {
                    path_id: path,
                    received: self.recv.received(),
                };
                let resume = seal_resume(keys, self.conn_id, self.freshness, body);
                let mut p = Path::new(path, PathState::Handshaking, now, Frame::Resume(resume));
                p.keys = Some(keys.path(true, self.freshness));
                p.resume = Some(body);
                p
            }
            (None, None) => unreachable!("a client session has a HELLO or keys"),
        };
        if let Some(first) = &p.handshake {
            p.echo = Some(echo_of(&(**first).clone().map_payload(|_| Vec::new())));
        }
        self.paths.push(p);
        self.enforce_path_limit(now);
    }

    /// A record arrived on `path`: a frame in clear (HELLO_ACK, REFUSE), or a SEALED record,
    /// opened with the path's keys. `Err`: the path broke the protocol or sent something that
    /// does not authenticate; nothing of it was acted on, the path is already detached (a
    /// `PathDead` is queued too) and the session lives on. The engine closes the path.
    pub fn handle_record(
        &mut self,
        now: Instant,
        path: PathId,
        record: Record<'_>,
    ) -> Result<(), SessionError> {
        let frame = match record {
            Record::Clear(frame) => Ok(frame),
            Record::Sealed(sealed) => self.open(path, sealed),
        };
        match frame {
            Ok(frame) => self.handle_frame(now, path, frame),
            Err(e) => {
                if !self.is_terminal() && self.index(path).is_some() {
                    warn!(path, error = %e, "record refused: closing the path");
                    self.lose_path(now, path, true);
                    self.after_input();
                }
                Err(e)
            }
        }
    }

    fn open<'a>(
        &mut self,
        path: PathId,
        sealed: SealedRef<'a>,
    ) -> Result<FrameRef<'a>, SessionError> {
        let i = self.index(path).ok_or(SessionError::UnknownPath(path))?;
        let keys = self.paths[i]
            .keys
            .as_mut()
            .ok_or(SessionError::UnexpectedFrame {
                frame: "SEALED",
                why: "before the path has keys",
            })?;
        let frame = sealed
            .open(|aad, body| keys.open(aad, body).map(|plain| &*plain))
            .map_err(SessionError::Crypto)??;
        // Whatever it says, it came from whoever holds the keys.
        self.prove();
        Ok(frame)
    }

    /// The engine closed the path or its connection died. The session lives on.
    pub fn path_closed(&mut self, now: Instant, path: PathId) {
        self.lose_path(now, path, false);
    }

    /// Tests: `frame` arrives on `path` as if sealed by the peer and opened (neither side's
    /// record counter moves: pair it with [`Session::poll_transmit`]).
    #[cfg(test)]
    pub(crate) fn inject<P: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        path: PathId,
        frame: Frame<P>,
    ) -> Result<(), SessionError> {
        self.handle_frame(now, path, frame)
    }

    /// Tests: the next frame for `path`, not sealed (see [`Session::inject`]).
    #[cfg(test)]
    pub(crate) fn poll_transmit(&mut self, now: Instant, path: PathId) -> Option<Frame> {
        let frame = self.next_outgoing(now, path)?;
        Some(frame.map_payload(|range| {
            let mut payload = Vec::new();
            for part in self.send.slices(range) {
                copy::extend_vec(&mut payload, part);
            }
            payload
        }))
    }

    /// A frame, in clear or opened, arrived on `path`.
    fn handle_frame<P: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        path: PathId,
        frame: Frame<P>,
    ) -> Result<(), SessionError> {
        if self.is_terminal() {
            return Ok(());
        }
        let Some(i) = self.index(path) else {
            return Err(SessionError::UnknownPath(path));
        };
        self.paths[i].heard(now, &frame, self.cfg.suspect_after);
        if self.role == Role::Client {
            self.watch_stream(now, i, &frame);
        }
        let result = self.on_frame(now, i, frame);
        if let Err(e) = &result {
            warn!(path, error = %e, "protocol error on path");
            self.lose_path(now, path, true);
        }
        self.after_input();
        result
    }

    fn on_frame<P: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        i: usize,
        frame: Frame<P>,
    ) -> Result<(), SessionError> {
        let name = frame.name();
        let unexpected = |why| SessionError::UnexpectedFrame { frame: name, why };
        if self.paths[i].state == PathState::Handshaking
            && !matches!(
                frame,
                Frame::HelloAck(_) | Frame::ResumeAck(_) | Frame::Refuse(_) | Frame::OpenAck(_)
            )
        {
            return Err(unexpected("before the handshake answer"));
        }
        match frame {
            Frame::HelloAck(a) => self.on_hello_ack(i, &a),
            Frame::ResumeAck(a) => self.on_resume_ack(i, &a),
            Frame::Refuse(r) => self.on_refuse(i, &r),
            Frame::OpenAck(a) => self.on_open_ack(i, &a),
            Frame::Hello(_) | Frame::Resume(_) | Frame::Open(_) => {
                Err(unexpected("the first frame of a path goes to the acceptor"))
            }
            Frame::Data {
                offset,
                ack,
                payload,
            } => {
                self.send.on_ack(ack, now, self.paths[i].growth_rtt())?;
                self.recv.on_data(offset, payload.as_ref())
            }
            Frame::Ack { ack } => self.send.on_ack(ack, now, self.paths[i].growth_rtt()),
            Frame::Fin { offset } => self.recv.on_fin(offset),
            Frame::Ping { token } => {
                self.paths[i].pong = Some(token);
                // The peer heard nothing from us for a while (a keepalive, a probe, a close
                // confirmation): the server's idle moment, since the client's PING keeps its
                // own keepalive from falling due (see `keepalive_after`).
                self.release_idle_buffers();
                Ok(())
            }
            Frame::Pong { token } => {
                let p = &mut self.paths[i];
                if let Some(ping) = p.ping_in_flight
                    && ping.token == token
                {
                    p.ping_in_flight = None;
                    self.confirmed = self.confirmed.max(ping.ack);
                }
                Ok(())
            }
            Frame::Reset { reason } => {
                debug!(?reason, "peer reset the session");
                self.reset(reason, false, true);
                Ok(())
            }
            Frame::Moved { seq, locators } => {
                if self.role != Role::Client {
                    return Err(unexpected("only a server announces a move"));
                }
                // Only the newest unpolled announcement is kept: the queue stays bounded.
                self.events.retain(|e| !matches!(e, Event::Moved { .. }));
                self.events.push_back(Event::Moved { seq, locators });
                Ok(())
            }
        }
    }

    /// The next frame to write on `path`, encoded straight onto `out` (a DATA payload goes
    /// from the replay buffer to `out` in one copy, then is sealed in place); call while the
    /// path's socket has room. Returns whether there was a frame.
    pub fn transmit_into(&mut self, now: Instant, path: PathId, out: &mut Vec<u8>) -> bool {
        let Some(frame) = self.next_outgoing(now, path) else {
            return false;
        };
        let frame = frame.map_payload(|range| self.send.slices(range));
        if frame.travels_in_clear() {
            frame.encode(out);
            return true;
        }
        let Some(keys) = self.index(path).and_then(|i| self.paths[i].keys.as_mut()) else {
            unreachable!("only paths with keys get sealed frames (next_frame)");
        };
        let mut sealed = Ok(());
        frame.encode_sealed(out, |aad, plain| {
            keys.seal(aad, plain).unwrap_or_else(|e| {
                sealed = Err(e);
                [0; TAG_LEN]
            })
        });
        if let Err(e) = sealed {
            // 2^64 records on one path: it cannot carry another; the session resumes elsewhere.
            warn!(path, error = %e, "path exhausted its nonces");
            self.lose_path(now, path, true);
        }
        true
    }

    fn next_outgoing(&mut self, now: Instant, path: PathId) -> Option<Outgoing> {
        let frame = self.next_frame(now, path)?;
        if let Some(i) = self.index(path) {
            self.paths[i].sent(now, &frame, self.cfg.suspect_after);
        }
        Some(frame)
    }

    fn next_frame(&mut self, now: Instant, path: PathId) -> Option<Outgoing> {
        let i = self.index(path)?;
        if let Some(reason) = self.paths[i].reset.take() {
            return Some(Frame::Reset { reason });
        }
        if self.is_terminal() || (self.state == State::Closed && self.role == Role::Client) {
            return None;
        }
        let p = &mut self.paths[i];
        if let Some(frame) = p.handshake.take() {
            return Some(*frame);
        }
        // Client of an OPEN: the program's bytes follow the OPEN on its path, sealed with the
        // child's keys, within the window the parent knew; the server takes them only with
        // the OPEN, whose child number it accepts once.
        if p.open && p.keys.is_some() {
            let frame = self.poll_stream(now, i)?;
            self.early = EarlyData::Sent;
            return Some(frame);
        }
        // Nothing sealed before the keys; a server says nothing more until the client proved
        // it holds them (a replayed HELLO gets HELLO_ACK and silence).
        if !p.is_live() || p.keys.is_none() || !self.proven {
            return None;
        }
        if let Some(token) = p.pong.take() {
            return Some(Frame::Pong { token });
        }
        if std::mem::take(&mut p.moved_due)
            && let Some((seq, locators)) = &self.announced
        {
            return Some(Frame::Moved {
                seq: *seq,
                locators: locators.clone(),
            });
        }
        if self.active() == Some(i)
            && let Some(frame) = self.poll_stream(now, i)
        {
            return Some(frame);
        }
        if self.paths[i].ping_due || self.wants_close_confirmation(i) {
            self.ping_tokens += 1;
            let p = &mut self.paths[i];
            p.ping_due = false;
            p.last_ping = Some(now);
            if p.ping_in_flight.is_none() {
                p.ping_in_flight = Some(PingInFlight {
                    token: self.ping_tokens,
                    ack: p.ack_sent,
                    sent: now,
                });
            }
            return Some(Frame::Ping {
                token: self.ping_tokens,
            });
        }
        None
    }

    /// DATA, FIN or a bare ACK for the active path.
    fn poll_stream(&mut self, now: Instant, i: usize) -> Option<Outgoing> {
        let ack = self.recv.ack();
        match self.send.poll(now) {
            Some(Chunk::Data(range)) => {
                self.paths[i].ack_sent = ack;
                self.held_ack = HeldAck::No;
                Some(Frame::Data {
                    offset: range.start,
                    ack,
                    payload: range,
                })
            }
            Some(Chunk::Fin { offset }) => Some(Frame::Fin { offset }),
            None => {
                let sent = self.paths[i].ack_sent;
                let every = (self.cfg.recv_capacity as u64 / 4).clamp(1, MAX_ACK_EVERY);
                // ACK when the reader caught up, or every quarter window: the sender's
                // window and replay buffer advance with it.
                if ack <= sent || !(self.recv.is_empty() || ack - sent >= every) {
                    return None;
                }
                if self.holds_ack(ack - sent) {
                    match self.held_ack {
                        HeldAck::No => {
                            self.held_ack = HeldAck::Until(now + self.cfg.ack_delay);
                            return None;
                        }
                        HeldAck::Until(due) if now < due => return None,
                        HeldAck::Until(_) | HeldAck::Due => {}
                    }
                }
                self.held_ack = HeldAck::No;
                self.paths[i].ack_sent = ack;
                Some(Frame::Ack { ack })
            }
        }
    }

    /// Whether a bare ACK confirming `unacked` more bytes may wait for a frame to ride on.
    /// A request's ACK then goes with its answer, and the last read's with our FIN, in one
    /// TCP segment: a request and its answer cost each engine one wake-up less. Not an ACK
    /// of the peer's FIN (the close waits on it), nor once our own FIN is queued (nothing
    /// else will come to carry it).
    fn holds_ack(&self, unacked: u64) -> bool {
        let below = HOLD_ACK_BELOW
            .min(self.cfg.replay_capacity as u64 / 4)
            .min(self.cfg.recv_capacity as u64 / 4);
        unacked < below
            && !self.cfg.ack_delay.is_zero()
            && self.state == State::Open
            && !self.recv.eof()
            && !self.send.is_shut()
    }

    /// Client: everything is done but the server may not have our final ACK yet. A PING
    /// behind it on the same (FIFO) path proves delivery when its PONG returns.
    fn wants_close_confirmation(&self, i: usize) -> bool {
        let p = &self.paths[i];
        self.role == Role::Client
            && self.state == State::Open
            && self.send.is_done()
            && self.recv.eof()
            && self.confirmed < self.recv.received()
            && p.ping_in_flight.is_none()
            && p.ack_sent >= self.recv.ack()
            && self.active() == Some(i)
    }

    /// How long a live path stays quiet (nothing received, no PING sent) before this end
    /// PINGs it. One end keeps a quiet path alive: the client, every `keepalive_interval`. The
    /// server waits half an interval longer, so the client's PING, which pushes the server's
    /// deadline back as any frame heard does, always comes first; were both ends on the same
    /// interval, their deadlines would fall within a one-way delay of each other and both
    /// would PING (two PINGs, two PONGs and both engines woken for each). A server whose
    /// client stopped PINGing still PINGs, after 1.5 intervals, and its path still dies after
    /// `path_dead_after` of silence.
    fn keepalive_after(&self) -> Duration {
        match self.role {
            Role::Client => self.cfg.keepalive_interval,
            Role::Server => self
                .cfg
                .keepalive_interval
                .saturating_add(self.cfg.keepalive_interval / 2),
        }
    }

    /// A keepalive fell due, or the peer's PING arrived: nothing moved for a while. Buffers left empty keep
    /// their capacity while busy (no reallocation per frame) and free it here, so an idle
    /// session holds none (10,000 idle sessions per engine, issue 19).
    fn release_idle_buffers(&mut self) {
        self.send.release_if_empty();
        self.recv.release_if_empty();
        // Its rhythm is older than its memory (two windows of a second): nothing to keep.
        self.cadence = None;
    }

    /// Heap memory of the stream buffers, the event queue and the stream's rhythm (an idle
    /// session's is 0).
    pub(crate) fn buffer_capacity(&self) -> usize {
        let cadence = self.cadence.as_ref().map_or(0, |_| size_of::<Cadence>());
        self.send.capacity_held() + self.recv.capacity_held() + self.events.capacity() + cadence
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        // Events are rare (a path's fate, the session's): the queue holds memory only while
        // one waits, so an idle session keeps none.
        if self.events.is_empty() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        event
    }

    /// The next instant `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let dead_after = self.cfg.path_dead_after;
        let keepalive = self.keepalive_after();
        match self.state {
            State::Done => None,
            State::Closed if self.role == Role::Client => None,
            State::Reset => self
                .paths
                .iter()
                .filter(|p| p.reset.is_some())
                .filter_map(|p| p.dead_at(dead_after))
                .min(),
            State::Open | State::Closed => {
                let paths = self.paths.iter().flat_map(|p| {
                    let live = p.is_live().then_some(p);
                    let ping = live.and_then(|p| p.ping_at(keepalive));
                    // A handshaking path owes its answer too: it may be suspected.
                    let probe = live.and_then(|p| p.probe_at);
                    let watch = [p.suspect_at, probe].into_iter();
                    p.dead_at(dead_after)
                        .into_iter()
                        .chain(ping)
                        .chain(watch.flatten())
                });
                let linger = self.linger_deadline();
                let stop = self.cadence.as_ref().and_then(|c| c.stop_at);
                paths
                    .chain(linger)
                    .chain(self.proof_deadline())
                    .chain(stop)
                    .chain(match self.held_ack {
                        HeldAck::Until(due) => Some(due),
                        HeldAck::No | HeldAck::Due => None,
                    })
                    .min()
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.proof_deadline().is_some_and(|t| now >= t) {
            debug!("the client never proved it holds the session keys: dropped unseen");
            self.reset(ResetReason::AuthFailed, false, false);
            return;
        }
        let dead_after = self.cfg.path_dead_after;
        let dead: Vec<PathId> = self
            .paths
            .iter()
            .filter(|p| p.dead_at(dead_after).is_some_and(|t| now >= t))
            .map(|p| p.id)
            .collect();
        for id in dead {
            debug!(path = id, "path silent too long");
            self.lose_path(now, id, true);
        }
        if !matches!(self.state, State::Open | State::Closed) {
            return;
        }
        if let HeldAck::Until(due) = self.held_ack
            && now >= due
        {
            self.held_ack = HeldAck::Due;
        }
        if let Some(cadence) = self.cadence.as_mut()
            && cadence.stop_at.is_some_and(|t| now >= t)
        {
            cadence.stop_at = None;
            cadence.stopped = true;
            let path = cadence.path;
            // A stop on a path that is gone says nothing new: the loss of the path did
            // (`Event::NeedPath`, or the stream goes on over another path).
            if self.stream_stopped(path) && !self.events.contains(&Event::PathQuiet(path)) {
                self.events.push_back(Event::PathQuiet(path));
            }
        }
        let floor = self.cfg.suspect_after;
        let keepalive_after = self.keepalive_after();
        let mut idle = false;
        for p in &mut self.paths {
            let probe = p.probe_at.is_some_and(|t| now >= t);
            if probe {
                p.probe_at = None;
            }
            if p.suspect_at.is_some_and(|t| now >= t) {
                p.suspicions += 1;
                p.suspect_at = Some(now + p.suspect_delay(floor) * (1 << p.suspicions.min(6)));
                if !self.events.contains(&Event::PathSuspect(p.id)) {
                    self.events.push_back(Event::PathSuspect(p.id));
                }
            }
            if !p.is_live() {
                continue;
            }
            let keepalive = p.ping_at(keepalive_after).is_some_and(|t| now >= t);
            if keepalive || (probe && p.ping_in_flight.is_none()) {
                p.ping_due = true;
                p.last_ping = Some(now);
            }
            idle |= keepalive;
        }
        if idle {
            self.release_idle_buffers();
        }
        if self.linger_deadline().is_some_and(|t| now >= t) {
            if self.state == State::Closed {
                self.state = State::Done;
            } else {
                debug!("no path came back within the linger period");
                self.reset(ResetReason::LingerExpired, false, true);
            }
        }
    }

    /// Takes as much of `data` as the replay buffer has room for. After a short count, room
    /// comes back as the peer confirms bytes.
    pub fn app_write(&mut self, data: &[u8]) -> usize {
        if self.state != State::Open {
            return 0;
        }
        self.send.write(data)
    }

    /// How many bytes `app_write` would take now.
    pub fn app_room(&self) -> usize {
        if self.state != State::Open {
            return 0;
        }
        self.send.room()
    }

    /// Whether the replay buffer is full: the program writes faster than the peer confirms.
    pub fn send_blocked(&self) -> bool {
        self.state == State::Open && !self.send.is_shut() && self.send.room() == 0
    }

    /// The bytes in flight the engine grants this session beside what its path's round trips
    /// call for (`session::send`'s module doc).
    pub fn set_send_share(&mut self, bytes: usize) {
        self.send.set_share(bytes);
    }

    /// What the kernel measured of `path`'s TCP connection: its shortest round trip (the
    /// engine reads `TCP_INFO`). The replay buffer's growth is judged by it.
    pub fn set_transport_rtt(&mut self, path: PathId, rtt: Duration) {
        if let Some(i) = self.index(path) {
            self.paths[i].transport_rtt = Some(rtt);
        }
    }

    /// The replay buffer's room, at most `max` bytes of it, in order (the second slice is
    /// empty unless it wraps): a relay reads the program's bytes straight into it, then
    /// calls [`Session::app_commit`] with the count. Empty when `app_room` is 0.
    pub fn app_spare(&mut self, max: usize) -> [&mut [u8]; 2] {
        if self.state != State::Open {
            return [&mut [], &mut []];
        }
        self.send.spare(max)
    }

    /// The program's first `n` bytes of [`Session::app_spare`] were filled: they join the
    /// stream as `app_write` would have taken them.
    pub fn app_commit(&mut self, n: usize) {
        if n > 0 {
            self.send.commit(n);
        }
    }

    /// Reads received bytes. 0 with `app_read_eof()` = the peer finished its stream.
    pub fn app_read(&mut self, buf: &mut [u8]) -> usize {
        let [front, back] = self.app_readable();
        let from_front = buf.len().min(front.len());
        let from_back = (buf.len() - from_front).min(back.len());
        copy::copy(&mut buf[..from_front], &front[..from_front]);
        copy::copy(
            &mut buf[from_front..from_front + from_back],
            &back[..from_back],
        );
        self.app_consume(from_front + from_back);
        from_front + from_back
    }

    /// The received bytes the application has not read, in order (the second slice is empty
    /// unless the buffer wraps): a relay writes them out in place, then calls `app_consume`.
    pub fn app_readable(&self) -> [&[u8]; 2] {
        self.recv.unread()
    }

    /// The application took the first `n` bytes of `app_readable`.
    pub fn app_consume(&mut self, n: usize) {
        self.recv.consume(n);
        self.after_input();
    }

    pub fn app_read_eof(&self) -> bool {
        self.recv.eof()
    }

    /// The application half-closed: FIN follows the queued bytes.
    pub fn app_shutdown_write(&mut self) {
        if self.state == State::Open {
            self.send.shutdown();
            self.after_input();
        }
    }

    /// The application closed its writing side: the session is ending.
    pub fn app_write_shut(&self) -> bool {
        self.send.is_shut()
    }

    /// Everything the application wrote, and its FIN, reached the peer.
    pub fn app_write_done(&self) -> bool {
        self.send.is_done()
    }

    /// Reset, by either end or by the linger period.
    pub fn is_reset(&self) -> bool {
        self.state == State::Reset
    }

    /// Client of an OPEN that failed: the server may have taken stream bytes sent behind
    /// it (some went out, and no signed REFUSE says otherwise), so a new session must not
    /// send them again.
    pub fn early_data_may_have_arrived(&self) -> bool {
        self.early == EarlyData::Sent
    }

    /// A client session whose OPEN failed before the server could take any of its stream
    /// hands the stream over: this new session (not yet established) sends everything the
    /// program wrote to it, and its FIN, from the start.
    pub fn adopt_stream(&mut self, failed: &mut Session) {
        debug_assert!(!failed.early_data_may_have_arrived());
        debug_assert_eq!(self.send.high(), 0, "the adopting session sent nothing yet");
        std::mem::swap(&mut self.send, &mut failed.send);
        self.send.restart();
    }

    /// A path to the peer is live (not handshaking, not lost).
    pub fn has_live_path(&self) -> bool {
        self.active().is_some()
    }

    /// The application vanished: RESET(AppAbort) on every live path, then finished. After
    /// `Closed` there is nothing left to abort (a server finishes its linger on its own).
    pub fn app_abort(&mut self) {
        if self.state == State::Open {
            self.reset(ResetReason::AppAbort, true, false);
        }
    }

    /// Server: tell clients our new addresses (MOVED on every live path, and on paths
    /// attached later). At most `MAX_LOCATORS` are sent.
    pub fn announce_moved(&mut self, seq: u64, mut locators: Vec<SocketAddr>) {
        if self.role != Role::Server
            || self.state != State::Open
            || self.announced.as_ref().is_some_and(|(s, _)| seq <= *s)
        {
            return;
        }
        locators.truncate(MAX_LOCATORS);
        self.announced = Some((seq, locators));
        for p in self.paths.iter_mut().filter(|p| p.is_live()) {
            p.moved_due = true;
        }
    }

    /// The session is over and its last event was polled: drop it.
    pub fn is_finished(&self) -> bool {
        let over = match self.state {
            State::Open => false,
            State::Closed => self.role == Role::Client,
            State::Done => true,
            State::Reset => self.paths.iter().all(|p| p.reset.is_none()),
        };
        over && self.events.is_empty()
    }

    /// Server: when a session whose client has not proved it holds the keys ends without a
    /// word (it never reached the program; a replayed HELLO ends this way). The proof may
    /// come late, on a RESUME after the HELLO's path broke: it has the linger period, as
    /// any session without a path.
    fn proof_deadline(&self) -> Option<Instant> {
        (!self.proven && self.state == State::Open).then(|| self.created + self.linger)
    }

    /// When a session without a live path gives up (`None`: it has a path, or never).
    fn linger_deadline(&self) -> Option<Instant> {
        self.no_live_since?.checked_add(self.linger)
    }

    fn is_terminal(&self) -> bool {
        matches!(self.state, State::Reset | State::Done)
    }

    fn index(&self, path: PathId) -> Option<usize> {
        self.paths.iter().position(|p| p.id == path)
    }

    /// The active path: the live one that became live last.
    fn active(&self) -> Option<usize> {
        self.paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_live())
            .max_by_key(|(_, p)| p.live_seq)
            .map(|(i, _)| i)
    }

    fn add_live_path(&mut self, path: Path) {
        self.paths.push(path);
        let i = self.paths.len() - 1;
        self.make_live(i);
    }

    /// `i` becomes the active path: resend from what the peer confirmed. If another path was
    /// active (or the active one was lost since), that is a move.
    fn make_live(&mut self, i: usize) {
        let old = self
            .paths
            .iter()
            .enumerate()
            .filter(|&(j, p)| j != i && p.is_live())
            .max_by_key(|(_, p)| p.live_seq)
            .map(|(_, p)| (p.id, p.last_recv))
            .or(self.lost_active.take());
        // The path's first frame was just heard (or, on a server, it was just created).
        let (to, now) = (self.paths[i].id, self.paths[i].last_recv);
        if let Some((from, last_heard)) = old
            && from != to
        {
            if self.moves.len() == MAX_MOVES {
                self.moves.pop_front();
            }
            self.moves.push_back(Move {
                from,
                to,
                at: now,
                outage: now.saturating_duration_since(last_heard),
            });
        }
        self.live_seq += 1;
        let p = &mut self.paths[i];
        if p.state == PathState::Handshaking {
            p.handshake_rtt = Some(now.saturating_duration_since(p.opened));
        }
        p.state = PathState::Live;
        p.live_seq = self.live_seq;
        p.moved_due = self.announced.is_some();
        self.no_live_since = None;
        self.send.rewind();
    }

    fn enforce_path_limit(&mut self, now: Instant) {
        while self.paths.len() > MAX_PATHS {
            let oldest = self
                .paths
                .iter()
                .min_by_key(|p| (p.is_live(), p.live_seq))
                .map(|p| p.id);
            match oldest {
                Some(id) => self.lose_path(now, id, true),
                None => break,
            }
        }
    }

    /// Removes `path`. If it was the active one, the next active path (failover) resends
    /// everything unconfirmed. Returns whether the path existed.
    fn detach(&mut self, path: PathId) -> bool {
        let Some(i) = self.index(path) else {
            return false;
        };
        let was_active = self.active() == Some(i);
        let gone = self.paths.remove(i);
        if was_active {
            self.send.rewind();
            if !self.paths.iter().any(Path::is_live) {
                self.lost_active = Some((gone.id, gone.last_recv));
            }
        }
        true
    }

    fn lose_path(&mut self, now: Instant, path: PathId, dead: bool) {
        if !self.detach(path) {
            return;
        }
        if dead {
            self.events.push_back(Event::PathDead(path));
        }
        if !matches!(self.state, State::Open | State::Closed) {
            return;
        }
        if !self.paths.iter().any(Path::is_live) && self.no_live_since.is_none() {
            self.no_live_since = Some(now);
        }
        if self.role == Role::Client
            && self.state == State::Open
            && self.paths.is_empty()
            && !self.events.contains(&Event::NeedPath)
        {
            self.events.push_back(Event::NeedPath);
        }
    }

    fn reset(&mut self, reason: ResetReason, notify_peer: bool, report: bool) {
        self.state = State::Reset;
        for p in &mut self.paths {
            p.reset = (notify_peer && p.is_live() && p.keys.is_some()).then_some(reason);
        }
        if report {
            self.events.push_back(Event::Reset { reason });
        }
    }

    /// Bookkeeping after anything that may have moved the streams.
    fn after_input(&mut self) {
        if self.state != State::Open || !self.send.is_done() || !self.recv.eof() {
            return;
        }
        let confirmed = match self.role {
            Role::Server => true,
            Role::Client => self.confirmed >= self.recv.received(),
        };
        if confirmed {
            debug!("session closed");
            self.state = State::Closed;
            self.events.push_back(Event::Closed);
        }
    }
}
