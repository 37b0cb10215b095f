use std::sync::Arc;
use std::time::Instant;

use namesock_identity::Keypair;

use super::*;
use crate::session::{Event, SessionConfig};
use crate::wire::{Frame, FrameRef};

const PORT: u16 = 8000;

fn deliver() -> SocketAddr {
    "127.0.0.1:9000".parse().unwrap()
}

/// A source address per number.
fn ip(n: u32) -> IpAddr {
    IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

struct Bed {
    now: Instant,
    server_key: Arc<Keypair>,
    endpoint: Endpoint,
}

impl Bed {
    fn new() -> Bed {
        let server_key = Arc::new(Keypair::generate());
        let mut endpoint = Endpoint::new();
        endpoint.start_serving(SessionConfig::default(), server_key.clone());
        endpoint.serve(PORT, deliver());
        Bed {
            now: Instant::now(),
            server_key,
            endpoint,
        }
    }

    fn client(&self, port: u16) -> Session {
        self.client_of(Arc::new(Keypair::generate()), port)
    }

    fn client_of(&self, key: Arc<Keypair>, port: u16) -> Session {
        Session::client(
            SessionConfig::default(),
            key,
            self.server_key.guid(),
            port,
            rand::random(),
            self.now,
        )
    }
}

/// Every frame `session` has for `path`, encoded.
fn wire(now: Instant, session: &mut Session, path: PathId) -> Vec<u8> {
    let mut out = Vec::new();
    while session.transmit_into(now, path, &mut out) {}
    out
}

fn first(bytes: &[u8]) -> FrameRef<'_> {
    FrameRef::decode_ref(bytes).unwrap().unwrap().0
}

fn no_session<'s>(_: ConnKey) -> Option<&'s mut Session> {
    None
}

/// `bytes` (records) arrive on `path` of `session`; whether every one was accepted.
fn feed(now: Instant, session: &mut Session, path: PathId, bytes: &[u8]) -> bool {
    let mut scratch = vec![0; crate::wire::FrameReader::MIN_SCRATCH];
    let mut ok = true;
    let step = crate::wire::FrameReader::new().feed(&mut scratch, bytes, |record| {
        ok &= session.handle_record(now, path, record).is_ok();
        true
    });
    ok && step.is_ok()
}

/// The signed answer of a refusal, as the client receives it: the reset it causes.
fn client_hears(now: Instant, client: &mut Session, path: PathId, refused: Refused) -> Vec<Event> {
    let mut bytes = Vec::new();
    Frame::<Vec<u8>>::Refuse(*refused.answer.expect("a signed REFUSE")).encode(&mut bytes);
    assert!(feed(now, client, path, &bytes));
    std::iter::from_fn(|| client.poll_event()).collect()
}

#[test]
fn a_hello_for_a_served_port_makes_a_session_and_its_connection_id_routes() {
    let mut bed = Bed::new();
    let mut client = bed.client(PORT);
    client.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut client, 1);
    bed.endpoint.path_accepted(bed.now, 100, ip(1)).unwrap();
    let Ok(Incoming::New {
        port, deliver_to, ..
    }) = bed
        .endpoint
        .first_frame(bed.now, 100, first(&hello), no_session)
    else {
        panic!("HELLO not accepted");
    };
    assert_eq!((port, deliver_to), (PORT, deliver()));
    assert_eq!(bed.endpoint.sessions(), 1);
    // The same HELLO again (a replay, or a second path with it): the ID is taken.
    bed.endpoint.path_accepted(bed.now, 101, ip(1)).unwrap();
    let again = bed
        .endpoint
        .first_frame(bed.now, 101, first(&hello), no_session);
    let again = again.unwrap_err();
    assert_eq!(again.why, Refusal::ConnIdInUse);
    assert!(again.answer.is_none());
}

/// A HELLO from a fresh key for a GUID that is not the server's.
fn hello_for_another_server(bed: &Bed) -> Vec<u8> {
    let mut stranger = Session::client(
        SessionConfig::default(),
        Arc::new(Keypair::generate()),
        Keypair::generate().guid(),
        PORT,
        rand::random(),
        bed.now,
    );
    stranger.path_opened(bed.now, 1);
    wire(bed.now, &mut stranger, 1)
}

#[test]
fn refusals_are_typed_and_say_which_reset_the_path_gets() {
    let mut bed = Bed::new();
    let mut other_port = bed.client(PORT + 1);
    other_port.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut other_port, 1);
    let refusal = bed
        .endpoint
        .first_frame(bed.now, 100, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::PortNotServed { port: PORT + 1 });
    assert!(
        client_hears(bed.now, &mut other_port, 1, refusal).contains(&Event::Reset {
            reason: ResetReason::PortRefused
        })
    );

    // A HELLO for another GUID.
    let hello = hello_for_another_server(&bed);
    let refusal = bed
        .endpoint
        .first_frame(bed.now, 101, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::Handshake(HandshakeError::WrongTarget));
    assert!(refusal.answer.is_none());

    let mut data = Vec::new();
    Frame::Data {
        offset: 0,
        ack: 0,
        payload: b"x".to_vec(),
    }
    .encode(&mut data);
    let refusal = bed
        .endpoint
        .first_frame(bed.now, 102, first(&data), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::NotAFirstFrame { frame: "DATA" });
    assert!(refusal.answer.is_none());

    let mut idle = Endpoint::new();
    let refusal = idle
        .first_frame(bed.now, 103, first(&data), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::NotAFirstFrame { frame: "DATA" });
    let mut c = bed.client(PORT);
    c.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut c, 1);
    let refusal = idle
        .first_frame(bed.now, 104, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::NotServing);
}

#[test]
fn a_resume_attaches_once_and_its_replay_leaves_the_session_untouched() {
    let mut bed = Bed::new();
    let now = bed.now;
    let mut client = bed.client(PORT);
    client.path_opened(now, 1);
    let hello = wire(now, &mut client, 1);
    let Ok(Incoming::New {
        key, mut session, ..
    }) = bed
        .endpoint
        .first_frame(now, 100, first(&hello), no_session)
    else {
        panic!("HELLO not accepted");
    };
    let ack = wire(now, &mut session, 100);
    assert!(feed(now, &mut client, 1, &ack));
    // The client's proof is lost with its path: the RESUME proves the keys instead.
    client.path_closed(now, 1);
    client.path_opened(now, 2);
    let resume = wire(now, &mut client, 2);
    assert!(!session.is_proven());

    // Unknown to another endpoint of another identity: it may not end the session...
    let refusal = Bed::new()
        .endpoint
        .first_frame(now, 101, first(&resume), no_session)
        .unwrap_err();
    assert_eq!(refusal.why, Refusal::UnknownSession);
    let mut bytes = Vec::new();
    Frame::<Vec<u8>>::Refuse(*refusal.answer.unwrap()).encode(&mut bytes);
    assert!(!feed(now, &mut client, 2, &bytes));
    assert!(!std::iter::from_fn(|| client.poll_event()).any(|e| matches!(e, Event::Reset { .. })));
    client.path_opened(now, 2);
    let resume = wire(now, &mut client, 2);

    let attached = bed.endpoint.first_frame(now, 101, first(&resume), |k| {
        (k == key).then_some(&mut *session)
    });
    assert!(matches!(attached, Ok(Incoming::Resumed { key: k }) if k == key));
    assert!(session.is_proven());
    let replay = bed
        .endpoint
        .first_frame(now, 102, first(&resume), |k| {
            (k == key).then_some(&mut *session)
        })
        .unwrap_err();
    assert!(
        matches!(replay.why, Refusal::Resume(ResumeError::Replayed { .. })),
        "{replay:?}"
    );
    // The live path is still 101: its RESUME_ACK goes out, nothing on the replayed path.
    assert!(wire(now, &mut session, 102).is_empty());
    assert!(!wire(now, &mut session, 101).is_empty());

    bed.endpoint.session_ended(&session.conn_id());
    client.path_opened(now, 3);
    let later = wire(now, &mut client, 3);
    let gone = bed
        .endpoint
        .first_frame(now, 103, first(&later), |k| {
            (k == key).then_some(&mut *session)
        })
        .unwrap_err();
    assert_eq!(gone.why, Refusal::UnknownSession);
    // ...its own server may: the session is gone, signed for this very RESUME.
    assert!(
        client_hears(now, &mut client, 3, gone).contains(&Event::Reset {
            reason: ResetReason::LingerExpired
        })
    );
}

#[test]
fn unattached_paths_are_bounded_and_time_out() {
    let mut bed = Bed::new();
    let t0 = bed.now;
    // From as many sources as it takes: one source has a lower limit of its own.
    for p in 0..MAX_UNATTACHED as PathId {
        bed.endpoint.path_accepted(t0, p, ip(p)).unwrap();
    }
    assert_eq!(
        bed.endpoint.path_accepted(t0, 9999, ip(9999)),
        Err(Refusal::TooManyUnattached)
    );
    // One closes, one presents a frame: room for two more.
    bed.endpoint.path_gone(0);
    let mut data = Vec::new();
    Frame::<Vec<u8>>::Ping { token: 1 }.encode(&mut data);
    let _ = bed
        .endpoint
        .first_frame(t0, 1, first(&data), no_session)
        .unwrap_err();
    let later = t0 + YIELDS_ROOM_AFTER / 2;
    assert_eq!(bed.endpoint.path_accepted(later, 5000, ip(5000)), Ok(None));
    assert_eq!(bed.endpoint.path_accepted(later, 5001, ip(5001)), Ok(None));
    assert_eq!(
        bed.endpoint.path_accepted(later, 5002, ip(5002)),
        Err(Refusal::TooManyUnattached)
    );
    // Full, and the oldest has waited long enough: it gives its room to a new path (the
    // driver closes it), oldest first, still one out for each one in.
    let waited = t0 + YIELDS_ROOM_AFTER;
    assert_eq!(
        bed.endpoint.path_accepted(waited, 5002, ip(5002)),
        Ok(Some(2))
    );
    assert_eq!(
        bed.endpoint.path_accepted(waited, 5003, ip(5003)),
        Ok(Some(3))
    );
    assert_eq!(bed.endpoint.poll_timeout(), Some(t0 + FIRST_FRAME_TIMEOUT));
    assert!(bed.endpoint.handle_timeout(t0).is_empty());
    let expired = bed.endpoint.handle_timeout(t0 + FIRST_FRAME_TIMEOUT);
    assert_eq!(expired.len(), MAX_UNATTACHED - 4);
    assert!(!(0..4).any(|p| expired.contains(&p)));
    assert_eq!(
        bed.endpoint.poll_timeout(),
        Some(later + FIRST_FRAME_TIMEOUT)
    );
    assert_eq!(
        bed.endpoint.handle_timeout(later + FIRST_FRAME_TIMEOUT),
        vec![5000, 5001]
    );
    assert_eq!(
        bed.endpoint.handle_timeout(waited + FIRST_FRAME_TIMEOUT),
        vec![5002, 5003]
    );
    assert_eq!(bed.endpoint.poll_timeout(), None);
}

/// Paths dialled ahead and left silent (spare paths) cannot keep their source out: at the
/// source's bound the oldest that has waited [`YIELDS_ROOM_AFTER`] makes room, never a path
/// of another source, never one younger than that.
#[test]
fn at_its_bound_a_source_s_oldest_silent_path_makes_room_for_its_new_one() {
    let mut bed = Bed::new();
    let cap = 3;
    bed.endpoint.set_limits(Limits {
        preauth_per_source: cap,
        ..Limits::default()
    });
    let (busy, other) = (ip(1), ip(2));
    let t0 = bed.now;
    bed.endpoint.path_accepted(t0, 50, other).unwrap();
    for p in 0..cap as PathId {
        let at = t0 + Duration::from_millis(10 * u64::from(p));
        assert_eq!(bed.endpoint.path_accepted(at, p, busy), Ok(None));
    }
    let refused = Err(Refusal::TooManyFromSource {
        from: busy,
        limit: cap,
    });
    let young = t0 + YIELDS_ROOM_AFTER - Duration::from_millis(1);
    assert_eq!(bed.endpoint.path_accepted(young, 10, busy), refused);
    let waited = t0 + YIELDS_ROOM_AFTER + Duration::from_millis(10);
    assert_eq!(bed.endpoint.path_accepted(waited, 10, busy), Ok(Some(0)));
    assert_eq!(bed.endpoint.path_accepted(waited, 11, busy), Ok(Some(1)));
    // Path 2 came 10 ms after path 1: not yet; then it has waited long enough, and the
    // new ones have not.
    assert_eq!(bed.endpoint.path_accepted(waited, 12, busy), refused);
    let later = waited + Duration::from_millis(10);
    assert_eq!(bed.endpoint.path_accepted(later, 12, busy), Ok(Some(2)));
    assert_eq!(bed.endpoint.path_accepted(later, 13, busy), refused);
    // The other source's older path was never touched.
    let expired = bed.endpoint.handle_timeout(t0 + FIRST_FRAME_TIMEOUT);
    assert_eq!(expired, vec![50]);
}

/// Replayed HELLOs cannot pile up, nor keep new clients out: sessions whose client has not
/// proved the keys are bounded, a new HELLO beyond the bound evicts the oldest of them, and a
/// proven session never counts.
#[test]
fn sessions_waiting_for_their_clients_proof_are_bounded_and_the_oldest_make_room() {
    let mut bed = Bed::new();
    // Only the bound on unproven sessions here (the others have tests of their own).
    bed.endpoint.set_limits(Limits {
        preauth_per_source: usize::MAX,
        buffer_budget: usize::MAX,
        ..Limits::default()
    });
    let now = bed.now;
    let mut sessions = Vec::new();
    let hello_of = |bed: &mut Bed, p: PathId| {
        let mut client = bed.client(PORT);
        client.path_opened(now, 1);
        let hello = wire(now, &mut client, 1);
        let Ok(Incoming::New {
            key,
            session,
            evicted,
            ..
        }) = bed.endpoint.first_frame(now, p, first(&hello), no_session)
        else {
            panic!("HELLO not accepted");
        };
        (key, evicted, client, session)
    };
    for p in 0..MAX_UNPROVEN as PathId {
        let (key, evicted, client, session) = hello_of(&mut bed, p);
        assert!(evicted.is_empty());
        sessions.push((key, p, client, session));
    }
    // The first client proves its keys: it no longer counts, nothing is evicted for it.
    let (proven_key, path, client, session) = &mut sessions[0];
    let ack = wire(now, session, *path);
    assert!(feed(now, client, 1, &ack));
    let proof = wire(now, client, 1);
    assert!(feed(now, session, *path, &proof));
    assert!(session.is_proven());
    bed.endpoint.session_proven(*proven_key);
    let (_, evicted, _, _) = hello_of(&mut bed, 9000);
    assert!(evicted.is_empty(), "a proven session made room");
    // Full again: each new HELLO evicts the oldest unproven session (the second one), whose
    // connection ID no longer routes; the proven one stays.
    // The second client got its HELLO_ACK, but its proof is not in yet.
    let (_, path, client, session) = &mut sessions[1];
    let ack = wire(now, session, *path);
    assert!(feed(now, client, 1, &ack));
    let (_, evicted, _, _) = hello_of(&mut bed, 9001);
    assert_eq!(evicted, vec![sessions[1].0]);
    let (_, _, client, _) = &mut sessions[1];
    client.path_closed(now, 1);
    client.path_opened(now, 2);
    let resume = wire(now, client, 2);
    let gone = bed
        .endpoint
        .first_frame(now, 9002, first(&resume), no_session)
        .unwrap_err();
    assert_eq!(gone.why, Refusal::UnknownSession);
    let (_, evicted, _, _) = hello_of(&mut bed, 9003);
    assert_eq!(evicted, vec![sessions[2].0]);
    assert_eq!(bed.endpoint.sessions(), MAX_UNPROVEN + 1);
}

/// A HELLO of `client` (a fresh path 1) from `source` arrives on server path `p`.
fn hello_from(
    bed: &mut Bed,
    client: &mut Session,
    p: PathId,
    source: IpAddr,
) -> Result<Incoming, Refused> {
    client.path_opened(bed.now, 1);
    let hello = wire(bed.now, client, 1);
    bed.endpoint.path_accepted(bed.now, p, source).unwrap();
    bed.endpoint
        .first_frame(bed.now, p, first(&hello), no_session)
}

/// The client proves it holds the keys of `session` (server path `p`).
fn prove(bed: &mut Bed, key: ConnKey, client: &mut Session, session: &mut Session, p: PathId) {
    let ack = wire(bed.now, session, p);
    assert!(feed(bed.now, client, 1, &ack));
    let proof = wire(bed.now, client, 1);
    assert!(feed(bed.now, session, p, &proof));
    assert!(session.is_proven());
    bed.endpoint.session_proven(key);
}

fn new_session(incoming: Result<Incoming, Refused>) -> (ConnKey, Session, Vec<ConnKey>) {
    match incoming {
        Ok(Incoming::New {
            key,
            session,
            evicted,
            ..
        }) => (key, *session, evicted),
        other => panic!("HELLO not accepted: {other:?}"),
    }
}

#[test]
fn only_the_guids_and_ports_on_the_allow_list_get_a_session_and_strangers_hear_why() {
    let mut bed = Bed::new();
    bed.endpoint.serve(PORT + 1, deliver());
    let (friend, partial) = (Arc::new(Keypair::generate()), Arc::new(Keypair::generate()));
    bed.endpoint.set_allow(Some(AllowList::new([
        allow::Entry {
            who: friend.guid(),
            ports: None,
            line: 1,
        },
        allow::Entry {
            who: partial.guid(),
            ports: Some(vec![PORT + 1]),
            line: 2,
        },
    ])));
    let mut c = bed.client_of(friend.clone(), PORT);
    new_session(hello_from(&mut bed, &mut c, 1, ip(1)));
    let mut c = bed.client_of(partial.clone(), PORT + 1);
    new_session(hello_from(&mut bed, &mut c, 2, ip(1)));
    // The same key on a port its line does not name: refused, signed, with the reason.
    let mut c = bed.client_of(partial.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 3, ip(1)).unwrap_err();
    assert_eq!(
        refused.why,
        Refusal::NotAllowed {
            guid: partial.guid(),
            port: PORT
        }
    );
    assert!(
        client_hears(bed.now, &mut c, 1, refused).contains(&Event::Reset {
            reason: ResetReason::NotAllowed
        })
    );
    let stranger = Arc::new(Keypair::generate());
    let mut c = bed.client_of(stranger.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 4, ip(2)).unwrap_err();
    assert_eq!(refused.why.refuse_reason(), Some(ResetReason::NotAllowed));
    assert!(refused.why.is_policy());
    assert_eq!(bed.endpoint.sessions(), 2);
    // A HELLO that does not verify (here: for another GUID) is not refused by policy: no
    // answer at all, whoever sent it.
    let mut wrong = Session::client(
        SessionConfig::default(),
        stranger,
        Keypair::generate().guid(),
        PORT,
        rand::random(),
        bed.now,
    );
    let refused = hello_from(&mut bed, &mut wrong, 5, ip(2)).unwrap_err();
    assert!(matches!(refused.why, Refusal::Handshake(_)));
    assert!(refused.answer.is_none());
    // No list: everyone again.
    bed.endpoint.set_allow(None);
    let mut c = bed.client(PORT);
    new_session(hello_from(&mut bed, &mut c, 6, ip(3)));
}

#[test]
fn one_peer_is_held_at_its_session_limit_and_its_live_sessions_stay() {
    let mut bed = Bed::new();
    let limit = 3;
    bed.endpoint.set_limits(Limits {
        sessions_per_peer: limit,
        ..Limits::default()
    });
    let flooder = Arc::new(Keypair::generate());
    let mut live = Vec::new();
    for p in 0..limit as PathId {
        let mut c = bed.client_of(flooder.clone(), PORT);
        let (key, mut s, evicted) = new_session(hello_from(&mut bed, &mut c, p, ip(1)));
        assert!(evicted.is_empty());
        prove(&mut bed, key, &mut c, &mut s, p);
        live.push((key, c, s));
    }
    let mut c = bed.client_of(flooder.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 10, ip(1)).unwrap_err();
    assert_eq!(
        refused.why,
        Refusal::TooManySessions {
            guid: flooder.guid(),
            limit
        }
    );
    assert!(
        client_hears(bed.now, &mut c, 1, refused).contains(&Event::Reset {
            reason: ResetReason::TooManySessions
        })
    );
    assert_eq!(bed.endpoint.sessions_of(&flooder.guid()), limit);
    // The live sessions still route their RESUMEs; another key is served.
    let (key, c, s) = &mut live[0];
    c.path_closed(bed.now, 1);
    c.path_opened(bed.now, 2);
    let resume = wire(bed.now, c, 2);
    let back = bed
        .endpoint
        .first_frame(bed.now, 11, first(&resume), |_| Some(s));
    assert!(matches!(back, Ok(Incoming::Resumed { key: k }) if k == *key));
    let mut other = bed.client(PORT);
    new_session(hello_from(&mut bed, &mut other, 12, ip(1)));
    // A session ends: room for one more of that peer.
    let conn_id = live[1].2.conn_id();
    bed.endpoint.session_ended(&conn_id);
    let mut c = bed.client_of(flooder.clone(), PORT);
    new_session(hello_from(&mut bed, &mut c, 13, ip(1)));
}

/// A client opening one short session after another: its closed sessions (lingering only
/// for a late resume) make room at its limit and at the total limit, oldest first; its open
/// sessions never do, and nobody else's closed sessions make room at its per-peer limit.
#[test]
fn at_a_limit_the_oldest_closed_session_makes_room_and_open_ones_stay() {
    let mut bed = Bed::new();
    bed.endpoint.set_limits(Limits {
        sessions_per_peer: 3,
        sessions: 5,
        ..Limits::default()
    });
    let client = Arc::new(Keypair::generate());
    let mut held = Vec::new();
    for p in 0..3 {
        let mut c = bed.client_of(client.clone(), PORT);
        let (key, mut s, evicted) = new_session(hello_from(&mut bed, &mut c, p, ip(1)));
        assert!(evicted.is_empty());
        prove(&mut bed, key, &mut c, &mut s, p);
        held.push((key, s.conn_id()));
    }
    // All three open: the fourth is refused.
    let mut c = bed.client_of(client.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 3, ip(1)).unwrap_err();
    assert!(matches!(refused.why, Refusal::TooManySessions { .. }));
    // The second, then the first close: the newcomer retires the oldest closed (the second).
    bed.endpoint.session_closed(&held[1].1);
    bed.endpoint.session_closed(&held[0].1);
    bed.endpoint.session_closed(&held[0].1);
    // (each newcomer counts as proven at once: only closed sessions are at stake here)
    let retired_of = |bed: &mut Bed, c: &mut Session, p: PathId, source: IpAddr| match hello_from(
        bed, c, p, source,
    ) {
        Ok(Incoming::New { key, retired, .. }) => {
            bed.endpoint.session_proven(key);
            retired
        }
        other => panic!("HELLO not accepted: {other:?}"),
    };
    let mut c = bed.client_of(client.clone(), PORT);
    assert_eq!(retired_of(&mut bed, &mut c, 4, ip(1)), vec![held[1].0]);
    assert_eq!(bed.endpoint.sessions_of(&client.guid()), 3);
    let mut c = bed.client_of(client.clone(), PORT);
    assert_eq!(retired_of(&mut bed, &mut c, 5, ip(1)), vec![held[0].0]);
    // A retired session no longer routes: its RESUME is unknown.
    assert_eq!(bed.endpoint.sessions(), 3);
    // Only open sessions left for this client: refused again, its third session untouched.
    let mut c = bed.client_of(client.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 6, ip(1)).unwrap_err();
    assert!(matches!(refused.why, Refusal::TooManySessions { .. }));
    // Another peer's closed session does not make room at this peer's limit...
    let other = Arc::new(Keypair::generate());
    let mut o = bed.client_of(other.clone(), PORT);
    let (ko, mut so, _) = new_session(hello_from(&mut bed, &mut o, 7, ip(2)));
    prove(&mut bed, ko, &mut o, &mut so, 7);
    bed.endpoint.session_closed(&so.conn_id());
    let mut c = bed.client_of(client.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c, 8, ip(1)).unwrap_err();
    assert!(matches!(refused.why, Refusal::TooManySessions { .. }));
    // ... but it does at the total limit (5 sessions: 3 of the client, 1 of the other, and
    // a fifth peer's; a sixth retires the other's closed one).
    // (proven: an unproven one would be evicted first).
    let mut t = bed.client(PORT);
    let (kt, mut st, _) = new_session(hello_from(&mut bed, &mut t, 9, ip(3)));
    prove(&mut bed, kt, &mut t, &mut st, 9);
    assert_eq!(bed.endpoint.sessions(), 5);
    let mut n = bed.client(PORT);
    assert_eq!(retired_of(&mut bed, &mut n, 10, ip(4)), vec![ko]);
    assert_eq!(bed.endpoint.sessions(), 5);
    // The driver's end of a retired session changes nothing more.
    bed.endpoint.session_ended(&so.conn_id());
    assert_eq!(bed.endpoint.sessions(), 5);
}

/// Replays of a peer's HELLOs (a replayer has no keys, so never proves) cannot lock that
/// peer out: at its limit, its unproven sessions from elsewhere make room; those in flight
/// from its own address are not cut for its newcomer.
#[test]
fn at_its_limit_a_peers_unproven_sessions_make_room_for_it() {
    let mut bed = Bed::new();
    bed.endpoint.set_limits(Limits {
        sessions_per_peer: 2,
        ..Limits::default()
    });
    let victim = Arc::new(Keypair::generate());
    let mut c1 = bed.client_of(victim.clone(), PORT);
    let (k1, _, _) = new_session(hello_from(&mut bed, &mut c1, 1, ip(66)));
    let mut c2 = bed.client_of(victim.clone(), PORT);
    let (k2, _, _) = new_session(hello_from(&mut bed, &mut c2, 2, ip(66)));
    let mut c3 = bed.client_of(victim.clone(), PORT);
    let (_, _, evicted) = new_session(hello_from(&mut bed, &mut c3, 3, ip(7)));
    assert_eq!(evicted, vec![k1]);
    let mut c4 = bed.client_of(victim.clone(), PORT);
    let (_, _, evicted) = new_session(hello_from(&mut bed, &mut c4, 4, ip(7)));
    assert_eq!(evicted, vec![k2]);
    assert_eq!(bed.endpoint.sessions_of(&victim.guid()), 2);
    // Its own sessions in flight (same source, proof not yet in) are not cut for a
    // newcomer: the newcomer is refused.
    let mut c5 = bed.client_of(victim.clone(), PORT);
    let refused = hello_from(&mut bed, &mut c5, 5, ip(7)).unwrap_err();
    assert!(matches!(refused.why, Refusal::TooManySessions { .. }));
    assert_eq!(bed.endpoint.sessions_of(&victim.guid()), 2);
}

/// The buffer budget bounds the sessions held at once (lingering ones count: they keep
/// their buffers): past it a verified newcomer hears `Overloaded`, unless an unproven
/// session can make room; proven sessions are never touched.
#[test]
fn the_buffer_budget_bounds_all_sessions_and_newcomers_hear_overloaded() {
    let mut bed = Bed::new();
    let per_session = SessionConfig::default().budgeted_buffers();
    bed.endpoint.set_limits(Limits {
        buffer_budget: 3 * per_session,
        ..Limits::default()
    });
    assert_eq!(bed.endpoint.max_sessions(), 3);
    let mut held = Vec::new();
    for p in 0..2 {
        let mut c = bed.client(PORT);
        let (key, mut s, _) = new_session(hello_from(&mut bed, &mut c, p, ip(p)));
        prove(&mut bed, key, &mut c, &mut s, p);
        held.push(key);
    }
    let mut unproven = bed.client(PORT);
    let (k3, _, _) = new_session(hello_from(&mut bed, &mut unproven, 3, ip(3)));
    // Full: the unproven one makes room.
    let mut c = bed.client(PORT);
    let (k4, mut s4, evicted) = new_session(hello_from(&mut bed, &mut c, 4, ip(4)));
    assert_eq!(evicted, vec![k3]);
    prove(&mut bed, k4, &mut c, &mut s4, 4);
    // Full of proven sessions: refused, signed.
    let mut late = bed.client(PORT);
    let refused = hello_from(&mut bed, &mut late, 5, ip(5)).unwrap_err();
    assert_eq!(refused.why, Refusal::Overloaded { limit: 3 });
    assert!(
        client_hears(bed.now, &mut late, 1, refused).contains(&Event::Reset {
            reason: ResetReason::Overloaded
        })
    );
    assert_eq!(bed.endpoint.sessions(), 3);
}

/// One source address cannot take the pre-authentication room of the others: its paths
/// that have not said what they are for are capped, and its unproven sessions evict each
/// other, never another source's.
#[test]
fn a_pre_auth_flood_from_one_source_does_not_keep_another_out() {
    let mut bed = Bed::new();
    let cap = 4;
    bed.endpoint.set_limits(Limits {
        preauth_per_source: cap,
        ..Limits::default()
    });
    let (flood, other) = (ip(1), ip(2));
    for p in 0..cap as PathId {
        bed.endpoint.path_accepted(bed.now, p, flood).unwrap();
    }
    assert_eq!(
        bed.endpoint.path_accepted(bed.now, 100, flood),
        Err(Refusal::TooManyFromSource {
            from: flood,
            limit: cap
        })
    );
    // An IPv6 neighbour in the same /64 is the same source; v4-mapped is the IPv4 source.
    let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
    assert_eq!(
        source_of(v6),
        source_of("2001:db8:1:2:ffff::9".parse().unwrap())
    );
    assert_eq!(source_of("::ffff:10.0.0.1".parse().unwrap()), ip(1));
    bed.endpoint.path_accepted(bed.now, 101, other).unwrap();
    for p in 0..cap as PathId {
        bed.endpoint.path_gone(p);
    }
    bed.endpoint.path_gone(101);
    // HELLOs never proven from the flooding source: past its cap each evicts its oldest.
    let mut b = bed.client(PORT);
    let (kb, _, _) = new_session(hello_from(&mut bed, &mut b, 200, other));
    let mut flooded = Vec::new();
    for p in 0..3 * cap as PathId {
        let mut c = bed.client(PORT);
        let (k, _, evicted) = new_session(hello_from(&mut bed, &mut c, 300 + p, flood));
        assert!(!evicted.contains(&kb), "another source's session evicted");
        if p >= cap as PathId {
            assert_eq!(evicted, vec![flooded[p as usize - cap]]);
        }
        flooded.push(k);
    }
    assert_eq!(bed.endpoint.sessions(), cap + 1);
}

// ---------------------------------------------------------------- OPEN (tickets)

/// A full handshake on client path 1 / server path `p`, proven, the server's ticket stored
/// (as the engine does at delivery); the client's ticket in a client table.
fn handshake_with_ticket(
    bed: &mut Bed,
    key: Arc<Keypair>,
    p: PathId,
) -> (Session, Session, crate::ticket::ClientTickets) {
    let mut client = bed.client_of(key, PORT);
    let (k, mut server, _) = new_session(hello_from(bed, &mut client, p, ip(1)));
    prove(bed, k, &mut client, &mut server, p);
    let mut tickets = crate::ticket::ClientTickets::default();
    tickets.store(
        bed.now,
        &client.ticket().expect("an established client has a ticket"),
        PORT,
        "192.0.2.1:4000".parse().unwrap(),
    );
    (client, server, tickets)
}

/// A client session that OPENs with the next ticket of `tickets` on its path `cp`; its OPEN.
fn open_client(
    bed: &Bed,
    key: Arc<Keypair>,
    tickets: &mut crate::ticket::ClientTickets,
    cp: PathId,
) -> (Session, Vec<u8>) {
    open_client_writing(bed, key, tickets, cp, b"")
}

/// `open_client`, with `request` written before its path connected: its first flight, the
/// OPEN and the early data behind it.
fn open_client_writing(
    bed: &Bed,
    key: Arc<Keypair>,
    tickets: &mut crate::ticket::ClientTickets,
    cp: PathId,
    request: &[u8],
) -> (Session, Vec<u8>) {
    let ticket = tickets
        .take(bed.now, &bed.server_key.guid(), PORT)
        .expect("a live ticket");
    let mut client = Session::client_open(
        SessionConfig::default(),
        key,
        ticket,
        PORT,
        rand::random(),
        bed.now,
    );
    assert_eq!(client.app_write(request), request.len());
    assert!(!client.early_data_may_have_arrived());
    client.path_opened(bed.now, cp);
    let open = wire(bed.now, &mut client, cp);
    assert!(matches!(first(&open), Frame::Open(_)));
    (client, open)
}

fn open_at(bed: &mut Bed, p: PathId, open: &[u8]) -> Result<Incoming, Refused> {
    bed.endpoint.path_accepted(bed.now, p, ip(1)).unwrap();
    bed.endpoint
        .first_frame(bed.now, p, first(open), no_session)
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn an_open_with_a_ticket_makes_a_proven_session_at_once_and_data_flows_both_ways() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    assert_eq!(bed.endpoint.tickets(), 1);
    let (mut client, open) = open_client(&bed, key.clone(), &mut tickets, 2);
    let (_, mut server, _) = new_session(open_at(&mut bed, 10, &open));
    // Proven without a word from the client past its OPEN: the program may see it now.
    assert!(server.is_proven());
    assert!(server.by_open());
    assert_eq!(
        events(&mut server),
        vec![Event::Established { peer: key.public() }]
    );
    assert!(bed.endpoint.unproven.is_empty());
    // OPEN_ACK (sealed) makes the client's session.
    let ack = wire(bed.now, &mut server, 10);
    assert!(feed(bed.now, &mut client, 2, &ack));
    assert_eq!(
        events(&mut client),
        vec![Event::Established {
            peer: bed.server_key.public()
        }]
    );
    assert_eq!(client.conn_id(), server.conn_id());
    // Data both ways.
    assert_eq!(client.app_write(b"request"), 7);
    let bytes = wire(bed.now, &mut client, 2);
    assert!(feed(bed.now, &mut server, 10, &bytes));
    let mut buf = [0; 16];
    let n = server.app_read(&mut buf);
    assert_eq!(&buf[..n], b"request");
    assert_eq!(server.app_write(b"answer"), 6);
    let bytes = wire(bed.now, &mut server, 10);
    assert!(feed(bed.now, &mut client, 2, &bytes));
    let n = client.app_read(&mut buf);
    assert_eq!(&buf[..n], b"answer");
    // The child's own ticket chains: the next connection OPENs with it.
    let child = client.ticket().unwrap();
    assert_eq!(child.conn_id, server.conn_id());
    tickets.store(bed.now, &child, PORT, "192.0.2.1:4000".parse().unwrap());
    let (_, open) = open_client(&bed, key, &mut tickets, 3);
    let Frame::Open(o) = first(&open) else {
        unreachable!()
    };
    assert_eq!((o.parent, o.child), (child.conn_id, 1));
    let (_, grandchild, _) = new_session(open_at(&mut bed, 11, &open));
    assert!(grandchild.is_proven());
    assert_eq!(bed.endpoint.sessions(), 3);
}

#[test]
fn a_replayed_open_gets_nothing_and_a_forged_one_no_answer() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    let (_, open) = open_client(&bed, key.clone(), &mut tickets, 2);
    new_session(open_at(&mut bed, 10, &open));
    // The same OPEN again, on another path (a replay): its child number is spent.
    let replayed = open_at(&mut bed, 11, &open).unwrap_err();
    assert_eq!(
        replayed.why,
        Refusal::Open(crate::ticket::OpenError::Replayed { child: 1 })
    );
    assert!(replayed.answer.is_none());
    // Its connection ID made new, tag unchanged (a forger without the ticket): no answer.
    let mut forged = open.clone();
    forged[HEADER_LEN_FOR_TESTS + 5] ^= 1;
    let refused = open_at(&mut bed, 12, &forged).unwrap_err();
    assert_eq!(
        refused.why,
        Refusal::Open(crate::ticket::OpenError::Unauthentic)
    );
    assert!(refused.answer.is_none());
    // A bit of the tag flipped, and a child number changed: no answer either.
    let (_, mut open2) = open_client(&bed, key.clone(), &mut tickets, 3);
    let last = open2.len() - 1;
    open2[last] ^= 1;
    assert!(open_at(&mut bed, 13, &open2).unwrap_err().answer.is_none());
    open2[last] ^= 1;
    let child_at = HEADER_LEN_FOR_TESTS + 5 + 32 + 7;
    open2[child_at] ^= 4;
    assert!(open_at(&mut bed, 14, &open2).unwrap_err().answer.is_none());
    // The untouched one still works (the failed ones used nothing up).
    open2[child_at] ^= 4;
    new_session(open_at(&mut bed, 15, &open2));
    assert_eq!(bed.endpoint.sessions(), 3);
}

const HEADER_LEN_FOR_TESTS: usize = crate::wire::HEADER_LEN;

#[test]
fn an_open_whose_ticket_is_gone_hears_a_signed_refuse_and_its_client_falls_back() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    // A restarted server: no tickets at all.
    let mut restarted = Endpoint::new();
    restarted.start_serving(SessionConfig::default(), bed.server_key.clone());
    restarted.serve(PORT, deliver());
    let (mut client, open) = open_client(&bed, key.clone(), &mut tickets, 2);
    restarted.path_accepted(bed.now, 10, ip(1)).unwrap();
    let refused = restarted
        .first_frame(bed.now, 10, first(&open), no_session)
        .unwrap_err();
    assert_eq!(
        refused.why,
        Refusal::Open(crate::ticket::OpenError::UnknownTicket)
    );
    assert_eq!(restarted.sessions(), 0);
    // The client's session ends with the REFUSE's reason (its engine falls back to HELLO).
    assert!(
        client_hears(bed.now, &mut client, 2, refused).contains(&Event::Reset {
            reason: ResetReason::LingerExpired
        })
    );
    // Sixty seconds on, the ticket is gone here too; ten minutes of chain, likewise.
    let (_, open) = open_client(&bed, key.clone(), &mut tickets, 3);
    bed.now += crate::ticket::TICKET_LIFETIME;
    let refused = open_at(&mut bed, 11, &open).unwrap_err();
    assert!(refused.answer.is_some());
    assert_eq!(bed.endpoint.tickets(), 0);
}

/// A client's first flight on an OPEN's path: the OPEN, and the early data behind it.
fn split_open(flight: &[u8]) -> (&[u8], &[u8]) {
    let (frame, len) = FrameRef::decode_ref(flight).unwrap().unwrap();
    assert!(matches!(frame, Frame::Open(_)), "{frame:?}");
    flight.split_at(len)
}

#[test]
fn early_data_behind_an_open_reaches_the_server_with_it_once_and_a_replay_reaches_nothing() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    let request = b"GET /file HTTP/1.0\r\n\r\n";
    let (mut client, flight) = open_client_writing(&bed, key, &mut tickets, 2, request);
    // The request went out sealed behind the OPEN, before any answer.
    assert!(client.early_data_may_have_arrived());
    let (open, early) = split_open(&flight);
    assert!(!early.is_empty());
    assert!(!early.windows(request.len()).any(|w| w == request));
    let (_, mut server, _) = new_session(open_at(&mut bed, 10, open));
    assert!(feed(bed.now, &mut server, 10, early));
    let mut buf = [0; 64];
    let n = server.app_read(&mut buf);
    assert_eq!(&buf[..n], request);
    // OPEN_ACK and the answer behind it: the client's session is made, and nothing it sent
    // early is sent again.
    assert_eq!(server.app_write(b"HTTP/1.0 200 OK"), 15);
    let back = wire(bed.now, &mut server, 10);
    assert!(feed(bed.now, &mut client, 2, &back));
    assert_eq!(
        events(&mut client),
        vec![Event::Established {
            peer: bed.server_key.public()
        }]
    );
    let n = client.app_read(&mut buf);
    assert_eq!(&buf[..n], b"HTTP/1.0 200 OK");
    let after = wire(bed.now, &mut client, 2);
    assert!(feed(bed.now, &mut server, 10, &after));
    assert_eq!(server.app_read(&mut buf), 0, "the early data came again");
    // The whole flight replayed to the same server: the OPEN's child number is spent, so its
    // path is refused before the data behind it is read.
    let replayed = open_at(&mut bed, 11, open).unwrap_err();
    assert_eq!(
        replayed.why,
        Refusal::Open(crate::ticket::OpenError::Replayed { child: 1 })
    );
    assert!(replayed.answer.is_none());
    assert_eq!(bed.endpoint.sessions(), 2);
}

#[test]
fn early_data_refused_with_its_open_goes_again_in_a_hello_session_exactly_once() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    // The server restarted: the same key, no tickets.
    let mut restarted = Bed {
        now: bed.now,
        server_key: bed.server_key.clone(),
        endpoint: Endpoint::new(),
    };
    restarted
        .endpoint
        .start_serving(SessionConfig::default(), restarted.server_key.clone());
    restarted.endpoint.serve(PORT, deliver());
    let (mut failed, flight) = open_client_writing(&bed, key.clone(), &mut tickets, 2, b"request");
    failed.app_shutdown_write();
    let (open, _) = split_open(&flight);
    restarted
        .endpoint
        .path_accepted(bed.now, 10, ip(1))
        .unwrap();
    let refused = restarted
        .endpoint
        .first_frame(bed.now, 10, first(open), no_session)
        .unwrap_err();
    assert!(failed.early_data_may_have_arrived());
    // The signed REFUSE says the server took nothing: the stream may go again.
    client_hears(bed.now, &mut failed, 2, refused);
    assert!(!failed.early_data_may_have_arrived());
    let mut client = restarted.client_of(key, PORT);
    client.adopt_stream(&mut failed);
    let (k, mut server, _) = new_session(hello_from(&mut restarted, &mut client, 20, ip(1)));
    prove(&mut restarted, k, &mut client, &mut server, 20);
    let mut buf = [0; 64];
    let n = server.app_read(&mut buf);
    assert_eq!(&buf[..n], b"request");
    assert!(server.app_read_eof());
    assert_eq!(server.app_read(&mut buf), 0);
}

#[test]
fn an_open_meets_the_same_policy_as_a_hello() {
    let mut bed = Bed::new();
    let key = Arc::new(Keypair::generate());
    let (_, _, mut tickets) = handshake_with_ticket(&mut bed, key.clone(), 1);
    // Off the allow list now: refused by policy, signed, on the ticket's client key.
    bed.endpoint.set_allow(Some(AllowList::new([])));
    let (mut client, open) = open_client(&bed, key.clone(), &mut tickets, 2);
    let refused = open_at(&mut bed, 10, &open).unwrap_err();
    assert_eq!(
        refused.why,
        Refusal::NotAllowed {
            guid: key.guid(),
            port: PORT
        }
    );
    assert!(
        client_hears(bed.now, &mut client, 2, refused).contains(&Event::Reset {
            reason: ResetReason::NotAllowed
        })
    );
    bed.endpoint.set_allow(None);
    // The port no longer served.
    bed.endpoint.unserve(PORT);
    let (_, open) = open_client(&bed, key.clone(), &mut tickets, 3);
    let refused = open_at(&mut bed, 11, &open).unwrap_err();
    assert_eq!(refused.why, Refusal::PortNotServed { port: PORT });
    assert!(refused.answer.is_some());
    // The per-peer limit counts OPEN sessions too.
    bed.endpoint.serve(PORT, deliver());
    bed.endpoint.set_limits(Limits {
        sessions_per_peer: 2,
        ..Limits::default()
    });
    let (_, open) = open_client(&bed, key.clone(), &mut tickets, 4);
    new_session(open_at(&mut bed, 12, &open));
    let (_, open) = open_client(&bed, key, &mut tickets, 5);
    let refused = open_at(&mut bed, 13, &open).unwrap_err();
    assert!(matches!(refused.why, Refusal::TooManySessions { .. }));
}

/// A well-formed OPEN under a ticket nobody issued: what a flooder sends to make the server
/// sign (an unknown ticket earns a signed REFUSE, and there is nothing to check it with).
fn stray_open(port: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    Frame::<Vec<u8>>::Open(crate::wire::Open {
        conn_id: rand::random(),
        parent: rand::random(),
        child: 1,
        port,
        window: 1 << 20,
        tag: rand::random(),
    })
    .encode(&mut bytes);
    bytes
}

#[test]
fn a_flood_of_stray_opens_earns_a_bounded_number_of_signatures_and_others_still_hear_why() {
    use super::refusals::{PER_SOURCE_BURST, PER_SOURCE_RATE};
    let mut bed = Bed::new();
    let (flood, other) = (ip(1), ip(2));
    let mut path: PathId = 0;
    let mut arrive = |bed: &mut Bed, from: IpAddr| {
        path += 1;
        bed.endpoint.path_accepted(bed.now, path, from).unwrap();
        bed.endpoint
            .first_frame(bed.now, path, first(&stray_open(PORT)), no_session)
            .unwrap_err()
    };
    let mut signed = 0;
    for _ in 0..1000 {
        let refused = arrive(&mut bed, flood);
        assert_eq!(
            refused.why,
            Refusal::Open(crate::ticket::OpenError::UnknownTicket)
        );
        assert_eq!(refused.answer.is_some(), !refused.unanswered);
        signed += u32::from(refused.answer.is_some());
    }
    assert_eq!(signed, PER_SOURCE_BURST);
    // Another source is still told why: an unknown ticket, a port not served.
    assert!(arrive(&mut bed, other).answer.is_some());
    let mut stranger = bed.client(PORT + 1);
    stranger.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut stranger, 1);
    bed.endpoint.path_accepted(bed.now, 5000, other).unwrap();
    let unserved = bed
        .endpoint
        .first_frame(bed.now, 5000, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(unserved.why, Refusal::PortNotServed { port: PORT + 1 });
    assert!(unserved.answer.is_some());
    // A second on, the flooder earned the rate, no more.
    bed.now += Duration::from_secs(1);
    let signed = (0..1000)
        .filter(|_| arrive(&mut bed, flood).answer.is_some())
        .count();
    assert_eq!(signed, PER_SOURCE_RATE as usize);
    // A refusal that is never signed (a HELLO for another server) never counts as withheld.
    let hello = hello_for_another_server(&bed);
    bed.endpoint.path_accepted(bed.now, 6000, flood).unwrap();
    let unsigned = bed
        .endpoint
        .first_frame(bed.now, 6000, first(&hello), no_session)
        .unwrap_err();
    assert!(matches!(unsigned.why, Refusal::Handshake(_)));
    assert!(unsigned.answer.is_none() && !unsigned.unanswered);
}
