//! `cowfs completions SHELL` (a completion script on stdout) and `cowfs man DIR` (manual
//! pages, one per command), both made from the command line's own definition.

use crate::cli::Cli;
use crate::error::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: Shell) -> Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "cowfs", &mut out);
    Ok(())
}

/// Writes `cowfs.1` and a `cowfs-COMMAND.1` for every command into `dir`; prints their
/// names.
pub fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cowfs") && n.ends_with(".1"))
        .collect();
    names.sort();
    for n in names {
        println!("{}", dir.join(n).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "cowfs", &mut buf);
        String::from_utf8(buf).expect("should work")
    }

    #[test]
    fn every_shell_completes_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for sub in [
                "mount",
                "umount",
                "snapshot",
                "sync",
                "completions",
                "commit-interval",
            ] {
                assert!(s.contains(sub), "{shell}: no {sub}");
            }
        }
        assert!(script(Shell::Bash).contains("complete -F _cowfs"));
        assert!(script(Shell::Zsh).starts_with("#compdef cowfs"));
    }

    #[test]
    fn man_pages_for_each_command() {
        let t = tempfile::tempdir().expect("should work");
        man(t.path()).expect("should work");
        for page in [
            "cowfs.1",
            "cowfs-mount.1",
            "cowfs-snapshot-create.1",
            "cowfs-sync.1",
        ] {
            let text = std::fs::read_to_string(t.path().join(page)).expect("should work");
            assert!(text.contains(".TH"), "{page}");
        }
        assert!(
            !t.path().join("cowfs-man.1").exists(),
            "the hidden command has no page"
        );
    }
}
