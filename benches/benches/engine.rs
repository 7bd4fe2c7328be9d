//! `cargo bench -p seckill-benches -- engine/`
//!
//! * `engine/decide/*` — buy decisions on one `ShardState`, in this thread,
//!   batched the way the shard loop batches them: `BATCH_MAX` requests
//!   decided at one `now_ms`, then `Batch::release`. No queues, no log.
//!   - `sold_out_mix`: 1M distinct buyers for 10,000 units (1% win, the rest
//!     answered `sold_out`). `handle` + `release`; answers are discarded.
//!   - `sold_out_mix_replies`: the same, but every answer is pushed as a
//!     `Reply` and sent on a crossbeam channel by `release` (as the shard
//!     loop does), and drained by this thread after each batch.
//!   - `all_win`: 1M distinct buyers for 1M units: every request creates an
//!     order (order table, user index, purchases and the event all grow).
//! * `engine/shards/{1,2,4}` — the same 1%-win sale end to end through the
//!   real `Engine` (`Sink::Immediate`, no WAL): submitter thread(s) call
//!   `try_submit` (retrying on `busy`), shard threads decide, the answers
//!   come back on crossbeam channels. One iteration = submit N, receive N.
//!   Submitters: 1, or `SECKILL_BENCH_SUBMITTERS`.

use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use crossbeam_channel::{unbounded, Receiver, Sender};
use seckill_benches::{ongoing_spec, shard_with_sale, user_id, NOW_MS};
use seckill_engine::{Batch, Clock, Engine, EngineConfig, Envelope, ShardState, Sink, SystemClock};
use seckill_engine::{Reply, BATCH_MAX};
use seckill_proto::{ErrorCode, Request, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACTIVITY: u64 = 1;
/// Buyers per in-process iteration.
const DECIDE_USERS: u64 = 1_000_000;
/// Units in the sold-out sale: 1% of the buyers win.
const DECIDE_STOCK: u64 = 10_000;
/// Requests per end-to-end iteration, and the units of each sale (same 1%).
const E2E_REQUESTS: u64 = 250_000;
const E2E_STOCK: u64 = 2_500;
const QUEUE_CAPACITY: usize = 65_536;

fn buys(activity_id: u64, users: std::ops::Range<u64>) -> Vec<Request> {
    keyed_buys(activity_id, users, false)
}

/// `buys`, each with an idempotency key when `keyed` (what a front given a
/// replica group sends: it keys every buy itself).
fn keyed_buys(activity_id: u64, users: std::ops::Range<u64>, keyed: bool) -> Vec<Request> {
    users
        .map(|i| Request::Buy {
            user_id: user_id(i),
            activity_id,
            quantity: 1,
            idempotency_key: if keyed { i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 } else { 0 },
            buy_token_ok: false,
        })
        .collect()
}

/// The shard loop without the queue: decide a batch at one `now_ms`, then
/// release it. Answers are only looked at, never sent.
fn decide_all(state: &mut ShardState, reqs: &[Request], batch: &mut Batch) {
    for chunk in reqs.chunks(BATCH_MAX) {
        for req in chunk {
            black_box(state.handle(req, NOW_MS, batch));
        }
        batch.release();
    }
}

/// The shard loop without the queue, answers included: each answer becomes
/// a `Reply` that `release` sends; this thread plays the receiver.
fn decide_all_with_replies(
    state: &mut ShardState,
    reqs: &[Request],
    batch: &mut Batch,
    tx: &Sender<(u64, Response)>,
    rx: &Receiver<(u64, Response)>,
) {
    let mut tag = 0u64;
    for chunk in reqs.chunks(BATCH_MAX) {
        for req in chunk {
            let resp = state.handle(req, NOW_MS, batch);
            batch.replies.push(Reply { tx: tx.clone().into(), tag, resp });
            tag += 1;
        }
        batch.release();
        for reply in rx.try_iter() {
            black_box(reply);
        }
    }
}

/// One `decide/*` case: a fresh shard per sale holding `stock` units, every
/// request decided by `sale`. The used state is returned so criterion drops
/// it outside the timed section. The first time the case is entered, one
/// sale runs untimed and must sell exactly `stock` (no oversell, no unit lost).
fn sale_case(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, stock: u64, mut sale: impl FnMut(&mut ShardState)) {
    let mut checked = false;
    g.bench_function(name, |b| {
        if !checked {
            let mut state = shard_with_sale(ACTIVITY, stock);
            sale(&mut state);
            assert_eq!(state.slots[&ACTIVITY].purchases.units(), stock);
            assert_eq!(state.orders.len() as u64, stock);
            checked = true;
        }
        b.iter_batched(
            || shard_with_sale(ACTIVITY, stock),
            |mut state| {
                sale(&mut state);
                state
            },
            BatchSize::PerIteration,
        )
    });
}

/// The `engine` group, `requests` a sale. One iteration is a whole sale
/// (tens to hundreds of ms): flat sampling runs the same number of sales per
/// sample instead of a 1..=n ramp.
fn sale_group(c: &mut Criterion, requests: u64) -> BenchmarkGroup<'_, WallTime> {
    let mut g = c.benchmark_group("engine");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(requests));
    g
}

fn decide(c: &mut Criterion) {
    let mut g = sale_group(c, DECIDE_USERS);

    let reqs = buys(ACTIVITY, 0..DECIDE_USERS);
    let mut batch = Batch::default();
    let (tx, rx) = unbounded();

    sale_case(&mut g, "decide/sold_out_mix", DECIDE_STOCK, |state| decide_all(state, &reqs, &mut batch));
    sale_case(&mut g, "decide/sold_out_mix_replies", DECIDE_STOCK, |state| {
        decide_all_with_replies(state, &reqs, &mut batch, &tx, &rx)
    });
    sale_case(&mut g, "decide/all_win", DECIDE_USERS, |state| decide_all(state, &reqs, &mut batch));
    let keyed = keyed_buys(ACTIVITY, 0..DECIDE_USERS, true);
    sale_case(&mut g, "decide/all_win_keyed", DECIDE_USERS, |state| decide_all(state, &keyed, &mut batch));
    g.finish();
}

/// One submitter: sends its requests with `try_submit`, retrying on `busy`
/// after taking in the answers that have arrived, then waits for the rest.
/// Returns (units won, busy answers).
fn submit_and_collect(engine: &Engine, reqs: &[Request]) -> (u64, u64) {
    let (tx, rx) = unbounded::<(u64, Response)>();
    let (mut received, mut won, mut busy) = (0usize, 0u64, 0u64);
    let mut take = |reply: (u64, Response)| {
        received += 1;
        match reply.1 {
            Response::Order(_) => won += 1,
            Response::Error(ErrorCode::SoldOut) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    };
    for (tag, req) in reqs.iter().enumerate() {
        loop {
            let env = Envelope { req: req.clone(), tag: tag as u64, reply: tx.clone().into() };
            match engine.try_submit(env) {
                Ok(()) => break,
                Err(ErrorCode::Busy) => {
                    busy += 1;
                    rx.try_iter().for_each(&mut take);
                    std::thread::yield_now();
                }
                Err(e) => panic!("try_submit refused: {e:?}"),
            }
        }
        if tag % BATCH_MAX == BATCH_MAX - 1 {
            rx.try_iter().for_each(&mut take);
        }
    }
    drop(tx);
    rx.iter().for_each(&mut take);
    assert_eq!(received, reqs.len(), "every request answered");
    (won, busy)
}

fn shards(c: &mut Criterion) {
    let submitters: usize =
        std::env::var("SECKILL_BENCH_SUBMITTERS").ok().and_then(|s| s.parse().ok()).filter(|&n| n >= 1).unwrap_or(1);
    let mut g = sale_group(c, E2E_REQUESTS);

    for n in [1usize, 2, 4] {
        let clock = Arc::new(SystemClock);
        // Started on first use, so a filtered-out case starts no threads.
        let mut engine: Option<Engine> = None;
        let mut next_user = 0u64;
        let mut busy_total = 0u64;
        let mut submitted_total = 0u64;
        g.bench_with_input(BenchmarkId::new("shards", n), &n, |b, &n| {
            let engine = engine.get_or_insert_with(|| {
                let config = EngineConfig { shards: n, queue_capacity: QUEUE_CAPACITY, ..EngineConfig::default() };
                Engine::start(config, clock.clone(), Sink::Immediate)
            });
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh sale with new buyers, set up outside the timing.
                    let sale = engine
                        .create_activity(ongoing_spec(E2E_STOCK, clock.now_ms()))
                        .expect("creating the benchmark sale");
                    let reqs = buys(sale.id, next_user..next_user + E2E_REQUESTS);
                    next_user += E2E_REQUESTS;
                    let per = reqs.len().div_ceil(submitters);

                    let start = Instant::now();
                    let (won, busy) = if submitters == 1 {
                        submit_and_collect(engine, &reqs)
                    } else {
                        std::thread::scope(|s| {
                            let hs: Vec<_> =
                                reqs.chunks(per).map(|part| s.spawn(|| submit_and_collect(engine, part))).collect();
                            hs.into_iter()
                                .map(|h| h.join().expect("submitter"))
                                .fold((0, 0), |(w, b), (w2, b2)| (w + w2, b + b2))
                        })
                    };
                    elapsed += start.elapsed();

                    assert_eq!(won, E2E_STOCK, "every unit sold, none twice");
                    busy_total += busy;
                    submitted_total += E2E_REQUESTS;
                }
                elapsed
            })
        });
        if let Some(engine) = engine {
            eprintln!(
                "engine/shards/{n}: {submitters} submitter(s), {busy_total} busy answers retried over {submitted_total} requests"
            );
            engine.shutdown();
        }
    }
    g.finish();
}

criterion_group!(benches, decide, shards);
criterion_main!(benches);
