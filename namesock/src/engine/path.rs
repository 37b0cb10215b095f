//! A flow path: one TCP connection between two engines, carrying frames.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::TcpStream;

use crate::wire::{DecodeError, FrameReader, MAX_FRAME, Record, Step};

/// Frames are encoded into the write buffer only while it holds less than this.
pub const WRITE_HIGH: usize = 128 * 1024;
/// The write buffer's capacity at most: [`WRITE_HIGH`] and the frame that crossed it (a `Vec`
/// left to double would take 256 KiB, and 512 KiB with a partly written front).
pub const WRITE_CAP: usize = WRITE_HIGH + MAX_FRAME;
/// Unwritten bytes up to this much are moved to the front of a full write buffer to make room
/// for more frames; behind more than this, the path waits for its socket to take them.
const COMPACT_BELOW: usize = 16 * 1024;
/// Bytes read from a socket per read call, at least.
pub const READ_CHUNK: usize = 256 * 1024;
/// The engine's scratch buffer: a read chunk behind the largest partial frame.
pub const SCRATCH_LEN: usize = MAX_FRAME + READ_CHUNK;
/// A path's empty write buffer holding more than this is given back once its socket took a
/// whole staging buffer's frames at once (see [`FlowPath::send_frames`]): a few control
/// frames' worth is kept.
const KEEP_WHEN_EMPTY: usize = 16 * 1024;
/// How often a path carrying frames has its kernel's round trip read again: the minimum only
/// falls, and a reading costs a system call.
const TRANSPORT_RTT_EVERY: Duration = Duration::from_secs(1);

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
    /// Bytes read and not yet decoded: a partial frame, or frames left when the caller
    /// stopped early. Reads go to the engine's scratch buffer, so an idle path holds nothing.
    rbuf: FrameReader,
    /// Frames the socket has not taken yet (from `wpos` on), and frames queued behind them.
    wbuf: Vec<u8>,
    wpos: usize,
    pub writable: bool,
    /// An event said the peer closed its side or the socket failed: read on to the end (or
    /// the error) instead of stopping at a short read (see [`FlowPath::read_frames`]).
    pub read_to_end: bool,
    /// When [`FlowPath::transport_rtt`] last read the kernel's round trip.
    rtt_read_at: Option<Instant>,
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
            rbuf: FrameReader::new(),
            wbuf: Vec::new(),
            wpos: 0,
            writable: false,
            read_to_end: false,
            rtt_read_at: None,
        }
    }

    /// Heap memory held: frames not yet written and bytes not yet decoded.
    pub fn buffer_capacity(&self) -> usize {
        self.wbuf.capacity() + self.rbuf.capacity()
    }

    /// The shortest round trip the kernel measured on this connection, when one is known;
    /// asked of the kernel at most once per [`TRANSPORT_RTT_EVERY`] (`None` in between).
    pub fn transport_rtt(&mut self, now: Instant) -> Option<Duration> {
        if self
            .rtt_read_at
            .is_some_and(|at| now.saturating_duration_since(at) < TRANSPORT_RTT_EVERY)
        {
            return None;
        }
        self.rtt_read_at = Some(now);
        super::sys::tcp_min_rtt(self.stream.as_raw_fd())
            .ok()
            .flatten()
    }

    /// Reads until the socket runs dry into `scratch` (at least [`SCRATCH_LEN`] bytes),
    /// handing every complete record (decoded in place; a SEALED one still encrypted, for the
    /// session to open in place) to `on_frame` until it returns `false`.
    ///
    /// The socket ran dry when a read returned less than it asked for: the kernel copies all
    /// it holds, and a segment queued after that copy raises a new edge-triggered event, so
    /// the read that would only answer WouldBlock is not made (it was every other read of a
    /// busy engine). Unless [`FlowPath::read_to_end`]: the end of the stream shows as a read
    /// of 0 after the data, and its event may already be taken.
    ///
    /// The framing is the path's [`FrameReader`]: a byte is copied again only when it belongs
    /// to a frame cut by a read, and then once at most; what is left when the socket runs dry
    /// (at most one partial frame) or when `on_frame` stops waits in the reader.
    pub fn read_frames(
        &mut self,
        scratch: &mut [u8],
        mut on_frame: impl FnMut(Record<'_>) -> bool,
    ) -> ReadOutcome {
        debug_assert!(scratch.len() >= SCRATCH_LEN);
        let mut round = self.rbuf.round(scratch);
        let mut ran_dry = false;
        loop {
            match round.frames(&mut on_frame) {
                Ok(Step::NeedBytes) if ran_dry => return ReadOutcome::Open,
                Ok(Step::NeedBytes) => {}
                Ok(Step::Stopped) => return ReadOutcome::Open,
                Err(e) => return ReadOutcome::Malformed(e),
            }
            let buf = round.buf();
            let asked = buf.len();
            match self.stream.read(buf) {
                Ok(0) => return ReadOutcome::Closed(None),
                Ok(n) => {
                    ran_dry = n < asked && !self.read_to_end;
                    round.filled(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return ReadOutcome::Closed(Some(e)),
            }
        }
    }

    /// Room for another frame? Below [`WRITE_HIGH`], written bytes counted, or when the few
    /// unwritten ones can move to the front (`write_buf`).
    fn has_room(&self) -> bool {
        self.wbuf.len() < WRITE_HIGH || self.pending() < COMPACT_BELOW
    }

    /// The buffer to append one frame to (what `flush` writes), with room for it within
    /// [`WRITE_CAP`] when [`FlowPath::has_room`] said so.
    pub fn write_buf(&mut self) -> &mut Vec<u8> {
        if self.wpos > 0 && (self.wpos == self.wbuf.len() || self.wbuf.len() >= WRITE_HIGH) {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        let len = self.wbuf.len();
        if len + MAX_FRAME > self.wbuf.capacity() && self.wbuf.capacity() >= WRITE_HIGH / 2 {
            // Growing past half the high mark: to the cap at once, not by doubling.
            self.wbuf.reserve_exact(WRITE_CAP.saturating_sub(len));
        }
        &mut self.wbuf
    }

    /// Bytes encoded, not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Encodes frames with `encode` (it appends one and says whether it did) and writes them,
    /// until `encode` has none left or the socket is full. `Err` = the path failed.
    ///
    /// While nothing of this path waits for its socket, frames are encoded into the engine's
    /// `staging` buffer (one for all paths, [`WRITE_CAP`]) and written from there. When the
    /// socket does not take them all, the path takes the staging buffer as its own, with what
    /// is left in it (no copy), and the engine takes the path's empty one in exchange; later
    /// frames queue behind in the path's buffer, in order, until the socket took it. A path
    /// whose socket keeps up gives its buffer back, so a busy path holds one only while its
    /// socket is behind (before, every busy path held [`WRITE_CAP`] from turn to turn).
    pub fn send_frames(
        &mut self,
        staging: &mut Vec<u8>,
        mut encode: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> io::Result<()> {
        loop {
            if self.pending() > 0 || !self.writable {
                while self.has_room() && encode(self.write_buf()) {}
                if self.pending() == 0 || !self.writable {
                    return Ok(());
                }
                self.flush()?;
                if self.pending() > 0 {
                    return Ok(());
                }
                continue;
            }
            staging.clear();
            while staging.len() < WRITE_HIGH && encode(staging) {}
            if staging.is_empty() {
                return Ok(());
            }
            let written = write_out(&mut self.stream, staging)?;
            if written < staging.len() {
                self.writable = false;
                std::mem::swap(staging, &mut self.wbuf);
                self.wpos = written;
                staging.clear();
                staging.reserve_exact(WRITE_CAP);
                return Ok(());
            }
            if self.wbuf.capacity() > KEEP_WHEN_EMPTY {
                self.wbuf = Vec::new();
            }
        }
    }

    /// Writes queued bytes until done or WouldBlock. `Err` = the path failed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.wpos += write_out(&mut self.stream, &self.wbuf[self.wpos..])?;
        if self.wpos < self.wbuf.len() {
            self.writable = false;
        } else {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }
}

/// Writes `bytes` to `stream` until done or WouldBlock; how many it took.
fn write_out(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match stream.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::thread::{self, JoinHandle};
    use std::time::Duration;

    use super::*;

    /// A path's engine end (non-blocking), connected over loopback, and the peer's end.
    fn path_and_peer() -> (FlowPath, StdStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let remote = l.local_addr().unwrap();
        let ours = StdStream::connect(remote).unwrap();
        let (peer, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let fp = FlowPath::new(TcpStream::from_std(ours), Token(1), remote, PathState::Open);
        (fp, peer)
    }

    /// [`path_and_peer`], the peer reading everything until the path closes.
    fn connected_path() -> (FlowPath, JoinHandle<Vec<u8>>) {
        let (fp, mut peer) = path_and_peer();
        fp.stream.set_nodelay(true).unwrap();
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        (fp, reader)
    }

    /// Flushes until the socket took everything (in as many pieces as it likes).
    fn flush_all(fp: &mut FlowPath) {
        fp.flush().unwrap();
        while fp.pending() > 0 {
            thread::sleep(Duration::from_millis(1));
            fp.flush().unwrap();
        }
    }

    #[test]
    fn a_short_read_ends_the_round_and_the_end_of_the_stream_waits_for_its_event() {
        let (mut fp, mut peer) = path_and_peer();
        let mut frame = Vec::new();
        crate::wire::Frame::<Vec<u8>>::Ping { token: 7 }
            .encode_sealed(&mut frame, |_, _| [0; crate::wire::TAG_LEN]);
        peer.write_all(&frame).unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        // The frame and the peer's FIN behind it have both arrived.
        thread::sleep(Duration::from_millis(50));
        let mut scratch = vec![0u8; SCRATCH_LEN];
        let mut frames = 0;
        let mut read = |fp: &mut FlowPath| {
            fp.read_frames(&mut scratch, |_| {
                frames += 1;
                true
            })
        };
        // The read that took the frame was short: the round ends with it, not with another read.
        assert!(matches!(read(&mut fp), ReadOutcome::Open));
        // The event that said the peer closed (EPOLLRDHUP) has the path read on to the end.
        fp.read_to_end = true;
        assert!(matches!(read(&mut fp), ReadOutcome::Closed(None)));
        assert_eq!(frames, 1);
    }

    #[test]
    fn a_path_whose_socket_takes_bytes_in_pieces_never_holds_more_than_its_cap() {
        let (mut fp, mut peer) = path_and_peer();
        // Small kernel buffers: most flushes end with WouldBlock and bytes left unwritten.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fp.stream);
        super::super::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024)
            .unwrap();
        fp.writable = true;
        let total: usize = 8 << 20;
        let reader = thread::spawn(move || {
            let mut all = Vec::with_capacity(total);
            let mut buf = [0u8; 7000];
            loop {
                match peer.read(&mut buf).unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        // Frames of every size up to the largest, numbered bytes, as the engine's loop turns:
        // a turn sends what the socket takes, the next starts when it is writable again.
        let mut staging = Vec::with_capacity(WRITE_CAP);
        let (mut sent, mut size, mut max_capacity, mut partial) = (0usize, 1usize, 0, 0);
        while sent < total {
            fp.send_frames(&mut staging, |buf| {
                if sent == total {
                    return false;
                }
                let n = size.min(MAX_FRAME).min(total - sent);
                buf.extend((sent..sent + n).map(|i| (i % 251) as u8));
                sent += n;
                size = size * 7 % (MAX_FRAME + 13) + 1;
                true
            })
            .unwrap();
            max_capacity = max_capacity.max(fp.wbuf.capacity());
            assert!(staging.capacity() <= WRITE_CAP, "{}", staging.capacity());
            if !fp.writable {
                partial += 1;
                thread::sleep(Duration::from_micros(50));
                fp.writable = true;
            }
        }
        flush_all(&mut fp);
        drop(fp);
        let received = reader.join().unwrap();
        assert!(
            partial > 10,
            "the socket never took a buffer in pieces ({partial})"
        );
        assert!(max_capacity <= WRITE_CAP, "{max_capacity} > {WRITE_CAP}");
        assert_eq!(received.len(), total);
        assert!(
            received
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8),
            "bytes lost or reordered"
        );
    }

    #[test]
    fn a_path_holds_a_write_buffer_only_while_its_socket_is_behind_and_never_copies_it() {
        let (mut fp, reader) = connected_path();
        // Small kernel buffers: a turn's frames are often more than the socket takes.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&fp.stream);
        super::super::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 16 * 1024)
            .unwrap();
        fp.writable = true;
        let mut staging = Vec::with_capacity(WRITE_CAP);
        let (mut sent, mut behind) = (0u64, 0);
        for turn in 0..64u64 {
            // A turn's worth of 32 KiB frames, as a busy session's.
            let staged_at = staging.as_ptr();
            let mut frames = 0;
            fp.send_frames(&mut staging, |buf| {
                frames += 1;
                if frames > 4 {
                    return false;
                }
                buf.extend_from_slice(&[turn as u8; 32 * 1024]);
                sent += 32 * 1024;
                true
            })
            .unwrap();
            assert!(fp.wbuf.capacity() <= WRITE_CAP);
            assert!(staging.capacity() >= WRITE_CAP);
            if fp.pending() > 0 {
                // What the socket did not take stays where it was encoded: the path took
                // the staging buffer itself.
                behind += 1;
                assert_eq!(
                    fp.wbuf.as_ptr(),
                    staged_at,
                    "turn {turn}: the frames were copied"
                );
            } else {
                assert_eq!(fp.wbuf.capacity(), 0, "turn {turn}: the socket took it all");
            }
            flush_all(&mut fp);
            fp.writable = true;
        }
        assert!(behind > 10, "the socket was never behind ({behind})");
        // Once the socket keeps up again, the path gives its buffer back.
        let mut pings = 0;
        loop {
            let mut ping = Some(b"ping");
            fp.send_frames(&mut staging, |buf| {
                ping.take().map(|p| buf.extend_from_slice(p)).is_some()
            })
            .unwrap();
            pings += 1;
            if fp.pending() == 0 {
                break;
            }
            flush_all(&mut fp);
            fp.writable = true;
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fp.wbuf.capacity(), 0);

        drop(fp);
        let received = reader.join().unwrap();
        assert_eq!(received.len() as u64, sent + 4 * pings);
        for (i, chunk) in received[..sent as usize].chunks(32 * 1024).enumerate() {
            assert!(
                chunk.iter().all(|&b| b == (i / 4) as u8),
                "bytes lost or reordered"
            );
        }
        assert!(received[sent as usize..].chunks(4).all(|c| c == b"ping"));
    }
}
