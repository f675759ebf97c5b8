//! Small byte strings (symlink targets, xattr sets) kept in metadata pages of a map.

use crate::error::Result;
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use crate::store::layout::META_HEADER;
use crate::store::{Kind, Store};

const ROOM: usize = PAGE_SIZE - META_HEADER;

/// Reads `len` bytes of the blob in `map`.
pub fn read(s: &mut Store, map: &MapRoot, len: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len as usize];
    for (i, chunk) in out.chunks_mut(ROOM).enumerate() {
        let p = map.get(s, i as u64)?;
        if !p.is_zero() {
            s.with_meta(p, Kind::Blob, |b| {
                chunk.copy_from_slice(&b[META_HEADER..META_HEADER + chunk.len()])
            })?;
        }
    }
    Ok(out)
}

/// Replaces the blob in `map` with `data`.
pub fn write(s: &mut Store, map: &mut MapRoot, data: &[u8]) -> Result<()> {
    let pages = data.len().div_ceil(ROOM) as u64;
    for (i, chunk) in data.chunks(ROOM).enumerate() {
        let p = map.meta_for_write(s, i as u64, Kind::Blob)?;
        let b = s.meta_mut(p, Kind::Blob)?;
        b[META_HEADER..].fill(0);
        b[META_HEADER..META_HEADER + chunk.len()].copy_from_slice(chunk);
    }
    map.clear_range(s, pages, u64::MAX)
}
