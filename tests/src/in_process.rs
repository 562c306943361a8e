//! nexus-edge's Pingora service run inside the test, for what needs a name the system
//! resolver here does not know (several addresses for one name, a name with `_`): the service
//! is given its own [`NameLookup`]. Everything else is real: Pingora's HTTP proxy, TCP
//! connects, TLS handshakes against `[upstream] ca_file`, the bindings file loaded as the
//! binary loads it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use nexus_edge::resolve::{InstanceResolver, NameLookup, ResolverPolicy};
use nexus_edge::service::EdgeService;
use pingora::apps::ServerApp;
use pingora::server::configuration::ServerConf;
use tokio::sync::watch;

use crate::edge::{binding, bindings_file, write_atomically, BASE};
use crate::keys::TestKeys;
use crate::loopback::LoopbackServer;

/// The service behind Pingora's HTTP proxy on a loopback port; stopped on drop. It serves
/// one tenant, `acme`, whose public path `/login` needs no token.
pub struct InProcessEdge {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (metrics among it).
    pub state: Arc<nexus_edge::state::EdgeState>,
    _server: LoopbackServer,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl InProcessEdge {
    /// Serves `acme` at `instance_url`, resolving names with `lookup`, trusting `ca` (a PEM
    /// file) for https instances when given.
    pub fn start(
        instance_url: &str,
        ca: Option<&Path>,
        lookup: Arc<dyn NameLookup>,
    ) -> InProcessEdge {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = TestKeys::new();
        std::fs::write(dir.path().join("jwks.json"), keys.jwks().to_string()).expect("jwks");
        // A second tenant that is always valid: a start on records that are all refused is
        // refused, and tests give `acme` instance URLs the router refuses.
        let records = vec![
            binding("acme", instance_url, "active", None),
            binding("spare", "http://127.0.0.1:9", "active", None),
        ];
        write_atomically(
            &dir.path().join("bindings.json"),
            &bindings_file(records).to_string(),
        );
        let ca_file = ca.map_or_else(String::new, |p| format!("ca_file = {:?}", p.display()));
        let config = format!(
            r#"[tenancy]
base_domains = ["{BASE}"]
public_paths = ["/login"]

[auth]
jwks_file = "jwks.json"
issuers = ["https://id.edge.test"]
audiences = ["nexus"]

[upstream]
connect_timeout = "1s"
{ca_file}

[store]
kind = "file"
path = "bindings.json"
"#
        );
        let settings =
            nexus_config::parse_str(&config, &dir.path().join("nexus-edge.toml")).expect("config");
        let policy = ResolverPolicy {
            ttl: settings.upstream.dns_ttl,
            serve_stale: settings.upstream.dns_serve_stale,
            timeout: settings.upstream.connect_timeout,
        };
        // Pingora's connector takes the CA bundle from the server configuration, as the
        // binary gives it.
        let conf = ServerConf {
            ca_file: ca.map(|p| p.display().to_string()),
            ..ServerConf::default()
        };
        let store = nexus_edge::store::Store::open(&settings.store).expect("store");
        let mut state = nexus_edge::server::prepare(settings, &store.source()).expect("state");
        Arc::get_mut(&mut state).expect("sole owner").resolver =
            InstanceResolver::with_lookup(policy, lookup);
        let proxy = Arc::new(pingora::proxy::http_proxy(
            &Arc::new(conf),
            EdgeService::new(Arc::clone(&state)),
        ));

        // Never sent: Pingora's connection loops only read it.
        let (shutdown_tx, shutdown) = watch::channel(false);
        let server = LoopbackServer::start(move |tcp| {
            let (proxy, shutdown) = (Arc::clone(&proxy), shutdown.clone());
            async move {
                let stream = pingora::protocols::l4::stream::Stream::from(tcp);
                proxy.process_new(Box::new(stream), &shutdown).await;
            }
        });
        InProcessEdge {
            addr: server.addr,
            state,
            _server: server,
            _shutdown: shutdown_tx,
            _dir: dir,
        }
    }
}
