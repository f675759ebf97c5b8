//! The ioctl interface between the `cowfs` command and the daemon. FICLONE cannot reach a
//! FUSE daemon, so cowfs defines its own commands; the kernel sizes their buffers from the
//! command number, so each carries a fixed-size little-endian struct.

use crate::error::{Error, Result};
use crate::ns::{Space, StoreStats};

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'C' as u32) << 8) | nr
}

/// Bytes of a clone request.
pub const CLONE_SIZE: usize = 64 + 256 + 4096;
/// Bytes of a space answer.
pub const SPACE_SIZE: usize = 64;
/// Bytes of a stats answer.
pub const STATS_SIZE: usize = 128;

/// `_IOW('C', 1, clone request)`: on the destination's directory (whole file or tree) or
/// on the destination file opened for writing (range).
pub const IOC_CLONE: u32 = ioc(IOC_WRITE, 1, CLONE_SIZE);
/// `_IOR('C', 2, space)`: on any file or directory.
pub const IOC_SPACE: u32 = ioc(IOC_READ, 2, SPACE_SIZE);
/// `_IOR('C', 3, stats)`: on any file or directory of the mount.
pub const IOC_STATS: u32 = ioc(IOC_READ, 3, STATS_SIZE);

const MAGIC: u32 = 0x434f_5746;

/// Clone a byte range into the file the ioctl is issued on.
pub const F_RANGE: u32 = 1;
/// Clone a directory tree.
pub const F_RECURSIVE: u32 = 2;
/// Replace an existing destination.
pub const F_FORCE: u32 = 4;

/// A clone request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneReq {
    pub flags: u32,
    pub umask: u32,
    /// The source's inode number, as the caller stat'ed it (checked against `src_path`).
    pub src_ino: u64,
    pub src_off: u64,
    pub dst_off: u64,
    pub len: u64,
    /// The destination's name in the directory the ioctl is issued on.
    pub name: Vec<u8>,
    /// The source's path from the mount's root; resolved with the caller's rights.
    pub src_path: Vec<u8>,
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

fn put_all(b: &mut [u8], off: usize, vals: &[u64]) {
    for (i, v) in vals.iter().enumerate() {
        b[off + i * 8..off + i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
}

impl CloneReq {
    /// The request as the kernel carries it.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.name.len() > 255 {
            return Err(Error::NameTooLong);
        }
        if self.src_path.len() > 4096 {
            return Err(Error::NameTooLong);
        }
        let mut b = vec![0u8; CLONE_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.umask.to_le_bytes());
        b[12..14].copy_from_slice(&(self.name.len() as u16).to_le_bytes());
        b[14..16].copy_from_slice(&(self.src_path.len() as u16).to_le_bytes());
        put_all(
            &mut b,
            16,
            &[self.src_ino, self.src_off, self.dst_off, self.len],
        );
        b[64..64 + self.name.len()].copy_from_slice(&self.name);
        b[320..320 + self.src_path.len()].copy_from_slice(&self.src_path);
        Ok(b)
    }

    /// Decodes and checks a request.
    pub fn decode(b: &[u8]) -> Result<CloneReq> {
        if b.len() != CLONE_SIZE || get32(b, 0) != MAGIC {
            return Err(Error::Invalid("malformed clone request"));
        }
        let nl = u16::from_le_bytes([b[12], b[13]]) as usize;
        let pl = u16::from_le_bytes([b[14], b[15]]) as usize;
        if nl > 255 || pl > 4096 {
            return Err(Error::Invalid("malformed clone request"));
        }
        Ok(CloneReq {
            flags: get32(b, 4),
            umask: get32(b, 8),
            src_ino: get(b, 16),
            src_off: get(b, 24),
            dst_off: get(b, 32),
            len: get(b, 40),
            name: b[64..64 + nl].to_vec(),
            src_path: b[320..320 + pl].to_vec(),
        })
    }
}

/// Encodes a space answer.
pub fn encode_space(s: &Space) -> Vec<u8> {
    let mut b = vec![0u8; SPACE_SIZE];
    put_all(
        &mut b,
        0,
        &[s.files, s.logical, s.allocated, s.exclusive, s.shared],
    );
    b
}

/// Decodes a space answer.
pub fn decode_space(b: &[u8]) -> Space {
    Space {
        files: get(b, 0),
        logical: get(b, 8),
        allocated: get(b, 16),
        exclusive: get(b, 24),
        shared: get(b, 32),
    }
}

/// Encodes a stats answer.
pub fn encode_stats(s: &StoreStats) -> Vec<u8> {
    let mut b = vec![0u8; STATS_SIZE];
    put_all(
        &mut b,
        0,
        &[
            s.total_pages,
            s.free_pages,
            s.used_pages,
            s.shared_pages,
            s.logical_bytes,
            s.physical_bytes,
            s.saved_bytes,
            s.cow_copies,
        ],
    );
    b
}

/// Decodes a stats answer.
pub fn decode_stats(b: &[u8]) -> StoreStats {
    StoreStats {
        total_pages: get(b, 0),
        free_pages: get(b, 8),
        used_pages: get(b, 16),
        shared_pages: get(b, 24),
        logical_bytes: get(b, 32),
        physical_bytes: get(b, 40),
        saved_bytes: get(b, 48),
        cow_copies: get(b, 56),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_request_roundtrip_and_numbers() {
        let r = CloneReq {
            flags: F_RANGE | F_FORCE,
            umask: 0o22,
            src_ino: 77,
            src_off: 4096,
            dst_off: 8192,
            len: 12288,
            name: b"dst".to_vec(),
            src_path: b"a/b/src".to_vec(),
        };
        assert_eq!(
            CloneReq::decode(&r.encode().expect("encode")).expect("decode"),
            r
        );
        assert!(CloneReq::decode(&[0u8; CLONE_SIZE]).is_err());
        const { assert!(CLONE_SIZE < 1 << 14, "the ioctl size field has 14 bits") };
        assert_eq!(IOC_SPACE >> 30, IOC_READ);
        let s = Space {
            files: 1,
            logical: 2,
            allocated: 3,
            exclusive: 4,
            shared: 5,
        };
        assert_eq!(decode_space(&encode_space(&s)), s);
    }
}
