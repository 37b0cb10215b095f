//! The handshake and resume, both sides: the client's HELLO and the server's answer, the keys
//! they agree (see `keys`), the client's proof, REFUSE, and RESUME sealed with the session's
//! resume key. The session's stream logic is in `mod.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Guid, Keypair, Signature};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use super::keys::open_tag;
use super::keys::{Ephemeral, SessionKeys};
use super::path::{Path, PathState};
use super::{
    EarlyData, Event, HandshakeError, ResumeError, Role, Session, SessionConfig, SessionError,
    auth, window_of,
};
use crate::ticket::{OpenTicket, Verified};
use crate::wire::{
    ConnId, Frame, Hello, HelloAck, OPEN_BODY_LEN, Open, OpenAck, PathId, Payload,
    RESUME_SEALED_LEN, Refuse, Resume, ResumeAck, ResumeBody, TAG_LEN,
};

impl Session {
    /// A client session to `target`'s service `port`. `conn_id` must be a fresh random
    /// value. The HELLO goes out on the first path the engine opens.
    pub fn client(
        cfg: SessionConfig,
        key: Arc<Keypair>,
        target: Guid,
        port: u16,
        conn_id: ConnId,
        now: Instant,
    ) -> Session {
        let mut s = Session::new(Role::Client, cfg, key, conn_id, target, now);
        s.connecting = Some(port);
        s.next_conn_id = Some(conn_id);
        s.no_live_since = Some(now);
        s
    }

    /// A client session to `port` of the server `ticket` names, opened with one OPEN frame
    /// (no handshake) on the first path the engine opens. `conn_id` must be a fresh random
    /// value.
    pub fn client_open(
        cfg: SessionConfig,
        key: Arc<Keypair>,
        ticket: OpenTicket,
        port: u16,
        conn_id: ConnId,
        now: Instant,
    ) -> Session {
        let mut s = Session::new(Role::Client, cfg, key, conn_id, ticket.server.guid(), now);
        s.connecting = Some(port);
        s.by_open = true;
        s.origin = ticket.origin;
        // Early data stays within the server's window as the parent knew it (OPEN_ACK
        // announces the child's).
        s.send.set_peer_window(ticket.peer_window);
        s.opening = Some(Box::new(ticket));
        s.no_live_since = Some(now);
        s
    }

    /// Client: the path that carries the OPEN, with the child session's keys.
    pub(super) fn new_open(&mut self, now: Instant, path: PathId, ticket: &OpenTicket) -> Path {
        let port = self.connecting.unwrap_or_default();
        let mut open = Open {
            conn_id: self.conn_id,
            parent: ticket.parent,
            child: ticket.child,
            port,
            window: window_of(&self.cfg),
            tag: [0; TAG_LEN],
        };
        let mut aad = Vec::with_capacity(OPEN_BODY_LEN);
        open.encode_clear_part(&mut aad);
        open.tag = open_tag(&ticket.secret, ticket.child, &aad);
        let keys = SessionKeys::from_open(&ticket.secret, &open.body());
        self.peer_expected = Some(ticket.server);
        let echo = echo_of(&Frame::<Vec<u8>>::Open(open.clone()));
        let mut p = Path::new(path, PathState::Handshaking, now, Frame::Open(open));
        p.echo = Some(echo);
        p.open = true;
        // The parent's round trip until this path measures its own: the OPEN_ACK is awaited
        // (the suspicion delay, three round trips at least) as long as that server needs.
        p.rtt = ticket.rtt;
        p.keys = Some(keys.path(true, 0));
        self.keys = Some(keys);
        p
    }

    /// Server: the session an OPEN verified with its parent's ticket (`verified`) makes,
    /// OPEN_ACK queued (sealed) on `path`. The OPEN proved the client holds the ticket, so the
    /// session is proven at once (`Event::Established` is queued).
    pub(super) fn server_open(
        cfg: SessionConfig,
        key: Arc<Keypair>,
        open: &Open,
        verified: &Verified,
        path: PathId,
        now: Instant,
    ) -> Session {
        let guid = key.guid();
        let mut s = Session::new(Role::Server, cfg, key, open.conn_id, guid, now);
        let keys = SessionKeys::from_open(&verified.secret, &open.body());
        let ack = OpenAck {
            window: window_of(&s.cfg),
            linger_ms: u32::try_from(s.cfg.linger.as_millis()).unwrap_or(u32::MAX),
        };
        s.by_open = true;
        s.origin = verified.origin;
        s.peer = Some(verified.client);
        s.send.set_peer_window(open.window);
        let mut p = Path::new(path, PathState::Live, now, Frame::OpenAck(ack));
        p.keys = Some(keys.path(false, 0));
        s.keys = Some(keys);
        s.add_live_path(p);
        s.prove();
        s
    }

    /// Client: OPEN_ACK (it opened with the child keys, so the server holds the ticket).
    pub(super) fn on_open_ack(&mut self, i: usize, a: &OpenAck) -> Result<(), SessionError> {
        let Some(server) = self
            .peer_expected
            .filter(|_| self.paths[i].open && self.connecting.is_some())
        else {
            return Err(SessionError::UnexpectedFrame {
                frame: "OPEN_ACK",
                why: "no OPEN outstanding on this path",
            });
        };
        self.paths[i].open = false;
        self.connecting = None;
        self.peer = Some(server);
        self.send.set_peer_window(a.window);
        self.linger = self
            .cfg
            .linger
            .min(Duration::from_millis(u64::from(a.linger_ms)));
        let early_sent = self.send.next();
        self.make_live(i);
        // Early data went out in order on this very path: it is not sent again.
        self.send.keep_early(early_sent);
        self.events.push_back(Event::Established { peer: server });
        Ok(())
    }

    /// Client: a new HELLO for `port`, with a fresh connection ID and ephemeral key, signed.
    pub(super) fn new_hello(&mut self, port: u16) -> (Hello, Ephemeral) {
        let conn_id = self.next_conn_id.take().unwrap_or_else(rand::random);
        let ephemeral = Ephemeral::generate();
        let mut hello = Hello {
            conn_id,
            client_key: self.key.public(),
            target: self.server_guid,
            port,
            ephemeral: ephemeral.public(),
            window: window_of(&self.cfg),
            signature: Signature([0; 64]),
        };
        hello.signature = self.key.sign(&auth::hello(&hello));
        (hello, ephemeral)
    }

    /// The server session for a verified HELLO, with HELLO_ACK queued on `path`: a fresh
    /// ephemeral key, the keys agreed, the transcript signed. `Err`: the client's ephemeral
    /// key is unusable.
    pub(super) fn server(
        cfg: SessionConfig,
        key: Arc<Keypair>,
        hello: &Hello,
        path: PathId,
        now: Instant,
    ) -> Result<Session, HandshakeError> {
        let guid = key.guid();
        let mut s = Session::new(Role::Server, cfg, key, hello.conn_id, guid, now);
        let ephemeral = Ephemeral::generate();
        let mut ack = HelloAck {
            conn_id: hello.conn_id,
            server_key: s.key.public(),
            ephemeral: ephemeral.public(),
            window: window_of(&s.cfg),
            linger_ms: u32::try_from(s.cfg.linger.as_millis()).unwrap_or(u32::MAX),
            signature: Signature([0; 64]),
        };
        ack.signature = s.key.sign(&auth::hello_ack(hello, &ack));
        let keys = ephemeral
            .agree(&hello.ephemeral, &auth::keys(hello, &ack))
            .map_err(|_| HandshakeError::BadEphemeral)?;
        s.peer = Some(hello.client_key);
        s.send.set_peer_window(hello.window);
        let mut p = Path::new(path, PathState::Live, now, Frame::HelloAck(ack));
        p.keys = Some(keys.path(false, 0));
        s.keys = Some(keys);
        s.add_live_path(p);
        Ok(s)
    }

    /// Server: whether the client proved it holds the session keys (see `Event::Established`).
    pub fn is_proven(&self) -> bool {
        self.proven
    }

    pub(super) fn prove(&mut self) {
        if !self.proven {
            self.proven = true;
            if let Some(peer) = self.peer {
                self.events.push_back(Event::Established { peer });
            }
        }
    }

    pub(super) fn on_hello_ack(&mut self, i: usize, a: &HelloAck) -> Result<(), SessionError> {
        let Some((hello, _)) = self.paths[i]
            .hello
            .as_deref()
            .filter(|_| self.connecting.is_some())
        else {
            return Err(SessionError::UnexpectedFrame {
                frame: "HELLO_ACK",
                why: "no HELLO outstanding on this path",
            });
        };
        if a.conn_id != hello.conn_id {
            return Err(HandshakeError::WrongConnection.into());
        }
        // The server must prove the GUID we dialled: anything else is an impostor, and
        // loses its path only (unauthenticated bytes never end a session).
        if !self.server_guid.is_certified_by(&a.server_key) {
            warn!(server = %a.server_key.guid(), "HELLO_ACK from a key that is not the GUID dialled");
            return Err(HandshakeError::KeyMismatch.into());
        }
        a.server_key
            .verify(&auth::hello_ack(hello, a), &a.signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        let transcript = auth::keys(hello, a);
        let Some((hello, ephemeral)) = self.paths[i].hello.take().map(|b| *b) else {
            unreachable!("checked above");
        };
        let keys = ephemeral
            .agree(&a.ephemeral, &transcript)
            .map_err(|_| HandshakeError::BadEphemeral)?;
        self.conn_id = hello.conn_id;
        self.connecting = None;
        // The other HELLOs in flight lose: their paths go (their servers' sessions end
        // unproven).
        let losers: Vec<PathId> = self
            .paths
            .iter()
            .filter(|p| p.hello.is_some())
            .map(|p| p.id)
            .collect();
        let (me, now) = (self.paths[i].id, self.paths[i].last_recv);
        for id in losers {
            self.lose_path(now, id, true);
        }
        let i = self.index(me).expect("the answered path stays");
        self.paths[i].keys = Some(keys.path(true, 0));
        // The first sealed record proves to the server that we hold the keys: send one now,
        // even if the program has nothing to say yet.
        self.paths[i].ping_due = true;
        self.keys = Some(keys);
        self.peer = Some(a.server_key);
        self.send.set_peer_window(a.window);
        self.linger = self
            .cfg
            .linger
            .min(Duration::from_millis(u64::from(a.linger_ms)));
        self.make_live(i);
        self.events
            .push_back(Event::Established { peer: a.server_key });
        Ok(())
    }

    pub(super) fn on_resume_ack(&mut self, i: usize, a: &ResumeAck) -> Result<(), SessionError> {
        // It opened with this path's keys, so the server sent it on this path.
        let Some(r) = self.paths[i].resume.as_ref() else {
            return Err(SessionError::UnexpectedFrame {
                frame: "RESUME_ACK",
                why: "no RESUME outstanding on this path",
            });
        };
        if a.path_id != r.path_id {
            return Err(HandshakeError::WrongConnection.into());
        }
        let sent_received = r.received;
        self.send.on_received(a.received)?;
        self.confirmed = self.confirmed.max(sent_received);
        self.paths[i].resume = None;
        self.make_live(i);
        Ok(())
    }

    /// Client: a REFUSE answering this path's HELLO or RESUME. Acted on only if it is
    /// signed by the server's key (the GUID dialled, or the key of the HELLO_ACK) and names
    /// exactly the frame this path sent; anything else loses the path only.
    pub(super) fn on_refuse(&mut self, i: usize, r: &Refuse) -> Result<(), SessionError> {
        let p = &self.paths[i];
        let key_ok = match self.peer {
            Some(peer) => peer == r.server_key,
            None => self.server_guid.is_certified_by(&r.server_key),
        };
        let conn_id = p.hello.as_deref().map_or(self.conn_id, |(h, _)| h.conn_id);
        if r.conn_id != conn_id || p.echo != Some(r.echo) || !key_ok {
            return Err(HandshakeError::WrongConnection.into());
        }
        r.server_key
            .verify(&auth::refuse(r), &r.signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        debug!(reason = ?r.reason, "the server refused the session");
        if self.early == EarlyData::Sent && p.open {
            self.early = EarlyData::Refused;
        }
        self.reset(r.reason, false, true);
        Ok(())
    }

    /// Server: checks a RESUME (connection, sealed by this session's client with the
    /// session's resume key, freshness above every accepted one, a plausible `received`)
    /// without changing anything; returns its sealed fields.
    pub fn verify_resume(&self, resume: &Resume) -> Result<ResumeBody, ResumeError> {
        let Some(keys) = self.keys.as_ref().filter(|_| self.role == Role::Server) else {
            return Err(ResumeError::NotServer);
        };
        if resume.conn_id != self.conn_id {
            return Err(ResumeError::WrongConnection);
        }
        if self.is_terminal() {
            return Err(ResumeError::Finished);
        }
        let body = open_resume(keys, resume).ok_or(ResumeError::Unauthentic)?;
        if resume.freshness <= self.freshness {
            return Err(ResumeError::Replayed {
                freshness: resume.freshness,
                last: self.freshness,
            });
        }
        if body.received > self.send.high() {
            return Err(ResumeError::ReceivedBeyondSent {
                received: body.received,
                sent: self.send.high(),
            });
        }
        Ok(body)
    }

    /// Server: attaches `path` for a RESUME that passed `verify_resume` (checked again here,
    /// so an unverified one changes nothing), makes it the active path and queues RESUME_ACK,
    /// sealed with the keys of path number `freshness`.
    pub fn attach_resume(&mut self, now: Instant, resume: &Resume, path: PathId) {
        let body = match self.verify_resume(resume) {
            Ok(body) => body,
            Err(e) => {
                warn!(path, error = %e, "attach_resume without a valid RESUME ignored");
                return;
            }
        };
        if let Err(e) = self.send.on_received(body.received) {
            warn!(path, error = %e, "RESUME ignored");
            return;
        }
        self.freshness = resume.freshness;
        self.detach(path);
        let ack = ResumeAck {
            path_id: body.path_id,
            received: self.recv.received(),
        };
        let mut p = Path::new(path, PathState::Live, now, Frame::ResumeAck(ack));
        p.keys = self.keys.as_ref().map(|k| k.path(false, resume.freshness));
        self.add_live_path(p);
        self.prove();
        self.enforce_path_limit(now);
        self.after_input();
    }
}

/// Client: a RESUME for path number `freshness`, its body sealed with the resume key.
pub(super) fn seal_resume(
    keys: &SessionKeys,
    conn_id: ConnId,
    freshness: u64,
    body: ResumeBody,
) -> Resume {
    let mut resume = Resume {
        conn_id,
        freshness,
        sealed: [0; RESUME_SEALED_LEN],
    };
    let mut aad = Vec::with_capacity(32);
    resume.encode_clear_part(&mut aad);
    let (plain, tag) = resume.sealed.split_at_mut(RESUME_SEALED_LEN - TAG_LEN);
    plain[..4].copy_from_slice(&body.path_id.to_be_bytes());
    plain[4..].copy_from_slice(&body.received.to_be_bytes());
    tag.copy_from_slice(&keys.seal_resume(freshness, &aad, plain));
    resume
}

/// Server: a RESUME's sealed fields, if they open with the session's resume key.
fn open_resume(keys: &SessionKeys, resume: &Resume) -> Option<ResumeBody> {
    let mut aad = Vec::with_capacity(32);
    resume.encode_clear_part(&mut aad);
    let mut sealed = resume.sealed;
    let plain = keys.open_resume(resume.freshness, &aad, &mut sealed).ok()?;
    Some(ResumeBody {
        path_id: u32::from_be_bytes(plain[..4].try_into().ok()?),
        received: u64::from_be_bytes(plain[4..12].try_into().ok()?),
    })
}

/// What a REFUSE names: SHA-256 of the HELLO or RESUME as encoded on the wire.
pub(super) fn echo_of<P: Payload>(first: &Frame<P>) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(256);
    first.encode(&mut bytes);
    Sha256::digest(&bytes).into()
}
