//! Spare flow paths: a TCP connection to a peer's engine dialled ahead of the next connect.
//!
//! A connect to a peer this engine has just had a session with usually follows its ticket
//! (`crate::ticket`) with one OPEN, and its first bytes ride behind the OPEN. What is left
//! of the wait is the path's own TCP handshake: one round trip before the OPEN can leave.
//! So when a session to an address is established, the engine dials one more connection to
//! that address and keeps it, silent, for a short while; the next connect's dial to the
//! same address takes it instead of dialling, and its OPEN (or HELLO) leaves at once. A
//! dial that takes a spare leaves another in its place: a program connecting again and
//! again finds one each time. A spare still connecting is taken too (its handshake is
//! under way: the dial waits only for what is left of it).
//!
//! A spare sends nothing until it is taken: to the server it is an accepted connection
//! that has not yet presented its first frame, counted among those
//! (`crate::endpoint::MAX_UNATTACHED`) and closed after
//! `crate::endpoint::FIRST_FRAME_TIMEOUT`. A spare is used only within [`USE_WITHIN`] of
//! its dial, half that timeout, so the timeout never closes a spare as it is taken. A server
//! at its bound on such connections closes the oldest that waited
//! `crate::endpoint::YIELDS_ROOM_AFTER` for a new one; the engine checks, before taking a
//! spare, that its server has not closed it.
//!
//! This table is the policy (which addresses get a spare, which spare a dial may take, when
//! a spare is given up); the engine does the IO. Sans-IO: every call takes `now`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A spare older than this is closed, not used: well inside the server's first-frame
/// timeout (10 s), so the server cannot be closing it as the first frame arrives.
pub const USE_WITHIN: Duration = Duration::from_secs(5);
/// Spares one engine keeps at once (one per peer address at most).
pub const MAX_SPARES: usize = 16;

/// One spare: `H` is the engine's handle to its socket.
#[derive(Debug)]
struct Spare<H> {
    id: u64,
    addr: SocketAddr,
    dialled: Instant,
    handle: H,
}

/// The engine's spare paths, at most one per peer address.
#[derive(Debug)]
pub struct SparePaths<H> {
    spares: Vec<Spare<H>>,
    /// Addresses to dial a spare to once this turn's frames are out (at most
    /// [`MAX_SPARES`]).
    asked: Vec<SocketAddr>,
}

impl<H> Default for SparePaths<H> {
    fn default() -> Self {
        SparePaths {
            spares: Vec::new(),
            asked: Vec::new(),
        }
    }
}

impl<H> SparePaths<H> {
    /// Whether a session just established to `addr` should leave a spare behind: none is
    /// there or on its way, and the table has room.
    pub fn wants(&self, addr: SocketAddr) -> bool {
        self.spares.len() < MAX_SPARES && !self.spares.iter().any(|s| s.addr == addr)
    }

    /// A session was established to `addr`, or a dial took the spare there: a spare should
    /// go there, once the frames that turn made are written (the OPEN that took the last
    /// spare goes before the next one's TCP handshake).
    pub fn ask(&mut self, addr: SocketAddr) {
        if self.asked.len() < MAX_SPARES && !self.asked.contains(&addr) {
            self.asked.push(addr);
        }
    }

    /// The addresses asked for since the last call that still want a spare.
    pub fn asked(&mut self) -> Vec<SocketAddr> {
        let mut asked = std::mem::take(&mut self.asked);
        asked.retain(|&a| self.wants(a));
        asked
    }

    /// The engine started dialling `addr`; `id` names the dial in later calls.
    pub fn dialling(&mut self, now: Instant, id: u64, addr: SocketAddr, handle: H) {
        debug_assert!(self.wants(addr));
        self.spares.push(Spare {
            id,
            addr,
            dialled: now,
            handle,
        });
    }

    /// The spare `id`'s handle, to look at.
    pub fn get(&self, id: u64) -> Option<&H> {
        self.spares.iter().find(|s| s.id == id).map(|s| &s.handle)
    }

    /// The spare `id` failed to connect, or its server closed it or spoke first: it goes.
    pub fn lost(&mut self, id: u64) -> Option<H> {
        let i = self.spares.iter().position(|s| s.id == id)?;
        Some(self.spares.swap_remove(i).handle)
    }

    /// A dial to `addr`: the spare to take instead, if one is young enough.
    pub fn take(&mut self, now: Instant, addr: SocketAddr) -> Option<(u64, H)> {
        let i = self
            .spares
            .iter()
            .position(|s| s.addr == addr && now < s.dialled + USE_WITHIN)?;
        let s = self.spares.swap_remove(i);
        Some((s.id, s.handle))
    }

    /// Spares past [`USE_WITHIN`], connected or not, by id: the engine closes them.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, H)> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.spares.len() {
            if now >= self.spares[i].dialled + USE_WITHIN {
                let s = self.spares.swap_remove(i);
                gone.push((s.id, s.handle));
            } else {
                i += 1;
            }
        }
        gone
    }

    /// Every spare, by id: something moved (this host's addresses, a peer's record, a
    /// session's path), and a spare may lead where nobody answers any more.
    pub fn clear(&mut self) -> Vec<(u64, H)> {
        self.asked.clear();
        self.spares.drain(..).map(|s| (s.id, s.handle)).collect()
    }

    /// When the oldest spare expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.spares.iter().map(|s| s.dialled + USE_WITHIN).min()
    }

    /// Spares held now, dialling or connected.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.spares.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.spares.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_spare_is_taken_once_by_a_dial_to_its_address_while_young() {
        let t0 = Instant::now();
        let mut spares = SparePaths::default();
        assert!(spares.wants(addr(1)));
        spares.dialling(t0, 7, addr(1), "seven");
        assert!(!spares.wants(addr(1)), "one spare per address");
        assert!(spares.wants(addr(2)));
        assert_eq!(spares.take(t0, addr(2)), None, "not to another address");
        assert_eq!(
            spares.take(t0 + USE_WITHIN, addr(1)),
            None,
            "too old to use"
        );
        let later = t0 + USE_WITHIN - Duration::from_millis(1);
        assert_eq!(spares.take(later, addr(1)), Some((7, "seven")));
        assert_eq!(spares.take(later, addr(1)), None, "taken once");
        assert!(spares.is_empty());
        assert!(spares.wants(addr(1)), "the next session may leave another");
    }

    #[test]
    fn spares_expire_at_their_use_limit_and_a_lost_one_goes_at_once() {
        let t0 = Instant::now();
        let mut spares = SparePaths::default();
        spares.dialling(t0, 1, addr(1), 1);
        spares.dialling(t0 + Duration::from_secs(1), 2, addr(2), 2);
        spares.dialling(t0 + Duration::from_secs(2), 3, addr(3), 3);
        assert_eq!(spares.next_expiry(), Some(t0 + USE_WITHIN));
        assert!(
            spares
                .expire(t0 + USE_WITHIN - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(spares.expire(t0 + USE_WITHIN), vec![(1, 1)]);
        assert_eq!(
            spares.next_expiry(),
            Some(t0 + Duration::from_secs(1) + USE_WITHIN)
        );
        assert_eq!(spares.lost(3), Some(3));
        assert_eq!(spares.lost(3), None);
        assert_eq!(spares.len(), 1);
        assert_eq!(spares.get(2), Some(&2));
        assert_eq!(spares.expire(t0 + Duration::from_secs(60)), vec![(2, 2)]);
        assert_eq!(spares.get(2), None);
        assert_eq!(spares.next_expiry(), None);
    }

    #[test]
    fn spares_asked_for_in_a_turn_are_dialled_once_each_unless_cleared() {
        let t0 = Instant::now();
        let mut spares = SparePaths::default();
        spares.dialling(t0, 1, addr(1), ());
        spares.ask(addr(1));
        spares.ask(addr(2));
        spares.ask(addr(2));
        assert_eq!(
            spares.asked(),
            vec![addr(2)],
            "one per address, none where one is"
        );
        assert!(spares.asked().is_empty(), "asked once");
        spares.ask(addr(3));
        spares.clear();
        assert!(spares.asked().is_empty(), "something moved: not dialled");
        for i in 0..2 * MAX_SPARES as u16 {
            spares.ask(addr(i));
        }
        assert_eq!(spares.asked().len(), MAX_SPARES);
    }

    #[test]
    fn the_table_is_bounded() {
        let t0 = Instant::now();
        let mut spares = SparePaths::default();
        for i in 0..MAX_SPARES as u16 {
            assert!(spares.wants(addr(i)));
            spares.dialling(t0, u64::from(i), addr(i), ());
        }
        assert!(!spares.wants(addr(u16::MAX)));
        assert_eq!(spares.len(), MAX_SPARES);
    }
}
