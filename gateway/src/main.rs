use clap::Parser;
use gateway::{Application, Config};
use service_runtime::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format);
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
