//! `seckill migrate`: create the MySQL database if missing and apply the
//! migrations in `migrations/` (the persister also does this on start).

use anyhow::Context;
use seckill_persist::mysql;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// MySQL to migrate: mysql://user[:password]@host:port/database.
    /// Its value is never printed (`--help` hides it; messages mask the password).
    #[arg(long, env = "SECKILL_MYSQL_URL", default_value = mysql::DEFAULT_URL, hide_env_values = true)]
    pub mysql_url: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.mysql_url != "none", "--mysql-url is `none`: there is no MySQL to migrate");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting a runtime")?;
    rt.block_on(mysql::migrate(&args.mysql_url))?;
    let applied = mysql::MIGRATOR.iter().filter(|m| m.migration_type.is_up_migration()).count();
    println!("MySQL schema is up to date ({applied} migrations): {}", seckill_persist::redact_url(&args.mysql_url));
    Ok(())
}
