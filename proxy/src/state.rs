//! What every request shares: settings, the live binding table, the authenticator, metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nexus_binding_store::{BindingHandle, SyncHealth};
use nexus_config::Settings;

use crate::auth::Authenticator;
use crate::log_budget::LogBudgets;
use crate::metrics::Metrics;
use crate::resolve::InstanceResolver;

/// Shared, read-mostly router state. Cloning the `Arc` is the only cost per request.
#[derive(Debug)]
pub struct EdgeState {
    /// Validated settings.
    pub settings: Settings,
    /// The live binding table.
    pub bindings: BindingHandle,
    /// Health of the binding source.
    pub sync_health: Arc<SyncHealth>,
    /// Token verification (keys hot-reloaded inside, revocations checked inside).
    pub auth: Authenticator,
    /// The fetcher of a key set published by the identity provider (`[auth] jwks_url`);
    /// `None` for a key file.
    pub remote_keys: Option<Arc<crate::auth::remote::RemoteKeys>>,
    /// Where the revocations the authenticator checks come from (followed by
    /// [`crate::revocation::RevocationSync`]).
    pub revocation_feed: Arc<crate::revocation::Feed>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Each instance's latency and queue delay, judged per `[metrics] interval`.
    pub scale: crate::scale::InstanceSignals,
    /// How many lines a second single requests may write (`[log] request_lines_per_second`).
    pub log_budgets: Arc<LogBudgets>,
    /// The `[cors]` policy, when one is configured.
    pub cors: Option<crate::cors::Cors>,
    /// Addresses of named instances, kept for `[upstream] dns_ttl`.
    pub resolver: InstanceResolver,
    /// Set when a shutdown signal arrives, before the listeners close: `/readyz` answers 503
    /// and every response closes its connection, so clients and load balancers move away.
    pub draining: AtomicBool,
}

impl EdgeState {
    /// Whether a shutdown has begun (see [`EdgeState::draining`]).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Begins the shutdown: not ready from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}
