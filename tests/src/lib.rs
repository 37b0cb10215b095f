//! Helpers shared by the end-to-end tests: skips that say so ([`skip`]), finding the built
//! binaries, and the download scenarios of the mobility tests (on top of `namesock_cli::testbed`).

pub mod capture;
pub mod skip;

pub use skip::{require_release, require_root, require_tools, skip};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use namesock::engine::snapshot::EngineSnapshot;
use namesock_cli::testbed::scenario::{
    Download, Fetch, Outcome, Served, Timers, Tools, World, hex,
};
use namesock_cli::testbed::{Host, Process, Testbed, median};

/// True when network namespaces can be built here (root, `ip` and `nft`, as the test bed
/// uses); otherwise reports `test` skipped.
pub fn require_namespaces(test: &str) -> bool {
    require_root(test) && require_tools(test, &["ip", "nft"])
}

/// Does the network namespace `name` exist?
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The directory the test binaries were built into (`target/<profile>`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned()
}

/// The workspace's top directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// `namesock` and `libnamesock.so` of this build; panics with how to build them.
pub fn tools() -> Tools {
    match Tools::in_dir(&build_dir()) {
        Ok(tools) => tools,
        Err(error) => panic!("{error} (run tests/run.sh, which builds the workspace first)"),
    }
}

/// The HTTP port of the scenario servers.
pub const PORT: u16 = 8000;

/// A bed with a `server` host running `python3 -m http.server` under namesock as `web`, serving
/// a random file, and a `client` host.
///
/// Fields drop in order: the server process, then the bed (which kills whatever still runs in
/// its namespaces and removes them), then the work directory.
pub struct Scenario {
    pub server_process: Option<Process>,
    pub server: Host,
    pub client: Host,
    pub bed: Testbed,
    pub served: Served,
    pub world: World,
    pub name: String,
}

impl Scenario {
    /// Build it and wait until `web.ns.alt` is published at the server's address.
    pub fn new(name: &str, file_size: u64, timers: Timers) -> Scenario {
        let mut scenario = Scenario::without_server(name, file_size, timers);
        scenario.start_server();
        scenario
    }

    /// The bed, the world and the file, with no server started.
    pub fn without_server(name: &str, file_size: u64, timers: Timers) -> Scenario {
        let mut world = World::new(name, tools(), timers).expect("scenario directory");
        if std::env::var_os("NAMESOCK_TEST_KEEP").is_some() {
            eprintln!("{name}: keeping {}", world.dir.path().display());
            world.dir.keep();
        }
        let bed = Testbed::for_scenario(name).expect("test bed");
        let server = bed.add_host("server").expect("server host");
        let client = bed.add_host("client").expect("client host");
        let served = world
            .serve_random_file("file", file_size)
            .expect("served file");
        Scenario {
            name: name.to_owned(),
            world,
            bed,
            server,
            client,
            served,
            server_process: None,
        }
    }

    /// (Re)start the namesock web server and wait for its record.
    pub fn start_server(&mut self) {
        self.server_process = None;
        let process = self
            .world
            .start_http_server(&self.server, "server", "web", PORT)
            .expect("start the web server");
        self.server_process = Some(process);
        let published =
            self.world
                .wait_for_locator("web", self.server.v4().into(), Duration::from_secs(30));
        if let Err(error) = published {
            panic!("{error}\n{}", self.world.log_tail("server", 30));
        }
    }

    /// socat as the echo server `echo` on `port` of the server host under `namesock run`,
    /// with `env` added to its environment; waits for its record at the server's address.
    /// The process and its engine's addresses on the server host.
    pub fn start_echo_server(&self, port: u16, env: &[(&str, &str)]) -> (Process, Vec<SocketAddr>) {
        let world = &self.world;
        let listen = format!("TCP-LISTEN:{port},fork,reuseaddr");
        let server_ip = IpAddr::from(self.server.v4());
        let mut command = world
            .namesock_run(&self.server, "echo", &["socat", &listen, "EXEC:cat"])
            .expect("server command");
        command.env("NAMESOCK_NAME", "echo");
        for (key, value) in env {
            command.env(key, value);
        }
        let process = Process::spawn(command).expect("start the echo server");
        let record = world
            .wait_for_record("echo", Duration::from_secs(30), |r| {
                r.locators.iter().any(|l| l.ip() == server_ip)
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", world.log_tail("echo", 30)));
        let engine = record
            .locators
            .into_iter()
            .filter(|l| !l.ip().is_loopback())
            .collect();
        (process, engine)
    }

    /// How curl fetches the served file by name under namesock.
    pub fn fetch(&self, max_time: Duration) -> Fetch {
        Fetch {
            url: format!("http://web.ns.alt:{PORT}{}", self.served.url_path),
            // curl's --limit-rate lets a fast local download through at full speed (curl
            // 7.88); the server's link is limited instead (`limit_server`).
            rate: None,
            max_time,
            namesock: true,
        }
    }

    /// Limit what the server sends to `bytes_per_s` (a token bucket on its links), so that a
    /// download lasts long enough to move during it.
    pub fn limit_server(&self, bytes_per_s: u64) {
        let kbit = (bytes_per_s * 8 / 1000).max(8);
        self.server.limit_rate(Some(kbit)).expect("rate limit");
    }

    /// Start the client's download.
    pub fn download(&self, label: &str, fetch: &Fetch) -> Download {
        Download::start(&self.world, &self.client, label, fetch, &self.served).expect("start curl")
    }

    /// Wait for `fraction` of the file; panics with the logs if it does not come.
    pub fn wait_for_fraction(&self, download: &mut Download, fraction: f64, timeout: Duration) {
        let bytes = (self.served.size as f64 * fraction) as u64;
        if let Err(error) = download.wait_for_bytes(&self.world, bytes, timeout) {
            panic!("{}: {error}\n{}", self.name, self.logs(download.label()));
        }
    }

    /// The tails of the client's and the server's logs.
    pub fn logs(&self, client_label: &str) -> String {
        format!(
            "{}\n{}",
            self.world.log_tail(client_label, 25),
            self.world.log_tail("server", 25)
        )
    }

    /// Assert a complete, identical download and print the outage of each move.
    pub fn check(&self, label: &str, outcome: &Outcome) {
        if !outcome.complete() {
            panic!(
                "{}: download incomplete: {outcome}\n{}",
                self.name,
                self.logs(label)
            );
        }
        print_outages(&format!("{}/{label}", self.name), outcome);
    }
}

/// Print one line per scenario: each move's outage and the median (for the issue note).
pub fn print_outages(scenario: &str, outcome: &Outcome) {
    let outages = outcome.outages();
    let list: Vec<String> = outages
        .iter()
        .map(|d| format!("{}", d.as_millis()))
        .collect();
    eprintln!(
        "MOBILITY {scenario}: {} bytes in {:.1} s, sha256 ok, {} moves, outages [{}] ms, median {} ms",
        outcome.bytes,
        outcome.elapsed.as_secs_f64(),
        outages.len(),
        list.join(", "),
        median(&outages).as_millis()
    );
}

/// Lower-case hex of a digest (for messages).
pub fn digest_hex(digest: &[u8; 32]) -> String {
    hex(digest)
}

/// `namesock sessions --json` for the engines of the world's program `label`.
pub fn engines_of(world: &World, label: &str) -> Vec<EngineSnapshot> {
    let out = std::process::Command::new(&tools().namesock)
        .args(["sessions", "--json"])
        .env("XDG_RUNTIME_DIR", world.path("run").join(label))
        .env_remove("NAMESOCK_LOG")
        .output()
        .expect("run namesock sessions");
    assert!(
        out.status.success(),
        "namesock sessions --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("namesock sessions --json gives JSON")
}
