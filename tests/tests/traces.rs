//! Traces across both services, on the real binaries: each exports its spans over
//! OTLP/gRPC to a receiver this test runs (the OpenTelemetry collector's own
//! `TraceService`), turned on by the standard `OTEL_EXPORTER_OTLP_ENDPOINT`. One
//! PATCH is one trace: the ingress's `traceparent` → the gateway's request span →
//! its gRPC client span → the user-service's server span → the write batch → the
//! commit, each the parent of the next. Probes and background calls (health
//! checks, the event watch) start no traces.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use e2e::{Http, Poll, STEP_TIMEOUT, UserService, binary, eventually, start_gateway_with};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::{span::SpanKind, status::StatusCode},
};
use serde_json::json;
use tokio::process::Command;

/// One span as received, with the `service.name` of the process that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    /// The span's status: unset, OK or ERROR.
    status: StatusCode,
}

/// The receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            let service = attributes(&resource.attributes)
                .remove("service.name")
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                spans.push(Received {
                    service: service.clone(),
                    kind: span.kind(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    status: span.status.map_or(StatusCode::Unset, |s| s.code()),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// String-valued attributes by key (others as their debug form).
fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Serves the collector's gRPC API on a free port.
    async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (collector, addr)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until `trace_id` has at least `count` spans; answers them.
    async fn trace(&self, trace_id: &str, count: usize) -> Vec<Received> {
        eventually(
            Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
            &format!("{count} spans of trace {trace_id}"),
            async || {
                let spans: Vec<_> = self
                    .spans()
                    .into_iter()
                    .filter(|span| span.trace_id == trace_id)
                    .collect();
                if spans.len() >= count {
                    Ok(spans)
                } else {
                    Err(format!(": {spans:#?}"))
                }
            },
        )
        .await
    }
}

/// The environment that turns export on, as an operator would set it (with a
/// short batch delay, so the test need not wait 5 s for each batch).
fn exporting_to(collector: SocketAddr) -> impl Fn(&mut Command) {
    move |command: &mut Command| {
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
            .env("OTEL_BSP_SCHEDULE_DELAY", "50");
    }
}

/// The one span of `spans` named `name` sent by `service`.
fn one<'a>(spans: &'a [Received], service: &str, name: &str) -> &'a Received {
    let found: Vec<_> = spans
        .iter()
        .filter(|span| span.service == service && span.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {name:?} from {service}: {spans:#?}");
    found[0]
}

/// Asserts `child`'s parent is `parent`.
fn assert_child(child: &Received, parent: &Received) {
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{:?} ({}) is a child of {:?} ({})",
        child.name, child.service, parent.name, parent.service
    );
}

/// The spans of one write through both services, each the parent of the next,
/// from the gateway's request span down to the commit.
fn assert_write_chain(spans: &[Received], request_name: &str, rpc: &str) {
    let request = one(spans, "gateway", request_name);
    assert_eq!(request.kind, SpanKind::Server);
    let call = one(spans, "gateway", &format!("users.v1.UserService/{rpc}"));
    assert_eq!(call.kind, SpanKind::Client);
    assert_eq!(call.attributes["rpc.method"], rpc);
    assert_child(call, request);
    let served = one(
        spans,
        "user-service",
        &format!("users.v1.UserService/{rpc}"),
    );
    assert_eq!(served.kind, SpanKind::Server);
    assert_eq!(served.attributes["rpc.system"], "grpc");
    assert_child(served, call);
    let batch = one(spans, "user-service", "write batch");
    assert_child(batch, served);
    let commit = one(spans, "user-service", "commit");
    assert_child(commit, batch);
}

#[tokio::test]
async fn one_write_is_one_trace_across_both_services() {
    let (collector, collector_addr) = Collector::start().await;
    let users = UserService::start_with(&[], exporting_to(collector_addr)).await;
    let gateway = start_gateway_with(&users.url(), &[], exporting_to(collector_addr)).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(http.get("/readyz").await.status, 200);
        assert_eq!(http.get("/healthz").await.status, 200);
    }

    // A create with no traceparent: the gateway starts the trace.
    let created = http
        .send(
            "POST",
            "/api/users/",
            Some("application/json"),
            Some(br#"{"first_name":"Ada","last_name":"Lovelace"}"#.to_vec()),
            &[],
        )
        .await;
    assert_eq!(created.status, 201);
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).unwrap()["id"]
        .as_i64()
        .unwrap();
    let started_here = eventually(STEP_TIMEOUT, "the create's request span", async || {
        collector
            .spans()
            .into_iter()
            .find(|span| span.service == "gateway" && span.name == "POST /api/users/")
            .ok_or(": not yet")
    })
    .await;
    assert_eq!(
        started_here.parent_span_id, "",
        "a root span: {started_here:?}"
    );
    let spans = collector.trace(&started_here.trace_id, 5).await;
    assert_write_chain(&spans, "POST /api/users/", "CreateUser");

    // A PATCH carrying the ingress's traceparent joins that trace.
    let trace_id = format!("{:032x}", rand_u128());
    let ingress_span = format!("{:016x}", rand_u128() as u64 | 1);
    let traceparent = format!("00-{trace_id}-{ingress_span}-01");
    let body = serde_json::to_vec(&json!({"first_name": "Ada Augusta"})).unwrap();
    let reply = http
        .send(
            "PATCH",
            &format!("/api/users/{id}/"),
            Some("application/json"),
            Some(body),
            &[("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(reply.status, 200);
    let spans = collector.trace(&trace_id, 5).await;
    let request = one(&spans, "gateway", "PATCH /api/users/{id}/");
    assert_eq!(request.parent_span_id, ingress_span);
    assert_eq!(request.attributes["http.route"], "/api/users/{id}/");
    assert_write_chain(&spans, "PATCH /api/users/{id}/", "UpdateUser");

    // A GET is traced too, without a batch. NOT_FOUND is the caller's miss: the
    // gateway's call failed (an error on its client span), but neither server
    // failed (the user-service's span records the code, not an error; the 404 is
    // no error of the request's).
    let reply = http.get("/api/users/999999/").await;
    assert_eq!(reply.status, 404);
    let get = eventually(
        Poll::within(STEP_TIMEOUT).every(Duration::from_millis(50)),
        "the GET's request span",
        async || {
            let spans = collector.spans();
            let root = spans
                .iter()
                .find(|s| s.name == "GET /api/users/{id}/" && s.parent_span_id.is_empty());
            root.map(|s| s.trace_id.clone()).ok_or_else(String::new)
        },
    )
    .await;
    let spans = collector.trace(&get, 3).await;
    assert_eq!(
        one(&spans, "gateway", "GET /api/users/{id}/").status,
        StatusCode::Unset
    );
    assert_eq!(
        one(&spans, "gateway", "users.v1.UserService/GetUser").status,
        StatusCode::Error
    );
    let served = one(&spans, "user-service", "users.v1.UserService/GetUser");
    assert_eq!(served.attributes["rpc.grpc.status_code"], "5");
    assert_eq!(served.status, StatusCode::Unset);

    // Give the exporters a few batch delays, then: every span belongs to a
    // request's trace (none from probes, health checks or the event watch).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = collector.spans();
    let request_traces: Vec<&str> = spans
        .iter()
        .filter(|span| span.service == "gateway" && span.parent_span_id.is_empty())
        .map(|span| span.trace_id.as_str())
        .chain([trace_id.as_str()])
        .collect();
    for span in &spans {
        assert!(
            request_traces.contains(&span.trace_id.as_str()),
            "a span outside any request's trace: {span:#?}"
        );
        assert!(
            !span.name.contains("healthz") && !span.name.contains("readyz"),
            "probes are not traced: {span:#?}"
        );
    }
    let roots: Vec<&str> = spans
        .iter()
        .filter(|span| span.parent_span_id.is_empty())
        .map(|span| span.name.as_str())
        .collect();
    assert_eq!(
        roots,
        ["POST /api/users/", "GET /api/users/{id}/"],
        "the only traces started here are the two requests without a traceparent"
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_a_wrong_protocol_is_refused() {
    // A receiver nobody is told about: the services run as they always do.
    let (collector, _) = Collector::start().await;
    let users = UserService::start(&[]).await;
    let gateway = start_gateway_with(&users.url(), &[], |_| {}).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    http.create("Ada", "Lovelace").await;
    assert!(collector.spans().is_empty());

    // OTLP over HTTP is not built in: said at start, exit 2, not silently off.
    for program in ["user-service", "gateway"] {
        let output = Command::new(binary(program))
            .args(["--listen", "127.0.0.1:0"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{program}: {stderr}");
        assert!(
            stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("grpc"),
            "{program}: {stderr}"
        );
    }
}

/// 128 random bits, from the OS (no rand crate needed here).
fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    getrandom_fill(&mut bytes);
    u128::from_le_bytes(bytes)
}

fn getrandom_fill(bytes: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .expect("/dev/urandom");
}
