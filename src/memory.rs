//! Giving the memory a config load freed back to the system.
//!
//! Loading a config of 100,000 users parses the file into a tree of small allocations,
//! 80-odd MiB, and frees it once the users are built. glibc's malloc keeps freed memory in
//! its arenas, and only the top of the heap is ever returned by itself: the tree lies below
//! the users built from it, so without this the process keeps its parse peak for good.
//! `malloc_trim(0)` returns every free page of every arena (with `madvise`), whatever lies
//! above it. Other allocators (and other systems) return memory their own way: nothing to
//! do there.

/// Returns the free pages of the allocator's arenas to the system, where that is glibc.
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own free lists, each arena
    // under its lock, and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
