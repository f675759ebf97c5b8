//! Entry points for the fuzz targets (`fuzz/`) and `tests/fuzz_corpus.rs`: each feeds raw
//! bytes to one on-disk decoder, re-sealing checksums first so that mutated values reach the
//! range and consistency checks instead of stopping at the CRC. A decoder may answer Ok or
//! an error; it must never panic, wrap, allocate what the bytes ask for, or cut the page
//! file. `run` says which errors each target may give (`Outcome`).

use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::ns::{Ctx, Fs};
use crate::object::node;
use crate::page::{Backend, CrashBackend, MemBackend, PAGE_SIZE};
use crate::store::journal::Journal;
use crate::store::layout::{self, PS};
use crate::store::{Store, Superblock};
use std::sync::OnceLock;

/// The fuzz targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus
/// directories under `fuzz/corpus/`).
pub const TARGETS: [&str; 10] = [
    "superblock",
    "group_header",
    "map_node",
    "inode_page",
    "dir_block",
    "blob_page",
    "xattr_blob",
    "snap_list",
    "journal",
    "store_page",
];

/// What a target gave, when it did not panic.
#[derive(Debug)]
pub enum Outcome {
    /// The bytes decoded (or the store opened and was walked).
    Ok,
    /// Refused with an error the target may give.
    Refused(Error),
}

/// Runs target `name` on `data`. `Err` means the target broke its contract: an error of
/// a kind it must not give (page decoders give only `Error::Corrupt`), or an unknown
/// target. A panic is the other way to fail, and the callers catch it.
pub fn run(name: &str, data: &[u8]) -> std::result::Result<Outcome, String> {
    let r = match name {
        "superblock" => superblock(data),
        "group_header" => group_header(data),
        "map_node" => map_node(data),
        "inode_page" => inode_page(data),
        "dir_block" => dir_block(data),
        "blob_page" => blob_page(data),
        "xattr_blob" => crate::ns::xattr_parse(PageNo(7), data).map(|_| ()),
        "snap_list" => crate::ns::snap_decode(data).map(|_| ()),
        "journal" => return Ok(journal(data)),
        "store_page" => return Ok(store_page(data)),
        other => return Err(format!("unknown fuzz target {other}")),
    };
    match r {
        Ok(()) => Ok(Outcome::Ok),
        Err(e @ Error::Corrupt { .. }) => Ok(Outcome::Refused(e)),
        Err(e @ Error::BadStore(_)) if name == "superblock" => Ok(Outcome::Refused(e)),
        Err(e) => Err(format!("{name}: an error that is not Corrupt: {e:?}")),
    }
}

/// `data` as one page: cut or zero-padded to 4096 bytes.
fn page(data: &[u8]) -> Box<[u8; PAGE_SIZE]> {
    let mut b = Box::new([0u8; PAGE_SIZE]);
    let n = data.len().min(PAGE_SIZE);
    b[..n].copy_from_slice(&data[..n]);
    b
}

fn superblock(data: &[u8]) -> Result<()> {
    let mut b = page(data);
    layout::seal(PageNo(0), &mut b[..]);
    Superblock::decode(&b[..]).map(|_| ())
}

fn group_header(data: &[u8]) -> Result<()> {
    // The first byte picks the group (0 holds the superblock's reserved page too).
    let g = u64::from(data.first().copied().unwrap_or(0) % 3);
    let b = page(data.get(1..).unwrap_or_default());
    Store::check_group_header(layout::group_header(g), &b[..])
}

fn map_node(data: &[u8]) -> Result<()> {
    let level = data.first().copied().unwrap_or(0) % 8;
    let b = page(data.get(1..).unwrap_or_default());
    node::check(PageNo(7), &b[..], level)
}

fn inode_page(data: &[u8]) -> Result<()> {
    use crate::ns::itable::{Layout, checked_records};
    let b = page(data);
    // The same bytes as a page of both formats' layouts (format 2 holds inline data): each
    // decoder sees every input; the page is good when one layout accepts it.
    let v1 = checked_records(Layout::V1, PageNo(7), &b[..]);
    let v2 = checked_records(Layout::V2, PageNo(7), &b[..]);
    for (_, i) in v2.or(v1)? {
        for t in [i.atime, i.mtime, i.ctime, i.crtime] {
            let _ = t.to_system();
        }
        // A checked record's inline data is exactly its size.
        assert!(i.inline.as_ref().is_none_or(|d| d.len() as u64 == i.size));
    }
    Ok(())
}

fn dir_block(data: &[u8]) -> Result<()> {
    crate::ns::dir::check_block(PageNo(7), &page(data)[..]).map(|_| ())
}

fn blob_page(data: &[u8]) -> Result<()> {
    let n = data
        .get(..2)
        .map_or(0, |h| u16::from_le_bytes([h[0], h[1]]));
    let b = page(data.get(2..).unwrap_or_default());
    crate::ns::blob_check_page(PageNo(7), &b[..], usize::from(n) % (PAGE_SIZE + 1))
}

/// A small store with something of every structure: files with data and holes, a
/// directory big enough to have grown its table, a symlink, xattrs, a hard link and a
/// snapshot. Returns the page file and journal as a commit left them (the journal holds
/// that commit's record), and as a clean close left them.
pub struct Base {
    /// Page file right after a commit (its journal record not yet cleared).
    pub pages: Vec<u8>,
    /// The journal holding that commit's record.
    pub journal: Vec<u8>,
}

/// The base store, made once.
pub fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| make_base().unwrap_or_else(|e| panic!("making the base store: {e}")))
}

fn make_base() -> Result<Base> {
    let dev = CrashBackend::new(Vec::new());
    let jnl = CrashBackend::new(Vec::new());
    let (di, ji) = (dev.image(), jnl.image());
    let s = Store::create(Box::new(dev), Box::new(jnl))?;
    let mut fs = Fs::new(s, None)?;
    let c = Ctx::ROOT;
    let (d, _) = fs.mknod(c, Ino::ROOT, b"dir", libc::S_IFDIR | 0o755, 0)?;
    for i in 0..80 {
        let (f, _) = fs.mknod(c, d, format!("f{i}").as_bytes(), libc::S_IFREG | 0o644, 0)?;
        if i % 3 == 0 {
            // Small files keep their bytes in their inode records.
            fs.write(f, 0, format!("inline bytes of f{i}").as_bytes())?;
        }
    }
    let (f, _) = fs.mknod(c, Ino::ROOT, b"file", libc::S_IFREG | 0o644, 0)?;
    fs.write(f, 0, &[7u8; 3 * PAGE_SIZE])?;
    fs.write(f, 600 * PS, b"far")?;
    fs.setxattr(f, b"user.a", b"value", 0)?;
    fs.setxattr(f, b"trusted.b", &[1u8; 5000], 0)?;
    fs.symlink(c, Ino::ROOT, b"link", b"dir/f1")?;
    fs.link(f, d, b"hard")?;
    fs.snapshot_create(b"snap", false)?;
    fs.write(f, 0, b"changed after the snapshot")?;
    fs.store().commit()?;
    // One more commit: its first sync makes the last one's home writes durable, so the
    // page file alone holds everything, and the journal holds this small record.
    fs.write(f, 100, b"x")?;
    fs.store().commit()?;
    Ok(Base {
        pages: di.durable(),
        journal: ji.durable(),
    })
}

/// Opens a store from these bytes, then does what a mount does with it: every name, inode,
/// symlink, xattr and some file data, the snapshot list, a change and a commit. Any error
/// is an allowed answer; a panic or a cut page file is not.
fn open_and_walk(pages: Vec<u8>, journal: Vec<u8>) -> Outcome {
    let len = pages.len() as u64;
    let s = match Store::open(
        Box::new(MemBackend::from_bytes(pages)),
        Box::new(MemBackend::from_bytes(journal)),
    ) {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(e),
    };
    let total = s.total_pages() * PS;
    assert!(
        total >= len,
        "open cut the page file from {len} to {total} bytes"
    );
    let mut fs = match Fs::new(s, None) {
        Ok(fs) => fs,
        Err(e) => return Outcome::Refused(e),
    };
    match walk(&mut fs) {
        Ok(()) => Outcome::Ok,
        Err(e) => Outcome::Refused(e),
    }
}

/// Visits at most this many inodes per walk.
const WALK_LIMIT: usize = 300;

fn walk(fs: &mut Fs) -> Result<()> {
    let mut todo = vec![Ino::ROOT];
    let mut seen = 0;
    let mut first_err = None;
    while let Some(dir) = todo.pop() {
        let mut names = Vec::new();
        let r = fs.readdir(dir, 0, &mut |_, _, _, name| {
            names.push(name.to_vec());
            names.len() > WALK_LIMIT
        });
        if let Err(e) = r {
            first_err.get_or_insert(e);
            continue;
        }
        for name in names
            .iter()
            .filter(|n| n.as_slice() != b"." && n.as_slice() != b"..")
        {
            seen += 1;
            if seen > WALK_LIMIT {
                break;
            }
            match visit(fs, dir, name) {
                Ok(Some(sub)) => todo.push(sub),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    let _ = fs.snapshot_list();
    let _ = fs.mknod(Ctx::ROOT, Ino::ROOT, b"new", libc::S_IFREG | 0o644, 0);
    let _ = fs.store().commit();
    let _ = crate::check::check(fs.store());
    first_err.map_or(Ok(()), Err)
}

/// Looks at one entry; returns it when it is a directory to visit.
fn visit(fs: &mut Fs, dir: Ino, name: &[u8]) -> Result<Option<Ino>> {
    let (ino, i) = fs.lookup(dir, name)?;
    fs.getattr(ino)?;
    for t in [i.atime, i.mtime, i.ctime, i.crtime] {
        let _ = t.to_system();
    }
    let names = fs.listxattr(ino)?;
    for n in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        fs.getxattr(ino, n)?;
    }
    if i.is_symlink() {
        fs.readlink(ino)?;
    } else if i.is_file() {
        fs.read(ino, 0, 8192)?;
        fs.read(ino, 600 * PS, 100)?;
    } else if i.is_dir() && ino != dir {
        return Ok(Some(ino));
    }
    Ok(None)
}

/// Journal replay. Input: a commit number (8 bytes), then pages of 8 bytes of page number
/// (taken modulo the base store's size, so most land inside it) and a 4096-byte image,
/// each image re-sealed for its page. The record is written as a commit writes it (CRC and
/// all) and the base store is opened with it. A first byte of 0xff instead gives the
/// journal file as the raw bytes that follow.
fn journal(data: &[u8]) -> Outcome {
    let base = base();
    let jbytes = match data.split_first() {
        Some((0xff, raw)) => raw.to_vec(),
        _ => record(data, base.pages.len() as u64 / PS),
    };
    open_and_walk(base.pages.clone(), jbytes)
}

fn record(data: &[u8], pages: u64) -> Vec<u8> {
    let seq = data
        .get(..8)
        .map_or(0, |h| u64::from_le_bytes(h.try_into().unwrap_or([0; 8])));
    let mut map = crate::ids::PageMap::default();
    for chunk in data.get(8..).unwrap_or_default().chunks(8 + PAGE_SIZE) {
        let mut n = [0u8; 8];
        let k = chunk.len().min(8);
        n[..k].copy_from_slice(&chunk[..k]);
        let raw = u64::from_le_bytes(n);
        // Mostly inside the store; now and then far outside it.
        let p = if raw >> 63 == 1 {
            raw & !(1 << 63)
        } else {
            raw % pages.max(1)
        };
        let mut img = page(chunk.get(8..).unwrap_or_default());
        layout::seal(PageNo(p), &mut img[..]);
        map.insert(PageNo(p), img);
    }
    let mut j = JournalBytes::default();
    let mut jn = Journal::new(Box::new(j.dev()));
    if jn.write(seq, &map).is_err() {
        return Vec::new();
    }
    j.take()
}

/// A journal device whose bytes the caller gets back after `Journal::write`.
#[derive(Default)]
struct JournalBytes(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl JournalBytes {
    fn dev(&mut self) -> SharedMem {
        SharedMem(self.0.clone())
    }
    fn take(self) -> Vec<u8> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

struct SharedMem(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedMem {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Backend for SharedMem {
    fn len(&self) -> u64 {
        self.bytes().len() as u64
    }
    fn set_len(&mut self, len: u64) -> Result<()> {
        self.bytes().resize(len as usize, 0);
        Ok(())
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let b = self.bytes();
        crate::page::check_range(off, buf.len(), b.len() as u64)?;
        buf.copy_from_slice(&b[off as usize..off as usize + buf.len()]);
        Ok(())
    }
    fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        let mut b = self.bytes();
        crate::page::check_range(off, buf.len(), b.len() as u64)?;
        b[off as usize..off as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

/// One page of the base store replaced. Input: 4 bytes of page number (modulo the store's
/// size), then the new page (re-sealed for its place). The store is opened (replaying the
/// base journal first, so the change goes on the page file after replay: the journal is
/// dropped) and walked.
fn store_page(data: &[u8]) -> Outcome {
    let base = base();
    let mut pages = base.pages.clone();
    let total = pages.len() as u64 / PS;
    let raw = data
        .get(..4)
        .map_or(0, |h| u32::from_le_bytes(h.try_into().unwrap_or([0; 4])));
    let p = u64::from(raw) % total.max(1);
    let mut img = page(data.get(4..).unwrap_or_default());
    layout::seal(PageNo(p), &mut img[..]);
    let at = (p * PS) as usize;
    pages[at..at + PAGE_SIZE].copy_from_slice(&img[..]);
    open_and_walk(pages, Vec::new())
}

/// Valid inputs for `name`, the seeds of its corpus: real encodings taken from the base
/// store (each the input format the target reads).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let base = base();
    let b = &base.pages;
    let pg = |p: u64| b[(p * PS) as usize..(p * PS) as usize + PAGE_SIZE].to_vec();
    let kind_pages = |k: crate::store::Kind| -> Vec<u64> {
        (0..b.len() as u64 / PS)
            .filter(|p| layout::verify(PageNo(*p), &pg(*p)).is_ok_and(|got| got == k))
            .collect()
    };
    use crate::store::Kind;
    match name {
        "superblock" => vec![pg(0)],
        "group_header" => vec![[vec![0u8], pg(1)].concat()],
        "map_node" => kind_pages(Kind::MapNode)
            .into_iter()
            .take(8)
            .map(|p| {
                let v = pg(p);
                [vec![(layout::get64(&v, 8) >> 56) as u8], v].concat()
            })
            .collect(),
        "inode_page" => kind_pages(Kind::Inodes)
            .into_iter()
            .take(4)
            .map(pg)
            .collect(),
        "dir_block" => kind_pages(Kind::DirBlock)
            .into_iter()
            .take(8)
            .map(pg)
            .collect(),
        "blob_page" => kind_pages(Kind::Blob)
            .into_iter()
            .take(4)
            .map(|p| {
                let v = pg(p);
                let n = v[16..].iter().rposition(|x| *x != 0).map_or(0, |i| i + 1) as u16;
                [n.to_le_bytes().to_vec(), v].concat()
            })
            .collect(),
        "xattr_blob" => vec![xattr_seed()],
        "snap_list" => vec![snap_seed()],
        "journal" => vec![[vec![0xff], base.journal.clone()].concat(), journal_seed()],
        "store_page" => (0..b.len() as u64 / PS)
            .filter(|p| layout::verify(PageNo(*p), &pg(*p)).is_ok())
            .take(40)
            .map(|p| [(p as u32).to_le_bytes().to_vec(), pg(p)].concat())
            .collect(),
        _ => Vec::new(),
    }
}

fn xattr_seed() -> Vec<u8> {
    let mut v = Vec::new();
    for (n, val) in [(&b"user.a"[..], &b"value"[..]), (b"security.selinux", b"x")] {
        v.push(n.len() as u8);
        v.extend_from_slice(&(val.len() as u32).to_le_bytes());
        v.extend_from_slice(n);
        v.extend_from_slice(val);
    }
    v
}

fn snap_seed() -> Vec<u8> {
    let mut r = vec![0u8; 52];
    r[0] = 1; // id 1
    r[24] = 9; // table root page 9
    r[32] = 2; // depth 2
    r[40] = 40; // next inode 40
    r[48] = 4; // name length
    r.extend_from_slice(b"snap");
    r
}

/// The base journal's record in the `journal` target's own format (seq, then pages).
fn journal_seed() -> Vec<u8> {
    let Ok(Some(rec)) =
        Journal::new(Box::new(MemBackend::from_bytes(base().journal.clone()))).read()
    else {
        return Vec::new();
    };
    let mut v = rec.seq.to_le_bytes().to_vec();
    for (p, img) in &rec.pages {
        v.extend_from_slice(&p.0.to_le_bytes());
        v.extend_from_slice(&img[..]);
    }
    v
}
