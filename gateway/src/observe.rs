//! What the gateway shows operators: a request id, a span and a log line per
//! HTTP request, and the Prometheus metrics served at `/metrics` (listed with
//! their labels in docs/operations.md, "Metrics").
//!
//! [`Observed`] wraps the whole HTTP service, so every request (REST, page,
//! socket handshake, health) gets one id, taken from a sane `x-request-id` or made
//! up, echoed in the answer, set on the `request` span and, through a task-local,
//! sent as `x-request-id` metadata on every user-service call made while
//! answering ([`crate::upstream::Credentials`] reads it). Paths are logged without
//! their query (sockets may carry `?token=`). `/metrics` itself is neither timed
//! nor logged, so scrapes do not drown the numbers they read.
//!
//! With traces on (`OTEL_EXPORTER_OTLP_ENDPOINT`, [`service_runtime::telemetry`]),
//! the `request` span continues the caller's `traceparent` and each user-service
//! call made from it gets a client span whose context goes along as `traceparent`
//! metadata, so one PATCH is one trace across both services. Probes are not
//! traced: their spans are at debug.
//!
//! Label values are `&'static str` (route templates, status codes, reasons): the
//! fan-out records once per event, never per socket, and nothing allocates.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Instant,
};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use service_runtime::{request_id, telemetry};
use tower::Service;
use tracing::{Instrument, Level};
use warp::{
    http::{HeaderValue, Method, StatusCode, header},
    reply::Response,
};

/// Gauge: open WebSocket connections.
pub const WS_CONNECTIONS: &str = "gateway_ws_connections";
/// Gauge `{filter}`: sockets registered for events, `filtered` (`?users=`) or
/// `unfiltered` (every event).
pub const WS_SOCKETS_BY_FILTER: &str = "gateway_ws_sockets";
/// Gauge `{state}`: user-service addresses known, `healthy` (in the balance)
/// or `unhealthy` (failing their health check).
pub const UPSTREAM_ENDPOINTS: &str = "gateway_upstream_endpoints";
/// Gauge: distinct users at least one filtered socket follows.
pub const WS_SUBSCRIBED_USERS: &str = "gateway_ws_subscribed_users";
/// Gauge: presence members this gateway knows of (its own sockets' and, with
/// Redis, the other gateways').
pub const PRESENCE_MEMBERS: &str = "gateway_presence_members";
/// Counter: presence frames queued to sockets.
pub const PRESENCE_FRAMES: &str = "gateway_presence_frames_total";
/// Counter: local presence changes not published to the other gateways (the
/// outbox was full; the next heartbeat carries them).
pub const PRESENCE_DROPPED: &str = "gateway_presence_dropped_total";
/// Counter `{reason}`: sockets that ended, by why.
pub const WS_CLOSED: &str = "gateway_ws_closed_total";
/// The `reason` values of [`WS_CLOSED`] (docs/operations.md, "Metrics").
pub const WS_CLOSED_REASONS: [&str; 10] = [
    "client_closed",
    "disconnected",
    "ping_timeout",
    "write_failed",
    "too_slow",
    "shutdown",
    "token_expired",
    "bad_message",
    "no_event_source",
    "other",
];
/// Counter: events fanned out to this gateway's sockets (once per event).
pub const EVENTS_FANNED_OUT: &str = "gateway_events_fanned_out_total";
/// Counter: frames queued to sockets (events × sockets they went to).
pub const WS_FRAMES_QUEUED: &str = "gateway_ws_frames_queued_total";
/// Histogram: an event's age (commit in the user-service → queued to sockets).
pub const FANOUT_LAG: &str = "gateway_fanout_lag_seconds";
/// Histogram `{route, status}`: HTTP request duration to the response head.
pub const HTTP_DURATION: &str = "gateway_http_request_duration_seconds";
/// Histogram `{method, code}`: user-service calls, as the gateway sees them.
pub const GRPC_CLIENT_DURATION: &str = "gateway_grpc_client_duration_seconds";
/// Counter: Redis event-source connections made again after a failure.
pub const REDIS_RECONNECTS: &str = "gateway_redis_reconnects_total";
/// Counter: WatchUsers event-source streams opened again after a failure.
pub const WATCH_RECONNECTS: &str = "gateway_watch_reconnects_total";
/// Counter: sockets that resumed with `since` and were served without a resync.
pub const WS_RESUMES: &str = "gateway_ws_resumes_total";
/// Counter: `resync` frames sent (a resume out of reach, or the source lost its
/// place).
pub const WS_RESYNCS: &str = "gateway_ws_resyncs_total";
/// Counter `{outcome}`: writes held until their event was on this gateway's
/// feed (`on_feed`), answered when the bound passed first (`timed_out`), or not
/// held because the event source was down (`source_down`).
pub const WRITE_FEED_WAITS: &str = "gateway_write_feed_waits_total";
/// The `outcome` values of [`WRITE_FEED_WAITS`].
pub const WRITE_FEED_WAIT_OUTCOMES: [&str; 3] = ["on_feed", "timed_out", "source_down"];
/// Counter `{reason}`: connections closed by the gateway's connection limits:
/// `evicted` (a silent or idle one, to make room at the cap), `over_cap` (a new
/// one refused: every open one was busy), `no_request` (no request head in
/// time), `idle`.
pub const CONNECTIONS_SHED: &str = "gateway_connections_shed_total";
/// The `reason` values of [`CONNECTIONS_SHED`].
pub const CONNECTION_SHED_REASONS: [&str; 4] = ["evicted", "over_cap", "no_request", "idle"];
/// Gauge: 1 while the event source follows its stream, else 0.
pub const EVENT_SOURCE_UP: &str = "gateway_event_source_up";

/// The route template of `/metrics`, which is neither timed nor logged.
const METRICS_ROUTE: &str = "/metrics";

tokio::task_local! {
    /// The id of the request whose future is running.
    static REQUEST_ID: Arc<str>;
}

/// Installs the recorder and describes every metric (the `# HELP` lines); call
/// before anything records.
pub fn install() -> PrometheusHandle {
    let handle = service_runtime::metrics::install(&[]);
    describe_gauge!(WS_CONNECTIONS, Unit::Count, "Open WebSocket connections");
    describe_gauge!(
        UPSTREAM_ENDPOINTS,
        Unit::Count,
        "User-service addresses known, healthy (balanced over) or unhealthy"
    );
    describe_gauge!(
        WS_SOCKETS_BY_FILTER,
        Unit::Count,
        "Sockets registered for events, filtered (?users=) or unfiltered"
    );
    describe_gauge!(
        WS_SUBSCRIBED_USERS,
        Unit::Count,
        "Distinct users at least one filtered socket follows"
    );
    describe_gauge!(
        PRESENCE_MEMBERS,
        Unit::Count,
        "Presence members known here (this gateway's and the others')"
    );
    describe_counter!(
        PRESENCE_FRAMES,
        Unit::Count,
        "Presence frames queued to sockets"
    );
    describe_counter!(
        PRESENCE_DROPPED,
        Unit::Count,
        "Presence changes not published to other gateways (outbox full)"
    );
    describe_counter!(
        WS_CLOSED,
        Unit::Count,
        "WebSocket connections ended, by reason"
    );
    describe_counter!(
        EVENTS_FANNED_OUT,
        Unit::Count,
        "Events fanned out to sockets (once per event)"
    );
    describe_counter!(
        WS_FRAMES_QUEUED,
        Unit::Count,
        "Event frames queued to sockets (events x sockets)"
    );
    describe_histogram!(
        FANOUT_LAG,
        Unit::Seconds,
        "Age of an event (since its commit) when queued to the sockets"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration to the response head, by route template and status"
    );
    describe_histogram!(
        GRPC_CLIENT_DURATION,
        Unit::Seconds,
        "User-service call duration, by method and gRPC code"
    );
    describe_counter!(
        REDIS_RECONNECTS,
        Unit::Count,
        "Redis event-source reconnections after a failure"
    );
    describe_counter!(
        WATCH_RECONNECTS,
        Unit::Count,
        "WatchUsers event-source reconnections after a failure"
    );
    describe_counter!(
        WS_RESUMES,
        Unit::Count,
        "Sockets resumed with since and served without a resync"
    );
    describe_counter!(WS_RESYNCS, Unit::Count, "resync frames sent to sockets");
    describe_gauge!(
        EVENT_SOURCE_UP,
        Unit::Count,
        "1 while the event source follows its stream"
    );
    describe_counter!(
        WRITE_FEED_WAITS,
        Unit::Count,
        "Writes held until their event was on this gateway's feed, by outcome"
    );
    describe_counter!(
        CONNECTIONS_SHED,
        Unit::Count,
        "Connections closed by the connection limits, by reason"
    );
    // At zero from the first scrape, so dashboards and alerts never see
    // "absent": every series whose labels are known up front.
    service_runtime::metrics::expose_at_zero(
        &[
            EVENTS_FANNED_OUT,
            WS_FRAMES_QUEUED,
            REDIS_RECONNECTS,
            WATCH_RECONNECTS,
            WS_RESUMES,
            WS_RESYNCS,
            PRESENCE_FRAMES,
            PRESENCE_DROPPED,
        ],
        &[
            WS_CONNECTIONS,
            EVENT_SOURCE_UP,
            WS_SUBSCRIBED_USERS,
            PRESENCE_MEMBERS,
        ],
    );
    for state in ["healthy", "unhealthy"] {
        metrics::gauge!(UPSTREAM_ENDPOINTS, "state" => state).set(0.0);
    }
    for filter in ["filtered", "unfiltered"] {
        metrics::gauge!(WS_SOCKETS_BY_FILTER, "filter" => filter).set(0.0);
    }
    for reason in WS_CLOSED_REASONS {
        metrics::counter!(WS_CLOSED, "reason" => reason).increment(0);
    }
    for outcome in WRITE_FEED_WAIT_OUTCOMES {
        metrics::counter!(WRITE_FEED_WAITS, "outcome" => outcome).increment(0);
    }
    for reason in CONNECTION_SHED_REASONS {
        metrics::counter!(CONNECTIONS_SHED, "reason" => reason).increment(0);
    }
    handle
}

/// Counts a connection the connection limits closed (`reason` is one of
/// [`CONNECTION_SHED_REASONS`]).
pub fn connection_shed(reason: &'static str) {
    metrics::counter!(CONNECTIONS_SHED, "reason" => reason).increment(1);
}

/// The answer to `GET /metrics`.
pub fn metrics_response() -> Response {
    let mut response = Response::new(service_runtime::metrics::render().into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(service_runtime::metrics::CONTENT_TYPE),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Runs `future` as part of the request `id`: what [`Observed`] does for each
/// request, so calls made from it carry the id.
pub fn in_request<F: Future>(id: Arc<str>, future: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, future)
}

/// The id of the request being answered, when called from its future.
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// Puts the authenticated caller's `sub` on the request's span.
pub fn record_sub(sub: Option<&str>) {
    if let Some(sub) = sub {
        tracing::Span::current().record("sub", sub);
    }
}

/// The route template of a path, as the `route` label and log field: never the
/// raw path, whose ids would make one series per user.
pub fn route_of(path: &str) -> &'static str {
    // Up to four segments, without allocating (this runs for every request).
    let mut segments = path.trim_end_matches('/').split('/').skip(1);
    let first_four = [(); 4].map(|()| segments.next());
    match first_four {
        [None, ..] | [Some("index.html"), None, ..] => "/",
        [Some("api"), Some("users"), None, _] => "/api/users/",
        [Some("api"), Some("users"), Some(_), None] => "/api/users/{id}/",
        [Some("api"), Some("openapi.json"), None, _] => "/api/openapi.json",
        [Some("api"), Some("asyncapi.json"), None, _] => "/api/asyncapi.json",
        [Some("ws"), Some("user-updates"), None, _] => "/ws/user-updates/",
        [Some("window"), Some(_), None, _] => "/window/{n}/",
        [Some("static"), Some(_), None, _] => "/static/{file}",
        [Some("healthz"), None, ..] => "/healthz",
        [Some("readyz"), None, ..] => "/readyz",
        [Some("metrics"), None, ..] => METRICS_ROUTE,
        _ => "other",
    }
}

/// A status code as a label value, without allocating.
fn status_label(status: StatusCode) -> &'static str {
    static LABELS: LazyLock<Vec<String>> =
        LazyLock::new(|| (100..600).map(|code: u16| code.to_string()).collect());
    LABELS
        .get(usize::from(status.as_u16()).wrapping_sub(100))
        .map_or("other", String::as_str)
}

/// Times one user-service call as `method` (`UpdateUser`, say, for
/// `users.v1.UserService`, or a full `service/method`), labelled with the gRPC code it ended with (`OK` when it succeeded); a
/// client span around it when made while answering a traced request.
pub async fn grpc<T>(
    method: &'static str,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = Instant::now();
    let span = client_span(method);
    let result = call.instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => 0,
        Err(status) => status.code() as i32,
    };
    let code = service_runtime::metrics::grpc_code_name(code);
    if let Err(status) = &result {
        telemetry::failed(&span, &format!("{code}: {}", status.message()));
    }
    metrics::histogram!(GRPC_CLIENT_DURATION, "method" => method, "code" => code)
        .record(started.elapsed().as_secs_f64());
    result
}

/// The span of one user-service call: a child of the current span when that
/// one is traced (an info span: a request, not a probe), else none, so
/// background calls (health checks, the event watch) start no traces of their own.
fn client_span(method: &'static str) -> tracing::Span {
    let traced = tracing::Span::current()
        .metadata()
        .is_some_and(|meta| *meta.level() <= Level::INFO);
    if !traced {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc call",
        method,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    let (service, name) = method
        .rsplit_once('/')
        .unwrap_or(("users.v1.UserService", method));
    telemetry::describe(
        &span,
        || format!("{service}/{name}"),
        "client",
        &[
            ("rpc.system", "grpc"),
            ("rpc.service", service),
            ("rpc.method", name),
        ],
    );
    span
}

/// Counts a socket that ended for `reason`.
pub fn socket_closed(reason: &'static str) {
    metrics::counter!(WS_CLOSED, "reason" => reason).increment(1);
}

/// The HTTP service with request ids, spans, log lines and durations around it.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
}

impl<S> Observed<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Observed<S> {
        Observed { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = route_of(request.uri().path());
        if route == METRICS_ROUTE {
            return Box::pin(self.inner.call(request));
        }
        let id: Arc<str> = request_id::from_header(
            request
                .headers()
                .get(request_id::HEADER)
                .map(|v| v.as_bytes()),
        )
        .into();
        let method = request.method().clone();
        // The path only: a query may hold a token.
        let path = request.uri().path().to_owned();
        // Probes every few seconds per pod: debug, so neither logged nor traced
        // at the default levels.
        let span = if matches!(route, "/healthz" | "/readyz") {
            tracing::debug_span!("request", request_id = &*id, method = %method, route)
        } else {
            tracing::info_span!(
                "request",
                request_id = &*id,
                method = %method,
                route,
                sub = tracing::field::Empty,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
            )
        };
        telemetry::describe(
            &span,
            || format!("{method} {route}"),
            "server",
            &[
                ("http.request.method", method.as_str()),
                ("http.route", route),
            ],
        );
        telemetry::continue_trace(&span, request.headers());
        let started = Instant::now();
        let call = span.in_scope(|| REQUEST_ID.sync_scope(id.clone(), || self.inner.call(request)));
        let call = in_request(id.clone(), call).instrument(span.clone());
        Box::pin(async move {
            let mut response = call.await?;
            let elapsed = started.elapsed();
            let status = response.status();
            metrics::histogram!(HTTP_DURATION, "route" => route, "status" => status_label(status))
                .record(elapsed.as_secs_f64());
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(request_id::HEADER, value);
            }
            let latency_ms = elapsed.as_micros() as f64 / 1000.0;
            let status = status.as_u16();
            if status >= 500 {
                telemetry::failed(&span, &format!("HTTP {status}"));
            }
            span.in_scope(|| {
                // As the user-service does: changes at info, reads at debug. Probes
                // stay at debug even when not ready: they come every few seconds.
                if matches!(route, "/healthz" | "/readyz") {
                    tracing::debug!(path, status, latency_ms, "request");
                } else if status >= 500 {
                    tracing::warn!(path, status, latency_ms, "request");
                } else if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
                    tracing::info!(path, status, latency_ms, "request");
                } else {
                    tracing::debug!(path, status, latency_ms, "request");
                }
            });
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        let cases = [
            ("/", "/"),
            ("/index.html", "/"),
            ("/api/users", "/api/users/"),
            ("/api/users/", "/api/users/"),
            ("/api/users/42", "/api/users/{id}/"),
            ("/api/users/42/", "/api/users/{id}/"),
            ("/api/users/abc/", "/api/users/{id}/"),
            ("/api/users/1/extra", "other"),
            ("/api/openapi.json", "/api/openapi.json"),
            ("/api/asyncapi.json", "/api/asyncapi.json"),
            ("/ws/user-updates/", "/ws/user-updates/"),
            ("/window/2/", "/window/{n}/"),
            ("/static/feed.js", "/static/{file}"),
            ("/healthz", "/healthz"),
            ("/readyz", "/readyz"),
            ("/metrics", "/metrics"),
            ("/nope/deeper", "other"),
        ];
        for (path, route) in cases {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    #[test]
    fn status_labels_are_the_codes() {
        assert_eq!(status_label(StatusCode::OK), "200");
        assert_eq!(status_label(StatusCode::SWITCHING_PROTOCOLS), "101");
        assert_eq!(status_label(StatusCode::SERVICE_UNAVAILABLE), "503");
    }

    /// A service that answers 204 and says which request id its future saw.
    fn echo_service() -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<String>, Infallible>> + Send,
    > + Clone {
        tower::service_fn(|_request: http::Request<()>| async {
            let seen = request_id().map(|id| id.to_string()).unwrap_or_default();
            Ok::<_, Infallible>(http::Response::new(seen))
        })
    }

    async fn send(id: Option<&str>, path: &str) -> http::Response<String> {
        let mut request = http::Request::builder().uri(path);
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let mut service = Observed::new(echo_service());
        service.call(request.body(()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn a_sane_request_id_is_kept_echoed_and_seen_by_the_handler() {
        let response = send(Some("abc-123"), "/api/users/1/").await;
        assert_eq!(response.headers()["x-request-id"], "abc-123");
        assert_eq!(response.body(), "abc-123");
    }

    #[tokio::test]
    async fn a_missing_or_insane_request_id_is_replaced() {
        for given in [
            None,
            Some("has space"),
            Some("../../etc"),
            Some(&*"x".repeat(129)),
        ] {
            let response = send(given, "/api/users/").await;
            let id = response.headers()["x-request-id"].to_str().unwrap();
            assert_eq!(id.len(), 32, "{given:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(response.body(), id);
        }
    }

    #[tokio::test]
    async fn requests_are_timed_by_route_but_metrics_scrapes_are_not() {
        install();
        send(None, "/api/users/77/").await;
        send(None, "/metrics").await;
        let text = service_runtime::metrics::render();
        let series =
            r#"gateway_http_request_duration_seconds_count{route="/api/users/{id}/",status="200"}"#;
        assert!(text.contains(series), "{text}");
        assert!(!text.contains(r#"route="/metrics""#), "{text}");
        assert!(!text.contains("/api/users/77"), "{text}");
        // Outside a request there is no id.
        assert!(request_id().is_none());
    }
}
