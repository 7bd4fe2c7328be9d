//! Buys/s and latency while a snapshot of 1M orders is written, against the
//! same load without one (docs/PERFORMANCE.md, "Snapshots under load").
//!
//! `cargo run --release -p seckill-engine --example snapshot_load -- [ORDERS] [SECONDS] [IN_FLIGHT]`
//!
//! A real `Node` on the disk of the target dir (fsync durability), one
//! activity, ORDERS buys (default 1,000,000) to fill it, then two phases of
//! closed-loop buys by new users with IN_FLIGHT (default 256) outstanding:
//! without a snapshot for SECONDS (default 5), and while `snapshot` runs
//! (at least SECONDS, until it is done). Also prints the process's CPU time
//! per buy in each phase (`/proc/self/stat`, user + system), and what two
//! snapshots taken with no load cost in memory: the first (after the fill,
//! from the WAL only) and the last (after the load, from the snapshot taken
//! under load plus the WAL after it): RSS before, and the peak RSS
//! (`VmHWM`, reset through `/proc/self/clear_refs`) while it is built.

use crossbeam_channel::{unbounded, Receiver, Sender};
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::{ActivitySpec, EngineConfig, Envelope, SystemClock};
use seckill_proto::{Request, Response};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Load {
    tx: Sender<(u64, Response)>,
    rx: Receiver<(u64, Response)>,
    next_user: u64,
    sent_at: std::collections::HashMap<u64, Instant>,
}

impl Load {
    fn submit(&mut self, node: &Node, activity_id: u64) {
        self.next_user += 1;
        let u = self.next_user;
        let req = Request::Buy { user_id: u, activity_id, quantity: 1, idempotency_key: 0, buy_token_ok: false };
        loop {
            let env = Envelope { req: req.clone(), tag: u, reply: self.tx.clone().into() };
            if node.engine.try_submit(env).is_ok() {
                break;
            }
            std::thread::yield_now();
        }
        self.sent_at.insert(u, Instant::now());
    }

    /// Runs until `until` says stop; returns (buys, latencies in µs, seconds).
    fn run(
        &mut self,
        node: &Node,
        activity_id: u64,
        in_flight: usize,
        until: impl Fn(u64) -> bool,
    ) -> (u64, Vec<u64>, f64) {
        while self.sent_at.len() < in_flight {
            self.submit(node, activity_id);
        }
        let started = Instant::now();
        let (mut done, mut lat) = (0u64, Vec::new());
        while !until(done) {
            let (tag, resp) = self.rx.recv().expect("answers");
            assert!(matches!(resp, Response::Order(_)), "buy failed: {resp:?}");
            if let Some(t) = self.sent_at.remove(&tag) {
                lat.push(t.elapsed().as_micros() as u64);
            }
            done += 1;
            self.submit(node, activity_id);
        }
        (done, lat, started.elapsed().as_secs_f64())
    }

    fn drain(&mut self) {
        while !self.sent_at.is_empty() {
            let (tag, _) = self.rx.recv().expect("answers");
            self.sent_at.remove(&tag);
        }
    }
}

fn pct(lat: &mut [u64], p: f64) -> u64 {
    lat.sort_unstable();
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in MB; 0 if unreadable.
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The process's user + system CPU time so far, in seconds (clock ticks of 10 ms).
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at `state`.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Takes a snapshot with no load running and prints what it cost in memory.
fn idle_snapshot(node: &Node, what: &str) {
    let rss_before = status_mb("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let lsn = node.wal.snapshot().expect("snapshot");
    let took = started.elapsed().as_secs_f64();
    let peak = status_mb("VmHWM");
    println!(
        "idle snapshot ({what}) at LSN {lsn}: took {took:.2} s; RSS {rss_before:.0} MB before, peak {peak:.0} MB \
         while built (+{:.0} MB)",
        peak - rss_before
    );
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let orders = args.first().copied().unwrap_or(1_000_000);
    let secs = args.get(1).copied().unwrap_or(5);
    let in_flight = args.get(2).copied().unwrap_or(256) as usize;
    // On the real disk (the target dir), not a tmpfs: fsync must cost what it costs.
    let base_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp");
    std::fs::create_dir_all(&base_dir).expect("target/tmp");
    let dir = tempfile::tempdir_in(&base_dir).expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path());
    cfg.engine = EngineConfig { shards: 1, queue_capacity: 65_536, ..EngineConfig::default() };
    cfg.snapshot_every_records = u64::MAX;
    let node = Node::open(cfg, Arc::new(SystemClock)).expect("open");
    let now = SystemClock.now_ms_value();
    let spec = ActivitySpec {
        title: "snapshot load".into(),
        product_id: None,
        price_cents: 100,
        stock: orders * 4 + 10_000_000,
        terms: seckill_proto::SaleTerms {
            starts_at_ms: now - 1000,
            ends_at_ms: now + 86_400_000,
            per_user_limit: 1,
            payment_timeout_s: 86_400,
            require_buy_token: false,
            gate_factor: 5,
        },
    };
    let a = node.engine.create_activity(spec).expect("activity").id;
    let (tx, rx) = unbounded();
    let mut load = Load { tx, rx, next_user: 0, sent_at: Default::default() };

    let t = Instant::now();
    let (n, _, _) = load.run(&node, a, 4096, |done| done >= orders);
    load.drain();
    println!("filled: {n} orders in {:.1} s", t.elapsed().as_secs_f64());
    idle_snapshot(&node, "from the WAL");

    let window = Duration::from_secs(secs);
    let started = Instant::now();
    let cpu0 = cpu_s();
    let (n, mut lat, s) = load.run(&node, a, in_flight, |_| started.elapsed() >= window);
    load.drain();
    let base_cpu_us = (cpu_s() - cpu0) * 1e6 / n as f64;
    let base = (n as f64 / s, pct(&mut lat, 0.50), pct(&mut lat, 0.99), pct(&mut lat, 0.999));
    let rss_before = status_mb("VmRSS");
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let snapper = node.wal.snapshotter();
    let snap_started = Instant::now();
    let snap = std::thread::spawn(move || {
        let r = snapper.snapshot();
        (r, snap_started.elapsed())
    });
    let started = Instant::now();
    let cpu0 = cpu_s();
    let (n, mut lat, s) = load.run(&node, a, in_flight, |_| started.elapsed() >= window && snap.is_finished());
    load.drain();
    let during_cpu_us = (cpu_s() - cpu0) * 1e6 / n as f64;
    let hwm_during = status_mb("VmHWM");
    let (snap_result, snap_took) = snap.join().expect("snapshot thread");
    let lsn = snap_result.expect("snapshot");
    let during = (n as f64 / s, pct(&mut lat, 0.50), pct(&mut lat, 0.99), pct(&mut lat, 0.999));
    println!("snapshot at LSN {lsn} ({orders}+ orders) took {:.2} s", snap_took.as_secs_f64());
    println!(
        "under load: RSS {rss_before:.0} MB before the snapshot, peak {hwm_during:.0} MB during it (+{:.0} MB, \
         the shard's new orders included)",
        hwm_during - rss_before
    );
    idle_snapshot(&node, "from the last snapshot and the WAL");
    println!("| phase | buys/s | p50 µs | p99 µs | p99.9 µs | CPU µs/buy |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| no snapshot | {:.0} | {} | {} | {} | {base_cpu_us:.1} |", base.0, base.1, base.2, base.3);
    println!(
        "| snapshot being written | {:.0} | {} | {} | {} | {during_cpu_us:.1} |",
        during.0, during.1, during.2, during.3
    );
}

trait NowMs {
    fn now_ms_value(&self) -> u64;
}

impl NowMs for SystemClock {
    fn now_ms_value(&self) -> u64 {
        seckill_engine::Clock::now_ms(self)
    }
}
