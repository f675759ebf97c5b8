//! Directories: a hash table of entry blocks kept in the directory's map. An entry's key is
//! a 62-bit hash of its name; the bucket is the key's top `dir_bits` bits, so iterating in
//! key order survives the table doubling, and the key is a stable readdir cookie. Bucket
//! `b`'s chain of blocks sits at map indices `b`, `b + 2^32`, `b + 2*2^32`, ... (dense).

use super::inode::Inode;
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use crate::store::layout::{META_HEADER, get64, put64};
use crate::store::{Kind, Store};

/// Longest name, in bytes.
pub const NAME_MAX: usize = 255;
const MAX_BITS: u8 = 32;
const CHAIN: u64 = 1 << 32;
const LOAD: u64 = 64;
const OFF_COUNT: usize = 8;
const OFF_USED: usize = 10;
const ENTRY_FIXED: usize = 18;
const ROOM: usize = PAGE_SIZE - META_HEADER;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name's hash key (also its readdir cookie).
    pub key: u64,
    pub ino: Ino,
    /// `S_IFMT` bits of the target, shifted right by 12.
    pub kind: u8,
    pub name: Vec<u8>,
}

/// The 62-bit key of a name: FNV-1a, then a 64-bit finalizer for good top bits.
pub fn key_of(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h >> 2
}

fn bucket(key: u64, bits: u8) -> u64 {
    // `dir_bits` is checked at decode (at most 32); the clamp keeps the shift in range
    // for readers of unchecked records (fsck) too.
    match bits.min(62) {
        0 => 0,
        b => key >> (62 - b as u32),
    }
}

/// Checks a name: not empty, no '/', at most 255 bytes.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid("bad file name"));
    }
    Ok(())
}

fn used(b: &[u8]) -> usize {
    u16::from_le_bytes([b[OFF_USED], b[OFF_USED + 1]]) as usize
}

fn set_used(b: &mut [u8], n: usize, count: usize) {
    b[OFF_USED..OFF_USED + 2].copy_from_slice(&(n as u16).to_le_bytes());
    b[OFF_COUNT..OFF_COUNT + 2].copy_from_slice(&(count as u16).to_le_bytes());
}

fn count(b: &[u8]) -> usize {
    u16::from_le_bytes([b[OFF_COUNT], b[OFF_COUNT + 1]]) as usize
}

/// An entry as it sits in a block (its name borrowed).
struct RawEntry<'a> {
    off: usize,
    key: u64,
    ino: u64,
    kind: u8,
    name: &'a [u8],
}

impl RawEntry<'_> {
    fn owned(&self) -> Entry {
        Entry {
            key: self.key,
            ino: Ino(self.ino),
            kind: self.kind,
            name: self.name.to_vec(),
        }
    }
}

/// Entries of a block, checked: the used bytes fit the block and are exactly a run of
/// whole entries, the entry count matches, every name is 1..=255 bytes without `/` or NUL,
/// every key is a 62-bit key, no entry names inode 0, the bytes after the entries are
/// zero. Errors are the reason; callers name the page.
fn parse(b: &[u8]) -> std::result::Result<Vec<RawEntry<'_>>, String> {
    if b.len() != PAGE_SIZE {
        return Err(format!("a block of {} bytes", b.len()));
    }
    let used = used(b);
    if used > ROOM {
        return Err(format!("{used} bytes of entries in a block of {ROOM}"));
    }
    let end = META_HEADER + used;
    let mut out = Vec::new();
    let mut off = META_HEADER;
    while off < end {
        if off + ENTRY_FIXED > end {
            return Err(format!("entry at byte {off} cut short"));
        }
        let len = b[off + 17] as usize;
        let name = b
            .get(off + ENTRY_FIXED..off + ENTRY_FIXED + len)
            .filter(|_| off + ENTRY_FIXED + len <= end)
            .ok_or_else(|| format!("name at byte {off} runs past the entries"))?;
        check_name(name).map_err(|_| format!("bad name at byte {off}"))?;
        let e = RawEntry {
            off,
            key: get64(b, off),
            ino: get64(b, off + 8),
            kind: b[off + 16],
            name,
        };
        if e.key >> 62 != 0 || e.ino == 0 {
            return Err(format!(
                "entry at byte {off}: key {:#x}, inode {}",
                e.key, e.ino
            ));
        }
        out.push(e);
        off += ENTRY_FIXED + len;
    }
    if count(b) != out.len() {
        return Err(format!(
            "entry count {} but {} entries",
            count(b),
            out.len()
        ));
    }
    if b[end..].iter().any(|x| *x != 0) {
        return Err("bytes after the entries are not zero".into());
    }
    Ok(out)
}

/// `parse` for the block at page `p`, its errors naming the page.
fn parse_at(p: PageNo, b: &[u8]) -> Result<Vec<RawEntry<'_>>> {
    parse(b).map_err(|why| Error::corrupt(p.0, format!("directory block: {why}")))
}

/// Checks a directory block as every reader does; returns its entry count.
pub fn check_block(p: PageNo, b: &[u8]) -> Result<usize> {
    parse_at(p, b).map(|v| v.len())
}

fn block_entries(p: PageNo, b: &[u8]) -> Result<Vec<Entry>> {
    Ok(parse_at(p, b)?.iter().map(RawEntry::owned).collect())
}

fn append(b: &mut [u8], e: &Entry) {
    let off = META_HEADER + used(b);
    put64(b, off, e.key);
    put64(b, off + 8, e.ino.0);
    b[off + 16] = e.kind;
    b[off + 17] = e.name.len() as u8;
    b[off + ENTRY_FIXED..off + ENTRY_FIXED + e.name.len()].copy_from_slice(&e.name);
    set_used(b, used(b) + ENTRY_FIXED + e.name.len(), count(b) + 1);
}

/// Removes the entry of `len` bytes at `off` (found by `find` in this block, so inside it).
fn remove_at(b: &mut [u8], off: usize, len: usize) {
    let end = META_HEADER + used(b);
    b.copy_within(off + len..end, off);
    b[end - len..end].fill(0);
    set_used(b, used(b) - len, count(b).saturating_sub(1));
}

fn find(p: PageNo, b: &[u8], key: u64, name: &[u8]) -> Result<Option<(usize, Entry)>> {
    Ok(parse_at(p, b)?
        .iter()
        .find(|e| e.key == key && e.name == name)
        .map(|e| (e.off, e.owned())))
}

fn chain_block(s: &mut Store, m: &MapRoot, bk: u64, j: u64) -> Result<PageNo> {
    m.get(s, bk + j * CHAIN)
}

/// Looks `name` up in `dir`.
pub fn lookup(s: &mut Store, dir: &Inode, name: &[u8]) -> Result<Option<Entry>> {
    let key = key_of(name);
    let bk = bucket(key, dir.dir_bits);
    for j in 0.. {
        let p = chain_block(s, &dir.map, bk, j)?;
        if p.is_zero() {
            break;
        }
        if let Some((_, e)) = s.with_meta(p, Kind::DirBlock, |b| find(p, b, key, name))?? {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn place(s: &mut Store, map: &mut MapRoot, bits: u8, e: &Entry) -> Result<()> {
    let bk = bucket(e.key, bits);
    let need = ENTRY_FIXED + e.name.len();
    for j in 0.. {
        let idx = bk + j * CHAIN;
        let p = map.get(s, idx)?;
        let fits = p.is_zero()
            || s.with_meta(p, Kind::DirBlock, |b| {
                parse_at(p, b).map(|_| used(b) + need <= ROOM)
            })??;
        if fits {
            let q = map.meta_for_write(s, idx, Kind::DirBlock)?;
            append(s.meta_mut(q, Kind::DirBlock)?, e);
            return Ok(());
        }
    }
    Err(Error::NoSpace)
}

/// Adds an entry; the caller has checked that `name` is not there.
pub fn insert(s: &mut Store, dir: &mut Inode, name: &[u8], ino: Ino, kind: u8) -> Result<()> {
    check_name(name)?;
    if dir.dir_bits < MAX_BITS && dir.entries >= (LOAD << dir.dir_bits) {
        rehash(s, dir, dir.dir_bits + 1)?;
    }
    let e = Entry {
        key: key_of(name),
        ino,
        kind,
        name: name.to_vec(),
    };
    place(s, &mut dir.map, dir.dir_bits, &e)?;
    dir.entries = dir.entries.saturating_add(1);
    Ok(())
}

/// Removes `name`; returns the entry it held.
pub fn remove(s: &mut Store, dir: &mut Inode, name: &[u8]) -> Result<Option<Entry>> {
    let key = key_of(name);
    let bk = bucket(key, dir.dir_bits);
    for j in 0.. {
        let p = chain_block(s, &dir.map, bk, j)?;
        if p.is_zero() {
            break;
        }
        let Some((off, e)) = s.with_meta(p, Kind::DirBlock, |b| find(p, b, key, name))?? else {
            continue;
        };
        let q = dir.map.meta_for_write(s, bk + j * CHAIN, Kind::DirBlock)?;
        let b = s.meta_mut(q, Kind::DirBlock)?;
        remove_at(b, off, ENTRY_FIXED + e.name.len());
        if used(b) == 0 {
            drop_block(s, &mut dir.map, bk, j)?;
        }
        dir.entries = dir
            .entries
            .checked_sub(1)
            .ok_or_else(|| Error::corrupt(q.0, "an entry in a directory that counts none"))?;
        return Ok(Some(e));
    }
    Ok(None)
}

/// Removes empty block `j` of bucket `bk`, moving the chain's last block into its place.
fn drop_block(s: &mut Store, map: &mut MapRoot, bk: u64, j: u64) -> Result<()> {
    let mut last = j;
    while !chain_block(s, map, bk, last + 1)?.is_zero() {
        last += 1;
    }
    if last == j {
        return map.set(s, bk + j * CHAIN, PageNo::ZERO);
    }
    let mut taken = PageNo::ZERO;
    map.modify(s, bk + last * CHAIN, |_, old| {
        taken = old;
        Ok(PageNo::ZERO)
    })?;
    map.set(s, bk + j * CHAIN, taken)
}

/// Calls `f` on every entry with a key above `after` (all when `None`), in key order, until
/// `f` returns true.
pub fn for_each(
    s: &mut Store,
    dir: &Inode,
    after: Option<u64>,
    f: &mut dyn FnMut(&Entry) -> bool,
) -> Result<()> {
    let mut bk = after.map(|k| bucket(k, dir.dir_bits)).unwrap_or(0);
    while let Some(first) = dir.map.next_data(s, bk)? {
        if first >= CHAIN {
            break;
        }
        bk = first;
        let mut all = Vec::new();
        for j in 0.. {
            let p = chain_block(s, &dir.map, bk, j)?;
            if p.is_zero() {
                break;
            }
            all.extend(s.with_meta(p, Kind::DirBlock, |b| block_entries(p, b))??);
        }
        all.sort_by_key(|e| e.key);
        for e in all.iter().filter(|e| after.is_none_or(|a| e.key > a)) {
            if f(e) {
                return Ok(());
            }
        }
        bk += 1;
    }
    Ok(())
}

fn rehash(s: &mut Store, dir: &mut Inode, bits: u8) -> Result<()> {
    let mut all = Vec::new();
    for_each(s, dir, None, &mut |e| {
        all.push(e.clone());
        false
    })?;
    let mut map = MapRoot::EMPTY;
    for e in &all {
        place(s, &mut map, bits, e)?;
    }
    dir.map.free(s)?;
    dir.map = map;
    dir.dir_bits = bits;
    log::debug!(
        "directory rehashed to {} buckets ({} entries)",
        1u64 << bits,
        all.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::MemBackend;

    #[test]
    fn insert_lookup_remove_iterate_many() {
        let mut s =
            Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
        let mut d = Inode {
            mode: libc::S_IFDIR | 0o755,
            ..Default::default()
        };
        let n = 5000u64;
        for i in 0..n {
            let name = format!("file-{i}-{}", "x".repeat((i % 200) as usize));
            insert(&mut s, &mut d, name.as_bytes(), Ino(i + 10), 8).expect("insert");
        }
        assert!(d.dir_bits > 0, "table grew");
        assert_eq!(lookup(&mut s, &d, b"file-77-").expect("l"), None);
        let name = format!("file-77-{}", "x".repeat(77));
        assert_eq!(
            lookup(&mut s, &d, name.as_bytes())
                .expect("l")
                .map(|e| e.ino),
            Some(Ino(87))
        );
        // Iterate in pieces, removing as we go (like rm -rf): nothing is skipped.
        let mut seen = 0u64;
        let mut after = None;
        loop {
            let mut batch = Vec::new();
            for_each(&mut s, &d, after, &mut |e| {
                batch.push(e.clone());
                batch.len() == 100
            })
            .expect("iter");
            if batch.is_empty() {
                break;
            }
            after = batch.last().map(|e| e.key);
            for e in &batch {
                assert!(remove(&mut s, &mut d, &e.name).expect("rm").is_some());
                seen += 1;
            }
        }
        assert_eq!(seen, n);
        assert_eq!(d.entries, 0);
        assert_eq!(d.map.population(&mut s).expect("pop"), 0);
        assert!(matches!(check_name(&[b'a'; 256]), Err(Error::NameTooLong)));
    }

    #[test]
    fn a_damaged_block_is_corrupt_naming_its_page() {
        let mut s =
            Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
        let mut d = Inode {
            mode: libc::S_IFDIR | 0o755,
            ..Default::default()
        };
        for i in 0..3u64 {
            insert(&mut s, &mut d, format!("n{i}").as_bytes(), Ino(i + 10), 8).expect("insert");
        }
        let p = d.map.get(&mut s, 0).expect("block");
        let damage: [(usize, u8); 5] = [
            (OFF_USED + 1, 0x10),              // 4096+ bytes used
            (OFF_COUNT, 9),                    // count disagrees
            (META_HEADER + 17, 200),           // a name running past the entries
            (META_HEADER + ENTRY_FIXED, b'/'), // a name with '/'
            (PAGE_SIZE - 1, 1),                // bytes after the entries
        ];
        for (off, v) in damage {
            let b = s.meta_mut(p, Kind::DirBlock).expect("block");
            let old = b[off];
            b[off] = v;
            let r = lookup(&mut s, &d, b"n1");
            assert!(
                matches!(r, Err(Error::Corrupt { page, .. }) if page == p.0),
                "{off}: {r:?}"
            );
            s.meta_mut(p, Kind::DirBlock).expect("block")[off] = old;
        }
        assert!(lookup(&mut s, &d, b"n1").expect("lookup").is_some());
        // dir_bits read from disk past 62 must not overflow a shift.
        assert_eq!(bucket(u64::MAX >> 2, 200), u64::MAX >> 2);
    }
}
