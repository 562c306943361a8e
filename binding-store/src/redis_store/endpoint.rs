//! Where the Redis primary is: a fixed URL, or whatever the Sentinels currently name as
//! primary. TLS settings apply to every connection either way.
//!
//! With Sentinel the primary's address is asked for on every (re)connect, and the node is
//! checked to still be a primary (`ROLE`), each step bounded (see [`SentinelLookup`]), so
//! after a failover the sync loop's ordinary reconnect lands on the new primary; a replica
//! also asks at each heartbeat, and leaves a node the Sentinels no longer name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsCertificates,
};

/// How to find the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://` URL of the primary.
    Url(String),
    /// The primary named `master_name` by any of the Sentinels.
    Sentinel(SentinelOptions),
}

/// Sentinel discovery.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelOptions {
    /// The name the Sentinels monitor the primary under.
    pub master_name: String,
    /// Sentinel URLs (`redis://host:26379`, `rediss://` for TLS, credentials in the URL).
    pub nodes: Vec<String>,
    /// Connect to the primary over TLS.
    pub master_tls: bool,
    /// ACL user on the primary.
    pub username: Option<String>,
    /// Password on the primary.
    pub password: Option<String>,
    /// Database number on the primary.
    pub db: i64,
}

impl std::fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelOptions")
            .field("master_name", &self.master_name)
            .field(
                "nodes",
                &self.nodes.iter().map(|n| redact(n)).collect::<Vec<_>>(),
            )
            .field("master_tls", &self.master_tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

/// Certificates for `rediss://` connections (PEM bytes).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// Trust only these CAs (`None`: the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key, for servers that require mutual TLS.
    pub client_cert_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish()
    }
}

impl RedisTls {
    fn is_default(&self) -> bool {
        self.ca_pem.is_none() && self.client_cert_pem.is_none()
    }

    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client_cert_pem
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

impl RedisEndpoint {
    /// A description for logs and errors, without passwords.
    pub fn describe(&self) -> String {
        match self {
            RedisEndpoint::Url(u) => redact(u),
            RedisEndpoint::Sentinel(s) => format!(
                "sentinel primary {:?} via {}",
                s.master_name,
                s.nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The URL for logs and messages: any password replaced, and of the rest only what redis-rs
/// reads (a TCP URL's database number, the query parameters it knows). What else a URL holds
/// is most likely the tail of a password with an unencoded `/` or `?`, which the config
/// refuses; this is the second line of defence.
pub(crate) fn redact(url: &str) -> String {
    const KNOWN: [&str; 3] = ["db", "user", "protocol"];
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("<redacted>"));
            }
            u.set_fragment(None);
            let mut notes = String::new();
            let tcp = matches!(u.scheme(), "redis" | "rediss");
            if tcp
                && !u
                    .path()
                    .trim_matches('/')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                u.set_path("/");
                notes.push_str(" (a path that is no database number, not shown)");
            }
            let mut left_out = false;
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .filter_map(|(k, v)| match k.as_ref() {
                    "pass" | "password" => Some((k.into_owned(), "<redacted>".to_owned())),
                    known if KNOWN.contains(&known) => Some((k.into_owned(), v.into_owned())),
                    _ => {
                        left_out = true;
                        None
                    }
                })
                .collect();
            u.set_query(None);
            if !pairs.is_empty() {
                u.query_pairs_mut().extend_pairs(pairs);
            }
            if left_out {
                notes.push_str(" (query parameters redis-rs does not read, not shown)");
            }
            format!("{u}{notes}")
        }
        Err(_) => "<unparsable redis url>".to_owned(),
    }
}

/// Hands out clients for the current primary.
pub(crate) enum Connector {
    Direct(redis::Client),
    Sentinel(SentinelLookup),
}

impl Connector {
    /// Validates the endpoint and TLS settings; does not connect.
    pub(crate) fn new(endpoint: &RedisEndpoint, tls: &RedisTls) -> Result<Connector, String> {
        match endpoint {
            RedisEndpoint::Url(url) => {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| format!("redis url {}: {e}", redact(url)))?;
                let is_tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
                if !is_tls && !tls.is_default() {
                    return Err(format!(
                        "TLS certificates are configured but {} is not a rediss:// URL",
                        redact(url)
                    ));
                }
                let client =
                    client_for(info, tls).map_err(|e| format!("redis url {}: {e}", redact(url)))?;
                Ok(Connector::Direct(client))
            }
            RedisEndpoint::Sentinel(s) => Ok(Connector::Sentinel(SentinelLookup::new(s, tls)?)),
        }
    }

    /// A client for the current primary, with its address when the Sentinels named it (with
    /// Sentinel: asked for now, and checked by `ROLE`, each step bounded by `timeout`).
    pub(crate) async fn client(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<(redis::Client, Option<(String, u16)>)> {
        match self {
            Connector::Direct(c) => Ok((c.clone(), None)),
            Connector::Sentinel(s) => {
                let (client, addr) = s.primary(timeout).await?;
                Ok((client, Some(addr)))
            }
        }
    }

    /// The address one Sentinel names as primary now (`None` with a fixed URL): the one that
    /// answered last; should it fail, the next is asked next time. One Sentinel, not each in
    /// turn: the sync loop asks at every heartbeat, and Sentinels that are all down must not
    /// hold it up by a timeout each.
    pub(crate) async fn named_primary(
        &self,
        timeout: Duration,
    ) -> Option<redis::RedisResult<(String, u16)>> {
        match self {
            Connector::Direct(_) => None,
            Connector::Sentinel(s) => Some(s.named_by_one(timeout).await.and_then(|n| match n {
                Named::At(host, port) => Ok((host, port)),
                Named::Unknown => Err(redis::RedisError::from((
                    redis::ErrorKind::MasterNameNotFoundBySentinel,
                    "the Sentinel monitors no primary of that name",
                ))),
            })),
        }
    }
}

/// A client for `info`, with the configured certificates when it is a TLS address.
fn client_for(info: ConnectionInfo, tls: &RedisTls) -> redis::RedisResult<redis::Client> {
    if matches!(info.addr, ConnectionAddr::TcpTls { .. }) {
        redis::Client::build_with_tls(info, tls.certificates())
    } else {
        redis::Client::open(info)
    }
}

/// The Sentinels, asked in turn for the primary's address, then that node asked whether it is
/// the primary (`ROLE`). Every step is bounded by the store's command timeout: redis-rs's own
/// Sentinel client waited on a Sentinel or a node that had stopped answering (a frozen
/// process, a host that drops packets) for as long as it stayed so, and every replica's sync,
/// every admin command and every start-up behind it waited too. A Sentinel that does not
/// answer, or names a node that is not the primary, costs one step and the next is asked;
/// the one that answered is asked first the next time.
pub(crate) struct SentinelLookup {
    master_name: String,
    /// Each Sentinel, described without its password, a client for it, and the connection
    /// kept to it (replicas ask at every heartbeat: one connection each, not one a time).
    nodes: Vec<SentinelNode>,
    /// The Sentinel that answered last.
    first: AtomicUsize,
    /// How to reach the primary: TLS or not, and its credentials and database.
    master_tls: bool,
    master_redis: RedisConnectionInfo,
    tls: RedisTls,
}

struct SentinelNode {
    described: String,
    client: redis::Client,
    kept: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

/// What one Sentinel said of the primary.
enum Named {
    At(String, u16),
    /// It monitors no primary of that name: a misspelt `master_name` (a monitored name is
    /// never unnamed, failover or not).
    Unknown,
}

impl SentinelLookup {
    fn new(s: &SentinelOptions, tls: &RedisTls) -> Result<Self, String> {
        check_sentinel_nodes(s)?;
        let nodes = s
            .nodes
            .iter()
            .map(|node| {
                let mut info = node
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| format!("sentinel node {}: {e}", redact(node)))?;
                // A Sentinel has no databases (it refuses SELECT) and speaks RESP2 to us:
                // what a URL says of either is for data nodes.
                info.redis.db = 0;
                info.redis.protocol = redis::ProtocolVersion::default();
                let client = client_for(info, tls)
                    .map_err(|e| format!("sentinel node {}: {e}", redact(node)))?;
                Ok(SentinelNode {
                    described: redact(node),
                    client,
                    kept: std::sync::Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            master_name: s.master_name.clone(),
            // Processes start at different Sentinels, so a fleet's questions are spread.
            first: AtomicUsize::new(std::process::id() as usize % nodes.len().max(1)),
            nodes,
            master_tls: s.master_tls,
            master_redis: RedisConnectionInfo {
                db: s.db,
                username: s.username.clone(),
                password: s.password.clone(),
                ..RedisConnectionInfo::default()
            },
            tls: tls.clone(),
        })
    }

    /// The address the Sentinels name as primary now: the first that answers, each asked
    /// for `timeout` at most.
    pub(crate) async fn named(&self, timeout: Duration) -> redis::RedisResult<(String, u16)> {
        let mut last = None;
        let mut unknown = 0;
        for _ in 0..self.nodes.len() {
            match self.named_by_one(timeout).await {
                Ok(Named::At(host, port)) => return Ok((host, port)),
                Ok(Named::Unknown) => unknown += 1,
                Err(e) => last = Some(e),
            }
        }
        if unknown == self.nodes.len() {
            // Configuration, not a failover: said at once.
            return Err(redis::RedisError::from((
                redis::ErrorKind::ClientError,
                "no Sentinel monitors a primary of that name (check master_name)",
                format!("{:?}", self.master_name),
            )));
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::MasterNameNotFoundBySentinel,
                "the Sentinels monitor no primary of that name",
                format!("{:?}", self.master_name),
            ))
        }))
    }

    /// What the Sentinel that answered last names as primary, asked for `timeout` at most;
    /// when it fails, the next Sentinel is the one asked next.
    async fn named_by_one(&self, timeout: Duration) -> redis::RedisResult<Named> {
        let i = self.first.load(Ordering::Relaxed) % self.nodes.len().max(1);
        let Some(node) = self.nodes.get(i) else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::ClientError,
                "no Sentinel configured",
            )));
        };
        let kept = super::lock(&node.kept).clone();
        let asked = async {
            let mut con = match kept {
                Some(con) => con,
                None => {
                    node.client
                        .get_multiplexed_async_connection_with_config(&bounded(timeout))
                        .await?
                }
            };
            let named = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master_name)
                .query_async::<Option<(String, u16)>>(&mut con)
                .await?;
            Ok::<_, redis::RedisError>((con, named))
        };
        let answer = tokio::time::timeout(timeout, asked)
            .await
            .unwrap_or_else(|_| Err(timed_out("the Sentinel", &node.described)));
        let mut keep = super::lock(&node.kept);
        match answer {
            Ok((con, named)) => {
                *keep = Some(con);
                Ok(match named {
                    Some((host, port)) => Named::At(host, port),
                    None => {
                        self.pass_over(i);
                        Named::Unknown
                    }
                })
            }
            Err(e) => {
                // A connection that failed once is not asked again.
                *keep = None;
                self.pass_over(i);
                Err(whose(e, "Sentinel", &node.described))
            }
        }
    }

    /// The next Sentinel is asked first from now on, unless another caller moved on already.
    fn pass_over(&self, i: usize) {
        let _ = self.first.compare_exchange(
            i,
            (i + 1) % self.nodes.len().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A client for the node the Sentinels name as primary, once it answers `ROLE` as one,
    /// and its address. A node that does not (mid-failover it may not yet, or no longer; a
    /// Sentinel cut off from the others may name an old one) sends the question to the next
    /// Sentinel.
    async fn primary(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<(redis::Client, (String, u16))> {
        let mut last = None;
        for _ in 0..self.nodes.len() {
            let (host, port) = self.named(timeout).await?;
            match self.checked_primary(&host, port, timeout).await {
                Ok(client) => return Ok((client, (host, port))),
                Err(e) => {
                    // The Sentinel that named it (the one `named` left first) is passed over.
                    self.pass_over(self.first.load(Ordering::Relaxed) % self.nodes.len().max(1));
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::ClientError, "no Sentinel configured"))
        }))
    }

    /// A client for `host:port` once it answers `ROLE` as the primary.
    async fn checked_primary(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> redis::RedisResult<redis::Client> {
        let node = format!("{host}:{port}");
        let addr = if self.master_tls {
            ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let client = client_for(
            ConnectionInfo {
                addr,
                redis: self.master_redis.clone(),
            },
            &self.tls,
        )?;
        let role = async {
            let mut con = client
                .get_multiplexed_async_connection_with_config(&bounded(timeout))
                .await?;
            redis::cmd("ROLE")
                .query_async::<redis::Value>(&mut con)
                .await
        };
        let role = tokio::time::timeout(timeout, role)
            .await
            .unwrap_or_else(|_| Err(timed_out("the node the Sentinels name as primary", &node)))
            .map_err(|e| whose(e, "primary", &node))?;
        let is_primary = matches!(&role, redis::Value::Array(items)
            if matches!(items.first(), Some(redis::Value::BulkString(r)) if r == b"master"));
        if !is_primary {
            return Err(redis::RedisError::from((
                redis::ErrorKind::MasterNameNotFoundBySentinel,
                "the node the Sentinels name as primary does not answer as one (yet)",
                node,
            )));
        }
        Ok(client)
    }
}

#[cfg(test)]
pub(crate) fn timed_out_for_tests(what: &str, node: &str) -> redis::RedisError {
    timed_out(what, node)
}

/// A step that did not answer in time, as an I/O timeout (so it counts as one, e.g. for
/// whether a failover explains it), naming what did not answer.
fn timed_out(what: &str, node: &str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} ({node}) did not answer in time"),
    ))
}

/// `e`, naming the node it came from when it is a refused password: a Sentinel's and the
/// primary's are configured apart, and "authentication failed" alone does not say which is
/// wrong. Other errors are kept as they are (their kind and cause decide whether a failover
/// explains them).
fn whose(e: redis::RedisError, role: &str, node: &str) -> redis::RedisError {
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "authentication failed",
            format!("{role} {node}: {e}"),
        ))
    } else {
        e
    }
}

/// A connection whose connect and every command are bounded by `timeout`.
fn bounded(timeout: Duration) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
}

/// Refuses Sentinel settings no lookup could use: no node, a node on a unix socket, or nodes
/// that mix TLS and plain TCP or credentials (one deployment's Sentinels share both).
fn check_sentinel_nodes(s: &SentinelOptions) -> Result<(), String> {
    if s.nodes.is_empty() {
        return Err("sentinel: at least one node is required".to_owned());
    }
    let mut sentinel_auth: Option<ConnectionInfo> = None;
    let mut sentinel_tls = None;
    for node in &s.nodes {
        let info = node
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("sentinel node {}: {e}", redact(node)))?;
        let node_tls = match &info.addr {
            ConnectionAddr::Tcp(..) => false,
            ConnectionAddr::TcpTls { .. } => true,
            ConnectionAddr::Unix(_) => {
                return Err(format!(
                    "sentinel node {}: Sentinels are reached over TCP",
                    redact(node)
                ))
            }
        };
        if sentinel_tls
            .replace(node_tls)
            .is_some_and(|t| t != node_tls)
        {
            return Err("sentinel nodes: mix of redis:// and rediss:// URLs".to_owned());
        }
        if let Some(first) = &sentinel_auth {
            if first.redis.username != info.redis.username
                || first.redis.password != info.redis.password
            {
                return Err("sentinel nodes: every node must use the same credentials".to_owned());
            }
        }
        sentinel_auth.get_or_insert(info);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_descriptions() {
        let e = RedisEndpoint::Url("rediss://edge:s3cret@redis.internal:6380/2".to_owned());
        let d = e.describe();
        assert!(!d.contains("s3cret"), "{d}");
        assert!(d.contains("redis.internal:6380"), "{d}");
        let e = RedisEndpoint::Url("redis+unix:///run/redis.sock?user=edge&pass=s3cret".into());
        assert!(!e.describe().contains("s3cret"));
        let s = SentinelOptions {
            master_name: "nexus".into(),
            nodes: vec!["redis://:sentinel-pw@10.0.0.1:26379".into()],
            master_tls: true,
            username: Some("edge".into()),
            password: Some("primary-pw".into()),
            db: 0,
        };
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("sentinel-pw") && !dbg.contains("primary-pw"),
            "{dbg}"
        );
        let d = RedisEndpoint::Sentinel(s).describe();
        assert!(!d.contains("sentinel-pw"), "{d}");
        // Pieces of a password with an unencoded `/` or `?` end up in the path or the query
        // (the config refuses such URLs; this is for any that get past it).
        for (url, shown) in [
            (
                "redis://edge:1234?QmarkSECRET@127.0.0.1:56193/0",
                "redis://edge:1234 (query parameters redis-rs does not read, not shown)",
            ),
            (
                "redis://edge:9/Zk3+SlashSECRET=@127.0.0.1:56193/0",
                "redis://edge:9/ (a path that is no database number, not shown)",
            ),
            (
                "redis://edge:26379/SentSECRET@127.0.0.1:53285",
                "redis://edge:26379/ (a path that is no database number, not shown)",
            ),
            (
                "redis+unix:///run/r.sock?db=2&pass=SECRET&x=SECRET#SECRET",
                "redis+unix:///run/r.sock?db=2&pass=%3Credacted%3E \
                 (query parameters redis-rs does not read, not shown)",
            ),
            (
                "rediss://u:SECRET@h:6380/3?protocol=resp3",
                "rediss://u:%3Credacted%3E@h:6380/3?protocol=resp3",
            ),
        ] {
            assert_eq!(redact(url), shown);
        }
    }

    #[test]
    fn a_refused_password_names_whose_it_is() {
        let refused = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        let said = whose(refused, "Sentinel", "redis://127.0.0.1:26379").to_string();
        assert!(said.contains("Sentinel redis://127.0.0.1:26379"), "{said}");
        // Others are left as they are: their kind decides whether a failover explains them.
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(whose(refused, "primary", "x:1").is_connection_refusal());
    }

    #[test]
    fn endpoints_are_checked_before_any_connection() {
        let tls = RedisTls::default();
        assert!(Connector::new(&RedisEndpoint::Url("rediss://127.0.0.1:1".into()), &tls).is_ok());
        assert!(Connector::new(&RedisEndpoint::Url("http://x".into()), &tls).is_err());
        let with_ca = RedisTls {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            client_cert_pem: None,
        };
        let err = Connector::new(&RedisEndpoint::Url("redis://127.0.0.1:1".into()), &with_ca)
            .err()
            .unwrap_or_default();
        assert!(err.contains("not a rediss://"), "{err}");
        let sentinel = |nodes: &[&str]| SentinelOptions {
            master_name: "nexus".into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            master_tls: false,
            username: None,
            password: None,
            db: 0,
        };
        let ok = sentinel(&["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]);
        assert!(Connector::new(&RedisEndpoint::Sentinel(ok), &tls).is_ok());
        for bad in [
            sentinel(&[]),
            sentinel(&["redis://127.0.0.1:26379", "rediss://127.0.0.1:26380"]),
            sentinel(&["redis://:a@127.0.0.1:26379", "redis://:b@127.0.0.1:26380"]),
            sentinel(&["redis+unix:///tmp/s.sock"]),
        ] {
            assert!(
                Connector::new(&RedisEndpoint::Sentinel(bad.clone()), &tls).is_err(),
                "{bad:?}"
            );
        }
    }
}
