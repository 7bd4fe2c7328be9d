//! Segment files: `wal/<first lsn, 20 digits>.wal`, each starting with a
//! magic header, then records, then zeros the writer wrote ahead of them
//! (so that an fdatasync of new records rewrites data only, not the file's
//! size: docs/DURABILITY.md). Reading stops cleanly at the zeros and at a
//! torn tail.

use super::codec::{decode, Decoded};
use super::fs::{Fs, OsFs, ReadFile};
use crate::event::Event;
use rkyv::util::AlignedVec;
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The first bytes of every segment (format version in the last byte).
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

/// `read` through a file-system seam, in slices of [`READ_SLICE_BYTES`]:
/// never more than a slice and one record of the file in memory.
pub(crate) fn read_in(fs: &dyn Fs, seg: &Segment, mut f: impl FnMut(u64, Event)) -> io::Result<SegmentEnd> {
    let mut file = fs.open_read(&seg.path)?;
    read_segment(&mut *file, seg.first_lsn, READ_SLICE_BYTES, &mut |lsn, ev| {
        f(lsn, ev);
        ControlFlow::Continue(())
    })
}

/// Bytes of a segment or snapshot read from the file per step when it is
/// read in slices (building a snapshot, a consumer's resync, loading a
/// snapshot), so that reading a 64 MiB segment or a snapshot of a million
/// orders holds about this much of it in memory, not all of it.
pub(crate) const READ_SLICE_BYTES: usize = 1 << 20;

/// Reads one segment file (its magic, then its records) in slices of
/// `slice_bytes`: see [`read_records`].
pub(crate) fn read_segment(
    file: &mut dyn ReadFile,
    first_lsn: u64,
    slice_bytes: usize,
    f: &mut dyn FnMut(u64, Event) -> ControlFlow<()>,
) -> io::Result<SegmentEnd> {
    let mut magic = [0u8; MAGIC.len()];
    let got = read_full(file, &mut magic, 0)?;
    if let Some(why) = magic_error(&magic[..got]) {
        return Ok(SegmentEnd {
            last_lsn: first_lsn.saturating_sub(1),
            valid_bytes: 0,
            stopped: Some(why),
            zeros_after: false,
        });
    }
    read_records(file, MAGIC.len() as u64, first_lsn, slice_bytes, f)
}

/// Reads the records of `file` from byte `start` on in slices of
/// `slice_bytes`, expecting LSNs `first_lsn, first_lsn + 1, …`. Ends as
/// [`scan_records`] would on the whole file (the same torn-tail, corruption
/// and zeros-ahead rules: both are [`scan_window`]), or earlier where `f`
/// breaks. Holds at most a slice and one record of the file in memory.
pub(crate) fn read_records(
    file: &mut dyn ReadFile,
    start: u64,
    first_lsn: u64,
    slice_bytes: usize,
    f: &mut dyn FnMut(u64, Event) -> ControlFlow<()>,
) -> io::Result<SegmentEnd> {
    let slice_bytes = slice_bytes.max(1);
    let mut end =
        SegmentEnd { last_lsn: first_lsn.saturating_sub(1), valid_bytes: start, stopped: None, zeros_after: false };
    // `buf[..filled]` holds the file from `buf_offset`; it grows past a
    // slice only by what a record left over from the last slice takes.
    let (mut buf, mut buf_offset, mut filled, mut eof) = (Vec::new(), start, 0usize, false);
    let mut aligned = AlignedVec::<16>::new();
    loop {
        let consumed = match scan_window(&buf[..filled], buf_offset, eof, &mut end, &mut aligned, f) {
            Window::Done => return Ok(end),
            Window::More { consumed } => consumed,
        };
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        buf_offset += consumed as u64;
        if buf.len() < filled + slice_bytes {
            buf.resize(filled + slice_bytes, 0);
        }
        let got = file.read_at(&mut buf[filled..filled + slice_bytes], buf_offset + filled as u64)?;
        filled += got;
        eof = got == 0;
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes.
pub(crate) fn read_full(file: &mut dyn ReadFile, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// What is wrong with a segment that starts with `head` (at most
/// `MAGIC.len()` bytes, fewer only if the file is shorter), if anything.
fn magic_error(head: &[u8]) -> Option<&'static str> {
    if head == MAGIC.as_slice() {
        None
    } else if head.len() < MAGIC.len() {
        Some("torn segment header")
    } else {
        Some("bad segment magic")
    }
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
    if let Some(why) = magic_error(bytes.get(..MAGIC.len()).unwrap_or(bytes)) {
        return SegmentEnd {
            last_lsn: first_lsn.saturating_sub(1),
            valid_bytes: 0,
            stopped: Some(why),
            zeros_after: false,
        };
    }
    scan_records(bytes, MAGIC.len(), first_lsn, f)
}

/// [`scan`] through the reader that reads files in slices, `slice_bytes` at a
/// time, over `bytes` in memory: the fuzz tests check that it ends exactly
/// as `scan` does wherever the slices cut the records.
pub fn scan_in_slices(bytes: &[u8], first_lsn: u64, slice_bytes: usize, f: &mut impl FnMut(u64, Event)) -> SegmentEnd {
    let mut file = super::fs::InMemory(bytes);
    let read = read_segment(&mut file, first_lsn, slice_bytes, &mut |lsn, ev| {
        f(lsn, ev);
        ControlFlow::Continue(())
    });
    match read {
        Ok(end) => end,
        Err(e) => unreachable!("bytes in memory read without error: {e}"),
    }
}

/// Reads records from `bytes[start..]`, expecting LSNs `first_lsn, first_lsn + 1, …`.
pub(crate) fn scan_records(bytes: &[u8], start: usize, first_lsn: u64, f: &mut impl FnMut(u64, Event)) -> SegmentEnd {
    let mut end = SegmentEnd {
        last_lsn: first_lsn.saturating_sub(1),
        valid_bytes: start as u64,
        stopped: None,
        zeros_after: false,
    };
    let window = bytes.get(start..).unwrap_or_default();
    let mut aligned = AlignedVec::<16>::new();
    scan_window(window, start as u64, true, &mut end, &mut aligned, &mut |lsn, ev| {
        f(lsn, ev);
        ControlFlow::Continue(())
    });
    end
}

/// How [`scan_window`] left a window of the file.
enum Window {
    /// `end` is final: the records stopped, ended, or `f` broke.
    Done,
    /// The window ends inside a record (or is used up) before the end of
    /// the file: read more after its first `consumed` bytes.
    More { consumed: usize },
}

/// The one record loop of every reader of segments and snapshots:
/// `window` is the file from byte `offset` on (all of the rest if `eof`),
/// `end` says what was read before it. Records must follow `end.last_lsn`
/// one by one; reading stops at a torn record (one the file ends inside),
/// a corrupt one, one out of sequence, or sixteen zero bytes (the zeros
/// written ahead). A record cut by the end of a window that is not the end
/// of the file is not torn: the caller reads more.
fn scan_window(
    window: &[u8],
    offset: u64,
    eof: bool,
    end: &mut SegmentEnd,
    aligned: &mut AlignedVec<16>,
    f: &mut dyn FnMut(u64, Event) -> ControlFlow<()>,
) -> Window {
    let mut at = 0;
    loop {
        let rest = &window[at..];
        if rest.is_empty() {
            return if eof { Window::Done } else { Window::More { consumed: at } };
        }
        match decode(rest, aligned) {
            Decoded::Record { lsn, event, bytes: n } => {
                if lsn != end.last_lsn.wrapping_add(1) {
                    end.stopped = Some("LSN out of sequence");
                    return Window::Done;
                }
                at += n;
                end.last_lsn = lsn;
                end.valid_bytes = offset + at as u64;
                if f(lsn, *event).is_break() {
                    return Window::Done;
                }
            }
            Decoded::Incomplete if !eof => return Window::More { consumed: at },
            Decoded::Incomplete => {
                end.stopped = Some("torn record");
                return Window::Done;
            }
            Decoded::Corrupt(why) => {
                end.stopped = Some(why);
                return Window::Done;
            }
            Decoded::End => {
                end.zeros_after = true;
                return Window::Done;
            }
        }
    }
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

        /// Mutation caught: a record cut by a slice boundary read as torn
        /// (the `Incomplete if !eof` arm of `scan_window` taken out), or
        /// `valid_bytes` counted from the window instead of the file.
        #[test]
        fn read_in_slices_ends_exactly_as_the_whole_file_reads(
            n in 1u64..20,
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            zeros in 0usize..40,
            slice_bytes in 1usize..200,
        ) {
            let mut bytes = segment_bytes(1, n);
            let i = flip.index(bytes.len());
            bytes[i] ^= 0x10;
            bytes.truncate(cut.index(bytes.len() + 1).max(i));
            bytes.resize(bytes.len() + zeros, 0);
            let (mut whole, mut sliced) = (Vec::new(), Vec::new());
            let whole_end = scan(&bytes, 1, &mut |lsn, ev| whole.push((lsn, ev)));
            let sliced_end = scan_in_slices(&bytes, 1, slice_bytes, &mut |lsn, ev| sliced.push((lsn, ev)));
            prop_assert_eq!(sliced_end, whole_end);
            prop_assert_eq!(sliced, whole);
        }
    }
}
