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
#[derive(Debug, Default)]
pub struct SyncHealth {
    store_up: AtomicBool,
    last_sync_unix_ms: AtomicU64,
    applied_revision: AtomicU64,
    rejected_records: AtomicU64,
    full_reloads: AtomicU64,
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

    /// Counts records refused by validation or ordering.
    pub fn add_rejected(&self, n: u64) {
        self.rejected_records.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts full loads / reconciles.
    pub fn add_full_reload(&self) {
        self.full_reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the last contact with the store succeeded.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Unix time (ms) of the last successful sync; 0 = never.
    pub fn last_sync_unix_ms(&self) -> u64 {
        self.last_sync_unix_ms.load(Ordering::Relaxed)
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
