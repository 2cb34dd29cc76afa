//! `merge`: adds up the `SUMMARY` lines of several processes of one
//! `subscribers` or `presence` run into one, exactly: counts are summed,
//! latency histograms (the `*_hist` keys) merged and their percentiles
//! recomputed, the connect time runs from the earliest start to the latest
//! end, and each gateway's sockets are summed over the processes while its RSS
//! and CPU (read by every process at the same barrier) are taken once.

use std::{io::Read, path::PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::report::{self, Latency, SUMMARY_PREFIX};

/// Options of `merge`.
#[derive(clap::Args, Clone, Debug)]
pub struct MergeArgs {
    /// Files holding the processes' output or SUMMARY JSON lines (default:
    /// standard input). Lines that are not summaries are skipped.
    pub files: Vec<PathBuf>,
    /// Which scenario's lines to merge (default: the first summary's).
    #[arg(long)]
    pub scenario: Option<String>,
}

/// The summaries in `text`: `SUMMARY {…}` lines, or bare JSON lines with a
/// `scenario` (as scripts/bench stores them).
pub fn summaries(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let json = line.strip_prefix(SUMMARY_PREFIX).unwrap_or(line);
            json.starts_with('{')
                .then(|| serde_json::from_str::<Value>(json).ok())
                .flatten()
        })
        .filter(|v| v["scenario"].is_string() && v["results"].is_object())
        .collect()
}

/// Reads the inputs and merges the chosen scenario's summaries.
pub fn run(args: &MergeArgs) -> anyhow::Result<Value> {
    let mut text = String::new();
    if args.files.is_empty() {
        std::io::stdin().read_to_string(&mut text)?;
    }
    for file in &args.files {
        text += &std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.push('\n');
    }
    let all = summaries(&text);
    let Some(scenario) = args.scenario.clone().or_else(|| {
        all.first()
            .and_then(|s| s["scenario"].as_str().map(str::to_owned))
    }) else {
        bail!("no SUMMARY line in the input");
    };
    let parts: Vec<Value> = all
        .into_iter()
        .filter(|s| s["scenario"] == scenario.as_str())
        .collect();
    merge(&parts).map_err(|e| anyhow::anyhow!(e))
}

/// Merges summaries of one scenario into one summary.
pub fn merge(parts: &[Value]) -> Result<Value, String> {
    let first = parts.first().ok_or("nothing to merge")?;
    let results: Vec<&Value> = parts.iter().map(|p| &p["results"]).collect();
    let params: Vec<&Value> = parts.iter().map(|p| &p["params"]).collect();
    Ok(json!({
        "scenario": first["scenario"],
        "target": first["target"],
        "params": merge_params(&params),
        "results": merge_results(&results)?,
    }))
}

fn merge_params(parts: &[&Value]) -> Value {
    let mut out = parts[0].as_object().cloned().unwrap_or_default();
    for key in ["sockets", "users", "rate"] {
        if out.get(key).is_some_and(Value::is_number) {
            let sum: f64 = parts.iter().filter_map(|p| p[key].as_f64()).sum();
            out.insert(key.into(), number(sum));
        }
    }
    if let Some(offset) = parts.iter().filter_map(|p| p["offset"].as_u64()).min() {
        out.insert("offset".into(), json!(offset));
    }
    out.insert("parts".into(), json!(parts.len()));
    Value::Object(out)
}

/// An integer when `x` is one, so sums of counts stay integers.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(report::round3(x))
    }
}

fn merge_results(parts: &[&Value]) -> Result<Value, String> {
    let first = parts[0].as_object().ok_or("results is not an object")?;
    let mut out = Map::new();
    fn values<'a>(parts: &'a [&'a Value], key: &'a str) -> impl Iterator<Item = &'a Value> {
        parts.iter().map(move |p| &p[key])
    }
    for (key, v0) in first {
        if let Some(base) = key.strip_suffix("_hist") {
            let mut histogram = report::histogram();
            for v in values(parts, key) {
                report::add_histogram_json(&mut histogram, v)?;
            }
            out.insert(key.clone(), report::histogram_json(&histogram));
            out.insert(base.into(), Latency::of(&histogram).to_json());
            continue;
        }
        if first.contains_key(&format!("{key}_hist")) {
            continue;
        }
        let merged = match key.as_str() {
            "gateways" => merge_gateways(parts),
            "server_cpu_s" => max_per_key(values(parts, key)),
            "client_cpu" => merge_client_cpu(values(parts, key)),
            k if k.ends_with("_start_unix_ms") => {
                json!(values(parts, key).filter_map(Value::as_u64).min())
            }
            k if k.ends_with("_end_unix_ms") => {
                json!(values(parts, key).filter_map(Value::as_u64).max())
            }
            k if k.ends_with("_s") => number(
                values(parts, key)
                    .filter_map(Value::as_f64)
                    .fold(0.0, f64::max),
            ),
            _ => match v0 {
                Value::Bool(_) => json!(values(parts, key).all(|v| v.as_bool() == Some(true))),
                Value::Number(_) => number(values(parts, key).filter_map(Value::as_f64).sum()),
                Value::Object(_) => sum_per_key(values(parts, key)),
                other => other.clone(),
            },
        };
        out.insert(key.clone(), merged);
    }
    if let (Some(start), Some(end)) = (
        out.get("connect_start_unix_ms").and_then(Value::as_u64),
        out.get("connect_end_unix_ms").and_then(Value::as_u64),
    ) {
        out.insert(
            "connect_s".into(),
            json!(end.saturating_sub(start) as f64 / 1e3),
        );
    }
    // The gateways' CPU per event: every gateway handles every event.
    let events = out.get("acked").and_then(Value::as_u64).unwrap_or(0);
    if events > 0
        && let Some(Value::Array(gateways)) = out.get_mut("gateways")
    {
        for g in gateways {
            if let Some(cpu) = g["cpu_s"].as_f64() {
                g["cpu_us_per_event"] = json!(report::round3(cpu * 1e6 / events as f64));
            }
        }
    }
    Ok(Value::Object(out))
}

/// `{k: n}` maps summed key by key.
fn sum_per_key<'a>(maps: impl Iterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for map in maps.filter_map(Value::as_object) {
        for (k, v) in map {
            let sum = out.get(k).and_then(Value::as_f64).unwrap_or(0.0) + v.as_f64().unwrap_or(0.0);
            out.insert(k.clone(), number(sum));
        }
    }
    Value::Object(out)
}

/// `{pid: seconds}` maps: the same process watched by every part over the
/// same phase, so the largest reading, not the sum.
fn max_per_key<'a>(maps: impl Iterator<Item = &'a Value>) -> Value {
    let mut out = Map::new();
    for map in maps.filter_map(Value::as_object) {
        for (k, v) in map {
            let best = match (out.get(k).and_then(Value::as_f64), v.as_f64()) {
                (Some(a), Some(b)) => json!(a.max(b)),
                (None, Some(b)) => json!(b),
                (Some(a), None) => json!(a),
                (None, None) => Value::Null,
            };
            out.insert(k.clone(), best);
        }
    }
    Value::Object(out)
}

/// Every part's own CPU adds up; the wall time is the longest part's.
fn merge_client_cpu<'a>(parts: impl Iterator<Item = &'a Value>) -> Value {
    let (mut cpu, mut wall) = (0.0, 0.0f64);
    for p in parts {
        cpu += p["cpu_s"].as_f64().unwrap_or(0.0);
        wall = wall.max(p["wall_s"].as_f64().unwrap_or(0.0));
    }
    let cores = cpu / wall.max(1e-9);
    let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    json!({
        "cpu_s": report::round3(cpu),
        "wall_s": report::round3(wall),
        "cores": report::round3(cores),
        "saturated": cores > 0.85 * available,
    })
}

/// The gateways by URL: sockets summed over the parts, the RSS before as the
/// lowest reading and after as the highest, the CPU as the highest reading.
fn merge_gateways(parts: &[&Value]) -> Value {
    let mut out: Vec<Map<String, Value>> = Vec::new();
    for g in parts
        .iter()
        .filter_map(|p| p["gateways"].as_array())
        .flatten()
    {
        let url = &g["url"];
        let i = match out.iter().position(|m| &m["url"] == url) {
            Some(i) => i,
            None => {
                out.push(Map::from_iter([
                    ("url".to_owned(), url.clone()),
                    ("pid".to_owned(), Value::Null),
                    ("sockets".to_owned(), json!(0)),
                    ("rss_before".to_owned(), Value::Null),
                    ("rss_after".to_owned(), Value::Null),
                    ("cpu_s".to_owned(), Value::Null),
                ]));
                out.len() - 1
            }
        };
        let m = &mut out[i];
        if m["pid"].is_null() {
            m["pid"] = g["pid"].clone();
        }
        m["sockets"] =
            json!(m["sockets"].as_u64().unwrap_or(0) + g["sockets"].as_u64().unwrap_or(0));
        let pick = |a: &Value, b: &Value, f: fn(u64, u64) -> u64| match (a.as_u64(), b.as_u64()) {
            (Some(x), Some(y)) => json!(f(x, y)),
            (Some(x), None) | (None, Some(x)) => json!(x),
            (None, None) => Value::Null,
        };
        m["rss_before"] = pick(&m["rss_before"], &g["rss_before"], u64::min);
        m["rss_after"] = pick(&m["rss_after"], &g["rss_after"], u64::max);
        m["cpu_s"] = match (m["cpu_s"].as_f64(), g["cpu_s"].as_f64()) {
            (Some(x), Some(y)) => json!(x.max(y)),
            (Some(x), None) | (None, Some(x)) => json!(x),
            (None, None) => Value::Null,
        };
    }
    Value::Array(
        out.into_iter()
            .map(|mut m| {
                m.insert(
                    "bytes_per_socket".into(),
                    json!(crate::fleet::bytes_per_socket(
                        m["rss_before"].as_u64(),
                        m["rss_after"].as_u64(),
                        m["sockets"].as_u64().unwrap_or(0),
                    )),
                );
                Value::Object(m)
            })
            .collect(),
    )
}

/// The human report of a merged summary: the scenario's own, and the gateways.
pub fn human(summary: &Value) -> String {
    let (params, results) = (&summary["params"], &summary["results"]);
    let mut out = match summary["scenario"].as_str() {
        Some("subscribers") => crate::subscribers::human(params, results),
        Some("presence") => crate::presence::human(params, results),
        other => format!("merged {} summaries of {other:?}\n", params["parts"]),
    };
    for g in results["gateways"].as_array().into_iter().flatten() {
        out += &format!(
            "  gateway {} pid {}: {} sockets, RSS {} → {} B = {} B per socket, CPU {} s{}\n",
            g["url"].as_str().unwrap_or("?"),
            g["pid"],
            g["sockets"],
            g["rss_before"],
            g["rss_after"],
            g["bytes_per_socket"],
            g["cpu_s"],
            g["cpu_us_per_event"]
                .as_f64()
                .map(|us| format!(" ({us} µs per event)"))
                .unwrap_or_default()
        );
    }
    if let Some(watched) = results["server_cpu_s"].as_object() {
        for (pid, cpu) in watched {
            out += &format!("  pid {pid} CPU {cpu} s\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: u64, latencies: &[u64], gateway_rss: (u64, u64), sockets: u64) -> Value {
        let mut h = report::histogram();
        for &l in latencies {
            h.record(l).unwrap();
        }
        let line = report::summary_line(
            "subscribers",
            "http://a",
            json!({"sockets": sockets, "offset": offset, "rate": 100.0, "label": "x"}),
            json!({
                "clean": true,
                "sockets": sockets,
                "lost": 1,
                "acked": 500,
                "connect_errors": {"refused": 2},
                "connect_start_unix_ms": 1_000 + offset,
                "connect_end_unix_ms": 5_000 + offset,
                "connect_s": 4.0,
                "phase_s": 10.0 + offset as f64,
                "latency": Latency::of(&h).to_json(),
                "latency_hist": report::histogram_json(&h),
                "client_cpu": {"cpu_s": 2.0, "wall_s": 10.0, "cores": 0.2, "saturated": false},
                "server_cpu_s": {"7": 1.5 + offset as f64},
                "gateways": [
                    {"url": "http://a", "pid": 7, "sockets": sockets, "rss_before": gateway_rss.0, "rss_after": gateway_rss.1, "cpu_s": 3.0},
                    {"url": "http://b", "pid": null, "sockets": 1, "rss_before": null, "rss_after": null, "cpu_s": null},
                ],
            }),
        );
        summaries(&line).remove(0)
    }

    #[test]
    fn counts_add_up_and_percentiles_come_from_the_merged_histogram() {
        let a = part(0, &[1_000; 99], (100_000, 1_000_000), 100);
        let b = part(100, &[50_000], (110_000, 1_100_000), 100);
        let text = format!(
            "noise\nSUMMARY {a}\n{b}\n{}\n",
            json!({"scenario": "meta", "results": {}})
        );
        let parts: Vec<Value> = summaries(&text)
            .into_iter()
            .filter(|s| s["scenario"] == "subscribers")
            .collect();
        assert_eq!(parts.len(), 2);
        let merged = merge(&parts).unwrap();
        let (p, r) = (&merged["params"], &merged["results"]);
        assert_eq!(
            (
                p["sockets"].clone(),
                p["offset"].clone(),
                p["parts"].clone()
            ),
            (json!(200), json!(0), json!(2))
        );
        assert_eq!(p["rate"], json!(200));
        assert_eq!(p["label"], "x");
        assert_eq!(r["clean"], true);
        assert_eq!(r["sockets"], 200);
        assert_eq!(r["lost"], 2);
        assert_eq!(r["acked"], 1000);
        assert_eq!(r["connect_errors"], json!({"refused": 4}));
        // From the first start to the last end.
        assert_eq!(r["connect_s"], json!(4.1));
        assert_eq!(r["phase_s"], json!(110));
        // 100 values: 99 at 1 ms and one at 50 ms; p99 is 1 ms, the max 50 ms.
        assert_eq!(r["latency"]["count"], 100);
        assert_eq!(r["latency"]["p99_ms"], json!(1.0));
        assert_eq!(r["latency"]["max_ms"], json!(50.015));
        assert_eq!(r["client_cpu"]["cpu_s"], json!(4.0));
        assert_eq!(r["client_cpu"]["cores"], json!(0.4));
        assert_eq!(r["server_cpu_s"], json!({"7": 101.5}));
        let g = &r["gateways"][0];
        assert_eq!(
            (
                g["sockets"].clone(),
                g["rss_before"].clone(),
                g["rss_after"].clone()
            ),
            (json!(200), json!(100_000), json!(1_100_000))
        );
        assert_eq!(g["bytes_per_socket"], json!(5_000.0));
        assert_eq!(g["cpu_s"], json!(3.0));
        assert_eq!(g["cpu_us_per_event"], json!(3_000.0));
        let g = &r["gateways"][1];
        assert_eq!(
            (g["sockets"].clone(), g["bytes_per_socket"].clone()),
            (json!(2), Value::Null)
        );
        // One part unclean makes the whole unclean.
        let mut c = part(200, &[1], (0, 0), 1);
        c["results"]["clean"] = json!(false);
        assert_eq!(merge(&[a, c]).unwrap()["results"]["clean"], false);
        assert!(human(&merged).contains("2 processes merged"));
    }

    #[test]
    fn nothing_to_merge_is_an_error() {
        assert!(merge(&[]).is_err());
        assert!(summaries("SUMMARY not json\n{\"x\":1}\n").is_empty());
    }
}
