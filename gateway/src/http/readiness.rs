//! `/readyz`: whether *this* gateway should get traffic: it has started (its
//! event source was live at least once) and is not draining. What every
//! gateway shares (the user-service's health, Redis, the event source now) is
//! reported in the body (`"status": "degraded"` and the failing checks), in
//! metrics and alerts, but does not take the pod out of the Service: a
//! user-service restart must not empty the Service of every gateway, whose
//! page, static files and socket reconnects keep working (REST answers 503 by
//! itself meanwhile).
//!
//! Probes need no token, so the answer is shared for [`FRESH_FOR`]: however
//! many requests arrive, the dependencies are asked at most a few times a
//! second, one check at a time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use warp::{http::StatusCode, reply::Response};

use crate::{error::json_response, observe, state::AppState};

/// How long one check's answer is given to every caller.
pub const FRESH_FOR: Duration = Duration::from_millis(250);

/// The readiness check and its last answer.
pub struct Readiness {
    state: AppState,
    timeout: Duration,
    /// Cancelled when the gateway starts draining at shutdown.
    draining: CancellationToken,
    last: Mutex<Option<(Instant, Value)>>,
}

impl Readiness {
    /// Checks through `state`, waiting up to `timeout` for each dependency;
    /// not ready from the moment `draining` is cancelled.
    pub fn new(state: AppState, timeout: Duration, draining: CancellationToken) -> Readiness {
        Readiness {
            state,
            timeout,
            draining,
            last: Mutex::new(None),
        }
    }

    /// 503 `{"status": "draining"}` at shutdown, 503 `{"status": "starting"}`
    /// until the event source was first live; else 200 with `"status"` `ok` or
    /// `degraded` and every check.
    pub async fn answer(&self) -> Response {
        if self.draining.is_cancelled() {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "draining" }),
            );
        }
        let mut last = self.last.lock().await;
        let fresh = last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, checks)| checks.clone());
        let checks = match fresh {
            Some(checks) => checks,
            None => {
                let checks = check(&mut self.state.clone(), self.timeout).await;
                *last = Some((Instant::now(), checks.clone()));
                checks
            }
        };
        drop(last);
        let all_ok = checks
            .as_object()
            .is_some_and(|c| c.values().all(|v| v == "ok"));
        let (status, word) = match (self.state.hub.was_ever_live(), all_ok) {
            (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
            (true, true) => (StatusCode::OK, "ok"),
            (true, false) => (StatusCode::OK, "degraded"),
        };
        json_response(status, &json!({ "status": word, "checks": checks }))
    }
}

/// Each shared dependency, `ok` or `unavailable`: the user-service's health
/// check, Redis's PING (when configured), the event source now.
async fn check(state: &mut AppState, timeout: Duration) -> Value {
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
    }
    let events_ok = state.hub.is_live();
    checks.insert(
        "events".into(),
        json!(if events_ok { "ok" } else { "unavailable" }),
    );
    Value::Object(checks)
}

/// `/healthz`: the process is up and serving.
pub fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}
