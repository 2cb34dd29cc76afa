//! Redis with ACL users, as a deployment that does not trust every pod runs it:
//! the user-service's `relay` user may only append to the event stream (through
//! the relay's script), the gateways' `gateway` user may only read it and use
//! the presence channel. Both services get their password from a file. The
//! gateway's user cannot forge an event with XADD.

use e2e::{Http, Redis, Socket, UserService, start_gateway, unthrottled};
use serde_json::json;

#[tokio::test]
async fn acl_users_from_password_files_work_and_the_gateways_user_cannot_forge_events() {
    let redis = Redis::start().await;
    let setup = redis
        .say(&[
            // The relay: its script reads the stream's top, appends, and may
            // replace a foreign stream.
            &[
                "ACL",
                "SETUSER",
                "relay",
                "on",
                ">relay-password-0123456789",
                "resetkeys",
                "~users:events",
                "resetchannels",
                "+@connection",
                "+eval",
                "+evalsha",
                "+xadd",
                "+xrevrange",
                "+del",
            ],
            // The gateways: read the stream, talk presence.
            &[
                "ACL",
                "SETUSER",
                "gateway",
                "on",
                ">gateway-password-0123456789",
                "resetkeys",
                "~users:events",
                "resetchannels",
                "&users:events:presence",
                "+@connection",
                "+xread",
                "+xrange",
                "+xrevrange",
                "+publish",
                "+subscribe",
                "+unsubscribe",
            ],
            &[
                "ACL",
                "SETUSER",
                "admin",
                "on",
                ">admin-password-0123456789",
                "~*",
                "&*",
                "+@all",
            ],
            &["ACL", "SETUSER", "default", "off"],
        ])
        .await;
    assert!(setup.iter().all(|r| r == "+OK"), "{setup:?}");

    let dir = tempfile::tempdir().unwrap();
    let relay_password = dir.path().join("relay");
    let gateway_password = dir.path().join("gateway");
    std::fs::write(&relay_password, "relay-password-0123456789\n").unwrap();
    std::fs::write(&gateway_password, "gateway-password-0123456789\n").unwrap();
    let users = UserService::start(&[
        "--redis-url".into(),
        format!("redis://relay@127.0.0.1:{}", redis.port),
        "--redis-password-file".into(),
        relay_password.display().to_string(),
    ])
    .await;
    let mut flags = unthrottled();
    flags.extend([
        "--redis-url".into(),
        format!("redis://gateway@127.0.0.1:{}", redis.port),
        "--redis-password-file".into(),
        gateway_password.display().to_string(),
    ]);
    let gateway = start_gateway(&users.url(), &flags).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let ready = http.get("/readyz").await.json();
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");

    // Events go user-service → Redis (as relay) → gateway (as gateway) → socket,
    // and presence through the channel the gateway user may use.
    let created = http.create("Ada", "Lovelace").await;
    let id = created["id"].as_i64().unwrap();
    let mut socket = Socket::connect(gateway.addr, &format!("users={id}")).await;
    assert_eq!(socket.frame().await["type"], "hello");
    http.rename(id, "Augusta").await;
    socket
        .send_text(&json!({ "type": "presence", "user": id, "meta": { "window": 1 } }).to_string())
        .await;
    let mut saw_update = false;
    let mut saw_presence = false;
    while !(saw_update && saw_presence) {
        let frame = socket.frame().await;
        saw_update |=
            frame["type"] == "user_update" && frame["data"]["user"]["first_name"] == "Augusta";
        saw_presence |= frame["type"] == "presence"
            && frame["members"].as_array().is_some_and(|m| m.len() == 1);
    }

    // What a compromised gateway pod could try: forge an event, or drop the stream.
    let forged = redis
        .say(&[
            &["AUTH", "gateway", "gateway-password-0123456789"],
            &["XADD", "users:events", "*", "epoch", "x", "event", "forged"],
            &["DEL", "users:events"],
            &["PUBLISH", "users:events:presence", "{}"],
        ])
        .await;
    assert_eq!(forged[0], "+OK");
    assert!(
        forged[1].starts_with("-NOPERM"),
        "XADD as the gateway user: {forged:?}"
    );
    assert!(
        forged[2].starts_with("-NOPERM"),
        "DEL as the gateway user: {forged:?}"
    );
    assert!(
        forged[3].starts_with(':'),
        "presence is the gateway user's to publish: {forged:?}"
    );
    let anonymous = redis.say(&[&["XADD", "users:events", "*", "a", "b"]]).await;
    assert!(anonymous[0].starts_with("-NOAUTH"), "{anonymous:?}");
}
