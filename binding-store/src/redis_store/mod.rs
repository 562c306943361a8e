//! Redis as the shared source of truth for every replica (schema: `docs/redis-schema.md`).
//!
//! - Writes go through one Lua script (`write.lua`): revision, record, domain index, change
//!   event and audit entry change together or not at all. The exception is a restore import
//!   into a Redis without history (`restore`): records first, then the history in one step.
//! - Replicas load everything (SCAN in batches), then follow the change stream from the
//!   position taken *before* the scan, so nothing written during the load is missed. Revisions
//!   are consecutive (one INCR per change, appended in the same script), so a gap in the
//!   stream — it was trimmed while a replica was away — is detected and answered with a full
//!   reconcile. A periodic reconcile backs this up.
//! - Fail-static: when Redis is unreachable the last table keeps serving, the replica retries
//!   with backoff and jitter, and health says how stale it is. The table is also snapshotted
//!   to disk, so a replica that restarts during an outage serves the last known good table.
//! - Each replica heartbeats its applied revision, which is how `tenant rebind --wait` knows
//!   that every live replica has the change. Heartbeats are stamped, and their age judged,
//!   by Redis's clock (`TIME`), not each host's.

mod endpoint;
mod fleet;
mod follow;
mod restore;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::admin::{
    import_each, Actor, AdminError, AuditEntry, BindingAdmin, History, ImportError, ImportSource,
    Listing, Mutation, FIX_A_RECORD,
};
use crate::error::StoreError;
use crate::file_store::{mutate, op_name};
use crate::model::{Binding, Interner, Revision, TenantId};
use crate::records::{
    confirmed_by_index, contested_domains, settle_contested, DomainIndex, Verdicts,
};
use crate::source::{BindingSource, SyncHealth};
use crate::table::{BindingHandle, BindingTable};

pub use endpoint::{RedisEndpoint, RedisTls, SentinelOptions};
pub use fleet::{Confirmation, ReplicaStatus, WaitOutcome};

use endpoint::Connector;

/// Passes of a full load's settling of contested domains, each after asking the domain index
/// about the domains the one before put back (one or two in practice).
const MAX_SETTLING_PASSES: usize = 8;

/// Where and how to reach Redis, and how this replica behaves.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Where the primary is: a URL, or Sentinel discovery.
    pub endpoint: RedisEndpoint,
    /// Certificates for TLS connections (`rediss://`).
    pub tls: RedisTls,
    /// Key prefix (default `nexus`).
    pub key_prefix: String,
    /// Last-known-good snapshot file; `None` disables snapshots.
    pub snapshot_path: Option<PathBuf>,
    /// Full reconcile period.
    pub reconcile_interval: Duration,
    /// Heartbeat period; a replica silent for 10 periods (at least 5 s) is not live.
    pub heartbeat_interval: Duration,
    /// This replica's id in the fleet.
    pub replica_id: String,
    /// Keys per SCAN batch on full loads.
    pub scan_batch: usize,
    /// Approximate cap of the change stream.
    pub stream_maxlen: usize,
    /// Audit entries kept per tenant.
    pub audit_cap: usize,
    /// Connect / command timeout.
    pub timeout: Duration,
    /// What an admin write does in a Redis that looks wiped (see [`WipedStore`]).
    pub wiped_store: WipedStore,
}

pub use crate::admin::WipedStore;

impl RedisOptions {
    /// Options with production defaults for a primary at `url` (`redis://[user:password@]host:port/db`,
    /// `rediss://` for TLS, or `redis+unix:///path/to/socket`).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_endpoint(RedisEndpoint::Url(url.into()))
    }

    /// Options with production defaults for `endpoint`.
    pub fn with_endpoint(endpoint: RedisEndpoint) -> Self {
        Self {
            endpoint,
            tls: RedisTls::default(),
            key_prefix: "nexus".to_owned(),
            snapshot_path: None,
            reconcile_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(2),
            replica_id: default_replica_id(),
            scan_batch: 1000,
            stream_maxlen: 100_000,
            audit_cap: 1000,
            timeout: Duration::from_secs(2),
            wiped_store: WipedStore::Refuse,
        }
    }
}

/// `hostname-pid`.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Key names under the prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn binding(&self, tenant: &str) -> String {
        format!("{}:binding:{tenant}", self.prefix)
    }
    pub(crate) fn binding_pattern(&self) -> String {
        format!("{}:binding:*", self.prefix)
    }
    pub(crate) fn revision(&self) -> String {
        format!("{}:revision", self.prefix)
    }

    /// The revision counter's value as read (`GET`): a whole number, or none. Anything else
    /// was written outside the schema, and the error names the key and what it holds, where
    /// a plain conversion would say only that a value was not a number.
    pub(crate) fn counter(&self, raw: Option<Vec<u8>>) -> redis::RedisResult<Option<u64>> {
        let Some(raw) = raw else { return Ok(None) };
        // Digits only, as `write.lua` reads it (Rust's parse would take a `+` too).
        std::str::from_utf8(&raw)
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                let shown: String = String::from_utf8_lossy(&raw).chars().take(40).collect();
                redis::RedisError::from((
                    redis::ErrorKind::TypeError,
                    "revision counter is no whole number",
                    format!(
                        "{} holds {shown:?}, written outside nexus-edge: set it to the highest \
                         revision written, or restore the store",
                        self.revision()
                    ),
                ))
            })
    }
    pub(crate) fn changes(&self) -> String {
        format!("{}:changes", self.prefix)
    }
    pub(crate) fn audit(&self, tenant: &str) -> String {
        format!("{}:audit:{tenant}", self.prefix)
    }
    pub(crate) fn domains(&self) -> String {
        format!("{}:domains", self.prefix)
    }
    pub(crate) fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }
    /// Held by a restore import while it writes (see `restore`).
    pub(crate) fn restoring(&self) -> String {
        format!("{}:restoring", self.prefix)
    }
    /// The id of the history the counter counts, and how it began (see [`StoreHistory`]).
    pub(crate) fn history(&self) -> String {
        format!("{}:history", self.prefix)
    }
}

/// A new random id for a history that a write or restore may begin (`write.lua` uses it only
/// when it begins one): 128 bits, so no two histories, of any Redis, share one.
pub(crate) fn new_history_id() -> String {
    random_hex()
}

/// 128 random bits as hex: lock tokens and history ids.
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    crate::snapshot::hex(&b)
}

/// Which history Redis holds (`{prefix}:history`), as a replica reads it with the counter.
///
/// A replica remembers the id of the history its table was loaded from, and its snapshot
/// keeps it. A Redis that lost its data while every replica was down shows none of their
/// heartbeats, so nothing stops an admin's write from beginning a new history there, holding
/// that one tenant; replicas taking it would unbind every other tenant. Such a history is
/// `unconfirmed`, and a replica serving another one's bindings keeps them until an admin
/// confirms it ([`LoadError::UnconfirmedHistory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoreHistory {
    /// Random id, new for each history.
    pub(crate) id: Arc<str>,
    /// Begun by a write or a restore while no replica heartbeat was kept, and not confirmed
    /// since.
    pub(crate) unconfirmed: bool,
    /// What began it, as said in a log line: "a write", "a restore import", ...
    pub(crate) began: &'static str,
}

/// The command that confirms history `id` (`""`: one whose id was deleted by hand, confirmed
/// without naming it).
pub fn confirm_command(id: &str) -> String {
    if id.is_empty() {
        "nexus-edge tenant confirm-history".to_owned()
    } else {
        format!("nexus-edge tenant confirm-history --history {id}")
    }
}

/// What began a history (`began` in `{prefix}:history`), as a log line says it.
fn began_by(field: Option<&String>) -> &'static str {
    match field.map(String::as_str) {
        Some("write") => "a write",
        Some("restore") => "a restore import",
        Some("new-history") => "a write with --start-new-history",
        Some("before-ids") => "writes made before history ids were kept",
        _ => "a writer outside nexus-edge",
    }
}

/// Position in the change feed: last stream id read and the revision it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedPosition {
    pub(crate) stream_id: String,
    pub(crate) revision: u64,
    /// The id of the history the table was loaded from (`None`: unknown, a Redis or snapshot
    /// from before ids were kept). See [`StoreHistory`].
    pub(crate) history: Option<Arc<str>>,
}

/// The table a full load would replace, and the history it was loaded from.
#[derive(Clone, Copy)]
pub(crate) struct Served<'c> {
    pub(crate) table: &'c BindingTable,
    pub(crate) history: Option<&'c str>,
}

/// The Redis binding store: admin writes, and the sync loop of one replica.
pub struct RedisStore {
    opts: RedisOptions,
    keys: Keys,
    connector: Connector,
    script: redis::Script,
    health: Arc<SyncHealth>,
    position: Mutex<Option<FeedPosition>>,
    /// Tenants whose latest record this replica refused, each with the revision of the
    /// binding it still serves for them (0: none). Told in heartbeats, so `--wait` does not
    /// count a replica that refused the very change it waits for.
    refusals: Mutex<BTreeMap<String, u64>>,
    /// The last full load refused an unconfirmed history to keep this replica's bindings
    /// (told in heartbeats as `keeps`).
    keeping: std::sync::atomic::AtomicBool,
    /// Another process heartbeating under this replica's id, if any.
    id_watch: fleet::IdWatch,
    /// The address of the node the follower's connections reach, when the Sentinels named it.
    follower_primary: Mutex<Option<(String, u16)>>,
    /// Whether changes were applied since the snapshot was last written, and when that was.
    /// The store's, not one follower session's: a session that ends (Redis went away, the
    /// replica shuts down) before its next snapshot must not take the need for it along.
    snapshot_due: Mutex<SnapshotDue>,
}

/// A lock that a panic elsewhere does not make unusable: the value is two plain fields.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// See [`RedisStore::snapshot_due`].
#[derive(Debug)]
struct SnapshotDue {
    stale: bool,
    written: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.opts.key_prefix)
            .field("replica", &self.opts.replica_id)
            .finish()
    }
}

/// How long an admin command waits for the Sentinels to name a primary that answers.
const ADMIN_FAILOVER_WAIT: Duration = Duration::from_secs(30);

/// How often a replica starting during a restore import asks whether it has finished.
const RESTORE_POLL: Duration = Duration::from_millis(250);

/// Whether a failed connect is one a Sentinel failover in progress explains: no primary named
/// or valid yet, the named one refusing or gone, or one still loading or read-only.
fn cured_by_failover(e: &redis::RedisError) -> bool {
    use redis::ErrorKind as K;
    matches!(
        e.kind(),
        K::MasterNameNotFoundBySentinel
            | K::NoValidReplicasFoundBySentinel
            | K::MasterDown
            | K::BusyLoadingError
            | K::TryAgain
            | K::ReadOnly
    ) || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_timeout()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                use std::io::ErrorKind as Io;
                // The primary's whole machine gone.
                matches!(
                    io.kind(),
                    Io::HostUnreachable | Io::NetworkUnreachable | Io::ConnectionAborted
                )
            })
}

fn unavailable(e: impl std::fmt::Display) -> AdminError {
    AdminError::Unavailable(e.to_string())
}

impl RedisStore {
    /// With no revision counter (no history), the highest revision a replica reports
    /// serving (0 with none); `None` while the counter exists.
    async fn served_without_history(
        &self,
        con: &mut MultiplexedConnection,
    ) -> Result<Option<u64>, AdminError> {
        let counter: bool = con
            .exists(self.keys.revision())
            .await
            .map_err(unavailable)?;
        if counter {
            return Ok(None);
        }
        fleet::served_revision(self, con)
            .await
            .map(Some)
            .map_err(unavailable)
    }

    /// The revision counter (`None`: there is none, a new or wiped keyspace).
    pub(crate) async fn read_counter(
        &self,
        con: &mut MultiplexedConnection,
    ) -> Result<Option<u64>, AdminError> {
        let raw: Option<Vec<u8>> = con.get(self.keys.revision()).await.map_err(unavailable)?;
        self.keys.counter(raw).map_err(unavailable)
    }

    /// Whether this Redis looks wiped: no revision counter while replicas report serving a
    /// revision (the one returned). `write.lua` refuses writes then; the admin's own early
    /// answers (not found, a conflict) say the same instead of misleading.
    async fn looks_wiped(
        &self,
        con: &mut MultiplexedConnection,
    ) -> Result<Option<Revision>, AdminError> {
        let served = self.served_without_history(con).await?;
        Ok(served.filter(|&s| s > 0).map(Revision))
    }

    /// Before a write that would start this keyspace's history (no revision counter) while no
    /// replica is heard serving one: waits until replicas had the time to say so (the write
    /// is then refused as wiped).
    ///
    /// Redis that restarts without persistence (or is flushed) loses the replicas' heartbeats
    /// with everything else; they are back only once each replica has reconnected (within
    /// [`follow::MAX_BACKOFF`] and its jitter) or heartbeated again (within its interval).
    /// A write in between found no one serving and started a new history of one tenant, and
    /// every replica then unbound all the others. The wait costs only the first write into
    /// an empty keyspace.
    /// How long replicas' heartbeats may take to show after a wipe: a reconnect (within
    /// [`follow::MAX_BACKOFF`] and its jitter) or two heartbeat intervals.
    fn fleet_window(&self) -> Duration {
        follow::MAX_BACKOFF * 3 / 2 + self.opts.heartbeat_interval * 2
    }

    async fn wait_for_wiped_fleet(
        &self,
        con: &mut MultiplexedConnection,
    ) -> Result<(), AdminError> {
        let deadline = tokio::time::Instant::now() + self.fleet_window();
        // Once one is heard, the write is refused as usual (`write.lua`, which says a restore
        // under way first).
        while self.served_without_history(con).await? == Some(0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// A store for `opts`. Fails only on malformed endpoint or TLS settings; connecting
    /// happens on use.
    pub fn new(opts: RedisOptions) -> Result<Self, String> {
        let connector = Connector::new(&opts.endpoint, &opts.tls)?;
        Ok(Self {
            keys: Keys {
                prefix: opts.key_prefix.clone(),
            },
            connector,
            script: redis::Script::new(include_str!("write.lua")),
            health: Arc::new(SyncHealth::default()),
            position: Mutex::new(None),
            refusals: Mutex::new(BTreeMap::new()),
            keeping: std::sync::atomic::AtomicBool::new(false),
            id_watch: fleet::IdWatch::new(),
            follower_primary: Mutex::new(None),
            snapshot_due: Mutex::new(SnapshotDue {
                stale: false,
                written: Instant::now(),
            }),
            opts,
        })
    }

    fn command_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.opts.timeout)
            .set_response_timeout(self.opts.timeout)
    }

    pub(crate) async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.connector
            .client(self.opts.timeout)
            .await?
            .0
            .get_multiplexed_async_connection_with_config(&self.command_config())
            .await
    }

    /// A connection for an admin command; the error names the endpoint (never its password).
    ///
    /// Behind Sentinel, a failover leaves a few seconds in which no node answers as primary
    /// (the old one is gone, or the Sentinels have not yet agreed on the new one, or briefly
    /// call it down again). Nothing is written before a connection exists, so the command
    /// asks again for up to [`ADMIN_FAILOVER_WAIT`] instead of failing an operator's rebind
    /// mid-migration. Errors no failover cures (credentials, configuration) fail at once, as
    /// does a fixed URL: there is no one to name another node.
    pub(crate) async fn admin_connection(&self) -> Result<MultiplexedConnection, AdminError> {
        let fail = |e: &dyn std::fmt::Display, waited: bool| {
            let waited = if waited {
                format!(
                    " (no primary answered for {}s)",
                    ADMIN_FAILOVER_WAIT.as_secs()
                )
            } else {
                String::new()
            };
            AdminError::Unavailable(format!(
                "redis at {}: {e}{waited}",
                self.opts.endpoint.describe()
            ))
        };
        if !matches!(self.opts.endpoint, RedisEndpoint::Sentinel(_)) {
            return self.connect().await.map_err(|e| fail(&e, false));
        }
        let deadline = tokio::time::Instant::now() + ADMIN_FAILOVER_WAIT;
        const FIRST_PAUSE: Duration = Duration::from_millis(50);
        let mut pause = FIRST_PAUSE;
        loop {
            // Each step of the Sentinel lookup is bounded (`SentinelLookup`); the deadline
            // bounds the attempt as a whole too.
            let attempt = match tokio::time::timeout_at(deadline, self.connect()).await {
                Ok(attempt) => attempt,
                Err(_) => return Err(fail(&"no answer", true)),
            };
            match attempt {
                Ok(con) => return Ok(con),
                Err(e) if cured_by_failover(&e) => {
                    if tokio::time::Instant::now() + pause >= deadline {
                        return Err(fail(&e, true));
                    }
                    if pause == FIRST_PAUSE {
                        // Said once, so an operator knows why the command has not returned.
                        tracing::warn!(
                            redis = %self.opts.endpoint.describe(),
                            error = %e,
                            "no node answers as the primary; waiting up to {}s for the Sentinels' failover",
                            ADMIN_FAILOVER_WAIT.as_secs()
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(fail(&e, false)),
            }
        }
    }

    /// The sync loop's two connections, to the same primary (one Sentinel lookup): one for
    /// commands, and one without a response timeout for blocking stream reads.
    pub(crate) async fn connect_follower(
        &self,
    ) -> redis::RedisResult<(MultiplexedConnection, MultiplexedConnection)> {
        let (client, primary) = self.connector.client(self.opts.timeout).await?;
        *lock(&self.follower_primary) = primary;
        let commands = client
            .get_multiplexed_async_connection_with_config(&self.command_config())
            .await?;
        let blocking_cfg =
            redis::AsyncConnectionConfig::new().set_connection_timeout(self.opts.timeout);
        let blocking = client
            .get_multiplexed_async_connection_with_config(&blocking_cfg)
            .await?;
        Ok((commands, blocking))
    }

    /// Loads every binding (SCAN + MGET in batches). Invalid records are logged, counted and
    /// returned by tenant, each with its problem, so a reconcile can keep those tenants' last
    /// good bindings and a listing can say what it left out.
    pub(crate) async fn load_all(
        &self,
        con: &mut MultiplexedConnection,
    ) -> redis::RedisResult<(Vec<Arc<Binding>>, Vec<(String, String)>)> {
        let mut cursor: u64 = 0;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut interner = Interner::default();
        let key_head = self.keys.binding("");
        loop {
            // Key names as bytes: one that is not UTF-8 is refused alone, never the load.
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.binding_pattern())
                .arg("COUNT")
                .arg(self.opts.scan_batch)
                .query_async(con)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(con).await?;
                // MGET answers nil for a key that holds no string, and for one deleted since
                // the scan saw it: that tenant is gone (its feed entry follows the load), not
                // a refused record, and a listing must not call itself incomplete for it.
                let mut gone = vec![false; keys.len()];
                for (i, _) in values.iter().enumerate().filter(|(_, v)| v.is_none()) {
                    let kind: String = redis::cmd("TYPE").arg(&keys[i]).query_async(con).await?;
                    gone[i] = kind == "none";
                }
                for ((key, value), gone) in keys.iter().zip(values).zip(gone) {
                    if gone {
                        continue;
                    }
                    let key = String::from_utf8_lossy(key);
                    // The tenant is all of the key after `{prefix}:binding:`, and must be an
                    // id: `nexus:binding:zed:acme` is no key of acme's (nor of anyone's), even
                    // if the record in it says acme.
                    let Some(tenant) = key
                        .strip_prefix(key_head.as_str())
                        .filter(|t| TenantId::parse(t).is_ok())
                    else {
                        tracing::warn!(key = %key, "key under the binding pattern is no tenant's binding key; ignored");
                        self.health.add_rejected(1);
                        continue;
                    };
                    let parsed = value
                        .ok_or_else(|| "the key holds no string value".to_owned())
                        .and_then(|v| {
                            record_text(&v).and_then(|t| parse_json_record_with(t, &mut interner))
                        })
                        .and_then(|b| check_key(b, tenant));
                    match parsed {
                        Ok(b) => good.push(Arc::new(b)),
                        Err(msg) => {
                            tracing::warn!(key = %key, problem = %brief(&msg), "binding record in Redis refused; the tenant keeps its last good binding");
                            bad.push((tenant.to_owned(), brief(&msg).to_string()));
                        }
                    }
                }
                if good.len() % 100_000 < keys.len() && good.len() >= 100_000 {
                    tracing::info!(loaded = good.len(), "loading bindings from Redis");
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        // SCAN may return a key twice (a rehash during the scan): each tenant is kept once, at
        // its newest read, or its second copy would be refused as a duplicate.
        good.sort_unstable_by(|a, b| {
            a.tenant_id
                .cmp(&b.tenant_id)
                .then(b.revision.cmp(&a.revision))
        });
        good.dedup_by(|later, kept| later.tenant_id == kept.tenant_id);
        bad.sort_unstable();
        bad.dedup_by(|later, kept| later.0 == kept.0);
        bad.retain(|(t, _)| {
            good.binary_search_by(|b| b.tenant_id.as_str().cmp(t.as_str()))
                .is_err()
        });
        self.health.add_rejected(bad.len() as u64);
        Ok((good, bad))
    }

    /// The stream's newest entry (id, revision), or the start of the stream, the revision
    /// counter, and whether a restore import holds its lock, read in one transaction: read
    /// apart, a write landing between them would put the counter past the entry, and the
    /// follower would take that write's entry for a restart of the history and reconcile
    /// again.
    pub(crate) async fn feed_head(
        &self,
        con: &mut MultiplexedConnection,
    ) -> redis::RedisResult<(FeedPosition, Option<u64>, bool, Option<StoreHistory>)> {
        type Fields = BTreeMap<String, String>;
        let (entries, counter, restoring, history): (Entries, Option<Vec<u8>>, bool, Fields) =
            redis::pipe()
                .atomic()
                .cmd("XREVRANGE")
                .arg(self.keys.changes())
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .cmd("GET")
                .arg(self.keys.revision())
                .exists(self.keys.restoring())
                .hgetall(self.keys.history())
                .query_async(con)
                .await?;
        // Written only by the scripts. A hash whose id was deleted by hand names no history,
        // but one that keeps the mark still waits for a confirmation (as a history of an id
        // no replica knows).
        let unconfirmed = history.contains_key("unconfirmed");
        let began = began_by(history.get("began"));
        let history = match history.get("id") {
            Some(id) => Some(StoreHistory {
                id: Arc::from(id.as_str()),
                unconfirmed,
                began,
            }),
            None if unconfirmed => Some(StoreHistory {
                id: Arc::from(""),
                unconfirmed,
                began,
            }),
            None => None,
        };
        let id = history
            .as_ref()
            .map(|h| Arc::clone(&h.id))
            .filter(|id| !id.is_empty());
        let head = entries.into_iter().next().map_or(
            FeedPosition {
                stream_id: "0-0".to_owned(),
                revision: 0,
                history: id.clone(),
            },
            |(id_, fields)| FeedPosition {
                revision: field_u64(&fields, "rev"),
                stream_id: id_,
                history: id,
            },
        );
        Ok((head, self.keys.counter(counter)?, restoring, history))
    }

    /// Whether a restore import is writing to a Redis that had no revision counter, or has
    /// since finished (the counter is there now): either way a scan made meanwhile may hold
    /// only part of it. The lock and the counter are read in one transaction, because a
    /// restore sets one and deletes the other in one step.
    async fn restore_started(&self, con: &mut MultiplexedConnection) -> redis::RedisResult<bool> {
        let (lock, counter): (bool, bool) = redis::pipe()
            .atomic()
            .exists(self.keys.restoring())
            .exists(self.keys.revision())
            .query_async(con)
            .await?;
        Ok(lock || counter)
    }

    /// [`Self::full_table`], asked again over the same connection every [`RESTORE_POLL`]
    /// while a restore import writes and there is no table to keep (a replica serves all of
    /// a restore or none of it). `tell` runs once, when the first refusal comes; `None` if
    /// `stop` says so while waiting.
    pub(crate) async fn full_table_whole<'c>(
        &self,
        con: &mut MultiplexedConnection,
        current: impl FnOnce() -> Option<Served<'c>> + Send + Copy,
        tell: impl FnOnce() + Send,
        stop: impl Fn() -> bool + Send,
    ) -> Result<Option<(BindingTable, FeedPosition)>, LoadError> {
        let mut tell = Some(tell);
        loop {
            match self.full_table(con, current).await {
                Err(LoadError::RestoreUnderWay) => {
                    if let Some(tell) = tell.take() {
                        tell();
                    }
                    if stop() {
                        return Ok(None);
                    }
                    tokio::time::sleep(RESTORE_POLL).await;
                }
                loaded => return loaded.map(Some),
            }
        }
    }

    /// Adds to `index` what the domain index says of `domains` (those not in it yet). A
    /// lookup Redis refuses (the index key of another type) leaves them out, so the bindings
    /// put back keep them, as before the index was asked; a lost connection is an error.
    async fn look_up_domains(
        &self,
        con: &mut MultiplexedConnection,
        mut domains: Vec<&str>,
        index: &mut DomainIndex,
    ) -> redis::RedisResult<()> {
        domains.retain(|d| !index.contains_key(*d));
        domains.sort_unstable();
        domains.dedup();
        for chunk in domains.chunks(1000) {
            let owners: Vec<Option<String>> = match redis::cmd("HMGET")
                .arg(self.keys.domains())
                .arg(chunk)
                .query_async(con)
                .await
            {
                Ok(owners) => owners,
                Err(e) if e.is_io_error() || e.is_connection_dropped() => return Err(e),
                Err(e) => {
                    tracing::warn!(key = %self.keys.domains(), error = %e,
                        "the domain index cannot be read: bindings kept for refused records keep their custom domains");
                    return Ok(());
                }
            };
            index.extend(chunk.iter().map(|d| (*d).to_owned()).zip(owners));
        }
        Ok(())
    }

    /// A full table from Redis: the feed position is taken first, so changes made during the
    /// scan are replayed by the follower afterwards.
    ///
    /// `current` gives the table being served (or standing in for it), and is only called when
    /// the load needs it: for tenants whose record is invalid (they keep their current
    /// binding), or to tell an empty Redis from a wiped one. So a start-up against a healthy
    /// Redis never reads the snapshot file.
    ///
    /// Refused (an error, so the caller keeps its table and retries) when Redis holds no
    /// revision counter while `current` has bindings: that Redis was wiped (`FLUSHALL`, a
    /// restart without persistence), or never written through the schema, or a restore import
    /// is writing its records (the counter comes last). Deleting every tenant through the
    /// schema leaves the counter, so it is not refused. With no bindings to keep, it is
    /// refused too while a restore holds its lock ([`LoadError::RestoreUnderWay`]): the records
    /// written so far are only part of the restore.
    pub(crate) async fn full_table<'c>(
        &self,
        con: &mut MultiplexedConnection,
        current: impl FnOnce() -> Option<Served<'c>> + Send,
    ) -> Result<(BindingTable, FeedPosition), LoadError> {
        let (head, counter, restoring, history) = self.feed_head(con).await?;
        // Said again by this load (`keeps_other_history`).
        self.keeping
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // The table served, read once and only when needed: when there is no counter, a
        // history to confirm, a refused record or a contested domain.
        let mut current = Some(current);
        let mut served: Option<Option<Served<'c>>> = None;
        let mut served = || *served.get_or_insert_with(|| current.take().and_then(|f| f()));
        // Refused before the scan: replicas retry this while a restore writes its records.
        // Past this check with no counter, the table served is empty: no binding to keep below.
        if counter.is_none() {
            let serving = served().map_or(0, |s| s.table.len());
            if serving > 0 {
                return Err(LoadError::NoHistory { serving });
            }
            // Nothing to keep, but a restore's records so far are only part of it; refused
            // before scanning them, as replicas ask again every 250 ms.
            if restoring {
                return Err(LoadError::RestoreUnderWay);
            }
            // Nothing served here, but replicas serve a history Redis no longer holds: an
            // empty table taken now would answer 404 for every tenant (and a replica starting
            // on it would call itself ready). Refused like a write is (`write.lua`).
            let served = fleet::served_revision(self, con).await?;
            if served > 0 {
                return Err(LoadError::Wiped { served });
            }
        }
        // A history begun by a write while no replica was heard, over the table this replica
        // serves from another history: Redis most likely lost its data while the whole fleet
        // was down, and taking it would unbind every tenant that write did not name.
        if let Some(h) = history.as_ref().filter(|h| h.unconfirmed) {
            let served = served();
            let ours = served.and_then(|s| s.history);
            if let Some(s) = served.filter(|s| !s.table.is_empty()) {
                if ours.is_some_and(|ours| ours != &*h.id) {
                    self.keeping
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(LoadError::UnconfirmedHistory {
                        history: Arc::clone(&h.id),
                        began: h.began,
                        serving: s.table.len(),
                        revision: s.table.revision().get(),
                        store_revision: counter.unwrap_or(0),
                    });
                }
            }
            // Nothing of its own to keep (or a table of no known history), but other replicas
            // keep theirs rather than take this history: joining it would split the fleet.
            // Replicas that start with this one say so once their own load has refused it:
            // they are waited for as a first write waits for the fleet.
            if ours != Some(&*h.id) {
                // Only a replica that has loaded nothing yet waits (one already following
                // saw the fleet's heartbeats for a while).
                let window = if self.position().is_none() {
                    self.fleet_window()
                } else {
                    Duration::ZERO
                };
                if !window.is_zero() {
                    tracing::info!(history = %h.id, wait = ?window,
                        "Redis's history began while no replica was heard and is not confirmed: \
                         waiting for the replicas' heartbeats before taking it (one keeping \
                         another history's bindings keeps it out)");
                }
                let deadline = tokio::time::Instant::now() + window;
                loop {
                    let kept = fleet::kept_by_others(self, con).await?;
                    if kept > 0 {
                        return Err(LoadError::UnconfirmedElsewhere {
                            history: Arc::clone(&h.id),
                            kept,
                        });
                    }
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        let (mut bindings, bad) = self.load_all(con).await?;
        // The records as loaded: those that do not end up in the table were refused.
        let loaded: Vec<Arc<Binding>> = bindings.clone();
        // Asked again after the scan, for a restore that began during it.
        if counter.is_none() && self.restore_started(con).await? {
            return Err(LoadError::RestoreUnderWay);
        }
        // A refused record's tenant keeps its served binding, which may be an old snapshot's:
        // only with the custom domains the index still gives it.
        let mut put_back = HashSet::new();
        let mut index = DomainIndex::new();
        if !bad.is_empty() {
            if let Some(cur) = served().map(|s| s.table) {
                let old: Vec<&Arc<Binding>> = bad
                    .iter()
                    .filter_map(|(tenant, _)| cur.get(tenant))
                    .collect();
                let domains = old
                    .iter()
                    .flat_map(|b| b.domains.iter().map(|d| d.as_str()));
                self.look_up_domains(con, domains.collect(), &mut index)
                    .await?;
                for b in old {
                    put_back.insert(b.tenant_id.clone());
                    bindings.push(confirmed_by_index(
                        Arc::clone(b),
                        Some(&index),
                        "Redis",
                        Verdicts::Logged,
                    ));
                }
            }
        }
        let contested = contested_domains(&bindings);
        if !contested.is_empty() {
            // The index is asked about the contested domains and those of the served
            // bindings a loser gets back; settling may put back more, whose domains it was
            // not asked about: it is asked, and the settling made again from the start. The
            // index only grows, so this ends; the bound guards a lookup Redis refuses.
            let cur = served().map(|s| s.table);
            let mut ask: Vec<String> = contested
                .iter()
                .map(|(d, _)| d.clone())
                .chain(
                    contested
                        .iter()
                        .flat_map(|(_, claimants)| claimants)
                        .filter_map(|t| cur.and_then(|c| c.get(t.as_str())))
                        .flat_map(|b| b.domains.iter().map(|d| d.as_str().to_owned())),
                )
                .collect();
            // The passes before the last are settled quietly: their verdicts may be undone.
            let settle = |index: &DomainIndex, verdicts| {
                settle_contested(
                    bindings.clone(),
                    &contested,
                    cur,
                    put_back.clone(),
                    Some(index),
                    "Redis",
                    verdicts,
                )
            };
            for pass in 0..MAX_SETTLING_PASSES {
                let known = index.len();
                self.look_up_domains(con, ask.iter().map(String::as_str).collect(), &mut index)
                    .await?;
                // Asked again and nothing learnt (the index cannot be read): the kept
                // bindings keep the domains not asked about.
                if pass > 0 && index.len() == known {
                    break;
                }
                let (kept, back) = settle(&index, Verdicts::Quiet);
                ask = kept
                    .iter()
                    .filter(|b| back.contains(&b.tenant_id))
                    .flat_map(|b| b.domains.iter().map(|d| d.as_str()))
                    .filter(|d| !index.contains_key(*d))
                    .map(str::to_owned)
                    .collect();
                if ask.is_empty() {
                    break;
                }
            }
            bindings = settle(&index, Verdicts::Logged).0;
        }
        let (table, refused) = BindingTable::from_bindings(bindings);
        for e in &refused {
            tracing::warn!(error = %e, "binding refused on load");
        }
        let serving = |t: &str| table.get(t).map_or(0, |b| b.revision.get());
        let refusals: BTreeMap<String, u64> = crate::records::not_taken(&loaded, &table)
            .map(|b| b.tenant_id.to_string())
            .chain(bad.iter().map(|(t, _)| t.clone()))
            .map(|t| {
                let r = serving(&t);
                (t, r)
            })
            .collect();
        self.set_refusals(refusals);
        // Every change up to the counter is in the scan; the feed continues after `head`.
        // Writes through the schema put no entry past the counter: one that claims more was
        // written by hand, and is not believed (it would make every later write look old and
        // the fleet report revisions it never applied).
        let revision = match counter {
            Some(c) if head.revision > c => {
                tracing::warn!(
                    entry = %head.stream_id,
                    claims = head.revision,
                    counter = c,
                    "the newest change entry claims a revision past the store's counter; ignored"
                );
                c
            }
            Some(c) => c.max(head.revision),
            None => head.revision,
        };
        self.keeping
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok((
            // Deletes after the newest record count: the table reflects the store at
            // `revision`, as a follower that applied them would.
            table.at_least(Revision(revision)),
            FeedPosition {
                stream_id: head.stream_id,
                revision,
                history: head.history,
            },
        ))
    }

    fn set_position(&self, p: FeedPosition) {
        if let Ok(mut g) = self.position.lock() {
            *g = Some(p);
        }
    }

    /// Takes `id` for the history of the table served, when no id was known for it: see
    /// `follow::id_verdict`.
    pub(crate) fn learn_history(&self, id: &str) {
        if let Ok(mut g) = self.position.lock() {
            if let Some(p) = g.as_mut().filter(|p| p.history.is_none()) {
                p.history = Some(Arc::from(id));
            }
        }
    }

    /// Keeps the revision and history of the table served, but no place in the feed: the
    /// next session reconciles (as a replica serving its snapshot does).
    pub(crate) fn forget_feed_place(&self) {
        if let Ok(mut g) = self.position.lock() {
            if let Some(p) = g.as_mut() {
                "0-0".clone_into(&mut p.stream_id);
            }
        }
    }

    pub(crate) fn position(&self) -> Option<FeedPosition> {
        self.position.lock().ok().and_then(|g| g.clone())
    }

    /// Notes that `tenant`'s record was refused, the replica serving `serving` (its binding's
    /// revision, 0 for none) for it meanwhile.
    pub(crate) fn refused(&self, tenant: &str, serving: u64) {
        if let Ok(mut g) = self.refusals.lock() {
            g.insert(tenant.to_owned(), serving);
        }
    }

    /// Notes that a change of `tenant`'s was applied: it serves the store's record again.
    pub(crate) fn accepted(&self, tenant: &str) {
        if let Ok(mut g) = self.refusals.lock() {
            g.remove(tenant);
        }
    }

    /// The refusals of a table loaded whole: they replace every earlier note.
    fn set_refusals(&self, refusals: BTreeMap<String, u64>) {
        if let Ok(mut g) = self.refusals.lock() {
            *g = refusals;
        }
    }

    /// Whether another process heartbeats under this replica's id.
    pub(crate) fn id_watch(&self) -> &fleet::IdWatch {
        &self.id_watch
    }

    /// Whether the last full load kept this replica's bindings rather than take an
    /// unconfirmed history.
    pub(crate) fn keeps_other_history(&self) -> bool {
        self.keeping.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The refusals to tell in a heartbeat (at most [`fleet::MAX_TOLD_REFUSALS`]), and
    /// whether there are more.
    pub(crate) fn refusals(&self) -> (BTreeMap<String, u64>, bool) {
        self.refusals
            .lock()
            .map(|g| {
                let told = g
                    .iter()
                    .take(fleet::MAX_TOLD_REFUSALS)
                    .map(|(t, r)| (t.clone(), *r))
                    .collect();
                (told, g.len() > fleet::MAX_TOLD_REFUSALS)
            })
            .unwrap_or_default()
    }

    pub(crate) fn opts(&self) -> &RedisOptions {
        &self.opts
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn health_ref(&self) -> &SyncHealth {
        &self.health
    }

    /// Writes the snapshot off the async workers (if snapshots are on), with the feed
    /// revision applied so far (never the table's newest record's, which may be ahead of
    /// changes not applied yet): the one a restore from it is measured against.
    pub(crate) async fn snapshot(&self, table: Arc<BindingTable>) {
        let Some(path) = self.opts.snapshot_path.clone() else {
            return;
        };
        // Cleared whether or not the write succeeds: a path that cannot be written is logged
        // once per change, not at every chance to write it.
        {
            let mut due = lock(&self.snapshot_due);
            due.stale = false;
            due.written = Instant::now();
        }
        let prefix = self.opts.key_prefix.clone();
        let position = self.position();
        let applied = Revision(position.as_ref().map_or(0, |p| p.revision));
        let history = position.and_then(|p| p.history);
        let r = tokio::task::spawn_blocking(move || {
            crate::snapshot::write_snapshot(&path, &table, applied, &prefix, history.as_deref())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "snapshot not written"),
            Err(e) => tracing::error!(error = %e, "snapshot task failed"),
        }
    }
}

/// How long a write behind Sentinel waits for a standby to acknowledge it.
const STANDBY_ACK_WAIT: Duration = Duration::from_secs(1);

impl RedisStore {
    /// Behind Sentinel, says so (a warning the admin CLI prints) when no standby acknowledged
    /// the write at `revision` within [`STANDBY_ACK_WAIT`] (`WAIT 1`): replication is
    /// asynchronous, and a failover now would lose it, though the write, and a `--wait`
    /// after it, succeed. Redis that answers nothing to `WAIT` (a user without the right)
    /// says nothing here.
    async fn warn_unless_replicated(
        &self,
        con: &mut MultiplexedConnection,
        tenant: &TenantId,
        revision: u64,
    ) {
        if !matches!(self.opts.endpoint, RedisEndpoint::Sentinel(_)) {
            return;
        }
        let acked: redis::RedisResult<u64> = redis::cmd("WAIT")
            .arg(1)
            .arg(STANDBY_ACK_WAIT.as_millis() as u64)
            .query_async(con)
            .await;
        if acked == Ok(0) {
            tracing::warn!(
                "tenant {tenant} at revision {revision} is written on the primary, but no \
                 standby acknowledged it within {}s: a failover now would lose it (after one, \
                 `nexus-edge tenant history {tenant}` says whether it is there)",
                STANDBY_ACK_WAIT.as_secs()
            );
        }
    }

    /// With Sentinel, the node the Sentinels name as primary now when it is not the one the
    /// follower reads (`None`: the same, no Sentinel, or no Sentinel answered: a replica keeps
    /// following what it has rather than drop it for want of an answer).
    ///
    /// After a failover the old primary may go on answering as one for a while (until the
    /// Sentinels reconfigure it, if it is reachable at all): a replica that kept reading it
    /// served and confirmed a history the new primary does not hold.
    pub(crate) async fn primary_moved(&self) -> Option<String> {
        let following = lock(&self.follower_primary).clone()?;
        match self.connector.named_primary(self.opts.timeout).await? {
            Ok(named) if named != following => Some(format!("{}:{}", named.0, named.1)),
            _ => None,
        }
    }

    /// Changes were applied to the table served: the snapshot is behind it.
    pub(crate) fn snapshot_behind(&self) {
        lock(&self.snapshot_due).stale = true;
    }

    /// Writes the snapshot when it is behind the table served and was last written `every`
    /// ago or longer (`Duration::ZERO`: now, as when Redis went away or the replica stops:
    /// the snapshot is then what a restart or a restore has of the fleet's table).
    pub(crate) async fn snapshot_if_behind(&self, table: Arc<BindingTable>, every: Duration) {
        let due = {
            let due = lock(&self.snapshot_due);
            due.stale && due.written.elapsed() >= every
        };
        if due {
            self.snapshot(table).await;
        }
    }
}

pub(crate) fn field_u64(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> u64 {
    field_str(fields, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A field of a feed entry as text; `None` when absent or not UTF-8.
pub(crate) fn field_str<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// A refusal's text for a log line, cut short: a field error quotes the value, and a record
/// in Redis can hold megabytes.
pub(crate) fn brief(problem: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 300;
    if problem.len() <= MAX {
        return problem.into();
    }
    let mut end = MAX;
    while !problem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &problem[..end], problem.len()).into()
}

/// A stored record's text, or why it is none: Redis values are bytes, and one that is no
/// UTF-8 must be refused as a record, not fail the whole read.
pub(crate) fn record_text(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|e| format!("the record is not UTF-8 text: {e}"))
}

/// A script's error as (code, detail): `CONFLICT 7` gives ("CONFLICT", "7"). Redis sends a
/// one-word error (`NOTFOUND`) as `ERR NOTFOUND`, so after `ERR` the code is the detail's first
/// word.
pub(crate) fn script_error(e: &redis::RedisError) -> Option<(&str, &str)> {
    match (e.code()?, e.detail().unwrap_or_default()) {
        ("ERR", detail) => Some(detail.split_once(' ').unwrap_or((detail, ""))),
        (code, detail) => Some((code, detail)),
    }
}

/// What a write refused by a script's type check (`KEYTYPE <key> <found> <expected>`, from
/// `write.lua`, `restore.lua` or `history.lua`) stopped, said as `consequence`.
pub(crate) fn wrong_type(e: &redis::RedisError, consequence: &'static str) -> Option<AdminError> {
    let ("KEYTYPE", detail) = script_error(e)? else {
        return None;
    };
    // From the end: the key is the schema's prefix plus a name, and the prefix is any text.
    let mut words = detail.trim_end().rsplitn(3, ' ');
    let (expected, found, key) = (words.next()?, words.next()?, words.next()?);
    Some(AdminError::WrongType {
        key: key.to_owned(),
        found: match found {
            "text" => crate::admin::COUNTER_NOT_A_NUMBER.to_owned(),
            other => other.to_owned(),
        },
        expected: expected.to_owned(),
        consequence,
    })
}

/// The first of `wanted` (key, the type the schema keeps there) that holds another type, as
/// the error saying so and what that stopped (`consequence`): one pipelined round of `TYPE`.
pub(crate) async fn misplaced(
    con: &mut MultiplexedConnection,
    wanted: &[(String, &'static str)],
    consequence: &'static str,
) -> redis::RedisResult<Option<AdminError>> {
    let mut pipe = redis::pipe();
    for (key, _) in wanted {
        pipe.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = pipe.query_async(con).await?;
    Ok(wanted
        .iter()
        .zip(types)
        .find(|((_, expected), found)| found != "none" && found != expected)
        .map(|((key, expected), found)| AdminError::WrongType {
            key: key.clone(),
            found,
            expected: (*expected).to_owned(),
            consequence,
        }))
}

/// A read of `key` that failed: a key holding another type than the schema's `expected` is
/// named as such, anything else is the store being unavailable.
pub(crate) async fn read_failure(
    con: &mut MultiplexedConnection,
    key: &str,
    e: redis::RedisError,
    expected: &'static str,
) -> AdminError {
    if e.code() != Some("WRONGTYPE") {
        return unavailable(e);
    }
    match misplaced(con, &[(key.to_owned(), expected)], "so it cannot be read").await {
        Ok(Some(named)) => named,
        _ => unavailable(e),
    }
}

/// The revision a `write.lua` error ends with (`CONFLICT 7`, `WIPED 12`); 0 if none.
fn last_number(msg: &str) -> u64 {
    msg.split_whitespace()
        .rev()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0)
}

/// A record must be stored under its own tenant's key: one that names another tenant would
/// take that tenant's routing over.
pub(crate) fn check_key(binding: Binding, key_tenant: &str) -> Result<Binding, String> {
    if binding.tenant_id.as_str() == key_tenant {
        Ok(binding)
    } else {
        Err(format!(
            "the record under tenant {key_tenant:?}'s key names tenant {:?}",
            binding.tenant_id.as_str()
        ))
    }
}

/// The highest revision `write.lua` reads and makes (2^53: Lua numbers are doubles).
const MAX_REVISION: u64 = 1 << 53;

/// A stored record's revision, read by the rule `write.lua` follows (its optimistic check
/// compares this): the `revision` member of a JSON object when it is a whole number from 0 to
/// 2^53, else 0, so a damaged record reads as 0 on both sides. (Where the script's JSON
/// reader takes a number this one does not, the write goes by the script's.)
fn record_revision(raw: &[u8]) -> u64 {
    const MAX: u64 = MAX_REVISION;
    let text = String::from_utf8_lossy(raw);
    let Ok(serde_json::Value::Object(record)) = serde_json::from_str(&text) else {
        return 0;
    };
    let Some(serde_json::Value::Number(n)) = record.get("revision") else {
        return 0;
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f <= MAX as f64)
                .map(|f| f as u64)
        })
        .filter(|r| *r <= MAX)
        .unwrap_or(0)
}

pub(crate) fn parse_json_record(text: &str) -> Result<Binding, String> {
    parse_json_record_with(text, &mut Interner::default())
}

/// Parses a stored record straight from its JSON text, sharing URLs and ids via `interner`.
pub(crate) fn parse_json_record_with(
    text: &str,
    interner: &mut Interner,
) -> Result<Binding, String> {
    let record: crate::model::BindingRecord =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    // `write.lua` reads a revision past 2^53 as 0 (Lua numbers are doubles), so no write
    // through the schema makes one: believed, it would make every later change of the tenant
    // look older and be refused. Written by hand, it is refused like any other bad member.
    if record.revision > MAX_REVISION {
        return Err(format!(
            "revision {} is past 2^53, which no write through the schema makes (written by \
             hand): replace the record with `nexus-edge tenant put`",
            record.revision
        ));
    }
    Binding::from_record_with(&record, interner)
        .map_err(|errs| crate::error::FieldErrors(&errs).to_string())
}

/// Stream entries as redis-rs returns them: (id, [(field, value)]).
/// Feed entries: ids, and fields as bytes, so that one entry an outside writer filled with
/// bytes that are no UTF-8 is skipped as invalid instead of failing every read of the feed.
pub(crate) type Entries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

impl LoadError {
    /// Redis is up, but holds no history this replica takes now: it keeps its table, says
    /// so in its heartbeat, and asks again.
    pub(crate) fn keeps_table(&self) -> bool {
        matches!(
            self,
            Self::NoHistory { .. }
                | Self::UnconfirmedHistory { .. }
                | Self::UnconfirmedElsewhere { .. }
        )
    }
}

/// Why a full load from Redis gave no table ([`RedisStore::full_table`]); the caller keeps
/// what it serves and asks again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    /// Redis could not be asked, or answered with an error.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// No revision counter while `serving` bindings are served: wiped, never written through
    /// the schema, or a restore import writing.
    #[error(
        "Redis holds no revision counter: it has no history (wiped, or a restore import is \
         under way); keeping the {serving} bindings served now. `nexus-edge tenant import` \
         restores it in one step, or restore Redis from a backup; any other write starts a \
         new history that replicas follow"
    )]
    NoHistory {
        /// Bindings in the table kept.
        serving: usize,
    },
    /// Nothing is served here, no revision counter, and replicas heartbeat revision `served`:
    /// Redis lost its data under them. Not loaded: the table would be empty.
    #[error(
        "Redis holds no revision counter while replicas serve up to revision {served}: it lost \
         its data, and its empty table would unbind every tenant. Restore it (`nexus-edge tenant \
         import` of a replica's snapshot, or a backup), or start a new history with a write \
         made with `--start-new-history`"
    )]
    Wiped {
        /// The highest revision a replica's heartbeat says it applied.
        served: u64,
    },
    /// Redis holds a history begun by a write while no replica was heard serving, not the one
    /// the `serving` bindings served here (up to `revision`) were loaded from: it lost its data
    /// while every replica was down, most likely. Not loaded until an admin confirms it.
    #[error(
        "Redis holds history {history}, begun by {began} while no replica was heard (now at \
         revision {store_revision}), not the one this replica's {serving} bindings (revision \
         {revision}) were loaded from: Redis lost its data while every replica was down, most \
         likely, and taking its table would unbind every tenant it does not hold. \
         Keeping the table served now. To keep these bindings, import a replica's snapshot \
         (`nexus-edge tenant import --allow-older SNAPSHOT`) and then confirm; to serve what \
         Redis holds, confirm: `{confirm}`",
        confirm = confirm_command(history)
    )]
    UnconfirmedHistory {
        /// Redis's history id.
        history: Arc<str>,
        /// What began it.
        began: &'static str,
        /// Bindings in the table kept.
        serving: usize,
        /// The revision of the table kept.
        revision: u64,
        /// Redis's revision counter.
        store_revision: u64,
    },
    /// Redis holds an unconfirmed history that other live replicas do not take (they keep
    /// bindings up to revision `kept`); this one, with nothing of its own to keep, waits too.
    #[error(
        "Redis holds history {history}, begun while no replica was heard and not confirmed, and \
         other replicas keep their bindings (up to revision {kept}) rather than take it: this \
         replica does not take it either, so that every replica routes alike. An admin decides \
         (`nexus-edge replicas`, then `{confirm}`)",
        confirm = confirm_command(history)
    )]
    UnconfirmedElsewhere {
        /// Redis's history id.
        history: Arc<str>,
        /// The highest revision a replica keeping its bindings reports.
        kept: u64,
    },
    /// Nothing is served, and a restore import is writing (or finished during the scan): the
    /// records read are only part of it. Worth asking again soon.
    #[error(
        "a restore import is writing its records to Redis; the whole table is loaded when it \
         finishes"
    )]
    RestoreUnderWay,
}

#[async_trait]
impl BindingSource for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn initial_load(&self) -> Result<BindingTable, StoreError> {
        // The snapshot stands in for the table a running replica would be serving (so an
        // empty or wiped Redis neither replaces nor overwrites it), and it is what is served
        // when Redis cannot be used at all. It is read at most once, and only when one of those
        // needs it: at a million bindings reading it takes seconds and as much memory again.
        let path = self.opts.snapshot_path.as_deref();
        let snapshot = std::sync::OnceLock::new();
        let read = || {
            path.map(|p| {
                (
                    p,
                    snapshot.get_or_init(|| {
                        let r = crate::snapshot::read_snapshot(p, &self.opts.key_prefix);
                        match &r {
                            Ok(_) | Err(crate::snapshot::SnapshotError::Missing(_)) => {}
                            Err(e) => tracing::warn!(error = %e, "the snapshot is not used"),
                        }
                        r
                    }),
                )
            })
        };
        let loaded = async {
            let mut con = self.connect().await?;
            let standing_in = || {
                read()
                    .and_then(|(_, r)| r.as_ref().ok())
                    .filter(|s| !s.table.is_empty())
                    .map(|s| Served {
                        table: &s.table,
                        history: s.history.as_deref(),
                    })
            };
            // Nothing to stand in and no history in Redis: a fresh keyspace, or one wiped a
            // moment ago, which took the fleet's heartbeats with it. They are back within a
            // reconnect or a heartbeat; an empty table taken before would have this replica
            // ready and answer 404 for every tenant the others serve. Waited as a write waits
            // (`wait_for_wiped_fleet`); a replica then heard serving makes the load refused.
            // (An error here is met again by the load below.)
            if matches!(self.read_counter(&mut con).await, Ok(None)) && standing_in().is_none() {
                tracing::info!(
                    "Redis holds no revision counter: waiting for the replicas' heartbeats \
                     before taking its empty table (a wipe takes them too)"
                );
                let _ = self.wait_for_wiped_fleet(&mut con).await;
            }
            let tell = || {
                tracing::warn!(
                    "a restore import is writing to Redis: waiting for it to finish before serving"
                );
            };
            // Start-up is never stopped: it waits until the restore ends.
            let loaded = self
                .full_table_whole(&mut con, standing_in, tell, || false)
                .await;
            // A replica that keeps its snapshot rather than take Redis's history says so at
            // once, before its listeners open: replicas starting beside it with nothing of
            // their own to keep go by it (`LoadError::UnconfirmedElsewhere`). Only one that
            // does start (it has bindings to serve), with the snapshot's revision and history.
            if matches!(&loaded, Err(e) if e.keeps_table()) {
                if let Some(snap) = read()
                    .and_then(|(_, r)| r.as_ref().ok())
                    .filter(|s| !s.table.is_empty())
                {
                    self.set_position(FeedPosition {
                        stream_id: "0-0".to_owned(),
                        revision: snap.revision.get(),
                        history: snap.history.as_deref().map(Arc::from),
                    });
                    let _ = fleet::heartbeat(self, &mut con, snap.revision.get(), false).await;
                }
            }
            loaded?.ok_or(LoadError::RestoreUnderWay)
        }
        .await;
        match loaded {
            Ok((table, pos)) => {
                tracing::info!(
                    bindings = table.len(),
                    revision = pos.revision,
                    "bindings loaded from Redis"
                );
                self.health.mark_synced(table.revision());
                self.health.add_full_reload();
                self.set_position(pos);
                self.snapshot(Arc::new(table.clone())).await;
                Ok(table)
            }
            Err(e) => {
                self.health.mark_down();
                match read() {
                    None => Err(StoreError::Format {
                        path: PathBuf::from(self.opts.endpoint.describe()),
                        reason: format!("Redis not usable ({e}) and no snapshot configured"),
                    }),
                    // Nothing to stand in while the fleet serves a table this replica must not
                    // take (Redis lost it, or has a history the fleet keeps out of): an empty
                    // table would answer 404 for every tenant, as a ready replica.
                    Some((path, Ok(snap)))
                        if snap.table.is_empty()
                            && matches!(
                                e,
                                LoadError::Wiped { .. } | LoadError::UnconfirmedElsewhere { .. }
                            ) =>
                    {
                        Err(StoreError::Format {
                            path: path.to_path_buf(),
                            reason: format!(
                                "Redis not usable ({e}) and the snapshot holds no bindings"
                            ),
                        })
                    }
                    Some((path, Ok(snap))) => {
                        tracing::warn!(error = %e, snapshot = %path.display(), bindings = snap.table.len(),
                            "Redis not usable at start: serving the last known good snapshot");
                        // The table served was in sync when the snapshot was written: the sync
                        // age counts from then (the store stays down), so an alert on it sees
                        // how stale this replica may be.
                        self.health.seed_last_sync(snap.written_at_unix_ms);
                        // Resume by reconcile: the snapshot knows no place in the feed. It
                        // does say which revision its replica had applied, deletes after its
                        // newest record included: that is what this replica serves, and
                        // tells the fleet (a restore is measured against it).
                        self.set_position(FeedPosition {
                            stream_id: "0-0".to_owned(),
                            revision: snap.revision.get(),
                            history: snap.history.as_deref().map(Arc::from),
                        });
                        Ok(snap.table.clone())
                    }
                    Some((path, Err(crate::snapshot::SnapshotError::Missing(_)))) => {
                        Err(StoreError::Format {
                            path: path.to_path_buf(),
                            reason: format!("Redis not usable ({e}) and no snapshot there yet"),
                        })
                    }
                    Some((path, Err(snap))) => Err(StoreError::Format {
                        path: path.to_path_buf(),
                        reason: format!(
                            "Redis not usable ({e}) and the snapshot is unusable: {snap}"
                        ),
                    }),
                }
            }
        }
    }

    async fn run(self: Arc<Self>, handle: BindingHandle, shutdown: watch::Receiver<bool>) {
        follow::run(self, handle, shutdown).await;
    }

    fn health(&self) -> Arc<SyncHealth> {
        Arc::clone(&self.health)
    }
}

#[async_trait]
impl BindingAdmin for RedisStore {
    async fn get(&self, tenant: &TenantId) -> Result<Option<Binding>, AdminError> {
        let mut con = self.admin_connection().await?;
        let key = self.keys.binding(tenant.as_str());
        let raw: Option<Vec<u8>> = match con.get(&key).await {
            Ok(raw) => raw,
            Err(e) => return Err(read_failure(&mut con, &key, e, "string").await),
        };
        if raw.is_none() {
            // "Not found" from a wiped Redis would send the admin to recreate a tenant every
            // replica still serves.
            if let Some(served) = self.looks_wiped(&mut con).await? {
                return Err(AdminError::WipedRead { served });
            }
        }
        raw.map(|r| {
            record_text(&r)
                .and_then(parse_json_record)
                .map_err(|m| AdminError::Corrupt(format!("tenant {tenant}: {m}; {FIX_A_RECORD}")))
        })
        .transpose()
    }

    async fn list(&self) -> Result<Listing, AdminError> {
        let mut con = self.admin_connection().await?;
        // An empty (or partial) listing of a wiped Redis, exported as a backup, would pass
        // for the fleet's table.
        if let Some(served) = self.looks_wiped(&mut con).await? {
            return Err(AdminError::WipedRead { served });
        }
        let revision = Revision(self.read_counter(&mut con).await?.unwrap_or(0));
        let (mut bindings, bad) = self.load_all(&mut con).await.map_err(unavailable)?;
        let mut left_out: Vec<String> = bad
            .iter()
            .map(|(t, problem)| format!("{}: {problem}", self.keys.binding(t)))
            .collect();
        // A record claiming a domain another record claims too is refused by every replica
        // but the one the domain index names: settled as a replica with no table settles it,
        // and named, so that a listing or backup does not look whole.
        let contested = contested_domains(&bindings);
        if !contested.is_empty() {
            let mut index = DomainIndex::new();
            let domains = contested.iter().map(|(d, _)| d.as_str()).collect();
            self.look_up_domains(&mut con, domains, &mut index)
                .await
                .map_err(unavailable)?;
            let (kept, _) = settle_contested(
                bindings.clone(),
                &contested,
                None,
                HashSet::new(),
                Some(&index),
                "Redis",
                Verdicts::Quiet,
            );
            // Refused: the tenants not kept. One kept without the domain (no claimant won
            // it) is listed as stored.
            let kept: HashSet<TenantId> = kept.iter().map(|b| b.tenant_id.clone()).collect();
            for b in bindings.iter().filter(|b| !kept.contains(&b.tenant_id)) {
                let claimed: Vec<String> = contested
                    .iter()
                    .filter(|(_, claimants)| claimants.contains(&b.tenant_id))
                    .map(|(d, _)| match index.get(d).cloned().flatten() {
                        Some(owner) => format!("{d} (held by {owner})"),
                        None => format!("{d} (held by none)"),
                    })
                    .collect();
                left_out.push(format!(
                    "{}: claims a custom domain another record claims too: {}; replicas \
                     refuse the record",
                    self.keys.binding(b.tenant_id.as_str()),
                    claimed.join(", ")
                ));
            }
            bindings.retain(|b| kept.contains(&b.tenant_id));
        }
        Ok(Listing {
            revision,
            bindings: crate::records::sorted_by_tenant(&bindings),
            left_out,
        })
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        mutation: Mutation,
        expect: Option<Revision>,
        actor: &Actor,
    ) -> Result<(Revision, Option<Binding>), AdminError> {
        let mut con = self.admin_connection().await?;
        if self.opts.wiped_store == WipedStore::Refuse {
            self.wait_for_wiped_fleet(&mut con).await?;
        }
        // The record text the script last refused, with the revision it read there: should
        // the two readings of one text ever differ, the next attempt goes by the script's.
        let mut script_read: Option<(Vec<u8>, u64)> = None;
        // Read-modify-write with an optimistic check: without --expect-revision the script is
        // still told what we read, and a concurrent change makes us re-read and retry.
        for attempt in 0u64..200 {
            if attempt > 0 {
                // Back off a little, randomly, so concurrent writers to one tenant do not keep
                // invalidating each other's reads.
                let mut b = [0u8; 1];
                let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
                let micros = (u64::from(b[0]) * 8 * attempt.min(10)).max(100);
                tokio::time::sleep(Duration::from_micros(micros)).await;
            }
            let key = self.keys.binding(tenant.as_str());
            // As bytes: a record that is no UTF-8 text is a damaged one, to replace or delete.
            let raw: Option<Vec<u8>> = match con.get(&key).await {
                Ok(raw) => raw,
                Err(e) => return Err(read_failure(&mut con, &key, e, "string").await),
            };
            let parsed = raw.as_deref().map(|r| {
                record_text(r).and_then(parse_json_record).map_err(|msg| {
                    AdminError::Corrupt(format!("tenant {tenant}: {msg}; {FIX_A_RECORD}"))
                })
            });
            let current = match (parsed, &mutation) {
                (None, _) => None,
                (Some(Ok(b)), _) => Some(b),
                (Some(Err(_)), Mutation::Put(_) | Mutation::Delete) => None,
                (Some(Err(e)), _) => return Err(e),
            };
            let read_rev = match (&script_read, &raw) {
                (Some((text, rev)), Some(now)) if text == now => *rev,
                _ => raw.as_deref().map_or(0, record_revision),
            };
            // With no record, the store may be a wiped one: say that, as the script would,
            // rather than "not found" or a conflict that send the admin to recreate tenants.
            let missing = raw.is_none()
                && (!matches!(mutation, Mutation::Put(_))
                    || expect.is_some_and(|e| e != Revision::ZERO));
            if missing && self.opts.wiped_store == WipedStore::Refuse {
                if let Some(served) = self.looks_wiped(&mut con).await? {
                    return Err(AdminError::Wiped { served });
                }
            }
            if let Some(e) = expect {
                // 0 says "must not exist", which a record without a revision does not satisfy
                // (one with a revision gets the usual conflict below, naming it).
                if e == Revision::ZERO && read_rev == 0 && raw.is_some() {
                    return Err(AdminError::Exists {
                        tenant: tenant.clone(),
                    });
                }
                if e.get() != read_rev {
                    return Err(AdminError::Conflict {
                        tenant: tenant.clone(),
                        expected: e,
                        actual: Revision(read_rev),
                    });
                }
            }
            let op = op_name(&mutation);
            let now = fleet::audit_now(&mut con).await;
            let next = match (&mutation, &raw, &current) {
                (Mutation::Delete, None, _) => return Err(AdminError::NotFound(tenant.clone())),
                // A damaged record: deleting it is how it is cleared.
                (Mutation::Delete, Some(_), None) => None,
                _ => mutate(
                    tenant,
                    current.as_ref(),
                    mutation.clone(),
                    Revision::ZERO,
                    now,
                )?,
            };
            let at = now
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let new_json = match &next {
                Some(b) => serde_json::to_string(&b.to_record()).map_err(unavailable)?,
                None => String::new(),
            };
            let entry = AuditEntry {
                tenant: tenant.to_string(),
                revision: 0,
                at,
                actor: actor.name.clone(),
                reason: actor.reason.clone(),
                op: op.to_owned(),
                old: current.as_ref().map(Binding::to_record),
                new: next.as_ref().map(Binding::to_record),
            };
            let audit_json = serde_json::to_string(&entry).map_err(unavailable)?;
            let mut inv = self.script.prepare_invoke();
            inv.key(self.keys.binding(tenant.as_str()))
                .key(self.keys.revision())
                .key(self.keys.changes())
                .key(self.keys.audit(tenant.as_str()))
                .key(self.keys.domains())
                .key(self.keys.restoring())
                .key(self.keys.replicas())
                .key(self.keys.history())
                .arg(tenant.as_str())
                .arg(read_rev.to_string())
                .arg(new_json)
                .arg(audit_json)
                .arg(self.opts.stream_maxlen)
                .arg(self.opts.audit_cap)
                .arg(match self.opts.wiped_store {
                    WipedStore::Refuse => "",
                    WipedStore::StartNewHistory => "new-history",
                })
                .arg(new_history_id());
            if let Some(b) = &next {
                for d in &b.domains {
                    inv.arg(d.as_str());
                }
            }
            match inv.invoke_async::<u64>(&mut con).await {
                Ok(rev) => {
                    self.warn_unless_replicated(&mut con, tenant, rev).await;
                    let next = next.map(|mut b| {
                        b.revision = Revision(rev);
                        b
                    });
                    return Ok((Revision(rev), next));
                }
                // By the error's code (its first word), never by searching the text: the
                // detail carries key names, and a key prefix is any text.
                Err(e) => {
                    let (code, detail) = script_error(&e).unwrap_or_default();
                    match code {
                        "CONFLICT" if expect.is_some() => {
                            return Err(AdminError::Conflict {
                                tenant: tenant.clone(),
                                expected: expect.unwrap_or_default(),
                                actual: Revision(last_number(detail)),
                            });
                        }
                        "CONFLICT" => {
                            script_read = raw.map(|r| (r, last_number(detail)));
                            continue;
                        }
                        "RESTORING" => {
                            return Err(AdminError::Unavailable(
                                "a restore import is writing to this Redis; try again when it \
                                 has finished"
                                    .to_owned(),
                            ))
                        }
                        "WIPED" => {
                            return Err(AdminError::Wiped {
                                served: Revision(last_number(detail)),
                            })
                        }
                        "NOTFOUND" => return Err(AdminError::NotFound(tenant.clone())),
                        "DOMAIN" => {
                            // `<domain> <owner>`, as the script says it.
                            let reason = match detail.trim().split_once(' ') {
                                Some((domain, owner)) => format!(
                                    "domain {domain} already belongs to tenant {owner}; release \
                                     it there first"
                                ),
                                None => format!("domain already bound: {}", detail.trim()),
                            };
                            return Err(AdminError::Invalid {
                                tenant: tenant.clone(),
                                reason,
                            });
                        }
                        _ => {}
                    }
                    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() {
                        // No answer: the script may have run, whole (it is atomic), before
                        // the connection failed. Said, so the write is not taken as not made.
                        return Err(AdminError::Unavailable(format!(
                            "{e}: the write was sent and Redis did not answer, so it may have \
                             been made; `nexus-edge tenant history {tenant}` says whether it \
                             was before you write again"
                        )));
                    }
                    return Err(wrong_type(
                        &e,
                        "so the write was refused before any of it was made",
                    )
                    .unwrap_or_else(|| unavailable(e)));
                }
            }
        }
        Err(AdminError::Unavailable(format!(
            "tenant {tenant} kept changing under this write; try again"
        )))
    }

    /// Into a Redis with a revision counter, one atomic write per tenant, each followed at
    /// once. Into one without (wiped, or never written), a restore: every record first, then
    /// the history in one step, so a replica serving a table keeps it until the whole import
    /// is in; over serving replicas it takes only a snapshot as recent as their table, unless
    /// told to start a new history (`restore`).
    async fn import(
        &self,
        bindings: Vec<Arc<Binding>>,
        actor: &Actor,
        source: ImportSource,
    ) -> Result<u64, ImportError> {
        let whole = ImportError::nothing;
        if bindings.is_empty() {
            return Ok(0);
        }
        let mut con = self.admin_connection().await.map_err(whole)?;
        let counter: Option<Vec<u8>> = con
            .get(self.keys.revision())
            .await
            .map_err(|e| whole(unavailable(e)))?;
        let counter = self
            .keys
            .counter(counter)
            .map_err(|e| whole(unavailable(e)))?;
        if counter.is_none() {
            // Cloning the Arcs keeps them for the usual way if a history started meanwhile.
            if let Some(n) =
                restore::restore(self, &mut con, bindings.clone(), actor, source).await?
            {
                return Ok(n);
            }
        }
        import_each(self, bindings, actor).await
    }

    async fn history(&self, tenant: &TenantId) -> Result<History, AdminError> {
        let mut con = self.admin_connection().await?;
        let key = self.keys.audit(tenant.as_str());
        // Bytes: an entry that is not UTF-8 is one unreadable entry, not a failed read.
        let lines: Vec<Vec<u8>> = match con.lrange(&key, 0, -1).await {
            Ok(lines) => lines,
            Err(e) => return Err(read_failure(&mut con, &key, e, "list").await),
        };
        let mut out = History::default();
        // Newest first in Redis (LPUSH); index i is `LINDEX key i`.
        for (i, l) in lines.iter().enumerate().rev() {
            match serde_json::from_slice::<AuditEntry>(l) {
                Ok(entry) if entry.tenant == tenant.as_str() => out.entries.push(entry),
                // Not this tenant's: written there by hand, so not part of its history.
                Ok(entry) => out.unreadable.push(format!(
                    "{key} index {i}: an entry of tenant {}",
                    crate::model::quoted(&entry.tenant)
                )),
                Err(e) => out.unreadable.push(format!("{key} index {i}: {e}")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        cured_by_failover, parse_json_record, record_revision, script_error, wrong_type,
        MAX_REVISION,
    };
    use crate::admin::AdminError;
    use redis::{ErrorKind, RedisError};

    /// The rule `write.lua` follows too. Its JSON reader (Redis's cjson) also takes a few
    /// numbers serde_json refuses (`05`, `0x10`) and rounds integers past 2^53 to doubles;
    /// for those the two readings differ and the write retries with the script's (the e2e
    /// test `the_cli_replaces_or_deletes_a_damaged_record` puts one through real Redis).
    #[test]
    fn a_record_s_revision_reading() {
        let cases: [(&[u8], u64); 11] = [
            (br#"{"revision":7}"#, 7),
            (br#"{ "revision" : 7 }"#, 7),
            (br#"{"revision":7.0}"#, 7),
            (br#"{"revision":9007199254740992}"#, 1 << 53),
            (br#"{"revision":1e300}"#, 0),
            (br#"{"revision":"5"}"#, 0),
            (br#"{"revision":-1}"#, 0),
            (br#"{"revision":5.5}"#, 0),
            (br#"{"revision":5"#, 0),
            (br#"[5]"#, 0),
            (b"{\"x\":\"\xff\",\"revision\":4}", 4),
        ];
        for (raw, want) in cases {
            assert_eq!(
                record_revision(raw),
                want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_record_past_2_53_is_refused_and_2_53_loads() {
        let text = |revision: u64| {
            let mut r = crate::model::test_binding("acme", 1, &[]).to_record();
            r.revision = revision;
            serde_json::to_string(&r).unwrap()
        };
        assert_eq!(
            parse_json_record(&text(MAX_REVISION)).map(|b| b.revision.get()),
            Ok(MAX_REVISION)
        );
        for past in [MAX_REVISION + 1, 1 << 60, u64::MAX] {
            let e = parse_json_record(&text(past)).unwrap_err();
            assert!(e.contains("past 2^53"), "{e}");
        }
    }

    #[test]
    fn a_counter_of_another_type_is_set_right_not_deleted() {
        let said = |detail: &str| {
            let e = redis::make_extension_error("KEYTYPE".to_owned(), Some(detail.to_owned()));
            wrong_type(&e, "so nothing was written")
                .unwrap()
                .to_string()
        };
        let counter = said("nexus:revision text string");
        assert!(
            counter.contains("set it to the highest revision written"),
            "{counter}"
        );
        assert!(!counter.contains("delete it"), "{counter}");
        let feed = said("nexus:changes string stream");
        assert!(feed.contains("rename or delete it"), "{feed}");
    }

    #[test]
    fn script_errors_are_read_by_code() {
        let two = redis::make_extension_error("CONFLICT".to_owned(), Some("7".to_owned()));
        assert_eq!(script_error(&two), Some(("CONFLICT", "7")));
        // Redis turns a one-word error into `ERR <word>`.
        let one = RedisError::from((ErrorKind::ResponseError, "server", "NOTFOUND".to_owned()));
        assert_eq!(script_error(&one), Some(("NOTFOUND", "")));
        // The key goes up to the last two words, whatever the prefix holds.
        let keytype = redis::make_extension_error(
            "KEYTYPE".to_owned(),
            Some("my CONFLICT prefix:audit:acme string list".to_owned()),
        );
        match wrong_type(&keytype, "so it stopped") {
            Some(AdminError::WrongType {
                key,
                found,
                expected,
                ..
            }) => assert_eq!(
                (key.as_str(), found.as_str(), expected.as_str()),
                ("my CONFLICT prefix:audit:acme", "string", "list")
            ),
            other => panic!("{other:?}"),
        }
        assert!(wrong_type(&two, "so it stopped").is_none());
    }

    #[test]
    fn which_connect_failures_a_failover_explains() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let cases = [
            (
                RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "no master")),
                true,
            ),
            (RedisError::from((ErrorKind::MasterDown, "down")), true),
            (
                RedisError::from((ErrorKind::BusyLoadingError, "loading")),
                true,
            ),
            (refused, true),
            // A Sentinel or node that did not answer in time (`SentinelLookup`).
            (
                super::endpoint::timed_out_for_tests("the Sentinel", "redis://127.0.0.1:1"),
                true,
            ),
            (
                RedisError::from(std::io::Error::from(std::io::ErrorKind::HostUnreachable)),
                true,
            ),
            (
                RedisError::from((ErrorKind::AuthenticationFailed, "wrong password")),
                false,
            ),
            (
                RedisError::from((ErrorKind::InvalidClientConfig, "bad url")),
                false,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(cured_by_failover(&e), want, "{e}");
        }
    }
}
