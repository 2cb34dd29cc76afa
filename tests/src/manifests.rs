//! The Kubernetes manifests of `deploy/k8s`, read as the cluster would get them
//! (the files its kustomization lists; it transforms nothing), and the binaries
//! started with a container's environment exactly as a manifest sets it: the
//! ConfigMap keys (envFrom, configMapKeyRef), the Secret keys replaced by test
//! values, and only the addresses that point into the cluster rewritten to this
//! machine (listen addresses to 127.0.0.1, the database to a temporary file, Redis
//! and the user-service to the test's own).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Map, Value};

use test_support::Redis;

use crate::{
    binaries::{Process, binary},
    credentials,
    services::UserService,
};

/// `deploy/k8s` in the workspace.
pub fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .join("deploy/k8s")
}

/// Every resource of the kustomization, in file order.
pub struct Manifests {
    /// Each resource as JSON, as the API server would receive it.
    pub resources: Vec<Value>,
    /// The files the kustomization lists.
    pub files: Vec<String>,
}

impl Manifests {
    /// Reads `deploy/k8s/kustomization.yaml` and every file it lists.
    pub fn load() -> Manifests {
        let dir = k8s_dir();
        let kustomization = parse_yaml(&dir.join("kustomization.yaml"));
        assert_eq!(kustomization.len(), 1, "kustomization.yaml is one document");
        let files: Vec<String> = kustomization[0]["resources"]
            .as_array()
            .expect("kustomization.yaml lists resources")
            .iter()
            .map(|file| file.as_str().expect("a file name").to_owned())
            .collect();
        let resources = files
            .iter()
            .flat_map(|file| parse_yaml(&dir.join(file)))
            .collect();
        Manifests { resources, files }
    }

    /// The resources of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.resources.iter().filter(move |r| r["kind"] == kind)
    }

    /// The resource of `kind` named `name`; panics if there is none.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("the manifests have no {kind}/{name}"))
    }

    /// The resource of `kind` named `name`, if any.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
    }

    /// Deployments and StatefulSets: what runs pods.
    pub fn workloads(&self) -> impl Iterator<Item = &Value> {
        self.resources
            .iter()
            .filter(|r| r["kind"] == "Deployment" || r["kind"] == "StatefulSet")
    }

    /// The one container of the workload `name` (a Deployment or StatefulSet).
    pub fn container(&self, name: &str) -> &Value {
        let workload = self
            .workloads()
            .find(|w| w["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the manifests run no workload {name}"));
        let containers = workload["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("a pod template has containers");
        assert_eq!(containers.len(), 1, "{name} runs one container");
        &containers[0]
    }

    /// The pod template of the workload `name`.
    pub fn pod_template(&self, name: &str) -> &Value {
        &self
            .workloads()
            .find(|w| w["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the manifests run no workload {name}"))["spec"]["template"]
    }

    /// The environment `container` gets, in the order Kubernetes builds it (envFrom
    /// first, then env, later ones winning); each Secret key's value is
    /// `secret(secret name, key)`.
    pub fn environment(
        &self,
        container: &Value,
        secret: &dyn Fn(&str, &str) -> String,
    ) -> BTreeMap<String, String> {
        let mut environment = BTreeMap::new();
        for source in container["envFrom"].as_array().into_iter().flatten() {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                let data = self.get("ConfigMap", name)["data"]
                    .as_object()
                    .unwrap_or_else(|| panic!("ConfigMap {name} has data"));
                for (key, value) in data {
                    environment.insert(key.clone(), string(value, key));
                }
            } else if let Some(name) = source["secretRef"]["name"].as_str() {
                for key in self.secret_keys(name) {
                    environment.insert(key.clone(), secret(name, &key));
                }
            } else {
                panic!("an envFrom source this test does not know: {source}");
            }
        }
        for variable in container["env"].as_array().into_iter().flatten() {
            let name = variable["name"].as_str().expect("an env entry has a name");
            let value = if let Some(value) = variable.get("value") {
                string(value, name)
            } else if let Some(from) = variable["valueFrom"]["configMapKeyRef"].as_object() {
                let (map, key) = (
                    from["name"].as_str().unwrap(),
                    from["key"].as_str().unwrap(),
                );
                string(&self.get("ConfigMap", map)["data"][key], key)
            } else if let Some(from) = variable["valueFrom"]["secretKeyRef"].as_object() {
                let (name, key) = (
                    from["name"].as_str().unwrap(),
                    from["key"].as_str().unwrap(),
                );
                assert!(
                    self.secret_keys(name).contains(&key.to_owned()),
                    "env {variable} names a key the Secret {name} lacks"
                );
                secret(name, key)
            } else {
                panic!("an env source this test does not know: {variable}");
            };
            environment.insert(name.to_owned(), value);
        }
        environment
    }

    /// The keys of the Secret `name` (from `data` and `stringData`).
    pub fn secret_keys(&self, name: &str) -> Vec<String> {
        let secret = self.get("Secret", name);
        ["data", "stringData"]
            .iter()
            .filter_map(|field| secret[field].as_object())
            .flat_map(|map| map.keys().cloned())
            .collect()
    }

    /// The Secret `name`'s value for `key`, as the manifest has it.
    pub fn secret_value(&self, name: &str, key: &str) -> String {
        let secret = self.get("Secret", name);
        string(&secret["stringData"][key], key)
    }

    /// The Service named by a URL's host (`redis://redis:6379`, `http://user-service:50051`
    /// or `<name>.<namespace>.svc…`), and whether the URL's port is one of its ports.
    pub fn service_of_url(&self, url: &str) -> Option<(&Value, bool)> {
        let rest = url.split_once("://")?.1;
        let authority = rest.split('/').next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = authority.rsplit_once(':')?;
        let name = host.split('.').next()?;
        let service = self.find("Service", name)?;
        let port: u64 = port.parse().ok()?;
        let listed = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["port"].as_u64() == Some(port));
        Some((service, listed))
    }
}

/// Parses every document of a YAML file into JSON values (empty ones skipped).
pub fn parse_yaml(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let yaml = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            serde_json::to_value(yaml)
                .unwrap_or_else(|e| panic!("{} has non-string keys: {e}", path.display()))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// A ConfigMap or env value, which must be a string in Kubernetes.
fn string(value: &Value, what: &str) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, not {value}"))
        .to_owned()
}

/// `labels` has every `key: value` of `selector` (an empty selector matches all).
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().cloned().unwrap_or_default();
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}

/// A label selector's `matchLabels` (refusing `matchExpressions`, which this test
/// does not evaluate).
pub fn match_labels(selector: &Value) -> Value {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not checked by this test: use matchLabels ({selector})"
    );
    selector
        .get("matchLabels")
        .cloned()
        .unwrap_or(Value::Object(Map::new()))
}

/// The container port `port` names (a number, or a port's name); None if the
/// container declares no such port.
pub fn container_port(container: &Value, port: &Value) -> Option<u16> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| match port {
            Value::String(name) => p["name"] == name.as_str(),
            Value::Number(number) => p["containerPort"].as_u64() == number.as_u64(),
            _ => false,
        })
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
}

/// A duration as the binaries' flags write it: `500ms`, `10s`, `2m`, `1h`.
pub fn duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or_else(|| panic!("a duration with a unit, not {text:?}"));
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().expect("a whole number");
    match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" | "min" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        _ => panic!("a unit this test does not know: {text:?}"),
    }
}

/// The port of a listen address as a manifest writes it (`0.0.0.0:8080`).
pub fn listen_port(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{address:?} is not a listen address: {e}"))
        .port()
}

/// Every environment variable a binary reads as a flag's twin, from its `--help`
/// (clap prints `[env: NAME=…]`), plus `RUST_LOG` (the log filter).
pub fn accepted_variables(program: &str) -> Vec<String> {
    let output = std::process::Command::new(binary(program))
        .arg("--help")
        .env_clear()
        .output()
        .expect("running --help");
    assert!(output.status.success(), "{program} --help failed");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let mut names: Vec<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.split(['=', ']'])
                .next()
                .expect("a variable name")
                .to_owned()
        })
        .collect();
    names.push("RUST_LOG".to_owned());
    names
}

/// Test values for every key of the manifests' Secrets: random, made per test run.
pub struct TestSecrets {
    values: BTreeMap<(String, String), String>,
}

impl TestSecrets {
    /// A fresh random value for every key of every Secret in `manifests`, so no
    /// test leans on the placeholders the repository ships.
    pub fn new(manifests: &Manifests) -> TestSecrets {
        let mut values = BTreeMap::new();
        for secret in manifests.of_kind("Secret") {
            let name = secret["metadata"]["name"].as_str().expect("a name");
            for key in manifests.secret_keys(name) {
                values.insert((name.to_owned(), key), credentials::random_secret());
            }
        }
        TestSecrets { values }
    }

    /// The test value of the Secret `secret`'s `key`.
    pub fn get(&self, secret: &str, key: &str) -> String {
        self.values
            .get(&(secret.to_owned(), key.to_owned()))
            .unwrap_or_else(|| panic!("the manifests have no Secret key {secret}/{key}"))
            .clone()
    }
}

/// A manifest's environment with the cluster's addresses rewritten to this
/// machine's; `rewrites` maps a variable to its local value.
pub fn localize(
    mut environment: BTreeMap<String, String>,
    rewrites: &[(&str, String)],
) -> Vec<(String, String)> {
    for (name, value) in rewrites {
        if let Some(slot) = environment.get_mut(*name) {
            *slot = value.clone();
        }
    }
    environment.into_iter().collect()
}

/// Starts `program` with exactly `environment` (nothing inherited) and no flags.
pub async fn start_with_environment(
    program: &str,
    environment: &[(String, String)],
) -> anyhow::Result<Process> {
    let environment = environment.to_vec();
    Process::start_with(&binary(program), &[], move |command| {
        command.env_clear().envs(environment);
    })
    .await
}

/// A user-service started with its StatefulSet's environment: listening on a free
/// port of 127.0.0.1, its database in a temporary folder, its events going to
/// `redis`, its metrics (when the manifest turns them on) on `metrics_port`.
pub async fn start_user_service(
    manifests: &Manifests,
    secrets: &TestSecrets,
    redis: &Redis,
    metrics_port: u16,
) -> UserService {
    let environment = manifests.environment(manifests.container("user-service"), &|s, k| {
        secrets.get(s, k)
    });
    let dir = tempfile::tempdir().expect("a temporary folder");
    let environment = localize(
        environment,
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("METRICS_LISTEN_ADDR", format!("127.0.0.1:{metrics_port}")),
            (
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("users.db").display()),
            ),
            ("REDIS_URL", redis.url()),
        ],
    );
    let process = start_with_environment("user-service", &environment)
        .await
        .expect("the user-service starts with its manifest's environment");
    UserService {
        process,
        dir,
        database_url: None,
    }
}

/// The gateway's environment from its Deployment, pointed at `user_service_url`
/// and `redis`, listening on a free port of 127.0.0.1.
pub fn gateway_environment(
    manifests: &Manifests,
    secrets: &TestSecrets,
    user_service_url: &str,
    redis: &Redis,
) -> Vec<(String, String)> {
    let environment =
        manifests.environment(manifests.container("gateway"), &|s, k| secrets.get(s, k));
    localize(
        environment,
        &[
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("USER_SERVICE_URL", user_service_url.to_owned()),
            ("REDIS_URL", redis.url()),
        ],
    )
}

/// A gateway started with its Deployment's environment (see
/// [`gateway_environment`]).
pub async fn start_gateway(
    manifests: &Manifests,
    secrets: &TestSecrets,
    user_service_url: &str,
    redis: &Redis,
) -> Process {
    let environment = gateway_environment(manifests, secrets, user_service_url, redis);
    start_with_environment("gateway", &environment)
        .await
        .expect("the gateway starts with its manifest's environment")
}

/// A token the manifests' gateways accept: HS256 with the test value of the
/// Secret key the gateway's `JWT_SECRET` comes from, reading and writing everything.
pub fn token(manifests: &Manifests, secrets: &TestSecrets, sub: &str) -> String {
    let secret = manifests
        .environment(manifests.container("gateway"), &|s, k| secrets.get(s, k))
        .remove("JWT_SECRET")
        .expect("the gateway's manifest sets JWT_SECRET");
    credentials::hs256(&secret, &credentials::claims(sub))
}
