//! Fleet-wide confirmation: every replica heartbeats the revision it has applied into one
//! hash, so an admin can wait until every live replica has a change.
//!
//! Heartbeats are stamped with Redis's clock (`TIME`, in `heartbeat.lua`) and judged against
//! it: each host's own clock would make a replica whose clock runs behind look dead (and
//! `--wait` succeed without it), and keep one whose clock runs ahead live after it stopped.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::RedisStore;
use crate::admin::AdminError;

/// Stores a heartbeat stamped with Redis's clock.
static HEARTBEAT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("heartbeat.lua")));

/// A replica's heartbeat, as stored in `{prefix}:replicas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Heartbeat {
    applied_revision: u64,
    /// When it was written, by Redis's clock (Unix ms): stamped by the script that stores
    /// it, so never sent. (Replicas of earlier versions stamp their own clock.)
    #[serde(skip_serializing)]
    at_ms: u64,
    interval_ms: u64,
    version: String,
    /// False while the replica serves a table the store no longer holds (Redis lost its
    /// data): its revisions then belong to that table's history, not the store's. Missing
    /// from older replicas' heartbeats.
    #[serde(default = "following_by_default")]
    following: bool,
    /// Tenants whose latest record the replica refused, each with the revision of the binding
    /// it still serves for them (0: none). Missing from older replicas' heartbeats.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    refused: BTreeMap<String, u64>,
    /// It refused more tenants' records than `refused` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    refused_more: bool,
    /// A random token of the process that wrote it: another token under the same id, just
    /// before, is another process heartbeating as this replica. Missing from older replicas'.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    process: String,
    /// The replica found another process heartbeating under its id (see [`IdWatch`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    id_shared: bool,
    /// The replica keeps bindings of a history it knows rather than take an unconfirmed one
    /// (`LoadError::UnconfirmedHistory`): others with nothing to keep do not take it either.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    keeps: bool,
    /// The id of the history its table was loaded from, when it knows one: a restore is
    /// measured against it (revisions of two histories do not compare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<String>,
}

/// Watches for another process heartbeating under this replica's id (two replicas given one
/// `replica_id`, as a config copied between hosts would): the fleet would count them as one,
/// and `--wait` could confirm a change by the one that applied it while the other, cut off,
/// still serves the old binding.
#[derive(Debug)]
pub(crate) struct IdWatch {
    /// This process's token, written in each heartbeat.
    process: String,
    /// Sightings of another process's heartbeat under this id: how many, each within the
    /// live window of the one before, and when the last was (Redis's clock).
    sightings: std::sync::Mutex<(u32, u64)>,
    /// Whether the id is shared, as last judged (told in the next heartbeat).
    shared: std::sync::atomic::AtomicBool,
}

impl IdWatch {
    pub(crate) fn new() -> Self {
        let mut token = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token);
        Self {
            process: crate::snapshot::hex(&token),
            sightings: std::sync::Mutex::new((0, 0)),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Notes the heartbeat this one replaced, stored at `previous_at_ms` by `previous_process`
    /// (Redis's clock, as `now_ms`). The id is shared while another process's heartbeats
    /// keep turning up, the second of them and each next one within `window_ms` of the one
    /// before (two processes writing in turns replace each other's often, though not at
    /// every beat); a single one is this replica's predecessor after a restart under a fixed
    /// id. Returns whether the id is shared, and whether that changed.
    fn observe(&self, previous: Option<(&str, u64)>, now_ms: u64, window_ms: u64) -> (bool, bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let foreign = previous.is_some_and(|(process, at)| {
            !process.is_empty() && process != self.process && now_ms.saturating_sub(at) <= window_ms
        });
        let Ok(mut seen) = self.sightings.lock() else {
            return (self.shared.load(Relaxed), false);
        };
        let (count, last) = &mut *seen;
        let recent = *count > 0 && now_ms.saturating_sub(*last) <= window_ms;
        if foreign {
            *count = if recent { count.saturating_add(1) } else { 1 };
            *last = now_ms;
        } else if !recent {
            *count = 0;
        }
        let shared = *count >= 2;
        let was = self.shared.swap(shared, Relaxed);
        (shared, shared != was)
    }

    fn shared(&self) -> bool {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Most refusals a heartbeat tells (it is rewritten every interval; a fleet with more
/// refused records than this has a problem its logs and metrics already show).
pub(crate) const MAX_TOLD_REFUSALS: usize = 256;

fn following_by_default() -> bool {
    true
}

/// One replica as seen from Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStatus {
    /// Replica id.
    pub id: String,
    /// Revision it has applied.
    pub applied_revision: u64,
    /// Milliseconds since its last heartbeat, by Redis's clock.
    pub last_seen_ms: u64,
    /// Heard from within the live window (10 heartbeats, at least 5 s), and not stamped
    /// further ahead of Redis's clock than that.
    pub live: bool,
    /// How far ahead of Redis's clock its heartbeat is stamped, when further than the live
    /// window (0 otherwise): its age cannot be told, so it is not live (see
    /// [`heard_age_ms`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub stamped_ahead_ms: u64,
    /// Store revision minus applied revision.
    pub lag: u64,
    /// How often it heartbeats, in milliseconds (its `heartbeat_interval`).
    pub interval_ms: u64,
    /// It applied a revision above the store's counter: it still serves another history
    /// (Redis lost its data, or a failover lost the last writes) and has not loaded this one.
    /// Its revisions say nothing about this history's, so it has applied none of them yet.
    pub other_history: bool,
    /// Tenants whose latest record it refused, with the revision of the binding it still
    /// serves for each (0: none).
    pub refused: BTreeMap<String, u64>,
    /// It refused more records than `refused` lists: for a tenant not listed, nobody can
    /// tell from here whether it serves the tenant's latest record.
    pub refused_more: bool,
    /// Another process heartbeats under the same id: what this entry says is one of theirs
    /// at a time, so nobody can tell from here what the other serves.
    pub id_shared: bool,
    /// It keeps bindings of another history rather than take Redis's unconfirmed one.
    pub keeps: bool,
    /// The id of the history its table was loaded from (`None`: it does not know one).
    pub history: Option<String>,
    /// When its last heartbeat was written, in Unix ms by Redis's clock (by its host's when
    /// Redis refused it the clock): a heartbeat from before a change says nothing of it.
    #[serde(skip)]
    pub heard_at_ms: u64,
}

impl ReplicaStatus {
    /// Whether it serves `revision` of the store's current history.
    pub fn has_applied(&self, revision: u64) -> bool {
        self.applied_revision >= revision && !self.other_history
    }

    /// When it refused `tenant`'s latest record and so serves another binding than the one
    /// written at `revision`: `Some(Some(r))` with the binding revision it still serves (0:
    /// none), `Some(None)` when its heartbeat could not list every refusal and does not list
    /// this tenant. The binding it serves may be *newer* than `revision`: one written by hand
    /// ahead of the counter, or kept when the counter was set back, makes the write look
    /// older to the replicas, which refuse it; that change is not applied either.
    pub fn refused_instead(&self, tenant: &str, revision: u64) -> Option<Option<u64>> {
        match self.refused.get(tenant) {
            Some(r) => (*r != revision).then_some(Some(*r)),
            None => self.refused_more.then_some(None),
        }
    }
}

/// Result of waiting for a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitOutcome {
    /// Live replicas that have applied the revision.
    pub applied: usize,
    /// Live replicas.
    pub live: usize,
    /// The revision waited for.
    pub revision: u64,
    /// Replicas still behind (or that went silent) when the wait ended.
    pub behind: Vec<String>,
    /// Replicas that refused the tenant's record (each with the revision it still serves):
    /// they will not apply it until the record is put right, so the wait ends at once.
    pub refused: Vec<String>,
    /// Replicas heard from within the last hour but silent for longer than the live window
    /// since before the wait began (each with how long): not counted, and named so that
    /// one cut off from Redis while still serving its last table is not passed over unseen.
    pub silent: Vec<String>,
}

/// The shortest wait that can confirm a change on every live replica of `replicas`: the
/// slowest one's heartbeat interval (60 s at most, the longest a replica may be given) and
/// a second for its write, as only heartbeats written during a wait count. `None` when none
/// is live.
pub fn wait_floor(replicas: &[ReplicaStatus]) -> Option<Duration> {
    replicas
        .iter()
        .filter(|r| r.live)
        .map(|r| Duration::from_millis(r.interval_ms.min(60_000)) + Duration::from_secs(1))
        .max()
}

/// A replica silent for longer than this is no longer counted: 10 heartbeats and at least
/// 5 s, so a replica that is briefly stalled (or stopped mid-migration) still holds up
/// `--wait` and is named in its timeout instead of being silently skipped. An interval past
/// the longest a replica may be configured with (60 s) was not written by one: it counts as
/// that longest, so a heartbeat written by hand cannot stay live for ever.
fn live_window_ms(interval_ms: u64) -> u64 {
    (10 * interval_ms.min(60_000)).max(5_000)
}

/// How long ago, by Redis's clock `now_ms`, a heartbeat of `interval_ms` stamped `at_ms` was
/// written: `Err` with how far ahead it is stamped when that is further than the live window.
/// Redis stamps heartbeats with its own clock, so one from the future was written by hand, by
/// a replica stamping its host's clock (Redis refused it `TIME`), or before a failover to a
/// node whose clock runs behind; its age cannot be told, and read as 0 it stayed live (and
/// held up `--wait`) until the clock caught up, for ever when stamped far enough ahead.
/// Ahead within the window it is as good as new: the replicas' own rewrite it each interval.
fn heard_age_ms(now_ms: u64, at_ms: u64, interval_ms: u64) -> Result<u64, u64> {
    let ahead = at_ms.saturating_sub(now_ms);
    if ahead > live_window_ms(interval_ms) {
        Err(ahead)
    } else {
        Ok(now_ms.saturating_sub(at_ms))
    }
}

/// Whether a heartbeat stamped `at_ms` is live at `now_ms` (see [`heard_age_ms`]).
fn is_live(now_ms: u64, at_ms: u64, interval_ms: u64) -> bool {
    heard_age_ms(now_ms, at_ms, interval_ms).is_ok_and(|age| age <= live_window_ms(interval_ms))
}

/// Heartbeats stamped this long before, or after, Redis's clock are taken out of the fleet.
const PRUNED_AFTER_MS: u64 = 3_600_000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(super) async fn heartbeat(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    applied: u64,
    following: bool,
) -> redis::RedisResult<()> {
    let (refused, refused_more) = store.refusals();
    let hb = Heartbeat {
        applied_revision: applied,
        at_ms: 0,
        interval_ms: store.opts().heartbeat_interval.as_millis() as u64,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        following,
        refused,
        refused_more,
        process: store.id_watch().process.clone(),
        id_shared: store.id_watch().shared(),
        keeps: !following && store.keeps_other_history(),
        history: store
            .position()
            .and_then(|p| p.history)
            .map(|h| h.to_string()),
    };
    // Without `at_ms`, which the script puts first.
    let json = serde_json::to_string(&hb).unwrap_or_default();
    let stamped = HEARTBEAT
        .key(store.keys().replicas())
        .arg(&store.opts().replica_id)
        .arg(&json)
        .invoke_async::<(u64, Option<Vec<u8>>)>(con)
        .await;
    match stamped {
        Ok((now_ms, previous)) => {
            writes_taken();
            let previous = previous.and_then(|p| serde_json::from_slice::<Heartbeat>(&p).ok());
            let (shared, news) = store.id_watch().observe(
                previous.as_ref().map(|p| (p.process.as_str(), p.at_ms)),
                now_ms,
                live_window_ms(hb.interval_ms),
            );
            if news && shared {
                tracing::warn!(replica_id = %store.opts().replica_id,
                    "another process heartbeats under this replica's id: the fleet counts both as one, and --wait may confirm a change one of them has not applied; give each replica its own replica_id (the default, hostname-pid, is)");
            } else if news {
                tracing::info!(replica_id = %store.opts().replica_id,
                    "no other process heartbeats under this replica's id any more");
            }
            Ok(())
        }
        // The connection is gone: the session ends, as for any command.
        Err(e) if e.is_io_error() || e.is_connection_dropped() => Err(e),
        // A demoted primary: the session ends, so that the replica finds the node that takes
        // writes (see below).
        Err(e) if e.code() == Some("READONLY") => Err(e),
        // Redis takes no write for now: the plain write below would be refused as well.
        Err(e) if writes_refused(&e) => Ok(()),
        // The script refused (an ACL user that may not run scripts, or may not read TIME in
        // one; scripting renamed away): Redis's clock read apart, else this host's, then a
        // plain write, which is all a heartbeat needed before. Never a reason to stop
        // following the feed.
        Err(e) => {
            let now = match redis_now_ms(con).await {
                Ok(now) => now,
                Err(t) if t.is_io_error() || t.is_connection_dropped() => return Err(t),
                Err(t) => {
                    warn_once(&format!(
                        "heartbeats are stamped with this host's clock: Redis refused both the \
                         heartbeat script ({e}) and TIME ({t}); allow EVALSHA and TIME to the \
                         replica's user, or --wait judges liveness by host clocks"
                    ));
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                }
            };
            let json = format!("{{\"at_ms\":{now},{}", json.get(1..).unwrap_or_default());
            let written: redis::RedisResult<()> = con
                .hset(store.keys().replicas(), &store.opts().replica_id, json)
                .await;
            match written {
                Ok(()) => {
                    writes_taken();
                    Ok(())
                }
                // Refused by the user's rights or the key's type: the replica goes on
                // following the feed, unseen by `--wait` and `replicas`. Ending the session
                // for it reconnected several times a second, for ever. READONLY (a demoted
                // primary) ends the session as before: the heartbeat is how a session learns
                // its node no longer takes writes, and another node does. OOM and MISCONF
                // do not (see `writes_refused`).
                // (Redis's WRONGTYPE reaches redis-rs as an error of that code, not as a
                // `TypeError`, which is its own for replies it cannot convert.)
                Err(w)
                    if w.kind() == redis::ErrorKind::TypeError
                        || matches!(w.code(), Some("NOPERM" | "WRONGTYPE")) =>
                {
                    static TOLD: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if first_time(&TOLD) {
                        tracing::error!(key = %store.keys().replicas(), error = %w,
                            "heartbeats cannot be written (the replica's user may not, or the \
                             key holds another type): --wait and `nexus-edge replicas` do not \
                             see this replica, which goes on following the change feed; allow \
                             HSET (and EVALSHA, TIME) on the key to the replica's user");
                    }
                    Ok(())
                }
                // The primary takes no writes for now (OOM: full at `maxmemory` under
                // `noeviction`; MISCONF: it cannot persist) but still answers reads, and no
                // other node would do better: the replica goes on following the feed,
                // unseen by `--wait` until a heartbeat is written again. Ending the session
                // for it stopped every replica applying changes it could read, and one
                // without a snapshot could not start.
                Err(w) if writes_refused(&w) => Ok(()),
                other => other,
            }
        }
    }
}

/// Set while Redis refuses the heartbeat's write for want of memory or persistence: said
/// once when that starts, and again after a heartbeat has been written since.
static WRITES_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `e` is Redis refusing writes for now (OOM: full at `maxmemory` under
/// `noeviction`; MISCONF: it cannot persist), said when that starts. It still answers reads,
/// and no other node would do better: the replica goes on following the feed, unseen by
/// `--wait` until a heartbeat is written again. Ending the session for it stopped every
/// replica applying changes it could read, and one without a snapshot could not start.
fn writes_refused(e: &redis::RedisError) -> bool {
    if !matches!(e.code(), Some("OOM" | "MISCONF")) {
        return false;
    }
    if first_time(&WRITES_REFUSED) {
        tracing::error!(error = %e,
            "Redis refuses writes (the heartbeat's): this replica goes on following the change \
             feed, but --wait and `nexus-edge replicas` do not see it, and admin writes fail, \
             until Redis takes writes again (free memory or raise maxmemory; fix persistence)");
    }
    true
}

/// A heartbeat was written: a later refusal of writes is said again.
fn writes_taken() {
    if WRITES_REFUSED.swap(false, std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("Redis takes the heartbeat's write again");
    }
}

/// Takes this replica's heartbeat out of the fleet as it shuts down, so that `--wait` does
/// not name it silent for the next hour, nor `replicas` list it. Only its own: under an id
/// another process shares, that one's heartbeat stays. Best effort, within the store's
/// command timeout: a replica that dies unannounced ages out as before.
pub(super) async fn leave(store: &RedisStore, con: &mut MultiplexedConnection) {
    let key = store.keys().replicas();
    let id = &store.opts().replica_id;
    let leave = async {
        let beat: Option<String> = con.hget(&key, id).await.ok()?;
        let hb = serde_json::from_str::<Heartbeat>(&beat?).ok()?;
        if hb.process == store.id_watch().process {
            let _: redis::RedisResult<()> = con.hdel(&key, id).await;
        }
        Some(())
    };
    let _ = tokio::time::timeout(store.opts().timeout, leave).await;
}

/// Whether this is the first time `told` is asked (then it is set): a condition that holds
/// (a refusal by Redis, its configuration) is logged once, not at every heartbeat or
/// reconnect.
pub(super) fn first_time(told: &std::sync::atomic::AtomicBool) -> bool {
    !told.swap(true, std::sync::atomic::Ordering::Relaxed)
}

/// Logs `message` the first time only: a refusal that holds would repeat every heartbeat.
fn warn_once(message: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if first_time(&WARNED) {
        tracing::warn!("{message}");
    }
}

/// Redis's clock (`TIME`), in Unix ms: the clock heartbeats are stamped and judged by.
pub(super) async fn redis_now_ms(con: &mut MultiplexedConnection) -> redis::RedisResult<u64> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// The highest revision a live replica other than this one reports keeping rather than take
/// an unconfirmed history (`keeps`; 0 with none). A replica with nothing of its own to keep
/// must not join that history meanwhile: the fleet would route each tenant by which replica
/// a request reaches. Replicas that wait only because others keep (they keep nothing) do not
/// count, or they would keep each other out once the keepers are gone. Heartbeats that
/// cannot be read tell nothing (0).
pub(super) async fn kept_by_others(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<u64> {
    // Names as bytes: one an outside writer made of bytes that are no UTF-8 is no replica's,
    // and must not make every heartbeat unreadable.
    type Read = (Vec<(Vec<u8>, Vec<u8>)>, (u64, u64));
    let read: redis::RedisResult<Read> = redis::pipe()
        .hgetall(store.keys().replicas())
        .cmd("TIME")
        .query_async(con)
        .await;
    let (beats, (secs, micros)) = match read {
        Ok(read) => read,
        Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e),
        // Another type, or TIME refused: nothing to go by.
        Err(_) => return Ok(0),
    };
    let now = secs * 1000 + micros / 1000;
    Ok(beats
        .iter()
        .filter(|(id, _)| *id != store.opts().replica_id.as_bytes())
        .filter_map(|(_, b)| serde_json::from_slice::<Heartbeat>(b).ok())
        .filter(|hb| hb.keeps && is_live(now, hb.at_ms, hb.interval_ms))
        .map(|hb| hb.applied_revision)
        .max()
        .unwrap_or(0))
}

/// What the replicas' heartbeats say they serve: the highest revision any reports (0 with
/// none), and each history they name with the highest revision reported of it.
#[derive(Debug, Default)]
pub(super) struct FleetServes {
    /// What a Redis that lost its data is still served as. With no revision counter, any
    /// such revision means Redis lost its data under a fleet that still serves it
    /// (`write.lua` reads them the same way).
    pub(super) revision: u64,
    /// A restore from a snapshot is measured against its own history's replicas: revisions
    /// of two histories do not compare.
    pub(super) by_history: BTreeMap<String, u64>,
}

/// Reads what the replicas' heartbeats say they serve, in one read. A key of another type
/// tells nothing (a write refuses that key by name).
pub(super) async fn fleet_serves(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<FleetServes> {
    let beats: Vec<Vec<u8>> = match con.hvals(store.keys().replicas()).await {
        Ok(beats) => beats,
        Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e),
        Err(_) => return Ok(FleetServes::default()),
    };
    let mut out = FleetServes::default();
    for hb in beats
        .iter()
        .filter_map(|b| serde_json::from_slice::<Heartbeat>(b).ok())
    {
        out.revision = out.revision.max(hb.applied_revision);
        if let (Some(h), 1..) = (hb.history, hb.applied_revision) {
            let max = out.by_history.entry(h).or_default();
            *max = (*max).max(hb.applied_revision);
        }
    }
    Ok(out)
}

/// The highest revision any replica's heartbeat reports serving (see [`FleetServes`]).
pub(super) async fn served_revision(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<u64> {
    Ok(fleet_serves(store, con).await?.revision)
}

/// What `tenant confirm-history` found ([`RedisStore::confirm_history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The history `id` was unconfirmed and is confirmed now; Redis is at `revision`.
    Confirmed {
        /// The history's id.
        id: String,
        /// Redis's revision counter (`None`: none, or not a number).
        revision: Option<u64>,
    },
    /// The history `id` needed no confirmation: `began` says how it began (`new-history`,
    /// `restore`, `before-ids`, or `write` confirmed earlier).
    NotNeeded {
        /// The history's id.
        id: String,
        /// How it began.
        began: String,
    },
    /// Redis names no history: no revision counter, or none written since ids were kept.
    NoHistory,
}

impl RedisStore {
    /// The store's revision counter (`None`: there is none, a new or wiped keyspace).
    pub async fn counter(&self) -> Result<Option<u64>, AdminError> {
        let mut con = self.admin_connection().await?;
        self.read_counter(&mut con).await
    }

    /// Confirms the history Redis holds when a write began it while no replica was heard
    /// serving (`write.lua` marks it `unconfirmed`): replicas serving another history's
    /// bindings then load Redis's table, and unbind every tenant it does not hold. With
    /// `expected`, only that history (the id a refusing replica logs): one begun since, by
    /// another wipe and write, is left unconfirmed and the error says which Redis holds.
    ///
    /// Who confirmed it, when and why, are kept with the history (`confirmed_by`,
    /// `confirmed_at`, `confirmed_reason`): confirming unbinds what the replicas kept.
    pub async fn confirm_history(
        &self,
        expected: Option<&str>,
        actor: &crate::admin::Actor,
    ) -> Result<Confirmation, AdminError> {
        let mut con = self.admin_connection().await?;
        let script = redis::Script::new(include_str!("confirm.lua"));
        let answer: redis::RedisResult<(String, String, u64, String)> = script
            .key(self.keys().history())
            .key(self.keys().revision())
            .arg(expected.unwrap_or(""))
            .arg(&actor.name)
            .arg(actor.reason.as_deref().unwrap_or(""))
            .invoke_async(&mut con)
            .await;
        let (id, began, removed, counter) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                if let Some(("OTHER", id)) = super::script_error(&e) {
                    let holds = match id.trim() {
                        "" => "names no history".to_owned(),
                        id => format!("holds history {id}"),
                    };
                    return Err(AdminError::Unavailable(format!(
                        "Redis {holds}, not {}: nothing confirmed (Redis lost its data and was \
                         written again since?); look at what it holds, and at the replicas' \
                         logs, before confirming it",
                        expected.unwrap_or_default()
                    )));
                }
                return Err(super::wrong_type(&e, "so nothing was confirmed")
                    .unwrap_or_else(|| super::unavailable(e)));
            }
        };
        let revision = self
            .keys()
            .counter((!counter.is_empty()).then(|| counter.into_bytes()))
            .ok()
            .flatten();
        Ok(match (id.is_empty(), removed) {
            (_, 1..) => Confirmation::Confirmed {
                id: if id.is_empty() {
                    "(one whose id was deleted)".to_owned()
                } else {
                    id
                },
                revision,
            },
            (true, 0) => Confirmation::NoHistory,
            (false, 0) => Confirmation::NotNeeded { id, began },
        })
    }

    /// The id of the history Redis holds (`None`: it names none, a new or wiped keyspace, or
    /// one written before ids were kept): what an export names, and an import compares.
    pub async fn history_id(&self) -> Result<Option<String>, AdminError> {
        Ok(self.stored_history().await?.0)
    }

    /// The history Redis holds, when a write began it while no replica was heard serving and
    /// no admin has confirmed it since (`None` otherwise): what `replicas` warns of.
    pub async fn unconfirmed_history(&self) -> Result<Option<String>, AdminError> {
        // A mark whose id was deleted by hand still waits: said without an id.
        let (id, unconfirmed) = self.stored_history().await?;
        Ok(unconfirmed.then(|| id.unwrap_or_default()))
    }

    /// The history's id and whether it is marked unconfirmed, in one read.
    async fn stored_history(&self) -> Result<(Option<String>, bool), AdminError> {
        let mut con = self.admin_connection().await?;
        let key = self.keys().history();
        let read: redis::RedisResult<(Option<Vec<u8>>, bool)> = redis::pipe()
            .hget(&key, "id")
            .hexists(&key, "unconfirmed")
            .query_async(&mut con)
            .await;
        match read {
            Ok((id, unconfirmed)) => Ok((id.map(super::lossy), unconfirmed)),
            Err(e) => Err(super::read_failure(&mut con, &key, e, "hash").await),
        }
    }

    /// Whether any replica's heartbeat is kept under this key prefix (read only: nothing
    /// pruned). None at all: no router follows this prefix, or none has within the hour
    /// after which dead heartbeats are pruned.
    pub async fn any_heartbeat(&self) -> Result<bool, AdminError> {
        let mut con = self.admin_connection().await?;
        let kept: u64 = con
            .hlen(self.keys().replicas())
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        Ok(kept > 0)
    }

    /// Every replica that ever heartbeated (dead ones older than an hour are pruned).
    pub async fn replicas(&self) -> Result<Vec<ReplicaStatus>, AdminError> {
        let mut con = self.admin_connection().await?;
        // In this order (see `other_history` below), with Redis's clock, which stamped them.
        // Names and heartbeats as bytes: a field an outside writer made of bytes that are no
        // UTF-8 is skipped, not an error that hides every replica (`--wait` saw none).
        type Read = (Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>, (u64, u64));
        let (all, counter, (secs, micros)): Read = redis::pipe()
            .hgetall(self.keys().replicas())
            .get(self.keys().revision())
            .cmd("TIME")
            .query_async(&mut con)
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let counter = self
            .keys()
            .counter(counter)
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let now = secs * 1000 + micros / 1000;
        let mut out = Vec::new();
        for (raw_id, json) in all {
            let Ok(hb) = serde_json::from_slice::<Heartbeat>(&json) else {
                continue;
            };
            if hb.at_ms.abs_diff(now) > PRUNED_AFTER_MS {
                let _: Result<(), _> = con.hdel(self.keys().replicas(), &raw_id).await;
                continue;
            }
            let Ok(id) = String::from_utf8(raw_id) else {
                continue;
            };
            let heard = heard_age_ms(now, hb.at_ms, hb.interval_ms);
            out.push(ReplicaStatus {
                id,
                applied_revision: hb.applied_revision,
                last_seen_ms: heard.unwrap_or(0),
                live: heard.is_ok_and(|age| age <= live_window_ms(hb.interval_ms)),
                stamped_ahead_ms: heard.err().unwrap_or(0),
                lag: counter.unwrap_or(0).saturating_sub(hb.applied_revision),
                interval_ms: hb.interval_ms,
                // Said by the replica; or seen: the heartbeats were read before the counter,
                // which only grows, so within one history no replica is ahead of it.
                other_history: !hb.following || counter.is_some_and(|c| hb.applied_revision > c),
                refused: hb.refused,
                refused_more: hb.refused_more,
                id_shared: hb.id_shared,
                keeps: hb.keeps,
                history: hb.history,
                heard_at_ms: hb.at_ms,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Redis's clock now, in Unix ms: taken before a write whose application `--wait` will
    /// confirm (see [`Self::wait_for_revision`]).
    pub async fn clock_ms(&self) -> Result<u64, AdminError> {
        let mut con = self.admin_connection().await?;
        redis_now_ms(&mut con)
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))
    }

    /// Waits until every live replica has applied `revision`, a change of `tenant`'s, or
    /// `timeout` passes. A replica that goes silent during the wait stops being live and is
    /// reported in `behind`. One that refused the tenant's record serves an older binding
    /// whatever revision it reports: it is reported in `refused`, and the wait ends as soon
    /// as no other replica is behind.
    ///
    /// `written_after_ms` ([`Self::clock_ms`] before the write): only a heartbeat written
    /// since counts. Revisions are compared by number, and numbers can go back (a counter set
    /// back, a failover that lost writes, an entry written by hand): a replica stopped since
    /// it heartbeated a higher number from before the change would confirm it otherwise.
    pub async fn wait_for_revision(
        &self,
        revision: u64,
        tenant: &str,
        timeout: Duration,
        written_after_ms: Option<u64>,
    ) -> Result<WaitOutcome, WaitOutcome> {
        // A deadline past what an Instant holds is no deadline at all.
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let mut seen_live: Vec<String> = Vec::new();
        loop {
            let replicas = self.replicas().await.unwrap_or_default();
            for r in replicas.iter().filter(|r| r.live) {
                if !seen_live.contains(&r.id) {
                    seen_live.push(r.id.clone());
                }
            }
            let live: Vec<&ReplicaStatus> = replicas.iter().filter(|r| r.live).collect();
            // A replica whose id another process shares is one of two, and which one wrote
            // its heartbeat is anyone's guess: it confirms nothing, and ends the wait as a
            // refusal does.
            let has_applied = |r: &ReplicaStatus| {
                r.has_applied(revision) && written_after_ms.is_none_or(|t| r.heard_at_ms >= t)
            };
            let serves = |r: &ReplicaStatus| {
                has_applied(r) && r.refused_instead(tenant, revision).is_none() && !r.id_shared
            };
            let applied = live.iter().filter(|r| serves(r)).count();
            let refused: Vec<String> = live
                .iter()
                .filter(|r| has_applied(r))
                .filter_map(|r| {
                    if r.id_shared {
                        return Some(format!(
                            "{} (another process heartbeats under this id: what each serves \
                             cannot be told apart; give each replica its own replica_id)",
                            r.id
                        ));
                    }
                    Some(match r.refused_instead(tenant, revision)? {
                        Some(0) => format!(
                            "{} (refused {tenant}'s record; still serves no binding for it)",
                            r.id
                        ),
                        Some(at) => format!(
                            "{} (refused {tenant}'s record; still serves its revision {at})",
                            r.id
                        ),
                        None => format!(
                            "{} (refused more records than its heartbeat lists; see its log)",
                            r.id
                        ),
                    })
                })
                .collect();
            let mut behind: Vec<String> = live
                .iter()
                .filter(|r| !has_applied(r))
                .map(|r| {
                    if r.other_history {
                        format!("{} (still on another history)", r.id)
                    } else if r.has_applied(revision) {
                        // Its revision is past the change's, but was heard before it.
                        format!("{} (not heard from since the change)", r.id)
                    } else {
                        r.id.clone()
                    }
                })
                .collect();
            // Replicas that were live when we started and went silent are behind too.
            for id in &seen_live {
                if !live.iter().any(|r| &r.id == id) && !behind.contains(id) {
                    // Not counted live any more, and not passed over: it may be down, or cut
                    // off from Redis and still serving the binding the change replaced.
                    behind.push(format!(
                        "{id} (stopped heartbeating during the wait: down, or cut off from \
                         Redis and serving its last table)"
                    ));
                }
            }
            let silent = replicas
                .iter()
                .filter(|r| !r.live && !seen_live.contains(&r.id))
                .map(|r| match r.stamped_ahead_ms {
                    0 => format!("{} (silent for {} s)", r.id, r.last_seen_ms / 1000),
                    ahead => format!(
                        "{} (heartbeat stamped {} s ahead of Redis's clock: its age cannot be told)",
                        r.id,
                        ahead / 1000
                    ),
                })
                .collect();
            let outcome = WaitOutcome {
                applied,
                live: live.len(),
                revision,
                behind,
                refused,
                silent,
            };
            if outcome.behind.is_empty() && outcome.live > 0 {
                return if outcome.refused.is_empty() {
                    Ok(outcome)
                } else {
                    Err(outcome)
                };
            }
            if Instant::now() >= deadline {
                return Err(outcome);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The time to stamp an audit entry and a record's `updated_at` with: Redis's clock, one for
/// every admin host, so that entries written from hosts whose clocks disagree still read in
/// the order they were made; this host's when Redis refuses `TIME` (an ACL).
pub(super) async fn audit_now(con: &mut MultiplexedConnection) -> time::OffsetDateTime {
    let from_redis = redis_now_ms(con).await.ok().and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    });
    from_redis.unwrap_or_else(time::OffsetDateTime::now_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(refused: &[(&str, u64)], refused_more: bool) -> ReplicaStatus {
        ReplicaStatus {
            id: "r1".to_owned(),
            applied_revision: 10,
            last_seen_ms: 0,
            live: true,
            stamped_ahead_ms: 0,
            lag: 0,
            interval_ms: 1000,
            other_history: false,
            heard_at_ms: 0,
            refused: refused.iter().map(|(t, r)| ((*t).to_owned(), *r)).collect(),
            refused_more,
            id_shared: false,
            keeps: false,
            history: None,
        }
    }

    #[test]
    fn a_heartbeat_stamped_ahead_of_redis_s_clock_further_than_the_live_window_is_not_live() {
        let now = 1_800_000_000_000;
        // Behind: its age, live within the window (10 intervals, at least 5 s).
        assert_eq!(heard_age_ms(now, now - 4_000, 100), Ok(4_000));
        assert!(is_live(now, now - 4_000, 100));
        assert!(!is_live(now, now - 5_001, 100));
        assert!(is_live(now, now - 19_000, 2_000));
        // Ahead within the window (clocks a little apart, a failover): as good as new.
        assert_eq!(heard_age_ms(now, now + 3_000, 100), Ok(0));
        assert!(is_live(now, now + 3_000, 100));
        // Further ahead: no age, not live, however far (it was live for ever).
        assert_eq!(heard_age_ms(now, now + 5_001, 100), Err(5_001));
        assert!(!is_live(now, now + 5_001, 100));
        assert!(!is_live(now, u64::MAX, 100));
        assert!(!is_live(0, u64::MAX, u64::MAX));
        // An interval no replica can be configured with counts as the longest one can.
        assert_eq!(live_window_ms(u64::MAX), 600_000);
        assert!(!is_live(now, now - 600_001, u64::MAX));
    }

    #[test]
    fn a_shared_id_is_another_process_s_heartbeats_turning_up_within_the_live_window() {
        let w = IdWatch::new();
        let own = w.process.clone();
        let window = 5_000;
        // A predecessor's heartbeat (a restart under a fixed id): once, then only our own.
        assert_eq!(
            w.observe(Some(("0123", 9_000)), 10_000, window),
            (false, false)
        );
        assert_eq!(
            w.observe(Some((&own, 10_000)), 10_100, window),
            (false, false)
        );
        assert_eq!(
            w.observe(Some((&own, 10_100)), 16_000, window),
            (false, false)
        );
        // Another process, turning up again within the window (our own in between do not
        // clear it): shared from the second sighting, said once.
        assert_eq!(
            w.observe(Some(("0123", 16_050)), 16_100, window),
            (false, false)
        );
        assert_eq!(
            w.observe(Some((&own, 16_100)), 16_200, window),
            (false, false)
        );
        assert_eq!(
            w.observe(Some(("0123", 16_250)), 16_300, window),
            (true, true)
        );
        assert!(w.shared());
        assert_eq!(
            w.observe(Some((&own, 16_300)), 16_400, window),
            (true, false)
        );
        assert_eq!(
            w.observe(Some(("0123", 16_450)), 16_500, window),
            (true, false)
        );
        // A whole window without it: no longer shared, said once.
        assert_eq!(
            w.observe(Some((&own, 21_000)), 21_100, window),
            (true, false)
        );
        assert_eq!(
            w.observe(Some((&own, 21_500)), 21_600, window),
            (false, true)
        );
        // An old heartbeat, or one without a token, is no sighting.
        assert_eq!(
            w.observe(Some(("0123", 1_000)), 21_700, window),
            (false, false)
        );
        assert_eq!(
            w.observe(Some(("", 21_700)), 21_800, window),
            (false, false)
        );
        assert_eq!(w.observe(None, 21_900, window), (false, false));
        assert!(!w.shared());
    }

    #[test]
    fn a_refusal_counts_against_any_change_of_that_tenant_but_the_one_served() {
        let r = replica(&[("acme", 4), ("globex", 0)], false);
        assert_eq!(r.refused_instead("acme", 7), Some(Some(4)));
        assert_eq!(r.refused_instead("acme", 4), None, "it serves revision 4");
        // It keeps a binding whose revision is ahead of the write's (a record written by hand
        // ahead of the counter): the write is refused as not newer, and not applied.
        assert_eq!(r.refused_instead("acme", 3), Some(Some(4)));
        assert_eq!(r.refused_instead("globex", 7), Some(Some(0)));
        assert_eq!(r.refused_instead("initech", 7), None);
        // A heartbeat that could not list every refusal vouches for no tenant it leaves out.
        let r = replica(&[("acme", 4)], true);
        assert_eq!(r.refused_instead("initech", 7), Some(None));
        assert_eq!(r.refused_instead("acme", 7), Some(Some(4)));
    }
}
