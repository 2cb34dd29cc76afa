use users_proto::v1 as pb;

use crate::helpers::{spawn_app, spawn_app_in};

#[tokio::test]
async fn a_restart_on_the_same_file_keeps_users_seq_and_epoch() {
    let app = spawn_app().await;
    let ada = app.create("Ada", "Lovelace").await;
    app.rename(ada.id, "Augusta").await;
    let (epoch, head) = (app.store.epoch().to_owned(), app.store.head());
    let (dir, config) = (app.dir.clone(), app.config.clone());
    app.stop().await;

    let again = spawn_app_in(dir, config).await;
    let kept = again
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: ada.id })
        .await
        .unwrap()
        .into_inner();
    let next = again.create("Grace", "Hopper").await;

    assert_eq!(kept.first_name.as_deref(), Some("Augusta"));
    assert_eq!(kept.version, 2);
    assert_eq!(again.store.epoch(), epoch);
    assert_eq!(again.store.head(), head + 1);
    assert!(next.id > ada.id);
}

#[tokio::test]
async fn two_databases_have_different_epochs() {
    let one = spawn_app().await;
    let two = spawn_app().await;

    assert_ne!(one.store.epoch(), two.store.epoch());
    assert_eq!(one.store.epoch().len(), 32);
}

#[tokio::test]
async fn the_default_database_folder_is_created_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/users.db");

    let url = format!("sqlite://{}", path.display());
    let store =
        user_service::store::Store::open(&url, user_service::store::SqliteSettings::default())
            .await
            .expect("the store opens");

    assert!(path.exists());
    assert_eq!(store.head(), 0);
}
