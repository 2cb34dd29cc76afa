//! The Kubernetes manifests of `deploy/`, read as the cluster would get them: the
//! base (`deploy/k8s`), an overlay (`deploy/overlays/…`) or the base with
//! components (`deploy/components/…`), built the way kustomize builds them for the
//! little the kustomizations do (scripts/validate-manifests refuses more): files
//! listed, ConfigMaps and Secrets generated from env files and literals (names kept
//! without kustomize's hash suffix, as the files refer to them), whole resources
//! deleted or patched (maps merged, lists of named objects merged by name, other
//! lists replaced), images set. And the binaries started with a container's
//! environment exactly as a manifest sets it: the ConfigMap keys (envFrom,
//! configMapKeyRef), the Secret keys replaced by test values, and only the
//! addresses that point into the cluster rewritten to this machine (listen
//! addresses to 127.0.0.1, the database to a temporary file, Redis and the
//! user-service to the test's own).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use test_support::Redis;

use crate::{
    binaries::{Process, binary},
    credentials,
    services::UserService,
};

/// `deploy/` in the workspace.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .join("deploy")
}

/// `deploy/k8s` in the workspace: the base.
pub fn k8s_dir() -> PathBuf {
    deploy_dir().join("k8s")
}

/// Secrets the manifests use but do not make, with the keys they use: made in the
/// cluster by someone else, never committed. `users-db-app` is written by
/// CloudNativePG for the Cluster of `deploy/components/postgres` (or by the
/// operator, for a managed PostgreSQL).
pub const EXTERNAL_SECRETS: [(&str, &[&str]); 1] = [("users-db-app", &["uri"])];

/// Every resource of a kustomization, in the order built.
pub struct Manifests {
    /// Each resource as JSON, as the API server would receive it.
    pub resources: Vec<Value>,
    /// The files the base kustomization lists.
    pub files: Vec<String>,
}

impl Manifests {
    /// The base, `deploy/k8s`.
    pub fn load() -> Manifests {
        Manifests::build(&k8s_dir())
    }

    /// The overlay `deploy/overlays/<name>`.
    pub fn overlay(name: &str) -> Manifests {
        Manifests::build(&deploy_dir().join("overlays").join(name))
    }

    /// The base with the components `deploy/components/<name>` applied in order.
    pub fn with_components(names: &[&str]) -> Manifests {
        let mut manifests = Manifests::load();
        for name in names {
            manifests.apply_component(&deploy_dir().join("components").join(name));
        }
        manifests
    }

    /// The base with every component of `deploy/components` applied.
    pub fn with_every_component() -> Manifests {
        let names = component_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Manifests::with_components(&names)
    }

    /// Builds the kustomization in `dir`.
    fn build(dir: &Path) -> Manifests {
        let kustomization = kustomization(dir);
        assert_eq!(kustomization["kind"], "Kustomization", "{}", dir.display());
        let mut manifests = Manifests {
            resources: Vec::new(),
            files: Vec::new(),
        };
        for entry in strings(&kustomization["resources"]) {
            let path = dir.join(&entry);
            if path.is_dir() {
                let base = Manifests::build(&path);
                manifests.resources.extend(base.resources);
                manifests.files = base.files;
            } else {
                manifests.resources.extend(parse_yaml(&path));
                manifests.files.push(entry);
            }
        }
        manifests.generate(dir, &kustomization);
        for component in strings(&kustomization["components"]) {
            manifests.apply_component(&dir.join(component));
        }
        manifests.set_images(&kustomization["images"]);
        manifests
    }

    /// Applies the Component in `dir`: its resources, its generators, its patches.
    fn apply_component(&mut self, dir: &Path) {
        let component = kustomization(dir);
        assert_eq!(component["kind"], "Component", "{}", dir.display());
        for file in strings(&component["resources"]) {
            self.resources.extend(parse_yaml(&dir.join(file)));
        }
        self.generate(dir, &component);
        for patch in component["patches"].as_array().into_iter().flatten() {
            let path = patch["path"].as_str().expect("a patch is a file (path:)");
            for patch in parse_yaml(&dir.join(path)) {
                self.patch(&patch);
            }
        }
    }

    /// The ConfigMaps and Secrets of a kustomization's generators (`create`, or
    /// `merge` into one generated before). A Secret's env file is read from its
    /// committed `.example`: the real one is the operator's, never the tests'.
    fn generate(&mut self, dir: &Path, kustomization: &Value) {
        for (field, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            for generator in kustomization[field].as_array().into_iter().flatten() {
                let name = generator["name"].as_str().expect("a generator has a name");
                let mut data = Map::new();
                for file in strings(&generator["envs"]) {
                    let path = dir.join(&file);
                    let path = if kind == "Secret" {
                        dir.join(format!("{file}.example"))
                    } else {
                        path
                    };
                    for (key, value) in env_file(&path) {
                        data.insert(key, Value::String(value));
                    }
                }
                for file in strings(&generator["files"]) {
                    let text = std::fs::read_to_string(dir.join(&file))
                        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
                    data.insert(file, Value::String(text));
                }
                for literal in strings(&generator["literals"]) {
                    let (key, value) = literal.split_once('=').expect("KEY=VALUE");
                    data.insert(key.to_owned(), Value::String(value.to_owned()));
                }
                let field = if kind == "Secret" {
                    "stringData"
                } else {
                    "data"
                };
                match generator["behavior"].as_str().unwrap_or("create") {
                    "create" => {
                        assert!(
                            self.find(kind, name).is_none(),
                            "{kind}/{name} generated twice"
                        );
                        let mut resource = json!({
                            "apiVersion": "v1",
                            "kind": kind,
                            "metadata": {"name": name, "namespace": generator["namespace"]},
                        });
                        resource[field] = Value::Object(data);
                        if let Some(labels) = generator["options"].get("labels") {
                            resource["metadata"]["labels"] = labels.clone();
                        }
                        if kind == "Secret" {
                            resource["type"] = generator["type"].clone();
                        }
                        self.resources.push(resource);
                    }
                    "merge" => {
                        let target = self
                            .resources
                            .iter_mut()
                            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
                            .unwrap_or_else(|| panic!("merge into {kind}/{name}, never generated"));
                        let map = target[field].as_object_mut().expect("generated data");
                        map.extend(data);
                    }
                    other => panic!("a generator behavior this test does not follow: {other}"),
                }
            }
        }
    }

    /// Applies one patch: `$patch: delete` removes the resource it names, anything
    /// else merges into it (strategic merge for the cases used here).
    fn patch(&mut self, patch: &Value) {
        let (kind, name) = (&patch["kind"], &patch["metadata"]["name"]);
        let index = self
            .resources
            .iter()
            .position(|r| r["kind"] == *kind && r["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("a patch for {kind}/{name}, which is not there"));
        if patch["$patch"] == "delete" {
            self.resources.remove(index);
        } else {
            merge(&mut self.resources[index], patch);
        }
    }

    /// Sets the images as kustomize's `images` does (name → newName, newTag, digest).
    fn set_images(&mut self, images: &Value) {
        for image in images.as_array().into_iter().flatten() {
            let name = image["name"].as_str().expect("an image name");
            for resource in &mut self.resources {
                let Some(pod) = resource.pointer_mut("/spec/template/spec") else {
                    continue;
                };
                for field in ["containers", "initContainers"] {
                    let containers = pod.get_mut(field).and_then(Value::as_array_mut);
                    for container in containers.into_iter().flatten() {
                        let current = container["image"].as_str().unwrap_or_default();
                        let (current_name, _) = split_image(current);
                        if current_name != name {
                            continue;
                        }
                        let new_name = image["newName"].as_str().unwrap_or(name);
                        let reference = match (image["digest"].as_str(), image["newTag"].as_str()) {
                            (Some(digest), _) => format!("{new_name}@{digest}"),
                            (None, Some(tag)) => format!("{new_name}:{tag}"),
                            (None, None) => format!("{new_name}{}", &current[current_name.len()..]),
                        };
                        container["image"] = Value::String(reference);
                    }
                }
            }
        }
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

    /// The keys of the Secret `name` (from `data` and `stringData`), or of one of
    /// the [`EXTERNAL_SECRETS`].
    pub fn secret_keys(&self, name: &str) -> Vec<String> {
        if self.find("Secret", name).is_none()
            && let Some((_, keys)) = EXTERNAL_SECRETS.iter().find(|(n, _)| *n == name)
        {
            return keys.iter().map(|k| (*k).to_owned()).collect();
        }
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

/// The kustomization (or Component) in `dir`.
fn kustomization(dir: &Path) -> Value {
    let mut documents = parse_yaml(&dir.join("kustomization.yaml"));
    assert_eq!(documents.len(), 1, "{}: one document", dir.display());
    documents.remove(0)
}

/// The names of the components in `deploy/components`, sorted.
pub fn component_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy_dir().join("components"))
        .expect("deploy/components")
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A list of strings in a kustomization (absent: none).
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// The `KEY=VALUE` lines of an env file as kustomize reads them: `#` comments and
/// blank lines skipped, the value taken literally (quotes and all).
pub fn env_file(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not KEY=VALUE: {line}", path.display()));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Strategic merge as kustomize does it for what the components patch: maps merge
/// key by key, lists of objects that all have a `name` merge by name, any other
/// list is replaced whole.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(patch))
            if !patch.is_empty()
                && patch
                    .iter()
                    .chain(target.iter())
                    .all(|v| v["name"].is_string()) =>
        {
            for item in patch {
                match target.iter_mut().find(|t| t["name"] == item["name"]) {
                    Some(slot) => merge(slot, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// An image reference's name and the rest (`:tag`, `@digest`).
fn split_image(image: &str) -> (&str, &str) {
    let end = image
        .find('@')
        .or_else(|| {
            image
                .rfind(':')
                .filter(|colon| !image[*colon..].contains('/'))
        })
        .unwrap_or(image.len());
    image.split_at(end)
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

/// Every container of a pod `spec`: its containers, then its init containers
/// (restore steps and native sidecars), which the same rules hold for.
pub fn pod_containers(spec: &Value) -> Vec<Value> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|field| spec[*field].as_array().cloned().unwrap_or_default())
        .collect()
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
    // The OpenTelemetry SDK's standard variables, which the help lists after the
    // options (one per line, each line starting with the name).
    names.extend(
        help.lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|word| word.starts_with("OTEL_"))
            .map(str::to_owned),
    );
    names.push("RUST_LOG".to_owned());
    names
}

/// Test values for every key of the manifests' Secrets: random, made per test run.
pub struct TestSecrets {
    values: BTreeMap<(String, String), String>,
}

impl TestSecrets {
    /// A fresh random value for every key of every Secret in `manifests` (and of
    /// the [`EXTERNAL_SECRETS`]), so no test leans on the placeholders the
    /// repository ships.
    pub fn new(manifests: &Manifests) -> TestSecrets {
        let mut values = BTreeMap::new();
        for secret in manifests.of_kind("Secret") {
            let name = secret["metadata"]["name"].as_str().expect("a name");
            for key in manifests.secret_keys(name) {
                values.insert((name.to_owned(), key), credentials::random_secret());
            }
        }
        for (name, keys) in EXTERNAL_SECRETS {
            for key in keys {
                values
                    .entry((name.to_owned(), (*key).to_owned()))
                    .or_insert_with(credentials::random_secret);
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
    let redis_url = redis_url_for(&environment, redis);
    let mut local = vec![
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("METRICS_LISTEN_ADDR", format!("127.0.0.1:{metrics_port}")),
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("users.db").display()),
        ),
        ("REDIS_URL", redis_url),
    ];
    local.extend(secret_files(
        manifests,
        secrets,
        "user-service",
        &environment,
    ));
    let environment = localize(environment, &local);
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
    let redis_url = redis_url_for(&environment, redis);
    let mut local = vec![
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("USER_SERVICE_URL", user_service_url.to_owned()),
        ("REDIS_URL", redis_url),
    ];
    local.extend(secret_files(manifests, secrets, "gateway", &environment));
    localize(environment, &local)
}

/// A redis-server configured as `redis.yaml` configures its pod: the ACL users
/// of its `--user` arguments (passwords from `secrets`), the default user off.
pub async fn start_redis(manifests: &Manifests, secrets: &TestSecrets) -> Redis {
    let redis = Redis::start().await;
    let users = redis_acl_users(manifests, secrets);
    assert!(!users.is_empty(), "redis.yaml defines ACL users");
    // The default user last: it is the one this connection speaks as.
    for user in &users {
        let mut command = vec!["ACL", "SETUSER"];
        command.extend(user.iter().map(String::as_str));
        let reply = redis.say(&[&command]).await;
        assert_eq!(reply, ["+OK"], "ACL SETUSER {user:?}");
    }
    redis
}

/// The Redis container's `--user` arguments, each user's rules as `ACL SETUSER`
/// takes them, with `$(VAR)` expanded from the container's environment as
/// Kubernetes expands it; the `default` user's last.
pub fn redis_acl_users(manifests: &Manifests, secrets: &TestSecrets) -> Vec<Vec<String>> {
    let container = manifests.container("redis");
    let environment = manifests.environment(container, &|s, k| secrets.get(s, k));
    let mut users: Vec<Vec<String>> = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for arg in strings(&container["args"]) {
        if arg.starts_with("--") {
            users.extend(current.take());
            if arg == "--user" {
                current = Some(Vec::new());
            }
        } else if let Some(user) = current.as_mut() {
            let mut expanded = arg.clone();
            for (name, value) in &environment {
                expanded = expanded.replace(&format!("$({name})"), value);
            }
            assert!(!expanded.contains("$("), "an unexpanded variable in {arg}");
            user.push(expanded);
        }
    }
    users.extend(current);
    users.sort_by_key(|user| user.first().is_some_and(|name| name == "default"));
    users
}

/// The manifest's `REDIS_URL` (in `environment`) pointed at `redis`: the same
/// user, this machine's address.
fn redis_url_for(environment: &BTreeMap<String, String>, redis: &Redis) -> String {
    let manifest = environment
        .get("REDIS_URL")
        .map(String::as_str)
        .unwrap_or("");
    let rest = manifest.strip_prefix("redis://").unwrap_or(manifest);
    match rest.split_once('@') {
        Some((user, _)) => format!("redis://{user}@127.0.0.1:{}", redis.port),
        None => redis.url(),
    }
}

/// Every `*_FILE` variable of `environment` whose path is in a Secret volume of
/// `workload`'s pod, pointed at a file on this machine holding that Secret key's
/// test value: the secrets as the pod would read them.
fn secret_files(
    manifests: &Manifests,
    secrets: &TestSecrets,
    workload: &str,
    environment: &BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    let local = tempfile::tempdir().expect("a temporary folder").keep();
    SECRET_FILE_VARIABLES
        .iter()
        .filter_map(|&variable| {
            let path = environment.get(variable)?;
            let value = secret_file_value(manifests, secrets, workload, path);
            let file = local.join(variable.to_ascii_lowercase());
            std::fs::write(&file, format!("{value}\n")).unwrap();
            Some((variable, file.display().to_string()))
        })
        .collect()
}

/// The variables by which the binaries read a secret from a file.
const SECRET_FILE_VARIABLES: [&str; 3] = [
    "REDIS_PASSWORD_FILE",
    "JWT_SECRET_FILE",
    "SERVICE_TOKEN_FILE",
];

/// The test value of the Secret key that `workload`'s pod mounts at `path`.
pub fn secret_file_value(
    manifests: &Manifests,
    secrets: &TestSecrets,
    workload: &str,
    path: &str,
) -> String {
    let (secret, key) = mounted_secret_key(manifests, workload, path);
    secrets.get(&secret, &key)
}

/// The Secret and key that `workload`'s container mounts as the file `path`.
pub fn mounted_secret_key(manifests: &Manifests, workload: &str, path: &str) -> (String, String) {
    let path = Path::new(path);
    let (dir, file) = (path.parent().unwrap(), path.file_name().unwrap());
    let container = manifests.container(workload);
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap()) == dir)
        .unwrap_or_else(|| panic!("{workload}: nothing is mounted at {}", dir.display()));
    let volume = manifests.pod_template(workload)["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{workload}: no volume {}", mount["name"]));
    let secret = volume["secret"]["secretName"]
        .as_str()
        .unwrap_or_else(|| panic!("{workload}: {} is no Secret volume", mount["name"]));
    let key = volume["secret"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["path"].as_str() == file.to_str())
        .and_then(|item| item["key"].as_str())
        .unwrap_or_else(|| panic!("{workload}: the Secret volume has no {file:?}"));
    (secret.to_owned(), key.to_owned())
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
/// Secret key the gateway's `JWT_SECRET_FILE` is mounted from, reading and writing
/// everything.
pub fn token(manifests: &Manifests, secrets: &TestSecrets, sub: &str) -> String {
    let path = manifests
        .environment(manifests.container("gateway"), &|s, k| secrets.get(s, k))
        .remove("JWT_SECRET_FILE")
        .expect("the gateway's manifest sets JWT_SECRET_FILE");
    let secret = secret_file_value(manifests, secrets, "gateway", &path);
    credentials::hs256(&secret, &credentials::claims(sub))
}
