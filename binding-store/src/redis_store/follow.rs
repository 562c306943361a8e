//! One replica's sync loop: follow the change stream, detect gaps, reconcile, heartbeat,
//! snapshot, and survive Redis going away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::watch;

use super::{field_str, field_u64, parse_json_record, FeedPosition, RedisStore};
use crate::model::{Revision, TenantId};
use crate::table::{BindingHandle, Change};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Snapshots are written at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

type Entries = Vec<(String, Vec<(String, String)>)>;

/// Runs until `shutdown`; reconnects with backoff and jitter, serving the last table meanwhile.
pub(super) async fn run(
    store: Arc<RedisStore>,
    handle: BindingHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match session(&store, &handle, &mut shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                store.health_ref().mark_down();
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "binding sync lost Redis; serving the last table");
            }
        }
        let jitter = Duration::from_millis(u64::from(rand_u8()) * backoff.as_millis() as u64 / 512);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A few random bits for jitter, without a RNG dependency.
fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0]
}

/// Replaces the table with a full load from Redis; tenants whose record is now invalid keep
/// their current binding.
async fn reconcile(
    store: &RedisStore,
    handle: &BindingHandle,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<()> {
    let current = handle.load();
    let (table, pos) = store.full_table(con, || Some(&*current)).await?;
    tracing::info!(
        bindings = table.len(),
        revision = pos.revision,
        "full reconcile with Redis"
    );
    handle.store(table);
    store.health_ref().add_full_reload();
    store.health_ref().mark_synced(Revision(pos.revision));
    store.set_position(pos);
    store.snapshot(handle.load()).await;
    Ok(())
}

/// Checks, at each heartbeat, the store's revision counter against the revision this replica
/// has applied: the one way to see a new history whose change entries the feed read cannot
/// reach (a Redis wiped and written again, or failed over, on a host whose clock runs behind,
/// gives stream ids that sort before this replica's position), without waiting for the next
/// full reconcile.
#[derive(Debug, Default)]
struct CounterWatch {
    /// The counter and the applied revision seen at the last heartbeat, when the replica was
    /// behind the counter.
    behind: Option<(u64, u64)>,
}

impl CounterWatch {
    /// Returns why the replica must reconcile, if it must.
    ///
    /// A counter below the applied revision (or gone) is a new history. A counter ahead is
    /// normal for a moment (entries are read right after they are written), so only a replica
    /// still behind the counter of the previous heartbeat with its position unmoved, a whole
    /// heartbeat during which the feed was read, has lost the feed.
    fn observe(&mut self, counter: Option<u64>, applied: u64) -> Option<&'static str> {
        let counter = counter.unwrap_or(0);
        if counter < applied {
            self.behind = None;
            return Some(
                "the store's revision counter is behind this replica (reset, wipe or failover)",
            );
        }
        if counter == applied {
            self.behind = None;
            return None;
        }
        if let Some((seen, was_applied)) = self.behind {
            if applied == was_applied && applied < seen {
                self.behind = None;
                return Some(
                    "the change feed delivers nothing while the store's revision counter is ahead",
                );
            }
        }
        self.behind = Some((counter, applied));
        None
    }
}

/// Whether the feed in Redis still continues from `p` without a gap.
///
/// After a Sentinel failover that lost the last writes (replication is asynchronous), or a
/// reset of Redis, the store's history is no longer the one this replica followed: its counter
/// is behind ours, or our last entry is gone. Resuming would skip the new history's changes as
/// "stale". A trimmed feed shows as a jump in revisions after our entry.
async fn feed_continues(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    p: &FeedPosition,
) -> redis::RedisResult<bool> {
    let counter: Option<u64> = con.get(store.keys().revision()).await?;
    let counter = counter.unwrap_or(0);
    let has_entry = p.stream_id != "0-0";
    let ours: Entries = if has_entry {
        redis::cmd("XRANGE")
            .arg(store.keys().changes())
            .arg(&p.stream_id)
            .arg(&p.stream_id)
            .query_async(con)
            .await?
    } else {
        Vec::new()
    };
    if counter < p.revision || (has_entry && ours.is_empty()) {
        tracing::warn!(
            store_revision = counter,
            applied_revision = p.revision,
            "the change feed no longer continues from this replica's position \
             (trimmed, failover, or reset); reconciling"
        );
        return Ok(false);
    }
    if counter == p.revision {
        return Ok(true);
    }
    let next: Entries = redis::cmd("XRANGE")
        .arg(store.keys().changes())
        .arg(format!("({}", p.stream_id))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(con)
        .await?;
    Ok(next
        .first()
        .is_some_and(|(_, f)| field_u64(f, "rev") <= p.revision + 1))
}

async fn session(
    store: &RedisStore,
    handle: &BindingHandle,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> redis::RedisResult<()> {
    let (mut con, mut blocking) = store.connect_follower().await?;
    let opts = store.opts().clone();

    // Catch up: resume from the last position if the feed still continues it; otherwise
    // (never loaded from Redis, trimmed meanwhile, or a new history) reconcile.
    let needs_reconcile = match store.position() {
        None => true,
        Some(p) if p.stream_id == "0-0" && p.revision == 0 => true,
        Some(p) => !feed_continues(store, &mut con, &p).await?,
    };
    if needs_reconcile {
        reconcile(store, handle, &mut con).await?;
    }
    *backoff = Duration::from_millis(100);
    store
        .health_ref()
        .mark_synced(Revision(store.position().map_or(0, |p| p.revision)));
    tracing::info!("binding sync following the Redis change feed");

    let mut last_reconcile = Instant::now();
    let mut last_heartbeat: Option<Instant> = None;
    let mut counter_watch = CounterWatch::default();
    let mut last_snapshot = Instant::now();
    let mut snapshot_dirty = false;
    let block_ms = (opts.heartbeat_interval.as_millis() as u64 / 2).clamp(10, 1000);
    loop {
        if last_heartbeat.is_none_or(|t| t.elapsed() >= opts.heartbeat_interval) {
            let counter: Option<u64> = con.get(store.keys().revision()).await?;
            let applied = store.position().map_or(0, |p| p.revision);
            if let Some(why) = counter_watch.observe(counter, applied) {
                tracing::warn!(store_revision = ?counter, applied_revision = applied,
                    "{why}; reconciling");
                reconcile(store, handle, &mut con).await?;
                last_reconcile = Instant::now();
                counter_watch = CounterWatch::default();
            }
            let applied = store.position().map_or(0, |p| p.revision);
            super::fleet::heartbeat(store, &mut con, applied).await?;
            store.health_ref().mark_synced(Revision(applied));
            last_heartbeat = Some(Instant::now());
        }
        if last_reconcile.elapsed() >= opts.reconcile_interval {
            reconcile(store, handle, &mut con).await?;
            last_reconcile = Instant::now();
        }
        if snapshot_dirty && last_snapshot.elapsed() >= SNAPSHOT_EVERY {
            store.snapshot(handle.load()).await;
            last_snapshot = Instant::now();
            snapshot_dirty = false;
        }
        let from = store
            .position()
            .map_or_else(|| "0-0".to_owned(), |p| p.stream_id);
        let mut xread = redis::cmd("XREAD");
        xread
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(store.keys().changes())
            .arg(&from);
        let read = xread.query_async::<Option<Vec<(String, Entries)>>>(&mut blocking);
        let result = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(block_ms) + opts.timeout, read) => r,
            _ = shutdown.changed() => return Ok(()),
        };
        let streams = match result {
            Ok(r) => r?,
            Err(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "stream read timed out",
                )));
            }
        };
        let entries: Entries = streams.into_iter().flatten().flat_map(|(_, e)| e).collect();
        if entries.is_empty() {
            continue;
        }
        if apply_entries(store, handle, &mut con, entries).await? {
            reconcile(store, handle, &mut con).await?;
        }
        snapshot_dirty = true;
        let applied = store.position().map_or(0, |p| p.revision);
        store.health_ref().mark_synced(Revision(applied));
        // Tell the fleet at once: `rebind --wait` is waiting for exactly this.
        super::fleet::heartbeat(store, &mut con, applied).await?;
        last_heartbeat = Some(Instant::now());
    }
}

/// Applies feed entries in order. Returns true when the feed no longer continues this
/// replica's history — a gap (entries trimmed away) or a restart at an older revision — and
/// the caller must reconcile.
async fn apply_entries(
    store: &RedisStore,
    handle: &BindingHandle,
    con: &mut MultiplexedConnection,
    entries: Entries,
) -> redis::RedisResult<bool> {
    let mut pos = store.position().unwrap_or(FeedPosition {
        stream_id: "0-0".to_owned(),
        revision: 0,
    });
    for (id, fields) in entries {
        if field_str(&fields, "op") == Some(super::restore::RESET) {
            tracing::info!(
                revision = field_u64(&fields, "rev"),
                "Redis started a new history (a restore import); reconciling"
            );
            return Ok(true);
        }
        let rev = field_u64(&fields, "rev");
        // Within one history, entries after our position carry newer revisions. An older one
        // means Redis started a new history (reset, or a failover that lost writes): its
        // changes would all look stale, so reload instead of ignoring them.
        if rev != 0 && rev <= pos.revision {
            tracing::warn!(
                applied = pos.revision,
                got = rev,
                "the change feed restarted at an older revision (Redis reset or failover); reconciling"
            );
            return Ok(true);
        }
        if rev > pos.revision + 1 {
            tracing::warn!(
                expected = pos.revision + 1,
                got = rev,
                "gap in the change feed (trimmed?); reconciling"
            );
            return Ok(true);
        }
        let tenant = field_str(&fields, "tenant").and_then(|t| TenantId::parse(t).ok());
        if let Some(tenant) = tenant {
            let text: Option<String> = con.get(store.keys().binding(tenant.as_str())).await?;
            // The record may already be newer than this entry; revisions only move forward,
            // so applying the newest state early and skipping the stale entries later is safe.
            let change = match text {
                None => Some(Change::Delete {
                    tenant: tenant.clone(),
                    revision: Revision(rev),
                }),
                Some(t) => match parse_json_record(&t) {
                    Ok(b) => Some(Change::Upsert(Arc::new(b))),
                    Err(msg) => {
                        store.health_ref().add_rejected(1);
                        tracing::warn!(tenant = %tenant, problem = %msg,
                            "binding record refused; the tenant keeps its last good binding");
                        None
                    }
                },
            };
            if let Some(change) = change {
                match handle.apply(change) {
                    Ok(_) => {}
                    Err(crate::error::ApplyError::Stale { .. }) => {}
                    Err(e) => {
                        store.health_ref().add_rejected(1);
                        tracing::warn!(error = %e, "binding change refused");
                    }
                }
            }
        } else {
            tracing::warn!(entry = %id, "change entry without a valid tenant ignored");
        }
        pos = FeedPosition {
            stream_id: id,
            revision: pos.revision.max(rev),
        };
        store.set_position(pos.clone());
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::CounterWatch;

    /// (counter, applied, must reconcile) per heartbeat, in order.
    fn run(beats: &[(Option<u64>, u64, bool)]) {
        let mut w = CounterWatch::default();
        for (i, &(counter, applied, expect)) in beats.iter().enumerate() {
            let got = w.observe(counter, applied);
            assert_eq!(
                got.is_some(),
                expect,
                "beat {i}: {counter:?}/{applied}: {got:?}"
            );
        }
    }

    #[test]
    fn counter_watch_table() {
        // In step.
        run(&[(Some(5), 5, false), (Some(5), 5, false)]);
        // Empty store, empty replica.
        run(&[(None, 0, false), (None, 0, false)]);
        // Behind for a moment, then caught up: entries being read.
        run(&[(Some(7), 5, false), (Some(7), 7, false)]);
        // Moving but still behind (a large import being applied): not stuck.
        run(&[
            (Some(900), 5, false),
            (Some(1900), 400, false),
            (Some(1900), 1200, false),
        ]);
        // Behind, and nothing applied for a whole heartbeat: the feed cannot reach the entries.
        run(&[(Some(7), 5, false), (Some(7), 5, true)]);
        // The counter moved on, the replica did not reach even the earlier counter.
        run(&[(Some(7), 5, false), (Some(9), 5, true)]);
        // Counter behind or gone: a new history, at once.
        run(&[(Some(2), 5, true)]);
        run(&[(None, 5, true)]);
        // After a verdict the watch starts over.
        run(&[
            (Some(7), 5, false),
            (Some(7), 5, true),
            (Some(7), 5, false),
            (Some(7), 5, true),
        ]);
    }
}
