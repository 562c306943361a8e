//! Admin writes to the bindings file: one tenant's change, a whole import, each audited
//! before the file is replaced.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::admin::{
    unchanged, Actor, AdminError, Applied, AuditEntry, BindingAdmin, History, IfUnchanged,
    ImportError, ImportSeen, ImportSource, Listing, Mutation, WipedStore, FIX_A_RECORD,
};
use crate::audit_log::AuditLog;
use crate::model::{Binding, Revision, TenantId};
use crate::records::{parse_record, sorted_by_tenant};

use super::lock::{lock_for_write, HeldLock, Locked};
use super::raw_doc::{claim_unchecked, listed_twice, RawDoc};
use super::replace::audit_path;
use super::FileStore;
use crate::admin::{mutate, op_name};

pub(super) fn now_rfc3339() -> (time::OffsetDateTime, String) {
    let now = time::OffsetDateTime::now_utc();
    let text = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    (now, text)
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
        if_unchanged: IfUnchanged,
        actor: &Actor,
    ) -> Result<Applied, AdminError> {
        let path = self.writable_path()?.to_path_buf();
        let asked = tenant.clone();
        let tenant = tenant.clone();
        let actor = actor.clone();
        let wiped = self.wiped_store;
        let task = move || {
            apply_locked(
                &path,
                &tenant,
                mutation,
                expect,
                if_unchanged,
                &actor,
                wiped,
            )
        };
        let _turn = self.writers.lock().await;
        // A task that died (a panic) may have died after the file was replaced.
        tokio::task::spawn_blocking(task).await.map_err(|e| {
            AdminError::Unanswered(format!(
                "write task failed: {e}; the write may have been made: `nexus-edge tenant \
                 history {asked}` says whether it was"
            ))
        })?
    }

    async fn import(
        &self,
        bindings: Vec<Arc<Binding>>,
        actor: &Actor,
        _source: ImportSource,
        seen: &ImportSeen,
    ) -> Result<u64, ImportError> {
        let path = self
            .writable_path()
            .map_err(ImportError::nothing)?
            .to_path_buf();
        let actor = actor.clone();
        let wiped = self.wiped_store;
        let seen = seen.clone();
        let _turn = self.writers.lock().await;
        tokio::task::spawn_blocking(move || import_locked(&path, bindings, &actor, wiped, &seen))
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
pub(super) fn import_locked(
    path: &Path,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
    wiped: WipedStore,
    seen: &ImportSeen,
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
        // Changed since the import's check read it: written over, that change would be
        // undone unseen. Nothing is written (the rewrite is whole).
        if let Some(expected) = seen.expected(&tenant).filter(|e| e.get() != actual) {
            return Err(failed(
                &tenant,
                AdminError::Conflict {
                    tenant: tenant.clone(),
                    expected,
                    actual: Revision(actual),
                },
            ));
        }
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
    // After the clash check: a domain a served record holds is said as that ("also belongs
    // to tenant acme"), where this check, seeing two claimants, would call acme's record one
    // the routers refuse.
    if let Some((tenant, claimed)) = claims.first() {
        let refused = doc.refused_tenants(&|t| imported.contains(t));
        if !refused.is_empty() {
            let claimed: Vec<&str> = claimed.iter().map(String::as_str).collect();
            return Err(failed(tenant, claim_unchecked(tenant, &claimed, &refused)));
        }
    }
    doc.revision = Some(revision);
    commit(path, &lock, &doc, &mut log, &entries).map_err(whole)?;
    Ok(written)
}

/// The audit `op` of one tenant of a one-step import.
const IMPORT: &str = "import";

/// The audit `op` of a logged change that was never made.
pub(super) const NOT_MADE: &str = "not-made";

/// Makes a change held under `lock`: its audit `entries` first, then `doc` as the file, so no
/// change is ever made without its lines; if the file cannot be written, the lines are cut off
/// again. The lock must still be this writer's before the lines and again right before the
/// file is replaced, and the file the one read then (see [`HeldLock::still_ours`],
/// [`RawDoc::unchanged`]).
pub(super) fn commit(
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
pub(super) fn apply_locked(
    path: &Path,
    tenant: &TenantId,
    mutation: Mutation,
    expect: Option<Revision>,
    if_unchanged: IfUnchanged,
    actor: &Actor,
    wiped: WipedStore,
) -> Result<Applied, AdminError> {
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
    // Checked after the domains: a record another one contests is refused by the router, and
    // its put must say so, not that it is as asked. A tenant listed twice is settled by it.
    if places.len() == 1 {
        if let Some(stored) = unchanged(if_unchanged, current.as_ref(), next.as_ref()) {
            return Ok(Applied::Unchanged(stored));
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
    Ok(Applied::Written {
        revision,
        binding: next,
    })
}
