//! The page layer: fork-style address spaces over the page store, the way the kernel
//! shares memory after `fork()`. An address space is a copy-on-write map (the same
//! `object::MapRoot` that holds a file's pages: a file is an address space, a clone is a
//! fork). Untouched pages read as the shared zero page; `fork` adds one reference to the
//! map's root, so it costs the same for 4 KiB as for 8 GiB; the first write under a shared
//! table copies the table path and the page (a counted copy-on-write fault); a write to a
//! page only one space holds goes in place; dropping a space releases its references.
//!
//! Sits on `object` and `store`; nothing below imports it.

mod demo;
mod space;

pub use demo::{DemoStep, demo};
pub use space::{AddressSpace, Counters, PageLayer};
