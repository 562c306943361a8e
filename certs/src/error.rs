//! Why a certificate file was not taken.

use std::path::PathBuf;

/// A certificate file (or a directory of them) that could not be used, and why. Every
/// variant names the file, so a log line or `nexus-edge check` points at it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The file or directory could not be read (missing, no permission, too large, not a
    /// regular file).
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// The PEM text is malformed.
    #[error("{path}: not PEM: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The file holds no certificate.
    #[error("{path}: holds no certificate (a PEM file here holds the certificate chain, leaf first, then its private key)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no private key, or more than one.
    #[error(
        "{path}: holds {found} private keys; it must hold exactly one, the leaf certificate's"
    )]
    KeyCount {
        /// The file.
        path: PathBuf,
        /// How many it holds.
        found: usize,
    },
    /// The private key is of a kind the TLS library cannot sign with.
    #[error("{path}: the private key cannot be used: {reason}")]
    KeyUnusable {
        /// The file.
        path: PathBuf,
        /// What the TLS library said.
        reason: String,
    },
    /// The private key is not the leaf certificate's.
    #[error("{path}: the private key does not belong to the first certificate (the leaf must come first)")]
    KeyMismatch {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate does not parse as X.509.
    #[error("{path}: the first certificate is not valid X.509: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The leaf certificate names no DNS name a client could ask for (subjectAltName).
    #[error("{path}: the certificate names no DNS name in its subjectAltName (clients ignore the common name)")]
    NoNames {
        /// The file.
        path: PathBuf,
    },
}
