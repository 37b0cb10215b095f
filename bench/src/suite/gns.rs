//! The GNS figures, from the resolver's criterion bench.

use super::*;

impl Suite {
    pub(super) fn gns(&mut self) -> Result<()> {
        let Some(path) = self.opts.gns.clone() else {
            self.notes.push("GNS figures: not run (pass --gns FILE with the output of `cargo bench -p namesock-resolver --bench gns`)".into());
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(io(path.display().to_string()))?;
        let figures = parse::gns_bench(&text);
        if figures.is_empty() {
            self.notes
                .push(format!("GNS figures: none found in {}", path.display()));
        }
        for g in figures {
            self.rows.push(Row {
                section: "GNS".into(),
                metric: format!(
                    "{}: publish -> visible (median, p99); verified resolves/s",
                    g.backend
                ),
                namesock: format!(
                    "{} ms, {} ms; {}/s",
                    fig(g.visible_median_ms),
                    fig(g.visible_p99_ms),
                    fig(g.resolves_per_sec)
                ),
                plain: String::new(),
                peer: String::new(),
                versus: String::new(),
                ..Row::default()
            });
        }
        Ok(())
    }
}
