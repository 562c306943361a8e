//! `nexus-edge check`: what `serve` would refuse (or silently drop) is said before it runs.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nexus_e2e::edge::cli;

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

    // A log filter serve cannot use, or a key set with no key, is an error.
    let with_filter = format!(
        "{}[log]\nfilter = \"info,,=x[bad\"\n",
        config("bindings.json")
    );
    let (code, out) = check(dir.path(), &with_filter);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("log.filter"), "{out}");
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
    let (listen, ops) = nexus_e2e::edge::free_addr_pair();
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

    // A Redis store whose client serve could not build: a URL redis-rs does not read.
    let bad_port = "[auth]\njwks_file = \"jwks.json\"\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:99999/0\"\n";
    let (code, out) = check(dir.path(), bad_port);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("store.url"), "{out}");
    // replicas says why it cannot open the store, not that the store is not Redis.
    let replicas = cli(&[
        "replicas",
        "--config",
        dir.path().join("edge.toml").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&replicas.stderr);
    assert_ne!(replicas.status.code(), Some(0));
    assert!(err.contains("Redis URL did not parse"), "{err}");

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
    let at = |line: usize, key: &str| {
        out.find(&format!("{}:{line}: {key}: ", edge.display()))
            .unwrap_or_else(|| panic!("no {key} at line {line}: {out}"))
    };
    let found = [
        at(2, "auth.jwks_file"),
        at(5, "store.path"),
        at(7, "upstream.ca_file"),
        at(9, "log.filter"),
    ];
    assert!(found.is_sorted(), "in file order: {out}");
    assert!(out.contains("invalid config (4 problems)"), "{out}");
}
