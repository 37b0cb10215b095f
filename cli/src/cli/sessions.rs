//! `namesock sessions` and `namesock status`: what this user's engines are doing, read from
//! their control sockets (`namesock::control`), like `wg show` and `ss`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use namesock::config::Config;
use namesock::control::{self, ControlError, EngineSnapshot, Survey};
use namesock::engine::snapshot::{Counters, PathSnapshot, SessionSnapshot, TicketCounters};
use namesock_identity::{KeyFileError, Keypair};
use namesock_resolver::Gns;

#[derive(Debug, thiserror::Error)]
enum SessionsError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("namesock configuration: {0}")]
    Config(#[from] namesock::config::ConfigError),
    #[error("identity {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
}

pub fn commands() -> Vec<Command> {
    vec![
        Command::new("sessions")
            .about("Show this user's live sessions: peers, paths, RTTs, bytes and moves")
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("Print every engine's snapshot as JSON (for scripts)"),
            )
            .arg(
                Arg::new("watch")
                    .long("watch")
                    .action(ArgAction::SetTrue)
                    .help("Refresh every second until interrupted"),
            )
            .arg(
                Arg::new("watch-count")
                    .long("watch-count")
                    .value_name("N")
                    .value_parser(clap::value_parser!(u64).range(1..))
                    .help("With --watch: stop after N refreshes"),
            ),
        Command::new("status")
            .about("Show this identity, whether this user's engines serve (and which ports), and the GNS in use"),
    ]
}

pub fn dispatch(name: &str, matches: &ArgMatches) -> Option<ExitCode> {
    let result = match name {
        "sessions" => sessions(matches),
        "status" => status(),
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namesock {name}: {e}");
            ExitCode::FAILURE
        }
    })
}

/// Every engine of this user; no control directory at all means no engine ran.
fn survey() -> Result<Survey, ControlError> {
    match control::survey() {
        Err(ControlError::NoDirectory { .. }) => Ok(Survey::default()),
        other => other,
    }
}

fn sessions(matches: &ArgMatches) -> Result<(), SessionsError> {
    let json = matches.get_flag("json");
    let watch = matches.get_flag("watch") || matches.contains_id("watch-count");
    let count = matches.get_one::<u64>("watch-count").copied();
    let mut round = 0u64;
    loop {
        let survey = survey()?;
        for e in &survey.errors {
            eprintln!("namesock sessions: {e}");
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&survey.engines)?);
        } else {
            if watch {
                // Clear the screen like `watch` does, when on a terminal.
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    print!("\x1b[H\x1b[2J");
                }
            }
            print!("{}", render(&survey.engines));
        }
        round += 1;
        if !watch || count.is_some_and(|n| round >= n) {
            return Ok(());
        }
        // Ctrl-C ends the process (the default SIGINT action): nothing to clean up.
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "?".to_owned(), |a| a.to_string())
}

fn path_line(out: &mut String, p: &PathSnapshot) {
    let state = serde_json::to_value(p.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let _ = write!(
        out,
        "    path {}: {} -> {}  {state}",
        p.id,
        addr(p.local),
        addr(p.remote)
    );
    if let Some(rtt) = p.rtt_ms {
        let _ = write!(out, ", rtt {rtt} ms");
    }
    if let Some(rtt) = p.tcp_rtt_ms {
        let _ = write!(out, " (tcp {rtt} ms)");
    }
    if let Some(heard) = p.last_heard_ms {
        let _ = write!(out, ", heard {} ago", human_ms(heard));
    }
    if let Some(cc) = &p.congestion {
        let _ = write!(out, ", {cc}");
    }
    out.push('\n');
}

fn session_block(out: &mut String, s: &SessionSnapshot) {
    let role = match s.role {
        namesock::engine::snapshot::RoleName::Client => "client",
        namesock::engine::snapshot::RoleName::Server => "server",
    };
    let state = serde_json::to_value(s.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let peer = match (&s.peer_name, &s.peer_guid) {
        (Some(n), Some(g)) => format!("{n} ({g})"),
        (None, Some(g)) => g.clone(),
        (Some(n), None) => format!("{n} (not yet verified)"),
        (None, None) => "(handshaking)".to_owned(),
    };
    let opened = if s.by_ticket {
        ", opened with a ticket"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  session {} [{role}] peer {peer} port {}{opened}",
        s.id, s.service_port
    );
    let _ = writeln!(
        out,
        "    state {state}, age {}, sent {}, received {}, unacknowledged {} (at most {}), buffers {}",
        human_ms(s.age_ms),
        human_bytes(s.bytes_sent),
        human_bytes(s.bytes_received),
        human_bytes(s.unacked),
        human_bytes(s.replay_limit),
        human_bytes(s.buffer_bytes)
    );
    for p in &s.paths {
        path_line(out, p);
    }
    for m in &s.moves {
        let _ = writeln!(
            out,
            "    moved {} ago: path {} ({} -> {}) to path {} ({} -> {}), outage {}",
            human_ms(m.ago_ms),
            m.from_path,
            addr(m.from_local),
            addr(m.from_remote),
            m.to_path,
            addr(m.to_local),
            addr(m.to_remote),
            human_ms(m.outage_ms)
        );
    }
}

/// How this engine's sessions opened, when any used a ticket (`namesock::ticket`).
fn tickets_line(out: &mut String, t: &TicketCounters) {
    if *t == TicketCounters::default() {
        return;
    }
    let _ = writeln!(
        out,
        "  tickets: {} held ({} taken over from an earlier process); OPENs sent {} (answered at once, early data: {}; of those reset: {}), fell back to HELLO {}; sessions opened by OPEN {}; spare paths dialled {}, used {}, lost {}",
        t.held,
        t.adopted,
        t.opens_sent,
        t.opens_early,
        t.early_reset,
        t.opens_fell_back,
        t.opens_accepted,
        t.spare_paths_dialled,
        t.spare_paths_used,
        t.spare_paths_lost
    );
}

fn counters_line(out: &mut String, c: &Counters) {
    let mut parts = Vec::new();
    for (what, map) in [
        ("paths refused", &c.paths_refused),
        ("frames refused", &c.frames_refused),
        ("malformed", &c.malformed),
        ("no signed answer (rate limit)", &c.unanswered),
    ] {
        if !map.is_empty() {
            let list: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
            parts.push(format!("{what}: {}", list.join(", ")));
        }
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "  refused: {}", parts.join("; "));
    }
}

/// `wg show` style: one block per engine, one per session, indented path and move lines.
fn render(engines: &[EngineSnapshot]) -> String {
    let mut out = String::new();
    if engines.is_empty() {
        out.push_str("no namesock engine of this user is running\n");
        return out;
    }
    for e in engines {
        let _ = writeln!(out, "engine {}: {}", e.pid, e.command);
        if let Some(s) = &e.server {
            let name = s
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
            let _ = writeln!(
                out,
                "  serving as {}{name}, engine port {}, ports {}",
                s.guid,
                s.engine_port,
                ports.join(", ")
            );
        }
        if e.sessions.is_empty() {
            out.push_str("  no sessions\n");
        }
        for s in &e.sessions {
            session_block(&mut out, s);
        }
        tickets_line(&mut out, &e.tickets);
        counters_line(&mut out, &e.counters);
    }
    out
}

fn status() -> Result<(), SessionsError> {
    let cfg = Config::load()?;
    let key_path = cfg.key_path();
    match Keypair::load(&key_path) {
        Ok(key) => println!("identity: {} ({})", key.guid(), key_path.display()),
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "identity: none at {} (a client gets a fresh key per process; `namesock keygen` makes one)",
                key_path.display()
            )
        }
        Err(source) => {
            return Err(SessionsError::Key {
                path: key_path,
                source,
            });
        }
    }
    if let Some(name) = &cfg.name {
        println!("name: {name}");
    }
    match Gns::from_env() {
        Ok(gns) => println!("gns: {} (zone {})", gns.backend_description(), gns.zone()),
        Err(e) => println!("gns: unusable: {e}"),
    }
    println!("control: {}", control::dir_path().display());
    let survey = survey()?;
    for e in &survey.errors {
        eprintln!("namesock status: {e}");
    }
    let serving: Vec<&EngineSnapshot> = survey
        .engines
        .iter()
        .filter(|e| e.server.is_some())
        .collect();
    println!(
        "engines: {} running, {} serving",
        survey.engines.len(),
        serving.len()
    );
    for e in serving {
        if let Some(s) = &e.server {
            let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
            println!(
                "  {} {}: serves {} as {}{} on engine port {}, {} sessions",
                e.pid,
                e.command,
                ports.join(", "),
                s.guid,
                s.name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                s.engine_port,
                e.sessions.len()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use namesock::engine::snapshot::{
        MoveSnapshot, PathStateName, RoleName, ServerSnapshot, StateName,
    };

    #[test]
    fn one_block_per_session_with_indented_paths_and_moves() {
        let counters = Counters {
            paths_refused: [("PortNotServed".to_owned(), 2)].into(),
            unanswered: [("PortNotServed".to_owned(), 1)].into(),
            ..Counters::default()
        };
        let engine = EngineSnapshot {
            pid: 42,
            uid: 1000,
            command: "python3 -m http.server 8000".into(),
            server: Some(ServerSnapshot {
                guid: "g".repeat(32),
                name: Some("web".into()),
                engine_port: 9000,
                ports: vec![8000],
            }),
            sessions: vec![SessionSnapshot {
                id: 1,
                role: RoleName::Server,
                local_guid: "g".repeat(32),
                peer_guid: Some("p".repeat(32)),
                peer_name: None,
                service_port: 8000,
                state: StateName::Live,
                age_ms: 65_000,
                bytes_sent: 3 << 20,
                bytes_received: 80,
                unacked: 0,
                replay_limit: 128 << 10,
                buffer_bytes: 200 << 10,
                paths: vec![PathSnapshot {
                    id: 2,
                    state: PathStateName::Active,
                    local: Some("10.0.0.2:9000".parse().unwrap()),
                    remote: Some("10.0.2.2:4000".parse().unwrap()),
                    rtt_ms: Some(0.4),
                    tcp_rtt_ms: Some(0.021),
                    last_heard_ms: Some(5),
                    congestion: Some("cubic".into()),
                }],
                moves: vec![MoveSnapshot {
                    from_path: 1,
                    to_path: 2,
                    from_local: Some("10.0.0.2:9000".parse().unwrap()),
                    from_remote: Some("10.0.1.2:4000".parse().unwrap()),
                    to_local: Some("10.0.0.2:9000".parse().unwrap()),
                    to_remote: Some("10.0.2.2:4000".parse().unwrap()),
                    ago_ms: 2500,
                    outage_ms: 120,
                }],
                by_ticket: true,
            }],
            counters,
            tickets: TicketCounters {
                held: 1,
                adopted: 1,
                opens_sent: 0,
                opens_fell_back: 0,
                opens_early: 0,
                early_reset: 0,
                opens_accepted: 7,
                spare_paths_dialled: 3,
                spare_paths_used: 2,
                spare_paths_lost: 1,
            },
        };
        let expected = format!(
            "engine 42: python3 -m http.server 8000\n\
             \x20 serving as {g} (web), engine port 9000, ports 8000\n\
             \x20 session 1 [server] peer {p} port 8000, opened with a ticket\n\
             \x20   state live, age 1m05s, sent 3.00 MiB, received 80 B, unacknowledged 0 B (at most 128.00 KiB), buffers 200.00 KiB\n\
             \x20   path 2: 10.0.0.2:9000 -> 10.0.2.2:4000  active, rtt 0.4 ms (tcp 0.021 ms), heard 5 ms ago, cubic\n\
             \x20   moved 2.5 s ago: path 1 (10.0.0.2:9000 -> 10.0.1.2:4000) to path 2 (10.0.0.2:9000 -> 10.0.2.2:4000), outage 120 ms\n\
             \x20 tickets: 1 held (1 taken over from an earlier process); OPENs sent 0 (answered at once, early data: 0; of those reset: 0), fell back to HELLO 0; sessions opened by OPEN 7; spare paths dialled 3, used 2, lost 1\n\
             \x20 refused: paths refused: PortNotServed 2; no signed answer (rate limit): \
             PortNotServed 1\n",
            g = "g".repeat(32),
            p = "p".repeat(32)
        );
        assert_eq!(render(&[engine]), expected);
        assert_eq!(render(&[]), "no namesock engine of this user is running\n");
    }
}
