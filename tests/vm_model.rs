//! Model-based test of the page layer (`cowfs::vm`): random sequences of write / read /
//! fork / release / commit over a few address spaces, checked against an in-memory model
//! after every operation:
//!
//! - every read returns what the model says (untouched bytes are zero);
//! - every page's stored reference count equals the references recounted from the live
//!   spaces' roots (one per space root, one per table entry; a shared subtree is counted
//!   once), fsck-style over the whole store, and no page is allocated but unreachable;
//! - physical sharing matches the model: two spaces map the same store page at an index
//!   exactly when the model says they share it (fork shares, a write breaks sharing);
//! - the counters move exactly as the operation implies (a fork allocates nothing, a write
//!   to a shared page is a copy-on-write fault, a write to an exclusive page goes in place,
//!   a read of an untouched page is a zero-page read);
//! - once every space is released and the store committed, the store is as empty as
//!   before the first space was made.
//!
//! Plus a few plain tests of the key facts (O(1) fork, one copy per fault, the zero page,
//! in-place writes again once a fork is gone).

use cowfs::check::check;
use cowfs::ids::PageNo;
use cowfs::object::{MapRoot, node};
use cowfs::page::{AnonBackend, PAGE_SIZE};
use cowfs::store::layout::{self, GROUP_PAGES, RC_PENDING, RC_RESERVED};
use cowfs::store::{Kind, Store, open_dir};
use cowfs::vm::{AddressSpace, Counters, PageLayer};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;

const PS: u64 = PAGE_SIZE as u64;
/// The page layer's address limit (`vm::space::ADDR_LIMIT`, not exported): checked by
/// `addresses_past_the_limit_are_refused`.
const ADDR_LIMIT: u64 = 1 << 52;
/// Live address spaces at most.
const MAX_SPACES: usize = 6;

// ---------------------------------------------------------------------------------------
// The rig: a page layer on a scratch store: a store directory (the page file mapped, as
// `cowfs pages --store DIR` uses), or anonymous memory (what `cowfs pages` uses by default).

#[derive(Debug, Clone, Copy)]
enum Backing {
    Dir,
    Anon,
}

struct Rig {
    layer: PageLayer,
    _lock: Option<File>,
    _dir: Option<tempfile::TempDir>,
    /// Counters before the first space was made.
    base: Counters,
    /// Pages in use then (after a commit: nothing pending).
    base_used: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig::on(Backing::Dir)
    }

    fn on(backing: Backing) -> Rig {
        let (store, lock, dir) = match backing {
            Backing::Dir => {
                let dir = tempfile::tempdir().expect("tempdir");
                let (store, _, lock) = open_dir(&dir.path().join("store"), true)
                    .expect("scratch store")
                    .into_parts();
                (store, Some(lock), Some(dir))
            }
            Backing::Anon => {
                let dev = AnonBackend::new().expect("anonymous memory");
                let jnl = AnonBackend::new().expect("anonymous memory");
                let store = Store::create(Box::new(dev), Box::new(jnl)).expect("store");
                (store, None, None)
            }
        };
        let layer = PageLayer::new(store);
        let base = layer.counters();
        let base_used = layer.with_store(|s| used_pages(s));
        Rig {
            layer,
            _lock: lock,
            _dir: dir,
            base,
            base_used,
        }
    }
}

/// Pages neither free nor reserved (page 0 and the group headers).
fn used_pages(s: &Store) -> u64 {
    let groups = s.total_pages() / GROUP_PAGES;
    s.total_pages() - s.superblock().free_pages - groups - 1
}

fn delta(a: &Counters, b: &Counters) -> Counters {
    Counters {
        allocated: b.allocated - a.allocated,
        freed: b.freed - a.freed,
        cow_faults: b.cow_faults - a.cow_faults,
        table_copies: b.table_copies - a.table_copies,
        in_place_writes: b.in_place_writes - a.in_place_writes,
        zero_page_reads: b.zero_page_reads - a.zero_page_reads,
        forks: b.forks - a.forks,
    }
}

/// Splits `addr..addr+len` into (page index, offset in page, length), as the layer does.
fn pieces(addr: u64, len: usize) -> Vec<(u64, usize, usize)> {
    let mut out = Vec::new();
    let (mut at, end) = (addr, addr + len as u64);
    while at < end {
        let off = (at % PS) as usize;
        let n = ((PS - at % PS) as usize).min((end - at) as usize);
        out.push((at / PS, off, n));
        at += n as u64;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Recounting references from the roots (what fsck does for a file system's roots).

/// What a walk from the live spaces' roots found.
#[derive(Default)]
struct Recount {
    /// References to each page: one per space whose root it is, one per table entry
    /// pointing at it (a subtree shared by several tables is walked once).
    refs: HashMap<PageNo, u32>,
    /// Per space: the data page at each index (every path walked, shared or not).
    data: Vec<BTreeMap<u64, PageNo>>,
    /// Per space: every page reachable, with its level (data pages at -1), as
    /// `AddressSpace::mapped` reports it.
    levels: Vec<HashMap<PageNo, i32>>,
}

struct Walker<'a> {
    s: &'a mut Store,
    refs: HashMap<PageNo, u32>,
    /// Population (data pages below) of each node walked.
    pop: HashMap<PageNo, u64>,
}

impl Walker<'_> {
    /// Walks node `p` at `level` covering indices from `base`; returns its population.
    fn node(
        &mut self,
        p: PageNo,
        level: u8,
        base: u64,
        data: &mut BTreeMap<u64, PageNo>,
        levels: &mut HashMap<PageNo, i32>,
    ) -> u64 {
        let (lvl, stored_pop, es) = self
            .s
            .with_meta(p, Kind::MapNode, |b| {
                (node::level(b), node::population(b), node::entries(b))
            })
            .expect("map node readable");
        assert_eq!(lvl, level, "node {} sits at level {level}", p.0);
        let first = !self.pop.contains_key(&p);
        if let Some(prev) = levels.insert(p, level as i32) {
            panic!(
                "page {} reached twice from one space (level {prev}, {level})",
                p.0
            );
        }
        let span = node::span(level);
        let mut pop = 0;
        for (slot, e) in es.into_iter().enumerate().filter(|(_, e)| *e != 0) {
            let e = PageNo(e);
            if first {
                *self.refs.entry(e).or_insert(0) += 1;
            }
            let idx = base + slot as u64 * span;
            if level == 0 {
                assert!(
                    levels.insert(e, -1).is_none(),
                    "data page {} mapped twice",
                    e.0
                );
                data.insert(idx, e);
                pop += 1;
            } else {
                pop += self.node(e, level - 1, idx, data, levels);
            }
        }
        assert_eq!(stored_pop, pop, "population of node {}", p.0);
        self.pop.insert(p, pop);
        pop
    }
}

fn recount(s: &mut Store, roots: &[MapRoot]) -> Recount {
    let mut w = Walker {
        s,
        refs: HashMap::new(),
        pop: HashMap::new(),
    };
    let mut out = Recount::default();
    for r in roots {
        let mut data = BTreeMap::new();
        let mut levels = HashMap::new();
        if r.depth > 0 && !r.node.is_zero() {
            *w.refs.entry(r.node).or_insert(0) += 1;
            w.node(r.node, r.depth - 1, 0, &mut data, &mut levels);
        } else {
            assert!(r.node.is_zero(), "a map of depth 0 has no root node");
        }
        out.data.push(data);
        out.levels.push(levels);
    }
    out.refs = w.refs;
    out
}

/// Compares every page's stored count with `refs`, over the whole store (as fsck does):
/// reachable pages carry exactly their references, unreachable ones are free or (freed
/// since the last commit) pending, and the free counts add up. Returns the pending pages.
fn check_counts(s: &mut Store, refs: &HashMap<PageNo, u32>) -> u64 {
    let total = s.total_pages();
    let mut pending = 0;
    let mut free = 0;
    for g in 0..total / GROUP_PAGES {
        let h = layout::group_header(g);
        let (group_free, rcs) = s
            .with_meta(h, Kind::Group, |b| {
                let rcs: Vec<u32> = (0..GROUP_PAGES as usize)
                    .map(|k| layout::get32(b, layout::META_HEADER + k * 4))
                    .collect();
                (layout::get32(b, 8), rcs)
            })
            .expect("group header readable");
        let mut n_free = 0;
        for (k, rc) in rcs.into_iter().enumerate() {
            let p = PageNo(g * GROUP_PAGES + k as u64);
            if p.is_zero() || p == h {
                assert_eq!(rc, RC_RESERVED, "page {} is reserved", p.0);
                continue;
            }
            match refs.get(&p) {
                Some(want) => assert_eq!(rc, *want, "page {}: stored count vs references", p.0),
                None if rc == RC_PENDING => pending += 1,
                None => assert_eq!(rc, 0, "page {}: count {rc} but unreachable (leak)", p.0),
            }
            assert_eq!(
                s.refcount(p).expect("refcount"),
                rc,
                "refcount() reads the header"
            );
            n_free += u32::from(rc == 0);
        }
        assert_eq!(group_free, n_free, "group {g}: free count");
        free += u64::from(n_free);
    }
    assert_eq!(s.superblock().free_pages, free, "superblock free count");
    pending
}

// ---------------------------------------------------------------------------------------
// The model.

/// One page of a space in the model: its bytes and its sharing group. Fork copies the
/// group; a write that copies (a hole, or a page another live space shares) gets a new one.
#[derive(Clone)]
struct MPage {
    data: Box<[u8; PAGE_SIZE]>,
    group: u64,
}

type MSpace = BTreeMap<u64, MPage>;

#[derive(Default)]
struct Model {
    spaces: Vec<MSpace>,
    next_group: u64,
    /// Groups that had two or more holders at some time since the last commit: the store
    /// copies such a page on the next write even when one space alone holds it (its count,
    /// or a table's above it, fell to 1 since the commit).
    tainted: HashSet<u64>,
}

impl Model {
    fn holders(&self, idx: u64, group: u64) -> usize {
        self.spaces
            .iter()
            .filter(|m| m.get(&idx).is_some_and(|p| p.group == group))
            .count()
    }

    fn fresh(&mut self) -> u64 {
        self.next_group += 1;
        self.next_group
    }

    /// Shares anything with another live space?
    fn shares(&self, s: usize) -> bool {
        self.spaces[s]
            .iter()
            .any(|(idx, p)| self.holders(*idx, p.group) > 1)
    }
}

/// How the pages of one write split.
#[derive(Debug, Default)]
struct WriteKinds {
    /// Over the zero page: a new page.
    holes: u64,
    /// Over a page another live space maps: a copy-on-write fault.
    shared: u64,
    /// Over a page this space alone maps, nothing shared it since the last commit: in place.
    clean: u64,
    /// Over a page this space alone maps that was shared since the last commit (through
    /// its own count or a table's): copied, as the last commit may still share it.
    tainted: u64,
}

// ---------------------------------------------------------------------------------------
// Operations.

#[derive(Debug, Clone)]
enum Op {
    Write {
        s: usize,
        addr: u64,
        len: usize,
        seed: u8,
    },
    Read {
        s: usize,
        addr: u64,
        len: usize,
    },
    Fork(usize),
    /// Release a space (by `release()`, or by dropping it).
    Release {
        s: usize,
        by_drop: bool,
    },
    New,
    Commit,
}

/// Regions addresses fall in: a dense region at 0, the edges of a leaf table (510 pages)
/// and of a level-1 table, and far-apart addresses needing maps of depth 3, 4 and 5.
/// Each region is a few pages wide, so that writes often land on pages already written
/// (and shared by forks), not only on holes.
const BASES: [u64; 8] = [
    0,
    510 * PS,
    510 * 510 * PS,
    1 << 30,
    1 << 40,
    (1 << 40) + 510 * PS,
    3 << 44,
    ADDR_LIMIT - 8 * PS,
];

fn address() -> impl Strategy<Value = u64> {
    let dense = prop_oneof![0u64..8 * PS, (0u64..8).prop_map(|p| p * PS)];
    let edge = prop_oneof![0u64..4 * PS, (0u64..4).prop_map(|p| p * PS)];
    let far = (1..BASES.len(), edge).prop_map(|(b, off)| BASES[b] - 2 * PS + off);
    prop_oneof![2 => dense, 3 => far]
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..64,
        3 => 1usize..3 * PAGE_SIZE,
        2 => Just(PAGE_SIZE),
        1 => Just(PAGE_SIZE - 1),
        1 => Just(PAGE_SIZE + 1),
        1 => Just(2 * PAGE_SIZE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0usize..MAX_SPACES;
    prop_oneof![
        10 => (s.clone(), address(), length(), any::<u8>())
            .prop_map(|(s, addr, len, seed)| Op::Write { s, addr, len, seed }),
        4 => (s.clone(), address(), length()).prop_map(|(s, addr, len)| Op::Read { s, addr, len }),
        3 => s.clone().prop_map(Op::Fork),
        2 => (s, any::<bool>()).prop_map(|(s, by_drop)| Op::Release { s, by_drop }),
        1 => Just(Op::New),
        1 => Just(Op::Commit),
    ]
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i / PAGE_SIZE) as u8)
        .collect()
}

struct Run {
    rig: Rig,
    spaces: Vec<AddressSpace>,
    model: Model,
    /// `freed` as of the last commit: pages freed since are pending.
    freed_at_commit: u64,
}

impl Run {
    fn new(backing: Backing) -> Run {
        let rig = Rig::on(backing);
        let freed_at_commit = rig.base.freed;
        Run {
            rig,
            spaces: Vec::new(),
            model: Model::default(),
            freed_at_commit,
        }
    }

    fn layer(&self) -> &PageLayer {
        &self.rig.layer
    }

    /// A live space for selector `s`, making one if none is left.
    fn pick(&mut self, s: usize) -> usize {
        if self.spaces.is_empty() {
            self.spaces.push(self.rig.layer.space());
            self.model.spaces.push(MSpace::new());
        }
        s % self.spaces.len()
    }

    fn apply(&mut self, op: &Op) {
        let before = self.layer().counters();
        match *op {
            Op::Write { s, addr, len, seed } => {
                let s = self.pick(s);
                let data = pattern(seed, len);
                let depth0 = self.spaces[s].root().depth;
                let shared_any = self.model.shares(s);
                let kinds = self.model_write(s, addr, &data);
                self.spaces[s].write(addr, &data).expect("write");
                let d = delta(&before, &self.layer().counters());
                let n = pieces(addr, len).len() as u64;
                let depth1 = self.spaces[s].root().depth;
                check_write(
                    &d,
                    &kinds,
                    n,
                    depth0,
                    depth1,
                    shared_any || !self.model.tainted.is_empty(),
                );
            }
            Op::Read { s, addr, len } => {
                let s = self.pick(s);
                let mut buf = vec![0xA5u8; len];
                self.spaces[s].read(addr, &mut buf).expect("read");
                let mut want = vec![0u8; len];
                let mut holes = 0;
                let mut at = 0;
                for (idx, off, n) in pieces(addr, len) {
                    match self.model.spaces[s].get(&idx) {
                        Some(p) => want[at..at + n].copy_from_slice(&p.data[off..off + n]),
                        None => holes += 1,
                    }
                    at += n;
                }
                assert!(
                    buf == want,
                    "read {len} bytes at {addr:#x}: differs from model"
                );
                let d = delta(&before, &self.layer().counters());
                assert_eq!(
                    d,
                    Counters {
                        zero_page_reads: holes,
                        ..Counters::default()
                    },
                    "a read changes nothing but the zero-page reads ({holes} holes)"
                );
            }
            Op::Fork(s) => {
                let s = self.pick(s);
                if self.spaces.len() == MAX_SPACES {
                    return;
                }
                let root = self.spaces[s].root();
                let rc0 = self.layer().refcount(root.node).expect("rc");
                let child = self.spaces[s].fork().expect("fork");
                assert_eq!(child.root(), root, "the child starts on the parent's root");
                let rc1 = self.layer().refcount(root.node).expect("rc");
                let want = if root.node.is_zero() { 0 } else { rc0 + 1 };
                assert_eq!(rc1, want, "fork takes one reference on the root");
                let d = delta(&before, &self.layer().counters());
                assert_eq!(
                    d,
                    Counters {
                        forks: 1,
                        ..Counters::default()
                    },
                    "fork allocates and copies nothing"
                );
                self.spaces.push(child);
                let m = self.model.spaces[s].clone();
                self.model.tainted.extend(m.values().map(|p| p.group));
                self.model.spaces.push(m);
            }
            Op::Release { s, by_drop } => {
                let s = self.pick(s);
                let sp = self.spaces.remove(s);
                self.model.spaces.remove(s);
                if by_drop {
                    drop(sp);
                } else {
                    sp.release().expect("release");
                }
                let d = delta(&before, &self.layer().counters());
                assert_eq!(
                    d,
                    Counters {
                        freed: d.freed,
                        ..Counters::default()
                    },
                    "release only frees"
                );
            }
            Op::New => {
                if self.spaces.len() < MAX_SPACES {
                    self.spaces.push(self.layer().space());
                    self.model.spaces.push(MSpace::new());
                }
                assert_eq!(before, self.layer().counters(), "a new space costs nothing");
            }
            Op::Commit => self.commit(),
        }
    }

    fn commit(&mut self) {
        let before = self.layer().counters();
        self.layer().commit().expect("commit");
        assert_eq!(before, self.layer().counters(), "commit changes no counter");
        self.freed_at_commit = before.freed;
        let mut still = HashSet::new();
        for m in &self.model.spaces {
            for (idx, p) in m {
                if self.model.holders(*idx, p.group) > 1 {
                    still.insert(p.group);
                }
            }
        }
        self.model.tainted = still;
    }

    /// Applies a write to the model; says how its pages split.
    fn model_write(&mut self, s: usize, addr: u64, data: &[u8]) -> WriteKinds {
        let mut k = WriteKinds::default();
        let mut at = 0;
        for (idx, off, n) in pieces(addr, data.len()) {
            let cur = self.model.spaces[s].get(&idx).cloned();
            let mut page = match cur {
                None => {
                    k.holes += 1;
                    MPage {
                        data: Box::new([0u8; PAGE_SIZE]),
                        group: self.model.fresh(),
                    }
                }
                Some(mut p) if self.model.holders(idx, p.group) > 1 => {
                    assert!(
                        self.model.tainted.contains(&p.group),
                        "model: shared is tainted"
                    );
                    k.shared += 1;
                    p.group = self.model.fresh();
                    p
                }
                Some(mut p) if self.model.tainted.contains(&p.group) => {
                    // Shared at some point since the last commit: copied (see check_write).
                    k.tainted += 1;
                    p.group = self.model.fresh();
                    p
                }
                Some(p) => {
                    k.clean += 1;
                    p
                }
            };
            page.data[off..off + n].copy_from_slice(&data[at..at + n]);
            self.model.spaces[s].insert(idx, page);
            at += n;
        }
        k
    }

    /// Everything the model and the store must agree on, now.
    fn verify(&mut self) {
        let before = self.layer().counters();
        let roots: Vec<MapRoot> = self.spaces.iter().map(|sp| sp.root()).collect();
        let freed_at_commit = self.freed_at_commit;
        let (rc, pending) = self.layer().with_store(|s| {
            let rc = recount(s, &roots);
            let pending = check_counts(s, &rc.refs);
            (rc, pending)
        });
        let base = &self.rig.base;
        assert_eq!(
            before.allocated - before.freed - (base.allocated - base.freed),
            rc.refs.len() as u64,
            "pages allocated and not freed = pages reachable from the live spaces"
        );
        assert_eq!(
            pending,
            before.freed - freed_at_commit,
            "pending pages = pages freed since the last commit"
        );
        // Sharing: each (index, group) of the model is one store page, distinct groups are
        // distinct pages.
        let mut phys: HashMap<(u64, u64), PageNo> = HashMap::new();
        let mut back: HashMap<PageNo, (u64, u64)> = HashMap::new();
        for (k, (sp, m)) in self.spaces.iter().zip(&self.model.spaces).enumerate() {
            let got = &rc.data[k];
            let idxs: Vec<u64> = got.keys().copied().collect();
            let want: Vec<u64> = m.keys().copied().collect();
            assert_eq!(idxs, want, "space {k}: pages mapped vs model");
            assert_eq!(sp.resident_pages().expect("resident"), m.len() as u64);
            assert_eq!(
                sp.mapped().expect("mapped"),
                rc.levels[k],
                "space {k}: mapped() is every reachable page with its level"
            );
            let mut buf = vec![0u8; PAGE_SIZE];
            for (idx, p) in m {
                let page = got[idx];
                assert_eq!(*phys.entry((*idx, p.group)).or_insert(page), page);
                assert_eq!(
                    *back.entry(page).or_insert((*idx, p.group)),
                    (*idx, p.group)
                );
                assert_eq!(sp.page_at(idx * PS).expect("page_at"), page);
                sp.read(idx * PS, &mut buf).expect("read");
                assert!(buf[..] == p.data[..], "space {k}: page {idx} differs");
            }
        }
        assert_eq!(
            before,
            self.layer().counters(),
            "reading resident pages changes no counter"
        );
    }

    /// Releases everything; the store must be back where it started.
    fn finish(mut self) {
        while let Some(sp) = self.spaces.pop() {
            self.model.spaces.pop();
            if self.spaces.len().is_multiple_of(2) {
                sp.release().expect("release");
            } else {
                drop(sp);
            }
            self.verify();
        }
        self.commit();
        self.verify();
        let c = self.layer().counters();
        let base = &self.rig.base;
        assert_eq!(
            c.allocated - c.freed,
            base.allocated - base.freed,
            "every page is freed"
        );
        assert_eq!(
            self.layer().with_store(|s| used_pages(s)),
            self.rig.base_used,
            "pages in use back to the baseline"
        );
        // fsck's count pass agrees. (A bare page store has no namespace: fsck reports the
        // root and orphan directories missing, and nothing else.)
        let rep = self.layer().with_store(check).expect("fsck");
        let bare = ["directory 1 is missing", "directory 2 is missing"];
        let left: Vec<&String> = rep
            .problems
            .iter()
            .filter(|p| !bare.contains(&p.as_str()))
            .collect();
        assert!(left.is_empty(), "fsck: {left:?}");
        assert_eq!(rep.pages_used, 0, "fsck: pages in use");
    }
}

fn check_write(d: &Counters, k: &WriteKinds, n: u64, depth0: u8, depth1: u8, shared_any: bool) {
    let what = format!("write of {n} pages {k:?}: {d:?}");
    assert_eq!(k.holes + k.shared + k.clean + k.tainted, n);
    assert_eq!((d.forks, d.zero_page_reads), (0, 0), "{what}");
    // Shared pages are copied; clean exclusive ones written in place; tainted exclusive
    // ones (shared at the last commit, through their own count or a table's) copied too.
    assert!(
        d.cow_faults >= k.shared,
        "{what}: a shared page was not copied"
    );
    let extra = d.cow_faults - k.shared;
    assert_eq!(
        extra, k.tainted,
        "{what}: tainted pages copied, clean ones not"
    );
    assert_eq!(d.in_place_writes, k.clean, "{what}");
    // A copy of an exclusive page frees the original, and so does the copy of a table
    // this space held alone but shared at the last commit; nothing else is freed.
    assert!(
        d.freed >= extra && d.freed <= extra + d.table_copies,
        "{what}"
    );
    // Allocations: one page per hole and per fault, one per table copied, and new tables
    // only where the write reached a hole (or grew the map).
    let fixed = k.holes + d.cow_faults + d.table_copies;
    assert!(d.allocated >= fixed, "{what}");
    let new_tables = d.allocated - fixed;
    if k.holes == 0 {
        assert_eq!(depth1, depth0, "{what}: no hole, no growth");
        assert_eq!(new_tables, 0, "{what}: no hole, no new table");
    }
    assert!(
        new_tables <= u64::from(depth1 - depth0) + k.holes * u64::from(depth1),
        "{what}: too many new tables"
    );
    // Table copies: at most one per level per page written, and none at all when the space
    // shares nothing (every table has a page under it, so an unshared space has no shared
    // table).
    assert!(d.table_copies <= n * u64::from(depth1), "{what}");
    if !shared_any {
        assert_eq!(
            d.table_copies, 0,
            "{what}: a table copied though nothing was shared since the last commit"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn page_layer_matches_the_model(
        anon in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut run = Run::new(if anon { Backing::Anon } else { Backing::Dir });
        for op in &ops {
            run.apply(op);
            run.verify();
        }
        run.finish();
    }
}

// ---------------------------------------------------------------------------------------
// The key facts, directly.

/// Checks stored counts against a recount from `spaces`' roots; returns the recount.
fn recheck(layer: &PageLayer, spaces: &[&AddressSpace]) -> Recount {
    let roots: Vec<MapRoot> = spaces.iter().map(|s| s.root()).collect();
    layer.with_store(|s| {
        let rc = recount(s, &roots);
        check_counts(s, &rc.refs);
        rc
    })
}

fn populate(a: &mut AddressSpace, pages: u64) {
    for i in 0..pages {
        a.write(i * PS, &i.to_le_bytes()).expect("write");
    }
}

fn read_u64(a: &AddressSpace, addr: u64) -> u64 {
    let mut b = [0u8; 8];
    a.read(addr, &mut b).expect("read");
    u64::from_le_bytes(b)
}

#[test]
fn fork_of_10000_pages_takes_one_reference_and_allocates_nothing() {
    let rig = Rig::new();
    let layer = &rig.layer;
    let mut a = layer.space();
    populate(&mut a, 10_000);
    layer.commit().expect("commit");
    let before_rc = recheck(layer, &[&a]);
    let root = a.root();
    assert_eq!(
        root.depth, 2,
        "10,000 pages need two levels of 510-entry tables"
    );
    assert_eq!(layer.refcount(root.node).expect("rc"), 1);
    let c0 = layer.counters();
    let b = a.fork().expect("fork");
    let d = delta(&c0, &layer.counters());
    assert_eq!(
        d,
        Counters {
            forks: 1,
            ..Counters::default()
        },
        "fork allocates, copies and frees nothing"
    );
    assert_eq!(layer.refcount(root.node).expect("rc"), 2);
    // Only the root's count moved: every other page keeps its count.
    let after_rc = recheck(layer, &[&a, &b]);
    for (p, n) in &before_rc.refs {
        let want = if *p == root.node { n + 1 } else { *n };
        assert_eq!(after_rc.refs[p], want, "page {}", p.0);
    }
    assert_eq!(after_rc.refs.len(), before_rc.refs.len());
    assert_eq!(after_rc.data[0], after_rc.data[1], "every page shared");
    assert_eq!(a.mapped().expect("mapped"), b.mapped().expect("mapped"));
    assert_eq!(b.resident_pages().expect("resident"), 10_000);
    assert_eq!(read_u64(&b, 9_999 * PS), 9_999);
    drop(b);
    assert_eq!(layer.refcount(root.node).expect("rc"), 1);
    assert_eq!(
        layer.counters().freed,
        c0.freed,
        "dropping the fork frees nothing"
    );
}

#[test]
fn first_write_after_fork_copies_one_page_and_the_table_path() {
    for backing in [Backing::Dir, Backing::Anon] {
        first_write_after_fork(backing);
    }
}

fn first_write_after_fork(backing: Backing) {
    let rig = Rig::on(backing);
    let layer = &rig.layer;
    // (pages, a far page, the page written, a page under another leaf)
    for (pages, far, t, other) in [
        (2_000u64, None, 1_500u64, 0u64),
        (600, Some(1u64 << 40), 300, 550),
    ] {
        let mut a = layer.space();
        populate(&mut a, pages);
        if let Some(far) = far {
            a.write(far, &far.to_le_bytes()).expect("write far");
        }
        let depth = u64::from(a.root().depth);
        assert_eq!(depth, if far.is_some() { 4 } else { 2 });
        let mut b = a.fork().expect("fork");
        let old = a.page_at(t * PS).expect("page_at");
        let c0 = layer.counters();
        b.write(t * PS + 8, b"child").expect("write");
        let d = delta(&c0, &layer.counters());
        assert_eq!(d.cow_faults, 1, "one copy-on-write fault");
        assert_eq!(
            d.table_copies, depth,
            "the table path is copied: one per level"
        );
        assert_eq!(d.allocated, 1 + depth);
        assert_eq!((d.in_place_writes, d.freed), (0, 0));
        assert_eq!(a.page_at(t * PS).expect("page_at"), old);
        assert_ne!(b.page_at(t * PS).expect("page_at"), old);
        assert_eq!(read_u64(&a, t * PS + 8), 0, "the parent is unchanged");
        let mut got = [0u8; 16];
        b.read(t * PS, &mut got).expect("read");
        assert_eq!(&got[..8], &t.to_le_bytes());
        assert_eq!(&got[8..13], b"child");
        // A neighbour under the same (now copied) leaf: one fault, no table copy.
        let c1 = layer.counters();
        b.write((t + 1) * PS, b"x").expect("write");
        let d = delta(&c1, &layer.counters());
        assert_eq!((d.cow_faults, d.table_copies, d.allocated), (1, 0, 1));
        // Under another leaf: one fault, the leaf copied, the upper path is already the
        // child's own.
        let c2 = layer.counters();
        b.write(other * PS, b"y").expect("write");
        let d = delta(&c2, &layer.counters());
        assert_eq!((d.cow_faults, d.table_copies, d.allocated), (1, 1, 2));
        // The child's own pages are written in place.
        let c3 = layer.counters();
        b.write(other * PS, b"z").expect("write");
        let d = delta(&c3, &layer.counters());
        assert_eq!(
            d,
            Counters {
                in_place_writes: 1,
                ..Counters::default()
            }
        );
        recheck(layer, &[&a, &b]);
        drop(b);
        drop(a);
    }
    layer.commit().expect("commit");
    let rc = recheck(layer, &[]);
    assert!(rc.refs.is_empty());
    let c = layer.counters();
    assert_eq!(c.allocated, c.freed, "everything freed");
}

#[test]
fn zero_page_reads_of_a_huge_sparse_range_allocate_nothing() {
    let rig = Rig::on(Backing::Anon);
    let layer = &rig.layer;
    let mut a = layer.space();
    let c0 = layer.counters();
    let probes = 4096u64;
    let mut one = [0xFFu8; 1];
    for k in 0..probes {
        a.read(k * (ADDR_LIMIT / probes) + k % PS, &mut one)
            .expect("read");
        assert_eq!(one[0], 0);
    }
    let mut big = vec![0xFFu8; 16 * PAGE_SIZE + 100];
    a.read(ADDR_LIMIT - big.len() as u64, &mut big)
        .expect("read");
    assert!(big.iter().all(|b| *b == 0));
    let d = delta(&c0, &layer.counters());
    assert_eq!(
        d,
        Counters {
            zero_page_reads: probes + 17,
            ..Counters::default()
        },
        "every read answered by the zero page, nothing allocated"
    );
    assert_eq!(a.root(), MapRoot::EMPTY);
    // One page far away: that page and one table per level, nothing else.
    let c1 = layer.counters();
    a.write(1 << 40, b"far").expect("write");
    let depth = a.root().depth;
    assert_eq!(depth, 4);
    let d = delta(&c1, &layer.counters());
    assert_eq!(d.allocated, 1 + u64::from(depth));
    assert_eq!((d.cow_faults, d.table_copies, d.in_place_writes), (0, 0, 0));
    // Reads around it still cost nothing.
    let c2 = layer.counters();
    let mut buf = vec![0xFFu8; 3 * PAGE_SIZE];
    a.read((1 << 40) - PS, &mut buf).expect("read");
    assert!(buf[..PAGE_SIZE].iter().all(|b| *b == 0));
    assert_eq!(&buf[PAGE_SIZE..PAGE_SIZE + 3], b"far");
    assert!(buf[PAGE_SIZE + 3..].iter().all(|b| *b == 0));
    let d = delta(&c2, &layer.counters());
    assert_eq!(
        d,
        Counters {
            zero_page_reads: 2,
            ..Counters::default()
        }
    );
    let rc = recheck(layer, &[&a]);
    assert_eq!(rc.refs.len(), 1 + usize::from(depth));
}

#[test]
fn releasing_the_fork_makes_the_parents_writes_in_place_again() {
    let rig = Rig::new();
    let layer = &rig.layer;
    let mut a = layer.space();
    populate(&mut a, 1_000);
    layer.commit().expect("commit");
    let home: Vec<PageNo> = [3u64, 7, 600]
        .iter()
        .map(|i| a.page_at(i * PS).expect("page_at"))
        .collect();
    let c0 = layer.counters();
    let home_root = a.root();

    // A fork that never writes: releasing it gives the root back; once that is committed
    // the parent's writes go in place. (Before the commit they should be copies: see
    // `a_write_under_a_table_shared_at_the_last_commit_copies`.)
    let b = a.fork().expect("fork");
    b.release().expect("release");
    layer.commit().expect("commit");
    let c1 = layer.counters();
    a.write(3 * PS, b"A").expect("write");
    let d = delta(&c1, &layer.counters());
    assert_eq!(
        d,
        Counters {
            in_place_writes: 1,
            ..Counters::default()
        }
    );
    assert_eq!(a.root(), home_root, "no table was copied");

    // A fork that writes: the shared pages are the parent's alone again once it is
    // released and the store committed.
    let mut b = a.fork().expect("fork");
    b.write(7 * PS, b"child").expect("write");
    let c2 = layer.counters();
    a.write(600 * PS, b"shared").expect("write");
    assert_eq!(
        layer.counters().cow_faults - c2.cow_faults,
        1,
        "while the fork lives, the parent's write to a shared page is a fault"
    );
    let rc = recheck(layer, &[&a, &b]);
    assert_eq!(
        rc.refs[&home[0]], 2,
        "page 3 sits under both copies of its leaf"
    );
    b.release().expect("release");
    // Before the commit, the pages the fork shared are the parent's alone but the last
    // commit may still see them shared (the store's rule): a write copies them.
    let c = layer.counters();
    a.write(5 * PS, b"E").expect("write");
    assert_eq!(
        delta(&c, &layer.counters()).cow_faults,
        1,
        "a page whose count fell to 1 since the last commit is copied"
    );
    layer.commit().expect("commit");
    let rc = recheck(layer, &[&a]);
    assert!(
        rc.refs.values().all(|n| *n == 1),
        "every count is back to 1"
    );
    let c3 = layer.counters();
    assert_eq!(
        c3.allocated - c3.freed,
        c0.allocated - c0.freed,
        "the fork's pages are freed, and what the parent copied replaced what it held"
    );
    a.write(3 * PS, b"B").expect("write");
    a.write(7 * PS, b"C").expect("write");
    a.write(601 * PS, b"D").expect("write");
    let d = delta(&c3, &layer.counters());
    assert_eq!(
        d,
        Counters {
            in_place_writes: 3,
            ..Counters::default()
        },
        "the parent's pages are its own again: in place, no fault, no allocation"
    );
    assert_eq!(a.page_at(3 * PS).expect("page_at"), home[0]);
    assert_eq!(a.page_at(7 * PS).expect("page_at"), home[1]);
    assert_eq!(read_u64(&a, 7 * PS) & 0xFF, u64::from(b'C'));
    assert_ne!(
        a.page_at(600 * PS).expect("page_at"),
        home[2],
        "page 600 was copied"
    );
    let mut got = [0u8; 6];
    a.read(600 * PS, &mut got).expect("read");
    assert_eq!(&got, b"shared");
}

#[test]
fn addresses_past_the_limit_are_refused() {
    let rig = Rig::new();
    let layer = &rig.layer;
    let mut a = layer.space();
    a.write(ADDR_LIMIT - 4, b"edge")
        .expect("the last bytes are writable");
    assert_eq!(a.root().depth, 5);
    let c0 = layer.counters();
    let root = a.root();
    assert!(a.write(ADDR_LIMIT - 3, b"edge").is_err());
    assert!(a.write(ADDR_LIMIT, b"x").is_err());
    assert!(a.write(u64::MAX, b"x").is_err(), "no wrap-around");
    let mut buf = [0u8; 8];
    assert!(a.read(ADDR_LIMIT - 4, &mut buf).is_err());
    assert!(a.read(u64::MAX - 2, &mut buf).is_err());
    assert_eq!(c0, layer.counters(), "a refused access changes nothing");
    assert_eq!(a.root(), root);
    a.read(ADDR_LIMIT - 8, &mut buf).expect("read");
    assert_eq!(&buf, b"\0\0\0\0edge");
}

/// A page under a table whose count fell to 1 since the last commit is copied, not written
/// in place, until the next commit: the last commit still shares it through the table. (For
/// files this is crash consistency: clone a file, which shares its map root, commit, unlink
/// the clone, write the original; a crash before the next commit brings the clone back,
/// and it must hold its old bytes: tests/crash.rs checks that on a store.)
#[test]
fn a_write_under_a_table_shared_at_the_last_commit_copies() {
    let rig = Rig::new();
    let layer = &rig.layer;
    let mut a = layer.space();
    a.write(0, b"old").expect("write");
    let b = a.fork().expect("fork");
    layer.commit().expect("commit");
    b.release().expect("release");
    let c = layer.counters();
    a.write(0, b"new").expect("write");
    let d = delta(&c, &layer.counters());
    assert_eq!(
        (d.cow_faults, d.in_place_writes),
        (1, 0),
        "the last commit shares the page (through the root table): it must be copied"
    );
}
