//! One session's bulk throughput each way and the CPU it costs both ends.

use super::*;

impl Suite {
    pub(super) fn bulk(&mut self) -> Result<()> {
        let bytes = if self.opts.quick {
            128 * MIB
        } else {
            1024 * MIB
        };
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let variants = self.with_previous(&[
            Variant::Plain,
            Variant::Loopback,
            Variant::Socat,
            Variant::Namesock,
        ]);
        for run in 0..self.opts.runs {
            for &variant in &variants {
                for dir in [Dir::ClientToServer, Dir::ServerToClient] {
                    let t = self.transfer(variant, dir, bytes)?;
                    let (m, d) = (variant.name(), dir.label());
                    self.record("bulk", d, m, run, t.mb_per_s, "MB/s");
                    let per_gib = t.cpu_s / gib;
                    self.record(
                        "cpu",
                        &format!("CPU s per GiB, {d}"),
                        m,
                        run,
                        per_gib,
                        "s/GiB",
                    );
                    eprintln!(
                        "  bulk run {run} {m:8} {d}: {:.0} MB/s, {per_gib:.2} CPU s/GiB",
                        t.mb_per_s
                    );
                }
            }
        }
        for dir in [Dir::ClientToServer, Dir::ServerToClient] {
            let d = dir.label();
            let [plain, socat, ns, previous] = self.meds("bulk", d);
            let loopback = self.med("bulk", d, Variant::Loopback.name());
            self.rows.push(Row {
                section: "bulk, 1 session".into(),
                metric: format!("throughput {d}"),
                namesock: with_unit(ns, "MB/s"),
                previous: self.previous_cell(previous, "MB/s"),
                plain: with_unit(plain, "MB/s"),
                peer: format!(
                    "{SOCAT_PEER}: {}; {LOOPBACK_PEER}: {}",
                    with_unit(socat, "MB/s"),
                    with_unit(loopback, "MB/s")
                ),
                versus: times(ratio(ns, plain)),
                vs_previous: self.previous_cell_with(|| times(ratio(ns, previous))),
                // Issue 19: unthrottled, with encryption on.
                goal: at_least(ratio(ns, plain), 0.7, "plain"),
            });
        }
        for dir in [Dir::ClientToServer, Dir::ServerToClient] {
            let d = dir.label();
            let metric = format!("CPU s per GiB, {d}");
            let [plain, socat, ns, previous] = self.meds("cpu", &metric);
            let loopback = self.med("cpu", &metric, Variant::Loopback.name());
            self.rows.push(Row {
                section: "CPU".into(),
                metric: format!("CPU per GiB relayed, {d} (both ends)"),
                namesock: with_unit(ns, "s"),
                previous: self.previous_cell(previous, "s"),
                plain: with_unit(plain, "s"),
                peer: format!(
                    "{SOCAT_PEER}: {}; {LOOPBACK_PEER}: {}",
                    with_unit(socat, "s"),
                    with_unit(loopback, "s")
                ),
                versus: times(ratio(ns, plain)),
                vs_previous: self.previous_cell_with(|| times(ratio(ns, previous))),
                goal: at_most_times(ratio(ns, plain), 1.5, "plain"),
            });
        }
        Ok(())
    }

    /// One session moving `bytes` one way between the hosts as `variant` (a fresh server and
    /// client, and for socat and `nb-peer relay` fresh relays); the receiver's throughput and
    /// the CPU seconds of every process involved.
    pub(super) fn transfer(&mut self, variant: Variant, dir: Dir, bytes: u64) -> Result<Transfer> {
        let hz = ticks_per_sec();
        let port = 7100;
        let server_sends = match dir {
            Dir::ClientToServer => 0,
            Dir::ServerToClient => bytes,
        };
        let relays = match variant {
            Variant::Socat => Some(self.start_socat(7101, 7102, port)?),
            Variant::Relay => Some(self.start_null_relays(7101, 7102, port)?),
            _ => None,
        };
        let relay_ticks = || -> u64 {
            relays
                .as_ref()
                .map_or(0, |s| s.pids().into_iter().map(cpu_ticks).sum())
        };
        let relay_ticks0 = relay_ticks();
        let m = variant.name();
        let (port_s, sends_s) = (port.to_string(), server_sends.to_string());
        // Over loopback both programs run on the client's host.
        let server_host = match variant {
            Variant::Loopback => &self.client,
            _ => &self.server,
        };
        let mut sc = self.peer(
            server_host,
            variant,
            "srv-bulk",
            &format!("bulk-server-{m}"),
            &["bulk-serve", m_arg(variant), &port_s, &sends_s],
        )?;
        sc.env("NAMESOCK_NAME", "bulk");
        let mut server = Running::spawn(sc)?;
        server.expect("ready", Duration::from_secs(20))?;
        let target = self.target(variant, "bulk", port, 7101);
        let client_sends = (bytes - server_sends).to_string();
        let mut client = Running::spawn(self.peer(
            &self.client,
            variant,
            "cli-bulk",
            &format!("bulk-client-{m}"),
            &["bulk", m_arg(variant), &target, &client_sends],
        )?)?;
        let c = client.expect("bulk", Duration::from_secs(120))?;
        let s = server.expect("bulk", Duration::from_secs(120))?;
        let receiver = match dir {
            Dir::ClientToServer => &s,
            Dir::ServerToClient => &c,
        };
        let secs: f64 = parse::num(receiver, "secs").unwrap_or(f64::NAN);
        let recv: u64 = parse::num(receiver, "recv").unwrap_or(0);
        if recv != bytes {
            return Err(SuiteError::Parse {
                what: format!("bulk {m} {}: received {recv} of {bytes}", dir.label()),
                output: receiver.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
        let relay_cpu = relay_ticks().saturating_sub(relay_ticks0) as f64 / hz;
        let cpu_s = parse::num::<f64>(&c, "cpu_s").unwrap_or(f64::NAN)
            + parse::num::<f64>(&s, "cpu_s").unwrap_or(f64::NAN)
            + relay_cpu;
        Ok(Transfer {
            mb_per_s: bytes as f64 / secs / 1e6,
            cpu_s,
        })
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    parse::proc_stat(&read_proc(pid, "stat")).map_or(0, |t| t.total())
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a configuration value; no memory is involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}
