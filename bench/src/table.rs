//! The results table (markdown) and the raw samples (CSV).

use std::fmt::Write as _;

/// One line of the results table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub section: String,
    pub metric: String,
    /// namesock's figure, formatted.
    pub namesock: String,
    /// The previous release's figure (protocol 1, unencrypted) in the same run, formatted, or
    /// empty where it was not measured.
    pub previous: String,
    /// plain TCP's figure in the same run, formatted.
    pub plain: String,
    /// another peer's figure (socat, MPTCP), formatted, or empty.
    pub peer: String,
    /// namesock against plain TCP (a ratio or an added cost), formatted.
    pub versus: String,
    /// namesock against the previous release (a ratio or an added cost), formatted, or empty.
    pub vs_previous: String,
    /// The goal and whether it is met, or empty.
    pub goal: String,
}

/// The header of the results table; [`markdown`] writes the cells of a [`Row`] in this order.
pub const HEADER: [&str; 9] = [
    "section",
    "metric",
    "namesock",
    PREVIOUS,
    "plain TCP",
    "peer",
    "namesock vs plain",
    "namesock vs previous",
    "goal",
];

/// The header of the previous release's column.
pub const PREVIOUS: &str = "previous release (protocol 1, unencrypted)";

/// Render rows as a markdown table with a header.
pub fn markdown(rows: &[Row]) -> String {
    let header = HEADER;
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.section.clone(),
                r.metric.clone(),
                r.namesock.clone(),
                r.previous.clone(),
                r.plain.clone(),
                r.peer.clone(),
                r.versus.clone(),
                r.vs_previous.clone(),
                r.goal.clone(),
            ]
            .map(|c| escape(&c))
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, items: &[String]| {
        out.push('|');
        for (c, w) in items.iter().zip(widths) {
            let pad = w - c.chars().count();
            let _ = write!(out, " {c}{} |", " ".repeat(pad));
        }
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    line(&mut out, &widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

/// One raw measurement, for the CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub section: String,
    pub metric: String,
    pub variant: String,
    pub run: usize,
    pub value: f64,
    pub unit: String,
}

/// Render samples as CSV with a header (fields with commas or quotes are quoted).
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("section,metric,variant,run,value,unit\n");
    for s in samples {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            quote(&s.section),
            quote(&s.metric),
            quote(&s.variant),
            s.run,
            s.value,
            quote(&s.unit)
        );
    }
    out
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// A figure with a sensible number of digits: 3 significant digits, no exponent.
pub fn fig(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    let a = value.abs();
    if a >= 100.0 {
        format!("{value:.0}")
    } else if a >= 10.0 {
        format!("{value:.1}")
    } else if a >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// A figure with a unit, or `-` when missing.
pub fn with_unit(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{} {unit}", fig(v)))
}

/// `×0.87` or `-`.
pub fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |r| format!("×{}", fig(r)))
}

/// `+12.3 µs` style difference, or `-`.
pub fn added(value: Option<f64>, base: Option<f64>, unit: &str) -> String {
    match (value, base) {
        (Some(v), Some(b)) => {
            let d = v - b;
            let sign = if d >= 0.0 { "+" } else { "-" };
            format!("{sign}{} {unit}", fig(d.abs()))
        }
        _ => "-".to_owned(),
    }
}

/// The link speeds of the suite's `link` section in kbit/s; `None` is no limit.
pub const LINK_KBITS: [Option<u64>; 5] = [
    None,
    Some(1_000_000),
    Some(2_500_000),
    Some(5_000_000),
    Some(10_000_000),
];
/// Issue 19's goal for one session over a limited link: this share of plain TCP's rate.
pub const LINK_GOAL: f64 = 0.95;

/// The connect rows' peer labels: plain TCP after a `getaddrinfo`, and `nb-peer relay` on
/// each host (one event loop, plain TCP, none of namesock's protocol).
pub const LOOKUP_PEER: &str = "plain + getaddrinfo(/etc/hosts)";
pub const RELAY_PEER: &str = "relay×2 (no protocol)";
/// The link rows' peer label for the previous release's share of plain TCP.
pub const PREVIOUS_PEER: &str = "previous vs plain";
/// The bulk rows' peer labels: socat on each host, and plain TCP over 127.0.0.1 on one host.
pub const SOCAT_PEER: &str = "socat×2";
pub const LOOPBACK_PEER: &str = "loopback";

/// The section of the `link` rows.
pub const LINK_SECTION: &str = "link, 1 session client->server";

/// A link speed in `raw.csv`: `unthrottled`, `1 Gbit/s`, `2.5 Gbit/s`.
pub fn link_label(kbit: Option<u64>) -> String {
    kbit.map_or_else(
        || "unthrottled".to_owned(),
        |k| format!("{} Gbit/s", k as f64 / 1e6),
    )
}

/// The metric of a `link` row: `throughput, link unthrottled`, `throughput, link 1 Gbit/s
/// (125 MB/s)`.
pub fn link_metric(kbit: Option<u64>) -> String {
    let speed = kbit.map_or_else(String::new, |k| format!(" ({} MB/s)", fig(k as f64 / 8e3)));
    format!("throughput, link {}{speed}", link_label(kbit))
}

/// A goal of "at least `goal` times the base" against the measured `ratio`: `≥0.9 × plain: met`,
/// `≥0.9 × plain: missed by 12 %`, or just the goal when there is no ratio.
pub fn at_least(ratio: Option<f64>, goal: f64, base: &str) -> String {
    let want = format!("≥{} × {base}", fig_plain(goal));
    match ratio.map(|r| crate::stats::shortfall(r, goal)) {
        Some(Ok(())) => format!("{want}: met"),
        Some(Err(short)) => format!("{want}: missed by {:.0} %", short * 100.0),
        None => want,
    }
}

/// A goal of "at most `limit` more than the base" against `value` and `base`: `≤+150 µs vs
/// previous: met`, `... missed by 20.0 µs`, or just the goal when a figure is missing.
pub fn at_most_added(
    value: Option<f64>,
    base: Option<f64>,
    limit: f64,
    unit: &str,
    what: &str,
) -> String {
    let want = format!("≤+{} {unit} vs {what}", fig_plain(limit));
    match (value, base) {
        (Some(v), Some(b)) if v - b <= limit => format!("{want}: met"),
        (Some(v), Some(b)) => format!("{want}: missed by {} {unit}", fig(v - b - limit)),
        _ => want,
    }
}

/// A goal of "at most `limit`" against `value`: `≤50 ms: met`, `≤50 ms: missed by 12.0 ms`,
/// or just the goal when the figure is missing.
pub fn at_most(value: Option<f64>, limit: f64, unit: &str) -> String {
    let want = format!("≤{} {unit}", fig_plain(limit));
    match value {
        Some(v) if v <= limit => format!("{want}: met"),
        Some(v) => format!("{want}: missed by {} {unit}", fig(v - limit)),
        None => want,
    }
}

/// A goal of "at most `limit` times the base" for a ratio: `≤1.5 × plain: met`, `... missed
/// by 120 %` (how far above the limit, relative to it), or just the goal when a figure is
/// missing.
pub fn at_most_times(ratio: Option<f64>, limit: f64, base: &str) -> String {
    let want = format!("≤{} × {base}", fig_plain(limit));
    match ratio {
        Some(r) if r <= limit => format!("{want}: met"),
        Some(r) => format!("{want}: missed by {:.0} %", (r / limit - 1.0) * 100.0),
        None => want,
    }
}

/// A goal's number as written (`0.9`, `150`), without [`fig`]'s fixed digits.
fn fig_plain(value: f64) -> String {
    format!("{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, namesock: &str) -> Row {
        Row {
            section: "bulk".into(),
            metric: metric.into(),
            namesock: namesock.into(),
            plain: "2 GB/s".into(),
            versus: "×0.5".into(),
            goal: "≥0.9 missed".into(),
            ..Row::default()
        }
    }

    #[test]
    fn table_is_aligned_markdown() {
        let t = markdown(&[row("c->s", "1 GB/s"), row("s->c | odd", "900 MB/s")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| section |"));
        assert!(lines[1].starts_with("| ---"));
        assert!(lines[3].contains("s->c \\| odd"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{t}");
    }

    #[test]
    fn csv_quotes() {
        let s = Sample {
            section: "a,b".into(),
            metric: "say \"hi\"".into(),
            variant: "plain".into(),
            run: 2,
            value: 1.5,
            unit: "ms".into(),
        };
        let out = csv(&[s]);
        assert_eq!(
            out.lines().nth(1),
            Some("\"a,b\",\"say \"\"hi\"\"\",plain,2,1.5,ms")
        );
    }

    #[test]
    fn figures() {
        assert_eq!(fig(1234.5), "1234");
        assert_eq!(fig(12.345), "12.3");
        assert_eq!(fig(1.2345), "1.23");
        assert_eq!(fig(0.12345), "0.123");
        assert_eq!(fig(f64::NAN), "-");
        assert_eq!(with_unit(Some(2.0), "ms"), "2.00 ms");
        assert_eq!(with_unit(None, "ms"), "-");
        assert_eq!(times(Some(0.8771)), "×0.877");
        assert_eq!(added(Some(30.0), Some(18.0), "µs"), "+12.0 µs");
        assert_eq!(added(Some(10.0), Some(18.0), "µs"), "-8.00 µs");
        assert_eq!(added(None, Some(1.0), "µs"), "-");
    }

    #[test]
    fn link_labels() {
        assert_eq!(link_metric(None), "throughput, link unthrottled");
        assert_eq!(
            link_metric(Some(2_500_000)),
            "throughput, link 2.5 Gbit/s (312 MB/s)"
        );
        assert_eq!(link_label(Some(10_000_000)), "10 Gbit/s");
    }

    #[test]
    fn goals() {
        assert_eq!(at_least(Some(0.95), 0.9, "plain"), "≥0.9 × plain: met");
        assert_eq!(
            at_least(Some(0.45), 0.9, "plain"),
            "≥0.9 × plain: missed by 50 %"
        );
        assert_eq!(at_least(None, 0.85, "previous"), "≥0.85 × previous");
        assert_eq!(at_most(Some(25.6), 50.0, "ms"), "≤50 ms: met");
        assert_eq!(at_most(Some(62.0), 50.0, "ms"), "≤50 ms: missed by 12.0 ms");
        assert_eq!(at_most(None, 50.0, "ms"), "≤50 ms");
        assert_eq!(at_most_times(Some(1.2), 1.5, "plain"), "≤1.5 × plain: met");
        assert_eq!(
            at_most_times(Some(3.42), 1.5, "plain"),
            "≤1.5 × plain: missed by 128 %"
        );
        assert_eq!(at_most_times(None, 1.5, "plain"), "≤1.5 × plain");
        assert_eq!(
            at_most_added(Some(1100.0), Some(1000.0), 150.0, "µs", "previous"),
            "≤+150 µs vs previous: met"
        );
        assert_eq!(
            at_most_added(Some(1200.0), Some(1000.0), 150.0, "µs", "previous"),
            "≤+150 µs vs previous: missed by 50.0 µs"
        );
        assert_eq!(
            at_most_added(None, Some(1.0), 150.0, "µs", "previous"),
            "≤+150 µs vs previous"
        );
    }
}
