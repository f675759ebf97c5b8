//! Access to metadata pages: the dirty cache first, then the device (checksum-verified once).

use super::Store;
use super::layout::{self, Kind, PS};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::{PAGE_SIZE, PageBuf};

impl Store {
    /// Runs `f` on a metadata page of kind `kind`.
    pub fn with_meta<R>(&mut self, p: PageNo, kind: Kind, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if let Some(b) = self.dirty.get(&p) {
            return Ok(f(&b[..]));
        }
        if p.is_zero() || p.0 >= self.total_pages() {
            return Err(Error::corrupt(p.0, "metadata page number out of range"));
        }
        let v = self.dev.view(p.0 * PS, PAGE_SIZE)?;
        if !self.verified.contains(&p) {
            let got = layout::verify(p, &v).inspect_err(|e| log::error!("{e}"))?;
            if got != kind {
                let e = Error::corrupt(p.0, format!("expected a {kind:?} page, found {got:?}"));
                log::error!("{e}");
                return Err(e);
            }
            // The store checks the insides of the kinds it owns; the upper layers check
            // theirs where they decode them (object::node, ns::inode, ns::dir, ns::blob).
            if kind == Kind::Group {
                Store::check_group_header(p, &v).inspect_err(|e| log::error!("{e}"))?;
            }
            self.verified.insert(p);
        }
        Ok(f(&v))
    }

    /// A writable copy of a metadata page in the dirty cache; committed with the next commit.
    pub fn meta_mut(&mut self, p: PageNo, kind: Kind) -> Result<&mut PageBuf> {
        self.check_writable()?;
        self.note_undo(p);
        if !self.dirty.contains_key(&p) {
            let mut b = Box::new([0u8; PAGE_SIZE]);
            self.with_meta(p, kind, |v| b.copy_from_slice(v))?;
            self.dirty.insert(p, b);
        }
        self.dirty
            .get_mut(&p)
            .map(|b| &mut **b)
            .ok_or_else(|| Error::corrupt(p.0, "dirty page vanished"))
    }

    /// Allocates a fresh metadata page of `kind`, zero-filled but for its kind.
    pub fn alloc_meta(&mut self, kind: Kind) -> Result<PageNo> {
        let p = self.alloc()?;
        let mut b = Box::new([0u8; PAGE_SIZE]);
        layout::init_meta(&mut b[..], kind);
        self.note_undo(p);
        self.dirty.insert(p, b);
        Ok(p)
    }

    /// Copies metadata page `p` into a fresh page (copy-on-write of a shared node).
    pub fn copy_meta(&mut self, p: PageNo, kind: Kind) -> Result<PageNo> {
        let mut b = Box::new([0u8; PAGE_SIZE]);
        self.with_meta(p, kind, |v| b.copy_from_slice(v))?;
        let q = self.alloc()?;
        self.note_undo(q);
        self.dirty.insert(q, b);
        self.counters.cow_copies += 1;
        self.sb.cow_copies += 1;
        Ok(q)
    }

    /// Forgets cached state of a page that was just freed.
    pub(super) fn forget_page(&mut self, p: PageNo) {
        self.note_undo(p);
        self.dirty.remove(&p);
        self.verified.remove(&p);
    }
}
