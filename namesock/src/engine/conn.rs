//! The engine's sessions: a client's (its path manager) and a server's, with what the
//! driver keeps beside them (the program's socket, the reply to a waiting connect).

use std::net::SocketAddr;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use namesock_resolver::{Record, Target};

use crate::path_manager::PathManager;
use crate::session::Session;
use crate::wire::PathId;

use super::relay::{AppSide, SECRET_LEN};
use super::{ConnectError, Ready};

/// A session this engine opened.
pub struct ClientConn {
    pub pm: PathManager,
    pub target: Target,
    pub port: u16,
    /// The name the program dialled (or the one the GUID's record claims).
    pub peer_name: Option<String>,
    /// The program's connect, until the handshake ends.
    pub reply: Option<SyncSender<Result<Ready, ConnectError>>>,
    /// The secret the program's relay connection presents, and until when it may.
    pub secret: Option<[u8; SECRET_LEN]>,
    pub pair_deadline: Option<Instant>,
    /// The verified record the session started from and when the GNS verified it, until
    /// the handshake ends (then it goes to the engine's record cache).
    pub record: Option<(Record, Instant)>,
    /// The session is counted in the engine's record cache.
    pub cached: bool,
    /// An OPEN session, until OPEN_ACK.
    pub open: Option<OpenAttempt>,
}

/// What a client session that opens with OPEN keeps until OPEN_ACK, for a fallback to HELLO.
#[derive(Debug, Clone, Copy)]
pub struct OpenAttempt {
    /// The ticket's parent session (dropped from the engine's tickets if the OPEN fails).
    pub parent: crate::wire::ConnId,
    /// The connect's own deadline: the HELLO it falls back to has what is left of it.
    pub deadline: Instant,
    /// Where the ticket's session went: a HELLO in place dials it when the connect had no
    /// record (a GUID).
    pub addr: std::net::SocketAddr,
}

/// A session a peer opened to one of our served ports.
pub struct ServerConn {
    pub session: Session,
    /// The paths attached to it (HELLO, then RESUMEs).
    pub paths: Vec<PathId>,
    /// The service port the client asked for.
    pub port: u16,
    /// Where the program serving `port` listens: the session goes there once the client
    /// proved it holds the keys.
    pub deliver_to: SocketAddr,
    /// The local address of the engine's connection to the program (its `accept` sees it).
    pub delivery: Option<SocketAddr>,
    /// Both directions finished and confirmed, or reset: nothing more to relay (the session
    /// still lingers for a late resume).
    pub closed: bool,
}

pub enum Side {
    Client(Box<ClientConn>),
    Server(Box<ServerConn>),
}

pub struct Conn {
    pub side: Side,
    /// The program's socket: a relay connection (client) or the delivery (server).
    pub app: Option<AppSide>,
}

impl Conn {
    pub fn session(&self) -> &Session {
        match &self.side {
            Side::Client(c) => c.pm.session(),
            Side::Server(s) => &s.session,
        }
    }

    /// The program's socket, if paired, beside the session it relays.
    pub fn app_and_session(&mut self) -> Option<(&mut AppSide, &mut Session)> {
        let session = match &mut self.side {
            Side::Client(c) => c.pm.session_mut(),
            Side::Server(s) => &mut s.session,
        };
        Some((self.app.as_mut()?, session))
    }

    pub fn session_mut(&mut self) -> &mut Session {
        match &mut self.side {
            Side::Client(c) => c.pm.session_mut(),
            Side::Server(s) => &mut s.session,
        }
    }

    pub fn client(&mut self) -> Option<&mut ClientConn> {
        match &mut self.side {
            Side::Client(c) => Some(c),
            Side::Server(_) => None,
        }
    }

    pub fn server(&mut self) -> Option<&mut ServerConn> {
        match &mut self.side {
            Side::Server(s) => Some(s),
            Side::Client(_) => None,
        }
    }

    /// The paths of this session (a client's include dials in progress).
    pub fn path_ids(&self) -> Vec<PathId> {
        match &self.side {
            Side::Client(c) => c.pm.paths().iter().map(|p| p.id).collect(),
            Side::Server(s) => s.paths.clone(),
        }
    }

    /// Closed both ways, reset or failed: nothing more to relay or dial.
    pub fn is_closed(&self) -> bool {
        match &self.side {
            Side::Client(c) => c.pm.is_closed(),
            Side::Server(s) => s.closed,
        }
    }

    /// When this session next needs the engine.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.side {
            Side::Client(c) => [c.pm.poll_timeout(), c.pair_deadline]
                .into_iter()
                .flatten()
                .min(),
            Side::Server(s) => s.session.poll_timeout(),
        }
    }
}
