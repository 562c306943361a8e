//! TOML text → validated [`Settings`]. Every section is read even when an earlier one failed,
//! so one run of `nexus-edge check` lists every problem in the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use crate::defaults::embedded_default;
use crate::error::{ConfigError, Problem};
use crate::reader::{unknown_message, Problems, Section};
use crate::settings::*;
use crate::IpNet;

const SECTIONS: [&str; 6] = ["server", "tenancy", "auth", "upstream", "store", "log"];

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
        })
    }
}

/// The key path and message for TOML's "duplicate key" at `span`: a key set twice in its
/// table (`server.threads`), or a table declared twice (`[auth]`). The path is the one the
/// TOML parser reads there (see [`KeyPaths`]), whatever strings, inline tables or dotted keys
/// lie between the key and its table's header.
fn duplicate_named(text: &str, span: &std::ops::Range<usize>) -> (String, String) {
    let mut paths = KeyPaths::new(text, span.start);
    let tokens = toml_parser::Source::new(text).lex().into_vec();
    let mut guard = toml_parser::parser::RecursionGuard::new(&mut paths, 128);
    toml_parser::parser::parse_document(&tokens, &mut guard, &mut ());
    match paths.found {
        Some((table, true)) => {
            let message = format!("duplicate table: [{table}] twice; merge the two");
            (table, message)
        }
        Some((key, false)) => (key, "duplicate key: set twice; keep one".to_owned()),
        None => (
            text.get(span.clone())
                .unwrap_or("")
                .trim_matches(['"', '\''])
                .to_owned(),
            "duplicate key: set twice; keep one".to_owned(),
        ),
    }
}

/// Follows the TOML parser's events to the key that starts at byte `target`, and names it by
/// its dotted path (`auth.hmac_keys[1].kid`).
struct KeyPaths<'t> {
    text: &'t str,
    target: usize,
    /// The target's path, and whether it is in a `[table]` header.
    found: Option<(String, bool)>,
    /// The keys of the `[header]` being read.
    header: Option<Vec<String>>,
    /// How many `[[path]]` tables each path has had: the index of the next.
    array_tables: std::collections::HashMap<String, usize>,
    /// Tables and arrays open, innermost last; the first is the `[table]` of the last header.
    open: Vec<Open>,
}

enum Open {
    /// A table at `path`, with the keys of the dotted key being read, then the path of the
    /// value they name.
    Table {
        path: String,
        keys: Vec<String>,
        value: String,
    },
    /// An array at `path`, at its `index`th value.
    Array { path: String, index: usize },
}

fn join(path: &str, keys: &[String]) -> String {
    let keys = keys.join(".");
    match (path.is_empty(), keys.is_empty()) {
        (true, _) => keys,
        (_, true) => path.to_owned(),
        _ => format!("{path}.{keys}"),
    }
}

impl<'t> KeyPaths<'t> {
    fn new(text: &'t str, target: usize) -> Self {
        Self {
            text,
            target,
            found: None,
            header: None,
            array_tables: std::collections::HashMap::new(),
            open: vec![Open::Table {
                path: String::new(),
                keys: Vec::new(),
                value: String::new(),
            }],
        }
    }

    /// The path of the value that begins now: the value of a key, or an array's next.
    fn value_path(&self) -> String {
        match self.open.last() {
            Some(Open::Table { value, .. }) => value.clone(),
            Some(Open::Array { path, index }) => format!("{path}[{index}]"),
            None => String::new(),
        }
    }

    fn header_open(&mut self) {
        self.header = Some(Vec::new());
    }

    /// A header read: its table is the one keys are in now. Each array of tables on its path
    /// is at the last table it has (`[[a]]`, `[[a.b]]`: `a[0].b[0]`).
    fn header_close(&mut self, array: bool) {
        let keys = self.header.take().unwrap_or_default();
        let mut path = String::new();
        for (i, k) in keys.iter().enumerate() {
            path = join(&path, std::slice::from_ref(k));
            if array && i + 1 == keys.len() {
                let n = self.array_tables.entry(path.clone()).or_insert(0);
                path = format!("{path}[{n}]");
                *n += 1;
            } else if let Some(n) = self.array_tables.get(&path) {
                path = format!("{path}[{}]", n - 1);
            }
        }
        self.open = vec![Open::Table {
            path,
            keys: Vec::new(),
            value: String::new(),
        }];
    }

    fn close(&mut self) {
        if self.open.len() > 1 {
            self.open.pop();
        }
    }
}

impl toml_parser::parser::EventReceiver for KeyPaths<'_> {
    fn std_table_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_open();
    }

    fn std_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_close(false);
    }

    fn array_table_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_open();
    }

    fn array_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_close(true);
    }

    fn inline_table_open(
        &mut self,
        _: toml_parser::Span,
        _: &mut dyn toml_parser::ErrorSink,
    ) -> bool {
        let path = self.value_path();
        self.open.push(Open::Table {
            path,
            keys: Vec::new(),
            value: String::new(),
        });
        true
    }

    fn inline_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.close();
    }

    fn array_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) -> bool {
        let path = self.value_path();
        self.open.push(Open::Array { path, index: 0 });
        true
    }

    fn array_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.close();
    }

    fn simple_key(
        &mut self,
        span: toml_parser::Span,
        encoding: Option<toml_parser::decoder::Encoding>,
        _: &mut dyn toml_parser::ErrorSink,
    ) {
        let raw = self.text.get(span.start()..span.end()).unwrap_or("");
        let mut name = String::new();
        toml_parser::Raw::new_unchecked(raw, encoding, span).decode_key(&mut name, &mut ());
        let is_target = span.start() == self.target;
        if let Some(header) = &mut self.header {
            header.push(name);
            if is_target {
                self.found = Some((join("", header), true));
            }
        } else if let Some(Open::Table { path, keys, .. }) = self.open.last_mut() {
            keys.push(name);
            if is_target {
                self.found = Some((join(path, keys), false));
            }
        }
    }

    fn key_val_sep(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        if let Some(Open::Table { path, keys, value }) = self.open.last_mut() {
            *value = join(path, keys);
            keys.clear();
        }
    }

    fn value_sep(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        if let Some(Open::Array { index, .. }) = self.open.last_mut() {
            *index += 1;
        }
    }
}

/// Parses a config's text (from `origin`, which relative paths are resolved against) into
/// the sections that hold no problem, beside every problem found (in no particular order).
pub fn parse_sections(text: &str, origin: &Path) -> (Sections, Vec<Problem>) {
    let mut p = Problems::new(text);
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let at = e.span().map(|s| s.start);
            let message = e.message().trim();
            match e.span().filter(|_| message == "duplicate key") {
                Some(span) => {
                    let (key, message) = duplicate_named(text, &span);
                    p.push(key, Some(span.start), message);
                }
                None => p.push("(syntax)", at, message.to_owned()),
            }
            return (Sections::default(), p.list);
        }
    };
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
    let server = server(root, &d.server, &mut header_bound, &mut p);
    let tenancy = tenancy(root, &d.tenancy, &mut p);
    let mut named = NamedFiles::default();
    let mut token_bound = None;
    let auth = auth(root, &d.auth, base, &mut named, &mut token_bound, &mut p);
    let upstream = upstream(root, &d.upstream, base, &mut named, &mut p);
    let store = store(root, base, &mut named, &mut p);
    let log = log(root, &d.log, &mut named, &mut p);
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
    let root = DeTable::parse(text).ok()?;
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

/// `[server]`; `header_bound` gets `max_request_header_bytes` whenever that key parsed (or
/// is left to its default), whatever else is wrong.
fn server(
    root: &DeTable<'_>,
    d: &ServerSettings,
    header_bound: &mut Option<usize>,
    p: &mut Problems<'_>,
) -> Option<ServerSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "server", p);
    let listen = s.socket_addr("listen", p).unwrap_or(d.listen);
    let (admin_listen, admin_at) = match s.string("admin_listen", p) {
        None => (d.admin_listen, None),
        Some((v, at)) if v.is_empty() => (None, Some(at)),
        Some((v, at)) => match v.parse() {
            Ok(a) => (Some(a), Some(at)),
            Err(_) => {
                p.push(
                    "server.admin_listen",
                    Some(at),
                    format!("{v:?} is not an address (\"\" turns it off)"),
                );
                (None, Some(at))
            }
        },
    };
    // A clash is the line of admin_listen, or of listen when the file leaves admin_listen to
    // its default.
    let admin_at = admin_at.or_else(|| s.raw("listen").map(|v| v.span().start));
    if admin_listen == Some(listen) && listen.port() == 0 {
        // Port 0 asks the system for a free port, but the router sets its listeners apart by
        // their configured addresses, and these two are one.
        p.push(
            "server.admin_listen",
            admin_at,
            format!("{listen} is server.listen's address too: give one of them a port, or another address"),
        );
    } else if admin_listen.is_some_and(|a| same_port(a, listen)) {
        p.push(
            "server.admin_listen",
            admin_at,
            format!("{listen} (server.listen) already takes this port on these addresses"),
        );
    }
    let threads = s
        .integer("threads", 1, 1024, p)
        .map_or(d.threads, |n| n as usize);
    // Both shutdown phases: from nothing up to ten minutes.
    let phase_max = Duration::from_secs(600);
    let shutdown_delay = s
        .duration("shutdown_delay", Duration::ZERO, phase_max, p)
        .unwrap_or(d.shutdown_delay);
    let shutdown_grace = s
        .whole_seconds(
            "shutdown_grace",
            Duration::ZERO,
            phase_max,
            "Pingora counts the grace period in seconds",
            p,
        )
        .unwrap_or(d.shutdown_grace);
    let keepalive_timeout = s
        .duration("keepalive_timeout", Duration::from_secs(1), MAX_TIMEOUT, p)
        .unwrap_or(d.keepalive_timeout);
    let client_write_timeout = s
        .duration(
            "client_write_timeout",
            Duration::from_secs(1),
            MAX_TIMEOUT,
            p,
        )
        .unwrap_or(d.client_write_timeout);
    let request_header_timeout = s
        .duration(
            "request_header_timeout",
            Duration::from_millis(100),
            MAX_TIMEOUT,
            p,
        )
        .unwrap_or(d.request_header_timeout);
    // From a minimal request with a token up to half of Pingora's own bound (1 MiB), so that a
    // header past it meets the router's 431 before Pingora's 400.
    let read = s
        .integer("max_request_header_bytes", 4096, 524_288, p)
        .map(|n| n as usize);
    *header_bound =
        s.parsed_or_default("max_request_header_bytes", read, d.max_request_header_bytes);
    let max_request_header_bytes = read.unwrap_or(d.max_request_header_bytes);
    let max_connections = s
        .integer("max_connections", 1, 10_000_000, p)
        .map_or(d.max_connections, |n| n as usize);
    let trusted_proxies = s
        .strings("trusted_proxies", p, IpNet::parse)
        .unwrap_or_else(|| d.trusted_proxies.clone());
    s.finish(p);
    (p.list.len() == before).then_some(ServerSettings {
        listen,
        admin_listen,
        threads,
        shutdown_delay,
        shutdown_grace,
        keepalive_timeout,
        client_write_timeout,
        request_header_timeout,
        max_request_header_bytes,
        max_connections,
        trusted_proxies,
    })
}

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

/// A canonical domain: lowercase labels of `a-z0-9-`, no leading/trailing dot.
fn check_domain(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        });
    // The router refuses a host whose last label is a number, decimal or `0x` hex: URL
    // parsers read such a name as an IPv4 address in one of its spellings (`127.1`,
    // `acme.0x7f`). A base domain ending so would route nothing.
    let last = s.rsplit('.').next().unwrap_or_default().as_bytes();
    let hex = last.len() >= 2 && last[0] == b'0' && last[1] == b'x';
    let numeric =
        last.iter().all(u8::is_ascii_digit) || (hex && last[2..].iter().all(u8::is_ascii_hexdigit));
    if ok && s.parse::<std::net::Ipv4Addr>().is_ok() {
        // The router refuses IP hosts (400): such a base domain would route nothing.
        Err(format!("{s:?} is an IP address, not a domain name"))
    } else if ok && numeric {
        Err(format!(
            "{s:?} ends in a number, so every name under it reads as an IP address, which the \
             router refuses"
        ))
    } else if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a lowercase domain name without leading or trailing dot"
        ))
    }
}

/// A path prefix used by the policy: plain, already-normal text, so that it can match a
/// normalised request path. Only bytes a path may hold raw (RFC 3986 `pchar` and `/`): a
/// request path holding `{`, `|` or `"` is refused before any prefix is compared, so a prefix
/// with one would never match. No dot-segments, with or without parameters (`..;x`: refused
/// in requests too).
fn check_prefix(s: &str) -> Result<String, String> {
    let path_char = |c: u8| c.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&c);
    let dot_segment = |seg: &str| {
        let dots = seg.split(';').next().unwrap_or(seg);
        dots == "." || dots == ".."
    };
    let ok = s.starts_with('/')
        && !s.contains("//")
        && !s.split('/').any(dot_segment)
        && s.bytes().all(path_char);
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} must start with '/' and hold only letters, digits and -._~!$&'()*+,;=:@ \
             between single slashes, no dot segments"
        ))
    }
}

/// The Redis key prefix: free of what Redis's `SCAN MATCH` reads as a pattern (`*`, `?`,
/// `[`, `]`, `\`), since the bindings are found by `{prefix}:binding:*`.
fn check_key_prefix(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty: every key would start with ':'".to_owned());
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} holds {c:?}: no blanks or control characters"
        ));
    }
    match s
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        Some(c) => Err(format!(
            "{s:?} holds {c:?}, which Redis key patterns read as a wildcard"
        )),
        None => Ok(()),
    }
}

/// A replica's id, as `nexus-edge replicas` lists it and `--wait` names it: printable, no
/// blanks, at most 128 bytes. (Left out, it is `hostname-pid`.)
fn check_replica_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 128 {
        return Err(format!(
            "{s:?} must be 1 to 128 bytes (leave the key out for hostname-pid)"
        ));
    }
    match s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(c) => Err(format!(
            "{s:?} holds {c:?}: no blanks or control characters"
        )),
        None => Ok(()),
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

fn tenancy(
    root: &DeTable<'_>,
    d: &TenancySettings,
    p: &mut Problems<'_>,
) -> Option<TenancySettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "tenancy", p);
    let base_domains = s
        .strings("base_domains", p, check_domain)
        .unwrap_or_else(|| d.base_domains.clone());
    if base_domains.is_empty() {
        p.push(
            "tenancy.base_domains",
            None,
            "must list at least one domain",
        );
    }
    let public_paths = s
        .strings("public_paths", p, check_prefix)
        .unwrap_or_else(|| d.public_paths.clone());
    let recovery_paths = s
        .strings("recovery_paths", p, check_prefix)
        .unwrap_or_else(|| d.recovery_paths.clone());
    let api_prefix = match s.string("api_prefix", p) {
        None => d.api_prefix.clone(),
        Some((v, at)) => check_prefix(&v).unwrap_or_else(|m| {
            p.push("tenancy.api_prefix", Some(at), m);
            v
        }),
    };
    let provisioning_retry_after = s
        .whole_seconds(
            "provisioning_retry_after",
            Duration::from_secs(1),
            Duration::from_secs(86_400),
            "Retry-After counts whole seconds",
            p,
        )
        .unwrap_or(d.provisioning_retry_after);
    let past_due_header = match s.string("past_due_header", p) {
        None => d.past_due_header.clone(),
        Some((v, at)) => {
            if !is_token(&v) || v.bytes().any(|c| c.is_ascii_uppercase()) {
                p.push(
                    "tenancy.past_due_header",
                    Some(at),
                    format!("{v:?} is not a lowercase header name"),
                );
            } else if NOT_A_NOTICE.contains(&v.as_str())
                || v.starts_with("proxy-")
                || v.starts_with("access-control-")
            {
                p.push(
                    "tenancy.past_due_header",
                    Some(at),
                    format!(
                        "{v:?} frames the response or is the router's own; pick a header of \
                         its own, e.g. \"x-subscription-status\""
                    ),
                );
            }
            v
        }
    };
    s.finish(p);
    (p.list.len() == before).then_some(TenancySettings {
        base_domains,
        public_paths,
        recovery_paths,
        api_prefix,
        provisioning_retry_after,
        past_due_header,
    })
}

/// Claims the router reads as NumericDates (RFC 7519 §4.1.4-6): a number in every token it
/// accepts, never the string a tenant or org claim must be.
const DATE_CLAIMS: [&str; 3] = ["exp", "nbf", "iat"];

fn auth(
    root: &DeTable<'_>,
    d: &AuthSettings,
    base: &Path,
    named: &mut NamedFiles,
    token_bound: &mut Option<usize>,
    p: &mut Problems<'_>,
) -> Option<AuthSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "auth", p);
    let jwks = match s.raw("jwks_file") {
        Some(_) => {
            named.jwks_file = s.path("jwks_file", base, p);
            named.jwks_file.clone().map(JwksSource::File)
        }
        None => {
            p.push(
                "auth.jwks_file",
                None,
                "is required (the JWKS file with the token verification keys)",
            );
            None
        }
    };
    let hmac_keys = hmac_keys(&mut s, base, p);
    // An empty or blank entry would accept a token whose claim is empty or blank: a value an
    // issuer never means, and one a forged token's author picks first.
    let named = |v: &str| {
        if v.trim().is_empty() || v.trim() != v {
            Err(format!("{v:?} is empty or has blanks at its ends"))
        } else {
            Ok(v.to_owned())
        }
    };
    let issuers = s
        .strings("issuers", p, named)
        .unwrap_or_else(|| d.issuers.clone());
    let issuer_keys = issuer_keys(&mut s, &issuers, p);
    let audiences = s
        .strings("audiences", p, named)
        .unwrap_or_else(|| d.audiences.clone());
    let leeway = s
        .whole_seconds(
            "leeway",
            Duration::ZERO,
            Duration::from_secs(300),
            "token times are whole seconds",
            p,
        )
        .unwrap_or(d.leeway);
    let max_token_lifetime = match s.raw("max_token_lifetime") {
        None => d.max_token_lifetime,
        Some(_) => s
            .whole_seconds(
                "max_token_lifetime",
                Duration::ZERO,
                Duration::from_secs(10 * 366 * 86_400),
                "token times are whole seconds",
                p,
            )
            .filter(|d| !d.is_zero()),
    };
    let claim = |v: &str| {
        if v.is_empty() {
            Err("must not be empty".to_owned())
        } else if DATE_CLAIMS.contains(&v) {
            Err(format!(
                "{v:?} is a date claim: the router reads it as a number (NumericDate), and \
                 this claim must be a string, so every token would be refused; name a claim \
                 of its own"
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let tenant_claim = match s.string("tenant_claim", p) {
        None => d.tenant_claim.clone(),
        Some((v, at)) => claim(&v).unwrap_or_else(|m| {
            p.push("auth.tenant_claim", Some(at), m);
            v
        }),
    };
    let org_claim = match s.string("org_claim", p) {
        None => d.org_claim.clone(),
        Some((v, at)) => claim(&v).unwrap_or_else(|m| {
            p.push("auth.org_claim", Some(at), m);
            v
        }),
    };
    if tenant_claim == org_claim {
        p.push("auth.org_claim", None, "must differ from auth.tenant_claim");
    }
    let session_cookie = match s.string("session_cookie", p) {
        None => d.session_cookie.clone(),
        Some((v, _)) if v.is_empty() => None,
        Some((v, at)) => {
            if !is_token(&v) {
                p.push(
                    "auth.session_cookie",
                    Some(at),
                    format!("{v:?} is not a valid cookie name"),
                );
            }
            Some(v)
        }
    };
    let token_cache_capacity = s
        .integer("token_cache_capacity", 0, 10_000_000, p)
        .map_or(d.token_cache_capacity, |n| n as usize);
    let read = s
        .integer("max_token_bytes", 256, 65_536, p)
        .map(|n| n as usize);
    *token_bound = s.parsed_or_default("max_token_bytes", read, d.max_token_bytes);
    let max_token_bytes = read.unwrap_or(d.max_token_bytes);
    let jwks_poll_interval = s
        .duration(
            "jwks_poll_interval",
            Duration::from_millis(10),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.jwks_poll_interval);
    s.finish(p);
    let jwks = jwks?;
    (p.list.len() == before).then_some(AuthSettings {
        jwks,
        hmac_keys,
        issuers,
        issuer_keys,
        audiences,
        leeway,
        max_token_lifetime,
        tenant_claim,
        org_claim,
        session_cookie,
        token_cache_capacity,
        max_token_bytes,
        jwks_poll_interval,
    })
}

/// `[auth.issuer_keys]`: each issuer of `issuers` (quoted, as a key) with the `kid`s of the
/// keys it signs with. Required when `issuers` lists more than one: with one key set for
/// all, any issuer's key would sign another's tokens (RFC 8725 §3.8). Every issuer listed,
/// and only those; a `kid` may be listed under two issuers (one key, two names).
fn issuer_keys(
    s: &mut Section<'_, '_>,
    issuers: &[String],
    p: &mut Problems<'_>,
) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    const KEY: &str = "auth.issuer_keys";
    let Some(v) = s.raw("issuer_keys") else {
        if issuers.len() > 1 {
            p.push(
                KEY,
                None,
                "is required when auth.issuers lists more than one issuer: name the key ids \
                 (kid) each one signs with (e.g. \"https://id.example\" = [\"2025-rsa\"]), so \
                 that one issuer's key cannot sign another's tokens (RFC 8725 §3.8)",
            );
        }
        return None;
    };
    let DeValue::Table(t) = v.get_ref() else {
        p.push(
            KEY,
            Some(v.span().start),
            format!(
                "must be a table of issuer = [key ids], found {}",
                v.get_ref().type_str()
            ),
        );
        return None;
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in t.iter() {
        let issuer = k.get_ref().as_ref();
        let key = format!("{KEY}.{issuer:?}");
        let at = Some(k.span().start);
        if !issuers.iter().any(|i| i == issuer) {
            p.push(
                key.as_str(),
                at,
                "names an issuer that is not in auth.issuers",
            );
        }
        let kids: Option<Vec<String>> = match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|i| {
                    i.get_ref()
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                })
                .collect(),
            _ => None,
        };
        match kids {
            None => p.push(key, at, "must be a list of key ids (kid), none empty"),
            Some(kids) if kids.is_empty() => p.push(
                key,
                at,
                "lists no key: every token of this issuer would be refused (take the issuer \
                 out of auth.issuers instead)",
            ),
            Some(kids) => {
                out.insert(issuer.to_owned(), kids);
            }
        }
    }
    for issuer in issuers
        .iter()
        .filter(|i| !t.iter().any(|(k, _)| k.get_ref().as_ref() == i.as_str()))
    {
        p.push(
            KEY,
            Some(v.span().start),
            format!("has no entry for issuer {issuer:?}: every token it issues would be refused"),
        );
    }
    Some(out)
}

/// The fields of one `[[auth.hmac_keys]]` table.
const HMAC_KEY_FIELDS: &[&str] = &["kid", "alg", "secret_env", "secret_file"];

/// `[[auth.hmac_keys]]`: `kid`, `alg` (HS256 when left out) and exactly one of `secret_env` /
/// `secret_file`. HMAC is off unless a key is configured here; secrets never come from the
/// JWKS file.
fn hmac_keys(s: &mut Section<'_, '_>, base: &Path, p: &mut Problems<'_>) -> Vec<HmacKey> {
    let Some(v) = s.raw("hmac_keys") else {
        return Vec::new();
    };
    let DeValue::Array(items) = v.get_ref() else {
        p.push(
            "auth.hmac_keys",
            Some(v.span().start),
            "must be an array of tables ([[auth.hmac_keys]])",
        );
        return Vec::new();
    };
    let mut keys = Vec::new();
    let mut kids = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let key = format!("auth.hmac_keys[{i}]");
        let at = Some(item.span().start);
        let DeValue::Table(t) = item.get_ref() else {
            p.push(
                key,
                at,
                "must be a table with kid and secret_env or secret_file",
            );
            continue;
        };
        let field = |n: &str| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == n)
                .and_then(|(_, v)| v.get_ref().as_str().map(str::to_owned))
        };
        // A field's problem is said at its line; the table's own at its header.
        let field_at = |n: &str| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == n)
                .map(|(_, v)| v.span().start)
                .or(at)
        };
        let mut mistyped = false;
        for (k, v) in t.iter() {
            let n = k.get_ref().as_ref();
            if !HMAC_KEY_FIELDS.contains(&n) {
                p.push(
                    format!("{key}.{n}"),
                    Some(k.span().start),
                    unknown_message(n, HMAC_KEY_FIELDS),
                );
            } else if v.get_ref().as_str().is_none() {
                // Not taken as absent: `alg = 512` must not become the default.
                p.push(
                    format!("{key}.{n}"),
                    Some(k.span().start),
                    "must be a string",
                );
                mistyped = true;
            }
        }
        if mistyped {
            continue;
        }
        // Each field is judged on its own, so that one run lists every problem of the table.
        let kid = match field("kid").filter(|k| !k.is_empty()) {
            None => {
                p.push(format!("{key}.kid"), at, "is required");
                None
            }
            // A token's kid selects one key: a second one under the same kid would never
            // be used.
            Some(kid) if !kids.insert(kid.clone()) => {
                p.push(
                    format!("{key}.kid"),
                    field_at("kid"),
                    format!("{kid:?} is listed twice"),
                );
                None
            }
            Some(kid) => Some(kid),
        };
        let alg = match field("alg") {
            None => Some(HmacAlgorithm::HS256),
            Some(name) => {
                let alg = HmacAlgorithm::from_name(&name);
                if alg.is_none() {
                    p.push(
                        format!("{key}.alg"),
                        field_at("alg"),
                        format!("{name:?} is not one of \"HS256\", \"HS384\", \"HS512\""),
                    );
                }
                alg
            }
        };
        let secret = match (field("secret_env"), field("secret_file")) {
            (Some(env), None) => match std::env::var(&env) {
                Ok(v) => Some(v.into_bytes()),
                Err(e) => {
                    p.push(
                        format!("{key}.secret_env"),
                        field_at("secret_env"),
                        env_problem(&env, &e),
                    );
                    None
                }
            },
            (None, Some(file)) => match crate::files::read_regular(&base.join(&file), 64 * 1024) {
                Ok(mut b) => {
                    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                        b.pop();
                    }
                    Some(b)
                }
                Err(e) => {
                    p.push(
                        format!("{key}.secret_file"),
                        field_at("secret_file"),
                        format!("cannot read {file}: {e}"),
                    );
                    None
                }
            },
            _ => {
                p.push(
                    key.clone(),
                    at,
                    "needs exactly one of secret_env or secret_file",
                );
                None
            }
        };
        let (Some(kid), Some(alg), Some(secret)) = (kid, alg, secret) else {
            continue;
        };
        // RFC 7518 §3.2: an HMAC key at least as long as the hash's output.
        if secret.len() < alg.min_secret_len() {
            let from = if field("secret_env").is_some() {
                "secret_env"
            } else {
                "secret_file"
            };
            p.push(
                key,
                field_at(from),
                format!(
                    "secret for kid {kid:?} is shorter than {} bytes, the least {} allows",
                    alg.min_secret_len(),
                    alg.name()
                ),
            );
            continue;
        }
        keys.push(HmacKey { kid, alg, secret });
    }
    keys
}

fn upstream(
    root: &DeTable<'_>,
    d: &UpstreamSettings,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<UpstreamSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "upstream", p);
    let connect_timeout = s
        .duration("connect_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.connect_timeout);
    let read_timeout = s
        .duration("read_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.read_timeout);
    let write_timeout = s
        .duration("write_timeout", MS, MAX_TIMEOUT, p)
        .unwrap_or(d.write_timeout);
    // A notification channel may stay silent for hours; a day is the most asked for.
    let tunnel_idle_timeout = s
        .duration(
            "tunnel_idle_timeout",
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
            p,
        )
        .unwrap_or(d.tunnel_idle_timeout);
    let ca_file = pem_file(
        "upstream.ca_file",
        s.path("ca_file", base, p),
        Pem::Certificate,
        p,
    );
    // For the deeper check of its certificates (`nexus-edge check`), whatever else is wrong.
    named.upstream_ca_file.clone_from(&ca_file);
    let dns_ttl = s
        .duration("dns_ttl", Duration::ZERO, MAX_TIMEOUT, p)
        .unwrap_or(d.dns_ttl);
    let dns_serve_stale = s
        .duration("dns_serve_stale", Duration::ZERO, MAX_TIMEOUT, p)
        .unwrap_or(d.dns_serve_stale);
    let idle_connections = s
        .integer("idle_connections", 1, 1_000_000, p)
        .map_or(d.idle_connections, |n| n as usize);
    let idle_connection_timeout = s
        .duration(
            "idle_connection_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.idle_connection_timeout);
    s.finish(p);
    (p.list.len() == before).then_some(UpstreamSettings {
        connect_timeout,
        read_timeout,
        write_timeout,
        tunnel_idle_timeout,
        ca_file,
        dns_ttl,
        dns_serve_stale,
        idle_connections,
        idle_connection_timeout,
    })
}

/// Every key of `[store]`, of either kind.
const STORE_KEYS: &[&str] = &[
    "kind",
    "path",
    "poll_interval",
    "url",
    "key_prefix",
    "snapshot_path",
    "reconcile_interval",
    "heartbeat_interval",
    "replica_id",
    "sentinel",
    "tls",
];

fn store(
    root: &DeTable<'_>,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<StoreSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "store", p);
    if !s.present() {
        p.push("store", None, "is required ([store] with kind and path)");
        return None;
    }
    let kind = s.required_string("kind", p);
    let result = match kind.as_ref().map(|(k, at)| (k.as_str(), *at)) {
        Some(("file", _)) => {
            let path = match s.raw("path") {
                Some(_) => s.path("path", base, p),
                None => {
                    p.push("store.path", None, "is required for kind = \"file\"");
                    None
                }
            };
            named.bindings_file.clone_from(&path);
            let poll_interval = s
                .duration(
                    "poll_interval",
                    Duration::from_millis(10),
                    Duration::from_secs(3600),
                    p,
                )
                .unwrap_or(Duration::from_secs(1));
            path.map(|path| {
                StoreSettings::File(FileStoreSettings {
                    path: Some(path),
                    poll_interval,
                })
            })
        }
        Some(("redis", _)) => {
            let endpoint = redis_endpoint(&mut s, p);
            let tls = redis_tls(&mut s, base, endpoint.as_ref(), p);
            let key_prefix = match s.string("key_prefix", p) {
                None => Some("nexus".to_owned()),
                Some((v, at)) => match check_key_prefix(&v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        p.push("store.key_prefix", Some(at), e);
                        None
                    }
                },
            };
            let snapshot_path = s.path("snapshot_path", base, p);
            let reconcile_interval = s
                .duration(
                    "reconcile_interval",
                    Duration::from_secs(1),
                    Duration::from_secs(86_400),
                    p,
                )
                .unwrap_or(Duration::from_secs(300));
            let heartbeat_interval = s
                .duration(
                    "heartbeat_interval",
                    Duration::from_millis(10),
                    Duration::from_secs(60),
                    p,
                )
                .unwrap_or(Duration::from_secs(2));
            let replica_id = match s.string("replica_id", p) {
                None => None,
                Some((v, at)) => match check_replica_id(&v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        p.push("store.replica_id", Some(at), e);
                        None
                    }
                },
            };
            endpoint.zip(key_prefix).map(|(endpoint, key_prefix)| {
                StoreSettings::Redis(RedisStoreSettings {
                    endpoint,
                    tls,
                    key_prefix,
                    snapshot_path,
                    reconcile_interval,
                    heartbeat_interval,
                    replica_id,
                })
            })
        }
        Some((other, at)) => {
            p.push(
                "store.kind",
                Some(at),
                format!("unknown store kind {other:?}; expected \"file\" or \"redis\""),
            );
            s.finish_unjudged();
            return None;
        }
        // Which keys belong depends on the kind: without one, a key of either kind is not
        // called unknown, and any other is (`knid = "file"` is the likely reason it is
        // missing).
        None => {
            s.allow(STORE_KEYS);
            s.finish(p);
            return None;
        }
    };
    s.finish(p);
    result.filter(|_| p.list.len() == before)
}

/// A Redis URL's `#fragment` is refused: redis-rs reads `#insecure` as "skip the server
/// certificate check", which this build neither does nor lets a config ask for (server
/// certificates are always verified), and no other fragment means anything to it.
fn fragment_problem(u: &str) -> Option<&'static str> {
    u.contains('#').then_some(
        "has a #fragment; none is used (#insecure would skip the server certificate check, \
         which nexus-edge never does: give the server's CA in [store.tls] ca_file)",
    )
}

/// Said of every Redis URL problem that an unencoded character of a password may have caused:
/// the URL's text (and so the password's pieces) is never in the message.
const ENCODE_PASSWORD: &str = "a password holding /, ?, # or @ must be percent-encoded";

/// A TCP Redis URL as redis-rs reads it, judged here (`Ok(None)`: not a TCP URL): one that
/// does not parse, names no host or has port 0 fails only at start-up otherwise, with the
/// URL's text in the message. So does an `@` past the host, in the path or the query: the
/// rest of a password with an unencoded `/` or `?` (the user info ends at the last `@` before
/// the host), which would be logged as the database or a query parameter. Socket URLs are
/// judged by redis-rs (their password is a query parameter, where an `@` is a password's own).
fn tcp_redis_url(u: &str) -> Result<Option<url::Url>, String> {
    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
        return Ok(None);
    }
    let parsed =
        url::Url::parse(u).map_err(|e| format!("is not a valid URL ({e}; {ENCODE_PASSWORD})"))?;
    if parsed.path().contains('@') || parsed.query().is_some_and(|q| q.contains('@')) {
        return Err(format!(
            "holds an @ past its host, the rest of a password ({ENCODE_PASSWORD})"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("names no host ({ENCODE_PASSWORD})"));
    }
    if parsed.port() == Some(0) {
        return Err("has port 0, which connects nowhere".to_owned());
    }
    Ok(Some(parsed))
}

/// A primary's Redis URL: [`tcp_redis_url`], and its database, which past 1023 (the bound
/// `[store.sentinel] db` has; Redis's own default is 16) or not a number fails only at
/// start-up otherwise. Unix-socket URLs name theirs in the query.
fn endpoint_problem(u: &str) -> Option<String> {
    let parsed = match tcp_redis_url(u) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return None,
        Err(m) => return Some(m),
    };
    let db = parsed.path().trim_start_matches('/');
    if db.is_empty() {
        return None;
    }
    match db.parse::<u32>() {
        Ok(n) if n <= 1023 => None,
        _ => Some(format!(
            "names a database that is no number from 0 to 1023 ({ENCODE_PASSWORD})"
        )),
    }
}

fn is_redis_url(u: &str) -> bool {
    ["redis://", "rediss://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| u.starts_with(scheme))
}

/// `url` or `[store.sentinel]`, exactly one.
fn redis_endpoint(s: &mut Section<'_, '_>, p: &mut Problems<'_>) -> Option<RedisEndpointSettings> {
    let url = s.string("url", p);
    let mut sentinel = s.nested("sentinel", "store.sentinel", p);
    let endpoint = match (url, sentinel.present()) {
        (Some(_), true) => {
            p.push(
                "store.url",
                None,
                "give either url or [store.sentinel], not both",
            );
            None
        }
        (None, false) => {
            p.push(
                "store.url",
                None,
                "is required for kind = \"redis\" (or configure [store.sentinel])",
            );
            None
        }
        (Some((u, at)), false) => {
            if !is_redis_url(&u) {
                p.push(
                    "store.url",
                    Some(at),
                    "is not a redis://, rediss://, redis+unix:// or unix:// URL",
                );
                None
            } else if let Some(m) = fragment_problem(&u) {
                p.push("store.url", Some(at), m);
                None
            } else if let Some(m) = endpoint_problem(&u) {
                p.push("store.url", Some(at), m);
                None
            } else {
                Some(RedisEndpointSettings::Url(u))
            }
        }
        (None, true) => sentinel_settings(&mut sentinel, p).map(RedisEndpointSettings::Sentinel),
    };
    // Read only when it is the endpoint: beside a url its keys are not called unknown (the
    // problem is that it is there at all).
    if endpoint.is_none() && s.raw("url").is_some() {
        sentinel.finish_unjudged();
    } else {
        sentinel.finish(p);
    }
    endpoint
}

fn sentinel_settings(s: &mut Section<'_, '_>, p: &mut Problems<'_>) -> Option<SentinelSettings> {
    let before = p.list.len();
    let master_name = match s.required_string("master_name", p) {
        Some((v, at)) if v.is_empty() => {
            p.push("store.sentinel.master_name", Some(at), "must not be empty");
            None
        }
        other => other.map(|(v, _)| v),
    };
    let nodes = match s.strings("nodes", p, |v| {
        if let Some(m) = fragment_problem(v) {
            Err(m.to_owned())
        } else if v.starts_with("redis://") || v.starts_with("rediss://") {
            tcp_redis_url(v).map(|_| v.to_owned())
        } else {
            Err("is not a redis:// or rediss:// URL (Sentinels are reached over TCP)".to_owned())
        }
    }) {
        Some(n) if n.is_empty() => {
            p.push(
                "store.sentinel.nodes",
                None,
                "must list at least one Sentinel",
            );
            None
        }
        None if s.raw("nodes").is_none() => {
            p.push("store.sentinel.nodes", None, "is required");
            None
        }
        other => other,
    };
    if nodes.as_ref().is_some_and(|n| {
        n.iter().any(|u| u.starts_with("rediss://")) && n.iter().any(|u| u.starts_with("redis://"))
    }) {
        p.push(
            "store.sentinel.nodes",
            None,
            "mixes redis:// and rediss://; every Sentinel must use the same",
        );
    }
    let tls = s.boolean("tls", p).unwrap_or(false);
    let username = s
        .string("username", p)
        .map(|(v, _)| v)
        .filter(|v| !v.is_empty());
    let password = match s.string("password_env", p) {
        None => None,
        Some((env, at)) => match std::env::var(&env) {
            Ok(v) => Some(v),
            Err(e) => {
                p.push(
                    "store.sentinel.password_env",
                    Some(at),
                    env_problem(&env, &e),
                );
                None
            }
        },
    };
    let db = s.integer("db", 0, 1023, p).unwrap_or(0);
    if p.list.len() != before {
        return None;
    }
    Some(SentinelSettings {
        master_name: master_name?,
        nodes: nodes?,
        tls,
        username,
        password,
        db,
    })
}

/// Response headers the past-due notice may not be: framing and hop-by-hop headers (a
/// second `content-length` or `transfer-encoding` breaks the response, or desynchronises
/// whatever sits in front), standard ones the instance sets (the notice replaces the
/// instance's value: `cache-control: past_due`), and the router's own.
const NOT_A_NOTICE: &[&str] = &[
    "accept-ranges",
    "age",
    "allow",
    "cache-control",
    "connection",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-range",
    "content-security-policy",
    "content-type",
    "date",
    "etag",
    "expires",
    "host",
    "keep-alive",
    "last-modified",
    "location",
    "retry-after",
    "server",
    "set-cookie",
    "strict-transport-security",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-org-id",
    "x-request-id",
    "x-tenant-id",
    "x-user-id",
];

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

/// `[store.tls]`: only meaningful when some connection uses TLS.
fn redis_tls(
    store: &mut Section<'_, '_>,
    base: &Path,
    endpoint: Option<&RedisEndpointSettings>,
    p: &mut Problems<'_>,
) -> RedisTlsSettings {
    let mut s = store.nested("tls", "store.tls", p);
    let ca_file = pem_file(
        "store.tls.ca_file",
        s.path("ca_file", base, p),
        Pem::Certificate,
        p,
    );
    let cert = s.path("client_cert_file", base, p);
    let key = s.path("client_key_file", base, p);
    if cert.is_some() != key.is_some() {
        p.push(
            "store.tls",
            None,
            "client_cert_file and client_key_file go together",
        );
    }
    let cert = pem_file("store.tls.client_cert_file", cert, Pem::Certificate, p);
    let key = pem_file("store.tls.client_key_file", key, Pem::PrivateKey, p);
    let client_cert = cert.zip(key);
    let uses_tls = match endpoint {
        Some(RedisEndpointSettings::Url(u)) => u.starts_with("rediss://"),
        Some(RedisEndpointSettings::Sentinel(st)) => {
            st.tls || st.nodes.iter().any(|n| n.starts_with("rediss://"))
        }
        None => true,
    };
    if s.present() && !uses_tls {
        p.push(
            "store.tls",
            None,
            "is set but no connection uses TLS (use a rediss:// URL, or tls = true in [store.sentinel])",
        );
    }
    s.finish(p);
    RedisTlsSettings {
        ca_file,
        client_cert,
    }
}

fn log(
    root: &DeTable<'_>,
    d: &LogSettings,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<LogSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "log", p);
    let filter = s
        .string("filter", p)
        .map_or_else(|| d.filter.clone(), |(v, _)| v);
    named.log_filter = Some(filter.clone());
    let format = match s.string("format", p) {
        None => d.format,
        Some((v, at)) => match v.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                p.push(
                    "log.format",
                    Some(at),
                    format!("{v:?} is not a log format; expected \"text\" or \"json\""),
                );
                d.format
            }
        },
    };
    let request_lines_per_second = s
        .integer("request_lines_per_second", 1, 1_000_000, p)
        .map_or(d.request_lines_per_second, |n| n as u32);
    s.finish(p);
    (p.list.len() == before).then_some(LogSettings {
        filter,
        format,
        request_lines_per_second,
    })
}
