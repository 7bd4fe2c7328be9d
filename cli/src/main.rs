//! `seckill`: the one binary. Each subcommand lives in `cmd/`.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "seckill", version, about = "A flash-sale stock engine: sharded, write-ahead logged, fast.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a flash sale in process and print what happened (the newcomer's first command).
    Demo(cmd::demo::Args),
    /// Start engine + front (+ persister and mirror) in one process.
    Up,
    /// Run the durable engine alone (wire protocol + admin socket).
    Engine(cmd::engine::Args),
    /// Run an HTTP front alone, forwarding to an engine.
    Front,
    /// Send one command to a running engine's admin socket.
    Admin(cmd::admin::Args),
    /// Load generator.
    Load,
    /// Print a JWT for a user.
    Token,
    /// Apply the MySQL migrations.
    Migrate,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Up => not_built("up", "HTTP front, auth, rate limit, admin socket and `seckill up`"),
        Command::Engine(args) => cmd::engine::run(args),
        Command::Front => not_built("front", "HTTP front, auth, rate limit, admin socket and `seckill up`"),
        Command::Admin(args) => cmd::admin::run(args),
        Command::Load => not_built("load", "Load generator, `seckill demo`, and the end-to-end benchmark"),
        Command::Token => not_built("token", "HTTP front, auth, rate limit, admin socket and `seckill up`"),
        Command::Migrate => not_built("migrate", "Persister: WAL → MySQL"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_built(command: &str, issue: &str) -> anyhow::Result<()> {
    anyhow::bail!("`seckill {command}` is not built yet (issue \"{issue}\"); `seckill demo` and `seckill engine` work today")
}
