//! The snapshot ioctl: `_IOWR('C', 10, 512 bytes)` on any file or directory of the mount.
//! The request and the answer share one little-endian layout:
//!
//! | bytes   | request                      | answer                         |
//! |---------|------------------------------|--------------------------------|
//! | 0..4    | magic                        | magic                          |
//! | 4..8    | op                           | flags of the snapshot          |
//! | 8..12   | flags (1: writable)          | -                              |
//! | 12..16  | name length                  | name length                    |
//! | 16..24  | index (op GET)               | snapshots in all               |
//! | 24..32  | -                            | id                             |
//! | 32..40  | -                            | created, seconds               |
//! | 40..44  | -                            | created, nanoseconds           |
//! | 48..56  | -                            | exclusive bytes (GET)          |
//! | 56..64  | -                            | tables still being freed       |
//! | 64..    | name (up to 200 bytes)       | name                           |

use crate::error::{Error, Result};

const IOC_RW: u32 = 3;

/// Bytes of a snapshot request or answer.
pub const SNAP_SIZE: usize = 512;

/// `_IOWR('C', 10, 512)`.
pub const IOC_SNAP: u32 = (IOC_RW << 30) | ((SNAP_SIZE as u32) << 16) | ((b'C' as u32) << 8) | 10;

const MAGIC: u32 = 0x534e_4150;

/// What the snapshot ioctl does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapOp {
    Create,
    Delete,
    Rollback,
    /// The snapshot at `index` (oldest first), with its exclusive bytes.
    Get,
    /// How many snapshots there are and how many tables are being freed.
    Status,
}

impl SnapOp {
    fn code(self) -> u32 {
        match self {
            SnapOp::Create => 1,
            SnapOp::Delete => 2,
            SnapOp::Rollback => 3,
            SnapOp::Get => 4,
            SnapOp::Status => 5,
        }
    }

    fn from_code(c: u32) -> Option<SnapOp> {
        Some(match c {
            1 => SnapOp::Create,
            2 => SnapOp::Delete,
            3 => SnapOp::Rollback,
            4 => SnapOp::Get,
            5 => SnapOp::Status,
            _ => return None,
        })
    }
}

/// A snapshot request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapReq {
    pub op: SnapOp,
    pub writable: bool,
    pub index: u64,
    pub name: Vec<u8>,
}

/// A snapshot answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapAns {
    pub writable: bool,
    pub count: u64,
    pub id: u64,
    pub sec: i64,
    pub nsec: u32,
    pub exclusive_bytes: u64,
    pub pending: u64,
    pub name: Vec<u8>,
}

fn get(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn get32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn put(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn name_of(b: &[u8]) -> Result<Vec<u8>> {
    let n = get32(b, 12) as usize;
    if n > crate::ns::SNAP_NAME_MAX {
        return Err(Error::NameTooLong);
    }
    Ok(b[64..64 + n].to_vec())
}

fn check(b: &[u8]) -> Result<()> {
    if b.len() != SNAP_SIZE || get32(b, 0) != MAGIC {
        return Err(Error::Invalid("malformed snapshot request"));
    }
    Ok(())
}

impl SnapReq {
    /// The request as the kernel carries it.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.name.len() > crate::ns::SNAP_NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let mut b = vec![0u8; SNAP_SIZE];
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, self.op.code());
        put32(&mut b, 8, u32::from(self.writable));
        put32(&mut b, 12, self.name.len() as u32);
        put(&mut b, 16, self.index);
        b[64..64 + self.name.len()].copy_from_slice(&self.name);
        Ok(b)
    }

    /// Decodes and checks a request.
    pub fn decode(b: &[u8]) -> Result<SnapReq> {
        check(b)?;
        Ok(SnapReq {
            op: SnapOp::from_code(get32(b, 4)).ok_or(Error::Invalid("unknown snapshot op"))?,
            writable: get32(b, 8) & 1 != 0,
            index: get(b, 16),
            name: name_of(b)?,
        })
    }
}

impl SnapAns {
    /// The answer as the kernel carries it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SNAP_SIZE];
        let n = self.name.len().min(crate::ns::SNAP_NAME_MAX);
        put32(&mut b, 0, MAGIC);
        put32(&mut b, 4, u32::from(self.writable));
        put32(&mut b, 12, n as u32);
        put(&mut b, 16, self.count);
        put(&mut b, 24, self.id);
        put(&mut b, 32, self.sec as u64);
        put32(&mut b, 40, self.nsec);
        put(&mut b, 48, self.exclusive_bytes);
        put(&mut b, 56, self.pending);
        b[64..64 + n].copy_from_slice(&self.name[..n]);
        b
    }

    /// Decodes an answer.
    pub fn decode(b: &[u8]) -> Result<SnapAns> {
        check(b)?;
        Ok(SnapAns {
            writable: get32(b, 4) & 1 != 0,
            count: get(b, 16),
            id: get(b, 24),
            sec: get(b, 32) as i64,
            nsec: get32(b, 40),
            exclusive_bytes: get(b, 48),
            pending: get(b, 56),
            name: name_of(b)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let r = SnapReq {
            op: SnapOp::Create,
            writable: true,
            index: 3,
            name: b"daily".to_vec(),
        };
        assert_eq!(
            SnapReq::decode(&r.encode().expect("encode")).expect("decode"),
            r
        );
        let a = SnapAns {
            writable: true,
            count: 2,
            id: 9,
            sec: 1_700_000_000,
            nsec: 5,
            exclusive_bytes: 4096,
            pending: 1,
            name: b"daily".to_vec(),
        };
        assert_eq!(SnapAns::decode(&a.encode()).expect("decode"), a);
        assert!(SnapReq::decode(&[0u8; SNAP_SIZE]).is_err());
        assert!(
            SnapReq::encode(&SnapReq {
                name: vec![b'a'; 201],
                ..r
            })
            .is_err()
        );
    }
}
