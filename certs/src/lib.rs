//! Certificate selection by SNI for the HTTPS listener.
//!
//! HTTPS is a later milestone; this crate currently only fixes the place where the
//! certificate set, its rustls resolver and its reloader will live, so that `proxy`
//! depends on it from the start and the TLS work slots in without moving code.

/// Errors from loading certificates (filled in with the HTTPS milestone).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A certificate or key file could not be read.
    #[error("cannot read certificate file {path}: {reason}")]
    Read {
        /// The file that failed.
        path: String,
        /// Why it failed.
        reason: String,
    },
}
