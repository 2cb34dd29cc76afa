//! Prometheus metrics, exposed the same way by both binaries: code records through
//! the `metrics` facade (cheap atomics, no locks on the hot path), one process-wide
//! `metrics-exporter-prometheus` recorder keeps the values, and `/metrics` renders
//! them in the text exposition format on each scrape. Histograms get fixed buckets
//! (not the exporter's default summaries), so they can be aggregated across pods.

use std::{convert::Infallible, future::Future, sync::OnceLock, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinSet};

/// Buckets of every duration histogram, in seconds: sub-millisecond SQLite reads
/// up to minutes of relay lag while Redis is down.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
/// `Content-Type` of the text exposition format (0.0.4, which every
/// Prometheus-compatible scraper reads), for either binary's `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How often histogram samples are folded into their buckets when nobody
/// scrapes; without it they would pile up in memory between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a scraper gets to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (the first call does; later ones, as when
/// tests start several services in one process, get the same handle) and returns
/// the handle that renders it. `buckets` overrides [`SECONDS_BUCKETS`] for
/// histograms that are not durations (first call only). Call it before anything
/// records: values recorded before are lost.
pub fn install(buckets: &[(&str, &[f64])]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .expect("the buckets are not empty");
            for (name, values) in buckets {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), values)
                    .expect("the buckets are not empty");
            }
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    // Someone else's recorder is installed: ours stays empty rather
                    // than failing the service.
                    tracing::warn!(%error, "metrics: another recorder is installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("starting the metrics upkeep thread");
            handle
        })
        .clone()
}

/// Makes `counters` and `gauges` exist at zero before anything records them,
/// as Prometheus practice asks: a series that appears only once something
/// happens reads as "absent" to dashboards and alerts until then, and `rate()`
/// over it misses its first increase. A series already recorded keeps its value
/// (gauges are raised by zero, not set), so every service started in one
/// process, as in tests, may call it.
pub fn expose_at_zero(counters: &[&'static str], gauges: &[&'static str]) {
    for &name in counters {
        metrics::counter!(name).increment(0);
    }
    for &name in gauges {
        metrics::gauge!(name).increment(0.0);
    }
}

/// A gauge counting something for as long as it is open (a socket, a stream):
/// one more while this value lives, one less when it is dropped, whatever way
/// the holder ends.
pub struct HeldGauge(metrics::Gauge);

impl HeldGauge {
    /// Adds one to the gauge `name` until the value is dropped.
    pub fn open(name: &'static str) -> HeldGauge {
        let gauge = metrics::gauge!(name);
        gauge.increment(1.0);
        HeldGauge(gauge)
    }
}

impl Drop for HeldGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The text exposition of every metric recorded so far, for a server that
/// routes `/metrics` itself (the gateway) rather than through [`serve`].
pub fn render() -> String {
    install(&[]).render()
}

/// The canonical name of a gRPC status code (`OK`, `NOT_FOUND`, …), as a label
/// value that needs no allocation.
pub fn grpc_code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Serves `GET /metrics` (the text of `render()`) on `listener` until `shutdown`;
/// any other path is 404. Plain HTTP/1.1 with nothing else on the port, for a
/// service whose main port speaks only gRPC.
pub async fn serve<R>(listener: TcpListener, render: R, shutdown: impl Future<Output = ()>)
where
    R: Fn() -> String + Clone + Send + Sync + 'static,
{
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let render = render.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = answer(&request, &render);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "metrics: connection ended with an error");
            }
        });
    }
    // Dropping the set ends any scrape still connected.
}

/// The answer to one request on the metrics port.
fn answer<B>(request: &Request<B>, render: &impl Fn() -> String) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "Not found; metrics are at /metrics.\n",
        );
    }
    let body = match *request.method() {
        Method::GET => Bytes::from(render()),
        Method::HEAD => Bytes::new(),
        _ => {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n");
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    #[test]
    fn only_get_metrics_renders() {
        let render = || "up 1\n".to_owned();
        let ok = answer(&request(Method::GET, "/metrics"), &render);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let missing = answer(&request(Method::GET, "/"), &render);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let refused = answer(&request(Method::POST, "/metrics"), &render);
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn grpc_codes_have_their_canonical_names() {
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(5), "NOT_FOUND");
        assert_eq!(grpc_code_name(14), "UNAVAILABLE");
        assert_eq!(grpc_code_name(16), "UNAUTHENTICATED");
        assert_eq!(grpc_code_name(99), "UNKNOWN");
        assert_eq!(grpc_code_name(-1), "UNKNOWN");
    }

    #[test]
    fn series_exposed_at_zero_are_rendered_and_keep_what_was_recorded() {
        let handle = install(&[]);
        metrics::counter!("runtime_zero_kept_total").increment(3);
        metrics::gauge!("runtime_zero_kept").set(2.0);
        expose_at_zero(
            &["runtime_zero_total", "runtime_zero_kept_total"],
            &["runtime_zero", "runtime_zero_kept"],
        );
        let text = handle.render();
        for line in [
            "runtime_zero_total 0",
            "runtime_zero 0",
            "runtime_zero_kept_total 3",
            "runtime_zero_kept 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_port_serves_what_is_recorded() {
        let handle = install(&[]);
        metrics::counter!("runtime_test_total", "kind" => "a").increment(2);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            move || handle.render(),
            stop.clone().cancelled_owned(),
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("runtime_test_total{kind=\"a\"} 2"), "{text}");
        stop.cancel();
        server.await.unwrap();
    }
}
