//! The preload's headline, in network namespaces: unmodified `curl` downloads 100 MiB from an
//! unmodified `python3 -m http.server` (both under `namesock run`), once by name and once by
//! GUID literal at the same time, while the server's address changes mid-download; and again
//! while the client's changes. Both copies must match byte for byte (SHA-256).
//!
//! Needs root (network namespaces); skipped otherwise. The tools come from this build's
//! `target/<profile>/` (tests/run.sh builds them).

use std::time::Duration;

use namesock_cli::testbed::scenario::{Download, Fetch, Timers, ZONE};
use namesock_tests::{PORT, Scenario, require_root};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 100 * MIB;
/// The server's links (shared by both downloads): slow enough that the move lands
/// mid-download, fast enough for a test.
const RATE: u64 = 16 * MIB;
const MAX_TIME: Duration = Duration::from_secs(180);

/// Starts the two downloads (by name, by GUID literal), waits for 30 % of the first, runs
/// `moves`, then checks both copies.
fn two_downloads_across_a_move(name: &str, moves: impl Fn(&Scenario)) {
    let scenario = Scenario::new(name, SIZE, Timers::fast());
    let record = scenario
        .world
        .wait_for_record("web", Duration::from_secs(30), |_| true)
        .expect("web's record");
    scenario.limit_server(RATE);
    let by_name = scenario.fetch(MAX_TIME);
    let by_guid = Fetch {
        url: format!(
            "http://{}.{ZONE}:{PORT}{}",
            record.guid, scenario.served.url_path
        ),
        ..by_name.clone()
    };
    let mut downloads: Vec<Download> = [("by-name", &by_name), ("by-guid", &by_guid)]
        .into_iter()
        .map(|(label, fetch)| scenario.download(label, fetch))
        .collect();
    scenario.wait_for_fraction(&mut downloads[0], 0.3, Duration::from_secs(90));
    for download in &mut downloads {
        download.mark_move();
    }
    moves(&scenario);
    for download in downloads {
        let label = download.label().to_owned();
        let outcome = download.finish(MAX_TIME).expect("download result");
        scenario.check(&label, &outcome);
    }
}

#[test]
fn curl_100_mib_survives_the_server_moving() {
    if !require_root("curl_100_mib_survives_the_server_moving") {
        return;
    }
    two_downloads_across_a_move("pl-server", |s| {
        s.server.move_to_new_subnet().expect("move the server");
    });
}

#[test]
fn curl_100_mib_survives_the_client_moving() {
    if !require_root("curl_100_mib_survives_the_client_moving") {
        return;
    }
    two_downloads_across_a_move("pl-client", |s| {
        s.client.move_to_new_subnet().expect("move the client");
    });
}
