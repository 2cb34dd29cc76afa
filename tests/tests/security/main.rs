//! The security suite against the real binaries: bad tokens of every kind get 401
//! and change nothing; field-limited and read-only tokens get 403 and change
//! nothing; every rate limit answers 429 with Retry-After and serves again after
//! it; socket caps, foreign origins, oversized bodies, frames, queries and heads
//! are refused; the user-service refuses RPCs without the service token; TLS works
//! on both paths. Every key, secret and certificate is made here, at test time.

use std::time::Duration;

use e2e::{
    Ended, Http, Poll, Process, Reply, STEP_TIMEOUT, Socket, UserService,
    credentials::{self, Pki, claims, hs256},
    eventually, start_gateway,
};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use users_proto::v1::{self as pb, user_service_client::UserServiceClient};

const NOT_PROVIDED: &str = "Authentication credentials were not provided.";
const INVALID: &str = "Given token not valid for any token type";
const FORBIDDEN: &str = "You do not have permission to perform this action.";
const AUDIENCE: &str = "users-api";

/// A user-service requiring a service token, and a gateway with JWT auth in front
/// of it.
struct Stack {
    users: UserService,
    gateway: Process,
    http: Http,
    secret: String,
    service_token: String,
}

impl Stack {
    /// HS256 with audience `users-api`, and `extra` gateway flags.
    async fn start(extra: &[&str]) -> Stack {
        let secret = credentials::random_secret();
        let service_token = credentials::random_secret();
        let users = UserService::start(&["--service-token".into(), service_token.clone()]).await;
        let mut flags: Vec<String> = [
            "--auth",
            "jwt",
            "--jwt-secret",
            &secret,
            "--jwt-audience",
            AUDIENCE,
            "--service-token",
            &service_token,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        flags.extend(extra.iter().map(|s| (*s).to_owned()));
        let gateway = start_gateway(&users.url(), &flags).await;
        let http = Http::new(gateway.addr);
        http.wait_ready().await;
        Stack {
            users,
            gateway,
            http,
            secret,
            service_token,
        }
    }

    /// A token for `sub` with `extra` claims merged in.
    fn token(&self, sub: &str, extra: Value) -> String {
        let mut claims = claims(sub);
        claims["aud"] = json!(AUDIENCE);
        for (key, value) in extra.as_object().unwrap() {
            claims[key] = value.clone();
        }
        hs256(&self.secret, &claims)
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let content_type = body.as_ref().map(|_| "application/json");
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.http
            .send(method, path, content_type, body, &headers)
            .await
    }

    /// Creates a user with a full token; its JSON.
    async fn create(&self) -> Value {
        let admin = self.token("admin", json!({}));
        let reply = self
            .call(
                Some(&admin),
                "POST",
                "/api/users/",
                Some(json!({"first_name": "Ada", "last_name": "Lovelace"})),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        reply.json()
    }

    /// The user as it is now, read with a full token.
    async fn current(&self, id: i64) -> Value {
        let admin = self.token("admin", json!({}));
        let reply = self
            .call(Some(&admin), "GET", &format!("/api/users/{id}/"), None)
            .await;
        assert_eq!(reply.status, 200);
        reply.json()
    }
}

fn assert_detail(reply: &Reply, status: u16, detail: &str) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.json(), json!({ "detail": detail }));
}

mod browsers;
mod limits;
mod permissions;
mod tokens;
mod transport;
