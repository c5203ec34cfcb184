//! The memory work of a table: its buffer, and the loops that copy rows out of their records
//! and update them in place, with software prefetch.

use super::layout::{AdamCoeffs, Init, RowLayout};

/// `n` zeros for a table-sized buffer, backed by transparent huge pages where the kernel offers
/// them (Linux with THP in `madvise` or `always` mode).
///
/// Lookups and sparse updates touch rows scattered over the whole table; with 4 KiB pages
/// nearly every one of them misses the TLB once the table spans gigabytes, with 2 MiB pages
/// the translations of a few-GiB table fit in the TLB. The advice is given before the first
/// write, so the pages are faulted in huge; where THP is off it is a no-op.
pub(super) fn table_buffer(n: usize) -> Vec<u32> {
    let mut buf = vec![0u32; n];
    advise_huge_pages(&mut buf);
    buf
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut [u32]) {
    const HUGE: usize = 2 << 20;
    let start = buf.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buf);
    let first = start.next_multiple_of(HUGE);
    if end >= first + HUGE {
        let len = (end - first) / HUGE * HUGE;
        // SAFETY: [first, first + len) lies inside `buf`'s allocation, which `buf` borrows
        // mutably; MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
        // A refusal (THP disabled, old kernel) leaves ordinary pages, so the result is ignored.
        unsafe {
            libc::madvise(first as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buf: &mut [u32]) {}

/// How many rows ahead the gather and the sparse update prefetch: enough misses in flight to
/// cover a DRAM (and TLB) miss while earlier rows are copied or updated.
const PREFETCH_AHEAD: usize = 16;

/// Ask the CPU to start loading record `slot` (`rw` words per record from `base`) into the
/// cache. A hint only: no effect on results, a no-op off x86-64.
#[inline(always)]
fn prefetch_record(base: *const u32, slot: u32, rw: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = base.wrapping_add(slot as usize * rw).cast::<u8>();
        let mut at = 0;
        while at < 4 * rw {
            // SAFETY: prefetching never faults; the address is computed without dereferencing.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(at).cast()) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (base, slot, rw);
}

/// Slot of a row that has none (a file-backed row not touched yet): its value is computed.
pub(super) const NO_SLOT: u32 = u32::MAX;

/// Append the weights of rows `rows` (records `slots`, or the initial value where a slot is
/// [`NO_SLOT`]) to `put`, in order.
///
/// # Safety
/// Every slot other than [`NO_SLOT`] is a record of `layout` at `base` that nothing writes
/// during the call.
#[inline(always)]
pub(super) unsafe fn copy_rows(base: *const u32, layout: &RowLayout, init: &Init, rows: &[u32], slots: &[u32], out: &mut [f32]) {
    let (rw, dim) = (layout.record_words(), layout.dim);
    for (i, (&r, &s)) in rows.iter().zip(slots).enumerate() {
        if let Some(&ahead) = slots.get(i + PREFETCH_AHEAD).filter(|&&a| a != NO_SLOT) {
            prefetch_record(base, ahead, rw);
        }
        let dst = &mut out[i * dim..(i + 1) * dim];
        if s == NO_SLOT {
            layout.init_weights(r, init, dst);
        } else {
            // SAFETY: the caller's contract.
            layout.read_weights(unsafe { std::slice::from_raw_parts(base.add(s as usize * rw), rw) }, dst);
        }
    }
}

simd_kernel! {
    /// One optimiser step of the records `slots` (gradient rows `grads`), in that order.
    /// Callers guarantee every slot is a distinct record at `base` that only this call
    /// accesses while it runs.
    pub(super) fn update_slots(layout: &RowLayout, c: &AdamCoeffs, sr_seed: u64, base: *mut u32, slots: &[u32], grads: &[f32]) {
        let (rw, dim) = (layout.record_words(), layout.dim);
        for (i, &s) in slots.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + PREFETCH_AHEAD) {
                prefetch_record(base, ahead, rw);
            }
            // SAFETY: the caller's contract.
            let rec = unsafe { std::slice::from_raw_parts_mut(base.add(s as usize * rw), rw) };
            layout.update(c, rec, &grads[i * dim..(i + 1) * dim], sr_seed);
        }
    }
}
