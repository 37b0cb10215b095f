//! The suite's plots: the CSV the scale section writes from its samples, and the gnuplot
//! scripts for `move.png` and `scale.png`. Pure text; `nsbench-suite` runs gnuplot on them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::stats::median;
use crate::table::Sample;

/// The scale section's step kinds, in the order `scale.csv` lists them.
const KINDS: [&str; 2] = ["idle", "busy"];

/// One step of the scale section: its kind (`idle` or `busy`) and session count.
type Step = (usize, u64);

/// `scale.csv` from the scale section's samples: one row per step (idle steps, then busy
/// ones, each by session count) with the median over runs of memory per session (KiB; idle:
/// RSS per session, busy: extra RSS per busy session) and, for busy steps, aggregate
/// throughput (MB/s), for namesock and plain TCP, and for busy steps through a plain relay on
/// each host (`relay`: the floor of relaying). A figure not measured is `NaN`, which gnuplot
/// leaves out.
pub fn scale_csv(samples: &[Sample]) -> String {
    // (step, column) -> values over runs; columns as in the header below.
    let mut cells: BTreeMap<(Step, usize), Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.section == "scale") {
        let Some((step, what)) = step_of(&s.metric) else {
            continue;
        };
        let variant = match s.variant.as_str() {
            "namesock" => 0,
            "plain" => 1,
            "relay" => 2,
            _ => continue,
        };
        let (column, value) = match (step.0, what, variant) {
            (0, "RSS per session", 0 | 1) | (1, "extra RSS per busy session", 0 | 1) => {
                (variant, s.value / 1024.0)
            }
            (1, "throughput", _) => (2 + variant, s.value),
            _ => continue,
        };
        cells.entry((step, column)).or_default().push(value);
    }
    let steps: Vec<Step> = {
        let mut v: Vec<Step> = cells.keys().map(|(step, _)| *step).collect();
        v.dedup();
        v
    };
    let mut out = String::from(
        "kind,sessions,namesock_kib_per_session,plain_tcp_kib_per_session,namesock_mb_s,plain_tcp_mb_s,relay_mb_s\n",
    );
    for step in steps {
        let _ = write!(out, "{},{}", KINDS[step.0], step.1);
        for column in 0..5 {
            match cells.get(&(step, column)).and_then(|v| median(v)) {
                Some(x) => {
                    let _ = write!(out, ",{x:.3}");
                }
                None => out.push_str(",NaN"),
            }
        }
        out.push('\n');
    }
    out
}

/// `idle 600: RSS per session` -> ((0, 600), "RSS per session").
fn step_of(metric: &str) -> Option<(Step, &str)> {
    let (head, what) = metric.split_once(": ")?;
    let (kind, n) = head.split_once(' ')?;
    let kind = KINDS.iter().position(|k| *k == kind)?;
    Some(((kind, n.parse().ok()?), what))
}

/// The lines every plot starts with: the PNG terminal at one size for all, the output, CSV input.
fn preamble(png: &Path) -> String {
    format!(
        "set terminal pngcairo size 900,480 font 'sans,11'\n\
         set output '{}'\n\
         set datafile separator ','\n",
        png.display()
    )
}

/// `move.png` from `move.csv`: bytes received over time, the move marked at `moved` seconds.
pub fn move_script(csv: &Path, png: &Path, moved: f64) -> String {
    format!(
        "{preamble}\
         set title 'Bytes received while the client changes its address (paced at 4 MiB/s)'\n\
         set xlabel 'seconds'\nset ylabel 'MiB received'\nset key left top\nset grid\n\
         set arrow from {moved},graph 0 to {moved},graph 1 nohead dashtype 2 lc rgb 'gray40'\n\
         set label 'client moves' at {moved},graph 0.95 offset 0.5,0\n\
         plot '{csv}' using 1:2 skip 1 with lines lw 2 title 'namesock', \
         '' using 1:3 skip 1 with lines lw 2 title 'plain TCP'\n",
        preamble = preamble(png),
        csv = csv.display(),
    )
}

/// `scale.png` from `scale.csv`, two panels side by side: (a) aggregate throughput against
/// busy sessions, (b) process memory per session against sessions, idle and busy; log x on
/// both, log y on (b). Points gnuplot cannot place on a log axis (a figure of 0 or below:
/// plain TCP's programs may hold no memory per session of their own) are left out.
pub fn scale_script(csv: &Path, png: &Path) -> String {
    let csv = csv.display();
    // Both legends sit below their panels in one bottom margin (`bmargin`), which keeps the
    // two panels' axes level. A colour is a system in both panels (namesock, plain TCP, the
    // relays); a dashed line is its busy sessions or the relays.
    // A row of the other kind gets no x either, so it neither draws nor widens the x range.
    let only = |kind: &str, column: usize| {
        format!("(strcol(1) eq '{kind}' ? $2 : NaN):(strcol(1) eq '{kind}' ? ${column} : NaN)")
    };
    format!(
        "{preamble}\
         set multiplot layout 1,2 title 'Many sessions through one engine at each end (client + server process)'\n\
         set grid\nset logscale x\nset key below\nset bmargin 8\n\
         set title '(a) aggregate throughput'\n\
         set xlabel 'busy sessions'\nset ylabel 'MB/s'\nset yrange [0:*]\n\
         plot '{csv}' using {ns_mbps} skip 1 with linespoints lw 2 pt 7 lc 1 title 'namesock', \
         '' using {plain_mbps} skip 1 with linespoints lw 2 pt 5 lc 2 title 'plain TCP', \
         '' using {relay_mbps} skip 1 with linespoints lw 2 pt 13 lc 3 dashtype 3 title 'relay on each host, no protocol'\n\
         set title '(b) process memory per session'\n\
         set xlabel 'sessions'\nset ylabel 'KiB per session'\nset logscale y\nset yrange [*:*]\n\
         plot '{csv}' using {ns_idle} skip 1 with linespoints lw 2 pt 7 lc 1 title 'namesock idle', \
         '' using {plain_idle} skip 1 with linespoints lw 2 pt 5 lc 2 title 'plain TCP idle', \
         '' using {ns_busy} skip 1 with linespoints lw 2 pt 9 lc 1 dashtype 2 title 'namesock busy (extra)', \
         '' using {plain_busy} skip 1 with linespoints lw 2 pt 11 lc 2 dashtype 2 title 'plain TCP busy (extra)'\n\
         unset multiplot\n",
        preamble = preamble(png),
        ns_mbps = only("busy", 5),
        plain_mbps = only("busy", 6),
        relay_mbps = only("busy", 7),
        ns_idle = only("idle", 3),
        plain_idle = only("idle", 4),
        ns_busy = only("busy", 3),
        plain_busy = only("busy", 4),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metric: &str, variant: &str, run: usize, value: f64, unit: &str) -> Sample {
        Sample {
            section: "scale".into(),
            metric: metric.into(),
            variant: variant.into(),
            run,
            value,
            unit: unit.into(),
        }
    }

    #[test]
    fn scale_csv_has_one_row_per_step_from_the_medians_of_the_samples() {
        let samples = vec![
            sample("busy 10: throughput", "namesock", 0, 900.0, "MB/s"),
            sample("busy 10: throughput", "namesock", 1, 700.0, "MB/s"),
            sample("busy 10: throughput", "namesock", 2, 800.0, "MB/s"),
            sample("busy 10: throughput", "plain", 0, 3000.0, "MB/s"),
            sample("busy 10: throughput", "relay", 0, 2000.0, "MB/s"),
            sample(
                "busy 10: extra RSS per busy session",
                "namesock",
                0,
                262_144.0,
                "B",
            ),
            sample("idle 600: RSS per session", "namesock", 0, 20_480.0, "B"),
            sample("idle 600: RSS per session", "plain", 0, 512.0, "B"),
            sample("idle 60: RSS per session", "namesock", 0, 30_720.0, "B"),
            // Not plotted: other metrics, sections and variants.
            sample(
                "idle 60: seconds to open them (one by one)",
                "namesock",
                0,
                1.0,
                "s",
            ),
            sample("idle 60: RSS total", "namesock", 0, 9000.0, "KiB"),
            sample("idle 60: RSS per session", "socat", 0, 1.0, "B"),
            sample("idle 60: RSS per session", "relay", 0, 1.0, "B"),
            Sample {
                section: "bulk".into(),
                ..sample("idle 60: RSS per session", "namesock", 0, 1.0, "B")
            },
        ];
        assert_eq!(
            scale_csv(&samples),
            "kind,sessions,namesock_kib_per_session,plain_tcp_kib_per_session,namesock_mb_s,plain_tcp_mb_s,relay_mb_s\n\
             idle,60,30.000,NaN,NaN,NaN,NaN\n\
             idle,600,20.000,0.500,NaN,NaN,NaN\n\
             busy,10,256.000,NaN,800.000,3000.000,2000.000\n"
        );
    }

    #[test]
    fn scale_csv_without_scale_samples_is_only_the_header() {
        assert_eq!(scale_csv(&[]).lines().count(), 1);
    }

    #[test]
    fn move_script_names_its_files_and_the_move() {
        let s = move_script(Path::new("/r/move.csv"), Path::new("/r/move.png"), 4.0);
        assert!(s.contains("set output '/r/move.png'"));
        assert!(s.contains("plot '/r/move.csv'"));
        assert!(s.contains("set arrow from 4,graph 0"));
    }

    #[test]
    fn scale_script_names_its_files_and_draws_both_panels() {
        let s = scale_script(Path::new("/r/scale.csv"), Path::new("/r/scale.png"));
        assert!(s.starts_with("set terminal pngcairo size 900,480"));
        assert!(s.contains("set output '/r/scale.png'"));
        assert_eq!(s.matches("plot '/r/scale.csv'").count(), 2);
        assert!(s.contains("set multiplot layout 1,2"));
        assert!(s.trim_end().ends_with("unset multiplot"));
        // Throughput (columns 5-7) only from busy rows; memory from both kinds.
        let only = |kind: &str, column: usize| {
            format!(
                "using (strcol(1) eq '{kind}' ? $2 : NaN):(strcol(1) eq '{kind}' ? ${column} : NaN)"
            )
        };
        for (kind, column) in [
            ("busy", 5),
            ("busy", 6),
            ("busy", 7),
            ("idle", 3),
            ("idle", 4),
            ("busy", 3),
            ("busy", 4),
        ] {
            assert!(s.contains(&only(kind, column)), "{kind} {column}");
        }
        assert!(s.contains("set logscale y"));
        for label in [
            "'busy sessions'",
            "'MB/s'",
            "'sessions'",
            "'KiB per session'",
        ] {
            assert!(s.contains(label), "{label}");
        }
    }
}
