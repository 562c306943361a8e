//! The HTTP admin API (`[admin_api]`) end to end: the real `nexus-edge` binary with its admin
//! listener, real instances, real tokens, and a real `redis-server` for the Redis store.
//!
//! What is covered: bearer tokens from the tokens file as it is at each request (added,
//! removed, made unusable); every write (put, rebind, status, delete) served to the public
//! listener and audited under the token's name; `If-Match` / `If-None-Match`, unchanged
//! writes and `always_write`; bad input of every kind refused with nothing changed; `?wait`
//! and `/v1/replicas` on the Redis store; 405 with `Allow`; and `nexus-edge admin-token`.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{
    binding, bindings_file, cli, write_atomically, Edge, EdgeOptions, ADMIN_API_LISTEN,
};
use nexus_e2e::http::{get_with_token, read_response, Response};
use nexus_e2e::https_client::{connect, exchange, trusting};
use nexus_e2e::keys::{b64, TestKeys};
use nexus_e2e::probe::{host, instance_of, wait_instance};
use nexus_e2e::redis_server::{store_section, RedisServer, HEARTBEAT};
use nexus_e2e::tls::{leaf_der, TestCa};
use nexus_e2e::wait;
use ring::rand::SecureRandom;
use serde_json::{json, Value};

/// The tokens file's name, in the router's config directory (where a relative
/// `tokens_file` is read from).
const TOKENS_FILE: &str = "admin-tokens.toml";

/// The name of the token every world starts with: the actor its writes are audited under.
const ACTOR: &str = "provisioner";

/// The body limit the contract sets: 1 MiB.
const MAX_BODY: usize = 1 << 20;

/// A bearer token of the admin API and its name.
struct ApiToken {
    name: String,
    secret: String,
}

impl ApiToken {
    /// A fresh random token called `name`.
    fn new(name: &str) -> ApiToken {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("random bytes");
        ApiToken {
            name: name.to_owned(),
            secret: b64(&bytes),
        }
    }

    /// Its `[[token]]` entry: the router keeps only the SHA-256 of the token.
    fn entry(&self) -> String {
        format!(
            "[[token]]\nname = \"{}\"\nsha256 = \"{}\"\n",
            self.name,
            sha256_hex(self.secret.as_bytes())
        )
    }
}

/// Lowercase hex SHA-256, as a tokens file holds it.
fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One request on a connection of its own, as the admin API serves them. The request is
/// written on another thread while the answer is read, so an answer sent before the whole
/// body was taken (a 413) is read rather than lost to a failed write.
fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: admin\r\n");
    if let Some(t) = token {
        raw.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH") {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("Connection: close\r\n\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the admin API at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut w = s.try_clone().expect("clone stream");
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = w.write_all(&bytes);
        });
        read_response(&mut s).unwrap_or_else(|e| panic!("{method} {target}: {e}"))
    })
}

/// Asserts `r` is the error answer `status` with JSON `{"error": code, "message": …}`.
fn assert_error(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The revision an `ETag: "N"` names.
fn etag_revision(r: &Response) -> u64 {
    let tag = r.header("etag").unwrap_or_else(|| panic!("no ETag: {r:?}"));
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("ETag {tag:?} is not \"N\""))
}

/// The body's `revision` of a write's answer, checked against its `ETag` when it has one.
fn written_revision(r: &Response) -> u64 {
    let rev = r.json()["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision: {}", r.text()));
    if r.header("etag").is_some() {
        assert_eq!(etag_revision(r), rev, "{r:?}");
    }
    rev
}

/// A router with the admin API (tokens file: the [`ACTOR`] token), the test keys and two
/// instances; no tenant bound yet.
struct World {
    keys: TestKeys,
    a: Backend,
    b: Backend,
    token: ApiToken,
    edge: Edge,
    api: SocketAddr,
}

impl World {
    /// On the file store.
    fn start() -> World {
        Self::on_store(None)
    }

    /// On `store` (a whole `[store]` section), or the harness's file store.
    fn on_store(store: Option<String>) -> World {
        Self::with(store, "5s")
    }

    /// As [`World::on_store`], with `[server] shutdown_grace`.
    fn with(store: Option<String>, shutdown_grace: &'static str) -> World {
        let keys = TestKeys::new();
        let (a, b) = (Backend::start("instance-a"), Backend::start("instance-b"));
        let token = ApiToken::new(ACTOR);
        let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(vec![]));
        opts.store = store;
        opts.shutdown_grace = shutdown_grace;
        opts.extra = format!(
            "\n[admin_api]\nlisten = \"{ADMIN_API_LISTEN}\"\ntokens_file = \"{TOKENS_FILE}\"\n"
        );
        opts.files = vec![(TOKENS_FILE.to_owned(), token.entry())];
        let edge = Edge::start(&opts);
        let api = edge.admin_api_addr();
        World {
            keys,
            a,
            b,
            token,
            edge,
            api,
        }
    }

    /// The tokens file the router reads.
    fn tokens_path(&self) -> std::path::PathBuf {
        self.edge.dir.path().join(TOKENS_FILE)
    }

    /// A request with the world's token.
    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        call(
            self.api,
            method,
            target,
            Some(&self.token.secret),
            headers,
            body,
        )
    }

    fn get(&self, target: &str) -> Response {
        self.send("GET", target, &[], b"")
    }

    /// A write with a JSON body and `headers`.
    fn write(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Response {
        self.send(method, target, headers, body.to_string().as_bytes())
    }

    /// `PUT /v1/tenants/{tenant}` of `record`, which must be written (200).
    fn put(&self, tenant: &str, record: &Value) -> u64 {
        let r = self.write("PUT", &format!("/v1/tenants/{tenant}"), &[], record);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["unchanged"], false, "{}", r.text());
        written_revision(&r)
    }

    /// The tenant's record and revision (its ETag), or `None` when the API says 404.
    fn tenant(&self, tenant: &str) -> Option<(Value, u64)> {
        let r = self.get(&format!("/v1/tenants/{tenant}"));
        if r.status == 404 {
            assert_error(&r, 404, "not_found");
            return None;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        Some((r.json(), etag_revision(&r)))
    }

    /// The tenant's audit entries, oldest first.
    fn history(&self, tenant: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/tenants/{tenant}/history"));
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body["unreadable"], json!([]), "{body}");
        body["entries"].as_array().expect("entries").clone()
    }

    /// The status an authenticated `GET path` for `tenant` gets through the public listener.
    fn public_status(&self, tenant: &str, path: &str) -> u16 {
        get_with_token(
            self.edge.addr,
            &host(tenant),
            path,
            &self.keys.token(tenant, None),
        )
        .status
    }
}

#[test]
fn requests_need_a_token_of_the_tokens_file_as_it_is_at_that_request() {
    let w = World::start();
    let asked = |token: Option<&str>, target: &str| call(w.api, "GET", target, token, &[], b"");

    let none = asked(None, "/v1/tenants");
    assert_error(&none, 401, "unauthorized");
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"nexus-edge admin\""),
        "{none:?}"
    );
    assert_eq!(none.header("connection"), Some("close"), "{none:?}");
    let stranger = ApiToken::new("stranger");
    assert_error(
        &asked(Some(&stranger.secret), "/v1/tenants"),
        401,
        "unauthorized",
    );
    // The token's digest is no token: only the token hashes to it.
    let digest = sha256_hex(w.token.secret.as_bytes());
    assert_error(&asked(Some(&digest), "/v1/tenants"), 401, "unauthorized");
    // Paths are not told apart before the caller is known.
    assert_error(&asked(None, "/v1/nothing-here"), 401, "unauthorized");
    assert_error(
        &asked(Some(&w.token.secret), "/v1/nothing-here"),
        404,
        "not_found",
    );

    let listed = asked(Some(&w.token.secret), "/v1/tenants");
    assert_eq!(listed.status, 200, "{}", listed.text());
    // Counted by outcome, for the SREs: every answer so far.
    let counted = |outcome: &str| {
        w.edge.metric(&format!(
            "nexus_edge_admin_api_requests_total{{outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(counted("unauthorized"), 4);
    assert_eq!(counted("not_found"), 1);
    assert_eq!(counted("ok"), 1);
    assert_eq!(counted("precondition_failed"), 0);
    assert_eq!(listed.json()["bindings"], json!([]), "{}", listed.text());

    // A token added while the router runs counts at the next request.
    let late = ApiToken::new("late-comer");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(w.tokens_path())
        .expect("tokens file");
    file.write_all(format!("\n{}", late.entry()).as_bytes())
        .expect("append");
    drop(file);
    assert_eq!(asked(Some(&late.secret), "/v1/tenants").status, 200);
    assert_eq!(asked(Some(&w.token.secret), "/v1/tenants").status, 200);

    // A token taken out stops at once.
    std::fs::write(w.tokens_path(), late.entry()).expect("rewrite");
    assert_error(
        &asked(Some(&w.token.secret), "/v1/tenants"),
        401,
        "unauthorized",
    );
    assert_eq!(asked(Some(&late.secret), "/v1/tenants").status, 200);

    // A tokens file that cannot be used is no token list: every request is refused so.
    for (what, content) in [
        ("not TOML", "[[token]\nname = \"late-comer\"\n".to_owned()),
        (
            "a digest of 63 digits",
            format!(
                "[[token]]\nname = \"late-comer\"\nsha256 = \"{}\"\n",
                &sha256_hex(late.secret.as_bytes())[1..]
            ),
        ),
    ] {
        std::fs::write(w.tokens_path(), content).expect("rewrite");
        let r = asked(Some(&late.secret), "/v1/tenants");
        assert_eq!(r.status, 503, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], "tokens_unusable", "{what}: {}", r.text());
    }
    std::fs::remove_file(w.tokens_path()).expect("remove");
    let r = asked(Some(&late.secret), "/v1/tenants");
    assert_error(&r, 503, "tokens_unusable");

    // Put right, it serves again.
    std::fs::write(w.tokens_path(), late.entry()).expect("rewrite");
    assert_eq!(asked(Some(&late.secret), "/v1/tenants").status, 200);
}

#[test]
fn each_write_is_served_by_the_router_and_audited_under_the_tokens_name() {
    let w = World::start();
    let record = binding("acme", &w.a.url(), "active", None);

    let put = w.write(
        "PUT",
        "/v1/tenants/acme",
        &[("Audit-Reason", "new customer")],
        &record,
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let body = put.json();
    assert_eq!(body["unchanged"], false, "{body}");
    assert_eq!(body["binding"]["tenant_id"], "acme", "{body}");
    let created = written_revision(&put);
    assert_eq!(etag_revision(&put), created);
    wait_instance(&w.edge, &w.keys, "acme", "instance-a");

    // Reads give the record as written.
    let (got, rev) = w.tenant("acme").expect("acme bound");
    assert_eq!((&got, rev), (&body["binding"], created));
    let list = w.get("/v1/tenants");
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    assert_eq!(list["bindings"], json!([got]), "{list}");
    assert_eq!(list["left_out"], json!([]), "{list}");
    assert!(list["revision"].as_u64() >= Some(created), "{list}");

    let rebind = w.write(
        "POST",
        "/v1/tenants/acme/rebind",
        &[("Audit-Reason", "move to instance-b")],
        &json!({ "instance_id": "inst-b", "instance_url": w.b.url() }),
    );
    assert_eq!(rebind.status, 200, "{}", rebind.text());
    let rebound = written_revision(&rebind);
    assert!(rebound > created, "{}", rebind.text());
    assert_eq!(rebind.json()["binding"]["instance_id"], "inst-b");
    wait_instance(&w.edge, &w.keys, "acme", "instance-b");

    let suspend = w.write(
        "PUT",
        "/v1/tenants/acme/status",
        &[],
        &json!({ "status": "suspended" }),
    );
    assert_eq!(suspend.status, 200, "{}", suspend.text());
    let suspended = written_revision(&suspend);
    assert_eq!(suspend.json()["binding"]["status"], "suspended");
    // The status policy: 403 but for the recovery paths, which the instance still serves.
    w.edge.wait_for("acme refused as suspended", || {
        w.public_status("acme", "/") == 403
    });
    assert_eq!(w.public_status("acme", "/billing"), 200);
    let hits = w.b.hits();
    assert_eq!(w.public_status("acme", "/dashboard"), 403);
    assert_eq!(w.b.hits(), hits, "a refused request reached the instance");

    let delete = w.send(
        "DELETE",
        "/v1/tenants/acme",
        &[("Audit-Reason", "contract ended")],
        b"",
    );
    assert_eq!(delete.status, 200, "{}", delete.text());
    let body = delete.json();
    assert_eq!(body["binding"], Value::Null, "{body}");
    assert_eq!(body["unchanged"], false, "{body}");
    assert_eq!(delete.header("etag"), None, "unbound after: {delete:?}");
    let deleted = written_revision(&delete);
    w.edge.wait_for("acme unbound", || {
        w.public_status("acme", "/billing") == 404
    });
    assert_eq!(w.tenant("acme"), None);

    // One entry per write, in order, each under the token's name and with its reason.
    let history = w.history("acme");
    let summary: Vec<_> = history
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap_or_default(),
                e["revision"].as_u64().unwrap_or_default(),
                e["actor"].as_str().unwrap_or_default(),
                e.get("reason").and_then(Value::as_str),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("put", created, ACTOR, Some("new customer")),
            ("rebind", rebound, ACTOR, Some("move to instance-b")),
            ("set-status", suspended, ACTOR, None),
            ("delete", deleted, ACTOR, Some("contract ended")),
        ],
        "{history:?}"
    );
    assert!(history.iter().all(|e| e["tenant"] == "acme"), "{history:?}");
    assert_eq!(history[0]["old"], Value::Null);
    assert!(
        history[1]["old"]["instance_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&w.a.url())),
        "{history:?}"
    );
    assert!(
        history[1]["new"]["instance_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&w.b.url())),
        "{history:?}"
    );
    assert_eq!(history[2]["new"]["status"], "suspended");
    assert_eq!(history[3]["new"], Value::Null);
}

/// The instance that answered an authenticated `GET path` for `tenant`, if one did.
fn routed(w: &World, tenant: &str, path: &str) -> Option<String> {
    let r = get_with_token(
        w.edge.addr,
        &host(tenant),
        path,
        &w.keys.token(tenant, None),
    );
    (r.status == 200).then(|| r.json()["instance"].as_str().unwrap_or_default().to_owned())
}

/// Polls until `path` of `tenant` is routed to the instance named `want`.
fn wait_routed(w: &World, tenant: &str, path: &str, want: &str) {
    w.edge
        .wait_for(&format!("{tenant}{path} routed to {want}"), || {
            routed(w, tenant, path).as_deref() == Some(want)
        });
}

#[test]
fn a_rebind_keeps_the_api_url_unless_it_names_one_and_null_clears_it() {
    let w = World::start();
    let c = Backend::start("instance-c");
    let mut record = binding("acme", &w.a.url(), "active", None);
    record["api_url"] = json!(w.b.url());
    w.put("acme", &record);
    wait_routed(&w, "acme", "/api/x", "instance-b");
    assert_eq!(routed(&w, "acme", "/").as_deref(), Some("instance-a"));

    // Left out: the API stays where it was.
    let r = w.write(
        "POST",
        "/v1/tenants/acme/rebind",
        &[],
        &json!({ "instance_id": "inst-c", "instance_url": c.url() }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["binding"]["api_url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&w.b.url())),
        "{}",
        r.text()
    );
    wait_routed(&w, "acme", "/", "instance-c");
    assert_eq!(routed(&w, "acme", "/api/x").as_deref(), Some("instance-b"));

    // `null`: the API goes to the instance URL again.
    let r = w.write(
        "POST",
        "/v1/tenants/acme/rebind",
        &[],
        &json!({ "instance_id": "inst-a", "instance_url": w.a.url(), "api_url": null }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (now, _) = w.tenant("acme").expect("acme bound");
    assert!(now.get("api_url").is_none_or(Value::is_null), "{now}");
    wait_routed(&w, "acme", "/", "instance-a");
    assert_eq!(routed(&w, "acme", "/api/x").as_deref(), Some("instance-a"));
}

#[test]
fn preconditions_guard_writes_and_a_write_that_changes_nothing_makes_no_revision() {
    let w = World::start();
    let record = binding("acme", &w.a.url(), "active", None);
    let create = w.write(
        "PUT",
        "/v1/tenants/acme",
        &[("If-None-Match", "*")],
        &record,
    );
    assert_eq!(create.status, 200, "{}", create.text());
    let first = written_revision(&create);

    // Created once: a second create is refused, and changes nothing.
    let again = binding("acme", &w.b.url(), "active", None);
    let r = w.write("PUT", "/v1/tenants/acme", &[("If-None-Match", "*")], &again);
    assert_error(&r, 412, "precondition_failed");
    assert_eq!(w.tenant("acme").map(|(_, rev)| rev), Some(first));

    let r = w.write(
        "POST",
        "/v1/tenants/acme/rebind",
        &[],
        &json!({ "instance_id": "inst-a2", "instance_url": w.a.url() }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let second = written_revision(&r);
    assert!(second > first);
    // Routed at this revision before the refused writes, so the routing checked after them
    // tells something.
    w.edge
        .wait_for("the rebind served", || w.edge.revision() >= second);

    // A writer that read the first revision is told someone changed the tenant since.
    let stale = format!("\"{first}\"");
    let moved = binding("acme", &w.b.url(), "past_due", None);
    let r = w.write("PUT", "/v1/tenants/acme", &[("If-Match", &stale)], &moved);
    assert_error(&r, 412, "precondition_failed");
    let r = w.send("DELETE", "/v1/tenants/acme", &[("If-Match", &stale)], b"");
    assert_error(&r, 412, "precondition_failed");
    let (now, rev) = w.tenant("acme").expect("acme still bound");
    assert_eq!(rev, second);
    assert_eq!(now["instance_id"], "inst-a2", "{now}");
    assert_eq!(now["status"], "active", "{now}");
    assert_eq!(
        instance_of(&w.edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );

    let current = format!("\"{second}\"");
    let r = w.write("PUT", "/v1/tenants/acme", &[("If-Match", &current)], &moved);
    assert_eq!(r.status, 200, "{}", r.text());
    let third = written_revision(&r);
    assert!(third > second);
    wait_instance(&w.edge, &w.keys, "acme", "instance-b");

    // The same record again: nothing to write, no revision, no audit entry.
    let entries = w.history("acme").len();
    let r = w.write("PUT", "/v1/tenants/acme", &[], &moved);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unchanged"], true, "{}", r.text());
    assert_eq!(written_revision(&r), third);
    assert_eq!(etag_revision(&r), third);
    let r = w.write(
        "PUT",
        "/v1/tenants/acme/status",
        &[],
        &json!({ "status": "past_due" }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unchanged"], true, "{}", r.text());
    assert_eq!(written_revision(&r), third);
    assert_eq!(w.tenant("acme").map(|(_, rev)| rev), Some(third));
    assert_eq!(w.history("acme").len(), entries);

    // Unless asked to write all the same.
    let r = w.write("PUT", "/v1/tenants/acme?always_write=true", &[], &moved);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unchanged"], false, "{}", r.text());
    let fourth = written_revision(&r);
    assert!(fourth > third, "{}", r.text());
    assert_eq!(w.tenant("acme").map(|(_, rev)| rev), Some(fourth));
    assert_eq!(w.history("acme").len(), entries + 1);

    // And the right revision lets a delete through.
    let r = w.send(
        "DELETE",
        "/v1/tenants/acme",
        &[("If-Match", &format!("\"{fourth}\""))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.tenant("acme"), None);
}

/// A request the API must refuse, and how.
struct Bad {
    what: &'static str,
    method: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    /// The status and error code the contract names; `None` where it says only "4xx".
    refused: Option<(u16, &'static str)>,
}

impl Bad {
    /// The request `what`, with `body`, that must get a 400 `bad_request` unless told otherwise.
    fn request(
        what: &'static str,
        method: &'static str,
        target: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Bad {
        Bad {
            what,
            method,
            target,
            headers: Vec::new(),
            body: body.into(),
            refused: Some((400, "bad_request")),
        }
    }

    fn with_header(mut self, name: &'static str, value: &'static str) -> Bad {
        self.headers.push((name, value));
        self
    }

    fn refused_as(mut self, refused: Option<(u16, &'static str)>) -> Bad {
        self.refused = refused;
        self
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let w = World::start();
    w.put("acme", &binding("acme", &w.a.url(), "active", None));
    wait_instance(&w.edge, &w.keys, "acme", "instance-a");
    let (before, revision) = w.tenant("acme").expect("acme bound");
    let entries = w.history("acme").len();

    // Each of these, were it taken, would move acme to instance-b or change it otherwise.
    let to_b = binding("acme", &w.b.url(), "active", None).to_string();
    // serde_json takes the last of two members: instance-b.
    let named_twice = to_b.replacen('{', &format!("{{\"instance_url\":\"{}\",", w.a.url()), 1);
    let mut past_limit = to_b.clone().into_bytes();
    past_limit.resize(MAX_BODY + 1, b' ');
    let mut unknown_member = json!({ "instance_id": "inst-b", "instance_url": w.b.url() });
    unknown_member["colour"] = json!("red");
    let globex_record = binding("globex", &w.b.url(), "active", None).to_string();
    let cases = [
        Bad::request(
            "malformed JSON",
            "PUT",
            "/v1/tenants/acme",
            &to_b.as_bytes()[..to_b.len() - 1],
        ),
        Bad::request(
            "a member named twice",
            "PUT",
            "/v1/tenants/acme",
            named_twice,
        ),
        Bad::request(
            "a record of another tenant than the path's",
            "PUT",
            "/v1/tenants/globex",
            to_b.clone(),
        ),
        Bad::request(
            "another tenant's record at the path",
            "PUT",
            "/v1/tenants/acme",
            globex_record,
        ),
        Bad::request(
            "a rebind to a URL no instance can have",
            "POST",
            "/v1/tenants/acme/rebind",
            json!({ "instance_id": "inst-b", "instance_url": "ftp://nowhere" }).to_string(),
        ),
        Bad::request(
            "a rebind with an unknown member",
            "POST",
            "/v1/tenants/acme/rebind",
            unknown_member.to_string(),
        ),
        Bad::request(
            "a status the binding format does not know",
            "PUT",
            "/v1/tenants/acme/status",
            json!({ "status": "sideways" }).to_string(),
        ),
        Bad::request("a body past 1 MiB", "PUT", "/v1/tenants/acme", past_limit)
            .refused_as(Some((413, "payload_too_large"))),
        Bad::request(
            "a wait with the file store",
            "PUT",
            "/v1/tenants/acme?wait=10s",
            to_b.clone(),
        ),
        Bad::request("a blank reason", "PUT", "/v1/tenants/acme", to_b.clone())
            .with_header("Audit-Reason", "   "),
        Bad::request(
            "a reason with a control character",
            "PUT",
            "/v1/tenants/acme",
            to_b.clone(),
        )
        .with_header("Audit-Reason", "why\tnot"),
        Bad::request(
            "an If-Match that names no revision",
            "PUT",
            "/v1/tenants/acme",
            to_b.clone(),
        )
        .with_header("If-Match", "yesterday")
        .refused_as(None),
        Bad::request(
            "a delete with an If-Match that names no revision",
            "DELETE",
            "/v1/tenants/acme",
            "",
        )
        .with_header("If-Match", "\"-1\"")
        .refused_as(None),
    ];
    for bad in cases {
        let what = bad.what;
        let r = w.send(bad.method, bad.target, &bad.headers, &bad.body);
        match bad.refused {
            Some((status, code)) => {
                assert_eq!(r.status, status, "{what}: {}", r.text());
                assert_eq!(r.json()["error"], code, "{what}: {}", r.text());
            }
            None => assert!(
                (400..500).contains(&r.status) && r.json()["error"].is_string(),
                "{what}: {} {}",
                r.status,
                r.text()
            ),
        }
        assert_eq!(
            w.tenant("acme"),
            Some((before.clone(), revision)),
            "{what} changed acme"
        );
        assert_eq!(w.history("acme").len(), entries, "{what} was audited");
    }
    assert_eq!(w.tenant("globex"), None);
    assert_eq!(
        instance_of(&w.edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(w.b.hits(), 0, "instance-b was never to be reached");
}

#[test]
fn a_write_on_the_redis_store_waits_for_the_replicas_and_they_are_listed() {
    let redis = RedisServer::start();
    let w = World::on_store(Some(store_section(
        "nexus",
        &redis.url(),
        "replica-1",
        None,
    )));

    // The router heartbeats as a replica of the store it serves.
    let replicas = wait::until(Duration::from_secs(10), "replica-1 listed as live", || {
        let r = w.get("/v1/replicas");
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        let listed = body["replicas"].as_array().expect("replicas").clone();
        listed
            .iter()
            .any(|r| r["id"] == "replica-1" && r["live"] == true)
            .then_some(listed)
    });
    assert_eq!(replicas.len(), 1, "{replicas:?}");

    // A wait out of its range (1s to 30s) is refused before anything is written.
    let record = binding("acme", &w.a.url(), "active", None);
    for wait in ["0s", "31s", "soon"] {
        let r = w.write(
            "PUT",
            &format!("/v1/tenants/acme?wait={wait}"),
            &[],
            &record,
        );
        assert_error(&r, 400, "bad_request");
        assert_eq!(w.tenant("acme"), None, "wait={wait} wrote acme");
    }

    let put = w.write("PUT", "/v1/tenants/acme?wait=10s", &[], &record);
    assert_eq!(put.status, 200, "{}", put.text());
    let body = put.json();
    let revision = written_revision(&put);
    let waited = &body["wait"];
    assert_eq!(waited["revision"], revision, "{body}");
    assert!(waited["live"].as_u64() >= Some(1), "{body}");
    assert_eq!(waited["applied"], waited["live"], "{body}");
    for none in ["behind", "refused", "silent"] {
        assert_eq!(waited[none], json!([]), "{none}: {body}");
    }
    // Confirmed: the router serves it now, no polling needed.
    assert_eq!(
        instance_of(&w.edge, &w.keys, "acme").as_deref(),
        Some("instance-a")
    );
    assert_eq!(w.tenant("acme").map(|(_, rev)| rev), Some(revision));
    assert_eq!(w.history("acme")[0]["actor"], ACTOR);
}

/// A write on the Redis store waiting for a second replica stopped (SIGSTOP) mid-wait, and
/// what the test needs to go on with it.
struct StalledWrite {
    _redis: RedisServer,
    w: World,
    second: Edge,
    second_keys: TestKeys,
    /// The revision of the write made before the second replica stopped.
    first: u64,
    /// The `PUT ?wait=1s` under way: its answer, or the error reading it.
    put: std::thread::JoinHandle<Result<Response, String>>,
}

impl StalledWrite {
    /// Starts a router (`shutdown_grace`) and a second replica, stops the second, and sends
    /// a write that waits for it; returns once the write is made (its wait under way).
    fn start(shutdown_grace: &'static str) -> StalledWrite {
        let redis = RedisServer::start();
        let w = World::with(
            Some(store_section("nexus", &redis.url(), "replica-1", None)),
            shutdown_grace,
        );
        // Written before the second replica starts: into a Redis with no history yet, a
        // replica first waits two of its heartbeat intervals for others'.
        let first = w.put("acme", &binding("acme", &w.a.url(), "active", None));
        // A second replica heartbeating every 12 s stays live for 120 s after its last
        // heartbeat (ten intervals): stopped (SIGSTOP), it is a live replica that applies
        // nothing, and a wait is lengthened to its interval and a second: 13 s.
        let second_keys = TestKeys::new();
        let mut opts = EdgeOptions::new(second_keys.jwks(), bindings_file(vec![]));
        opts.store = Some(
            store_section("nexus", &redis.url(), "replica-2", None).replace(
                &format!("heartbeat_interval = \"{HEARTBEAT}\""),
                "heartbeat_interval = \"12s\"",
            ),
        );
        let second = Edge::start(&opts);
        wait::until(
            Duration::from_secs(20),
            "replica-2 on the first write",
            || {
                let body = w.get("/v1/replicas").json();
                body["replicas"]
                    .as_array()?
                    .iter()
                    .any(|r| {
                        r["id"] == "replica-2"
                            && r["live"] == true
                            && r["applied_revision"] == first
                    })
                    .then_some(())
            },
        );
        signal(&second, "-STOP");
        let (api, secret) = (w.api, w.token.secret.clone());
        let moved = binding("acme", &w.b.url(), "active", None).to_string();
        let put = std::thread::spawn(move || {
            std::panic::catch_unwind(|| {
                call(
                    api,
                    "PUT",
                    "/v1/tenants/acme?wait=1s",
                    Some(&secret),
                    &[("Audit-Reason", "while replica-2 is stopped")],
                    moved.as_bytes(),
                )
            })
            .map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "no answer".to_owned())
            })
        });
        // Written (the second change the log names: the first was `first`'s), and waiting.
        w.edge.wait_for("the write", || {
            w.edge.log().matches("admin API change").count() >= 2
        });
        StalledWrite {
            _redis: redis,
            w,
            second,
            second_keys,
            first,
            put,
        }
    }
}

/// Sends `sig` (`-STOP`, `-CONT`) to `edge`'s process.
fn signal(edge: &Edge, sig: &str) {
    let done = std::process::Command::new("kill")
        .args([sig, &edge.pid().to_string()])
        .status()
        .unwrap();
    assert!(done.success(), "kill {sig}");
}

/// A wait that a live replica does not confirm: 202, the change written all the same. The
/// wait outlasts the 10 s a connection has before it authenticates (it is granted more
/// once it has), and a SIGTERM to the router during it does not cut it: the drain waits
/// for the admin API's requests.
#[test]
fn a_wait_a_live_replica_does_not_confirm_answers_202_with_the_change_written() {
    let stalled = StalledWrite::start("60s");
    // The router is told to stop during the wait.
    stalled.w.edge.terminate();
    let put = stalled.put.join().unwrap().unwrap();
    signal(&stalled.second, "-CONT");
    assert_eq!(put.status, 202, "{}", put.text());
    let body = put.json();
    let revision = written_revision(&put);
    assert!(revision > stalled.first, "{body}");
    let waited = &body["wait"];
    assert_eq!(waited["confirmed"], false, "{body}");
    assert_eq!(waited["live"], 2, "{body}");
    assert_eq!(waited["applied"], 1, "{body}");
    assert_eq!(waited["behind"], json!(["replica-2"]), "{body}");
    assert!(waited["waited_ms"].as_u64() >= Some(13_000), "{body}");
    // The router exits once the write's answer is out.
    let mut edge = stalled.w.edge;
    assert!(edge.wait_exit(Duration::from_secs(30)).success());
    assert!(
        !edge.log().contains("admin API requests under way"),
        "{}",
        edge.log()
    );
    // Written all the same: the other replica, running again, serves it.
    wait_instance(&stalled.second, &stalled.second_keys, "acme", "instance-b");
}

/// A write whose wait outlasts `shutdown_grace` is cut with the process: the log says so
/// before the end (its caller gets no answer; the write itself was made, whole).
#[test]
fn a_write_cut_by_the_end_of_shutdown_grace_is_said_in_the_log() {
    let stalled = StalledWrite::start("2s");
    stalled.w.edge.terminate();
    let mut edge = stalled.w.edge;
    assert!(edge.wait_exit(Duration::from_secs(30)).success());
    let unanswered = stalled.put.join().unwrap();
    assert!(unanswered.is_err(), "{unanswered:?}");
    assert!(
        edge.log()
            .contains("shutdown_grace is ending with admin API requests under way"),
        "{}",
        edge.log()
    );
    assert!(
        edge.log().contains("admin_api_requests=1"),
        "{}",
        edge.log()
    );
    // Written all the same: the other replica, running again, serves it.
    signal(&stalled.second, "-CONT");
    wait_instance(&stalled.second, &stalled.second_keys, "acme", "instance-b");
}

/// With certificates of its own, the admin API serves HTTPS only: a request over TLS (the
/// name it asks for choosing the certificate) is answered and its write served; plain HTTP
/// on its port gets no answer and counts as a failed handshake of the admin API's, not the
/// public listener's, as does a client silent until the connection's deadline; a
/// certificate renewed on disk serves the next handshake.
#[test]
fn with_certificates_of_its_own_the_admin_api_serves_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let certs = dir.path().join("admin-certs");
    std::fs::create_dir(&certs).unwrap();
    let first = ca.issue(&["admin.edge.test"]);
    std::fs::write(certs.join("admin.pem"), &first).unwrap();
    let keys = TestKeys::new();
    let instance = Backend::start("instance-a");
    let token = ApiToken::new(ACTOR);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(vec![]));
    opts.extra = format!(
        "\n[admin_api]\nlisten = \"{ADMIN_API_LISTEN}\"\ntokens_file = \"{TOKENS_FILE}\"\n\
         certificates = [{:?}]\nreload_interval = \"100ms\"\n",
        certs.display().to_string()
    );
    opts.files = vec![(TOKENS_FILE.to_owned(), token.entry())];
    let edge = Edge::start(&opts);
    let api = edge.admin_api_addr();
    // A client that never begins its handshake: let go at the connection's 10 s deadline.
    let mut silent = TcpStream::connect(api).unwrap();
    let client = trusting(&ca.ca_pem);
    let over_tls = |method: &str, target: &str, auth: bool, body: &str| {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: admin.edge.test\r\n");
        if auth {
            raw.push_str(&format!("Authorization: Bearer {}\r\n", token.secret));
        }
        if !body.is_empty() {
            raw.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        raw.push_str("Connection: close\r\n\r\n");
        raw.push_str(body);
        exchange(&client, api, "admin.edge.test", raw.as_bytes())
    };
    let record = binding("acme", &instance.url(), "active", None).to_string();
    let put = over_tls("PUT", "/v1/tenants/acme", true, &record).unwrap();
    assert_eq!(put.response.status, 200, "{}", put.response.text());
    assert_eq!(put.leaf, leaf_der(&first));
    wait_instance(&edge, &keys, "acme", "instance-a");
    // Still a token for every request.
    let anonymous = over_tls("GET", "/v1/tenants", false, "").unwrap();
    assert_eq!(anonymous.response.status, 401);
    // Plain HTTP, token and all, is not answered: the bytes are no TLS hello.
    let mut plain = TcpStream::connect(api).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let request = format!(
        "GET /v1/tenants HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\r\n",
        token.secret
    );
    plain.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // A name no certificate covers gets no handshake.
    assert!(connect(&client, api, "other.edge.test").is_err());
    edge.wait_for("both failed handshakes counted", || {
        edge.metric("nexus_edge_admin_api_tls_handshakes_failed_total") >= 2
    });
    assert_eq!(edge.metric("nexus_edge_tls_handshakes_failed_total"), 0);
    assert_eq!(edge.metric("nexus_edge_admin_api_tls_certificates"), 1);
    assert_eq!(edge.metric("nexus_edge_tls_certificates"), 0);
    // Renewed on disk (as a renewal writes it: a whole new file moved in place).
    let renewed = ca.issue(&["admin.edge.test"]);
    write_atomically(&certs.join("admin.pem"), &renewed);
    wait::until(Duration::from_secs(10), "the renewed certificate", || {
        let listed = over_tls("GET", "/v1/tenants", true, "").ok()?;
        assert_eq!(listed.response.status, 200, "{}", listed.response.text());
        (listed.leaf == leaf_der(&renewed)).then_some(())
    });
    // The silent client is closed by the deadline (well before this read's 30 s), its
    // unfinished handshake counted.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut silent, &mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    edge.wait_for("the silent client's handshake counted", || {
        edge.metric("nexus_edge_admin_api_tls_handshakes_failed_total") >= 3
    });
}

/// An admin API whose certificates cannot be used keeps the router from starting, naming
/// the setting and each file, as `check` does.
#[test]
fn admin_api_certificates_that_cannot_be_used_are_named() {
    let keys = TestKeys::new();
    let token = ApiToken::new(ACTOR);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(vec![]));
    opts.extra = format!(
        "\n[admin_api]\nlisten = \"{ADMIN_API_LISTEN}\"\ntokens_file = \"{TOKENS_FILE}\"\n\
         certificates = [\"broken.pem\"]\n"
    );
    opts.files = vec![
        (TOKENS_FILE.to_owned(), token.entry()),
        ("broken.pem".to_owned(), "not a certificate".to_owned()),
    ];
    let e = Edge::try_start(&opts).err().expect("refused to start");
    assert!(
        e.contains("admin_api.certificates: no certificate could be loaded"),
        "{e}"
    );
    assert!(e.contains("broken.pem: holds no certificate"), "{e}");
}

/// How many bindings make a listing larger, with room to spare, than the most a TCP
/// connection on this host buffers for a client that reads nothing: the sender's buffer at
/// its largest (`tcp_wmem`'s maximum) and the receiver's at its start (`tcp_rmem`'s
/// default; it grows only as the client reads).
fn listing_beyond_socket_buffers() -> usize {
    let field = |file: &str, i: usize, default: usize| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{file}"))
            .ok()
            .and_then(|t| t.split_whitespace().nth(i)?.parse().ok())
            .unwrap_or(default)
    };
    let buffered = field("tcp_wmem", 2, 4 << 20) + field("tcp_rmem", 1, 128 << 10);
    // Twice over, at 200 bytes a record.
    (2 * buffered / 200).max(60_000)
}

/// One listing of every binding at a time: it holds the whole table until its client has
/// taken it, so a second waits for its turn (15 s at most, then 503) and gets it once the
/// first client has read its answer.
#[test]
fn listings_of_every_binding_are_made_one_at_a_time() {
    use std::io::Read;
    let keys = TestKeys::new();
    let token = ApiToken::new(ACTOR);
    // More JSON than the socket buffers of a client that reads nothing and of the router
    // take, so that the first answer stays unsent while its client does not read: sized
    // from this host's limits (each record is over 200 bytes), 60,000 at least (12 MB).
    let count = listing_beyond_socket_buffers();
    let many: Vec<Value> = (0..count)
        .map(|i| binding(&format!("t{i}"), "http://10.0.0.1:8080", "active", None))
        .collect();
    let mut opts = EdgeOptions::new(keys.jwks(), bindings_file(many));
    opts.extra = format!(
        "\n[admin_api]\nlisten = \"{ADMIN_API_LISTEN}\"\ntokens_file = \"{TOKENS_FILE}\"\n"
    );
    opts.files = vec![(TOKENS_FILE.to_owned(), token.entry())];
    let edge = Edge::start(&opts);
    let api = edge.admin_api_addr();
    let mut first = TcpStream::connect(api).unwrap();
    first
        .write_all(
            format!(
                "GET /v1/tenants HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\
                 Connection: close\r\n\r\n",
                token.secret
            )
            .as_bytes(),
        )
        .unwrap();
    // Its answer has begun: the listing is made, and holds its place.
    first
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut begun = [0u8; 1];
    first.read_exact(&mut begun).unwrap();
    let second = call(api, "GET", "/v1/tenants", Some(&token.secret), &[], b"");
    let shown = |r: &Response| r.text().chars().take(300).collect::<String>();
    assert_eq!(second.status, 503, "{}", shown(&second));
    assert_error(&second, 503, "unavailable");
    assert!(
        second.text().contains("one is made at a time"),
        "{}",
        second.text()
    );
    // A read of one tenant is not held up.
    let one = call(api, "GET", "/v1/tenants/t7", Some(&token.secret), &[], b"");
    assert_eq!(one.status, 200, "{}", one.text());
    // The first client takes its answer: whole, and the next listing is made.
    let mut answer = begun.to_vec();
    first.read_to_end(&mut answer).unwrap();
    let body = &answer[answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4..];
    let listed: Value = serde_json::from_slice(body).expect("the whole listing");
    assert_eq!(listed["bindings"].as_array().map(Vec::len), Some(count));
    let third = call(api, "GET", "/v1/tenants", Some(&token.secret), &[], b"");
    assert_eq!(third.status, 200, "{}", shown(&third));
}

/// A write sent to Redis that no answer came back for may have been made: said as such
/// (504 `outcome_unknown`), not as a store out of reach, which a client would retry blindly.
#[test]
fn a_write_left_unanswered_is_an_unknown_outcome_not_a_refusal() {
    let redis = RedisServer::start();
    let w = World::on_store(Some(store_section(
        "nexus",
        &redis.url(),
        "replica-1",
        None,
    )));
    w.put("acme", &binding("acme", &w.a.url(), "active", None));
    // Redis holds writes (the script among them) for longer than the store waits for an
    // answer (2 s).
    redis.cmd(&["CLIENT", "PAUSE", "4000", "WRITE"]);
    let r = w.write(
        "POST",
        "/v1/tenants/acme/rebind",
        &[],
        &json!({"instance_id": "inst-b", "instance_url": w.b.url()}),
    );
    assert_error(&r, 504, "outcome_unknown");
    assert!(r.text().contains("may have been made"), "{}", r.text());
}

/// `Expect: 100-continue` is answered once the request is known to be acceptable, so a
/// client sends its body only then (curl asks so for larger bodies); a body declared past
/// the bound is refused before it is sent.
#[test]
fn a_client_that_expects_100_continue_is_told_to_send_its_body() {
    use std::io::Read;
    let w = World::start();
    let body = binding("acme", &w.a.url(), "active", None).to_string();
    let mut s = TcpStream::connect(w.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT /v1/tenants/acme HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        w.token.secret,
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(w.tenant("acme").is_some());

    // Declared too large: refused at once, no 100 asked for the body.
    let mut s = TcpStream::connect(w.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "PUT /v1/tenants/beta HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        w.token.secret,
        MAX_BODY + 1
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_error(&r, 413, "payload_too_large");
    assert_eq!(w.tenant("beta"), None);
}

/// A connection that has not shown a listed token within 10 s of its accept is let go: a
/// client trickling its header cannot hold one of the API's places for long.
#[test]
fn a_connection_that_does_not_authenticate_in_time_is_closed() {
    use std::io::Read;
    let w = World::start();
    let mut s = TcpStream::connect(w.api).unwrap();
    s.write_all(b"GET /v1/tenants HTTP/1.1\r\nHost: admin\r\n")
        .unwrap();
    // Pingora's own header read timeout is 60 s: a close before this read's 30 s is the
    // API's deadline.
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn replicas_are_not_found_on_the_file_store() {
    let w = World::start();
    assert_error(&w.get("/v1/replicas"), 404, "not_found");
}

#[test]
fn a_method_the_path_does_not_take_is_refused_with_allow() {
    let w = World::start();
    let revision = w.put("acme", &binding("acme", &w.a.url(), "active", None));
    let suspend = json!({ "status": "suspended" });
    for (method, target, allowed) in [
        ("PATCH", "/v1/tenants/acme", &["GET", "PUT", "DELETE"][..]),
        ("POST", "/v1/tenants/acme", &["GET", "PUT", "DELETE"]),
        ("GET", "/v1/tenants/acme/rebind", &["POST"]),
        ("POST", "/v1/tenants/acme/status", &["PUT"]),
        ("DELETE", "/v1/tenants", &["GET"]),
        ("PUT", "/v1/tenants/acme/history", &["GET"]),
    ] {
        let r = w.write(method, target, &[], &suspend);
        assert_error(&r, 405, "method_not_allowed");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {target}: no Allow: {r:?}"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(listed.contains(m), "{method} {target}: Allow {allow}");
        }
        assert!(
            !listed.contains(&method),
            "{method} {target}: Allow {allow}"
        );
    }
    assert_eq!(w.tenant("acme").map(|(_, rev)| rev), Some(revision));
    assert_eq!(
        w.tenant("acme").map(|(b, _)| b["status"].clone()),
        Some(json!("active"))
    );
}

#[test]
fn admin_token_prints_a_token_whose_entry_it_appends() {
    let w = World::start();

    // Without --append: the token on stdout, its entry on stderr, nothing else written.
    let out = cli(&["admin-token", "--name", "ci-bot"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout.trim_end_matches('\n');
    assert!(!token.is_empty() && !token.contains('\n'), "{stdout:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&sha256_hex(token.as_bytes())) && stderr.contains("ci-bot"),
        "{stderr}"
    );
    assert_error(
        &call(w.api, "GET", "/v1/tenants", Some(token), &[], b""),
        401,
        "unauthorized",
    );

    // A new file is created for the admin's eyes only, with the entry.
    let dir = tempfile::tempdir().expect("dir");
    let fresh = dir.path().join("tokens.toml");
    let out = cli(&[
        "admin-token",
        "--name",
        "ci-bot",
        "--append",
        fresh.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    let mode = std::fs::metadata(&fresh)
        .expect("created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&fresh).expect("read");
    assert!(
        text.contains(&sha256_hex(token.as_bytes())) && text.contains("\"ci-bot\""),
        "{text}"
    );

    // Appended to the router's tokens file, it works at once, and the others still do.
    let out = cli(&[
        "admin-token",
        "--name",
        "deploy@ci",
        "--append",
        w.tokens_path().to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8_lossy(&out.stdout).trim_end().to_owned();
    let r = call(
        w.api,
        "PUT",
        "/v1/tenants/acme",
        Some(&token),
        &[],
        binding("acme", &w.a.url(), "active", None)
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.history("acme")[0]["actor"], "deploy@ci");
}
