//! The application side of a session: the program's real kernel socket (loopback TCP), and
//! the bounded relay between it and the session.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use mio::Token;
use mio::net::TcpStream;

use crate::session::Session;

use super::sys;

/// Length of the secret a connecting program writes first on its relay connection, so the
/// engine knows which session the connection belongs to.
pub const SECRET_LEN: usize = 16;

pub struct AppSide {
    pub stream: TcpStream,
    pub token: Token,
    /// Edge-triggered readiness, remembered until WouldBlock.
    pub readable: bool,
    pub writable: bool,
    /// The delivery connect (server side) has not completed yet.
    pub connecting: bool,
    /// The program half-closed (EOF seen and passed on with `app_shutdown_write`).
    read_eof: bool,
    /// SHUT_WR sent to the program after the peer's FIN.
    wrote_eof: bool,
    /// Bytes read from the program that the session has not taken yet (no replay room):
    /// `inbound[in_pos..]`. Reads and writes go through the engine's scratch buffer; only
    /// such leftovers (at most one scratch buffer each way) are kept here.
    inbound: Vec<u8>,
    in_pos: usize,
    /// Bytes taken from the session that the program's socket has not taken yet:
    /// `outbound[out_pos..]`.
    outbound: Vec<u8>,
    out_pos: usize,
    /// The program's socket failed: the session was aborted.
    pub failed: bool,
}

impl AppSide {
    pub fn new(stream: TcpStream, token: Token, connecting: bool) -> AppSide {
        let _ = sys::set_nodelay(stream.as_raw_fd());
        AppSide {
            stream,
            token,
            readable: !connecting,
            writable: !connecting,
            connecting,
            read_eof: false,
            wrote_eof: false,
            inbound: Vec::new(),
            in_pos: 0,
            outbound: Vec::new(),
            out_pos: 0,
            failed: false,
        }
    }

    /// The program half-closed its socket (and the session took every byte before it).
    pub fn read_eof(&self) -> bool {
        self.read_eof
    }

    /// Bytes of the program that the session has not taken yet (buffered here or still in
    /// the socket).
    pub fn backlog(&self) -> usize {
        let here = self.inbound.len() - self.in_pos;
        here + sys::unread(self.stream.as_raw_fd()).unwrap_or(0)
    }

    /// Everything taken from the session reached the program's socket.
    pub fn flushed(&self) -> bool {
        self.outbound.is_empty()
    }

    /// Moves bytes both ways as far as readiness, buffers and the session's room allow,
    /// through `scratch` (the engine's, shared by every relay).
    pub fn pump(&mut self, session: &mut Session, scratch: &mut [u8]) {
        if self.connecting || self.failed {
            return;
        }
        self.pump_in(session, scratch);
        if !self.failed {
            self.pump_out(session, scratch);
        }
    }

    /// Program -> session. Reads from the program only while the session accepts bytes
    /// (replay room): otherwise the socket's own buffers fill and the program blocks.
    fn pump_in(&mut self, session: &mut Session, scratch: &mut [u8]) {
        loop {
            if !self.inbound.is_empty() {
                self.in_pos += session.app_write(&self.inbound[self.in_pos..]);
                if self.in_pos < self.inbound.len() {
                    return; // no room: wait for Event::Writable
                }
                (self.inbound, self.in_pos) = (Vec::new(), 0);
            }
            if self.read_eof || !self.readable {
                return;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.read_eof = true;
                    session.app_shutdown_write();
                    return;
                }
                Ok(n) => {
                    let taken = session.app_write(&scratch[..n]);
                    if taken < n {
                        self.inbound = scratch[taken..n].to_vec();
                        return;
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        return;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return self.fail(session, &e),
                },
            }
        }
    }

    /// Session -> program. Takes from the session only what the program's socket accepts
    /// (plus at most one scratch buffer's worth kept here).
    fn pump_out(&mut self, session: &mut Session, scratch: &mut [u8]) {
        loop {
            let n = if !self.outbound.is_empty() {
                if !self.writable {
                    return;
                }
                None
            } else if self.wrote_eof || !self.writable {
                return self.pass_eof(session);
            } else {
                match session.app_read(scratch) {
                    0 => return self.pass_eof(session),
                    n => Some(n),
                }
            };
            let pending = match n {
                Some(n) => &scratch[..n],
                None => &self.outbound[self.out_pos..],
            };
            match self.stream.write(pending) {
                Ok(w) if n.is_some() => {
                    if w < pending.len() {
                        self.outbound = pending[w..].to_vec();
                    }
                }
                Ok(w) => {
                    self.out_pos += w;
                    if self.out_pos == self.outbound.len() {
                        (self.outbound, self.out_pos) = (Vec::new(), 0);
                    }
                }
                Err(e) => {
                    if n.is_some() {
                        self.outbound = pending.to_vec();
                    }
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.writable = false;
                            return;
                        }
                        io::ErrorKind::Interrupted => {}
                        _ => return self.fail(session, &e),
                    }
                }
            }
        }
    }

    /// The peer's FIN reaches the program once every byte before it did.
    fn pass_eof(&mut self, session: &Session) {
        if !self.wrote_eof && self.outbound.is_empty() && session.app_read_eof() {
            self.wrote_eof = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
    }

    fn fail(&mut self, session: &mut Session, e: &io::Error) {
        tracing::debug!(error = %e, "program socket failed: aborting session");
        self.failed = true;
        session.app_abort();
    }

    /// The session was reset: close the program's socket with a RST so it sees ECONNRESET.
    pub fn reset(self) {
        let _ = sys::set_linger_zero(self.stream.as_raw_fd());
        drop(self.stream);
    }
}
