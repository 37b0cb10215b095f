//! Authentication and state-rule tests, driving a client and a server session by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::{Keypair, Signature};

use super::*;
use crate::wire::{FrameReader, Hello, HelloAck, RESUME_SEALED_LEN, Resume, ResumeAck};

mod window;

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

/// [`cfg`] with every ACK sent at once: for tests of other timers than the held ACK's.
fn acks_at_once() -> SessionConfig {
    SessionConfig {
        ack_delay: Duration::ZERO,
        ..cfg()
    }
}

fn server_key() -> Arc<Keypair> {
    Arc::new(Keypair::from_seed(&[2; 32]))
}

/// Every byte `s` has for `path` now, sealed as on the wire.
pub(crate) fn transmit(s: &mut Session, now: Instant, path: PathId) -> Vec<u8> {
    let mut out = Vec::new();
    while s.transmit_into(now, path, &mut out) {}
    out
}

/// `bytes` arrive on `path` of `s` as if read from its socket: the result of each record (a
/// malformed one ends the list with its decode error).
fn deliver(
    s: &mut Session,
    now: Instant,
    path: PathId,
    bytes: &[u8],
) -> Vec<Result<(), SessionError>> {
    let mut results = Vec::new();
    let mut scratch = vec![0; FrameReader::MIN_SCRATCH + 4096];
    let step = FrameReader::new().feed(&mut scratch, bytes, |record| {
        results.push(s.handle_record(now, path, record));
        true
    });
    if let Err(e) = step {
        results.push(Err(SessionError::Malformed(e)));
    }
    results
}

/// `bytes` arrive on `path` of `s`, every record of them accepted.
pub(crate) fn deliver_all(s: &mut Session, now: Instant, path: PathId, bytes: &[u8]) {
    for result in deliver(s, now, path, bytes) {
        result.expect("a valid record");
    }
}

/// The frame in clear at the start of `bytes` (HELLO, HELLO_ACK, RESUME, REFUSE).
fn clear_frame(bytes: &[u8]) -> Frame {
    Frame::decode(bytes).unwrap().expect("a whole frame").0
}

/// A client and a server session joined by pairs of (client path, server path).
struct Pair {
    now: Instant,
    client: Session,
    server: Session,
    links: Vec<(PathId, PathId)>,
    /// The HELLO as it went out (an attacker on the path has it too).
    hello_bytes: Vec<u8>,
}

impl Pair {
    fn new(conn: u8, cfg: SessionConfig) -> Pair {
        Pair::with_rtt(conn, cfg, Duration::ZERO)
    }

    /// Each record takes half of `rtt` to arrive, until the handshake is done (the client's
    /// handshake and its proof's PING measure `rtt`).
    fn with_rtt(conn: u8, cfg: SessionConfig, rtt: Duration) -> Pair {
        let half = rtt / 2;
        let now = Instant::now();
        let skey = server_key();
        let ckey = Arc::new(Keypair::from_seed(&[conn; 32]));
        let mut client = Session::client(cfg, ckey, skey.guid(), 80, [conn; 16], now);
        client.path_opened(now, CPATH);
        let hello_bytes = transmit(&mut client, now, CPATH);
        let Frame::Hello(hello) = clear_frame(&hello_bytes) else {
            panic!("no HELLO");
        };
        let server = Acceptor::new(cfg, skey)
            .accept_hello(now + half, &hello, SPATH)
            .unwrap();
        let mut pair = Pair {
            now: now + half,
            client,
            server,
            links: vec![(CPATH, SPATH)],
            hello_bytes,
        };
        loop {
            let down = transmit(&mut pair.server, pair.now, SPATH);
            let up = transmit(&mut pair.client, pair.now, CPATH);
            if down.is_empty() && up.is_empty() {
                break;
            }
            pair.now += half;
            deliver(&mut pair.client, pair.now, CPATH, &down);
            deliver(&mut pair.server, pair.now, SPATH, &up);
        }
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

    /// Delivers records both ways on every link until all is quiet.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for &(c, s) in &self.links {
                let up = transmit(&mut self.client, self.now, c);
                if !up.is_empty() {
                    deliver(&mut self.server, self.now, s, &up);
                    moved = true;
                }
                let down = transmit(&mut self.server, self.now, s);
                if !down.is_empty() {
                    deliver(&mut self.client, self.now, c, &down);
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
        match clear_frame(&transmit(&mut self.client, self.now, cpath)) {
            Frame::Resume(r) => r,
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

/// A whole SEALED record of random-looking bytes.
fn garbage_record() -> Vec<u8> {
    let mut bytes = vec![13, 0, 0, 0, 40];
    bytes.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    bytes
}

/// A client with its HELLO on `CPATH`, not delivered.
fn client_with_hello(target: Guid) -> (Session, Hello) {
    let now = Instant::now();
    let ckey = Arc::new(Keypair::from_seed(&[1; 32]));
    let mut client = Session::client(cfg(), ckey, target, 80, [1; 16], now);
    client.path_opened(now, CPATH);
    let Frame::Hello(hello) = clear_frame(&transmit(&mut client, now, CPATH)) else {
        panic!("no HELLO");
    };
    (client, hello)
}

/// A client with its HELLO on `CPATH` and the server session that accepted it on `SPATH`
/// (HELLO_ACK queued, not delivered).
fn client_and_server() -> (Session, Session) {
    let (client, hello) = client_with_hello(server_key().guid());
    let server = Acceptor::new(cfg(), server_key())
        .accept_hello(Instant::now(), &hello, SPATH)
        .unwrap();
    (client, server)
}

/// Unauthenticated bytes never end a session: a HELLO_ACK by the wrong key costs its path.
#[test]
fn hello_ack_from_a_key_that_is_not_the_guid_loses_only_its_path() {
    let now = Instant::now();
    let real = server_key();
    let impostor = Keypair::from_seed(&[66; 32]);
    let (mut client, hello) = client_with_hello(real.guid());
    // A correctly signed answer, but by a key that does not hash to the GUID we dialled.
    let mut ack = HelloAck {
        conn_id: hello.conn_id,
        server_key: impostor.public(),
        ephemeral: [9; 32],
        window: 1 << 16,
        linger_ms: 60_000,
        signature: Signature([0; 64]),
    };
    ack.signature = impostor.sign(&auth::hello_ack(&hello, &ack));
    assert_eq!(
        client.inject(now, CPATH, Owned::HelloAck(ack)),
        Err(SessionError::Handshake(HandshakeError::KeyMismatch))
    );
    assert_eq!(
        events(&mut client),
        vec![Event::PathDead(CPATH), Event::NeedPath]
    );
    assert!(!client.is_finished());
    assert_eq!(client.peer(), None);
}

#[test]
fn hello_ack_with_the_right_key_but_a_bad_signature_loses_only_its_path() {
    let now = Instant::now();
    let (mut client, mut server) = client_and_server();
    let Some(Frame::HelloAck(mut ack)) = server.poll_transmit(now, SPATH) else {
        panic!("no HELLO_ACK");
    };
    ack.ephemeral[0] ^= 1; // a man in the middle swaps in its own key
    assert_eq!(
        client.inject(now, CPATH, Owned::HelloAck(ack)),
        Err(SessionError::Handshake(HandshakeError::BadSignature))
    );
    assert!(events(&mut client).contains(&Event::PathDead(CPATH)));
    assert!(!client.is_finished());
}

#[test]
fn acceptor_refuses_hellos_for_other_guids_or_badly_signed() {
    let now = Instant::now();
    let skey = server_key();
    let acceptor = Acceptor::new(cfg(), skey.clone());
    let other = Keypair::from_seed(&[3; 32]).guid();
    let (_, hello) = client_with_hello(other);
    assert_eq!(
        acceptor.accept_hello(now, &hello, SPATH).unwrap_err(),
        HandshakeError::WrongTarget
    );
    let (_, mut hello) = client_with_hello(skey.guid());
    hello.port = 22;
    assert_eq!(
        acceptor.accept_hello(now, &hello, SPATH).unwrap_err(),
        HandshakeError::BadSignature
    );
    let (_, mut hello) = client_with_hello(skey.guid());
    hello.ephemeral = [0; 32];
    assert_eq!(
        acceptor.accept_hello(now, &hello, SPATH).unwrap_err(),
        HandshakeError::BadSignature,
        "the ephemeral key is signed"
    );
}

/// The attack of issue 13: a HELLO captured on the wire and replayed (during the session,
/// after it, or to a restarted server) gets HELLO_ACK and silence, never reaches the program,
/// and is dropped unseen after the linger period.
#[test]
fn a_replayed_hello_gets_hello_ack_then_silence_and_never_reaches_the_program() {
    let mut pair = Pair::new(1, cfg());
    pair.still_works();
    // Records the client sealed for the real server, captured too.
    assert_eq!(pair.client.app_write(b"secret"), 6);
    let sealed = transmit(&mut pair.client, pair.now, CPATH);
    deliver(&mut pair.server, pair.now, SPATH, &sealed);
    assert_eq!(read_all(&mut pair.server), b"secret");
    let Frame::Hello(hello) = clear_frame(&pair.hello_bytes) else {
        panic!("no HELLO");
    };
    // A restarted server (a new acceptor with the same key) takes it.
    let now = pair.now + Duration::from_secs(3600);
    let mut replayed = Acceptor::new(cfg(), server_key())
        .accept_hello(now, &hello, 500)
        .unwrap();
    let answer = transmit(&mut replayed, now, 500);
    assert!(matches!(clear_frame(&answer), Frame::HelloAck(_)));
    assert_eq!(Frame::decode(&answer).unwrap().unwrap().1, answer.len());
    // The attacker cannot seal anything: whatever it sends next is refused unread.
    for forged in [pair.hello_bytes.clone(), sealed, garbage_record()] {
        let results = deliver(&mut replayed, now, 500, &forged);
        assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    }
    assert!(!replayed.is_proven());
    assert_eq!(events(&mut replayed), vec![Event::PathDead(500)]);
    assert!(read_all(&mut replayed).is_empty());
    // Dropped unseen once the linger period passes.
    let end = now + cfg().linger;
    assert_eq!(replayed.poll_timeout(), Some(end));
    replayed.handle_timeout(end);
    assert!(events(&mut replayed).is_empty());
    assert!(replayed.is_finished());
    pair.still_works();
}

#[test]
fn a_server_says_nothing_after_hello_ack_until_the_client_proves_the_keys() {
    let now = Instant::now();
    let (mut client, mut server) = client_and_server();
    server.announce_moved(1, vec!["192.0.2.1:1".parse().unwrap()]);
    let ack = transmit(&mut server, now, SPATH);
    assert!(matches!(clear_frame(&ack), Frame::HelloAck(_)));
    assert!(Frame::decode(&ack).unwrap().unwrap().1 == ack.len());
    assert!(events(&mut server).is_empty());
    deliver(&mut client, now, CPATH, &ack);
    assert!(matches!(
        events(&mut client)[..],
        [Event::Established { .. }]
    ));
    // The client's first flight proves the keys (a PING even if the program is silent).
    let proof = transmit(&mut client, now, CPATH);
    assert!(!proof.is_empty());
    assert!(
        deliver(&mut server, now, SPATH, &proof)
            .iter()
            .all(Result::is_ok)
    );
    assert!(server.is_proven());
    assert!(matches!(
        events(&mut server)[..],
        [Event::Established { .. }]
    ));
}

/// Every path a connecting client opens carries a HELLO of its own: a server answers a
/// HELLO once, so two paths never share path number 0; the first answered makes the session
/// and the other HELLO paths go.
#[test]
fn each_path_of_a_connecting_client_carries_its_own_hello() {
    let now = Instant::now();
    let skey = server_key();
    let (mut client, first) = client_with_hello(skey.guid());
    client.path_opened(now, 2);
    let Frame::Hello(second) = clear_frame(&transmit(&mut client, now, 2)) else {
        panic!("no HELLO");
    };
    assert_ne!(second.conn_id, first.conn_id);
    assert_ne!(second.ephemeral, first.ephemeral);
    let mut server = Acceptor::new(cfg(), skey)
        .accept_hello(now, &second, SPATH)
        .unwrap();
    let ack = transmit(&mut server, now, SPATH);
    assert_eq!(deliver(&mut client, now, 2, &ack), vec![Ok(())]);
    assert_eq!(client.conn_id(), second.conn_id);
    let evs = events(&mut client);
    assert!(evs.contains(&Event::PathDead(CPATH)), "{evs:?}");
    assert!(matches!(evs.last(), Some(Event::Established { .. })));
    let proof = transmit(&mut client, now, 2);
    assert!(
        deliver(&mut server, now, SPATH, &proof)
            .iter()
            .all(Result::is_ok)
    );
    assert!(server.is_proven());
}

#[test]
fn a_refuse_counts_only_signed_by_the_server_for_this_very_frame() {
    let now = Instant::now();
    let skey = server_key();
    let acceptor = Acceptor::new(cfg(), skey.clone());
    let (mut client, hello) = client_with_hello(skey.guid());
    let frame = Owned::Hello(hello.clone());
    // Signed by someone else, or naming another frame: the path goes, the session stays.
    let impostor = Acceptor::new(cfg(), Arc::new(Keypair::from_seed(&[66; 32])));
    let forged = impostor.refuse(&frame, hello.conn_id, ResetReason::PortRefused);
    let mut other = hello.clone();
    other.port = 81;
    let elsewhere = acceptor.refuse(
        &Owned::Hello(other),
        hello.conn_id,
        ResetReason::PortRefused,
    );
    for bad in [forged, elsewhere] {
        client.path_opened(now, CPATH);
        transmit(&mut client, now, CPATH);
        let mut bytes = Vec::new();
        Owned::Refuse(bad).encode(&mut bytes);
        assert!(deliver(&mut client, now, CPATH, &bytes)[0].is_err());
        assert!(
            !events(&mut client)
                .iter()
                .any(|e| matches!(e, Event::Reset { .. }))
        );
    }
    // The server's own, for the HELLO this path carries.
    client.path_opened(now, CPATH);
    let Frame::Hello(sent) = clear_frame(&transmit(&mut client, now, CPATH)) else {
        panic!("no HELLO");
    };
    let genuine = acceptor.refuse(
        &Owned::Hello(sent.clone()),
        sent.conn_id,
        ResetReason::PortRefused,
    );
    let mut bytes = Vec::new();
    Owned::Refuse(genuine).encode(&mut bytes);
    assert_eq!(deliver(&mut client, now, CPATH, &bytes), vec![Ok(())]);
    assert!(events(&mut client).contains(&Event::Reset {
        reason: ResetReason::PortRefused
    }));
}

#[test]
fn a_resume_not_sealed_with_the_sessions_keys_is_rejected_and_the_session_goes_on() {
    let mut pair = Pair::new(1, cfg());
    pair.still_works();
    let genuine = pair.open_resume(2);
    // Another session's client, same freshness, this session's connection ID.
    let mut other = Pair::new(5, cfg());
    let mut foreign = other.open_resume(2);
    foreign.conn_id = genuine.conn_id;
    let mut tampered_sealed = genuine.clone();
    tampered_sealed.sealed[3] ^= 1;
    let mut tampered_freshness = genuine.clone();
    tampered_freshness.freshness += 1;
    let zeros = Resume {
        sealed: [0; RESUME_SEALED_LEN],
        ..genuine.clone()
    };
    for forged in [foreign, tampered_sealed, tampered_freshness, zeros] {
        assert_eq!(
            pair.server.verify_resume(&forged),
            Err(ResumeError::Unauthentic)
        );
        pair.server.attach_resume(pair.now, &forged, 200);
        assert!(transmit(&mut pair.server, pair.now, 200).is_empty());
    }
    pair.still_works();
}

#[test]
fn a_replayed_resume_is_rejected_and_the_session_goes_on() {
    let mut pair = Pair::new(1, cfg());
    pair.still_works();
    let resume = pair.open_resume(2);
    assert!(pair.server.verify_resume(&resume).is_ok());
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
    assert!(transmit(&mut pair.server, pair.now, 300).is_empty());
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
    assert!(transmit(&mut pair.server, pair.now, 200).is_empty());
    pair.still_works();
}

/// Injected, forged, garbage, reordered and truncated records: none is acted on; an
/// unauthentic one costs its path only, and the session resumes with every byte intact.
#[test]
fn records_anyone_else_made_close_only_their_path_and_nothing_reaches_the_program() {
    let mut stranger = Pair::new(5, cfg());
    assert_eq!(stranger.client.app_write(b"injected"), 8);
    let injected = transmit(&mut stranger.client, stranger.now, CPATH);
    let mut clear_reset = Vec::new();
    Owned::Reset {
        reason: ResetReason::AppAbort,
    }
    .encode(&mut clear_reset);
    let mut clear_moved = Vec::new();
    Owned::Moved {
        seq: u64::MAX,
        locators: vec!["192.0.2.66:1".parse().unwrap()],
    }
    .encode(&mut clear_moved);
    let mut clear_data = Vec::new();
    Owned::Data {
        offset: 0,
        ack: 0,
        payload: b"injected".to_vec(),
    }
    .encode(&mut clear_data);
    for attack in [
        injected,
        clear_reset,
        clear_moved,
        clear_data,
        garbage_record(),
    ] {
        let mut pair = Pair::new(1, cfg());
        let results = deliver(&mut pair.client, pair.now, CPATH, &attack);
        let results_s = deliver(&mut pair.server, pair.now, SPATH, &attack);
        assert!(matches!(results.last(), Some(Err(_))), "{results:?}");
        assert!(matches!(results_s.last(), Some(Err(_))), "{results_s:?}");
        // The engine closes both ends of the path; the client resumes on a new one.
        pair.client.path_closed(pair.now, CPATH);
        pair.server.path_closed(pair.now, SPATH);
        let resume = pair.open_resume(2);
        pair.server.attach_resume(pair.now, &resume, 200);
        pair.links = vec![(2, 200)];
        pair.pump();
        assert!(read_all(&mut pair.server).is_empty());
        assert!(read_all(&mut pair.client).is_empty());
        for s in [&mut pair.client, &mut pair.server] {
            let evs = events(s);
            assert!(
                !evs.iter()
                    .any(|e| matches!(e, Event::Reset { .. } | Event::Moved { .. })),
                "{evs:?}"
            );
        }
        pair.still_works();
    }
}

#[test]
fn reordered_or_truncated_records_are_never_acted_on_and_the_stream_survives() {
    let mut pair = Pair::new(1, cfg());
    assert_eq!(pair.client.app_write(b"first"), 5);
    let first = transmit(&mut pair.client, pair.now, CPATH);
    assert_eq!(pair.client.app_write(b"second"), 6);
    let second = transmit(&mut pair.client, pair.now, CPATH);
    // Truncated: half a record is kept unread, nothing is acted on.
    assert!(deliver(&mut pair.server, pair.now, SPATH, &first[..first.len() / 2]).is_empty());
    // Reordered: the second record first fails to open; the path goes.
    let results = deliver(&mut pair.server, pair.now, SPATH, &second);
    assert!(matches!(
        results[..],
        [Err(SessionError::Crypto(CryptoError::Unauthentic))]
    ));
    assert!(read_all(&mut pair.server).is_empty());
    assert!(events(&mut pair.server).contains(&Event::PathDead(SPATH)));
    // The client resumes; the replay buffer resends both, in order.
    pair.client.path_closed(pair.now, CPATH);
    let resume = pair.open_resume(2);
    pair.server.attach_resume(pair.now, &resume, 200);
    pair.links = vec![(2, 200)];
    pair.pump();
    assert_eq!(read_all(&mut pair.server), b"firstsecond");
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
fn a_short_messages_ack_rides_on_the_answer_or_goes_alone_after_the_delay() {
    let mut pair = Pair::new(1, cfg());
    let delay = cfg().ack_delay;
    // A request, read at once: its ACK waits for the answer instead of going bare.
    assert_eq!(pair.client_to_server(b"request"), b"request");
    let read_at = pair.now;
    assert_eq!(pair.server.poll_transmit(pair.now, SPATH), None);
    assert_eq!(pair.server.poll_timeout(), Some(read_at + delay));
    assert_eq!(pair.server.app_write(b"answer"), 6);
    let answer = pair.server.poll_transmit(pair.now, SPATH);
    match &answer {
        Some(Frame::Data { ack, payload, .. }) => {
            assert_eq!(*ack, 7);
            assert_eq!(payload, b"answer");
        }
        other => panic!("expected the answer carrying the ACK, got {other:?}"),
    }
    assert_eq!(pair.server.poll_transmit(pair.now, SPATH), None);
    let _ = pair.client.inject(pair.now, CPATH, answer.unwrap());
    // No answer comes: the ACK goes alone once the delay is over, not before.
    assert_eq!(read_all(&mut pair.client), b"answer");
    assert_eq!(pair.client.poll_transmit(pair.now, CPATH), None);
    let due = pair.now + delay;
    assert_eq!(pair.client.poll_timeout(), Some(due));
    pair.client.handle_timeout(due - Duration::from_micros(1));
    assert_eq!(
        pair.client
            .poll_transmit(due - Duration::from_micros(1), CPATH),
        None
    );
    pair.client.handle_timeout(due);
    assert_eq!(
        pair.client.poll_transmit(due, CPATH),
        Some(Frame::Ack { ack: 6 })
    );
    assert!(pair.client.poll_timeout().is_some_and(|t| t > due));
    // Read, then closed: the held ACK goes with the FIN, in the same write.
    pair.now = due;
    assert_eq!(pair.server_to_client(b"last"), b"last");
    pair.client.app_shutdown_write();
    assert_eq!(
        pair.client.poll_transmit(pair.now, CPATH),
        Some(Frame::Fin { offset: 7 })
    );
    assert_eq!(
        pair.client.poll_transmit(pair.now, CPATH),
        Some(Frame::Ack { ack: 10 })
    );
    // The ACK of a FIN is never held: the peer's close waits on it.
    pair.pump();
    pair.server.app_shutdown_write();
    let fin = pair.server.poll_transmit(pair.now, SPATH);
    assert_eq!(fin, Some(Frame::Fin { offset: 10 }));
    let _ = pair.client.inject(pair.now, CPATH, fin.unwrap());
    assert!(pair.client.app_read_eof());
    assert_eq!(
        pair.client.poll_transmit(pair.now, CPATH),
        Some(Frame::Ack { ack: 11 })
    );
}

#[test]
fn bulk_and_small_windows_are_acked_at_once() {
    // Past the hold's size, an ACK goes as soon as the reader caught up.
    let mut pair = Pair::new(1, cfg());
    assert_eq!(pair.client_to_server(&[1; 5000]).len(), 5000);
    assert_eq!(
        pair.server.poll_transmit(pair.now, SPATH),
        Some(Frame::Ack { ack: 5000 })
    );
    // A window of 1,000 bytes holds nothing back: a quarter of it is 250.
    let narrow = SessionConfig {
        recv_capacity: 1000,
        ..cfg()
    };
    let mut pair = Pair::new(1, narrow);
    assert_eq!(pair.client_to_server(&[1; 300]).len(), 300);
    assert_eq!(
        pair.server.poll_transmit(pair.now, SPATH),
        Some(Frame::Ack { ack: 300 })
    );
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
        let wire = transmit(&mut pair.client, pair.now, CPATH);
        assert!(
            deliver(&mut pair.server, pair.now, SPATH, &wire)
                .iter()
                .all(Result::is_ok)
        );
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
    let err = pair.client.inject(
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

/// Every frame `s` has for `path` at `now`, in clear.
fn frames(s: &mut Session, now: Instant, path: PathId) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_transmit(now, path)).collect()
}

#[test]
fn a_quiet_path_is_pinged_by_the_client_alone_and_the_server_still_notices_silence() {
    let mut pair = Pair::new(1, cfg());
    let c = cfg();
    let mut t = pair.now;
    for _ in 0..10 {
        // The server's keepalive falls due half an interval after the client's, which the
        // client's PING then pushes back: the client PINGs every interval, the server answers.
        let ping_at = pair.client.poll_timeout().unwrap();
        assert_eq!(ping_at, t + c.keepalive_interval);
        assert_eq!(
            pair.server.poll_timeout(),
            Some(t + c.keepalive_interval + c.keepalive_interval / 2)
        );
        t = ping_at;
        pair.server.handle_timeout(t);
        assert!(frames(&mut pair.server, t, SPATH).is_empty());
        pair.client.handle_timeout(t);
        let up = frames(&mut pair.client, t, CPATH);
        let [Frame::Ping { token }] = up[..] else {
            panic!("expected one PING, got {up:?}");
        };
        pair.server.inject(t, SPATH, Owned::Ping { token }).unwrap();
        let down = frames(&mut pair.server, t, SPATH);
        assert_eq!(down, vec![Frame::Pong { token }]);
        pair.client.inject(t, CPATH, Owned::Pong { token }).unwrap();
        assert!(events(&mut pair.client).is_empty());
        assert!(events(&mut pair.server).is_empty());
    }
    // The client falls silent: the server PINGs after 1.5 intervals, is suspicious when that
    // goes unanswered, and its path dies after `path_dead_after` as before.
    let ping = t + c.keepalive_interval + c.keepalive_interval / 2;
    assert_eq!(pair.server.poll_timeout(), Some(ping));
    pair.server.handle_timeout(ping);
    assert!(matches!(
        frames(&mut pair.server, ping, SPATH)[..],
        [Frame::Ping { .. }]
    ));
    pair.server.handle_timeout(ping + c.suspect_after);
    assert_eq!(events(&mut pair.server), vec![Event::PathSuspect(SPATH)]);
    let dead = t + c.path_dead_after;
    while let Some(next) = pair.server.poll_timeout().filter(|&n| n < dead) {
        pair.server.handle_timeout(next);
        let _ = frames(&mut pair.server, next, SPATH);
        assert!(
            events(&mut pair.server)
                .iter()
                .all(|e| *e == Event::PathSuspect(SPATH))
        );
    }
    assert_eq!(pair.server.poll_timeout(), Some(dead));
    pair.server.handle_timeout(dead);
    assert_eq!(events(&mut pair.server), vec![Event::PathDead(SPATH)]);
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
                    freshness,
                    sealed: [received as u8; RESUME_SEALED_LEN],
                })
            }),
            small.prop_map(|received| Frame::ResumeAck(ResumeAck {
                path_id: 2,
                received,
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
                    Step::ToClient(p, f) => { let _ = pair.client.inject(now, p, f); }
                    Step::ToServer(p, f) => { let _ = pair.server.inject(now, p, f); }
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
    let _ = pair.client.inject(second, CPATH, Owned::Ack { ack: 0 });
    assert_eq!(
        pair.client.poll_timeout(),
        Some(second + cfg().keepalive_interval)
    );
    assert!(events(&mut pair.client).is_empty());
}

#[test]
fn a_receiver_whose_stream_stops_says_so_at_once_then_probes_with_a_ping_before_suspecting() {
    let mut pair = Pair::new(1, acks_at_once());
    let floor = cfg().suspect_after;
    // One frame is a reply, not yet a stream: only the probe watches it.
    assert_eq!(pair.server_to_client(b"reply"), b"reply");
    pair.pump();
    assert_eq!(pair.client.poll_timeout(), Some(pair.now + floor));
    for _ in 1..FLOWING_AFTER {
        assert_eq!(pair.server_to_client(b"flowing"), b"flowing");
    }
    pair.pump();
    events(&mut pair.client);
    let heard = pair.now;
    // The client's path manager hears of the stop first: it may ask the GNS at once.
    let stop = heard + STREAM_STOP_FLOOR;
    assert_eq!(pair.client.poll_timeout(), Some(stop));
    pair.client.handle_timeout(stop);
    assert_eq!(events(&mut pair.client), vec![Event::PathQuiet(CPATH)]);
    assert!(pair.client.stream_stopped(CPATH));
    assert!(
        frames(&mut pair.client, stop, CPATH).is_empty(),
        "no PING yet"
    );
    // One suspicion delay after the last DATA, a PING asks whether it paused or broke.
    let probe = heard + floor;
    assert_eq!(pair.client.poll_timeout(), Some(probe));
    pair.client.handle_timeout(probe);
    assert!(
        events(&mut pair.client).is_empty(),
        "a pause is not yet suspect"
    );
    let sent = frames(&mut pair.client, probe, CPATH);
    assert!(sent.iter().any(|f| matches!(f, Frame::Ping { .. })));
    // The PING's answer is owed: unanswered, the path becomes suspect.
    let suspect = probe + floor;
    assert_eq!(pair.client.poll_timeout(), Some(suspect));
    pair.client.handle_timeout(suspect);
    assert_eq!(events(&mut pair.client), vec![Event::PathSuspect(CPATH)]);
    // The server, which never looks its client up, was told of no stop.
    let mut back = Pair::new(2, cfg());
    assert_eq!(back.client_to_server(b"flowing"), b"flowing");
    back.pump();
    events(&mut back.server);
    let later = back.now + floor;
    back.server.handle_timeout(later);
    assert!(events(&mut back.server).is_empty());
    assert!(!back.server.stream_stopped(SPATH));
}

#[test]
fn a_stream_that_comes_in_bursts_is_stopped_only_past_twice_its_longest_gap() {
    let mut pair = Pair::new(1, acks_at_once());
    let gap = Duration::from_millis(30);
    // A shaped stream: a frame every 30 ms. By the time it counts as flowing, its rhythm is
    // known: none of its gaps is a stop.
    for _ in 0..5 {
        assert_eq!(pair.server_to_client(b"tick"), b"tick");
        pair.pump();
        pair.now += gap;
        pair.client.handle_timeout(pair.now);
    }
    let stops = events(&mut pair.client)
        .iter()
        .filter(|e| **e == Event::PathQuiet(CPATH))
        .count();
    assert_eq!(stops, 0);
    assert_eq!(pair.server_to_client(b"tick"), b"tick");
    pair.pump();
    events(&mut pair.client);
    assert_eq!(pair.client.poll_timeout(), Some(pair.now + 2 * gap));
    pair.client.handle_timeout(pair.now + 2 * gap);
    assert_eq!(events(&mut pair.client), vec![Event::PathQuiet(CPATH)]);
    // A pause as long as the probe is not rhythm: after it, 10 ms is a stop again once the
    // windows that saw the 30 ms gaps have passed.
    pair.now += Duration::from_secs(3);
    pair.client.handle_timeout(pair.now);
    events(&mut pair.client);
    for _ in 0..FLOWING_AFTER {
        assert_eq!(pair.server_to_client(b"tick"), b"tick");
        pair.pump();
        events(&mut pair.client);
        pair.now += Duration::from_millis(1);
    }
    assert_eq!(
        pair.client.poll_timeout(),
        Some(pair.now - Duration::from_millis(1) + STREAM_STOP_FLOOR)
    );
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
    let _ = pair.client.inject(t + rtt, CPATH, Owned::Pong { token });
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
    // The client fell silent (a server PINGs only then: half an interval after the client would).
    let t = pair.now + cfg().keepalive_interval + cfg().keepalive_interval / 2;
    pair.server.handle_timeout(t);
    let Some(ping @ Frame::Ping { .. }) = pair.server.poll_transmit(t, 200) else {
        panic!("no PING");
    };
    let answered = t + Duration::from_millis(12);
    pair.client.inject(answered, 2, ping).unwrap();
    let pong = pair.client.poll_transmit(answered, 2).expect("PONG");
    pair.server
        .inject(answered + Duration::from_millis(12), 200, pong)
        .unwrap();
    assert_eq!(rtt(&pair.server), Some(Duration::from_millis(24)));
}

#[test]
fn a_session_idle_for_a_keepalive_interval_holds_no_buffer_capacity() {
    let mut pair = Pair::new(1, cfg());
    let data = vec![7u8; 20_000];
    assert_eq!(pair.client.app_write(&data), data.len());
    assert_eq!(pair.server.app_write(&data), data.len());
    pair.pump();
    assert_eq!(read_all(&mut pair.server).len(), data.len());
    assert_eq!(read_all(&mut pair.client).len(), data.len());
    pair.pump();
    // Drained, but a busy session keeps its buffers between frames.
    assert!(pair.client.buffer_capacity() >= data.len());
    assert!(pair.server.buffer_capacity() >= data.len());
    let t = pair.now + cfg().keepalive_interval;
    pair.client.handle_timeout(t);
    pair.server.handle_timeout(t);
    // The client's stream went quiet on the way (it looks the server up): the engine polls.
    while pair.client.poll_event().is_some() {}
    while pair.server.poll_event().is_some() {}
    assert_eq!(pair.client.buffer_capacity(), 0);
    // The server's own keepalive is later than the client's: the client's PING, arriving,
    // is the server's idle moment.
    assert!(pair.server.buffer_capacity() > 0);
    pair.now = t;
    pair.pump();
    while pair.server.poll_event().is_some() {}
    assert_eq!(pair.server.buffer_capacity(), 0);
    // A buffer still holding bytes is kept whole: unread data survives the keepalive.
    assert_eq!(pair.client.app_write(b"late"), 4);
    pair.pump();
    let t = t + cfg().keepalive_interval;
    pair.server.handle_timeout(t);
    assert_eq!(pair.server.app_readable().concat(), b"late");
    pair.server.app_consume(4);
    pair.pump();
    assert_eq!(pair.client_to_server(b"again"), b"again");
}
