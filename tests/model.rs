//! Model-based test: random sequences of write / truncate / punch / copy_range (page
//! sharing) / fsync / clean reopen / crash, applied to cowfs and to an in-memory reference.
//! After every reopen and at the end, every byte of every file must match the reference
//! (after a crash: the reference as of the last fsync), and the recomputed reference counts
//! must match the stored ones. Snapshots are part of the model: each keeps a copy of the
//! files, which reading through the snapshot must match, and rollback restores it.

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs};
use cowfs::page::{CrashBackend, CrashImage};
use cowfs::store::Store;
use proptest::prelude::*;

const FILES: usize = 3;
const PS: u64 = 4096;

#[derive(Debug, Clone)]
enum Op {
    Write {
        f: usize,
        off: u64,
        len: usize,
        seed: u8,
    },
    Truncate {
        f: usize,
        size: u64,
    },
    Punch {
        f: usize,
        off: u64,
        len: u64,
    },
    /// fallocate mode 0 (or KEEP_SIZE): zero-filled pages over the holes.
    Allocate {
        f: usize,
        off: u64,
        len: u64,
        keep: bool,
    },
    Copy {
        src: usize,
        dst: usize,
        src_off: u64,
        dst_off: u64,
        len: u64,
    },
    Fsync,
    Reopen,
    Crash,
    /// Snapshot the whole tree.
    Snapshot,
    /// Roll back to snapshot `k % count`.
    Rollback(usize),
    /// Delete snapshot `k % count`.
    DeleteSnap(usize),
    /// One bounded step of freeing deleted snapshots.
    Reclaim(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..FILES;
    let pageish = prop_oneof![0u64..70, (0u64..70).prop_map(|p| p * PS)];
    prop_oneof![
        6 => (f.clone(), 0u64..3_000_000, 1usize..20_000, any::<u8>())
            .prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed }),
        2 => (f.clone(), 0u64..300_000).prop_map(|(f, size)| Op::Truncate { f, size }),
        2 => (f.clone(), 0u64..300_000, 1u64..60_000).prop_map(|(f, off, len)| Op::Punch { f, off, len }),
        1 => (f.clone(), 0u64..3_000_000, 1u64..600_000, any::<bool>())
            .prop_map(|(f, off, len, keep)| Op::Allocate { f, off, len, keep }),
        3 => (f.clone(), f.clone(), pageish.clone(), pageish.clone(), 1u64..120_000)
            .prop_map(|(src, dst, a, b, len)| Op::Copy { src, dst, src_off: a, dst_off: b, len }),
        // Same offsets on both sides: whole subtrees are grafted.
        3 => (f.clone(), f.clone(), pageish, 1u64..3_000_000)
            .prop_map(|(src, dst, a, len)| Op::Copy { src, dst, src_off: a, dst_off: a, len }),
        2 => Just(Op::Fsync),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Snapshot),
        1 => (0usize..8).prop_map(Op::Rollback),
        1 => (0usize..8).prop_map(Op::DeleteSnap),
        2 => (1u64..400).prop_map(Op::Reclaim),
    ]
}

/// Small files: sizes and offsets around the inline capacity (416 bytes in a format-2
/// store) and the first page boundaries, so files cross inline, one page and a map.
fn small_op() -> impl Strategy<Value = Op> {
    let f = 0..FILES;
    let at = prop_oneof![0u64..600, 300u64..520, 0u64..9000, Just(4096u64)];
    let len = prop_oneof![1usize..120, 1usize..600, 1usize..5000];
    prop_oneof![
        8 => (f.clone(), at.clone(), len, any::<u8>())
            .prop_map(|(f, off, len, seed)| Op::Write { f, off, len, seed }),
        3 => (f.clone(), at.clone()).prop_map(|(f, size)| Op::Truncate { f, size }),
        2 => (f.clone(), at.clone(), 1u64..600).prop_map(|(f, off, len)| Op::Punch { f, off, len }),
        1 => (f.clone(), at.clone(), 1u64..600, any::<bool>())
            .prop_map(|(f, off, len, keep)| Op::Allocate { f, off, len, keep }),
        3 => (f.clone(), f.clone(), at.clone(), at.clone(), 1u64..9000)
            .prop_map(|(src, dst, a, b, len)| Op::Copy { src, dst, src_off: a, dst_off: b, len }),
        2 => (f.clone(), f, prop_oneof![Just(0u64), Just(4096u64)], 1u64..9000)
            .prop_map(|(src, dst, a, len)| Op::Copy { src, dst, src_off: a, dst_off: a, len }),
        2 => Just(Op::Fsync),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Snapshot),
        1 => (0usize..8).prop_map(Op::Rollback),
        1 => (0usize..8).prop_map(Op::DeleteSnap),
        1 => (1u64..400).prop_map(Op::Reclaim),
    ]
}

struct Rig {
    fs: Option<Fs>,
    dev: CrashImage,
    jnl: CrashImage,
    inos: Vec<Ino>,
}

impl Rig {
    /// A fresh store of format `version`.
    fn new(version: u32) -> Rig {
        let dev = CrashBackend::new(Vec::new());
        let jnl = CrashBackend::new(Vec::new());
        let (di, ji) = (dev.image(), jnl.image());
        let mut store = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
        store.set_format_version(version).expect("version");
        let mut fs = Fs::new(store, None).expect("fs");
        let mut inos = Vec::new();
        for i in 0..FILES {
            let name = format!("f{i}");
            let (ino, _) = fs
                .mknod(
                    Ctx::ROOT,
                    Ino::ROOT,
                    name.as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                )
                .expect("mknod");
            inos.push(ino);
        }
        fs.sync().expect("sync");
        Rig {
            fs: Some(fs),
            dev: di,
            jnl: ji,
            inos,
        }
    }

    fn fs(&mut self) -> &mut Fs {
        self.fs.as_mut().expect("mounted")
    }

    fn reopen(&mut self, clean: bool) {
        let mut fs = self.fs.take().expect("mounted");
        if clean {
            fs.close().expect("close");
        }
        drop(fs);
        let dev = CrashBackend::new(self.dev.durable());
        let jnl = CrashBackend::new(self.jnl.durable());
        self.dev = dev.image();
        self.jnl = jnl.image();
        let store = Store::open(Box::new(dev), Box::new(jnl)).expect("reopen");
        self.fs = Some(Fs::new(store, None).expect("fs"));
    }

    fn verify_all(&mut self, m: &Model) {
        for (name, files) in &m.snaps {
            let id = self
                .fs()
                .snapshot_id(name.as_bytes())
                .expect("snapshot exists");
            self.fs().enter(id).expect("enter");
            self.verify_files(files);
            self.fs().leave();
        }
        assert_eq!(self.fs().snapshot_names().len(), m.snaps.len());
        self.verify(&m.files);
    }

    fn verify_files(&mut self, model: &[Vec<u8>]) {
        for (k, want) in model.iter().enumerate() {
            let ino = self.inos[k];
            let fs = self.fs();
            let got = fs.read(ino, 0, (want.len() + 10) as u32).expect("read");
            assert_eq!(got.len(), want.len(), "file {k} size");
            assert!(got == *want, "file {k} content differs");
        }
    }

    fn verify(&mut self, model: &[Vec<u8>]) {
        for (k, want) in model.iter().enumerate() {
            let ino = self.inos[k];
            let fs = self.fs();
            let got = fs.read(ino, 0, (want.len() + 10) as u32).expect("read");
            assert_eq!(got.len(), want.len(), "file {k} size");
            assert!(got == *want, "file {k} content differs");
            let attr = fs.getattr(ino).expect("getattr");
            assert_eq!(attr.size, want.len() as u64);
        }
        self.fs().sync().expect("sync");
        let rep = check(self.fs().store()).expect("check");
        assert!(rep.problems.is_empty(), "fsck: {:?}", rep.problems);
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 + i / 4096) as u8) | 1)
        .collect()
}

/// The reference: the live files and each snapshot's copy.
#[derive(Debug, Clone, Default)]
struct Model {
    files: Vec<Vec<u8>>,
    snaps: Vec<(String, Vec<Vec<u8>>)>,
    next: usize,
}

fn apply_snap(rig: &mut Rig, m: &mut Model, synced: &mut Model, op: &Op) -> bool {
    match *op {
        Op::Snapshot => {
            let name = format!("s{}", m.next);
            m.next += 1;
            rig.fs()
                .snapshot_create(name.as_bytes(), false)
                .expect("snapshot");
            m.snaps.push((name, m.files.clone()));
        }
        Op::Rollback(k) if !m.snaps.is_empty() => {
            let (name, files) = m.snaps[k % m.snaps.len()].clone();
            rig.fs()
                .snapshot_rollback(name.as_bytes())
                .expect("rollback");
            m.files = files;
        }
        Op::DeleteSnap(k) if !m.snaps.is_empty() => {
            let (name, _) = m.snaps.remove(k % m.snaps.len());
            rig.fs().snapshot_delete(name.as_bytes()).expect("delete");
        }
        Op::Reclaim(budget) => {
            rig.fs().reclaim_step(budget).expect("reclaim");
            return true;
        }
        Op::Rollback(_) | Op::DeleteSnap(_) => return true,
        _ => return false,
    }
    // Each snapshot operation commits everything.
    *synced = m.clone();
    true
}

fn apply(rig: &mut Rig, m: &mut Model, synced: &mut Model, op: &Op) {
    if apply_snap(rig, m, synced, op) {
        return;
    }
    let model = &mut m.files;
    match *op {
        Op::Write { f, off, len, seed } => {
            let data = pattern(seed, len);
            let ino = rig.inos[f];
            let n = rig.fs().write(ino, off, &data).expect("write");
            assert_eq!(n, len);
            let m = &mut model[f];
            let end = off as usize + len;
            if m.len() < end {
                m.resize(end, 0);
            }
            m[off as usize..end].copy_from_slice(&data);
        }
        Op::Truncate { f, size } => {
            let a = cowfs::ns::SetAttr {
                size: Some(size),
                ..Default::default()
            };
            let ino = rig.inos[f];
            rig.fs().setattr(Ctx::ROOT, ino, &a).expect("truncate");
            model[f].resize(size as usize, 0);
        }
        Op::Punch { f, off, len } => {
            let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
            let ino = rig.inos[f];
            rig.fs().fallocate(ino, off, len, mode).expect("punch");
            let m = &mut model[f];
            let end = ((off + len) as usize).min(m.len());
            if (off as usize) < end {
                m[off as usize..end].fill(0);
            }
        }
        Op::Allocate { f, off, len, keep } => {
            let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
            let ino = rig.inos[f];
            rig.fs().fallocate(ino, off, len, mode).expect("allocate");
            let m = &mut model[f];
            let end = (off + len) as usize;
            if !keep && end > m.len() {
                m.resize(end, 0);
            }
        }
        Op::Copy {
            src,
            dst,
            src_off,
            dst_off,
            len,
        } => {
            let (si, di) = (rig.inos[src], rig.inos[dst]);
            let slen = model[src].len() as u64;
            let n = len.min(slen.saturating_sub(src_off));
            let overlap = src == dst && n > 0 && src_off < dst_off + n && dst_off < src_off + n;
            let r = rig.fs().copy_range(si, src_off, di, dst_off, len);
            if overlap {
                assert!(r.is_err(), "overlapping copy must fail");
                return;
            }
            let copied = r.expect("copy");
            assert_eq!(copied, n);
            if n == 0 {
                return;
            }
            let data = model[src][src_off as usize..(src_off + n) as usize].to_vec();
            let m = &mut model[dst];
            let end = (dst_off + n) as usize;
            if m.len() < end {
                m.resize(end, 0);
            }
            m[dst_off as usize..end].copy_from_slice(&data);
        }
        Op::Fsync => {
            rig.fs().sync().expect("fsync");
            *synced = m.clone();
        }
        Op::Reopen => {
            rig.reopen(true);
            *synced = m.clone();
            rig.verify_all(m);
        }
        Op::Crash => {
            rig.reopen(false);
            *m = synced.clone();
            rig.verify_all(m);
        }
        _ => {}
    }
}

fn run(version: u32, ops: &[Op]) {
    let mut rig = Rig::new(version);
    let mut model = Model {
        files: vec![Vec::new(); FILES],
        ..Model::default()
    };
    let mut synced = model.clone();
    for op in ops {
        apply(&mut rig, &mut model, &mut synced, op);
    }
    rig.verify_all(&model);
    rig.reopen(true);
    rig.verify_all(&model);
    while rig.fs().reclaim_step(1000).expect("reclaim") {}
    rig.verify_all(&model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Small files crossing the inline capacity and the first page, in a format-2 store
    /// (inline) and a format-1 store (pages only).
    #[test]
    fn small_files_match_the_model(
        ops in proptest::collection::vec(small_op(), 1..50),
        v1 in proptest::bool::weighted(0.25),
    ) {
        run(if v1 { 1 } else { 2 }, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cowfs_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let mut rig = Rig::new(2);
        let mut model = Model { files: vec![Vec::new(); FILES], ..Model::default() };
        let mut synced = model.clone();
        for op in &ops {
            apply(&mut rig, &mut model, &mut synced, op);
        }
        rig.verify_all(&model);
        rig.reopen(true);
        rig.verify_all(&model);
        // Freeing every deleted snapshot returns every page they held alone.
        while rig.fs().reclaim_step(1000).expect("reclaim") {}
        rig.verify_all(&model);
    }
}
