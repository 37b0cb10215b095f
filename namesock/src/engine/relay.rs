//! The application side of a session: the program's real kernel socket (loopback TCP), and
//! the bounded relay between it and the session.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use mio::Token;
use mio::net::TcpStream;

use crate::session::Session;

use super::delivery::DeliveryEntry;
use super::path::READ_CHUNK;
use super::sys;

/// Length of the secret a connecting program writes first on its relay connection, so the
/// engine knows which session the connection belongs to.
pub const SECRET_LEN: usize = 16;

pub struct AppSide {
    /// Server side: the delivery's entry. Declared before `stream`, so it is dropped (and
    /// the delivery forgotten) before the socket closes: an entry never outlives the
    /// engine's end of its connection.
    delivery: Option<DeliveryEntry>,
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
    /// The program's socket failed: the session was aborted.
    pub failed: bool,
}

impl AppSide {
    pub fn new(stream: TcpStream, token: Token, connecting: bool) -> AppSide {
        let _ = sys::set_nodelay(stream.as_raw_fd());
        AppSide {
            delivery: None,
            stream,
            token,
            readable: !connecting,
            writable: !connecting,
            connecting,
            read_eof: false,
            wrote_eof: false,
            failed: false,
        }
    }

    /// This socket delivers a session (server side): `entry` lives as long as it.
    pub fn delivering(mut self, entry: DeliveryEntry) -> AppSide {
        self.delivery = Some(entry);
        self
    }

    /// The program half-closed its socket (and the session took every byte before it).
    pub fn read_eof(&self) -> bool {
        self.read_eof
    }

    /// Bytes of the program that the session has not taken yet (still in the socket), or
    /// its end of stream not yet seen (a full replay buffer stops the reads before it).
    pub fn has_backlog(&self) -> bool {
        sys::has_input(self.stream.as_raw_fd())
    }

    /// The peer's FIN reached the program's socket, and with it every byte before it.
    pub fn passed_eof(&self) -> bool {
        self.wrote_eof
    }

    /// Moves bytes both ways as far as readiness, buffers and the session's room allow;
    /// reads go through `scratch` (the engine's, shared by every relay).
    pub fn pump(&mut self, session: &mut Session, scratch: &mut [u8]) {
        if self.connecting || self.failed {
            return;
        }
        self.pump_in(session, scratch);
        if !self.failed {
            self.pump_out(session);
        }
    }

    /// Program -> session. Reads from the program only what the session has room for:
    /// otherwise the socket's own buffers fill and the program blocks (until ACKs free
    /// replay room and the engine pumps again).
    fn pump_in(&mut self, session: &mut Session, scratch: &mut [u8]) {
        while self.readable && !self.read_eof {
            let room = session.app_room().min(READ_CHUNK).min(scratch.len());
            if room == 0 {
                return;
            }
            match self.stream.read(&mut scratch[..room]) {
                Ok(0) => {
                    self.read_eof = true;
                    session.app_shutdown_write();
                }
                Ok(n) => {
                    let taken = session.app_write(&scratch[..n]);
                    debug_assert_eq!(taken, n, "the session took less than its room");
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => self.readable = false,
                    io::ErrorKind::Interrupted => {}
                    _ => return self.fail(session, &e),
                },
            }
        }
    }

    /// Session -> program. Writes the session's receive buffer in place; what the program's
    /// socket does not take stays there (and unacknowledged, so the peer's window holds).
    fn pump_out(&mut self, session: &mut Session) {
        loop {
            let [front, back] = session.app_readable();
            if front.is_empty() {
                return self.pass_eof(session);
            }
            if !self.writable {
                return;
            }
            match self
                .stream
                .write_vectored(&[IoSlice::new(front), IoSlice::new(back)])
            {
                Ok(0) => return self.fail(session, &io::ErrorKind::WriteZero.into()),
                Ok(n) => session.app_consume(n),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.writable = false;
                        return;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return self.fail(session, &e),
                },
            }
        }
    }

    /// The peer's FIN reaches the program once every byte before it did.
    fn pass_eof(&mut self, session: &Session) {
        if !self.wrote_eof && session.app_read_eof() {
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
    pub fn reset(mut self) {
        drop(self.delivery.take());
        let _ = sys::set_linger_zero(self.stream.as_raw_fd());
        drop(self.stream);
    }
}
