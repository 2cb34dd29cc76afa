use clap::Parser;
use service_runtime::{init_logging, shutdown_signal};
use user_service::{Application, Config};

/// mimalloc instead of glibc's malloc, as in the gateway, where perf put glibc's
/// malloc and free at about 12 % of its CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
