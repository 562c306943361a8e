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
//!
//! Where each part lives: `keys` (key names, history ids), `load` (a full load), `follow`
//! (the sync loop and the feed), `fleet` (heartbeats, `--wait`, the replicas' view), `admin`
//! (reads and writes of the CLI), `restore` (imports), `replies` (reading Redis's answers),
//! `endpoint` (connecting: single node, Sentinel, TLS).

mod admin;
mod endpoint;
mod fleet;
pub(crate) mod follow;
mod keys;
mod load;
mod replies;
mod restore;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::watch;

use crate::admin::AdminError;
use crate::error::StoreError;
use crate::model::Revision;
use crate::source::{BindingSource, SyncHealth};
use crate::table::{BindingHandle, BindingTable};

pub use endpoint::{RedisEndpoint, RedisTls, SentinelOptions};
pub use fleet::{wait_floor, Confirmation, ReplicaStatus, WaitOutcome};

use endpoint::Connector;
pub use keys::confirm_command;
pub(crate) use keys::{began_by, counter_value, new_history_id, random_hex, Keys, StoreHistory};
pub(crate) use load::LoadError;
pub(crate) use replies::{
    brief, check_key, field_str, field_u64, last_number, lossy, misplaced, parse_json_record,
    parse_json_record_with, read_failure, record_revision, record_text, script_error, wrong_type,
    Entries,
};

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

/// Position in the change feed: last stream id read and the revision it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FeedPosition {
    pub(crate) stream_id: String,
    pub(crate) revision: u64,
    /// The id of the history the table was loaded from (`None`: unknown, a Redis or snapshot
    /// from before ids were kept). See [`StoreHistory`].
    pub(crate) history: Option<Arc<str>>,
    /// The highest revision this replica knows the store reached in this history: its counter
    /// as last read, or a record's revision applied from an entry before it (a record is read
    /// as it is now, maybe writes past its entry; a full load's scan takes records written
    /// during it). At least `revision`. A store whose counter is behind it lost writes the
    /// table may hold: after a failover (replication is asynchronous) the new primary can
    /// hold this replica's last entry and a counter up to its position, and so look in step,
    /// while the table serves a record it never got.
    pub(crate) reached: u64,
    /// Records applied ahead of the feed (a record read as it is now, or by a full load's
    /// scan, carrying a revision past this position), by revision: when the feed reaches
    /// that revision its entry must be that tenant's. Another tenant's there is a store that
    /// lost the write this replica serves and gave its revision to another write (a failover
    /// before the replica reconnected), which nothing else shows: the counter is where the
    /// replica saw it, its entry is there. Usually empty.
    pub(crate) ahead: Arc<std::collections::BTreeMap<u64, crate::model::TenantId>>,
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
    /// A snapshot write the follower started and did not wait for: at a million bindings a
    /// write takes seconds, and a follower waiting on it delayed every change behind it.
    /// One write at a time.
    snapshot_writing: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A lock that a panic elsewhere does not make unusable: the values kept so are plain
/// fields and sets.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
            keys: Keys::new(opts.key_prefix.clone()),
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
            snapshot_writing: Mutex::new(None),
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

    /// Notes that the store's counter was read at `counter` (see [`FeedPosition::reached`]).
    pub(crate) fn saw_counter(&self, counter: u64) {
        if let Ok(mut g) = self.position.lock() {
            if let Some(p) = g.as_mut() {
                p.reached = p.reached.max(counter);
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

    /// The key prefix this store reads and writes under (`[store] key_prefix`).
    pub fn key_prefix(&self) -> &str {
        &self.opts.key_prefix
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
        // The write in flight first: one at a time, and this one is the newer.
        let writing = lock(&self.snapshot_writing).take();
        if let Some(writing) = writing {
            self.finished(writing.await);
        }
        if let Some(write) = self.start_snapshot(table) {
            self.finished(write.await);
        }
    }

    /// Starts writing the snapshot of `table` on a blocking thread (`None` without a snapshot
    /// path). What it writes is logged there.
    fn start_snapshot(&self, table: Arc<BindingTable>) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.opts.snapshot_path.clone()?;
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
        let health = Arc::clone(&self.health);
        Some(tokio::task::spawn_blocking(move || {
            let written = crate::snapshot::write_snapshot(
                &path,
                &table,
                applied,
                &prefix,
                history.as_deref(),
            );
            if let Err(e) = written {
                health.add_snapshot_write_failure();
                tracing::error!(error = %e, "snapshot not written");
            }
        }))
    }

    fn finished(&self, r: Result<(), tokio::task::JoinError>) {
        if let Err(e) = r {
            self.health.add_snapshot_write_failure();
            tracing::error!(error = %e, "snapshot task failed");
        }
    }

    /// The follower's snapshot: when one is due and none is being written, starts writing it
    /// and returns at once (changes go on being applied meanwhile; the next write is due once
    /// this one has ended).
    pub(crate) fn snapshot_in_background(&self, table: Arc<BindingTable>, every: Duration) {
        let mut writing = lock(&self.snapshot_writing);
        if writing.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let due = self.snapshot_is_due(every);
        if due {
            *writing = self.start_snapshot(table);
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

    /// Whether the snapshot is behind the table served and was last written `every` ago or
    /// longer.
    fn snapshot_is_due(&self, every: Duration) -> bool {
        let due = lock(&self.snapshot_due);
        due.stale && due.written.elapsed() >= every
    }

    /// Changes were applied to the table served: the snapshot is behind it.
    pub(crate) fn snapshot_behind(&self) {
        lock(&self.snapshot_due).stale = true;
    }

    /// Writes the snapshot when it is behind the table served and was last written `every`
    /// ago or longer (`Duration::ZERO`: now, as when Redis went away or the replica stops:
    /// the snapshot is then what a restart or a restore has of the fleet's table).
    pub(crate) async fn snapshot_if_behind(&self, table: Arc<BindingTable>, every: Duration) {
        // A write the follower started is waited for first: a shutdown must not cut it (the
        // file would stay behind the table served, a temp file left beside it), and it may
        // be older than `table`.
        let writing = lock(&self.snapshot_writing).take();
        if let Some(writing) = writing {
            self.finished(writing.await);
        }
        let due = self.snapshot_is_due(every);
        if due {
            self.snapshot(table).await;
        }
    }
}

#[async_trait]
impl BindingSource for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn last_steps(&self) -> Duration {
        nexus_config::MIN_REPLICA_GRACE
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
            let no_counter = matches!(self.read_counter(&mut con).await, Ok(None));
            // A snapshot there that cannot be read is a table this replica served: not a
            // first deployment, whatever Redis holds.
            // (Read only then: a healthy start never pays for reading it.)
            if no_counter {
                if let Some((_, Err(e))) = read() {
                    if matches!(
                        e,
                        crate::snapshot::SnapshotError::Corrupt { .. }
                            | crate::snapshot::SnapshotError::ChecksumMismatch(_)
                            | crate::snapshot::SnapshotError::UnsupportedVersion { .. }
                    ) {
                        return Err(LoadError::UnusableSnapshot {
                            reason: e.to_string(),
                        });
                    }
                }
            }
            if no_counter && standing_in().is_none() {
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
                .full_table_whole(&mut con, standing_in, None, tell, || false)
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
                        reached: snap.revision.get(),
                        ahead: Arc::default(),
                    });
                    let _ = fleet::heartbeat(self, &mut con, snap.revision.get(), false).await;
                }
            }
            let (table, pos) = loaded?.ok_or(LoadError::RestoreUnderWay)?;
            // Heard by the fleet before the listeners open. A replica takes its heartbeat out
            // as it stops; restarted, it served what it loaded before its sync task's first
            // heartbeat, unseen by `--wait`, which could confirm a change meanwhile that this
            // replica loaded too early to have. Best effort: the sync task heartbeats soon.
            // (The heartbeat tells the position's history: it is set first.)
            let revision = pos.revision;
            self.set_position(pos);
            if let Err(e) = fleet::heartbeat(self, &mut con, revision, true).await {
                tracing::debug!(error = %e, "first heartbeat not written; the sync's follows");
            }
            Ok((table, revision))
        }
        .await;
        match loaded {
            Ok((table, revision)) => {
                tracing::info!(
                    bindings = table.len(),
                    revision,
                    "bindings loaded from Redis"
                );
                self.health.mark_synced(table.revision());
                self.health.add_full_reload();
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
                            reached: snap.revision.get(),
                            ahead: Arc::default(),
                        });
                        Ok(snap.table.clone())
                    }
                    Some((path, Err(crate::snapshot::SnapshotError::Missing(_)))) => {
                        Err(StoreError::Format {
                            path: path.to_path_buf(),
                            reason: format!("Redis not usable ({e}) and no snapshot there yet"),
                        })
                    }
                    Some((path, Err(_))) if matches!(e, LoadError::UnusableSnapshot { .. }) => {
                        Err(StoreError::Format {
                            path: path.to_path_buf(),
                            reason: e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::cured_by_failover;
    use redis::{ErrorKind, RedisError};

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
