//! What rustls asks, during each handshake, for the certificate to present.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::CertSet;

/// Chooses each handshake's certificate by its SNI from the current [`CertSet`], which
/// [`SniResolver::replace`] swaps whole. A client that sends no name (or an IP address,
/// which SNI cannot carry) gets no certificate, and its handshake fails: every name the router
/// serves is a DNS name, and a default certificate would present one tenant's name to
/// whoever asks for none.
#[derive(Debug)]
pub struct SniResolver {
    set: ArcSwap<CertSet>,
}

impl SniResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        Self {
            set: ArcSwap::from_pointee(set),
        }
    }

    /// Serves `set` from the next handshake on.
    pub fn replace(&self, set: CertSet) {
        self.set.store(Arc::new(set));
    }

    /// The set served now.
    pub fn current(&self) -> Arc<CertSet> {
        self.set.load_full()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        self.set.load().find(name).cloned()
    }
}
