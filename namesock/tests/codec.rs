//! The frame codec: every frame type round-trips, arbitrary bytes never panic the decoder,
//! and malformed input gets the error it deserves.

use std::net::{IpAddr, SocketAddr};

use namesock::identity::{Guid, Keypair, PublicKey, Signature};
use std::collections::VecDeque;

use namesock::wire::{
    DecodeError, Frame, FrameReader, FrameRef, HEADER_LEN, Hello, HelloAck, MAX_DATA, MAX_FRAME,
    MAX_LOCATORS, OPEN_BODY_LEN, Open, OpenAck, RESUME_SEALED_LEN, Record, Refuse, ResetReason,
    Resume, ResumeAck, Step, TAG_LEN,
};
use proptest::prelude::*;

fn key() -> impl Strategy<Value = PublicKey> {
    any::<[u8; 32]>().prop_map(|seed| Keypair::from_seed(&seed).public())
}

fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&a);
        s[32..].copy_from_slice(&b);
        Signature(s)
    })
}

fn locator() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

fn reason() -> impl Strategy<Value = ResetReason> {
    prop_oneof![
        Just(ResetReason::PortRefused),
        Just(ResetReason::LingerExpired),
        Just(ResetReason::AuthFailed),
        Just(ResetReason::Protocol),
        Just(ResetReason::AppAbort),
        Just(ResetReason::Overloaded),
        Just(ResetReason::NotAllowed),
        Just(ResetReason::TooManySessions),
    ]
}

fn hello() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; 16]>(),
        key(),
        any::<[u8; 20]>(),
        any::<u16>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        signature(),
    )
        .prop_map(
            |(conn_id, client_key, target, port, ephemeral, window, signature)| {
                Frame::Hello(Hello {
                    conn_id,
                    client_key,
                    target: Guid::from_bytes(target),
                    port,
                    ephemeral,
                    window,
                    signature,
                })
            },
        )
}

fn hello_ack() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; 16]>(),
        key(),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<u32>(),
        signature(),
    )
        .prop_map(
            |(conn_id, server_key, ephemeral, window, linger_ms, signature)| {
                Frame::HelloAck(HelloAck {
                    conn_id,
                    server_key,
                    ephemeral,
                    window,
                    linger_ms,
                    signature,
                })
            },
        )
}

fn resume() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), RESUME_SEALED_LEN),
    )
        .prop_map(|(conn_id, freshness, sealed)| {
            Frame::Resume(Resume {
                conn_id,
                freshness,
                sealed: sealed.try_into().unwrap(),
            })
        })
}

fn resume_ack() -> impl Strategy<Value = Frame> {
    (any::<u32>(), any::<u64>())
        .prop_map(|(path_id, received)| Frame::ResumeAck(ResumeAck { path_id, received }))
}

fn refuse() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; 16]>(),
        reason(),
        any::<[u8; 32]>(),
        key(),
        signature(),
    )
        .prop_map(|(conn_id, reason, echo, server_key, signature)| {
            Frame::Refuse(Refuse {
                conn_id,
                reason,
                echo,
                server_key,
                signature,
            })
        })
}

fn open() -> impl Strategy<Value = Frame> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u16>(),
        any::<u32>(),
        any::<[u8; TAG_LEN]>(),
    )
        .prop_map(|(conn_id, parent, child, port, window, tag)| {
            Frame::Open(Open {
                conn_id,
                parent,
                child,
                port,
                window,
                tag,
            })
        })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello(),
        open(),
        (any::<u32>(), any::<u32>())
            .prop_map(|(window, linger_ms)| Frame::OpenAck(OpenAck { window, linger_ms })),
        hello_ack(),
        resume(),
        resume_ack(),
        refuse(),
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..=MAX_DATA)
        )
            .prop_map(|(offset, ack, payload)| Frame::Data {
                offset,
                ack,
                payload
            }),
        any::<u64>().prop_map(|ack| Frame::Ack { ack }),
        any::<u64>().prop_map(|token| Frame::Ping { token }),
        any::<u64>().prop_map(|token| Frame::Pong { token }),
        (
            any::<u64>(),
            prop::collection::vec(locator(), 0..=MAX_LOCATORS)
        )
            .prop_map(|(seq, locators)| Frame::Moved { seq, locators }),
        any::<u64>().prop_map(|offset| Frame::Fin { offset }),
        reason().prop_map(|reason| Frame::Reset { reason }),
    ]
}

fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out);
    out
}

/// As a path carries it: in clear, or in a SEALED record (sealed by an identity "cipher" with
/// a zero tag: the codec frames, the session encrypts).
fn wire_encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    if frame.travels_in_clear() {
        frame.encode(&mut out);
    } else {
        frame.encode_sealed(&mut out, |_, _| [0; TAG_LEN]);
    }
    out
}

/// A record as handed out: a frame in clear, or a SEALED record "opened" by the identity
/// cipher (its inner frame, or the inner frame's decode error).
#[derive(Debug, Clone, PartialEq, Eq)]
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
                .unwrap()
                .map(FrameRef::into_owned),
        ),
    }
}

fn expected_view(frame: &Frame) -> View {
    let mut bytes = wire_encode(frame);
    view(Record::decode_ref(&mut bytes).unwrap().unwrap().0)
}

/// `stream` cut at `cuts` into reads, `per_round` reads arriving before each round of
/// [`FrameReader`] reads (driven as `FlowPath::read_frames` does), a consumer that stops after
/// a frame when `stops` says so: the frames handed out, and the error if any.
fn read_through(
    stream: &[u8],
    mut cuts: Vec<usize>,
    per_round: usize,
    stops: &[bool],
) -> (Vec<View>, Result<usize, DecodeError>) {
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut later: VecDeque<&[u8]> = cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect();
    let mut socket: VecDeque<&[u8]> = VecDeque::new();
    let mut reader = FrameReader::new();
    let mut scratch = vec![0; MAX_FRAME + 1000];
    let mut got = Vec::new();
    loop {
        socket.extend(later.drain(..per_round.min(later.len())));
        let mut round = reader.round(&mut scratch);
        let step = loop {
            let step = round.frames(|f| {
                got.push(view(f));
                !stops
                    .get(got.len() % stops.len().max(1))
                    .copied()
                    .unwrap_or(false)
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
                return (got, Ok(reader.buffered()));
            }
            Ok(_) => {}
        }
    }
}

/// One-shot decoding of the whole stream: the records, then the error or the bytes left over.
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

fn cuts(len: usize) -> impl Strategy<Value = (Vec<usize>, usize, Vec<bool>)> {
    (
        prop::collection::vec(0..=len, 0..16),
        1..4usize,
        prop::collection::vec(prop::bool::weighted(0.2), 0..8),
    )
}

proptest! {
    #[test]
    fn the_reader_gives_back_the_frames_whatever_the_reads(
        (frames, (cuts, per_round, stops)) in prop::collection::vec(frame(), 1..8)
            .prop_flat_map(|frames| {
                let len = frames.iter().map(|f| wire_encode(f).len()).sum();
                (Just(frames), cuts(len))
            }),
    ) {
        let stream: Vec<u8> = frames.iter().flat_map(wire_encode).collect();
        let (got, end) = read_through(&stream, cuts, per_round, &stops);
        prop_assert_eq!(&got, &frames.iter().map(expected_view).collect::<Vec<_>>());
        for (got, frame) in got.iter().zip(&frames) {
            let opened = match got {
                View::Clear(f) | View::Sealed(Ok(f)) => f,
                View::Sealed(Err(e)) => panic!("{e}"),
            };
            prop_assert_eq!(opened, frame);
        }
        prop_assert_eq!(end, Ok(0));
    }

    /// Damaged streams: the reader hands out what one-shot decoding of the whole stream
    /// does, then the same error (or keeps the same partial frame).
    #[test]
    fn the_reader_agrees_with_one_shot_decoding_on_damaged_streams(
        (stream, (cuts, per_round, stops)) in (
            prop::collection::vec(frame(), 1..6),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(frames, flips, end)| {
                let mut stream: Vec<u8> = frames.iter().flat_map(wire_encode).collect();
                for (at, value) in flips {
                    let i = at.index(stream.len());
                    stream[i] = value;
                }
                stream.truncate(end.index(stream.len() + 1));
                stream
            })
            .prop_flat_map(|stream| {
                let len = stream.len();
                (Just(stream), cuts(len))
            }),
    ) {
        prop_assert_eq!(read_through(&stream, cuts, per_round, &stops), decode_all(&stream));
    }

    #[test]
    fn every_frame_round_trips(frame in frame()) {
        let bytes = encode(&frame);
        prop_assert!(bytes.len() <= MAX_FRAME);
        prop_assert_eq!(Frame::decode(&bytes), Ok(Some((frame.clone(), bytes.len()))));
        // Any strict prefix is "need more bytes", never an error or a different frame.
        for cut in [0, 1, HEADER_LEN - 1, HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
            prop_assert_eq!(Frame::decode(&bytes[..cut.min(bytes.len() - 1)]), Ok(None));
        }
    }

    #[test]
    fn frames_decode_back_to_back(frames in prop::collection::vec(frame(), 1..6)) {
        let mut stream = Vec::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        let mut rest = &stream[..];
        for f in &frames {
            let (got, used) = Frame::decode(rest).unwrap().unwrap();
            prop_assert_eq!(&got, f);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn in_place_decoding_borrows_the_payload_and_agrees_with_owned(frame in frame()) {
        let bytes = encode(&frame);
        let (got, used) = FrameRef::decode_ref(&bytes).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());
        if let Frame::Data { payload, .. } = &got {
            let input = bytes.as_ptr_range();
            prop_assert!(payload.is_empty() || input.contains(&payload.as_ptr()), "payload copied");
        }
        prop_assert_eq!(got.into_owned(), frame);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(Some((frame, used))) = Frame::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert_eq!(encode(&frame), &bytes[..used]);
        }
    }

    #[test]
    fn decode_never_panics_on_mutated_frames(
        frame in frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&frame);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(Some((frame, used))) = Frame::decode(&bytes) {
            prop_assert_eq!(encode(&frame), &bytes[..used]);
        }
    }
}

fn header(kind: u8, len: u32) -> Vec<u8> {
    let mut h = vec![kind];
    h.extend_from_slice(&len.to_be_bytes());
    h
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let len = (MAX_FRAME - HEADER_LEN + 1) as u32;
    assert_eq!(
        Frame::decode(&header(5, len)),
        Err(DecodeError::TooLong {
            len: len as usize,
            max: MAX_FRAME - HEADER_LEN
        })
    );
    assert!(matches!(
        Frame::decode(&header(5, u32::MAX)),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn unknown_types_are_errors_even_before_the_header_is_complete() {
    assert_eq!(Frame::decode(&[0]), Err(DecodeError::UnknownType(0)));
    assert_eq!(Frame::decode(&[16]), Err(DecodeError::UnknownType(16)));
    assert_eq!(
        Frame::decode(&header(0xff, 0)),
        Err(DecodeError::UnknownType(0xff))
    );
}

#[test]
fn bodies_must_match_their_fields_exactly() {
    let mut short = header(6, 7);
    short.extend_from_slice(&[0; 7]);
    assert_eq!(Frame::decode(&short), Err(DecodeError::Truncated("ACK")));
    let mut long = header(6, 9);
    long.extend_from_slice(&[0; 9]);
    assert_eq!(Frame::decode(&long), Err(DecodeError::TrailingBytes("ACK")));
}

#[test]
fn oversized_data_payload_is_refused() {
    let payload = MAX_DATA + 1;
    let mut bytes = header(5, (16 + payload) as u32);
    bytes.resize(HEADER_LEN + 16 + payload, 0);
    assert_eq!(
        Frame::decode(&bytes),
        Err(DecodeError::PayloadTooLarge(payload))
    );
}

#[test]
fn an_open_needs_magic_version_and_exactly_its_fields() {
    let open = Frame::Open(Open {
        conn_id: [1; 16],
        parent: [2; 16],
        child: 3,
        port: 8000,
        window: 1 << 20,
        tag: [4; TAG_LEN],
    });
    let good = encode(&open);
    assert_eq!(good.len(), HEADER_LEN + OPEN_BODY_LEN);
    assert_eq!(Frame::decode(&good), Ok(Some((open.clone(), good.len()))));
    let mut bad_magic = good.clone();
    bad_magic[HEADER_LEN + 1] ^= 1;
    assert_eq!(Frame::decode(&bad_magic), Err(DecodeError::BadMagic));
    let mut bad_version = good.clone();
    bad_version[HEADER_LEN + 4] = 3;
    assert_eq!(
        Frame::decode(&bad_version),
        Err(DecodeError::UnsupportedVersion(3))
    );
    // One byte short (the length says so) and one byte too many.
    let mut short = header(14, OPEN_BODY_LEN as u32 - 1);
    short.extend_from_slice(&good[HEADER_LEN..good.len() - 1]);
    assert_eq!(Frame::decode(&short), Err(DecodeError::Truncated("OPEN")));
    let mut long = header(14, OPEN_BODY_LEN as u32 + 1);
    long.extend_from_slice(&good[HEADER_LEN..]);
    long.push(0);
    assert_eq!(
        Frame::decode(&long),
        Err(DecodeError::TrailingBytes("OPEN"))
    );
    // OPEN_ACK travels sealed only: in clear a path refuses it.
    let ack = encode(&Frame::OpenAck(OpenAck {
        window: 1,
        linger_ms: 2,
    }));
    assert_eq!(ack.len(), HEADER_LEN + 8);
    let mut buf = ack.clone();
    assert_eq!(
        Record::decode_ref(&mut buf).err(),
        Some(DecodeError::Unsealed("OPEN_ACK"))
    );
    let mut buf = good.clone();
    assert!(matches!(
        Record::decode_ref(&mut buf),
        Ok(Some((Record::Clear(Frame::Open(_)), _)))
    ));
}

#[test]
fn path_openers_need_magic_and_version() {
    let resume = Frame::Resume(Resume {
        conn_id: [1; 16],
        freshness: 4,
        sealed: [5; RESUME_SEALED_LEN],
    });
    let good = encode(&resume);
    let mut bad_magic = good.clone();
    bad_magic[HEADER_LEN] ^= 1;
    assert_eq!(Frame::decode(&bad_magic), Err(DecodeError::BadMagic));
    let mut bad_version = good.clone();
    bad_version[HEADER_LEN + 4] = 1;
    assert_eq!(
        Frame::decode(&bad_version),
        Err(DecodeError::UnsupportedVersion(1))
    );
}

#[test]
fn bad_reset_reasons_families_and_locator_counts_are_refused() {
    let mut reset = header(10, 2);
    reset.extend_from_slice(&99u16.to_be_bytes());
    assert_eq!(
        Frame::decode(&reset),
        Err(DecodeError::UnknownResetReason(99))
    );

    let mut family = header(11, 8 + 1 + 1 + 4 + 2);
    family.extend_from_slice(&[0; 8]);
    family.extend_from_slice(&[1, 5, 1, 2, 3, 4, 0, 80]);
    assert_eq!(
        Frame::decode(&family),
        Err(DecodeError::BadAddressFamily(5))
    );

    let mut many = header(11, 9);
    many.extend_from_slice(&[0; 8]);
    many.push(MAX_LOCATORS as u8 + 1);
    assert_eq!(
        Frame::decode(&many),
        Err(DecodeError::TooManyLocators(MAX_LOCATORS + 1))
    );
}

#[test]
fn invalid_public_keys_are_refused() {
    let hello = Frame::Hello(Hello {
        conn_id: [0; 16],
        client_key: Keypair::from_seed(&[1; 32]).public(),
        target: Guid::from_bytes([0; 20]),
        port: 80,
        ephemeral: [0; 32],
        window: 1,
        signature: Signature([0; 64]),
    });
    let mut bytes = encode(&hello);
    // Not a point on the curve: no x exists for y = 2.
    let key_at = HEADER_LEN + 4 + 1 + 16;
    let mut y = [0u8; 32];
    y[0] = 2;
    bytes[key_at..key_at + 32].copy_from_slice(&y);
    assert_eq!(Frame::decode(&bytes), Err(DecodeError::BadKey));
}

#[test]
fn frame_sizes_are_the_documented_ones() {
    let sig = Signature([0; 64]);
    let key = Keypair::from_seed(&[1; 32]).public();
    let body = |f: Frame| encode(&f).len() - HEADER_LEN;
    let hello = Hello {
        conn_id: [0; 16],
        client_key: key,
        target: Guid::from_bytes([0; 20]),
        port: 1,
        ephemeral: [0; 32],
        window: 1,
        signature: sig,
    };
    assert_eq!(body(Frame::Hello(hello)), 175);
    let ack = HelloAck {
        conn_id: [0; 16],
        server_key: key,
        ephemeral: [0; 32],
        window: 1,
        linger_ms: 1,
        signature: sig,
    };
    assert_eq!(body(Frame::HelloAck(ack)), 152);
    let resume = Resume {
        conn_id: [0; 16],
        freshness: 1,
        sealed: [0; RESUME_SEALED_LEN],
    };
    assert_eq!(body(Frame::Resume(resume)), 57);
    let refuse = Refuse {
        conn_id: [0; 16],
        reason: ResetReason::PortRefused,
        echo: [0; 32],
        server_key: key,
        signature: sig,
    };
    assert_eq!(body(Frame::Refuse(refuse)), 146);
    let resume_ack = Frame::ResumeAck(ResumeAck {
        path_id: 1,
        received: 1,
    });
    assert_eq!(body(resume_ack.clone()), 12);
    // Sealed: inner type, inner body, tag.
    assert_eq!(
        wire_encode(&resume_ack).len(),
        HEADER_LEN + 1 + 12 + TAG_LEN
    );
    let data = Frame::Data {
        offset: 0,
        ack: 0,
        payload: vec![0; MAX_DATA],
    };
    assert_eq!(body(data), 16 + MAX_DATA);
    assert_eq!(body(Frame::Ack { ack: 0 }), 8);
    assert_eq!(
        body(Frame::Reset {
            reason: ResetReason::AppAbort
        }),
        2
    );
    let moved = Frame::Moved {
        seq: 0,
        locators: vec![
            "192.0.2.1:80".parse().unwrap(),
            "[2001:db8::1]:80".parse().unwrap(),
        ],
    };
    assert_eq!(body(moved), 9 + 7 + 19);
}
