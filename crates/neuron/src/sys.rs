//! The one place with foreign calls: tuning glibc's allocator.
//!
//! glibc raises its mmap threshold each time a large mmapped block is freed,
//! so after the first model unload the next model's tensors come from the
//! heap, and freeing them no longer returns memory to the system: a neuron
//! that loads and unloads models would grow by a model's size each time
//! (measured: 81 → 168 MiB over 12 cycles of the default model). Pinning the
//! threshold keeps large blocks mmapped, so an unload really frees them.
//!
//! Pinned too low (128 KiB) it also mmaps the per-step temporaries of the
//! token loop (each KV-cache concatenation is ~250 KB per layer at 200
//! positions for the default model), and pinning it pins the trim threshold
//! at 128 KiB, so the heap shrinks and grows again at every step: both cost
//! page faults on every token — 30 % of decode speed at a 228-token prompt
//! (measured 13-15 vs 20-22 tokens/s). So: weights-sized blocks (≥ 32 MiB,
//! glibc's maximum) stay mmapped, the trim threshold is raised, and
//! [`release_memory`] trims explicitly after an unload (measured: flat at
//! 20-21 MiB over 12 load/unload cycles) and after a load, whose freed read
//! and repack buffers sit between the kept weights (measured: a loaded
//! default model 273 MiB in every cycle instead of 280-304, and once 333, in a
//! CUDA build).
//!
//! `malloc_trim` returns the free top of the main arena only: the top chunk
//! of a per-thread arena stays resident until it alone exceeds the trim
//! threshold. With one arena per thread, about one run in three kept 33 MiB
//! more after an unload (a device worker's arena top, never trimmed). So the
//! neuron uses a single arena: after an unload all free memory is trimmable
//! (measured: 17-18 MiB unloaded, flat, over 10 runs of 20 cycles; decode
//! speed unchanged, see the README). [`tune_allocator`] must run before the
//! process starts its threads, or those threads keep the arenas they made.
#![allow(unsafe_code)]

/// Blocks at least this large are mmapped (glibc's maximum on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free heap above this is returned at once; below it, by `release_memory`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 64 << 20;
/// One arena for every thread, so `malloc_trim` can return all free memory.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: i32 = 1;

/// Pin glibc's mmap threshold (at 32 MiB) so that it no longer grows, raise
/// the trim threshold, and use a single arena. Process-wide; call it before
/// starting threads; harmless to call more than once; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are
        // within glibc's accepted ranges.
        let ok = unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
                & libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                & libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX)
        };
        if ok != 1 {
            tracing::warn!("mallopt failed; memory may not be returned after unloads");
        }
    }
}

/// Return freed heap memory to the system (after a load or an unload).
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim walks the allocator's own free lists; it has no
        // preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
