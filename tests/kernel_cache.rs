//! What the kernel caches on a default mount (no OPEN, no OPENDIR: the kernel keeps
//! directory listings; READDIRPLUS hands out entries with their attributes), and that
//! nothing cached goes stale when a change comes from behind the kernel's back.

mod common;

use common::{Mount, cowfs};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn names(d: &Path) -> BTreeSet<String> {
    fs::read_dir(d)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop_caches");
}

#[test]
fn a_clone_into_a_listed_directory_shows_at_once() {
    let m = Mount::new();
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    fs::write(m.path("src"), b"data").expect("write");
    fs::write(d.join("a"), b"a").expect("write");
    // Listed twice: the second listing comes from the kernel's cache.
    assert_eq!(names(&d), names(&d));
    ok(cowfs(&["clone", m.s(&m.path("src")), m.s(&d.join("b"))]));
    assert_eq!(names(&d), ["a", "b"].map(String::from).into());
    assert_eq!(fs::read(d.join("b")).expect("read"), b"data");
    // A tree clone, too.
    fs::create_dir(m.path("e")).expect("mkdir");
    assert!(names(&m.mnt).contains("e"));
    ok(cowfs(&["clone", "-r", m.s(&d), m.s(&m.path("e/t"))]));
    assert_eq!(names(&m.path("e")), ["t"].map(String::from).into());
    assert_eq!(names(&m.path("e/t")), ["a", "b"].map(String::from).into());
    m.umount_and_fsck_clean();
}

#[test]
fn snapshots_and_rollback_show_in_cached_listings() {
    let m = Mount::new();
    let snaps = m.path(".snapshots");
    fs::write(m.path("kept"), b"1").expect("write");
    assert!(names(&snaps).is_empty());
    assert_eq!(names(&m.mnt), ["kept"].map(String::from).into());
    ok(cowfs(&["snapshot", "create", m.s(&m.mnt), "s1"]));
    assert_eq!(names(&snaps), ["s1"].map(String::from).into());
    fs::write(m.path("later"), b"2").expect("write");
    assert_eq!(names(&m.mnt).len(), 2);
    ok(cowfs(&["snapshot", "rollback", m.s(&m.mnt), "s1"]));
    assert_eq!(names(&m.mnt), ["kept"].map(String::from).into());
    ok(cowfs(&["snapshot", "delete", m.s(&m.mnt), "s1"]));
    assert!(names(&snaps).is_empty(), "{:?}", names(&snaps));
    m.umount_and_fsck_clean();
}

#[test]
fn listed_entries_are_counted_and_freed_after_removal() {
    // `ls -l` goes through READDIRPLUS, which hands every entry to the kernel (a lookup
    // each). Removing them all must still free every inode once the kernel forgets them.
    let m = Mount::new();
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    for i in 0..3000 {
        fs::write(
            d.join(format!("file-with-a-longish-name-{i:05}")),
            [1u8; 100],
        )
        .expect("write");
    }
    drop_caches();
    let ls = std::process::Command::new("ls")
        .args(["-l", m.s(&d)])
        .output()
        .expect("ls");
    assert!(ls.status.success());
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 3001);
    // Every name listed resolves to its file.
    for i in (0..3000).step_by(97) {
        let md = fs::metadata(d.join(format!("file-with-a-longish-name-{i:05}"))).expect("stat");
        assert_eq!(md.len(), 100);
    }
    fs::remove_dir_all(&d).expect("rm -rf");
    drop_caches();
    let out = cowfs(&["stats", m.s(&m.mnt)]);
    ok(out);
    m.umount_and_fsck_clean();
}

#[test]
fn an_unlinked_open_file_lives_on_without_a_handle() {
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, vec![7u8; 1 << 20]).expect("write");
    let f = fs::File::open(&p).expect("open");
    fs::remove_file(&p).expect("unlink");
    drop_caches();
    let mut b = vec![0u8; 4096];
    f.read_exact_at(&mut b, 512 << 10)
        .expect("read after unlink");
    assert!(b.iter().all(|&x| x == 7));
    drop(f);
    m.umount_and_fsck_clean();
}

#[test]
fn dedup_without_handles_follows_linux_rules_for_a_read_only_descriptor() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let m = Mount::new();
    std::fs::set_permissions(m.tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tmp");
    let data = vec![3u8; 64 << 10];
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, &data).expect("write a");
    fs::write(&b, &data).expect("write b");
    fs::set_permissions(&b, fs::Permissions::from_mode(0o644)).expect("chmod b");
    // nobody may read a and b but write neither: dedup leaves them alone (the command
    // reports what it skipped and exits 0).
    let used = common::statvfs_used(&m.mnt);
    let out = std::process::Command::new(common::BIN)
        .args(["dedup", m.s(&m.mnt), m.s(&a), m.s(&b)])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run dedup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = common::statvfs_used(&m.mnt);
    assert_eq!(before, used, "nobody's dedup changed nothing");
    // root, with a read-only descriptor, may: Linux lets whoever may write the file
    // dedup it through any descriptor.
    ok(cowfs(&["dedup", m.s(&m.mnt), m.s(&a), m.s(&b)]));
    assert!(
        common::statvfs_used(&m.mnt) < before,
        "root's dedup shared the pages"
    );
    m.umount_and_fsck_clean();
}
