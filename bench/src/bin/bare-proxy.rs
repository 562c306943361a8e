//! The baseline of the load harness: a bare Pingora proxy with no auth and one fixed upstream.
//!
//! `bare-proxy LISTEN UPSTREAM THREADS [timeouts]` — what Pingora itself costs per request,
//! so the harness can report Nexus Edge's full path as a fraction of it. With `timeouts` it
//! bounds connections at `nexus-edge`'s default values (idle clients; instance connect, read
//! and write) with Pingora's own timers, which cost timer registrations and clock reads on
//! every request: the harness shows how much of the gap to bare Pingora that is. (`nexus-edge`
//! bounds idle clients in its client stream instead, without a timer per request.)

use std::net::SocketAddr;

/// The same allocator as `nexus-edge`, so the harness's ratio measures the request path, not
/// the allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

struct Bare {
    upstream: SocketAddr,
    /// `nexus-edge`'s defaults, when the proxy bounds connections as it does.
    timeouts: Option<(nexus_config::ServerSettings, nexus_config::UpstreamSettings)>,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        if let Some((server, _)) = &self.timeouts {
            // This proxy's streams are not nexus-edge's, so the bound stays with Pingora's own
            // per-wait timer.
            nexus_edge::connections::bound_idle_client(session, server.keepalive_timeout);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        if let Some((_, up)) = &self.timeouts {
            nexus_edge::service::bound_instance_io(&mut peer.options, up);
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    // As `nexus-edge` starts: transparent huge pages off unless MIMALLOC_ALLOW_THP says.
    nexus_edge::huge_pages::keep_off();
    let args: Vec<String> = std::env::args().collect();
    let (Some(listen), Some(upstream), Some(threads)) = (args.get(1), args.get(2), args.get(3))
    else {
        eprintln!("usage: bare-proxy LISTEN UPSTREAM THREADS [timeouts]");
        std::process::exit(2);
    };
    let timeouts = match args.get(4).map(String::as_str) {
        None => None,
        Some("timeouts") => {
            let d = nexus_config::embedded_default();
            Some((d.server, d.upstream))
        }
        Some(other) => {
            eprintln!("bare-proxy: unknown option {other:?} (expected \"timeouts\")");
            std::process::exit(2);
        }
    };
    let (Ok(upstream), Ok(threads)) = (upstream.parse::<SocketAddr>(), threads.parse::<usize>())
    else {
        eprintln!("bare-proxy: UPSTREAM must be ip:port and THREADS a number");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc =
        pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream, timeouts });
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
