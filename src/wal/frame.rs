//! The on-disk frame of one record: what makes a log readable after a crash.
//!
//! ```text
//! [ length: u32 LE ][ crc32: u32 LE ][ position: u64 LE ][ payload: length bytes ]
//! ```
//!
//! The checksum covers the position and the payload, so a frame cut short by a crash, a frame
//! of zeros a file system left behind, or a flipped bit all fail to decode; the position
//! (the log sequence number) makes a frame from the wrong place in the log detectable too.
//! Pure functions over bytes: the log reader and the fuzz targets use them alike.

/// Bytes before a frame's payload.
pub const HEADER: usize = 16;

/// Appends one frame holding `position` and the payload that `write` appends to `buf`.
/// `write` must only append.
pub fn push(buf: &mut Vec<u8>, position: u64, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    buf[start + 8..start + 16].copy_from_slice(&position.to_le_bytes());
    write(buf);
    let length = (buf.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&length.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's position in the log.
    pub position: u64,
    /// The record's bytes.
    pub payload: &'a [u8],
}

/// Why the bytes at an offset are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The bytes end before the frame does: a write cut off by a crash, if this is the tail.
    Short,
    /// The checksum does not match: damaged, or never completely written.
    Checksum,
}

/// A frame's header, read on its own (by readers that stream frames from a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of payload that follow.
    pub length: usize,
    /// The checksum of the position and the payload.
    pub crc: u32,
    /// The record's position.
    pub position: u64,
}

impl Header {
    /// The header in the first [`HEADER`] bytes of a frame.
    pub fn parse(bytes: &[u8; HEADER]) -> Header {
        let [l0, l1, l2, l3, c0, c1, c2, c3, p @ ..] = *bytes;
        Header {
            length: u32::from_le_bytes([l0, l1, l2, l3]) as usize,
            crc: u32::from_le_bytes([c0, c1, c2, c3]),
            position: u64::from_le_bytes(p),
        }
    }

    /// Whether `payload` is the one this header's checksum was made over.
    pub fn checks(&self, payload: &[u8]) -> bool {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.position.to_le_bytes());
        hasher.update(payload);
        hasher.finalize() == self.crc
    }
}

/// Decodes the frame at the start of `bytes`: the frame and its total length, or why it is
/// not one. `Ok(None)` at the end of the bytes.
pub fn decode(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Bad> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let Some(head) = bytes.first_chunk::<HEADER>() else {
        return Err(Bad::Short);
    };
    let header = Header::parse(head);
    let Some(end) = HEADER
        .checked_add(header.length)
        .filter(|end| *end <= bytes.len())
    else {
        return Err(Bad::Short);
    };
    let payload = &bytes[HEADER..end];
    if !header.checks(payload) {
        return Err(Bad::Checksum);
    }
    Ok(Some((
        Frame {
            position: header.position,
            payload,
        },
        end,
    )))
}

/// Whether the intact frame of the record after the bad one (position `after + 2`, the bad
/// one being `after + 1`) starts anywhere in `bytes`: tells damage in the middle of a log
/// (the records after it are intact) from a torn tail (nothing follows). Only that exact
/// position counts, so a stored value that happens to hold frame-like bytes cannot make a
/// crash's torn end look like damage.
pub fn intact_frame_follows(bytes: &[u8], after: u64) -> bool {
    let want = after.saturating_add(2);
    (1..bytes.len())
        .any(|at| matches!(decode(&bytes[at..]), Ok(Some((frame, _))) if frame.position == want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            push(&mut buf, i as u64 + 1, |b| b.extend_from_slice(p));
        }
        buf
    }

    #[test]
    fn frames_round_trip_and_every_cut_is_short() {
        let buf = frames(&[b"one", b"", b"three"]);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((frame, len)) = decode(&buf[at..]).unwrap() {
            seen.push((frame.position, frame.payload.to_vec()));
            at += len;
        }
        assert_eq!(
            seen,
            vec![
                (1, b"one".to_vec()),
                (2, Vec::new()),
                (3, b"three".to_vec())
            ]
        );
        let last = buf.len() - (HEADER + 5);
        for cut in last + 1..buf.len() {
            assert_eq!(decode(&buf[last..cut]), Err(Bad::Short), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let buf = frames(&[b"payload"]);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Ok(Some((f, _))) if f.payload == b"payload" && f.position == 1),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn damage_is_told_from_a_torn_tail() {
        let buf = frames(&[b"a", b"b", b"c"]);
        let second = HEADER + 1;
        assert!(intact_frame_follows(&buf[second..], 1));
        let mut torn = frames(&[b"a"]);
        torn.extend_from_slice(&[0; 40]);
        assert!(!intact_frame_follows(&torn[HEADER + 1..], 1));
    }
}
