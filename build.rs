//! Puts the git commit into `cowfs --version` when built from a checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !s.trim().is_empty()).then(|| s.trim().to_string())
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let full = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => format!("{version} (git {commit})"),
        None => version.to_string(),
    };
    println!("cargo:rustc-env=COWFS_VERSION={full}");
    // Rebuilt when HEAD moves (a commit, a checkout), not on every edit.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "logs/HEAD"] {
            // A path that does not exist would rerun this script (and rebuild) every time.
            if std::path::Path::new(&dir).join(f).exists() {
                println!("cargo:rerun-if-changed={dir}/{f}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
