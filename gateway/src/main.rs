use clap::Parser;
use gateway::{
    Application, Config,
    config::Command,
    security::mint::{self, Mint},
};
use service_runtime::{init_logging, shutdown_signal};

/// mimalloc instead of glibc's malloc: perf put glibc's malloc and free at about
/// 12 % of the gateway's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(Command::Token {
        sub,
        ttl,
        fields,
        read_only,
    }) = &config.command
    {
        let mint = Mint {
            sub: sub.clone(),
            ttl: *ttl,
            read_only: *read_only,
            fields: fields.clone(),
        };
        println!("{}", mint::mint(&config.auth, &mint)?);
        return Ok(());
    }
    let telemetry = match init_logging(config.log_format, "gateway") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    };
    let outcome = match Application::build(config).await {
        Ok(app) => app.run_until_stopped(shutdown_signal()).await,
        Err(error) => Err(error),
    };
    telemetry.shutdown();
    outcome
}
