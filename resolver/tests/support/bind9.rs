//! Starts a real BIND9 `named` for the tests and the benchmark: a primary for `gns.test` on a
//! free loopback port, updatable with a generated TSIG HMAC-SHA256 key, in a temporary
//! directory, killed when dropped (also when a test fails). Where BIND9 is not installed, tests
//! skip and say so ([`Named::start_or_skip`]), which fails `tests/run.sh` as root and in CI
//! (CI installs bind9); if an installed `named` cannot start, this panics.

// Shared by the tests and the benchmark; each uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "gns.test";
pub const KEY_NAME: &str = "gns-key";
const NAMED: &str = "/usr/sbin/named";
const TSIG_KEYGEN: &str = "/usr/sbin/tsig-keygen";

/// Extra `key` statements and `update-policy` rules (empty: the zone key may update all).
#[derive(Debug, Default, Clone)]
pub struct Policy {
    pub keys: String,
    pub rules: Vec<String>,
    /// Sign the zone (`dnssec-policy default`: a CSK, ECDSA P-256), updates included.
    pub dnssec: bool,
}

/// A running `named`; killed on drop.
pub struct Named {
    child: Child,
    dir: tempfile::TempDir,
    /// Whether `addr` is reachable from here (not inside another network namespace).
    reachable: bool,
    pub addr: SocketAddr,
    /// The key file (BIND format) of the key that may update the zone.
    pub key_file: PathBuf,
    /// Its secret, base64.
    pub secret: String,
}

impl Named {
    /// Why BIND9 cannot run here (a program missing), if so.
    pub fn missing() -> Option<String> {
        [NAMED, TSIG_KEYGEN]
            .into_iter()
            .find(|program| !Path::new(program).exists())
            .map(|program| format!("{program} is not installed (apt-get install bind9)"))
    }

    /// [`Named::start`], or `None` where BIND9 is not installed, after reporting `test` skipped
    /// with `skip` (`tests/src/skip.rs`'s function, passed in because this file is included
    /// by path into crates that reach it differently).
    pub fn start_or_skip(test: &str, skip: fn(&str, &str)) -> Option<Named> {
        match Named::missing() {
            Some(why) => {
                skip(test, &why);
                None
            }
            None => Some(Named::start()),
        }
    }

    pub fn start() -> Named {
        Named::start_with(&Policy::default())
    }

    /// Like [`Named::start_or_skip`], with per-identity keys and an `update-policy`.
    pub fn start_with_or_skip(test: &str, skip: fn(&str, &str), policy: &Policy) -> Option<Named> {
        match Named::missing() {
            Some(why) => {
                skip(test, &why);
                None
            }
            None => Some(Named::start_with(policy)),
        }
    }

    pub fn start_with(policy: &Policy) -> Named {
        Named::start_at(policy, IpAddr::V4(Ipv4Addr::LOCALHOST), &|p| {
            Command::new(p)
        })
    }

    /// named listening on `listen` (port 53), started through `command` (for example
    /// `ip netns exec <namespace> named`, with `listen` that namespace's address). Where
    /// BIND9 is not installed, `None` after reporting `test` skipped.
    pub fn start_in_or_skip(
        test: &str,
        skip: fn(&str, &str),
        listen: IpAddr,
        command: &dyn Fn(&str) -> Command,
    ) -> Option<Named> {
        match Named::missing() {
            Some(why) => {
                skip(test, &why);
                None
            }
            None => Some(Named::start_at(&Policy::default(), listen, command)),
        }
    }

    fn start_at(policy: &Policy, listen: IpAddr, command: &dyn Fn(&str) -> Command) -> Named {
        let mut last = String::new();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            match Named::try_start(policy, listen, command) {
                Ok(named) => return named,
                Err(why) => last = why,
            }
        }
        panic!("BIND9 named did not start (apt-get install -y bind9 bind9-utils): {last}");
    }

    fn try_start(
        policy: &Policy,
        listen: IpAddr,
        command: &dyn Fn(&str) -> Command,
    ) -> Result<Named, String> {
        if !Path::new(NAMED).exists() {
            return Err(format!("{NAMED} is not installed"));
        }
        // named syncs its journal to disk on every update. On the disk the engines' debug logs
        // go to, the first sync after a pause writes those out too (ext4 commits them with it):
        // 25-35 ms per update instead of about 1 ms, measured in the bench's server move. A
        // DNS server has a disk of its own; memory stands in for it where there is some.
        let shm = Path::new("/dev/shm");
        let parent = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("namesock-bind9-")
            .tempdir_in(parent)
            .map_err(|e| e.to_string())?;
        // On this host's loopback a free port; an address of its own (a namespace), 53.
        let reachable = listen.is_loopback();
        let port = if reachable { free_port()? } else { 53 };
        let addr = SocketAddr::new(listen, port);
        let key_file = dir.path().join(format!("{KEY_NAME}.key"));
        let secret = tsig_keygen(&key_file)?;
        let d = dir.path().display();
        let k = key_file.display();
        // The zone key may update anything, unless an update-policy gives each identity's
        // key its own GUID and names (`namesock dns-key` prints the lines).
        let update = if policy.rules.is_empty() {
            format!("allow-update {{ key \"{KEY_NAME}\"; }};")
        } else {
            format!(
                "update-policy {{\n        {}\n    }};",
                policy.rules.join("\n        ")
            )
        };
        let keys = &policy.keys;
        let signing = if policy.dnssec {
            "dnssec-policy default;"
        } else {
            ""
        };
        fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ {listen}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
controls {{ }};
include "{k}";
{keys}
zone "{ZONE}" {{
    type primary;
    file "{d}/{ZONE}.zone";
    journal "{d}/{ZONE}.jnl";
    key-directory "{d}";
    {signing}
    {update}
}};
"#
            ),
        )
        .map_err(|e| e.to_string())?;
        fs::write(
            dir.path().join(format!("{ZONE}.zone")),
            format!(
                "$TTL 2\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 1\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.path().join("named.log")).map_err(|e| e.to_string())?;
        let child = command(NAMED)
            .arg("-g")
            .args(["-u", "root"])
            .arg("-c")
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning {NAMED}: {e}"))?;
        let mut named = Named {
            child,
            dir,
            reachable,
            addr,
            key_file,
            secret,
        };
        named.wait_ready()?;
        Ok(named)
    }

    /// Ready once it answers on TCP and logged that it is running.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("named exited with {status}:\n{}", self.log()));
            }
            let log = self.log();
            // Someone took the port between probing and binding: named runs without it.
            if log.contains("address in use") || log.contains("could not listen") {
                return Err(format!("port {} taken:\n{log}", self.addr.port()));
            }
            // named logs "running" once it listens; from here its port is probed too.
            if log.contains("running")
                && (!self.reachable
                    || TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("named not ready after 20 s:\n{}", self.log()))
    }

    /// What named printed so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.path().join("named.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The zone's key-signing key as a DNSKEY line (a trust anchor), once the zone is signed;
    /// panics if it is not signed within 20 s.
    pub fn dnssec_anchor(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("dig")
                .arg(format!("@{}", self.addr.ip()))
                .args(["-p", &self.addr.port().to_string(), ZONE, "DNSKEY"])
                .args(["+noall", "+answer", "+tcp"])
                .output()
                .expect("dig (apt-get install bind9-dnsutils)");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some(line) = text
                .lines()
                .find(|l| l.split_ascii_whitespace().nth(4) == Some("257"))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "zone not signed after 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A key file with the zone key's name but another secret (the server rejects it).
    pub fn wrong_key_file(&self) -> PathBuf {
        let path = self.dir.path().join("wrong.key");
        tsig_keygen(&path).expect("tsig-keygen");
        path
    }

    /// `NAMESOCK_GNS` for this server with the right key.
    pub fn gns_url(&self) -> String {
        format!(
            "dns://{}/{ZONE}?tsig-key={}&ttl=1",
            self.addr,
            self.key_file.display()
        )
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a new HMAC-SHA256 key named KEY_NAME to `path` (as `tsig-keygen` prints it) and
/// returns its secret.
fn tsig_keygen(path: &Path) -> Result<String, String> {
    let out = Command::new(TSIG_KEYGEN)
        .args(["-a", "hmac-sha256", KEY_NAME])
        .output()
        .map_err(|e| format!("running {TSIG_KEYGEN}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{TSIG_KEYGEN} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let secret = text
        .split_once("secret \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(secret, _)| secret.to_owned())
        .ok_or_else(|| format!("no secret in the output of {TSIG_KEYGEN}: {text}"))?;
    fs::write(path, text).map_err(|e| e.to_string())?;
    Ok(secret)
}

/// A loopback port free for both TCP and UDP right now.
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = tcp.local_addr().map_err(|e| e.to_string())?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free loopback port".to_owned())
}
