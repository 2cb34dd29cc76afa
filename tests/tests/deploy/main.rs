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
    Http, Poll, STEP_TIMEOUT, Socket, free_port,
    manifests::{self, Manifests, TestSecrets, container_port, listen_port, match_labels, selects},
    poll_until,
};
use serde_json::{Value, json};

/// How long the gateway gives its event source to stop after draining
/// (`SOURCE_STOP_GRACE` in gateway/src/app.rs).
const GATEWAY_SOURCE_STOP: Duration = Duration::from_secs(2);

/// The binaries the project builds, by the workload that runs each.
const OUR_WORKLOADS: [&str; 2] = ["user-service", "gateway"];

/// One way to deploy: the base, an overlay, or the base with every component.
struct Variant {
    name: &'static str,
    manifests: Manifests,
}

/// Every variant the tests check: the base (SQLite), the PostgreSQL overlay, and
/// the base with every component of deploy/components (PostgreSQL, monitoring,
/// Gateway API, socket autoscaling) at once.
fn variants() -> Vec<Variant> {
    vec![
        Variant {
            name: "deploy/k8s",
            manifests: Manifests::load(),
        },
        Variant {
            name: "deploy/overlays/postgres",
            manifests: Manifests::overlay("postgres"),
        },
        Variant {
            name: "deploy/k8s + every component",
            manifests: Manifests::with_every_component(),
        },
    ]
}

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
            containers: manifests::pod_containers(&workload["spec"]["template"]["spec"]),
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

/// Something outside the cluster at `address` (an object store): no namespace,
/// no labels, reached by an `ipBlock` only.
fn external(name: &str, address: &str, ports: Value) -> Endpoint {
    Endpoint {
        name: name.to_owned(),
        namespace: Value::Null,
        labels: json!({ "address": address }),
        containers: vec![json!({"name": name, "ports": ports})],
    }
}

/// Whether an `ipBlock` peer covers `endpoint`. Pods (a namespace) have
/// addresses in the private ranges every ipBlock here excepts, so only an
/// external endpoint can match, by its address.
fn ip_block_covers(block: &Value, endpoint: &Endpoint) -> bool {
    let Some(address) = endpoint.labels["address"].as_str() else {
        return false;
    };
    if !endpoint.namespace.is_null() {
        return false;
    }
    let address: std::net::Ipv4Addr = address.parse().unwrap();
    let within = |cidr: &str| {
        let (network, bits) = cidr.split_once('/').expect("a CIDR");
        let network: std::net::Ipv4Addr = network.parse().expect("an IPv4 CIDR");
        let bits: u32 = bits.parse().unwrap();
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        u32::from(address) & mask == u32::from(network) & mask
    };
    let excepted = block["except"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|cidr| within(cidr.as_str().unwrap()));
    // Private ranges must be excepted: pods are never "the internet".
    for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        assert!(
            block["except"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c == private),
            "an ipBlock that does not except {private} would let pods reach the cluster: {block}"
        );
    }
    within(block["cidr"].as_str().unwrap()) && !excepted
}

/// Whether a NetworkPolicy peer (`from`/`to` entry) is `endpoint`.
fn peer_is(peer: &Value, own_namespace: &Value, endpoint: &Endpoint) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        return ip_block_covers(block, endpoint);
    }
    if endpoint.namespace.is_null() {
        return false;
    }
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

mod metrics;
mod network;
mod pods;
mod running;
mod wiring;
