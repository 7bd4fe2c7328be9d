//! `seckill repair-wal`: the way past a WAL that recovery refused because a
//! record inside it is damaged (docs/OPERATIONS.md, "A damaged WAL").

use anyhow::Context;
use seckill_engine::wal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The data dir of a stopped engine.
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Really move the damaged part aside (without it, only says what it would do).
    #[arg(long)]
    pub yes: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let fs = wal::os_fs();
    let _lock = fs
        .lock(&args.data_dir)
        .with_context(|| format!("locking {}", args.data_dir.display()))?
        .context("the data dir is in use by a running engine; stop it first")?;
    if !args.yes {
        println!(
            "This moves every WAL byte from the first damaged record on to {}/{} and starts the log \
             from the records before it. Acknowledged orders after the damage leave the engine. \
             Take a copy of the data dir first, then run again with --yes.",
            args.data_dir.display(),
            wal::DAMAGED_DIR
        );
        return Ok(());
    }
    let report = wal::repair(&*fs, &args.data_dir).context("repairing the WAL")?;
    if report.moved.is_empty() {
        println!("nothing to repair: the log reads to its end");
    }
    for (path, offset) in report.moved {
        println!("moved {} from byte {offset} to {}/", path.display(), wal::DAMAGED_DIR);
    }
    Ok(())
}
