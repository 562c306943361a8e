//! The Redis endpoint of `[store]`: its URL, Sentinel, TLS files.

use std::path::Path;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::{env_problem, pem_file, Pem};

/// A Redis URL's `#fragment` is refused: redis-rs reads `#insecure` as "skip the server
/// certificate check", which this build neither does nor lets a config ask for (server
/// certificates are always verified), and no other fragment means anything to it.
fn fragment_problem(u: &str) -> Option<&'static str> {
    u.contains('#').then_some(
        "has a #fragment; none is used (#insecure would skip the server certificate check, \
         which nexus-edge never does: give the server's CA in [store.tls] ca_file)",
    )
}

/// Said of every Redis URL problem that an unencoded character of a password may have caused:
/// the URL's text (and so the password's pieces) is never in the message.
const ENCODE_PASSWORD: &str = "a password holding /, ?, # or @ must be percent-encoded";

/// A TCP Redis URL as redis-rs reads it, judged here (`Ok(None)`: not a TCP URL): one that
/// does not parse, names no host or has port 0 fails only at start-up otherwise, with the
/// URL's text in the message. So does an `@` past the host, in the path or the query: the
/// rest of a password with an unencoded `/` or `?` (the user info ends at the last `@` before
/// the host), which would be logged as the database or a query parameter. Socket URLs are
/// judged by redis-rs (their password is a query parameter, where an `@` is a password's own).
fn tcp_redis_url(u: &str) -> Result<Option<url::Url>, String> {
    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
        return Ok(None);
    }
    let parsed =
        url::Url::parse(u).map_err(|e| format!("is not a valid URL ({e}; {ENCODE_PASSWORD})"))?;
    if parsed.path().contains('@') || parsed.query().is_some_and(|q| q.contains('@')) {
        return Err(format!(
            "holds an @ past its host, the rest of a password ({ENCODE_PASSWORD})"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("names no host ({ENCODE_PASSWORD})"));
    }
    if parsed.port() == Some(0) {
        return Err("has port 0, which connects nowhere".to_owned());
    }
    Ok(Some(parsed))
}

/// A primary's Redis URL: [`tcp_redis_url`], and its database, which past 1023 (the bound
/// `[store.sentinel] db` has; Redis's own default is 16) or not a number fails only at
/// start-up otherwise. Unix-socket URLs name theirs in the query.
fn endpoint_problem(u: &str) -> Option<String> {
    let parsed = match tcp_redis_url(u) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return None,
        Err(m) => return Some(m),
    };
    let db = parsed.path().trim_start_matches('/');
    if db.is_empty() {
        return None;
    }
    match db.parse::<u32>() {
        Ok(n) if n <= 1023 => None,
        _ => Some(format!(
            "names a database that is no number from 0 to 1023 ({ENCODE_PASSWORD})"
        )),
    }
}

fn is_redis_url(u: &str) -> bool {
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| u.starts_with(scheme))
}

/// `url` or `[store.sentinel]`, exactly one.
pub(super) fn redis_endpoint(
    s: &mut Section<'_, '_>,
    p: &mut Problems<'_>,
) -> Option<RedisEndpointSettings> {
    let url = s.string("url", p);
    let mut sentinel = s.nested("sentinel", "store.sentinel", p);
    let endpoint = match (url, sentinel.present()) {
        (Some((u, at)), true) => {
            p.push(
                "store.url",
                None,
                "give either url or [store.sentinel], not both",
            );
            // Each is checked all the same: every problem is said at once, not the next one
            // only after this is fixed.
            url_endpoint(u, at, p);
            sentinel_settings(&mut sentinel, p);
            None
        }
        (None, false) => {
            p.push(
                "store.url",
                None,
                "is required for kind = \"redis\" (or configure [store.sentinel])",
            );
            None
        }
        (Some((u, at)), false) => url_endpoint(u, at, p),
        (None, true) => sentinel_settings(&mut sentinel, p).map(RedisEndpointSettings::Sentinel),
    };
    // Its keys are read whether or not it is the endpoint (beside a url too: every problem
    // at once), so an unknown one is named either way.
    sentinel.finish(p);
    endpoint
}

/// `store.url` (`u`, at line `at`) as the endpoint, or its problem.
fn url_endpoint(u: String, at: usize, p: &mut Problems<'_>) -> Option<RedisEndpointSettings> {
    let problem = if !is_redis_url(&u) {
        "is not a redis://, rediss://, redis+unix:// or unix:// URL".to_owned()
    } else if let Some(m) = fragment_problem(&u)
        .map(str::to_owned)
        .or_else(|| endpoint_problem(&u))
    {
        m
    } else {
        return Some(RedisEndpointSettings::Url(u));
    };
    p.push("store.url", Some(at), problem);
    None
}

fn sentinel_settings(s: &mut Section<'_, '_>, p: &mut Problems<'_>) -> Option<SentinelSettings> {
    let before = p.list.len();
    let master_name = match s.required_string("master_name", p) {
        Some((v, at)) if v.is_empty() => {
            p.push("store.sentinel.master_name", Some(at), "must not be empty");
            None
        }
        Some((v, at)) if v.trim() != v || v.chars().any(char::is_control) => {
            p.push(
                "store.sentinel.master_name",
                Some(at),
                format!(
                    "{v:?} has blanks at an end or control characters: no Sentinel would know \
                     the master by that name"
                ),
            );
            None
        }
        other => other.map(|(v, _)| v),
    };
    let nodes = match s.strings("nodes", p, |v| {
        if let Some(m) = fragment_problem(v) {
            Err(m.to_owned())
        } else if v.starts_with("redis://") || v.starts_with("rediss://") {
            tcp_redis_url(v).map(|_| v.to_owned())
        } else {
            Err("is not a redis:// or rediss:// URL (Sentinels are reached over TCP)".to_owned())
        }
    }) {
        Some(n) if n.is_empty() => {
            p.push(
                "store.sentinel.nodes",
                None,
                "must list at least one Sentinel",
            );
            None
        }
        None if s.raw("nodes").is_none() => {
            p.push("store.sentinel.nodes", None, "is required");
            None
        }
        other => other,
    };
    if nodes.as_ref().is_some_and(|n| {
        n.iter().any(|u| u.starts_with("rediss://")) && n.iter().any(|u| u.starts_with("redis://"))
    }) {
        p.push(
            "store.sentinel.nodes",
            None,
            "mixes redis:// and rediss://; every Sentinel must use the same",
        );
    }
    let tls = s.boolean("tls", p).unwrap_or(false);
    let username = s
        .string("username", p)
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty());
    let password = match s.string("password_env", p) {
        None => None,
        Some((env, at)) => match std::env::var(&env) {
            Ok(v) if v.is_empty() => {
                p.push(
                    "store.sentinel.password_env",
                    Some(at),
                    format!("${env} is empty (a variable set from a missing secret?)"),
                );
                None
            }
            Ok(v) => Some(v),
            Err(e) => {
                p.push(
                    "store.sentinel.password_env",
                    Some(at),
                    env_problem(&env, &e),
                );
                None
            }
        },
    };
    let db = s.integer("db", 0, 1023, p).unwrap_or(0);
    if p.list.len() != before {
        return None;
    }
    Some(SentinelSettings {
        master_name: master_name?,
        nodes: nodes?,
        tls,
        username,
        password,
        db,
    })
}

/// `[store.tls]`: only meaningful when some connection uses TLS.
pub(super) fn redis_tls(
    store: &mut Section<'_, '_>,
    base: &Path,
    endpoint: Option<&RedisEndpointSettings>,
    p: &mut Problems<'_>,
) -> RedisTlsSettings {
    let mut s = store.nested("tls", "store.tls", p);
    let ca_file = pem_file(
        "store.tls.ca_file",
        s.path("ca_file", base, p),
        Pem::Certificate,
        p,
    );
    let cert = s.path("client_cert_file", base, p);
    let key = s.path("client_key_file", base, p);
    if cert.is_some() != key.is_some() {
        p.push(
            "store.tls",
            None,
            "client_cert_file and client_key_file go together",
        );
    }
    let cert = pem_file("store.tls.client_cert_file", cert, Pem::Certificate, p);
    let key = pem_file("store.tls.client_key_file", key, Pem::PrivateKey, p);
    let client_cert = cert.zip(key);
    let uses_tls = match endpoint {
        Some(RedisEndpointSettings::Url(u)) => u.starts_with("rediss://"),
        Some(RedisEndpointSettings::Sentinel(st)) => {
            st.tls || st.nodes.iter().any(|n| n.starts_with("rediss://"))
        }
        None => true,
    };
    if s.present() && !uses_tls {
        p.push(
            "store.tls",
            None,
            "is set but no connection uses TLS (use a rediss:// URL, or tls = true in [store.sentinel])",
        );
    }
    s.finish(p);
    RedisTlsSettings {
        ca_file,
        client_cert,
    }
}
