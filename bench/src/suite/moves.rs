//! Outages when either end moves, on quick and default timers, over the file store and BIND9, and the move plot.

use super::*;

impl Suite {
    /// One paced transfer server -> client by name while `act` moves hosts; the outage (from
    /// the receiver's progress), its split (from the debug logs) and whether all bytes came.
    /// `timers`: the quick ones of the suite, or namesock's defaults.
    /// `NAMESOCK_GNS` and the zone of BIND9 on a host of the bed of its own (started the
    /// first time), so that a moving server's route to it changes as a real one's would.
    fn bind9(&mut self) -> Result<(String, &'static str)> {
        if self.named.is_none() {
            let dns = self.bed.add_host("dns")?;
            let named = bind9::Named::start_in_or_skip(
                "bench",
                |_, why| eprintln!("  SKIP: {why}"),
                dns.v4().into(),
                &|program| dns.command(program),
            )
            .ok_or_else(|| SuiteError::Usage("BIND9 is not installed".into()))?;
            self.named = Some((dns, named));
        }
        let url = self.named.as_ref().map(|(_, named)| named.gns_url());
        Ok((url.unwrap_or_default(), bind9::ZONE))
    }

    fn paced_move(
        &mut self,
        tag: &str,
        act: &dyn Fn(&Suite) -> Result<()>,
        timers: MoveTimers,
    ) -> Result<(Duration, Split, bool)> {
        let rate = 8 * MIB;
        let bytes = 6 * rate;
        let port = 7400;
        let out = self.world.path(&format!("{tag}.out"));
        let nsbench = self.nsbench.to_string_lossy().into_owned();
        let (p, b, r) = (port.to_string(), bytes.to_string(), rate.to_string());
        let server_log = format!("{tag}-server");
        let client_log = format!("{tag}-client");
        let mut sc = self.ns_command(
            &self.server,
            "srv-move",
            &server_log,
            &[&nsbench, "serve", &p, "--bytes", &b, "--rate", &r],
        )?;
        sc.env("NAMESOCK_NAME", "mover")
            .env("NAMESOCK_LOG", "debug");
        timers.apply(&mut sc);
        let gns = match timers {
            MoveTimers::DefaultOverDns => Some(self.bind9()?),
            _ => None,
        };
        if let Some((url, _)) = &gns {
            sc.env("NAMESOCK_GNS", url)
                .env("NAMESOCK_ZONE", bind9::ZONE);
        }
        let mut server = Running::spawn(sc)?;
        server.expect("ready", Duration::from_secs(20))?;
        let zone = gns.as_ref().map_or("ns.alt", |(_, zone)| zone);
        let target = format!("mover.{zone}:{port}");
        let out_s = out.to_string_lossy().into_owned();
        let mut cc = self.ns_command(
            &self.client,
            "cli-move",
            &client_log,
            &[
                &nsbench, "connect", &target, "--bytes", "0", "--out", &out_s,
            ],
        )?;
        cc.env("NAMESOCK_LOG", "debug");
        timers.apply(&mut cc);
        if let Some((url, _)) = &gns {
            cc.env("NAMESOCK_GNS", url)
                .env("NAMESOCK_ZONE", bind9::ZONE);
        }
        let mut client = Running::spawn(cc)?;
        let progress = Progress::watch(out.clone(), Duration::from_millis(5));
        if !progress.wait_for_bytes(2 * rate, Duration::from_secs(30)) {
            return Err(SuiteError::Timeout(format!("{tag}: the first bytes")));
        }
        let moved_at = progress.now();
        let moved_wall = SystemTime::now();
        act(self)?;
        let done = client.expect("done", Duration::from_secs(60));
        let end = progress.now();
        let samples = progress.finish();
        let complete = done.is_ok_and(|l| parse::num::<u64>(&l, "recv") == Some(bytes));
        let outage = stalls(&samples, &[moved_at], end, bytes)
            .first()
            .map_or(end - moved_at, |s| s.longest);
        drop(server);
        let read = |log: &str| std::fs::read_to_string(self.world.log(log)).unwrap_or_default();
        let (client_steps, server_steps) = (
            parse::steps(&read(&client_log)),
            parse::steps(&read(&server_log)),
        );
        // The address change itself: the first time an engine noticed something after the
        // `ip` commands began (the moving host's engine hears of it by netlink at once).
        let began = unix_us(moved_wall);
        let changed = client_steps
            .iter()
            .chain(&server_steps)
            .filter(|(t, s)| *s == parse::Step::Detect && *t >= began)
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(began);
        let split = parse::split(changed, 30_000_000, &client_steps, &server_steps);
        Ok((outage, split, complete))
    }

    pub(super) fn moves(&mut self) -> Result<()> {
        let runs = self.opts.runs.min(3);
        type Act = fn(&Suite) -> Result<()>;
        let server_moves: Act = |s| s.server.move_to_new_subnet().map(drop).map_err(Into::into);
        let kinds: [(&str, Act, MoveTimers); 5] = [
            (
                "client moves",
                |s| s.client.move_to_new_subnet().map(drop).map_err(Into::into),
                MoveTimers::Quick,
            ),
            ("server moves", server_moves, MoveTimers::Quick),
            (
                "both move",
                |s| {
                    s.server.move_to_new_subnet()?;
                    s.client.move_to_new_subnet()?;
                    Ok(())
                },
                MoveTimers::Quick,
            ),
            // No path survives and no keepalive is near: found through the GNS alone.
            ("server moves", server_moves, MoveTimers::Default),
            ("server moves", server_moves, MoveTimers::DefaultOverDns),
        ];
        for (kind, act, timers) in kinds {
            if timers == MoveTimers::DefaultOverDns
                && let Some(why) = bind9::Named::missing()
            {
                eprintln!("  SKIP server moves over DNS: {why}");
                self.notes
                    .push(format!("The server move over DNS was not measured: {why}."));
                continue;
            }
            let kind = &format!("{kind}{}", timers.label());
            let mut splits = Vec::new();
            let mut incomplete = 0;
            for run in 0..runs {
                let tag = format!("move-{}-{run}", kind.replace([' ', ','], "-"));
                let (outage, split, complete) = self.paced_move(&tag, &act, timers)?;
                let ms = outage.as_secs_f64() * 1e3;
                eprintln!(
                    "  {kind} run {run}: outage {ms:.0} ms, split {split:?}, complete {complete}"
                );
                if !complete {
                    incomplete += 1;
                }
                self.record("move", kind, "namesock", run, ms, "ms");
                for (phase, v) in [
                    ("detection", split.detection_ms),
                    ("re-resolution", split.resolution_ms),
                    ("resume", split.resume_ms),
                ] {
                    if let Some(v) = v {
                        self.record(
                            "move",
                            &format!("{kind}: {phase}"),
                            "namesock",
                            run,
                            v,
                            "ms",
                        );
                    }
                }
                splits.push(split);
            }
            let total = self.med("move", kind, "namesock");
            let phase = |p: &str| {
                self.med("move", &format!("{kind}: {p}"), "namesock")
                    .map_or("-".to_owned(), |v| format!("{} ms", fig(v)))
            };
            let note = if incomplete > 0 {
                format!(", {incomplete} run(s) incomplete")
            } else {
                String::new()
            };
            self.rows.push(Row {
                section: timers.section().into(),
                goal: timers.goal(total),
                metric: format!("outage, {kind} (median of {runs})"),
                namesock: with_unit(total, "ms"),
                plain: "connection dies".into(),
                peer: String::new(),
                versus: format!(
                    "detect {}, re-resolve {}, resume {}{note}",
                    phase("detection"),
                    phase("re-resolution"),
                    phase("resume")
                ),
                ..Row::default()
            });
        }
        Ok(())
    }

    pub(super) fn plot(&mut self) -> Result<()> {
        let rate = 4 * MIB;
        let bytes = 12 * rate;
        let nsbench = self.nsbench.to_string_lossy().into_owned();
        let (b, r) = (bytes.to_string(), rate.to_string());
        let mut sc = self.ns_command(
            &self.server,
            "srv-move",
            "plot-server",
            &[&nsbench, "serve", "7500", "--bytes", &b, "--rate", &r],
        )?;
        sc.env("NAMESOCK_NAME", "mover");
        let mut ns_server = Running::spawn(sc)?;
        ns_server.expect("ready", Duration::from_secs(20))?;
        let mut plain_server = Running::spawn(self.plain_command(
            &self.server,
            "plot-plain-server",
            &[&nsbench, "plain-serve", "7501", "--bytes", &b, "--rate", &r],
        )?)?;
        plain_server.expect("ready", Duration::from_secs(20))?;
        let (ns_out, plain_out) = (
            self.world.path("plot-ns.out"),
            self.world.path("plot-plain.out"),
        );
        let ns_out_s = ns_out.to_string_lossy().into_owned();
        let plain_out_s = plain_out.to_string_lossy().into_owned();
        let ns_client = Running::spawn(self.ns_command(
            &self.client,
            "cli-move",
            "plot-client",
            &[
                &nsbench,
                "connect",
                "mover.ns.alt:7500",
                "--bytes",
                "0",
                "--out",
                &ns_out_s,
            ],
        )?)?;
        let plain_target = format!("{}:7501", self.server.v4());
        let plain_client = Running::spawn(self.plain_command(
            &self.client,
            "plot-plain-client",
            &[
                &nsbench,
                "plain-connect",
                &plain_target,
                "--bytes",
                "0",
                "--out",
                &plain_out_s,
            ],
        )?)?;
        let ns_progress = Progress::watch(ns_out, Duration::from_millis(20));
        let plain_progress = Progress::watch(plain_out, Duration::from_millis(20));
        std::thread::sleep(Duration::from_secs(4));
        let moved = ns_progress.now();
        self.client.move_to_new_subnet()?;
        // Bounded: the paced transfer lasts 12 s; give it 10 s more.
        let deadline = Instant::now() + Duration::from_secs(22);
        while ns_progress.bytes() < bytes && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        let end = ns_progress.now();
        let (ns_s, plain_s) = (ns_progress.finish(), plain_progress.finish());
        drop((ns_client, plain_client, ns_server, plain_server));
        let csv = self.opts.out.join("move.csv");
        std::fs::write(&csv, move_csv(&ns_s, &plain_s, end)).map_err(io("move.csv"))?;
        let png = self.opts.out.join("move.png");
        match gnuplot(&plot::move_script(&csv, &png, moved.as_secs_f64())) {
            Ok(()) => self.plots.push(png),
            Err(e) => self.notes.push(format!(
                "gnuplot did not make the plot ({e}); move.csv has the data"
            )),
        }
        let mib = |s: &[Sample]| s.last().map_or(0.0, |x| x.bytes as f64 / MIB as f64);
        self.notes.push(format!(
            "plot: client moved at {:.1} s; namesock received {:.1} MiB of {}, the plain TCP connection {:.1} MiB",
            moved.as_secs_f64(),
            mib(&ns_s),
            bytes / MIB,
            mib(&plain_s)
        ));
        Ok(())
    }
}

/// Bytes received over time for both connections, on a common 20 ms grid up to `end`.
fn move_csv(ns: &[Sample], plain: &[Sample], end: Duration) -> String {
    let at = |s: &[Sample], t: Duration| {
        s.iter()
            .take_while(|x| x.at <= t)
            .last()
            .map_or(0, |x| x.bytes)
    };
    let mut out = String::from("seconds,namesock_mib,plain_tcp_mib\n");
    let steps = (end.as_millis() / 20) as u64;
    for i in 0..=steps.min(100_000) {
        let t = Duration::from_millis(i * 20);
        let _ = writeln!(
            out,
            "{:.2},{:.3},{:.3}",
            t.as_secs_f64(),
            at(ns, t) as f64 / MIB as f64,
            at(plain, t) as f64 / MIB as f64
        );
    }
    out
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, bytes: u64) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            bytes,
        }
    }

    #[test]
    fn move_csv_holds_the_last_size_seen_on_a_20_ms_grid() {
        let ns = [sample(0, 0), sample(30, MIB), sample(50, 2 * MIB)];
        let plain = [sample(0, 0), sample(10, MIB)];
        let csv = move_csv(&ns, &plain, Duration::from_millis(60));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "seconds,namesock_mib,plain_tcp_mib");
        assert_eq!(lines[1], "0.00,0.000,0.000");
        assert_eq!(lines[2], "0.02,0.000,1.000");
        assert_eq!(lines[3], "0.04,1.000,1.000");
        assert_eq!(lines[4], "0.06,2.000,1.000");
        assert_eq!(lines.len(), 5);
    }
}
