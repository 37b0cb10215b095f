//! The server's endpoint, sans-IO: which arriving flow path belongs to which session.
//!
//! Like quinn-proto's `Endpoint`: it keeps the connection-ID table, the served ports and the
//! paths that have not yet said what they are for, and turns a path's first frame into a
//! decision: a new session (a verified HELLO for a served port, or an OPEN that its parent
//! session's ticket verified), a path attached to a live session (a RESUME that opened with
//! the session's keys), or a refusal with a typed reason
//! (and, for some, the signed REFUSE the path gets before it is closed). It decides who may
//! connect (the allow list, [`allow`]) and holds the server to its limits ([`Limits`]):
//! sessions per peer and in all, a memory budget for their buffers, and what one source
//! address may hold before it authenticated. It also numbers the engine's sessions.
//! Nothing here touches a socket, a thread or a clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Guid, Keypair};

pub mod allow;
mod limits;
pub mod refusals;

pub use allow::AllowList;
pub use limits::Limits;
use refusals::RefusalBudget;

use crate::session::{Acceptor, HandshakeError, ResumeError, Session, SessionConfig};
use crate::ticket::{OpenError, ServerTickets};
use crate::wire::{ConnId, Frame, FrameRef, PathId, Refuse, ResetReason};

/// A session's number in one engine (clients and servers alike).
pub type ConnKey = u64;

/// A server path must present HELLO or RESUME within this long.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on server paths that have not yet presented HELLO/RESUME.
pub const MAX_UNATTACHED: usize = 256;
/// A path that has waited this long for its first frame gives up its room to a new path
/// when its source (or the engine) is at its bound. An honest client sends its first frame
/// as soon as its dial connects, unless it dialled ahead (a spare path,
/// `crate::spare_paths`), and then it checks that the path is still open before using it;
/// idle connections then take room from each other, not from a new client.
pub const YIELDS_ROOM_AFTER: Duration = Duration::from_secs(1);
/// Bound on server sessions whose client has not yet proved it holds the keys (each ends
/// after the linger period at most). A new HELLO beyond it evicts the oldest: an honest
/// client proves its keys one round trip after HELLO_ACK, so whoever floods the table with
/// HELLOs it will never prove only evicts its own, and cannot keep new clients out.
pub const MAX_UNPROVEN: usize = 256;

/// Why an arriving path was turned away. The live sessions are untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this engine serves no port")]
    NotServing,
    #[error("port {port} is not served")]
    PortNotServed { port: u16 },
    #[error("the connection ID of the HELLO is in use")]
    ConnIdInUse,
    #[error("HELLO refused: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("RESUME for an unknown session")]
    UnknownSession,
    #[error("RESUME refused: {0}")]
    Resume(#[from] ResumeError),
    #[error("OPEN refused: {0}")]
    Open(#[from] OpenError),
    #[error("a path must start with HELLO or RESUME, not {frame}")]
    NotAFirstFrame { frame: &'static str },
    #[error("too many paths have not presented HELLO or RESUME yet")]
    TooManyUnattached,
    #[error("no HELLO or RESUME within the first-frame timeout")]
    FirstFrameTimeout,
    #[error("source {from} already has {limit} paths that have not presented HELLO or RESUME")]
    TooManyFromSource { from: IpAddr, limit: usize },
    #[error("{guid} is not on the allow list for port {port}")]
    NotAllowed { guid: Guid, port: u16 },
    #[error("{guid} already holds {limit} sessions, the most one peer may")]
    TooManySessions { guid: Guid, limit: usize },
    #[error("{limit} sessions, the most this server holds (session limit or buffer budget)")]
    Overloaded { limit: usize },
}

impl Refusal {
    /// The variant's name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotServing => "NotServing",
            Refusal::PortNotServed { .. } => "PortNotServed",
            Refusal::ConnIdInUse => "ConnIdInUse",
            Refusal::Handshake(_) => "Handshake",
            Refusal::UnknownSession => "UnknownSession",
            Refusal::Resume(_) => "Resume",
            Refusal::Open(OpenError::UnknownTicket) => "OpenUnknownTicket",
            Refusal::Open(OpenError::Unauthentic) => "OpenUnauthentic",
            Refusal::Open(OpenError::Replayed { .. }) => "OpenReplayed",
            Refusal::Open(OpenError::WrongPort { .. }) => "OpenWrongPort",
            Refusal::NotAFirstFrame { .. } => "NotAFirstFrame",
            Refusal::TooManyUnattached => "TooManyUnattached",
            Refusal::FirstFrameTimeout => "FirstFrameTimeout",
            Refusal::TooManyFromSource { .. } => "TooManyFromSource",
            Refusal::NotAllowed { .. } => "NotAllowed",
            Refusal::TooManySessions { .. } => "TooManySessions",
            Refusal::Overloaded { .. } => "Overloaded",
        }
    }

    /// The reason a signed REFUSE gives, if the path gets one: the port, allow-list and
    /// limit refusals tell a client why its connect failed (the last three only ever answer
    /// a verified HELLO or OPEN), an unknown RESUME that its session is gone, an OPEN whose
    /// ticket is gone that it must fall back to HELLO. Anything else (a bad HELLO, RESUME or
    /// OPEN may come from anyone) just loses its path.
    pub fn refuse_reason(&self) -> Option<ResetReason> {
        match self {
            Refusal::PortNotServed { .. } => Some(ResetReason::PortRefused),
            Refusal::UnknownSession | Refusal::Open(OpenError::UnknownTicket) => {
                Some(ResetReason::LingerExpired)
            }
            Refusal::NotAllowed { .. } => Some(ResetReason::NotAllowed),
            Refusal::TooManySessions { .. } => Some(ResetReason::TooManySessions),
            Refusal::Overloaded { .. } => Some(ResetReason::Overloaded),
            _ => None,
        }
    }

    /// A refusal by policy (allow list, limits): the server's owner wants to see those.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Refusal::TooManyFromSource { .. }
                | Refusal::NotAllowed { .. }
                | Refusal::TooManySessions { .. }
                | Refusal::Overloaded { .. }
        )
    }
}

/// A path's first frame, refused: why, and the signed answer the path gets, if any.
#[derive(Debug)]
pub struct Refused {
    pub why: Refusal,
    pub answer: Option<Box<Refuse>>,
    /// A signed answer was due, but its source (or all sources) had used up the answers
    /// the server signs ([`refusals`]): the path is closed without one.
    pub unanswered: bool,
}

/// A path's first frame, accepted.
#[derive(Debug)]
pub enum Incoming {
    /// A verified HELLO: a new server session (its `peer()` is the client's key) with
    /// HELLO_ACK queued on the path, to be delivered to the program listening at
    /// `deliver_to` once it reports `Event::Established` (the client proved the keys).
    New {
        key: ConnKey,
        session: Box<Session>,
        port: u16,
        deliver_to: SocketAddr,
        /// Sessions whose client had not proved its keys, evicted to make room (they never
        /// reached their program): the driver drops them.
        evicted: Vec<ConnKey>,
        /// Closed sessions (both directions finished and confirmed, lingering only for a
        /// late resume) ended early to make room: the driver drops them.
        retired: Vec<ConnKey>,
    },
    /// A verified RESUME attached to the live session `key` (RESUME_ACK queued), or a
    /// verified OPEN: a new server session, proven already (`Event::Established` queued).
    Resumed { key: ConnKey },
}

#[derive(Debug, Default)]
pub struct Endpoint {
    acceptor: Option<Acceptor>,
    /// Served ports and where their program listens.
    services: HashMap<u16, SocketAddr>,
    /// Who may connect; `None`: every verified client.
    allow: Option<AllowList>,
    limits: Limits,
    /// What the buffer budget counts one server session at (`budgeted_buffers`).
    buffers_per_session: usize,
    /// Server sessions by connection ID (where a RESUME finds its session), with their peer.
    by_conn_id: HashMap<ConnId, (ConnKey, Guid)>,
    /// Server sessions per peer GUID (an entry only while it has some).
    per_peer: HashMap<Guid, usize>,
    /// Paths accepted and not yet attached, oldest first (`unattached_set` says which of
    /// them still are, and from which source).
    unattached: VecDeque<(Instant, PathId)>,
    unattached_set: HashMap<PathId, IpAddr>,
    /// Server sessions whose client has not yet proved it holds the keys, oldest first.
    unproven: VecDeque<Unproven>,
    /// Server sessions both of whose directions finished and were confirmed
    /// (`Event::Closed`), oldest first: they linger only so that a client that lost the last
    /// ACK can still learn it (TCP's TIME_WAIT), so they are the first to go at a limit.
    closed: VecDeque<(ConnKey, ConnId, Guid)>,
    /// The tickets of this server's proven sessions: what an OPEN is checked against.
    tickets: ServerTickets,
    /// How many signed REFUSEs each source, and all of them, may still get.
    refusals: RefusalBudget,
    next_key: ConnKey,
}

/// A server session whose client has not proved its keys yet.
#[derive(Debug, Clone, Copy)]
struct Unproven {
    key: ConnKey,
    conn_id: ConnId,
    peer: Guid,
    source: IpAddr,
}

/// What counts as one source for the pre-authentication limits: an IPv4 address, or an
/// IPv6 /64 (one host commonly holds a whole /64).
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl Endpoint {
    pub fn new() -> Endpoint {
        Endpoint::default()
    }

    /// A number for a new session.
    pub fn new_key(&mut self) -> ConnKey {
        self.next_key += 1;
        self.next_key
    }

    /// Accept sessions for `key`'s GUID from now on.
    pub fn start_serving(&mut self, cfg: SessionConfig, key: Arc<Keypair>) {
        self.buffers_per_session = cfg.budgeted_buffers();
        self.acceptor = Some(Acceptor::new(cfg, key));
    }

    /// Only the GUIDs (and ports) `allow` names may connect from now on; `None`: everyone.
    /// Live sessions are not touched.
    pub fn set_allow(&mut self, allow: Option<AllowList>) {
        self.allow = allow;
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The most server sessions held at once: the session limit, or as many as the buffer
    /// budget pays for (`SessionConfig::budgeted_buffers` each), whichever is lower.
    pub fn max_sessions(&self) -> usize {
        self.limits.max_sessions(self.buffers_per_session)
    }

    pub fn is_serving(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Serve `port`: its sessions go to the program listening at `deliver_to`.
    pub fn serve(&mut self, port: u16, deliver_to: SocketAddr) {
        self.services.insert(port, deliver_to);
    }

    /// The served ports, in order.
    pub fn served_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.services.keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    pub fn unserve(&mut self, port: u16) {
        self.services.remove(&port);
    }

    /// A path from `remote` was accepted; `Err`: close it at once. `Ok(Some(old))`: the
    /// bound was reached and `old`, a path that has waited at least [`YIELDS_ROOM_AFTER`]
    /// for its first frame, gave up its room: the driver closes it.
    pub fn path_accepted(
        &mut self,
        now: Instant,
        path: PathId,
        remote: IpAddr,
    ) -> Result<Option<PathId>, Refusal> {
        let source = source_of(remote);
        let limit = self.limits.preauth_per_source;
        let from_source = self
            .unattached_set
            .values()
            .filter(|s| **s == source)
            .count();
        let evicted = if from_source >= limit {
            let room = self.take_oldest_silent(now, Some(source));
            Some(room.ok_or(Refusal::TooManyFromSource {
                from: source,
                limit,
            })?)
        } else if self.unattached_set.len() >= MAX_UNATTACHED {
            Some(
                self.take_oldest_silent(now, None)
                    .ok_or(Refusal::TooManyUnattached)?,
            )
        } else {
            None
        };
        self.unattached_set.insert(path, source);
        self.unattached.push_back((now, path));
        self.compact();
        Ok(evicted)
    }

    /// Forgets the oldest unattached path (of `source`, if given) if it has waited at least
    /// [`YIELDS_ROOM_AFTER`]; returns it.
    fn take_oldest_silent(&mut self, now: Instant, source: Option<IpAddr>) -> Option<PathId> {
        let set = &self.unattached_set;
        let &(since, oldest) = self.unattached.iter().find(|(_, p)| {
            set.get(p)
                .is_some_and(|from| source.is_none_or(|s| s == *from))
        })?;
        if now < since + YIELDS_ROOM_AFTER {
            return None;
        }
        self.take_unattached(oldest);
        Some(oldest)
    }

    /// The driver closed a path that had not presented its first frame.
    pub fn path_gone(&mut self, path: PathId) {
        self.take_unattached(path);
    }

    /// Forgets an unattached path; its source, if it was one.
    fn take_unattached(&mut self, path: PathId) -> Option<IpAddr> {
        let source = self.unattached_set.remove(&path);
        if source.is_some() {
            self.compact();
        }
        source
    }

    /// The first frame of an accepted path. `session` finds a live session by key (for a
    /// RESUME); a RESUME is verified before anything of that session is touched. Whatever
    /// the answer, the path is no longer unattached.
    pub fn first_frame<'s>(
        &mut self,
        now: Instant,
        path: PathId,
        frame: FrameRef<'_>,
        session: impl FnOnce(ConnKey) -> Option<&'s mut Session>,
    ) -> Result<Incoming, Refused> {
        let source = self
            .take_unattached(path)
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let conn_id = match &frame {
            Frame::Hello(h) => Some(h.conn_id),
            Frame::Resume(r) => Some(r.conn_id),
            Frame::Open(o) => Some(o.conn_id),
            _ => None,
        };
        self.route(now, path, source, &frame, session)
            .map_err(|why| {
                let due = match (why.refuse_reason(), &self.acceptor, conn_id) {
                    (Some(reason), Some(acceptor), Some(id)) => Some((reason, acceptor, id)),
                    _ => None,
                };
                let metered = due.filter(|_| self.refusals.allow(now, source));
                let unanswered = due.is_some() && metered.is_none();
                let answer = metered
                    .map(|(reason, acceptor, id)| Box::new(acceptor.refuse(&frame, id, reason)));
                Refused {
                    why,
                    answer,
                    unanswered,
                }
            })
    }

    fn route<'s>(
        &mut self,
        now: Instant,
        path: PathId,
        source: IpAddr,
        frame: &FrameRef<'_>,
        session: impl FnOnce(ConnKey) -> Option<&'s mut Session>,
    ) -> Result<Incoming, Refusal> {
        match frame {
            Frame::Hello(hello) => {
                let acceptor = self.acceptor.as_ref().ok_or(Refusal::NotServing)?;
                let deliver_to = *self
                    .services
                    .get(&hello.port)
                    .ok_or(Refusal::PortNotServed { port: hello.port })?;
                // A HELLO is answered once: the same one again (a replay, or a client's
                // parallel dial) would give a second path the same keys.
                if self.by_conn_id.contains_key(&hello.conn_id) {
                    return Err(Refusal::ConnIdInUse);
                }
                // Only a verified key is refused by policy: an unverified HELLO gets nothing.
                acceptor.verify_hello(hello)?;
                let guid = hello.client_key.guid();
                self.check_allowed(guid, hello.port)?;
                let session = acceptor.accept_verified(now, hello, path)?;
                let (evicted, retired) = self.make_room(guid, source)?;
                let key = self.admit(now, &session, guid, hello.port);
                self.unproven.push_back(Unproven {
                    key,
                    conn_id: hello.conn_id,
                    peer: guid,
                    source,
                });
                Ok(Incoming::New {
                    key,
                    session: Box::new(session),
                    port: hello.port,
                    deliver_to,
                    evicted,
                    retired,
                })
            }
            Frame::Open(open) => {
                let acceptor = self.acceptor.as_ref().ok_or(Refusal::NotServing)?;
                // The ticket first (no answer but for a ticket that is gone), then the same
                // policy as for a verified HELLO, on the client key the ticket names.
                let verified = self.tickets.verify(now, open)?;
                let deliver_to = *self
                    .services
                    .get(&open.port)
                    .ok_or(Refusal::PortNotServed { port: open.port })?;
                if self.by_conn_id.contains_key(&open.conn_id) {
                    return Err(Refusal::ConnIdInUse);
                }
                let guid = verified.client.guid();
                self.check_allowed(guid, open.port)?;
                let session = acceptor.accept_open(now, open, &verified, path);
                let (evicted, retired) = self.make_room(guid, source)?;
                let key = self.admit(now, &session, guid, open.port);
                Ok(Incoming::New {
                    key,
                    session: Box::new(session),
                    port: open.port,
                    deliver_to,
                    evicted,
                    retired,
                })
            }
            Frame::Resume(resume) => {
                let (key, _) = *self
                    .by_conn_id
                    .get(&resume.conn_id)
                    .ok_or(Refusal::UnknownSession)?;
                let s = session(key).ok_or(Refusal::UnknownSession)?;
                s.verify_resume(resume)?;
                s.attach_resume(now, resume, path);
                if s.is_proven() {
                    self.session_proven(key);
                }
                Ok(Incoming::Resumed { key })
            }
            other => Err(Refusal::NotAFirstFrame {
                frame: other.name(),
            }),
        }
    }

    /// Whether the allow list lets `guid` reach `port`.
    fn check_allowed(&self, guid: Guid, port: u16) -> Result<(), Refusal> {
        match &self.allow {
            Some(allow) if !allow.permits(&guid, port) => Err(Refusal::NotAllowed { guid, port }),
            _ => Ok(()),
        }
    }

    /// A new server session of `guid` for `port`, made room for: numbered, routed by its
    /// connection ID, counted for its peer, its ticket stored.
    fn admit(&mut self, now: Instant, session: &Session, guid: Guid, port: u16) -> ConnKey {
        self.store_ticket(now, session, port);
        let key = self.new_key();
        self.by_conn_id.insert(session.conn_id(), (key, guid));
        *self.per_peer.entry(guid).or_default() += 1;
        key
    }

    /// Room for one more session of `peer` from `source`, within every limit: evicts
    /// unproven sessions where that makes room, refuses where it cannot (live, proven
    /// sessions are never touched). An unproven session is worth nothing until its client
    /// proves its keys, one round trip after HELLO_ACK, so a flood of HELLOs never proven
    /// (replayed, or from throwaway keys) only evicts itself. At the per-peer and total
    /// limits only a session from *another* source makes room: a client opening sessions
    /// back to back has its latest one in flight (proof not yet in) from its own address,
    /// and its newcomer is refused rather than that one cut; a replayer (somewhere else) of
    /// a client's HELLOs cannot hold that client out. Where no unproven session can go, the
    /// oldest closed one does (of that peer, at the per-peer limit): a client opening one
    /// short session after another (HTTP/1.0, a script's requests) would otherwise be
    /// refused once its finished sessions of the last linger period fill its quota.
    /// Returns the unproven sessions evicted and the closed ones retired.
    fn make_room(
        &mut self,
        peer: Guid,
        source: IpAddr,
    ) -> Result<(Vec<ConnKey>, Vec<ConnKey>), Refusal> {
        let (mut evicted, mut retired) = (Vec::new(), Vec::new());
        let per_peer = self.limits.sessions_per_peer;
        if self.per_peer.get(&peer).copied().unwrap_or(0) >= per_peer {
            if let Some(key) = self.evict_unproven(|u| u.peer == peer && u.source != source) {
                evicted.push(key);
            } else {
                let key = self
                    .retire_closed(|p| p == peer)
                    .ok_or(Refusal::TooManySessions {
                        guid: peer,
                        limit: per_peer,
                    })?;
                retired.push(key);
            }
        }
        let max = self.max_sessions();
        if self.by_conn_id.len() >= max {
            if let Some(key) = self.evict_unproven(|u| u.source != source) {
                evicted.push(key);
            } else {
                let key = self
                    .retire_closed(|_| true)
                    .ok_or(Refusal::Overloaded { limit: max })?;
                retired.push(key);
            }
        }
        let per_source = self.limits.preauth_per_source;
        if self.unproven.iter().filter(|u| u.source == source).count() >= per_source {
            evicted.extend(self.evict_unproven(|u| u.source == source));
        }
        if self.unproven.len() >= MAX_UNPROVEN {
            evicted.extend(self.evict_unproven(|_| true));
        }
        Ok((evicted, retired))
    }

    /// Ends the oldest closed session whose peer `which` picks.
    fn retire_closed(&mut self, which: impl Fn(Guid) -> bool) -> Option<ConnKey> {
        let i = self.closed.iter().position(|c| which(c.2))?;
        let (_, conn_id, _) = self.closed.remove(i)?;
        self.forget(&conn_id)
    }

    /// A server session's directions both finished and were confirmed (`Event::Closed`): it
    /// lingers for a late resume, but may now be retired to make room.
    pub fn session_closed(&mut self, conn_id: &ConnId) {
        if let Some(&(key, peer)) = self.by_conn_id.get(conn_id)
            && !self.closed.iter().any(|c| c.0 == key)
        {
            self.closed.push_back((key, *conn_id, peer));
        }
    }

    /// Drops the oldest unproven session that `which` picks.
    fn evict_unproven(&mut self, which: impl Fn(&Unproven) -> bool) -> Option<ConnKey> {
        let i = self.unproven.iter().position(which)?;
        let u = self.unproven.remove(i)?;
        self.forget(&u.conn_id);
        Some(u.key)
    }

    /// A server session's client proved it holds the keys (`Event::Established`).
    pub fn session_proven(&mut self, key: ConnKey) {
        self.unproven.retain(|u| u.key != key);
    }

    /// Keeps the ticket of a new server session for `port`: its client's next connections
    /// may OPEN with it. Stored as the session starts (HELLO_ACK or OPEN_ACK queued), not
    /// once the client proved its keys: a client connecting again at once must not find its
    /// OPEN there first (only that client can derive the ticket, so storing it early gives
    /// nobody else anything).
    fn store_ticket(&mut self, now: Instant, session: &Session, port: u16) {
        if let Some(ticket) = session.ticket() {
            self.tickets.store(now, &ticket, port);
        }
    }

    /// Tickets held (see [`crate::ticket`]).
    pub fn tickets(&self) -> usize {
        self.tickets.len()
    }

    /// A server session is gone: its connection ID no longer routes.
    pub fn session_ended(&mut self, conn_id: &ConnId) {
        if let Some(key) = self.forget(conn_id) {
            self.session_proven(key);
        }
    }

    /// Removes a session from the routing table and its peer's count.
    fn forget(&mut self, conn_id: &ConnId) -> Option<ConnKey> {
        let (key, peer) = self.by_conn_id.remove(conn_id)?;
        self.closed.retain(|c| c.0 != key);
        if let Some(n) = self.per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&peer);
            }
        }
        Some(key)
    }

    /// Server sessions `peer` holds (proven or not).
    pub fn sessions_of(&self, peer: &Guid) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Server sessions that RESUME can reach.
    pub fn sessions(&self) -> usize {
        self.by_conn_id.len()
    }

    /// When the oldest unattached path times out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.unattached
            .front()
            .map(|(since, _)| *since + FIRST_FRAME_TIMEOUT)
    }

    /// Paths that presented nothing within [`FIRST_FRAME_TIMEOUT`]: close them.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PathId> {
        let mut expired = Vec::new();
        while let Some(&(since, path)) = self.unattached.front()
            && since + FIRST_FRAME_TIMEOUT <= now
        {
            self.unattached.pop_front();
            if self.unattached_set.remove(&path).is_some() {
                expired.push(path);
            }
        }
        self.compact();
        expired
    }

    /// Drops queue entries of paths that are no longer unattached from the front, and
    /// rebuilds the queue when such entries pile up behind it.
    fn compact(&mut self) {
        while let Some((_, p)) = self.unattached.front()
            && !self.unattached_set.contains_key(p)
        {
            self.unattached.pop_front();
        }
        if self.unattached.len() > 2 * self.unattached_set.len() + 64 {
            let set = &self.unattached_set;
            self.unattached.retain(|(_, p)| set.contains_key(p));
        }
    }
}

#[cfg(test)]
mod tests;
