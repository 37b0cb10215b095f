//! Request/response round trips and the time to a new connection's first byte.

use super::*;

impl Suite {
    /// Echo servers for every variant from `port` on (see [`echo_port`]); they stop when
    /// dropped.
    fn echo_servers(&self, port: u16) -> Result<(Vec<Running>, Relays)> {
        let mut servers = Vec::new();
        for variant in self.with_previous(&[Variant::Plain, Variant::Namesock]) {
            let p = echo_port(variant, port).to_string();
            let mut c = self.peer(
                &self.server,
                variant,
                "srv-echo",
                &format!("echo-{}", variant.name()),
                &["echo-serve", m_arg(variant), &p],
            )?;
            c.env("NAMESOCK_NAME", "echo");
            let mut server = Running::spawn(c)?;
            server.expect("ready", Duration::from_secs(20))?;
            servers.push(server);
        }
        let (front, back) = (
            echo_port(Variant::Socat, port),
            echo_port(Variant::Socat, port) + 1,
        );
        let socat = self.start_socat(front, back, echo_port(Variant::Plain, port))?;
        Ok((servers, socat))
    }

    pub(super) fn rr(&mut self) -> Result<()> {
        let port = 7200;
        let _servers = self.echo_servers(port)?;
        let count = if self.opts.quick { "500" } else { "5000" };
        let metric = "round trip, 64 B";
        let variants = self.with_previous(&[Variant::Plain, Variant::Socat, Variant::Namesock]);
        for run in 0..self.opts.runs {
            for &variant in &variants {
                let target = self.target(
                    variant,
                    "echo",
                    echo_port(variant, port),
                    echo_port(Variant::Socat, port),
                );
                let m = variant.name();
                let mut c = Running::spawn(self.peer(
                    &self.client,
                    variant,
                    "cli-echo",
                    &format!("rr-{m}"),
                    &["rr", m_arg(variant), &target, count, "64"],
                )?)?;
                let line = c.expect("rr", Duration::from_secs(120))?;
                let us: f64 = parse::num(&line, "median_us").ok_or_else(|| SuiteError::Parse {
                    what: "rr".into(),
                    output: line.clone(),
                })?;
                eprintln!("  rr run {run} {m:8}: {us:.1} µs");
                self.record("rr", metric, m, run, us, "µs");
            }
        }
        let [plain, socat, ns, previous] = self.meds("rr", metric);
        self.rows.push(Row {
            section: "latency".into(),
            metric: "request/response 64 B, median round trip".into(),
            namesock: with_unit(ns, "µs"),
            previous: self.previous_cell(previous, "µs"),
            plain: with_unit(plain, "µs"),
            peer: format!("socat×2: {}", with_unit(socat, "µs")),
            versus: added(ns, plain, "µs"),
            vs_previous: self.previous_cell_with(|| added(ns, previous, "µs")),
            goal: String::new(),
        });
        Ok(())
    }

    pub(super) fn ttfb(&mut self) -> Result<()> {
        /// Processes per run and case beside the main one that make a single connect each.
        const FIRST_MORE: usize = 4;
        let port = 7300;
        let _servers = self.echo_servers(port)?;
        // The client's user has an identity (`namesock keygen`), as a user of namesock would:
        // its processes then prove one key, and each one's first connection can take the
        // ticket the process before handed on.
        for variant in self.with_previous(&[Variant::Namesock]) {
            let (world, _) = self.build_of(variant)?;
            let key = world.path("keys").join("cli-echo.key");
            namesock::identity::Keypair::load_or_create(&key)
                .map_err(|e| SuiteError::Usage(format!("{}: {e}", key.display())))?;
        }
        // getaddrinfo of a name in the client namespace's own /etc/hosts (ip netns exec
        // bind-mounts /etc/netns/<ns>/hosts over /etc/hosts): the "files" source of nsswitch.
        let etc = PathBuf::from("/etc/netns").join(self.client.namespace());
        std::fs::create_dir_all(&etc).map_err(io("/etc/netns"))?;
        std::fs::write(
            etc.join("hosts"),
            format!(
                "127.0.0.1 localhost\n{} echo-server.bench\n",
                self.server.v4()
            ),
        )
        .map_err(io("/etc/netns hosts"))?;
        self._etc = Some(NetnsEtc(etc));
        let count = if self.opts.quick { "20" } else { "100" };
        // (the name in raw.csv, the variant, nb-peer's mode, the target)
        let mut cases: Vec<(&str, Variant, &str, String)> = vec![
            (
                "plain",
                Variant::Plain,
                "plain",
                format!("{}:{port}", self.server.v4()),
            ),
            (
                "lookup",
                Variant::Plain,
                "lookup",
                format!("echo-server.bench:{port}"),
            ),
        ];
        for variant in self.with_previous(&[Variant::Namesock]) {
            let target = self.target(variant, "echo", echo_port(variant, port), 0);
            cases.push((variant.name(), variant, "ns", target));
        }
        // Three TCP connections as a namesock session crosses, with none of its protocol.
        let relay_front = echo_port(Variant::Relay, port);
        let _relays = self.start_null_relays(relay_front, relay_front + 1, port)?;
        let target = self.target(Variant::Relay, "echo", port, relay_front);
        cases.push((Variant::Relay.name(), Variant::Relay, "plain", target));
        for run in 0..self.opts.runs {
            for (name, variant, mode, target) in &cases {
                let line = self.ttfb_run(*variant, &format!("ttfb-{name}"), mode, target, count)?;
                let warm: f64 = parse::num(&line, "median_us").unwrap_or(f64::NAN);
                let first: f64 = parse::num(&line, "first_us").unwrap_or(f64::NAN);
                let rate: f64 = parse::num(&line, "rate_per_s").unwrap_or(f64::NAN);
                eprintln!(
                    "  ttfb run {run} {name:8}: first {first:.0} µs, then {warm:.0} µs; {rate:.0} requests/s"
                );
                self.record("ttfb", "warm", name, run, warm, "µs");
                self.record("ttfb", "first in process", name, run, first, "µs");
                self.record("ttfb", "sequential", name, run, rate, "/s");
                // One process gives one first connection: a few more, one connect each, so
                // that the median of a few runs is not one process's luck.
                for _ in 0..FIRST_MORE {
                    let line =
                        self.ttfb_run(*variant, &format!("ttfb-{name}"), mode, target, "1")?;
                    let first: f64 = parse::num(&line, "first_us").unwrap_or(f64::NAN);
                    self.record("ttfb", "first in process", name, run, first, "µs");
                }
            }
        }
        for metric in ["warm", "first in process"] {
            let [plain, _, ns, previous] = self.meds("ttfb", metric);
            let lookup = self.med("ttfb", metric, "lookup");
            let relay = self.med("ttfb", metric, Variant::Relay.name());
            let vs_previous =
                self.previous_cell_with(|| at_most_added(ns, previous, 150.0, "µs", "previous"));
            // Issue 19: a new connection to a peer with a live session costs at most 100 µs
            // more than plain TCP to a known address.
            let goal = match (metric, vs_previous.is_empty()) {
                ("warm", true) => at_most_added(ns, plain, 100.0, "µs", "plain"),
                ("warm", false) => format!(
                    "{vs_previous}; {}",
                    at_most_added(ns, plain, 100.0, "µs", "plain")
                ),
                _ => vs_previous,
            };
            let what = if metric == "warm" {
                "time to first byte, new connection (median of later connects)"
            } else {
                "time to first byte, first connection of a process (engine start)"
            };
            self.rows.push(Row {
                section: "connect".into(),
                metric: what.into(),
                namesock: with_unit(ns, "µs"),
                previous: self.previous_cell(previous, "µs"),
                plain: format!("{} (known IP)", with_unit(plain, "µs")),
                peer: format!(
                    "{LOOKUP_PEER}: {}; {RELAY_PEER}: {}",
                    with_unit(lookup, "µs"),
                    with_unit(relay, "µs")
                ),
                versus: format!(
                    "{} vs IP, {} vs lookup",
                    added(ns, plain, "µs"),
                    added(ns, lookup, "µs")
                ),
                vs_previous: self.previous_cell_with(|| added(ns, previous, "µs")),
                goal,
            });
        }
        self.ttfb_far(&cases)?;
        // Issue 19: one process's sequential requests reach 0.9 of plain TCP's rate.
        let [plain_rate, _, ns_rate, previous_rate] = self.meds("ttfb", "sequential");
        let relay_rate = self.med("ttfb", "sequential", Variant::Relay.name());
        self.rows.push(Row {
            section: "connect".into(),
            metric: "sequential requests/s, one process (connect, 1 byte echoed, close)".into(),
            namesock: with_unit(ns_rate, "/s"),
            previous: self.previous_cell(previous_rate, "/s"),
            plain: format!("{} (known IP)", with_unit(plain_rate, "/s")),
            peer: format!("{RELAY_PEER}: {}", with_unit(relay_rate, "/s")),
            versus: times(ratio(ns_rate, plain_rate)),
            vs_previous: self.previous_cell_with(|| times(ratio(ns_rate, previous_rate))),
            goal: at_least(ratio(ns_rate, plain_rate), 0.9, "plain"),
        });
        Ok(())
    }

    /// One `nb-peer ttfb` of `count` connects from the client (logging to `log`): its line.
    fn ttfb_run(
        &self,
        variant: Variant,
        log: &str,
        mode: &str,
        target: &str,
        count: &str,
    ) -> Result<String> {
        let command = self.peer(
            &self.client,
            variant,
            "cli-echo",
            log,
            &["ttfb", mode, target, count],
        )?;
        let mut running = Running::spawn(command)?;
        let line = running.expect("ttfb", Duration::from_secs(120))?;
        // It exits as programs do, not killed after its line: its engine hands its tickets
        // on to the next process at exit.
        running.process.wait_timeout(Duration::from_secs(30))?;
        Ok(line)
    }

    /// The first byte of a new connection over a long path: the router holds every packet
    /// from the client for [`FAR_RTT`] (a delay line: there is no netem here), so each round
    /// trip between the hosts costs that much more, and the round trips a connect makes show
    /// (plain TCP: its handshake and the request's; namesock: the same two when the request
    /// rides behind the OPEN).
    fn ttfb_far(&mut self, cases: &[(&str, Variant, &str, String)]) -> Result<()> {
        let metric = "warm, far";
        let first_metric = "first in process, far";
        let delay = self.bed.delay_from(&self.client, FAR_RTT)?;
        let count = if self.opts.quick { "5" } else { "20" };
        for run in 0..self.opts.runs {
            let far_cases = cases
                .iter()
                .filter(|c| c.0 != "lookup" && c.1 != Variant::Relay);
            for (name, variant, mode, target) in far_cases {
                let log = format!("ttfb-far-{name}");
                let line = self.ttfb_run(*variant, &log, mode, target, count)?;
                let warm: f64 = parse::num(&line, "median_us").unwrap_or(f64::NAN);
                let first: f64 = parse::num(&line, "first_us").unwrap_or(f64::NAN);
                eprintln!(
                    "  ttfb run {run} {name:8} over {FAR_RTT:?} more round trip: first {first:.0} µs, then {warm:.0} µs"
                );
                self.record("ttfb", metric, name, run, warm, "µs");
                self.record("ttfb", first_metric, name, run, first, "µs");
            }
        }
        drop(delay);
        let rtt_us = FAR_RTT.as_secs_f64() * 1e6;
        let trips =
            |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{:.2}", v / rtt_us));
        for (m, what) in [
            (metric, "new connection"),
            // A process's first connection pays its engine's start too; from the second
            // process on, it opens with the ticket the one before handed on.
            (first_metric, "first connection of a process"),
        ] {
            let [plain, _, ns, previous] = self.meds("ttfb", m);
            self.rows.push(Row {
                section: "connect".into(),
                metric: format!(
                    "time to first byte, {what}, {} ms more round trip (router delay line)",
                    FAR_RTT.as_millis()
                ),
                namesock: with_unit(ns, "µs"),
                previous: self.previous_cell(previous, "µs"),
                plain: format!("{} (known IP)", with_unit(plain, "µs")),
                peer: format!(
                    "round trips: namesock {}, plain {}",
                    trips(ns),
                    trips(plain)
                ),
                versus: added(ns, plain, "µs"),
                vs_previous: self.previous_cell_with(|| added(ns, previous, "µs")),
                // Issue 19: no extra round trip to a known peer.
                goal: if m == metric {
                    at_most_added(ns, plain, rtt_us / 2.0, "µs", "plain")
                } else {
                    String::new()
                },
            });
        }
        Ok(())
    }
}

/// The port of `variant`'s echo server among those started from `base` (for socat and
/// `nb-peer relay`: the client relay's; the server relay listens on the next one).
fn echo_port(variant: Variant, base: u16) -> u16 {
    base + match variant {
        Variant::Plain | Variant::Loopback => 0,
        Variant::Namesock => 1,
        Variant::Socat => 2,
        Variant::Relay => 6,
        Variant::Previous => 4,
    }
}
