//! A global allocator that starts large blocks on cache lines.
//!
//! glibc's malloc returns large blocks 16 bytes past a page boundary, so the rows of a state
//! vector straddle cache lines and every other 32-byte vector load is split in two. With
//! aligned rows, 30000 gradient-descent steps of the paper-size problem ran about 9% faster
//! (1.16 s to 1.05 s of CPU, on the machine described in BENCHMARKS.md). The `attnflow`
//! binary and the benchmarks install it with `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, with every block of at least [`LARGE_BLOCK`] bytes aligned to a
/// 64-byte cache line.
pub struct CacheLineAligned;

/// Size from which blocks are cache-line aligned. Smaller blocks keep their alignment, so
/// small allocations waste no space.
pub const LARGE_BLOCK: usize = 4096;

/// Returns the layout that [`CacheLineAligned`] passes to the system allocator for
/// `layout`. It depends only on `layout`, so `dealloc` recomputes the layout that `alloc`
/// used.
///
/// A size within 63 bytes of `isize::MAX` has no valid 64-byte-aligned layout, and a global
/// allocator must not panic, so such a request keeps its own layout (and then fails in the
/// system allocator as too large).
fn aligned(layout: Layout) -> Layout {
    if layout.size() >= LARGE_BLOCK && layout.align() < 64 {
        Layout::from_size_align(layout.size(), 64).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call goes to `System` with the layout `aligned(layout)`, which has the size
// of `layout` and at least its alignment, and `dealloc` frees a block with the same
// `aligned(layout)` that allocated it. `realloc` keeps the trait's default (allocate, copy,
// free through the methods above), so it follows the same rule.
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `aligned(layout)` has the non-zero size of `layout`, as the caller ensures.
        unsafe { System.alloc(aligned(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(aligned(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` or `alloc_zeroed` with `layout`, so from `System`
        // with `aligned(layout)`.
        unsafe { System.dealloc(ptr, aligned(layout)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_cache_lines() {
        for size in [LARGE_BLOCK, 8000, 1 << 20] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: the layout has a non-zero size, and the block is freed with it.
            unsafe {
                let block = CacheLineAligned.alloc(layout);
                assert!(!block.is_null(), "{size} bytes");
                assert_eq!(block as usize % 64, 0, "{size} bytes");
                let grown = CacheLineAligned.realloc(block, layout, 3 * size);
                assert_eq!(grown as usize % 64, 0, "{size} bytes grown to {}", 3 * size);
                let grown_layout = Layout::from_size_align(3 * size, 8).unwrap();
                CacheLineAligned.dealloc(grown, grown_layout);
            }
        }
    }

    #[test]
    fn small_blocks_keep_their_layout() {
        let layout = Layout::from_size_align(64, 8).unwrap();
        assert_eq!(aligned(layout), layout);
        let wide = Layout::from_size_align(LARGE_BLOCK, 128).unwrap();
        assert_eq!(aligned(wide), wide);
    }

    #[test]
    fn near_max_size_keeps_layout() {
        // Rounding this size up to 64 bytes passes isize::MAX, where Layout rejects it.
        let huge = Layout::from_size_align(isize::MAX as usize - 7, 8).unwrap();
        assert_eq!(aligned(huge), huge);
    }
}
