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
pub mod telemetry;

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, Layer, fmt, layer::SubscriberExt, util::SubscriberInitExt};

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

/// Installs the global subscriber: log lines filtered by `RUST_LOG` (default
/// `info`), and traces for `service` when an OTLP endpoint is configured
/// ([`telemetry`]). Call once, first thing in `main`, inside the Tokio runtime;
/// keep the answer until the process stops, then `shutdown` it. An error names
/// the setting that is wrong.
pub fn init_logging(
    format: LogFormat,
    service: &'static str,
) -> Result<telemetry::Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: log files and collectors get plain text.
    let lines = fmt::layer()
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let lines: telemetry::BoxedLayer = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let (traces, telemetry) = telemetry::layer(service)?;
    let layers: Vec<_> = std::iter::once(lines).chain(traces).collect();
    tracing_subscriber::registry().with(layers).init();
    Ok(telemetry)
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
