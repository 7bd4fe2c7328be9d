//! The admin protocol (`seckill_server::admin::handle_line`) on arbitrary lines,
//! against one real node on a temporary data dir (durability `none`, so the
//! fuzzer is not bound by fsync). Every line gets a JSON answer with a
//! boolean `ok`; a refusal has a string error code and message. Never a panic.
//! State accumulates across inputs, as it does on a live admin socket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::Durability;
use seckill_engine::{EngineConfig, SystemClock};
use seckill_server::admin::{handle_line, AdminCtx};
use std::sync::{Arc, Mutex, OnceLock};

static CTX: OnceLock<AdminCtx> = OnceLock::new();
/// Keeps the node (and its threads) reachable for the life of the process,
/// so LeakSanitizer does not report it.
static NODE: Mutex<Option<Node>> = Mutex::new(None);

fn ctx() -> &'static AdminCtx {
    CTX.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("seckill-fuzz-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create fuzz data dir");
        let mut cfg = NodeConfig::new(&dir);
        cfg.engine = EngineConfig { shards: 2, queue_capacity: 64, ..EngineConfig::default() };
        cfg.durability = Durability::None;
        let node = Node::open(cfg, Arc::new(SystemClock)).expect("open node");
        let ctx = AdminCtx::of_node(&node);
        *NODE.lock().unwrap() = Some(node);
        ctx
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let (reply, _shutdown) = handle_line(ctx(), line);
    let ok = reply["ok"].as_bool();
    assert!(ok.is_some(), "no boolean ok field for {line:?}: {reply}");
    if ok == Some(false) {
        assert!(
            reply["error"]["code"].is_string() && reply["error"]["message"].is_string(),
            "refusal without code and message for {line:?}: {reply}"
        );
    }
});
