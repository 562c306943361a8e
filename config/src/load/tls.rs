//! `[tls]`: the HTTPS listener and the certificates it chooses from by SNI.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

/// `[tls]`: `None` inside the `Some` when the file has no such section (plain HTTP only).
/// `server`, when its section parsed, is what the HTTPS address must not clash with.
pub(super) fn parse(
    root: &DeTable<'_>,
    base: &Path,
    server: Option<&ServerSettings>,
    p: &mut Problems<'_>,
) -> Option<Option<TlsListenerSettings>> {
    let before = p.list.len();
    let mut s = Section::open(root, "tls", p);
    if !s.present() {
        s.finish(p);
        return (p.list.len() == before).then_some(None);
    }
    let listen = super::section_listen(
        &mut s,
        "the HTTPS listener",
        "0.0.0.0:443",
        &[
            server.map(|s| (s.listen, "server.listen")),
            server.and_then(|s| s.admin_listen.map(|a| (a, "server.admin_listen"))),
        ],
        p,
    );
    let (certificates, reload_interval) = certificate_sources(&mut s, base, p);
    s.finish(p);
    if p.list.len() != before {
        return None;
    }
    Some(Some(TlsListenerSettings {
        listen: listen?,
        certificates: certificates?,
        reload_interval,
    }))
}

/// A section's `certificates` (required, not empty: PEM files or directories of them,
/// relative to `base`) and `reload_interval`: `[tls]`'s, and `[admin_api]`'s when it serves
/// HTTPS.
pub(super) fn certificate_sources(
    s: &mut Section<'_, '_>,
    base: &Path,
    p: &mut Problems<'_>,
) -> (Option<Vec<PathBuf>>, Duration) {
    let certificates_at = s.raw("certificates").map(|v| v.span().start);
    let certificates = s.strings("certificates", p, |c| {
        if c.is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(base.join(c))
        }
    });
    if certificates.as_ref().is_some_and(Vec::is_empty) || certificates_at.is_none() {
        p.push(
            s.key("certificates"),
            certificates_at,
            "lists no certificate: name PEM files each holding a certificate chain and its \
             key, or directories of such files (*.pem)",
        );
    }
    let reload_interval = s
        .duration(
            "reload_interval",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(DEFAULT_RELOAD_INTERVAL);
    (certificates, reload_interval)
}

/// How often the certificate files are read again when `reload_interval` is not set.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
