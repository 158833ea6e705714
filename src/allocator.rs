//! Handing memory freed after a burst of work back to the operating system.
//!
//! The binary allocates with mimalloc (`src/main.rs`). mimalloc keeps freed memory for reuse and
//! schedules its return to the operating system for later, which only happens when the allocator
//! is called again on a path that purges. While the verifier lists and indexes every ApiKey, the
//! list's pages and parsed objects are freed faster than that: at 10,000 ApiKeys it held
//! 61–86 MiB once ready (peak up to 98 MiB); handing memory back every two pages and at the end
//! of the list, 43 MiB (peak 59–66 MiB).

// The crate's unsafe calls (the workspace denies `unsafe_code`): mimalloc has no safe wrapper for
// collecting or for setting its options.
use libmimalloc_sys::{mi_option_set, mi_option_t};

/// mimalloc's option numbers (`mimalloc.h`, the same in its v2 and v3; the crate names neither).
const ARENA_EAGER_COMMIT: mi_option_t = 4;
const PURGE_DELAY: mi_option_t = 15;

/// Return the memory mimalloc holds freed to the operating system. Costs 0.2–1.4 ms; call it
/// during and after a burst (an initial list), not per request. Harmless when mimalloc is not
/// the global allocator (tests, benchmarks): its own heap is then empty.
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    // SAFETY: mi_collect only reorganizes mimalloc's own bookkeeping; it takes no pointers and
    // may be called from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Have mimalloc return freed pages at once, not 10 ms later on its next purging call. The
/// controller's work is many small reconciles whose requests and parsed objects are freed right
/// away; with the delay, a fleet's resync after a restart kept tens of MiB of them resident (at
/// 10,000 ApiKeys: peak 90 MiB before, 72 MiB after). Call once, when the controller starts.
#[allow(unsafe_code)]
pub fn return_freed_memory_promptly() {
    // SAFETY: setting an option takes no pointers; mimalloc reads options on each use, from
    // any thread.
    unsafe { mi_option_set(PURGE_DELAY, 0) }
}

/// Commit mimalloc's arena memory as it is used instead of all at once, so that what it purges
/// leaves the resident set. Read when mimalloc reserves its first arena, on the first
/// allocation, so it is set by an ELF constructor, before `main` and anything allocates
/// (`mi_option_set` from `main` or later comes too late). At 10,000 ApiKeys it took the
/// controller's peak RSS while minting from 69–78 to 56 MiB.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENAS_ON_DEMAND: extern "C" fn() = {
    extern "C" fn commit_on_demand() {
        // SAFETY: as above; mimalloc initializes its options on first use, which may be this.
        unsafe { mi_option_set(ARENA_EAGER_COMMIT, 0) }
    }
    commit_on_demand
};
