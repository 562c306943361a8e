//! The names a certificate covers, and the name a client asks for, as the index keys them.

use std::borrow::Cow;

/// One subjectAltName DNS entry as the index holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Covered {
    /// `acme.example.com`: that name only.
    Exact(String),
    /// `*.example.com`: any one label in front of the parent held here (`example.com`), as
    /// RFC 6125 §6.4.3 has clients match it. Not the parent itself, nor two labels in front.
    Wildcard(String),
}

/// The entry `san` of a certificate as the index holds it, or `None` for a name no client
/// would match (a partial-label wildcard such as `a*.example.com`, a wildcard over a single
/// label such as `*.com`, an empty label, non-ASCII text: SANs hold A-labels).
pub(crate) fn covered(san: &str) -> Option<Covered> {
    let name = sni_key(san);
    let valid = |n: &str| {
        !n.is_empty()
            && n.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
    };
    match name.strip_prefix("*.") {
        Some(parent) if parent.contains('.') && valid(parent) => {
            Some(Covered::Wildcard(parent.to_owned()))
        }
        Some(_) => None,
        None if valid(&name) => Some(Covered::Exact(name.into_owned())),
        None => None,
    }
}

/// A name as the index looks it up: lowercase, without a trailing dot. Clients send SNI in any
/// case (DNS names are case-insensitive), and a trailing dot is the same name.
pub fn sni_key(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// The parent of `name` a wildcard in front of it would cover: what follows its first label.
pub(crate) fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, parent)| parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_indexed_as_clients_match_them() {
        let exact = |s: &str| Some(Covered::Exact(s.to_owned()));
        let wild = |s: &str| Some(Covered::Wildcard(s.to_owned()));
        for (san, want) in [
            ("acme.example.com", exact("acme.example.com")),
            ("ACME.Example.COM.", exact("acme.example.com")),
            ("*.example.com", wild("example.com")),
            ("*.Example.com", wild("example.com")),
            ("*.com", None),
            ("a*.example.com", None),
            ("*.*.example.com", None),
            ("acme..example.com", None),
            ("", None),
            ("*", None),
            ("bücher.example", None),
            ("xn--bcher-kva.example", exact("xn--bcher-kva.example")),
        ] {
            assert_eq!(covered(san), want, "{san:?}");
        }
    }

    #[test]
    fn a_client_name_is_looked_up_lowercase_without_its_dot() {
        assert_eq!(sni_key("Acme.Example.com."), "acme.example.com");
        assert!(matches!(sni_key("acme.example.com"), Cow::Borrowed(_)));
        assert_eq!(parent("acme.example.com"), Some("example.com"));
        assert_eq!(parent("localhost"), None);
    }
}
