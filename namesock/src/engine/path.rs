//! A flow path: one TCP connection between two engines, carrying frames.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::Token;
use mio::net::TcpStream;

use crate::wire::{DecodeError, Frame, FrameRef, MAX_FRAME};

/// Frames are encoded into the write buffer only while it holds less than this.
pub const WRITE_HIGH: usize = 128 * 1024;
/// Bytes read from the socket per read call: the size of the engine's scratch buffer.
pub const READ_CHUNK: usize = 64 * 1024;

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
    /// Bytes read and not yet decoded: a partial frame, or frames left when the caller
    /// stopped early. Reads go to the engine's scratch buffer, so an idle path holds nothing.
    rbuf: Vec<u8>,
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
            wbuf: Vec::new(),
            wpos: 0,
            writable: false,
        }
    }

    /// Reads until WouldBlock (through `scratch`, at least `READ_CHUNK` bytes), handing every
    /// complete frame (decoded in place) to `on_frame` until it returns `false`. What is left over, at most one
    /// partial frame plus one chunk, waits in the path's own buffer.
    pub fn read_frames(
        &mut self,
        scratch: &mut [u8],
        mut on_frame: impl FnMut(FrameRef<'_>) -> bool,
    ) -> ReadOutcome {
        loop {
            if !self.rbuf.is_empty() {
                let (used, stop) = match decode_frames(&self.rbuf, &mut on_frame) {
                    Ok(done) => done,
                    Err(e) => return ReadOutcome::Malformed(e),
                };
                self.rbuf.drain(..used);
                if stop {
                    return ReadOutcome::Open;
                }
                if self.rbuf.len() > MAX_FRAME {
                    return ReadOutcome::Closed(Some(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "frame larger than MAX_FRAME",
                    )));
                }
            }
            let n = match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Closed(None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.rbuf.is_empty() {
                        self.rbuf = Vec::new();
                    }
                    return ReadOutcome::Open;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadOutcome::Closed(Some(e)),
            };
            if !self.rbuf.is_empty() {
                self.rbuf.extend_from_slice(&scratch[..n]);
                continue;
            }
            // The common case: whole frames straight from the scratch buffer.
            let (used, stop) = match decode_frames(&scratch[..n], &mut on_frame) {
                Ok(done) => done,
                Err(e) => return ReadOutcome::Malformed(e),
            };
            self.rbuf.extend_from_slice(&scratch[used..n]);
            if stop {
                return ReadOutcome::Open;
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

/// Hands the complete frames at the start of `buf` to `on_frame`; returns the bytes they
/// took and whether `on_frame` asked to stop.
fn decode_frames(
    buf: &[u8],
    on_frame: &mut impl FnMut(FrameRef<'_>) -> bool,
) -> Result<(usize, bool), DecodeError> {
    let mut pos = 0;
    while let Some((frame, used)) = FrameRef::decode_ref(&buf[pos..])? {
        pos += used;
        if !on_frame(frame) {
            return Ok((pos, true));
        }
    }
    Ok((pos, false))
}
