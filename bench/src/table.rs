//! The results table (markdown) and the raw samples (CSV).

use std::fmt::Write as _;

/// One line of the results table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub section: String,
    pub metric: String,
    /// namesock's figure, formatted.
    pub namesock: String,
    /// plain TCP's figure in the same run, formatted.
    pub plain: String,
    /// another peer's figure (socat, MPTCP), formatted, or empty.
    pub peer: String,
    /// namesock against plain TCP (a ratio or an added cost), formatted.
    pub versus: String,
    /// The goal and whether it is met, or empty.
    pub goal: String,
}

/// Render rows as a markdown table with a header.
pub fn markdown(rows: &[Row]) -> String {
    let header = [
        "section",
        "metric",
        "namesock",
        "plain TCP",
        "peer",
        "namesock vs plain",
        "goal",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.section.clone(),
                r.metric.clone(),
                r.namesock.clone(),
                r.plain.clone(),
                r.peer.clone(),
                r.versus.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(metric: &str, namesock: &str) -> Row {
        Row {
            section: "bulk".into(),
            metric: metric.into(),
            namesock: namesock.into(),
            plain: "2 GB/s".into(),
            peer: String::new(),
            versus: "×0.5".into(),
            goal: "≥0.9 missed".into(),
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
}
