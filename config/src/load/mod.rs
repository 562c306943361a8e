//! TOML text → validated [`Settings`]. Every section is read even when an earlier one failed,
//! so one run of `nexus-edge check` lists every problem in the file.
//!
//! Each section is read by the module of its name (`server`, `tenancy`, `auth`, `upstream`,
//! `store` with its Redis endpoint in `redis`, `log`, `cors`, `tls`, `metrics`); `names`
//! checks the shapes of the names they hold, and `key_paths` finds the key a TOML syntax
//! error is about.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::defaults::embedded_default;
use crate::error::{ConfigError, Problem};
use crate::reader::{unknown_message, Problems};
use crate::settings::*;

use key_paths::duplicates_named;

mod admin_api;
mod auth;
mod cors;
mod jwks;
mod key_paths;
mod log;
mod metrics;
mod names;
mod redis;
mod revocation;
mod server;
mod store;
mod tenancy;
mod tls;
mod upstream;

const SECTIONS: [&str; 11] = [
    "server",
    "tenancy",
    "auth",
    "upstream",
    "store",
    "log",
    "cors",
    "tls",
    "metrics",
    "revocation",
    "admin_api",
];

/// Parses and validates config text; `origin` names the file in messages and anchors relative
/// paths.
pub fn parse_str(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
    let (sections, problems) = parse_sections(text, origin);
    match sections.whole() {
        Some(settings) if problems.is_empty() => Ok(settings),
        _ => Err(ConfigError::invalid(origin, problems)),
    }
}

/// The sections of a config that parsed without a problem, whatever became of the others.
/// `nexus-edge check` checks what these name (a key set, a bindings file) even when another
/// section is wrong, so that one run lists every problem there is.
#[derive(Debug, Default)]
pub struct Sections {
    /// `[server]`.
    pub server: Option<ServerSettings>,
    /// `[tenancy]`.
    pub tenancy: Option<TenancySettings>,
    /// `[auth]`.
    pub auth: Option<AuthSettings>,
    /// `[upstream]`.
    pub upstream: Option<UpstreamSettings>,
    /// `[store]`.
    pub store: Option<StoreSettings>,
    /// `[log]`.
    pub log: Option<LogSettings>,
    /// `[cors]`.
    pub cors: Option<CorsSettings>,
    /// `[tls]` (`Some(None)`: the file has no such section).
    pub tls: Option<Option<TlsListenerSettings>>,
    /// `[metrics]`.
    pub metrics: Option<MetricsSettings>,
    /// `[revocation]`.
    pub revocation: Option<RevocationSettings>,
    /// `[admin_api]` (`Some(None)`: the file has no such section).
    pub admin_api: Option<Option<AdminApiSettings>>,
    /// The files the config names that parsed, whether or not their section did: `check`
    /// checks them too, so that a bad key beside them does not hide their problems.
    pub named: NamedFiles,
}

/// Files a config names, each when its own key parsed (see [`Sections::named`]).
#[derive(Debug, Default)]
pub struct NamedFiles {
    /// `auth.jwks_file`.
    pub jwks_file: Option<std::path::PathBuf>,
    /// `store.path` of a file store.
    pub bindings_file: Option<std::path::PathBuf>,
    /// `upstream.ca_file`.
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// `log.filter`, as written.
    pub log_filter: Option<String>,
    /// `revocation.file`.
    pub revocations_file: Option<std::path::PathBuf>,
}

impl Sections {
    /// The settings, when every section parsed.
    pub fn whole(self) -> Option<Settings> {
        Some(Settings {
            server: self.server?,
            tenancy: self.tenancy?,
            auth: self.auth?,
            upstream: self.upstream?,
            store: self.store?,
            log: self.log?,
            cors: self.cors?,
            tls: self.tls?,
            metrics: self.metrics?,
            revocation: self.revocation?,
            admin_api: self.admin_api?,
        })
    }
}

/// Parses a config's text (from `origin`, which relative paths are resolved against) into
/// the sections that hold no problem, beside every problem found (in no particular order).
pub fn parse_sections(text: &str, origin: &Path) -> (Sections, Vec<Problem>) {
    let mut p = Problems::new(text);
    // Read on past a key given twice, so that the rest of the file is checked in the same
    // run; past a syntax error the reading is a guess, and only what the reader found is
    // said.
    let (root, errors) = DeTable::parse_recoverable(text);
    let mut syntax = false;
    let mut duplicates = Vec::new();
    for e in &errors {
        let at = e.span().map(|s| s.start);
        let message = e.message().trim();
        match e.span().filter(|_| message == "duplicate key") {
            Some(span) => duplicates.push(span),
            None => {
                syntax = true;
                p.push("(syntax)", at, message.to_owned());
            }
        }
    }
    if !duplicates.is_empty() {
        for (span, (key, message)) in duplicates.iter().zip(duplicates_named(text, &duplicates)) {
            p.push(key, Some(span.start), message);
        }
    }
    if syntax {
        return (Sections::default(), p.list);
    }
    let root = root.get_ref();
    for (k, _) in root.iter() {
        let name = k.get_ref().as_ref();
        if !SECTIONS.contains(&name) {
            p.push(name, Some(k.span().start), unknown_message(name, &SECTIONS));
        }
    }
    let base = origin.parent().unwrap_or(Path::new("."));
    let d = embedded_default();
    let mut header_bound = None;
    let server = server::parse(root, &d.server, base, &mut header_bound, &mut p);
    let tenancy = tenancy::parse(root, &d.tenancy, &mut p);
    let mut named = NamedFiles::default();
    let mut token_bound = None;
    let auth = auth::parse(root, &d.auth, base, &mut named, &mut token_bound, &mut p);
    let upstream = upstream::parse(root, &d.upstream, base, &mut named, &mut p);
    let store = store::parse(root, base, &mut named, &mut p);
    let log = log::parse(root, &d.log, &mut named, &mut p);
    let cors = cors::parse(root, &d.cors, tenancy.as_ref(), &mut p);
    let tls = tls::parse(root, base, server.as_ref(), &mut p);
    let metrics = metrics::parse(root, &d.metrics, &mut p);
    let revocation = revocation::parse(
        root,
        &d.revocation,
        store.as_ref(),
        base,
        &mut named,
        &mut p,
    );
    let admin_api = admin_api::parse(
        root,
        base,
        server.as_ref(),
        tls.as_ref().and_then(Option::as_ref),
        &mut p,
    );
    jwks::cache_file_problem(
        auth.as_ref(),
        jwks::OtherFiles {
            config: origin,
            upstream: upstream.as_ref(),
            store: store.as_ref(),
            revocation: revocation.as_ref(),
            tls: tls.as_ref().and_then(Option::as_ref),
        },
        &mut p,
    );
    // Whenever both bounds parsed, whatever else is wrong in their sections.
    if let (Some(header), Some(token)) = (header_bound, token_bound) {
        token_fits_in_header(root, header, token, &mut p);
    }
    let sections = Sections {
        server,
        tenancy,
        auth,
        upstream,
        store,
        log,
        cors,
        tls,
        metrics,
        revocation,
        admin_api,
        named,
    };
    (sections, p.list)
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    parse_str(&read_text(path)?, path)
}

/// Reads a config file's text: for a caller that needs the text as well as the settings
/// ([`parse_str`] it, then find lines in the same text with [`key_line`]).
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes =
        crate::files::read_regular(path, crate::files::MAX_CONFIG_BYTES).map_err(|source| {
            ConfigError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        // Say where: a stray byte in a long file is otherwise hard to find.
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: vec![crate::Problem {
                key: "(file)".to_owned(),
                line: Some(line),
                message: format!(
                    "not UTF-8 (byte {} is the first that is not)",
                    valid.len() + 1
                ),
            }],
        }
    })?;
    Ok(text)
}

/// The line where config `text` sets `key` (a dotted path such as `auth.jwks_file`), or the
/// line of the nearest enclosing section the file has when it leaves the key to its default.
/// For problems found after loading, in what a key names (a key set, a CA bundle), so that
/// they are reported like every other problem: key path and line. `key` names tables and
/// their keys only: an element (`tenancy.base_domains[0]`) or a key inside an array of
/// tables (`[[auth.hmac_keys]]`) is not looked into, and gives its enclosing section's line.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    // Read on past a key given twice, as the check is (after a syntax error nothing is
    // checked further, so nothing asks).
    let (root, _) = DeTable::parse_recoverable(text);
    let mut table = root.get_ref();
    let mut at = None;
    for part in key.split('.') {
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part) else {
            break;
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                at = Some(k.span().start);
                table = t;
            }
            _ => {
                at = Some(v.span().start);
                break;
            }
        }
    }
    at.map(|o| Problems::new(text).line_of(o))
}

/// Room a request's header needs beside its token: the request line (`GET / HTTP/1.1` and
/// its CRLF, 16 bytes with the shortest path), a `Host` header naming a tenant (`Host: `, the
/// name, CRLF), the token's own framing (`Authorization: Bearer ` and CRLF, 24 bytes, or
/// `Cookie: ` with the cookie's name, `=` and CRLF) and the empty line that ends the header
/// (2 bytes). The least a request with a token takes; a real one takes more (a longer path,
/// `User-Agent`, `Accept`).
const TOKEN_HEADER_OVERHEAD: usize = 128;

/// A token as long as `auth.max_token_bytes` allows must fit in a request header as long as
/// `server.max_request_header_bytes` allows, beside the request line and the header's
/// framing, or the longest tokens are refused by the header bound with a 431 no one would
/// trace back to the token.
fn token_fits_in_header(
    root: &DeTable<'_>,
    max_request_header_bytes: usize,
    max_token_bytes: usize,
    p: &mut Problems<'_>,
) {
    if max_token_bytes + TOKEN_HEADER_OVERHEAD <= max_request_header_bytes {
        return;
    }
    // The line of whichever of the two the file sets (the token bound's first).
    let at = [
        ("auth", "max_token_bytes"),
        ("server", "max_request_header_bytes"),
    ]
    .into_iter()
    .find_map(|(section, key)| match root.get(section)?.get_ref() {
        DeValue::Table(t) => t.get(key).map(|v| v.span().start),
        _ => None,
    });
    p.push(
        "auth.max_token_bytes",
        at,
        format!(
            "{max_token_bytes} leaves less than {TOKEN_HEADER_OVERHEAD} bytes of \
             server.max_request_header_bytes ({max_request_header_bytes}) for the request \
             line, Host and the Authorization or Cookie framing: a token that long could never \
             arrive; lower it or raise the header bound"
        ),
    );
}

/// Why the ops listener cannot listen at `admin_listen` beside the router at `listen` (named
/// `listen_named` in the message), if it cannot: one address with port 0 (the router tells
/// its listeners apart by their configured addresses), or a port one of them takes on the
/// other's addresses too. Also checked by `serve` for `--listen` and `--admin-listen`, which
/// the file's checks do not see.
pub fn listener_clash(
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
    listen_named: &str,
) -> Option<String> {
    if admin_listen == listen && listen.port() == 0 {
        Some(format!(
            "{listen} is {listen_named}'s address too: give one of them a port, or another \
             address"
        ))
    } else if same_port(admin_listen, listen) {
        Some(format!(
            "{listen} ({listen_named}) already takes this port on these addresses"
        ))
    } else {
        None
    }
}

/// A listener section's `listen` (`[tls]`, `[admin_api]`): required, said with `what` it is
/// the address of and an `example`, and on no port the `others` (address, key) take.
pub(super) fn section_listen(
    s: &mut crate::reader::Section<'_, '_>,
    what: &str,
    example: &str,
    others: &[Option<(std::net::SocketAddr, &str)>],
    p: &mut Problems<'_>,
) -> Option<std::net::SocketAddr> {
    let key = s.key("listen");
    let listen_at = s.raw("listen").map(|v| v.span().start);
    let listen = s.socket_addr("listen", p);
    if listen_at.is_none() {
        p.push(
            key.clone(),
            None,
            format!(
                "is required in [{}]: the address of {what} (e.g. \"{example}\")",
                s.name
            ),
        );
    }
    let clash = listen.and_then(|listen| {
        others
            .iter()
            .flatten()
            .find_map(|&(other, named)| listener_clash(other, listen, named))
    });
    if let Some(clash) = clash {
        p.push(key, listen_at, clash);
    }
    listen
}

/// Whether two listeners would take one port, as Linux binds them (std sets SO_REUSEADDR,
/// which lets no second socket bind beside a listening one, and leaves IPV6_V6ONLY off): the
/// same port (not 0, which the system picks) on the same address, an IPv4-mapped IPv6
/// address (`::ffff:127.0.0.1`) being its IPv4 address; or where `0.0.0.0` (every IPv4
/// address) meets an IPv4 address, or `::` (every address, IPv4 too) meets any.
fn same_port(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let (a_ip, b_ip) = (a.ip().to_canonical(), b.ip().to_canonical());
    let takes = |wide: std::net::IpAddr, other: std::net::IpAddr| {
        wide.is_unspecified() && (wide.is_ipv6() || other.is_ipv4())
    };
    a.port() == b.port()
        && a.port() != 0
        && (a_ip == b_ip || takes(a_ip, b_ip) || takes(b_ip, a_ip))
}

const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

/// Why environment variable `name` gives no value.
fn env_problem(name: &str, e: &std::env::VarError) -> String {
    // What is no variable's name may be the secret itself, pasted in the wrong place: not
    // repeated into the error (and so the log).
    let is_name = name
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    match e {
        std::env::VarError::NotPresent if !is_name => format!(
            "is not the name of an environment variable (letters, digits and `_`; its {} \
             characters are not shown, in case they are the secret itself: put that in the \
             environment and name the variable here)",
            name.chars().count()
        ),
        std::env::VarError::NotPresent => format!("environment variable {name} is not set"),
        std::env::VarError::NotUnicode(_) => {
            format!("environment variable {name} is set, but not to UTF-8 text")
        }
    }
}

/// What a PEM file named in the config must hold.
#[derive(Clone, Copy)]
enum Pem {
    /// At least one certificate: a CA bundle (Pingora's upstream connector panics at start on
    /// an unreadable one, and an empty one would fail every TLS connection later), or a client
    /// certificate chain.
    Certificate,
    /// An unencrypted private key (PKCS#8, PKCS#1 or SEC1), which is what redis-rs reads.
    PrivateKey,
}

impl Pem {
    fn holds(self, label: &str) -> bool {
        match self {
            Pem::Certificate => label == "CERTIFICATE",
            Pem::PrivateKey => {
                matches!(label, "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY")
            }
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            Pem::Certificate => "no PEM certificate (-----BEGIN CERTIFICATE-----)",
            Pem::PrivateKey => "no unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)",
        }
    }
}

/// A readable regular file holding `what`, checked with the rest of the config so that the
/// problem is named by its key and file, not found at start-up under another name.
fn pem_file(key: &str, path: Option<PathBuf>, what: Pem, p: &mut Problems<'_>) -> Option<PathBuf> {
    let path = path?;
    match crate::files::read_regular(&path, crate::files::MAX_CONFIG_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let found = text.lines().any(|l| {
                l.trim()
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                    .is_some_and(|label| what.holds(label))
            });
            if found {
                return Some(path);
            }
            p.push(
                key,
                None,
                format!("{} holds {}", path.display(), what.wanted()),
            );
            None
        }
        Err(e) => {
            p.push(key, None, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}
