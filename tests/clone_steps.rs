//! `cowfs clone -r` on a real mount runs in short steps: other requests are answered
//! while a big tree is copied, the copy equals the source (names, sizes, bytes, modes,
//! symlinks, hard links within the tree), and a copy removed or renamed while it is
//! being made fails the clone cleanly (or not at all), with fsck clean after.

mod common;

use common::{BIN, Mount, cowfs, is_root};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

fn clone_r(src: &Path, dst: &Path) -> std::process::Output {
    cowfs(&[
        "clone",
        "-r",
        src.to_str().expect("utf-8"),
        dst.to_str().expect("utf-8"),
    ])
}

/// A source tree `top` of `dirs` x `files` small files of varied sizes and modes, with
/// a symlink and hard links across directories in each.
fn make_tree(top: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = top.join(format!("d{d}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..files {
            let p = dir.join(format!("f{f}"));
            fs::write(&p, format!("{d}/{f}").repeat(f % 7 + 1)).expect("write");
            if f % 5 == 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
            }
        }
        std::os::unix::fs::symlink(format!("f{}", d % files.max(1)), dir.join("sl"))
            .expect("symlink");
        if d > 0 {
            fs::hard_link(top.join("d0/f1"), dir.join("link-to-d0-f1")).expect("link");
        }
    }
}

/// Doubles the tree at `top` (a clone of it moved inside it) until cloning it takes at
/// least `want`, or it holds `max` files; returns the file count.
fn grow(m: &Mount, top: &Path, mut files: usize, want: Duration, max: usize) -> usize {
    let mut round = 0;
    loop {
        let tmp = m.path(&format!("grow{round}"));
        let t = Instant::now();
        let out = clone_r(top, &tmp);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let took = t.elapsed();
        fs::rename(&tmp, top.join(format!("g{round}"))).expect("rename");
        files *= 2;
        round += 1;
        if took * 2 >= want || files >= max {
            return files;
        }
    }
}

/// What a tree holds, keyed by path: (mode, size, bytes or link target, link group).
/// Paths that are one inode share a link group: the smallest path among them.
type Shape = BTreeMap<String, (u32, u64, Vec<u8>, String)>;

fn shape(top: &Path) -> Shape {
    let mut out = Shape::new();
    let mut groups: HashMap<u64, String> = HashMap::new();
    let mut todo = vec![PathBuf::new()];
    let mut all = Vec::new();
    while let Some(rel) = todo.pop() {
        for e in fs::read_dir(top.join(&rel)).expect("readdir") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path()).expect("lstat");
            if md.is_dir() {
                todo.push(r.clone());
            }
            all.push((r, md));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (r, md) in all {
        let p = top.join(&r);
        let body = if md.file_type().is_symlink() {
            fs::read_link(&p)
                .expect("readlink")
                .into_os_string()
                .into_vec()
        } else if md.is_file() {
            fs::read(&p).expect("read")
        } else {
            Vec::new()
        };
        let key = r.to_string_lossy().into_owned();
        let group = if md.is_file() && md.nlink() > 1 {
            groups
                .entry(md.ino())
                .or_insert_with(|| key.clone())
                .clone()
        } else {
            key.clone()
        };
        let size = if md.is_dir() { 0 } else { md.len() };
        out.insert(key, (md.mode(), size, body, group));
    }
    out
}

use std::os::unix::ffi::OsStringExt;

#[test]
fn touch_is_answered_during_a_big_tree_clone_and_the_copy_is_exact() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let src = m.path("src");
    make_tree(&src, 20, 100);
    // Big enough that one operation for the whole clone would hold requests up for
    // longer than the latency asserted below.
    let files = grow(&m, &src, 2000, Duration::from_millis(600), 300_000);
    let probe = m.path("probe");
    fs::write(&probe, b"p").expect("probe");
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (stop, probe) = (stop.clone(), probe.clone());
        thread::spawn(move || {
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&probe)
                    .expect("open");
                f.set_modified(std::time::SystemTime::now()).expect("touch");
                drop(f);
                done.push((t, t.elapsed()));
                thread::sleep(Duration::from_millis(5));
            }
            done
        })
    };
    thread::sleep(Duration::from_millis(50));
    let dst = m.path("dst");
    let t0 = Instant::now();
    let out = clone_r(&src, &dst);
    let t1 = Instant::now();
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let touches = toucher.join().expect("toucher");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = t1 - t0;
    let worst = touches.iter().map(|t| t.1).max().unwrap_or_default();
    // Touches that started and ended inside the middle half of the clone.
    let (a, b) = (t0 + took / 4, t1 - took / 4);
    let inside = touches
        .iter()
        .filter(|(s, d)| *s >= a && *s + *d <= b)
        .count();
    eprintln!(
        "clone -r of {files} files: {took:?}; {} touches, the slowest {worst:?}, {inside} \
         in the middle half",
        touches.len()
    );
    assert!(worst < Duration::from_millis(500), "a touch took {worst:?}");
    assert!(
        inside >= 3,
        "only {inside} touches were answered in the middle of a {took:?} clone"
    );
    let (s, d) = (shape(&src), shape(&dst));
    assert_eq!(s.len(), d.len(), "entry counts");
    assert!(s == d, "the copy differs from the source");
    // Hard links within the tree are links in the copy, apart from the source's.
    let (a, b) = (
        fs::metadata(dst.join("d3/link-to-d0-f1")).expect("stat"),
        fs::metadata(dst.join("d0/f1")).expect("stat"),
    );
    assert_eq!(a.ino(), b.ino());
    assert_ne!(
        a.ino(),
        fs::metadata(src.join("d0/f1")).expect("stat").ino()
    );
    assert_eq!(
        a.nlink(),
        fs::metadata(src.join("d0/f1")).expect("stat").nlink()
    );
    m.umount_and_fsck_clean();
}

/// Runs `clone -r src dst` while `meddle` runs on the destination in a loop; returns
/// the clone's output.
fn clone_while(src: &Path, dst: &Path, meddle: impl Fn(&Path) + Send + 'static) -> String {
    let mut child = Command::new(BIN)
        .args(["clone", "-r"])
        .arg(src)
        .arg(dst)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn clone");
    let dst = dst.to_path_buf();
    let t = Instant::now();
    while child.try_wait().expect("wait").is_none() && t.elapsed() < Duration::from_secs(120) {
        if dst.exists() {
            meddle(&dst);
        }
        thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output().expect("clone output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => "ok".into(),
        Some(1) => err,
        c => panic!("clone ended with {c:?}: {err}"),
    }
}

#[test]
fn a_copy_removed_or_renamed_while_it_is_made_fails_cleanly() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let src = m.path("src");
    make_tree(&src, 20, 100);
    grow(&m, &src, 2000, Duration::from_millis(300), 100_000);
    // Removed from under the walk: the clone fails with ENOENT, or the removal lost
    // the race and the clone finished.
    let dst = m.path("gone");
    let r = clone_while(&src, &dst, |d| {
        let _ = fs::remove_dir_all(d);
    });
    eprintln!("removed: {r}");
    assert!(
        r == "ok" || r.contains("No such file or directory"),
        "unexpected: {r}"
    );
    if r != "ok" {
        assert!(r.contains("partial copy"), "{r}");
    }
    let _ = fs::remove_dir_all(&dst);
    // Renamed away and a name taken in it: the walk follows the copy (it works by inode,
    // not by path) or fails with EEXIST.
    let dst = m.path("moved");
    let away = m.path("away");
    let r = clone_while(&src, &dst, move |d| {
        if fs::rename(d, &away).is_ok() {
            let _ = fs::write(away.join("d19"), b"in the way");
        }
    });
    eprintln!("renamed: {r}");
    assert!(r == "ok" || r.contains("File exists"), "unexpected: {r}");
    // The mount still works and the store is consistent.
    fs::write(m.path("after"), b"x").expect("write after");
    assert_eq!(fs::read(m.path("after")).expect("read"), b"x");
    m.umount_and_fsck_clean();
}

#[test]
fn a_killed_clone_stops_and_leaves_a_consistent_partial_copy() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let src = m.path("src");
    make_tree(&src, 20, 100);
    grow(&m, &src, 2000, Duration::from_millis(600), 300_000);
    let dst = m.path("dst");
    let before = {
        let st = nix_statvfs(&m.mnt);
        st.0 - st.1
    };
    let mut child = Command::new(BIN)
        .args(["clone", "-r"])
        .arg(&src)
        .arg(&dst)
        .spawn()
        .expect("spawn clone");
    let t = Instant::now();
    while !dst.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the clone never started"
        );
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(20));
    child.kill().expect("kill");
    let _ = child.wait();
    // The daemon notices between steps: the copy stops growing. statfs reaches the
    // daemon every time (no kernel cache): its inode count says whether inodes are still
    // being made.
    let made = || {
        let st = nix_statvfs(&m.mnt);
        st.0 - st.1
    };
    thread::sleep(Duration::from_millis(300));
    let a = made();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a,
        made(),
        "the copy still grows after its caller was killed"
    );
    let copied = a.saturating_sub(before);
    let total = count_src(&src) as u64;
    assert!(
        copied < total,
        "the clone ran to its end ({copied} of {total}): nothing was tested"
    );
    m.umount_and_fsck_clean();
}

fn count_src(src: &Path) -> usize {
    let out = Command::new("du")
        .args(["--inodes", "-s"])
        .arg(src)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// (f_files, f_ffree) of the filesystem at `p`.
fn nix_statvfs(p: &Path) -> (u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid C string and `st` a writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs");
    (st.f_files, st.f_ffree)
}
