//! What the user-service and the gateway do the same way as processes, so
//! operators see one behaviour: how logs are written, which signals stop them, how
//! metrics are exposed and how request ids look.

pub mod backoff;
pub mod held;
pub mod log_limit;
pub mod metrics;
pub mod open_files;
pub mod redis_url;
pub mod request_id;
pub mod secret;

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt};

/// How log lines are written (`--log-format`): both binaries take the same
/// flag, so one collector configuration reads both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber, filtered by `RUST_LOG` (default `info`); call
/// once, first thing in `main`.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The next connection on `listener`. A failed accept (out of file descriptors,
/// say) is logged and retried after a pause rather than in a busy loop. Cancel-safe:
/// meant for a `select!` against shutdown.
pub async fn accept(
    listener: &tokio::net::TcpListener,
) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(pair) => return pair,
            Err(error) => {
                tracing::warn!(%error, listen = ?listener.local_addr().ok(), "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Completes on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C): the moment to
/// start a graceful shutdown.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
