//! `seckill admin <cmd>`: one command to the engine's admin socket.

use anyhow::{bail, Context};
use seckill_engine::server::admin::COMMANDS;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(after_help = admin_help())]
pub struct Args {
    /// The engine's data dir (its admin.sock is used).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Command, e.g. activity.create (see the list below).
    pub cmd: String,
    /// Arguments as one JSON object.
    #[arg(long, default_value = "{}")]
    pub json: String,
}

fn admin_help() -> String {
    let mut s = String::from("Commands and their --json arguments (times are RFC 3339):\n");
    for (name, args) in COMMANDS {
        s.push_str(&format!("  {name:<18} {args}\n"));
    }
    s.push_str("\nExample:\n  seckill admin activity.create --json '{\"title\":\"phone\",\"price_cents\":99900,\"stock\":100,\"starts_at\":\"2026-11-25T10:00:00Z\",\"ends_at\":\"2026-11-26T10:00:00Z\"}'");
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let result = call(&args.data_dir, &args.cmd, &args.json)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Sends one command and returns its `result`, or the engine's error.
pub fn call(data_dir: &std::path::Path, cmd: &str, json: &str) -> anyhow::Result<Value> {
    let args: Value = serde_json::from_str(json).context("--json is not valid JSON")?;
    let path = data_dir.join("admin.sock");
    let stream = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach {}; is `seckill engine` (or `up`) running with --data-dir {}?",
            path.display(),
            data_dir.display()
        )
    })?;
    let mut w = stream.try_clone()?;
    let line = serde_json::json!({"cmd": cmd, "args": args});
    // An engine that refuses the connection (another user, too many open)
    // answers one line and closes, maybe before this write: read it anyway.
    let sent = writeln!(w, "{line}");
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply);
    if reply.trim().is_empty() {
        sent.context("sending the command")?;
        read.context("reading the answer")?;
        bail!("the engine closed the admin connection without an answer");
    }
    let reply: Value = serde_json::from_str(&reply).context("the engine answered something that is not JSON")?;
    if reply["ok"] == Value::Bool(true) {
        Ok(reply["result"].clone())
    } else {
        let code = reply["error"]["code"].as_str().unwrap_or("unknown");
        let msg = reply["error"]["message"].as_str().unwrap_or("");
        bail!("{cmd} failed: {code}: {msg}")
    }
}
