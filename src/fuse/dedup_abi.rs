//! The dedup ioctl: `_IOWR('C', 20, 64 bytes)` on a regular file opened for writing (step)
//! or on anything on the mount (finish). Little-endian.
//!
//! | bytes  | request                      | answer               |
//! |--------|------------------------------|----------------------|
//! | 0..4   | magic                        | magic                |
//! | 4..8   | op: 1 step, 2 finish         | -                    |
//! | 8..16  | run id                       | pages scanned        |
//! | 16..24 | page index to start from     | pages merged         |
//! | 24..32 | -                            | zero pages made holes|
//! | 32..40 | -                            | pages skipped        |
//! | 40..48 | -                            | next page index (u64::MAX: done) |

use crate::error::{Error, Result};
use crate::ns::DedupStats;

/// Bytes of a dedup request or answer.
pub const DEDUP_SIZE: usize = 64;
/// `_IOWR('C', 20, 64)`.
pub const IOC_DEDUP: u32 = (3 << 30) | ((DEDUP_SIZE as u32) << 16) | ((b'C' as u32) << 8) | 20;

const MAGIC: u32 = 0x4444_5550;
/// Dedup the next batch of the file.
pub const OP_STEP: u32 = 1;
/// End the run: commit, forget the index.
pub const OP_FINISH: u32 = 2;

fn get(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn put(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn magic_ok(b: &[u8]) -> bool {
    b.len() == DEDUP_SIZE && b[0..4] == MAGIC.to_le_bytes()
}

/// A request: (op, run, from).
pub fn encode_req(op: u32, run: u64, from: u64) -> Vec<u8> {
    let mut b = vec![0u8; DEDUP_SIZE];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&op.to_le_bytes());
    put(&mut b, 8, run);
    put(&mut b, 16, from);
    b
}

/// Decodes a request into (op, run, from).
pub fn decode_req(b: &[u8]) -> Result<(u32, u64, u64)> {
    if !magic_ok(b) {
        return Err(Error::Invalid("malformed dedup request"));
    }
    let op = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    Ok((op, get(b, 8), get(b, 16)))
}

/// An answer.
pub fn encode_ans(s: &DedupStats) -> Vec<u8> {
    let mut b = vec![0u8; DEDUP_SIZE];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    for (k, v) in [s.scanned, s.merged, s.zeroed, s.skipped, s.next]
        .iter()
        .enumerate()
    {
        put(&mut b, 8 + 8 * k, *v);
    }
    b
}

/// Decodes an answer.
pub fn decode_ans(b: &[u8]) -> Result<DedupStats> {
    if !magic_ok(b) {
        return Err(Error::Invalid("malformed dedup answer"));
    }
    Ok(DedupStats {
        scanned: get(b, 8),
        merged: get(b, 16),
        zeroed: get(b, 24),
        skipped: get(b, 32),
        next: get(b, 40),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let r = encode_req(OP_STEP, 7, 512);
        assert_eq!(decode_req(&r).expect("req"), (OP_STEP, 7, 512));
        let s = DedupStats {
            scanned: 1,
            merged: 2,
            zeroed: 3,
            skipped: 4,
            next: u64::MAX,
        };
        assert_eq!(decode_ans(&encode_ans(&s)).expect("ans"), s);
        assert!(decode_req(&[0u8; DEDUP_SIZE]).is_err());
    }
}
