//! A key set fetched from the identity provider (`[auth] jwks_url`).
//!
//! Fetched at start, then every `jwks_refresh_interval`, sooner when the provider's
//! `Cache-Control: max-age` asks for it, and at once for a token naming a `kid` the set does
//! not hold (the provider rotated a key in): never within `jwks_min_refresh_interval` of the
//! last fetch's end, so a flood of made-up `kid`s costs the provider one fetch per interval
//! per router. A token that asks within the interval is refused at once, and the fetch it
//! asked for is made when the interval ends.
//!
//! What a fetch brings is installed by [`Authenticator::install_fetched`], by the key file's
//! rules: the same content changes nothing, a set that is refused keeps the keys in use. A
//! fetch that fails (the provider away, a 5xx, a redirect, a body too large) keeps them too:
//! keys that verify tokens a little longer are better than every tenant's users refused at
//! once. Failures (a refused set among them) are retried after `jwks_min_refresh_interval`,
//! doubling up to `jwks_refresh_interval` (not doubling while there are no keys at all), and
//! tokens do not hurry them. How long the keys have gone unconfirmed is on `/metrics`
//! (`jwks_age_seconds`, `jwks_stale` past `jwks_max_staleness`) and said in the log.
//!
//! Each key set confirmed is kept in `jwks_cache_file` ([`cache`]), when set, for a router
//! that starts while the provider cannot be reached.

mod cache;
mod fetch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nexus_binding_store::source::now_unix_ms;
use nexus_config::RemoteJwks;
use tokio::sync::{watch, Notify};

pub use fetch::FetchError;

use super::{keyset, Authenticator};

/// Longest a write of the cache file is waited for.
const CACHE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// When fetches happen and what the last ones came to.
#[derive(Debug, Default)]
struct Schedule {
    /// When the last fetch ended: the next may begin `jwks_min_refresh_interval` after.
    last_ended: Option<Instant>,
    /// A fetch is under way.
    in_flight: bool,
    /// When the next one is due.
    next_at: Option<Instant>,
    /// Fetches in a row that brought no key set in use (failed, or refused).
    failures: u32,
    /// The last failure said (said once while it repeats).
    said: Option<String>,
    /// Digest of the key set last written to the cache file, and the confirmation time
    /// written with it (Unix ms).
    written: Option<([u8; 32], u64)>,
    /// Whether "stale" was said and not yet taken back.
    said_stale: bool,
    /// The `ETag` of the key set in use, when a fetch brought it with one, and that set's
    /// text: the next fetch asks `If-None-Match`, and a `304` confirms this set.
    validated: Option<(String, Arc<Vec<u8>>)>,
}

/// The fetcher, shared by the refresh job and the requests that ask it for an unknown `kid`.
pub struct RemoteKeys {
    settings: RemoteJwks,
    /// The URL as logged: its query (which may hold a secret) left out.
    shown: String,
    client: fetch::Client,
    /// Wakes the refresh job: a token naming an unknown `kid`.
    wake: Notify,
    /// Fetches ended so far, for requests waiting on one.
    done: watch::Sender<u64>,
    schedule: Mutex<Schedule>,
    /// Unix ms when the provider last confirmed the keys in use (a fetch that installed or
    /// repeated them, or the cache file's record); the router's start until then.
    confirmed_ms: AtomicU64,
    /// Fetches that brought no key set in use, for `jwks_fetch_failures_total`.
    failures_total: AtomicU64,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

/// Why [`RemoteKeys::fetch_once`] brought no key set.
#[derive(Debug)]
pub enum Unfetched {
    /// The provider could not be fetched from: a router would start with the cache file's
    /// set, or none.
    Unreachable(FetchError),
    /// What it serves is refused.
    Refused(super::AuthSetupError),
}

/// Marks a fetch under way; dropped (at its end, or if it panics), marks it ended and wakes
/// the requests waiting for it.
struct InFlight<'a>(&'a RemoteKeys);

impl<'a> InFlight<'a> {
    fn begin(keys: &'a RemoteKeys) -> Self {
        let mut s = keys.schedule();
        s.in_flight = true;
        // Replaced when the fetch ends; kept if it panics, so the job started again after
        // the panic does not fetch at once, and again, a second apart.
        s.next_at = Some(Instant::now() + keys.settings.min_refresh_interval);
        drop(s);
        Self(keys)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.0.schedule();
            s.in_flight = false;
            s.last_ended = Some(Instant::now());
        }
        self.0.done.send_modify(|n| *n += 1);
    }
}

impl RemoteKeys {
    /// A fetcher for `settings`; `jwks_ca_file`, when set, must have been checked. An error
    /// when no TLS client can be built.
    pub fn new(settings: &RemoteJwks) -> Result<Self, String> {
        let client = fetch::Client::new(settings.ca_file.as_deref())?;
        let mut shown = settings.url.clone();
        if shown.query().is_some() {
            shown.set_query(Some("…"));
        }
        Ok(Self {
            settings: settings.clone(),
            shown: shown.to_string(),
            client,
            wake: Notify::new(),
            done: watch::channel(0).0,
            schedule: Mutex::new(Schedule::default()),
            confirmed_ms: AtomicU64::new(now_unix_ms()),
            failures_total: AtomicU64::new(0),
        })
    }

    /// Fetches that brought no key set in use so far.
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

    /// The first fetch, at start. When it fails, the cache file's key set, if it is from this
    /// URL and not stale; with neither, only HMAC secrets verify tokens and `/readyz` answers
    /// 503 until a fetch brings keys.
    pub async fn initial_load(&self, auth: &Authenticator) {
        if self.refresh(auth).await {
            return;
        }
        let unready = "tokens are refused, and /readyz answers 503, until a fetch brings keys";
        let Some(path) = self.settings.cache_file.clone() else {
            tracing::error!(url = %self.shown,
                "no verification keys: the key set could not be fetched and \
                 auth.jwks_cache_file is not set; {unready}");
            return;
        };
        let shown_path = path.display().to_string();
        let read = tokio::task::spawn_blocking(move || {
            nexus_config::files::read_regular(&path, cache::MAX_CACHE_BYTES)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let now = now_unix_ms();
        let cached = read.map_err(|e| e.to_string()).and_then(|bytes| {
            cache::decode(
                &bytes,
                self.settings.url.as_str(),
                now,
                self.settings.max_staleness,
            )
            .map_err(|e| e.to_string())
        });
        let (jwks, confirmed) = match cached {
            Ok(cached) => cached,
            Err(e) => {
                tracing::error!(file = %shown_path, error = %e,
                    "no verification keys: the key set could not be fetched, and its cache \
                     file is not used; {unready}");
                return;
            }
        };
        let digest = keyset::digest(&jwks);
        match auth.install_fetched(jwks, format!("{shown_path} (kept from {})", self.shown)) {
            Ok(_) => {
                self.confirmed_ms.store(confirmed, Ordering::Relaxed);
                self.schedule().written = Some((digest, confirmed));
                tracing::warn!(file = %shown_path, keys = auth.key_count(),
                    age_s = self.age_ms(now) / 1000,
                    "verification keys taken from auth.jwks_cache_file until a fetch succeeds");
            }
            Err(e) => tracing::error!(error = %e,
                "the key set in auth.jwks_cache_file is refused; {unready}"),
        }
    }

    /// One fetch, installed, for `check`.
    pub async fn fetch_once(&self, auth: &Authenticator) -> Result<(), Unfetched> {
        let (body, _) = self.fetch().await.map_err(Unfetched::Unreachable)?;
        auth.install_fetched(Arc::unwrap_or_clone(body), self.shown.clone())
            .map(|_| ())
            .map_err(Unfetched::Refused)
    }

    /// For a request whose token names a `kid` the set does not hold, decided with the key set
    /// of generation `seen`: whether a newer key set is in use now, or came from a fetch the
    /// request asked for and waited on (`jwks_fetch_timeout` at most). The request is then
    /// decided again. Within `jwks_min_refresh_interval` of the last fetch, it is refused at
    /// once and the fetch is made when the interval ends; while fetches fail, their backoff
    /// decides, and no request waits.
    pub async fn refreshed_for_unknown_kid(&self, auth: &Authenticator, seen: u64) -> bool {
        let mut done = self.done.subscribe();
        if auth.key_generation() != seen {
            return true;
        }
        {
            let mut s = self.schedule();
            if s.failures > 0 {
                // (A set installed since the check above still serves this request.)
                return auth.key_generation() != seen;
            }
            let allowed = s.last_ended.map(|t| t + self.settings.min_refresh_interval);
            if let Some(allowed) = allowed.filter(|&a| !s.in_flight && a > Instant::now()) {
                if s.next_at.is_none_or(|next| next > allowed) {
                    s.next_at = Some(allowed);
                    drop(s);
                    // The job sleeps toward the old time: woken, it sleeps toward this one.
                    self.wake.notify_one();
                }
                return auth.key_generation() != seen;
            }
        }
        self.wake.notify_one();
        let wait = self.settings.timeout + Duration::from_millis(250);
        let _ = tokio::time::timeout(wait, done.changed()).await;
        auth.key_generation() != seen
    }

    /// Whether a token's wake may start a fetch now: none failing, the interval since the
    /// last one over.
    fn wake_may_fetch(&self) -> bool {
        let s = self.schedule();
        s.failures == 0
            && s.last_ended
                .is_none_or(|t| t.elapsed() >= self.settings.min_refresh_interval)
    }

    /// Follows the provider until `stop`: a fetch when one is due or a token asks.
    pub async fn follow(&self, auth: &Authenticator, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.schedule().next_at.unwrap_or_else(Instant::now);
            tokio::select! {
                () = tokio::time::sleep_until(next.into()) => {}
                () = self.wake.notified() => {
                    // A wake that moved the next fetch sooner, or was answered by the fetch
                    // just made.
                    if !self.wake_may_fetch() {
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

    /// One fetch, installed, and the next scheduled; the requests waiting are woken before the
    /// cache file is written. Whether the provider confirmed a key set (a new one, or the one
    /// in use).
    async fn refresh(&self, auth: &Authenticator) -> bool {
        let flight = InFlight::begin(self);
        let taken = match self.fetch().await {
            Ok((body, fetched)) => self.take(auth, body, fetched),
            Err(e) => {
                self.failed(e.to_string(), auth.has_key_set());
                None
            }
        };
        drop(flight);
        self.say_staleness(auth);
        match taken {
            Some((digest, body)) => {
                self.write_cache(digest, &body).await;
                true
            }
            None => false,
        }
    }

    /// GET the key set, bounded by `jwks_fetch_timeout`: its text (the one in use again, on
    /// `304 Not Modified`), and what came with it.
    async fn fetch(&self) -> Result<(Arc<Vec<u8>>, fetch::Fetched), FetchError> {
        let timeout = self.settings.timeout;
        let validated = self.schedule().validated.clone();
        let etag = validated.as_ref().map(|(etag, _)| etag.as_str());
        let mut fetched =
            tokio::time::timeout(timeout, self.client.get(&self.settings.url, timeout, etag))
                .await
                .unwrap_or(Err(FetchError::Timeout(timeout)))?;
        match (fetched.body.take(), validated) {
            (Some(body), _) => Ok((Arc::new(body), fetched)),
            (None, Some((etag, body))) => {
                fetched.etag = fetched.etag.or(Some(etag));
                Ok((body, fetched))
            }
            // Not asked conditionally: not an answer to take.
            (None, None) => Err(FetchError::Status(304)),
        }
    }

    /// Installs what a fetch brought (`body`) and schedules the next fetch by its `max-age`.
    /// The set, for the cache file, when it is the one in use now.
    fn take(
        &self,
        auth: &Authenticator,
        body: Arc<Vec<u8>>,
        fetched: fetch::Fetched,
    ) -> Option<([u8; 32], Arc<Vec<u8>>)> {
        let digest = keyset::digest(&body);
        // A panic while parsing a key set (logged and counted by the panic hook) must not
        // end key rotation: the keys in use stay, as for a refused set.
        let installed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            auth.install_fetched(body.to_vec(), self.shown.clone())
        }));
        let refused = match installed {
            Ok(Ok(changed)) => {
                if changed {
                    tracing::info!(url = %self.shown, keys = auth.key_count(),
                        "verification keys fetched: a new key set is in use");
                }
                // The same content as one refused before is refused still (said then).
                auth.refusing()
                    .then(|| "the key set it serves was refused".to_owned())
            }
            Ok(Err(e)) => Some(format!("the key set it serves is refused: {e}")),
            Err(_) => Some("the key set it serves made the router panic".to_owned()),
        };
        if let Some(why) = refused {
            // Asked plainly next time: a 304 must not confirm a set that is not in use.
            self.schedule().validated = None;
            self.failed(why, auth.has_key_set());
            return None;
        }
        let failures = {
            let mut s = self.schedule();
            s.validated = fetched.etag.map(|etag| (etag, Arc::clone(&body)));
            s.said = None;
            s.next_at = Some(
                Instant::now() + next_interval(&self.settings, fetched.max_age, random_byte()),
            );
            std::mem::take(&mut s.failures)
        };
        self.confirmed_ms.store(now_unix_ms(), Ordering::Relaxed);
        if failures > 0 {
            tracing::info!(url = %self.shown, failures, "the key set was fetched again");
        }
        Some((digest, body))
    }

    /// A fetch that brought no key set in use: counted, said once while the same failure
    /// repeats, retried after its backoff (see [`backoff`]).
    fn failed(&self, why: String, has_keys: bool) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        let mut s = self.schedule();
        s.failures = s.failures.saturating_add(1);
        if s.said.as_ref() != Some(&why) {
            tracing::warn!(url = %self.shown, error = %why, failures = s.failures,
                "the key set could not be fetched; the keys in use stay");
            s.said = Some(why);
        }
        let wait = backoff(&self.settings, s.failures, has_keys);
        let wait = jittered(wait, self.settings.min_refresh_interval, random_byte());
        s.next_at = Some(Instant::now() + wait);
    }

    /// Logs when the keys go stale (unconfirmed past `jwks_max_staleness`) and when they are
    /// fresh again, once each.
    fn say_staleness(&self, auth: &Authenticator) {
        let now = now_unix_ms();
        let stale = auth.has_key_set() && self.stale(auth, now);
        let mut s = self.schedule();
        if stale && !s.said_stale {
            tracing::error!(url = %self.shown, age_s = self.age_ms(now) / 1000,
                "verification keys are stale: not confirmed by the identity provider within \
                 auth.jwks_max_staleness; they keep verifying tokens (a key it withdrew \
                 meanwhile is still trusted)");
        } else if !stale && s.said_stale {
            tracing::info!(url = %self.shown, "verification keys confirmed again");
        }
        s.said_stale = stale;
    }

    /// Keeps a key set confirmed in `jwks_cache_file`: when it changed, and otherwise often
    /// enough that the time recorded stays well within `jwks_max_staleness` (a router
    /// starting from it would refuse a stale one). A failure is logged: the keys are in use
    /// whatever the file holds.
    async fn write_cache(&self, digest: [u8; 32], body: &[u8]) {
        let Some(path) = self.settings.cache_file.clone() else {
            return;
        };
        let confirmed = self.confirmed_ms.load(Ordering::Relaxed);
        let due = u64::try_from((self.settings.max_staleness / 4).as_millis()).unwrap_or(u64::MAX);
        if self
            .schedule()
            .written
            .is_some_and(|(d, at)| d == digest && confirmed.saturating_sub(at) < due)
        {
            return;
        }
        let content = cache::encode(self.settings.url.as_str(), &self.shown, confirmed, body);
        let shown = path.display().to_string();
        let write = tokio::task::spawn_blocking(move || {
            nexus_binding_store::file_store::write_atomically(&path, &content)
        });
        // A disk that hangs (a stuck network mount) must not stop the refreshes: the write
        // is given up on (its thread left to finish), and tried again at the next fetch.
        let wrote = match tokio::time::timeout(CACHE_WRITE_TIMEOUT, write).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string()))),
            Err(_) => Err(std::io::Error::other(format!(
                "not written within {CACHE_WRITE_TIMEOUT:?}"
            ))),
        };
        match wrote {
            Ok(()) => self.schedule().written = Some((digest, confirmed)),
            Err(e) => tracing::warn!(file = %shown, error = %e,
                "the fetched key set could not be written to auth.jwks_cache_file"),
        }
    }
}

/// How long until the next fetch after one that brought the key set in use: the provider's
/// `max-age` within `[jwks_min_refresh_interval, jwks_refresh_interval]`, less up to a tenth
/// (`random` of 255), so routers started together do not fetch together.
fn next_interval(settings: &RemoteJwks, max_age: Option<Duration>, random: u8) -> Duration {
    let (min, max) = (
        settings.min_refresh_interval,
        settings.refresh_interval.max(settings.min_refresh_interval),
    );
    jittered(max_age.unwrap_or(max).clamp(min, max), min, random)
}

/// `wait` less up to a tenth (`random` of 255), never below `min`: routers started together,
/// or that failed together when the provider went away, do not fetch in the same second.
fn jittered(wait: Duration, min: Duration, random: u8) -> Duration {
    let jitter = wait.mul_f64(f64::from(random) / 2550.0);
    wait.saturating_sub(jitter).max(min)
}

/// How long until the next fetch after `failures` in a row: `jwks_min_refresh_interval`,
/// doubling up to `jwks_refresh_interval`; without any key set, never longer than the first
/// (a router with no keys is of no use until it has some).
fn backoff(settings: &RemoteJwks, failures: u32, has_keys: bool) -> Duration {
    let min = settings.min_refresh_interval;
    if !has_keys {
        return min;
    }
    min.saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(settings.refresh_interval.max(min))
}

/// A random byte, for the jitter of refreshes.
fn random_byte() -> u8 {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0]
}

/// The defaults' timings for a key set at `url`, for tests.
#[cfg(test)]
pub(crate) fn settings_for_tests(url: &str) -> RemoteJwks {
    RemoteJwks {
        url: url.parse().expect("url"),
        ca_file: None,
        refresh_interval: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        cache_file: None,
        max_staleness: Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RemoteJwks {
        settings_for_tests("https://id.test/jwks?key=secret")
    }

    #[test]
    fn the_next_fetch_follows_max_age_within_the_bounds() {
        let s = settings();
        let secs = |d: Duration| d.as_secs_f64();
        assert_eq!(next_interval(&s, None, 0), Duration::from_secs(300));
        assert_eq!(
            next_interval(&s, Some(Duration::from_secs(3600)), 0),
            Duration::from_secs(300)
        );
        assert_eq!(
            next_interval(&s, Some(Duration::from_secs(120)), 0),
            Duration::from_secs(120)
        );
        assert_eq!(
            next_interval(&s, Some(Duration::ZERO), 0),
            Duration::from_secs(30)
        );
        assert_eq!(
            next_interval(&s, Some(Duration::from_secs(1)), 255),
            Duration::from_secs(30)
        );
        // Less up to a tenth, never below the minimum.
        assert!((secs(next_interval(&s, None, 255)) - 270.0).abs() < 0.01);
        assert!(next_interval(&s, Some(Duration::from_secs(31)), 255) >= Duration::from_secs(30));
    }

    #[test]
    fn failures_back_off_doubling_unless_there_are_no_keys() {
        let s = settings();
        let got: Vec<u64> = (1..=6).map(|n| backoff(&s, n, true).as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 300, 300]);
        assert_eq!(backoff(&s, u32::MAX, true), Duration::from_secs(300));
        assert_eq!(backoff(&s, 5, false), Duration::from_secs(30));
    }

    #[tokio::test]
    async fn a_request_waits_only_for_a_fetch_it_may_cause() {
        // The provider at a port where nothing listens: every fetch fails fast.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let mut s = settings();
        s.url = format!("http://{addr}/jwks?key=secret")
            .parse()
            .expect("url");
        let keys = RemoteKeys::new(&s).expect("client");
        assert!(!format!("{keys:?}").contains("secret"), "{keys:?}");
        let auth = crate::auth::Authenticator::new(&nexus_config::AuthSettings {
            jwks: nexus_config::JwksSource::Url(Box::new(s.clone())),
            ..nexus_config::embedded_default().auth
        })
        .expect("auth");
        // A newer key set than the one the request was decided with: decided again at once.
        assert!(
            keys.refreshed_for_unknown_kid(&auth, auth.key_generation() + 1)
                .await
        );
        // The first fetch fails: from then on its backoff decides, and a request neither
        // waits nor asks (a fetch would have counted a second failure).
        assert!(!keys.refresh(&auth).await);
        assert_eq!(keys.failures(), 1);
        let started = Instant::now();
        assert!(
            !keys
                .refreshed_for_unknown_kid(&auth, auth.key_generation())
                .await
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!keys.wake_may_fetch());
        assert_eq!(keys.failures(), 1);
        assert!(!auth.has_key_set());
        assert!(keys.stale(&auth, now_unix_ms()));
    }
}
