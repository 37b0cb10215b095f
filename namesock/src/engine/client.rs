//! The client side of the engine: the first GNS lookup, carrying out the path manager's
//! actions (dials, closes, lookups), answering the program's connect, and pairing the
//! program's relay connection with its session.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use namesock_identity::Guid;
use namesock_resolver::{GnsError, Record, Target};

use crate::endpoint::ConnKey;
use crate::path_manager::{Action, ConnectFailure, DialError, PathManager};
use crate::session::Session;
use crate::shared_lookup::Ask;
use crate::ticket::OpenTicket;
use crate::wire::{ConnId, PathId};

use super::conn::{ClientConn, Conn, OpenAttempt, Side};
use super::event_loop::{Engine, Io, RELAY_V4};
use super::path::{FlowPath, PathState};
use super::record_watch::record_locators;
use super::relay::{AppSide, SECRET_LEN};
use super::{Command, ConnectError, Ready, SessionInfo, sys};

/// A program has this long to attach its fd to the relay after `connect_fd` got its answer.
const PAIR_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on relay connections that have not yet sent their secret.
const MAX_PENDING_APPS: usize = 256;
/// A connect with a ticket is answered at its OPEN (early data) only beside at most this many
/// sessions to the same server that the program still holds (`held_sessions_to`; those it
/// closed, still closing, do not count): a server refuses a peer past its per-peer limit (64
/// by default), and a refusal after the answer could only reset the program's connection. A
/// server allowing one session per peer, or at its total limit, can still refuse an answered
/// connect: the program sees a reset.
const EARLY_BESIDE_OPEN_SESSIONS: usize = 1;

/// A connect request waiting for its GNS answer (the session needs the peer's GUID).
pub(super) struct Connecting {
    target: Target,
    port: u16,
    reply: SyncSender<Result<Ready, ConnectError>>,
    pub(super) deadline: Instant,
    /// A ticket may be used (false: this connect falls back from a failed OPEN).
    may_open: bool,
}

/// A relay connection from the program that has not yet said which session it is for.
pub(super) struct PendingApp {
    stream: TcpStream,
    got: [u8; SECRET_LEN],
    len: usize,
    since: Instant,
}

fn connect_error(failure: ConnectFailure, target: &Target, port: u16, guid: Guid) -> ConnectError {
    match failure {
        ConnectFailure::Denied(reason) => ConnectError::Denied { guid, reason },
        ConnectFailure::Refused => ConnectError::Refused {
            target: target.to_string(),
            port,
        },
        ConnectFailure::TimedOut => ConnectError::TimedOut,
        ConnectFailure::HostUnreachable => ConnectError::HostUnreachable,
        ConnectFailure::NetUnreachable => ConnectError::NetUnreachable,
        ConnectFailure::Reset(reason) => ConnectError::Reset(reason),
    }
}

impl Engine {
    pub(super) fn start_connect(
        &mut self,
        target: Target,
        port: u16,
        reply: SyncSender<Result<Ready, ConnectError>>,
        now: Instant,
    ) {
        let req = Connecting {
            target,
            port,
            reply,
            deadline: now + self.cfg.connect_timeout(),
            may_open: true,
        };
        self.connect(req, now);
    }

    fn connect(&mut self, req: Connecting, now: Instant) {
        let key = self.endpoint.new_key();
        // A GUID this engine holds a ticket of: no record needed, the OPEN goes where the
        // ticket's session went (a name is looked up, or taken from the record cache, first:
        // the name may have moved to another GUID).
        if let Target::Guid(guid) = &req.target
            && req.may_open
            && let Some(ticket) = self.take_ticket(now, guid, req.port)
        {
            self.start_open(key, req, ticket, None, now);
            return;
        }
        // A peer this engine has a live session with: its verified record is at hand.
        let unix_now = namesock_resolver::record::unix_now();
        let cached = self
            .shared
            .records
            .lock()
            .lookup(&req.target, now, unix_now);
        if let Some((rec, verified)) = cached {
            tracing::debug!(target = %req.target, seq = rec.seq, "record of a live session's peer: no lookup");
            self.first_record(key, req, Ok((rec, verified)), now);
            return;
        }
        // The program looked the name up itself just before (getaddrinfo under the preload).
        if let Some((rec, verified)) =
            crate::synthetic::take_recent_lookup(&req.target, now, unix_now)
        {
            tracing::debug!(target = %req.target, seq = rec.seq, "record the program's own lookup verified: no lookup");
            self.first_record(key, req, Ok((rec, verified)), now);
            return;
        }
        // The session is created once the record (and so the peer's GUID) is known; until
        // then the request waits in `connecting`.
        self.resolve(key, &req.target);
        self.connecting.insert(key, req);
    }

    /// A connect's first lookup, on a short-lived thread.
    fn resolve(&self, key: ConnKey, target: &Target) {
        self.lookup_thread(target, move |result| Command::Resolved {
            conn: key,
            result: Box::new(result),
        });
    }

    /// An established session asks where its peer is now: a lookup of the same target in
    /// flight, or the answer to one put within `shared_lookup::SHARED_FOR`, answers it too.
    fn reresolve(&mut self, key: ConnKey, target: &Target, now: Instant) {
        let ask = self.lookups.ask(target, key, now);
        tracing::debug!(%target, "a session asks where its peer is");
        match ask {
            Ask::Wait => {}
            Ask::Answer(record) => self.take_lookup(key, record.as_ref(), now),
            Ask::Start => {
                tracing::debug!(%target, "looking the peer up for its sessions");
                let asked = target.clone();
                self.lookup_thread(target, move |result| Command::Reresolved {
                    target: asked,
                    result: Box::new(result),
                });
            }
        }
    }

    /// Session `key` takes a lookup's answer (`None`: the GNS could not say).
    fn take_lookup(&mut self, key: ConnKey, record: Option<&Record>, now: Instant) {
        if let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) {
            // A port no longer in the record has no locators: the session lingers.
            let found = record.map(|rec| record_locators(rec, client.port));
            client.pm.resolved(now, found, &self.local_addrs);
            self.dirty.insert(key);
        }
    }

    /// Asks the GNS for `target`'s record on a short-lived thread; `answer` makes the command
    /// that brings the result back to the loop.
    fn lookup_thread(
        &self,
        target: &Target,
        answer: impl FnOnce(Result<Record, GnsError>) -> Command + Send + 'static,
    ) {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        let target = target.clone();
        let spawned = std::thread::Builder::new()
            .name("namesock-resolve".into())
            .spawn(move || {
                let result = shared.gns().and_then(|g| g.resolve(&target));
                if tx.send(answer(result)).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a resolver thread");
        }
    }

    pub(super) fn on_resolved(
        &mut self,
        key: ConnKey,
        result: Result<Record, GnsError>,
        now: Instant,
    ) {
        if let Some(req) = self.connecting.remove(&key) {
            self.first_record(key, req, result.map(|rec| (rec, now)), now);
        }
    }

    /// The answer to sessions' lookup of `target`: each takes the locators for its port.
    pub(super) fn on_reresolved(
        &mut self,
        target: Target,
        result: Result<Record, GnsError>,
        now: Instant,
    ) {
        let record = match result {
            Ok(rec) => {
                self.shared
                    .records
                    .lock()
                    .refreshed(&target, rec.clone(), now);
                Some(rec)
            }
            Err(e) => {
                tracing::debug!(error = %e, "re-resolve failed");
                self.shared.records.lock().forget(&target);
                None
            }
        };
        for key in self.lookups.answered(&target, record.clone()) {
            self.take_lookup(key, record.as_ref(), now);
        }
    }

    /// A ticket for a connect to `port` of `server`: this engine's own, else the one an
    /// earlier process of this user handed on (claimed: no other process can use it now).
    fn take_ticket(&mut self, now: Instant, server: &Guid, port: u16) -> Option<OpenTicket> {
        if let Some(ticket) = self.tickets.take(now, server, port) {
            return Some(ticket);
        }
        let store = self.ticket_store.as_ref()?;
        match store.claim(server, port) {
            Ok(Some(held)) if self.tickets.adopt(now, &held) => {
                tracing::debug!(%server, port, child = held.next_child, "a ticket another process handed on");
                self.counters.tickets.adopted += 1;
                self.tickets.take(now, server, port)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("ticket not used: {e}");
                None
            }
        }
    }

    /// At the process's exit: its live tickets go to the next process of this user.
    pub(super) fn hand_over_tickets(&mut self, now: Instant) {
        let Some(store) = &self.ticket_store else {
            return;
        };
        let tickets = self.tickets.hand_over(now);
        for ticket in &tickets {
            match store.keep(ticket) {
                Ok(()) => {
                    tracing::debug!(server = %ticket.server.guid(), port = ticket.port, child = ticket.next_child, "ticket handed on")
                }
                Err(e) => tracing::warn!("ticket not handed on: {e}"),
            }
        }
        if !tickets.is_empty() {
            store.sweep(std::time::SystemTime::now());
        }
    }

    /// The first answer for a connect (the record and when the GNS verified it): the session
    /// and its path manager start.
    fn first_record(
        &mut self,
        key: ConnKey,
        req: Connecting,
        result: Result<(Record, Instant), GnsError>,
        now: Instant,
    ) {
        let (rec, verified) = match result {
            Ok(found) => found,
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
        // A ticket whose address the record no longer lists (the server moved) is not used.
        if req.may_open
            && let Some(locators) = rec.locators_for(req.port)
            && let Some(ticket) = self
                .take_ticket(now, &rec.guid, req.port)
                .filter(|t| locators.contains(&t.addr))
        {
            self.start_open(key, req, ticket, Some((rec, verified)), now);
            return;
        }
        let Some(locators) = rec.locators_for(req.port) else {
            tracing::debug!(target = %req.target, port = req.port, "the record does not list the port");
            let _ = req.reply.send(Err(ConnectError::Refused {
                target: req.target.to_string(),
                port: req.port,
            }));
            return;
        };
        tracing::debug!(target = %req.target, port = req.port, ?locators, relays = ?rec.relays, "connecting");
        let peer = (rec.seq, (locators, rec.relays.clone()));
        let pm = self.hello_manager(rec.guid, req.port, peer, req.deadline, now);
        self.insert_client(key, req, pm, Some((rec, verified)), None);
    }

    /// A connect to a server and port this engine holds a ticket of: the session opens with
    /// OPEN on one path to where the ticket's session went (`record`: the verified record and
    /// when it was verified, when the connect had one at hand).
    fn start_open(
        &mut self,
        key: ConnKey,
        req: Connecting,
        ticket: OpenTicket,
        record: Option<(Record, Instant)>,
        now: Instant,
    ) {
        let conn_id: ConnId = rand::random();
        tracing::debug!(target = %req.target, port = req.port, addr = %ticket.addr, child = ticket.child, "connecting with OPEN (ticket)");
        self.counters.tickets.opens_sent += 1;
        let parent = ticket.parent;
        let (addr, parent_rtt) = (ticket.addr, ticket.rtt);
        let ticket_server = ticket.server.guid();
        let session = Session::client_open(
            self.session_cfg,
            self.client_key.clone(),
            ticket,
            req.port,
            conn_id,
            now,
        );
        let pm = PathManager::new_open(
            now,
            session,
            record.as_ref().map_or(0, |(r, _)| r.seq),
            (addr, parent_rtt),
            req.deadline,
            self.cfg.loopback_locators(),
        );
        let open = Some(OpenAttempt {
            parent,
            deadline: req.deadline,
            addr,
        });
        // A failed OPEN can fall back to HELLO in place (to the record's locators, or to the
        // ticket's address for a GUID), so the program's connect is answered now: it pairs
        // while the OPEN is on its way, and its first bytes follow the OPEN (early data). Not
        // beside other sessions the program holds to the server: this one may be past the
        // server's per-peer limit, and only an unanswered connect can report that
        // (ECONNREFUSED).
        let early = self.held_sessions_to(&ticket_server) <= EARLY_BESIDE_OPEN_SESSIONS;
        let port = req.port;
        self.insert_client(key, req, pm, record, open);
        if early && let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) {
            let info = SessionInfo {
                peer_guid: client.pm.session().server_guid(),
                peer_name: client.peer_name.clone(),
                peer_addr: addr,
                service_port: port,
            };
            tracing::debug!(peer = %info.peer_guid, "connect answered at the OPEN: early data");
            self.counters.tickets.opens_early += 1;
            self.answer_connect(key, info, now);
        }
    }

    /// This engine's client sessions to `server` that its program still holds: neither
    /// closed both ways, nor reset, nor failed, nor closed for writing. The server counts
    /// the last kind against its per-peer limit too, but only until their close completes,
    /// a round trip later; a program that connects, asks, reads and closes again and again
    /// has one or two of them at any time, far below the limit (64 by default).
    fn held_sessions_to(&self, server: &Guid) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.side, Side::Client(_)) && !c.is_closed())
            .filter(|c| c.session().server_guid() == *server && !c.session().app_write_shut())
            .count()
    }

    /// Files the client session `pm` made for `req` (from `record`, when the connect had
    /// one; `open`: the ticket's parent and the connect's deadline, for an OPEN).
    fn insert_client(
        &mut self,
        key: ConnKey,
        req: Connecting,
        pm: PathManager,
        record: Option<(Record, Instant)>,
        open: Option<OpenAttempt>,
    ) {
        let peer_name = match (&req.target, &record) {
            (Target::Name(n), _) => Some(n.clone()),
            (Target::Guid(_), rec) => rec.as_ref().and_then(|(r, _)| r.names.first().cloned()),
        };
        self.make_room_for_a_session();
        let client = ClientConn {
            pm,
            target: req.target,
            port: req.port,
            peer_name,
            reply: Some(req.reply),
            secret: None,
            pair_deadline: None,
            record,
            cached: false,
            open,
        };
        self.conns.insert(
            key,
            Conn {
                side: Side::Client(Box::new(client)),
                app: None,
            },
        );
        self.dirty.insert(key);
        // From now on a move the server publishes is followed at once.
        self.ensure_record_watch();
    }

    /// Connects whose first lookup did not answer in time.
    pub(super) fn expire_connects(&mut self, now: Instant) {
        let expired: Vec<ConnKey> = self
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
    }

    /// Carries out the path manager's actions. Returns whether there were any (or session
    /// events).
    pub(super) fn client_actions(&mut self, key: ConnKey, now: Instant) -> bool {
        let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
            return false;
        };
        let mut any = client.pm.process(now, &self.local_addrs);
        loop {
            let local = &self.local_addrs;
            let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
                return any;
            };
            let Some(action) = client.pm.poll_action(now, local) else {
                return any;
            };
            any = true;
            match action {
                Action::Dial {
                    path,
                    remote,
                    local,
                } => {
                    // An established session dialling again lost its path or follows the
                    // server elsewhere (MOVED, a newer record): new connects look it up.
                    if client.cached {
                        self.shared.records.lock().forget(&client.target);
                    }
                    // Not for a standby path from another local address: the session is
                    // fine, and a multi-homed host would never keep a spare.
                    if !client.pm.is_connecting() && local.is_none() {
                        self.drop_spares("an established session dials again");
                    }
                    self.dial(key, path, remote, local, now);
                }
                Action::Close { path } => {
                    self.drop_path(path);
                }
                Action::Resolve => {
                    let target = client.target.clone();
                    self.reresolve(key, &target, now);
                }
                Action::Established { peer, remote } => {
                    let info = SessionInfo {
                        peer_guid: peer.guid(),
                        peer_name: client.peer_name.clone(),
                        peer_addr: remote,
                        service_port: client.port,
                    };
                    self.established(key, info, now);
                }
                Action::Failed(failure) => {
                    let guid = client.pm.session().server_guid();
                    let err = connect_error(failure, &client.target, client.port, guid);
                    if matches!(err, ConnectError::Denied { .. }) {
                        tracing::warn!(peer = %client.target, port = client.port, "{err}");
                    } else {
                        tracing::debug!(error = %err, "connect failed");
                    }
                    let answered = match client.reply.take() {
                        Some(r) => {
                            let _ = r.send(Err(err));
                            false
                        }
                        None => true,
                    };
                    // Whatever the record said did not work: the next connect looks again.
                    self.shared.records.lock().forget(&client.target);
                    if answered {
                        // Answered at an OPEN that then failed: the program sees a reset.
                        self.reset_app(key);
                    }
                    self.remove_conn(key);
                    return true;
                }
                Action::Reset(reason) => {
                    tracing::debug!(?reason, "session reset: the program sees ECONNRESET");
                    self.reset_app(key);
                }
                Action::OpenFailed => {
                    // The ticket is spent; the program's connect goes on with a HELLO.
                    let guid = client.pm.session().server_guid();
                    if let Some(open) = client.open {
                        self.tickets.forget(&guid, client.port, &open.parent);
                    }
                    self.counters.tickets.opens_fell_back += 1;
                    if client.reply.is_none() {
                        self.open_failed_after_answer(key, now);
                        return true;
                    }
                    let retry = match (client.reply.take(), client.open.take()) {
                        (Some(reply), Some(open)) => Some(Connecting {
                            target: client.target.clone(),
                            port: client.port,
                            reply,
                            deadline: open.deadline,
                            may_open: false,
                        }),
                        _ => None,
                    };
                    tracing::debug!(peer = %guid, "OPEN failed: connecting with HELLO");
                    self.remove_conn(key);
                    if let Some(req) = retry {
                        self.connect(req, now);
                    }
                    return true;
                }
            }
        }
    }

    /// An OPEN whose connect was answered at once failed. If the server cannot have taken
    /// any of the program's bytes (none went out, or its signed REFUSE says so), the session
    /// goes on in place with a HELLO (to the record's locators, or without a record to where
    /// the ticket's session went) and sends them all; otherwise a second session could
    /// deliver them twice, so the program sees a reset, as a TCP connection whose server died
    /// mid-request.
    fn open_failed_after_answer(&mut self, key: ConnKey, now: Instant) {
        let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
            return;
        };
        let guid = client.pm.session().server_guid();
        let plan = match client.open.take() {
            Some(open) if !client.pm.session().early_data_may_have_arrived() => {
                let peer = match &client.record {
                    Some((rec, _)) => rec
                        .locators_for(client.port)
                        .map(|l| (rec.seq, (l, rec.relays.clone()))),
                    None => Some((0, (vec![open.addr], Vec::new()))),
                };
                peer.map(|peer| (peer, client.port, open.deadline))
            }
            _ => None,
        };
        let fallback = plan.map(|((seq, peer), port, deadline)| {
            self.hello_manager(guid, port, (seq, peer), deadline, now)
        });
        let Some(pm) = fallback else {
            tracing::debug!("OPEN failed after early data: the program sees a reset");
            self.counters.tickets.early_reset += 1;
            self.reset_app(key);
            self.remove_conn(key);
            return;
        };
        let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
            return;
        };
        tracing::debug!(peer = %client.target, "OPEN failed: connecting with HELLO");
        tracing::debug!(target = %client.target, port = client.port, "connecting");
        let mut failed = std::mem::replace(&mut client.pm, pm);
        client.pm.session_mut().adopt_stream(failed.session_mut());
        self.dirty.insert(key);
    }

    /// A client session that opens with HELLO to `port` of `guid`, and the path manager that
    /// dials `peer`'s locators and relays (from the record with sequence number `seq`).
    fn hello_manager(
        &self,
        guid: Guid,
        port: u16,
        (seq, peer): (u64, (Vec<SocketAddr>, Vec<SocketAddr>)),
        deadline: Instant,
        now: Instant,
    ) -> PathManager {
        let session = Session::client(
            self.session_cfg,
            self.client_key.clone(),
            guid,
            port,
            rand::random(),
            now,
        );
        PathManager::new(
            now,
            session,
            seq,
            peer,
            deadline,
            self.cfg.loopback_locators(),
        )
    }

    fn dial(
        &mut self,
        key: ConnKey,
        path: PathId,
        remote: SocketAddr,
        local: Option<std::net::IpAddr>,
        now: Instant,
    ) {
        let relay = self
            .conns
            .get_mut(&key)
            .and_then(Conn::client)
            .is_some_and(|c| c.pm.path(path).is_some_and(|p| p.relay));
        if local.is_none()
            && !relay
            && let Some((token, stream)) = self.take_spare(remote, now)
        {
            tracing::debug!(%remote, path, "dial answered by a spare path");
            let connected = stream.peer_addr().is_ok();
            let mut fp = FlowPath::new(stream, token, remote, PathState::Connecting);
            fp.conn = Some(key);
            self.paths.insert(path, fp);
            self.io.insert(token, Io::Path(path));
            // Still connecting: its completion comes as any dial's does.
            if connected {
                self.path_connected(path, now);
            }
            return;
        }
        let token = self.token();
        match sys::dial_registered(
            self.poll.registry(),
            token,
            remote,
            local,
            self.path_tuning(),
        ) {
            Ok(stream) => {
                let mut fp = FlowPath::new(stream, token, remote, PathState::Connecting);
                fp.conn = Some(key);
                self.paths.insert(path, fp);
                self.io.insert(token, Io::Path(path));
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "dial failed at once");
                if let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) {
                    client
                        .pm
                        .dial_failed(now, path, DialError::from_errno(e.raw_os_error()));
                }
            }
        }
    }

    /// A dial connected: the path manager decides what it is for.
    pub(super) fn path_connected(&mut self, pid: PathId, now: Instant) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        fp.state = PathState::Open;
        fp.writable = true;
        // Known since its connect began (the kernel picks the source then), unless that failed.
        if fp.local.is_none() {
            fp.local = fp.stream.local_addr().ok();
        }
        let (Some(key), Some(local)) = (fp.conn, fp.local) else {
            return;
        };
        if let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) {
            // Through a relay: the preamble naming the server goes before HELLO or RESUME.
            if client.pm.path(pid).is_some_and(|p| p.relay) {
                let guid = client.pm.session().server_guid();
                crate::relay::wire::Preamble::Connect { guid }.encode(fp.write_buf());
            }
            client.pm.path_connected(now, pid, local, &self.local_addrs);
        }
        self.dirty.insert(key);
    }

    /// A dial did not connect.
    pub(super) fn dial_failed(&mut self, pid: PathId, e: &io::Error, now: Instant) {
        let Some(fp) = self.drop_path(pid) else {
            return;
        };
        let Some(key) = fp.conn else {
            // A server's dial-back to a relay: it waited for its first frame.
            self.endpoint.path_gone(pid);
            return;
        };
        if let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) {
            client
                .pm
                .dial_failed(now, pid, DialError::from_errno(e.raw_os_error()));
        }
        self.dirty.insert(key);
    }

    /// The handshake succeeded: answer the program's connect with the secret its relay
    /// connection will present.
    fn established(&mut self, key: ConnKey, info: SessionInfo, now: Instant) {
        let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
            return;
        };
        if let Some((rec, verified)) = client.record.take() {
            client.cached =
                self.shared
                    .records
                    .lock()
                    .session_started(&client.target, rec, verified);
        }
        client.open = None;
        // The session's ticket: the next connect to this server and port opens with it. Not
        // for a session through a relay (an OPEN goes straight to the server).
        let relayed = client
            .pm
            .paths()
            .iter()
            .any(|p| p.relay && p.remote == info.peer_addr);
        let direct = info.peer_addr.port() != 0 && !relayed;
        if let Some(ticket) = client.pm.session().ticket()
            && direct
        {
            self.tickets
                .store(now, &ticket, client.port, info.peer_addr);
        }
        tracing::debug!(peer = %info.peer_guid, addr = %info.peer_addr, "session established");
        let addr = info.peer_addr;
        self.answer_connect(key, info, now);
        // The next connect there will not wait for a TCP handshake.
        if direct {
            self.leave_spare(addr);
        }
    }

    /// Answers the program's connect (once) with the secret its relay connection will
    /// present.
    fn answer_connect(&mut self, key: ConnKey, info: SessionInfo, now: Instant) {
        let Some(client) = self.conns.get_mut(&key).and_then(Conn::client) else {
            return;
        };
        let Some(reply) = client.reply.take() else {
            return;
        };
        let secret: [u8; SECRET_LEN] = rand::random();
        if reply.send(Ok(Ready { secret, info })).is_err() {
            client.pm.session_mut().app_abort();
            return;
        }
        client.secret = Some(secret);
        client.pair_deadline = Some(now + PAIR_TIMEOUT);
        self.secrets.insert(secret, key);
    }

    /// The program could not attach its socket: the session goes.
    pub(super) fn abandon(&mut self, secret: &[u8; SECRET_LEN]) {
        if let Some(key) = self.secrets.remove(secret)
            && let Some(c) = self.conns.get_mut(&key)
        {
            c.session_mut().app_abort();
            self.dirty.insert(key);
        }
    }

    // ---------------------------------------------------------------- relay pairing

    pub(super) fn accept_relay(&mut self, which: Token, now: Instant) {
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
                    let id = self.next_pending;
                    self.next_pending += 1;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.io.insert(token, Io::Pending(id));
                    let app = PendingApp {
                        stream,
                        got: [0; SECRET_LEN],
                        len: 0,
                        since: now,
                    };
                    self.pending.insert(id, (token, app));
                    self.on_pending_app(id);
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
    pub(super) fn on_pending_app(&mut self, id: u64) {
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
                if let Some(client) = c.client() {
                    client.pair_deadline = None;
                }
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

    /// When the oldest relay connection that has not presented its secret times out.
    pub(super) fn pending_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|(_, p)| p.since + PAIR_TIMEOUT)
            .min()
    }

    pub(super) fn expire_pending(&mut self, now: Instant) {
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, p))| p.since + PAIR_TIMEOUT <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in stale {
            self.drop_pending(id);
        }
    }
}
