//! Panics: a bug met by one request must be seen, not only survived.
//!
//! Tokio contains a panic to the task it happens in (one connection's requests, or one
//! background job), so the router goes on serving every other tenant. But the default hook
//! writes raw text to stderr, which a JSON log pipeline drops or mangles, and nothing counts
//! it. The hook installed here makes each panic one `error` line through `tracing` (message,
//! location, thread, and a backtrace when `RUST_BACKTRACE` asks for one) and counts it in
//! `panics_total` on `/metrics`, where an alert can see it.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};

/// Panics seen since the process started. Process-wide, as the hook is.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Installs the hook (replacing any other). Idempotent.
pub fn install() {
    std::panic::set_hook(Box::new(report));
}

/// Panics seen so far.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

fn report(info: &PanicHookInfo<'_>) {
    PANICS.fetch_add(1, Ordering::Relaxed);
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not text)");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    // Recorded only when `RUST_BACKTRACE` asked for one (a `None` field is left out).
    let backtrace = Some(Backtrace::capture()).filter(|b| b.status() == BacktraceStatus::Captured);
    tracing::error!(%message, %location, thread,
        backtrace = backtrace.as_ref().map(tracing::field::display),
        "panic: the task it happened in was stopped; others go on");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hook is process-wide: the test harness's own is put back at once, so a failing
    /// test elsewhere in this process still prints its message.
    #[test]
    fn a_panic_is_counted_and_the_caller_goes_on() {
        let harness = std::panic::take_hook();
        install();
        let before = count();
        let text = std::panic::catch_unwind(|| panic!("bad input {}", 7));
        let other = std::panic::catch_unwind(|| std::panic::panic_any(42_u8));
        let after = count();
        std::panic::set_hook(harness);
        assert!(text.is_err() && other.is_err());
        // At least: another test of this process may panic meanwhile.
        assert!(after >= before + 2, "{before} -> {after}");
        // And `/metrics` says so.
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let table =
            nexus_binding_store::BindingHandle::new(nexus_binding_store::BindingTable::new());
        let health = std::sync::Arc::new(nexus_binding_store::SyncHealth::default());
        let text = String::from_utf8(metrics.render(&table, &health)).expect("utf-8");
        let shown: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("nexus_edge_panics_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no panics_total in\n{text}"));
        assert!(shown >= after, "{shown} < {after}");
    }
}
