//! Permissions: field-limited, read-only and write-only tokens do what they
//! may and nothing else.

use super::*;

#[tokio::test]
async fn a_field_limited_token_writes_its_field_and_nothing_else() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let first_only = stack.token("window-1", json!({"fields": ["first_name"]}));

    let ok = stack
        .call(
            Some(&first_only),
            "PATCH",
            &path,
            Some(json!({"first_name": "Ada B."})),
        )
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let before = stack.current(id).await;
    assert_eq!(before["first_name"], "Ada B.");

    for (method, body) in [
        ("PATCH", Some(json!({"last_name": "Byron"}))),
        (
            "PATCH",
            Some(json!({"first_name": "X", "last_name": "Byron"})),
        ),
        (
            "PUT",
            Some(json!({"first_name": "Ada", "last_name": "Byron"})),
        ),
        ("DELETE", None),
    ] {
        let reply = stack.call(Some(&first_only), method, &path, body).await;
        assert_detail(&reply, 403, FORBIDDEN);
    }
    let create = stack
        .call(
            Some(&first_only),
            "POST",
            "/api/users/",
            Some(json!({"first_name": "A", "last_name": "B"})),
        )
        .await;
    assert_detail(&create, 403, FORBIDDEN);
    assert_eq!(stack.current(id).await, before, "nothing changed");
    let list = stack
        .call(
            Some(&stack.token("admin", json!({}))),
            "GET",
            "/api/users/",
            None,
        )
        .await;
    assert_eq!(list.json().as_array().unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn a_read_only_token_reads_and_listens_but_never_writes() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let reader = stack.token("reader", json!({"scope": "users:read"}));

    assert_eq!(
        stack.call(Some(&reader), "GET", &path, None).await.status,
        200
    );
    for (method, body) in [
        ("PATCH", Some(json!({"first_name": "Eve"}))),
        ("PUT", Some(json!({"first_name": "Eve", "last_name": "X"}))),
        ("DELETE", None),
    ] {
        assert_detail(
            &stack.call(Some(&reader), method, &path, body).await,
            403,
            FORBIDDEN,
        );
    }
    let (mut socket, _) = Socket::try_connect(stack.gateway.addr, &format!("token={reader}"), &[])
        .await
        .expect("a reader may listen");
    assert_eq!(socket.frame().await["type"], "hello");
    assert_eq!(stack.current(id).await, user, "nothing changed");

    let writer_only = stack.token("writer", json!({"scope": "users:write"}));
    assert_detail(
        &stack.call(Some(&writer_only), "GET", &path, None).await,
        403,
        FORBIDDEN,
    );
    assert_eq!(
        Socket::try_connect(stack.gateway.addr, &format!("token={writer_only}"), &[])
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn a_write_only_token_gets_the_writes_status_and_never_the_record() {
    let stack = Stack::start(&[]).await;
    let user = stack.create().await;
    let id = user["id"].as_i64().unwrap();
    let path = format!("/api/users/{id}/");
    let writer = stack.token("writer", json!({"scope": "users:write"}));

    for body in [json!({}), json!({"first_name": "Eve"})] {
        let reply = stack.call(Some(&writer), "PATCH", &path, Some(body)).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_empty(), "no record: {:?}", reply.body);
        assert!(reply.header("etag").is_some());
    }
    let created = stack
        .call(
            Some(&writer),
            "POST",
            "/api/users/",
            Some(json!({"first_name": "New", "last_name": "User"})),
        )
        .await;
    assert_eq!(created.status, 201);
    assert!(created.body.is_empty(), "no record: {:?}", created.body);
    assert!(created.header("x-users-seq").is_some());
    assert_eq!(
        stack.current(id).await["first_name"],
        "Eve",
        "the write applied"
    );
}
