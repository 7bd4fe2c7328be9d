//! Limits and defaults, defined once: the engine's checks, the CLI's clap
//! defaults and every error message that names a bound read them from here.

/// Hard ceiling on shards (the order id has 12 bits for the shard; 256
/// keeps per-shard tables and threads reasonable).
pub const SHARDS_MAX: usize = 256;
/// Requests waiting per shard before new ones are answered `busy`
/// (`--queue-capacity`).
pub const QUEUE_CAPACITY_DEFAULT: usize = 4096;
/// Buy clicks each user may make per minute under `seckill engine`/`up`
/// (`--buys-per-minute`; DESIGN.md: 60).
pub const BUYS_PER_MINUTE_DEFAULT: u32 = 60;

/// Default of `EngineConfig::group_commit_window_us`: on the 2-core VM of
/// docs/PERFORMANCE.md an fdatasync costs ~50 µs of CPU and ~150 µs of wall
/// time; this window took groups from ~12 to ~30 records and CPU per
/// durable buy down by 10–15 %.
pub const GROUP_COMMIT_WINDOW_US_DEFAULT: u64 = 200;
/// Longest window accepted: beyond it the wait costs more latency than the
/// fsyncs it saves are worth.
pub const GROUP_COMMIT_WINDOW_US_MAX: u64 = 5_000;
/// A batch at least this large is committed at once; a smaller one (of two
/// or more, so buyers are arriving) waits the group-commit window first.
/// The window pays when groups are tiny (an fsync's CPU shared by a few
/// buys); once a batch is this large, waiting only stretches the cycle a
/// closed loop of buyers goes round. Measured (docs/PERFORMANCE.md, wrk
/// -c64, same binary): 64 → 50k buys/s, 16 → 57–60k, no window 63k, CPU per
/// buy the same; at 20k buys/s open loop 16 keeps the window's CPU saving
/// (22 µs per request, against 27.5 with no window).
pub const GATHER_TARGET: usize = 16;

/// A WAL segment is closed and a new one started past this size (`--wal-segment-bytes`).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// A snapshot is written after this many log records (`--snapshot-every`).
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 1_000_000;

/// Limits that keep one bad admin call from exhausting memory or overflowing sums.
pub(crate) const STOCK_MAX: u64 = 1_000_000_000;
/// Most units one buyer may hold in one activity (`per_user_limit`, quotas).
pub const PER_USER_LIMIT_MAX: u32 = 10_000;
/// Longest time a buyer may be given to pay (7 days).
pub(crate) const PAYMENT_TIMEOUT_S_MAX: u32 = 7 * 24 * 3600;
/// Longest title, name, description or URL, in bytes.
pub(crate) const TEXT_BYTES_MAX: usize = 1024;
/// Largest `gate_factor` (buy tokens issued per unit of stock).
pub(crate) const GATE_FACTOR_MAX: u32 = 1000;

/// Defaults of an activity's optional settings (DESIGN.md), applied by
/// `ActivitySpec::new` when an operator leaves them out.
pub(crate) const PER_USER_LIMIT_DEFAULT: u32 = 1;
/// Seconds a buyer has to pay, unless the activity says otherwise.
pub(crate) const PAYMENT_TIMEOUT_S_DEFAULT: u32 = 1800;
/// Buy tokens issued per unit of stock, unless the activity says otherwise.
pub(crate) const GATE_FACTOR_DEFAULT: u32 = 5;
