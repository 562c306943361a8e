//! Bindings from Redis: real `redis-server`, real `nexus-edge` replicas, real backends, and the
//! real admin CLI.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nexus_e2e::admin::Admin;
use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, cli, Edge, EdgeOptions};
use nexus_e2e::http::get_with_token;
use nexus_e2e::keys::TestKeys;
use nexus_e2e::probe::{host, instance_of, wait_instance, Traffic};
use nexus_e2e::redis_server::{store_section as store_section_under, RedisServer, HEARTBEAT};
use nexus_e2e::wait;

fn store_section(url: &str, replica: &str, snapshot: Option<&str>) -> String {
    store_section_under("nexus", url, replica, snapshot)
}

/// The admin CLI on the same Redis as the replicas.
fn admin_for(redis: &RedisServer) -> Admin {
    Admin::new(&store_section(&redis.url(), "admin", None))
}

fn replica(
    keys: &TestKeys,
    redis_url: &str,
    id: &str,
    snapshot: Option<&str>,
) -> Result<Edge, String> {
    let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
    opts.store = Some(store_section(redis_url, id, snapshot));
    Edge::try_start(&opts)
}

/// Makes (or remakes) the ACL user `name` with `password`, allowed everything but `denied`.
fn acl_user(redis: &RedisServer, name: &str, password: &str, denied: &[&str]) {
    let pw = format!(">{password}");
    let mut args = vec!["ACL", "SETUSER", name, "on", &pw, "~*", "&*", "+@all"];
    args.extend_from_slice(denied);
    redis.cmd(&args);
}

/// Waits until the admin sees `ids` heartbeating. A replica serves its loaded table before its
/// sync task writes the first heartbeat; a test that stops one must first know it is counted.
fn wait_live(admin: &Admin, ids: &[&str]) {
    wait::until(Duration::from_secs(10), "the replicas' heartbeats", || {
        let out = cli(&[
            "replicas",
            "--config",
            admin.config.to_str().expect("utf8"),
            "--json",
        ]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let live = |id: &str| {
            list.as_array()?
                .iter()
                .find(|r| r["id"] == id)
                .map(|r| r["live"] == true)
        };
        ids.iter().all(|id| live(id) == Some(true)).then_some(())
    });
}

/// Redis with `tenants` bound to instance-a, its admin, the test keys, and two instances.
struct World {
    redis: RedisServer,
    admin: Admin,
    keys: TestKeys,
    a: Backend,
    b: Backend,
}

impl World {
    fn start(tenants: &[&str]) -> World {
        let redis = RedisServer::start();
        let admin = admin_for(&redis);
        let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
        for t in tenants {
            admin.put(&binding(t, &a.url(), "active", None));
        }
        World {
            redis,
            admin,
            keys: TestKeys::new(),
            a,
            b,
        }
    }
}

impl World {
    /// The world with `tenants`, and one replica that serves them.
    fn followed(tenants: &[&str]) -> (World, Edge) {
        let w = World::start(tenants);
        let edge = replica(&w.keys, &w.redis.url(), "replica-1", None).expect("replica");
        for t in tenants {
            wait_instance(&edge, &w.keys, t, "instance-a");
        }
        (w, edge)
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to a replica's process.
fn signal(edge: &Edge, sig: &str) {
    let pid = edge.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill")
        .success());
}

/// A snapshot written by a replica that served `tenant` from `instance`; the directory holds
/// it for the test's life.
fn snapshot_from_a_replica(
    keys: &TestKeys,
    redis_url: &str,
    tenant: &str,
    instance: &str,
) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("dir");
    let snap = dir.path().join("bindings.snapshot");
    let snap_s = snap.to_str().expect("utf8").to_owned();
    let edge = replica(keys, redis_url, "replica-1", Some(&snap_s)).expect("replica");
    wait_instance(&edge, keys, tenant, instance);
    wait::until(Duration::from_secs(10), "the snapshot", || {
        snap.exists().then_some(())
    });
    (dir, snap, snap_s)
}

/// Puts an invalid record for `tenant` behind the admin's back, as an external writer might.
fn damage_record(redis: &RedisServer, tenant: &str) {
    let record = format!(r#"{{"tenant_id":"{tenant}","status":"sideways"}}"#);
    redis.cmd(&["SET", &format!("nexus:binding:{tenant}"), &record]);
}

/// The replica's metrics count exactly one refused binding record.
fn assert_one_record_rejected(edge: &Edge) {
    let metrics = edge.ops_get("/metrics").text();
    assert!(
        metrics.contains("nexus_edge_binding_records_rejected_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_change_to_a_record_written_ahead_of_the_counter_reaches_the_replicas() {
    // A record put in Redis by hand with a revision past the store's counter: the next write
    // through the CLI took its revision from the counter, older than the record's, so every
    // replica refused the change as going backwards, and --wait confirmed it all the same
    // (a delete was dropped without a word).
    let w = World::start(&["acme"]);
    w.admin.put(&binding("globex", &w.a.url(), "active", None));
    let key = "nexus:binding:globex";
    let stored: serde_json::Value =
        serde_json::from_str(&w.redis.cmd(&["GET", key])).expect("json");
    let mut ahead = stored.clone();
    ahead["revision"] = serde_json::json!(1_000_000_000_000_000u64);
    w.redis.cmd(&["SET", key, &ahead.to_string()]);
    let edge = replica(&w.keys, &w.redis.url(), "replica-1", None).expect("replica");
    wait_instance(&edge, &w.keys, "globex", "instance-a");
    wait_live(&w.admin, &["replica-1"]);

    let out = w.admin.ok(&[
        "rebind",
        "globex",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &w.b.url(),
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert!(
        out.contains("1/1 replicas on revision 1000000000000001"),
        "{out}"
    );
    assert_eq!(
        instance_of(&edge, &w.keys, "globex").as_deref(),
        Some("instance-b")
    );
    w.admin.ok(&["delete", "globex"]);
    wait::until(Duration::from_secs(10), "globex unbound", || {
        instance_of(&edge, &w.keys, "globex")
            .is_none()
            .then_some(())
    });
    assert_eq!(
        instance_of(&edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert!(
        !edge.log().contains("binding change refused"),
        "{}",
        edge.log()
    );
}

#[test]
fn rebind_reaches_every_replica_and_wait_confirms() {
    let World {
        redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&["acme"]);

    let r1 = replica(&keys, &redis.url(), "replica-1", None).expect("replica 1");
    let r2 = replica(&keys, &redis.url(), "replica-2", None).expect("replica 2");
    wait_instance(&r1, &keys, "acme", "instance-a");
    wait_instance(&r2, &keys, "acme", "instance-a");
    // --wait counts the replicas that heartbeat: both must have, or it may see only one.
    wait_live(&admin, &["replica-1", "replica-2"]);

    let out = admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &b.url(),
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert!(out.contains("2/2 replicas on revision 2"), "{out}");
    // --wait returned: both replicas already route to the new instance, no polling needed.
    assert_eq!(
        instance_of(&r1, &keys, "acme").as_deref(),
        Some("instance-b")
    );
    assert_eq!(
        instance_of(&r2, &keys, "acme").as_deref(),
        Some("instance-b")
    );
    assert_eq!((r1.revision(), r2.revision()), (2, 2));

    // Optimistic concurrency: a stale --expect-revision changes nothing.
    let (code, _, err) =
        admin.tenant(&["set-status", "acme", "suspended", "--expect-revision", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("conflict") && err.contains("revision 2"),
        "{err}"
    );
    // "Must not exist" for a record the CLI wrote: the same conflict, naming its revision.
    let (code, _, err) =
        admin.tenant(&["set-status", "acme", "suspended", "--expect-revision", "0"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("already exists (at revision 2)") && !err.contains("written by hand"),
        "{err}"
    );
    admin.ok(&[
        "set-status",
        "acme",
        "past_due",
        "--expect-revision",
        "2",
        "--reason",
        "card declined",
    ]);

    // Bad input: clear error, nothing written.
    for bad in [
        vec!["set-status", "acme", "dormant"],
        vec![
            "rebind",
            "acme",
            "--instance-id",
            "x",
            "--instance-url",
            "ftp://nowhere",
        ],
        vec![
            "rebind",
            "nobody",
            "--instance-id",
            "x",
            "--instance-url",
            "http://127.0.0.1:1",
        ],
        vec!["set-status", "ACME", "active"],
    ] {
        let (code, _, err) = admin.tenant(&bad);
        assert_ne!(code, 0, "{bad:?} must fail");
        assert!(!err.is_empty(), "{bad:?} must say why");
    }
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), "3");

    // The audit log has who, when, why, old and new.
    let history: serde_json::Value =
        serde_json::from_str(&admin.ok(&["history", "acme", "--json"])).expect("history json");
    let entries = history.as_array().expect("array");
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1]["op"], "rebind");
    assert_eq!(entries[1]["old"]["instance_url"], format!("{}/", a.url()));
    assert_eq!(entries[1]["new"]["instance_url"], format!("{}/", b.url()));
    assert_eq!(entries[2]["reason"], "card declined");
    assert_eq!(entries[2]["actor"], "test-admin");
    assert_eq!(entries[2]["new"]["revision"], 3);

    // An entry damaged in Redis is named; the rest of the history still shows.
    redis.cmd(&["LPUSH", "nexus:audit:acme", "not an entry"]);
    let mut stray = entries[0].clone();
    stray["tenant"] = serde_json::json!("globex");
    redis.cmd(&["LPUSH", "nexus:audit:acme", &stray.to_string()]);
    let (code, out, err) = admin.tenant(&["history", "acme", "--json"]);
    assert_ne!(code, 0, "an incomplete history is not a success");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("history json");
    assert_eq!(shown, history);
    assert!(
        err.contains("unreadable audit entry: nexus:audit:acme index 1"),
        "{err}"
    );
    assert!(
        err.contains("nexus:audit:acme index 0: an entry of tenant \"globex\""),
        "{err}"
    );

    let out = cli(&[
        "replicas",
        "--config",
        admin.config.to_str().expect("utf8"),
        "--json",
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replicas json");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    // With --json, the write and the wait are one JSON document.
    let out = admin.ok(&["--json", "set-status", "acme", "active", "--wait"]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["written"]["tenant_id"], "acme", "{doc}");
    assert_eq!(doc["wait"]["applied"], 2, "{doc}");
    assert_eq!(doc["wait"]["revision"], doc["written"]["revision"], "{doc}");
    // A delete is confirmed like any other change (`--wait` was refused as an argument);
    // neither replica serves the tenant after.
    admin.put(&binding("initech", &a.url(), "active", None));
    let (code, out, err) = admin.tenant(&["delete", "initech", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2/2 replicas on revision"), "{out}");
    assert!(
        !err.contains("since"),
        "a delete is not 'deleted since': {err}"
    );
    for r in [&r1, &r2] {
        assert_eq!(instance_of(r, &keys, "initech"), None);
    }
    // An audit reason of 100 KB would be kept in every entry: refused, nothing written.
    let long = "x".repeat(2000);
    let (code, _, err) = admin.tenant(&["--reason", &long, "set-status", "acme", "past_due"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at most 1024"), "{err}");
}

#[test]
fn a_wait_shorter_than_the_replicas_heartbeat_interval_is_lengthened_and_said() {
    // Only heartbeats written during a wait count: `--timeout 1s` against replicas that
    // heartbeat every 2 s timed out half the time on a replica that had applied the change.
    let w = World::start(&["acme"]);
    let mut opts = EdgeOptions::new(w.keys.jwks(), serde_json::json!({}));
    opts.store = Some(
        store_section(&w.redis.url(), "replica-slow", None)
            .replace(&format!("\"{HEARTBEAT}\""), "\"2s\""),
    );
    let _slow = Edge::try_start(&opts).expect("replica");
    wait_live(&w.admin, &["replica-slow"]);
    for _ in 0..3 {
        let (code, out, err) = w.admin.tenant(&["wait", "acme", "1", "--timeout", "1s"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            err.contains("waiting up to 3s, not 1s: replicas heartbeat every 2s"),
            "{err}"
        );
    }
}

#[test]
fn an_import_that_would_stop_half_way_writes_nothing() {
    // Written one tenant at a time, an import stopped at a domain another tenant (not in the
    // file) holds, or at a key of another type, with the records before it written.
    let w = World::start(&["acme"]);
    let record = |tenant: &str, domains: &[&str]| {
        let mut r = binding(tenant, &w.a.url(), "active", None);
        r["domains"] = serde_json::json!(domains);
        r
    };
    w.admin.put(&record("hooli", &["shop.hooli.test"]));
    let before = w.redis.cmd(&["GET", "nexus:revision"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("import.json");
    let import = |records: Vec<serde_json::Value>| {
        let doc = nexus_e2e::edge::bindings_file(records);
        std::fs::write(&file, doc.to_string()).expect("write");
        w.admin.tenant(&["import", file.to_str().expect("utf8")])
    };
    let (code, _, err) = import(vec![
        record("newc", &[]),
        record("newd", &["shop.hooli.test"]),
        record("newe", &[]),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing imported at tenant newd")
            && err.contains("domain shop.hooli.test already belongs to tenant hooli"),
        "{err}"
    );
    w.redis.cmd(&["HSET", "nexus:binding:newe", "f", "v"]);
    let (code, _, err) = import(vec![record("newc", &[]), record("newe", &[])]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("nothing imported") && err.contains("nexus:binding:newe is a Redis hash"),
        "{err}"
    );
    assert_eq!(
        w.redis.cmd(&["GET", "nexus:revision"]),
        before,
        "nothing written"
    );
    assert_eq!(w.redis.cmd(&["EXISTS", "nexus:binding:newc"]), "0");
    // A domain whose indexed holder no longer claims it (edited by hand) may be taken, as a
    // put may take it.
    w.redis.cmd(&["DEL", "nexus:binding:newe"]);
    w.admin.put(&record("hooli", &[]));
    w.redis
        .cmd(&["HSET", "nexus:domains", "shop.hooli.test", "hooli"]);
    let (code, out, err) = import(vec![record("newd", &["shop.hooli.test"])]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn history_prints_a_forged_entry_s_control_characters_as_escapes() {
    // The CLI refuses control and invisible characters in --actor and --reason, since
    // `history` prints them; an entry pushed into Redis by hand carried them to the terminal
    // all the same (an escape sequence clears a line and forges another).
    let w = World::start(&["acme"]);
    let history: serde_json::Value =
        serde_json::from_str(&w.admin.ok(&["history", "acme", "--json"])).expect("json");
    let mut forged = history[0].clone();
    forged["actor"] =
        serde_json::json!("mallory\u{1b}[2K\r\u{1b}[32mrev 99 alice\nrev 100  bob  delete");
    forged["reason"] = serde_json::json!("ok\u{202e}evil");
    w.redis
        .cmd(&["LPUSH", "nexus:audit:acme", &forged.to_string()]);
    for args in [&["history", "acme"][..], &["history", "acme", "--json"]] {
        let out = w.admin.ok(args);
        assert!(
            !out.contains(['\u{1b}', '\r', '\u{202e}']),
            "{args:?}: {out:?}"
        );
        // (JSON escapes the C0 controls itself, `\r` as `\\r`.)
        assert!(
            (out.contains("mallory\\u001b[2K\\u000d") || out.contains("mallory\\u001b[2K\\r"))
                && out.contains("ok\\u202eevil"),
            "{args:?}: {out}"
        );
    }
    // Nor does a line feed in it forge an entry of its own.
    let text = w.admin.ok(&["history", "acme"]);
    assert!(!text.lines().any(|l| l.starts_with("rev 100")), "{text}");
    // And the JSON is still JSON, its strings what the store holds.
    let read: serde_json::Value =
        serde_json::from_str(&w.admin.ok(&["history", "acme", "--json"])).expect("json");
    assert_eq!(read[1]["reason"], "ok\u{202e}evil");
}

#[test]
fn a_write_that_would_change_nothing_writes_nothing_unless_asked_to() {
    // A script re-applying the desired state every minute took a revision, a feed entry and
    // an audit entry each time, and pushed the tenant's real changes out of its capped audit.
    let (w, edge) = World::followed(&["acme"]);
    wait_live(&w.admin, &["replica-1"]);
    let mut acme = binding("acme", &w.a.url(), "active", None);
    acme["domains"] = serde_json::json!(["shop.acme-corp.test"]);
    w.admin.put(&acme);
    let written = |w: &World| {
        [
            "GET nexus:revision",
            "XLEN nexus:changes",
            "LLEN nexus:audit:acme",
        ]
        .map(|c| w.redis.cmd(&c.split(' ').collect::<Vec<_>>()))
    };
    let before = written(&w);
    assert_eq!(before[0], "2");
    let url = w.a.url();
    let same_instance = [
        "rebind",
        "acme",
        "--instance-id",
        "inst-acme",
        "--instance-url",
        &url,
    ];
    for args in [&["set-status", "acme", "active"][..], &same_instance] {
        let (code, out, err) = w.admin.tenant(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("acme  rev 2"), "{args:?}: {out}");
        assert!(
            err.contains("acme already is as asked (revision 2): nothing written"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = w.admin.try_put(&[], &acme);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing written"), "{err}");
    // From a file an editor began with a byte order mark, too.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("acme.json");
    std::fs::write(&file, format!("\u{feff}{acme}")).expect("write");
    let (code, _, err) = w.admin.tenant(&["put", file.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing written"), "{err}");
    // With --wait and --json: one document that says so, the replica confirmed on it.
    let out = w
        .admin
        .ok(&["--json", "set-status", "acme", "active", "--wait"]);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(doc["written"]["revision"], 2, "{doc}");
    assert_eq!(doc["unchanged"], true, "{doc}");
    assert_eq!(doc["wait"]["applied"], 1, "{doc}");
    assert_eq!(written(&w), before, "nothing was written");

    // Any change is written; --always-write writes one that is not.
    let out = w.admin.ok(&["set-status", "acme", "past_due"]);
    assert!(out.contains("acme  rev 3"), "{out}");
    let (code, out, err) = w
        .admin
        .tenant(&["set-status", "acme", "past_due", "--always-write"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme  rev 4"), "{out}{err}");
    assert!(!err.contains("nothing written"), "{err}");
    assert_eq!(w.redis.cmd(&["LLEN", "nexus:audit:acme"]), "4");

    // A domain index that does not back the record (edited by hand): replicas may refuse
    // the record, so the same record is written, and the index put right.
    w.redis
        .cmd(&["HDEL", "nexus:domains", "shop.acme-corp.test"]);
    acme["status"] = serde_json::json!("past_due");
    let (code, out, err) = w.admin.try_put(&[], &acme);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme  rev 5"), "{out}{err}");
    assert_eq!(
        w.redis
            .cmd(&["HGET", "nexus:domains", "shop.acme-corp.test"]),
        "acme"
    );

    // A record edited by hand, its revision kept: no change event announced it, so the
    // replica still serves instance-a. Putting the record as it should be writes it, and the
    // replica hears of it.
    let stored = w.redis.cmd(&["GET", "nexus:binding:acme"]);
    let mut edited: serde_json::Value = serde_json::from_str(&stored).expect("record");
    edited["instance_url"] = serde_json::json!(format!("{}/", w.b.url()));
    w.redis
        .cmd(&["SET", "nexus:binding:acme", &edited.to_string()]);
    acme["instance_url"] = serde_json::json!(w.b.url());
    let (code, out, err) = w.admin.try_put(&[], &acme);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acme  rev 6"), "{out}{err}");
    wait_instance(&edge, &w.keys, "acme", "instance-b");

    // No audit entry to vouch for the record (the list deleted by hand), or a counter behind
    // it (set back by hand): written, so the replicas hear of it, and the counter moved on.
    w.redis.cmd(&["DEL", "nexus:audit:acme"]);
    let out = w.admin.ok(&["set-status", "acme", "past_due"]);
    assert!(out.contains("acme  rev 7"), "{out}");
    w.redis.cmd(&["SET", "nexus:revision", "3"]);
    let out = w.admin.ok(&["set-status", "acme", "past_due"]);
    assert!(out.contains("acme  rev 8"), "{out}");
    let out = w.admin.ok(&["set-status", "acme", "past_due"]);
    assert!(out.contains("acme  rev 8"), "vouched for again: {out}");

    // While a restore holds the store, a write that would change nothing is refused as any
    // other is, not answered "as asked".
    w.redis.cmd(&["SET", "nexus:restoring", "x"]);
    let (code, _, err) = w.admin.tenant(&["set-status", "acme", "past_due"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("a restore import is writing"), "{err}");
    w.redis.cmd(&["DEL", "nexus:restoring"]);
}

#[test]
fn wait_with_no_live_replica_says_so_at_once() {
    let World {
        redis, admin, a, ..
    } = World::start(&["acme"]);
    let (code, _, err) = admin.tenant(&[
        "set-status",
        "acme",
        "past_due",
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("no replica is live (none is heartbeating); waiting up to 1s")
            && err.contains("0/0 live replicas")
            && err.contains("behind: no live replica"),
        "{err}"
    );
    // Without --wait too, a write into a key prefix no router has ever followed (a typo in
    // key_prefix) says so: it passed in silence.
    let (code, _, err) = admin.tenant(&["set-status", "acme", "active"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("no replica heartbeat is kept under this key prefix"),
        "{err}"
    );
    // An admin whose key_prefix names no store at all (a typo) finds every tenant missing,
    // and every list empty: said why it may be.
    let typo = Admin::new(&store_section_under("nexsu", &redis.url(), "admin", None));
    for args in [
        &["get", "acme"][..],
        &["set-status", "acme", "active"],
        &["list"],
    ] {
        let (_, _, err) = typo.tenant(args);
        assert!(
            err.contains("Redis holds nothing under key prefix \"nexsu\""),
            "{args:?}: {err}"
        );
    }
    // A domain another tenant holds is named with its holder and what to do.
    let mut acme = binding("acme", &a.url(), "active", None);
    acme["domains"] = serde_json::json!(["shop.example.com"]);
    admin.put(&acme);
    let mut globex = binding("globex", &a.url(), "active", None);
    globex["domains"] = serde_json::json!(["shop.example.com"]);
    let (code, _, err) = admin.try_put(&[], &globex);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "domain shop.example.com already belongs to tenant acme; release it there first"
        ),
        "{err}"
    );
}

#[test]
fn a_replica_that_shuts_down_leaves_the_fleet() {
    // Its heartbeat stayed for an hour: `replicas` listed it and every --wait named it
    // silent after each restart or rolling deploy.
    let (w, mut edge) = World::followed(&["acme"]);
    wait_live(&w.admin, &["replica-1"]);
    edge.terminate();
    let status = edge.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let out = cli(&[
        "replicas",
        "--config",
        w.admin.config.to_str().expect("utf8"),
        "--json",
    ]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list, serde_json::json!([]), "{list}");
}

#[test]
fn two_replicas_given_one_id_are_told_apart_and_named() {
    // Two replicas with one `replica_id` (a config copied between hosts): both wrote one
    // heartbeat entry, the fleet counted them as one, and `--wait` could confirm a change by
    // whichever wrote last while the other had not applied it. Nothing said so.
    let w = World::start(&["acme"]);
    let r1 = replica(&w.keys, &w.redis.url(), "edge-eu-1", None).expect("replica 1");
    let r2 = replica(&w.keys, &w.redis.url(), "edge-eu-1", None).expect("replica 2");
    let config = w.admin.config.to_str().expect("utf8").to_owned();
    wait::until(Duration::from_secs(10), "the shared id seen", || {
        let out = cli(&["replicas", "--config", &config, "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .any(|r| r["id"] == "edge-eu-1" && r["id_shared"] == true)
            .then_some(())
    });
    // Each replica judges on its own, a beat or two apart, and each heartbeat carries its
    // writer's judgement: until both have judged, a reader may still get the other's "not
    // shared" (this test once failed so, under load).
    let says = "another process heartbeats under this replica's id";
    wait::until(
        Duration::from_secs(10),
        "both replicas to see the shared id",
        || (r1.log().contains(says) && r2.log().contains(says)).then_some(()),
    );
    // The one heartbeat entry may still be the last written before the second judged.
    wait::until(
        Duration::from_secs(10),
        "`replicas` to name the shared id",
        || {
            let out = cli(&["replicas", "--config", &config]);
            String::from_utf8_lossy(&out.stdout)
                .contains("another process heartbeats under this id")
                .then_some(())
        },
    );
    // --wait cannot tell what each serves: it does not confirm the change.
    let (code, _, err) = w
        .admin
        .tenant(&["set-status", "acme", "past_due", "--wait"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("not confirmed by edge-eu-1 (another process heartbeats under this id"),
        "{err}"
    );
    // One replica per id again: no longer shared.
    drop(r2);
    wait::until(Duration::from_secs(10), "the id no longer shared", || {
        let out = cli(&["replicas", "--config", &config, "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array()?
            .iter()
            .any(|r| {
                r["id"] == "edge-eu-1"
                    && r["live"] == true
                    && r.get("id_shared") == Some(&serde_json::json!(false))
            })
            .then_some(())
    });
    assert!(!r1.log().contains("ERROR"), "{}", r1.log());
}

/// Replicas `replica-up` and `replica-down`, both serving acme and heard from.
fn up_and_down(redis: &RedisServer, admin: &Admin, keys: &TestKeys) -> (Edge, Edge) {
    let r1 = replica(keys, &redis.url(), "replica-up", None).expect("r1");
    let r2 = replica(keys, &redis.url(), "replica-down", None).expect("r2");
    wait_instance(&r1, keys, "acme", "instance-a");
    wait_instance(&r2, keys, "acme", "instance-a");
    wait_live(admin, &["replica-up", "replica-down"]);
    (r1, r2)
}

/// Rebinds acme to `to` (as `inst-b`), with `flags` after.
fn rebind_acme(admin: &Admin, to: &Backend, flags: &[&str]) -> (i32, String, String) {
    let url = to.url();
    let mut args = vec![
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &url,
    ];
    args.extend_from_slice(flags);
    admin.tenant(&args)
}

/// Rebinds acme to `to` with `--wait --timeout 2s`: time enough for a live replica to apply
/// it under load, short of a stopped replica's leaving the live window (5 s).
fn rebind_waiting(admin: &Admin, to: &Backend) -> (i32, String, String) {
    rebind_acme(admin, to, &["--wait", "--timeout", "2s"])
}

#[test]
fn wait_names_replicas_stopped_or_on_another_history() {
    let World {
        redis,
        admin,
        keys,
        a: _a,
        b,
    } = World::start(&["acme"]);
    let (_r1, r2) = up_and_down(&redis, &admin, &keys);
    // Freeze replica-down: it stops heartbeating and applying changes.
    signal(&r2, "-STOP");
    let (code, out, err) = rebind_waiting(&admin, &b);
    signal(&r2, "-CONT");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("timed out") && err.contains("replica-down"),
        "{err}"
    );
    assert!(err.contains("1/2"), "{err}");
    assert!(err.contains("the change is written (revision"), "{err}");
    // Once it runs again it catches up, and the admin can wait for that without writing the
    // change again (the only way there was).
    let rev = out
        .split_whitespace()
        .skip_while(|w| *w != "rev")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let (code, out, err) = admin.tenant(&["wait", "acme", &rev, "--timeout", "20s"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("2/2 replicas on revision {rev}")),
        "{out}"
    );
    // A revision never written is no change to wait for: said at once.
    for never in ["0", "99999"] {
        let (code, _, err) = admin.tenant(&["wait", "acme", never]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("is not one the store has written"), "{err}");
    }
    // Nor is a revision of another tenant's change, or a tenant never written (a mistyped
    // name): the wait would confirm a revision without a word about this tenant's record.
    let (code, _, err) = admin.tenant(&["wait", "globex", &rev]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no change of tenant globex is recorded"),
        "{err}"
    );
    // Nor one from before the tenant's record was made: none of its changes (globex, made
    // after acme's first revision, "confirmed" acme's at once).
    admin.put(&binding("globex", &b.url(), "active", None));
    let (code, _, err) = admin.tenant(&["wait", "globex", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("older than tenant globex's record"), "{err}");
    wait_instance(&r2, &keys, "acme", "instance-b");

    // A replica still serving another history (Redis lost its data under it) reports
    // revisions of that history: they say nothing about this one's, so it has not applied
    // the change, whatever the number.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let beat = serde_json::json!({
        "applied_revision": 99, "at_ms": now_ms as u64, "interval_ms": 1000, "version": "0"
    });
    redis.cmd(&["HSET", "nexus:replicas", "replica-old", &beat.to_string()]);
    let (code, _, err) = admin.tenant(&[
        "set-status",
        "acme",
        "past_due",
        "--wait",
        "--timeout",
        "1s",
    ]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("replica-old (still on another history)"),
        "{err}"
    );
    let list = cli(&["replicas", "--config", admin.config.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("on another history"), "{text}");

    // A replica silent since before the wait (cut off from Redis, it may still serve its last
    // table) is not counted, but named: a confirmation that passed over it unseen misled.
    redis.cmd(&["HDEL", "nexus:replicas", "replica-old"]);
    let beat = serde_json::json!({
        "applied_revision": 1, "at_ms": redis_now_ms(&redis) - 60_000, "interval_ms": 100,
        "version": "0"
    });
    redis.cmd(&[
        "HSET",
        "nexus:replicas",
        "replica-cut-off",
        &beat.to_string(),
    ]);
    let (code, out, err) = admin.tenant(&["set-status", "acme", "active", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2/2 replicas"), "{out}");
    assert!(
        err.contains("not counted, silent since before the wait: replica-cut-off (silent for 6"),
        "{err}"
    );

    // A heartbeat stamped far ahead of Redis's clock (by hand, by a host clock, before a
    // failover to a node whose clock runs behind) has no age: read as just written, it was
    // live for ever and held up every --wait, behind at its old revision.
    redis.cmd(&["HDEL", "nexus:replicas", "replica-cut-off"]);
    let beat = serde_json::json!({
        "applied_revision": 1, "at_ms": redis_now_ms(&redis) + 1_800_000, "interval_ms": 100,
        "version": "0"
    });
    redis.cmd(&["HSET", "nexus:replicas", "replica-ahead", &beat.to_string()]);
    let (code, out, err) = admin.tenant(&[
        "set-status",
        "acme",
        "past_due",
        "--wait",
        "--timeout",
        "20s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2/2 replicas"), "{out}");
    assert!(
        err.contains("replica-ahead (heartbeat stamped 1799 s ahead of Redis's clock")
            || err.contains("replica-ahead (heartbeat stamped 1800 s ahead of Redis's clock"),
        "{err}"
    );
    let list = cli(&["replicas", "--config", admin.config.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("s ahead of Redis's clock") && text.contains("not counted as live"),
        "{text}"
    );
    // Stamped more than an hour ahead: taken out, as one silent for an hour is.
    let beat = serde_json::json!({
        "applied_revision": 1, "at_ms": u64::MAX, "interval_ms": u64::MAX, "version": "0"
    });
    redis.cmd(&["HSET", "nexus:replicas", "replica-ahead", &beat.to_string()]);
    let list = cli(&["replicas", "--config", admin.config.to_str().expect("utf8")]);
    assert!(list.status.success());
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("replica-ahead"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    assert_eq!(
        redis.cmd(&["HEXISTS", "nexus:replicas", "replica-ahead"]),
        "0"
    );
}

/// Writes acme's record as a write of `revision` to `to` would, and the counter with it, but
/// no feed entry: a write whose record a replica reads for an earlier entry (records are read
/// as they are now). Returns the record as it was.
fn write_ahead_of_the_feed(redis: &RedisServer, revision: u64, to: &Backend) -> String {
    let was = redis.cmd(&["GET", "nexus:binding:acme"]);
    let mut record: serde_json::Value = serde_json::from_str(&was).expect("record");
    record["instance_url"] = serde_json::json!(to.url());
    record["revision"] = serde_json::json!(revision);
    redis.cmd(&["SET", "nexus:binding:acme", &record.to_string()]);
    redis.cmd(&["SET", "nexus:revision", &revision.to_string()]);
    was
}

/// The replica applies a change of acme (`change`, the admin's arguments, made while it is
/// stopped) reading acme's record as a later write `ahead` (to `to`) left it; then, stopped
/// again, the store loses that write (acme's record and the counter put back), as a failover
/// to a node that never got it does. The replica is left stopped.
fn lose_a_write_read_ahead(w: &World, edge: &Edge, change: &[&str], ahead: u64, to: &Backend) {
    signal(edge, "-STOP");
    w.admin.ok(change);
    let was = write_ahead_of_the_feed(&w.redis, ahead, to);
    signal(edge, "-CONT");
    wait_instance(edge, &w.keys, "acme", &to.name);
    signal(edge, "-STOP");
    w.redis.cmd(&["SET", "nexus:binding:acme", &was]);
    w.redis
        .cmd(&["SET", "nexus:revision", &(ahead - 1).to_string()]);
}

/// `rebind TENANT` to `to` (instance id `inst`).
fn rebind_args<'a>(tenant: &'a str, inst: &'a str, url: &'a str) -> [&'a str; 6] {
    [
        "rebind",
        tenant,
        "--instance-id",
        inst,
        "--instance-url",
        url,
    ]
}

#[test]
fn a_write_a_failover_lost_is_not_served_on() {
    // A replica applies each feed entry as its tenant's record is now, maybe writes past the
    // entry. A failover (replication is asynchronous) to a node that has the entry but not
    // the write left the replica serving the lost write: its last entry was there and the
    // counter matched its position, so nothing looked wrong until the next reconcile (5
    // minutes by default), and a new write reusing the lost one's revision was taken for one
    // already applied.
    let (w, edge) = World::followed(&["acme"]);
    let c = Backend::start("instance-c");
    wait_live(&w.admin, &["replica-1"]);
    let (a, b) = (w.a.url(), w.b.url());

    // Entry 2 (acme to instance-b) read with write 3's record (to instance-c), write 3 lost.
    lose_a_write_read_ahead(&w, &edge, &rebind_args("acme", "inst-b", &b), 3, &c);
    signal(&edge, "-CONT");
    wait_instance(&edge, &w.keys, "acme", "instance-b");

    // Again, and this time the new primary's next write (to instance-a) takes the lost
    // write's revision before the replica heard of the failover.
    lose_a_write_read_ahead(&w, &edge, &["set-status", "acme", "past_due"], 4, &c);
    let out = w.admin.ok(&rebind_args("acme", "inst-a", &a));
    assert!(out.contains("rev 4"), "{out}");
    signal(&edge, "-CONT");
    wait_instance(&edge, &w.keys, "acme", "instance-a");
    let log = edge.log();
    assert!(log.contains("reconciling"), "{log}");
}

#[test]
fn a_lost_write_s_revision_given_to_another_tenant_is_not_served_on() {
    // As above, but the new primary's next write is another tenant's: the counter is where
    // the replica saw it and its entry is there, and the lost write was served until the
    // next reconcile (5 minutes by default), the replica reporting itself in sync.
    let (w, edge) = World::followed(&["acme", "globex"]);
    let c = Backend::start("instance-c");
    wait_live(&w.admin, &["replica-1"]);
    let b = w.b.url();
    lose_a_write_read_ahead(&w, &edge, &rebind_args("acme", "inst-b", &b), 4, &c);
    let out = w.admin.ok(&rebind_args("globex", "inst-b", &b));
    assert!(out.contains("rev 4"), "{out}");
    signal(&edge, "-CONT");
    wait_instance(&edge, &w.keys, "globex", "instance-b");
    wait_instance(&edge, &w.keys, "acme", "instance-b");
    let log = edge.log();
    assert!(
        log.contains("another tenant's change the revision of a record"),
        "{log}"
    );
}

#[test]
fn a_replica_of_a_node_that_takes_no_writes_is_not_said_in_sync() {
    // A node demoted to a read-only replica refuses the heartbeat (READONLY), which ends the
    // session; the replica reconnected, caught up and was marked in sync every second, so its
    // sync age stayed fresh while it followed nothing.
    let (w, edge) = World::followed(&["acme"]);
    wait_live(&w.admin, &["replica-1"]);
    // A replica of a master it cannot reach keeps its data and takes no writes.
    w.redis.cmd(&["REPLICAOF", "127.0.0.1", "1"]);
    wait::until(Duration::from_secs(30), "the sync age growing", || {
        (edge.metric("nexus_edge_binding_sync_age_seconds") >= 3).then_some(())
    });
    assert_eq!(edge.metric("nexus_edge_binding_store_up"), 0);
    w.redis.cmd(&["REPLICAOF", "NO", "ONE"]);
    wait::until(Duration::from_secs(30), "in sync again", || {
        (edge.metric("nexus_edge_binding_store_up") == 1
            && edge.metric("nexus_edge_binding_sync_age_seconds") <= 1)
            .then_some(())
    });
}

#[test]
fn a_replica_follows_the_feed_and_starts_while_redis_refuses_writes_for_memory() {
    // At `maxmemory` under `noeviction`, Redis refuses the heartbeat's write (OOM) and still
    // answers reads. That ended every session before it read the feed: the replica served a
    // binding Redis had changed for as long as memory stayed full, and one without a
    // snapshot could not start.
    let (w, edge) = World::followed(&["acme"]);
    wait_live(&w.admin, &["replica-1"]);
    // The change is written, then memory fills before the replica reads it.
    signal(&edge, "-STOP");
    let b = w.b.url();
    w.admin.ok(&rebind_args("acme", "inst-b", &b));
    w.redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    signal(&edge, "-CONT");
    wait_instance(&edge, &w.keys, "acme", "instance-b");
    let late = replica(&w.keys, &w.redis.url(), "replica-2", None).expect("a replica starts");
    wait_instance(&late, &w.keys, "acme", "instance-b");
    assert!(
        edge.log().contains("Redis refuses writes"),
        "{}",
        edge.log()
    );
    w.redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_live(&w.admin, &["replica-1", "replica-2"]);
}

#[test]
fn a_replica_is_heard_by_the_fleet_before_it_serves() {
    // A replica takes its heartbeat out as it stops; restarted, it served what it loaded
    // before its first heartbeat, and `--wait` could confirm a change meanwhile without it.
    let w = World::start(&["acme"]);
    let edge = replica(&w.keys, &w.redis.url(), "replica-1", None).expect("replica");
    // Ready (listening) now: its heartbeat must be there already, with what it loaded.
    let beat = w.redis.cmd(&["HGET", "nexus:replicas", "replica-1"]);
    let beat: serde_json::Value = serde_json::from_str(&beat).expect("a heartbeat");
    assert_eq!(beat["applied_revision"], 1, "{beat}");
    drop(edge);
}

#[test]
fn wait_counts_only_heartbeats_written_since_the_change() {
    // Revisions are compared by number, and numbers can go back (a counter set back, a
    // failover that lost writes). A replica stopped after heartbeating a number past the
    // change's confirmed a change it never saw.
    let w = World::start(&["acme", "globex"]);
    // globex is active already: the write is made only to move the counter.
    w.admin
        .ok(&["set-status", "globex", "active", "--always-write"]);
    let (_r1, r2) = up_and_down(&w.redis, &w.admin, &w.keys);
    signal(&r2, "-STOP");
    // The counter at 3, set back to 2: acme's next change (its record is at 1) is revision 3
    // again, which replica-down heartbeated before it stopped.
    assert_eq!(w.redis.cmd(&["GET", "nexus:revision"]), "3");
    w.redis.cmd(&["SET", "nexus:revision", "2"]);
    let (code, _, err) = rebind_waiting(&w.admin, &w.b);
    signal(&r2, "-CONT");
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("replica-down (not heard from since the change)"),
        "{err}"
    );
}

/// A replica on the world's Redis as an ACL user denied `denied`, serving acme.
fn replica_as_user_denied(w: &World, denied: &[&str], id: &str) -> Edge {
    acl_user(&w.redis, "limited", "secret", denied);
    let url = w.redis.url_as("limited", "secret");
    let edge = replica(&w.keys, &url, id, None).expect("replica");
    wait_instance(&edge, &w.keys, "acme", "instance-a");
    edge
}

#[test]
fn a_replica_that_may_not_write_its_heartbeat_follows_the_feed_without_reconnecting() {
    // Its heartbeat refused, the replica ended its session and reconnected several times a
    // second, for ever, catching up each time; no one was told why.
    let w = World::start(&["acme"]);
    let edge = replica_as_user_denied(&w, &["-hset", "-@scripting"], "replica-mute");
    follows_a_rebind(&w, &edge);
    let log = edge.log();
    assert_eq!(
        log.matches("heartbeats cannot be written").count(),
        1,
        "{log}"
    );
    assert!(!log.contains("binding sync lost Redis"), "{log}");
}

#[test]
fn a_replica_says_when_redis_may_evict_bindings() {
    let w = World::start(&["acme"]);
    w.redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let edge = replica(&w.keys, &w.redis.url(), "replica-e", None).expect("replica");
    wait_instance(&edge, &w.keys, "acme", "instance-a");
    wait::until(Duration::from_secs(10), "the eviction warning", || {
        edge.log()
            .contains("set maxmemory-policy to noeviction")
            .then_some(())
    });
}

/// A replica whose wall clock is `offset` (`-2h`, `+2h`) off the host's.
fn replica_with_clock(keys: &TestKeys, redis_url: &str, id: &str, offset: &str) -> Edge {
    let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
    opts.store = Some(store_section(redis_url, id, None));
    opts.env = nexus_e2e::clock::skewed(offset);
    Edge::try_start(&opts).expect("replica")
}

/// Redis's clock (`TIME`), in Unix ms.
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let time = redis.cmd(&["TIME"]);
    let mut parts = time.lines().map(|l| l.trim().parse::<u64>().expect("TIME"));
    let (secs, micros) = (parts.next().expect("secs"), parts.next().expect("micros"));
    secs * 1000 + micros / 1000
}

/// `replicas --json` as an admin whose clock is `offset` off the host's: id → live.
fn live_as_seen_with_clock(admin: &Admin, offset: &str) -> Vec<(String, bool)> {
    let mut cmd = std::process::Command::new(nexus_e2e::edge::binary());
    cmd.envs(nexus_e2e::clock::skewed(offset)).args([
        "replicas",
        "--config",
        admin.config.to_str().expect("utf8"),
        "--json",
    ]);
    let out = nexus_e2e::process::output(&mut cmd);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replicas json");
    list.as_array()
        .expect("array")
        .iter()
        .map(|r| (r["id"].as_str().expect("id").to_owned(), r["live"] == true))
        .collect()
}

#[test]
fn a_replica_whose_user_may_not_run_scripts_nor_read_time_still_follows_and_heartbeats() {
    // A heartbeat the script cannot stamp is stamped with this host's clock and written
    // plainly, as before heartbeats went by Redis's clock: never a reason to stop following.
    let w = World::start(&["acme"]);
    let edge = replica_as_user_denied(&w, &["-@scripting", "-time"], "replica-least");
    wait_live(&w.admin, &["replica-least"]);
    follows_a_rebind(&w, &edge);
    assert!(
        edge.log().contains("stamped with this host's clock"),
        "{}",
        edge.log()
    );
}

#[test]
fn audit_entries_are_stamped_by_redis_s_clock_not_the_admin_s() {
    // An admin host whose clock ran six years behind wrote its entry (and the record's
    // updated_at) in 2020, after entries of today: the audit trail read out of order.
    let World { redis, admin, .. } = World::start(&["acme"]);
    let mut cmd = std::process::Command::new(nexus_e2e::edge::binary());
    cmd.envs(nexus_e2e::clock::skewed("-2200d")).args([
        "tenant",
        "--config",
        admin.config.to_str().expect("utf8"),
        "--actor",
        "skewed-admin",
        "set-status",
        "acme",
        "past_due",
    ]);
    let out = nexus_e2e::process::output(&mut cmd);
    assert!(out.status.success(), "{out:?}");
    let history: serde_json::Value =
        serde_json::from_str(&admin.ok(&["history", "acme", "--json"])).expect("json");
    let last = history.as_array().and_then(|a| a.last()).expect("an entry");
    let at = time::OffsetDateTime::parse(
        last["at"].as_str().expect("at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let redis_ms = redis_now_ms(&redis) as i128;
    let at_ms = at.unix_timestamp_nanos() / 1_000_000;
    assert!(
        (redis_ms - at_ms).abs() < 60_000,
        "stamped {at}, Redis's clock says {redis_ms} ms: {last}"
    );
    assert_eq!(last["new"]["updated_at"], last["at"], "{last}");
}

#[test]
fn liveness_goes_by_redis_s_clock_not_each_host_s() {
    // Heartbeats are stamped, and judged, by Redis's clock: a replica whose clock runs two
    // hours behind is live (not skipped by `--wait`, not pruned as an hour dead), one whose
    // clock runs ahead goes dead once it stops, and an admin's own clock changes nothing.
    // So with an ACL user that may not run scripts.
    let World {
        redis,
        admin,
        keys,
        a: _a,
        ..
    } = World::start(&["acme"]);
    // This one's ACL user may not run scripts: it reads Redis's clock, then writes.
    acl_user(&redis, "no-scripts", "secret", &["-@scripting"]);
    let no_scripts = redis.url_as("no-scripts", "secret");
    let slow = replica_with_clock(&keys, &no_scripts, "replica-slow", "-2h");
    let fast = replica_with_clock(&keys, &redis.url(), "replica-fast", "+2h");
    for id in ["replica-slow", "replica-fast"] {
        let at = wait::until(Duration::from_secs(10), "a heartbeat", || {
            let beat = redis.cmd(&["HGET", "nexus:replicas", id]);
            serde_json::from_str::<serde_json::Value>(&beat).ok()?["at_ms"].as_u64()
        });
        let now = redis_now_ms(&redis);
        assert!(
            now.abs_diff(at) < 60_000,
            "{id}'s heartbeat is stamped {at}, Redis's clock says {now}"
        );
    }
    for offset in ["+0", "-3h", "+3h"] {
        wait::until(Duration::from_secs(10), "both replicas live", || {
            let seen = live_as_seen_with_clock(&admin, offset);
            let live = |id: &str| seen.iter().any(|(r, live)| r == id && *live);
            (live("replica-slow") && live("replica-fast")).then_some(())
        });
    }
    let out = admin.ok(&[
        "set-status",
        "acme",
        "past_due",
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert!(out.contains("2/2 replicas on revision 2"), "{out}");
    assert_eq!((slow.revision(), fast.revision()), (2, 2));

    // Stopped, the replica whose clock runs ahead is dead once the live window (5 s here)
    // has passed by Redis's clock.
    drop(fast);
    wait::until(Duration::from_secs(15), "replica-fast to be dead", || {
        let seen = live_as_seen_with_clock(&admin, "+0");
        seen.iter()
            .any(|(r, live)| r == "replica-fast" && !*live)
            .then_some(())
    });
}

#[test]
fn redis_outage_is_fail_static_and_changes_are_applied_after() {
    let World {
        mut redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&["acme", "globex"]);
    // The replica logs in as its own ACL user, so the test can cut it off while admins write.
    acl_user(&redis, "edge", "edge-secret", &[]);
    let edge = replica(
        &keys,
        &redis.url_as("edge", "edge-secret"),
        "replica-1",
        None,
    )
    .expect("replica");
    wait_instance(&edge, &keys, "acme", "instance-a");

    // Steady traffic for the whole test: not one request may fail.
    let traffic = Traffic::start(&edge, &keys, "globex");
    let served = |n: u64| traffic.served(n);
    served(20);

    // 1. Cut the replica off; change things meanwhile, and trim the feed so it cannot replay.
    redis.cmd(&["ACL", "SETUSER", "edge", "off"]);
    redis.cmd(&["CLIENT", "KILL", "USER", "edge"]);
    wait::until(Duration::from_secs(10), "the replica to notice", || {
        edge.ops_get("/readyz").json()["store_up"]
            .as_bool()
            .is_some_and(|up| !up)
            .then_some(())
    });
    admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &b.url(),
    ]);
    admin.ok(&["set-status", "globex", "past_due"]);
    redis.cmd(&["XTRIM", "nexus:changes", "MAXLEN", "0"]);
    served(20);
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a"),
        "cut off: last table served"
    );
    redis.cmd(&["ACL", "SETUSER", "edge", "on"]);
    wait_instance(&edge, &keys, "acme", "instance-b");
    // Health is marked right after the table is swapped: poll rather than race it.
    let reloads = wait::until(
        Duration::from_secs(10),
        "the store to be reported up",
        || {
            let text = edge.ops_get("/metrics").text();
            text.contains("nexus_edge_binding_store_up 1")
                .then_some(text)
        },
    );
    assert!(
        reloads.contains("nexus_edge_binding_store_up 1"),
        "{reloads}"
    );

    // 2. Redis itself dies under traffic, and comes back. The replica retries every second
    // or so, counted; its log says so once, not at every retry.
    let failures = edge.metric("nexus_edge_binding_sync_failures_total");
    redis.stop();
    served(50);
    // The same failure again and again (Redis refuses connections): logged once, then once a
    // minute. (Failures before it, as Redis went down, are each news.)
    let refused_lines = || {
        edge.log()
            .lines()
            .filter(|l| l.contains("binding sync lost Redis") && l.contains("Connection refused"))
            .count()
    };
    wait::until(Duration::from_secs(20), "five failed syncs", || {
        (edge.metric("nexus_edge_binding_sync_failures_total") >= failures + 5).then_some(())
    });
    assert_eq!(refused_lines(), 1, "{}", edge.log());
    redis.restart();
    // ACL users live in memory only: recreate the replica's user on the restarted server.
    acl_user(&redis, "edge", "edge-secret", &[]);
    admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-a",
        "--instance-url",
        &a.url(),
    ]);
    wait_instance(&edge, &keys, "acme", "instance-a");
    served(20);

    let (ok, failed) = traffic.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the outage",
        ok + failed
    );
}

#[test]
fn restart_during_outage_serves_the_snapshot_and_refuses_a_corrupt_one() {
    let World {
        mut redis,
        admin: _admin,
        keys,
        a: _a,
        ..
    } = World::start(&["acme"]);
    let (_dir, snap, snap_s) = snapshot_from_a_replica(&keys, &redis.url(), "acme", "instance-a");
    redis.stop();
    let edge =
        replica(&keys, &redis.url(), "replica-1", Some(&snap_s)).expect("starts from the snapshot");
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert!(
        edge.log().contains("last known good snapshot"),
        "{}",
        edge.log()
    );
    drop(edge);

    let mut bytes = std::fs::read(&snap).expect("read");
    let n = bytes.len();
    bytes[n - 5] ^= 0x20;
    std::fs::write(&snap, bytes).expect("write");
    let err = replica(&keys, &redis.url(), "replica-1", Some(&snap_s))
        .err()
        .expect("must refuse to start");
    assert!(err.contains("checksum"), "{err}");
}

/// A replica that starts from its snapshot while Redis is down has never synced, but it is
/// not fresh: the table it serves is as old as the snapshot. Its sync age says so (it was -1,
/// which an alert on `binding_sync_age_seconds > N` never saw), with the store down.
#[test]
fn a_replica_started_from_its_snapshot_reports_the_snapshots_age() {
    let World {
        mut redis,
        admin: _admin,
        keys,
        a: _a,
        ..
    } = World::start(&["acme"]);
    let (_dir, snap, snap_s) = snapshot_from_a_replica(&keys, &redis.url(), "acme", "instance-a");
    redis.stop();
    // Written an hour ago, as far as the replica can tell: made a version-2 snapshot (as the
    // builds before version 3 wrote them), whose checksum covers the records, not the header
    // line that holds the write time.
    let text = std::fs::read_to_string(&snap).expect("read");
    let (head, body) = text.split_once('\n').expect("header line");
    let mut header: serde_json::Value = serde_json::from_str(head).expect("header");
    let hour_ago = header["written_at_ms"].as_u64().expect("written_at_ms") - 3_600_000;
    header["written_at_ms"] = hour_ago.into();
    header["version"] = 2.into();
    let sum = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    header["sha256"] = sum
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    std::fs::write(&snap, format!("{header}\n{body}")).expect("write");

    let started = std::time::Instant::now();
    let edge =
        replica(&keys, &redis.url(), "replica-1", Some(&snap_s)).expect("starts from the snapshot");
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    let metrics = edge.ops_get("/metrics").text();
    let series = |name: &str| -> i64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(series("nexus_edge_binding_store_up"), 0, "{metrics}");
    let age = series("nexus_edge_binding_sync_age_seconds");
    let most = 3_600 + i64::try_from(started.elapsed().as_secs()).expect("secs") + 1;
    assert!(
        (3_600..=most).contains(&age),
        "binding_sync_age_seconds = {age}, the snapshot is an hour old\n{metrics}"
    );
    let ready = edge.ops_get("/readyz").json();
    assert_eq!(ready["store_up"], false);
    assert_eq!(ready["last_sync_unix_ms"].as_u64(), Some(hour_ago));
}

/// A snapshot names the key prefix whose table it holds. A replica pointed at another prefix
/// (a new environment, a blue/green switch) neither lets it stand in for an empty keyspace
/// nor serves it while Redis is down: that would route requests by another keyspace's
/// bindings.
#[test]
fn a_snapshot_of_another_key_prefix_is_never_served() {
    let World {
        mut redis,
        admin: _admin,
        keys,
        a: _a,
        ..
    } = World::start(&["acme"]);
    let (dir, snap, _) = snapshot_from_a_replica(&keys, &redis.url(), "acme", "instance-a");
    let copies: Vec<String> = ["up", "down"]
        .iter()
        .map(|name| {
            let copy = dir.path().join(format!("{name}.snapshot"));
            std::fs::copy(&snap, &copy).expect("copy");
            copy.to_str().expect("utf8").to_owned()
        })
        .collect();
    let url = redis.url();
    let blue = |id: &str, snapshot: &str| {
        let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
        opts.store = Some(store_section_under("nexus-blue", &url, id, Some(snapshot)));
        Edge::try_start(&opts)
    };

    // Redis up, the replica's keyspace empty: it serves that (nothing), not the snapshot.
    let edge = blue("replica-blue", &copies[0]).expect("starts on its empty keyspace");
    let r = get_with_token(edge.addr, &host("acme"), "/", &keys.token("acme", None));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        edge.log().contains("the snapshot is not used"),
        "{}",
        edge.log()
    );
    drop(edge);

    // Redis down: nothing of its own to serve, so it does not start, and says why.
    redis.stop();
    let err = blue("replica-blue", &copies[1])
        .err()
        .expect("must refuse to start");
    assert!(
        err.contains("key prefix \"nexus\"") && err.contains("follows \"nexus-blue\""),
        "{err}"
    );
}

/// Keys of the schema that another program wrote with another type. A Redis script keeps
/// what it wrote before a failing command, so each write checks every key it touches first:
/// refused whole, naming the key, nothing changed, and the tenant's history names it too.
#[test]
fn a_schema_key_of_another_type_refuses_the_write_whole() {
    let World {
        redis, admin, b, ..
    } = World::start(&["acme"]);
    let rebind = || rebind_acme(&admin, &b, &[]);
    let state = || {
        (
            redis.cmd(&["GET", "nexus:revision"]),
            redis.cmd(&["GET", "nexus:binding:acme"]),
            redis.cmd(&["XLEN", "nexus:changes"]),
        )
    };
    let before = state();
    let record = redis.cmd(&["GET", "nexus:binding:acme"]);
    // (key, what another program left there, what the CLI must say): each once, the key then
    // put back as it was.
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "nexus:audit:acme",
            &["SET", "nexus:audit:acme", "by hand"],
            "nexus:audit:acme is a Redis string, not the list nexus-edge keeps there (another \
             program wrote it), so the write was refused before any of it was made",
        ),
        (
            "nexus:changes",
            &["SET", "nexus:changes", "by hand"],
            "nexus:changes is a Redis string, not the stream",
        ),
        (
            "nexus:domains",
            &["SADD", "nexus:domains", "acme.example.com"],
            "nexus:domains is a Redis set, not the hash",
        ),
        (
            "nexus:revision",
            &["SET", "nexus:revision", "seven"],
            "nexus:revision is a Redis string that is no number, not the integer",
        ),
        (
            "nexus:binding:acme",
            &["HSET", "nexus:binding:acme", "tenant_id", "acme"],
            "nexus:binding:acme is a Redis hash, not the string nexus-edge keeps there (another \
             program wrote it), so it cannot be read",
        ),
    ];
    for (key, setup, says) in cases {
        let existed = redis.cmd(&["EXISTS", key]) == "1";
        if existed {
            redis.cmd(&["RENAME", key, "kept-aside"]);
        }
        redis.cmd(setup);
        let (code, out, err) = rebind();
        redis.cmd(&["DEL", key]);
        if existed {
            redis.cmd(&["RENAME", "kept-aside", key]);
        }
        assert_eq!(state(), before, "after {key}: {err}");
        assert_ne!(code, 0, "{out}");
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(redis.cmd(&["GET", "nexus:binding:acme"]), record);
    redis.cmd(&["SET", "nexus:audit:acme", "by hand"]);
    let (code, _, err) = admin.tenant(&["history", "acme"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("nexus:audit:acme is a Redis string, not the list")
            && err.contains("so it cannot be read"),
        "{err}"
    );
    redis.cmd(&["DEL", "nexus:audit:acme"]);
    admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &b.url(),
    ]);
    assert_ne!(state(), before);
}

/// The revision counter overwritten with something that is no number: a following replica
/// logged a conversion error that named no key. It names the key and what it holds, keeps
/// serving its table, and the admin's `replicas` says the same.
#[test]
fn a_replica_names_a_revision_counter_that_is_no_number() {
    let (w, edge) = World::followed(&["acme"]);
    let counter = w.redis.cmd(&["GET", "nexus:revision"]);
    w.redis.cmd(&["SET", "nexus:revision", "seven"]);
    let says = "nexus:revision holds \"seven\", written outside nexus-edge";
    wait::until(
        Duration::from_secs(20),
        "the log naming the counter",
        || edge.log().contains(says).then_some(()),
    );
    assert_eq!(
        instance_of(&edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );
    let out = cli(&[
        "replicas",
        "--config",
        w.admin.config.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(says),
        "{out:?}"
    );
    w.redis.cmd(&["SET", "nexus:revision", &counter]);
    follows_a_rebind(&w, &edge);
}

/// Rebinds acme to instance-b and waits until `edge` routes it there: it follows the feed.
fn follows_a_rebind(w: &World, edge: &Edge) {
    let (code, _, err) = rebind_acme(&w.admin, &w.b, &[]);
    assert_eq!(code, 0, "{err}");
    wait_instance(edge, &w.keys, "acme", "instance-b");
}

/// The change feed's key replaced by another program with another type, under a following
/// replica: it keeps serving its table, logs which key holds what (Redis is up, so retrying
/// alone changes nothing), and follows again once the key is put back.
#[test]
fn a_replica_names_a_feed_key_of_another_type_and_follows_once_it_is_back() {
    let (w, edge) = World::followed(&["acme"]);
    w.redis.cmd(&["RENAME", "nexus:changes", "kept-aside"]);
    w.redis.cmd(&["SET", "nexus:changes", "by hand"]);
    wait::until(Duration::from_secs(20), "the log naming the key", || {
        edge.log()
            .contains("nexus:changes is a Redis string, not the stream")
            .then_some(())
    });
    assert_eq!(
        instance_of(&edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );
    w.redis.cmd(&["DEL", "nexus:changes"]);
    w.redis.cmd(&["RENAME", "kept-aside", "nexus:changes"]);
    follows_a_rebind(&w, &edge);
}

#[test]
fn malformed_record_in_redis_is_isolated() {
    let (w, edge) = World::followed(&["acme", "globex"]);
    let World {
        redis,
        admin,
        keys,
        b,
        ..
    } = &w;

    // An external writer puts garbage for globex and announces it.
    damage_record(redis, "globex");
    announce(redis, "globex");
    admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &b.url(),
    ]);
    wait_instance(&edge, keys, "acme", "instance-b");
    assert_eq!(
        instance_of(&edge, keys, "globex").as_deref(),
        Some("instance-a"),
        "globex keeps its last good binding"
    );
    assert_one_record_rejected(&edge);
    // The CLI refuses to build on the damaged record, and `put` repairs it.
    let (code, _, err) = admin.tenant(&["set-status", "globex", "active"]);
    assert_ne!(code, 0);
    assert!(err.contains("damaged"), "{err}");
    admin.put(&binding("globex", &b.url(), "active", None));
    wait_instance(&edge, keys, "globex", "instance-b");
}

#[test]
fn a_replica_started_on_a_damaged_record_keeps_that_tenant_from_the_snapshot() {
    // At start-up the snapshot stands in for the table a running replica would hold, and is
    // read only when needed: here, for a tenant whose record in Redis is damaged, which keeps
    // its last good binding. Every other tenant comes from Redis.
    let World {
        redis,
        admin,
        keys,
        a: _a,
        b,
    } = World::start(&["acme", "globex"]);
    let (_dir, _, snap_s) = snapshot_from_a_replica(&keys, &redis.url(), "globex", "instance-a");
    damage_record(&redis, "globex");
    admin.put(&binding("acme", &b.url(), "active", None));

    let edge = replica(&keys, &redis.url(), "replica-2", Some(&snap_s)).expect("replica");
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-b"),
        "acme comes from Redis"
    );
    assert_eq!(
        instance_of(&edge, &keys, "globex").as_deref(),
        Some("instance-a"),
        "globex keeps the snapshot's binding"
    );
    assert_one_record_rejected(&edge);
}

#[test]
fn concurrent_writes_end_with_every_replica_on_the_highest_revision() {
    let World {
        redis,
        admin: _admin,
        keys,
        a: _a,
        ..
    } = World::start(&["acme"]);
    let r1 = replica(&keys, &redis.url(), "replica-1", None).expect("r1");
    let r2 = replica(&keys, &redis.url(), "replica-2", None).expect("r2");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let store = Arc::new(
        nexus_binding_store::redis_store::RedisStore::new(
            nexus_binding_store::redis_store::RedisOptions::new(redis.url()),
        )
        .expect("store"),
    );
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..20 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                use nexus_binding_store::{
                    Actor, BindingAdmin, IfUnchanged, Mutation, TenantId, TenantStatus,
                };
                let t = TenantId::parse("acme").expect("id");
                let actor = Actor {
                    name: format!("writer-{w}"),
                    reason: None,
                };
                for i in 0..50 {
                    let s = if (w + i) % 2 == 0 {
                        TenantStatus::Active
                    } else {
                        TenantStatus::PastDue
                    };
                    store
                        .apply(&t, Mutation::SetStatus(s), None, IfUnchanged::Write, &actor)
                        .await
                        .expect("write");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    });
    // 1 put + 1,000 status changes, every one a distinct revision.
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), "1001");
    for r in [&r1, &r2] {
        wait::until(Duration::from_secs(20), "replica on revision 1001", || {
            (r.revision() == 1001).then_some(())
        });
    }
    let stored: serde_json::Value =
        serde_json::from_str(&redis.cmd(&["GET", "nexus:binding:acme"])).expect("json");
    assert_eq!(stored["revision"], 1001);
}

#[test]
fn in_flight_request_finishes_on_the_old_instance_across_a_rebind() {
    let World {
        redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&["acme"]);
    let edge = replica(&keys, &redis.url(), "replica-1", None).expect("replica");
    wait_instance(&edge, &keys, "acme", "instance-a");
    // --wait below confirms only replicas that heartbeat.
    wait_live(&admin, &["replica-1"]);
    let hits_before = a.hits();
    let (addr, token) = (edge.addr, keys.token("acme", None));
    // Slow enough that the rebind is surely served while it is in flight (checked below).
    let slow =
        std::thread::spawn(move || get_with_token(addr, &host("acme"), "/slow/3000", &token));
    wait::until(
        Duration::from_secs(5),
        "the slow request to reach instance a",
        || (a.hits() > hits_before).then_some(()),
    );
    admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &b.url(),
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-b")
    );
    assert!(
        !slow.is_finished(),
        "the slow request ended before the rebind was served: nothing crossed it"
    );
    let r = slow.join().expect("slow");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["instance"], "instance-a");
}

/// Announces a change of `tenant` in the feed as an outside writer would: the next revision,
/// then its entry.
fn announce(redis: &RedisServer, tenant: &str) {
    // In one step, as every writer through the schema does: a full load between the two
    // would see the counter past the feed, and take the entry for a feed restarted older.
    redis.cmd(&[
        "EVAL",
        "local r = redis.call('INCR', KEYS[1]) \
         redis.call('XADD', KEYS[2], '*', 'rev', r, 'tenant', ARGV[1], 'op', 'upsert') \
         return r",
        "2",
        "nexus:revision",
        "nexus:changes",
        tenant,
    ]);
}

#[test]
fn replicas_serving_one_table_say_one_revision_past_a_refused_record() {
    // A follower passed over the refused record's entry and stayed at the revision before
    // it, while a replica loading the same store took the counter's: an alert comparing
    // replicas' revisions fired for replicas that agreed.
    let (w, edge) = World::followed(&["acme"]);
    let thief = binding("globex", &w.b.url(), "active", None);
    w.redis
        .cmd(&["SET", "nexus:binding:acme", &thief.to_string()]);
    announce(&w.redis, "acme");
    let counter: u64 = w
        .redis
        .cmd(&["GET", "nexus:revision"])
        .parse()
        .expect("counter");
    wait::until(
        Duration::from_secs(10),
        "the follower past the refused record",
        || {
            (edge.metric("nexus_edge_binding_records_rejected_total") == 1
                && edge.metric("nexus_edge_binding_revision") == counter)
                .then_some(())
        },
    );
    let fresh = replica(&w.keys, &w.redis.url(), "replica-2", None).expect("replica");
    assert_eq!(fresh.metric("nexus_edge_binding_revision"), counter);
    assert_eq!(
        edge.ops_get("/bindings/revision").text().trim(),
        counter.to_string()
    );
}

#[test]
fn records_written_by_hand_cannot_take_a_tenant_over_or_stop_the_feed() {
    let (w, edge) = World::followed(&["acme", "globex"]);
    let World {
        redis,
        admin,
        keys,
        b,
        ..
    } = &w;

    // A record under zed's key that names globex, pointing at another instance.
    let mut thief = binding("globex", &b.url(), "active", None);
    thief["revision"] = serde_json::json!(1000);
    redis.cmd(&["SET", "nexus:binding:zed", &thief.to_string()]);
    announce(redis, "zed");
    // A record that is no UTF-8 text, and a key of another type.
    redis.cmd(&[
        "EVAL",
        "return redis.call('SET', KEYS[1], ARGV[1] .. string.char(255) .. '}')",
        "1",
        "nexus:binding:acme",
        r#"{"tenant_id":"acme","region":""#,
    ]);
    announce(redis, "acme");
    redis.cmd(&["DEL", "nexus:binding:globex"]);
    redis.cmd(&["HSET", "nexus:binding:globex", "a", "b"]);
    announce(redis, "globex");
    // A feed entry whose tenant is no UTF-8.
    redis.cmd(&[
        "EVAL",
        "return redis.call('XADD', KEYS[2], '*', 'rev', redis.call('INCR', KEYS[1]), 'tenant', 'x' .. string.char(255), 'op', 'upsert')",
        "2",
        "nexus:revision",
        "nexus:changes",
    ]);

    // The feed goes on: a change written after all of it arrives.
    admin.put(&binding("initech", &b.url(), "active", None));
    wait_instance(&edge, keys, "initech", "instance-b");
    // Nobody was taken over or unbound; each bad record was refused and counted.
    assert_eq!(
        instance_of(&edge, keys, "globex").as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        instance_of(&edge, keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(edge.metric("nexus_edge_binding_records_rejected_total"), 3);
    let log = edge.log();
    assert!(log.contains(r#"names tenant "globex""#), "{log}");

    // Keys a full load finds under the binding pattern that are no tenant's key: one whose
    // last segment is initech's id, holding a record for initech with a higher revision
    // than the real one, and one whose name is no UTF-8.
    let mut squatter = binding("initech", &w.a.url(), "active", None);
    squatter["revision"] = serde_json::json!(1000);
    redis.cmd(&["SET", "nexus:binding:zed:initech", &squatter.to_string()]);
    redis.cmd(&[
        "EVAL",
        "return redis.call('SET', KEYS[1] .. string.char(255), ARGV[1])",
        "1",
        "nexus:binding:",
        "{}",
    ]);

    // A replica that starts now loads the whole store: zed's record does not take globex
    // over there either, nor the squatter initech, and the odd key name stops nothing.
    let fresh = replica(keys, &redis.url(), "replica-2", None).expect("replica");
    wait_instance(&fresh, keys, "initech", "instance-b");
    assert_eq!(instance_of(&fresh, keys, "globex"), None);
    let log = fresh.log();
    assert!(
        log.contains("nexus:binding:zed:initech") && log.contains("no tenant's binding key"),
        "{log}"
    );
}

#[test]
fn a_custom_domain_claimed_twice_stays_with_its_owner() {
    let World {
        redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&[]);
    let mut acme = binding("acme", &a.url(), "active", None);
    acme["domains"] = serde_json::json!(["app.acme-corp.test"]);
    admin.put(&acme);
    let edge = replica(&keys, &redis.url(), "replica-1", None).expect("replica");
    wait_instance(&edge, &keys, "acme", "instance-a");

    // An outside writer gives evil acme's domain at a lower revision (applied first by
    // revision order) and announces it; the feed refuses it (the domain is taken).
    let mut evil = binding("evil", &b.url(), "active", None);
    evil["domains"] = serde_json::json!(["app.acme-corp.test"]);
    redis.cmd(&["SET", "nexus:binding:evil", &evil.to_string()]);
    announce(&redis, "evil");
    // A gap in the feed makes the replica reload the whole table.
    let rev: u64 = redis
        .cmd(&["INCRBY", "nexus:revision", "5"])
        .parse()
        .expect("rev");
    redis.cmd(&[
        "XADD",
        "nexus:changes",
        "*",
        "rev",
        &rev.to_string(),
        "tenant",
        "acme",
        "op",
        "upsert",
    ]);
    admin.put(&binding("initech", &b.url(), "active", None));
    wait_instance(&edge, &keys, "initech", "instance-b");
    let by_domain =
        |e: &Edge| get_with_token(e.addr, "app.acme-corp.test", "/", &keys.token("acme", None));
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(by_domain(&edge).json()["instance"], "instance-a");
    // A replica starting now has no table to go by: the store's domain index names acme.
    let fresh = replica(&keys, &redis.url(), "replica-2", None).expect("replica");
    wait_instance(&fresh, &keys, "initech", "instance-b");
    assert_eq!(
        instance_of(&fresh, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(by_domain(&fresh).json()["instance"], "instance-a");
    assert_eq!(instance_of(&fresh, &keys, "evil"), None);
    let log = fresh.log();
    assert!(log.contains("claimed by another record too"), "{log}");
    // A listing and a backup leave it out as the replicas do, and say so (they printed it,
    // another tenant's domain included, and exited 0).
    admin.assert_one_left_out(
        "inst-acme",
        "evil",
        &[
            "nexus:binding:evil: claims a custom domain another record claims too",
            "app.acme-corp.test (held by acme)",
        ],
    );
}

/// Puts `tenant` on `url` with `domains`.
#[test]
fn a_domain_two_records_claim_and_none_holds_leaves_both_listed() {
    // No claimant wins a domain the index gives no one: replicas keep both tenants without
    // it. The listing had named both as left out and still printed them.
    let w = World::start(&["acme"]);
    for t in ["x1", "x2"] {
        let mut r = binding(t, &w.a.url(), "active", None);
        r["domains"] = serde_json::json!(["shared.example.test"]);
        r["revision"] = serde_json::json!(1);
        w.redis
            .cmd(&["SET", &format!("nexus:binding:{t}"), &r.to_string()]);
    }
    let (code, out, err) = w.admin.tenant(&["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("x1 ") && out.contains("x2 "), "{out}");
}

fn put_domains(admin: &Admin, tenant: &str, url: &str, domains: &[&str]) {
    let mut record = binding(tenant, url, "active", None);
    record["domains"] = serde_json::json!(domains);
    admin.put(&record);
}

/// The instance `edge` routes `host` to for a token of `tenant`, if it answers 200.
fn routed(edge: &Edge, keys: &TestKeys, host: &str, tenant: &str) -> Option<String> {
    let r = get_with_token(edge.addr, host, "/", &keys.token(tenant, None));
    (r.status == 200).then(|| r.json()["instance"].as_str().unwrap_or_default().to_owned())
}

/// The start of every domain swap test: alpha holds one.example.test on instance-a, beta
/// two.example.test on instance-b, and a replica routes both.
fn swap_world() -> (World, Edge) {
    let w = World::start(&[]);
    put_domains(&w.admin, "alpha", &w.a.url(), &["one.example.test"]);
    put_domains(&w.admin, "beta", &w.b.url(), &["two.example.test"]);
    let edge = replica(&w.keys, &w.redis.url(), "replica-1", None).expect("replica");
    wait::until(Duration::from_secs(20), "both domains routed", || {
        (routed(&edge, &w.keys, "one.example.test", "alpha").as_deref() == Some("instance-a")
            && routed(&edge, &w.keys, "two.example.test", "beta").as_deref() == Some("instance-b"))
        .then_some(())
    });
    (w, edge)
}

/// The swap, in the only order the store allows: alpha lets go of one, beta takes it, alpha
/// takes two.
fn swap(w: &World) {
    put_domains(&w.admin, "alpha", &w.a.url(), &[]);
    put_domains(&w.admin, "beta", &w.b.url(), &["one.example.test"]);
    put_domains(&w.admin, "alpha", &w.a.url(), &["two.example.test"]);
}

/// Whether `edge` routes the domains swapped.
fn swapped(w: &World, edge: &Edge) -> bool {
    routed(edge, &w.keys, "one.example.test", "beta").as_deref() == Some("instance-b")
        && routed(edge, &w.keys, "two.example.test", "alpha").as_deref() == Some("instance-a")
}

#[test]
fn an_import_that_moves_a_domain_is_written_whole_whatever_its_order() {
    // One record per write: the file listing the domain's new tenant (gamma) before its old
    // one (alpha), the import failed at gamma, "domain already bound", with the records
    // before it written: half imported.
    let (w, edge) = swap_world();
    // beta's record damaged behind the admin's back: the import puts it right, and the
    // order is worked out around it.
    damage_record(&w.redis, "beta");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("import.json");
    let record = |tenant: &str, url: &str, domains: &[&str]| {
        let mut r = binding(tenant, url, "active", None);
        r["domains"] = serde_json::json!(domains);
        r
    };
    let doc = nexus_e2e::edge::bindings_file(vec![
        record("gamma", &w.b.url(), &["one.example.test"]),
        record("alpha", &w.a.url(), &[]),
        record("beta", &w.b.url(), &["two.example.test"]),
    ]);
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = w.admin.ok(&["import", file.to_str().expect("utf8")]);
    assert!(out.contains('3'), "{out}");
    wait::until(Duration::from_secs(20), "the moved domain routed", || {
        (routed(&edge, &w.keys, "one.example.test", "gamma").as_deref() == Some("instance-b"))
            .then_some(())
    });
    assert_eq!(
        routed(&edge, &w.keys, &host("alpha"), "alpha").as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        routed(&edge, &w.keys, "two.example.test", "beta").as_deref(),
        Some("instance-b")
    );
}

#[test]
fn a_domain_swap_read_in_one_batch_reaches_the_replica() {
    // The swap is made while a replica is frozen. Thawed, it reads the three entries together
    // and applies each as the tenant's newest record: alpha's claims two, still beta's here,
    // and beta's claims one, still alpha's. Entry by entry neither could land first; the
    // replica reconciles instead of routing both domains to the wrong tenant until the next
    // periodic reconcile.
    let (w, edge) = swap_world();
    signal(&edge, "-STOP");
    swap(&w);
    signal(&edge, "-CONT");
    wait::until(
        Duration::from_secs(20),
        "the swapped domains routed",
        || swapped(&w, &edge).then_some(()),
    );
}

/// The reconcile that settles a domain swap can fail (here Redis refuses the replica its
/// `SCAN`, as an ACL change would). The replica must not count the swap's entries as applied
/// meanwhile: it goes on serving its table as it was, reports the revision before the swap
/// (`--wait` keeps waiting), and reads the entries again when it reconnects. Counted as
/// applied, they would never be read again, and both domains would stay with the wrong
/// tenants until the periodic reconcile (1 h here).
#[test]
fn a_domain_swap_whose_reconcile_fails_is_read_again() {
    let (w, edge) = swap_world();
    let applied = || -> Option<u64> {
        let beat = w.redis.cmd(&["HGET", "nexus:replicas", "replica-1"]);
        serde_json::from_str::<serde_json::Value>(&beat).ok()?["applied_revision"].as_u64()
    };
    let counter = || -> u64 {
        w.redis
            .cmd(&["GET", "nexus:revision"])
            .parse()
            .expect("counter")
    };
    let before = counter();
    wait::until(
        Duration::from_secs(20),
        "the replica on the counter",
        || (applied() == Some(before)).then_some(()),
    );

    signal(&edge, "-STOP");
    swap(&w);
    w.redis.cmd(&["ACL", "SETUSER", "default", "-scan"]);
    signal(&edge, "-CONT");

    // Two failed reconciles: the second session has heartbeated (before reading the feed)
    // and read the swap again.
    wait::until(Duration::from_secs(20), "two failed reconciles", || {
        (edge.log().contains("NOPERM")
            && edge.metric("nexus_edge_binding_sync_failures_total") >= 2)
            .then_some(())
    });
    assert_eq!(applied(), Some(before), "{}", edge.log());
    assert_eq!(
        routed(&edge, &w.keys, "one.example.test", "alpha").as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        routed(&edge, &w.keys, "two.example.test", "beta").as_deref(),
        Some("instance-b")
    );

    w.redis.cmd(&["ACL", "SETUSER", "default", "+scan"]);
    let after = counter();
    assert_eq!(after, before + 3);
    wait::until(
        Duration::from_secs(20),
        "the swapped domains routed",
        || (swapped(&w, &edge) && applied() == Some(after)).then_some(()),
    );
}

#[test]
fn a_domain_swap_read_with_a_record_that_cannot_be_read_is_read_again() {
    // The swap's entries are contested (each waits for the other), then the batch's last
    // entry cannot be read: the session ends before the reconcile that settles the swap. Its
    // next read must start before the swap, or the swap is never applied.
    let (w, edge) = swap_world();
    signal(&edge, "-STOP");
    swap(&w);
    put_domains(&w.admin, "gamma", &w.a.url(), &[]);
    // Every key but gamma's record stays reachable.
    w.redis.cmd(&[
        "ACL",
        "SETUSER",
        "default",
        "resetkeys",
        "~nexus:[^b]*",
        "~nexus:binding:[^g]*",
    ]);
    signal(&edge, "-CONT");
    wait::until(Duration::from_secs(20), "two failed reads of gamma", || {
        (edge.log().contains("NOPERM")
            && edge.metric("nexus_edge_binding_sync_failures_total") >= 2)
            .then_some(())
    });
    w.redis.cmd(&["ACL", "SETUSER", "default", "allkeys"]);

    // The periodic reconcile is an hour away: only reading the swap again settles it.
    wait::until(
        Duration::from_secs(20),
        "the swapped domains and gamma routed",
        || {
            (swapped(&w, &edge)
                && routed(&edge, &w.keys, &host("gamma"), "gamma").as_deref() == Some("instance-a"))
            .then_some(())
        },
    );
}

#[test]
fn a_damaged_record_does_not_take_a_moved_domain_back_on_a_replica_started_from_a_snapshot() {
    // The domain has moved to globex since; globex, whose record the domain index confirms,
    // keeps it.
    snapshot_binding_of_a_damaged_record_after_its_domain_left(true);
}

#[test]
fn a_damaged_record_does_not_take_a_released_domain_back_on_a_replica_started_from_a_snapshot() {
    // The domain is no one's now: the index no longer gives it acme either.
    snapshot_binding_of_a_damaged_record_after_its_domain_left(false);
}

/// acme's last good binding (in an old snapshot) holds a domain it has let go of since
/// (`moved`: to globex); then acme's record is damaged. A replica started from the snapshot
/// keeps acme bound, without the domain.
fn snapshot_binding_of_a_damaged_record_after_its_domain_left(moved: bool) {
    let World {
        redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&[]);
    put_domains(&admin, "acme", &a.url(), &["app.shop.test"]);
    let (_dir, _snap, snap_s) = snapshot_from_a_replica(&keys, &redis.url(), "acme", "instance-a");
    put_domains(&admin, "acme", &a.url(), &[]);
    if moved {
        put_domains(&admin, "globex", &b.url(), &["app.shop.test"]);
    }
    damage_record(&redis, "acme");

    let edge = replica(&keys, &redis.url(), "replica-2", Some(&snap_s)).expect("replica");
    let routed = |host: &str, tenant: &str| routed(&edge, &keys, host, tenant);
    wait::until(Duration::from_secs(20), "the routes settled", || {
        let globex = routed("app.shop.test", "globex").as_deref() == Some("instance-b")
            && routed(&host("globex"), "globex").as_deref() == Some("instance-b");
        (globex == moved && routed(&host("acme"), "acme").as_deref() == Some("instance-a"))
            .then_some(())
    });
    assert_eq!(routed("app.shop.test", "acme"), None, "{}", edge.log());
    // Only acme's record is refused.
    assert_one_record_rejected(&edge);
}

#[test]
fn a_binding_put_back_in_a_later_round_does_not_take_a_domain_the_index_gives_a_valid_record() {
    // The snapshot serves alpha{d1} beta{d2} gamma{d4}. Then beta's and gamma's records are
    // written by hand (beta{d1,d3}, gamma{d2}) and epsilon takes d4 through the CLI. Settling
    // puts beta back (d1 stays alpha's), then gamma (d2 stays beta's), whose snapshot binding
    // holds d4: the index, asked about it in a second pass, gives d4 to epsilon.
    let World {
        redis,
        admin,
        keys,
        a,
        b,
    } = World::start(&[]);
    put_domains(&admin, "alpha", &a.url(), &["d1.example.test"]);
    put_domains(&admin, "beta", &a.url(), &["d2.example.test"]);
    put_domains(&admin, "gamma", &a.url(), &["d4.example.test"]);
    let (_dir, _snap, snap_s) = snapshot_from_a_replica(&keys, &redis.url(), "gamma", "instance-a");
    for (tenant, domains) in [
        ("beta", &["d1.example.test", "d3.example.test"][..]),
        ("gamma", &["d2.example.test"]),
    ] {
        let mut record = binding(tenant, &a.url(), "active", None);
        record["domains"] = serde_json::json!(domains);
        redis.cmd(&[
            "SET",
            &format!("nexus:binding:{tenant}"),
            &record.to_string(),
        ]);
    }
    put_domains(&admin, "epsilon", &b.url(), &["d4.example.test"]);

    let edge = replica(&keys, &redis.url(), "replica-2", Some(&snap_s)).expect("replica");
    let routed = |host: &str, tenant: &str| routed(&edge, &keys, host, tenant);
    wait::until(Duration::from_secs(20), "epsilon's domain", || {
        (routed("d4.example.test", "epsilon").as_deref() == Some("instance-b")).then_some(())
    });
    assert_eq!(
        routed(&host("epsilon"), "epsilon").as_deref(),
        Some("instance-b")
    );
    assert_eq!(
        routed("d1.example.test", "alpha").as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        routed("d2.example.test", "beta").as_deref(),
        Some("instance-a")
    );
    assert_eq!(routed("d4.example.test", "gamma"), None, "{}", edge.log());
    // Only the last settling is logged: not the first pass's verdict for gamma.
    let log = edge.log();
    assert!(
        !log.contains("kept_by=gamma") && !log.contains("kept_by=\"gamma\""),
        "{log}"
    );
}

#[test]
fn a_domain_of_a_deleted_damaged_record_can_be_taken() {
    // A damaged record whose domains are no list of names cannot say which it held: deleting
    // it frees every domain the index holds for its tenant. (A name that is no string once
    // failed the script after it had taken a revision: the counter ran ahead of the feed, and
    // the record could never be deleted.)
    let World {
        redis, admin, a, ..
    } = World::start(&[]);
    let mut initech = binding("initech", &a.url(), "active", None);
    initech["domains"] = serde_json::json!(["shop.example.test"]);
    admin.put(&initech);
    redis.cmd(&[
        "SET",
        "nexus:binding:initech",
        r#"{"tenant_id":"initech","domains":[null]}"#,
    ]);
    admin.ok(&["delete", "initech"]);
    assert_eq!(
        redis.cmd(&["HGET", "nexus:domains", "shop.example.test"]),
        ""
    );
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), "2");
    assert_eq!(redis.cmd(&["XLEN", "nexus:changes"]), "2");
    let mut globex = binding("globex", &a.url(), "active", None);
    globex["domains"] = serde_json::json!(["shop.example.test"]);
    let (code, _, err) = admin.try_put(&[], &globex);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        redis.cmd(&["HGET", "nexus:domains", "shop.example.test"]),
        "globex"
    );
    // A record edited by hand to let go of a domain: the index still names its tenant, but
    // the record no longer claims it, so another tenant may take it.
    let mut globex_by_hand = globex.clone();
    globex_by_hand["domains"] = serde_json::json!([]);
    globex_by_hand["revision"] = serde_json::json!(7);
    redis.cmd(&["SET", "nexus:binding:globex", &globex_by_hand.to_string()]);
    let mut acme = binding("acme", &a.url(), "active", None);
    acme["domains"] = serde_json::json!(["shop.example.test"]);
    let (code, _, err) = admin.try_put(&[], &acme);
    assert_eq!(code, 0, "{err}");
    // One that still claims it keeps it.
    let mut initech = binding("initech", &a.url(), "active", None);
    initech["domains"] = serde_json::json!(["shop.example.test"]);
    let (code, _, err) = admin.try_put(&[], &initech);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("shop.example.test already belongs to tenant acme"),
        "{err}"
    );
    // Nor does a record that cannot say (no JSON object: an array, even an empty one, or
    // another key type; or domains that are no list of names) give it up.
    for damage in [
        &["SET", "nexus:binding:acme", r#"["x"]"#][..],
        &["SET", "nexus:binding:acme", "[]"],
        &[
            "SET",
            "nexus:binding:acme",
            r#"{"domains":"shop.example.test"}"#,
        ],
        &["DEL", "nexus:binding:acme"],
        &["HSET", "nexus:binding:acme", "a", "b"],
    ] {
        redis.cmd(damage);
        if damage[0] == "DEL" {
            continue;
        }
        let (code, _, err) = admin.try_put(&[], &initech);
        assert_eq!(code, 1, "{damage:?}: {err}");
        assert!(
            err.contains("shop.example.test already belongs to tenant acme"),
            "{damage:?}: {err}"
        );
    }
}

#[test]
fn revisions_of_fifteen_digits_are_written_whole() {
    // Lua writes numbers of 10^14 and above as 1e+14; a record stamped so is refused by every
    // replica, and so is every record after it.
    let (w, edge) = World::followed(&["acme"]);
    let World {
        redis,
        admin,
        keys,
        b,
        ..
    } = &w;
    redis.cmd(&["SET", "nexus:revision", "99999999999999"]);
    admin.put(&binding("acme", &b.url(), "active", None));
    let stored = redis.cmd(&["GET", "nexus:binding:acme"]);
    assert!(stored.contains("\"revision\":100000000000000"), "{stored}");
    wait_instance(&edge, keys, "acme", "instance-b");
}

#[test]
fn the_cli_changes_a_record_written_by_hand_with_spaced_json() {
    let World {
        redis,
        admin,
        keys: _keys,
        a,
        b: _b,
    } = World::start(&["acme"]);
    // Valid JSON, as a script or an operator writes it: `"revision": 1`, with blanks.
    let mut record = binding("acme", &a.url(), "active", None);
    record["revision"] = serde_json::json!(1);
    let pretty = serde_json::to_string_pretty(&record).expect("json");
    assert!(pretty.contains("\"revision\": 1"), "{pretty}");
    redis.cmd(&["SET", "nexus:binding:acme", &pretty]);
    let out = admin.ok(&["set-status", "acme", "past_due", "--expect-revision", "1"]);
    assert!(out.contains("past_due"), "{out}");
}

#[test]
fn the_cli_replaces_or_deletes_a_damaged_record() {
    let World {
        redis, admin, a, ..
    } = World::start(&["acme", "globex", "initech"]);
    let damaged = |tenant: &str, record: &str| {
        redis.cmd(&[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            &format!("nexus:binding:{tenant}"),
            record,
        ]);
    };
    // A revision that is a string: damaged, so it reads as revision 0 for the CLI and the
    // write script alike (they once read 0 and 5, and the write retried until it gave up).
    damaged("acme", r#"{"tenant_id":"acme","revision":"5"}"#);
    let (code, _, err) = admin.try_put(&[], &binding("acme", &a.url(), "past_due", None));
    assert_eq!(code, 0, "{err}");
    // A record that is no UTF-8 text: put and delete both read it as damaged.
    redis.cmd(&[
        "EVAL",
        "return redis.call('SET', KEYS[1], '{\"tenant_id\":\"globex\",\"x\":\"' .. string.char(255) .. '\"}')",
        "1",
        "nexus:binding:globex",
    ]);
    let (code, _, err) = admin.tenant(&["get", "globex"]);
    assert_ne!(code, 0);
    assert!(err.contains("not UTF-8 text"), "{err}");
    assert!(err.contains("replace it with `tenant put`"), "{err}");
    // A listing or a backup prints what it can read and fails, naming what it left out.
    admin.assert_one_left_out(
        "acme",
        "globex",
        &["left out: nexus:binding:globex: ", "not UTF-8 text"],
    );
    let (code, _, err) = admin.tenant(&["delete", "globex"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:binding:globex"]), "0");
    // A revision cjson reads and serde_json does not (a leading zero): the CLI retries with
    // the script's reading.
    damaged("acme", r#"{"tenant_id":"acme","revision":05}"#);
    let (code, _, err) = admin.try_put(&[], &binding("acme", &a.url(), "active", None));
    assert_eq!(code, 0, "{err}");
    // A damaged record does not say which custom domains it held: deleting it frees the
    // ones the index gives it.
    let mut initech = binding("initech", &a.url(), "active", None);
    initech["domains"] = serde_json::json!(["shop.example.com"]);
    admin.put(&initech);
    damaged("initech", r#"{"tenant_id":"initech","domains":["shop.exa"#);
    admin.ok(&["delete", "initech"]);
    assert_eq!(redis.cmd(&["HLEN", "nexus:domains"]), "0");
    let mut globex = binding("globex", &a.url(), "active", None);
    globex["domains"] = serde_json::json!(["shop.example.com"]);
    admin.put(&globex);
    // A record that fails validation is deleted too, not "not found".
    damaged(
        "initech",
        r#"{"tenant_id":"initech","status":"sideways","revision":3}"#,
    );
    let (code, _, err) = admin.tenant(&["delete", "initech"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:binding:initech"]), "0");
    let (code, _, err) = admin.tenant(&["delete", "initech"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("not found") || err.contains("no binding"),
        "{err}"
    );
    // Every change went through the script: revision, feed entry and audit entry each.
    let out = admin.ok(&["history", "initech"]);
    assert!(out.contains("delete"), "{out}");
    // A revision written by hand at the edge of what the scripts' numbers hold (2^53): read
    // as damaged (past 2^52), it does not move the counter up, so the other tenants' writes
    // keep exact revisions (they were stamped past 2^53, inexact, and every replica refused
    // them). The record itself is replaced as any damaged one is.
    let mut edge = binding("acme", &a.url(), "active", None);
    edge["revision"] = serde_json::json!(1_u64 << 53);
    damaged("acme", &edge.to_string());
    admin.put(&binding("acme", &a.url(), "past_due", None));
    admin.put(&binding("globex", &a.url(), "past_due", None));
    let counter: u64 = redis.cmd(&["GET", "nexus:revision"]).parse().unwrap();
    assert!(
        counter < 1 << 20,
        "the counter stays where it was: {counter}"
    );
    // A counter set by hand so high that the next revision would pass 2^52, the highest
    // replicas take: writes are refused, naming the key, and nothing is written. (Stamped,
    // every replica refused them, and every write after them.)
    for high in ["9007199254740991", "4503599627370496"] {
        redis.cmd(&["SET", "nexus:revision", high]);
        let (code, _, err) = admin.try_put(&[], &binding("acme", &a.url(), "active", None));
        assert_ne!(code, 0);
        assert!(
            err.contains("nexus:revision") && err.contains("number at 2^52 or past it"),
            "{err}"
        );
        assert_eq!(redis.cmd(&["GET", "nexus:revision"]), high);
    }
    redis.cmd(&["SET", "nexus:revision", &counter.to_string()]);
    // So is a write after a record written by hand at revision 2^52, which no write can follow.
    let before = redis.cmd(&["XLEN", "nexus:changes"]);
    let mut edge = binding("acme", &a.url(), "active", None);
    edge["revision"] = serde_json::json!(1_u64 << 52);
    damaged("acme", &edge.to_string());
    let (code, _, err) = admin.try_put(&[], &binding("acme", &a.url(), "past_due", None));
    assert_ne!(code, 0);
    assert!(
        err.contains("nexus:binding:acme carries revision 2^52")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), counter.to_string());
    assert_eq!(redis.cmd(&["XLEN", "nexus:changes"]), before);
    damaged(
        "acme",
        &binding("acme", &a.url(), "active", None).to_string(),
    );
    // A change feed whose last id was set by hand to the highest there is takes no entry:
    // the write is refused whole, not made without its entry and audit.
    redis.cmd(&[
        "XADD",
        "nexus:changes",
        "18446744073709551615-18446744073709551615",
        "rev",
        "1",
        "tenant",
        "acme",
        "op",
        "upsert",
    ]);
    let record = redis.cmd(&["GET", "nexus:binding:acme"]);
    let audit = redis.cmd(&["LLEN", "nexus:audit:globex"]);
    let (code, _, err) = admin.try_put(&[], &binding("globex", &a.url(), "suspended", None));
    assert_ne!(code, 0);
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), counter.to_string());
    assert_eq!(redis.cmd(&["GET", "nexus:binding:acme"]), record);
    assert_eq!(redis.cmd(&["LLEN", "nexus:audit:globex"]), audit);
    assert!(!redis
        .cmd(&["GET", "nexus:binding:globex"])
        .contains("suspended"));

    // A leading zero, which Redis's INCR does not take: named, not a script's raw error.
    redis.cmd(&["SET", "nexus:revision", "012"]);
    let (code, _, err) = admin.try_put(&[], &binding("acme", &a.url(), "active", None));
    assert_ne!(code, 0);
    assert!(
        err.contains("nexus:revision") && !err.contains("user_script"),
        "{err}"
    );
}

#[test]
fn a_write_after_a_binding_kept_ahead_of_the_counter_is_served_at_once() {
    // A record written by hand with a revision far ahead of the counter, then damaged by
    // hand: the script reads a damaged record as revision 0 and stamps the counter's next,
    // older than the binding the replica kept. The replica took the write for a stale one
    // and refused it, until its next periodic reconcile (an hour here), while `--wait`
    // counted it as applied; now it reconciles at once and serves the write.
    let (w, edge) = World::followed(&["acme"]);
    let World {
        redis,
        admin,
        keys,
        a,
        b,
        ..
    } = &w;
    let mut ahead = binding("acme", &b.url(), "active", None);
    ahead["revision"] = serde_json::json!(60_000);
    redis.cmd(&["SET", "nexus:binding:acme", &ahead.to_string()]);
    announce(redis, "acme");
    wait_instance(&edge, keys, "acme", "instance-b");
    redis.cmd(&[
        "SET",
        "nexus:binding:acme",
        r#"{"tenant_id":"acme", broken"#,
    ]);
    announce(redis, "acme");
    wait::until(
        Duration::from_secs(10),
        "the damaged record refused",
        || edge.log().contains("binding record refused").then_some(()),
    );
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("acme.json");
    std::fs::write(
        &file,
        binding("acme", &a.url(), "suspended", None).to_string(),
    )
    .expect("write");
    let out = admin.ok(&[
        "put",
        file.to_str().expect("utf8"),
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert!(out.contains("1/1 replicas on revision"), "{out}");
    // Served as soon as --wait said so: suspended, on instance a.
    let r = get_with_token(
        edge.addr,
        &host("acme"),
        "/api/x",
        &keys.token("acme", None),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        edge.log().contains("ahead of the feed's write"),
        "{}",
        edge.log()
    );
}

#[test]
fn wait_names_a_replica_that_refused_the_change() {
    // The domain index was edited by hand: shop.example.com no longer names acme, though
    // acme's record (and every replica's table) still holds it. A write giving it to globex
    // passes the script's check, and the replica refuses it: the domain is acme's there.
    // It applied the revision, but serves no binding for globex: --wait must say so, at
    // once, not report the fleet on that revision.
    let (w, edge) = World::followed(&["acme"]);
    let World {
        redis,
        admin,
        keys,
        a,
        ..
    } = &w;
    let mut acme = binding("acme", &a.url(), "active", None);
    acme["domains"] = serde_json::json!(["shop.example.com"]);
    admin.put(&acme);
    wait::until(Duration::from_secs(10), "acme's domain", || {
        (edge.revision() >= 2).then_some(())
    });
    redis.cmd(&["HDEL", "nexus:domains", "shop.example.com"]);
    let mut globex = binding("globex", &a.url(), "active", None);
    globex["domains"] = serde_json::json!(["shop.example.com"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("globex.json");
    std::fs::write(&file, globex.to_string()).expect("write");
    let (code, _, err) = admin.tenant(&[
        "put",
        file.to_str().expect("utf8"),
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains(
            "not confirmed by replica-1 (refused globex's record; still serves no binding for it)"
        ),
        "{err}"
    );
    assert!(!err.contains("timed out"), "ended on the refusal: {err}");
    assert_eq!(instance_of(&edge, keys, "globex"), None);
    // `replicas` tells it too; a later change the replica applies clears it.
    let list = nexus_e2e::edge::cli(&["replicas", "--config", admin.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("refused the records of: globex"), "{text}");
    globex["domains"] = serde_json::json!([]);
    std::fs::write(&file, globex.to_string()).expect("write");
    let out = admin.ok(&[
        "put",
        file.to_str().expect("utf8"),
        "--wait",
        "--timeout",
        "10s",
    ]);
    assert!(out.contains("1/1 replicas on revision 4"), "{out}");
}

/// The revision a replica's snapshot file says it holds (0 when it cannot be read yet).
fn snapshot_revision(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let header = text.lines().next().unwrap_or_default();
    let Some(at) = header.find("\"revision\":") else {
        return 0;
    };
    header[at + "\"revision\":".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// A snapshot that cannot be written was only an error line: an SRE had no metric to alert on
/// before the restart that needed it.
#[test]
fn snapshot_writes_that_fail_are_counted_and_the_next_change_is_written_once_it_can_be() {
    let w = World::start(&["acme"]);
    let dir = tempfile::tempdir().expect("dir");
    // Its folder's name is a file's: every write fails (the start's included).
    let folder = dir.path().join("later");
    std::fs::write(&folder, b"").expect("file");
    let snap = folder.join("bindings.snapshot");
    let edge = replica(
        &w.keys,
        &w.redis.url(),
        "replica-1",
        Some(snap.to_str().expect("utf8")),
    )
    .expect("replica");
    wait_instance(&edge, &w.keys, "acme", "instance-a");
    let failures = || edge.metric("nexus_edge_binding_snapshot_write_failures_total");
    wait::until(Duration::from_secs(10), "a failed write counted", || {
        (failures() >= 1).then_some(())
    });
    assert!(
        edge.log().contains("snapshot not written"),
        "{}",
        edge.log()
    );
    // The replica serves on, and writes the next change once the folder is there.
    std::fs::remove_file(&folder).expect("file");
    std::fs::create_dir(&folder).expect("folder");
    // (Counted from here: a write due before the fix may have failed meanwhile.)
    let failed = failures();
    w.admin.ok(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &w.b.url(),
        "--wait",
        "--timeout",
        "10s",
    ]);
    let served = edge.revision();
    wait::until(Duration::from_secs(10), "the change's snapshot", || {
        (snapshot_revision(&snap) == served).then_some(())
    });
    assert_eq!(failures(), failed);
    assert_eq!(
        instance_of(&edge, &w.keys, "acme"),
        Some("instance-b".to_owned())
    );
}

/// The snapshot is what a restart during an outage serves and what a restore after a wipe
/// takes, so it must hold every change the replica served: also when its connection to
/// Redis breaks, or it stops, before the next periodic write (at most one every 2 s).
#[test]
fn the_snapshot_catches_up_when_redis_goes_away_or_the_replica_stops() {
    let w = World::start(&["acme"]);
    let dir = tempfile::tempdir().expect("dir");
    let snap = dir.path().join("bindings.snapshot");
    let mut edge = replica(
        &w.keys,
        &w.redis.url(),
        "replica-1",
        Some(snap.to_str().expect("utf8")),
    )
    .expect("replica");
    wait_instance(&edge, &w.keys, "acme", "instance-a");
    wait_live(&w.admin, &["replica-1"]);
    let rebind = |to: &Backend, id: &str| {
        w.admin.ok(&[
            "rebind",
            "acme",
            "--instance-id",
            id,
            "--instance-url",
            &to.url(),
            "--wait",
            "--timeout",
            "10s",
        ]);
    };
    // Two changes in a row: the second comes within 2 s of the snapshot of the first.
    rebind(&w.b, "inst-b");
    rebind(&w.a, "inst-a");
    let served = edge.revision();
    w.redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait::until(
        Duration::from_secs(10),
        "the snapshot of the served table",
        || (snapshot_revision(&snap) == served).then_some(()),
    );
    // A change, then a stop right after it.
    wait_live(&w.admin, &["replica-1"]);
    rebind(&w.b, "inst-b");
    let served = edge.revision();
    edge.terminate();
    assert!(edge.wait_exit(Duration::from_secs(30)).success());
    assert_eq!(snapshot_revision(&snap), served, "{}", edge.log());
}

/// A replica that starts with nothing to serve into a Redis wiped a moment ago, before the
/// fleet's heartbeats are back, must not take the empty table: it would be ready and answer
/// 404 for every tenant the others serve. It waits for the heartbeats, as a write does, and
/// refuses to start once one says a replica serves bindings.
#[test]
fn a_replica_started_right_after_a_wipe_waits_for_the_fleet_and_refuses() {
    let (w, serving) = World::followed(&["acme"]);
    wait_live(&w.admin, &["replica-1"]);
    // The serving replica is frozen across the wipe, so its heartbeat comes back only when
    // the new replica is already starting.
    signal(&serving, "-STOP");
    w.redis.cmd(&["FLUSHALL"]);
    let mut opts = EdgeOptions::new(w.keys.jwks(), serde_json::json!({}));
    opts.store = Some(store_section(&w.redis.url(), "replica-2", None));
    let mut starting = Edge::spawn(&opts).expect("spawned");
    let waiting = wait::poll(Duration::from_secs(20), || {
        starting
            .log()
            .contains("waiting for the replicas' heartbeats")
            .then_some(())
    });
    signal(&serving, "-CONT");
    assert!(waiting.is_some(), "{}", starting.log());
    let status = starting.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{}", starting.log());
    assert!(
        starting.log().contains("lost its data"),
        "{}",
        starting.log()
    );
}

/// A write whose answer never came may have been made (the script is atomic and may have run
/// before the connection failed): the admin is told so, not that the store was unavailable
/// as if nothing were written.
#[test]
fn a_write_left_unanswered_says_it_may_have_been_made() {
    let w = World::start(&["acme"]);
    // Redis holds writes (the script among them) for longer than the CLI waits for an
    // answer (2 s).
    w.redis.cmd(&["CLIENT", "PAUSE", "4000", "WRITE"]);
    let (code, _, err) = w.admin.tenant(&[
        "rebind",
        "acme",
        "--instance-id",
        "inst-b",
        "--instance-url",
        &w.b.url(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("may have been made"), "{err}");
    assert!(err.contains("tenant history acme"), "{err}");
    // (Here it was not: Redis drops a paused command whose client has gone. A script that
    // ran just before its connection broke would have been made, whole.)
}

/// The heartbeats' key taken over by another program (a string where the schema keeps a
/// hash) hides the replica from `--wait` and `replicas`, but never stops it following the
/// change feed.
#[test]
fn a_heartbeat_key_of_another_type_does_not_stop_the_feed() {
    let (w, edge) = World::followed(&["acme"]);
    w.redis.cmd(&["DEL", "nexus:replicas"]);
    w.redis.cmd(&["SET", "nexus:replicas", "not a hash"]);
    edge.wait_for("the heartbeat key named", || {
        edge.log().contains("heartbeats cannot be written")
    });
    // The write script refuses to write over such a key; a change made as it makes them
    // (the counter, the record, the feed entry) is still followed.
    let revision = w.redis.cmd(&["INCR", "nexus:revision"]);
    let mut record = binding("acme", &w.b.url(), "active", None);
    record["revision"] = serde_json::json!(revision.parse::<u64>().unwrap());
    w.redis
        .cmd(&["SET", "nexus:binding:acme", &record.to_string()]);
    w.redis.cmd(&[
        "XADD",
        "nexus:changes",
        "*",
        "rev",
        &revision,
        "tenant",
        "acme",
        "op",
        "upsert",
    ]);
    wait_instance(&edge, &w.keys, "acme", "instance-b");
    assert!(
        !edge.log().contains("binding sync cannot follow Redis"),
        "{}",
        edge.log()
    );
}

#[test]
fn text_fields_of_bytes_that_are_no_utf8_stop_no_replica_and_blind_no_admin() {
    // A history id, or a heartbeat's name, written by hand with bytes that are no UTF-8:
    // every replica's every read of the feed failed ("Cannot convert from UTF-8", the key
    // unnamed) and `replicas` and `--wait` saw no replica at all.
    let (w, edge) = World::followed(&["acme"]);
    let World {
        redis,
        admin,
        keys,
        b,
        ..
    } = &w;
    for (key, field, value) in [
        ("nexus:replicas", "'bad' .. string.char(255)", "'{}'"),
        ("nexus:history", "'odd' .. string.char(255)", "'x'"),
    ] {
        redis.cmd(&[
            "EVAL",
            &format!("return redis.call('HSET', KEYS[1], {field}, {value})"),
            "1",
            key,
        ]);
    }
    // The history's own id too, once the replica has learnt it: another id than its own, so
    // it reloads, and takes the same table. (The world's first write came before any replica
    // ran, which leaves the history unconfirmed: another id of an unconfirmed history is what
    // Redis losing its data looks like, and the replica keeps its table then, as it should,
    // until an admin confirms. Confirmed first, the replica takes it whenever it notices.)
    let (code, out, err) = admin.tenant(&["confirm-history"]);
    assert_eq!(code, 0, "{out}{err}");
    redis.cmd(&[
        "EVAL",
        "return redis.call('HSET', KEYS[1], 'id', redis.call('HGET', KEYS[1], 'id') .. string.char(255))",
        "1",
        "nexus:history",
    ]);
    let (code, out, err) = rebind_waiting(admin, b);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1/1 replicas"), "{out}");
    wait_instance(&edge, keys, "acme", "instance-b");
    let list = nexus_e2e::edge::cli(&["replicas", "--config", admin.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert!(text.contains("replica-1"), "{text}");
}

/// A replica whose snapshot is there but damaged served a table before: over a Redis that
/// lost its data, with no other replica heard, it once took Redis's empty table for a first
/// deployment's (ready, every tenant 404) and overwrote the damaged file, the only copy left.
#[test]
fn a_damaged_snapshot_over_a_wiped_redis_is_kept_and_the_replica_does_not_start() {
    let w = World::start(&["acme"]);
    let dir = tempfile::tempdir().expect("dir");
    let snapshot = dir.path().join("replica.snapshot");
    let snap = snapshot.to_str().expect("utf8");
    let edge = replica(&w.keys, &w.redis.url(), "replica-1", Some(snap)).expect("replica");
    wait::until(Duration::from_secs(10), "the snapshot written", || {
        std::fs::read_to_string(&snapshot)
            .ok()
            .filter(|t| t.contains("\"acme\""))
    });
    drop(edge);
    let text = std::fs::read(&snapshot).expect("snapshot");
    let damaged = &text[..text.len() - 1];
    std::fs::write(&snapshot, damaged).expect("damage");
    w.redis.cmd(&["FLUSHALL"]);
    let err = match replica(&w.keys, &w.redis.url(), "replica-1", Some(snap)) {
        Ok(edge) => panic!("started on an empty table:\n{}", edge.log()),
        Err(e) => e,
    };
    assert!(err.contains("snapshot cannot be used"), "{err}");
    assert_eq!(std::fs::read(&snapshot).expect("kept"), damaged);
    // Over a Redis with its counter, the damaged file is not even read (a healthy start never
    // pays for reading a snapshot), and the replica starts; its own snapshot replaces it.
    w.admin.put(&binding("acme", &w.a.url(), "active", None));
    w.admin.ok(&["confirm-history"]);
    let edge = replica(&w.keys, &w.redis.url(), "replica-1", Some(snap)).expect("replica");
    assert!(
        !edge.log().contains("the snapshot is not used"),
        "{}",
        edge.log()
    );
}

/// An export reads Redis in batches: a domain moving between two tenants meanwhile showed in
/// both records, in a file exported with exit 0 that would not import. Read again, and
/// refused when it stays so (here a record written by hand claims another tenant's domain,
/// and the index names neither).
#[test]
fn an_export_that_reads_a_domain_claimed_twice_is_refused() {
    let World {
        redis, admin, a, ..
    } = World::start(&["acme"]);
    let mut acme = binding("acme", &a.url(), "active", None);
    acme["domains"] = serde_json::json!(["shop.example.com"]);
    admin.put(&acme);
    let mut globex = binding("globex", &a.url(), "active", None);
    globex["domains"] = serde_json::json!(["shop.example.com"]);
    globex["revision"] = serde_json::json!(1);
    redis.cmd(&["SET", "nexus:binding:globex", &globex.to_string()]);
    // The index names neither, as for a moment during a move read between batches.
    redis.cmd(&["HDEL", "nexus:domains", "shop.example.com"]);
    let (code, out, err) = admin.tenant(&["export"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("domain shop.example.com is claimed by both acme and globex"),
        "{err}"
    );
}

/// An import writes record by record: a change made after its check read the store, before
/// the tenant's turn (a rebind during a long import), is not undone. It once was, unseen: the
/// import exited 0 and the replicas served the file's older record.
#[test]
fn an_import_does_not_undo_a_change_made_after_its_check() {
    use nexus_binding_store::redis_store::{RedisOptions, RedisStore};
    use nexus_binding_store::{
        Actor, AdminError, BindingAdmin, IfUnchanged, ImportSeen, ImportSource, Mutation, Revision,
        TenantStatus,
    };

    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let admin = RedisStore::new(RedisOptions::new(redis.url())).expect("store");
    let actor = Actor {
        name: "test".to_owned(),
        reason: None,
    };
    let parsed = |tenant: &str, url: &str| {
        Arc::new(
            nexus_binding_store::records::parse_record(&binding(tenant, url, "active", None))
                .expect("record"),
        )
    };
    rt.block_on(async {
        for tenant in ["acme", "globex"] {
            let b = parsed(tenant, "http://127.0.0.1:9");
            let put = Mutation::Put(Box::new(Arc::unwrap_or_clone(b)));
            let tenant = nexus_binding_store::TenantId::parse(tenant).expect("tenant");
            admin
                .apply(&tenant, put, None, IfUnchanged::Write, &actor)
                .await
                .expect("put");
        }
        let seen = ImportSeen::read(
            admin
                .list()
                .await
                .expect("list")
                .bindings
                .iter()
                .map(|b| (b.tenant_id.clone(), b.revision)),
        );
        // globex suspended after the check.
        let globex = nexus_binding_store::TenantId::parse("globex").expect("tenant");
        admin
            .apply(
                &globex,
                Mutation::SetStatus(TenantStatus::Suspended),
                None,
                IfUnchanged::Write,
                &actor,
            )
            .await
            .expect("suspend");
        let file = vec![
            parsed("acme", "http://127.0.0.1:10"),
            parsed("globex", "http://127.0.0.1:10"),
        ];
        let e = admin
            .import(file, &actor, ImportSource::Records, &seen)
            .await
            .expect_err("globex changed since the check");
        assert_eq!(e.tenant.as_ref().map(|t| t.as_str()), Some("globex"), "{e}");
        assert!(
            matches!(e.error, AdminError::Conflict { expected, actual, .. }
                if expected == Revision(2) && actual == Revision(3)),
            "{e}"
        );
        let now = admin.get(&globex).await.expect("get").expect("globex");
        assert_eq!(now.status, TenantStatus::Suspended);
        assert_eq!(now.instance_url.to_string(), "http://127.0.0.1:9/");
    });
}

/// A periodic reconcile builds a new table from everything Redis holds. A record unchanged
/// since the table served is given the served binding itself, so the two tables share it (at
/// a million bindings, the reconcile's new table costs the index alone, and freeing the old
/// one frees no binding); a record changed outside the change feed is read anew.
#[test]
fn a_reconcile_shares_unchanged_bindings_with_the_table_it_replaces() {
    use nexus_binding_store::redis_store::{RedisOptions, RedisStore};
    use nexus_binding_store::{
        Actor, BindingAdmin, BindingHandle, BindingSource, IfUnchanged, Mutation,
    };

    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let store = |id: &str| {
        let mut o = RedisOptions::new(redis.url());
        o.replica_id = id.to_owned();
        o.heartbeat_interval = Duration::from_millis(100);
        o.reconcile_interval = Duration::from_millis(200);
        Arc::new(RedisStore::new(o).expect("store"))
    };
    let admin = store("admin");
    let actor = Actor {
        name: "test".to_owned(),
        reason: None,
    };
    rt.block_on(async {
        for tenant in ["acme", "globex"] {
            let record = binding(tenant, "http://127.0.0.1:9", "active", None);
            let b = nexus_binding_store::records::parse_record(&record).expect("record");
            admin
                .apply(
                    &b.tenant_id.clone(),
                    Mutation::Put(Box::new(b)),
                    None,
                    IfUnchanged::Write,
                    &actor,
                )
                .await
                .expect("put");
        }
    });
    let follower = store("replica-1");
    let handle = BindingHandle::new(rt.block_on(follower.initial_load()).expect("load"));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = rt.spawn(Arc::clone(&follower).run(handle.clone(), shutdown));
    let health = follower.health();
    let reloads = health.full_reloads();
    let before = handle.load();

    // globex's record, edited in Redis outside the schema: only a reconcile sees it.
    let mut edited = binding("globex", "http://127.0.0.1:10", "active", None);
    edited["revision"] = serde_json::json!(2);
    redis.cmd(&["SET", "nexus:binding:globex", &edited.to_string()]);
    let after = wait::until(Duration::from_secs(20), "a reconcile", || {
        let t = handle.load();
        let url = t.get("globex").map(|b| b.instance_url.to_string());
        (health.full_reloads() > reloads && url.as_deref() == Some("http://127.0.0.1:10/"))
            .then_some(t)
    });
    assert!(!Arc::ptr_eq(&before, &after), "the table was not rebuilt");
    let same = |t: &str| Arc::ptr_eq(before.get(t).expect(t), after.get(t).expect(t));
    assert!(same("acme"), "acme's unchanged binding was copied");
    assert!(!same("globex"), "globex's changed record was not read anew");

    stop.send(true).expect("follower listening");
    rt.block_on(task).expect("follower stops");
}
