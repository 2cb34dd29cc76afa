//! The pods: locked down and sized, the Ingress routes only public paths, the
//! shutdown and timeouts fit the binaries' settings, and the Dockerfile builds
//! what the manifests run.

use super::*;

#[test]
fn pods_are_locked_down_and_sized() {
    for variant in variants() {
        locked_down_and_sized_in(&variant.manifests, variant.name);
    }
}

fn locked_down_and_sized_in(manifests: &Manifests, variant: &str) {
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
        for container in &manifests::pod_containers(spec) {
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
    // The user-service is the last to go: Guaranteed QoS (requests equal to
    // limits) and a PriorityClass of the manifests'.
    let spec = &manifests.pod_template("user-service")["spec"];
    for container in &manifests::pod_containers(spec) {
        assert_eq!(
            container["resources"]["requests"], container["resources"]["limits"],
            "{variant}: the user-service's requests equal its limits (Guaranteed QoS)"
        );
    }
    let priority = spec["priorityClassName"]
        .as_str()
        .unwrap_or_else(|| panic!("{variant}: the user-service has a PriorityClass"));
    let class = manifests.get("PriorityClass", priority);
    assert!(class["value"].as_i64().unwrap() > 0 && class["globalDefault"] == false);
    assert!(
        class["metadata"].get("namespace").is_none(),
        "a PriorityClass is cluster-scoped"
    );
    // Redis has a disruption budget.
    let redis = manifests.get("PodDisruptionBudget", "redis");
    assert!(selects(
        &match_labels(&redis["spec"]["selector"]),
        &manifests.pod_template("redis")["metadata"]["labels"]
    ));
    // The gateways spread over zones and nodes, counting only their own
    // ReplicaSet's pods.
    let spread = manifests.pod_template("gateway")["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("the gateways spread")
        .clone();
    for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
        let constraint = spread
            .iter()
            .find(|c| c["topologyKey"] == key)
            .unwrap_or_else(|| panic!("{variant}: the gateways do not spread over {key}"));
        assert_eq!(constraint["matchLabelKeys"], json!(["pod-template-hash"]));
        assert!(selects(
            &match_labels(&constraint["labelSelector"]),
            &manifests.pod_template("gateway")["metadata"]["labels"]
        ));
    }
    // SQLite: the database is on the claim, writable by the pod's group.
    let Some(users) = manifests.find("StatefulSet", "user-service") else {
        return;
    };
    let secrets = TestSecrets::new(manifests);
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

/// An HTTPRoute's path matches as Ingress path rules (PathPrefix matches by
/// path elements, as Prefix does), each checked to go to the gateway Service.
fn route_paths(manifests: &Manifests) -> Vec<Value> {
    let mut paths = Vec::new();
    for route in manifests.of_kind("HTTPRoute") {
        for rule in route["spec"]["rules"].as_array().unwrap() {
            for backend in rule["backendRefs"].as_array().unwrap() {
                assert_eq!(
                    backend["name"], "gateway",
                    "the HTTPRoute sends to the gateway"
                );
            }
            assert!(
                rule.get("sessionPersistence").is_none(),
                "no sticky sessions"
            );
            assert!(
                rule.get("timeouts").is_none(),
                "no request timeout on a route that carries sockets"
            );
            for matched in rule["matches"].as_array().unwrap() {
                let path = &matched["path"];
                let kind = match path["type"].as_str().unwrap() {
                    "Exact" => "Exact",
                    "PathPrefix" => "Prefix",
                    other => panic!("a path match this test does not know: {other}"),
                };
                paths.push(json!({"path": path["value"], "pathType": kind}));
            }
        }
    }
    paths
}

fn ingress_paths(manifests: &Manifests) -> Vec<Value> {
    manifests
        .of_kind("Ingress")
        .flat_map(|i| i["spec"]["rules"].as_array().unwrap().clone())
        .flat_map(|r| r["http"]["paths"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn shutdown_and_timeouts_fit_the_binaries_settings() {
    for variant in variants() {
        shutdown_and_timeouts_in(&variant.manifests);
    }
}

fn shutdown_and_timeouts_in(manifests: &Manifests) {
    let secrets = TestSecrets::new(manifests);
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
    let pre_stop = Duration::from_secs(
        manifests.container("user-service")["lifecycle"]["preStop"]["sleep"]["seconds"]
            .as_u64()
            .unwrap_or(0),
    );
    assert!(
        pre_stop + drain < Duration::from_secs(grace),
        "user-service preStop {pre_stop:?} + drain {drain:?} ≥ {grace} s"
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
    let routes = manifests.of_kind("Ingress").count() + manifests.of_kind("HTTPRoute").count();
    assert_eq!(routes, 1, "one way in: an Ingress or an HTTPRoute");
    let paths: Vec<Value> = ingress_paths(manifests)
        .into_iter()
        .chain(route_paths(manifests))
        .collect();
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
