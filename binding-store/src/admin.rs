//! Admin writes to a binding store: the operations behind `nexus-edge tenant ...`.
//!
//! Every write is atomic in the store (record + revision + change event + audit entry in one
//! step) and may carry an expected revision for optimistic concurrency: a write that expected
//! revision N fails with [`AdminError::Conflict`] if someone else changed the tenant first.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Binding, InstanceId, Revision, TenantId, TenantStatus, UpstreamUrl};

/// Who made a change and why; recorded in the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Operator or pipeline name (e.g. `alice`, `provisioner`).
    pub name: String,
    /// Free-text reason (ticket, migration id).
    pub reason: Option<String>,
}

/// One change a writer wants made.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// Create or replace the whole binding (its `revision` and `updated_at` are assigned by the store).
    Put(Box<Binding>),
    /// Move the tenant to another instance.
    Rebind {
        /// New instance.
        instance_id: InstanceId,
        /// New instance URL.
        instance_url: UpstreamUrl,
        /// New API URL: `None` leaves it unchanged, `Some(None)` clears it.
        api_url: Option<Option<UpstreamUrl>>,
    },
    /// Change the status.
    SetStatus(TenantStatus),
    /// Remove the binding.
    Delete,
}

/// What a write does when it would leave the tenant's binding as it is: every field as asked
/// already, so that only its revision and `updated_at` would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfUnchanged {
    /// Write nothing: no revision, no change event, no audit entry. A script that re-applies
    /// the desired state every minute then leaves the tenant's history (capped by
    /// `audit_cap`) to its real changes. Only where the store can vouch that its replicas
    /// were told of the stored binding: Redis writes a record edited by hand all the same.
    #[default]
    Skip,
    /// Write a new revision anyway: what pushes a record edited in the store by hand, which
    /// no change event announced, to every replica now instead of at its next reconcile.
    Write,
}

/// What [`BindingAdmin::apply`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The change was written as a new revision; the binding after it (`None` after a
    /// delete).
    Written {
        /// The revision the change took.
        revision: Revision,
        /// The binding it left.
        binding: Option<Binding>,
    },
    /// Nothing was written ([`IfUnchanged::Skip`]): the binding already was as asked. This is
    /// the binding as stored, at its own revision.
    Unchanged(Binding),
}

impl Applied {
    /// The tenant's revision after the call: the one written, or the stored one.
    pub fn revision(&self) -> Revision {
        match self {
            Applied::Written { revision, .. } => *revision,
            Applied::Unchanged(b) => b.revision,
        }
    }

    /// The tenant's binding after the call (`None` after a delete).
    pub fn binding(&self) -> Option<&Binding> {
        match self {
            Applied::Written { binding, .. } => binding.as_ref(),
            Applied::Unchanged(b) => Some(b),
        }
    }
}

/// Whether a write may skip itself: `current`, the stored binding, carries a revision (one
/// without, written by hand, gets one by the write) and already is what the write would leave.
pub(crate) fn unchanged(
    if_unchanged: IfUnchanged,
    current: Option<&Binding>,
    next: Option<&Binding>,
) -> Option<Binding> {
    match (if_unchanged, current, next) {
        (IfUnchanged::Skip, Some(cur), Some(next))
            if cur.revision > Revision::ZERO && cur.same_but_revision(next) =>
        {
            Some(cur.clone())
        }
        _ => None,
    }
}

/// One audit log entry: who, when, what, old and new value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Tenant changed.
    pub tenant: String,
    /// Revision the change produced.
    pub revision: u64,
    /// RFC 3339 time of the change.
    pub at: String,
    /// Who.
    pub actor: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Operation (`put`, `rebind`, `set-status`, `delete`; `import` for one tenant of a
    /// one-step import (a file store's, or a restore into a Redis without history; other
    /// imports into Redis log `put`); in a file store's log also `not-made`, for a logged
    /// change the bindings file never received).
    pub op: String,
    /// Record before the change (`None` when created).
    pub old: Option<crate::model::BindingRecord>,
    /// Record after the change (`None` when deleted).
    pub new: Option<crate::model::BindingRecord>,
}

/// A tenant's audit history as read. A damaged entry (edited by hand, or not this schema's)
/// does not hide the others: it is named in `unreadable`, in place of a history that fails
/// whole.
#[derive(Debug, Default)]
pub struct History {
    /// Readable entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// Where each unreadable entry is (file and line, or position in Redis's list), and why.
    pub unreadable: Vec<String>,
}

/// What an admin write does where the store looks wiped: Redis holding no revision counter
/// while replicas heartbeat a revision they serve (`FLUSHALL`, a restart without persistence,
/// a new server), or a bindings file gone while its audit log holds changes. The write would
/// start a new history holding that one tenant, and every replica would unbind all the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WipedStore {
    /// Refuse it ([`AdminError::Wiped`], [`AdminError::FileLost`]): restore first.
    #[default]
    Refuse,
    /// Write it, starting the new history (`tenant --start-new-history`).
    StartNewHistory,
}

/// Why an admin write or read failed. Nothing was written, but for [`AdminError::Unanswered`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The tenant does not exist.
    #[error("tenant {0} not found")]
    NotFound(TenantId),
    /// `--expect-revision` did not match.
    #[error("{}", conflict_text(tenant, *expected, *actual))]
    Conflict {
        /// Tenant.
        tenant: TenantId,
        /// Revision the writer expected.
        expected: Revision,
        /// Revision the store has (0 = absent).
        actual: Revision,
    },
    /// `--expect-revision 0` (must not exist) for a tenant that has a record: one without a
    /// revision (written by hand), which reads as revision 0.
    #[error("conflict: tenant {tenant} exists (its record carries no revision: written by hand), not absent as --expect-revision 0 says; it reads as revision 0 until a write without --expect-revision gives it one (e.g. `tenant put` of the record as it should be)")]
    Exists {
        /// Tenant.
        tenant: TenantId,
    },
    /// The change would leave an invalid binding (e.g. a domain owned by another tenant).
    #[error("tenant {tenant}: {reason}")]
    Invalid {
        /// Tenant.
        tenant: TenantId,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be reached or answered with an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write was sent and no answer came back (the connection failed, or the writing
    /// task died, after it left): it may have been made. Unlike every other error, this one
    /// does not say that nothing was written: the tenant's history says whether it was.
    #[error("no answer from the store: {0}")]
    Unanswered(String),
    /// Redis holds no revision counter while replicas serve revision `served`: its data was
    /// lost under them, and a write would start a history that unbinds every other tenant.
    #[error(
        "Redis holds no revision counter, yet replicas serve bindings up to revision {served}: \
         it looks wiped (FLUSHALL, a restart without persistence, a new server). Replicas keep \
         serving their tables; a write now would start a new history and every replica would \
         unbind each tenant not in it. Restore first: `nexus-edge tenant import SNAPSHOT` with \
         a replica's snapshot file (`snapshot_path`), or Redis's own backup. To write anyway, \
         pass --start-new-history"
    )]
    Wiped {
        /// The highest revision a replica reports serving.
        served: Revision,
    },
    /// A read of a Redis that looks wiped: what it holds is not what the fleet serves, so a
    /// listing or an export of it (a backup!) would pass for the fleet's table.
    #[error(
        "Redis holds no revision counter, yet replicas serve bindings up to revision {served}: \
         it looks wiped (FLUSHALL, a restart without persistence, a new server), and what it \
         holds is not what the replicas serve, so it is not read as their table. Replicas keep \
         serving theirs; their snapshot files (`snapshot_path`) hold it. Restore first: \
         `nexus-edge tenant import SNAPSHOT`, or Redis's own backup"
    )]
    WipedRead {
        /// The highest revision a replica reports serving.
        served: Revision,
    },
    /// The bindings file is missing while its audit log records changes: a write would create
    /// a file holding that one tenant, and every proxy would unbind all the others.
    #[error(
        "{path}: the bindings file is missing, yet its audit log records changes up to \
         revision {logged}: it looks lost (deleted, or a new disk). Proxies keep serving their \
         tables; a write now would create a file holding only this change, and every proxy \
         would unbind each tenant not in it. Put the file back first (copy a backup, or a \
         `tenant export` taken earlier, into place); to write anyway, an import of that \
         export included, pass --start-new-history"
    )]
    FileLost {
        /// The bindings file.
        path: String,
        /// The highest revision the audit log records.
        logged: Revision,
    },
    /// An import into a Redis that lost its data would restore a table older or smaller than
    /// the one replicas serve (revision `served`): they would reload it and unbind every
    /// tenant not in it.
    #[error(
        "Redis holds no revision counter, yet replicas serve bindings up to revision {served}; \
         {offered}, and replicas would reload it and unbind every tenant not in it. Import a \
         replica's snapshot file (`snapshot_path`) at revision {served} or later, or pass \
         --start-new-history to restore this file anyway"
    )]
    StaleRestore {
        /// The highest revision a replica reports serving.
        served: Revision,
        /// What the import offers instead.
        offered: String,
    },
    /// The store's data is damaged (a record that does not parse, ...).
    #[error("store data is damaged: {0}")]
    Corrupt(String),
    /// A key of the schema holds another type of value (another program wrote it).
    #[error(
        "{key} is a Redis {found}, not the {expected} nexus-edge keeps there (another program \
         wrote it), {consequence}. Look at it (redis-cli TYPE / DUMP {key}), then {fix}",
        fix = wrong_type_fix(.found)
    )]
    WrongType {
        /// The key.
        key: String,
        /// What it holds (Redis's `TYPE`, or "string that is no number" for a counter).
        found: String,
        /// What the schema keeps there.
        expected: String,
        /// What it stopped, e.g. "so the write was refused before any of it was made".
        consequence: &'static str,
    },
}

/// Why an import stopped, and how far it got.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}{}: {error}",
    if *written == 0 { "nothing imported".to_owned() } else { format!("import stopped after {written} records") },
    tenant.as_ref().map(|t| format!(" at tenant {t}")).unwrap_or_default()
)]
pub struct ImportError {
    /// Records written before the failure (0 for a store that imports in one step).
    pub written: u64,
    /// The tenant whose record failed (`None` when the whole step did: the store).
    pub tenant: Option<TenantId>,
    /// Why.
    #[source]
    pub error: AdminError,
}

impl ImportError {
    /// Nothing was imported because of the store, not of one record.
    pub fn nothing(error: AdminError) -> Self {
        Self {
            written: 0,
            tenant: None,
            error,
        }
    }

    /// Nothing was imported because of `tenant`'s record.
    pub fn at(tenant: &TenantId, error: AdminError) -> Self {
        Self {
            written: 0,
            tenant: Some(tenant.clone()),
            error,
        }
    }
}

/// What [`BindingAdmin::list`] read.
#[derive(Debug, Default)]
pub struct Listing {
    /// Every readable binding, sorted by tenant id.
    pub bindings: Vec<Binding>,
    /// The store's own revision, read with the listing: its last change's, which may be a
    /// delete (the file's top-level `revision`, Redis's counter; 0 when it has none).
    pub revision: Revision,
    /// The records refused, each named with why (a tenant, or a place in the file).
    pub left_out: Vec<String>,
}

/// Reads and atomic writes against a binding store.
#[async_trait]
pub trait BindingAdmin: Send + Sync {
    /// One tenant's binding.
    async fn get(&self, tenant: &TenantId) -> Result<Option<Binding>, AdminError>;
    /// Every binding (sorted by tenant id), with the records the store refused and so left
    /// out: a listing or a backup must say it is incomplete, not look whole.
    async fn list(&self) -> Result<Listing, AdminError>;
    /// Applies one mutation atomically, if the tenant's revision is still `expect` (when
    /// given); with [`IfUnchanged::Skip`], one that would leave the binding as it is writes
    /// nothing.
    async fn apply(
        &self,
        tenant: &TenantId,
        mutation: Mutation,
        expect: Option<Revision>,
        if_unchanged: IfUnchanged,
        actor: &Actor,
    ) -> Result<Applied, AdminError>;
    /// The tenant's audit history, oldest first, with the entries that could not be read.
    async fn history(&self, tenant: &TenantId) -> Result<History, AdminError>;

    /// Creates or replaces every binding (their revisions are assigned by the store); returns
    /// how many were written. By default one [`BindingAdmin::apply`] each, stopping at the
    /// first failure, in the order of [`release_first`] (so the count written is not always
    /// the file's first records); a store that can write them all in one step does (the file
    /// store: one rewrite of the file, all or nothing, instead of one per tenant). `source`
    /// says where they come from: a store that can lose its data under serving replicas
    /// (Redis) restores it only from a table as recent as the one they serve. `seen` is what
    /// the import's check read of the store: a record is written only over the one it saw.
    async fn import(
        &self,
        bindings: Vec<Arc<Binding>>,
        actor: &Actor,
        _source: ImportSource,
        seen: &ImportSeen,
    ) -> Result<u64, ImportError> {
        import_each(self, bindings, actor, seen).await
    }
}

/// What an import's check read of the store, tenant by tenant. The check refuses a file that
/// would undo changes the store holds; each record is then written only over the record the
/// check saw, so that a change made between the check and the record's turn (a rebind
/// during the import) is not undone either: the import stops there instead.
#[derive(Debug, Clone, Default)]
pub struct ImportSeen {
    /// `None`: no check was made (`--allow-older`, a store that looks wiped).
    revisions: Option<HashMap<TenantId, Revision>>,
}

impl ImportSeen {
    /// No check was made: every record is written whatever the store holds.
    pub fn unchecked() -> Self {
        Self::default()
    }

    /// The check read these tenants at these revisions, and no other tenant.
    pub fn read(revisions: impl IntoIterator<Item = (TenantId, Revision)>) -> Self {
        Self {
            revisions: Some(revisions.into_iter().collect()),
        }
    }

    /// The revision `tenant`'s record must still be at for the import to write it: the one
    /// the check read. `None`: any, when no check was made, when the record it read carries no
    /// revision (written by hand), or when it read no record of the tenant: none, or a
    /// damaged one, which the import may be putting right.
    pub fn expected(&self, tenant: &TenantId) -> Option<Revision> {
        self.revisions
            .as_ref()?
            .get(tenant)
            .copied()
            .filter(|r| *r != Revision::ZERO)
    }
}

/// How to put right a key of the schema that holds another type. The revision counter is
/// not to be deleted: without it Redis looks wiped, and every write is refused.
fn wrong_type_fix(found: &str) -> &'static str {
    if found == COUNTER_NOT_A_NUMBER || found == COUNTER_TOO_HIGH {
        "set it to the highest revision written (the change feed's last `rev`), or restore \
         the store"
    } else {
        "rename or delete it"
    }
}

/// What [`AdminError::WrongType`] says the revision counter holds when it is no number.
pub const COUNTER_NOT_A_NUMBER: &str = "string that is no number";

/// What [`AdminError::WrongType`] says the revision counter holds when it is set (by hand)
/// so high that the next revision would pass 2^52, the highest replicas take.
pub const COUNTER_TOO_HIGH: &str =
    "number at 2^52 or past it, which leaves no revision replicas take";

/// Where an import's bindings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    /// A bindings file (an export, or one written by hand): it may be older, or hold fewer
    /// tenants, than the table replicas serve.
    Records,
    /// A replica's snapshot of the whole table at `revision`.
    Snapshot {
        /// The revision the snapshot's replica had applied.
        revision: Revision,
        /// The Redis key prefix it followed: its revision only counts in that keyspace
        /// (`None`: a version-1 snapshot, taken as the importing keyspace's own).
        key_prefix: Option<String>,
        /// The history its table was loaded from: its revision only counts in that history
        /// (`None`: a snapshot older than version 4, or of a replica that knew none).
        history: Option<String>,
    },
}

/// An import as one [`BindingAdmin::apply`] per binding, stopping at the first failure, in
/// the order of [`release_first`]: a record that takes a custom domain from another tenant
/// of the import goes after that tenant's record, which lets the domain go. In the file's own
/// order, a move listed taker first failed half way (the domain still bound to its old
/// tenant), whatever was written before it.
pub async fn import_each<A: BindingAdmin + ?Sized>(
    admin: &A,
    bindings: Vec<Arc<Binding>>,
    actor: &Actor,
    seen: &ImportSeen,
) -> Result<u64, ImportError> {
    let bindings = if bindings.iter().any(|b| !b.domains.is_empty()) {
        let mut current = HashMap::new();
        for b in &bindings {
            match admin.get(&b.tenant_id).await {
                Ok(Some(now)) => {
                    current.insert(b.tenant_id.clone(), now);
                }
                Ok(None) => {}
                // Down: so would every write be.
                Err(e @ AdminError::Unavailable(_)) => return Err(ImportError::nothing(e)),
                // A damaged record (which the import may be putting right) says nothing of
                // the domains it holds: it holds none for the order.
                Err(_) => {}
            }
        }
        release_first(bindings, &current)
    } else {
        bindings
    };
    let mut written = 0;
    for b in bindings {
        let tenant = b.tenant_id.clone();
        let put = Mutation::Put(Box::new(Arc::unwrap_or_clone(b)));
        // Every record of an import is written: its count and its audit say what it brought.
        let write = IfUnchanged::Write;
        let expect = seen.expected(&tenant);
        if let Err(error) = admin.apply(&tenant, put, expect, write, actor).await {
            return Err(ImportError {
                written,
                tenant: Some(tenant),
                error,
            });
        }
        written += 1;
    }
    Ok(written)
}

/// `bindings` reordered so that a record claiming a custom domain that another tenant of the
/// import holds now (`current`) and lets go comes after that tenant's record; otherwise in
/// their order. Records in a cycle (two tenants swapping domains) stay in their order: no
/// order of single writes can do a swap, and the first write that meets the other's domain
/// fails as before.
pub(crate) fn release_first(
    bindings: Vec<Arc<Binding>>,
    current: &HashMap<TenantId, Binding>,
) -> Vec<Arc<Binding>> {
    let at: HashMap<&TenantId, usize> = bindings
        .iter()
        .enumerate()
        .map(|(i, b)| (&b.tenant_id, i))
        .collect();
    let mut holder: HashMap<&str, usize> = HashMap::new();
    for (tenant, now) in current {
        if let Some(&i) = at.get(tenant) {
            for d in &now.domains {
                holder.insert(d.as_str(), i);
            }
        }
    }
    // after[i]: the records that must wait for record i; waiting[j]: how many j waits for.
    let n = bindings.len();
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for (j, b) in bindings.iter().enumerate() {
        for d in &b.domains {
            let Some(&i) = holder.get(d.as_str()) else {
                continue;
            };
            if i != j && !bindings[i].domains.contains(d) && !after[i].contains(&j) {
                after[i].push(j);
                waiting[j] += 1;
            }
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut done = vec![false; n];
    // Each pass takes, in the import's order, every record no longer waiting; a pass that
    // takes none leaves a cycle, taken in order.
    while order.len() < n {
        let ready: Vec<usize> = (0..n).filter(|&j| !done[j] && waiting[j] == 0).collect();
        let take = if ready.is_empty() {
            (0..n).filter(|&j| !done[j]).collect()
        } else {
            ready
        };
        for j in take {
            done[j] = true;
            order.push(j);
            for &k in &after[j] {
                waiting[k] = waiting[k].saturating_sub(1);
            }
        }
    }
    let mut slots: Vec<Option<Arc<Binding>>> = bindings.into_iter().map(Some).collect();
    order.into_iter().filter_map(|j| slots[j].take()).collect()
}

/// What an admin does about a stored record the store refuses: said with every refusal of
/// one (`tenant get`, and a write that must read it first).
pub(crate) const FIX_A_RECORD: &str =
    "replace it with `tenant put` or remove it with `tenant delete`";

/// What a [`AdminError::Conflict`] says: `--expect-revision 0` asks that the tenant not
/// exist, which "at revision 41, not the expected 0" says only in a roundabout way.
fn conflict_text(tenant: &TenantId, expected: Revision, actual: Revision) -> String {
    if expected == Revision::ZERO {
        format!(
            "conflict: tenant {tenant} already exists (at revision {actual}), and \
             --expect-revision 0 asks that it does not; re-read it and retry"
        )
    } else if actual == Revision::ZERO {
        // No record, or one without a revision (written by hand): both read as 0.
        format!(
            "conflict: tenant {tenant} is not at the expected revision {expected}: it has no \
             record, or one without a revision (written by hand); re-read it and retry"
        )
    } else {
        format!(
            "conflict: tenant {tenant} is at revision {actual}, not the expected {expected}; \
             re-read it and retry"
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_binding;

    fn order(import: &[Arc<Binding>], now: &[Arc<Binding>]) -> Vec<String> {
        let current = now
            .iter()
            .map(|b| (b.tenant_id.clone(), b.as_ref().clone()))
            .collect();
        release_first(import.to_vec(), &current)
            .iter()
            .map(|b| b.tenant_id.to_string())
            .collect()
    }

    #[test]
    fn a_record_that_takes_a_domain_goes_after_the_record_that_lets_it_go() {
        let now = [
            test_binding("x", 1, &["d1.example.test"]),
            test_binding("v", 1, &["d2.example.test"]),
        ];
        // w takes d1 from x, and x lets it go: x first, the rest in the file's order.
        let import = [
            test_binding("a", 1, &[]),
            test_binding("w", 1, &["d1.example.test"]),
            test_binding("b", 1, &[]),
            test_binding("x", 1, &[]),
        ];
        assert_eq!(order(&import, &now), ["a", "b", "x", "w"]);
        // x keeps d1: no order helps, the file's order stands (w then fails on it).
        let keeps = [
            test_binding("w", 1, &["d1.example.test"]),
            test_binding("x", 1, &["d1.example.test"]),
        ];
        assert_eq!(order(&keeps, &now), ["w", "x"]);
        // A swap (x and v trade domains) is a cycle: the file's order.
        let swap = [
            test_binding("x", 1, &["d2.example.test"]),
            test_binding("v", 1, &["d1.example.test"]),
        ];
        assert_eq!(order(&swap, &now), ["x", "v"]);
        // A domain held by a tenant outside the import: nothing to wait for.
        let outside = [
            test_binding("w", 1, &["d2.example.test"]),
            test_binding("x", 1, &[]),
        ];
        assert_eq!(order(&outside, &[now[1].clone()]), ["w", "x"]);
    }
}
