//! The NetworkPolicies allow exactly the intended paths between the pods, the
//! ingress controller, Prometheus and the outside.

use super::*;

#[test]
fn network_policies_allow_exactly_the_intended_paths() {
    for variant in variants() {
        // The way in: ingress-nginx's pods, or (components/gateway-api) the Gateway
        // API implementation's proxies.
        let controller = if variant.manifests.of_kind("HTTPRoute").next().is_some() {
            outsider(
                "ingress-controller",
                "gateway-system",
                json!({"app.kubernetes.io/name": "envoy"}),
                json!([]),
            )
        } else {
            outsider(
                "ingress-controller",
                "ingress-nginx",
                json!({"app.kubernetes.io/name": "ingress-nginx"}),
                json!([]),
            )
        };
        network_in(&variant.manifests, controller);
    }
}

/// The pods of a CloudNativePG Cluster, as the operator makes them: labelled
/// `cnpg.io/cluster: <name>`, PostgreSQL on 5432, the instance manager's status on
/// 8000, metrics on 9187.
fn database_pods(manifests: &Manifests, namespace: &Value) -> Vec<Endpoint> {
    manifests
        .of_kind("Cluster")
        .map(|cluster| {
            let name = cluster["metadata"]["name"].as_str().unwrap();
            Endpoint {
                name: name.to_owned(),
                namespace: namespace.clone(),
                labels: json!({"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}),
                containers: vec![json!({"name": "postgres", "ports": [
                    {"name": "postgresql", "containerPort": 5432},
                    {"name": "status", "containerPort": 8000},
                    {"name": "metrics", "containerPort": 9187},
                ]})],
            }
        })
        .collect()
}

fn network_in(manifests: &Manifests, ingress_controller: Endpoint) {
    let own = namespace_labels(manifests);
    let workloads = pods(manifests);
    let databases = database_pods(manifests, &own);
    let ours: Vec<Endpoint> = workloads.iter().chain(&databases).cloned().collect();
    let pod = |name: &str| ours.iter().find(|p| p.name == name).unwrap().clone();
    let operator = outsider(
        "cnpg-operator",
        "cnpg-system",
        json!({"app.kubernetes.io/name": "cloudnative-pg"}),
        json!([]),
    );
    let prometheus = outsider(
        "prometheus",
        "monitoring",
        json!({"app.kubernetes.io/name": "prometheus"}),
        json!([]),
    );
    let elsewhere = outsider(
        "elsewhere",
        "default",
        json!({"app": "other"}),
        json!([{"name": "http", "containerPort": 8080}]),
    );
    let mut debug = outsider("debug", "users", json!({"run": "debug"}), json!([]));
    debug.namespace = own.clone();
    let dns = outsider(
        "kube-dns",
        "kube-system",
        json!({"k8s-app": "kube-dns"}),
        json!([{"name": "dns", "containerPort": 53, "protocol": "UDP"}]),
    );

    // Every selector names real pods.
    for policy in manifests.of_kind("NetworkPolicy") {
        let name = &policy["metadata"]["name"];
        let selector = match_labels(&policy["spec"]["podSelector"]);
        if selector.as_object().is_some_and(|s| !s.is_empty()) {
            assert!(
                ours.iter().any(|p| selects(&selector, &p.labels)),
                "NetworkPolicy {name} selects no pod"
            );
        }
        for (rules, peers) in [("ingress", "from"), ("egress", "to")] {
            for rule in policy["spec"][rules].as_array().into_iter().flatten() {
                for peer in rule[peers].as_array().into_iter().flatten() {
                    if peer.get("namespaceSelector").is_none() && peer.get("ipBlock").is_none() {
                        assert!(
                            ours.iter().any(|p| peer_is(peer, &own, p)),
                            "NetworkPolicy {name}: the peer {peer} is no pod of ours"
                        );
                    }
                }
            }
        }
    }

    let mut intended: BTreeSet<(&str, &str, &str)> = [
        ("ingress-controller", "gateway", "http"),
        ("prometheus", "gateway", "metrics"),
        ("prometheus", "user-service", "metrics"),
        ("prometheus", "user-service", "ls-metrics"),
        ("gateway", "user-service", "grpc"),
        ("gateway", "redis", "redis"),
        ("user-service", "redis", "redis"),
    ]
    .into();
    for database in &databases {
        let name = database.name.as_str();
        intended.extend([
            ("user-service", name, "postgresql"),
            ("prometheus", name, "metrics"),
            ("cnpg-operator", name, "status"),
            ("cnpg-operator", name, "postgresql"),
        ]);
        // Replication and the instance managers, between the instances.
        for port in ["postgresql", "status"] {
            assert!(allowed(
                manifests,
                database,
                database,
                database.port(port),
                "TCP"
            ));
        }
    }
    let sources: Vec<Endpoint> = ours
        .iter()
        .cloned()
        .chain([
            ingress_controller,
            operator,
            prometheus.clone(),
            elsewhere.clone(),
            debug.clone(),
        ])
        .collect();
    for destination in &ours {
        for container in &destination.containers {
            for port in container["ports"].as_array().into_iter().flatten() {
                let port_name = port["name"].as_str().unwrap();
                let number = u16::try_from(port["containerPort"].as_u64().unwrap()).unwrap();
                for source in sources.iter().filter(|s| s.name != destination.name) {
                    let expected = intended.contains(&(
                        source.name.as_str(),
                        destination.name.as_str(),
                        port_name,
                    ));
                    // Each side on its own, too: a policy loosened on one side is
                    // caught even while the other still blocks.
                    let mut sides = vec![Side::Both, Side::Ingress];
                    if source.namespace == own {
                        sides.push(Side::Egress);
                    }
                    for side in sides {
                        assert_eq!(
                            allowed_by(manifests, source, destination, number, "TCP", side),
                            expected,
                            "{} → {}:{port_name} should be {} ({})",
                            source.name,
                            destination.name,
                            if expected { "allowed" } else { "denied" },
                            match side {
                                Side::Both => "both sides",
                                Side::Ingress => "the destination's ingress",
                                Side::Egress => "the source's egress",
                            }
                        );
                    }
                }
            }
        }
    }
    // Scraping reaches every annotated port; DNS works from every pod, and
    // nothing else leaves the namespace.
    for destination in &workloads {
        let annotations = &manifests.pod_template(&destination.name)["metadata"]["annotations"];
        if let Some(port) = annotations["prometheus.io/port"].as_str() {
            let port: u16 = port.parse().unwrap();
            assert!(
                allowed(manifests, &prometheus, destination, port, "TCP"),
                "Prometheus cannot scrape {}:{port}",
                destination.name
            );
        }
    }
    for source in ours.iter().chain([&debug]) {
        for protocol in ["UDP", "TCP"] {
            assert!(
                allowed(manifests, source, &dns, 53, protocol),
                "{} cannot resolve names over {protocol}",
                source.name
            );
        }
        assert!(!allowed(manifests, source, &dns, 80, "TCP"));
        assert!(!allowed(
            manifests,
            source,
            &elsewhere,
            elsewhere.port("http"),
            "TCP"
        ));
    }
    assert!(!allowed(
        manifests,
        &pod("redis"),
        &pod("user-service"),
        50051,
        "TCP"
    ));

    // Traces (components/tracing): the two services reach the collector's
    // OTLP/gRPC port and nothing else of the monitoring namespace; Redis never.
    let tracing = manifests
        .environment(manifests.container("gateway"), &|_, _| String::new())
        .remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    let collector = outsider(
        "opentelemetry-collector",
        "monitoring",
        json!({"app.kubernetes.io/name": "opentelemetry-collector"}),
        json!([{"name": "otlp-grpc", "containerPort": 4317}]),
    );
    for source in ours.iter().chain([&debug]) {
        let expected =
            tracing.is_some() && matches!(source.name.as_str(), "gateway" | "user-service");
        assert_eq!(
            allowed(manifests, source, &collector, 4317, "TCP"),
            expected,
            "{} → the collector's 4317",
            source.name
        );
        assert!(!allowed(manifests, source, &collector, 4318, "TCP"));
        assert!(!allowed(manifests, source, &prometheus, 4317, "TCP"));
    }

    // Backups (the Litestream sidecar in the SQLite pod): the user-service pod
    // reaches an object store over HTTPS and nothing else of the internet; of
    // the rest only the database's instances reach 443 anywhere (the API
    // server, whose address differs per cluster; components/postgres).
    let sidecar = manifests.workloads().any(|w| {
        manifests::pod_containers(&w["spec"]["template"]["spec"])
            .iter()
            .any(|c| c["name"] == "litestream")
    });
    let store = external(
        "object-store",
        "52.216.8.10",
        json!([{"name": "https", "containerPort": 443}]),
    );
    for source in ours.iter().chain([&debug]) {
        let expected = (sidecar && source.name == "user-service")
            || databases.iter().any(|d| d.name == source.name);
        assert_eq!(
            allowed(manifests, source, &store, 443, "TCP"),
            expected,
            "{} → an object store's 443",
            source.name
        );
        assert!(!allowed(manifests, source, &store, 80, "TCP"));
    }
}
