//! The `cowfs` command: parse, set up logging, call the library, report.

use clap::Parser;
use std::io::Write;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cowfs::cli::Cli::parse();
    match cowfs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cowfs: {e}");
            std::process::exit(1);
        }
    }
}
