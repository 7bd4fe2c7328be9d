//! Bytes per purchase record in `seckill_engine::purchases::Purchases`.
//!
//! `cargo run -p seckill-benches --release --bin engine-memory`
//!
//! A counting global allocator tracks live heap bytes (what was asked of
//! the allocator, not what malloc keeps for itself) and the peak. Each case
//! inserts distinct users into one activity's table and reports the live
//! bytes it added divided by the records, plus the peak while it grew.

use seckill_benches::user_id;
use seckill_engine::purchases::Purchases;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged (so `System`'s guarantees are ours) and only adds to or
// subtracts from two atomics, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RECORDS: u64 = 10_000_000;

/// Builds a table with `make`, inserts `RECORDS` distinct users holding
/// `quantity` units each, and prints what it cost.
fn measure(label: &str, quantity: u32, make: impl FnOnce() -> Purchases) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let mut table = make();
    for i in 0..RECORDS {
        table.add(user_id(i), quantity);
    }
    let took = started.elapsed();
    let live = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(table.users() as u64, RECORDS);
    assert_eq!(table.units(), RECORDS * quantity as u64);
    println!(
        "{label:<44} {:>6.2} B/record  (live {:>6.1} MiB, peak while growing {:>6.1} MiB = {:>5.2} B/record, {:>4} ms)",
        live as f64 / RECORDS as f64,
        live as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        peak as f64 / RECORDS as f64,
        took.as_millis(),
    );
    drop(table);
    assert_eq!(LIVE.load(Ordering::Relaxed), before, "the table freed everything");
}

fn main() {
    println!("Purchases: {RECORDS} distinct users, one activity (target <= 24 B/record)");
    measure("quantity 1, grown from empty", 1, Purchases::default);
    measure("quantity 1, with_capacity(10M)", 1, || Purchases::with_capacity(RECORDS as usize));
    measure("quantity 2 (side map), grown from empty", 2, Purchases::default);
}
