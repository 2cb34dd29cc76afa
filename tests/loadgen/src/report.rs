//! Latency percentiles and the one-line machine-readable summary every run
//! prints, so scripts (BENCHMARKS tables, plots) never parse the human report.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The prefix of the one machine-readable line a run prints.
pub const SUMMARY_PREFIX: &str = "SUMMARY ";

/// A latency histogram in microseconds from 1 µs to one hour at 3 significant
/// digits: precise enough for sub-millisecond p50s and wide enough for a stalled
/// server, in one fixed-size allocation.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration into a microsecond histogram, clamping what is out of range
/// (a zero is recorded as 1 µs, more than an hour as an hour).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(micros);
}

/// The percentiles a run reports, in microseconds, taken from an HDR histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Latency {
    /// How many values were recorded.
    pub count: u64,
    /// The mean.
    pub mean_us: f64,
    /// The median.
    pub p50_us: u64,
    /// The 90th percentile.
    pub p90_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The 99.9th percentile.
    pub p999_us: u64,
    /// The largest value.
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }

    /// The percentiles in milliseconds, for the summary line.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "mean_ms": round3(self.mean_us / 1e3),
            "p50_ms": ms(self.p50_us),
            "p90_ms": ms(self.p90_us),
            "p99_ms": ms(self.p99_us),
            "p99_9_ms": ms(self.p999_us),
            "max_ms": ms(self.max_us),
        })
    }

    /// One line for the human report.
    pub fn human(&self) -> String {
        format!(
            "p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

/// A histogram as JSON, so several processes' runs can be merged exactly:
/// `[[value_us, count], …]`, one pair per non-empty bucket (the bucket's highest
/// equivalent value), in increasing order. Recording each pair back into a
/// [`histogram`] restores the same buckets.
pub fn histogram_json(histogram: &Histogram<u64>) -> Value {
    Value::Array(
        histogram
            .iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

/// Adds a histogram written by [`histogram_json`] into `into`; an error names
/// what is not a `[value, count]` pair.
pub fn add_histogram_json(into: &mut Histogram<u64>, json: &Value) -> Result<(), String> {
    let pairs = json.as_array().ok_or("a histogram is an array of pairs")?;
    for pair in pairs {
        let (Some(value), Some(count)) = (
            pair.get(0).and_then(Value::as_u64),
            pair.get(1).and_then(Value::as_u64),
        ) else {
            return Err(format!("not a [value, count] pair: {pair}"));
        };
        into.saturating_record_n(value.max(1), count);
    }
    Ok(())
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(micros: u64) -> f64 {
    round3(micros as f64 / 1e3)
}

/// Rounds to three decimals, so the summary line stays short and stable.
pub fn round3(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

/// A count per status (or error kind), ordered, as the summary reports them.
pub fn counts_json(counts: &BTreeMap<String, u64>) -> Value {
    Value::Object(counts.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// The machine-readable line: `SUMMARY {"scenario":…,"target":…,"params":…,"results":…}`.
pub fn summary_line(scenario: &str, target: &str, params: Value, results: Value) -> String {
    let line = json!({
        "scenario": scenario,
        "target": target,
        "params": params,
        "results": results,
    });
    format!("{SUMMARY_PREFIX}{line}")
}

/// The client's CPU use over a phase, to tell a saturated client from a slow
/// server.
#[derive(Clone, Copy, Debug)]
pub struct ClientCpu {
    /// User + system CPU time of this process during the phase.
    pub cpu: Duration,
    /// Wall time of the phase.
    pub wall: Duration,
}

impl ClientCpu {
    /// Cores busy on average (CPU time / wall time).
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// Whether the client used most of the machine: then latencies measure the
    /// client as much as the server.
    pub fn saturated(&self) -> bool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.cores() > 0.85 * cores as f64
    }

    /// The summary-line form.
    pub fn to_json(&self) -> Value {
        json!({
            "cpu_s": round3(self.cpu.as_secs_f64()),
            "wall_s": round3(self.wall.as_secs_f64()),
            "cores": round3(self.cores()),
            "saturated": self.saturated(),
        })
    }

    /// One line for the human report.
    pub fn human(&self) -> String {
        format!(
            "client CPU {:.2} s over {:.2} s wall = {:.2} cores{}",
            self.cpu.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.cores(),
            if self.saturated() {
                "  (SATURATED: the client is the bottleneck)"
            } else {
                ""
            }
        )
    }
}

/// CPU time used by other processes (`--watch-pid`) over a phase.
pub fn watched_cpu_json(watched: &[(u32, Option<Duration>)]) -> Value {
    Value::Object(
        watched
            .iter()
            .map(|(pid, cpu)| {
                (
                    pid.to_string(),
                    cpu.map_or(Value::Null, |c| json!(round3(c.as_secs_f64()))),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = histogram();
        for micros in 1..=10_000u64 {
            record(&mut h, Duration::from_micros(micros));
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 10_000);
        // Three significant digits: within 0.1 %.
        let near = |got: u64, want: u64| got.abs_diff(want) as f64 <= want as f64 * 0.001 + 1.0;
        assert!(near(l.p50_us, 5_000), "{l:?}");
        assert!(near(l.p90_us, 9_000), "{l:?}");
        assert!(near(l.p99_us, 9_900), "{l:?}");
        assert!(near(l.p999_us, 9_990), "{l:?}");
        assert!(near(l.max_us, 10_000), "{l:?}");
        assert!((l.mean_us - 5_000.5).abs() < 10.0, "{l:?}");
    }

    #[test]
    fn empty_histogram_reports_zeros_and_out_of_range_is_clamped() {
        assert_eq!(Latency::of(&histogram()), Latency::default());
        let mut h = histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(10_000));
        let l = Latency::of(&h);
        assert_eq!(l.count, 2);
        assert_eq!(l.p50_us, 1);
        assert!(l.max_us >= 3_590_000_000, "{l:?}");
    }

    #[test]
    fn summary_is_one_json_line_with_fixed_keys() {
        let line = summary_line("rest", "http://x", json!({"c": 1}), json!({"rps": 2.5}));
        assert!(!line.contains('\n'));
        let json: Value = serde_json::from_str(line.strip_prefix(SUMMARY_PREFIX).unwrap()).unwrap();
        assert_eq!(json["scenario"], "rest");
        assert_eq!(json["target"], "http://x");
        assert_eq!(json["params"]["c"], 1);
        assert_eq!(json["results"]["rps"], 2.5);
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["scenario", "target", "params", "results"]);
    }

    #[test]
    fn histograms_round_trip_through_json_and_merge() {
        let (mut a, mut b) = (histogram(), histogram());
        for micros in [1, 2, 950, 1_000, 1_234, 55_555, 7_000_000] {
            a.record(micros).unwrap();
        }
        for micros in [3, 1_234, 99_999] {
            b.record_n(micros, 2).unwrap();
        }
        let mut back = histogram();
        add_histogram_json(&mut back, &histogram_json(&a)).unwrap();
        assert_eq!(back, a);
        assert_eq!(Latency::of(&back), Latency::of(&a));
        add_histogram_json(&mut back, &histogram_json(&b)).unwrap();
        let mut both = a.clone();
        both.add(&b).unwrap();
        assert_eq!(Latency::of(&back), Latency::of(&both));
        assert_eq!(back.len(), 13);
        assert!(add_histogram_json(&mut back, &json!([[1]])).is_err());
        assert!(add_histogram_json(&mut back, &json!({"a": 1})).is_err());
    }

    #[test]
    fn milliseconds_have_three_decimals() {
        assert_eq!(ms(1_234_567), 1234.567);
        assert_eq!(ms(1), 0.001);
        let cpu = ClientCpu {
            cpu: Duration::from_millis(500),
            wall: Duration::from_secs(1),
        };
        assert_eq!(cpu.cores(), 0.5);
    }
}
