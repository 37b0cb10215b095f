//! `FrameReader` on arbitrary bytes cut into reads at positions taken from the input, driven
//! as `FlowPath::read_frames` drives it (rounds of reads, a consumer that stops early): it
//! hands out exactly the records one-shot decoding of the whole stream finds, then the same
//! error, or keeps the same partial record. SEALED records are "opened" by an identity cipher
//! (the last 16 bytes as a tag), so their inner frames are decoded too.
//!
//! Input: `n` (one byte, `n % 8` cuts), `n % 8` cut positions (u16 BE, modulo the stream
//! length), a byte of reads per round, a byte of stop bits, then the stream.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use namesock::wire::{DecodeError, Frame, FrameReader, FrameRef, MAX_FRAME, Record, Step, TAG_LEN};

/// A record as handed out: a frame in clear, or a SEALED record's inner frame (or its error).
#[derive(Debug, PartialEq)]
enum View {
    Clear(Frame),
    Sealed(Result<Frame, DecodeError>),
}

fn view(record: Record<'_>) -> View {
    match record {
        Record::Clear(frame) => View::Clear(frame.into_owned()),
        Record::Sealed(sealed) => View::Sealed(
            sealed
                .open(|_, body| {
                    let len = body.len() - TAG_LEN;
                    Ok::<_, ()>(&body[..len])
                })
                .expect("the identity cipher opens anything")
                .map(FrameRef::into_owned),
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = n as usize % 8;
    if rest.len() < 2 * n + 2 {
        return;
    }
    let (positions, rest) = rest.split_at(2 * n);
    let per_round = 1 + rest[0] as usize % 4;
    let stop_bits = rest[1];
    let stream = &rest[2..];
    let mut cuts: Vec<usize> = positions
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]) as usize % (stream.len() + 1))
        .chain([0, stream.len()])
        .collect();
    cuts.sort_unstable();

    assert_eq!(
        read_through(stream, &cuts, per_round, stop_bits),
        decode_all(stream)
    );
});

fn read_through(
    stream: &[u8],
    cuts: &[usize],
    per_round: usize,
    stop_bits: u8,
) -> (Vec<View>, Result<usize, DecodeError>) {
    let mut later: VecDeque<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
    let mut socket: VecDeque<&[u8]> = VecDeque::new();
    let mut reader = FrameReader::new();
    // Small enough that long streams take several reads per arrival.
    let mut scratch = vec![0; MAX_FRAME];
    let mut got = Vec::new();
    loop {
        socket.extend(later.drain(..per_round.min(later.len())));
        let mut round = reader.round(&mut scratch);
        let step = loop {
            let step = round.frames(|f| {
                got.push(view(f));
                stop_bits & (1 << (got.len() % 8)) == 0
            });
            if step != Ok(Step::NeedBytes) {
                break step;
            }
            let Some(read) = socket.pop_front() else {
                break step; // WouldBlock
            };
            let buf = round.buf();
            let n = buf.len().min(read.len());
            buf[..n].copy_from_slice(&read[..n]);
            round.filled(n);
            if n < read.len() {
                socket.push_front(&read[n..]);
            }
        };
        drop(round);
        match step {
            Err(e) => return (got, Err(e)),
            Ok(Step::NeedBytes) if socket.is_empty() && later.is_empty() => {
                let idle = reader.buffered() > 0 || reader.capacity() == 0;
                assert!(idle, "a reader on a frame boundary holds memory");
                return (got, Ok(reader.buffered()));
            }
            Ok(_) => {}
        }
    }
}

fn decode_all(stream: &[u8]) -> (Vec<View>, Result<usize, DecodeError>) {
    let mut copy = stream.to_vec();
    let mut rest = &mut copy[..];
    let mut frames = Vec::new();
    loop {
        match Record::decode_ref(rest) {
            Ok(Some((record, used))) => {
                frames.push(view(record));
                rest = &mut rest[used..];
            }
            Ok(None) => return (frames, Ok(rest.len())),
            Err(e) => return (frames, Err(e)),
        }
    }
}
