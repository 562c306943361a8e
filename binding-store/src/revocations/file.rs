//! The revocations file: the source of a router without Redis, and the form a Redis
//! replica's revocation snapshot is written in.
//!
//! `{"revocations": [ <revocation>, ... ]}`. The file is taken whole or not at all: a
//! file with one bad entry keeps the list in force (an entry dropped would be a token
//! accepted again), and the problem is reported with the entry's place.

use std::path::Path;

use serde::Deserialize;

use super::list::RevocationList;
use super::model::{Raw, Revocation, RevocationError};

/// Largest revocations file read: about 200,000 revocations.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    revocations: Vec<Raw>,
}

/// Reads a revocations file's content (see the module docs).
pub fn parse(bytes: &[u8]) -> Result<Vec<Revocation>, RevocationError> {
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| {
        RevocationError(format!(
            "not a revocations file ({{\"revocations\": [...]}}): {e}"
        ))
    })?;
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(doc.revocations.len());
    for (i, raw) in doc.revocations.into_iter().enumerate() {
        let r = Revocation::from_raw(raw)
            .map_err(|e| RevocationError(format!("revocations[{i}]: {e}")))?;
        if let Some(first) = seen.insert(r.key(), i) {
            return Err(RevocationError(format!(
                "revocations[{first}] and revocations[{i}] both revoke {}: keep one",
                r.what
            )));
        }
        out.push(r);
    }
    Ok(out)
}

/// Reads the revocations file at `path` (at most [`MAX_FILE_BYTES`], a regular file).
pub fn read(path: &Path) -> Result<Vec<Revocation>, RevocationError> {
    let bytes = nexus_config::files::read_regular(path, MAX_FILE_BYTES).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::InvalidData {
            format!("larger than {} MiB", MAX_FILE_BYTES >> 20)
        } else {
            e.to_string()
        };
        RevocationError(format!("{}: {why}", path.display()))
    })?;
    parse(&bytes).map_err(|e| RevocationError(format!("{}: {e}", path.display())))
}

/// The file's text for `list`, sorted by key so that equal lists give equal files.
pub fn render(list: &RevocationList) -> String {
    let mut entries: Vec<_> = list.iter().collect();
    entries.sort_by_key(|r| r.key());
    let mut out = String::from("{\"revocations\": [");
    for (i, r) in entries.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&r.to_json());
    }
    out.push_str(if entries.is_empty() { "]}\n" } else { "\n]}\n" });
    out
}

/// Writes `list` to `path` atomically (see [`crate::file_store::write_atomically`]): a
/// reader sees the old file or the new one, never a part.
pub fn write(path: &Path, list: &RevocationList) -> std::io::Result<()> {
    crate::file_store::write_atomically(path, render(list).as_bytes())
}

/// A revocations file a router follows: re-read when its content changes.
#[derive(Debug)]
pub struct Watched {
    path: std::path::PathBuf,
    /// SHA-256 of the content last taken or refused, and whether it was refused.
    last: std::sync::Mutex<Option<([u8; 32], bool)>>,
    /// Why the file could not be read at the last look, while that holds: said once.
    unreadable: std::sync::Mutex<Option<String>>,
}

/// What a look at a watched file found.
#[derive(Debug, PartialEq, Eq)]
pub enum Looked {
    /// A new content, now in force: this many revocations.
    Installed(usize),
    /// The content in force, or one already refused.
    Unchanged,
}

impl Watched {
    /// A watch on `path`; nothing is read until [`Watched::reload`].
    pub fn new(path: std::path::PathBuf) -> Self {
        Self {
            path,
            last: std::sync::Mutex::new(None),
            unreadable: std::sync::Mutex::new(None),
        }
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and, when its content changed and is valid, puts it in force. A file
    /// that cannot be read or is refused keeps the list in force; either is said once
    /// (`Err`), then `Unchanged` until it changes. The list is marked synced whenever the
    /// file was read and its content is the one in force: a refused or unreadable file
    /// leaves it growing stale, as a Redis out of reach does. Blocking: it reads and hashes
    /// the file.
    pub fn reload(&self, into: &super::Revocations) -> Result<Looked, RevocationError> {
        let read = nexus_config::files::read_regular(&self.path, MAX_FILE_BYTES);
        let mut unreadable = self
            .unreadable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bytes = match read {
            Ok(bytes) => {
                *unreadable = None;
                bytes
            }
            // Said once while it stays so: the file is looked at every poll.
            Err(e) => {
                let said = format!("{}: {e}", self.path.display());
                if unreadable.as_deref() == Some(said.as_str()) {
                    return Ok(Looked::Unchanged);
                }
                *unreadable = Some(said.clone());
                return Err(RevocationError(said));
            }
        };
        drop(unreadable);
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &bytes)
            .as_ref()
            .try_into()
            .unwrap_or([0; 32]);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = crate::source::now_unix_ms();
        if let Some((d, refused)) = *last {
            if d == digest {
                if !refused {
                    into.mark_synced(now);
                }
                return Ok(Looked::Unchanged);
            }
        }
        match parse(&bytes) {
            Ok(list) => {
                *last = Some((digest, false));
                let list = RevocationList::new(list);
                let n = list.len();
                into.install(list);
                into.mark_synced(now);
                Ok(Looked::Installed(n))
            }
            Err(e) => {
                *last = Some((digest, true));
                into.count_refused();
                Err(RevocationError(format!("{}: {e}", self.path.display())))
            }
        }
    }
}

/// Puts `r` in force in the revocations file at `path`, merged over the one held under its
/// key ([`Revocation::merged_over`]), under the file's lock, with an audit line. A missing
/// file is a new, empty one.
pub fn put(
    path: &Path,
    r: &Revocation,
    actor: &str,
    reason: &str,
) -> Result<super::Stored, super::AdminFailure> {
    let key = r.key();
    let mut stored = None;
    edit(path, &key, actor, reason, |held| {
        let new = held.map_or_else(|| r.clone(), |h| r.merged_over(h));
        stored = Some(super::Stored {
            revocation: new.clone(),
            replaced: held.cloned(),
            replaced_damaged: false,
        });
        Ok(Some(new))
    })?;
    stored.ok_or_else(|| super::AdminFailure::Unavailable("nothing was written".to_owned()))
}

/// Takes the revocation under `key` out of the file at `path`, as [`put`] does; with
/// `expect`, only while it is that one, else [`super::AdminFailure::Changed`].
pub fn delete(
    path: &Path,
    key: &str,
    expect: Option<&Revocation>,
    actor: &str,
    reason: &str,
) -> Result<(), super::AdminFailure> {
    edit(path, key, actor, reason, |held| match (held, expect) {
        (None, _) => Err(super::AdminFailure::NotFound(key.to_owned())),
        (Some(h), Some(e)) if h != e => Err(super::AdminFailure::Changed(key.to_owned())),
        _ => Ok(None),
    })
}

/// The audit log beside a revocations file: one JSON line per change, written and synced
/// before the change is made.
pub fn audit_path(path: &Path) -> std::path::PathBuf {
    crate::audit_log::path_for(path)
}

/// Under the file's lock: reads it, asks `change` what to put under `key` given what it holds
/// there (`None`: take it out), writes the audit line, then the file.
fn edit(
    path: &Path,
    key: &str,
    actor: &str,
    reason: &str,
    change: impl FnOnce(Option<&Revocation>) -> Result<Option<Revocation>, super::AdminFailure>,
) -> Result<(), super::AdminFailure> {
    use std::io::Write;
    let failed = |what: &Path, e: &dyn std::fmt::Display| {
        super::AdminFailure::Unavailable(format!("{}: {e}", what.display()))
    };
    let lock_path = crate::audit_log::beside(path, ".lock");
    // One admin change at a time: two at once would each write the list without the other's.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| failed(&lock_path, &e))?;
    lock.lock().map_err(|e| failed(&lock_path, &e))?;
    // Kept as read: a hand edit saved between this read and the replace is not undone
    // unseen (see the replace below).
    let before = match nexus_config::files::read_regular(path, MAX_FILE_BYTES) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(failed(path, &e)),
    };
    let mut list = match &before {
        Some(bytes) => RevocationList::new(parse(bytes).map_err(|e| failed(path, &e))?),
        None => RevocationList::default(),
    };
    let held = list.get(key).map(|r| (**r).clone());
    let new = change(held.as_ref())?;
    match &new {
        Some(r) => list.put(std::sync::Arc::new(r.clone())),
        None => {
            list.remove(key);
        }
    }
    let line = serde_json::json!({
        "at": super::model::format_time(crate::source::now_unix_ms() / 1000),
        "actor": actor,
        "reason": (!reason.is_empty()).then_some(reason),
        "op": if new.is_some() { "put" } else { "delete" },
        "key": key,
        "old": held.as_ref().map(Revocation::to_json),
        "new": new.as_ref().map(Revocation::to_json),
    });
    let audit = audit_path(path);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&audit)
        .map_err(|e| failed(&audit, &e))?;
    writeln!(log, "{line}")
        .and_then(|()| log.sync_data())
        .map_err(|e| failed(&audit, &e))?;
    let unchanged = |old: &Path, _: &std::fs::Metadata| {
        if std::fs::read(old).ok() == before {
            Ok(())
        } else {
            Err(std::io::Error::other(
                "the file was changed (by hand?) while this change was being made; nothing \
                 written, run the command again",
            ))
        }
    };
    // Checked right before the replace, and on the file the replace takes out where the
    // filesystem swaps in one step (a plain rename otherwise: the first check then stands).
    let still_as_read = || match nexus_config::files::read_regular(path, MAX_FILE_BYTES) {
        Ok(now) if Some(&now) == before.as_ref() => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && before.is_none() => Ok(()),
        _ => Err(std::io::Error::other(
            "the file was changed (by hand?) while this change was being made; nothing \
             written, run the command again",
        )),
    };
    crate::file_store::write_checked(
        path,
        render(&list).as_bytes(),
        still_as_read,
        Some(&unchanged),
    )
    .map_err(|e| {
        // The line above is of a change not made: said so after it (best effort).
        let _ = writeln!(
            log,
            "{}",
            serde_json::json!({
                "at": super::model::format_time(crate::source::now_unix_ms() / 1000),
                "op": "not-made",
                "key": key,
                "actor": actor,
            })
        )
        .and_then(|()| log.sync_data());
        failed(path, &e)
    })
}
