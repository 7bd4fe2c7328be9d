//! `history-check FILE`: checks a history of buys of one activity written
//! as JSON by a script (`scripts/failover`) with `seckill_testkit::history`.
//!
//! FILE: `{"stock": N, "limit": N, "ops": [{"user": N, "quantity": N,
//! "sent_ns": N, "answered_ns": N | null, "outcome": "created" | "sold_out" |
//! "limit_reached" | "unknown", "order_id": "…" (with "created")}, …],
//! "finals": [{"id": "…", "user": N, "quantity": N}, …]}`.
//! Prints what the history held and exits 0, or the violation and exits 1.

use seckill_testkit::history::{self, FinalOrder, Op, Outcome};
use serde_json::Value;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1).filter(|a| a != "--help" && a != "-h") else {
        eprintln!("usage: history-check FILE (a JSON history; see the source's doc comment)");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(summary) => {
            println!("history: ok, {summary:?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("history: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str) -> Result<history::Summary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
    let num = |v: &Value, k: &str| v[k].as_u64().ok_or_else(|| format!("`{k}` is not a number in {v}"));
    let ops = v["ops"]
        .as_array()
        .ok_or("no `ops` array")?
        .iter()
        .map(|o| {
            let outcome = match o["outcome"].as_str() {
                Some("created") => {
                    Outcome::Created(o["order_id"].as_str().ok_or("a created op without order_id")?.into())
                }
                Some("sold_out") => Outcome::SoldOut,
                Some("limit_reached") => Outcome::LimitReached,
                Some("unknown") => Outcome::Unknown,
                other => return Err(format!("unknown outcome {other:?}")),
            };
            Ok(Op {
                user: num(o, "user")?,
                quantity: u32::try_from(num(o, "quantity")?).map_err(|e| e.to_string())?,
                sent_ns: num(o, "sent_ns")?,
                answered_ns: o["answered_ns"].as_u64(),
                outcome,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let finals = v["finals"]
        .as_array()
        .ok_or("no `finals` array")?
        .iter()
        .map(|o| {
            Ok(FinalOrder {
                id: o["id"].as_str().ok_or("a final order without id")?.into(),
                user: num(o, "user")?,
                quantity: u32::try_from(num(o, "quantity")?).map_err(|e| e.to_string())?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let limit = u32::try_from(num(&v, "limit")?).map_err(|e| e.to_string())?;
    history::check(&ops, &finals, num(&v, "stock")?, limit)
}
