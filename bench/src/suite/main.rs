//! `nsbench-suite`: namesock against plain TCP (and socat, and MPTCP, and the previous
//! release) between network namespaces, in one run. Prints the table and writes `bench.md`,
//! `raw.csv`, `move.csv`, `scale.csv` and (with gnuplot) `move.png` and `scale.png` to the output
//! directory. Needs root; run it with `bench/run.sh`.
//!
//! ```text
//! nsbench-suite [--runs N] [--out DIR] [--bin DIR] [--baseline-bin DIR] [--gns FILE]
//!               [--only a,b,..] [--quick]
//! sections: bulk rr ttfb link move plot scale mptcp gns
//! ```
//!
//! `--baseline-bin DIR` holds the binaries of the previous release (`nb-peer`, `namesock`,
//! `libnamesock.so`, built from its own checkout): bulk, rr, ttfb and link then measure it too,
//! both ends on those binaries, in a GNS, keys and logs of its own, and the table gets its
//! column beside namesock's. `link` is one session's bulk throughput over test-bed links
//! limited (a token-bucket qdisc on both hosts) to 1, 2.5, 5 and 10 Gbit/s and unlimited.
//!
//! This file holds what the sections share (the processes, the builds, the samples and the
//! table's cells); each section is a module of its own (`bulk`, `latency` for rr and ttfb,
//! `link`, `moves` for move and plot, `scale`, `mptcp`, `gns`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use namesock_bench::parse::{self, Split};
use namesock_bench::plot;
use namesock_bench::stats::{median, ratio};
use namesock_bench::table::{
    self, LINK_GOAL, LINK_KBITS, LINK_SECTION, LOOKUP_PEER, LOOPBACK_PEER, PREVIOUS_PEER,
    RELAY_PEER, Row, SOCAT_PEER, added, at_least, at_most, at_most_added, at_most_times, fig,
    link_label, link_metric, times, with_unit,
};
use namesock_cli::testbed::scenario::{Timers, Tools, World};
use namesock_cli::testbed::{Host, Process, Progress, Sample, Testbed, TestbedError, stalls};

#[path = "../../../resolver/tests/support/bind9.rs"]
mod bind9;
mod bulk;
mod gns;
mod latency;
mod link;
mod moves;
mod mptcp;
mod scale;

#[derive(Debug, thiserror::Error)]
enum SuiteError {
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error(transparent)]
    Scenario(#[from] namesock_cli::testbed::scenario::ScenarioError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not happen in time")]
    Timeout(String),
    #[error("{what}: could not read a result from {output:?}")]
    Parse { what: String, output: String },
    #[error("usage: {0}")]
    Usage(String),
    #[error("the previous release was asked for, but no --baseline-bin was given")]
    NoBaseline,
}

type Result<T> = std::result::Result<T, SuiteError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SuiteError {
    let what = what.into();
    move |source| SuiteError::Io { what, source }
}

const MIB: u64 = 1 << 20;
/// What the connect section's delay line adds to the round trip between the hosts.
const FAR_RTT: Duration = Duration::from_millis(10);

struct Opts {
    runs: usize,
    out: PathBuf,
    bin: PathBuf,
    /// The previous release's binaries (`--baseline-bin`).
    baseline_bin: Option<PathBuf>,
    gns: Option<PathBuf>,
    only: Option<Vec<String>>,
    quick: bool,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        runs: 5,
        out: PathBuf::from("bench/results"),
        bin: PathBuf::from("target/release"),
        baseline_bin: None,
        gns: None,
        only: None,
        quick: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    // Bounded by the argument count.
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| SuiteError::Usage(format!("{a} needs a value")))
        };
        match a.as_str() {
            "--runs" => {
                o.runs = val()?
                    .parse()
                    .map_err(|_| SuiteError::Usage("--runs N".into()))?
            }
            "--out" => o.out = val()?.into(),
            "--bin" => o.bin = val()?.into(),
            "--baseline-bin" => o.baseline_bin = Some(val()?.into()),
            "--gns" => o.gns = Some(val()?.into()),
            "--only" => o.only = Some(val()?.split(',').map(str::to_owned).collect()),
            "--quick" => o.quick = true,
            other => return Err(SuiteError::Usage(format!("unknown option {other}"))),
        }
    }
    Ok(o)
}

/// A running program with its stdout lines arriving on a channel.
struct Running {
    process: Process,
    lines: Receiver<String>,
    all: Vec<String>,
}

impl Running {
    fn spawn(mut command: Command) -> Result<Running> {
        command.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut process = Process::spawn(command)?;
        let stdout = process
            .child_mut()
            .stdout
            .take()
            .ok_or_else(|| SuiteError::Timeout("a stdout pipe".into()))?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            // Ends at EOF, when the program exits.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            process,
            lines,
            all: Vec::new(),
        })
    }

    /// Wait for a line starting with `prefix`; the line.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.all.push(line.clone());
                    if line.starts_with(prefix) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(SuiteError::Timeout(format!("`{prefix}` line")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(SuiteError::Parse {
                        what: format!("`{prefix}` line"),
                        output: self.all.join("\n"),
                    });
                }
            }
        }
    }

    /// The newest line starting with `prefix` that arrived so far, without waiting.
    fn latest(&mut self, prefix: &str) -> Option<String> {
        let mut found = None;
        // Bounded by what is queued.
        while let Ok(line) = self.lines.try_recv() {
            if line.starts_with(prefix) {
                found = Some(line.clone());
            }
            self.all.push(line);
        }
        found.or_else(|| {
            self.all
                .iter()
                .rev()
                .find(|l| l.starts_with(prefix))
                .cloned()
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .process
            .child_mut()
            .stdin
            .as_mut()
            .ok_or_else(|| SuiteError::Timeout("a stdin pipe".into()))?;
        writeln!(stdin, "{line}").map_err(io("write to a program"))
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }
}

fn read_proc(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

/// Deletes `/etc/netns/<namespace>` (the per-namespace /etc/hosts) when dropped.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The programs of one namesock build and the scenario they run in (keys, GNS, logs).
struct Build {
    world: World,
    nb_peer: PathBuf,
}

impl Build {
    fn in_dir(bin: &Path, tag: &str) -> Result<Build> {
        let tools = Tools::in_dir(bin)?;
        let nb_peer = std::fs::canonicalize(bin.join("nb-peer"))
            .map_err(io("nb-peer (build the workspace in release mode)"))?;
        Ok(Build {
            world: World::new(tag, tools, Timers::fast())?,
            nb_peer,
        })
    }
}

/// The timers of a move's programs: the suite's quick ones, or namesock's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MoveTimers {
    /// Keepalive 300 ms, path-dead 1.5 s (`Timers::fast`, the world's).
    Quick,
    /// No timer set: keepalive 5 s, path-dead 15 s, suspicion 200 ms.
    Default,
    /// The default timers, both ends' GNS a BIND9 zone (which cannot be watched) instead of
    /// the file store.
    DefaultOverDns,
}

impl MoveTimers {
    fn apply(self, cmd: &mut Command) {
        if self != MoveTimers::Quick {
            cmd.env_remove("NAMESOCK_KEEPALIVE_MS")
                .env_remove("NAMESOCK_PATH_DEAD_MS")
                .env_remove("NAMESOCK_LINGER_MS")
                .env_remove("NAMESOCK_SUSPECT_MS");
        }
    }

    /// What the row's metric adds to the kind of move.
    fn label(self) -> &'static str {
        match self {
            MoveTimers::Quick => "",
            MoveTimers::Default => ", default timers",
            MoveTimers::DefaultOverDns => ", default timers, BIND9 zone",
        }
    }

    /// Issue 19: a server found again within 50 ms on the default timers.
    fn goal(self, outage: Option<f64>) -> String {
        match self {
            MoveTimers::Quick => String::new(),
            MoveTimers::Default | MoveTimers::DefaultOverDns => at_most(outage, 50.0, "ms"),
        }
    }

    fn section(self) -> &'static str {
        match self {
            MoveTimers::Quick => "move (keepalive 300 ms, dead 1.5 s)",
            MoveTimers::Default | MoveTimers::DefaultOverDns => {
                "move (default timers: keepalive 5 s, dead 15 s)"
            }
        }
    }
}

struct Suite {
    opts: Opts,
    bed: Testbed,
    client: Host,
    server: Host,
    world: World,
    nb_peer: PathBuf,
    /// The previous release (`--baseline-bin`), its own world: protocol 1 and 2 do not
    /// interoperate, nor share keys and records.
    previous: Option<Build>,
    nsbench: PathBuf,
    rows: Vec<Row>,
    samples: Vec<table::Sample>,
    notes: Vec<String>,
    plots: Vec<PathBuf>,
    _etc: Option<NetnsEtc>,
    /// The open-file limit this process (and so every program it starts) has.
    nofile: u64,
    /// BIND9 on a host of the bed, once a move over DNS asked for it.
    named: Option<(Host, bind9::Named)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Plain,
    /// Plain TCP with both programs on the client's host, over 127.0.0.1: what one of the
    /// loopback hops between a program and its engine costs.
    Loopback,
    Socat,
    /// `nb-peer relay` on each host: plain TCP through a loop of its own at each end, none of
    /// namesock's protocol (the floor of relaying).
    Relay,
    Namesock,
    /// namesock of the previous release (`--baseline-bin`), at both ends.
    Previous,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Loopback => "loopback",
            Variant::Socat => "socat",
            Variant::Relay => "relay",
            Variant::Namesock => "namesock",
            Variant::Previous => "previous",
        }
    }

    /// Does it dial by name through a namesock engine?
    fn by_name(self) -> bool {
        matches!(self, Variant::Namesock | Variant::Previous)
    }
}

/// Which way a bulk transfer goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    ClientToServer,
    ServerToClient,
}

impl Dir {
    fn label(self) -> &'static str {
        match self {
            Dir::ClientToServer => "client->server",
            Dir::ServerToClient => "server->client",
        }
    }
}

/// One bulk transfer: the receiver's throughput and the CPU of every process involved.
struct Transfer {
    mb_per_s: f64,
    cpu_s: f64,
}

/// A relay on each host, as namesock has an engine on each: socat, or `nb-peer relay`.
struct Relays {
    client: Running,
    server: Running,
}

impl Relays {
    /// The two relays' processes (their CPU counts socat's per-connection children once reaped).
    fn pids(&self) -> [u32; 2] {
        [self.client.pid(), self.server.pid()]
    }

    /// Until both have printed `ready` (`nb-peer relay` does, once it listens).
    fn wait_ready(&mut self) -> Result<()> {
        self.server.expect("ready", Duration::from_secs(20))?;
        self.client.expect("ready", Duration::from_secs(20))?;
        Ok(())
    }
}

impl Suite {
    fn record(
        &mut self,
        section: &str,
        metric: &str,
        variant: &str,
        run: usize,
        value: f64,
        unit: &str,
    ) {
        self.samples.push(table::Sample {
            section: section.into(),
            metric: metric.into(),
            variant: variant.into(),
            run,
            value,
            unit: unit.into(),
        });
    }

    fn values(&self, section: &str, metric: &str, variant: &str) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.section == section && s.metric == metric && s.variant == variant)
            .map(|s| s.value)
            .collect()
    }

    fn med(&self, section: &str, metric: &str, variant: &str) -> Option<f64> {
        median(&self.values(section, metric, variant))
    }

    /// A command for `program args` at `host` with the namesock environment of `label` (its
    /// key), logging to `log`.
    fn ns_command(&self, host: &Host, label: &str, log: &str, argv: &[&str]) -> Result<Command> {
        ns_command_in(&self.world, host, label, log, argv)
    }

    fn plain_command(&self, host: &Host, log: &str, argv: &[&str]) -> Result<Command> {
        let mut c = self.world.plain(host, log, argv)?;
        c.stderr(Stdio::from(
            std::fs::File::create(self.world.log(&format!("{log}.stderr")))
                .map_err(io("log file"))?,
        ));
        Ok(c)
    }

    /// The world and `nb-peer` of `variant`: the previous release's for it, ours otherwise.
    fn build_of(&self, variant: Variant) -> Result<(&World, &Path)> {
        match variant {
            Variant::Previous => self
                .previous
                .as_ref()
                .map(|b| (&b.world, b.nb_peer.as_path()))
                .ok_or(SuiteError::NoBaseline),
            _ => Ok((&self.world, self.nb_peer.as_path())),
        }
    }

    /// `variants`, and the previous release after them when its binaries were given.
    fn with_previous(&self, variants: &[Variant]) -> Vec<Variant> {
        let mut all = variants.to_vec();
        if self.previous.is_some() {
            all.push(Variant::Previous);
        }
        all
    }

    fn peer(
        &self,
        host: &Host,
        variant: Variant,
        label: &str,
        log: &str,
        args: &[&str],
    ) -> Result<Command> {
        let (world, nb_peer) = self.build_of(variant)?;
        let bin = nb_peer.to_string_lossy().into_owned();
        let mut argv = vec![bin.as_str()];
        argv.extend_from_slice(args);
        if variant.by_name() {
            ns_command_in(world, host, label, log, &argv)
        } else {
            self.plain_command(host, log, &argv)
        }
    }

    /// socat on each host: the client's listens on 127.0.0.1:`front` and dials the server's
    /// on `back`, which dials the program on `app`; each forks a process per connection.
    fn start_socat(&self, front: u16, back: u16, app: u16) -> Result<Relays> {
        let server_side = format!("TCP-LISTEN:{back},fork,reuseaddr");
        let to_app = format!("TCP:127.0.0.1:{app},nodelay");
        let client_side = format!("TCP-LISTEN:{front},fork,reuseaddr,bind=127.0.0.1");
        let to_server = format!("TCP:{}:{back},nodelay", self.server.v4());
        let relays = self.start_relays(
            &format!("socat-{front}"),
            [
                vec!["socat", "-b", "131072", &client_side, &to_server],
                vec!["socat", "-b", "131072", &server_side, &to_app],
            ],
        )?;
        // socat says nothing when it listens.
        std::thread::sleep(Duration::from_millis(300));
        Ok(relays)
    }

    /// `nb-peer relay` (one event loop, no fork, none of namesock's protocol) on each host,
    /// wired as [`Suite::start_socat`]'s: the floor of relaying a connection.
    fn start_null_relays(&self, front: u16, back: u16, app: u16) -> Result<Relays> {
        let bin = self.nb_peer.to_string_lossy().into_owned();
        let (client_listen, to_server) = (
            format!("127.0.0.1:{front}"),
            format!("{}:{back}", self.server.v4()),
        );
        let (server_listen, to_app) = (format!("[::]:{back}"), format!("127.0.0.1:{app}"));
        let mut relays = self.start_relays(
            &format!("relay-{front}"),
            [
                vec![&bin, "relay", &client_listen, &to_server],
                vec![&bin, "relay", &server_listen, &to_app],
            ],
        )?;
        relays.wait_ready()?;
        Ok(relays)
    }

    /// Starts `[client argv, server argv]` on their hosts, logging to `log`-c and `log`-s.
    fn start_relays(&self, log: &str, [client, server]: [Vec<&str>; 2]) -> Result<Relays> {
        let server =
            Running::spawn(self.plain_command(&self.server, &format!("{log}-s"), &server)?)?;
        let client =
            Running::spawn(self.plain_command(&self.client, &format!("{log}-c"), &client)?)?;
        Ok(Relays { client, server })
    }

    /// The target a client of `variant` dials for a server app on `port` registered as `name`.
    /// (`relay_front`: where the client host's relay listens, for socat and `nb-peer relay`.)
    fn target(&self, variant: Variant, name: &str, port: u16, relay_front: u16) -> String {
        match variant {
            Variant::Plain => format!("{}:{port}", self.server.v4()),
            Variant::Loopback => format!("127.0.0.1:{port}"),
            Variant::Socat | Variant::Relay => format!("127.0.0.1:{relay_front}"),
            Variant::Namesock | Variant::Previous => format!("{name}.ns.alt:{port}"),
        }
    }

    /// The medians of `section`/`metric` for plain, socat, namesock and the previous release.
    fn meds(&self, section: &str, metric: &str) -> [Option<f64>; 4] {
        [
            Variant::Plain,
            Variant::Socat,
            Variant::Namesock,
            Variant::Previous,
        ]
        .map(|v| self.med(section, metric, v.name()))
    }

    /// The previous release's cell: its figure, or empty when it was not measured at all.
    fn previous_cell(&self, value: Option<f64>, unit: &str) -> String {
        self.previous_cell_with(|| with_unit(value, unit))
    }

    fn previous_cell_with(&self, cell: impl FnOnce() -> String) -> String {
        if self.previous.is_some() {
            cell()
        } else {
            String::new()
        }
    }
}

fn m_arg(v: Variant) -> &'static str {
    if v.by_name() { "ns" } else { "plain" }
}

/// `argv` at `host` in `world` with the namesock environment of `label` (its key), logging
/// to `log`.
fn ns_command_in(
    world: &World,
    host: &Host,
    label: &str,
    log: &str,
    argv: &[&str],
) -> Result<Command> {
    let mut c = world.with_namesock_env(host, label, argv)?;
    c.env("NAMESOCK_LOG_FILE", world.log(log))
        .stderr(Stdio::from(
            std::fs::File::create(world.log(&format!("{log}.stderr"))).map_err(io("log file"))?,
        ));
    Ok(c)
}

/// Runs gnuplot on `script`; the error says why it made no plot.
fn gnuplot(script: &str) -> std::result::Result<(), String> {
    let status = Command::new("gnuplot")
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut g| {
            if let Some(mut i) = g.stdin.take() {
                i.write_all(script.as_bytes())?;
            }
            g.wait()
        })
        .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

/// Remove the beds of earlier suite runs (`nb-<pid>-...`) whose process is gone.
fn sweep_stale_beds() {
    let mut c = Command::new("ip");
    c.args(["netns", "list"]);
    let Ok(out) = namesock_cli::testbed::run_with_input(c, None, Duration::from_secs(10)) else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    for pid in listing.lines().filter_map(|l| {
        let name = l.split_whitespace().next()?;
        name.strip_prefix("nb-")?
            .split('-')
            .next()?
            .parse::<u32>()
            .ok()
    }) {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            Testbed::sweep(&format!("nb-{pid}"));
        }
    }
}

/// The note naming the previous release: the commit its binaries in `dir` were built from
/// (`git rev-parse` of the checkout holding `dir`), when git can tell.
fn previous_note(dir: &Path) -> String {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%h (%cs)"]);
    let commit = namesock_cli::testbed::run_with_input(c, None, Duration::from_secs(10))
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .map_or_else(String::new, |c| format!(" of commit {c}"));
    format!(
        "previous release (protocol 1, unencrypted): the binaries{commit}, at both ends (protocol 1 and 2 do not interoperate), in the same run; the link section limits both hosts' sending rate with the test bed's token-bucket qdisc (`Host::limit_rate`)"
    )
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nsbench-suite: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let opts = opts()?;
    if !namesock_cli::testbed::is_root() {
        return Err(SuiteError::Usage("run as root (network namespaces)".into()));
    }
    let nofile = namesock_bench::raise_nofile(1 << 20);
    std::fs::create_dir_all(&opts.out).map_err(io("output directory"))?;
    let Build { world, nb_peer } = Build::in_dir(&opts.bin, "bench")?;
    let previous = match &opts.baseline_bin {
        Some(dir) => Some(Build::in_dir(dir, "bench-prev")?),
        None => None,
    };
    let mut notes = Vec::new();
    if let Some(dir) = &opts.baseline_bin {
        notes.push(previous_note(dir));
    }
    let nsbench = std::fs::canonicalize(opts.bin.join("examples/nsbench")).map_err(io(
        "examples/nsbench (cargo build --release -p namesock --example nsbench)",
    ))?;
    sweep_stale_beds();
    let prefix = format!("nb-{}", std::process::id());
    let bed = Testbed::new(&prefix)?;
    let server = bed.add_host("server")?;
    let client = bed.add_host("client")?;
    let load_before = uptime();
    let started = SystemTime::now();
    let mut suite = Suite {
        opts,
        bed,
        client,
        server,
        world,
        nb_peer,
        previous,
        nsbench,
        rows: Vec::new(),
        samples: Vec::new(),
        notes,
        plots: Vec::new(),
        _etc: None,
        nofile,
        named: None,
    };
    let wanted = |s: &Suite, name: &str| {
        s.opts
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x == name))
    };
    type Section = fn(&mut Suite) -> Result<()>;
    let sections: [(&str, Section); 9] = [
        ("bulk", Suite::bulk),
        ("rr", Suite::rr),
        ("ttfb", Suite::ttfb),
        ("link", Suite::link),
        ("move", Suite::moves),
        ("plot", Suite::plot),
        ("scale", Suite::scale),
        ("mptcp", Suite::mptcp),
        ("gns", Suite::gns),
    ];
    let mut failed = BTreeMap::new();
    for (name, section) in sections {
        if !wanted(&suite, name) {
            continue;
        }
        eprintln!("== {name} (load {})", uptime());
        if let Err(e) = section(&mut suite) {
            eprintln!("   {name} failed: {e}");
            failed.insert(name, e.to_string());
        }
    }
    let _ = &suite.bed;
    let load_after = uptime();
    let minutes = started.elapsed().map_or(0.0, |d| d.as_secs_f64() / 60.0);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "namesock benchmarks: {} run(s) per figure unless noted, median; kernel {}, load average {load_before} before and {load_after} after ({minutes:.1} min).\n",
        suite.opts.runs,
        uname_r()
    );
    md.push_str(&table::markdown(&suite.rows));
    for note in &suite.notes {
        let _ = writeln!(md, "\n- {note}");
    }
    for (name, e) in &failed {
        let _ = writeln!(md, "\n- section `{name}` failed: {e}");
    }
    println!("{md}");
    let write = |file: &str, text: &str| {
        std::fs::write(suite.opts.out.join(file), text).map_err(io(file.to_owned()))
    };
    write("bench.md", &md)?;
    write("raw.csv", &table::csv(&suite.samples))?;
    for png in &suite.plots {
        eprintln!("plot: {}", png.display());
    }
    Ok(())
}
