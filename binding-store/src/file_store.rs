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

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

use crate::admin::{
    Actor, AdminError, AuditEntry, BindingAdmin, History, ImportError, ImportSource, Listing,
    Mutation, WipedStore, FIX_A_RECORD,
};
use crate::audit_log::{self, AuditLog, Tail};
use crate::error::StoreError;
use crate::json::{shown_name, without_bom, Checked};
use crate::model::{Binding, Revision, TenantId};
use crate::records::{
    contested_domains, not_taken, parse_record, parse_records, settle_contested, sorted_by_tenant,
    ParsedRecords, Verdicts, BINDINGS_FORMAT, DOCUMENT_KEYS, MAX_BINDINGS_FILE_BYTES,
};
use crate::source::{BindingSource, SyncHealth};
use crate::table::{BindingHandle, BindingTable};

/// The demo bindings compiled into the binary (the no-config default).
const DEMO_BINDINGS: &str = include_str!("../../deploy/demo/bindings.json");

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
    let changed = u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::new(s, u32::try_from(nanos).unwrap_or(0)))?;
    (changed + RACY_WINDOW <= now).then_some(stamp)
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

/// The raw document, kept as JSON values so that records an admin write does not touch are
/// written back exactly as they were (even invalid ones).
struct RawDoc {
    bindings: Vec<Value>,
    /// The highest revision this store has issued (the top-level `revision`); `None` in files
    /// that predate it or were written by hand.
    revision: Option<u64>,
    /// The file does not exist (read as empty).
    missing: bool,
    /// The file as read: its stamp, taken before it was read, and its content's digest; a
    /// write checks the file is still that one before replacing it (see
    /// [`RawDoc::unchanged`]).
    read_as: Option<(Option<Stamp>, [u8; 32])>,
}

impl RawDoc {
    fn read(path: &Path) -> Result<RawDoc, AdminError> {
        // Before the read: a change after it then shows as another stamp.
        let before = stamp(path);
        let bytes = match read_regular(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RawDoc {
                    bindings: Vec::new(),
                    revision: None,
                    missing: true,
                    read_as: None,
                })
            }
            Err(e) => return Err(AdminError::Unavailable(format!("{}: {e}", path.display()))),
        };
        let Checked { value: v, repeated } = serde_json::from_slice(without_bom(&bytes))
            .map_err(|e| AdminError::Corrupt(format!("{}: not JSON: {e}", path.display())))?;
        if v.get("format").and_then(Value::as_str) != Some(BINDINGS_FORMAT) {
            return Err(AdminError::Corrupt(format!(
                "{}: format is not {BINDINGS_FORMAT}",
                path.display()
            )));
        }
        // What the router refuses to load, a write must not quietly mend (and drop).
        if let Some(key) = v
            .as_object()
            .and_then(|o| o.keys().find(|k| !DOCUMENT_KEYS.contains(&k.as_str())))
        {
            return Err(AdminError::Corrupt(format!(
                "{}: unknown top-level key {key:?} (expected {})",
                path.display(),
                DOCUMENT_KEYS.join(", ")
            )));
        }
        let bindings = v
            .get("bindings")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| AdminError::Corrupt(format!("{}: no bindings array", path.display())))?;
        // Routers refuse a file whose counter is no whole number; a write would write one.
        let revision = match v.get("revision") {
            None | Some(Value::Null) => None,
            Some(r) => Some(r.as_u64().ok_or_else(|| {
                AdminError::Corrupt(format!(
                    "{}: the top-level revision is {}, not a whole number; routers refuse the \
                     file until it is fixed by hand",
                    path.display(),
                    crate::records::brief(&r.to_string())
                ))
            })?),
        };
        // Routers refuse a record that repeats a member name; written back, it would keep
        // one of the values and lose the evidence of the other.
        if let Some(name) = repeated.first() {
            return Err(AdminError::Corrupt(format!(
                "{}: an object in it repeats the member name {}, so which of its values is \
                 meant is unclear; fix the file by hand",
                path.display(),
                shown_name(name)
            )));
        }
        // Routers refuse the whole file while a record in it names no tenant (it could be any
        // tenant's, so none missing from the file could be unbound): a change written into
        // it would be audited and reported made, and never served.
        if let Some((i, v)) = bindings
            .iter()
            .enumerate()
            .find(|(_, v)| record_tenant(v).is_none())
        {
            let named = v.get("tenant_id").map_or_else(
                || "no tenant_id".to_owned(),
                |t| format!("tenant_id {}", crate::records::brief(&t.to_string())),
            );
            return Err(AdminError::Corrupt(format!(
                "{}: record {i} names no valid tenant ({named}); routers refuse the whole file \
                 while it is there, so no change written into it would be served; fix or \
                 remove that record by hand",
                path.display()
            )));
        }
        Ok(RawDoc {
            bindings,
            revision,
            missing: false,
            read_as: Some((before, digest(&bytes))),
        })
    }

    /// Tenants other than `except` whose record routers refuse, or may: invalid, listed more
    /// than once, or claiming a custom domain another record claims too (routers refuse the
    /// claimant that does not hold it now, which the file does not say). Each keeps the last
    /// good binding a router served for it, with custom domains this file does not show: a
    /// domain claimed now cannot be checked against those.
    fn refused_tenants(&self, except: &dyn Fn(&TenantId) -> bool) -> Vec<String> {
        let places = self.places();
        let mut refused = std::collections::BTreeSet::new();
        let mut claimants: std::collections::HashMap<String, Vec<TenantId>> =
            std::collections::HashMap::new();
        // One parse of each record: the invalid ones and the twice-listed are refused; the
        // valid ones' domains are gathered for the contested.
        for v in &self.bindings {
            let Some(tenant) = record_tenant(v) else {
                continue;
            };
            if places.get(tenant.as_str()).is_some_and(|p| p.len() > 1) {
                refused.insert(tenant.clone());
            }
            match parse_record(v) {
                Ok(b) => {
                    for d in &b.domains {
                        claimants
                            .entry(d.as_str().to_owned())
                            .or_default()
                            .push(tenant.clone());
                    }
                }
                Err(_) => {
                    refused.insert(tenant);
                }
            }
        }
        refused.extend(claimants.into_values().filter(|c| c.len() > 1).flatten());
        refused
            .into_iter()
            .filter(|t| !except(t))
            .map(|t| t.to_string())
            .collect()
    }

    /// Whether the file at `path` is still the one read (or still missing): the lock keeps
    /// other admin writes out, not a hand edit, nor a writer whose lock file was removed from
    /// under the one this writer holds. Replacing a file changed since it was read would undo
    /// that change unseen. By stamp, and by content when the stamp may not have moved (a
    /// change of the same length within one tick of the file clock, see [`RACY_WINDOW`]).
    fn unchanged(&self, path: &Path) -> Result<(), AdminError> {
        let changed = || {
            AdminError::Unavailable(format!(
                "{}: the file changed while this write was being made (edited by hand, or \
                 written by another writer); nothing written, run the command again",
                path.display()
            ))
        };
        let Some((was, digest_read)) = &self.read_as else {
            // Read as missing: still missing.
            return match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(changed()),
            };
        };
        let now = stamp(path);
        if now.is_none() || now != *was {
            return Err(changed());
        }
        if settled(now, SystemTime::now()).is_none() {
            let bytes = read_regular(path)
                .map_err(|e| AdminError::Unavailable(format!("{}: {e}", path.display())))?;
            if digest(&bytes) != *digest_read {
                return Err(changed());
            }
        }
        Ok(())
    }

    /// Where each tenant's records are, by the `tenant_id` they name.
    fn places(&self) -> std::collections::HashMap<String, Vec<usize>> {
        let mut at: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, v) in self.bindings.iter().enumerate() {
            if let Some(t) = v.get("tenant_id").and_then(Value::as_str) {
                at.entry(t.to_owned()).or_default().push(i);
            }
        }
        at
    }

    /// Where `tenant`'s records are (more than one only in a file edited by hand).
    fn positions(&self, tenant: &TenantId) -> Vec<usize> {
        (0..self.bindings.len())
            .filter(|&i| {
                self.bindings[i].get("tenant_id").and_then(Value::as_str) == Some(tenant.as_str())
            })
            .collect()
    }

    /// The highest revision issued: the file's counter, or a record's if one is higher
    /// (hand-edited files).
    fn high_revision(&self) -> u64 {
        self.bindings
            .iter()
            .filter_map(|v| v.get("revision").and_then(Value::as_u64))
            .fold(self.revision.unwrap_or(0), u64::max)
    }

    fn valid(&self) -> Vec<Binding> {
        self.bindings
            .iter()
            .filter_map(|v| parse_record(v).ok())
            .collect()
    }

    /// Writes the document as the file at `path`; `last_check` runs once the new file is
    /// written and synced, right before it replaces the old one (see [`write_checked`]).
    fn write(
        &self,
        path: &Path,
        last_check: impl FnOnce() -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let doc = serde_json::json!({
            "format": BINDINGS_FORMAT,
            "revision": self.revision.unwrap_or_else(|| self.high_revision()),
            "bindings": self.bindings,
        });
        let mut refused = None;
        let checked = || {
            last_check().map_err(|e| {
                refused = Some(e);
                std::io::Error::other("refused before the rename")
            })
        };
        write_checked(path, format!("{doc:#}\n").as_bytes(), checked).map_err(|e| {
            refused
                .take()
                .unwrap_or_else(|| AdminError::Unavailable(format!("{}: {e}", path.display())))
        })
    }
}

/// The tenant a stored record names, when its `tenant_id` is a canonical id.
fn record_tenant(v: &Value) -> Option<TenantId> {
    v.get("tenant_id")
        .and_then(Value::as_str)
        .and_then(|t| TenantId::parse(t).ok())
}

/// A write that claims `domains` (custom domains its tenant's record did not hold) is refused
/// while `refused` tenants' records are refused by routers: a router keeps such a tenant's
/// last good binding, domains and all, and refuses the claiming record while it runs, yet one
/// started afresh has no such binding and gives the domain to the claimant; the fleet would
/// route the domain two ways.
fn claim_unchecked(tenant: &TenantId, domains: &[&str], refused: &[String]) -> AdminError {
    AdminError::Invalid {
        tenant: tenant.clone(),
        reason: format!(
            "it claims custom domain(s) {} while routers refuse the record(s) of {} (invalid, \
             listed twice, or claiming a custom domain another record claims too): each of \
             those tenants keeps its last good binding, whose custom domains the file does not \
             show, so the claim cannot be checked against them; fix those records first",
            domains.join(", "),
            refused.join(", ")
        ),
    }
}

/// A change of one field (or one expecting a revision) to a tenant listed more than once in
/// the file is refused: routers refuse every one of its records (the tenant keeps the
/// binding it had before), so a change to one of them would be audited and reported done,
/// yet never take effect. Which record is meant is the operator's call, so the write does
/// not pick one; nothing is written. A put or a delete without a revision replaces them all.
fn listed_twice(path: &Path, tenant: &TenantId, places: &[usize]) -> AdminError {
    AdminError::Corrupt(format!(
        "{}: tenant {tenant} is listed more than once (records {places:?}); routers refuse \
         every one of its records, so a change to one would never take effect. `tenant put` \
         the record meant (or `tenant delete` the tenant), without --expect-revision: that \
         replaces them all; then retry",
        path.display()
    ))
}

/// Temp file in the same directory, fsync, rename, fsync the directory: readers see the old
/// file or the new one, never half of one, even across a crash.
///
/// The new file is what the old one was to everyone else: a symlink at `path` is followed
/// (the file it names is replaced, in its own directory, and the link kept: routers may read
/// the file by either name), and the new file gets the old one's permissions, and its owner
/// and group as far as this process may set them (see [`keep_owner_and_mode`]). A new file
/// gets the default mode (umask).
///
/// An error means the file was not replaced. Once the rename is done the new content is what
/// everyone reads, so a failure to sync the directory after it is logged, not returned (a
/// caller would otherwise undo the audit line of a change that did happen).
pub fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    write_checked(path, content, || Ok(()))
}

/// [`write_atomically`], with `last_check` run once the new file is written and synced,
/// right before the rename: an error from it leaves the old file in place. What must still
/// hold when the file is replaced is checked there, not before the write and the sync, which
/// may take long on a slow disk.
fn write_checked(
    path: &Path,
    content: &[u8],
    last_check: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = &resolve_links(path)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let old = match std::fs::metadata(path) {
        // A device, a FIFO or a directory at the path is no bindings file to replace: a
        // config naming /dev/null would otherwise turn the machine's /dev/null into a file.
        Ok(m) if !m.is_file() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file: not replaced",
            ))
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let result = (|| {
        // A temp file left by a process that had this id before, or anything else put at its
        // name (a link would be followed): never written into, but replaced.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut options = File::options();
        options.write(true).create_new(true);
        if old.is_some() {
            // Readable by no one else until it has the old file's owner and mode.
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        if let Some(old) = &old {
            keep_owner_and_mode(&f, old, path)?;
        }
        f.write_all(content)?;
        f.sync_all()?;
        last_check()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(file = %path.display(), error = %e,
            "file replaced, but its directory could not be synced: a crash now may undo it");
    }
    Ok(())
}

/// Where the bindings file at `path` keeps its lock and audit log: beside the file a symlink
/// at `path` names, not beside the link. Two configs may name one file, one through a link:
/// a lock and a log each would let their writers lose each other's updates, and split the
/// history in two.
fn home(path: &Path) -> PathBuf {
    resolve_links(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The audit log of the bindings file at `path` (see [`home`]).
fn audit_path(path: &Path) -> PathBuf {
    audit_log::path_for(&home(path))
}

/// `path` with every symlink at it followed, to the file it names (which may not exist yet).
/// Links in its directories need no following: the rename happens in the same directory.
fn resolve_links(path: &Path) -> std::io::Result<PathBuf> {
    // As the kernel's limit (ELOOP).
    const MAX_LINKS: usize = 40;
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p)?;
                // A relative target is relative to the link's directory (an absolute one
                // replaces it in `join`).
                p = match p.parent() {
                    Some(d) => d.join(target),
                    None => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other(format!(
        "{}: more than {MAX_LINKS} symbolic links to follow",
        path.display()
    )))
}

/// Gives the new file `f` the owner, group and permissions of the file it replaces (`old`,
/// at `path`). Only root may give a file to another user; other writers keep the group if
/// they are in it. What cannot be kept is logged, not fatal: the write is the operator's,
/// and the file the same file to them; but a router reading it under another user may no
/// longer be able to. Unless the old file's owner surely could not read the new one (by the
/// mode and the groups the system names): a router running as that owner would refuse every
/// later version, so the write is refused instead.
fn keep_owner_and_mode(f: &File, old: &std::fs::Metadata, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};
    let owner = |m: &std::fs::Metadata| (m.uid(), m.gid());
    if owner(&f.metadata()?) != owner(old) && fchown(f, Some(old.uid()), Some(old.gid())).is_err() {
        let _ = fchown(f, None, Some(old.gid()));
        let now = owner(&f.metadata()?);
        if now != owner(old) {
            if owner_could_read(old.uid(), now, old.mode(), &in_group) == Some(false) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "it belongs to UID {}, and written by this user it would belong to \
                         {}:{} with mode {:o}, which its owner (a router running as it) could \
                         not read; nothing written: write as UID {} or root, or give the file a \
                         group its owner is in and this user too (readable to the group)",
                        old.uid(),
                        now.0,
                        now.1,
                        old.mode() & 0o7777,
                        old.uid()
                    ),
                ));
            }
            tracing::warn!(file = %path.display(),
                was = %format!("{}:{}", old.uid(), old.gid()),
                now = %format!("{}:{}", now.0, now.1),
                "the file's owner or group could not be kept (only root may give a file \
                 away); check that the routers reading it still may");
        }
    }
    // After the owner: changing it may clear set-id bits.
    f.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
}

/// Whether user `uid` could read a file owned by `file_owner` (`(uid, gid)`) with `mode`:
/// `None` when that cannot be told (a user or group the system does not name). `member` says
/// whether a user is in a group.
fn owner_could_read(
    uid: u32,
    file_owner: (u32, u32),
    mode: u32,
    member: &dyn Fn(u32, u32) -> Option<bool>,
) -> Option<bool> {
    if uid == 0 || mode & 0o004 != 0 || (uid == file_owner.0 && mode & 0o400 != 0) {
        return Some(true);
    }
    if mode & 0o040 == 0 {
        return Some(false);
    }
    member(uid, file_owner.1)
}

/// Whether user `uid` is in group `gid` (its primary group or a listed member), by the
/// system's user and group databases; `None` when either does not name them.
fn in_group(uid: u32, gid: u32) -> Option<bool> {
    use nix::unistd::{Gid, Group, Uid, User};
    let user = User::from_uid(Uid::from_raw(uid)).ok()??;
    if user.gid == Gid::from_raw(gid) {
        return Some(true);
    }
    let group = Group::from_gid(Gid::from_raw(gid)).ok()??;
    Some(group.mem.contains(&user.name))
}

fn now_rfc3339() -> (time::OffsetDateTime, String) {
    let now = time::OffsetDateTime::now_utc();
    let text = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    (now, text)
}

/// Applies a mutation to the current binding, producing the new one (`None` = deleted).
pub(crate) fn mutate(
    tenant: &TenantId,
    current: Option<&Binding>,
    mutation: Mutation,
    revision: Revision,
    at: time::OffsetDateTime,
) -> Result<Option<Binding>, AdminError> {
    let mut next = match (mutation, current) {
        (Mutation::Put(b), _) => {
            if b.tenant_id != *tenant {
                return Err(AdminError::Invalid {
                    tenant: tenant.clone(),
                    reason: format!("record is for tenant {}", b.tenant_id),
                });
            }
            *b
        }
        (Mutation::Delete, Some(_)) => return Ok(None),
        (_, None) => return Err(AdminError::NotFound(tenant.clone())),
        (
            Mutation::Rebind {
                instance_id,
                instance_url,
                api_url,
            },
            Some(cur),
        ) => {
            let mut b = cur.clone();
            b.instance_id = instance_id;
            b.instance_url = instance_url;
            if let Some(api) = api_url {
                b.api_url = api;
            }
            b
        }
        (Mutation::SetStatus(status), Some(cur)) => {
            let mut b = cur.clone();
            b.status = status;
            b
        }
    };
    next.revision = revision;
    next.updated_at = Some(at);
    Ok(Some(next))
}

/// The audit log's name for a mutation.
pub(crate) fn op_name(m: &Mutation) -> &'static str {
    match m {
        Mutation::Put(_) => "put",
        Mutation::Rebind { .. } => "rebind",
        Mutation::SetStatus(_) => "set-status",
        Mutation::Delete => "delete",
    }
}

#[async_trait]
impl BindingAdmin for FileStore {
    async fn get(&self, tenant: &TenantId) -> Result<Option<Binding>, AdminError> {
        let parsed = self.parsed()?;
        // A refused record is not "not found": say what is wrong with it.
        if let Some(p) = parsed
            .problems
            .iter()
            .find(|p| p.tenant_id().as_ref() == Some(tenant))
        {
            return Err(AdminError::Corrupt(format!(
                "{}: {p}; {FIX_A_RECORD}",
                self.origin()
            )));
        }
        Ok(parsed
            .bindings
            .iter()
            .find(|b| b.tenant_id == *tenant)
            .map(|b| b.as_ref().clone()))
    }

    async fn list(&self) -> Result<Listing, AdminError> {
        let parsed = self.parsed()?;
        Ok(Listing {
            revision: Revision(parsed.revision.unwrap_or(0)),
            bindings: sorted_by_tenant(&parsed.bindings),
            left_out: parsed
                .problems
                .iter()
                .map(|p| format!("{}: {p}", self.origin()))
                .collect(),
        })
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        mutation: Mutation,
        expect: Option<Revision>,
        actor: &Actor,
    ) -> Result<(Revision, Option<Binding>), AdminError> {
        let path = self.writable_path()?.to_path_buf();
        let tenant = tenant.clone();
        let actor = actor.clone();
        let wiped = self.wiped_store;
        let task = move || apply_locked(&path, &tenant, mutation, expect, &actor, wiped);
        tokio::task::spawn_blocking(task)
            .await
            .map_err(|e| AdminError::Unavailable(format!("write task failed: {e}")))?
    }

    async fn import(
        &self,
        bindings: Vec<Arc<Binding>>,
        actor: &Actor,
        _source: ImportSource,
    ) -> Result<u64, ImportError> {
        let path = self
            .writable_path()
            .map_err(ImportError::nothing)?
            .to_path_buf();
        let actor = actor.clone();
        let wiped = self.wiped_store;
        tokio::task::spawn_blocking(move || import_locked(&path, bindings, &actor, wiped))
            .await
            .map_err(|e| {
                ImportError::nothing(AdminError::Unavailable(format!("import task failed: {e}")))
            })?
    }

    async fn history(&self, tenant: &TenantId) -> Result<History, AdminError> {
        // The embedded demo store is never written, so it has no history: a read, which
        // works on it like every other read.
        let Some(bindings) = self.path.as_deref() else {
            return Ok(History::default());
        };
        let path = audit_path(bindings);
        // Bytes: a line that is not UTF-8 is one unreadable entry, not a failed read.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(AdminError::Unavailable(format!("{}: {e}", path.display()))),
        };
        // Read without the write lock: a last line without its newline is being written (or
        // was torn by a crash, and the next write cuts it), so it is not history yet.
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(&[][..], |i| &bytes[..i]);
        let mut out = History::default();
        for (i, line) in complete
            .split(|&b| b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.trim_ascii().is_empty())
        {
            match serde_json::from_slice::<AuditEntry>(line) {
                Ok(entry) if entry.tenant == tenant.as_str() => out.entries.push(entry),
                Ok(_) => {}
                // Whose it was cannot be told, so every tenant's history names it.
                Err(e) => out
                    .unreadable
                    .push(format!("{}:{}: {e}", path.display(), i + 1)),
            }
        }
        Ok(out)
    }
}

/// Puts every binding in one step: one audit append and one rewrite of the file, all or
/// nothing. Tenants are found by an index and domains checked once on the result, so a
/// large import costs one pass, where one write per tenant re-read and rewrote the whole
/// file each time. Domains are checked on the final state: a domain may move between two
/// tenants of the same import whatever their order.
fn import_locked(
    path: &Path,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
    wiped: WipedStore,
) -> Result<u64, ImportError> {
    let (failed, whole) = (ImportError::at, ImportError::nothing);
    if bindings.is_empty() {
        return Ok(0);
    }
    let Locked {
        lock,
        mut doc,
        mut log,
        high,
    } = lock_for_write(path, wiped).map_err(whole)?;
    let mut at = doc.places();
    let (now, now_text) = now_rfc3339();
    let mut revision = high;
    let mut entries = Vec::with_capacity(bindings.len());
    let written = bindings.len() as u64;
    let imported: std::collections::HashSet<TenantId> =
        bindings.iter().map(|b| b.tenant_id.clone()).collect();
    // The places of extra records of a tenant listed more than once: an imported record
    // replaces them all, as a put does. Removed at the end, so `at` stays right meanwhile.
    let mut extra = Vec::new();
    // Custom domains each imported tenant claims (that its stored record did not hold).
    let mut claims: Vec<(TenantId, Vec<String>)> = Vec::new();
    for b in bindings {
        let tenant = b.tenant_id.clone();
        let (pos, several) = match at.get_mut(tenant.as_str()) {
            None => (None, false),
            Some(places) => {
                let several = places.len() > 1;
                extra.extend(places.drain(1..));
                (places.first().copied(), several)
            }
        };
        // An invalid stored record is replaced, as `tenant put` would; of several, none was
        // the tenant's record.
        let current = pos
            .filter(|_| !several)
            .and_then(|i| parse_record(&doc.bindings[i]).ok());
        let actual = current.as_ref().map_or(0, |c| c.revision.get());
        revision = revision.max(actual).checked_add(1).ok_or_else(|| {
            failed(
                &tenant,
                AdminError::Corrupt(format!(
                    "{}: revisions are exhausted (the file or its audit log holds u64::MAX)",
                    path.display()
                )),
            )
        })?;
        let claimed: Vec<String> = b
            .domains
            .iter()
            .filter(|d| !current.as_ref().is_some_and(|c| c.domains.contains(d)))
            .map(|d| d.as_str().to_owned())
            .collect();
        if !claimed.is_empty() {
            claims.push((tenant.clone(), claimed));
        }
        let put = Mutation::Put(Box::new(Arc::unwrap_or_clone(b)));
        let next = mutate(&tenant, current.as_ref(), put, Revision(revision), now)
            .map_err(|e| failed(&tenant, e))?
            // A put always leaves a binding.
            .ok_or_else(|| failed(&tenant, AdminError::NotFound(tenant.clone())))?;
        let record = next.to_record();
        let value = serde_json::to_value(&record).map_err(|e| {
            let reason = e.to_string();
            let invalid = AdminError::Invalid {
                tenant: tenant.clone(),
                reason,
            };
            failed(&tenant, invalid)
        })?;
        match pos {
            Some(i) => doc.bindings[i] = value,
            None => {
                at.insert(tenant.to_string(), vec![doc.bindings.len()]);
                doc.bindings.push(value);
            }
        }
        entries.push(AuditEntry {
            tenant: tenant.to_string(),
            revision,
            at: now_text.clone(),
            actor: actor.name.clone(),
            reason: actor.reason.clone(),
            op: IMPORT.to_owned(),
            old: current.as_ref().map(Binding::to_record),
            new: Some(record),
        });
    }
    extra.sort_unstable();
    for &i in extra.iter().rev() {
        doc.bindings.remove(i);
    }
    if let Some((tenant, claimed)) = claims.first() {
        let refused = doc.refused_tenants(&|t| imported.contains(t));
        if !refused.is_empty() {
            let claimed: Vec<&str> = claimed.iter().map(String::as_str).collect();
            return Err(failed(tenant, claim_unchecked(tenant, &claimed, &refused)));
        }
    }
    let mut owners: std::collections::HashMap<String, TenantId> = std::collections::HashMap::new();
    for b in doc.valid() {
        for d in &b.domains {
            match owners.insert(d.as_str().to_owned(), b.tenant_id.clone()) {
                // A clash between two records the import does not touch is not its business.
                Some(other)
                    if other != b.tenant_id
                        && (imported.contains(&other) || imported.contains(&b.tenant_id)) =>
                {
                    // Name the imported tenant first.
                    let (tenant, owner) = if imported.contains(&b.tenant_id) {
                        (b.tenant_id.clone(), other)
                    } else {
                        (other, b.tenant_id.clone())
                    };
                    let reason = format!("domain {d} also belongs to tenant {owner}");
                    return Err(failed(
                        &tenant,
                        AdminError::Invalid {
                            tenant: tenant.clone(),
                            reason,
                        },
                    ));
                }
                _ => {}
            }
        }
    }
    doc.revision = Some(revision);
    commit(path, &lock, &doc, &mut log, &entries).map_err(whole)?;
    Ok(written)
}

/// The audit `op` of one tenant of a one-step import.
const IMPORT: &str = "import";

/// The audit `op` of a logged change that was never made.
const NOT_MADE: &str = "not-made";

/// The store held for one write: its lock (released on drop), the document, the audit log,
/// and the highest revision ever handed out.
struct Locked {
    lock: HeldLock,
    doc: RawDoc,
    log: AuditLog,
    high: u64,
}

/// Gives a file the admin CLI just created beside the bindings file (its lock, its audit log)
/// the bindings file's owner, group and permissions (see [`keep_owner_and_mode`]): the admins
/// who may write the one may write the others. Created with the creator's group and the
/// umask's mode (0644), the first writer (root, say) left every other admin of a shared
/// group unable to write at all. Best effort: a file store with no bindings file yet keeps
/// what the creation gave.
fn share_ownership(created: &File, created_path: &Path, bindings: &Path) {
    if let Ok(meta) = std::fs::metadata(bindings) {
        if let Err(e) = keep_owner_and_mode(created, &meta, created_path) {
            tracing::warn!(file = %created_path.display(), error = %e,
                "the bindings file's permissions could not be given to this file");
        }
    }
}

/// Takes the exclusive advisory lock on `<file>.lock`, so concurrent writers (several
/// `nexus-edge tenant` commands) never lose an update, then reads the file and its audit log.
/// Logged changes the file does not hold get their `not-made` entries here.
fn lock_for_write(path: &Path, wiped: WipedStore) -> Result<Locked, AdminError> {
    let mut lock_path = home(path).into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock_failed =
        |e: std::io::Error| AdminError::Unavailable(format!("{}: {e}", lock_path.display()));
    // The directory first: a lock file can be removed (taken for a stale empty file) while a
    // writer holds it, and the next writer then locks a new one and runs beside it; the
    // directory cannot be removed from under its files. The lock file stays, so writers of
    // versions that lock only it are kept out as before (and it is always taken second, so
    // the two orders never meet).
    let home = home(path);
    let dir = home
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir_failed = |e: std::io::Error| AdminError::Unavailable(format!("{}: {e}", dir.display()));
    let dir_lock = File::open(dir).map_err(dir_failed)?;
    wait_for_lock(&dir_lock, dir).map_err(dir_failed)?;
    let mut tries = 0;
    let lock = loop {
        let new_lock = !lock_path.exists();
        let lock = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(lock) => lock,
            // An advisory lock needs no write access: one another admin created, readable to
            // this one, serves as well.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                File::open(&lock_path).map_err(|_| lock_failed(e))?
            }
            Err(e) => return Err(lock_failed(e)),
        };
        if new_lock {
            share_ownership(&lock, &lock_path, path);
            // Said in it: an empty file looks like a stale one to remove.
            let _ = (&lock).write_all(LOCK_NOTE.as_bytes());
        }
        wait_for_lock(&lock, &lock_path).map_err(lock_failed)?;
        // Removed (or replaced) while this writer waited for it: another writer may hold the
        // file now at that name, and would not be kept out by this one. Taken again.
        if is_at(&lock, &lock_path) || tries >= 10 {
            break lock;
        }
        tries += 1;
    };
    let lock = HeldLock {
        file: lock,
        path: lock_path,
        _dir: dir_lock,
    };
    lock.still_ours()?;

    remove_left_temp_files(&home);
    let doc = RawDoc::read(path)?;
    let audit = audit_path(path);
    let unavailable =
        |e: std::io::Error| AdminError::Unavailable(format!("{}: {e}", audit.display()));
    let new_log = !audit.exists();
    let mut log = AuditLog::open(audit.clone()).map_err(unavailable)?;
    if new_log {
        share_ownership(log.file(), &audit, path);
    }
    let mut high = doc.high_revision();
    let last = match log.last_entry().map_err(unavailable)? {
        Tail::Entry(last) => Some(*last),
        Tail::Empty => None,
        // Lines, none an entry: the log may have recorded changes, so a missing file may be
        // a lost one. With the file there, its own counter numbers on.
        Tail::Unreadable if doc.missing && wiped == WipedStore::Refuse => {
            return Err(AdminError::Corrupt(format!(
                "{}: the bindings file is missing, and its audit log {} is not empty, yet no \
                 line of it can be read: whether it recorded changes (and the file was lost) \
                 cannot be told. Put the file back, or mend the log or move it aside; to write \
                 anyway, pass --start-new-history",
                path.display(),
                audit.display()
            )));
        }
        Tail::Unreadable => None,
    };
    if let Some(last) = last {
        if doc.missing && wiped == WipedStore::Refuse {
            return Err(AdminError::FileLost {
                path: path.display().to_string(),
                logged: Revision(last.revision),
            });
        }
        // Revisions past the file's counter are changes the file does not hold: their writer
        // logged them and stopped before making them (or the file was since replaced, e.g.
        // from a backup). A file without the counter, older or hand-written, cannot tell.
        if doc.revision.is_some() && last.revision > high {
            let unmade = log.unmade_after(high, NOT_MADE).map_err(unavailable)?;
            let (_, at) = now_rfc3339();
            let notes: Vec<AuditEntry> = unmade
                .into_iter()
                .map(|e| AuditEntry {
                    tenant: e.tenant,
                    revision: e.revision,
                    at: at.clone(),
                    actor: "nexus-edge".to_owned(),
                    reason: Some(
                        "the bindings file does not hold this change (its writer stopped before \
                         writing it, or the file was replaced since)"
                            .to_owned(),
                    ),
                    op: NOT_MADE.to_owned(),
                    old: None,
                    new: None,
                })
                .collect();
            if !notes.is_empty() {
                tracing::warn!(file = %audit.display(), changes = notes.len(),
                    "audited changes were never made; recording that");
                log.append_all(&notes).map_err(unavailable)?;
            }
        }
        // Either way the numbers were handed out: never again.
        high = high.max(last.revision);
    }
    Ok(Locked {
        lock,
        doc,
        log,
        high,
    })
}

/// What a new lock file says, so that no one takes it for a stale file to remove.
const LOCK_NOTE: &str = "The lock of this bindings file's writers (nexus-edge tenant \
commands). Do not remove it: a writer holding it would no longer keep others out.\n";

/// Removes the temp files writers killed mid-write left beside the bindings file at `home`
/// (`.<name>.tmp.<pid>`): with both locks held no writer of any version is writing one.
fn remove_left_temp_files(home: &Path) {
    let (Some(dir), Some(name)) = (home.parent(), home.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let left = entry.file_name().to_string_lossy().starts_with(&prefix)
            && entry.file_type().is_ok_and(|t| t.is_file());
        if left {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Takes the exclusive advisory lock on `file` (at `at`), saying so when it must wait: a
/// writer that hangs holds every other, which waited in silence.
fn wait_for_lock(file: &File, at: &Path) -> std::io::Result<()> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::warn!(lock = %at.display(),
                "another writer holds the bindings file's lock; waiting for it");
            file.lock()
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The locks a writer holds (the bindings file's directory, and its lock file), and where
/// the lock file is.
struct HeldLock {
    /// Locked (the lock is released when it is closed).
    file: File,
    path: PathBuf,
    /// The directory, locked (see [`lock_for_write`]).
    _dir: File,
}

impl HeldLock {
    /// Whether the file at the lock's path is still the one this writer holds locked. One
    /// removed meanwhile (a cleanup, an operator taking it for stale) let the next writer
    /// create another and lock that: two writers at once, and the later rename undid the
    /// other's reported change.
    fn still_ours(&self) -> Result<(), AdminError> {
        if is_at(&self.file, &self.path) {
            return Ok(());
        }
        Err(AdminError::Unavailable(format!(
            "{}: the lock file was removed or replaced while this writer held it: another \
             writer may be writing; nothing written, run the command again (and leave the \
             lock file in place)",
            self.path.display()
        )))
    }
}

/// Whether the open `file` is the file at `path` (the same inode).
fn is_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |m: std::fs::Metadata| (m.dev(), m.ino());
    matches!(
        (file.metadata().map(id), std::fs::metadata(path).map(id)),
        (Ok(a), Ok(b)) if a == b
    )
}

/// Makes a change held under `lock`: its audit `entries` first, then `doc` as the file, so no
/// change is ever made without its lines; if the file cannot be written, the lines are cut off
/// again. The lock must still be this writer's before the lines and again right before the
/// file is replaced, and the file the one read then (see [`HeldLock::still_ours`],
/// [`RawDoc::unchanged`]).
fn commit(
    path: &Path,
    lock: &HeldLock,
    doc: &RawDoc,
    log: &mut AuditLog,
    entries: &[AuditEntry],
) -> Result<(), AdminError> {
    let audit = audit_path(path);
    let unavailable =
        |e: std::io::Error| AdminError::Unavailable(format!("{}: {e}", audit.display()));
    // The lock before the audit line; the file once, right before the rename (reading it
    // again here too, when recently written, would be a second read of the same bytes).
    lock.still_ours()?;
    let before = log.append_all(entries).map_err(unavailable)?;
    let made = doc.write(path, || {
        lock.still_ours()?;
        doc.unchanged(path)
    });
    if let Err(e) = made {
        if let Err(cut) = log.cut(before) {
            tracing::error!(file = %log.path().display(), error = %cut,
                "a failed change's audit lines could not be removed (the next write marks \
                 them not made)");
        }
        return Err(e);
    }
    Ok(())
}

/// One change, read-modify-write, under the store's lock.
fn apply_locked(
    path: &Path,
    tenant: &TenantId,
    mutation: Mutation,
    expect: Option<Revision>,
    actor: &Actor,
    wiped: WipedStore,
) -> Result<(Revision, Option<Binding>), AdminError> {
    let Locked {
        lock,
        mut doc,
        mut log,
        high,
    } = lock_for_write(path, wiped)?;
    let places = doc.positions(tenant);
    // A tenant listed more than once has no one current record: a whole new record (a put)
    // or none (a delete) settles it, and is what the operator asked for; a change of one
    // field, or one that expects a revision, would have to pick a record.
    let pos = match places[..] {
        [] => None,
        [i] => Some(i),
        _ if expect.is_none() && matches!(mutation, Mutation::Put(_) | Mutation::Delete) => None,
        _ => return Err(listed_twice(path, tenant, &places)),
    };
    let current = match pos {
        None => None,
        Some(i) => Some(parse_record(&doc.bindings[i]).map_err(|(_, m)| {
            AdminError::Corrupt(format!(
                "the stored record of {tenant} is invalid ({m}); {FIX_A_RECORD}"
            ))
        })),
    };
    // A put may replace an invalid record, and a delete remove it; other operations need a
    // valid one.
    let current = match (current, &mutation) {
        (Some(Err(_)), Mutation::Put(_) | Mutation::Delete) => None,
        (Some(Err(e)), _) => return Err(e),
        (Some(Ok(b)), _) => Some(b),
        (None, _) => None,
    };
    let actual = current.as_ref().map_or(Revision::ZERO, |b| b.revision);
    if let Some(expected) = expect {
        // 0 says "must not exist", which a record without a revision does not satisfy (one
        // with a revision gets the usual conflict below, naming it).
        if expected == Revision::ZERO && actual == Revision::ZERO && pos.is_some() {
            return Err(AdminError::Exists {
                tenant: tenant.clone(),
            });
        }
        if expected != actual {
            return Err(AdminError::Conflict {
                tenant: tenant.clone(),
                expected,
                actual,
            });
        }
    }
    let revision = high
        .max(actual.get())
        .checked_add(1)
        .map(Revision)
        .ok_or_else(|| {
            AdminError::Corrupt(format!(
                "{}: revisions are exhausted (the file or its audit log holds u64::MAX)",
                path.display()
            ))
        })?;
    doc.revision = Some(revision.get());
    let (at, at_text) = now_rfc3339();
    let op = op_name(&mutation);
    // Only invalid records, or several, are in the file (`places`) without a current binding.
    let next = if matches!(mutation, Mutation::Delete) && !places.is_empty() && current.is_none() {
        None
    } else {
        mutate(tenant, current.as_ref(), mutation, revision, at)?
    };
    if let Some(n) = &next {
        let claimed: Vec<&str> = n
            .domains
            .iter()
            .filter(|d| !current.as_ref().is_some_and(|c| c.domains.contains(d)))
            .map(|d| d.as_str())
            .collect();
        if !claimed.is_empty() {
            let refused = doc.refused_tenants(&|t| t == tenant);
            if !refused.is_empty() {
                return Err(claim_unchecked(tenant, &claimed, &refused));
            }
        }
        for other in doc.valid().iter().filter(|b| b.tenant_id != *tenant) {
            if let Some(d) = n.domains.iter().find(|d| other.domains.contains(d)) {
                return Err(AdminError::Invalid {
                    tenant: tenant.clone(),
                    reason: format!("domain {d} already belongs to tenant {}", other.tenant_id),
                });
            }
        }
    }
    let new_value = next
        .as_ref()
        .map(|b| serde_json::to_value(b.to_record()))
        .transpose()
        .map_err(|e| AdminError::Invalid {
            tenant: tenant.clone(),
            reason: e.to_string(),
        })?;
    // The new record takes the first place the tenant had; every other is removed.
    for &i in places.iter().skip(usize::from(new_value.is_some())).rev() {
        doc.bindings.remove(i);
    }
    match (places.first(), new_value) {
        (Some(&i), Some(v)) => doc.bindings[i] = v,
        (None, Some(v)) => doc.bindings.push(v),
        (Some(_), None) => {}
        (None, None) => return Err(AdminError::NotFound(tenant.clone())),
    }
    let entry = AuditEntry {
        tenant: tenant.to_string(),
        revision: revision.get(),
        at: at_text,
        actor: actor.name.clone(),
        reason: actor.reason.clone(),
        op: op.to_owned(),
        old: current.as_ref().map(Binding::to_record),
        new: next.as_ref().map(Binding::to_record),
    };
    commit(path, &lock, &doc, &mut log, &[entry])?;
    Ok((revision, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_is_trusted_only_once_its_change_time_has_settled() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, "one").expect("write");
        let s = stamp(&path).expect("stamp");
        let changed =
            SystemTime::UNIX_EPOCH + Duration::new(s.changed.0 as u64, s.changed.1 as u32);
        assert_eq!(
            settled(Some(s.clone()), changed + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            settled(Some(s.clone()), changed + RACY_WINDOW),
            Some(s.clone())
        );
        // A write by rename is another file, whatever its size and times.
        let tmp = dir.path().join("g");
        std::fs::write(&tmp, "two").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        let after = stamp(&path).expect("stamp");
        assert_ne!(after.file, s.file);
        assert_ne!(after, s);
    }

    #[test]
    fn only_a_regular_file_is_read() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("bindings.json");
        std::fs::write(&file, "{}").expect("write");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_regular(&file).expect("file"), b"{}");
        assert_eq!(read_regular(&link).expect("link to a file"), b"{}");
        // A FIFO: reading it would wait for a writer that never comes.
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        for path in [&fifo, &dir.path().to_path_buf()] {
            let e = read_regular(path).expect_err("not a regular file");
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::InvalidInput,
                "{}",
                path.display()
            );
        }
    }

    /// Makes a FIFO at `path`: what a read must not wait on, nor a write replace.
    fn mkfifo(path: &Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
    }

    #[test]
    fn only_a_regular_file_or_none_is_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
        for path in [&fifo, &link, &dir.path().to_path_buf()] {
            let e = write_atomically(path, b"{}").expect_err("refused");
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::InvalidInput,
                "{}",
                path.display()
            );
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo)
            .expect("still there")
            .file_type()
            .is_fifo());
        let file = dir.path().join("bindings.json");
        write_atomically(&file, b"{}").expect("a new file");
        write_atomically(&file, b"{ }").expect("a file replaced");
        assert_eq!(std::fs::read(&file).expect("read"), b"{ }");
    }

    fn record(tenant: &str, url: &str) -> Binding {
        parse_record(&serde_json::json!({
            "tenant_id": tenant, "subscription_id": "s", "instance_id": "i", "instance_url": url,
            "status": "active", "plan": "team", "region": "eu"
        }))
        .expect("record")
    }

    fn put(
        path: &Path,
        tenant: &str,
        url: &str,
    ) -> Result<(Revision, Option<Binding>), AdminError> {
        let actor = Actor {
            name: "tester".into(),
            reason: None,
        };
        apply_locked(
            path,
            &TenantId::parse(tenant).expect("tenant"),
            Mutation::Put(Box::new(record(tenant, url))),
            None,
            &actor,
            WipedStore::Refuse,
        )
    }

    fn audited(path: &Path) -> Vec<String> {
        std::fs::read_to_string(audit_path(path))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_writer_whose_lock_file_was_removed_writes_nothing_and_keeps_the_next_out() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        // A writer holds the lock; the lock file is removed from under it (taken for a stale
        // file). The next writer made a new one, locked it, and ran beside the first.
        let held = lock_for_write(&path, WipedStore::Refuse).expect("locked");
        let lock_text = std::fs::read_to_string(&held.lock.path).expect("lock file");
        assert!(lock_text.contains("Do not remove it"), "{lock_text}");
        std::fs::remove_file(&held.lock.path).expect("removed");
        // It waits for the first (the directory's lock is still held), and says so.
        let second = put_once_waiting(&path, "http://10.0.0.2");
        // The first writer's change is refused: the lock file it holds is gone.
        let Locked {
            lock, doc, mut log, ..
        } = held;
        let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
        assert!(e.to_string().contains("lock file was removed"), "{e}");
        drop((lock, log));
        second
            .join()
            .expect("second")
            .expect("the second writer, after the first");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(text.contains("http://10.0.0.2"), "{text}");
        assert_eq!(audited(&path).len(), 2);
    }

    #[test]
    fn a_file_changed_since_it_was_read_is_not_replaced() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        let Locked {
            lock, doc, mut log, ..
        } = lock_for_write(&path, WipedStore::Refuse).expect("locked");
        // A hand edit while the write is made: in place (same length), then by rename.
        let text = std::fs::read_to_string(&path).expect("file");
        let edited = text.replace("10.0.0.1", "10.0.0.9");
        std::fs::write(&path, &edited).expect("edit in place");
        let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
        assert!(e.to_string().contains("the file changed"), "{e}");
        write_atomically(&path, edited.replace("10.0.0.9", "10.0.0.8").as_bytes())
            .expect("edit by rename");
        let e = commit(&path, &lock, &doc, &mut log, &[]).expect_err("refused");
        assert!(e.to_string().contains("the file changed"), "{e}");
        assert!(std::fs::read_to_string(&path)
            .expect("file")
            .contains("10.0.0.8"));
        drop(lock);
        // Read again under the lock, the change is made over the edit.
        put(&path, "globex", "http://10.0.0.3").expect("a later write");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(
            text.contains("10.0.0.8") && text.contains("10.0.0.3"),
            "{text}"
        );
    }

    #[test]
    fn audit_lines_another_writer_appended_after_are_not_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        let entry = |revision| AuditEntry {
            tenant: "acme".into(),
            revision,
            at: "2026-12-05T00:00:00Z".into(),
            actor: "tester".into(),
            reason: None,
            op: "put".into(),
            old: None,
            new: None,
        };
        let mut a = AuditLog::open(path.clone()).expect("log");
        let mut b = AuditLog::open(path.clone()).expect("log");
        let before = a.append_all(&[entry(1)]).expect("a");
        b.append_all(&[entry(2)]).expect("b");
        assert!(a.cut(before).is_err());
        assert_eq!(
            std::fs::read_to_string(&path).expect("log").lines().count(),
            2
        );
        // With nothing after its lines, they are cut.
        let before = a.append_all(&[entry(3)]).expect("a");
        a.cut(before).expect("cut");
        assert_eq!(
            std::fs::read_to_string(&path).expect("log").lines().count(),
            2
        );
    }

    /// Adds `record` to the file by hand (as an operator's editor would).
    fn add_by_hand(path: &Path, record: serde_json::Value) {
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("file")).expect("json");
        doc["bindings"]
            .as_array_mut()
            .expect("bindings")
            .push(record);
        std::fs::write(path, doc.to_string()).expect("write");
    }

    #[test]
    fn no_change_is_written_into_a_file_routers_refuse_whole() {
        // A record that names no valid tenant: routers refuse the whole file while it is there,
        // so a change written into it was audited and reported made, and never served.
        for bad in [
            serde_json::json!({ "tenant_id": "Acme", "status": "active" }),
            serde_json::json!({ "status": "active" }),
        ] {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("bindings.json");
            put(&path, "acme", "http://10.0.0.1").expect("first write");
            add_by_hand(&path, bad.clone());
            let before = std::fs::read(&path).expect("file");
            let e = put(&path, "globex", "http://10.0.0.2").expect_err("refused");
            assert!(
                e.to_string().contains("names no valid tenant"),
                "{bad}: {e}"
            );
            assert_eq!(std::fs::read(&path).expect("file"), before);
            assert_eq!(audited(&path).len(), 1, "{bad}");
        }
    }

    #[test]
    fn a_custom_domain_is_not_claimed_past_a_record_routers_refuse() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        // globex's record broken by hand: routers keep its last good binding, and whatever
        // custom domains it had, which the file no longer shows.
        let mut broken =
            serde_json::to_value(record("globex", "http://10.0.0.2").to_record()).expect("json");
        broken["domains"] = serde_json::json!(["shop.globex.test"]);
        broken["status"] = serde_json::json!("actve");
        add_by_hand(&path, broken);
        let actor = Actor {
            name: "tester".into(),
            reason: None,
        };
        let mut claiming = record("acme", "http://10.0.0.1");
        claiming.domains =
            vec![crate::model::DomainName::parse("shop.globex.test").expect("domain")];
        let acme = TenantId::parse("acme").expect("tenant");
        let e = apply_locked(
            &path,
            &acme,
            Mutation::Put(Box::new(claiming.clone())),
            None,
            &actor,
            WipedStore::Refuse,
        )
        .expect_err("refused");
        assert!(
            e.to_string()
                .contains("while routers refuse the record(s) of globex"),
            "{e}"
        );
        let e = import_locked(&path, vec![Arc::new(claiming)], &actor, WipedStore::Refuse)
            .expect_err("refused");
        assert!(format!("{e:?}").contains("globex"), "{e:?}");
        // Writes that claim no new domain go on.
        put(&path, "acme", "http://10.0.0.3").expect("no domain claimed");

        // A record refused because it claims a custom domain another record holds counts
        // too: which of the two routers refuse, the file does not say.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        let mut initech = record("initech", "http://10.0.0.4");
        initech.domains = vec![crate::model::DomainName::parse("app.initech.test").expect("d")];
        apply_locked(
            &path,
            &initech.tenant_id.clone(),
            Mutation::Put(Box::new(initech)),
            None,
            &actor,
            WipedStore::Refuse,
        )
        .expect("initech");
        let mut hooli =
            serde_json::to_value(record("hooli", "http://10.0.0.5").to_record()).expect("json");
        hooli["domains"] = serde_json::json!(["app.initech.test"]);
        add_by_hand(&path, hooli);
        let mut claiming = record("acme", "http://10.0.0.1");
        claiming.domains = vec![crate::model::DomainName::parse("shop.acme.test").expect("d")];
        let e = apply_locked(
            &path,
            &acme,
            Mutation::Put(Box::new(claiming)),
            None,
            &actor,
            WipedStore::Refuse,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("hooli, initech"), "{e}");
    }

    #[test]
    fn a_file_its_owner_could_no_longer_read_is_told_by_mode_and_groups() {
        // (uid 1000 is in group 50 only)
        let member = |uid: u32, gid: u32| -> Option<bool> {
            match (uid, gid) {
                (1000, 50) => Some(true),
                (1000, _) => Some(false),
                _ => None,
            }
        };
        let could = |uid, owner, mode| owner_could_read(uid, owner, mode, &member);
        // Root reads anything; a file readable to others, anyone.
        assert_eq!(could(0, (2000, 2000), 0o600), Some(true));
        assert_eq!(could(1000, (2000, 2000), 0o644), Some(true));
        // Through the group: in it, or not (the probe's case: nobody's file, 0640, rewritten
        // by an admin of another group), or unknown.
        assert_eq!(could(1000, (2000, 50), 0o640), Some(true));
        assert_eq!(could(1000, (2000, 2000), 0o640), Some(false));
        assert_eq!(could(3000, (2000, 2000), 0o640), None);
        // No group read: not readable.
        assert_eq!(could(1000, (2000, 50), 0o600), Some(false));
        // Root is in group 0 by the system's own databases.
        assert_eq!(in_group(0, 0), Some(true));
    }

    /// Log lines written on the thread that holds the returned guard, kept in the buffer.
    fn captured() -> (
        Arc<std::sync::Mutex<Vec<u8>>>,
        impl FnOnce() -> tracing::subscriber::DefaultGuard,
    ) {
        #[derive(Clone)]
        struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Buffer(Arc::clone(&buffer));
        let install = move || {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_default(subscriber)
        };
        (buffer, install)
    }

    /// Starts a writer of acme's record to `url` that must wait for the lock, and returns
    /// once it has said it waits (polled, with a deadline).
    fn put_once_waiting(
        path: &Path,
        url: &'static str,
    ) -> std::thread::JoinHandle<Result<(Revision, Option<Binding>), AdminError>> {
        let (said, install) = captured();
        let writer = {
            let path = path.to_owned();
            std::thread::spawn(move || {
                let _logging = install();
                put(&path, "acme", url)
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&said.lock().expect("buffer"))
            .contains("another writer holds the bindings file's lock; waiting for it")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not wait"
            );
            std::thread::yield_now();
        }
        writer
    }

    #[test]
    fn a_writer_waiting_for_the_lock_says_so() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        let held = lock_for_write(&path, WipedStore::Refuse).expect("locked");
        let writer = put_once_waiting(&path, "http://10.0.0.2");
        drop(held);
        let (revision, _) = writer
            .join()
            .expect("writer")
            .expect("written once the lock is free");
        assert_eq!(revision, Revision(2));
    }

    #[test]
    fn the_last_check_runs_with_the_new_file_written_and_before_the_rename() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        std::fs::write(&path, "old").expect("write");
        let temp_files = || {
            std::fs::read_dir(dir.path())
                .expect("dir")
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
                .map(|e| std::fs::read_to_string(e.path()).expect("temp file"))
                .collect::<Vec<_>>()
        };
        // Refused at the last moment: the new content was written, the old file stays.
        let e = write_checked(&path, b"new", || {
            assert_eq!(temp_files(), ["new"]);
            Err(std::io::Error::other("no longer ours"))
        })
        .expect_err("refused");
        assert_eq!(e.to_string(), "no longer ours");
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "old");
        assert!(temp_files().is_empty());
        write_checked(&path, b"new", || Ok(())).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("file"), "new");
    }

    #[test]
    fn temp_files_writers_left_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("bindings.json");
        put(&path, "acme", "http://10.0.0.1").expect("first write");
        let left = dir.path().join(".bindings.json.tmp.99999");
        std::fs::write(&left, "half").expect("left by a killed writer");
        let other = dir.path().join(".other.json.tmp.99999");
        std::fs::write(&other, "another file's").expect("write");
        put(&path, "acme", "http://10.0.0.2").expect("next write");
        assert!(!left.exists());
        assert!(other.exists());
    }
}
