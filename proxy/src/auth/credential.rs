//! Taking the token from the request: `Authorization: Bearer` or the session cookie.
//!
//! Tokens in the query string are never read (they end up in logs and referrers). If the
//! header and the cookie both carry a token they must be the same token: otherwise it is not
//! clear who the caller is, and the request is refused. The same holds for an
//! `access_token` query parameter (RFC 6750 §2.3), which some frameworks read (ASP.NET for
//! SignalR, Spring when allowed): it may only repeat the verified token.

use super::error::CredentialError;
use crate::path::escaped_byte;

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

/// The token from `Authorization: Bearer` headers and/or the named cookie; `None` if neither
/// carries one. A non-Bearer `Authorization` (e.g. Basic, meant for the app) is not ours and
/// counts as no token.
pub fn extract_token<'a>(
    authorization: &[&'a [u8]],
    cookie_headers: &[&'a [u8]],
    cookie_name: Option<&str>,
) -> Result<Option<&'a str>, CredentialError> {
    let header_token = match authorization {
        [] => None,
        [one] => bearer(one)?,
        _ => return Err(CredentialError::Duplicate),
    };
    let mut cookie_token: Option<&'a str> = None;
    if let Some(name) = cookie_name {
        for header in cookie_headers {
            for pair in header.split(|&c| c == b';') {
                let pair = pair.trim_ascii();
                let Some(eq) = pair.iter().position(|&c| c == b'=') else {
                    continue;
                };
                if !same_cookie_name(&pair[..eq], name.as_bytes()) {
                    continue;
                }
                let mut value = pair[eq + 1..].trim_ascii();
                if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                    value = &value[1..value.len() - 1];
                }
                if !is_b64token(value) {
                    return Err(CredentialError::Malformed);
                }
                let value = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
                match cookie_token {
                    Some(prev) if prev != value => return Err(CredentialError::Conflict),
                    _ => cookie_token = Some(value),
                }
            }
        }
    }
    match (header_token, cookie_token) {
        (Some(h), Some(c)) if h != c => Err(CredentialError::Conflict),
        (Some(h), _) => Ok(Some(h)),
        (None, c) => Ok(c),
    }
}

/// The query parameter RFC 6750 §2.3 defines for bearer tokens.
const QUERY_TOKEN: &[u8] = b"access_token";

/// Checks that every `access_token` parameter of `query` (name without case, as ASP.NET
/// reads it; `&` or `;` separated; `%XX` and `+` decoded) carries exactly `token`: the router
/// never authenticates from the query, so any other value is a second, unchecked credential
/// that would reach the instance beside the verified one.
pub fn check_query_token(query: Option<&str>, token: &str) -> Result<(), CredentialError> {
    let Some(query) = query.filter(|q| q.len() >= QUERY_TOKEN.len()) else {
        return Ok(());
    };
    for pair in query.as_bytes().split(|&c| c == b'&' || c == b';') {
        let (name, value) = match pair.iter().position(|&c| c == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &b""[..]),
        };
        if name.len() >= QUERY_TOKEN.len()
            && decodes_to(name, QUERY_TOKEN, |c| c.to_ascii_lowercase())
            && !decodes_to(value, token.as_bytes(), |c| c)
        {
            return Err(CredentialError::Conflict);
        }
    }
    Ok(())
}

/// Whether form-decoding `raw` (`%XX`, `+` for space) gives `want`, both sides mapped through
/// `fold` byte by byte (how a framework folds names).
fn decodes_to(raw: &[u8], want: &[u8], fold: impl Fn(u8) -> u8) -> bool {
    let mut want = want.iter().map(|&c| fold(c));
    let mut rest = raw;
    while let Some(&first) = rest.first() {
        let (c, len) = match (first, escaped_byte(rest)) {
            (_, Some(v)) => (v, 3),
            (b'+', None) => (b' ', 1),
            (c, None) => (c, 1),
        };
        rest = &rest[len..];
        if want.next() != Some(fold(c)) {
            return false;
        }
    }
    want.next().is_none()
}

/// Whether a cookie called `raw` is the session cookie `name` to some framework the instance
/// may run, so that a second session cookie cannot ride past this check to an app that reads
/// it: names are compared trimmed (lenient parsers), form-decoded with `.`, space and `[`
/// read as `_` (PHP) and without case (ASP.NET Core).
fn same_cookie_name(raw: &[u8], name: &[u8]) -> bool {
    let raw = raw.trim_ascii();
    if raw == name {
        return true;
    }
    // An escape spells one byte in three: anything outside this range cannot match.
    if raw.len() < name.len() || raw.len() > 3 * name.len() {
        return false;
    }
    decodes_to(raw, name, |c| match c.to_ascii_lowercase() {
        b'.' | b' ' | b'[' => b'_',
        c => c,
    })
}

/// The token of a `Bearer` credential; `None` for another scheme (e.g. Basic, meant for the
/// app).
///
/// Anything that starts like `Bearer` must be exactly `Bearer 1*SP b64token`: a near-miss
/// (`Bearer<TAB>x`, `Bearer,x`, `Bearer=x`, `Bearerx`) is refused, not passed over. Passed
/// over, it would reach the instance beside the cookie the router did check, and an app
/// parsing it loosely would take it for the caller's token.
fn bearer(value: &[u8]) -> Result<Option<&str>, CredentialError> {
    const SCHEME: &[u8] = b"bearer";
    let value = value.trim_ascii();
    let Some(scheme) = value.get(..SCHEME.len()) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return Ok(None);
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
    fn query_token_table() {
        use CredentialError::Conflict;
        let cases: [(Option<&str>, Result<(), CredentialError>); 16] = [
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
            (Some("access_token"), Err(Conflict)),
            (Some("access_token=tok&access_token=forged"), Err(Conflict)),
            (Some("access_tokens=x&xaccess_token=y"), Ok(())),
            (Some("access+token=x"), Ok(())),
            (Some("refresh_token=x"), Ok(())),
        ];
        for (query, want) in cases {
            assert_eq!(check_query_token(query, "tok"), want, "{query:?}");
        }
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
            // Names other frameworks fold into the session cookie's (case, escapes, PHP's
            // `.` and space for `_`) count as it.
            (vec![], vec![b"SESS=forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"s%65ss=forged; sess=tok"], Err(Conflict)),
            (vec![], vec![b"Sess=tok"], Ok(Some("tok"))),
            (vec![], vec![b"sessx=tok; sess_=x"], Ok(None)),
            (vec![], vec![b"sess=bad value"], Err(Malformed)),
            (vec![b"Bearer tok"], vec![b"sess=tok"], Ok(Some("tok"))),
            (vec![b"Bearer tok"], vec![b"sess=other"], Err(Conflict)),
            (vec![b"Basic x"], vec![b"sess=tok"], Ok(Some("tok"))),
        ];
        for (auth, cookies, want) in cases {
            assert_eq!(
                extract_token(&auth, &cookies, c),
                want,
                "{auth:?} {cookies:?}"
            );
        }
        assert_eq!(extract_token(&[], &[b"sess=tok"], None), Ok(None));
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
                extract_token(&[], &[forged], php),
                Err(Conflict),
                "{forged:?}"
            );
        }
        assert_eq!(
            extract_token(
                &[],
                &[b"nexus_sessions=x; nexus-session=y; nexus_session=tok"],
                php
            ),
            Ok(Some("tok"))
        );
    }
}
