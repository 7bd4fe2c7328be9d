//! `codec::decode` on arbitrary bytes: as a raw record (length, CRC, LSN,
//! payload), and as a payload wrapped in a record with a correct CRC, which
//! puts the rkyv validation (`bytecheck`) of `Event` under the fuzzer. Never
//! a panic; every record that decodes re-encodes to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use seckill_engine::wal::codec::{decode, Decoded, Encoder, HEADER_BYTES};
use seckill_fuzz::record;

fuzz_target!(|data: &[u8]| {
    let mut aligned = AlignedVec::<16>::new();
    check(decode(data, &mut aligned), data.len());
    // The same bytes at an odd offset: decode must not depend on alignment.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(data);
    assert_eq!(decode(&shifted[1..], &mut aligned), decode(data, &mut aligned));
    if !data.is_empty() {
        let rec = record(7, data);
        check(decode(&rec, &mut aligned), rec.len());
    }
});

fn check(d: Decoded, len: usize) {
    if let Decoded::Record { lsn, event, bytes } = d {
        assert!(bytes > HEADER_BYTES && bytes <= len);
        let mut out = Vec::new();
        Encoder::default().append(&mut out, lsn, &event);
        let mut aligned = AlignedVec::<16>::new();
        match decode(&out, &mut aligned) {
            Decoded::Record { lsn: l2, event: e2, bytes: b2 } => {
                assert_eq!((l2, &e2, b2), (lsn, &event, out.len()));
            }
            other => panic!("re-encoded {event:?} does not decode: {other:?}"),
        }
    }
}
