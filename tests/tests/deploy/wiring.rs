//! How the manifests wire together: the kustomization lists every manifest,
//! Services select pods and target ports they declare, probes and scrape ports
//! are declared ports, ConfigMap and Secret references resolve, and every
//! variable set is one the binary accepts.

use super::*;

#[test]
fn the_kustomization_lists_every_manifest_and_nothing_else() {
    let manifests = Manifests::load();
    let listed: BTreeSet<String> = manifests.files.iter().cloned().collect();
    assert_eq!(listed.len(), manifests.files.len(), "a file listed twice");
    let present: BTreeSet<String> = std::fs::read_dir(manifests::k8s_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml"
        })
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml lists exactly the files"
    );
    let kustomization = &manifests::parse_yaml(&manifests::k8s_dir().join("kustomization.yaml"))[0];
    for key in kustomization.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "resources", "images"].contains(&key.as_str()),
            "kustomization.yaml transforms the files ({key}): this test reads them as they are"
        );
    }
    let namespace = manifests.of_kind("Namespace").count();
    assert_eq!(namespace, 1, "one namespace");
}

#[test]
fn services_select_pods_and_target_ports_they_declare() {
    let manifests = Manifests::load();
    let pods = pods(&manifests);
    for workload in manifests.workloads() {
        let name = &workload["metadata"]["name"];
        let selector = match_labels(&workload["spec"]["selector"]);
        assert!(
            selector.as_object().is_some_and(|s| !s.is_empty())
                && selects(
                    &selector,
                    &workload["spec"]["template"]["metadata"]["labels"]
                ),
            "{name}'s selector matches its pod template's labels"
        );
        for other in manifests
            .workloads()
            .filter(|w| w["metadata"]["name"] != *name)
        {
            assert!(
                !selects(&selector, &other["spec"]["template"]["metadata"]["labels"]),
                "{name}'s selector also matches {}'s pods",
                other["metadata"]["name"]
            );
        }
    }
    for service in manifests.of_kind("Service") {
        let name = &service["metadata"]["name"];
        let selector = &service["spec"]["selector"];
        assert!(
            selector.as_object().is_some_and(|s| !s.is_empty()),
            "Service {name} selects pods"
        );
        let selected: Vec<&Endpoint> = pods
            .iter()
            .filter(|p| selects(selector, &p.labels))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "Service {name} selects the pods of one workload"
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            for pod in &selected {
                assert!(
                    pod.containers
                        .iter()
                        .any(|c| container_port(c, target).is_some()),
                    "Service {name}'s targetPort {target} is not a port of {}",
                    pod.name
                );
            }
        }
    }
    for statefulset in manifests.of_kind("StatefulSet") {
        let service = statefulset["spec"]["serviceName"].as_str().unwrap();
        let service = manifests.get("Service", service);
        assert!(
            selects(
                &service["spec"]["selector"],
                &statefulset["spec"]["template"]["metadata"]["labels"]
            ),
            "the governing Service of {} selects its pods",
            statefulset["metadata"]["name"]
        );
    }
    // The URLs the binaries are given name Services (and their ports) that select
    // the right pods.
    let secrets = TestSecrets::new(&manifests);
    for (workload, variable, target) in [
        ("user-service", "REDIS_URL", "redis"),
        ("gateway", "REDIS_URL", "redis"),
        ("gateway", "USER_SERVICE_URL", "user-service"),
    ] {
        let environment =
            manifests.environment(manifests.container(workload), &|s, k| secrets.get(s, k));
        let url = &environment[variable];
        let (service, port_listed) = manifests
            .service_of_url(url)
            .unwrap_or_else(|| panic!("{workload}'s {variable}={url} names no Service"));
        assert!(
            port_listed,
            "{workload}'s {variable}={url}: not a port of the Service"
        );
        assert!(
            selects(
                &service["spec"]["selector"],
                &manifests.pod_template(target)["metadata"]["labels"]
            ),
            "{workload}'s {variable}={url} does not reach {target}"
        );
    }
    // The Ingress sends to a Service port that exists.
    for ingress in manifests.of_kind("Ingress") {
        for rule in ingress["spec"]["rules"].as_array().unwrap() {
            for path in rule["http"]["paths"].as_array().unwrap() {
                let backend = &path["backend"]["service"];
                let service = manifests.get("Service", backend["name"].as_str().unwrap());
                let port = &backend["port"];
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| {
                            port.get("name").is_some_and(|n| p["name"] == *n)
                                || port.get("number").is_some_and(|n| p["port"] == *n)
                        }),
                    "the Ingress's backend {backend} is not a port of the Service"
                );
            }
        }
    }
    // The HPA scales the gateway Deployment, the PDB covers its pods.
    let gateway = manifests.get("Deployment", "gateway");
    let hpa = manifests.get("HorizontalPodAutoscaler", "gateway");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "gateway");
    let replicas = gateway["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3, "three gateways");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() <= replicas);
    assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() > replicas);
    let pdb = manifests.get("PodDisruptionBudget", "gateway");
    assert!(selects(
        &match_labels(&pdb["spec"]["selector"]),
        &gateway["spec"]["template"]["metadata"]["labels"]
    ));
    // One writer.
    let users = manifests.get("StatefulSet", "user-service");
    assert_eq!(users["spec"]["replicas"], 1, "SQLite has one writer");
}

#[test]
fn probes_and_scrape_ports_are_ports_the_containers_declare() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let template = &workload["spec"]["template"];
        let container = manifests.container(name);
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let probe = &container[probe];
            for action in ["httpGet", "tcpSocket", "grpc"] {
                if let Some(action) = probe.get(action) {
                    assert!(
                        container_port(container, &action["port"]).is_some(),
                        "{name}'s probe port {} is not a container port",
                        action["port"]
                    );
                }
            }
        }
        assert!(
            container.get("readinessProbe").is_some() && container.get("livenessProbe").is_some(),
            "{name} has readiness and liveness probes"
        );
        let annotations = &template["metadata"]["annotations"];
        if annotations["prometheus.io/scrape"] == "true" {
            let port: u64 = annotations["prometheus.io/port"]
                .as_str()
                .expect("a scrape port")
                .parse()
                .expect("a port number");
            assert!(
                container_port(container, &json!(port)).is_some(),
                "{name}'s scrape port {port} is not a container port"
            );
            assert!(annotations["prometheus.io/path"].is_string());
        }
    }
    for name in OUR_WORKLOADS {
        let annotations = &manifests.pod_template(name)["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"], "true",
            "{name} is scraped"
        );
    }
    // The user-service's health is gRPC, on the gRPC port.
    let users = manifests.container("user-service");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            container_port(users, &users[probe]["grpc"]["port"]),
            container_port(users, &json!("grpc")),
            "the user-service's {probe} is a gRPC probe on its gRPC port"
        );
    }
    let gateway = manifests.container("gateway");
    assert_eq!(gateway["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(gateway["livenessProbe"]["httpGet"]["path"], "/healthz");
}

#[test]
fn config_map_and_secret_references_resolve() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        for container in workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
        {
            // Panics on a missing ConfigMap, Secret or key.
            manifests.environment(container, &|secret, key| {
                assert!(manifests.secret_keys(secret).contains(&key.to_owned()));
                String::new()
            });
        }
    }
    // The placeholders are not keys: the JWT one is too short for HS256, so a
    // gateway started with it refuses to start (checked below).
    let jwt = manifests.secret_value("users-secrets", "jwt-secret");
    assert!(jwt.contains("CHANGE-ME") && jwt.len() < 32, "{jwt}");
    let token = manifests.secret_value("users-secrets", "service-token");
    assert!(token.contains("CHANGE-ME"), "{token}");
}

#[test]
fn every_variable_set_is_one_the_binary_accepts() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let mut refused = Vec::new();
    for name in OUR_WORKLOADS {
        let accepted = manifests::accepted_variables(name);
        let environment =
            manifests.environment(manifests.container(name), &|s, k| secrets.get(s, k));
        for variable in environment.keys() {
            if !accepted.contains(variable) {
                refused.push(format!("{name}: {variable}"));
            }
        }
        assert_eq!(environment["LOG_FORMAT"], "json", "{name} logs JSON");
    }
    assert!(
        refused.is_empty(),
        "variables the binaries do not read (not in their --help): {refused:?}"
    );
}
