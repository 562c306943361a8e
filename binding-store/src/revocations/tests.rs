//! The revocation model, the list's lookups, and the file's reading, writing and following.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::file::{self, Looked, Watched};
use super::list::RevocationList;
use super::model::{format_time, Revocation, Revoked, TokenFacts};
use super::{AdminFailure, Revocations};
use crate::model::TenantId;

const T0: u64 = 1_800_000_000;

fn token(jti: &str, until: u64) -> Revocation {
    Revocation {
        what: Revoked::Token { jti: jti.into() },
        until,
        at: None,
        actor: None,
        reason: None,
    }
}

fn user(tenant: &str, sub: &str, before: u64, until: u64) -> Revocation {
    Revocation {
        what: Revoked::Subject {
            tenant: TenantId::parse(tenant).unwrap(),
            sub: sub.into(),
            issued_before: before,
        },
        until,
        at: None,
        actor: None,
        reason: None,
    }
}

fn tenant(t: &str, before: u64, until: u64) -> Revocation {
    Revocation {
        what: Revoked::Tenant {
            tenant: TenantId::parse(t).unwrap(),
            issued_before: before,
        },
        until,
        at: None,
        actor: None,
        reason: None,
    }
}

fn facts<'a>(jti: Option<&'a str>, t: &'a str, sub: &'a str, iat: Option<u64>) -> TokenFacts<'a> {
    TokenFacts {
        jti,
        tenant: Some(t),
        sub: Some(sub),
        iat,
    }
}

#[test]
fn each_kind_reads_back_as_written_under_its_key() {
    let mut all = [
        token("a:b", T0),
        user("acme", "user:1", T0 - 10, T0),
        tenant("acme", T0 - 10, T0),
    ];
    all[0].at = Some(T0 - 100);
    all[0].actor = Some("alice".into());
    all[0].reason = Some("leaked in a ticket".into());
    for r in all {
        let back = Revocation::from_json(r.to_json().as_bytes()).unwrap();
        assert_eq!(back, r);
    }
    assert_eq!(token("a:b", T0).key(), "token:a:b");
    assert_eq!(user("acme", "user:1", 0, T0).key(), "subject:acme:user:1");
    assert_eq!(tenant("acme", 0, T0).key(), "tenant:acme");
}

#[test]
fn records_that_do_not_say_one_thing_are_refused() {
    let until = format_time(T0);
    for (json, said) in [
        (format!(r#"{{"until":"{until}"}}"#), "names no token"),
        (
            format!(r#"{{"token":"a","tenant":"acme","until":"{until}"}}"#),
            "takes no tenant",
        ),
        (
            format!(r#"{{"token":"a","issued_before":"{until}","until":"{until}"}}"#),
            "takes no",
        ),
        (
            format!(r#"{{"tenant":"acme","until":"{until}"}}"#),
            "issued_before is required",
        ),
        (
            format!(r#"{{"tenant":"acme","subject":"u","until":"{until}"}}"#),
            "issued_before is required",
        ),
        (
            format!(r#"{{"tenant":"Acme","issued_before":"{until}","until":"{until}"}}"#),
            "canonical",
        ),
        (format!(r#"{{"token":"","until":"{until}"}}"#), "empty"),
        (
            format!(r#"{{"token":"{}","until":"{until}"}}"#, "x".repeat(65537)),
            "longer",
        ),
        (r#"{"token":"a","until":"tomorrow"}"#.to_owned(), "RFC 3339"),
        (r#"{"token":"a"}"#.to_owned(), "until"),
        (
            format!(r#"{{"token":"a","until":"{until}","extra":1}}"#),
            "unknown field",
        ),
        (
            format!(r#"{{"token":"a","token":"b","until":"{until}"}}"#),
            "duplicate field",
        ),
        (
            format!(r#"{{"token":7,"until":"{until}"}}"#),
            "invalid type",
        ),
        ("[]".to_owned(), "not a revocation"),
    ] {
        let e = Revocation::from_json(json.as_bytes()).expect_err(&json);
        assert!(e.0.contains(said), "{json}: {e}");
    }
}

#[test]
fn any_claim_a_token_may_carry_can_be_named_and_fractions_round_toward_refusal() {
    let json = r#"{"tenant":"acme","subject":"a\tb","issued_before":"1970-01-01T00:00:10.5Z","until":"1970-01-01T00:00:20.000000001Z"}"#;
    let r = Revocation::from_json(json.as_bytes()).unwrap();
    assert_eq!(r.until, 21);
    let Revoked::Subject {
        sub, issued_before, ..
    } = &r.what
    else {
        panic!("{r:?}")
    };
    assert_eq!((sub.as_str(), *issued_before), ("a\tb", 11));
    assert!(r.refuses(&facts(None, "acme", "a\tb", Some(10)), 0));
    let json = r#"{"token":"a\u0000b","until":"2030-01-01T00:00:00Z"}"#;
    let r = Revocation::from_json(json.as_bytes()).unwrap();
    assert!(r.refuses(&facts(Some("a\0b"), "acme", "u", None), 0));
}

#[test]
fn a_revocation_refuses_what_it_names_until_its_end() {
    let r = token("j1", T0);
    assert!(r.refuses(&facts(Some("j1"), "acme", "u", None), T0 - 1));
    assert!(
        !r.refuses(&facts(Some("j1"), "acme", "u", None), T0),
        "ended"
    );
    assert!(
        !r.refuses(&facts(Some("J1"), "acme", "u", None), 0),
        "byte for byte"
    );
    assert!(!r.refuses(&facts(None, "acme", "u", None), 0));

    let r = user("acme", "u", 100, T0);
    assert!(r.refuses(&facts(None, "acme", "u", Some(99)), 0));
    assert!(
        !r.refuses(&facts(None, "acme", "u", Some(100)), 0),
        "issued at the moment"
    );
    assert!(
        r.refuses(&facts(None, "acme", "u", None), 0),
        "no iat: cannot show it is later"
    );
    assert!(
        !r.refuses(&facts(None, "acme", "v", Some(1)), 0),
        "another user"
    );
    assert!(
        !r.refuses(&facts(None, "other", "u", Some(1)), 0),
        "the same sub elsewhere"
    );

    let r = tenant("acme", 100, T0);
    assert!(r.refuses(&facts(None, "acme", "anyone", Some(1)), 0));
    assert!(!r.refuses(&facts(None, "acme", "anyone", Some(100)), 0));
    assert!(!r.refuses(&facts(None, "other", "anyone", Some(1)), 0));
}

#[test]
fn the_list_finds_the_revocation_in_force_among_several() {
    let mut list = RevocationList::new([
        token("j1", T0 - 50),
        tenant("acme", 100, T0),
        user("acme", "a:b", 200, T0),
    ]);
    assert_eq!(list.len(), 3);
    // The token's own revocation ended; the tenant's still refuses it.
    let t = facts(Some("j1"), "acme", "x", Some(50));
    assert_eq!(list.refusing(&t, T0 - 10).unwrap().key(), "tenant:acme");
    // A sub with ':' is one key, read back one way.
    let t = facts(None, "acme", "a:b", Some(150));
    assert_eq!(list.refusing(&t, 0).unwrap().key(), "subject:acme:a:b");
    assert!(list.get("subject:acme:a:b").is_some());
    assert!(list.get("subject:acme:a").is_none());
    assert!(list
        .refusing(&facts(None, "acme", "a", Some(150)), 0)
        .is_none());

    // Replacing keeps one per key; removing the last of a tenant's users leaves nothing.
    list.put(Arc::new(user("acme", "a:b", 300, T0)));
    assert_eq!(list.len(), 3);
    assert!(list.remove("subject:acme:a:b"));
    assert!(!list.remove("subject:acme:a:b"));
    assert!(!list.remove("nonsense"));
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|r| !matches!(r.what, Revoked::Subject { .. })));
    let empty = RevocationList::default();
    assert!(empty.refusing(&t, 0).is_none());
}

#[test]
fn a_file_is_taken_whole_or_not_at_all() {
    let list = RevocationList::new([token("j1", T0), tenant("acme", 100, T0)]);
    let text = file::render(&list);
    let back = file::parse(text.as_bytes()).unwrap();
    assert_eq!(RevocationList::new(back).len(), 2);
    assert_eq!(
        file::render(&RevocationList::default()),
        "{\"revocations\": []}\n"
    );

    let until = format_time(T0);
    let one_bad = format!(
        r#"{{"revocations": [{{"token":"a","until":"{until}"}}, {{"token":"","until":"{until}"}}]}}"#
    );
    let e = file::parse(one_bad.as_bytes()).unwrap_err();
    assert!(
        e.0.contains("revocations[1]") && e.0.contains("empty"),
        "{e}"
    );
    let twice = format!(
        r#"{{"revocations": [{{"token":"a","until":"{until}"}}, {{"token":"a","until":"{until}"}}]}}"#
    );
    let e = file::parse(twice.as_bytes()).unwrap_err();
    assert!(e.0.contains("revocations[0] and revocations[1]"), "{e}");
    for bad in [
        "",
        "[]",
        r#"{"revocations": [], "more": 1}"#,
        r#"{"revocations": {}}"#,
    ] {
        assert!(file::parse(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn a_followed_file_keeps_the_list_in_force_through_a_bad_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.json");
    let handle = Revocations::followed();
    let watched = Watched::new(path.clone());
    assert!(watched.reload(&handle).is_err(), "missing");
    assert_eq!(handle.synced_ms(), None);

    file::write(&path, &RevocationList::new([token("j1", T0)])).unwrap();
    assert_eq!(watched.reload(&handle).unwrap(), Looked::Installed(1));
    assert_eq!(watched.reload(&handle).unwrap(), Looked::Unchanged);
    let synced = handle.synced_ms().unwrap();

    std::fs::write(&path, "{\"revocations\": [").unwrap();
    assert!(watched.reload(&handle).is_err(), "said once");
    assert_eq!(
        watched.reload(&handle).unwrap(),
        Looked::Unchanged,
        "then quiet"
    );
    assert_eq!(handle.load().len(), 1, "the list in force stays");
    assert_eq!(handle.refused(), 1);
    assert_eq!(
        handle.synced_ms(),
        Some(synced),
        "not in sync with a refused file"
    );

    file::write(&path, &RevocationList::default()).unwrap();
    assert_eq!(watched.reload(&handle).unwrap(), Looked::Installed(0));
    assert!(handle.load().is_empty());

    // A file gone is said once, then quiet while it stays gone; the list stays.
    file::write(&path, &RevocationList::new([token("j2", T0)])).unwrap();
    assert_eq!(watched.reload(&handle).unwrap(), Looked::Installed(1));
    std::fs::remove_file(&path).unwrap();
    assert!(watched.reload(&handle).is_err());
    assert_eq!(watched.reload(&handle).unwrap(), Looked::Unchanged);
    assert_eq!(handle.load().len(), 1);
}

#[test]
fn admin_edits_of_a_file_are_audited_before_they_are_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.json");
    file::put(&path, &token("j1", T0), "alice", "ticket-1").unwrap();
    file::put(&path, &tenant("acme", 100, T0), "alice", "").unwrap();
    let stored = file::put(&path, &token("j1", T0 + 1), "bob", "").unwrap();
    assert_eq!(stored.replaced, Some(token("j1", T0)));
    let list = RevocationList::new(file::read(&path).unwrap());
    assert_eq!(list.len(), 2);
    assert_eq!(list.get("token:j1").unwrap().until, T0 + 1);
    // A conditional delete of a revocation no longer the one held does nothing.
    assert!(matches!(
        file::delete(
            &path,
            "tenant:acme",
            Some(&tenant("acme", 99, T0)),
            "bob",
            ""
        ),
        Err(AdminFailure::Changed(_))
    ));
    file::delete(
        &path,
        "tenant:acme",
        Some(&tenant("acme", 100, T0)),
        "bob",
        "",
    )
    .unwrap();
    assert!(matches!(
        file::delete(&path, "tenant:acme", None, "bob", ""),
        Err(AdminFailure::NotFound(_))
    ));
    let audit = std::fs::read_to_string(file::audit_path(&path)).unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{audit}");
    assert_eq!(lines[0]["actor"], "alice");
    assert_eq!(lines[0]["reason"], "ticket-1");
    assert!(lines[0]["old"].is_null());
    assert!(lines[2]["old"].as_str().unwrap().contains(&format_time(T0)));
    assert_eq!(lines[3]["op"], "delete");
    assert!(lines[3]["new"].is_null());
}

/// A revocation written again under its key only ever refuses more: the later
/// `issued_before` and `until` of the two stay, whoever wrote last.
#[test]
fn a_put_over_a_revocation_keeps_the_further_reach_of_the_two() {
    let held = tenant("acme", 200, T0);
    let earlier = tenant("acme", 100, T0 - 10);
    assert_eq!(earlier.merged_over(&held), held);
    let later = user("acme", "u", 300, T0 + 10);
    assert_eq!(later.merged_over(&user("acme", "u", 200, T0)), later);
    let mut asked = user("acme", "u", 100, T0 + 10);
    asked.actor = Some("bob".into());
    let merged = asked.merged_over(&user("acme", "u", 200, T0));
    assert_eq!(merged.until, T0 + 10);
    assert_eq!(merged.actor.as_deref(), Some("bob"));
    assert!(matches!(
        merged.what,
        Revoked::Subject {
            issued_before: 200,
            ..
        }
    ));
    // Another key: nothing to merge.
    assert_eq!(earlier.merged_over(&token("j", T0 + 99)), earlier);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations.json");
    file::put(&path, &held, "alice", "").unwrap();
    let stored = file::put(&path, &earlier, "bob", "").unwrap();
    assert_eq!(stored.revocation.until, T0);
    assert_eq!(
        RevocationList::new(file::read(&path).unwrap())
            .get("tenant:acme")
            .map(|r| r.until),
        Some(T0)
    );
}

#[test]
fn a_handle_without_a_source_is_never_stale() {
    let none = Revocations::none();
    assert!(!none.is_followed());
    assert_eq!(none.age_ms(u64::MAX), 0);
    let followed = Revocations::followed();
    let now = crate::source::now_unix_ms();
    assert!(
        followed.age_ms(now + 5_000) >= 5_000,
        "never synced: aged from its making"
    );
    followed.mark_synced(now + 4_000);
    assert_eq!(followed.age_ms(now + 5_000), 1_000);
}
