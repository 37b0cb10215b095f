//! The DNS backend against a real BIND9 `named` that the test starts (and always stops).

#[path = "support/bind9.rs"]
mod bind9;
// The workspace's skip helper (the resolver cannot depend on namesock-tests: see the file).
#[path = "../../tests/src/skip.rs"]
mod skip;

use std::net::{IpAddr, SocketAddr};

use bind9::Named;
use namesock_identity::Keypair;
use namesock_resolver::dns::{DnsError, DnsStore};
use namesock_resolver::record::unix_now;
use namesock_resolver::{Backend, Gns, GnsConfig, GnsError, Record, RecordError, Target};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config(url: &str) -> GnsConfig {
    GnsConfig::from_values(Some(url), None).unwrap()
}

fn gns(named: &Named) -> Gns {
    Gns::new(&config(&named.gns_url())).unwrap()
}

/// An independent writer, for updates made out of band (valid DNS, TSIG-signed).
fn raw_store(named: &Named) -> DnsStore {
    let Backend::Dns(dns) = config(&named.gns_url()).backend else {
        panic!("not a DNS config")
    };
    DnsStore::new(&dns).unwrap()
}

#[test]
fn publish_then_resolve_and_higher_seq_wins() {
    let Some(named) = Named::start_or_skip("publish_then_resolve_and_higher_seq_wins", skip::skip)
    else {
        return;
    };
    let writer = gns(&named);
    let reader = gns(&named);
    assert_eq!(reader.zone(), "gns.test");
    let kp = Keypair::generate();
    let target = reader
        .parse_target(&format!("{}.gns.test", kp.guid()))
        .unwrap();
    assert!(reader.resolve(&target).unwrap_err().is_not_found());

    let first = writer
        .publish(
            &kp,
            &[addr("192.0.2.1:4000"), addr("[2001:db8::1]:4000")],
            &[],
        )
        .unwrap();
    let got = reader.resolve(&target).unwrap();
    assert_eq!(got, first);

    let second = writer
        .publish(&kp, &[addr("198.51.100.7:4001")], &["web".to_owned()])
        .unwrap();
    assert!(second.seq > first.seq);
    let got = reader.resolve(&target).unwrap();
    assert_eq!(got.seq, second.seq);
    assert_eq!(got.locators, [addr("198.51.100.7:4001")]);
    assert_eq!(got.names, ["web.gns.test"]);

    // The merged record of several programs of one identity: its service map goes through
    // the zone intact, and says which engine port serves which service port.
    let services = namesock_resolver::Services::new(vec![(9000, 4002), (8000, 4001)]).unwrap();
    let third = writer
        .publish_with(
            &kp,
            &[addr("198.51.100.7:4001")],
            Some(services.clone()),
            &[],
            &["web".to_owned(), "echo".to_owned()],
        )
        .unwrap();
    let got = reader.resolve(&target).unwrap();
    assert_eq!(got, third);
    assert_eq!(got.services, Some(services));
    assert_eq!(got.locators_for(9000).unwrap(), [addr("198.51.100.7:4002")]);
    assert_eq!(got.locators_for(7000), None);

    // Names: bind, resolve through the name, first-come.
    writer.register(&kp, "web").unwrap();
    let by_name = reader
        .resolve(&Target::Name("web.gns.test".into()))
        .unwrap();
    assert_eq!(by_name.guid, kp.guid());
    writer.register(&kp, "web").unwrap(); // the holder may rebind
    let other = Keypair::generate();
    assert!(matches!(
        gns(&named).register(&other, "web"),
        Err(GnsError::NameTaken { holder, .. }) if holder == kp.guid()
    ));
    assert!(
        reader
            .resolve(&Target::Name("nobody.gns.test".into()))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn wrong_tsig_key_is_refused_by_the_server() {
    let Some(named) = Named::start_or_skip("wrong_tsig_key_is_refused_by_the_server", skip::skip)
    else {
        return;
    };
    let url = format!(
        "dns://{}/gns.test?tsig-key={}",
        named.addr,
        named.wrong_key_file().display()
    );
    let gns = Gns::new(&config(&url)).unwrap();
    let kp = Keypair::generate();
    let err = gns.publish(&kp, &[addr("192.0.2.1:1")], &[]).unwrap_err();
    assert!(
        matches!(err, GnsError::Dns(DnsError::TsigRejected { .. })),
        "{err}"
    );

    // An unknown key name too.
    let url = format!(
        "dns://{}/gns.test?tsig-name=nokey&tsig-secret={}",
        named.addr, named.secret
    );
    let err = Gns::new(&config(&url))
        .unwrap()
        .publish(&kp, &[addr("192.0.2.1:1")], &[])
        .unwrap_err();
    assert!(
        matches!(err, GnsError::Dns(DnsError::TsigRejected { .. })),
        "{err}"
    );

    // No key at all: refused before sending.
    let url = format!("dns://{}/gns.test", named.addr);
    let err = Gns::new(&config(&url))
        .unwrap()
        .publish(&kp, &[addr("192.0.2.1:1")], &[])
        .unwrap_err();
    assert!(matches!(err, GnsError::Dns(DnsError::NoTsigKey)), "{err}");
    // And nothing was published.
    let target = Target::Guid(kp.guid());
    assert!(gns.resolve(&target).unwrap_err().is_not_found());
}

#[test]
fn forged_records_in_the_zone_are_rejected() {
    let Some(named) = Named::start_or_skip("forged_records_in_the_zone_are_rejected", skip::skip)
    else {
        return;
    };
    let writer = gns(&named);
    let reader = gns(&named);
    let raw = raw_store(&named);
    let kp = Keypair::generate();
    let guid = kp.guid();
    let target = Target::Guid(guid);

    let old = writer.publish(&kp, &[addr("192.0.2.1:1")], &[]).unwrap();
    assert_eq!(reader.resolve(&target).unwrap().seq, old.seq);
    let new = writer.publish(&kp, &[addr("192.0.2.2:2")], &[]).unwrap();
    assert_eq!(reader.resolve(&target).unwrap().seq, new.seq);

    // A/AAAA that disagree with the signed record are ignored.
    let fake_ip: IpAddr = "203.0.113.66".parse().unwrap();
    raw.put_record(&guid, &new.encode(), &[fake_ip]).unwrap();
    assert_eq!(
        reader.resolve(&target).unwrap().locators,
        [addr("192.0.2.2:2")]
    );

    // Replaying the older record: rollback.
    raw.put_record(&guid, &old.encode(), &[fake_ip]).unwrap();
    let err = reader.resolve(&target).unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Rejected {
                source: RecordError::Rollback { .. },
                ..
            }
        ),
        "{err}"
    );

    // Garbage.
    raw.put_record(&guid, b"hello", &[]).unwrap();
    let err = reader.resolve(&target).unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Rejected {
                source: RecordError::Malformed(_),
                ..
            }
        ),
        "{err}"
    );

    // A bad signature.
    let mut forged = new.encode();
    let n = forged.len();
    forged[n - 1] ^= 1;
    raw.put_record(&guid, &forged, &[fake_ip]).unwrap();
    let err = reader.resolve(&target).unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Rejected {
                source: RecordError::BadSignature,
                ..
            }
        ),
        "{err}"
    );

    // Someone else's (valid) record placed at this GUID's name.
    let mallory = Keypair::generate();
    let theirs = Record::sign(
        &mallory,
        u64::MAX,
        unix_now() + 60,
        &[addr("203.0.113.1:1")],
        &[],
    )
    .unwrap();
    raw.put_record(&guid, &theirs.encode(), &[]).unwrap();
    let err = reader.resolve(&target).unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Rejected {
                source: RecordError::Misplaced { .. },
                ..
            }
        ),
        "{err}"
    );

    // An expired one.
    let expired = Record::sign(
        &kp,
        new.seq + 1,
        unix_now() - 1,
        &[addr("192.0.2.9:9")],
        &[],
    )
    .unwrap();
    raw.put_record(&guid, &expired.encode(), &[]).unwrap();
    let err = gns(&named).resolve(&target).unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Rejected {
                source: RecordError::Expired { .. },
                ..
            }
        ),
        "{err}"
    );

    // The owner publishes again and everyone sees the truth.
    let fresh = writer.publish(&kp, &[addr("192.0.2.3:3")], &[]).unwrap();
    assert_eq!(reader.resolve(&target).unwrap(), fresh);
}

#[test]
fn a_forked_child_resolves_with_its_own_client() {
    let Some(named) =
        Named::start_or_skip("a_forked_child_resolves_with_its_own_client", skip::skip)
    else {
        return;
    };
    let gns = gns(&named);
    let kp = Keypair::generate();
    let target = Target::Guid(kp.guid());
    let rec = gns.publish(&kp, &[addr("192.0.2.77:7")], &[]).unwrap();
    assert_eq!(gns.resolve(&target).unwrap(), rec);
    // SAFETY: the child only resolves, then leaves with _exit; SIGALRM ends it if it hangs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe { libc::alarm(10) };
        let ok = gns.resolve(&target).is_ok_and(|r| r == rec);
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child could not resolve (status {status:#x})"
    );
    // The parent's client still works.
    assert_eq!(gns.resolve(&target).unwrap(), rec);
}

/// Forwards DNS over TCP to `upstream`, replacing the TXT data at `owner` in every answer with
/// `blob` (base64), RRSIGs left as they are: a party on the way altering a binding.
fn altering_proxy(
    upstream: SocketAddr,
    owner: &'static str,
    blob: Vec<u8>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::TXT;
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        // Serves a bounded number of queries, then ends with the test.
        for stream in listener.incoming().take(16) {
            let Ok(mut client) = stream else { return };
            let mut len = [0u8; 2];
            if client.read_exact(&mut len).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            client.read_exact(&mut query).unwrap();
            let mut server = std::net::TcpStream::connect(upstream).unwrap();
            server.write_all(&len).unwrap();
            server.write_all(&query).unwrap();
            server.read_exact(&mut len).unwrap();
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            server.read_exact(&mut answer).unwrap();
            let mut msg = Message::from_vec(&answer).unwrap();
            let records = msg
                .take_answers()
                .into_iter()
                .map(|mut r| {
                    if r.name().to_string() == format!("{owner}.")
                        && matches!(r.data(), Some(RData::TXT(_)))
                    {
                        let text = data_encoding::BASE64.encode(&blob);
                        r.set_data(Some(RData::TXT(TXT::new(vec![text]))));
                    }
                    r
                })
                .collect::<Vec<_>>();
            msg.insert_answers(records);
            let altered = msg.to_vec().unwrap();
            let len = u16::try_from(altered.len()).unwrap().to_be_bytes();
            let _ = client.write_all(&len);
            let _ = client.write_all(&altered);
        }
    });
    (addr, handle)
}

#[test]
fn with_a_trust_anchor_a_binding_altered_outside_dnssec_is_refused() {
    let test = "with_a_trust_anchor_a_binding_altered_outside_dnssec_is_refused";
    if bind9::Named::missing().is_some() {
        skip::skip(test, &bind9::Named::missing().unwrap_or_default());
        return;
    }
    if !skip::require_tools(test, &["dig"]) {
        return;
    }
    let named = Named::start_with(&bind9::Policy {
        dnssec: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor");
    std::fs::write(&anchor, named.dnssec_anchor()).unwrap();
    let url = format!("{}&trust-anchor={}", named.gns_url(), anchor.display());
    let known = |who: &str| dir.path().join(format!("{who}.known"));
    let alice = Keypair::from_seed(&[1; 32]);
    let gns = Gns::with_known_names(&config(&url), known("alice")).unwrap();
    gns.publish(&alice, &[addr("192.0.2.1:7000")], &[]).unwrap();
    gns.register(&alice, "web").unwrap();
    // Signed by the zone: validated and accepted.
    let reader = Gns::with_known_names(&config(&url), known("bob")).unwrap();
    let rec = reader
        .resolve(&Target::Name("web.gns.test".into()))
        .unwrap();
    assert_eq!(rec.guid, alice.guid());

    // On the way, the binding is replaced by mallory's (valid in itself, freshly signed).
    let mallory = Keypair::from_seed(&[66; 32]);
    let forged = namesock_resolver::NameBinding::sign(
        &mallory,
        "web.gns.test",
        namesock_resolver::record::unix_now_micros(),
        unix_now() + 3600,
    )
    .unwrap();
    let (proxy, _thread) = altering_proxy(named.addr, "web.gns.test", forged.encode());
    let via_proxy = format!("dns://{proxy}/gns.test?trust-anchor={}", anchor.display());
    let carol = Gns::with_known_names(&config(&via_proxy), known("carol")).unwrap();
    let err = carol.resolve_name("web.gns.test").unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Dns(DnsError::Dnssec(
                namesock_resolver::dnssec::DnssecError::Bogus { .. }
            ))
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("not signed by the zone's keys"),
        "{err}"
    );
    // What the anchor buys: without it, a reader that never saw the name takes the forgery.
    let (proxy, _thread) = altering_proxy(named.addr, "web.gns.test", forged.encode());
    let trusting =
        Gns::with_known_names(&config(&format!("dns://{proxy}/gns.test")), known("dave")).unwrap();
    assert_eq!(
        trusting.resolve_name("web.gns.test").unwrap().guid,
        mallory.guid()
    );

    // A server that is not the zone's (an unsigned copy with mallory's binding).
    let fake = Named::start();
    let fake_gns = Gns::with_known_names(&config(&fake.gns_url()), known("mallory")).unwrap();
    fake_gns.register(&mallory, "web").unwrap();
    let via_fake = format!(
        "dns://{}/gns.test?trust-anchor={}",
        fake.addr,
        anchor.display()
    );
    let erin = Gns::with_known_names(&config(&via_fake), known("erin")).unwrap();
    let err = erin.resolve_name("web.gns.test").unwrap_err();
    assert!(
        matches!(
            err,
            GnsError::Dns(DnsError::Dnssec(
                namesock_resolver::dnssec::DnssecError::KeysNotAnchored { .. }
            ))
        ),
        "{err}"
    );
}
