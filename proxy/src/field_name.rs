//! Header field names as the servers and frameworks behind the router may read them.
//!
//! A name the router takes for another field can be the same one to an app: CGI-style
//! servers map `X_User_Id` and `X-User-Id` to one variable (`HTTP_X_USER_ID`), PHP turns the
//! `.` of the `HTTP_X.USER.ID` that Caddy's FastCGI and FrankenPHP pass into `_`, and Grape's
//! `headers` helper builds each name back from such a variable by splitting at `_`, which
//! drops a trailing one (`X-User-Id_` reads as `X-User-Id`). The router compares the names
//! it must find (its own identity fields, credentials, method overrides) the way those read
//! them.

/// Whether a name byte is one some upstream reads as `-`.
pub fn is_dash_alike(c: u8) -> bool {
    matches!(c, b'-' | b'_' | b'.')
}

/// `c`, with `_` and `.` read as `-`.
pub fn fold_dash(c: u8) -> u8 {
    if is_dash_alike(c) {
        b'-'
    } else {
        c
    }
}

/// `name` without the `-`, `_` and `.` it ends with (Grape drops a trailing `_`, which is a
/// trailing `-` or `.` to a server that folds those into it).
pub fn trim_dashes_end(name: &[u8]) -> &[u8] {
    let keep = name.len() - name.iter().rev().take_while(|&&c| is_dash_alike(c)).count();
    &name[..keep]
}

/// Whether `a` begins with `prefix`, `-`, `_` and `.` the same (both lowercase).
pub fn starts_as(a: &[u8], prefix: &[u8]) -> bool {
    a.len() >= prefix.len()
        && a.iter()
            .zip(prefix)
            .all(|(&x, &y)| x == y || (is_dash_alike(x) && is_dash_alike(y)))
}

/// Whether the field `name` (lowercase, as the `http` crate keeps names) is `canonical`
/// (lowercase) to some upstream: `-`, `_` and `.` the same, and trailing ones dropped.
pub fn folds_to(name: &[u8], canonical: &[u8]) -> bool {
    let name = trim_dashes_end(name);
    name.len() == canonical.len() && starts_as(name, canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_as_upstreams_read_them() {
        for (name, canonical, same) in [
            ("x-user-id", "x-user-id", true),
            ("x_user_id", "x-user-id", true),
            ("x.user_id", "x-user-id", true),
            ("x-user-id_", "x-user-id", true),
            ("x-user-id-.", "x-user-id", true),
            ("authorization_", "authorization", true),
            ("x-user-ids", "x-user-id", false),
            ("_x-user-id", "x-user-id", false),
            ("x--user-id", "x-user-id", false),
            ("x-user", "x-user-id", false),
            ("", "x", false),
            ("_", "", true),
        ] {
            assert_eq!(
                folds_to(name.as_bytes(), canonical.as_bytes()),
                same,
                "{name} / {canonical}"
            );
        }
        assert_eq!(trim_dashes_end(b"a-_."), b"a");
        assert_eq!(trim_dashes_end(b"__"), b"");
        assert!(starts_as(b"x_forwarded_for", b"x-forwarded-"));
        assert!(!starts_as(b"x-forw", b"x-forwarded-"));
    }
}
