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
        Session::client(
            SessionConfig::default(),
            Arc::new(Keypair::generate()),
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
    bed.endpoint.path_accepted(bed.now, 100).unwrap();
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
    bed.endpoint.path_accepted(bed.now, 101).unwrap();
    let again = bed
        .endpoint
        .first_frame(bed.now, 101, first(&hello), no_session);
    let again = again.unwrap_err();
    assert_eq!(again.why, Refusal::ConnIdInUse);
    assert!(again.answer.is_none());
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
    let mut stranger = Session::client(
        SessionConfig::default(),
        Arc::new(Keypair::generate()),
        Keypair::generate().guid(),
        PORT,
        rand::random(),
        bed.now,
    );
    stranger.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut stranger, 1);
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
    for p in 0..MAX_UNATTACHED as PathId {
        bed.endpoint.path_accepted(t0, p).unwrap();
    }
    assert_eq!(
        bed.endpoint.path_accepted(t0, 9999),
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
    let later = t0 + Duration::from_secs(1);
    bed.endpoint.path_accepted(later, 5000).unwrap();
    bed.endpoint.path_accepted(later, 5001).unwrap();
    assert_eq!(
        bed.endpoint.path_accepted(later, 5002),
        Err(Refusal::TooManyUnattached)
    );
    assert_eq!(bed.endpoint.poll_timeout(), Some(t0 + FIRST_FRAME_TIMEOUT));
    assert!(bed.endpoint.handle_timeout(t0).is_empty());
    let expired = bed.endpoint.handle_timeout(t0 + FIRST_FRAME_TIMEOUT);
    assert_eq!(expired.len(), MAX_UNATTACHED - 2);
    assert!(!expired.contains(&0) && !expired.contains(&1));
    assert_eq!(
        bed.endpoint.poll_timeout(),
        Some(later + FIRST_FRAME_TIMEOUT)
    );
    assert_eq!(
        bed.endpoint.handle_timeout(later + FIRST_FRAME_TIMEOUT),
        vec![5000, 5001]
    );
    assert_eq!(bed.endpoint.poll_timeout(), None);
}

/// Replayed HELLOs cannot pile up, nor keep new clients out: sessions whose client has not
/// proved the keys are bounded, a new HELLO beyond the bound evicts the oldest of them, and a
/// proven session never counts.
#[test]
fn sessions_waiting_for_their_clients_proof_are_bounded_and_the_oldest_make_room() {
    let mut bed = Bed::new();
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
        assert_eq!(evicted, None);
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
    assert_eq!(evicted, None, "a proven session made room");
    // Full again: each new HELLO evicts the oldest unproven session (the second one), whose
    // connection ID no longer routes; the proven one stays.
    // The second client got its HELLO_ACK, but its proof is not in yet.
    let (_, path, client, session) = &mut sessions[1];
    let ack = wire(now, session, *path);
    assert!(feed(now, client, 1, &ack));
    let (_, evicted, _, _) = hello_of(&mut bed, 9001);
    assert_eq!(evicted, Some(sessions[1].0));
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
    assert_eq!(evicted, Some(sessions[2].0));
    assert_eq!(bed.endpoint.sessions(), MAX_UNPROVEN + 1);
}
