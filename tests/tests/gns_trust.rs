//! The attacks of issue 14 on the landed GNS, run as a user would with the `namesock` command,
//! now harmless: a binding from the far future, a name rebound to another key (refused by a
//! client that pinned it), a rollback seen by a fresh process, a second user planting a FIFO,
//! a symbolic link, a world-writable store or holding a lock (`setpriv` to uid 65534), a key
//! owned by another user, and, on a real BIND9, one identity's TSIG key updating another's GUID
//! or name.

#[path = "../../resolver/tests/support/bind9.rs"]
mod bind9;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock_resolver::dns::{DnsError, DnsStore, Expect};
use namesock_resolver::record::{unix_now, unix_now_micros};
use namesock_resolver::{Backend, GnsConfig, NameBinding};

const NOBODY: &str = "65534";

fn namesock() -> PathBuf {
    namesock_tests::tools().namesock
}

/// One user of the GNS: a backend, a key file, a known-names file.
#[derive(Clone)]
struct User {
    gns: String,
    key: PathBuf,
    known: PathBuf,
}

impl User {
    fn new(dir: &Path, gns: &str, who: &str) -> User {
        User {
            gns: gns.to_owned(),
            key: dir.join(format!("{who}.key")),
            known: dir.join(format!("{who}.known_names")),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(namesock())
            .args(args)
            .env("NAMESOCK_GNS", &self.gns)
            .env("NAMESOCK_KEY", &self.key)
            .env("NAMESOCK_KNOWN_NAMES", &self.known)
            .env_remove("NAMESOCK_CONFIG")
            .env_remove("NAMESOCK_ZONE")
            .stdin(Stdio::null())
            .output()
            .expect("running namesock")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "namesock {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs, expects exit status 1, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(1), "namesock {args:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        eprintln!("namesock {}: {err}", args.join(" "));
        err
    }

    fn keygen(&self) -> String {
        self.ok(&["keygen"]).trim().to_owned()
    }
}

fn file_store(dir: &Path) -> String {
    format!("file:{}", dir.join("gns").display())
}

fn mallory() -> Keypair {
    Keypair::from_seed(&[66; 32])
}

#[test]
fn a_far_future_binding_is_refused_and_the_owner_keeps_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let gns = file_store(dir.path());
    let alice = User::new(dir.path(), &gns, "alice");
    let guid = alice.keygen();
    alice.ok(&["publish", "--addr", "192.0.2.1:7000"]);
    alice.ok(&["register", "web"]);
    // The attack as filed: sequence and expiry 2^64-1, the attacker's own valid signature.
    let forged = NameBinding::sign(&mallory(), "web.ns.alt", u64::MAX, u64::MAX).unwrap();
    fs::write(dir.path().join("gns/names/web.ns.alt"), forged.encode()).unwrap();
    let bob = User::new(dir.path(), &gns, "bob");
    let err = bob.fails(&["resolve", "web"]);
    assert!(
        err.contains(
            "record expires at unix time 18446744073709551615, more than 7 days from now: refusing a record from the far future"
        ),
        "{err}"
    );
    // The forged binding holds nothing: the owner's register works, and everyone sees it.
    assert_eq!(
        alice.ok(&["register", "web"]).trim(),
        format!("web.ns.alt -> {guid}")
    );
    assert!(
        bob.ok(&["resolve", "web"])
            .contains(&format!("web.ns.alt -> {guid}"))
    );
}

#[test]
fn a_pinned_client_refuses_a_rebinding_until_trusted_and_follows_a_handover() {
    let dir = tempfile::tempdir().unwrap();
    let gns = file_store(dir.path());
    let alice = User::new(dir.path(), &gns, "alice");
    let alice_guid = alice.keygen();
    alice.ok(&["register", "web"]);
    alice.ok(&["publish", "--addr", "192.0.2.1:7000"]);
    let bob = User::new(dir.path(), &gns, "bob");
    bob.ok(&["resolve", "web"]);
    let pins = fs::read_to_string(&bob.known).unwrap();
    assert!(pins.contains(&format!("web.ns.alt {alice_guid}")), "{pins}");

    // A valid binding by another key (proper sequence and expiry) replaces alice's.
    let m = mallory();
    let hijack = NameBinding::sign(&m, "web.ns.alt", unix_now_micros(), unix_now() + 3600).unwrap();
    fs::write(dir.path().join("gns/names/web.ns.alt"), hijack.encode()).unwrap();
    let err = bob.fails(&["resolve", "web"]);
    let expected = format!(
        "namesock resolve: name web.ns.alt changed owner: you pinned it to GUID {alice_guid} (in {}), but the GNS now binds it to GUID {} without a handover signed by {alice_guid}'s key; someone may be taking the name over. If you know its owner moved to a new key, accept the change with `namesock trust web.ns.alt`",
        bob.known.display(),
        m.guid()
    );
    assert_eq!(err.trim(), expected);
    // The owner's own reader refuses it as well, and register takes the name back.
    alice.fails(&["resolve", "web"]);
    alice.ok(&["register", "web"]);
    assert!(bob.ok(&["resolve", "web"]).contains(&alice_guid));

    // A handover: alice gives the name to carol; bob, who pinned alice, follows.
    let carol = User::new(dir.path(), &gns, "carol");
    let carol_guid = carol.keygen();
    carol.ok(&["publish", "--addr", "192.0.2.3:7000"]);
    let handover = alice.ok(&["handover", "web", "--to", &carol_guid]);
    let file = dir.path().join("handover");
    fs::write(&file, &handover).unwrap();
    // Without it, carol cannot take the name.
    let err = carol.fails(&["register", "web"]);
    assert!(
        err.contains(&format!("already held by GUID {alice_guid}")),
        "{err}"
    );
    carol.ok(&["register", "web", "--handover", file.to_str().unwrap()]);
    let out = bob.ok(&["resolve", "web"]);
    assert!(
        out.contains(&format!("web.ns.alt -> {carol_guid}")),
        "{out}"
    );

    // `trust` accepts a change without a handover, on purpose.
    fs::write(dir.path().join("gns/names/web.ns.alt"), hijack.encode()).unwrap();
    let record = namesock_resolver::Record::sign(
        &m,
        unix_now_micros(),
        unix_now() + 60,
        &["192.0.2.66:7000".parse().unwrap()],
        &[],
    )
    .unwrap();
    fs::write(
        dir.path().join("gns/records").join(m.guid().to_string()),
        record.encode(),
    )
    .unwrap();
    bob.fails(&["resolve", "web"]);
    let out = bob.ok(&["trust", "web"]);
    assert_eq!(
        out.trim(),
        format!(
            "web.ns.alt -> {} (was {carol_guid}); pinned in {}",
            m.guid(),
            bob.known.display()
        )
    );
    assert!(bob.ok(&["resolve", "web"]).contains(&m.guid().to_string()));
}

#[test]
fn a_rollback_seen_by_a_fresh_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gns = file_store(dir.path());
    let alice = User::new(dir.path(), &gns, "alice");
    let guid = alice.keygen();
    alice.ok(&["publish", "--addr", "192.0.2.1:7000"]);
    let record = dir.path().join("gns/records").join(&guid);
    let old = fs::read(&record).unwrap();
    alice.ok(&["publish", "--addr", "192.0.2.2:7000"]);
    let bob = User::new(dir.path(), &gns, "bob");
    assert!(bob.ok(&["resolve", &guid]).contains("192.0.2.2:7000"));
    // The old record, validly signed and unexpired, put back: every new process of bob
    // refuses it (each `namesock resolve` is one).
    fs::write(&record, &old).unwrap();
    for _ in 0..2 {
        let err = bob.fails(&["resolve", &guid]);
        assert!(err.contains("refusing a rollback"), "{err}");
    }
}

/// Runs `script` with `sh` as uid/gid 65534 with no supplementary groups.
fn as_nobody(script: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
        "bash",
        "-c",
        script,
    ]);
    cmd
}

fn nobody_ok(script: &str) {
    let out = as_nobody(script).output().expect("setpriv");
    assert!(out.status.success(), "as uid {NOBODY}: {script}: {out:?}");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path; lchown changes no memory.
    assert_eq!(
        unsafe { libc_lchown(c.as_ptr(), uid, gid) },
        0,
        "chown {}",
        path.display()
    );
}

unsafe extern "C" {
    #[link_name = "lchown"]
    fn libc_lchown(path: *const std::ffi::c_char, uid: u32, gid: u32) -> i32;
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Runs `user`'s namesock `args`, which must fail with status 1 within `within`.
fn fails_within(user: &User, args: &[&str], within: Duration) -> String {
    let start = Instant::now();
    let err = user.fails(args);
    assert!(
        start.elapsed() < within,
        "namesock {args:?} took {:?}",
        start.elapsed()
    );
    err
}

#[test]
fn another_user_cannot_poison_or_block_the_store() {
    let test = "another_user_cannot_poison_or_block_the_store";
    if !namesock_tests::require_root(test) || !namesock_tests::require_tools(test, &["setpriv"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();

    // A store another user created first (as /tmp/namesock-gns-<uid> could be), world-writable.
    let shared_tmp = base.join("tmp");
    fs::create_dir(&shared_tmp).unwrap();
    fs::set_permissions(&shared_tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    nobody_ok(&format!(
        "mkdir -m 777 {0}/gns && chmod 777 {0}/gns",
        shared_tmp.display()
    ));
    let victim = User::new(
        base,
        &format!("file:{}/gns", shared_tmp.display()),
        "victim",
    );
    victim.keygen();
    let err = fails_within(&victim, &["resolve", "web"], Duration::from_secs(5));
    assert!(err.contains("every user can write to it"), "{err}");
    nobody_ok(&format!("chmod 755 {}/gns", shared_tmp.display()));
    let err = victim.fails(&["publish", "--addr", "192.0.2.1:1"]);
    assert!(
        err.contains("belongs to uid 65534, not to you (uid 0)"),
        "{err}"
    );

    // A private store: the other user cannot even look.
    let private = User::new(base, &file_store(base), "victim");
    private.ok(&["publish", "--addr", "192.0.2.1:1"]);
    assert_eq!(mode(&base.join("gns")), 0o700);
    let out = as_nobody(&format!("ls {}/gns/records", base.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "uid 65534 listed a private store");

    // A store shared with a group on purpose (root:65534, 2770): members may write, so they
    // may try their worst; the victim gets clear errors, quickly, and nothing else.
    let store = base.join("shared");
    fs::create_dir(&store).unwrap();
    chown(&store, 0, 65534);
    fs::set_permissions(&store, fs::Permissions::from_mode(0o2770)).unwrap();
    let victim = User::new(base, &format!("file:{}", store.display()), "victim");
    let guid = victim.ok(&["id"]).trim().to_owned();
    victim.ok(&["publish", "--addr", "192.0.2.1:1"]);
    victim.ok(&["register", "web"]);
    assert_eq!(mode(&store.join("records")), 0o2770);
    assert_eq!(mode(&store.join("records").join(&guid)), 0o640);
    // Group members resolve through the shared store.
    nobody_ok(&format!("test -r {}/records/{guid}", store.display()));

    // A FIFO in place of the binding and of the record: an error, not a hang.
    nobody_ok(&format!(
        "cd {} && rm -f names/web.ns.alt records/{guid} && mkfifo names/web.ns.alt records/{guid}",
        store.display()
    ));
    assert!(
        fs::symlink_metadata(store.join("names/web.ns.alt"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let err = fails_within(&victim, &["resolve", "web"], Duration::from_secs(5));
    assert!(
        err.contains("web.ns.alt is a FIFO, not a regular file"),
        "{err}"
    );
    let err = fails_within(&victim, &["resolve", &guid], Duration::from_secs(5));
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    nobody_ok(&format!(
        "cd {} && rm names/web.ns.alt records/{guid}",
        store.display()
    ));
    victim.ok(&["register", "web"]);

    // records/ replaced by a link to a private directory: refused, and nothing is chmod'ed.
    let secret = base.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    nobody_ok(&format!(
        "cd {} && mv records records.old && ln -s {} records",
        store.display(),
        secret.display()
    ));
    let err = fails_within(
        &victim,
        &["publish", "--addr", "192.0.2.1:1"],
        Duration::from_secs(5),
    );
    assert!(
        err.contains("records is a symbolic link; refusing to follow it"),
        "{err}"
    );
    assert_eq!(mode(&secret), 0o700);
    assert_eq!(fs::read_dir(&secret).unwrap().count(), 0);
    nobody_ok(&format!(
        "cd {} && rm records && mv records.old records",
        store.display()
    ));
    victim.ok(&["publish", "--addr", "192.0.2.1:1"]);

    // Every lock stripe held by the other user: the victim's publish gives up after the
    // bounded wait (5 s) with an error naming the lock, never hangs.
    let mut holder = as_nobody(&format!(
        "cd {}/locks && for i in $(seq 0 15); do [ -e $i ] || : > $i; eval \"exec $((i + 10))<$i\"; flock -x $((i + 10)); done; echo held; exec sleep 60",
        store.display()
    ))
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let start = Instant::now();
    let err = victim.fails(&["publish", "--addr", "192.0.2.1:1"]);
    let took = start.elapsed();
    assert!(
        err.contains("is locked by another process and was not released within"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    victim.ok(&["publish", "--addr", "192.0.2.1:1"]);
    // Reading takes no lock: resolving worked all along.
    victim.ok(&["resolve", "web"]);

    // A key file owned by another user (mode 0600, as a key should be) is refused; so is a
    // FIFO in its place.
    let key = base.join("nobody.key");
    Keypair::generate().save_new(&key).unwrap();
    chown(&key, 65534, 65534);
    let user = User {
        key: key.clone(),
        ..victim.clone()
    };
    let err = user.fails(&["id"]);
    assert!(
        err.contains(&format!(
            "key file {} belongs to uid 65534, not to you (uid 0)",
            key.display()
        )),
        "{err}"
    );
    let fifo = base.join("fifo.key");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let user = User {
        key: fifo,
        ..victim
    };
    let err = fails_within(&user, &["id"], Duration::from_secs(5));
    assert!(err.contains("is not a regular file"), "{err}");
}

/// The key statement and the update-policy rules `namesock dns-key` printed.
fn parse_dns_key(out: &str) -> (String, Vec<String>) {
    let start = out.find("key \"").expect("a key statement");
    let end = start + out[start..].find("};").expect("end of the key") + 2;
    let rules = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("grant "))
        .map(str::to_owned)
        .collect();
    (out[start..end].to_owned(), rules)
}

#[test]
fn bind9_lets_each_identity_change_only_its_own_guid_and_names() {
    let test = "bind9_lets_each_identity_change_only_its_own_guid_and_names";
    if let Some(why) = bind9::Named::missing() {
        namesock_tests::skip(test, &why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let alice = User::new(d, "file:/unused", "alice");
    let bob = User::new(d, "file:/unused", "bob");
    let alice_guid = alice.keygen();
    let bob_guid = bob.keygen();
    let a_out = alice.ok(&["dns-key", "--zone", bind9::ZONE, "--name", "web"]);
    let a_key = d.join(format!("tsig-{}.key", bind9::ZONE));
    assert!(
        a_out.contains(&format!("TSIG key in {}", a_key.display())),
        "{a_out}"
    );
    assert_eq!(mode(&a_key), 0o600);
    // Asked again, the same key.
    assert_eq!(
        alice.ok(&["dns-key", "--zone", bind9::ZONE, "--name", "web"]),
        a_out
    );
    assert!(a_out.contains(&format!(
        "grant {alice_guid}.gns.test. self {alice_guid}.gns.test. TXT A AAAA;"
    )));
    assert!(a_out.contains(&format!(
        "grant {alice_guid}.gns.test. name web.gns.test. TXT;"
    )));
    // Both identity keys are in one directory here: bob's TSIG key needs its own file.
    let err = bob.fails(&["dns-key", "--zone", bind9::ZONE]);
    assert!(
        err.contains(&format!("holds the key \"{alice_guid}.gns.test\"")),
        "{err}"
    );
    let b_key = d.join("bob-tsig.key");
    let b_out2 = bob.ok(&[
        "dns-key",
        "--zone",
        bind9::ZONE,
        "--name",
        "api",
        "--out",
        b_key.to_str().unwrap(),
    ]);
    let (a_stmt, mut rules) = parse_dns_key(&a_out);
    let (b_stmt, b_rules) = parse_dns_key(&b_out2);
    assert_ne!(a_stmt, b_stmt);
    rules.extend(b_rules);
    let policy = bind9::Policy {
        keys: format!("{a_stmt}\n{b_stmt}\n"),
        rules,
        dnssec: false,
    };
    let named = bind9::Named::start_with(&policy);
    let url = |key: &Path| {
        format!(
            "dns://{}/{}?tsig-key={}&ttl=1",
            named.addr,
            bind9::ZONE,
            key.display()
        )
    };
    let alice = User {
        gns: url(&a_key),
        ..alice
    };
    let bob = User {
        gns: url(&b_key),
        ..bob
    };
    alice.ok(&["publish", "--addr", "192.0.2.1:7000"]);
    alice.ok(&["register", "web"]);
    bob.ok(&["publish", "--addr", "192.0.2.2:7000"]);
    bob.ok(&["register", "api"]);
    // bob's key may not bind a name it was not granted (the server says so).
    let err = bob.fails(&["register", "other"]);
    assert!(
        err.contains("refused the update of zone gns.test: Query Refused"),
        "{err}"
    );

    // With bob's key, updates of alice's GUID or alice's name, sent straight to the server.
    let Backend::Dns(config) = GnsConfig::from_values(Some(&bob.gns), None)
        .unwrap()
        .backend
    else {
        panic!("not DNS")
    };
    let raw = DnsStore::new(&config).unwrap();
    let alice_id: namesock::identity::Guid = alice_guid.parse().unwrap();
    let forged = namesock_resolver::Record::sign(
        &Keypair::from_seed(&[66; 32]),
        unix_now_micros(),
        unix_now() + 60,
        &[],
        &[],
    )
    .unwrap();
    let err = raw
        .put_record(
            &alice_id,
            &forged.encode(),
            &["192.0.2.66".parse().unwrap()],
        )
        .unwrap_err();
    assert!(
        matches!(err, DnsError::UpdateRefused { ref rcode, .. } if rcode == "Query Refused"),
        "{err}"
    );
    let binding = NameBinding::sign(
        &Keypair::from_seed(&[66; 32]),
        "web.gns.test",
        unix_now_micros(),
        unix_now() + 60,
    )
    .unwrap();
    let err = raw
        .put_name("web.gns.test", &binding.encode(), &Expect::Anything)
        .unwrap_err();
    assert!(matches!(err, DnsError::UpdateRefused { .. }), "{err}");
    // Nothing changed: everyone still resolves alice.
    let carol = User::new(d, &format!("dns://{}/{}", named.addr, bind9::ZONE), "carol");
    let out = carol.ok(&["resolve", "web"]);
    assert!(
        out.contains(&format!("web.gns.test -> {alice_guid}")),
        "{out}"
    );
    assert!(out.contains("locator  192.0.2.1:7000"), "{out}");
    assert!(carol.ok(&["resolve", "api"]).contains(&bob_guid));
}
