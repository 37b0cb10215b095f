//! `namesock demo`: a rate-limited download from `python3 -m http.server` to `curl`, both
//! unmodified under the preload, during which the server and then the client move. Prints each
//! move's outage (the longest time the output file did not grow), the bytes and the SHA-256
//! match.
//!
//! Two modes:
//! - network namespaces (root): a router and two hosts; a move gives a host a new address on a
//!   new subnet and removes the old one;
//! - loopback (no root): the "network" is a forwarder between loopback addresses. The server
//!   moves from `127.0.0.2` to `127.0.0.3` (the old forwarder and its connections vanish and the
//!   server's GNS record is re-published with the new locator), and the client's move breaks its
//!   flow path and brings its next one to the server from `127.0.0.11` instead of `127.0.0.10`.
//!   The program sockets themselves stay on `127.0.0.1`: the honest limit of doing this
//!   without root.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use namesock_identity::Keypair;
use namesock_resolver::Record;

use super::forward::Forwarder;
use super::scenario::{Download, Fetch, Local, Outcome, ScenarioError, Timers, Tools, World, hex};
use super::{Testbed, TestbedError, free_port};

/// The port the demo's web server listens on in its own namespace.
const PORT: u16 = 8000;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// File size in bytes.
    pub size: u64,
    /// How long the download should take without moves (it is rate-limited to that).
    pub duration: Duration,
    /// Keep the work directory afterwards.
    pub keep: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("loading the server's key: {0}")]
    Key(#[from] namesock_identity::KeyFileError),
    #[error("GNS: {0}")]
    Gns(#[from] namesock_resolver::GnsError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub moves: Vec<String>,
    pub outcome: Outcome,
}

impl DemoReport {
    pub fn success(&self) -> bool {
        self.outcome.complete()
    }
}

/// The demo runs on namesock's defaults: no timer is shortened to make moves look fast.
fn timers() -> Timers {
    Timers::default()
}

/// Bytes per second the server may send, so that the download takes `options.duration`.
fn rate(options: &DemoOptions) -> u64 {
    options.size / options.duration.as_secs().max(1)
}

fn fetch(options: &DemoOptions, port: u16) -> Fetch {
    Fetch {
        url: format!("http://web.ns.alt:{port}/file"),
        // curl's --limit-rate lets fast local transfers through (curl 7.88): the server's
        // link is limited instead.
        rate: None,
        max_time: options.duration * 6 + Duration::from_secs(60),
        namesock: true,
    }
}

fn world(options: &DemoOptions) -> Result<World, DemoError> {
    let mut world = World::new("demo", Tools::beside_current_exe()?, timers())?;
    if options.keep {
        world.dir.keep();
    }
    Ok(world)
}

fn header(out: &mut dyn Write, world: &World, options: &DemoOptions, port: u16) -> io::Result<()> {
    let defaults = namesock::config::Config::default();
    writeln!(
        out,
        "  GNS: file store in {} (zone ns.alt); default timers: a path owing an answer is suspect after {} ms, keepalive {} ms, dead after {} ms",
        world.path("gns").display(),
        defaults.suspect_ms,
        defaults.keepalive_ms,
        defaults.path_dead_ms
    )?;
    let f = fetch(options, port);
    writeln!(
        out,
        "  server: namesock run --name web -- python3 -m http.server {port}   ({} MiB random file)",
        options.size >> 20
    )?;
    writeln!(out, "  client: namesock run -- curl -o out {}", f.url)?;
    writeln!(
        out,
        "  the server's link is limited to {:.1} MiB/s so that the download lasts about {} s",
        rate(options) as f64 / (1 << 20) as f64,
        options.duration.as_secs()
    )
}

/// The network-namespace demo (needs root).
pub fn namespaces(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    writeln!(
        out,
        "namesock demo: network-namespace mode (root): a router and the hosts \"server\" and \"client\""
    )?;
    let world = world(options)?;
    header(out, &world, options, PORT)?;
    let bed = Testbed::for_scenario("demo")?;
    let server = bed.add_host("server")?;
    let client = bed.add_host("client")?;
    server.limit_rate(Some((rate(options) * 8 / 1000).max(8)))?;
    writeln!(
        out,
        "  server at {}, client at {}",
        server.v4(),
        client.v4()
    )?;
    let served = world.serve_random_file("file", options.size)?;
    let _server = world.start_http_server(&server, "server", "web", PORT)?;
    let record = published(
        out,
        &world,
        world.wait_for_locator("web", server.v4().into(), Duration::from_secs(30)),
    )?;
    writeln!(
        out,
        "  web.ns.alt is {} at {:?}",
        record.guid, record.locators
    )?;
    let mut download = Download::start(&world, &client, "client", &fetch(options, PORT), &served)?;
    let mut moves = Vec::new();
    let hosts = [("server", &server), ("client", &client)];
    for (i, (label, host)) in hosts.into_iter().enumerate() {
        let due = options.size * (1 + 2 * i as u64) / 4;
        if let Err(error) = download.wait_for_bytes(&world, due, options.duration * 6) {
            writeln!(out, "  the download did not get going: {error}")?;
            break;
        }
        let before = host.v4();
        download.mark_move();
        let (after, _) = host.move_to_new_subnet()?;
        let what = format!("{label} moved {before} -> {after}");
        writeln!(
            out,
            "  {:>6.2} s  {what} (at {} MiB)",
            download_time(&download),
            download.bytes() >> 20
        )?;
        moves.push(what);
    }
    finish(out, &world, download, moves, options)
}

/// The loopback demo (no root needed).
pub fn loopback(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    writeln!(
        out,
        "namesock demo: loopback mode (no network namespaces: not root, or --loopback).\n  \
         The network is a forwarder between loopback addresses: the server moves 127.0.0.2 -> \
         127.0.0.3 (re-published in the GNS); the client's move breaks its path and its next \
         one reaches the server from 127.0.0.11 instead of 127.0.0.10."
    )?;
    let mut world = world(options)?;
    // The forwarders the client dials are on loopback: a lab on one host.
    world.dial_loopback = true;
    let port = free_port();
    header(out, &world, options, port)?;
    let served = world.serve_random_file("file", options.size)?;
    let _server = world.start_http_server(&Local, "server", "web", port)?;
    let record = published(
        out,
        &world,
        world.wait_for_record("web", Duration::from_secs(30), |r| {
            engine_port(r, port).is_some()
        }),
    )?;
    let engine = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        engine_port(&record, port).unwrap_or_default(),
    );
    let key = Keypair::load(&world.path("keys").join("server.key"))?;
    let gns = world.gns()?;
    let mut forwarders = Vec::new();
    let first = Forwarder::start(
        loopback_addr(2),
        engine,
        Ipv4Addr::new(127, 0, 0, 10),
        Some(rate(options)),
    )?;
    gns.publish(&key, &[first.local_addr()], &["web".to_owned()])?;
    writeln!(
        out,
        "  web.ns.alt is {} at {} (forwarded to the server's engine at {engine})",
        record.guid,
        first.local_addr()
    )?;
    forwarders.push(first);
    let mut download = Download::start(&world, &Local, "client", &fetch(options, port), &served)?;
    let mut moves = Vec::new();
    for step in 0..2 {
        let due = options.size * (1 + 2 * step) / 4;
        if let Err(error) = download.wait_for_bytes(&world, due, options.duration * 6) {
            writeln!(out, "  the download did not get going: {error}")?;
            break;
        }
        download.mark_move();
        let what = if step == 0 {
            let next = Forwarder::start(
                loopback_addr(3),
                engine,
                Ipv4Addr::new(127, 0, 0, 10),
                Some(rate(options)),
            )?;
            gns.publish(&key, &[next.local_addr()], &["web".to_owned()])?;
            let mut old = forwarders.remove(0);
            old.stop();
            let what = format!(
                "server moved {} -> {} (record re-published)",
                old.local_addr(),
                next.local_addr()
            );
            forwarders.push(next);
            what
        } else {
            let current = &forwarders[0];
            current.set_source(Ipv4Addr::new(127, 0, 0, 11));
            current.break_connections();
            "client moved: path broken, the next one comes from 127.0.0.11".to_owned()
        };
        writeln!(
            out,
            "  {:>6.2} s  {what} (at {} MiB)",
            download_time(&download),
            download.bytes() >> 20
        )?;
        moves.push(what);
    }
    finish(out, &world, download, moves, options)
}

/// The record, or (on failure) the server's log printed before the error.
fn published(
    out: &mut dyn Write,
    world: &World,
    record: Result<Record, ScenarioError>,
) -> Result<Record, DemoError> {
    if record.is_err() {
        writeln!(
            out,
            "the server did not publish:\n{}",
            world.log_tail("server", 20)
        )?;
    }
    Ok(record?)
}

fn download_time(download: &Download) -> f64 {
    download.elapsed().as_secs_f64()
}

/// The server engine's port, on 127.0.0.1 (the forwarders' upstream).
/// The engine port that serves `port` in the server's record.
fn engine_port(record: &Record, port: u16) -> Option<u16> {
    record.services.as_ref()?.engine_port(port)
}

fn loopback_addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0)
}

fn finish(
    out: &mut dyn Write,
    world: &World,
    download: Download,
    moves: Vec<String>,
    options: &DemoOptions,
) -> Result<DemoReport, DemoError> {
    let outcome = download.finish(options.duration * 6 + Duration::from_secs(60))?;
    writeln!(out)?;
    for (what, stall) in moves.iter().zip(&outcome.stalls) {
        writeln!(
            out,
            "  {what}: outage {:.0} ms (longest time without a byte after the move)",
            stall.longest.as_secs_f64() * 1000.0
        )?;
    }
    let status = outcome
        .status
        .map_or("killed after the deadline".to_owned(), |s| s.to_string());
    writeln!(
        out,
        "  received {} of {} bytes in {:.1} s; curl: {status}",
        outcome.bytes,
        outcome.expected_bytes,
        outcome.elapsed.as_secs_f64()
    )?;
    let served = super::scenario::sha256_file(&world.path("www").join("file"))?;
    writeln!(
        out,
        "  SHA-256 {}: {}",
        if outcome.sha256_matches {
            "matches"
        } else {
            "DIFFERS"
        },
        hex(&served)
    )?;
    if !outcome.complete() {
        writeln!(out, "\nlogs:\n{}", world.log_tail("client", 15))?;
        writeln!(out, "{}", world.log_tail("server", 15))?;
    }
    if options.keep {
        writeln!(out, "  work directory kept: {}", world.dir.path().display())?;
    }
    Ok(DemoReport { moves, outcome })
}
