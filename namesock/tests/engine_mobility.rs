//! Engine sessions that survive moves, in network namespaces built by `namesock_cli::testbed`.
//!
//! Each scenario runs the `nsbench` example as a server in one namespace and a client in
//! another (joined by a router namespace), both sending 64 MiB of seeded random data, and
//! checks the SHA-256 of both directions. The outage (longest stall of either direction after
//! the change) is printed per scenario; `ENGINE_RUNS=N` repeats each scenario and prints the
//! median. Needs root, `ip` and `nft`; skipped (with a message) otherwise. Build the example in
//! the same profile first (`cargo test` does); `NSBENCH=/path` overrides it.
//!
//! Run: `cargo test --release -p namesock --test engine_mobility -- --nocapture --test-threads 1`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock::wire::Frame;
use namesock_cli::testbed::{Host, Process, Testbed};
use namesock_cli::testbed::{Progress, median, stalls};
use namesock_resolver::{Gns, Target};

const BYTES: u64 = 64 << 20;
/// Sender pace in the mobility scenarios, so that moves happen mid-transfer.
const RATE: u64 = 16 << 20;
const PORT: &str = "8000";

/// One scenario at a time: the figures mean more without two transfers sharing the CPUs.
static SERIAL: Mutex<()> = Mutex::new(());

fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let tools = ["ip", "nft"].iter().all(|t| {
        std::process::Command::new(t)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if !(root && tools) {
        eprintln!("skipped: needs root and the ip and nft tools");
        return false;
    }
    // 2 x 64 MiB through a debug build of nsbench (random data, SHA-256) takes minutes.
    if cfg!(debug_assertions) && std::env::var_os("NSBENCH").is_none() {
        eprintln!("skipped: run in release (tests/run.sh), or set NSBENCH to a release nsbench");
        return false;
    }
    true
}

fn nsbench() -> PathBuf {
    if let Some(p) = std::env::var_os("NSBENCH") {
        return p.into();
    }
    // target/<profile>/deps/engine_mobility-<hash> -> target/<profile>/examples/nsbench
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/nsbench")
}

fn runs() -> usize {
    std::env::var("ENGINE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The scenario's files (logs, GNS, keys): removed at the end, kept when the test fails or
/// `ENGINE_KEEP` is set.
struct WorkDir(tempfile::TempDir);

impl WorkDir {
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("ENGINE_KEEP").is_some() {
            self.0.disable_cleanup(true);
            eprintln!("kept {}", self.0.path().display());
        }
    }
}

fn workdir(tag: &str) -> WorkDir {
    WorkDir(
        tempfile::Builder::new()
            .prefix(&format!("engine-{tag}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap(),
    )
}

/// The engine settings of a scenario.
#[derive(Clone, Copy)]
struct Timers {
    keepalive_ms: u64,
    path_dead_ms: u64,
    linger_ms: u64,
}

const FAST: Timers = Timers {
    keepalive_ms: 250,
    path_dead_ms: 1500,
    linger_ms: 20_000,
};

fn env(cmd: &mut std::process::Command, dir: &Path, role: &str, t: Timers) {
    cmd.env(
        "NAMESOCK_GNS",
        format!("file:{}", dir.join("gns").display()),
    )
    .env("NAMESOCK_KEY", dir.join(format!("{role}.key")))
    .env("NAMESOCK_KEEPALIVE_MS", t.keepalive_ms.to_string())
    .env("NAMESOCK_PATH_DEAD_MS", t.path_dead_ms.to_string())
    .env("NAMESOCK_LINGER_MS", t.linger_ms.to_string())
    .env("NAMESOCK_CONNECT_TIMEOUT_MS", "10000")
    .env("NAMESOCK_LOG", "namesock=debug")
    .env("NAMESOCK_LOG_FILE", dir.join(format!("{role}.log")));
}

/// A running nsbench process and its stdout lines.
struct Bench {
    process: Process,
    lines: Receiver<String>,
    role: &'static str,
}

impl Bench {
    fn spawn(mut cmd: std::process::Command, dir: &Path, role: &'static str) -> Bench {
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("{role}.err"))).unwrap());
        let mut process = Process::spawn(cmd).unwrap();
        let out = process.child_mut().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Bench {
            process,
            lines,
            role,
        }
    }

    fn line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

/// `done sent=.. sent_sha256=.. recv=.. recv_sha256=.. secs=..`
#[derive(Debug)]
struct Done {
    sent_sha: String,
    recv: u64,
    recv_sha: String,
    secs: f64,
}

fn parse_done(line: &str) -> Done {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {line:?}"))
            .to_owned()
    };
    Done {
        sent_sha: field("sent_sha256"),
        recv: field("recv").parse().unwrap(),
        recv_sha: field("recv_sha256"),
        secs: field("secs").parse().unwrap(),
    }
}

fn log_tail(dir: &Path, role: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{role}.log"))).unwrap_or_default();
    let err = std::fs::read_to_string(dir.join(format!("{role}.err"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "{role} stderr: {err}\n{role} log (tail):\n{}",
        lines[lines.len().saturating_sub(40)..].join("\n")
    )
}

/// A client and a server transferring both ways.
struct Transfer {
    server: Bench,
    client: Bench,
    to_client: Progress,
    to_server: Progress,
    dir: PathBuf,
    bytes: u64,
}

impl Transfer {
    fn start(srv: &Host, cli: &Host, dir: &Path, t: Timers, bytes: u64, rate: u64) -> Transfer {
        Transfer::start_with(
            |p| srv.command(p),
            |p| cli.command(p),
            |_| {},
            dir,
            t,
            bytes,
            rate,
        )
    }

    /// `srv`/`cli` make the command that runs a program where that side lives;
    /// `before_client` runs once the server is ready (with its GUID).
    fn start_with(
        srv: impl Fn(PathBuf) -> std::process::Command,
        cli: impl Fn(PathBuf) -> std::process::Command,
        before_client: impl FnOnce(&str),
        dir: &Path,
        t: Timers,
        bytes: u64,
        rate: u64,
    ) -> Transfer {
        let common = |seed: &str, out: &str| {
            vec![
                "--bytes".to_owned(),
                bytes.to_string(),
                "--seed".to_owned(),
                seed.to_owned(),
                "--out".to_owned(),
                dir.join(out).display().to_string(),
                "--rate".to_owned(),
                rate.to_string(),
            ]
        };
        let mut cmd = srv(nsbench());
        cmd.args(["serve", PORT]).args(common("2", "srv.recv"));
        env(&mut cmd, dir, "srv", t);
        let server = Bench::spawn(cmd, dir, "srv");
        let ready = server
            .line("ready ", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("server not ready\n{}", log_tail(dir, "srv")));
        let guid = ready.trim_start_matches("ready ").trim().to_owned();
        before_client(&guid);
        let to_client = Progress::watch(dir.join("cli.recv"), Duration::from_millis(2));
        let to_server = Progress::watch(dir.join("srv.recv"), Duration::from_millis(2));
        let mut cmd = cli(nsbench());
        cmd.args(["connect", &format!("{guid}.ns.alt:{PORT}")])
            .args(common("1", "cli.recv"));
        env(&mut cmd, dir, "cli", t);
        let client = Bench::spawn(cmd, dir, "cli");
        Transfer {
            server,
            client,
            to_client,
            to_server,
            dir: dir.to_owned(),
            bytes,
        }
    }

    /// Waits until both directions carried `bytes`.
    fn wait_for(&self, bytes: u64) {
        for p in [&self.to_client, &self.to_server] {
            assert!(
                p.wait_for_bytes(bytes, Duration::from_secs(30)),
                "transfer did not start\n{}\n{}",
                log_tail(&self.dir, "srv"),
                log_tail(&self.dir, "cli")
            );
        }
    }

    /// (to_client, to_server) instants of "now" on each watch.
    fn mark(&self) -> (Duration, Duration) {
        (self.to_client.now(), self.to_server.now())
    }

    /// Waits for both ends, checks every byte, returns the outage after each mark and the
    /// client's transfer time.
    fn finish(mut self, marks: &[(Duration, Duration)]) -> (Vec<Duration>, f64) {
        let mut done = Vec::new();
        for b in [&mut self.client, &mut self.server] {
            let line = b.line("done ", Duration::from_secs(180));
            let status = b.process.wait_timeout(Duration::from_secs(40)).unwrap();
            let Some(line) = line else {
                panic!(
                    "{} did not finish ({status:?})\n{}\n{}",
                    b.role,
                    log_tail(&self.dir, "srv"),
                    log_tail(&self.dir, "cli")
                );
            };
            assert!(status.is_some_and(|s| s.success()), "{} failed", b.role);
            done.push(parse_done(&line));
        }
        let (cli, srv) = (&done[0], &done[1]);
        assert_eq!(cli.recv, self.bytes, "client received everything");
        assert_eq!(srv.recv, self.bytes, "server received everything");
        assert_eq!(cli.recv_sha, srv.sent_sha, "server -> client intact");
        assert_eq!(srv.recv_sha, cli.sent_sha, "client -> server intact");
        let end_c = self.to_client.now();
        let end_s = self.to_server.now();
        let sc = stalls(
            &self.to_client.finish(),
            &marks.iter().map(|m| m.0).collect::<Vec<_>>(),
            end_c,
            self.bytes,
        );
        let ss = stalls(
            &self.to_server.finish(),
            &marks.iter().map(|m| m.1).collect::<Vec<_>>(),
            end_s,
            self.bytes,
        );
        let outages = sc
            .iter()
            .zip(&ss)
            .map(|(a, b)| a.longest.max(b.longest))
            .collect();
        (outages, done[0].secs)
    }
}

/// A bed with a server and a client host.
fn bed(name: &str) -> (Testbed, Host, Host) {
    let bed = Testbed::for_scenario(name).unwrap();
    let srv = bed.add_host("srv").unwrap();
    let cli = bed.add_host("cli").unwrap();
    (bed, srv, cli)
}

/// Runs a mobility scenario `runs()` times; `change` happens once 16 MiB went each way.
fn scenario(
    name: &str,
    prepare: impl Fn(&Host, &Host),
    change: impl Fn(&Host, &Host, &Transfer) -> Vec<(Duration, Duration)>,
) {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut outages = Vec::new();
    for run in 0..runs() {
        let (bed, srv, cli) = bed(&format!("e{name}"));
        prepare(&srv, &cli);
        let dir = workdir(name);
        let t = Transfer::start(&srv, &cli, dir.path(), FAST, BYTES, RATE);
        t.wait_for(16 << 20);
        let marks = change(&srv, &cli, &t);
        let (o, _) = t.finish(&marks);
        eprintln!("scenario {name} run {run}: outage {:?}", o);
        outages.extend(o);
        drop(bed);
    }
    eprintln!(
        "FIGURE scenario {name}: median outage {:?} over {} change(s): {:?}",
        median(&outages),
        outages.len(),
        outages
    );
}

#[test]
fn a_client_moves_to_a_new_subnet() {
    scenario(
        "a",
        |_, _| {},
        |_, cli, t| {
            let m = t.mark();
            cli.move_to_new_subnet().unwrap();
            vec![m]
        },
    );
}

#[test]
fn b_server_moves_and_republishes() {
    scenario(
        "b",
        |_, _| {},
        |srv, _, t| {
            let m = t.mark();
            srv.move_to_new_subnet().unwrap();
            vec![m]
        },
    );
}

#[test]
fn b2_server_moves_make_before_break() {
    // The new address comes first (MOVED on the live path), the old one goes 1 s later.
    scenario(
        "b2",
        |_, _| {},
        |srv, _, t| {
            let m = t.mark();
            srv.add_link().unwrap();
            std::thread::sleep(Duration::from_secs(1));
            let m2 = t.mark();
            srv.link_down(0).unwrap();
            vec![m, m2]
        },
    );
}

#[test]
fn c_both_move_at_once() {
    scenario(
        "c",
        |_, _| {},
        |srv, cli, t| {
            let m = t.mark();
            let s = srv.clone();
            let h = std::thread::spawn(move || s.move_to_new_subnet().unwrap());
            cli.move_to_new_subnet().unwrap();
            h.join().unwrap();
            vec![m]
        },
    );
}

#[test]
fn d_one_of_two_client_interfaces_goes_down() {
    scenario(
        "d",
        |_, cli| {
            cli.add_link().unwrap();
        },
        |_, cli, t| {
            let m = t.mark();
            cli.link_down(0).unwrap();
            vec![m]
        },
    );
}

#[test]
fn e_unreachable_longer_than_keepalive_shorter_than_linger() {
    scenario(
        "e",
        |_, _| {},
        |_, cli, t| {
            let m = t.mark();
            cli.cut().unwrap();
            // > path-dead (1.5 s) and keepalive, < linger (20 s).
            std::thread::sleep(Duration::from_secs(3));
            cli.restore().unwrap();
            vec![m]
        },
    );
}

#[test]
fn f_peer_that_never_returns_is_reset_after_linger() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (bed, srv, cli) = bed("ef");
    let dir = workdir("f");
    let t = Timers {
        keepalive_ms: 250,
        path_dead_ms: 1000,
        linger_ms: 3000,
    };
    let mut tr = Transfer::start(&srv, &cli, dir.path(), t, BYTES, RATE);
    tr.wait_for(4 << 20);
    let cut = Instant::now();
    cli.cut().unwrap();
    // The server's program must see a reset once path-dead + linger passed.
    let status = tr
        .server
        .process
        .wait_timeout(Duration::from_secs(20))
        .unwrap();
    let after = cut.elapsed();
    let err = std::fs::read_to_string(dir.path().join("srv.err")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "server should fail\n{}",
        log_tail(dir.path(), "srv")
    );
    assert!(
        err.to_lowercase().contains("reset"),
        "server program should see ECONNRESET, got: {err}"
    );
    assert!(
        after >= Duration::from_millis(3000),
        "reset before linger: {after:?}"
    );
    eprintln!("FIGURE linger 3 s: server program saw the reset {after:?} after the cut");
    let cstatus = tr
        .client
        .process
        .wait_timeout(Duration::from_secs(20))
        .unwrap();
    assert!(cstatus.is_some_and(|s| !s.success()), "client should fail");
    drop(bed);
}

#[test]
fn g_relay_throughput_vs_plain_tcp() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (bed, srv, cli) = bed("eg");
    let dir = workdir("g");
    // Plain TCP over the same veth and router.
    let mut cmd = srv.command(nsbench());
    cmd.args(["plain-serve", "9000", "--bytes", &BYTES.to_string()]);
    let mut server = Bench::spawn(cmd, dir.path(), "plainsrv");
    server.line("ready", Duration::from_secs(10)).unwrap();
    let mut cmd = cli.command(nsbench());
    cmd.args([
        "plain-connect",
        &format!("{}:9000", srv.v4()),
        "--bytes",
        &BYTES.to_string(),
    ]);
    let mut client = Bench::spawn(cmd, dir.path(), "plaincli");
    let plain = parse_done(&client.line("done", Duration::from_secs(120)).unwrap());
    assert_eq!(plain.recv, BYTES);
    client
        .process
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    server
        .process
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    // The same through the engines (no pacing).
    let t = Transfer::start(&srv, &cli, dir.path(), FAST, BYTES, 0);
    let (_, ns_secs) = t.finish(&[]);
    drop(bed);
    let mib = (2 * BYTES) as f64 / (1 << 20) as f64;
    eprintln!(
        "FIGURE throughput (2 x {} MiB at once over veth+router): plain TCP {:.3} s = {:.0} MiB/s, \
         namesock {:.3} s = {:.0} MiB/s, ratio {:.2}",
        BYTES >> 20,
        plain.secs,
        mib / plain.secs,
        ns_secs,
        mib / ns_secs,
        plain.secs / ns_secs
    );
}

// ------------------------------------------------------------------ third-party RESUME

/// What the proxy saw of the client's frames.
#[derive(Default)]
struct Captured {
    conn_id: Option<[u8; 16]>,
    hello: Option<Vec<u8>>,
    resume: Option<Vec<u8>>,
}

/// Forwards client paths to the server's engine, decoding the client's frames; kills the
/// first path after `kill_after` bytes so that the client resumes through the proxy.
fn proxy(listener: TcpListener, server: SocketAddr, kill_after: u64, cap: Arc<Mutex<Captured>>) {
    let mut first = true;
    for conn in listener.incoming() {
        let Ok(client) = conn else { return };
        let Ok(upstream) = TcpStream::connect(server) else {
            return;
        };
        let limit = if first { Some(kill_after) } else { None };
        first = false;
        let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
        // server -> client: raw copy
        std::thread::spawn(move || {
            let (mut from, mut to) = (u2, c2);
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Both);
        });
        let cap = cap.clone();
        std::thread::spawn(move || {
            let (mut from, mut to) = (client, upstream);
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                total += n as u64;
                buf.extend_from_slice(&chunk[..n]);
                let mut pos = 0;
                while let Ok(Some((frame, used))) = Frame::decode(&buf[pos..]) {
                    let mut c = cap.lock().unwrap();
                    match &frame {
                        Frame::Hello(h) => {
                            c.conn_id = Some(h.conn_id);
                            c.hello = Some(buf[pos..pos + used].to_vec());
                        }
                        Frame::Resume(_) if c.resume.is_none() => {
                            c.resume = Some(buf[pos..pos + used].to_vec())
                        }
                        _ => {}
                    }
                    pos += used;
                }
                buf.drain(..pos);
                if to.write_all(&chunk[..n]).is_err() {
                    break;
                }
                if limit.is_some_and(|l| total >= l) {
                    // The path dies (as when a NAT forgets it).
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// Sends `bytes` as a fresh path to the server's engine; returns the frames it answered
/// before closing the path.
fn attack(server: SocketAddr, bytes: &[u8]) -> Vec<Frame> {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut frames = Vec::new();
    let mut pos = 0;
    while let Ok(Some((f, used))) = Frame::decode(&got[pos..]) {
        frames.push(f);
        pos += used;
    }
    frames
}

#[test]
fn h_third_party_resume_cannot_disturb_the_session() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // On this host's loopback: the client reaches the server through an on-path relay (this
    // test) that sees every byte, as an attacker on the path would.
    let dir = workdir("h");
    let gns_dir = dir.path().join("gns");
    let cap = Arc::new(Mutex::new(Captured::default()));
    let engine = Arc::new(Mutex::new(None::<SocketAddr>));
    let (cap2, engine2) = (cap.clone(), engine.clone());
    let key_path = dir.path().join("srv.key");
    let local = |p: PathBuf| std::process::Command::new(p);
    let t = Transfer::start_with(
        local,
        local,
        |guid| {
            // Point the server's record at the relay (the test holds the server's key file).
            let guid: namesock::identity::Guid = guid.parse().unwrap();
            let gns = Gns::file(&gns_dir, "ns.alt").unwrap();
            let rec = gns.resolve(&Target::Guid(guid)).unwrap();
            let server = *rec
                .locators
                .iter()
                .find(|a| a.ip().is_loopback() && a.is_ipv4())
                .unwrap();
            *engine2.lock().unwrap() = Some(server);
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let relay = listener.local_addr().unwrap();
            let key = Keypair::load(&key_path).unwrap();
            gns.publish(&key, &[relay], &[]).unwrap();
            std::thread::spawn(move || proxy(listener, server, 8 << 20, cap2));
        },
        dir.path(),
        FAST,
        BYTES,
        RATE,
    );
    let server = engine.lock().unwrap().unwrap();
    // Wait for the client's genuine RESUME after the relay killed its first path.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (conn_id, hello, resume) = loop {
        {
            let c = cap.lock().unwrap();
            if let (Some(id), Some(h), Some(r)) = (c.conn_id, &c.hello, &c.resume) {
                break (id, h.clone(), r.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no RESUME seen\n{}",
            log_tail(dir.path(), "cli")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // 1. A forged RESUME with the captured connection ID.
    let mut forged = Vec::new();
    Frame::<Vec<u8>>::Resume(namesock::wire::Resume {
        conn_id,
        path_id: 4242,
        received: 0,
        freshness: u64::MAX,
        signature: namesock::identity::Signature([7; 64]),
    })
    .encode(&mut forged);
    // 2. The genuine RESUME, replayed. 3. The genuine HELLO, replayed.
    for (what, bytes) in [
        ("forged RESUME", forged),
        ("replayed RESUME", resume),
        ("replayed HELLO", hello),
    ] {
        let answer = attack(server, &bytes);
        assert!(
            !answer
                .iter()
                .any(|f| matches!(f, Frame::ResumeAck(_) | Frame::HelloAck(_))),
            "{what} was accepted: {answer:?}"
        );
        eprintln!("{what}: server answered {answer:?} and closed the path");
    }
    // The session goes on, intact.
    let (_, secs) = t.finish(&[]);
    eprintln!("third-party resumes: session finished intact in {secs:.2} s");
}
