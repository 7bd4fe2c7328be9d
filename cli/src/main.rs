//! `seckill`: the one binary. Each subcommand lives in `cmd/`.

mod cmd;
mod observe;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "seckill", version, about = "A flash-sale stock engine: sharded, write-ahead logged, fast.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: `text` for people, or `json`, one object per line
    /// with `timestamp`, `level`, `target` and `fields` (`fields.message`
    /// is the message), for log collectors. RUST_LOG sets the level.
    #[arg(long, global = true, env = "SECKILL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a flash sale in process, with its MySQL and Redis copies when those run, and check it all (start here).
    Demo(cmd::demo::Args),
    /// Start engine + HTTP front in one process (the usual way to run seckill).
    Up(cmd::up::Args),
    /// Run the durable engine alone (wire protocol + admin socket).
    Engine(cmd::engine::Args),
    /// Run an HTTP front alone, forwarding to an engine (several fronts may share one engine).
    Front(cmd::front::Args),
    /// Operator commands on a running engine (activities, orders, stats, verify): tables, or --json.
    Admin(cmd::admin::Args),
    /// Load generator: many buyers against a running front, latency percentiles, --verify.
    Load(cmd::load::Args),
    /// Print a JWT for a user.
    Token(cmd::token::Args),
    /// Create the MySQL database if missing and apply the migrations.
    Migrate(cmd::migrate::Args),
    /// Move a damaged part of the WAL aside so a stopped engine can start (loses what follows it).
    RepairWal(cmd::repair_wal::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log what they do; one-shot tools (demo, load, admin, token)
    // print a report and log only problems. RUST_LOG overrides both.
    // openraft says every vote and heartbeat error at info/warn: a replica's
    // own lines say what matters (leading, stepping down).
    let default_level = match cli.command {
        Command::Up(_) | Command::Engine(_) | Command::Front(_) | Command::Migrate(_) => "info,openraft=error",
        _ => "warn,openraft=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json_logs = cli.log_format == "json";
    if json_logs {
        // One object per line; field names are stable (docs/OPERATIONS.md, "Logs").
        logs.json().with_current_span(false).with_span_list(false).flatten_event(false).init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Demo(args) => cmd::demo::run(args),
        Command::Up(args) => cmd::up::run(args),
        Command::Engine(args) => cmd::engine::run(args),
        Command::Front(args) => cmd::front::run(args),
        Command::Admin(args) => cmd::admin::run(args),
        Command::Load(args) => cmd::load::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::RepairWal(args) => cmd::repair_wal::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_logs => {
            // The last line is JSON too, shaped like every other line.
            let now = time::OffsetDateTime::now_utc();
            let timestamp = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": "ERROR",
                "fields": {"message": format!("error: {e:#}")},
                "target": "seckill",
            });
            eprintln!("{line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_parses_its_own_definition() {
        // clap checks flag names, groups and defaults of every subcommand here.
        Cli::command().debug_assert();
    }
}
