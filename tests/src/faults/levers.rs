//! The levers the fault cases pull beyond killing and freezing processes (a
//! disk that refuses writes), and the gauges they read (memory, gRPC health).

use std::time::{Duration, Instant};

use test_support::{Poll, eventually};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::timeouts::STEP_TIMEOUT;

/// A process's resident set size in KiB (`VmRSS` in /proc/<pid>/status, read as
/// the benchmarks read it): what shows a service buffering without bound while
/// Redis stalls.
pub fn rss_kib(pid: u32) -> u64 {
    loadgen::sys::rss_bytes(pid).unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"))
        / 1024
}

/// Makes a child ignore SIGXFSZ, so a write beyond its file-size limit fails with
/// EFBIG (an I/O error, as a full disk gives) instead of killing it.
pub fn ignore_sigxfsz(command: &mut tokio::process::Command) {
    // SAFETY: signal(2) is async-signal-safe, the only kind of call allowed
    // between fork and exec; an ignored signal stays ignored across exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// Sets process `pid`'s soft file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets):
/// `Some(0)` makes every write to a regular file fail, whatever the file, the way a
/// full or read-only disk does and even for root (who ignores permissions); `None`
/// lifts it. It takes effect at once, with no restart and nothing to clean up.
pub fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads `limit` and writes nothing back (old is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(
        rc,
        0,
        "prlimit({pid}, RLIMIT_FSIZE): {}",
        std::io::Error::last_os_error()
    );
}

/// The user-service's grpc.health.v1 status for `service` ("" for the server);
/// `None` when it does not answer.
pub async fn health(user_service_url: &str, service: &str) -> Option<ServingStatus> {
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(user_service_url.to_owned())
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut client = HealthClient::new(channel);
        let reply = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(reply.into_inner().status).ok()
    };
    tokio::time::timeout(STEP_TIMEOUT, check)
        .await
        .ok()
        .flatten()
}

/// Waits (bounded) until both the server ("") and users.v1.UserService report
/// `want`; how long that took.
pub async fn wait_health(
    user_service_url: &str,
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    eventually(
        Poll::within(timeout).every(Duration::from_millis(50)),
        &format!("health to turn {want:?}"),
        async || {
            let server = health(user_service_url, "").await;
            let users = health(user_service_url, "users.v1.UserService").await;
            if server == Some(want) && users == Some(want) {
                Ok(started.elapsed())
            } else {
                Err(format!("server {server:?}, users.v1.UserService {users:?}"))
            }
        },
    )
    .await
}
