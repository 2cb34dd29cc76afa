//! `/readyz`: whether this gateway reaches what it needs (the user-service's
//! health, Redis when configured, a live event source). Probes need no token, so
//! the answer is shared for [`FRESH_FOR`]: however many requests arrive, the
//! dependencies are asked at most a few times a second, one check at a time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use warp::{http::StatusCode, reply::Response};

use crate::{error::json_response, observe, state::AppState};

/// How long one check's answer is given to every caller.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

/// The readiness check and its last answer.
pub struct Readiness {
    state: AppState,
    timeout: Duration,
    last: Mutex<Option<(Instant, bool, Value)>>,
}

impl Readiness {
    /// Checks through `state`, waiting up to `timeout` for each dependency.
    pub fn new(state: AppState, timeout: Duration) -> Readiness {
        Readiness {
            state,
            timeout,
            last: Mutex::new(None),
        }
    }

    /// 200 with every check `ok`, else 503 naming the failing ones.
    pub async fn answer(&self) -> Response {
        let mut last = self.last.lock().await;
        let fresh = last
            .as_ref()
            .filter(|(at, ..)| at.elapsed() < FRESH_FOR)
            .map(|(_, ready, body)| (*ready, body.clone()));
        let (ready, body) = match fresh {
            Some(answer) => answer,
            None => {
                let (ready, body) = check(&mut self.state.clone(), self.timeout).await;
                *last = Some((Instant::now(), ready, body.clone()));
                (ready, body)
            }
        };
        drop(last);
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, &body)
    }
}

/// `/readyz`: 200 only when the user-service answers its health check, Redis (when
/// configured) answers PING, and the event source is live.
async fn check(state: &mut AppState, timeout: Duration) -> (bool, Value) {
    let user_service = tokio::time::timeout(
        timeout,
        observe::grpc(
            "grpc.health.v1.Health/Check",
            state
                .health
                .check(tonic_health::pb::HealthCheckRequest::default()),
        ),
    )
    .await;
    let user_service_ok = matches!(&user_service, Ok(Ok(r))
        if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let mut checks = serde_json::Map::new();
    checks.insert(
        "user_service".into(),
        json!(if user_service_ok { "ok" } else { "unavailable" }),
    );
    let mut ready = user_service_ok;
    if let Some(pool) = &state.redis {
        let redis_ok = tokio::time::timeout(timeout, async {
            let mut conn = pool.get().await.ok()?;
            deadpool_redis::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await
        .ok()
        .flatten()
        .is_some();
        checks.insert(
            "redis".into(),
            json!(if redis_ok { "ok" } else { "unavailable" }),
        );
        ready &= redis_ok;
    }
    let events_ok = state.hub.is_live();
    checks.insert(
        "events".into(),
        json!(if events_ok { "ok" } else { "unavailable" }),
    );
    ready &= events_ok;
    let body = json!({ "status": if ready { "ok" } else { "unavailable" }, "checks": checks });
    (ready, body)
}

/// `/healthz`: the process is up and serving.
pub fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}
