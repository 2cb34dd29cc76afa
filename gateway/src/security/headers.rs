//! The security headers every answer carries, added in one place (the end of the
//! filter chain): the page's Content-Security-Policy (harmless on JSON), no MIME
//! sniffing, no referrer, HSTS when the gateway itself serves HTTPS, and no
//! framing, except of the editor window by this origin's own landing page (which
//! shows both windows side by side).

use warp::{
    http::{HeaderValue, header},
    reply::Response,
};

/// One policy, two answers to who may frame it.
macro_rules! content_security_policy {
    ($frame_ancestors:literal) => {
        concat!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; ",
            "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; ",
            "frame-ancestors ",
            $frame_ancestors
        )
    };
}

/// The page's Content-Security-Policy: nothing but our own files, our own socket
/// (`connect-src 'self'` covers same-origin `ws:`/`wss:`) and our own pages in
/// frames; no one may frame the answer.
pub const CONTENT_SECURITY_POLICY: &str = content_security_policy!("'none'");

/// The same policy for an answer marked [`FramedBySameOrigin`]: only this origin's
/// pages may frame it.
pub const FRAMEABLE_CONTENT_SECURITY_POLICY: &str = content_security_policy!("'self'");

/// HSTS when serving HTTPS: one year, subdomains left alone.
const HSTS: &str = "max-age=31536000";

/// A response extension: this answer is a page that this origin's own pages may
/// show in a frame (`frame-ancestors 'self'`, `X-Frame-Options: SAMEORIGIN`).
/// Without it an answer may not be framed at all.
#[derive(Clone, Copy, Debug)]
pub struct FramedBySameOrigin;

/// Lets this origin's pages frame `response` (see [`FramedBySameOrigin`]).
pub fn allow_same_origin_frames(response: &mut Response) {
    response.extensions_mut().insert(FramedBySameOrigin);
}

/// Adds the security headers to `response` (`https`: the gateway terminates TLS).
pub fn secure(mut response: Response, https: bool) -> Response {
    let frameable = response.extensions().get::<FramedBySameOrigin>().is_some();
    let (policy, frame_options) = if frameable {
        (FRAMEABLE_CONTENT_SECURITY_POLICY, "SAMEORIGIN")
    } else {
        (CONTENT_SECURITY_POLICY, "DENY")
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static(frame_options),
    );
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

    fn csp(response: &Response) -> &str {
        response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
    }

    #[test]
    fn every_header_is_set_and_hsts_only_over_https() {
        let response = secure(Response::new(Default::default()), false);
        let h = response.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(csp(&response), CONTENT_SECURITY_POLICY);
        assert!(csp(&response).ends_with("frame-ancestors 'none'"));
        assert!(!h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let https = secure(Response::new(Default::default()), true);
        assert!(
            https
                .headers()
                .contains_key(header::STRICT_TRANSPORT_SECURITY)
        );
    }

    #[test]
    fn a_marked_page_may_be_framed_by_this_origin_only() {
        let mut response = Response::new(Default::default());
        allow_same_origin_frames(&mut response);
        let response = secure(response, false);
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "SAMEORIGIN");
        assert!(csp(&response).ends_with("frame-ancestors 'self'"));
    }

    #[test]
    fn both_policies_differ_only_in_who_may_frame_and_allow_nothing_unsafe() {
        let strip = |policy: &'static str| policy.rsplit_once("; ").unwrap().0;
        assert_eq!(
            strip(CONTENT_SECURITY_POLICY),
            strip(FRAMEABLE_CONTENT_SECURITY_POLICY)
        );
        for policy in [CONTENT_SECURITY_POLICY, FRAMEABLE_CONTENT_SECURITY_POLICY] {
            assert!(policy.starts_with("default-src 'none'; "), "{policy}");
            assert!(!policy.contains("unsafe"), "{policy}");
            assert!(!policy.contains('*'), "{policy}");
            assert!(policy.contains("frame-src 'self'"), "{policy}");
        }
    }
}
