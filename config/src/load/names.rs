//! The shapes of names a config gives: domains, path and key prefixes, replica ids, tokens.

/// An origin as browsers send it in `Origin` (RFC 6454): `http` or `https`, `://`, a
/// lowercase domain name, and a port only when it is not the scheme's default; nothing after.
pub(super) fn check_origin(s: &str) -> Result<String, String> {
    let why = || {
        format!(
            "{s:?} is not an origin as browsers send it: \"https://\" or \"http://\", a \
             lowercase domain name, and a port only when not the scheme's default (no path, no \
             trailing slash)"
        )
    };
    let (default_port, rest) = match (s.strip_prefix("https://"), s.strip_prefix("http://")) {
        (Some(rest), _) => ("443", rest),
        (None, Some(rest)) => ("80", rest),
        (None, None) => return Err(why()),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let port_ok = port.is_none_or(|p| {
        p != default_port && !p.starts_with('0') && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    if !port_ok || check_domain(host).is_err() {
        return Err(why());
    }
    Ok(s.to_owned())
}

/// A canonical domain: lowercase labels of `a-z0-9-`, no leading/trailing dot.
pub(super) fn check_domain(s: &str) -> Result<String, String> {
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
pub(super) fn check_prefix(s: &str) -> Result<String, String> {
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

/// A public or recovery path prefix ([`check_prefix`]) that does not take in Next.js's data
/// routes: `/_next/data/<build>/<page>.json` answers with any page's data, or runs its
/// handler, whatever the page's own path, so `/_next/` public would make every page public
/// (a probe read protected pages' data and ran an API handler so, without a token); under a
/// `basePath` too (`/app/_next/data/...`).
pub(super) fn check_path_prefix(s: &str) -> Result<String, String> {
    let prefix = check_prefix(s)?;
    let segments: Vec<&str> = prefix.split('/').filter(|seg| !seg.is_empty()).collect();
    let takes_in_data = segments
        .iter()
        .position(|&seg| seg == "_next")
        .is_some_and(|i| segments.get(i + 1).is_none_or(|&next| next == "data"));
    if takes_in_data {
        return Err(format!(
            "{s:?} takes in Next.js's data routes (/_next/data/...), which serve any page's \
             data and run its handlers: list \"/_next/static/\" for its assets instead"
        ));
    }
    Ok(prefix)
}

/// The Redis key prefix: free of what Redis's `SCAN MATCH` reads as a pattern (`*`, `?`,
/// `[`, `]`, `\`), since the bindings are found by `{prefix}:binding:*`.
pub(super) fn check_key_prefix(s: &str) -> Result<(), String> {
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
pub(super) fn check_replica_id(s: &str) -> Result<(), String> {
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

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}
