//! Taking the token from the request: `Authorization: Bearer`, the session cookie, a WebSocket
//! subprotocol that is a JWS, or a place the instances' apps read one from that the config
//! names ([`TokenPlaces`]).
//!
//! Tokens in the query string are never read (they end up in logs and referrers). If the
//! header and the cookie both carry a token they must be the same token: otherwise it is not
//! clear who the caller is, and the request is refused. The same holds for an
//! `access_token` query parameter (RFC 6750 §2.3), which some frameworks read (ASP.NET for
//! SignalR, Spring when allowed), for `bearer_token` (Doorkeeper, Rails' OAuth provider,
//! reads both by default), and for the query parameters the config names: each may only
//! repeat the verified token.
//!
//! The instance's framework, not this router, has the last word on what a `Cookie` header or
//! a query string holds, so both are read the way the most lenient parsers read them: a
//! cookie pair may also hide behind a comma or a blank inside another pair (Rack, Python's
//! `SimpleCookie`, RFC 2965 parsers), a blank being any character Unicode calls one (see
//! `UNICODE_BLANKS`), and a name matches when some framework would fold it into the session
//! cookie's or `access_token` (see `same_name`).

use super::error::CredentialError;
use crate::path::escaped_byte;
use nexus_config::QUERY_TOKENS;

/// A `b64token` body byte. Written with non-short-circuit `|` so the check over a whole token
/// compiles to vector compares: it runs over every byte of every token on every request.
#[inline]
fn is_b64token_byte(c: u8) -> bool {
    (c.is_ascii_digit() | c.is_ascii_uppercase() | c.is_ascii_lowercase())
        | (c == b'-')
        | (c == b'.')
        | (c == b'_')
        | (c == b'~')
        | (c == b'+')
        | (c == b'/')
}

/// RFC 6750 §2.1 `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &[u8]) -> bool {
    let body_end = s.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    body_end > 0
        && s[..body_end]
            .iter()
            .fold(true, |ok, &c| ok & is_b64token_byte(c))
}

/// Unicode's blanks beyond ASCII, in UTF-8: what frameworks trim around a cookie name
/// (Python's `str.strip()`, JavaScript's `trim()`, .NET's `Trim()`) and split a cookie or an
/// `Authorization` value at (Python's `SimpleCookie` and `str.split()`). Read as the router
/// reads ASCII blanks, a name written `nexus_session<U+00A0>` cannot pass as another cookie
/// to the router and as the session cookie to the app.
const UNICODE_BLANKS: [&[u8]; 21] = [
    "\u{85}".as_bytes(),
    "\u{a0}".as_bytes(),
    "\u{1680}".as_bytes(),
    "\u{180e}".as_bytes(),
    "\u{2000}".as_bytes(),
    "\u{2001}".as_bytes(),
    "\u{2002}".as_bytes(),
    "\u{2003}".as_bytes(),
    "\u{2004}".as_bytes(),
    "\u{2005}".as_bytes(),
    "\u{2006}".as_bytes(),
    "\u{2007}".as_bytes(),
    "\u{2008}".as_bytes(),
    "\u{2009}".as_bytes(),
    "\u{200a}".as_bytes(),
    "\u{2028}".as_bytes(),
    "\u{2029}".as_bytes(),
    "\u{202f}".as_bytes(),
    "\u{205f}".as_bytes(),
    "\u{3000}".as_bytes(),
    "\u{feff}".as_bytes(),
];

/// An ASCII blank as Java's `String.trim()` reads one: every byte up to the space (which
/// takes in Python's `str.isspace()`, file and group separators included).
fn is_ascii_blank(c: u8) -> bool {
    c <= b' '
}

/// The length of the blank `b` starts with, or with `at_end` ends with (0: none). Beside
/// UTF-8's, the single bytes 0x85 and 0xA0: NEL and no-break space to a framework that
/// reads headers as Latin-1 (Node.js), whose `trim()` drops the latter.
fn blank_len(b: &[u8], at_end: bool) -> usize {
    let edge = if at_end { b.last() } else { b.first() };
    match edge {
        None => 0,
        Some(&c) if is_ascii_blank(c) => 1,
        Some(&c) if c < 0x80 => 0,
        Some(&c) => UNICODE_BLANKS
            .iter()
            .find(|u| {
                if at_end {
                    b.ends_with(u)
                } else {
                    b.starts_with(u)
                }
            })
            .map_or(usize::from(matches!(c, 0x85 | 0xa0)), |u| u.len()),
    }
}

/// The length of the blank `b` starts with (0: none).
fn blank_at_start(b: &[u8]) -> usize {
    blank_len(b, false)
}

/// The length of the blank `b` ends with (0: none).
fn blank_at_end(b: &[u8]) -> usize {
    blank_len(b, true)
}

/// `b` without the blanks at its start, ASCII or not.
fn trim_blanks_start(mut b: &[u8]) -> &[u8] {
    loop {
        match blank_at_start(b) {
            0 => return b,
            n => b = &b[n..],
        }
    }
}

/// `b` without the blanks at its end, ASCII or not.
fn trim_blanks_end(mut b: &[u8]) -> &[u8] {
    loop {
        match blank_at_end(b) {
            0 => return b,
            n => b = &b[..b.len() - n],
        }
    }
}

/// `b` without the blanks at either end, ASCII or not.
pub(crate) fn trim_blanks(b: &[u8]) -> &[u8] {
    trim_blanks_end(trim_blanks_start(b))
}

/// The places a request's token may be in besides `Authorization`, and the query parameters
/// that must repeat it: `[auth] session_cookie`, `token_cookies`, `token_headers` and
/// `token_query_parameters`, fixed at start. An app that reads its token from a place the
/// router does not check would take another tenant's token from there, unchecked, beside the
/// caller's own verified one; so every place an app reads is either read by the router or
/// taken off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenPlaces {
    /// Cookies that carry a token: the session cookie, then the others.
    cookies: Vec<String>,
    /// Headers besides `Authorization` that carry one, lowercase, `_` and `.` written `-`.
    headers: Vec<String>,
    /// Query parameters that may only repeat it: [`QUERY_TOKENS`], then the others.
    query: Vec<String>,
}

impl TokenPlaces {
    /// The places `[auth]` names.
    pub fn new(settings: &nexus_config::AuthSettings) -> Self {
        let cookies = settings.session_cookie.iter();
        TokenPlaces {
            cookies: cookies.chain(&settings.token_cookies).cloned().collect(),
            headers: settings.token_headers.clone(),
            query: QUERY_TOKENS
                .iter()
                .map(|&n| n.to_owned())
                .chain(settings.token_query_parameters.iter().cloned())
                .collect(),
        }
    }

    /// `Authorization` and [`QUERY_TOKENS`] only, besides the session cookie `name`, if any.
    pub fn with_session_cookie(name: Option<&str>) -> Self {
        TokenPlaces {
            cookies: name.map(str::to_owned).into_iter().collect(),
            headers: Vec::new(),
            query: QUERY_TOKENS.iter().map(|&n| n.to_owned()).collect(),
        }
    }

    /// Whether any header besides `Authorization` carries a token (so that a request's
    /// headers need to be looked through for them).
    pub fn has_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// Whether a request header of this name carries a token. Compared as servers that pass
    /// headers to an app as CGI-style variables read it (`HTTP_X_TOKEN` for `X_Token` as for
    /// `X-Token`: Puma, uWSGI, Django under ASGI; PHP for `X.Token` too, as Caddy's FastCGI
    /// and FrankenPHP pass it), and as Grape reads those back (`X-Token_` as `X-Token`):
    /// without case, `_` and `.` for `-`, trailing ones dropped (see
    /// [`crate::field_name::folds_to`]).
    pub fn is_token_header(&self, name: &http::HeaderName) -> bool {
        let name = name.as_str().as_bytes();
        self.headers
            .iter()
            .any(|h| crate::field_name::folds_to(name, h.as_bytes()))
    }
}

/// The request's token, from `Authorization: Bearer`, its token cookies, its token headers
/// (the values of the headers [`TokenPlaces::is_token_header`] names) and its WebSocket
/// subprotocols (`Sec-WebSocket-Protocol` values, see [`subprotocol_holds`]); `None` if none
/// carries one. A non-Bearer `Authorization` (e.g. Basic, meant for the app) is not ours and
/// counts as no token. Every place that carries one must carry the same.
pub fn extract_token<'a>(
    authorization: &[&'a [u8]],
    cookie_headers: &[&'a [u8]],
    token_headers: &[&'a [u8]],
    subprotocols: &[&'a [u8]],
    places: &TokenPlaces,
) -> Result<Option<&'a str>, CredentialError> {
    let mut found: Option<&'a str> = match authorization {
        [] => None,
        [one] => bearer(one)?,
        _ => return Err(CredentialError::Duplicate),
    };
    let mut agree = |token: &'a str| match found {
        Some(prev) if prev != token => Err(CredentialError::Conflict),
        _ => {
            found = Some(token);
            Ok(())
        }
    };
    for name in &places.cookies {
        for header in cookie_headers {
            for pair in header.split(|&c| c == b';') {
                for value in session_values(pair, name.as_bytes()) {
                    let value = unquote(value);
                    // An empty value is no token: what an app sets to log a browser out
                    // (`sess=; Path=/`), which the browser then sends with every request.
                    if value.is_empty() {
                        continue;
                    }
                    if !is_b64token(value) {
                        return Err(CredentialError::Malformed);
                    }
                    agree(std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?)?;
                }
            }
        }
    }
    for value in token_headers {
        if let Some(token) = header_token(value)? {
            agree(token)?;
        }
    }
    // Kubernetes' form holds the token encoded: it can only repeat one read elsewhere.
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    for element in subprotocols.iter().flat_map(|v| subprotocol_elements(v)) {
        match subprotocol_holds(element) {
            Held::Nothing => {}
            Held::Token(token) => agree(token)?,
            Held::Encoded(token) => encoded.push(token),
            Held::Unreadable => return Err(CredentialError::Malformed),
        }
    }
    if encoded
        .iter()
        .any(|token| found.is_none_or(|f| f.as_bytes() != token.as_slice()))
    {
        return Err(CredentialError::Malformed);
    }
    Ok(found)
}

/// The subprotocols of a `Sec-WebSocket-Protocol` value: comma-separated, blanks of any
/// kind trimmed (as JavaScript's `trim()` and Python's `strip()` trim them), empty ones left
/// out.
fn subprotocol_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&c| c == b',')
        .map(trim_blanks)
        .filter(|e| !e.is_empty())
}

/// What a subprotocol holds of a token (see [`subprotocol_holds`]).
#[derive(Debug, PartialEq)]
enum Held<'a> {
    /// No token: the app's own subprotocol (`chat`, `graphql-ws`).
    Nothing,
    /// A JWS, alone or after a `.`-separated prefix (`eyJ…`, `bearer.eyJ…`).
    Token(&'a str),
    /// A JWS in Kubernetes' form (`base64url.bearer.authorization.k8s.io.<base64url>`).
    Encoded(Vec<u8>),
    /// Something a lenient app could still read a token from: refused.
    Unreadable,
}

/// Kubernetes' subprotocol for a bearer token, base64url-encoded after it.
const KUBERNETES_BEARER: &[u8] = b"base64url.bearer.authorization.k8s.io.";

/// What a subprotocol holds. A browser cannot set `Authorization` on a WebSocket, so apps
/// take the token from a subprotocol (`new WebSocket(url, ["access_token", token])`):
/// passed over, another tenant's token there would reach them unchecked. A subprotocol
/// holding a JWS (see [`holds_jws`]) must be one, or one after a `.`-separated prefix that
/// holds none (`bearer.eyJ…`); anything else holding one is refused, since some app may
/// still find it: one that strips quotes (`"eyJ…"`), splits at blanks (`access_token
/// eyJ…`), takes another separator (`Bearer_eyJ…`) or searches (`eyJ….eyJ…`). So is one
/// holding it `%`-escaped (Daphne, under Django Channels, decodes the whole field before
/// splitting it) or base64-encoded otherwise than as Kubernetes' form strictly writes it.
fn subprotocol_holds(element: &[u8]) -> Held<'_> {
    if let Some(encoded) = element.strip_prefix(KUBERNETES_BEARER) {
        use base64::Engine;
        if let Ok(token) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) {
            if is_jws_shaped(&token) {
                return Held::Encoded(token);
            }
        }
    }
    if !holds_jws(element) {
        // `%`-escaped, or base64 of one (Kubernetes' form padded, or any app's own
        // encoding): decoders are lenient about padding and alphabet.
        return if hides_jws(element) {
            Held::Unreadable
        } else {
            Held::Nothing
        };
    }
    // The last three `.`-separated segments; a prefix ends at the third dot from the end.
    let prefix_end = element
        .iter()
        .rposition(|&c| c == b'.')
        .and_then(|last| element[..last].iter().rposition(|&c| c == b'.'))
        .and_then(|second| element[..second].iter().rposition(|&c| c == b'.'));
    let (prefix, jws) = match prefix_end {
        Some(dot) => (&element[..dot], &element[dot + 1..]),
        None => (&element[..0], element),
    };
    match std::str::from_utf8(jws) {
        Ok(token) if is_jws_shaped(jws) && !holds_jws(prefix) && !escapes_jws(prefix) => {
            Held::Token(token)
        }
        _ => Held::Unreadable,
    }
}

/// Whether a `Sec-WebSocket-Protocol` value holds a subprotocol with a token, or one that
/// might be read as one (see [`subprotocol_holds`]).
pub fn holds_subprotocol_token(value: &[u8]) -> bool {
    subprotocol_elements(value).any(|e| subprotocol_holds(e) != Held::Nothing)
}

/// A `Sec-WebSocket-Protocol` value without the subprotocols [`holds_subprotocol_token`]
/// finds; `None` when nothing is left. For a request forwarded without an identity.
pub fn without_subprotocol_tokens(value: &[u8]) -> Option<Vec<u8>> {
    kept_pieces(subprotocol_elements(value), b", ", |element| {
        subprotocol_holds(element) != Held::Nothing
    })
}

/// `pieces` without the empty ones and those `drop` names, joined by `sep`; `None` when
/// nothing is left. The rest of a list field once some of its pieces are taken off.
fn kept_pieces<'p>(
    pieces: impl Iterator<Item = &'p [u8]>,
    sep: &[u8],
    drop: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let mut kept = Vec::new();
    for piece in pieces.filter(|p| !p.is_empty() && !drop(p)) {
        if !kept.is_empty() {
            kept.extend_from_slice(sep);
        }
        kept.extend_from_slice(piece);
    }
    (!kept.is_empty()).then_some(kept)
}

/// The token a token header carries: the token alone, or behind one scheme word (`Bearer x`,
/// `JWT x`), as apps configured for such a header read it one way or the other; an empty
/// value carries none. Anything else is refused: which part an app would take cannot be told.
/// So is `Bearer` alone: a scheme without its token, no token called `Bearer`.
fn header_token(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Ok(None);
    }
    if value.eq_ignore_ascii_case(b"bearer") {
        return Err(CredentialError::Malformed);
    }
    let token = match value.iter().position(|&c| c == b' ') {
        None => value,
        Some(i) if value[..i].iter().all(u8::is_ascii_alphabetic) => value[i..].trim_ascii_start(),
        Some(_) => return Err(CredentialError::Malformed),
    };
    if !is_b64token(token) {
        return Err(CredentialError::Malformed);
    }
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| CredentialError::Malformed)
}

/// The values a `;`-separated piece of a `Cookie` header gives the session cookie `name`: its
/// own value when its name is that cookie's, then the value of every pair hidden behind a
/// comma or blank inside it (`$Version=1, sess=x`, `theme=dark sess = x`, `secure sess=x`),
/// which parsers that split there would read. Cookie values have no commas or blanks (RFC 6265 `cookie-octet`),
/// so a well-formed piece hides nothing.
fn session_values<'a, 'n>(
    pair: &'a [u8],
    name: &'n [u8],
) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
    let pair = trim_blanks(pair);
    let first_eq = pair.iter().position(|&c| c == b'=');
    let own = first_eq
        .filter(|&eq| same_name(&pair[..eq], name))
        .map(|eq| trim_blanks(&pair[eq + 1..]));
    // The first `=` too: `junk nexus_session=x` is no pair called `junk nexus_session` to
    // aiohttp or `SimpleCookie`, which read `junk` as a flag and then `nexus_session`.
    let hidden = pair
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'=')
        .filter_map(move |(eq, _)| hidden_value(pair, eq, name));
    own.into_iter().chain(hidden)
}

/// Where lenient parsers split a cookie piece: the length of the split `b` starts with.
fn split_at_start(b: &[u8]) -> usize {
    match b.first() {
        Some(b',') => 1,
        _ => blank_at_start(b),
    }
}

/// The value of the pair whose `=` is at `eq` inside a cookie piece, when that pair starts
/// after a comma or blank (not inside another pair's value) and is called `name`; blanks may
/// stand around the `=`, as Python's `SimpleCookie` allows.
fn hidden_value<'a>(pair: &'a [u8], eq: usize, name: &[u8]) -> Option<&'a [u8]> {
    let end = trim_blanks_end(&pair[..eq]).len();
    // Just after the last split (or `=`) before the name.
    let start = (1..=end)
        .rev()
        .find(|&i| matches!(pair[i - 1], b',' | b'=') || blank_at_end(&pair[..i]) > 0)
        .unwrap_or(0);
    // A name must follow a split; one that follows `=` or opens the piece is no hidden pair.
    if start == 0 || start == end || pair[start - 1] == b'=' || !same_name(&pair[start..end], name)
    {
        return None;
    }
    let value = trim_blanks_start(&pair[eq + 1..]);
    let len = (0..value.len())
        .find(|&i| split_at_start(&value[i..]) > 0)
        .unwrap_or(value.len());
    Some(&value[..len])
}

/// A cookie value without the double quotes RFC 6265 allows around it.
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Whether a `;`-separated piece of a `Cookie` header carries a token cookie in any spelling
/// [`extract_token`] would read.
fn carries_token_cookie(pair: &[u8], places: &TokenPlaces) -> bool {
    places
        .cookies
        .iter()
        .any(|name| session_values(pair, name.as_bytes()).next().is_some())
}

/// Whether a `Cookie` header value carries a token cookie in any spelling [`extract_token`]
/// would read: for taking it off a request whose credential was not used.
pub fn has_token_cookie(value: &[u8], places: &TokenPlaces) -> bool {
    value
        .split(|&c| c == b';')
        .any(|pair| carries_token_cookie(pair, places))
}

/// A `Cookie` header value without the pieces that carry a token cookie (as
/// [`has_token_cookie`] finds them); `None` when nothing is left.
pub fn without_token_cookies(value: &[u8], places: &TokenPlaces) -> Option<Vec<u8>> {
    let pairs = value.split(|&c| c == b';').map(<[u8]>::trim_ascii);
    kept_pieces(pairs, b"; ", |pair| carries_token_cookie(pair, places))
}

/// Whether an `Authorization` value is a `Bearer` credential, well-formed or not (what
/// [`extract_token`] reads or refuses, as opposed to another scheme it passes over).
pub fn is_bearer(value: &[u8]) -> bool {
    !matches!(bearer(value), Ok(None))
}

/// Checks that every token parameter of `query`, and of `path` past its first `;` or `&`
/// (see `path_parameters`), (`access_token` and the others `places` names; `&` or `;`
/// separated; its name in any spelling some framework reads as the one
/// named, see `same_name`; its value `%XX` and `+` decoded) that carries something carries
/// exactly `token`: the router never authenticates from the query, so any other value is a
/// second, unchecked credential that would reach the instance beside the verified one. An
/// empty one (`?token=`, `?token`) carries nothing, as an empty cookie does. With `token`
/// empty, any parameter that carries something is refused.
pub fn check_query_token(
    path: &str,
    query: Option<&str>,
    token: &str,
    places: &TokenPlaces,
) -> Result<(), CredentialError> {
    // A decoded byte takes at least one raw byte: a query shorter than every name holds none.
    let shortest = places.query.iter().map(String::len).min().unwrap_or(0);
    let long_enough = |q: &&str| q.len() >= shortest;
    let in_path = path_parameters(path).filter(long_enough);
    let forms = in_path
        .map(|p| (std::borrow::Cow::Borrowed(p.as_bytes()), false))
        .into_iter()
        .chain(query.filter(long_enough).into_iter().flat_map(query_forms));
    for (form, decoded) in forms {
        for (name, value) in parameters(&form) {
            // Decoded whole, a value is as the app reads it: not decoded again.
            let repeats = if decoded {
                value == token.as_bytes()
            } else {
                decodes_to(value, token.as_bytes())
            };
            if !value.is_empty()
                && !repeats
                && places.query.iter().any(|n| same_name(name, n.as_bytes()))
            {
                return Err(CredentialError::Conflict);
            }
        }
    }
    Ok(())
}

/// The part of a path some frameworks read as query parameters: from its first `;` or `&`
/// on. Fastify 4 starts the query at a `;` (find-my-way's `useSemicolonDelimiter`, on by
/// default there; an option in Fastify 5), and Elysia's query parser reads the URL from its
/// start, not from its `?`, so `/login/cb&token=…&?` holds a `token` there.
fn path_parameters(path: &str) -> Option<&str> {
    path.find([';', '&']).map(|i| &path[i + 1..])
}

/// A query as frameworks split it, each form with whether it is decoded: as it came, and,
/// when it holds an escaped separator (`%26`, `%3B`, `%3D`), decoded whole first.
/// `java.net.URI::getQuery()` decodes before the code splitting it does (the JDK's server and
/// Jersey hand apps a `URI`), so `?state=1%26access_token=…` holds an `access_token` there,
/// hidden from a split of the raw query. (So does a nested URL's query in a value,
/// `?next=%2Fx%3Ftoken%3D…`: a token parameter there must repeat the token too.)
fn query_forms(query: &str) -> impl Iterator<Item = (std::borrow::Cow<'_, [u8]>, bool)> {
    let raw = std::iter::once((std::borrow::Cow::Borrowed(query.as_bytes()), false));
    let escapes_a_separator = query
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && matches!(escaped_byte(w), Some(b'&' | b';' | b'=')));
    let decoded = escapes_a_separator.then(|| {
        (
            std::borrow::Cow::Owned(form_decoded(query.as_bytes()).collect()),
            true,
        )
    });
    raw.chain(decoded)
}

/// A query's parameters, raw: split at `&` and `;`, each at its first `=`. Leading `?`s are
/// no part of the first name: `URLSearchParams` (Koa 3's `ctx.query`) drops one, so `??x=1`
/// is `x` there.
fn parameters(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let start = query.iter().take_while(|&&c| c == b'?').count();
    query[start..]
        .split(|&c| c == b'&' || c == b';')
        .map(|pair| match pair.iter().position(|&c| c == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        })
}

/// The values, form-decoded, of every parameter of `query` whose name some framework reads as
/// `name` (see `same_name`), in the query as it came and decoded whole (see `query_forms`).
pub(crate) fn query_values(query: &str, name: &[u8]) -> Vec<Vec<u8>> {
    query_forms(query)
        .flat_map(|(form, _)| {
            parameters(&form)
                .filter(|(n, _)| same_name(n, name))
                .map(|(_, value)| form_decoded(value).collect())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Form-decodes `raw` (`%XX`, `+` for space) byte by byte.
fn form_decoded(raw: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut rest = raw;
    std::iter::from_fn(move || {
        let first = *rest.first()?;
        let (c, len) = match (first, escaped_byte(rest)) {
            (_, Some(v)) => (v, 3),
            (b'+', None) => (b' ', 1),
            (c, None) => (c, 1),
        };
        rest = &rest[len..];
        Some(c)
    })
}

/// `b` without `prefix` (ASCII, in any case) at its start; `None` when it does not start so.
fn strip_ignore_case<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    b.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &b[prefix.len()..])
}

/// Whether form-decoding `raw` gives exactly `want`.
fn decodes_to(raw: &[u8], want: &[u8]) -> bool {
    form_decoded(raw).eq(want.iter().copied())
}

/// Whether a cookie or query parameter called `raw` is the one called `name` to some
/// framework the instance may run, so that a second credential cannot ride past the checks to
/// an app that reads it. Names are compared trimmed (lenient parsers), form-decoded, without
/// case (ASP.NET Core), with `.`, space and `[` read as `_` (PHP), after any leading spaces
/// (PHP drops them), `[` and `]` (Rack), before any blanks after it (Hunchentoot trims the
/// spaces of `token+=`), and up to a `[`, `]`, `*` or NUL that follows the whole
/// name (PHP makes `name[x]` an array under `name` and stops a name at a NUL; Rack reads
/// `name]` as `name`; libsoup reads `name*` as `name`, its value an RFC 5987 extended value,
/// `UTF-8''%65yJ…`, which it decodes; and `name.0`, `name.1`, … as the chunks of one value,
/// which next-auth, Auth.js, Supabase's and Auth0's session libraries split a long cookie
/// into and join again). A browser's cookie-name prefix (`__Host-`, `__Secure-`,
/// in any case) is no part of the name: libwebsockets and Sanic look for the cookie behind either.
fn same_name(raw: &[u8], name: &[u8]) -> bool {
    let raw = trim_blanks(raw);
    if raw == name {
        return true;
    }
    let unprefixed = [&b"__host-"[..], b"__secure-"]
        .iter()
        .find_map(|p| strip_ignore_case(raw, p));
    // A configured name may carry the prefix itself (`__Host-jwt`): compared whole below too.
    if unprefixed.is_some_and(|rest| same_name(rest, name)) {
        return true;
    }
    // A decoded byte takes at least one raw byte.
    if raw.len() < name.len() {
        return false;
    }
    let fold = |c: u8| match c.to_ascii_lowercase() {
        b'.' | b' ' | b'[' => b'_',
        c => c,
    };
    let mut decoded = form_decoded(raw).skip_while(|c| matches!(c, b' ' | b'[' | b']'));
    name.iter()
        .all(|&want| decoded.next().is_some_and(|c| fold(c) == fold(want)))
        && match decoded.find(|&c| c == 0 || c > b' ') {
            None | Some(b'[' | b']' | 0) => true,
            // libsoup's `name*`, the whole name.
            Some(b'*') => decoded.all(|c| c <= b' '),
            // One chunk of a cookie split in numbered pieces.
            Some(b'.') => {
                let mut digits = decoded.peekable();
                digits.peek().is_some() && digits.all(|c| c.is_ascii_digit())
            }
            Some(_) => false,
        }
}

/// The token of a `Bearer` credential; `None` for another scheme (e.g. Basic, meant for the
/// app).
///
/// Anything that starts like `Bearer` must be exactly `Bearer 1*SP b64token`: a near-miss
/// (`Bearer<TAB>x`, `Bearer,x`, `Bearer=x`, `Bearerx`) is refused, not passed over. Passed
/// over, it would reach the instance beside the cookie the router did check, and an app
/// parsing it loosely would take it for the caller's token. So is another scheme's value with
/// `Bearer` further on after a comma or a blank (`Basic eA==, Bearer x`): one credential per
/// field (RFC 9110 §11.6.2), but an app that looks for `Bearer` anywhere in it would find one.
fn bearer(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    const SCHEME: &[u8] = b"bearer";
    let value = value.trim_ascii();
    let Some(scheme) = value.get(..SCHEME.len()) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        // `Bearer` after a comma or a blank of any kind, or at the start behind blanks
        // beyond ASCII (which `str.split()` and `Trim()` drop).
        let starts_bearer = |b: &[u8]| strip_ignore_case(b, SCHEME).is_some();
        let hides_bearer = starts_bearer(trim_blanks_start(value))
            || (1..value.len()).any(|i| {
                (value[i - 1] == b',' || blank_at_end(&value[..i]) > 0)
                    && starts_bearer(&value[i..])
            });
        return if hides_bearer {
            Err(CredentialError::Malformed)
        } else {
            jws_under_another_scheme(value)
        };
    }
    // `1*SP`: RFC 7235 separates scheme and credentials with spaces only.
    let rest = &value[SCHEME.len()..];
    let spaces = rest.iter().take_while(|&&c| c == b' ').count();
    let token = &rest[spaces..];
    if spaces == 0 || !is_b64token(token) {
        return Err(CredentialError::Malformed);
    }
    std::str::from_utf8(token)
        .map(Some)
        .map_err(|_| CredentialError::Malformed)
}

/// Whether `b` has the shape of a JWS in compact form: `eyJ` (base64url of `{"`), three
/// base64url segments, each perhaps padded with `=` (PyJWT takes a padded signature, and a
/// signature is no part of what is signed, so `…sig==` verifies there).
fn is_jws_shaped(b: &[u8]) -> bool {
    b.starts_with(b"eyJ")
        && b.split(|&c| c == b'.').count() == 3
        && b.split(|&c| c == b'.').all(|segment| {
            let body = segment
                .iter()
                .rposition(|&c| c != b'=')
                .map_or(0, |i| i + 1);
            segment[..body]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
        })
}

/// The words of a field: split at commas and at blanks of any kind (Node.js reads header
/// bytes as Latin-1, where 0xA0 is a blank to `\s`; Python's `split()` splits at U+0085).
fn words(value: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        match (0..rest.len()).find(|&i| split_at_start(&rest[i..]) > 0) {
            Some(i) => {
                if i > 0 {
                    out.push(&rest[..i]);
                }
                rest = &rest[i + split_at_start(&rest[i..])..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    out
}

/// Whether `b` holds the signed part of a JWS: `eyJ` (base64url of `{"`), base64url, a `.`,
/// base64url, a `.`. A verifier checks the signature over those bytes as sent, so no token
/// that verifies anywhere spells them otherwise; its signature segment it may (PHP's
/// `base64_decode`, under firebase/php-jwt, skips bytes outside the alphabet).
fn holds_jws(b: &[u8]) -> bool {
    // Where the base64url run from `from` ends.
    let run_end = |from: usize| {
        from + b[from..]
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            .count()
    };
    let mut i = 0;
    while i + 3 <= b.len() {
        if &b[i..i + 3] != b"eyJ" {
            i += 1;
            continue;
        }
        let header_end = run_end(i + 3);
        if b.get(header_end) == Some(&b'.') {
            let payload_end = run_end(header_end + 1);
            if payload_end > header_end + 1 && b.get(payload_end) == Some(&b'.') {
                return true;
            }
        }
        // Every later `eyJ` of this run ends where this one does: on past it, so that each
        // byte is read a bounded number of times (`eyJeyJeyJ…` costs no more than its length).
        i = header_end;
    }
    false
}

/// Whether a value (`Authorization`, a subprotocol) holds a JWS some app could read that
/// [`holds_jws`] does not see as sent: `%`-escaped, or base64-encoded, as in `Basic` credentials, which PHP
/// decodes for every app (`PHP_AUTH_USER`, `PHP_AUTH_PW`: an API key as the user name is
/// common). Lenient parsers find those wherever the word `basic` stands, behind any
/// separator (tuupola/slim-basic-auth matches `/Basic\s+(.*)$/i`; others decode what follows
/// the scheme's first six bytes, whatever the sixth is): so the whole value is decoded, at
/// each of base64's four alignments, which covers a decoding from any byte of it.
fn hides_jws(value: &[u8]) -> bool {
    escapes_jws(value) || decodes_to_jws(value) || squeezes_to_jws(value)
}

/// Whether `b` holds a JWS once its blanks, its bytes beyond ASCII and each `bearer` in it
/// (any case, in either order) are taken out: hapi-auth-jwt2 takes the whole field, drops
/// every `Bearer` and every space from it and verifies what is left, so
/// `eyJhbGciOi JSUzI1NiJ9.eyJ….sig` is a token there.
fn squeezes_to_jws(b: &[u8]) -> bool {
    let squeezed =
        |b: &[u8]| -> Vec<u8> { b.iter().copied().filter(u8::is_ascii_graphic).collect() };
    let unworded = |b: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(b.len());
        let mut rest = b;
        while let Some(&c) = rest.first() {
            rest = strip_ignore_case(rest, b"bearer").unwrap_or_else(|| {
                out.push(c);
                &rest[1..]
            });
        }
        out
    };
    let blanks_out = squeezed(b);
    holds_jws(&blanks_out)
        || holds_jws(&unworded(&blanks_out))
        || holds_jws(&squeezed(&unworded(b)))
}

/// Whether `b` holds a JWS once its `%`-escapes are decoded (and none as sent: see
/// [`holds_jws`]).
fn escapes_jws(b: &[u8]) -> bool {
    b.contains(&b'%') && holds_jws(&form_decoded(b).collect::<Vec<u8>>())
}

/// Whether `b`, base64-decoded from any byte as leniently as PHP's `base64_decode` (bytes
/// outside the alphabet skipped; the standard alphabet, then the URL-safe one), holds a JWS.
/// Decoding is by groups of four: a decoding from any byte is part of the decoding from the
/// first byte of the same alignment, so four decodings cover them all, in linear time.
fn decodes_to_jws(b: &[u8]) -> bool {
    use base64::Engine;
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    [(b'+', b'/'), (b'-', b'_')].iter().any(|&(plus, slash)| {
        let alphabet: Vec<u8> = b
            .iter()
            .filter_map(|&c| match c {
                c if c.is_ascii_alphanumeric() => Some(c),
                c if c == plus => Some(b'+'),
                c if c == slash => Some(b'/'),
                _ => None,
            })
            .collect();
        (0..4).any(|skip| {
            let Some(from) = alphabet.get(skip..) else {
                return false;
            };
            let usable = from.len() - from.len() % 4;
            let decoded = LENIENT.decode(&from[..usable]).unwrap_or_default();
            // `%`-escaped inside too (an app that decodes `PHP_AUTH_USER` once more).
            holds_jws(&decoded) || escapes_jws(&decoded)
        })
    })
}

/// A token in another scheme's `Authorization` (not `Bearer`): a JWS as the whole of its
/// credentials (`JWT eyJ…`, `Token eyJ…`) or as the whole field is read as a `Bearer` token
/// (checked, and taken off where another credential would be). Apps configured for such a
/// scheme (passport-jwt's `fromAuthHeaderWithScheme("JWT")`, Simple JWT's
/// `AUTH_HEADER_TYPES`) or that read the field whole take it for the caller's token: passed
/// over, another tenant's token would reach them unchecked. Any other value holding one (see
/// [`holds_jws`]) is refused (and taken off): among other words (`Basic eA==, JWT eyJ…`),
/// inside a word (`Token token="eyJ…"`, `xBearer eyJ…`), with its signature spelt otherwise
/// (`JWT eyJ….eyJ….ab+/`, which firebase/php-jwt verifies), `%`-escaped, or base64-encoded
/// in `Basic` credentials. Another scheme without one (`Basic`, an opaque `Token`) is the
/// app's.
fn jws_under_another_scheme(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    if !holds_jws(value) {
        return if hides_jws(value) {
            Err(CredentialError::Malformed)
        } else {
            Ok(None)
        };
    }
    let words = words(value);
    // As RFC 7235 writes one, `scheme 1*SP token`, or the token alone, with no other blank
    // (a blank beyond ASCII splits the field for some apps and not for others).
    let plain = value
        .iter()
        .all(|&c| c.is_ascii_graphic() || c == b' ' || c == b'\t');
    let credential = match words[..] {
        [jws] if plain => jws,
        [scheme, jws] if plain && !value.contains(&b',') && !is_jws_shaped(scheme) => jws,
        _ => return Err(CredentialError::Malformed),
    };
    if !is_jws_shaped(credential) {
        return Err(CredentialError::Malformed);
    }
    std::str::from_utf8(credential)
        .map(Some)
        .map_err(|_| CredentialError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_bytes_are_exactly_the_rfc_set() {
        for c in 0..=255u8 {
            let want = c.is_ascii_alphanumeric() || b"-._~+/".contains(&c);
            assert_eq!(is_b64token_byte(c), want, "byte {c:#04x}");
        }
    }

    #[test]
    fn session_cookie_taken_off() {
        let cases: [(&[u8], Option<&[u8]>); 23] = [
            (b"sess=tok", None),
            (b"a=1; sess=tok; b=2", Some(b"a=1; b=2")),
            (b"a=1;sess=tok;", Some(b"a=1")),
            (b"SESS=x; a=1", Some(b"a=1")),
            (b"theme=dark sess=x; a=1", Some(b"a=1")),
            (b"sess[x]=1; a=1", Some(b"a=1")),
            (b"a=1; b=2", Some(b"a=1; b=2")),
            (b"sessx=1; a=sess", Some(b"sessx=1; a=sess")),
            (b"theme=dark sess =x; a=1", Some(b"a=1")),
            (b"a=sess=x; b=1", Some(b"a=sess=x; b=1")),
            ("sess\u{a0}=x; a=1".as_bytes(), Some(b"a=1")),
            ("a=1; \u{a0}sess=x".as_bytes(), Some(b"a=1")),
            (b"a=1; sess\xa0=x", Some(b"a=1")),
            (b"$Version sess=x; a=1", Some(b"a=1")),
            (b"a=1; secure sess=x", Some(b"a=1")),
            // libsoup's RFC 5987 name, libwebsockets' browser prefixes.
            (b"sess*=UTF-8''x; a=1", Some(b"a=1")),
            (b"a=1; SESS*=utf-8'en'%78", Some(b"a=1")),
            (b"__Host-sess=x; a=1", Some(b"a=1")),
            (b"a=1; __secure-sess=x", Some(b"a=1")),
            (
                b"__Host-sessx=1; x__Host-sess=1",
                Some(b"__Host-sessx=1; x__Host-sess=1"),
            ),
            // Chunks; a signature cookie beside it (`cookies`' `name.sig`) is another.
            (b"sess.0=x; sess.12=y; a=1", Some(b"a=1")),
            (b"sess*x=1; a=1", Some(b"sess*x=1; a=1")),
            (
                b"sess.sig=x; sess.=y; sess.1x=z",
                Some(b"sess.sig=x; sess.=y; sess.1x=z"),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                without_token_cookies(value, &TokenPlaces::with_session_cookie(Some("sess")))
                    .as_deref(),
                want,
                "{value:?}"
            );
            assert_eq!(
                has_token_cookie(value, &TokenPlaces::with_session_cookie(Some("sess"))),
                want != Some(value),
                "{value:?}"
            );
        }
        // A configured name that carries a browser prefix itself, as spelt or (token cookies
        // are kept lowercase) folded.
        for name in ["__Host-sess", "__host-sess"] {
            let places = TokenPlaces::with_session_cookie(Some(name));
            for value in [&b"__Host-sess=x"[..], b"__HOST-sess=x", b"__Host-sess.0=x"] {
                assert!(has_token_cookie(value, &places), "{name}: {value:?}");
            }
            assert!(!has_token_cookie(b"__Host-sessx=1", &places), "{name}");
        }
    }

    #[test]
    fn bearer_or_other_scheme() {
        for v in [
            &b"Bearer x"[..],
            b"bearer",
            b"Bearer\tx",
            b"BEARERx",
            b" Bearer x ",
        ] {
            assert!(is_bearer(v), "{v:?}");
        }
        for v in [
            &b"Basic dXNlcg=="[..],
            b"Bear x",
            b"JWT x",
            b"",
            b"Basic xbearer",
            b"Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
            b"Basic eyJhbGciOiJub25lIn0=",
            // `eyJ` alone, or a JWS's start without its second `.`, is no JWS.
            b"Token eyJ9944b09199c62bcf9418ad846dd0e4bb.x",
            b"Basic dXNlcjpleUpoLmV5Snp4",
        ] {
            assert!(!is_bearer(v), "{v:?}");
        }
        // A JWS otherwise than as the whole credentials: refused (and so taken off) wherever
        // it hides, as some app would still read it.
        use base64::Engine;
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        for v in [
            // PHP decodes Basic for every app: the JWS as `PHP_AUTH_USER` or `PHP_AUTH_PW`.
            basic("eyJh.eyJz.c2ln:"),
            basic("api:eyJh.eyJz.c2ln"),
            format!("{}!", basic("api:eyJh.eyJz.c2ln")),
            // Inside a word: an auth-param, behind a prefix (Laravel's `bearerToken()` finds
            // `Bearer ` anywhere), quoted.
            "Token token=\"eyJh.eyJz.c2ln\"".to_owned(),
            "xBearer eyJh.eyJz.c2ln\"".to_owned(),
            // Its signature spelt otherwise (firebase/php-jwt skips bytes outside the
            // alphabet), or `%`-escaped.
            "JWT eyJh.eyJz.c2+/".to_owned(),
            "JWT eyJh.eyJz.c2*ln".to_owned(),
            "JWT %65yJh.eyJz.c2ln".to_owned(),
            // Basic credentials wherever a lenient parser finds them: behind a tab, a colon,
            // any sixth byte, another word, in any case, in the URL-safe alphabet.
            basic("eyJh.eyJz.c2ln:x").replacen(' ', "\t", 1),
            basic("eyJh.eyJz.c2ln:x").replacen(' ', ":", 1),
            basic("eyJh.eyJz.c2ln:x").replacen(' ', "X", 1),
            format!("Token {}", basic("x:eyJh.eyJz.c2ln")),
            basic("x:eyJh.eyJz.c2ln").replacen("Basic", "Foo realm=basic", 1),
            "basic eDpleUpoLmV5SnouYzJsbj8-".to_owned(),
            // Behind any number of other words; `%`-escaped inside.
            format!("Digest a=b, c=d, {}", basic("x:eyJh.eyJz.c2ln")),
            basic("%65yJh.eyJz.c2ln:x"),
            // Split by blanks or `Bearer`s, which hapi-auth-jwt2 takes out of the whole
            // field before it verifies what is left.
            "ey Jh.eyJz.c2ln".to_owned(),
            "eyJh.ey Jz.c2ln".to_owned(),
            "JWT e yJh.eyJz.c2ln".to_owned(),
            "xBearer eyJh.eyJ z.c2ln".to_owned(),
            "eyBearerJh.eyJz.c2ln".to_owned(),
            "ey bear erJh.eyJz.c2ln".to_owned(),
            "eyJh\t.eyJz\u{a0}.c2ln".to_owned(),
        ] {
            assert!(is_bearer(v.as_bytes()), "{v}");
            assert_eq!(bearer(v.as_bytes()), Err(CredentialError::Malformed), "{v}");
        }
        // Read as a credential, a Bearer one's near-misses refused. A JWS under another
        // scheme, or alone, is the token as a Bearer one would be; one among other words,
        // beside blanks beyond ASCII (which Node.js's `\s` and Python's `split()` take for
        // blanks) or behind another scheme's value, is refused, as is `Bearer` there.
        let malformed = Err(CredentialError::Malformed);
        let jws = Ok(Some("eyJh.eyJz.c2ln"));
        for (v, want) in [
            (&b"JWT eyJh.eyJz.c2ln"[..], jws),
            (b"Token  eyJh.eyJz.c2ln", jws),
            (b"eyJh.eyJz.c2ln", jws),
            (b"jwt\teyJh.eyJz.c2ln", jws),
            // Padded, as PyJWT takes it.
            (b"JWT eyJh.eyJz.c2ln==", Ok(Some("eyJh.eyJz.c2ln=="))),
            (b"Basic eA==, JWT eyJh.eyJz.c2ln", malformed),
            (b"JWT eyJh.eyJz.c2ln eyJh.eyJz.c2lu", malformed),
            (b"JWT eyJh.eyJz.c2ln,x", malformed),
            (b"JWT\xa0eyJh.eyJz.c2ln", malformed),
            (b"JWT eyJh.eyJz.c2ln\xa0", malformed),
            (b"JWT eyJh.eyJz.c2ln\xa0x", malformed),
            (b"\xa0eyJh.eyJz.c2ln", malformed),
            (b"JWT\xc2\x85eyJh.eyJz.c2ln", malformed),
            (b"Basic eA==, JWT eyJh.eyJz.c2ln==", malformed),
            (b"Basic eA==, Bearer x", malformed),
            (b"Basic eA== Bearer x", malformed),
            (b"Basic eA==,bearer x", malformed),
            (b"Digest a=b,\tBEARER x", malformed),
            // Behind blanks beyond ASCII, which `str.split()` and `Trim()` drop.
            ("\u{a0}Bearer x".as_bytes(), malformed),
            (b"\xa0Bearer x", malformed),
            ("Basic eA==\u{3000}Bearer x".as_bytes(), malformed),
            ("Basic eA==\u{2028}bearer x".as_bytes(), malformed),
        ] {
            assert!(is_bearer(v), "{v:?}");
            assert_eq!(
                extract_token(&[v], &[], &[], &[], &TokenPlaces::with_session_cookie(None)),
                want,
                "{v:?}"
            );
        }
        // Beside the cookie, it must be the same token.
        assert_eq!(
            extract_token(
                &[b"JWT eyJh.eyJz.c2ln"],
                &[b"sess=eyJh.eyJz.b3RoZXI"],
                &[],
                &[],
                &TokenPlaces::with_session_cookie(Some("sess"))
            ),
            Err(CredentialError::Conflict)
        );
    }

    /// The session cookie `sess`, the cookie `jwt`, the header `X-Access-Token` and the query
    /// parameter `token`.
    fn more_places() -> TokenPlaces {
        TokenPlaces::new(&nexus_config::AuthSettings {
            session_cookie: Some("sess".to_owned()),
            token_cookies: vec!["jwt".to_owned()],
            token_headers: vec!["x-access-token".to_owned()],
            token_query_parameters: vec!["token".to_owned()],
            ..nexus_config::embedded_default().auth
        })
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table-driven test row is a tuple by design
    fn token_headers_and_cookies_carry_the_token_or_agree_with_it() {
        use CredentialError::*;
        let places = more_places();
        let cases: Vec<(
            Vec<&[u8]>,
            Vec<&[u8]>,
            Vec<&[u8]>,
            Result<Option<&str>, CredentialError>,
        )> = vec![
            (vec![], vec![], vec![], Ok(None)),
            // A token header or cookie alone is the credential.
            (vec![], vec![], vec![b"tok"], Ok(Some("tok"))),
            (vec![], vec![], vec![b"Bearer tok"], Ok(Some("tok"))),
            (vec![], vec![], vec![b" JWT  tok "], Ok(Some("tok"))),
            (vec![], vec![b"jwt=tok"], vec![], Ok(Some("tok"))),
            (vec![], vec![b"a=1; JWT=tok"], vec![], Ok(Some("tok"))),
            // Beside another place, the same token or refused.
            (vec![b"Bearer tok"], vec![], vec![b"tok"], Ok(Some("tok"))),
            (vec![b"Bearer tok"], vec![], vec![b"other"], Err(Conflict)),
            (
                vec![b"Bearer tok"],
                vec![b"jwt=other"],
                vec![],
                Err(Conflict),
            ),
            (vec![], vec![b"sess=tok; jwt=other"], vec![], Err(Conflict)),
            (vec![], vec![b"sess=tok"], vec![b"other"], Err(Conflict)),
            (vec![], vec![], vec![b"tok", b"Bearer other"], Err(Conflict)),
            (vec![], vec![], vec![b"tok", b"tok"], Ok(Some("tok"))),
            (
                vec![b"Bearer tok"],
                vec![b"theme=dark jwt=other"],
                vec![],
                Err(Conflict),
            ),
            // An empty one carries none.
            (
                vec![b"Bearer tok"],
                vec![b"jwt="],
                vec![b""],
                Ok(Some("tok")),
            ),
            // What an app could read otherwise is refused.
            (
                vec![b"Bearer tok"],
                vec![],
                vec![b"tok, other"],
                Err(Malformed),
            ),
            (
                vec![b"Bearer tok"],
                vec![],
                vec![b"Bearer tok other"],
                Err(Malformed),
            ),
            (
                vec![b"Bearer tok"],
                vec![],
                vec![b"Bearer\ttok"],
                Err(Malformed),
            ),
            (
                vec![b"Bearer tok"],
                vec![],
                vec!["Bearer\u{a0}tok".as_bytes()],
                Err(Malformed),
            ),
            (
                vec![b"Bearer tok"],
                vec![],
                vec![b"Bearer: tok"],
                Err(Malformed),
            ),
            (vec![b"Bearer tok"], vec![], vec![b"t\"k"], Err(Malformed)),
            (vec![b"Bearer tok"], vec![], vec![b"Bearer"], Err(Malformed)),
            (vec![], vec![], vec![b"bearer "], Err(Malformed)),
            (vec![], vec![b"jwt=bad value"], vec![], Err(Malformed)),
            // Another cookie is the app's.
            (
                vec![b"Bearer tok"],
                vec![b"jwtx=other; xjwt=1"],
                vec![],
                Ok(Some("tok")),
            ),
        ];
        for (auth, cookies, headers, want) in cases {
            assert_eq!(
                extract_token(&auth, &cookies, &headers, &[], &places),
                want,
                "{auth:?} {cookies:?} {headers:?}"
            );
        }
        // Without it configured, the cookie is not read.
        assert_eq!(
            extract_token(
                &[],
                &[b"jwt=tok"],
                &[],
                &[],
                &TokenPlaces::with_session_cookie(Some("sess"))
            ),
            Ok(None)
        );
    }

    #[test]
    fn what_holds_a_jws() {
        for (b, want) in [
            (&b"eyJh.eyJz.c2ln"[..], true),
            (b"eyJ.x.", true),
            (b"Token token=\"eyJh.eyJz.c2+/\"", true),
            (b"eyJh.eyJz", false),
            (b"eyJh..c2ln", false),
            (b"eyJ", false),
            (b"ey", false),
            (b"", false),
            (b"xeyJeyJh.eyJz!eyJa.b.", true),
            (b"eyJh.e yJz.", false),
        ] {
            assert_eq!(holds_jws(b), want, "{}", String::from_utf8_lossy(b));
        }
        // A long run of `eyJ`s (one pass, whatever its length).
        let long = b"eyJ".repeat(20_000);
        assert!(!holds_jws(&long));
        let mut long_then_jws = long.clone();
        long_then_jws.extend_from_slice(b".x.");
        assert!(holds_jws(&long_then_jws));
    }

    #[test]
    fn a_jws_subprotocol_is_a_token_the_others_the_apps() {
        use base64::Engine;
        use CredentialError::{Conflict, Malformed};
        let jws = "eyJh.eyJz.c2ln";
        let other = "eyJh.eyJz.b3RoZXI";
        let none = TokenPlaces::with_session_cookie(Some("sess"));
        let read = |protocols: &[&[u8]], bearer: Option<&str>| {
            let auth = bearer.map(|t| format!("Bearer {t}"));
            let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
            extract_token(&auth, &[], &[], protocols, &none).map(|t| t.map(str::to_owned))
        };
        let own = Ok(Some(jws.to_owned()));
        let k8s = |t: &str| {
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
            format!("base64.binary.k8s.io, base64url.bearer.authorization.k8s.io.{encoded}")
        };
        let escaped = |t: &str| t.replacen('e', "%65", 1);
        for (protocols, bearer, want) in [
            // Alone it is the credential, as `new WebSocket(url, ["access_token", t])` sends.
            (format!("access_token, {jws}"), None, own.clone()),
            (format!("bearer.{jws}"), None, own.clone()),
            (format!("chat,{jws}"), Some(jws), own.clone()),
            // Beside another, the same or refused; blanks beyond ASCII are trimmed as
            // JavaScript's `trim()` trims them.
            (format!("access_token, {other}"), Some(jws), Err(Conflict)),
            (format!("chat, \u{a0}{other}"), Some(jws), Err(Conflict)),
            (format!("x.y.{other}"), Some(jws), Err(Conflict)),
            (format!("{jws}, {other}"), None, Err(Conflict)),
            // Kubernetes' form can only repeat a token read elsewhere.
            (k8s(jws), Some(jws), own.clone()),
            (k8s(other), Some(jws), Err(Malformed)),
            (k8s(jws), None, Err(Malformed)),
            // Padded (Node's `Buffer.from(x, "base64url")` takes it), or the token as it is
            // behind Kubernetes' prefix, or base64 of it in any subprotocol.
            (format!("{}==", k8s(other)), Some(jws), Err(Malformed)),
            (
                format!("base64url.bearer.authorization.k8s.io.{other}"),
                Some(jws),
                Err(Conflict),
            ),
            (
                format!(
                    "access_token, {}",
                    base64::engine::general_purpose::STANDARD.encode(other)
                ),
                Some(jws),
                Err(Malformed),
            ),
            // One an app could still find a token in, otherwise spelt, is refused: quoted,
            // behind a blank or another separator, after another JWS, `%`-escaped (Daphne
            // decodes the field), or no JWS at all.
            (format!("chat, \"{other}\""), Some(jws), Err(Malformed)),
            (format!("access_token {other}"), Some(jws), Err(Malformed)),
            (format!("Bearer_{other}"), Some(jws), Err(Malformed)),
            (format!("Bearer:{other}"), None, Err(Malformed)),
            (format!("{other}.{jws}"), Some(jws), Err(Malformed)),
            (
                format!("{}.{jws}", escaped(other)),
                Some(jws),
                Err(Malformed),
            ),
            (
                format!("chat, {}", escaped(other)),
                Some(jws),
                Err(Malformed),
            ),
            (
                format!("chat, access_token%2C{other}"),
                Some(jws),
                Err(Malformed),
            ),
            // Subprotocols that hold none are the app's (`eyJ` alone is no JWS).
            ("eyJ.only, v1.eyJh".to_owned(), None, Ok(None)),
            ("chat, superchat".to_owned(), Some(jws), own.clone()),
            (
                "chat, v1%2Cx, , base64.binary.k8s.io".to_owned(),
                None,
                Ok(None),
            ),
        ] {
            assert_eq!(read(&[protocols.as_bytes()], bearer), want, "{protocols}");
        }
        assert_eq!(
            without_subprotocol_tokens(
                format!(
                    "chat, {jws} ,x.{other},\"{other}\", {}, {},v2",
                    escaped(other),
                    k8s(other)
                )
                .as_bytes()
            ),
            Some(b"chat, base64.binary.k8s.io, v2".to_vec())
        );
        assert_eq!(without_subprotocol_tokens(jws.as_bytes()), None);
    }

    #[test]
    fn token_header_names_are_read_as_frameworks_fold_them() {
        let places = more_places();
        for (name, want) in [
            ("x-access-token", true),
            ("x_access_token", true),
            ("x-access_token", true),
            ("x.access.token", true),
            ("x.access-token", true),
            ("x-access-tokens", false),
            ("x-access-toke", false),
            ("authorization", false),
        ] {
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            assert_eq!(places.is_token_header(&name), want, "{name}");
        }
        assert!(places.has_headers());
        assert!(!TokenPlaces::with_session_cookie(None).has_headers());
        // As the config writes a name, whatever its spelling there: the two folds agree.
        let settings = nexus_config::parse_str(
            "[auth]\njwks_file = \"k.json\"\ntoken_headers = [\"X_Access.Token\"]\n\
             [store]\nkind = \"file\"\npath = \"b.json\"\n",
            std::path::Path::new("/etc/nexus/edge.toml"),
        )
        .expect("config");
        let configured = TokenPlaces::new(&settings.auth);
        for name in ["x-access-token", "x_access_token", "x.access.token"] {
            let name = http::HeaderName::from_static(name);
            assert!(configured.is_token_header(&name), "{name}");
        }
    }

    #[test]
    fn token_query_parameters_must_repeat_the_token() {
        use CredentialError::Conflict;
        let places = more_places();
        for (query, want) in [
            ("token=tok", Ok(())),
            ("a=1&token=tok&access_token=tok", Ok(())),
            ("token=other", Err(Conflict)),
            ("TOKEN=other", Err(Conflict)),
            ("tok%65n=other", Err(Conflict)),
            ("token[]=other", Err(Conflict)),
            ("access_token=tok&token=other", Err(Conflict)),
            ("tokens=other&xtoken=other", Ok(())),
            ("t=1", Ok(())),
        ] {
            assert_eq!(
                check_query_token("/", Some(query), "tok", &places),
                want,
                "{query:?}"
            );
        }
        // Without a verified token, one that carries anything is refused.
        assert_eq!(
            check_query_token("/", Some("token=x"), "", &places),
            Err(Conflict)
        );
        assert_eq!(check_query_token("/", Some("token="), "", &places), Ok(()));
        assert_eq!(
            check_query_token("/", Some("token=&a=1"), "tok", &places),
            Ok(())
        );
        // Not configured, `token` is the app's.
        let plain = TokenPlaces::with_session_cookie(None);
        assert_eq!(
            check_query_token("/", Some("token=other"), "tok", &plain),
            Ok(())
        );
    }

    #[test]
    fn every_token_cookie_is_taken_off() {
        let places = more_places();
        assert_eq!(
            without_token_cookies(b"sess=a; theme=dark; JWT=b; jwtx=c", &places).as_deref(),
            Some(&b"theme=dark; jwtx=c"[..])
        );
        assert!(has_token_cookie(b"a=1 jwt=x", &places));
        assert!(!has_token_cookie(b"jwtx=1", &places));
    }

    #[test]
    fn query_token_table() {
        use CredentialError::Conflict;
        let cases: [(Option<&str>, Result<(), CredentialError>); 46] = [
            (None, Ok(())),
            (Some(""), Ok(())),
            (Some("page=2&sort=name"), Ok(())),
            (Some("access_token=tok"), Ok(())),
            (Some("a=1&access_token=tok&b=2"), Ok(())),
            (Some("access_token=t%6Fk"), Ok(())),
            (Some("access_token=forged"), Err(Conflict)),
            (Some("a=1&access_token=forged"), Err(Conflict)),
            (Some("a=1;access_token=forged"), Err(Conflict)),
            (Some("Access_Token=forged"), Err(Conflict)),
            (Some("access%5Ftoken=forged"), Err(Conflict)),
            // Empty, it carries nothing.
            (Some("access_token"), Ok(())),
            (Some("access_token=&a=1"), Ok(())),
            (Some("access_token=+"), Err(Conflict)),
            (Some("access_token=tok&access_token=forged"), Err(Conflict)),
            (Some("access_tokens=x&xaccess_token=y"), Ok(())),
            // `URLSearchParams` (Koa 3) drops a leading `?`: `/x??access_token=...`.
            (Some("?access_token=forged"), Err(Conflict)),
            (Some("??access%5Ftoken=forged"), Err(Conflict)),
            (Some("?access_token=tok"), Ok(())),
            // Names PHP folds into `access_token`: `+` and `%20` decode to a space, then
            // `.` and space read as `_`; `[...]` makes an array under the name; a NUL ends it.
            (Some("access+token=x"), Err(Conflict)),
            (Some("access.token=forged"), Err(Conflict)),
            (Some("access%20token=forged"), Err(Conflict)),
            (Some("access_token%00=forged"), Err(Conflict)),
            (Some("access_token%00x=forged"), Err(Conflict)),
            (Some("access_token[]=forged"), Err(Conflict)),
            (Some("access_token%5Bx%5D=forged"), Err(Conflict)),
            (Some("access_token[]=tok"), Ok(())),
            (Some("access_tokenx=forged&xaccess_token=forged"), Ok(())),
            // Leading spaces (PHP drops them), brackets around the name (Rack).
            (Some("+access_token=forged"), Err(Conflict)),
            (Some("%20access.token=forged"), Err(Conflict)),
            (Some("[access_token]=forged"), Err(Conflict)),
            (Some("access_token]=forged"), Err(Conflict)),
            (Some("access_toke=forged"), Ok(())),
            (Some("refresh_token=x"), Ok(())),
            // Doorkeeper reads `bearer_token` beside `access_token` by default.
            (Some("bearer_token=forged"), Err(Conflict)),
            (Some("a=1&Bearer.Token=forged"), Err(Conflict)),
            // Hunchentoot trims the spaces after a name.
            (Some("access_token+=forged"), Err(Conflict)),
            (Some("a=1&access_token%20%20=forged"), Err(Conflict)),
            (Some("access_token%09=forged"), Err(Conflict)),
            (Some("access_token+x=forged"), Ok(())),
            (Some("bearer_token=tok"), Ok(())),
            (Some("bearer=x&token=y"), Ok(())),
            // Decoded whole before it is split (`java.net.URI::getQuery()`): an escaped
            // separator hides nothing.
            (Some("state=1%26access_token=forged"), Err(Conflict)),
            (Some("access_token%3Dforged"), Err(Conflict)),
            (Some("x=%3Baccess_token%3Dforged"), Err(Conflict)),
            (Some("next=%2Fhome%26access_token%3Dtok"), Ok(())),
        ];
        for (query, want) in cases {
            assert_eq!(
                check_query_token("/", query, "tok", &TokenPlaces::with_session_cookie(None)),
                want,
                "{query:?}"
            );
        }
    }

    #[test]
    fn token_parameters_in_the_path_are_checked_as_the_querys() {
        use CredentialError::Conflict;
        let places = TokenPlaces::with_session_cookie(None);
        for (path, want) in [
            ("/login/cb", Ok(())),
            ("/a;jsessionid=1/b", Ok(())),
            ("/a&b=1", Ok(())),
            // Fastify 4 reads the query from a `;` on.
            ("/login/x;access_token=forged", Err(Conflict)),
            ("/login/x;a=1&Access_Token=forged", Err(Conflict)),
            // Elysia reads parameters from the URL's start.
            ("/login/cb&access_token=forged&", Err(Conflict)),
            ("/x&bearer_token=forged/y", Err(Conflict)),
            ("/x;access_token=tok", Ok(())),
            ("/x;access_token=", Ok(())),
        ] {
            assert_eq!(
                check_query_token(path, None, "tok", &places),
                want,
                "{path:?}"
            );
        }
        assert_eq!(
            check_query_token("/x;access_token=tok", None, "", &places),
            Err(Conflict)
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table-driven test row is a tuple by design
    fn table() {
        use CredentialError::*;
        let c = Some("sess");
        let cases: Vec<(
            Vec<&[u8]>,
            Vec<&[u8]>,
            Result<Option<&str>, CredentialError>,
        )> = vec![
            (vec![], vec![], Ok(None)),
            (vec![b"Bearer abc.def.ghi"], vec![], Ok(Some("abc.def.ghi"))),
            (vec![b"bearer abc"], vec![], Ok(Some("abc"))),
            (vec![b"BEARER  abc "], vec![], Ok(Some("abc"))),
            (vec![b"Basic dXNlcjpwYXNz"], vec![], Ok(None)),
            (vec![b"Bearer"], vec![], Err(Malformed)),
            (vec![b"Bearer a b"], vec![], Err(Malformed)),
            (vec![b"Bearer a,b"], vec![], Err(Malformed)),
            (vec![b"Bearer ="], vec![], Err(Malformed)),
            (vec![b"Bearer a", b"Bearer a"], vec![], Err(Duplicate)),
            // Near-misses of the scheme are refused, never passed over as "not ours".
            (vec![b"Bearer\tabc"], vec![], Err(Malformed)),
            (vec![b"Bearer,abc"], vec![], Err(Malformed)),
            (vec![b"Bearer=abc"], vec![], Err(Malformed)),
            (vec![b"Bearerabc"], vec![], Err(Malformed)),
            (vec![b"bearer\t abc"], vec![], Err(Malformed)),
            (vec![b"Bearer\tforged"], vec![b"sess=tok"], Err(Malformed)),
            (vec![b"Bear abc"], vec![], Ok(None)),
            (vec![b"Digest x=1"], vec![], Ok(None)),
            (vec![], vec![b"sess=tok"], Ok(Some("tok"))),
            (vec![], vec![b"a=1; sess=tok; b=2"], Ok(Some("tok"))),
            (vec![], vec![b"sess=\"tok\""], Ok(Some("tok"))),
            (vec![], vec![b"xsess=tok"], Ok(None)),
            (vec![], vec![b"sess=tok", b"sess=tok"], Ok(Some("tok"))),
            (vec![], vec![b"sess=tok; sess=other"], Err(Conflict)),
            // A name or value padded with spaces is the same cookie to lenient parsers.
            (vec![], vec![b"sess =forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"sess= forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"sess = tok"], Ok(Some("tok"))),
            // So is one padded with blanks beyond ASCII, which Python's `strip()` (Django),
            // JavaScript's `trim()` and .NET's `Trim()` drop, in UTF-8 or Latin-1.
            (
                vec![],
                vec!["sess\u{a0}=forged; sess=tok".as_bytes()],
                Err(Conflict),
            ),
            (
                vec![],
                vec!["\u{2003}sess=forged; sess=tok".as_bytes()],
                Err(Conflict),
            ),
            (
                vec![],
                vec!["sess=tok; sess\u{3000}\u{85}=forged".as_bytes()],
                Err(Conflict),
            ),
            (vec![], vec![b"sess\xa0=forged; sess=tok"], Err(Conflict)),
            (
                vec![b"Bearer tok"],
                vec!["sess\u{feff}=forged".as_bytes()],
                Err(Conflict),
            ),
            (vec![], vec!["sess\u{2028}=tok".as_bytes()], Ok(Some("tok"))),
            // And a pair hidden behind one (Python's `SimpleCookie` splits there).
            (
                vec![],
                vec!["a=1\u{a0}sess=forged; sess=tok".as_bytes()],
                Err(Conflict),
            ),
            // A pair behind a bare word and a blank or comma (aiohttp, `SimpleCookie`: the
            // word is a flag, then comes the pair), its own `=` the piece's first.
            (
                vec![b"Bearer tok"],
                vec![b"theme secure sess=forged"],
                Err(Conflict),
            ),
            (
                vec![],
                vec![b"sess=tok; a=1; secure sess=forged"],
                Err(Conflict),
            ),
            (
                vec![],
                vec![b"$Version, sess=forged; sess=tok"],
                Err(Conflict),
            ),
            (
                vec![],
                vec![b"a=\"x;y\" sess=forged; sess=tok"],
                Err(Conflict),
            ),
            (vec![], vec![b"junk\tsess=tok"], Ok(Some("tok"))),
            (vec![], vec![b"junk sessx=1; sess=tok"], Ok(Some("tok"))),
            // Other non-ASCII bytes are part of the name: another cookie.
            (
                vec![],
                vec!["sess\u{e9}=x; sess=tok".as_bytes()],
                Ok(Some("tok")),
            ),
            // Names other frameworks fold into the session cookie's (case, escapes, PHP's
            // `.` and space for `_`) count as it.
            (vec![], vec![b"SESS=forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"s%65ss=forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"Sess=tok"], Ok(Some("tok"))),
            (vec![], vec![b"sessx=tok; sess_=x"], Ok(None)),
            (vec![], vec![b"sess=bad value"], Err(Malformed)),
            // Pairs hidden behind a comma or a blank, as Rack, Python's SimpleCookie and RFC
            // 2965 parsers split them; a PHP array under the name.
            (
                vec![],
                vec![b"theme=dark sess=forged; sess=tok"],
                Err(Conflict),
            ),
            (
                vec![],
                vec![b"$Version=1, sess=forged; sess=tok"],
                Err(Conflict),
            ),
            (vec![], vec![b"a=1,sess=forged"], Ok(Some("forged"))),
            (
                vec![b"Bearer tok"],
                vec![b"theme=dark\tsess=forged"],
                Err(Conflict),
            ),
            (vec![b"Bearer tok"], vec![b"sess[x]=forged"], Err(Conflict)),
            (
                vec![b"Bearer tok"],
                vec![b"sess%5B%5D=forged"],
                Err(Conflict),
            ),
            // An empty value is no token (a logged-out browser's), hidden or not.
            (
                vec![b"Bearer tok"],
                vec![b"theme=dark sess="],
                Ok(Some("tok")),
            ),
            (vec![b"Bearer tok"], vec![b"sess=; a=1"], Ok(Some("tok"))),
            (vec![], vec![b"sess="], Ok(None)),
            (vec![], vec![b"sess=\"\""], Ok(None)),
            (vec![], vec![b"sess=; sess=tok"], Ok(Some("tok"))),
            (
                vec![b"Bearer tok"],
                vec![b"theme=dark sess=tok"],
                Ok(Some("tok")),
            ),
            (vec![], vec![b"theme=dark; sessx=1 xsess=2"], Ok(None)),
            // Blanks around a hidden pair's `=` (SimpleCookie allows them).
            (
                vec![b"Bearer tok"],
                vec![b"theme=dark sess =forged"],
                Err(Conflict),
            ),
            (
                vec![b"Bearer tok"],
                vec![b"$Version=1, sess = forged"],
                Err(Conflict),
            ),
            (
                vec![b"Bearer tok"],
                vec![b"a=1, sess= forged"],
                Err(Conflict),
            ),
            // Inside another pair's value a name is no pair; padding is no pair either.
            (vec![b"Bearer tok"], vec![b"a=sess=forged"], Ok(Some("tok"))),
            (vec![], vec![b"sess=abc=="], Ok(Some("abc=="))),
            (vec![], vec![b"a=x==, b=y=="], Ok(None)),
            (vec![b"Bearer tok"], vec![b"sess=tok"], Ok(Some("tok"))),
            (vec![b"Bearer tok"], vec![b"sess=other"], Err(Conflict)),
            (vec![b"Basic x"], vec![b"sess=tok"], Ok(Some("tok"))),
        ];
        for (auth, cookies, want) in cases {
            assert_eq!(
                extract_token(
                    &auth,
                    &cookies,
                    &[],
                    &[],
                    &TokenPlaces::with_session_cookie(c)
                ),
                want,
                "{auth:?} {cookies:?}"
            );
        }
        assert_eq!(
            extract_token(
                &[],
                &[b"sess=tok"],
                &[],
                &[],
                &TokenPlaces::with_session_cookie(None)
            ),
            Ok(None)
        );
        let php = Some("nexus_session");
        for forged in [
            &b"nexus.session=forged; nexus_session=tok"[..],
            b"nexus session=forged; nexus_session=tok",
            b"nexus[session=forged; nexus_session=tok",
            b"nexus%5Fsession=forged; nexus_session=tok",
            b"nexus%2esession=forged; nexus_session=tok",
            b"NEXUS_SESSION=forged; nexus_session=tok",
        ] {
            assert_eq!(
                extract_token(
                    &[],
                    &[forged],
                    &[],
                    &[],
                    &TokenPlaces::with_session_cookie(php)
                ),
                Err(Conflict),
                "{forged:?}"
            );
        }
        assert_eq!(
            extract_token(
                &[],
                &[b"nexus_sessions=x; nexus-session=y; nexus_session=tok"],
                &[],
                &[],
                &TokenPlaces::with_session_cookie(php)
            ),
            Ok(Some("tok"))
        );
    }
}
