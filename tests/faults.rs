//! Fault injection: every page allocation (ENOSPC) and every write or sync (EIO) fails in
//! turn inside snapshot create, delete and rollback (with the reclaim steps after them),
//! a tree clone, renames (plain, over a file, over an empty directory, exchange; in
//! shared directories, in the root and in a writable snapshot), an open followed by a
//! failing truncate, and an unlink of an open file with its release.
//! A tree clone is also run as the mount runs it: a first operation that places the top
//! directory, then small steps, each an operation of its own; there the promise is per
//! step: a failed step leaves the namespace as it was before that step (the partial copy
//! made by the steps before stays), and the clone goes on from there when tried again.
//! After each failure the namespace (walked through the Fs API) equals the model of the
//! state before the step, the in-memory snapshot list equals the store's, the open handles
//! are as before, the step works when tried again, and fsck finds a clean store. A failure
//! inside a commit leaves the store refusing changes; reopened from what was durable (a
//! crash) or from everything written (a restart) it holds the state before or after the
//! step, and fsck finds it clean.

use cowfs::check::check;
use cowfs::ids::{Fh, Ino};
use cowfs::ns::perm::Cred;
use cowfs::ns::{Atime, Begun, CloneOpts, Ctx, Fs, SetAttr, StepBudget, TreeClone, snap_load};
use cowfs::page::{Backend, CrashBackend, FaultBackend, Faults};
use cowfs::store::Store;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

const RENAME_EXCHANGE: u32 = 2;
/// References freed per reclaim step: small, so a table takes several steps.
const RECLAIM_BUDGET: u64 = 6;
/// Entries copied per step of a stepped tree clone: small, so the clone takes several.
const STEP_ENTRIES: u64 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { nlink: u32 },
    File { nlink: u32, data: Vec<u8> },
    Symlink(Vec<u8>),
}

/// Path -> what is there; snapshots appear under `.snapshots/NAME/`.
type Model = BTreeMap<String, Node>;

/// The two disk images of a store.
#[derive(Clone)]
struct Disk {
    pages: Vec<u8>,
    journal: Vec<u8>,
}

type Image = Arc<Mutex<Vec<u8>>>;

fn bytes(i: &Image) -> Vec<u8> {
    i.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A device in memory that keeps two images for the test: what the last sync made
/// durable (a crash), and, once dropped, everything written (the daemon stopped after
/// the error, the machine kept running).
struct Twin {
    live: Vec<u8>,
    durable: Image,
    at_drop: Image,
}

impl Twin {
    fn new(bytes: Vec<u8>) -> (Twin, Image, Image) {
        let (durable, at_drop) = (Image::default(), Image::default());
        *durable.lock().unwrap_or_else(PoisonError::into_inner) = bytes.clone();
        let t = Twin {
            live: bytes,
            durable: durable.clone(),
            at_drop: at_drop.clone(),
        };
        (t, durable, at_drop)
    }
}

impl Drop for Twin {
    fn drop(&mut self) {
        *self.at_drop.lock().unwrap_or_else(PoisonError::into_inner) = self.live.clone();
    }
}

impl Backend for Twin {
    fn len(&self) -> u64 {
        self.live.len() as u64
    }
    fn set_len(&mut self, len: u64) -> cowfs::Result<()> {
        self.live.resize(len as usize, 0);
        Ok(())
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> cowfs::Result<()> {
        let o = off as usize;
        let src = self
            .live
            .get(o..o + buf.len())
            .ok_or(cowfs::Error::Invalid("past the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write(&mut self, off: u64, buf: &[u8]) -> cowfs::Result<()> {
        let o = off as usize;
        let dst = self
            .live
            .get_mut(o..o + buf.len())
            .ok_or(cowfs::Error::Invalid("past the end"))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn sync(&mut self) -> cowfs::Result<()> {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner) = self.live.clone();
        Ok(())
    }
}

/// An open filesystem on fault-injecting backends.
struct Rig {
    fs: Fs,
    faults: Faults,
    /// Durable images, then images at drop: pages and journal.
    pages: (Image, Image),
    journal: (Image, Image),
}

impl Rig {
    /// What a crash now would leave.
    fn durable(&self) -> Disk {
        Disk {
            pages: bytes(&self.pages.0),
            journal: bytes(&self.journal.0),
        }
    }

    /// Stops the filesystem without a commit: what a restart of the daemon finds.
    fn stop(self) -> Disk {
        let (pages, journal) = (self.pages.1.clone(), self.journal.1.clone());
        drop(self);
        Disk {
            pages: bytes(&pages),
            journal: bytes(&journal),
        }
    }
}

fn open(disk: &Disk) -> Rig {
    let faults = Faults::new();
    let (p, pd, pl) = Twin::new(disk.pages.clone());
    let (j, jd, jl) = Twin::new(disk.journal.clone());
    let (pages, journal) = ((pd, pl), (jd, jl));
    let store = Store::open(
        Box::new(FaultBackend::new(Box::new(p), faults.clone())),
        Box::new(FaultBackend::new(Box::new(j), faults.clone())),
    )
    .expect("open store");
    let fs = Fs::new(store, None).expect("fs");
    Rig {
        fs,
        faults,
        pages,
        journal,
    }
}

fn op<T>(fs: &mut Fs, f: impl FnOnce(&mut Fs) -> cowfs::Result<T>) -> cowfs::Result<T> {
    fs.begin_op();
    let r = f(fs);
    fs.end_op(r.is_ok());
    r
}

fn entries(fs: &mut Fs, dir: Ino) -> Vec<(String, Ino)> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, &mut |ino, _, _, name| {
        if name != b"." && name != b".." {
            out.push((String::from_utf8_lossy(name).into_owned(), ino));
        }
        false
    })
    .expect("readdir");
    out
}

/// The tree under `top` of the current view, keyed `prefix` + path (iterative).
fn walk_view(fs: &mut Fs, prefix: &str, model: &mut Model) {
    let mut todo = vec![(prefix.to_string(), Ino::ROOT)];
    while let Some((path, dir)) = todo.pop() {
        for (name, ino) in entries(fs, dir) {
            let i = fs.getattr(ino).expect("getattr");
            let p = format!("{path}{name}");
            let node = match i.mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    todo.push((format!("{p}/"), ino));
                    Node::Dir { nlink: i.nlink }
                }
                libc::S_IFLNK => Node::Symlink(fs.readlink(ino).expect("readlink")),
                _ => Node::File {
                    nlink: i.nlink,
                    data: fs.read(ino, 0, i.size as u32).expect("read"),
                },
            };
            model.insert(p, node);
        }
    }
}

/// The whole namespace: the live tree, the root's link count, and every snapshot.
fn walk(fs: &mut Fs) -> Model {
    // Reading changes nothing (no atime), so a walk between a clone's steps, with a
    // failure armed, neither allocates nor writes.
    let atime = fs.atime_mode();
    fs.set_atime_mode(Atime::NoAtime);
    let m = walk_all(fs);
    fs.set_atime_mode(atime);
    m
}

fn walk_all(fs: &mut Fs) -> Model {
    op(fs, |fs| {
        let mut m = Model::new();
        let root = fs.getattr(Ino::ROOT)?;
        m.insert("/".into(), Node::Dir { nlink: root.nlink });
        walk_view(fs, "", &mut m);
        for (id, name) in fs.snapshot_names() {
            fs.enter(id)?;
            walk_view(
                fs,
                &format!(".snapshots/{}/", String::from_utf8_lossy(&name)),
                &mut m,
            );
            fs.leave();
        }
        Ok(m)
    })
    .expect("walk")
}

fn ino_of(fs: &mut Fs, name: &str) -> Ino {
    entries(fs, Ino::ROOT)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, i)| i)
        .expect("name in the root")
}

/// The inode of `d/sub`.
fn sub_of(fs: &mut Fs) -> Ino {
    let d = ino_of(fs, "d");
    entries(fs, d)
        .into_iter()
        .find(|(n, _)| n == "sub")
        .map(|(_, i)| i)
        .expect("d/sub")
}

fn file(fs: &mut Fs, parent: Ino, name: &str, byte: u8, len: usize) -> Ino {
    let (ino, _) = fs
        .mknod(Ctx::ROOT, parent, name.as_bytes(), libc::S_IFREG | 0o644, 0)
        .expect("create");
    fs.write(ino, 0, &vec![byte; len]).expect("write");
    ino
}

fn mkdir(fs: &mut Fs, parent: Ino, name: &str) -> Ino {
    fs.mknod(Ctx::ROOT, parent, name.as_bytes(), libc::S_IFDIR | 0o755, 0)
        .expect("mkdir")
        .0
}

/// The starting store: files, a small tree, a snapshot `s1`, and changes after it.
fn baseline() -> Disk {
    let p = CrashBackend::new(Vec::new());
    let j = CrashBackend::new(Vec::new());
    let (pi, ji) = (p.image(), j.image());
    let store = Store::create(Box::new(p), Box::new(j)).expect("create");
    let mut fs = Fs::new(store, None).expect("fs");
    let r = Ino::ROOT;
    file(&mut fs, r, "a", 1, 5000);
    file(&mut fs, r, "b", 2, 9000);
    let d = mkdir(&mut fs, r, "d");
    file(&mut fs, d, "x", 3, 3 * 4096 + 10);
    let sub = mkdir(&mut fs, d, "sub");
    file(&mut fs, sub, "y", 4, 100);
    // Renames happen here: nothing changes this directory after the snapshot, so each
    // rename copies shared pages (and can meet ENOSPC).
    file(&mut fs, sub, "p", 7, 2000);
    file(&mut fs, sub, "q", 8, 3000);
    mkdir(&mut fs, sub, "ed");
    let od = mkdir(&mut fs, sub, "od");
    file(&mut fs, od, "in", 9, 10);
    fs.symlink(Ctx::ROOT, d, b"sl", b"x").expect("symlink");
    mkdir(&mut fs, d, "empty");
    mkdir(&mut fs, r, "e");
    mkdir(&mut fs, r, "f");
    file(&mut fs, r, "u", 5, 12_000);
    let b = ino_of(&mut fs, "b");
    fs.link(b, r, b"b-link").expect("link");
    for i in 0..40 {
        file(&mut fs, d, &format!("many-{i}"), i as u8, 700);
    }
    fs.snapshot_create(b"s1", false).expect("snapshot");
    let a = ino_of(&mut fs, "a");
    fs.write(a, 0, &[9u8; 6000])
        .expect("write after the snapshot");
    file(&mut fs, r, "new", 6, 4096);
    fs.unlink(d, b"many-3").expect("unlink");
    fs.close().expect("close");
    Disk {
        pages: pi.durable(),
        journal: ji.durable(),
    }
}

type StepFn = dyn Fn(&mut Fs, &Held) -> cowfs::Result<()>;

/// One step of a scenario: what it does and the model after it.
struct Step {
    name: &'static str,
    run: Box<StepFn>,
    /// Repeat until `run` reports no more work (reclaim): then `run` sets `more`.
    repeat: bool,
    /// Each repetition changes the namespace (a tree clone's steps): a failure is
    /// compared with the namespace before that repetition, not before the first.
    grows: bool,
    after: Model,
}

/// What the scenario's set-up left for its steps.
#[derive(Default)]
struct Held {
    fh: Option<Fh>,
    more: std::cell::Cell<bool>,
    /// The tree clone in progress.
    tree: RefCell<Option<Box<TreeClone>>>,
    /// For a growing step: the namespace before its last repetition, and after it (when
    /// the repetition's operation succeeded and its commit was next).
    last: RefCell<Option<(Model, Option<Model>)>>,
}

struct Scenario {
    name: &'static str,
    /// False where the operation needs no new page (creating or deleting a snapshot when
    /// the store has some already: a reference more or less, the list rewritten in its
    /// own page).
    allocates: bool,
    setup: fn(&mut Fs) -> Held,
    /// The namespace after `setup`.
    start: Model,
    steps: Vec<Step>,
}

fn no_setup(_: &mut Fs) -> Held {
    Held::default()
}

/// Leaves the store without snapshots: the next one writes a new list.
fn drop_s1(fs: &mut Fs) -> Held {
    op(fs, |fs| fs.snapshot_delete(b"s1")).expect("delete");
    while op(fs, |fs| fs.reclaim_step(1 << 20)).expect("reclaim") {}
    op(fs, |fs| fs.sync()).expect("sync");
    Held::default()
}

/// Adds a writable snapshot `w`.
fn make_w(fs: &mut Fs) -> Held {
    op(fs, |fs| fs.snapshot_create(b"w", true)).expect("writable snapshot");
    Held::default()
}

fn open_u(fs: &mut Fs) -> Held {
    let u = ino_of(fs, "u");
    let fh = op(fs, |fs| fs.open(u, libc::O_RDWR)).expect("open");
    Held {
        fh: Some(fh),
        ..Default::default()
    }
}

fn step(
    name: &'static str,
    after: Model,
    run: impl Fn(&mut Fs, &Held) -> cowfs::Result<()> + 'static,
) -> Step {
    Step {
        name,
        run: Box::new(run),
        repeat: false,
        grows: false,
        after,
    }
}

/// The steps of a tree clone after its start, `STEP_ENTRIES` entries each.
fn clone_steps(after: Model) -> Step {
    Step {
        name: "clone step",
        run: Box::new(|fs, c| {
            let mut g = c.tree.borrow_mut();
            let t = g
                .as_mut()
                .ok_or(cowfs::Error::Invalid("no clone started"))?;
            let budget = StepBudget {
                entries: STEP_ENTRIES,
                time: None,
            };
            c.more.set(fs.clone_step(t, budget)?);
            Ok(())
        }),
        repeat: true,
        grows: true,
        after,
    }
}

fn reclaim(after: Model) -> Step {
    Step {
        name: "reclaim",
        run: Box::new(|fs, c| {
            c.more.set(fs.reclaim_step(RECLAIM_BUDGET)?);
            Ok(())
        }),
        repeat: true,
        grows: false,
        after,
    }
}

/// Keys under `from` moved under `to` (both end in '/' or are whole names).
fn moved(m: &Model, from: &str, to: &str) -> Model {
    m.iter()
        .map(|(k, v)| {
            let k = if k == from {
                to.to_string()
            } else if let Some(rest) = k.strip_prefix(&format!("{from}/")) {
                format!("{to}/{rest}")
            } else {
                k.clone()
            };
            (k, v.clone())
        })
        .collect()
}

fn without(m: &Model, prefix: &str) -> Model {
    m.iter()
        .filter(|(k, _)| !(k.as_str() == prefix || k.starts_with(&format!("{prefix}/"))))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn live(m: &Model) -> impl Iterator<Item = (&String, &Node)> {
    m.iter()
        .filter(|(k, _)| *k != "/" && !k.starts_with(".snapshots/"))
}

fn set_root_nlink(m: &mut Model, delta: i32) {
    if let Some(Node::Dir { nlink }) = m.get_mut("/") {
        *nlink = (*nlink as i32 + delta) as u32;
    }
}

fn nlink_of(m: &mut Model, path: &str, n: u32) {
    if let Some(Node::File { nlink, .. }) = m.get_mut(path) {
        *nlink = n;
    }
}

fn scenarios(m0: &Model) -> Vec<Scenario> {
    let mut created = m0.clone();
    for (k, v) in live(m0) {
        created.insert(format!(".snapshots/s2/{k}"), v.clone());
    }
    let deleted = without(m0, ".snapshots/s1");
    let mut first = deleted.clone();
    for (k, v) in live(m0) {
        first.insert(format!(".snapshots/s2/{k}"), v.clone());
    }
    let mut rolled: Model = m0
        .iter()
        .filter(|(k, _)| k.starts_with(".snapshots/") || *k == "/")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in m0.iter() {
        if let Some(rest) = k.strip_prefix(".snapshots/s1/") {
            rolled.insert(rest.to_string(), v.clone());
        }
    }
    let mut cloned = m0.clone();
    cloned.insert("d2".into(), m0["d"].clone());
    for (k, v) in live(m0) {
        if let Some(rest) = k.strip_prefix("d/") {
            cloned.insert(format!("d2/{rest}"), v.clone());
        }
    }
    set_root_nlink(&mut cloned, 1);
    let mut started = m0.clone();
    started.insert("d2".into(), Node::Dir { nlink: 2 });
    set_root_nlink(&mut started, 1);
    let plain = moved(m0, "d/sub/p", "d/sub/p2");
    let over_file = moved(&without(m0, "d/sub/q"), "d/sub/p", "d/sub/q");
    let mut over_dir = moved(&without(m0, "d/sub/ed"), "d/sub/od", "d/sub/ed");
    if let Some(Node::Dir { nlink }) = over_dir.get_mut("d/sub") {
        *nlink -= 1;
    }
    let exchanged = {
        let t = moved(m0, "d/sub/p", "d/sub/#tmp");
        let t = moved(&t, "d/sub/od", "d/sub/p");
        moved(&t, "d/sub/#tmp", "d/sub/od")
    };
    let mut ab_exchanged = moved(m0, "a", "#tmp");
    ab_exchanged = moved(&ab_exchanged, "d", "a");
    ab_exchanged = moved(&ab_exchanged, "#tmp", "d");
    let mut b_over_a = moved(&without(m0, "a"), "b", "a");
    nlink_of(&mut b_over_a, "b-link", 2);
    let unlinked = without(m0, "u");
    let mut with_w = m0.clone();
    for (k, v) in live(m0) {
        with_w.insert(format!(".snapshots/w/{k}"), v.clone());
    }
    let renamed_in_w = moved(&with_w, ".snapshots/w/d/sub/p", ".snapshots/w/d/sub/p3");
    let mut truncated = m0.clone();
    if let Some(Node::File { data, .. }) = truncated.get_mut("d/x") {
        data.truncate(5000);
    }
    // In d/sub, or in the root when `top`.
    let rename = |from: &'static str, to: &'static str, flags: u32, top: bool| {
        move |fs: &mut Fs, _: &Held| {
            let dir = if top { Ino::ROOT } else { sub_of(fs) };
            fs.rename(dir, from.as_bytes(), dir, to.as_bytes(), flags)
        }
    };
    vec![
        Scenario {
            name: "snapshot create",
            allocates: false,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("create", created, |fs, _| {
                fs.snapshot_create(b"s2", false).map(|_| ())
            })],
        },
        Scenario {
            name: "first snapshot create",
            allocates: true,
            setup: drop_s1,
            start: deleted.clone(),
            steps: vec![step("create", first, |fs, _| {
                fs.snapshot_create(b"s2", false).map(|_| ())
            })],
        },
        Scenario {
            name: "snapshot delete",
            allocates: false,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![
                step("delete", deleted.clone(), |fs, _| {
                    fs.snapshot_delete(b"s1").map(|_| ())
                }),
                reclaim(deleted),
            ],
        },
        Scenario {
            name: "snapshot rollback",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![
                step("rollback", rolled.clone(), |fs, _| {
                    fs.snapshot_rollback(b"s1").map(|_| ())
                }),
                reclaim(rolled),
            ],
        },
        Scenario {
            name: "clone -r",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("clone", cloned.clone(), |fs, _| {
                let d = ino_of(fs, "d");
                let opts = CloneOpts {
                    recursive: true,
                    ..Default::default()
                };
                fs.clone_path(&Cred::root(), b"d", d, Ino::ROOT, b"d2", opts)
                    .map(|_| ())
            })],
        },
        Scenario {
            name: "clone -r in steps",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![
                step("clone start", started, |fs, c| {
                    let d = ino_of(fs, "d");
                    let opts = CloneOpts {
                        recursive: true,
                        ..Default::default()
                    };
                    match fs.clone_start(&Cred::root(), b"d", d, Ino::ROOT, b"d2", opts)? {
                        Begun::Tree(t, _) => *c.tree.borrow_mut() = Some(t),
                        Begun::Done(_) => return Err(cowfs::Error::Invalid("not a tree")),
                    }
                    Ok(())
                }),
                clone_steps(cloned.clone()),
            ],
        },
        Scenario {
            name: "rename",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("rename", plain, rename("p", "p2", 0, false))],
        },
        Scenario {
            name: "rename over a file",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("rename", over_file, rename("p", "q", 0, false))],
        },
        Scenario {
            name: "rename over an empty directory",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("rename", over_dir, rename("od", "ed", 0, false))],
        },
        Scenario {
            name: "rename exchange",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step(
                "exchange",
                exchanged,
                rename("p", "od", RENAME_EXCHANGE, false),
            )],
        },
        Scenario {
            name: "rename in the root: exchange a file and a directory",
            allocates: false,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step(
                "exchange",
                ab_exchanged,
                rename("a", "d", RENAME_EXCHANGE, true),
            )],
        },
        Scenario {
            name: "rename in the root over a linked file",
            allocates: false,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("rename", b_over_a, rename("b", "a", 0, true))],
        },
        Scenario {
            // A handle opened, then a step that fails (as the adapter's open with O_TRUNC
            // truncates after opening): the handle must go with the rest. Truncating to a
            // partial page copies the shared map and page, so ENOSPC can strike there.
            name: "open, then truncate in the same operation",
            allocates: true,
            setup: no_setup,
            start: m0.clone(),
            steps: vec![step("open", truncated, |fs, _| {
                let d = ino_of(fs, "d");
                let x = entries(fs, d)
                    .into_iter()
                    .find(|(n, _)| n == "x")
                    .map(|(_, i)| i)
                    .ok_or(cowfs::Error::NotFound)?;
                fs.open(x, libc::O_RDWR)?;
                let a = SetAttr {
                    size: Some(5000),
                    ..Default::default()
                };
                fs.setattr(Ctx::ROOT, x, &a).map(|_| ())
            })],
        },
        Scenario {
            // The snapshot's table changes (`set_table`): the list in memory and in the
            // store must still agree after a failure.
            name: "rename inside a writable snapshot",
            allocates: true,
            setup: make_w,
            start: with_w,
            steps: vec![step("rename", renamed_in_w, |fs, _| {
                let id = fs.snapshot_id(b"w")?;
                fs.enter(id)?;
                let sub = sub_of(fs);
                let r = fs.rename(sub, b"p", sub, b"p3", 0);
                fs.leave();
                r
            })],
        },
        Scenario {
            name: "unlink of an open file",
            allocates: true,
            setup: open_u,
            start: m0.clone(),
            steps: vec![
                step("unlink", unlinked.clone(), |fs, _| {
                    fs.unlink(Ino::ROOT, b"u")
                }),
                step("release", unlinked, |fs, c| {
                    fs.release(c.fh.ok_or(cowfs::Error::BadHandle)?)
                }),
            ],
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Alloc,
    Io,
}

/// The in-memory state that must agree with the store, or be as before a failed step.
fn check_memory(fs: &mut Fs, handles: &[(Fh, Ino)], what: &str) {
    let stored = snap_load(fs.store()).expect("load the snapshot list");
    assert_eq!(
        fs.snapshot_records(),
        stored,
        "{what}: snapshot list in memory"
    );
    assert_eq!(fs.open_handles(), handles, "{what}: open handles");
    assert_eq!(fs.view(), cowfs::ids::SnapId::LIVE, "{what}: view");
}

/// Commits, closes, reopens and checks the store: fsck clean, the namespace as `want`.
fn check_on_disk(mut rig: Rig, want: &Model, what: &str) {
    rig.faults.disarm();
    rig.fs.close().expect("close");
    fsck_and_compare(&rig.durable(), &[want], what);
}

/// Opens `disk`, checks it (fsck clean) and compares its namespace with one of `wants`;
/// returns which.
fn fsck_and_compare(disk: &Disk, wants: &[&Model], what: &str) -> usize {
    let mut store = Store::open(
        Box::new(CrashBackend::new(disk.pages.clone())),
        Box::new(CrashBackend::new(disk.journal.clone())),
    )
    .expect("reopen");
    let rep = check(&mut store).expect("fsck");
    assert!(rep.problems.is_empty(), "{what}: fsck: {:?}", rep.problems);
    let mut fs = Fs::new(store, None).expect("fs after reopen");
    let got = walk(&mut fs);
    let at = wants.iter().position(|w| **w == got);
    assert!(
        at.is_some(),
        "{what}: the reopened namespace is none of the expected ones\n got {:?}",
        got.keys().collect::<Vec<_>>()
    );
    // Further operations work on the reopened store.
    let n = op(&mut fs, |fs| {
        let (ino, _) = fs.mknod(Ctx::ROOT, Ino::ROOT, b"later", libc::S_IFREG | 0o644, 0)?;
        fs.write(ino, 0, &[7u8; 5000])
    })
    .expect("create after reopen");
    assert_eq!(n, 5000);
    fs.sync().expect("sync after reopen");
    let rep = check(fs.store()).expect("fsck");
    assert!(
        rep.problems.is_empty(),
        "{what}: fsck later: {:?}",
        rep.problems
    );
    at.unwrap_or(0)
}

/// Runs step `s` once (or, for a repeating step, until it says it is done), each run an
/// operation followed by a commit as fsync makes one. Returns the first error.
fn run_step(fs: &mut Fs, s: &Step, c: &Held) -> cowfs::Result<()> {
    loop {
        c.more.set(false);
        if s.grows {
            *c.last.borrow_mut() = Some((walk(fs), None));
        }
        op(fs, |fs| (s.run)(fs, c))?;
        if s.grows {
            let now = walk(fs);
            if let Some(l) = c.last.borrow_mut().as_mut() {
                l.1 = Some(now);
            }
        }
        op(fs, |fs| fs.sync())?;
        if !(s.repeat && c.more.get()) {
            return Ok(());
        }
    }
}

/// The namespace before the failed step (for a growing step, before its last repetition)
/// and after its operation if that succeeded.
fn grown(s: &Step, c: &Held, before: &Model) -> (Model, Option<Model>) {
    match c.last.borrow().as_ref() {
        Some((pre, post)) if s.grows => (pre.clone(), post.clone()),
        _ => (before.clone(), None),
    }
}

/// One attempt with failure point `n`: true when the failure happened.
fn attempt(disk: &Disk, sc: &Scenario, kind: Kind, n: u64) -> bool {
    let what = format!("{} ({kind:?} #{n})", sc.name);
    let mut rig = open(disk);
    let c = (sc.setup)(&mut rig.fs);
    match kind {
        Kind::Alloc => rig.faults.fail_alloc(n),
        Kind::Io => rig.faults.fail_io(n),
    }
    let mut before = sc.start.clone();
    for (i, s) in sc.steps.iter().enumerate() {
        let handles = rig.fs.open_handles();
        let r = run_step(&mut rig.fs, s, &c);
        let Err(e) = r else {
            assert!(
                !rig.faults.fired(),
                "{what}: step {} swallowed the failure",
                s.name
            );
            before = s.after.clone();
            continue;
        };
        let what = format!("{what}, step {}", s.name);
        assert!(rig.faults.fired(), "{what}: failed without the fault: {e}");
        let want = if kind == Kind::Alloc {
            libc::ENOSPC
        } else {
            libc::EIO
        };
        assert_eq!(e.errno(), want, "{what}: {e}");
        rig.faults.disarm();
        if rig.fs.store().failed() {
            // A commit failed: the filesystem turned read-only (EROFS, as ext4 with
            // errors=remount-ro); what was durable is one of the two.
            let r = op(&mut rig.fs, |fs| {
                fs.mknod(Ctx::ROOT, Ino::ROOT, b"refused", libc::S_IFREG, 0)
            });
            assert_eq!(r.map(|_| ()).map_err(|e| e.errno()), Err(libc::EROFS));
            let (pre, post) = grown(s, &c, &before);
            let post = post.as_ref().unwrap_or(&s.after);
            let crashed = rig.durable();
            fsck_and_compare(&crashed, &[&pre, post], &format!("{what}, crash"));
            let stopped = rig.stop();
            fsck_and_compare(&stopped, &[&pre, post], &format!("{what}, restart"));
            return true;
        }
        // The step failed and was undone, memory and store alike.
        let got = walk(&mut rig.fs);
        let (pre, _) = grown(s, &c, &before);
        assert!(got == pre, "{what}: namespace changed by a failed step");
        check_memory(&mut rig.fs, &handles, &what);
        if let Some(fh) = c.fh
            && handles.iter().any(|(h, _)| *h == fh)
        {
            let ino = rig.fs.handle_ino(fh).expect("handle");
            let data = rig
                .fs
                .read(ino, 0, 20_000)
                .expect("read through the handle");
            assert_eq!(data, vec![5u8; 12_000], "{what}: open file's data");
        }
        // Further operations work: this step and the rest, without faults.
        for s in &sc.steps[i..] {
            run_step(&mut rig.fs, s, &c).unwrap_or_else(|e| panic!("{what}: retry: {e}"));
        }
        let last = &sc.steps[sc.steps.len() - 1].after;
        assert!(walk(&mut rig.fs) == *last, "{what}: after the retry");
        let handles = rig.fs.open_handles();
        check_memory(&mut rig.fs, &handles, &what);
        check_on_disk(rig, last, &what);
        return true;
    }
    assert!(!rig.faults.fired(), "{what}: a failure was swallowed");
    rig.faults.disarm();
    let got = walk(&mut rig.fs);
    assert!(got == before, "{what}: result differs from the model");
    assert_eq!(rig.fs.reclaim_pending(), 0, "{what}: reclaim finished");
    let handles = rig.fs.open_handles();
    check_memory(&mut rig.fs, &handles, &what);
    check_on_disk(rig, &before, &what);
    false
}

#[test]
fn every_allocation_and_write_fails_in_turn() {
    let disk = baseline();
    let m0 = walk(&mut open(&disk).fs);
    assert!(
        m0.contains_key(".snapshots/s1/d/sub/y"),
        "baseline has a snapshot"
    );
    for sc in scenarios(&m0) {
        let mut points = Vec::new();
        for kind in [Kind::Alloc, Kind::Io] {
            let mut n = 1;
            while attempt(&disk, &sc, kind, n) {
                n += 1;
                assert!(n < 5000, "{}: {kind:?} never ran to the end", sc.name);
            }
            points.push(n - 1);
        }
        eprintln!("{}: {points:?} failure points (allocation, I/O)", sc.name);
        // Every scenario commits, so every one meets I/O failures.
        assert!(points[1] > 0, "{}: no I/O failure point reached", sc.name);
        assert_eq!(
            points[0] > 0,
            sc.allocates,
            "{}: allocation failure points",
            sc.name
        );
    }
}
