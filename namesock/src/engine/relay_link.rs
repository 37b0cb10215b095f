//! A server's control connections to its relays (`NAMESOCK_RELAY`), and the dial-backs they
//! ask for. The protocol is `crate::relay::Registration`'s; this file only moves its bytes,
//! reconnects with backoff, and turns a dial-back into an arriving flow path: the endpoint
//! routes its first frame (HELLO or RESUME) exactly as if it had been accepted on the engine
//! port.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::TcpStream;
use namesock_identity::Guid;
use namesock_resolver::{Gns, GnsError, Record};

use crate::config::RelayEntry;
use crate::relay::wire::{Preamble, Token as DialToken};
use crate::relay::{Registration, RegistrationError, RegistrationEvent};

use super::event_loop::{Engine, Io};
use super::path::{FlowPath, PathState};
use super::{Command, sys};

/// Backoff between attempts to reach a relay: 100 ms doubling to 30 s. Short at first: after
/// a move the new address often comes before its route, and every moment without a
/// registration is an outage for the clients behind the relay.
fn retry_delay(failures: u32) -> Duration {
    (Duration::from_millis(100) * (1 << failures.min(9))).min(Duration::from_secs(30))
}

/// How long a program that does not hold its identity's relay role waits before asking again
/// (the holder may have exited).
const RELAY_ROLE_RETRY: Duration = Duration::from_secs(5);

/// Whether this process registers its identity with the relays. A relay keeps one
/// registration per GUID, and a new one displaces the old (ending its splices): two programs
/// of one identity registering would displace each other for ever. So one program of the
/// identity on this host holds the role (`ServiceTable::try_relay_role`), and the others
/// register only once it is free.
pub(super) enum RelayRole {
    /// Not asked yet.
    Unknown,
    /// Another program holds it (already logged).
    Elsewhere,
    /// Ours until we exit: the lock file.
    Held { _lock: std::fs::File },
}

/// Why a named relay (`NAMESOCK_RELAY=NAME`) could not be found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayResolveError {
    #[error("{name:?} is not a name or <guid>.{zone}")]
    NotAName { name: String, zone: String },
    #[error("the relay's record lists no address")]
    NoLocator,
    #[error(transparent)]
    Gns(#[from] GnsError),
}

/// The record of the relay `name` (`relay`, `relay.<zone>` or `<guid>.<zone>`), read and
/// checked like any peer's (signature, pins, trusted names).
pub(super) fn resolve_relay(gns: &Gns, name: &str) -> Result<Record, RelayResolveError> {
    let target = gns
        .parse_target(name)
        .or_else(|| gns.full_name(name).ok().and_then(|f| gns.parse_target(&f)))
        .ok_or_else(|| RelayResolveError::NotAName {
            name: name.to_owned(),
            zone: gns.zone().to_owned(),
        })?;
    let record = gns.resolve(&target)?;
    if record.locators.is_empty() {
        return Err(RelayResolveError::NoLocator);
    }
    Ok(record)
}

/// One relay this server registers with.
pub(super) struct RelayLink {
    entry: RelayEntry,
    /// The address dialled last (for a named relay, one of its record's locators).
    addr: Option<SocketAddr>,
    /// A named relay's locators when it last resolved (a change republishes our record).
    locators: Vec<SocketAddr>,
    conn: Option<LinkConn>,
    /// When to (re)connect; `None` while connected.
    retry_at: Option<Instant>,
    failures: u32,
}

struct LinkConn {
    stream: TcpStream,
    token: Token,
    reg: Registration,
    connected: bool,
    local: Option<SocketAddr>,
    /// Our preamble and proof, until written (at most 123 bytes).
    out: Vec<u8>,
}

impl RelayLink {
    pub(super) fn new(entry: RelayEntry, now: Instant) -> RelayLink {
        RelayLink {
            entry,
            addr: None,
            locators: Vec::new(),
            conn: None,
            retry_at: Some(now),
            failures: 0,
        }
    }

    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }
}

impl Engine {
    /// Connects the links that are due.
    pub(super) fn relay_timers(&mut self, now: Instant) {
        let Some(s) = &self.server else {
            return;
        };
        let due: Vec<usize> = (0..s.links.len())
            .filter(|&i| s.links[i].retry_at.is_some_and(|t| t <= now))
            .collect();
        if due.is_empty() || !self.hold_relay_role() {
            if let Some(s) = &mut self.server {
                for &i in &due {
                    s.links[i].retry_at = Some(now + RELAY_ROLE_RETRY);
                }
            }
            return;
        }
        for i in due {
            let entry = self.server.as_ref().map(|s| s.links[i].entry.clone());
            match entry {
                Some(RelayEntry::Addr(addr)) => self.connect_link(i, addr, None, now),
                Some(RelayEntry::Named(name)) => self.resolve_link(i, name),
                None => {}
            }
        }
    }

    /// Resolves a named relay on a short-lived thread (every attempt: a relay that moved is
    /// found at its new address); [`Engine::on_relay_resolved`] dials it.
    fn resolve_link(&mut self, i: usize, name: String) {
        if let Some(s) = &mut self.server {
            s.links[i].retry_at = None;
        }
        let (shared, tx, waker) = (self.shared.clone(), self.tx.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("namesock-relay-resolve".into())
            .spawn(move || {
                let result = shared
                    .gns()
                    .map_err(RelayResolveError::from)
                    .and_then(|g| resolve_relay(&g, &name));
                if tx
                    .send(Command::RelayResolved {
                        link: i,
                        result: Box::new(result),
                    })
                    .is_ok()
                {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a resolver thread");
            self.link_down(i, Instant::now());
        }
    }

    /// A named relay's record: dial one of its locators, expecting the GUID it names.
    pub(super) fn on_relay_resolved(
        &mut self,
        i: usize,
        result: Result<Record, RelayResolveError>,
        now: Instant,
    ) {
        let Some(link) = self.server.as_mut().and_then(|s| s.links.get_mut(i)) else {
            return;
        };
        match result {
            Ok(rec) => {
                tracing::debug!(relay = %link.entry, relay_guid = %rec.guid, locators = ?rec.locators, "relay resolved");
                // The relay moved: our record lists its addresses, so it is published again.
                let moved = !link.locators.is_empty() && link.locators != rec.locators;
                link.locators.clone_from(&rec.locators);
                // Each failed attempt tries the next locator (one family may not route here).
                let addr = rec.locators[link.failures as usize % rec.locators.len()];
                self.connect_link(i, addr, Some(rec.guid), now);
                if moved {
                    self.publish();
                }
            }
            Err(e) => {
                tracing::warn!(relay = %link.entry, error = %e, "cannot resolve the relay");
                self.link_down(i, now);
            }
        }
    }

    /// Whether this process holds its identity's relay role, taking it if it is free.
    fn hold_relay_role(&mut self) -> bool {
        let Some(s) = &mut self.server else {
            return false;
        };
        if matches!(s.relay_role, RelayRole::Held { .. }) {
            return true;
        }
        match s.publisher.try_relay_role() {
            Ok(Some(lock)) => {
                tracing::info!("this program registers its identity with the relays");
                s.relay_role = RelayRole::Held { _lock: lock };
                true
            }
            Ok(None) => {
                if !matches!(s.relay_role, RelayRole::Elsewhere) {
                    tracing::info!(
                        "another program of this identity registers with the relays: clients \
                         reach this program's ports directly only, until it exits"
                    );
                    s.relay_role = RelayRole::Elsewhere;
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the relay role");
                false
            }
        }
    }

    fn connect_link(&mut self, i: usize, addr: SocketAddr, expected: Option<Guid>, now: Instant) {
        let token = self.token();
        // A relay that vanishes is noticed like a dead flow path.
        let timers = self.path_tuning();
        let Some(s) = &mut self.server else {
            return;
        };
        let key = s.key.clone();
        let link = &mut s.links[i];
        link.retry_at = None;
        link.addr = Some(addr);
        let started = sys::dial_registered(self.poll.registry(), token, addr, None, timers);
        match started {
            Ok(stream) => {
                let (reg, out) = Registration::new(key, expected);
                link.conn = Some(LinkConn {
                    stream,
                    token,
                    reg,
                    connected: false,
                    local: None,
                    out,
                });
                self.io.insert(token, Io::RelayLink(i));
            }
            Err(e) => {
                tracing::warn!(relay = %link.entry, %addr, error = %e, "cannot reach the relay");
                self.link_down(i, now);
            }
        }
    }

    /// The link failed or ended: close it and try again after the backoff.
    fn link_down(&mut self, i: usize, now: Instant) {
        let Some(s) = &mut self.server else {
            return;
        };
        let link = &mut s.links[i];
        if let Some(mut c) = link.conn.take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.io.remove(&c.token);
        }
        link.retry_at = Some(now + retry_delay(link.failures));
        link.failures += 1;
    }

    pub(super) fn on_link(&mut self, i: usize, ev: &mio::event::Event, now: Instant) {
        match self.link_io(i, ev) {
            Ok(dials) => {
                let relay = self.server.as_ref().and_then(|s| s.links[i].addr);
                for token in dials {
                    if let Some(relay) = relay {
                        self.dial_back(relay, &token, now);
                    }
                }
            }
            Err(e) => {
                if let Some(s) = &self.server {
                    let l = &s.links[i];
                    if let LinkError::Registration(RegistrationError::WrongRelay { .. }) = e {
                        tracing::warn!(relay = %l.entry, addr = ?l.addr, error = %e, "refusing the relay: not the one its name resolved to; registering nothing there");
                    } else {
                        tracing::warn!(relay = %l.entry, addr = ?l.addr, error = %e, "relay control connection ended");
                    }
                }
                self.link_down(i, now);
            }
        }
    }

    /// Moves a link's bytes; returns the dial-backs the relay asked for.
    fn link_io(&mut self, i: usize, ev: &mio::event::Event) -> Result<Vec<DialToken>, LinkError> {
        let Some(s) = &mut self.server else {
            return Ok(Vec::new());
        };
        let link = &mut s.links[i];
        let Some(c) = &mut link.conn else {
            return Ok(Vec::new());
        };
        if !c.connected {
            match c.stream.take_error() {
                Ok(None) if c.stream.peer_addr().is_ok() => {
                    c.connected = true;
                    c.local = c.stream.local_addr().ok();
                }
                Ok(None) => return Ok(Vec::new()),
                Ok(Some(e)) | Err(e) => return Err(LinkError::Io(e)),
            }
        }
        let mut dials = Vec::new();
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            let mut buf = [0u8; 256];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return Err(LinkError::Closed),
                    Ok(n) => {
                        let mut events = Vec::new();
                        c.reg.received(&buf[..n], &mut c.out, &mut events)?;
                        for e in events {
                            match e {
                                RegistrationEvent::Registered { relay } => {
                                    tracing::info!(relay = %link.entry, addr = ?link.addr, relay_guid = %relay, "registered with the relay");
                                    link.failures = 0;
                                }
                                RegistrationEvent::Dial(token) => dials.push(token),
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(LinkError::Io(e)),
                }
            }
        }
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(dials)
    }

    /// The relay has a client for us: dial it back, present the token, and treat the
    /// connection as a flow path arriving on the engine port.
    fn dial_back(&mut self, relay: SocketAddr, token: &DialToken, now: Instant) {
        let pid = crate::path_manager::next_path_id();
        // Every path through the relay comes from its address: the endpoint's bound on paths
        // awaiting their first frame per source applies to the relay as a whole.
        match self.endpoint.path_accepted(now, pid, relay.ip()) {
            Ok(made_room) => self.close_silent_path(made_room),
            Err(refusal) => {
                self.counters.path_refused(refusal.kind());
                tracing::debug!(%relay, %refusal, "relay dial-back refused");
                return;
            }
        }
        let mio_token = self.token();
        let timers = self.path_tuning();
        let started = sys::dial_registered(self.poll.registry(), mio_token, relay, None, timers);
        match started {
            Ok(stream) => {
                // Connecting: `path_connected` makes it open; it has no session until the
                // endpoint routes its first frame.
                let mut fp = FlowPath::new(stream, mio_token, relay, PathState::Connecting);
                Preamble::Accept { token: *token }.encode(fp.write_buf());
                self.paths.insert(pid, fp);
                self.io.insert(mio_token, Io::Path(pid));
                tracing::debug!(path = pid, %relay, "dialing back through the relay");
            }
            Err(e) => {
                tracing::debug!(%relay, error = %e, "relay dial-back failed");
                self.endpoint.path_gone(pid);
            }
        }
    }

    /// This host's addresses changed: a link from an address that is gone is re-made at
    /// once (the relay then ends the splices of the old registration), and links waiting
    /// out a backoff try now when an address came up.
    pub(super) fn relay_links_addresses_changed(&mut self, added: bool, now: Instant) {
        let Some(s) = &self.server else {
            return;
        };
        let local = &self.local_addrs;
        let stale: Vec<usize> = (0..s.links.len())
            .filter(|&i| {
                let l = &s.links[i];
                match &l.conn {
                    Some(c) => c.local.is_some_and(|a| !local.contains(&a.ip())),
                    None => added,
                }
            })
            .collect();
        for i in stale {
            if let Some(s) = &mut self.server {
                s.links[i].failures = 0;
            }
            self.link_down(i, now);
            if let Some(s) = &mut self.server {
                s.links[i].retry_at = Some(now);
            }
        }
    }
}

/// Why a control connection to a relay ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the relay closed the connection")]
    Closed,
    #[error(transparent)]
    Registration(#[from] crate::relay::RegistrationError),
}

#[cfg(test)]
mod tests {
    use namesock_identity::Keypair;
    use namesock_resolver::{Backend, GnsConfig};

    use super::*;

    #[test]
    fn a_relay_is_found_by_name_full_name_or_guid_and_only_with_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let config = GnsConfig {
            backend: Backend::File(dir.path().join("gns")),
            zone: "ns.alt".into(),
        };
        let gns = Gns::with_known_names(&config, dir.path().join("known_names")).unwrap();
        let relay = Keypair::from_seed(&[5; 32]);
        let at: SocketAddr = "192.0.2.7:7000".parse().unwrap();
        gns.publish(&relay, &[at], &["hub.ns.alt".into()]).unwrap();
        gns.register(&relay, "hub").unwrap();
        for entry in ["hub", "hub.ns.alt", &format!("{}.ns.alt", relay.guid())] {
            let rec = resolve_relay(&gns, entry).unwrap();
            assert_eq!(
                (rec.guid, rec.locators),
                (relay.guid(), vec![at]),
                "{entry}"
            );
        }
        assert!(matches!(
            resolve_relay(&gns, "hub.example.org"),
            Err(RelayResolveError::Gns(_))
        ));
        assert!(matches!(
            resolve_relay(&gns, "nobody"),
            Err(RelayResolveError::Gns(e)) if e.is_not_found()
        ));
        // A record without locators names no relay to dial.
        let empty = Keypair::from_seed(&[6; 32]);
        gns.publish(&empty, &[], &[]).unwrap();
        assert!(matches!(
            resolve_relay(&gns, &format!("{}.ns.alt", empty.guid())),
            Err(RelayResolveError::NoLocator)
        ));
    }

    #[test]
    fn a_relay_that_cannot_be_reached_is_retried_within_30_seconds() {
        assert_eq!(retry_delay(0), Duration::from_millis(100));
        assert_eq!(retry_delay(3), Duration::from_millis(800));
        assert_eq!(retry_delay(50), Duration::from_secs(30));
    }
}
