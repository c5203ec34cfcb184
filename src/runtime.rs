//! Process-level settings that make CPU training faster.

/// Number of cores this process may use (1 if unknown).
pub(crate) fn n_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Threads for `work` units of parallel work when each thread should get at least
/// `min_per_thread` of them (starting a thread costs more than it saves on less): between 1
/// and [`n_threads`].
pub(crate) fn threads_for(work: usize, min_per_thread: usize) -> usize {
    n_threads().min(work / min_per_thread).max(1)
}

/// Keep freed memory in the process instead of returning it to the kernel after every large
/// tensor (glibc only; a no-op elsewhere).
///
/// burn's CPU backends allocate a fresh buffer for most operations. With glibc's defaults,
/// buffers above 128 KiB are `mmap`ed and `munmap`ed each time, so every step pays page faults
/// and zeroing of fresh pages (measured: about a third of the CPU time of a small model's
/// training step was kernel time; with these settings it falls below 5 %). Call it once at the
/// start of `main`, before any tensor exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate (at the start of main) and has no memory-safety preconditions.
    unsafe {
        // Largest allowed mmap threshold on 64-bit glibc (HEAP_MAX_SIZE / 2 = 32 MiB).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        // Never trim the heap top back to the kernel; pad heap growth by 256 MiB.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 * 1024 * 1024);
    }
}

/// Return the allocator's free memory to the kernel now (glibc's `malloc_trim(0)`: the heap
/// tops and the free pages inside every arena; a no-op elsewhere), undoing what
/// [`tune_allocator`] keeps for speed. For measuring the memory a run uses rather than what
/// the allocator holds; it costs time (page faults on the next allocations).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Make every thread allocate from one heap (glibc's `M_ARENA_MAX` = 1; a no-op elsewhere), so
/// that which thread allocates what, and when, does not move the peak resident set: for
/// measuring memory (threads then share the allocator's lock). Call it at the start of `main`,
/// before other threads exist.
pub fn use_one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
