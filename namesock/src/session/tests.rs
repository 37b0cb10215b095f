//! Authentication and state-rule tests, driving a client and a server session by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Keypair, Signature};

use super::*;

const CPATH: PathId = 1;
const SPATH: PathId = 100;
/// Frames built by hand own their payload (`Frame` alone leaves it to inference).
type Owned = Frame;

fn cfg() -> SessionConfig {
    SessionConfig {
        replay_capacity: 64 * 1024,
        recv_capacity: 64 * 1024,
        ..SessionConfig::default()
    }
}

fn server_key() -> Arc<Keypair> {
    Arc::new(Keypair::from_seed(&[2; 32]))
}

/// A client and a server session joined by pairs of (client path, server path).
struct Pair {
    now: Instant,
    client: Session,
    server: Session,
    links: Vec<(PathId, PathId)>,
}

impl Pair {
    fn new(conn: u8, cfg: SessionConfig) -> Pair {
        let now = Instant::now();
        let skey = server_key();
        let ckey = Arc::new(Keypair::from_seed(&[conn; 32]));
        let mut client = Session::client(cfg, ckey, skey.guid(), 80, [conn; 16], [9; 32], now);
        client.path_opened(now, CPATH);
        let Some(Frame::Hello(hello)) = client.poll_transmit(now, CPATH) else {
            panic!("no HELLO");
        };
        let server = Acceptor::new(cfg, skey)
            .accept_hello(now, &hello, SPATH)
            .unwrap();
        let mut pair = Pair {
            now,
            client,
            server,
            links: vec![(CPATH, SPATH)],
        };
        pair.pump();
        assert!(matches!(
            pair.client.poll_event(),
            Some(Event::Established { .. })
        ));
        assert!(matches!(
            pair.server.poll_event(),
            Some(Event::Established { .. })
        ));
        pair
    }

    /// Delivers frames both ways on every link until all is quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for &(c, s) in &self.links {
                while let Some(f) = self.client.poll_transmit(self.now, c) {
                    let _ = self.server.handle_frame(self.now, s, f);
                    moved = true;
                }
                while let Some(f) = self.server.poll_transmit(self.now, s) {
                    let _ = self.client.handle_frame(self.now, c, f);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn client_to_server(&mut self, data: &[u8]) -> Vec<u8> {
        assert_eq!(self.client.app_write(data), data.len());
        self.pump();
        read_all(&mut self.server)
    }

    fn server_to_client(&mut self, data: &[u8]) -> Vec<u8> {
        assert_eq!(self.server.app_write(data), data.len());
        self.pump();
        read_all(&mut self.client)
    }

    fn still_works(&mut self) {
        assert_eq!(self.client_to_server(b"still there?"), b"still there?");
        assert_eq!(self.server_to_client(b"yes"), b"yes");
    }

    /// The client opens `cpath` and returns the RESUME it would send (not delivered).
    fn open_resume(&mut self, cpath: PathId) -> Resume {
        self.client.path_opened(self.now, cpath);
        match self.client.poll_transmit(self.now, cpath) {
            Some(Frame::Resume(r)) => r,
            other => panic!("expected RESUME, got {other:?}"),
        }
    }
}

fn read_all(s: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.app_read(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn hello_ack_from_a_key_that_is_not_the_guid_is_a_hard_failure() {
    let now = Instant::now();
    let real = server_key();
    let impostor = Keypair::from_seed(&[66; 32]);
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let mut client = Session::client(cfg(), ckey, real.guid(), 80, [1; 16], [9; 32], now);
    client.path_opened(now, CPATH);
    let Some(Frame::Hello(hello)) = client.poll_transmit(now, CPATH) else {
        panic!("no HELLO");
    };
    // A correctly signed answer, but by a key that does not hash to the GUID we dialled.
    let mut ack = HelloAck {
        conn_id: hello.conn_id,
        server_key: impostor.public(),
        window: 1 << 16,
        linger_ms: 60_000,
        signature: Signature([0; 64]),
    };
    ack.signature = impostor.sign(&auth::hello_ack(&hello, &ack));
    assert_eq!(
        client.handle_frame(now, CPATH, Owned::HelloAck(ack)),
        Err(SessionError::Handshake(HandshakeError::KeyMismatch))
    );
    assert!(events(&mut client).contains(&Event::Reset {
        reason: ResetReason::AuthFailed
    }));
    assert!(client.is_finished());
    assert_eq!(client.peer(), None);
}

#[test]
fn hello_ack_with_the_right_key_but_a_bad_signature_is_a_hard_failure() {
    let now = Instant::now();
    let skey = server_key();
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let mut client = Session::client(cfg(), ckey, skey.guid(), 80, [1; 16], [9; 32], now);
    client.path_opened(now, CPATH);
    let Some(Frame::Hello(hello)) = client.poll_transmit(now, CPATH) else {
        panic!("no HELLO");
    };
    let server = Acceptor::new(cfg(), skey).accept_hello(now, &hello, SPATH);
    let Some(Frame::HelloAck(mut ack)) = server.unwrap().poll_transmit(now, SPATH) else {
        panic!("no HELLO_ACK");
    };
    ack.window += 1; // tampered in flight
    assert_eq!(
        client.handle_frame(now, CPATH, Owned::HelloAck(ack)),
        Err(SessionError::Handshake(HandshakeError::BadSignature))
    );
    assert!(events(&mut client).contains(&Event::Reset {
        reason: ResetReason::AuthFailed
    }));
}

#[test]
fn acceptor_refuses_hellos_for_other_guids_or_badly_signed() {
    let now = Instant::now();
    let skey = server_key();
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let acceptor = Acceptor::new(cfg(), skey.clone());
    let other = Keypair::from_seed(&[3; 32]).guid();
    let mut wrong = Session::client(cfg(), ckey.clone(), other, 80, [1; 16], [9; 32], now);
    wrong.path_opened(now, CPATH);
    let Some(Frame::Hello(hello)) = wrong.poll_transmit(now, CPATH) else {
        panic!("no HELLO");
    };
    assert_eq!(
        acceptor.accept_hello(now, &hello, SPATH).unwrap_err(),
        HandshakeError::WrongTarget
    );

    let mut client = Session::client(cfg(), ckey, skey.guid(), 80, [1; 16], [9; 32], now);
    client.path_opened(now, CPATH);
    let Some(Frame::Hello(mut hello)) = client.poll_transmit(now, CPATH) else {
        panic!("no HELLO");
    };
    hello.port = 22;
    assert_eq!(
        acceptor.accept_hello(now, &hello, SPATH).unwrap_err(),
        HandshakeError::BadSignature
    );
}

#[test]
fn a_resume_signed_by_another_key_is_rejected_and_the_session_goes_on() {
    let mut pair = Pair::new(1, cfg());
    pair.still_works();
    let genuine = pair.open_resume(2);
    let thief = Keypair::from_seed(&[99; 32]);
    let mut forged = genuine.clone();
    forged.freshness += 10;
    forged.signature = thief.sign(&auth::resume(&server_key().guid(), &forged));
    assert_eq!(
        pair.server.verify_resume(&forged),
        Err(ResumeError::BadSignature)
    );
    // Tampering with any field of a genuine one breaks its signature too.
    let mut tampered = genuine;
    tampered.received = 0;
    assert_eq!(
        pair.server.verify_resume(&tampered),
        Err(ResumeError::BadSignature)
    );
    pair.server.attach_resume(pair.now, &forged, 200);
    assert!(pair.server.poll_transmit(pair.now, 200).is_none());
    pair.still_works();
}

#[test]
fn a_replayed_resume_is_rejected_and_the_session_goes_on() {
    let mut pair = Pair::new(1, cfg());
    pair.still_works();
    let resume = pair.open_resume(2);
    assert_eq!(pair.server.verify_resume(&resume), Ok(()));
    pair.server.attach_resume(pair.now, &resume, 200);
    pair.links.push((2, 200));
    pair.pump();
    pair.still_works();
    // The attacker sniffed that RESUME and plays it again on a connection of its own.
    assert_eq!(
        pair.server.verify_resume(&resume),
        Err(ResumeError::Replayed {
            freshness: resume.freshness,
            last: resume.freshness
        })
    );
    pair.server.attach_resume(pair.now, &resume, 300);
    assert!(pair.server.poll_transmit(pair.now, 300).is_none());
    pair.still_works();
}

#[test]
fn a_resume_for_another_connection_is_rejected_and_the_session_goes_on() {
    let mut pair = Pair::new(1, cfg());
    let mut other = Pair::new(5, cfg());
    let foreign = other.open_resume(2);
    assert_ne!(foreign.conn_id(), pair.server.conn_id());
    assert_eq!(
        pair.server.verify_resume(&foreign),
        Err(ResumeError::WrongConnection)
    );
    pair.server.attach_resume(pair.now, &foreign, 200);
    assert!(pair.server.poll_transmit(pair.now, 200).is_none());
    pair.still_works();
}

#[test]
fn a_forged_resume_ack_closes_only_that_path() {
    let mut pair = Pair::new(1, cfg());
    let resume = pair.open_resume(2);
    let forged = ResumeAck {
        conn_id: resume.conn_id,
        path_id: resume.path_id,
        received: 0,
        signature: Signature([7; 64]),
    };
    assert_eq!(
        pair.client
            .handle_frame(pair.now, 2, Owned::ResumeAck(forged)),
        Err(SessionError::Handshake(HandshakeError::BadSignature))
    );
    assert!(events(&mut pair.client).contains(&Event::PathDead(2)));
    pair.still_works();
}

#[test]
fn a_full_replay_buffer_pushes_back_and_acks_free_it() {
    let small = SessionConfig {
        replay_capacity: 1000,
        ..cfg()
    };
    let mut pair = Pair::new(1, small);
    assert_eq!(pair.client.app_write(&[1; 1500]), 1000);
    assert_eq!(pair.client.app_write(&[1; 10]), 0);
    pair.pump();
    assert_eq!(read_all(&mut pair.server).len(), 1000);
    pair.pump();
    assert_eq!(pair.client.app_room(), 1000);
    assert_eq!(pair.client.app_write(&[1; 500]), 500);
}

#[test]
fn room_comes_back_as_the_peer_confirms_bytes() {
    let small = SessionConfig {
        replay_capacity: 1000,
        ..cfg()
    };
    let mut pair = Pair::new(1, small);
    assert_eq!(pair.client.app_room(), 1000);
    assert_eq!(pair.client.app_write(&[1; 1000]), 1000);
    assert_eq!(pair.client.app_room(), 0);
    pair.pump();
    // Sent, not yet confirmed: the replay buffer still holds it.
    assert_eq!(pair.client.app_room(), 0);
    assert_eq!(read_all(&mut pair.server).len(), 1000);
    pair.pump();
    assert_eq!(pair.client.app_room(), 1000);
}

#[test]
fn received_bytes_are_read_in_place_then_consumed() {
    let mut pair = Pair::new(1, cfg());
    assert_eq!(pair.client.app_write(b"hello world"), 11);
    pair.pump();
    assert_eq!(pair.server.app_readable().concat(), b"hello world");
    pair.server.app_consume(6);
    assert_eq!(pair.server.app_readable().concat(), b"world");
    pair.server.app_consume(5);
    assert!(pair.server.app_readable().concat().is_empty());
    pair.pump();
    assert_eq!(pair.client_to_server(b"more"), b"more");
}

#[test]
fn frames_encoded_in_place_carry_the_stream_across_the_replay_buffers_wrap() {
    let small = SessionConfig {
        replay_capacity: 3000,
        ..cfg()
    };
    let mut pair = Pair::new(1, small);
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (mut written, mut got) = (0, Vec::new());
    while got.len() < data.len() {
        written += pair
            .client
            .app_write(&data[written..(written + 1100).min(data.len())]);
        let mut wire = Vec::new();
        while pair.client.transmit_into(pair.now, CPATH, &mut wire) {}
        let mut rest = &wire[..];
        while let Some((frame, used)) = crate::wire::FrameRef::decode_ref(rest).unwrap() {
            pair.server.handle_frame(pair.now, SPATH, frame).unwrap();
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        got.extend(read_all(&mut pair.server));
        pair.pump();
    }
    assert_eq!(got, data);
}

#[test]
fn the_sender_never_exceeds_the_receivers_window() {
    let narrow = SessionConfig {
        recv_capacity: 1000,
        ..cfg()
    };
    let mut pair = Pair::new(1, narrow);
    assert_eq!(pair.server.app_write(&[3; 5000]), 5000);
    pair.pump();
    // Nothing read yet: exactly one window is in flight.
    let mut buf = [0u8; 10_000];
    assert_eq!(pair.client.app_read(&mut buf), 1000);
    pair.pump();
    assert_eq!(read_all(&mut pair.client).len(), 1000);
    // DATA beyond the window is a protocol error on that path.
    let err = pair.client.handle_frame(
        pair.now,
        CPATH,
        Frame::Data {
            offset: 2000,
            ack: 0,
            payload: vec![0; 2000],
        },
    );
    assert!(matches!(err, Err(SessionError::BeyondWindow { .. })));
}

#[test]
fn keepalive_then_dead_path_then_need_path_then_linger() {
    let mut pair = Pair::new(1, cfg());
    let c = cfg();
    let t = pair.client.poll_timeout().unwrap();
    assert_eq!(t, pair.now + c.keepalive_interval);
    pair.client.handle_timeout(t);
    assert!(matches!(
        pair.client.poll_transmit(t, CPATH),
        Some(Frame::Ping { .. })
    ));
    let dead = pair.now + c.path_dead_after;
    pair.client.handle_timeout(dead);
    pair.server.handle_timeout(dead);
    assert_eq!(
        events(&mut pair.client),
        vec![Event::PathDead(CPATH), Event::NeedPath]
    );
    assert_eq!(events(&mut pair.server), vec![Event::PathDead(SPATH)]);
    let end = dead + c.linger;
    for s in [&mut pair.client, &mut pair.server] {
        assert_eq!(s.poll_timeout(), Some(end));
        s.handle_timeout(end);
        assert_eq!(
            events(s),
            vec![Event::Reset {
                reason: ResetReason::LingerExpired
            }]
        );
        assert!(s.is_finished());
    }
}

#[test]
fn a_server_announces_each_move_once() {
    let mut pair = Pair::new(1, cfg());
    let to: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
    pair.server.announce_moved(3, vec![to]);
    pair.pump();
    assert_eq!(
        events(&mut pair.client),
        vec![Event::Moved {
            seq: 3,
            locators: vec![to]
        }]
    );
    pair.server.announce_moved(3, vec![to]);
    pair.pump();
    assert_eq!(events(&mut pair.client), vec![]);
}

#[test]
fn half_close_both_ways_ends_closed_on_both_sides() {
    let mut pair = Pair::new(1, cfg());
    pair.client.app_write(b"request");
    pair.client.app_shutdown_write();
    pair.pump();
    assert_eq!(read_all(&mut pair.server), b"request");
    assert!(pair.server.app_read_eof());
    // The server still writes after the client's half-close.
    pair.server.app_write(b"response");
    pair.server.app_shutdown_write();
    pair.pump();
    assert_eq!(read_all(&mut pair.client), b"response");
    assert!(pair.client.app_read_eof());
    pair.pump();
    assert!(events(&mut pair.client).contains(&Event::Closed));
    assert!(events(&mut pair.server).contains(&Event::Closed));
    assert!(pair.client.is_finished());
    // The server stays resumable for the linger period after its last path goes.
    pair.server.path_closed(pair.now, SPATH);
    assert!(!pair.server.is_finished());
    pair.server.handle_timeout(pair.now + cfg().linger);
    assert!(pair.server.is_finished());
    assert_eq!(events(&mut pair.server), vec![]);
}

#[test]
fn peer_reset_and_app_abort() {
    let mut pair = Pair::new(1, cfg());
    pair.client.app_abort();
    assert!(!pair.client.is_finished());
    pair.pump();
    assert!(pair.client.is_finished());
    assert_eq!(
        events(&mut pair.server),
        vec![Event::Reset {
            reason: ResetReason::AppAbort
        }]
    );
    assert!(pair.server.is_finished());
}

mod arbitrary_input {
    use proptest::prelude::*;

    use super::*;

    fn frame() -> impl Strategy<Value = Frame> {
        let small = 0..3000u64;
        prop_oneof![
            (
                small.clone(),
                small.clone(),
                prop::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(offset, ack, payload)| Frame::Data {
                    offset,
                    ack,
                    payload
                }),
            small.clone().prop_map(|ack| Frame::Ack { ack }),
            small.clone().prop_map(|offset| Frame::Fin { offset }),
            any::<u64>().prop_map(|token| Frame::Ping { token }),
            any::<u64>().prop_map(|token| Owned::Pong { token }),
            Just(Frame::Reset {
                reason: ResetReason::Protocol
            }),
            any::<u64>().prop_map(|seq| Frame::Moved {
                seq,
                locators: vec![]
            }),
            (small.clone(), any::<u64>()).prop_map(|(received, freshness)| {
                Frame::Resume(Resume {
                    conn_id: [1; 16],
                    path_id: 2,
                    received,
                    freshness,
                    signature: Signature([0; 64]),
                })
            }),
            small.prop_map(|received| Frame::ResumeAck(ResumeAck {
                conn_id: [1; 16],
                path_id: 2,
                received,
                signature: Signature([0; 64]),
            })),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        ToClient(PathId, Frame),
        ToServer(PathId, Frame),
        Write(bool, usize),
        Read(bool, usize),
        Shutdown(bool),
        Wait(u64),
        Pump,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (prop_oneof![Just(CPATH), Just(2)], frame()).prop_map(|(p, f)| Step::ToClient(p, f)),
            3 => (prop_oneof![Just(SPATH), Just(7)], frame()).prop_map(|(p, f)| Step::ToServer(p, f)),
            1 => (any::<bool>(), 0..5000usize).prop_map(|(c, n)| Step::Write(c, n)),
            1 => (any::<bool>(), 0..5000usize).prop_map(|(c, n)| Step::Read(c, n)),
            1 => any::<bool>().prop_map(Step::Shutdown),
            1 => (0..20_000u64).prop_map(Step::Wait),
            2 => Just(Step::Pump),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever a peer sends, in whatever state, the session answers with values, never
        /// a panic, and its buffers stay within their bounds.
        #[test]
        fn sessions_never_panic_on_arbitrary_frames(steps in prop::collection::vec(step(), 1..60)) {
            let small = SessionConfig { replay_capacity: 2000, recv_capacity: 2000, ..cfg() };
            let mut pair = Pair::new(1, small);
            for step in steps {
                let now = pair.now;
                match step {
                    Step::ToClient(p, f) => { let _ = pair.client.handle_frame(now, p, f); }
                    Step::ToServer(p, f) => { let _ = pair.server.handle_frame(now, p, f); }
                    Step::Write(c, n) => {
                        let s = if c { &mut pair.client } else { &mut pair.server };
                        prop_assert!(s.app_write(&vec![0; n]) <= 2000);
                    }
                    Step::Read(c, n) => {
                        let s = if c { &mut pair.client } else { &mut pair.server };
                        s.app_read(&mut vec![0; n]);
                    }
                    Step::Shutdown(c) => {
                        if c { pair.client.app_shutdown_write() } else { pair.server.app_shutdown_write() }
                    }
                    Step::Wait(ms) => {
                        pair.now += Duration::from_millis(ms);
                        pair.client.handle_timeout(pair.now);
                        pair.server.handle_timeout(pair.now);
                    }
                    Step::Pump => pair.pump(),
                }
                for s in [&mut pair.client, &mut pair.server] {
                    while s.poll_event().is_some() {}
                    prop_assert!(s.send.replay_len() <= 2000);
                    prop_assert!(s.recv.buffered() <= 2000);
                }
            }
        }
    }
}

#[test]
fn a_path_that_owes_an_answer_is_suspect_at_doubling_intervals() {
    let mut pair = Pair::new(1, cfg());
    let floor = cfg().suspect_after;
    assert_eq!(pair.client.app_write(b"lost"), 4);
    // The DATA goes out and is lost with its path: no answer comes.
    assert!(matches!(
        pair.client.poll_transmit(pair.now, CPATH),
        Some(Frame::Data { .. })
    ));
    let first = pair.now + floor;
    assert_eq!(pair.client.poll_timeout(), Some(first));
    pair.client.handle_timeout(first);
    assert_eq!(events(&mut pair.client), vec![Event::PathSuspect(CPATH)]);
    let second = pair.client.poll_timeout().unwrap();
    assert_eq!(second, first + floor * 2);
    pair.client.handle_timeout(second);
    assert_eq!(events(&mut pair.client), vec![Event::PathSuspect(CPATH)]);
    assert_eq!(pair.client.poll_timeout(), Some(second + floor * 4));
    // Any frame from the peer ends the suspicion; the session never lost a byte over it.
    pair.now = second;
    let _ = pair
        .client
        .handle_frame(second, CPATH, Owned::Ack { ack: 0 });
    assert_eq!(
        pair.client.poll_timeout(),
        Some(second + cfg().keepalive_interval)
    );
    assert!(events(&mut pair.client).is_empty());
}

#[test]
fn a_receiver_whose_stream_stops_probes_with_a_ping_before_suspecting() {
    let mut pair = Pair::new(1, cfg());
    let floor = cfg().suspect_after;
    assert_eq!(pair.server_to_client(b"flowing"), b"flowing");
    pair.pump();
    events(&mut pair.client);
    let probe = pair.now + floor;
    assert_eq!(pair.client.poll_timeout(), Some(probe));
    pair.client.handle_timeout(probe);
    assert!(
        events(&mut pair.client).is_empty(),
        "a pause is not yet suspect"
    );
    let sent: Vec<Frame> = std::iter::from_fn(|| pair.client.poll_transmit(probe, CPATH)).collect();
    assert!(sent.iter().any(|f| matches!(f, Frame::Ping { .. })));
    // The PING's answer is owed: unanswered, the path becomes suspect.
    let suspect = probe + floor;
    assert_eq!(pair.client.poll_timeout(), Some(suspect));
    pair.client.handle_timeout(suspect);
    assert_eq!(events(&mut pair.client), vec![Event::PathSuspect(CPATH)]);
}

#[test]
fn a_slow_path_waits_three_round_trips_before_suspecting() {
    let mut pair = Pair::new(1, cfg());
    let floor = cfg().suspect_after;
    let rtt = floor; // three of them exceed the floor
    let t = pair.now + cfg().keepalive_interval;
    pair.client.handle_timeout(t);
    let Some(Frame::Ping { token }) = pair.client.poll_transmit(t, CPATH) else {
        panic!("no keepalive PING");
    };
    let _ = pair
        .client
        .handle_frame(t + rtt, CPATH, Owned::Pong { token });
    assert_eq!(pair.client.app_write(b"x"), 1);
    let sent_at = t + rtt;
    assert!(matches!(
        pair.client.poll_transmit(sent_at, CPATH),
        Some(Frame::Data { .. })
    ));
    assert_eq!(pair.client.poll_timeout(), Some(sent_at + rtt * 3));
}

/// The client loses its path at `lost`, resumes on `cpath`/`spath` at `back`: both ends
/// record one move with the outage from the last frame heard to the new path's first.
#[test]
fn a_move_after_a_lost_path_records_its_outage_on_both_ends() {
    let mut pair = Pair::new(1, cfg());
    let start = pair.now;
    assert_eq!(pair.client.stats().moves, vec![]);
    assert_eq!(pair.server.stats().moves, vec![]);
    // Traffic at +1 s: the last frame heard on the old path.
    pair.now = start + Duration::from_secs(1);
    pair.still_works();
    let lost = start + Duration::from_millis(1500);
    pair.client.path_closed(lost, CPATH);
    pair.server.path_closed(lost, SPATH);
    assert_eq!(pair.client.stats().state, SessionState::Resuming);
    assert_eq!(pair.server.stats().state, SessionState::Resuming);
    // The new path answers at +1.8 s.
    pair.now = start + Duration::from_millis(1800);
    let resume = pair.open_resume(2);
    pair.server.attach_resume(pair.now, &resume, 200);
    pair.links = vec![(2, 200)];
    pair.pump();
    let expected = |from, to| Move {
        from,
        to,
        at: start + Duration::from_millis(1800),
        outage: Duration::from_millis(800),
    };
    assert_eq!(pair.client.stats().moves, vec![expected(CPATH, 2)]);
    assert_eq!(pair.server.stats().moves, vec![expected(SPATH, 200)]);
    let stats = pair.client.stats();
    assert_eq!(stats.state, SessionState::Live);
    assert_eq!(stats.paths.len(), 1);
    assert!(stats.paths[0].active && !stats.paths[0].handshaking);
    // Answered at once in virtual time: the handshake's round trip.
    assert_eq!(stats.paths[0].rtt, Some(Duration::ZERO));
    pair.still_works();
}

/// Make-before-break: the old path still carries frames when the new one answers, so the
/// outage is only the time since the old path was last heard; the old one becomes standby.
#[test]
fn a_move_with_the_old_path_alive_has_a_short_outage_and_history_is_bounded() {
    let mut pair = Pair::new(1, cfg());
    let start = pair.now;
    for k in 0..(MAX_MOVES as u32 + 3) {
        pair.now = start + Duration::from_secs(u64::from(k) + 1);
        pair.still_works();
        let heard = pair.now;
        pair.now += Duration::from_millis(5);
        let (c, s) = (10 + k, 1000 + k);
        let resume = pair.open_resume(c);
        pair.server.attach_resume(pair.now, &resume, s);
        pair.links.push((c, s));
        pair.pump();
        let last = *pair.client.stats().moves.last().unwrap();
        assert_eq!(last.to, c);
        assert_eq!(last.outage, pair.now - heard);
        let stats = pair.client.stats();
        let active: Vec<PathId> = stats
            .paths
            .iter()
            .filter(|p| p.active)
            .map(|p| p.id)
            .collect();
        assert_eq!(active, vec![c]);
        // The replaced path goes (make-before-break), keeping the session's paths few.
        let (oc, os) = pair.links.remove(0);
        pair.client.path_closed(pair.now, oc);
        pair.server.path_closed(pair.now, os);
    }
    let moves = pair.client.stats().moves;
    assert_eq!(moves.len(), MAX_MOVES);
    // Oldest first; the first three fell out.
    assert_eq!(moves[0].to, 13);
    assert_eq!(moves[MAX_MOVES - 1].to, 10 + MAX_MOVES as u32 + 2);
    pair.still_works();
}

#[test]
fn stats_count_the_programs_bytes_and_the_unconfirmed_ones() {
    let mut pair = Pair::new(1, cfg());
    assert_eq!(pair.client_to_server(&[7; 1000]).len(), 1000);
    assert_eq!(pair.server_to_client(&[8; 300]).len(), 300);
    let (c, s) = (pair.client.stats(), pair.server.stats());
    assert_eq!((c.bytes_sent, c.bytes_received), (1000, 300));
    assert_eq!((s.bytes_sent, s.bytes_received), (300, 1000));
    assert_eq!(c.role, Role::Client);
    assert_eq!(c.peer.map(|k| k.guid()), Some(s.local_guid));
    assert_eq!(s.peer.map(|k| k.guid()), Some(c.local_guid));
    // Written, not delivered: unconfirmed.
    assert_eq!(pair.client.app_write(&[1; 500]), 500);
    let c = pair.client.stats();
    assert_eq!((c.bytes_sent, c.unacked), (1000, 500));
}

#[test]
fn a_clients_path_shows_its_handshake_round_trip_until_a_ping_measures_one() {
    let mut pair = Pair::new(1, cfg());
    let resume = pair.open_resume(2);
    pair.now += Duration::from_millis(30);
    pair.server.attach_resume(pair.now, &resume, 200);
    pair.links = vec![(2, 200)];
    pair.pump();
    let rtt = |s: &Session| {
        s.stats()
            .paths
            .iter()
            .find(|p| p.active)
            .and_then(|p| p.rtt)
    };
    assert_eq!(rtt(&pair.client), Some(Duration::from_millis(30)));
    // The server learns a round trip from a PING only.
    assert_eq!(rtt(&pair.server), None);
    let t = pair.now + cfg().keepalive_interval;
    pair.server.handle_timeout(t);
    let Some(ping @ Frame::Ping { .. }) = pair.server.poll_transmit(t, 200) else {
        panic!("no PING");
    };
    let answered = t + Duration::from_millis(12);
    pair.client.handle_frame(answered, 2, ping).unwrap();
    let pong = pair.client.poll_transmit(answered, 2).expect("PONG");
    pair.server
        .handle_frame(answered + Duration::from_millis(12), 200, pong)
        .unwrap();
    assert_eq!(rtt(&pair.server), Some(Duration::from_millis(24)));
}
