//! The one place with foreign calls: tuning glibc's allocator.
//!
//! glibc raises its mmap threshold each time a large mmapped block is freed,
//! so after the first model unload the next model's tensors come from the
//! heap, and freeing them no longer returns memory to the system: a neuron
//! that loads and unloads models would grow by a model's size each time
//! (measured: 81 → 168 MiB over 12 cycles of the default model). Pinning the
//! threshold keeps large blocks mmapped, so an unload really frees them
//! (measured: flat at 30 MiB).
#![allow(unsafe_code)]

/// Pin glibc's mmap threshold at its default (128 KiB) so that it no longer
/// grows. Process-wide; harmless to call more than once; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; M_MMAP_THRESHOLD
        // with a value below the maximum is always accepted.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
        if ok != 1 {
            tracing::warn!(
                "mallopt(M_MMAP_THRESHOLD) failed; memory may not be returned after unloads"
            );
        }
    }
}

/// Return freed heap memory to the system (after an unload).
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
