//! Which web origins may use the API from a browser: an explicit allow-list (none
//! by default). Preflights are answered here; allowed origins get
//! `Access-Control-Allow-Origin` on every answer; a WebSocket handshake from a
//! browser must come from the list or from the gateway's own origin (no
//! cross-site WebSocket hijacking). No cookies are used, so credentials are never
//! allowed.

use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

/// Methods a preflight may ask for.
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
/// Request headers a preflight may ask for.
const ALLOW_HEADERS: &str = "authorization, content-type, if-match";
/// Response headers a page may read.
const EXPOSE_HEADERS: &str = "etag, x-users-seq, retry-after, www-authenticate, allow";
/// How long a browser may cache a preflight (seconds).
const MAX_AGE: &str = "600";

/// The allow-list.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// Origins as `scheme://host[:port]`, compared exactly (case-insensitively);
    /// trailing slashes are dropped.
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// Whether `origin` is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.contains(&origin)
    }

    /// The answer to a CORS preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` when the request is not one.
    /// A listed origin gets 204 with the permissions; any other 403.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response> {
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or_default();
        if !self.allows(origin) {
            let mut response = crate::error::json_response(
                StatusCode::FORBIDDEN,
                &serde_json::json!({ "detail": "This origin may not call the API." }),
            );
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Origin"));
            return Some(response);
        }
        let mut response = Response::new(Default::default());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        if let Ok(origin) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        Some(response)
    }

    /// Adds `Access-Control-Allow-Origin` to an answer when `origin` is listed.
    pub fn decorate(&self, origin: Option<&str>, response: &mut Response) {
        let headers = response.headers_mut();
        if self.origins.is_empty() {
            return;
        }
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin.filter(|o| self.allows(o))
            && let Ok(value) = HeaderValue::from_str(origin)
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }

    /// Whether a WebSocket handshake may proceed: no `Origin` (not a browser), the
    /// gateway's own origin (its host as the request names it, either scheme), or a
    /// listed origin.
    pub fn socket_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allows(origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        Cors::new(&["https://app.example.com/".to_owned()])
    }

    fn preflight_headers(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin.parse().unwrap());
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            "PATCH".parse().unwrap(),
        );
        headers
    }

    #[test]
    fn a_listed_origin_gets_its_preflight_answered() {
        let response = cors()
            .preflight(
                &Method::OPTIONS,
                &preflight_headers("https://app.example.com"),
            )
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert!(
            response.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("authorization")
        );
    }

    #[test]
    fn other_origins_are_refused_and_plain_options_is_not_a_preflight() {
        let response = cors()
            .preflight(&Method::OPTIONS, &preflight_headers("https://evil.example"))
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            !response
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        assert!(
            cors()
                .preflight(&Method::OPTIONS, &HeaderMap::new())
                .is_none()
        );
        assert!(!Cors::default().allows("https://app.example.com"));
    }

    #[test]
    fn sockets_come_from_our_own_origin_or_the_list() {
        let cors = cors();
        assert!(cors.socket_allowed(None, Some("127.0.0.1:8080")));
        assert!(cors.socket_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(cors.socket_allowed(Some("https://app.example.com"), Some("127.0.0.1:8080")));
        assert!(!cors.socket_allowed(Some("https://evil.example"), Some("127.0.0.1:8080")));
        assert!(!cors.socket_allowed(Some("null"), Some("127.0.0.1:8080")));
    }
}
