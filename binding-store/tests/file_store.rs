//! The file store as an admin target and as a watched source, on real files.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_binding_store::file_store::{write_atomically, FileStore};
use nexus_binding_store::records::parse_record;
use nexus_binding_store::{
    Actor, AdminError, Applied, BindingAdmin, BindingHandle, BindingSource, IfUnchanged,
    ImportSeen, ImportSource, Mutation, Revision, TenantId, TenantStatus, UpstreamUrl, WipedStore,
};

fn record(tenant: &str, url: &str) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": tenant, "subscription_id": "s", "instance_id": "i", "instance_url": url,
        "status": "active", "plan": "team", "region": "eu"
    })
}

fn actor() -> Actor {
    Actor {
        name: "tester".into(),
        reason: Some("test".into()),
    }
}

/// `m` applied to `tenant` in `store`, always written: the writes of these tests.
fn apply_now(store: &FileStore, tenant: &TenantId, m: Mutation) -> Result<Applied, AdminError> {
    rt().block_on(store.apply(tenant, m, None, IfUnchanged::Write, &actor()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn admin_writes_are_revisioned_audited_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    rt().block_on(async {
        let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
        let rev = store
            .apply(
                &acme,
                Mutation::Put(Box::new(b)),
                Some(Revision(0)),
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap()
            .revision();
        assert_eq!(rev, Revision(1));
        let rebind = Mutation::Rebind {
            instance_id: nexus_binding_store::InstanceId::parse("i2").unwrap(),
            instance_url: UpstreamUrl::parse("instance_url", "http://10.0.0.2").unwrap(),
            api_url: None,
        };
        let after = store
            .apply(
                &acme,
                rebind,
                Some(Revision(1)),
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        assert_eq!(after.revision(), Revision(2));
        assert_eq!(after.binding().unwrap().instance_url.host(), "10.0.0.2");
        let conflict = store
            .apply(
                &acme,
                Mutation::SetStatus(TenantStatus::Suspended),
                Some(Revision(1)),
                IfUnchanged::Write,
                &actor(),
            )
            .await;
        assert!(
            matches!(
                conflict,
                Err(AdminError::Conflict {
                    actual: Revision(2),
                    ..
                })
            ),
            "{conflict:?}"
        );
        let missing = store
            .apply(
                &TenantId::parse("nobody").unwrap(),
                Mutation::Delete,
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await;
        assert!(matches!(missing, Err(AdminError::NotFound(_))));
        let history = store.history(&acme).await.unwrap().entries;
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].op, "rebind");
        assert_eq!(
            history[1].old.as_ref().unwrap().instance_url,
            "http://10.0.0.1/"
        );
        assert_eq!(
            history[1].new.as_ref().unwrap().instance_url,
            "http://10.0.0.2/"
        );
        assert_eq!(history[1].actor, "tester");
    });
}

#[test]
fn concurrent_writers_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = Arc::new(FileStore::new(
        Some(path.clone()),
        Duration::from_millis(10),
    ));
    let acme = TenantId::parse("acme").unwrap();
    let rt = rt();
    rt.block_on(async {
        let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
        store
            .apply(
                &acme,
                Mutation::Put(Box::new(b)),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let (store, acme) = (Arc::clone(&store), acme.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let s = if (w + i) % 2 == 0 {
                        TenantStatus::Active
                    } else {
                        TenantStatus::PastDue
                    };
                    store
                        .apply(
                            &acme,
                            Mutation::SetStatus(s),
                            None,
                            IfUnchanged::Write,
                            &actor(),
                        )
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let b = store.get(&acme).await.unwrap().unwrap();
        assert_eq!(b.revision, Revision(201));
        assert_eq!(store.history(&acme).await.unwrap().entries.len(), 201);
    });
}

#[test]
fn reload_keeps_last_good_binding_of_an_invalid_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let doc = |records: Vec<serde_json::Value>| {
        serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": records}).to_string()
    };
    write_atomically(
        &path,
        doc(vec![
            record("acme", "http://10.0.0.1"),
            record("globex", "http://10.0.0.1"),
        ])
        .as_bytes(),
    )
    .unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let table = rt().block_on(store.initial_load()).unwrap();
    let handle = BindingHandle::new(table);

    let mut bad = record("globex", "http://10.0.0.9");
    bad["status"] = serde_json::json!("sideways");
    write_atomically(
        &path,
        doc(vec![record("acme", "http://10.0.0.2"), bad]).as_bytes(),
    )
    .unwrap();
    assert!(store.check_for_change(&handle));
    let t = handle.load();
    assert_eq!(t.get("acme").unwrap().instance_url.host(), "10.0.0.2");
    assert_eq!(
        t.get("globex").unwrap().instance_url.host(),
        "10.0.0.1",
        "globex keeps its last good binding"
    );
    assert_eq!(store.health().rejected_records(), 1);

    write_atomically(&path, b"{ half a file").unwrap();
    assert!(!store.check_for_change(&handle));
    assert_eq!(handle.load().len(), 2, "a broken file changes nothing");
    assert!(!store.health().store_up());
}

/// A record naming one member twice is refused and named: the reader would take the last
/// value while whoever reads the file may see the first (`"tenant_id": "initech", ...,
/// "tenant_id": "globex"` routed globex to initech's instance). A repeated `tenant_id` leaves
/// the record naming no tenant, so with a table served the whole file is refused.
#[test]
fn a_record_that_repeats_a_member_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let good = r#"{"format": "nexus-edge.bindings/v1", "bindings": [
        {"tenant_id": "acme", "subscription_id": "s", "instance_id": "i",
         "instance_url": "http://10.0.0.1", "status": "active", "plan": "team", "region": "eu"},
        {"tenant_id": "globex", "subscription_id": "s", "instance_id": "i",
         "instance_url": "http://10.0.0.1", "status": "active", "plan": "team", "region": "eu"}]}"#;
    // The byte order mark some editors write is read past.
    write_atomically(&path, format!("\u{feff}{good}").as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let table = rt().block_on(store.initial_load()).unwrap();
    assert_eq!(table.len(), 2);
    let handle = BindingHandle::new(table);

    // globex's instance named twice: globex keeps its binding, acme's change is taken.
    let url_twice = good
        .replacen("http://10.0.0.1", "http://10.0.0.2", 1)
        .replace(
            r#""tenant_id": "globex", "subscription_id": "s", "instance_id": "i",
         "instance_url": "http://10.0.0.1","#,
            r#""tenant_id": "globex", "subscription_id": "s", "instance_id": "i",
         "instance_url": "http://10.0.0.1", "instance_url": "http://10.6.6.6","#,
        );
    assert!(url_twice.contains("10.6.6.6"));
    write_atomically(&path, url_twice.as_bytes()).unwrap();
    assert!(store.check_for_change(&handle));
    let t = handle.load();
    assert_eq!(t.get("acme").unwrap().instance_url.host(), "10.0.0.2");
    assert_eq!(t.get("globex").unwrap().instance_url.host(), "10.0.0.1");
    assert_eq!(store.health().rejected_records(), 1);

    // A second tenant_id in acme's record: which tenant it is about is unknown.
    let id_twice = good.replacen(
        r#""tenant_id": "acme","#,
        r#""tenant_id": "acme", "tenant_id": "globex","#,
        1,
    );
    write_atomically(&path, id_twice.as_bytes()).unwrap();
    assert!(!store.check_for_change(&handle));
    let t = handle.load();
    assert_eq!(t.get("acme").unwrap().instance_url.host(), "10.0.0.2");
    assert_eq!(t.get("globex").unwrap().instance_url.host(), "10.0.0.1");

    let parsed = nexus_binding_store::records::parse_records(id_twice.as_bytes()).unwrap();
    assert_eq!(parsed.problems.len(), 1);
    assert_eq!(parsed.problems[0].tenant, None);
    assert!(
        parsed.problems[0]
            .message
            .contains("\"tenant_id\" appears twice"),
        "{}",
        parsed.problems[0]
    );
}

/// An admin write reads the file as routers do: what they refuse, it refuses too, instead of
/// writing back a mended file that would go live with the rest of a refused hand edit.
#[test]
fn an_admin_write_refuses_a_file_the_routers_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    let rt = rt();
    rt.block_on(async {
        let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
        store
            .apply(
                &acme,
                Mutation::Put(Box::new(b)),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
    });
    let written = std::fs::read_to_string(&path).unwrap();
    let with_counter = |counter: serde_json::Value| {
        let mut doc: serde_json::Value = serde_json::from_str(&written).unwrap();
        doc["revision"] = counter;
        doc.to_string()
    };
    let damaged = [
        (with_counter(serde_json::json!("7")), "not a whole number"),
        (with_counter(serde_json::json!(-5)), "not a whole number"),
        (
            written.replace(
                r#""region": "eu""#,
                r#""region": "eu", "instance_url": "http://10.6.6.6""#,
            ),
            "repeats the member name \"instance_url\"",
        ),
    ];
    for (text, said) in damaged {
        assert_ne!(text, written, "the damage was made");
        write_atomically(&path, text.as_bytes()).unwrap();
        let r = rt.block_on(store.apply(
            &acme,
            Mutation::SetStatus(TenantStatus::Suspended),
            None,
            IfUnchanged::Write,
            &actor(),
        ));
        match r {
            Err(AdminError::Corrupt(m)) => assert!(m.contains(said), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "nothing written"
        );
    }
}

/// At start-up, a file whose records are all refused would make a ready router that routes
/// no tenant; it is refused, naming the first record. An empty list starts (no tenants yet).
#[test]
fn a_start_on_records_that_are_all_refused_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let mut bad = record("acme", "http://10.0.0.1");
    bad["status"] = serde_json::json!("bogus");
    let doc = serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": [bad]});
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let e = rt().block_on(store.initial_load()).unwrap_err().to_string();
    assert!(e.contains("none of its 1 records is valid"), "{e}");
    assert!(e.contains("tenant \"acme\""), "{e}");

    let empty = serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": []});
    write_atomically(&path, empty.to_string().as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    assert!(rt().block_on(store.initial_load()).unwrap().is_empty());
}

/// A bindings file past the bound is refused unread (a sparse file: no disk is used).
#[test]
fn a_file_past_the_size_bound_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let doc = serde_json::json!({"format": "nexus-edge.bindings/v1",
        "bindings": [record("acme", "http://10.0.0.1")]});
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(nexus_binding_store::records::MAX_BINDINGS_FILE_BYTES + 1)
        .unwrap();
    std::fs::rename(&huge, &path).unwrap();
    assert!(!store.check_for_change(&handle));
    assert_eq!(handle.load().len(), 1, "the table served is kept");
    let e = rt().block_on(store.initial_load()).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
}

#[test]
fn a_same_length_rewrite_within_one_clock_tick_is_not_missed() {
    // File times move in ticks of a few milliseconds: two writes of the same length in one
    // tick can leave size and modification time as they were. The second write is made so
    // here for certain, by setting its modification time back to the first's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let doc = |url: &str| {
        serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": [record("acme", url)]})
            .to_string()
    };
    std::fs::write(&path, doc("http://10.0.0.1")).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
    let first = std::fs::metadata(&path).unwrap();

    std::fs::write(&path, doc("http://10.0.0.2")).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_modified(first.modified().unwrap()).unwrap();
    let second = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (second.len(), second.modified().unwrap()),
        (first.len(), first.modified().unwrap())
    );

    assert!(store.check_for_change(&handle), "the rewrite is read");
    let t = handle.load();
    assert_eq!(t.get("acme").unwrap().instance_url.host(), "10.0.0.2");
    assert!(!store.check_for_change(&handle), "and then is unchanged");
}

#[test]
fn an_invalid_record_can_be_deleted_as_well_as_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let mut bad = record("globex", "http://10.0.0.9");
    bad["status"] = serde_json::json!("sideways");
    let doc = serde_json::json!({"format": "nexus-edge.bindings/v1",
        "bindings": [record("acme", "http://10.0.0.1"), bad]});
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let globex = TenantId::parse("globex").unwrap();
    rt().block_on(async {
        // Other changes need a valid record, and say how to get one.
        let e = store
            .apply(
                &globex,
                Mutation::SetStatus(TenantStatus::Active),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("`tenant delete`"), "{e}");
        let after = store
            .apply(
                &globex,
                Mutation::Delete,
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        assert_eq!(after.binding(), None);
        let history = store.history(&globex).await.unwrap();
        assert_eq!(history.entries.len(), 1);
        assert!(matches!(
            store
                .apply(
                    &globex,
                    Mutation::Delete,
                    None,
                    IfUnchanged::Write,
                    &actor()
                )
                .await,
            Err(AdminError::NotFound(_))
        ));
    });
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("globex") && text.contains("acme"), "{text}");
}

#[test]
fn embedded_demo_store_loads_and_is_read_only() {
    let store = FileStore::new(None, Duration::from_secs(1));
    let rt = rt();
    let table = rt.block_on(store.initial_load()).unwrap();
    assert!(table.get("acme").is_some());
    let b = parse_record(&record("x", "http://10.0.0.1")).unwrap();
    let r = rt.block_on(store.apply(
        &TenantId::parse("x").unwrap(),
        Mutation::Put(Box::new(b)),
        None,
        IfUnchanged::Write,
        &actor(),
    ));
    assert!(matches!(r, Err(AdminError::Unavailable(_))));
}

#[test]
fn no_change_is_made_without_its_audit_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    rt().block_on(async {
        let put = |url: &str| Mutation::Put(Box::new(parse_record(&record("acme", url)).unwrap()));
        store
            .apply(
                &acme,
                put("http://10.0.0.1"),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        // The audit log cannot be appended to: a directory stands where the file should be.
        let audit = dir.path().join("bindings.json.audit.jsonl");
        let lines_before = std::fs::read_to_string(&audit).unwrap();
        std::fs::remove_file(&audit).unwrap();
        std::fs::create_dir(&audit).unwrap();
        let refused = store
            .apply(
                &acme,
                put("http://10.0.0.2"),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await;
        assert!(
            matches!(&refused, Err(AdminError::Unavailable(m)) if m.contains("audit")),
            "{refused:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            before,
            "nothing changed"
        );
        // With the log back, writes go on, and the log has one line per change made.
        std::fs::remove_dir(&audit).unwrap();
        std::fs::write(&audit, &lines_before).unwrap();
        store
            .apply(
                &acme,
                put("http://10.0.0.3"),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        let lines = std::fs::read_to_string(&audit).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        assert!(
            lines.contains("10.0.0.3") && !lines.contains("10.0.0.2"),
            "{lines}"
        );
    });
}

#[test]
fn revisions_are_never_handed_out_twice() {
    // Deleting the tenant with the newest revision must not give its number to the next write.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    rt().block_on(async {
        let put = |t: &str| {
            Mutation::Put(Box::new(
                parse_record(&record(t, "http://10.0.0.1")).unwrap(),
            ))
        };
        let id = |t: &str| TenantId::parse(t).unwrap();
        let mut revisions = Vec::new();
        for (tenant, m) in [
            ("acme", put("acme")),
            ("globex", put("globex")),
            ("globex", Mutation::Delete),
            ("initech", put("initech")),
        ] {
            let rev = store
                .apply(&id(tenant), m, None, IfUnchanged::Write, &actor())
                .await
                .unwrap()
                .revision();
            revisions.push(rev.get());
        }
        assert_eq!(revisions, [1, 2, 3, 4]);
    });
}

/// Sets `tenant`'s status (a write whose outcome is not the point); its revision.
async fn set_status(store: &FileStore, tenant: &TenantId, status: TenantStatus) -> Revision {
    store
        .apply(
            tenant,
            Mutation::SetStatus(status),
            None,
            IfUnchanged::Write,
            &actor(),
        )
        .await
        .unwrap()
        .revision()
}

/// `tenant`'s audit history as (revision, op).
async fn ops(store: &FileStore, tenant: &TenantId) -> Vec<(u64, String)> {
    let history = store.history(tenant).await.unwrap().entries;
    history.into_iter().map(|e| (e.revision, e.op)).collect()
}

/// A file store in `dir` holding acme at revision 1, with its audit log's path.
fn store_with_acme(
    dir: &std::path::Path,
    rt: &tokio::runtime::Runtime,
) -> (FileStore, std::path::PathBuf, TenantId) {
    let store = FileStore::new(Some(dir.join("bindings.json")), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
    rt.block_on(store.apply(
        &acme,
        Mutation::Put(Box::new(b)),
        None,
        IfUnchanged::Write,
        &actor(),
    ))
    .unwrap();
    (store, dir.join("bindings.json.audit.jsonl"), acme)
}

#[test]
fn a_write_that_would_change_nothing_writes_nothing_unless_asked_to() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, acme) = store_with_acme(dir.path(), &rt);
    let path = dir.path().join("bindings.json");
    let file = || std::fs::read(&path).unwrap();
    let apply = |m: Mutation, if_unchanged| {
        rt.block_on(store.apply(&acme, m, None, if_unchanged, &actor()))
            .unwrap()
    };
    let (before, logged) = (file(), std::fs::read(&audit).unwrap());
    let same = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
    let rebind = Mutation::Rebind {
        instance_id: same.instance_id.clone(),
        instance_url: same.instance_url.clone(),
        api_url: Some(None),
    };
    for m in [
        Mutation::SetStatus(TenantStatus::Active),
        Mutation::Put(Box::new(same.clone())),
        rebind,
    ] {
        match apply(m.clone(), IfUnchanged::Skip) {
            Applied::Unchanged(b) => assert_eq!(b.revision, Revision(1), "{m:?}"),
            other => panic!("{m:?}: {other:?}"),
        }
    }
    assert_eq!(file(), before, "the file is not rewritten");
    assert_eq!(std::fs::read(&audit).unwrap(), logged, "nothing is audited");

    // A change is written, and --always-write writes one that is not.
    let m = Mutation::SetStatus(TenantStatus::PastDue);
    assert_eq!(apply(m, IfUnchanged::Skip).revision(), Revision(2));
    let m = Mutation::SetStatus(TenantStatus::PastDue);
    assert!(matches!(
        apply(m, IfUnchanged::Write),
        Applied::Written {
            revision: Revision(3),
            ..
        }
    ));
    let ops = rt.block_on(ops(&store, &acme));
    assert_eq!(ops.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1, 2, 3]);

    // A record without a revision (written by hand) gets one.
    let mut by_hand = record("acme", "http://10.0.0.1");
    by_hand["status"] = serde_json::json!("past_due");
    let doc = serde_json::json!({"format": "nexus-edge.bindings/v1", "revision": 3,
        "bindings": [by_hand]});
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    let m = Mutation::SetStatus(TenantStatus::PastDue);
    assert_eq!(apply(m, IfUnchanged::Skip).revision(), Revision(4));
}

#[test]
fn a_logged_change_that_was_never_made_is_recorded_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        // A writer logged revision 2 and was killed before writing the bindings file; the
        // next one was killed halfway through its line.
        let mut unmade = store.history(&acme).await.unwrap().entries.remove(0);
        unmade.revision = 2;
        unmade.op = "rebind".into();
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&audit)
            .unwrap();
        use std::io::Write;
        writeln!(log, "{}", serde_json::to_string(&unmade).unwrap()).unwrap();
        write!(log, r#"{{"tenant":"acme","revis"#).unwrap();
        drop(log);

        let rev = set_status(&store, &acme, TenantStatus::Suspended).await;
        assert_eq!(rev, Revision(3), "revision 2 was handed out already");
        let history = store.history(&acme).await.unwrap().entries;
        let ops: Vec<(u64, &str)> = history
            .iter()
            .map(|e| (e.revision, e.op.as_str()))
            .collect();
        assert_eq!(
            ops,
            [
                (1, "put"),
                (2, "rebind"),
                (2, "not-made"),
                (3, "set-status")
            ]
        );
        // Noticed once: the next write adds no second note.
        set_status(&store, &acme, TenantStatus::Active).await;
        assert_eq!(store.history(&acme).await.unwrap().entries.len(), 5);
    });
}

#[test]
fn a_whole_audit_entry_missing_its_newline_is_kept() {
    // A copy or an editor can leave the log without its final newline: that entry is finished,
    // not cut. Until a write does that, history leaves the unterminated line out.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        let text = std::fs::read_to_string(&audit).unwrap();
        std::fs::write(&audit, text.trim_end()).unwrap();
        assert!(store.history(&acme).await.unwrap().entries.is_empty());

        set_status(&store, &acme, TenantStatus::Suspended).await;
        let ops = ops(&store, &acme).await;
        assert_eq!(ops, [(1, "put".into()), (2, "set-status".into())]);
    });
}

fn bindings(records: &[serde_json::Value]) -> Vec<Arc<nexus_binding_store::Binding>> {
    records
        .iter()
        .map(|r| Arc::new(parse_record(r).unwrap()))
        .collect()
}

fn with_domain(tenant: &str, domain: &str) -> serde_json::Value {
    let mut r = record(tenant, "http://10.0.0.9");
    r["domains"] = serde_json::json!([domain]);
    r
}

#[test]
fn an_import_is_one_step_audited_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, _, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        let many: Vec<serde_json::Value> = (0..500)
            .map(|i| record(&format!("t{i:03}"), "http://10.0.0.2"))
            .chain([record("acme", "http://10.0.0.3")])
            .collect();
        let n = store
            .import(
                bindings(&many),
                &actor(),
                ImportSource::Records,
                &ImportSeen::unchecked(),
            )
            .await
            .unwrap();
        assert_eq!(n, 501);
        let listing = store.list().await.unwrap();
        assert!(listing.left_out.is_empty(), "{:?}", listing.left_out);
        let all = listing.bindings;
        assert_eq!(all.len(), 501, "acme replaced, not added");
        let mut revs: Vec<u64> = all.iter().map(|b| b.revision.get()).collect();
        revs.sort_unstable();
        assert_eq!(
            revs,
            (2..=502).collect::<Vec<_>>(),
            "one revision each, after acme's 1"
        );
        let acme_now = store.get(&acme).await.unwrap().unwrap();
        assert_eq!(acme_now.instance_url.to_string(), "http://10.0.0.3/");
        let history = store.history(&acme).await.unwrap().entries;
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].op, "import");
        assert_eq!(
            history[1].old.as_ref().unwrap().instance_url,
            "http://10.0.0.1/"
        );
        // The next single write continues the numbering.
        let rev = set_status(&store, &acme, TenantStatus::Suspended).await;
        assert_eq!(rev, Revision(503));
    });
}

/// What an import's check reads of `store` now.
async fn seen_now(store: &FileStore) -> ImportSeen {
    let listing = store.list().await.unwrap();
    ImportSeen::read(
        listing
            .bindings
            .iter()
            .map(|b| (b.tenant_id.clone(), b.revision)),
    )
}

#[test]
fn an_import_does_not_undo_a_change_made_after_its_check() {
    // The import's check read acme at revision 1; a rebind landed before the import took the
    // lock. Written over, the rebind would be undone unseen: the import changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, _, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        let seen = seen_now(&store).await;
        let rev = set_status(&store, &acme, TenantStatus::Suspended).await;
        let file = [
            record("acme", "http://10.0.0.9"),
            record("newco", "http://10.0.0.9"),
        ];
        let e = store
            .import(bindings(&file), &actor(), ImportSource::Records, &seen)
            .await
            .unwrap_err();
        assert_eq!(e.written, 0, "{e}");
        assert!(
            matches!(e.error, AdminError::Conflict { expected, actual, .. }
                if expected == Revision(1) && actual == rev),
            "{e}"
        );
        let now = store.get(&acme).await.unwrap().unwrap();
        assert_eq!(now.status, TenantStatus::Suspended);
        assert_eq!(now.instance_url.to_string(), "http://10.0.0.1/");
        assert!(store
            .get(&TenantId::parse("newco").unwrap())
            .await
            .unwrap()
            .is_none());
        // Read again, the check sees the change: the import goes ahead.
        let seen = seen_now(&store).await;
        let n = store
            .import(bindings(&file), &actor(), ImportSource::Records, &seen)
            .await
            .unwrap();
        assert_eq!(n, 2);
    });
}

#[test]
fn an_import_with_a_clashing_domain_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, _) = store_with_acme(dir.path(), &rt);
    let file = dir.path().join("bindings.json");
    rt.block_on(async {
        let owner = TenantId::parse("owner").unwrap();
        let b = parse_record(&with_domain("owner", "app.owner.test")).unwrap();
        store
            .apply(
                &owner,
                Mutation::Put(Box::new(b)),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
        let (file_before, audit_before) = (
            std::fs::read(&file).unwrap(),
            std::fs::read(&audit).unwrap(),
        );
        let clash = [
            record("fine", "http://10.0.0.2"),
            with_domain("thief", "app.owner.test"),
        ];
        let err = store
            .import(
                bindings(&clash),
                &actor(),
                ImportSource::Records,
                &ImportSeen::unchecked(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.written, 0);
        assert!(
            matches!(&err.error, AdminError::Invalid { tenant, reason }
                if tenant.as_str() == "thief"
                    && reason == "domain app.owner.test also belongs to tenant owner"),
            "{err}"
        );
        assert!(err.to_string().starts_with("nothing imported"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), file_before, "all or nothing");
        assert_eq!(std::fs::read(&audit).unwrap(), audit_before);

        // A domain moving between two tenants of one import is fine, in either order.
        let moved = [
            with_domain("thief", "app.owner.test"),
            record("owner", "http://10.0.0.4"),
        ];
        assert_eq!(
            store
                .import(
                    bindings(&moved),
                    &actor(),
                    ImportSource::Records,
                    &ImportSeen::unchecked()
                )
                .await
                .unwrap(),
            2
        );
        let thief = store.get(&TenantId::parse("thief").unwrap()).await.unwrap();
        assert_eq!(thief.unwrap().domains.len(), 1);
        let back = [
            with_domain("owner", "app.owner.test"),
            record("thief", "http://10.0.0.5"),
        ];
        assert_eq!(
            store
                .import(
                    bindings(&back),
                    &actor(),
                    ImportSource::Records,
                    &ImportSeen::unchecked()
                )
                .await
                .unwrap(),
            2
        );
        let owner = store.get(&owner).await.unwrap();
        assert_eq!(owner.unwrap().domains.len(), 1);
    });
}

#[test]
fn every_change_of_an_import_that_never_reached_the_file_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        // An import logged revisions 2..=4 and was killed before writing the bindings file.
        let template = store.history(&acme).await.unwrap().entries.remove(0);
        let mut lines = String::new();
        for (rev, tenant) in [(2, "t1"), (3, "t2"), (4, "acme")] {
            let mut e = template.clone();
            e.revision = rev;
            e.tenant = tenant.into();
            e.op = "import".into();
            lines.push_str(&serde_json::to_string(&e).unwrap());
            lines.push('\n');
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&audit)
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();

        let rev = set_status(&store, &acme, TenantStatus::Suspended).await;
        assert_eq!(rev, Revision(5));
        for (tenant, want) in [("t1", 2), ("t2", 3)] {
            let h = store
                .history(&TenantId::parse(tenant).unwrap())
                .await
                .unwrap()
                .entries;
            let ops: Vec<(u64, &str)> = h.iter().map(|e| (e.revision, e.op.as_str())).collect();
            assert_eq!(ops, [(want, "import"), (want, "not-made")], "{tenant}");
        }
        let ops = ops(&store, &acme).await;
        assert_eq!(
            ops,
            [
                (1, "put".to_owned()),
                (4, "import".to_owned()),
                (4, "not-made".to_owned()),
                (5, "set-status".to_owned())
            ]
        );
    });
}

#[test]
fn a_damaged_audit_entry_is_named_and_the_rest_of_the_history_kept() {
    // An entry edited by hand (or not JSON at all) does not hide the tenant's history: history
    // returns every readable entry and names the damaged line; writes go on.
    let dir = tempfile::tempdir().unwrap();
    let rt = rt();
    let (store, audit, acme) = store_with_acme(dir.path(), &rt);
    rt.block_on(async {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&audit)
            .unwrap();
        use std::io::Write;
        log.write_all(b"{\"tenant\":\"acme\",\"revision\":\"two\"}\n\xff\xfe\n")
            .unwrap();
        drop(log);
        set_status(&store, &acme, TenantStatus::Suspended).await;

        let history = store.history(&acme).await.unwrap();
        let ops: Vec<(u64, &str)> = history
            .entries
            .iter()
            .map(|e| (e.revision, e.op.as_str()))
            .collect();
        assert_eq!(ops, [(1, "put"), (2, "set-status")]);
        assert_eq!(history.unreadable.len(), 2, "{:?}", history.unreadable);
        assert!(
            history.unreadable[0].contains("audit.jsonl:2: "),
            "{:?}",
            history.unreadable
        );
    });
}

#[test]
fn a_domain_handed_back_to_its_holder_is_settled_down_the_line() {
    // Served: acme holds d1, globex d2, initech none. The file then: acme's record is
    // refused (so acme keeps its served binding, with d1), globex moves to d1 and initech
    // claims d2. Globex loses d1 to acme and keeps its served binding, which holds d2 again:
    // so initech's claim is refused in turn, and initech keeps its served binding. Nobody is
    // unbound.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let doc = |records: serde_json::Value| {
        serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": records}).to_string()
    };
    let served = serde_json::json!([
        with_domain("acme", "d1.example.com"),
        with_domain("globex", "d2.example.com"),
        record("initech", "http://10.0.0.1"),
    ]);
    write_atomically(&path, doc(served).as_bytes()).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());

    let mut acme = with_domain("acme", "d1.example.com");
    acme["status"] = serde_json::json!("sideways");
    let mut globex = with_domain("globex", "d1.example.com");
    globex["instance_url"] = serde_json::json!("http://10.0.0.2");
    let mut initech = with_domain("initech", "d2.example.com");
    initech["instance_url"] = serde_json::json!("http://10.0.0.3");
    write_atomically(
        &path,
        doc(serde_json::json!([acme, globex, initech])).as_bytes(),
    )
    .unwrap();
    store.check_for_change(&handle);

    let t = handle.load();
    assert_eq!(t.len(), 3, "nobody is unbound");
    assert_eq!(
        t.tenant_for_domain("d1.example.com").map(|t| t.as_str()),
        Some("acme")
    );
    assert_eq!(
        t.tenant_for_domain("d2.example.com").map(|t| t.as_str()),
        Some("globex")
    );
    assert_eq!(t.get("initech").unwrap().instance_url.host(), "10.0.0.1");
    assert_eq!(store.health().rejected_records(), 3, "each tenant's record");
}

#[test]
fn a_reload_never_unbinds_a_tenant_it_cannot_account_for() {
    // From a served acme (with a custom domain) and globex, each file below is reloaded:
    // whether it is taken, and where acme and globex then go (None: unbound). Each case
    // starts from the served pair again.
    let mut acme = with_domain("acme", "acme.example.com");
    acme["instance_url"] = serde_json::json!("http://10.0.0.1");
    let globex = record("globex", "http://10.0.0.1");
    let doc = |records: serde_json::Value| serde_json::json!({"format": "nexus-edge.bindings/v1", "bindings": records});
    let mut claims_acmes_domain = with_domain("globex", "acme.example.com");
    claims_acmes_domain["instance_url"] = serde_json::json!("http://10.0.0.2");
    let mut no_id = record("acme", "http://10.0.0.2");
    no_id["tenantid"] = no_id["tenant_id"].take();
    let mut not_canonical = record("acme", "http://10.0.0.2");
    not_canonical["tenant_id"] = serde_json::json!("ACME");
    let mut emptied_by_the_cli = doc(serde_json::json!([]));
    emptied_by_the_cli["revision"] = serde_json::json!(3);
    let mut emptied_by_hand = doc(serde_json::json!([]));
    emptied_by_hand["revision"] = serde_json::json!(0);
    let one = "http://10.0.0.1";
    // (what, file, whether it is taken, acme's instance then, globex's instance then)
    type Case<'a> = (
        &'a str,
        serde_json::Value,
        bool,
        Option<&'a str>,
        Option<&'a str>,
    );
    let cases: [Case; 8] = [
        (
            "a newcomer claims a held domain",
            doc(serde_json::json!([acme.clone(), claims_acmes_domain])),
            true,
            Some(one),
            Some(one),
        ),
        (
            "a record without tenant_id",
            doc(serde_json::json!([no_id, globex.clone()])),
            false,
            Some(one),
            Some(one),
        ),
        (
            "a tenant_id not canonical",
            doc(serde_json::json!([not_canonical, globex.clone()])),
            false,
            Some(one),
            Some(one),
        ),
        (
            "records that are not records",
            doc(serde_json::json!([null, 5, "x"])),
            false,
            Some(one),
            Some(one),
        ),
        (
            "an empty file",
            doc(serde_json::json!([])),
            false,
            Some(one),
            Some(one),
        ),
        ("emptied by the CLI", emptied_by_the_cli, true, None, None),
        (
            "a CLI-written file emptied by hand",
            emptied_by_hand,
            false,
            Some(one),
            Some(one),
        ),
        (
            "a tenant listed twice",
            doc(serde_json::json!([
                record("acme", "http://10.0.0.2"),
                record("globex", "http://10.0.0.3"),
                record("acme", "http://10.0.0.4")
            ])),
            true,
            Some(one),
            Some("http://10.0.0.3"),
        ),
    ];
    for (what, file, taken, want_acme, want_globex) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bindings.json");
        let served = doc(serde_json::json!([acme.clone(), globex.clone()]));
        write_atomically(&path, served.to_string().as_bytes()).unwrap();
        let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
        let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
        write_atomically(&path, file.to_string().as_bytes()).unwrap();
        assert_eq!(store.check_for_change(&handle), taken, "{what}");
        let t = handle.load();
        let url = |tenant: &str| {
            t.get(tenant).map(|b| {
                b.instance_url
                    .url()
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned()
            })
        };
        assert_eq!(url("acme").as_deref(), want_acme, "{what}: acme");
        assert_eq!(url("globex").as_deref(), want_globex, "{what}: globex");
        if want_acme.is_some() {
            assert_eq!(
                t.tenant_for_domain("acme.example.com")
                    .map(TenantId::as_str),
                Some("acme"),
                "{what}"
            );
        }
    }
}

#[test]
fn a_write_refuses_a_file_the_router_would_refuse() {
    // A misspelt top-level key makes the router refuse the file; an admin write must not
    // quietly drop it (and with it the revision the file meant to carry).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let text = serde_json::json!({
        "format": "nexus-edge.bindings/v1",
        "revison": 7,
        "bindings": [record("acme", "http://10.0.0.1")],
    })
    .to_string();
    std::fs::write(&path, &text).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    let b = parse_record(&record("acme", "http://10.0.0.2")).unwrap();
    let err = apply_now(&store, &acme, Mutation::Put(Box::new(b)))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown top-level key \"revison\""), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// Checks the file until the store has marked a sync after `before` (the clock moves in
/// milliseconds), or fails after a deadline: a store that never marks one again is the defect.
fn wait_for_a_sync_after(store: &FileStore, handle: &BindingHandle, before: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        store.check_for_change(handle);
        if store.health().last_sync_unix_ms() > before {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sync after {before} (store up: {})",
            store.health().store_up()
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_file_back_unchanged_after_a_read_failure_is_up_and_in_sync_again() {
    // The bindings file goes missing for a moment (a deploy tool's remove and write, a network
    // file system's blip) and comes back as it was: the table served is the file's again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let doc = serde_json::json!({"format": "nexus-edge.bindings/v1",
        "bindings": [record("acme", "http://10.0.0.1")]})
    .to_string();
    std::fs::write(&path, &doc).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
    assert!(store.health().store_up());

    std::fs::remove_file(&path).unwrap();
    assert!(!store.check_for_change(&handle));
    assert!(!store.health().store_up(), "a missing file: down");
    let down_since = store.health().last_sync_unix_ms();

    write_atomically(&path, doc.as_bytes()).unwrap();
    assert!(
        !store.check_for_change(&handle),
        "the same content is not a change"
    );
    assert!(
        store.health().store_up(),
        "readable and as served: up again"
    );
    wait_for_a_sync_after(&store, &handle, down_since);
    assert_eq!(store.health().rejected_records(), 0);
}

#[test]
fn a_refused_file_back_unchanged_after_a_read_failure_stays_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let good = serde_json::json!({"format": "nexus-edge.bindings/v1",
        "bindings": [record("acme", "http://10.0.0.1")]})
    .to_string();
    std::fs::write(&path, &good).unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());

    write_atomically(&path, b"{ half a file").unwrap();
    assert!(!store.check_for_change(&handle));
    assert!(!store.health().store_up(), "a broken file: down");
    let refused_at = store.health().last_sync_unix_ms();

    std::fs::remove_file(&path).unwrap();
    assert!(!store.check_for_change(&handle));
    write_atomically(&path, b"{ half a file").unwrap();
    assert!(!store.check_for_change(&handle));
    assert!(
        !store.health().store_up(),
        "the version back is the one refused: still down"
    );
    assert_eq!(store.health().last_sync_unix_ms(), refused_at);
    assert_eq!(handle.load().len(), 1, "and the table is as it was");

    // A version that loads brings it back.
    write_atomically(&path, good.as_bytes()).unwrap();
    store.check_for_change(&handle);
    assert!(store.health().store_up());
}

fn tid(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn put(store: &FileStore, t: &str) {
    let b = parse_record(&record(t, "http://10.0.0.1")).unwrap();
    apply_now(store, &tid(t), Mutation::Put(Box::new(b))).unwrap();
}

/// Polls `done` until it holds, for up to 5 s; a timeout names `what` was awaited.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let limit = Duration::from_secs(5);
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_hand_emptied_file_after_a_cli_delete_is_refused() {
    // After a CLI delete the file's revision is past every record's; a hand edit emptying the
    // bindings keeps it, and is no delete of the last tenant.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    for t in ["acme", "globex", "initech"] {
        put(&store, t);
    }
    apply_now(&store, &tid("initech"), Mutation::Delete).unwrap();
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
    assert_eq!(handle.load().len(), 2);
    let written = std::fs::read(&path).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(doc["revision"], 4);
    doc["bindings"] = serde_json::json!([]);
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    assert!(!store.check_for_change(&handle));
    assert_eq!(handle.load().len(), 2);
    // The file put back, the CLI's own deletes of the rest are taken, down to none.
    write_atomically(&path, &written).unwrap();
    for t in ["acme", "globex"] {
        apply_now(&store, &tid(t), Mutation::Delete).unwrap();
    }
    wait_until(
        "the CLI's deletes of the last tenants to empty the table",
        || {
            store.check_for_change(&handle);
            handle.load().is_empty()
        },
    );
}

/// A write and an import of `b` into the store whose file at `path` is lost (its audit log
/// records changes up to revision 2) are refused, and write nothing.
fn assert_lost_file_refused(
    store: &FileStore,
    path: &std::path::Path,
    b: &nexus_binding_store::Binding,
) {
    let e = rt()
        .block_on(store.apply(
            &b.tenant_id,
            Mutation::Put(Box::new(b.clone())),
            None,
            IfUnchanged::Write,
            &actor(),
        ))
        .unwrap_err();
    assert!(matches!(e, AdminError::FileLost { .. }), "{e}");
    assert!(e.to_string().contains("up to revision 2"), "{e}");
    assert!(!path.exists(), "nothing written");
    let e = rt()
        .block_on(store.import(
            vec![Arc::new(b.clone())],
            &actor(),
            ImportSource::Records,
            &ImportSeen::unchecked(),
        ))
        .unwrap_err();
    assert!(e.to_string().contains("looks lost"), "{e}");
}

#[test]
fn a_write_into_a_lost_bindings_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    put(&store, "acme");
    put(&store, "globex");
    std::fs::remove_file(&path).unwrap();
    let b = parse_record(&record("initech", "http://10.0.0.1")).unwrap();
    assert_lost_file_refused(&store, &path, &b);
    // Said outright, the write starts a new file.
    let store = store.with_wiped_store(WipedStore::StartNewHistory);
    let rev = apply_now(&store, &tid("initech"), Mutation::Put(Box::new(b)))
        .unwrap()
        .revision();
    assert_eq!(rev.get(), 3);
}

#[test]
fn after_a_backup_is_restored_the_cli_delete_of_its_last_tenant_is_taken() {
    // The file and its audit log back from an older backup: the CLI numbers from the backup
    // again, so its delete of the last tenant is past the restored file's revision, not past
    // the newest file ever loaded.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let audit = dir.path().join("bindings.json.audit.jsonl");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    put(&store, "acme");
    let backup = (
        std::fs::read(&path).unwrap(),
        std::fs::read(&audit).unwrap(),
    );
    for t in ["globex", "initech", "umbrella"] {
        put(&store, t);
    }
    let handle = BindingHandle::new(rt().block_on(store.initial_load()).unwrap());
    assert_eq!(handle.load().len(), 4);
    write_atomically(&audit, &backup.1).unwrap();
    write_atomically(&path, &backup.0).unwrap();
    wait_until("the restored backup to be loaded", || {
        store.check_for_change(&handle);
        handle.load().len() == 1
    });
    let rev = apply_now(&store, &tid("acme"), Mutation::Delete)
        .unwrap()
        .revision();
    assert_eq!(rev.get(), 2);
    wait_until(
        "the CLI delete of the last tenant to empty the table",
        || {
            store.check_for_change(&handle);
            handle.load().is_empty()
        },
    );
}

/// Appends `bytes` to the audit log at `audit`, as a hand edit would.
fn append_to(audit: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(audit)
        .unwrap();
    log.write_all(bytes).unwrap();
}

#[test]
fn a_damaged_last_audit_line_hides_neither_a_lost_file_nor_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let audit = dir.path().join("bindings.json.audit.jsonl");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    put(&store, "acme");
    put(&store, "globex");
    // The file lost, and a line that is no entry after the last one: the log still records
    // changes up to revision 2, so the write is refused.
    std::fs::remove_file(&path).unwrap();
    append_to(&audit, b"not json\n\xff\n\n");
    let b = parse_record(&record("initech", "http://10.0.0.1")).unwrap();
    assert_lost_file_refused(&store, &path, &b);
    // Said outright, the new history goes on from the numbers handed out.
    let new = FileStore::new(Some(path.clone()), Duration::from_millis(10))
        .with_wiped_store(WipedStore::StartNewHistory);
    let rev = apply_now(&new, &tid("initech"), Mutation::Put(Box::new(b)))
        .unwrap()
        .revision();
    assert_eq!(rev.get(), 3);

    // A logged change the file never received (revision 4), then a damaged line: 4 was
    // handed out, and is noted as not made.
    let mut unmade = rt()
        .block_on(store.history(&tid("initech")))
        .unwrap()
        .entries
        .remove(0);
    unmade.revision = 4;
    unmade.op = "set-status".into();
    append_to(
        &audit,
        format!("{}\n", serde_json::to_string(&unmade).unwrap()).as_bytes(),
    );
    append_to(&audit, b"{\"tenant\":\"initech\",\"revision\":\"five\"}\n");
    let rev = rt().block_on(set_status(&store, &tid("initech"), TenantStatus::Suspended));
    assert_eq!(rev, Revision(5), "revision 4 was handed out already");
    let ops = rt().block_on(ops(&store, &tid("initech")));
    assert_eq!(
        ops,
        [
            (3, "put".to_owned()),
            (4, "set-status".to_owned()),
            (4, "not-made".to_owned()),
            (5, "set-status".to_owned())
        ]
    );
}

#[test]
fn a_lost_file_whose_audit_log_holds_no_readable_entry_is_not_written_over() {
    // Whether the log recorded changes cannot be told: the write is refused, not taken as the
    // first of a new store.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let audit = dir.path().join("bindings.json.audit.jsonl");
    std::fs::write(&audit, b"not json\n").unwrap();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
    let e = rt()
        .block_on(store.apply(
            &tid("acme"),
            Mutation::Put(Box::new(b.clone())),
            None,
            IfUnchanged::Write,
            &actor(),
        ))
        .unwrap_err();
    assert!(e.to_string().contains("no line of it can be read"), "{e}");
    assert!(e.to_string().contains("--start-new-history"), "{e}");
    assert!(!path.exists(), "nothing written");
    assert_eq!(std::fs::read(&audit).unwrap(), b"not json\n");
    let store = store.with_wiped_store(WipedStore::StartNewHistory);
    let rev = apply_now(&store, &tid("acme"), Mutation::Put(Box::new(b)))
        .unwrap()
        .revision();
    assert_eq!(rev.get(), 1);
    // An empty log is a new store's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    std::fs::write(dir.path().join("bindings.json.audit.jsonl"), b"").unwrap();
    put(
        &FileStore::new(Some(path), Duration::from_millis(10)),
        "acme",
    );
}

/// A store holding acme, globex and acme again (records 0 and 2: a hand edit).
fn acme_listed_twice(dir: &Path) -> (FileStore, PathBuf) {
    let path = dir.join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    put(&store, "acme");
    put(&store, "globex");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut again = doc["bindings"][0].clone();
    assert_eq!(again["tenant_id"], "acme");
    again["instance_url"] = "http://10.0.0.7/".into();
    doc["bindings"].as_array_mut().unwrap().push(again);
    write_atomically(&path, doc.to_string().as_bytes()).unwrap();
    (store, path)
}

#[test]
fn no_change_of_one_field_touches_a_tenant_listed_twice() {
    // The router refuses every record of a tenant listed twice: a change to one of them
    // would be audited and reported done, yet never take effect.
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = acme_listed_twice(dir.path());
    let audit = dir.path().join("bindings.json.audit.jsonl");
    let before = (
        std::fs::read(&path).unwrap(),
        std::fs::read(&audit).unwrap(),
    );
    let acme = tid("acme");
    let rebind = Mutation::Rebind {
        instance_id: nexus_binding_store::InstanceId::parse("i2").unwrap(),
        instance_url: UpstreamUrl::parse("instance_url", "http://10.0.0.2").unwrap(),
        api_url: None,
    };
    let b = parse_record(&record("acme", "http://10.0.0.3")).unwrap();
    // A put or a delete expecting a revision would have to pick the record it means.
    for (m, expect) in [
        (Mutation::SetStatus(TenantStatus::Suspended), None),
        (rebind, None),
        (Mutation::Put(Box::new(b.clone())), Some(Revision(1))),
        (Mutation::Delete, Some(Revision(1))),
    ] {
        let what = format!("{m:?}");
        let e = rt()
            .block_on(store.apply(&acme, m, expect, IfUnchanged::Write, &actor()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tenant acme is listed more than once (records [0, 2])"),
            "{what}: {e}"
        );
        assert!(e.contains("`tenant put` the record meant"), "{what}: {e}");
    }
    let after = (
        std::fs::read(&path).unwrap(),
        std::fs::read(&audit).unwrap(),
    );
    assert!(before == after, "the file and its audit log are unchanged");
    // Other tenants are written as usual, the duplicates kept as they are.
    let rev = rt().block_on(set_status(&store, &tid("globex"), TenantStatus::Suspended));
    assert_eq!(rev, Revision(3));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["bindings"][0]["tenant_id"], "acme");
    assert_eq!(doc["bindings"][2]["tenant_id"], "acme");
}

/// The file's records as (tenant, instance URL), in order.
fn listed(path: &Path) -> Vec<(String, String)> {
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    doc["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (field("tenant_id"), field("instance_url"))
        })
        .collect()
}

#[test]
fn a_put_an_import_or_a_delete_settles_a_tenant_listed_twice() {
    // The tenant was refused everywhere and no CLI command could mend it: the operator had
    // to edit the file by hand. A whole new record, or none, is unambiguous.
    let acme = tid("acme");
    let b = parse_record(&record("acme", "http://10.0.0.3")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (store, path) = acme_listed_twice(dir.path());
    let after = apply_now(&store, &acme, Mutation::Put(Box::new(b))).unwrap();
    assert_eq!(after.revision(), Revision(3));
    assert_eq!(
        after.binding().unwrap().instance_url.url().as_str(),
        "http://10.0.0.3/"
    );
    let one = |u: &str| {
        vec![
            ("acme".to_owned(), u.to_owned()),
            ("globex".to_owned(), "http://10.0.0.1/".to_owned()),
        ]
    };
    assert_eq!(listed(&path), one("http://10.0.0.3/"));
    // The router loads it, and the history says no one record was in force before.
    let table = rt().block_on(store.initial_load()).unwrap();
    assert_eq!(table.get("acme").unwrap().revision, Revision(3));
    let history = rt().block_on(store.history(&acme)).unwrap();
    let last = history.entries.last().unwrap();
    assert_eq!((last.op.as_str(), last.old.is_none()), ("put", true));

    let dir = tempfile::tempdir().unwrap();
    let (store, path) = acme_listed_twice(dir.path());
    let written = rt()
        .block_on(store.import(
            bindings(&[record("acme", "http://10.0.0.4")]),
            &actor(),
            ImportSource::Records,
            &ImportSeen::unchecked(),
        ))
        .unwrap();
    assert_eq!(written, 1);
    assert_eq!(listed(&path), one("http://10.0.0.4/"));

    let dir = tempfile::tempdir().unwrap();
    let (store, path) = acme_listed_twice(dir.path());
    let after = apply_now(&store, &acme, Mutation::Delete).unwrap();
    assert!(after.binding().is_none());
    assert_eq!(
        listed(&path),
        vec![("globex".to_owned(), "http://10.0.0.1/".to_owned())]
    );
}

#[test]
fn a_write_keeps_the_files_mode_and_owner_and_writes_through_a_symlink() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    put(&store, "acme");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    // Only root may give a file away: then the owner and group are kept too.
    let root = std::fs::metadata(&path).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&path, Some(4321), Some(4322)).unwrap();
    }
    put(&store, "globex");
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    if root {
        assert_eq!((m.uid(), m.gid()), (4321, 4322));
    }

    // The configured path a (relative) link to the file routers read.
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let real = dir.path().join("real").join("b.json");
    std::fs::rename(&path, &real).unwrap();
    std::os::unix::fs::symlink("real/b.json", &path).unwrap();
    put(&store, "initech");
    assert!(
        path.symlink_metadata().unwrap().is_symlink(),
        "the link is kept"
    );
    let text = std::fs::read_to_string(&real).unwrap();
    assert!(text.contains("initech"), "{text}");
    assert_eq!(std::fs::metadata(&real).unwrap().mode() & 0o7777, 0o640);
    // The file, with its lock and audit log beside it (not beside the link), and no temp
    // file left.
    let mut leftovers: Vec<_> = std::fs::read_dir(dir.path().join("real"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert_eq!(
        leftovers,
        ["b.json", "b.json.audit.jsonl", "b.json.lock"],
        "no temp file left"
    );
}

/// The lock and the audit log the first write creates get the bindings file's owner, group
/// and permissions:
/// created with the umask's 0644, the first admin to write (root, say) left every other admin
/// of a shared group unable to write at all.
#[test]
fn the_lock_and_audit_log_get_the_bindings_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bindings.json");
    write_atomically(
        &path,
        br#"{"format": "nexus-edge.bindings/v1", "bindings": []}"#,
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    // Owned by another user and group, where this test may give it away (as root): the
    // group is what lets the other admins of a shared setup write.
    let given = std::os::unix::fs::chown(&path, Some(65534), Some(65534)).is_ok();
    let store = FileStore::new(Some(path.clone()), Duration::from_millis(10));
    let acme = TenantId::parse("acme").unwrap();
    rt().block_on(async {
        let b = parse_record(&record("acme", "http://10.0.0.1")).unwrap();
        store
            .apply(
                &acme,
                Mutation::Put(Box::new(b)),
                None,
                IfUnchanged::Write,
                &actor(),
            )
            .await
            .unwrap();
    });
    for made in ["bindings.json.lock", "bindings.json.audit.jsonl"] {
        let mode = std::fs::metadata(dir.path().join(made))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660, "{made}");
        if given {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(dir.path().join(made)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{made}");
        }
    }
}
