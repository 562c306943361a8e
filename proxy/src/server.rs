//! Assembles and runs the Pingora server: proxy listener, ops listener, background tasks.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_binding_store::{BindingHandle, BindingSource};
use nexus_config::Settings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::auth::remote::RemoteKeys;
use crate::auth::{AuthSetupError, Authenticator};
use crate::background::{BindingSync, JobsStop, KeyRefresh, KeyReload};
use crate::connections::{Connections, Guarded, Limits};
use crate::handover;
use crate::https::{CertReload, Certificates};
use crate::listening::{self, BindError, BoundListeners, Prebound};
use crate::metrics::Metrics;
use crate::ops::OpsApp;
use crate::service::EdgeService;
use crate::signals::Signals;
use crate::state::EdgeState;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Verification keys could not be loaded.
    #[error("verification keys: {0}")]
    Keys(#[from] AuthSetupError),
    /// No binding table could be loaded.
    #[error("bindings: {0}")]
    Bindings(#[from] nexus_binding_store::StoreError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A listener could not be bound.
    #[error("{0}")]
    Listen(#[from] BindError),
    /// A runtime for start-up work could not be created.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// SIGTERM and SIGINT could not be caught.
    #[error("cannot catch the stop signals: {0}")]
    Signals(std::io::Error),
    /// The upstream CA bundle cannot be used (Pingora's connector would panic on it).
    #[error("upstream.ca_file: {0}")]
    CaBundle(String),
    /// The identity provider's CA bundle cannot be used (as [`StartError::CaBundle`]).
    #[error("auth.jwks_ca_file: {0}")]
    JwksCaBundle(String),
    /// No client to fetch the key set with could be built.
    #[error("auth.jwks_url: {0}")]
    JwksClient(String),
    /// A token header (its index, why) is one the router takes off every request.
    #[error("auth.token_headers[{0}]: {1}")]
    TokenHeader(usize, String),
    /// The HTTPS listener has no certificate to serve.
    #[error("{0}")]
    Https(#[from] crate::https::HttpsError),
    /// The revocations file is refused, or the Redis client for revocations cannot be built.
    #[error("{0}")]
    Revocations(#[from] crate::revocation::RevocationSetupError),
    /// The upgrade socket cannot be claimed, or the listeners cannot be taken over.
    #[error("{0}")]
    Handover(#[from] crate::handover::HandoverError),
}

/// Loads the CA bundle for https instances the way Pingora's connector will (every PEM item a
/// certificate that a root store takes), so that a bad one stops start-up with its reason,
/// and `check` says so, instead of panicking in Pingora when the service starts.
pub fn check_ca_bundle(path: &std::path::Path) -> Result<(), String> {
    let mut store = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(path, &mut store).map_err(|e| {
        // Pingora's own wording speaks of a peer certificate and of its internals.
        let why = e.root_cause().to_string();
        let why = why.trim();
        match (&e.etype, &e.cause) {
            (pingora::ErrorType::FileReadError, _) => {
                format!("cannot read {}: {why}", path.display())
            }
            // Its only refusal without a cause: a PEM item of another kind (a key, a CSR).
            (_, None) => format!(
                "{}: holds a PEM item that is not a certificate (a CA bundle holds \
                 certificates only)",
                path.display()
            ),
            _ => format!(
                "{}: holds a certificate that cannot be used as a CA certificate (the TLS \
                 library says: {why})",
                path.display()
            ),
        }
    })?;
    if store.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(())
}

/// Raises the open-file limit for the connections `wanted`, and returns them as they fit in
/// it: cut down, and said so, when the limit stays too low (see
/// [`crate::connections::Connections::fit`]).
fn fit_open_files(wanted: Connections, threads: usize) -> Connections {
    let files = match crate::connections::raise_open_file_limit(wanted) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return wanted;
        }
    };
    if files.now > files.before {
        tracing::info!(
            from = files.before,
            to = files.now,
            "open-file limit raised for max_connections, idle instance connections, the ops \
             listener and the admin API"
        );
    }
    let fitted = wanted.fit(threads, files.now);
    if fitted != wanted {
        tracing::warn!(
            limit = files.now,
            needed = files.needed,
            max_connections = fitted.clients,
            idle_connections = fitted.idle,
            ops_connections = fitted.ops,
            admin_api_connections = fitted.admin,
            "the open-file limit is below what server.max_connections and \
             upstream.idle_connections need (a client and an instance connection each, \
             the idle ones, the ops listener's and the admin API's, and a reserve): all are \
             cut down to what \
             fits, so that the caps work and file reloads keep descriptors. Raise the hard \
             limit (ulimit -Hn, LimitNOFILE= for systemd) or lower max_connections and \
             idle_connections"
        );
    }
    fitted
}

/// Pingora's configuration for `s`.
fn server_conf(s: &Settings) -> ServerConf {
    let mut conf = ServerConf {
        threads: s.server.threads,
        grace_period_seconds: Some(s.server.shutdown_grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        // Pingora's pool is one for the whole router, but it takes its size per worker thread
        // and multiplies it by the threads: `idle_connections` is the router's bound.
        upstream_keepalive_pool_size: s
            .upstream
            .idle_connections
            .div_ceil(s.server.threads.max(1)),
        // `daemon` stays off: the signals thread (see `signals`) would not survive its fork.
        ..ServerConf::default()
    };
    if let Some(ca) = &s.upstream.ca_file {
        conf.ca_file = Some(ca.display().to_string());
    }
    conf
}

/// Loads keys and bindings, then builds the shared state. Split from [`run`] so the demo and
/// tests can inspect the state.
pub fn prepare(
    settings: Settings,
    source: &Arc<dyn BindingSource>,
) -> Result<Arc<EdgeState>, StartError> {
    if let Some(ca) = &settings.upstream.ca_file {
        check_ca_bundle(ca).map_err(StartError::CaBundle)?;
    }
    if let Some((i, why)) = crate::route::check_token_headers(&settings.auth.token_headers)
        .into_iter()
        .next()
    {
        return Err(StartError::TokenHeader(i, why));
    }
    let (feed, revocations) = crate::revocation::open(&settings)?;
    let auth = Authenticator::new(&settings.auth)?.with_revocations(revocations.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let loaded = (|| {
        let remote_keys = match &settings.auth.jwks {
            nexus_config::JwksSource::Url(remote) => {
                if let Some(ca) = &remote.ca_file {
                    check_ca_bundle(ca).map_err(StartError::JwksCaBundle)?;
                }
                let remote = Arc::new(RemoteKeys::new(remote).map_err(StartError::JwksClient)?);
                rt.block_on(remote.initial_load(&auth));
                Some(remote)
            }
            _ => None,
        };
        let table = rt.block_on(source.initial_load())?;
        crate::revocation::initial_load(&feed, &revocations, &rt)?;
        Ok::<_, StartError>((remote_keys, table))
    })();
    // Not waited for, whether the loads succeeded or not: a name lookup of the key set's
    // fetch that timed out may still hold a blocking thread, and the start (or its failure)
    // must not wait on the resolver past jwks_fetch_timeout.
    rt.shutdown_background();
    let (remote_keys, table) = loaded?;
    tracing::info!(
        bindings = table.len(),
        revision = table.revision().get(),
        source = source.kind(),
        "binding table loaded"
    );
    let metrics = Metrics::new().map_err(|e| StartError::Metrics(e.to_string()))?;
    Ok(Arc::new(EdgeState {
        sync_health: source.health(),
        bindings: BindingHandle::new(table),
        auth,
        remote_keys,
        revocation_feed: Arc::new(feed),
        log_budgets: Arc::new(crate::log_budget::LogBudgets::new(
            settings.log.request_lines_per_second,
            metrics.log_lines_not_logged.clone(),
        )),
        scale: crate::scale::InstanceSignals::new(&settings.metrics, metrics.scale.clone()),
        metrics,
        resolver: crate::resolve::InstanceResolver::new(crate::resolve::ResolverPolicy {
            ttl: settings.upstream.dns_ttl,
            serve_stale: settings.upstream.dns_serve_stale,
            timeout: settings.upstream.connect_timeout,
        }),
        cors: crate::cors::Cors::new(&settings.cors),
        settings,
        draining: std::sync::atomic::AtomicBool::new(false),
    }))
}

/// Opens the configured store, loads everything, and serves until shutdown. A start-up
/// failure is logged and printed, and becomes the process's failure exit code.
/// `config`: the file the settings came from, which a failed start names the check of.
/// `upgrade`: take the listeners over from the router running with the same
/// `upgrade_socket` (the caller checked there is one) instead of binding them.
pub fn serve(
    settings: Settings,
    config: Option<&std::path::Path>,
    upgrade: bool,
) -> std::process::ExitCode {
    if let Err(e) = crate::signals::ignore_reload_signals() {
        tracing::warn!(error = %e, "SIGHUP, SIGUSR1 and SIGUSR2 are not caught: each ends the process");
    }
    // Whether a failure is one `check` finds in the config file: a store client it cannot
    // build, a key set, a CA bundle, a bindings file. Not a port another process holds, nor
    // a Redis that does not answer.
    let file_store = matches!(settings.store, nexus_config::StoreSettings::File(_));
    let json_log = settings.log.format == nexus_config::LogFormat::Json;
    let started = crate::store::Store::open(&settings.store)
        .map_err(|e| (e.to_string(), true))
        .and_then(|store| {
            let source = store.source();
            // The admin API writes through a store of its own, as `nexus-edge tenant` does:
            // the sync's state is never touched by a write.
            let admin_api = match &settings.admin_api {
                Some(a) => Some(
                    crate::store::Store::open(&settings.store)
                        .map(|own| {
                            crate::admin_api::AdminApi::new(
                                own,
                                a.tokens_file.clone(),
                                settings.tenancy.base_domains.clone(),
                            )
                        })
                        .map_err(|e| (e.to_string(), true))?,
                ),
                None => None,
            };
            // Bound only once the state is loaded: a socket that accepts must soon be served. The
            // stop signals are caught from before that on (until then their default action ends
            // the process, as it should while it only loads), so a client that reaches a listener
            // can rely on a SIGTERM being drained, not ended on.
            prepare(settings, &source)
                .and_then(|state| {
                    let certificates = load_certificates(
                        "tls.certificates",
                        state
                            .settings
                            .tls
                            .as_ref()
                            .map(|t| t.certificates.as_slice()),
                        &state.metrics.tls,
                    )?;
                    let admin_api_certificates = load_certificates(
                        "admin_api.certificates",
                        state
                            .settings
                            .admin_api
                            .as_ref()
                            .and_then(|a| a.tls.as_ref())
                            .map(|t| t.certificates.as_slice()),
                        &state.metrics.admin_api_tls,
                    )?;
                    let signals =
                        Signals::catch(Arc::clone(&state)).map_err(StartError::Signals)?;
                    // Everything is loaded: only now are the running router's sockets asked
                    // for, so that it serves alone for as long as this one is not ready.
                    let (plan, mut taken) = plan_handover(&state.settings, upgrade, &signals)?;
                    let listeners = bind_listeners(&state.settings, &mut taken)?;
                    for key in taken.keys() {
                        tracing::info!(
                            listener = %key,
                            "the predecessor's listener at this address is not in this config: \
                             not served here (the predecessor closes it as it drains)"
                        );
                    }
                    let parts = Parts {
                        source,
                        listeners,
                        signals,
                        certificates,
                        plan,
                        admin_api,
                        admin_api_certificates,
                    };
                    Ok((state, parts))
                })
                .map_err(|e| {
                    let in_config = match e {
                        StartError::Keys(_)
                        | StartError::CaBundle(_)
                        | StartError::JwksCaBundle(_)
                        | StartError::Https(_) => true,
                        StartError::Bindings(_) => file_store,
                        _ => false,
                    };
                    (format!("cannot start: {e}"), in_config)
                })
        });
    match started {
        Ok((state, parts)) => {
            if run(state, parts) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err((e, in_config)) => {
            // Text logs go to the terminal the plain line goes to: said once there. A JSON
            // log is read by a collector, which gets its own line.
            if json_log {
                tracing::error!(error = %e, "nexus-edge stopped");
            }
            eprintln!("nexus-edge: {e}");
            // The start names the file it could not use; the check names the config key and
            // line that gave it, and every other problem beside it.
            if let (Some(config), true) = (config, in_config) {
                eprintln!(
                    "nexus-edge: `nexus-edge check --config {}` lists every problem of the \
                     config with its key and line",
                    crate::demo::shell_word(&config.display().to_string())
                );
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The certificates `setting` names (`None`: no such listener), loaded; a listener with no
/// usable one does not start.
fn load_certificates(
    setting: &'static str,
    sources: Option<&[std::path::PathBuf]>,
    metrics: &crate::metrics::TlsMetrics,
) -> Result<Option<Arc<Certificates>>, StartError> {
    let Some(sources) = sources else {
        return Ok(None);
    };
    let certificates = Certificates::load(setting, sources.to_vec(), metrics.clone())?;
    Ok(Some(Arc::new(certificates)))
}

/// The handover at start: with `upgrade`, the running router's sockets taken (by the
/// address each was configured as); otherwise the upgrade socket claimed, when configured.
fn plan_handover(
    settings: &Settings,
    upgrade: bool,
    signals: &Signals,
) -> Result<(handover::Plan, HashMap<String, std::net::TcpListener>), StartError> {
    let Some(path) = &settings.server.upgrade_socket else {
        return Ok((handover::Plan::Off, HashMap::new()));
    };
    if !upgrade {
        return Ok((
            handover::Plan::Offer(handover::Offer::claim(path)?),
            HashMap::new(),
        ));
    }
    // Stuck past the deadline: the sockets are left to the running router, and this one
    // drains; should it not manage that either, it ends.
    let leave = signals.abandon_notice();
    let grace = settings.server.shutdown_grace + settings.server.shutdown_delay;
    let on_deadline = Box::new(move || {
        leave();
        std::thread::sleep(grace + std::time::Duration::from_secs(10));
        eprintln!("nexus-edge: the handover was not confirmed, and the drain did not end: exiting");
        std::process::exit(1);
    });
    let mut taken = handover::take(path, on_deadline)?;
    tracing::info!(
        predecessor_pid = taken.from_pid,
        listeners = ?taken.sockets.keys().collect::<Vec<_>>(),
        "took the running router's listeners; serving on them"
    );
    let sockets = std::mem::take(&mut taken.sockets);
    Ok((
        handover::Plan::Succeed {
            taken,
            path: path.clone(),
        },
        sockets,
    ))
}

/// Binds the public, HTTPS, ops and admin API listeners, so an address that cannot be had stops start-up
/// with an error naming it, and so all accept before any service runs. A listener `taken`
/// from the router this one succeeds, configured at the same address, is taken out of it and
/// used instead.
pub fn bind_listeners(
    settings: &Settings,
    taken: &mut HashMap<String, std::net::TcpListener>,
) -> Result<BoundListeners, StartError> {
    let mut bound = BoundListeners::default();
    let mut listen = |addr, role| match taken.remove(&listening::key(addr)) {
        Some(socket) => {
            listening::adopt(&mut bound, addr, socket);
            Ok(())
        }
        None => listening::bind(&mut bound, addr, role),
    };
    listen(settings.server.listen, "public")?;
    if let Some(tls) = &settings.tls {
        listen(tls.listen, "https")?;
    }
    if let Some(ops) = settings.server.admin_listen {
        listen(ops, "ops")?;
    }
    if let Some(api) = &settings.admin_api {
        listen(api.listen, "admin API")?;
    }
    Ok(bound)
}

/// Offers the listeners to a successor as `plan` says: at once, or (for a successor itself)
/// once the handover is confirmed, after the `listening` services accept.
fn offer_listeners(
    server: &mut Server,
    plan: handover::Plan,
    offered: handover::Offered,
    signals: &Signals,
    listening: &[pingora::services::ServiceHandle],
) {
    signals.withdraw_on_stop(offered.clone());
    match plan {
        handover::Plan::Off => {}
        handover::Plan::Offer(offer) => {
            if let Err(e) = offer.open(offered, signals.handover_notice()) {
                tracing::warn!(error = %e, "cannot offer the listeners to a successor");
            }
        }
        handover::Plan::Succeed { taken, path } => {
            let confirm = server.add_service(background_service(
                "handover",
                handover::Confirm::new(
                    taken,
                    path,
                    offered,
                    handover::Outcome {
                        stopping: Box::new(signals.stop_signalled()),
                        handed_over: Box::new(signals.handover_notice()),
                        abandoned: Box::new(signals.abandon_notice()),
                    },
                ),
            ));
            for service in listening {
                confirm.add_dependency(service);
            }
        }
    }
}

/// What [`run`] serves with, beside the state: all loaded, bound or caught before it runs.
pub struct Parts {
    /// Where the bindings come from.
    pub source: Arc<dyn BindingSource>,
    /// The listening sockets ([`bind_listeners`]).
    pub listeners: BoundListeners,
    /// The stop signals, caught before the listeners were bound.
    pub signals: Signals,
    /// The HTTPS listener's certificates.
    pub certificates: Option<Arc<Certificates>>,
    /// Whether and how the listeners are handed over.
    pub plan: handover::Plan,
    /// The admin API, when `[admin_api]` configures one.
    pub admin_api: Option<crate::admin_api::AdminApi>,
    /// The admin API's certificates, when it serves HTTPS.
    pub admin_api_certificates: Option<Arc<Certificates>>,
}

/// Runs the router on `listeners` (from [`bind_listeners`]) until SIGTERM/SIGINT, then drains
/// until no client connection is left, for `server.shutdown_grace` at most (after
/// `server.shutdown_delay`, for SIGTERM), as `signals` (caught before the listeners were
/// bound) say. False when it stopped because a handover it took part in as the successor
/// was abandoned.
pub fn run(state: Arc<EdgeState>, parts: Parts) -> bool {
    let Parts {
        source,
        mut listeners,
        signals,
        certificates,
        plan,
        admin_api,
        admin_api_certificates,
    } = parts;
    let s = &state.settings;
    // As bound: with port 0 in the config, the port the system chose.
    let listen = listeners.local_addr(s.server.listen);
    let https = s
        .tls
        .as_ref()
        .map(|t| (t, listeners.local_addr(t.listen).unwrap_or(t.listen)));
    let admin = s.server.admin_listen.and_then(|a| listeners.local_addr(a));
    let mut conf = server_conf(s);
    let threads = conf.threads.max(1);
    let fitted = fit_open_files(
        Connections {
            clients: s.server.max_connections,
            idle: conf.upstream_keepalive_pool_size.saturating_mul(threads),
            ops: if s.server.admin_listen.is_some() {
                crate::ops::MAX_OPS_CONNECTIONS
            } else {
                0
            },
            admin: if s.admin_api.is_some() {
                crate::admin_api::MAX_ADMIN_CONNECTIONS
            } else {
                0
            },
        },
        threads,
    );
    // 0 when the open-file limit holds no idle connection for each thread: nothing pooled.
    conf.upstream_keepalive_pool_size = fitted.idle / threads;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let guarded = Guarded::new(
        pingora::proxy::http_proxy(&server.configuration, EdgeService::new(Arc::clone(&state))),
        Limits {
            max_connections: fitted.clients,
            ..Limits::from_settings(&s.server)
        },
        state.metrics.connections.clone(),
        Arc::clone(&state.log_budgets),
    );
    let guarded = match (&certificates, https) {
        (Some(certificates), Some((_, addr))) => guarded.with_tls(certificates.endpoint(addr)),
        _ => guarded,
    };
    // The background jobs go on through the drain (see `JobsStop`).
    let jobs = JobsStop::new(s.server.shutdown_grace);
    // The admin API's requests are waited for too: a write under way must not be cut.
    let drain = match &admin_api {
        Some(api) => guarded.drain().and(api.busy()),
        None => guarded.drain(),
    };
    signals.end_drain_with(drain, jobs.clone());
    // Copies of the sockets for a successor, taken before Pingora is given (and owns) them.
    let offered = match (&plan, listeners.duplicates()) {
        (handover::Plan::Off, _) => handover::Offered::default(),
        (_, Ok(sockets)) => handover::Offered::new(sockets),
        (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot copy the listening sockets: they are not offered to a successor");
            handover::Offered::default()
        }
    };
    let proxy = Service::new("nexus-edge".to_owned(), guarded);
    let mut proxy = Prebound::new(proxy, &mut listeners, s.server.listen);
    if let Some((tls, _)) = https {
        proxy = proxy.also_on(&mut listeners, tls.listen);
    }
    let mut listening = vec![server.add_service(proxy)];

    if let Some(addr) = s.server.admin_listen {
        let ops = Service::new(
            "nexus-edge ops".to_owned(),
            crate::ops::Capped::new(
                pingora::apps::http_app::HttpServer::new_app(OpsApp::new(Arc::clone(&state))),
                crate::ops::Caps::ops(fitted.ops),
                state.metrics.connections.ops_refused.clone(),
            ),
        );
        let phases = server.watch_execution_phase();
        listening.push(
            server.add_service(
                Prebound::new(ops, &mut listeners, addr)
                    .serving_through_the_drain(phases, signals.watch_handover()),
            ),
        );
    }
    let admin_api_addr = match (admin_api, &s.admin_api) {
        (Some(api), Some(settings)) => {
            let addr = settings.listen;
            // As bound, before the service takes the socket.
            let bound = listeners.local_addr(addr).unwrap_or(addr);
            if admin_api_certificates.is_none() && !addr.ip().to_canonical().is_loopback() {
                tracing::warn!(
                    admin_api = %addr,
                    "the admin API listens beyond this host over plain HTTP: its bearer tokens \
                     cross the network in the clear; name admin_api.certificates to serve it \
                     over HTTPS, or keep it on loopback"
                );
            }
            let capped = crate::ops::Capped::new(
                pingora::apps::http_app::HttpServer::new_app(
                    api.counted(state.metrics.admin_api_requests.clone()),
                ),
                crate::admin_api::caps(fitted.admin),
                state.metrics.connections.admin_refused.clone(),
            );
            let capped = match &admin_api_certificates {
                Some(certificates) => capped.over_tls(certificates.endpoint(bound)),
                None => capped,
            };
            let service = Service::new("nexus-edge admin API".to_owned(), capped);
            listening.push(server.add_service(Prebound::new(service, &mut listeners, addr)));
            Some(bound)
        }
        _ => None,
    };
    let succeeding = matches!(plan, handover::Plan::Succeed { .. });
    offer_listeners(&mut server, plan, offered, &signals, &listening);

    server.add_service(background_service(
        "binding sync",
        BindingSync::new(source, state.bindings.clone(), jobs.clone()),
    ));
    if let (Some(certificates), Some((tls, _))) = (certificates, https) {
        server.add_service(background_service(
            "certificate reload",
            CertReload::new(certificates, tls.reload_interval, jobs.clone()),
        ));
    }
    if let (Some(certificates), Some(tls)) = (
        admin_api_certificates,
        s.admin_api.as_ref().and_then(|a| a.tls.as_ref()),
    ) {
        server.add_service(background_service(
            "admin API certificate reload",
            CertReload::new(certificates, tls.reload_interval, jobs.clone()),
        ));
    }
    server.add_service(background_service(
        "instance signals",
        crate::scale::IntervalClock::new(Arc::clone(&state), jobs.clone()),
    ));
    server.add_service(background_service(
        "revocation sync",
        crate::revocation::RevocationSync::new(Arc::clone(&state), jobs.clone()),
    ));
    match &state.remote_keys {
        Some(remote) => server.add_service(background_service(
            "key refresh",
            KeyRefresh::new(Arc::clone(remote), Arc::clone(&state), jobs),
        )),
        None => server.add_service(background_service(
            "key reload",
            KeyReload::new(Arc::clone(&state), s.auth.jwks_poll_interval, jobs),
        )),
    };

    tracing::info!(
        listen = %listen.unwrap_or(s.server.listen),
        admin = ?admin.or(s.server.admin_listen),
        https = ?https.map(|(_, addr)| addr),
        admin_api = ?admin_api_addr,
        "nexus-edge serving"
    );
    // The listeners accept. (A successor's predecessor tells systemd, as it lets go.)
    if !succeeding {
        crate::systemd::ready();
    }
    let abandoned = signals.abandoned();
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    tracing::info!("nexus-edge stopped");
    !abandoned.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use pingora::connectors::ConnectorOptions;

    use super::*;

    /// `[upstream] idle_connections` bounds the idle instance connections of the whole
    /// router, as the README and the open-file limit count them; Pingora's pool takes its
    /// setting per worker thread and multiplies it by the threads.
    #[test]
    fn the_idle_instance_connections_kept_are_idle_connections_whatever_the_threads() {
        for (threads, idle, want) in [(1, 4096, 4096), (4, 4096, 4096), (3, 100, 102)] {
            let mut s = nexus_config::embedded_default();
            s.server.threads = threads;
            s.upstream.idle_connections = idle;
            let pool = ConnectorOptions::from_server_conf(&server_conf(&s)).keepalive_pool_size;
            assert_eq!(pool, want, "threads {threads}, idle_connections {idle}");
        }
    }
}
