//! The embedded default: what `nexus-edge serve` runs with when no config file is given.
//!
//! It works on a fresh machine with nothing else installed: loopback listeners, the demo key
//! set compiled into the binary and the demo bindings. It starts no instance: the demo
//! bindings point at loopback ports where nothing listens, so a request that passes every
//! check gets 502 (`nexus-edge demo` starts instances of its own). A config file never falls
//! back to the demo keys or bindings: there `auth.jwks_file` (or `auth.jwks_url`) and `store.path` are required.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::settings::*;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The no-config default.
pub fn embedded_default() -> Settings {
    Settings {
        server: ServerSettings {
            listen: SocketAddr::new(LOOPBACK, 8080),
            admin_listen: Some(SocketAddr::new(LOOPBACK, 9090)),
            threads: 2,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            client_write_timeout: Duration::from_secs(30),
            request_header_timeout: Duration::from_secs(10),
            max_request_header_bytes: 64 * 1024,
            max_connections: 10_000,
            trusted_proxies: Vec::new(),
            upgrade_socket: None,
        },
        tenancy: TenancySettings {
            base_domains: vec!["nexus.localhost".to_owned()],
            public_paths: vec!["/login".to_owned(), "/assets/".to_owned()],
            recovery_paths: vec!["/billing".to_owned(), "/admin/recovery".to_owned()],
            api_prefix: "/api/".to_owned(),
            provisioning_retry_after: Duration::from_secs(30),
            past_due_header: "x-nexus-billing-notice".to_owned(),
            trusted_origins: Vec::new(),
            frame_ancestors: FrameAncestors::Any,
            refused_paths: ModePaths::default(),
        },
        auth: AuthSettings {
            jwks: JwksSource::EmbeddedDemo,
            hmac_keys: Vec::new(),
            issuers: vec!["https://id.nexus.localhost".to_owned()],
            issuer_keys: None,
            audiences: vec!["nexus".to_owned()],
            leeway: Duration::from_secs(30),
            max_token_lifetime: None,
            tenant_claim: "tenant_id".to_owned(),
            org_claim: "org_id".to_owned(),
            session_cookie: Some("nexus_session".to_owned()),
            token_headers: Vec::new(),
            token_cookies: Vec::new(),
            token_query_parameters: Vec::new(),
            token_cache_capacity: 100_000,
            max_token_bytes: 8192,
            jwks_poll_interval: Duration::from_secs(1),
        },
        upstream: UpstreamSettings {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(3600),
            ca_file: None,
            dns_ttl: Duration::from_secs(10),
            dns_serve_stale: Duration::from_secs(30),
            idle_connections: 4096,
            idle_connection_timeout: Duration::from_secs(60),
            chunked_request_bodies: ChunkedRequestBodies::Length,
            extension_methods_with_bodies: Vec::new(),
            extension_methods_kept_alive: Vec::new(),
        },
        store: StoreSettings::File(FileStoreSettings {
            path: None,
            poll_interval: Duration::from_secs(1),
        }),
        log: LogSettings {
            filter: "info".to_owned(),
            format: LogFormat::Text,
            request_lines_per_second: 100,
        },
        cors: CorsSettings {
            origins: None,
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(str::to_owned)
                .to_vec(),
            allowed_headers: vec!["authorization".to_owned(), "content-type".to_owned()],
            expose_headers: Vec::new(),
            max_age: Duration::from_secs(600),
        },
        tls: None,
        metrics: MetricsSettings {
            interval: Duration::from_secs(60),
            latency_slo: Duration::from_millis(200),
            slo_intervals: 3,
            min_requests: 20,
            queue_delay_factor: 2.0,
            queue_delay_floor: Duration::from_millis(1),
            baseline_window: Duration::from_secs(3600),
            max_instances: 1000,
        },
        revocation: RevocationSettings {
            source: RevocationSource::None,
            max_staleness: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        },
        admin_api: None,
    }
}
