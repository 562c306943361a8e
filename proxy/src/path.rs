//! One normalised path per request, used for every policy decision and sent upstream.
//!
//! If the policy decided on one spelling of a path and the instance received another,
//! `/billing/../api` would pass a "billing only" rule and reach the API. So the path is
//! normalised exactly once, here, and that same string is what the instance gets.
//!
//! Rules:
//! - origin-form only (starts with `/`);
//! - `%XX` of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded, every other `%XX`
//!   keeps its encoding with uppercase hex;
//! - an encoded `/` or `\` (`%2F`, `%5C`), an encoded NUL and a raw `\` are refused: upstreams
//!   disagree on what they mean, so no prefix rule could be sound with them. So are their
//!   overlong UTF-8 spellings (`%C0%AF`, `%E0%80%AF`, `%C1%9C`), which lenient decoders (old
//!   IIS, some Java stacks) read as the character, and an overlong `%` (`%C0%A5`), which
//!   starts an escape to such a decoder;
//! - raw control characters, spaces, non-ASCII bytes and every other byte that RFC 3986 does
//!   not allow raw in a path (`"` `<` `>` `#` `[` `]` `{` `}` `|` `^` `` ` ``) are refused: a
//!   client must encode them, and passing them on would let upstreams each guess a meaning;
//! - a dot-segment carrying parameters (`..;x`, `.;`, `%2e%2e%3b`, overlong `..%C0%BB`) is
//!   refused: servlet containers (Tomcat, Jetty, Spring) drop `;` parameters and then resolve
//!   the `..`, so `/billing/..;/api` is `/api` to them while it is under `/billing` to any
//!   RFC reading;
//! - a segment of dots and encoded blanks only (`..%20`, `.%09`, `..%20.`, `%20..`, before
//!   parameters too: `..%20;x`; a blank is any ASCII control or space, one in overlong UTF-8,
//!   or a Unicode space such as `%C2%A0`; a `+` too, raw or encoded, a space to form-style
//!   decoders), or one or two dots spelled with Unicode (`%EF%BC%8E%EF%BC%8E`, fullwidth;
//!   the one-dot leader, small full stop, two-dot leader and its vertical form too), in
//!   overlong UTF-8 (`%C0%AE`) or encoded twice (`%252e%252e`), is refused: Windows path
//!   handling drops
//!   trailing blanks and dots, `trim()` in Java, .NET and Python drops blanks at both ends,
//!   Unicode normalisation (NFKC) makes those dots `.`, and a second decoding makes `%252e`
//!   one, so an instance doing any of these reads a `..` that the rules above never saw:
//!   `/login/..%20/admin` would leave a public prefix;
//! - so is a dot-segment that a twice-encoded separator or `;` hides (`..%252F`, `x%252F..`,
//!   `..%253b`, overlong `..%25C0%25AF`): one more decoding makes it a real one, and so is a
//!   twice-encoded NUL (`%2500`). A twice-encoded `/` alone (an encoded URL inside a path) is
//!   passed on;
//! - the Unicode separators NFKC turns into `/` or `\` (`%EF%BC%8F`, fullwidth) are refused
//!   as `%2F` is, and the Unicode semicolons after dots count as `;`: to an instance that
//!   normalises, `/assets/..%EF%BC%8Fadmin` is `/admin`;
//! - an encoded `?` or `#` after dots counts as `;` too, in any spelling (`..%3F`, `..%2523`,
//!   fullwidth): a hop that decodes the path and parses it again ends it there;
//! - `%uXXXX` encoded once more (`%25u002e`) is read as its character by the second-decoding
//!   check (IIS and .NET decode `%u`);
//! - a dot-segment that a Windows best-fit separator cuts out of a segment (`..%C2%A5admin`:
//!   the yen sign is `\` on code page 932) is refused; such a character elsewhere is not;
//! - dot-segments are removed (RFC 3986 §5.2.4) after decoding, so `%2e%2e` counts as `..`;
//!   `..` at the root stays at the root (RFC 3986 behaviour, not an error: `/../x` can only
//!   ever mean `/x`, so refusing it would add a failure mode without closing a hole);
//! - runs of `/` collapse to one; a trailing `/` is kept.

use std::borrow::Cow;

/// Longest path accepted.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Why a path was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not origin-form (`*`, authority-form, empty).
    #[error("request-target is not an absolute path")]
    NotOriginForm,
    /// `%2F` or `%5C`: an encoded path separator (or its overlong UTF-8, `%C0%AF`).
    #[error("encoded path separator")]
    EncodedSeparator,
    /// `%00` (or its overlong UTF-8, `%C0%80`).
    #[error("encoded NUL")]
    EncodedNul,
    /// A raw backslash.
    #[error("backslash in path")]
    Backslash,
    /// A raw byte that must be percent-encoded: control character, space, non-ASCII, or ASCII
    /// outside RFC 3986 `pchar` (`"`, `<`, `#`, `{`, ...).
    #[error("character that must be percent-encoded")]
    ControlChar,
    /// `..;x` or `.;x`: a dot-segment with parameters, `..` to a servlet container.
    #[error("dot-segment with parameters")]
    DotSegmentParameters,
    /// `..%20`, `%EF%BC%8E%EF%BC%8E`: a segment some servers read as a dot-segment.
    #[error("segment that some servers read as a dot-segment")]
    DotSegmentLookalike,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    InvalidPercent,
    /// Longer than [`MAX_PATH_LEN`].
    #[error("path too long")]
    TooLong,
}

impl PathError {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PathError::NotOriginForm => "not_origin_form",
            PathError::EncodedSeparator => "encoded_separator",
            PathError::EncodedNul => "encoded_nul",
            PathError::Backslash => "backslash",
            PathError::ControlChar => "control_char",
            PathError::DotSegmentParameters => "dot_segment_parameters",
            PathError::DotSegmentLookalike => "dot_segment_lookalike",
            PathError::InvalidPercent => "invalid_percent",
            PathError::TooLong => "too_long",
        }
    }
}

/// Splits a request-target into path and query (without the `?`). A fragment never reaches a
/// server; if one does, it is treated as part of the query and left alone.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// The value of one hex digit (either case).
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XX` escape at the start of `s` spells, if `s` starts with one.
pub(crate) fn escaped_byte(s: &[u8]) -> Option<u8> {
    match s {
        [b'%', h, l, ..] => Some(hex_val(*h)? * 16 + hex_val(*l)?),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Bytes allowed raw in a path (RFC 3986 `pchar` plus `/`, minus `%`, handled apart).
fn is_path_char(c: u8) -> bool {
    is_unreserved(c)
        || matches!(
            c,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Normalises a path (no query). See the module docs for the rules.
///
/// Already-normal paths (the common case) are returned borrowed after one byte scan, without
/// allocating. The result is a fixed point: normalising it again returns it unchanged.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if b.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    // Pass 1: validate, and see whether anything needs rewriting.
    let mut needs_work = false;
    // A `%25`: something is encoded twice, for an instance that decodes again to read.
    let mut twice = false;
    // An escape that may start a best-fit separator (`%C2%A5`, `%E2%88%95`, ...).
    let mut best_fit = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let Some(v) = escaped_byte(&b[i..]) else {
                    return Err(PathError::InvalidPercent);
                };
                // A lead byte of an overlong sequence is never valid UTF-8, so only such
                // paths pay for the second look.
                let spelled = if v >= 0xC0 {
                    overlong_ascii(&b[i..])
                } else {
                    None
                };
                match (v, spelled) {
                    (b'/' | b'\\', _) | (_, Some((_, b'/' | b'\\'))) => {
                        return Err(PathError::EncodedSeparator)
                    }
                    // Each separator look-alike starts with this byte.
                    (0xEF, _) if escapes_one_of(&b[i..], &UNICODE_SEPARATORS) => {
                        return Err(PathError::EncodedSeparator)
                    }
                    // A `%` spelled with Unicode (`%EF%BC%852F` is `%2F` after NFKC, `/` once
                    // decoded again): an escape in disguise, refused.
                    (0xEF, _) if escapes_one_of(&b[i..], &UNICODE_PERCENTS) => {
                        return Err(PathError::InvalidPercent)
                    }
                    (0, _) | (_, Some((_, 0))) => return Err(PathError::EncodedNul),
                    (0xC2 | 0xE2, _) => best_fit = true,
                    // An overlong `%` (`%C0%A5`): to a lenient decoder, the start of an
                    // escape it decodes next (`%C0%A52F` is `%2F`, then `/`).
                    (_, Some((_, b'%'))) => return Err(PathError::InvalidPercent),
                    (b'%', _) => twice = true,
                    _ => {}
                }
                if is_unreserved(v)
                    || b[i + 1].is_ascii_lowercase()
                    || b[i + 2].is_ascii_lowercase()
                {
                    needs_work = true;
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::Backslash),
            _ if !is_path_char(c) => return Err(PathError::ControlChar),
            b'/' if matches!(b.get(i + 1), Some(b'.' | b'%' | b'+')) => {
                if is_dot_segment_with_parameters(&b[i + 1..]) {
                    return Err(PathError::DotSegmentParameters);
                }
                if is_dot_segment_lookalike(&b[i + 1..]) {
                    return Err(PathError::DotSegmentLookalike);
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => needs_work = true,
            b'.' if (i == 0 || b[i - 1] == b'/') && is_dot_segment(&b[i..]) => needs_work = true,
            _ => {}
        }
        i += 1;
    }
    if !needs_work {
        if twice {
            check_second_decoding(b)?;
        }
        if best_fit {
            check_best_fit(b)?;
        }
        return Ok(Cow::Borrowed(raw));
    }

    // Pass 2: decode unreserved escapes, uppercase the rest.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Validated in pass 1: two hex digits follow.
            let v = escaped_byte(&b[i..]).unwrap_or(0);
            if is_unreserved(v) {
                decoded.push(char::from(v));
            } else {
                decoded.push('%');
                decoded.push(char::from(b[i + 1].to_ascii_uppercase()));
                decoded.push(char::from(b[i + 2].to_ascii_uppercase()));
            }
            i += 3;
        } else {
            decoded.push(char::from(b[i]));
            i += 1;
        }
    }

    // Pass 3: segments — drop empty and ".", resolve "..", keep a trailing slash.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        // Decoding can spell what pass 1 refuses (`%25%32%65` is `%252e` now): each decoded
        // segment is checked again, so the result holds none.
        if is_dot_segment_with_parameters(seg.as_bytes()) {
            return Err(PathError::DotSegmentParameters);
        }
        if is_dot_segment_lookalike(seg.as_bytes()) {
            return Err(PathError::DotSegmentLookalike);
        }
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || trailing {
        path.push('/');
    }
    if twice {
        check_second_decoding(path.as_bytes())?;
    }
    if best_fit {
        check_best_fit(path.as_bytes())?;
    }
    Ok(Cow::Owned(path))
}

/// True if `s` (starting right after a `/` or at the start) is a `.` or `..` segment,
/// possibly spelled with `%2e`.
fn is_dot_segment(s: &[u8]) -> bool {
    let seg_end = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
    matches!(&s[..seg_end], b"." | b"..")
}

/// True if the segment at the start of `s` is one or two dots (raw or `%2e`) followed by a
/// `;` in any spelling ([`cuts_segment`]).
fn is_dot_segment_with_parameters(s: &[u8]) -> bool {
    let mut rest = s;
    let mut dots = 0;
    loop {
        rest = match (rest.first(), escaped_byte(rest)) {
            (Some(b'.'), _) => &rest[1..],
            (_, Some(b'.')) => &rest[3..],
            _ => break,
        };
        dots += 1;
    }
    matches!(dots, 1 | 2) && cuts_segment(rest)
}

/// Whether `s` starts with what ends a segment's name to some instance: a `;` (parameters,
/// to servlet containers), or an encoded `?` or `#` (to a hop that decodes the path and
/// parses it again, the path ends there: `..%3F` is `..`). Raw, `%3B`, encoded twice
/// (`%253B`), in overlong UTF-8 (`%C0%BB`), or as a Unicode character NFKC maps to one.
fn cuts_segment(s: &[u8]) -> bool {
    let cuts = |c: u8| matches!(c, b';' | b'?' | b'#');
    // A raw `?` or `#` is in no path the router takes; the second-decoding check's view of a
    // path holds them where they were encoded twice.
    s.first().is_some_and(|&c| cuts(c))
        || escaped_byte(s).is_some_and(cuts)
        || twice_escaped_byte(s).is_some_and(cuts)
        || overlong_ascii(s).is_some_and(|(_, c)| cuts(c))
        || escapes_one_of(s, &UNICODE_SEMICOLONS)
        || escapes_one_of(s, &UNICODE_QUERY_MARKS)
}

/// UTF-8 of the characters NFKC turns into `?` or `#` (or a pair starting with one):
/// fullwidth question mark (U+FF1F) and number sign (U+FF03), small question mark (U+FE56)
/// and number sign (U+FE5F), double question mark (U+2047), question exclamation mark
/// (U+2048).
const UNICODE_QUERY_MARKS: [&[u8]; 6] = [
    &[0xEF, 0xBC, 0x9F],
    &[0xEF, 0xBC, 0x83],
    &[0xEF, 0xB9, 0x96],
    &[0xEF, 0xB9, 0x9F],
    &[0xE2, 0x81, 0x87],
    &[0xE2, 0x81, 0x88],
];

/// UTF-8 of characters that Windows' best-fit mapping (ANSI file APIs, and servers that
/// call them) turns into `\` or `/`: yen sign (U+00A5, code page 932) and won sign (U+20A9,
/// code page 949), division slash (U+2215), set minus (U+2216), fraction slash (U+2044),
/// reverse solidus operator (U+29F5). They are ordinary characters in a path (a price), so
/// they are not refused; a dot-segment they would cut out of a segment is
/// ([`check_best_fit`]).
const BEST_FIT_SEPARATORS: [&[u8]; 6] = [
    &[0xC2, 0xA5],
    &[0xE2, 0x82, 0xA9],
    &[0xE2, 0x88, 0x95],
    &[0xE2, 0x88, 0x96],
    &[0xE2, 0x81, 0x84],
    &[0xE2, 0xA7, 0xB5],
];

/// The length of the percent-encoded best-fit separator at the start of `s`, if any.
fn best_fit_separator(s: &[u8]) -> Option<usize> {
    BEST_FIT_SEPARATORS
        .iter()
        .find(|utf8| escapes_one_of(s, &[utf8]))
        .map(|utf8| 3 * utf8.len())
}

/// Refuses a normalised path where a best-fit separator ([`BEST_FIT_SEPARATORS`]) cuts a
/// dot-segment out of a segment: to a Windows server reading the path through an ANSI API,
/// `/login/..%C2%A5admin` is `/login/..\admin`, so `/admin`.
fn check_best_fit(path: &[u8]) -> Result<(), PathError> {
    let mut split = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match (path[i], best_fit_separator(&path[i..])) {
            (b'%', Some(len)) => {
                split.push(b'/');
                i += len;
            }
            (c, _) => {
                split.push(c);
                i += 1;
            }
        }
    }
    check_pieces(&split)
}

/// UTF-8 of the characters NFKC turns into a path separator: fullwidth solidus (U+FF0F),
/// fullwidth reverse solidus (U+FF3C), small reverse solidus (U+FE68). Encoded, they are
/// refused as `%2F` and `%5C` are: to an instance that normalises the path they split a
/// segment the rules here saw whole (`/assets/..%EF%BC%8Fadmin` is `/admin` to it).
const UNICODE_SEPARATORS: [&[u8]; 3] = [
    &[0xEF, 0xBC, 0x8F],
    &[0xEF, 0xBC, 0xBC],
    &[0xEF, 0xB9, 0xA8],
];

/// UTF-8 of the characters NFKC turns into `;`: Greek question mark (U+037E, even NFC
/// does), fullwidth semicolon (U+FF1B), its vertical presentation form (U+FE14), small
/// semicolon (U+FE54). After dots they start parameters as `;` does.
const UNICODE_SEMICOLONS: [&[u8]; 4] = [
    &[0xCD, 0xBE],
    &[0xEF, 0xBC, 0x9B],
    &[0xEF, 0xB8, 0x94],
    &[0xEF, 0xB9, 0x94],
];

/// Whether `s` starts with one of `chars` (UTF-8), each byte percent-encoded (any hex case).
fn escapes_one_of(s: &[u8], chars: &[&[u8]]) -> bool {
    chars.iter().any(|utf8| {
        utf8.iter()
            .enumerate()
            .all(|(k, &u)| s.get(3 * k..).and_then(escaped_byte) == Some(u))
    })
}

/// UTF-8 of the characters NFKC turns into `%`: fullwidth (U+FF05) and small (U+FE6A)
/// percent signs.
const UNICODE_PERCENTS: [&[u8]; 2] = [&[0xEF, 0xBC, 0x85], &[0xEF, 0xB9, 0xAA]];

/// UTF-8 of the characters NFKC turns into dots, with how many: fullwidth full stop (U+FF0E),
/// one dot leader (U+2024), small full stop (U+FE52); two dot leader (U+2025) and its
/// vertical form (U+FE30).
const UNICODE_DOTS: [([u8; 3], u8); 5] = [
    ([0xEF, 0xBC, 0x8E], 1),
    ([0xE2, 0x80, 0xA4], 1),
    ([0xEF, 0xB9, 0x92], 1),
    ([0xE2, 0x80, 0xA5], 2),
    ([0xEF, 0xB8, 0xB0], 2),
];

/// True if the segment at the start of `s` (up to `/`, or to `;` parameters) holds nothing
/// but dots and percent-encoded blanks ([`encoded_blank`]), with at least one of each, or
/// percent-encoded Unicode dots making one or two: a dot-segment to a server that normalises
/// Unicode (NFKC), or trims blanks from a segment's ends (Windows trailing blanks and dots,
/// so `..%20.` too; `trim()` and `strip()` in Java, .NET and Python both ends, control
/// characters and Unicode spaces included). Plain dots (raw or `%2e`) are not: `.` and `..`
/// are resolved here, `..;x` is refused apart, and `...` names a file.
fn is_dot_segment_lookalike(s: &[u8]) -> bool {
    let end = s.iter().position(|&c| c == b'/').unwrap_or(s.len());
    let mut rest = &s[..end];
    let (mut dots, mut blanks, mut unicode) = (0u32, 0, false);
    loop {
        if let Some(r) = rest.strip_prefix(b".") {
            rest = r;
            dots += 1;
        } else if escaped_byte(rest) == Some(b'.') {
            rest = &rest[3..];
            dots += 1;
        } else if let Some((r, n)) = unicode_dot(rest)
            .or_else(|| double_encoded_dot(rest))
            .or_else(|| overlong_dot(rest))
        {
            rest = r;
            dots += u32::from(n);
            unicode = true;
        } else if let Some(len) = encoded_blank(rest) {
            rest = &rest[len..];
            blanks += 1;
        } else if let Some(r) = rest.strip_prefix(b"+") {
            // A space to an instance that decodes its path the way forms are (`+`).
            rest = r;
            blanks += 1;
        } else {
            break;
        }
    }
    // Parameters end the segment too, however spelled.
    let ends = rest.is_empty() || cuts_segment(rest);
    dots > 0 && ends && (blanks > 0 || (unicode && dots <= 2))
}

/// Whether `c` is an ASCII character some `trim()` takes off a string's ends: a control
/// character or a space (Java's `trim()` takes every one up to the space; NUL is refused
/// apart).
fn is_trimmed_ascii(c: u8) -> bool {
    (0x01..=0x20).contains(&c)
}

/// UTF-8 of the Unicode blanks that .NET's `Trim()`, Java's `strip()` or Python's `strip()`
/// take off a string's ends, or that NFKC turns into a space: next line (U+0085), no-break
/// space (U+00A0), Ogham space mark (U+1680), Mongolian vowel separator (U+180E), the spaces
/// U+2000 to U+200A, line and paragraph separators (U+2028, U+2029), narrow no-break space
/// (U+202F), medium mathematical space (U+205F) and ideographic space (U+3000); and the
/// zero-width space (U+200B) and byte order mark (U+FEFF), which .NET Framework's `Trim()`
/// took too (before 4.0).
fn is_unicode_blank(utf8: &[u8]) -> bool {
    matches!(
        utf8,
        [0xC2, 0x85 | 0xA0]
            | [0xE1, 0x9A, 0x80]
            | [0xE1, 0xA0, 0x8E]
            | [0xE2, 0x80, 0x80..=0x8B | 0xA8 | 0xA9 | 0xAF]
            | [0xE2, 0x81, 0x9F]
            | [0xE3, 0x80, 0x80]
            | [0xEF, 0xBB, 0xBF]
    )
}

/// The length of the percent-encoded blank at the start of `s`, if it starts with one: an
/// ASCII control character or space ([`is_trimmed_ascii`]; `%0D`, `%20`), one in overlong
/// UTF-8 (`%C0%A0`), or a Unicode blank ([`is_unicode_blank`]; `%C2%A0`). A `+` encoded
/// (`%2B`, overlong `%C0%AB`) counts too: decoded once more by a form-style decoder, a space.
fn encoded_blank(s: &[u8]) -> Option<usize> {
    let first = escaped_byte(s)?;
    if is_trimmed_ascii(first) || first == b'+' {
        return Some(3);
    }
    if let Some((len, c)) = overlong_ascii(s) {
        return (is_trimmed_ascii(c) || c == b'+').then_some(len);
    }
    let len = match first {
        0xC2 => 2,
        0xE1..=0xE3 | 0xEF => 3,
        _ => return None,
    };
    let mut utf8 = [first, 0, 0];
    for (k, b) in utf8.iter_mut().enumerate().take(len).skip(1) {
        *b = escaped_byte(s.get(3 * k..)?)?;
    }
    is_unicode_blank(&utf8[..len]).then_some(3 * len)
}

/// Refuses a normalised path that hides a dot-segment from every rule above behind a second
/// encoding: read by an instance that decodes the path once more, `/login/..%252Fadmin` is
/// `/login/../admin`, and `/billing/..%253b/api` is `..;` to a servlet container. Twice-encoded
/// separators, dots and `;` are read as such, and the segments they make are checked again.
/// (A twice-encoded `/` alone, as in an encoded URL inside a path, is passed on.)
fn check_second_decoding(path: &[u8]) -> Result<(), PathError> {
    let mut view = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        // `%252E`, or `%25u002E` (IIS and .NET decode `%uXXXX` too): `.` once decoded more.
        let twice = twice_escaped_byte(&path[i..])
            .map(|c| (c, 5))
            .or_else(|| twice_escaped_u(&path[i..]).map(|c| (c, 8)));
        match twice {
            Some((c @ (b'/' | b'.' | b';' | b'?' | b'#'), len)) => {
                view.push(c);
                i += len;
            }
            Some((b'\\', len)) => {
                view.push(b'/');
                i += len;
            }
            Some((0, _)) => return Err(PathError::EncodedNul),
            // A `+` once decoded, a space to a form-style decoder after that.
            Some((b'+', len)) => {
                view.push(b'+');
                i += len;
            }
            // A blank read once: still encoded, as the lookalike rule reads it (`..%2520`
            // is `..%20`, then `..` where trailing blanks are trimmed).
            // And so is a byte of a UTF-8 (or overlong) sequence: `..%25C2%25A0` is `..%C2%A0`,
            // a no-break space after the dots, once decoded again.
            Some((c, len)) if is_trimmed_ascii(c) || c >= 0x80 => {
                view.extend_from_slice(format!("%{c:02X}").as_bytes());
                i += len;
            }
            _ => {
                view.push(path[i]);
                i += 1;
            }
        }
    }
    // A separator look-alike or an overlong separator, once decoded again, splits a segment
    // as `/` does; an overlong NUL or `%` is refused as its single encoding is.
    let mut split = Vec::with_capacity(view.len());
    let mut i = 0;
    while i < view.len() {
        if view[i] != b'%' {
            split.push(view[i]);
            i += 1;
        } else if escapes_one_of(&view[i..], &UNICODE_SEPARATORS) {
            split.push(b'/');
            i += 9;
        } else if let Some(len) = best_fit_separator(&view[i..]) {
            split.push(b'/');
            i += len;
        } else {
            match overlong_ascii(&view[i..]) {
                Some((len, b'/' | b'\\')) => {
                    split.push(b'/');
                    i += len;
                }
                Some((_, 0)) => return Err(PathError::EncodedNul),
                Some((_, b'%')) => return Err(PathError::InvalidPercent),
                _ => {
                    split.push(b'%');
                    i += 1;
                }
            }
        }
    }
    check_pieces(&split)
}

/// Refuses a view of a path (a second decoding's, or one split at best-fit separators) that
/// holds a dot-segment, plain, with parameters, or a look-alike.
fn check_pieces(view: &[u8]) -> Result<(), PathError> {
    for seg in view.split(|&c| c == b'/') {
        if is_dot_segment_with_parameters(seg) {
            return Err(PathError::DotSegmentParameters);
        }
        if matches!(seg, b"." | b"..") || is_dot_segment_lookalike(seg) {
            return Err(PathError::DotSegmentLookalike);
        }
    }
    Ok(())
}

/// The ASCII character a `%uXXXX` escape encoded once more (`%25u002e`) at the start of `s`
/// spells: IIS and .NET's `UrlDecode` read `%uXXXX`, so after one more decoding it is `.`.
fn twice_escaped_u(s: &[u8]) -> Option<u8> {
    let rest = s.strip_prefix(b"%25")?;
    let digits = rest
        .strip_prefix(b"u")
        .or_else(|| rest.strip_prefix(b"U"))?;
    let mut code: u32 = 0;
    for &d in digits.get(..4)? {
        code = code * 16 + u32::from(hex_val(d)?);
    }
    u8::try_from(code).ok().filter(u8::is_ascii)
}

/// The byte a twice-encoded escape at the start of `s` spells (`%252e` is `.`, any hex case):
/// what an instance that decodes the path once more, as some frameworks and file servers do,
/// reads there.
fn twice_escaped_byte(s: &[u8]) -> Option<u8> {
    match (escaped_byte(s)?, s.get(3..5)?) {
        (b'%', &[h, l]) => Some(hex_val(h)? * 16 + hex_val(l)?),
        _ => None,
    }
}

/// `s` after a twice-encoded dot (`%252e`) at its start, counted as one dot.
fn double_encoded_dot(s: &[u8]) -> Option<(&[u8], u8)> {
    (twice_escaped_byte(s)? == b'.').then(|| (&s[5..], 1))
}

/// The ASCII character an overlong UTF-8 sequence, percent-encoded at the start of `s`,
/// spells (`%C0%AE` is `.`, `%E0%80%AF` is `/`), with the length of its encoding. Such a
/// sequence is invalid UTF-8, but a lenient decoder takes the character it spells.
fn overlong_ascii(s: &[u8]) -> Option<(usize, u8)> {
    let lead = escaped_byte(s)?;
    let len = match lead {
        0xC0 | 0xC1 => 2,
        0xE0 => 3,
        0xF0 => 4,
        // Five- and six-byte forms, which old decoders still read (IIS's traversal lists
        // carry them).
        0xF8 => 5,
        0xFC => 6,
        _ => return None,
    };
    let mut code = u32::from(lead) & (0x7F >> len);
    for k in 1..len {
        let next = escaped_byte(s.get(3 * k..)?)?;
        if next & 0xC0 != 0x80 {
            return None;
        }
        code = code << 6 | u32::from(next & 0x3F);
    }
    let ascii = u8::try_from(code).ok().filter(u8::is_ascii)?;
    Some((3 * len, ascii))
}

/// `s` after an overlong UTF-8 dot (`%C0%AE`, `%E0%80%AE`, ...) at its start, counted as one.
fn overlong_dot(s: &[u8]) -> Option<(&[u8], u8)> {
    match overlong_ascii(s)? {
        (len, b'.') => Some((&s[len..], 1)),
        _ => None,
    }
}

/// `s` after a percent-encoded Unicode dot at its start (any hex case), and the dots it
/// stands for, if it starts with one.
fn unicode_dot(s: &[u8]) -> Option<(&[u8], u8)> {
    let bytes = [
        escaped_byte(s)?,
        escaped_byte(s.get(3..)?)?,
        escaped_byte(s.get(6..)?)?,
    ];
    let (_, n) = UNICODE_DOTS.iter().find(|(utf8, _)| *utf8 == bytes)?;
    Some((&s[9..], *n))
}

/// Segment-aware prefix test for public, recovery and API prefixes.
///
/// `/billing` matches `/billing`, `/billing/` and `/billing/x`, not `/billingx`. A prefix that
/// ends with `/` (`/assets/`) matches everything under it and the bare `/assets`.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    let base = prefix.strip_suffix('/').unwrap_or(prefix);
    if base.is_empty() {
        // "/" matches everything.
        return true;
    }
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether `path` is under one of `prefixes` (see [`has_prefix`]) as the app will route it:
/// for the public and recovery paths, which let a request through without a token or past a
/// suspension. A path that runs through a PHP script to more path
/// (`/billing/public/index.php/admin`) is under none: a PHP framework (Symfony, Laravel)
/// whose front controller is not at the root takes everything up to the script's name as its
/// base and routes on the rest (`/admin`), wherever the name stands in the path.
pub fn under_prefix_as_routed(path: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| has_prefix(path, p)) && !runs_through_script(path)
}

/// Whether the app may route `path` to somewhere under one of `prefixes` (lowercase): for the
/// paths a tenant's mode refuses, a deny list, read the other way round from
/// [`under_prefix_as_routed`]'s allow lists. The path is read as apps may route it: without
/// letter case (Express and ASP.NET route `/API/keys` as `/api/keys`), each segment cut at its
/// first `;` (servlet containers and Spring drop path parameters: `/api;x/keys`) and without
/// trailing dots and blanks (IIS drops them: `/api./keys`), and past a PHP script
/// (`/index.php/api/keys`) or a Next.js data route (`/_next/data/<build>/api/…`, which runs
/// the page's handler).
pub fn may_reach_prefix(path: &str, prefixes: &[String]) -> bool {
    if prefixes.is_empty() {
        return false;
    }
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            let mut s = segment.split(';').next().unwrap_or_default();
            loop {
                let trimmed = s.trim_end_matches(['.', ' ']).trim_end_matches("%20");
                if trimmed.len() == s.len() {
                    break;
                }
                s = trimmed;
            }
            s.to_ascii_lowercase()
        })
        .collect();
    let reaches = |from: usize| {
        let rest = format!("/{}", segments[from..].join("/"));
        prefixes.iter().any(|prefix| has_prefix(&rest, prefix))
    };
    if reaches(1.min(segments.len())) {
        return true;
    }
    (1..segments.len()).any(|i| {
        let script = names_script(&segments[i]);
        let data = segments[i] == "_next" && segments.get(i + 1).is_some_and(|s| s == "data");
        (script && i + 1 < segments.len() && reaches(i + 1))
            || (data && i + 3 < segments.len() && reaches(i + 3))
    })
}

/// Whether a segment before the last names a PHP script (`….php`, in any case).
fn runs_through_script(path: &str) -> bool {
    let mut segments = path.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_some() && names_script(segment) {
            return true;
        }
    }
    false
}

/// Whether a path segment names a PHP script (`….php`, in any case, with a name before it).
fn names_script(segment: &str) -> bool {
    const SCRIPT: &[u8] = b".php";
    let s = segment.as_bytes();
    s.len() > SCRIPT.len() && s[s.len() - SCRIPT.len()..].eq_ignore_ascii_case(SCRIPT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_prefix_is_reached_in_any_case_and_through_a_script() {
        let refused = ["/api/".to_owned(), "/ci".to_owned()];
        for (path, want) in [
            ("/api", true),
            ("/api/", true),
            ("/api/v1/keys", true),
            ("/API/v1/keys", true),
            ("/Ci/builds", true),
            ("/ci", true),
            ("/index.php/api/keys", true),
            ("/public/INDEX.PHP/Api", true),
            ("/a.php/b.php/api/x", true),
            ("/apis", false),
            ("/app/api", false),
            ("/cis", false),
            ("/", false),
            ("/index.php", false),
            ("/index.php/", false),
            ("/.php/api/x", false),
            ("/x.php.bak/api", false),
            ("/api;x/keys", true),
            ("/API;a=b/keys", true),
            ("/api;", true),
            ("/api./keys", true),
            ("/api.%20./keys", true),
            ("/api%20/keys", true),
            ("/_next/data/b1/api/x.json", true),
            ("/_next/data/b1/app.json", false),
            ("/_next/data/api", false),
            ("/apix;/keys", false),
            ("/a;/api", false),
        ] {
            assert_eq!(may_reach_prefix(path, &refused), want, "{path}");
        }
        assert!(!may_reach_prefix("/api/x", &[]));
    }

    #[test]
    fn a_path_through_a_php_script_is_under_no_prefix() {
        let prefixes = ["/billing".to_owned(), "/assets/".to_owned()];
        for (path, want) in [
            ("/billing", true),
            ("/billing/invoices", true),
            ("/billing/pay.php", true),
            ("/assets/x.PHP", true),
            ("/billing/public/index.php/admin/users", false),
            ("/billing/public/index.php/", false),
            ("/billing/INDEX.PHP/x", false),
            ("/assets/app.php/x", false),
            ("/billing/.php/x", true),
            ("/billing/php/x", true),
            ("/api", false),
        ] {
            assert_eq!(under_prefix_as_routed(path, &prefixes), want, "{path}");
        }
    }

    #[test]
    fn normalisation_table() {
        let ok = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/billing/../api", "/api"),
            ("/billing/%2e%2e/api", "/api"),
            ("/billing/%2E%2E/api", "/api"),
            ("/billing/.%2e/api", "/api"),
            ("//billing///x", "/billing/x"),
            ("/a/./b/", "/a/b/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%7e", "/~"),
            ("/%7Euser", "/~user"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%3Ab", "/a%3Ab"),
            ("/%41%42", "/AB"),
            ("/a..b/c", "/a..b/c"),
            ("/.well-known/x", "/.well-known/x"),
            ("/...", "/..."),
            ("/.a%20", "/.a%20"),
            // Valid UTF-8, and Latin-1 bytes that start no overlong sequence, are passed on.
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%C0x/%E0%A4%85", "/%C0x/%E0%A4%85"),
            ("/a%C0%AEb", "/a%C0%AEb"),
            ("/%C0%AE%C0%AE%C0%AE", "/%C0%AE%C0%AE%C0%AE"),
            // A twice-encoded separator alone (an encoded URL in a path) is passed on.
            ("/a%252Fb", "/a%252Fb"),
            // A currency sign, or a `?` inside a name, is an ordinary character.
            ("/price/%C2%A5100", "/price/%C2%A5100"),
            ("/shop/%E2%82%A9/x..y", "/shop/%E2%82%A9/x..y"),
            ("/faq/why%3F", "/faq/why%3F"),
            (
                "/proxy/https%253A%252F%252Fexample.com%252Fx",
                "/proxy/https%253A%252F%252Fexample.com%252Fx",
            ),
            ("/%7euser/a%252F..b", "/~user/a%252F..b"),
            ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),
            ("/%2e%2e", "/"),
            ("/%2e%2e/%2E%2E/x", "/x"),
            ("/a/%2e", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/./../b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/%7e", "/~"),
            ("/%c3%a9", "/%C3%A9"),
            ("/%C3%A9", "/%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/a%2ab%3f", "/a%2Ab%3F"),
            ("/a%2db%5fc%2Ed", "/a-b_c.d"),
            ("//", "/"),
            ("///a//", "/a/"),
            ("/billing/./../api/x", "/api/x"),
            // Parameters elsewhere are ordinary path characters.
            ("/a;b/c", "/a;b/c"),
            ("/...;x", "/...;x"),
            ("/a.;b", "/a.;b"),
            ("/;/..", "/"),
            ("/billing;x/../api", "/api"),
            // Blanks or Unicode dots elsewhere are ordinary.
            ("/a/..%20x", "/a/..%20x"),
            ("/a/...x%20", "/a/...x%20"),
            ("/a/%EF%BC%8Ex", "/a/%EF%BC%8Ex"),
            // A twice-encoded dot elsewhere is ordinary.
            ("/a/%252ex", "/a/%252ex"),
            ("/a/%252e%252e%252e", "/a/%252e%252e%252e"),
            // Three dots, however spelled, name a file.
            (
                "/a/%EF%BC%8E%EF%BC%8E%EF%BC%8E",
                "/a/%EF%BC%8E%EF%BC%8E%EF%BC%8E",
            ),
            ("/a/.%E2%80%A5", "/a/.%E2%80%A5"),
            ("/a/%20", "/a/%20"),
            // Blanks and dots beside other characters name files, and a Unicode character
            // that is no blank is not one (U+00A9).
            ("/a/..%C2%A0x", "/a/..%C2%A0x"),
            ("/a/%C2%A0", "/a/%C2%A0"),
            ("/a/.%C2%A9", "/a/.%C2%A9"),
            ("/a/x%0D..", "/a/x%0D.."),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("a/b", PathError::NotOriginForm),
            ("/billing/%2E%2E%2Fapi", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a%00b", PathError::EncodedNul),
            ("/a\\b", PathError::Backslash),
            ("/a b", PathError::ControlChar),
            ("/a\tb", PathError::ControlChar),
            ("/caf\u{e9}", PathError::ControlChar),
            ("/a%", PathError::InvalidPercent),
            ("/a%4", PathError::InvalidPercent),
            ("/a%zz", PathError::InvalidPercent),
            ("/a\"b", PathError::ControlChar),
            ("/a<b", PathError::ControlChar),
            ("/a#b", PathError::ControlChar),
            ("/a{b}", PathError::ControlChar),
            ("/a\u{7f}", PathError::ControlChar),
            ("/a\0b", PathError::ControlChar),
            ("/a\r\nb", PathError::ControlChar),
            ("/%2F", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/..%2f..%2fetc", PathError::EncodedSeparator),
            ("/%E2%80%8B%00", PathError::EncodedNul),
            ("/a\\..\\b", PathError::Backslash),
            ("/%%41", PathError::InvalidPercent),
            ("/%+1", PathError::InvalidPercent),
            ("/billing/..;/api", PathError::DotSegmentParameters),
            ("/billing/..;x=1/api", PathError::DotSegmentParameters),
            ("/billing/.;/api", PathError::DotSegmentParameters),
            ("/billing/%2e%2e;/x", PathError::DotSegmentParameters),
            ("/billing/%2E.;/x", PathError::DotSegmentParameters),
            ("/billing/..%3B/x", PathError::DotSegmentParameters),
            ("/billing/..%3b", PathError::DotSegmentParameters),
            ("/%62illing/..;/x", PathError::DotSegmentParameters),
            ("/..;", PathError::DotSegmentParameters),
            ("/login/..%20/admin", PathError::DotSegmentLookalike),
            // Blanks some `trim()` takes off either end: controls, Unicode spaces, overlong.
            ("/a/%20..", PathError::DotSegmentLookalike),
            ("/login/..%0D/admin", PathError::DotSegmentLookalike),
            ("/login/..%0a/admin", PathError::DotSegmentLookalike),
            ("/login/..%01/admin", PathError::DotSegmentLookalike),
            ("/login/..%1F/admin", PathError::DotSegmentLookalike),
            ("/login/..%C2%A0/admin", PathError::DotSegmentLookalike),
            ("/login/..%c2%85/admin", PathError::DotSegmentLookalike),
            ("/login/..%E2%80%80/admin", PathError::DotSegmentLookalike),
            ("/login/..%E2%80%8A/admin", PathError::DotSegmentLookalike),
            ("/login/..%E2%80%A8/admin", PathError::DotSegmentLookalike),
            ("/login/..%E3%80%80/admin", PathError::DotSegmentLookalike),
            ("/login/%E1%9A%80../admin", PathError::DotSegmentLookalike),
            ("/login/..%C0%A0/admin", PathError::DotSegmentLookalike),
            ("/login/..%E0%80%A0/admin", PathError::DotSegmentLookalike),
            ("/billing/..%2501/api", PathError::DotSegmentLookalike),
            ("/login/..%25C2%25A0/admin", PathError::DotSegmentLookalike),
            ("/login/..%25c0%25a0/admin", PathError::DotSegmentLookalike),
            ("/login/.%20/x", PathError::DotSegmentLookalike),
            ("/billing/%2e%2e%20%09/api", PathError::DotSegmentLookalike),
            ("/billing/..%0c", PathError::DotSegmentLookalike),
            ("/login/..%20./admin", PathError::DotSegmentLookalike),
            ("/login/.%20.%20/admin", PathError::DotSegmentLookalike),
            ("/login/...%20/admin", PathError::DotSegmentLookalike),
            ("/login/%E2%80%A5/admin", PathError::DotSegmentLookalike),
            ("/login/%ef%b8%b0/admin", PathError::DotSegmentLookalike),
            ("/login/.%E2%80%A4/admin", PathError::DotSegmentLookalike),
            ("/billing/..%20;x/api", PathError::DotSegmentLookalike),
            ("/billing/%252e%252e/api", PathError::DotSegmentLookalike),
            ("/billing/.%252E/api", PathError::DotSegmentLookalike),
            ("/login/%252e/x", PathError::DotSegmentLookalike),
            (
                "/billing/%252e%252e%253bx/api",
                PathError::DotSegmentLookalike,
            ),
            // Spelled so that decoding makes them: `%32` is `2`, `%65` is `e`.
            (
                "/billing/%25%32%65%25%32%65/api",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/%25%32e%252e/api", PathError::DotSegmentLookalike),
            (
                "/login/%252%65%252%65/admin",
                PathError::DotSegmentLookalike,
            ),
            (
                "/billing/.%EF%BC%8E%3bx/api",
                PathError::DotSegmentLookalike,
            ),
            ("/login/%2e%09%2e.", PathError::DotSegmentLookalike),
            (
                "/billing/%EF%BC%8E%EF%BC%8E/api",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/.%ef%bc%8e/api", PathError::DotSegmentLookalike),
            (
                "/billing/%E2%80%A4%E2%80%A4",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/%EF%B9%92/api", PathError::DotSegmentLookalike),
            // Overlong UTF-8, which lenient decoders read as the ASCII character.
            ("/billing/%C0%AE%C0%AE/api", PathError::DotSegmentLookalike),
            ("/billing/.%c0%ae/api", PathError::DotSegmentLookalike),
            (
                "/billing/%E0%80%AE%F0%80%80%AE/api",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/..%C0%AF../api", PathError::EncodedSeparator),
            // Twice encoded: NUL, overlong separators and NUL, and an overlong `%` (once or
            // twice) that starts an escape to a lenient decoder.
            ("/login/..%2500/admin", PathError::EncodedNul),
            ("/a%2500b", PathError::EncodedNul),
            ("/login/..%25C0%2580/admin", PathError::EncodedNul),
            ("/login/..%25C0%25AFadmin", PathError::DotSegmentLookalike),
            ("/login/..%25c1%259c/admin", PathError::DotSegmentLookalike),
            (
                "/login/..%25E0%2580%25AFadmin",
                PathError::DotSegmentLookalike,
            ),
            ("/login/%25C0%25AF../admin", PathError::DotSegmentLookalike),
            ("/login/..%C0%A52Fadmin", PathError::InvalidPercent),
            ("/a%C0%A5", PathError::InvalidPercent),
            ("/a%25C0%25A5", PathError::InvalidPercent),
            // `;` in overlong UTF-8 (once or twice encoded), after dots of any spelling.
            ("/billing/..%C0%BB/api", PathError::DotSegmentParameters),
            ("/billing/..%E0%80%BB/api", PathError::DotSegmentParameters),
            ("/billing/.%c0%bbx/api", PathError::DotSegmentParameters),
            (
                "/billing/%C0%AE%C0%AE%C0%BB/api",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/..%25C0%25BB/api", PathError::DotSegmentParameters),
            ("/billing/..%253B/api", PathError::DotSegmentParameters),
            // An encoded `?` or `#` after dots ends the path to a hop that decodes and parses
            // it again (`..%3F` is `..`), in any spelling.
            ("/login/..%3F/admin", PathError::DotSegmentParameters),
            ("/login/..%23/admin", PathError::DotSegmentParameters),
            ("/login/..%253F/admin", PathError::DotSegmentParameters),
            ("/login/.%2e%2523", PathError::DotSegmentParameters),
            ("/login/..%EF%BC%9F/admin", PathError::DotSegmentParameters),
            ("/login/..%E2%81%87/admin", PathError::DotSegmentParameters),
            ("/login/..%20%23", PathError::DotSegmentLookalike),
            ("/login/%250A..%253F", PathError::DotSegmentLookalike),
            (
                "/login/%25C0%25AE%25C0%25AE%253F",
                PathError::DotSegmentLookalike,
            ),
            ("/login/%25u002E.%2523", PathError::DotSegmentParameters),
            (
                "/login/%255c%252e%252e%2523/admin",
                PathError::DotSegmentParameters,
            ),
            // `%uXXXX` encoded once more: IIS and .NET decode it.
            (
                "/login/%25u002e%25u002e/admin",
                PathError::DotSegmentLookalike,
            ),
            ("/login/..%25u002fadmin", PathError::DotSegmentLookalike),
            ("/login/..%25U005Cadmin", PathError::DotSegmentLookalike),
            (
                "/login/%25%75002e%25%75002e/admin",
                PathError::DotSegmentLookalike,
            ),
            // Best-fit separators cutting a dot-segment out of a segment (Windows ANSI APIs).
            ("/login/..%C2%A5admin", PathError::DotSegmentLookalike),
            (
                "/login/x%E2%82%A9..%E2%82%A9..%E2%82%A9admin",
                PathError::DotSegmentLookalike,
            ),
            ("/login/..%e2%88%95admin", PathError::DotSegmentLookalike),
            ("/login/..%25C2%25A5admin", PathError::DotSegmentLookalike),
            // The zero-width space and byte order mark, which old .NET `Trim()` took.
            ("/login/..%E2%80%8B/admin", PathError::DotSegmentLookalike),
            ("/login/%EF%BB%BF../admin", PathError::DotSegmentLookalike),
            // `+`, a space to a form-style decoder (encoded: once decoded more).
            ("/login/..+/admin", PathError::DotSegmentLookalike),
            ("/login/..%2B/admin", PathError::DotSegmentLookalike),
            ("/login/%2E%2E%2b/admin", PathError::DotSegmentLookalike),
            ("/login/..%C0%AB/admin", PathError::DotSegmentLookalike),
            ("/login/..%252B/admin", PathError::DotSegmentLookalike),
            ("/login/+../admin", PathError::DotSegmentLookalike),
            ("/login/.+./admin", PathError::DotSegmentLookalike),
            // Separators spelled with Unicode that NFKC makes `/` or `\`.
            (
                "/assets/..%EF%BC%8Fadmin/users",
                PathError::EncodedSeparator,
            ),
            (
                "/login/%ef%bc%8e%ef%bc%8e%ef%bc%8fadmin",
                PathError::EncodedSeparator,
            ),
            ("/assets/..%EF%BC%BCadmin", PathError::EncodedSeparator),
            ("/assets/..%EF%B9%A8admin", PathError::EncodedSeparator),
            ("/a%EF%BC%8Fb", PathError::EncodedSeparator),
            // A `%` spelled with Unicode: an escape once normalised, `/` decoded again.
            ("/login/..%EF%BC%852Fadmin", PathError::InvalidPercent),
            ("/login/..%ef%b9%aa2fadmin", PathError::InvalidPercent),
            // Encoded twice, one hides a dot-segment as `%252F` does.
            (
                "/assets/..%25EF%25BC%258Fadmin",
                PathError::DotSegmentLookalike,
            ),
            // Semicolons spelled with Unicode start parameters after dots.
            ("/billing/..%CD%BEx/api", PathError::DotSegmentParameters),
            ("/billing/..%EF%BC%9B/api", PathError::DotSegmentParameters),
            (
                "/billing/%EF%BC%8E%EF%BC%8E%EF%B9%94x/api",
                PathError::DotSegmentLookalike,
            ),
            ("/billing/%e0%80%af", PathError::EncodedSeparator),
            ("/billing/..%C1%9C..%C1%9Capi", PathError::EncodedSeparator),
            ("/a%C0%80", PathError::EncodedNul),
            // Encoded twice, a separator, dot or `;` around dots hides a dot-segment.
            ("/login/..%252Fadmin", PathError::DotSegmentLookalike),
            (
                "/login/%252e%252e%252Fadmin",
                PathError::DotSegmentLookalike,
            ),
            ("/login/..%255Cadmin", PathError::DotSegmentLookalike),
            (
                "/assets/..%252F..%252Fadmin",
                PathError::DotSegmentLookalike,
            ),
            ("/a%252F..%252Fb", PathError::DotSegmentLookalike),
            ("/a/x%252F.", PathError::DotSegmentLookalike),
            ("/billing/..%253b/api", PathError::DotSegmentParameters),
            ("/billing/..%253bx/api", PathError::DotSegmentParameters),
            ("/%62illing/..%252F%61pi", PathError::DotSegmentLookalike),
            ("/a/..%2520%252Fadmin", PathError::DotSegmentLookalike),
            (
                "/billing/..%F8%80%80%80%AF../api",
                PathError::EncodedSeparator,
            ),
            (
                "/billing/..%FC%80%80%80%80%AF../api",
                PathError::EncodedSeparator,
            ),
            (
                "/billing/%F8%80%80%80%AE%F8%80%80%80%AE/api",
                PathError::DotSegmentLookalike,
            ),
            ("http://a.x/b", PathError::NotOriginForm),
            ("a.x:443", PathError::NotOriginForm),
        ];
        for (raw, want) in bad {
            assert_eq!(normalize_path(raw), Err(want), "{raw:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(normalize_path(&long), Err(PathError::TooLong));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/api/v1/items",
            "/a/b/",
            "/a%3Ab",
            "/a..b/.c/...",
            "/%C3%A9",
        ] {
            assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn paths_needing_work_are_owned() {
        for p in ["//a", "/a/./b", "/a/..", "/%7e", "/%3a"] {
            assert!(matches!(normalize_path(p), Ok(Cow::Owned(_))), "{p}");
        }
    }

    #[test]
    fn error_labels_are_distinct() {
        use PathError::*;
        let all = [
            NotOriginForm,
            EncodedSeparator,
            EncodedNul,
            Backslash,
            ControlChar,
            DotSegmentParameters,
            DotSegmentLookalike,
            InvalidPercent,
            TooLong,
        ];
        let mut labels: Vec<_> = all.iter().map(PathError::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn length_cap_is_on_the_raw_path() {
        let max = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(normalize_path(&max).is_ok());
        // Dot-segments do not buy room: the raw length counts.
        let dotted = format!("/{}", "./".repeat(MAX_PATH_LEN / 2));
        assert_eq!(normalize_path(&dotted), Err(PathError::TooLong));
    }

    #[test]
    fn prefix_table() {
        let cases = [
            ("/billing", "/billing", true),
            ("/billing/", "/billing", true),
            ("/billing/x", "/billing", true),
            ("/billingx", "/billing", false),
            ("/bill", "/billing", false),
            ("/assets/app.js", "/assets/", true),
            ("/assets", "/assets/", true),
            ("/assetsx", "/assets/", false),
            ("/anything", "/", true),
            ("/api/v1", "/api/", true),
            ("/apiary", "/api/", false),
            ("/admin/recovery/x", "/admin/recovery", true),
            ("/admin/recoveryx", "/admin/recovery", false),
            ("/admin", "/admin/recovery", false),
            ("/", "/billing", false),
        ];
        for (path, prefix, want) in cases {
            assert_eq!(has_prefix(path, prefix), want, "{path} vs {prefix}");
        }
    }

    #[test]
    fn split_target_table() {
        assert_eq!(split_target("/a?b=c"), ("/a", Some("b=c")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("/a?"), ("/a", Some("")));
        assert_eq!(split_target("/a?b?c"), ("/a", Some("b?c")));
    }
}
