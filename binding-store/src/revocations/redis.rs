//! Revocations in Redis: the admin's writes (one script) and a replica's follower.
//!
//! Keys (under the store's prefix; see docs/redis-schema.md, "Revocations"):
//! `revocations` (hash: key → JSON), `revocations:seq` (the change counter),
//! `revocations:changes` (the feed), `revocations:audit` (newest first).
//!
//! A follower loads the hash, the counter and the feed's head in one `MULTI`, then reads the
//! feed from that head. The counter's values are consecutive, so a gap (entries trimmed away
//! while it lagged, a failed write) shows, and is met with a full load; so is every
//! reconnect, and every `reconcile_interval`. While Redis is away the list in force stays as
//! it was: a router fails open on revocations, and how stale its list is shows in
//! [`Revocations::synced_ms`] (the proxy's `revocations_sync_age_seconds`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use super::file;
use super::list::{RevocationList, Revocations};
use super::model::{Revocation, RevocationError};
use super::{AdminFailure, Listed, Stored};
use crate::records::brief;
use crate::redis_store::follow::{rand_u8, FailureLines};
use crate::redis_store::{
    counter_value, field_str, field_u64, lock, script_error, Entries, RedisOptions, RedisStore,
};
use crate::source::now_unix_ms as now_ms;

/// The first pause before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one feed read blocks: the list is known to be in sync at least this often.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries one feed read takes at most: a read that returns this many may leave more behind.
const READ_COUNT: usize = 1000;
/// How often the Sentinels are asked whether the primary moved.
const PRIMARY_CHECK: Duration = Duration::from_secs(1);
/// Audit entries kept.
const AUDIT_CAP: usize = 1000;
/// How often a put whose key another admin changed meanwhile is tried again.
const PUT_TRIES: usize = 10;
/// How long after a failed snapshot write it is tried again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(1);

/// Revocations in the Redis store of `[store]`.
pub struct RedisRevocations {
    store: RedisStore,
    opts: RedisOptions,
    /// `<snapshot_path>.revocations.json`, when the store keeps a snapshot.
    snapshot: Option<PathBuf>,
    script: redis::Script,
    restore: redis::Script,
    /// Keys whose record is refused now: each is logged and counted once, until it changes.
    refused: Mutex<HashSet<String>>,
    /// Wakes the snapshot writer ([`RedisRevocations::write_snapshots`]).
    snapshot_due: tokio::sync::Notify,
    /// Whether this process asked for its snapshot since it began following.
    snapshot_asked: AtomicBool,
    /// Whether a write was asked for and not yet begun (or failed): what a stop writes.
    snapshot_pending: AtomicBool,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("prefix", &self.opts.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Returns once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Where the follower is in the feed.
#[derive(Debug, Clone)]
struct Position {
    stream_id: String,
    seq: u64,
}

/// Why a follower session ended.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(
        "Redis holds no revocation counter ({0}), yet this router holds {1} revocations: it looks \
         wiped; keeping them until revocations are written again (`nexus-edge revoke import` of \
         a replica's revocation snapshot puts them back)"
    )]
    NoCounter(String, usize),
}

/// The file a Redis replica keeps its revocations in beside its binding snapshot.
pub fn snapshot_path(binding_snapshot: &std::path::Path) -> PathBuf {
    crate::audit_log::beside(binding_snapshot, ".revocations.json")
}

impl RedisRevocations {
    /// Revocations in the store `opts` names. Fails only on malformed endpoint or TLS
    /// settings; connecting happens on use.
    pub fn new(opts: RedisOptions) -> Result<Self, String> {
        Ok(Self {
            store: RedisStore::new(opts.clone())?,
            snapshot: opts.snapshot_path.as_deref().map(snapshot_path),
            opts,
            script: redis::Script::new(include_str!("revoke.lua")),
            restore: redis::Script::new(include_str!("restore.lua")),
            refused: Mutex::new(HashSet::new()),
            snapshot_due: tokio::sync::Notify::new(),
            snapshot_asked: AtomicBool::new(false),
            snapshot_pending: AtomicBool::new(false),
        })
    }

    /// Whether a revocation snapshot is kept (a `snapshot_path`): written as the follower
    /// stops, its last step.
    pub fn keeps_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// The start's load: from Redis, or, when it cannot be read within the store's timeout,
    /// from this replica's revocation snapshot (marked synced as of the file's write: the
    /// list is at least that old). The snapshot is read first either way: a record Redis
    /// holds that is refused keeps the snapshot's revocation under its key, as it keeps the
    /// one in force later. Says where the list came from; an error means neither could be
    /// read (the list stays empty).
    pub async fn initial_load(&self, into: &Revocations) -> Result<&'static str, String> {
        let snapshot = match self.snapshot.clone() {
            None => Err("no snapshot_path, so no revocation snapshot".to_owned()),
            Some(path) => tokio::task::spawn_blocking(move || {
                let written = std::fs::metadata(&path).and_then(|m| m.modified());
                file::read(&path).map(|list| (list, written.ok()))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|read| read.map_err(|e| format!("snapshot: {e}"))),
        };
        let written = snapshot.map(|(list, written)| {
            into.install(RevocationList::new(list));
            written
        });
        let from_redis = async {
            let mut con = self.store.connect().await?;
            self.full_load(&mut con, into).await
        };
        let failed = match tokio::time::timeout(self.opts.timeout * 2, from_redis).await {
            Ok(Ok(_)) => return Ok("redis"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        match written {
            Ok(at) => {
                if let Some(at) = at {
                    // A file dated ahead (a copy, a skewed clock) must not read as fresher
                    // than now: staleness would stay hidden until then.
                    let ms = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    into.mark_synced(ms.min(now_ms()));
                }
                Ok("snapshot")
            }
            Err(e) => Err(format!("{failed}; {e}")),
        }
    }

    /// Follows the feed until `stop`, reconnecting with backoff; the list in force stays
    /// as it is while Redis is away. Keeps the snapshot beside it, and writes it once more
    /// as it stops.
    pub async fn follow(&self, into: Revocations, stop: watch::Receiver<bool>) {
        tokio::join!(
            self.follow_feed(&into, stop.clone()),
            self.write_snapshots(&into, stop)
        );
        // Both have ended: a write still asked for (a change the follower applied as it
        // stopped, or one whose write failed) is made now, the process being about to exit.
        if let Some(path) = &self.snapshot {
            if self.snapshot_pending.swap(false, Ordering::Relaxed) {
                self.write_snapshot(path, &into, &mut FailureLines::default())
                    .await;
            }
        }
    }

    async fn follow_feed(&self, into: &Revocations, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        let mut told = FailureLines::default();
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let Err(e) = self.session(into, &mut stop).await else {
                return;
            };
            if started.elapsed() >= Duration::from_secs(10) {
                backoff = FIRST_BACKOFF;
            }
            if let Some(not_logged) = told.admit(e.to_string()) {
                tracing::warn!(error = %e, not_logged, revocations = into.load().len(),
                    "revocation sync cannot follow Redis; the revocations in force stay (failing open)");
            }
            let jitter =
                Duration::from_millis(u64::from(rand_u8()) * backoff.as_millis() as u64 / 512);
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The snapshot writer: one write at a time, each of the list in force when it begins,
    /// so a later list is never overwritten by an earlier one. Asked for by
    /// [`RedisRevocations::want_snapshot`] (asks made during a write make one more); a failed
    /// write is tried again a second later (said once while it keeps failing). What is still
    /// asked for at `stop` is written by [`RedisRevocations::follow`] once the follower has
    /// ended too.
    async fn write_snapshots(&self, from: &Revocations, mut stop: watch::Receiver<bool>) {
        let Some(path) = &self.snapshot else { return };
        let mut told = FailureLines::default();
        loop {
            tokio::select! {
                () = self.snapshot_due.notified() => {}
                () = stopped(&mut stop) => return,
            }
            self.snapshot_pending.store(false, Ordering::Relaxed);
            if !self.write_snapshot(path, from, &mut told).await {
                self.snapshot_pending.store(true, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(SNAPSHOT_RETRY) => self.want_snapshot(),
                    () = stopped(&mut stop) => return,
                }
            }
        }
    }

    /// Writes the list in force to `path`, off the async threads; whether it was written.
    async fn write_snapshot(
        &self,
        path: &std::path::Path,
        from: &Revocations,
        told: &mut FailureLines,
    ) -> bool {
        let list = from.load_full();
        let path = path.to_owned();
        let wrote = tokio::task::spawn_blocking({
            let path = path.clone();
            move || file::write(&path, &list)
        })
        .await;
        let failed = match wrote {
            Ok(Ok(())) => {
                *told = FailureLines::default();
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the write panicked: {e}"),
        };
        from.count_snapshot_failure();
        if let Some(not_logged) = told.admit(failed.clone()) {
            tracing::warn!(path = %path.display(), error = %failed, not_logged,
                "revocation snapshot not written; tried again every second");
        }
        false
    }

    /// Asks the snapshot writer for a write.
    fn want_snapshot(&self) {
        if self.keeps_snapshot() {
            self.snapshot_pending.store(true, Ordering::Relaxed);
            self.snapshot_due.notify_one();
        }
    }

    /// One connection's worth of following: a full load, then the feed.
    async fn session(
        &self,
        into: &Revocations,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), FollowError> {
        let (mut con, mut blocking) = self.store.connect_follower().await?;
        let mut pos = self.full_load(&mut con, into).await?;
        // The first list this process follows from is written whatever it changed: the file
        // may be of an older run, or missing.
        if !self.snapshot_asked.swap(true, Ordering::Relaxed) {
            self.want_snapshot();
        }
        let mut reconciled = Instant::now();
        let mut primary_checked = Instant::now();
        loop {
            // Behind Sentinel an old primary may go on answering after a failover, with no
            // new entry ever: its reads would look in sync.
            if primary_checked.elapsed() >= PRIMARY_CHECK {
                primary_checked = Instant::now();
                if let Some(named) = self.store.primary_moved().await {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "the Sentinels name another primary",
                        named,
                    ))
                    .into());
                }
            }
            if reconciled.elapsed() >= self.opts.reconcile_interval {
                pos = self.full_load(&mut con, into).await?;
                reconciled = Instant::now();
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(self.store.keys().revocation_changes())
                .arg(&pos.stream_id);
            let read = xread.query_async::<Option<Vec<(String, Entries)>>>(&mut blocking);
            let asked = now_ms();
            let streams = tokio::select! {
                r = tokio::time::timeout(BLOCK + self.opts.timeout, read) => match r {
                    Ok(r) => r?,
                    Err(_) => return Err(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "revocation feed read timed out",
                    )).into()),
                },
                _ = stop.changed() => return Ok(()),
            };
            let entries: Entries = streams.into_iter().flatten().flat_map(|(_, e)| e).collect();
            let whole = entries.len() < READ_COUNT;
            if let Applied::Gap = self.apply(into, &entries, &mut pos) {
                pos = self.full_load(&mut con, into).await?;
                reconciled = Instant::now();
                continue;
            }
            // Everything written before the read was asked for has been applied, unless the
            // read was cut at its count: the rest comes with the next.
            if whole {
                into.mark_synced(asked);
            }
        }
    }

    /// Replaces the list with what Redis holds. A record that is refused keeps the
    /// revocation in force under its key, if any (an entry dropped would be a token accepted
    /// again).
    async fn full_load(
        &self,
        con: &mut MultiplexedConnection,
        into: &Revocations,
    ) -> Result<Position, FollowError> {
        let keys = self.store.keys();
        let asked = now_ms();
        let (counter, head, fields): (Option<Vec<u8>>, Entries, Fields) = redis::pipe()
            .atomic()
            .get(keys.revocation_seq())
            .cmd("XREVRANGE")
            .arg(keys.revocation_changes())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .hgetall(keys.revocations())
            .query_async(con)
            .await?;
        let current = into.load_full();
        let counter = counter_value(
            &keys.revocation_seq(),
            "revocation counter is no whole number",
            counter,
            "revocations are changed by `nexus-edge revoke` only",
        )?;
        let seq = match counter {
            None if !current.is_empty() => {
                return Err(FollowError::NoCounter(keys.revocation_seq(), current.len()))
            }
            None => 0,
            Some(seq) => seq,
        };
        let mut list = RevocationList::default();
        let mut now_refused = HashSet::new();
        {
            let mut refused = lock(&self.refused);
            for (key, value) in fields {
                let key = String::from_utf8_lossy(&key).into_owned();
                match read_record(&key, &value) {
                    Ok(r) => list.put(r.into()),
                    Err(e) => {
                        if let Some(kept) = current.get(&key) {
                            list.put(kept.clone());
                        }
                        if !refused.contains(&key) {
                            into.count_refused();
                            tracing::error!(key = %brief(&key), problem = %e,
                                "revocation record refused; the revocation in force under its key, if any, stays");
                        }
                        now_refused.insert(key);
                    }
                }
            }
            *refused = now_refused;
        }
        let changed = list_differs(&current, &list);
        into.install(list);
        into.mark_synced(asked);
        if changed {
            self.want_snapshot();
        }
        let stream_id = head
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
        Ok(Position { stream_id, seq })
    }

    /// Applies feed entries to the list in force; a gap in `seq` applies nothing more.
    fn apply(&self, into: &Revocations, entries: &Entries, pos: &mut Position) -> Applied {
        if entries.is_empty() {
            return Applied::InOrder;
        }
        let mut refused = lock(&self.refused);
        let mut list = (*into.load_full()).clone();
        let mut changed = false;
        let mut result = Applied::InOrder;
        for (id, fields) in entries {
            let seq = field_u64(fields, "seq");
            if seq != pos.seq + 1 {
                result = Applied::Gap;
                break;
            }
            pos.seq = seq;
            pos.stream_id.clone_from(id);
            let key = field_str(fields, "key").unwrap_or_default();
            match field_str(fields, "op") {
                Some("delete") => {
                    changed |= list.remove(key);
                    refused.remove(key);
                }
                Some("put") => {
                    let entry = fields
                        .iter()
                        .find(|(k, _)| k == b"entry")
                        .map_or(&[][..], |(_, v)| v.as_slice());
                    match read_record(key, entry) {
                        Ok(r) => {
                            list.put(r.into());
                            refused.remove(key);
                            changed = true;
                        }
                        Err(e) => {
                            into.count_refused();
                            refused.insert(key.to_owned());
                            tracing::error!(key = %brief(key), problem = %e,
                                "revocation change refused; the revocation in force under its key, if any, stays");
                        }
                    }
                }
                // A restore replaced the whole list (`revoke import` into an empty store).
                Some("reset") => {
                    result = Applied::Gap;
                    break;
                }
                other => {
                    into.count_refused();
                    tracing::error!(key = %brief(key), op = ?other.map(brief),
                        "revocation change with an unknown op skipped");
                }
            }
        }
        if changed {
            into.install(list);
            // Before a gap too: the full load after it may find nothing more to change.
            self.want_snapshot();
        }
        result
    }

    /// Puts `r` in force on every replica, merged over the revocation held under its key
    /// ([`Revocation::merged_over`]); tried again when another admin changes that key
    /// meanwhile.
    pub async fn put(
        &self,
        r: &Revocation,
        actor: &str,
        reason: &str,
    ) -> Result<Stored, AdminFailure> {
        let mut con = self.admin_connection().await?;
        self.put_on(&mut con, r, actor, reason).await
    }

    /// Puts each of `list` in force as [`RedisRevocations::put`] does, on one connection;
    /// says how many were put before a failure.
    pub async fn put_all(
        &self,
        list: &[Revocation],
        actor: &str,
        reason: &str,
    ) -> Result<usize, (usize, AdminFailure)> {
        let mut con = self.admin_connection().await.map_err(|e| (0, e))?;
        for (done, r) in list.iter().enumerate() {
            self.put_on(&mut con, r, actor, reason)
                .await
                .map_err(|e| (done, e))?;
        }
        Ok(list.len())
    }

    /// Puts `list` into a store that holds no revocation and no change counter, in one atomic
    /// step (`restore.lua`); [`AdminFailure::NotEmpty`] when it holds either.
    pub async fn restore(
        &self,
        list: &[Revocation],
        actor: &str,
        reason: &str,
    ) -> Result<u64, AdminFailure> {
        let mut con = self.admin_connection().await?;
        let mut call = self.keyed(&self.restore);
        call.arg(actor)
            .arg(reason)
            .arg(self.opts.stream_maxlen)
            .arg(AUDIT_CAP);
        for r in list {
            call.arg(r.key()).arg(r.to_json());
        }
        let seq = call
            .invoke_async::<u64>(&mut con)
            .await
            .map_err(|e| match script_error(&e) {
                Some(("NOTEMPTY", _)) => AdminFailure::NotEmpty(self.store.keys().revocations()),
                _ => self.unavailable(&e),
            })?;
        if self.store.unreplicated(&mut con).await {
            tracing::warn!(
                "the revocations are written on the primary, but no standby acknowledged them: \
                 a failover now would lose them"
            );
        }
        Ok(seq)
    }

    async fn put_on(
        &self,
        con: &mut MultiplexedConnection,
        r: &Revocation,
        actor: &str,
        reason: &str,
    ) -> Result<Stored, AdminFailure> {
        let key = r.key();
        for _ in 0..PUT_TRIES {
            let held: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(self.store.keys().revocations())
                .arg(&key)
                .query_async(con)
                .await
                .map_err(|e| self.unavailable(&e))?;
            // A damaged record says nothing to merge with: it is replaced (routers keep the
            // revocation they had under its key until then; said by the CLI).
            let replaced = held.as_deref().and_then(|h| read_record(&key, h).ok());
            let stored = replaced
                .as_ref()
                .map_or_else(|| r.clone(), |h| r.merged_over(h));
            let change = Change {
                op: "put",
                key: &key,
                entry: &stored.to_json(),
                expect: match &held {
                    Some(h) => Expect::Equals(h),
                    None => Expect::Absent,
                },
            };
            match self.change(con, &change, actor, reason).await {
                Ok(_) => {
                    return Ok(Stored {
                        revocation: stored,
                        replaced_damaged: held.is_some() && replaced.is_none(),
                        replaced,
                    })
                }
                Err(AdminFailure::Changed(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AdminFailure::Changed(key))
    }

    /// Takes the revocation under `key` out of force on every replica; with `expect`, only
    /// while its record is those bytes (as [`RedisRevocations::list`] read it), else
    /// [`AdminFailure::Changed`].
    pub async fn delete(
        &self,
        key: &str,
        expect: Option<&[u8]>,
        actor: &str,
        reason: &str,
    ) -> Result<(), AdminFailure> {
        let mut con = self.admin_connection().await?;
        let change = Change {
            op: "delete",
            key,
            entry: "",
            expect: expect.map_or(Expect::Any, Expect::Equals),
        };
        self.change(&mut con, &change, actor, reason)
            .await
            .map(|_| ())
    }

    /// An invocation of `script` (`revoke.lua`, `restore.lua`) with the four keys both take.
    fn keyed<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let keys = self.store.keys();
        let mut call = script.prepare_invoke();
        call.key(keys.revocations())
            .key(keys.revocation_seq())
            .key(keys.revocation_changes())
            .key(keys.revocation_audit());
        call
    }

    async fn admin_connection(&self) -> Result<MultiplexedConnection, AdminFailure> {
        self.store
            .admin_connection()
            .await
            .map_err(|e| AdminFailure::Unavailable(e.to_string()))
    }

    fn unavailable(&self, e: &redis::RedisError) -> AdminFailure {
        AdminFailure::Unavailable(format!("redis at {}: {e}", self.opts.endpoint.describe()))
    }

    /// Runs `revoke.lua`; behind Sentinel, warns when no standby acknowledged the change.
    async fn change(
        &self,
        con: &mut MultiplexedConnection,
        c: &Change<'_>,
        actor: &str,
        reason: &str,
    ) -> Result<u64, AdminFailure> {
        let seq = self
            .keyed(&self.script)
            .arg(c.op)
            .arg(c.key)
            .arg(c.entry)
            .arg(actor)
            .arg(reason)
            .arg(self.opts.stream_maxlen)
            .arg(AUDIT_CAP)
            .arg(c.expect.mode())
            .arg(c.expect.record())
            .invoke_async::<u64>(con)
            .await
            .map_err(|e| match script_error(&e) {
                Some(("NOTFOUND", _)) => AdminFailure::NotFound(c.key.to_owned()),
                Some(("CHANGED", _)) => AdminFailure::Changed(c.key.to_owned()),
                _ => self.unavailable(&e),
            })?;
        if self.store.unreplicated(con).await {
            tracing::warn!(
                "revocation {} is changed on the primary, but no standby acknowledged it: a \
                 failover now would lose it (`nexus-edge revoke list` after one says whether \
                 it is there)",
                c.key
            );
        }
        Ok(seq)
    }

    /// The newest `n` audit entries (JSON text), newest first.
    pub async fn audit(&self, n: usize) -> Result<Vec<String>, AdminFailure> {
        let mut con = self.admin_connection().await?;
        let entries: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.store.keys().revocation_audit())
            .arg(0)
            .arg(n.saturating_sub(1))
            .query_async(&mut con)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(entries
            .into_iter()
            .map(|e| String::from_utf8_lossy(&e).into_owned())
            .collect())
    }

    /// Every record the hash holds, by key.
    pub async fn list(&self) -> Result<Vec<Listed>, AdminFailure> {
        let mut con = self.admin_connection().await?;
        let fields: Fields = redis::cmd("HGETALL")
            .arg(self.store.keys().revocations())
            .query_async(&mut con)
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut out: Vec<_> = fields
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                let read = read_record(&key, &v);
                Listed { key, held: v, read }
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// One change for `revoke.lua`.
struct Change<'a> {
    op: &'a str,
    key: &'a str,
    entry: &'a str,
    /// What the field must hold for the change to be made.
    expect: Expect<'a>,
}

/// What a field must hold for a change to be made.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// Anything, or nothing.
    Any,
    /// Nothing.
    Absent,
    /// These bytes, as read.
    Equals(&'a [u8]),
}

impl<'a> Expect<'a> {
    fn mode(self) -> &'static str {
        match self {
            Expect::Any => "any",
            Expect::Absent => "absent",
            Expect::Equals(_) => "equals",
        }
    }

    fn record(self) -> &'a [u8] {
        match self {
            Expect::Equals(r) => r,
            Expect::Any | Expect::Absent => b"",
        }
    }
}

/// A hash's fields and values, as `HGETALL` gives them.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What applying feed entries met.
enum Applied {
    /// Every entry, in order.
    InOrder,
    /// An entry whose `seq` is not the next one (entries were missed), or a reset: the
    /// entries from it on were not applied.
    Gap,
}

/// A record read from Redis under `key`: valid, and filed under its own key (a record under
/// another's key would take that revocation's place).
fn read_record(key: &str, value: &[u8]) -> Result<Revocation, RevocationError> {
    let r = Revocation::from_json(value)?;
    if r.key() != key {
        return Err(RevocationError(format!(
            "filed under {} but it revokes {} (key {})",
            brief(key),
            r.what,
            brief(&r.key())
        )));
    }
    Ok(r)
}

fn list_differs(a: &RevocationList, b: &RevocationList) -> bool {
    a.len() != b.len() || b.iter().any(|r| a.get(&r.key()).is_none_or(|x| **x != **r))
}
