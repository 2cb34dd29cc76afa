//! The warp filters: which path goes to which handler, the caps on heads and
//! query strings, and the one `recover` that turns every rejection into the
//! documented JSON error. Handlers live beside this module and in [`crate::ws`];
//! this module only routes.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use warp::{
    Filter, Rejection,
    filters::BoxedFilter,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    path::Tail,
    reply::Response,
};

use crate::{
    error::{Error, json_response},
    http::{
        asyncapi, body, openapi,
        readiness::{self, Readiness},
        users::{self, ApiRequest},
        web,
    },
    observe,
    security::{cors::Cors, headers, limits},
    server,
    state::AppState,
    ws::{self, upgrade},
};

/// Everything the routes need.
#[derive(Clone)]
pub struct Routes {
    pub state: AppState,
    /// Answers socket handshakes.
    pub sockets: ws::Endpoint,
    /// Serve the page from this directory instead of the embedded copy.
    pub web_dir: Option<PathBuf>,
    /// How long `/readyz` waits for each dependency.
    pub ready_timeout: std::time::Duration,
    /// Origins allowed cross-origin.
    pub cors: Cors,
    /// The gateway serves HTTPS itself (adds HSTS).
    pub https: bool,
    /// `/metrics` is served on this port (not on a metrics port of its own).
    pub metrics_here: bool,
}

/// The whole HTTP surface.
pub fn build(routes: Routes) -> BoxedFilter<(Response,)> {
    let state = routes.state.clone();
    let users = warp::path("api")
        .and(warp::path("users"))
        .and(warp::path::tail())
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(body::pending())
        .and(server::client_addr())
        .then(
            move |tail: Tail,
                  method: Method,
                  query: String,
                  headers: HeaderMap,
                  body,
                  client: Option<SocketAddr>| {
                let state = state.clone();
                let rest = tail.as_str().trim_end_matches('/');
                let id = (!rest.is_empty()).then(|| rest.to_owned());
                users::users(
                    state,
                    ApiRequest {
                        method,
                        id,
                        query,
                        headers,
                        body,
                        client,
                    },
                )
            },
        );

    let openapi = get_only(
        warp::path!("api" / "openapi.json").boxed(),
        warp::any()
            .map(|| json_response(StatusCode::OK, &openapi::document()))
            .boxed(),
    );
    let asyncapi = get_only(
        warp::path!("api" / "asyncapi.json").boxed(),
        warp::any()
            .map(|| json_response(StatusCode::OK, &asyncapi::document()))
            .boxed(),
    );
    let healthz = get_only(
        warp::path!("healthz").boxed(),
        warp::any().map(readiness::healthz).boxed(),
    );
    // No token and no rate limit: the Ingress must not route it
    // (docs/operations.md); Prometheus scrapes the pod directly.
    let metrics_here = routes.metrics_here;
    let metrics = get_only(
        warp::path!("metrics")
            .and(warp::any().and_then(move || async move {
                if metrics_here {
                    Ok(())
                } else {
                    Err(warp::reject::not_found())
                }
            }))
            .untuple_one()
            .boxed(),
        warp::any().map(observe::metrics_response).boxed(),
    );
    let readiness = Arc::new(Readiness::new(
        routes.state.clone(),
        routes.ready_timeout,
        routes.sockets.shutdown.clone(),
    ));
    let readyz = get_only(
        warp::path!("readyz").boxed(),
        warp::any()
            .then(move || {
                let readiness = readiness.clone();
                async move { readiness.answer().await }
            })
            .boxed(),
    );

    let endpoint = routes.sockets.clone();
    let socket = get_only(
        warp::path!("ws" / "user-updates").boxed(),
        upgrade::handshake()
            .and(raw_query())
            .and(warp::header::headers_cloned())
            .and(server::client_addr())
            .map(
                move |handshake, query: String, headers: HeaderMap, client| {
                    endpoint.open(handshake, &query, &headers, client)
                },
            )
            .boxed(),
    );

    let page = match routes.web_dir {
        Some(dir) => web::page(web::Source::Dir(dir)).boxed(),
        None => web::page(web::Source::Embedded).boxed(),
    };

    let cors = routes.cors.clone();
    let preflight = warp::options()
        .and(warp::header::headers_cloned())
        .and_then(move |headers: HeaderMap| {
            let answer = cors.preflight(&Method::OPTIONS, &headers);
            async move { answer.ok_or_else(warp::reject::not_found) }
        });
    let surface = users
        .or(openapi)
        .unify()
        .or(asyncapi)
        .unify()
        .or(healthz)
        .unify()
        .or(metrics)
        .unify()
        .or(readyz)
        .unify()
        .or(socket)
        .unify()
        .or(page)
        .unify();
    let cors = routes.cors.clone();
    let https = routes.https;
    warp::header::optional::<String>("origin")
        .and(
            query_capped()
                .and(preflight.or(surface).unify())
                .recover(recover)
                .unify(),
        )
        .map(move |origin: Option<String>, mut response: Response| {
            cors.decorate(origin.as_deref(), &mut response);
            headers::secure(response, https)
        })
        .boxed()
}

/// Refuses a request head over [`limits::MAX_HEAD`] (431) or a query string over
/// [`limits::MAX_QUERY`] (414) before any route sees it.
fn query_capped() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::ext::optional::<server::HeadTooLarge>()
        .and(raw_query())
        .and_then(
            |too_large: Option<server::HeadTooLarge>, query: String| async move {
                if too_large.is_some() {
                    Err(warp::reject::custom(HeadTooLarge))
                } else if query.len() > limits::MAX_QUERY {
                    Err(warp::reject::custom(QueryTooLong))
                } else {
                    Ok(())
                }
            },
        )
        .untuple_one()
}

/// A rejection of [`query_capped`].
#[derive(Debug)]
struct QueryTooLong;

impl warp::reject::Reject for QueryTooLong {}

/// A rejection of [`query_capped`].
#[derive(Debug)]
struct HeadTooLarge;

impl warp::reject::Reject for HeadTooLarge {}

/// A path that answers GET (and HEAD) with `handler`, and 405 with `Allow: GET`
/// to any other method.
fn get_only(path: BoxedFilter<()>, handler: BoxedFilter<(Response,)>) -> BoxedFilter<(Response,)> {
    let allowed = warp::get().or(warp::head()).unify().and(handler);
    let refused = warp::method().map(|method: Method| {
        Error::MethodNotAllowed {
            method: method.to_string(),
            allow: "GET",
        }
        .into_response()
    });
    path.and(allowed.or(refused).unify()).boxed()
}

/// The raw query string; empty when there is none.
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Every rejection as a JSON error: unknown paths are 404 `{"detail": "Not
/// found."}`, never HTML; a WebSocket path without an upgrade is 400.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    // A method no route takes, on a path no route has, is still a missing page.
    let error = if rejection.find::<HeadTooLarge>().is_some() {
        Error::HeadTooLarge(limits::MAX_HEAD)
    } else if rejection.find::<QueryTooLong>().is_some() {
        Error::QueryTooLong(limits::MAX_QUERY)
    } else if rejection.is_not_found()
        || rejection.find::<warp::reject::MethodNotAllowed>().is_some()
    {
        Error::NotFound
    } else if rejection.find::<upgrade::NotAnUpgrade>().is_some() {
        Error::BadRequest("Expected a WebSocket upgrade request.".into())
    } else {
        tracing::debug!(?rejection, "unhandled rejection");
        Error::BadRequest("Bad request.".into())
    };
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Hub;
    use std::time::Duration;
    use tokio_util::{sync::CancellationToken, task::TaskTracker};
    use tonic::transport::Endpoint;

    const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

    /// The real filters, with a user-service that refuses connections (so every
    /// call that reaches it answers 503 at once).
    fn filter() -> BoxedFilter<(Response,)> {
        let channel = Endpoint::from_static("http://127.0.0.1:1")
            .connect_timeout(Duration::from_millis(200))
            .connect_lazy();
        let hub = Arc::new(Hub::new(8, 8));
        let state = AppState {
            channel: channel.clone(),
            credentials: crate::upstream::Credentials::default(),
            auth: Arc::new(crate::security::auth::Authenticator::disabled()),
            limits: Arc::new(limits::Limits::new(limits::LimitSettings::off())),
            health: tonic_health::pb::health_client::HealthClient::new(channel),
            redis: None,
            hub: hub.clone(),
            write_feed_wait: Duration::from_secs(1),
            body_read_timeout: Duration::from_secs(1),
            hosts: Arc::new(crate::security::hosts::AllowedHosts::new(
                &[],
                "127.0.0.1:8080".parse().unwrap(),
            )),
        };
        build(Routes {
            sockets: ws::Endpoint {
                state: state.clone(),
                cors: Cors::default(),
                presence: Arc::new(crate::presence::Presence::new(hub.clone(), None)),
                hub,
                sockets: ws::socket::SocketConfig {
                    ping_interval: Duration::from_secs(20),
                    ping_timeout: Duration::from_secs(20),
                },
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                runtime: tokio::runtime::Handle::current(),
            },
            state,
            web_dir: None,
            ready_timeout: Duration::from_millis(200),
            cors: Cors::default(),
            https: false,
            metrics_here: true,
        })
    }

    fn concrete(path: &str) -> String {
        path.replace("{id}", "1")
    }

    async fn send(method: &str, path: &str, body: &str) -> warp::http::Response<bytes::Bytes> {
        let mut request = warp::test::request().method(method).path(path);
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        request.reply(&filter()).await
    }

    #[tokio::test]
    async fn every_documented_operation_answers_a_documented_status() {
        let doc = openapi::document();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 5);
        for (path, item) in paths {
            for method in METHODS {
                let Some(operation) = item.get(method.to_ascii_lowercase()) else {
                    continue;
                };
                let body = if matches!(method, "POST" | "PUT" | "PATCH") {
                    r#"{"first_name":"a","last_name":"b"}"#
                } else {
                    ""
                };
                let response = send(method, &concrete(path), body).await;
                let status = response.status().as_str().to_owned();
                assert!(
                    operation["responses"].get(&status).is_some(),
                    "{method} {path} answered {status}, which the document does not list"
                );
            }
        }
    }

    #[tokio::test]
    async fn every_undocumented_method_is_refused_with_the_documented_allow() {
        let doc = openapi::document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let documented: Vec<&str> = METHODS
                .into_iter()
                .filter(|m| item.get(m.to_ascii_lowercase()).is_some())
                .collect();
            for method in METHODS.into_iter().filter(|m| !documented.contains(m)) {
                let response = send(method, &concrete(path), "").await;
                assert_eq!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path}"
                );
                let allow = response.headers()[header::ALLOW].to_str().unwrap();
                let mut allowed: Vec<&str> = allow.split(", ").collect();
                allowed.sort_unstable();
                let mut expected = documented.clone();
                expected.sort_unstable();
                assert_eq!(allowed, expected, "Allow of {path}");
            }
        }
    }

    #[tokio::test]
    async fn paths_answer_with_and_without_the_trailing_slash() {
        for path in ["/api/users", "/api/users/", "/api/users/1", "/api/users/1/"] {
            let response = send("DELETE", path, "").await;
            assert_ne!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[tokio::test]
    async fn unknown_paths_and_bad_ids_are_json_404s() {
        for path in [
            "/nope",
            "/api/users/abc/",
            "/api/users/1/extra",
            "/api/other/",
        ] {
            let response = send("GET", path, "").await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(response.body().as_ref(), br#"{"detail":"Not found."}"#);
        }
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_413() {
        let body = format!(r#"{{"first_name":"{}"}}"#, "x".repeat(body::MAX_BODY));
        let response = send("POST", "/api/users/", &body).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert!(body["detail"].is_string());
    }

    #[tokio::test]
    async fn a_request_the_gateway_refuses_never_reaches_the_user_service() {
        let cases = [
            (
                "text/plain",
                "first_name=a",
                415,
                r#"{"detail":"Unsupported media type \"text/plain\" in request."}"#,
            ),
            (
                "application/json",
                "[1,2]",
                400,
                r#"{"non_field_errors":["Invalid data. Expected a dictionary, but got list."]}"#,
            ),
        ];
        for (content_type, body, status, expected) in cases {
            let response = warp::test::request()
                .method("POST")
                .path("/api/users/")
                .header("content-type", content_type)
                .body(body)
                .reply(&filter())
                .await;
            assert_eq!(response.status().as_u16(), status, "{body}");
            assert_eq!(response.body().as_ref(), expected.as_bytes());
        }
    }

    #[tokio::test]
    async fn a_user_service_that_is_down_gives_503_quickly() {
        let started = std::time::Instant::now();
        let response = send("GET", "/api/users/1/", "").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(3));
        let ready = send("GET", "/readyz", "").await;
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(send("GET", "/healthz", "").await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text_without_a_token() {
        crate::observe::install();
        let response = send("GET", "/metrics", "").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            service_runtime::metrics::CONTENT_TYPE
        );
        let refused = send("POST", "/metrics", "").await;
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
