//! `[server]`: listeners, threads, trusted proxies, the client connection bounds and the
//! shutdown's delay and grace.

use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;
use crate::IpNet;

use super::{listener_clash, MAX_TIMEOUT};

/// `[server]`; `header_bound` gets `max_request_header_bytes` whenever that key parsed (or
/// is left to its default), whatever else is wrong.
pub(super) fn parse(
    root: &DeTable<'_>,
    d: &ServerSettings,
    base: &std::path::Path,
    header_bound: &mut Option<usize>,
    p: &mut Problems<'_>,
) -> Option<ServerSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "server", p);
    let listen = s.socket_addr("listen", p).unwrap_or(d.listen);
    let (admin_listen, admin_at) = match s.string("admin_listen", p) {
        None => (d.admin_listen, None),
        Some((v, at)) if v.is_empty() => (None, Some(at)),
        Some((v, at)) => match v.parse() {
            Ok(a) => (Some(a), Some(at)),
            Err(_) => {
                p.push(
                    "server.admin_listen",
                    Some(at),
                    format!("{v:?} is not an address (\"\" turns it off)"),
                );
                (None, Some(at))
            }
        },
    };
    // A clash is the line of admin_listen, or of listen when the file leaves admin_listen to
    // its default.
    let admin_at = admin_at.or_else(|| s.raw("listen").map(|v| v.span().start));
    if let Some(clash) = admin_listen.and_then(|a| listener_clash(listen, a, "server.listen")) {
        p.push("server.admin_listen", admin_at, clash);
    }
    let threads = s
        .integer("threads", 1, 1024, p)
        .map_or(d.threads, |n| n as usize);
    // Both shutdown phases: from nothing up to ten minutes.
    let phase_max = Duration::from_secs(600);
    let shutdown_delay = s
        .duration("shutdown_delay", Duration::ZERO, phase_max, p)
        .unwrap_or(d.shutdown_delay);
    let shutdown_grace = s
        .whole_seconds(
            "shutdown_grace",
            Duration::ZERO,
            phase_max,
            "Pingora counts the grace period in seconds",
            p,
        )
        .unwrap_or(d.shutdown_grace);
    let keepalive_timeout = s
        .duration("keepalive_timeout", Duration::from_secs(1), MAX_TIMEOUT, p)
        .unwrap_or(d.keepalive_timeout);
    let client_write_timeout = s
        .duration(
            "client_write_timeout",
            Duration::from_secs(1),
            MAX_TIMEOUT,
            p,
        )
        .unwrap_or(d.client_write_timeout);
    let request_header_timeout = s
        .duration(
            "request_header_timeout",
            Duration::from_millis(100),
            MAX_TIMEOUT,
            p,
        )
        .unwrap_or(d.request_header_timeout);
    // From a minimal request with a token up to half of Pingora's own bound (1 MiB), so that a
    // header past it meets the router's 431 before Pingora's 400.
    let read = s
        .integer("max_request_header_bytes", 4096, 524_288, p)
        .map(|n| n as usize);
    *header_bound =
        s.parsed_or_default("max_request_header_bytes", read, d.max_request_header_bytes);
    let max_request_header_bytes = read.unwrap_or(d.max_request_header_bytes);
    let max_connections = s
        .integer("max_connections", 1, 10_000_000, p)
        .map_or(d.max_connections, |n| n as usize);
    let trusted_proxies = s
        .strings("trusted_proxies", p, IpNet::parse)
        .unwrap_or_else(|| d.trusted_proxies.clone());
    let upgrade_socket = upgrade_socket(&mut s, base, p);
    s.finish(p);
    (p.list.len() == before).then_some(ServerSettings {
        listen,
        admin_listen,
        threads,
        shutdown_delay,
        shutdown_grace,
        keepalive_timeout,
        client_write_timeout,
        request_header_timeout,
        max_request_header_bytes,
        max_connections,
        trusted_proxies,
        upgrade_socket,
    })
}

/// The longest path a Unix socket may be bound at (`sun_path` holds 108 bytes on Linux, the
/// last a NUL).
const MAX_SOCKET_PATH: usize = 107;

/// `upgrade_socket`: a path (relative to the config file's directory) short enough to bind.
fn upgrade_socket(
    s: &mut Section<'_, '_>,
    base: &std::path::Path,
    p: &mut Problems<'_>,
) -> Option<std::path::PathBuf> {
    let at = s.raw("upgrade_socket").map(|v| v.span().start);
    let path = s.path("upgrade_socket", base, p)?;
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        p.push(
            "server.upgrade_socket",
            at,
            format!(
                "{} is {len} bytes long; a Unix socket's path may be at most \
                 {MAX_SOCKET_PATH} (e.g. /run/nexus-edge/upgrade.sock)",
                path.display()
            ),
        );
        return None;
    }
    Some(path)
}
