//! Sans-IO framing of a byte stream: frames cut across reads, decoded in place.
//!
//! A [`FrameReader`] owns only the bytes it could not hand out yet (at most one partial frame,
//! or the frames left when the consumer stopped early); reads go to a scratch buffer the caller
//! lends for one round of reads, so an idle reader holds no allocation. The caller does the IO:
//!
//! ```
//! # use namesock::wire::{Frame, FrameReader, MAX_FRAME, Step};
//! # let mut socket: &[u8] = &[6, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7];
//! # use std::io::Read;
//! let mut reader = FrameReader::new();
//! let mut scratch = vec![0; MAX_FRAME + 64 * 1024];
//! let mut round = reader.round(&mut scratch);
//! loop {
//!     match round.frames(|frame| {
//!         assert_eq!(frame, Frame::Ack { ack: 7 });
//!         true // false: stop, keep the rest for the next round
//!     })? {
//!         Step::NeedBytes => {}
//!         Step::Stopped => break,
//!     }
//!     match socket.read(round.buf()) {
//!         Ok(0) => break, // end of stream
//!         Ok(n) => round.filled(n),
//!         Err(e) => panic!("{e}"),
//!     }
//! }
//! # Ok::<(), namesock::wire::DecodeError>(())
//! ```
//!
//! A partial frame at the end of a read moves to the front of the scratch buffer and the next
//! read lands behind it, so a byte is copied again only when it belongs to a frame cut by a
//! read. Whatever is undecoded when the round ends (the [`Round`] is dropped) moves into the
//! reader. Copies go in 2 KiB pieces (see `crate::copy`).

use super::{DecodeError, FrameRef, MAX_FRAME};
use crate::copy;

/// Bytes of a stream not handed out yet. See the [module documentation](self).
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Undecoded bytes between rounds: at most one partial frame, or whatever followed the
    /// frame the consumer stopped at. Empty and unallocated when the last round ended on a
    /// frame boundary.
    kept: Vec<u8>,
}

/// What [`Round::frames`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every complete frame was handed out; what is left (if anything) is a partial frame.
    /// Read more into [`Round::buf`].
    NeedBytes,
    /// The consumer returned `false`. Frames may be left: the next [`Round::frames`] (in this
    /// round or a later one) hands them out first, in order. Do not read meanwhile.
    Stopped,
}

impl FrameReader {
    /// The smallest scratch buffer [`FrameReader::round`] accepts: a partial frame (shorter
    /// than [`MAX_FRAME`]) and at least one byte of read behind it. Larger buffers read more
    /// per call.
    pub const MIN_SCRATCH: usize = MAX_FRAME;

    pub const fn new() -> FrameReader {
        FrameReader { kept: Vec::new() }
    }

    /// Undecoded bytes held between rounds.
    pub fn buffered(&self) -> usize {
        self.kept.len()
    }

    /// Bytes of heap the reader holds (0 when idle on a frame boundary).
    pub fn capacity(&self) -> usize {
        self.kept.capacity()
    }

    /// Starts a round of reads into `scratch` (at least [`FrameReader::MIN_SCRATCH`] bytes):
    /// call [`Round::frames`], and while it returns [`Step::NeedBytes`], read into
    /// [`Round::buf`] and report the count with [`Round::filled`]. Dropping the round keeps
    /// what is undecoded.
    pub fn round<'a>(&'a mut self, scratch: &'a mut [u8]) -> Round<'a> {
        assert!(
            scratch.len() >= Self::MIN_SCRATCH,
            "a frame reader's scratch buffer must hold a whole frame"
        );
        let fresh = !self.kept.is_empty();
        Round {
            kept: &mut self.kept,
            scratch,
            in_kept: fresh,
            start: 0,
            end: 0,
            fresh,
        }
    }

    /// One round over bytes already in memory, as if read from a socket in one go: hands out
    /// the complete frames (kept ones first) until `on_frame` returns `false`; keeps the rest.
    /// For in-memory transports (simulation, fuzzing, benches).
    pub fn feed(
        &mut self,
        scratch: &mut [u8],
        mut bytes: &[u8],
        mut on_frame: impl FnMut(FrameRef<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        let mut round = self.round(scratch);
        loop {
            match round.frames(&mut on_frame) {
                Ok(Step::NeedBytes) if !bytes.is_empty() => {}
                Ok(step) if bytes.is_empty() => return Ok(step),
                // Stopped, or malformed: what was not handed to the round waits behind it.
                done => {
                    drop(round);
                    copy::extend_vec(&mut self.kept, bytes);
                    return done;
                }
            }
            let buf = round.buf();
            let n = buf.len().min(bytes.len());
            copy::copy(&mut buf[..n], &bytes[..n]);
            bytes = &bytes[n..];
            round.filled(n);
        }
    }
}

/// One round of reads into a borrowed scratch buffer; see [`FrameReader::round`]. Dropping it
/// moves the undecoded bytes into the reader.
pub struct Round<'a> {
    kept: &'a mut Vec<u8>,
    scratch: &'a mut [u8],
    /// The undecoded bytes are still in `kept` (frames left by a consumer that stopped).
    in_kept: bool,
    /// Undecoded bytes: `scratch[start..end]`, or `kept` while `in_kept`.
    start: usize,
    end: usize,
    /// Bytes arrived (or were kept) since the last [`Round::frames`] that returned
    /// [`Step::NeedBytes`]: a complete frame may be waiting.
    fresh: bool,
}

impl Round<'_> {
    /// Hands every complete frame to `on_frame`, in order, until it returns `false`.
    ///
    /// `Err`: the bytes after the frames handed out are not a frame (a length field beyond
    /// [`MAX_FRAME`] is refused as soon as the header is there, before its body is waited
    /// for). The bad bytes stay, so the reader keeps reporting the error.
    pub fn frames(
        &mut self,
        mut on_frame: impl FnMut(FrameRef<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        if self.in_kept {
            let (used, step) = decode_frames(self.kept, &mut on_frame);
            self.kept.drain(..used);
            if step? == Step::Stopped {
                return Ok(Step::Stopped);
            }
            // Less than one frame is left: it fits in front of a read.
            self.end = self.kept.len();
            copy::copy(&mut self.scratch[..self.end], self.kept);
            *self.kept = Vec::new();
            self.in_kept = false;
            self.fresh = false;
            return Ok(Step::NeedBytes);
        }
        let (used, step) = decode_frames(&self.scratch[self.start..self.end], &mut on_frame);
        self.start += used;
        if step? == Step::Stopped {
            return Ok(Step::Stopped);
        }
        move_to_front(self.scratch, self.start..self.end);
        self.end -= self.start;
        self.start = 0;
        self.fresh = false;
        Ok(Step::NeedBytes)
    }

    /// Where the next read goes (never empty).
    ///
    /// # Panics
    ///
    /// If bytes arrived since [`Round::frames`] last returned [`Step::NeedBytes`]: they may
    /// hold frames, and room for the read is only guaranteed behind a partial frame.
    pub fn buf(&mut self) -> &mut [u8] {
        assert!(!self.fresh, "Round::buf before Round::frames handed out the frames");
        &mut self.scratch[self.end..]
    }

    /// `n` bytes were read into [`Round::buf`].
    pub fn filled(&mut self, n: usize) {
        assert!(
            !self.fresh && n <= self.scratch.len() - self.end,
            "Round::filled without a read into Round::buf"
        );
        self.end += n;
        self.fresh = n > 0;
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.in_kept && self.start < self.end {
            copy::extend_vec(self.kept, &self.scratch[self.start..self.end]);
        }
    }
}

/// Hands the complete frames at the start of `buf` to `on_frame`: the bytes they took, and
/// whether `on_frame` asked to stop or the next bytes are malformed.
fn decode_frames(
    buf: &[u8],
    on_frame: &mut impl FnMut(FrameRef<'_>) -> bool,
) -> (usize, Result<Step, DecodeError>) {
    let mut pos = 0;
    loop {
        match FrameRef::decode_ref(&buf[pos..]) {
            Ok(Some((frame, used))) => {
                pos += used;
                if !on_frame(frame) {
                    return (pos, Ok(Step::Stopped));
                }
            }
            Ok(None) => return (pos, Ok(Step::NeedBytes)),
            Err(e) => return (pos, Err(e)),
        }
    }
}

/// `buf.copy_within(range, 0)` in the 2 KiB pieces of `crate::copy`: front to back, so a piece
/// never overwrites source bytes a later piece still needs.
fn move_to_front(buf: &mut [u8], range: std::ops::Range<usize>) {
    const PIECE: usize = 2048;
    let (start, len) = (range.start, range.len());
    if start == 0 {
        return;
    }
    let mut done = 0;
    while done < len {
        let n = PIECE.min(len - done);
        buf.copy_within(start + done..start + done + n, done);
        done += n;
    }
}
