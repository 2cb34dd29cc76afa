//! `loadgen`: runs one scenario against a deployment given by URL and prints a
//! human report followed by one `SUMMARY {json}` line.

use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};
use loadgen::{connect, fanout, floor, merge, presence, report, rest, subscribers, sys, users};
use serde_json::json;

/// Load generator for the users service (REST, WebSocket fan-out, connections)
/// and the floor server it is compared with. Runs against any deployment by URL.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Cli {
    /// Worker threads of this process's runtime (default: one per core); e.g. 1
    /// for a floor that should leave a core to the client.
    #[arg(long, global = true, env = "LOADGEN_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// The scenarios.
#[derive(Subcommand, Debug)]
enum Command {
    /// GET or PATCH /api/users/{id}/ over C keep-alive connections, closed loop or
    /// at a fixed rate (open loop); reports req/s, latency percentiles, errors.
    Rest(rest::RestArgs),
    /// N sockets on /ws/user-updates/ while PATCHes go out at R/s; reports
    /// delivery latency (PATCH sent → frame), loss, duplicates, order, and the
    /// client's own CPU.
    Fanout(fanout::FanoutArgs),
    /// Opens N sockets as fast as allowed; reports time to all connected and the
    /// server's RSS per socket while they idle.
    Connect(connect::ConnectArgs),
    /// Serves the minimal broadcast server (in-memory PATCH, same frames) until
    /// Ctrl-C or SIGTERM, to measure the floor beside the real stack.
    Floor(floor::FloorArgs),
    /// N sockets, each filtered to its own user (`?users=<id>`), over several
    /// gateways and source addresses, while PATCHes go to random users of the
    /// slice: time to connect, exact delivery (lost, misdelivered, duplicated),
    /// latency, the gateways' RSS per socket and CPU.
    Subscribers(subscribers::SubscribersArgs),
    /// U users with two windows each toggling presence `typing` once a period:
    /// latency until the other window sees it, presence frames received.
    Presence(presence::PresenceArgs),
    /// Creates N users through the REST API, concurrently, and reports their ids
    /// (the range `subscribers` and `presence` follow).
    CreateUsers(users::CreateUsersArgs),
    /// Merges several processes' SUMMARY lines of one `subscribers` or
    /// `presence` run into one (counts summed, histograms merged).
    Merge(merge::MergeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = sys::raise_nofile_limit() {
        eprintln!("loadgen: could not raise the file-descriptor limit: {error}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let (human, summary) = match command {
        Command::Rest(args) => {
            let report = rest::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::Fanout(args) => {
            let report = fanout::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::Connect(args) => {
            let report = connect::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::Subscribers(args) => {
            let report = subscribers::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::Presence(args) => {
            let report = presence::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::CreateUsers(args) => {
            let report = users::run(&args).await?;
            (report.human(), report.summary())
        }
        Command::Merge(args) => {
            let merged = merge::run(&args)?;
            (
                merge::human(&merged),
                format!("{}{merged}", report::SUMMARY_PREFIX),
            )
        }
        Command::Floor(args) => {
            let floor = floor::Floor::start(&args).await?;
            println!("floor listening on {}", floor.url());
            std::io::stdout().flush()?;
            stopped().await?;
            let (events, sockets) = floor.stats();
            let human = format!(
                "floor {}: {events} events, {sockets} sockets served\n",
                floor.url()
            );
            let summary = report::summary_line(
                "floor",
                &floor.url(),
                json!({ "listen": args.listen.to_string(), "queue": args.queue }),
                json!({ "events": events, "sockets": sockets }),
            );
            (human, summary)
        }
    };
    // Not print!: a closed pipe (`| head`) must not panic.
    let mut out = std::io::stdout().lock();
    write!(out, "{human}")?;
    writeln!(out, "{summary}")?;
    out.flush()?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM, so a script can stop the floor either way and
/// still get its summary.
async fn stopped() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
