//! Medians and ratios of repeated measurements.

/// The median of `values` (mean of the two middle values for an even count); `None` for none.
/// NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The `p`-th percentile (0..=100, nearest rank) of `values`; `None` for none.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.saturating_sub(1).min(v.len() - 1)])
}

/// `value / base`, or `None` when the base is zero, negative or missing.
pub fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 && v.is_finite() => Some(v / b),
        _ => None,
    }
}

/// How a measured ratio stands against a goal of "at least `goal`": `Ok(())` if met, else how
/// far short it is as a fraction of the goal (0.1 = 10 % short).
pub fn shortfall(ratio: f64, goal: f64) -> Result<(), f64> {
    if ratio >= goal {
        Ok(())
    } else {
        Err((goal - ratio) / goal)
    }
}

/// Bytes per second from `bytes` moved in `secs`; `None` for a zero or negative time.
pub fn rate(bytes: u64, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| bytes as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 2.0, 1.0, 9.0]), Some(2.0));
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(9.0), Some(10.0)), Some(0.9));
        assert_eq!(ratio(Some(9.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
    }

    #[test]
    fn shortfalls() {
        assert_eq!(shortfall(0.95, 0.9), Ok(()));
        let short = shortfall(0.45, 0.9).unwrap_err();
        assert!((short - 0.5).abs() < 1e-9, "{short}");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(1000, 2.0), Some(500.0));
        assert_eq!(rate(1000, 0.0), None);
    }
}
