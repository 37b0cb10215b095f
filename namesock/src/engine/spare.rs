//! The engine's side of spare paths (`crate::spare_paths`): dialling one where a session
//! was just established, watching it while it waits, handing it to the next dial there.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::Token;
use mio::net::TcpStream;

use super::event_loop::{Engine, Io};
use super::sys;

/// Whether a spare can still carry a first frame: connected or connecting, and nothing
/// from the server (not its close, nor bytes nobody asked for), nor an error. One peek
/// tells all: a connection still connecting or with nothing to read would block; a failed
/// dial returns its error, a closed one its end (0), a server that wrote, bytes.
fn usable(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Engine {
    /// A client session was established to `addr` over a direct path, or took the spare
    /// there: leave a spare there, unless one is there already. The dial waits until the
    /// turn's frames are written ([`Engine::dial_spares`]): the OPEN that took the last spare
    /// goes first.
    pub(super) fn leave_spare(&mut self, addr: SocketAddr) {
        if self.cfg.spare_paths {
            self.spares.ask(addr);
        }
    }

    /// Dials the spares [`Engine::leave_spare`] asked for this turn.
    pub(super) fn dial_spares(&mut self, now: Instant) {
        for addr in self.spares.asked() {
            self.dial_spare(addr, now);
        }
    }

    fn dial_spare(&mut self, addr: SocketAddr, now: Instant) {
        let token = self.token();
        match sys::dial_registered(self.poll.registry(), token, addr, None, self.path_tuning()) {
            Ok(stream) => {
                tracing::debug!(%addr, "spare path dialled");
                self.spares.dialling(now, token.0 as u64, addr, stream);
                self.io.insert(token, Io::Spare);
                self.counters.tickets.spare_paths_dialled += 1;
            }
            Err(e) => tracing::debug!(%addr, error = %e, "spare path not dialled"),
        }
    }

    /// An event on a spare: its dial completed or failed, or its server closed it.
    pub(super) fn on_spare(&mut self, token: Token) {
        let id = token.0 as u64;
        if self.spares.get(id).is_none_or(usable) {
            return;
        }
        tracing::debug!("spare path lost before use");
        self.counters.tickets.spare_paths_lost += 1;
        if let Some(stream) = self.spares.lost(id) {
            self.close_spare(token, stream);
        }
    }

    /// A dial to `remote`: the spare there, if it is still usable, with its token (its
    /// registration goes with it), and another spare dialled in its place.
    pub(super) fn take_spare(
        &mut self,
        remote: SocketAddr,
        now: Instant,
    ) -> Option<(Token, TcpStream)> {
        let (id, stream) = self.spares.take(now, remote)?;
        let token = Token(id as usize);
        if !usable(&stream) {
            self.counters.tickets.spare_paths_lost += 1;
            self.close_spare(token, stream);
            return None;
        }
        self.counters.tickets.spare_paths_used += 1;
        self.io.remove(&token);
        self.leave_spare(remote);
        Some((token, stream))
    }

    /// Closes the spares past their use limit.
    pub(super) fn expire_spares(&mut self, now: Instant) {
        for (id, stream) in self.spares.expire(now) {
            self.close_spare(Token(id as usize), stream);
        }
    }

    /// Closes every spare. A spare whose server moved, or that left from an address this
    /// host no longer has, would look open until used; an OPEN on it, its request behind it,
    /// would then fail after the server may have taken the request, and the program would
    /// see a reset where a fresh dial falls back to a handshake (`open_failed_after_answer`).
    pub(super) fn drop_spares(&mut self, why: &'static str) {
        let spares = self.spares.clear();
        if !spares.is_empty() {
            tracing::debug!(spares = spares.len(), "spare paths closed: {why}");
        }
        for (id, stream) in spares {
            self.close_spare(Token(id as usize), stream);
        }
    }

    fn close_spare(&mut self, token: Token, mut stream: TcpStream) {
        self.io.remove(&token);
        let _ = self.poll.registry().deregister(&mut stream);
    }
}
