//! Who may call the user-service: with `--service-token`, every `users.v1` RPC
//! must carry `authorization: Bearer <token>` (the gateway sends it), else
//! UNAUTHENTICATED. Health and reflection stay open, so probes and `grpcurl list`
//! work without it. Each RPC's caller, as the gateway forwards it (`x-user-sub`),
//! is logged with the request id (`x-request-id`, the gateway's id for the HTTP
//! request that made the call; a fresh one when absent or malformed): writes at
//! info, reads at debug. The call runs in an `rpc` span carrying that id, so any
//! line it logs can be tied to the gateway's. With traces on, that span is the
//! server span of the caller's trace (`traceparent` metadata).

use std::{
    future::Ready,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, Either};
use service_runtime::log_limit::LogLimit;
use tonic::Status;
use tower::{Layer, Service};
use tracing::{Instrument, instrument::Instrumented};

/// What an RPC answers: its response, or the inner service's error.
type Answer<R, E> = Result<http::Response<R>, E>;

/// Path prefix of the RPCs the token guards.
const GUARDED_PREFIX: &str = "/users.v1.UserService/";
/// RPCs refused for want of the service token, logged once per 10 s at most.
static REFUSALS: LogLimit = LogLimit::new(std::time::Duration::from_secs(10));
/// Metadata key of the caller's identity, set by the gateway (which
/// authenticated the user), so each write is logged with who made it.
pub const SUB_HEADER: &str = "x-user-sub";

/// The layer: checks the token (when configured) and logs the caller.
#[derive(Clone, Debug, Default)]
pub struct ServiceAuthLayer {
    expected: Option<Arc<Vec<u8>>>,
}

impl ServiceAuthLayer {
    /// Requires `authorization: Bearer <token>` when `token` is set.
    pub fn new(token: Option<&str>) -> ServiceAuthLayer {
        ServiceAuthLayer {
            expected: token.map(|t| Arc::new(format!("Bearer {t}").into_bytes())),
        }
    }
}

impl<S> Layer<S> for ServiceAuthLayer {
    type Service = ServiceAuth<S>;

    fn layer(&self, inner: S) -> ServiceAuth<S> {
        ServiceAuth {
            inner,
            expected: self.expected.clone(),
        }
    }
}

/// The service [`ServiceAuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct ServiceAuth<S> {
    inner: S,
    expected: Option<Arc<Vec<u8>>>,
}

impl<S, B, R> Service<http::Request<B>> for ServiceAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    /// The call as it is (traces off: no allocation of its own), the call
    /// followed by recording its outcome on the trace, or the refusal.
    type Future = Either<
        Instrumented<S::Future>,
        Either<BoxFuture<'static, Answer<R, S::Error>>, Ready<Answer<R, S::Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if !path.starts_with(GUARDED_PREFIX) {
            return Either::Left(self.inner.call(request).instrument(tracing::Span::none()));
        }
        let method = &path[GUARDED_PREFIX.len()..];
        let request_id = service_runtime::request_id::from_header(
            request
                .headers()
                .get(service_runtime::request_id::HEADER)
                .map(|v| v.as_bytes()),
        );
        let request_id = request_id.as_str();
        let sub = request
            .headers()
            .get(SUB_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        if let Some(expected) = &self.expected {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !constant_time_eq(given, expected) {
                // Callers without the token control how often this happens.
                if let Some(refused) = REFUSALS.hit() {
                    tracing::warn!(
                        method,
                        request_id,
                        refused,
                        "refused RPCs without the service token (one line per 10 s at most)"
                    );
                }
                let status = Status::unauthenticated("a valid service token is required");
                return Either::Right(Either::Right(std::future::ready(Ok(status.into_http()))));
            }
        }
        if matches!(method, "CreateUser" | "UpdateUser" | "DeleteUser") {
            tracing::info!(method, sub, request_id, "rpc");
        } else {
            tracing::debug!(method, sub, request_id, "rpc");
        }
        // A watch lasts as long as its stream (hours): a span, for its log
        // lines, but not one to trace (see `telemetry::UNTRACED_SPAN`).
        let span = if method == "WatchUsers" {
            tracing::info_span!(
                service_runtime::telemetry::UNTRACED_SPAN,
                method,
                request_id
            )
        } else {
            tracing::info_span!(
                "rpc",
                method,
                request_id,
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
            )
        };
        service_runtime::telemetry::describe(
            &span,
            || path[1..].to_owned(),
            "server",
            &[
                ("rpc.system", "grpc"),
                ("rpc.service", "users.v1.UserService"),
                ("rpc.method", method),
            ],
        );
        service_runtime::telemetry::continue_trace(&span, request.headers());
        let call = span.in_scope(|| self.inner.call(request));
        if !service_runtime::telemetry::exporting() {
            return Either::Left(call.instrument(span));
        }
        let call = call.instrument(span.clone());
        Either::Right(Either::Left(Box::pin(async move {
            let response = call.await?;
            service_runtime::telemetry::grpc_served(&span, response.headers());
            Ok(response)
        })))
    }
}

/// Compares without stopping at the first difference, so timing does not tell
/// how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_means_equal() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
    }
}
