//! The security headers every answer carries, added in one place (the end of the
//! filter chain): the page's Content-Security-Policy (harmless on JSON), no MIME
//! sniffing, no framing, no referrer, and HSTS when the gateway itself serves
//! HTTPS.

use warp::{
    http::{HeaderValue, header},
    reply::Response,
};

/// The page's Content-Security-Policy: nothing but our own files and our own
/// socket (`connect-src 'self'` covers same-origin `ws:`/`wss:`).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// HSTS when serving HTTPS: one year, subdomains left alone.
const HSTS: &str = "max-age=31536000";

/// Adds the security headers to `response` (`https`: the gateway terminates TLS).
pub fn secure(mut response: Response, https: bool) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_is_set_and_hsts_only_over_https() {
        let response = secure(Response::new(Default::default()), false);
        let h = response.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert!(
            h[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let https = secure(Response::new(Default::default()), true);
        assert!(
            https
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );
    }
}
