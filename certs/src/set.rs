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
    certificates: usize,
    earliest_not_after: Option<i64>,
}

impl CertSet {
    /// Indexes `certs`. Where two cover the same name (exact, or the same wildcard), the one
    /// whose `notAfter` is later serves it, so a renewed certificate placed beside the old
    /// one takes over at once; on a tie, the first given.
    pub fn build<'a>(certs: impl IntoIterator<Item = &'a LoadedCert>) -> Self {
        let mut exact: HashMap<String, (i64, Arc<CertifiedKey>)> = HashMap::new();
        let mut wildcard: HashMap<String, (i64, Arc<CertifiedKey>)> = HashMap::new();
        let mut certificates = 0;
        let mut earliest_not_after: Option<i64> = None;
        for cert in certs {
            certificates += 1;
            earliest_not_after =
                Some(earliest_not_after.map_or(cert.not_after, |e| e.min(cert.not_after)));
            for name in &cert.covered {
                let (map, key) = match name {
                    Covered::Exact(n) => (&mut exact, n),
                    Covered::Wildcard(p) => (&mut wildcard, p),
                };
                let entry = map
                    .entry(key.clone())
                    .or_insert_with(|| (cert.not_after, Arc::clone(&cert.key)));
                if cert.not_after > entry.0 {
                    *entry = (cert.not_after, Arc::clone(&cert.key));
                }
            }
        }
        let strip = |m: HashMap<String, (i64, Arc<CertifiedKey>)>| {
            m.into_iter().map(|(k, (_, v))| (k, v)).collect()
        };
        Self {
            exact: strip(exact),
            wildcard: strip(wildcard),
            certificates,
            earliest_not_after,
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

    /// How many certificates the set was built from.
    pub fn len(&self) -> usize {
        self.certificates
    }

    /// Whether the set holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certificates == 0
    }

    /// The earliest `notAfter` (Unix seconds) of the certificates, for an expiry alert.
    pub fn earliest_not_after(&self) -> Option<i64> {
        self.earliest_not_after
    }
}
