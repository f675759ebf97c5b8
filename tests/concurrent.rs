//! The data path under concurrency on a real mount: reads and writes copy their bytes
//! outside the filesystem lock (plan, copy, finish, inside a shared gate), so these tests
//! run writers, readers, fsync, clones and snapshots at once and check every byte. Also
//! what the kernel caches with the writeback cache and long TTLs: sizes after a rollback
//! and after a range clone, and set-user-ID bits and capabilities dropped on write.

mod common;

use common::{Mount, cowfs, errno_of, is_root};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A tiny deterministic xorshift64 generator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A length from 1 to 2^max_log, log-uniform (small writes as often as big ones).
    fn size(&mut self, max_log: u64) -> usize {
        let bits = self.below(max_log + 1);
        (1 + self.below(1 << bits)) as usize
    }
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.next() as u8).collect()
}

fn ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn snapshot(m: &Mount, op: &str, name: &str) {
    ok(
        &format!("snapshot {op} {name}"),
        &cowfs(&["snapshot", op, p(&m.mnt), name]),
    );
}

/// Panics with the first differing byte (not megabytes of both sides).
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let end = |v: &[u8]| v[at..(at + 16).min(v.len())].to_vec();
    panic!(
        "{what}: lengths {} (got) and {} (want); first difference at byte {at}: got {:02x?}, want {:02x?}",
        got.len(),
        want.len(),
        end(got),
        end(want)
    );
}

fn read_range(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).expect("pread");
    b
}

/// ((length, hash), pages appended before the command started) of the clones or
/// snapshots, in the order they were made.
type Digests = Vec<((usize, u64), u64)>;

/// Length and hash of some bytes.
fn digest(b: &[u8]) -> (usize, u64) {
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hasher::write(&mut h, b);
    (b.len(), std::hash::Hasher::finish(&h))
}

/// Joins a scoped thread, passing its panic on.
fn join<T>(h: thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ------------------------------------------------------------------ 1. writers and readers

const REGION: u64 = 16 << 20;
const WRITERS: u64 = 4;
const OTHER: u64 = 8 << 20;
const WRITES: u64 = 3000;
const SNAPSHOTS: u32 = 6;

/// The byte thread `tid` (0..8) writes in its generation `g`: the thread in the top three
/// bits, never zero in the low five, so a reader can tell any byte's author, and zeros
/// (an unwritten page, a hole) are never valid.
fn tag(tid: u64, g: u64) -> u8 {
    ((tid << 5) | (1 + g % 31)) as u8
}

/// Every byte of `b`, read at `off` of the shared file, is one its region's writer writes.
fn check_tags(who: &str, off: u64, b: &[u8]) -> Result<(), String> {
    for (i, &v) in b.iter().enumerate() {
        let at = off + i as u64;
        let owner = at / REGION;
        if u64::from(v >> 5) != owner || v & 31 == 0 {
            return Err(format!(
                "{who}: byte {at} (region of writer {owner}) is {v:#04x}: not a value writer \
                 {owner} writes; read of {} at {off}, bytes around: {:02x?}",
                b.len(),
                &b[i.saturating_sub(8)..(i + 8).min(b.len())]
            ));
        }
    }
    Ok(())
}

/// Random writes of 1 B .. 1 MiB into [base, base + len) of `path`; the expected content.
fn random_writer(path: &Path, tid: u64, base: u64, len: u64, direct: bool) -> Vec<u8> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o.open(path).expect("open for writing");
    let mut model = vec![tag(tid, 0); len as usize];
    let mut rng = Rng::new(100 + tid);
    for g in 1..=WRITES {
        let n = rng.size(20).min(len as usize);
        let off = rng.below(len - n as u64 + 1) as usize;
        let b = tag(tid, g);
        let buf = vec![b; n];
        f.write_all_at(&buf, base + off as u64)
            .unwrap_or_else(|e| panic!("writer {tid}: write {n} at {}: {e}", base + off as u64));
        model[off..off + n].fill(b);
    }
    model
}

#[test]
fn parallel_writers_and_readers_agree() {
    if !is_root() {
        return;
    }
    let t0 = Instant::now();
    let m = Mount::new();
    let shared = m.path("shared");
    let others = [m.path("other4"), m.path("other5")];
    let total = WRITERS * REGION;
    {
        let f = File::create(&shared).expect("create");
        for t in 0..WRITERS {
            f.write_all_at(&vec![tag(t, 0); REGION as usize], t * REGION)
                .expect("fill");
        }
        f.sync_all().expect("fsync");
        for (k, o) in others.iter().enumerate() {
            fs::write(o, vec![tag(4 + k as u64, 0); OTHER as usize]).expect("fill");
        }
    }
    // Every page shared with a snapshot: each first whole-page write takes a fresh page.
    snapshot(&m, "create", "base");
    let stop = AtomicBool::new(false);
    let (models, other_models, checked, syncs) = thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let shared = &shared;
                s.spawn(move || random_writer(shared, t, t * REGION, REGION, t == 3))
            })
            .collect();
        let other_writers: Vec<_> = others
            .iter()
            .enumerate()
            .map(|(k, o)| s.spawn(move || random_writer(o, 4 + k as u64, 0, OTHER, k == 1)))
            .collect();
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (shared, stop) = (&shared, &stop);
                s.spawn(move || -> Result<u64, String> {
                    let mut o = OpenOptions::new();
                    o.read(true);
                    if r == 1 {
                        o.custom_flags(libc::O_DIRECT);
                    }
                    let f = o.open(shared).expect("open for reading");
                    let mut rng = Rng::new(200 + r);
                    let mut checked = 0u64;
                    // The direct reader keeps to the direct writer's region, where
                    // WRITE requests arrive at once rather than by writeback.
                    let (from, len) = if r == 1 {
                        (3 * REGION, REGION)
                    } else {
                        (0, total)
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let n = rng.size(20);
                        let off = from + rng.below(len - n as u64 + 1);
                        let b = read_range(&f, off, n);
                        check_tags(&format!("reader {r} (direct: {})", r == 1), off, &b)?;
                        checked += n as u64;
                    }
                    Ok(checked)
                })
            })
            .collect();
        // Snapshots now and then, so that whole-page writes keep taking fresh pages.
        let snapshotter = s.spawn(|| -> Result<u32, String> {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < SNAPSHOTS {
                thread::sleep(Duration::from_millis(300));
                n += 1;
                let out = cowfs(&["snapshot", "create", p(&m.mnt), &format!("t{n}")]);
                if !out.status.success() {
                    return Err(format!(
                        "snapshot t{n}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(n)
        });
        let syncer = {
            let (shared, stop) = (&shared, &stop);
            s.spawn(move || -> Result<u64, String> {
                let f = OpenOptions::new().write(true).open(shared).expect("open");
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    f.sync_all().map_err(|e| format!("fsync: {e}"))?;
                    let len = f.metadata().map_err(|e| format!("fstat: {e}"))?.len();
                    if len != total {
                        return Err(format!("size {len} while writing inside {total} bytes"));
                    }
                    n += 1;
                    thread::sleep(Duration::from_millis(3));
                }
                Ok(n)
            })
        };
        // Join the writers first (a panicking one included), so the others always stop.
        let w: Vec<_> = writers.into_iter().map(|h| h.join()).collect();
        let o: Vec<_> = other_writers.into_iter().map(|h| h.join()).collect();
        stop.store(true, Ordering::Relaxed);
        let checked: Vec<_> = readers.into_iter().map(join).collect();
        let syncs = join(syncer);
        let snaps = join(snapshotter);
        let unwrap = |v: Vec<thread::Result<Vec<u8>>>| -> Vec<Vec<u8>> {
            v.into_iter()
                .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        };
        (unwrap(w), unwrap(o), checked, (syncs, snaps))
    });
    let checked: Vec<u64> = checked
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let (syncs, snaps) = syncs;
    let syncs = syncs.unwrap_or_else(|e| panic!("{e}"));
    let snaps = snaps.unwrap_or_else(|e| panic!("{e}"));
    println!(
        "parallel: writes done in {:?}; readers checked {checked:?} bytes; {syncs} fsyncs; {snaps} snapshots",
        t0.elapsed()
    );
    let compare = |when: &str| {
        let f = File::open(&shared).expect("open");
        assert_eq!(f.metadata().expect("stat").len(), total, "{when}: size");
        for (t, model) in models.iter().enumerate() {
            let got = read_range(&f, t as u64 * REGION, REGION as usize);
            assert_same(&format!("{when}: region of writer {t}"), &got, model);
        }
        for (o, model) in others.iter().zip(&other_models) {
            assert_same(
                &format!("{when}: {}", o.display()),
                &fs::read(o).expect("read"),
                model,
            );
        }
        // Snapshots taken while writing hold only bytes their writers wrote.
        for k in 1..=snaps {
            let t = File::open(m.mnt.join(format!(".snapshots/t{k}/shared"))).expect("open");
            for c in 0..total / (4 << 20) {
                let off = c * (4 << 20);
                check_tags(
                    &format!("{when}: snapshot t{k}"),
                    off,
                    &read_range(&t, off, 4 << 20),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        // The snapshot kept the content from before every write.
        let base = File::open(m.mnt.join(".snapshots/base/shared")).expect("open snapshot");
        for t in 0..WRITERS {
            let got = read_range(&base, t * REGION, REGION as usize);
            assert!(
                got.iter().all(|&v| v == tag(t, 0)),
                "{when}: the snapshot's region {t} changed"
            );
        }
    };
    compare("after the writes");
    m.umount();
    m.fsck_clean();
    m.mount();
    compare("after a remount");
    println!("parallel_writers_and_readers_agree: {:?}", t0.elapsed());
}

// ------------------------------------------------------------------ 2. clones and snapshots

const PAGE: usize = 4096;
const INIT_PAGES: u64 = 256;
const APPENDS: u64 = 4096;
const CLONES: u32 = 60;
const MAX_SNAPSHOTS: u32 = 8;

/// Page `p` as writer `w` writes it in generation `g`: a header (p, w, g) and bytes
/// derived from it, so any page read back shows whether it is one whole version.
fn page_of(p: u64, w: u32, g: u32) -> Vec<u8> {
    let mut v = vec![0u8; PAGE];
    v[..8].copy_from_slice(&p.to_le_bytes());
    v[8..12].copy_from_slice(&w.to_le_bytes());
    v[12..16].copy_from_slice(&g.to_le_bytes());
    let mut r = Rng::new(p ^ (u64::from(w) << 40) ^ (u64::from(g) << 20));
    for c in v[16..].chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    v
}

/// Every page of `data` below page `flushed` is one whole version of that very page;
/// from `flushed` on a page may also be a hole (all zeros). Returns the holes.
///
/// `flushed`: pages appended before the clone or snapshot command started, which its
/// fsync or syncfs wrote back. Pages appended while it ran may reach the daemon in any
/// order (the kernel's writeback runs several WRITE requests at once), so the command
/// may catch page n + 1 already written and page n not yet: a hole below the size.
fn check_pages(what: &str, data: &[u8], flushed: u64) -> Vec<u64> {
    assert_eq!(
        data.len() % PAGE,
        0,
        "{what}: size {} is not a multiple of the write unit",
        data.len()
    );
    let mut holes = Vec::new();
    for (i, pg) in data.chunks(PAGE).enumerate() {
        let i = i as u64;
        if i >= flushed && pg.iter().all(|&b| b == 0) {
            holes.push(i);
            continue;
        }
        let n = u64::from_le_bytes(pg[..8].try_into().expect("8"));
        let w = u32::from_le_bytes(pg[8..12].try_into().expect("4"));
        let g = u32::from_le_bytes(pg[12..16].try_into().expect("4"));
        assert!(
            n == i && pg == page_of(n, w, g).as_slice(),
            "{what}: page {i} of {} is not one whole version of itself (pages below \
             {flushed} were appended before the command) (header: page {n} writer {w} \
             generation {g}; first bytes {:02x?}; all zero: {})",
            data.len() / PAGE,
            &pg[..32],
            pg.iter().all(|&b| b == 0)
        );
    }
    holes
}

/// Pages in a stripe; writer `w` (2 or 3) rewrites only the stripes `k` with
/// `k % 2 == w - 2`, so each page has one rewriter and the model is exact.
const STRIPE: u64 = 16;

/// Rewrites runs of 1..=16 pages inside writer `w`'s stripes of the pages appended so
/// far, until `stop`; returns (writer, generation) of its last write to each page.
fn rewriter(
    src: &Path,
    w: u32,
    published: &AtomicU64,
    stop: &AtomicBool,
) -> (Vec<Option<(u32, u32)>>, u32) {
    let mut o = OpenOptions::new();
    o.write(true);
    if w == 3 {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o.open(src).expect("open");
    let mut last = vec![None; (INIT_PAGES + APPENDS) as usize];
    let mut rng = Rng::new(u64::from(w));
    let mut g = 0u32;
    while !stop.load(Ordering::Relaxed) {
        g += 1;
        let stripes = published.load(Ordering::Acquire) / STRIPE / 2;
        let k = 2 * rng.below(stripes) + u64::from(w - 2);
        let run = 1 + rng.below(STRIPE);
        let start = k * STRIPE + rng.below(STRIPE - run + 1);
        let buf: Vec<u8> = (start..start + run)
            .flat_map(|pg| page_of(pg, w, g))
            .collect();
        f.write_all_at(&buf, start * PAGE as u64)
            .unwrap_or_else(|e| panic!("writer {w}: rewrite pages {start}+{run}: {e}"));
        for pg in start..start + run {
            last[pg as usize] = Some((w, g));
        }
        if g.is_multiple_of(32) {
            thread::sleep(Duration::from_millis(1));
        }
    }
    (last, g)
}

#[test]
fn clone_and_snapshot_while_writing() {
    if !is_root() {
        return;
    }
    let t0 = Instant::now();
    let m = Mount::new();
    let src = m.path("src");
    let init: Vec<u8> = (0..INIT_PAGES).flat_map(|p| page_of(p, 0, 0)).collect();
    fs::write(&src, &init).expect("write");
    let published = AtomicU64::new(INIT_PAGES);
    let stop = AtomicBool::new(false);
    let (last, made, snapped) = thread::scope(|s| {
        // Writer 1 appends one page at a time, until the cloner is done (or 16 MiB).
        let appender = s.spawn(|| {
            let f = OpenOptions::new().write(true).open(&src).expect("open");
            for k in 0..APPENDS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let pg = INIT_PAGES + k;
                f.write_all_at(&page_of(pg, 1, k as u32 + 1), pg * PAGE as u64)
                    .expect("append");
                published.store(pg + 1, Ordering::Release);
                if k % 2 == 1 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        });
        // Writers 2 (buffered) and 3 (O_DIRECT: each write a WRITE request at once, so
        // copies are in flight while clones run) rewrite runs inside their own stripes.
        let rewriters: Vec<_> = [2u32, 3]
            .into_iter()
            .map(|w| {
                let (src, published, stop) = (&src, &published, &stop);
                s.spawn(move || rewriter(src, w, published, stop))
            })
            .collect();
        let cloner = s.spawn(|| -> Result<(Digests, Digests), String> {
            // The writers stop when this ends, however it ends.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            let deadline = Instant::now() + Duration::from_secs(15);
            let (mut clones, mut snaps) = (0u32, 0u32);
            let (mut made, mut snapped) = (Vec::new(), Vec::new());
            while clones < CLONES && Instant::now() < deadline {
                clones += 1;
                let dst = m.path(&format!("c{clones}"));
                let flushed = published.load(Ordering::Acquire);
                let out = cowfs(&["clone", p(&src), p(&dst)]);
                if !out.status.success() {
                    return Err(format!(
                        "clone {clones}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                // What the clone holds now it must hold forever: nobody writes to it.
                made.push((
                    digest(&fs::read(&dst).map_err(|e| format!("read clone: {e}"))?),
                    flushed,
                ));
                if clones.is_multiple_of(5) && snaps < MAX_SNAPSHOTS {
                    snaps += 1;
                    let flushed = published.load(Ordering::Acquire);
                    let out = cowfs(&["snapshot", "create", p(&m.mnt), &format!("s{snaps}")]);
                    if !out.status.success() {
                        return Err(format!(
                            "snapshot {snaps}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    let at = m.mnt.join(format!(".snapshots/s{snaps}/src"));
                    snapped.push((
                        digest(&fs::read(&at).map_err(|e| format!("read snapshot: {e}"))?),
                        flushed,
                    ));
                }
            }
            Ok((made, snapped))
        });
        let c = join(cloner);
        let a = appender.join();
        let r: Vec<_> = rewriters.into_iter().map(|h| h.join()).collect();
        a.unwrap_or_else(|e| std::panic::resume_unwind(e));
        let mut last = vec![None; (INIT_PAGES + APPENDS) as usize];
        let mut rewrites = Vec::new();
        for one in r {
            let (l, n) = one.unwrap_or_else(|e| std::panic::resume_unwind(e));
            for (pg, v) in l.into_iter().enumerate() {
                last[pg] = last[pg].or(v);
            }
            rewrites.push(n);
        }
        let (made, snapped) = c.unwrap_or_else(|e| panic!("{e}"));
        println!("clone_and_snapshot_while_writing: {rewrites:?} rewrites");
        (last, made, snapped)
    });
    let pages = published.load(Ordering::Acquire);
    println!(
        "clone_and_snapshot_while_writing: {} clones, {} snapshots, {} pages appended in {:?}",
        made.len(),
        snapped.len(),
        pages - INIT_PAGES,
        t0.elapsed()
    );
    assert!(
        pages > INIT_PAGES + 64,
        "the appender ran alongside the clones"
    );
    let want: Vec<u8> = (0..pages)
        .flat_map(|pg| match last[pg as usize] {
            Some((w, g)) => page_of(pg, w, g),
            None if pg < INIT_PAGES => page_of(pg, 0, 0),
            None => page_of(pg, 1, (pg - INIT_PAGES) as u32 + 1),
        })
        .collect();
    // Each clone and snapshot taken while writing holds whole page versions only, and
    // still what it held when it was made; a file that only grows gives clones that only
    // grow.
    let check_made = |when: &str| {
        let mut prev = init.len();
        let mut holes = Vec::new();
        for (i, &(d, flushed)) in made.iter().enumerate() {
            let c = fs::read(m.path(&format!("c{}", i + 1))).expect("read clone");
            let what = format!("{when}: clone c{}", i + 1);
            assert!(
                c.len() >= prev,
                "{what}: {} bytes, the clone before it {prev}",
                c.len()
            );
            prev = c.len();
            let h = check_pages(&what, &c, flushed);
            if !h.is_empty() {
                holes.push((format!("c{}", i + 1), flushed, c.len() / PAGE, h));
            }
            assert_eq!(digest(&c), d, "{what} changed since it was made");
        }
        for (i, &(d, flushed)) in snapped.iter().enumerate() {
            let at = m.mnt.join(format!(".snapshots/s{}/src", i + 1));
            let c = fs::read(at).expect("read snapshot");
            let what = format!("{when}: snapshot s{}", i + 1);
            let h = check_pages(&what, &c, flushed);
            if !h.is_empty() {
                holes.push((format!("s{}", i + 1), flushed, c.len() / PAGE, h));
            }
            assert_eq!(digest(&c), d, "{what} changed since it was made");
        }
        if !holes.is_empty() {
            println!(
                "clone_and_snapshot_while_writing: {when}: holes from writes racing the \
                 command (name, pages flushed before, pages, holes): {holes:?}"
            );
        }
    };
    check_made("after the writes");
    // Writers stopped: a clone is the source byte for byte, and the source is the model.
    let fin = m.path("final");
    ok("final clone", &cowfs(&["clone", p(&src), p(&fin)]));
    let s0 = fs::read(&src).expect("read");
    assert_same("the source against its model", &s0, &want);
    assert_same("the final clone", &fs::read(&fin).expect("read"), &s0);
    // Copy on write: writing the clone leaves the source alone.
    let mut changed = s0.clone();
    {
        let f = OpenOptions::new().write(true).open(&fin).expect("open");
        let pg = page_of(0, 9, 9);
        f.write_all_at(&pg, 0).expect("write");
        f.write_all_at(b"tail", s0.len() as u64).expect("append");
        f.write_all_at(b"mid", 5 * PAGE as u64 + 100)
            .expect("write");
        f.sync_all().expect("fsync");
        changed[..PAGE].copy_from_slice(&pg);
        changed[5 * PAGE + 100..5 * PAGE + 103].copy_from_slice(b"mid");
        changed.extend_from_slice(b"tail");
    }
    assert_same(
        "the source after writing its clone",
        &fs::read(&src).expect("read"),
        &s0,
    );
    assert_same(
        "the written clone",
        &fs::read(&fin).expect("read"),
        &changed,
    );
    m.umount();
    m.fsck_clean();
    m.mount();
    check_made("after a remount");
    assert_same(
        "the source after a remount",
        &fs::read(&src).expect("read"),
        &s0,
    );
    assert_same(
        "the clone after a remount",
        &fs::read(&fin).expect("read"),
        &changed,
    );
    println!("clone_and_snapshot_while_writing: {:?}", t0.elapsed());
}

// ------------------------------------------------------------------ 3. rollback

#[test]
fn rollback_shows_snapshot_sizes_even_for_cached_inodes() {
    if !is_root() {
        return;
    }
    let t0 = Instant::now();
    let m = Mount::new();
    let (f, g, h, late) = (m.path("f"), m.path("g"), m.path("h"), m.path("late"));
    let orig = data(100 << 10, 1);
    let orig_h = data(100 << 10, 3);
    fs::write(&f, &orig).expect("write");
    fs::write(&g, b"other file").expect("write");
    fs::write(&h, &orig_h).expect("write");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 100 << 10);
    assert_same("f before", &fs::read(&f).expect("read"), &orig);
    snapshot(&m, "create", "s1");
    let more = data(200 << 10, 2);
    {
        let a = OpenOptions::new().append(true).open(&f).expect("open");
        std::io::Write::write_all(&mut &a, &more).expect("append");
    }
    // The kernel now caches f with 300 KiB (size, attributes and pages).
    assert_eq!(fs::metadata(&f).expect("stat").len(), 300 << 10);
    assert_eq!(fs::read(&f).expect("read").len(), 300 << 10);
    fs::write(&late, b"made after the snapshot").expect("write");
    assert!(fs::metadata(&late).is_ok());
    let held = File::open(&g).expect("open g");
    // h grows to 300 KiB through an fd kept open across the rollback: its kernel inode
    // stays alive, so only a new generation makes the kernel drop it.
    let held_h = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&h)
        .expect("open h");
    held_h.write_all_at(&more, 100 << 10).expect("append");
    assert_eq!(fs::metadata(&h).expect("stat").len(), 300 << 10);
    snapshot(&m, "rollback", "s1");
    assert_eq!(
        fs::metadata(&f).expect("stat").len(),
        100 << 10,
        "f's size after the rollback (the kernel had 300 KiB cached)"
    );
    assert_same("f after the rollback", &fs::read(&f).expect("read"), &orig);
    assert_eq!(
        fs::metadata(&h).expect("stat").len(),
        100 << 10,
        "h's size after the rollback (an fd kept its 300 KiB kernel inode alive)"
    );
    assert_same(
        "h after the rollback",
        &fs::read(&h).expect("read"),
        &orig_h,
    );
    // The fd from before the rollback belongs to the old file: whatever it answers, what
    // goes through it must not land in the rolled-back h.
    let stale_w = held_h.write_all_at(b"STALE", 0);
    let stale_s = held_h.sync_all();
    let stale_r = held_h.read_at(&mut [0u8; 16], 0);
    println!(
        "rollback: through the fd from before: write {stale_w:?}, fsync {stale_s:?}, \
         read {stale_r:?}"
    );
    drop(held_h);
    assert_same(
        "h after a write through an fd from before the rollback",
        &fs::read(&h).expect("read"),
        &orig_h,
    );
    assert_eq!(
        errno_of(fs::metadata(&late)),
        libc::ENOENT,
        "a file made after the snapshot is gone"
    );
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(
        !names.iter().any(|n| n == "late"),
        "readdir after the rollback: {names:?}"
    );
    assert_eq!(fs::read(&g).expect("read g"), b"other file");
    drop(held);
    // Writing after the rollback works from the snapshot's content.
    {
        let w = OpenOptions::new().write(true).open(&f).expect("open");
        w.write_all_at(b"NEW", 100 << 10).expect("write");
    }
    let mut want = orig.clone();
    want.extend_from_slice(b"NEW");
    assert_same(
        "f written after the rollback",
        &fs::read(&f).expect("read"),
        &want,
    );
    m.umount();
    m.fsck_clean();
    println!(
        "rollback_shows_snapshot_sizes_even_for_cached_inodes: {:?}",
        t0.elapsed()
    );
}

// ------------------------------------------------------------------ 4. range clone

#[test]
fn range_clone_grows_destination_as_seen_by_kernel() {
    if !is_root() {
        return;
    }
    let t0 = Instant::now();
    let m = Mount::new();
    let (src, dst, mid) = (m.path("src"), m.path("dst"), m.path("mid"));
    let s = data(64 << 10, 3);
    let d = data(8 << 10, 4);
    let md = data(128 << 10, 5);
    fs::write(&src, &s).expect("write");
    fs::write(&dst, &d).expect("write");
    fs::write(&mid, &md).expect("write");
    // Cache size, attributes and pages of both destinations.
    assert_eq!(fs::metadata(&dst).expect("stat").len(), 8192);
    assert_same("dst before", &fs::read(&dst).expect("read"), &d);
    assert_same("mid before", &fs::read(&mid).expect("read"), &md);
    let range = |so: &str, doff: &str, len: &str, to: &Path| {
        cowfs(&["clone", "--range", so, doff, len, p(&src), p(to)])
    };
    ok("range clone into dst", &range("0", "8192", "65536", &dst));
    assert_eq!(
        fs::metadata(&dst).expect("stat").len(),
        8192 + (64 << 10),
        "dst's size as the kernel shows it after a growing range clone"
    );
    let mut want = d.clone();
    want.extend_from_slice(&s);
    assert_same(
        "dst after the range clone",
        &fs::read(&dst).expect("read"),
        &want,
    );
    // Into the middle of a cached file: size kept, the cached pages replaced.
    ok(
        "range clone into mid",
        &range("4096", "16384", "32768", &mid),
    );
    let mut want_mid = md.clone();
    want_mid[16384..16384 + 32768].copy_from_slice(&s[4096..4096 + 32768]);
    assert_eq!(fs::metadata(&mid).expect("stat").len(), 128 << 10);
    assert_same(
        "mid after the range clone",
        &fs::read(&mid).expect("read"),
        &want_mid,
    );
    // Shared, not linked: writing dst leaves src alone.
    OpenOptions::new()
        .write(true)
        .open(&dst)
        .expect("open")
        .write_all_at(b"XYZ", 8192)
        .expect("write");
    assert_same("src after writing dst", &fs::read(&src).expect("read"), &s);
    want[8192..8195].copy_from_slice(b"XYZ");
    m.umount();
    m.fsck_clean();
    m.mount();
    assert_same("dst after a remount", &fs::read(&dst).expect("read"), &want);
    assert_same(
        "mid after a remount",
        &fs::read(&mid).expect("read"),
        &want_mid,
    );
    println!(
        "range_clone_grows_destination_as_seen_by_kernel: {:?}",
        t0.elapsed()
    );
}

// ------------------------------------------------------------------ 5. set-user-ID, capabilities

const NOBODY: u32 = 65534;

/// Runs `sh -c script path` as uid and gid 65534.
fn as_nobody(script: &str, path: &Path) -> Output {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg("sh").arg(path);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run sh as nobody")
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path")
}

/// The permission bits of `path`, in octal as `ls` would show them.
fn mode(path: &Path) -> String {
    format!("{:o}", fs::metadata(path).expect("stat").mode() & 0o7777)
}

/// `security.capability` of `path`: Ok(value) or Err(errno).
fn get_cap(path: &Path) -> Result<Vec<u8>, i32> {
    let c = cpath(path);
    let mut buf = vec![0u8; 64];
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

#[test]
fn setuid_cleared_on_write_by_non_root() {
    if !is_root() {
        return;
    }
    let t0 = Instant::now();
    let m = Mount::new();
    // nobody must reach the mount: the temporary directory is 0700.
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o755)).expect("chmod");
    let f = m.path("suid");
    fs::write(&f, b"abcdefghijklmnopqrstuvwxyz").expect("write");
    // chown first: chown itself clears the bits.
    assert_eq!(
        unsafe { libc::chown(cpath(&f).as_ptr(), NOBODY, NOBODY) },
        0
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).expect("chmod");
    assert_eq!(mode(&f), "6755");
    // A write by the owner (not root, no CAP_FSETID): no truncation (`1<>`).
    let out = as_nobody("printf 0123456789 1<> \"$1\"", &f);
    ok("write as nobody", &out);
    assert_eq!(
        mode(&f),
        "755",
        "set-user-ID and set-group-ID (group-executable) after a write by nobody"
    );
    assert_eq!(fs::read(&f).expect("read"), b"0123456789klmnopqrstuvwxyz");
    // A truncation by the owner clears them too.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
    assert_eq!(mode(&f), "4755");
    ok("truncate as nobody", &as_nobody(": > \"$1\"", &f));
    assert_eq!(mode(&f), "755", "set-user-ID after a truncate by nobody");
    assert_eq!(fs::metadata(&f).expect("stat").len(), 0);
    // Root (CAP_FSETID) keeps them on write.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .expect("open")
        .write_all_at(b"root", 0)
        .expect("write");
    assert_eq!(mode(&f), "4755", "root's write keeps set-user-ID");
    // chown clears them, even by root.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).expect("chmod");
    assert_eq!(unsafe { libc::chown(cpath(&f).as_ptr(), 0, 0) }, 0);
    assert_eq!(mode(&f), "755", "set-user-ID and set-group-ID after chown");
    // The same from a fresh mount (nothing cached): the daemon's own modes.
    assert_eq!(
        unsafe { libc::chown(cpath(&f).as_ptr(), NOBODY, NOBODY) },
        0
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
    m.umount();
    m.mount();
    assert_eq!(mode(&f), "4755", "after a remount");
    ok("write as nobody", &as_nobody("printf x 1<> \"$1\"", &f));
    assert_eq!(mode(&f), "755", "after a write by nobody on a fresh mount");
    m.umount();
    m.mount();
    assert_eq!(mode(&f), "755", "the cleared bits were stored");

    // security.capability goes on any write. vfs_cap_data revision 2: magic with the
    // effective flag, then (permitted, inheritable) x 2; permitted = CAP_NET_RAW.
    let c = m.path("cap");
    fs::write(&c, b"0123456789abcdef").expect("write");
    let mut cap = Vec::new();
    cap.extend_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    cap.extend_from_slice(&(1u32 << 13).to_le_bytes());
    cap.extend_from_slice(&[0u8; 12]);
    let rc = unsafe {
        libc::setxattr(
            cpath(&c).as_ptr(),
            c"security.capability".as_ptr(),
            cap.as_ptr().cast(),
            cap.len(),
            0,
        )
    };
    if rc != 0 {
        println!(
            "setuid_cleared_on_write_by_non_root: cannot set security.capability ({}); \
             capability part skipped",
            std::io::Error::last_os_error()
        );
    } else {
        assert_eq!(get_cap(&c), Ok(cap.clone()), "the capability is set");
        {
            let w = OpenOptions::new().write(true).open(&c).expect("open");
            w.write_all_at(b"XXXXXXXXXX", 0).expect("write");
            // No fsync and no close yet: write(2) has returned.
            assert_eq!(
                get_cap(&c),
                Err(libc::ENODATA),
                "security.capability right after a write(2) (fd still open, no fsync)"
            );
        }
        assert_eq!(get_cap(&c), Err(libc::ENODATA), "after close");
        // And on truncate.
        let set = || unsafe {
            libc::setxattr(
                cpath(&c).as_ptr(),
                c"security.capability".as_ptr(),
                cap.as_ptr().cast(),
                cap.len(),
                0,
            )
        };
        assert_eq!(set(), 0, "set the capability again");
        OpenOptions::new()
            .write(true)
            .open(&c)
            .expect("open")
            .set_len(4)
            .expect("truncate");
        assert_eq!(get_cap(&c), Err(libc::ENODATA), "after a truncate");
        assert_eq!(set(), 0, "set the capability again");
        assert_eq!(
            unsafe { libc::chown(cpath(&c).as_ptr(), NOBODY, NOBODY) },
            0
        );
        assert_eq!(get_cap(&c), Err(libc::ENODATA), "after a chown");
        // And by the daemon, not only in the kernel's cache: after a remount.
        assert_eq!(set(), 0, "set the capability again");
        OpenOptions::new()
            .write(true)
            .open(&c)
            .expect("open")
            .write_all_at(b"Y", 0)
            .expect("write");
        m.umount();
        m.mount();
        assert_eq!(
            get_cap(&c),
            Err(libc::ENODATA),
            "after a write and a remount"
        );
    }
    m.umount();
    m.fsck_clean();
    println!("setuid_cleared_on_write_by_non_root: {:?}", t0.elapsed());
}
