//! Segment files: `wal/<first lsn, 20 digits>.wal`, each starting with a
//! magic header, then records, then zeros the writer wrote ahead of them
//! (so that an fdatasync of new records rewrites data only, not the file's
//! size: docs/DURABILITY.md). Reading stops cleanly at the zeros and at a
//! torn tail.

use super::codec::{decode, Decoded};
use super::fs::{Fs, OsFs};
use crate::event::Event;
use rkyv::util::AlignedVec;
use std::io;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"SKWAL\0\0\x01";

/// A WAL segment file and the LSN of its first record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first_lsn: u64,
    pub path: PathBuf,
}

pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}.wal"))
}

/// The segments in `dir`, oldest first. Files with other names are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    list_in(&OsFs, dir)
}

/// `list` through a file-system seam.
pub(crate) fn list_in(fs: &dyn Fs, dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for path in fs.list(dir)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".wal") else { continue };
        if stem.len() != 20 {
            continue;
        }
        if let Ok(first_lsn) = stem.parse::<u64>() {
            out.push(Segment { first_lsn, path });
        }
    }
    out.sort_by_key(|s| s.first_lsn);
    Ok(out)
}

/// How one segment ended.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentEnd {
    /// LSN of the last good record (or `first_lsn - 1` when there is none).
    pub last_lsn: u64,
    /// Bytes of the file up to the end of the last good record.
    pub valid_bytes: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub stopped: Option<&'static str>,
    /// The records end at zeros written ahead (not at the end of the file).
    pub zeros_after: bool,
}

impl SegmentEnd {
    /// A good record after where reading stopped in `bytes` (a segment
    /// starting at `first_lsn`), as (offset, lsn): what tells damage to
    /// synced records from a torn or unwritten end.
    pub(crate) fn record_after(&self, bytes: &[u8], first_lsn: u64) -> Option<(u64, u64)> {
        valid_record_after(bytes, self.valid_bytes as usize, self.last_lsn.max(first_lsn.saturating_sub(1)))
    }
}

/// Reads every good record of one segment, in order, calling `f` for each.
/// Stops at the first record that is torn, corrupt or out of sequence.
pub fn read(seg: &Segment, f: impl FnMut(u64, Event)) -> io::Result<SegmentEnd> {
    read_in(&OsFs, seg, f)
}

/// `read` through a file-system seam.
pub(crate) fn read_in(fs: &dyn Fs, seg: &Segment, mut f: impl FnMut(u64, Event)) -> io::Result<SegmentEnd> {
    let bytes = fs.read(&seg.path)?;
    Ok(scan(&bytes, seg.first_lsn, &mut f))
}

/// After a bad record at `from`: the first whole, checked record further
/// on with an LSN above `after_lsn`, as (offset, lsn). Finding one means the
/// damage is not a torn tail (a crash only tears the end of what was
/// written) but bytes gone bad in the middle of acknowledged records.
fn valid_record_after(bytes: &[u8], from: usize, after_lsn: u64) -> Option<(u64, u64)> {
    let mut aligned = AlignedVec::<16>::new();
    // A cheap look at the LSN field first: no more records than bytes follow.
    let plausible = |at: usize| {
        bytes
            .get(at + 8..at + 16)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .is_some_and(|lsn| lsn > after_lsn && lsn - after_lsn <= bytes.len() as u64)
    };
    (from.saturating_add(1)..bytes.len()).filter(|at| plausible(*at)).find_map(|at| {
        match decode(&bytes[at..], &mut aligned) {
            Decoded::Record { lsn, .. } if lsn > after_lsn => Some((at as u64, lsn)),
            _ => None,
        }
    })
}

/// The pure part of `read`, which the fuzz tests drive with any bytes.
pub fn scan(bytes: &[u8], first_lsn: u64, f: &mut impl FnMut(u64, Event)) -> SegmentEnd {
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        let why = if bytes.len() < MAGIC.len() { "torn segment header" } else { "bad segment magic" };
        return SegmentEnd {
            last_lsn: first_lsn.saturating_sub(1),
            valid_bytes: 0,
            stopped: Some(why),
            zeros_after: false,
        };
    }
    scan_records(bytes, MAGIC.len(), first_lsn, f)
}

/// Reads records from `bytes[start..]`, expecting LSNs `first_lsn, first_lsn + 1, …`.
pub(crate) fn scan_records(bytes: &[u8], start: usize, first_lsn: u64, f: &mut impl FnMut(u64, Event)) -> SegmentEnd {
    let mut end = SegmentEnd {
        last_lsn: first_lsn.saturating_sub(1),
        valid_bytes: start as u64,
        stopped: None,
        zeros_after: false,
    };
    let mut at = start;
    let mut aligned = AlignedVec::<16>::new();
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        match decode(rest, &mut aligned) {
            Decoded::Record { lsn, event, bytes: n } => {
                if lsn != end.last_lsn.wrapping_add(1) {
                    end.stopped = Some("LSN out of sequence");
                    return end;
                }
                f(lsn, *event);
                at += n;
                end.last_lsn = lsn;
                end.valid_bytes = at as u64;
            }
            Decoded::Incomplete => {
                end.stopped = Some("torn record");
                return end;
            }
            Decoded::Corrupt(why) => {
                end.stopped = Some(why);
                return end;
            }
            Decoded::End => {
                end.zeros_after = true;
                return end;
            }
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::codec::Encoder;
    use proptest::prelude::*;

    fn segment_bytes(first: u64, n: u64) -> Vec<u8> {
        let mut buf = MAGIC.to_vec();
        let mut enc = Encoder::default();
        for lsn in first..first + n {
            enc.append(&mut buf, lsn, &Event::StockAdded { activity_id: 1, amount: lsn });
        }
        buf
    }

    #[test]
    fn reads_all_then_stops_at_a_torn_tail() {
        let buf = segment_bytes(10, 5);
        let mut seen = Vec::new();
        let end = scan(&buf, 10, &mut |lsn, _| seen.push(lsn));
        assert_eq!(seen, vec![10, 11, 12, 13, 14]);
        assert_eq!(end, SegmentEnd { last_lsn: 14, valid_bytes: buf.len() as u64, stopped: None, zeros_after: false });
        let cut = &buf[..buf.len() - 3];
        let end = scan(cut, 10, &mut |_, _| {});
        assert_eq!(end.last_lsn, 13);
        assert_eq!(end.stopped, Some("torn record"));
        assert!(end.valid_bytes < cut.len() as u64);
    }

    #[test]
    fn reads_all_then_stops_cleanly_at_zeros_written_ahead() {
        let mut buf = segment_bytes(10, 5);
        let records = buf.len() as u64;
        buf.resize(buf.len() + 64 * 1024, 0);
        let mut seen = Vec::new();
        let end = scan(&buf, 10, &mut |lsn, _| seen.push(lsn));
        assert_eq!(seen, vec![10, 11, 12, 13, 14]);
        assert_eq!(end, SegmentEnd { last_lsn: 14, valid_bytes: records, stopped: None, zeros_after: true });
        // A record torn into the zeros is torn, not the end.
        let torn = &mut buf.clone();
        torn[records as usize..records as usize + 20].copy_from_slice(&buf[MAGIC.len()..MAGIC.len() + 20]);
        let end = scan(torn, 10, &mut |_, _| {});
        assert_eq!((end.last_lsn, end.zeros_after), (14, false));
        assert!(end.stopped.is_some());
    }

    #[test]
    fn a_gap_in_lsns_ends_the_segment() {
        let mut buf = segment_bytes(1, 2);
        Encoder::default().append(&mut buf, 9, &Event::StockAdded { activity_id: 1, amount: 1 });
        let end = scan(&buf, 1, &mut |_, _| {});
        assert_eq!((end.last_lsn, end.stopped), (2, Some("LSN out of sequence")));
    }

    proptest! {
        #[test]
        fn any_bytes_any_damage_never_panics_and_never_misreads(
            n in 1u64..20,
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let good = segment_bytes(1, n);
            let mut bad = good.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 0x10;
            bad.truncate(cut.index(bad.len() + 1).max(i));
            bad.extend_from_slice(&garbage);
            let mut seen = Vec::new();
            let end = scan(&bad, 1, &mut |lsn, ev| seen.push((lsn, ev)));
            // Whatever survived is a prefix of what was written.
            let mut expected = Vec::new();
            scan(&good, 1, &mut |lsn, ev| expected.push((lsn, ev)));
            prop_assert!(seen.len() <= expected.len());
            prop_assert_eq!(&expected[..seen.len()], &seen[..]);
            prop_assert_eq!(end.last_lsn, seen.len() as u64);
        }
    }
}
