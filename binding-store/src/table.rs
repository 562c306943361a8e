//! The in-memory binding table.
//!
//! A [`BindingTable`] is immutable. Its maps are persistent hash tries (`imbl`), so applying
//! one change builds a new table that shares all but `O(log n)` nodes with the old one: the cost
//! of a change is the same at a thousand tenants or a million. The live table sits behind one
//! `ArcSwap` in a [`BindingHandle`]; a request loads it once and keeps that snapshot, so the
//! tenant index and the domain index it sees always agree.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use imbl::shared_ptr::DefaultSharedPtr;
use imbl::GenericHashMap;

use crate::error::ApplyError;
use crate::model::{Binding, DomainName, Revision, TenantId};
use crate::retire::Retirer;

/// The table's maps hash with foldhash (seeded per process), not SipHash: a lookup is on
/// every request, and the keys are tenant ids and domains from binding records, which only
/// admins write, so there is no flood of chosen colliding keys to defend against.
type HashMap<K, V> = GenericHashMap<K, V, foldhash::fast::RandomState, DefaultSharedPtr>;

/// One change to the table, as carried by a change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Create or replace the tenant's binding (its `revision` orders it).
    Upsert(Arc<Binding>),
    /// Remove the tenant. The revision is kept as a tombstone so an older upsert that arrives
    /// late cannot bring the tenant back.
    Delete {
        /// Tenant removed.
        tenant: TenantId,
        /// Revision of the deletion.
        revision: Revision,
    },
}

impl Change {
    /// Tenant the change is about.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Change::Upsert(b) => &b.tenant_id,
            Change::Delete { tenant, .. } => tenant,
        }
    }

    /// Revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            Change::Upsert(b) => b.revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// An immutable snapshot of every binding, indexed by tenant and by custom domain.
#[derive(Clone, Debug, Default)]
pub struct BindingTable {
    by_tenant: HashMap<TenantId, Arc<Binding>>,
    by_domain: HashMap<DomainName, TenantId>,
    /// Revisions of deleted tenants, so late older upserts stay dead.
    tombstones: HashMap<TenantId, Revision>,
    /// Highest revision this table has seen (applied or tombstoned).
    revision: Revision,
}

impl BindingTable {
    /// An empty table at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a table from a full set of bindings, e.g. a file, a snapshot or a full reconcile.
    ///
    /// Bindings are applied in revision order; the ones refused (an older duplicate of a
    /// tenant, a domain already taken) are returned beside the table so the caller can log them.
    pub fn from_bindings(
        bindings: impl IntoIterator<Item = Arc<Binding>>,
    ) -> (Self, Vec<ApplyError>) {
        let mut all: Vec<Arc<Binding>> = bindings.into_iter().collect();
        all.sort_by(|a, b| {
            a.revision
                .cmp(&b.revision)
                .then_with(|| a.tenant_id.cmp(&b.tenant_id))
        });
        let mut table = BindingTable::new();
        let mut refused = Vec::new();
        for b in all {
            if let Err(e) = table.apply_in_place(Change::Upsert(b), true) {
                refused.push(e);
            }
        }
        (table, refused)
    }

    /// The tenant's binding.
    pub fn get(&self, tenant: &str) -> Option<&Arc<Binding>> {
        self.by_tenant.get(tenant)
    }

    /// The tenant that owns a custom domain (canonical form).
    pub fn tenant_for_domain(&self, domain: &str) -> Option<&TenantId> {
        self.by_domain.get(domain)
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_tenant.len()
    }

    /// True when no tenant is bound.
    pub fn is_empty(&self) -> bool {
        self.by_tenant.is_empty()
    }

    /// Highest revision the table has seen.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The table, seen to reflect the store at `revision` at least: a full load's store may
    /// be past its newest record (deletes since), and the table's revision must not read
    /// lower than the one a delete's feed entry would have left it at.
    pub fn at_least(mut self, revision: Revision) -> Self {
        self.revision = self.revision.max(revision);
        self
    }

    /// Revision the table holds for a tenant (its binding's, or its tombstone's).
    pub fn tenant_revision(&self, tenant: &str) -> Option<Revision> {
        self.by_tenant
            .get(tenant)
            .map(|b| b.revision)
            .or_else(|| self.tombstones.get(tenant).copied())
    }

    /// Every binding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Binding>> {
        self.by_tenant.values()
    }

    /// A new table with `change` applied; `self` is untouched. Costs `O(log n)`.
    ///
    /// A change that is not newer than what the table has for its tenant is refused
    /// ([`ApplyError::Stale`]), so revisions only ever move forward whatever order a feed
    /// delivers them in.
    pub fn apply(&self, change: Change) -> Result<BindingTable, ApplyError> {
        let mut next = self.clone();
        next.apply_in_place(change, false)?;
        Ok(next)
    }

    /// Applies many changes, returning the new table and the refused changes' errors.
    pub fn apply_all(
        &self,
        changes: impl IntoIterator<Item = Change>,
    ) -> (BindingTable, Vec<ApplyError>) {
        let mut next = self.clone();
        let mut refused = Vec::new();
        for c in changes {
            if let Err(e) = next.apply_in_place(c, false) {
                refused.push(e);
            }
        }
        (next, refused)
    }

    /// `allow_equal` lets a full load carry records whose revision is 0 (hand-written files).
    fn apply_in_place(&mut self, change: Change, allow_equal: bool) -> Result<(), ApplyError> {
        let tenant = change.tenant().clone();
        let got = change.revision();
        if let Some(have) = self.tenant_revision(tenant.as_str()) {
            let stale = if allow_equal && got == Revision::ZERO {
                // Two revision-0 records for one tenant in one file: keep the first.
                self.by_tenant.contains_key(tenant.as_str())
            } else {
                got <= have
            };
            if stale {
                return Err(ApplyError::Stale { tenant, have, got });
            }
        }
        match change {
            Change::Upsert(binding) => {
                for d in &binding.domains {
                    if let Some(owner) = self.by_domain.get(d.as_str()) {
                        if *owner != tenant {
                            return Err(ApplyError::DomainTaken {
                                tenant,
                                domain: d.clone(),
                                owner: owner.clone(),
                            });
                        }
                    }
                }
                if let Some(old) = self.by_tenant.get(tenant.as_str()) {
                    for d in &old.domains {
                        if !binding.domains.contains(d) {
                            self.by_domain.remove(d.as_str());
                        }
                    }
                }
                for d in &binding.domains {
                    self.by_domain.insert(d.clone(), tenant.clone());
                }
                self.tombstones.remove(tenant.as_str());
                self.by_tenant.insert(tenant, binding);
            }
            Change::Delete { tenant, revision } => {
                if let Some(old) = self.by_tenant.remove(tenant.as_str()) {
                    for d in &old.domains {
                        self.by_domain.remove(d.as_str());
                    }
                }
                self.tombstones.insert(tenant, revision);
            }
        }
        self.revision = self.revision.max(got);
        Ok(())
    }
}

/// The one thread that frees replaced tables, started with the first handle.
fn retired_tables() -> &'static Retirer<BindingTable> {
    static RETIRER: OnceLock<Retirer<BindingTable>> = OnceLock::new();
    RETIRER.get_or_init(|| Retirer::start("nexus-table-free"))
}

/// The live table: one `ArcSwap`, lock-free to read, replaced whole by the one sync task.
#[derive(Clone, Debug, Default)]
pub struct BindingHandle {
    inner: Arc<ArcSwap<BindingTable>>,
}

impl BindingHandle {
    /// A handle serving `table`. Starts the thread that frees replaced tables now, at
    /// start-up, rather than at the first replacement.
    pub fn new(table: BindingTable) -> Self {
        retired_tables();
        Self {
            inner: Arc::new(ArcSwap::from_pointee(table)),
        }
    }

    /// The current table. Keep the returned `Arc` for the whole request.
    pub fn load(&self) -> Arc<BindingTable> {
        self.inner.load_full()
    }

    /// Replaces the table. The replaced one is freed on a thread of its own once no request
    /// holds it (the `retire` module): after a full reload that is its whole index.
    pub fn store(&self, table: BindingTable) {
        retired_tables().retire(self.inner.swap(Arc::new(table)));
    }

    /// Marks the table as reflecting the store at `revision` at least, when it reads lower:
    /// a follower past a change it did not apply (its record refused, or already applied
    /// from a newer read) is where a full load of the same store would be. Cheap: the maps
    /// are shared, not copied.
    pub fn advance_to(&self, revision: Revision) {
        let current = self.inner.load();
        if current.revision() < revision {
            let next = BindingTable::clone(&current).at_least(revision);
            self.store(next);
        }
    }

    /// Applies one change; on refusal the live table is untouched.
    pub fn apply(&self, change: Change) -> Result<Revision, ApplyError> {
        let next = self.inner.load().apply(change)?;
        let rev = next.revision();
        self.store(next);
        Ok(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_binding;

    fn b(tenant: &str, rev: u64, domains: &[&str]) -> Arc<Binding> {
        test_binding(tenant, rev, domains)
    }

    #[test]
    fn revisions_only_move_forward() {
        let t = BindingTable::new()
            .apply(Change::Upsert(b("acme", 5, &[])))
            .expect("first");
        assert!(matches!(
            t.apply(Change::Upsert(b("acme", 4, &[]))),
            Err(ApplyError::Stale { .. })
        ));
        assert!(matches!(
            t.apply(Change::Upsert(b("acme", 5, &[]))),
            Err(ApplyError::Stale { .. })
        ));
        let t = t.apply(Change::Upsert(b("acme", 6, &[]))).expect("newer");
        assert_eq!(t.get("acme").map(|b| b.revision), Some(Revision(6)));
        // A delete leaves a tombstone: a late, older upsert cannot resurrect the tenant.
        let t = t
            .apply(Change::Delete {
                tenant: TenantId::parse("acme").expect("id"),
                revision: Revision(8),
            })
            .expect("delete");
        assert!(t.get("acme").is_none());
        assert!(t.apply(Change::Upsert(b("acme", 7, &[]))).is_err());
        assert!(t.apply(Change::Upsert(b("acme", 9, &[]))).is_ok());
    }

    #[test]
    fn domains_are_unique_and_follow_their_tenant() {
        let t = BindingTable::new()
            .apply(Change::Upsert(b("acme", 1, &["app.acme.test"])))
            .expect("acme");
        assert!(matches!(
            t.apply(Change::Upsert(b("evil", 2, &["app.acme.test"]))),
            Err(ApplyError::DomainTaken { .. })
        ));
        let t = t
            .apply(Change::Upsert(b("acme", 3, &["new.acme.test"])))
            .expect("move");
        assert!(t.tenant_for_domain("app.acme.test").is_none());
        assert_eq!(
            t.tenant_for_domain("new.acme.test").map(TenantId::as_str),
            Some("acme")
        );
    }

    #[test]
    fn a_replaced_table_is_freed_by_the_retirer_not_by_its_last_reader() {
        let handle = BindingHandle::new(BindingTable::new());
        let reader = handle.load();
        handle.store(BindingTable::new());
        // The handle let go of it, and the retirer holds it until the reader lets go too:
        // the reader's drop is not the last (the retirer frees it once it is alone with it).
        assert_eq!(Arc::strong_count(&reader), 2);
        let before = retired_tables().freed();
        drop(reader);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while retired_tables().freed() == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the replaced table was never freed"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn an_old_snapshot_is_untouched_by_later_changes() {
        let handle = BindingHandle::new(BindingTable::new());
        handle
            .apply(Change::Upsert(b("acme", 1, &[])))
            .expect("apply");
        let before = handle.load();
        handle
            .apply(Change::Upsert(b("acme", 2, &[])))
            .expect("apply");
        assert_eq!(before.get("acme").map(|b| b.revision), Some(Revision(1)));
        assert_eq!(
            handle.load().get("acme").map(|b| b.revision),
            Some(Revision(2))
        );
    }
}
