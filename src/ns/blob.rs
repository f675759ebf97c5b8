//! Small byte strings (symlink targets, xattr sets) kept in metadata pages of a map.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use crate::store::layout::META_HEADER;
use crate::store::{Kind, Store};

const ROOM: usize = PAGE_SIZE - META_HEADER;

/// The longest blob any structure keeps (the snapshot list is the longest; symlink
/// targets and xattr sets have their own smaller limits, checked where they are decoded).
pub const MAX_LEN: u64 = 1 << 30;

/// Reads `len` bytes of the blob in `map`. Checked: `len` at most `MAX_LEN` and within
/// what the map can hold, every page of the blob present (`write` leaves no holes) and a
/// `Blob` page whose header bytes and the padding after the blob's end are zero. The
/// buffer grows page by page, so a wrong length costs no more memory than the pages there.
pub fn read(s: &mut Store, map: &MapRoot, len: u64) -> Result<Vec<u8>> {
    let room = ROOM as u64;
    if len > MAX_LEN || len > map.capacity().saturating_mul(room) {
        return Err(Error::corrupt(
            map.node.0,
            format!("blob of {len} bytes in a map of depth {}", map.depth),
        ));
    }
    let mut out = Vec::with_capacity(len.min(16 * room) as usize);
    for i in 0..len.div_ceil(room) {
        let n = (len - i * room).min(room) as usize;
        let p = map.get(s, i)?;
        if p.is_zero() {
            return Err(Error::corrupt(
                map.node.0,
                format!("blob of {len} bytes has no page {i}"),
            ));
        }
        s.with_meta(p, Kind::Blob, |b| {
            check_page(p, b, n)?;
            out.extend_from_slice(&b[META_HEADER..META_HEADER + n]);
            Ok::<(), Error>(())
        })??;
    }
    Ok(out)
}

/// Checks a blob page holding `n` bytes of its blob: header bytes 8..16 zero, and zeros
/// after the `n` bytes.
pub fn check_page(p: PageNo, b: &[u8], n: usize) -> Result<()> {
    if b.len() != PAGE_SIZE || n > ROOM {
        return Err(Error::corrupt(p.0, "blob page of the wrong size"));
    }
    if b[8..META_HEADER].iter().any(|x| *x != 0) {
        return Err(Error::corrupt(p.0, "blob page header bytes are not zero"));
    }
    if b[META_HEADER + n..].iter().any(|x| *x != 0) {
        return Err(Error::corrupt(
            p.0,
            format!("blob page holds bytes past the blob's end ({n} bytes here)"),
        ));
    }
    Ok(())
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
