//! One session's bulk throughput over test-bed links limited to 1, 2.5, 5 and 10 Gbit/s.

use super::*;

impl Suite {
    /// One session client->server over links limited to each of [`LINK_KBITS`] (both hosts
    /// send through a token bucket): plain TCP, `nb-peer relay` on each host (the floor of
    /// relaying), namesock and the previous release in turn.
    pub(super) fn link(&mut self) -> Result<()> {
        let bytes = if self.opts.quick { 64 * MIB } else { 512 * MIB };
        let variants = self.with_previous(&[Variant::Plain, Variant::Relay, Variant::Namesock]);
        for kbit in LINK_KBITS {
            self.limited(kbit, |suite| {
                for run in 0..suite.opts.runs {
                    for &variant in &variants {
                        let t = suite.transfer(variant, Dir::ClientToServer, bytes)?;
                        let (m, l) = (variant.name(), link_label(kbit));
                        suite.record("link", &l, m, run, t.mb_per_s, "MB/s");
                        eprintln!("  link {l} run {run} {m:8}: {:.0} MB/s", t.mb_per_s);
                    }
                }
                Ok(())
            })?;
        }
        for kbit in LINK_KBITS {
            let label = link_label(kbit);
            let [plain, _, ns, previous] = self.meds("link", &label);
            let relay = self.med("link", &label, Variant::Relay.name());
            let goal = match kbit {
                None => self.previous_cell_with(|| at_least(ratio(ns, previous), 0.85, "previous")),
                Some(_) => at_least(ratio(ns, plain), LINK_GOAL, "plain (link speed)"),
            };
            self.rows.push(Row {
                section: LINK_SECTION.into(),
                metric: link_metric(kbit),
                namesock: with_unit(ns, "MB/s"),
                previous: self.previous_cell(previous, "MB/s"),
                plain: with_unit(plain, "MB/s"),
                peer: [
                    self.previous_cell_with(|| {
                        format!("{PREVIOUS_PEER}: {}", times(ratio(previous, plain)))
                    }),
                    format!("{RELAY_PEER}: {}", times(ratio(relay, plain))),
                ]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
                versus: times(ratio(ns, plain)),
                vs_previous: self.previous_cell_with(|| times(ratio(ns, previous))),
                goal,
            });
        }
        Ok(())
    }

    /// `f` with both hosts' sending rate limited to `kbit` (none: no limit), and the limit
    /// removed afterwards whatever `f` returned.
    fn limited(
        &mut self,
        kbit: Option<u64>,
        f: impl FnOnce(&mut Suite) -> Result<()>,
    ) -> Result<()> {
        let set = |suite: &Suite, kbit| -> Result<()> {
            suite.client.limit_rate(kbit)?;
            suite.server.limit_rate(kbit)?;
            Ok(())
        };
        let result = set(self, kbit).and_then(|()| f(self));
        let cleared = set(self, None);
        result.and(cleared)
    }
}
