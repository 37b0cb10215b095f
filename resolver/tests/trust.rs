//! What a reader trusts, tried as an attacker would: bindings and records from the far future,
//! a name rebound to another key, rollbacks seen by a fresh process, handovers (and replayed
//! ones). Every reader keeps its pins in its own known-names file, as a user does.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use namesock_identity::Keypair;
use namesock_resolver::record::{unix_now, unix_now_micros};
use namesock_resolver::{
    Gns, GnsConfig, GnsError, Handover, NameBinding, Record, RecordError, Target,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A `Gns` on the file store `store`, with the known-names file `known` (one per "user").
fn reader(store: &Path, known: &Path) -> Gns {
    let config = GnsConfig::from_values(Some(&format!("file:{}", store.display())), None).unwrap();
    Gns::with_known_names(&config, known.to_owned()).unwrap()
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("gns")
    }
    fn known(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.known_names"))
    }
    fn gns(&self, who: &str) -> Gns {
        reader(&self.store(), &self.known(who))
    }
    fn name_file(&self, name: &str) -> PathBuf {
        self.store().join("names").join(name)
    }
    fn record_file(&self, kp: &Keypair) -> PathBuf {
        self.store().join("records").join(kp.guid().to_string())
    }
}

fn rejected(err: GnsError) -> RecordError {
    match err {
        GnsError::Rejected { source, .. } => source,
        other => panic!("expected a rejection, got {other}"),
    }
}

const WEB: &str = "web.ns.alt";

#[test]
fn far_future_bindings_and_records_are_refused() {
    let w = World::new();
    let alice = Keypair::from_seed(&[1; 32]);
    let mallory = Keypair::from_seed(&[66; 32]);
    w.gns("alice").register(&alice, "web").unwrap();
    // The attack of issue 14: sequence and expiry 2^64-1, written over the owner's binding.
    let forged = NameBinding::sign(&mallory, WEB, u64::MAX, u64::MAX).unwrap();
    fs::write(w.name_file(WEB), forged.encode()).unwrap();
    let fresh = w.gns("bob");
    let err = rejected(fresh.resolve_name(WEB).unwrap_err());
    assert!(
        matches!(
            err,
            RecordError::FarFutureExpiry {
                expires: u64::MAX,
                max_days: 7
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("far future"), "{err}");
    // A sequence number from the far future with an ordinary expiry.
    let far_seq = unix_now_micros() + 8 * 24 * 3600 * 1_000_000;
    let forged = NameBinding::sign(&mallory, WEB, far_seq, unix_now() + 60).unwrap();
    fs::write(w.name_file(WEB), forged.encode()).unwrap();
    assert!(matches!(
        rejected(fresh.resolve_name(WEB).unwrap_err()),
        RecordError::FarFutureSequence { .. }
    ));
    // The far-future binding holds nothing: its owner takes the name back.
    w.gns("alice").register(&alice, "web").unwrap();
    assert_eq!(fresh.resolve_name(WEB).unwrap().guid, alice.guid());

    // Records too: the owner's own key, a clock far ahead.
    let rec = Record::sign(
        &alice,
        far_seq,
        unix_now() + 60,
        &[addr("192.0.2.1:1")],
        &[],
    )
    .unwrap();
    fs::write(w.record_file(&alice), rec.encode()).unwrap();
    let target = Target::Guid(alice.guid());
    assert!(matches!(
        rejected(fresh.resolve(&target).unwrap_err()),
        RecordError::FarFutureSequence { .. }
    ));
    let rec = Record::sign(&alice, 5, unix_now() + 8 * 24 * 3600, &[], &[]).unwrap();
    fs::write(w.record_file(&alice), rec.encode()).unwrap();
    assert!(matches!(
        rejected(fresh.resolve(&target).unwrap_err()),
        RecordError::FarFutureExpiry { .. }
    ));
    // Just inside the bounds is fine (a clock a little ahead).
    let rec = Record::sign(
        &alice,
        unix_now_micros() + 3_600_000_000,
        unix_now() + 3 * 86_400,
        &[],
        &[],
    )
    .unwrap();
    fs::write(w.record_file(&alice), rec.encode()).unwrap();
    fresh.resolve(&target).unwrap();
}

#[test]
fn a_name_rebound_to_another_key_is_refused_by_readers_that_pinned_it() {
    let w = World::new();
    let alice = Keypair::from_seed(&[1; 32]);
    let mallory = Keypair::from_seed(&[66; 32]);
    w.gns("alice").register(&alice, "web").unwrap();
    // Bob resolves once: the name is pinned to alice, in bob's file.
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, alice.guid());
    // Mallory's binding is valid in itself (its key, a proper sequence and expiry).
    let hijack = NameBinding::sign(&mallory, WEB, unix_now_micros(), unix_now() + 3600).unwrap();
    fs::write(w.name_file(WEB), hijack.encode()).unwrap();
    // A new process of bob (a new Gns on the same known-names file) refuses it.
    let err = w.gns("bob").resolve_name(WEB).unwrap_err();
    match &err {
        GnsError::NameChanged {
            name,
            pinned,
            found,
            file,
        } => {
            assert_eq!(name, WEB);
            assert_eq!(*pinned, alice.guid());
            assert_eq!(*found, mallory.guid());
            assert_eq!(file, &w.known("bob"));
        }
        other => panic!("expected NameChanged, got {other}"),
    }
    let text = err.to_string();
    for part in [
        alice.guid().to_string(),
        mallory.guid().to_string(),
        w.known("bob").display().to_string(),
        "namesock trust web.ns.alt".to_owned(),
    ] {
        assert!(text.contains(&part), "{part} missing from: {text}");
    }
    // The owner's own reader refuses too, and the owner takes the name back.
    assert!(matches!(
        w.gns("alice").resolve_name(WEB),
        Err(GnsError::NameChanged { .. })
    ));
    w.gns("alice").register(&alice, "web").unwrap();
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, alice.guid());
    // Mallory, who has pinned nothing of its own, cannot take it through the store.
    assert!(matches!(
        w.gns("mallory").register(&mallory, "web"),
        Err(GnsError::NameTaken { .. })
    ));

    // `trust` accepts a change on purpose (here: mallory's binding again).
    fs::write(w.name_file(WEB), hijack.encode()).unwrap();
    let bob = w.gns("bob");
    let (old, now) = bob.trust("web").unwrap();
    assert_eq!(old, Some(alice.guid()));
    assert_eq!(now.guid, mallory.guid());
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, mallory.guid());
}

#[test]
fn a_rollback_is_refused_by_a_fresh_process() {
    let w = World::new();
    let alice = Keypair::from_seed(&[1; 32]);
    let gns = w.gns("alice");
    gns.publish(&alice, &[addr("192.0.2.1:1")], &[]).unwrap();
    let old_record = fs::read(w.record_file(&alice)).unwrap();
    gns.register(&alice, "web").unwrap();
    let old_binding = fs::read(w.name_file(WEB)).unwrap();
    gns.publish(&alice, &[addr("192.0.2.2:1")], &[]).unwrap();
    gns.register(&alice, "web").unwrap();
    let target = Target::Guid(alice.guid());
    let newest = w.gns("bob").resolve(&target).unwrap().seq;
    let newest_binding = w.gns("bob").resolve_name(WEB).unwrap().seq;

    // Someone puts the old (validly signed, unexpired) files back; bob's next process refuses.
    fs::write(w.record_file(&alice), &old_record).unwrap();
    fs::write(w.name_file(WEB), &old_binding).unwrap();
    let err = rejected(w.gns("bob").resolve(&target).unwrap_err());
    assert!(
        matches!(err, RecordError::Rollback { seen, .. } if seen == newest),
        "{err}"
    );
    let err = rejected(w.gns("bob").resolve_name(WEB).unwrap_err());
    assert!(
        matches!(err, RecordError::Rollback { seen, .. } if seen == newest_binding),
        "{err}"
    );
    // A reader that never saw the newer ones has nothing to compare with.
    w.gns("carol").resolve(&target).unwrap();
}

#[test]
fn a_handover_moves_a_pinned_name_and_cannot_be_replayed() {
    let w = World::new();
    let alice = Keypair::from_seed(&[1; 32]);
    let carol = Keypair::from_seed(&[3; 32]);
    let mallory = Keypair::from_seed(&[66; 32]);
    w.gns("alice").register(&alice, "web").unwrap();
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, alice.guid());

    // Only the holder can hand over.
    assert!(matches!(
        w.gns("mallory").handover(&mallory, "web", mallory.guid()),
        Err(GnsError::NotHolder { .. })
    ));
    // A handover from someone else than the holder is refused by the writer.
    let forged = Handover::sign(&mallory, WEB, carol.guid(), unix_now_micros()).unwrap();
    assert!(matches!(
        w.gns("carol").register_with(&carol, "web", Some(forged)),
        Err(GnsError::HandoverNotFromHolder { .. })
    ));

    let to_carol = w
        .gns("alice")
        .handover(&alice, "web", carol.guid())
        .unwrap();
    let text = to_carol.to_text();
    assert_eq!(Handover::from_text(&text).unwrap(), to_carol);
    w.gns("carol")
        .register_with(&carol, "web", Some(Handover::from_text(&text).unwrap()))
        .unwrap();
    // Bob, who pinned alice, follows the handover.
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, carol.guid());

    // Carol gives it back; later carol replays the old handover from alice.
    let back = w
        .gns("carol")
        .handover(&carol, "web", alice.guid())
        .unwrap();
    w.gns("alice")
        .register_with(&alice, "web", Some(back))
        .unwrap();
    assert_eq!(w.gns("bob").resolve_name(WEB).unwrap().guid, alice.guid());
    assert!(matches!(
        w.gns("carol")
            .register_with(&carol, "web", Some(to_carol.clone())),
        Err(GnsError::HandoverStale { .. })
    ));
    // Written into the store past the writer's check, the replay is refused by the reader.
    let replay = NameBinding::sign_with_handover(
        &carol,
        WEB,
        unix_now_micros(),
        unix_now() + 3600,
        Some(to_carol),
    )
    .unwrap();
    fs::write(w.name_file(WEB), replay.encode()).unwrap();
    assert!(matches!(
        w.gns("bob").resolve_name(WEB),
        Err(GnsError::NameChanged { .. })
    ));

    // A handover given to one GUID is not valid in another's binding.
    let to_carol = w
        .gns("carol")
        .handover(&carol, "web", alice.guid())
        .unwrap();
    assert!(matches!(
        NameBinding::sign_with_handover(&mallory, WEB, 1, unix_now() + 60, Some(to_carol)),
        Err(RecordError::HandoverMismatch { .. })
    ));
}
