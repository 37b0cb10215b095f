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
/// Each direction buffers at most this much between the socket and the session.
const BUF: usize = 64 * 1024;

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
    /// `inbound[in_pos..in_len]`. Both buffers are zeroed once, on first use, not per read.
    inbound: Vec<u8>,
    in_pos: usize,
    in_len: usize,
    /// Bytes taken from the session that the program's socket has not taken yet:
    /// `outbound[out_pos..out_len]`.
    outbound: Vec<u8>,
    out_pos: usize,
    out_len: usize,
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
            in_len: 0,
            outbound: Vec::new(),
            out_pos: 0,
            out_len: 0,
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
        let here = self.in_len - self.in_pos;
        here + sys::unread(self.stream.as_raw_fd()).unwrap_or(0)
    }

    /// Everything taken from the session reached the program's socket.
    pub fn flushed(&self) -> bool {
        self.out_len == self.out_pos
    }

    /// Moves bytes both ways as far as readiness, buffers and the session's room allow.
    pub fn pump(&mut self, session: &mut Session) {
        if self.connecting || self.failed {
            return;
        }
        self.pump_in(session);
        if !self.failed {
            self.pump_out(session);
        }
    }

    /// Program -> session. Reads from the program only while the session accepts bytes
    /// (replay room): otherwise the socket's own buffers fill and the program blocks.
    fn pump_in(&mut self, session: &mut Session) {
        loop {
            if self.in_pos < self.in_len {
                let n = session.app_write(&self.inbound[self.in_pos..self.in_len]);
                self.in_pos += n;
                if self.in_pos < self.in_len {
                    return; // no room: wait for Event::Writable
                }
            }
            if self.read_eof || !self.readable {
                return;
            }
            if self.inbound.is_empty() {
                self.inbound = vec![0; BUF];
            }
            (self.in_pos, self.in_len) = (0, 0);
            match self.stream.read(&mut self.inbound) {
                Ok(0) => {
                    self.read_eof = true;
                    session.app_shutdown_write();
                    return;
                }
                Ok(n) => self.in_len = n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.readable = false;
                        return;
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        tracing::debug!(error = %e, "program socket failed: aborting session");
                        self.failed = true;
                        session.app_abort();
                        return;
                    }
                },
            }
        }
    }

    /// Session -> program.
    fn pump_out(&mut self, session: &mut Session) {
        loop {
            if self.out_pos < self.out_len {
                if !self.writable {
                    return;
                }
                match self
                    .stream
                    .write(&self.outbound[self.out_pos..self.out_len])
                {
                    Ok(n) => self.out_pos += n,
                    Err(e) => match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.writable = false;
                            return;
                        }
                        io::ErrorKind::Interrupted => {}
                        _ => {
                            tracing::debug!(error = %e, "program socket failed: aborting session");
                            self.failed = true;
                            session.app_abort();
                            return;
                        }
                    },
                }
                continue;
            }
            if self.wrote_eof {
                return;
            }
            if self.outbound.is_empty() {
                self.outbound = vec![0; BUF];
            }
            let n = session.app_read(&mut self.outbound);
            (self.out_pos, self.out_len) = (0, n);
            if n == 0 {
                if session.app_read_eof() {
                    self.wrote_eof = true;
                    let _ = self.stream.shutdown(Shutdown::Write);
                }
                return;
            }
        }
    }

    /// The session was reset: close the program's socket with a RST so it sees ECONNRESET.
    pub fn reset(self) {
        let _ = sys::set_linger_zero(self.stream.as_raw_fd());
        drop(self.stream);
    }
}
