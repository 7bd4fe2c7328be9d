//! The floor of the commit path: hyper hello-world plus the plumbing a
//! durable buy of `seckill up` goes through, and nothing else (no JWT, no
//! decision, no JSON). Requests cross to one "shard" thread over a bounded
//! crossbeam queue; it gathers a group, waits the group-commit window,
//! writes one 160-byte record per request and fdatasyncs, then answers.
//! Whatever seckill costs above this is its own code; what this costs above
//! `hello` is the pattern (docs/PERFORMANCE.md, "The floor of the pattern").
//!
//!     plumb ADDR FILE [WINDOW_US=200] [FSYNC=1] [RUNTIME=ct|mt] [DELIVERY=mailbox|each] [FILE_MODE=append|prewritten]
//!
//! * RUNTIME: `ct` one current-thread runtime, `mt` tokio's work-stealing pool.
//! * DELIVERY: `each` wakes every answer's task from the shard thread;
//!   `mailbox` sends the group to one task inside the runtime, which wakes them.
//! * FILE_MODE: `append` grows the file (each fdatasync also writes the
//!   inode); `prewritten` overwrites 512 MiB of zeros written up front.

mod common;

use bytes::Bytes;
use http_body_util::Full;
use std::io::Write;
use std::os::unix::fs::FileExt;

type Done = Box<dyn FnOnce(u64) + Send>;

const BATCH_MAX: usize = 256;
const GATHER_TARGET: usize = 64;
const RECORD_BYTES: usize = 160;
const PREWRITTEN_BYTES: usize = 512 << 20;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let addr = arg(0, "127.0.0.1:18301");
    let path = arg(1, "/tmp/plumb.wal");
    let window = std::time::Duration::from_micros(arg(2, "200").parse().unwrap_or(200));
    let fsync = arg(3, "1") == "1";
    let current_thread = arg(4, "ct") == "ct";
    let mailbox = arg(5, "mailbox") == "mailbox";
    let prewritten = arg(6, "append") == "prewritten";

    let mut file = std::fs::OpenOptions::new().create(true).write(true).append(!prewritten).open(&path)?;
    if prewritten {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..PREWRITTEN_BYTES / zeros.len() {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
    }
    let (tx, rx) = crossbeam_channel::bounded::<Done>(65_536);
    let (group_tx, mut group_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Vec<Done>)>();
    std::thread::Builder::new().name("shard-0".into()).spawn(move || -> std::io::Result<()> {
        let (mut answered, mut at) = (0u64, 0u64);
        let mut batch: Vec<Done> = Vec::with_capacity(BATCH_MAX);
        let mut out = Vec::with_capacity(BATCH_MAX * RECORD_BYTES);
        while let Ok(first) = rx.recv() {
            batch.push(first);
            batch.extend(rx.try_iter().take(BATCH_MAX - 1));
            if !window.is_zero() && (2..GATHER_TARGET).contains(&batch.len()) {
                std::thread::sleep(window);
                let room = BATCH_MAX - batch.len();
                batch.extend(rx.try_iter().take(room));
            }
            out.clear();
            out.resize(batch.len() * RECORD_BYTES, 7);
            if prewritten {
                file.write_all_at(&out, at)?;
                at += out.len() as u64;
            } else {
                file.write_all(&out)?;
            }
            if fsync {
                file.sync_data()?;
            }
            answered += batch.len() as u64;
            if mailbox {
                let _ = group_tx.send((answered, std::mem::replace(&mut batch, Vec::with_capacity(BATCH_MAX))));
            } else {
                batch.drain(..).for_each(|done| done(answered));
            }
        }
        Ok(())
    })?;
    let rt = if current_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("front").build()?
    };
    rt.block_on(async move {
        tokio::spawn(async move {
            while let Some((answered, group)) = group_rx.recv().await {
                group.into_iter().for_each(|done| done(answered));
            }
        });
        common::serve("plumb", &addr, move |req| {
            let tx = tx.clone();
            async move {
                let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                let (answer_tx, answer_rx) = tokio::sync::oneshot::channel::<u64>();
                let _ = tx.try_send(Box::new(move |n| {
                    let _ = answer_tx.send(n);
                }));
                let n = answer_rx.await.unwrap_or(0);
                let mut r = hyper::Response::new(Full::new(Bytes::from(format!("{{\"order_id\":\"{n}\"}}"))));
                *r.status_mut() = hyper::StatusCode::CREATED;
                r
            }
        })
        .await
    })
}
