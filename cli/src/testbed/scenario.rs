//! Scenarios with real programs: a `python3 -m http.server` and a `curl` under the preload,
//! a file with a known SHA-256, and measurements of what each move cost. Used by `namesock demo`
//! and by the mobility tests.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use namesock_resolver::{Gns, GnsError, Record, Target};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::measure::{Progress, Stall, stalls};
use super::{Host, Process, TestbedError};

/// The zone the scenarios' names live in.
pub const ZONE: &str = "ns.alt";

/// What can go wrong in a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} not found: build the workspace first (`cargo build --release --workspace`)")]
    MissingTool(PathBuf),
    #[error("GNS: {0}")]
    Gns(#[from] GnsError),
    #[error("{what} did not happen within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{program} exited early ({status}); its log: {log}")]
    Exited {
        program: String,
        status: ExitStatus,
        log: String,
    },
}

type Result<T> = std::result::Result<T, ScenarioError>;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ScenarioError + '_ {
    move |source| ScenarioError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a program runs: a test-bed host, or this machine itself.
pub trait Place {
    /// A command running `program` there.
    fn command(&self, program: &OsStr) -> Command;
}

impl Place for Host {
    fn command(&self, program: &OsStr) -> Command {
        Host::command(self, program)
    }
}

/// This machine, outside any test bed.
pub struct Local;

impl Place for Local {
    fn command(&self, program: &OsStr) -> Command {
        Command::new(program)
    }
}

/// The built `namesock` binary and `libnamesock.so`.
#[derive(Debug, Clone)]
pub struct Tools {
    pub namesock: PathBuf,
    pub preload: PathBuf,
}

impl Tools {
    /// The tools in `dir` (e.g. `target/release`).
    pub fn in_dir(dir: &Path) -> Result<Tools> {
        let tools = Tools {
            namesock: dir.join("namesock"),
            preload: dir.join("libnamesock.so"),
        };
        for path in [&tools.namesock, &tools.preload] {
            if !path.is_file() {
                return Err(ScenarioError::MissingTool(path.clone()));
            }
        }
        Ok(tools)
    }

    /// The tools beside the running executable (the `namesock` binary itself).
    pub fn beside_current_exe() -> Result<Tools> {
        let exe = std::env::current_exe().map_err(io_error(Path::new("/proc/self/exe")))?;
        Tools::in_dir(exe.parent().unwrap_or(Path::new(".")))
    }
}

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// A new private directory under the system's temporary directory.
    pub fn new(tag: &str) -> Result<WorkDir> {
        let path = std::env::temp_dir().join(format!(
            "namesock-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        Ok(WorkDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leave the directory in place (to look at logs after a failure).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Session timers for the programs of a scenario (`None` = namesock's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timers {
    pub keepalive_ms: Option<u64>,
    pub path_dead_ms: Option<u64>,
    pub linger_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
}

impl Timers {
    /// Quick failure detection, so that tests spend seconds, not minutes, per outage.
    pub fn fast() -> Timers {
        Timers {
            keepalive_ms: Some(300),
            path_dead_ms: Some(1500),
            linger_ms: None,
            connect_timeout_ms: Some(20_000),
        }
    }

    fn vars(&self) -> Vec<(&'static str, String)> {
        [
            ("NAMESOCK_KEEPALIVE_MS", self.keepalive_ms),
            ("NAMESOCK_PATH_DEAD_MS", self.path_dead_ms),
            ("NAMESOCK_LINGER_MS", self.linger_ms),
            ("NAMESOCK_CONNECT_TIMEOUT_MS", self.connect_timeout_ms),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v.to_string())))
        .collect()
    }
}

/// The namesock environment the programs of one scenario share: a file GNS, and per program a
/// key and a runtime directory, all inside one work directory.
pub struct World {
    pub dir: WorkDir,
    pub tools: Tools,
    pub timers: Timers,
    /// The world lives on this host's loopback: its programs dial loopback locators
    /// (`NAMESOCK_DIAL_LOOPBACK`; refused otherwise).
    pub dial_loopback: bool,
}

impl World {
    pub fn new(tag: &str, tools: Tools, timers: Timers) -> Result<World> {
        let dir = WorkDir::new(tag)?;
        for sub in ["gns", "keys", "run", "logs", "www"] {
            let path = dir.path().join(sub);
            std::fs::create_dir_all(&path).map_err(io_error(&path))?;
        }
        Ok(World {
            dir,
            tools,
            timers,
            dial_loopback: false,
        })
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// The scenario's GNS (the shared file store).
    pub fn gns(&self) -> Result<Gns> {
        Ok(Gns::file(&self.path("gns"), ZONE)?)
    }

    /// The log file of program `label`.
    pub fn log(&self, label: &str) -> PathBuf {
        self.path("logs").join(format!("{label}.log"))
    }

    /// `namesock run -- argv...` at `place`, as program `label` (its own key, runtime
    /// directory and log file), with stdout and stderr going to its log file.
    pub fn namesock_run(&self, place: &dyn Place, label: &str, argv: &[&str]) -> Result<Command> {
        let mut command = place.command(self.tools.namesock.as_os_str());
        command.arg("run").arg("--").args(argv);
        self.configure(&mut command, label)?;
        Ok(command)
    }

    /// `argv` at `place` with the namesock environment of program `label` but no preload: for
    /// programs linked against `libnamesock.so` (the native C API).
    pub fn with_namesock_env(
        &self,
        place: &dyn Place,
        label: &str,
        argv: &[&str],
    ) -> Result<Command> {
        let (program, args) = argv.split_first().expect("a program");
        let mut command = place.command(OsStr::new(program));
        command.args(args);
        self.configure(&mut command, label)?;
        Ok(command)
    }

    /// A plain command (no preload) at `place`, output to the log of `label`.
    pub fn plain(&self, place: &dyn Place, label: &str, argv: &[&str]) -> Result<Command> {
        let (program, args) = argv.split_first().expect("a program");
        let mut command = place.command(OsStr::new(program));
        command.args(args);
        let log = self.log(label);
        let file = File::create(&log).map_err(io_error(&log))?;
        let copy = file.try_clone().map_err(io_error(&log))?;
        command.stdin(Stdio::null()).stdout(file).stderr(copy);
        Ok(command)
    }

    fn configure(&self, command: &mut Command, label: &str) -> Result<()> {
        let run = self.path("run").join(label);
        std::fs::create_dir_all(&run).map_err(io_error(&run))?;
        let log = self.log(label);
        let file = File::create(&log).map_err(io_error(&log))?;
        let copy = file.try_clone().map_err(io_error(&log))?;
        command
            .env(
                "NAMESOCK_GNS",
                format!("file:{}", self.path("gns").display()),
            )
            .env("NAMESOCK_ZONE", ZONE)
            // The names this world's programs pin stay in the world, not in the user's file.
            .env("NAMESOCK_KNOWN_NAMES", self.path("known_names"))
            .env(
                "NAMESOCK_KEY",
                self.path("keys").join(format!("{label}.key")),
            )
            .env("NAMESOCK_LIB", &self.tools.preload)
            .env("XDG_RUNTIME_DIR", &run)
            .env("NAMESOCK_LOG_FILE", self.log(&format!("{label}.namesock")))
            .env_remove("NAMESOCK_NAME")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(copy);
        if std::env::var_os("NAMESOCK_LOG").is_none() {
            command.env("NAMESOCK_LOG", "info");
        }
        for (key, value) in self.timers.vars() {
            command.env(key, value);
        }
        if self.dial_loopback {
            command.env("NAMESOCK_DIAL_LOOPBACK", "true");
        }
        Ok(())
    }

    /// Start `python3 -m http.server <port>` at `place` under the preload, registered as
    /// `name`, serving the scenario's `www` directory.
    pub fn start_http_server(
        &self,
        place: &dyn Place,
        label: &str,
        name: &str,
        port: u16,
    ) -> Result<Process> {
        let port = port.to_string();
        let www = self.path("www");
        let www = www.to_string_lossy();
        let argv = ["python3", "-m", "http.server", &port, "--directory", &www];
        let mut command = self.namesock_run(place, label, &argv)?;
        command.env("NAMESOCK_NAME", name);
        Ok(Process::spawn(command)?)
    }

    /// Wait until `name` resolves to a record that `accept` likes; the record.
    pub fn wait_for_record(
        &self,
        name: &str,
        timeout: Duration,
        accept: impl Fn(&Record) -> bool,
    ) -> Result<Record> {
        let target = Target::Name(format!("{name}.{ZONE}"));
        let deadline = Instant::now() + timeout;
        loop {
            // A fresh client each time: no anti-rollback memory across the waits.
            match self.gns()?.resolve(&target) {
                Ok(record) if accept(&record) => return Ok(record),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(ScenarioError::Timeout {
                    what: format!("a matching GNS record for {name}"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `name` is published with `addr` among its locators.
    pub fn wait_for_locator(
        &self,
        name: &str,
        addr: std::net::IpAddr,
        timeout: Duration,
    ) -> Result<Record> {
        self.wait_for_record(name, timeout, |r| r.locators.iter().any(|l| l.ip() == addr))
    }

    /// The last lines of program `label`'s logs (its own output and namesock's), for reports.
    pub fn log_tail(&self, label: &str, lines: usize) -> String {
        [self.log(label), self.log(&format!("{label}.namesock"))]
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("--- {} ---\n{tail}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Write `size` random bytes to `path`; their SHA-256.
pub fn random_file(path: &Path, size: u64) -> Result<[u8; 32]> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rand::thread_rng().fill_bytes(&mut chunk[..n]);
        hasher.update(&chunk[..n]);
        out.write_all(&chunk[..n]).map_err(io_error(path))?;
        left -= n as u64;
    }
    out.flush().map_err(io_error(path))?;
    Ok(hasher.finalize().into())
}

/// The SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut chunk).map_err(io_error(path))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&chunk[..n]);
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file served by a scenario's HTTP server.
#[derive(Debug, Clone)]
pub struct Served {
    /// The URL path (e.g. `/file`).
    pub url_path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

impl World {
    /// Put a random file of `size` bytes named `name` in the served directory.
    pub fn serve_random_file(&self, name: &str, size: u64) -> Result<Served> {
        let sha256 = random_file(&self.path("www").join(name), size)?;
        Ok(Served {
            url_path: format!("/{name}"),
            size,
            sha256,
        })
    }
}

/// How a client downloads.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// e.g. `http://web.ns.alt:8000/file`
    pub url: String,
    /// Bytes per second (`curl --limit-rate`), if limited.
    pub rate: Option<u64>,
    /// curl gives up after this long.
    pub max_time: Duration,
    /// Run curl under the preload (`namesock run`); false = plain curl.
    pub namesock: bool,
}

/// A download in progress: curl writing a file, watched every 20 ms.
pub struct Download {
    client: Process,
    progress: Progress,
    out: PathBuf,
    expected: Served,
    moves: Vec<Duration>,
    label: String,
}

/// How a download ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// curl's exit status (`None`: killed after the deadline).
    pub status: Option<ExitStatus>,
    pub bytes: u64,
    pub expected_bytes: u64,
    pub sha256_matches: bool,
    /// The longest stall after each move.
    pub stalls: Vec<Stall>,
    pub elapsed: Duration,
}

impl Outcome {
    /// curl exited 0 and the file is complete and identical.
    pub fn complete(&self) -> bool {
        self.status.is_some_and(|s| s.success())
            && self.bytes == self.expected_bytes
            && self.sha256_matches
    }

    pub fn outages(&self) -> Vec<Duration> {
        self.stalls.iter().map(|s| s.longest).collect()
    }
}

/// What a failed download's message says: curl's status, the bytes and the checksum.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "curl {:?}, {} of {} bytes, sha256 match {}",
            self.status, self.bytes, self.expected_bytes, self.sha256_matches
        )
    }
}

impl Download {
    /// Start `curl` at `place` as program `label`, downloading `expected` per `fetch`.
    pub fn start(
        world: &World,
        place: &dyn Place,
        label: &str,
        fetch: &Fetch,
        expected: &Served,
    ) -> Result<Download> {
        let out = world.dir.path().join(format!("{label}.out"));
        let out_arg = out.to_string_lossy().into_owned();
        let max_time = fetch.max_time.as_secs().max(1).to_string();
        let rate = fetch.rate.map(|r| r.to_string());
        let mut argv = vec![
            "curl",
            "-sS",
            "--fail",
            "-o",
            &out_arg,
            "--max-time",
            &max_time,
        ];
        if let Some(rate) = &rate {
            argv.extend(["--limit-rate", rate]);
        }
        argv.push(&fetch.url);
        let command = if fetch.namesock {
            world.namesock_run(place, label, &argv)?
        } else {
            world.plain(place, label, &argv)?
        };
        Download::spawn(command, label, out, expected)
    }

    /// Start any downloading `command` (built with [`World::namesock_run`] or
    /// [`World::plain`] as program `label`) that writes `expected` to `out`.
    pub fn spawn(
        command: Command,
        label: &str,
        out: PathBuf,
        expected: &Served,
    ) -> Result<Download> {
        let progress = Progress::watch(out.clone(), Duration::from_millis(20));
        let client = Process::spawn(command)?;
        Ok(Download {
            client,
            progress,
            out,
            expected: expected.clone(),
            moves: Vec::new(),
            label: label.to_owned(),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Time since the download started.
    pub fn elapsed(&self) -> Duration {
        self.progress.now()
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.progress.bytes()
    }

    /// Wait until `bytes` arrived; an error if curl exits or `timeout` passes first.
    pub fn wait_for_bytes(&mut self, world: &World, bytes: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.progress.bytes() < bytes {
            if let Some(status) = self.client.try_wait()? {
                if self.progress.bytes() >= bytes.min(self.expected.size) {
                    return Ok(());
                }
                return Err(ScenarioError::Exited {
                    program: self.label.clone(),
                    status,
                    log: world.log_tail(&self.label, 20),
                });
            }
            if Instant::now() >= deadline {
                return Err(ScenarioError::Timeout {
                    what: format!("{} receiving {bytes} bytes", self.label),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Note that a move happens now (its stall is measured from here).
    pub fn mark_move(&mut self) {
        self.moves.push(self.progress.now());
    }

    /// Has curl exited?
    pub fn finished(&mut self) -> bool {
        matches!(self.client.try_wait(), Ok(Some(_)))
    }

    /// Wait for curl to exit (killing it after `timeout`) and check what it wrote.
    pub fn finish(mut self, timeout: Duration) -> Result<Outcome> {
        let status = self.client.wait_timeout(timeout)?;
        if status.is_none() {
            self.client.kill();
        }
        std::thread::sleep(Duration::from_millis(40));
        let end = self.progress.now();
        let samples = self.progress.finish();
        let bytes = std::fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0);
        let sha256_matches =
            bytes == self.expected.size && sha256_file(&self.out)? == self.expected.sha256;
        Ok(Outcome {
            status,
            bytes,
            expected_bytes: self.expected.size,
            sha256_matches,
            stalls: stalls(&samples, &self.moves, end, self.expected.size),
            elapsed: end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_file_hash_matches_reading_it_back() {
        let dir = WorkDir::new("unit").unwrap();
        let path = dir.path().join("f");
        let sha = random_file(&path, 3 << 20 | 5).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 << 20 | 5);
        assert_eq!(sha256_file(&path).unwrap(), sha);
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }

    #[test]
    fn work_dir_is_removed_unless_kept() {
        let dir = WorkDir::new("unit").unwrap();
        let path = dir.path().to_owned();
        assert!(path.is_dir());
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn timers_become_environment() {
        let vars = Timers::fast().vars();
        assert!(vars.contains(&("NAMESOCK_KEEPALIVE_MS", "300".to_owned())));
        assert!(!vars.iter().any(|(k, _)| *k == "NAMESOCK_LINGER_MS"));
    }
}
