//! The validated settings the rest of Nexus Edge works with.
//!
//! These are domain types, separate from the TOML file format (read and checked in `load/`,
//! with the walker in `reader.rs`): every value here has already been checked, so code that
//! receives a [`Settings`] never re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `nexus-edge serve` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Listener, threads, shutdown.
    pub server: ServerSettings,
    /// How a request's host maps to a tenant, and which paths are special.
    pub tenancy: TenancySettings,
    /// Token validation.
    pub auth: AuthSettings,
    /// Connections to tenant instances.
    pub upstream: UpstreamSettings,
    /// Where bindings come from.
    pub store: StoreSettings,
    /// Logging.
    pub log: LogSettings,
    /// Cross-origin requests from browsers (CORS), when the router answers for them.
    pub cors: CorsSettings,
    /// The HTTPS listener; `None`: plain HTTP only.
    pub tls: Option<TlsListenerSettings>,
    /// The per-instance latency and queue-delay signals that drive scale triggers.
    pub metrics: MetricsSettings,
    /// Where revoked tokens are listed, and how stale that list may grow unnoticed.
    pub revocation: RevocationSettings,
    /// The HTTP admin API; `None`: off (the `nexus-edge tenant` commands still work).
    pub admin_api: Option<AdminApiSettings>,
}

/// `[admin_api]`: binding changes over HTTP, for a provisioning pipeline, on a listener of
/// its own (never the public one, nor the ops one that probes and scrapes reach).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminApiSettings {
    /// The admin API's listener.
    pub listen: SocketAddr,
    /// The tokens it accepts, each by its SHA-256 digest and the name its writes are audited
    /// under. Looked at for every request (read again when it changed), so a token added or
    /// taken out counts at once.
    pub tokens_file: PathBuf,
    /// HTTPS on the listener, when `certificates` are named: the bearer tokens then never
    /// cross the network in the clear. `None`: plain HTTP.
    pub tls: Option<AdminApiTls>,
}

/// The admin API's certificates: chosen by the name its clients ask for (SNI) and read again
/// every `reload_interval`, as `[tls]`'s are, but a set of their own (an internal name need
/// not be served to the public, nor a public certificate to the pipeline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminApiTls {
    /// PEM files, each a certificate chain followed by its private key, or directories of
    /// such `*.pem` files.
    pub certificates: Vec<PathBuf>,
    /// How often the files are read again.
    pub reload_interval: Duration,
}

/// `[revocation]`: the deny list of tokens refused before they expire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationSettings {
    /// Where the list comes from.
    pub source: RevocationSource,
    /// How long the list may go without being known to equal its source before the router
    /// says so (a warning, `revocations_stale`). Tokens are still accepted then: the router
    /// fails open on revocations.
    pub max_staleness: Duration,
    /// How often a revocations file is looked at.
    pub poll_interval: Duration,
}

/// Where the revocations come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationSource {
    /// None: no token is revoked (a file store without `[revocation] file`).
    None,
    /// A revocations file (`[revocation] file`).
    File(std::path::PathBuf),
    /// The Redis store of `[store]`, under its key prefix.
    Store,
}

/// `[metrics]`: how the router judges each instance's latency and queue delay, once per
/// `interval`, and how many instances get series of their own.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// How often each instance's requests are judged (the "interval" of the scale triggers).
    pub interval: Duration,
    /// The latency an instance's 95th percentile must stay under (the API SLO).
    pub latency_slo: Duration,
    /// Intervals in a row above the SLO that raise the latency trigger.
    pub slo_intervals: u32,
    /// Requests an interval needs for its instance to be judged: fewer say nothing.
    pub min_requests: u64,
    /// How many times its baseline an instance's queue delay must be to raise the trigger.
    pub queue_delay_factor: f64,
    /// How far above its baseline a queue delay must also be: sub-millisecond wobbles of a
    /// fast instance are no queue, whatever their ratio.
    pub queue_delay_floor: Duration,
    /// How far back the baseline looks (an average weighted towards the recent).
    pub baseline_window: Duration,
    /// Instances that get series of their own (at most 10,000: 90,000 series and 24 MB of
    /// latency buckets); the rest share one, labelled `instance_id="(over budget)"`.
    pub max_instances: usize,
}

/// `[tls]`: an HTTPS listener beside the plain one, each connection's certificate chosen by
/// the name the client asks for (SNI).
#[derive(Clone, Debug, PartialEq)]
pub struct TlsListenerSettings {
    /// The HTTPS listener's address.
    pub listen: SocketAddr,
    /// PEM files, each a certificate chain followed by its private key, or directories whose
    /// `*.pem` files are such (a tenant's custom-domain certificate is added by adding a file).
    pub certificates: Vec<PathBuf>,
    /// How often the files are read again: a changed certificate is used by new handshakes.
    pub reload_interval: Duration,
}

/// `[server]`
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Plain HTTP listener address.
    pub listen: SocketAddr,
    /// Address of the operations listener (`/metrics`, `/healthz`, `/readyz`); `None` = off.
    pub admin_listen: Option<SocketAddr>,
    /// Pingora worker threads.
    pub threads: usize,
    /// After SIGTERM the router first reports not ready (`/readyz` 503) and keeps serving,
    /// closing each connection after its next response, for this long, so that a load
    /// balancer stops sending new requests before the listeners close. SIGINT skips it.
    pub shutdown_delay: Duration,
    /// Once the listeners close, in-flight requests get this long to finish before the
    /// process exits.
    pub shutdown_grace: Duration,
    /// How long an idle client connection is kept open between requests.
    pub keepalive_timeout: Duration,
    /// Longest wait for a client to take each piece of a response. A client that stops
    /// reading would otherwise hold its connection, and the instance connection feeding it,
    /// for as long as it likes.
    pub client_write_timeout: Duration,
    /// How long a client has to send a whole request header, from its first byte (or, on a
    /// new connection, from the accept). Bounds slow-header ("slowloris") clients, which
    /// Pingora's per-read timeouts do not.
    pub request_header_timeout: Duration,
    /// Longest request header (request line and fields) a client may send; a longer one gets
    /// 431. Bounds what one connection can make the router buffer (Pingora's own bound is
    /// 1 MiB).
    pub max_request_header_bytes: usize,
    /// Client connections open at once; the next one is closed at once. Keep it below the
    /// process's open-file limit, which instance connections share.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For` is read (right to left, up to the client); anyone
    /// else's is replaced.
    pub trusted_proxies: Vec<crate::IpNet>,
    /// Where the router offers its listening sockets to its successor (`serve --upgrade`),
    /// and where a successor asks for them; `None` = no handover (SIGQUIT drains as
    /// SIGTERM does).
    pub upgrade_socket: Option<std::path::PathBuf>,
}

/// `[tenancy]`
#[derive(Clone, Debug, PartialEq)]
pub struct TenancySettings {
    /// Base domains: a host `<tenant>.<base>` addresses `<tenant>`. Lowercase, no trailing dot.
    pub base_domains: Vec<String>,
    /// Path prefixes routed by host without a token (e.g. `/login`, `/assets/`).
    pub public_paths: Vec<String>,
    /// Path prefixes still served for a `suspended` tenant (billing / admin recovery).
    pub recovery_paths: Vec<String>,
    /// Requests under this prefix go to the binding's `api_url` when it has one.
    pub api_prefix: String,
    /// `Retry-After` sent with the 503 for tenants still being provisioned.
    pub provisioning_retry_after: Duration,
    /// Response header set on requests for `past_due` tenants (the app shows a notice).
    pub past_due_header: String,
    /// Origins (`https://app.example.com`, lowercase, a port only when not the scheme's
    /// default) of the operator's own pages that may send a tenant's session cookie to it
    /// from another tenant's namespace: every other page of another tenant may not.
    pub trusted_origins: Vec<String>,
    /// Which pages may frame a tenant's pages.
    pub frame_ancestors: FrameAncestors,
    /// Path prefixes each deployment mode's tenants are refused: what their plan never
    /// includes.
    pub refused_paths: ModePaths,
}

/// Path prefixes refused to the tenants of each deployment mode (`[tenancy]
/// isolated_refused_paths`, `cooperative_refused_paths`), lowercase. The brief: Solo
/// (`isolated`) never gets API or CI/CD access, custom integrations or background jobs;
/// asking for them means upgrading. Which paths those are is the app's: its own pages call
/// its API too, so none is refused unless listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModePaths {
    /// Refused to `isolated` tenants.
    pub isolated: Vec<String>,
    /// Refused to `cooperative` tenants.
    pub cooperative: Vec<String>,
}

/// Which pages may show a tenant's pages in a frame (`[tenancy] frame_ancestors`). Every
/// tenant is one site to a browser, so a page of another tenant framing one gets the user's
/// `SameSite` cookies with it, and can lure clicks onto the tenant's own forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameAncestors {
    /// The router adds nothing: what the instances' own headers allow.
    Any,
    /// Only the tenant's own pages (its subdomain and names under it on every base domain,
    /// its custom domains) and `trusted_origins`: the router adds a
    /// `Content-Security-Policy: frame-ancestors` to every response it forwards, beside the
    /// instance's own policies, which still apply.
    Tenant,
}

/// `[cors]`: the router's own answer to browsers' cross-origin requests. A preflight
/// (`OPTIONS` with `Access-Control-Request-Method`) carries no credential, so on a protected
/// path it could only be refused; with a policy here the router answers it, and sets the
/// `Access-Control-*` headers of every response itself (the instances' own are removed).
#[derive(Clone, Debug, PartialEq)]
pub struct CorsSettings {
    /// Which pages may read responses; `None`: no policy (preflights are decided like any
    /// request, and instances' `Access-Control-*` headers pass as they are).
    pub origins: Option<CorsOrigins>,
    /// Methods a preflight is told it may use (`Access-Control-Allow-Methods`).
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight is told it may send (`Access-Control-Allow-Headers`),
    /// lowercase.
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read besides the CORS-safelisted ones
    /// (`Access-Control-Expose-Headers`), lowercase.
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer (`Access-Control-Max-Age`).
    pub max_age: Duration,
}

/// The pages a [`CorsSettings`] policy lets read responses.
#[derive(Clone, Debug, PartialEq)]
pub enum CorsOrigins {
    /// Any page, without credentials (`Access-Control-Allow-Origin: *` on every response):
    /// a browser lets a page read a response to a request it sent with cookies only when the
    /// response names the page, so with this only a token a script sends itself
    /// (`Authorization`) gets a readable answer.
    Any,
    /// These pages, each named back to itself in `Access-Control-Allow-Origin`.
    Listed {
        /// Origins as browsers send them (see `[tenancy] trusted_origins`).
        origins: Vec<String>,
        /// Also the addressed tenant's own pages: its subdomain, names under it, its
        /// bindings' custom domains; over `https`, or over `http` when the client reached the
        /// router so.
        tenant_pages: bool,
        /// `Access-Control-Allow-Credentials: true`: the pages may send cookies.
        credentials: bool,
    },
}

/// The largest `[auth] max_token_bytes` may be: no router takes a longer token.
pub const MAX_TOKEN_BYTES_CEILING: usize = 65_536;

/// The query parameters held to the request's token whatever `[auth]` says: `access_token`,
/// which RFC 6750 §2.3 defines for bearer tokens, and `bearer_token`, which Doorkeeper (Rails'
/// OAuth provider) reads beside it by default. `token_query_parameters` names others.
pub const QUERY_TOKENS: [&str; 2] = ["access_token", "bearer_token"];

/// The methods RFC 9110 defines, and `PATCH`: their bodies are passed on (or, for `CONNECT`
/// and `TRACE`, the request is refused whole), whatever `extension_methods_with_bodies` says.
pub const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `[auth]`
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSettings {
    /// Where the verification keys (a JWKS, RFC 7517) come from.
    pub jwks: JwksSource,
    /// HMAC secrets, each under its `kid` and pinned to one of HS256/384/512; HMAC tokens are
    /// refused unless one is configured.
    pub hmac_keys: Vec<HmacKey>,
    /// Accepted `iss` values; empty = `iss` not checked.
    pub issuers: Vec<String>,
    /// For each issuer, the `kid`s of the keys it signs with (RFC 8725 §3.8: a token signed by
    /// a key that is not its issuer's is refused). Required when `issuers` lists more than
    /// one; `None` with one issuer: every key is that issuer's.
    pub issuer_keys: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Accepted `aud` values (token `aud` may be a string or an array); empty: a token must
    /// carry no `aud` (one that does is meant for another service, RFC 7519 §4.1.3).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest a token may live, by its `exp` (beyond the leeway) from now and from its `iat`
    /// when it has one; `None`: any `exp` is taken.
    pub max_token_lifetime: Option<Duration>,
    /// Claim holding the tenant id.
    pub tenant_claim: String,
    /// Claim holding the identity org id.
    pub org_claim: String,
    /// Cookie that may carry the token besides `Authorization: Bearer`.
    pub session_cookie: Option<String>,
    /// Headers an instance's app reads a token from besides `Authorization`, lowercase with
    /// `_` and `.` written `-` (the spellings servers fold together): read as the router reads
    /// `Authorization: Bearer`, and every one present must carry the request's token.
    pub token_headers: Vec<String>,
    /// Cookies an instance's app reads a token from besides the session cookie: read as the
    /// session cookie is.
    pub token_cookies: Vec<String>,
    /// Query parameters an instance's app reads a token from besides [`QUERY_TOKENS`]: never
    /// a credential to the router (tokens in URLs leak), but each must repeat the request's
    /// token, as those must.
    pub token_query_parameters: Vec<String>,
    /// Capacity of the verified-token cache, in tokens of up to 1 KiB of identity claims (a
    /// larger one counts once per KiB started); 0 disables it.
    pub token_cache_capacity: usize,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// How often the JWKS file is checked for changes: the longest a key taken out of it
    /// still verifies tokens. (A fetched JWKS has its own timings: [`RemoteJwks`].)
    pub jwks_poll_interval: Duration,
}

/// Where verification keys come from.
#[derive(Clone, Debug, PartialEq)]
pub enum JwksSource {
    /// A JWKS file, reloaded when it changes. A config file names one or a URL.
    File(PathBuf),
    /// A JWKS fetched from the identity provider, refreshed, and kept when it cannot be.
    Url(Box<RemoteJwks>),
    /// The demo key set compiled into the binary; only the no-config embedded default uses it.
    EmbeddedDemo,
}

/// `[auth] jwks_url` and the settings that go with it: where the identity provider publishes
/// its keys and how closely the router follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteJwks {
    /// `https://`, or `http://` to a loopback address (a key set read over a network in the
    /// clear could be swapped by anyone on the path).
    pub url: url::Url,
    /// PEM bundle the provider's certificate is verified against, instead of the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// Longest between two fetches: how long a key the provider withdrew may still verify
    /// tokens. A shorter `Cache-Control: max-age` from the provider is followed.
    pub refresh_interval: Duration,
    /// Shortest between two fetches, whatever asks for one: a token naming an unknown `kid`
    /// (a key newly rotated in), or a provider's short `max-age`. Bounds the fetches a flood
    /// of made-up `kid`s can cause.
    pub min_refresh_interval: Duration,
    /// Longest one fetch may take, connecting included.
    pub timeout: Duration,
    /// Where the last key set fetched is kept, to start with when the provider cannot be
    /// reached at start; `None`: not kept.
    pub cache_file: Option<PathBuf>,
    /// Keys not confirmed by a fetch for this long are stale (logged, on `/metrics`); they
    /// keep verifying tokens, as refusing every token would take every tenant down.
    pub max_staleness: Duration,
}

/// A shared HMAC secret, enabled explicitly.
#[derive(Clone, PartialEq)]
pub struct HmacKey {
    /// Key id matched against the token's `kid`.
    pub kid: String,
    /// The one algorithm the secret verifies (RFC 8725 §3.1: a key is used with exactly one).
    pub alg: HmacAlgorithm,
    /// The secret bytes (never printed), at least [`HmacAlgorithm::min_secret_len`] long.
    pub secret: Vec<u8>,
}

/// The HMAC algorithm an `[[auth.hmac_keys]]` secret is pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC SHA-256, the default.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
}

impl HmacAlgorithm {
    /// The `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            HmacAlgorithm::HS256 => "HS256",
            HmacAlgorithm::HS384 => "HS384",
            HmacAlgorithm::HS512 => "HS512",
        }
    }

    /// Parses an `alg` name, exactly.
    pub fn from_name(s: &str) -> Option<HmacAlgorithm> {
        [Self::HS256, Self::HS384, Self::HS512]
            .into_iter()
            .find(|a| a.name() == s)
    }

    /// Shortest secret allowed: the hash's output size (RFC 7518 §3.2).
    pub fn min_secret_len(self) -> usize {
        match self {
            HmacAlgorithm::HS256 => 32,
            HmacAlgorithm::HS384 => 48,
            HmacAlgorithm::HS512 => 64,
        }
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `[upstream]`
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamSettings {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed between reads from the instance.
    pub read_timeout: Duration,
    /// Time allowed between writes to the instance.
    pub write_timeout: Duration,
    /// For a request that asks for an upgrade (a WebSocket): the bound on each read and write,
    /// either side, in place of `read_timeout` and `write_timeout`. A tunnel may sit silent
    /// far longer than a response may take to come.
    pub tunnel_idle_timeout: Duration,
    /// Extra CA bundle (PEM) for `https` instances; the system roots are used otherwise.
    pub ca_file: Option<PathBuf>,
    /// How long a named instance's address is kept before the resolver is asked again.
    pub dns_ttl: Duration,
    /// How long past `dns_ttl` the last address still serves while the resolver fails.
    pub dns_serve_stale: Duration,
    /// Idle instance connections kept for reuse, all instances together. Connections are
    /// pooled per tenant (one tenant's requests never ride another's), so a router needs
    /// about one per tenant that is served often to keep reusing them.
    pub idle_connections: usize,
    /// How long an idle instance connection is kept for reuse before it is closed: pooled
    /// connections otherwise stayed open until evicted, to instances no longer bound too.
    /// Below the instances' own keep-alive timeout, the router closes first, so a request is
    /// not sent on a connection the instance is closing.
    pub idle_connection_timeout: Duration,
    /// How a request body the client sends chunked is sent to the instance.
    pub chunked_request_bodies: ChunkedRequestBodies,
    /// Extension methods (beyond GET, HEAD, POST, PUT, DELETE, OPTIONS and PATCH) whose
    /// request bodies are passed on: the instances read them. A body on any other is refused,
    /// since a server that does not know the method answers it without reading the body, which
    /// it then reads as the connection's next request.
    pub extension_methods_with_bodies: Vec<String>,
    /// Of `extension_methods_with_bodies`, those every instance's server reads the body of
    /// whatever it answers (a WebDAV server's own methods): the instance connection that
    /// carried such a body is pooled again. After a body on any other method but `POST`,
    /// `PUT` and `PATCH` the router has the instance close it.
    pub extension_methods_kept_alive: Vec<String>,
}

/// How a chunked request body (one whose length the client did not say) reaches the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkedRequestBodies {
    /// Read whole by the router first (up to 64 KiB; a longer one is refused, 411) and sent
    /// with a `Content-Length`: the servers that implement no chunked request bodies (uWSGI's
    /// `--http11-socket`, Thin) would read its chunks as the connection's next request, one
    /// the router never checked.
    Length,
    /// Passed on chunked as it arrives, without a bound: only for instances whose servers all
    /// read chunked request bodies.
    Chunked,
}

/// `[store]`: where bindings come from.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // built once at start-up; boxing would only add noise
pub enum StoreSettings {
    /// A JSON file of binding records, reloaded when it changes.
    File(FileStoreSettings),
    /// Redis, shared by every replica.
    Redis(RedisStoreSettings),
}

/// `[store] kind = "redis"`
#[derive(Clone, Debug, PartialEq)]
pub struct RedisStoreSettings {
    /// Where the primary is.
    pub endpoint: RedisEndpointSettings,
    /// `[store.tls]`: certificates for `rediss://` connections.
    pub tls: RedisTlsSettings,
    /// Key prefix shared by the fleet.
    pub key_prefix: String,
    /// Last-known-good snapshot on local disk (`None`: no snapshot).
    pub snapshot_path: Option<PathBuf>,
    /// Full reconcile period.
    pub reconcile_interval: Duration,
    /// Replica heartbeat period.
    pub heartbeat_interval: Duration,
    /// This replica's id (`None`: hostname-pid).
    pub replica_id: Option<String>,
}

/// How the Redis primary is found.
#[derive(Clone, PartialEq)]
pub enum RedisEndpointSettings {
    /// `url = "redis://[user:password@]host:port/db"`, `rediss://…` (TLS) or
    /// `redis+unix:///path`.
    Url(String),
    /// `[store.sentinel]`: the primary Redis Sentinel names.
    Sentinel(SentinelSettings),
}

impl std::fmt::Debug for RedisEndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL may carry a password.
            RedisEndpointSettings::Url(_) => f.write_str("Url(<redacted>)"),
            RedisEndpointSettings::Sentinel(s) => f.debug_tuple("Sentinel").field(s).finish(),
        }
    }
}

/// `[store.sentinel]`
#[derive(Clone, PartialEq)]
pub struct SentinelSettings {
    /// The name the Sentinels monitor the primary under.
    pub master_name: String,
    /// Sentinel URLs: `redis://[user:password@]host:port`, or `rediss://` for TLS.
    pub nodes: Vec<String>,
    /// TLS to the primary.
    pub tls: bool,
    /// ACL user on the primary.
    pub username: Option<String>,
    /// Password on the primary (from `password_env`).
    pub password: Option<String>,
    /// Database number.
    pub db: i64,
}

impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("nodes", &self.nodes.len())
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

/// `[store.tls]`: certificates for TLS connections to Redis and Sentinel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RedisTlsSettings {
    /// Trust only this CA bundle (PEM); absent: the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for servers that require mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// `[store] kind = "file"`
#[derive(Clone, Debug, PartialEq)]
pub struct FileStoreSettings {
    /// The bindings file; `None` only in the no-config embedded default (demo bindings).
    pub path: Option<PathBuf>,
    /// How often the file is checked for changes.
    pub poll_interval: Duration,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// `tracing` filter, e.g. `info` or `nexus_edge=debug,info`.
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
    /// Lines a second, for each reason, about single requests the router refuses or fails
    /// to forward; the rest are counted (`log_lines_not_logged_total`), not written, so that
    /// a flood of bad requests cannot flood the log as well.
    pub request_lines_per_second: u32,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// The least `server.shutdown_grace` a router serving from the Redis store may stop with: its
/// goodbye heartbeat and last snapshot are written in the last this-much of the grace (or when
/// the drain ends sooner), on the runtime Pingora stops when the grace runs out.
pub const MIN_REPLICA_GRACE: Duration = Duration::from_secs(2);

/// Why a router could not serve with these settings, beyond what parsing checks (its key and
/// why): a Redis replica's grace too short for its last steps (a stop cut them, so its
/// snapshot missed the changes of its last seconds and its heartbeat stayed; a restart from
/// that snapshot over a Redis that lost its data served, and a restore of it wrote back, a
/// table older than the one served before). Not a parsing rule: the admin commands read the
/// same file and stop nothing. `serve` and `check` ask.
pub fn serving_problem(
    server: &ServerSettings,
    store: &StoreSettings,
) -> Option<(&'static str, String)> {
    let grace = server.shutdown_grace;
    if !matches!(store, StoreSettings::Redis(_)) || grace >= MIN_REPLICA_GRACE {
        return None;
    }
    Some((
        "server.shutdown_grace",
        format!(
            "{} is too short to serve from the Redis store: a replica writes its goodbye \
                 heartbeat and its last snapshot in the last {}s of the grace, and a stop with \
                 less cuts them; set it to {}s at least",
            humantime::format_duration(grace),
            MIN_REPLICA_GRACE.as_secs(),
            MIN_REPLICA_GRACE.as_secs()
        ),
    ))
}
