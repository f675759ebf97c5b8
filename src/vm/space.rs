//! `PageLayer` (a page store shared by address spaces) and `AddressSpace`.

use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const PS: u64 = PAGE_SIZE as u64;

/// Largest address (exclusive): what a map of the largest depth covers.
pub const ADDR_LIMIT: u64 = 1 << 52;

struct Inner {
    store: Mutex<Store>,
    zero_reads: AtomicU64,
    forks: AtomicU64,
    faults: AtomicU64,
}

/// A page store shared by address spaces. Cheap to clone (a handle).
#[derive(Clone)]
pub struct PageLayer {
    inner: Arc<Inner>,
}

/// What the page layer has done so far (the store's counters plus its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Pages allocated (data and map nodes).
    pub allocated: u64,
    /// Pages freed.
    pub freed: u64,
    /// Writes that hit a shared data page and copied it (copy-on-write faults).
    pub cow_faults: u64,
    /// Table (map node) pages copied because a write went under a shared table.
    pub table_copies: u64,
    /// Writes into a page only one space holds, done in place.
    pub in_place_writes: u64,
    /// Page reads answered by the zero page.
    pub zero_page_reads: u64,
    /// Forks made.
    pub forks: u64,
}

impl PageLayer {
    /// A page layer over `store`.
    pub fn new(store: Store) -> PageLayer {
        PageLayer {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                zero_reads: AtomicU64::new(0),
                forks: AtomicU64::new(0),
                faults: AtomicU64::new(0),
            }),
        }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new, empty address space: every page reads as the zero page.
    pub fn space(&self) -> AddressSpace {
        AddressSpace {
            layer: self.clone(),
            map: MapRoot::EMPTY,
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        let c = self.store().counters().clone();
        Counters {
            allocated: c.allocs,
            freed: c.frees,
            cow_faults: self.inner.faults.load(Ordering::Relaxed),
            table_copies: c
                .cow_copies
                .saturating_sub(self.inner.faults.load(Ordering::Relaxed)),
            in_place_writes: c.in_place_writes,
            zero_page_reads: self.inner.zero_reads.load(Ordering::Relaxed),
            forks: self.inner.forks.load(Ordering::Relaxed),
        }
    }

    /// Commits the store: freed pages become free, and pages whose last sharer went may be
    /// written in place again.
    pub fn commit(&self) -> Result<()> {
        self.store().commit()
    }

    /// The reference count of a page.
    pub fn refcount(&self, p: PageNo) -> Result<u32> {
        self.store().refcount(p)
    }

    /// Runs `f` on the store (tests and tools).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.store())
    }
}

/// Splits `addr..addr+len` into (page index, offset in page, length) pieces.
fn pieces(addr: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut at = addr;
    let end = addr + len as u64;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let off = (at % PS) as usize;
        let n = ((PS - at % PS) as usize).min((end - at) as usize);
        let r = (at / PS, off, n);
        at += n as u64;
        Some(r)
    })
}

fn check_range(addr: u64, len: usize) -> Result<()> {
    match addr.checked_add(len as u64) {
        Some(end) if end <= ADDR_LIMIT => Ok(()),
        _ => Err(Error::Invalid(
            "address range past the end of the address space",
        )),
    }
}

/// One address space: a copy-on-write map of pages.
pub struct AddressSpace {
    layer: PageLayer,
    map: MapRoot,
}

impl AddressSpace {
    /// Reads `buf.len()` bytes at `addr`. Pages never written read as zeros (the zero page).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
        check_range(addr, buf.len())?;
        let mut s = self.layer.store();
        let mut at = 0;
        for (idx, off, n) in pieces(addr, buf.len()) {
            let p = self.map.get(&mut s, idx)?;
            if p.is_zero() {
                self.layer.inner.zero_reads.fetch_add(1, Ordering::Relaxed);
            }
            s.read_data(p, off, &mut buf[at..at + n])?;
            at += n;
        }
        Ok(())
    }

    /// Writes `data` at `addr`: in place into pages only this space holds, into a copy of
    /// a shared page (a copy-on-write fault), into a fresh page over the zero page.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        check_range(addr, data.len())?;
        let layer = self.layer.clone();
        let mut s = layer.store();
        let mut at = 0;
        for (idx, off, n) in pieces(addr, data.len()) {
            let mut old = PageNo::ZERO;
            let new = self.map.modify(&mut s, idx, |s, p| {
                old = p;
                s.write_cow(p, off, &data[at..at + n])
            })?;
            if !old.is_zero() && new != old {
                layer.inner.faults.fetch_add(1, Ordering::Relaxed);
            }
            at += n;
        }
        Ok(())
    }

    /// A child sharing every page and table of this space: one reference on the root.
    pub fn fork(&self) -> Result<AddressSpace> {
        let map = self.map.share(&mut self.layer.store())?;
        self.layer.inner.forks.fetch_add(1, Ordering::Relaxed);
        Ok(AddressSpace {
            layer: self.layer.clone(),
            map,
        })
    }

    /// Pages this space maps (not the zero page), shared or not.
    pub fn resident_pages(&self) -> Result<u64> {
        self.map.population(&mut self.layer.store())
    }

    /// The page behind `addr` (the zero page if never written).
    pub fn page_at(&self, addr: u64) -> Result<PageNo> {
        self.map.get(&mut self.layer.store(), addr / PS)
    }

    /// Every page reachable from this space with its level: -1 for a data page, 0 and up
    /// for table pages (a leaf table is 0), for tests and the demo.
    pub fn mapped(&self) -> Result<HashMap<PageNo, i32>> {
        let mut out = HashMap::new();
        self.map.walk(&mut self.layer.store(), &mut |p, level| {
            out.insert(p, level);
        })?;
        Ok(out)
    }

    /// The space's map (its root and depth).
    pub fn root(&self) -> MapRoot {
        self.map
    }

    /// Releases every reference now (as dropping does), reporting errors.
    pub fn release(mut self) -> Result<()> {
        let r = self.map.free(&mut self.layer.store());
        self.map = MapRoot::EMPTY;
        r
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        if self.map == MapRoot::EMPTY {
            return;
        }
        let layer = self.layer.clone();
        let mut s = layer.store();
        if let Err(e) = self.map.free(&mut s) {
            log::error!("releasing an address space failed: {e}");
        }
    }
}
