//! `nexus-edge check`: validate a config file.

use std::path::Path;
use std::process::ExitCode;

use nexus_certs::Validity;

pub(super) fn run(config: Option<&Path>) -> ExitCode {
    let Some(path) = config else {
        eprintln!("nexus-edge check: no config file given (--config FILE or NEXUS_EDGE_CONFIG)");
        return ExitCode::from(2);
    };
    // Read once: the lines of problems found later are looked up in this same text.
    let text = match nexus_config::read_text(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // The sections that parsed are checked further even when another did not, so that one
    // run lists every problem there is.
    let (sections, mut problems) = nexus_config::parse_sections(&text, path);
    // What the keys name (a key set, a CA bundle, a bindings file) is part of a valid config:
    // a key set that cannot be loaded would start a router that rejects every login. Every
    // such problem is listed, each at its key's line, as the file's own problems are (a list
    // entry's, `key[i]`, at the list's).
    let mut problem = |key: &str, message: String| {
        problems.push(nexus_config::Problem {
            key: key.to_owned(),
            line: nexus_config::key_line(&text, key.split('[').next().unwrap_or(key)),
            message,
        })
    };
    // With `[auth]` wrong elsewhere, its key set is still loaded alone (no HMAC secrets:
    // those are part of what failed), so its own problems show in this run too.
    let alone = match (&sections.auth, &sections.named.jwks_file) {
        (None, Some(file)) => Some(nexus_config::AuthSettings {
            jwks: nexus_config::JwksSource::File(file.clone()),
            hmac_keys: Vec::new(),
            ..nexus_config::embedded_default().auth
        }),
        _ => None,
    };
    // A key set at auth.jwks_url that could not be fetched now (said, not refused).
    let mut unfetched = false;
    let keys = match sections
        .auth
        .as_ref()
        .or(alone.as_ref())
        .map(crate::auth::Authenticator::new)
    {
        None => None,
        Some(Ok(auth)) => {
            if let Some(nexus_config::JwksSource::Url(remote)) =
                sections.auth.as_ref().map(|a| &a.jwks)
            {
                match fetch_for_check(remote, &auth) {
                    Ok(()) => {}
                    Err(FetchProblem::CaBundle(e)) => problem("auth.jwks_ca_file", e),
                    Err(FetchProblem::Refused(e)) => problem("auth.jwks_url", e),
                    Err(FetchProblem::Unreachable(e)) => {
                        unfetched = true;
                        eprintln!(
                            "{}: warning: auth.jwks_url: the key set could not be fetched now \
                             ({e}); a router starts with auth.jwks_cache_file's (from this URL, \
                             not stale), or with no keys (not ready) until a fetch succeeds",
                            path.display()
                        );
                    }
                }
            }
            let source = match sections.auth.as_ref().map(|a| &a.jwks) {
                Some(nexus_config::JwksSource::Url(_)) => "auth.jwks_url",
                _ => "auth.jwks_file",
            };
            // Said, not refused: a provider's set may hold keys for other uses.
            for s in auth.skipped_keys() {
                eprintln!("{}: warning: {source}: key left out: {s}", path.display());
            }
            for k in auth.rs256_by_default() {
                eprintln!(
                    "{}: note: {source}: {k} has no alg, so it verifies RS256 only",
                    path.display()
                );
            }
            let gaps = auth.issuer_key_gaps();
            for kid in &gaps.unowned {
                eprintln!(
                    "{}: warning: auth.issuer_keys: key {kid:?} is listed under no issuer: \
                     every token it signs is refused",
                    path.display()
                );
            }
            if gaps.without_kid {
                eprintln!(
                    "{}: warning: auth.issuer_keys: the key set holds a key without a kid, \
                     which is no issuer's: every token it signs is refused",
                    path.display()
                );
            }
            for (issuer, kid) in &gaps.missing {
                eprintln!(
                    "{}: warning: auth.issuer_keys: {issuer:?} lists key {kid:?}, which the \
                     key set does not hold (a key yet to be published, or a typo)",
                    path.display()
                );
            }
            Some(auth.key_count())
        }
        Some(Err(e)) => {
            let key = match e {
                crate::auth::AuthSetupError::HmacKidTaken { .. } => "auth.hmac_keys",
                _ => "auth.jwks_file",
            };
            problem(key, e.to_string());
            None
        }
    };
    if let Some(auth) = &sections.auth {
        auth_warnings(path, auth);
        for (i, why) in crate::route::check_token_headers(&auth.token_headers) {
            problem(&format!("auth.token_headers[{i}]"), why);
        }
    }
    if let Some(tenancy) = &sections.tenancy {
        for w in public_path_warnings(tenancy) {
            eprintln!("{}: warning: tenancy.public_paths: {w}", path.display());
        }
        if tenancy.api_prefix == "/" {
            eprintln!(
                "{}: warning: tenancy.api_prefix: \"/\" sends every request of a tenant with \
                 an api_url there: its instance_url gets none",
                path.display()
            );
        }
    }
    // Both even when their sections are wrong elsewhere, as for the key set.
    if let Some(Err(e)) = sections
        .named
        .upstream_ca_file
        .as_deref()
        .map(crate::server::check_ca_bundle)
    {
        problem("upstream.ca_file", e);
    }
    // Every certificate file, as the HTTPS listener would read it at start: a file it would
    // pass over is a problem here.
    let mut read_certificates = |setting: &'static str, sources: &[std::path::PathBuf]| {
        let mut files = nexus_certs::CertFiles::new(sources.to_vec());
        let read = files.reload();
        for e in read.new_problems {
            problem(setting, e.to_string());
        }
        for cert in &read.loaded {
            expiry_warning(path, setting, cert, nexus_certs::unix_now());
        }
        let set = files.set();
        if set.is_empty() {
            problem(setting, "no certificate could be loaded".to_owned());
        }
        set
    };
    let certs = sections
        .tls
        .as_ref()
        .and_then(Option::as_ref)
        .map(|tls| read_certificates("tls.certificates", &tls.certificates));
    if let Some(Some(tls)) = sections
        .admin_api
        .as_ref()
        .and_then(Option::as_ref)
        .map(|a| a.tls.as_ref())
    {
        read_certificates("admin_api.certificates", &tls.certificates);
    }
    if let Some(Err(e)) = sections
        .named
        .log_filter
        .as_deref()
        .map(crate::logging::check_filter)
    {
        problem("log.filter", e);
    }
    // As for the key set: a file store's bindings file is checked even when `[store]` is
    // wrong elsewhere.
    let file_store = |path: &std::path::PathBuf| {
        nexus_config::StoreSettings::File(nexus_config::FileStoreSettings {
            path: Some(path.clone()),
            poll_interval: std::time::Duration::from_secs(1),
        })
    };
    // The custom domains a base domain covers are checked against the base domains given,
    // when `[tenancy]` is readable.
    let tenancy = sections.tenancy.as_ref();
    let cors = sections.cors.as_ref();
    let metrics = sections.metrics.as_ref();
    if sections.store.is_none() {
        if let Some(Err(e)) =
            sections.named.bindings_file.as_ref().map(|f| {
                check_bindings_file(&file_store(f), tenancy, cors, certs.as_ref(), metrics)
            })
        {
            problem("store.path", e);
        }
    }
    if let Some(store) = &sections.store {
        if let Err(e) = check_bindings_file(store, tenancy, cors, certs.as_ref(), metrics) {
            problem("store.path", e);
        }
        // A snapshot that could never be written would leave a replica nothing to start
        // from while Redis is down, with only an error per write in the log to tell.
        if let nexus_config::StoreSettings::Redis(r) = store {
            if let Some(Err(e)) = r.snapshot_path.as_deref().map(check_snapshot_path) {
                problem("store.snapshot_path", e);
            }
        }
        // What the Redis store's client is built from (its URL as redis-rs reads it, TLS
        // material, Sentinel credentials), as `serve` builds it; no connection is made.
        if let (nexus_config::StoreSettings::Redis(r), Err(e)) =
            (store, crate::store::Store::open(store))
        {
            let key = e.key.unwrap_or(match r.endpoint {
                nexus_config::RedisEndpointSettings::Url(_) => "store.url",
                nexus_config::RedisEndpointSettings::Sentinel(_) => "store.sentinel",
            });
            problem(key, e.message);
        }
    }
    // A revocations file a router would refuse to start on.
    if let Some(Err(e)) = sections
        .named
        .revocations_file
        .as_deref()
        .map(nexus_binding_store::revocations::file::read)
    {
        problem("revocation.file", e.to_string());
    }
    if let (Some(server), Some(store)) = (&sections.server, &sections.store) {
        if let Some((key, message)) = nexus_config::serving_problem(server, store) {
            problem(key, message);
        }
    }
    if let Some(socket) = sections
        .server
        .as_ref()
        .and_then(|s| s.upgrade_socket.as_deref())
    {
        if let Err(e) = check_upgrade_socket(socket) {
            problem("server.upgrade_socket", e);
        }
    }
    // A tokens file the admin API could not use refuses every request.
    if let Some(Some(api)) = &sections.admin_api {
        match crate::admin_api::tokens::Tokens::read(&api.tokens_file) {
            Ok(tokens) if tokens.is_empty() => eprintln!(
                "{}: warning: admin_api.tokens_file: {} lists no token: every admin API \
                 request is refused (`nexus-edge admin-token --name NAME --append FILE` adds one)",
                path.display(),
                api.tokens_file.display()
            ),
            Ok(_) => {}
            Err(e) => problem("admin_api.tokens_file", e.to_string()),
        }
        if api.tls.is_none() && !api.listen.ip().to_canonical().is_loopback() {
            eprintln!(
                "{}: warning: admin_api.listen: {} is beyond this host, over plain HTTP: the \
                 bearer tokens cross the network in the clear (admin_api.certificates serves \
                 it over HTTPS)",
                path.display(),
                api.listen
            );
        }
    }
    match keys {
        Some(_) if problems.is_empty() && unfetched => {
            outln!(
                "{}: ok (the key set at auth.jwks_url not fetched now: see the warning)",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Some(n) if problems.is_empty() => {
            outln!(
                "{}: ok ({n} verification key{})",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", nexus_config::ConfigError::invalid(path, problems));
            ExitCode::FAILURE
        }
    }
}

/// The tenants' names (subdomains under each base domain, custom domains) that no HTTPS
/// certificate covers: a client asking for one gets no handshake. Said as a count and a
/// few of the names, for a file of thousands.
fn uncovered_warnings(
    file: &Path,
    certs: &nexus_certs::CertSet,
    bases: &[String],
    bindings: &[std::sync::Arc<nexus_binding_store::Binding>],
) {
    let subdomains = bindings.iter().flat_map(|b| {
        bases
            .iter()
            .map(move |base| format!("{}.{base}", b.tenant_id.as_str()))
    });
    let domains = bindings
        .iter()
        .flat_map(|b| b.domains.iter().map(|d| d.as_str().to_owned()));
    for (what, names) in [
        ("tenant subdomains", subdomains.collect::<Vec<_>>()),
        ("custom domains", domains.collect()),
    ] {
        let missing: Vec<&String> = names.iter().filter(|n| certs.find(n).is_none()).collect();
        if missing.is_empty() {
            continue;
        }
        let shown: Vec<&str> = missing.iter().take(5).map(|n| n.as_str()).collect();
        let more = if missing.len() > shown.len() {
            format!(", and {} more", missing.len() - shown.len())
        } else {
            String::new()
        };
        eprintln!(
            "{}: warning: tls.certificates: no certificate covers {} of the {what} bound here \
             ({}{more}): an HTTPS client asking for one gets no handshake",
            file.display(),
            missing.len(),
            shown.join(", ")
        );
    }
}

/// How long before its `notAfter` a certificate is said to expire soon: renewals (ACME
/// clients renew 30 days before) that have not happened by then have failed.
const EXPIRES_SOON: i64 = 14 * 24 * 3600;

/// A certificate the HTTPS listener would serve that clients refuse, or soon will: expired,
/// not valid yet, or expiring within [`EXPIRES_SOON`]. Warnings: it still serves (an expired
/// certificate is the tenant's HTTPS cut off either way, and renewing it is the fix).
fn expiry_warning(config: &Path, setting: &str, cert: &nexus_certs::LoadedCert, now: i64) {
    let Some(state) = out_of_date(cert.not_before, cert.not_after, now) else {
        return;
    };
    eprintln!(
        "{}: warning: {setting}: {} {state}: clients refuse it",
        config.display(),
        cert.path.display()
    );
}

/// What is wrong with a certificate valid from `not_before` to `not_after` (Unix seconds)
/// at `now`, if anything.
fn out_of_date(not_before: i64, not_after: i64, now: i64) -> Option<String> {
    let days = |secs: i64| secs / (24 * 3600);
    match nexus_certs::validity(not_before, not_after, now) {
        Validity::Expired => Some(format!("expired {} days ago", days(now - not_after))),
        Validity::NotYet => Some(format!(
            "is not valid for {} more days",
            days(not_before - now)
        )),
        Validity::Valid if not_after - now < EXPIRES_SOON => {
            Some(format!("expires in {} days", days(not_after - now)))
        }
        Validity::Valid => None,
    }
}

/// Instances the bindings file names past `[metrics] max_instances`: once each has had a
/// request, those past the budget share one set of scale-trigger series, and their
/// triggers are no longer their own.
fn budget_warning(
    file: &Path,
    metrics: &nexus_config::MetricsSettings,
    bindings: &[std::sync::Arc<nexus_binding_store::Binding>],
) {
    let instances: std::collections::HashSet<&str> =
        bindings.iter().map(|b| b.instance_id.as_str()).collect();
    if instances.len() > metrics.max_instances {
        eprintln!(
            "{}: warning: metrics.max_instances: the bindings name {} instances, {} more than \
             the {} that get scale-trigger series of their own; the rest would share \
             instance_id=\"(over budget)\"",
            file.display(),
            instances.len(),
            instances.len() - metrics.max_instances,
            metrics.max_instances
        );
    }
}

/// What is valid in `[auth]` but worth a second look.
fn auth_warnings(path: &Path, auth: &nexus_config::AuthSettings) {
    if auth.issuers.is_empty() {
        eprintln!(
            "{}: warning: auth.issuers: empty, so the iss claim is not checked: a token of any \
             issuer whose keys the JWKS holds, or of none, is accepted; list the issuer",
            path.display()
        );
    }
    if auth.audiences.is_empty() {
        eprintln!(
            "{}: warning: auth.audiences: empty, so every token that carries an aud claim is \
             refused (RFC 7519 §4.1.3); list this service's audience",
            path.display()
        );
    }
}

/// The upgrade socket is bound at start, in a directory that must be there already, at a
/// path that is free or holds a socket (a dead router's is replaced).
fn check_upgrade_socket(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "{}: {} is not a directory: the socket could not be bound",
            path.display(),
            dir.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => Err(format!(
            "{}: exists and is not a socket (the router does not remove it)",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// A snapshot path must name a file, not a directory (a missing directory is made when the
/// first snapshot is written).
fn check_snapshot_path(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(format!("{}: is a directory, not a file", path.display()));
    }
    // Missing directories are made at the first write; one that is a file never can be.
    let mut dir = path.parent();
    while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(format!(
                    "{}: {} is not a directory, so the snapshot could never be written",
                    path.display(),
                    d.display()
                ))
            }
            Err(_) => dir = d.parent(),
        }
    }
    Ok(())
}

/// The file store's bindings file must exist and be a bindings document, as `serve` needs it
/// to start; records it would refuse are warned about.
fn check_bindings_file(
    store: &nexus_config::StoreSettings,
    tenancy: Option<&nexus_config::TenancySettings>,
    cors: Option<&nexus_config::CorsSettings>,
    certs: Option<&nexus_certs::CertSet>,
    metrics: Option<&nexus_config::MetricsSettings>,
) -> Result<(), String> {
    let base_domains = tenancy.map(|t| t.base_domains.as_slice());
    let nexus_config::StoreSettings::File(f) = store else {
        return Ok(());
    };
    let Some(file) = &f.path else { return Ok(()) };
    let bytes = nexus_config::files::read_regular(
        file,
        nexus_binding_store::records::MAX_BINDINGS_FILE_BYTES,
    )
    .map_err(|e| format!("{}: {e}", file.display()))?;
    let parsed = nexus_binding_store::records::parse_records(&bytes)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    for p in &parsed.problems {
        eprintln!("{}: warning: binding record refused: {p}", file.display());
    }
    // As `serve` refuses to start on it: a ready router that routes no tenant.
    if parsed.bindings.is_empty() && !parsed.problems.is_empty() {
        return Err(format!(
            "{}: none of its {} records is valid, so `serve` would not start on it",
            file.display(),
            parsed.problems.len()
        ));
    }
    // The admin commands write each change at the next revision: at the top one, none.
    let highest = parsed
        .bindings
        .iter()
        .map(|b| b.revision.get())
        .chain(parsed.revision)
        .max();
    if highest == Some(u64::MAX) {
        eprintln!(
            "{}: warning: a revision is {} (u64::MAX): `nexus-edge tenant` refuses every write \
             to this file until the revisions are brought down by hand",
            file.display(),
            u64::MAX
        );
    }
    if let (Some(certs), Some(bases)) = (certs, base_domains) {
        uncovered_warnings(file, certs, bases, &parsed.bindings);
    }
    if let Some(metrics) = metrics {
        budget_warning(file, metrics, &parsed.bindings);
    }
    for (domain, tenants) in nexus_binding_store::records::contested_domains(&parsed.bindings) {
        let tenants: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        eprintln!(
            "{}: warning: domain {domain} is claimed by more than one record ({}): a router \
             already serving one of them keeps it there and refuses the others' records; one \
             starting serves it to none of them",
            file.display(),
            tenants.join(", ")
        );
    }
    // The operator's own pages, at a name a binding has come to name: the tenant's instance
    // serves them, and the router takes them for that tenant's pages (see `crate::origin`).
    if let Some(tenancy) = tenancy {
        let (table, _) = nexus_binding_store::BindingTable::from_bindings(
            parsed.bindings.iter().map(std::sync::Arc::clone),
        );
        let listed = match cors.and_then(|c| c.origins.as_ref()) {
            Some(nexus_config::CorsOrigins::Listed { origins, .. }) => origins.as_slice(),
            _ => &[],
        };
        let named = (tenancy.trusted_origins.iter())
            .map(|o| ("tenancy.trusted_origins", o))
            .chain(listed.iter().map(|o| ("cors.allowed_origins", o)));
        for (key, origin) in named {
            if let Some(owner) = crate::origin::bound_owner(origin, tenancy, &table) {
                eprintln!(
                    "{}: warning: {key}: {origin} is a page of tenant {owner}, which is bound: \
                     its instance serves that name, so the router takes it for that tenant's \
                     page, not the operator's",
                    file.display()
                );
            }
        }
    }
    // A base domain added over a custom domain makes that name a tenant's subdomain: routed
    // by name, to another tenant if one has that id. `tenant put` refuses such a claim; a
    // new base domain can make one of a claim made before.
    if let Some(bases) = base_domains {
        let base_set: std::collections::HashSet<&str> = bases.iter().map(String::as_str).collect();
        for b in &parsed.bindings {
            for name in lost_subdomains(b, &base_set) {
                eprintln!(
                    "{}: warning: binding {}: {name} is a base domain, so it never reaches this \
                     tenant (its subdomains are taken as other tenants' under that base)",
                    file.display(),
                    b.tenant_id.as_str()
                );
            }
            for (domain, why) in unrouted_domains(b, bases) {
                eprintln!(
                    "{}: warning: binding {}: domain {domain}: {why}, so it never reaches \
                     this tenant by that name",
                    file.display(),
                    b.tenant_id.as_str()
                );
            }
        }
    }
    Ok(())
}

/// The subdomains of `binding`'s tenant that are base domains themselves (`b.example.com`
/// for tenant `b` when `example.com` and `b.example.com` are both base domains): no tenant's,
/// as a base domain is.
fn lost_subdomains(
    binding: &nexus_binding_store::Binding,
    base_domains: &std::collections::HashSet<&str>,
) -> Vec<String> {
    // With a valid tenant id in front, a base's subdomain is reserved when it is a base
    // itself (`crate::host::resolve_host`): looked up, not resolved against every base, which
    // made `check` quadratic in the base domains.
    let mut lost: Vec<String> = base_domains
        .iter()
        .map(|base| format!("{}.{base}", binding.tenant_id.as_str()))
        .filter(|name| base_domains.contains(name.as_str()))
        .collect();
    lost.sort();
    lost
}

/// The custom domains of `binding` that a base domain covers and that the router sends
/// elsewhere: another tenant's subdomain (routed by name), a name in another tenant's
/// namespace, or a base domain itself.
fn unrouted_domains(
    binding: &nexus_binding_store::Binding,
    base_domains: &[String],
) -> Vec<(String, String)> {
    use crate::host::{resolve_host, HostTarget};
    let tenant = binding.tenant_id.as_str();
    let mut out = Vec::new();
    for domain in &binding.domains {
        let why =
            match resolve_host(domain.as_str(), base_domains) {
                Ok(HostTarget::CustomDomain(_)) => continue,
                Ok(
                    HostTarget::Subdomain(owner) | HostTarget::UnderTenant { tenant: owner, .. },
                ) if owner.as_str() == tenant => continue,
                Ok(HostTarget::Subdomain(owner)) => {
                    format!(
                        "a base domain makes it tenant {}'s subdomain",
                        owner.as_str()
                    )
                }
                Ok(HostTarget::UnderTenant { tenant: owner, .. }) => {
                    format!("it is under tenant {}'s subdomain", owner.as_str())
                }
                Ok(HostTarget::Reserved) => "it is a base domain, no tenant's".to_owned(),
                Err(e) => e.to_string(),
            };
        out.push((domain.as_str().to_owned(), why));
    }
    out
}

/// Public paths that make more public than a reader of the config may think: valid, but
/// worth a second look.
fn public_path_warnings(t: &nexus_config::TenancySettings) -> Vec<String> {
    let mut out = Vec::new();
    for p in &t.public_paths {
        if p == "/" {
            out.push(
                "\"/\" makes every path public: no request to any tenant needs a token".to_owned(),
            );
        } else if crate::path::has_prefix(&t.api_prefix, p) {
            out.push(format!(
                "{p:?} covers the API prefix {:?}: API requests need no token",
                t.api_prefix
            ));
        }
    }
    out
}

/// Why `check` could not take the key set `auth.jwks_url` serves.
enum FetchProblem {
    /// `auth.jwks_ca_file` cannot be used.
    CaBundle(String),
    /// The provider did not answer with a key set: said, not refused (it may be away now).
    Unreachable(String),
    /// It answered with a key set the router refuses.
    Refused(String),
}

/// Fetches the key set once into `auth`, as a router would at start.
fn fetch_for_check(
    remote: &nexus_config::RemoteJwks,
    auth: &crate::auth::Authenticator,
) -> Result<(), FetchProblem> {
    use crate::auth::remote::Unfetched;
    if let Some(ca) = &remote.ca_file {
        crate::server::check_ca_bundle(ca).map_err(FetchProblem::CaBundle)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| FetchProblem::Unreachable(e.to_string()))?;
    let fetcher =
        crate::auth::remote::RemoteKeys::new(remote).map_err(FetchProblem::Unreachable)?;
    let fetched = rt.block_on(fetcher.fetch_once(auth));
    // Not waited for: a name lookup that timed out may still hold a blocking thread.
    rt.shutdown_background();
    fetched.map_err(|e| match e {
        Unfetched::Unreachable(why) => FetchProblem::Unreachable(why.to_string()),
        Unfetched::Refused(why) => FetchProblem::Refused(why.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_out_of_date_or_nearly_are_said_so() {
        const DAY: i64 = 24 * 3600;
        let now = 1_800_000_000;
        for (not_before, not_after, want) in [
            (now - 90 * DAY, now + 60 * DAY, None),
            (now - 90 * DAY, now + 14 * DAY, None),
            (now - 90 * DAY, now + 5 * DAY, Some("expires in 5 days")),
            (now - 90 * DAY, now - 3 * DAY, Some("expired 3 days ago")),
            (
                now + 2 * DAY,
                now + 92 * DAY,
                Some("is not valid for 2 more days"),
            ),
        ] {
            assert_eq!(
                out_of_date(not_before, not_after, now).as_deref(),
                want,
                "{not_before}..{not_after}"
            );
        }
    }
}
