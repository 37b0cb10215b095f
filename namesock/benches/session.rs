//! The sans-IO session: bytes written by one application move to the other through two
//! in-memory sessions, through the frame codec and the AEAD (as the engine moves them), and
//! the handshake, and a session opened from a ticket (OPEN) instead.
//! `cargo bench -p namesock --bench session` (run by `bench/run.sh`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use namesock::identity::Keypair;
use namesock::session::{Acceptor, Event, Session, SessionConfig};
use namesock::ticket::{ClientTickets, ServerTickets};
use namesock::wire::{Frame, FrameReader, PathId};

const HANDSHAKE: &str = "session/handshake (X25519, sign and verify both ways)";
const OPEN: &str = "session/open (a ticket: OPEN and OPEN_ACK, no X25519, no signature)";
const CPATH: PathId = 1;
const SPATH: PathId = 100;

/// Records go through the production path: `transmit_into` (encode, seal in place), then
/// `FrameReader` and `handle_record` (open and decode in place), as the engine does.
struct Pair {
    now: Instant,
    client: Session,
    server: Session,
    wire: Vec<u8>,
    scratch: Vec<u8>,
    reader: FrameReader,
}

impl Pair {
    fn new() -> Pair {
        let cfg = SessionConfig::default();
        let now = Instant::now();
        let skey = Arc::new(Keypair::from_seed(&[2; 32]));
        let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
        let mut client = Session::client(cfg, ckey, skey.guid(), 80, [1; 16], now);
        client.path_opened(now, CPATH);
        let mut hello = Vec::new();
        while client.transmit_into(now, CPATH, &mut hello) {}
        let Ok(Some((Frame::Hello(hello), _))) = Frame::decode(&hello) else {
            panic!("no HELLO");
        };
        let server = Acceptor::new(cfg, skey)
            .accept_hello(now, &hello, SPATH)
            .expect("HELLO accepted");
        let mut pair = Pair {
            now,
            client,
            server,
            wire: Vec::with_capacity(128 * 1024),
            scratch: vec![0; FrameReader::MIN_SCRATCH + 256 * 1024],
            reader: FrameReader::new(),
        };
        pair.pump();
        assert!(matches!(
            pair.client.poll_event(),
            Some(Event::Established { .. })
        ));
        pair
    }

    /// Frames both ways until quiet (bounded: a quiet pair stops at once).
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let to_server = self.carry(true);
            let to_client = self.carry(false);
            if !to_server && !to_client {
                return;
            }
        }
    }

    /// One write buffer's worth of frames from one session to the other, encoded and decoded
    /// as on a flow path. Returns whether there were any.
    fn carry(&mut self, to_server: bool) -> bool {
        let now = self.now;
        let (from, from_path, to, to_path) = if to_server {
            (&mut self.client, CPATH, &mut self.server, SPATH)
        } else {
            (&mut self.server, SPATH, &mut self.client, CPATH)
        };
        self.wire.clear();
        while self.wire.len() < 128 * 1024 && from.transmit_into(now, from_path, &mut self.wire) {}
        self.reader
            .feed(&mut self.scratch, &self.wire, |record| {
                let _ = to.handle_record(now, to_path, record);
                true
            })
            .expect("codec round trip");
        !self.wire.is_empty()
    }

    /// Move `total` bytes from the client application to the server application.
    fn transfer(&mut self, data: &[u8], total: usize, buf: &mut [u8]) -> usize {
        let (mut written, mut read) = (0, 0);
        // Bounded: every round moves at least one frame's worth while bytes remain.
        for _ in 0..(total / 1024 + 1000) {
            if read >= total {
                break;
            }
            if written < total {
                let n = (total - written).min(data.len());
                written += self.client.app_write(&data[..n]);
            }
            self.pump();
            loop {
                let n = self.server.app_read(buf);
                if n == 0 {
                    break;
                }
                read += n;
            }
            self.pump();
            while self.client.poll_event().is_some() {}
            while self.server.poll_event().is_some() {}
        }
        read
    }
}

fn session(c: &mut Criterion) {
    let total = 16 << 20;
    let data = vec![0x5a; 256 * 1024];
    let mut buf = vec![0; 256 * 1024];
    let mut g = c.benchmark_group("session/transfer");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("16 MiB one way", "sealed"), |b| {
        let mut pair = Pair::new();
        b.iter(|| {
            let got = pair.transfer(&data, total, &mut buf);
            assert_eq!(got, total);
            black_box(got)
        })
    });
    g.finish();

    c.bench_function(HANDSHAKE, |b| {
        b.iter(|| black_box(Pair::new().client.conn_id()))
    });

    // One parent session's ticket on both sides, then new sessions from it, one after
    // another, each with the next child number (as the engine does for sequential connects).
    let pair = Pair::new();
    let (cfg, now) = (SessionConfig::default(), pair.now);
    let ticket = pair.server.ticket().expect("the server's ticket");
    let mut server_tickets = ServerTickets::default();
    server_tickets.store(now, &ticket, 80);
    let mut client_tickets = ClientTickets::default();
    let client_ticket = pair.client.ticket().expect("the client's ticket");
    client_tickets.store(now, &client_ticket, 80, "192.0.2.1:80".parse().unwrap());
    let acceptor = Acceptor::new(cfg, Arc::new(Keypair::from_seed(&[2; 32])));
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let server_guid = client_ticket.peer.guid();
    let mut out = Vec::new();
    let mut scratch = vec![0; FrameReader::MIN_SCRATCH];
    c.bench_function(OPEN, |b| {
        b.iter(|| {
            let t = client_tickets
                .take(now, &server_guid, 80)
                .expect("a live ticket");
            let mut client = Session::client_open(cfg, ckey.clone(), t, 80, [3; 16], now);
            client.path_opened(now, CPATH);
            out.clear();
            while client.transmit_into(now, CPATH, &mut out) {}
            let Ok(Some((Frame::Open(open), _))) = Frame::decode(&out) else {
                panic!("no OPEN");
            };
            let verified = server_tickets.verify(now, &open).expect("OPEN verified");
            let mut server = acceptor.accept_open(now, &open, &verified, SPATH);
            out.clear();
            while server.transmit_into(now, SPATH, &mut out) {}
            FrameReader::new()
                .feed(&mut scratch, &out, |record| {
                    client.handle_record(now, CPATH, record).expect("OPEN_ACK");
                    true
                })
                .expect("codec round trip");
            assert!(matches!(
                client.poll_event(),
                Some(Event::Established { .. })
            ));
            black_box(client.conn_id())
        })
    });
}

criterion_group!(benches, session);
criterion_main!(benches);
