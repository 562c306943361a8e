//! One PEM file → one certificate ready for handshakes, with the names it covers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::names::{covered, Covered};
use crate::CertError;

/// The largest certificate file read: a chain of a few certificates and a key is a few KiB,
/// and a file past this is not one.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A certificate file that parsed: its chain and key, and what the leaf covers.
#[derive(Debug)]
pub struct LoadedCert {
    /// The file it came from.
    pub path: PathBuf,
    /// The chain and signing key handshakes use.
    pub key: Arc<CertifiedKey>,
    /// The leaf's subjectAltName DNS entries the index keeps.
    pub(crate) covered: Vec<Covered>,
    /// The leaf's `notBefore`, Unix seconds.
    pub not_before: i64,
    /// The leaf's `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// Where a certificate stands at a given time: clients refuse it outside its validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Before its `notBefore` (a renewal staged early).
    NotYet,
    /// Within its validity.
    Valid,
    /// Past its `notAfter`.
    Expired,
}

/// The validity at Unix time `now` of a certificate valid from `not_before` to `not_after`
/// (an expiry before its start reads as expired).
pub fn validity(not_before: i64, not_after: i64, now: i64) -> Validity {
    if not_after < now {
        Validity::Expired
    } else if not_before > now {
        Validity::NotYet
    } else {
        Validity::Valid
    }
}

impl LoadedCert {
    /// The certificate's validity at Unix time `now`.
    pub fn validity_at(&self, now: i64) -> Validity {
        validity(self.not_before, self.not_after, now)
    }

    /// The names the certificate covers, as written in it (lowercase; `*.` for wildcards).
    pub fn names(&self) -> impl Iterator<Item = String> + '_ {
        self.covered.iter().map(|c| match c {
            Covered::Exact(n) => n.clone(),
            Covered::Wildcard(p) => format!("*.{p}"),
        })
    }
}

/// Reads `path`: a regular file (a symbolic link to one is followed, as certbot's `live/`
/// names are) of at most [`MAX_FILE_BYTES`].
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    use std::io::Read;
    let err = |reason: String| CertError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Parses the PEM text of a certificate file (`path` names it in errors): the certificate
/// chain, leaf first, and exactly one private key (PKCS #8, PKCS #1 RSA or SEC1 EC), in any
/// order; other PEM sections are passed over. The key must be the leaf's.
pub fn parse_pem(bytes: &[u8], path: &Path) -> Result<LoadedCert, CertError> {
    let path_buf = || path.to_path_buf();
    let mut chain = Vec::new();
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = section.map_err(|e| CertError::Pem {
            path: path_buf(),
            reason: e.to_string(),
        })?;
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey => keys.push(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => keys.push(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => keys.push(PrivateKeyDer::Sec1(der.into())),
            _ => {}
        }
    }
    if chain.is_empty() {
        return Err(CertError::NoCertificate { path: path_buf() });
    }
    if keys.len() != 1 {
        return Err(CertError::KeyCount {
            path: path_buf(),
            found: keys.len(),
        });
    }
    let (covered, not_before, not_after) = leaf_facts(&chain[0], path)?;
    let provider = rustls::crypto::ring::default_provider();
    let key = keys.remove(0);
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            CertError::KeyMismatch { path: path_buf() }
        }
        other => CertError::KeyUnusable {
            path: path_buf(),
            reason: other.to_string(),
        },
    })?;
    Ok(LoadedCert {
        path: path_buf(),
        key: Arc::new(certified),
        covered,
        not_before,
        not_after,
    })
}

/// The names the leaf covers (its subjectAltName DNS entries that a client could match), its
/// `notBefore` and its `notAfter`.
fn leaf_facts(
    leaf: &CertificateDer<'_>,
    path: &Path,
) -> Result<(Vec<Covered>, i64, i64), CertError> {
    let bad = |reason: String| CertError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
            if let Some(c) = covered(dns) {
                if !names.contains(&c) {
                    names.push(c);
                }
            }
        }
    }
    if names.is_empty() {
        return Err(CertError::NoNames {
            path: path.to_path_buf(),
        });
    }
    let validity = cert.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}
