//! Snapshots: the whole state at one LSN, as the events that rebuild it.
//!
//! File: `snapshots/<lsn, 20 digits>.snap` = magic | lsn u64 | count u64 |
//! crc32c(lsn, count) u32 | `count` records numbered 1..=count. Written to a `.tmp`, fsynced, renamed,
//! and the directory fsynced, so a crash leaves the old snapshot or the new
//! one, never half of one. A snapshot that does not check out is skipped and
//! the one before it is used (its WAL is kept until a newer one is durable).

use super::codec::Encoder;
use super::segment::scan_records;
use super::{sync_dir, Checkpoints};
use crate::event::Event;
use crate::replica::Replica;
use crossbeam_channel::{select, Receiver, Sender};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"SKSNAP\0\x01";
const HEADER_BYTES: usize = 28;
/// Snapshots kept on disk; older ones are deleted after a new one is durable.
pub const KEEP: usize = 2;

fn path_for(dir: &Path, lsn: u64, ext: &str) -> PathBuf {
    dir.join(format!("{lsn:020}.{ext}"))
}

pub fn write(dir: &Path, replica: &Replica) -> io::Result<PathBuf> {
    let mut body = Vec::with_capacity(1 << 20);
    let mut enc = Encoder::default();
    let mut count = 0u64;
    for ev in replica.to_events() {
        count += 1;
        enc.append(&mut body, count, &ev);
    }
    let tmp = path_for(dir, replica.lsn, "tmp");
    let mut f = std::fs::File::create(&tmp)?;
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&replica.lsn.to_le_bytes());
    header[8..].copy_from_slice(&count.to_le_bytes());
    f.write_all(MAGIC)?;
    f.write_all(&header)?;
    f.write_all(&crc32c::crc32c(&header).to_le_bytes())?;
    f.write_all(&body)?;
    f.sync_all()?;
    drop(f);
    let done = path_for(dir, replica.lsn, "snap");
    std::fs::rename(&tmp, &done)?;
    sync_dir(dir)?;
    for old in list(dir)?.into_iter().rev().skip(KEEP) {
        let _ = std::fs::remove_file(old.1);
    }
    Ok(done)
}

/// The LSN the WAL must be kept after: that of the oldest snapshot kept,
/// so falling back to it (if the newest is damaged) still finds its log.
pub fn oldest_kept_lsn(dir: &Path) -> io::Result<Option<u64>> {
    Ok(list(dir)?.first().map(|(lsn, _)| *lsn))
}

/// Snapshot files, oldest first, with their LSN.
fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let lsn = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(lsn) = lsn {
            out.push((lsn, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one snapshot's bytes. `None` if anything is off.
pub fn parse(bytes: &[u8]) -> Option<Replica> {
    if bytes.get(..8)? != MAGIC.as_slice() {
        return None;
    }
    let lsn = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    let count = u64::from_le_bytes(bytes.get(16..24)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(24..28)?.try_into().ok()?);
    if crc32c::crc32c(bytes.get(8..24)?) != crc {
        return None;
    }
    let mut replica = Replica::default();
    let mut bad = false;
    let end = scan_records(bytes, HEADER_BYTES, 1, &mut |i, ev| {
        bad |= replica.apply(i, &ev).is_err();
    });
    if bad || end.stopped.is_some() || end.last_lsn != count {
        return None;
    }
    replica.lsn = lsn;
    Some(replica)
}

/// The newest snapshot that checks out, if any.
pub fn load_newest(dir: &Path) -> io::Result<Option<Replica>> {
    for (lsn, path) in list(dir)?.into_iter().rev() {
        match parse(&std::fs::read(&path)?) {
            Some(r) if r.lsn == lsn => return Ok(Some(r)),
            _ => tracing::warn!(path = %path.display(), "snapshot does not check out; trying an older one"),
        }
    }
    Ok(None)
}

pub enum Command {
    /// Write a snapshot now; answers with its LSN.
    Now(Sender<io::Result<u64>>),
}

/// The snapshot thread: keeps its own replica current from the durable
/// events the WAL writer passes on, and writes it every `every_records`
/// events or when asked. Its LSN is the WAL's truncation checkpoint.
pub fn run(
    dir: PathBuf,
    mut replica: Replica,
    events: Receiver<(u64, Vec<Event>)>,
    commands: Receiver<Command>,
    every_records: u64,
    checkpoints: Arc<Checkpoints>,
) {
    let mut since_last = 0u64;
    let mut broken = false;
    let snap = |replica: &Replica| -> io::Result<u64> {
        write(&dir, replica)?;
        if let Some(lsn) = oldest_kept_lsn(&dir)? {
            checkpoints.set("snapshot", lsn);
        }
        tracing::info!(lsn = replica.lsn, "snapshot written");
        Ok(replica.lsn)
    };
    loop {
        select! {
            recv(events) -> msg => {
                let Ok((first_lsn, evs)) = msg else { break };
                for (i, ev) in evs.iter().enumerate() {
                    if let Err(e) = replica.apply(first_lsn + i as u64, ev) {
                        tracing::error!(error = %e, "snapshot replica diverged from the log; snapshots stop");
                        broken = true;
                    }
                }
                since_last += evs.len() as u64;
                if !broken && since_last >= every_records {
                    since_last = 0;
                    if let Err(e) = snap(&replica) {
                        tracing::error!(error = %e, "writing a snapshot failed; the WAL is kept");
                    }
                }
            }
            recv(commands) -> msg => {
                let Ok(Command::Now(reply)) = msg else { break };
                let result = if broken {
                    Err(io::Error::other("snapshot replica diverged from the log; see the log"))
                } else {
                    since_last = 0;
                    snap(&replica)
                };
                let _ = reply.send(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Replica {
        let mut r = Replica::default();
        r.apply(1, &Event::StockAdded { activity_id: 1, amount: 1 }).unwrap_err();
        let a = crate::activity::Activity {
            id: 1,
            product_id: 0,
            product_name: "p".into(),
            title: "t".into(),
            price_cents: 5,
            starts_at_ms: 0,
            ends_at_ms: 10,
            per_user_limit: 1,
            payment_timeout_s: 60,
            require_buy_token: false,
            gate_factor: 5,
            status: crate::activity::ActivityStatus::Active,
        };
        r.apply(1, &Event::ActivityUpserted(a)).unwrap();
        r.apply(2, &Event::StockAdded { activity_id: 1, amount: 10 }).unwrap();
        r.apply(3, &Event::QuotaSet { activity_id: 1, user_id: 9, limit: 3 }).unwrap();
        r
    }

    #[test]
    fn snapshots_round_trip_and_keep_the_newest_two() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        for lsn in [3, 10, 20] {
            r.lsn = lsn;
            write(dir.path(), &r).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap().len(), KEEP);
        assert_eq!(load_newest(dir.path()).unwrap(), Some(r));
    }

    #[test]
    fn a_damaged_newest_snapshot_falls_back_to_the_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = sample();
        r.lsn = 3;
        write(dir.path(), &r).unwrap();
        let older = r.clone();
        r.lsn = 9;
        let newest = write(dir.path(), &r).unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&newest, bytes).unwrap();
        assert_eq!(load_newest(dir.path()).unwrap(), Some(older));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn damaged_snapshots_are_refused_or_exact(cut in 0usize..400, flip in 0usize..400) {
            let mut r = sample();
            r.lsn = 3;
            let dir = tempfile::tempdir().unwrap();
            let path = write(dir.path(), &r).unwrap();
            let mut bytes = std::fs::read(path).unwrap();
            if flip < bytes.len() { bytes[flip] ^= 0x08; }
            bytes.truncate(cut.min(bytes.len()));
            if let Some(got) = parse(&bytes) { prop_assert_eq!(got, r); }
        }
    }
}
