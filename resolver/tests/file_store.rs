//! The file store: publish/resolve, sequence order, forgeries, first-come names, concurrency.

use std::net::SocketAddr;
use std::path::Path;

use namesock_identity::Keypair;
use namesock_resolver::{Gns, GnsError, Target};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn gns(dir: &Path) -> Gns {
    Gns::file(dir, "ns.alt").unwrap()
}

#[test]
fn publish_then_resolve_by_guid_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let gns = gns(dir.path());
    let kp = Keypair::from_seed(&[1; 32]);
    let locs = [addr("192.0.2.1:4000"), addr("[2001:db8::1]:4000")];
    let published = gns.publish(&kp, &locs, &["web".to_owned()]).unwrap();
    assert_eq!(published.names, ["web.ns.alt"]);
    gns.register(&kp, "web").unwrap();

    // A second, independent resolver (another process would be the same).
    let reader = self::gns(dir.path());
    let by_guid = reader
        .resolve(
            &reader
                .parse_target(&format!("{}.ns.alt", kp.guid()))
                .unwrap(),
        )
        .unwrap();
    assert_eq!(by_guid.locators, locs);
    assert_eq!(by_guid.key, kp.public());
    let target = reader.parse_target("WEB.ns.alt.").unwrap();
    assert_eq!(target, Target::Name("web.ns.alt".into()));
    let by_name = reader.resolve(&target).unwrap();
    assert_eq!(by_name, by_guid);
}

#[test]
fn unknown_name_and_guid_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let gns = gns(dir.path());
    let err = gns
        .resolve(&Target::Name("nobody.ns.alt".into()))
        .unwrap_err();
    assert!(matches!(err, GnsError::NotFound(_)), "{err}");
    assert!(err.is_not_found());
    let guid = Keypair::from_seed(&[9; 32]).guid();
    assert!(gns.resolve(&Target::Guid(guid)).unwrap_err().is_not_found());
}

#[test]
fn higher_seq_wins() {
    let dir = tempfile::tempdir().unwrap();
    let writer = gns(dir.path());
    let reader = gns(dir.path());
    let kp = Keypair::from_seed(&[2; 32]);
    let target = Target::Guid(kp.guid());
    let first = writer.publish(&kp, &[addr("192.0.2.1:1")], &[]).unwrap();
    assert_eq!(reader.resolve(&target).unwrap().seq, first.seq);
    // A fresh writer (a restarted process) still goes forward.
    let second = gns(dir.path())
        .publish(&kp, &[addr("192.0.2.2:2")], &[])
        .unwrap();
    assert!(second.seq > first.seq);
    let got = reader.resolve(&target).unwrap();
    assert_eq!(got.seq, second.seq);
    assert_eq!(got.locators, [addr("192.0.2.2:2")]);
}
