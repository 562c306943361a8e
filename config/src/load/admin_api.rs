//! `[admin_api]`: the admin API's own listener, the file of tokens it accepts, and the
//! certificates it serves HTTPS with (plain HTTP without them).

use std::path::Path;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

/// `[admin_api]`: `None` inside the `Some` when the file has no such section (no admin API).
/// `server` and `tls`, when their sections parsed, are what its address must not clash with.
pub(super) fn parse(
    root: &DeTable<'_>,
    base: &Path,
    server: Option<&ServerSettings>,
    tls: Option<&TlsListenerSettings>,
    p: &mut Problems<'_>,
) -> Option<Option<AdminApiSettings>> {
    let before = p.list.len();
    let mut s = Section::open(root, "admin_api", p);
    if !s.present() {
        s.finish(p);
        return (p.list.len() == before).then_some(None);
    }
    let listen = super::section_listen(
        &mut s,
        "the admin API's listener",
        "127.0.0.1:9091",
        &[
            server.map(|s| (s.listen, "server.listen")),
            server.and_then(|s| s.admin_listen.map(|a| (a, "server.admin_listen"))),
            tls.map(|t| (t.listen, "tls.listen")),
        ],
        p,
    );
    let tokens_at = s.raw("tokens_file").map(|v| v.span().start);
    let tokens_file = s.path("tokens_file", base, p);
    if tokens_at.is_none() {
        p.push(
            "admin_api.tokens_file",
            None,
            "is required in [admin_api]: the file listing the tokens the admin API accepts \
             (`nexus-edge admin-token --name NAME --append FILE` makes one)",
        );
    }
    // HTTPS when it names certificates (a `reload_interval` alone is a section missing them).
    let tls = if s.raw("certificates").is_some() || s.raw("reload_interval").is_some() {
        let (certificates, reload_interval) = super::tls::certificate_sources(&mut s, base, p);
        certificates.map(|certificates| {
            Some(AdminApiTls {
                certificates,
                reload_interval,
            })
        })
    } else {
        Some(None)
    };
    s.finish(p);
    if p.list.len() != before {
        return None;
    }
    Some(Some(AdminApiSettings {
        listen: listen?,
        tokens_file: tokens_file?,
        tls: tls?,
    }))
}
