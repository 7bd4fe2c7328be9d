//! `seckill demo`: a whole flash sale in one process, with a short report.
//!
//! Many buyer threads fire at one activity through the real shard queues;
//! afterwards every invariant of DESIGN.md is checked on the final state.

use anyhow::{ensure, Context};
use crossbeam_channel::unbounded;
use seckill_engine::{ActivitySpec, Engine, EngineConfig, Envelope, Sink, SystemClock};
use seckill_proto::{ErrorCode, Request, Response};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Units on sale.
    #[arg(long, env = "SECKILL_DEMO_STOCK", default_value_t = 10_000)]
    stock: u64,
    /// Distinct buyers, each clicking buy once.
    #[arg(long, env = "SECKILL_DEMO_BUYERS", default_value_t = 50_000)]
    buyers: u64,
    /// Engine shards (owner threads).
    #[arg(long, env = "SECKILL_SHARDS")]
    shards: Option<usize>,
    /// Threads playing the buyers.
    #[arg(long, default_value_t = 4)]
    clients: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.clients >= 1 && args.buyers >= 1, "--clients and --buyers must be at least 1");
    let mut config = EngineConfig::default();
    if let Some(n) = args.shards {
        config.shards = n;
    }
    let shards = config.shards;
    let engine = Arc::new(Engine::start(config, Arc::new(SystemClock), Sink::Immediate));
    let now_ms = engine.clock().now_ms();
    let activity = engine
        .create_activity(ActivitySpec {
            title: "demo phone".into(),
            product_id: None,
            price_cents: 99_900,
            stock: args.stock,
            starts_at_ms: now_ms,
            ends_at_ms: now_ms + 3_600_000,
            per_user_limit: 1,
            payment_timeout_s: 1800,
            require_buy_token: false,
            gate_factor: 5,
        })
        .context("creating the demo activity")?;
    println!(
        "seckill demo: {} units, {} buyers, {} shard(s), {} client threads (in-memory core, no WAL yet)",
        args.stock, args.buyers, shards, args.clients
    );

    let started = Instant::now();
    let per_client = args.buyers.div_ceil(args.clients);
    let results: Vec<(HashMap<&'static str, u64>, Option<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let engine = engine.clone();
                let first = c * per_client;
                let last = ((c + 1) * per_client).min(args.buyers);
                s.spawn(move || buyer_thread(&engine, activity.id, first..last, started))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("buyer thread")).collect()
    });
    let elapsed = started.elapsed();

    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    let mut sold_out_after: Option<f64> = None;
    for (o, t) in results {
        for (k, v) in o {
            *outcomes.entry(k).or_default() += v;
        }
        sold_out_after = match (sold_out_after, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let orders = outcomes.get("created").copied().unwrap_or(0);
    let final_view = engine.activity(activity.id)?;
    let held: u64 = engine
        .inspect(move |st| st.held_by_activity().get(&activity.id).copied().unwrap_or(0))
        .iter()
        .sum();
    let max_per_user = engine
        .inspect(move |st| st.slots.get(&activity.id).map(|s| s.purchases.iter().map(|(_, n)| n).max().unwrap_or(0)).unwrap_or(0))
        .into_iter()
        .max()
        .unwrap_or(0);

    println!("  orders created   {orders}");
    let mut keys: Vec<_> = outcomes.iter().filter(|(k, _)| **k != "created").collect();
    keys.sort();
    for (k, v) in keys {
        println!("  {k:<16} {v}");
    }
    match sold_out_after {
        Some(t) => println!("  sold out after   {:.1} ms", t * 1e3),
        None => println!("  sold out after   (not sold out)"),
    }
    println!("  elapsed          {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!("  decisions/s      {:.0}", args.buyers as f64 / elapsed.as_secs_f64());
    let oversold = held > final_view.total_stock;
    let conserved = held + final_view.remaining == final_view.total_stock;
    println!(
        "  verify           held {held} + remaining {} = total {} ({}); max units per user {max_per_user} (limit 1)",
        final_view.remaining,
        final_view.total_stock,
        if conserved { "conserved" } else { "NOT conserved" },
    );
    ensure!(!oversold && conserved, "stock invariant broken: held {held}, remaining {}, total {}", final_view.remaining, final_view.total_stock);
    ensure!(max_per_user <= 1, "a user holds {max_per_user} units with a limit of 1");
    ensure!(orders == held, "{orders} orders acknowledged but {held} units held");
    println!("  result           OK: no oversell, no user above limit, every order accounted for");
    Ok(())
}

/// One client thread: submits its buyers pipelined (bounded in flight),
/// counts outcomes, and notes when it first saw `sold_out`.
fn buyer_thread(
    engine: &Engine,
    activity_id: u64,
    users: std::ops::Range<u64>,
    started: Instant,
) -> (HashMap<&'static str, u64>, Option<f64>) {
    const IN_FLIGHT_MAX: u64 = 1024;
    let (tx, rx) = unbounded();
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    let mut sold_out_at = None;
    let (mut sent, mut received) = (0u64, 0u64);
    let total = users.end.saturating_sub(users.start);
    let mut next = users.start;
    while received < total {
        while next < users.end && sent - received < IN_FLIGHT_MAX {
            let req = Request::Buy { user_id: next + 1, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false };
            match engine.try_submit(Envelope { req, tag: next, reply: tx.clone() }) {
                Ok(()) => {
                    sent += 1;
                    next += 1;
                }
                Err(_) => break, // busy: collect answers, then retry
            }
        }
        if sent == received {
            // Busy with nothing of ours in flight: other threads fill the queue.
            std::thread::yield_now();
            continue;
        }
        let Ok((_, resp)) = rx.recv() else { break };
        received += 1;
        let key = match resp {
            Response::Order(_) => "created",
            Response::Error(code) => {
                if code == ErrorCode::SoldOut && sold_out_at.is_none() {
                    sold_out_at = Some(started.elapsed().as_secs_f64());
                }
                code.as_str()
            }
            _ => "unexpected",
        };
        *outcomes.entry(key).or_default() += 1;
    }
    (outcomes, sold_out_at)
}
