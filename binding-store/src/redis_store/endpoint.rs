//! Where the Redis primary is: a fixed URL, or whatever the Sentinels currently name as
//! primary. TLS settings apply to every connection either way.
//!
//! With Sentinel the primary's address is asked for on every (re)connect, and the node is
//! checked to still be a primary (`ROLE`), so after a failover the sync loop's ordinary
//! reconnect lands on the new primary without further machinery.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};
use tokio::sync::Mutex;

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
    Sentinel(Mutex<SentinelClient>),
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
                let client = if is_tls {
                    redis::Client::build_with_tls(info, tls.certificates())
                } else {
                    redis::Client::open(info)
                }
                .map_err(|e| format!("redis url {}: {e}", redact(url)))?;
                Ok(Connector::Direct(client))
            }
            RedisEndpoint::Sentinel(s) => {
                Ok(Connector::Sentinel(Mutex::new(sentinel_client(s, tls)?)))
            }
        }
    }

    /// A client for the current primary (with Sentinel: asked for now, checked by `ROLE`).
    pub(crate) async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Connector::Direct(c) => Ok(c.clone()),
            Connector::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

fn sentinel_client(s: &SentinelOptions, tls: &RedisTls) -> Result<SentinelClient, String> {
    if s.nodes.is_empty() {
        return Err("sentinel: at least one node is required".to_owned());
    }
    let mut addrs = Vec::with_capacity(s.nodes.len());
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
        // The builder takes one set of credentials and one TLS mode for all Sentinels.
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
        addrs.push(info.addr.clone());
        sentinel_auth.get_or_insert(info);
    }
    let mut b =
        SentinelClientBuilder::new(addrs, s.master_name.clone(), SentinelServerType::Master)
            .map_err(|e| format!("sentinel: {e}"))?
            .set_client_to_redis_db(s.db);
    if let Some(u) = &s.username {
        b = b.set_client_to_redis_username(u.clone());
    }
    if let Some(p) = &s.password {
        b = b.set_client_to_redis_password(p.clone());
    }
    if s.master_tls {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
        if !tls.is_default() {
            b = b.set_client_to_redis_certificates(tls.certificates());
        }
    }
    if let Some(info) = sentinel_auth {
        if let Some(u) = info.redis.username {
            b = b.set_client_to_sentinel_username(u);
        }
        if let Some(p) = info.redis.password {
            b = b.set_client_to_sentinel_password(p);
        }
    }
    if sentinel_tls == Some(true) {
        b = b.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if !tls.is_default() {
            b = b.set_client_to_sentinel_certificates(tls.certificates());
        }
    }
    b.build().map_err(|e| format!("sentinel: {e}"))
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
