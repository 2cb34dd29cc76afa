use tonic::Code;
use users_proto::v1 as pb;

use crate::helpers::{expect_code, rename_first, spawn_app, user};

#[tokio::test]
async fn a_created_user_has_trimmed_names_version_1_and_equal_timestamps() {
    let app = spawn_app().await;

    let created = app.create("  Grace ", "\tHopper\n").await;

    assert!(created.id > 0);
    assert_eq!(created.first_name.as_deref(), Some("Grace"));
    assert_eq!(created.last_name.as_deref(), Some("Hopper"));
    assert_eq!(created.version, 1);
    assert!(created.create_time.is_some());
    assert_eq!(created.create_time, created.update_time);
}

#[tokio::test]
async fn get_returns_what_create_returned() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;

    let fetched = app
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: created.id })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(fetched, created);
}

#[tokio::test]
async fn a_missing_user_is_not_found_for_get_update_and_delete() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    expect_code(
        client.get_user(pb::GetUserRequest { id: 987_654 }).await,
        Code::NotFound,
    );
    expect_code(
        client.get_user(pb::GetUserRequest { id: -1 }).await,
        Code::NotFound,
    );
    expect_code(
        client.update_user(rename_first(987_654, "x")).await,
        Code::NotFound,
    );
    expect_code(
        client
            .delete_user(pb::DeleteUserRequest {
                id: 987_654,
                expected_version: None,
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn an_update_changes_only_the_masked_field_and_bumps_the_version() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;

    let updated = app.rename(created.id, " Augusta ").await;

    assert_eq!(updated.first_name.as_deref(), Some("Augusta"));
    assert_eq!(updated.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(updated.version, 2);
    assert_eq!(updated.create_time, created.create_time);
    let micros = |t: Option<prost_types::Timestamp>| {
        let t = t.unwrap();
        t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)
    };
    assert!(micros(updated.update_time) > micros(created.update_time));
}

#[tokio::test]
async fn a_value_outside_the_mask_is_ignored() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let mut request = rename_first(created.id, "Augusta");
    request.user.as_mut().unwrap().last_name = Some("King".into());

    let updated = app
        .client
        .clone()
        .update_user(request)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(updated.last_name.as_deref(), Some("Lovelace"));
}

#[tokio::test]
async fn an_update_without_a_mask_changes_the_fields_that_are_set() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;

    let updated = app
        .client
        .clone()
        .update_user(pb::UpdateUserRequest {
            validate_only: false,
            user: Some(pb::User {
                id: created.id,
                ..user(None, Some("King"))
            }),
            update_mask: None,
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(updated.first_name.as_deref(), Some("Ada"));
    assert_eq!(updated.last_name.as_deref(), Some("King"));
}

#[tokio::test]
async fn an_update_that_changes_nothing_makes_no_version_and_no_event() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let head_before = app.store.head();

    let same = app.rename(created.id, "  Ada  ").await;

    assert_eq!(same, created);
    assert_eq!(app.store.head(), head_before);
}

#[tokio::test]
async fn a_stale_expected_version_fails_the_precondition_and_changes_nothing() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let created = app.create("Ada", "Lovelace").await;
    client
        .update_user(rename_first(created.id, "Augusta"))
        .await
        .unwrap();

    let mut stale = rename_first(created.id, "Stale");
    stale.expected_version = Some(1);
    expect_code(client.update_user(stale).await, Code::FailedPrecondition);
    expect_code(
        client
            .delete_user(pb::DeleteUserRequest {
                id: created.id,
                expected_version: Some(1),
            })
            .await,
        Code::FailedPrecondition,
    );

    let current = client
        .get_user(pb::GetUserRequest { id: created.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.first_name.as_deref(), Some("Augusta"));
    assert_eq!(current.version, 2);
}

#[tokio::test]
async fn the_current_expected_version_lets_update_and_delete_through() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let created = app.create("Ada", "Lovelace").await;

    let mut request = rename_first(created.id, "Augusta");
    request.expected_version = Some(1);
    let updated = client.update_user(request).await.unwrap().into_inner();
    client
        .delete_user(pb::DeleteUserRequest {
            id: created.id,
            expected_version: Some(updated.version),
        })
        .await
        .unwrap();

    expect_code(
        client.get_user(pb::GetUserRequest { id: created.id }).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn a_deleted_user_is_gone_and_a_second_delete_is_not_found() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let created = app.create("Ada", "Lovelace").await;

    client
        .delete_user(pb::DeleteUserRequest {
            id: created.id,
            expected_version: None,
        })
        .await
        .unwrap();

    expect_code(
        client.get_user(pb::GetUserRequest { id: created.id }).await,
        Code::NotFound,
    );
    expect_code(
        client
            .delete_user(pb::DeleteUserRequest {
                id: created.id,
                expected_version: None,
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn ids_are_never_reused_after_a_delete() {
    let app = spawn_app().await;
    let first = app.create("A", "B").await;
    app.client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: first.id,
            expected_version: None,
        })
        .await
        .unwrap();

    let second = app.create("C", "D").await;

    assert!(second.id > first.id);
}

#[tokio::test]
async fn list_pages_through_users_in_id_order_with_a_total() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create(&format!("U{i}"), "X").await.id);
    }
    let mut client = app.client.clone();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_users(pb::ListUsersRequest {
                page_size: 2,
                page_token: token,
                skip: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 5);
        seen.extend(page.users.iter().map(|u| u.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }

    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn list_skips_for_offset_paging() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(app.create(&format!("U{i}"), "X").await.id);
    }

    let page = app
        .client
        .clone()
        .list_users(pb::ListUsersRequest {
            page_size: 2,
            page_token: String::new(),
            skip: 1,
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        page.users.iter().map(|u| u.id).collect::<Vec<_>>(),
        ids[1..3]
    );
    assert!(!page.next_page_token.is_empty());
}

#[tokio::test]
async fn list_refuses_a_negative_page_size_a_negative_skip_and_a_forged_token() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    for (request, field) in [
        (
            pb::ListUsersRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListUsersRequest {
                skip: -1,
                ..Default::default()
            },
            "skip",
        ),
        (
            pb::ListUsersRequest {
                page_token: "garbage!".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ] {
        let status = expect_code(client.list_users(request).await, Code::InvalidArgument);
        let bad = tonic_types::StatusExt::get_details_bad_request(&status).expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, field);
    }
}

#[tokio::test]
async fn each_write_names_the_seq_of_its_event_and_a_write_that_changes_nothing_none() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let mut events = client
        .watch_users(pb::WatchUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seq_of = |metadata: &tonic::metadata::MetadataMap| {
        users_proto::metadata::seq(metadata, users_proto::metadata::SEQ)
    };

    let created = client
        .create_user(pb::CreateUserRequest {
            validate_only: false,
            user: Some(user(Some("Ada"), Some("Lovelace"))),
        })
        .await
        .unwrap();
    let id = created.get_ref().id;
    let updated = client
        .update_user(rename_first(id, "Augusta"))
        .await
        .unwrap();
    let unchanged = client
        .update_user(rename_first(id, "Augusta"))
        .await
        .unwrap();
    let deleted = client
        .delete_user(pb::DeleteUserRequest {
            id,
            expected_version: None,
        })
        .await
        .unwrap();

    let mut logged = Vec::new();
    for _ in 0..3 {
        let event = events.message().await.unwrap().expect("an event");
        logged.push((event.seq, event.action));
    }
    let answered = [
        (seq_of(created.metadata()), pb::Action::Create as i32),
        (seq_of(updated.metadata()), pb::Action::Update as i32),
        (seq_of(deleted.metadata()), pb::Action::Delete as i32),
    ];
    assert_eq!(
        answered
            .map(|(seq, action)| (seq.expect("a seq"), action))
            .to_vec(),
        logged
    );
    assert_eq!(seq_of(unchanged.metadata()), None, "no event, no seq");
}
