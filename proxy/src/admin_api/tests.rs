//! The admin API's pure parts, table-driven: routes, queries, preconditions, tokens, bodies.
//! The API against a real router and store is tested in `tests/tests/admin_api.rs`.

use http::Method;
use nexus_binding_store::{IfUnchanged, Mutation, Revision, TenantId};

use super::exec::{rebind_change, record, status_change, Listed};
use super::route::{
    precondition, read_query, route, write_query, Read, Route, RouteError, Write, WriteQuery,
};
use super::tokens::{entry_for, new_token, Tokens};

fn t(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

#[test]
fn each_resource_answers_its_methods_and_nothing_else_is_one() {
    let ok = [
        (Method::GET, "/v1/tenants", Route::Read(Read::List)),
        (
            Method::GET,
            "/v1/tenants/acme",
            Route::Read(Read::Get(t("acme"))),
        ),
        (
            Method::PUT,
            "/v1/tenants/acme",
            Route::Write(Write::Put(t("acme"))),
        ),
        (
            Method::DELETE,
            "/v1/tenants/acme",
            Route::Write(Write::Delete(t("acme"))),
        ),
        (
            Method::POST,
            "/v1/tenants/acme/rebind",
            Route::Write(Write::Rebind(t("acme"))),
        ),
        (
            Method::PUT,
            "/v1/tenants/acme/status",
            Route::Write(Write::SetStatus(t("acme"))),
        ),
        (
            Method::GET,
            "/v1/tenants/acme/history",
            Route::Read(Read::History(t("acme"))),
        ),
        (Method::GET, "/v1/replicas", Route::Read(Read::Replicas)),
    ];
    for (m, path, want) in ok {
        assert_eq!(route(&m, path), Ok(want), "{m} {path}");
    }
    let refused = [
        (
            Method::POST,
            "/v1/tenants",
            RouteError::MethodNotAllowed("GET"),
        ),
        (
            Method::PATCH,
            "/v1/tenants/acme",
            RouteError::MethodNotAllowed("GET, PUT, DELETE"),
        ),
        (
            Method::GET,
            "/v1/tenants/acme/rebind",
            RouteError::MethodNotAllowed("POST"),
        ),
        (
            Method::POST,
            "/v1/replicas",
            RouteError::MethodNotAllowed("GET"),
        ),
        (Method::GET, "/", RouteError::NotFound),
        (Method::GET, "/v1", RouteError::NotFound),
        (Method::GET, "/v1/", RouteError::NotFound),
        (Method::GET, "/v1/tenants/", RouteError::NotFound),
        (Method::GET, "/v1/tenants/acme/", RouteError::NotFound),
        (Method::GET, "/v1//tenants", RouteError::NotFound),
        (Method::GET, "/v2/tenants", RouteError::NotFound),
        (Method::GET, "/v1/tenants/acme/audit", RouteError::NotFound),
        (Method::GET, "/metrics", RouteError::NotFound),
    ];
    for (m, path, want) in refused {
        assert_eq!(route(&m, path), Err(want), "{m} {path}");
    }
    // A path's tenant is checked as a record's: never decoded, never folded.
    for bad in ["ACME", "acme%2Fx", "..", "a.b", "%61cme"] {
        let path = format!("/v1/tenants/{bad}");
        assert!(
            matches!(route(&Method::GET, &path), Err(RouteError::BadTenant(_))),
            "{path}"
        );
    }
}

#[test]
fn a_write_takes_always_write_and_wait_and_a_read_no_query() {
    assert_eq!(write_query(None), Ok(WriteQuery::default()));
    assert_eq!(write_query(Some("")), Ok(WriteQuery::default()));
    assert_eq!(
        write_query(Some("always_write=true&wait=10s")),
        Ok(WriteQuery {
            if_unchanged: IfUnchanged::Write,
            wait: Some(std::time::Duration::from_secs(10)),
        })
    );
    for q in [
        "wiat=10s",
        "wait=10s&wait=20s",
        "wait=0s",
        "wait=500ms",
        "wait=31s",
        "wait=soon",
        "always_write=yes",
        "always_write",
    ] {
        assert!(write_query(Some(q)).is_err(), "?{q}");
    }
    assert_eq!(read_query(None), Ok(()));
    assert_eq!(read_query(Some("&")), Ok(()));
    for q in ["wait=10s", "x", "a=1&b=2"] {
        assert!(read_query(Some(q)).is_err(), "?{q}");
    }
}

#[test]
fn preconditions_are_one_quoted_revision_or_a_star_for_absent() {
    assert_eq!(precondition(&[], &[]), Ok(None));
    assert_eq!(precondition(&[b"\"12\""], &[]), Ok(Some(Revision(12))));
    assert_eq!(precondition(&[b" \"7\" "], &[]), Ok(Some(Revision(7))));
    assert_eq!(precondition(&[], &[b"*"]), Ok(Some(Revision::ZERO)));
    // Each pair: the If-Match values, the If-None-Match values.
    type Fields<'a> = &'a [&'a [u8]];
    let refused: [(Fields, Fields); 11] = [
        (&[b"12"], &[]),
        (&[b"W/\"12\""], &[]),
        (&[b"\"12\", \"13\""], &[]),
        (&[b"*"], &[]),
        (&[b"\"\""], &[]),
        (&[b"\"0\""], &[]),
        (&[b"\"-1\""], &[]),
        (&[b"\"99999999999999999999999\""], &[]),
        (&[], &[b"\"12\""]),
        (&[b"\"1\"", b"\"1\""], &[]),
        (&[b"\"1\""], &[b"*"]),
    ];
    for (m, n) in refused {
        assert!(
            precondition(m, n).is_err(),
            "If-Match {m:?} If-None-Match {n:?}"
        );
    }
}

#[test]
fn a_token_is_known_by_its_digest_under_its_name() {
    let token = new_token().unwrap();
    assert!(token.starts_with("nxa_") && token.len() == 47, "{token}");
    assert_ne!(token, new_token().unwrap());
    let other = new_token().unwrap();
    let file = format!(
        "{}\n{}",
        entry_for("provisioner", &token).unwrap(),
        entry_for("alice@ops", &other).unwrap()
    );
    let tokens = Tokens::parse(&file).unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens.who(&token), Some("provisioner"));
    assert_eq!(tokens.who(&other), Some("alice@ops"));
    assert_eq!(tokens.who("nxa_guess"), None);
    assert_eq!(tokens.who(""), None);
    // A token differing in its last character is another token.
    let mut near = token.clone();
    near.pop();
    near.push('#');
    assert_eq!(tokens.who(&near), None);
    // No token at all: valid, and refuses everyone.
    assert!(Tokens::parse("").unwrap().is_empty());
}

#[test]
fn a_tokens_file_with_a_mistake_is_refused_whole() {
    let good = "0".repeat(64);
    let other = "1".repeat(64);
    let cases = [
        ("[[token]]\nname = \"a\"\n".to_owned(), "sha256"),
        (format!("[[token]]\nsha256 = \"{good}\"\n"), "name"),
        (format!("[[token]]\nname = \"\"\nsha256 = \"{good}\"\n"), "is empty"),
        (format!("[[token]]\nname = \"bob smith\"\nsha256 = \"{good}\"\n"), "holds ' '"),
        (format!("[[token]]\nname = \"{}\"\nsha256 = \"{good}\"\n", "a".repeat(65)), "longer"),
        ("[[token]]\nname = \"a\"\nsha256 = \"abc\"\n".to_owned(), "64 hex digits"),
        (format!("[[token]]\nname = \"a\"\nsha256 = \"{}\"\n", "g".repeat(64)), "64 hex digits"),
        (
            format!("[[token]]\nname = \"a\"\nsha256 = \"{}\"\n", "+f".repeat(32)),
            "64 hex digits",
        ),
        (
            format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\nrole = \"admin\"\n"),
            "role",
        ),
        (
            format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\n[[token]]\nname = \"a\"\nsha256 = \"{other}\"\n"),
            "another token",
        ),
        (
            format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\n[[token]]\nname = \"b\"\nsha256 = \"{good}\"\n"),
            "one token, two names",
        ),
        ("[[tokens]]\nname = \"a\"\n".to_owned(), "tokens"),
        ("[[token]\n".to_owned(), "line 1"),
    ];
    for (text, says) in cases {
        let e = Tokens::parse(&text).expect_err(&text);
        assert!(e.contains(says), "{text:?}: {e}");
    }
    // The name must be one `entry_for` accepts too.
    assert!(entry_for("bad name", "x").is_err());
}

#[test]
fn a_rebind_body_keeps_clears_or_moves_the_api_url_and_refuses_the_unknown() {
    let keep = rebind_change(br#"{"instance_id":"inst-2","instance_url":"http://10.0.0.2"}"#);
    assert!(
        matches!(keep, Ok(Mutation::Rebind { api_url: None, .. })),
        "{keep:?}"
    );
    let clear = rebind_change(
        br#"{"instance_id":"inst-2","instance_url":"http://10.0.0.2","api_url":null}"#,
    );
    assert!(
        matches!(
            clear,
            Ok(Mutation::Rebind {
                api_url: Some(None),
                ..
            })
        ),
        "{clear:?}"
    );
    let moved = rebind_change(
        br#"{"instance_id":"inst-2","instance_url":"http://10.0.0.2","api_url":"http://10.0.0.3"}"#,
    );
    assert!(
        matches!(
            moved,
            Ok(Mutation::Rebind {
                api_url: Some(Some(_)),
                ..
            })
        ),
        "{moved:?}"
    );
    for (body, says) in [
        (&b""[..], "no body"),
        (b"[]", "JSON object"),
        (b"{", "not JSON"),
        (
            br#"{"instance_url":"http://10.0.0.2"}"#,
            "instance_id is required",
        ),
        (br#"{"instance_id":"inst-2"}"#, "instance_url is required"),
        (
            br#"{"instance_id":2,"instance_url":"http://10.0.0.2"}"#,
            "must be a string",
        ),
        (
            br#"{"instance_id":"inst-2","instance_url":"ftp://x"}"#,
            "instance_url",
        ),
        (
            br#"{"instance_id":"inst-2","instance_url":"http://x","api_ulr":"http://y"}"#,
            "api_ulr",
        ),
        (
            br#"{"instance_id":"inst-2","instance_url":"http://x","api_url":5}"#,
            "null to clear",
        ),
        (
            br#"{"instance_id":"inst-2","instance_id":"inst-3","instance_url":"http://x"}"#,
            "repeats a member name",
        ),
    ] {
        let e = rebind_change(body).expect_err(&String::from_utf8_lossy(body));
        assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_status_body_names_one_status() {
    assert!(matches!(
        status_change(br#"{"status":"suspended"}"#),
        Ok(Mutation::SetStatus(_))
    ));
    for body in [
        &br#"{"status":"Suspended"}"#[..],
        br#"{"status":"gone"}"#,
        br#"{"status":"active","why":"x"}"#,
        br#"{}"#,
        br#""suspended""#,
    ] {
        assert!(
            status_change(body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn only_one_bearer_header_with_a_listed_token_authenticates() {
    use pingora::http::RequestHeader;
    let token = new_token().unwrap();
    let tokens = Tokens::parse(&entry_for("ci", &token).unwrap()).unwrap();
    let with = |values: &[&str]| {
        let mut req = RequestHeader::build("GET", b"/v1/tenants", None).unwrap();
        for v in values {
            req.append_header("authorization", *v).unwrap();
        }
        super::authenticate(&req, &tokens).map(str::to_owned)
    };
    let bearer = format!("Bearer {token}");
    assert_eq!(with(&[&bearer]).as_deref(), Some("ci"));
    assert_eq!(with(&[&format!("bearer {token}")]).as_deref(), Some("ci"));
    assert_eq!(with(&[&format!("BEARER {token}")]).as_deref(), Some("ci"));
    let long = format!("Bearer {}", "a".repeat(super::tokens::MAX_TOKEN_BYTES + 1));
    let (two_spaces, trailing) = (format!("Bearer  {token}"), format!("Bearer {token} "));
    let (basic, other) = (format!("Basic {token}"), format!("Token {token}"));
    let refused: [&[&str]; 10] = [
        &[],
        &[&bearer, &bearer],
        &[&token],
        &["Bearer"],
        &["Bearer "],
        &[&two_spaces],
        &[&trailing],
        &[&basic],
        &[&other],
        &[&long],
    ];
    for values in refused {
        assert_eq!(with(values), None, "{values:?}");
    }
}

#[test]
fn a_declared_length_is_read_from_every_value_and_list() {
    use pingora::http::RequestHeader;
    let with = |values: &[&str]| {
        let mut req = RequestHeader::build("PUT", b"/v1/tenants/acme", None).unwrap();
        for v in values {
            req.append_header("content-length", *v).unwrap();
        }
        super::declared_length(&req)
    };
    assert_eq!(with(&[]), None);
    assert_eq!(with(&["12"]), Some(12));
    assert_eq!(with(&["5000000, 5000000"]), Some(5_000_000));
    assert_eq!(with(&["12", "5000000"]), Some(5_000_000));
    assert_eq!(with(&["x"]), None);
}

#[test]
fn every_refusal_has_its_series_and_its_status() {
    use super::reply::{Code, Reply, OUTCOMES};
    // Exhaustive: a code added without a line below does not compile.
    let status = |c: Code| match c {
        Code::Unauthorized => 401,
        Code::NotFound => 404,
        Code::MethodNotAllowed => 405,
        Code::BadRequest => 400,
        Code::PayloadTooLarge => 413,
        Code::PreconditionFailed => 412,
        Code::Conflict => 409,
        Code::Unavailable | Code::TokensUnusable => 503,
        Code::Internal => 500,
        Code::OutcomeUnknown => 504,
    };
    let all = [
        Code::Unauthorized,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::BadRequest,
        Code::PayloadTooLarge,
        Code::PreconditionFailed,
        Code::Conflict,
        Code::Unavailable,
        Code::TokensUnusable,
        Code::Internal,
        Code::OutcomeUnknown,
    ];
    for code in all {
        let reply = Reply::error(code, "x");
        assert_eq!(reply.status().as_u16(), status(code), "{code:?}");
        assert_eq!(reply.outcome(), code.as_str());
        assert!(OUTCOMES.contains(&code.as_str()), "{code:?}");
    }
    // Each refusal and the two answers: no label counted that has no series from the start.
    assert_eq!(OUTCOMES.len(), all.len() + 2);
    let accepted = Reply::json(http::StatusCode::ACCEPTED, serde_json::json!({}));
    assert_eq!(accepted.outcome(), "not_confirmed");
    let ok = Reply::json(http::StatusCode::OK, serde_json::json!({}));
    assert_eq!(ok.outcome(), "ok");
}

/// The tokens file is parsed again only when its stamp changes, and a stamp too recent to
/// tell two writes of one second apart is not kept: a rewrite of the same length is seen.
#[test]
fn the_tokens_file_is_parsed_again_only_when_it_changed() {
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin-tokens.toml");
    let (one, two) = (new_token().unwrap(), new_token().unwrap());
    std::fs::write(&path, entry_for("ci", &one).unwrap()).unwrap();
    let file = super::tokens::TokensFile::new(path.clone());
    // Fresh, the file is read at each call; once its times are two seconds old, kept.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let kept = loop {
        let (a, b) = (file.current().unwrap(), file.current().unwrap());
        if Arc::ptr_eq(&a, &b) {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "never kept");
        std::thread::park_timeout(Duration::from_millis(100));
    };
    assert_eq!(kept.who(&one), Some("ci"));
    // The same length, another token: a new stamp (its times), read again at once.
    std::fs::write(&path, entry_for("ci", &two).unwrap()).unwrap();
    let now = file.current().unwrap();
    assert!(!Arc::ptr_eq(&kept, &now));
    assert_eq!(now.who(&two), Some("ci"));
    assert_eq!(now.who(&one), None);
    // Gone: refused, with nothing older standing in.
    std::fs::remove_file(&path).unwrap();
    assert!(file.current().is_err());
}

#[test]
fn a_listing_is_written_record_by_record_as_the_records_read() {
    use nexus_binding_store::{Binding, BindingRecord, Listing};
    let binding = |json: serde_json::Value| {
        let r: BindingRecord = serde_json::from_value(json).unwrap();
        Binding::from_record(&r).unwrap()
    };
    let listing = Listing {
        bindings: vec![
            binding(serde_json::json!({
                "tenant_id": "acme", "subscription_id": "sub-1", "instance_id": "inst-1",
                "instance_url": "http://10.0.0.1:8080", "region": "eu-west-1",
                "status": "active", "plan": "team", "domains": ["shop.acme.example"],
                "identity_org_id": "org-acme", "revision": 7
            })),
            binding(serde_json::json!({
                "tenant_id": "globex", "subscription_id": "sub-2", "instance_id": "inst-2",
                "instance_url": "https://globex.internal", "api_url": "https://api.globex.internal",
                "region": "us-east-1", "status": "suspended", "plan": "solo"
            })),
        ],
        revision: Revision(9),
        left_out: vec!["initech: instance_url: not a URL".to_owned()],
    };
    let written: serde_json::Value =
        serde_json::from_slice(&serde_json::to_vec(&Listed(&listing)).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({
            "bindings": listing.bindings.iter().map(record).collect::<Vec<_>>(),
            "revision": 9,
            "left_out": ["initech: instance_url: not a URL"],
        })
    );
    assert_eq!(written["bindings"][0]["domains"][0], "shop.acme.example");
    assert_eq!(
        written["bindings"][1]["api_url"],
        "https://api.globex.internal/"
    );
}
