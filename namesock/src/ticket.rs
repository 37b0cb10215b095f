//! Tickets, sans-IO: what lets a new session to a peer this engine just had a session with
//! start with one OPEN frame instead of a handshake (no X25519, no signature).
//!
//! Every established session (HELLO-made or OPEN-made) derives a ticket secret from its keys
//! (see `session::keys`). Both engines keep it here, outside the session, so that it outlives
//! the session's close and linger:
//! - a server in [`ServerTickets`], by the session's connection ID, as the session starts
//!   (a HELLO answered, an OPEN accepted; only the client can derive the ticket, so one of a
//!   replayed HELLO is of use to nobody): the client's key, the
//!   secret, the service port, when the chain's full handshake was, and a replay window of
//!   the child numbers accepted;
//! - a client in [`ClientTickets`], by (server GUID, service port): the server's key, the
//!   parent connection ID, the secret, the next child number and the server address the
//!   session's path used.
//!
//! Both tables hold at most [`MAX_TICKETS`] entries (the oldest goes first); an entry serves
//! for [`TICKET_LIFETIME`] after it was stored, and no chain of OPENs outlives
//! [`CHAIN_LIFETIME`] after its full handshake: then a HELLO authenticates both ends again
//! (signatures, and the client's GNS lookup). Nothing here touches a socket or a clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use namesock_identity::{Guid, PublicKey};

use crate::session::{TicketSecret, open_tag_verifies};
use crate::wire::{ConnId, Open};

/// Entries per table, at most.
pub const MAX_TICKETS: usize = 1024;
/// How long a ticket serves after it was stored.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(60);
/// How long a chain of OPENs may go on after its full handshake.
pub const CHAIN_LIFETIME: Duration = Duration::from_secs(600);
/// Child numbers below the highest accepted one that are still told apart (older ones are
/// refused as replays).
pub const REPLAY_WINDOW: u64 = 64;

/// Why an OPEN is refused. Only [`OpenError::UnknownTicket`] gets an answer (a signed REFUSE,
/// so the client falls back to HELLO at once); the rest may come from anyone and lose their
/// path without a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("no live ticket for the parent session (unknown, expired, or its chain is too old)")]
    UnknownTicket,
    #[error("the OPEN's tag does not verify with the parent's ticket")]
    Unauthentic,
    #[error("child number {child} was used before (or is older than the replay window)")]
    Replayed { child: u64 },
    #[error("the OPEN asks for port {asked}, its ticket is for port {ticket}")]
    WrongPort { asked: u16, ticket: u16 },
}

/// A ticket, as a session gives it when it is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The session's connection ID: the parent of the OPENs that use the ticket.
    pub conn_id: ConnId,
    pub secret: TicketSecret,
    /// The peer's key (the client's on a server, the server's on a client).
    pub peer: PublicKey,
    /// When the full handshake that began this chain was.
    pub origin: Instant,
    /// The session's round trip when the ticket was taken (a client's OPEN is given time
    /// in proportion: its server is as far away as the parent's was).
    pub rtt: Option<Duration>,
    /// The receive window the peer announced: a client's early data after an OPEN stays
    /// within it until OPEN_ACK announces the child's.
    pub peer_window: u32,
}

/// What a verified OPEN's ticket says about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub client: PublicKey,
    pub secret: TicketSecret,
    pub origin: Instant,
}

/// Child numbers accepted with one ticket: the highest, and a bitmap of the 63 below it (bit
/// `n` set: `highest - n` was accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// Whether `child` is new (0 never is).
    fn is_new(&self, child: u64) -> bool {
        if child == 0 {
            return false;
        }
        if child > self.highest {
            return true;
        }
        let back = self.highest - child;
        back != 0 && back < REPLAY_WINDOW && self.seen & (1 << back) == 0
    }

    /// Records `child` (checked with `is_new`).
    fn accept(&mut self, child: u64) {
        if child > self.highest {
            let shift = child - self.highest;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            // The old highest is now `shift` behind.
            if self.highest != 0 && shift < REPLAY_WINDOW {
                self.seen |= 1 << shift;
            }
            self.highest = child;
        } else {
            self.seen |= 1 << (self.highest - child);
        }
    }
}

#[derive(Debug)]
struct ServerEntry {
    client: PublicKey,
    secret: TicketSecret,
    port: u16,
    origin: Instant,
    stored: Instant,
    replay: ReplayWindow,
}

fn live(stored: Instant, origin: Instant, now: Instant) -> bool {
    now < stored + TICKET_LIFETIME && now < origin + CHAIN_LIFETIME
}

/// A server's tickets, by the connection ID of the session that made each.
#[derive(Debug, Default)]
pub struct ServerTickets {
    entries: HashMap<ConnId, ServerEntry>,
    /// Connection IDs in the order stored (entries are never replaced: this mirrors
    /// `entries`).
    order: VecDeque<ConnId>,
}

impl ServerTickets {
    /// Keeps the ticket of a session (of its client) for `port`, stored at `now`. A session
    /// stores its ticket once; a second store of the same connection ID changes nothing.
    pub fn store(&mut self, now: Instant, ticket: &Ticket, port: u16) {
        self.expire(now);
        if self.entries.contains_key(&ticket.conn_id) || !live(now, ticket.origin, now) {
            return;
        }
        if self.entries.len() >= MAX_TICKETS
            && let Some(oldest) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            ticket.conn_id,
            ServerEntry {
                client: ticket.peer,
                secret: ticket.secret,
                port,
                origin: ticket.origin,
                stored: now,
                replay: ReplayWindow::default(),
            },
        );
        self.order.push_back(ticket.conn_id);
    }

    /// Checks an OPEN against its parent's ticket: live, the same port, its tag, a child
    /// number never accepted before. On success the child number is used up (even if policy
    /// then refuses the session: a replay of it is refused as a replay).
    pub fn verify(&mut self, now: Instant, open: &Open) -> Result<Verified, OpenError> {
        self.expire(now);
        let e = self
            .entries
            .get_mut(&open.parent)
            .filter(|e| live(e.stored, e.origin, now))
            .ok_or(OpenError::UnknownTicket)?;
        let mut aad = Vec::with_capacity(64);
        open.encode_clear_part(&mut aad);
        if !open_tag_verifies(&e.secret, open.child, &aad, &open.tag) {
            return Err(OpenError::Unauthentic);
        }
        if !e.replay.is_new(open.child) {
            return Err(OpenError::Replayed { child: open.child });
        }
        if open.port != e.port {
            return Err(OpenError::WrongPort {
                asked: open.port,
                ticket: e.port,
            });
        }
        e.replay.accept(open.child);
        Ok(Verified {
            client: e.client,
            secret: e.secret,
            origin: e.origin,
        })
    }

    /// Drops expired entries from the front (the oldest stored expire first; one whose chain
    /// ended behind a live one waits its turn, and `verify` refuses it meanwhile).
    fn expire(&mut self, now: Instant) {
        while let Some(id) = self.order.front() {
            if self
                .entries
                .get(id)
                .is_some_and(|e| live(e.stored, e.origin, now))
            {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                self.entries.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct ClientEntry {
    server: PublicKey,
    parent: ConnId,
    secret: TicketSecret,
    next_child: u64,
    addr: SocketAddr,
    origin: Instant,
    rtt: Option<Duration>,
    peer_window: u32,
    stored: Instant,
}

/// One use of a client's ticket: what an OPEN needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenTicket {
    /// The server's key (its GUID is the table's key).
    pub server: PublicKey,
    pub parent: ConnId,
    pub secret: TicketSecret,
    /// This OPEN's child number, never handed out before for `parent`.
    pub child: u64,
    /// The server address the parent's path used.
    pub addr: SocketAddr,
    /// The chain's full handshake (the new session's ticket carries it on).
    pub origin: Instant,
    /// The parent session's round trip, if it measured one.
    pub rtt: Option<Duration>,
    /// The server's receive window as the parent session knew it.
    pub peer_window: u32,
}

/// A client's ticket on its way from one process of a user to the next
/// (`crate::ticket_store`): its times are ages, since an `Instant` means nothing to another
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldTicket {
    pub server: PublicKey,
    pub port: u16,
    pub parent: ConnId,
    pub secret: TicketSecret,
    /// The first child number the next process may use (those below were handed out).
    pub next_child: u64,
    pub addr: SocketAddr,
    /// How long ago the chain's full handshake was.
    pub origin_age: Duration,
    /// How long ago the ticket was stored (its session was established).
    pub stored_age: Duration,
    pub rtt: Option<Duration>,
    pub peer_window: u32,
}

/// A client's tickets, by (server GUID, service port): the newest session's ticket for each.
#[derive(Debug, Default)]
pub struct ClientTickets {
    entries: HashMap<(Guid, u16), ClientEntry>,
    /// Keys in the order stored, with when (an entry replaced later leaves a stale pair here,
    /// skipped and compacted away).
    order: VecDeque<((Guid, u16), Instant)>,
}

impl ClientTickets {
    /// Keeps the ticket of a session established to `port` of `ticket.peer`, over a path to
    /// `addr`: it replaces the entry of an older session to the same port.
    pub fn store(&mut self, now: Instant, ticket: &Ticket, port: u16, addr: SocketAddr) {
        if !live(now, ticket.origin, now) {
            return;
        }
        let key = (ticket.peer.guid(), port);
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TICKETS {
            self.evict_oldest();
        }
        self.entries.insert(
            key,
            ClientEntry {
                server: ticket.peer,
                parent: ticket.conn_id,
                secret: ticket.secret,
                next_child: 1,
                addr,
                origin: ticket.origin,
                rtt: ticket.rtt,
                peer_window: ticket.peer_window,
                stored: now,
            },
        );
        self.order.push_back((key, now));
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, at)| entries.get(k).is_some_and(|e| e.stored == *at));
        }
    }

    /// A ticket for a new session to `port` of `server`, if a live one is held; its child
    /// number is used up.
    pub fn take(&mut self, now: Instant, server: &Guid, port: u16) -> Option<OpenTicket> {
        let key = (*server, port);
        let e = self.entries.get_mut(&key)?;
        if !live(e.stored, e.origin, now) {
            self.entries.remove(&key);
            return None;
        }
        let child = e.next_child;
        e.next_child += 1;
        Some(OpenTicket {
            server: e.server,
            parent: e.parent,
            secret: e.secret,
            child,
            addr: e.addr,
            origin: e.origin,
            rtt: e.rtt,
            peer_window: e.peer_window,
        })
    }

    /// The OPEN made with `parent`'s ticket failed (refused, closed, unanswered): the ticket
    /// is dropped, unless a newer session already replaced it.
    pub fn forget(&mut self, server: &Guid, port: u16, parent: &ConnId) {
        let key = (*server, port);
        if self.entries.get(&key).is_some_and(|e| e.parent == *parent) {
            self.entries.remove(&key);
        }
    }

    /// Every live ticket, leaving the table empty: what a process hands on to the next when it
    /// exits. A ticket handed on is never used here again, so no two processes hand out the
    /// same child number of one ticket (the server would drop the second as a replay).
    pub fn hand_over(&mut self, now: Instant) -> Vec<HeldTicket> {
        self.order.clear();
        self.entries
            .drain()
            .filter(|(_, e)| live(e.stored, e.origin, now))
            .map(|((_, port), e)| HeldTicket {
                server: e.server,
                port,
                parent: e.parent,
                secret: e.secret,
                next_child: e.next_child,
                addr: e.addr,
                origin_age: now.saturating_duration_since(e.origin),
                stored_age: now.saturating_duration_since(e.stored),
                rtt: e.rtt,
                peer_window: e.peer_window,
            })
            .collect()
    }

    /// Takes in a ticket another process handed on, unless this engine holds one for the same
    /// server and port (its own is newer) or the ticket is no longer live. Whether it was
    /// taken.
    pub fn adopt(&mut self, now: Instant, t: &HeldTicket) -> bool {
        let key = (t.server.guid(), t.port);
        let (Some(origin), Some(stored)) =
            (now.checked_sub(t.origin_age), now.checked_sub(t.stored_age))
        else {
            return false;
        };
        if self.entries.contains_key(&key) || !live(stored, origin, now) || t.next_child == 0 {
            return false;
        }
        if self.entries.len() >= MAX_TICKETS {
            self.evict_oldest();
        }
        self.entries.insert(
            key,
            ClientEntry {
                server: t.server,
                parent: t.parent,
                secret: t.secret,
                next_child: t.next_child,
                addr: t.addr,
                origin,
                rtt: t.rtt,
                peer_window: t.peer_window,
                stored,
            },
        );
        self.order.push_back((key, stored));
        true
    }

    fn evict_oldest(&mut self) {
        while let Some((key, at)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.stored == at) {
                self.entries.remove(&key);
                return;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tickets a connect at `now` could still use (expired ones wait in the table until a
    /// connect or an eviction drops them).
    pub fn live(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| live(e.stored, e.origin, now))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::open_tag;
    use namesock_identity::Keypair;

    fn key(n: u8) -> PublicKey {
        Keypair::from_seed(&[n; 32]).public()
    }

    fn ticket(id: u8, origin: Instant) -> Ticket {
        Ticket {
            conn_id: [id; 16],
            secret: [id; 32],
            peer: key(1),
            origin,
            rtt: None,
            peer_window: 64 * 1024,
        }
    }

    fn open(parent: u8, secret: &TicketSecret, child: u64, port: u16) -> Open {
        let mut o = Open {
            conn_id: rand::random(),
            parent: [parent; 16],
            child,
            port,
            window: 1 << 20,
            tag: [0; 16],
        };
        let mut aad = Vec::new();
        o.encode_clear_part(&mut aad);
        o.tag = open_tag(secret, child, &aad);
        o
    }

    #[test]
    fn a_good_open_verifies_once_per_child_number() {
        let t0 = Instant::now();
        let mut s = ServerTickets::default();
        s.store(t0, &ticket(1, t0), 80);
        let v = s.verify(t0, &open(1, &[1; 32], 1, 80)).unwrap();
        assert_eq!((v.client, v.secret, v.origin), (key(1), [1; 32], t0));
        // The same child number again: a replay, whatever else the OPEN says.
        assert_eq!(
            s.verify(t0, &open(1, &[1; 32], 1, 80)),
            Err(OpenError::Replayed { child: 1 })
        );
        // Out of order within the window is fine, once each; 0 never.
        for child in [5, 3, 2, 4] {
            s.verify(t0, &open(1, &[1; 32], child, 80)).unwrap();
        }
        for child in [0, 2, 3, 4, 5] {
            assert_eq!(
                s.verify(t0, &open(1, &[1; 32], child, 80)),
                Err(OpenError::Replayed { child })
            );
        }
        // Far ahead: everything more than 64 behind the highest is refused.
        s.verify(t0, &open(1, &[1; 32], 200, 80)).unwrap();
        s.verify(t0, &open(1, &[1; 32], 137, 80)).unwrap();
        assert_eq!(
            s.verify(t0, &open(1, &[1; 32], 136, 80)),
            Err(OpenError::Replayed { child: 136 })
        );
        assert!(s.verify(t0, &open(1, &[1; 32], 6, 80)).is_err());
    }

    #[test]
    fn a_forged_open_does_not_verify_nor_use_up_its_child_number() {
        let t0 = Instant::now();
        let mut s = ServerTickets::default();
        s.store(t0, &ticket(1, t0), 80);
        // Wrong secret (a guess), altered fields, unknown parent.
        assert_eq!(
            s.verify(t0, &open(1, &[9; 32], 1, 80)),
            Err(OpenError::Unauthentic)
        );
        let mut o = open(1, &[1; 32], 1, 80);
        o.window ^= 1;
        assert_eq!(s.verify(t0, &o), Err(OpenError::Unauthentic));
        let mut o = open(1, &[1; 32], 1, 80);
        o.tag[0] ^= 1;
        assert_eq!(s.verify(t0, &o), Err(OpenError::Unauthentic));
        assert_eq!(
            s.verify(t0, &open(2, &[1; 32], 1, 80)),
            Err(OpenError::UnknownTicket)
        );
        // Another port than the ticket's.
        assert_eq!(
            s.verify(t0, &open(1, &[1; 32], 1, 81)),
            Err(OpenError::WrongPort {
                asked: 81,
                ticket: 80
            })
        );
        // None of those used child 1 up.
        s.verify(t0, &open(1, &[1; 32], 1, 80)).unwrap();
    }

    #[test]
    fn tickets_expire_and_chains_end_after_ten_minutes() {
        let t0 = Instant::now();
        let mut s = ServerTickets::default();
        s.store(t0, &ticket(1, t0), 80);
        let at = t0 + TICKET_LIFETIME - Duration::from_millis(1);
        s.verify(at, &open(1, &[1; 32], 1, 80)).unwrap();
        assert_eq!(
            s.verify(t0 + TICKET_LIFETIME, &open(1, &[1; 32], 2, 80)),
            Err(OpenError::UnknownTicket)
        );
        assert!(s.is_empty());
        // A chain: each child's ticket is fresh, but the chain's handshake was at t0.
        let mut now = t0;
        let mut id = 10;
        while now + Duration::from_secs(50) < t0 + CHAIN_LIFETIME {
            s.store(now, &ticket(id, t0), 80);
            now += Duration::from_secs(50);
            s.verify(now, &open(id, &[id; 32], 1, 80)).unwrap();
            id += 1;
        }
        s.store(now, &ticket(id, t0), 80);
        assert_eq!(
            s.verify(t0 + CHAIN_LIFETIME, &open(id, &[id; 32], 1, 80)),
            Err(OpenError::UnknownTicket)
        );
        // A ticket stored after its chain ended is not kept at all.
        s.store(t0 + CHAIN_LIFETIME, &ticket(99, t0), 80);
        assert!(s.is_empty());
    }

    #[test]
    fn the_tables_are_bounded_and_drop_the_oldest() {
        let t0 = Instant::now();
        let mut s = ServerTickets::default();
        let mut c = ClientTickets::default();
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        for i in 0..MAX_TICKETS as u32 + 10 {
            let mut t = ticket(0, t0);
            t.conn_id[..4].copy_from_slice(&i.to_be_bytes());
            s.store(t0, &t, 80);
            t.peer = Keypair::from_seed(&[(i % 250) as u8; 32]).public();
            c.store(t0, &t, (i / 250) as u16, addr);
            assert!(s.len() <= MAX_TICKETS && c.len() <= MAX_TICKETS);
            assert!(c.order.len() <= 2 * MAX_TICKETS + 64);
        }
        assert_eq!(s.len(), MAX_TICKETS);
        // The first ten went.
        let mut first = [0; 16];
        first[..4].copy_from_slice(&0u32.to_be_bytes());
        assert!(!s.entries.contains_key(&first));
        assert_eq!(c.len(), MAX_TICKETS);
        assert!(c.take(t0, &key(0).guid(), 0).is_none());
    }

    #[test]
    fn a_client_hands_out_each_child_number_once_and_forgets_a_failed_ticket() {
        let t0 = Instant::now();
        let mut c = ClientTickets::default();
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let guid = key(1).guid();
        assert!(c.take(t0, &guid, 80).is_none());
        c.store(t0, &ticket(1, t0), 80, addr);
        let a = c.take(t0, &guid, 80).unwrap();
        let b = c.take(t0, &guid, 80).unwrap();
        assert_eq!((a.child, b.child, a.parent, a.addr), (1, 2, [1; 16], addr));
        assert!(c.take(t0, &guid, 81).is_none());
        // A newer session's ticket replaces it; forgetting the old one leaves the new.
        c.store(t0, &ticket(2, t0), 80, addr);
        c.forget(&guid, 80, &[1; 16]);
        let n = c.take(t0, &guid, 80).unwrap();
        assert_eq!((n.parent, n.child), ([2; 16], 1));
        c.forget(&guid, 80, &[2; 16]);
        assert!(c.take(t0, &guid, 80).is_none());
        // Expiry: 60 s after storing, or 10 min after the chain's handshake.
        c.store(t0, &ticket(3, t0), 80, addr);
        assert_eq!(
            (c.live(t0), c.live(t0 + TICKET_LIFETIME), c.len()),
            (1, 0, 1)
        );
        assert!(c.take(t0 + TICKET_LIFETIME, &guid, 80).is_none());
        let late = t0 + CHAIN_LIFETIME - Duration::from_secs(1);
        c.store(late, &ticket(4, t0), 80, addr);
        assert!(c.take(late, &guid, 80).is_some());
        assert!(c.take(t0 + CHAIN_LIFETIME, &guid, 80).is_none());
    }

    #[test]
    fn a_ticket_handed_over_goes_on_at_its_next_child_number_in_one_engine_only() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(20);
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let guid = key(1).guid();
        let mut exiting = ClientTickets::default();
        exiting.store(t0, &ticket(1, t0), 80, addr);
        exiting.take(t0, &guid, 80).unwrap();
        exiting.take(t0, &guid, 80).unwrap();
        let held = exiting.hand_over(later);
        assert_eq!(held.len(), 1);
        assert!(exiting.is_empty(), "a handed-over ticket stays usable here");
        let h = held[0];
        assert_eq!((h.port, h.next_child, h.parent), (80, 3, [1; 16]));
        assert_eq!((h.stored_age, h.origin_age), (later - t0, later - t0));

        // The next process (its own clock) goes on at child 3; its expiry is the original's.
        let t1 = Instant::now() + Duration::from_secs(1000);
        let mut next = ClientTickets::default();
        assert!(next.adopt(t1, &h));
        let o = next.take(t1, &guid, 80).unwrap();
        assert_eq!(
            (o.child, o.parent, o.addr, o.secret),
            (3, [1; 16], addr, [1; 32])
        );
        let expiry = t1 + TICKET_LIFETIME - h.stored_age;
        assert_eq!(next.live(expiry - Duration::from_millis(1)), 1);
        assert_eq!(next.live(expiry), 0);

        // Not over a ticket of its own (newer), not expired, not with child 0.
        let mut own = ClientTickets::default();
        own.store(t1, &ticket(2, t1), 80, addr);
        assert!(!own.adopt(t1, &h));
        assert_eq!(own.take(t1, &guid, 80).unwrap().parent, [2; 16]);
        let stale = HeldTicket {
            stored_age: TICKET_LIFETIME,
            ..h
        };
        assert!(!ClientTickets::default().adopt(t1, &stale));
        let zero = HeldTicket { next_child: 0, ..h };
        assert!(!ClientTickets::default().adopt(t1, &zero));
        // Expired tickets are not handed over.
        let mut old = ClientTickets::default();
        old.store(t0, &ticket(3, t0), 80, addr);
        assert!(old.hand_over(t0 + TICKET_LIFETIME).is_empty());
    }
}
