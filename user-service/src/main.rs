use clap::Parser;
use service_runtime::{init_logging, shutdown_signal};
use user_service::{Application, Config};

/// mimalloc rather than glibc's malloc, as in the gateway: both allocate and
/// free many small buffers per call, and under that load glibc's malloc and free
/// cost a noticeable share of the CPU (the gateway's profile is in
/// BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exits 2 when the trace settings (`OTEL_*`) are wrong, 1 with the error and its causes on one line (`error: opening the
/// database …: cannot connect to PostgreSQL at …: <the server's reason>`), the
/// line an operator looks for in a crash-looping pod's log.
#[tokio::main]
async fn main() {
    let config = Config::parse();
    let telemetry = match init_logging(config.log_format, "user-service") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    };
    let outcome = run(config).await;
    telemetry.shutdown();
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
