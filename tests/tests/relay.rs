//! Relays (issue 16): a server behind a masquerading router whose stateful firewall admits no
//! inbound connection, reachable by name only through a relay on another host.
//!
//! - `a_server_behind_nat_serves_32_mib_through_the_relay_across_its_move`: `curl` by name
//!   downloads 32 MiB from `python3 -m http.server` (both under namesock) while the server
//!   moves behind the NAT; the file arrives intact; a plain connection to the server's address
//!   is refused by the firewall (the control); tcpdump on the relay's host holds no 32-byte
//!   window of the file and no request line, although the whole transfer crossed it.
//! - `a_registration_for_someone_elses_guid_is_refused`: an attacker registers the server's
//!   GUID with its own key, with the server's key and a forged proof, and with a real proof
//!   replayed from an earlier challenge: each is refused with its reason, and the server's own
//!   registration still carries a download.
//! - `a_relay_found_by_name_carries_the_download_and_an_impostor_at_its_address_is_refused`:
//!   `namesock relay --name hub` publishes its record; a server with `NAMESOCK_RELAY=hub`
//!   refuses an impostor relay (another key) at hub's address, then registers with the real
//!   one and carries a download by name, intact; the relay moves and is found again.
//!
//! Needs root, `ip`, `nft`, `tcpdump`, `curl`, `python3` and a release build (tests/run.sh).

use std::collections::HashSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock::relay::wire::{self, Preamble};
use namesock_cli::testbed::scenario::{Download, Fetch, Served, Timers, World};
use namesock_cli::testbed::{Host, Process, Testbed};
use namesock_tests::capture::{Capture, find, windows_found};
use namesock_tests::{PORT, require_namespaces, require_release, require_tools, tools};

const RELAY_PORT: u16 = 7000;

/// The bed: a server behind NAT, a client, a relay host; the world; the served file.
struct Nat {
    /// `namesock relay` on each relay host (`None`: stopped).
    relay_processes: Vec<Option<Process>>,
    server_process: Option<Process>,
    server: Host,
    client: Host,
    /// `relay`, then `relay2`, ...: each a host of its own.
    relays: Vec<Host>,
    bed: Testbed,
    served: Served,
    world: World,
}

impl Nat {
    fn new(name: &str, file_size: u64, relays: usize) -> Nat {
        let mut world = World::new(name, tools(), Timers::fast()).expect("scenario directory");
        if std::env::var_os("NAMESOCK_TEST_KEEP").is_some() {
            eprintln!("{name}: keeping {}", world.dir.path().display());
            world.dir.keep();
        }
        let bed = Testbed::for_scenario(name).expect("test bed");
        let server = bed.add_host("server").expect("server host");
        let client = bed.add_host("client").expect("client host");
        let relays: Vec<Host> = (0..relays)
            .map(|i| bed.add_host(&relay_label(i)).expect("relay host"))
            .collect();
        let served = world
            .serve_random_file("file", file_size)
            .expect("served file");
        Nat {
            relay_processes: Vec::new(),
            server_process: None,
            server,
            client,
            relays,
            bed,
            served,
            world,
        }
    }

    /// The router masquerades the server's link and admits no connection into it (nftables:
    /// only packets of connections the server opened go in). Keyed by the router's interface,
    /// so the rules hold when the server moves to a new subnet on the same link.
    /// The usual bed: the server behind its masquerading router, the relays started with
    /// `relay_args`, the web server serving through them.
    fn behind_relays(name: &str, file_size: u64, relays: usize, relay_args: &[&str]) -> Nat {
        let mut nat = Nat::new(name, file_size, relays);
        nat.masquerade_server();
        nat.start_relays(relay_args);
        nat.start_server();
        nat
    }

    fn masquerade_server(&self) {
        let state = self.bed.state();
        let link = &state.host("server").expect("server").links[0];
        let script = format!(
            "table inet relaytest_nat {{\n\
               chain forward {{ type filter hook forward priority filter; policy accept;\n\
                 iifname \"{i}\" meta mark set 0x4e\n\
                 oifname \"{i}\" ct state established,related accept\n\
                 oifname \"{i}\" counter drop\n\
               }}\n\
               chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
                 meta mark 0x4e masquerade\n\
               }}\n\
             }}\n",
            i = link.router_if
        );
        let mut nft = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.bed.router_namespace(),
                "nft",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write the rules");
        assert!(
            nft.wait().expect("nft ran").success(),
            "nft refused:\n{script}"
        );
    }

    /// `namesock relay` (with `extra` arguments) on each relay host, each with its own
    /// identity (`keys/<label>.key`); waits until they listen.
    fn start_relays(&mut self, extra: &[&str]) {
        for i in 0..self.relays.len() {
            let relay = self.start_relay_as(i, &relay_label(i), extra);
            self.relay_processes.push(Some(relay));
        }
    }

    /// `namesock relay` on relay host `i` with the identity and logs of `label`; waits until
    /// it listens.
    fn start_relay_as(&self, i: usize, label: &str, extra: &[&str]) -> Process {
        let namesock = self.world.tools.namesock.to_string_lossy().into_owned();
        let listen = format!("0.0.0.0:{RELAY_PORT}");
        let mut argv = vec![namesock.as_str(), "relay", "--listen", &listen];
        argv.extend_from_slice(extra);
        let command = self
            .world
            .with_namesock_env(&self.relays[i], label, &argv)
            .expect("relay");
        let relay = Process::spawn(command).expect("start the relay");
        self.wait_for_log(label, "listening on");
        relay
    }

    /// `python3 -m http.server` under namesock as `web`, registered with the relays (by
    /// address).
    fn start_server(&mut self) {
        let relay_addrs: Vec<String> = self
            .relays
            .iter()
            .map(|h| format!("{}:{RELAY_PORT}", h.v4()))
            .collect();
        self.spawn_server(&relay_addrs.join(","));
        for addr in relay_addrs {
            let line = format!("registered with the relay relay={addr}");
            self.wait_for_log("server.namesock", &line);
        }
    }

    /// The web server with `NAMESOCK_RELAY=relays`; waits for its record to list a relay.
    fn spawn_server(&mut self, relays: &str) {
        let www = self.world.path("www");
        let port = PORT.to_string();
        let argv = [
            "python3",
            "-m",
            "http.server",
            &port,
            "--directory",
            &www.to_string_lossy(),
        ];
        let mut command = self
            .world
            .namesock_run(&self.server, "server", &argv)
            .expect("server command");
        command
            .env("NAMESOCK_NAME", "web")
            .env("NAMESOCK_RELAY", relays);
        self.server_process = Some(Process::spawn(command).expect("start the web server"));
        let v4 = self.server.v4();
        let record = self
            .world
            .wait_for_record("web", Duration::from_secs(30), |r| {
                !r.relays.is_empty() && r.locators.iter().any(|l| l.ip() == v4)
            });
        if let Err(e) = record {
            panic!("{e}\n{}", self.world.log_tail("server", 30));
        }
    }

    fn log(&self, label: &str) -> String {
        std::fs::read_to_string(self.world.log(label)).unwrap_or_default()
    }

    fn wait_for_log(&self, label: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log(label).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{label} never logged {needle:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        let relays = (0..self.relays.len()).map(relay_label);
        ["client".to_owned(), "server".to_owned()]
            .into_iter()
            .chain(relays)
            .map(|l| self.world.log_tail(&l, 25))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn fetch(&self) -> Fetch {
        Fetch {
            url: format!("http://web.ns.alt:{PORT}{}", self.served.url_path),
            rate: None,
            max_time: Duration::from_secs(120),
            namesock: true,
        }
    }
}

fn relay_label(i: usize) -> String {
    match i {
        0 => "relay".to_owned(),
        i => format!("relay{}", i + 1),
    }
}

fn ready(test: &str) -> bool {
    require_namespaces(test)
        && require_release(test, "the preload")
        && require_tools(test, &["tcpdump", "curl", "python3"])
}

#[test]
fn a_server_behind_nat_serves_32_mib_through_the_relay_across_its_move() {
    let name = "a_server_behind_nat_serves_32_mib_through_the_relay_across_its_move";
    if !ready(name) {
        return;
    }
    let size = 32 << 20;
    let nat = Nat::behind_relays("relay-nat", size, 1, &[]);

    // The control: the server's own address admits no connection from outside.
    let plain = nat
        .client
        .run(
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                "-o",
                "/dev/null",
                &format!("http://{}:{PORT}/", nat.server.v4()),
            ],
            Duration::from_secs(10),
        )
        .expect("curl ran");
    assert!(
        !plain.status.success(),
        "the NAT let a plain connection in: the test would prove nothing"
    );
    // The relay sees the server from the router's masqueraded address, not its own.
    assert!(
        !nat.log("relay.namesock")
            .contains(&nat.server.v4().to_string()),
        "the server reached the relay unmasqueraded:\n{}",
        nat.log("relay.namesock")
    );

    // 32 MiB at 8 MB/s: a few seconds, long enough to move in the middle.
    nat.server.limit_rate(Some(64_000)).expect("rate limit");
    let pcap = nat.world.path("relay.pcap");
    let capture = Capture::start(&nat.relays[0].namespace(), &pcap);
    let mut download =
        Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
            .expect("start curl");
    download
        .wait_for_bytes(&nat.world, size / 4, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", nat.logs()));
    download.mark_move();
    let (v4, _) = nat.server.move_to_new_subnet().expect("server moves");
    eprintln!("server moved behind the NAT to {v4}");
    download
        .wait_for_bytes(&nat.world, size * 3 / 4, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", nat.logs()));
    let outcome = download.finish(Duration::from_secs(120)).expect("curl ran");
    assert!(
        outcome.complete(),
        "download incomplete: {outcome}
{}",
        nat.logs()
    );
    let captured = capture.finish(&pcap);
    let file = std::fs::read(nat.world.path("www").join("file")).expect("the served file");
    let found = windows_found(&file, &captured);
    let request = format!("GET {}", nat.served.url_path);
    let registrations = nat
        .log("relay.namesock")
        .matches("server registered guid")
        .count();
    eprintln!(
        "RELAY nat: {} bytes in {:.1} s through the relay, sha256 ok, server move outage {:?} ms; \
         capture on the relay host: {} bytes, {found} windows of the file, request line found: {}; \
         registrations at the relay: {registrations}",
        outcome.bytes,
        outcome.elapsed.as_secs_f64(),
        outcome
            .outages()
            .iter()
            .map(|d| d.as_millis())
            .collect::<Vec<_>>(),
        captured.len(),
        find(&captured, request.as_bytes()).is_some(),
    );
    assert!(
        captured.len() as u64 > 2 * size,
        "the transfer did not cross the relay ({} bytes captured)",
        captured.len()
    );
    assert_eq!(found, 0, "windows of the file crossed the relay in clear");
    assert!(find(&captured, request.as_bytes()).is_none());
    assert!(
        registrations >= 2,
        "the server did not register again from its new address:\n{}",
        nat.log("relay.namesock")
    );
}

/// A relay found by name (`namesock relay --name hub`, `NAMESOCK_RELAY=hub`): an impostor
/// with another key at the address hub's record gives is refused (no proof, no registration)
/// while it answers there; the real relay back at that address is found again and carries a
/// download by name to the server behind the NAT, intact; when the relay moves, the server
/// finds it at its new address (republished record) and lists that in its own.
#[test]
fn a_relay_found_by_name_carries_the_download_and_an_impostor_at_its_address_is_refused() {
    let name =
        "a_relay_found_by_name_carries_the_download_and_an_impostor_at_its_address_is_refused";
    if !ready(name) {
        return;
    }
    let size = 8 << 20;
    let mut nat = Nat::new("relay-named", size, 1);
    nat.masquerade_server();
    // The real relay publishes hub's record (its address) and binds the name, then stops.
    let real = nat.start_relay_as(0, "relay", &["--name", "hub"]);
    nat.wait_for_log("relay.namesock", "relay record published");
    let relay_guid = nat
        .world
        .wait_for_record("hub", Duration::from_secs(10), |r| {
            r.locators
                .iter()
                .any(|l| *l == SocketAddr::from((nat.relays[0].v4(), RELAY_PORT)))
        });
    let relay_guid = relay_guid
        .unwrap_or_else(|e| panic!("{e}\n{}", nat.logs()))
        .guid;
    drop(real);

    // An impostor with its own key answers at that address.
    let impostor = nat.start_relay_as(0, "impostor", &[]);
    nat.spawn_server("hub");
    nat.wait_for_log("server.namesock", "refusing the relay");
    let refused = nat.log("server.namesock");
    assert!(
        refused.contains(&relay_guid.to_string()),
        "the refusal does not name the GUID hub resolved to:\n{refused}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let impostor_log = nat.log("impostor.namesock");
    assert!(
        !impostor_log.contains("server registered"),
        "the impostor got a registration:\n{impostor_log}"
    );
    let refusals = nat
        .log("server.namesock")
        .matches("refusing the relay")
        .count();
    assert!(
        !nat.log("server.namesock")
            .contains("registered with the relay"),
        "the server registered with the impostor:\n{}",
        nat.logs()
    );
    drop(impostor);

    // The real relay back: found again by name (the link re-resolves at every attempt).
    nat.relay_processes
        .push(Some(nat.start_relay_as(0, "relay", &["--name", "hub"])));
    nat.wait_for_log("server.namesock", "registered with the relay relay=hub");
    let outcome = Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
        .expect("start curl")
        .finish(Duration::from_secs(120))
        .expect("curl ran");
    assert!(
        outcome.complete(),
        "download incomplete: {outcome}
{}",
        nat.logs()
    );
    assert!(
        nat.log("relay.namesock").contains("splice started"),
        "the download did not go through the named relay:\n{}",
        nat.logs()
    );

    // The relay moves: it republishes hub's record, and the server finds it again by name,
    // registers at its new address and lists that address in its own record.
    let moved_at = Instant::now();
    let (v4, _) = nat.relays[0].move_to_new_subnet().expect("the relay moves");
    let at = SocketAddr::from((v4, RELAY_PORT));
    let relisted = nat
        .world
        .wait_for_record("web", Duration::from_secs(30), |r| r.relays.contains(&at));
    if let Err(e) = relisted {
        panic!("{e}\n{}", nat.logs());
    }
    nat.wait_for_log(
        "server.namesock",
        &format!("registered with the relay relay=hub addr=Some({at})"),
    );
    let found_again = moved_at.elapsed();
    let again = Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
        .expect("start curl")
        .finish(Duration::from_secs(120))
        .expect("curl ran");
    assert!(
        again.complete(),
        "download after the relay moved incomplete: curl {:?}, {} of {} bytes\n{}",
        again.status,
        again.bytes,
        again.expected_bytes,
        nat.logs()
    );
    eprintln!(
        "RELAY named: impostor refused {refusals} times in its ~1 s at hub's address, no \
         registration; then {} bytes by name through hub in {:.2} s, sha256 ok; hub moved: \
         found again and listed in web's record after {:.2} s, {} bytes through it, sha256 ok",
        outcome.bytes,
        outcome.elapsed.as_secs_f64(),
        found_again.as_secs_f64(),
        again.bytes
    );
}

/// Speaks the relay protocol from `host` with python3: sends `preamble`, reads the 129-byte
/// challenge, answers it with what `proof` makes of it, and returns what the relay answered
/// (hex) and the challenge.
fn attempt(
    nat: &Nat,
    preamble: &[u8],
    proof: impl FnOnce(&[u8; wire::NONCE_LEN]) -> [u8; wire::PROOF_LEN],
) -> Vec<u8> {
    let script = "import socket,sys\n\
        s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=10)\n\
        s.sendall(bytes.fromhex(sys.argv[3]))\n\
        c=b''\n\
        while len(c)<129:\n\
        \x20   d=s.recv(129-len(c))\n\
        \x20   if not d: break\n\
        \x20   c+=d\n\
        sys.stdout.write(c.hex()+'\\n'); sys.stdout.flush()\n\
        p=sys.stdin.readline().strip()\n\
        s.sendall(bytes.fromhex(p))\n\
        r=b''\n\
        while True:\n\
        \x20   d=s.recv(64)\n\
        \x20   if not d: break\n\
        \x20   r+=d\n\
        sys.stdout.write(r.hex()+'\\n')\n";
    let mut child = nat
        .client
        .command("python3")
        .args([
            "-c",
            script,
            &nat.relays[0].v4().to_string(),
            &RELAY_PORT.to_string(),
        ])
        .arg(hex(preamble))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("challenge");
    let challenge = unhex(line.trim());
    assert_eq!(
        challenge.len(),
        wire::MAX_DOWN_LEN,
        "no challenge from the relay"
    );
    let nonce: [u8; wire::NONCE_LEN] = challenge[1..33].try_into().expect("nonce");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", hex(&proof(&nonce))).expect("send the proof");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("answer");
    let _ = child.wait();
    unhex(line.trim())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn a_registration_for_someone_elses_guid_is_refused() {
    let name = "a_registration_for_someone_elses_guid_is_refused";
    if !ready(name) {
        return;
    }
    let nat = Nat::behind_relays("relay-auth", 256 * 1024, 1, &[]);
    // What a user sees: the record lists the relay.
    let namesock = nat.world.tools.namesock.to_string_lossy().into_owned();
    let resolve = nat
        .world
        .with_namesock_env(
            &nat.client,
            "resolve",
            &[namesock.as_str(), "resolve", "web"],
        )
        .expect("resolve")
        .status()
        .expect("namesock resolve ran");
    assert!(resolve.success());
    let relay_line = format!("relay    {}:{RELAY_PORT}", nat.relays[0].v4());
    assert!(
        nat.log("resolve").contains(&relay_line),
        "{}",
        nat.log("resolve")
    );
    let victim = Keypair::load_or_create(&nat.world.path("keys").join("server.key"))
        .expect("the server's key");
    let relay_guid = Keypair::load_or_create(&nat.world.path("keys").join("relay.key"))
        .expect("the relay's key")
        .guid();
    let attacker = Keypair::generate();
    let preamble = |key: &Keypair| {
        let mut out = Vec::new();
        Preamble::Register {
            guid: victim.guid(),
            key: *key.public().as_bytes(),
            nonce: rand::random(),
        }
        .encode(&mut out);
        out
    };
    let refused = |reason: wire::RefuseReason| vec![0x83, reason as u8];

    // The victim's GUID with the attacker's own key, properly signed by it.
    let answer = attempt(&nat, &preamble(&attacker), |nonce| {
        wire::prove(&attacker, nonce, &relay_guid)
    });
    assert_eq!(answer, refused(wire::RefuseReason::KeyMismatch));
    // The victim's GUID and public key, with a proof the attacker cannot make.
    let answer = attempt(&nat, &preamble(&victim), |nonce| {
        wire::prove(&attacker, nonce, &relay_guid)
    });
    assert_eq!(answer, refused(wire::RefuseReason::BadSignature));
    // A real proof of the victim, recorded for an earlier challenge, replayed.
    let recorded = wire::prove(&victim, &[0x5a; wire::NONCE_LEN], &relay_guid);
    let answer = attempt(&nat, &preamble(&victim), |_| recorded);
    assert_eq!(answer, refused(wire::RefuseReason::BadSignature));
    let relay_log = nat.log("relay.namesock");
    assert_eq!(
        relay_log.matches("registration of").count(),
        3,
        "{relay_log}"
    );
    assert_eq!(
        relay_log.matches("server registered").count(),
        1,
        "{relay_log}"
    );

    // The server's own registration still holds: a download by name goes through the relay.
    let outcome = Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
        .expect("start curl")
        .finish(Duration::from_secs(60))
        .expect("curl ran");
    assert!(outcome.complete(), "download failed\n{}", nat.logs());
    nat.wait_for_log("relay.namesock", "splice started");
    eprintln!(
        "RELAY auth: 3 forged registrations refused (key mismatch, bad signature, replayed proof); \
         the server's download through the relay: {} bytes, sha256 ok",
        outcome.bytes
    );
}

/// Runs a download of the served file by name through the relays, calling each of `moves` in
/// turn at an even share of the file; checks it intact; returns the outages (ms).
/// What happens during a download, and its name.
type Change<'a> = (&'a str, &'a dyn Fn(&Nat));

fn download_across(nat: &Nat, moves: &[Change]) -> Vec<u128> {
    let mut download =
        Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
            .expect("start curl");
    let step = nat.served.size / (moves.len() as u64 + 1);
    for (i, (what, change)) in moves.iter().enumerate() {
        download
            .wait_for_bytes(&nat.world, step * (i as u64 + 1), Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("before {what}: {e}\n{}", nat.logs()));
        download.mark_move();
        change(nat);
        eprintln!("{what}");
    }
    let outcome = download.finish(Duration::from_secs(120)).expect("curl ran");
    assert!(
        outcome.complete(),
        "download incomplete: {outcome}
{}",
        nat.logs()
    );
    outcome.outages().iter().map(|d| d.as_millis()).collect()
}

#[test]
fn client_moves_and_both_moving_at_once_keep_a_relayed_download() {
    let name = "client_moves_and_both_moving_at_once_keep_a_relayed_download";
    if !ready(name) {
        return;
    }
    let nat = Nat::behind_relays("relay-moves", 32 << 20, 1, &[]);
    nat.server.limit_rate(Some(64_000)).expect("rate limit");
    let outages = download_across(
        &nat,
        &[
            ("the client moved", &|n: &Nat| {
                n.client.move_to_new_subnet().expect("client moves");
            }),
            ("both moved at once", &|n: &Nat| {
                n.client.move_to_new_subnet().expect("client moves");
                n.server.move_to_new_subnet().expect("server moves");
            }),
        ],
    );
    eprintln!(
        "RELAY moves: {} bytes through the relay, sha256 ok, outages (client move, both at \
         once) {outages:?} ms",
        nat.served.size
    );
}

#[test]
fn a_relay_that_dies_leaves_the_server_reachable_through_the_other() {
    let name = "a_relay_that_dies_leaves_the_server_reachable_through_the_other";
    if !ready(name) {
        return;
    }
    let mut nat = Nat::behind_relays("relay-dies", 16 << 20, 2, &[]);
    nat.server.limit_rate(Some(64_000)).expect("rate limit");
    let first = std::cell::RefCell::new(nat.relay_processes[0].take());
    let outages = download_across(
        &nat,
        &[("the first relay was killed", &|_: &Nat| {
            if let Some(mut p) = first.borrow_mut().take() {
                p.kill();
            }
        })],
    );
    assert!(
        nat.log("relay.namesock").contains("splice started"),
        "the download did not start through the first relay:\n{}",
        nat.logs()
    );
    assert!(
        nat.log("relay2.namesock").contains("splice started"),
        "the download did not go on through the second relay:\n{}",
        nat.logs()
    );
    eprintln!(
        "RELAY failover: {} bytes, sha256 ok, the first of two relays killed mid-transfer, \
         outage {outages:?} ms",
        nat.served.size
    );
}

#[test]
fn a_relays_bandwidth_limit_holds_a_relayed_download_to_its_rate() {
    let name = "a_relays_bandwidth_limit_holds_a_relayed_download_to_its_rate";
    if !ready(name) {
        return;
    }
    let rate = 1_000_000u64;
    let nat = Nat::behind_relays(
        "relay-rate",
        4 << 20,
        1,
        &["--max-session-rate", &rate.to_string()],
    );
    let outcome = Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
        .expect("start curl")
        .finish(Duration::from_secs(60))
        .expect("curl ran");
    assert!(
        outcome.complete(),
        "relayed download failed\n{}",
        nat.logs()
    );
    let measured = outcome.bytes as f64 / outcome.elapsed.as_secs_f64();
    eprintln!(
        "RELAY rate limit: {} bytes at {measured:.0} B/s through a relay limited to {rate} B/s",
        outcome.bytes
    );
    // An upper bound only (a slow machine stays under it): one splice buffer of burst, and
    // the handshake's bytes, are all the limit lets through beyond the rate.
    assert!(
        measured <= rate as f64 * 1.15,
        "{measured:.0} B/s through a relay limited to {rate} B/s"
    );
}

#[test]
fn two_programs_of_one_identity_share_its_relays_without_displacing_each_other() {
    let name = "two_programs_of_one_identity_share_its_relays_without_displacing_each_other";
    if !ready(name) {
        return;
    }
    let nat = Nat::behind_relays("relay-two", 4 << 20, 1, &[]);
    // A second program of the same identity (the web server's key), with the same relays.
    let relay_addr = format!("{}:{RELAY_PORT}", nat.relays[0].v4());
    let mut echo = nat
        .world
        .namesock_run(&nat.server, "echo", &["python3", "-c", ECHO_SERVER])
        .expect("echo server");
    echo.env("NAMESOCK_KEY", nat.world.path("keys").join("server.key"))
        .env("NAMESOCK_RELAY", &relay_addr);
    let _echo = Process::spawn(echo).expect("start the echo server");
    nat.wait_for_log(
        "echo.namesock",
        "another program of this identity registers with the relays",
    );
    // Long enough for displacements to show: a link re-registers 100 ms after it is dropped.
    std::thread::sleep(Duration::from_secs(2));
    let outcome = Download::start(&nat.world, &nat.client, "client", &nat.fetch(), &nat.served)
        .expect("start curl")
        .finish(Duration::from_secs(60))
        .expect("curl ran");
    assert!(
        outcome.complete(),
        "relayed download failed\n{}",
        nat.logs()
    );
    let server_log = nat.log("server.namesock");
    assert_eq!(
        server_log.matches("registered with the relay").count(),
        1,
        "the web server's registration was displaced:\n{}",
        nat.logs()
    );
    assert!(!server_log.contains("relay control connection ended"));
    assert!(
        !nat.log("echo.namesock")
            .contains("registered with the relay"),
        "both programs registered"
    );
    eprintln!(
        "RELAY two programs: one registration, {} bytes through the relay intact",
        outcome.bytes
    );
}

/// A python3 echo server on port 9000 (under namesock as `echo`), and a client that measures
/// the median round trip of one byte (`rtt N`) or holds N connections open (`hold N`).
const ECHO_SERVER: &str = "import socket,threading\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
s.bind(('0.0.0.0',9000)); s.listen(256)\n\
def h(c):\n\
\x20   while True:\n\
\x20       d=c.recv(65536)\n\
\x20       if not d: break\n\
\x20       c.sendall(d)\n\
while True:\n\
\x20   c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()\n";
const ECHO_CLIENT: &str = "import socket,sys,time\n\
mode,n=sys.argv[1],int(sys.argv[2])\n\
def conn():\n\
\x20   c=socket.create_connection(('echo.ns.alt',9000),timeout=30)\n\
\x20   c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1); return c\n\
if mode=='rtt':\n\
\x20   c=conn(); ts=[]\n\
\x20   for i in range(n):\n\
\x20       t=time.perf_counter(); c.sendall(b'x'); c.recv(1); ts.append(time.perf_counter()-t)\n\
\x20   ts.sort(); print('rtt_us %d' % (ts[len(ts)//2]*1e6), flush=True)\n\
else:\n\
\x20   import concurrent.futures as f\n\
\x20   cs=list(f.ThreadPoolExecutor(n).map(lambda _: conn(), range(n)))\n\
\x20   for c in cs: c.sendall(b'x'); c.recv(1)\n\
\x20   print('open', flush=True); sys.stdin.readline()\n";

/// The relay process's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("relay status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

impl Nat {
    /// The median round trip of one byte over one session to the echo server (µs).
    fn echo_rtt(&self, label: &str) -> u64 {
        let mut command = self
            .world
            .namesock_run(
                &self.client,
                label,
                &["python3", "-c", ECHO_CLIENT, "rtt", "500"],
            )
            .expect("echo client");
        command.stdout(Stdio::piped());
        let out = command.output().expect("echo client ran");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("rtt_us "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no RTT from the echo client: {text}\n{}", self.logs()))
    }

    fn splices(&self) -> usize {
        self.log("relay.namesock").matches("splice started").count()
    }
}

#[test]
fn figures_relay_against_direct_throughput_rtt_and_memory() {
    let name = "figures_relay_against_direct_throughput_rtt_and_memory";
    if !ready(name) {
        return;
    }
    let mut nat = Nat::new("relay-figures", 64 << 20, 1);
    nat.start_relays(&[]);
    nat.start_server();
    let relay_addr = format!("{}:{RELAY_PORT}", nat.relays[0].v4());
    let mut echo = nat
        .world
        .namesock_run(&nat.server, "echo", &["python3", "-c", ECHO_SERVER])
        .expect("echo server");
    // 100 sessions of one client at once, all arriving from the relay's address: above the
    // default per-peer and per-source bounds (issue 15), raised here for the measurement.
    echo.env("NAMESOCK_NAME", "echo")
        .env("NAMESOCK_RELAY", &relay_addr)
        .env("NAMESOCK_MAX_SESSIONS_PER_PEER", "200")
        .env("NAMESOCK_MAX_PREAUTH_PER_SOURCE", "200");
    let _echo = Process::spawn(echo).expect("start the echo server");
    nat.world
        .wait_for_record("echo", Duration::from_secs(30), |r| !r.relays.is_empty())
        .expect("echo published");

    let throughput = |label: &str| {
        let outcome = Download::start(&nat.world, &nat.client, label, &nat.fetch(), &nat.served)
            .expect("start curl")
            .finish(Duration::from_secs(120))
            .expect("curl ran");
        assert!(
            outcome.complete(),
            "{label} download failed\n{}",
            nat.logs()
        );
        outcome.bytes as f64 / outcome.elapsed.as_secs_f64() / 1e6
    };
    // Direct: the server's addresses answer, the relay carries nothing.
    let direct_mbs = throughput("direct");
    let direct_rtt = nat.echo_rtt("rtt-direct");
    assert_eq!(nat.splices(), 0, "a direct path went through the relay");
    // Relayed: the NAT admits nothing, every session goes through the relay.
    nat.masquerade_server();
    let relayed_mbs = throughput("relayed");
    let relayed_rtt = nat.echo_rtt("rtt-relayed");
    let relayed_splices = nat.splices();
    assert!(
        relayed_splices >= 2,
        "the relayed runs did not go through the relay"
    );

    // Memory: the relay's resident set with 100 idle relayed sessions, against none.
    let pid = nat.relay_processes[0].as_ref().expect("relay").id();
    let before = rss_kib(pid);
    let sessions = 100;
    let mut hold = nat
        .world
        .namesock_run(
            &nat.client,
            "hold",
            &["python3", "-c", ECHO_CLIENT, "hold", &sessions.to_string()],
        )
        .expect("hold client");
    hold.stdout(Stdio::piped()).stdin(Stdio::piped());
    let mut holder = hold.spawn().expect("start the holding client");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("holder output");
    assert_eq!(
        line.trim(),
        "open",
        "the holding client failed\n{}",
        nat.logs()
    );
    let during = rss_kib(pid);
    let spliced = nat.splices() - relayed_splices;
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert!(
        spliced >= sessions,
        "{spliced} splices for {sessions} held sessions"
    );
    let per_session = during.saturating_sub(before) as f64 / sessions as f64;
    eprintln!(
        "RELAY figures: throughput direct {direct_mbs:.0} MB/s, relayed {relayed_mbs:.0} MB/s \
         ({:.0} %); median RTT of 1 byte direct {direct_rtt} us, relayed {relayed_rtt} us \
         (+{} us); relay RSS {before} KiB idle, {during} KiB with {sessions} relayed sessions: \
         {per_session:.1} KiB per session",
        100.0 * relayed_mbs / direct_mbs,
        relayed_rtt.saturating_sub(direct_rtt),
    );
    // The relay's own bound: two 64 KiB buffers and two 64 KiB stacks per splice (an idle
    // session touches little of them).
    assert!(
        per_session < 256.0,
        "{per_session:.1} KiB per relayed session: more than the relay's buffers and stacks"
    );
}

/// Distinct established connections to `port` on `host`, sampled every 50 ms until `stop`.
fn watch_connections(
    host: &Host,
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<HashSet<String>> {
    let host = host.clone();
    std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let filter = format!("( sport = :{port} )");
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(out) = host.run(
                &["ss", "-Htn", "state", "established", &filter],
                Duration::from_secs(5),
            ) {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    // Local and peer address: the last two columns.
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    if cols.len() >= 2 {
                        seen.insert(cols[cols.len() - 2..].join(" "));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    })
}

#[test]
fn a_plain_server_sees_one_connection_across_two_client_moves_through_the_proxy() {
    let name = "a_plain_server_sees_one_connection_across_two_client_moves_through_the_proxy";
    if !ready(name) || !require_tools(name, &["ss"]) {
        return;
    }
    let size = 32 << 20;
    let mut nat = Nat::new("relay-proxy", size, 1);
    let keys = nat.world.path("keys");
    let client_guid = Keypair::load_or_create(&keys.join("client.key"))
        .expect("client key")
        .guid()
        .to_string();
    let relay_guid = Keypair::load_or_create(&keys.join("relay.key"))
        .expect("relay key")
        .guid();
    let allow_dest = format!("{}/32", nat.server.v4());
    nat.start_relays(&[
        "--proxy-port",
        "1080",
        "--allow-client",
        &client_guid,
        "--allow-dest",
        &allow_dest,
    ]);
    nat.wait_for_log("relay.namesock", "proxy relay serving");
    // A server without namesock.
    let www = nat.world.path("www");
    let port = PORT.to_string();
    let argv = [
        "python3",
        "-u",
        "-m",
        "http.server",
        &port,
        "--directory",
        &www.to_string_lossy(),
    ];
    let command = nat
        .world
        .plain(&nat.server, "server", &argv)
        .expect("server");
    nat.server_process = Some(Process::spawn(command).expect("start python3"));
    nat.wait_for_log("server", "Serving HTTP");
    nat.server.limit_rate(Some(64_000)).expect("rate limit");

    let namesock = nat.world.tools.namesock.to_string_lossy().into_owned();
    let via = format!("{relay_guid}.ns.alt:1080");
    let url = format!("http://{}:{PORT}{}", nat.server.v4(), nat.served.url_path);
    let curl = |label: &str, out: &std::path::Path, max_time: &str| {
        let out = out.to_string_lossy().into_owned();
        let argv = [
            namesock.as_str(),
            "run",
            "--via",
            &via,
            "--",
            "curl",
            "-sS",
            "--fail",
            "-o",
            &out,
            "--max-time",
            max_time,
            &url,
        ];
        nat.world
            .with_namesock_env(&nat.client, label, &argv)
            .expect("curl command")
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_connections(&nat.server, PORT, stop.clone());
    let out = nat.world.path("client.out");
    let mut download =
        Download::spawn(curl("client", &out, "120"), "client", out, &nat.served).expect("curl");
    for (i, share) in [3u64, 6].iter().enumerate() {
        download
            .wait_for_bytes(&nat.world, size * share / 10, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("before move {}: {e}\n{}", i + 1, nat.logs()));
        download.mark_move();
        nat.client.move_to_new_subnet().expect("client moves");
    }
    let outcome = download.finish(Duration::from_secs(120)).expect("curl ran");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let connections = watcher.join().expect("watcher");
    assert!(
        outcome.complete(),
        "download through the proxy incomplete: {outcome}\n{}",
        nat.logs()
    );
    let requests = nat.log("server").matches("GET /").count();
    assert_eq!(
        connections.len(),
        1,
        "the server saw these connections: {connections:?}"
    );
    assert_eq!(requests, 1, "{}", nat.log("server"));
    let relay_ip = nat.relays[0].v4().to_string();
    let from_relay = |c: &String| {
        c.split_whitespace()
            .last()
            .is_some_and(|peer| peer.starts_with(&format!("{relay_ip}:")))
    };
    assert!(
        connections.iter().all(from_relay),
        "the server's connection did not come from the relay ({relay_ip}): {connections:?}"
    );
    let outages: Vec<u128> = outcome.outages().iter().map(|d| d.as_millis()).collect();

    // A client that is not on the allow list gets nothing through.
    let stranger_out = nat.world.path("stranger.out");
    let status = curl("stranger", &stranger_out, "10")
        .status()
        .expect("stranger's curl ran");
    assert!(!status.success(), "a client off the allow list was served");
    assert!(
        nat.log("relay.namesock")
            .contains("proxy client not on the allow list"),
        "{}",
        nat.logs()
    );
    assert_eq!(
        nat.log("server").matches("GET /").count(),
        1,
        "the stranger's request reached the server"
    );
    eprintln!(
        "RELAY proxy: {} bytes from a plain python3 http.server through the proxy relay, sha256 \
         ok, 2 client moves, outages {outages:?} ms; the server saw {} connection(s) and {requests} \
         request(s); a client off the allow list refused (curl {status})",
        outcome.bytes,
        connections.len()
    );
}
