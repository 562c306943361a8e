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
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;

use super::file;
use super::list::{now_ms, RevocationList, Revocations};
use super::model::{Revocation, RevocationError};
use super::AdminFailure;
use crate::redis_store::follow::{rand_u8, FailureLines};
use crate::redis_store::{field_str, field_u64, script_error, Entries, RedisOptions, RedisStore};

/// The first pause before reconnecting, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long one feed read blocks: the list is known to be in sync at least this often.
const BLOCK: Duration = Duration::from_secs(1);
/// Audit entries kept.
const AUDIT_CAP: usize = 1000;

/// Revocations in the Redis store of `[store]`.
pub struct RedisRevocations {
    store: RedisStore,
    opts: RedisOptions,
    script: redis::Script,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("prefix", &self.opts.key_prefix)
            .finish_non_exhaustive()
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
         wiped; keeping them until revocations are written again"
    )]
    NoCounter(String, usize),
    #[error("{0} holds {1:?}, which is no change count: written outside nexus-edge")]
    BadCounter(String, String),
}

/// The file a Redis replica keeps its revocations in beside its binding snapshot.
pub fn snapshot_path(binding_snapshot: &std::path::Path) -> PathBuf {
    let mut p = binding_snapshot.as_os_str().to_owned();
    p.push(".revocations.json");
    PathBuf::from(p)
}

impl RedisRevocations {
    /// Revocations in the store `opts` names. Fails only on malformed endpoint or TLS
    /// settings; connecting happens on use.
    pub fn new(opts: RedisOptions) -> Result<Self, String> {
        Ok(Self {
            store: RedisStore::new(opts.clone())?,
            opts,
            script: redis::Script::new(include_str!("revoke.lua")),
        })
    }

    fn snapshot(&self) -> Option<PathBuf> {
        self.opts.snapshot_path.as_deref().map(snapshot_path)
    }

    /// The start's load: from Redis, or, when it cannot be read within the store's timeout,
    /// from this replica's revocation snapshot (marked synced as of the file's time). Says
    /// where the list came from; an error means neither could be read (the list stays empty).
    pub async fn initial_load(&self, into: &Revocations) -> Result<&'static str, String> {
        let from_redis = async {
            let mut con = self.store.connect().await?;
            self.full_load(&mut con, into, &mut HashSet::new()).await
        };
        let failed = match tokio::time::timeout(self.opts.timeout * 2, from_redis).await {
            Ok(Ok(_)) => return Ok("redis"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        let Some(path) = self.snapshot() else {
            return Err(format!(
                "{failed}; no snapshot_path, so no revocation snapshot"
            ));
        };
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || {
                let synced = std::fs::metadata(&path).and_then(|m| m.modified());
                file::read(&path).map(|list| (list, synced))
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        match read {
            Ok((list, synced)) => {
                into.install(RevocationList::new(list));
                if let Ok(at) = synced {
                    let ms = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    into.mark_synced(ms);
                }
                Ok("snapshot")
            }
            Err(e) => Err(format!("{failed}; snapshot: {e}")),
        }
    }

    /// Follows the feed until `stop`, reconnecting with backoff; the list in force stays
    /// as it is while Redis is away.
    pub async fn follow(&self, into: Revocations, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        let mut told = FailureLines::default();
        let mut refused = HashSet::new();
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let Err(e) = self.session(&into, &mut stop, &mut refused).await else {
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

    /// One connection's worth of following: a full load, then the feed.
    async fn session(
        &self,
        into: &Revocations,
        stop: &mut watch::Receiver<bool>,
        refused: &mut HashSet<String>,
    ) -> Result<(), FollowError> {
        let (mut con, mut blocking) = self.store.connect_follower().await?;
        let mut pos = self.full_load(&mut con, into, refused).await?;
        let mut reconciled = Instant::now();
        loop {
            if reconciled.elapsed() >= self.opts.reconcile_interval {
                pos = self.full_load(&mut con, into, refused).await?;
                reconciled = Instant::now();
            }
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(1000)
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
            if !entries.is_empty() {
                match self.apply(into, &entries, &mut pos, refused) {
                    Applied::Changed => self.write_snapshot(into),
                    Applied::Same => {}
                    Applied::Gap => {
                        pos = self.full_load(&mut con, into, refused).await?;
                        reconciled = Instant::now();
                        continue;
                    }
                }
            }
            // Everything written before the read was asked for has been applied.
            into.mark_synced(asked);
        }
    }

    /// Replaces the list with what Redis holds. A record that is refused keeps the
    /// revocation in force under its key, if any (an entry dropped would be a token accepted
    /// again).
    async fn full_load(
        &self,
        con: &mut MultiplexedConnection,
        into: &Revocations,
        refused: &mut HashSet<String>,
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
        let seq = match counter {
            None if !current.is_empty() => {
                return Err(FollowError::NoCounter(keys.revocation_seq(), current.len()))
            }
            None => 0,
            Some(raw) => std::str::from_utf8(&raw)
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| {
                    FollowError::BadCounter(
                        keys.revocation_seq(),
                        String::from_utf8_lossy(&raw).chars().take(40).collect(),
                    )
                })?,
        };
        let mut list = RevocationList::default();
        let mut now_refused = HashSet::new();
        for (key, value) in fields {
            let key = String::from_utf8_lossy(&key).into_owned();
            match read_record(&key, &value) {
                Ok(r) => list.put(r.into()),
                Err(e) => {
                    if let Some(kept) = current.get(&key) {
                        list.put(kept.clone());
                    }
                    if !refused.contains(&key) {
                        into.count_refused(1);
                        tracing::error!(key = %cut(&key), problem = %e,
                            "revocation record refused; the revocation in force under its key, if any, stays");
                    }
                    now_refused.insert(key);
                }
            }
        }
        *refused = now_refused;
        let changed = list_differs(&current, &list);
        into.install(list);
        into.mark_synced(asked);
        if changed {
            self.write_snapshot(into);
        }
        let stream_id = head
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
        Ok(Position { stream_id, seq })
    }

    /// Applies feed entries to the list in force; a gap in `seq` applies nothing more.
    fn apply(
        &self,
        into: &Revocations,
        entries: &Entries,
        pos: &mut Position,
        refused: &mut HashSet<String>,
    ) -> Applied {
        let mut list = (*into.load_full()).clone();
        let mut changed = false;
        let mut result = Applied::Same;
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
                            into.count_refused(1);
                            refused.insert(key.to_owned());
                            tracing::error!(key = %cut(key), problem = %e,
                                "revocation change refused; the revocation in force under its key, if any, stays");
                        }
                    }
                }
                other => {
                    into.count_refused(1);
                    tracing::error!(key = %cut(key), op = ?other.map(cut),
                        "revocation change with an unknown op skipped");
                }
            }
        }
        if changed {
            into.install(list);
            if matches!(result, Applied::Same) {
                result = Applied::Changed;
            }
        }
        result
    }

    /// Writes the revocation snapshot, when there is one to write, off the async threads.
    fn write_snapshot(&self, from: &Revocations) {
        let Some(path) = self.snapshot() else { return };
        let list = from.load_full();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file::write(&path, &list) {
                tracing::warn!(path = %path.display(), error = %e, "revocation snapshot not written");
            }
        });
    }

    /// Puts `r` in force on every replica: a new revocation, or one replacing the one under
    /// its key. Returns the change's number.
    pub async fn put(
        &self,
        r: &Revocation,
        actor: &str,
        reason: &str,
    ) -> Result<u64, AdminFailure> {
        self.change("put", &r.key(), &r.to_json(), actor, reason)
            .await
    }

    /// Takes the revocation under `key` out of force on every replica.
    pub async fn delete(&self, key: &str, actor: &str, reason: &str) -> Result<u64, AdminFailure> {
        self.change("delete", key, "", actor, reason).await
    }

    async fn change(
        &self,
        op: &str,
        key: &str,
        entry: &str,
        actor: &str,
        reason: &str,
    ) -> Result<u64, AdminFailure> {
        let mut con = self
            .store
            .admin_connection()
            .await
            .map_err(|e| AdminFailure::Unavailable(e.to_string()))?;
        let keys = self.store.keys();
        self.script
            .key(keys.revocations())
            .key(keys.revocation_seq())
            .key(keys.revocation_changes())
            .key(keys.revocation_audit())
            .arg(op)
            .arg(key)
            .arg(entry)
            .arg(actor)
            .arg(reason)
            .arg(self.opts.stream_maxlen)
            .arg(AUDIT_CAP)
            .invoke_async::<u64>(&mut con)
            .await
            .map_err(|e| match script_error(&e) {
                Some(("NOTFOUND", _)) => AdminFailure::NotFound(key.to_owned()),
                _ => AdminFailure::Unavailable(format!(
                    "redis at {}: {e}",
                    self.opts.endpoint.describe()
                )),
            })
    }

    /// Every record the hash holds, read or refused, by key.
    pub async fn list(
        &self,
    ) -> Result<Vec<(String, Result<Revocation, RevocationError>)>, AdminFailure> {
        let mut con = self
            .store
            .admin_connection()
            .await
            .map_err(|e| AdminFailure::Unavailable(e.to_string()))?;
        let fields: Fields = redis::cmd("HGETALL")
            .arg(self.store.keys().revocations())
            .query_async(&mut con)
            .await
            .map_err(|e| {
                AdminFailure::Unavailable(format!(
                    "redis at {}: {e}",
                    self.opts.endpoint.describe()
                ))
            })?;
        let mut out: Vec<_> = fields
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k).into_owned();
                let read = read_record(&key, &v);
                (key, read)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The audit entries, newest first, at most `n`.
    pub async fn audit(&self, n: usize) -> Result<Vec<String>, AdminFailure> {
        let mut con = self
            .store
            .admin_connection()
            .await
            .map_err(|e| AdminFailure::Unavailable(e.to_string()))?;
        redis::cmd("LRANGE")
            .arg(self.store.keys().revocation_audit())
            .arg(0)
            .arg(n.saturating_sub(1))
            .query_async(&mut con)
            .await
            .map_err(|e| {
                AdminFailure::Unavailable(format!(
                    "redis at {}: {e}",
                    self.opts.endpoint.describe()
                ))
            })
    }
}

/// A hash's fields and values, as `HGETALL` gives them.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// What applying feed entries did.
enum Applied {
    Changed,
    Same,
    /// An entry's `seq` is not the next one: entries were missed.
    Gap,
}

/// A record read from Redis under `key`: valid, and filed under its own key (a record under
/// another's key would take that revocation's place).
fn read_record(key: &str, value: &[u8]) -> Result<Revocation, RevocationError> {
    let r = Revocation::from_json(value)?;
    if r.key() != key {
        return Err(RevocationError(format!(
            "filed under {} but it revokes {} (key {})",
            cut(key),
            r.what,
            cut(&r.key())
        )));
    }
    Ok(r)
}

fn list_differs(a: &RevocationList, b: &RevocationList) -> bool {
    a.len() != b.len() || b.iter().any(|r| a.get(&r.key()).is_none_or(|x| **x != **r))
}

/// A key or value cut for a log line.
fn cut(s: &str) -> String {
    s.chars().take(100).collect()
}
