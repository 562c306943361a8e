//! Transparent huge pages off for the router's process.
//!
//! mimalloc hands memory it no longer uses back to the kernel page by page. On a host whose
//! transparent huge pages are in `madvise` mode (the common kernel default), khugepaged
//! later merges those ranges into 2 MiB pages again, so an idle router's resident memory
//! climbed above its peak under load (a soak: 214 MB peak, 240 MB idle minutes later; 190 MB
//! and flat with huge pages off). Off, a later probe measured less memory at every stage
//! (22 MB against 37 at start, 140 against 188 at peak) and no throughput change above
//! noise. `MIMALLOC_ALLOW_THP=0` does the same, but mimalloc reads it when the process
//! loads: the binary cannot set it for itself, so it asks the kernel directly.

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), unless the
/// operator set `MIMALLOC_ALLOW_THP` to a value, which then decides (mimalloc applies it
/// itself). Set but empty, it counts as unset: an empty variable is usually a script's unset
/// one, and mimalloc would read it as `1`.
///
/// The flag covers memory mapped before the call as well as after (the kernel checks it at
/// every fault and merge), and children inherit it; `THP_enabled` in `/proc/PID/status`
/// shows it. A kernel without it leaves things as they were: nothing else depends on it.
pub fn keep_off() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| !v.is_empty()) {
        return;
    }
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
}
