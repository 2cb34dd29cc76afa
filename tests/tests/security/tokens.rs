//! Tokens: every kind of bad token gets 401 and changes nothing, each key
//! algorithm accepts its own keys only, and absurd claim values are refused.

use super::*;

#[tokio::test]
async fn every_kind_of_bad_token_gets_401_and_changes_nothing() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let path = format!("/api/users/{}/", user["id"]);
    let now = credentials::now();
    let other_secret = credentials::random_secret();
    let mut wrong_signature = claims("mallory");
    wrong_signature["aud"] = json!(AUDIENCE);
    let bad = [
        (
            "expired",
            stack.token("mallory", json!({"exp": now - 3600})),
        ),
        (
            "not yet valid",
            stack.token("mallory", json!({"nbf": now + 3600})),
        ),
        ("wrong signature", hs256(&other_secret, &wrong_signature)),
        ("alg none", credentials::unsigned(&wrong_signature)),
        (
            "wrong audience",
            stack.token("mallory", json!({"aud": "another-api"})),
        ),
        ("no exp", {
            let mut claims = wrong_signature.clone();
            claims.as_object_mut().unwrap().remove("exp");
            hs256(&stack.secret, &claims)
        }),
        ("garbage", "not.a.jwt".to_owned()),
    ];

    let missing = stack
        .call(None, "PATCH", &path, Some(json!({"first_name": "Eve"})))
        .await;
    assert_detail(&missing, 401, NOT_PROVIDED);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );
    assert_detail(
        &stack.call(None, "GET", &path, None).await,
        401,
        NOT_PROVIDED,
    );
    for (name, token) in &bad {
        for (method, body) in [
            ("PATCH", Some(json!({"first_name": "Eve"}))),
            ("DELETE", None),
            ("GET", None),
        ] {
            let reply = stack.call(Some(token), method, &path, body).await;
            assert_eq!(reply.status, 401, "{name} {method}: {:?}", reply.body);
            assert_eq!(reply.json()["detail"], INVALID, "{name}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"api\"")
            );
        }
        assert_eq!(
            Socket::try_connect(stack.gateway.addr, &format!("token={token}"), &[])
                .await
                .err(),
            Some(401),
            "{name} on the socket"
        );
    }
    assert_eq!(
        Socket::try_connect(stack.gateway.addr, "", &[]).await.err(),
        Some(401),
        "no token on the socket"
    );
    assert_eq!(stack.current(user["id"].as_i64().unwrap()).await, user);
}

/// A ready gateway verifying `algorithm` tokens with the PEM `public_key`, which
/// lives in the returned folder.
async fn public_key_gateway(
    users: &UserService,
    algorithm: &str,
    public_key: &str,
) -> (Process, Http, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let public_path = dir.path().join("jwt.pub.pem");
    std::fs::write(&public_path, public_key).unwrap();
    let gateway = start_gateway(
        &users.url(),
        &[
            "--auth".into(),
            "jwt".into(),
            "--jwt-algorithm".into(),
            algorithm.into(),
            "--jwt-public-key".into(),
            public_path.display().to_string(),
        ],
    )
    .await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    (gateway, http, dir)
}

#[tokio::test]
async fn an_hs256_token_made_with_the_rs256_public_key_is_refused() {
    let users = UserService::start(&[]).await;
    let (private_pem, public_pem) = credentials::rsa_keys();
    let (_gateway, http, _key_dir) = public_key_gateway(&users, "RS256", public_pem).await;
    let get = |token: String| {
        let http = http.clone();
        async move {
            let bearer = format!("Bearer {token}");
            http.send(
                "GET",
                "/api/users/",
                None,
                None,
                &[("authorization", &bearer)],
            )
            .await
        }
    };

    let good = credentials::sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
        &claims("alice"),
    );
    assert_eq!(get(good).await.status, 200, "a real RS256 token");
    let confused = hs256(public_pem, &claims("mallory"));
    assert_detail(&get(confused).await, 401, INVALID);
    let (ec_private, _) = credentials::ec_keys();
    let es256 = credentials::sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(ec_private.as_bytes()).unwrap(),
        &claims("mallory"),
    );
    assert_detail(&get(es256).await, 401, INVALID);
    assert_detail(
        &get(credentials::unsigned(&claims("mallory"))).await,
        401,
        INVALID,
    );
}

#[tokio::test]
async fn an_es256_gateway_accepts_its_own_key_only() {
    let users = UserService::start(&[]).await;
    let (private_pem, public_pem) = credentials::ec_keys();
    let (other_private, _) = credentials::ec_keys();
    let (_gateway, http, _key_dir) = public_key_gateway(&users, "ES256", &public_pem).await;
    for (key, expected) in [(private_pem, 200), (other_private, 401)] {
        let token = credentials::sign(
            Algorithm::ES256,
            &EncodingKey::from_ec_pem(key.as_bytes()).unwrap(),
            &claims("alice"),
        );
        let bearer = format!("Bearer {token}");
        let reply = http
            .send(
                "GET",
                "/api/users/",
                None,
                None,
                &[("authorization", &bearer)],
            )
            .await;
        assert_eq!(reply.status, expected);
    }
    let confused = hs256(&public_pem, &claims("mallory"));
    let bearer = format!("Bearer {confused}");
    let reply = http
        .send(
            "GET",
            "/api/users/",
            None,
            None,
            &[("authorization", &bearer)],
        )
        .await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn absurd_claim_values_get_401_and_the_gateway_keeps_serving() {
    let stack = Stack::start(&[]).await;
    for extra in [
        json!({"exp": u64::MAX}),
        json!({"exp": -1}),
        json!({"exp": 1e300}),
        json!({"nbf": u64::MAX}),
        json!({"iat": i64::MIN}),
        json!({"fields": null}),
        json!({"fields": "first_name"}),
    ] {
        let token = stack.token("absurd", extra.clone());
        let reply = stack.call(Some(&token), "GET", "/api/users/", None).await;
        assert_detail(&reply, 401, INVALID);
        let admin = stack.token("admin", json!({}));
        let after = stack.call(Some(&admin), "GET", "/api/users/", None).await;
        assert_eq!(after.status, 200, "still serving after {extra}");
    }
}
