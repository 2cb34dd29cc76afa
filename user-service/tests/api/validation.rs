use tonic::Code;
use tonic_types::StatusExt;
use users_proto::v1 as pb;

use crate::helpers::{TestApp, expect_code, rename_first, spawn_app, user};

/// The (field, description) pairs of an INVALID_ARGUMENT status, in order.
fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

/// A create request's two names and the violations it must get.
type CreateCase<'a> = (Option<&'a str>, Option<&'a str>, Vec<(&'a str, &'a str)>);

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(f, d)| (f.to_string(), d.to_string()))
        .collect()
}

async fn create_error(
    app: &TestApp,
    first: Option<&str>,
    last: Option<&str>,
) -> Vec<(String, String)> {
    let result = app
        .client
        .clone()
        .create_user(pb::CreateUserRequest {
            validate_only: false,
            user: Some(user(first, last)),
        })
        .await;
    violations(&expect_code(result, Code::InvalidArgument))
}

#[tokio::test]
async fn create_reports_every_rule_in_drf_words() {
    let app = spawn_app().await;
    let long = "x".repeat(101);
    let long_with_nul = format!("{}\0", "y".repeat(100));
    let cases: Vec<CreateCase> = vec![
        (
            None,
            None,
            vec![
                ("first_name", "This field is required."),
                ("last_name", "This field is required."),
            ],
        ),
        (
            Some("A"),
            None,
            vec![("last_name", "This field is required.")],
        ),
        (
            Some(""),
            Some("B"),
            vec![("first_name", "This field may not be blank.")],
        ),
        (
            Some("   "),
            Some("B"),
            vec![("first_name", "This field may not be blank.")],
        ),
        (
            Some(&long),
            Some("B"),
            vec![(
                "first_name",
                "Ensure this field has no more than 100 characters.",
            )],
        ),
        (
            Some("a\0b"),
            Some("B"),
            vec![("first_name", "Null characters are not allowed.")],
        ),
        (
            Some(""),
            Some(&long),
            vec![
                ("first_name", "This field may not be blank."),
                (
                    "last_name",
                    "Ensure this field has no more than 100 characters.",
                ),
            ],
        ),
        (
            Some("A"),
            Some(&long_with_nul),
            vec![
                (
                    "last_name",
                    "Ensure this field has no more than 100 characters.",
                ),
                ("last_name", "Null characters are not allowed."),
            ],
        ),
    ];

    for (first, last, expected) in cases {
        assert_eq!(
            create_error(&app, first, last).await,
            pairs(&expected),
            "{first:?} {last:?}"
        );
    }
}

#[tokio::test]
async fn create_without_a_user_requires_both_names() {
    let app = spawn_app().await;

    let result = app
        .client
        .clone()
        .create_user(pb::CreateUserRequest {
            user: None,
            validate_only: false,
        })
        .await;

    assert_eq!(
        violations(&expect_code(result, Code::InvalidArgument)),
        pairs(&[
            ("first_name", "This field is required."),
            ("last_name", "This field is required.")
        ])
    );
}

#[tokio::test]
async fn a_hundred_multibyte_characters_are_accepted() {
    let app = spawn_app().await;
    let name = "é".repeat(100);

    let created = app.create(&name, "B").await;

    assert_eq!(created.first_name.as_deref(), Some(name.as_str()));
}

#[tokio::test]
async fn refused_creates_store_nothing() {
    let app = spawn_app().await;
    create_error(&app, Some(""), Some("B")).await;

    let page = app
        .client
        .clone()
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();

    assert_eq!(page.into_inner().total_size, 0);
    assert_eq!(app.store.head(), 0);
}

#[tokio::test]
async fn an_update_to_a_blank_name_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let mut client = app.client.clone();

    let result = client.update_user(rename_first(created.id, " ")).await;

    assert_eq!(
        violations(&expect_code(result, Code::InvalidArgument)),
        pairs(&[("first_name", "This field may not be blank.")])
    );
    let current = client
        .get_user(pb::GetUserRequest { id: created.id })
        .await
        .unwrap();
    assert_eq!(current.into_inner(), created);
}

#[tokio::test]
async fn a_full_update_requires_both_names() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;

    let result = app
        .client
        .clone()
        .update_user(pb::UpdateUserRequest {
            validate_only: false,
            user: Some(pb::User {
                id: created.id,
                ..user(Some("Ada"), None)
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["*".into()],
            }),
            expected_version: None,
        })
        .await;

    assert_eq!(
        violations(&expect_code(result, Code::InvalidArgument)),
        pairs(&[("last_name", "This field is required.")])
    );
}

#[tokio::test]
async fn an_unknown_mask_path_is_refused() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let mut request = rename_first(created.id, "X");
    request
        .update_mask
        .as_mut()
        .unwrap()
        .paths
        .push("email".into());

    let result = app.client.clone().update_user(request).await;

    let found = violations(&expect_code(result, Code::InvalidArgument));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "update_mask");
    assert!(found[0].1.contains("email"), "{found:?}");
}

#[tokio::test]
async fn output_only_mask_paths_are_ignored() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let mut request = rename_first(created.id, "Augusta");
    request
        .update_mask
        .as_mut()
        .unwrap()
        .paths
        .push("version".into());
    request.user.as_mut().unwrap().version = 99;

    let updated = app
        .client
        .clone()
        .update_user(request)
        .await
        .unwrap()
        .into_inner();

    assert_eq!(updated.version, 2);
}

#[tokio::test]
async fn an_update_of_a_missing_user_is_not_found_even_with_bad_values() {
    let app = spawn_app().await;

    let result = app
        .client
        .clone()
        .update_user(rename_first(987_654, ""))
        .await;

    expect_code(result, Code::NotFound);
}

#[tokio::test]
async fn an_update_without_a_user_is_refused() {
    let app = spawn_app().await;

    let result = app
        .client
        .clone()
        .update_user(pb::UpdateUserRequest::default())
        .await;

    assert_eq!(
        violations(&expect_code(result, Code::InvalidArgument)),
        pairs(&[("user", "This field is required.")])
    );
}
