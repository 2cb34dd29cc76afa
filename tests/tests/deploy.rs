//! The Kubernetes manifests of `deploy/k8s` against the binaries they run: every
//! reference resolves (Services → pods and ports, probes → container ports,
//! ConfigMap and Secret keys, NetworkPolicy selectors → real pods), the policies
//! allow exactly the intended paths, the pods are locked down, the timeouts fit the
//! binaries' settings, and each binary started with exactly its container's
//! environment (addresses rewritten to this machine) starts and answers its probes
//! at the manifest's paths and ports. The schemas themselves are checked by
//! `scripts/validate-manifests`.

use std::{collections::BTreeSet, time::Duration};

use e2e::{
    Http, Poll, Redis, STEP_TIMEOUT, Socket, free_port,
    manifests::{self, Manifests, TestSecrets, container_port, listen_port, match_labels, selects},
    poll_until,
};
use serde_json::{Value, json};

/// How long the gateway gives its event source to stop after draining
/// (`SOURCE_STOP_GRACE` in gateway/src/app.rs).
const GATEWAY_SOURCE_STOP: Duration = Duration::from_secs(2);

/// The binaries the project builds, by the workload that runs each.
const OUR_WORKLOADS: [&str; 2] = ["user-service", "gateway"];

/// A pod as a NetworkPolicy sees it: its namespace's labels, its own labels, and
/// its containers (for named ports).
#[derive(Clone, Debug)]
struct Endpoint {
    name: String,
    namespace: Value,
    labels: Value,
    containers: Vec<Value>,
}

impl Endpoint {
    /// The number of the port `name` on this pod.
    fn port(&self, name: &str) -> u16 {
        self.containers
            .iter()
            .find_map(|c| container_port(c, &json!(name)))
            .unwrap_or_else(|| panic!("{} has no port {name}", self.name))
    }
}

fn namespace_labels(manifests: &Manifests) -> Value {
    let namespace = manifests
        .of_kind("Namespace")
        .next()
        .expect("the manifests make their namespace");
    let mut labels = namespace["metadata"]["labels"].clone();
    labels["kubernetes.io/metadata.name"] = namespace["metadata"]["name"].clone();
    labels
}

/// The pods the manifests run.
fn pods(manifests: &Manifests) -> Vec<Endpoint> {
    let namespace = namespace_labels(manifests);
    manifests
        .workloads()
        .map(|workload| Endpoint {
            name: workload["metadata"]["name"].as_str().unwrap().to_owned(),
            namespace: namespace.clone(),
            labels: workload["spec"]["template"]["metadata"]["labels"].clone(),
            containers: workload["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .clone(),
        })
        .collect()
}

fn outsider(name: &str, namespace: &str, labels: Value, ports: Value) -> Endpoint {
    Endpoint {
        name: name.to_owned(),
        namespace: json!({"kubernetes.io/metadata.name": namespace}),
        labels,
        containers: vec![json!({"name": name, "ports": ports})],
    }
}

/// Whether a NetworkPolicy peer (`from`/`to` entry) is `endpoint`.
fn peer_is(peer: &Value, own_namespace: &Value, endpoint: &Endpoint) -> bool {
    assert!(
        peer.get("ipBlock").is_none(),
        "ipBlock peers are not checked"
    );
    let namespace = match peer.get("namespaceSelector") {
        Some(selector) => selects(&match_labels(selector), &endpoint.namespace),
        None => endpoint.namespace == *own_namespace,
    };
    let pod = match peer.get("podSelector") {
        Some(selector) => selects(&match_labels(selector), &endpoint.labels),
        None => true,
    };
    namespace && pod
}

/// Whether a rule's `ports` let `port`/`protocol` of `destination` through.
fn ports_allow(ports: &Value, destination: &Endpoint, port: u16, protocol: &str) -> bool {
    let Some(ports) = ports.as_array().filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|rule| {
        rule["protocol"].as_str().unwrap_or("TCP") == protocol
            && match &rule["port"] {
                Value::Null => true,
                Value::Number(number) => number.as_u64() == Some(u64::from(port)),
                Value::String(name) => destination
                    .containers
                    .iter()
                    .any(|c| container_port(c, &json!(name)) == Some(port)),
                other => panic!("a port this test does not know: {other}"),
            }
    })
}

/// Which side of a connection a check looks at.
#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// The destination's ingress rules only.
    Ingress,
    /// The source's egress rules only.
    Egress,
    /// Both: whether the connection is made.
    Both,
}

/// Whether the policies let `source` open `port`/`protocol` on `destination`:
/// both the destination's ingress and the source's egress must allow it (a pod no
/// policy of that direction selects is open in that direction).
fn allowed(
    manifests: &Manifests,
    source: &Endpoint,
    destination: &Endpoint,
    port: u16,
    protocol: &str,
) -> bool {
    allowed_by(manifests, source, destination, port, protocol, Side::Both)
}

/// [`allowed`], looking at one `side` only.
fn allowed_by(
    manifests: &Manifests,
    source: &Endpoint,
    destination: &Endpoint,
    port: u16,
    protocol: &str,
    side: Side,
) -> bool {
    let own = namespace_labels(manifests);
    let direction = |endpoint: &Endpoint, kind: &str, rules: &str, peers: &str| {
        if endpoint.namespace != own {
            return true; // not ours to restrict
        }
        let policies: Vec<&Value> = manifests
            .of_kind("NetworkPolicy")
            .filter(|p| selects(&match_labels(&p["spec"]["podSelector"]), &endpoint.labels))
            .filter(|p| {
                let types = &p["spec"]["policyTypes"];
                match types.as_array() {
                    Some(types) => types.iter().any(|t| t == kind),
                    None => kind == "Ingress" || p["spec"].get("egress").is_some(),
                }
            })
            .collect();
        policies.is_empty()
            || policies.iter().any(|policy| {
                policy["spec"][rules]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|rule| {
                        let other = if kind == "Ingress" {
                            source
                        } else {
                            destination
                        };
                        let peers_ok = match rule[peers].as_array() {
                            Some(list) if !list.is_empty() => {
                                list.iter().any(|peer| peer_is(peer, &own, other))
                            }
                            _ => true,
                        };
                        peers_ok && ports_allow(&rule["ports"], destination, port, protocol)
                    })
            })
    };
    (side == Side::Egress || direction(destination, "Ingress", "ingress", "from"))
        && (side == Side::Ingress || direction(source, "Egress", "egress", "to"))
}

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

#[test]
fn network_policies_allow_exactly_the_intended_paths() {
    let manifests = Manifests::load();
    let own = namespace_labels(&manifests);
    let ours = pods(&manifests);
    let pod = |name: &str| ours.iter().find(|p| p.name == name).unwrap().clone();
    let ingress_controller = outsider(
        "ingress-nginx",
        "ingress-nginx",
        json!({"app.kubernetes.io/name": "ingress-nginx"}),
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
                    if peer.get("namespaceSelector").is_none() {
                        assert!(
                            ours.iter().any(|p| peer_is(peer, &own, p)),
                            "NetworkPolicy {name}: the peer {peer} is no pod of ours"
                        );
                    }
                }
            }
        }
    }

    let intended: BTreeSet<(&str, &str, &str)> = [
        ("ingress-nginx", "gateway", "http"),
        ("prometheus", "gateway", "http"),
        ("prometheus", "user-service", "metrics"),
        ("gateway", "user-service", "grpc"),
        ("gateway", "redis", "redis"),
        ("user-service", "redis", "redis"),
    ]
    .into();
    let sources: Vec<Endpoint> = ours
        .iter()
        .cloned()
        .chain([
            ingress_controller,
            prometheus.clone(),
            elsewhere.clone(),
            debug.clone(),
        ])
        .collect();
    for destination in &ours {
        for container in &destination.containers {
            for port in container["ports"].as_array().unwrap() {
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
                            allowed_by(&manifests, source, destination, number, "TCP", side),
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
    for destination in &ours {
        let annotations = &manifests.pod_template(&destination.name)["metadata"]["annotations"];
        if let Some(port) = annotations["prometheus.io/port"].as_str() {
            let port: u16 = port.parse().unwrap();
            assert!(
                allowed(&manifests, &prometheus, destination, port, "TCP"),
                "Prometheus cannot scrape {}:{port}",
                destination.name
            );
        }
    }
    for source in ours.iter().chain([&debug]) {
        for protocol in ["UDP", "TCP"] {
            assert!(
                allowed(&manifests, source, &dns, 53, protocol),
                "{} cannot resolve names over {protocol}",
                source.name
            );
        }
        assert!(!allowed(&manifests, source, &dns, 80, "TCP"));
        assert!(!allowed(
            &manifests,
            source,
            &elsewhere,
            elsewhere.port("http"),
            "TCP"
        ));
    }
    assert!(!allowed(
        &manifests,
        &pod("redis"),
        &pod("user-service"),
        50051,
        "TCP"
    ));
}

#[test]
fn pods_are_locked_down_and_sized() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let spec = &workload["spec"]["template"]["spec"];
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], true, "{name}: runAsNonRoot");
        assert!(
            pod["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{name}: runAsUser"
        );
        assert_eq!(
            pod["seccompProfile"]["type"], "RuntimeDefault",
            "{name}: seccomp"
        );
        assert_eq!(
            spec["automountServiceAccountToken"], false,
            "{name}: no API token"
        );
        assert_eq!(
            spec["enableServiceLinks"], false,
            "{name}: no service env links"
        );
        for container in spec["containers"].as_array().unwrap() {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(security["capabilities"].get("add").is_none(), "{name}");
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        container["resources"][bound][resource].is_string(),
                        "{name}: {bound}.{resource}"
                    );
                }
            }
            // Every mount is a volume of the pod (or a claim template).
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let volume = &mount["name"];
                let declared = spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(
                        workload["spec"]["volumeClaimTemplates"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| &t["metadata"]),
                    )
                    .any(|v| v["name"] == *volume);
                assert!(declared, "{name} mounts {volume}, which is no volume");
            }
        }
    }
    // The database is on the claim, writable by the pod's group.
    let users = manifests.get("StatefulSet", "user-service");
    let secrets = TestSecrets::new(&manifests);
    let environment = manifests.environment(manifests.container("user-service"), &|s, k| {
        secrets.get(s, k)
    });
    let database = environment["DATABASE_URL"]
        .strip_prefix("sqlite://")
        .expect("a SQLite URL");
    assert!(database.starts_with('/'), "an absolute path: {database}");
    let claim = users["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].clone();
    let mount = manifests.container("user-service")["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the claim is mounted");
    let folder = mount["mountPath"].as_str().unwrap();
    assert!(
        database.starts_with(&format!("{}/", folder.trim_end_matches('/'))),
        "the database {database} is on the volume at {folder}"
    );
    assert!(users["spec"]["template"]["spec"]["securityContext"]["fsGroup"].is_u64());
}

/// Whether an Ingress path rule matches `path` (Exact, or Prefix by path elements).
fn ingress_matches(rule: &Value, path: &str) -> bool {
    let pattern = rule["path"].as_str().unwrap();
    match rule["pathType"].as_str().unwrap() {
        "Exact" => pattern == path,
        "Prefix" => {
            let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
            let path: Vec<&str> = path.split('/').collect();
            pattern == [""] || path.starts_with(&pattern)
        }
        other => panic!("a pathType this test does not know: {other}"),
    }
}

/// Paths the Ingress must route to the gateway.
const PUBLIC_PATHS: [&str; 6] = [
    "/",
    "/window/1/",
    "/static/style.css",
    "/api/users/",
    "/api/openapi.json",
    "/ws/user-updates/",
];
/// Paths it must not: operators' only.
const PRIVATE_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

fn ingress_paths(manifests: &Manifests) -> Vec<Value> {
    manifests
        .of_kind("Ingress")
        .flat_map(|i| i["spec"]["rules"].as_array().unwrap().clone())
        .flat_map(|r| r["http"]["paths"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn shutdown_and_timeouts_fit_the_binaries_settings() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let env =
        |name: &str| manifests.environment(manifests.container(name), &|s, k| secrets.get(s, k));

    // The gateway: preStop sleep, then SIGTERM: drain for SHUTDOWN_GRACE, stop the
    // event source; all of it before the kubelet's SIGKILL.
    let gateway = manifests.pod_template("gateway");
    let grace = Duration::from_secs(
        gateway["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    let container = manifests.container("gateway");
    let pre_stop = Duration::from_secs(
        container["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .expect("a preStop sleep action"),
    );
    let drain = manifests::duration(&env("gateway")["SHUTDOWN_GRACE"]);
    assert!(
        pre_stop + drain + GATEWAY_SOURCE_STOP < grace,
        "gateway: preStop {pre_stop:?} + drain {drain:?} + {GATEWAY_SOURCE_STOP:?} ≥ {grace:?}"
    );
    let users = manifests.pod_template("user-service");
    let grace = users["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let drain = manifests::duration(&env("user-service")["SHUTDOWN_GRACE"]);
    assert!(
        drain < Duration::from_secs(grace),
        "user-service drain {drain:?} ≥ {grace} s"
    );

    // The Ingress keeps sockets longer than the gateway's ping interval, needs no
    // sticky sessions, and routes the public paths only.
    let ping = manifests::duration(&env("gateway")["WS_PING_INTERVAL"]);
    for ingress in manifests.of_kind("Ingress") {
        let annotations = ingress["metadata"]["annotations"].as_object().unwrap();
        for timeout in ["proxy-read-timeout", "proxy-send-timeout"] {
            let seconds: u64 = annotations[&format!("nginx.ingress.kubernetes.io/{timeout}")]
                .as_str()
                .expect("a timeout annotation")
                .parse()
                .unwrap();
            assert!(
                Duration::from_secs(seconds) > ping,
                "{timeout} {seconds} s is not longer than WS_PING_INTERVAL {ping:?}"
            );
        }
        for key in annotations.keys() {
            assert!(
                !key.contains("affinity") && !key.contains("upstream-hash-by"),
                "no sticky sessions: {key}"
            );
        }
    }
    let paths = ingress_paths(&manifests);
    for path in PUBLIC_PATHS {
        assert!(
            paths.iter().any(|r| ingress_matches(r, path)),
            "{path} is not routed"
        );
    }
    for path in PRIVATE_PATHS {
        assert!(
            !paths.iter().any(|r| ingress_matches(r, path)),
            "{path} is routed"
        );
    }
    for rule in &paths {
        assert!(
            PUBLIC_PATHS.iter().any(|p| ingress_matches(rule, p)),
            "the Ingress path {rule} routes none of the paths this test checks"
        );
    }
}

#[test]
fn the_dockerfile_builds_the_images_the_manifests_run() {
    let manifests = Manifests::load();
    let dockerfile = std::fs::read_to_string(manifests::k8s_dir().join("../Dockerfile")).unwrap();
    for name in OUR_WORKLOADS {
        let image = manifests.container(name)["image"].as_str().unwrap();
        assert!(image.contains(&format!("/{name}:")), "{name} runs {image}");
        let stage = dockerfile
            .split("\nFROM ")
            .find(|stage| {
                stage
                    .lines()
                    .next()
                    .is_some_and(|l| l.ends_with(&format!(" AS {name}")))
            })
            .unwrap_or_else(|| panic!("the Dockerfile has no target {name}"));
        assert!(
            stage.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{name}\"]")),
            "the {name} target runs the {name} binary"
        );
        let user = stage
            .lines()
            .find_map(|l| l.strip_prefix("USER "))
            .expect("a USER");
        let uid: u64 = user.split(':').next().unwrap().parse().unwrap();
        assert_eq!(
            manifests.pod_template(name)["spec"]["securityContext"]["runAsUser"],
            uid,
            "{name}: the manifest's user is the image's"
        );
    }
    let ignore = std::fs::read_to_string(manifests::k8s_dir().join("../../.dockerignore")).unwrap();
    for line in ignore.lines().map(str::trim) {
        for needed in [
            "Cargo.toml",
            "Cargo.lock",
            "proto",
            "web",
            "migrations",
            "tests",
        ] {
            assert_ne!(
                line, needed,
                ".dockerignore leaves out {needed}, which the build needs"
            );
        }
    }
}

/// The value of `variable` in the manifest of `workload`.
fn setting(manifests: &Manifests, secrets: &TestSecrets, workload: &str, variable: &str) -> String {
    manifests
        .environment(manifests.container(workload), &|s, k| secrets.get(s, k))
        .remove(variable)
        .unwrap_or_else(|| panic!("{workload}'s manifest sets no {variable}"))
}

/// GETs `path` until it answers 200 (bounded); the last answer, which the
/// caller asserts on with what the path is for.
async fn until_ok(http: &Http, path: &str) -> e2e::Reply {
    let (Ok(reply) | Err(reply)) = poll_until(
        Poll::within(e2e::START_TIMEOUT).every(Duration::from_millis(50)),
        async || {
            let reply = http.get(path).await;
            if reply.status == 200 {
                Ok(reply)
            } else {
                Err(reply)
            }
        },
    )
    .await;
    reply
}

#[tokio::test]
async fn the_user_service_runs_with_its_manifest_and_answers_its_probes() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = Redis::start().await;
    let metrics_port = free_port();
    let users = manifests::start_user_service(&manifests, &secrets, &redis, metrics_port).await;
    let container = manifests.container("user-service");
    let grpc_port = listen_port(&setting(
        &manifests,
        &secrets,
        "user-service",
        "LISTEN_ADDR",
    ));
    assert_eq!(container_port(container, &json!("grpc")), Some(grpc_port));

    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let grpc = &container[probe]["grpc"];
        assert_eq!(
            container_port(container, &grpc["port"]),
            Some(grpc_port),
            "the {probe} asks the port LISTEN_ADDR serves"
        );
        let service = grpc["service"].as_str().unwrap_or_default();
        assert_eq!(
            e2e::faults::health(&users.url(), service).await,
            Some(tonic_health::pb::health_check_response::ServingStatus::Serving),
            "the {probe}'s health check"
        );
    }

    // Metrics where the scrape annotations say.
    let annotations = &manifests.pod_template("user-service")["metadata"]["annotations"];
    let scrape_port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let metrics_listen = setting(&manifests, &secrets, "user-service", "METRICS_LISTEN_ADDR");
    assert_eq!(
        listen_port(&metrics_listen),
        scrape_port,
        "METRICS_LISTEN_ADDR is the scraped port"
    );
    let path = annotations["prometheus.io/path"].as_str().unwrap();
    let metrics = until_ok(&Http::new(([127, 0, 0, 1], metrics_port).into()), path).await;
    assert_eq!(
        metrics.status, 200,
        "GET {path} on METRICS_LISTEN_ADDR: {:?}",
        metrics.body
    );

    // LOG_FORMAT=json: every line a JSON object.
    for line in users.process.logs() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test]
async fn the_gateway_runs_with_its_manifest_and_answers_its_probes() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = Redis::start().await;
    let users = manifests::start_user_service(&manifests, &secrets, &redis, free_port()).await;
    let gateway = manifests::start_gateway(&manifests, &secrets, &users.url(), &redis).await;
    let http = Http::new(gateway.addr);
    let container = manifests.container("gateway");
    let port = listen_port(&setting(&manifests, &secrets, "gateway", "LISTEN_ADDR"));
    assert_eq!(container_port(container, &json!("http")), Some(port));

    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            container_port(container, &get["port"]),
            Some(port),
            "the {probe} asks the port LISTEN_ADDR serves"
        );
        let path = get["path"].as_str().unwrap();
        let reply = until_ok(&http, path).await;
        assert_eq!(reply.status, 200, "{probe} GET {path}: {:?}", reply.body);
    }

    // Authentication is on, with the Secret's key; the service token is the one the
    // user-service wants (a REST call goes through).
    let token = manifests::token(&manifests, &secrets, "deploy-test");
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    assert_eq!(
        http.get("/api/users/").await.status,
        401,
        "authentication is on"
    );
    let listed = http.send("GET", "/api/users/", None, None, &auth).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);

    // The paths the Ingress routes are served.
    for path in PUBLIC_PATHS.iter().filter(|p| !p.starts_with("/ws/")) {
        let reply = http.send("GET", path, None, None, &auth).await;
        assert_eq!(reply.status, 200, "GET {path}");
    }
    let mut socket = Socket::connect(gateway.addr, &format!("token={token}")).await;
    let hello = socket.next(STEP_TIMEOUT).await.expect("a hello frame");
    assert_eq!(hello["type"], "hello");

    // Metrics where the scrape annotations say (the main port).
    let annotations = &manifests.pod_template("gateway")["metadata"]["annotations"];
    let scrape_port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        scrape_port, port,
        "the gateway's metrics are on its listen port"
    );
    let path = annotations["prometheus.io/path"].as_str().unwrap();
    let metrics = http.get(path).await;
    assert_eq!(metrics.status, 200, "GET {path}: {:?}", metrics.body);

    for line in gateway.logs() {
        assert!(
            serde_json::from_str::<Value>(&line).is_ok_and(|v| v.is_object()),
            "not a JSON log line: {line}"
        );
    }
}

#[tokio::test]
async fn a_gateway_given_the_placeholder_jwt_key_refuses_to_start() {
    let manifests = Manifests::load();
    let secrets = TestSecrets::new(&manifests);
    let redis = Redis::start().await;
    let mut environment =
        manifests::gateway_environment(&manifests, &secrets, "http://127.0.0.1:1", &redis);
    let placeholder = manifests.secret_value("users-secrets", "jwt-secret");
    for (name, value) in &mut environment {
        if name == "JWT_SECRET" {
            *value = placeholder.clone();
        }
    }
    let started = manifests::start_with_environment("gateway", &environment).await;
    let error = started
        .err()
        .expect("the gateway refuses the placeholder key");
    assert!(error.to_string().contains("at least 32 bytes"), "{error}");
}
