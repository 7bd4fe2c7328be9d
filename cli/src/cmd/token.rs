//! `seckill token`: print a JWT for a user (for curl and tests).

use anyhow::Context;
use seckill_front::auth::{Auth, AuthConfig};
use seckill_front::secrets;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The user id (the token's `sub`).
    #[arg(long)]
    pub user: u64,
    /// Print tokens for this many consecutive users, one per line, starting at --user
    /// (for load generators such as wrk).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=COUNT_MAX))]
    pub count: u64,
    /// Lifetime: seconds, or with a unit: 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// `iss` claim to put in the tokens (for fronts started with --jwt-issuer).
    #[arg(long, env = "SECKILL_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim to put in the tokens (for fronts started with --jwt-audience).
    #[arg(long, env = "SECKILL_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Data dir holding the generated auth secret (unless SECKILL_AUTH_SECRET is set).
    #[arg(long, env = "SECKILL_DATA_DIR", default_value = super::DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
}

pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 3600, 30m or 1h"))?;
    match n.checked_mul(mult) {
        Some(v) if v > 0 && v <= 366 * 86_400 => Ok(v),
        _ => Err("ttl must be between 1 s and 366 days".into()),
    }
}

/// Most tokens one call prints (~160 bytes each).
pub const COUNT_MAX: u64 = 10_000_000;

pub fn run(args: Args) -> anyhow::Result<()> {
    use std::io::Write;
    anyhow::ensure!(args.user > 0, "--user must be a positive user id");
    anyhow::ensure!(args.user.checked_add(args.count).is_some(), "--user + --count overflows a user id");
    let secret = secrets::load_or_create("SECKILL_AUTH_SECRET", &args.data_dir, "auth.secret")
        .context("reading or creating the auth secret")?;
    let auth = Auth::with(
        &secret,
        AuthConfig { issuer: args.issuer.clone(), audience: args.audience.clone(), ..AuthConfig::default() },
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for user in args.user..args.user + args.count {
        writeln!(out, "{}", auth.issue(user, args.ttl)).context("writing the tokens")?;
    }
    out.flush().context("writing the tokens")?;
    Ok(())
}
