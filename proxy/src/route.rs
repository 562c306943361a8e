//! What the instance receives: the upstream request-target and the identity headers.
//!
//! Identity and forwarding headers are authoritative only when the router sets them, so every
//! client-supplied copy is removed first; a backend can trust `X-Tenant-Id` because no client
//! can put it there. A request forwarded without an identity (a public path) also loses its
//! bearer credential and session cookie: the router did not accept them for this tenant.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::auth::credential::{
    has_token_cookie, holds_subprotocol_token, is_bearer, without_subprotocol_tokens,
    without_token_cookies,
};
use crate::auth::TokenPlaces;
use crate::authz::check_claims;
use crate::decision::Decision;
use crate::field_name::{fold_dash, folds_to, starts_as, trim_dashes_end};
use crate::framing::canonical_content_length;

use http::header::HeaderName;
use http::HeaderMap;

/// `X-Request-Id`, parsed once (as are the other router headers below).
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
static X_ORG_ID: HeaderName = HeaderName::from_static("x-org-id");
/// The tenant's subscription status, for apps that dispatch otherwise than by path (Next.js
/// server actions by a header, Astro's form actions by a query parameter): the router's
/// status policy confines paths, so a suspended tenant's recovery page could still run any
/// such action; the app can hold the line itself by this.
static X_TENANT_STATUS: HeaderName = HeaderName::from_static("x-tenant-status");
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers [`rewrite_upstream_request`] sets: tenant, its status, org, user, request id and
/// the three `X-Forwarded-*`.
const SET_BY_ROUTER: usize = 8;

/// Longest reserved name outside the families matched by prefix.
const MAX_RESERVED_LEN: usize = 20;

/// The reserved families, by prefix (see [`is_reserved`]); each is at least three bytes long.
const FAMILIES: [&[u8]; 24] = [
    b"x-forwarded",
    b"remote-",
    b"x-remote-",
    b"x-auth-request-",
    b"x-webauth-",
    b"x-amzn-oidc-",
    b"x-goog-iap-",
    b"x-goog-authenticated-user-",
    b"cf-access-",
    b"x-ms-client-principal",
    b"x-pomerium-",
    b"x-envoy-",
    b"x-consumer-",
    b"x-credential-",
    b"x-authenticated-",
    b"x-original-forwarded-for",
    b"client-cert",
    b"x-ssl-",
    b"x-client-cert",
    b"x-arr-clientcert",
    b"x-traversal-",
    b"forwarded-",
    b"x-middleware-",
    b"x-invoke-",
];

/// Next.js's prefetch hint, the one `X-Middleware-*` header a browser sends.
const PREFETCH: &[u8] = b"x-middleware-prefetch";

/// Fields the router reads or writes itself, reserved only when spelt with a trailing `-`,
/// `_` or `.` (`Authorization_`): the credentials, the body's framing, the host.
const TRAILED: [&[u8]; 6] = [
    b"authorization",
    b"cookie",
    b"sec-websocket-protocol",
    b"transfer-encoding",
    b"content-length",
    b"host",
];

/// Whether a client's request header is one the instance must only ever get from the router,
/// in any spelling an upstream may fold together (`_` or `.` for `-`: CGI-style servers map
/// `X_User_Id` and `X-User-Id` to `HTTP_X_USER_ID`, and PHP turns the `.` of the
/// `HTTP_X.USER.ID` that Caddy's FastCGI and FrankenPHP pass into `_`). These are removed
/// before the router sets its own:
/// - the identity headers it sets (`X-Tenant-Id`, `X-Tenant-Status`, `X-Org-Id`, `X-User-Id`,
///   `X-Request-Id`);
/// - every `X-Forwarded*`, `Forwarded` and `Forwarded-*` (Dancer2 reads `Forwarded-Proto`),
///   and the client-address and scheme headers that
///   frameworks and client-IP helpers read in their place (`X-Real-IP`, `X-Client-IP`,
///   `True-Client-IP`, `CF-Connecting-IP`, `X-Scheme`, ...): the router's `X-Forwarded-For`
///   and `-Proto` are the only account of the client;
/// - path and host overrides some frameworks honour (`X-Original-URL`, `X-Original-URI`,
///   `X-Original-Path`, `X-Rewrite-URL`, `X-Original-Host`, `X-Host`), which would replace the
///   path the policy decided on or the host the tenant was read from, and the mount-point
///   headers (`Script-Name`, which gunicorn reads as `SCRIPT_NAME`, and `X-Script-Name`): an
///   app takes that prefix off the path before routing, so `/billing/api/x` with
///   `Script-Name: /billing` is `/api/x` to it, past a suspended tenant's recovery paths; and
///   `X-Traversal-*` (Plack's `ReverseProxyPath`, which Catalyst's `using_frontend_proxy_path`
///   loads, and Paste's proxy cut `X-Traversal-Path` off the path's start, `/login/admin`
///   with `X-Traversal-Path: /login` being `/admin` to the app) and `X-Ingress-Path`;
/// - Next.js's internal headers, which its own servers send one another and trust from any
///   request (`X-Middleware-*`: `X-Middleware-Subrequest` made Next skip its middleware,
///   CVE-2025-29927, and a server action forwarded to another page carries it along;
///   `X-Invoke-*`, `X-Matched-Path`, `X-Now-Route-Matches`, `X-Action-Forwarded`), since no
///   client sends them but to bypass something (the browser's `X-Middleware-Prefetch` aside);
/// - the request headers that tell a middleware how the front proxy serves files
///   (`X-Sendfile-Type`, `X-Accel-Mapping`: Rack's and Plack's `Sendfile` then answer with
///   an `X-Accel-Redirect` to a path of the client's choosing, which an nginx between the
///   router and the app serves from its internal locations);
/// - the user headers of auth-proxy setups, by family (`Remote-*` as Authelia sends them,
///   `X-Remote-*`, `X-Auth-Request-*` as oauth2-proxy does, `X-WebAuth-*` as Grafana reads
///   them), and those of the platforms' own: `X-Amzn-Oidc-*` (AWS ALB), `X-Goog-Iap-*` and
///   `X-Goog-Authenticated-User-*` (Google IAP), `Cf-Access-*` (Cloudflare Access),
///   `X-MS-Client-Principal*` (Azure App Service), `X-Pomerium-*`, and every `X-Envoy-*`
///   (Envoy's client address and path overrides among them): an app configured to trust one
///   behind an authenticating proxy must only ever get it from one, and one moved here from
///   behind such a platform may still trust it; and those of API gateways (Kong's
///   `X-Consumer-*`, `X-Credential-*`, `X-Authenticated-*`, `X-Anonymous-Consumer`,
///   `X-Userinfo`) and the generic `X-Auth-User`;
/// - other client-address headers (`X-Original-Forwarded-For`, `X-Originating-IP`);
/// - the TLS facts a TLS-terminating proxy in front asserts, which the router (serving no
///   client certificates) never does: Jetty's forwarded-request customizer reads
///   `X-Proxied-Https`, `Proxy-auth-cert` and `Proxy-Ssl-Id` as the request being secure and
///   as its cipher suite and TLS session; Tomcat's `SSLValve` reads `SSL_Client_Cert`,
///   `SSL_Cipher`, `SSL_Session_Id` and their kin (every `SSL-*`); RFC 9440's `Client-Cert`
///   and `Client-Cert-Chain`, IIS ARR's `X-ARR-SSL` and `X-ARR-ClientCert`, and the `X-SSL-*`
///   and `X-Client-Cert*` families nginx and HAProxy set-ups send for a client certificate:
///   an app trusting one would take a client's word for its certificate;
/// - `Transfer_Encoding` and `Content_Length` (the framing fields' underscore and dot
///   spellings; the fields themselves are the body's framing, read by the router and sent
///   afresh), and `Sec_WebSocket_Protocol` (the subprotocols' such spellings, where an app
///   folding names would find a token the router reads only under the field's own name).
pub fn is_reserved(name: &HeaderName) -> bool {
    let full = name.as_str().as_bytes();
    // Grape's `headers` reads `X-User-Id_` (and so `Authorization_`) as the field without
    // its trailing `_`, and Puma puts such a name last, so its value wins over the router's.
    let b = trim_dashes_end(full);
    if b.len() < full.len() && TRAILED.iter().any(|n| folds_to(b, n)) {
        return true;
    }
    // Families are matched on the name as it came (`X-Forwarded-` is one), exact names
    // without its trailing separators.
    // The reserved names starting with `s`, apart: every browser request holds several
    // `sec-*` headers, which the families below need not be compared with.
    if full.first() == Some(&b's') {
        const SUBPROTOCOLS: &[u8] = b"sec-websocket-protocol";
        return (b.len() == b"script-name".len() && starts_as(b, b"script-name"))
            || (b.len() == SUBPROTOCOLS.len() && b != SUBPROTOCOLS && starts_as(b, SUBPROTOCOLS))
            || starts_as(full, b"ssl-");
    }
    // And those starting with `p`, past which `pragma`, `priority` and `purpose` need not go.
    if full.first() == Some(&b'p') {
        return starts_as(full, b"proxy-auth-cert") || starts_as(full, b"proxy-ssl-");
    }
    if !matches!(full.first(), Some(b'x' | b'f' | b't' | b'c' | b'r')) {
        return false;
    }
    // The one Next.js header its own browser client sends (on a prefetch, answered `{}` by
    // middleware that reads it), unlike the rest of `X-Middleware-*`.
    if b.len() == PREFETCH.len() && starts_as(b, PREFETCH) {
        return false;
    }
    // Most names differ from a family by their first or third byte (`x-f…`, `x-r…`): compared
    // first, a family costs one look.
    let third = full.get(2).map(|&c| fold_dash(c));
    if FAMILIES.iter().any(|family| {
        family[0] == full[0] && Some(fold_dash(family[2])) == third && starts_as(full, family)
    }) {
        return true;
    }
    if b.len() > MAX_RESERVED_LEN {
        return false;
    }
    let mut folded = [0u8; MAX_RESERVED_LEN];
    for (d, &c) in folded.iter_mut().zip(b) {
        *d = fold_dash(c);
    }
    let folded = &folded[..b.len()];
    // The body's framing fields spelt with `_` (`Transfer_Encoding`): no HTTP parser reads
    // them as framing, so the router framed the body without them, but a server that folds
    // `_` into `-`, or maps both to one CGI-style variable (`HTTP_TRANSFER_ENCODING`: Puma
    // before 5.0.3), would frame it by them: a body the router framed by its length read as
    // chunked, the instance reading the rest as a request the router never checked.
    if folded != b && matches!(folded, b"transfer-encoding" | b"content-length") {
        return true;
    }
    matches!(
        folded,
        b"x-tenant-id"
            | b"x-tenant-status"
            | b"x-org-id"
            | b"x-user-id"
            | b"x-request-id"
            | b"forwarded"
            | b"x-real-ip"
            | b"x-client-ip"
            | b"client-ip"
            | b"true-client-ip"
            | b"cf-connecting-ip"
            | b"fastly-client-ip"
            | b"fly-client-ip"
            | b"x-cluster-client-ip"
            | b"x-scheme"
            | b"x-url-scheme"
            | b"front-end-https"
            | b"x-original-url"
            | b"x-original-uri"
            | b"x-original-path"
            | b"x-script-name"
            | b"x-anonymous-consumer"
            | b"x-userinfo"
            | b"x-auth-user"
            | b"x-rewrite-url"
            | b"x-original-host"
            | b"x-host"
            | b"x-originating-ip"
            | b"x-proxied-https"
            | b"x-arr-ssl"
            | b"x-ingress-path"
            | b"x-sendfile-type"
            | b"x-accel-mapping"
            | b"x-matched-path"
            | b"x-now-route-matches"
            | b"x-action-forwarded"
    )
}

/// Refuses each `[auth] token_headers` entry the router takes off every request (see
/// [`is_reserved`]): the app never gets it, so no token can reach it there. Each refusal
/// comes with the entry's index. (The config refuses the standard and framing names itself;
/// these families are the router's knowledge.)
pub fn check_token_headers(names: &[String]) -> Vec<(usize, String)> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let why = match HeaderName::from_bytes(n.as_bytes()) {
                Err(_) => format!("{n:?} is not a header name"),
                Ok(name) if is_reserved(&name) => format!(
                    "{n:?} is taken off every request (an identity, a client address or a \
                     framing field only the router or a front proxy asserts): the app never \
                     gets it"
                ),
                Ok(_) => return None,
            };
            Some((i, why))
        })
        .collect()
}

/// Longest request id kept from a client.
const MAX_REQUEST_ID: usize = 128;

/// Returns the client's `X-Request-Id` if there is exactly one and it is sane (1–128 of
/// `A-Z a-z 0-9 - _ . :`), so ids from a trusted edge survive and junk is replaced.
/// The value is handed back as it came (a header value or its bytes), so keeping it copies
/// nothing.
pub fn sane_request_id<'a, V>(mut values: impl Iterator<Item = &'a V>) -> Option<&'a V>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = first.as_ref();
    let sane = !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
    sane.then_some(first)
}

/// Generates request ids: a random per-process prefix and a counter, the counter sent through
/// a keyed permutation. Unique across processes (the prefix has 64 random bits) without a system
/// call per request, unlike a v4 UUID. Sent as it is, the counter would tell every client how
/// many requests the replica served between two of its own (every tenant's traffic volume);
/// permuted, consecutive ids look unrelated and stay unique.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: std::sync::atomic::AtomicU64,
    permutation: CounterPermutation,
}

impl RequestIds {
    /// A generator with a fresh random prefix and permutation key.
    pub fn new() -> Self {
        let prefix = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        Self {
            prefix,
            next: std::sync::atomic::AtomicU64::new(0),
            permutation: CounterPermutation::new(),
        }
    }

    /// The next id, e.g. `3f2a9c0e7b1d4e55-9c41d07a2be85f13`, as the header value it is
    /// sent as (built once; the upstream request and the response share it).
    pub fn next_id(&self) -> http::HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.permutation.apply(n);
        let mut id = Vec::with_capacity(self.prefix.len() + 17);
        id.extend_from_slice(self.prefix.as_bytes());
        id.push(b'-');
        // Fixed-width hex by hand: `format!` costs several times as much on every request.
        for shift in (0..16).rev() {
            id.push(HEX[((n >> (shift * 4)) & 0xf) as usize]);
        }
        // Hex digits and `-` are always a valid header value.
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or_else(|_| http::HeaderValue::from_static("invalid-request-id"))
    }
}

/// A secret-keyed permutation of `u64`: a four-round Feistel network over the two 32-bit
/// halves, each round's function the standard library's randomly keyed SipHash of the round
/// number and the half. Four rounds of a pseudo-random function make a pseudo-random
/// permutation (Luby–Rackoff), so distinct counters give distinct ids that look random
/// without the key. With 32-bit halves that bound holds for about 2^16 ids seen: enough that
/// no client reads a count off its ids, not a cipher to hide secrets with. About 60 ns per id.
#[derive(Debug)]
struct CounterPermutation {
    key: std::collections::hash_map::RandomState,
}

impl CounterPermutation {
    const ROUNDS: u8 = 4;

    fn new() -> Self {
        Self {
            key: std::collections::hash_map::RandomState::new(),
        }
    }

    fn round(&self, round: u8, half: u32) -> u32 {
        use std::hash::BuildHasher;
        // Truncation intended: a round's output is one 32-bit half.
        self.key.hash_one((round, half)) as u32
    }

    fn apply(&self, n: u64) -> u64 {
        let (mut left, mut right) = ((n >> 32) as u32, n as u32);
        for round in 0..Self::ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        (u64::from(left) << 32) | u64::from(right)
    }

    /// The inverse of [`Self::apply`]: only tests need it, to show `apply` is one-to-one.
    #[cfg(test)]
    fn invert(&self, n: u64) -> u64 {
        let (mut left, mut right) = ((n >> 32) as u32, n as u32);
        for round in (0..Self::ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        (u64::from(left) << 32) | u64::from(right)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the upstream request-target: the upstream URL's path prefix, the normalised path,
/// and the original query.
pub fn upstream_target(decision: &Decision) -> String {
    let prefix = decision.upstream_url().path_prefix();
    let mut t = String::with_capacity(
        prefix.len() + decision.path.len() + 1 + decision.query.as_ref().map_or(0, |q| q.len()),
    );
    t.push_str(prefix);
    t.push_str(&decision.path);
    if let Some(q) = &decision.query {
        t.push('?');
        t.push_str(q);
    }
    t
}

/// Most `X-Forwarded-For` entries looked at, from the right.
const MAX_FORWARDED_HOPS: usize = 16;

/// The `X-Forwarded-For` to send for a request from TCP peer `peer`; `client` gives the
/// header values the request carried, and is only asked for when the peer is trusted.
///
/// From a peer not in `trusted`, it is the peer's address alone: a client cannot plant one.
/// From a trusted peer (a load balancer in front of the router) the chain is read from the
/// right, the way it was built: each trusted hop vouches for the entry to its left, so the
/// walk keeps trusted addresses and stops at the first untrusted one, the client. Whatever lies
/// left of it, or left of an entry that is not an address, came from the client and is
/// dropped. So `spoofed, client, lb` from a balancer that appends becomes `client, lb, peer`.
pub fn forwarded_for<'a, I>(
    peer: Option<IpAddr>,
    client: impl FnOnce() -> I,
    trusted: &[nexus_config::IpNet],
) -> Option<String>
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let peer = peer?.to_canonical();
    let is_trusted = |ip: IpAddr| is_trusted_proxy(ip, trusted);
    if !is_trusted(peer) {
        let mut out = String::with_capacity(15);
        push_ip(&mut out, peer);
        return Some(out);
    }
    let mut kept: Vec<IpAddr> = Vec::new();
    'walk: for value in client().rev() {
        let Ok(text) = std::str::from_utf8(value) else {
            break;
        };
        for hop in text.rsplit(',') {
            if kept.len() == MAX_FORWARDED_HOPS {
                break 'walk;
            }
            let Some(ip) = hop_address(hop.trim()) else {
                break 'walk;
            };
            let ip = ip.to_canonical();
            kept.push(ip);
            if !is_trusted(ip) {
                break 'walk;
            }
        }
    }
    let mut out = String::with_capacity((kept.len() + 1) * 17);
    for ip in kept.iter().rev() {
        push_ip(&mut out, *ip);
        out.push_str(", ");
    }
    push_ip(&mut out, peer);
    Some(out)
}

/// The address of one `X-Forwarded-For` entry: an address, or an address with the port the
/// balancer saw it from (`203.0.113.7:51234`, `[2001:db8::1]:443`; Azure Application Gateway
/// writes these); the port is dropped.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether `peer` is one of `[server] trusted_proxies`.
pub fn is_trusted_proxy(peer: IpAddr, trusted: &[nexus_config::IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|net| net.contains(peer))
}

/// The `X-Forwarded-Proto` to send: `https` when the client's connection to the router is TLS;
/// otherwise, from a trusted peer (a load balancer that ended TLS in front of the router), the
/// scheme it names in its own `X-Forwarded-Proto` when that is one value, `http` or `https`
/// (any case); else `http`. A client that is not behind a trusted peer cannot claim `https`.
pub fn forwarded_proto<'a, I>(
    tls: bool,
    peer_trusted: bool,
    client: impl FnOnce() -> I,
) -> &'static str
where
    I: Iterator<Item = &'a [u8]>,
{
    if tls {
        return "https";
    }
    if peer_trusted {
        let mut values = client();
        if let (Some(one), None) = (values.next(), values.next()) {
            if one.trim_ascii().eq_ignore_ascii_case(b"https") {
                return "https";
            }
        }
    }
    "http"
}

/// Appends an address in its usual text form. IPv4 (nearly every peer) is written digit by
/// digit: the formatter cost about 1,300 instructions per address, on every request.
fn push_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        // Writing to a String cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The `Host` and `X-Forwarded-Host` the instance gets for a request's `Host` value: the
/// host as the router read it to find the tenant, lowercase and without its trailing dot,
/// the port kept (shared, not copied, when the value already is so); empty without a usable
/// one. As sent, `ACME.example.com.` would reach an app that reads its tenant or builds its
/// links from `Host` as another name than the one routed.
pub fn forwarded_host(host: Option<&http::HeaderValue>) -> http::HeaderValue {
    let Some((h, Ok(text))) = host.map(|h| (h, h.to_str())) else {
        return http::HeaderValue::from_static("");
    };
    match crate::host::routed_authority(text) {
        std::borrow::Cow::Borrowed(_) => h.clone(),
        std::borrow::Cow::Owned(routed) => http::HeaderValue::from_str(&routed)
            .unwrap_or_else(|_| http::HeaderValue::from_static("")),
    }
}

/// Facts about the downstream connection needed for the forwarding headers, and where tokens
/// may be (taken off a request forwarded without an identity).
#[derive(Debug, Clone)]
pub struct Forwarding<'a> {
    /// The `X-Forwarded-For` to send (see [`forwarded_for`]); `None` without a TCP peer.
    pub forwarded_for: Option<String>,
    /// `https` when the client connected over TLS.
    pub proto: &'static str,
    /// The host the client addressed, as [`forwarded_host`] writes it (`Host`,
    /// `X-Forwarded-Host`).
    pub host: http::HeaderValue,
    /// The request id to send.
    pub request_id: &'a http::HeaderValue,
    /// The cookies and headers that may carry tokens (`[auth]`).
    pub token_places: &'a TokenPlaces,
    /// Whether the client's header is long (see [`is_long`]): its fields then go behind the
    /// router's.
    pub long: bool,
}

fn value(text: &str) -> pingora::Result<http::HeaderValue> {
    http::HeaderValue::from_str(text).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "router header", e)
    })
}

/// Rewrites the request for the instance: target, identity and forwarding headers.
///
/// The request is rebuilt from its parts rather than edited through Pingora's header API,
/// which keeps a second, case-preserving map and re-parses the name on every insert (about
/// 1,700 instructions a header, a tenth of the router's whole cost per request). So header
/// names reach the instance in their canonical form (`Content-Type`, `x-custom`), as HTTP/2
/// sends them anyway; field names are case-insensitive (RFC 9110 §5.1).
pub fn rewrite_upstream_request(
    req: &mut RequestHeader,
    decision: &Decision,
    fwd: Forwarding<'_>,
) -> pingora::Result<()> {
    // The client's origin-form target is kept when it already is what the instance must get
    // (the usual case: a path that needed no normalising, no upstream path prefix); anything
    // else is rebuilt from the normalised path.
    let uri = if sends_target_as_is(&req.uri, decision) {
        None
    } else {
        let target = upstream_target(decision);
        Some(target.parse::<http::Uri>().map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "upstream target", e)
        })?)
    };
    // Every fallible conversion happens before the request is taken apart.
    let binding = &decision.binding;
    let (tenant, org, sub) = match &decision.identity {
        Some(identity) => {
            // `decide` made this check; it is made again where the identity is sent, so no
            // decision built any other way can send one tenant's identity to another's
            // instance (two compares of strings the decision has just read).
            check_claims(identity.tenant.as_deref(), identity.org.as_deref(), binding).map_err(
                |e| {
                    pingora::Error::because(
                        pingora::ErrorType::InternalError,
                        "identity of another tenant",
                        e,
                    )
                },
            )?;
            let made = &identity.headers;
            // The tenant claim is the binding's tenant id, so always a valid value.
            let tenant = match &made.tenant {
                Some(v) => v.clone(),
                None => value(binding.tenant_id.as_str())?,
            };
            let org = match (&made.org, identity.org.as_deref()) {
                (Some(v), _) => Some(v.clone()),
                // Verification refuses a claim that is no header value; should one come
                // here anyway, making the value fails the request rather than leave the
                // org out.
                (None, Some(text)) => Some(value(text)?),
                (None, None) => None,
            };
            // Verification refused a `sub` that is no header value as it is, so one that
            // came with the token is here.
            (tenant, org, made.user.clone())
        }
        None => (value(binding.tenant_id.as_str())?, None, None),
    };
    let forwarded_for = fwd
        .forwarded_for
        // The String's buffer becomes the value: no copy.
        .map(http::HeaderValue::try_from)
        .transpose()
        .map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InvalidHTTPHeader, "router header", e)
        })?;
    let send_end_stream = req.send_end_stream();
    // Moved out, not cloned: the request is replaced whole below.
    let taken = std::mem::replace(
        req,
        RequestHeader::from(http::Request::new(()).into_parts().0),
    );
    let mut parts = http::request::Parts::from(taken);
    if let Some(uri) = uri {
        parts.uri = uri;
    }
    let headers = &mut parts.headers;

    // Clients rarely send these: one pass over the (few) headers present, and removal only
    // when one is there.
    if headers.keys().any(is_reserved) {
        let reserved: Vec<HeaderName> =
            headers.keys().filter(|n| is_reserved(n)).cloned().collect();
        for name in &reserved {
            headers.remove(name);
        }
    }
    if decision.identity.is_none() {
        take_off_credentials(headers, fwd.token_places);
    }
    if let Some(length) = canonical_content_length(headers) {
        headers.insert(http::header::CONTENT_LENGTH, length);
    }
    // A long header's fields go behind the router's (see `is_long`); a short one's stay
    // where they are (rebuilding the map costs about 0.3 µs for a browser's dozen fields).
    let behind = fwd.long.then(|| {
        if !fwd.host.is_empty() {
            headers.remove(http::header::HOST);
        }
        std::mem::take(headers)
    });
    headers.reserve(behind.as_ref().map_or(0, HeaderMap::len) + SET_BY_ROUTER);
    if !fwd.host.is_empty() {
        headers.insert(http::header::HOST, fwd.host.clone());
    }
    headers.insert(X_TENANT_ID.clone(), tenant);
    headers.insert(
        X_TENANT_STATUS.clone(),
        http::HeaderValue::from_static(decision.binding.status.as_str()),
    );
    if let Some(org) = org {
        headers.insert(X_ORG_ID.clone(), org);
    }
    if let Some(sub) = sub {
        headers.insert(X_USER_ID.clone(), sub);
    }
    headers.insert(X_REQUEST_ID.clone(), fwd.request_id.clone());
    if let Some(chain) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), chain);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        http::HeaderValue::from_static(fwd.proto),
    );
    headers.insert(X_FORWARDED_HOST.clone(), fwd.host);
    // Appended, not inserted: none of them is one of the router's (those were taken off
    // above), and one the client repeats keeps every line.
    let mut last = None;
    for (name, value) in behind.into_iter().flatten() {
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            headers.append(name, value);
        }
    }

    let mut rebuilt = RequestHeader::from(parts);
    if let Some(end) = send_end_stream {
        rebuilt.set_send_end_stream(end);
    }
    *req = rebuilt;
    Ok(())
}

/// Whether a request header of `fields` fields and `bytes` bytes (as it came) is long: it
/// then reaches the instance with the router's fields first and the client's behind them,
/// so that a server reading a request's first fields only still has the router's.
/// OpenResty's `ngx.req.get_headers()` returns the first 100 fields: a client's 100 left an
/// app without `X-Tenant-Id`, `X-User-Id` and `X-Tenant-Status`. Netty hands its handler a
/// header cut at 8 KiB. Below both bounds with room to spare, a header keeps its order.
pub fn is_long(fields: usize, bytes: usize) -> bool {
    const LONG_FIELDS: usize = 48;
    const LONG_BYTES: usize = 4096;
    fields > LONG_FIELDS || bytes > LONG_BYTES
}

/// Takes the bearer credential (every `Authorization: Bearer`, well-formed or not), the token
/// cookies (in every spelling the router reads), every token header and every subprotocol
/// that carries a token off a request forwarded without an identity. Other schemes, cookies
/// and subprotocols are the app's and stay.
fn take_off_credentials(headers: &mut http::HeaderMap, places: &TokenPlaces) {
    // Two fields are one to a server that joins them (Apache, with `, `): judged apart, a
    // credential split between them would pass. `Authorization` is a single field.
    if headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        headers.remove(http::header::AUTHORIZATION);
    }
    edit_values(headers, http::header::AUTHORIZATION, |v| {
        if is_bearer(v.as_bytes()) {
            Edit::Drop
        } else {
            Edit::Keep
        }
    });
    edit_values(headers, http::header::COOKIE, |v| {
        without_pieces(
            v,
            |b| has_token_cookie(b, places),
            |b| without_token_cookies(b, places),
        )
    });
    edit_values(headers, http::header::SEC_WEBSOCKET_PROTOCOL, |v| {
        without_pieces(v, holds_subprotocol_token, without_subprotocol_tokens)
    });
    if places.has_headers() {
        let carrying: Vec<HeaderName> = headers
            .keys()
            .filter(|n| places.is_token_header(n))
            .cloned()
            .collect();
        for name in &carrying {
            headers.remove(name);
        }
    }
}

/// The edit that takes off a list field's pieces `holds` finds (`without` gives the rest):
/// kept as it is when it holds none, dropped when nothing is left.
fn without_pieces(
    v: &http::HeaderValue,
    holds: impl Fn(&[u8]) -> bool,
    without: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Edit {
    if !holds(v.as_bytes()) {
        return Edit::Keep;
    }
    // What is left of a valid value is one: the pieces are its own bytes.
    without(v.as_bytes())
        .and_then(|rest| http::HeaderValue::from_bytes(&rest).ok())
        .map_or(Edit::Drop, Edit::Replace)
}

/// What becomes of one value of a header.
enum Edit {
    Keep,
    Drop,
    Replace(http::HeaderValue),
}

/// Applies `edit` to every value of `name`, in order; the header is only rebuilt when some
/// value changes.
fn edit_values(
    headers: &mut http::HeaderMap,
    name: HeaderName,
    edit: impl Fn(&http::HeaderValue) -> Edit,
) {
    let edits: Vec<Edit> = headers.get_all(&name).iter().map(&edit).collect();
    if edits.iter().all(|e| matches!(e, Edit::Keep)) {
        return;
    }
    let values: Vec<http::HeaderValue> = headers
        .get_all(&name)
        .iter()
        .zip(edits)
        .filter_map(|(v, e)| match e {
            Edit::Keep => Some(v.clone()),
            Edit::Drop => None,
            Edit::Replace(new) => Some(new),
        })
        .collect();
    headers.remove(&name);
    for v in values {
        headers.append(name.clone(), v);
    }
}

/// Whether the client's request-target is exactly the one [`upstream_target`] would build:
/// origin-form, the normalised path unchanged, the same query, and no upstream path prefix.
fn sends_target_as_is(uri: &http::Uri, decision: &Decision) -> bool {
    uri.scheme().is_none()
        && uri.authority().is_none()
        && uri
            .path_and_query()
            .is_some_and(|p| p.as_str().starts_with('/'))
        && decision.upstream_url().path_prefix().is_empty()
        && uri.path() == decision.path
        && uri.query() == decision.query.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_host_is_the_routed_spelling() {
        let cases = [
            ("acme.nexus.test", "acme.nexus.test"),
            ("ACME.Nexus.Test", "acme.nexus.test"),
            ("acme.nexus.test.", "acme.nexus.test"),
            ("Acme.Nexus.Test.:8443", "acme.nexus.test:8443"),
            ("acme.nexus.test:80", "acme.nexus.test:80"),
            ("[::1]:80", "[::1]:80"),
        ];
        for (sent, want) in cases {
            let sent = http::HeaderValue::from_static(sent);
            assert_eq!(forwarded_host(Some(&sent)), want, "{sent:?}");
        }
        assert_eq!(forwarded_host(None), "");
    }
    #[test]
    fn reserved_header_table() {
        let reserved = [
            // Grape reads a name without its trailing `_` (`X-User-Id_` as `X-User-Id`).
            "x-user-id_",
            "x-tenant-status_",
            "x-org-id-",
            "x-request-id.",
            "x-tenant-id__",
            "authorization_",
            "cookie.",
            "host_",
            "sec-websocket-protocol-",
            "transfer-encoding_",
            "content-length.",
            "x-forwarded-for_",
            "script-name",
            "script_name",
            "x-script-name",
            "x-original-path",
            "x-consumer-username",
            "x-consumer-id",
            "x-credential-identifier",
            "x-authenticated-userid",
            "x-authenticated-scope",
            "x-anonymous-consumer",
            "x-userinfo",
            "x-auth-user",
            "x-tenant-id",
            "x_tenant_id",
            "x-tenant-status",
            "x.tenant.status",
            "x-org-id",
            "x_org-id",
            "x-user-id",
            "x_user_id",
            "x-request-id",
            "x_request_id",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded-for",
            "x_forwarded_for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-prefix",
            "x-forwarded-port",
            "x-forwarded-ssl",
            "x_forwarded_scheme",
            "forwarded",
            "x-original-url",
            "x_original_uri",
            "x-rewrite-url",
            "x-forwarded",
            "x-forwarded-client-cert-chain-of-trust",
            "forwarded-for",
            "x-client-ip",
            "client_ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "fly-client-ip",
            "x-cluster-client-ip",
            "x-scheme",
            "x_url_scheme",
            "front-end-https",
            "x-original-host",
            "x_host",
            "remote-user",
            "remote_user",
            "x-remote-user",
            "x-auth-request-user",
            "x_auth_request_email",
            "x-webauth-user",
            "remote-groups",
            "remote_email",
            "x-auth-request-groups",
            "x-auth-request-preferred-username",
            "x-auth-request-access-token",
            "x-auth-request-redirect",
            "x-webauth-email",
            "x-amzn-oidc-identity",
            "x-amzn-oidc-data",
            "x-goog-iap-jwt-assertion",
            "x-goog-authenticated-user-email",
            "cf-access-authenticated-user-email",
            "cf-access-jwt-assertion",
            "x-ms-client-principal",
            "x-ms-client-principal-name",
            "x-pomerium-claim-email",
            "x-envoy-external-address",
            "x-envoy-original-path",
            "x-original-forwarded-for",
            "x-originating-ip",
            "transfer_encoding",
            "content_length",
            "Content_Length",
            // PHP reads `.` as `_` in `$_SERVER` names (Caddy's FastCGI, FrankenPHP).
            "x.user.id",
            "x.tenant-id",
            "x.forwarded.for",
            "remote.user",
            "cf.access.jwt-assertion",
            "script.name",
            "transfer.encoding",
            "sec_websocket_protocol",
            "sec.websocket.protocol",
            "sec-websocket_protocol",
            // TLS facts a front proxy asserts (Jetty, Tomcat's SSLValve, RFC 9440, IIS ARR).
            "x-proxied-https",
            "x_proxied_https",
            "proxy-auth-cert",
            "proxy-ssl-id",
            "proxy_ssl_id",
            "ssl_client_cert",
            "ssl_cipher",
            "ssl_session_id",
            "ssl_cipher_usekeysize",
            "ssl-client-escaped-cert",
            "client-cert",
            "client-cert-chain",
            "x-arr-ssl",
            "x-arr-clientcert",
            "x-ssl-client-cert",
            "x-ssl-client-verify",
            "x-client-cert",
            "x-client-certificate",
            // Mount points and file-serving hints a middleware takes from the request.
            "x-traversal-path",
            "x_traversal_path",
            "x-traversal-query-string",
            "x-ingress-path",
            "x-sendfile-type",
            "x_accel_mapping",
            "forwarded-proto",
            "forwarded_host",
            // Next.js's internal headers.
            "x-middleware-subrequest",
            "x_middleware_subrequest",
            "x-middleware-rewrite",
            "x-invoke-path",
            "x-invoke-query",
            "x-matched-path",
            "x-now-route-matches",
            "x-action-forwarded",
        ];
        let kept = [
            "host",
            "cookie",
            "x-user-ids",
            "x-user",
            "x-tenant",
            "forwardedhost",
            "authorization",
            "content-type",
            "cf-ray",
            "client-ip-hint",
            "cookie",
            "x-api-key",
            "x-requested-with",
            "user-agent",
            "x-custom_header",
            "x-hosts",
            "referer",
            "range",
            "remote",
            "x-remoteuser",
            "x-auth-requests",
            "x-amzn-trace-id",
            "cf-ipcountry",
            "x-goog-api-key",
            "script",
            "scripts-name",
            "x-consumer",
            "x-auth-users",
            "sec-fetch-mode",
            "transfer-encoding",
            "content-length",
            "content_type",
            "x.user",
            "content.type",
            "sec-websocket-protocol",
            "sec-websocket-protocols",
            "proxy-authorization",
            "prefer",
            "priority",
            "ssl",
            "sslx",
            "x-proxied",
            "x-arr-log-id",
            "x-client-id",
            "client-hints",
            "x-traversal",
            "x-sendfile",
            "x-accel-buffering",
            "forwardedx",
            "next-action",
            "next-router-state-tree",
            "x-nextjs-data",
            "rsc",
            "x-middleware",
            "x-middleware-prefetch",
            "pragma",
            "purpose",
        ];
        for name in reserved {
            let n = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(is_reserved(&n), "{name} must be removed");
        }
        for name in kept {
            let n = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert!(!is_reserved(&n), "{name} must be kept");
        }
    }

    #[test]
    fn every_family_is_found_in_any_spelling() {
        for family in FAMILIES {
            assert!(family.len() >= 3, "{family:?}");
            let underscored: Vec<u8> = family
                .iter()
                .map(|&c| if c == b'-' { b'_' } else { c })
                .collect();
            for name in [family.to_vec(), underscored, [family, &b"x"[..]].concat()] {
                let n = HeaderName::from_bytes(&name).expect("a header name");
                assert!(is_reserved(&n), "{n}");
            }
        }
    }

    #[test]
    fn generated_request_ids_are_prefix_and_fixed_width_hex() {
        let ids = RequestIds::new();
        let first = ids.next_id();
        let second = ids.next_id();
        let (first, second) = (
            first.to_str().expect("ascii").to_owned(),
            second.to_str().expect("ascii").to_owned(),
        );
        let (prefix, counter) = first.split_once('-').expect("prefix-counter");
        assert_eq!(prefix.len(), 16);
        assert_eq!(counter.len(), 16);
        assert!(counter
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let (second_prefix, _) = second.split_once('-').expect("prefix-counter");
        assert_eq!(second_prefix, prefix);
        // The counter is sent permuted: ids 0 and 1 are the permutation's images.
        let image = |n: u64| format!("{prefix}-{:016x}", ids.permutation.apply(n));
        assert_eq!(first, image(0));
        assert_eq!(second, image(1));
        ids.next
            .store(0xfedc_ba98_7654_3210, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids.next_id(), image(0xfedc_ba98_7654_3210).as_str());
        assert_eq!(
            sane_request_id(std::iter::once(first.as_bytes())),
            Some(first.as_bytes())
        );
    }

    #[test]
    fn request_ids_do_not_reveal_how_many_requests_came_between() {
        let ids = RequestIds::new();
        let counters: Vec<u64> = (0..10_000)
            .map(|_| {
                let id = ids.next_id();
                let (_, counter) = id.to_str().expect("ascii").split_once('-').expect("-");
                u64::from_str_radix(counter, 16).expect("hex")
            })
            .collect();
        // Unique, and not the counter: consecutive ids differ in about half their bits.
        let distinct: std::collections::HashSet<_> = counters.iter().collect();
        assert_eq!(distinct.len(), counters.len());
        let flipped: u32 = counters
            .windows(2)
            .map(|w| (w[0] ^ w[1]).count_ones())
            .sum();
        let mean = f64::from(flipped) / (counters.len() - 1) as f64;
        assert!(
            (28.0..36.0).contains(&mean),
            "{mean} bits differ on average"
        );
        // Another process (another key) numbers its requests differently.
        assert_ne!(
            RequestIds::new().permutation.apply(0),
            ids.permutation.apply(0)
        );
    }

    #[test]
    fn the_counter_permutation_is_one_to_one() {
        let p = CounterPermutation::new();
        for n in [
            0,
            1,
            2,
            u64::MAX,
            1 << 32,
            (1 << 32) - 1,
            0xfedc_ba98_7654_3210,
        ] {
            assert_eq!(p.invert(p.apply(n)), n, "{n:#x}");
        }
        for n in 0..10_000u64 {
            let m = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(p.invert(p.apply(m)), m, "{m:#x}");
        }
    }

    #[test]
    fn forwarded_proto_table() {
        let cases: [(bool, bool, &[&[u8]], &str); 8] = [
            (true, false, &[b"http"], "https"),
            (false, false, &[b"https"], "http"),
            (false, true, &[b"https"], "https"),
            (false, true, &[b" HTTPS "], "https"),
            (false, true, &[b"http"], "http"),
            (false, true, &[], "http"),
            (false, true, &[b"https", b"https"], "http"),
            (false, true, &[b"https,http"], "http"),
        ];
        for (tls, trusted, sent, want) in cases {
            assert_eq!(
                forwarded_proto(tls, trusted, || sent.iter().copied()),
                want,
                "{tls} {trusted} {sent:?}"
            );
        }
    }

    #[test]
    fn forwarded_for_table() {
        let lb = [nexus_config::IpNet::parse("10.0.0.0/8").expect("net")];
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        type Case<'a> = (
            Option<IpAddr>,
            &'a [&'a [u8]],
            &'a [nexus_config::IpNet],
            Option<&'a str>,
        );
        let cases: &[Case<'_>] = &[
            (None, &[], &lb, None),
            // Not from a trusted proxy: the peer alone, whatever was sent.
            (ip("198.51.100.9"), &[], &[], Some("198.51.100.9")),
            (ip("198.51.100.9"), &[b"6.6.6.6"], &[], Some("198.51.100.9")),
            (ip("198.51.100.9"), &[b"6.6.6.6"], &lb, Some("198.51.100.9")),
            // From the balancer: its client, then itself.
            (ip("10.1.2.3"), &[], &lb, Some("10.1.2.3")),
            (
                ip("10.1.2.3"),
                &[b"203.0.113.7"],
                &lb,
                Some("203.0.113.7, 10.1.2.3"),
            ),
            // A balancer that appends to the client's header: the client's part is dropped.
            (
                ip("10.1.2.3"),
                &[b"6.6.6.6, 203.0.113.7"],
                &lb,
                Some("203.0.113.7, 10.1.2.3"),
            ),
            // Two balancers: both kept, up to the first untrusted address.
            (
                ip("10.1.2.3"),
                &[b"6.6.6.6, 203.0.113.7", b"10.9.9.9"],
                &lb,
                Some("203.0.113.7, 10.9.9.9, 10.1.2.3"),
            ),
            // Junk left of the client is dropped; junk where the client should be stops the walk.
            (
                ip("10.1.2.3"),
                &[b"evil, 203.0.113.7"],
                &lb,
                Some("203.0.113.7, 10.1.2.3"),
            ),
            (
                ip("10.1.2.3"),
                &[b"203.0.113.7, evil"],
                &lb,
                Some("10.1.2.3"),
            ),
            (ip("10.1.2.3"), &[b"203.0.113.7,,"], &lb, Some("10.1.2.3")),
            (ip("10.1.2.3"), &[b"\xff"], &lb, Some("10.1.2.3")),
            (
                ip("::ffff:10.1.2.3"),
                &[b"203.0.113.7"],
                &lb,
                Some("203.0.113.7, 10.1.2.3"),
            ),
            (
                ip("10.1.2.3"),
                &[b"2001:db8::1"],
                &lb,
                Some("2001:db8::1, 10.1.2.3"),
            ),
            // Entries with the port the balancer saw: the address is kept, the port dropped.
            (
                ip("10.1.2.3"),
                &[b"6.6.6.6, 203.0.113.7:51234"],
                &lb,
                Some("203.0.113.7, 10.1.2.3"),
            ),
            (
                ip("10.1.2.3"),
                &[b"[2001:db8::1]:443, 10.9.9.9:80"],
                &lb,
                Some("2001:db8::1, 10.9.9.9, 10.1.2.3"),
            ),
            (ip("10.1.2.3"), &[b"203.0.113.7:x"], &lb, Some("10.1.2.3")),
        ];
        for (peer, client, trusted, want) in cases {
            let got = forwarded_for(*peer, || client.iter().copied(), trusted);
            assert_eq!(got.as_deref(), *want, "{peer:?} {client:?}");
        }
        // A chain of trusted hops longer than 16 is cut at 16.
        let long = vec!["10.0.0.1"; 20].join(",");
        let got = forwarded_for(ip("10.1.2.3"), || std::iter::once(long.as_bytes()), &lb);
        assert_eq!(got.as_deref().map(|s| s.split(", ").count()), Some(17));
    }

    #[test]
    fn addresses_are_written_as_the_formatter_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.3.45",
            "2001:db8::1",
            "::1",
        ] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(written(ip), ip.to_string());
        }
    }

    fn written(ip: IpAddr) -> String {
        let mut out = String::new();
        push_ip(&mut out, ip);
        out
    }

    fn decision_for(target: &str, instance_url: &str) -> Option<Decision> {
        let binding = crate::test_support::binding(instance_url, None);
        let (raw, query) = crate::path::split_target(target);
        let path = crate::path::normalize_path(raw).ok()?;
        Some(Decision {
            binding: std::sync::Arc::new(binding),
            upstream: crate::decision::UpstreamKind::App,
            path: path.into_owned(),
            query: query.map(str::to_owned),
            identity: None,
            notice: None,
            domain: None,
        })
    }

    /// The session cookie `sess`, the cookie `jwt` and the header `X-Access-Token`.
    fn places() -> TokenPlaces {
        TokenPlaces::new(&nexus_config::AuthSettings {
            session_cookie: Some("sess".to_owned()),
            token_cookies: vec!["jwt".to_owned()],
            token_headers: vec!["x-access-token".to_owned()],
            ..nexus_config::embedded_default().auth
        })
    }

    /// Rewrites `req` for a plain-HTTP client of `acme.nexus.test` with no TCP peer.
    fn rewrite(req: &mut RequestHeader, decision: &Decision) -> pingora::Result<()> {
        rewrite_as(req, decision, false)
    }

    /// [`rewrite`], the client's header long (see [`is_long`]) or not.
    fn rewrite_as(req: &mut RequestHeader, decision: &Decision, long: bool) -> pingora::Result<()> {
        let id = http::HeaderValue::from_static("id");
        let fwd = Forwarding {
            forwarded_for: None,
            proto: "http",
            host: http::HeaderValue::from_static("acme.nexus.test"),
            request_id: &id,
            token_places: &places(),
            long,
        };
        rewrite_upstream_request(req, decision, fwd)
    }

    #[test]
    fn a_long_headers_fields_go_behind_the_routers() {
        let decision = decision_for("/x", "http://127.0.0.1:1").expect("decision");
        let names = |long: bool| -> Vec<String> {
            let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
            for (name, value) in [
                ("accept", "*/*"),
                ("x-pad", "1"),
                ("host", "ACME.nexus.test"),
                ("x-pad", "2"),
                ("x-user-id", "forged"),
                ("cookie", "a=1"),
            ] {
                req.append_header(name, value).expect("header");
            }
            rewrite_as(&mut req, &decision, long).expect("rewritten");
            req.headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ascii")))
                .collect()
        };
        let long = names(true);
        assert_eq!(
            long,
            [
                "host: acme.nexus.test",
                "x-tenant-id: acme",
                "x-tenant-status: active",
                "x-request-id: id",
                "x-forwarded-proto: http",
                "x-forwarded-host: acme.nexus.test",
                "accept: */*",
                "x-pad: 1",
                "x-pad: 2",
                "cookie: a=1",
            ]
        );
        // A short one keeps its order, the router's fields after it (`Host` where it was).
        let short = names(false);
        assert_eq!(
            short[..5],
            [
                "accept: */*",
                "x-pad: 1",
                "x-pad: 2",
                "host: acme.nexus.test",
                "cookie: a=1"
            ]
        );
        let (mut a, mut b) = (long, short);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert!(is_long(49, 100) && is_long(10, 4097) && !is_long(48, 4096));
    }

    #[test]
    fn without_an_identity_the_credentials_stay_behind() {
        let all = |req: &RequestHeader, name| -> Vec<String> {
            req.headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_owned())
                .collect()
        };
        let mut decision = decision_for("/login", "http://127.0.0.1:1").expect("decision");
        let mut req = RequestHeader::build("GET", b"/login", None).expect("request");
        for (name, value) in [
            ("authorization", "Bearer other.tenant.token"),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("cookie", "theme=dark; sess=other; csrf=1"),
            ("cookie", "SESS=x"),
            ("cookie", "lang=en"),
            ("cookie", "JWT=other; lang=fr"),
            ("x-access-token", "other"),
            ("X_Access_Token", "Bearer other"),
            ("x-access-tokens", "kept"),
            (
                "sec-websocket-protocol",
                "chat, eyJh.eyJz.b3RoZXI, bearer.eyJh.eyJz.b3RoZXI",
            ),
        ] {
            req.append_header(name, value).expect("header");
        }
        let original = req.clone();
        rewrite(&mut req, &decision).expect("rewrite");
        // Two `Authorization` fields go whole: a server joining them would read one.
        assert!(all(&req, http::header::AUTHORIZATION).is_empty());
        assert_eq!(
            all(&req, http::header::COOKIE),
            ["theme=dark; csrf=1", "lang=en", "lang=fr"]
        );
        assert!(all(&req, HeaderName::from_static("x-access-token")).is_empty());
        assert!(all(&req, HeaderName::from_static("x_access_token")).is_empty());
        assert_eq!(
            all(&req, HeaderName::from_static("x-access-tokens")),
            ["kept"]
        );
        assert_eq!(all(&req, http::header::SEC_WEBSOCKET_PROTOCOL), ["chat"]);

        // A verified identity keeps its credential as sent.
        decision.identity = Some(crate::test_support::identity("acme", None, None));
        let mut req = original;
        rewrite(&mut req, &decision).expect("rewrite");
        assert_eq!(all(&req, http::header::AUTHORIZATION).len(), 2);
        assert_eq!(all(&req, http::header::COOKIE).len(), 4);
        assert_eq!(
            all(&req, HeaderName::from_static("x-access-token")).len(),
            1
        );
        assert_eq!(
            all(&req, http::header::SEC_WEBSOCKET_PROTOCOL),
            ["chat, eyJh.eyJz.b3RoZXI, bearer.eyJh.eyJz.b3RoZXI"]
        );
    }

    #[test]
    fn identity_headers_come_from_the_verified_token() {
        let rewritten = |org: Option<&str>, sub: Option<&str>| {
            let mut decision = decision_for("/api/x", "http://127.0.0.1:1").expect("decision");
            decision.identity = Some(crate::test_support::identity("acme", org, sub));
            let mut req = RequestHeader::build("GET", b"/api/x", None).expect("request");
            req.insert_header("x-tenant-id", "globex").expect("header");
            req.insert_header("X-User-Id", "admin").expect("header");
            req.insert_header("X-Tenant-Status", "suspended")
                .expect("header");
            rewrite(&mut req, &decision).map(|()| {
                let one = |name: &HeaderName| {
                    let all: Vec<_> = req.headers.get_all(name).iter().collect();
                    assert!(all.len() <= 1, "{name} sent {} times", all.len());
                    all.first().map(|v| v.to_str().expect("ascii").to_owned())
                };
                assert_eq!(one(&X_TENANT_STATUS).as_deref(), Some("active"));
                (one(&X_TENANT_ID), one(&X_ORG_ID), one(&X_USER_ID))
            })
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            rewritten(Some("org-1"), Some("u1")).ok(),
            Some((some("acme"), some("org-1"), some("u1")))
        );
        assert_eq!(rewritten(None, None).ok(), Some((some("acme"), None, None)));
        // A `sub` that is no header value is left out; an org that is none fails the request.
        assert_eq!(
            rewritten(Some("org-1"), Some("u\n1")).ok(),
            Some((some("acme"), some("org-1"), None))
        );
        assert!(rewritten(Some("org\r\n"), Some("u1")).is_err());

        // A decision holding another tenant's token, or a token of another org than the
        // binding's, is not forwarded at all.
        let mut decision = decision_for("/api/x", "http://127.0.0.1:1").expect("decision");
        decision.identity = Some(crate::test_support::identity("globex", None, Some("u1")));
        let mut req = RequestHeader::build("GET", b"/api/x", None).expect("request");
        assert!(rewrite(&mut req, &decision).is_err());
        let binding = crate::test_support::binding("http://127.0.0.1:1", Some("org-1"));
        decision.binding = std::sync::Arc::new(binding);
        for org in [None, Some("org-2")] {
            decision.identity = Some(crate::test_support::identity("acme", org, Some("u1")));
            assert!(rewrite(&mut req, &decision).is_err(), "{org:?}");
        }
        decision.identity = Some(crate::test_support::identity("acme", Some("org-1"), None));
        assert!(rewrite(&mut req, &decision).is_ok());
    }

    proptest::proptest! {
        /// Whether the client's target is kept or rebuilt, the instance gets exactly the
        /// normalised path (behind the upstream's prefix) and the query the policy saw.
        #[test]
        fn the_instance_gets_the_decided_target(
            target in "/[a-zA-Z0-9./%~_;?=&:@!$'()*+,\\-]{0,40}",
            prefixed in proptest::bool::ANY,
        ) {
            let url = if prefixed { "http://127.0.0.1:1/base" } else { "http://127.0.0.1:1" };
            let decision = decision_for(&target, url);
            let req = RequestHeader::build("GET", target.as_bytes(), None);
            if let (Some(decision), Ok(mut req)) = (decision, req) {
                let want = upstream_target(&decision);
                if rewrite(&mut req, &decision).is_ok() {
                    proptest::prop_assert_eq!(req.raw_path(), want.as_bytes());
                }
            }
        }

        #[test]
        fn every_address_is_written_as_the_formatter_writes_it(v4: u32, v6: u128) {
            for ip in [IpAddr::from(v4.to_be_bytes()), IpAddr::from(v6.to_be_bytes())] {
                proptest::prop_assert_eq!(written(ip), ip.to_string());
            }
        }
    }

    #[test]
    fn request_id_sanity() {
        let cases: &[(&[&[u8]], Option<&str>)] = &[
            (&[b"abc-123"], Some("abc-123")),
            (&[b"a:b.c_d"], Some("a:b.c_d")),
            (&[], None),
            (&[b""], None),
            (&[b"has space"], None),
            (&[b"new\nline"], None),
            (&[b"a", b"b"], None),
            (&[&[b'x'; 129]], None),
        ];
        for (input, want) in cases {
            assert_eq!(
                sane_request_id(input.iter().copied()),
                want.map(str::as_bytes),
                "{input:?}"
            );
        }
    }
}
