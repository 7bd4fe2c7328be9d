//! The engine handle: starts the shards, routes requests to their owners,
//! and runs the control path (products, activities, stock) for operators.

use crate::activity::{Activity, ActivityChanges, Product, STOCK_MAX, TEXT_BYTES_MAX};
use crate::clock::Clock;
use crate::commit::{Batch, Reply, Sink};
use crate::event::Event;
use crate::limits::{GATE_FACTOR_DEFAULT, PAYMENT_TIMEOUT_S_DEFAULT, PER_USER_LIMIT_DEFAULT};
use crate::shard::{self, state::view_of, Control, Envelope, ShardState};
use crate::stats::{ActivityStats, ShardCounters, SlotFigures};
use crate::stock::StockPool;
use crossbeam_channel::{bounded, unbounded, Sender, TrySendError};
use parking_lot::Mutex;
use seckill_proto::group::id_range;
use seckill_proto::ActivityStatus;
use seckill_proto::{ActivityView, ErrorCode, Request, Response, Route, SaleTerms, GROUPS_MAX};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::limits::{GROUP_COMMIT_WINDOW_US_DEFAULT, GROUP_COMMIT_WINDOW_US_MAX, SHARDS_MAX};

/// How the engine is started: shard count, queue sizes, click limit, group-commit window.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub shards: usize,
    /// Requests waiting per shard before new ones are answered `busy`.
    pub queue_capacity: usize,
    /// Buy clicks (buys and buy-token requests) each user may make per
    /// minute, kept by the user's shard; 0 turns the limit off.
    pub clicks_per_minute: u32,
    /// When the shard owns an fsyncing log (one-shard layout) and a batch
    /// holds 2..`limits::GATHER_TARGET` requests, it waits this long for more
    /// before the write: fewer, larger fsyncs when buyers arrive faster than
    /// the disk syncs, at most this much added latency. 0 turns it off.
    pub group_commit_window_us: u64,
    /// The group this engine is (`--group`, docs/REPLICATION.md "Activities
    /// over groups"): its activity, product and order ids carry it. 0 for
    /// a deployment of one group, whose ids are those before groups.
    pub group: u8,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            shards: cores.saturating_sub(1).max(1),
            queue_capacity: crate::limits::QUEUE_CAPACITY_DEFAULT,
            clicks_per_minute: 0,
            group_commit_window_us: GROUP_COMMIT_WINDOW_US_DEFAULT,
            group: 0,
        }
    }
}

/// An operator's request refused, with a message that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdminError {
    pub code: ErrorCode,
    pub message: String,
}

impl AdminError {
    /// An error with `code` and an operator-facing `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// What an operator gives to create an activity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivitySpec {
    pub title: String,
    pub product_id: Option<u64>,
    pub price_cents: u64,
    pub stock: u64,
    pub terms: SaleTerms,
}

impl ActivitySpec {
    /// A spec with the engine's defaults for every optional setting: no
    /// product, `PER_USER_LIMIT_DEFAULT` unit per buyer,
    /// `PAYMENT_TIMEOUT_S_DEFAULT` seconds to pay, no buy token,
    /// `GATE_FACTOR_DEFAULT` tokens per unit (`limits.rs`).
    pub fn new(title: String, price_cents: u64, stock: u64, starts_at_ms: u64, ends_at_ms: u64) -> Self {
        ActivitySpec {
            title,
            product_id: None,
            price_cents,
            stock,
            terms: SaleTerms {
                starts_at_ms,
                ends_at_ms,
                per_user_limit: PER_USER_LIMIT_DEFAULT,
                payment_timeout_s: PAYMENT_TIMEOUT_S_DEFAULT,
                require_buy_token: false,
                gate_factor: GATE_FACTOR_DEFAULT,
            },
        }
    }

    /// The spec with the terms `changes` gives (its title and price are
    /// ignored: a spec has its own).
    pub fn with(mut self, changes: &ActivityChanges) -> Self {
        changes.apply_terms(&mut self.terms);
        self
    }
}

/// Products and activities as the control path owns them. Shards hold
/// read-only copies of the activities, pushed to them on every change.
#[derive(Default)]
pub struct Catalog {
    pub products: BTreeMap<u64, Product>,
    pub activities: BTreeMap<u64, (Arc<Activity>, Arc<StockPool>)>,
}

impl Catalog {
    /// Applies a control event (live after it is durable, or in recovery).
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::ProductCreated(p) => {
                self.products.insert(p.id, p.clone());
            }
            Event::ActivityUpserted(a) => {
                let pool = match self.activities.get(&a.id) {
                    Some((_, pool)) => pool.clone(),
                    None => Arc::new(StockPool::new(0)),
                };
                self.activities.insert(a.id, (Arc::new(a.clone()), pool));
            }
            Event::StockAdded { activity_id, amount } => {
                if let Some((_, pool)) = self.activities.get(activity_id) {
                    pool.add(*amount);
                }
            }
            _ => {}
        }
    }

    /// The next product id of `group`'s range (`proto::group::id_range`).
    fn next_product_id(&self, group: u8) -> u64 {
        let range = id_range(group);
        self.products.range(range.clone()).next_back().map_or(*range.start(), |(id, _)| id + 1)
    }

    /// The next activity id of `group`'s range.
    fn next_activity_id(&self, group: u8) -> u64 {
        let range = id_range(group);
        self.activities.range(range.clone()).next_back().map_or(*range.start(), |(id, _)| id + 1)
    }
}

/// How the control path makes its events durable.
enum ControlLog {
    Immediate,
    /// Through the WAL writer thread, like the shards' batches.
    Writer(crossbeam_channel::Sender<Batch>),
    /// Through shard 0, which owns the log (`Sink::Own`).
    Shard0,
}

struct ShardHandle {
    data: Sender<Envelope>,
    control: Sender<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The running engine: shard threads, their queues, and the control path
/// (catalog of products and activities) that operators change.
pub struct Engine {
    shards: Vec<ShardHandle>,
    /// Each shard's per-activity counters (`activity_stats`).
    counters: Vec<Arc<ShardCounters>>,
    catalog: Mutex<Catalog>,
    log: ControlLog,
    clock: Arc<dyn Clock>,
    round_robin: AtomicUsize,
    /// `EngineConfig::group`: the group its ids carry.
    group: u8,
    closed: AtomicBool,
    /// `seckill_engine_busy_total`, registered once.
    busy_total: metrics::Counter,
}

impl Engine {
    /// Starts an empty engine.
    pub fn start(config: EngineConfig, clock: Arc<dyn Clock>, sink: Sink) -> Self {
        let states = (0..config.shards).map(|i| ShardState::in_group(config.group, i as u16)).collect();
        Self::start_from(config, clock, sink, Catalog::default(), states)
    }

    /// Starts from recovered state: a catalog and one state per shard.
    pub(crate) fn start_from(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        sink: Sink,
        catalog: Catalog,
        states: Vec<ShardState>,
    ) -> Self {
        assert!((1..=SHARDS_MAX).contains(&config.shards), "shards must be 1..={SHARDS_MAX}");
        assert_eq!(states.len(), config.shards);
        assert!(config.queue_capacity > 0);
        assert!(config.group_commit_window_us <= GROUP_COMMIT_WINDOW_US_MAX);
        assert!((config.group as usize) < GROUPS_MAX, "group must be below {GROUPS_MAX}");
        assert!(states.iter().all(|s| s.group() == config.group), "every shard issues the engine's group's ids");
        let shared = sink.share();
        assert!(shared.is_some() || config.shards == 1, "a shard may own the log only when it is the only shard");
        let log = match &shared {
            Some(Sink::Log(tx)) | Some(Sink::Replicated(tx)) => ControlLog::Writer(tx.clone()),
            Some(_) => ControlLog::Immediate,
            None => ControlLog::Shard0,
        };
        let mut own = Some(sink);
        let counters = states.iter().map(|s: &ShardState| s.counters.clone()).collect();
        let shards = states
            .into_iter()
            .enumerate()
            .map(|(i, mut state)| {
                // The limit first: installing an activity makes room for its buyers' clicks.
                state.clicks = crate::shard::clicks::ClickLimit::new(config.clicks_per_minute);
                for (activity, pool) in catalog.activities.values() {
                    state.install(activity.clone(), pool.clone());
                }
                let (data_tx, data_rx) = bounded(config.queue_capacity);
                let (control_tx, control_rx) = unbounded();
                let sink = match &shared {
                    Some(shared) => shared.share().expect("a shared sink shares"),
                    None => own.take().expect("one shard owns the log"),
                };
                let gather = (sink.owns_fsyncing_log() && config.group_commit_window_us > 0)
                    .then(|| std::time::Duration::from_micros(config.group_commit_window_us));
                let clock = clock.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("shard-{i}"))
                    .spawn(move || {
                        crate::abort_on_panic("shard", || shard::run(state, data_rx, control_rx, sink, clock, gather))
                    })
                    .expect("spawning a shard thread");
                ShardHandle { data: data_tx, control: control_tx, thread: Mutex::new(Some(thread)) }
            })
            .collect();
        Self {
            shards,
            counters,
            catalog: Mutex::new(catalog),
            log,
            clock,
            round_robin: AtomicUsize::new(0),
            group: config.group,
            closed: AtomicBool::new(false),
            busy_total: metrics::counter!("seckill_engine_busy_total"),
        }
    }

    /// Starts on `replica`'s state with `sink`: a replica group's new
    /// leader (`seckill-replica`) once it has applied the group's whole log,
    /// with `Sink::Replicated`. Refuses a state that does not split into
    /// `config.shards` shards (`Replica::into_parts`).
    pub fn from_replica(
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        sink: Sink,
        replica: &crate::replica::Replica,
    ) -> Result<Self, String> {
        let (catalog, states) = replica.into_parts(config.shards, config.group)?;
        Ok(Self::start_from(config, clock, sink, catalog, states))
    }

    /// The group this engine is (its ids carry it).
    pub fn group(&self) -> u8 {
        self.group
    }

    /// How many shards decide buys.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Requests waiting in each shard's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.data.len()).collect()
    }

    /// Batches waiting for the WAL writer thread (0 when a shard owns the
    /// log and commits on its own thread, or there is no log).
    pub fn wal_queue_depth(&self) -> usize {
        match &self.log {
            ControlLog::Writer(tx) => tx.len(),
            ControlLog::Immediate | ControlLog::Shard0 => 0,
        }
    }

    /// Every activity with its stock and its figures summed over the
    /// shards, by id. Reads the shards' counters without stopping them.
    pub fn activity_stats(&self) -> Vec<ActivityStats> {
        let mut figures: BTreeMap<u64, SlotFigures> = BTreeMap::new();
        for shard in &self.counters {
            for (id, f) in shard.read() {
                *figures.entry(id).or_default() += f;
            }
        }
        let catalog = self.catalog.lock();
        catalog
            .activities
            .iter()
            .map(|(id, (a, pool))| ActivityStats {
                view: self.view(a, pool),
                figures: figures.get(id).copied().unwrap_or_default(),
            })
            .collect()
    }

    /// The clock every decision reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The shard that owns what `route` names, or `None` for an order id no
    /// shard could have issued (another group's among them).
    pub fn shard_for(&self, route: Route) -> Option<usize> {
        let n = self.shards.len();
        match route {
            Route::User(user_id) => Some(shard_of_user(user_id, n)),
            Route::Order(id) => Some(id.shard() as usize).filter(|s| *s < n && id.group() == self.group),
            Route::Any => Some(self.round_robin.fetch_add(1, Ordering::Relaxed) % n),
        }
    }

    /// Queues a request without waiting. A full shard queue answers `busy`
    /// at once: load is shed here, memory never grows.
    pub fn try_submit(&self, env: Envelope) -> Result<(), ErrorCode> {
        let Some(shard) = self.shard_for(env.req.route()) else {
            env.reply.send(env.tag, Response::Error(ErrorCode::OrderNotFound));
            return Ok(());
        };
        match self.shards[shard].data.try_send(env) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.busy_total.increment(1);
                Err(ErrorCode::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(ErrorCode::Busy),
        }
    }

    /// One request, waiting for room and for the answer. For operators and
    /// tests; the front uses `try_submit`.
    pub fn call(&self, req: Request) -> Response {
        let (tx, rx) = bounded(1);
        let Some(shard) = self.shard_for(req.route()) else {
            return Response::Error(ErrorCode::OrderNotFound);
        };
        if self.shards[shard].data.send(Envelope { req, tag: 0, reply: tx.into() }).is_err() {
            return Response::Error(ErrorCode::Busy);
        }
        rx.recv().map(|(_, r)| r).unwrap_or(Response::Error(ErrorCode::Busy))
    }

    /// Runs `f` on every shard's state, in shard order. Waits for each.
    pub fn inspect<R: Send + 'static>(&self, f: impl Fn(&ShardState) -> R + Send + Sync + 'static) -> Vec<R> {
        let f = Arc::new(f);
        self.shards
            .iter()
            .map(|s| {
                let (tx, rx) = bounded(1);
                let f = f.clone();
                let probe = Control::Inspect(Box::new(move |st| {
                    let _ = tx.send(f(st));
                }));
                s.control.send(probe).expect("shard thread alive");
                rx.recv().expect("shard answered the inspection")
            })
            .collect()
    }

    // ---- control path ------------------------------------------------

    /// Makes `events` durable through the same sink as the shards and waits.
    fn log(&self, events: Vec<Event>) -> Result<(), AdminError> {
        let (tx, rx) = bounded(1);
        let mut batch = Batch { events, returns: Vec::new(), replies: Vec::new() };
        batch.replies.push(Reply { tx: tx.into(), tag: 0, resp: Response::Done });
        // A stopped writer or shard drops the batch and with it `tx`: `busy` below.
        match &self.log {
            ControlLog::Immediate => batch.release(),
            ControlLog::Writer(writer) => drop(writer.send(batch)),
            ControlLog::Shard0 => drop(self.shards[0].control.send(Control::Log(batch))),
        }
        // Only `Done` means durable: a failed WAL answers `busy` instead.
        match rx.recv() {
            Ok((_, Response::Done)) => Ok(()),
            _ => Err(AdminError::new(
                ErrorCode::Busy,
                "the write-ahead log is not accepting writes (see the engine log); restart the engine",
            )),
        }
    }

    /// Pushes the current version of an activity to every shard and waits
    /// until all of them have it.
    fn broadcast(&self, activity: &Arc<Activity>, pool: &Arc<StockPool>) {
        let waits: Vec<_> = self
            .shards
            .iter()
            .map(|s| {
                let (tx, rx) = bounded(1);
                let _ = s.control.send(Control::Install(activity.clone(), pool.clone()));
                let _ = s.control.send(Control::Barrier(tx));
                rx
            })
            .collect();
        for rx in waits {
            let _ = rx.recv();
        }
    }

    /// Creates a product with the next free id.
    pub fn create_product(
        &self,
        name: String,
        description: String,
        image_url: String,
        price_cents: u64,
    ) -> Result<Product, AdminError> {
        self.create_product_as(None, name, description, image_url, price_cents)
    }

    /// `create_product` with a chosen id, which must be above every product
    /// id the engine has (warmup from MySQL keeps the ids rows have there).
    pub fn create_product_as(
        &self,
        id: Option<u64>,
        name: String,
        description: String,
        image_url: String,
        price_cents: u64,
    ) -> Result<Product, AdminError> {
        if name.is_empty() || [&name, &description, &image_url].iter().any(|s| s.len() > TEXT_BYTES_MAX) {
            return Err(AdminError::new(
                ErrorCode::BadRequest,
                format!("name must be 1..={TEXT_BYTES_MAX} bytes; description and image_url at most {TEXT_BYTES_MAX}"),
            ));
        }
        let mut catalog = self.catalog.lock();
        let id = chosen_id(id, catalog.next_product_id(self.group), self.group, "product")?;
        let product = Product { id, name, description, image_url, price_cents };
        let ev = Event::ProductCreated(product.clone());
        self.log(vec![ev.clone()])?;
        catalog.apply(&ev);
        Ok(product)
    }

    /// Creates an activity with the next free id; its stock enters the pool
    /// once the record is durable.
    pub fn create_activity(&self, spec: ActivitySpec) -> Result<ActivityView, AdminError> {
        self.create_activity_as(None, spec)
    }

    /// `create_activity` with a chosen id, which must be above every
    /// activity id the engine has (warmup from MySQL).
    pub fn create_activity_as(&self, id: Option<u64>, spec: ActivitySpec) -> Result<ActivityView, AdminError> {
        if spec.stock > STOCK_MAX {
            return Err(AdminError::new(ErrorCode::BadRequest, format!("stock must be at most {STOCK_MAX}")));
        }
        let mut catalog = self.catalog.lock();
        let product_name = match spec.product_id {
            Some(pid) => catalog.products.get(&pid).map(|p| p.name.clone()).ok_or_else(|| {
                AdminError::new(ErrorCode::ProductNotFound, format!("no product {pid}; create it with product.create"))
            })?,
            None => spec.title.clone(),
        };
        let activity = Activity {
            id: chosen_id(id, catalog.next_activity_id(self.group), self.group, "activity")?,
            product_id: spec.product_id.unwrap_or(0),
            product_name,
            title: spec.title,
            price_cents: spec.price_cents,
            terms: spec.terms,
            status: ActivityStatus::Active,
        };
        activity.validate().map_err(|m| AdminError::new(ErrorCode::BadRequest, m))?;
        let id = activity.id;
        let events = vec![Event::ActivityUpserted(activity), Event::StockAdded { activity_id: id, amount: spec.stock }];
        self.log(events.clone())?;
        events.iter().for_each(|ev| catalog.apply(ev));
        let (a, pool) = catalog.activities[&id].clone();
        self.broadcast(&a, &pool);
        Ok(self.view(&a, &pool))
    }

    /// Changes an activity's configuration; `change` edits a copy, which is
    /// validated, logged, then pushed to every shard.
    pub fn update_activity(
        &self,
        activity_id: u64,
        change: impl FnOnce(&mut Activity),
    ) -> Result<ActivityView, AdminError> {
        self.try_update_activity(activity_id, |a| {
            change(a);
            Ok(())
        })
    }

    /// `update_activity` with a change that may refuse (under the same lock
    /// as the write, so the rule it checks still holds when it is logged).
    fn try_update_activity(
        &self,
        activity_id: u64,
        change: impl FnOnce(&mut Activity) -> Result<(), AdminError>,
    ) -> Result<ActivityView, AdminError> {
        let mut catalog = self.catalog.lock();
        let (current, pool) = catalog.activities.get(&activity_id).cloned().ok_or_else(|| not_found(activity_id))?;
        let mut next = (*current).clone();
        change(&mut next)?;
        next.id = activity_id;
        next.validate().map_err(|m| AdminError::new(ErrorCode::BadRequest, m))?;
        if next == *current {
            return Ok(self.view(&current, &pool));
        }
        let ev = Event::ActivityUpserted(next);
        self.log(vec![ev.clone()])?;
        catalog.apply(&ev);
        let (a, pool) = catalog.activities[&activity_id].clone();
        self.broadcast(&a, &pool);
        Ok(self.view(&a, &pool))
    }

    /// Pauses, resumes or disables an activity ([`Activity::set_status`]:
    /// a disabled one stays disabled, answered `invalid_state`).
    pub fn set_activity_status(&self, activity_id: u64, status: ActivityStatus) -> Result<ActivityView, AdminError> {
        self.try_update_activity(activity_id, |a| {
            a.set_status(status).map_err(|m| AdminError::new(ErrorCode::InvalidState, m))
        })
    }

    /// Adds stock. The tokens enter the pool only after the record is durable.
    pub fn add_stock(&self, activity_id: u64, amount: u64) -> Result<ActivityView, AdminError> {
        let catalog = self.catalog.lock();
        let (a, pool) = catalog.activities.get(&activity_id).cloned().ok_or_else(|| not_found(activity_id))?;
        if amount == 0 || pool.added().saturating_add(amount) > STOCK_MAX {
            return Err(AdminError::new(
                ErrorCode::BadRequest,
                format!("amount must be >= 1 and total stock at most {STOCK_MAX}"),
            ));
        }
        self.log(vec![Event::StockAdded { activity_id, amount }])?;
        pool.add(amount);
        Ok(self.view(&a, &pool))
    }

    /// The activity as buyers see it now.
    pub fn activity(&self, activity_id: u64) -> Result<ActivityView, AdminError> {
        let catalog = self.catalog.lock();
        let (a, pool) = catalog.activities.get(&activity_id).ok_or_else(|| not_found(activity_id))?;
        Ok(self.view(a, pool))
    }

    /// Every product, by id.
    pub fn products(&self) -> Vec<Product> {
        self.catalog.lock().products.values().cloned().collect()
    }

    /// The largest product id and activity id so far (0 for group 0, or
    /// the id below the group's range: none yet).
    pub fn last_ids(&self) -> (u64, u64) {
        let c = self.catalog.lock();
        (c.next_product_id(self.group) - 1, c.next_activity_id(self.group) - 1)
    }

    fn view(&self, activity: &Arc<Activity>, pool: &Arc<StockPool>) -> ActivityView {
        let slot = shard::state::Slot {
            activity: activity.clone(),
            pool: pool.clone(),
            purchases: Default::default(),
            quotas: Default::default(),
            token_holders: Default::default(),
            counters: Default::default(),
        };
        view_of(&slot, self.clock.now_ms())
    }

    /// Waits until everything decided so far is durable and answered.
    pub fn sync(&self) -> Result<(), AdminError> {
        if matches!(self.log, ControlLog::Shard0) && self.closed.load(Ordering::Acquire) {
            // The shard that owned the log committed its last batch before
            // it stopped: everything decided is durable and answered.
            return Ok(());
        }
        self.log(Vec::new())
    }

    /// Stops the shards (see `close`) and drops the engine.
    pub fn shutdown(self) {
        self.close();
    }

    /// Stops the shards after they decide what is queued; later requests
    /// are answered `busy`. Safe to call more than once.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for s in &self.shards {
            let _ = s.control.send(Control::Stop);
        }
        for s in &self.shards {
            if let Some(t) = s.thread.lock().take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// The id a new product or activity gets: `next`, or the caller's choice
/// when it is at least `next` (ids only grow) and in `group`'s range (the
/// id names the group that owns it: fronts route by it).
fn chosen_id(wanted: Option<u64>, next: u64, group: u8, what: &str) -> Result<u64, AdminError> {
    let range = id_range(group);
    match wanted {
        None if range.contains(&next) => Ok(next),
        None => Err(AdminError::new(ErrorCode::BadRequest, format!("group {group} has no {what} ids left"))),
        Some(id) if id >= next && range.contains(&id) => Ok(id),
        Some(id) if !range.contains(&id) => Err(AdminError::new(
            ErrorCode::BadRequest,
            format!(
                "{what} id {id} is not one of group {group}'s ({}..={}); ids name their group",
                range.start(),
                range.end()
            ),
        )),
        Some(id) => Err(AdminError::new(
            ErrorCode::BadRequest,
            format!("{what} id {id} is taken or below the largest id; new ids start at {next}"),
        )),
    }
}

fn not_found(activity_id: u64) -> AdminError {
    AdminError::new(ErrorCode::ActivityNotFound, format!("no activity {activity_id}; see activity.list"))
}

/// Users spread over shards by a multiplicative hash, so consecutive ids do
/// not pile onto one shard's cache lines in lockstep.
#[inline]
pub fn shard_of_user(user_id: u64, shards: usize) -> usize {
    ((user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % shards as u64) as usize
}
