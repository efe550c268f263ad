//! The allocator's settings. The binary allocates through mimalloc (see
//! `main.rs`); this keeps the pages a read frees for the next batches
//! instead of handing them back to the kernel at once.
//!
//! The one module allowed `unsafe`: mimalloc's options are set through its
//! C API, and the crate offers no safe wrapper.
#![allow(unsafe_code)]

use std::ffi::c_long;

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` in its v3
/// `mimalloc.h`): how long, in milliseconds, freed memory waits before it
/// is returned to the operating system. The crate does not export the
/// name; the test below checks the id against the option's default.
const MI_OPTION_PURGE_DELAY: mi_option_t = 15;

/// Freed memory is kept this long (ms) before it goes back to the kernel
/// (mimalloc's arenas wait ten times as long): reads that follow each
/// other reuse it, and an idle server still shrinks within minutes.
pub const PURGE_DELAY_MS: c_long = 10_000;

/// Apply [`PURGE_DELAY_MS`]; called first thing in `main`. An operator's
/// `MIMALLOC_PURGE_DELAY` (mimalloc's own variable, in ms) wins: a lower
/// delay trades CPU per read for a smaller resident set.
pub fn hold_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's option setter takes any option id and value and
    // may be called at any time, from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// The purge delay mimalloc is using now, in milliseconds.
pub fn purge_delay_ms() -> c_long {
    // SAFETY: reading an option has no preconditions.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3 documents a default purge delay of 1000 ms; the
        // options next to it default to 0, 1, 2 or 100.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000, "mimalloc's option ids moved");
        }
        hold_freed_pages();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
        }
    }
}
