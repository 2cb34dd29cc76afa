//! Reading the Prometheus text both services expose, as a scraper would see it:
//! tests assert on the series a dashboard or an alert reads.

/// The value of one series (`name` or `name{labels}`, exactly as rendered, labels
/// in the order the service writes them) in a Prometheus exposition; `None` when
/// it is absent, so a test can tell "missing" from "zero".
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_found_by_its_exact_name_and_labels() {
        let text = "# TYPE a counter\na 3\na_total 5\nb{x=\"1\"} 2.5\n";
        assert_eq!(metric_value(text, "a"), Some(3.0));
        assert_eq!(metric_value(text, "a_total"), Some(5.0));
        assert_eq!(metric_value(text, "b{x=\"1\"}"), Some(2.5));
        assert_eq!(metric_value(text, "b"), None);
    }
}
