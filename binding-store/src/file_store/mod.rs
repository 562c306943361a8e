//! The file-backed binding store: a JSON bindings file, watched for changes.
//!
//! It is the embedded default (no Redis needed) and the store for single-node setups.
//!
//! - The proxy polls the file; a change replaces the whole table. A record that fails
//!   validation does not take its tenant offline: the tenant keeps its last good binding.
//!   A file that does not parse at all changes nothing.
//! - Writers must replace the file atomically (temp file + rename): `nexus-edge tenant ...`
//!   does, under an advisory lock, and appends an audit line to `<file>.audit.jsonl` first: a
//!   change whose audit line cannot be written is not made.
//! - Revisions: each admin write stamps one more than the highest the store has issued (kept
//!   in the file's top-level `revision`, so deleting the newest tenant does not hand its
//!   number out again); hand-written records may leave `revision` out (0). The table's
//!   revision is the highest of its records' and the file's, so a delete moves it forward.
//! - A writer that stopped between its audit line and the file is noticed by the next one,
//!   which records that the change was not made (`audit_log`).
//!
//! This module reads and follows the file. Writes are in `admin` (one tenant's change, an
//! import), under the writers' lock of `lock`, on the document as `raw_doc` keeps it, and
//! land through `replace` (temp file, fsync, rename).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::admin::{AdminError, WipedStore};
use crate::error::StoreError;
use crate::model::{Revision, TenantId};
use crate::records::{
    contested_domains, not_taken, parse_records, settle_contested, ParsedRecords, Verdicts,
    MAX_BINDINGS_FILE_BYTES,
};
use crate::source::{BindingSource, SyncHealth};
use crate::table::{BindingHandle, BindingTable};

mod admin;
mod lock;
mod raw_doc;
mod replace;
#[cfg(test)]
mod tests;

pub use replace::write_atomically;
pub(crate) use replace::write_checked;

/// The demo bindings compiled into the binary (the no-config default).
const DEMO_BINDINGS: &str = include_str!("../../../deploy/demo/bindings.json");

/// What identifies a version of the file without reading it: which file (a write by rename
/// makes a new one), its length, and when its content and its inode last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    file: (u64, u64),
    len: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

/// How long after a change a stamp is not trusted. File times move in clock ticks (a few
/// milliseconds), so a second write of the same length within the tick of the one just read
/// can leave every field of the stamp as it was; that version would never be read. Until
/// the inode's change time is this far in the past, each check reads the file and compares
/// its digest instead (as git does with "racily clean" entries).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Bindings in a JSON file (or the embedded demo set when there is no path).
#[derive(Debug)]
pub struct FileStore {
    path: Option<PathBuf>,
    poll_interval: Duration,
    health: Arc<SyncHealth>,
    /// The version last read, and what was made of it.
    seen: Mutex<Option<Seen>>,
    /// The top-level `revision` of the version last loaded: a file emptied by hand keeps it,
    /// so only a revision past it can be the admin CLI's delete of the last tenant.
    loaded_revision: AtomicU64,
    /// What an admin write does when the file is gone while its audit log holds changes.
    wiped_store: WipedStore,
    /// The read failure last logged: the same failure again (the file still missing, at
    /// every poll) is not logged again until a read succeeds or it fails otherwise.
    read_failure: Mutex<Option<String>>,
    /// This process's writers take their turns here, in order, before the file's locks:
    /// the admin API's writes then queue rather than race for the lock, each of which a
    /// writer waits for a bounded time only.
    pub(super) writers: tokio::sync::Mutex<()>,
}

/// A version of the file that was read, and its verdict. The verdict is kept with it because
/// a read failure in between (the file briefly missing) says nothing about the version: when
/// the same content is back, it is as good or as bad as it was.
#[derive(Debug, Clone)]
struct Seen {
    /// Its stamp, when one can be trusted (see [`RACY_WINDOW`]).
    stamp: Option<Stamp>,
    digest: [u8; 32],
    /// Whether it was loaded (the table served is its) rather than refused.
    loaded: bool,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Reads the bindings file, which must be a regular file (a symbolic link to one counts) of
/// at most [`MAX_BINDINGS_FILE_BYTES`]: reading a FIFO or a device could block the poller,
/// and with it every later reload, for good, and a file of gigabytes would be read whole
/// before it could be refused.
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    nexus_config::files::read_regular(path, MAX_BINDINGS_FILE_BYTES)
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        file: (m.dev(), m.ino()),
        len: m.len(),
        modified: m.modified().ok(),
        changed: (m.ctime(), m.ctime_nsec()),
    })
}

/// `stamp`, if no write after it can go unseen: its inode changed at least [`RACY_WINDOW`]
/// before `now` (any later write then sets a later change time).
fn settled(stamp: Option<Stamp>, now: SystemTime) -> Option<Stamp> {
    let stamp = stamp?;
    let (secs, nanos) = stamp.changed;
    // Checked: a change time near the end of `i64` (a tampered or corrupt filesystem) is
    // past any clock, so never settled, instead of an overflow that panics.
    let settles_at = u64::try_from(secs)
        .ok()
        .and_then(|s| {
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(s, u32::try_from(nanos).unwrap_or(0)))
        })
        .and_then(|changed| changed.checked_add(RACY_WINDOW))?;
    (settles_at <= now).then_some(stamp)
}

impl FileStore {
    /// A store over `path` (`None`: the embedded demo bindings), checked every `poll_interval`.
    pub fn new(path: Option<PathBuf>, poll_interval: Duration) -> Self {
        Self {
            path,
            poll_interval,
            health: Arc::new(SyncHealth::default()),
            seen: Mutex::new(None),
            loaded_revision: AtomicU64::new(0),
            wiped_store: WipedStore::Refuse,
            read_failure: Mutex::new(None),
            writers: tokio::sync::Mutex::new(()),
        }
    }

    /// The store, with what an admin write does when the file is lost (see [`WipedStore`]).
    pub fn with_wiped_store(mut self, wiped: WipedStore) -> Self {
        self.wiped_store = wiped;
        self
    }

    fn origin(&self) -> String {
        self.path.as_ref().map_or_else(
            || "embedded demo bindings".to_owned(),
            |p| p.display().to_string(),
        )
    }

    fn read(&self) -> Result<Vec<u8>, StoreError> {
        match &self.path {
            None => Ok(DEMO_BINDINGS.as_bytes().to_vec()),
            Some(p) => read_regular(p).map_err(|source| StoreError::Io {
                path: p.clone(),
                source,
            }),
        }
    }

    /// Builds a table from file content. Tenants whose new record is invalid keep their binding
    /// from `current`; so do tenants whose record claims a custom domain another record
    /// claims too, unless they hold it now.
    ///
    /// A file whose records are all refused is refused whole (at start-up and later). With a
    /// table served (`current`), two more files are refused whole, as no tenant's binding
    /// can be kept for sure: one holding a record that names no tenant (no `tenant_id`, or
    /// one not canonical), which could be any tenant's; and one holding no records at all
    /// whose top-level `revision` is not past the table's and the last loaded file's (not the
    /// admin CLI's last delete), which would unbind everyone. A table built is remembered as
    /// loaded: callers serve it.
    fn build(
        &self,
        bytes: &[u8],
        current: Option<&BindingTable>,
    ) -> Result<BindingTable, StoreError> {
        let refuse = |reason: String| StoreError::Format {
            path: PathBuf::from(self.origin()),
            reason,
        };
        let parsed = parse_records(bytes).map_err(refuse)?;
        // At start-up, records that are all refused would make a ready router that routes
        // no tenant (every request 404); an empty list is a store with no tenants yet. Later,
        // they would unbind every tenant the file does not name (a botched bulk edit, a file
        // half replaced), with nothing in the file to say it was meant: the table served stays.
        if parsed.bindings.is_empty() {
            if let Some(first) = parsed.problems.first() {
                // Each named and counted, as in a load that takes the file.
                for p in parsed
                    .problems
                    .iter()
                    .filter(|_| crate::record_lines::admit())
                {
                    tracing::warn!(file = %self.origin(), problem = %p, "binding record refused");
                }
                crate::record_lines::summarize(&self.origin());
                self.health.add_rejected(parsed.problems.len() as u64);
                let served = current.map_or(0, BindingTable::len);
                let outcome = if served == 0 {
                    "so no tenant could be routed".to_owned()
                } else {
                    format!("so the {served} bindings served stay")
                };
                return Err(refuse(format!(
                    "none of its {} records is valid, {outcome} (the first: {first}); \
                     `nexus-edge check` names each",
                    parsed.problems.len()
                )));
            }
        }
        if let Some(table) = current.filter(|t| !t.is_empty()) {
            if let Some(p) = parsed.problems.iter().find(|p| p.tenant_id().is_none()) {
                return Err(refuse(format!(
                    "{p}; a record that names no tenant could be any tenant's, so no tenant \
                     missing from the file can be unbound"
                )));
            }
            // The CLI's last delete leaves the file at a revision past the table's and the
            // last loaded file's (after an earlier delete, that one is past the table's too);
            // a hand edit of any file does not move it.
            let loaded = self.loaded_revision.load(Ordering::Relaxed);
            let written_since = parsed
                .revision
                .is_some_and(|r| r > table.revision().get().max(loaded));
            if parsed.bindings.is_empty() && parsed.problems.is_empty() && !written_since {
                return Err(refuse(format!(
                    "the file holds no bindings, while {} are served; remove tenants with \
                     `nexus-edge tenant delete`",
                    table.len()
                )));
            }
        }
        let mut bindings = parsed.bindings;
        // The file's valid records: those that do not end up in the table were refused.
        let from_file = bindings.clone();
        // Looked up once per refused record: a scan of the list each time made a file with
        // many refused records (a bulk edit gone wrong) take minutes to hours to load.
        let mut in_file: std::collections::HashSet<TenantId> =
            bindings.iter().map(|b| b.tenant_id.clone()).collect();
        let mut put_back = std::collections::HashSet::new();
        for p in &parsed.problems {
            let old = p
                .tenant_id()
                .zip(current)
                .and_then(|(tenant, table)| table.get(tenant.as_str()));
            match old {
                Some(old) => {
                    if crate::record_lines::admit() {
                        tracing::warn!(file = %self.origin(), problem = %p, "binding record refused; the tenant keeps its last good binding");
                    }
                    if in_file.insert(old.tenant_id.clone()) {
                        put_back.insert(old.tenant_id.clone());
                        bindings.push(Arc::clone(old));
                    }
                }
                None => {
                    if crate::record_lines::admit() {
                        tracing::warn!(file = %self.origin(), problem = %p, "binding record refused; no binding was served for it, so it stays unbound until the record is fixed");
                    }
                }
            }
        }
        let contested = contested_domains(&bindings);
        if !contested.is_empty() {
            // A file has no domain index: its put-back bindings keep their domains.
            bindings = settle_contested(
                bindings,
                &contested,
                current,
                put_back,
                None,
                "file",
                Verdicts::Logged,
            )
            .0;
        }
        let (table, refused) = BindingTable::from_bindings(bindings);
        // The file's own revision counts deletes after its newest record (the admin CLI's).
        let table = table.at_least(Revision(parsed.revision.unwrap_or(0)));
        for e in refused.iter().filter(|_| crate::record_lines::admit()) {
            tracing::warn!(file = %self.origin(), error = %e, "binding refused");
        }
        crate::record_lines::summarize(&self.origin());
        let not_taken = not_taken(&from_file, &table).count();
        self.health
            .add_rejected((parsed.problems.len() + not_taken) as u64);
        // The file loaded last, not the highest yet: after a backup is restored with its
        // audit log, the CLI numbers from the backup again, and its delete of the last tenant
        // must be taken.
        self.loaded_revision
            .store(parsed.revision.unwrap_or(0), Ordering::Relaxed);
        Ok(table)
    }

    /// Checks the file once and swaps the table if it changed. Returns whether it did.
    pub fn check_for_change(&self, handle: &BindingHandle) -> bool {
        let Some(path) = &self.path else { return false };
        let now = stamp(path);
        let previous = self.seen.lock().ok().and_then(|g| g.clone());
        // The version last read, again: in sync if it was loaded, even when a read failed in
        // between (the table served is still its); a refused version stays refused. Sync age
        // and `last_sync` mean "checked", not "changed".
        let unchanged = |seen: &Seen| {
            if seen.loaded {
                self.health.mark_synced(handle.load().revision());
            }
            false
        };
        if let (Some(now), Some(seen)) = (&now, &previous) {
            if seen.stamp.as_ref() == Some(now) {
                return unchanged(seen);
            }
        }
        let bytes = match self.read() {
            Ok(b) => {
                if self.note_read_failure(None) {
                    // The failure was logged as an error; its end is worth a line too (with the
                    // same content back, no reload line would say it).
                    tracing::info!(file = %self.origin(), "bindings file readable again");
                }
                b
            }
            Err(e) => {
                if self.note_read_failure(Some(e.to_string())) {
                    tracing::error!(error = %e, "bindings file unreadable; keeping the current table");
                }
                // Down until a version is read; `seen` stays, so that the version last read,
                // back as it was, gets its verdict again without being loaded twice.
                self.health.mark_down();
                self.health.add_sync_failure();
                return false;
            }
        };
        let d = digest(&bytes);
        if let Some(seen) = previous.filter(|seen| seen.digest == d) {
            self.remember(now, d, seen.loaded);
            return unchanged(&seen);
        }
        let served = handle.load().revision();
        match self.build(&bytes, Some(&handle.load())) {
            Ok(table) => {
                let (n, rev) = (table.len(), table.revision());
                handle.store(table);
                self.remember(now, d, true);
                self.health.mark_synced(rev);
                if rev < served {
                    // Taken (the file is the truth), but worth a warning: an older copy put
                    // back (a backup, a deploy of a stale file) undoes every change since.
                    tracing::warn!(file = %self.origin(), bindings = n, revision = rev.get(),
                        was = served.get(),
                        "bindings reloaded at an older revision than served (a restored or stale copy?): changes since are undone");
                } else {
                    tracing::info!(file = %self.origin(), bindings = n, revision = rev.get(), "bindings reloaded");
                }
                true
            }
            Err(e) => {
                // Remember the bad version so it is not re-parsed every poll; a new write
                // changes the stamp and is tried again.
                self.remember(now, d, false);
                self.health.mark_down();
                self.health.add_sync_failure();
                tracing::error!(error = %e, "bindings file refused; keeping the current table");
                false
            }
        }
    }

    /// Records the outcome of a read (`None`: it succeeded); true when that is news worth a
    /// line: a failure other than the last, or a success after a failure.
    fn note_read_failure(&self, failure: Option<String>) -> bool {
        let Ok(mut last) = self.read_failure.lock() else {
            return failure.is_some();
        };
        let new = *last != failure;
        *last = failure;
        new
    }

    /// Remembers the version read (`stamp` taken before reading it) and whether it was
    /// `loaded`, for the next check.
    fn remember(&self, stamp: Option<Stamp>, digest: [u8; 32], loaded: bool) {
        if let Ok(mut g) = self.seen.lock() {
            *g = Some(Seen {
                stamp: settled(stamp, SystemTime::now()),
                digest,
                loaded,
            });
        }
    }

    /// The file's records, for an admin read.
    fn parsed(&self) -> Result<ParsedRecords, AdminError> {
        let bytes = self
            .read()
            .map_err(|e| AdminError::Unavailable(e.to_string()))?;
        parse_records(&bytes).map_err(|e| AdminError::Corrupt(format!("{}: {e}", self.origin())))
    }

    fn writable_path(&self) -> Result<&Path, AdminError> {
        self.path.as_deref().ok_or_else(|| {
            AdminError::Unavailable(
                "the embedded demo store is read-only; configure [store] path".to_owned(),
            )
        })
    }
}

#[async_trait]
impl BindingSource for FileStore {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn initial_load(&self) -> Result<BindingTable, StoreError> {
        let bytes = self.read()?;
        let table = self.build(&bytes, None)?;
        if let Some(p) = &self.path {
            self.remember(stamp(p), digest(&bytes), true);
        }
        self.health.mark_synced(table.revision());
        Ok(table)
    }

    async fn run(self: Arc<Self>, handle: BindingHandle, mut shutdown: watch::Receiver<bool>) {
        if self.path.is_none() {
            let _ = shutdown.changed().await;
            return;
        }
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let store = Arc::clone(&self);
                    let h = handle.clone();
                    // File I/O and parsing stay off the async workers.
                    let _ = tokio::task::spawn_blocking(move || store.check_for_change(&h)).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    fn health(&self) -> Arc<SyncHealth> {
        Arc::clone(&self.health)
    }
}
