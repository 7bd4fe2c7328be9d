//! One log record: `len u32 | crc32c u32 | lsn u64 | payload`, little-endian.
//! The CRC covers the LSN and the payload; the payload is an rkyv-archived
//! [`Event`]. Snapshots use the same records. A header of sixteen zero bytes
//! is no record (a length is at least 1): it is where the written part of a
//! segment ends and the zeros written ahead of it begin.

use crate::event::Event;
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

/// Length (4), CRC32C of LSN and payload (4), LSN (8): the bytes before a
/// record's payload; the fuzz targets build records with it.
pub const HEADER_BYTES: usize = 16;
/// No event comes near this (text fields are capped at 1 KiB each); a
/// length above it can only be garbage.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Serializes events into framed records, reusing its scratch buffer.
#[derive(Default)]
pub struct Encoder {
    scratch: AlignedVec<16>,
}

impl Encoder {
    /// Appends `event` to `out` as the framed record of `lsn`: what the
    /// writer puts in a segment and a replica group's leader replicates.
    pub fn append(&mut self, out: &mut Vec<u8>, lsn: u64, event: &Event) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let scratch = match rkyv::api::high::to_bytes_in::<_, RkyvError>(event, scratch) {
            Ok(s) => s,
            Err(e) => panic!("archiving a WAL event cannot fail: {e}"),
        };
        let payload = scratch.as_slice();
        assert!(payload.len() <= PAYLOAD_BYTES_MAX, "event of {} bytes exceeds the record limit", payload.len());
        let lsn_bytes = lsn.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&lsn_bytes);
        out.extend_from_slice(payload);
        self.scratch = scratch;
    }
}

/// What [`decode`] found at the start of a buffer; a follower of a replica
/// group splits the leader's bytes with it.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, checked record of `bytes` bytes.
    Record { lsn: u64, event: Box<Event>, bytes: usize },
    /// The buffer ends inside a record: a torn write at the end of a log.
    Incomplete,
    /// Sixteen zero bytes: the end of what was written (zeros ahead).
    End,
    /// The bytes are not a record (bad length, CRC or payload).
    Corrupt(&'static str),
}

/// Reads the record at the start of `buf`. Never panics, whatever the bytes.
pub fn decode(buf: &[u8], aligned: &mut AlignedVec<16>) -> Decoded {
    let Some(header) = buf.get(..HEADER_BYTES) else {
        return Decoded::Incomplete;
    };
    let word = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if header.iter().all(|b| *b == 0) {
        return Decoded::End;
    }
    let len = word(0) as usize;
    let crc = word(4);
    let mut lsn_bytes = [0u8; 8];
    lsn_bytes.copy_from_slice(&header[8..16]);
    if len == 0 || len > PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt("record length out of range");
    }
    let Some(payload) = buf.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload) != crc {
        return Decoded::Corrupt("CRC mismatch");
    }
    aligned.clear();
    aligned.extend_from_slice(payload);
    match rkyv::from_bytes::<Event, RkyvError>(aligned) {
        Ok(event) => {
            Decoded::Record { lsn: u64::from_le_bytes(lsn_bytes), event: Box::new(event), bytes: HEADER_BYTES + len }
        }
        Err(_) => Decoded::Corrupt("payload is not an event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order_event(n: u64) -> Event {
        Event::OrderCreated(crate::event::fixtures::order(n))
    }

    #[test]
    fn records_round_trip() {
        let mut enc = Encoder::default();
        let mut buf = Vec::new();
        enc.append(&mut buf, 7, &order_event(1));
        enc.append(&mut buf, 8, &Event::StockAdded { activity_id: 3, amount: 9 });
        let mut aligned = AlignedVec::new();
        let Decoded::Record { lsn, event, bytes } = decode(&buf, &mut aligned) else { panic!("first record") };
        assert_eq!((lsn, *event), (7, order_event(1)));
        let Decoded::Record { lsn, event, .. } = decode(&buf[bytes..], &mut aligned) else { panic!("second") };
        assert_eq!((lsn, *event), (8, Event::StockAdded { activity_id: 3, amount: 9 }));
    }

    /// A status change as the WAL held it before 2026-12-07 (bytes written
    /// by that version) still reads back, as `OrderStatusChangedV1`: the new
    /// form was appended to the enum and the archived enum kept its size.
    #[test]
    fn a_status_change_logged_by_the_previous_version_reads_back() {
        const OLD: &str = "7000000048ca39260c000000000000000500000000000000000000000000000000000000\
            0000008001700300000000000300000000000000010000000000000002000000000000004d00000000000000\
            6300000000000000000000000000000000000000000000000000000000000000000000000000000000000000\
            00000000";
        let bytes: Vec<u8> =
            (0..OLD.len()).step_by(2).map(|i| u8::from_str_radix(&OLD[i..i + 2], 16).expect("hex")).collect();
        let mut aligned = AlignedVec::new();
        let Decoded::Record { lsn, event, bytes: n } = decode(&bytes, &mut aligned) else { panic!("not a record") };
        let want = Event::OrderStatusChangedV1 {
            order_id: crate::event::fixtures::order(3).id,
            user_id: 3,
            activity_id: 1,
            status: seckill_proto::OrderStatus::Paid,
            at_ms: 77,
            txn: 99,
        };
        assert_eq!((lsn, *event, n), (12, want.clone(), bytes.len()));
        let mut again = Vec::new();
        Encoder::default().append(&mut again, 12, &want);
        assert_eq!(again, bytes, "the old form is still written byte for byte the same");
        assert_eq!(std::mem::size_of::<<Event as rkyv::Archive>::Archived>(), 112, "older records' layout");
    }

    #[test]
    fn zeros_written_ahead_read_as_the_end_and_nothing_else_does() {
        let mut buf = Vec::new();
        Encoder::default().append(&mut buf, 3, &order_event(2));
        let record = buf.len();
        buf.resize(record + 4096, 0);
        let mut aligned = AlignedVec::new();
        assert!(matches!(decode(&buf, &mut aligned), Decoded::Record { lsn: 3, .. }));
        assert_eq!(decode(&buf[record..], &mut aligned), Decoded::End);
        // Fewer than a header's worth of zeros is a torn end, not the end.
        assert_eq!(decode(&buf[buf.len() - 15..], &mut aligned), Decoded::Incomplete);
        // One byte that is not zero anywhere in the header: not the end.
        for i in 0..HEADER_BYTES {
            let mut header = [0u8; HEADER_BYTES];
            header[i] = 1;
            assert_ne!(decode(&header, &mut aligned), Decoded::End, "byte {i}");
        }
    }

    #[test]
    fn every_cut_is_incomplete_and_every_flip_is_caught() {
        let mut buf = Vec::new();
        Encoder::default().append(&mut buf, 1, &order_event(5));
        let mut aligned = AlignedVec::new();
        for cut in 0..buf.len() {
            assert!(!matches!(decode(&buf[..cut], &mut aligned), Decoded::Record { .. }), "cut {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(decode(&bad, &mut aligned), Decoded::Record { .. }), "flip {i}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut aligned = AlignedVec::new();
            let _ = decode(&bytes, &mut aligned);
        }

        #[test]
        fn payload_garbage_with_a_valid_crc_is_refused(payload in proptest::collection::vec(any::<u8>(), 1..128)) {
            // A CRC only proves the bytes are the ones written; rkyv's check
            // must still refuse bytes that are not an event. Random bytes can
            // happen to be a valid archived event (a tag in range and plain
            // integers): then they must read as that event, exactly.
            let buf = record_with_valid_crc(&payload);
            let mut aligned = AlignedVec::new();
            match decode(&buf, &mut aligned) {
                Decoded::Corrupt(why) => prop_assert_eq!(why, "payload is not an event"),
                Decoded::Incomplete => prop_assert!(false, "a whole record read as torn"),
                Decoded::End => prop_assert!(false, "a whole record read as the end"),
                Decoded::Record { lsn, event, bytes } => {
                    prop_assert_eq!((lsn, bytes), (1, buf.len()));
                    let mut again = Vec::new();
                    Encoder::default().append(&mut again, 1, &event);
                    let mut aligned2 = AlignedVec::new();
                    match decode(&again, &mut aligned2) {
                        Decoded::Record { event: e2, .. } => prop_assert_eq!(e2, event),
                        other => prop_assert!(false, "a decoded event does not round-trip: {other:?}"),
                    }
                }
            }
        }
    }

    /// A record of LSN 1 around `payload`, with the CRC it deserves.
    fn record_with_valid_crc(payload: &[u8]) -> Vec<u8> {
        let lsn = 1u64.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn), payload);
        let mut buf = Vec::new();
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc.to_le_bytes());
        buf.extend_from_slice(&lsn);
        buf.extend_from_slice(payload);
        buf
    }

    /// An activity record as the WAL format has it: the archived layout of
    /// `Activity` is on disk in every log and snapshot, so a change to it
    /// (field order, types, a nested struct that moves a field) must fail
    /// here. Every field has its own value; both strings are out of line.
    #[test]
    fn an_activity_record_keeps_its_bytes() {
        let event = Event::ActivityUpserted(crate::activity::Activity {
            id: 0x0101_0101_0101_0101,
            product_id: 0x0202_0202_0202_0202,
            product_name: "phone of the year".into(),
            title: "Black Friday phone".into(),
            price_cents: 0x0303_0303_0303_0303,
            terms: seckill_proto::SaleTerms {
                starts_at_ms: 0x0404_0404_0404_0404,
                ends_at_ms: 0x0505_0505_0505_0505,
                per_user_limit: 0x0606_0606,
                payment_timeout_s: 0x0707_0707,
                require_buy_token: true,
                gate_factor: 0x0808_0808,
            },
            status: seckill_proto::ActivityStatus::Paused,
        });
        let mut buf = Vec::new();
        Encoder::default().append(&mut buf, 9, &event);
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, ACTIVITY_RECORD_HEX);
        let mut aligned = AlignedVec::new();
        let Decoded::Record { lsn, event: read, .. } = decode(&buf, &mut aligned) else { panic!("not a record") };
        assert_eq!((lsn, *read), (9, event));
    }

    /// Written by the flat `Activity` of before `SaleTerms` (16 header bytes,
    /// the two strings, then the archived event).
    const ACTIVITY_RECORD_HEX: &str = concat!(
        "a0000000c1b085ec090000000000000070686f6e65206f662074686520796561",
        "72426c61636b204672696461792070686f6e6500000000000000000000000000",
        "01000000000000000101010101010101020202020202020291000000b8ffffff",
        "92000000c1ffffff030303030303030304040404040404040505050505050505",
        "0606060607070707010000000808080802000000000000000000000000000000",
        "00000000000000000000000000000000",
    );

    #[test]
    fn bytes_that_are_no_event_are_refused() {
        // An enum tag far out of range, whatever follows.
        for len in [1usize, 8, 24, 40, 64] {
            let buf = record_with_valid_crc(&vec![0xffu8; len]);
            let mut aligned = AlignedVec::new();
            assert_eq!(decode(&buf, &mut aligned), Decoded::Corrupt("payload is not an event"), "len {len}");
        }
    }
}
