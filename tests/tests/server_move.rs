//! The client engine watches the file store for its peers' records, so that a server that
//! moved is followed as soon as it republishes (`namesock/src/engine/record_watch.rs`). The
//! watch is an attack surface: anyone who can write into the store can make a client read a
//! record. Here forged, tampered, garbage and stale records are written into the store
//! during an unmodified `curl` download from `python3 -m http.server` (both under the preload,
//! namesock's default timers): none redirects the session (a listener at the address they
//! name sees no connection), each is refused by the verified read (the client's log says so),
//! the download completes intact, and a genuine move in between is still followed.
//!
//! The outage of a server move on default timers is measured in `mobility.rs`
//! (`curl_server_moves_once_on_default_timers`). Needs root, `ip`, `nft`, `curl`, `python3`
//! and a release build; otherwise it reports a skip.
//!
//! Run: `cargo test --release -p namesock-tests --test server_move`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock_cli::testbed::Process;
use namesock_cli::testbed::scenario::Timers;
use namesock_resolver::Record;
use namesock_resolver::record::{RECORD_LIFETIME, encode_locator, unix_now, unix_now_micros};
use namesock_tests::{Scenario, require_namespaces, require_release, require_tools};

const MIB: u64 = 1 << 20;
/// Where the forged records point: a listener on the server's host that is not namesock.
const TRAP_PORT: u16 = 9999;

/// Replaces `dir/name` by a rename, as the store's writers do (the watch sees the rename).
fn write_record(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".tmp.attacker.{name}"));
    std::fs::write(&tmp, bytes).expect("write the temporary");
    std::fs::rename(&tmp, dir.join(name)).expect("rename into the store");
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn replaced(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("the field to tamper with");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

fn locator_bytes(addr: SocketAddr) -> Vec<u8> {
    let mut out = Vec::new();
    encode_locator(&mut out, &addr);
    out
}

#[test]
fn forged_tampered_and_stale_records_in_the_store_do_not_redirect_a_live_session() {
    const NAME: &str = "forged_tampered_and_stale_records";
    if !require_namespaces(NAME)
        || !require_release(NAME, "the download takes minutes in a debug build")
        || !require_tools(NAME, &["curl", "python3"])
    {
        return;
    }
    let tag = format!("forged-rec-{:04x}", std::process::id() & 0xffff);
    let scenario = Scenario::new(&tag, 16 * MIB, Timers::default());
    scenario.limit_server(2 * MIB);
    let trap_out = scenario.world.path("trap.out");
    let trap_script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET6)\n\
         s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n\
         s.bind(('::', {TRAP_PORT}))\n\
         s.listen(8)\n\
         print('listening', flush=True)\n\
         while True:\n\
         \x20   c, a = s.accept()\n\
         \x20   print('connected', a, flush=True)\n"
    );
    let mut trap = scenario.server.command("python3");
    trap.args(["-c", &trap_script])
        .stdout(std::fs::File::create(&trap_out).expect("trap output"))
        .stderr(Stdio::null());
    let _trap = Process::spawn(trap).expect("the trap listener");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&trap_out)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(Instant::now() < deadline, "the trap listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut download = scenario.download("by-name", &scenario.fetch(Duration::from_secs(120)));
    scenario.wait_for_fraction(&mut download, 0.2, Duration::from_secs(60));
    let records = scenario.world.path("gns").join("records");
    let genuine = scenario
        .world
        .wait_for_record("web", Duration::from_secs(5), |_| true)
        .expect("web's record");
    let file = genuine.guid.to_string();
    let genuine_bytes = std::fs::read(records.join(&file)).expect("the genuine record file");
    let trap = SocketAddr::new(scenario.server.v4().into(), TRAP_PORT);
    let newer = genuine.seq + 1_000_000;

    // 1. A record signed by another key, filed under the server's GUID, pointing at the trap.
    let attacker = Keypair::generate();
    let forged = Record::sign(
        &attacker,
        unix_now_micros(),
        unix_now() + RECORD_LIFETIME.as_secs(),
        &[trap],
        &["web.ns.alt".to_owned()],
    )
    .expect("sign the forged record");
    // 2. The genuine record with its locator and sequence changed: the signature breaks.
    let locator = *genuine.locators.first().expect("a locator");
    let tampered = replaced(
        &replaced(
            &genuine_bytes,
            &locator_bytes(locator),
            &locator_bytes(SocketAddr::new(locator.ip(), TRAP_PORT)),
        ),
        &genuine.seq.to_be_bytes(),
        &newer.to_be_bytes(),
    );
    // 3. Garbage.
    let garbage: Vec<u8> = (0..200).map(|_| rand::random::<u8>()).collect();
    download.mark_move();
    for bytes in [forged.encode(), tampered, garbage] {
        write_record(&records, &file, &bytes);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The store is the user's: put the genuine record back before the server republishes.
    write_record(&records, &file, &genuine_bytes);

    // 4. A genuine move in between is still followed.
    scenario.wait_for_fraction(&mut download, 0.5, Duration::from_secs(60));
    download.mark_move();
    scenario
        .server
        .move_to_new_subnet()
        .expect("move the server");

    // 5. The old genuine record once the server republished: stale (rolled back), refused.
    scenario.wait_for_fraction(&mut download, 0.75, Duration::from_secs(60));
    let moved = scenario
        .world
        .wait_for_record("web", Duration::from_secs(5), |r| r.seq > genuine.seq)
        .expect("the server's new record");
    assert!(moved.locators.iter().all(|l| !genuine.locators.contains(l)));
    download.mark_move();
    write_record(&records, &file, &genuine_bytes);
    std::thread::sleep(Duration::from_millis(300));

    let outcome = download
        .finish(Duration::from_secs(120))
        .expect("download result");
    scenario.check("by-name", &outcome);
    let trapped = std::fs::read_to_string(&trap_out).unwrap_or_default();
    assert!(
        !trapped.contains("connected"),
        "a forged record made the client dial the trap: {trapped}"
    );
    let log = std::fs::read_to_string(scenario.world.log("by-name.namesock")).unwrap_or_default();
    let refused = log.matches("does not verify: ignored").count();
    assert!(
        refused >= 4,
        "each forged, tampered, garbage and stale record is read and refused; {refused} \
         refusals logged\n{}",
        scenario.logs("by-name")
    );
    let outages: Vec<u128> = outcome.outages().iter().map(Duration::as_millis).collect();
    eprintln!(
        "SERVER_MOVE {NAME}: forged records written, a genuine move, a stale record: outages \
         {outages:?} ms, {refused} refusals logged, trap connections 0"
    );
    // Loose: the genuine move did not wait out the 15 s path-dead time, and the attacks
    // cost nothing a transfer would notice as more than a pause.
    for (i, outage) in outcome.outages().iter().enumerate() {
        assert!(
            *outage < Duration::from_secs(2),
            "change {i}: outage {outage:?}; all {outages:?} ms"
        );
    }
}
