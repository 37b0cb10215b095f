//! The file store: publish/resolve, sequence order, forgeries, first-come names, concurrency.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use namesock_identity::Keypair;
use namesock_resolver::record::unix_now;
use namesock_resolver::{Gns, GnsError, NameBinding, Record, RecordError, Target};

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

fn record_path(dir: &Path, kp: &Keypair) -> std::path::PathBuf {
    dir.join("records").join(kp.guid().to_string())
}

fn rejected(err: GnsError) -> RecordError {
    match err {
        GnsError::Rejected { source, .. } => source,
        other => panic!("expected a rejection, got {other}"),
    }
}

#[test]
fn forged_records_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let writer = gns(dir.path());
    let reader = gns(dir.path());
    let kp = Keypair::from_seed(&[3; 32]);
    let target = Target::Guid(kp.guid());
    let path = record_path(dir.path(), &kp);

    let old = writer.publish(&kp, &[addr("192.0.2.1:1")], &[]).unwrap();
    reader.resolve(&target).unwrap();
    let new = writer.publish(&kp, &[addr("192.0.2.2:2")], &[]).unwrap();
    assert_eq!(reader.resolve(&target).unwrap(), new);

    // An older record written into the directory out of band: a rollback.
    fs::write(&path, old.encode()).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::Rollback { seen, got } if seen == new.seq && got == old.seq
    ));

    // A flipped bit in the signed part: bad signature.
    let mut bytes = new.encode();
    let i = bytes.len() - 70; // inside the body, before the signature
    bytes[i] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::BadSignature | RecordError::Malformed(_)
    ));
    let mut bytes = new.encode();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::BadSignature
    );

    // Mallory's own valid record claiming the victim's GUID: the key does not hash to it.
    let mallory = Keypair::from_seed(&[66; 32]);
    let theirs = Record::sign(
        &mallory,
        u64::MAX,
        unix_now() + 60,
        &[addr("203.0.113.1:1")],
        &[],
    )
    .unwrap();
    let mut bytes = theirs.encode();
    bytes[4..24].copy_from_slice(kp.guid().as_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::KeyMismatch { guid, .. } if guid == kp.guid()
    ));
    // ... or simply filed under the victim's GUID.
    fs::write(&path, theirs.encode()).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::Misplaced { .. }
    ));

    // What a crash can leave of a record written without fsync: an empty file, or one cut
    // short.
    let whole = new.encode();
    for cut in [
        &whole[..0],
        &whole[..whole.len() / 2],
        &whole[..whole.len() - 1],
    ] {
        fs::write(&path, cut).unwrap();
        assert!(
            matches!(
                rejected(reader.resolve(&target).unwrap_err()),
                RecordError::Malformed(_)
            ),
            "{} of {} bytes",
            cut.len(),
            whole.len()
        );
    }

    // Garbage and oversized files.
    fs::write(&path, b"hello").unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::Malformed(_)
    ));
    fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::Oversized { .. }
    ));

    // Expired (validly signed by the owner long ago).
    let expired = Record::sign(&kp, new.seq + 1, unix_now() - 1, &[], &[]).unwrap();
    fs::write(&path, expired.encode()).unwrap();
    assert!(matches!(
        rejected(reader.resolve(&target).unwrap_err()),
        RecordError::Expired { .. }
    ));

    // The owner republishes over all of it.
    let fresh = writer.publish(&kp, &[addr("192.0.2.3:3")], &[]).unwrap();
    assert!(fresh.seq > expired.seq);
    assert_eq!(reader.resolve(&target).unwrap(), fresh);
}

#[test]
fn names_are_first_come() {
    let dir = tempfile::tempdir().unwrap();
    let gns = gns(dir.path());
    let alice = Keypair::from_seed(&[4; 32]);
    let bob = Keypair::from_seed(&[5; 32]);
    gns.publish(&alice, &[addr("192.0.2.4:4")], &[]).unwrap();
    gns.publish(&bob, &[addr("192.0.2.5:5")], &[]).unwrap();

    gns.register(&alice, "web").unwrap();
    let err = self::gns(dir.path())
        .register(&bob, "web.ns.alt")
        .unwrap_err();
    assert!(
        matches!(&err, GnsError::NameTaken { name, holder } if name == "web.ns.alt" && *holder == alice.guid()),
        "{err}"
    );
    assert!(err.to_string().contains("only that key can rebind it"));
    gns.register(&alice, "WEB").unwrap(); // the holder may rebind
    let web = Target::Name("web.ns.alt".into());
    assert_eq!(gns.resolve(&web).unwrap().guid, alice.guid());

    // A binding forged onto the name (Bob's binding written into the directory) is refused,
    // and a forged file does not hold the name either.
    let path = dir.path().join("names").join("web.ns.alt");
    let mut forged = NameBinding::sign(&bob, "web.ns.alt", u64::MAX, unix_now() + 60)
        .unwrap()
        .encode();
    let n = forged.len();
    forged[n - 1] ^= 1;
    fs::write(&path, &forged).unwrap();
    assert_eq!(
        rejected(gns.resolve(&web).unwrap_err()),
        RecordError::BadSignature
    );
    // A binding for another name copied over this one.
    let other = NameBinding::sign(&bob, "other.ns.alt", u64::MAX, unix_now() + 60).unwrap();
    fs::write(&path, other.encode()).unwrap();
    assert!(matches!(
        rejected(gns.resolve(&web).unwrap_err()),
        RecordError::Misplaced { .. }
    ));

    // An expired binding holds nothing: Bob may take the name now.
    let stale = NameBinding::sign(&alice, "web.ns.alt", u64::MAX - 1, unix_now() - 1).unwrap();
    fs::write(&path, stale.encode()).unwrap();
    gns.register(&bob, "web").unwrap();
    assert_eq!(
        self::gns(dir.path()).resolve(&web).unwrap().guid,
        bob.guid()
    );

    // Invalid names are refused up front.
    assert!(matches!(
        gns.register(&bob, "bad name"),
        Err(GnsError::InvalidName(_))
    ));
    assert!(matches!(
        gns.register(&bob, &bob.guid().to_string()),
        Err(GnsError::InvalidName(_))
    ));
}

#[test]
fn store_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("gns");
    let gns = gns(&store);
    let kp = Keypair::from_seed(&[6; 32]);
    gns.publish(&kp, &[addr("192.0.2.6:6")], &[]).unwrap();
    gns.register(&kp, "six").unwrap();
    for (p, want) in [
        (store.clone(), 0o700),
        (store.join("records"), 0o700),
        (store.join("names"), 0o700),
        (store.join("locks"), 0o700),
        (record_path(&store, &kp), 0o600),
    ] {
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", p.display());
        assert_eq!(mode & want, want, "{} has mode {mode:o}", p.display());
    }
    for lock in fs::read_dir(store.join("locks")).unwrap() {
        let mode = lock.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

/// Publishers and resolvers hammer the same GUIDs; every read must verify (a torn file would
/// fail the signature check), sequence numbers must only go up for each reader.
fn hammer(dir: &Path, seeds: &[u8], rounds: usize) {
    let gns = gns(dir);
    let keys: Vec<Keypair> = seeds
        .iter()
        .map(|s| Keypair::from_seed(&[*s; 32]))
        .collect();
    for round in 0..rounds {
        for (i, kp) in keys.iter().enumerate() {
            let port = u16::try_from(round % 60000 + 1).unwrap();
            let locs: Vec<SocketAddr> = (0..(round % 5 + 1))
                .map(|j| SocketAddr::from(([10, i as u8, j as u8, 1], port)))
                .collect();
            if round % 2 == i % 2 {
                gns.publish(kp, &locs, &[]).unwrap();
            }
            match gns.resolve(&Target::Guid(kp.guid())) {
                Ok(rec) => assert_eq!(rec.guid, kp.guid()),
                Err(e) if e.is_not_found() => {}
                Err(e) => panic!("torn or bad read: {e}"),
            }
        }
    }
}

#[test]
fn many_threads_never_read_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = dir.path().to_owned();
            // Every thread shares keys 100..103 with the others, plus one of its own.
            std::thread::spawn(move || hammer(&dir, &[100, 101, 102, 103, 110 + t], 20))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

const CHILD_ENV: &str = "NAMESOCK_TEST_GNS_CHILD_DIR";

/// Runs only as a child of `many_processes_never_read_a_torn_record`.
#[test]
fn child_hammer() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let seed: u8 = std::env::var("NAMESOCK_TEST_GNS_CHILD_SEED")
            .unwrap()
            .parse()
            .unwrap();
        hammer(Path::new(&dir), &[100, 101, seed], 30);
    }
}

#[test]
fn many_processes_never_read_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4u8)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_hammer", "--test-threads=1"])
                .env(CHILD_ENV, dir.path())
                .env("NAMESOCK_TEST_GNS_CHILD_SEED", (120 + i).to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // This process joins in as a fifth.
    hammer(dir.path(), &[100, 101, 130], 30);
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child saw a bad record");
    }
    // Everything left behind verifies, and no temporary file is left over.
    let gns = gns(dir.path());
    for seed in [100u8, 101, 120, 121, 122, 123, 130] {
        let kp = Keypair::from_seed(&[seed; 32]);
        gns.resolve(&Target::Guid(kp.guid())).unwrap();
    }
    let leftovers = fs::read_dir(dir.path().join("records"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn temporaries_of_dead_writers_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    drop(gns(dir.path()));
    let stale = dir.path().join("records").join(".tmp.1.2.3");
    let fresh = dir.path().join("records").join(".tmp.4.5.6");
    for p in [&stale, &fresh] {
        fs::write(p, b"partial").unwrap();
    }
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    drop(gns(dir.path()));
    assert!(!stale.exists());
    assert!(
        fresh.exists(),
        "a file that may still be being written is kept"
    );
}
