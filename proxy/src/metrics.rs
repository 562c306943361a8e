//! Prometheus metrics, in a registry owned by the running router (no global statics).
//!
//! Labels come only from closed enums ([`crate::errors::RejectReason::label`], the outcome
//! class): never tenant, host, path or error text, so the series count is fixed and known.
//! The one exception, the per-instance scale-trigger signals ([`ScaleMetrics`]), is labelled
//! by instance id and bounded by `[metrics] max_instances` (see [`crate::scale`]).

use std::sync::Arc;

use nexus_binding_store::{BindingHandle, SyncHealth};
use pingora_prometheus::prometheus::{
    self, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A count as a gauge's value: one past `i64` reads as `i64::MAX`.
pub fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Latency buckets (seconds) around the 200 ms API SLO.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 10.0,
];

/// The router's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by outcome: `forwarded`, `preflight`, a rejection label, or how a forwarded request failed
    /// after its response began (`upstream_unreachable`, `upstream_timeout`, `internal`) or
    /// its client went away (`client_closed`).
    pub requests: IntCounterVec,
    /// Whole-request latency by outcome class (`forwarded`, `rejected`, `failed`, `preflight`); a
    /// WebSocket's ends at its `101`, not with the tunnel.
    pub request_duration: HistogramVec,
    /// Time from the request's header being read to its routing decision (host, path, token,
    /// policy) per request.
    pub decision_duration: Histogram,
    /// Bindings in the live table.
    pub bindings: IntGauge,
    /// Revision of the binding table served: lower again when an older table is loaded.
    pub binding_revision: IntGauge,
    /// 1 when the binding store answered at the last attempt.
    pub store_up: IntGauge,
    /// Seconds since the table served was last known in sync with the binding store: its last
    /// successful sync, or for a replica serving its snapshot the snapshot's write, or, never
    /// in sync, start-up. Never negative, so an alert on it fires for a replica that has not
    /// synced.
    pub sync_age_seconds: IntGauge,
    /// `key_set_refused`: 1 while the JWKS file holds a key set that was refused, so the
    /// keys in use are older than the file (a rotation has stalled); logged once per content.
    pub key_set_refused: IntGauge,
    /// `verification_keys`: keys tokens are verified with now. 0 refuses every token (a key
    /// set emptied on purpose revokes them all: worth an alert either way).
    pub verification_keys: IntGauge,
    /// `jwks_age_seconds`: for a key set fetched from `[auth] jwks_url`, seconds since the
    /// provider last confirmed the keys in use (a fetch, or the cache file's time; start-up
    /// when never); 0 for a key file.
    pub jwks_age_seconds: IntGauge,
    /// `jwks_stale`: 1 while that age is past `[auth] jwks_max_staleness`, or no key set was
    /// ever fetched: a key the provider withdrew may still verify tokens.
    pub jwks_stale: IntGauge,
    /// `jwks_fetch_failures_total`: fetches of the key set that brought none (the provider
    /// unreachable or answering otherwise than 200, or a set refused); each said in the log.
    pub jwks_fetch_failures: prometheus::IntCounter,
    /// `revocations`: revocations held (those run out included, until their source drops
    /// them; see [`crate::revocation`]).
    pub revocations: IntGauge,
    /// `revocations_sync_age_seconds`: seconds since the revocations were last known to
    /// equal their source (since start-up when never); 0 without a source.
    pub revocations_sync_age_seconds: IntGauge,
    /// `revocations_stale`: 1 while that age is past `[revocation] max_staleness`: tokens
    /// revoked since may still be accepted (the router fails open on revocations).
    pub revocations_stale: IntGauge,
    /// `revocation_records_refused_total`: revocation records (Redis fields, feed entries)
    /// and revocations file versions refused so far; each also an error line.
    pub revocation_records_refused: prometheus::IntCounter,
    /// `revocation_snapshot_write_failures_total`: revocation snapshots not written (Redis
    /// store with a `snapshot_path`); each also a warning, and tried again a second later.
    pub revocation_snapshot_write_failures: prometheus::IntCounter,
    /// `token_cache_entries`: verified tokens cached now (see `[auth] token_cache_capacity`).
    pub token_cache_entries: IntGauge,
    /// `token_signature_checks_total`: signatures verified (tokens not served from the
    /// cache, whose claims passed); against the requests with a token, the cache's miss rate.
    pub token_signature_checks: prometheus::IntCounter,
    /// `panics_total`: panics since start (each also an `error` line; see [`crate::panics`]).
    pub panics: prometheus::IntCounter,
    /// `binding_records_rejected_total`: binding records refused so far.
    pub rejected_records: prometheus::IntCounter,
    /// `binding_full_reloads_total`: whole-table loads from Redis (start-up and reconciles);
    /// one that keeps rising is a replica that keeps losing the change feed.
    pub full_reloads: prometheus::IntCounter,
    /// `binding_sync_failures_total`: syncs that failed (with Redis; a bindings file
    /// unreadable at a poll, or a version of it refused; see the sync's log lines).
    pub sync_failures: prometheus::IntCounter,
    /// `binding_snapshot_write_failures_total`: local snapshots not written (Redis store).
    pub snapshot_write_failures: prometheus::IntCounter,
    /// `admin_api_requests_total{outcome}`: admin API requests by how they were answered
    /// (`ok`, `not_confirmed`, or a refusal's code; see [`crate::admin_api::reply`]).
    pub admin_api_requests: IntCounterVec,
    /// Held while the counters above catch up with the store's totals, so that two scrapes
    /// at once do not both add the same difference.
    mirror: Arc<std::sync::Mutex<()>>,
    /// `requests_total{outcome="forwarded"}`, resolved once: the label lookup (a lock and a
    /// hash) is not worth paying on every forwarded request.
    pub forwarded: prometheus::IntCounter,
    /// `request_duration_seconds{class="forwarded"}`, resolved once.
    pub forwarded_duration: Histogram,
    /// `request_duration_seconds{class="rejected"}`, resolved once.
    pub rejected_duration: Histogram,
    /// `request_duration_seconds{class="failed"}`: forwarded requests that did not complete.
    pub failed_duration: Histogram,
    /// `requests_total{outcome="preflight"}`: CORS preflights the router answered itself
    /// (see [`crate::cors`]).
    pub preflights: prometheus::IntCounter,
    /// `request_duration_seconds{class="preflight"}`, resolved once.
    pub preflight_duration: Histogram,
    /// Connects retried at another address of an instance's name: a dead or dying instance
    /// address shows here before any request fails.
    pub upstream_connect_retries: prometheus::IntCounter,
    /// `instance_connections_total{how="new"}`: requests sent to an instance whose last
    /// attempt opened a connection (counted when the request ends). Against `how="reused"`,
    /// whether `[upstream] idle_connections` keeps enough: connections are pooled per tenant
    /// (and per caller class within it), so a pool smaller than the tenants busy within
    /// `idle_connection_timeout` shows as a share of new ones that stays high.
    pub instance_connections_new: prometheus::IntCounter,
    /// `instance_connections_total{how="reused"}`: requests whose last attempt was sent on an
    /// idle pooled connection.
    pub instance_connections_reused: prometheus::IntCounter,
    /// `log_lines_not_logged_total`: lines about single requests left out of the log, past
    /// `[log] request_lines_per_second` (see [`crate::log_budget`]).
    pub log_lines_not_logged: prometheus::IntCounter,
    /// Client connections: how many are open, the cap, and what the cap and the header
    /// deadline turned away.
    pub connections: ConnectionMetrics,
    /// Tunnels (WebSockets after their `101`): open now, and how they ended.
    pub tunnels: TunnelMetrics,
    /// The HTTPS listener's certificates and handshakes (see [`crate::https`]).
    pub tls: TlsMetrics,
    /// The admin API's certificates and handshakes (`admin_api_tls_*`), as [`Self::tls`]'s.
    pub admin_api_tls: TlsMetrics,
    /// Each instance's latency and queue delay, judged per interval (see [`crate::scale`]).
    pub scale: ScaleMetrics,
}

/// The scale-trigger signals, per instance, as of the last interval's end (see
/// [`crate::scale`]): [`crate::scale::SERIES_PER_INSTANCE`] series per instance within
/// `[metrics] max_instances`.
#[derive(Clone)]
pub struct ScaleMetrics {
    /// `instance_requests_total`: requests sent to the instance that ended in an answer, a
    /// timeout, a failure to reach it, or their client giving up (counted at each
    /// interval's end).
    pub requests: IntCounterVec,
    /// `instance_failed_requests_total`: of those, the ones the instance failed: a 5xx, no
    /// answer in time, out of reach, or an answer invalid or broken off (the brief's 5xx SLO).
    pub failed_requests: IntCounterVec,
    /// `instance_interval_requests`: requests with a latency (answered, timed out, or given
    /// up by their client) the last interval judged.
    pub interval_requests: IntGaugeVec,
    /// `instance_latency_p95_seconds`: the last interval's 95th percentile latency (from the
    /// buckets; the trigger counts requests over the SLO exactly); NaN when it had fewer than
    /// `min_requests`.
    pub latency_p95: GaugeVec,
    /// `instance_queue_delay_seconds`: the last interval's queue-delay estimate (its 10th
    /// percentile latency); NaN when it had fewer than `min_requests`.
    pub queue_delay: GaugeVec,
    /// `instance_queue_delay_baseline_seconds`: what the queue delay is held against; NaN
    /// until the instance has one.
    pub queue_delay_baseline: GaugeVec,
    /// `instance_slo_breach_intervals`: judged intervals in a row with p95 above the SLO.
    pub slo_breaches: IntGaugeVec,
    /// `instance_scale_trigger{trigger="latency"|"queue_delay"}`: 1 while raised.
    pub triggers: IntGaugeVec,
    /// `instance_signals_tracked`: instances with series of their own now.
    pub tracked: IntGauge,
    /// `instance_signals_budget`: `[metrics] max_instances`.
    pub budget: IntGauge,
    /// `instance_signals_over_budget_requests_total`: requests counted in the shared set
    /// because their instance found the budget full.
    pub over_budget_requests: prometheus::IntCounter,
}

impl ScaleMetrics {
    fn new() -> prometheus::Result<Self> {
        let per_instance =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["instance_id"]);
        let per_instance_int = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "instance_requests_total",
                    "Requests sent to the instance that ended (answered, a 101 included, timed out, out of reach, or given up by their client once sent), counted at each interval's end",
                ),
                &["instance_id"],
            )?,
            failed_requests: IntCounterVec::new(
                Opts::new(
                    "instance_failed_requests_total",
                    "Requests the instance failed: answered 5xx, not in time, out of reach, or with an invalid or broken-off answer (counted at each interval's end)",
                ),
                &["instance_id"],
            )?,
            interval_requests: per_instance_int(
                "instance_interval_requests",
                "Requests to the instance with a latency (answered, timed out, or given up by their client) the last interval (metrics.interval) judged",
                &["instance_id"],
            )?,
            latency_p95: per_instance(
                "instance_latency_p95_seconds",
                "The instance's 95th percentile latency over the last interval, from a request's sending to the instance's response header (NaN: fewer requests than metrics.min_requests)",
            )?,
            queue_delay: per_instance(
                "instance_queue_delay_seconds",
                "The instance's queue delay over the last interval, estimated as its 10th percentile latency (NaN: fewer requests than metrics.min_requests)",
            )?,
            queue_delay_baseline: per_instance(
                "instance_queue_delay_baseline_seconds",
                "The instance's usual queue delay, averaged over metrics.baseline_window leaving out intervals with the queue_delay trigger raised (NaN: none yet)",
            )?,
            slo_breaches: per_instance_int(
                "instance_slo_breach_intervals",
                "Intervals in a row in which the instance's p95 latency was above metrics.latency_slo",
                &["instance_id"],
            )?,
            triggers: per_instance_int(
                "instance_scale_trigger",
                "1 while a scale trigger is raised for the instance: latency (p95 above metrics.latency_slo for metrics.slo_intervals intervals in a row) or queue_delay (above metrics.queue_delay_factor times its baseline and above it by metrics.queue_delay_floor; a level up for a whole metrics.baseline_window becomes the baseline); never for instance_id=\"(over budget)\"",
                &["instance_id", "trigger"],
            )?,
            tracked: IntGauge::new(
                "instance_signals_tracked",
                "Instances with scale-trigger series of their own",
            )?,
            budget: IntGauge::new(
                "instance_signals_budget",
                "Instances that may have scale-trigger series of their own (metrics.max_instances); the rest share instance_id=\"(over budget)\"",
            )?,
            over_budget_requests: prometheus::IntCounter::new(
                "instance_signals_over_budget_requests_total",
                "Requests counted in the shared instance_id=\"(over budget)\" series because metrics.max_instances instances had series already",
            )?,
        })
    }

    /// Takes an instance's series away.
    pub fn forget(&self, instance: &str) {
        for v in [&self.requests, &self.failed_requests] {
            let _ = v.remove_label_values(&[instance]);
        }
        for v in [&self.interval_requests, &self.slo_breaches] {
            let _ = v.remove_label_values(&[instance]);
        }
        for v in [
            &self.latency_p95,
            &self.queue_delay,
            &self.queue_delay_baseline,
        ] {
            let _ = v.remove_label_values(&[instance]);
        }
        for trigger in ["latency", "queue_delay"] {
            let _ = self.triggers.remove_label_values(&[instance, trigger]);
        }
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 11] {
        [
            Box::new(self.requests.clone()),
            Box::new(self.failed_requests.clone()),
            Box::new(self.interval_requests.clone()),
            Box::new(self.latency_p95.clone()),
            Box::new(self.queue_delay.clone()),
            Box::new(self.queue_delay_baseline.clone()),
            Box::new(self.slo_breaches.clone()),
            Box::new(self.triggers.clone()),
            Box::new(self.tracked.clone()),
            Box::new(self.budget.clone()),
            Box::new(self.over_budget_requests.clone()),
        ]
    }
}

/// A TLS listener (the HTTPS one, or the admin API's): its certificates (what serves, what
/// was refused, when the first expires) and the handshakes that failed. All at 0 without
/// `[tls]` (or, for the admin API's, without `[admin_api] certificates`).
#[derive(Clone)]
pub struct TlsMetrics {
    /// `tls_certificates`: certificates serving now.
    pub certificates: IntGauge,
    /// `tls_certificate_files_refused`: certificate files (or sources) not in use as they
    /// are now: each keeps its last good certificate serving, if it had one.
    pub files_refused: IntGauge,
    /// `tls_certificate_earliest_expiry_timestamp_seconds`: the earliest `notAfter` of the
    /// certificates serving, for an alert well before it passes.
    pub earliest_expiry: IntGauge,
    /// `tls_handshakes_failed_total`: handshakes that did not complete (no name the
    /// certificates cover, no SNI, a client that gave up or took longer than
    /// `request_header_timeout`, no protocol in common, or a connection silent so far closed
    /// to make room at `max_connections`, also counted as reclaimed).
    pub handshakes_failed: prometheus::IntCounter,
}

impl TlsMetrics {
    /// The HTTPS listener's: `tls_*`.
    fn new() -> prometheus::Result<Self> {
        Self::named(
            "",
            "the HTTPS listener",
            "no certificate for the name asked, no SNI, a client that gave up or was too slow, or one silent so far closed to make room at max_connections",
        )
    }

    /// The admin API's, when it serves HTTPS: `admin_api_tls_*`.
    fn admin_api() -> prometheus::Result<Self> {
        Self::named(
            "admin_api_",
            "the admin API's listener",
            "no certificate for the name asked, no SNI, a client that gave up, or none within the admin API's 10 s to authenticate",
        )
    }

    /// `prefix` before each name; `listener` and why a handshake fails in the help texts.
    fn named(prefix: &str, listener: &str, failures: &str) -> prometheus::Result<Self> {
        Ok(Self {
            certificates: IntGauge::new(
                format!("{prefix}tls_certificates"),
                format!("Certificates {listener} serves now"),
            )?,
            files_refused: IntGauge::new(
                format!("{prefix}tls_certificate_files_refused"),
                format!("Certificate files of {listener} not in use as they are now (unreadable or refused; each keeps its last good certificate serving)"),
            )?,
            earliest_expiry: IntGauge::new(
                format!("{prefix}tls_certificate_earliest_expiry_timestamp_seconds"),
                format!("The earliest notAfter (Unix seconds) of the certificates {listener} serves"),
            )?,
            handshakes_failed: prometheus::IntCounter::new(
                format!("{prefix}tls_handshakes_failed_total"),
                format!("TLS handshakes on {listener} that did not complete ({failures})"),
            )?,
        })
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 4] {
        [
            Box::new(self.certificates.clone()),
            Box::new(self.files_refused.clone()),
            Box::new(self.earliest_expiry.clone()),
            Box::new(self.handshakes_failed.clone()),
        ]
    }
}

/// Tunnels: a WebSocket is one request that lasts, counted in `requests_total` and the
/// latency histogram (up to its `101`) once it closes; these say how many are open meanwhile
/// (each holds a client and an instance connection, and a shutdown's grace period) and why
/// they closed (a rebind or a suspension closes a tenant's tunnels at once).
#[derive(Clone)]
pub struct TunnelMetrics {
    /// `tunnels_open`: tunnels open now.
    pub open: IntGauge,
    /// `tunnels_closed_total{end}`: tunnels closed, by [`crate::tunnel::TunnelClose`].
    closed: IntCounterVec,
}

impl TunnelMetrics {
    fn new() -> prometheus::Result<Self> {
        let closed = IntCounterVec::new(
            Opts::new(
                "tunnels_closed_total",
                "Tunnels (WebSockets after their 101) closed, by how they ended",
            ),
            &["end"],
        )?;
        for label in crate::tunnel::TunnelClose::LABELS {
            closed.with_label_values(&[label]);
        }
        Ok(Self {
            open: IntGauge::new(
                "tunnels_open",
                "Tunnels (WebSockets after their 101) open now",
            )?,
            closed,
        })
    }

    /// Counts a tunnel in `tunnels_open` until the returned guard is dropped (with its
    /// request, however that ends).
    pub fn opened(&self) -> OpenTunnel {
        self.open.inc();
        OpenTunnel(self.open.clone())
    }

    /// Counts a tunnel's end.
    pub fn closed(&self, end: crate::tunnel::TunnelClose) {
        self.closed.with_label_values(&[end.label()]).inc();
    }
}

/// One tunnel counted in `tunnels_open`, counted out when dropped.
#[derive(Debug)]
pub struct OpenTunnel(IntGauge);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Saturation of the public listener (see [`crate::connections`]).
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// `client_connections`: open client connections.
    pub open: IntGauge,
    /// `client_connections_limit`: `[server] max_connections`, so that `open / limit` is a
    /// saturation ratio without knowing the config.
    pub limit: IntGauge,
    /// `client_connections_refused_total`: connections closed at once because the cap was
    /// reached.
    pub refused: prometheus::IntCounter,
    /// `client_connections_reclaimed_total`: idle keep-alive connections closed at the cap to
    /// make room for a new one.
    pub reclaimed: prometheus::IntCounter,
    /// `client_connections_idle`: open connections waiting for a request with none begun
    /// (kept alive between requests, or new and silent so far): the ones closed first, the
    /// longest waiting first, to make room at the cap.
    pub idle: IntGauge,
    /// `request_header_timeouts_total`: connections closed (with a 408) because a request
    /// header begun did not end within `[server] request_header_timeout`.
    pub header_timeouts: prometheus::IntCounter,
    /// `client_connections_unused_total`: new connections closed because no request began
    /// within `[server] request_header_timeout` (browsers' spare connections, scanners).
    pub unused: prometheus::IntCounter,
    /// `request_headers_too_large_total`: requests answered 431 because their header was
    /// longer than `[server] max_request_header_bytes`.
    pub headers_too_large: prometheus::IntCounter,
    /// `client_headers_in_progress`: connections with a request header begun and not
    /// complete, waiting for the rest (slow clients; a shutdown waits for them).
    pub headers_in_progress: IntGauge,
    /// `ops_connections_refused_total`: connections to the ops listener closed at once
    /// because [`crate::ops::MAX_OPS_CONNECTIONS`] were open (probes failing then say why).
    pub ops_refused: prometheus::IntCounter,
    /// `admin_api_connections_refused_total`: connections to the admin API closed at once
    /// because [`crate::admin_api::MAX_ADMIN_CONNECTIONS`] were open.
    pub admin_refused: prometheus::IntCounter,
    /// `requests_total{outcome="unparsable_request"}`: requests Pingora answered 400 itself,
    /// its parser refusing the header, before the router saw them.
    pub unparsable: prometheus::IntCounter,
    /// `requests_total{outcome="connect_refused"}`: `CONNECT` requests Pingora answered 405
    /// itself (the router's own 501s for other spellings count under the same label).
    pub connect_refused: prometheus::IntCounter,
    /// `requests_total{outcome="shutting_down"}`: requests whose header was still arriving
    /// when a shutdown's wait for headers ended, answered 503 and never forwarded.
    pub shutting_down: prometheus::IntCounter,
}

impl std::fmt::Debug for ConnectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMetrics")
            .field("open", &self.open.get())
            .field("limit", &self.limit.get())
            .finish_non_exhaustive()
    }
}

impl ConnectionMetrics {
    /// The connection metrics; `requests` is `requests_total`, which counts the requests
    /// Pingora answers itself.
    fn new(requests: &IntCounterVec) -> prometheus::Result<Self> {
        Ok(Self {
            open: IntGauge::new("client_connections", "Open client connections")?,
            limit: IntGauge::new(
                "client_connections_limit",
                "Client connections allowed open at once (server.max_connections)",
            )?,
            refused: prometheus::IntCounter::new(
                "client_connections_refused_total",
                "Client connections closed unanswered because max_connections were open and none idle could make room (within 200 ms)",
            )?,
            idle: IntGauge::new(
                "client_connections_idle",
                "Open client connections waiting for a request with none begun (between keep-alive requests, or new and silent so far); at max_connections the longest waiting is closed to let a new one in",
            )?,
            reclaimed: prometheus::IntCounter::new(
                "client_connections_reclaimed_total",
                "Client connections waiting for a request with none begun (kept alive, or new and silent) closed to make room for a new one at max_connections",
            )?,
            header_timeouts: prometheus::IntCounter::new(
                "request_header_timeouts_total",
                "Client connections closed (408) because a request header begun was not complete within request_header_timeout",
            )?,
            unused: prometheus::IntCounter::new(
                "client_connections_unused_total",
                "New client connections closed because no request began within request_header_timeout",
            )?,
            headers_too_large: prometheus::IntCounter::new(
                "request_headers_too_large_total",
                "Requests answered 431 because their header was longer than max_request_header_bytes",
            )?,
            headers_in_progress: IntGauge::new(
                "client_headers_in_progress",
                "Client connections with a request header begun and not complete, waiting for the rest",
            )?,
            ops_refused: prometheus::IntCounter::new(
                "ops_connections_refused_total",
                format!(
                    "Connections to the ops listener closed at once because its cap ({}, less \
                     when the open-file limit is too low for it) were open",
                    crate::ops::MAX_OPS_CONNECTIONS
                ),
            )?,
            admin_refused: prometheus::IntCounter::new(
                "admin_api_connections_refused_total",
                format!(
                    "Connections to the admin API closed at once because its cap ({}, less \
                     when the open-file limit is too low for it) were open",
                    crate::admin_api::MAX_ADMIN_CONNECTIONS
                ),
            )?,
            unparsable: requests.with_label_values(&["unparsable_request"]),
            connect_refused: requests.with_label_values(&["connect_refused"]),
            shutting_down: requests.with_label_values(&["shutting_down"]),
        })
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 11] {
        [
            Box::new(self.open.clone()),
            Box::new(self.limit.clone()),
            Box::new(self.refused.clone()),
            Box::new(self.reclaimed.clone()),
            Box::new(self.idle.clone()),
            Box::new(self.header_timeouts.clone()),
            Box::new(self.unused.clone()),
            Box::new(self.headers_too_large.clone()),
            Box::new(self.headers_in_progress.clone()),
            Box::new(self.ops_refused.clone()),
            Box::new(self.admin_refused.clone()),
        ]
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("nexus_edge".to_owned()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests by outcome"),
            &["outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Request latency as seen by the router",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["class"],
        )?;
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new(
                "decision_duration_seconds",
                "Time from reading a request's header to its routing decision (host, path, token, policy)",
            )
            .buckets(vec![
                0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005,
            ]),
        )?;
        let bindings = IntGauge::new("bindings", "Bindings in the live table")?;
        let binding_revision =
            IntGauge::new(
                "binding_revision",
                "Revision of the binding table served (lower again when an older bindings file, or another history, is loaded)",
            )?;
        let store_up = IntGauge::new(
            "binding_store_up",
            "1 if the binding store answered at the last attempt",
        )?;
        let sync_age_seconds = IntGauge::new(
            "binding_sync_age_seconds",
            "Seconds since the bindings served were last known in sync with the store (last sync, else the snapshot's write, else start-up)",
        )?;
        let key_set_refused = IntGauge::new(
            "key_set_refused",
            "1 while the JWKS file holds a key set that was refused (the keys in use are older than the file)",
        )?;
        let verification_keys = IntGauge::new(
            "verification_keys",
            "Keys tokens are verified with now (0: every token is refused)",
        )?;
        let jwks_age_seconds = IntGauge::new(
            "jwks_age_seconds",
            "Seconds since the identity provider last confirmed the fetched key set in use (auth.jwks_url; 0 for a key file)",
        )?;
        let jwks_stale = IntGauge::new(
            "jwks_stale",
            "1 while jwks_age_seconds is past auth.jwks_max_staleness, or no key set was ever fetched (a key withdrawn since may still verify tokens)",
        )?;
        let jwks_fetch_failures = prometheus::IntCounter::new(
            "jwks_fetch_failures_total",
            "Fetches of the key set from auth.jwks_url that brought none (unreachable, not 200, too large, or refused)",
        )?;
        let revocations = IntGauge::new(
            "revocations",
            "Token revocations held (from [revocation]: the Redis store or a revocations file)",
        )?;
        let revocations_sync_age_seconds = IntGauge::new(
            "revocations_sync_age_seconds",
            "Seconds since the revocations were last known to equal their source (since start-up when never; 0 without a source)",
        )?;
        let revocations_stale = IntGauge::new(
            "revocations_stale",
            "1 while revocations_sync_age_seconds is past [revocation] max_staleness (tokens revoked since may be accepted: failing open)",
        )?;
        let revocation_records_refused = prometheus::IntCounter::new(
            "revocation_records_refused_total",
            "Revocation records (Redis fields and feed entries) and revocations file versions refused so far",
        )?;
        let revocation_snapshot_write_failures = prometheus::IntCounter::new(
            "revocation_snapshot_write_failures_total",
            "Revocation snapshots that could not be written so far (Redis store with a snapshot_path): a restart during a Redis outage starts from the last one written",
        )?;
        let token_cache_entries = IntGauge::new(
            "token_cache_entries",
            "Verified tokens cached now (auth.token_cache_capacity bounds them)",
        )?;
        let token_signature_checks = prometheus::IntCounter::new(
            "token_signature_checks_total",
            "Token signatures verified: tokens not served from the cache whose claims passed (the cache's misses)",
        )?;
        let panics = prometheus::IntCounter::new(
            "panics_total",
            "Panics since start: each stopped the task it happened in (a connection or a background job) and was logged",
        )?;
        let rejected_records = prometheus::IntCounter::new(
            "binding_records_rejected_total",
            "Binding records refused by validation so far (a record is counted again at each load that meets it)",
        )?;
        let full_reloads = prometheus::IntCounter::new(
            "binding_full_reloads_total",
            "Whole binding-table loads from Redis so far (start-up and reconciles; 0 with the file store)",
        )?;
        let sync_failures = prometheus::IntCounter::new(
            "binding_sync_failures_total",
            "Binding syncs that failed so far, the last table served meanwhile (Redis: each retried at once or within a second; file store: each poll that could not read the bindings file, and each version of it refused)",
        )?;
        let snapshot_write_failures = prometheus::IntCounter::new(
            "binding_snapshot_write_failures_total",
            "Local binding snapshots that could not be written so far (Redis store; each also an error line): a restart during a Redis outage starts from the last one written",
        )?;
        let upstream_connect_retries = prometheus::IntCounter::new(
            "upstream_connect_retries_total",
            "Connects retried at another address of an instance's name",
        )?;
        let instance_connections = IntCounterVec::new(
            Opts::new(
                "instance_connections_total",
                "Requests sent to an instance, by the connection their last attempt used: how=\"new\" opened for it, how=\"reused\" taken from the idle pool",
            ),
            &["how"],
        )?;
        // One counter for the process, shared with the log subscriber's allowance of
        // Pingora's own lines.
        let log_lines_not_logged = crate::log_budget::not_logged_total().ok_or_else(|| {
            prometheus::Error::Msg("log_lines_not_logged_total could not be made".to_owned())
        })?;
        let connections = ConnectionMetrics::new(&requests)?;
        let tunnels = TunnelMetrics::new()?;
        let tls = TlsMetrics::new()?;
        let admin_api_tls = TlsMetrics::admin_api()?;
        let scale = ScaleMetrics::new()?;
        let admin_api_requests = IntCounterVec::new(
            Opts::new(
                "admin_api_requests_total",
                "Admin API requests by outcome: ok, not_confirmed (a write whose wait the fleet did not confirm), or the refusal's error code",
            ),
            &["outcome"],
        )?;
        for outcome in crate::admin_api::reply::OUTCOMES {
            admin_api_requests.with_label_values(&[outcome]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(decision_duration.clone()),
            Box::new(bindings.clone()),
            Box::new(binding_revision.clone()),
            Box::new(store_up.clone()),
            Box::new(sync_age_seconds.clone()),
            Box::new(key_set_refused.clone()),
            Box::new(verification_keys.clone()),
            Box::new(jwks_age_seconds.clone()),
            Box::new(jwks_stale.clone()),
            Box::new(jwks_fetch_failures.clone()),
            Box::new(token_cache_entries.clone()),
            Box::new(token_signature_checks.clone()),
            Box::new(revocations.clone()),
            Box::new(revocations_sync_age_seconds.clone()),
            Box::new(revocations_stale.clone()),
            Box::new(revocation_records_refused.clone()),
            Box::new(revocation_snapshot_write_failures.clone()),
            Box::new(panics.clone()),
            Box::new(rejected_records.clone()),
            Box::new(full_reloads.clone()),
            Box::new(sync_failures.clone()),
            Box::new(snapshot_write_failures.clone()),
            Box::new(upstream_connect_retries.clone()),
            Box::new(instance_connections.clone()),
            Box::new(log_lines_not_logged.clone()),
            Box::new(tunnels.open.clone()),
            Box::new(tunnels.closed.clone()),
            Box::new(admin_api_requests.clone()),
        ]
        .into_iter()
        .chain(connections.collectors())
        .chain(tls.collectors())
        .chain(admin_api_tls.collectors())
        .chain(scale.collectors())
        {
            registry.register(c)?;
        }
        // Every outcome's series from the start, at 0 (see `RejectReason::LABELS`).
        for label in crate::errors::RejectReason::LABELS.iter().chain(&[
            "forwarded",
            "client_closed",
            "preflight",
        ]) {
            requests.with_label_values(&[label]);
        }
        let forwarded = requests.with_label_values(&["forwarded"]);
        let forwarded_duration = request_duration.with_label_values(&["forwarded"]);
        let rejected_duration = request_duration.with_label_values(&["rejected"]);
        let failed_duration = request_duration.with_label_values(&["failed"]);
        let preflights = requests.with_label_values(&["preflight"]);
        let preflight_duration = request_duration.with_label_values(&["preflight"]);
        let instance_connections_new = instance_connections.with_label_values(&["new"]);
        let instance_connections_reused = instance_connections.with_label_values(&["reused"]);
        Ok(Self {
            registry,
            forwarded,
            forwarded_duration,
            rejected_duration,
            failed_duration,
            preflights,
            preflight_duration,
            requests,
            request_duration,
            decision_duration,
            bindings,
            binding_revision,
            store_up,
            sync_age_seconds,
            key_set_refused,
            verification_keys,
            jwks_age_seconds,
            jwks_stale,
            jwks_fetch_failures,
            token_cache_entries,
            token_signature_checks,
            revocations,
            revocations_sync_age_seconds,
            revocations_stale,
            revocation_records_refused,
            revocation_snapshot_write_failures,
            panics,
            rejected_records,
            full_reloads,
            sync_failures,
            snapshot_write_failures,
            admin_api_requests,
            mirror: Arc::default(),
            upstream_connect_retries,
            instance_connections_new,
            instance_connections_reused,
            log_lines_not_logged,
            connections,
            tunnels,
            tls,
            admin_api_tls,
            scale,
        })
    }

    /// Mirrors the key set's state (whatever its source), the token cache's size, the
    /// signature checks made so far and the revocations' state (before a render);
    /// `max_staleness`: `[revocation] max_staleness`.
    pub fn mirror_auth(
        &self,
        auth: &crate::auth::Authenticator,
        max_staleness: std::time::Duration,
    ) {
        self.key_set_refused.set(i64::from(auth.refusing()));
        self.verification_keys.set(gauge_value(auth.key_count()));
        self.token_cache_entries
            .set(gauge_value(auth.cached_tokens()));
        let revocations = auth.revocations();
        let age_ms = revocations.age_ms(nexus_binding_store::source::now_unix_ms());
        self.revocations.set(gauge_value(revocations.load().len()));
        self.revocations_sync_age_seconds
            .set(gauge_value(age_ms / 1000));
        self.revocations_stale
            .set(i64::from(u128::from(age_ms) > max_staleness.as_millis()));
        let _held = self.mirror.lock();
        let c = &self.token_signature_checks;
        c.inc_by(auth.signature_checks().saturating_sub(c.get()));
        let c = &self.revocation_records_refused;
        c.inc_by(revocations.refused().saturating_sub(c.get()));
        let c = &self.revocation_snapshot_write_failures;
        c.inc_by(revocations.snapshot_failures().saturating_sub(c.get()));
    }

    /// Refreshes the metrics of a key set fetched from `[auth] jwks_url`, at each scrape.
    pub fn mirror_remote_keys(
        &self,
        auth: &crate::auth::Authenticator,
        remote: &crate::auth::remote::RemoteKeys,
    ) {
        let now = nexus_binding_store::source::now_unix_ms();
        self.jwks_age_seconds
            .set(gauge_value(remote.age_ms(now) / 1000));
        self.jwks_stale.set(i64::from(remote.stale(auth, now)));
        let _held = self.mirror.lock();
        let c = &self.jwks_fetch_failures;
        c.inc_by(remote.failures().saturating_sub(c.get()));
    }

    /// Refreshes the gauges that mirror state, then renders the text exposition format.
    pub fn render(&self, table: &BindingHandle, health: &Arc<SyncHealth>) -> Vec<u8> {
        let t = table.load();
        self.bindings.set(gauge_value(t.len()));
        self.binding_revision.set(gauge_value(t.revision().get()));
        self.store_up.set(i64::from(health.store_up()));
        let age_ms = health.sync_age_ms(nexus_binding_store::source::now_unix_ms());
        self.sync_age_seconds.set(gauge_value(age_ms / 1000));
        {
            // The store keeps the totals; the counters only ever move up to them.
            let _held = self.mirror.lock();
            let catch_up = |c: &prometheus::IntCounter, total: u64| {
                c.inc_by(total.saturating_sub(c.get()));
            };
            catch_up(&self.rejected_records, health.rejected_records());
            catch_up(&self.full_reloads, health.full_reloads());
            catch_up(&self.sync_failures, health.sync_failures());
            catch_up(
                &self.snapshot_write_failures,
                health.snapshot_write_failures(),
            );
            catch_up(&self.panics, crate::panics::count());
        }
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_binding_store::source::now_unix_ms;
    use nexus_binding_store::BindingTable;

    /// The value of `nexus_edge_binding_sync_age_seconds` in a rendering.
    fn sync_age(metrics: &Metrics, health: &Arc<SyncHealth>) -> i64 {
        let table = BindingHandle::new(BindingTable::new());
        let text = String::from_utf8(metrics.render(&table, health)).expect("utf-8");
        text.lines()
            .find_map(|l| l.strip_prefix("nexus_edge_binding_sync_age_seconds "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sync age series in\n{text}"))
    }

    /// A replica that never synced (down since start-up) reports an age counted from start-up,
    /// never a negative one that an alert on `binding_sync_age_seconds > N` would not see.
    #[test]
    fn a_store_never_synced_reports_its_age_from_start_up() {
        let metrics = Metrics::new().expect("metrics");
        let health = Arc::new(SyncHealth::default());
        health.mark_down();
        let age = sync_age(&metrics, &health);
        assert!((0..=1).contains(&age), "binding_sync_age_seconds = {age}");
    }

    /// A replica serving a snapshot written an hour ago reports the snapshot's age, while the
    /// store stays down; a sync then resets it.
    #[test]
    fn a_replica_on_its_snapshot_reports_the_snapshots_age_until_it_syncs() {
        let metrics = Metrics::new().expect("metrics");
        let health = Arc::new(SyncHealth::default());
        health.mark_down();
        health.seed_last_sync(now_unix_ms() - 3_600_000);
        let age = sync_age(&metrics, &health);
        assert!(
            (3_600..=3_601).contains(&age),
            "binding_sync_age_seconds = {age}"
        );
        assert!(!health.store_up());

        health.mark_synced(nexus_binding_store::Revision(1));
        let age = sync_age(&metrics, &health);
        assert!((0..=1).contains(&age), "binding_sync_age_seconds = {age}");
    }
}
