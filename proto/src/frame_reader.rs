//! A receive buffer that turns a byte stream into frames, with no I/O:
//! the caller reads from its socket into [`FrameReader::spare`] (or hands
//! bytes to [`FrameReader::push`]) and pops whole frames with
//! [`FrameReader::next_frame`]. Every loop that splits frames off a
//! connection (front and engine clients, the wire server, benches, fuzz
//! targets) uses this one, so they share the limits of [`split_frame`].

use crate::frame::{split_frame, FrameError, FRAME_BYTES_MAX, LEN_BYTES};

/// Bytes received but not yet popped as frames.
///
/// Memory stays bounded: a frame is refused (`FrameError`) as soon as its
/// length field is read, so what waits here is at most one incomplete
/// frame (≤ `LEN_BYTES + FRAME_BYTES_MAX`) plus the last read.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// First byte not yet popped.
    start: usize,
    /// End of the received bytes.
    end: usize,
}

impl FrameReader {
    /// A reader whose buffer starts at `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        FrameReader { buf: vec![0; capacity], start: 0, end: 0 }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Room for at least `min` more bytes, to read into; then call
    /// [`FrameReader::filled`] with the count read. Popped bytes are
    /// reclaimed first, so the buffer grows only when a frame needs it.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < min {
            self.buf.resize(self.end + min, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`FrameReader::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame (kind + id + payload, without the length
    /// field), `Ok(None)` when more bytes are needed, or the reason the
    /// stream is not frames (the connection should be closed: nothing after
    /// a bad length can be trusted).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let (start, end) = (self.start, self.end);
        match split_frame(&self.buf[start..end])? {
            Some((_, used)) => {
                self.start += used;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                }
                Ok(Some(&self.buf[start + LEN_BYTES..start + used]))
            }
            None => Ok(None),
        }
    }

    /// Bytes received and not yet popped.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The largest number of bytes one frame occupies on the wire.
    pub const FRAME_ON_WIRE_MAX: usize = LEN_BYTES + FRAME_BYTES_MAX;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_request, encode_request, OrderId, Request};
    use proptest::prelude::*;

    fn frames(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for id in 0..n {
            encode_request(&mut out, id, &Request::GetOrder { user_id: Some(id), order_id: OrderId::first_at(id, 1) });
        }
        out
    }

    fn ids(r: &mut FrameReader) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(frame) = r.next_frame().unwrap() {
            got.push(decode_request(frame).unwrap().0);
        }
        got
    }

    #[test]
    fn whole_frames_come_out_in_order_and_partial_ones_wait() {
        let bytes = frames(3);
        let mut r = FrameReader::default();
        r.push(&bytes[..bytes.len() - 1]);
        assert_eq!(ids(&mut r), [0, 1]);
        assert!(r.buffered() > 0);
        r.push(&bytes[bytes.len() - 1..]);
        assert_eq!(ids(&mut r), [2]);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_bad_length_is_an_error_after_the_good_frames() {
        let mut bytes = frames(2);
        bytes.extend_from_slice(&(FRAME_BYTES_MAX as u32 + 1).to_le_bytes());
        let mut r = FrameReader::with_capacity(16);
        r.push(&bytes);
        assert!(r.next_frame().unwrap().is_some());
        assert!(r.next_frame().unwrap().is_some());
        assert!(matches!(r.next_frame(), Err(FrameError::TooLarge { .. })));
        let mut r = FrameReader::default();
        r.push(&[1, 0, 0, 0]);
        assert!(matches!(r.next_frame(), Err(FrameError::TooShort { len: 1 })));
    }

    #[test]
    fn the_buffer_stays_bounded() {
        let bytes = frames(2000);
        let mut r = FrameReader::with_capacity(64);
        let mut got = 0;
        for chunk in bytes.chunks(1000) {
            let spare = r.spare(1000);
            spare[..chunk.len()].copy_from_slice(chunk);
            r.filled(chunk.len());
            got += ids(&mut r).len();
        }
        assert_eq!(got, 2000);
        assert!(r.buf.len() <= 64 + 2 * 1000, "{}", r.buf.len());
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_gives_the_same_frames(cuts in proptest::collection::vec(0usize..2000, 0..20)) {
            let bytes = frames(40);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut r = FrameReader::with_capacity(8);
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                r.push(&bytes[w[0]..w[1]]);
                got.extend(ids(&mut r));
            }
            prop_assert_eq!(got, (0..40).collect::<Vec<_>>());
        }
    }
}
