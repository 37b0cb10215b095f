use std::sync::Arc;
use std::time::{Duration, Instant};

use namesock_identity::Keypair;

use super::wire::{self, Down, Preamble, RefuseReason};
use super::*;

fn down(m: Down) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode(&mut out);
    out
}

#[test]
fn a_registration_proves_the_challenge_then_takes_dial_requests_cut_anywhere() {
    let key = Arc::new(Keypair::from_seed(&[1; 32]));
    let relay_key = Keypair::from_seed(&[2; 32]);
    let relay = relay_key.guid();
    let (mut reg, preamble) = Registration::new(key.clone(), Some(relay));
    let Preamble::Register {
        guid,
        key: raw,
        nonce: ours,
    } = Preamble::decode(&preamble).unwrap()
    else {
        panic!("not a REGISTER preamble");
    };
    assert_eq!((guid, raw), (key.guid(), *key.public().as_bytes()));
    let nonce = [7; wire::NONCE_LEN];
    let mut stream = down(wire::challenge(&relay_key, &ours, nonce, &key.guid()));
    let (mut out, mut events) = (Vec::new(), Vec::new());
    // The challenge in two reads.
    reg.received(&stream[..10], &mut out, &mut events).unwrap();
    assert!(out.is_empty());
    reg.received(&stream[10..], &mut out, &mut events).unwrap();
    let proof: [u8; wire::PROOF_LEN] = out.as_slice().try_into().unwrap();
    let raw_key = *key.public().as_bytes();
    assert_eq!(
        wire::verify_proof(&key.guid(), &raw_key, &nonce, &relay, &proof),
        Ok(())
    );
    // The result and two dial requests in one read, the last one cut.
    stream = down(Down::Registered);
    stream.extend(down(Down::Dial { token: [1; 16] }));
    stream.extend(down(Down::Dial { token: [2; 16] }));
    let cut = stream.len() - 5;
    reg.received(&stream[..cut], &mut out, &mut events).unwrap();
    reg.received(&stream[cut..], &mut out, &mut events).unwrap();
    assert_eq!(reg.state, RegState::Registered);
    assert_eq!(
        events,
        vec![
            RegistrationEvent::Registered { relay },
            RegistrationEvent::Dial([1; 16]),
            RegistrationEvent::Dial([2; 16]),
        ]
    );
}

#[test]
fn a_refusal_or_a_message_out_of_order_ends_the_registration() {
    let key = Arc::new(Keypair::from_seed(&[1; 32]));
    let (mut out, mut events) = (Vec::new(), Vec::new());
    let (mut reg, _) = Registration::new(key.clone(), None);
    assert_eq!(
        reg.received(&down(Down::Dial { token: [1; 16] }), &mut out, &mut events),
        Err(RegistrationError::Unexpected("before the challenge"))
    );
    let (mut reg, _) = Registration::new(key.clone(), None);
    assert_eq!(
        reg.received(
            &down(Down::Refused(RefuseReason::Full)),
            &mut out,
            &mut events
        ),
        Err(RegistrationError::Refused(RefuseReason::Full))
    );
    let (mut reg, _) = Registration::new(key, None);
    assert!(matches!(
        reg.received(b"HTTP/1.1 200 OK", &mut out, &mut events),
        Err(RegistrationError::Wire(_))
    ));
    assert!(events.is_empty());
}

fn limits() -> RelayLimits {
    RelayLimits {
        max_servers: 2,
        max_pending: 2,
        max_sessions: 3,
        pending_timeout: Duration::from_secs(10),
    }
}

#[test]
fn a_token_pairs_one_dial_back_once_and_expires() {
    let mut r: Registry<&str, &str, &str> = Registry::new(limits());
    let now = Instant::now();
    let g = Keypair::from_seed(&[1; 32]).guid();
    let other = Keypair::from_seed(&[2; 32]).guid();
    assert!(matches!(
        r.connect(g, "c0", now),
        Err((ConnectRefusal::NotRegistered, "c0"))
    ));
    r.register(g, "ctl").unwrap();
    let (token, ctl) = r.connect(g, "c1", now).unwrap();
    assert_eq!(*ctl, "ctl");
    assert_eq!(r.accept(&token, now, "s1").map(|(c, _)| c), Some("c1"));
    // Used once: a second dial-back with the same token gets nothing.
    assert!(r.accept(&token, now, "s2").is_none());
    // A guessed token gets nothing.
    assert!(r.accept(&[0; 16], now, "s3").is_none());
    // A dial-back after the timeout gets nothing; expiry hands back the waiting client.
    let (late, _) = r.connect(g, "c2", now).unwrap();
    let (_, _) = r.connect(g, "c3", now).unwrap();
    assert!(
        r.accept(&late, now + Duration::from_secs(11), "s4")
            .is_none()
    );
    assert_eq!(r.expire(now + Duration::from_secs(11)), vec!["c3"]);
    assert_eq!(r.counts(), (1, 0, 1));
    // Another GUID's registration does not displace this one.
    assert!(r.register(other, "ctl2").unwrap().1.is_none());
}

#[test]
fn every_table_is_bounded() {
    let mut r: Registry<u8, u8, u8> = Registry::new(limits());
    let now = Instant::now();
    let gs: Vec<_> = (1..=3u8)
        .map(|i| Keypair::from_seed(&[i; 32]).guid())
        .collect();
    r.register(gs[0], 0).unwrap();
    r.register(gs[1], 1).unwrap();
    assert_eq!(r.register(gs[2], 2).err(), Some(RefuseReason::Full));
    // Re-registering a known GUID is always possible (a server that moved).
    assert!(r.register(gs[0], 3).is_ok());
    r.connect(gs[0], 10, now).unwrap();
    r.connect(gs[0], 11, now).unwrap();
    assert!(matches!(
        r.connect(gs[0], 12, now),
        Err((ConnectRefusal::PendingFull, 12))
    ));
    let _ = r.expire(now + Duration::from_secs(11));
    for i in 0..3 {
        let (t, _) = r.connect(gs[0], i, now).unwrap();
        r.accept(&t, now, i).unwrap();
    }
    assert!(matches!(
        r.connect(gs[0], 20, now),
        Err((ConnectRefusal::SessionsFull, 20))
    ));
}

#[test]
fn a_new_registration_of_the_same_guid_displaces_the_old_and_its_splices() {
    let mut r: Registry<&str, &str, &str> = Registry::new(limits());
    let now = Instant::now();
    let g = Keypair::from_seed(&[1; 32]).guid();
    let (gen1, _) = r.register(g, "old").unwrap();
    let (t, _) = r.connect(g, "c", now).unwrap();
    let (_, id) = r.accept(&t, now, "splice").unwrap();
    let (gen2, displaced) = r.register(g, "new").unwrap();
    let displaced = displaced.unwrap();
    assert_eq!(displaced.control, "old");
    assert_eq!(displaced.splices, vec!["splice"]);
    // The old control connection ending later does not unregister the new one.
    r.unregister(&g, gen1);
    assert_eq!(*r.connect(g, "c2", now).unwrap().1, "new");
    r.splice_ended(id);
    r.unregister(&g, gen2);
    assert_eq!(r.counts(), (0, 1, 0));
}

/// The server's nonce in `preamble`.
fn server_nonce(preamble: &[u8]) -> [u8; wire::NONCE_LEN] {
    match Preamble::decode(preamble).unwrap() {
        Preamble::Register { nonce, .. } => nonce,
        p => panic!("not a REGISTER preamble: {p:?}"),
    }
}

#[test]
fn a_relay_found_by_name_that_answers_with_another_guid_gets_no_proof() {
    let key = Arc::new(Keypair::from_seed(&[1; 32]));
    let meant = Keypair::from_seed(&[2; 32]);
    let impostor = Keypair::from_seed(&[3; 32]);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    // Another relay, proving its own key.
    let (mut reg, preamble) = Registration::new(key.clone(), Some(meant.guid()));
    let ours = server_nonce(&preamble);
    let challenge = down(wire::challenge(
        &impostor,
        &ours,
        [7; wire::NONCE_LEN],
        &key.guid(),
    ));
    assert_eq!(
        reg.received(&challenge, &mut out, &mut events),
        Err(RegistrationError::WrongRelay {
            expected: meant.guid(),
            got: impostor.guid()
        })
    );
    // The meant relay's key, with a signature it did not make, or replayed from a challenge
    // made for another connection (another server nonce).
    let forged = match wire::challenge(&impostor, &ours, [7; wire::NONCE_LEN], &key.guid()) {
        Down::Challenge {
            nonce, signature, ..
        } => Down::Challenge {
            nonce,
            relay_key: *meant.public().as_bytes(),
            signature,
        },
        _ => unreachable!(),
    };
    let recorded = wire::challenge(
        &meant,
        &[9; wire::NONCE_LEN],
        [7; wire::NONCE_LEN],
        &key.guid(),
    );
    for challenge in [forged, recorded] {
        let (mut reg, _) = Registration::new(key.clone(), Some(meant.guid()));
        assert_eq!(
            reg.received(&down(challenge), &mut out, &mut events),
            Err(RegistrationError::Challenge(
                wire::ChallengeError::BadSignature
            ))
        );
        assert_eq!(reg.state, RegState::AwaitChallenge);
    }
    // Nothing signed for any of them, nothing registered.
    assert!(out.is_empty());
    assert!(events.is_empty());
}
