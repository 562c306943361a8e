//! The revocations in force, indexed the way a request looks them up, and the handle every
//! request reads them through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::model::{Revocation, Revoked, TokenFacts};

/// An immutable set of revocations. A change makes a new one; requests hold the one they
/// loaded. Each index answers one kind in one lookup, so a token costs at most three hash
/// lookups, and none while the set is empty (the usual case).
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    tokens: HashMap<String, Arc<Revocation>>,
    tenants: HashMap<String, Arc<Revocation>>,
    /// Tenant, then `sub`.
    subjects: HashMap<String, HashMap<String, Arc<Revocation>>>,
    len: usize,
}

impl RevocationList {
    /// A set of `entries`; of two with the same key ([`Revocation::key`]) the later stays.
    pub fn new(entries: impl IntoIterator<Item = Revocation>) -> Self {
        let mut list = Self::default();
        for r in entries {
            list.put(Arc::new(r));
        }
        list
    }

    /// Revocations held (some may have run out, until their source drops them).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every revocation, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Revocation>> {
        self.tokens
            .values()
            .chain(self.tenants.values())
            .chain(self.subjects.values().flat_map(HashMap::values))
    }

    /// The revocation with this key, if held.
    pub fn get(&self, key: &str) -> Option<&Arc<Revocation>> {
        match KeyRef::parse(key)? {
            KeyRef::Token(jti) => self.tokens.get(jti),
            KeyRef::Tenant(tenant) => self.tenants.get(tenant),
            KeyRef::Subject(tenant, sub) => self.subjects.get(tenant)?.get(sub),
        }
    }

    /// The revocation that refuses a token with these claims at `now`, if one does.
    pub fn refusing(&self, t: &TokenFacts<'_>, now: u64) -> Option<&Arc<Revocation>> {
        if self.is_empty() {
            return None;
        }
        let by_token = t.jti.and_then(|jti| self.tokens.get(jti));
        let by_tenant = t.tenant.and_then(|tenant| self.tenants.get(tenant));
        let by_subject = t
            .tenant
            .zip(t.sub)
            .and_then(|(tenant, sub)| self.subjects.get(tenant)?.get(sub));
        [by_token, by_tenant, by_subject]
            .into_iter()
            .flatten()
            .find(|r| r.refuses(t, now))
    }

    /// Puts `r` in, in place of the one with its key.
    pub fn put(&mut self, r: Arc<Revocation>) {
        let replaced = match &r.what {
            Revoked::Token { jti } => self.tokens.insert(jti.clone(), r),
            Revoked::Tenant { tenant, .. } => self.tenants.insert(tenant.as_str().to_owned(), r),
            Revoked::Subject { tenant, sub, .. } => self
                .subjects
                .entry(tenant.as_str().to_owned())
                .or_default()
                .insert(sub.clone(), r),
        };
        if replaced.is_none() {
            self.len += 1;
        }
    }

    /// Takes out the revocation with this key; whether one was held.
    pub fn remove(&mut self, key: &str) -> bool {
        let removed = match KeyRef::parse(key) {
            None => false,
            Some(KeyRef::Token(jti)) => self.tokens.remove(jti).is_some(),
            Some(KeyRef::Tenant(tenant)) => self.tenants.remove(tenant).is_some(),
            Some(KeyRef::Subject(tenant, sub)) => {
                let Some(subs) = self.subjects.get_mut(tenant) else {
                    return false;
                };
                let removed = subs.remove(sub).is_some();
                if subs.is_empty() {
                    self.subjects.remove(tenant);
                }
                removed
            }
        };
        if removed {
            self.len -= 1;
        }
        removed
    }
}

/// A revocation key ([`Revoked::key`]) read back: `token:<jti>`, `tenant:<tenant>`,
/// `subject:<tenant>:<sub>` (a tenant id holds no `:`, so the first one after it ends it).
enum KeyRef<'k> {
    Token(&'k str),
    Tenant(&'k str),
    Subject(&'k str, &'k str),
}

impl<'k> KeyRef<'k> {
    fn parse(key: &'k str) -> Option<Self> {
        if let Some(jti) = key.strip_prefix("token:") {
            Some(KeyRef::Token(jti))
        } else if let Some(tenant) = key.strip_prefix("tenant:") {
            Some(KeyRef::Tenant(tenant))
        } else {
            let (tenant, sub) = key.strip_prefix("subject:")?.split_once(':')?;
            Some(KeyRef::Subject(tenant, sub))
        }
    }
}

/// Where requests read the revocations in force, and how fresh they are. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Revocations {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    list: ArcSwap<RevocationList>,
    /// Unix milliseconds when the list was last known to equal its source (0: never).
    synced_ms: AtomicU64,
    /// Records the source held that were refused, so far.
    refused: AtomicU64,
    /// Snapshot writes that failed, so far.
    snapshot_failures: AtomicU64,
    /// Whether a source is configured at all.
    followed: bool,
    /// Unix milliseconds when the handle was made: the age of a list never synced.
    created_ms: u64,
}

impl Revocations {
    /// Revocations that no source feeds: none, ever (no `[revocation]` source configured).
    pub fn none() -> Self {
        Self::with(false)
    }

    /// An empty list that a source will feed ([`Revocations::install`]).
    pub fn followed() -> Self {
        Self::with(true)
    }

    fn with(followed: bool) -> Self {
        Self {
            inner: Arc::new(Shared {
                list: ArcSwap::from_pointee(RevocationList::default()),
                synced_ms: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                snapshot_failures: AtomicU64::new(0),
                followed,
                created_ms: crate::source::now_unix_ms(),
            }),
        }
    }

    /// Whether a source feeds the list.
    pub fn is_followed(&self) -> bool {
        self.inner.followed
    }

    /// The list in force now.
    pub fn load(&self) -> arc_swap::Guard<Arc<RevocationList>> {
        self.inner.list.load()
    }

    /// The list in force now, to keep.
    pub fn load_full(&self) -> Arc<RevocationList> {
        self.inner.list.load_full()
    }

    /// Whether a revocation in force refuses a token with these claims at `now`; `false` at
    /// once while the list is empty.
    pub fn refuses(&self, t: &TokenFacts<'_>, now: u64) -> bool {
        self.inner.list.load().refusing(t, now).is_some()
    }

    /// Puts `list` in force.
    pub fn install(&self, list: RevocationList) {
        self.inner.list.store(Arc::new(list));
    }

    /// Notes that the list equals its source as of `now_ms` (Unix milliseconds).
    pub fn mark_synced(&self, now_ms: u64) {
        self.inner.synced_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// When the list was last known to equal its source (Unix ms), if ever.
    pub fn synced_ms(&self) -> Option<u64> {
        Some(self.inner.synced_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// How long, at `now_ms`, since the list was last known to equal its source (since the
    /// handle was made, when never); 0 without a source.
    pub fn age_ms(&self, now_ms: u64) -> u64 {
        if !self.inner.followed {
            return 0;
        }
        now_ms.saturating_sub(self.synced_ms().unwrap_or(self.inner.created_ms))
    }

    /// Counts a record of the source that was refused.
    pub fn count_refused(&self) {
        self.inner.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a snapshot write that failed.
    pub fn count_snapshot_failure(&self) {
        self.inner.snapshot_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Snapshot writes that failed so far.
    pub fn snapshot_failures(&self) -> u64 {
        self.inner.snapshot_failures.load(Ordering::Relaxed)
    }

    /// Records of the source refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }
}
