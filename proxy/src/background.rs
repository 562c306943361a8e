//! Background tasks run inside the Pingora server: binding sync and key reload.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nexus_binding_store::{BindingHandle, BindingSource};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::state::EdgeState;

/// Runs the binding source's follow loop until shutdown.
pub struct BindingSync {
    source: Arc<dyn BindingSource>,
    handle: BindingHandle,
}

impl BindingSync {
    /// A sync task for `source` feeding `handle`.
    pub fn new(source: Arc<dyn BindingSource>, handle: BindingHandle) -> Self {
        Self { source, handle }
    }
}

#[async_trait]
impl BackgroundService for BindingSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        Arc::clone(&self.source)
            .run(self.handle.clone(), shutdown)
            .await;
    }
}

/// Re-reads the JWKS file periodically; a bad file keeps the current keys, is logged once
/// and shows in `key_set_refused` until it changes.
pub struct KeyReload {
    state: Arc<EdgeState>,
    every: Duration,
}

impl KeyReload {
    /// Checks the key file every `every`.
    pub fn new(state: Arc<EdgeState>, every: Duration) -> Self {
        Self { state, every }
    }
}

#[async_trait]
impl BackgroundService for KeyReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    match self.state.auth.reload_keys() {
                        Ok(true) => tracing::info!(keys = self.state.auth.key_count(), "verification keys reloaded"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "verification keys not reloaded; keeping the current keys"),
                    }
                    let refused = self.state.auth.refusing();
                    self.state.metrics.key_set_refused.set(i64::from(refused));
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
