//! The HTTPS listener's certificates: read from PEM files, indexed by the names they cover,
//! chosen for each handshake by the name the client asks for (SNI), and replaced while the
//! router runs.
//!
//! - [`CertFiles`] reads the configured files and directories again at each reload and keeps,
//!   for every file, the certificate it last read well: a file that stops parsing (half
//!   written, a key that does not match its certificate) goes on serving its previous
//!   certificate and is reported, so one bad upload changes nothing else.
//! - [`CertSet`] indexes certificates by exact name and by the parent of a wildcard name.
//! - [`SniResolver`] is what rustls asks during a handshake: it holds the current set behind
//!   an `ArcSwap`, so a reload is one swap, and a handshake under way keeps the set it began
//!   with.
//!
//! rustls is used with its `ring` provider, the one Pingora's own TLS is built with: a second
//! provider compiled in (aws-lc-rs, rustls's default) would leave rustls unable to pick one.

mod error;
mod files;
mod load;
mod names;
mod resolver;
mod set;

pub use error::CertError;
pub use files::{CertFiles, Reload};
pub use load::{parse_pem, validity, LoadedCert, Validity, MAX_FILE_BYTES};
pub use names::sni_key;
pub use resolver::SniResolver;
pub use set::CertSet;

/// What rustls's handshake needs of a certificate: the chain and its signing key.
pub use rustls::sign::CertifiedKey;

/// The time now, in Unix seconds, as certificates' validity is compared with (0 for a clock
/// before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
