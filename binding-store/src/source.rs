//! The seam between the proxy and wherever bindings come from (a JSON file, Redis).
//!
//! The proxy holds a [`BindingHandle`] and one `Arc<dyn BindingSource>`; it knows nothing of
//! files or Redis. A source loads the first table, then keeps the handle current until
//! shutdown, reporting its health through [`SyncHealth`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::table::{BindingHandle, BindingTable};

/// A source of bindings that keeps a [`BindingHandle`] current.
#[async_trait]
pub trait BindingSource: Send + Sync + 'static {
    /// Short name for logs and metrics (`file`, `redis`).
    fn kind(&self) -> &'static str;

    /// How long before the process is stopped [`BindingSource::run`] must be told to stop,
    /// for the last steps it takes then (a Redis replica's goodbye heartbeat and snapshot).
    /// None by default: the source follows changes to the end.
    fn last_steps(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Loads the table the proxy starts serving with. Fails only when there is nothing safe
    /// to serve (no store reachable and no usable snapshot).
    async fn initial_load(&self) -> Result<BindingTable, StoreError>;

    /// Follows changes, applying them to `handle`, until `shutdown` turns true.
    /// Errors are logged and retried inside; this returns only on shutdown.
    async fn run(self: Arc<Self>, handle: BindingHandle, shutdown: watch::Receiver<bool>);

    /// Health counters the proxy exports.
    fn health(&self) -> Arc<SyncHealth>;
}

/// Sync health, written by the source and read by metrics and readiness checks.
#[derive(Debug)]
pub struct SyncHealth {
    store_up: AtomicBool,
    last_sync_unix_ms: AtomicU64,
    applied_revision: AtomicU64,
    rejected_records: AtomicU64,
    full_reloads: AtomicU64,
    sync_failures: AtomicU64,
    snapshot_write_failures: AtomicU64,
    /// When this health began (its store was made, at start-up): a store never in sync is at
    /// least that stale.
    created_unix_ms: u64,
}

impl Default for SyncHealth {
    fn default() -> Self {
        Self {
            store_up: AtomicBool::new(false),
            last_sync_unix_ms: AtomicU64::new(0),
            applied_revision: AtomicU64::new(0),
            rejected_records: AtomicU64::new(0),
            full_reloads: AtomicU64::new(0),
            sync_failures: AtomicU64::new(0),
            snapshot_write_failures: AtomicU64::new(0),
            created_unix_ms: now_unix_ms(),
        }
    }
}

impl SyncHealth {
    /// Records a successful contact with the store at the current revision.
    pub fn mark_synced(&self, revision: crate::model::Revision) {
        self.store_up.store(true, Ordering::Relaxed);
        self.last_sync_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
        self.applied_revision
            .fetch_max(revision.get(), Ordering::Relaxed);
    }

    /// Records that the store is unreachable (the last table keeps being served).
    pub fn mark_down(&self) {
        self.store_up.store(false, Ordering::Relaxed);
    }

    /// Records that the table served was last known in sync at `unix_ms` (the snapshot it
    /// came from was written then), if nothing has synced yet. The store is not marked up: it
    /// has not been reached. Without this a replica serving its snapshot would
    /// report no sync age at all, while it may be serving the stalest table of the fleet.
    pub fn seed_last_sync(&self, unix_ms: u64) {
        let _ = self.last_sync_unix_ms.compare_exchange(
            0,
            unix_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Counts records refused by validation or ordering.
    pub fn add_rejected(&self, n: u64) {
        self.rejected_records.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts full loads / reconciles.
    pub fn add_full_reload(&self) {
        self.full_reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sync that failed (Redis lost, or refusing what the sync needs): the replica
    /// serves its last table and tries again.
    pub fn add_sync_failure(&self) {
        self.sync_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Syncs that failed so far.
    pub fn sync_failures(&self) -> u64 {
        self.sync_failures.load(Ordering::Relaxed)
    }

    /// Counts a local snapshot that could not be written: the replica serves on, but a restart
    /// during a store outage would start from an older snapshot, or from none.
    pub fn add_snapshot_write_failure(&self) {
        self.snapshot_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot writes that failed so far.
    pub fn snapshot_write_failures(&self) -> u64 {
        self.snapshot_write_failures.load(Ordering::Relaxed)
    }

    /// Whether the last contact with the store succeeded.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Unix time (ms) of the last successful sync, or of the snapshot served
    /// ([`Self::seed_last_sync`]); 0 = never.
    pub fn last_sync_unix_ms(&self) -> u64 {
        self.last_sync_unix_ms.load(Ordering::Relaxed)
    }

    /// How long (ms) before `now_unix_ms` the table served was last known to be in sync: since
    /// the last sync, or, never synced, since this health began (start-up), as the table
    /// served is at least that old. 0 for a sync stamped later than `now_unix_ms` (the clock
    /// stepped back).
    pub fn sync_age_ms(&self, now_unix_ms: u64) -> u64 {
        let since = match self.last_sync_unix_ms() {
            0 => self.created_unix_ms,
            t => t,
        };
        now_unix_ms.saturating_sub(since)
    }

    /// Highest revision applied.
    pub fn applied_revision(&self) -> u64 {
        self.applied_revision.load(Ordering::Relaxed)
    }

    /// Records refused so far.
    pub fn rejected_records(&self) -> u64 {
        self.rejected_records.load(Ordering::Relaxed)
    }

    /// Full loads / reconciles so far.
    pub fn full_reloads(&self) -> u64 {
        self.full_reloads.load(Ordering::Relaxed)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Revision;

    #[test]
    fn a_seeded_sync_gives_an_age_but_not_up_and_gives_way_to_a_real_sync() {
        let health = SyncHealth::default();
        let start = health.created_unix_ms;
        assert_eq!(health.last_sync_unix_ms(), 0, "never synced");
        assert_eq!(
            health.sync_age_ms(start + 7_000),
            7_000,
            "never synced: counted from start-up"
        );

        health.seed_last_sync(start - 3_600_000);
        assert!(!health.store_up(), "a snapshot is not the store");
        assert_eq!(health.last_sync_unix_ms(), start - 3_600_000);
        assert_eq!(health.sync_age_ms(start), 3_600_000);

        health.mark_synced(Revision(1));
        let synced = health.last_sync_unix_ms();
        assert!(synced >= start);
        health.seed_last_sync(start - 3_600_000);
        assert_eq!(
            health.last_sync_unix_ms(),
            synced,
            "a seed never replaces a sync"
        );
        assert_eq!(health.sync_age_ms(synced - 1), 0, "a clock stepped back");
    }
}
