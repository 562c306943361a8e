//! The router's side of token revocations: opening the configured source, the load before
//! serving, and the background job that follows it and says when the list grows stale.
//!
//! The list itself, its sources and the Redis schema are in
//! [`nexus_binding_store::revocations`]; every token is checked against it in
//! [`crate::auth::Authenticator::verify`], and a tunnel's at each piece.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nexus_binding_store::revocations::file::{Looked, Watched};
use nexus_binding_store::revocations::redis::RedisRevocations;
use nexus_binding_store::revocations::Revocations;
use nexus_binding_store::source::now_unix_ms as now_ms;
use nexus_config::{RevocationSource, Settings, StoreSettings};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::background::{restarting_after_panic, HeldLastSteps, JobsStop};

/// Where the revocations come from.
#[derive(Debug)]
pub enum Feed {
    /// No source: nothing is revoked.
    None,
    /// A revocations file, looked at every `[revocation] poll_interval`.
    File(Arc<Watched>),
    /// The Redis store's revocations.
    Redis(Box<RedisRevocations>),
}

/// Why revocations could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RevocationSetupError {
    /// The revocations file cannot be read or is refused.
    #[error("revocation.file: {0}")]
    File(String),
    /// The Redis client cannot be built from `[store]`.
    #[error("revocations in Redis: {0}")]
    Redis(String),
}

/// The source `settings` name, and the handle it will feed.
pub fn open(settings: &Settings) -> Result<(Feed, Revocations), RevocationSetupError> {
    match (&settings.revocation.source, &settings.store) {
        (RevocationSource::None, _) => Ok((Feed::None, Revocations::none())),
        (RevocationSource::File(path), store) => {
            if matches!(store, StoreSettings::Redis(_)) {
                tracing::warn!(file = %path.display(),
                    "[revocation] file is set beside a Redis store: revocations come from the \
                     file, and those written to Redis (`nexus-edge revoke` with a config \
                     without the file) are not followed");
            }
            Ok((
                Feed::File(Arc::new(Watched::new(path.clone()))),
                Revocations::followed(),
            ))
        }
        (RevocationSource::Store, StoreSettings::Redis(r)) => {
            let opts = crate::store::redis_options(r)
                .map_err(|e| RevocationSetupError::Redis(e.to_string()))?;
            let feed = RedisRevocations::new(opts).map_err(RevocationSetupError::Redis)?;
            Ok((Feed::Redis(Box::new(feed)), Revocations::followed()))
        }
        // The config never names the store as the source of a file store.
        (RevocationSource::Store, StoreSettings::File(_)) => Ok((Feed::None, Revocations::none())),
    }
}

/// The load before serving. A revocations file that cannot be read or is refused stops the
/// start, as a key file does (`check` says why). Redis out of reach does not: the router
/// starts on its revocation snapshot, or with none, and says so (it fails open).
pub fn initial_load(
    feed: &Feed,
    into: &Revocations,
    rt: &tokio::runtime::Runtime,
) -> Result<(), RevocationSetupError> {
    match feed {
        Feed::None => {}
        Feed::File(watched) => {
            watched
                .reload(into)
                .map_err(|e| RevocationSetupError::File(e.to_string()))?;
            tracing::info!(revocations = into.load().len(), file = %watched.path().display(),
                "revocations loaded");
        }
        Feed::Redis(redis) => match rt.block_on(redis.initial_load(into)) {
            Ok(from) => tracing::info!(revocations = into.load().len(), from, "revocations loaded"),
            Err(e) => tracing::error!(error = %e,
                "no revocations could be loaded: tokens are checked against none until Redis \
                 answers (failing open)"),
        },
    }
    Ok(())
}

/// Follows the revocation source until the process ends ([`JobsStop`]), and says when the
/// list goes stale (older than `[revocation] max_staleness`) and when it is fresh again.
pub struct RevocationSync {
    state: Arc<crate::state::EdgeState>,
    stop: JobsStop,
    /// Held by a Redis replica keeping a revocation snapshot: its last step is that
    /// snapshot, written as it stops, and the drain's end waits for it.
    last_steps: HeldLastSteps,
}

impl RevocationSync {
    /// A job following the state's revocation feed into its authenticator's revocations.
    pub fn new(state: Arc<crate::state::EdgeState>, stop: JobsStop) -> Self {
        let snapshots = matches!(&*state.revocation_feed, Feed::Redis(r) if r.keeps_snapshot());
        Self {
            last_steps: HeldLastSteps::new(snapshots.then(|| stop.last_steps())),
            state,
            stop,
        }
    }
}

/// How often staleness is looked at.
const STALENESS_CHECK: Duration = Duration::from_secs(1);
/// How long before shutdown_grace runs out a replica keeping a revocation snapshot is told
/// to stop: the time its last write needs.
const LAST_STEPS: Duration = Duration::from_secs(1);

#[async_trait]
impl BackgroundService for RevocationSync {
    async fn start(&self, shutdown: ShutdownWatch) {
        if matches!(*self.state.revocation_feed, Feed::None) {
            return;
        }
        // Should shutdown_grace run out first, a job with last steps is told that long
        // before. Otherwise revocations are followed to the end of the drain (they close
        // tunnels).
        let margin = if self.last_steps.held() {
            LAST_STEPS
        } else {
            Duration::ZERO
        };
        let stop = self.stop.signal(shutdown, margin);
        let revocations = self.state.auth.revocations().clone();
        let settings = &self.state.settings.revocation;
        let feed = &self.state.revocation_feed;
        // A panic inside the follower would leave the list as it is for the life of the
        // process: it starts over instead (it begins with a full load).
        let following = restarting_after_panic("revocation sync", stop.clone(), || {
            follow(
                Arc::clone(feed),
                revocations.clone(),
                settings.poll_interval,
                stop.clone(),
            )
        });
        tokio::join!(
            following,
            watch_staleness(&revocations, settings.max_staleness, stop.clone())
        );
        self.last_steps.release();
    }
}

async fn follow(
    feed: Arc<Feed>,
    revocations: Revocations,
    poll: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    match &*feed {
        Feed::None => {}
        Feed::Redis(redis) => redis.follow(revocations, stop).await,
        Feed::File(watched) => {
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                // Off the async threads (it reads and hashes a file of up to 64 MiB). A panic
                // while reading (logged and counted by the panic hook) must not end the
                // following for the life of the process: it ends only this look.
                let read = tokio::task::spawn_blocking({
                    let watched = Arc::clone(watched);
                    let revocations = revocations.clone();
                    move || watched.reload(&revocations)
                })
                .await;
                match read {
                    Ok(Ok(Looked::Installed(n))) => {
                        tracing::info!(revocations = n, "revocations file reloaded");
                    }
                    Ok(Ok(Looked::Unchanged)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e,
                        "revocations file not reloaded; the revocations in force stay"),
                    Err(_) => tracing::error!("revocations file not reloaded: the reload panicked"),
                }
            }
        }
    }
}

/// Says once when the list becomes stale, and once when it is fresh again.
async fn watch_staleness(
    revocations: &Revocations,
    max: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut stale = false;
    let mut tick = tokio::time::interval(STALENESS_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let age = Duration::from_millis(revocations.age_ms(now_ms()));
        match (stale, age > max) {
            (false, true) => tracing::warn!(
                age_s = age.as_secs(),
                max_staleness_s = max.as_secs(),
                revocations = revocations.load().len(),
                "revocations are stale: not known to match their source for longer than \
                 [revocation] max_staleness; tokens revoked since are still accepted (failing open)"
            ),
            (true, false) => tracing::info!(
                revocations = revocations.load().len(),
                "revocations in sync with their source again"
            ),
            _ => {}
        }
        stale = age > max;
    }
}
