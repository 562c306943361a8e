//! Fleet-wide confirmation: every replica heartbeats the revision it has applied into one
//! hash, so an admin can wait until every live replica has a change.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use super::RedisStore;
use crate::admin::AdminError;
use crate::source::now_unix_ms;

/// A replica's heartbeat, as stored in `{prefix}:replicas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Heartbeat {
    applied_revision: u64,
    at_ms: u64,
    interval_ms: u64,
    version: String,
    /// False while the replica serves a table the store no longer holds (Redis lost its
    /// data): its revisions then belong to that table's history, not the store's. Missing
    /// from older replicas' heartbeats.
    #[serde(default = "following_by_default")]
    following: bool,
}

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
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Heard from within the live window (10 heartbeats, at least 5 s).
    pub live: bool,
    /// Store revision minus applied revision.
    pub lag: u64,
    /// It applied a revision above the store's counter: it still serves another history
    /// (Redis lost its data, or a failover lost the last writes) and has not loaded this one.
    /// Its revisions say nothing about this history's, so it has applied none of them yet.
    pub other_history: bool,
}

impl ReplicaStatus {
    /// Whether it serves `revision` of the store's current history.
    pub fn has_applied(&self, revision: u64) -> bool {
        self.applied_revision >= revision && !self.other_history
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
}

/// A replica silent for longer than this is no longer counted: 10 heartbeats and at least
/// 5 s, so a replica that is briefly stalled (or stopped mid-migration) still holds up
/// `--wait` and is named in its timeout instead of being silently skipped.
fn live_window_ms(interval_ms: u64) -> u64 {
    (10 * interval_ms).max(5_000)
}

pub(super) async fn heartbeat(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
    applied: u64,
    following: bool,
) -> redis::RedisResult<()> {
    let hb = Heartbeat {
        applied_revision: applied,
        at_ms: now_unix_ms(),
        interval_ms: store.opts().heartbeat_interval.as_millis() as u64,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        following,
    };
    let json = serde_json::to_string(&hb).unwrap_or_default();
    let _: () = con
        .hset(store.keys().replicas(), &store.opts().replica_id, json)
        .await?;
    Ok(())
}

/// The highest revision any replica's heartbeat reports serving (0 with none): what a
/// Redis that lost its data is still served as.
pub(super) async fn served_revision(
    store: &RedisStore,
    con: &mut MultiplexedConnection,
) -> redis::RedisResult<u64> {
    let beats: Vec<Vec<u8>> = con.hvals(store.keys().replicas()).await?;
    Ok(beats
        .iter()
        .filter_map(|b| serde_json::from_slice::<Heartbeat>(b).ok())
        .map(|hb| hb.applied_revision)
        .max()
        .unwrap_or(0))
}

impl RedisStore {
    /// Every replica that ever heartbeated (dead ones older than an hour are pruned).
    pub async fn replicas(&self) -> Result<Vec<ReplicaStatus>, AdminError> {
        let mut con = self.admin_connection().await?;
        let all: Vec<(String, String)> = con
            .hgetall(self.keys().replicas())
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let counter: Option<u64> = con
            .get(self.keys().revision())
            .await
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        let now = now_unix_ms();
        let mut out = Vec::new();
        for (id, json) in all {
            let Ok(hb) = serde_json::from_str::<Heartbeat>(&json) else {
                continue;
            };
            let age = now.saturating_sub(hb.at_ms);
            if age > 3_600_000 {
                let _: Result<(), _> = con.hdel(self.keys().replicas(), &id).await;
                continue;
            }
            out.push(ReplicaStatus {
                id,
                applied_revision: hb.applied_revision,
                last_seen_ms: age,
                live: age <= live_window_ms(hb.interval_ms),
                lag: counter.unwrap_or(0).saturating_sub(hb.applied_revision),
                // Said by the replica; or seen: the heartbeats were read before the counter,
                // which only grows, so within one history no replica is ahead of it.
                other_history: !hb.following || counter.is_some_and(|c| hb.applied_revision > c),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Waits until every live replica has applied `revision`, or `timeout` passes. A replica
    /// that goes silent during the wait stops being live and is reported in `behind`.
    pub async fn wait_for_revision(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<WaitOutcome, WaitOutcome> {
        let deadline = Instant::now() + timeout;
        let mut seen_live: Vec<String> = Vec::new();
        loop {
            let replicas = self.replicas().await.unwrap_or_default();
            for r in replicas.iter().filter(|r| r.live) {
                if !seen_live.contains(&r.id) {
                    seen_live.push(r.id.clone());
                }
            }
            let live: Vec<&ReplicaStatus> = replicas.iter().filter(|r| r.live).collect();
            let applied = live.iter().filter(|r| r.has_applied(revision)).count();
            let mut behind: Vec<String> = live
                .iter()
                .filter(|r| !r.has_applied(revision))
                .map(|r| {
                    if r.other_history {
                        format!("{} (still on another history)", r.id)
                    } else {
                        r.id.clone()
                    }
                })
                .collect();
            // Replicas that were live when we started and went silent are behind too.
            for id in &seen_live {
                if !live.iter().any(|r| &r.id == id) && !behind.contains(id) {
                    behind.push(format!("{id} (stopped heartbeating)"));
                }
            }
            let outcome = WaitOutcome {
                applied,
                live: live.len(),
                revision,
                behind,
            };
            if outcome.behind.is_empty() && outcome.live > 0 {
                return Ok(outcome);
            }
            if Instant::now() >= deadline {
                return Err(outcome);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
