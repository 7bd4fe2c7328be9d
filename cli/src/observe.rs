//! What operators look at, on the operator's listener (`--metrics`):
//!
//! * the Prometheus recorder: latency histograms with buckets (never
//!   summaries, so fronts aggregate), descriptions, and its upkeep;
//! * [`Dashboard`]: the live sale dashboard's data (`/api/dashboard.json`)
//!   and the figures `/metrics` renders at scrape time (per activity, queue
//!   depths, checkpoints). A sampler thread reads the engine's counters once
//!   a second into a ring of [`WINDOW_S`] samples; the hot path is not
//!   touched by any of it.
//!
//! docs/API.md ("Operator's listener") lists every field and metric.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use seckill_engine::{ActivityStats, BuyOutcome};
use seckill_front::metrics_http::OperatorData;
use seckill_front::observe::{BuyAnswers, ANSWER_CLASSES};
use seckill_proto::stats::{LatencyCounts, LATENCY_BUCKETS_S};
use seckill_proto::{OrderStatus, Phase};
use seckill_server::admin::{self, AdminCtx};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Buckets of `seckill_shard_batch_size` (requests per shard batch, at most 256).
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often the recorder's histograms are drained into their buckets.
/// Without it they keep every sample until the next scrape (memory that
/// grows with traffic when nobody scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (before anything records a metric).
pub fn install_metrics() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS_S)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("seckill_shard_batch_size".into()), &BATCH_BUCKETS));
    let handle = match builder.and_then(|b| b.install_recorder()) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
            return None;
        }
    };
    describe();
    metrics::gauge!("seckill_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!("seckill_process_start_time_seconds").set(started.as_secs_f64());
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_EVERY);
        upkeep.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms drain at scrape only");
    }
    Some(handle)
}

/// `# HELP` lines for the recorder's metrics.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("seckill_build_info", "1, labelled with the version of this binary");
    describe_gauge!("seckill_process_start_time_seconds", "When this process started (unix seconds)");
    describe_counter!("seckill_http_requests_total", "HTTP requests answered, by route and status");
    describe_histogram!("seckill_http_request_seconds", "Time from request head to answer, by route");
    describe_counter!("seckill_http_connections_refused_total", "Connections refused at accept, by why");
    describe_counter!("seckill_http_requests_cut_total", "Connections closed because a request ran over 30 s");
    describe_counter!("seckill_http_body_timeouts_total", "Request bodies that did not arrive within 10 s (408)");
    describe_counter!("seckill_front_ip_rate_limited_total", "Anonymous requests refused by the per-address bucket");
    describe_counter!("seckill_front_activity_reads_total", "Activity reads, by where the answer came from");
    describe_counter!("seckill_front_sold_out_short_circuit_total", "Buys answered sold_out by the front's mark");
    describe_counter!("seckill_payment_notify_refused_total", "Payment notifications the engine refused");
    describe_counter!("seckill_engine_busy_total", "Requests refused busy because a shard queue was full");
    describe_histogram!("seckill_shard_batch_size", "Requests a shard decided in one batch");
    describe_counter!("seckill_orders_expired_total", "Orders expired at their payment deadline");
    describe_counter!("seckill_wire_handshake_refused_total", "Wire connections refused at the handshake");
    describe_counter!("seckill_wal_bytes_total", "Bytes written to the WAL");
    describe_counter!("seckill_wal_records_total", "Records written to the WAL");
    describe_histogram!("seckill_wal_fsync_seconds", "Duration of one WAL fdatasync (one group commit)");
    describe_gauge!("seckill_wal_durable_lsn", "Highest LSN known durable");
    describe_gauge!("seckill_wal_failed", "1 once a WAL write or fsync failed (the engine exits)");
    describe_histogram!("seckill_snapshot_write_seconds", "Duration of one snapshot write");
    describe_gauge!("seckill_persister_lag_records", "Durable WAL records not yet in MySQL");
    describe_gauge!("seckill_persister_lag_seconds", "Age of the oldest durable record not yet in MySQL");
    describe_gauge!("seckill_persister_applied_lsn", "Everything up to this LSN is in MySQL");
    describe_gauge!("seckill_persister_halted", "1 while the persister stopped on data it cannot write");
    describe_counter!("seckill_persister_errors_total", "Persister failures (each retry counts), by kind");
    describe_histogram!("seckill_persister_batch_seconds", "Duration of one MySQL batch");
    describe_counter!("seckill_persister_records_total", "WAL records applied to MySQL");
    describe_counter!("seckill_persister_batches_total", "MySQL batches applied");
    describe_counter!("seckill_persister_resyncs_total", "Rebuilds of MySQL from the engine's state");
    describe_counter!("seckill_persister_restarts_total", "Persister restarts from MySQL's checkpoint");
    describe_counter!("seckill_persister_budget_exceeded_total", "Times MySQL fell past the persister's WAL budget");
    describe_gauge!("seckill_persister_connected", "1 while the persister has a MySQL connection");
    describe_gauge!("seckill_mirror_lag_records", "Durable WAL records not yet in Redis");
    describe_histogram!("seckill_mirror_lag_seconds", "Time from durable to in Redis, per record seen");
    describe_gauge!("seckill_mirror_applied_lsn", "Everything up to this LSN is in Redis");
    describe_gauge!("seckill_mirror_connected", "1 while the mirror has a Redis connection");
    describe_counter!("seckill_mirror_records_total", "WAL records applied to Redis");
    describe_counter!("seckill_mirror_errors_total", "Redis mirror failures, by kind");
    describe_counter!("seckill_mirror_batches_total", "Redis batches written (one MULTI/EXEC each)");
    describe_histogram!("seckill_mirror_batch_seconds", "Duration of one Redis batch");
    describe_counter!("seckill_mirror_resyncs_total", "Rewrites of Redis from the engine's state");
    describe_counter!("seckill_mirror_restarts_total", "Mirror restarts on a resync request");
    describe_counter!("seckill_mirror_budget_exceeded_total", "Times Redis fell past the mirror's WAL budget");
    describe_gauge!("seckill_mirror_halted", "1 while the mirror stopped on a log that does not replay");
}

/// Seconds of history the dashboard keeps (one sample a second).
pub const WINDOW_S: usize = 300;
/// Activities with series on the dashboard at once (the newest).
pub const DASHBOARD_ACTIVITIES_MAX: usize = 32;
/// Ended activities stay on the dashboard and in `/metrics` this long.
const ENDED_SHOWN_MS: u64 = 3_600_000;
const TICK: Duration = Duration::from_secs(1);

/// One second of the engine as the sampler saw it (cumulative figures;
/// rates are differences of two samples).
#[derive(Clone, Debug)]
struct Sample {
    t_ms: u64,
    durable_lsn: u64,
    fsyncs: u64,
    fsync_latency: LatencyCounts,
    queue_depth: u64,
    wal_queue_depth: u64,
    persister_lag_records: Option<u64>,
    mirror_lag_records: Option<u64>,
    activities: Vec<ActivitySample>,
}

#[derive(Clone, Debug)]
struct ActivitySample {
    id: u64,
    stock_left: u64,
    sold: u64,
    buys: [u64; BuyOutcome::NAMES.len()],
    /// The front's answers and latency (in `seckill up` only).
    answers: Option<([u64; ANSWER_CLASSES.len()], LatencyCounts)>,
}

/// The dashboard of `seckill up` / `seckill engine`.
pub struct Dashboard {
    ctx: AdminCtx,
    answers: Option<Arc<BuyAnswers>>,
    process: &'static str,
    samples: Mutex<VecDeque<Sample>>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether an activity is shown (and exported per activity) at `now_ms`.
fn shown(a: &ActivityStats, now_ms: u64) -> bool {
    a.view.phase != Phase::Ended || now_ms < a.view.terms.ends_at_ms.saturating_add(ENDED_SHOWN_MS)
}

impl Dashboard {
    /// Starts the sampler. `answers`: the in-process front's buy answers
    /// (`seckill up`); `process`: `up` or `engine`.
    pub fn start(ctx: AdminCtx, answers: Option<Arc<BuyAnswers>>, process: &'static str) -> Arc<Dashboard> {
        let d =
            Arc::new(Dashboard { ctx, answers, process, samples: Mutex::new(VecDeque::with_capacity(WINDOW_S + 1)) });
        d.sample();
        let weak = Arc::downgrade(&d);
        let spawned = std::thread::Builder::new().name("dashboard".into()).spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(d) => d.sample(),
                None => return,
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "dashboard sampler not started; its charts stay empty");
        }
        d
    }

    fn hook_u64(&self, name: &str, field: &str) -> Option<u64> {
        self.ctx.extra_stats.iter().find(|(n, _)| *n == name).and_then(|(_, h)| h()[field].as_u64())
    }

    fn sample(&self) {
        let engine = &self.ctx.engine;
        let wal = &self.ctx.wal_status;
        let now_ms = engine.clock().now_ms();
        let answers: BTreeMap<u64, _> = self
            .answers
            .as_ref()
            .map(|a| a.read().into_iter().map(|x| (x.activity_id, (x.answers, x.latency))).collect())
            .unwrap_or_default();
        let mut acts: Vec<ActivitySample> = engine
            .activity_stats()
            .into_iter()
            .filter(|a| shown(a, now_ms))
            .map(|a| ActivitySample {
                id: a.view.id,
                stock_left: a.view.remaining,
                sold: a.sold(),
                buys: a.figures.buys,
                // With a front in this process, an activity nobody bought yet has zeros.
                answers: self.answers.as_ref().map(|_| answers.get(&a.view.id).copied().unwrap_or_default()),
            })
            .collect();
        if acts.len() > DASHBOARD_ACTIVITIES_MAX {
            acts.drain(..acts.len() - DASHBOARD_ACTIVITIES_MAX);
        }
        let s = Sample {
            t_ms: wall_ms(),
            durable_lsn: wal.durable_lsn.load(Ordering::Acquire),
            fsyncs: wal.fsyncs.load(Ordering::Acquire),
            fsync_latency: wal.fsync_latency.read(),
            queue_depth: engine.queue_depths().iter().sum::<usize>() as u64,
            wal_queue_depth: engine.wal_queue_depth() as u64,
            persister_lag_records: self.hook_u64("persister", "lag_records"),
            mirror_lag_records: self.hook_u64("mirror", "lag_records"),
            activities: acts,
        };
        let mut ring = self.samples.lock();
        if ring.len() > WINDOW_S {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// `/api/dashboard.json` (docs/API.md, "Dashboard data").
    pub fn to_json(&self) -> Value {
        let stats = admin::stats(&self.ctx);
        let samples: Vec<Sample> = self.samples.lock().iter().cloned().collect();
        json!({
            "version": 1,
            "process": self.process,
            "interval_s": TICK.as_secs(),
            "window_s": WINDOW_S,
            "answers_source": if self.answers.is_some() { "front" } else { "engine" },
            "stats": stats,
            "series": series(&samples),
        })
    }
}

/// Rounds to 3 decimals (keeps the JSON short); `None` stays null.
fn r3(x: Option<f64>) -> Value {
    match x {
        Some(v) if v.is_finite() => json!((v * 1000.0).round() / 1000.0),
        _ => Value::Null,
    }
}

/// Per-second rates and levels, one entry per sample (the first rate is null).
fn series(samples: &[Sample]) -> Value {
    let t: Vec<Value> = samples.iter().map(|s| json!(s.t_ms / 1000)).collect();
    let pairs = |f: &dyn Fn(&Sample, &Sample, f64) -> Option<f64>| -> Vec<Value> {
        let mut out = vec![Value::Null; samples.len().min(1)];
        for w in samples.windows(2) {
            let dt = (w[1].t_ms.saturating_sub(w[0].t_ms) as f64 / 1000.0).max(0.001);
            out.push(r3(f(&w[0], &w[1], dt)));
        }
        out
    };
    let levels = |f: &dyn Fn(&Sample) -> Option<u64>| -> Vec<Value> {
        samples.iter().map(|s| f(s).map_or(Value::Null, |v| json!(v))).collect()
    };
    let engine = json!({
        "records_per_s": pairs(&|a, b, dt| Some(b.durable_lsn.saturating_sub(a.durable_lsn) as f64 / dt)),
        "fsyncs_per_s": pairs(&|a, b, dt| Some(b.fsyncs.saturating_sub(a.fsyncs) as f64 / dt)),
        "records_per_fsync": pairs(&|a, b, _| {
            let f = b.fsyncs.saturating_sub(a.fsyncs);
            (f > 0).then(|| b.durable_lsn.saturating_sub(a.durable_lsn) as f64 / f as f64)
        }),
        "fsync_p50_ms": pairs(&|a, b, _| b.fsync_latency.since(&a.fsync_latency).quantile_ms(0.5)),
        "fsync_p99_ms": pairs(&|a, b, _| b.fsync_latency.since(&a.fsync_latency).quantile_ms(0.99)),
        "queue_depth": levels(&|s| Some(s.queue_depth)),
        "wal_queue_depth": levels(&|s| Some(s.wal_queue_depth)),
        "persister_lag_records": levels(&|s| s.persister_lag_records),
        "mirror_lag_records": levels(&|s| s.mirror_lag_records),
    });
    let ids: BTreeSet<u64> = samples.iter().flat_map(|s| s.activities.iter().map(|a| a.id)).collect();
    let mut activities = Map::new();
    for id in ids {
        let find = |s: &Sample| s.activities.iter().find(|a| a.id == id).cloned();
        let rate = |f: &dyn Fn(&ActivitySample, &ActivitySample) -> Option<u64>| {
            pairs(&|a, b, dt| match (find(a), find(b)) {
                (Some(x), Some(y)) => f(&x, &y).map(|n| n as f64 / dt),
                _ => None,
            })
        };
        // The answers buyers got: the front's own count in `seckill up`,
        // else the engine's decisions by the status they map to.
        let class_counts = |a: &ActivitySample| -> [u64; ANSWER_CLASSES.len()] {
            match &a.answers {
                Some((answers, _)) => *answers,
                None => {
                    let mut c = [0u64; ANSWER_CLASSES.len()];
                    for (i, n) in a.buys.iter().enumerate() {
                        let status = outcome_status(i);
                        let k = ANSWER_CLASSES.iter().position(|x| *x == status).unwrap_or_else(|| {
                            if status.starts_with('4') {
                                ANSWER_CLASSES.len() - 2
                            } else {
                                ANSWER_CLASSES.len() - 1
                            }
                        });
                        c[k] += n;
                    }
                    c
                }
            }
        };
        let mut answers = Map::new();
        for (k, class) in ANSWER_CLASSES.iter().enumerate() {
            let v = rate(&|x, y| Some(class_counts(y)[k].saturating_sub(class_counts(x)[k])));
            answers.insert(class.to_string(), Value::Array(v));
        }
        let latency = |q: f64| {
            pairs(&|a, b, _| match (find(a).and_then(|x| x.answers), find(b).and_then(|x| x.answers)) {
                (Some((_, la)), Some((_, lb))) => lb.since(&la).quantile_ms(q),
                _ => None,
            })
        };
        let total = |c: [u64; ANSWER_CLASSES.len()]| c.iter().sum::<u64>();
        activities.insert(
            id.to_string(),
            json!({
                "buys_per_s": rate(&|x, y| Some(total(class_counts(y)).saturating_sub(total(class_counts(x))))),
                "decided_per_s": rate(&|x, y| Some(y.buys.iter().sum::<u64>().saturating_sub(x.buys.iter().sum()))),
                "orders_per_s": rate(&|x, y| {
                    let c = BuyOutcome::Created as usize;
                    Some(y.buys[c].saturating_sub(x.buys[c]))
                }),
                "answers_per_s": answers,
                "p50_ms": latency(0.5),
                "p99_ms": latency(0.99),
                "stock_left": levels(&|s| find(s).map(|a| a.stock_left)),
                "sold": levels(&|s| find(s).map(|a| a.sold)),
            }),
        );
    }
    json!({"t": t, "engine": engine, "activities": activities})
}

/// The HTTP status (as a class name of `ANSWER_CLASSES`) of the buy outcome at `index`.
fn outcome_status(index: usize) -> String {
    BuyOutcome::ALL.get(index).map_or(500, |o| o.http_status()).to_string()
}

/// A label value in Prometheus text: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One Prometheus family: its `HELP` and `TYPE` lines, then a line per
/// (labels, value) row.
fn family(out: &mut String, name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, u64)>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in rows {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The `seckill_activity_*` families, for the activities shown.
fn activity_families(out: &mut String, acts: &[&ActivityStats]) {
    family(
        out,
        "seckill_activity_info",
        "gauge",
        "1 per activity shown, with its title and phase",
        &mut acts.iter().map(|a| {
            let v = &a.view;
            let phase = serde_json::to_value(v.phase).ok().and_then(|p| p.as_str().map(String::from));
            let labels = format!(
                "{{activity=\"{}\",title=\"{}\",phase=\"{}\"}}",
                v.id,
                label(&v.title),
                phase.unwrap_or_default()
            );
            (labels, 1)
        }),
    );
    family(
        out,
        "seckill_activity_stock_total",
        "gauge",
        "Units ever added to the activity",
        &mut acts.iter().map(|a| (format!("{{activity=\"{}\"}}", a.view.id), a.view.total_stock)),
    );
    family(
        out,
        "seckill_activity_stock_remaining",
        "gauge",
        "Units left to sell",
        &mut acts.iter().map(|a| (format!("{{activity=\"{}\"}}", a.view.id), a.view.remaining)),
    );
    family(
        out,
        "seckill_activity_sold_units",
        "gauge",
        "Units held by orders pending payment, paid or shipped",
        &mut acts.iter().map(|a| (format!("{{activity=\"{}\"}}", a.view.id), a.sold())),
    );
    family(
        out,
        "seckill_activity_orders",
        "gauge",
        "Orders of the activity in each status",
        &mut acts.iter().flat_map(|a| {
            OrderStatus::ALL.iter().map(move |s| {
                (format!("{{activity=\"{}\",status=\"{}\"}}", a.view.id, s.as_str()), a.figures.orders_in(*s))
            })
        }),
    );
    family(
        out,
        "seckill_activity_buys_total",
        "counter",
        "Buys the engine decided for the activity, by outcome",
        &mut acts.iter().flat_map(|a| {
            BuyOutcome::NAMES
                .iter()
                .zip(a.figures.buys)
                .map(move |(o, n)| (format!("{{activity=\"{}\",outcome=\"{o}\"}}", a.view.id), n))
        }),
    );
}

/// The engine-wide families: buys by outcome over every activity (`all`),
/// queue depths, the WAL, and each consumer's checkpoint and lag.
fn engine_families(out: &mut String, ctx: &AdminCtx, all: &[ActivityStats]) {
    let engine = &ctx.engine;
    let wal = &ctx.wal_status;
    let mut totals = [0u64; BuyOutcome::NAMES.len()];
    for a in all {
        for (t, n) in totals.iter_mut().zip(a.figures.buys) {
            *t += n;
        }
    }
    family(
        out,
        "seckill_engine_buys_total",
        "counter",
        "Buys the engine decided, every activity, by outcome",
        &mut BuyOutcome::NAMES.iter().zip(totals).map(|(o, n)| (format!("{{outcome=\"{o}\"}}"), n)),
    );
    family(
        out,
        "seckill_shard_queue_depth",
        "gauge",
        "Requests waiting in each shard's queue",
        &mut engine.queue_depths().into_iter().enumerate().map(|(i, n)| (format!("{{shard=\"{i}\"}}"), n as u64)),
    );
    family(
        out,
        "seckill_wal_writer_queue_depth",
        "gauge",
        "Batches waiting for the WAL writer thread (0 with one shard: it writes itself)",
        &mut std::iter::once((String::new(), engine.wal_queue_depth() as u64)),
    );
    family(
        out,
        "seckill_wal_written_lsn",
        "gauge",
        "Highest LSN written to the OS",
        &mut std::iter::once((String::new(), wal.written_lsn.load(Ordering::Acquire))),
    );
    family(
        out,
        "seckill_wal_fsyncs_total",
        "counter",
        "WAL fdatasyncs (group commits)",
        &mut std::iter::once((String::new(), wal.fsyncs.load(Ordering::Acquire))),
    );
    let durable = wal.durable_lsn.load(Ordering::Acquire);
    let checkpoints = ctx.checkpoints.all();
    family(
        out,
        "seckill_checkpoint_lsn",
        "gauge",
        "How far each consumer of the WAL has got (snapshot, persister, mirror)",
        &mut checkpoints.iter().map(|(name, lsn)| (format!("{{consumer=\"{}\"}}", label(name)), *lsn)),
    );
    family(
        out,
        "seckill_checkpoint_lag_records",
        "gauge",
        "Durable WAL records past each consumer's checkpoint (read by the engine at scrape time)",
        &mut checkpoints
            .iter()
            .map(|(name, lsn)| (format!("{{consumer=\"{}\"}}", label(name)), durable.saturating_sub(*lsn))),
    );
}

impl OperatorData for Dashboard {
    fn metrics_text(&self, out: &mut String) {
        let engine = &self.ctx.engine;
        let now_ms = engine.clock().now_ms();
        let all = engine.activity_stats();
        let acts: Vec<&ActivityStats> = all.iter().filter(|a| shown(a, now_ms)).collect();
        activity_families(out, &acts);
        engine_families(out, &self.ctx, &all);
    }

    fn dashboard_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_answer_classes() {
        assert_eq!(outcome_status(BuyOutcome::Created as usize), "201");
        assert_eq!(outcome_status(BuyOutcome::SoldOut as usize), "409");
        assert_eq!(outcome_status(BuyOutcome::RateLimited as usize), "429");
        assert_eq!(outcome_status(99), "500");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
