//! Instance host names to addresses, remembered for `[upstream] dns_ttl`.
//!
//! Instances are usually named (a Kubernetes service, an internal DNS name). Asking the
//! system resolver on every request would put a blocking `getaddrinfo` (run on tokio's
//! blocking pool) in front of every request to a named instance; answers are kept for
//! `dns_ttl` instead, and requests take the answer's addresses in turn.
//!
//! - One lookup at a time per name: the request that finds the answer expired claims the
//!   refresh (for the lookup's timeout, `[upstream] connect_timeout`, at least a second); the
//!   others meanwhile keep using the expired answer while it may serve stale, and once it may
//!   not (a name quiet for longer, or `dns_serve_stale = "0s"`) wait for that lookup's
//!   answer: a refresh under way is not a failure. Only a brand-new name's first concurrent
//!   requests each ask.
//! - A failed lookup is remembered for a second from its failure (a lookup that timed out,
//!   from its timeout): requests in that second fail fast instead of asking again (so an
//!   unresolvable instance does not cost a lookup per request).
//! - The system resolver runs one call at a time per name, and at most
//!   [`MAX_LOOKUPS_AT_ONCE`] in all (see there).
//! - When a refresh fails, the last answer keeps serving for `dns_serve_stale` past its expiry
//!   (a resolver outage should not take instances offline). A name that was deleted keeps
//!   getting traffic that long too, which is why the window is short by default and can be
//!   `0s`.
//! - Requests take the addresses of the answer's first family in turn (an IPv6 answer on a
//!   host without IPv6 routes must not fail every other request); the other family's are
//!   kept for failover, tried once the first family's have failed or are marked down (a name
//!   with AAAA and A records whose instance listens on IPv4 only, `localhost` on many hosts).
//! - A request whose connect to an address fails (refused, unreachable, timed out, TLS
//!   handshake) goes again to another address of the name, up to [`MAX_CONNECT_ATTEMPTS`] in
//!   all (so it may wait that many `connect_timeout`s), and other requests prefer the name's
//!   other addresses to that one for [`DOWN_FOR`]: one dead pod behind a service name must not
//!   fail its share of the requests. A mark is a preference, not a ban: when only marked
//!   addresses are left they are tried, since the alternative is failing the request unasked.
//!   A connection that breaks after it was made is not tried at another address. (Pingora
//!   itself sends a GET, HEAD, PUT, DELETE or OPTIONS once more, on a new connection, when a
//!   pooled one breaks before the answer's header: the instance may have received it, which
//!   those methods allow, RFC 9110 §9.2.2. A POST or PATCH is never sent twice.)
//! - IP literals never reach the cache (and have nothing to fail over to).
//! - An answer's unspecified, multicast and broadcast addresses are left out (see
//!   [`is_instance_address`]): `0.0.0.0`, a block list's answer, would reach the router's own
//!   host.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_binding_store::{is_instance_address, UpstreamUrl};
use tokio::sync::watch;

/// How long a failed lookup is remembered before the name is asked again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Names remembered at most; beyond it, expired entries go, then the older half.
const MAX_NAMES: usize = 100_000;

/// How long an address that failed a connect is passed over by later requests.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// Connect attempts one request makes at most, over distinct addresses of its instance's
/// name. Bounds a request's wait when several addresses time out in turn.
pub const MAX_CONNECT_ATTEMPTS: usize = 3;

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
    /// A lookup of this name failed within the last second; it is not asked again yet.
    #[error("resolving {host}: failed moments ago")]
    RecentlyFailed {
        /// The instance host.
        host: String,
    },
    /// The resolver did not answer in time.
    #[error("resolving {host}: no answer within {timeout:?}")]
    Timeout {
        /// The instance host.
        host: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The lookup waited all its time for a place among the resolver's calls, which other
    /// names' calls held (names whose lookups hang): the resolver was not asked yet.
    #[error(
        "resolving {host}: no free place for a lookup within {timeout:?} (lookups of names \
         that do not answer hold them)"
    )]
    Busy {
        /// The instance host.
        host: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// This request already tried every address of the name (it can happen when a refresh
    /// between two attempts shrank the answer).
    #[error("{host}: no address left that this request has not tried")]
    AllTried {
        /// The instance host.
        host: String,
    },
}

/// Addresses that failed a connect, each with the instant until which others are preferred.
/// By socket address: an instance's `api_url` may share its name and not its port.
type DownMarks = Vec<(SocketAddr, Instant)>;

#[derive(Debug, Clone)]
struct Entry {
    /// Empty for a name whose only lookup failed. The preferred family's addresses first
    /// (see [`by_family`]).
    ips: Arc<[IpAddr]>,
    fetched: Instant,
    /// Before this instant nobody else looks the name up: a refresh is under way or failed.
    next_try: Instant,
    /// Addresses that failed a connect, and until when they are passed over. Usually empty
    /// (no allocation); kept across refreshes of the name.
    down: DownMarks,
    /// Spreads this name's requests over its addresses. One counter per name: one shared by
    /// every name would hand two names used in turn (an app's UI and API hosts) the same
    /// parity each time, and each would use only half of its addresses.
    turn: usize,
    /// The lookup under way for this name, if any: its claimant holds the sender and drops
    /// it once the answer (or the failure) is stored, which wakes the requests waiting.
    refreshing: Option<watch::Receiver<()>>,
}

/// How long answers live and how failures are handled.
#[derive(Debug, Clone, Copy)]
pub struct ResolverPolicy {
    /// How long an answer is used before it is refreshed.
    pub ttl: Duration,
    /// How long past `ttl` an answer still serves while refreshes fail.
    pub serve_stale: Duration,
    /// How long one lookup may take.
    pub timeout: Duration,
}

/// Where a name's addresses come from: the system resolver in production. In-process tests
/// give names fixed answers (several addresses for one name, some dead), which the system
/// resolver here cannot.
#[async_trait::async_trait]
pub trait NameLookup: Send + Sync + std::fmt::Debug {
    /// The addresses `host` has, in the resolver's order of preference.
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;

    /// Whether a lookup of `host` is waiting for a place among the resolver's calls (other
    /// names' calls hold them all), not for the resolver: said when a request stops waiting.
    fn waits_for_a_place(&self, _host: &str) -> bool {
        false
    }
}

/// System resolver calls running at most at once, abandoned ones included: the blocking
/// threads lookups may take, [`QUICK_PLACES`], [`MOVED_PLACES`] and [`SLOW_PLACES`]
/// together, below tokio's 512 blocking threads (a lookup queued there would start after its
/// request gave up).
///
/// `getaddrinfo` cannot be cancelled: a request that stops waiting (after the lookup's
/// timeout) leaves its call running on tokio's blocking pool until the resolver gives up,
/// seconds later. Unbounded, names that do not resolve (a bindings file full of typos, a DNS
/// server that does not answer for a zone) grew the pool to 512 threads (13 → 525 in a
/// probe). A name has one call at a time, abandoned or not, and answers are cached for
/// `dns_ttl`, so a healthy resolver needs few at once.
pub const MAX_LOOKUPS_AT_ONCE: usize = QUICK_PLACES + MOVED_PLACES + SLOW_PLACES;

/// Places for calls in their first [`SLOW_AFTER`], of names not known to be slow: every
/// healthy lookup takes one of these, and each is free again within a second while the
/// calls that hang move on to [`MOVED_PLACES`], so they do not keep a new, healthy name
/// waiting. With one pool for all, 64 names that hang held every place for ten seconds at a
/// time, and healthy names new to the router got 502 (a probe).
pub const QUICK_PLACES: usize = 64;

/// Places a call still running after [`SLOW_AFTER`] moves to, giving its quick place up;
/// with these all taken it keeps its quick place, and healthy names new to the router wait.
/// Taken only when free, never waited for, so repeated calls of names known to be slow
/// ([`SLOW_PLACES`]) cannot take them. Sized for the first calls of a few hundred names that
/// hang at once (a probe: 300 such names starved healthy ones with 192 of these, not with
/// 320; 1,200 new ones at 100 a second starve them for seconds whatever the places, as they
/// did with none).
pub const MOVED_PLACES: usize = 320;

/// Places for the calls of names whose last call was slow (for [`SLOW_FOR`]): they fail
/// anyway, so a few suffice.
pub const SLOW_PLACES: usize = 96;

/// A call still running after this is a slow one (a healthy resolver answers in
/// milliseconds), and its name is known to be slow for [`SLOW_FOR`].
const SLOW_AFTER: Duration = Duration::from_secs(1);

/// How long a name whose call was slow takes its calls' places among the slow ones.
const SLOW_FOR: Duration = Duration::from_secs(60);

/// Names remembered as slow at most; beyond it, those no longer slow go, then all.
const MAX_SLOW_NAMES: usize = 10_000;

/// A call's outcome, shared by the lookups that joined it (`io::Error` is not `Clone`).
type Outcome = Result<Arc<[IpAddr]>, Arc<std::io::Error>>;

/// A call waiting for a place or running.
struct Call {
    /// Its outcome, once it has one.
    done: watch::Receiver<Option<Outcome>>,
    /// Whether it has a place and asked the resolver: a request that timed out before
    /// then was kept waiting by other names' calls, not by its resolver.
    started: Arc<std::sync::atomic::AtomicBool>,
}

/// The state the calls share.
#[derive(Default)]
struct Calls {
    /// By name; each removes itself as it ends.
    running: HashMap<String, Call>,
    /// Names whose last call was slow, and when that was seen.
    slow: HashMap<String, Instant>,
}

impl Calls {
    fn is_slow(&self, host: &str, now: Instant) -> bool {
        self.slow
            .get(host)
            .is_some_and(|seen| now.saturating_duration_since(*seen) < SLOW_FOR)
    }

    fn mark_slow(&mut self, host: &str, now: Instant) {
        if self.slow.len() >= MAX_SLOW_NAMES && !self.slow.contains_key(host) {
            self.slow
                .retain(|_, seen| now.saturating_duration_since(*seen) < SLOW_FOR);
            if self.slow.len() >= MAX_SLOW_NAMES {
                self.slow.clear();
            }
        }
        self.slow.insert(host.to_owned(), now);
    }
}

/// Place counts: [`QUICK_PLACES`], [`MOVED_PLACES`], [`SLOW_PLACES`] in production.
#[derive(Debug, Clone, Copy)]
struct Places {
    quick: usize,
    moved: usize,
    slow: usize,
}

/// A blocking resolver run on tokio's blocking pool: one call at a time per name (a lookup
/// of a name whose call still runs, abandoned or not, joins it), in the places of
/// [`Places`] (see [`QUICK_PLACES`]). A call that gets its place after every request for
/// it has stopped waiting is not made.
struct BlockingLookup<F> {
    resolve: Arc<F>,
    quick: Arc<tokio::sync::Semaphore>,
    moved: Arc<tokio::sync::Semaphore>,
    slow: Arc<tokio::sync::Semaphore>,
    calls: Arc<Mutex<Calls>>,
}

impl<F> BlockingLookup<F> {
    fn new(resolve: F, places: Places) -> Self {
        let pool = |n| Arc::new(tokio::sync::Semaphore::new(n));
        Self {
            resolve: Arc::new(resolve),
            quick: pool(places.quick),
            moved: pool(places.moved),
            slow: pool(places.slow),
            calls: Arc::default(),
        }
    }
}

impl<F> std::fmt::Debug for BlockingLookup<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingLookup")
            .field("quick_free", &self.quick.available_permits())
            .field("moved_free", &self.moved.available_permits())
            .field("slow_free", &self.slow.available_permits())
            .finish()
    }
}

/// The calls' state: every update is one insert or remove, so a poisoned one is valid.
fn calls_of(calls: &Mutex<Calls>) -> std::sync::MutexGuard<'_, Calls> {
    calls.lock().unwrap_or_else(|p| p.into_inner())
}

impl<F> BlockingLookup<F>
where
    F: Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
{
    /// Starts the call for `host`: a task of its own, which outlives the requests waiting
    /// for it, takes a place, runs the resolver and hands its outcome to whoever waits.
    /// `calls` is the state, locked by the caller, which registers the call in it.
    fn start(&self, host: &str, port: u16, calls: &Calls) -> Call {
        let (tx, rx) = watch::channel(None);
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let known_slow = calls.is_slow(host, Instant::now());
        let (quick, moved, slow, resolve, state, flag) = (
            Arc::clone(&self.quick),
            Arc::clone(&self.moved),
            Arc::clone(&self.slow),
            Arc::clone(&self.resolve),
            Arc::clone(&self.calls),
            Arc::clone(&started),
        );
        let host = host.to_owned();
        tokio::spawn(async move {
            let pool = if known_slow { &slow } else { &quick };
            // The pools are never closed: a place always comes.
            let Ok(place) = Arc::clone(pool).acquire_owned().await else {
                calls_of(&state).running.remove(&host);
                return;
            };
            {
                // The registry holds one receiver; waiting requests hold the others.
                let mut calls = calls_of(&state);
                if tx.receiver_count() <= 1 {
                    calls.running.remove(&host);
                    return;
                }
                flag.store(true, std::sync::atomic::Ordering::Release);
            }
            let name = host.clone();
            let mut call = tokio::task::spawn_blocking(move || resolve(&name, port));
            let mut held = place;
            let joined = if known_slow {
                call.await
            } else {
                match tokio::time::timeout(SLOW_AFTER, &mut call).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        // Its name's next calls wait for a slow place; this one gives its
                        // quick place to the next name when a moved one is free.
                        calls_of(&state).mark_slow(&host, Instant::now());
                        if let Ok(moved_place) = Arc::clone(&moved).try_acquire_owned() {
                            held = moved_place;
                        }
                        call.await
                    }
                }
            };
            drop(held);
            let outcome = joined.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            // Gone from the registry first: a lookup arriving now starts a new call rather
            // than joining one that has ended.
            calls_of(&state).running.remove(&host);
            let _ = tx.send(Some(outcome.map(Arc::from).map_err(Arc::new)));
        });
        Call { done: rx, started }
    }
}

#[async_trait::async_trait]
impl<F> NameLookup for BlockingLookup<F>
where
    F: Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
{
    async fn lookup(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        let mut done = {
            let mut calls = calls_of(&self.calls);
            // A call whose task is gone without a word (the runtime stopping) is no call.
            match calls
                .running
                .get(host)
                .filter(|c| c.done.has_changed().is_ok())
            {
                Some(call) => call.done.clone(),
                None => {
                    let call = self.start(host, port, &calls);
                    let done = call.done.clone();
                    calls.running.insert(host.to_owned(), call);
                    done
                }
            }
        };
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|answered| answered.clone());
        match outcome {
            Some(Ok(ips)) => Ok(ips.to_vec()),
            Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
            None => Err(std::io::Error::other("the lookup ended without an answer")),
        }
    }

    fn waits_for_a_place(&self, host: &str) -> bool {
        calls_of(&self.calls)
            .running
            .get(host)
            .is_some_and(|c| !c.started.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// `getaddrinfo`, as `tokio::net::lookup_host` calls it.
fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    Ok((host, port).to_socket_addrs()?.map(|a| a.ip()).collect())
}

/// The cache of instance addresses, shared by every request.
#[derive(Debug)]
pub struct InstanceResolver {
    policy: ResolverPolicy,
    lookup: Arc<dyn NameLookup>,
    names: Mutex<HashMap<String, Entry>>,
}

/// What the cache says before any lookup.
enum Cached {
    /// Use this address of the cached answer.
    Use(SocketAddr),
    /// The answer is good, but this request has tried each of its addresses.
    AllTried,
    /// A lookup just failed, and no answer may stand in.
    FailFast,
    /// A lookup is under way and no answer may stand in: wait for it, then ask again.
    Wait {
        done: watch::Receiver<()>,
        /// When the answer in the cache was fetched: one fetched later is the lookup's.
        fetched: Instant,
    },
    /// Look up; `stale` (an answer and its down marks) may stand in if that fails.
    Refresh {
        stale: Option<(Arc<[IpAddr]>, DownMarks)>,
        /// This request's turn of the name, taken when the refresh was claimed.
        turn: usize,
        /// Held until the lookup's outcome is stored; dropping it wakes the waiters.
        claim: Option<watch::Sender<()>>,
    },
}

impl InstanceResolver {
    /// A resolver with `policy`, asking the system resolver.
    pub fn new(policy: ResolverPolicy) -> Self {
        Self::with_lookup(
            policy,
            Arc::new(BlockingLookup::new(
                system_resolve,
                Places {
                    quick: QUICK_PLACES,
                    moved: MOVED_PLACES,
                    slow: SLOW_PLACES,
                },
            )),
        )
    }

    /// A resolver with `policy` that asks `lookup` for names.
    pub fn with_lookup(policy: ResolverPolicy, lookup: Arc<dyn NameLookup>) -> Self {
        Self {
            policy,
            lookup,
            names: Mutex::new(HashMap::new()),
        }
    }

    /// The address to connect to for `url`: its IP literal as parsed with the URL, or its
    /// name's address from the cache or the system resolver, other than those in `tried`
    /// (the addresses this request failed to connect to).
    pub async fn resolve(
        &self,
        url: &UpstreamUrl,
        tried: &[SocketAddr],
    ) -> Result<SocketAddr, ResolveError> {
        let port = url.port();
        if let Some(ip) = url.ip() {
            return Ok(SocketAddr::new(ip, port));
        }
        let host = url.host();
        self.resolve_name(host, port, tried, Instant::now(), || {
            self.lookup.lookup(host, port)
        })
        .await
    }

    /// [`InstanceResolver::resolve`] for a host known to be a name (the URL was parsed once,
    /// at load: the request path does not parse it again), at `now`, with `lookup` as the
    /// resolver (tests inject both).
    async fn resolve_name<F, Fut>(
        &self,
        host: &str,
        port: u16,
        tried: &[SocketAddr],
        now: Instant,
        lookup: F,
    ) -> Result<SocketAddr, ResolveError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<Vec<IpAddr>>>,
    {
        let all_tried = || ResolveError::AllTried {
            host: host.to_owned(),
        };
        // After a wait: when the answer found before it was fetched. A later one is the
        // answer waited for, and serves this request whatever its age (with `dns_ttl = 0s`
        // it is already due for refreshing).
        let mut waited: Option<Instant> = None;
        let (stale, turn, _claim) = loop {
            match self.consult(host, port, tried, now, waited) {
                Cached::Use(addr) => return Ok(addr),
                Cached::AllTried => return Err(all_tried()),
                Cached::FailFast => {
                    return Err(ResolveError::RecentlyFailed {
                        host: host.to_owned(),
                    })
                }
                Cached::Wait { mut done, fetched } if waited.is_none() => {
                    waited = Some(fetched);
                    // Ends when the claimant stores its outcome (or gives up: dropped, its
                    // claim wakes this too); the lookup itself is bounded by the timeout.
                    let _ = tokio::time::timeout(self.policy.timeout, done.changed()).await;
                }
                Cached::Wait { .. } => {
                    return Err(ResolveError::Timeout {
                        host: host.to_owned(),
                        timeout: self.policy.timeout,
                    })
                }
                Cached::Refresh { stale, turn, claim } => break (stale, turn, claim),
            }
        };
        let answer = match tokio::time::timeout(self.policy.timeout, lookup()).await {
            Ok(Ok(mut ips)) => {
                // `0.0.0.0` (a block list's answer) would reach the router's own host.
                ips.retain(|ip| is_instance_address(*ip));
                if ips.is_empty() {
                    Err(ResolveError::NoAddress {
                        host: host.to_owned(),
                    })
                } else {
                    Ok(by_family(ips))
                }
            }
            Ok(Err(source)) => Err(ResolveError::Lookup {
                host: host.to_owned(),
                source,
            }),
            Err(_) if self.lookup.waits_for_a_place(host) => Err(ResolveError::Busy {
                host: host.to_owned(),
                timeout: self.policy.timeout,
            }),
            Err(_) => Err(ResolveError::Timeout {
                host: host.to_owned(),
                timeout: self.policy.timeout,
            }),
        };
        match answer {
            Ok(ips) => {
                let ips: Arc<[IpAddr]> = ips.into();
                let entry = Entry {
                    ips: Arc::clone(&ips),
                    fetched: now,
                    next_try: now,
                    down: Vec::new(),
                    turn: turn.wrapping_add(1),
                    refreshing: None,
                };
                let down = self.store(host, entry, now);
                Self::pick(&ips, port, tried, &down, now, turn).ok_or_else(all_tried)
            }
            Err(err) => {
                // Ended at its timeout when it timed out; any other failure is prompt. One
                // kept waiting by other names' calls is none of the name's: its call stays
                // queued for the next request to join.
                let ended = match err {
                    ResolveError::Timeout { timeout, .. } => Some(now + timeout),
                    ResolveError::Busy { .. } => None,
                    _ => Some(now),
                };
                if let Some(ended) = ended {
                    self.failed(host, now, ended);
                }
                match stale {
                    Some((ips, down)) => {
                        tracing::warn!(error = %err, "instance name not refreshed; using its last addresses");
                        Self::pick(&ips, port, tried, &down, now, turn).ok_or_else(all_tried)
                    }
                    None => Err(err),
                }
            }
        }
    }

    /// Records that this request could not connect to `addr` for `url`, and says whether it
    /// should try again: the address is passed over by every request for [`DOWN_FOR`] and
    /// by this one for good (it joins `tried`), and another attempt is worth it when the
    /// name has an address this request has not tried and attempts remain. An IP literal
    /// has nothing to fall back to.
    pub fn connect_failed(
        &self,
        url: &UpstreamUrl,
        addr: SocketAddr,
        tried: &mut Vec<SocketAddr>,
        now: Instant,
    ) -> bool {
        if url.ip().is_some() {
            return false;
        }
        if !tried.contains(&addr) {
            tried.push(addr);
        }
        let mut names = self.lock();
        let Some(entry) = names.get_mut(url.host()) else {
            return false;
        };
        entry.down.retain(|(a, until)| *a != addr && *until > now);
        if entry.ips.contains(&addr.ip()) {
            entry.down.push((addr, now + DOWN_FOR));
        }
        tried.len() < MAX_CONNECT_ATTEMPTS
            && entry
                .ips
                .iter()
                .any(|ip| !tried.contains(&SocketAddr::new(*ip, addr.port())))
    }

    /// Reads the cache and, when the answer needs refreshing, claims the refresh so
    /// concurrent requests keep using the old answer instead of asking too.
    /// `answered_after`: an answer fetched after this instant is the one this request waited
    /// for, and serves it whatever its age.
    fn consult(
        &self,
        host: &str,
        port: u16,
        tried: &[SocketAddr],
        now: Instant,
        answered_after: Option<Instant>,
    ) -> Cached {
        let mut names = self.lock();
        let Some(e) = names.get_mut(host) else {
            return Cached::Refresh {
                stale: None,
                turn: 0,
                claim: None,
            };
        };
        let age = now.saturating_duration_since(e.fetched);
        let known = !e.ips.is_empty();
        let usable = known && age < self.policy.ttl + self.policy.serve_stale;
        let turn = e.turn;
        e.turn = e.turn.wrapping_add(1);
        let waited_for = answered_after.is_some_and(|t| e.fetched > t);
        if (known && (age < self.policy.ttl || waited_for)) || (usable && now < e.next_try) {
            return match Self::pick(&e.ips, port, tried, &e.down, now, turn) {
                Some(addr) => Cached::Use(addr),
                None => Cached::AllTried,
            };
        }
        // A claimant that is gone (its outcome stored, or its request dropped) has closed
        // the channel.
        if let Some(done) = e.refreshing.as_ref().filter(|d| d.has_changed().is_ok()) {
            return Cached::Wait {
                done: done.clone(),
                fetched: e.fetched,
            };
        }
        if now < e.next_try {
            return Cached::FailFast;
        }
        // Held for as long as the lookup may take, so no second one overlaps it.
        e.next_try = now + self.policy.timeout.max(RETRY_EVERY);
        let (claim, done) = watch::channel(());
        e.refreshing = Some(done);
        Cached::Refresh {
            stale: usable.then(|| (Arc::clone(&e.ips), e.down.clone())),
            turn,
            claim: Some(claim),
        }
    }

    /// Remembers a lookup started at `now` that failed at `ended` for [`RETRY_EVERY`] from
    /// its end: one that timed out is not asked again at once (its call may still run, and
    /// the resolver is slow or down). A new name gets an entry without addresses.
    fn failed(&self, host: &str, now: Instant, ended: Instant) {
        let mut names = self.lock();
        let next_try = ended + RETRY_EVERY;
        match names.get_mut(host) {
            Some(e) => e.next_try = e.next_try.max(next_try),
            None => {
                let entry = Entry {
                    ips: Arc::from(Vec::new()),
                    fetched: now,
                    next_try,
                    down: Vec::new(),
                    turn: 0,
                    refreshing: None,
                };
                Self::insert_new(&mut names, host, entry, now, self.policy);
            }
        }
    }

    /// The next address in turn that this request has not tried, from the preferred
    /// family's addresses not marked down when there are any (so the healthy ones share the
    /// load evenly), else from the other family's not marked down, else from the marked ones;
    /// `None` when every address has been tried.
    fn pick(
        ips: &[IpAddr],
        port: u16,
        tried: &[SocketAddr],
        down: &[(SocketAddr, Instant)],
        now: Instant,
        turn: usize,
    ) -> Option<SocketAddr> {
        let preferred = preferred_family(ips);
        if down.is_empty() && tried.is_empty() {
            // The usual case: no allocation.
            return (!preferred.is_empty())
                .then(|| SocketAddr::new(preferred[turn % preferred.len()], port));
        }
        let is_down = |addr: &SocketAddr| down.iter().any(|(a, until)| a == addr && *until > now);
        let (first, other) = ips.split_at(preferred.len());
        let candidates = |family: &[IpAddr], up: bool| -> Vec<SocketAddr> {
            family
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .filter(|addr| !tried.contains(addr) && is_down(addr) != up)
                .collect()
        };
        [(first, true), (other, true), (first, false), (other, false)]
            .into_iter()
            .map(|(family, up)| candidates(family, up))
            .find(|c| !c.is_empty())
            .map(|c| c[turn % c.len()])
    }

    /// Stores a fresh answer, unless a fresher one arrived meanwhile; the name's down marks
    /// carry over. Returns the marks now in force.
    /// The name's turn goes on from the one the entry already holds (the refresh took its
    /// turn when it was claimed); a new name starts from the entry's.
    fn store(&self, host: &str, mut entry: Entry, now: Instant) -> DownMarks {
        let mut names = self.lock();
        match names.get_mut(host) {
            Some(current) if current.fetched > entry.fetched && !current.ips.is_empty() => {
                current.down.clone()
            }
            Some(current) => {
                entry.down = std::mem::take(&mut current.down);
                entry.down.retain(|(_, until)| *until > now);
                entry.turn = current.turn;
                let down = entry.down.clone();
                *current = entry;
                down
            }
            None => {
                Self::insert_new(&mut names, host, entry, now, self.policy);
                Vec::new()
            }
        }
    }

    /// Adds a name, keeping the map under [`MAX_NAMES`]: expired entries go first, then the
    /// older half.
    fn insert_new(
        names: &mut HashMap<String, Entry>,
        host: &str,
        entry: Entry,
        now: Instant,
        policy: ResolverPolicy,
    ) {
        if names.len() >= MAX_NAMES {
            let keep = policy.ttl + policy.serve_stale;
            names.retain(|_, e| now.saturating_duration_since(e.fetched) < keep);
        }
        if names.len() >= MAX_NAMES {
            let mut ages: Vec<Instant> = names.values().map(|e| e.fetched).collect();
            let (_, median, _) = ages.select_nth_unstable(names.len() / 2);
            let median = *median;
            names.retain(|_, e| e.fetched > median);
        }
        names.insert(host.to_owned(), entry);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Every update is a whole insert or one field, so a poisoned map is still a valid map.
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The answer with the first (the resolver's preferred) family's addresses first, then the
/// other family's, each in the resolver's order.
fn by_family(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let v4 = ips.first().is_some_and(IpAddr::is_ipv4);
    // Stable: each family keeps the resolver's order.
    ips.sort_by_key(|ip| ip.is_ipv4() != v4);
    ips
}

/// The leading addresses of an answer ordered by [`by_family`]: the preferred family's.
fn preferred_family(ips: &[IpAddr]) -> &[IpAddr] {
    let v4 = ips.first().is_some_and(IpAddr::is_ipv4);
    let n = ips.iter().take_while(|ip| ip.is_ipv4() == v4).count();
    &ips[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn resolver(ttl: u64, stale: u64) -> InstanceResolver {
        InstanceResolver::new(ResolverPolicy {
            ttl: Duration::from_secs(ttl),
            serve_stale: Duration::from_secs(stale),
            timeout: Duration::from_millis(200),
        })
    }

    /// Resolves the test name at `now` with a scripted resolver answer; counts lookups.
    async fn ask(
        r: &InstanceResolver,
        now: Instant,
        answer: std::io::Result<Vec<IpAddr>>,
        lookups: &Cell<u32>,
    ) -> Result<SocketAddr, ResolveError> {
        r.resolve_name("instance.internal", 8080, &[], now, || {
            lookups.set(lookups.get() + 1);
            async move { answer }
        })
        .await
    }

    fn down() -> std::io::Result<Vec<IpAddr>> {
        Err(std::io::Error::other("resolver down"))
    }

    /// A blocking resolver that holds every call until it is opened, counting calls.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Gate {
        fn call(&self) -> std::io::Result<Vec<IpAddr>> {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            let mut open = self.open.lock().expect("gate");
            while !*open {
                open = self.opened.wait(open).expect("gate");
            }
            self.running.fetch_sub(1, SeqCst);
            Ok(vec![A])
        }

        fn open(&self) {
            *self.open.lock().expect("gate") = true;
            self.opened.notify_all();
        }
    }

    /// Opens the gate when the test ends, failed or not: the runtime waits for blocked calls.
    struct OpenAtEnd(Arc<Gate>);

    impl Drop for OpenAtEnd {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_lookups_keep_their_place_so_blocking_calls_stay_bounded() {
        use std::sync::atomic::Ordering::SeqCst;
        let (gate, _open, lookup) = gated(places(4, 0, 0));
        // Four requests whose calls run, then leave: their calls run on, in their places.
        let first: Vec<_> = (0..4)
            .map(|i| hold(&lookup, &format!("hang-{i}")))
            .collect();
        assert!(until(|| gate.running.load(SeqCst) == 4).await);
        first.iter().for_each(|r| r.abort());
        // Thirty-six more names that hang, each with a request waiting: none has a place.
        let more: Vec<_> = (4..40)
            .map(|i| hold(&lookup, &format!("hang-{i}")))
            .collect();
        assert!(until(|| lookup.waits_for_a_place("hang-39")).await);
        assert_eq!(gate.running.load(SeqCst), 4);
        assert_eq!(gate.most.load(SeqCst), 4, "never more calls than places");
        // Once the calls return, their places are free again, four at a time.
        gate.open();
        for r in more {
            let answer = tokio::time::timeout(Duration::from_secs(10), r).await;
            assert!(answer.expect("in time").expect("joined").is_ok());
        }
        assert_eq!(gate.most.load(SeqCst), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_name_has_one_call_at_a_time_which_later_lookups_join() {
        use std::sync::atomic::Ordering::SeqCst;
        let (gate, _open, lookup) = gated(places(4, 0, 0));
        let waiting = hold(&lookup, "hang");
        let other = hold(&lookup, "hang-other");
        assert!(until(|| gate.running.load(SeqCst) == 2).await);
        // Requests for the name that hangs, each leaving at once, join the call running
        // instead of taking a second place.
        for _ in 0..10 {
            ask_and_leave(&lookup, "hang").await;
        }
        assert_eq!(gate.calls.load(SeqCst), 2, "one call a name");
        // A request that waits gets the answer of the call it joined.
        gate.open();
        for r in [waiting, other] {
            let answer = tokio::time::timeout(Duration::from_secs(10), r).await;
            let answer = answer.expect("in time").expect("joined");
            assert_eq!(answer.expect("an answer"), vec![A]);
        }
        assert_eq!(gate.calls.load(SeqCst), 2);
        // The call ended: the next lookup asks anew.
        assert_eq!(lookup.lookup("hang", 80).await.expect("an answer"), vec![A]);
        assert_eq!(gate.calls.load(SeqCst), 3);
    }

    #[tokio::test]
    async fn a_lookup_that_timed_out_is_not_asked_again_for_a_second_from_its_timeout() {
        let r = resolver(10, 0);
        let t0 = Instant::now();
        let asked = Cell::new(0);
        let hang = || {
            asked.set(asked.get() + 1);
            std::future::pending::<std::io::Result<Vec<IpAddr>>>()
        };
        let at = |t| r.resolve_name("instance.internal", 8080, &[], t, hang);
        let first = at(t0).await;
        assert!(
            matches!(first, Err(ResolveError::Timeout { .. })),
            "{first:?}"
        );
        // 200 ms of timeout, then a second: at 1.1 s it still fails fast, unasked.
        let again = at(t0 + Duration::from_millis(1_100)).await;
        assert!(
            matches!(again, Err(ResolveError::RecentlyFailed { .. })),
            "{again:?}"
        );
        assert_eq!(asked.get(), 1);
        let later = t0 + Duration::from_secs(60);
        let n = Cell::new(0);
        let answered = ask(&r, later, Ok(vec![A]), &n).await;
        assert_eq!(answered.expect("asked again").ip(), A);
    }

    fn places(quick: usize, moved: usize, slow: usize) -> Places {
        Places { quick, moved, slow }
    }

    /// A resolver whose `hang-*` names wait at `gate`; the others answer [`B`] at once.
    fn hang_or_answer(gate: &Arc<Gate>) -> impl Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> {
        let held = Arc::clone(gate);
        move |host: &str, _| {
            if host.starts_with("hang") {
                held.call()
            } else {
                Ok(vec![B])
            }
        }
    }

    /// Polls `done` until it holds (or ten seconds pass).
    async fn until(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done()
    }

    type TestResolve = Box<dyn Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync>;

    /// A lookup with `places` over [`hang_or_answer`], its gate, and the guard that opens
    /// the gate when the test ends.
    fn gated(places: Places) -> (Arc<Gate>, OpenAtEnd, Arc<BlockingLookup<TestResolve>>) {
        let gate = Arc::new(Gate::default());
        let resolve: TestResolve = Box::new(hang_or_answer(&gate));
        let lookup = Arc::new(BlockingLookup::new(resolve, places));
        (Arc::clone(&gate), OpenAtEnd(gate), lookup)
    }

    /// A request for `host` that waits until it is answered (or aborted): while it waits,
    /// its call is one somebody waits for.
    fn hold(
        lookup: &Arc<BlockingLookup<TestResolve>>,
        host: &str,
    ) -> tokio::task::JoinHandle<std::io::Result<Vec<IpAddr>>> {
        let (lookup, host) = (Arc::clone(lookup), host.to_owned());
        tokio::spawn(async move { lookup.lookup(&host, 80).await })
    }

    /// Asks for `host` and stops waiting at once, as a request whose lookup timed out.
    async fn ask_and_leave<F>(lookup: &BlockingLookup<F>, host: &str)
    where
        F: Fn(&str, u16) -> std::io::Result<Vec<IpAddr>> + Send + Sync + 'static,
    {
        let asked = tokio::time::timeout(Duration::from_millis(5), lookup.lookup(host, 80));
        assert!(asked.await.is_err(), "{host}: answered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_call_gives_its_quick_place_to_the_next_name() {
        // One quick place: a name that hangs would hold it for as long as it hangs.
        let (gate, _open, lookup) = gated(places(1, 1, 1));
        let _waiting = hold(&lookup, "hang-1");
        assert!(until(|| gate.running.load(std::sync::atomic::Ordering::SeqCst) == 1).await);
        // Past SLOW_AFTER it takes a moved place, and the quick one is free again.
        assert!(until(|| lookup.quick.available_permits() == 1).await);
        assert_eq!(lookup.moved.available_permits(), 0);
        assert_eq!(lookup.slow.available_permits(), 1);
        let good = tokio::time::timeout(Duration::from_secs(10), lookup.lookup("good", 80));
        assert_eq!(
            good.await.expect("not kept waiting").expect("an answer"),
            vec![B]
        );
        // The name is known to be slow: its next call goes straight to a slow place.
        assert!(calls_of(&lookup.calls).is_slow("hang-1", Instant::now()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_no_moved_place_free_a_slow_call_keeps_its_quick_one() {
        use std::sync::atomic::Ordering::SeqCst;
        // The bound holds: no more calls than places, whatever hangs.
        let (gate, _open, lookup) = gated(places(1, 0, 1));
        let _waiting = hold(&lookup, "hang-1");
        assert!(until(|| calls_of(&lookup.calls).is_slow("hang-1", Instant::now())).await);
        assert_eq!(lookup.quick.available_permits(), 0);
        let good = tokio::time::timeout(Duration::from_millis(50), lookup.lookup("good", 80));
        assert!(good.await.is_err(), "no place");
        assert!(lookup.waits_for_a_place("good"));
        assert_eq!(gate.running.load(SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_nobody_waits_for_any_more_is_not_made_and_its_wait_is_told_apart() {
        use std::sync::atomic::Ordering::SeqCst;
        let (gate, _open, lookup) = gated(places(1, 0, 0));
        let waiting = hold(&lookup, "hang-1");
        assert!(until(|| gate.running.load(SeqCst) == 1).await);
        waiting.abort();
        // Queued behind it: the request stops waiting before its call has a place.
        ask_and_leave(&lookup, "hang-2").await;
        assert!(lookup.waits_for_a_place("hang-2"));
        assert!(!lookup.waits_for_a_place("hang-1"), "asked, and hanging");
        gate.open();
        assert!(until(|| calls_of(&lookup.calls).running.is_empty()).await);
        assert_eq!(gate.calls.load(SeqCst), 1, "hang-2 was never asked");
    }

    #[tokio::test]
    async fn answers_are_kept_for_the_ttl_then_refreshed() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let first = ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        assert_eq!(first, SocketAddr::new(A, 8080));
        let cached = ask(&r, t0 + Duration::from_secs(9), Ok(vec![B]), &n).await;
        assert_eq!(cached.expect("cached").ip(), A);
        assert_eq!(n.get(), 1, "no lookup within the ttl");
        let refreshed = ask(&r, t0 + Duration::from_secs(10), Ok(vec![B]), &n).await;
        assert_eq!(refreshed.expect("refreshed").ip(), B);
        assert_eq!(n.get(), 2);
    }

    #[tokio::test]
    async fn requests_take_the_addresses_in_turn() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..4 {
            let addr = ask(&r, t0, Ok(vec![A, B]), &n).await.expect("resolved");
            seen.push(addr.ip());
        }
        assert_eq!(n.get(), 1);
        assert_eq!(seen.iter().filter(|ip| **ip == A).count(), 2, "{seen:?}");
        assert_eq!(seen.iter().filter(|ip| **ip == B).count(), 2, "{seen:?}");
    }

    #[tokio::test]
    async fn two_names_used_in_turn_each_spread_over_their_addresses() {
        // An app's UI and API hosts, asked alternately: each name keeps its own rotation, so
        // neither sends every request to one of its addresses.
        let r = resolver(10, 30);
        let t0 = Instant::now();
        const C: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1));
        const D: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2));
        let mut seen: Vec<IpAddr> = Vec::new();
        for _ in 0..20 {
            for (host, ips) in [("app.svc", vec![A, B]), ("api.svc", vec![C, D])] {
                let addr = r
                    .resolve_name(host, 8080, &[], t0, || async move { Ok(ips) })
                    .await
                    .expect("resolved");
                seen.push(addr.ip());
            }
        }
        for ip in [A, B, C, D] {
            assert_eq!(
                seen.iter().filter(|s| **s == ip).count(),
                10,
                "{ip}: {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_name_refreshed_on_every_request_still_takes_its_addresses_in_turn() {
        // A ttl shorter than the gap between requests (a quiet name, or dns_ttl = 0s): each
        // request refreshes the answer, and the turn still moves by one each time.
        let r = resolver(1, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let mut seen = Vec::new();
        for i in 0..10 {
            let now = t0 + Duration::from_secs(2 * i);
            seen.push(
                ask(&r, now, Ok(vec![A, B]), &n)
                    .await
                    .expect("resolved")
                    .ip(),
            );
        }
        assert_eq!(n.get(), 10, "every request refreshed");
        assert_eq!(seen.iter().filter(|ip| **ip == A).count(), 5, "{seen:?}");
    }

    #[tokio::test]
    async fn one_refresh_at_a_time_and_a_failed_one_serves_the_last_answer() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        let t1 = t0 + Duration::from_secs(11);
        // The refresh is claimed before the lookup: a request arriving meanwhile does not ask.
        assert!(matches!(
            r.consult("instance.internal", 8080, &[], t1, None),
            Cached::Refresh { stale: Some(_), .. }
        ));
        assert!(matches!(
            r.consult("instance.internal", 8080, &[], t1, None),
            Cached::Use(_)
        ));
        let t2 = t1 + RETRY_EVERY;
        assert_eq!(ask(&r, t2, down(), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 2);
        let soon = t2 + Duration::from_millis(500);
        assert_eq!(ask(&r, soon, down(), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 2, "no second lookup within a second of a failure");
        let later = t2 + Duration::from_secs(2);
        assert_eq!(ask(&r, later, Ok(vec![]), &n).await.expect("stale").ip(), A);
        assert_eq!(n.get(), 3);
        let back = later + Duration::from_secs(2);
        assert_eq!(ask(&r, back, Ok(vec![B]), &n).await.expect("fresh").ip(), B);
    }

    #[tokio::test]
    async fn a_late_answer_never_replaces_a_fresher_one() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0 + Duration::from_secs(5), Ok(vec![B]), &n)
            .await
            .expect("resolved");
        // A lookup that started earlier and finished later must not win.
        r.store(
            "instance.internal",
            Entry {
                ips: vec![A].into(),
                fetched: t0,
                next_try: t0,
                down: Vec::new(),
                turn: 0,
                refreshing: None,
            },
            t0 + Duration::from_secs(6),
        );
        let now = t0 + Duration::from_secs(6);
        assert_eq!(ask(&r, now, down(), &n).await.expect("cached").ip(), B);
    }

    #[tokio::test]
    async fn failures_are_remembered_for_a_second_and_stale_answers_end() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let secs = |s: u64| t0 + Duration::from_secs(s);
        assert!(matches!(
            ask(&r, t0, down(), &n).await,
            Err(ResolveError::Lookup { .. })
        ));
        // Within the second, no lookup: an unresolvable name costs one lookup a second.
        let again = ask(&r, t0 + Duration::from_millis(500), Ok(vec![A]), &n).await;
        assert!(
            matches!(again, Err(ResolveError::RecentlyFailed { .. })),
            "{again:?}"
        );
        assert_eq!(n.get(), 1);
        assert!(matches!(
            ask(&r, secs(1), Ok(vec![]), &n).await,
            Err(ResolveError::NoAddress { .. })
        ));
        ask(&r, secs(2), Ok(vec![A]), &n).await.expect("resolved");
        // Past ttl + dns_serve_stale the old answer no longer stands in, and the failure is
        // remembered all the same.
        let too_late = secs(42);
        assert!(ask(&r, too_late, down(), &n).await.is_err());
        let looked = n.get();
        let soon = too_late + Duration::from_millis(500);
        assert!(matches!(
            ask(&r, soon, Ok(vec![A]), &n).await,
            Err(ResolveError::RecentlyFailed { .. })
        ));
        assert_eq!(n.get(), looked);
        // With no stale window, a failed refresh fails at once.
        let strict = resolver(10, 0);
        ask(&strict, t0, Ok(vec![A]), &n).await.expect("resolved");
        assert!(ask(&strict, secs(10), down(), &n).await.is_err());
    }

    #[tokio::test]
    async fn url_literals_are_used_as_parsed() {
        let r = resolver(10, 30);
        for (url, want) in [
            ("http://10.0.0.9:8080/app", "10.0.0.9:8080"),
            ("https://[2001:db8::5]/", "[2001:db8::5]:443"),
        ] {
            let url = UpstreamUrl::parse("instance_url", url).expect("url");
            assert_eq!(
                r.resolve(&url, &[]).await.expect("literal").to_string(),
                want
            );
        }
        assert!(r.lock().is_empty(), "literals never reach the cache");
    }

    #[tokio::test]
    async fn a_name_answered_with_the_unspecified_address_is_not_reached_there() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let zero = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        // The other addresses of the answer are used...
        for _ in 0..4 {
            let addr = ask(&r, t0, Ok(vec![zero, A]), &n).await.expect("resolved");
            assert_eq!(addr.ip(), A);
        }
        // ...and an answer of nothing else is no address.
        let r = resolver(10, 30);
        let multicast: IpAddr = "ff02::1".parse().expect("ip");
        assert!(matches!(
            ask(&r, t0, Ok(vec![zero, multicast]), &n).await,
            Err(ResolveError::NoAddress { .. })
        ));
    }

    #[test]
    fn the_preferred_family_comes_first() {
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(by_family(vec![A, v6, B]), [A, B, v6]);
        assert_eq!(by_family(vec![v6, A]), [v6, A]);
        assert_eq!(preferred_family(&[A, B, v6]), [A, B]);
        assert_eq!(preferred_family(&[v6, A]), [v6]);
        assert!(preferred_family(&[]).is_empty());
    }

    fn named() -> UpstreamUrl {
        UpstreamUrl::parse("instance_url", "http://instance.internal:8080/").expect("url")
    }

    #[tokio::test]
    async fn a_request_fails_over_to_the_next_address_and_others_pass_the_dead_one_over() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let url = named();
        // The first request's pick refuses; it goes again and gets the other address.
        let mut tried = Vec::new();
        let first = ask(&r, t0, Ok(vec![A, B]), &n).await.expect("resolved");
        assert!(r.connect_failed(&url, first, &mut tried, t0), "B is left");
        let second = r
            .resolve_name("instance.internal", 8080, &tried, t0, || async { down() })
            .await
            .expect("the other address");
        assert_ne!(second, first);
        // Both tried: nothing left to try, and asking anyway says so.
        assert!(!r.connect_failed(&url, second, &mut tried, t0));
        let none = r
            .resolve_name("instance.internal", 8080, &tried, t0, || async { down() })
            .await;
        assert!(
            matches!(none, Err(ResolveError::AllTried { .. })),
            "{none:?}"
        );
    }

    #[tokio::test]
    async fn a_dead_address_is_passed_over_for_a_while_even_across_refreshes() {
        let r = resolver(1, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let url = named();
        ask(&r, t0, Ok(vec![A, B]), &n).await.expect("resolved");
        let dead = SocketAddr::new(A, 8080);
        assert!(r.connect_failed(&url, dead, &mut Vec::new(), t0));
        let t1 = t0 + Duration::from_secs(2);
        for i in 0..6 {
            // The first of these refreshes the name; its mark carries over.
            let addr = ask(&r, t1, Ok(vec![A, B]), &n).await.expect("resolved");
            assert_eq!(addr.ip(), B, "request {i} went to the dead address");
        }
        assert_eq!(n.get(), 2, "one refresh");
        // After DOWN_FOR the address gets its turn again.
        let later = t0 + DOWN_FOR + Duration::from_millis(500);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(
                ask(&r, later, Ok(vec![A, B]), &n)
                    .await
                    .expect("resolved")
                    .ip(),
            );
        }
        assert!(seen.contains(&A), "{seen:?}");
    }

    #[tokio::test]
    async fn the_live_addresses_share_the_load_evenly_and_marks_keep_to_their_port() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let c: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
        ask(&r, t0, Ok(vec![A, B, c]), &n).await.expect("resolved");
        r.connect_failed(&named(), SocketAddr::new(A, 8080), &mut Vec::new(), t0);
        let mut seen = Vec::new();
        for _ in 0..60 {
            seen.push(ask(&r, t0, Ok(vec![]), &n).await.expect("resolved").ip());
        }
        let count = |ip| seen.iter().filter(|s| **s == ip).count();
        assert_eq!((count(A), count(B), count(c)), (0, 30, 30));
        // The same name on another port (an api_url) is not marked.
        let api_port: Vec<IpAddr> = ask_many(&r, 9090, 30, t0).await;
        assert_eq!(api_port.iter().filter(|ip| **ip == A).count(), 10);
    }

    /// `times` requests to the test name on `port`; their addresses.
    async fn ask_many(r: &InstanceResolver, port: u16, times: usize, now: Instant) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for _ in 0..times {
            let addr = r
                .resolve_name("instance.internal", port, &[], now, || async { down() })
                .await
                .expect("cached");
            out.push(addr.ip());
        }
        out
    }

    #[tokio::test]
    async fn when_every_address_is_down_they_are_tried_anyway() {
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let url = named();
        ask(&r, t0, Ok(vec![A, B]), &n).await.expect("resolved");
        for ip in [A, B] {
            r.connect_failed(&url, SocketAddr::new(ip, 8080), &mut Vec::new(), t0);
        }
        let addr = ask(&r, t0, Ok(vec![A, B]), &n).await;
        assert!(addr.is_ok(), "{addr:?}");
    }

    #[tokio::test]
    async fn attempts_per_request_are_bounded_and_literals_are_never_retried() {
        let r = resolver(10, 30);
        let t0 = Instant::now();
        let url = named();
        let many: Vec<IpAddr> = (1..=6)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)))
            .collect();
        let mut tried = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let addr = r
                .resolve_name("instance.internal", 8080, &tried, t0, || async {
                    Ok(many.clone())
                })
                .await
                .expect("an untried address");
            assert!(!tried.contains(&addr), "{addr} tried twice");
            if !r.connect_failed(&url, addr, &mut tried, t0) {
                break;
            }
        }
        assert_eq!(attempts, MAX_CONNECT_ATTEMPTS);
        let literal = UpstreamUrl::parse("instance_url", "http://10.0.0.9:8080/").expect("url");
        let addr = "10.0.0.9:8080".parse().expect("addr");
        assert!(!r.connect_failed(&literal, addr, &mut Vec::new(), t0));
    }

    #[tokio::test]
    async fn a_hanging_resolver_times_out() {
        let r = resolver(10, 30);
        let hung = r
            .resolve_name("instance.internal", 80, &[], Instant::now(), || {
                std::future::pending::<std::io::Result<Vec<IpAddr>>>()
            })
            .await;
        assert!(
            matches!(hung, Err(ResolveError::Timeout { .. })),
            "{hung:?}"
        );
    }

    /// Two requests for the name at `now`: the first claims the refresh and its lookup
    /// takes a while; the second comes meanwhile with a lookup of its own that must not run.
    async fn two_at_once(
        r: &InstanceResolver,
        now: Instant,
        answer: Vec<IpAddr>,
    ) -> [Result<SocketAddr, ResolveError>; 2] {
        let second_asked = Cell::new(false);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = r.resolve_name("instance.internal", 8080, &[], now, || {
            let answer = answer.clone();
            async move {
                // Answers once the second request has consulted the cache.
                let _ = rx.await;
                Ok(answer)
            }
        });
        let second = async {
            // The first has claimed the refresh by now (its consult ran at its first poll).
            tokio::task::yield_now().await;
            let waiting = r.resolve_name("instance.internal", 8080, &[], now, || {
                second_asked.set(true);
                async { down() }
            });
            tokio::pin!(waiting);
            // One poll: it consults and starts waiting; then the first's lookup may answer.
            let polled =
                std::future::poll_fn(|cx| std::task::Poll::Ready(waiting.as_mut().poll(cx))).await;
            let _ = tx.send(());
            match polled {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => waiting.await,
            }
        };
        let (a, b) = tokio::join!(first, second);
        assert!(
            !second_asked.get(),
            "the second request looked the name up itself"
        );
        [a, b]
    }

    #[tokio::test]
    async fn requests_during_the_refresh_of_a_quiet_name_wait_for_it() {
        // A name idle for longer than dns_ttl + dns_serve_stale, then a burst (a browser
        // loading a page): the first request claims the refresh, the others wait for its
        // answer instead of failing "moments ago" while nothing has failed.
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        let [first, second] = two_at_once(&r, t0 + Duration::from_secs(41), vec![B]).await;
        assert_eq!(first.expect("first").ip(), B);
        assert_eq!(second.expect("second waits for the refresh").ip(), B);
    }

    #[tokio::test]
    async fn with_no_stale_window_a_routine_refresh_fails_no_request() {
        let r = resolver(10, 0);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        let [first, second] = two_at_once(&r, t0 + Duration::from_secs(10), vec![A]).await;
        assert!(first.is_ok(), "{first:?}");
        assert!(second.is_ok(), "{second:?}");
        // A refresh that fails still fails the requests that waited for it, fast.
        let t2 = t0 + Duration::from_secs(30);
        let failed = ask(&r, t2, down(), &n).await;
        assert!(
            matches!(failed, Err(ResolveError::Lookup { .. })),
            "{failed:?}"
        );
        let next = ask(&r, t2, Ok(vec![A]), &n).await;
        assert!(
            matches!(next, Err(ResolveError::RecentlyFailed { .. })),
            "{next:?}"
        );
    }

    /// Polls `f` once; true while it is pending.
    async fn pending_once<F: Future>(mut f: std::pin::Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await
    }

    #[tokio::test]
    async fn with_a_zero_ttl_every_waiting_request_takes_the_answer_it_waited_for() {
        // dns_ttl = 0s and dns_serve_stale = 0s: the answer is due again as soon as it is
        // stored, yet the requests that waited for it must use it, not queue another lookup
        // (or fail, having waited once already).
        let r = resolver(0, 0);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        let now = t0 + Duration::from_secs(1);
        let asked_again = Cell::new(0);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let first = r.resolve_name("instance.internal", 8080, &[], now, || async move {
            let _ = rx.await;
            Ok(vec![B])
        });
        let waiter = || {
            r.resolve_name("instance.internal", 8080, &[], now, || {
                asked_again.set(asked_again.get() + 1);
                async { down() }
            })
        };
        let (w1, w2) = (waiter(), waiter());
        tokio::pin!(first, w1, w2);
        assert!(
            pending_once(first.as_mut()).await,
            "the first waits for its lookup"
        );
        assert!(
            pending_once(w1.as_mut()).await,
            "the second waits for the first's lookup"
        );
        assert!(pending_once(w2.as_mut()).await, "the third too");
        let _ = tx.send(());
        let (a, b, c) = tokio::join!(first, w1, w2);
        for got in [a, b, c] {
            assert_eq!(got.expect("resolved").ip(), B);
        }
        assert_eq!(asked_again.get(), 0, "only the first looked the name up");
    }

    #[tokio::test]
    async fn a_dual_stack_name_fails_over_to_its_other_family() {
        // AAAA and A records (`localhost` on many hosts: ::1, 127.0.0.1), the instance
        // listening on IPv4 only: the IPv6 connect is refused and the request goes again to
        // the IPv4 address. Others keep taking the preferred family while it is up.
        let r = resolver(10, 30);
        let n = Cell::new(0);
        let t0 = Instant::now();
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        let url = named();
        let mut tried = Vec::new();
        let first = ask(&r, t0, Ok(vec![v6, A]), &n).await.expect("resolved");
        assert_eq!(first.ip(), v6, "the resolver's preferred family first");
        assert!(
            r.connect_failed(&url, first, &mut tried, t0),
            "the IPv4 address is left"
        );
        let second = r
            .resolve_name("instance.internal", 8080, &tried, t0, || async { down() })
            .await
            .expect("the other family's address");
        assert_eq!(second.ip(), A);
        // While the IPv6 address is marked down, other requests go to IPv4 straight away.
        let other = ask(&r, t0, down(), &n).await.expect("cached");
        assert_eq!(other.ip(), A);
        // Once the mark lapses, the preferred family is used again.
        let later = ask(&r, t0 + DOWN_FOR, down(), &n).await.expect("cached");
        assert_eq!(later.ip(), v6);
    }

    #[tokio::test]
    async fn zero_ttl_asks_every_time_and_ip_literals_never() {
        let r = resolver(0, 0);
        let n = Cell::new(0);
        let t0 = Instant::now();
        ask(&r, t0, Ok(vec![A]), &n).await.expect("resolved");
        ask(&r, t0 + Duration::from_secs(2), Ok(vec![A]), &n)
            .await
            .expect("resolved");
        assert_eq!(n.get(), 2);
        let url = UpstreamUrl::parse("instance_url", "http://10.0.0.9:80/").expect("url");
        let literal = r.resolve(&url, &[]).await.expect("literal");
        assert_eq!(literal, "10.0.0.9:80".parse().expect("addr"));
    }
}
