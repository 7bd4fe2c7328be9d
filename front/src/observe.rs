//! What the front counts per request, without allocating or locking:
//!
//! * [`HttpMetrics`]: `seckill_http_requests_total{route,status}` and
//!   `seckill_http_request_seconds{route}` (a Prometheus histogram), each
//!   handle registered the first time its labels occur and then reused;
//! * [`BuyAnswers`]: per activity, the answers buyers got (201, 409, 429,
//!   503, …) and how long they took, for the operator's dashboard of
//!   `seckill up` (the front and the engine share the process there).

use metrics::{Counter, Histogram};
use seckill_proto::stats::{LatencyCounts, LatencyHistogram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Route names as `route()` in `http.rs` returns them (the `route` label).
/// A name missing here is still counted, through the slower macro path.
pub const ROUTES: [&str; 18] = [
    "healthz",
    "readyz",
    "activities.list",
    "activities.show",
    "buy",
    "buy_token",
    "orders.list",
    "orders.show",
    "orders.cancel",
    "orders.refund",
    "orders.pay",
    "payments.notify",
    "wrong_method",
    "unknown",
    // The buyer page's routes, last: the scan finds `buy` as soon as before.
    "info",
    "openapi",
    "demo.token",
    "page",
];

/// Values of the `status` label: the exact status for the ones the API
/// uses, else the class (`2xx`, `4xx`, `5xx`).
pub const STATUS_LABELS: [&str; 17] = [
    "200", "201", "400", "401", "404", "405", "408", "409", "413", "422", "429", "431", "503", "2xx", "3xx", "4xx",
    "5xx",
];

/// The index in [`STATUS_LABELS`] of `status`.
pub fn status_index(status: u16) -> usize {
    match status {
        200 => 0,
        201 => 1,
        400 => 2,
        401 => 3,
        404 => 4,
        405 => 5,
        408 => 6,
        409 => 7,
        413 => 8,
        422 => 9,
        429 => 10,
        431 => 11,
        503 => 12,
        s if s < 300 => 13,
        s if s < 400 => 14,
        s if s < 500 => 15,
        _ => 16,
    }
}

/// The front's request counters and latency histograms. Built after the
/// recorder is installed (`bind`), so every handle is the recorder's.
pub struct HttpMetrics {
    requests: [[OnceLock<Counter>; STATUS_LABELS.len()]; ROUTES.len()],
    seconds: [OnceLock<Histogram>; ROUTES.len()],
    /// `seckill_front_ip_rate_limited_total`
    pub ip_rate_limited: Counter,
    /// `seckill_front_activity_reads_total{source="cache"|"shed"|"engine"}`
    pub activity_reads_cache: Counter,
    pub activity_reads_shed: Counter,
    pub activity_reads_engine: Counter,
    /// `seckill_front_sold_out_short_circuit_total`
    pub sold_out_short_circuit: Counter,
    /// `seckill_front_own_key_replayed_total`: buys the front retried on
    /// another replica that had already made their order (answered 201).
    pub own_key_replayed: Counter,
    /// `seckill_payment_notify_refused_total`
    pub notify_refused: Counter,
    /// `seckill_http_connections_refused_total{why="per_ip"}`
    pub connections_refused_per_ip: Counter,
    /// `seckill_http_requests_cut_total`
    pub requests_cut: Counter,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            seconds: std::array::from_fn(|_| OnceLock::new()),
            ip_rate_limited: metrics::counter!("seckill_front_ip_rate_limited_total"),
            activity_reads_cache: metrics::counter!("seckill_front_activity_reads_total", "source" => "cache"),
            activity_reads_shed: metrics::counter!("seckill_front_activity_reads_total", "source" => "shed"),
            activity_reads_engine: metrics::counter!("seckill_front_activity_reads_total", "source" => "engine"),
            sold_out_short_circuit: metrics::counter!("seckill_front_sold_out_short_circuit_total"),
            own_key_replayed: metrics::counter!("seckill_front_own_key_replayed_total"),
            notify_refused: metrics::counter!("seckill_payment_notify_refused_total"),
            connections_refused_per_ip: metrics::counter!("seckill_http_connections_refused_total", "why" => "per_ip"),
            requests_cut: metrics::counter!("seckill_http_requests_cut_total"),
        }
    }
}

impl HttpMetrics {
    /// Counts one answered request.
    #[inline]
    pub fn record(&self, route: &'static str, status: u16, took: Duration) {
        let s = status_index(status);
        match ROUTES.iter().position(|r| *r == route) {
            Some(r) => {
                self.requests[r][s]
                    .get_or_init(|| {
                        metrics::counter!("seckill_http_requests_total", "route" => ROUTES[r], "status" => STATUS_LABELS[s])
                    })
                    .increment(1);
                self.seconds[r]
                    .get_or_init(|| metrics::histogram!("seckill_http_request_seconds", "route" => ROUTES[r]))
                    .record(took.as_secs_f64());
            }
            None => {
                metrics::counter!("seckill_http_requests_total", "route" => route, "status" => STATUS_LABELS[s])
                    .increment(1);
                metrics::histogram!("seckill_http_request_seconds", "route" => route).record(took.as_secs_f64());
            }
        }
    }
}

/// Classes of buy answers the dashboard shows, in this order: 201 (an
/// order), 200 (the same Idempotency-Key again), 409 (sold out, limit
/// reached, not started, …), 429, 503, any other 4xx, any other 5xx.
pub const ANSWER_CLASSES: [&str; 7] = ["201", "200", "409", "429", "503", "4xx", "5xx"];

fn answer_class(status: u16) -> usize {
    match status {
        201 => 0,
        200 => 1,
        409 => 2,
        429 => 3,
        503 => 4,
        s if s < 500 => 5,
        _ => 6,
    }
}

/// Activities tracked at once: an activity id uses entry `id % ACTIVITY_SLOTS`;
/// a newer id takes the entry over from an older one (ids only grow, so by
/// then that sale is long over).
pub const ACTIVITY_SLOTS: usize = 256;

/// An entry being taken over.
const CLAIMING: u64 = u64::MAX;

#[derive(Default)]
struct Entry {
    /// The activity counted here (0: none yet).
    id: AtomicU64,
    answers: [AtomicU64; ANSWER_CLASSES.len()],
    latency: LatencyHistogram,
}

/// The buy answers of one front, per activity. Lock-free, fixed size.
pub struct BuyAnswers {
    entries: Box<[Entry]>,
}

impl Default for BuyAnswers {
    fn default() -> Self {
        Self { entries: (0..ACTIVITY_SLOTS).map(|_| Entry::default()).collect() }
    }
}

/// One activity's answers so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityAnswers {
    pub activity_id: u64,
    /// Per [`ANSWER_CLASSES`].
    pub answers: [u64; ANSWER_CLASSES.len()],
    pub latency: LatencyCounts,
}

impl BuyAnswers {
    /// Counts one buy answer for `activity_id`.
    #[inline]
    pub fn record(&self, activity_id: u64, status: u16, took: Duration) {
        if activity_id == 0 || activity_id == CLAIMING {
            return;
        }
        let e = &self.entries[(activity_id % ACTIVITY_SLOTS as u64) as usize];
        let mut current = e.id.load(Ordering::Acquire);
        if current != activity_id {
            // An older activity's entry (or an empty one): take it over,
            // starting from zero. A newer one's: this answer is not counted.
            if current == CLAIMING || (current > activity_id) {
                return;
            }
            if e.id.compare_exchange(current, CLAIMING, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return;
            }
            for a in &e.answers {
                a.store(0, Ordering::Relaxed);
            }
            e.latency.reset();
            e.id.store(activity_id, Ordering::Release);
            current = activity_id;
        }
        debug_assert_eq!(current, activity_id);
        e.answers[answer_class(status)].fetch_add(1, Ordering::Relaxed);
        e.latency.record(took);
    }

    /// Every activity counted so far, by id.
    pub fn read(&self) -> Vec<ActivityAnswers> {
        let mut out: Vec<ActivityAnswers> = self
            .entries
            .iter()
            .filter_map(|e| {
                let id = e.id.load(Ordering::Acquire);
                (id != 0 && id != CLAIMING).then(|| ActivityAnswers {
                    activity_id: id,
                    answers: std::array::from_fn(|i| e.answers[i].load(Ordering::Relaxed)),
                    latency: e.latency.read(),
                })
            })
            .collect();
        out.sort_unstable_by_key(|a| a.activity_id);
        out
    }

    /// The `front` object of `stats` in `seckill up` (docs/API.md):
    /// `{"buy_answers": {"<activity id>": {"201": n, …}}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let by_activity: serde_json::Map<String, serde_json::Value> = self
            .read()
            .into_iter()
            .map(|a| {
                let counts: serde_json::Map<String, serde_json::Value> =
                    ANSWER_CLASSES.iter().zip(a.answers).map(|(k, n)| (k.to_string(), n.into())).collect();
                (a.activity_id.to_string(), counts.into())
            })
            .collect();
        serde_json::json!({ "buy_answers": by_activity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_follow_their_index() {
        for (s, label) in [(200, "200"), (201, "201"), (409, "409"), (429, "429"), (503, "503"), (422, "422")] {
            assert_eq!(STATUS_LABELS[status_index(s)], label);
        }
        assert_eq!(STATUS_LABELS[status_index(204)], "2xx");
        assert_eq!(STATUS_LABELS[status_index(302)], "3xx");
        assert_eq!(STATUS_LABELS[status_index(418)], "4xx");
        assert_eq!(STATUS_LABELS[status_index(500)], "5xx");
    }

    #[test]
    fn answers_are_kept_per_activity_and_newer_ids_take_entries_over() {
        let b = BuyAnswers::default();
        b.record(1, 201, Duration::from_millis(1));
        b.record(1, 409, Duration::from_millis(1));
        b.record(1, 409, Duration::from_millis(1));
        b.record(2, 503, Duration::from_millis(3));
        b.record(1, 401, Duration::from_millis(1));
        let r = b.read();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].activity_id, 1);
        assert_eq!(r[0].answers, [1, 0, 2, 0, 0, 1, 0]);
        assert_eq!(r[0].latency.total(), 4);
        assert_eq!(r[1].answers, [0, 0, 0, 0, 1, 0, 0]);
        // Same entry, newer activity: it starts from zero; the older one is gone.
        let newer = 1 + ACTIVITY_SLOTS as u64;
        b.record(newer, 201, Duration::from_millis(1));
        b.record(1, 201, Duration::from_millis(1));
        let r = b.read();
        assert_eq!(r.iter().map(|a| a.activity_id).collect::<Vec<_>>(), [2, newer]);
        assert_eq!(r[1].answers, [1, 0, 0, 0, 0, 0, 0]);
        let j = b.to_json();
        assert_eq!(j["buy_answers"]["2"]["503"], 1);
    }
}
