//! A counting global allocator: how many heap bytes are live, to measure what a structure takes.
//! It counts only while switched on ([`counting`]): a shared counter touched by every allocation
//! of every thread would slow down the benchmarks that do not measure memory.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc as System;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

#[derive(Debug)]
pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static ON: AtomicBool = AtomicBool::new(false);

fn count(delta: i64) {
    if ON.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller upholds `alloc`'s contract, which is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: the caller upholds `realloc`'s contract, which is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Switches counting on or off. Bytes freed while counting that were allocated before count
/// against the total: measure a window in which the structure measured is built.
pub fn counting(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Heap bytes allocated and not freed while counting (requested sizes; the allocator's own
/// overhead is not counted).
pub fn allocated() -> u64 {
    LIVE.load(Ordering::Relaxed).max(0) as u64
}
