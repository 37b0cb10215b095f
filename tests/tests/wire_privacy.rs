//! What an observer on the path sees: tcpdump on the test bed's router while `curl` downloads a
//! random file by name from `python3 -m http.server` (both under namesock). The capture must
//! hold no 32-byte window of the file and no HTTP request line. The same capture of the same
//! download in plain TCP (curl to the server's address, no namesock) is the control: there the
//! file's bytes are found, so the check can fail.
//!
//! Needs root, `ip`, `nft`, `tcpdump`, `curl`, `python3` and a release build (tests/run.sh).

use std::time::Duration;

use namesock_cli::testbed::scenario::{Fetch, Timers};
use namesock_tests::capture::{Capture, WINDOW, find, windows_found};
use namesock_tests::{PORT, Scenario, require_namespaces, require_release, require_tools};

const FILE_SIZE: u64 = 512 * 1024;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[test]
fn a_capture_on_the_path_holds_no_window_of_the_file_and_no_request_line() {
    let name = "a_capture_on_the_path_holds_no_window_of_the_file_and_no_request_line";
    if !require_namespaces(name)
        || !require_release(name, "the preload")
        || !require_tools(name, &["tcpdump", "curl", "python3"])
    {
        return;
    }
    let scenario = Scenario::new("capture", FILE_SIZE, Timers::fast());
    let router = scenario.bed.router_namespace();
    let file = std::fs::read(scenario.world.path("www").join("file")).expect("the served file");
    assert_eq!(file.len() as u64, FILE_SIZE);
    let request = format!("GET {}", scenario.served.url_path);

    // By name, through namesock.
    let pcap = scenario.world.path("namesock.pcap");
    let capture = Capture::start(&router, &pcap);
    let download = scenario.download("curl", &scenario.fetch(Duration::from_secs(60)));
    let outcome = download.finish(Duration::from_secs(90)).expect("curl ran");
    scenario.check("curl", &outcome);
    let captured = capture.finish(&pcap);
    let found = windows_found(&file, &captured);
    eprintln!(
        "CAPTURE namesock: {} bytes captured for a {FILE_SIZE}-byte file, {found} of its {}-byte \
         windows found, request line found: {}",
        captured.len(),
        WINDOW,
        contains(&captured, request.as_bytes())
    );
    assert!(
        captured.len() as u64 > FILE_SIZE,
        "the transfer did not cross the router ({} bytes captured)",
        captured.len()
    );
    assert_eq!(found, 0, "windows of the file crossed the path in clear");
    assert!(
        !contains(&captured, request.as_bytes()),
        "the request line crossed the path in clear"
    );

    // The control: the same download in plain TCP, to the program's own socket.
    let pcap = scenario.world.path("plain.pcap");
    let capture = Capture::start(&router, &pcap);
    let plain = Fetch {
        url: format!(
            "http://{}:{PORT}{}",
            scenario.server.v4(),
            scenario.served.url_path
        ),
        rate: None,
        max_time: Duration::from_secs(60),
        namesock: false,
    };
    let outcome = scenario
        .download("plain", &plain)
        .finish(Duration::from_secs(90))
        .expect("curl ran");
    scenario.check("plain", &outcome);
    let captured = capture.finish(&pcap);
    let found = windows_found(&file, &captured);
    eprintln!(
        "CAPTURE plain TCP (control): {} bytes captured, {found} windows found",
        captured.len()
    );
    assert!(
        found > file.len() / 2,
        "the control found only {found} windows: the check could not see cleartext"
    );
    assert!(contains(&captured, request.as_bytes()));
}
