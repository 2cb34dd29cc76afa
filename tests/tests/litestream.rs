//! Backups with Litestream, as the SQLite deployment runs them
//! (deploy/k8s/user-service.yaml and litestream.yml): the real user-service with
//! the manifest's `WAL_CHECKPOINTS`, the real `litestream replicate` with the
//! manifest's configuration (paths rewritten to a temporary folder, the replica a
//! `file://` folder instead of S3). Write, replicate, lose the volume, restore
//! with the manifest's init container's command, start: every write is there,
//! and the epoch and the seqs carry on.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use e2e::{
    Poll, STEP_TIMEOUT, UserService, eventually, free_port, litestream, manifests::Manifests,
};
use serde_json::Value;
use tokio::process::Command;
use users_proto::{
    metadata,
    v1::{self as pb, user_service_client::UserServiceClient},
};

/// Writes this many users: enough WAL pages (about four per write) for
/// Litestream's own checkpoint threshold (1000 pages) to be crossed.
const WRITES: u64 = 400;

/// The manifest's Litestream pieces, rewritten for this machine.
struct Backups {
    config: PathBuf,
    database: PathBuf,
    replica: PathBuf,
    restore_args: Vec<String>,
    replicate_args: Vec<String>,
}

impl Backups {
    /// Reads the ConfigMap and the init containers of the user-service's pod.
    fn from_manifests(dir: &Path) -> Backups {
        let manifests = Manifests::load();
        let config = manifests.get("ConfigMap", "litestream-config")["data"]["litestream.yml"]
            .as_str()
            .expect("litestream-config holds litestream.yml")
            .to_owned();
        let database = dir.join("users.db");
        let config = config
            .replace("/data/users.db", database.to_str().unwrap())
            .replace(
                "addr: \":9091\"",
                &format!("addr: \"127.0.0.1:{}\"", free_port()),
            );
        let config_path = dir.join("litestream.yml");
        std::fs::write(&config_path, config).unwrap();
        let pod = &manifests.pod_template("user-service")["spec"];
        let args_of = |name: &str| -> Vec<String> {
            let container = pod["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("the user-service pod has no {name} container"));
            container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    a.as_str()
                        .unwrap()
                        .replace(
                            "/etc/litestream/litestream.yml",
                            config_path.to_str().unwrap(),
                        )
                        .replace("/data/users.db", database.to_str().unwrap())
                })
                .collect()
        };
        // The service runs as the pod runs it.
        let env = manifests.environment(manifests.container("user-service"), &|_, _| String::new());
        assert_eq!(
            env["WAL_CHECKPOINTS"], "external",
            "Litestream owns checkpoints"
        );
        assert_eq!(env["DATABASE_URL"], "sqlite:///data/users.db");
        Backups {
            restore_args: args_of("litestream-restore"),
            replicate_args: args_of("litestream"),
            config: config_path,
            database,
            replica: dir.join("replica"),
        }
    }

    /// `litestream` with `args`, the replica URL the ConfigMap would give
    /// (here a folder) and the Secret's keys (unused by a file replica).
    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(litestream());
        command
            .args(args)
            .env(
                "LITESTREAM_REPLICA_URL",
                format!("file://{}", self.replica.display()),
            )
            .env("LITESTREAM_ACCESS_KEY_ID", "unused")
            .env("LITESTREAM_SECRET_ACCESS_KEY", "unused")
            .kill_on_drop(true);
        command
    }

    /// Runs a one-shot litestream command; its JSON or text output.
    async fn run(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = self.command(&args).output().await.unwrap();
        assert!(
            output.status.success(),
            "litestream {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The newest transaction on the replica and the newest local one (hex).
    async fn positions(&self) -> (String, String) {
        let config = self.config.to_str().unwrap();
        let database = self.database.to_str().unwrap();
        let status: Value =
            serde_json::from_str(&self.run(&["status", "-json", "-config", config]).await).unwrap();
        let local = status[0]["local_txid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let ltx: Value = serde_json::from_str(
            &self
                .run(&["ltx", "-json", "-config", config, database])
                .await,
        )
        .unwrap_or(Value::Null);
        let replicated = ltx
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|file| file["max_txid"].as_str())
            .max()
            .unwrap_or_default()
            .to_owned();
        (replicated, local)
    }

    /// Every `litestream_*` metric the alerting rules use is one this
    /// Litestream exports, scraped from the metrics address the manifest sets.
    async fn assert_alerts_use_exported_metrics(&self) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let addr = config
            .lines()
            .find_map(|line| line.strip_prefix("addr: "))
            .expect("the config sets addr")
            .trim_matches('"')
            .to_owned();
        let scraped = e2e::Http::new(addr.parse().unwrap()).get("/metrics").await;
        assert_eq!(scraped.status, 200);
        let scraped = String::from_utf8_lossy(&scraped.body).into_owned();
        let rules = std::fs::read_to_string(
            e2e::manifests::deploy_dir().join("components/monitoring/prometheus-rule.yaml"),
        )
        .unwrap();
        let used: std::collections::BTreeSet<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("litestream_"))
            .collect();
        assert!(!used.is_empty(), "the rules watch the backups");
        for metric in used {
            assert!(
                scraped.lines().any(|l| l.starts_with(metric)),
                "{metric} is not exported by litestream:\n{scraped}"
            );
        }
    }

    /// Waits (bounded) until the replica holds every local transaction.
    async fn wait_replicated(&self) -> String {
        eventually(
            Poll::within(Duration::from_secs(30)).every(Duration::from_millis(300)),
            "the replica to hold every local transaction",
            async || match self.positions().await {
                (replicated, local) if !local.is_empty() && replicated == local => Ok(local),
                other => Err(format!(": (replica, local) = {other:?}")),
            },
        )
        .await
    }
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The database's epoch and newest seq, as WatchUsers opens.
async fn position(client: &mut UserServiceClient<tonic::transport::Channel>) -> (String, u64) {
    let stream = client
        .watch_users(pb::WatchUsersRequest {
            replay_tail: Some(0),
            ..Default::default()
        })
        .await;
    let stream = match stream {
        Ok(stream) => stream,
        Err(status) => panic!("WatchUsers: {status}"),
    };
    let epoch = stream
        .metadata()
        .get(metadata::EPOCH)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let head = metadata::seq(stream.metadata(), metadata::HEAD_SEQ).unwrap();
    (epoch, head)
}

async fn create(client: &mut UserServiceClient<tonic::transport::Channel>, name: &str) -> u64 {
    let reply = client
        .create_user(pb::CreateUserRequest {
            user: Some(pb::User {
                first_name: Some(name.to_owned()),
                last_name: Some("Backed-up".to_owned()),
                ..Default::default()
            }),
            validate_only: false,
        })
        .await
        .unwrap();
    metadata::seq(reply.metadata(), metadata::SEQ).unwrap()
}

#[tokio::test]
async fn a_lost_volume_is_restored_from_the_replica_with_every_write_and_the_same_epoch() {
    let mut users = UserService::start(&["--wal-checkpoints".into(), "external".into()]).await;
    let backups = Backups::from_manifests(users.dir.path());
    assert_eq!(backups.database, users.dir.path().join("users.db"));
    let mut replicate = test_support::Process::spawn(backups.command(&backups.replicate_args))
        .expect("litestream replicate starts");
    let mut client = UserServiceClient::connect(users.url()).await.unwrap();
    let (epoch, _) = position(&mut client).await;
    let file_before = size(&backups.database);

    let mut last = 0;
    for i in 0..WRITES {
        last = create(&mut client, &format!("User {i}")).await;
    }
    assert_eq!(last, WRITES);
    let replicated = backups.wait_replicated().await;
    backups.assert_alerts_use_exported_metrics().await;
    // The service never checkpoints here: what reached the database file was
    // copied there by Litestream, after it had the frames.
    eventually(
        Poll::within(Duration::from_secs(30)).every(Duration::from_millis(200)),
        "Litestream to checkpoint the WAL into the database file",
        async || {
            let now = size(&backups.database);
            if now > file_before {
                Ok(now)
            } else {
                Err(format!(": still {now} bytes"))
            }
        },
    )
    .await;

    // The node and its volume are gone: stop both, delete everything.
    users.process.terminate(STEP_TIMEOUT).await.unwrap();
    replicate.terminate(STEP_TIMEOUT).await.unwrap();
    for entry in std::fs::read_dir(users.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("users.db")
            || path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".users.db")
        {
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    assert!(!backups.database.exists());

    // The new pod's init container.
    let restore = |b: &Backups| {
        let mut command = b.command(&b.restore_args);
        async move { command.output().await.unwrap() }
    };
    let output = restore(&backups).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(backups.database.exists(), "restored");
    // Run again (the next pod start): the database exists, nothing changes.
    let restored_size = size(&backups.database);
    let output = restore(&backups).await;
    assert!(output.status.success());
    assert_eq!(size(&backups.database), restored_size);

    let addr = users.process.addr;
    users
        .start_again(&["--wal-checkpoints".into(), "external".into()], addr)
        .await;
    let mut client = UserServiceClient::connect(users.url()).await.unwrap();
    let listed = client
        .list_users(pb::ListUsersRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.total_size as u64, WRITES,
        "every replicated write is there"
    );
    let names: Vec<_> = listed
        .users
        .iter()
        .map(|u| u.first_name.clone().unwrap())
        .collect();
    let expected: Vec<_> = (0..WRITES).map(|i| format!("User {i}")).collect();
    assert_eq!(names, expected);
    let (epoch_now, head) = position(&mut client).await;
    assert_eq!(epoch_now, epoch, "the epoch carries on");
    assert_eq!(head, WRITES);
    assert_eq!(
        create(&mut client, "After").await,
        WRITES + 1,
        "and the seqs"
    );
    eprintln!("replicated up to txid {replicated}; restored {WRITES} users");
}

#[tokio::test]
async fn the_first_start_with_an_empty_replica_restores_nothing_and_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let backups = Backups::from_manifests(dir.path());
    let output = backups
        .command(&backups.restore_args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "no replica yet is no error: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!backups.database.exists(), "and no database is made");
}
