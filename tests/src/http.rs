//! A plain HTTP/1.1 client for the gateway's REST API, with every call bounded
//! so that a gateway that stops answering fails the test instead of hanging it.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use test_support::{Poll, eventually};

use crate::timeouts::{START_TIMEOUT, STEP_TIMEOUT};

/// An HTTP answer, read whole: tests assert on status, headers and body
/// together, and a failure message can show all three.
#[derive(Debug)]
pub struct Reply {
    /// The status code, as a number to compare with the one the API documents.
    pub status: u16,
    /// Every header, for the security and caching headers tests check.
    pub headers: http::HeaderMap,
    /// The body as sent, for tests of exact bytes (the POC's recorded answers).
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON, `Null` when empty or not JSON, so a test can index
    /// into an answer without unwrapping first.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value as text, `None` when absent or not text: what a test
    /// compares with a documented value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A plain HTTP/1.1 client for one gateway, the way a browser's REST calls
/// reach it; cheap to clone, so concurrent tasks each hold one.
#[derive(Clone)]
pub struct Http {
    /// The gateway it talks to: which one answered, when a test has several.
    pub addr: SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Http {
    /// A client for the gateway at `addr`, connecting on first use.
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request exactly as given (`body` as is, with `content_type` when
    /// given), so a test can send what no well-behaved client would; panics
    /// when no answer comes.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_send(method, path, content_type, body, headers)
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Http::send`], with a timeout or a failed connection as an error instead
    /// of a panic (for clients that expect the gateway to go away).
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a valid request");
        let response = tokio::time::timeout(STEP_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("{method} {path} timed out"))?
            .map_err(|e| format!("{method} {path} failed: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(STEP_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("{method} {path}: reading the body timed out"))?
            .map_err(|e| format!("{method} {path}: reading the body failed: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A plain GET: most reads need nothing more.
    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, None, &[]).await
    }

    /// Sends `json` with `Content-Type: application/json`, as the web page does.
    pub async fn json(&self, method: &str, path: &str, json: &Value) -> Reply {
        self.send(
            method,
            path,
            Some("application/json"),
            Some(serde_json::to_vec(json).unwrap()),
            &[],
        )
        .await
    }

    /// Creates a user and returns its JSON, for tests that need one to exist;
    /// panics unless the answer is 201.
    pub async fn create(&self, first: &str, last: &str) -> Value {
        let reply = self
            .json(
                "POST",
                "/api/users/",
                &serde_json::json!({"first_name": first, "last_name": last}),
            )
            .await;
        assert_eq!(reply.status, 201, "creating a user: {:?}", reply.body);
        reply.json()
    }

    /// PATCHes a user's first name and returns its JSON: the smallest write that
    /// makes an event; panics unless the answer is 200.
    pub async fn rename(&self, id: i64, first: &str) -> Value {
        let reply = self
            .json(
                "PATCH",
                &format!("/api/users/{id}/"),
                &serde_json::json!({"first_name": first}),
            )
            .await;
        assert_eq!(reply.status, 200, "renaming a user: {:?}", reply.body);
        reply.json()
    }

    /// Waits (bounded) until `/readyz` answers 200 with every check ok: a
    /// gateway listens before it has reached the user-service, and a test must
    /// not race that.
    pub async fn wait_ready(&self) {
        eventually(
            Poll::within(START_TIMEOUT).every(Duration::from_millis(50)),
            "the gateway to become ready",
            async || {
                let reply = self.get("/readyz").await;
                if reply.status == 200 && reply.json()["status"] == "ok" {
                    Ok(())
                } else {
                    Err(format!("{} {:?}", reply.status, reply.body))
                }
            },
        )
        .await;
    }
}
