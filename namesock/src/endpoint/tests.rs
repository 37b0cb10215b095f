use std::sync::Arc;
use std::time::Instant;

use namesock_identity::Keypair;

use super::*;
use crate::session::SessionConfig;
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
    assert_eq!(again.unwrap_err(), Refusal::ConnIdInUse);
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
    assert_eq!(refusal, Refusal::PortNotServed { port: PORT + 1 });
    assert_eq!(refusal.reset_reason(), Some(ResetReason::PortRefused));

    // A HELLO for another GUID.
    let mut stranger = Session::client(
        SessionConfig::default(),
        Arc::new(Keypair::generate()),
        Keypair::generate().guid(),
        PORT,
        rand::random(),
        rand::random(),
        bed.now,
    );
    stranger.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut stranger, 1);
    let refusal = bed
        .endpoint
        .first_frame(bed.now, 101, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(refusal, Refusal::Handshake(HandshakeError::WrongTarget));
    assert_eq!(refusal.reset_reason(), Some(ResetReason::AuthFailed));

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
    assert_eq!(refusal, Refusal::NotAFirstFrame { frame: "DATA" });
    assert_eq!(refusal.reset_reason(), None);

    let mut idle = Endpoint::new();
    let refusal = idle
        .first_frame(bed.now, 103, first(&data), no_session)
        .unwrap_err();
    assert_eq!(refusal, Refusal::NotAFirstFrame { frame: "DATA" });
    let mut c = bed.client(PORT);
    c.path_opened(bed.now, 1);
    let hello = wire(bed.now, &mut c, 1);
    let refusal = idle
        .first_frame(bed.now, 104, first(&hello), no_session)
        .unwrap_err();
    assert_eq!(refusal, Refusal::NotServing);
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
    client.handle_frame(now, 1, first(&ack)).unwrap();
    client.path_closed(now, 1);
    client.path_opened(now, 2);
    let resume = wire(now, &mut client, 2);

    // Unknown to another endpoint.
    let refusal = Bed::new()
        .endpoint
        .first_frame(now, 101, first(&resume), no_session)
        .unwrap_err();
    assert_eq!(refusal, Refusal::UnknownSession);
    assert_eq!(refusal.reset_reason(), Some(ResetReason::LingerExpired));

    let attached = bed.endpoint.first_frame(now, 101, first(&resume), |k| {
        (k == key).then_some(&mut *session)
    });
    assert!(matches!(attached, Ok(Incoming::Resumed { key: k }) if k == key));
    let replay = bed
        .endpoint
        .first_frame(now, 102, first(&resume), |k| {
            (k == key).then_some(&mut *session)
        })
        .unwrap_err();
    assert!(
        matches!(replay, Refusal::Resume(ResumeError::Replayed { .. })),
        "{replay:?}"
    );
    // The live path is still 101: its RESUME_ACK goes out, nothing on the replayed path.
    assert!(wire(now, &mut session, 102).is_empty());
    assert!(!wire(now, &mut session, 101).is_empty());

    bed.endpoint.session_ended(&session.conn_id());
    let gone = bed
        .endpoint
        .first_frame(now, 103, first(&resume), |k| {
            (k == key).then_some(&mut *session)
        })
        .unwrap_err();
    assert_eq!(gone, Refusal::UnknownSession);
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

#[test]
fn a_hello_repeated_after_its_ack_was_lost_joins_its_session_until_the_client_is_heard() {
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
    // Path 100 and its HELLO_ACK are lost; the client says HELLO again on path 2.
    client.path_closed(now, 1);
    client.path_opened(now, 2);
    let again = wire(now, &mut client, 2);
    assert_eq!(again, hello);
    let joined = bed.endpoint.first_frame(now, 101, first(&again), |k| {
        (k == key).then_some(&mut *session)
    });
    assert!(matches!(joined, Ok(Incoming::Resumed { key: k }) if k == key));
    let ack = wire(now, &mut session, 101);
    client.handle_frame(now, 2, first(&ack)).unwrap();
    assert!(
        std::iter::from_fn(|| client.poll_event())
            .any(|e| matches!(e, crate::session::Event::Established { .. }))
    );
    // Once the client was heard, the same HELLO is a replay.
    client.app_write(b"x");
    let data = wire(now, &mut client, 2);
    session.handle_frame(now, 101, first(&data)).unwrap();
    let replay = bed.endpoint.first_frame(now, 102, first(&hello), |k| {
        (k == key).then_some(&mut *session)
    });
    assert_eq!(replay.unwrap_err(), Refusal::ConnIdInUse);
}
