//! The load report: numbers, the human table and the JSON form.

use super::{LoadConfig, VerifyReport, WorkerOut};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: (h.mean()).round() / 1000.0,
        }
    }
}

/// One row of the outcome table.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// HTTP status; 0 when no answer came (`code` says why).
    pub status: u16,
    /// The error code of the answer (`sold_out`, `busy`, …), or the failure (`timeout`, …); empty for 201.
    pub code: String,
    pub count: u64,
}

#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// `closed` or `open`.
    pub mode: &'static str,
    pub url: String,
    pub activity_id: u64,
    pub users: u64,
    pub connections: usize,
    /// Target rate of an open-loop run (requests per second).
    pub rate: Option<f64>,
    /// Requests answered or failed.
    pub requests: u64,
    pub duration_s: f64,
    pub throughput_rps: f64,
    /// 201 answers (orders created).
    pub created: u64,
    /// Requests that got no HTTP answer.
    pub failed: u64,
    /// Connections reopened after a failure.
    pub reconnects: u64,
    /// Count per `"201"`, `"409 sold_out"`, `"no answer timeout"`, …
    pub outcomes: BTreeMap<String, u64>,
    pub outcome_rows: Vec<Outcome>,
    /// Closed loop: from send to answer. Open loop: from the due send time to answer.
    pub latency_ms: Percentiles,
    /// Time from the start to the first `sold_out` answer.
    pub sold_out_after_s: Option<f64>,
    /// The first transport failure, if any (for the error message).
    pub first_failure: Option<String>,
    /// Set when `--verify` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    /// Every 201: `(user_id, order_id)`.
    #[serde(skip)]
    pub orders: Vec<(u64, String)>,
    /// Users with a request whose outcome is unknown (no answer or a 5xx).
    #[serde(skip)]
    pub unknown_users: Vec<u64>,
    /// All latencies, microseconds.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

fn key(status: u16, code: &str) -> String {
    match (status, code) {
        (0, c) => format!("no answer {c}"),
        (s, "") => s.to_string(),
        (s, c) => format!("{s} {c}"),
    }
}

pub(super) fn build(
    cfg: &LoadConfig,
    base: &str,
    outs: Vec<WorkerOut>,
    elapsed: Duration,
    first_sold_out: Option<Duration>,
) -> LoadReport {
    let mut hist = super::histogram();
    let mut counts: BTreeMap<(u16, String), u64> = BTreeMap::new();
    let mut orders = Vec::new();
    let mut unknown = Vec::new();
    let mut first_failure = None;
    let mut reconnects = 0;
    for o in outs {
        // Same bounds everywhere: adding cannot fail.
        let _ = hist.add(&o.hist);
        for ((s, c), n) in o.tally.counts {
            *counts.entry((s, c)).or_default() += n;
        }
        orders.extend(o.created);
        unknown.extend(o.unknown);
        first_failure = first_failure.or(o.first_failure);
        reconnects += o.reconnects;
    }
    unknown.sort_unstable();
    unknown.dedup();
    let requests = hist.len();
    let secs = elapsed.as_secs_f64();
    let count_status = |status: u16| counts.iter().filter(|((s, _), _)| *s == status).map(|(_, n)| n).sum::<u64>();
    let created = count_status(201);
    let failed = count_status(0);
    let outcome_rows: Vec<Outcome> =
        counts.iter().map(|((s, c), n)| Outcome { status: *s, code: c.clone(), count: *n }).collect();
    LoadReport {
        mode: if cfg.rate.is_some() { "open" } else { "closed" },
        url: base.to_string(),
        activity_id: cfg.activity_id,
        users: cfg.users,
        connections: cfg.connections,
        rate: cfg.rate,
        requests,
        duration_s: (secs * 1e6).round() / 1e6,
        throughput_rps: if secs > 0.0 { (requests as f64 / secs * 10.0).round() / 10.0 } else { 0.0 },
        created,
        failed,
        reconnects,
        outcomes: counts.iter().map(|((s, c), n)| (key(*s, c), *n)).collect(),
        outcome_rows,
        latency_ms: Percentiles::of(&hist),
        sold_out_after_s: first_sold_out.map(|d| (d.as_secs_f64() * 1e6).round() / 1e6),
        first_failure,
        verify: None,
        orders,
        unknown_users: unknown,
        histogram: hist,
    }
}

impl LoadReport {
    /// The short human-readable table printed on stdout.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let _ = writeln!(
            s,
            "seckill load: activity {} at {}, {mode}, {} connections, {} users",
            self.activity_id, self.url, self.connections, self.users
        );
        let _ = writeln!(
            s,
            "  requests     {} in {:.2} s = {:.0} req/s",
            self.requests, self.duration_s, self.throughput_rps
        );
        let _ = writeln!(s, "  outcomes");
        for (k, n) in &self.outcomes {
            let pct = if self.requests > 0 { 100.0 * *n as f64 / self.requests as f64 } else { 0.0 };
            let _ = writeln!(s, "    {k:<28} {n:>10} {pct:>6.1}%");
        }
        let l = &self.latency_ms;
        let what = if self.rate.is_some() { "from due time" } else { "send to answer" };
        let _ = writeln!(s, "  latency ms   ({what})");
        let _ = writeln!(
            s,
            "    p50 {:.2}   p90 {:.2}   p99 {:.2}   p99.9 {:.2}   max {:.2}   mean {:.2}",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        match self.sold_out_after_s {
            Some(t) => {
                let _ = writeln!(s, "  sold out     after {t:.3} s (first sold_out answer)");
            }
            None => {
                let _ = writeln!(s, "  sold out     not seen");
            }
        }
        if let Some(f) = &self.first_failure {
            let _ = writeln!(s, "  failures     {} without an answer, first: {f}", self.failed);
        }
        if self.reconnects > 0 {
            let _ = writeln!(s, "  reconnects   {}", self.reconnects);
        }
        s
    }
}
