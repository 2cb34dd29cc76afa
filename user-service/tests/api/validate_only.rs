//! `validate_only` (AIP-163): a write checked exactly as it would be, in the same
//! order (NOT_FOUND, then FAILED_PRECONDITION, then INVALID_ARGUMENT), with
//! nothing written and no event recorded. The gateway relies on it to answer
//! bodies it cannot send in DRF's order.

use tonic::Code;
use users_proto::{metadata, v1 as pb};

use crate::helpers::{expect_code, spawn_app, user};

/// An update of both names of user `id`, checked only.
fn check_update(id: i64, first: &str, last: &str, version: Option<i64>) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User {
            id,
            ..user(Some(first), Some(last))
        }),
        update_mask: None,
        expected_version: version,
        validate_only: true,
    }
}

/// The seq of the event a real write recorded.
fn seq_of<T>(answer: &tonic::Response<T>) -> u64 {
    metadata::seq(answer.metadata(), metadata::SEQ).expect("a write's seq")
}

#[tokio::test]
async fn a_checked_update_refuses_in_drfs_order_and_writes_nothing() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let created = client
        .create_user(pb::CreateUserRequest {
            user: Some(user(Some("Ada"), Some("Lovelace"))),
            validate_only: false,
        })
        .await
        .unwrap();
    let first_seq = seq_of(&created);
    let ada = created.into_inner();

    // A missing user comes first, even with a stale version and a blank name.
    let missing = client
        .update_user(check_update(987_654, "", "x", Some(99)))
        .await;
    expect_code(missing, Code::NotFound);
    // Then the version, even with a blank name.
    let stale = client
        .update_user(check_update(ada.id, "", "x", Some(ada.version + 1)))
        .await;
    expect_code(stale, Code::FailedPrecondition);
    // Then the values.
    let blank = client
        .update_user(check_update(ada.id, " ", "x", Some(ada.version)))
        .await;
    let status = expect_code(blank, Code::InvalidArgument);
    assert!(status.message().contains("first_name"), "{status:?}");
    // A valid one previews the user as the update would leave it.
    let preview = client
        .update_user(check_update(ada.id, " Grace ", "Hopper", Some(ada.version)))
        .await
        .unwrap();
    assert_eq!(metadata::seq(preview.metadata(), metadata::SEQ), None);
    let preview = preview.into_inner();
    assert_eq!(preview.first_name.as_deref(), Some("Grace"));
    assert_eq!(preview.last_name.as_deref(), Some("Hopper"));
    assert_eq!(preview.version, ada.version, "a preview is no new version");

    let stored = client
        .get_user(pb::GetUserRequest { id: ada.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, ada, "nothing was written");
    let renamed = client
        .update_user(pb::UpdateUserRequest {
            validate_only: false,
            ..check_update(ada.id, "Grace", "Hopper", Some(ada.version))
        })
        .await
        .unwrap();
    assert_eq!(seq_of(&renamed), first_seq + 1, "no event was recorded");
    assert_eq!(renamed.into_inner().version, ada.version + 1);
}

#[tokio::test]
async fn a_checked_create_refuses_as_a_create_would_and_creates_nothing() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let check = |first: &str, last: &str| pb::CreateUserRequest {
        user: Some(user(Some(first), Some(last))),
        validate_only: true,
    };
    let blank = client.create_user(check("", "Lovelace")).await;
    let status = expect_code(blank, Code::InvalidArgument);
    assert!(status.message().contains("first_name"), "{status:?}");
    let preview = client
        .create_user(check(" Ada ", "Lovelace"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.id, 0, "a preview has no id");
    assert_eq!(preview.first_name.as_deref(), Some("Ada"));

    let listed = client
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 0, "nothing was created");
    let created = client
        .create_user(pb::CreateUserRequest {
            validate_only: false,
            ..check("Ada", "Lovelace")
        })
        .await
        .unwrap();
    assert_eq!(seq_of(&created), 1, "no event was recorded before");
}
