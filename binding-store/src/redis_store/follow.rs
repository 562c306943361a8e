//! One replica's sync loop: follow the change stream, detect gaps, reconcile, heartbeat,
//! snapshot, and survive Redis going away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::watch;

use super::{
    brief, check_key, field_str, field_u64, parse_json_record, record_text, Entries, FeedPosition,
    LoadError, RedisStore,
};
use crate::model::{Revision, TenantId};
use crate::table::{BindingHandle, Change};

/// The longest pause between reconnects (plus up to half of it as jitter). Short: a replica
/// that is away from a Redis that restarted empty is also away from the fleet's heartbeats,
/// which guard against a write starting a new history under it (see
/// [`RedisStore::wait_for_wiped_fleet`](super::RedisStore)).
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The first pause before reconnecting, and the pause after a session that ran
/// [`STEADY_SESSION`] or longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const STEADY_SESSION: Duration = Duration::from_secs(10);
/// While the sync keeps failing, one line about it this often (the first failure at once).
const RETRY_LOG_EVERY: Duration = Duration::from_secs(60);
/// Snapshots are written at most this often.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

/// Runs until `shutdown`; reconnects with backoff and jitter, serving the last table meanwhile.
pub(super) async fn run(
    store: Arc<RedisStore>,
    handle: BindingHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut told = FailureLines::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = Instant::now();
        let result = session(&store, &handle, &mut shutdown).await;
        // A session that lasted was a working one: the next reconnect comes soon. One that
        // fails again right after catching up (a command the replica's user may not run)
        // keeps backing off instead of reconnecting several times a second.
        let Err(e) = result else {
            return;
        };
        // A session that lasted, or got as far as following (it marked the store up), was a
        // working one: this failure is news, however soon it came.
        if started.elapsed() >= STEADY_SESSION {
            backoff = FIRST_BACKOFF;
            told = FailureLines::default();
        } else if store.health_ref().store_up() {
            told = FailureLines::default();
        }
        store.health_ref().mark_down();
        store.health_ref().add_sync_failure();
        // Redis is away: the snapshot is all a restart (or a restore, should Redis come back
        // empty) has of the table this replica serves.
        store
            .snapshot_if_behind(handle.load(), Duration::ZERO)
            .await;
        if let Some(not_logged) = told.admit(e.to_string()) {
            let retry_in_ms = backoff.as_millis() as u64;
            match misplaced_key(&store, &e).await {
                Some(named) => tracing::error!(problem = %named, retry_in_ms, not_logged,
                    "binding sync cannot follow Redis; serving the last table"),
                None if e.keeps_table() => tracing::warn!(error = %e, retry_in_ms, not_logged,
                    "binding sync reaches Redis but does not take what it holds; serving the last table"),
                None => tracing::warn!(error = %e, retry_in_ms, not_logged,
                    "binding sync lost Redis; serving the last table"),
            }
        }
        let jitter = Duration::from_millis(u64::from(rand_u8()) * backoff.as_millis() as u64 / 512);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            // A replica that keeps its table rather than take Redis's history leaves its
            // heartbeat behind: over a wiped Redis it is what refuses writes and restores that
            // would unbind the fleet's tenants, and over an unconfirmed history what keeps
            // replicas with nothing to keep out of it while this one restarts. A successor
            // under another id without a snapshot waits for it to age out (the live window).
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// While Redis stays away the replica retries every second or so: a failure is logged, then
/// the same failure again once every [`RETRY_LOG_EVERY`], saying how many were not; another
/// failure is logged at once.
#[derive(Debug, Default)]
pub(crate) struct FailureLines {
    /// The last failure logged, when, and the failures not logged since.
    last: Option<(String, Instant, u64)>,
}

impl FailureLines {
    /// Whether to log failure `said`: `Some` with the failures not logged since the last line.
    pub(crate) fn admit(&mut self, said: String) -> Option<u64> {
        match &mut self.last {
            Some((last, at, skipped)) if *last == said && at.elapsed() < RETRY_LOG_EVERY => {
                *skipped += 1;
                None
            }
            Some((last, at, skipped)) => {
                *last = said;
                *at = Instant::now();
                Some(std::mem::take(skipped))
            }
            None => {
                self.last = Some((said, Instant::now(), 0));
                Some(0)
            }
        }
    }
}

/// When `e` is Redis refusing a command for a key's type, which key of the schema another
/// program wrote with another type, said as the admin CLI says it. Redis is up then, and
/// retrying changes nothing until the key is fixed, so the log must name it.
async fn misplaced_key(store: &RedisStore, e: &LoadError) -> Option<String> {
    let LoadError::Redis(re) = e else {
        return None;
    };
    if re.code() != Some("WRONGTYPE") {
        return None;
    }
    let mut con = store.connect().await.ok()?;
    let keys = store.keys();
    let wanted = [
        (keys.changes(), "stream"),
        (keys.revision(), "string"),
        (keys.domains(), "hash"),
        (keys.replicas(), "hash"),
        (keys.history(), "hash"),
    ];
    let named = super::misplaced(&mut con, &wanted, "so the binding table cannot be followed")
        .await
        .ok()?;
    Some(named.map_or_else(
        || format!("a key of the binding schema holds another type: {re}"),
        |e| e.to_string(),
    ))
}

/// A few random bits for jitter, without a RNG dependency.
pub(crate) fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0]
}

/// Replaces the table with a full load from Redis; tenants whose record is now invalid keep
/// their current binding. With an empty table, a restore import under way is waited out on
/// this connection (Redis is up: not reported as lost); nothing changes if `shutdown` comes
/// meanwhile.
async fn reconcile(
    store: &RedisStore,
    handle: &BindingHandle,
    con: &mut MultiplexedConnection,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let current = handle.load();
    let history = store.position().and_then(|p| p.history);
    let served = || {
        Some(super::Served {
            table: &current,
            history: history.as_deref(),
        })
    };
    let tell = || {
        tracing::info!(
            "a restore import is writing to Redis: loading the whole table when it finishes"
        );
    };
    let loaded = match store
        .full_table_whole(con, served, Some(&current), tell, || *shutdown.borrow())
        .await
    {
        Ok(loaded) => loaded,
        Err(e) => {
            if e.keeps_table() {
                // No place in this store's feed is this replica's: the next session reloads
                // at once, instead of first finding (and logging, at every reconnect) that
                // the feed no longer continues from the old one.
                store.forget_feed_place();
            }
            return Err(e);
        }
    };
    let Some((table, pos)) = loaded else {
        return Ok(());
    };
    tracing::info!(
        bindings = table.len(),
        revision = pos.revision,
        "full reconcile with Redis"
    );
    handle.store(table);
    store.health_ref().add_full_reload();
    store.health_ref().mark_synced(Revision(pos.revision));
    store.set_position(pos);
    store.snapshot_behind();
    store.snapshot_in_background(handle.load(), Duration::ZERO);
    Ok(())
}

/// Checks, at each heartbeat, that the store still holds the history this replica follows,
/// without waiting for the next full reconcile. A new history whose change entries the feed
/// read cannot reach (a Redis wiped and written again, or failed over, on a host whose clock
/// runs behind, gives stream ids that sort before this replica's position) shows as the
/// replica's own last entry gone, or a revision counter behind it, or ahead of it and staying
/// out of reach.
#[derive(Debug, Default)]
struct CounterWatch {
    /// The counter and the applied revision seen at the last heartbeat, when the replica was
    /// behind the counter.
    behind: Option<(u64, u64)>,
    /// A missing counter was already reported.
    told_no_history: bool,
}

/// What one heartbeat's check found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing to do.
    InStep,
    /// No counter while the replica has applied changes: wiped, or a restore is writing.
    /// The replica keeps its table; the restore's reset entry or the next write reloads it.
    NoHistory,
    /// The store's history is not the one this replica follows: reconcile.
    Diverged(&'static str),
}

impl CounterWatch {
    /// `counter` is the store's revision counter, `applied` this replica's revision, `reached`
    /// the highest revision it knows the store reached (see `FeedPosition::reached`), and
    /// `own_entry` whether its position's stream entry is still in the feed (true when it has
    /// no position in the feed).
    ///
    /// A counter ahead is normal for a moment (entries are read right after they are
    /// written), so only a replica still behind the previous heartbeat's counter with its
    /// position unmoved, a whole heartbeat during which the feed was read, has lost the feed.
    fn observe(
        &mut self,
        counter: Option<u64>,
        applied: u64,
        reached: u64,
        own_entry: bool,
    ) -> Verdict {
        // Only the case that waits for the next heartbeat puts it back.
        let behind = self.behind.take();
        let Some(counter) = counter.or((applied == 0).then_some(0)) else {
            if std::mem::replace(&mut self.told_no_history, true) {
                return Verdict::InStep;
            }
            return Verdict::NoHistory;
        };
        self.told_no_history = false;
        if !own_entry {
            return Verdict::Diverged("this replica's last change entry is gone from the feed");
        }
        if counter < applied {
            return Verdict::Diverged("the store's revision counter is behind this replica");
        }
        if counter < reached {
            return Verdict::Diverged(
                "the store's revision counter is behind a revision this replica read from it \
                 (writes it serves were lost: a failover)",
            );
        }
        if counter == applied {
            return Verdict::InStep;
        }
        if behind.is_some_and(|(seen, was_applied)| applied == was_applied && applied < seen) {
            return Verdict::Diverged(
                "the change feed delivers nothing while the store's revision counter is ahead",
            );
        }
        self.behind = Some((counter, applied));
        Verdict::InStep
    }
}

/// What one heartbeat reads of the store's history.
struct HistoryRead {
    /// The revision counter.
    counter: Option<u64>,
    /// Whether the stream entry at the replica's position is still there (true without one).
    own_entry: bool,
    /// The history's id (`{prefix}:history`).
    id: Option<String>,
}

/// The store's revision counter and history id, and whether the stream entry at `position`
/// is still there.
async fn history_check(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    position: Option<&FeedPosition>,
) -> redis::RedisResult<HistoryRead> {
    let at = position.map_or("0-0", |p| p.stream_id.as_str());
    let mut pipe = redis::pipe();
    pipe.cmd("GET")
        .arg(store.keys().revision())
        .cmd("HGET")
        .arg(store.keys().history())
        .arg("id");
    if at == "0-0" {
        let (counter, id): (Option<Vec<u8>>, Option<Vec<u8>>) = pipe.query_async(con).await?;
        return Ok(HistoryRead {
            counter: store.keys().counter(counter)?,
            own_entry: true,
            id: id.map(super::lossy),
        });
    }
    let (counter, id, entry): (Option<Vec<u8>>, Option<Vec<u8>>, Entries) = pipe
        .cmd("XRANGE")
        .arg(store.keys().changes())
        .arg(at)
        .arg(at)
        .query_async(con)
        .await?;
    Ok(HistoryRead {
        counter: store.keys().counter(counter)?,
        own_entry: !entry.is_empty(),
        id: id.map(super::lossy),
    })
}

/// What the history id read at a heartbeat says, the counter being in step: a replica that
/// knows another id reloads, the rules of a full load deciding whether it takes the new
/// history. (One that knows none yet, having loaded a store before its first write began the
/// history and followed the feed since, learns it instead: see the heartbeat in `session`.)
fn id_verdict(ours: Option<&str>, theirs: Option<&str>) -> Option<Verdict> {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if ours != theirs => Some(Verdict::Diverged(
            "Redis names another history than the one this replica's table was loaded from",
        )),
        _ => None,
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
    let HistoryRead {
        counter, own_entry, ..
    } = history_check(store, con, Some(p)).await?;
    let counter = counter.unwrap_or(0);
    // Behind what this replica read of it, the store lost writes its table may hold, even
    // with the replica's last entry there (see `FeedPosition::reached`).
    if counter < p.revision.max(p.reached) || !own_entry {
        tracing::warn!(
            store_revision = counter,
            applied_revision = p.revision,
            reached_revision = p.reached,
            "the change feed no longer continues from this replica's position \
             (trimmed, failover, or reset); reconciling"
        );
        return Ok(false);
    }
    store.saw_counter(counter);
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
        .is_some_and(|(_, f)| field_u64(f, "rev") <= p.revision.saturating_add(1)))
}

/// Says so, once, when Redis may evict any key under memory pressure (`allkeys-*`): an
/// evicted binding leaves no change entry and no audit line, so replicas go on serving it
/// until their next full reload unbinds the tenant, one replica at a time. Bindings need
/// `noeviction` (or a `volatile-*` policy: no key of theirs expires). Not told when the
/// replica's user may not run `CONFIG GET`.
async fn warn_if_evicting(con: &mut MultiplexedConnection) {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if TOLD.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let policy: redis::RedisResult<(String, String)> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(con)
        .await;
    if let Ok((_, policy)) = policy {
        if policy.starts_with("allkeys-") && super::fleet::first_time(&TOLD) {
            tracing::error!(maxmemory_policy = %policy,
                "Redis may evict binding keys when it runs out of memory: an evicted tenant is \
                 unbound at the next full reload, with no change entry or audit line; set \
                 maxmemory-policy to noeviction");
        }
    }
}

async fn session(
    store: &RedisStore,
    handle: &BindingHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), LoadError> {
    let (mut con, mut blocking) = store.connect_follower().await?;
    let opts = store.opts().clone();
    warn_if_evicting(&mut con).await;

    // Catch up: resume from the last position if the feed still continues it; otherwise
    // (never loaded from Redis, no place in the feed, trimmed meanwhile, or a new history)
    // reconcile. A replica serving its snapshot has a revision but no place in the feed.
    let needs_reconcile = match store.position() {
        None => true,
        Some(p) if p.stream_id == "0-0" => true,
        Some(p) => !feed_continues(store, &mut con, &p).await?,
    };
    if needs_reconcile {
        if let Err(e) = reconcile(store, handle, &mut con, shutdown).await {
            if e.keeps_table() {
                // Redis is up but holds no history this replica takes: say what it serves, so
                // the admin CLI can refuse a write that would start a new history over it
                // (write.lua), or a restore older than it, and `replicas` shows it not
                // following. That is the revision applied (the snapshot's, when it serves
                // one), deletes after the newest record included; the newest record's
                // revision would leave them out.
                let serving = store.position().map_or(0, |p| p.revision);
                super::fleet::heartbeat(store, &mut con, serving, false).await?;
            }
            return Err(e);
        }
    }
    // In sync, and said so, once the first heartbeat is written (at once, below): a node that
    // takes no writes (a primary demoted to a read-only replica) refuses it and ends the
    // session, and one that did so every second looked in sync (the sync age stayed fresh)
    // while its replica followed nothing.
    let mut announced = false;

    let mut last_reconcile = Instant::now();
    let mut last_heartbeat: Option<Instant> = None;
    let mut counter_watch = CounterWatch::default();
    let block_ms = (opts.heartbeat_interval.as_millis() as u64 / 2).clamp(10, 1000);
    // Asked of the Sentinels on a timer of its own: the heartbeat's is reset by every change
    // applied, and a stream of changes from a writer still on the old primary must not keep
    // the question from being asked. At most once a second, whatever the heartbeat interval.
    let check_every = opts.heartbeat_interval.max(Duration::from_secs(1));
    let mut last_primary_check = Instant::now();
    loop {
        if last_primary_check.elapsed() >= check_every {
            last_primary_check = Instant::now();
            if let Some(named) = store.primary_moved().await {
                tracing::warn!(primary = %named,
                    "the Sentinels name another primary than the node this replica reads; reconnecting");
                return Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "the Sentinels name another primary",
                    named,
                ))
                .into());
            }
        }
        if last_heartbeat.is_none_or(|t| t.elapsed() >= opts.heartbeat_interval) {
            let position = store.position();
            let read = history_check(store, &mut con, position.as_ref()).await?;
            let ours = position.as_ref().and_then(|p| p.history.clone());
            let applied = position.as_ref().map_or(0, |p| p.revision);
            let reached = position.as_ref().map_or(0, |p| p.reached);
            let mut verdict = counter_watch.observe(read.counter, applied, reached, read.own_entry);
            if verdict == Verdict::InStep {
                if let Some(other) = id_verdict(ours.as_deref(), read.id.as_deref()) {
                    verdict = other;
                } else if let (None, Some(id)) = (&ours, &read.id) {
                    store.learn_history(id);
                    // The snapshot names it from its next write, made soon.
                    store.snapshot_behind();
                }
            }
            let counter = read.counter;
            match verdict {
                Verdict::InStep => {
                    if let Some(c) = counter {
                        store.saw_counter(c);
                    }
                }
                Verdict::NoHistory => tracing::warn!(
                    applied_revision = applied,
                    "Redis holds no revision counter (wiped, or a restore import is under way); \
                     keeping the table served now until a new history starts"
                ),
                Verdict::Diverged(why) => {
                    tracing::warn!(store_revision = ?counter, applied_revision = applied,
                        "{why}; reconciling");
                    reconcile(store, handle, &mut con, shutdown).await?;
                    last_reconcile = Instant::now();
                }
            }
            let applied = store.position().map_or(0, |p| p.revision);
            let following = !counter_watch.told_no_history;
            super::fleet::heartbeat(store, &mut con, applied, following).await?;
            if following {
                store.health_ref().mark_synced(Revision(applied));
                if !std::mem::replace(&mut announced, true) {
                    tracing::info!("binding sync following the Redis change feed");
                }
            } else {
                // Reached but not usable (no history): what a replica that reconnects now
                // reports too, and the sync age grows until a history is back.
                store.health_ref().mark_down();
            }
            last_heartbeat = Some(Instant::now());
        }
        if last_reconcile.elapsed() >= opts.reconcile_interval {
            reconcile(store, handle, &mut con, shutdown).await?;
            last_reconcile = Instant::now();
        }
        // Not waited for: at a million bindings a write takes seconds, which every change
        // behind it would wait too.
        store.snapshot_in_background(handle.load(), SNAPSHOT_EVERY);
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
            _ = shutdown.changed() => {
                // The snapshot first: the process may end soon after (`JobsStop`), and
                // leaving waits on Redis.
                store.snapshot_if_behind(handle.load(), Duration::ZERO).await;
                super::fleet::leave(store, &mut con).await;
                return Ok(());
            }
        };
        let streams = match result {
            Ok(r) => r?,
            Err(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::IoError,
                    "stream read timed out",
                ))
                .into());
            }
        };
        let entries: Entries = streams.into_iter().flatten().flat_map(|(_, e)| e).collect();
        if entries.is_empty() {
            continue;
        }
        if apply_entries(store, handle, &mut con, entries).await? {
            reconcile(store, handle, &mut con, shutdown).await?;
        }
        store.snapshot_behind();
        let applied = store.position().map_or(0, |p| p.revision);
        store.health_ref().mark_synced(Revision(applied));
        // Tell the fleet at once: `rebind --wait` is waiting for exactly this.
        super::fleet::heartbeat(store, &mut con, applied, true).await?;
        last_heartbeat = Some(Instant::now());
    }
}

/// Whether `change`, read from the store for a feed entry, meets a binding of its tenant
/// served under the same revision that it is not: within one history a revision is one write,
/// so the table holds a write the store no longer has (a failover lost it after this replica
/// read it) and the store has reused its revision for another. Applied entry by entry, the
/// change would be taken for one already applied, and the lost write served on.
/// `deletes`: the entry is a delete's (an upsert's entry whose record is gone meanwhile reads
/// as a delete too, under the entry's revision, not the delete's: that says nothing).
fn lost_write_served(table: &crate::table::BindingTable, change: &Change, deletes: bool) -> bool {
    let served = table.get(change.tenant().as_str());
    match change {
        // Revision 0: written by hand, not by a write; it names no write to compare.
        Change::Upsert(b) => {
            b.revision.get() > 0 && served.is_some_and(|s| s.revision == b.revision && **s != **b)
        }
        // A delete under the revision of a binding served: that binding was another write
        // of the same revision.
        Change::Delete { revision, .. } => {
            deletes && revision.get() > 0 && served.is_some_and(|s| s.revision == *revision)
        }
    }
}

/// Applies feed entries in order. Returns true when the feed no longer continues this
/// replica's history — a gap (entries trimmed away) or a restart at an older revision — or
/// when it cannot be applied entry by entry (see `contested` below), and the caller must
/// reconcile.
async fn apply_entries(
    store: &RedisStore,
    handle: &BindingHandle,
    con: &mut MultiplexedConnection,
    entries: Entries,
) -> redis::RedisResult<bool> {
    let mut pos = store.position().unwrap_or(FeedPosition {
        stream_id: "0-0".to_owned(),
        revision: 0,
        history: None,
        reached: 0,
        ahead: Arc::default(),
    });
    // Tenants whose newest record claims a custom domain another tenant still holds here.
    // Each entry is applied as the tenant's *newest* record, which may be writes ahead of it:
    // two tenants swapping domains (a lets go of one, b takes it, a takes b's) read in one
    // batch would each wait for the other, and neither entry can land first. A later entry
    // of the tenant that lands clears it; any left at the end of the batch are settled by a
    // reconcile, which builds the table from Redis's consistent whole.
    let mut contested: Vec<TenantId> = Vec::new();
    // Where the feed stood before the first contested entry: kept as this replica's position
    // until a later entry of each contested tenant lands or the reconcile has settled it.
    // Should the session end first (Redis went away, a record could not be read), the next
    // session reads those entries again, and meanwhile the replica does not report their
    // revisions as applied (`--wait` goes on waiting for it).
    let mut before_contested: Option<FeedPosition> = None;
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
        // A record applied ahead of the feed at this revision must be this entry's tenant's.
        if pos.ahead.keys().next().is_some_and(|r| *r <= rev) {
            let map = Arc::make_mut(&mut pos.ahead);
            let applied_here = map.remove(&rev);
            map.retain(|r, _| *r > rev);
            if let Some(other) = applied_here.filter(|t| Some(t) != tenant.as_ref()) {
                tracing::warn!(revision = rev, served = %other, entry = ?tenant.as_ref().map(TenantId::as_str),
                    "the feed gives another tenant's change the revision of a record this \
                     replica serves: a write the store lost (a failover); reconciling");
                return Ok(true);
            }
        }
        if let Some(tenant) = tenant {
            let got: redis::RedisResult<Option<Vec<u8>>> =
                con.get(store.keys().binding(tenant.as_str())).await;
            // A key of another type is a bad record, not a broken connection: refused like
            // one, so the feed goes on.
            let stored = match got {
                Err(e) if e.code() == Some("WRONGTYPE") => {
                    Some(Err("the key holds no string value".to_owned()))
                }
                got => got?.map(|v| {
                    record_text(&v)
                        .and_then(parse_json_record)
                        .and_then(|b| check_key(b, tenant.as_str()))
                }),
            };
            // The record may already be newer than this entry; revisions only move forward,
            // so applying the newest state early and skipping the stale entries later is safe.
            let change = match stored {
                None => Some(Change::Delete {
                    tenant: tenant.clone(),
                    revision: Revision(rev),
                }),
                Some(Ok(b)) => Some(Change::Upsert(Arc::new(b))),
                Some(Err(msg)) => {
                    store.health_ref().add_rejected(1);
                    tracing::warn!(tenant = %tenant, problem = %brief(&msg),
                        "binding record refused; the tenant keeps its last good binding");
                    None
                }
            };
            let serving = |h: &BindingHandle| {
                h.load()
                    .get(tenant.as_str())
                    .map_or(0, |b| b.revision.get())
            };
            if let Some(Change::Upsert(b)) = &change {
                // Read as it is now: maybe writes past this entry.
                pos.reached = pos.reached.max(b.revision.get());
                if b.revision.get() > rev {
                    Arc::make_mut(&mut pos.ahead).insert(b.revision.get(), tenant.clone());
                }
            }
            if change.as_ref().is_some_and(|c| {
                lost_write_served(
                    &handle.load(),
                    c,
                    field_str(&fields, "op") == Some("delete"),
                )
            }) {
                tracing::warn!(tenant = %tenant, revision = rev,
                    "the table serves another change of this tenant under the same revision: \
                     a write the store lost (a failover); reconciling");
                return Ok(true);
            }
            match change {
                None => store.refused(tenant.as_str(), serving(handle)),
                Some(change) => {
                    let upsert = matches!(change, Change::Upsert(_));
                    match handle.apply(change) {
                        Ok(_) => {
                            contested.retain(|t| t != &tenant);
                            store.accepted(tenant.as_str());
                            // At once, not after the batch: a later entry whose read fails
                            // ends the session with this one served, and the snapshot owed.
                            store.snapshot_behind();
                        }
                        Err(crate::error::ApplyError::DomainTaken { .. }) => {
                            if !contested.contains(&tenant) {
                                contested.push(tenant.clone());
                            }
                            before_contested.get_or_insert_with(|| pos.clone());
                        }
                        // Applied early from an older entry, or a delete a later entry
                        // carries: benign. A stored record older than the one applied is
                        // not: within one history revisions only move forward, so it was
                        // written by hand.
                        Err(crate::error::ApplyError::Stale { have, got, .. })
                            if !upsert || got >= have => {}
                        // The record is this entry's own write, yet the table serves a newer
                        // revision of the tenant, which came from outside the feed's order: a
                        // record written by hand ahead of the counter, or one kept (its record
                        // refused) while the counter was set back. The write is the store's
                        // latest word on the tenant, and a reconcile takes it: refused, the
                        // change waited for the next periodic reconcile.
                        Err(crate::error::ApplyError::Stale { have, got, .. })
                            if got.get() == rev =>
                        {
                            tracing::warn!(tenant = %tenant, served = have.get(), revision = rev,
                                "the table serves a revision of this tenant ahead of the feed's \
                                 write (a record written by hand ahead of the revision counter, \
                                 or a counter set back); reconciling");
                            return Ok(true);
                        }
                        Err(e) => {
                            store.health_ref().add_rejected(1);
                            store.refused(tenant.as_str(), serving(handle));
                            tracing::warn!(error = %e, "binding change refused");
                        }
                    }
                }
            }
        } else {
            tracing::warn!(entry = %id, "change entry without a valid tenant ignored");
        }
        pos = FeedPosition {
            stream_id: id,
            revision: pos.revision.max(rev),
            reached: pos.reached.max(rev),
            history: pos.history,
            ahead: pos.ahead,
        };
        if contested.is_empty() {
            before_contested = None;
        }
        // While a contested entry waits, the replica's position stays before it: a later
        // entry that cannot be read ends this session before the reconcile, and the next
        // one must read the contested entries again.
        // (What the store reached is known whatever the place kept.)
        let mut at = before_contested.clone().unwrap_or_else(|| pos.clone());
        at.reached = pos.reached;
        at.ahead = Arc::clone(&pos.ahead);
        // An entry passed over (its record refused, or applied early) leaves the table at the
        // store's revision all the same, as a full load of that store would: replicas serving
        // one table said two revisions (`/bindings/revision`, `binding_revision`).
        handle.advance_to(Revision(at.revision));
        store.set_position(at);
    }
    if !contested.is_empty() {
        // The position is still before the first contested entry (see above).
        tracing::info!(
            tenants = contested.len(),
            "custom domains moved between tenants within one read of the feed; reconciling"
        );
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::{lost_write_served, CounterWatch, Verdict};
    use crate::model::{Revision, TenantId};
    use crate::table::{BindingTable, Change};
    use std::sync::Arc;

    fn binding(url: &str, revision: u64) -> Arc<crate::model::Binding> {
        let mut b = crate::records::parse_record(&serde_json::json!({
            "tenant_id": "acme", "subscription_id": "s", "instance_id": "i",
            "instance_url": url, "status": "active", "plan": "team", "region": "eu",
            "revision": revision
        }))
        .expect("record");
        b.revision = Revision(revision);
        Arc::new(b)
    }

    #[test]
    fn a_change_under_a_served_revision_that_differs_is_a_lost_write() {
        let (table, _) = BindingTable::from_bindings([binding("http://10.0.0.5", 37)]);
        let upsert = |url, rev| Change::Upsert(binding(url, rev));
        let delete = |rev| Change::Delete {
            tenant: TenantId::parse("acme").expect("tenant"),
            revision: Revision(rev),
        };
        // The same write read again, or a newer or older one: nothing lost.
        assert!(!lost_write_served(
            &table,
            &upsert("http://10.0.0.5", 37),
            false
        ));
        assert!(!lost_write_served(
            &table,
            &upsert("http://10.0.0.6", 38),
            false
        ));
        assert!(!lost_write_served(
            &table,
            &upsert("http://10.0.0.6", 36),
            false
        ));
        // Another write under the served revision: the served one was lost.
        assert!(lost_write_served(
            &table,
            &upsert("http://10.0.0.6", 37),
            false
        ));
        // A delete's entry under it too; an upsert's whose record is gone since says nothing.
        assert!(lost_write_served(&table, &delete(37), true));
        assert!(!lost_write_served(&table, &delete(37), false));
        assert!(!lost_write_served(&table, &delete(38), true));
    }

    /// Per heartbeat, in order: (counter, applied, own entry present, verdict).
    fn run(beats: &[(Option<u64>, u64, bool, Verdict)]) {
        let mut w = CounterWatch::default();
        for (i, (counter, applied, own, expect)) in beats.iter().enumerate() {
            let got = w.observe(*counter, *applied, *applied, *own);
            assert_eq!(&got, expect, "beat {i}: {counter:?}/{applied}/{own}");
        }
    }

    #[test]
    fn a_counter_behind_a_revision_read_from_the_store_is_a_lost_write() {
        // Position at 36, a record of 37 applied from its entry (read as it is now): a store
        // at 36 lost the write the table serves, though the replica's entry is there.
        let mut w = CounterWatch::default();
        assert_eq!(
            w.observe(Some(36), 36, 37, true),
            Verdict::Diverged(
                "the store's revision counter is behind a revision this replica read from it \
                 (writes it serves were lost: a failover)"
            )
        );
        assert_eq!(w.observe(Some(37), 36, 37, true), Verdict::InStep);
    }

    #[test]
    fn counter_watch_table() {
        use Verdict::{InStep, NoHistory};
        let gone = Verdict::Diverged("this replica's last change entry is gone from the feed");
        let behind = Verdict::Diverged("the store's revision counter is behind this replica");
        let stuck = Verdict::Diverged(
            "the change feed delivers nothing while the store's revision counter is ahead",
        );
        // In step; an empty store and an empty replica.
        run(&[(Some(5), 5, true, InStep), (Some(5), 5, true, InStep)]);
        run(&[(None, 0, true, InStep), (None, 0, true, InStep)]);
        // Behind for a moment, then caught up: entries being read.
        run(&[(Some(7), 5, true, InStep), (Some(7), 7, true, InStep)]);
        // Moving but still behind (a large import being applied): not stuck.
        run(&[
            (Some(900), 5, true, InStep),
            (Some(1900), 400, true, InStep),
            (Some(1900), 1200, true, InStep),
        ]);
        // Behind with nothing applied for a whole heartbeat, against the same or a newer
        // counter: the feed cannot reach the entries.
        run(&[
            (Some(7), 5, true, InStep),
            (Some(7), 5, true, stuck.clone()),
        ]);
        run(&[
            (Some(7), 5, true, InStep),
            (Some(9), 5, true, stuck.clone()),
        ]);
        // A counter behind, or the replica's own entry gone (even at an equal counter): a new
        // history, at once.
        run(&[(Some(2), 5, true, behind)]);
        run(&[(Some(5), 5, false, gone)]);
        // No counter while serving: said once per episode, never a reconcile.
        run(&[
            (None, 5, false, NoHistory),
            (None, 5, false, InStep),
            (Some(5), 5, true, InStep),
            (None, 5, false, NoHistory),
        ]);
        // After a verdict the watch starts over.
        run(&[
            (Some(7), 5, true, InStep),
            (Some(7), 5, true, stuck.clone()),
            (Some(7), 5, true, InStep),
            (Some(7), 5, true, stuck),
        ]);
    }
}
