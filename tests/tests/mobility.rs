//! Mobility in network namespaces, as one table: each row is a scenario (who moves, how, how
//! often), the program that transfers meanwhile, and what must hold. Every transfer is checked
//! byte for byte (SHA-256), and every change's outage (the longest time the received data did
//! not grow after it) must stay within the row's bounds; each row prints a `MOBILITY` line with
//! the outages it measured.
//!
//! Programs:
//! - `Engine`: the `nsbench` example (namesock's `TcpListener`/`TcpStream`, in-process engine)
//!   sending 64 MiB each way at once, paced at 16 MiB/s; outages are the worse direction's.
//! - `Curl`: unmodified `curl` downloading from an unmodified `python3 -m http.server`, both
//!   under the preload (`namesock run`); optionally a second download by GUID literal at once.
//! - `CFiles`: the C examples `file_send` -> `file_recv` (the native C API).
//!
//! Hosts `server` and `client` hang off a router; the bed is named `nst-<row>-<pid>` and removed
//! when the row ends, passed or failed. Needs root, `ip` and `nft`, and a release build
//! (`tests/run.sh`); otherwise each row reports a skip (tests/src/skip.rs). The timers are
//! `Timers::fast()` (keepalive 300 ms, path-dead 1.5 s, namesock's linger) unless a row says.
//! `NAMESOCK_TEST_KEEP=1` keeps the work directories (logs, GNS).
//!
//! Run: `tests/run.sh mobility`, or
//! `cargo test --release -p namesock-tests --test mobility -- --test-threads=2`.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use namesock::identity::Keypair;
use namesock::wire::Frame;
use namesock_cli::testbed::scenario::{Download, Fetch, Timers, ZONE, sha256_file};
use namesock_cli::testbed::{Host, Process, Progress, Testbed, median, stalls};
use namesock_resolver::{Gns, Target};
use namesock_tests::{PORT, Scenario, require_namespaces, require_release, require_tools};

const MIB: u64 = 1 << 20;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ------------------------------------------------------------------------------ the table

/// The hosts a change acts on.
struct Hosts<'a> {
    bed: &'a Testbed,
    server: &'a Host,
    client: &'a Host,
}

/// What transfers while the hosts change.
#[derive(Clone, Copy)]
enum Program {
    /// `nsbench` both ways: 64 MiB each way at 16 MiB/s.
    Engine,
    /// `curl` from `python3 -m http.server` under the preload: `size` bytes, the server's
    /// links limited to `rate` bytes/s (if any); `by_guid_too` adds a second download of the
    /// same file by GUID literal, at the same time.
    Curl {
        size: u64,
        rate: Option<u64>,
        by_guid_too: bool,
    },
    /// `file_send` (client) -> `file_recv` (server) of the C examples, `size` bytes, the
    /// client's links limited to 40 Mbit/s.
    CFiles { size: u64 },
}

/// When the changes happen.
#[derive(Clone, Copy)]
enum When {
    /// `n` times during the transfer, the i-th once `(i + 1) / (n + 2)` of it arrived.
    During(usize),
    /// Once, after the server published its record and before the client connects: the
    /// record the client reads first may be stale. Its outage is the wait for the first byte.
    BeforeConnect,
}

/// What must hold.
#[derive(Clone, Copy)]
enum Expect {
    /// Every byte arrives, and each change's outage is at least `min` and less than `max`.
    Outage { min: Duration, max: Duration },
    /// The client is cut off for good (`change` cuts it): the programs see their connection
    /// reset, not before `not_before` (the linger) and within `within` of the cut; nothing
    /// hangs.
    Reset {
        not_before: Duration,
        within: Duration,
    },
}

/// Each change's outage is under `max`.
const fn under(max_ms: u64) -> Expect {
    Expect::Outage {
        min: Duration::ZERO,
        max: Duration::from_millis(max_ms),
    }
}

/// One scenario.
struct Row {
    /// What happens, in words (printed with the outages).
    what: &'static str,
    program: Program,
    timers: Timers,
    /// Runs once the hosts exist, before any program starts.
    prepare: fn(&Hosts),
    when: When,
    /// The i-th change.
    change: fn(&Hosts, usize),
    expect: Expect,
}

const ENGINE: Program = Program::Engine;
const CURL_16: Program = Program::Curl {
    size: 16 * MIB,
    rate: Some(2 * MIB),
    by_guid_too: false,
};
const CURL_24: Program = Program::Curl {
    size: 24 * MIB,
    rate: Some(2 * MIB),
    by_guid_too: false,
};
const CURL_100_TWICE: Program = Program::Curl {
    size: 100 * MIB,
    rate: Some(16 * MIB),
    by_guid_too: true,
};

fn fast() -> Timers {
    Timers::fast()
}

fn nothing(_: &Hosts) {}

fn client_second_link(h: &Hosts) {
    h.client.add_link().expect("second client link");
}

fn two_percent_loss(h: &Hosts) {
    h.bed.add_loss(2.0).expect("2% loss at the router");
}

fn client_moves(h: &Hosts, _: usize) {
    h.client.move_to_new_subnet().expect("move the client");
}

fn server_moves(h: &Hosts, _: usize) {
    h.server.move_to_new_subnet().expect("move the server");
}

fn both_move(h: &Hosts, _: usize) {
    std::thread::scope(|scope| {
        scope.spawn(|| h.server.move_to_new_subnet().expect("move the server"));
        h.client.move_to_new_subnet().expect("move the client");
    });
}

/// The old address works for 3 s after the new one appears: the server can tell its clients
/// where it went (MOVED) before the old path dies.
fn server_moves_with_overlap(h: &Hosts, _: usize) {
    h.server
        .move_link_with_overlap(0, secs(3))
        .expect("move the server");
}

/// A second link comes up; 1 s later the first goes down.
fn server_adds_a_link_then_loses_the_first(h: &Hosts, _: usize) {
    h.server.add_link().expect("second server link");
    std::thread::sleep(secs(1));
    h.server.link_down(0).expect("first server link down");
}

fn client_loses_first_link(h: &Hosts, _: usize) {
    h.client.link_down(0).expect("first client link down");
}

fn client_cut_3_s(h: &Hosts, _: usize) {
    h.client.cut().expect("cut the client");
    std::thread::sleep(secs(3));
    h.client.restore().expect("restore the client");
}

fn client_cut_30_s(h: &Hosts, _: usize) {
    h.client.cut().expect("cut the client");
    std::thread::sleep(secs(30));
    h.client.restore().expect("restore the client");
}

fn client_cut_for_good(h: &Hosts, _: usize) {
    h.client.cut().expect("cut the client");
}

fn client_server_client_move(h: &Hosts, i: usize) {
    let host = if i == 1 { h.server } else { h.client };
    host.move_to_new_subnet().expect("move");
}

fn client_then_server_move(h: &Hosts, i: usize) {
    let host = if i == 0 { h.client } else { h.server };
    host.move_to_new_subnet().expect("move");
}

/// One `#[test]` per row, named after it (so that a failure names the scenario and rows run
/// in parallel).
macro_rules! scenarios {
    ($($name:ident: $row:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), &$row);
            }
        )*
    };
}

scenarios! {
    // --- the engine API (nsbench, both ways at once)
    engine_client_moves: Row {
        what: "the client moves to a new subnet",
        program: ENGINE, timers: fast(), prepare: nothing,
        when: When::During(1), change: client_moves, expect: under(1000),
    };
    engine_server_moves: Row {
        what: "the server moves to a new subnet and republishes",
        program: ENGINE, timers: fast(), prepare: nothing,
        when: When::During(1), change: server_moves, expect: under(2000),
    };
    engine_server_adds_a_link_then_loses_the_first: Row {
        what: "make before break: a second server link, the first goes down 1 s later",
        program: ENGINE, timers: fast(), prepare: nothing,
        when: When::During(1), change: server_adds_a_link_then_loses_the_first,
        expect: under(2000),
    };
    engine_both_move_at_once: Row {
        what: "client and server move at the same moment",
        program: ENGINE, timers: fast(), prepare: nothing,
        when: When::During(1), change: both_move, expect: under(3000),
    };
    engine_one_of_two_client_links_goes_down: Row {
        what: "the client has a standby link; its first link goes down",
        program: ENGINE, timers: fast(), prepare: client_second_link,
        when: When::During(1), change: client_loses_first_link, expect: under(1000),
    };
    engine_client_cut_3_s_shorter_than_the_linger: Row {
        what: "the client is unreachable 3 s (> path-dead, < linger), then back",
        program: ENGINE, timers: fast(), prepare: nothing,
        when: When::During(1), change: client_cut_3_s,
        expect: Expect::Outage { min: ms(2900), max: ms(5000) },
    };
    engine_peer_never_returns_is_reset_after_the_linger: Row {
        what: "the client is cut for good; linger 3 s, path-dead 1 s",
        program: ENGINE,
        timers: Timers { keepalive_ms: Some(250), path_dead_ms: Some(1000), linger_ms: Some(3000), ..fast() },
        prepare: nothing,
        when: When::During(1), change: client_cut_for_good,
        expect: Expect::Reset { not_before: ms(3000), within: secs(10) },
    };

    // --- unmodified programs under the preload (curl from python3 -m http.server)
    curl_server_moves_before_the_client_connects: Row {
        what: "connection-time mobility: the server moves after publishing, before curl connects",
        program: Program::Curl { size: 4 * MIB, rate: None, by_guid_too: false },
        timers: fast(), prepare: nothing,
        when: When::BeforeConnect, change: server_moves, expect: under(2000),
    };
    curl_client_moves_once: Row {
        what: "the client moves once",
        program: CURL_16, timers: fast(), prepare: nothing,
        when: When::During(1), change: client_moves, expect: under(1000),
    };
    curl_client_moves_ten_times: Row {
        what: "the client moves ten times",
        program: CURL_24, timers: fast(), prepare: nothing,
        when: When::During(10), change: client_moves, expect: under(1000),
    };
    curl_server_moves_once: Row {
        what: "the server moves once",
        program: CURL_16, timers: fast(), prepare: nothing,
        when: When::During(1), change: server_moves, expect: under(2000),
    };
    // Default timers (keepalive 5 s, path-dead 15 s, suspicion 200 ms): the old address is
    // gone before a MOVED can leave it, so the client must learn the new record from the GNS;
    // under 2 s proves it did not wait out the path-dead time.
    curl_server_moves_once_on_default_timers: Row {
        what: "the server moves once; default timers",
        program: CURL_16, timers: Timers::default(), prepare: nothing,
        when: When::During(1), change: server_moves, expect: under(2000),
    };
    curl_server_moves_ten_times: Row {
        what: "the server moves ten times",
        program: CURL_24, timers: fast(), prepare: nothing,
        when: When::During(10), change: server_moves, expect: under(2000),
    };
    curl_server_moves_make_before_break: Row {
        what: "the server's old address works 3 s after the new one appears",
        program: CURL_16, timers: fast(), prepare: nothing,
        when: When::During(1), change: server_moves_with_overlap, expect: under(2000),
    };
    curl_both_move_at_once_twice: Row {
        what: "client and server move at the same moment, twice",
        program: CURL_16, timers: fast(), prepare: nothing,
        when: When::During(2), change: both_move, expect: under(3000),
    };
    curl_one_of_two_client_links_goes_down: Row {
        what: "the client has a standby link; its first link goes down",
        program: CURL_16, timers: fast(), prepare: client_second_link,
        when: When::During(1), change: client_loses_first_link, expect: under(1000),
    };
    curl_client_cut_30_s_shorter_than_the_linger: Row {
        what: "the client is unreachable 30 s (linger 60 s), then back",
        program: Program::Curl { size: 8 * MIB, rate: Some(MIB), by_guid_too: false },
        timers: Timers { linger_ms: Some(60_000), ..fast() }, prepare: nothing,
        when: When::During(1), change: client_cut_30_s,
        expect: Expect::Outage { min: secs(29), max: secs(33) },
    };
    curl_peer_never_returns_is_reset_after_the_linger: Row {
        what: "the client is cut for good (linger 4 s): curl sees a reset, the server lives on",
        program: Program::Curl { size: 8 * MIB, rate: Some(MIB), by_guid_too: false },
        timers: Timers { linger_ms: Some(4_000), ..fast() }, prepare: nothing,
        when: When::During(1), change: client_cut_for_good,
        expect: Expect::Reset { not_before: ms(4000), within: secs(15) },
    };
    curl_moves_with_2_percent_loss_on_every_path: Row {
        what: "2% loss at the router; client, server, client move",
        program: CURL_16, timers: fast(), prepare: two_percent_loss,
        when: When::During(3), change: client_server_client_move, expect: under(3000),
    };
    curl_100_mib_by_name_and_by_guid_server_moves: Row {
        what: "two 100 MiB downloads at once (by name, by GUID literal); the server moves",
        program: CURL_100_TWICE, timers: fast(), prepare: nothing,
        when: When::During(1), change: server_moves, expect: under(2000),
    };
    curl_100_mib_by_name_and_by_guid_client_moves: Row {
        what: "two 100 MiB downloads at once (by name, by GUID literal); the client moves",
        program: CURL_100_TWICE, timers: fast(), prepare: nothing,
        when: When::During(1), change: client_moves, expect: under(1000),
    };

    // --- the C API (examples-c)
    c_file_send_client_then_server_move: Row {
        what: "file_send -> file_recv; the client moves, then the server",
        program: Program::CFiles { size: 24 * MIB }, timers: fast(), prepare: nothing,
        when: When::During(2), change: client_then_server_move, expect: under(2000),
    };
}

// ---------------------------------------------------------------------------- the runner

/// Run `row` as test `name` (skipped, and saying so, where it cannot run).
fn run(name: &str, row: &Row) {
    if !require_namespaces(name)
        || !require_release(name, "the transfers take minutes in a debug build")
    {
        return;
    }
    let tools: &[&str] = match row.program {
        Program::Engine => &[],
        Program::Curl { .. } => &["curl", "python3"],
        Program::CFiles { .. } => &["make", "cc"],
    };
    if !require_tools(name, tools) {
        return;
    }
    // Bed names are short (`nst-<tag>-<pid>`, at most 40 characters) and unique per row: the
    // name's start and a hash of all of it.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let start: String = name.replace('_', "-").chars().take(20).collect();
    let tag = &format!("{}-{:04x}", start.trim_end_matches('-'), hash & 0xffff);
    let outages = match row.program {
        Program::Engine => run_engine(name, tag, row),
        Program::Curl {
            size,
            rate,
            by_guid_too,
        } => run_curl(name, tag, row, size, rate, by_guid_too),
        Program::CFiles { size } => run_c_files(tag, row, size),
    };
    if let Expect::Outage { min, max } = row.expect {
        let list: Vec<u128> = outages.iter().map(Duration::as_millis).collect();
        eprintln!(
            "MOBILITY {name}: {}: outages {list:?} ms, median {} ms, bounds [{}, {}) ms",
            row.what,
            median(&outages).as_millis(),
            min.as_millis(),
            max.as_millis()
        );
        let expected = match row.when {
            When::During(n) => n,
            When::BeforeConnect => 1,
        };
        assert_eq!(outages.len(), expected, "{name}: one outage per change");
        for (i, outage) in outages.iter().enumerate() {
            assert!(
                (min..max).contains(outage),
                "{name}: change {i}: outage {} ms outside [{}, {}) ms; all: {list:?} ms",
                outage.as_millis(),
                min.as_millis(),
                max.as_millis()
            );
        }
    }
}

/// Run `row.change` as `row.when` says, `arrived(fraction)` waiting for that much of the
/// transfer and `mark` noting the moment of a change; the marks.
fn changes<M>(
    row: &Row,
    hosts: &Hosts,
    mut arrived: impl FnMut(f64),
    mut mark: impl FnMut() -> M,
) -> Vec<M> {
    let When::During(n) = row.when else {
        unreachable!("changes before the connection are the runner's");
    };
    let mut marks = Vec::new();
    for i in 0..n {
        arrived((i + 1) as f64 / (n + 2) as f64);
        marks.push(mark());
        (row.change)(hosts, i);
    }
    marks
}

/// The engine rows: `nsbench` both ways; the outage of each change.
fn run_engine(name: &str, tag: &str, row: &Row) -> Vec<Duration> {
    const BYTES: u64 = 64 * MIB;
    const RATE: u64 = 16 * MIB;
    let scenario = Scenario::without_server(tag, 0, row.timers);
    let hosts = Hosts {
        bed: &scenario.bed,
        server: &scenario.server,
        client: &scenario.client,
    };
    (row.prepare)(&hosts);
    let dir = scenario.world.dir.path();
    let server = |p: PathBuf| scenario.server.command(p);
    let client = |p: PathBuf| scenario.client.command(p);
    let before_connect = |_: &str| {
        if let When::BeforeConnect = row.when {
            (row.change)(&hosts, 0);
        }
    };
    let mut transfer =
        Transfer::start_with(server, client, before_connect, dir, row.timers, BYTES, RATE);
    let marks = match row.when {
        When::BeforeConnect => vec![transfer.mark()],
        When::During(_) => changes(
            row,
            &hosts,
            |fraction| transfer.wait_for((BYTES as f64 * fraction) as u64),
            || transfer.mark(),
        ),
    };
    if let Expect::Reset { not_before, within } = row.expect {
        let cut = Instant::now();
        // The server's program must see a reset once path-dead + linger passed.
        let status = transfer
            .server
            .process
            .wait_timeout(within)
            .expect("wait for the server");
        let after = cut.elapsed();
        let err = std::fs::read_to_string(dir.join("srv.err")).unwrap_or_default();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{tag}: the server should fail within {within:?}\n{}",
            log_tail(dir, "srv")
        );
        assert!(
            err.to_lowercase().contains("reset"),
            "{tag}: the server program should see ECONNRESET, got: {err}"
        );
        assert!(
            after >= not_before,
            "{tag}: reset before the linger: {after:?}"
        );
        let client = transfer
            .client
            .process
            .wait_timeout(secs(20))
            .expect("wait for the client");
        assert!(
            client.is_some_and(|s| !s.success()),
            "{tag}: the client should fail"
        );
        eprintln!(
            "MOBILITY {name}: {}: the server's program saw the reset {} ms after the cut, \
             bounds [{}, {}) ms",
            row.what,
            after.as_millis(),
            not_before.as_millis(),
            within.as_millis()
        );
        return Vec::new();
    }
    let (outages, _) = transfer.finish(&marks);
    outages
}

/// The curl rows; the outage of each change (the worse download's).
fn run_curl(
    name: &str,
    tag: &str,
    row: &Row,
    size: u64,
    rate: Option<u64>,
    by_guid_too: bool,
) -> Vec<Duration> {
    const MAX_TIME: Duration = Duration::from_secs(180);
    let mut scenario = Scenario::new(tag, size, row.timers);
    let hosts = Hosts {
        bed: &scenario.bed,
        server: &scenario.server,
        client: &scenario.client,
    };
    (row.prepare)(&hosts);
    if let Some(rate) = rate {
        scenario.limit_server(rate);
    }
    let by_name = scenario.fetch(MAX_TIME);
    let mut fetches = vec![("by-name", by_name.clone())];
    if by_guid_too {
        let record = scenario
            .world
            .wait_for_record("web", secs(30), |_| true)
            .expect("web's record");
        let url = format!(
            "http://{}.{ZONE}:{PORT}{}",
            record.guid, scenario.served.url_path
        );
        fetches.push(("by-guid", Fetch { url, ..by_name }));
    }
    if let When::BeforeConnect = row.when {
        (row.change)(&hosts, 0);
    }
    let mut downloads: Vec<Download> = fetches
        .iter()
        .map(|(label, fetch)| scenario.download(label, fetch))
        .collect();
    match row.when {
        When::BeforeConnect => downloads.iter_mut().for_each(Download::mark_move),
        When::During(_) => {
            let first = RefCell::new(&mut downloads);
            changes(
                row,
                &hosts,
                |fraction| {
                    let mut downloads = first.borrow_mut();
                    scenario.wait_for_fraction(&mut downloads[0], fraction, secs(90));
                },
                || first.borrow_mut().iter_mut().for_each(Download::mark_move),
            );
        }
    }
    if let Expect::Reset { not_before, within } = row.expect {
        let mut download = downloads.pop().expect("one download");
        let cut_at = Instant::now();
        // curl must see the connection fail on its own; the cut stays until then.
        let ended = wait_until(within, || download.finished());
        scenario.client.restore().expect("restore the client");
        let failed_after = cut_at.elapsed();
        let outcome = download.finish(secs(5)).expect("download result");
        let logs = scenario.logs("by-name");
        assert!(
            ended,
            "{tag}: curl still running {failed_after:?} after the cut\n{logs}"
        );
        let status = outcome.status.expect("curl exited");
        assert!(
            !status.success(),
            "{tag}: curl succeeded through a cut longer than the linger"
        );
        // 56: failure receiving network data (the reset); 18: partial file.
        assert!(
            matches!(status.code(), Some(56 | 18)),
            "{tag}: curl should see a reset (exit 56), not {status}\n{logs}"
        );
        assert!(outcome.bytes < outcome.expected_bytes);
        assert!(
            failed_after >= not_before,
            "{tag}: curl failed {failed_after:?} after the cut, before the linger"
        );
        eprintln!(
            "MOBILITY {name}: {}: curl {status} {} ms after the cut, bounds [{}, {}) ms",
            row.what,
            failed_after.as_millis(),
            not_before.as_millis(),
            within.as_millis()
        );
        // The server lives on: a new download after the outage works.
        let server_alive = scenario
            .server_process
            .as_mut()
            .is_some_and(|p| matches!(p.try_wait(), Ok(None)));
        if !server_alive {
            scenario.start_server();
        }
        assert!(server_alive, "{tag}: the server died with the session");
        let again = scenario.download("again", &scenario.fetch(secs(60)));
        let outcome = again.finish(secs(70)).expect("second download");
        scenario.check("again", &outcome);
        return Vec::new();
    }
    let mut outages: Vec<Duration> = Vec::new();
    for download in downloads {
        let label = download.label().to_owned();
        let outcome = download.finish(MAX_TIME).expect("download result");
        scenario.check(&label, &outcome);
        let these = outcome.outages();
        outages.resize(these.len(), Duration::ZERO);
        for (worst, outage) in outages.iter_mut().zip(these) {
            *worst = (*worst).max(outage);
        }
    }
    outages
}

/// The C API row: `file_send` on the client to `file_recv` on the server.
fn run_c_files(tag: &str, row: &Row, size: u64) -> Vec<Duration> {
    const MAX_TIME: Duration = Duration::from_secs(150);
    // No web server: the C programs talk to each other.
    let scenario = Scenario::without_server(tag, size, row.timers);
    let hosts = Hosts {
        bed: &scenario.bed,
        server: &scenario.server,
        client: &scenario.client,
    };
    (row.prepare)(&hosts);
    let bin = scenario.world.path("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    let build = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(namesock_tests::workspace_dir().join("examples-c"))
        .arg(format!("LIBDIR={}", namesock_tests::build_dir().display()))
        .arg(format!("OUT={}", bin.display()))
        .arg(bin.join("file_send"))
        .arg(bin.join("file_recv"))
        .status()
        .expect("make");
    assert!(build.success(), "building examples-c failed");

    let received = scenario.world.path("received");
    let recv = bin.join("file_recv");
    let argv = [
        recv.to_str().unwrap(),
        "cweb",
        "9000",
        received.to_str().unwrap(),
    ];
    let _receiver = Process::spawn(
        scenario
            .world
            .with_namesock_env(&scenario.server, "receiver", &argv)
            .expect("receiver command"),
    )
    .expect("file_recv");
    let published = scenario
        .world
        .wait_for_locator("cweb", scenario.server.v4().into(), secs(30));
    if let Err(error) = published {
        panic!("{error}\n{}", scenario.world.log_tail("receiver", 30));
    }
    // 40 Mbit/s from the client: about 5 s for 24 MiB, time to move twice.
    scenario
        .client
        .limit_rate(Some(40_000))
        .expect("rate limit");
    let send = bin.join("file_send");
    let file = scenario.world.path("www").join("file");
    let argv = [
        send.to_str().unwrap(),
        "cweb",
        "9000",
        file.to_str().unwrap(),
    ];
    let progress = Progress::watch(received.clone(), ms(20));
    let mut sender = Process::spawn(
        scenario
            .world
            .with_namesock_env(&scenario.client, "sender", &argv)
            .expect("sender command"),
    )
    .expect("file_send");
    let moves = changes(
        row,
        &hosts,
        |fraction| {
            let due = (size as f64 * fraction) as u64;
            let arrived = wait_until(secs(60), || progress.bytes() >= due);
            assert!(arrived, "{}", scenario.world.log_tail("sender", 30));
        },
        || progress.now(),
    );
    let status = sender.wait_timeout(MAX_TIME).expect("wait for file_send");
    let end = progress.now();
    let samples = progress.finish();
    let logs = format!(
        "{}\n{}",
        scenario.world.log_tail("sender", 30),
        scenario.world.log_tail("receiver", 30)
    );
    let status = status.unwrap_or_else(|| panic!("file_send still running\n{logs}"));
    assert!(status.success(), "file_send: {status}\n{logs}");
    assert_eq!(
        sha256_file(&received).expect("received file"),
        scenario.served.sha256,
        "received file differs"
    );
    stalls(&samples, &moves, end, size)
        .iter()
        .map(|s| s.longest)
        .collect()
}

/// Poll `condition` every 50 ms for up to `timeout`.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(ms(50));
    }
}

// ------------------------------------------------------------------ the engine's transfer

/// The `nsbench` example of this build. `cargo test` of the workspace (`tests/run.sh`) builds
/// it; when it is missing or older than a source it is built from (`cargo test` of this crate
/// alone builds no other package's examples), it is built here, once per test binary. Not
/// always: `cargo build -p namesock --example nsbench` resolves features differently from
/// `cargo test --workspace` and rebuilds part of the workspace each time (about 45 s here).
/// `NSBENCH=/path` overrides it.
fn nsbench() -> PathBuf {
    static NSBENCH: OnceLock<PathBuf> = OnceLock::new();
    NSBENCH
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("NSBENCH") {
                return path.into();
            }
            let dir = namesock_tests::build_dir();
            let nsbench = dir.join("examples/nsbench");
            let workspace = namesock_tests::workspace_dir();
            let sources = [
                "namesock/src",
                "namesock/examples",
                "identity/src",
                "resolver/src",
            ]
            .iter()
            .filter_map(|krate| newest(&workspace.join(krate)))
            .max();
            let built = nsbench.metadata().and_then(|m| m.modified()).ok();
            if built.is_some_and(|built| sources.is_none_or(|source| built >= source)) {
                return nsbench;
            }
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-q", "-p", "namesock", "--example", "nsbench"])
                .current_dir(&workspace);
            if dir.file_name().is_some_and(|n| n == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build of the nsbench example failed"
            );
            nsbench
        })
        .clone()
}

/// The newest modification time of the `.rs` files under `dir`.
fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let kind = entry.file_type().ok()?;
            if kind.is_dir() {
                newest(&path)
            } else if path.extension().is_some_and(|e| e == "rs") {
                entry.metadata().and_then(|m| m.modified()).ok()
            } else {
                None
            }
        })
        .max()
}

/// The namesock environment of an `nsbench` process.
fn env(cmd: &mut Command, dir: &Path, role: &str, timers: Timers) {
    cmd.env(
        "NAMESOCK_GNS",
        format!("file:{}", dir.join("gns").display()),
    )
    .env("NAMESOCK_ZONE", ZONE)
    .env("NAMESOCK_KNOWN_NAMES", dir.join("known_names"))
    .env("NAMESOCK_KEY", dir.join(format!("{role}.key")))
    .env("NAMESOCK_CONNECT_TIMEOUT_MS", "10000")
    .env("NAMESOCK_LOG", "namesock=debug")
    .env("NAMESOCK_LOG_FILE", dir.join(format!("{role}.log")))
    // The tests on this host's loopback put a relay there in front of the server and
    // publish it: a lab on one host, where loopback locators are meant.
    .env("NAMESOCK_DIAL_LOOPBACK", "true");
    for (var, value) in [
        ("NAMESOCK_KEEPALIVE_MS", timers.keepalive_ms),
        ("NAMESOCK_PATH_DEAD_MS", timers.path_dead_ms),
        ("NAMESOCK_LINGER_MS", timers.linger_ms),
    ] {
        if let Some(value) = value {
            cmd.env(var, value.to_string());
        }
    }
}

/// A running nsbench process and its stdout lines.
struct Bench {
    process: Process,
    lines: Receiver<String>,
    role: &'static str,
}

impl Bench {
    fn spawn(mut cmd: Command, dir: &Path, role: &'static str) -> Bench {
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
    /// `srv`/`cli` make the command that runs a program where that side lives;
    /// `before_client` runs once the server is ready (with its GUID).
    fn start_with(
        srv: impl Fn(PathBuf) -> Command,
        cli: impl Fn(PathBuf) -> Command,
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
        cmd.args(["serve", "8000"]).args(common("2", "srv.recv"));
        env(&mut cmd, dir, "srv", t);
        let server = Bench::spawn(cmd, dir, "srv");
        let ready = server
            .line("ready ", secs(20))
            .unwrap_or_else(|| panic!("server not ready\n{}", log_tail(dir, "srv")));
        let guid = ready.trim_start_matches("ready ").trim().to_owned();
        before_client(&guid);
        let to_client = Progress::watch(dir.join("cli.recv"), ms(2));
        let to_server = Progress::watch(dir.join("srv.recv"), ms(2));
        let mut cmd = cli(nsbench());
        cmd.args(["connect", &format!("{guid}.{ZONE}:8000")])
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
                p.wait_for_bytes(bytes, secs(30)),
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
            let line = b.line("done ", secs(180));
            let status = b.process.wait_timeout(secs(40)).unwrap();
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
        // The client process's one connect started its engine beside its own lookup of the
        // server and took that lookup's record (`namesock::engine::connect_fd`).
        let log = std::fs::read_to_string(self.dir.join("cli.log")).unwrap_or_default();
        assert_eq!(
            log.matches("record the program's own lookup verified: no lookup")
                .count(),
            1,
            "{}",
            log_tail(&self.dir, "cli")
        );
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

// ------------------------------------------------------- beside the table: not mobility

/// Namesock's relay against plain TCP over the same veth and router (a figure, printed).
#[test]
fn engine_relay_throughput_beside_plain_tcp() {
    let name = "engine_relay_throughput_beside_plain_tcp";
    if !require_namespaces(name) || !require_release(name, "2 x 64 MiB through nsbench") {
        return;
    }
    const BYTES: u64 = 64 * MIB;
    let scenario = Scenario::without_server("engine-throughput", 0, fast());
    let (srv, cli) = (&scenario.server, &scenario.client);
    let dir = scenario.world.dir.path();
    let mut cmd = srv.command(nsbench());
    cmd.args(["plain-serve", "9000", "--bytes", &BYTES.to_string()]);
    let mut server = Bench::spawn(cmd, dir, "plainsrv");
    server.line("ready", secs(10)).unwrap();
    let mut cmd = cli.command(nsbench());
    cmd.args([
        "plain-connect",
        &format!("{}:9000", srv.v4()),
        "--bytes",
        &BYTES.to_string(),
    ]);
    let mut client = Bench::spawn(cmd, dir, "plaincli");
    let plain = parse_done(&client.line("done", secs(120)).unwrap());
    assert_eq!(plain.recv, BYTES);
    client.process.wait_timeout(secs(10)).unwrap();
    server.process.wait_timeout(secs(10)).unwrap();
    // The same through the engines (no pacing).
    let t = Transfer::start_with(
        |p| srv.command(p),
        |p| cli.command(p),
        |_| {},
        dir,
        fast(),
        BYTES,
        0,
    );
    let (_, ns_secs) = t.finish(&[]);
    let mib = (2 * BYTES) as f64 / MIB as f64;
    eprintln!(
        "FIGURE throughput (2 x {} MiB at once over veth+router): plain TCP {:.3} s = {:.0} MiB/s, \
         namesock {:.3} s = {:.0} MiB/s, ratio {:.2}",
        BYTES / MIB,
        plain.secs,
        mib / plain.secs,
        ns_secs,
        mib / ns_secs,
        plain.secs / ns_secs
    );
}

/// Plain TCP beside namesock, on the same hosts, is untouched.
#[test]
fn plain_tcp_beside_namesock_is_untouched() {
    let name = "plain_tcp_beside_namesock_is_untouched";
    if !require_namespaces(name) || !require_tools(name, &["curl", "python3"]) {
        return;
    }
    let scenario = Scenario::new("legacy", 8 * MIB, fast());
    let world = &scenario.world;
    // A plain server (no namesock) beside the namesock one, on the same host.
    let www = world.path("www");
    let plain_port = (PORT + 1).to_string();
    let argv = [
        "python3",
        "-m",
        "http.server",
        &plain_port,
        "--directory",
        www.to_str().expect("utf-8 path"),
    ];
    let _plain_server = Process::spawn(
        world
            .plain(&scenario.server, "plainserver", &argv)
            .expect("plain server command"),
    )
    .expect("plain server");
    let server_ip = scenario.server.v4();
    let by_address = |port: u16, namesock: bool| Fetch {
        url: format!("http://{server_ip}:{port}{}", scenario.served.url_path),
        rate: None,
        max_time: secs(60),
        namesock,
    };
    wait_for_port(&scenario, PORT + 1);
    let downloads = [
        // namesock to namesock, by name
        ("byname", scenario.fetch(secs(60))),
        // a plain client to the namesock server's own port: plain TCP
        ("plaintonamesock", by_address(PORT, false)),
        // a namesock client to an address outside the zone: plain TCP
        ("namesocktoplain", by_address(PORT + 1, true)),
        // plain to plain, beside it all
        ("plaintoplain", by_address(PORT + 1, false)),
    ];
    let started: Vec<(&str, Download)> = downloads
        .iter()
        .map(|(label, fetch)| (*label, scenario.download(label, fetch)))
        .collect();
    for (label, download) in started {
        let outcome = download.finish(secs(70)).expect("download result");
        scenario.check(label, &outcome);
    }
}

/// Wait (at most 20 s) until the server host accepts TCP connections on `port`.
fn wait_for_port(scenario: &Scenario, port: u16) {
    let probe = format!(
        "import socket; socket.create_connection(('{}', {port}), timeout=1).close()",
        scenario.server.v4()
    );
    let ok = wait_until(secs(20), || {
        scenario
            .client
            .run(&["python3", "-c", &probe], secs(5))
            .is_ok_and(|o| o.status.success())
    });
    assert!(ok, "nothing listens on port {port} of the server");
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

/// Points the server's record at a relay listening on loopback (the test holds the server's
/// key file): the relay's listener, and the server engine's own address.
fn relay_in_front(gns_dir: &Path, key_path: &Path, guid: &str) -> (TcpListener, SocketAddr) {
    let guid: namesock::identity::Guid = guid.parse().unwrap();
    let gns = Gns::file(gns_dir, ZONE).unwrap();
    let rec = gns.resolve(&Target::Guid(guid)).unwrap();
    // The record lists no loopback address: the engine port comes from its service map.
    let engine_port = rec.services.as_ref().unwrap().entries()[0].1;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, engine_port));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let relay = listener.local_addr().unwrap();
    let key = Keypair::load(key_path).unwrap();
    gns.publish(&key, &[relay], &[]).unwrap();
    (listener, server)
}

/// Sends `bytes` as a fresh path to the server's engine; returns what it answered before
/// closing the path.
fn attack(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// On this host's loopback (no namespaces): the client reaches the server through an on-path
/// relay (this test) that sees every byte, as an attacker on the path would; forged and
/// replayed RESUME and HELLO frames must not disturb the session.
#[test]
fn engine_third_party_resume_cannot_disturb_the_session() {
    let name = "engine_third_party_resume_cannot_disturb_the_session";
    if !require_release(name, "2 x 64 MiB through nsbench") {
        return;
    }
    const BYTES: u64 = 64 * MIB;
    let dir = tempfile::Builder::new()
        .prefix("engine-resume-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let gns_dir = dir.path().join("gns");
    let cap = Arc::new(Mutex::new(Captured::default()));
    let engine = Arc::new(Mutex::new(None::<SocketAddr>));
    let (cap2, engine2) = (cap.clone(), engine.clone());
    let key_path = dir.path().join("srv.key");
    let local = |p: PathBuf| Command::new(p);
    let t = Transfer::start_with(
        local,
        local,
        |guid| {
            let (listener, server) = relay_in_front(&gns_dir, &key_path, guid);
            *engine2.lock().unwrap() = Some(server);
            std::thread::spawn(move || proxy(listener, server, 8 * MIB, cap2));
        },
        dir.path(),
        fast(),
        BYTES,
        16 * MIB,
    );
    let server = engine.lock().unwrap().unwrap();
    // Wait for the client's genuine RESUME after the relay killed its first path.
    let deadline = Instant::now() + secs(30);
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
        std::thread::sleep(ms(20));
    };
    // 1. A forged RESUME with the captured connection ID.
    let mut forged = Vec::new();
    Frame::<Vec<u8>>::Resume(namesock::wire::Resume {
        conn_id,
        freshness: u64::MAX,
        sealed: [7; namesock::wire::RESUME_SEALED_LEN],
    })
    .encode(&mut forged);
    // 2. The genuine RESUME, replayed. 3. The genuine HELLO, replayed.
    for (what, bytes) in [
        ("forged RESUME", forged),
        ("replayed RESUME", resume),
        ("replayed HELLO", hello.clone()),
    ] {
        // Not a byte back: no HELLO_ACK, no (sealed) RESUME_ACK, no REFUSE.
        let answer = attack(server, &bytes);
        assert!(answer.is_empty(), "{what} was answered: {answer:?}");
        eprintln!("{what}: the server closed the path without a word");
    }
    // 4. A protocol-1 peer (the captured HELLO with version 1): the one refusal it
    // understands, a version-1 RESET(Protocol), and nothing else.
    let mut old = hello.clone();
    old[namesock::wire::HEADER_LEN + 4] = 1;
    let answer = attack(server, &old);
    assert_eq!(
        answer,
        namesock::wire::VERSION_1_REFUSAL,
        "a version-1 HELLO"
    );
    eprintln!("version-1 HELLO: refused with the version-1 RESET(Protocol)");
    // The session goes on, intact.
    let (_, secs) = t.finish(&[]);
    eprintln!("third-party resumes: session finished intact in {secs:.2} s");
}

// ------------------------------------------------------------------ injection on the path

/// What an on-path attacker writes into a live path, toward the server or the client.
#[derive(Clone, Copy, Debug)]
enum Injection {
    /// Bytes inserted between two records.
    Insert { to_server: bool, what: &'static str },
    /// The next two client records swapped.
    Reorder,
    /// Half of the next client record, then the path cut.
    Truncate,
}

/// The bytes of an inserted attack.
fn injected(what: &str) -> Vec<u8> {
    let mut out = Vec::new();
    match what {
        "RESET in clear" => Frame::<Vec<u8>>::Reset {
            reason: namesock::wire::ResetReason::AppAbort,
        }
        .encode(&mut out),
        "MOVED in clear, sequence 2^64-1" => Frame::<Vec<u8>>::Moved {
            seq: u64::MAX,
            locators: vec!["192.0.2.66:9".parse().unwrap()],
        }
        .encode(&mut out),
        "DATA in clear" => Frame::<Vec<u8>>::Data {
            offset: 0,
            ack: 0,
            payload: b"injected".to_vec(),
        }
        .encode(&mut out),
        _ => {
            // A SEALED record of random-looking bytes: injected DATA, as far as anyone
            // without the keys can make one.
            out.extend_from_slice(&[13, 0, 0, 0, 64]);
            out.extend((0..64u8).map(|i| i.wrapping_mul(151).wrapping_add(7)));
        }
    }
    out
}

/// Splits whole records off the front of `buf`.
fn whole_records(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    while buf.len() >= 5 {
        let len = 5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < len {
            break;
        }
        records.push(buf.drain(..len).collect());
    }
    records
}

/// Forwards paths to the server's engine record by record; the next of `attacks` goes to
/// each path that carries a record (not to a connection that stays silent, as a client's
/// spare path does until it is used), and is carried out once `after` bytes went to the
/// server on it, then forwarding goes on, so that the end that receives the attack is the
/// one to close the path. Counts the attacks carried out.
fn injecting_proxy(
    listener: TcpListener,
    server: SocketAddr,
    after: u64,
    attacks: Vec<Injection>,
    done: Arc<Mutex<Vec<Injection>>>,
) {
    let attacks = Arc::new(Mutex::new(std::collections::VecDeque::from(attacks)));
    for conn in listener.incoming() {
        let Ok(client) = conn else { return };
        let Ok(upstream) = TcpStream::connect(server) else {
            return;
        };
        let attacks = attacks.clone();
        // Attacks toward the client go into the server -> client copy.
        let pending = Arc::new(Mutex::new(None::<Vec<u8>>));
        let (c2, u2, down) = (
            client.try_clone().unwrap(),
            upstream.try_clone().unwrap(),
            pending.clone(),
        );
        std::thread::spawn(move || {
            let (mut from, mut to) = (u2, c2);
            let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
            while let Ok(n) = from.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                for record in whole_records(&mut buf) {
                    if let Some(bytes) = down.lock().unwrap().take()
                        && to.write_all(&bytes).is_err()
                    {
                        return;
                    }
                    if to.write_all(&record).is_err() {
                        return;
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut from, mut to) = (client, upstream);
            let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
            let (mut total, mut attack) = (0u64, None);
            let mut held: Option<Vec<u8>> = None;
            while let Ok(n) = from.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                for record in whole_records(&mut buf) {
                    if total == 0 {
                        attack = attacks.lock().unwrap().pop_front();
                    }
                    total += record.len() as u64;
                    let mut out = record;
                    if total >= after
                        && let Some(a) = attack.take()
                    {
                        done.lock().unwrap().push(a);
                        match a {
                            Injection::Insert {
                                to_server: true,
                                what,
                            } => {
                                let mut bytes = injected(what);
                                bytes.extend_from_slice(&out);
                                out = bytes;
                            }
                            Injection::Insert {
                                to_server: false,
                                what,
                            } => {
                                *pending.lock().unwrap() = Some(injected(what));
                            }
                            Injection::Reorder => {
                                held = Some(out);
                                continue;
                            }
                            Injection::Truncate => {
                                let _ = to.write_all(&out[..out.len() / 2]);
                                let _ = from.shutdown(Shutdown::Both);
                                let _ = to.shutdown(Shutdown::Both);
                                return;
                            }
                        }
                    }
                    if to.write_all(&out).is_err() {
                        return;
                    }
                    if let Some(first) = held.take()
                        && to.write_all(&first).is_err()
                    {
                        return;
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
        });
    }
}

/// On this host's loopback: an on-path attacker between client and server (this test) writes
/// forged frames into live paths in both directions, swaps records and cuts one short. Each
/// attack costs the path it was written into (the receiving end cannot open it, or refuses a
/// frame in clear), never the session: both 64 MiB streams arrive intact.
#[test]
fn engine_frames_forged_on_the_path_cost_a_path_never_the_session() {
    let name = "engine_frames_forged_on_the_path_cost_a_path_never_the_session";
    if !require_release(name, "2 x 64 MiB through nsbench") {
        return;
    }
    const BYTES: u64 = 64 * MIB;
    let dir = tempfile::Builder::new()
        .prefix("engine-inject-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let gns_dir = dir.path().join("gns");
    let attacks = vec![
        Injection::Insert {
            to_server: true,
            what: "RESET in clear",
        },
        Injection::Insert {
            to_server: false,
            what: "RESET in clear",
        },
        Injection::Insert {
            to_server: false,
            what: "MOVED in clear, sequence 2^64-1",
        },
        Injection::Insert {
            to_server: true,
            what: "DATA in clear",
        },
        Injection::Insert {
            to_server: true,
            what: "SEALED garbage",
        },
        Injection::Insert {
            to_server: false,
            what: "SEALED garbage",
        },
        Injection::Reorder,
        Injection::Truncate,
    ];
    let expected = attacks.len();
    let done = Arc::new(Mutex::new(Vec::new()));
    let done2 = done.clone();
    let key_path = dir.path().join("srv.key");
    let local = |p: PathBuf| Command::new(p);
    let t = Transfer::start_with(
        local,
        local,
        |guid| {
            let (listener, server) = relay_in_front(&gns_dir, &key_path, guid);
            std::thread::spawn(move || injecting_proxy(listener, server, 4 * MIB, attacks, done2));
        },
        dir.path(),
        fast(),
        BYTES,
        16 * MIB,
    );
    let (_, secs) = t.finish(&[]);
    let done = done.lock().unwrap().clone();
    eprintln!(
        "on-path injection: {} attacks ({done:?}), each cost one path; both streams intact in \
         {secs:.2} s",
        done.len()
    );
    assert_eq!(
        done.len(),
        expected,
        "not every attack found a path to ride"
    );
}
