//! The seccomp supervisor with real static and Go programs, in network namespaces: `namesock
//! run` notices that the preload cannot reach them and supervises them instead (no flag).
//!
//! - A static busybox `wget` and a static Go HTTP client (built here with `CGO_ENABLED=0`,
//!   standard library only) each download a 24 MiB file by name from `python3 -m http.server`
//!   (under the preload) while the server, then the client moves to a new subnet; the file arrives intact, and a
//!   capture of port 53 on the client's host (tcpdump) shows that no query for the zone left it
//!   while a query for an ordinary name, looked up by a supervised program, did (so the
//!   capture sees what it should).
//! - A static server (busybox `httpd`) under the supervisor, served by name: curl under the
//!   preload downloads from it by name, a supervised busybox `wget` by GUID literal, and a
//!   connect to a port it does not serve fails with "Connection refused".
//! - A supervised program's connect to a plain address is untouched: the download works and
//!   the supervisor's engine never starts.
//! - DNS sent with `sendto` on an unconnected socket (musl's way): a query naming the zone is
//!   not sent (ENETUNREACH), an ordinary one is (tcpdump).
//!
//! Needs root, `ip`, `nft`, busybox (static), go, tcpdump, curl, python3, cc (with the static C
//! library) and a release build
//! (`tests/run.sh`); otherwise each test reports a skip. `NAMESOCK_TEST_KEEP=1` keeps the
//! work directories.
//!
//! Run: `cargo test --release -p namesock-tests --test supervisor`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use namesock_cli::testbed::scenario::{Download, Timers, ZONE};
use namesock_cli::testbed::{Host, Process};
use namesock_tests::{PORT, Scenario, require_namespaces, require_release, require_tools};

const MIB: u64 = 1 << 20;
/// The file the clients download across a move.
const BIG: u64 = 24 * MIB;
/// The server's links are limited to this, so that the download lasts a few seconds.
const RATE: u64 = 6 * MIB;
const MAX_TIME: Duration = Duration::from_secs(120);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn fast() -> Timers {
    Timers::fast()
}

/// True when everything the supervisor tests need is here; otherwise a skip.
fn ready(test: &str, tools: &[&str]) -> bool {
    require_namespaces(test)
        && require_release(test, "namespace scenarios run the release build")
        && require_tools(test, tools)
}

/// The static busybox (Debian's busybox-static installs it as /bin/busybox).
fn busybox() -> PathBuf {
    let path = PathBuf::from("/bin/busybox");
    let kind = elf_kind(&path);
    assert!(
        kind == "static",
        "{}: expected a statically linked busybox (package busybox-static), got {kind}",
        path.display()
    );
    path
}

/// What `namesock run` will take a program for, from the ELF header (as the supervisor's
/// detection does, checked independently here): "static", "dynamic" or "other".
fn elf_kind(path: &Path) -> &'static str {
    let bytes = std::fs::read(path).expect("read the program");
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return "other";
    }
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([bytes[54], bytes[55]]) as usize;
    let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
    let interp = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) == 3
    });
    if interp { "dynamic" } else { "static" }
}

/// The Go HTTP client: GET argv[1] into the file argv[2].
const GO_CLIENT: &str = r#"package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "get:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "status:", resp.Status)
		os.Exit(1)
	}
	out, err := os.Create(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		fmt.Fprintln(os.Stderr, "copy:", err)
		os.Exit(1)
	}
	if err := out.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"#;

/// Builds the Go client in `dir` (offline, standard library only, its own cache).
fn build_go_client(dir: &Path) -> PathBuf {
    let src = dir.join("get.go");
    std::fs::write(&src, GO_CLIENT).expect("write the Go source");
    let bin = dir.join("get");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .output()
        .expect("run go build");
    assert!(
        output.status.success(),
        "go build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    bin
}

/// tcpdump of port 53 on all of a host's interfaces, one line per packet in a file.
struct Capture {
    process: Process,
    log: PathBuf,
}

impl Capture {
    fn start(host: &Host, log: PathBuf) -> Capture {
        let file = std::fs::File::create(&log).expect("capture log");
        let mut command = host.command("tcpdump");
        command
            .args(["-i", "any", "-n", "-l", "-vv", "port", "53"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("capture log"))
            .stderr(file);
        let process = Process::spawn(command).expect("start tcpdump");
        let capture = Capture { process, log };
        let deadline = Instant::now() + secs(10);
        while !capture.text().contains("listening on") {
            assert!(Instant::now() < deadline, "tcpdump did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        capture
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything captured (after a moment for the last packets).
    fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(500));
        self.process.kill();
        self.text()
    }
}

/// Supervised `busybox nslookup` (its own DNS client, over UDP) on the client: `name` and
/// what it printed.
fn nslookup(scenario: &Scenario, label: &str, name: &str) -> String {
    let argv = ["/bin/busybox", "nslookup", name];
    let mut command = scenario
        .world
        .namesock_run(&scenario.client, label, &argv)
        .expect("nslookup command");
    let _ = command.status().expect("run nslookup");
    std::fs::read_to_string(scenario.world.log(label)).unwrap_or_default()
}

/// Lookups beside the download: a zone name is answered on the client (synthetic
/// addresses); an ordinary name (`probe.example.`) is forwarded to the system's DNS server,
/// so the capture must show it.
fn look_up_names(scenario: &Scenario) {
    let said = nslookup(scenario, "nslookup-zone", &format!("web.{ZONE}"));
    assert!(
        said.contains("240.78.") && said.contains("100::4e53:0:"),
        "nslookup of a zone name should print its synthetic addresses:\n{said}"
    );
    nslookup(scenario, "nslookup-probe", "probe.example");
}

/// One download by name across a server move and a client move, by the supervised `argv_for(url, out)`.
fn download_across_moves(tag: &str, label: &str, argv_for: &dyn Fn(&str, &str) -> Vec<String>) {
    let scenario = Scenario::new(tag, BIG, fast());
    scenario.limit_server(RATE);
    let capture = Capture::start(&scenario.client, scenario.world.path("dns.capture"));
    let url = format!("http://web.{ZONE}:{PORT}{}", scenario.served.url_path);
    let out = scenario.world.path(&format!("{label}.out"));
    let argv = argv_for(&url, &out.to_string_lossy());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut command = scenario
        .world
        .namesock_run(&scenario.client, label, &argv)
        .expect("client command");
    command.env("NAMESOCK_LOG", "debug");
    let mut download =
        Download::spawn(command, label, out, &scenario.served).expect("start the download");
    scenario.wait_for_fraction(&mut download, 0.3, secs(60));
    download.mark_move();
    scenario
        .server
        .move_to_new_subnet()
        .expect("move the server");
    // The supervised end moves too: its engine re-dials from the new address.
    scenario.wait_for_fraction(&mut download, 0.6, secs(60));
    download.mark_move();
    scenario
        .client
        .move_to_new_subnet()
        .expect("move the client");
    let outcome = download.finish(MAX_TIME).expect("download result");
    scenario.check(label, &outcome);
    // A move is a stall, as under the preload (the mobility tests' bound for a plain move).
    let outages = outcome.outages();
    assert!(
        outages.len() == 2 && outages.iter().all(|o| *o < secs(3)),
        "{tag}: outages {outages:?}, each should be under 3 s"
    );
    // It really was the supervisor (not the preload, not plain TCP).
    let log = std::fs::read_to_string(scenario.world.log(&format!("{label}.namesock")))
        .unwrap_or_default();
    assert!(
        log.contains("namesock_supervisor::trap: connected"),
        "{tag}: no supervised connect in the client's log\n{}",
        scenario.logs(label)
    );
    look_up_names(&scenario);
    let captured = capture.stop();
    eprintln!(
        "SUPERVISOR {tag}: {} port-53 packets captured on the client",
        captured.lines().filter(|l| l.contains(".53")).count()
    );
    assert!(
        captured.contains("probe.example"),
        "{tag}: the capture missed the forwarded query for an ordinary name:\n{captured}"
    );
    assert!(
        !captured.to_ascii_lowercase().contains(ZONE),
        "{tag}: a query for the zone left the client:\n{captured}"
    );
}

#[test]
fn static_busybox_wget_by_name_across_moves() {
    let test = "static_busybox_wget_by_name_across_moves";
    if !ready(test, &["/bin/busybox", "tcpdump", "python3"]) {
        return;
    }
    let busybox = busybox();
    download_across_moves("sv-wget", "wget", &|url, out| {
        [busybox.to_str().unwrap(), "wget", "-q", "-O", out, url]
            .map(String::from)
            .to_vec()
    });
}

#[test]
fn static_go_client_by_name_across_moves() {
    let test = "static_go_client_by_name_across_moves";
    if !ready(test, &["go", "tcpdump", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("Go build directory");
    let client = build_go_client(dir.path());
    download_across_moves("sv-go", "goget", &|url, out| {
        vec![
            client.to_string_lossy().into_owned(),
            url.into(),
            out.into(),
        ]
    });
}

#[test]
fn static_server_by_name_reached_by_curl() {
    let test = "static_server_by_name_reached_by_curl";
    if !ready(test, &["/bin/busybox", "curl"]) {
        return;
    }
    let busybox = busybox();
    let scenario = Scenario::without_server("sv-httpd", 4 * MIB, fast());
    let www = scenario.world.path("www");
    let port = PORT.to_string();
    let argv = [
        busybox.to_str().unwrap(),
        "httpd",
        "-f",
        "-p",
        &port,
        "-h",
        www.to_str().unwrap(),
    ];
    let mut command = scenario
        .world
        .namesock_run(&scenario.server, "server", &argv)
        .expect("server command");
    command.env("NAMESOCK_NAME", "web");
    let _server = Process::spawn(command).expect("start busybox httpd");
    let record = scenario
        .world
        .wait_for_locator("web", scenario.server.v4().into(), secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", scenario.world.log_tail("server", 30)));
    // curl under the preload, by name.
    let download = scenario.download("curl", &scenario.fetch(secs(60)));
    let outcome = download.finish(secs(70)).expect("curl result");
    scenario.check("curl", &outcome);
    // A supervised static client, by GUID literal.
    let out = scenario.world.path("byguid.out");
    let url = format!(
        "http://{}.{ZONE}:{PORT}{}",
        record.guid, scenario.served.url_path
    );
    let out_arg = out.to_string_lossy().into_owned();
    let argv = [
        busybox.to_str().unwrap(),
        "wget",
        "-q",
        "-O",
        &out_arg,
        &url,
    ];
    let command = scenario
        .world
        .namesock_run(&scenario.client, "byguid", &argv)
        .expect("wget command");
    let download =
        Download::spawn(command, "byguid", out, &scenario.served).expect("start wget by GUID");
    let outcome = download.finish(secs(70)).expect("wget result");
    scenario.check("byguid", &outcome);
    // A port the server does not serve: the errno a program knows.
    let refused = format!("http://web.{ZONE}:{}/", PORT + 7);
    let argv = [
        busybox.to_str().unwrap(),
        "wget",
        "-q",
        "-O",
        "/dev/null",
        &refused,
    ];
    let mut command = scenario
        .world
        .namesock_run(&scenario.client, "refused", &argv)
        .expect("wget command");
    let status = command.status().expect("run wget");
    let said = std::fs::read_to_string(scenario.world.log("refused")).unwrap_or_default();
    assert!(!status.success(), "wget to an unserved port succeeded");
    assert!(
        said.contains("Connection refused"),
        "wget to an unserved port should say 'Connection refused': {said}"
    );
}

#[test]
fn plain_address_connect_from_a_supervised_program_is_untouched() {
    let test = "plain_address_connect_from_a_supervised_program_is_untouched";
    if !ready(test, &["/bin/busybox", "python3"]) {
        return;
    }
    let busybox = busybox();
    let scenario = Scenario::without_server("sv-plain", 4 * MIB, fast());
    let www = scenario.world.path("www");
    let port = (PORT + 1).to_string();
    let argv = [
        "python3",
        "-m",
        "http.server",
        &port,
        "--directory",
        www.to_str().unwrap(),
    ];
    let _plain = Process::spawn(
        scenario
            .world
            .plain(&scenario.server, "plainserver", &argv)
            .expect("plain server command"),
    )
    .expect("plain server");
    let url = format!(
        "http://{}:{}{}",
        scenario.server.v4(),
        PORT + 1,
        scenario.served.url_path
    );
    let out = scenario.world.path("plain.out");
    let out_arg = out.to_string_lossy().into_owned();
    // Retried until the plain server listens (a refused first try is not the point here).
    let deadline = Instant::now() + secs(20);
    loop {
        let argv = [
            busybox.to_str().unwrap(),
            "wget",
            "-q",
            "-O",
            &out_arg,
            &url,
        ];
        let mut command = scenario
            .world
            .namesock_run(&scenario.client, "plain", &argv)
            .expect("wget command");
        command.env("NAMESOCK_LOG", "debug");
        let download =
            Download::spawn(command, "plain", out.clone(), &scenario.served).expect("start wget");
        let outcome = download.finish(secs(60)).expect("wget result");
        if outcome.complete() || Instant::now() >= deadline {
            scenario.check("plain", &outcome);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(scenario.world.log("plain.namesock")).unwrap_or_default();
    assert!(
        !log.contains("engine started") && !log.contains("trap: connected"),
        "a plain-address connect went through namesock:\n{log}"
    );
}

/// A DNS query for argv[1], type A, sent with `sendto` on an unconnected UDP socket to
/// argv[2]:53 (as musl's resolver sends it): prints "sent" or the error.
const SENDTO_DNS_C: &str = r#"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    unsigned char q[512] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t n = 12;
    for (char *label = strtok(argv[1], "."); label; label = strtok(NULL, ".")) {
        q[n++] = (unsigned char)strlen(label);
        memcpy(q + n, label, strlen(label));
        n += strlen(label);
    }
    q[n++] = 0;
    q[n++] = 0; q[n++] = 1; /* A */
    q[n++] = 0; q[n++] = 1; /* IN */
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(53)};
    inet_pton(AF_INET, argv[2], &to.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (sendto(s, q, n, 0, (struct sockaddr *)&to, sizeof to) < 0) {
        printf("sendto: %s\n", strerror(errno));
        return 1;
    }
    printf("sent\n");
    return 0;
}
"#;

#[test]
fn dns_sent_without_connect_never_carries_the_zone() {
    let test = "dns_sent_without_connect_never_carries_the_zone";
    if !ready(test, &["cc", "tcpdump"]) {
        return;
    }
    let scenario = Scenario::without_server("sv-sendto", 1024, fast());
    let src = scenario.world.path("sendto.c");
    let bin = scenario.world.path("sendto");
    std::fs::write(&src, SENDTO_DNS_C).expect("write the C source");
    let built = Command::new("cc")
        .args(["-O1", "-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        built.status.success(),
        "cc -static failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let capture = Capture::start(&scenario.client, scenario.world.path("dns.capture"));
    let send = |label: &str, name: &str| -> String {
        let argv = [bin.to_str().unwrap(), name, "192.0.2.53"];
        let mut command = scenario
            .world
            .namesock_run(&scenario.client, label, &argv)
            .expect("sendto command");
        let _ = command.status().expect("run the sendto program");
        std::fs::read_to_string(scenario.world.log(label)).unwrap_or_default()
    };
    let zone = send("zone", &format!("web.{ZONE}"));
    let inside = send("inside", &format!("web.{ZONE}.example.com"));
    let ordinary = send("ordinary", "probe.example");
    let captured = capture.stop();
    assert!(zone.contains("sendto: Network is unreachable"), "{zone}");
    assert!(
        inside.contains("sendto: Network is unreachable"),
        "{inside}"
    );
    assert!(ordinary.contains("sent"), "{ordinary}");
    assert!(
        captured.contains("probe.example"),
        "the capture missed the ordinary query:\n{captured}"
    );
    assert!(
        !captured.to_ascii_lowercase().contains(ZONE),
        "a query for the zone left the client:\n{captured}"
    );
}

#[test]
fn run_says_why_it_cannot_start_a_program() {
    let test = "run_says_why_it_cannot_start_a_program";
    if !require_release(test, "it runs the release build's namesock") {
        return;
    }
    let tools = namesock_tests::tools();
    let output = Command::new(&tools.namesock)
        .args(["run", "--supervise", "--", "/no/such/program"])
        .output()
        .expect("run namesock");
    assert_eq!(output.status.code(), Some(127));
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("/no/such/program: command not found"),
        "{said}"
    );
}
