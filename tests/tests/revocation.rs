//! Token revocations: the real `nexus-edge revoke` CLI writing to a real `redis-server` (or a
//! revocations file), and real routers refusing the revoked tokens, cached or not, while
//! every other token goes on being served.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use nexus_e2e::admin::Admin;
use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, cli, Edge, EdgeOptions};
use nexus_e2e::http::{get_with_token, Response};
use nexus_e2e::keys::{claims, now, TestKeys};
use nexus_e2e::probe::{host, wait_instance};
use nexus_e2e::redis_server::RedisServer;
use nexus_e2e::wait;

fn store_section(url: &str, replica: &str, snapshot: Option<&str>) -> String {
    nexus_e2e::redis_server::store_section("nexus", url, replica, snapshot)
}

/// A token of `sub` in tenant acme, with its own `jti` and `iat` `age` seconds ago.
fn token(keys: &TestKeys, sub: &str, jti: &str, age: u64) -> String {
    let mut c = claims("acme", None);
    c["sub"] = sub.into();
    c["jti"] = jti.into();
    c["iat"] = (now() - age).into();
    keys.es.sign(&c).expect("sign")
}

fn get(edge: &Edge, token: &str) -> Response {
    get_with_token(edge.addr, &host("acme"), "/", token)
}

/// Whether `token` is refused as revoked (401 with the RFC 6750 description).
fn revoked(edge: &Edge, token: &str) -> bool {
    let r = get(edge, token);
    r.status == 401
        && r.header("www-authenticate")
            .is_some_and(|h| h.contains("error=\"invalid_token\"") && h.contains("revoked"))
}

fn wait_revoked(edge: &Edge, token: &str, what: &str) {
    wait::until(Duration::from_secs(10), what, || {
        revoked(edge, token).then_some(())
    });
}

fn wait_served(edge: &Edge, token: &str, what: &str) {
    wait::until(Duration::from_secs(10), what, || {
        (get(edge, token).status == 200).then_some(())
    });
}

/// Runs `nexus-edge revoke ARGS` as the test admin; returns (code, stdout, stderr).
fn revoke(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    nexus_e2e::admin::as_admin("revoke", config, args)
}

/// Revokes the token whose `jti` is `jti` for an hour and waits until `edge` refuses it;
/// returns that token (user-1's).
fn revoke_jti(
    edge: &Edge,
    config: &std::path::Path,
    keys: &TestKeys,
    jti: &str,
    what: &str,
) -> String {
    let t = token(keys, "user-1", jti, 0);
    revoke_ok(config, &["token", "--jti", jti, "--until", "1h"]);
    wait_revoked(edge, &t, what);
    t
}

fn revoke_ok(config: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = revoke(config, args);
    assert_eq!(code, 0, "revoke {args:?}: {out}{err}");
    out
}

/// One token, then a user's older tokens, reach a Redis replica through the change feed;
/// the cache does not keep a revoked token served; a gap in the feed and a damaged record
/// are met with a full load that keeps every revocation in force; taking one out serves the
/// token again; and with Redis gone the replica keeps refusing what it knew (failing open on
/// what it could not learn) and says its list is stale.
#[test]
fn revocations_in_redis_reach_the_router_and_outlive_its_outage() {
    let mut redis = RedisServer::start();
    let admin = Admin::new(&store_section(&redis.url(), "admin", None));
    let backend = Backend::start("instance-a");
    admin.put(&binding("acme", &backend.url(), "active", None));
    let keys = TestKeys::new();
    let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
    opts.store = Some(store_section(&redis.url(), "replica-1", None));
    opts.extra = "\n[revocation]\nmax_staleness = \"5s\"\n".to_owned();
    let edge = Edge::start(&opts);
    wait_instance(&edge, &keys, "acme", "instance-a");

    let leaked = token(&keys, "user-1", "jti-leaked", 0);
    let other = token(&keys, "user-1", "jti-other", 0);
    let abuser_old = token(&keys, "user-3", "jti-abuser-old", 120);
    for t in [&leaked, &other, &abuser_old] {
        assert_eq!(get(&edge, t).status, 200, "served before any revocation");
    }
    assert_eq!(edge.metric("nexus_edge_revocations"), 0);

    // One token, by its jti, read from the token itself: it was verified and cached.
    let out = revoke_ok(&admin.config, &["token", "--token", &leaked]);
    assert!(out.contains("token:jti-leaked"), "{out}");
    wait_revoked(&edge, &leaked, "the leaked token refused");
    assert_eq!(
        get(&edge, &other).status,
        200,
        "another token of the same user"
    );

    // A user's tokens issued before now; one issued after is served.
    revoke_ok(
        &admin.config,
        &[
            "user", "--tenant", "acme", "--sub", "user-3", "--until", "1h",
        ],
    );
    wait_revoked(&edge, &abuser_old, "the user's older token refused");
    // Written again with an earlier moment and end (a script's stale run): the revocation
    // keeps its reach, and says so.
    let (code, out, err) = revoke(
        &admin.config,
        &[
            "user",
            "--tenant",
            "acme",
            "--sub",
            "user-3",
            "--issued-before",
            "2020-01-01T00:00:00Z",
            "--until",
            "10m",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("only ever extended"), "{err}");
    let mut later = claims("acme", None);
    later["sub"] = "user-3".into();
    later["iat"] = (now() + 2).into();
    let abuser_new = keys.es.sign(&later).expect("sign");
    assert_eq!(get(&edge, &abuser_new).status, 200, "a token issued after");
    assert_eq!(edge.metric("nexus_edge_revocations"), 2);
    assert_eq!(edge.ops_get("/readyz").json()["revocations"], 2);

    // A gap in the feed (a change whose entry the replica never saw): the next entry's seq
    // is not the next one, and the replica loads the whole list.
    redis.cmd(&["INCR", "nexus:revocations:seq"]);
    redis.cmd(&[
        "HSET",
        "nexus:revocations",
        "token:jti-other",
        &format!(
            r#"{{"token":"jti-other","until":"{}"}}"#,
            nexus_binding_store::revocations::model::format_time(now() + 3600)
        ),
    ]);
    let fourth = revoke_jti(
        &edge,
        &admin.config,
        &keys,
        "jti-fourth",
        "the change after the gap",
    );
    assert!(
        revoked(&edge, &other),
        "the change in the gap, by the full load"
    );

    // A damaged record over a revocation in force keeps that revocation, and is counted.
    redis.cmd(&["HSET", "nexus:revocations", "token:jti-leaked", "{not json"]);
    redis.cmd(&["INCR", "nexus:revocations:seq"]);
    revoke_jti(
        &edge,
        &admin.config,
        &keys,
        "jti-fifth",
        "the change after the damaged record",
    );
    assert!(
        revoked(&edge, &leaked),
        "the damaged record's revocation stays"
    );
    wait::until(Duration::from_secs(10), "the refusal counted", || {
        (edge.metric("nexus_edge_revocation_records_refused_total") >= 1).then_some(())
    });
    assert!(
        edge.log().contains("revocation record refused"),
        "{}",
        edge.log()
    );

    // A record that is no UTF-8 (written by hand) is replaced by a revocation under its key,
    // and the command says so.
    redis.cmd(&[
        "EVAL",
        "redis.call('HSET', KEYS[1], ARGV[1], string.char(255)) return 1",
        "1",
        "nexus:revocations",
        "token:jti-binary",
    ]);
    let (code, out, err) = revoke(
        &admin.config,
        &["token", "--jti", "jti-binary", "--until", "1h"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("was damaged"), "{err}");
    wait_revoked(
        &edge,
        &token(&keys, "user-1", "jti-binary", 0),
        "the token whose damaged record was replaced",
    );

    // Taken out: served again (it is still in the cache, and the cache serves it).
    revoke_ok(&admin.config, &["remove", "token:jti-fourth"]);
    wait_served(&edge, &fourth, "the token whose revocation was removed");
    let (code, _, err) = revoke(&admin.config, &["remove", "token:jti-fourth"]);
    assert_ne!(code, 0, "a second removal finds nothing");
    assert!(err.contains("no revocation token:jti-fourth"), "{err}");

    // Audited, in Redis, and shown newest first.
    let audit = redis.cmd(&["LRANGE", "nexus:revocations:audit", "0", "-1"]);
    assert!(
        audit.contains("test-admin") && audit.contains("jti-leaked"),
        "{audit}"
    );
    let history = revoke_ok(&admin.config, &["history", "-n", "2"]);
    let lines: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert_eq!(lines[0]["op"], "delete", "{history}");
    assert_eq!(lines[0]["key"], "token:jti-fourth");
    assert_eq!(lines[0]["actor"], "test-admin");

    // Redis gone: the revocations in force stay, other tokens are served, and the list is
    // said to be stale once max_staleness has passed.
    redis.stop();
    assert!(revoked(&edge, &leaked) && revoked(&edge, &abuser_old));
    assert_eq!(get(&edge, &abuser_new).status, 200);
    wait::until(
        Duration::from_secs(20),
        "the revocations said stale",
        || (edge.metric("nexus_edge_revocations_stale") == 1).then_some(()),
    );
    assert!(edge.metric("nexus_edge_revocations_sync_age_seconds") >= 5);
    wait::until(Duration::from_secs(10), "the staleness logged", || {
        edge.log().contains("revocations are stale").then_some(())
    });

    // Back: in sync again.
    redis.restart();
    wait::until(
        Duration::from_secs(20),
        "the revocations fresh again",
        || (edge.metric("nexus_edge_revocations_stale") == 0).then_some(()),
    );
    assert!(revoked(&edge, &leaked));
}

/// A replica with a snapshot path keeps its revocations beside its binding snapshot, and a
/// restart while Redis is away starts from them: a revoked token is not served again.
#[test]
fn a_restart_while_redis_is_away_starts_from_the_revocation_snapshot() {
    let mut redis = RedisServer::start();
    let admin = Admin::new(&store_section(&redis.url(), "admin", None));
    let backend = Backend::start("instance-a");
    admin.put(&binding("acme", &backend.url(), "active", None));
    let keys = TestKeys::new();
    let dir = tempfile::tempdir().expect("dir");
    let snap = dir.path().join("bindings.snapshot");
    let snap_s = snap.to_str().expect("utf8");
    let mut opts = EdgeOptions::new(keys.jwks(), serde_json::json!({}));
    opts.store = Some(store_section(&redis.url(), "replica-1", Some(snap_s)));
    let edge = Edge::start(&opts);
    wait_instance(&edge, &keys, "acme", "instance-a");

    let leaked = token(&keys, "user-1", "jti-leaked", 0);
    revoke_ok(
        &admin.config,
        &["token", "--jti", "jti-leaked", "--until", "1h"],
    );
    wait_revoked(&edge, &leaked, "the leaked token refused");
    let revocations = dir.path().join("bindings.snapshot.revocations.json");
    wait::until(Duration::from_secs(10), "the revocation snapshot", || {
        std::fs::read_to_string(&revocations)
            .ok()
            .filter(|t| t.contains("jti-leaked"))
    });
    wait::until(Duration::from_secs(10), "the binding snapshot", || {
        snap.exists().then_some(())
    });
    drop(edge);

    redis.stop();
    let edge = Edge::start(&opts);
    assert_eq!(
        get(&edge, &token(&keys, "user-1", "jti-fine", 0)).status,
        200,
        "served from the binding snapshot"
    );
    assert!(
        revoked(&edge, &leaked),
        "refused from the revocation snapshot"
    );
    assert!(
        edge.log().contains("from=\"snapshot\"") || edge.log().contains("from=snapshot"),
        "{}",
        edge.log()
    );

    // Redis back, but empty (a restart without its data): the router keeps its revocations
    // rather than take an empty list, and an import of its snapshot puts them back in Redis.
    redis.restart();
    redis.cmd(&["FLUSHALL"]);
    wait::until(Duration::from_secs(20), "the wiped store noticed", || {
        edge.log().contains("looks wiped").then_some(())
    });
    assert!(revoked(&edge, &leaked), "kept over a wiped Redis");
    let out = revoke_ok(
        &admin.config,
        &["import", revocations.to_str().expect("utf8")],
    );
    assert!(out.contains("imported 1 revocation"), "{out}");
    // In one step, announced as a reset of the whole list.
    let feed = redis.cmd(&["XRANGE", "nexus:revocations:changes", "-", "+"]);
    assert!(feed.contains("reset") && !feed.contains("put"), "{feed}");
    let (_, listed, _) = revoke(&admin.config, &["list"]);
    assert!(listed.contains("token:jti-leaked"), "{listed}");
    wait::until(Duration::from_secs(20), "in sync again", || {
        (edge.metric("nexus_edge_revocations_stale") == 0
            && edge.metric("nexus_edge_revocations_sync_age_seconds") < 3)
            .then_some(())
    });
    assert!(revoked(&edge, &leaked));
}

/// Without Redis: acme on one instance, and a router's options naming a revocations file
/// (not written yet) that it looks at every 50 ms.
struct FileWorld {
    keys: TestKeys,
    _backend: Backend,
    /// Holds the revocations file.
    dir: tempfile::TempDir,
    file: std::path::PathBuf,
    opts: EdgeOptions,
}

impl FileWorld {
    fn new() -> FileWorld {
        let keys = TestKeys::new();
        let backend = Backend::start("instance-a");
        let bindings =
            nexus_e2e::edge::bindings_file(vec![binding("acme", &backend.url(), "active", None)]);
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("revocations.json");
        let mut opts = EdgeOptions::new(keys.jwks(), bindings);
        opts.extra = format!(
            "\n[revocation]\nfile = {:?}\npoll_interval = \"50ms\"\n",
            file.to_str().expect("utf8")
        );
        FileWorld {
            keys,
            _backend: backend,
            dir,
            file,
            opts,
        }
    }
}

/// Without Redis: a revocations file, written by the same CLI (audited beside it) and
/// followed by the router; a damaged version keeps the revocations in force, and `check`
/// names it.
#[test]
fn a_revocations_file_is_followed_and_a_damaged_one_changes_nothing() {
    let FileWorld {
        keys,
        _backend,
        dir,
        file,
        opts,
    } = FileWorld::new();
    // Refused at start while the file is missing: a typo in its path must not pass for an
    // empty list.
    let err = Edge::try_start(&opts)
        .err()
        .expect("no start without the file");
    assert!(err.contains("revocation.file"), "{err}");
    std::fs::write(&file, "{\"revocations\": []}").expect("write");
    let edge = Edge::start(&opts);

    let leaked = token(&keys, "user-1", "jti-leaked", 0);
    let other = token(&keys, "user-2", "jti-other", 0);
    assert_eq!(get(&edge, &leaked).status, 200);
    revoke_ok(&edge.config_path, &["token", "--token", &leaked]);
    wait_revoked(&edge, &leaked, "the leaked token refused");
    assert_eq!(get(&edge, &other).status, 200);
    let audit = std::fs::read_to_string(dir.path().join("revocations.json.audit.jsonl"))
        .expect("audit log");
    assert!(
        audit.contains("test-admin") && audit.contains("jti-leaked"),
        "{audit}"
    );

    let (code, out, _) = revoke(&edge.config_path, &["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"key\":\"token:jti-leaked\""), "{out}");
    let history = revoke_ok(&edge.config_path, &["history"]);
    assert!(
        history.starts_with('{') && history.contains("jti-leaked"),
        "{history}"
    );

    // A damaged version: nothing changes, it is said and counted, and check names it.
    nexus_e2e::edge::write_atomically(&file, "{\"revocations\": [ {\"token\": 7} ]}");
    wait::until(Duration::from_secs(10), "the damaged file refused", || {
        (edge.metric("nexus_edge_revocation_records_refused_total") >= 1).then_some(())
    });
    assert!(revoked(&edge, &leaked), "the revocation in force stays");
    assert_eq!(get(&edge, &other).status, 200);
    let check = cli(&[
        "check",
        "--config",
        edge.config_path.to_str().expect("utf8"),
    ]);
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && said.contains("revocation.file"),
        "{said}"
    );

    // Pruned: a revocation past its until goes, the others stay.
    let until = |at: u64| nexus_binding_store::revocations::model::format_time(at);
    nexus_e2e::edge::write_atomically(
        &file,
        &format!(
            r#"{{"revocations": [{{"token":"jti-leaked","until":"{}"}}, {{"token":"jti-old","until":"{}"}}]}}"#,
            until(now() + 3600),
            until(now() - 10)
        ),
    );
    let out = revoke_ok(&edge.config_path, &["prune"]);
    assert!(out.contains("pruned 1 revocation"), "{out}");
    let (_, listed, _) = revoke(&edge.config_path, &["list"]);
    assert!(
        listed.contains("jti-leaked") && !listed.contains("jti-old"),
        "{listed}"
    );
    assert!(revoked(&edge, &leaked));
}

/// Opens a WebSocket to acme's instance with `token` and checks it with one echoed frame.
/// A fresh tunnel Pingora tears down at its first frame (its issue #946, see request_path.rs)
/// is opened again.
fn open_websocket(edge: &Edge, token: &str) -> std::net::TcpStream {
    use std::io::Write;
    for _ in 0..5 {
        let mut s = std::net::TcpStream::connect(edge.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            host("acme")
        )
        .expect("write");
        let resp = nexus_e2e::http::read_response(&mut s).expect("101");
        assert_eq!(resp.status, 101);
        match echo(&mut s) {
            Ok(()) => return s,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => continue,
            Err(e) => panic!("echo over a fresh tunnel: {e}"),
        }
    }
    panic!("every tunnel was torn down at its first frame");
}

/// Sends a frame over the tunnel and reads back its echo.
fn echo(s: &mut std::net::TcpStream) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let frame = b"tick";
    s.write_all(frame)?;
    let mut got = [0u8; 4];
    s.read_exact(&mut got)?;
    Ok(())
}

/// A revocation reaches the tunnels its token opened: closed at their next piece, while a
/// tunnel of another token goes on.
#[test]
fn a_websocket_is_closed_once_its_token_is_revoked() {
    let w = FileWorld::new();
    std::fs::write(&w.file, "{\"revocations\": []}").expect("write");
    let (keys, edge) = (w.keys, Edge::start(&w.opts));
    let revoked_token = token(&keys, "user-1", "jti-ws", 0);
    let kept_token = token(&keys, "user-2", "jti-ws-kept", 0);
    let mut s = open_websocket(&edge, &revoked_token);
    let mut kept = open_websocket(&edge, &kept_token);

    revoke_ok(
        &edge.config_path,
        &["token", "--jti", "jti-ws", "--until", "1h"],
    );
    wait::until(
        Duration::from_secs(15),
        "the tunnel closed once its token was revoked",
        || echo(&mut s).is_err().then_some(()),
    );
    assert!(
        echo(&mut kept).is_ok(),
        "a tunnel of another token was closed"
    );
    wait::until(Duration::from_secs(10), "the close counted", || {
        (edge.metric("nexus_edge_tunnels_closed_total{end=\"token_refused\"}") >= 1).then_some(())
    });
    let log = edge.log();
    assert!(
        log.contains("the tunnel's token is no longer accepted (token revoked)"),
        "{log}"
    );
    assert!(!log.contains(&revoked_token), "a token was logged");
}
