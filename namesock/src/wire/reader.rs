//! Sans-IO framing of a byte stream: records cut across reads, decoded in place (a SEALED
//! record handed out mutably, so that its owner opens it in place).

use super::{DecodeError, HEADER_LEN, MAX_FRAME, Record};
use crate::copy;

/// Cuts a byte stream that arrives in reads of any size into frames.
///
/// A [`FrameReader`] owns only the bytes it could not hand out yet (at most one partial frame,
/// or the frames left when the consumer stopped early); reads go to a scratch buffer the caller
/// lends for one round of reads, so an idle reader holds no allocation. The caller does the IO:
///
/// ```
/// # use namesock::wire::{FrameReader, MAX_FRAME, Record, Step};
/// # let mut socket: &[u8] = &[13, 0, 0, 0, 17, 6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
/// # use std::io::Read;
/// let mut reader = FrameReader::new();
/// let mut scratch = vec![0; MAX_FRAME + 64 * 1024];
/// let mut round = reader.round(&mut scratch);
/// loop {
///     match round.frames(|record| {
///         assert!(matches!(record, Record::Sealed(_))); // the session opens it
///         true // false: stop, keep the rest for the next round
///     })? {
///         Step::NeedBytes => {}
///         Step::Stopped => break,
///     }
///     match socket.read(round.buf()) {
///         Ok(0) => break, // end of stream
///         Ok(n) => round.filled(n),
///         Err(e) => panic!("{e}"),
///     }
/// }
/// # Ok::<(), namesock::wire::DecodeError>(())
/// ```
///
/// A partial frame at the end of a read moves to the front of the scratch buffer and the next
/// read lands behind it. A partial frame left when the round ends (the [`Round`] is dropped)
/// moves into the reader; once an eighth of the frame is there, into a buffer as long as the
/// frame, and the next rounds read the rest in place behind the bytes held. So a byte is copied
/// again at most once, however many reads its frame takes (a frame arriving a segment per
/// read was copied again at every read before). Copies go in 2 KiB pieces (see `crate::copy`).
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Undecoded bytes between rounds are `kept[..held]`: at most one partial frame, or
    /// whatever followed the frame the consumer stopped at. A partial frame whose header
    /// arrived has `kept` as long as the frame (zeros behind `held`, for the reads to fill);
    /// anything else has `kept` exactly `held` long. Empty and unallocated when the last
    /// round ended on a frame boundary.
    kept: Vec<u8>,
    held: usize,
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
        FrameReader {
            kept: Vec::new(),
            held: 0,
        }
    }

    /// Undecoded bytes held between rounds.
    pub fn buffered(&self) -> usize {
        self.held
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
        let fresh = self.held > 0;
        Round {
            reader: self,
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
        mut on_frame: impl FnMut(Record<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        let mut round = self.round(scratch);
        loop {
            match round.frames(&mut on_frame) {
                Ok(Step::NeedBytes) if !bytes.is_empty() => {}
                Ok(step) if bytes.is_empty() => return Ok(step),
                // Stopped, or malformed: what was not handed to the round waits behind it.
                done => {
                    drop(round);
                    self.keep_behind(bytes);
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

    /// Keeps `bytes` behind those held, exactly (no frame-long buffer).
    fn keep_behind(&mut self, bytes: &[u8]) {
        self.kept.truncate(self.held);
        copy::extend_vec(&mut self.kept, bytes);
        self.held = self.kept.len();
    }

    /// Drops the first `used` bytes held (frames handed out). What is left is kept exactly.
    fn consume(&mut self, used: usize) {
        self.kept.truncate(self.held);
        self.kept.drain(..used);
        self.held = self.kept.len();
        if self.held == 0 {
            self.kept = Vec::new();
        }
    }

    /// Holds what a round left: a partial frame in a buffer as long as the frame, so that
    /// later reads land behind it (see [`partial_frame_len`]); anything else (the start of a
    /// frame, frames after a stop, malformed bytes) exactly.
    fn keep(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.held, 0);
        match partial_frame_len(bytes) {
            Some(frame) => {
                self.kept = Vec::with_capacity(frame);
                copy::extend_vec(&mut self.kept, bytes);
                self.kept.resize(frame, 0);
                self.held = bytes.len();
            }
            None => self.keep_behind(bytes),
        }
    }
}

/// The length of the frame `bytes` begin, when they are only part of it, its header is all
/// there and they are at least an eighth of it: then a buffer as long as the frame is worth
/// holding for the reads to complete it in place. The eighth bounds what a peer makes the
/// reader hold to 8 times what it sent (a header alone claiming 64 KiB would hold 64 KiB);
/// below it, the few bytes held move as before. A length beyond [`MAX_FRAME`] is the
/// decoder's to refuse, not to allocate.
fn partial_frame_len(bytes: &[u8]) -> Option<usize> {
    let frame = HEADER_LEN + super::codec::body_len(bytes.get(..HEADER_LEN)?);
    (frame > bytes.len() && frame <= MAX_FRAME && bytes.len() >= frame / 8).then_some(frame)
}

/// One round of reads into a borrowed scratch buffer; see [`FrameReader::round`]. Dropping it
/// moves the undecoded bytes into the reader.
pub struct Round<'a> {
    reader: &'a mut FrameReader,
    scratch: &'a mut [u8],
    /// The undecoded bytes are the reader's (`kept[..held]`), and reads go behind them there.
    in_kept: bool,
    /// Otherwise they are `scratch[start..end]`.
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
        mut on_frame: impl FnMut(Record<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        if self.in_kept {
            return self.frames_in_kept(&mut on_frame);
        }
        let (used, step) = decode_frames(&mut self.scratch[self.start..self.end], &mut on_frame);
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

    /// [`Round::frames`] over the bytes the reader kept. A partial frame alone stays there
    /// for the reads to complete in place; anything shorter than a frame that followed frames
    /// handed out moves to the front of the scratch buffer, where the round goes on.
    fn frames_in_kept(
        &mut self,
        on_frame: &mut impl FnMut(Record<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        let reader = &mut *self.reader;
        let (used, step) = decode_frames(&mut reader.kept[..reader.held], on_frame);
        let stopped = match step {
            Ok(step) => step == Step::Stopped,
            Err(e) => {
                reader.consume(used);
                return Err(e);
            }
        };
        self.fresh = stopped;
        if used == 0
            && !stopped
            && let Some(frame) = partial_frame_len(&reader.kept[..reader.held])
        {
            // A partial frame alone: the reads complete it in place (a buffer kept exactly,
            // after a stop, grows to the frame's length once).
            reader.kept.resize(frame, 0);
            return Ok(Step::NeedBytes);
        }
        reader.consume(used);
        if stopped && reader.held > 0 {
            return Ok(Step::Stopped);
        }
        // Less than one frame is left (or none after the frame the consumer stopped at):
        // it fits in front of a read.
        self.end = reader.held;
        copy::copy(&mut self.scratch[..self.end], &reader.kept[..reader.held]);
        reader.kept = Vec::new();
        reader.held = 0;
        self.in_kept = false;
        Ok(if stopped {
            Step::Stopped
        } else {
            Step::NeedBytes
        })
    }

    /// Where the next read goes (never empty): behind the partial frame the reader kept, up
    /// to its end, or into the scratch buffer.
    ///
    /// # Panics
    ///
    /// If bytes arrived since [`Round::frames`] last returned [`Step::NeedBytes`]: they may
    /// hold frames, and room for the read is only guaranteed behind a partial frame.
    pub fn buf(&mut self) -> &mut [u8] {
        assert!(
            !self.fresh,
            "Round::buf before Round::frames handed out the frames"
        );
        if self.in_kept {
            let reader = &mut *self.reader;
            &mut reader.kept[reader.held..]
        } else {
            &mut self.scratch[self.end..]
        }
    }

    /// `n` bytes were read into [`Round::buf`].
    pub fn filled(&mut self, n: usize) {
        let room = if self.in_kept {
            self.reader.kept.len() - self.reader.held
        } else {
            self.scratch.len() - self.end
        };
        assert!(
            !self.fresh && n <= room,
            "Round::filled without a read into Round::buf"
        );
        if self.in_kept {
            self.reader.held += n;
        } else {
            self.end += n;
        }
        self.fresh = n > 0;
    }
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if !self.in_kept && self.start < self.end {
            self.reader.keep(&self.scratch[self.start..self.end]);
        }
    }
}

/// Hands the complete frames at the start of `buf` to `on_frame`: the bytes they took, and
/// whether `on_frame` asked to stop or the next bytes are malformed.
fn decode_frames(
    buf: &mut [u8],
    on_frame: &mut impl FnMut(Record<'_>) -> bool,
) -> (usize, Result<Step, DecodeError>) {
    let mut pos = 0;
    loop {
        match Record::decode_ref(&mut buf[pos..]) {
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::SocketAddr;

    use super::*;
    use crate::identity::{Guid, Keypair, Signature};
    use crate::wire::{
        Frame, HEADER_LEN, Hello, HelloAck, MAX_DATA, RESUME_SEALED_LEN, Refuse, ResetReason,
        Resume, ResumeAck, TAG_LEN,
    };

    /// A socket's receive side: what successive reads return; empty = WouldBlock.
    #[derive(Default)]
    struct Socket {
        reads: VecDeque<Vec<u8>>,
    }

    impl Socket {
        fn read(&mut self, buf: &mut [u8]) -> Option<usize> {
            let chunk = self.reads.front_mut()?;
            let n = buf.len().min(chunk.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.reads.pop_front();
            }
            Some(n)
        }
    }

    /// One round as `FlowPath::read_frames` runs it: until WouldBlock or a stop.
    fn round(
        reader: &mut FrameReader,
        scratch: &mut [u8],
        socket: &mut Socket,
        mut on_frame: impl FnMut(Record<'_>) -> bool,
    ) -> Result<Step, DecodeError> {
        let mut round = reader.round(scratch);
        loop {
            if round.frames(&mut on_frame)? == Step::Stopped {
                return Ok(Step::Stopped);
            }
            match socket.read(round.buf()) {
                Some(n) => round.filled(n),
                None => return Ok(Step::NeedBytes),
            }
        }
    }

    fn scratch() -> Vec<u8> {
        vec![0; FrameReader::MIN_SCRATCH + 4096]
    }

    /// Frames as a path carries them: those that travel sealed in SEALED records (sealed by
    /// an identity "cipher" with a zero tag: this module frames, the session encrypts).
    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            if f.travels_in_clear() {
                f.encode(&mut out);
            } else {
                f.encode_sealed(&mut out, |_, _| [0; TAG_LEN]);
            }
        }
        out
    }

    /// A record handed out, as the frame it carries ("opened" by the identity cipher).
    fn owned(record: Record<'_>) -> Frame {
        match record {
            Record::Clear(frame) => frame.into_owned(),
            Record::Sealed(sealed) => sealed
                .open(|_, body| {
                    let len = body.len() - TAG_LEN;
                    Ok::<_, ()>(&body[..len])
                })
                .unwrap()
                .unwrap()
                .into_owned(),
        }
    }

    /// One frame of every kind (DATA twice: empty and not), MOVED with both families.
    fn every_kind() -> Vec<Frame> {
        let key = Keypair::from_seed(&[1; 32]).public();
        vec![
            Frame::Hello(Hello {
                conn_id: [7; 16],
                client_key: key,
                target: Guid::from_bytes([2; 20]),
                port: 8000,
                ephemeral: [3; 32],
                window: 1 << 20,
                signature: Signature([4; 64]),
            }),
            Frame::HelloAck(HelloAck {
                conn_id: [7; 16],
                server_key: key,
                ephemeral: [4; 32],
                window: 1 << 20,
                linger_ms: 30_000,
                signature: Signature([5; 64]),
            }),
            Frame::Resume(Resume {
                conn_id: [7; 16],
                freshness: 9,
                sealed: [6; RESUME_SEALED_LEN],
            }),
            Frame::ResumeAck(ResumeAck {
                path_id: 3,
                received: 1 << 34,
            }),
            Frame::Refuse(Refuse {
                conn_id: [7; 16],
                reason: ResetReason::PortRefused,
                echo: [1; 32],
                server_key: key,
                signature: Signature([8; 64]),
            }),
            Frame::Data {
                offset: 1 << 40,
                ack: 17,
                payload: (0..100).collect(),
            },
            Frame::Data {
                offset: 5,
                ack: 0,
                payload: Vec::new(),
            },
            Frame::Ack { ack: 123 },
            Frame::Ping { token: 1 },
            Frame::Pong { token: 1 },
            Frame::Moved {
                seq: 2,
                locators: vec![
                    "192.0.2.1:4000".parse::<SocketAddr>().unwrap(),
                    "[2001:db8::1]:4001".parse().unwrap(),
                ],
            },
            Frame::Fin { offset: 99 },
            Frame::Reset {
                reason: ResetReason::Protocol,
            },
            Frame::Open(super::super::Open {
                conn_id: [7; 16],
                parent: [8; 16],
                child: 1 << 33,
                port: 8000,
                window: 1 << 20,
                tag: [9; TAG_LEN],
            }),
            Frame::OpenAck(super::super::OpenAck {
                window: 1 << 20,
                linger_ms: 60_000,
            }),
        ]
    }

    /// Every frame kind, cut at every pair of positions: three reads in one round, and the
    /// same reads in three rounds (the partial frame kept by the reader in between). Frames on
    /// either side of the cut frame show that nothing leaks across frames.
    #[test]
    fn every_kind_cut_at_every_position_across_two_and_three_reads() {
        let mut scratch = scratch();
        let before = Frame::Ack { ack: 1 };
        let after = Frame::Fin { offset: 2 };
        for frame in every_kind() {
            let whole = encode(std::slice::from_ref(&frame));
            let expected = vec![before.clone(), frame.clone(), after.clone()];
            let bytes = encode(&expected);
            let lo = encode(std::slice::from_ref(&before)).len();
            for a in lo..=lo + whole.len() {
                for b in a..=lo + whole.len() {
                    let reads = [&bytes[..a], &bytes[a..b], &bytes[b..]];
                    for rounds in [1, 3] {
                        let mut reader = FrameReader::new();
                        let mut socket = Socket::default();
                        let mut got = Vec::new();
                        for chunk in reads.chunks(3 / rounds) {
                            socket.reads.extend(chunk.iter().map(|r| r.to_vec()));
                            let step = round(&mut reader, &mut scratch, &mut socket, |f| {
                                got.push(owned(f));
                                true
                            });
                            assert_eq!(step, Ok(Step::NeedBytes));
                        }
                        assert_eq!(got, expected, "{} cut at {a} and {b}", frame.name());
                        assert_eq!(reader.capacity(), 0);
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_frame_waits_in_the_reader_between_rounds() {
        let mut scratch = scratch();
        let frame = every_kind().remove(0);
        let bytes = encode(std::slice::from_ref(&frame));
        for cut in 0..bytes.len() {
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            let mut on_frame = |f: Record<'_>| {
                got.push(owned(f));
                true
            };
            let step = reader.feed(&mut scratch, &bytes[..cut], &mut on_frame);
            assert_eq!(step, Ok(Step::NeedBytes));
            assert_eq!(reader.buffered(), cut);
            let step = reader.feed(&mut scratch, &bytes[cut..], &mut on_frame);
            assert_eq!(step, Ok(Step::NeedBytes));
            assert_eq!(got, std::slice::from_ref(&frame));
            assert_eq!((reader.buffered(), reader.capacity()), (0, 0));
        }
    }

    #[test]
    fn a_frame_arriving_over_many_rounds_is_completed_in_place() {
        let frame = Frame::Data {
            offset: 9,
            ack: 3,
            payload: (0..MAX_DATA).map(|i| (i % 251) as u8).collect(),
        };
        let bytes = encode(std::slice::from_ref(&frame));
        let mut scratch = scratch();
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        let mut kept_at = None;
        // A segment per round, as an engine that wakes for every segment reads a bulk stream:
        // once an eighth of the frame is held, the rest lands behind it, never copied again.
        for (i, segment) in bytes.chunks(1448).enumerate() {
            let mut socket = Socket::default();
            socket.reads.push_back(segment.to_vec());
            round(&mut reader, &mut scratch, &mut socket, |f| {
                got.push(owned(f));
                true
            })
            .unwrap();
            let held = reader.buffered();
            assert!(reader.capacity() <= 8 * held.max(1), "round {i}");
            if held >= bytes.len() / 8 {
                assert_eq!(reader.capacity(), bytes.len(), "round {i}");
                let at = *kept_at.get_or_insert(reader.kept.as_ptr());
                assert_eq!(
                    reader.kept.as_ptr(),
                    at,
                    "round {i}: the partial frame moved"
                );
            }
        }
        assert!(kept_at.is_some());
        assert_eq!(got, [frame]);
        assert_eq!((reader.buffered(), reader.capacity()), (0, 0));
    }

    #[test]
    fn a_header_alone_does_not_make_the_reader_hold_its_frame() {
        // A peer that sends a header claiming the largest frame, and a few bytes of it.
        let mut bytes = vec![13, 0, 0, 0, 0]; // SEALED
        bytes[1..HEADER_LEN].copy_from_slice(&((MAX_FRAME - HEADER_LEN) as u32).to_be_bytes());
        bytes.extend_from_slice(&[7; 100]);
        let mut scratch = scratch();
        let mut reader = FrameReader::new();
        assert_eq!(
            reader.feed(&mut scratch, &bytes, |_| true),
            Ok(Step::NeedBytes)
        );
        assert_eq!(reader.buffered(), bytes.len());
        assert!(reader.capacity() < 8 * bytes.len(), "{}", reader.capacity());
    }

    #[test]
    fn many_frames_in_one_read() {
        let frames: Vec<Frame> = (0..50).flat_map(|_| every_kind()).collect();
        let bytes = encode(&frames);
        let mut scratch = vec![0; bytes.len().max(FrameReader::MIN_SCRATCH)];
        let mut reader = FrameReader::new();
        let mut socket = Socket::default();
        socket.reads.push_back(bytes);
        let mut got = Vec::new();
        let step = round(&mut reader, &mut scratch, &mut socket, |f| {
            got.push(owned(f));
            true
        });
        assert_eq!(step, Ok(Step::NeedBytes));
        assert_eq!(got, frames);
        assert!(socket.reads.is_empty());
        assert_eq!(reader.capacity(), 0);
    }

    /// A read larger than the scratch buffer's room is taken in several reads.
    #[test]
    fn reads_larger_than_the_scratch_buffer() {
        let frames: Vec<Frame> = (0..200).flat_map(|_| every_kind()).collect();
        let bytes = encode(&frames);
        assert!(bytes.len() > 2 * FrameReader::MIN_SCRATCH);
        let mut scratch = vec![0; FrameReader::MIN_SCRATCH];
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        let step = reader.feed(&mut scratch, &bytes, |f| {
            got.push(owned(f));
            true
        });
        assert_eq!(step, Ok(Step::NeedBytes));
        assert_eq!(got, frames);
        assert_eq!(reader.capacity(), 0);
    }

    /// The smallest scratch buffer takes the largest frames, cut anywhere, and the longest
    /// partial frame the length check lets through (MAX_FRAME - 1 bytes, of a frame whose
    /// body then turns out malformed) with one byte of room behind it.
    #[test]
    fn the_largest_frames_through_the_smallest_scratch() {
        let frame = Frame::Data {
            offset: 0,
            ack: 0,
            payload: vec![0x5a; MAX_DATA],
        };
        let mut bytes = encode(&[frame.clone(), frame.clone()]);
        let mut scratch = vec![0; FrameReader::MIN_SCRATCH];
        for cut in [
            1,
            HEADER_LEN,
            bytes.len() / 2 - 1,
            bytes.len() / 2 + 1,
            bytes.len() - 1,
        ] {
            let mut reader = FrameReader::new();
            let mut socket = Socket::default();
            socket.reads.push_back(bytes[..cut].to_vec());
            socket.reads.push_back(bytes[cut..].to_vec());
            let mut got = 0;
            let step = round(&mut reader, &mut scratch, &mut socket, |f| {
                assert_eq!(owned(f), frame);
                got += 1;
                true
            });
            assert_eq!((step, got), (Ok(Step::NeedBytes), 2));
        }

        // A SEALED record of the largest length is handed out whole (opening it is the
        // session's business).
        let body = MAX_FRAME - HEADER_LEN;
        bytes = vec![13];
        bytes.extend_from_slice(&(body as u32).to_be_bytes());
        bytes.resize(MAX_FRAME, 0);
        let mut reader = FrameReader::new();
        let mut socket = Socket::default();
        socket.reads.push_back(bytes[..MAX_FRAME - 1].to_vec());
        let step = round(&mut reader, &mut scratch, &mut socket, |_| true);
        assert_eq!(step, Ok(Step::NeedBytes));
        assert_eq!(reader.buffered(), MAX_FRAME - 1);
        socket.reads.push_back(bytes[MAX_FRAME - 1..].to_vec());
        let mut lens = Vec::new();
        let step = round(&mut reader, &mut scratch, &mut socket, |r| {
            if let Record::Sealed(s) = r {
                lens.push(s.wire_len());
            }
            true
        });
        assert_eq!((step, lens), (Ok(Step::NeedBytes), vec![MAX_FRAME]));
    }

    /// The consumer stops early: nothing more is read, the frames left are handed out first
    /// (in order) when it resumes, in the same round or a later one.
    #[test]
    fn a_consumer_that_stops_early_gets_the_rest_first_and_in_order() {
        let frames: Vec<Frame> = (0..3).flat_map(|_| every_kind()).collect();
        let bytes = encode(&frames);
        let (first, second) = bytes.split_at(bytes.len() / 2 + 3);
        let mut scratch = scratch();
        for stop_every in 1..=5 {
            let mut reader = FrameReader::new();
            let mut socket = Socket::default();
            socket.reads.push_back(first.to_vec());
            socket.reads.push_back(second.to_vec());
            let mut got = Vec::new();
            let mut rounds = 0;
            loop {
                rounds += 1;
                let mut taken = 0;
                let step = round(&mut reader, &mut scratch, &mut socket, |f| {
                    got.push(owned(f));
                    taken += 1;
                    taken < stop_every
                });
                match step {
                    Ok(Step::Stopped) => {}
                    Ok(Step::NeedBytes) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, frames, "stopping every {stop_every} frames");
            assert!(rounds >= frames.len() / stop_every);
            assert_eq!(reader.capacity(), 0);
        }
    }

    #[test]
    fn stopping_within_one_round_and_going_on() {
        let frames = every_kind();
        let bytes = encode(&frames);
        let mut scratch = scratch();
        let mut reader = FrameReader::new();
        let mut round = reader.round(&mut scratch);
        round.buf()[..bytes.len()].copy_from_slice(&bytes);
        round.filled(bytes.len());
        let mut got = Vec::new();
        while round
            .frames(|f| {
                got.push(owned(f));
                false
            })
            .unwrap()
            == Step::Stopped
        {}
        assert_eq!(got, frames);
        drop(round);
        assert_eq!(reader.capacity(), 0);
    }

    #[test]
    #[should_panic(expected = "Round::buf before Round::frames")]
    fn reading_before_the_frames_are_handed_out_panics() {
        let mut scratch = scratch();
        let mut reader = FrameReader::new();
        let mut round = reader.round(&mut scratch);
        round.filled(3);
        round.buf();
    }

    /// Good frames, then a malformed one: the good ones are handed out, then the error; the
    /// bad bytes stay, so the reader keeps refusing them.
    #[test]
    fn a_malformed_frame_after_good_ones() {
        let good = every_kind();
        let mut bytes = encode(&good);
        let bad_at = bytes.len();
        bytes.extend_from_slice(&[0xee, 0, 0, 0, 1, 0]);
        bytes.extend_from_slice(&encode(&good));
        let mut scratch = scratch();
        for cut in [
            0,
            1,
            bad_at - 1,
            bad_at,
            bad_at + 1,
            bad_at + 3,
            bytes.len(),
        ] {
            let mut reader = FrameReader::new();
            let mut got = Vec::new();
            let mut on_frame = |f: Record<'_>| {
                got.push(owned(f));
                true
            };
            let first = reader.feed(&mut scratch, &bytes[..cut], &mut on_frame);
            let second = reader.feed(&mut scratch, &bytes[cut..], &mut on_frame);
            let again = reader.feed(&mut scratch, &[], &mut on_frame);
            assert_eq!(got, good, "cut at {cut}");
            let err = Err(DecodeError::UnknownType(0xee));
            if cut > bad_at {
                assert_eq!(first, err);
            } else {
                assert_eq!(first, Ok(Step::NeedBytes));
            }
            assert_eq!((second, again), (err.clone(), err));
        }
    }

    #[test]
    fn a_malformed_body_is_an_error_too() {
        let mut bytes = encode(&[Frame::Ping { token: 1 }]);
        // RESUME with one byte too many.
        bytes.extend_from_slice(&[3, 0, 0, 0, 58, b'n', b's', b'o', b'k', 2]);
        bytes.extend_from_slice(&[0; 53]);
        let mut got = 0;
        let step = FrameReader::new().feed(&mut scratch(), &bytes, |_| {
            got += 1;
            true
        });
        assert_eq!((step, got), (Err(DecodeError::TrailingBytes("RESUME")), 1));
    }

    /// Frames that travel sealed are refused in clear on their first byte, and a SEALED
    /// record too short for a tag and an inner type is refused before its body.
    #[test]
    fn a_sealed_only_frame_in_clear_or_a_tagless_record_is_refused() {
        for (bytes, err) in [
            (vec![10u8], DecodeError::Unsealed("RESET")),
            (vec![5, 0, 0, 0, 16], DecodeError::Unsealed("DATA")),
            (vec![11, 0], DecodeError::Unsealed("MOVED")),
            (vec![13, 0, 0, 0, 16], DecodeError::SealedTooShort(16)),
        ] {
            let step = FrameReader::new().feed(&mut scratch(), &bytes, |_| panic!("handed out"));
            assert_eq!(step, Err(err));
        }
    }

    /// A length field beyond MAX_FRAME is refused as soon as the header is complete, without
    /// waiting for (or keeping) a body.
    #[test]
    fn an_oversized_length_is_refused_before_buffering() {
        let max = MAX_FRAME - HEADER_LEN;
        for len in [max as u32 + 1, u32::MAX] {
            let mut header = vec![13];
            header.extend_from_slice(&len.to_be_bytes());
            let err = Err(DecodeError::TooLong {
                len: len as usize,
                max,
            });
            let mut scratch = scratch();
            let mut reader = FrameReader::new();
            assert_eq!(reader.feed(&mut scratch, &header, |_| true), err);
            for cut in 1..HEADER_LEN {
                let mut reader = FrameReader::new();
                let step = reader.feed(&mut scratch, &header[..cut], |_| true);
                assert_eq!(step, Ok(Step::NeedBytes));
                assert_eq!(reader.buffered(), cut);
                assert_eq!(reader.feed(&mut scratch, &header[cut..], |_| true), err);
                assert_eq!(reader.buffered(), HEADER_LEN);
            }
        }
        // At the limit, the body is waited for.
        let mut header = vec![13];
        header.extend_from_slice(&(max as u32).to_be_bytes());
        let mut reader = FrameReader::new();
        assert_eq!(
            reader.feed(&mut scratch(), &header, |_| true),
            Ok(Step::NeedBytes)
        );
    }

    /// An unknown type is refused on its first byte.
    #[test]
    fn an_unknown_type_is_refused_at_once() {
        let mut reader = FrameReader::new();
        let step = reader.feed(&mut scratch(), &[0], |_| true);
        assert_eq!(step, Err(DecodeError::UnknownType(0)));
    }

    #[test]
    fn an_idle_reader_holds_no_allocation() {
        let bytes = encode(&every_kind());
        let mut scratch = scratch();
        let mut reader = FrameReader::new();
        assert_eq!(reader.capacity(), 0);
        let mut n = 0;
        reader.feed(&mut scratch, &bytes[..7], |_| true).unwrap();
        assert!(reader.capacity() >= 7);
        reader
            .feed(&mut scratch, &bytes[7..], |_| {
                n += 1;
                true
            })
            .unwrap();
        assert_eq!(n, every_kind().len());
        assert_eq!((reader.buffered(), reader.capacity()), (0, 0));
        // After stopping early, once the kept frames are handed out.
        reader.feed(&mut scratch, &bytes, |_| false).unwrap();
        assert!(reader.capacity() > 0);
        while reader.feed(&mut scratch, &[], |_| false) == Ok(Step::Stopped) {}
        assert_eq!((reader.buffered(), reader.capacity()), (0, 0));
    }
}
