//! The server side of the engine: the engine port, publishing this host's addresses,
//! routing arriving paths through the endpoint, and delivering new sessions to the
//! program's listener.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::net::{TcpListener, TcpStream};
use namesock_identity::Keypair;
use namesock_resolver::{GnsError, Record};

use crate::config::RelayEntry;
use crate::endpoint::{ConnKey, Incoming, Refusal, Refused};
use crate::session::{Event, Session};
use crate::wire::{self, DecodeError, Frame, PathId, VERSION, VERSION_1_REFUSAL};

use super::conn::{Conn, ServerConn, Side};
use super::delivery::DeliveryEntry;
use super::event_loop::{Engine, Io, LISTENER};
use super::path::{FlowPath, PathState, ReadOutcome};
use super::relay::AppSide;
use super::relay_link::{RelayLink, RelayRole, resolve_relay};
use super::service_table::{Entry, Merged, PortConflict, ServiceTable, TableError};
use super::{Command, ServeError, SessionInfo, Shared, sys};

/// Server side state, set up by the first `serve`.
pub(super) struct Server {
    listener: TcpListener,
    pub(super) publisher: Arc<Publisher>,
    /// The service ports this process serves (what its entry in the table lists), and where
    /// their sessions are delivered. The endpoint serves a port once the table gave it to us.
    ports: BTreeMap<u16, SocketAddr>,
    pub(super) key: Arc<Keypair>,
    /// Control connections to the relays in `NAMESOCK_RELAY`.
    pub(super) links: Vec<RelayLink>,
    /// The identity's relay role once this process holds it (see `relay_link`).
    pub(super) relay_role: RelayRole,
    publishing: bool,
    republish: bool,
    registered: bool,
    published: Option<(u64, Vec<SocketAddr>)>,
    /// `serve` calls waiting for the publish that includes their port.
    waiters: Vec<(u16, SyncSender<Result<(), ServeError>>)>,
    /// When to publish again although nothing changed: records and name bindings expire.
    pub(super) refresh_at: Option<Instant>,
    /// When to publish the addresses left after some went away, unless an address arrives
    /// first ([`ADDRESS_SETTLE`]).
    pub(super) publish_at: Option<Instant>,
    /// Publish attempts that failed in a row (retried sooner).
    failures: u32,
}

/// How long a server whose addresses went away waits for new ones before publishing what is
/// left. A move takes the old address first and brings the new one a few milliseconds later
/// (`ip addr del`, then `add`; DHCP, a roaming Wi-Fi): publishing the remains at once sends a
/// record nobody can use, and over DNS the update itself waits for routes that are being
/// replaced (1 s of a 1.6 s outage in `gns_bind9`), holding back the record with the new
/// address behind it. An address that arrives publishes at once.
pub(super) const ADDRESS_SETTLE: Duration = Duration::from_millis(100);

/// Time until the next publish: well before a record expires, or soon after a failure (the
/// GNS may be back), backing off to a minute.
fn refresh_delay(failures: u32) -> Duration {
    if failures == 0 {
        namesock_resolver::RECORD_LIFETIME / 4
    } else {
        // 250 ms, 500 ms, 1 s, ...: a publish that failed because the host's routes were
        // still changing (the new address came first) goes out again soon.
        (Duration::from_millis(125) * (1 << failures.min(9))).min(Duration::from_secs(60))
    }
}

impl Server {
    pub(super) fn guid(&self) -> namesock_identity::Guid {
        self.publisher.key.guid()
    }

    /// The engine port flow paths arrive on.
    pub(super) fn engine_port(&self) -> u16 {
        self.publisher.engine_port
    }
}

/// Why this host's record could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Gns(#[from] GnsError),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// A publish that went through: the record, its locators, and this process's ports that
/// another process of the identity already serves (or that did not fit).
pub(crate) struct Published {
    /// The ports this process asked for in this publish.
    ports: Vec<u16>,
    record: Record,
    locators: Vec<SocketAddr>,
    refused: Vec<(u16, PortConflict)>,
}

/// What publishing needs, shared by the engine's publisher threads and the exit handler.
pub(crate) struct Publisher {
    key: Arc<Keypair>,
    engine_port: u16,
    /// The relays this process registers with, listed in the record (merged with the others')
    /// by their addresses: a named one's as its record gives them at each publish.
    relays: Vec<RelayEntry>,
    table: ServiceTable,
    shared: Arc<Shared>,
}

/// Publishes the merged table as the identity's record. A name in another program's entry
/// that is not valid here is left out (logged) rather than failing every program's publish.
fn publish_merged(
    gns: &namesock_resolver::Gns,
    key: &Keypair,
    locators: &[SocketAddr],
    merged: &Merged,
) -> Result<Record, GnsError> {
    let names: Vec<String> = merged
        .names
        .iter()
        .filter_map(|n| match gns.full_name(n) {
            Ok(full) => Some(full),
            Err(e) => {
                tracing::warn!(name = n, error = %e, "service table: invalid name left out");
                None
            }
        })
        .collect();
    gns.publish_with(
        key,
        locators,
        Some(merged.services.clone()),
        &merged.relays,
        &names,
    )
}

impl Publisher {
    /// This identity's relay role, if no other live program holds it.
    pub(super) fn try_relay_role(&self) -> Result<Option<std::fs::File>, TableError> {
        self.table.try_relay_role()
    }

    /// This host's addresses a peer can reach (no loopback: a record is read by other
    /// hosts), at this engine's port.
    fn locators(&self) -> Vec<SocketAddr> {
        sys::local_addrs()
            .unwrap_or_default()
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .map(|ip| SocketAddr::new(ip, self.engine_port))
            .take(namesock_resolver::record::MAX_LOCATORS)
            .collect()
    }

    /// Publishes the identity's merged record with `ports` as this process's, and
    /// registers `register` (this process's name, when not yet done).
    fn publish(
        &self,
        ports: Vec<u16>,
        name: Option<String>,
        register: bool,
    ) -> Result<Published, PublishError> {
        let gns = self.shared.gns()?;
        // A bad name fails this program's publish here, before it reaches the shared table.
        let name = name.map(|n| gns.full_name(&n)).transpose()?;
        let mine = Entry {
            pid: sys::getpid(),
            engine_port: self.engine_port,
            name: name.clone(),
            relays: self.relay_addrs(&gns),
            ports,
        };
        let locators = self.locators();
        let ports = mine.ports.clone();
        let (record, refused) = self.table.publish(&mine, |merged| {
            let rec = publish_merged(&gns, &self.key, &locators, merged)?;
            Ok::<_, GnsError>((rec, merged.refused.clone()))
        })??;
        if register && let Some(n) = &name {
            gns.register(&self.key, n)?;
        }
        Ok(Published {
            ports,
            record,
            locators,
            refused,
        })
    }

    /// The relays' current addresses: a named relay's are its record's locators (a relay's
    /// record has no service map: they are its listen addresses). One that does not resolve
    /// is left out of this publish (logged); its link keeps trying.
    fn relay_addrs(&self, gns: &namesock_resolver::Gns) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for entry in &self.relays {
            match entry {
                RelayEntry::Addr(a) => out.push(*a),
                RelayEntry::Named(name) => match resolve_relay(gns, name) {
                    Ok(rec) => out.extend(rec.locators),
                    Err(e) => {
                        tracing::warn!(relay = %name, error = %e, "relay left out of the record: its name does not resolve")
                    }
                },
            }
        }
        out.truncate(namesock_resolver::record::MAX_RELAYS);
        out
    }

    /// At exit: this process's ports leave the record at once (the others stay).
    fn withdraw(&self) -> Result<(), PublishError> {
        let gns = self.shared.gns()?;
        let locators = self.locators();
        self.table.withdraw(self.engine_port, |merged| {
            publish_merged(&gns, &self.key, &locators, merged)
        })??;
        Ok(())
    }
}

/// Deliveries tried again after EADDRINUSE (see `Engine::deliver`), each from a new port.
const DELIVERY_TRIES: usize = 8;

/// A random address of 127.0.0.0/8 other than 127.0.0.1 (Linux answers the whole block on
/// `lo`): a fresh set of ports to deliver from.
fn other_loopback_v4() -> Ipv4Addr {
    let [a, b, c]: [u8; 3] = rand::random();
    Ipv4Addr::new(127, a, b, c.clamp(2, 254))
}

impl Engine {
    pub(super) fn serve(
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
        tracing::debug!(port, %deliver_to, "serving");
        let new = s.ports.insert(port, deliver_to).is_none();
        if !new && s.published.is_some() && !s.publishing {
            self.endpoint.serve(port, deliver_to);
            let _ = reply.send(Ok(()));
            return;
        }
        // Another process of this identity may serve the port: the table says so under
        // its lock, when the port is published.
        s.waiters.push((port, reply));
        self.publish();
    }

    /// At exit: this process's ports leave the record, off the loop; `reply` once done.
    pub(super) fn withdraw(&mut self, reply: SyncSender<()>) {
        let Some(s) = &self.server else {
            let _ = reply.send(());
            return;
        };
        let publisher = s.publisher.clone();
        let spawned = std::thread::Builder::new()
            .name("namesock-withdraw".into())
            .spawn(move || {
                if let Err(e) = publisher.withdraw() {
                    tracing::warn!(error = %e, "cannot take this process's ports out of the record");
                }
                let _ = reply.send(());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn the withdrawing thread");
        }
    }

    /// The program closed its listener: the port leaves the record.
    pub(super) fn unserve(&mut self, port: u16) {
        self.endpoint.unserve(port);
        if let Some(s) = &mut self.server
            && s.ports.remove(&port).is_some()
        {
            self.publish();
        }
    }

    fn start_server(&mut self) -> Result<Server, ServeError> {
        let key_path = self.cfg.key_path();
        let key = Keypair::load_or_create(&key_path)?;
        self.start_policy()?;
        *self.shared.children_path.lock() = super::delivery::answer_children(&self.shared);
        let table = ServiceTable::open(&key_path, sys::getpid())
            .map_err(|e| ServeError::Publish(e.into()))?;
        let port = self.cfg.engine_port;
        let bind = |ip: IpAddr| TcpListener::bind(SocketAddr::new(ip, port));
        // [::] is dual-stack on Linux; a host without IPv6 gets 0.0.0.0.
        let mut listener = bind(Ipv6Addr::UNSPECIFIED.into())
            .or_else(|_| bind(Ipv4Addr::UNSPECIFIED.into()))
            .map_err(|source| ServeError::Bind { port, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { port, source })?
            .port();
        // Every path it accepts inherits them (best effort, as for a dial).
        let _ = self.path_tuning().tune(listener.as_raw_fd());
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|source| ServeError::Bind { port, source })?;
        let key = Arc::new(key);
        *self.shared.local_guid.lock() = Some(key.guid());
        // Sessions we open as a client from now on prove the same identity.
        self.client_key = key.clone();
        self.endpoint.start_serving(self.session_cfg, key.clone());
        tracing::info!(guid = %key.guid(), engine_port = bound, relays = ?self.cfg.relays, "server side started");
        let now = Instant::now();
        let publisher = Arc::new(Publisher {
            key: key.clone(),
            engine_port: bound,
            relays: self.cfg.relays.clone(),
            table,
            shared: self.shared.clone(),
        });
        Ok(Server {
            listener,
            publisher,
            ports: BTreeMap::new(),
            key,
            links: self
                .cfg
                .relays
                .iter()
                .map(|e| RelayLink::new(e.clone(), now))
                .collect(),
            relay_role: RelayRole::Unknown,
            publishing: false,
            republish: false,
            registered: false,
            published: None,
            waiters: Vec::new(),
            refresh_at: None,
            publish_at: None,
            failures: 0,
        })
    }

    /// Publishes this host's addresses off the loop (coalescing changes that come meanwhile).
    pub(super) fn publish(&mut self) {
        let Some(s) = &mut self.server else {
            return;
        };
        // Whatever waited to settle goes out with this publish (addresses are read in it).
        s.publish_at = None;
        if s.publishing {
            s.republish = true;
            return;
        }
        s.publishing = true;
        s.republish = false;
        let publisher = s.publisher.clone();
        let ports: Vec<u16> = s.ports.keys().copied().collect();
        let register = !s.registered;
        let name = self.cfg.name.clone();
        let tx = self.tx.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("namesock-publish".into())
            .spawn(move || {
                let result = publisher.publish(ports, name, register);
                if tx
                    .send(Command::Published {
                        result: Box::new(result),
                    })
                    .is_ok()
                {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn the publisher thread");
            s.publishing = false;
        }
    }

    pub(super) fn on_published(&mut self, result: Result<Published, PublishError>, now: Instant) {
        let Some(s) = &mut self.server else {
            return;
        };
        s.publishing = false;
        s.failures = if result.is_ok() { 0 } else { s.failures + 1 };
        s.refresh_at = Some(now + refresh_delay(s.failures));
        match result {
            Ok(Published {
                ports,
                record: rec,
                locators,
                refused,
            }) => {
                tracing::debug!(seq = rec.seq, ?locators, services = ?rec.services, "published");
                s.registered = true;
                let changed = s.published.as_ref().is_some_and(|(_, l)| *l != locators);
                s.published = Some((rec.seq, locators.clone()));
                for &(port, conflict) in &refused {
                    tracing::warn!(port, ?conflict, "port not served: {conflict}");
                    s.ports.remove(&port);
                }
                // Only now, with the port ours in the table, do HELLOs for it get answered.
                for port in &ports {
                    if let Some(&deliver_to) = s.ports.get(port) {
                        self.endpoint.serve(*port, deliver_to);
                    }
                }
                // Waiters for a port added after this publish began wait for the next one.
                let (done, later): (Vec<_>, Vec<_>) = std::mem::take(&mut s.waiters)
                    .into_iter()
                    .partition(|(port, _)| ports.contains(port) || !s.ports.contains_key(port));
                s.waiters = later;
                for (port, w) in done {
                    let answer = match refused.iter().find(|(p, _)| *p == port) {
                        Some(&(_, conflict)) => Err(ServeError::PortInUse { port, conflict }),
                        None => Ok(()),
                    };
                    let _ = w.send(answer);
                }
                if changed {
                    for (key, c) in &mut self.conns {
                        if let Some(server) = c.server() {
                            server.session.announce_moved(rec.seq, locators.clone());
                            self.dirty.insert(*key);
                        }
                    }
                }
            }
            Err(e) => {
                // A republish right after an address change often fails once or twice (the
                // route comes after the address): worth a warning only when it goes on, or
                // when a program's listen waits for it.
                let retry_in = refresh_delay(s.failures);
                if s.failures >= 3 || !s.waiters.is_empty() {
                    tracing::warn!(error = %e, ?retry_in, "publishing failed");
                } else {
                    tracing::debug!(error = %e, ?retry_in, "publishing failed");
                }
                let mut waiters = std::mem::take(&mut s.waiters);
                if let Some((_, first)) = waiters.pop() {
                    let _ = first.send(Err(ServeError::Publish(e)));
                }
                for (_, w) in waiters {
                    let _ = w.send(Err(ServeError::EngineGone));
                }
            }
        }
        if s.republish {
            self.publish();
        }
    }

    /// Local addresses changed: publish at once when one arrived, else (only departures)
    /// once no address arrived within [`ADDRESS_SETTLE`].
    pub(super) fn publish_addresses(&mut self, added: bool, now: Instant) {
        let Some(s) = &mut self.server else {
            return;
        };
        if added {
            self.publish();
        } else if s.publish_at.is_none() {
            s.publish_at = Some(now + ADDRESS_SETTLE);
        }
    }

    /// Publishes the addresses left once they settled.
    pub(super) fn publish_settled(&mut self, now: Instant) {
        if self
            .server
            .as_ref()
            .and_then(|s| s.publish_at)
            .is_some_and(|t| t <= now)
        {
            self.publish();
        }
    }

    /// Publishes again when the record is due for a refresh.
    pub(super) fn refresh_record(&mut self, now: Instant) {
        if let Some(s) = &mut self.server
            && s.refresh_at.is_some_and(|t| t <= now)
        {
            s.refresh_at = None;
            // The name binding expires like the record: claim it again too.
            s.registered = false;
            self.publish();
        }
    }

    pub(super) fn accept_paths(&mut self, now: Instant) {
        loop {
            let Some(s) = &self.server else {
                return;
            };
            match s.listener.accept() {
                Ok((mut stream, remote)) => {
                    let pid = crate::path_manager::next_path_id();
                    match self.endpoint.path_accepted(now, pid, remote.ip()) {
                        Ok(made_room) => self.close_silent_path(made_room),
                        Err(refusal) => {
                            self.counters.path_refused(refusal.kind());
                            if refusal.is_policy() {
                                tracing::info!(%remote, "flow path refused: {refusal}");
                            } else {
                                tracing::debug!(%remote, %refusal, "flow path refused");
                            }
                            continue;
                        }
                    }
                    let token = self.token();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        self.endpoint.path_gone(pid);
                        continue;
                    }
                    let mut fp = FlowPath::new(stream, token, remote, PathState::Open);
                    fp.writable = true;
                    self.paths.insert(pid, fp);
                    self.io.insert(token, Io::Path(pid));
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

    /// Closes the path that gave up its room to a newer one (`Endpoint::path_accepted`).
    pub(super) fn close_silent_path(&mut self, made_room: Option<PathId>) {
        if let Some(old) = made_room {
            tracing::debug!(path = old, "a path silent too long made room for a new one");
            self.counters.path_refused("SilentPathEvicted");
            self.drop_path(old);
        }
    }

    /// Reads the first frame of an unattached path and acts on the endpoint's decision.
    /// Returns the read outcome, and whether a first frame was routed (then the outcome
    /// is of no interest: the path is attached or closing).
    pub(super) fn read_first_frame(&mut self, pid: PathId, now: Instant) -> (ReadOutcome, bool) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return (ReadOutcome::Open, false);
        };
        let (endpoint, conns) = (&mut self.endpoint, &mut self.conns);
        let mut routed = None;
        let outcome = fp.read_frames(&mut self.scratch, |record| {
            routed = Some(match record {
                wire::Record::Clear(frame) => endpoint.first_frame(now, pid, frame, |key| {
                    conns
                        .get_mut(&key)
                        .and_then(Conn::server)
                        .map(|s| &mut s.session)
                }),
                wire::Record::Sealed(_) => Err(Refused {
                    why: Refusal::NotAFirstFrame { frame: "SEALED" },
                    answer: None,
                    unanswered: false,
                }),
            });
            false
        });
        if let ReadOutcome::Malformed(DecodeError::UnsupportedVersion(version)) = outcome {
            self.refuse_old_version(pid, version, now);
            return (outcome, true);
        }
        let Some(routed) = routed else {
            return (outcome, false);
        };
        match routed {
            Ok(Incoming::New {
                key,
                session,
                port,
                deliver_to,
                evicted,
                retired,
            }) => {
                for old in evicted {
                    tracing::debug!(session = old, "unproven session evicted by a newer HELLO");
                    self.counters.path_refused("UnprovenEvicted");
                    self.remove_conn(old);
                }
                for old in retired {
                    tracing::debug!(session = old, "closed session retired to make room");
                    self.remove_conn(old);
                }
                self.accepted(pid, key, *session, port, deliver_to)
            }
            Ok(Incoming::Resumed { key }) => self.resumed(pid, key),
            Err(refused) => self.refuse_path(pid, refused, now),
        }
        (outcome, true)
    }

    /// Sends the refusal's signed REFUSE, if it has one, on a path that carries no session,
    /// then closes it.
    fn refuse_path(&mut self, pid: PathId, refused: Refused, now: Instant) {
        if refused.why.is_policy() {
            let remote = self.paths.get(&pid).map(|fp| fp.remote);
            tracing::info!(path = pid, ?remote, "session refused: {}", refused.why);
        } else {
            tracing::debug!(path = pid, refusal = %refused.why, "path refused");
        }
        self.counters.path_refused(refused.why.kind());
        if refused.unanswered {
            tracing::debug!(
                path = pid,
                "no signed REFUSE: its source used up its answers"
            );
            self.counters.refusal_unanswered(refused.why.kind());
        }
        let Some(answer) = refused.answer else {
            self.drop_path(pid);
            return;
        };
        self.send_and_close(
            pid,
            |out| Frame::<Vec<u8>>::Refuse(*answer).encode(out),
            now,
        );
    }

    /// A client speaking another protocol version (its HELLO or RESUME says so): refused
    /// with the version-1 RESET(Protocol) such a client understands, and a log line here.
    fn refuse_old_version(&mut self, pid: PathId, version: u8, now: Instant) {
        let remote = self.paths.get(&pid).map(|fp| fp.remote);
        tracing::warn!(
            path = pid,
            ?remote,
            version,
            "refused a peer speaking namesock protocol version {version}: this engine speaks \
             version {VERSION} only (encrypted); upgrade the peer"
        );
        self.counters.path_refused("UnsupportedVersion");
        self.send_and_close(pid, |out| out.extend_from_slice(&VERSION_1_REFUSAL), now);
    }

    /// Writes `bytes` on a path that carries no session, then closes it.
    fn send_and_close(&mut self, pid: PathId, bytes: impl FnOnce(&mut Vec<u8>), now: Instant) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        bytes(fp.write_buf());
        fp.state = PathState::Closing;
        if fp.flush().is_err() || fp.pending() == 0 {
            self.close_path(pid, now);
        }
    }

    /// A verified HELLO: the session starts (HELLO_ACK queued); it reaches the program once
    /// the client proved it holds the keys (`deliver_session`).
    fn accepted(
        &mut self,
        pid: PathId,
        key: ConnKey,
        session: Session,
        port: u16,
        deliver_to: SocketAddr,
    ) {
        let Some(fp) = self.paths.get_mut(&pid) else {
            return;
        };
        fp.conn = Some(key);
        if session.by_open() {
            tracing::debug!(path = pid, peer = ?session.peer().map(|p| p.guid()), port, "session opened by OPEN (ticket, no signature)");
            self.counters.tickets.opens_accepted += 1;
        } else {
            tracing::debug!(path = pid, peer = ?session.peer().map(|p| p.guid()), port, "HELLO answered");
        }
        self.make_room_for_a_session();
        let server = ServerConn {
            session,
            paths: vec![pid],
            port,
            deliver_to,
            delivery: None,
            closed: false,
        };
        self.conns.insert(
            key,
            Conn {
                side: Side::Server(Box::new(server)),
                app: None,
            },
        );
        self.dirty.insert(key);
    }

    /// The client proved it holds the keys: the session is delivered to the program's
    /// listener (its `accept` returns now, never for a replayed HELLO).
    fn deliver_session(&mut self, key: ConnKey) {
        self.endpoint.session_proven(key);
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let Some(s) = c.server() else {
            return;
        };
        let (Some(peer), Some(&pid)) = (s.session.peer(), s.paths.last()) else {
            return;
        };
        let info = SessionInfo {
            peer_guid: peer.guid(),
            peer_name: None,
            peer_addr: self.paths.get(&pid).map_or(s.deliver_to, |fp| fp.remote),
            service_port: s.port,
        };
        let deliver_to = s.deliver_to;
        tracing::debug!(path = pid, peer = %info.peer_guid, port = s.port, "session accepted");
        let delivered = self.deliver(deliver_to, info);
        let token = self.token();
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        match delivered {
            Ok((entry, mut stream)) => {
                match self.poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => {
                        self.io.insert(token, Io::App(key));
                        if let Some(s) = c.server() {
                            s.delivery = Some(entry.engine_end());
                        }
                        c.app = Some(AppSide::new(stream, token, true).delivering(entry));
                    }
                    Err(_) => {
                        // The entry goes before the socket closes.
                        drop(entry);
                        drop(stream);
                        c.session_mut().app_abort();
                    }
                }
            }
            Err(e) => {
                tracing::debug!(%deliver_to, error = %e, "cannot deliver the session");
                c.session_mut().app_abort();
            }
        }
        self.dirty.insert(key);
    }

    /// Connects to the program's listener; its accept sees our local address, which is
    /// known (and recorded) before the connection can be accepted.
    ///
    /// The port is bound before the connect (to be recorded first), so the kernel picks it
    /// without looking at the destination, and it may pick one whose connection to this
    /// very listener is in TIME_WAIT: the engine closes its end of a delivery first, and at
    /// a few hundred connections a second such ports soon cover half the range. The connect
    /// then fails with EADDRINUSE, and the delivery is tried again from another port, and
    /// for IPv4 from another address of 127.0.0.0/8 (each has all the ports).
    fn deliver(
        &self,
        deliver_to: SocketAddr,
        info: SessionInfo,
    ) -> io::Result<(DeliveryEntry, TcpStream)> {
        let loopback = if deliver_to.is_ipv4() {
            IpAddr::from(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::from(Ipv6Addr::LOCALHOST)
        };
        let local_ip = if deliver_to.ip().is_loopback() {
            deliver_to.ip()
        } else {
            loopback
        };
        let mut tries = 0;
        loop {
            let from = match local_ip {
                IpAddr::V4(_) if tries > 0 => IpAddr::V4(other_loopback_v4()),
                ip => ip,
            };
            match self.deliver_from(from, deliver_to, info.clone()) {
                Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && tries < DELIVERY_TRIES => {
                    tries += 1;
                }
                done => return done,
            }
        }
    }

    fn deliver_from(
        &self,
        from: IpAddr,
        deliver_to: SocketAddr,
        info: SessionInfo,
    ) -> io::Result<(DeliveryEntry, TcpStream)> {
        let dialer = sys::Dialer::new(&deliver_to, Some(from))?;
        dialer.set_nodelay()?;
        dialer.for_local_hop();
        let local = dialer.local_addr()?;
        let entry = DeliveryEntry::new(&self.shared, local, deliver_to, info)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMFILE))?;
        // On failure the dialer closes before the entry goes: nothing is accepted from it.
        let stream = dialer.connect(deliver_to)?;
        Ok((entry, stream))
    }

    /// A verified RESUME: the path joins its session.
    fn resumed(&mut self, pid: PathId, key: ConnKey) {
        let (Some(fp), Some(c)) = (self.paths.get_mut(&pid), self.conns.get_mut(&key)) else {
            return;
        };
        let Some(s) = c.server() else {
            return;
        };
        fp.conn = Some(key);
        s.paths.push(pid);
        tracing::debug!(path = pid, remote = %fp.remote, "session resumed on a new path");
        if let Some(d) = s.delivery {
            self.shared.deliveries.set_peer_addr(d, fp.remote);
        }
        self.dirty.insert(key);
    }

    /// Reacts to a server session's events. Returns whether there were any.
    pub(super) fn server_events(&mut self, key: ConnKey) -> bool {
        let mut any = false;
        loop {
            let Some(s) = self.conns.get_mut(&key).and_then(Conn::server) else {
                return any;
            };
            let Some(ev) = s.session.poll_event() else {
                return any;
            };
            any = true;
            match ev {
                Event::PathDead(p) => {
                    tracing::debug!(path = p, "path dead (silence or protocol error)");
                    s.paths.retain(|q| *q != p);
                    self.drop_path(p);
                }
                Event::Closed => {
                    tracing::debug!("session closed");
                    s.closed = true;
                    self.endpoint.session_closed(&s.session.conn_id());
                }
                Event::Reset { reason } => {
                    tracing::debug!(?reason, "session reset");
                    s.closed = true;
                    self.reset_app(key);
                }
                Event::Established { .. } => self.deliver_session(key),
                // The rest concern a client, or nothing the engine must do.
                Event::NeedPath
                | Event::PathSuspect(_)
                | Event::PathQuiet(_)
                | Event::Moved { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_name_in_another_entry_does_not_stop_the_publish() {
        let dir = tempfile::tempdir().unwrap();
        let gns = namesock_resolver::Gns::file(&dir.path().join("gns"), "ns.alt").unwrap();
        let key = Keypair::generate();
        let merged = Merged {
            services: namesock_resolver::Services::new(vec![(8000, 4001)]).unwrap(),
            names: vec!["web.ns.alt".into(), "bad name!".into(), "echo".into()],
            relays: Vec::new(),
            refused: Vec::new(),
        };
        let locators = ["192.0.2.1:4001".parse().unwrap()];
        let rec = publish_merged(&gns, &key, &locators, &merged).unwrap();
        assert_eq!(rec.names, ["web.ns.alt", "echo.ns.alt"]);
        assert_eq!(rec.locators_for(8000).unwrap(), locators);
    }

    #[test]
    fn records_are_refreshed_well_before_they_expire_and_failures_retried_soon() {
        assert!(refresh_delay(0) * 2 < namesock_resolver::RECORD_LIFETIME);
        assert_eq!(refresh_delay(1), Duration::from_millis(250));
        assert_eq!(refresh_delay(2), Duration::from_millis(500));
        assert_eq!(refresh_delay(10), Duration::from_secs(60));
        assert_eq!(refresh_delay(40), Duration::from_secs(60));
    }
}
