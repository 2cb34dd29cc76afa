//! The web page: `/` (the start page), `/window/1/` and `/window/2/` (the editor)
//! and `/static/<file>` (its scripts and style). The files of `web/` are built into
//! the binary, so one file is the whole deployment; `--web-dir` serves them from a
//! folder instead (read at each request: edit and reload while developing).
//!
//! Every answer says `Cache-Control: no-cache` (names carry no content hash, so
//! browsers revalidate); `headers` adds the Content-Security-Policy (only this
//! origin's scripts, styles, socket and frames), nosniff and the rest, to this and
//! every other answer. The editor window alone may be framed, by this origin only:
//! the start page shows both windows side by side.

use std::path::PathBuf;

use warp::{
    Filter, Rejection,
    http::{HeaderValue, header},
    reply::Response,
};

use crate::security;

/// One file of `web/`.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../../web/", $name)),
        }
    };
}

/// Every file the page is made of; nothing else is served.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("window.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("index.js", "text/javascript; charset=utf-8"),
    asset!("window.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("feed.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The pages the start page shows in frames: marked so that this origin may
/// frame them (`frame-ancestors 'self'`); nothing else may be framed.
const FRAMED: &[&str] = &["window.html"];

/// Where the files come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Built into the binary.
    Embedded,
    /// Read from this folder at each request.
    Dir(PathBuf),
}

/// GET and HEAD of the page's paths.
pub fn page(source: Source) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .or(warp::path!("index.html"))
        .unify()
        .map(|| "index.html".to_owned());
    let window = warp::path!("window" / u8)
        .or(warp::path!("window" / u8 / ..).and(warp::path::end()))
        .unify()
        .and_then(|n: u8| async move {
            match n {
                1 | 2 => Ok("window.html".to_owned()),
                _ => Err(warp::reject::not_found()),
            }
        });
    let file = warp::path!("static" / String);
    // Asked for by browsers (and tools) that never read the page's icon link.
    let favicon = warp::path!("favicon.ico").map(|| "favicon.svg".to_owned());
    warp::get()
        .or(warp::head())
        .unify()
        .and(
            index
                .or(window)
                .unify()
                .or(file)
                .unify()
                .or(favicon)
                .unify(),
        )
        .and_then(move |name: String| serve(source.clone(), name))
}

async fn serve(source: Source, name: String) -> Result<Response, Rejection> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(warp::reject::not_found)?;
    let body = match source {
        Source::Embedded => asset.body.to_vec(),
        // Only names from ASSETS reach here, so no path can leave the folder.
        Source::Dir(dir) => tokio::fs::read(dir.join(asset.name))
            .await
            .map_err(|_| warp::reject::not_found())?,
    };
    let mut response = Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if FRAMED.contains(&asset.name) {
        security::headers::allow_same_origin_frames(&mut response);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page as served: through the security headers every answer gets.
    async fn get(path: &str) -> warp::http::Response<bytes::Bytes> {
        let served = page(Source::Embedded).map(|r| security::headers::secure(r, false));
        warp::test::request().path(path).reply(&served).await
    }

    #[tokio::test]
    async fn both_windows_get_the_editor_with_and_without_the_slash() {
        for path in ["/window/1/", "/window/2/", "/window/1"] {
            let response = get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            assert!(
                String::from_utf8_lossy(response.body()).contains("id=\"first_name\""),
                "{path}"
            );
        }
        assert_eq!(get("/window/3/").await.status(), 404);
    }

    #[tokio::test]
    async fn scripts_have_a_javascript_type_and_every_answer_is_locked_down() {
        let response = get("/static/window.js").await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    }

    #[tokio::test]
    async fn only_the_editor_window_may_be_framed_and_only_by_this_origin() {
        for path in ["/window/1/", "/window/2/?user=7", "/window/2"] {
            let response = get(path).await;
            let headers = response.headers();
            assert_eq!(headers[header::X_FRAME_OPTIONS], "SAMEORIGIN", "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.ends_with("frame-ancestors 'self'"), "{path}: {csp}");
        }
        for path in ["/", "/index.html", "/static/window.js", "/static/style.css"] {
            let response = get(path).await;
            let headers = response.headers();
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
            let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.ends_with("frame-ancestors 'none'"), "{path}: {csp}");
        }
        // The start page frames the windows, so its policy lets it (this origin only).
        let start = get("/").await;
        let csp = start.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-src 'self';"), "{csp}");
    }

    #[tokio::test]
    async fn the_icon_is_served_where_browsers_look_and_linked_from_both_pages() {
        for path in ["/favicon.ico", "/static/favicon.svg"] {
            let response = get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "image/svg+xml");
            assert!(response.body().starts_with(b"<svg"), "{path}");
        }
        for path in ["/", "/window/1/"] {
            let page = String::from_utf8_lossy(get(path).await.body()).into_owned();
            assert!(
                page.contains(r#"rel="icon" href="/static/favicon.svg""#),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn only_the_page_files_are_served() {
        assert_eq!(get("/static/../Cargo.toml").await.status(), 404);
        assert_eq!(get("/static/secret.txt").await.status(), 404);
    }

    #[tokio::test]
    async fn a_folder_source_serves_the_same_names() {
        let dir = std::env::temp_dir().join(format!("web-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<p>from disk</p>").unwrap();
        let response = warp::test::request()
            .path("/")
            .reply(&page(Source::Dir(dir.clone())))
            .await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(response.body(), "<p>from disk</p>");
    }
}
