//! The allocator's settings. The binary allocates through mimalloc (see
//! `main.rs`); this keeps the pages a read frees for the next batches
//! instead of handing them back to the kernel at once, and hands them back
//! as soon as the node is idle (no read or copy build in flight for
//! [`IDLE_AFTER`]), so the memory one read freed doesn't stay resident
//! under the next one's.
//!
//! Also where a file's bytes are mapped into memory as an Arrow buffer
//! ([`map_read_only`]), so large reads of local files skip the copy.
//!
//! The one module allowed `unsafe` (besides one function of
//! `catalog::copy_scan`, which decodes checksummed kept copies without
//! validating them again): mimalloc's options are set through its C API,
//! and the crate offers no safe wrapper; a file mapping is `unsafe` by
//! nature (another process could change the file under it).
#![allow(unsafe_code)]

use std::ffi::c_long;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use libmimalloc_sys::{mi_collect, mi_option_get, mi_option_set, mi_option_t};
use tokio::sync::Notify;

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

/// Hand every freed page back to the kernel now: the calling thread's and
/// every arena's (mimalloc purges arenas program-wide).
pub fn return_freed_pages() {
    // SAFETY: `mi_collect` only releases memory no allocation holds; any
    // thread may call it at any time.
    unsafe { mi_collect(true) };
}

/// How long an idle thread of the serving runtime's blocking pool lives
/// (tokio's default is 10 s). Pages a thread allocated stay its own until
/// it collects them or exits, and an idle blocking thread never collects:
/// a kept copy's build reads its file and writes its blocks on these
/// threads, so the sooner they exit, the sooner the idle purge can give
/// those pages back. A thread started again costs tens of microseconds.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(3);

/// When freed pages go back to the kernel, counted from the moment the
/// node has nothing in flight: a second later, and again once the blocking
/// pool's idle threads have exited ([`BLOCKING_KEEP_ALIVE`]).
pub const IDLE_AFTER: [Duration; 2] = [
    Duration::from_secs(1),
    Duration::from_secs(BLOCKING_KEEP_ALIVE.as_secs() + 1),
];

/// Whether the node has work in flight, and how long since it had.
#[derive(Debug)]
pub struct Idleness {
    in_flight: AtomicUsize,
    started: AtomicU64,
    purges: AtomicU64,
    went_idle: Notify,
}

/// This node's.
pub static NODE: Idleness = Idleness::new();

/// Work in flight (a read's stream, a copy's build) while this lives.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while this lives"]
pub struct InFlight(&'static Idleness);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.went_idle.notify_one();
        }
    }
}

impl Default for Idleness {
    fn default() -> Self {
        Self::new()
    }
}

impl Idleness {
    pub const fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            purges: AtomicU64::new(0),
            went_idle: Notify::const_new(),
        }
    }

    /// Count work as in flight until the returned guard drops.
    pub fn in_flight(&'static self) -> InFlight {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    /// How many times the node went idle long enough to purge.
    pub fn purges(&self) -> u64 {
        self.purges.load(Ordering::SeqCst)
    }

    /// Runs for the server's life: each time nothing has been in flight
    /// for each of `after`'s waits in turn (and nothing started meanwhile),
    /// `purge` runs on a blocking thread. Work that follows other work
    /// closely never waits for it.
    pub async fn purge_when_idle(&self, after: &[Duration], purge: fn()) {
        // The last purge: when it ran (work started by then) and at which
        // step. Nothing new to give back until more work starts.
        let mut last: Option<(u64, usize)> = None;
        loop {
            self.went_idle.notified().await;
            'idle: loop {
                let seen = self.started.load(Ordering::SeqCst);
                for (step, wait) in after.iter().enumerate() {
                    tokio::time::sleep(*wait).await;
                    if self.in_flight.load(Ordering::SeqCst) > 0 {
                        break 'idle; // its end notifies again
                    }
                    if self.started.load(Ordering::SeqCst) != seen {
                        continue 'idle; // work came and went: wait afresh
                    }
                    if last.is_some_and(|(s, done)| s == seen && done >= step) {
                        continue;
                    }
                    last = Some((seen, step));
                    if tokio::task::spawn_blocking(purge).await.is_ok() {
                        self.purges.fetch_add(1, Ordering::SeqCst);
                        tracing::debug!(step, "idle: freed memory returned to the kernel");
                    }
                }
                break;
            }
        }
    }
}

/// Count work as in flight on this node until the guard drops.
pub fn in_flight() -> InFlight {
    NODE.in_flight()
}

/// Runs for the server's life: each time the node has been idle for the
/// waits of [`IDLE_AFTER`], `purge` hands freed pages back to the kernel
/// ([`return_freed_pages`], or a caller's that also reaches threads which
/// hold pages of their own).
pub async fn return_freed_pages_when_idle(purge: fn()) {
    NODE.purge_when_idle(&IDLE_AFTER, purge).await
}

/// A range of a file mapped read-only ([`map_read_only`]).
#[derive(Debug)]
pub struct MappedRange {
    map: std::sync::Arc<memmap2::Mmap>,
}

impl MappedRange {
    /// Reads `range` of the mapping into the disk cache and maps its
    /// pages now (Linux: `MADV_POPULATE_READ`): a disk error is this
    /// error, not a fault when the bytes are touched later. Elsewhere a
    /// no-op.
    pub fn populate(&self, range: std::ops::Range<usize>) -> std::io::Result<()> {
        if range.start >= range.end {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            self.map.advise_range(
                memmap2::Advice::PopulateRead,
                range.start,
                range.end - range.start,
            )
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(())
        }
    }

    /// The mapped bytes; touch only ranges [`Self::populate`] read.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The mapping as an Arrow buffer that shares it: the range is
    /// unmapped when this and the last buffer sliced from it are dropped.
    pub fn buffer(&self) -> datafusion::arrow::buffer::Buffer {
        let start = std::ptr::NonNull::new(self.map.as_ptr().cast_mut())
            .expect("a mapping is never at address 0");
        // SAFETY: `start..start + len` is the mapping, which the buffer
        // owns through the `Arc`, so it outlives every slice of the buffer.
        unsafe {
            datafusion::arrow::buffer::Buffer::from_custom_allocation(
                start,
                self.map.len(),
                std::sync::Arc::clone(&self.map) as _,
            )
        }
    }
}

/// `len` bytes of `file` from `offset`, mapped read-only: the pages are
/// the disk cache's own (not a copy). Nothing is read yet: call
/// [`MappedRange::populate`] on a range before touching it.
///
/// Only for files written once and never changed in place (Veil's kept
/// copies): a file truncated under a mapping faults when the lost pages
/// are read, as does a page that fails to read back from the disk after
/// memory pressure evicted it. Deleting the file is safe.
pub fn map_read_only(
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> std::io::Result<MappedRange> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    if len == 0 {
        return Err(invalid("an empty range is not mapped"));
    }
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| invalid("a mapped range passes the largest offset"))?;
    if end > file.metadata()?.len() {
        return Err(invalid("a mapped range passes the file's end"));
    }
    // SAFETY: read-only, within the file (checked above), of a file the
    // caller never writes in place (see above).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }?;
    Ok(MappedRange {
        map: std::sync::Arc::new(map),
    })
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

    #[test]
    fn a_mapped_range_holds_the_file_bytes_and_outlives_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // An offset inside a page; read back after populating it, or not.
        for populate in [true, false] {
            let m = map_read_only(&file, 5_003, 9_000).unwrap();
            if populate {
                m.populate(0..9_000).unwrap();
                m.populate(100..200).unwrap();
            }
            assert_eq!(m.buffer().as_slice(), &bytes[5_003..14_003]);
            assert_eq!(m.bytes(), &bytes[5_003..14_003]);
        }
        assert!(
            map_read_only(&file, 0, 100)
                .unwrap()
                .populate(50..200)
                .is_err()
        );
        let kept = map_read_only(&file, 0, 20_000)
            .unwrap()
            .buffer()
            .slice(19_000);
        drop(file);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(kept.as_slice(), &bytes[19_000..]);
        // Past the end, or empty: an error, not a mapping that faults.
        std::fs::write(dir.path().join("g"), [1; 100]).unwrap();
        let file = std::fs::File::open(dir.path().join("g")).unwrap();
        assert!(map_read_only(&file, 50, 51).is_err());
        assert!(map_read_only(&file, u64::MAX, 1).is_err());
        assert!(map_read_only(&file, 0, 0).is_err());
        assert_eq!(map_read_only(&file, 50, 50).unwrap().bytes(), &[1; 50]);
    }

    /// Waits (bounded) until `node` has purged `n` times.
    async fn purged(node: &Idleness, n: u64) -> u64 {
        for _ in 0..200 {
            if node.purges() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node.purges()
    }

    #[tokio::test]
    async fn purges_wait_until_nothing_has_been_in_flight_a_while() {
        let node: &'static Idleness = Box::leak(Box::new(Idleness::new()));
        static WAIT: [Duration; 1] = [Duration::from_millis(200)];
        let purger = tokio::spawn(node.purge_when_idle(&WAIT, || {}));
        let read = node.in_flight();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(node.purges(), 0, "nothing is purged while a read runs");
        drop(read);
        assert_eq!(purged(node, 1).await, 1, "purged once the node was idle");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(node.purges(), 1, "and once only: nothing ran since");
        // Two overlapping reads: the purge follows the later end.
        let (a, b) = (node.in_flight(), node.in_flight());
        drop(a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(node.purges(), 1, "one read still runs");
        drop(b);
        assert_eq!(purged(node, 2).await, 2);
        purger.abort();
    }

    #[tokio::test]
    async fn an_idle_period_purges_once_per_wait() {
        let node: &'static Idleness = Box::leak(Box::new(Idleness::new()));
        static WAITS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(600)];
        let purger = tokio::spawn(node.purge_when_idle(&WAITS, || {}));
        drop(node.in_flight());
        assert_eq!(purged(node, 1).await, 1, "the first wait");
        assert_eq!(purged(node, 2).await, 2, "the second wait");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(node.purges(), 2, "then nothing until work starts again");
        // Work that starts between the waits starts the schedule over.
        drop(node.in_flight());
        assert!(purged(node, 3).await >= 3);
        drop(node.in_flight());
        assert!(purged(node, 5).await >= 5, "both waits again");
        purger.abort();
    }

    #[test]
    fn returning_freed_pages_leaves_live_memory_alone() {
        let live: Vec<u64> = (0..1_000_000).collect();
        drop((0..1_000_000u64).collect::<Vec<_>>());
        return_freed_pages();
        assert_eq!(live.iter().sum::<u64>(), 999_999 * 1_000_000 / 2);
    }
}
