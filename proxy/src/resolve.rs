//! Instance host names to addresses, remembered for `[upstream] dns_ttl`.
//!
//! Instances are usually named (a Kubernetes service, an internal DNS name). Asking the
//! system resolver on every request would put a blocking `getaddrinfo` (run on tokio's
//! blocking pool) in front of every request to a named instance; answers are kept for
//! `dns_ttl` instead (`0s`: ask every time). When a refresh fails, the last answer keeps
//! serving for up to [`STALE_FOR`] past its expiry, and the name is asked again at most once
//! a second meanwhile: a resolver hiccup neither takes instances offline nor floods the
//! resolver and the log. IP literals never reach the cache.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long past its expiry an answer may serve while refreshes fail.
pub const STALE_FOR: Duration = Duration::from_secs(300);

/// How often a name whose refresh failed is asked again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Names remembered at most; beyond it, expired entries are dropped (then all, if need be).
const MAX_NAMES: usize = 10_000;

/// Why an instance host has no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver failed and no earlier answer may stand in.
    #[error("resolving {host}: {source}")]
    Lookup {
        /// The instance host.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The resolver answered with no address.
    #[error("{host} has no address")]
    NoAddress {
        /// The instance host.
        host: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: IpAddr,
    fetched: Instant,
    /// Earliest next lookup after a failed refresh.
    next_try: Instant,
}

/// The cache of instance addresses, shared by every request.
#[derive(Debug)]
pub struct InstanceResolver {
    ttl: Duration,
    names: Mutex<HashMap<String, Entry>>,
}

impl InstanceResolver {
    /// A resolver keeping answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The address of `host:port`, from the cache or the system resolver.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, ResolveError> {
        self.resolve_with(host, port, Instant::now(), || async move {
            tokio::net::lookup_host((host, port))
                .await
                .map(|mut addrs| addrs.next().map(|a| a.ip()))
        })
        .await
    }

    /// [`InstanceResolver::resolve`] at `now` with `lookup` as the resolver (tests inject one).
    pub async fn resolve_with<F, Fut>(
        &self,
        host: &str,
        port: u16,
        now: Instant,
        lookup: F,
    ) -> Result<SocketAddr, ResolveError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<Option<IpAddr>>>,
    {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let known = self.lock().get(host).copied();
        if let Some(e) = known {
            let age = now.saturating_duration_since(e.fetched);
            let stale_ok = age < self.ttl + STALE_FOR;
            if age < self.ttl || (now < e.next_try && stale_ok) {
                return Ok(SocketAddr::new(e.ip, port));
            }
        }
        match lookup().await {
            Ok(Some(ip)) => {
                self.store(
                    host,
                    Entry {
                        ip,
                        fetched: now,
                        next_try: now,
                    },
                    now,
                );
                Ok(SocketAddr::new(ip, port))
            }
            failed => {
                let err = match failed {
                    Err(source) => ResolveError::Lookup {
                        host: host.to_owned(),
                        source,
                    },
                    Ok(_) => ResolveError::NoAddress {
                        host: host.to_owned(),
                    },
                };
                match known {
                    Some(e) if now.saturating_duration_since(e.fetched) < self.ttl + STALE_FOR => {
                        tracing::warn!(error = %err, "instance name not refreshed; using its last address");
                        self.store(
                            host,
                            Entry {
                                next_try: now + RETRY_EVERY,
                                ..e
                            },
                            now,
                        );
                        Ok(SocketAddr::new(e.ip, port))
                    }
                    _ => Err(err),
                }
            }
        }
    }

    fn store(&self, host: &str, entry: Entry, now: Instant) {
        let mut names = self.lock();
        if names.len() >= MAX_NAMES && !names.contains_key(host) {
            let keep = self.ttl + STALE_FOR;
            names.retain(|_, e| now.saturating_duration_since(e.fetched) < keep);
            if names.len() >= MAX_NAMES {
                names.clear();
            }
        }
        names.insert(host.to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (inserts are
        // whole), so a poisoned map is still a valid map.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    /// Resolves `name` at `now` with a scripted resolver answer; counts lookups.
    async fn ask(
        r: &InstanceResolver,
        now: Instant,
        answer: std::io::Result<Option<IpAddr>>,
        lookups: &Cell<u32>,
    ) -> Result<SocketAddr, ResolveError> {
        r.resolve_with("instance.internal", 8080, now, || {
            lookups.set(lookups.get() + 1);
            async move { answer }
        })
        .await
    }

    fn down() -> std::io::Result<Option<IpAddr>> {
        Err(std::io::Error::other("resolver down"))
    }

    #[tokio::test]
    async fn answers_are_kept_for_the_ttl_then_refreshed() {
        let r = InstanceResolver::new(Duration::from_secs(10));
        let n = Cell::new(0);
        let t0 = Instant::now();
        let first = ask(&r, t0, Ok(Some(A)), &n).await.expect("resolved");
        assert_eq!(first, SocketAddr::new(A, 8080));
        let cached = ask(&r, t0 + Duration::from_secs(9), Ok(Some(B)), &n).await;
        assert_eq!(cached.expect("cached").ip(), A);
        assert_eq!(n.get(), 1, "no lookup within the ttl");
        let refreshed = ask(&r, t0 + Duration::from_secs(10), Ok(Some(B)), &n).await;
        assert_eq!(refreshed.expect("refreshed").ip(), B);
        assert_eq!(n.get(), 2);
    }

    #[tokio::test]
    async fn a_failed_refresh_serves_the_last_answer_and_retries_once_a_second() {
        let r = InstanceResolver::new(Duration::from_secs(10));
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(Some(A)), &n).await.expect("resolved");
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(ask(&r, t1, down(), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 2);
        let soon = t1 + Duration::from_millis(500);
        assert_eq!(ask(&r, soon, down(), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 2, "no second lookup within a second of a failure");
        let later = t1 + Duration::from_secs(2);
        assert_eq!(ask(&r, later, Ok(None), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 3);
        let back = later + Duration::from_secs(2);
        assert_eq!(ask(&r, back, Ok(Some(B)), &n).await.expect("fresh").ip(), B);
    }

    #[tokio::test]
    async fn stale_answers_end_and_unknown_names_fail() {
        let r = InstanceResolver::new(Duration::from_secs(10));
        let n = Cell::new(0);
        let t0 = Instant::now();
        assert!(matches!(
            ask(&r, t0, down(), &n).await,
            Err(ResolveError::Lookup { .. })
        ));
        assert!(matches!(
            ask(&r, t0, Ok(None), &n).await,
            Err(ResolveError::NoAddress { .. })
        ));
        ask(&r, t0, Ok(Some(A)), &n).await.expect("resolved");
        let too_late = t0 + Duration::from_secs(10) + STALE_FOR;
        assert!(ask(&r, too_late, down(), &n).await.is_err());
    }

    #[tokio::test]
    async fn zero_ttl_asks_every_time_and_ip_literals_never() {
        let r = InstanceResolver::new(Duration::ZERO);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(Some(A)), &n).await.expect("resolved");
        ask(&r, t0, Ok(Some(A)), &n).await.expect("resolved");
        assert_eq!(n.get(), 2);
        let literal = r
            .resolve_with("10.0.0.9", 80, t0, || async { down() })
            .await
            .expect("literal");
        assert_eq!(literal, "10.0.0.9:80".parse().expect("addr"));
    }
}
