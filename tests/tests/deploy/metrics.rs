//! The monitoring pieces (deploy/components/monitoring and socket-autoscaling)
//! name only metrics the binaries really export: every metric name and label in
//! the alert rules, the Grafana dashboard, the HPA's socket metric and
//! prometheus-adapter's rule is checked against a real scrape of both binaries,
//! started with their manifests' environment after a write and a socket made every
//! histogram record. The PodMonitors scrape where the pods serve metrics, and every
//! alert has its runbook in deploy/README.md.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// Metric names the rules use that our binaries do not export, and whose they are.
const EXTERNAL_METRICS: [(&str, &str); 3] = [
    (
        "up",
        "Prometheus itself: 1 while a target's scrape succeeds",
    ),
    (
        "kube_pod_status_ready",
        "kube-state-metrics (kube-prometheus-stack): a pod's readiness, for the user-service its gRPC health",
    ),
    (
        "litestream_sync_error_count",
        "the Litestream sidecar (tests/tests/litestream.rs scrapes a real one for it)",
    ),
];

/// Labels Prometheus adds to every scraped series (from the PodMonitors' targets).
const TARGET_LABELS: [&str; 5] = ["namespace", "pod", "job", "instance", "container"];

/// PromQL words that look like metric names.
const KEYWORDS: [&str; 13] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// PromQL's aggregation operators (which may take `by (…)` before their argument).
const AGGREGATIONS: [&str; 13] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
];

/// One selector in a query: a metric name and its label matchers
/// (`(label, operator, value)`).
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// The metric selectors of a PromQL expression: every name that is not a function,
/// a keyword or a grouping label, with the matchers in its braces.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            // A string outside braces (e.g. a label_replace argument): skipped.
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:$".contains(chars[i]))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if AGGREGATIONS.contains(&word.as_str()) {
                continue; // sum by (…) (…), sum(…)
            }
            if KEYWORDS.contains(&word.to_lowercase().as_str()) {
                if next == Some('(') {
                    // by (a, b), on (pod): a list of labels.
                    i = j + chars[j..].iter().position(|c| *c == ')').expect("a ')'") + 1;
                }
                continue;
            }
            if next == Some('(') {
                continue; // a function
            }
            if word.starts_with('$') {
                continue;
            }
            let mut matchers = Vec::new();
            if next == Some('{') {
                let end = j + chars[j..]
                    .iter()
                    .position(|c| *c == '}')
                    .expect("a closing brace");
                let inside: String = chars[j + 1..end].iter().collect();
                matchers = parse_matchers(&inside);
                i = end + 1;
            }
            found.push(Selector {
                metric: word,
                matchers,
            });
        } else if c == '{' {
            panic!("a selector without a metric name in {expr:?}: name every metric");
        } else {
            i += 1;
        }
    }
    found
}

/// `a="x", b=~"y"` → [(a, =, x), (b, =~, y)].
fn parse_matchers(inside: &str) -> Vec<(String, String, String)> {
    let mut matchers = Vec::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .expect("a matcher");
        let name = rest[..name_end].to_owned();
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .unwrap_or_else(|| panic!("an operator in {inside:?}"));
        rest = rest[op.len()..].trim_start();
        assert!(rest.starts_with('"'), "a quoted value in {inside:?}");
        let close = 1 + rest[1..].find('"').expect("a closing quote");
        let value = rest[1..close].to_owned();
        rest = rest[close + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
        matchers.push((name, op.to_owned(), value));
    }
    matchers
}

/// Every series name the scrape shows, with the label names and values seen on it.
fn scraped(text: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut series: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).expect("a sample line");
        let labels = series.entry(line[..name_end].to_owned()).or_default();
        if line[name_end..].starts_with('{') {
            let end = line.find('}').unwrap();
            for (name, _, value) in parse_matchers(&line[name_end + 1..end]) {
                labels.entry(name).or_default().insert(value);
            }
        }
    }
    series
}

/// Every PromQL expression of the monitoring pieces, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    let manifests = Manifests::with_every_component();
    for rule in manifests.of_kind("PrometheusRule") {
        for group in rule["spec"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
                expressions.push((
                    format!("PrometheusRule {name}"),
                    rule["expr"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    let dashboard = dashboard();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push((
                format!("dashboard panel {:?}", panel["title"]),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            // label_values(metric, label)
            let inside = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("a label_values() query");
            let (metric, _) = inside.split_once(',').unwrap();
            expressions.push((
                format!("dashboard variable {}", variable["name"]),
                metric.trim().to_owned(),
            ));
        }
    }
    let hpa = manifests.get("HorizontalPodAutoscaler", "gateway");
    for metric in hpa["spec"]["metrics"].as_array().unwrap() {
        if let Some(name) = metric["pods"]["metric"]["name"].as_str() {
            expressions.push(("the HPA's Pods metric".to_owned(), name.to_owned()));
        }
    }
    let adapter = &manifests::parse_yaml(
        &manifests::deploy_dir()
            .join("components/socket-autoscaling/prometheus-adapter-values.yaml"),
    )[0];
    for rule in adapter["rules"]["custom"].as_array().unwrap() {
        expressions.push((
            "prometheus-adapter's seriesQuery".to_owned(),
            rule["seriesQuery"].as_str().unwrap().to_owned(),
        ));
    }
    expressions
}

fn dashboard() -> Value {
    let path = manifests::deploy_dir().join("components/monitoring/grafana-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the dashboard is JSON")
}

#[test]
fn the_query_reader_finds_metrics_and_matchers() {
    let found = selectors(
        r#"sum by (namespace, le) (rate(gateway_fanout_lag_seconds_bucket{namespace="$namespace", route!~"/healthz|/readyz"}[$__rate_interval])) / on(pod) up > 1 and delta(user_service_outbox_backlog[10m]) > 0"#,
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        names,
        [
            "gateway_fanout_lag_seconds_bucket",
            "up",
            "user_service_outbox_backlog"
        ]
    );
    assert_eq!(
        found[0].matchers,
        [
            ("namespace".into(), "=".into(), "$namespace".into()),
            ("route".into(), "!~".into(), "/healthz|/readyz".into())
        ]
    );
}

#[tokio::test]
async fn every_metric_the_monitoring_uses_is_one_the_binaries_export() {
    // Both binaries with their manifests' environment; a socket open, a write
    // through the gateway, its event on the socket: every histogram has recorded.
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = manifests::start_redis(&manifests, &secrets).await;
    let metrics_port = free_port();
    let users = manifests::start_user_service(&manifests, &secrets, &redis, metrics_port).await;
    let gateway = manifests::start_gateway(&manifests, &secrets, &users.url(), &redis).await;
    let http = Http::new(gateway.addr);
    let token = manifests::token(&manifests, &secrets, "metrics-test");
    let mut socket = Socket::connect(gateway.addr, &format!("token={token}")).await;
    assert_eq!(socket.next(STEP_TIMEOUT).await.unwrap()["type"], "hello");
    let bearer = format!("Bearer {token}");
    let created = http
        .send(
            "POST",
            "/api/users/",
            Some("application/json"),
            Some(br#"{"first_name": "Ada", "last_name": "Lovelace"}"#.to_vec()),
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let event = socket.next(STEP_TIMEOUT).await.expect("the create's event");
    assert_eq!(event["type"], "user_update");

    let users_http = Http::new(([127, 0, 0, 1], metrics_port).into());
    let gateway_metrics = Http::new(e2e::logged_addr(&gateway, "metrics_listen"));
    let mut series = BTreeMap::new();
    let mut missing: Vec<String> = Vec::new();
    let expressions = expressions();
    // The relay's lag is recorded as the event reaches Redis, which the socket's
    // frame already proves; a few scrapes allow for the recorder's upkeep.
    for _ in 0..50 {
        series = scraped(&String::from_utf8_lossy(
            &gateway_metrics.get("/metrics").await.body,
        ));
        series.extend(scraped(&String::from_utf8_lossy(
            &users_http.get("/metrics").await.body,
        )));
        missing = expressions
            .iter()
            .flat_map(|(_, expr)| selectors(expr))
            .map(|s| s.metric)
            .filter(|m| !series.contains_key(m) && !EXTERNAL_METRICS.iter().any(|(e, _)| e == m))
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "metrics the monitoring uses and the binaries do not export: {missing:?}"
    );

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &expressions {
        for selector in selectors(expr) {
            used.insert(selector.metric.clone());
            let Some(labels) = series.get(&selector.metric) else {
                continue; // external, listed above
            };
            for (label, op, value) in &selector.matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                match labels.get(label) {
                    None => {
                        problems.push(format!("{place}: {} has no label {label}", selector.metric))
                    }
                    Some(values) if op == "=" && !values.contains(value) => problems.push(format!(
                        "{place}: {}{{{label}=\"{value}\"}} is never exported (seen: {values:?})",
                        selector.metric
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The external names are really used (else the list is stale).
    for (name, whose) in EXTERNAL_METRICS {
        assert!(
            used.contains(name),
            "{name} ({whose}) is no longer used: drop it"
        );
    }
    // What the issue asks to see and alert on is there.
    for needed in [
        "gateway_http_request_duration_seconds_count",
        "gateway_http_request_duration_seconds_bucket",
        "gateway_ws_connections",
        "gateway_fanout_lag_seconds_bucket",
        "user_service_outbox_backlog",
        "user_service_db_write_batch_size_bucket",
        "gateway_event_source_up",
        "gateway_ws_closed_total",
    ] {
        assert!(
            used.contains(needed),
            "the monitoring does not use {needed}"
        );
    }
    drop(users);
}

#[test]
fn pod_monitors_scrape_where_the_pods_serve_metrics_and_every_alert_has_a_runbook() {
    let manifests = Manifests::with_components(&["monitoring"]);
    let mut monitored = BTreeSet::new();
    for monitor in manifests.of_kind("PodMonitor") {
        let name = monitor["metadata"]["name"].as_str().unwrap();
        let selector = match_labels(&monitor["spec"]["selector"]);
        let workloads: Vec<&Value> = manifests
            .workloads()
            .filter(|w| selects(&selector, &w["spec"]["template"]["metadata"]["labels"]))
            .collect();
        assert_eq!(
            workloads.len(),
            1,
            "PodMonitor {name} selects one workload's pods"
        );
        let workload = workloads[0]["metadata"]["name"].as_str().unwrap();
        let annotations = &manifests.pod_template(workload)["metadata"]["annotations"];
        let label = monitor["spec"]["jobLabel"].as_str().expect("a jobLabel");
        assert_eq!(
            manifests.pod_template(workload)["metadata"]["labels"][label],
            workload,
            "the job label of {workload}'s series is its name (the alerts use it)"
        );
        let containers = manifests::pod_containers(&manifests.pod_template(workload)["spec"]);
        for endpoint in monitor["spec"]["podMetricsEndpoints"].as_array().unwrap() {
            let (container, port) = containers
                .iter()
                .find_map(|c| container_port(c, &endpoint["port"]).map(|p| (c, p)))
                .unwrap_or_else(|| panic!("PodMonitor {name}: no port {}", endpoint["port"]));
            if container["name"] == workload {
                assert_eq!(
                    annotations["prometheus.io/port"],
                    port.to_string(),
                    "PodMonitor {name} scrapes the port the pods serve metrics on"
                );
                assert_eq!(endpoint["path"], annotations["prometheus.io/path"]);
            } else {
                // A sidecar's own metrics (Litestream's), on the port it declares.
                assert_eq!(endpoint["path"], "/metrics", "PodMonitor {name}");
            }
        }
        monitored.insert(workload.to_owned());
    }
    assert_eq!(
        monitored,
        OUR_WORKLOADS.iter().map(|w| (*w).to_owned()).collect(),
        "both services are monitored"
    );

    let readme = std::fs::read_to_string(manifests::deploy_dir().join("README.md")).unwrap();
    let mut alerts = Vec::new();
    for rule in manifests.of_kind("PrometheusRule") {
        for group in rule["spec"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                let Some(alert) = rule["alert"].as_str() else {
                    continue;
                };
                alerts.push(alert.to_owned());
                assert!(
                    rule["annotations"]["runbook"]
                        .as_str()
                        .is_some_and(|r| r.contains(alert)),
                    "{alert} names its runbook"
                );
                assert!(
                    rule["labels"]["severity"].is_string(),
                    "{alert} has a severity"
                );
                assert!(
                    rule["annotations"]["summary"].is_string(),
                    "{alert} has a summary"
                );
                let heading = format!("#### {alert}\n");
                let section = readme
                    .split_once(&heading)
                    .unwrap_or_else(|| panic!("deploy/README.md has no runbook for {alert}"))
                    .1;
                let paragraph = section.split("\n#").next().unwrap().trim();
                assert!(
                    paragraph.len() > 200,
                    "{alert}'s runbook is a paragraph, not {paragraph:?}"
                );
            }
        }
    }
    for needed in [
        "UsersEventSourceDown",
        "UsersOutboxBacklogGrowing",
        "UsersFanoutLagHigh",
        "Users5xxRatioHigh",
        "UsersUserServiceNotServing",
        "UsersSocketsClosedTooSlow",
    ] {
        assert!(alerts.iter().any(|a| a == needed), "no alert {needed}");
    }
}
