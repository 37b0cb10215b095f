//! Parsing what the measured programs, the shell, the kernel and the engine's logs print.

/// The `done` line of `nsbench` (namesock/examples/nsbench.rs).
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub sent: u64,
    pub recv: u64,
    pub secs: f64,
    pub sent_sha256: String,
    pub recv_sha256: String,
}

/// The value of `key=value` among the whitespace-separated words of `line`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// A numeric `key=value` of `line`.
pub fn num<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    field(line, key)?.parse().ok()
}

/// The `done sent=.. sent_sha256=.. recv=.. recv_sha256=.. secs=..` line in `output`.
pub fn nsbench_done(output: &str) -> Option<Done> {
    let line = output.lines().rev().find(|l| l.starts_with("done "))?;
    Some(Done {
        sent: num(line, "sent")?,
        recv: num(line, "recv")?,
        secs: num(line, "secs")?,
        sent_sha256: field(line, "sent_sha256")?.to_owned(),
        recv_sha256: field(line, "recv_sha256")?.to_owned(),
    })
}

/// CPU seconds (user + system) of the children from the POSIX shell builtin `times`, whose
/// second line is `<user> <system>` of the children, each like `0m1.230s` (dash, bash).
pub fn shell_times(output: &str) -> Option<f64> {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() == 2 && w.iter().all(|x| minsec(x).is_some())
        })
        .collect();
    let children = lines.last()?;
    children.split_whitespace().map(minsec).sum()
}

/// `1m2.500s` -> 62.5
fn minsec(word: &str) -> Option<f64> {
    let (m, s) = word.strip_suffix('s')?.split_once('m')?;
    Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// CPU time of a process from `/proc/PID/stat`, in clock ticks: its own (utime + stime) and
/// that of its reaped children (cutime + cstime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ticks {
    pub own: u64,
    pub children: u64,
}

impl Ticks {
    pub fn total(&self) -> u64 {
        self.own + self.children
    }
}

/// Parse `/proc/PID/stat` (the command name may hold spaces and parentheses).
pub fn proc_stat(text: &str) -> Option<Ticks> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 here.
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Ticks {
        own: n(11)? + n(12)?,
        children: n(13)? + n(14)?,
    })
}

/// VmRSS in KiB from `/proc/PID/status`.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Context switches of one thread (voluntary + involuntary) from `/proc/<pid>/task/<tid>/status`:
/// each is a wake-up of a thread that slept (or was preempted).
pub fn context_switches(status: &str) -> Option<u64> {
    let count = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(count("voluntary_ctxt_switches:")? + count("nonvoluntary_ctxt_switches:")?)
}

/// MemAvailable in KiB from `/proc/meminfo`.
pub fn mem_available_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `mem` pages of the TCP line of `/proc/net/sockstat` (kernel memory of TCP buffers).
pub fn sockstat_tcp_pages(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let i = w.iter().position(|x| *x == "mem")?;
    w.get(i + 1)?.parse().ok()
}

/// Microseconds since the Unix epoch of an RFC 3339 UTC timestamp as tracing writes it at
/// the start of a log line (`2026-11-22T07:57:19.123456Z`).
pub fn log_time_us(line: &str) -> Option<i64> {
    let stamp = line.split_whitespace().next()?;
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let digits: String = frac.chars().take(6).collect();
    let micros = format!("{digits:0<6}").parse::<i64>().ok()?;
    let days = days_from_civil(y, mo, da);
    Some(((days * 24 + h) * 60 + mi) * 60_000_000 + s * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What an engine log line says about recovering from a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The engine noticed: an address vanished, a path went silent or suspect.
    Detect,
    /// The client learned the server's new locators (GNS or MOVED).
    Resolve,
    /// A new path carries the session.
    Resume,
}

/// Classify an engine debug line (the messages of namesock/src/engine and of the client's
/// path manager, namesock/src/path_manager.rs).
pub fn classify(line: &str) -> Option<Step> {
    const DETECT: [&str; 8] = [
        "local addresses changed",
        "local address gone",
        "path dead",
        "path suspect",
        "path quiet",
        "a watched record changed",
        "handshake unanswered",
        "no path left",
    ];
    const RESOLVE: [&str; 3] = [
        "new locators from the GNS",
        "peer moved",
        "standby path to the server's new address",
    ];
    const RESUME: [&str; 1] = ["session resumed on a new path"];
    if RESUME.iter().any(|m| line.contains(m)) {
        Some(Step::Resume)
    } else if RESOLVE.iter().any(|m| line.contains(m)) {
        Some(Step::Resolve)
    } else if DETECT.iter().any(|m| line.contains(m)) {
        Some(Step::Detect)
    } else {
        None
    }
}

/// The timed recovery steps in a log text.
pub fn steps(log: &str) -> Vec<(i64, Step)> {
    log.lines()
        .filter_map(|l| Some((log_time_us(l)?, classify(l)?)))
        .collect()
}

/// One move's outage split into phases, in milliseconds from the address change.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Split {
    /// Until the client's engine noticed (first `Detect` in the client's log).
    pub detection_ms: Option<f64>,
    /// From detection until the client had the new locators (`None` when none was needed).
    pub resolution_ms: Option<f64>,
    /// From the later of the two until the server accepted the resume.
    pub resume_ms: Option<f64>,
}

/// Split an outage that began at `moved_us` (Unix µs) using the client's and the server's
/// recovery steps. Only steps at or after the move count, and only within `window_us`.
pub fn split(
    moved_us: i64,
    window_us: i64,
    client: &[(i64, Step)],
    server: &[(i64, Step)],
) -> Split {
    let after = |v: &[(i64, Step)], step: Step, from: i64| {
        v.iter()
            .filter(|(t, s)| *s == step && *t >= from && *t <= moved_us + window_us)
            .map(|(t, _)| *t)
            .min()
    };
    let ms = |from: i64, to: i64| (to - from) as f64 / 1000.0;
    let detected = after(client, Step::Detect, moved_us);
    let from = detected.unwrap_or(moved_us);
    let resolved = after(client, Step::Resolve, from);
    let resumed = after(server, Step::Resume, resolved.unwrap_or(from));
    Split {
        detection_ms: detected.map(|t| ms(moved_us, t)),
        resolution_ms: resolved.map(|t| ms(from, t)),
        resume_ms: resumed.map(|t| ms(resolved.unwrap_or(from), t)),
    }
}

/// One backend's figures from `cargo bench -p namesock-resolver --bench gns`.
#[derive(Debug, Clone, PartialEq)]
pub struct GnsFigures {
    pub backend: String,
    pub visible_median_ms: f64,
    pub visible_p99_ms: f64,
    pub resolves_per_sec: f64,
}

/// Parse the output of resolver/benches/gns.rs: a `LABEL:` line, then a `publish -> visible`
/// line (`median X ms, p99 Y ms`), then `verified resolves per second (one thread): N`.
pub fn gns_bench(output: &str) -> Vec<GnsFigures> {
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut visible: Option<(f64, f64)> = None;
    for line in output.lines() {
        let t = line.trim();
        if !line.starts_with(' ') && t.ends_with(':') {
            label = Some(t.trim_end_matches(':').to_owned());
            visible = None;
        } else if t.starts_with("publish -> visible") {
            let grab = |key: &str| -> Option<f64> {
                let rest = &t[t.find(key)? + key.len()..];
                rest.split_whitespace().next()?.parse().ok()
            };
            visible = grab("median ").zip(grab("p99 "));
        } else if let Some(rest) = t.strip_prefix("verified resolves per second (one thread):")
            && let (Some(l), Some((m, p)), Ok(n)) = (&label, visible, rest.trim().parse::<f64>())
        {
            out.push(GnsFigures {
                backend: l.clone(),
                visible_median_ms: m,
                visible_p99_ms: p,
                resolves_per_sec: n,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsbench_done_line() {
        let out = "ready x\ndone sent=10 sent_sha256=ab recv=20 recv_sha256=cd secs=1.500\n";
        let d = nsbench_done(out).unwrap();
        assert_eq!((d.sent, d.recv, d.secs), (10, 20, 1.5));
        assert_eq!(
            (d.sent_sha256.as_str(), d.recv_sha256.as_str()),
            ("ab", "cd")
        );
        assert!(nsbench_done("done sent=1").is_none());
        assert!(nsbench_done("").is_none());
    }

    #[test]
    fn fields() {
        assert_eq!(
            num::<u64>("stat t_ms=5 bytes=77 conns=2", "bytes"),
            Some(77)
        );
        assert_eq!(num::<u64>("stat t_ms=5 bytes=77", "conns"), None);
        assert_eq!(field("a=1 ab=2", "ab"), Some("2"));
    }

    #[test]
    fn times_builtin() {
        let out = "done ...\n0m0.010s 0m0.020s\n1m2.500s 0m0.500s\n";
        assert!((shell_times(out).unwrap() - 63.0).abs() < 1e-9);
        assert_eq!(shell_times("nothing"), None);
    }

    #[test]
    fn proc_stat_fields() {
        let text = "1234 (nb peer (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 2 0";
        assert_eq!(
            proc_stat(text),
            Some(Ticks {
                own: 300,
                children: 10
            })
        );
        assert_eq!(proc_stat("garbage"), None);
    }

    #[test]
    fn rss_and_sockstat() {
        assert_eq!(vm_rss_kib("Name:\tx\nVmRSS:\t   12345 kB\n"), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        let status = "Name:\tnamesock-engine\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(context_switches(status), Some(123));
        assert_eq!(context_switches("voluntary_ctxt_switches:\t120\n"), None);
        let m = "MemTotal:       24000000 kB\nMemAvailable:   19000000 kB\n";
        assert_eq!(mem_available_kib(m), Some(19_000_000));
        assert_eq!(mem_available_kib("MemTotal: 1 kB"), None);
        let s = "sockets: used 5\nTCP: inuse 3 orphan 0 tw 0 alloc 4 mem 17\nUDP: inuse 0 mem 0\n";
        assert_eq!(sockstat_tcp_pages(s), Some(17));
    }

    #[test]
    fn log_times() {
        assert_eq!(
            log_time_us("1970-01-01T00:00:01.5Z  DEBUG x"),
            Some(1_500_000)
        );
        let t = log_time_us("2026-11-22T07:57:19.123456Z DEBUG namesock: hi").unwrap();
        // 2026-11-22 is day 20_779 since the epoch.
        assert_eq!(t, ((20_779 * 24 + 7) * 60 + 57) * 60_000_000 + 19_123_456);
        assert_eq!(
            log_time_us("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000)
        );
        assert_eq!(log_time_us("not a time"), None);
        assert_eq!(log_time_us("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn classify_lines() {
        assert_eq!(
            classify("DEBUG local addresses changed changes=[..]"),
            Some(Step::Detect)
        );
        assert_eq!(
            classify("path suspect: asking the GNS path=3"),
            Some(Step::Detect)
        );
        assert_eq!(
            classify("new locators from the GNS: dialing them now"),
            Some(Step::Resolve)
        );
        assert_eq!(
            classify("session resumed on a new path path=4"),
            Some(Step::Resume)
        );
        assert_eq!(classify("path connected"), None);
    }

    #[test]
    fn split_phases() {
        let t0 = 1_000_000;
        let client = vec![
            (t0 - 5_000, Step::Detect), // before the move: ignored
            (t0 + 1_500_000, Step::Detect),
            (t0 + 1_600_000, Step::Resolve),
        ];
        let server = vec![(t0 + 1_650_000, Step::Resume)];
        let s = split(t0, 10_000_000, &client, &server);
        assert_eq!(s.detection_ms, Some(1500.0));
        assert_eq!(s.resolution_ms, Some(100.0));
        assert_eq!(s.resume_ms, Some(50.0));
        // A client move: no resolution; the resume counts from detection.
        let client = vec![(t0 + 2_000, Step::Detect)];
        let server = vec![(t0 + 42_000, Step::Resume)];
        let s = split(t0, 10_000_000, &client, &server);
        assert_eq!(
            (s.detection_ms, s.resolution_ms, s.resume_ms),
            (Some(2.0), None, Some(40.0))
        );
        // Out of the window: nothing.
        let s = split(t0, 1_000, &client, &server);
        assert_eq!(s, Split::default());
    }

    #[test]
    fn gns_output() {
        let out = "file store:\n  publish -> visible to another resolver: median 0.120 ms, p99 0.300 ms, max 1.000 ms (300 rounds)\n  verified resolves per second (one thread): 25000\nBIND9 (RFC 2136 + TSIG, TXT lookups):\n  publish -> visible to another resolver: median 3.500 ms, p99 9.000 ms, max 12.000 ms (100 rounds)\n  verified resolves per second (one thread): 2100\n";
        let g = gns_bench(out);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].backend, "file store");
        assert_eq!(
            (
                g[0].visible_median_ms,
                g[0].visible_p99_ms,
                g[0].resolves_per_sec
            ),
            (0.12, 0.3, 25000.0)
        );
        assert_eq!(g[1].backend, "BIND9 (RFC 2136 + TSIG, TXT lookups)");
        assert_eq!(g[1].resolves_per_sec, 2100.0);
        assert!(gns_bench("garbage").is_empty());
    }
}
