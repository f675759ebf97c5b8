//! Clones: a whole file (one reference on its map's root) and a page-aligned range (shared
//! subtrees where the offsets agree, pages elsewhere), each in one operation; a directory
//! tree (new inodes whose maps share the source's) in bounded steps, each its own
//! operation, with the walk's state kept between them (`TreeClone`). The caller's rights
//! are checked here: an inode number is not a capability.

use super::dir;
use super::fs::{Fs, kind_byte};
use super::inode::{Inode, Time};
use super::perm::{Cred, R, W, X};
use crate::error::{Error, Result};
use crate::ids::Ino;
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

const PS: u64 = PAGE_SIZE as u64;

/// What changed behind the kernel's back, for the adapter to invalidate once unlocked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invalidate {
    /// Directory entries replaced: (parent, name).
    pub entries: Vec<(Ino, Vec<u8>)>,
    /// File ranges rewritten: (inode, offset, length).
    pub ranges: Vec<(Ino, u64, u64)>,
    /// Files that grew: (inode, offset, the bytes there up to the new end). With the
    /// writeback cache the kernel keeps its own file size and takes a new one only from
    /// such bytes pushed into its cache.
    pub grown: Vec<(Ino, u64, Vec<u8>)>,
}

/// How to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneOpts {
    /// Replace an existing destination (a file, or an empty directory for a tree).
    pub force: bool,
    /// Clone a directory tree.
    pub recursive: bool,
    /// The caller's umask, for the new file's mode.
    pub umask: u32,
}

/// How much one step of a tree clone may do before it lets other requests in: whichever
/// limit comes first (at least one entry).
#[derive(Debug, Clone, Copy)]
pub struct StepBudget {
    /// Entries copied.
    pub entries: u64,
    /// Time spent.
    pub time: Option<Duration>,
}

impl StepBudget {
    /// No limit: the whole tree in one step.
    pub const UNLIMITED: StepBudget = StepBudget {
        entries: u64::MAX,
        time: None,
    };
}

/// Source entries read from a directory at once: enough to spread the cost of a read,
/// few enough that a level of the walk stays small.
const BATCH: usize = 256;

/// What `Fs::clone_start` began: a file clone (done), or a tree clone whose top directory
/// is in place, to fill with `Fs::clone_step`. Both carry what the kernel must forget.
#[derive(Debug)]
pub enum Begun {
    Done(Invalidate),
    Tree(Box<TreeClone>, Invalidate),
}

/// One directory being copied: the source, its copy, and how far the copy has got.
#[derive(Debug)]
struct Level {
    src: Ino,
    into: Ino,
    /// The name `src` was met under, in the level below (for `check_cycle`).
    name: Vec<u8>,
    /// The key of the last entry copied: entries go in key order, the key is a stable
    /// readdir cookie, so this is where to read on, whatever changed meanwhile.
    after: Option<u64>,
    /// Entries read after `after`, valid in step `read_in` only (the source may change
    /// between steps); `more`: the directory may hold more after them.
    batch: VecDeque<dir::Entry>,
    read_in: u64,
    more: bool,
    /// The step that made `into`.
    made_in: u64,
    /// `into`'s change time and entry count as the walk left them: while they hold, no
    /// one else has added a name to it (every change of names sets the change time).
    left: Option<(Time, u64)>,
    /// Changed behind the walk once: names are looked up before each insert from then on.
    shared: bool,
}

impl Level {
    fn new(src: Ino, into: Ino, name: Vec<u8>, made_in: u64) -> Level {
        Level {
            src,
            into,
            name,
            after: None,
            batch: VecDeque::new(),
            read_in: 0,
            more: false,
            made_in,
            left: None,
            shared: false,
        }
    }
}

/// A hard-linked source file met in the tree: its copy, and its links still to meet.
#[derive(Debug, Clone, Copy)]
struct Link {
    copy: Ino,
    left: u32,
}

/// A change a step made to the walk's state, to put back if the step fails.
#[derive(Debug)]
enum Undo {
    Pushed,
    Popped(Level),
    /// The top level's cursor before.
    After(Option<u64>),
    Link(Ino, Option<Link>),
}

/// The budget of the step running.
struct Walk {
    budget: StepBudget,
    start: Instant,
    done: u64,
    last_key: Option<u64>,
}

impl Walk {
    fn over(&self) -> bool {
        self.done > 0
            && (self.done >= self.budget.entries
                || self.budget.time.is_some_and(|t| self.start.elapsed() >= t))
    }
}

/// A tree clone in progress (`Fs::clone_start`, then `Fs::clone_step` until it says
/// done): the walk's state, kept between steps outside the lock. Its memory grows with
/// the tree's depth (a level each, holding at most a batch of entries), with the
/// hard-linked files whose other links are still to be met, and with the changed inodes
/// the kernel holds; not with the number of files.
#[derive(Debug)]
pub struct TreeClone {
    cred: Cred,
    /// `Fs::generation` at the start: a rollback changes it.
    generation: u64,
    top: Ino,
    stack: Vec<Level>,
    /// Source directories on the stack, with how many times (moves between steps can
    /// put one there twice).
    on_stack: HashMap<Ino, u32>,
    links: HashMap<Ino, Link>,
    /// Inode numbers this clone made, as runs `start..end`: numbers are never reused and
    /// handed out in order, so a run only breaks where someone else created a file.
    made: Vec<(u64, u64)>,
    /// Inodes changed while the kernel held them: (inode, is a directory).
    touched: HashSet<(Ino, bool)>,
    copied: u64,
    step: u64,
    undo: Vec<Undo>,
}

impl TreeClone {
    /// A walk that has made only `top`, the copy's top directory, for `cred`.
    fn new(cred: Cred, generation: u64, top: Ino) -> TreeClone {
        TreeClone {
            cred,
            generation,
            top,
            stack: Vec::new(),
            on_stack: HashMap::new(),
            links: HashMap::new(),
            made: Vec::new(),
            touched: HashSet::new(),
            copied: 0,
            step: 0,
            undo: Vec::new(),
        }
    }

    /// The top directory of the copy.
    pub fn top(&self) -> Ino {
        self.top
    }

    /// Entries copied so far.
    pub fn copied(&self) -> u64 {
        self.copied
    }

    /// Inodes the clone changed while the kernel held them, whose cached attributes (and
    /// for a directory, listing) the kernel must drop: (inode, is a directory).
    pub fn touched(&self) -> Vec<(Ino, bool)> {
        let mut v: Vec<(Ino, bool)> = self.touched.iter().copied().collect();
        v.sort();
        v
    }

    fn push(&mut self, l: Level) {
        *self.on_stack.entry(l.src).or_insert(0) += 1;
        self.stack.push(l);
    }

    fn pop(&mut self) -> Option<Level> {
        let l = self.stack.pop()?;
        if let Some(n) = self.on_stack.get_mut(&l.src) {
            *n -= 1;
            if *n == 0 {
                self.on_stack.remove(&l.src);
            }
        }
        Some(l)
    }

    fn pop_level(&mut self) {
        if let Some(l) = self.pop() {
            self.undo.push(Undo::Popped(l));
        }
    }

    fn note_made(&mut self, ino: Ino) {
        match self.made.last_mut() {
            Some((_, end)) if *end == ino.0 => *end += 1,
            _ => self.made.push((ino.0, ino.0 + 1)),
        }
    }

    fn is_made(&self, ino: Ino) -> bool {
        let i = self.made.partition_point(|r| r.1 <= ino.0);
        self.made.get(i).is_some_and(|r| r.0 <= ino.0)
    }

    /// Puts the state back as it was before the failed step; `mark`: the runs of made
    /// numbers (their count and the last) and the count copied then.
    fn rewind(&mut self, mark: (usize, Option<(u64, u64)>, u64)) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Pushed => {
                    self.pop();
                }
                Undo::Popped(l) => self.push(l),
                Undo::After(a) => {
                    if let Some(l) = self.stack.last_mut() {
                        l.after = a;
                    }
                }
                Undo::Link(src, old) => match old {
                    Some(l) => {
                        self.links.insert(src, l);
                    }
                    None => {
                        self.links.remove(&src);
                    }
                },
            }
        }
        let (n, last, copied) = mark;
        self.made.truncate(n);
        if let (Some(r), Some(l)) = (self.made.last_mut(), last) {
            *r = l;
        }
        self.copied = copied;
    }
}

impl Fs {
    /// Resolves `path` (relative to the root) as `cred` would: search permission on every
    /// directory on the way. `..` follows the parent pointer.
    pub fn resolve(&mut self, cred: &Cred, path: &[u8]) -> Result<Ino> {
        let mut cur = Ino::ROOT;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let d = self.get(cur)?;
            if !d.is_dir() {
                return Err(Error::NotDir);
            }
            if !cred.may(&d, X) {
                return Err(Error::Access);
            }
            cur = match comp {
                b".." => Ino(d.parent),
                _ => {
                    dir::lookup(&mut self.store, &d, comp)?
                        .ok_or(Error::NotFound)?
                        .ino
                }
            };
        }
        Ok(cur)
    }

    /// Resolves the source of a clone and checks it is the inode the caller stat'ed.
    fn clone_source(&mut self, cred: &Cred, path: &[u8], ino: Ino) -> Result<(Ino, Inode)> {
        let src = self.resolve(cred, path)?;
        if src != ino {
            return Err(Error::NotFound);
        }
        Ok((src, self.get(src)?))
    }

    /// Checks that `cred` may create `name` in `parent`; returns what is there now.
    fn clone_target(
        &mut self,
        cred: &Cred,
        parent: Ino,
        name: &[u8],
        force: bool,
    ) -> Result<Option<dir::Entry>> {
        dir::check_name(name)?;
        let d = self.get(parent)?;
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        if !cred.may(&d, W | X) {
            return Err(Error::Access);
        }
        let old = dir::lookup(&mut self.store, &d, name)?;
        if let Some(e) = &old {
            if !force {
                return Err(Error::Exists);
            }
            let t = self.get(e.ino)?;
            let sticky = d.mode & libc::S_ISVTX != 0;
            if sticky && cred.uid != 0 && cred.uid != t.uid && cred.uid != d.uid {
                return Err(Error::NotPermitted);
            }
        }
        Ok(old)
    }

    /// Links new inode `ino` as `parent/name`, replacing `old` if given.
    fn place(
        &mut self,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        mode: u32,
        old: Option<dir::Entry>,
        inv: &mut Invalidate,
    ) -> Result<()> {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if let Some(e) = old {
            self.remove_target(parent, name, e.ino, is_dir)?;
            inv.entries.push((parent, name.to_vec()));
        }
        let mut d = self.get(parent)?;
        dir::insert(&mut self.store, &mut d, name, ino, kind_byte(mode))?;
        if is_dir {
            d.nlink += 1;
        }
        let now = Time::now();
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)
    }

    /// `cowfs clone SRC DST`: a new file `parent/name` sharing every page of the file at
    /// `src_path`; with `recursive`, a directory tree, all in this one operation (so it
    /// appears complete or not at all). The mount runs a tree clone in steps instead
    /// (`clone_start`, `clone_step`).
    #[allow(clippy::too_many_arguments)]
    pub fn clone_path(
        &mut self,
        cred: &Cred,
        src_path: &[u8],
        src_ino: Ino,
        parent: Ino,
        name: &[u8],
        opts: CloneOpts,
    ) -> Result<Invalidate> {
        match self.clone_start(cred, src_path, src_ino, parent, name, opts)? {
            Begun::Done(inv) => Ok(inv),
            Begun::Tree(mut t, inv) => {
                while self.clone_step(&mut t, StepBudget::UNLIMITED)? {}
                Ok(inv)
            }
        }
    }

    /// The first operation of a clone: a file clone whole, or a tree clone's checks and
    /// its top directory (see `clone_step`).
    pub fn clone_start(
        &mut self,
        cred: &Cred,
        src_path: &[u8],
        src_ino: Ino,
        parent: Ino,
        name: &[u8],
        opts: CloneOpts,
    ) -> Result<Begun> {
        let (src, si) = self.clone_source(cred, src_path, src_ino)?;
        if si.is_dir() {
            if !opts.recursive {
                return Err(Error::IsDir);
            }
            return self.tree_start(cred, src, parent, name, opts);
        }
        if !si.is_file() {
            return Err(Error::Invalid(
                "only regular files and directories can be cloned",
            ));
        }
        if !cred.may(&si, R) {
            return Err(Error::Access);
        }
        let old = self.clone_target(cred, parent, name, opts.force)?;
        if old.as_ref().is_some_and(|e| e.ino == src) {
            return Ok(Begun::Done(Invalidate::default()));
        }
        let now = Time::now();
        let mut ni = Inode {
            mode: libc::S_IFREG | (si.mode & 0o777 & !opts.umask),
            uid: cred.uid,
            gid: self.new_gid(cred, parent)?,
            nlink: 1,
            size: si.size,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent: parent.0,
            ..Default::default()
        };
        ni.map = si.map.share(&mut self.store)?;
        // Inline bytes are copied with the record (at most a few hundred of them).
        ni.inline = si.inline.clone();
        let ino = self.alloc_ino()?;
        self.put(ino, &ni)?;
        let mut inv = Invalidate::default();
        self.place(parent, name, ino, ni.mode, old, &mut inv)?;
        Ok(Begun::Done(inv))
    }

    fn new_gid(&mut self, cred: &Cred, parent: Ino) -> Result<u32> {
        let d = self.get(parent)?;
        Ok(if d.mode & libc::S_ISGID != 0 {
            d.gid
        } else {
            cred.gid
        })
    }

    /// The first step of a tree clone: checks, then the top directory, empty, in place at
    /// `parent/name` (visible from here on, as `cp -a`'s is). `clone_step` fills it.
    fn tree_start(
        &mut self,
        cred: &Cred,
        src: Ino,
        parent: Ino,
        name: &[u8],
        opts: CloneOpts,
    ) -> Result<Begun> {
        if self.is_under(parent, src)? {
            return Err(Error::Invalid("destination inside the source"));
        }
        let old = self.clone_target(cred, parent, name, opts.force)?;
        let (top, si) = self.copy_node(cred, src, parent)?;
        let mut inv = Invalidate::default();
        self.place(parent, name, top, si.mode, old, &mut inv)?;
        let mut t = TreeClone::new(cred.clone(), self.generation(), top);
        t.note_made(top);
        let mut lv = Level::new(src, top, Vec::new(), 0);
        lv.left = Some((self.peek(top)?.ctime, 0));
        t.push(lv);
        Ok(Begun::Tree(Box::new(t), inv))
    }

    /// One step of tree clone `t`: copies entries until the tree is done or `budget` is
    /// spent; true while there is more to do. Run each step as an operation of its own:
    /// one that fails is undone, the walk's state included, so the clone can go on or stop.
    /// Between steps anything may happen: each source directory is copied as it is when
    /// the walk reads it (like `cp -a`); a copy removed meanwhile (or swept away by a
    /// rollback) fails the step with ENOENT, a name created in it with EEXIST.
    pub fn clone_step(&mut self, t: &mut TreeClone, budget: StepBudget) -> Result<bool> {
        t.step += 1;
        t.undo.clear();
        let mark = (t.made.len(), t.made.last().copied(), t.copied);
        let r = self.clone_walk(t, budget);
        if r.is_err() {
            t.rewind(mark);
        }
        t.undo.clear();
        r
    }

    fn clone_walk(&mut self, t: &mut TreeClone, budget: StepBudget) -> Result<bool> {
        if self.generation() != t.generation {
            // A rollback replaced the live tree, and the copy with it.
            return Err(Error::NotFound);
        }
        let mut w = Walk {
            budget,
            start: Instant::now(),
            done: 0,
            last_key: None,
        };
        while let Some(top) = t.stack.last() {
            let into = top.into;
            let mut d = self.live_dir(into)?;
            let entries = d.entries;
            let depth = t.stack.len();
            let r = self.fill(t, &mut d, &mut w);
            if matches!(r, Ok(false)) && t.stack.len() == depth {
                // Done with this directory.
                t.pop_level();
            }
            if d.entries != entries {
                self.put(into, &d)?;
                if self.is_in_use(into) {
                    t.touched.insert((into, true));
                }
            }
            if r? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Copies entries of the top level's source into `d`, its copy, until the level is
    /// done (popped), a subdirectory was copied (pushed), or the budget is spent (true).
    fn fill(&mut self, t: &mut TreeClone, d: &mut Inode, w: &mut Walk) -> Result<bool> {
        let k = t.stack.len() - 1;
        // Names someone else added may clash with names still to copy: once the copy was
        // changed behind the walk (it is not as the walk left it), every name is looked up.
        let lv = &mut t.stack[k];
        if lv.made_in != t.step && lv.left != Some((d.ctime, d.entries)) {
            lv.shared = true;
        }
        let fresh = !lv.shared;
        let r = self.fill_from(t, k, d, w, fresh);
        t.stack[k].left = Some((d.ctime, d.entries));
        r
    }

    fn fill_from(
        &mut self,
        t: &mut TreeClone,
        k: usize,
        d: &mut Inode,
        w: &mut Walk,
        fresh: bool,
    ) -> Result<bool> {
        loop {
            let lv = &t.stack[k];
            if lv.read_in != t.step || (lv.batch.is_empty() && lv.more) {
                let (batch, more) = self.entries_after(lv.src, lv.after)?;
                let lv = &mut t.stack[k];
                (lv.batch, lv.more, lv.read_in) = (batch, more, t.step);
            }
            let Some(e) = t.stack[k].batch.front() else {
                return Ok(false);
            };
            if w.over() && w.last_key != Some(e.key) {
                return Ok(true);
            }
            let Some(e) = t.stack[k].batch.pop_front() else {
                return Ok(false);
            };
            let into = t.stack[k].into;
            t.undo.push(Undo::After(t.stack[k].after));
            t.stack[k].after = Some(e.key);
            (w.last_key, w.done) = (Some(e.key), w.done + 1);
            t.copied += 1;
            if !fresh && dir::lookup(&mut self.store, d, &e.name)?.is_some() {
                return Err(Error::Exists);
            }
            let (child, is_dir) = self.copy_entry(t, e.ino, into)?;
            dir::insert(&mut self.store, d, &e.name, child, e.kind)?;
            if is_dir {
                d.nlink += 1;
                self.check_cycle(t, e.ino)?;
                t.push(Level::new(e.ino, child, e.name, t.step));
                t.undo.push(Undo::Pushed);
                return Ok(false);
            }
        }
    }

    /// Directory `ino` if it is still linked (a copy the user removed between steps is not).
    fn live_dir(&mut self, ino: Ino) -> Result<Inode> {
        let d = self.get(ino)?;
        if !d.is_dir() || d.nlink == 0 {
            return Err(Error::NotFound);
        }
        Ok(d)
    }

    /// Up to a batch of directory `src`'s entries with keys above `after`, in key order,
    /// never ending between two entries of one key; and whether more may follow. A source
    /// directory removed meanwhile has none (as readdir of a removed directory).
    fn entries_after(
        &mut self,
        src: Ino,
        after: Option<u64>,
    ) -> Result<(VecDeque<dir::Entry>, bool)> {
        let s = match self.peek(src) {
            Ok(s) if s.is_dir() && s.nlink > 0 => s,
            Ok(_) | Err(Error::NotFound) => return Ok((VecDeque::new(), false)),
            Err(e) => return Err(e),
        };
        let mut out: VecDeque<dir::Entry> = VecDeque::new();
        let mut more = false;
        dir::for_each(&mut self.store, &s, after, &mut |e| {
            if out.len() >= BATCH && out.back().is_some_and(|l| l.key != e.key) {
                more = true;
                return true;
            }
            out.push_back(e.clone());
            false
        })?;
        Ok((out, more))
    }

    /// Refuses to walk into source directory `ino` when it is one of the clone's own
    /// copies (the copy was moved into the source: the walk would never end), or when it
    /// is on the walk's stack and every level up to it is still linked as the walk met
    /// it: a cycle, which only a damaged store has.
    fn check_cycle(&mut self, t: &TreeClone, ino: Ino) -> Result<()> {
        if t.is_made(ino) {
            return Err(Error::Invalid("destination inside the source"));
        }
        if !t.on_stack.contains_key(&ino) {
            return Ok(());
        }
        let Some(j) = t.stack.iter().rposition(|l| l.src == ino) else {
            return Ok(());
        };
        for w in t.stack[j..].windows(2) {
            let p = self.peek(w[0].src)?;
            match dir::lookup(&mut self.store, &p, &w[1].name)? {
                Some(e) if e.ino == w[1].src => {}
                // Moved between steps: met again, copied again, as `cp -a` would.
                _ => return Ok(()),
            }
        }
        Err(Error::corrupt(
            0,
            format!("directory {} is its own ancestor", ino.0),
        ))
    }

    /// Copies source inode `src` into the tree (its parent will be `into`); returns the
    /// copy and whether it is a directory. A file with several links is copied once: its
    /// later links in the tree get the same copy (a fresh one if that copy was unlinked
    /// between steps).
    fn copy_entry(&mut self, t: &mut TreeClone, src: Ino, into: Ino) -> Result<(Ino, bool)> {
        if let Some(l) = t.links.get(&src).copied() {
            t.undo.push(Undo::Link(src, Some(l)));
            if l.left > 1 {
                t.links.insert(
                    src,
                    Link {
                        left: l.left - 1,
                        ..l
                    },
                );
            } else {
                t.links.remove(&src);
            }
            match self.get(l.copy) {
                Ok(mut i) if i.nlink > 0 && !i.is_dir() => {
                    i.nlink += 1;
                    self.put(l.copy, &i)?;
                    if self.is_in_use(l.copy) {
                        t.touched.insert((l.copy, false));
                    }
                    return Ok((l.copy, false));
                }
                Ok(_) | Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let (ino, si) = self.copy_node(&t.cred, src, into)?;
        t.note_made(ino);
        if !si.is_dir() && si.nlink > 1 {
            let old = t.links.insert(
                src,
                Link {
                    copy: ino,
                    left: si.nlink - 1,
                },
            );
            t.undo.push(Undo::Link(src, old));
        }
        Ok((ino, si.is_dir()))
    }

    /// Makes a copy of inode `src` (sharing its maps; a directory comes out empty) for a
    /// tree clone; returns its number and the source's record.
    fn copy_node(&mut self, cred: &Cred, src: Ino, new_parent: Ino) -> Result<(Ino, Inode)> {
        let si = self.get(src)?;
        let need = if si.is_dir() { R | X } else { R };
        if !si.is_symlink() && !cred.may(&si, need) {
            return Err(Error::Access);
        }
        let devnode = matches!(si.file_type(), libc::S_IFCHR | libc::S_IFBLK);
        if devnode && cred.uid != 0 {
            return Err(Error::NotPermitted);
        }
        let mut ni = si.clone();
        ni.ctime = Time::now();
        if cred.uid != 0 {
            ni.uid = cred.uid;
            ni.gid = cred.gid;
            ni.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        ni.xattr = si.xattr.share(&mut self.store)?;
        let ino = self.alloc_ino()?;
        if !si.is_dir() {
            ni.map = si.map.share(&mut self.store)?;
            ni.nlink = 1;
            self.put(ino, &ni)?;
            return Ok((ino, si));
        }
        ni.map = MapRoot::EMPTY;
        ni.entries = 0;
        ni.dir_bits = 0;
        ni.nlink = 2;
        ni.parent = new_parent.0;
        self.put(ino, &ni)?;
        Ok((ino, si))
    }

    /// FICLONERANGE semantics: shares `len` bytes (0: to the source's end) of the file at
    /// `src_path` at `src_off` into `dst` at `dst_off`. Offsets must be page-aligned, and so
    /// must the length unless the range ends at the source's end.
    #[allow(clippy::too_many_arguments)]
    pub fn clone_range_at(
        &mut self,
        cred: &Cred,
        src_path: &[u8],
        src_ino: Ino,
        dst: Ino,
        src_off: u64,
        dst_off: u64,
        len: u64,
    ) -> Result<Invalidate> {
        let (src, si) = self.clone_source(cred, src_path, src_ino)?;
        let mut di = self.get(dst)?;
        if si.is_dir() || di.is_dir() {
            return Err(Error::IsDir);
        }
        if !si.is_file() || !di.is_file() {
            return Err(Error::Invalid("only regular files can be cloned"));
        }
        if !cred.may(&si, R) {
            return Err(Error::Access);
        }
        let len = if len == 0 {
            si.size.saturating_sub(src_off)
        } else {
            len
        };
        let end = src_off
            .checked_add(len)
            .ok_or(Error::Invalid("range overflows"))?;
        let dst_end = dst_off
            .checked_add(len)
            .ok_or(Error::Invalid("range overflows"))?;
        if end > si.size || dst_end > super::MAX_FILE_SIZE {
            return Err(Error::Invalid("range past the end of the source"));
        }
        let tail = !len.is_multiple_of(PS);
        if !src_off.is_multiple_of(PS) || !dst_off.is_multiple_of(PS) || (tail && end != si.size) {
            return Err(Error::Invalid("offsets and length must be page-aligned"));
        }
        if tail && dst_end < di.size {
            return Err(Error::Invalid("unaligned end inside the destination"));
        }
        if src == dst && src_off < dst_end && dst_off < end {
            return Err(Error::Invalid("overlapping ranges in one file"));
        }
        let old_size = di.size;
        if let Some(d) = &si.inline {
            // No pages to share: the bytes are copied (a destination that grows past the
            // inline capacity moves to pages on the way).
            let a = (src_off as usize).min(d.len());
            let b = (end as usize).min(d.len());
            self.write(dst, dst_off, &d[a..b])?;
            di = self.get(dst)?;
        } else {
            self.uninline(&mut di)?;
            let from = if src == dst { None } else { Some(&si.map) };
            di.map.clone_range(
                &mut self.store,
                from,
                src_off / PS,
                dst_off / PS,
                len.div_ceil(PS),
            )?;
        }
        let now = Time::now();
        di.size = di.size.max(dst_end);
        di.mtime = now;
        di.ctime = now;
        self.put(dst, &di)?;
        let mut grown = Vec::new();
        if dst_end > old_size {
            let at = (dst_end - 1) / PS * PS;
            grown.push((dst, at, self.read(dst, at, (dst_end - at) as u32)?));
        }
        Ok(Invalidate {
            entries: Vec::new(),
            ranges: vec![(dst, dst_off, len)],
            grown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk_state() -> TreeClone {
        TreeClone::new(Cred::root(), 0, Ino(100))
    }

    #[test]
    fn made_numbers_are_kept_as_runs() {
        let mut t = walk_state();
        for i in [100, 101, 102, 110, 111, 200] {
            t.note_made(Ino(i));
        }
        assert_eq!(t.made, vec![(100, 103), (110, 112), (200, 201)]);
        for i in [100, 102, 110, 111, 200] {
            assert!(t.is_made(Ino(i)), "{i}");
        }
        for i in [99, 103, 109, 112, 199, 201] {
            assert!(!t.is_made(Ino(i)), "{i}");
        }
    }

    #[test]
    fn rewind_puts_the_walk_back_as_before_the_step() {
        let mut t = walk_state();
        t.push(Level::new(Ino(10), Ino(100), Vec::new(), 0));
        t.note_made(Ino(100));
        let mark = (t.made.len(), t.made.last().copied(), t.copied);
        // A step: the cursor moves, a child is pushed and finished, a link is noted,
        // the parent finishes too.
        t.undo.push(Undo::After(None));
        t.stack[0].after = Some(5);
        t.push(Level::new(Ino(11), Ino(101), b"sub".to_vec(), 1));
        t.undo.push(Undo::Pushed);
        t.note_made(Ino(101));
        t.links.insert(
            Ino(12),
            Link {
                copy: Ino(102),
                left: 1,
            },
        );
        t.undo.push(Undo::Link(Ino(12), None));
        t.copied = 3;
        t.pop_level();
        t.pop_level();
        assert!(t.stack.is_empty() && t.on_stack.is_empty());
        t.rewind(mark);
        assert_eq!(t.stack.len(), 1);
        assert_eq!((t.stack[0].src, t.stack[0].after), (Ino(10), None));
        assert_eq!(t.on_stack.get(&Ino(10)), Some(&1));
        assert!(!t.on_stack.contains_key(&Ino(11)));
        assert!(t.links.is_empty());
        assert_eq!(t.made, vec![(100, 101)]);
        assert_eq!(t.copied, 0);
    }
}
