//! The writers' advisory lock: one admin write at a time, and the store as read under it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::admin::{AdminError, AuditEntry, WipedStore};
use crate::audit_log::{AuditLog, Tail};
use crate::model::Revision;

use super::admin::{now_rfc3339, NOT_MADE};
use super::raw_doc::RawDoc;
use super::replace::{audit_path, home, keep_owner_with_mode};

/// The store held for one write: its lock (released on drop), the document, the audit log,
/// and the highest revision ever handed out.
pub(super) struct Locked {
    pub(super) lock: HeldLock,
    pub(super) doc: RawDoc,
    pub(super) log: AuditLog,
    pub(super) high: u64,
}

/// Gives a file the admin CLI just created beside the bindings file (its lock, its audit log)
/// the bindings file's owner, group and permissions (see [`keep_owner_and_mode`]): the admins
/// who may write the one may write the others. Created with the creator's group and the
/// umask's mode (0644), the first writer (root, say) left every other admin of a shared
/// group unable to write at all. Best effort: a file store with no bindings file yet keeps
/// what the creation gave. Its owner may always write it, and no one may run it: a bindings
/// file made read-only (0444) gave a read-only audit log, and every later write failed on it
/// once the bindings file was writable again.
fn share_ownership(created: &File, created_path: &Path, bindings: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(bindings) {
        let mode = (meta.mode() & 0o666) | 0o200;
        if let Err(e) = keep_owner_with_mode(created, &meta, mode, created_path) {
            tracing::warn!(file = %created_path.display(), error = %e,
                "the bindings file's permissions could not be given to this file");
        }
    }
}

/// How long a writer waits for another process's locks, at most, before it gives up having
/// written nothing: a writer stopped mid-write (a suspended `nexus-edge tenant`, a hung
/// disk) must not hold every later one, the admin API's among them, for ever. (A process's
/// own writers queue first, in order: see `FileStore::writers`.)
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(30);

/// How often a waiting writer tries the lock again.
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// Takes the exclusive advisory lock on `<file>.lock`, so concurrent writers (several
/// `nexus-edge tenant` commands) never lose an update, then reads the file and its audit log.
/// Logged changes the file does not hold get their `not-made` entries here.
pub(super) fn lock_for_write(path: &Path, wiped: WipedStore) -> Result<Locked, AdminError> {
    lock_for_write_within(path, wiped, LOCK_WAIT)
}

/// [`lock_for_write`], waiting `wait` at most for the locks (both together).
pub(super) fn lock_for_write_within(
    path: &Path,
    wiped: WipedStore,
    wait: Duration,
) -> Result<Locked, AdminError> {
    let deadline = (Instant::now() + wait, wait);
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
    wait_for_lock(&dir_lock, dir, deadline).map_err(dir_failed)?;
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
        wait_for_lock(&lock, &lock_path, deadline).map_err(lock_failed)?;
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
/// Takes `file`'s lock, waiting until `deadline` (the instant, and the wait it ends) at most.
fn wait_for_lock(
    file: &File,
    at: &Path,
    (deadline, wait): (Instant, Duration),
) -> std::io::Result<()> {
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !said {
                    said = true;
                    tracing::warn!(lock = %at.display(),
                        "another writer holds the bindings file's lock; waiting for it");
                }
                // Tried until the deadline: a blocking lock could not be given up, and a
                // thread waiting on it could not be reclaimed.
                let now = Instant::now();
                if now >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "another writer held the bindings file's lock for the {} s a \
                             writer waits (a writer stopped mid-write, or a long import): \
                             nothing was written",
                            wait.as_secs_f64()
                        ),
                    ));
                }
                std::thread::sleep(LOCK_RETRY.min(deadline - now));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// The locks a writer holds (the bindings file's directory, and its lock file), and where
/// the lock file is.
pub(super) struct HeldLock {
    /// Locked (the lock is released when it is closed).
    file: File,
    pub(super) path: PathBuf,
    /// The directory, locked (see [`lock_for_write`]).
    _dir: File,
}

impl HeldLock {
    /// Whether the file at the lock's path is still the one this writer holds locked. One
    /// removed meanwhile (a cleanup, an operator taking it for stale) let the next writer
    /// create another and lock that: two writers at once, and the later rename undid the
    /// other's reported change.
    pub(super) fn still_ours(&self) -> Result<(), AdminError> {
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
