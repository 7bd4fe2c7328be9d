//! `seckill engine --replica-id N --peers … --replica-listen …`: the engine
//! as one replica of a Raft group (docs/REPLICATION.md). Every replica
//! keeps the group's log, applies it and appends its records to its own
//! `wal/`; the one that leads serves the wire protocol and the admin socket
//! and runs the persister and the mirror over its `wal/`, and exits (status 75) when it stops
//! leading, to be restarted as a follower. A follower listens on its
//! `--engine` too and answers every request `not_leader` (with the leader's
//! address from `--peer-engines`), so fronts re-route at once.
//! `seckill admin replica status` asks each replica on its replica port.

use super::engine::Args;
use anyhow::{bail, Context};
use seckill_engine::wal::{Snapshotter, WalConfig};
use seckill_engine::SystemClock;
use seckill_persist::mysql;
use seckill_proto::handshake::WireKey;
use seckill_proto::Address;
use seckill_replica::membership::{self, is_host_port, ChangeError, Changed};
use seckill_replica::node::StartError;
use seckill_replica::openraft::error::{Fatal, InitializeError, RaftError};
use seckill_replica::openraft::BasicNode;
use seckill_replica::state_machine::RecordsState;
use seckill_replica::{lead, LeadError, NodeId, ReplicaConfig, ReplicaNode, Status};
use seckill_server::{admin, wire};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The exit status of a replica that stopped leading (EX_TEMPFAIL): its
/// shards may hold decisions the group does not have, so it exits and a
/// supervisor restarts it as a follower, which rebuilds from the group.
pub const STEPPED_DOWN_EXIT: i32 = 75;
/// Bounds of `--replica-election-timeout-ms`.
pub const ELECTION_TIMEOUT_MS_MIN: u64 = 250;
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;
/// Bounds of `--replica-snapshot-entries`.
pub const SNAPSHOT_ENTRIES_MIN: u64 = 10;
pub const SNAPSHOT_ENTRIES_MAX: u64 = 10_000_000;
/// Replicas one group may list (Raft needs a majority of them for anything).
pub const PEERS_MAX: usize = 7;
/// The exit status of a replica that was removed from its group, at the
/// removal and at any later start on its data dir (EX_CONFIG): a
/// supervisor should not restart it (systemd `RestartPreventExitStatus=78`).
pub const REMOVED_EXIT: i32 = 78;
/// The exit status of a replica whose Raft stopped on a storage failure
/// (its Raft log, or its `wal/` copy: EX_SOFTWARE, as a single engine's WAL
/// failure): crash-only, so that it does not stay up as a member that
/// applies nothing; a restart recovers from its log, or says why not.
pub const RAFT_FAILED_EXIT: i32 = 70;
/// How long a forming replica waits for each peer's answer to "do you
/// have a log already?".
const EXISTING_GROUP_ASK_MS: u64 = 500;
/// How long `admin replica add|remove` look for a leader that answers
/// (through an election).
const FIND_LEADER_MS: u64 = 30_000;

/// `1=host:port,2=host:port,3=host:port`: every replica of the group by id.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let peers =
        by_id("--peers", "HOST:PORT (e.g. --peers 1=10.0.0.1:7400,2=10.0.0.2:7400,3=10.0.0.3:7400)", text, |addr| {
            anyhow::ensure!(is_host_port(addr), "--peers: `{addr}` is not HOST:PORT");
            Ok(addr.to_string())
        })?;
    anyhow::ensure!(!peers.is_empty(), "--peers lists no replica");
    Ok(peers)
}

/// `--peer-engines 1=tcp:host:port,...`: every replica's wire address by
/// id, for the `not_leader` hint.
pub fn parse_peer_engines(text: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    by_id("--peer-engines", "ADDRESS (e.g. 1=tcp:10.0.0.1:7000,2=tcp:10.0.0.2:7000)", text, |addr| {
        let addr: Address = addr.parse().map_err(|e: String| anyhow::anyhow!("--peer-engines: {e}"))?;
        Ok(addr.to_string())
    })
}

/// `ID=VALUE,…` by replica id, the shape of `--peers` and `--peer-engines`:
/// ids from 1, each once, at most `PEERS_MAX`; `value` checks one value.
fn by_id(
    flag: &str,
    shape: &str,
    text: &str,
    value: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut map = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, v) = part.split_once('=').with_context(|| format!("{flag}: `{part}` is not ID={shape}"))?;
        let id: NodeId = id.trim().parse().with_context(|| format!("{flag}: `{id}` is not a replica id (1, 2, …)"))?;
        anyhow::ensure!(id >= 1, "{flag}: replica ids start at 1");
        anyhow::ensure!(map.insert(id, value(v.trim())?).is_none(), "{flag} names replica {id} twice");
    }
    anyhow::ensure!(map.len() <= PEERS_MAX, "{flag} lists more than {PEERS_MAX} replicas");
    Ok(map)
}

pub fn run(args: Args, id: NodeId) -> anyhow::Result<()> {
    // `--peers` forms a new group; a replica that joins one never proposes
    // a membership (its own would be a second, conflicting first entry).
    let peers = match (&args.peers, args.join) {
        (Some(p), _) => parse_peers(p)?,
        (None, true) => BTreeMap::new(),
        (None, false) => bail!("--replica-id needs --peers (to form a group) or --join (to be added to one)"),
    };
    let peer_engines = parse_peer_engines(args.peer_engines.as_deref().unwrap_or_default())?;
    let listen: SocketAddr = args.replica_listen.context("--replica-id needs --replica-listen HOST:PORT")?;
    anyhow::ensure!(
        args.join || peers.contains_key(&id),
        "--peers does not list this replica's id {id}: to add a replica to a running group, start it with --join \
         and run `seckill admin replica add {id}=HOST:PORT --peers …`"
    );
    let cfg = super::engine::node_config(&args)?;
    anyhow::ensure!(args.admin_idle_timeout >= 1, "--admin-idle-timeout must be at least 1 (seconds)");
    let admin_idle = Duration::from_secs(args.admin_idle_timeout);
    let dir = args.data_dir.clone();
    let fs = seckill_engine::wal::os_fs();
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let _lock = fs
        .lock(&dir)
        .with_context(|| format!("locking {}", dir.display()))?
        .with_context(|| format!("data dir {} is in use by another seckill engine", dir.display()))?;
    // Shard count and group, as a single engine keeps them: a replica's
    // state splits into its shards and its ids name its group.
    seckill_engine::node::check_meta(&*fs, &dir, cfg.engine.shards, cfg.engine.group)?;

    let prometheus = super::front::install_metrics();
    let metrics = seckill_front::metrics_http::bind_thread(args.metrics.metrics)
        .with_context(|| format!("binding --metrics {}", args.metrics.metrics))?;
    if let Some(bound) = metrics {
        seckill_front::metrics_http::serve_thread(
            bound,
            seckill_front::metrics_http::Operator::metrics_only(prometheus),
        )
        .context("starting the metrics thread")?;
    }
    let wire_key = WireKey::derive(
        &seckill_front::secrets::load_or_create("SECKILL_AUTH_SECRET", &dir, "auth.secret")
            .context("reading or creating the auth secret (it also keys the wire handshake)")?,
    );
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<&'static str>(4);
    {
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        let stop_tx = stop_tx.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            if signals.forever().next().is_some() {
                let _ = stop_tx.try_send("signal");
            }
        })?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("replica")
        .enable_all()
        .build()
        .context("starting the replica's runtime")?;
    let raft_dir = dir.join("raft");
    // `wal/` and `snapshots/` as a single engine keeps them: a copy of the
    // committed records, which the persister and the mirror follow.
    let wal_cfg = WalConfig { segment_bytes_max: args.wal_segment_bytes, ..WalConfig::new(&dir) };
    let state = RecordsState::with_wal(&wal_cfg).context("opening the replica's wal/")?;
    let election_ms = args.replica_election_timeout_ms;
    anyhow::ensure!(
        (ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX).contains(&election_ms),
        "--replica-election-timeout-ms must be {ELECTION_TIMEOUT_MS_MIN}..={ELECTION_TIMEOUT_MS_MAX}"
    );
    let mut replica_cfg = ReplicaConfig::new(id, listen, &raft_dir);
    replica_cfg.raft.election_timeout_min = election_ms;
    replica_cfg.raft.election_timeout_max = election_ms * 2;
    replica_cfg.raft.heartbeat_interval = election_ms / 5;
    let snapshot_entries = args.replica_snapshot_entries;
    anyhow::ensure!(
        (SNAPSHOT_ENTRIES_MIN..=SNAPSHOT_ENTRIES_MAX).contains(&snapshot_entries),
        "--replica-snapshot-entries must be {SNAPSHOT_ENTRIES_MIN}..={SNAPSHOT_ENTRIES_MAX}"
    );
    replica_cfg.raft.snapshot_policy = seckill_replica::openraft::SnapshotPolicy::LogsSinceLast(snapshot_entries);
    replica_cfg.raft.max_in_snapshot_log_to_keep = snapshot_entries / 10;
    if let Some(dial) = &args.replica_dial {
        replica_cfg.dial = parse_peers(dial).context("--replica-dial")?;
    }
    // Peers prove the auth secret to each other, as fronts do to the engine.
    replica_cfg.key = Some(wire_key.clone());
    let node = match rt.block_on(ReplicaNode::start(replica_cfg, state)) {
        Ok(n) => n,
        Err(e @ StartError::Removed(_)) => {
            eprintln!("seckill: {e}");
            std::process::exit(REMOVED_EXIT);
        }
        Err(e) => return Err(e).context("starting the replica"),
    };
    let empty = node.raft().metrics().borrow().last_log_index.is_none();
    if args.join {
        tracing::info!(id, "joining: waiting to be added (`seckill admin replica add`)");
    } else if let Some((peer, index)) = empty.then(|| rt.block_on(existing_group(&peers, id, &wire_key))).flatten() {
        // A second line behind `--join`: the group this list would form
        // exists already, so proposing it could only conflict with its
        // first entry.
        tracing::warn!(
            id,
            peer,
            index,
            "a peer already holds the group's log: not proposing a membership (a new replica joins with --join \
             and `seckill admin replica add`)"
        );
    } else {
        // Every forming replica initializes the group with the same
        // members: safe (openraft: the same config on several nodes), and
        // refused as `NotAllowed` once this replica's log is not empty.
        let members: BTreeMap<NodeId, BasicNode> =
            peers.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.clone() })).collect();
        match rt.block_on(node.raft().initialize(members)) {
            Ok(()) => tracing::info!(id, "initialized a new group"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => tracing::debug!("the group already exists"),
            Err(e) => bail!("initializing the group: {e}"),
        }
    }
    let addr = args.engine_address();
    // The wire port answers `not_leader` until this replica leads.
    let serving = Arc::new(wire::Serving::follower());
    let listener = wire::Listener::bind(&addr).with_context(|| format!("listening on {addr}"))?;
    {
        let (serving, wire_key) = (serving.clone(), wire_key.clone());
        std::thread::Builder::new()
            .name("wire-accept".into())
            .spawn(move || wire::serve_replica(serving, listener, Arc::new(AtomicBool::new(false)), wire_key))?;
    }
    {
        // Raft stops for good on a storage failure (an append to the Raft
        // log or to `wal/` that failed): leader or follower, the process
        // exits rather than staying up as a member that applies nothing.
        let mut metrics = node.raft().metrics();
        rt.spawn(async move {
            loop {
                if let Err(fatal @ (Fatal::StorageError(_) | Fatal::Panicked)) =
                    &metrics.borrow_and_update().running_state
                {
                    tracing::error!(error = %fatal, "Raft stopped: the replica exits; a restart recovers from its log");
                    eprintln!("seckill: Raft stopped ({fatal}); exiting (status {RAFT_FAILED_EXIT})");
                    std::process::exit(RAFT_FAILED_EXIT);
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    {
        // The hint follows Raft's view of the leader.
        let (serving, mut metrics) = (serving.clone(), node.raft().metrics());
        rt.spawn(async move {
            loop {
                let leader = metrics.borrow_and_update().current_leader;
                serving.set_leader(leader.and_then(|l| peer_engines.get(&l)).map_or("", String::as_str));
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    println!(
        "seckill engine replica {id}: peers on {} ({}); serves {addr} (not_leader until it leads)",
        node.addr(),
        if args.join { "joining a group".to_string() } else { format!("{} replicas", peers.len()) }
    );
    tracing::info!(id, replica = %node.addr(), peers = peers.len(), join = args.join, "replica started; waiting to lead");

    // Follow until this replica leads (or the operator stops it).
    let on_step_down: seckill_replica::StepDown = Arc::new(|why: &str| {
        tracing::error!(why, "stepped down: exiting so a restart rejoins as a follower");
        eprintln!(
            "seckill: replica stepped down ({why}); exiting (status {STEPPED_DOWN_EXIT}) to rejoin as a follower"
        );
        std::process::exit(STEPPED_DOWN_EXIT);
    });
    let removed = node.removed();
    let leading = loop {
        if let Ok(why) = stop_rx.try_recv() {
            tracing::info!(why, "stopping a follower");
            rt.block_on(node.shutdown());
            return Ok(());
        }
        if *removed.borrow() {
            rt.block_on(node.shutdown());
            eprintln!(
                "seckill: replica {id} was removed from its group; exiting (status {REMOVED_EXIT}). Its data dir \
                 will not start again: delete it, or keep it for forensics."
            );
            std::process::exit(REMOVED_EXIT);
        }
        let attempt =
            lead(&node, cfg.engine.clone(), Arc::new(SystemClock), Duration::from_secs(1), on_step_down.clone());
        match rt.block_on(attempt) {
            Ok(l) => break l,
            Err(LeadError::NotReady(_)) => continue,
            Err(e) => bail!("taking the lead: {e}"),
        }
    };
    let engine = leading.engine.clone();
    // The persister and the mirror run where the group is led, over this
    // replica's `wal/` (the same records at the same LSNs on every
    // replica): the persister from its checkpoint in MySQL, the mirror by a
    // rewrite of Redis, as on a single engine. They end with the process (a
    // replica that stops leading exits).
    let (wal_status, checkpoints) = node
        .state()
        .with_state(|s| s.wal().map(|w| (w.status(), w.checkpoints())))
        .context("the replica keeps no wal/")?;
    let wal_of = || (dir.as_path(), wal_status.clone(), checkpoints.clone());
    let mirror = super::engine::start_mirror(&args, wal_of(), engine.clock().clone());
    let persister = super::engine::start_persister(&args, wal_of());
    serving.lead(engine.clone());
    let admin_path = dir.join("admin.sock");
    let admin_listener = admin::bind(&admin_path).with_context(|| format!("binding {}", admin_path.display()))?;
    let replica_stats: admin::StatsHook = {
        let (raft, lsn) = (node.raft().clone(), node.state().last_lsn());
        Arc::new(move || {
            let s = Status::of(&raft.metrics().borrow(), lsn.load(std::sync::atomic::Ordering::Acquire));
            serde_json::to_value(s).unwrap_or_default()
        })
    };
    let mut extra_stats: Vec<(&'static str, admin::StatsHook)> = vec![("replica", replica_stats)];
    if let Some(p) = &persister {
        extra_stats.push(("persister", p.stats_hook()));
    }
    if let Some(m) = &mirror {
        extra_stats.push(("mirror", m.stats_hook()));
    }
    let ctx = admin::AdminCtx {
        engine: engine.clone(),
        wal_status: wal_status.clone(),
        checkpoints: checkpoints.clone(),
        // Snapshots are Raft's (by its policy), written into `snapshots/`.
        snapshotter: Snapshotter::none(),
        on_shutdown: Arc::new(move || {
            let _ = stop_tx.try_send("admin shutdown");
        }),
        warmup: persister.as_ref().map(|_| mysql::warmup_hook(args.mysql_url.clone(), engine.clone())),
        verify: persister.as_ref().map(|_| {
            super::engine::verify_hook(args.mysql_url.clone(), engine.clone(), wal_status.clone(), checkpoints.clone())
        }),
        extra_stats,
    };
    std::thread::Builder::new()
        .name("admin-accept".into())
        .spawn(move || admin::serve(ctx, admin_listener, admin_idle))?;
    println!(
        "seckill engine listening on {addr} (admin: {}) as the leader, from LSN {}",
        admin_path.display(),
        leading.lsn
    );
    tracing::info!(id, wire = %addr, lsn = leading.lsn, "leading: serving fronts");

    let why = stop_rx.recv().unwrap_or("stop channel closed");
    tracing::info!(why, "stopping the leader: draining shards into the group");
    drop(engine);
    leading.stop();
    // After the engine: the consumers write what its last records say.
    if let Some(p) = persister {
        p.shutdown(Duration::from_secs(5));
    }
    if let Some(m) = mirror {
        m.shutdown(seckill_persist::redis::SHUTDOWN_DRAIN);
    }
    rt.block_on(node.shutdown());
    if let Address::Unix(p) = &addr {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(&admin_path);
    Ok(())
}

/// A peer of `peers` (not `me`) whose log is not empty, with its last log
/// index: the group exists already. Each peer is asked once, briefly; an
/// unreachable one says nothing.
async fn existing_group(peers: &BTreeMap<NodeId, String>, me: NodeId, key: &WireKey) -> Option<(NodeId, u64)> {
    for (id, addr) in peers.iter().filter(|(id, _)| **id != me) {
        let ttl = Duration::from_millis(EXISTING_GROUP_ASK_MS);
        if let Ok(Status { last_log_index: Some(index), .. }) =
            seckill_replica::network::query_status(addr, ttl, Some(key)).await
        {
            return Some((*id, index));
        }
    }
    None
}

/// `seckill admin replica status`: asks every replica of `--peers` for its
/// view of the group, on its replica port.
pub fn status(peers: &str, data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let peers = parse_peers(peers)?;
    let key = group_key(data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answers: Vec<(NodeId, String, Result<Status, String>)> = peers
        .iter()
        .map(|(id, addr)| {
            let got = rt.block_on(seckill_replica::network::query_status(addr, Duration::from_secs(2), Some(&key)));
            (*id, addr.clone(), got.map_err(|e| e.to_string()))
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = answers
            .iter()
            .map(|(id, addr, s)| match s {
                Ok(s) => serde_json::json!({"id": id, "addr": addr, "status": s}),
                Err(e) => serde_json::json!({"id": id, "addr": addr, "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "id", "addr", "state", "term", "leader", "last_log", "applied", "apply_lag", "lsn", "snaps"
    );
    for (id, addr, s) in &answers {
        match s {
            Ok(s) => println!(
                "{:<4} {:<22} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10} {:>6}",
                id,
                addr,
                s.state,
                s.term,
                s.leader.map_or("-".into(), |l| l.to_string()),
                s.last_log_index.map_or("-".into(), |i| i.to_string()),
                s.applied_index.map_or("-".into(), |i| i.to_string()),
                s.apply_lag_entries(),
                s.applied_lsn,
                s.snapshots_installed
            ),
            Err(e) => println!("{id:<4} {addr:<22} unreachable: {e}"),
        }
    }
    let leader = answers.iter().find_map(|(_, _, s)| s.as_ref().ok().filter(|s| s.leader == Some(s.id)));
    let Some(leader) = leader else {
        bail!(
            "no replica says it leads: the group has no majority, or is electing (or this command's auth secret is \
             not the group's: a replica closes such connections, shown as `reset by peer`)"
        );
    };
    println!("membership (the leader's, replica {}):", leader.id);
    print_members(&leader.voters, &leader.learners, &leader.members);
    Ok(())
}

fn print_members(voters: &[NodeId], learners: &[NodeId], addrs: &[(NodeId, String)]) {
    let at = |id: &NodeId| addrs.iter().find(|(i, _)| i == id).map_or("?", |(_, a)| a.as_str()).to_string();
    let list = |ids: &[NodeId]| ids.iter().map(|id| format!("{id}={}", at(id))).collect::<Vec<_>>().join(",");
    println!("  voters   {}", list(voters));
    println!("  learners {}", if learners.is_empty() { "-".to_string() } else { list(learners) });
}

/// The key the replicas' handshake expects: the auth secret of
/// `SECKILL_AUTH_SECRET` or of a replica's data dir, never created here.
fn group_key(data_dir: &Path) -> anyhow::Result<WireKey> {
    Ok(WireKey::derive(&super::load::auth_secret(data_dir)?))
}

fn addrs_of(peers: &str) -> anyhow::Result<Vec<String>> {
    Ok(parse_peers(peers)?.into_values().collect())
}

fn print_changed(what: &str, c: &Changed, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(c)?);
        return Ok(());
    }
    println!(
        "{what}{} (leader {}); voters {:?}, learners {:?}",
        if c.changed { "" } else { " (nothing to change)" },
        c.leader,
        c.voters,
        c.learners
    );
    Ok(())
}

fn change_failed(e: ChangeError) -> anyhow::Error {
    match e {
        ChangeError::Failed(ref why) if why.contains("reset") || why.contains("closed") => anyhow::anyhow!(
            "{e}; if every replica closes the connection, this command's auth secret (SECKILL_AUTH_SECRET or \
             --data-dir's auth.secret) is not the group's"
        ),
        ChangeError::Failed(_) => anyhow::anyhow!(
            "{e}; `seckill admin replica status` shows the membership now, and the same command may be run again"
        ),
        e => anyhow::anyhow!("{e}"),
    }
}

/// `seckill admin replica add ID=HOST:PORT --peers …`.
pub fn add(peers: &str, replica: &str, catch_up_timeout_ms: u64, data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let key = group_key(data_dir)?;
    let new = parse_peers(replica).context("the replica to add: ID=HOST:PORT")?;
    let (id, addr) = new.into_iter().next().context("the replica to add: ID=HOST:PORT")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done = rt
        .block_on(membership::add(
            &addrs_of(peers)?,
            id,
            &addr,
            Duration::from_millis(catch_up_timeout_ms),
            Duration::from_millis(FIND_LEADER_MS),
            Some(&key),
        ))
        .map_err(change_failed)?;
    print_changed(&format!("replica {id} at {addr} is a voter"), &done, json)
}

/// `seckill admin replica remove ID --peers …`.
pub fn remove(peers: &str, id: NodeId, data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let key = group_key(data_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let done = rt
        .block_on(membership::remove(&addrs_of(peers)?, id, Duration::from_millis(FIND_LEADER_MS), Some(&key)))
        .map_err(change_failed)?;
    let told = match done.left {
        Some(true) => ", and it stops",
        Some(false) => " (it did not take the notice: it is down, or stop it by hand)",
        None => "",
    };
    print_changed(&format!("replica {id} is no longer a member{told}"), &done, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_are_id_value_pairs_each_id_once() {
        let peers = parse_peers("1=10.0.0.1:7400, 2=host:7401").expect("two peers");
        assert_eq!(peers.get(&2).map(String::as_str), Some("host:7401"));
        for bad in ["", "1=10.0.0.1:7400,1=10.0.0.2:7400", "0=h:1", "x=h:1", "1=h", "1"] {
            assert!(parse_peers(bad).is_err(), "--peers {bad:?} accepted");
        }
        assert!(parse_peer_engines("").expect("none given").is_empty());
        let engines = parse_peer_engines("3=tcp:127.0.0.1:7000").expect("one engine");
        assert_eq!(engines.get(&3).map(String::as_str), Some("tcp:127.0.0.1:7000"));
        for bad in ["3=tcp:127.0.0.1:7000,3=tcp:127.0.0.1:7001", "3=nowhere", "3"] {
            assert!(parse_peer_engines(bad).is_err(), "--peer-engines {bad:?} accepted");
        }
    }
}
