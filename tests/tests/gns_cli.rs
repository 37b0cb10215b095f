//! `namesock keygen/id/register/publish/resolve`, run as a user would: on the file store, from
//! another network namespace, and against a real BIND9 (where `dig` shows the addresses).

#[path = "../../resolver/tests/support/bind9.rs"]
mod bind9;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `namesock` binary of this build.
fn namesock() -> PathBuf {
    let bin = namesock_tests::build_dir().join("namesock");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p namesock-cli`, or tests/run.sh)",
        bin.display()
    );
    bin
}

/// Runs `namesock ARGS` with its own GNS backend and key file.
struct Cli {
    gns: String,
    key: PathBuf,
}

impl Cli {
    fn file_store(dir: &Path) -> Cli {
        Cli {
            gns: format!("file:{}", dir.join("gns").display()),
            key: dir.join("key"),
        }
    }

    fn command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(namesock());
                c
            }
            None => Command::new(namesock()),
        };
        cmd.args(args)
            .env("NAMESOCK_GNS", &self.gns)
            .env("NAMESOCK_KEY", &self.key)
            .env(
                "NAMESOCK_KNOWN_NAMES",
                self.key.with_file_name("known_names"),
            )
            .env_remove("NAMESOCK_CONFIG")
            .env_remove("NAMESOCK_ZONE");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(&[], args).output().expect("running namesock")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "namesock {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "namesock {args:?}: {out:?}");
        String::from_utf8(out.stderr).expect("utf-8 output")
    }
}

#[test]
fn identity_publish_register_resolve_on_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::file_store(dir.path());

    let err = cli.fails(&["id"], 1);
    assert!(err.contains("namesock keygen"), "{err}");
    let guid = cli.ok(&["keygen"]).trim().to_owned();
    assert_eq!(guid.len(), 32);
    assert_eq!(cli.ok(&["id"]).trim(), guid);
    let err = cli.fails(&["keygen"], 1);
    assert!(err.contains("refusing to replace"), "{err}");

    let err = cli.fails(&["publish"], 1);
    assert!(err.contains("--port"), "{err}");
    let out = cli.ok(&[
        "publish",
        "--addr",
        "192.0.2.1:7000",
        "--addr",
        "[2001:db8::1]:7000",
    ]);
    assert!(out.contains("locator  192.0.2.1:7000"), "{out}");
    // The host's own addresses (whatever they are) with --port.
    cli.ok(&["publish", "--port", "7001"]);
    cli.ok(&[
        "publish",
        "--addr",
        "192.0.2.1:7000",
        "--addr",
        "[2001:db8::1]:7000",
    ]);

    let out = cli.ok(&["register", "web"]);
    assert_eq!(out.trim(), format!("web.ns.alt -> {guid}"));
    for query in [
        "web",
        "web.ns.alt",
        "WEB.ns.alt.",
        &guid,
        &format!("{guid}.ns.alt"),
    ] {
        let out = cli.ok(&["resolve", query]);
        assert!(out.contains(&format!("guid     {guid}")), "{query}: {out}");
        assert!(out.contains("locator  192.0.2.1:7000"), "{query}: {out}");
        assert!(
            out.contains("locator  [2001:db8::1]:7000"),
            "{query}: {out}"
        );
        assert!(out.contains("published"), "{query}: {out}");
    }

    let err = cli.fails(&["resolve", "nobody"], 2);
    assert!(err.contains("not in the GNS"), "{err}");
    let err = cli.fails(&["resolve", "not a name"], 1);
    assert!(err.contains("neither a name nor a GUID"), "{err}");

    // Someone else cannot take the name.
    let other = Cli {
        gns: cli.gns.clone(),
        key: dir.path().join("other-key"),
    };
    other.ok(&["keygen"]);
    let err = other.fails(&["register", "web"], 1);
    assert!(
        err.contains(&format!("already held by GUID {guid}")),
        "{err}"
    );

    for command in ["keygen", "id", "register", "publish", "resolve"] {
        let help = cli.ok(&[command, "--help"]);
        assert!(help.contains("Usage: namesock"), "{command}: {help}");
    }
}

#[test]
fn resolves_from_another_network_namespace() {
    if !namesock_tests::require_namespaces("resolves_from_another_network_namespace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::file_store(dir.path());
    let guid = cli.ok(&["keygen"]).trim().to_owned();
    cli.ok(&["publish", "--addr", "192.0.2.8:7000"]);
    cli.ok(&["register", "far"]);
    // A fresh network namespace with nothing in it but loopback (down): the file store still
    // answers, since it is only the filesystem.
    let out = cli
        .command(&["unshare", "--net"], &["resolve", "far"])
        .output()
        .expect("unshare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(&format!("far.ns.alt -> {guid}")), "{out}");
    assert!(out.contains("locator  192.0.2.8:7000"), "{out}");
}

#[test]
fn publish_and_resolve_through_bind9() {
    let test = "publish_and_resolve_through_bind9";
    let Some(named) = bind9::Named::start_or_skip(test, namesock_tests::skip) else {
        return;
    };
    if !namesock_tests::require_tools(test, &["dig"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        gns: named.gns_url(),
        key: dir.path().join("key"),
    };
    let guid = cli.ok(&["keygen"]).trim().to_owned();
    let out = cli.ok(&[
        "publish",
        "--addr",
        "192.0.2.9:7000",
        "--addr",
        "[2001:db8::9]:7000",
    ]);
    assert!(out.contains("published in dns://"), "{out}");
    cli.ok(&["register", "web"]);
    let out = cli.ok(&["resolve", "web"]);
    assert!(out.contains(&format!("web.gns.test -> {guid}")), "{out}");
    assert!(out.contains("locator  192.0.2.9:7000"), "{out}");

    // Plain DNS tools see the addresses.
    for (rtype, expect) in [("A", "192.0.2.9"), ("AAAA", "2001:db8::9")] {
        let out = Command::new("dig")
            .args([
                &format!("@{}", named.addr.ip()),
                "-p",
                &named.addr.port().to_string(),
                &format!("{guid}.gns.test"),
                rtype,
                "+short",
            ])
            .output()
            .expect("dig (apt-get install bind9-dnsutils)");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect);
    }

    // A key the server does not know: the error says what to check.
    let wrong = Cli {
        gns: format!(
            "dns://{}/gns.test?tsig-key={}",
            named.addr,
            named.wrong_key_file().display()
        ),
        key: cli.key.clone(),
    };
    let err = wrong.fails(&["publish", "--addr", "192.0.2.10:7000"], 1);
    assert!(err.contains("rejected the TSIG key"), "{err}");
}
