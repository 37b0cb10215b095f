//! The frame codec: encode and decode of DATA frames (the bulk path) and of the small control
//! frames, and a stream of frames cut by reads through a `FrameReader` (the engine's receive
//! path, minus the socket). `cargo bench -p namesock --bench wire` (run by `bench/run.sh`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use namesock::identity::{Keypair, Signature};
use namesock::wire::{Frame, FrameReader, Hello, MAX_DATA, MAX_FRAME, Record, Step, TAG_LEN};

fn data(len: usize) -> Frame {
    Frame::Data {
        offset: 1 << 40,
        ack: 1 << 39,
        payload: vec![0xa5; len],
    }
}

fn hello() -> Frame {
    let key = Keypair::from_seed(&[1; 32]);
    Frame::Hello(Hello {
        conn_id: [7; 16],
        client_key: key.public(),
        target: Keypair::from_seed(&[2; 32]).guid(),
        port: 8000,
        ephemeral: [3; 32],
        window: 4 << 20,
        signature: Signature([4; 64]),
    })
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire/data");
    for len in [64, 1024, 16 * 1024, MAX_DATA] {
        let frame = data(len);
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("encode", len), &frame, |b, f| {
            let mut out = Vec::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                black_box(f).encode(&mut out);
                black_box(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", len), &wire, |b, w| {
            b.iter(|| Frame::decode(black_box(w)).map(|f| f.map(|(_, n)| n)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("wire/control");
    for (name, frame) in [
        ("ack", Frame::Ack { ack: 123_456 }),
        ("ping", Frame::Ping { token: 9 }),
        ("hello", hello()),
    ] {
        let mut wire = Vec::new();
        frame.encode(&mut wire);
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = Vec::with_capacity(wire.len());
            b.iter(|| {
                out.clear();
                black_box(&frame).encode(&mut out);
                black_box(out.len())
            })
        });
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| Frame::decode(black_box(&wire)).map(|f| f.map(|(_, n)| n)))
        });
    }
    g.finish();
}

/// 256 SEALED records (DATA of 16 KiB and 21 bytes, ACK, PING; sealed by an identity cipher:
/// the AEAD is the session bench's) in reads of 60 000 bytes, so most reads end inside a
/// record: each read in its own round, the partial record kept between.
fn reader(c: &mut Criterion) {
    let mut stream = Vec::new();
    let mut frames = 0;
    for i in 0..64 {
        for frame in [
            data(16 * 1024),
            Frame::Ack { ack: i },
            data(21),
            Frame::Ping { token: i },
        ] {
            frame.encode_sealed(&mut stream, |_, _| [0; TAG_LEN]);
            frames += 1;
        }
    }
    const READ: usize = 60_000;
    let mut scratch = vec![0; MAX_FRAME + 256 * 1024];
    let mut g = c.benchmark_group("wire/reader");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function(BenchmarkId::new("frames", frames), |b| {
        let mut reader = FrameReader::new();
        b.iter(|| {
            let mut got = 0usize;
            for read in stream.chunks(READ) {
                let step = reader.feed(&mut scratch, black_box(read), |record| {
                    if let Record::Sealed(sealed) = black_box(record) {
                        got += sealed.wire_len();
                    }
                    true
                });
                assert_eq!(step, Ok(Step::NeedBytes));
            }
            assert_eq!(reader.buffered(), 0);
            got
        })
    });
    g.finish();
}

criterion_group!(benches, codec, reader);
criterion_main!(benches);
