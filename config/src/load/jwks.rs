//! Where `[auth]` takes its verification keys from: `jwks_file`, or `jwks_url` with the
//! settings of a fetched key set (see [`RemoteJwks`]).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::NamedFiles;

/// The keys that only a fetched key set reads.
const URL_ONLY: [&str; 6] = [
    "jwks_ca_file",
    "jwks_refresh_interval",
    "jwks_min_refresh_interval",
    "jwks_fetch_timeout",
    "jwks_cache_file",
    "jwks_max_staleness",
];

/// Defaults of a fetched key set's timings (`jwks_max_staleness`: at least three refreshes).
const REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(5);
const STALENESS: Duration = Duration::from_secs(3600);

/// The key set's source. Exactly one of `jwks_file` and `jwks_url` is set; keys of the other
/// kind are refused rather than ignored (an operator who sets `jwks_refresh_interval` beside a
/// file believes it does something).
pub(super) fn parse(
    s: &mut Section<'_, '_>,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<JwksSource> {
    let file_at = s.raw("jwks_file").map(|v| v.span().start);
    let url_at = s.raw("jwks_url").map(|v| v.span().start);
    // Known whichever source is set: a wrong source is said once, not as unknown keys too.
    s.allow(&URL_ONLY);
    match (file_at, url_at) {
        (Some(_), Some(at)) => {
            p.push(
                "auth.jwks_url",
                Some(at),
                "auth.jwks_file names the key set already: keep one of the two",
            );
            None
        }
        (None, None) => {
            p.push(
                "auth.jwks_file",
                None,
                "is required (the JWKS file with the token verification keys), or \
                 auth.jwks_url (where the identity provider publishes them)",
            );
            None
        }
        (Some(_), None) => {
            for k in URL_ONLY {
                if let Some(v) = s.raw(k) {
                    p.push(
                        format!("auth.{k}"),
                        Some(v.span().start),
                        "applies to a key set fetched from auth.jwks_url, not to auth.jwks_file",
                    );
                }
            }
            named.jwks_file = s.path("jwks_file", base, p);
            named.jwks_file.clone().map(JwksSource::File)
        }
        (None, Some(_)) => {
            if let Some(v) = s.raw("jwks_poll_interval") {
                p.push(
                    "auth.jwks_poll_interval",
                    Some(v.span().start),
                    "applies to auth.jwks_file; a fetched key set is refreshed every \
                     auth.jwks_refresh_interval",
                );
            }
            remote(s, base, p).map(|r| JwksSource::Url(Box::new(r)))
        }
    }
}

/// `jwks_url` and its settings, each checked, then their bounds on one another.
fn remote(s: &mut Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Option<RemoteJwks> {
    let before = p.list.len();
    let url = s.string("jwks_url", p).and_then(|(v, at)| {
        jwks_url(&v)
            .map_err(|m| p.push("auth.jwks_url", Some(at), m))
            .ok()
    });
    let ca_file = s.path("jwks_ca_file", base, p);
    let cache_file = s.path("jwks_cache_file", base, p);
    let mut timing = |k: &'static str, min: u64, max: u64, default: Duration| {
        let at = s.raw(k).map(|v| v.span().start);
        let d = s.duration(k, Duration::from_secs(min), Duration::from_secs(max), p);
        (d.unwrap_or(default), at)
    };
    let (refresh_interval, _) = timing("jwks_refresh_interval", 10, 24 * 3600, REFRESH);
    let (min_refresh_interval, min_at) = timing("jwks_min_refresh_interval", 1, 3600, MIN_REFRESH);
    let (timeout, _) = timing("jwks_fetch_timeout", 1, 60, TIMEOUT);
    // By default an hour, or three refresh intervals when those are longer.
    let stale_default = STALENESS.max(refresh_interval.saturating_mul(3));
    let (max_staleness, stale_at) = timing("jwks_max_staleness", 60, 30 * 86_400, stale_default);
    if p.list.len() != before {
        return None;
    }
    if min_refresh_interval > refresh_interval {
        p.push(
            "auth.jwks_min_refresh_interval",
            min_at,
            "must not be longer than auth.jwks_refresh_interval",
        );
    }
    if max_staleness <= refresh_interval {
        p.push(
            "auth.jwks_max_staleness",
            stale_at,
            "must be longer than auth.jwks_refresh_interval: keys would read stale between \
             two fetches",
        );
    }
    (p.list.len() == before).then_some(RemoteJwks {
        url: url?,
        ca_file,
        refresh_interval,
        min_refresh_interval,
        timeout,
        cache_file,
        max_staleness,
    })
}

/// A JWKS URL the router may fetch keys from: `https://`, or `http://` to a loopback address
/// written as one (keys read in the clear over a network could be replaced by anyone on the
/// path, and with them every tenant's tokens forged; a name such as `localhost` is resolved,
/// and could resolve elsewhere). No user info (it would be logged with the URL), no fragment
/// (never sent, so not what the writer meant).
fn jwks_url(v: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(v).map_err(|e| format!("{v:?} is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(_)) | None => false,
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a).is_loopback(),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a).is_loopback(),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{v:?} is plain http to another host: keys fetched in the clear could be \
                 replaced on the way, and tokens forged with them; use https:// (http:// is \
                 taken for a loopback address written as one, 127.0.0.1 or [::1])"
            ))
        }
        other => return Err(format!("{v:?}: scheme {other:?}, not https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{v:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("holds a user name or password, which would be logged with the URL".to_owned());
    }
    if url.fragment().is_some() {
        return Err(format!(
            "{v:?} has a fragment (#...), which is never sent: leave it out"
        ));
    }
    if url.port() == Some(0) {
        return Err(format!("{v:?} has port 0, which connects nowhere"));
    }
    Ok(url)
}

/// The files the router reads or writes for something else, which `jwks_cache_file` may not
/// name: each fetch would write over it. Compared as written (relative to the config's
/// folder), not through links.
pub(super) struct OtherFiles<'a> {
    pub(super) config: &'a Path,
    pub(super) upstream: Option<&'a UpstreamSettings>,
    pub(super) store: Option<&'a StoreSettings>,
    pub(super) revocation: Option<&'a RevocationSettings>,
    pub(super) tls: Option<&'a TlsListenerSettings>,
}

/// `jwks_cache_file` naming one of [`OtherFiles`] (the config, the bindings file, a snapshot,
/// the revocations, a CA bundle, a certificate, their audit logs).
pub(super) fn cache_file_problem(
    auth: Option<&AuthSettings>,
    others: OtherFiles<'_>,
    p: &mut Problems<'_>,
) {
    let OtherFiles {
        config,
        upstream,
        store,
        revocation,
        tls,
    } = others;
    let Some(JwksSource::Url(remote)) = auth.map(|a| &a.jwks) else {
        return;
    };
    let Some(cache) = &remote.cache_file else {
        return;
    };
    let with_suffix = |path: &Path, suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let mut taken: Vec<(std::path::PathBuf, &str)> =
        vec![(config.to_path_buf(), "the config file")];
    for cert in tls.iter().flat_map(|t| &t.certificates) {
        taken.push((cert.clone(), "a tls.certificates file"));
    }
    if let Some(ca) = &remote.ca_file {
        taken.push((ca.clone(), "auth.jwks_ca_file"));
    }
    if let Some(ca) = upstream.and_then(|u| u.ca_file.as_ref()) {
        taken.push((ca.clone(), "upstream.ca_file"));
    }
    match store {
        Some(StoreSettings::File(f)) => {
            if let Some(path) = &f.path {
                taken.push((path.clone(), "store.path"));
                taken.push((with_suffix(path, ".audit.jsonl"), "store.path's audit log"));
            }
        }
        Some(StoreSettings::Redis(r)) => {
            if let Some(ca) = &r.tls.ca_file {
                taken.push((ca.clone(), "store.tls.ca_file"));
            }
            if let Some((cert, key)) = &r.tls.client_cert {
                taken.push((cert.clone(), "store.tls's client certificate"));
                taken.push((key.clone(), "store.tls's client key"));
            }
            if let Some(path) = &r.snapshot_path {
                taken.push((path.clone(), "store.snapshot_path"));
                taken.push((
                    with_suffix(path, ".revocations.json"),
                    "store.snapshot_path's revocations snapshot",
                ));
            }
        }
        None => {}
    }
    if let Some(RevocationSource::File(path)) = revocation.map(|r| &r.source) {
        taken.push((path.clone(), "revocation.file"));
        taken.push((
            with_suffix(path, ".audit.jsonl"),
            "revocation.file's audit log",
        ));
    }
    if let Some((_, what)) = taken.iter().find(|(path, _)| path == cache) {
        p.push(
            "auth.jwks_cache_file",
            None,
            format!(
                "is {what}: every fetch would write the key set over it; name a file of its own"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::jwks_url;

    #[test]
    fn urls_taken_and_refused() {
        for ok in [
            "https://id.example.com/.well-known/jwks.json",
            "https://id.example.com:8443/keys?v=2",
            "http://127.0.0.1:9000/jwks",
            "http://[::1]/jwks",
        ] {
            assert!(jwks_url(ok).is_ok(), "{ok}");
        }
        for (bad, said) in [
            ("http://id.example.com/jwks", "plain http"),
            ("http://10.0.0.1/jwks", "plain http"),
            ("http://localhost/jwks", "plain http"),
            ("ftp://id.example.com/jwks", "scheme"),
            ("https://u:p@id.example.com/jwks", "password"),
            ("https://id.example.com/jwks#k", "fragment"),
            ("https://id.example.com:0/jwks", "port 0"),
            ("id.example.com/jwks", "not a URL"),
        ] {
            let e = jwks_url(bad).expect_err(bad);
            assert!(e.contains(said), "{bad}: {e}");
        }
        // The password is never repeated in the message.
        assert!(!jwks_url("https://u:hunter2@id.example.com/")
            .expect_err("password")
            .contains("hunter2"));
    }
}
