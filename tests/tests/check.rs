//! `nexus-edge check`: what `serve` would refuse (or silently drop) is said before it runs.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nexus_e2e::edge::{cli, OPS_LISTEN, PUBLIC_LISTEN};
use nexus_e2e::keys::TestKeys;

/// Runs `check` on `config` in `dir`; returns (exit code, stdout + stderr).
fn check(dir: &std::path::Path, config: &str) -> (i32, String) {
    let path = dir.join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let out = cli(&["check", "--config", path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_says_what_serve_would_refuse_or_drop() {
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    let mut doubled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{demo}/jwks.json")).unwrap())
            .unwrap();
    let keys = doubled["keys"].as_array_mut().unwrap();
    let twin = keys[0].clone();
    keys.push(twin);
    // The RSA key without its alg: it then verifies RS256 only, which check says.
    let rsa = keys.iter_mut().find(|k| k["kty"] == "RSA").unwrap();
    rsa.as_object_mut().unwrap().remove("alg");
    std::fs::write(dir.path().join("jwks.json"), doubled.to_string()).unwrap();
    let mut bindings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{demo}/bindings.json")).unwrap())
            .unwrap();
    bindings["bindings"][0]["status"] = serde_json::json!("zombie");
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let config = |path: &str| {
        format!("[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \"{path}\"\n")
    };

    // A key left out and a record refused are warnings: serve runs without them.
    let (code, out) = check(dir.path(), &config("bindings.json"));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: auth.jwks_file: key left out") && out.contains("duplicate kid"),
        "{out}"
    );
    assert!(
        out.contains("warning: binding record refused") && out.contains("zombie"),
        "{out}"
    );
    assert_eq!(
        out.matches("warning: binding record refused").count(),
        1,
        "said once: {out}"
    );
    // Every record refused: serve would not start on it, and check says so.
    let mut none_valid = bindings.clone();
    for record in none_valid["bindings"].as_array_mut().unwrap() {
        record["status"] = serde_json::json!("zombie");
    }
    std::fs::write(dir.path().join("none.json"), none_valid.to_string()).unwrap();
    let (code, out) = check(dir.path(), &config("none.json"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("records is valid, so `serve` would not start on it"),
        "{out}"
    );
    assert!(
        out.contains("note: auth.jwks_file: kid")
            && out.contains("has no alg, so it verifies RS256 only"),
        "{out}"
    );
    assert!(!out.contains("auth.audiences"), "{out}");
    // No audience configured: valid, but every token naming one would be refused.
    let (code, out) = check(
        dir.path(),
        &config("bindings.json").replace("[store]", "audiences = []\n[store]"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: auth.audiences: empty"), "{out}");
    assert!(!out.contains("auth.issuers"), "{out}");
    // No issuer configured: the iss claim goes unchecked.
    let (code, out) = check(
        dir.path(),
        &config("bindings.json").replace("[store]", "issuers = []\n[store]"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: auth.issuers: empty"), "{out}");

    // Public paths that open every path, or the API, are valid and worth a second look.
    for (paths, says) in [
        (r#"["/"]"#, "makes every path public"),
        (r#"["/login", "/api"]"#, "covers the API prefix"),
    ] {
        let open = format!(
            "{}[tenancy]\npublic_paths = {paths}\napi_prefix = \"/api/\"\n",
            config("bindings.json")
        );
        let (code, out) = check(dir.path(), &open);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(says), "{paths}: {out}");
    }

    // A log filter serve cannot use, or a key set with no key, is an error. So is a filter
    // that would drop every line, errors included: a misspelt level names a target.
    for filter in ["info,,=x[bad", "warning", ""] {
        let with_filter = format!("{}[log]\nfilter = \"{filter}\"\n", config("bindings.json"));
        let (code, out) = check(dir.path(), &with_filter);
        assert_ne!(code, 0, "{filter}: {out}");
        assert!(out.contains("log.filter"), "{filter}: {out}");
    }
    // An HMAC key whose kid the JWKS holds too would never verify anything.
    let taken = format!(
        "{}[[auth.hmac_keys]]\nkid = \"demo-es256\"\nsecret_env = \"NEXUS_TEST_HMAC_SECRET\"\n",
        config("bindings.json")
    );
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, taken).unwrap();
    let out = nexus_e2e::process::output(
        std::process::Command::new(nexus_e2e::edge::binary())
            .args(["check", "--config", path.to_str().unwrap()])
            .env("NEXUS_TEST_HMAC_SECRET", "x".repeat(32)),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("auth.hmac_keys") && err.contains("kid \"demo-es256\""),
        "{err}"
    );
    std::fs::write(dir.path().join("empty.json"), r#"{"keys": []}"#).unwrap();
    let (code, out) = check(
        dir.path(),
        &config("bindings.json").replace("jwks.json", "empty.json"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("no usable verification key (the set is empty)"),
        "{out}"
    );

    // A CA bundle whose certificate block is not a certificate: check refuses it, and serve
    // stops with the reason instead of panicking in Pingora's connector.
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let bad_ca = format!(
        "{}[upstream]\nca_file = \"ca.pem\"\n",
        config("bindings.json")
    );
    let (code, out) = check(dir.path(), &bad_ca);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("upstream.ca_file"), "{out}");
    let (listen, ops) = (PUBLIC_LISTEN, OPS_LISTEN);
    let served = cli(&[
        "serve",
        "--config",
        dir.path().join("edge.toml").to_str().unwrap(),
        "--listen",
        &listen.to_string(),
        "--admin-listen",
        &ops.to_string(),
    ]);
    let err = String::from_utf8_lossy(&served.stderr);
    assert_eq!(served.status.code(), Some(1), "{err}");
    assert!(
        err.contains("upstream.ca_file") && !err.contains("panicked"),
        "{err}"
    );
    // A start that fails names the check, which places every problem at its key and line.
    assert!(err.contains("`nexus-edge check --config "), "{err}");

    // A Redis store whose client serve could not build: a URL redis-rs does not read.
    let bad_port = "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:99999/0\"\n";
    let (code, out) = check(dir.path(), bad_port);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("store.url"), "{out}");
    // replicas says why it cannot open the store (the config's key), not that the store is
    // not Redis.
    let replicas = cli(&[
        "replicas",
        "--config",
        dir.path().join("edge.toml").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&replicas.stderr);
    assert_ne!(replicas.status.code(), Some(0));
    assert!(
        err.contains("store.url: is not a valid URL (invalid port number;"),
        "{err}"
    );

    // A bindings file serve cannot start from is an error.
    let (code, out) = check(dir.path(), &config("missing.json"));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("store.path") && out.contains("missing.json"),
        "{out}"
    );

    // Every such problem at once, in file order, each at its key's line, as the file's own
    // problems are reported: one run of check shows all there is to fix.
    let all_wrong = format!(
        "{}[upstream]\nca_file = \"ca.pem\"\n[log]\nfilter = \"info,,=x[bad\"\n",
        config("missing.json").replace("jwks.json", "empty.json")
    );
    let (code, out) = check(dir.path(), &all_wrong);
    assert_ne!(code, 0, "{out}");
    let edge = dir.path().join("edge.toml");
    let at = |out: &str, line: usize, key: &str| {
        out.find(&format!("{}:{line}: {key}: ", edge.display()))
            .unwrap_or_else(|| panic!("no {key} at line {line}: {out}"))
    };
    let found = [
        at(&out, 2, "auth.jwks_file"),
        at(&out, 5, "store.path"),
        at(&out, 7, "upstream.ca_file"),
        at(&out, 9, "log.filter"),
    ];
    assert!(found.is_sorted(), "in file order: {out}");
    assert!(out.contains("invalid config (4 problems)"), "{out}");
    // With a problem in the file's own text too: still every problem in one run (the text's
    // problem once stopped check before anything the keys name was looked at).
    let (code, out) = check(dir.path(), &format!("[server]\nthreads = 0\n{all_wrong}"));
    assert_ne!(code, 0, "{out}");
    let found = [
        at(&out, 2, "server.threads"),
        at(&out, 4, "auth.jwks_file"),
        at(&out, 7, "store.path"),
        at(&out, 9, "upstream.ca_file"),
        at(&out, 11, "log.filter"),
    ];
    assert!(found.is_sorted(), "in file order: {out}");
    assert!(out.contains("invalid config (5 problems)"), "{out}");
}

/// `serve` with a log filter that would drop every line uses `info` and says so (an empty
/// `RUST_LOG` counts as unset), and with port 0 logs the port it got.
#[test]
fn serve_says_what_it_does_instead_of_going_silent() {
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"{OPS_LISTEN}\"\n\
         [auth]\njwks_file = \"{demo}/jwks.json\"\n\
         [store]\nkind = \"file\"\npath = \"{demo}/bindings.json\"\n\
         [log]\nfilter = \"warning\"\n"
    );
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let log_path = dir.path().join("edge.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(nexus_e2e::edge::binary())
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(child);
    let line = nexus_e2e::wait::until(
        std::time::Duration::from_secs(20),
        "the serving line",
        || {
            let text = std::fs::read_to_string(&log_path).ok()?;
            text.lines()
                .find(|l| l.contains("nexus-edge serving"))
                .map(str::to_owned)
        },
    );
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("log.filter is not a usable filter, so it is not used")
            && text.contains("using=\"info\""),
        "{text}"
    );
    let port: u16 = line
        .split("listen=127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert_ne!(port, 0, "{line}");
    // That port is the router's: an unknown host there is its 404.
    let r = nexus_e2e::http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "nobody.example.test",
        "/",
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

/// Kills and reaps a child process when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_bad_key_does_not_hide_what_the_files_beside_it_hold() {
    // Both sections have a bad value; the files they name are missing: one run lists all four.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(
        dir.path(),
        "[auth]\njwks_file = \"missing-jwks.json\"\nleeway = \"3 parsecs\"\n\
         [store]\nkind = \"file\"\npath = \"missing-bindings.json\"\npoll_interval = \"soon\"\n",
    );
    assert_eq!(code, 1, "{out}");
    for said in [
        "auth.leeway",
        "store.poll_interval",
        "auth.jwks_file",
        "missing-jwks.json",
        "store.path",
        "missing-bindings.json",
    ] {
        assert!(out.contains(said), "{said}: {out}");
    }
}

#[test]
fn a_bad_value_beside_them_does_not_hide_the_ca_bundle_or_the_log_filter() {
    // `idle_connections = 0` made [upstream] unusable, and with it the check of its CA
    // bundle; a bad log format hid the filter's problem. Fixed one at a time, each took a run.
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new();
    std::fs::write(dir.path().join("jwks.json"), keys.jwks().to_string()).unwrap();
    std::fs::write(
        dir.path().join("bindings.json"),
        r#"{"format": "nexus-edge.bindings/v1", "bindings": []}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (code, out) = check(
        dir.path(),
        "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \"bindings.json\"\n\
         [upstream]\nidle_connections = 0\nca_file = \"ca.pem\"\n[log]\nformat = \"xml\"\nfilter = \"info,,=x[bad\"\n",
    );
    assert_eq!(code, 1, "{out}");
    for said in [
        "upstream.idle_connections",
        "upstream.ca_file",
        "log.format",
        "log.filter",
    ] {
        assert!(out.contains(said), "{said}: {out}");
    }
    // `serve` lists them all too: it said the file's own problems only, and the CA bundle's
    // and the filter's one restart at a time.
    let served = cli(&[
        "serve",
        "--config",
        dir.path().join("edge.toml").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&served.stderr);
    assert_eq!(served.status.code(), Some(1), "{err}");
    for said in [
        "upstream.idle_connections",
        "upstream.ca_file",
        "log.format",
        "log.filter",
    ] {
        assert!(err.contains(said), "serve: {said}: {err}");
    }
}

#[test]
fn a_snapshot_path_that_is_a_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        TestKeys::new().jwks().to_string(),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("snap")).unwrap();
    let (code, out) = check(
        dir.path(),
        "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"redis\"\n\
         url = \"redis://127.0.0.1:6379\"\nsnapshot_path = \"snap\"\n",
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("store.snapshot_path") && out.contains("is a directory"),
        "{out}"
    );
    // Under a file: no write could ever make its directory. Under missing ones: they are
    // made at the first write.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let config = |snap: &str| {
        format!(
            "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"redis\"\n\
             url = \"redis://127.0.0.1:6379\"\nsnapshot_path = \"{snap}\"\n"
        )
    };
    let (code, out) = check(dir.path(), &config("file/deeper/snap"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is not a directory"), "{out}");
    let (code, out) = check(dir.path(), &config("new/dirs/snap"));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_upgrade_socket_that_could_not_be_bound_is_refused_with_its_line() {
    let (dir, bindings) = demo_key_set_and_bindings();
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    std::fs::write(dir.path().join("taken"), "x").unwrap();
    let config = |socket: &str| {
        format!(
            "[server]\nupgrade_socket = \"{socket}\"\n[auth]\njwks_file = \"jwks.json\"\n\
             [store]\nkind = \"file\"\npath = \"bindings.json\"\n"
        )
    };
    let (code, out) = check(dir.path(), &config("missing/upgrade.sock"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("edge.toml:2: server.upgrade_socket:") && out.contains("is not a directory"),
        "{out}"
    );
    let (code, out) = check(dir.path(), &config("taken"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("exists and is not a socket"), "{out}");
    let (code, out) = check(dir.path(), &config("upgrade.sock"));
    assert_eq!(code, 0, "{out}");
}

/// The admin API's certificates are checked as the HTTPS listener's are, under their own
/// setting: a file it would pass over is a problem, an expired one a warning.
#[test]
fn check_names_each_admin_api_certificate_file_it_would_not_use() {
    let (dir, bindings) = demo_key_set_and_bindings();
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    std::fs::write(
        dir.path().join("admin-tokens.toml"),
        format!(
            "[[token]]\nname = \"ci\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let ca = nexus_e2e::tls::TestCa::new(dir.path());
    let certs = dir.path().join("admin-certs");
    std::fs::create_dir(&certs).unwrap();
    let cert_only = ca.issue(&["admin.edge.test"]);
    let cert_only = &cert_only[..cert_only.find("-----BEGIN PRIVATE KEY").unwrap()];
    std::fs::write(certs.join("no-key.pem"), cert_only).unwrap();
    let config = "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\n\
                  path = \"bindings.json\"\n[admin_api]\nlisten = \"127.0.0.1:9091\"\n\
                  tokens_file = \"admin-tokens.toml\"\ncertificates = [\"admin-certs\"]\n";
    let (code, out) = check(dir.path(), config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("admin_api.certificates"), "{out}");
    assert!(out.contains("no-key.pem: holds 0 private keys"), "{out}");
    assert!(out.contains("no certificate could be loaded"), "{out}");
    assert!(!out.contains("tls.certificates"), "{out}");
    std::fs::remove_file(certs.join("no-key.pem")).unwrap();
    std::fs::write(
        certs.join("old.pem"),
        ca.issue_for_years(&["admin.edge.test"], 2001, 2002),
    )
    .unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning: admin_api.certificates:") && out.contains("old.pem expired "),
        "{out}"
    );
    assert!(!out.contains("plain HTTP"), "{out}");
    // Beyond loopback without certificates: a warning.
    let plain = config
        .replace("127.0.0.1:9091", "0.0.0.0:9091")
        .replace("certificates = [\"admin-certs\"]\n", "");
    let (code, out) = check(dir.path(), &plain);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "warning: admin_api.listen: 0.0.0.0:9091 is beyond this host, over plain HTTP"
        ),
        "{out}"
    );
}

#[test]
fn an_admin_api_tokens_file_the_api_could_not_use_is_refused_with_its_line() {
    let (dir, bindings) = demo_key_set_and_bindings();
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let config = "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\n\
                  path = \"bindings.json\"\n[admin_api]\nlisten = \"127.0.0.1:9091\"\n\
                  tokens_file = \"admin-tokens.toml\"\n";
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("edge.toml:8: admin_api.tokens_file: cannot read"),
        "{out}"
    );
    let tokens = dir.path().join("admin-tokens.toml");
    std::fs::write(&tokens, "[[token]]\nname = \"ci\"\nsha256 = \"abc\"\n").unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("token \"ci\"") && out.contains("64 hex digits"),
        "{out}"
    );
    // No token at all: valid, and said, as every request would be refused.
    std::fs::write(&tokens, "").unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lists no token"), "{out}");
    // The command that makes a token makes the file valid.
    let made = cli(&[
        "admin-token",
        "--name",
        "ci",
        "--append",
        tokens.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    let token = String::from_utf8(made.stdout).unwrap();
    assert!(token.trim().starts_with("nxa_"), "{token}");
    assert!(!std::fs::read_to_string(&tokens)
        .unwrap()
        .contains(token.trim()));
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warning"), "{out}");
    // An existing file keeps its mode (a router reading it must go on reading it), through a
    // symlink too: the file it names is replaced, the link kept.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("tokens-link.toml");
    std::os::unix::fs::symlink(&tokens, &link).unwrap();
    let via_link = cli(&[
        "admin-token",
        "--name",
        "ci2",
        "--append",
        link.to_str().unwrap(),
    ]);
    assert!(via_link.status.success(), "{via_link:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let mode = std::fs::metadata(&tokens).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert!(std::fs::read_to_string(&tokens)
        .unwrap()
        .contains("name = \"ci2\""));
    // A name taken already is refused, and the file left as it was.
    let before = std::fs::read(&tokens).unwrap();
    let again = cli(&[
        "admin-token",
        "--name",
        "ci",
        "--append",
        tokens.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(again.stdout.is_empty(), "no token printed: {again:?}");
    assert_eq!(std::fs::read(&tokens).unwrap(), before);
}

/// A folder holding the demo key set, and the demo bindings document to change and write.
fn demo_key_set_and_bindings() -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    std::fs::copy(format!("{demo}/jwks.json"), dir.path().join("jwks.json")).unwrap();
    let bindings =
        serde_json::from_str(&std::fs::read_to_string(format!("{demo}/bindings.json")).unwrap())
            .unwrap();
    (dir, bindings)
}

#[test]
fn check_warns_of_a_custom_domain_a_base_domain_now_covers() {
    // A base domain added over a custom domain makes the name a tenant's subdomain, routed
    // by name: the binding's claim then never reaches it.
    let (dir, mut bindings) = demo_key_set_and_bindings();
    let records = bindings["bindings"].as_array_mut().unwrap();
    let globex = records
        .iter_mut()
        .find(|b| b["tenant_id"] == "globex")
        .unwrap();
    globex["domains"] = serde_json::json!(["shop.globex.test"]);
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let config = |bases: &str| {
        format!(
            "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \"bindings.json\"\n\
             [tenancy]\nbase_domains = {bases}\n"
        )
    };
    let (code, out) = check(dir.path(), &config(r#"["nexus.localhost"]"#));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("shop.globex.test"), "{out}");
    // acme's own custom domain under the new base is acme's subdomain: still acme's.
    let (code, out) = check(
        dir.path(),
        &config(r#"["nexus.localhost", "globex.test", "example.test"]"#),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("binding globex: domain shop.globex.test: a base domain makes it tenant shop's subdomain"),
        "{out}"
    );
    assert!(!out.contains("acme.example.test"), "{out}");
    // A base domain that is a tenant's subdomain takes it from the tenant.
    let (code, out) = check(
        dir.path(),
        &config(r#"["nexus.localhost", "globex.nexus.localhost"]"#),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "binding globex: globex.nexus.localhost is a base domain, so it never reaches this tenant"
        ),
        "{out}"
    );
    assert!(!out.contains("binding acme: acme."), "{out}");
}

#[test]
fn check_warns_of_an_operators_origin_a_binding_has_come_to_name() {
    // `https://globex.nexus.localhost` listed as the operator's page, while tenant globex is
    // bound: its instance serves that name, so the router takes it for globex's page.
    let (dir, bindings) = demo_key_set_and_bindings();
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let config = |trusted: &str| {
        format!(
            "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \"bindings.json\"\n\
             [tenancy]\nbase_domains = [\"nexus.localhost\"]\ntrusted_origins = [\"{trusted}\"]\n\
             [cors]\nallowed_origins = [\"{trusted}\"]\n"
        )
    };
    let (code, out) = check(dir.path(), &config("https://console.nexus.localhost"));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("is a page of tenant"), "{out}");
    let (code, out) = check(dir.path(), &config("https://globex.nexus.localhost"));
    assert_eq!(code, 0, "{out}");
    for key in ["tenancy.trusted_origins", "cors.allowed_origins"] {
        assert!(
            out.contains(&format!(
                "warning: {key}: https://globex.nexus.localhost is a page of tenant globex, which is bound"
            )),
            "{out}"
        );
    }
}

#[test]
fn check_warns_of_a_bindings_file_whose_revisions_are_exhausted() {
    // The router serves such a file, but every admin command refuses to write to it.
    let (dir, mut bindings) = demo_key_set_and_bindings();
    let config =
        "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \"bindings.json\"\n";
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("u64::MAX"), "{out}");
    bindings["bindings"][1]["revision"] = serde_json::json!(u64::MAX);
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("a revision is 18446744073709551615 (u64::MAX)"),
        "{out}"
    );
}

#[test]
fn check_says_which_keys_no_issuer_signs_with() {
    // Two issuers, one key set: a key listed under neither signs nothing, and a kid listed
    // that the set does not hold is a key to come or a typo. Said before a router runs.
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    std::fs::copy(format!("{demo}/jwks.json"), dir.path().join("jwks.json")).unwrap();
    std::fs::copy(
        format!("{demo}/bindings.json"),
        dir.path().join("bindings.json"),
    )
    .unwrap();
    let (code, out) = check(
        dir.path(),
        "[auth]\njwks_file = \"jwks.json\"\nissuers = [\"https://a.test\", \"https://b.test\"]\n\
         [auth.issuer_keys]\n\"https://a.test\" = [\"demo-es256\"]\n\"https://b.test\" = [\"demo-es256\", \"nope\"]\n\
         [store]\nkind = \"file\"\npath = \"bindings.json\"\n",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#"auth.issuer_keys: key "demo-rs256" is listed under no issuer"#),
        "{out}"
    );
    assert!(
        out.contains(r#""https://b.test" lists key "nope", which the key set does not hold"#),
        "{out}"
    );
    assert!(
        !out.contains(r#"key "demo-es256" is listed under no issuer"#),
        "{out}"
    );
}

#[test]
fn a_duration_past_any_clock_is_a_problem_not_a_crash() {
    // humantime panics on this total (u64::MAX seconds and a carried second); the config and
    // the CLI read durations through a guard that refuses it instead.
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(
        dir.path(),
        "[server]\nshutdown_delay = \"18446744073709551615s 500ms 500ms\"\n",
    );
    assert_eq!(code, 1, "{out}");
    // Past any clock is out of range, as "99999999999h" is (it was "not a duration").
    assert!(
        out.contains("server.shutdown_delay") && out.contains("is out of range (0s to 10m)"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    let out = cli(&[
        "token",
        "--tenant",
        "acme",
        "--ttl",
        "18446744073709551615s 500ms 500ms",
    ]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("number is too large"), "{text}");
}

#[test]
fn replicas_without_a_config_says_it_needs_one() {
    // Without --config the admin commands read the embedded demo store, a file store: the
    // refusal says what to give, not that the store (which the user never named) is wrong.
    let out = cli(&["replicas"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("needs --config naming a Redis store"),
        "{text}"
    );
}

/// A config in `dir` serving the demo keys and bindings file; its path.
fn demo_config(dir: &std::path::Path) -> std::path::PathBuf {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    let path = dir.join("edge.toml");
    let config = format!(
        "[auth]\njwks_file = \"{demo}/jwks.json\"\n[store]\nkind = \"file\"\npath = \"{demo}/bindings.json\"\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn serve_refuses_listen_options_that_clash_and_blames_no_other_process() {
    // `--admin-listen` on `--listen`'s port: binding the second failed with "Address already
    // in use", as if another process held it. Refused before anything is bound.
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    for (listen, admin) in [
        ("0.0.0.0:45679", "127.0.0.1:45679"),
        ("127.0.0.1:0", "127.0.0.1:0"),
    ] {
        let served = cli(&[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            listen,
            "--admin-listen",
            admin,
        ]);
        let err = String::from_utf8_lossy(&served.stderr);
        assert_eq!(served.status.code(), Some(1), "{listen} {admin}: {err}");
        assert!(
            err.contains(&format!("the ops listener at {admin}"))
                && !err.contains("already in use"),
            "{err}"
        );
    }
}

#[test]
fn damaged_redis_tls_files_are_named_by_their_keys_not_the_url() {
    // A CA file holding a CERTIFICATE block of garbage was "store.url: ... Unable to parse TLS
    // trust anchors", and a cut client certificate "store.url: ... missing section end
    // marker: [67, 69, ...]".
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new();
    std::fs::write(dir.path().join("jwks.json"), keys.jwks().to_string()).unwrap();
    let pki = nexus_e2e::tls::TestPki::generate(dir.path());
    std::fs::write(
        dir.path().join("garbage-ca.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let cert = std::fs::read_to_string(&pki.client_cert).unwrap();
    std::fs::write(dir.path().join("cut.pem"), &cert[..cert.len() - 30]).unwrap();
    let key = std::fs::read_to_string(&pki.client_key).unwrap();
    std::fs::write(dir.path().join("cut.key"), &key[..key.len() - 30]).unwrap();
    // Framed as a key, and no key: `check` passed it, and `serve` failed on it.
    std::fs::write(
        dir.path().join("garbage.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let store = |tls: &str| {
        format!(
            "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"redis\"\n\
             url = \"rediss://127.0.0.1:1/0\"\n[store.tls]\n{tls}"
        )
    };
    let (ca, key, cert) = (
        pki.ca.display().to_string(),
        pki.client_key.display().to_string(),
        pki.client_cert.display().to_string(),
    );
    let pair = |c: &str, k: &str| {
        format!("ca_file = \"{ca}\"\nclient_cert_file = \"{c}\"\nclient_key_file = \"{k}\"\n")
    };
    for (tls, said) in [
        (
            "ca_file = \"garbage-ca.pem\"\n".to_owned(),
            "store.tls.ca_file",
        ),
        (pair("cut.pem", &key), "store.tls.client_cert_file"),
        (pair(&cert, "cut.key"), "store.tls.client_key_file"),
        (pair(&cert, "garbage.key"), "store.tls.client_key_file"),
    ] {
        let (code, out) = check(dir.path(), &store(&tls));
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(said) && !out.contains("store.url"), "{out}");
        assert!(!out.contains("cannot read"), "{out}");
    }
    let (code, out) = check(dir.path(), &store(&pair(&cert, &key)));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn an_empty_config_variable_is_named_not_a_missing_flag_value() {
    // clap read NEXUS_EDGE_CONFIG="" as `--config` without a value, and said so of a flag the
    // user never typed.
    for args in [&["check"][..], &["serve"], &["tenant", "list"]] {
        let out = std::process::Command::new(nexus_e2e::edge::binary())
            .args(args)
            .env("NEXUS_EDGE_CONFIG", "")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("NEXUS_EDGE_CONFIG is set but empty") && !err.contains("'--config"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_start_that_fails_outside_the_config_does_not_send_the_user_to_check() {
    // A port another process holds is no problem `check` could find in the file.
    let dir = tempfile::tempdir().unwrap();
    let path = demo_config(dir.path());
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let served = cli(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        &held.local_addr().unwrap().to_string(),
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let err = String::from_utf8_lossy(&served.stderr);
    assert_eq!(served.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot listen") && !err.contains("nexus-edge check"),
        "{err}"
    );
}

#[test]
fn a_token_header_the_router_takes_off_every_request_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo");
    let config = |header: &str| {
        format!(
            "[auth]\njwks_file = \"{demo}/jwks.json\"\ntoken_headers = [\"{header}\"]\n\
             [store]\nkind = \"file\"\npath = \"{demo}/bindings.json\"\n"
        )
    };
    // A front proxy's assertion, which the router takes off: the app never gets it.
    let (code, out) = check(dir.path(), &config("Cf-Access-Jwt-Assertion"));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("auth.token_headers[0]") && out.contains("taken off every request"),
        "{out}"
    );
    // Each one named, at the list's line.
    let (code, out) = check(
        dir.path(),
        &config("X-Access-Token\", \"X-Remote-User\", \"X.User.Id"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("edge.toml:3: auth.token_headers[1]")
            && out.contains("edge.toml:3: auth.token_headers[2]")
            && !out.contains("auth.token_headers[0]"),
        "{out}"
    );
    std::fs::write(
        dir.path().join("edge.toml"),
        config("Cf-Access-Jwt-Assertion"),
    )
    .unwrap();
    let path = dir.path().join("edge.toml");
    let out = std::process::Command::new(nexus_e2e::edge::binary())
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("auth.token_headers"), "{text}");

    let (code, out) = check(dir.path(), &config("X-Access-Token"));
    assert_eq!(code, 0, "{out}");
}

/// Every certificate file the HTTPS listener would pass over is a problem `check` names,
/// with the file and why; the good ones beside it are not.
#[test]
fn check_names_each_certificate_file_the_https_listener_would_not_use() {
    let (dir, bindings) = demo_key_set_and_bindings();
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let ca = nexus_e2e::tls::TestCa::new(dir.path());
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("good.pem"), ca.issue(&["*.edge.test"])).unwrap();
    let cert_only = ca.issue(&["shop.example"]);
    let cert_only = &cert_only[..cert_only.find("-----BEGIN PRIVATE KEY").unwrap()];
    std::fs::write(certs.join("no-key.pem"), cert_only).unwrap();
    let config = "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \
                  \"bindings.json\"\n[tls]\nlisten = \"127.0.0.4:0\"\ncertificates = [\"certs\"]\n";
    let (code, out) = check(dir.path(), config);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("tls.certificates"), "{out}");
    assert!(out.contains("no-key.pem: holds 0 private keys"), "{out}");
    assert!(!out.contains("good.pem"), "{out}");
    std::fs::remove_file(certs.join("no-key.pem")).unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    // The demo tenants live under nexus.localhost, which `*.edge.test` does not cover, and
    // acme has the custom domain acme.example.test: warnings, naming them.
    assert!(
        out.contains(
            "no certificate covers 3 of the tenant subdomains bound here (acme.nexus.localhost, \
             globex.nexus.localhost, initech.nexus.localhost)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "no certificate covers 1 of the custom domains bound here (acme.example.test)"
        ),
        "{out}"
    );
    std::fs::write(
        certs.join("tenants.pem"),
        ca.issue(&["*.nexus.localhost", "acme.example.test"]),
    )
    .unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("no certificate covers"), "{out}");
    assert!(!out.contains("clients refuse it"), "{out}");
    // Certificates clients refuse: warnings naming the file (they would still serve).
    std::fs::write(
        certs.join("old.pem"),
        ca.issue_for_years(&["old.example"], 2019, 2020),
    )
    .unwrap();
    std::fs::write(
        certs.join("future.pem"),
        ca.issue_for_years(&["future.example"], 2090, 2091),
    )
    .unwrap();
    let (code, out) = check(dir.path(), config);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("old.pem expired ") && out.contains("future.pem is not valid for "),
        "{out}"
    );
    assert!(!out.contains("tenants.pem expire"), "{out}");
}

/// More instances in the bindings than `[metrics] max_instances` give series to: a warning
/// with the count, as the ones past it would share the "(over budget)" series.
#[test]
fn check_warns_of_instances_past_the_metrics_budget() {
    let (dir, bindings) = demo_key_set_and_bindings();
    let instances: std::collections::HashSet<&str> = bindings["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["instance_id"].as_str().unwrap())
        .collect();
    assert!(instances.len() >= 2, "{bindings}");
    std::fs::write(dir.path().join("bindings.json"), bindings.to_string()).unwrap();
    let config = |budget: usize| {
        format!(
            "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"file\"\npath = \
             \"bindings.json\"\n[metrics]\nmax_instances = {budget}\n"
        )
    };
    let (code, out) = check(dir.path(), &config(1));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "warning: metrics.max_instances: the bindings name {} instances, {} more than the 1",
            instances.len(),
            instances.len() - 1
        )),
        "{out}"
    );
    let (code, out) = check(dir.path(), &config(instances.len()));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("metrics.max_instances"), "{out}");
}
