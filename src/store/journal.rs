//! The redo journal: full images of every metadata page a commit changes, written and
//! synced before any of them is written home. See docs/FORMAT.md, "Commit protocol".

use super::layout::{self, GROUP_PAGES, Kind, PS, get32, get64, put32, put64};
use super::superblock::Superblock;
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::{Backend, PAGE_SIZE, PageBuf};

const MAGIC: u64 = 0x4c4e_4a53_4657_4f43; // "COWFSJNL"
const PER_INDEX_PAGE: usize = PAGE_SIZE / 8;

/// The journal device and what it knows of its last record.
pub struct Journal {
    dev: Box<dyn Backend>,
}

/// A valid journal record: the commit's sequence number and its page images.
pub struct Record {
    pub seq: u64,
    pub pages: Vec<(PageNo, Box<PageBuf>)>,
}

fn index_pages(n: usize) -> u64 {
    n.div_ceil(PER_INDEX_PAGE) as u64
}

impl Record {
    /// Checks a record before it is replayed, so that nothing is written home unless all of
    /// it is sound: page numbers strictly ascending, page 0 present and a valid superblock
    /// of this commit's `seq`, every page inside the store that superblock describes, and
    /// every image a sealed metadata page of the kind its place holds (a superblock at 0,
    /// a group header at each header place, no store-owned kind elsewhere). Returns the
    /// record's superblock. A record that passes its CRC but fails here was written wrong
    /// or on purpose: opening the store fails rather than replaying it.
    pub fn check(&self) -> Result<Superblock> {
        let seq = self.seq;
        let bad =
            |p: PageNo, what: &str| Error::corrupt(p.0, format!("journal record {seq}: {what}"));
        let Some((first, img0)) = self.pages.first() else {
            return Err(bad(PageNo(0), "no superblock image"));
        };
        if !first.is_zero() {
            return Err(bad(PageNo(0), "no superblock image"));
        }
        let sb = Superblock::decode(&img0[..]).map_err(|e| bad(PageNo(0), &e.to_string()))?;
        if sb.seq != seq {
            return Err(bad(PageNo(0), "superblock of another commit"));
        }
        let mut prev: Option<PageNo> = None;
        for (p, img) in &self.pages {
            if prev.is_some_and(|q| q >= *p) {
                return Err(bad(*p, "page numbers not in ascending order"));
            }
            prev = Some(*p);
            if p.0 >= sb.total_pages() {
                return Err(bad(*p, "page past the end of the store"));
            }
            let kind = layout::verify(*p, &img[..]).map_err(|e| bad(*p, &e.to_string()))?;
            let want_store_kind = if p.is_zero() {
                Some(Kind::Super)
            } else if p.0 % GROUP_PAGES == 1 {
                Some(Kind::Group)
            } else {
                None
            };
            let ok = match want_store_kind {
                Some(k) => kind == k,
                None => !matches!(kind, Kind::Super | Kind::Group),
            };
            if !ok {
                return Err(bad(*p, &format!("a {kind:?} image in the wrong place")));
            }
            if kind == Kind::Group {
                super::Store::check_group_header(*p, &img[..])
                    .map_err(|e| bad(*p, &e.to_string()))?;
            }
        }
        Ok(sb)
    }
}

impl Journal {
    /// Wraps the journal device.
    pub fn new(dev: Box<dyn Backend>) -> Self {
        Journal { dev }
    }

    /// Writes one record holding `pages` and syncs it. When this returns the commit is durable.
    pub fn write(&mut self, seq: u64, pages: &crate::ids::PageMap<Box<PageBuf>>) -> Result<()> {
        let mut order: Vec<PageNo> = pages.keys().copied().collect();
        order.sort();
        let n = order.len();
        let idx = index_pages(n);
        let total = (1 + idx + n as u64) * PS;
        if self.dev.len() < total {
            self.dev.set_len(total)?;
        }
        let mut crc = crc32fast::Hasher::new();
        let mut index = vec![0u8; (idx * PS) as usize];
        for (i, p) in order.iter().enumerate() {
            put64(&mut index, i * 8, p.0);
        }
        self.dev.write(PS, &index)?;
        crc.update(&index);
        for (i, p) in order.iter().enumerate() {
            let buf = &pages[p];
            self.dev.write((1 + idx + i as u64) * PS, &buf[..])?;
            crc.update(&buf[..]);
        }
        let mut head = [0u8; PAGE_SIZE];
        put64(&mut head, 0, MAGIC);
        put64(&mut head, 8, seq);
        put64(&mut head, 16, n as u64);
        crc.update(&head[0..24]);
        put32(&mut head, 24, crc.finalize());
        // The header goes last, in the same sync: a torn record fails its checksum.
        self.dev.write(0, &head)?;
        self.dev.sync()
    }

    /// Reads the last record if it is complete and its checksum matches.
    pub fn read(&self) -> Result<Option<Record>> {
        if self.dev.len() < PS {
            return Ok(None);
        }
        let mut head = [0u8; PAGE_SIZE];
        self.dev.read(0, &mut head)?;
        if get64(&head, 0) != MAGIC {
            return Ok(None);
        }
        let seq = get64(&head, 8);
        let n = get64(&head, 16);
        let too_big = n
            .checked_add(index_pages(n.min(usize::MAX as u64) as usize) + 1)
            .and_then(|pages| pages.checked_mul(PS))
            .is_none_or(|bytes| bytes > self.dev.len());
        if too_big {
            log::warn!("journal record {seq} is cut short; ignoring it");
            return Ok(None);
        }
        let n = n as usize;
        let idx = index_pages(n);
        let mut crc = crc32fast::Hasher::new();
        let mut index = vec![0u8; (idx * PS) as usize];
        self.dev.read(PS, &mut index)?;
        crc.update(&index);
        let mut pages = Vec::with_capacity(n);
        for i in 0..n {
            let mut buf = Box::new([0u8; PAGE_SIZE]);
            self.dev.read((1 + idx + i as u64) * PS, &mut buf[..])?;
            crc.update(&buf[..]);
            pages.push((PageNo(get64(&index, i * 8)), buf));
        }
        crc.update(&head[0..24]);
        if crc.finalize() != get32(&head, 24) {
            log::warn!("journal record {seq} fails its checksum (torn write); ignoring it");
            return Ok(None);
        }
        Ok(Some(Record { seq, pages }))
    }

    /// Forgets the last record (after a clean close made it redundant).
    pub fn clear(&mut self) -> Result<()> {
        if self.dev.len() >= PS {
            self.dev.write(0, &[0u8; PAGE_SIZE])?;
        }
        self.dev.set_len(PS)?;
        self.dev.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::MemBackend;

    #[test]
    fn write_read_and_torn() {
        let mut j = Journal::new(Box::new(MemBackend::new()));
        assert!(j.read().expect("read").is_none());
        let mut pages = crate::ids::PageMap::default();
        for p in [3u64, 9, 700] {
            let mut b = Box::new([0u8; PAGE_SIZE]);
            b[0] = p as u8;
            pages.insert(PageNo(p), b);
        }
        j.write(4, &pages).expect("write");
        let r = j.read().expect("read").expect("record");
        assert_eq!(r.seq, 4);
        assert_eq!(r.pages.len(), 3);
        assert_eq!(r.pages[2].0, PageNo(700));
        assert_eq!(r.pages[2].1[0], 700u64 as u8);
        // Tear an image: the record must be refused.
        j.dev.write(3 * PS + 5, &[1]).expect("poke");
        assert!(j.read().expect("read").is_none());
        j.clear().expect("clear");
        assert!(j.read().expect("read").is_none());
    }
}
