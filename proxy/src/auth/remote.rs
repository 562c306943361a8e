//! A key set fetched from the identity provider (`[auth] jwks_url`).
//!
//! Fetched at start, then every `jwks_refresh_interval`, sooner when the provider's
//! `Cache-Control: max-age` asks for it, and at once for a token naming a `kid` the set does
//! not hold (the provider rotated a key in): never twice within `jwks_min_refresh_interval`,
//! so a flood of made-up `kid`s costs the provider one fetch per interval per router.
//!
//! What a fetch brings is installed by [`Authenticator::install_fetched`], by the key file's
//! rules: the same content changes nothing, a set that is refused keeps the keys in use. A
//! fetch that fails (the provider away, a 5xx, a redirect, a body too large) keeps them too,
//! and is retried sooner, backing off: keys that verify tokens a little longer are better
//! than every tenant's users refused at once. How long the keys have gone unconfirmed is on
//! `/metrics` (`jwks_age_seconds`, `jwks_stale` past `jwks_max_staleness`) and said in the log.
//!
//! Each key set taken is written to `jwks_cache_file`, when set: a router starting while the
//! provider cannot be reached starts with it, and counts its age from the file's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use nexus_binding_store::source::now_unix_ms;
use nexus_config::RemoteJwks;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::prelude::HttpPeer;
use tokio::sync::{watch, Notify};

use super::{keyset, Authenticator, MAX_JWKS_BYTES};

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
    /// Any other status but 200.
    #[error("answered {0}, not 200")]
    Status(u16),
    /// A body past [`MAX_JWKS_BYTES`].
    #[error("the key set is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

/// What a fetch brought.
#[derive(Debug)]
struct Fetched {
    body: Vec<u8>,
    /// The provider's `Cache-Control: max-age` (0 for `no-cache` and `no-store`).
    max_age: Option<Duration>,
}

/// When fetches happen and what the last ones came to.
#[derive(Debug, Default)]
struct Schedule {
    /// When the last fetch began.
    last_started: Option<Instant>,
    /// A fetch is under way.
    in_flight: bool,
    /// When the next one is due.
    next_at: Option<Instant>,
    /// Fetches failed in a row, and the last failure said (said once while it repeats).
    failures: u32,
    said: Option<FetchError>,
    /// Digest of the content last written to the cache file.
    written: Option<[u8; 32]>,
    /// Whether "stale" was said and not yet taken back.
    said_stale: bool,
}

/// The fetcher, shared by the refresh job and the requests that ask it for an unknown `kid`.
pub struct RemoteKeys {
    settings: RemoteJwks,
    connector: Connector,
    /// Wakes the refresh job for a token naming an unknown `kid`.
    wake: Notify,
    /// Fetches ended so far, for requests waiting on one.
    done: watch::Sender<u64>,
    schedule: Mutex<Schedule>,
    /// Unix ms when the provider last confirmed the keys in use (a fetch that installed or
    /// repeated them, or the cache file's time); the router's start until then.
    confirmed_ms: AtomicU64,
    /// Fetches that failed, for `jwks_fetch_failures_total`.
    failures_total: AtomicU64,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.settings.url.as_str())
            .finish_non_exhaustive()
    }
}

impl RemoteKeys {
    /// A fetcher for `settings`; `jwks_ca_file`, when set, must have been checked (an
    /// unreadable one fails here, in Pingora's connector, with a panic).
    pub fn new(settings: &RemoteJwks) -> Self {
        let mut options = ConnectorOptions::new(0);
        options.ca_file = settings.ca_file.as_ref().map(|p| p.display().to_string());
        Self {
            settings: settings.clone(),
            connector: Connector::new(Some(options)),
            wake: Notify::new(),
            done: watch::channel(0).0,
            schedule: Mutex::new(Schedule::default()),
            confirmed_ms: AtomicU64::new(now_unix_ms()),
            failures_total: AtomicU64::new(0),
        }
    }

    /// The settings it follows.
    pub fn settings(&self) -> &RemoteJwks {
        &self.settings
    }

    /// Fetches failed so far.
    pub fn failures(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    /// Milliseconds since the provider last confirmed the keys in use (see `confirmed_ms`).
    pub fn age_ms(&self, now_unix_ms: u64) -> u64 {
        now_unix_ms.saturating_sub(self.confirmed_ms.load(Ordering::Relaxed))
    }

    /// Whether the keys have gone unconfirmed past `jwks_max_staleness`, or there are none.
    pub fn stale(&self, auth: &Authenticator, now_unix_ms: u64) -> bool {
        !auth.has_key_set()
            || u128::from(self.age_ms(now_unix_ms)) > self.settings.max_staleness.as_millis()
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first fetch, at start. When it fails, the cache file's key set (if any) is used,
    /// its age counted from the file's time; with neither, only HMAC secrets verify tokens
    /// and `/readyz` answers 503 until a fetch brings keys.
    pub async fn initial_load(&self, auth: &Authenticator) {
        if self.refresh(auth).await {
            return;
        }
        let Some(path) = self.settings.cache_file.clone() else {
            tracing::error!(url = %self.settings.url,
                "no verification keys: the key set could not be fetched and auth.jwks_cache_file \
                 is not set; tokens are refused, and /readyz answers 503, until a fetch brings keys");
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let bytes = nexus_config::files::read_regular(&path, MAX_JWKS_BYTES as u64)?;
            let modified = std::fs::metadata(&path)?.modified()?;
            Ok::<_, std::io::Error>((bytes, modified, path))
        })
        .await;
        let (bytes, modified, path) = match read {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => {
                tracing::error!(url = %self.settings.url, error = %e,
                    "no verification keys: the key set could not be fetched, nor its cache file \
                     read; tokens are refused, and /readyz answers 503, until a fetch brings keys");
                return;
            }
            Err(_) => return,
        };
        let origin = format!("{} (kept from {})", path.display(), self.settings.url);
        let digest = keyset::digest(&bytes);
        match auth.install_fetched(bytes, origin) {
            Ok(_) => {
                // Its time, never later than now (a clock set back must not make it fresh).
                let at_ms = modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .min(now_unix_ms());
                self.confirmed_ms.store(at_ms, Ordering::Relaxed);
                self.schedule().written = Some(digest);
                tracing::warn!(file = %path.display(), keys = auth.key_count(),
                    age_s = self.age_ms(now_unix_ms()) / 1000,
                    "verification keys taken from auth.jwks_cache_file until a fetch succeeds");
            }
            Err(e) => tracing::error!(error = %e,
                "the key set's cache file is refused; tokens are refused, and /readyz answers \
                 503, until a fetch brings keys"),
        }
    }

    /// One fetch, installed, for `check`: `Err(Ok(why))` when the provider could not be
    /// fetched from (a router would start without, or with the cache file's), `Err(Err(why))`
    /// when what it serves is refused.
    pub async fn fetch_once(&self, auth: &Authenticator) -> Result<(), Result<String, String>> {
        let fetched = match tokio::time::timeout(self.settings.timeout, self.fetch()).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(e)) => return Err(Ok(e.to_string())),
            Err(_) => return Err(Ok(FetchError::Timeout(self.settings.timeout).to_string())),
        };
        auth.install_fetched(fetched.body, self.settings.url.to_string())
            .map(|_| ())
            .map_err(|e| Err(e.to_string()))
    }

    /// For a request whose token names a `kid` the set does not hold: asks for a fetch, when
    /// one may happen now (or one is under way), and waits for it, `jwks_fetch_timeout` at
    /// most. Whether it brought a new key set (the request is then decided again). Within
    /// `jwks_min_refresh_interval` of the last fetch, the request is refused at once and the
    /// fetch is made when the interval ends: a key rotated in just after a fetch is taken
    /// then, not at the next refresh.
    pub async fn refreshed_for_unknown_kid(&self, auth: &Authenticator) -> bool {
        let generation = auth.key_generation();
        let mut done = self.done.subscribe();
        if !self.may_fetch_now() {
            let mut s = self.schedule();
            if let Some(last) = s.last_started {
                let allowed = last + self.settings.min_refresh_interval;
                if s.next_at.is_none_or(|next| next > allowed) {
                    s.next_at = Some(allowed);
                    drop(s);
                    // The job sleeps toward the old time: woken, it sleeps toward this one.
                    self.wake.notify_one();
                }
            }
            return false;
        }
        self.wake.notify_one();
        let wait = self.settings.timeout + Duration::from_millis(250);
        let _ = tokio::time::timeout(wait, done.changed()).await;
        auth.key_generation() != generation
    }

    /// Whether a fetch is under way or `jwks_min_refresh_interval` has passed since the last.
    fn may_fetch_now(&self) -> bool {
        let s = self.schedule();
        s.in_flight
            || s.last_started
                .is_none_or(|t| t.elapsed() >= self.settings.min_refresh_interval)
    }

    /// Follows the provider until `stop`: a fetch when one is due or a request asks.
    pub async fn follow(&self, auth: &Authenticator, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.schedule().next_at.unwrap_or_else(Instant::now);
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.wake.notified() => {
                    // A wake left over from a request answered by the fetch just made.
                    if !self.may_fetch_now() {
                        continue;
                    }
                }
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.refresh(auth).await;
        }
    }

    /// One fetch, installed; schedules the next. Whether the provider confirmed a key set
    /// (a new one, or the one in use).
    async fn refresh(&self, auth: &Authenticator) -> bool {
        {
            let mut s = self.schedule();
            s.last_started = Some(Instant::now());
            s.in_flight = true;
        }
        let fetched = match tokio::time::timeout(self.settings.timeout, self.fetch()).await {
            Ok(fetched) => fetched,
            Err(_) => Err(FetchError::Timeout(self.settings.timeout)),
        };
        let confirmed = match fetched {
            Ok(fetched) => self.take(auth, fetched).await,
            Err(e) => {
                self.failed(e);
                false
            }
        };
        self.schedule().in_flight = false;
        self.done.send_modify(|n| *n += 1);
        self.say_staleness(auth);
        confirmed
    }

    /// Installs what a fetch brought and writes it to the cache file; schedules the next
    /// fetch by its `max-age`. Whether the provider confirmed a key set.
    async fn take(&self, auth: &Authenticator, fetched: Fetched) -> bool {
        let digest = keyset::digest(&fetched.body);
        let origin = self.settings.url.to_string();
        let body = fetched.body.clone();
        // A panic while parsing a key set (logged and counted by the panic hook) must not
        // end key rotation: the keys in use stay, as for a refused set.
        let installed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            auth.install_fetched(body, origin)
        }));
        let taken = match installed {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!(url = %self.settings.url, keys = auth.key_count(),
                        "verification keys fetched: a new key set is in use");
                }
                // The same content as one refused before is refused still.
                !auth.refusing()
            }
            Ok(Err(e)) => {
                tracing::error!(url = %self.settings.url, error = %e,
                    "the fetched key set is refused; keeping the keys in use");
                false
            }
            Err(_) => {
                tracing::error!(url = %self.settings.url,
                    "the fetched key set made the router panic; keeping the keys in use");
                false
            }
        };
        let failures = {
            let mut s = self.schedule();
            let failures = std::mem::take(&mut s.failures);
            s.said = None;
            s.next_at = Some(Instant::now() + self.next_interval(fetched.max_age, taken));
            failures
        };
        if !taken {
            self.failures_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.confirmed_ms.store(now_unix_ms(), Ordering::Relaxed);
        if failures > 0 {
            tracing::info!(url = %self.settings.url, failures,
                "the key set was fetched again");
        }
        self.write_cache(digest, fetched.body).await;
        true
    }

    /// A fetch that failed: counted, said once while the same failure repeats, retried
    /// after `jwks_min_refresh_interval`, doubling up to `jwks_refresh_interval`.
    fn failed(&self, e: FetchError) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        let mut s = self.schedule();
        s.failures = s.failures.saturating_add(1);
        if s.said.as_ref() != Some(&e) {
            tracing::warn!(url = %self.settings.url, error = %e, failures = s.failures,
                "the key set could not be fetched; keeping the keys in use");
            s.said = Some(e);
        }
        let backoff = self
            .settings
            .min_refresh_interval
            .saturating_mul(1 << (s.failures - 1).min(16))
            .min(self.settings.refresh_interval);
        s.next_at = Some(Instant::now() + backoff);
    }

    /// How long until the next fetch after one that brought a key set: the provider's
    /// `max-age` within the configured bounds (`taken`: the set was in use after it; a
    /// refused one is asked for again as after a failure), less up to a tenth, so routers
    /// started together do not fetch together.
    fn next_interval(&self, max_age: Option<Duration>, taken: bool) -> Duration {
        let (min, max) = (
            self.settings.min_refresh_interval,
            self.settings.refresh_interval,
        );
        if !taken {
            return min;
        }
        let wanted = max_age.unwrap_or(max).clamp(min, max);
        let jitter = wanted.mul_f64(f64::from(random_byte()) / 2550.0);
        wanted.saturating_sub(jitter).max(min)
    }

    /// Logs when the keys go stale (unconfirmed past `jwks_max_staleness`) and when they are
    /// fresh again, once each.
    fn say_staleness(&self, auth: &Authenticator) {
        let now = now_unix_ms();
        let stale = auth.has_key_set() && self.stale(auth, now);
        let mut s = self.schedule();
        if stale && !s.said_stale {
            tracing::error!(url = %self.settings.url, age_s = self.age_ms(now) / 1000,
                "verification keys are stale: not confirmed by the identity provider within \
                 auth.jwks_max_staleness; they keep verifying tokens (a key it withdrew \
                 meanwhile is still trusted)");
        } else if !stale && s.said_stale {
            tracing::info!(url = %self.settings.url, "verification keys confirmed again");
        }
        s.said_stale = stale;
    }

    /// Writes a key set taken to `jwks_cache_file`, unless it holds it already. A failure is
    /// logged: the keys are in use whatever the file holds.
    async fn write_cache(&self, digest: [u8; 32], body: Vec<u8>) {
        let Some(path) = self.settings.cache_file.clone() else {
            return;
        };
        if self.schedule().written == Some(digest) {
            return;
        }
        let shown = path.display().to_string();
        let wrote = tokio::task::spawn_blocking(move || {
            nexus_binding_store::file_store::write_atomically(&path, &body)
        })
        .await;
        match wrote {
            Ok(Ok(())) => self.schedule().written = Some(digest),
            Ok(Err(e)) => tracing::warn!(file = %shown, error = %e,
                "the fetched key set could not be written to auth.jwks_cache_file"),
            Err(_) => {}
        }
    }

    /// GET the key set: one connection per fetch, to each address of the name in turn until
    /// one answers. Unbounded in time here ([`RemoteKeys::refresh`] bounds it).
    async fn fetch(&self) -> Result<Fetched, FetchError> {
        let url = &self.settings.url;
        let host = url.host_str().unwrap_or_default();
        // `[::1]` is looked up without its brackets.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| FetchError::Resolve {
                host: host.to_owned(),
                why: e.to_string(),
            })?
            .collect();
        let mut last = FetchError::Resolve {
            host: host.to_owned(),
            why: "no address".to_owned(),
        };
        for addr in addrs {
            match self.fetch_from(addr, bare).await {
                Err(FetchError::Connect(why)) => last = FetchError::Connect(why),
                other => return other,
            }
        }
        Err(last)
    }

    /// GET the key set from one address.
    async fn fetch_from(
        &self,
        addr: std::net::SocketAddr,
        host: &str,
    ) -> Result<Fetched, FetchError> {
        let url = &self.settings.url;
        let connect = |e: Box<pingora::Error>| FetchError::Connect(format!("{addr}: {e}"));
        // The name is the SNI and what the certificate must carry.
        let mut peer = HttpPeer::new(addr, url.scheme() == "https", host.to_owned());
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(connect)?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = RequestHeader::build("GET", target.as_bytes(), None).map_err(connect)?;
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
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
            request.insert_header(name, value).map_err(connect)?;
        }
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(connect)?;
        session.finish_request_body().await.map_err(connect)?;
        session.read_response_header().await.map_err(connect)?;
        let (status, location, max_age) = {
            let head = session
                .response_header()
                .ok_or_else(|| FetchError::Connect(format!("{addr}: no response")))?;
            let location = head
                .headers
                .get(http::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            (head.status.as_u16(), location, max_age(&head.headers))
        };
        if (300..400).contains(&status) && status != 304 {
            return Err(FetchError::Redirected {
                status,
                location: location.unwrap_or_default(),
            });
        }
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let mut body = BytesMut::new();
        while let Some(piece) = session.read_response_body().await.map_err(connect)? {
            if body.len() + piece.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&piece);
        }
        session.shutdown().await;
        Ok(Fetched {
            body: body.to_vec(),
            max_age,
        })
    }
}

/// The `max-age` of a response's `Cache-Control` (RFC 9111 §5.2.2.1); `no-cache` and
/// `no-store` read as 0, asking for the shortest interval allowed.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut found = None;
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
                    .and_then(|a| a.parse().ok());
                // Two that disagree: the shorter, as a cache would be safe to take.
                if let Some(s) = seconds {
                    found = Some(found.map_or(s, |f: u64| f.min(s)));
                }
            }
        }
    }
    found.map(Duration::from_secs)
}

/// A random byte, for the jitter of refreshes.
fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0]
}

/// Runs [`RemoteKeys::follow`] for the router, starting it again after a panic.
pub(crate) async fn follow_restarting(
    remote: Arc<RemoteKeys>,
    state: Arc<crate::state::EdgeState>,
    stop: watch::Receiver<bool>,
) {
    let restart_stop = stop.clone();
    crate::background::restarting_after_panic(
        "verification key refresh",
        restart_stop,
        move || {
            let (remote, state, stop) = (Arc::clone(&remote), Arc::clone(&state), stop.clone());
            async move { remote.follow(&state.auth, stop).await }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::max_age;

    #[test]
    fn max_age_read_from_cache_control() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::CACHE_CONTROL, v.parse().expect("value"));
            }
            max_age(&h).map(|d| d.as_secs())
        };
        assert_eq!(with(&[]), None);
        assert_eq!(with(&["public, max-age=3600"]), Some(3600));
        assert_eq!(with(&["Max-Age = \"60\""]), Some(60));
        assert_eq!(with(&["max-age=600", "max-age=60"]), Some(60));
        assert_eq!(with(&["public, max-age=60, no-cache"]), Some(0));
        assert_eq!(with(&["no-store"]), Some(0));
        assert_eq!(with(&["max-age=soon"]), None);
        assert_eq!(with(&["must-revalidate"]), None);
    }
}
