//! Arbitrary bytes as a WAL segment file (`segment::scan`, what recovery and
//! the log tailers run on every segment). Scanning must never panic, must
//! report exactly the records it handed out, and what it accepted must be a
//! clean segment on its own, and reading it in slices (as snapshots are
//! built) must end exactly where and as reading it whole does. The bytes are scanned as they are, then again
//! with every record's CRC fixed up so mutations reach the rkyv check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill_engine::wal::codec::Encoder;
use seckill_engine::wal::segment::{scan, scan_in_slices, MAGIC};
use seckill_engine::Event;
use seckill_fuzz::fix_crcs;

fuzz_target!(|data: &[u8]| {
    check(data, 1);
    if data.len() > MAGIC.len() {
        let mut fixed = data.to_vec();
        fix_crcs(&mut fixed, MAGIC.len());
        check(&fixed, 1);
        // The first record's own LSN as the segment's first LSN, so LSN
        // mutations are not all stopped by the sequence check.
        if let Some(lsn) = fixed.get(MAGIC.len() + 8..MAGIC.len() + 16) {
            check(&fixed, u64::from_le_bytes(lsn.try_into().unwrap()));
        }
    }
});

fn check(bytes: &[u8], first_lsn: u64) {
    let mut seen: Vec<(u64, Event)> = Vec::new();
    let end = scan(bytes, first_lsn, &mut |lsn, ev| seen.push((lsn, ev)));
    for slice_bytes in [1, 61, 4096] {
        let mut sliced = Vec::new();
        let sliced_end = scan_in_slices(bytes, first_lsn, slice_bytes, &mut |lsn, ev| sliced.push((lsn, ev)));
        assert_eq!(sliced_end, end, "read in slices of {slice_bytes} bytes");
        assert_eq!(sliced, seen, "read in slices of {slice_bytes} bytes");
    }
    assert!(end.valid_bytes as usize <= bytes.len());
    if end.stopped.is_none() {
        assert_eq!(end.valid_bytes as usize, bytes.len(), "{end:?}");
    } else if bytes.len() >= MAGIC.len() && end.valid_bytes as usize == bytes.len() {
        panic!("stopped inside a segment with nothing left to read: {end:?}");
    }
    assert_eq!(end.last_lsn, first_lsn.saturating_sub(1).wrapping_add(seen.len() as u64), "{end:?}");
    for (i, (lsn, _)) in seen.iter().enumerate() {
        assert_eq!(*lsn, first_lsn.saturating_sub(1).wrapping_add(i as u64 + 1));
    }
    if seen.is_empty() {
        return;
    }
    // The accepted prefix is a whole segment that reads back the same.
    let prefix = &bytes[..end.valid_bytes as usize];
    let mut again = Vec::new();
    let end2 = scan(prefix, first_lsn, &mut |lsn, ev| again.push((lsn, ev)));
    assert_eq!(end2.stopped, None);
    assert_eq!(again, seen);
    // Every accepted event re-encodes to a segment that decodes to it.
    let mut enc = Encoder::default();
    let mut out = MAGIC.to_vec();
    for (lsn, ev) in &seen {
        enc.append(&mut out, *lsn, ev);
    }
    let mut back = Vec::new();
    let end3 = scan(&out, first_lsn, &mut |lsn, ev| back.push((lsn, ev)));
    assert_eq!(end3.stopped, None);
    assert_eq!(back, seen);
}
