//! Redis in production shapes: TLS (with and without client certificates), Sentinel failover,
//! and a Redis whose history restarts under a following replica (even where its feed cannot
//! reach the new entries). Real `redis-server` nodes on loopback TCP, the real `nexus-edge`
//! binary and admin CLI.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nexus_e2e::admin::Admin;
use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, Edge, EdgeOptions};
use nexus_e2e::keys::TestKeys;
use nexus_e2e::probe::{instance_of, wait_instance, Traffic};
use nexus_e2e::redis_server::RedisServer;
use nexus_e2e::redis_tcp::RedisNode;
use nexus_e2e::tls::TestPki;
use nexus_e2e::wait;

/// A `[store]` section: `endpoint` is `url = "…"` or a `[store.sentinel]` table, `tail` any
/// further sub-tables (e.g. `[store.tls]`).
fn store(endpoint: &str, replica: &str, tail: &str) -> String {
    let (url, sentinel) = if endpoint.starts_with('[') {
        ("", endpoint)
    } else {
        (endpoint, "")
    };
    format!(
        "[store]\nkind = \"redis\"\n{url}\nreconcile_interval = \"1h\"\nheartbeat_interval = \"100ms\"\n\
         replica_id = \"{replica}\"\n{sentinel}\n{tail}"
    )
}

fn replica_opts(keys: &TestKeys, store: String) -> EdgeOptions {
    let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
    opts.store = Some(store);
    opts
}

fn replica(keys: &TestKeys, store: String) -> Edge {
    Edge::try_start(&replica_opts(keys, store)).expect("replica starts")
}

/// An active binding record of `tenant` at `url`, stamped with `revision`, as stored.
fn record_at(tenant: &str, url: &str, revision: u64) -> String {
    let mut r = binding(tenant, url, "active", None);
    r["revision"] = serde_json::json!(revision);
    r.to_string()
}

fn rebind(admin: &Admin, tenant: &str, to: &Backend) -> (i32, String, String) {
    admin.tenant(&[
        "rebind",
        tenant,
        "--instance-id",
        "moved",
        "--instance-url",
        &to.url(),
    ])
}

#[test]
fn rediss_with_a_private_ca_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let redis = RedisNode::tls_primary(&pki, true);
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    let tls = format!(
        "[store.tls]\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", &tls));
    admin.put(&binding("acme", &a.url(), "active", None));

    let edge = replica(&keys, store(&url, "replica-tls", &tls));
    wait_instance(&edge, &keys, "acme", "instance-a");
    let (code, out, err) = rebind(&admin, "acme", &b);
    assert_eq!(code, 0, "{out}{err}");
    wait_instance(&edge, &keys, "acme", "instance-b");

    // Wrong TLS set-ups fail with an error and write nothing.
    let no_client_cert = Admin::new(&store(
        &url,
        "admin",
        &format!("[store.tls]\nca_file = \"{}\"\n", pki.ca.display()),
    ));
    let system_roots = Admin::new(&store(&url, "admin", ""));
    let plaintext = Admin::new(&store(
        &format!("url = \"redis://127.0.0.1:{}\"", redis.port),
        "admin",
        "",
    ));
    for (what, bad) in [
        ("no client certificate", &no_client_cert),
        ("system roots only", &system_roots),
        ("plaintext to a TLS port", &plaintext),
    ] {
        let (code, out, err) = rebind(bad, "acme", &a);
        assert_ne!(code, 0, "{what}: {out}");
        assert!(
            err.to_lowercase().contains("redis"),
            "{what}: the error names the store: {err}"
        );
    }
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-b")
    );
    let got = admin.ok(&["get", "acme", "--json"]);
    assert!(
        got.contains(&b.url()),
        "nothing written by the failures: {got}"
    );
}

/// A primary, a standby in sync with it, and a Sentinel (calling the primary down after
/// `down_after_ms`) that knows both; with the `[store.sentinel]` table that finds them.
struct Watched {
    primary: RedisNode,
    standby: RedisNode,
    sentinel: RedisNode,
    endpoint: String,
}

fn watched_pair(down_after_ms: u64) -> Watched {
    let primary = RedisNode::primary();
    let standby = RedisNode::replica_of(&primary);
    wait::until(Duration::from_secs(15), "the replica to sync", || {
        standby
            .cmd(&["INFO", "replication"])
            .contains("master_link_status:up")
            .then_some(())
    });
    let sentinel = RedisNode::sentinel_after("nexus", &primary, down_after_ms);
    wait::until(
        Duration::from_secs(15),
        "Sentinel to discover the replica",
        || {
            sentinel
                .cmd(&["SENTINEL", "REPLICAS", "nexus"])
                .contains(&standby.port.to_string())
                .then_some(())
        },
    );
    let endpoint = format!(
        "[store.sentinel]\nmaster_name = \"nexus\"\nnodes = [\"{}\"]\n",
        sentinel.url()
    );
    Watched {
        primary,
        standby,
        sentinel,
        endpoint,
    }
}

#[test]
fn sentinel_failover_moves_the_fleet_to_the_new_primary() {
    let Watched {
        mut primary,
        standby,
        sentinel,
        endpoint,
    } = watched_pair(500);
    let keys = TestKeys::new();
    let (a, b, c) = (
        Backend::start("instance-a"),
        Backend::start("instance-b"),
        Backend::start("instance-c"),
    );
    let admin = Admin::new(&store(&endpoint, "admin", ""));
    admin.put(&binding("acme", &a.url(), "active", None));
    admin.put(&binding("globex", &a.url(), "active", None));
    let edge = replica(&keys, store(&endpoint, "replica-s", ""));
    wait_instance(&edge, &keys, "acme", "instance-a");
    let traffic = Traffic::start(&edge, &keys, "globex");
    traffic.served(20);

    // Let the standby have everything, then lose the primary.
    wait::until(Duration::from_secs(10), "the standby to catch up", || {
        (standby.cmd(&["GET", "nexus:revision"]) == "2").then_some(())
    });
    primary.kill();
    // One rebind, issued while the Sentinels still name the dead primary: the admin command
    // waits for the failover and writes to the new primary.
    let (code, out, err) = rebind(&admin, "acme", &b);
    assert_eq!(code, 0, "a rebind mid-failover: {out}{err}");
    assert!(
        sentinel
            .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "nexus"])
            .contains(&standby.port.to_string()),
        "Sentinel promoted the standby"
    );
    assert_eq!(standby.cmd(&["GET", "nexus:revision"]), "3");
    wait_instance(&edge, &keys, "acme", "instance-b");
    // The replica heartbeats to the new primary too, so `--wait` confirms there. (Sentinel
    // can still call the new primary down for a moment on a loaded machine: the admin then
    // refuses to write, and is retried.)
    let out = wait::until(
        Duration::from_secs(30),
        "a confirmed rebind on the new primary",
        || {
            let (code, out, _) = admin.tenant(&[
                "rebind",
                "acme",
                "--instance-id",
                "inst-c",
                "--instance-url",
                &c.url(),
                "--wait",
                "--timeout",
                "15s",
            ]);
            (code == 0).then_some(out)
        },
    );
    let revision = standby.cmd(&["GET", "nexus:revision"]);
    assert!(
        out.contains(&format!("1/1 replicas on revision {revision}")),
        "{out}"
    );
    wait_instance(&edge, &keys, "acme", "instance-c");
    traffic.served(20);
    let (ok, failed) = traffic.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the failover",
        ok + failed
    );
}

/// A Sentinel that stops answering (a frozen process keeps its connections open) costs one
/// timeout, and the next is asked: redis-rs's own lookup waited on it for as long as it
/// stayed so, and a replica starting behind it never started (nor logged a line).
#[test]
fn a_frozen_sentinel_is_passed_over() {
    let primary = RedisNode::primary();
    let (frozen, live) = (
        RedisNode::sentinel("nexus", &primary),
        RedisNode::sentinel("nexus", &primary),
    );
    // (A database number on a Sentinel's URL is for data nodes: a Sentinel refuses SELECT.)
    let endpoint = format!(
        "[store.sentinel]\nmaster_name = \"nexus\"\nnodes = [\"{}\", \"{}/2\"]\n",
        frozen.url(),
        live.url()
    );
    let keys = TestKeys::new();
    let a = Backend::start("instance-a");
    let admin = Admin::new(&store(&endpoint, "admin", ""));
    admin.put(&binding("acme", &a.url(), "active", None));
    frozen.signal("-STOP");
    let edge = Edge::try_start(&replica_opts(&keys, store(&endpoint, "replica-f", "")));
    frozen.signal("-CONT");
    let edge = edge.expect("a replica starts behind a frozen Sentinel");
    wait_instance(&edge, &keys, "acme", "instance-a");
    // A name no Sentinel monitors is a configuration error, said at once (it waited 30 s
    // for a failover that could not come).
    let misspelt = Admin::new(&store(
        &endpoint.replace("\"nexus\"", "\"nexsu\""),
        "admin",
        "",
    ));
    let (code, _, err) = misspelt.tenant(&["get", "acme"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("check master_name"), "{err}");
}

/// A primary that stops answering (frozen: its connections stay open) while the Sentinels
/// fail over: every step of the replica's reconnect is bounded, so it reaches the new primary
/// once the Sentinels name it. With redis-rs's lookup, its check of the old node waited for
/// as long as that stayed frozen, and the replica served its old table all that time.
#[test]
fn a_frozen_primary_is_left_for_the_one_the_sentinels_promote() {
    // Slow to call the primary down: the replica's reconnect comes while it still names the
    // frozen node.
    let Watched {
        primary,
        standby,
        sentinel,
        endpoint,
    } = watched_pair(6000);
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    let admin = Admin::new(&store(&endpoint, "admin", ""));
    admin.put(&binding("acme", &a.url(), "active", None));
    let edge = replica(&keys, store(&endpoint, "replica-z", ""));
    wait_instance(&edge, &keys, "acme", "instance-a");
    wait::until(Duration::from_secs(10), "the standby to catch up", || {
        (standby.cmd(&["GET", "nexus:revision"]) == "1").then_some(())
    });
    primary.signal("-STOP");
    edge.wait_for("the replica's reconnect", || {
        edge.log().contains("binding sync lost Redis")
    });
    wait::until(Duration::from_secs(30), "the standby promoted", || {
        sentinel
            .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "nexus"])
            .contains(&standby.port.to_string())
            .then_some(())
    });
    // Written on the new primary (the admin's lookup is bounded too), and followed there.
    wait::until(
        Duration::from_secs(30),
        "a rebind on the new primary",
        || (rebind(&admin, "acme", &b).0 == 0).then_some(()),
    );
    wait_instance(&edge, &keys, "acme", "instance-b");
    primary.signal("-CONT");
}

/// Replication to the standby is asynchronous: a write no standby has acknowledged is lost by
/// a failover, though the CLI wrote it (and `--wait` confirmed it). Behind Sentinel the CLI
/// waits a second for a standby's acknowledgement and warns without one.
#[test]
fn a_write_no_standby_acknowledged_is_said_to_be_at_risk() {
    let Watched {
        primary,
        standby,
        sentinel: _sentinel,
        endpoint,
    } = watched_pair(60_000);
    let a = Backend::start("instance-a");
    let b = Backend::start("instance-b");
    let admin = Admin::new(&store(&endpoint, "admin", ""));
    admin.put(&binding("acme", &a.url(), "active", None));
    let at_risk = "no standby acknowledged it";
    // A standby that takes nothing (frozen).
    standby.signal("-STOP");
    let (code, _, err) = rebind(&admin, "acme", &b);
    standby.signal("-CONT");
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(at_risk), "{err}");
    wait::until(Duration::from_secs(15), "the standby to catch up", || {
        (standby.cmd(&["GET", "nexus:revision"]) == primary.cmd(&["GET", "nexus:revision"]))
            .then_some(())
    });
    let (code, _, err) = rebind(&admin, "acme", &a);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(at_risk), "{err}");
}

/// A planned failover (`SENTINEL FAILOVER`) leaves the old primary answering as one until the
/// Sentinels reconfigure it, seconds later: replicas that kept reading it served (and
/// confirmed to `--wait`) a history the new primary does not hold. A replica asks the
/// Sentinels which node is the primary (every heartbeat interval, at most once a second), and
/// reconnects when it reads another.
#[test]
fn a_replica_leaves_a_primary_the_sentinels_no_longer_name() {
    let Watched {
        // Kept alive: the old primary goes on answering after the failover.
        primary: _old,
        standby,
        sentinel,
        endpoint,
    } = watched_pair(500);
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    let admin = Admin::new(&store(&endpoint, "admin", ""));
    admin.put(&binding("acme", &a.url(), "active", None));
    let edge = replica(&keys, store(&endpoint, "replica-p", ""));
    wait_instance(&edge, &keys, "acme", "instance-a");
    wait::until(Duration::from_secs(10), "the standby to catch up", || {
        (standby.cmd(&["GET", "nexus:revision"]) == "1").then_some(())
    });
    sentinel.cmd(&["SENTINEL", "FAILOVER", "nexus"]);
    wait::until(Duration::from_secs(30), "the standby named primary", || {
        sentinel
            .cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "nexus"])
            .contains(&standby.port.to_string())
            .then_some(())
    });
    edge.wait_for("the replica to leave the old primary", || {
        edge.log()
            .contains("the Sentinels name another primary than the node this replica reads")
    });
    // And follows the new primary's changes.
    wait::until(
        Duration::from_secs(30),
        "a rebind on the new primary",
        || (rebind(&admin, "acme", &b).0 == 0).then_some(()),
    );
    wait_instance(&edge, &keys, "acme", "instance-b");
}

/// Redis with acme, globex and initech on instance-a, followed by one replica.
struct ThreeTenants {
    redis: RedisServer,
    admin: Admin,
    keys: TestKeys,
    a: Backend,
    b: Backend,
    edge: Edge,
}

fn three_tenants(replica_id: &str) -> ThreeTenants {
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    for t in ["acme", "globex", "initech"] {
        admin.put(&binding(t, &a.url(), "active", None));
    }
    let edge = replica(&keys, store(&url, replica_id, ""));
    wait_instance(&edge, &keys, "initech", "instance-a");
    ThreeTenants {
        redis,
        admin,
        keys,
        a,
        b,
        edge,
    }
}

#[test]
fn a_redis_whose_history_restarts_is_followed_not_ignored() {
    // Redis loses its data (a reset, or a failover that dropped the last writes) and counts
    // revisions from 1 again. The replica's applied revision is now ahead of the store: every
    // new change would look stale. It must reload instead, connected or cut off.
    let ThreeTenants {
        mut redis,
        admin,
        keys,
        a: _a,
        b,
        edge,
    } = three_tenants("replica-r");

    // 1. While the replica follows the feed. (Writing into a Redis that looks wiped takes
    // the admin's word that a new history is meant.)
    redis.cmd(&["FLUSHALL"]);
    admin.put_with(NEW_HISTORY, &binding("acme", &b.url(), "active", None));
    wait_instance(&edge, &keys, "acme", "instance-b");
    wait::until(Duration::from_secs(10), "globex to be gone", || {
        (instance_of(&edge, &keys, "globex").is_none()).then_some(())
    });

    // 2. While the replica is away: Redis restarts empty and is written to before it returns.
    redis.stop();
    std::fs::remove_dir_all(redis.dir().join("appendonlydir")).ok();
    redis.restart();
    admin.put_with(NEW_HISTORY, &binding("globex", &b.url(), "active", None));
    wait_instance(&edge, &keys, "globex", "instance-b");
    assert_eq!(
        instance_of(&edge, &keys, "acme"),
        None,
        "acme is not in the new history"
    );
}

#[test]
fn a_write_right_after_a_wipe_waits_for_the_replicas_to_say_what_they_serve() {
    // A wipe takes the replicas' heartbeats with it. A write that came before they were back
    // (a replica's next heartbeat, here one a second, or its reconnect after a restart) found
    // no replica serving, started a new history of one tenant, and every replica unbound all
    // the others.
    let mut redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let slow = |id: &str| {
        store(&url, id, "").replace(
            "heartbeat_interval = \"100ms\"",
            "heartbeat_interval = \"1s\"",
        )
    };
    let admin = Admin::new(&slow("admin"));
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    admin.put(&binding("acme", &a.url(), "active", None));
    admin.put(&binding("globex", &a.url(), "active", None));
    let edge = replica(&keys, slow("replica-s"));
    wait_instance(&edge, &keys, "globex", "instance-a");
    heartbeats(&redis, "replica-s", 1);
    let acme_b = binding("acme", &b.url(), "active", None);

    // Flushed under a following replica, written at once.
    redis.cmd(&["FLUSHALL"]);
    let (code, _, err) = admin.try_put(&[], &acme_b);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("looks wiped"), "{err}");

    // Restarted without its data while the replica was connected, written at once.
    redis.stop();
    std::fs::remove_dir_all(redis.dir().join("appendonlydir")).ok();
    redis.restart();
    let (code, _, err) = admin.try_put(&[], &acme_b);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("looks wiped"), "{err}");
    // Flushed again and restored at once from a bindings file, which may be older or
    // smaller than the replica's table: refused as a restore must be while replicas serve.
    redis.cmd(&["FLUSHALL"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme-only.json");
    let doc = serde_json::json!({ "format": "nexus-edge.bindings/v1", "bindings": [acme_b] });
    std::fs::write(&file, doc.to_string()).unwrap();
    let (code, _, err) = admin.tenant(&["import", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("yet replicas serve bindings up to revision"),
        "{err}"
    );
    assert_eq!(
        instance_of(&edge, &keys, "globex").as_deref(),
        Some("instance-a")
    );
    assert_eq!(redis.cmd(&["EXISTS", "nexus:revision"]), "0");
}

#[test]
fn a_wiped_redis_does_not_unbind_every_tenant() {
    // Redis comes back empty (a FLUSHALL, a restart without persistence): no bindings and no
    // revision counter. Taking that as the truth would unbind every tenant at once; replicas
    // keep serving what they have, and the last snapshot stands in at start-up, until
    // bindings are written again.
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    admin.put(&binding("acme", &a.url(), "active", None));
    admin.put(&binding("globex", &a.url(), "active", None));
    let snaps = tempfile::tempdir().unwrap();
    let snapshot = snaps.path().join("bindings.snapshot.json");
    let tail = format!("snapshot_path = \"{}\"\n", snapshot.display());
    let edge = replica(&keys, store(&url, "replica-w", &tail));
    wait_instance(&edge, &keys, "globex", "instance-a");
    // Following the feed (serving starts a moment before the follower's first session).
    heartbeats(&redis, "replica-w", 1);

    // 1. Wiped under a following replica: its next heartbeat notices, says so once, and it
    // keeps its table; so does a reload after a reconnect.
    redis.cmd(&["FLUSHALL"]);
    wait::until(Duration::from_secs(10), "the wipe to be noticed", || {
        edge.log()
            .contains("keeping the table served now until a new history starts")
            .then_some(())
    });
    // Reached, but not usable: monitoring says so (it said up, and in sync, throughout).
    wait::until(Duration::from_secs(10), "the store reported down", || {
        edge.ops_get("/metrics")
            .text()
            .contains("nexus_edge_binding_store_up 0")
            .then_some(())
    });
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait::until(Duration::from_secs(10), "the refusal to be logged", || {
        edge.log().contains("restores it in one step").then_some(())
    });
    assert_eq!(
        edge.log().matches("until a new history starts").count(),
        1,
        "{}",
        edge.log()
    );
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(
        instance_of(&edge, &keys, "globex").as_deref(),
        Some("instance-a")
    );

    // A write would start a new history holding one tenant: the admin CLI refuses it, and
    // nothing is written, until the admin says a new history is meant.
    heartbeats(&redis, "replica-w", 1);
    let acme_b = binding("acme", &b.url(), "active", None);
    let (code, _, err) = admin.try_put(&[], &acme_b);
    assert_ne!(code, 0);
    assert!(err.contains("looks wiped"), "{err}");
    assert!(err.contains("up to revision 2"), "{err}");
    assert_eq!(redis.cmd(&["DBSIZE"]), "1", "only the heartbeats");
    // So do the writes that need the tenant's record, which is gone: not "not found" or a
    // conflict, which would send the admin to recreate tenants instead of restoring.
    for args in [
        &["set-status", "acme", "past_due"][..],
        &["delete", "acme"],
        &["set-status", "acme", "past_due", "--expect-revision", "1"],
    ] {
        let (code, _, err) = admin.tenant(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("looks wiped"), "{args:?}: {err}");
    }
    assert_eq!(redis.cmd(&["DBSIZE"]), "1", "only the heartbeats");
    // Nor do the reads pass an empty Redis off as the fleet's table: `export > backup`
    // exited 0 with no bindings in it, `get` said the tenant did not exist.
    for args in [&["list"][..], &["export"], &["get", "acme"]] {
        let (code, out, err) = admin.tenant(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains("looks wiped") && err.contains("not read as their table"),
            "{args:?}: {err}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // Its revisions are no longer the store's: `replicas` says so, and `--wait` would not
    // count it until it reloads.
    let list = nexus_e2e::edge::cli(&["replicas", "--config", admin.config.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("on another history"), "{text}");
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(err.contains("it lost its data"), "{err}");
    // A replica starting now without a snapshot (a scale-out, a crash restart) would serve
    // Redis's empty table, every tenant 404, and call itself ready: it refuses to start,
    // saying why, so traffic stays with the replicas that still serve.
    let err = Edge::try_start(&replica_opts(&keys, store(&url, "replica-new", "")))
        .err()
        .expect("a replica started on the wiped store");
    assert!(
        err.contains("lost its data") && err.contains("up to revision 2"),
        "{err}"
    );
    assert_eq!(redis.cmd(&["DBSIZE"]), "1", "still only the heartbeats");
    admin.put_with(NEW_HISTORY, &acme_b);
    wait_instance(&edge, &keys, "acme", "instance-b");
    wait::until(Duration::from_secs(10), "globex to be gone", || {
        instance_of(&edge, &keys, "globex").is_none().then_some(())
    });
    wait::until(
        Duration::from_secs(10),
        "the snapshot of the new history",
        || {
            let text = std::fs::read_to_string(&snapshot).unwrap_or_default();
            (text.contains(&b.url()) && !text.contains("globex")).then_some(())
        },
    );
    drop(edge);
    // A backup taken now names this history: its revisions count in it only.
    let backup = snaps.path().join("backup.json");
    std::fs::write(&backup, admin.ok(&["export"])).unwrap();
    let history = redis.cmd(&["HGET", "nexus:history", "id"]);
    let old_snapshot = snaps.path().join("old.snapshot");
    std::fs::copy(&snapshot, &old_snapshot).unwrap();
    assert!(
        std::fs::read_to_string(&backup)
            .unwrap()
            .contains(&format!("\"history\": \"{history}\"")),
        "{history}"
    );

    // 2. Wiped while no replica runs: a new replica serves the snapshot, not nothing, and
    // the snapshot restores Redis (checked whole, then written as one restore).
    redis.cmd(&["FLUSHALL"]);
    let edge = replica(&keys, store(&url, "replica-w2", &tail));
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-b")
    );
    assert!(edge.log().contains("no revision counter"), "{}", edge.log());
    heartbeats(&redis, "replica-w2", 1);
    let (code, _, err) = admin.try_put(&[], &binding("globex", &a.url(), "active", None));
    assert_ne!(code, 0);
    assert!(err.contains("looks wiped"), "{err}");
    let damaged = snaps.path().join("damaged.snapshot");
    let text = std::fs::read_to_string(&snapshot).unwrap();
    std::fs::write(&damaged, text.replace("inst-acme", "inst-acmx")).unwrap();
    let (code, _, err) = admin.tenant(&["import", damaged.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("checksum mismatch"), "{err}");
    // An export (no revision to tell) would be refused; the replica's own snapshot is taken.
    let export = snaps.path().join("export.json");
    std::fs::write(
        &export,
        nexus_e2e::edge::bindings_file(vec![binding("acme", &b.url(), "active", None)]).to_string(),
    )
    .unwrap();
    let (code, _, err) = admin.tenant(&["import", export.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("only a replica's snapshot tells"), "{err}");
    // Another keyspace's snapshot (the same table, written under another key prefix) tells
    // nothing of this one's revisions. Its prefix edited in by hand is a damaged snapshot:
    // the checksum covers the header.
    let other = snaps.path().join("other.snapshot");
    let renamed = text.replacen(
        "\"key_prefix\":\"nexus\"",
        "\"key_prefix\":\"nexus-blue\"",
        1,
    );
    assert_ne!(renamed, text);
    std::fs::write(&other, renamed).unwrap();
    let (code, _, err) = admin.tenant(&["import", other.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("checksum mismatch"), "{err}");
    let ours = nexus_binding_store::snapshot::parse_snapshot(&snapshot, text.as_bytes()).unwrap();
    nexus_binding_store::snapshot::write_snapshot(
        &other,
        &ours.table,
        ours.revision,
        "nexus-blue",
        None,
    )
    .unwrap();
    let (code, _, err) = admin.tenant(&["import", other.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("key prefix \"nexus-blue\"'s table"), "{err}");
    // A key of the schema holding another type stops the restore before anything is written,
    // by name: a tenant's audit list, or the change feed (written last, with the counter).
    for (key, says) in [
        (
            "nexus:audit:acme",
            "nexus:audit:acme is a Redis string, not the list",
        ),
        (
            "nexus:changes",
            "nexus:changes is a Redis string, not the stream",
        ),
    ] {
        redis.cmd(&["SET", key, "by hand"]);
        let (code, _, err) = admin.tenant(&["import", snapshot.to_str().unwrap()]);
        redis.cmd(&["DEL", key]);
        assert_ne!(code, 0);
        assert!(
            err.contains(says) && err.contains("refused before anything was written"),
            "{err}"
        );
        assert_eq!(
            redis.cmd(&["EXISTS", "nexus:binding:acme", "nexus:revision"]),
            "0"
        );
    }
    let out = admin.ok(&["import", snapshot.to_str().unwrap()]);
    assert!(out.contains("imported 1 bindings"), "{out}");
    admin.put(&binding("globex", &a.url(), "active", None));
    wait_instance(&edge, &keys, "globex", "instance-a");
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-b"),
        "acme came back with the snapshot"
    );
    // The backup of the history before the wipe: the restore counts revisions again, so by
    // its numbers the backup would pass for newer and undo the suspension made since.
    admin.ok(&["set-status", "acme", "suspended"]);
    for file in [&backup, &old_snapshot] {
        let (code, _, err) = admin.tenant(&["import", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains(&format!("the file is of history {history}"))
                && err.contains("--allow-older"),
            "{file:?}: {err}"
        );
    }
    let got = admin.ok(&["get", "acme"]);
    assert!(got.contains("suspended"), "nothing imported: {got}");
    let out = admin.ok(&["import", "--allow-older", backup.to_str().unwrap()]);
    assert!(out.contains("imported"), "{out}");
}

#[test]
fn a_history_begun_while_every_replica_was_down_waits_for_an_admin_to_confirm_it() {
    // Redis lost its data while no replica ran, so no heartbeat could tell the admin CLI that
    // bindings are served: the next write begins a new history holding one tenant. A replica
    // restarting on its snapshot would take it and unbind every other tenant. It keeps the
    // snapshot's table, says why, and takes Redis's history only once an admin confirms it
    // (after putting back what should stay, here by importing the snapshot).
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    let keys = TestKeys::new();
    let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
    let snaps = tempfile::tempdir().unwrap();
    let snapshot = snaps.path().join("bindings.snapshot.json");
    let tail = format!("snapshot_path = \"{}\"\n", snapshot.display());
    // Started before the first write, the replica follows the history that write begins
    // without a full load: it learns the history's id at a heartbeat, and its snapshot names
    // it (it would wait for the next reconcile, an hour here).
    let edge = replica(&keys, store(&url, "replica-h", &tail));
    admin.put(&binding("acme", &a.url(), "active", None));
    wait::until(Duration::from_secs(10), "a snapshot of acme", || {
        std::fs::read_to_string(&snapshot)
            .ok()
            .filter(|t| t.contains("\"acme\"") && t.contains("\"history\":"))
    });
    // An older snapshot than the fleet's, kept for later.
    let older = snaps.path().join("older.snapshot");
    std::fs::copy(&snapshot, &older).unwrap();
    admin.put(&binding("globex", &a.url(), "active", None));
    wait_instance(&edge, &keys, "globex", "instance-a");
    let id = redis.cmd(&["HGET", "nexus:history", "id"]);
    assert_eq!(id.len(), 32, "{id}");
    wait::until(
        Duration::from_secs(10),
        "the snapshot to name the history",
        || {
            std::fs::read_to_string(&snapshot)
                .ok()
                .filter(|t| t.contains("globex") && t.contains(&format!("\"history\":\"{id}\"")))
        },
    );
    drop(edge);

    redis.cmd(&["FLUSHALL"]);
    admin.put(&binding("newco", &b.url(), "active", None));
    admin.put(&binding("newer", &b.url(), "active", None));
    let fresh = redis.cmd(&["HGET", "nexus:history", "id"]);
    let mut edge = replica(&keys, store(&url, "replica-h", &tail));
    wait::until(Duration::from_secs(10), "the refusal to be logged", || {
        edge.log()
            .contains(&format!(
                "Redis holds history {fresh}, begun by a write while no replica was heard"
            ))
            .then_some(())
    });
    for tenant in ["acme", "globex"] {
        assert_eq!(
            instance_of(&edge, &keys, tenant).as_deref(),
            Some("instance-a"),
            "{tenant}: {}",
            edge.log()
        );
    }
    assert_eq!(instance_of(&edge, &keys, "newco"), None);
    assert!(
        edge.ops_get("/metrics")
            .text()
            .contains("nexus_edge_binding_store_up 0"),
        "not following Redis"
    );
    // `replicas` says why the replica is on another history, and an export (a backup) of
    // what Redis holds is refused: it is not what the fleet serves.
    heartbeats(&redis, "replica-h", 1);
    let list = nexus_e2e::edge::cli(&["replicas", "--config", admin.config.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(
        err.contains(&format!("Redis holds history {fresh}")),
        "{err}"
    );
    let (code, out, err) = admin.tenant(&["export"]);
    assert_ne!(code, 0);
    assert!(out.is_empty() && err.contains("nothing exported"), "{err}");
    // A replica with nothing of its own to keep does not take the history either while
    // others keep theirs: the fleet would route each tenant by the replica a request reaches.
    let err = Edge::try_start(&replica_opts(&keys, store(&url, "replica-new", "")))
        .err()
        .expect("a replica started without a snapshot");
    assert!(err.contains("other replicas keep their bindings"), "{err}");
    // Restarted beside a replica with nothing to keep, the keeper is gone for a moment; its
    // last heartbeat still counts for the live window, and once started it says so again
    // before that replica has decided (which waits for the fleet as a first write does: 5.5 s
    // at a 2 s heartbeat).
    edge.terminate();
    edge.wait_exit(Duration::from_secs(30));
    let mut edge = Edge::spawn(&replica_opts(&keys, store(&url, "replica-h", &tail))).unwrap();
    let slow_beat = format!(
        "[store]\nkind = \"redis\"\n{url}\nheartbeat_interval = \"2s\"\nreplica_id = \"replica-new2\"\n"
    );
    let err = Edge::try_start(&replica_opts(&keys, slow_beat))
        .err()
        .expect("a replica started beside a keeper");
    assert!(err.contains("other replicas keep their bindings"), "{err}");
    edge.wait_ready(Duration::from_secs(30)).unwrap();
    // The snapshot keeps the table served: a restart now would serve it again.
    let kept = std::fs::read_to_string(&snapshot).unwrap();
    assert!(kept.contains("globex") && !kept.contains("newco"), "{kept}");
    // What the replica serves is put back into Redis's history (older by its revisions than
    // the writes made since: said, and allowed), then the history confirmed: the replica
    // loads it whole.
    let copy = snaps.path().join("kept.snapshot");
    std::fs::write(&copy, &kept).unwrap();
    let (code, _, err) = admin.tenant(&["import", copy.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("--allow-older"), "{err}");
    // A snapshot older than the table a replica keeps would undo what only that replica
    // still holds.
    let (code, _, err) = admin.tenant(&["import", "--allow-older", older.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("replica replica-h keeps revision 2"), "{err}");
    // So would a snapshot of another history (its revision says nothing of theirs), or a
    // bindings file (which says nothing of how recent it is).
    let kept_snap = nexus_binding_store::snapshot::parse_snapshot(&copy, kept.as_bytes()).unwrap();
    let foreign = snaps.path().join("foreign.snapshot");
    nexus_binding_store::snapshot::write_snapshot(
        &foreign,
        &kept_snap.table,
        kept_snap.revision,
        "nexus",
        Some("another-history"),
    )
    .unwrap();
    let (code, _, err) = admin.tenant(&["import", "--allow-older", foreign.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("this snapshot is of history another-history"),
        "{err}"
    );
    let file = snaps.path().join("bindings.json");
    std::fs::write(
        &file,
        nexus_e2e::edge::bindings_file(vec![binding("acme", &b.url(), "active", None)]).to_string(),
    )
    .unwrap();
    let (code, _, err) = admin.tenant(&["import", "--allow-older", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("a bindings file says nothing"), "{err}");
    let out = admin.ok(&["import", "--allow-older", copy.to_str().unwrap()]);
    assert!(out.contains("imported 2"), "{out}");
    assert_eq!(
        instance_of(&edge, &keys, "newco"),
        None,
        "not before the confirmation"
    );
    // Another history than the one the replica named is not confirmed.
    let (code, _, err) = admin.tenant(&["confirm-history", "--history", &id]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("Redis holds history {fresh}")),
        "{err}"
    );
    let out = admin.ok(&[
        "--reason",
        "put back from replica-h's snapshot",
        "confirm-history",
        "--history",
        &fresh,
    ]);
    assert!(out.contains("confirmed"), "{out}");
    // Who confirmed it, and why, are kept with the history: it unbound what replicas kept.
    assert_eq!(
        redis.cmd(&["HGET", "nexus:history", "confirmed_by"]),
        "test-admin"
    );
    assert_eq!(
        redis.cmd(&["HGET", "nexus:history", "confirmed_reason"]),
        "put back from replica-h's snapshot"
    );
    assert!(redis
        .cmd(&["HGET", "nexus:history", "confirmed_at"])
        .parse::<u64>()
        .is_ok_and(|ms| ms > 1_700_000_000_000));
    wait_instance(&edge, &keys, "newco", "instance-b");
    for tenant in ["acme", "globex"] {
        wait_instance(&edge, &keys, tenant, "instance-a");
    }
    wait::until(Duration::from_secs(10), "the store reported up", || {
        edge.ops_get("/metrics")
            .text()
            .contains("nexus_edge_binding_store_up 1")
            .then_some(())
    });
    let out = admin.ok(&["confirm-history"]);
    assert!(out.contains("nothing to confirm"), "{out}");
    drop(edge);

    // A new history the admin meant (`--start-new-history`) needs no confirmation.
    redis.cmd(&["FLUSHALL"]);
    admin.put_with(NEW_HISTORY, &binding("initech", &b.url(), "active", None));
    let edge = replica(&keys, store(&url, "replica-h", &tail));
    wait_instance(&edge, &keys, "initech", "instance-b");
    assert_eq!(instance_of(&edge, &keys, "acme"), None, "{}", edge.log());

    // A restore made while no replica is heard cannot be checked against what they serve
    // (here an export older than the fleet's table): it waits for a confirmation too.
    let export = snaps.path().join("export.json");
    std::fs::write(&export, admin.ok(&["export"])).unwrap();
    admin.put(&binding("later", &b.url(), "active", None));
    wait_instance(&edge, &keys, "later", "instance-b");
    wait::until(
        Duration::from_secs(10),
        "the snapshot of the later tenant",
        || {
            std::fs::read_to_string(&snapshot)
                .ok()
                .filter(|t| t.contains("\"later\""))
        },
    );
    drop(edge);
    redis.cmd(&["FLUSHALL"]);
    let out = admin.ok(&["import", export.to_str().unwrap()]);
    assert!(out.contains("imported 1"), "{out}");
    let edge = replica(&keys, store(&url, "replica-h", &tail));
    wait::until(Duration::from_secs(10), "the refusal to be logged", || {
        edge.log()
            .contains("begun by a restore import while no replica")
            .then_some(())
    });
    assert_eq!(
        instance_of(&edge, &keys, "later").as_deref(),
        Some("instance-b")
    );
    admin.ok(&["confirm-history"]);
    wait::until(Duration::from_secs(10), "the restore to be taken", || {
        instance_of(&edge, &keys, "later").is_none().then_some(())
    });

    // Over replicas serving one history, a restore from a snapshot of another is refused,
    // whatever its revision: a restore starts the count again.
    redis.cmd(&["FLUSHALL"]);
    heartbeats(&redis, "replica-h", 1);
    let (code, _, err) = admin.tenant(&["import", copy.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("snapshot is of history {id}")),
        "{err}"
    );
}

#[test]
fn a_replica_s_snapshot_restores_a_history_that_ended_in_a_delete() {
    // The feed's last change is a delete, so no record holds the newest revision: a replica
    // that loads the store whole applies revision 3 while its newest record is at 1. Its
    // snapshot must say 3, the revision its heartbeats report, or a restore from it is
    // refused as older than what the fleet serves.
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    let keys = TestKeys::new();
    let a = Backend::start("instance-a");
    admin.put(&binding("acme", &a.url(), "active", None));
    admin.put(&binding("globex", &a.url(), "active", None));
    admin.ok(&["delete", "globex"]);
    let snaps = tempfile::tempdir().unwrap();
    let snapshot = snaps.path().join("bindings.snapshot");
    let tail = format!("snapshot_path = \"{}\"\n", snapshot.display());
    let edge = replica(&keys, store(&url, "replica-d", &tail));
    wait_instance(&edge, &keys, "acme", "instance-a");
    wait::until(Duration::from_secs(10), "the snapshot", || {
        snapshot.exists().then_some(())
    });
    let header = std::fs::read_to_string(&snapshot).unwrap();
    let header: serde_json::Value = serde_json::from_str(header.lines().next().unwrap()).unwrap();
    assert_eq!(header["revision"], 3, "{header}");

    redis.cmd(&["FLUSHALL"]);
    heartbeats(&redis, "replica-d", 1);
    let out = admin.ok(&["import", snapshot.to_str().unwrap()]);
    assert!(out.contains("imported 1 bindings"), "{out}");
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
}

/// The revision in the header of the snapshot at `path` (0 while there is none).
fn snapshot_revision(path: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|h| h["revision"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_replica_restarted_from_its_snapshot_reports_the_snapshot_s_revision() {
    // A replica that starts from its snapshot over a wiped Redis serves what the snapshot's
    // header says it applied: deletes after its newest record included. Were it to report
    // its newest record's revision instead, a restore from an older snapshot (one still
    // holding the deleted tenant) would pass for as recent, and bring the tenant back.
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    let keys = TestKeys::new();
    let a = Backend::start("instance-a");
    admin.put(&binding("acme", &a.url(), "active", None));
    admin.put(&binding("globex", &a.url(), "active", None));
    let snaps = tempfile::tempdir().unwrap();
    let snapshot = snaps.path().join("bindings.snapshot");
    let tail = format!("snapshot_path = \"{}\"\n", snapshot.display());
    let edge = replica(&keys, store(&url, "replica-s", &tail));
    wait_instance(&edge, &keys, "globex", "instance-a");
    wait::until(
        Duration::from_secs(10),
        "the snapshot at revision 2",
        || (snapshot_revision(&snapshot) == 2).then_some(()),
    );
    let old = snaps.path().join("old.snapshot");
    std::fs::copy(&snapshot, &old).unwrap();
    admin.ok(&["delete", "globex"]);
    wait::until(
        Duration::from_secs(10),
        "the snapshot at revision 3",
        || (snapshot_revision(&snapshot) == 3).then_some(()),
    );
    drop(edge);

    redis.cmd(&["FLUSHALL"]);
    let edge = replica(&keys, store(&url, "replica-s", &tail));
    assert_eq!(
        instance_of(&edge, &keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(instance_of(&edge, &keys, "globex"), None);
    heartbeats(&redis, "replica-s", 1);
    let beat: serde_json::Value =
        serde_json::from_str(&redis.cmd(&["HGET", "nexus:replicas", "replica-s"])).unwrap();
    assert_eq!(beat["applied_revision"], 3, "{beat}");
    // The snapshot from before the delete is older than what the fleet serves.
    let (code, _, err) = admin.tenant(&["import", old.to_str().unwrap()]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("this snapshot is older (revision 2)"), "{err}");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:binding:globex"]), "0");
    let out = admin.ok(&["import", snapshot.to_str().unwrap()]);
    assert!(out.contains("imported 1 bindings"), "{out}");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:binding:globex"]), "0");
    assert_eq!(instance_of(&edge, &keys, "globex"), None);
}

/// Global flag of `tenant`: write into a Redis that looks wiped.
const NEW_HISTORY: &[&str] = &["--start-new-history"];

#[test]
fn a_restore_import_into_a_wiped_redis_is_served_whole_or_not_at_all() {
    // After a wipe, `tenant import` is a restore: every record first, then the history in one
    // step. Written one tenant at a time, the first record would start a history holding one
    // tenant, and replicas would unbind the rest until the import reached them.
    let ThreeTenants {
        redis,
        admin,
        keys,
        a,
        b,
        edge,
    } = three_tenants("replica-i");

    // 1. A restore under way: its first record is in, its history is not. A replica that
    // reconnects meanwhile (and so reloads) keeps its whole table.
    redis.cmd(&["FLUSHALL"]);
    redis.cmd(&["SET", "nexus:binding:acme", &record_at("acme", &b.url(), 1)]);
    // A record from elsewhere, not in the restore: its revision is never handed out again.
    redis.cmd(&[
        "SET",
        "nexus:binding:leftover",
        &record_at("leftover", &a.url(), 40),
    ]);
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    // The reload after the reconnect refuses the partial store (the heartbeat's own warning
    // about the missing counter may come first, and proves no reload).
    wait::until(
        Duration::from_secs(10),
        "the reload's refusal to be logged",
        || edge.log().contains("restores it in one step").then_some(()),
    );
    for t in ["acme", "globex", "initech"] {
        assert_eq!(
            instance_of(&edge, &keys, t).as_deref(),
            Some("instance-a"),
            "{t}"
        );
    }

    // 2. While a restore holds the store, other writes and a second restore are refused.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restore.json");
    let restore: Vec<serde_json::Value> = ["acme", "globex", "initech", "umbrella"]
        .iter()
        .map(|t| binding(t, &b.url(), "active", None))
        .collect();
    let doc = serde_json::json!({ "format": "nexus-edge.bindings/v1", "bindings": restore });
    std::fs::write(&file, doc.to_string()).unwrap();
    redis.cmd(&["SET", "nexus:restoring", "another-admin", "PX", "60000"]);
    let record = dir.path().join("record.json");
    std::fs::write(
        &record,
        binding("acme", &a.url(), "active", None).to_string(),
    )
    .unwrap();
    let (code, _, err) = admin.tenant(&["put", record.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("restore import is writing"), "{err}");
    let (code, _, err) = admin.tenant(&["import", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("another restore import"), "{err}");
    redis.cmd(&["DEL", "nexus:restoring"]);

    // 3. A bindings file may be older or smaller than the table the replica serves: the
    // restore is refused until the admin says so. Then every tenant arrives, through one
    // reset of the feed, numbered after the highest revision in Redis.
    let (code, _, err) = admin.tenant(&["import", file.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("serve bindings up to revision 3"), "{err}");
    assert!(err.contains("nothing imported"), "{err}");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:restoring"]), "0");
    let mut args = NEW_HISTORY.to_vec();
    args.extend(["import", file.to_str().unwrap()]);
    let out = admin.ok(&args);
    assert!(out.contains("imported 4 bindings"), "{out}");
    for t in ["umbrella", "acme", "globex", "initech"] {
        wait_instance(&edge, &keys, t, "instance-b");
    }
    wait_instance(&edge, &keys, "leftover", "instance-a");
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), "44");
    assert_eq!(redis.cmd(&["XLEN", "nexus:changes"]), "1");
    assert_eq!(redis.cmd(&["EXISTS", "nexus:restoring"]), "0");
    let history = admin.ok(&["history", "globex", "--json"]);
    assert!(history.contains("\"import\""), "{history}");

    // 4. With a history in Redis, an import is one followed write per tenant.
    let doc = serde_json::json!({
        "format": "nexus-edge.bindings/v1",
        "bindings": [binding("umbrella", &a.url(), "active", None)],
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    admin.ok(&["import", file.to_str().unwrap()]);
    wait_instance(&edge, &keys, "umbrella", "instance-a");
    assert_eq!(redis.cmd(&["GET", "nexus:revision"]), "45");
}

#[test]
fn a_restore_over_a_damaged_record_frees_the_domains_the_index_gave_it() {
    // A record that is not JSON cannot say which custom domains it held: the restore that
    // replaces it frees every domain the index gives its tenant, as a write does, so none
    // stays claimed for a record that no longer has it.
    let redis = RedisServer::start();
    let url = format!("url = \"{}\"", redis.url());
    let admin = Admin::new(&store(&url, "admin", ""));
    redis.cmd(&["SET", "nexus:binding:acme", "{not json"]);
    redis.cmd(&["HSET", "nexus:domains", "old.example", "acme"]);
    redis.cmd(&["HSET", "nexus:domains", "other.example", "globex"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("restore.json");
    let mut acme = binding("acme", "http://127.0.0.1:9", "active", None);
    acme["domains"] = serde_json::json!(["new.example"]);
    let doc = nexus_e2e::edge::bindings_file(vec![acme]);
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = admin.ok(&["import", file.to_str().unwrap()]);
    assert!(out.contains("imported 1 bindings"), "{out}");
    assert_eq!(redis.cmd(&["HGET", "nexus:domains", "old.example"]), "");
    assert_eq!(redis.cmd(&["HGET", "nexus:domains", "new.example"]), "acme");
    assert_eq!(
        redis.cmd(&["HGET", "nexus:domains", "other.example"]),
        "globex"
    );
}

/// Starts a restore the way `tenant import` does: its lock, held as `restore-token`.
fn begin_restore(redis: &RedisServer) {
    redis.cmd(&["SET", "nexus:restoring", "restore-token", "PX", "60000"]);
}

/// Ends a restore begun by [`begin_restore`], the way `tenant import` does: the product's
/// own history.lua sets the counter to `revision`, appends the reset entry and releases the
/// lock, in one step.
fn finish_restore(redis: &RedisServer, revision: u64) {
    let history = nexus_e2e::keys::repo_root().join("binding-store/src/redis_store/history.lua");
    let script = std::fs::read_to_string(history).unwrap();
    let revision = revision.to_string();
    let started = redis.cmd(&[
        "EVAL",
        &script,
        "5",
        "nexus:revision",
        "nexus:changes",
        "nexus:restoring",
        "nexus:history",
        "nexus:replicas",
        &revision,
        "100000",
        "restore-token",
        "test-restore",
        "",
    ]);
    assert_eq!(started, revision);
}

#[test]
fn a_replica_started_during_a_restore_serves_all_of_it_or_nothing() {
    // A restore into an empty Redis, run by the test the way `tenant import` runs one: the
    // lock, then the records, then the product's own history.lua (counter, reset entry, lock
    // released, in one step). A replica that starts in the middle has no table to keep; it
    // must not serve the records written so far.
    let redis = RedisServer::start();
    let keys = TestKeys::new();
    let b = Backend::start("instance-b");
    let tenants = ["acme", "globex", "initech"];
    begin_restore(&redis);
    redis.cmd(&["SET", "nexus:binding:acme", &record_at("acme", &b.url(), 1)]);

    let opts = replica_opts(
        &keys,
        store(&format!("url = \"{}\"", redis.url()), "replica-r", ""),
    );
    let mut edge = Edge::spawn(&opts).expect("replica spawned");
    // The listeners serve only once the table is loaded, so waiting shows in the log; the
    // table it serves is checked below.
    wait::until(
        Duration::from_secs(20),
        "the replica to wait for the restore",
        || {
            edge.log()
                .contains("waiting for it to finish")
                .then_some(())
        },
    );
    // A log rotation's SIGHUP (or a SIGUSR1) during the start-up ended it, at once.
    for sig in ["-HUP", "-USR1"] {
        let sent = std::process::Command::new("kill")
            .args([sig, &edge.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    wait::until(Duration::from_secs(10), "the signals to be ignored", || {
        let log = edge.log();
        (log.contains("SIGHUP ignored") && log.contains("SIGUSR1 ignored")).then_some(())
    });

    redis.cmd(&[
        "SET",
        "nexus:binding:globex",
        &record_at("globex", &b.url(), 2),
    ]);
    redis.cmd(&[
        "SET",
        "nexus:binding:initech",
        &record_at("initech", &b.url(), 3),
    ]);
    finish_restore(&redis, 3);

    edge.wait_ready(Duration::from_secs(20))
        .expect("ready after the restore");
    for t in tenants {
        assert_eq!(
            instance_of(&edge, &keys, t).as_deref(),
            Some("instance-b"),
            "{t}"
        );
    }
    let log = edge.log();
    assert!(log.contains("binding table loaded bindings=3"), "{log}");
    assert!(!log.contains("bindings=1"), "{log}");
}

#[test]
fn a_following_replica_with_no_table_waits_for_a_restore_too() {
    // A replica following an empty Redis has no table to keep either. Reconnecting while a
    // restore writes, it reloads: it must not pick up the restore's first records.
    let redis = RedisServer::start();
    let keys = TestKeys::new();
    let b = Backend::start("instance-b");
    let edge = replica(
        &keys,
        store(&format!("url = \"{}\"", redis.url()), "replica-f", ""),
    );
    assert_eq!(instance_of(&edge, &keys, "acme"), None);

    begin_restore(&redis);
    redis.cmd(&["SET", "nexus:binding:acme", &record_at("acme", &b.url(), 1)]);
    redis.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    wait::until(
        Duration::from_secs(20),
        "the follower to wait for the restore",
        || {
            edge.log()
                .contains("loading the whole table when it finishes")
                .then_some(())
        },
    );
    assert_eq!(
        instance_of(&edge, &keys, "acme"),
        None,
        "part of a restore served"
    );

    redis.cmd(&[
        "SET",
        "nexus:binding:globex",
        &record_at("globex", &b.url(), 2),
    ]);
    finish_restore(&redis, 2);
    wait_instance(&edge, &keys, "acme", "instance-b");
    wait_instance(&edge, &keys, "globex", "instance-b");
}

/// `nexus_edge_binding_full_reloads_total` of `edge`.
fn full_reloads(edge: &Edge) -> u64 {
    let text = edge.ops_get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("nexus_edge_binding_full_reloads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no full-reload count in {text}"))
}

/// Waits until `replica` has heartbeated `n` more times (its `at_ms` in the fleet hash moved).
fn heartbeats(redis: &RedisServer, replica: &str, n: usize) {
    let at = || {
        let beat = redis.cmd(&["HGET", "nexus:replicas", replica]);
        serde_json::from_str::<serde_json::Value>(&beat).ok()?["at_ms"].as_u64()
    };
    let mut last = wait::until(Duration::from_secs(10), "a heartbeat", at);
    for _ in 0..n {
        last = wait::until(Duration::from_secs(10), "the next heartbeat", || {
            at().filter(|&t| t > last)
        });
    }
}

#[test]
fn a_new_history_the_feed_cannot_reach_is_found_at_the_next_heartbeat() {
    // A Redis wiped and written again on a host whose clock runs behind (or failed over to
    // one) gives the new change entries stream ids that sort before this replica's position:
    // its feed read finds nothing, and the full reconcile is an hour away here. At each
    // heartbeat the replica checks the revision counter and its own last entry, and
    // reconciles; normal writes, however many, never make it reconcile.
    let ThreeTenants {
        redis,
        admin,
        keys,
        a,
        b,
        edge,
    } = three_tenants("replica-c");
    let reloads = full_reloads(&edge);

    // 1. Normal writes, then heartbeats: no reconcile.
    for i in 0..20 {
        let to = if i % 2 == 0 { &b } else { &a };
        admin.put(&binding("umbrella", &to.url(), "active", None));
    }
    edge.wait_for("revision 23", || edge.revision() == 23);
    heartbeats(&redis, "replica-c", 3);
    assert_eq!(full_reloads(&edge), reloads, "{}", edge.log());

    // 2. In one step: the old history gone, a new one holding acme alone at the revision
    // the replica has applied, its change entry at stream id 1-1. Only the replica's own
    // entry, gone, tells the two histories apart.
    let mut acme = binding("acme", &b.url(), "active", None);
    acme["revision"] = serde_json::json!(23);
    redis.cmd(&[
        "EVAL",
        "redis.call('DEL', 'nexus:changes', 'nexus:binding:globex', 'nexus:binding:initech', \
                    'nexus:binding:umbrella') \
         redis.call('SET', 'nexus:binding:acme', ARGV[1]) \
         redis.call('SET', 'nexus:revision', '23') \
         redis.call('XADD', 'nexus:changes', '1-1', 'rev', '23', 'tenant', 'acme', 'op', 'upsert') \
         return 1",
        "0",
        &acme.to_string(),
    ]);
    wait_instance(&edge, &keys, "acme", "instance-b");
    wait::until(Duration::from_secs(10), "globex to be gone", || {
        instance_of(&edge, &keys, "globex").is_none().then_some(())
    });
    assert!(
        edge.log().contains("last change entry is gone"),
        "{}",
        edge.log()
    );

    // 3. A counter moved on with no entry the feed can deliver (a write outside the
    // contract): the replica stays behind it for a heartbeat, then reconciles.
    redis.cmd(&[
        "SET",
        "nexus:binding:globex",
        &record_at("globex", &a.url(), 25),
    ]);
    redis.cmd(&["SET", "nexus:revision", "25"]);
    wait_instance(&edge, &keys, "globex", "instance-a");
    assert!(edge.log().contains("delivers nothing"), "{}", edge.log());
    assert_eq!(edge.revision(), 25);
    assert_eq!(full_reloads(&edge), reloads + 2, "{}", edge.log());
}
