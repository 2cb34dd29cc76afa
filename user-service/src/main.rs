use clap::Parser;
use service_runtime::{init_logging, shutdown_signal};
use user_service::{Application, Config};

/// mimalloc rather than glibc's malloc, as in the gateway: both allocate and
/// free many small buffers per call, and under that load glibc's malloc and free
/// cost a noticeable share of the CPU (the gateway's profile is in
/// BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
