//! Helpers shared by the fuzz targets and the seed generator.

use seckill_engine::wal::codec::{HEADER_BYTES, PAYLOAD_BYTES_MAX};

/// Rewrites the CRC of every record in `bytes[start..]` whose length field
/// is in range, so mutated payloads get past the checksum and reach the rkyv
/// validation and the replay logic behind it. Stops at the first record
/// whose length is out of range or runs past the end.
pub fn fix_crcs(bytes: &mut [u8], start: usize) {
    let mut at = start;
    while at + HEADER_BYTES <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || len > PAYLOAD_BYTES_MAX || at + HEADER_BYTES + len > bytes.len() {
            return;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[at + 8..at + 16]),
            &bytes[at + HEADER_BYTES..at + HEADER_BYTES + len],
        );
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += HEADER_BYTES + len;
    }
}

/// One framed record around an arbitrary payload, with a correct CRC.
pub fn record(lsn: u64, payload: &[u8]) -> Vec<u8> {
    let lsn_bytes = lsn.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&lsn_bytes), payload);
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn_bytes);
    out.extend_from_slice(payload);
    out
}

/// Feeds `data` to `check` as one frame body, then as a byte stream of
/// any number of frames (popped by `FrameReader`, the reader every
/// connection uses, with the stream cut in two where the first byte says):
/// the shape shared by the request and response frame targets.
pub fn each_frame(data: &[u8], check: impl Fn(&[u8])) {
    check(data);
    let cut = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let mut frames = seckill_proto::FrameReader::with_capacity(16);
    for part in [&data[..cut], &data[cut..]] {
        frames.push(part);
        while let Ok(Some(body)) = frames.next_frame() {
            assert!(body.len() >= seckill_proto::frame::HEADER_BYTES);
            check(body);
        }
    }
}

/// A frame body that decodes must re-encode to exactly the same bytes
/// (`what`: "request" or "response", for the message). The check of the
/// request and response frame targets, with their codec's two halves.
pub fn reencodes<M, E>(
    body: &[u8],
    decode: fn(&[u8]) -> Result<(u64, M), E>,
    encode: fn(&mut Vec<u8>, u64, &M),
    what: &str,
) {
    if let Ok((request_id, m)) = decode(body) {
        let mut out = Vec::new();
        encode(&mut out, request_id, &m);
        assert_eq!(&out[4..], body, "decoded {what} does not re-encode canonically");
    }
}
