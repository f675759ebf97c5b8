//! Snapshots: each is a name, a time and its own inode table, which starts as one more
//! reference on the live table's root (O(1) whatever the tree holds). Copy-on-write does
//! the rest: the first change to a shared table node or inode page copies it (see
//! `itable::unshare`). The list lives in a blob whose root is in the superblock's slots
//! 3-6, so it changes atomically with everything else at a commit. A deleted snapshot (and
//! the old live tree after a rollback) stays in the list as a "dropping" record until the
//! reclaimer has freed its pages a bounded step at a time (`tree::destroy`).

use super::blob;
use super::clone::Invalidate;
use super::fs::Fs;
use super::inode::Time;
use super::itable::{self, Table};
use super::tree::{self, Item};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo, SnapId};
use crate::object::MapRoot;
use crate::store::Store;
use crate::store::layout::{get32, get64, put32, put64};

const SLOT_NODE: usize = 3;
const SLOT_DEPTH: usize = 4;
const SLOT_LEN: usize = 5;
const SLOT_NEXT_ID: usize = 6;

const F_WRITABLE: u32 = 1;
const F_DROPPING: u32 = 2;

/// Longest snapshot name, in bytes.
pub const NAME_MAX: usize = 200;

/// One snapshot (or a table being freed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapRec {
    pub id: SnapId,
    pub name: Vec<u8>,
    pub created: Time,
    pub writable: bool,
    /// Deleted: its pages are being returned in the background.
    pub dropping: bool,
    pub table: Table,
}

/// What `snapshot list` shows of one snapshot.
#[derive(Debug, Clone)]
pub struct SnapInfo {
    pub id: SnapId,
    pub name: Vec<u8>,
    pub created: Time,
    pub writable: bool,
    /// Bytes only this snapshot holds (what deleting it would free).
    pub exclusive_bytes: u64,
}

const FIXED: usize = 8 + 8 + 4 + 4 + 8 + 8 + 8 + 4;

fn encode(recs: &[SnapRec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in recs {
        let mut b = vec![0u8; FIXED];
        put64(&mut b, 0, r.id.0);
        put64(&mut b, 8, r.created.sec as u64);
        put32(&mut b, 16, r.created.nsec);
        let flags =
            if r.writable { F_WRITABLE } else { 0 } | if r.dropping { F_DROPPING } else { 0 };
        put32(&mut b, 20, flags);
        put64(&mut b, 24, r.table.map.node.0);
        put64(&mut b, 32, r.table.map.depth as u64);
        put64(&mut b, 40, r.table.next);
        put32(&mut b, 48, r.name.len() as u32);
        out.extend_from_slice(&b);
        out.extend_from_slice(&r.name);
    }
    out
}

/// Decodes the snapshot list, checked: every record whole, an id in 1..=`SnapId::MAX`
/// and no id twice, only known flags, a dropping record nameless and every other one named
/// (1..=200 bytes, no `/` or NUL, no name twice), a table depth at most `MAX_DEPTH` (a root
/// page only with a depth), nanoseconds below 10^9. The list hangs off superblock slots,
/// so its errors name page 0 and the record's offset.
pub(crate) fn decode(b: &[u8]) -> Result<Vec<SnapRec>> {
    let bad = |at: usize, why: String| {
        Error::corrupt(0, format!("snapshot list record at byte {at}: {why}"))
    };
    let mut out: Vec<SnapRec> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut names = std::collections::HashSet::new();
    let mut at = 0;
    while at < b.len() {
        let f = b
            .get(at..at + FIXED)
            .ok_or_else(|| bad(at, "cut short".into()))?;
        let len = get32(f, 48) as usize;
        if len > NAME_MAX {
            return Err(bad(at, format!("name of {len} bytes")));
        }
        let name = b
            .get(at + FIXED..at + FIXED + len)
            .ok_or_else(|| bad(at, "name runs past the list".into()))?;
        let flags = get32(f, 20);
        let depth = get64(f, 32);
        let node = PageNo(get64(f, 24));
        let id = SnapId(get64(f, 0));
        let nsec = get32(f, 16);
        let dropping = flags & F_DROPPING != 0;
        if id.0 == 0 || id > SnapId::MAX || !ids.insert(id) {
            return Err(bad(at, format!("snapshot id {}", id.0)));
        }
        if flags & !(F_WRITABLE | F_DROPPING) != 0 || nsec > 999_999_999 {
            return Err(bad(at, format!("flags {flags:#x}, {nsec} ns")));
        }
        if depth > crate::object::MAX_DEPTH as u64 || (depth == 0 && !node.is_zero()) {
            return Err(bad(at, format!("table of depth {depth}")));
        }
        let next = get64(f, 40);
        if next >= 1 << crate::ids::VIEW_SHIFT {
            return Err(bad(at, format!("next inode number {next}")));
        }
        let named = !name.is_empty() && !name.contains(&b'/') && !name.contains(&0);
        let dup = !dropping && !names.insert(name);
        if (dropping && !name.is_empty()) || (!dropping && (!named || dup)) {
            return Err(bad(at, "bad or repeated name".into()));
        }
        out.push(SnapRec {
            id,
            name: name.to_vec(),
            created: Time {
                sec: get64(f, 8) as i64,
                nsec,
            },
            writable: flags & F_WRITABLE != 0,
            dropping,
            table: Table {
                map: MapRoot {
                    node,
                    depth: depth as u8,
                },
                next,
            },
        });
        at += FIXED + len;
    }
    Ok(out)
}

fn list_map(s: &Store) -> MapRoot {
    MapRoot {
        node: PageNo(s.root(SLOT_NODE)),
        // A value past u8 stays too deep (the map refuses it as corrupt), never wraps.
        depth: u8::try_from(s.root(SLOT_DEPTH)).unwrap_or(u8::MAX),
    }
}

/// The list's own map, for fsck.
pub fn list_root(s: &Store) -> MapRoot {
    list_map(s)
}

/// Reads the snapshot list from the store.
pub fn load(s: &mut Store) -> Result<Vec<SnapRec>> {
    let len = s.root(SLOT_LEN);
    if len == 0 {
        return Ok(Vec::new());
    }
    if len > 1 << 30 {
        return Err(Error::corrupt(0, "snapshot list length is impossible"));
    }
    let b = blob::read(s, &list_map(s), len)?;
    decode(&b)
}

/// Writes the snapshot list (durable at the next commit).
pub fn save(s: &mut Store, recs: &[SnapRec]) -> Result<()> {
    let b = encode(recs);
    let mut m = list_map(s);
    blob::write(s, &mut m, &b)?;
    s.set_root(SLOT_NODE, m.node.0);
    s.set_root(SLOT_DEPTH, m.depth as u64);
    s.set_root(SLOT_LEN, b.len() as u64);
    Ok(())
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Error::Invalid(
            "snapshot names are 1-200 bytes, not . or .., no /",
        ));
    }
    if name.contains(&0) {
        return Err(Error::Invalid("snapshot names contain no NUL byte"));
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong);
    }
    Ok(())
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Fs {
    /// The live snapshot named `name`.
    pub(super) fn snap_named(&self, name: &[u8]) -> Result<&SnapRec> {
        self.snaps
            .iter()
            .find(|r| !r.dropping && r.name == name)
            .ok_or_else(|| Error::NoSnapshot(shown(name)))
    }

    /// The snapshot with id `id`, if it is not being dropped.
    pub(super) fn snap_by_id(&self, id: SnapId) -> Option<&SnapRec> {
        self.snaps.iter().find(|r| !r.dropping && r.id == id)
    }

    /// The id of the snapshot named `name`.
    pub fn snapshot_id(&self, name: &[u8]) -> Result<SnapId> {
        Ok(self.snap_named(name)?.id)
    }

    /// Names of the snapshots, oldest first.
    pub fn snapshot_names(&self) -> Vec<(SnapId, Vec<u8>)> {
        self.snaps
            .iter()
            .filter(|r| !r.dropping)
            .map(|r| (r.id, r.name.clone()))
            .collect()
    }

    /// True when some table shares pages with the live one (or another): inode pages
    /// must then be unshared before their maps change.
    pub(super) fn tables_shared(&self) -> bool {
        !self.snaps.is_empty()
    }

    pub(super) fn save_snaps(&mut self) -> Result<()> {
        save(&mut self.store, &self.snaps[..])
    }

    fn next_snap_id(&mut self) -> Result<SnapId> {
        let id = SnapId(self.store.root(SLOT_NEXT_ID).max(1));
        if id > SnapId::MAX {
            return Err(Error::NoSpace);
        }
        self.store.set_root(SLOT_NEXT_ID, id.0 + 1);
        Ok(id)
    }

    /// Makes a snapshot of the live tree: one reference on the table's root.
    pub fn snapshot_create(&mut self, name: &[u8], writable: bool) -> Result<SnapId> {
        check_name(name)?;
        if self.snap_named(name).is_ok() {
            return Err(Error::SnapshotExists(shown(name)));
        }
        let live = Table::live(&self.store);
        let id = self.next_snap_id()?;
        let map = live.map.share(&mut self.store)?;
        self.snaps_mut().push(SnapRec {
            id,
            name: name.to_vec(),
            created: Time::now(),
            writable,
            dropping: false,
            table: Table { map, ..live },
        });
        self.save_snaps()?;
        self.commit()?;
        log::info!("snapshot '{}' created (id {})", shown(name), id.0);
        Ok(id)
    }

    /// Deletes a snapshot: the name goes now, the pages in the background.
    pub fn snapshot_delete(&mut self, name: &[u8]) -> Result<SnapId> {
        let id = self.snap_named(name)?.id;
        for r in self.snaps_mut().iter_mut().filter(|r| r.id == id) {
            r.dropping = true;
            r.name.clear();
        }
        self.save_snaps()?;
        self.commit()?;
        log::info!("snapshot '{}' deleted (id {})", shown(name), id.0);
        Ok(id)
    }

    /// Names in the live directories the kernel knows, for invalidation.
    fn known_names(&mut self, known: &[Ino]) -> Vec<(Ino, Vec<u8>)> {
        let mut out = Vec::new();
        for &k in known {
            let (v, ino) = k.split();
            if v != SnapId::LIVE {
                continue;
            }
            let Ok(d) = self.peek(ino) else { continue };
            if !d.is_dir() {
                continue;
            }
            let _ = super::dir::for_each(&mut self.store, &d, None, &mut |e| {
                out.push((ino, e.name.clone()));
                false
            });
        }
        out
    }

    /// Makes the live tree the snapshot's content; the old live tree is freed in the
    /// background. Returns what the kernel must forget.
    pub fn snapshot_rollback(&mut self, name: &[u8]) -> Result<Invalidate> {
        let snap = self.snap_named(name)?.table;
        let known = self.known_inodes();
        let mut entries = self.known_names(&known);
        let old = Table::live(&self.store);
        let map = snap.map.share(&mut self.store)?;
        let new = Table {
            map,
            next: old.next.max(snap.next),
        };
        let id = self.next_snap_id()?;
        self.snaps_mut().push(SnapRec {
            id,
            name: Vec::new(),
            created: Time::now(),
            writable: false,
            dropping: true,
            table: old,
        });
        new.save_live(&mut self.store);
        self.save_snaps()?;
        self.reap_unused_orphans()?;
        // Before the commit, which is the operation's save point: the new tree is the
        // kernel's as soon as it is durable.
        self.bump_generation();
        self.commit()?;
        log::info!("rolled back to snapshot '{}'", shown(name));
        entries.extend(self.known_names(&known));
        entries.sort();
        entries.dedup();
        Ok(Invalidate {
            entries,
            ranges: known.into_iter().map(|k| (k, 0, u64::MAX)).collect(),
            grown: Vec::new(),
        })
    }

    /// Snapshot number `index` (oldest first) with the bytes it alone holds, computed
    /// now (it walks what only this snapshot holds).
    pub fn snapshot_info(&mut self, index: u64) -> Result<SnapInfo> {
        let r = self
            .snaps
            .iter()
            .filter(|r| !r.dropping)
            .nth(usize::try_from(index).unwrap_or(usize::MAX))
            .cloned()
            .ok_or(Error::NotFound)?;
        let pages = match Item::of_map(&r.table.map, true) {
            Some(root) => tree::exclusive_pages(&mut self.store, root)?,
            None => 0,
        };
        Ok(SnapInfo {
            id: r.id,
            name: r.name,
            created: r.created,
            writable: r.writable,
            exclusive_bytes: pages * crate::page::PAGE_SIZE as u64,
        })
    }

    /// Every snapshot with the bytes it alone holds.
    pub fn snapshot_list(&mut self) -> Result<Vec<SnapInfo>> {
        let n = self.snapshot_names().len() as u64;
        (0..n).map(|i| self.snapshot_info(i)).collect()
    }

    /// Every record of the in-memory snapshot list (dropping ones included), as the
    /// store should hold it at the end of each operation (`load`).
    pub fn snapshot_records(&self) -> Vec<SnapRec> {
        self.snaps.to_vec()
    }

    /// Tables still being freed.
    pub fn reclaim_pending(&self) -> usize {
        self.snaps.iter().filter(|r| r.dropping).count()
    }

    /// Frees up to about `budget` references of the oldest dropped table. Returns true
    /// while work remains.
    pub fn reclaim_step(&mut self, budget: u64) -> Result<bool> {
        let Some(at) = self.snaps.iter().position(|r| r.dropping) else {
            return Ok(false);
        };
        let t = self.snaps[at].table;
        let mut left = budget;
        let done = match Item::of_map(&t.map, true) {
            None => true,
            Some(root) if self.store.refcount(root.page())? > 1 => {
                self.store.decref(root.page())?;
                true
            }
            Some(root) => tree::destroy(&mut self.store, root, &mut left)?,
        };
        if done {
            let id = self.snaps[at].id;
            self.snaps_mut().remove(at);
            self.save_snaps()?;
            log::info!("table of snapshot id {} freed", id.0);
        }
        Ok(self.reclaim_pending() > 0)
    }

    /// The inode table of view `v` (the live one for `SnapId::LIVE`).
    pub(super) fn table_of(&self, v: SnapId) -> Result<Table> {
        if v == SnapId::LIVE {
            return Ok(Table::live(&self.store));
        }
        self.snap_by_id(v).map(|r| r.table).ok_or(Error::Stale)
    }

    /// Stores a changed table of view `v`.
    pub(super) fn set_table(&mut self, v: SnapId, t: Table) -> Result<()> {
        if v == SnapId::LIVE {
            t.save_live(&mut self.store);
            return Ok(());
        }
        let at = self
            .snaps
            .iter()
            .position(|r| !r.dropping && r.id == v)
            .ok_or(Error::Stale)?;
        if self.snaps[at].table != t {
            self.snaps_mut()[at].table = t;
            self.save_snaps()?;
        }
        Ok(())
    }

    /// True when view `v` may be written.
    pub fn view_writable(&self, v: SnapId) -> bool {
        v == SnapId::LIVE || self.snap_by_id(v).is_some_and(|r| r.writable)
    }

    pub(super) fn unshare_in(&mut self, v: SnapId, ino: Ino) -> Result<()> {
        let mut t = self.table_of(v)?;
        itable::unshare(&mut self.store, &mut t, ino)?;
        self.set_table(v, t)
    }
}
