//! WAL and wire benchmarks:
//! * `wal/group_commit/{1,16,256}`: N appenders, each with one record in
//!   flight that must be durable (fsync mode) before it sends the next, as
//!   shards and connections do: durable records/s, and records per fsync
//!   printed alongside. One driver thread keeps the N in flight, so the
//!   figure is the WAL's, not the scheduler's (256 OS threads on 2 cores
//!   measure context switches).
//! * `wal/replay`: reading a log back (recovery speed), records/s.
//! * `wire/roundtrip`: pipelined requests over the engine's unix socket.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_channel::{bounded, Sender};
use seckill_engine::node::{Node, NodeConfig};
use seckill_engine::wal::{segment, Durability, Wal, WalConfig};
use seckill_engine::{Batch, Reply};
use seckill_engine::{EngineConfig, Event, SystemClock};
use seckill_proto::handshake::{WireKey, HELLO_BYTES};
use seckill_proto::Address;
use seckill_proto::{decode_response, encode_request, FrameReader, Request, Response};
use seckill_server::wire;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn append_one(tx: &Sender<Batch>, user_id: u64) {
    let (rtx, rrx) = bounded(1);
    let mut b = Batch::default();
    b.events.push(Event::QuotaSet { activity_id: 1, user_id, limit: 1 });
    b.replies.push(Reply { tx: rtx.into(), tag: 0, resp: Response::Done });
    tx.send(b).expect("writer alive");
    rrx.recv().expect("durable");
}

/// Keeps `in_flight` single-record appends outstanding until `total` are durable.
fn closed_loop(tx: &Sender<Batch>, in_flight: usize, total: u64) {
    let (rtx, rrx) = crossbeam_channel::unbounded();
    let (mut sent, mut done) = (0u64, 0u64);
    while done < total {
        while sent < total && sent - done < in_flight as u64 {
            let mut b = Batch::default();
            b.events.push(Event::QuotaSet { activity_id: 1, user_id: sent, limit: 1 });
            b.replies.push(Reply { tx: rtx.clone().into(), tag: sent, resp: Response::Done });
            tx.send(b).expect("writer alive");
            sent += 1;
        }
        rrx.recv().expect("durable");
        done += 1;
    }
}

fn group_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal/group_commit");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for appenders in [1usize, 16, 256] {
        // Directories under the target dir, on the real disk (not tmpfs).
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
        let mut cfg = WalConfig::new(dir.path());
        cfg.durability = Durability::Fsync;
        let (wal, _, tx) = Wal::open(&cfg, seckill_engine::wal::os_fs()).expect("open wal");
        let per = 200u64;
        g.throughput(Throughput::Elements(appenders as u64 * per));
        let mut records = 0u64;
        let fsyncs_before = wal.status.fsyncs.load(Ordering::Relaxed);
        g.bench_function(BenchmarkId::from_parameter(appenders), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    closed_loop(&tx, appenders, appenders as u64 * per);
                    records += appenders as u64 * per;
                }
                start.elapsed()
            })
        });
        let fsyncs = wal.status.fsyncs.load(Ordering::Relaxed) - fsyncs_before;
        println!(
            "wal/group_commit/{appenders}: {records} records in {fsyncs} fsyncs = {:.1} records/fsync",
            records as f64 / fsyncs.max(1) as f64
        );
        drop(tx);
        wal.join();
    }
    g.finish();
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let n = 500_000u64;
    {
        let mut cfg = WalConfig::new(dir.path());
        cfg.durability = Durability::None;
        cfg.segment_bytes_max = 1 << 30;
        let (wal, _, tx) = Wal::open(&cfg, seckill_engine::wal::os_fs()).expect("open wal");
        for chunk in 0..(n / 1000) {
            let mut b = Batch::default();
            for i in 0..1000 {
                b.events.push(Event::QuotaSet { activity_id: 1, user_id: chunk * 1000 + i, limit: 1 });
            }
            tx.send(b).expect("writer");
        }
        append_one(&tx, u64::MAX); // a barrier: everything before it is written
        drop(tx);
        wal.join();
    }
    let segments = segment::list(&dir.path().join("wal")).expect("segments");
    let mut g = c.benchmark_group("wal");
    g.sample_size(10).throughput(Throughput::Elements(n + 1));
    g.bench_function("replay", |b| {
        b.iter(|| {
            let mut count = 0u64;
            for s in &segments {
                segment::read(s, |_, _| count += 1).expect("read");
            }
            assert_eq!(count, n + 1);
        })
    });
    g.finish();
}

fn wire_roundtrip(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = NodeConfig::new(dir.path());
    cfg.durability = Durability::None;
    cfg.engine = EngineConfig { shards: 1, queue_capacity: 65_536, ..EngineConfig::default() };
    let node = Node::open(cfg, Arc::new(SystemClock)).expect("node");
    let addr = Address::Unix(dir.path().join("engine.sock"));
    let listener = wire::Listener::bind(&addr).expect("bind");
    let engine = node.engine.clone();
    let key = WireKey::derive(b"bench secret, at least 32 bytes long");
    let server_key = key.clone();
    std::thread::spawn(move || wire::serve(engine, listener, Arc::new(AtomicBool::new(false)), server_key));
    let Address::Unix(path) = &addr else { unreachable!() };
    let mut stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
    let mut hello = [0u8; HELLO_BYTES];
    stream.read_exact(&mut hello).expect("hello");
    stream.write_all(&key.proof(&hello).expect("a seckill engine")).expect("proof");
    let depth = 1024u64;
    let mut out = Vec::new();
    let mut frames = FrameReader::with_capacity(1 << 20);
    let mut g = c.benchmark_group("wire");
    g.sample_size(20).measurement_time(Duration::from_secs(5)).throughput(Throughput::Elements(depth));
    g.bench_function("roundtrip", |b| {
        b.iter(|| {
            out.clear();
            for id in 0..depth {
                encode_request(
                    &mut out,
                    id,
                    &Request::GetOrder { user_id: Some(1), order_id: seckill_proto::OrderId::first_at(1, 0) },
                );
            }
            stream.write_all(&out).expect("write");
            let mut got = 0u64;
            while got < depth {
                let n = stream.read(frames.spare(64 * 1024)).expect("read");
                assert!(n > 0, "engine closed the connection");
                frames.filled(n);
                while let Some(frame) = frames.next_frame().expect("a frame") {
                    let (_, resp) = decode_response(frame).expect("decode");
                    assert!(matches!(resp, Response::Error(_)));
                    got += 1;
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, group_commit, replay, wire_roundtrip);
criterion_main!(benches);
