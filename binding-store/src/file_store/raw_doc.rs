//! The bindings file as written: raw JSON values, so a write leaves untouched records as they were.

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use crate::admin::AdminError;
use crate::json::{shown_name, without_bom, Checked};
use crate::model::{Binding, TenantId};
use crate::records::{parse_record, BINDINGS_FORMAT, DOCUMENT_KEYS};

use super::replace::write_checked;
use super::{digest, read_regular, settled, stamp, Stamp};

/// The raw document, kept as JSON values so that records an admin write does not touch are
/// written back exactly as they were (even invalid ones).
pub(super) struct RawDoc {
    pub(super) bindings: Vec<Value>,
    /// The highest revision this store has issued (the top-level `revision`); `None` in files
    /// that predate it or were written by hand.
    pub(super) revision: Option<u64>,
    /// The file does not exist (read as empty).
    pub(super) missing: bool,
    /// The file as read: its stamp, taken before it was read, and its content's digest; a
    /// write checks the file is still that one before replacing it (see
    /// [`RawDoc::unchanged`]).
    read_as: Option<(Option<Stamp>, [u8; 32])>,
}

impl RawDoc {
    pub(super) fn read(path: &Path) -> Result<RawDoc, AdminError> {
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
    pub(super) fn refused_tenants(&self, except: &dyn Fn(&TenantId) -> bool) -> Vec<String> {
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
    /// change of the same length within one tick of the file clock, see [`RACY_WINDOW`](super::RACY_WINDOW)).
    pub(super) fn unchanged(&self, path: &Path) -> Result<(), AdminError> {
        let changed =
            || AdminError::Unavailable(format!("{}: {CHANGED_MEANWHILE}", path.display()));
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

    /// Whether `file` (the file a write took out of the path, now at `at`) is the one read:
    /// the same file, length and modification time (not its change time: moving a file sets
    /// that), and the same content. File times move in ticks, so an edit of the same length
    /// made in the tick of the one read leaves them as they were: the content is compared
    /// every time (once per write, of a file the write has just read whole).
    fn is_the_file_read(&self, at: &Path, file: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let same_content =
            |digest_read: &[u8; 32]| read_regular(at).is_ok_and(|b| digest(&b) == *digest_read);
        match &self.read_as {
            Some((Some(was), digest_read)) => {
                was.file == (file.dev(), file.ino())
                    && was.len == file.len()
                    && was.modified == file.modified().ok()
                    && same_content(digest_read)
            }
            // Read without a stamp: by content alone.
            Some((None, digest_read)) => same_content(digest_read),
            // Read as missing: a file there now was made since.
            None => false,
        }
    }

    /// Where each tenant's records are, by the `tenant_id` they name.
    pub(super) fn places(&self) -> std::collections::HashMap<String, Vec<usize>> {
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
    pub(super) fn positions(&self, tenant: &TenantId) -> Vec<usize> {
        (0..self.bindings.len())
            .filter(|&i| {
                self.bindings[i].get("tenant_id").and_then(Value::as_str) == Some(tenant.as_str())
            })
            .collect()
    }

    /// The highest revision issued: the file's counter, or a record's if one is higher
    /// (hand-edited files).
    pub(super) fn high_revision(&self) -> u64 {
        self.bindings
            .iter()
            .filter_map(|v| v.get("revision").and_then(Value::as_u64))
            .fold(self.revision.unwrap_or(0), u64::max)
    }

    pub(super) fn valid(&self) -> Vec<Binding> {
        self.bindings
            .iter()
            .filter_map(|v| parse_record(v).ok())
            .collect()
    }

    /// Writes the document as the file at `path`; `last_check` runs once the new file is
    /// written and synced, right before it replaces the old one (see [`write_checked`]).
    pub(super) fn write(
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
        let replaced = |at: &Path, out: &std::fs::Metadata| {
            if self.is_the_file_read(at, out) {
                Ok(())
            } else {
                Err(std::io::Error::other(CHANGED_MEANWHILE))
            }
        };
        write_checked(
            path,
            format!("{doc:#}\n").as_bytes(),
            checked,
            Some(&replaced),
        )
        .map_err(|e| {
            refused
                .take()
                .unwrap_or_else(|| AdminError::Unavailable(format!("{}: {e}", path.display())))
        })
    }
}

/// Why a write was refused whose file changed after it was read.
const CHANGED_MEANWHILE: &str = "the file changed while this write was being made (edited by \
                                 hand, or written by another writer); nothing written, run the \
                                 command again";

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
pub(super) fn claim_unchecked(
    tenant: &TenantId,
    domains: &[&str],
    refused: &[String],
) -> AdminError {
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
pub(super) fn listed_twice(path: &Path, tenant: &TenantId, places: &[usize]) -> AdminError {
    AdminError::Corrupt(format!(
        "{}: tenant {tenant} is listed more than once (records {places:?}); routers refuse \
         every one of its records, so a change to one would never take effect. `tenant put` \
         the record meant (or `tenant delete` the tenant), without --expect-revision: that \
         replaces them all; then retry",
        path.display()
    ))
}
