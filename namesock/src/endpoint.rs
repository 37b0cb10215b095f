//! The server's endpoint, sans-IO: which arriving flow path belongs to which session.
//!
//! Like quinn-proto's `Endpoint`: it keeps the connection-ID table, the served ports and the
//! paths that have not yet said what they are for, and turns a path's first frame into a
//! decision: a new session (a verified HELLO for a served port), a path attached to a live
//! session (a RESUME that opened with the session's keys), or a refusal with a typed reason
//! (and, for some, the signed REFUSE the path gets before it is closed). It also numbers the
//! engine's sessions and bounds those whose client has not yet proved it holds the keys.
//! Nothing here touches a socket, a thread or a clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::Keypair;

use crate::session::{Acceptor, HandshakeError, ResumeError, Session, SessionConfig};
use crate::wire::{ConnId, Frame, FrameRef, PathId, Refuse, ResetReason};

/// A session's number in one engine (clients and servers alike).
pub type ConnKey = u64;

/// A server path must present HELLO or RESUME within this long.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on server paths that have not yet presented HELLO/RESUME.
pub const MAX_UNATTACHED: usize = 256;
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
    #[error("a path must start with HELLO or RESUME, not {frame}")]
    NotAFirstFrame { frame: &'static str },
    #[error("too many paths have not presented HELLO or RESUME yet")]
    TooManyUnattached,
    #[error("no HELLO or RESUME within the first-frame timeout")]
    FirstFrameTimeout,
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
            Refusal::NotAFirstFrame { .. } => "NotAFirstFrame",
            Refusal::TooManyUnattached => "TooManyUnattached",
            Refusal::FirstFrameTimeout => "FirstFrameTimeout",
        }
    }

    /// The reason a signed REFUSE gives, if the path gets one: the port refusal tells a
    /// client why its connect failed, an unknown RESUME that its session is gone. Anything
    /// else (a bad HELLO or RESUME may come from anyone) just loses its path.
    pub fn refuse_reason(&self) -> Option<ResetReason> {
        match self {
            Refusal::PortNotServed { .. } => Some(ResetReason::PortRefused),
            Refusal::UnknownSession => Some(ResetReason::LingerExpired),
            _ => None,
        }
    }
}

/// A path's first frame, refused: why, and the signed answer the path gets, if any.
#[derive(Debug)]
pub struct Refused {
    pub why: Refusal,
    pub answer: Option<Box<Refuse>>,
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
        /// The oldest session whose client had not proved its keys, evicted to make room
        /// (it never reached its program): the driver drops it.
        evicted: Option<ConnKey>,
    },
    /// A verified RESUME attached to the live session `key` (RESUME_ACK queued).
    Resumed { key: ConnKey },
}

#[derive(Debug, Default)]
pub struct Endpoint {
    acceptor: Option<Acceptor>,
    /// Served ports and where their program listens.
    services: HashMap<u16, SocketAddr>,
    /// Server sessions by connection ID (where a RESUME finds its session).
    by_conn_id: HashMap<ConnId, ConnKey>,
    /// Paths accepted and not yet attached, oldest first (`unattached_set` says which of
    /// them still are).
    unattached: VecDeque<(Instant, PathId)>,
    unattached_set: HashSet<PathId>,
    /// Server sessions whose client has not yet proved it holds the keys, oldest first.
    unproven: VecDeque<(ConnKey, ConnId)>,
    next_key: ConnKey,
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
        self.acceptor = Some(Acceptor::new(cfg, key));
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

    /// A path was accepted; `Err`: close it at once.
    pub fn path_accepted(&mut self, now: Instant, path: PathId) -> Result<(), Refusal> {
        if self.unattached_set.len() >= MAX_UNATTACHED {
            return Err(Refusal::TooManyUnattached);
        }
        self.unattached_set.insert(path);
        self.unattached.push_back((now, path));
        self.compact();
        Ok(())
    }

    /// The driver closed a path that had not presented its first frame.
    pub fn path_gone(&mut self, path: PathId) {
        if self.unattached_set.remove(&path) {
            self.compact();
        }
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
        self.path_gone(path);
        let conn_id = match &frame {
            Frame::Hello(h) => Some(h.conn_id),
            Frame::Resume(r) => Some(r.conn_id),
            _ => None,
        };
        self.route(now, path, &frame, session).map_err(|why| {
            let answer = match (why.refuse_reason(), &self.acceptor, conn_id) {
                (Some(reason), Some(acceptor), Some(id)) => {
                    Some(Box::new(acceptor.refuse(&frame, id, reason)))
                }
                _ => None,
            };
            Refused { why, answer }
        })
    }

    fn route<'s>(
        &mut self,
        now: Instant,
        path: PathId,
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
                let session = acceptor.accept_hello(now, hello, path)?;
                let evicted = (self.unproven.len() >= MAX_UNPROVEN)
                    .then(|| self.unproven.pop_front())
                    .flatten()
                    .map(|(key, conn_id)| {
                        self.by_conn_id.remove(&conn_id);
                        key
                    });
                let key = self.new_key();
                self.by_conn_id.insert(hello.conn_id, key);
                self.unproven.push_back((key, hello.conn_id));
                Ok(Incoming::New {
                    key,
                    session: Box::new(session),
                    port: hello.port,
                    deliver_to,
                    evicted,
                })
            }
            Frame::Resume(resume) => {
                let key = *self
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

    /// A server session's client proved it holds the keys (`Event::Established`).
    pub fn session_proven(&mut self, key: ConnKey) {
        self.unproven.retain(|(k, _)| *k != key);
    }

    /// A server session is gone: its connection ID no longer routes.
    pub fn session_ended(&mut self, conn_id: &ConnId) {
        if let Some(key) = self.by_conn_id.remove(conn_id) {
            self.session_proven(key);
        }
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
            if self.unattached_set.remove(&path) {
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
            && !self.unattached_set.contains(p)
        {
            self.unattached.pop_front();
        }
        if self.unattached.len() > 2 * self.unattached_set.len() + 64 {
            let set = &self.unattached_set;
            self.unattached.retain(|(_, p)| set.contains(p));
        }
    }
}

#[cfg(test)]
mod tests;
