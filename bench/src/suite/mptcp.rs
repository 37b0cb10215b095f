//! The stall when a multihomed client's first link dies, against MPTCP.

use super::*;

impl Suite {
    pub(super) fn mptcp(&mut self) -> Result<()> {
        self.client.add_link()?;
        let (cns, sns) = (self.client.namespace(), self.server.namespace());
        let second = self.client.link(1)?;
        let sh = |ns: &str, script: &str| -> Result<()> {
            let out = namesock_cli::testbed::run_with_input(
                {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "sh", "-c", script]);
                    c
                },
                None,
                Duration::from_secs(20),
            )?;
            if out.status.success() {
                Ok(())
            } else {
                Err(SuiteError::Parse {
                    what: format!("`{script}`"),
                    output: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
        };
        for ns in [&cns, &sns] {
            sh(
                ns,
                "sysctl -q -w net.mptcp.enabled=1 && ip mptcp limits set subflow 4 add_addr_accepted 4",
            )?;
        }
        sh(
            &cns,
            &format!(
                "ip mptcp endpoint flush; ip mptcp endpoint add {} dev {} subflow",
                second.subnet.host_v4(),
                second.host_if
            ),
        )?;
        let runs = self.opts.runs.min(3);
        // Both directions paced, so that neither end half-closes early: the MPTCP path
        // manager adds no subflow to a connection that is already closing.
        let rate = 8 * MIB;
        let bytes = 5 * rate;
        let nsbench = self.nsbench.to_string_lossy().into_owned();
        let (b, r) = (bytes.to_string(), rate.to_string());
        for run in 0..runs {
            // Plain TCP once: it does not come back, so one run shows it.
            let whiches: &[&str] = if run == 0 {
                &["namesock", "mptcp", "plain"]
            } else {
                &["namesock", "mptcp"]
            };
            for &which in whiches {
                let port = match which {
                    "namesock" => 7700,
                    "mptcp" => 7701,
                    _ => 7702,
                };
                let p = port.to_string();
                let out = self.world.path(&format!("mptcp-{which}-{run}.out"));
                let out_s = out.to_string_lossy().into_owned();
                let (mut server, client) = if which == "namesock" {
                    let mut sc = self.ns_command(
                        &self.server,
                        "srv-move",
                        &format!("fail-{which}-{run}-server"),
                        &[&nsbench, "serve", &p, "--bytes", &b, "--rate", &r],
                    )?;
                    sc.env("NAMESOCK_NAME", "mover");
                    let mut s = Running::spawn(sc)?;
                    s.expect("ready", Duration::from_secs(20))?;
                    let target = format!("mover.ns.alt:{port}");
                    let c = Running::spawn(self.ns_command(
                        &self.client,
                        "cli-move",
                        &format!("fail-{which}-{run}-client"),
                        &[
                            &nsbench, "connect", &target, "--bytes", &b, "--rate", &r, "--out",
                            &out_s,
                        ],
                    )?)?;
                    (s, c)
                } else {
                    let wrap: &[&str] = if which == "mptcp" {
                        &["mptcpize", "run"]
                    } else {
                        &[]
                    };
                    let argv = |rest: &[&str]| -> Vec<String> {
                        wrap.iter().chain(rest).map(|x| (*x).to_owned()).collect()
                    };
                    let sargv = argv(&[&nsbench, "plain-serve", &p, "--bytes", &b, "--rate", &r]);
                    let sargs: Vec<&str> = sargv.iter().map(String::as_str).collect();
                    let mut s = Running::spawn(self.plain_command(
                        &self.server,
                        &format!("fail-{which}-{run}-server"),
                        &sargs,
                    )?)?;
                    s.expect("ready", Duration::from_secs(20))?;
                    let target = format!("{}:{port}", self.server.v4());
                    let cargv = argv(&[
                        &nsbench,
                        "plain-connect",
                        &target,
                        "--bytes",
                        &b,
                        "--rate",
                        &r,
                        "--out",
                        &out_s,
                    ]);
                    let cargs: Vec<&str> = cargv.iter().map(String::as_str).collect();
                    let c = Running::spawn(self.plain_command(
                        &self.client,
                        &format!("fail-{which}-{run}-client"),
                        &cargs,
                    )?)?;
                    (s, c)
                };
                let progress = Progress::watch(out, Duration::from_millis(5));
                if !progress.wait_for_bytes(2 * rate, Duration::from_secs(30)) {
                    return Err(SuiteError::Timeout(format!("{which}: first bytes")));
                }
                let subflows = if which == "mptcp" {
                    let o = namesock_cli::testbed::run_with_input(
                        {
                            let mut c = Command::new("ip");
                            c.args(["netns", "exec", &cns, "ss", "-tniM"]);
                            c
                        },
                        None,
                        Duration::from_secs(10),
                    )?;
                    String::from_utf8_lossy(&o.stdout).matches("ESTAB").count()
                } else {
                    0
                };
                let moved = progress.now();
                self.client.link_down(0)?;
                let wait = if which == "plain" { 10 } else { 30 };
                let deadline = Instant::now() + Duration::from_secs(wait);
                while progress.bytes() < bytes && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let end = progress.now();
                let samples = progress.finish();
                let got = samples.last().map_or(0, |s| s.bytes);
                let outage = stalls(&samples, &[moved], end, bytes)
                    .first()
                    .map_or(end - moved, |s| s.longest);
                let ms = outage.as_secs_f64() * 1e3;
                eprintln!(
                    "  failover run {run} {which}: stall {ms:.0} ms, {got} of {bytes} bytes{}",
                    if which == "mptcp" {
                        format!(", {subflows} TCP flows established before")
                    } else {
                        String::new()
                    }
                );
                self.record("failover", "stall", which, run, ms, "ms");
                if got < bytes {
                    self.notes.push(format!(
                        "failover run {run}: {which} got {got} of {bytes} bytes within {wait} s"
                    ));
                }
                drop(client);
                server.process.kill();
                self.client.link_up(0)?;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let ns = self.med("failover", "stall", "namesock");
        let mp = self.med("failover", "stall", "mptcp");
        self.rows.push(Row {
            section: "multihomed failover".into(),
            metric: format!("stall when the client's first of two links dies (median of {runs})"),
            namesock: with_unit(ns, "ms"),
            plain: match self.values("failover", "stall", "plain").first() {
                Some(ms) if self.notes.iter().any(|n| n.contains("plain got")) => {
                    format!("no byte after it for {} s (end of the wait)", fig(ms / 1e3))
                }
                Some(ms) => format!("{} ms", fig(*ms)),
                None => "-".into(),
            },
            peer: format!("MPTCP (mptcpize): {}", with_unit(mp, "ms")),
            versus: format!("namesock {} MPTCP", times(ratio(ns, mp))),
            ..Row::default()
        });
        Ok(())
    }
}
