//! What the user-service counts, for `/metrics` on `--metrics-listen`: how long
//! each RPC and each database query takes, how far the outbox relay is behind, how
//! old events are when they reach Redis, and how many watchers are open. Names and
//! labels are listed in docs/operations.md ("Metrics"); label values are static strings,
//! so recording never allocates.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::{Layer, Service};

/// Histogram `{method, code}`: time from an RPC's arrival to its response headers
/// (for WatchUsers: to the stream being open).
pub const GRPC_DURATION: &str = "user_service_grpc_duration_seconds";
/// Histogram `{op}`: one database query, or one writer batch from BEGIN to COMMIT.
pub const DB_QUERY_DURATION: &str = "user_service_db_query_duration_seconds";
/// Histogram: writes committed together by one writer batch (group commit).
pub const DB_WRITE_BATCH_SIZE: &str = "user_service_db_write_batch_size";
/// Gauge: events committed but not yet on the Redis stream (0 without
/// `--redis-url`).
pub const OUTBOX_BACKLOG: &str = "user_service_outbox_backlog";
/// Gauge: the newest committed seq, to compare with how far readers are.
pub const HEAD_SEQ: &str = "user_service_head_seq";
/// Histogram: an event's age (commit → appended to Redis).
pub const RELAY_LAG: &str = "user_service_relay_lag_seconds";
/// Counter: events appended to the Redis stream.
pub const EVENTS_PUBLISHED: &str = "user_service_events_published_total";
/// Counter: times the relay got Redis back after losing it.
pub const REDIS_RECONNECTS: &str = "user_service_redis_reconnects_total";
/// Gauge: open WatchUsers streams.
pub const WATCHERS: &str = "user_service_watchers";
/// Counter: gRPC connections closed at accept because `--max-connections` were
/// open.
pub const CONNECTIONS_REFUSED: &str = "user_service_connections_refused_total";

/// Gauge `{duty}`: 1 while this process holds the duty (`relay`, `retention`),
/// which on PostgreSQL one process of several holds at a time.
pub const DUTY_HELD: &str = "user_service_duty_held";

/// Every counter, exposed at zero from the first scrape (none has labels).
const COUNTERS: [&str; 3] = [EVENTS_PUBLISHED, REDIS_RECONNECTS, CONNECTIONS_REFUSED];
/// Every gauge, exposed at zero from the first scrape: [`OUTBOX_BACKLOG`]
/// stays there without a relay, as nothing waits to be published.
const GAUGES: [&str; 3] = [OUTBOX_BACKLOG, HEAD_SEQ, WATCHERS];

/// `op` label of a writer batch.
const OP_WRITE_BATCH: &str = "write_batch";

/// Buckets of [`DB_WRITE_BATCH_SIZE`] (the writer commits at most 256 at once).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Path prefix of the RPCs that are timed (health and reflection are not).
const PREFIX: &str = "/users.v1.UserService/";
/// The RPCs, as label values.
const METHODS: [&str; 6] = [
    "ListUsers",
    "GetUser",
    "CreateUser",
    "UpdateUser",
    "DeleteUser",
    "WatchUsers",
];

/// Installs the recorder, describes every metric (the `# HELP` lines) and
/// exposes every counter and gauge at zero.
pub fn install() -> PrometheusHandle {
    let handle = service_runtime::metrics::install(&[(DB_WRITE_BATCH_SIZE, BATCH_BUCKETS)]);
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "users.v1 RPC duration to response headers, by method and gRPC code"
    );
    describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "SQLite query duration by operation (write_batch: one group commit)"
    );
    describe_histogram!(
        DB_WRITE_BATCH_SIZE,
        Unit::Count,
        "Writes committed together in one writer transaction"
    );
    describe_gauge!(
        OUTBOX_BACKLOG,
        Unit::Count,
        "Committed events not yet appended to the Redis stream"
    );
    describe_gauge!(HEAD_SEQ, Unit::Count, "Newest committed event seq");
    describe_histogram!(
        RELAY_LAG,
        Unit::Seconds,
        "Age of an event (since its commit) when appended to Redis"
    );
    describe_counter!(
        EVENTS_PUBLISHED,
        Unit::Count,
        "Events appended to the Redis stream"
    );
    describe_counter!(
        REDIS_RECONNECTS,
        Unit::Count,
        "Times the relay reached Redis again after failing"
    );
    describe_gauge!(WATCHERS, Unit::Count, "Open WatchUsers streams");
    describe_gauge!(
        DUTY_HELD,
        Unit::Count,
        "1 while this process holds the duty (relay, retention)"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        Unit::Count,
        "gRPC connections closed at accept: the connection cap was reached"
    );
    service_runtime::metrics::expose_at_zero(&COUNTERS, &GAUGES);
    handle
}

/// Sets the gauges that are read rather than recorded, just before a scrape
/// renders them: the newest committed seq and, with a running relay that knows
/// its cursor, the outbox backlog (so it is exact even while the relay waits out a
/// Redis outage and records nothing).
pub fn set_scraped_gauges(head: u64, published: Option<u64>) {
    metrics::gauge!(HEAD_SEQ).set(head as f64);
    // A process that does not publish (no relay, the cursor not read yet, or
    // another process holds the relay) has no backlog of its own to show.
    let backlog = published.map_or(0, |published| head.saturating_sub(published));
    metrics::gauge!(OUTBOX_BACKLOG).set(backlog as f64);
}

/// Records whether this process holds `duty` now.
pub fn duty_held(duty: &'static str, held: bool) {
    metrics::gauge!(DUTY_HELD, "duty" => duty).set(if held { 1.0 } else { 0.0 });
}

/// Records one database query of kind `op` that started at `started`.
pub fn db_query(op: &'static str, started: Instant) {
    metrics::histogram!(DB_QUERY_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
}

/// Records one committed writer batch of `size` writes that began at `started`.
pub fn write_batch(size: usize, started: Instant) {
    db_query(OP_WRITE_BATCH, started);
    metrics::histogram!(DB_WRITE_BATCH_SIZE).record(size as f64);
}

/// The `method` label of a request path: `None` for what is not timed.
fn method_label(path: &str) -> Option<&'static str> {
    let name = path.strip_prefix(PREFIX)?;
    Some(
        METHODS
            .into_iter()
            .find(|m| *m == name)
            .unwrap_or("unknown"),
    )
}

/// The layer timing every users.v1 RPC by method and gRPC code.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            if let Some(method) = method {
                // A failed call answers trailers-only: grpc-status in the headers.
                // A successful one puts it in the trailers, after the headers.
                let code = match &answer {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                let code = service_runtime::metrics::grpc_code_name(code);
                metrics::histogram!(GRPC_DURATION, "method" => method, "code" => code)
                    .record(started.elapsed().as_secs_f64());
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_users_rpcs_get_a_method_label() {
        assert_eq!(
            method_label("/users.v1.UserService/GetUser"),
            Some("GetUser")
        );
        assert_eq!(method_label("/users.v1.UserService/Nope"), Some("unknown"));
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), None);
    }
}
