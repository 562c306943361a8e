//! Property tests for the request-path parsers: no input panics them, and the normalised path
//! is a fixed point that never escapes the root.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;

use nexus_edge::host::{request_authority, resolve_host, HostTarget};
use nexus_edge::path::{has_prefix, may_reach_prefix, normalize_path, split_target};
use proptest::prelude::*;

fn bases() -> Vec<String> {
    vec!["nexus.app".to_owned(), "eu.nexus.app".to_owned()]
}

/// Resolves segments the simple way, as a reference model.
fn model(segments: &[&str]) -> String {
    let mut stack: Vec<String> = Vec::new();
    for s in segments {
        let decoded = s.replace("%2e", ".").replace("%2E", ".");
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            other => stack.push(other.to_owned()),
        }
    }
    format!("/{}", stack.join("/"))
}

/// Segment model of `has_prefix`: the prefix's segments (one trailing `/` dropped, so `/` has
/// none) are the first segments of the path.
fn prefix_model(path: &str, prefix: &str) -> bool {
    let base = prefix.strip_suffix('/').unwrap_or(prefix);
    let want: Vec<&str> = base.split('/').skip(1).collect();
    let have: Vec<&str> = path.split('/').skip(1).collect();
    have.len() >= want.len() && have[..want.len()] == want[..]
}

/// Hex digits of every `%XX` in `s`.
fn escapes(s: &str) -> Vec<(u8, u8)> {
    let b = s.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'%' && i + 2 < b.len())
        .map(|i| (b[i + 1], b[i + 2]))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn host_parsing_never_panics(s in any::<String>(), shaped in "[a-zA-Z0-9.\\-:\\[\\]@]{0,80}") {
        let _ = resolve_host(&s, &bases());
        let _ = resolve_host(&shaped, &bases());
    }

    #[test]
    fn authority_never_panics(headers in proptest::collection::vec(any::<Vec<u8>>(), 0..3), uri in proptest::option::of(".{0,40}"), h2 in any::<bool>()) {
        let refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
        let _ = request_authority(&refs, uri.as_deref(), h2);
    }

    #[test]
    fn host_is_case_insensitive(h in "[a-z0-9.\\-]{1,40}") {
        let upper = h.to_ascii_uppercase();
        prop_assert_eq!(resolve_host(&h, &bases()), resolve_host(&upper, &bases()));
        if let Ok(HostTarget::Subdomain(t)) = resolve_host(&h, &bases()) {
            prop_assert!(t.as_str().bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
        }
    }

    #[test]
    fn normalisation_never_panics_and_is_a_fixed_point(s in any::<String>(), shaped in "/[a-zA-Z0-9./%~_;\\-]{0,60}") {
        for input in [s.as_str(), shaped.as_str()] {
            if let Ok(y) = normalize_path(input) {
                let again = normalize_path(&y).map(|c| c.into_owned());
                prop_assert_eq!(again.as_deref(), Ok(y.as_ref()));
                prop_assert!(y.starts_with('/'));
                prop_assert!(!y.contains("//") && !y.contains("/./") && !y.contains("/../"), "{}", y);
                prop_assert!(!y.ends_with("/.") && !y.ends_with("/.."), "{}", y);
            }
        }
        let (p, _) = split_target(&s);
        let _ = normalize_path(p);
    }

    #[test]
    fn dot_segments_never_escape(segs in proptest::collection::vec(prop::sample::select(vec!["a", "b", "..", ".", "%2e", "%2E%2e", "", "billing"]), 0..12)) {
        let raw = format!("/{}", segs.join("/"));
        let got = normalize_path(&raw).expect("only safe characters");
        let want = model(&segs);
        // The model drops a trailing slash; compare without it.
        let got_trim = if got.len() > 1 { got.trim_end_matches('/') } else { got.as_ref() };
        prop_assert_eq!(got_trim, want.as_str(), "raw {}", raw);
    }

    #[test]
    fn a_servlet_reading_of_the_path_agrees(
        segs in proptest::collection::vec(prop::sample::select(vec![
            "a", "billing", "..", ".", "%2e", "%2E%2e", "", ";", ";x", "a;x", "..;", ".;x",
            "%2e%2e;", "..%3b", ".%3Bx", "...;", "%3b",
        ]), 0..10),
    ) {
        // A servlet container drops each segment's `;` parameters, then resolves dot-segments.
        // Whatever the router accepts must name the same path to it: no output segment may
        // be `.` or `..` once its parameters are dropped.
        let raw = format!("/{}", segs.join("/"));
        if let Ok(got) = normalize_path(&raw) {
            for seg in got.split('/') {
                let bare = seg.split(';').next().unwrap_or("");
                prop_assert!(bare != "." && bare != "..", "{} -> {}", raw, got);
            }
            let again = normalize_path(&got).map(|c| c.into_owned());
            prop_assert_eq!(again.as_deref(), Ok(got.as_ref()));
        }
    }

    #[test]
    fn prefix_matches_by_segment(path in "(/[a-c]{1,3}){1,4}/?", prefix in "(/[a-c]{1,3}){1,2}") {
        let want = path == prefix || path.starts_with(&format!("{prefix}/"));
        prop_assert_eq!(has_prefix(&path, &prefix), want);
    }

    #[test]
    fn prefix_agrees_with_segment_model(
        path in "(/[ab.]{0,2}){1,4}/?",
        prefix in "/|(/[ab.]{1,2}){1,2}/?",
    ) {
        prop_assert_eq!(has_prefix(&path, &prefix), prefix_model(&path, &prefix), "{} vs {}", path, prefix);
    }

    #[test]
    fn a_refused_prefix_is_reached_whatever_the_case_or_a_script_before_it(
        path in "(/[aAbB.pPhH]{0,5}){1,5}/?",
        prefix in "(/[ab]{1,2}){1,2}/?",
        any_path in any::<String>(),
    ) {
        let refused = [prefix.clone()];
        let got = may_reach_prefix(&path, &refused);
        // At least what the plain segment test refuses, and the same in any case.
        prop_assert!(got || !has_prefix(&path, &prefix));
        prop_assert_eq!(got, may_reach_prefix(&path.to_ascii_uppercase(), &refused));
        // Behind a script, as the app would route it.
        if has_prefix(&path.to_ascii_lowercase(), &prefix) {
            let behind = format!("/app/INDEX.php{path}");
            prop_assert!(may_reach_prefix(&behind, &refused), "{}", behind);
        }
        let _ = may_reach_prefix(&any_path, &refused);
    }

    #[test]
    fn prefix_decisions_see_through_dot_segments(
        segs in proptest::collection::vec(prop::sample::select(vec!["a", "b", "..", ".", "%2e%2E", ""]), 0..10),
        prefix in "(/[ab]){1,2}/?",
    ) {
        // Deciding on the normalised path is deciding on what the path really names.
        let raw = format!("/{}", segs.join("/"));
        let got = normalize_path(&raw).expect("only safe characters");
        prop_assert_eq!(has_prefix(&got, &prefix), prefix_model(&model(&segs), &prefix), "{} -> {}", raw, got);
    }

    #[test]
    fn escapes_are_canonical(s in "/([a-zA-Z0-9/.~_\\-]|%[0-9a-fA-F]{2}){0,30}") {
        if let Ok(y) = normalize_path(&s) {
            for (h, l) in escapes(&y) {
                let v = u8::from_str_radix(std::str::from_utf8(&[h, l]).expect("ascii"), 16).expect("hex");
                prop_assert!(!h.is_ascii_lowercase() && !l.is_ascii_lowercase(), "{}", y);
                prop_assert!(!(v.is_ascii_alphanumeric() || b"-._~".contains(&v)), "{}", y);
                prop_assert!(v != b'/' && v != b'\\' && v != 0, "{}", y);
            }
            // Borrowed exactly when nothing changed.
            let borrowed = matches!(normalize_path(&s), Ok(Cow::Borrowed(_)));
            prop_assert_eq!(borrowed, y == s, "{}", s);
        }
    }

    #[test]
    fn resolved_hosts_are_canonical(h in "(([a-zA-Z0-9.\\-]{1,30}|[a-z]{1,3}(\\.[a-z]{1,3}){0,2})(\\.nexus\\.app|\\.eu\\.nexus\\.app)?|[Nn]exus\\.app|[Ee]u\\.nexus\\.app)\\.?(:[0-9]{1,5})?") {
        match resolve_host(&h, &bases()) {
            Ok(HostTarget::CustomDomain(d)) => {
                // Outside every base: names under one never reach the domain index unscoped.
                prop_assert!(d != "nexus.app" && !d.ends_with(".nexus.app"), "{}", d);
                prop_assert!(!d.contains(':') && !d.ends_with('.') && !d.is_empty(), "{}", d);
                prop_assert!(d.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'), "{}", d);
                prop_assert_eq!(resolve_host(&d, &bases()), Ok(HostTarget::CustomDomain(d.clone())));
            }
            Ok(HostTarget::UnderTenant { domain, tenant }) => {
                // The tenant is the label in front of the longest base the name is under.
                let base = if domain.ends_with(".eu.nexus.app") { "eu.nexus.app" } else { "nexus.app" };
                let front = domain.strip_suffix(&format!(".{base}")).unwrap_or_default();
                let (deeper, label) = front.rsplit_once('.').unwrap_or_default();
                prop_assert!(!deeper.is_empty() && label == tenant.as_str(), "{} -> {}", domain, tenant.as_str());
                prop_assert_eq!(resolve_host(&domain, &bases()), Ok(HostTarget::UnderTenant { domain: domain.clone(), tenant: tenant.clone() }));
            }
            Ok(HostTarget::Reserved) => {
                let lower = h.to_ascii_lowercase();
                let name = lower.split(':').next().unwrap_or_default().trim_end_matches('.');
                prop_assert!(name == "nexus.app" || name == "eu.nexus.app", "{}", h);
            }
            Ok(HostTarget::Subdomain(t)) => {
                // The name is `<tenant>.<base>` for one of the bases, and resolves alike when
                // written canonically. (Re-resolving `<tenant>.nexus.app` is not the same
                // name: `eu.eu.nexus.app` is tenant `eu` under `eu.nexus.app`, while
                // `eu.nexus.app` is a base, no tenant's.)
                let lower = h.to_ascii_lowercase();
                let name = lower.split(':').next().unwrap_or_default().trim_end_matches('.');
                prop_assert!(bases().iter().any(|b| name == format!("{}.{b}", t.as_str())), "{} -> {}", h, t.as_str());
                prop_assert_eq!(resolve_host(name, &bases()), Ok(HostTarget::Subdomain(t.clone())));
            }
            Err(_) => {}
        }
    }

    #[test]
    fn chosen_authority_comes_from_the_request(
        headers in proptest::collection::vec("[a-zA-Z.:, ]{0,12}", 0..3),
        uri in proptest::option::of("[a-zA-Z.:]{0,12}"),
        h2 in any::<bool>(),
    ) {
        let refs: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
        if let Ok(a) = request_authority(&refs, uri.as_deref(), h2) {
            match headers.as_slice() {
                [one] => prop_assert_eq!(a, one.trim_matches(|c| c == ' ' || c == '\t')),
                [] => { prop_assert!(h2); prop_assert_eq!(Some(a), uri.as_deref()); }
                _ => prop_assert!(false, "several Host headers accepted"),
            }
            prop_assert!(!a.contains(','));
        }
    }
}
