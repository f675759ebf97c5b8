//! `cowfs pages demo` and `cowfs pages bench` as a user runs them: the counters they print
//! tell the fork story exactly, on the memory store and on disk, and bad sizes fail cleanly.

mod common;
use common::cowfs;

/// The number after `"key":` in a one-object JSON text.
fn field(obj: &str, key: &str) -> u64 {
    let at = obj
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {obj}"));
    let rest = &obj[at + key.len() + 3..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().expect("a number")
}

fn demo(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["pages", "demo", "--pages", "300", "--json"];
    args.extend_from_slice(extra);
    let o = cowfs(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).expect("utf-8");
    out.split("},").map(str::to_owned).collect()
}

fn check_story(steps: &[String]) {
    assert_eq!(steps.len(), 10, "ten steps");
    let (a, fork, write) = (&steps[0], &steps[1], &steps[3]);
    assert_eq!(field(a, "resident"), 300);
    assert_eq!(
        field(fork, "allocated"),
        field(a, "allocated"),
        "fork allocates nothing"
    );
    assert_eq!(
        field(fork, "shared"),
        300,
        "after fork every page is shared"
    );
    assert_eq!(field(write, "cow_faults"), 1, "one write, one fault");
    assert_eq!(field(write, "shared"), 299);
    assert_eq!(field(&steps[5], "zero_page_reads"), 1024);
    assert_eq!(
        field(&steps[5], "allocated"),
        field(&steps[4], "allocated"),
        "zero-page reads allocate nothing"
    );
    let last = &steps[9];
    assert_eq!(
        field(last, "freed"),
        field(last, "allocated"),
        "everything is freed when the last space exits"
    );
}

#[test]
fn demo_tells_the_fork_story_in_memory_and_on_disk() {
    check_story(&demo(&[]));
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("store");
    check_story(&demo(&["--store", dir.to_str().expect("utf-8")]));
}

#[test]
fn bench_faults_once_per_page_written() {
    let o = cowfs(&["pages", "bench", "--size", "8M", "--forks", "3", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).expect("utf-8");
    assert_eq!(field(&out, "pages"), 2048);
    assert_eq!(
        field(&out, "cow_faults"),
        2048,
        "every page written after fork copies"
    );
}

#[test]
fn sizes_that_do_not_fit_fail_with_one_line() {
    for args in [
        &["pages", "bench", "--size", "900T"][..],
        &["pages", "demo", "--pages", "100000000000"][..],
    ] {
        let o = cowfs(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("--store"), "{err}");
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("x"), b"x").expect("write");
    let o = cowfs(&[
        "pages",
        "demo",
        "--store",
        tmp.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a non-empty --store directory is refused"
    );
}
