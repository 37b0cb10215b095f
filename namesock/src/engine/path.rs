//! A flow path: one TCP connection between two engines, carrying frames.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::Token;
use mio::net::TcpStream;

use crate::wire::{DecodeError, Frame, MAX_FRAME};

/// Frames are encoded into the write buffer only while it holds less than this.
pub const WRITE_HIGH: usize = 128 * 1024;
/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Non-blocking connect in progress (client).
    Connecting,
    /// Carrying frames.
    Open,
    /// Flushing a last frame (a RESET), then closed.
    Closing,
}

pub struct FlowPath {
    pub stream: TcpStream,
    pub token: Token,
    /// The session (engine conn key) this path belongs to; `None` for a server path that has
    /// not yet presented a HELLO or RESUME.
    pub conn: Option<u64>,
    pub state: PathState,
    pub remote: SocketAddr,
    pub local: Option<SocketAddr>,
    pub started: Instant,
    /// The client asked the session to use this path (`path_opened` was called).
    pub opened: bool,
    /// Paths to close once this one has carried a frame from the peer (make-before-break).
    pub replaces: Vec<u32>,
    /// A multihomed client's extra path, pinned to one more local address.
    pub standby: bool,
    /// Bytes read and not yet decoded are `rbuf[rstart..rend]`; the buffer is zeroed once
    /// (when the first bytes arrive), not per read.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    pub writable: bool,
}

/// What reading a path produced.
pub enum ReadOutcome {
    /// Still open (WouldBlock reached).
    Open,
    /// The peer closed or the connection failed.
    Closed(Option<io::Error>),
    /// Malformed bytes: close the path.
    Malformed(DecodeError),
}

impl FlowPath {
    pub fn new(stream: TcpStream, token: Token, remote: SocketAddr, state: PathState) -> FlowPath {
        let local = stream.local_addr().ok();
        FlowPath {
            stream,
            token,
            conn: None,
            state,
            remote,
            local,
            started: Instant::now(),
            opened: false,
            replaces: Vec::new(),
            standby: false,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            writable: false,
        }
    }

    /// Reads until WouldBlock, handing every complete frame to `on_frame`. The read buffer
    /// never holds more than one partial frame plus one chunk.
    pub fn read_frames(&mut self, mut on_frame: impl FnMut(Frame) -> bool) -> ReadOutcome {
        loop {
            // Frames already buffered first (a previous call may have stopped early).
            let mut stop = false;
            while self.rstart < self.rend {
                match Frame::decode(&self.rbuf[self.rstart..self.rend]) {
                    Ok(Some((frame, used))) => {
                        self.rstart += used;
                        if !on_frame(frame) {
                            stop = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return ReadOutcome::Malformed(e),
                }
            }
            if self.rstart == self.rend {
                (self.rstart, self.rend) = (0, 0);
            }
            if stop {
                return ReadOutcome::Open;
            }
            if self.rend - self.rstart > MAX_FRAME {
                return ReadOutcome::Closed(Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "frame larger than MAX_FRAME",
                )));
            }
            if self.rbuf.is_empty() {
                self.rbuf = vec![0; MAX_FRAME + READ_CHUNK];
            }
            if self.rbuf.len() - self.rend < READ_CHUNK {
                // Move the partial frame to the front: at most MAX_FRAME bytes.
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                (self.rstart, self.rend) = (0, self.rend - self.rstart);
            }
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => return ReadOutcome::Closed(None),
                Ok(n) => self.rend += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ReadOutcome::Closed(Some(e)),
            }
        }
    }

    /// Room for another frame?
    pub fn has_room(&self) -> bool {
        self.wbuf.len() - self.wpos < WRITE_HIGH
    }

    pub fn queue(&mut self, frame: &Frame) {
        if self.wpos > 0 && self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        frame.encode(&mut self.wbuf);
    }

    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes queued bytes until done or WouldBlock. `Err` = the path failed.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > WRITE_HIGH {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }
}
