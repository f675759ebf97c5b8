//! The fuzz targets (`fuzz/fuzz_targets/`, run with `cargo fuzz`) on the stable toolchain,
//! so they cannot rot: every decoder of an on-disk structure, journal replay and a whole
//! store with one page replaced get (1) each file of the checked-in corpus
//! `fuzz/corpus/<target>/` (valid encodings and the inputs that once crashed them) and
//! (2) mutations of valid encodings: flipped bits, overwritten fields (0, 1, all ones,
//! random), cut short, grown with random bytes; checksums are re-sealed by the targets so
//! the values reach the checks behind them. The only assertion is the contract: no panic,
//! and an answer of Ok or an allowed error (`cowfs::fuzzing::run`).
//!
//! `COWFS_FUZZ_CASES` sets the mutations per seed (default 400 in a debug build, 4000 in
//! release; the store-opening targets run a tenth of that).

use cowfs::fuzzing::{self, Outcome, TARGETS};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A small deterministic generator (xorshift64*), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn cases() -> usize {
    // Release builds run ten times as many (a few seconds in all).
    let default = if cfg!(debug_assertions) { 400 } else { 4000 };
    std::env::var("COWFS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One mutation of `seed`.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            v.push(rng.next() as u8);
            continue;
        }
        // Half the edits land in the first 300 bytes, where the headers and fields are.
        let at = if rng.below(2) == 0 {
            rng.below(v.len().min(300))
        } else {
            rng.below(v.len())
        };
        match rng.below(7) {
            0 => v[at] ^= 1 << rng.below(8),
            1 => v[at] = rng.next() as u8,
            2 | 3 => {
                let width = [1, 2, 4, 8][rng.below(4)];
                let val: u64 = match rng.below(4) {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    _ => rng.next() >> rng.below(64),
                };
                for (k, b) in val.to_le_bytes().iter().take(width).enumerate() {
                    if let Some(x) = v.get_mut(at + k) {
                        *x = *b;
                    }
                }
            }
            4 => v.truncate(at),
            5 => {
                let n = 1 + rng.below(64);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
            _ => {
                // Copy a run from elsewhere (a real field into the wrong place).
                let from = rng.below(v.len());
                let n = rng.below(16).min(v.len() - from).min(v.len() - at);
                v.copy_within(from..from + n, at);
            }
        }
    }
    v
}

/// Runs one input; a panic or a forbidden error fails the test, saving the input.
fn check(target: &str, data: &[u8], what: &str) -> Outcome {
    let r = catch_unwind(AssertUnwindSafe(|| fuzzing::run(target, data)));
    let why = match r {
        Ok(Ok(o)) => return o,
        Ok(Err(e)) => e,
        Err(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    };
    let dir = std::env::temp_dir()
        .join("cowfs-fuzz-failures")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{:016x}", crc32fast::hash(data)));
    let _ = std::fs::write(&file, data);
    panic!(
        "{target} ({what}): {why}; input saved as {} (copy it into fuzz/corpus/{target}/)",
        file.display()
    );
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(corpus_dir(target)) {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                out.push((e.file_name().to_string_lossy().into_owned(), b));
            }
        }
    }
    out.sort();
    out
}

fn run_target(target: &str, per_seed: usize) {
    let files = corpus(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target}/ is empty: seed it (cargo test --test fuzz_corpus -- --ignored write_seeds)"
    );
    let mut refused = 0;
    for (name, data) in &files {
        if let Outcome::Refused(_) = check(target, data, &format!("corpus file {name}")) {
            refused += 1;
        }
    }
    let seeds = fuzzing::seeds(target);
    assert!(!seeds.is_empty(), "{target} has no seeds");
    for seed in &seeds {
        assert!(
            matches!(check(target, seed, "seed"), Outcome::Ok),
            "{target}: a valid encoding must decode"
        );
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ crc32fast::hash(target.as_bytes()) as u64);
    let (mut ok, mut bad) = (0, 0);
    for (k, seed) in seeds
        .iter()
        .cycle()
        .take(per_seed * seeds.len().min(4))
        .enumerate()
    {
        let m = mutate(&mut rng, seed);
        match check(target, &m, &format!("mutation {k}")) {
            Outcome::Ok => ok += 1,
            Outcome::Refused(_) => bad += 1,
        }
    }
    eprintln!(
        "{target}: {} corpus files ({refused} refused), {} mutations: {ok} decoded, {bad} refused",
        files.len(),
        ok + bad
    );
    // The checks must be reachable: some mutations are refused by them.
    assert!(
        bad > 0,
        "{target}: no mutation was refused; the checks are not reached"
    );
}

macro_rules! targets {
    ($($name:ident: $per:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_target(stringify!($name), $per);
            }
        )*
    };
}

targets! {
    superblock: cases(),
    group_header: cases(),
    map_node: cases(),
    inode_page: cases(),
    dir_block: cases(),
    blob_page: cases(),
    xattr_blob: cases(),
    snap_list: cases(),
    journal: cases() / 10,
    store_page: cases() / 10,
}

#[test]
fn every_target_is_tested_and_has_a_fuzz_target() {
    let src = include_str!("fuzz_corpus.rs");
    for t in TARGETS {
        assert!(src.contains(&format!("    {t}: ")), "{t} has no test here");
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{t}.rs"));
        assert!(f.exists(), "{} is missing", f.display());
    }
}

/// Writes each target's seeds into `fuzz/corpus/<target>/seed-N` (run by hand when the
/// format or the seeds change; the files are checked in).
#[test]
#[ignore]
fn write_seeds() {
    for t in TARGETS {
        let dir = corpus_dir(t);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (i, s) in fuzzing::seeds(t).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), s).expect("write seed");
        }
    }
}

fn refused(target: &str, data: &[u8]) -> bool {
    matches!(check(target, data, "known bad input"), Outcome::Refused(_))
}

/// A snapshot record as `snap.rs` encodes it.
fn snap_rec(id: u64, flags: u32, depth: u64, next: u64, name: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 52];
    r[0..8].copy_from_slice(&id.to_le_bytes());
    r[20..24].copy_from_slice(&flags.to_le_bytes());
    r[24..32].copy_from_slice(&(if depth > 0 { 9u64 } else { 0 }).to_le_bytes());
    r[32..40].copy_from_slice(&depth.to_le_bytes());
    r[40..48].copy_from_slice(&next.to_le_bytes());
    r[48..52].copy_from_slice(&(name.len() as u32).to_le_bytes());
    r.extend_from_slice(name);
    r
}

#[test]
fn known_bad_inputs_are_refused() {
    let good = snap_rec(1, 0, 2, 40, b"a");
    assert!(!refused("snap_list", &good));
    for bad in [
        snap_rec(0, 0, 2, 40, b"a"),                          // id 0
        snap_rec(1 << 23, 0, 2, 40, b"a"),                    // id past SnapId::MAX
        [good.clone(), snap_rec(1, 0, 2, 40, b"b")].concat(), // id twice
        [good.clone(), snap_rec(2, 0, 2, 40, b"a")].concat(), // name twice
        snap_rec(1, 4, 2, 40, b"a"),                          // unknown flag
        snap_rec(1, 2, 2, 40, b"a"),                          // dropping but named
        snap_rec(1, 0, 2, 40, b""),                           // live but nameless
        snap_rec(1, 0, 6, 40, b"a"),                          // depth past MAX_DEPTH
        snap_rec(1, 0, 2, 1 << 40, b"a"),                     // inode numbers into the view bits
        good[..30].to_vec(),                                  // cut short
    ] {
        assert!(refused("snap_list", &bad), "{bad:?}");
    }
    // xattr records: whole, in a namespace, each name once.
    let rec = |n: &[u8], v: &[u8]| {
        [
            vec![n.len() as u8],
            (v.len() as u32).to_le_bytes().to_vec(),
            n.to_vec(),
            v.to_vec(),
        ]
        .concat()
    };
    assert!(!refused("xattr_blob", &rec(b"user.x", b"1")));
    for bad in [
        rec(b"other.x", b"1"),
        rec(b"user.", b"1"),
        [rec(b"user.x", b"1"), rec(b"user.x", b"2")].concat(),
        rec(b"user.x", b"1")[..8].to_vec(),
        [rec(b"user.x", b"1"), vec![0, 0]].concat(),
    ] {
        assert!(refused("xattr_blob", &bad), "{bad:?}");
    }
    // Blob pages: nothing in the header bytes, nothing past the blob's end.
    let page = |n: u16, at: usize| {
        let mut v = n.to_le_bytes().to_vec();
        v.resize(2 + 4096, 0);
        v[2] = 0x42; // any kind: the checksum and kind are the store's business
        v[2 + at] = 1;
        v
    };
    assert!(!refused("blob_page", &page(100, 16 + 99)));
    assert!(refused("blob_page", &page(100, 16 + 100)));
    assert!(refused("blob_page", &page(100, 9)));
    // The bug of issue 14: a group count whose file length wraps.
    let mut sb = fuzzing::seeds("superblock").remove(0);
    sb[32..40].copy_from_slice(&(u64::MAX / (1020 * 4096) + 2).to_le_bytes());
    assert!(refused("superblock", &sb));
}
