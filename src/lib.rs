//! cowfs: a copy-on-write filesystem in userspace.
//!
//! Layers, imports pointing down only:
//!
//! ```text
//! fuse      thin fuser adapter: convert, call ns, reply (errno chosen in error.rs)
//! ns        POSIX namespace: inodes, directories, xattrs, open handles
//! object    copy-on-write maps: a radix tree of pages, shared by refcount
//! store     refcounted page store: groups, allocator, metadata cache, journal commits
//! page      bytes <-> pages: the Backend trait, mmap, file, memory, crash backends
//! sys       every `unsafe` block (mmap, madvise, flock, fallocate, umount, signals)
//! check     recomputes reference and link counts (fsck's core)
//! fuzzing   entry points of the fuzz targets (fuzz/) and tests/fuzz_corpus.rs; hidden
//! cli       the command line (above every layer; main.rs only parses and reports)
//! ```
// Lints: see `[lints]` in Cargo.toml (clippy::unwrap_used and others, for every target).
// Only `unsafe_code` is set here, for the library alone: sys.rs opts out.
#![deny(unsafe_code)]

pub mod check;
pub mod cli;
pub mod error;
pub mod fuse;
#[doc(hidden)]
pub mod fuzzing;
pub mod ids;
pub mod ns;
pub mod object;
pub mod page;
pub mod store;
pub mod sys;
pub mod vm;

pub use error::{Error, Result};
