//! The README's benchmark figures, generated from `bench/results` (never copied by hand).
//!
//! `bench-readme` (run at the end of `bench/run.sh`) rewrites the part of `README.md` between
//! [`BEGIN`] and [`END`] from `bench.md` (the table and its notes), `machine.txt` (the machine
//! and the date) and `criterion.txt` (the micro-benchmarks); the prose there is a template
//! whose every figure comes from those files. A test checks that the committed README equals
//! what the committed results produce, so a hand edit or a stale copy fails.

use std::fmt::Write as _;
use std::path::Path;

use crate::table::{
    LINK_GOAL, LINK_KBITS, LINK_SECTION, LOOKUP_PEER, LOOPBACK_PEER, PREVIOUS_PEER, RELAY_PEER,
    SOCAT_PEER, added, fig, link_label, link_metric, times,
};

/// The line before the generated part of the README.
pub const BEGIN: &str = "<!-- bench:begin: generated from bench/results by bench-readme (bench/run.sh); do not edit -->";
/// The line after it.
pub const END: &str = "<!-- bench:end -->";

/// The scale section's plot in the results directory.
pub const SCALE_PNG: &str = "scale.png";

/// What went wrong: a file missing, or a figure it should hold.
pub type Error = String;

/// The result files the README section is made from.
#[derive(Debug, Clone)]
pub struct Results {
    /// `bench.md`: a header line, the table, the notes.
    pub bench_md: String,
    /// `machine.txt`: `uname -r`, `nproc`, memory, `uptime`, the UTC date.
    pub machine: String,
    /// `criterion.txt`: the output of the criterion benches.
    pub criterion: String,
    /// Whether `scale.png` (the scale section's plot, drawn when gnuplot ran) is there.
    pub scale_plot: bool,
}

impl Results {
    /// Reads them from `dir` (`bench/results`).
    pub fn load(dir: &Path) -> Result<Results, Error> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        Ok(Results {
            bench_md: read("bench.md")?,
            machine: read("machine.txt")?,
            criterion: read("criterion.txt")?,
            scale_plot: dir.join(SCALE_PNG).is_file(),
        })
    }
}

/// The header line of `bench.md`: runs, load averages and the suite's duration.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    runs: String,
    load_before: String,
    load_after: String,
    minutes: String,
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn header(line: &str) -> Result<Header, Error> {
    let bad = || format!("bench.md: unexpected header line {line:?}");
    let first = |s: &str| s.split_whitespace().next().map(str::to_owned);
    Ok(Header {
        runs: first(between(line, "benchmarks: ", " run(s)").ok_or_else(bad)?).ok_or_else(bad)?,
        load_before: first(between(line, "load average ", " before").ok_or_else(bad)?)
            .ok_or_else(bad)?,
        load_after: first(between(line, " before and ", " after").ok_or_else(bad)?)
            .ok_or_else(bad)?,
        minutes: between(line, " after (", " min)")
            .ok_or_else(bad)?
            .to_owned(),
    })
}

/// `machine.txt` as `bench/run.sh` writes it.
#[derive(Debug, Clone, PartialEq)]
struct Machine {
    kernel: String,
    cores: String,
    memory: String,
    date: String,
}

fn machine(text: &str) -> Result<Machine, Error> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let line = |i: usize, what: &str| {
        lines
            .get(i)
            .filter(|l| !l.is_empty())
            .map(|l| (*l).to_owned())
            .ok_or_else(|| format!("machine.txt: line {} ({what}) is missing", i + 1))
    };
    Ok(Machine {
        kernel: line(0, "uname -r")?,
        cores: line(1, "nproc")?,
        memory: line(2, "memory")?,
        date: line(4, "date -u")?,
    })
}

/// One criterion benchmark: the middle (estimate) of its time and throughput intervals.
#[derive(Debug, Clone, PartialEq)]
pub struct Criterion {
    pub name: String,
    pub time: String,
    pub thrpt: Option<String>,
}

/// The estimate in `[low unit mid unit high unit]`.
fn middle(interval: &str) -> Option<String> {
    let inner = between(interval, "[", "]")?;
    let words: Vec<&str> = inner.split_whitespace().collect();
    (words.len() == 6).then(|| format!("{} {}", words[2], words[3]))
}

/// Every benchmark of a criterion run's output, in order. The `change:` block (against an
/// earlier run) is skipped.
pub fn criterion(output: &str) -> Vec<Criterion> {
    let mut out: Vec<Criterion> = Vec::new();
    let mut in_change = false;
    let mut pending: Option<String> = None;
    for line in output.lines() {
        let trimmed = line.trim();
        let starts_flush = !line.starts_with(char::is_whitespace) && !trimmed.is_empty();
        let noise = [
            "Benchmarking ",
            "Found ",
            "Running ",
            "Compiling ",
            "Finished ",
            "Warning",
        ];
        if starts_flush && !noise.iter().any(|n| trimmed.starts_with(n)) {
            in_change = false;
            let (name, rest) = match line.find("time:") {
                Some(at) => (line[..at].trim(), Some(&line[at..])),
                None => (trimmed, None),
            };
            match rest {
                Some(rest) => {
                    if let Some(time) = middle(rest) {
                        out.push(Criterion {
                            name: name.to_owned(),
                            time,
                            thrpt: None,
                        });
                    }
                    pending = None;
                }
                None => pending = Some(name.to_owned()),
            }
        } else if trimmed.starts_with("change:") {
            in_change = true;
        } else if in_change {
            continue;
        } else if let Some(rest) = trimmed.strip_prefix("time:") {
            if let (Some(name), Some(time)) = (pending.take(), middle(rest)) {
                out.push(Criterion {
                    name,
                    time,
                    thrpt: None,
                });
            }
        } else if let Some(rest) = trimmed.strip_prefix("thrpt:") {
            // The first throughput line after a time belongs to that benchmark.
            let last = out.last_mut().filter(|c| c.thrpt.is_none());
            last.into_iter().for_each(|c| c.thrpt = middle(rest));
        }
    }
    out
}

/// The table of `bench.md`, cells trimmed, without the header and separator rows.
fn table_rows(bench_md: &str) -> Vec<Vec<String>> {
    bench_md
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// Columns of the table (as in [`crate::table::HEADER`]).
const NAMESOCK: usize = 2;
const PREVIOUS: usize = 3;
const PLAIN: usize = 4;
const PEER: usize = 5;
const VS: usize = 6;
const VS_PREVIOUS: usize = 7;
const GOAL: usize = 8;

/// What the template says when the results lack a figure (a section not run).
const MISSING: &str = "(not measured)";

struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    fn row(&self, section: &str, metric: &str) -> Option<&Vec<String>> {
        self.rows.iter().find(|r| {
            r.first().is_some_and(|s| s.starts_with(section))
                && r.get(1).is_some_and(|m| m == metric)
        })
    }

    fn cell(&self, section: &str, metric: &str, col: usize) -> String {
        self.row(section, metric)
            .and_then(|r| r.get(col))
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or_else(|| MISSING.to_owned())
    }

    /// The rows of `section` whose metric starts with `prefix` and contains `what`, with
    /// the number after the prefix, in order.
    fn steps(&self, section: &str, prefix: &str, what: &str) -> Vec<(u64, &Vec<String>)> {
        self.rows
            .iter()
            .filter(|r| r.first().is_some_and(|s| s.starts_with(section)))
            .filter_map(|r| {
                let metric = r.get(1)?;
                let n = metric
                    .strip_prefix(prefix)?
                    .split(':')
                    .next()?
                    .parse()
                    .ok()?;
                metric.contains(what).then_some((n, r))
            })
            .collect()
    }
}

/// A peer cell without its label: `socat×2: 1059 MB/s` -> `1059 MB/s`.
fn value(cell: &str) -> &str {
    cell.rsplit(": ").next().unwrap_or(cell)
}

/// The value labelled `label` in a cell of `label: value; other: value` parts.
fn labelled<'a>(cell: &'a str, label: &str) -> &'a str {
    cell.split("; ")
        .find_map(|part| part.strip_prefix(label)?.strip_prefix(": "))
        .unwrap_or(MISSING)
}

/// The number a cell starts with: `456 µs (known IP)` -> 456.
fn leading(cell: &str) -> Option<f64> {
    cell.split_whitespace().next()?.parse().ok()
}

/// A share as the table writes it: `×0.826` -> 0.826.
fn times_value(cell: &str) -> Option<f64> {
    cell.trim_start_matches('×').parse().ok()
}

/// What the two loopback hops alone cost a byte (the CPU rows' `loopback` figure: plain TCP
/// over 127.0.0.1), and whether issue 19's CPU goal lies below it; empty when not measured.
fn loopback_floor(t: &Table, cpu_metric: &str) -> String {
    let peer = t.cell("CPU", cpu_metric, PEER);
    let loopback = labelled(&peer, LOOPBACK_PEER);
    let (Some(hop), Some(plain)) = (
        leading(loopback),
        leading(&t.cell("CPU", cpu_metric, PLAIN)),
    ) else {
        return String::new();
    };
    let floor = plain + 2.0 * hop;
    let mut text = format!(
        " Plain TCP over 127.0.0.1 on one host costs {loopback} per GiB in the same run; a \
         namesock byte crosses two such hops besides the path, so relaying alone comes to \
         about {} s per GiB ({} of plain TCP) before anything is sealed.",
        fig(floor),
        times(Some(floor / plain)),
    );
    if floor > 1.5 * plain {
        text.push_str(
            " The goal of 1.5 × plain's CPU lies below that: a relayed design cannot reach it \
             on this machine, whatever the engine does (docs/architecture.md, \"Relay instead \
             of read/write hooks\").",
        );
    }
    text
}

/// What a relay with none of namesock's protocol moves with the most busy sessions (the peer
/// cell of each busy step's throughput row: `relay×2 (no protocol): 1223 MB/s (×0.720 of
/// plain)`), whether issue 19's goal for 1,000 lies above it, and the smaller steps where
/// the relay moved more than namesock; empty when not measured.
fn busy_relay_floor(steps: &[(u64, &Vec<String>)]) -> String {
    let cell = |row: &Vec<String>, col: usize| row.get(col).cloned().unwrap_or_default();
    let Some((n, top)) = steps.last() else {
        return String::new();
    };
    let peer = cell(top, PEER);
    let Some((rate, share)) = labelled(&peer, RELAY_PEER).split_once(" (") else {
        return String::new();
    };
    let share = share.trim_end_matches(" of plain)");
    let mut text = format!(
        " A relay on each host with none of namesock's protocol (`nb-peer relay`, the same \
         three TCP connections per session, as many open as namesock's sessions) moves {rate} \
         with {n} busy sessions, {share} of plain TCP."
    );
    let relay_ratio = times_value(share);
    if *n == 1000 && relay_ratio.is_some_and(|r| r < 0.8) {
        text.push_str(" The goal of 0.8 × plain lies above what relaying alone moves here.");
    }
    // A step where the relay moved a tenth or more beyond namesock: there the engine's own
    // work is part of the gap.
    let ahead: Vec<String> = steps
        .iter()
        .filter_map(|(n, row)| {
            let ns = cell(row, NAMESOCK);
            let peer = cell(row, PEER);
            let relay = labelled(&peer, RELAY_PEER).split(" (").next()?.to_owned();
            (leading(&relay)? > 1.1 * leading(&ns)?)
                .then(|| format!("{relay} against {ns} with {n}"))
        })
        .collect();
    if !ahead.is_empty() {
        let _ = write!(
            text,
            " Where the relays moved a tenth or more beyond namesock ({}), the engine's own \
             work is part of the gap.",
            ahead.join(", ")
        );
    }
    text
}

/// What a relay with none of namesock's protocol costs a new connection (the connect rows'
/// `relay×2` figures), and whether issue 19's goals lie below it; empty when not measured.
fn relay_floor(t: &Table, later: &str) -> String {
    let sequential = "sequential requests/s, one process (connect, 1 byte echoed, close)";
    let relay = labelled(&t.cell("connect", later, PEER), RELAY_PEER).to_owned();
    let relay_rate = labelled(&t.cell("connect", sequential, PEER), RELAY_PEER).to_owned();
    let (Some(relay_us), Some(relay_per_s)) = (leading(&relay), leading(&relay_rate)) else {
        return String::new();
    };
    let ns_us = leading(&t.cell("connect", later, NAMESOCK));
    let plain_us = leading(&t.cell("connect", later, PLAIN));
    let plain_per_s = leading(&t.cell("connect", sequential, PLAIN));
    let mut text = format!(
        " A relay on each host that only copies bytes (`nb-peer relay`: one event loop, plain \
         TCP, none of namesock's protocol; the same three TCP connections, but the path dialled \
         at each connect) takes {relay} to the first byte and makes {relay_rate} sequential \
         requests, against namesock's {} and {}: names, encryption and resumption cost {} over \
         that relay, and the relay costs {} over plain TCP.",
        t.cell("connect", later, NAMESOCK),
        t.cell("connect", sequential, NAMESOCK),
        added(ns_us, Some(relay_us), "µs"),
        added(Some(relay_us), plain_us, "µs"),
    );
    let below_floor = plain_us.is_some_and(|p| relay_us > p + 100.0)
        || plain_per_s.is_some_and(|p| relay_per_s < 0.9 * p);
    if below_floor {
        text.push_str(
            " Issue 19's connect goals (+100 µs, 0.9 of plain's rate) lie below what relaying \
             alone costs on this machine: the design keeps the program's socket a kernel \
             socket that its engine relays (docs/architecture.md, \"Relay instead of read/write \
             hooks\"), so a cheaper engine \
             cannot meet them; only a connection that crosses fewer TCP connections could.",
        );
    }
    text
}

/// What is known of the limited links where one session stays below plain TCP's goal, and
/// whose the shortfall is: relaying's where namesock moves what the relay pair moves, the
/// engine's where the relays move more (`missed`: each link's [`MissedLink`]).
fn link_missed_note(missed: &[MissedLink]) -> String {
    if missed.is_empty() {
        return String::new();
    }
    let speeds: Vec<&str> = missed.iter().map(|m| m.speed.as_str()).collect();
    let mut text = format!(
        " At {} one session stays below the goal, and it is neither the engine's in-flight \
         share nor the path's congestion control that holds it (4 MiB in flight instead of 1 \
         MiB, and Cubic paths instead of BBR, moved the same; docs/architecture.md, \
         \"Congestion control\"), nor the spurious retransmissions its paths show after \
         reordering, which plain TCP's connection over the same link shows too.",
        speeds.join(" and ")
    );
    let measured: Vec<(&MissedLink, &str, f64, f64)> = missed
        .iter()
        .filter_map(|m| {
            let relay = m.relay.as_deref()?;
            Some((m, relay, times_value(relay)?, times_value(&m.namesock)?))
        })
        .collect();
    if measured.len() < missed.len() {
        text.push_str(" What would close it is not known yet.");
        return text;
    }
    let relay: Vec<String> = measured
        .iter()
        .map(|(m, cell, ..)| format!("{cell} at {}", m.speed))
        .collect();
    let _ = write!(
        text,
        " A relay on each host with none of namesock's protocol (`nb-peer relay`) moves, of \
         plain TCP's rate, {}",
        relay.join(" and ")
    );
    let reached: Vec<&str> = measured
        .iter()
        .filter(|(.., relay, _)| *relay >= LINK_GOAL)
        .map(|(m, ..)| m.speed.as_str())
        .collect();
    // Where namesock moved a twentieth or more less than the relays, part is the engine's.
    let behind: Vec<String> = measured
        .iter()
        .filter(|(.., relay, ns)| *ns < 0.95 * relay)
        .map(|(m, cell, ..)| format!("{} against {cell} at {}", m.namesock, m.speed))
        .collect();
    if !reached.is_empty() {
        let _ = write!(
            text,
            ", and reaches the goal at {}, where namesock does not: there the shortfall is the \
             engine's.",
            reached.join(" and ")
        );
    } else if behind.is_empty() {
        text.push_str(": the shortfall is relaying's, not the engine's.");
    } else {
        let _ = write!(
            text,
            ": the goal lies above what relaying alone moves, and namesock moves less than the \
             relays ({}), so part of the shortfall there is the engine's.",
            behind.join(", ")
        );
    }
    text
}

/// A limited link where one session missed the goal: its speed, the relay pair's share of
/// plain TCP there (when measured), namesock's.
struct MissedLink {
    speed: String,
    relay: Option<String>,
    namesock: String,
}

/// The part of the README between the markers (markers excluded), from the results.
pub fn section(results: &Results) -> Result<String, Error> {
    let head = header(results.bench_md.lines().next().unwrap_or_default())?;
    let m = machine(&results.machine)?;
    let table: String = results
        .bench_md
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let notes: Vec<&str> = results
        .bench_md
        .lines()
        .filter(|l| l.starts_with("- "))
        .collect();
    let t = Table {
        rows: table_rows(&results.bench_md),
    };
    let benches = criterion(&results.criterion);
    let bench = |name: &str| benches.iter().find(|c| c.name == name);
    let time = |name: &str| bench(name).map_or(MISSING.to_owned(), |c| c.time.clone());
    let thrpt = |name: &str| {
        bench(name)
            .and_then(|c| c.thrpt.clone())
            .unwrap_or_else(|| MISSING.to_owned())
    };

    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "Taken on {} (the suite's start) on the project's build machine: {} cores, {}, `uname -r` \
         {}; load average {} before and {} after the {}-minute suite, {} runs per figure unless \
         noted, medians. The machine is shared with CI, so single figures move by ±15 %.",
        m.date,
        m.cores,
        m.memory,
        m.kernel,
        head.load_before,
        head.load_after,
        head.minutes,
        head.runs
    );
    let _ = writeln!(w);
    w.push_str(&table);
    if !notes.is_empty() {
        let _ = writeln!(w);
        for note in &notes {
            let _ = writeln!(w, "{note}");
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "The criterion benches (`bench/results/criterion.txt`): a DATA frame of 32 KiB encodes in \
         {} ({}) and decodes into an owned frame in {} ({}: an allocation and a copy; the engine \
         decodes DATA in place); a HELLO decodes in {} (key check); two in-memory sessions move \
         16 MiB at {} (through the codec, every record sealed and opened with AES-256-GCM); a full \
         handshake (X25519 both ways, sign and verify both ways, key schedule) takes {}, a new \
         session from a ticket (OPEN and OPEN_ACK: no X25519, no signature) {}.",
        time("wire/data/encode/32768"),
        thrpt("wire/data/encode/32768"),
        time("wire/data/decode/32768"),
        thrpt("wire/data/decode/32768"),
        time("wire/control/decode/hello"),
        thrpt("session/transfer/16 MiB one way/sealed"),
        time(HANDSHAKE),
        time(OPEN),
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "### Where namesock misses, by how much, and what would close it"
    );
    let _ = writeln!(w);

    let bulk = "bulk, 1 session";
    let cs = "throughput client->server";
    let sc = "throughput server->client";
    let cpu_cs = "CPU per GiB relayed, client->server (both ends)";
    let _ = writeln!(
        w,
        "- **Bulk throughput: {} and {} of plain TCP (goal {} client->server, {} \
         server->client)**, {} and {} against {} and \
         {} (client->server, server->client), using {} plain TCP's CPU per GiB ({} against {}); \
         socat×2 moves {} with {} per GiB. On 2 cores the two programs and the two engine \
         threads compete for the CPU, so CPU per byte is throughput. Each byte crosses a \
         loopback socket between program and engine at both ends, and in user space it is \
         copied twice each way (see \"The data path\" in \
         [docs/architecture.md](docs/architecture.md)). Those loopback hops run Reno whatever \
         the host's default (BBR here, whose model of a path costs CPU where there is none to \
         control); the flow path runs the host's default, as plain TCP does, unless \
         `NAMESOCK_PATH_CONGESTION` names another (docs/architecture.md, \"Congestion \
         control\", with both measured).{} Records sealed in the kernel (kTLS) and spliced \
         from the program's socket to the path would spare the engine's copies, but this \
         kernel cannot do it (its TCP upper-layer protocols are MPTCP's only, no `tls`), and \
         each byte would still cross both loopback hops; a Unix socketpair for the program's \
         socket would not help, since on this kernel it costs as much per byte as loopback TCP \
         (docs/architecture.md, \"Where the bytes' CPU goes\").",
        t.cell(bulk, cs, VS),
        t.cell(bulk, sc, VS),
        t.cell(bulk, cs, GOAL),
        value(&t.cell(bulk, sc, GOAL)),
        t.cell(bulk, cs, NAMESOCK),
        t.cell(bulk, sc, NAMESOCK),
        t.cell(bulk, cs, PLAIN),
        t.cell(bulk, sc, PLAIN),
        t.cell("CPU", cpu_cs, VS),
        t.cell("CPU", cpu_cs, NAMESOCK),
        t.cell("CPU", cpu_cs, PLAIN),
        labelled(&t.cell(bulk, cs, PEER), SOCAT_PEER),
        labelled(&t.cell("CPU", cpu_cs, PEER), SOCAT_PEER),
        loopback_floor(&t, cpu_cs),
    );
    let cpu_sc = "CPU per GiB relayed, server->client (both ends)";
    let rr = "request/response 64 B, median round trip";
    let later = "time to first byte, new connection (median of later connects)";
    let first = "time to first byte, first connection of a process (engine start)";
    let limited: Vec<Option<u64>> = LINK_KBITS.into_iter().filter(Option::is_some).collect();
    let speeds: Vec<String> = limited.iter().map(|k| link_label(*k)).collect();
    let link_col = |col: usize, label: Option<&str>| {
        limited
            .iter()
            .map(|k| {
                let cell = t.cell(LINK_SECTION, &link_metric(*k), col);
                match label {
                    Some(label) => labelled(&cell, label).to_owned(),
                    None => cell,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unthrottled = link_metric(None);
    let missed_links: Vec<MissedLink> = limited
        .iter()
        .filter(|k| {
            t.cell(LINK_SECTION, &link_metric(**k), GOAL)
                .contains("missed")
        })
        .map(|k| {
            let peer = t.cell(LINK_SECTION, &link_metric(*k), PEER);
            let relay = Some(labelled(&peer, RELAY_PEER)).filter(|r| *r != MISSING);
            MissedLink {
                speed: link_label(*k),
                relay: relay.map(str::to_owned),
                namesock: t.cell(LINK_SECTION, &link_metric(*k), VS),
            }
        })
        .collect();
    let _ = writeln!(
        w,
        "- **What encryption costs (protocol 2, every record sealed with AES-256-GCM, against the \
         previous release, protocol 1 unencrypted, both measured in this run)**: bulk {} and {} \
         of the previous release ({} and {} against {} and {}, client->server and \
         server->client); CPU per GiB {} and {} ({} and {} against {} and {}); a 64-byte round \
         trip {} ({} against {}); first byte of a new connection {} ({} against {}; {}), of a \
         process's first connection {} ({}). Over links limited to {} namesock moves {} of \
         plain TCP ({} MB/s), the previous release {}; unthrottled {} of plain and {} of the \
         previous release ({}).{}",
        t.cell(bulk, cs, VS_PREVIOUS),
        t.cell(bulk, sc, VS_PREVIOUS),
        t.cell(bulk, cs, NAMESOCK),
        t.cell(bulk, sc, NAMESOCK),
        t.cell(bulk, cs, PREVIOUS),
        t.cell(bulk, sc, PREVIOUS),
        t.cell("CPU", cpu_cs, VS_PREVIOUS),
        t.cell("CPU", cpu_sc, VS_PREVIOUS),
        t.cell("CPU", cpu_cs, NAMESOCK),
        t.cell("CPU", cpu_sc, NAMESOCK),
        t.cell("CPU", cpu_cs, PREVIOUS),
        t.cell("CPU", cpu_sc, PREVIOUS),
        t.cell("latency", rr, VS_PREVIOUS),
        t.cell("latency", rr, NAMESOCK),
        t.cell("latency", rr, PREVIOUS),
        t.cell("connect", later, VS_PREVIOUS),
        t.cell("connect", later, NAMESOCK),
        t.cell("connect", later, PREVIOUS),
        t.cell("connect", later, GOAL),
        t.cell("connect", first, VS_PREVIOUS),
        t.cell("connect", first, GOAL),
        speeds.join(", "),
        link_col(VS, None),
        link_col(NAMESOCK, None).replace(" MB/s", ""),
        link_col(PEER, Some(PREVIOUS_PEER)),
        t.cell(LINK_SECTION, &unthrottled, VS),
        t.cell(LINK_SECTION, &unthrottled, VS_PREVIOUS),
        t.cell(LINK_SECTION, &unthrottled, GOAL),
        link_missed_note(&missed_links),
    );
    let _ = writeln!(
        w,
        "- **Request/response: {} per 64-byte round trip** ({} against {}; socat×2: {}). Each \
         message crosses two loopback TCP hops and an engine loop turn per engine, each way; a \
         Unix socketpair for the program's socket would take a few microseconds off each hop \
         (docs/architecture.md, \"Where the bytes' CPU goes\").",
        t.cell("latency", rr, VS),
        t.cell("latency", rr, NAMESOCK),
        t.cell("latency", rr, PLAIN),
        value(&t.cell("latency", rr, PEER)),
    );
    let file_gns = t
        .row(
            "GNS",
            "file store: publish -> visible (median, p99); verified resolves/s",
        )
        .and_then(|r| r.get(NAMESOCK))
        .and_then(|c| c.rsplit("; ").next())
        .map(|c| c.trim_end_matches("/s"))
        .unwrap_or(MISSING)
        .to_owned();
    // The connect rows over the delay line (their labels name the delay the suite added).
    let far_row = |what: &str| {
        t.rows.iter().find(|r| {
            r.first().is_some_and(|s| s.starts_with("connect"))
                && r.get(1).is_some_and(|m| {
                    m.starts_with(&format!("time to first byte, {what}, "))
                        && m.contains("more round trip")
                })
        })
    };
    let far_first = far_row("first connection of a process").map_or_else(String::new, |r| {
        let col = |i: usize| r.get(i).map_or(MISSING, String::as_str);
        format!(
            ". A process's first connection over that path takes {}, against {} for plain TCP \
             and {} for the previous release ({}): it pays its engine's start, and from the \
             second process of a user on it opens with the ticket the process before handed \
             on at its exit (`NAMESOCK_SHARE_TICKETS`), its request behind the OPEN",
            col(NAMESOCK),
            col(PLAIN),
            col(PREVIOUS),
            col(PEER)
        )
    });
    let far = far_row("new connection").map_or_else(
        || "Over a longer path: (not measured)".to_owned(),
        |r| {
            let col = |i: usize| r.get(i).map_or(MISSING, String::as_str);
            let longer = col(1)
                .trim_start_matches("time to first byte, new connection, ")
                .trim_end_matches(" more round trip (router delay line)");
            format!(
                "Over a path {longer} longer in round trip (the test bed's delay line at the \
                     router), a new connection's first byte takes {}, against {} for plain TCP \
                     and {} for the previous release ({})",
                col(NAMESOCK),
                col(PLAIN),
                col(PREVIOUS),
                col(PEER)
            )
        },
    ) + &far_first;
    let _ = writeln!(
        w,
        "- **New connection by name: {}** ({} against {}, and {} after a \
         `getaddrinfo` from `/etc/hosts`); a process's first connection (engine start): {}. \
         A full handshake's cryptography takes {} (criterion), and only the first connection \
         pays it: a later connect to the same server and port within a minute, in the same \
         process or in a later process of the user (the ticket passes on at exit), opens with \
         one OPEN frame under the previous session's ticket ({} in criterion: no X25519, no \
         signature) and starts from the record verified for its live session (no GNS lookup; \
         the first one looks it up and verifies it, file store: {} verified resolves per \
         second). The program's connect is answered at once and its first bytes follow the \
         OPEN (early data), on a TCP connection to the server's engine dialled ahead when the \
         session before was established (a spare path, `NAMESOCK_SPARE_PATHS`), so its first \
         answer comes one round trip after the connect: a round trip less than plain TCP, \
         whose handshake comes first. {far}. On this 2-core machine, where both \
         programs and both engines share the cores and a loopback round trip costs almost \
         nothing, what remains is work per connection, not waiting, and most of it the \
         kernel's: a request crosses three TCP connections (the program's socket to its \
         engine, the flow path, the delivery to the server's program) where plain TCP \
         crosses one, each with its handshake and close (docs/architecture.md, \"What a \
         connection costs the kernel\").{}",
        t.cell("connect", later, VS),
        t.cell("connect", later, NAMESOCK),
        t.cell("connect", later, PLAIN),
        labelled(&t.cell("connect", later, PEER), LOOKUP_PEER),
        t.cell("connect", first, VS),
        time(HANDSHAKE),
        time(OPEN),
        file_gns,
        relay_floor(&t, later),
    );
    let scale = "scale";
    let idle = t.steps(scale, "idle ", "RSS per session");
    let open = t.steps(scale, "idle ", "seconds to open them");
    let busy = t.steps(scale, "busy ", "throughput");
    let busy_rss = t.steps(scale, "busy ", "extra RSS");
    let busy_memory = t.steps(scale, "busy ", "extra memory");
    let rest = t.steps(scale, "rest ", "RSS per session");
    let at = |v: &[(u64, &Vec<String>)], last: bool, col: usize| {
        let step = if last { v.last() } else { v.first() };
        step.and_then(|(n, r)| Some((*n, r.get(col)?.clone())))
            .map_or((0, MISSING.to_owned()), |x| x)
    };
    let (idle_n, idle_rss) = at(&idle, true, NAMESOCK);
    let (open_n, open_vs) = at(&open, true, VS);
    let (busy_lo, busy_lo_vs) = at(&busy, false, VS);
    let (busy_hi, busy_hi_vs) = at(&busy, true, VS);
    let (rss_n, rss) = at(&busy_rss, false, NAMESOCK);
    let (memory_lo, memory_lo_plain) = (
        at(&busy_memory, false, NAMESOCK).1,
        at(&busy_memory, false, PLAIN).1,
    );
    let (memory_hi_n, memory_hi) = at(&busy_memory, true, NAMESOCK);
    let memory_hi_plain = at(&busy_memory, true, PLAIN).1;
    let memory_missed = busy_memory
        .iter()
        .any(|(_, r)| r.get(GOAL).is_some_and(|g| g.contains("missed")));
    let memory_why = if memory_missed {
        " Where a step misses the goal of 512 KiB, most of the kernel's part is that hop's \
         buffers, which a busy session keeps full; smaller ones moved less \
         (docs/architecture.md, \"Local hops\")."
    } else {
        ""
    };
    let (_, rest_rss) = at(&rest, true, NAMESOCK);
    let busy_floor = busy_relay_floor(&busy);
    let _ = writeln!(
        w,
        "- **Many sessions through one engine** (issue 19's goals: an idle session at most 8 KiB \
         of each process, a busy one at most 512 KiB, 1,000 busy sessions at least 0.8 of plain \
         TCP's aggregate; the goal column says which are met). Idle: {idle_rss} of process memory per session at {idle_n} sessions; \
         plain TCP programs hold almost nothing, since its buffers are kernel memory. Busy: \
         with {rss_n} busy sessions each holds {rss} more (its replay buffer starts at 64 KiB \
         and holds the larger of what its path's round trips call for and its share of the \
         1 MiB the engine keeps in flight for all its sending sessions; the peer's receive \
         buffer holds no more than that); with the kernel's TCP buffers, which hold all of \
         plain TCP's, {memory_lo} against plain TCP's {memory_lo_plain}, and {memory_hi} \
         against {memory_hi_plain} with {memory_hi_n} (the loopback hop between a program and \
         its engine holds at most 256 KiB of send buffer and 128 KiB of receive buffer: \
         docs/architecture.md, \
         \"Local hops\").{memory_why} Aggregate throughput falls \
         from {busy_lo_vs} of plain TCP with {busy_lo} busy sessions to {busy_hi_vs} with \
         {busy_hi}: every byte crosses three TCP connections (program, path, program) and two \
         single-threaded engines instead of one connection.{busy_floor} Back at rest after the \
         busy steps, \
         past a keepalive interval, the sessions hold {rest_rss} each (their buffers go at their \
         idle moment, and the engine hands freed memory back to the kernel once a second). \
         Opening {open_n} sessions one by one took {open_vs} as long as plain TCP.",
    );
    let moves = "move";
    let outage = |who: &str| t.cell(moves, &format!("outage, {who} (median of 3)"), NAMESOCK);
    let failover = "stall when the client's first of two links dies (median of 3)";
    let _ = writeln!(
        w,
        "- **Where namesock is ahead**: a move costs {} (client moves), {} (server moves) and {} \
         (both) of outage, and plain TCP dies; on the default timers (keepalive 5 s, dead 15 s) \
         a server move costs {}, since the client learns the new record from the GNS (the file \
         store's watch) without waiting for a timer. With one of two client interfaces going \
         down, namesock stalls {} against MPTCP's {}, because it hears the link go down by netlink and \
         switches at once to the path it keeps ready; MPTCP waits for a retransmission timeout \
         before reinjecting on the other subflow.",
        outage("client moves"),
        outage("server moves"),
        outage("both move"),
        outage("server moves, default timers"),
        t.cell("multihomed failover", failover, NAMESOCK),
        value(&t.cell("multihomed failover", failover, PEER)),
    );
    if results.scale_plot {
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "![aggregate throughput and memory per session against the number of sessions, \
             namesock and plain TCP](bench/results/{SCALE_PNG})"
        );
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "The scaling plot: on the left the aggregate throughput of {busy_lo} to {busy_hi} busy \
             sessions between one client and one server process (and, dotted, through a plain \
             relay on each host with none of namesock's protocol, where the results have it), \
             on the right the process \
             memory (client + server RSS) per idle session and the extra per busy one, session \
             counts and memory on log scales; plain TCP's programs keep their buffers in kernel \
             memory, which RSS does not count."
        );
    }
    // The prose wraps at the README's width; the table and the notes of bench.md stay as they are.
    let prose = |l: &str| {
        l.starts_with("- **")
            || l.starts_with("Taken on")
            || l.starts_with("The criterion")
            || l.starts_with("The scaling plot")
    };
    Ok(s.lines()
        .map(|l| {
            if prose(l) {
                wrap(l, WIDTH)
            } else {
                format!("{l}\n")
            }
        })
        .collect())
}

/// The README's line width.
const WIDTH: usize = 100;

/// `line` broken at spaces into lines of at most `width` characters (a longer word stays
/// whole), each ending in a newline; a list item's continuation lines are indented by two.
fn wrap(line: &str, width: usize) -> String {
    let indent = if line.starts_with("- ") { "  " } else { "" };
    let mut out = String::new();
    let mut current = String::new();
    for word in line.split(' ') {
        let len = current.chars().count();
        if len > indent.len() && len + 1 + word.chars().count() > width {
            out.push_str(current.trim_end());
            out.push('\n');
            current = indent.to_owned();
        } else if !current.is_empty() && current != indent {
            current.push(' ');
        }
        current.push_str(word);
    }
    out.push_str(current.trim_end());
    out.push('\n');
    out
}

/// `readme` with the part between the markers replaced by `section`.
pub fn splice(readme: &str, section: &str) -> Result<String, Error> {
    let begin = readme
        .find(BEGIN)
        .ok_or_else(|| format!("README.md has no line {BEGIN:?}"))?;
    let body = begin + BEGIN.len();
    let end = readme[body..]
        .find(END)
        .map(|e| body + e)
        .ok_or_else(|| format!("README.md has no line {END:?} after the begin marker"))?;
    Ok(format!(
        "{}\n{}{}",
        &readme[..body],
        section,
        &readme[end..]
    ))
}

/// The criterion bench of a whole handshake (`namesock/benches/session.rs`).
const HANDSHAKE: &str = "session/handshake (X25519, sign and verify both ways)";
/// The criterion bench of a new session from a ticket.
const OPEN: &str = "session/open (a ticket: OPEN and OPEN_ACK, no X25519, no signature)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{self, Row};

    const CRITERION: &str = "\
Benchmarking session/transfer/16 MiB one way/with codec: Analyzing
session/transfer/16 MiB one way/with codec
                        time:   [12.216 ms 12.369 ms 12.629 ms]
                        thrpt:  [1.2372 GiB/s 1.2633 GiB/s 1.2791 GiB/s]
                 change:
                        time:   [+24.469% +33.851% +44.147%] (p = 0.00 < 0.05)
                        thrpt:  [-30.626% -25.290% -19.659%]
                        Performance has regressed.
Found 3 outliers among 20 measurements (15.00%)
wire/data/encode/64     time:   [9.6097 ns 9.6744 ns 9.7471 ns]
                        thrpt:  [6.1151 GiB/s 6.1611 GiB/s 6.2025 GiB/s]
wire/control/decode/ack time:   [58.683 ns 60.486 ns 62.493 ns]
                 change: [-1.0% +0.5% +2.0%] (p = 0.58 > 0.05)
wire/control/encode/ping
                        time:   [5.7036 ns 5.8784 ns 6.0971 ns]
";

    #[test]
    fn criterion_takes_the_estimates_and_skips_the_change_block() {
        let c = criterion(CRITERION);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "session/transfer/16 MiB one way/with codec",
                "wire/data/encode/64",
                "wire/control/decode/ack",
                "wire/control/encode/ping"
            ]
        );
        assert_eq!(c[0].time, "12.369 ms");
        assert_eq!(c[0].thrpt.as_deref(), Some("1.2633 GiB/s"));
        assert_eq!(c[1].time, "9.6744 ns");
        assert_eq!(c[1].thrpt.as_deref(), Some("6.1611 GiB/s"));
        assert_eq!(c[2].thrpt, None);
        assert_eq!(c[3].time, "5.8784 ns");
    }

    #[test]
    fn header_and_machine_lines_parse() {
        let h = header("namesock benchmarks: 5 run(s) per figure unless noted, median; kernel 6.1, load average 1.27 1.04 1.05 before and 0.64 0.92 1.00 after (3.9 min).").unwrap();
        assert_eq!(
            h,
            Header {
                runs: "5".into(),
                load_before: "1.27".into(),
                load_after: "0.64".into(),
                minutes: "3.9".into()
            }
        );
        let m =
            machine("6.1\n2\n23 GiB\n 12:30:20 up 8:52, load average: 1\n2026-11-22 12:30 UTC\n")
                .unwrap();
        assert_eq!(m.date, "2026-11-22 12:30 UTC");
        assert_eq!(m.cores, "2");
        assert!(machine("6.1\n2\n23 GiB\n").is_err());
    }

    #[test]
    fn columns_are_the_tables() {
        assert_eq!(table::HEADER[NAMESOCK], "namesock");
        assert_eq!(table::HEADER[PREVIOUS], table::PREVIOUS);
        assert_eq!(table::HEADER[PLAIN], "plain TCP");
        assert_eq!(table::HEADER[PEER], "peer");
        assert_eq!(table::HEADER[VS], "namesock vs plain");
        assert_eq!(table::HEADER[VS_PREVIOUS], "namesock vs previous");
        assert_eq!(table::HEADER[GOAL], "goal");
    }

    /// The encryption bullet takes its figures from the previous release's columns and the
    /// link rows.
    #[test]
    fn the_cost_of_encryption_comes_from_the_previous_column_and_the_link_rows() {
        let row =
            |section: &str, metric: String, ns: &str, prev: &str, vs: &str, vs_prev: &str| Row {
                section: section.into(),
                metric,
                namesock: ns.into(),
                previous: prev.into(),
                vs_previous: vs_prev.into(),
                versus: vs.into(),
                peer: "previous vs plain: ×1.00".into(),
                goal: "≥0.85 × previous: met".into(),
                ..Row::default()
            };
        let mut rows = vec![row(
            "bulk, 1 session",
            "throughput client->server".into(),
            "800 MB/s",
            "870 MB/s",
            "×0.40",
            "×0.920",
        )];
        rows.extend(LINK_KBITS.map(|k| {
            row(
                LINK_SECTION,
                link_metric(k),
                "120 MB/s",
                "121 MB/s",
                "×0.990",
                "×0.992",
            )
        }));
        const HEADLINE: &str = "namesock benchmarks: 3 run(s) per figure unless noted, median; kernel 6.1, load average 1.00 1 1 before and 2.00 2 2 after (9.0 min).";
        let results = Results {
            bench_md: format!("{HEADLINE}\n\n{}", table::markdown(&rows)),
            machine: "6.1\n2\n23 GiB\nup\n2026-12-02 03:15 UTC\n".into(),
            criterion: String::new(),
            scale_plot: false,
        };
        let text = section(&results).unwrap().replace("\n  ", " ");
        assert!(text.contains("bulk ×0.920 and (not measured) of the previous release (800 MB/s and (not measured) against 870 MB/s"), "{text}");
        assert!(text.contains("Over links limited to 1 Gbit/s, 2.5 Gbit/s, 5 Gbit/s, 10 Gbit/s namesock moves ×0.990, ×0.990, ×0.990, ×0.990 of plain TCP (120, 120, 120, 120 MB/s), the previous release ×1.00, ×1.00, ×1.00, ×1.00; unthrottled ×0.990 of plain and ×0.992 of the previous release (≥0.85 × previous: met)."), "{text}");
        assert!(
            !text.contains("stays below the goal"),
            "no link missed: {text}"
        );

        // Two limited links missed: the bullet says which, and what is known.
        for r in rows
            .iter_mut()
            .filter(|r| r.metric.contains("link 5 Gbit/s") || r.metric.contains("link 10 Gbit/s"))
        {
            r.goal = "≥0.95 × plain (link speed): missed by 8 %".into();
        }
        let results = Results {
            bench_md: format!("{HEADLINE}\n\n{}", table::markdown(&rows)),
            ..results
        };
        let text = section(&results).unwrap().replace("\n  ", " ");
        assert!(text.contains("(≥0.85 × previous: met). At 5 Gbit/s and 10 Gbit/s one session stays below the goal"), "{text}");
        assert!(
            text.contains("What would close it is not known yet."),
            "{text}"
        );

        // With the relay pair measured there: its share of plain TCP, and whose shortfall it is.
        for (r, share) in rows
            .iter_mut()
            .filter(|r| r.goal.contains("missed"))
            .zip(["×0.860", "×0.870"])
        {
            r.peer = format!("{PREVIOUS_PEER}: ×1.00; {RELAY_PEER}: {share}");
        }
        let results = Results {
            bench_md: format!("{HEADLINE}\n\n{}", table::markdown(&rows)),
            ..results
        };
        let text = section(&results).unwrap().replace("\n  ", " ");
        assert!(text.contains("moves, of plain TCP's rate, ×0.860 at 5 Gbit/s and ×0.870 at 10 Gbit/s: the shortfall is relaying's"), "{text}");
        // namesock a twentieth or more below the relays at one speed: part of it is the
        // engine's there, said so with both shares.
        let mut behind = rows.clone();
        for r in behind
            .iter_mut()
            .filter(|r| r.metric.contains("link 5 Gbit/s"))
        {
            r.versus = "×0.766".into();
        }
        let with_behind = Results {
            bench_md: format!("{HEADLINE}\n\n{}", table::markdown(&behind)),
            ..results.clone()
        };
        let text = section(&with_behind).unwrap().replace("\n  ", " ");
        assert!(text.contains("the goal lies above what relaying alone moves, and namesock moves less than the relays (×0.766 against ×0.860 at 5 Gbit/s), so part of the shortfall there is the engine's."), "{text}");
        // A relay that reaches the goal where namesock does not: the engine's.
        for r in behind.iter_mut().filter(|r| r.goal.contains("missed")) {
            r.peer = format!("{PREVIOUS_PEER}: ×1.00; {RELAY_PEER}: ×0.990");
        }
        let reached = Results {
            bench_md: format!("{HEADLINE}\n\n{}", table::markdown(&behind)),
            ..results.clone()
        };
        let text = section(&reached).unwrap().replace("\n  ", " ");
        assert!(
            text.contains(
                "and reaches the goal at 5 Gbit/s and 10 Gbit/s, where namesock does not: there \
                 the shortfall is the engine's."
            ),
            "{text}"
        );
        assert!(
            text.contains("the previous release ×1.00, ×1.00, ×1.00, ×1.00;"),
            "{text}"
        );
    }

    /// The connect bullet names the relay's figures beside namesock's, says whether the goals
    /// lie below them, and says nothing of a relay that was not measured.
    #[test]
    fn the_relay_floor_comes_from_the_connect_rows_peer_cells() {
        let later = "time to first byte, new connection (median of later connects)";
        let sequential = "sequential requests/s, one process (connect, 1 byte echoed, close)";
        let connect = |metric: &str, ns: &str, plain: &str, peer: String| Row {
            section: "connect".into(),
            metric: metric.into(),
            namesock: ns.into(),
            plain: plain.into(),
            peer,
            ..Row::default()
        };
        let table = |relay_us: &str, relay_rate: &str| Table {
            rows: table_rows(&table::markdown(&[
                connect(
                    later,
                    "456 µs",
                    "135 µs (known IP)",
                    format!("{LOOKUP_PEER}: 124 µs; {RELAY_PEER}: {relay_us}"),
                ),
                connect(
                    sequential,
                    "2065 /s",
                    "6213 /s (known IP)",
                    format!("{RELAY_PEER}: {relay_rate}"),
                ),
            ])),
        };
        let t = table("410 µs", "2326 /s");
        assert_eq!(
            labelled(&t.cell("connect", later, PEER), LOOKUP_PEER),
            "124 µs"
        );
        let text = relay_floor(&t, later);
        assert!(text.contains("takes 410 µs to the first byte and makes 2326 /s sequential requests, against namesock's 456 µs and 2065 /s: names, encryption and resumption cost +46.0 µs over that relay, and the relay costs +275 µs over plain TCP."), "{text}");
        assert!(
            text.contains("lie below what relaying alone costs"),
            "{text}"
        );
        // A relay within the goals: the figures, no claim.
        let text = relay_floor(&table("200 µs", "6000 /s"), later);
        assert!(text.contains("takes 200 µs"), "{text}");
        assert!(!text.contains("lie below"), "{text}");
        // Results from before the relay was measured.
        let old = Table {
            rows: vec![vec![
                "connect".into(),
                later.into(),
                "456 µs".into(),
                String::new(),
                "135 µs".into(),
                format!("{LOOKUP_PEER}: 124 µs"),
            ]],
        };
        assert_eq!(relay_floor(&old, later), "");
        assert_eq!(
            labelled(&old.cell("connect", later, PEER), LOOKUP_PEER),
            "124 µs"
        );
    }

    /// The bulk bullet adds plain TCP's cost to two loopback hops' and says whether the CPU
    /// goal lies below the sum; results from before the loopback figure say nothing of it.
    #[test]
    fn the_loopback_floor_comes_from_the_cpu_rows_peer_cell() {
        let cpu = "CPU per GiB relayed, client->server (both ends)";
        let table = |peer: &str| Table {
            rows: table_rows(&table::markdown(&[Row {
                section: "CPU".into(),
                metric: cpu.into(),
                namesock: "1.27 s".into(),
                plain: "0.400 s".into(),
                peer: peer.into(),
                ..Row::default()
            }])),
        };
        let text = loopback_floor(
            &table(&format!("{SOCAT_PEER}: 1.27 s; {LOOPBACK_PEER}: 0.410 s")),
            cpu,
        );
        assert!(
            text.contains("costs 0.410 s per GiB in the same run"),
            "{text}"
        );
        assert!(
            text.contains("about 1.22 s per GiB (×3.05 of plain TCP)"),
            "{text}"
        );
        assert!(text.contains("lies below that"), "{text}");
        let text = loopback_floor(&table(&format!("{LOOPBACK_PEER}: 0.100 s")), cpu);
        assert!(
            text.contains("about 0.600 s per GiB (×1.50 of plain TCP)"),
            "{text}"
        );
        assert!(!text.contains("lies below"), "{text}");
        assert_eq!(
            loopback_floor(&table(&format!("{SOCAT_PEER}: 1.27 s")), cpu),
            ""
        );
    }

    #[test]
    fn the_busy_relay_floor_comes_from_the_busy_steps_peer_cells() {
        let row = |n: u64, ns: &str, relay: &str| {
            let peer = if relay.is_empty() {
                String::new()
            } else {
                format!("{RELAY_PEER}: {relay}")
            };
            let mut r = vec![String::new(); GOAL + 1];
            r[1] = format!("busy {n}: throughput (client + server process)");
            r[NAMESOCK] = ns.to_owned();
            r[PEER] = peer;
            (n, r)
        };
        let steps = [
            row(10, "1042 MB/s", "1482 MB/s (×0.514 of plain)"),
            row(100, "1500 MB/s", "1593 MB/s (×0.700 of plain)"),
            row(1000, "514 MB/s", "475 MB/s (×0.211 of plain)"),
        ];
        let refs: Vec<(u64, &Vec<String>)> = steps.iter().map(|(n, r)| (*n, r)).collect();
        let text = busy_relay_floor(&refs);
        assert!(
            text.contains("moves 475 MB/s with 1000 busy sessions, ×0.211 of plain TCP."),
            "{text}"
        );
        assert!(
            text.contains("lies above what relaying alone moves"),
            "{text}"
        );
        // 10 busy: the relay 42 % ahead; 100 busy: 6 %, within the margin.
        assert!(
            text.contains("beyond namesock (1482 MB/s against 1042 MB/s with 10), the engine's"),
            "{text}"
        );
        // The largest step counts too: a relay far ahead at 1000 is named with the others.
        let fast = [row(1000, "514 MB/s", "2000 MB/s (×0.900 of plain)")];
        let refs: Vec<(u64, &Vec<String>)> = fast.iter().map(|(n, r)| (*n, r)).collect();
        let text = busy_relay_floor(&refs);
        assert!(!text.contains("lies above"), "{text}");
        assert!(
            text.contains("beyond namesock (2000 MB/s against 514 MB/s with 1000)"),
            "{text}"
        );
        let old = [row(1000, "514 MB/s", "")];
        let refs: Vec<(u64, &Vec<String>)> = old.iter().map(|(n, r)| (*n, r)).collect();
        assert_eq!(busy_relay_floor(&refs), "");
        assert_eq!(busy_relay_floor(&[]), "");
    }

    /// `scale.png` is embedded, with its sentence, only when the results directory holds it.
    #[test]
    fn the_scale_plot_is_embedded_only_when_it_was_drawn() {
        let dir = std::env::temp_dir().join(format!("bench-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let busy = |n: u64| Row {
            section: "scale (one engine each end)".into(),
            metric: format!("busy {n}: throughput (client + server process)"),
            namesock: "500 MB/s".into(),
            plain: "2000 MB/s".into(),
            versus: "×0.250".into(),
            ..Row::default()
        };
        let bench_md = format!(
            "namesock benchmarks: 1 run(s) per figure unless noted, median; kernel 6.1, load average 1 1 1 before and 2 2 2 after (1.0 min).\n\n{}",
            table::markdown(&[busy(10), busy(100)])
        );
        for (name, text) in [
            ("bench.md", bench_md.as_str()),
            ("machine.txt", "6.1\n2\n23 GiB\nup\n2026-12-02 09:00 UTC\n"),
            ("criterion.txt", ""),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        let embed = "](bench/results/scale.png)\n";
        let without = section(&Results::load(&dir).unwrap()).unwrap();
        assert!(!without.contains(embed), "{without}");
        assert!(!without.contains("The scaling plot"));
        std::fs::write(dir.join(SCALE_PNG), b"\x89PNG").unwrap();
        let with = section(&Results::load(&dir).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(with.contains("\n\n![aggregate throughput and memory per session"));
        assert!(with.contains(embed), "{with}");
        assert!(with.contains("\nThe scaling plot: on the left"));
        // The step counts come from the table's rows.
        assert!(with.contains("throughput of 10 to 100 busy"), "{with}");
        assert!(
            with.lines()
                .all(|l| l.starts_with("![") || l.chars().count() <= WIDTH || l.starts_with('|'))
        );
        assert!(with.starts_with(&without));
    }

    #[test]
    fn wrap_breaks_at_spaces_and_indents_list_items() {
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc\n");
        assert_eq!(wrap("- aa bb cc", 7), "- aa bb\n  cc\n");
        assert_eq!(wrap("averylongword x", 5), "averylongword\nx\n");
        assert_eq!(wrap("short", 100), "short\n");
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let readme = format!("a\n{BEGIN}\nold\n{END}\nb\n");
        assert_eq!(
            splice(&readme, "new\n").unwrap(),
            format!("a\n{BEGIN}\nnew\n{END}\nb\n")
        );
        assert!(splice("no markers", "x").is_err());
    }

    /// The README's benchmark section is exactly what the committed results produce: edit
    /// `bench/results` (by running `bench/run.sh`), never the README's figures.
    #[test]
    fn readme_matches_the_committed_results() {
        let top = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let results = Results::load(&top.join("bench/results")).unwrap();
        let readme = std::fs::read_to_string(top.join("README.md")).unwrap();
        let want = splice(&readme, &section(&results).unwrap()).unwrap();
        assert!(
            readme == want,
            "README.md's benchmark section differs from bench/results: run \
             `cargo run --release -p namesock-bench --bin bench-readme` (bench/run.sh does)"
        );
    }
}
