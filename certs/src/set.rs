//! The certificates in use, indexed by the names they cover.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use crate::load::LoadedCert;
use crate::names::{parent, sni_key, Covered};

/// Certificates by exact name and by wildcard parent. Immutable: a reload builds a new one.
#[derive(Debug, Default)]
pub struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    serving: usize,
    earliest_not_after: Option<i64>,
    /// The first `notBefore` still to come among the certificates given: the ranking changes
    /// then, with no file changed.
    next_change: Option<i64>,
}

/// Which of two certificates naming the same serves it: one valid now before one not valid
/// yet (a renewal staged early), then the one expiring later (a renewal placed beside the
/// old file takes over at once).
type Rank = (bool, i64);

impl CertSet {
    /// Indexes `certs` as of now (see [`CertSet::build_at`]).
    pub fn build<'a>(certs: impl IntoIterator<Item = &'a LoadedCert>) -> Self {
        Self::build_at(certs, crate::unix_now())
    }

    /// Indexes `certs` at Unix time `now`. Where two cover the same name (exact, or the same
    /// wildcard), the one valid at `now` serves it before one not valid yet, then the one
    /// whose `notAfter` is later; on a tie, the first given.
    pub fn build_at<'a>(certs: impl IntoIterator<Item = &'a LoadedCert>, now: i64) -> Self {
        type Index = HashMap<String, (Rank, usize)>;
        let certs: Vec<&LoadedCert> = certs.into_iter().collect();
        let mut exact: Index = HashMap::new();
        let mut wildcard: Index = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            let rank = (
                cert.validity_at(now) != crate::Validity::NotYet,
                cert.not_after,
            );
            for name in &cert.covered {
                let (map, key) = match name {
                    Covered::Exact(n) => (&mut exact, n),
                    Covered::Wildcard(p) => (&mut wildcard, p),
                };
                let entry = map.entry(key.clone()).or_insert((rank, i));
                if rank > entry.0 {
                    *entry = (rank, i);
                }
            }
        }
        // The certificates that serve at least one name: the only ones the count and the
        // earliest expiry are about (one wholly replaced serves nothing).
        let mut serving: Vec<usize> = exact
            .values()
            .chain(wildcard.values())
            .map(|e| e.1)
            .collect();
        serving.sort_unstable();
        serving.dedup();
        let earliest_not_after = serving.iter().map(|&i| certs[i].not_after).min();
        let next_change = certs
            .iter()
            .map(|c| c.not_before)
            .filter(|&t| t > now)
            .min();
        let keys = |m: Index| {
            m.into_iter()
                .map(|(k, (_, i))| (k, Arc::clone(&certs[i].key)))
                .collect()
        };
        Self {
            exact: keys(exact),
            wildcard: keys(wildcard),
            serving: serving.len(),
            earliest_not_after,
            next_change,
        }
    }

    /// The certificate for a client asking for `server_name` (SNI): one naming it exactly,
    /// else a wildcard over its parent.
    pub fn find(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = sni_key(server_name);
        self.exact
            .get(name.as_ref())
            .or_else(|| self.wildcard.get(parent(&name)?))
    }

    /// How many certificates serve at least one name.
    pub fn len(&self) -> usize {
        self.serving
    }

    /// Whether no certificate serves.
    pub fn is_empty(&self) -> bool {
        self.serving == 0
    }

    /// When (Unix seconds) a certificate given becomes valid, which may change which serves
    /// a name: the set is to be built again then (see [`CertSet::build_at`]).
    pub fn next_change(&self) -> Option<i64> {
        self.next_change
    }

    /// The earliest `notAfter` (Unix seconds) of the certificates that serve, for an expiry
    /// alert.
    pub fn earliest_not_after(&self) -> Option<i64> {
        self.earliest_not_after
    }
}
