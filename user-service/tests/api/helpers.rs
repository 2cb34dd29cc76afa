//! `spawn_app`: a user-service on a free port with its own database file. Redis,
//! ports and bounded waits come from `test_support`, as the end-to-end tests'.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, transport::Channel};
use user_service::{Application, Config, store::Store};
use users_proto::v1::{self as pb, user_service_client::UserServiceClient};

/// A running user-service and what a test needs to reach and stop it. It runs
/// in the test's own process (not as a binary) so a test can also look at its
/// store directly.
pub struct TestApp {
    /// Where it listens (port 0 chosen by the kernel), for clients of a test's own.
    pub addr: SocketAddr,
    /// The metrics port, when the config asked for one.
    pub metrics_addr: Option<SocketAddr>,
    /// A connected client, cheap to clone, for tests that need just one.
    pub client: UserServiceClient<Channel>,
    /// The app's store, to check what a call wrote (seq, epoch, the published
    /// cursor) or to set up what no RPC can.
    pub store: Arc<Store>,
    /// The config it runs with, to start it again on the same database.
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    /// Keeps the database folder alive as long as the app.
    pub dir: Arc<tempfile::TempDir>,
}

impl TestApp {
    /// Sends the shutdown signal and waits for the server to stop.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("the server stops within its grace period")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    /// A channel of its own to the server, for the other services it hosts.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("a valid URI")
            .connect()
            .await
            .expect("connecting to the test server")
    }

    /// A fresh client on its own connection.
    pub async fn new_client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connecting to the test server")
    }

    /// Creates a user, panicking on failure.
    pub async fn create(&self, first: &str, last: &str) -> pb::User {
        self.client
            .clone()
            .create_user(pb::CreateUserRequest {
                validate_only: false,
                user: Some(user(Some(first), Some(last))),
            })
            .await
            .expect("create succeeds")
            .into_inner()
    }

    /// Sets user `id`'s first name, panicking on failure.
    pub async fn rename(&self, id: i64, first: &str) -> pb::User {
        self.client
            .clone()
            .update_user(rename_first(id, first))
            .await
            .expect("update succeeds")
            .into_inner()
    }
}

/// A user with only the names set.
pub fn user(first: Option<&str>, last: Option<&str>) -> pb::User {
    pb::User {
        first_name: first.map(str::to_owned),
        last_name: last.map(str::to_owned),
        ..Default::default()
    }
}

/// An update of user `id` that sets `first_name` through the mask.
pub fn rename_first(id: i64, first: &str) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        validate_only: false,
        user: Some(pb::User {
            id,
            ..user(Some(first), None)
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["first_name".into()],
        }),
        expected_version: None,
    }
}

/// Starts a user-service on a fresh database in a new temporary folder.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a user-service on a fresh database, with `adjust` applied to its config.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
    let url = match TestBackend::chosen() {
        TestBackend::Sqlite => sqlite_url(&dir),
        TestBackend::Postgres => test_support::shared_database("api")
            .await
            .expect("a PostgreSQL database for the test"),
    };
    let mut config = Config::for_tests(url);
    adjust(&mut config);
    spawn_app_in(dir, config).await
}

/// Starts a user-service on a fresh SQLite file whichever backend the suite
/// runs on: for the tests of what only SQLite has (its WAL, its file).
pub async fn spawn_sqlite_app() -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("a temporary folder"));
    let config = Config::for_tests(sqlite_url(&dir));
    spawn_app_in(dir, config).await
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("users.db").display())
}

/// The engine the suite's apps run on: the same tests run on both, chosen by
/// `USER_SERVICE_TEST_BACKEND` (`sqlite`, the default, or `postgres`: a
/// PostgreSQL server this test process starts, a fresh database per app).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// A fresh SQLite file per app.
    Sqlite,
    /// A fresh database per app on a shared PostgreSQL server.
    Postgres,
}

impl TestBackend {
    /// The backend the environment asks for; anything but the two names is a
    /// mistake worth stopping for.
    pub fn chosen() -> TestBackend {
        match std::env::var("USER_SERVICE_TEST_BACKEND").as_deref() {
            Err(_) | Ok("sqlite") => TestBackend::Sqlite,
            Ok("postgres") => TestBackend::Postgres,
            Ok(other) => panic!("USER_SERVICE_TEST_BACKEND={other:?}: use sqlite or postgres"),
        }
    }
}

/// Starts a user-service with exactly `config`, keeping `dir` alive with it.
pub async fn spawn_app_in(dir: Arc<tempfile::TempDir>, config: Config) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("the application builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let store = app.store();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = UserServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connecting to the test server");
    TestApp {
        addr,
        metrics_addr,
        client,
        store,
        config,
        shutdown: Some(tx),
        handle: Some(handle),
        dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts a call failed with `code` and returns the status for further checks.
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}
