//! Arbitrary bytes as a snapshot file (`snapshot::parse`, run at recovery).
//! Never a panic. A snapshot that parses must survive what recovery does
//! next (`Replica::into_parts`, error or not, never a panic) and must
//! round-trip: its `to_events` written as a snapshot parse to the same state.
//! The bytes are parsed as they are and again with the header and record
//! CRCs fixed up, so mutations reach the records and the replay behind them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_engine::wal::codec::Encoder;
use seckill_engine::wal::snapshot::{parse, MAGIC};
use seckill_fuzz::fix_crcs;

const HEADER_BYTES: usize = 28;

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= HEADER_BYTES {
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(MAGIC);
        let crc = crc32c::crc32c(&fixed[8..24]);
        fixed[24..28].copy_from_slice(&crc.to_le_bytes());
        fix_crcs(&mut fixed, HEADER_BYTES);
        check(&fixed);
    }
});

fn check(bytes: &[u8]) {
    let Some(replica) = parse(bytes) else { return };
    for shards in [1, 2, 3] {
        let _ = replica.into_parts(shards, 0);
    }
    let mut body = Vec::new();
    let mut enc = Encoder::default();
    let mut count = 0u64;
    for ev in replica.to_events() {
        count += 1;
        enc.append(&mut body, count, &ev);
    }
    let mut out = MAGIC.to_vec();
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&replica.lsn.to_le_bytes());
    header[8..].copy_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    out.extend_from_slice(&body);
    let again = parse(&out).expect("a parsed snapshot, written back, does not parse");
    assert_eq!(again, replica, "snapshot does not round-trip");
}
