//! cargo fuzz target: see `cowfs::fuzzing` (the same target runs on stable in
//! tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cowfs::fuzzing::run("dir_block", data) {
        panic!("{e}");
    }
});
