//! One GET of the provider's key set, over Pingora's HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use pingora::connectors::http::v1::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;

use crate::auth::MAX_JWKS_BYTES;

/// Why a fetch brought no key set. The URL is not repeated: every line names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The provider's name has no address (or could not be looked up).
    #[error("cannot resolve {host}: {why}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's words.
        why: String,
    },
    /// No connection, TLS handshake (an unknown or wrong certificate) or exchange succeeded.
    #[error("{0}")]
    Connect(String),
    /// The whole fetch took longer than `jwks_fetch_timeout`.
    #[error("no answer within {0:?} (auth.jwks_fetch_timeout)")]
    Timeout(Duration),
    /// A redirect, which is not followed: it could lead to a plain-http or another host's
    /// key set, and a key set's address is the operator's to set.
    #[error("answered {status} to {location:?}: redirects are not followed; set auth.jwks_url to where the keys are")]
    Redirected {
        /// The status, 3xx.
        status: u16,
        /// Its `Location`, as sent (lossy).
        location: String,
    },
    /// Any other status but 200 (after any 1xx).
    #[error("answered {0}, not 200")]
    Status(u16),
    /// A body past [`MAX_JWKS_BYTES`].
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

/// What a fetch brought.
#[derive(Debug)]
pub(super) struct Fetched {
    /// The key set's text, or `None` when the provider answered `304 Not Modified` to an
    /// `If-None-Match`: the set it validated is still the one.
    pub(super) body: Option<Vec<u8>>,
    /// How long the provider says the set may be kept: `Cache-Control: max-age` less `Age`
    /// (0 for `no-cache` and `no-store`).
    pub(super) max_age: Option<Duration>,
    /// The set's `ETag`, to ask with next time (when it is one a request may carry back).
    pub(super) etag: Option<String>,
}

/// The longest `ETag` kept: a validator is an opaque short string; a longer one is not
/// sent back (the next fetch is then a plain one).
const MAX_ETAG_BYTES: usize = 256;

/// Informational answers (`103 Early Hints` from a CDN) read past before the real one.
const MAX_INFORMATIONAL: usize = 4;

/// Pingora's HTTP/1.1 client with the CA roots the provider is verified against.
pub(super) struct Client {
    connector: Connector,
}

impl Client {
    /// With `ca_file` (checked before), or the system's roots. Pingora builds its TLS client
    /// with an `unwrap`: a root store it cannot read (a bad `SSL_CERT_FILE`) is an error here,
    /// not a panic.
    pub(super) fn new(ca_file: Option<&std::path::Path>) -> Result<Client, String> {
        let mut options = ConnectorOptions::new(0);
        options.ca_file = ca_file.map(|p| p.display().to_string());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Connector::new(Some(options))
        }))
        .map(|connector| Client { connector })
        .map_err(|_| {
            "the TLS client could not be built (are the system's CA roots, or \
                 SSL_CERT_FILE, readable?)"
                .to_owned()
        })
    }

    /// GET `url`: to each address of its name in turn until one answers, each given its
    /// share of `timeout` to connect (a first address that drops packets, an IPv6 one a
    /// network cannot reach, must not take it all). Unbounded in time as a whole (the caller
    /// bounds it). With `if_none_match`, the set it names may be answered `304`.
    pub(super) async fn get(
        &self,
        url: &url::Url,
        timeout: Duration,
        if_none_match: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let host = url.host_str().unwrap_or_default();
        // `[::1]` is looked up without its brackets.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| FetchError::Resolve {
                host: host.to_owned(),
                why: e.to_string(),
            })?
            .collect();
        let share = u32::try_from(addrs.len()).unwrap_or(u32::MAX).max(1);
        let connect = (timeout / share).max(Duration::from_secs(1)).min(timeout);
        let mut last = FetchError::Resolve {
            host: host.to_owned(),
            why: "no address".to_owned(),
        };
        for addr in addrs {
            match self.get_from(url, addr, bare, connect, if_none_match).await {
                Err(FetchError::Connect(why)) => last = FetchError::Connect(why),
                other => return other,
            }
        }
        Err(last)
    }

    /// GET `url` from one address.
    async fn get_from(
        &self,
        url: &url::Url,
        addr: SocketAddr,
        host: &str,
        connect_timeout: Duration,
        if_none_match: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let failed = |e: Box<pingora::Error>| FetchError::Connect(format!("{addr}: {e}"));
        // The name is the SNI and what the certificate must carry (never empty: the config
        // refuses a URL without a host).
        let mut peer = HttpPeer::new(addr, url.scheme() == "https", host.to_owned());
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.total_connection_timeout = Some(connect_timeout);
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(failed)?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = RequestHeader::build("GET", target.as_bytes(), None).map_err(failed)?;
        let authority = match url.port() {
            Some(p) => format!(
                "{host_str}:{p}",
                host_str = url.host_str().unwrap_or_default()
            ),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        for (name, value) in [
            ("host", authority.as_str()),
            ("accept", "application/jwk-set+json, application/json"),
            (
                "user-agent",
                concat!("nexus-edge/", env!("CARGO_PKG_VERSION")),
            ),
            ("connection", "close"),
        ] {
            request.insert_header(name, value).map_err(failed)?;
        }
        if let Some(etag) = if_none_match {
            request
                .insert_header("if-none-match", etag)
                .map_err(failed)?;
        }
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(failed)?;
        let mut head = session.read_resp_header_parts().await.map_err(failed)?;
        let mut informational = 0;
        while head.status.is_informational() {
            informational += 1;
            if informational > MAX_INFORMATIONAL {
                return Err(FetchError::Status(head.status.as_u16()));
            }
            head = session.read_resp_header_parts().await.map_err(failed)?;
        }
        let status = head.status.as_u16();
        if status == 304 && if_none_match.is_some() {
            session.shutdown().await;
            return Ok(Fetched {
                body: None,
                max_age: max_age(&head.headers),
                etag: etag(&head.headers),
            });
        }
        if (300..400).contains(&status) && status != 304 {
            let location = head
                .headers
                .get(http::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            return Err(FetchError::Redirected {
                status,
                location: location.unwrap_or_default(),
            });
        }
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let mut body = BytesMut::new();
        while let Some(piece) = session.read_body_bytes().await.map_err(failed)? {
            if body.len() + piece.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&piece);
        }
        session.shutdown().await;
        Ok(Fetched {
            body: Some(body.to_vec()),
            max_age: max_age(&head.headers),
            etag: etag(&head.headers),
        })
    }
}

/// The response's `ETag`, when it is one a request can carry back as it came: one, of
/// visible ASCII (`W/` and quotes included), at most [`MAX_ETAG_BYTES`].
pub(super) fn etag(headers: &http::HeaderMap) -> Option<String> {
    let mut all = headers.get_all(http::header::ETAG).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let bytes = value.as_bytes();
    let visible = !bytes.is_empty()
        && bytes.len() <= MAX_ETAG_BYTES
        && bytes.iter().all(u8::is_ascii_graphic);
    visible.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// How long a response may be kept (RFC 9111 §4.2.1): `Cache-Control: max-age` less `Age`;
/// `no-cache` and `no-store` read as 0, asking for the shortest interval allowed. Two
/// `max-age`s that disagree: the shorter.
pub(super) fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive
                .split_once('=')
                .map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
            if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age") {
                let seconds = arg
                    .map(|a| a.trim_matches('"'))
                    .and_then(|a| a.parse::<u64>().ok());
                if let Some(s) = seconds {
                    found = Some(found.map_or(s, |f| f.min(s)));
                }
            }
        }
    }
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    found.map(|s| Duration::from_secs(s.saturating_sub(age)))
}

#[cfg(test)]
mod tests {
    use super::{etag, max_age};

    #[test]
    fn an_etag_is_kept_only_when_it_can_be_sent_back_as_it_came() {
        let with = |values: &[&[u8]]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(
                    http::header::ETAG,
                    http::HeaderValue::from_bytes(v).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            etag(&h)
        };
        assert_eq!(with(&[b"\"v1\""]).as_deref(), Some("\"v1\""));
        assert_eq!(with(&[b"W/\"v1\""]).as_deref(), Some("W/\"v1\""));
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[b"\"a\"", b"\"b\""]), None, "two: which one?");
        assert_eq!(with(&[b"\"with space\""]), None);
        assert_eq!(with(&[b"\"caf\xc3\xa9\""]), None);
        assert_eq!(with(&["\"x".repeat(200).as_bytes()]), None, "too long");
    }

    #[test]
    fn max_age_read_from_cache_control_less_age() {
        let with = |values: &[(&'static str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (n, v) in values {
                h.append(http::HeaderName::from_static(n), v.parse().expect("value"));
            }
            max_age(&h).map(|d| d.as_secs())
        };
        let cc = "cache-control";
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[(cc, "public, max-age=3600")]), Some(3600));
        assert_eq!(with(&[(cc, "Max-Age = \"60\"")]), Some(60));
        assert_eq!(with(&[(cc, "max-age=600"), (cc, "max-age=60")]), Some(60));
        assert_eq!(with(&[(cc, "public, max-age=60, no-cache")]), Some(0));
        assert_eq!(with(&[(cc, "no-store")]), Some(0));
        assert_eq!(with(&[(cc, "max-age=soon")]), None);
        assert_eq!(with(&[(cc, "must-revalidate")]), None);
        // Kept by a cache in front for a while already.
        assert_eq!(with(&[(cc, "max-age=600"), ("age", "100")]), Some(500));
        assert_eq!(with(&[(cc, "max-age=600"), ("age", "900")]), Some(0));
        assert_eq!(with(&[("age", "100")]), None);
    }
}
