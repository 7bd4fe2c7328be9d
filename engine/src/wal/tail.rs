//! Reading the log as it grows, for consumers downstream of the engine
//! (persister, Redis mirror). A tailer only ever returns durable records,
//! in LSN order, each once; it survives segment rotation.

use super::codec::{decode, Decoded, HEADER_BYTES};
use super::segment::{self, MAGIC};
use super::WalStatus;
use crate::event::Event;
use rkyv::util::AlignedVec;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why a tailer cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("I/O error reading the WAL: {0}")]
    Io(#[from] io::Error),
    #[error("WAL records from {0} on are gone (deleted below a checkpoint); resync from engine state")]
    Truncated(u64),
    #[error("WAL damaged at LSN {0}: {1}")]
    Corrupt(u64, &'static str),
}

/// Room made for each read of a segment.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Reads the log as it grows, record by record, up to the durable LSN
/// (the persister, the mirror and resyncs).
pub struct Tailer {
    dir: PathBuf,
    status: Arc<WalStatus>,
    /// The next LSN this tailer will return.
    next_lsn: u64,
    file: Option<(std::fs::File, segment::Segment)>,
    /// Bytes read from the segment are `buf[at..end]`; the rest of `buf`
    /// is zeroed room for the next read, kept between reads (zeroing a
    /// fresh 1 MB at every read cost the mirror more than decoding).
    buf: Vec<u8>,
    /// Where `buf` starts in the segment file.
    buf_offset: u64,
    /// Bytes of `buf` already consumed.
    at: usize,
    /// End of the bytes read.
    end: usize,
    aligned: AlignedVec<16>,
}

impl Tailer {
    /// A tailer that returns records after `after_lsn`.
    pub fn new(data_dir: &std::path::Path, status: Arc<WalStatus>, after_lsn: u64) -> Self {
        Self {
            dir: data_dir.join("wal"),
            status,
            next_lsn: after_lsn + 1,
            file: None,
            buf: Vec::new(),
            buf_offset: 0,
            at: 0,
            end: 0,
            aligned: AlignedVec::new(),
        }
    }

    /// The LSN the next record returned will have.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Records not yet returned that are durable now.
    pub fn lag_records(&self) -> u64 {
        (self.status.durable_lsn.load(Ordering::Acquire) + 1).saturating_sub(self.next_lsn)
    }

    /// Appends up to `max` durable records to `out`. Returns how many.
    pub fn poll(&mut self, max: usize, out: &mut Vec<(u64, Event)>) -> Result<usize, TailError> {
        let durable = self.status.durable_lsn.load(Ordering::Acquire);
        let mut n = 0;
        // Whether the bytes at `at` were read again after they failed to decode.
        let mut reread = false;
        while n < max && self.next_lsn <= durable {
            if self.file.is_none() {
                self.open_segment_for(self.next_lsn)?;
            }
            let why = match decode(&self.buf[self.at..self.end], &mut self.aligned) {
                Decoded::Record { bytes, lsn, .. } if lsn < self.next_lsn => {
                    self.at += bytes; // before where we start
                    continue;
                }
                Decoded::Record { lsn, event, bytes } if lsn == self.next_lsn => {
                    reread = false;
                    self.at += bytes;
                    out.push((lsn, *event));
                    self.next_lsn += 1;
                    n += 1;
                    continue;
                }
                Decoded::Record { .. } => "LSN out of sequence",
                Decoded::Incomplete => {
                    // Durable records are on disk: read more of this segment,
                    // or move to the next one when this one is finished.
                    if self.read_more()? == 0 && !self.advance_segment()? {
                        break;
                    }
                    continue;
                }
                Decoded::End => {
                    // Zeros written ahead, read before the records that are
                    // durable now were written over them: read again from
                    // here. Still zeros: this segment is finished (the
                    // writer moved on) or nothing new is in it yet.
                    self.read_again()?;
                    let still_zeros =
                        self.buf[self.at..self.end].get(..HEADER_BYTES).is_some_and(|h| h.iter().all(|b| *b == 0));
                    if still_zeros && !self.advance_segment()? {
                        break;
                    }
                    continue;
                }
                Decoded::Corrupt(why) => why,
            };
            // Bytes read while the writer was still writing them over the
            // zeros (before they were durable) are whole now: only what
            // fails to decode twice is damage.
            if reread {
                return Err(TailError::Corrupt(self.next_lsn, why));
            }
            self.read_again()?;
            reread = true;
        }
        Ok(n)
    }

    /// Drops the buffered bytes from `at` on and reads them again from the
    /// file: they may have been read before the writer wrote them.
    fn read_again(&mut self) -> io::Result<()> {
        self.end = self.at;
        self.read_more()?;
        Ok(())
    }

    /// Reads the next part of the segment, after the bytes read, into `buf`.
    fn read_more(&mut self) -> io::Result<usize> {
        let Some((f, _)) = self.file.as_mut() else { return Ok(0) };
        if self.at > 0 {
            self.buf.copy_within(self.at..self.end, 0);
            self.buf_offset += self.at as u64;
            self.end -= self.at;
            self.at = 0;
        }
        // Zeroes only what the buffer grows by: once, unless a record is
        // larger than what is left.
        if self.buf.len() < self.end + READ_CHUNK_BYTES {
            self.buf.resize(self.end + READ_CHUNK_BYTES, 0);
        }
        let got = f.read_at(&mut self.buf[self.end..], self.buf_offset + self.end as u64)?;
        self.end += got;
        debug_assert!(self.at <= self.end && self.end <= self.buf.len());
        Ok(got)
    }

    /// Switches to the segment holding `next_lsn` if the current one ended.
    fn advance_segment(&mut self) -> Result<bool, TailError> {
        let segments = segment::list(&self.dir)?;
        let current = self.file.as_ref().map(|(_, s)| s.first_lsn).unwrap_or(0);
        match segments.iter().find(|s| s.first_lsn > current && s.first_lsn <= self.next_lsn) {
            Some(_) => {
                self.open_segment_for(self.next_lsn)?;
                Ok(true)
            }
            // A later segment starts past the next LSN while this one has
            // no more: the records between are gone (a replica's `wal/`
            // that started over at an installed snapshot, `wal::copy`).
            None if segments.iter().any(|s| s.first_lsn > self.next_lsn) => Err(TailError::Truncated(self.next_lsn)),
            None => Ok(false),
        }
    }

    fn open_segment_for(&mut self, lsn: u64) -> Result<(), TailError> {
        let segments = segment::list(&self.dir)?;
        let Some(seg) = segments.iter().rev().find(|s| s.first_lsn <= lsn) else {
            return Err(TailError::Truncated(lsn));
        };
        let mut f = std::fs::File::open(&seg.path)?;
        let mut magic = [0u8; 8];
        f.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(TailError::Corrupt(lsn, "bad segment magic"));
        }
        self.buf_offset = MAGIC.len() as u64;
        self.at = 0;
        self.end = 0;
        self.file = Some((f, seg.clone()));
        Ok(())
    }
}
