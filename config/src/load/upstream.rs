//! `[upstream]`: the instance connections' timeouts and idle pool, DNS, the instance CA bundle.

use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::{pem_file, NamedFiles, Pem, MAX_TIMEOUT, MS};

pub(super) fn parse(
    root: &DeTable<'_>,
    d: &UpstreamSettings,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<UpstreamSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "upstream", p);
    let connect_timeout = s
        .duration("connect_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.connect_timeout);
    let read_timeout = s
        .duration("read_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.read_timeout);
    let write_timeout = s
        .duration("write_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.write_timeout);
    // A notification channel may stay silent for hours; a day is the most asked for.
    let tunnel_idle_timeout = s
        .duration(
            "tunnel_idle_timeout",
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
            p,
        )
        .unwrap_or(d.tunnel_idle_timeout);
    let ca_file = pem_file(
        "upstream.ca_file",
        s.path("ca_file", base, p),
        Pem::Certificate,
        p,
    );
    // For the deeper check of its certificates (`nexus-edge check`), whatever else is wrong.
    named.upstream_ca_file.clone_from(&ca_file);
    let dns_ttl = s
        .duration("dns_ttl", Duration::ZERO, MAX_TIMEOUT, p)
        .unwrap_or(d.dns_ttl);
    let dns_serve_stale = s
        .duration("dns_serve_stale", Duration::ZERO, MAX_TIMEOUT, p)
        .unwrap_or(d.dns_serve_stale);
    let idle_connections = s
        .integer("idle_connections", 1, 1_000_000, p)
        .map_or(d.idle_connections, |n| n as usize);
    let idle_connection_timeout = s
        .duration(
            "idle_connection_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.idle_connection_timeout);
    let chunked_request_bodies = s
        .choice(
            "chunked_request_bodies",
            "a way to send a body",
            &[
                ("length", ChunkedRequestBodies::Length),
                ("chunked", ChunkedRequestBodies::Chunked),
            ],
            p,
        )
        .unwrap_or(d.chunked_request_bodies);
    let with_bodies = s.strings("extension_methods_with_bodies", p, check_extension_method);
    let extension_methods_kept_alive = s
        .strings("extension_methods_kept_alive", p, |m| {
            let m = check_extension_method(m)?;
            match &with_bodies {
                Some(listed) if !listed.contains(&m) => Err(format!(
                    "{m:?} is not in extension_methods_with_bodies: its bodies are refused, so \
                     no connection carries one"
                )),
                _ => Ok(m),
            }
        })
        .unwrap_or_else(|| d.extension_methods_kept_alive.clone());
    let extension_methods_with_bodies =
        with_bodies.unwrap_or_else(|| d.extension_methods_with_bodies.clone());
    s.finish(p);
    (p.list.len() == before).then_some(UpstreamSettings {
        connect_timeout,
        read_timeout,
        write_timeout,
        tunnel_idle_timeout,
        ca_file,
        dns_ttl,
        dns_serve_stale,
        idle_connections,
        idle_connection_timeout,
        chunked_request_bodies,
        extension_methods_with_bodies,
        extension_methods_kept_alive,
    })
}

/// An extension method as a request line carries it: a token (methods are case-sensitive),
/// not a standard method in any case.
fn check_extension_method(m: &str) -> Result<String, String> {
    if !super::names::is_token(m) {
        Err(format!(
            "{m:?} is not a method name (a token, such as \"PROPFIND\")"
        ))
    } else if crate::STANDARD_METHODS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(m))
    {
        Err(format!(
            "{m:?} is a standard method: its bodies are passed on (or refused whole) whatever \
             this says"
        ))
    } else {
        Ok(m.to_owned())
    }
}
