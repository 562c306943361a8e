use std::path::Path;
use std::time::Duration;

use crate::*;

const MINIMAL: &str = r#"
[auth]
jwks_file = "keys/jwks.json"

[store]
kind = "file"
path = "bindings.json"
"#;

fn problems(text: &str) -> Vec<Problem> {
    match parse_str(text, Path::new("/etc/nexus/edge.toml")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

fn has(ps: &[Problem], key: &str, line: usize, needle: &str) {
    assert!(
        ps.iter()
            .any(|p| p.key == key && p.line == Some(line) && p.message.contains(needle)),
        "no problem {key}:{line} containing {needle:?} in {ps:#?}"
    );
}

/// Like [`has`], for problems whatever their line (or none: a named file's content).
fn names(ps: &[Problem], key: &str, needle: &str) {
    assert!(
        ps.iter()
            .any(|p| p.key == key && p.message.contains(needle)),
        "no problem {key} containing {needle:?} in {ps:#?}"
    );
}

#[test]
fn example_file_parses() {
    let text = include_str!("../../deploy/nexus-edge.example.toml");
    let s = parse_str(text, Path::new("/repo/deploy/nexus-edge.example.toml"))
        .expect("example is valid");
    assert_eq!(
        s.auth.jwks,
        JwksSource::File("/repo/deploy/demo/jwks.json".into())
    );
    assert_eq!(s.tenancy.base_domains, ["nexus.localhost"]);
    assert_eq!(s.server.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn request_lines_per_second_is_read_and_bounded() {
    let base = "[auth]\njwks_file = \"k.json\"\n[store]\nkind = \"file\"\npath = \"b.json\"\n";
    let s = parse_str(
        &format!("{base}[log]\nrequest_lines_per_second = 5\n"),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert_eq!(s.log.request_lines_per_second, 5);
    assert_eq!(embedded_default().log.request_lines_per_second, 100);
    for (bad, says) in [
        ("0", "out of range (1..=1000000)"),
        ("1_000_001", "out of range (1..=1000000)"),
        ("\"100\"", "must be an integer"),
    ] {
        let ps = problems(&format!("{base}[log]\nrequest_lines_per_second = {bad}\n"));
        has(&ps, "log.request_lines_per_second", 7, says);
    }
}

#[test]
fn minimal_file_takes_defaults_and_resolves_paths() {
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    let d = embedded_default();
    assert_eq!(s.server, d.server);
    assert_eq!(s.tenancy, d.tenancy);
    assert_eq!(
        s.auth.jwks,
        JwksSource::File("/etc/nexus/keys/jwks.json".into())
    );
    assert_eq!(
        s.store,
        StoreSettings::File(FileStoreSettings {
            path: Some("/etc/nexus/bindings.json".into()),
            poll_interval: Duration::from_secs(1)
        })
    );
}

#[test]
fn every_problem_is_reported_with_key_and_line() {
    let text = r#"[server]
listen = "not an address"
threads = 0
shutdwn_grace = "5s"

[tenancy]
base_domains = ["Nexus.App", "ok.app", "ok.app"]
recovery_paths = ["/billing/../api"]
past_due_header = "Bad Header"

[auth]
leeway = "3 parsecs"
tenant_claim = "same"
org_claim = "same"

[store]
kind = "etcd"

[colour]
x = 1
"#;
    let ps = problems(text);
    has(&ps, "server.listen", 2, "not an address");
    has(&ps, "server.threads", 3, "out of range");
    has(
        &ps,
        "server.shutdwn_grace",
        4,
        "did you mean `shutdown_grace`",
    );
    has(&ps, "tenancy.base_domains[0]", 7, "lowercase domain");
    has(&ps, "tenancy.base_domains[2]", 7, "listed twice");
    has(&ps, "tenancy.recovery_paths[0]", 8, "dot segments");
    has(&ps, "tenancy.past_due_header", 9, "header name");
    has(&ps, "auth.leeway", 12, "not a duration");
    has(&ps, "store.kind", 17, "unknown store kind");
    has(&ps, "colour", 19, "unknown key");
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.jwks_file" && p.message.contains("required")),
        "{ps:#?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.org_claim" && p.message.contains("differ")),
        "{ps:#?}"
    );
}

#[test]
fn dns_ttl_may_be_zero_but_not_beyond_an_hour() {
    let zero = format!("{MINIMAL}\n[upstream]\ndns_ttl = \"0s\"\n");
    let s = parse_str(&zero, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.upstream.dns_ttl, Duration::ZERO);
    let default = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(default.upstream.dns_ttl, Duration::from_secs(10));
    let long = format!("{MINIMAL}\n[upstream]\ndns_ttl = \"2h\"\n");
    has(&problems(&long), "upstream.dns_ttl", 10, "out of range");
}

#[test]
fn issuer_keys_name_every_issuer_and_only_those_when_there_are_several() {
    let path = Path::new("/etc/nexus/edge.toml");
    let auth = |issuers: &str, table: &str| {
        format!(
            "[auth]\njwks_file = \"k.json\"\nissuers = {issuers}\n{table}\n[store]\nkind = \"file\"\npath = \"b.json\"\n"
        )
    };
    let two = r#"["https://a.test", "https://b.test"]"#;
    // One issuer: every key is its own, no table needed.
    let s = parse_str(&auth(r#"["https://a.test"]"#, ""), path).expect("valid");
    assert_eq!(s.auth.issuer_keys, None);
    // Several: the table is required.
    names(&problems(&auth(two, "")), "auth.issuer_keys", "RFC 8725");
    let s = parse_str(
        &auth(
            two,
            "[auth.issuer_keys]\n\"https://a.test\" = [\"k1\", \"k2\"]\n\"https://b.test\" = [\"k2\"]",
        ),
        path,
    )
    .expect("valid");
    let keys = s.auth.issuer_keys.expect("issuer keys");
    assert_eq!(keys["https://a.test"], ["k1", "k2"]);
    assert_eq!(keys["https://b.test"], ["k2"]);
    // Every mistake named at once, at its line.
    let ps = problems(&auth(
        two,
        "[auth.issuer_keys]\n\"https://a.test\" = []\n\"https://c.test\" = [\"k3\"]\n\"https://b.test\" = [\"k1\", 2]",
    ));
    has(
        &ps,
        "auth.issuer_keys.\"https://a.test\"",
        5,
        "lists no key",
    );
    has(
        &ps,
        "auth.issuer_keys.\"https://c.test\"",
        6,
        "not in auth.issuers",
    );
    has(
        &ps,
        "auth.issuer_keys.\"https://b.test\"",
        7,
        "list of key ids",
    );
    let ps = problems(&auth(
        two,
        "[auth.issuer_keys]\n\"https://a.test\" = [\"k1\"]",
    ));
    names(
        &ps,
        "auth.issuer_keys",
        "no entry for issuer \"https://b.test\"",
    );
    let ps = problems(&auth(two, "issuer_keys = [\"k1\"]"));
    names(&ps, "auth.issuer_keys", "must be a table");
}

#[test]
fn max_token_lifetime_is_off_unless_set_in_whole_seconds_up_to_ten_years() {
    let path = Path::new("/etc/nexus/edge.toml");
    let with = |value: &str| {
        MINIMAL.replace(
            "jwks_file = \"keys/jwks.json\"\n",
            &format!("jwks_file = \"keys/jwks.json\"\nmax_token_lifetime = \"{value}\"\n"),
        )
    };
    let default = parse_str(MINIMAL, path).expect("valid");
    assert_eq!(default.auth.max_token_lifetime, None);
    assert_eq!(embedded_default().auth.max_token_lifetime, None);
    for (value, want) in [
        ("12h", Some(Duration::from_secs(43_200))),
        ("0s", None),
        ("3660days", Some(Duration::from_secs(3660 * 86_400))),
    ] {
        let s = parse_str(&with(value), path).expect("valid");
        assert_eq!(s.auth.max_token_lifetime, want, "{value}");
    }
    has(
        &problems(&with("1500ms")),
        "auth.max_token_lifetime",
        4,
        "not whole seconds",
    );
    has(
        &problems(&with("3661days")),
        "auth.max_token_lifetime",
        4,
        "out of range (0s to 3660days)",
    );
    // A bare number: the spelling that works is shown.
    let bare = MINIMAL.replace(
        "jwks_file = \"keys/jwks.json\"\n",
        "jwks_file = \"keys/jwks.json\"\nmax_token_lifetime = 3600\n",
    );
    has(
        &problems(&bare),
        "auth.max_token_lifetime",
        4,
        "must be a duration string with its unit, e.g. \"3600s\" or \"3600ms\", found integer",
    );
    has(
        &problems(&with("a while")),
        "auth.max_token_lifetime",
        4,
        "not a duration",
    );
}

#[test]
fn the_tunnel_idle_timeout_is_an_hour_unless_set_between_a_second_and_a_day() {
    let default = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        default.upstream.tunnel_idle_timeout,
        Duration::from_secs(3600)
    );
    assert_eq!(
        embedded_default().upstream.tunnel_idle_timeout,
        Duration::from_secs(3600)
    );
    let set = format!("{MINIMAL}\n[upstream]\ntunnel_idle_timeout = \"24h\"\n");
    let s = parse_str(&set, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.upstream.tunnel_idle_timeout, Duration::from_secs(86_400));
    for value in ["500ms", "25h"] {
        let text = format!("{MINIMAL}\n[upstream]\ntunnel_idle_timeout = \"{value}\"\n");
        has(
            &problems(&text),
            "upstream.tunnel_idle_timeout",
            10,
            "out of range (1s to 24h)",
        );
    }
    let text = format!("{MINIMAL}\n[upstream]\ntunnel_idle_timeout = \"forever\"\n");
    has(
        &problems(&text),
        "upstream.tunnel_idle_timeout",
        10,
        "not a duration",
    );
}

#[test]
fn chunked_request_bodies_are_sent_with_their_length_unless_set_to_chunked() {
    let default = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        default.upstream.chunked_request_bodies,
        ChunkedRequestBodies::Length
    );
    assert_eq!(
        embedded_default().upstream.chunked_request_bodies,
        ChunkedRequestBodies::Length
    );
    let set = format!("{MINIMAL}\n[upstream]\nchunked_request_bodies = \"chunked\"\n");
    let s = parse_str(&set, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        s.upstream.chunked_request_bodies,
        ChunkedRequestBodies::Chunked
    );
    let text = format!("{MINIMAL}\n[upstream]\nchunked_request_bodies = \"buffer\"\n");
    has(
        &problems(&text),
        "upstream.chunked_request_bodies",
        10,
        "expected \"length\" or \"chunked\"",
    );
}

#[test]
fn idle_instance_connections_are_4096_unless_set_between_1_and_a_million() {
    let default = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(default.upstream.idle_connections, 4096);
    assert_eq!(embedded_default().upstream.idle_connections, 4096);
    let set = format!("{MINIMAL}\n[upstream]\nidle_connections = 20_000\n");
    let s = parse_str(&set, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.upstream.idle_connections, 20_000);
    for value in ["0", "1_000_001", "\"many\""] {
        let text = format!("{MINIMAL}\n[upstream]\nidle_connections = {value}\n");
        let found = problems(&text);
        assert!(
            found.iter().any(|p| p.key == "upstream.idle_connections"),
            "{value}: {found:?}"
        );
    }
}

#[test]
fn the_request_header_bound_is_between_4_kib_and_half_of_pingoras_own() {
    let default = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(default.server.max_request_header_bytes, 65536);
    let set = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = 16_384\n");
    let s = parse_str(&set, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.server.max_request_header_bytes, 16384);
    for (value, range) in [("4095", "4096..=524288"), ("524289", "4096..=524288")] {
        let text = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = {value}\n");
        has(
            &problems(&text),
            "server.max_request_header_bytes",
            10,
            &format!("out of range ({range})"),
        );
    }
}

#[test]
fn the_longest_token_must_fit_in_the_longest_header() {
    // The token bound set too high: named where it is set.
    let text = "[auth]\njwks_file = \"k.json\"\nmax_token_bytes = 65536\n\
                [store]\nkind = \"file\"\npath = \"b.json\"\n";
    has(
        &problems(text),
        "auth.max_token_bytes",
        3,
        "65536 leaves less than 128 bytes of server.max_request_header_bytes (65536)",
    );
    // The header bound set too low (the token bound's default is 8192): named where that is.
    let text = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = 8192\n");
    has(
        &problems(&text),
        "auth.max_token_bytes",
        10,
        "8192 leaves less than 128 bytes of server.max_request_header_bytes (8192)",
    );
    // A token one byte shorter than the header bound could not arrive either: the request
    // line and `Authorization: Bearer ` take room too.
    let text = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = 8193\n");
    has(
        &problems(&text),
        "auth.max_token_bytes",
        10,
        "8192 leaves less than 128 bytes",
    );
    let text = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = 8319\n");
    has(&problems(&text), "auth.max_token_bytes", 10, "8192 leaves");
    let text = format!("{MINIMAL}\n[server]\nmax_request_header_bytes = 8320\n");
    parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
}

#[test]
fn the_token_and_header_bounds_are_compared_beside_other_problems() {
    // Other keys of both sections wrong: the two bounds parsed, so they are compared, and
    // every problem is said in one run.
    let text = "[server]\nthreads = 0\nmax_request_header_bytes = 8192\n\
                [auth]\njwks_file = \"k.json\"\nleeway = \"soon\"\nmax_token_bytes = 60000\n\
                [store]\nkind = \"file\"\npath = \"b.json\"\n";
    let ps = problems(text);
    has(&ps, "server.threads", 2, "out of range");
    has(&ps, "auth.leeway", 6, "not a duration");
    has(
        &ps,
        "auth.max_token_bytes",
        7,
        "60000 leaves less than 128 bytes of server.max_request_header_bytes (8192)",
    );
    // A bound that did not parse is not compared: its own problem is the one to fix.
    let text = "[server]\nmax_request_header_bytes = 100\n\
                [auth]\njwks_file = \"k.json\"\nmax_token_bytes = 60000\n\
                [store]\nkind = \"file\"\npath = \"b.json\"\n";
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    has(&ps, "server.max_request_header_bytes", 2, "out of range");
    // Nor is the default of a section that is no table.
    let text = "server = 1\n[auth]\njwks_file = \"k.json\"\nmax_token_bytes = 65536\n\
                [store]\nkind = \"file\"\npath = \"b.json\"\n";
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    has(&ps, "server", 1, "must be a table");
}

#[test]
fn trusted_proxies_are_networks() {
    let good = format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n{MINIMAL}");
    let s = parse_str(&good, Path::new("/etc/nexus/edge.toml")).expect("valid");
    let want: Vec<IpNet> = ["10.0.0.0/8", "::1"]
        .iter()
        .map(|n| IpNet::parse(n).expect("net"))
        .collect();
    assert_eq!(s.server.trusted_proxies, want);
    let bad = format!("[server]\ntrusted_proxies = [\"10.0.0.1/8\", \"lb.internal\"]\n{MINIMAL}");
    let ps = problems(&bad);
    has(&ps, "server.trusted_proxies[0]", 2, "host bits");
    has(&ps, "server.trusted_proxies[1]", 2, "not an IP address");
}

#[test]
fn wrong_types_are_named() {
    let text = "[server]\nthreads = \"four\"\n[auth]\njwks_file = 7\n[store]\nkind = \"file\"\npath = \"b.json\"\n";
    let ps = problems(text);
    has(&ps, "server.threads", 2, "must be an integer");
    has(&ps, "auth.jwks_file", 4, "must be a string");
}

#[test]
fn syntax_error_has_a_line() {
    let ps = problems("[server]\nlisten = \n");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, Some(2), "{ps:?}");
}

#[test]
fn store_is_required_in_a_file() {
    let ps = problems("[auth]\njwks_file = \"j.json\"\n");
    assert!(ps.iter().any(|p| p.key == "store"), "{ps:?}");
    let ps = problems("[auth]\njwks_file = \"j.json\"\n[store]\nkind = \"file\"\n");
    assert!(ps.iter().any(|p| p.key == "store.path"), "{ps:?}");
}

#[test]
fn hmac_keys_come_from_env_or_file_and_must_be_long() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path();
    std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef\n").expect("write");
    std::fs::write(dir.join("short"), "short").expect("write");
    let text = format!(
        "{MINIMAL}\n[[auth.hmac_keys]]\nkid = \"a\"\nsecret_file = \"secret\"\n\n[[auth.hmac_keys]]\nkid = \"b\"\nsecret_file = \"short\"\n\n[[auth.hmac_keys]]\nkid = \"c\"\nsecret_env = \"NEXUS_TEST_SURELY_UNSET_VAR\"\n\n[[auth.hmac_keys]]\nkid = \"a\"\nsecret_file = \"secret\"\n\n[[auth.hmac_keys]]\nkid = \"d\"\nalg = \"HS512\"\nsecret_file = \"secret\"\n\n[[auth.hmac_keys]]\nkid = \"e\"\nalg = \"RS256\"\nsecret_file = \"secret\"\n\n[[auth.hmac_keys]]\nkid = \"f\"\nalg = 512\nsecret_file = \"secret\"\n\n[[auth.hmac_keys]]\nalg = 5\n"
    );
    let ps = match parse_str(&text, &dir.join("edge.toml")) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("{other:?}"),
    };
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.hmac_keys[1]" && p.message.contains("32 bytes")),
        "{ps:?}"
    );
    assert!(
        ps.iter().any(|p| p.key == "auth.hmac_keys[2].secret_env"
            && p.message.contains("NEXUS_TEST_SURELY_UNSET_VAR")),
        "{ps:?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.hmac_keys[3].kid" && p.message.contains("listed twice")),
        "{ps:?}"
    );
    // RFC 7518 §3.2: an HS512 secret is at least 64 bytes.
    assert!(
        ps.iter().any(|p| p.key == "auth.hmac_keys[4]"
            && p.message
                .contains("shorter than 64 bytes, the least HS512 allows")),
        "{ps:?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.hmac_keys[5].alg" && p.message.contains("\"RS256\"")),
        "{ps:?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.hmac_keys[6].alg" && p.message == "must be a string"),
        "{ps:?}"
    );
    // A mistyped field hides none of the table's other problems (the kid and the secret
    // missing), and is not said "required" or given a default.
    let of_7: Vec<(&str, &str)> = ps
        .iter()
        .filter(|p| p.key.starts_with("auth.hmac_keys[7]"))
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        of_7,
        [
            ("auth.hmac_keys[7].kid", "is required"),
            (
                "auth.hmac_keys[7]",
                "needs exactly one of secret_env or secret_file"
            ),
            ("auth.hmac_keys[7].alg", "must be a string"),
        ],
        "{ps:?}"
    );
    assert!(
        !format!("{ps:?}").contains("0123456789abcdef"),
        "secrets never appear in errors"
    );
    let ok = format!("{MINIMAL}\n[[auth.hmac_keys]]\nkid = \"a\"\nsecret_file = \"secret\"\n");
    let s = parse_str(&ok, &dir.join("edge.toml")).expect("valid");
    assert_eq!(s.auth.hmac_keys.len(), 1);
    assert_eq!(s.auth.hmac_keys[0].secret.len(), 32);
    assert_eq!(s.auth.hmac_keys[0].alg, HmacAlgorithm::HS256, "the default");
    let ok = format!(
        "{MINIMAL}\n[[auth.hmac_keys]]\nkid = \"a\"\nalg = \"HS384\"\nsecret_env = \"NEXUS_TEST_HS384\"\n"
    );
    std::env::set_var("NEXUS_TEST_HS384", "x".repeat(48));
    let s = parse_str(&ok, &dir.join("edge.toml")).expect("valid");
    assert_eq!(s.auth.hmac_keys[0].alg, HmacAlgorithm::HS384);
}

#[test]
fn display_lists_file_line_key() {
    let err = parse_str("[server]\nthreads = 0\n", Path::new("edge.toml")).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("edge.toml:2: server.threads:"), "{text}");
}

const AUTH: &str = "[auth]\njwks_file = \"keys/jwks.json\"\n";

fn store_of(text: &str) -> RedisStoreSettings {
    let full = format!("{AUTH}{text}");
    match parse_str(&full, Path::new("/etc/nexus/edge.toml")) {
        Ok(s) => match s.store {
            StoreSettings::Redis(r) => r,
            other => panic!("not a redis store: {other:?}"),
        },
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn redis_store_by_url_or_by_sentinel() {
    let r =
        store_of("[store]\nkind = \"redis\"\nurl = \"rediss://edge:pw@redis.internal:6380/1\"\n");
    assert_eq!(
        r.endpoint,
        RedisEndpointSettings::Url("rediss://edge:pw@redis.internal:6380/1".into())
    );
    assert!(
        !format!("{r:?}").contains("pw@"),
        "Debug must not show the password"
    );

    std::env::set_var("NEXUS_TEST_REDIS_PW", "primary-secret");
    let r = store_of(
        "[store]\nkind = \"redis\"\n\
         [store.sentinel]\nmaster_name = \"nexus\"\nnodes = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\n\
         tls = true\nusername = \"edge\"\npassword_env = \"NEXUS_TEST_REDIS_PW\"\ndb = 2\n",
    );
    let RedisEndpointSettings::Sentinel(s) = &r.endpoint else {
        panic!("{r:?}")
    };
    assert_eq!(s.master_name, "nexus");
    assert_eq!(s.nodes.len(), 2);
    assert!(s.tls);
    assert_eq!(s.password.as_deref(), Some("primary-secret"));
    assert_eq!(s.db, 2);
    assert!(!format!("{r:?}").contains("primary-secret"));
}

#[test]
fn redis_store_problems_name_the_key() {
    let ps = problems(&format!("{AUTH}[store]\nkind = \"redis\"\n"));
    assert!(
        ps.iter()
            .any(|p| p.key == "store.url" && p.message.contains("sentinel")),
        "{ps:#?}"
    );

    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"redis://x\"\n[store.sentinel]\nmaster_name = \"m\"\nnodes = [\"redis://a:1\"]\n"
    ));
    assert!(ps.iter().any(|p| p.message.contains("not both")), "{ps:#?}");
    // Both given, each is still checked: every problem at once, not one per fix.
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"http://x\"\n[store.sentinel]\nmaster_name = \"\"\nnodes = [\"redis://a:1\"]\npassword_env = \"NEXUS_TEST_UNSET_VAR\"\nmaster_nmae = \"m\"\n"
    ));
    has(&ps, "store.sentinel.master_nmae", 10, "unknown key");
    has(&ps, "store.url", 5, "not both");
    has(&ps, "store.url", 5, "rediss://");
    has(&ps, "store.sentinel.master_name", 7, "empty");
    has(&ps, "store.sentinel.password_env", 9, "not set");

    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"http://x\"\n"
    ));
    has(&ps, "store.url", 5, "rediss://");
    // A fragment: redis-rs reads `#insecure` as "do not check the server's certificate".
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"rediss://127.0.0.1:1/0#insecure\"\n"
    ));
    has(&ps, "store.url", 5, "#fragment");
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\nnodes = [\"rediss://a:1#insecure\"]\n"
    ));
    has(&ps, "store.sentinel.nodes[0]", 7, "#fragment");

    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"\"\nnodes = [\"redis+unix:///s\", \"redis://a:1\", \"rediss://b:1\"]\ntls = \"yes\"\npassword_env = \"NEXUS_TEST_UNSET_VAR\"\nmaster = \"m\"\n"
    ));
    has(&ps, "store.sentinel.master_name", 6, "empty");
    has(&ps, "store.sentinel.nodes[0]", 7, "over TCP");
    has(&ps, "store.sentinel.tls", 8, "true or false");
    has(
        &ps,
        "store.sentinel.password_env",
        9,
        "NEXUS_TEST_UNSET_VAR",
    );
    has(&ps, "store.sentinel.master", 10, "master_name");

    // A name no Sentinel knows, and a password variable set from a missing secret.
    std::env::set_var("NEXUS_TEST_EMPTY_SENTINEL_PW", "");
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \" m\\n\"\nnodes = [\"redis://a:1\"]\npassword_env = \"NEXUS_TEST_EMPTY_SENTINEL_PW\"\n"
    ));
    has(&ps, "store.sentinel.master_name", 6, "blanks at an end");
    has(&ps, "store.sentinel.password_env", 8, "is empty");

    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"redis://x\"\n[store.tls]\nca_file = \"/nonexistent/ca.pem\"\nclient_cert_file = \"/etc/hostname\"\n"
    ));
    assert!(
        ps.iter()
            .any(|p| p.key == "store.tls.ca_file" && p.message.contains("cannot read")),
        "{ps:#?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "store.tls" && p.message.contains("go together")),
        "{ps:#?}"
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "store.tls" && p.message.contains("no connection uses TLS")),
        "{ps:#?}"
    );
}

#[test]
fn example_redis_block_uses_real_keys() {
    // The commented Redis block in the example, uncommented: every documented key must parse.
    let example = include_str!("../../deploy/nexus-edge.example.toml");
    let start = example
        .find("# [store]\n# kind = \"redis\"")
        .expect("redis block");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .filter(|l| !l.starts_with('#') && !l.starts_with("url ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for f in ["redis-ca.pem", "edge-client.pem"] {
        std::fs::write(dir.path().join(f), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    std::fs::write(
        dir.path().join("edge-client-key.pem"),
        "-----BEGIN PRIVATE KEY-----\n",
    )
    .unwrap();
    std::env::set_var("NEXUS_EDGE_REDIS_PASSWORD", "example");
    // The example keeps TLS off; [store.tls] only applies with it on.
    let text = format!("{AUTH}{}", block.replace("tls = false", "tls = true"));
    let s =
        parse_str(&text, &dir.path().join("edge.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let StoreSettings::Redis(r) = s.store else {
        panic!("not redis")
    };
    assert!(matches!(r.endpoint, RedisEndpointSettings::Sentinel(_)));
    assert!(r.tls.client_cert.is_some());
}

#[test]
fn an_upstream_ca_bundle_must_hold_a_certificate() {
    // Pingora's connector panics at start on an unreadable bundle: `check` must say so first.
    let dir = tempfile::tempdir().expect("dir");
    let good = dir.path().join("ca.pem");
    std::fs::write(
        &good,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let config = |path: &Path| format!("{MINIMAL}[upstream]\nca_file = \"{}\"\n", path.display());
    for (path, needle) in [
        (dir.path().join("missing.pem"), "cannot read"),
        (dir.path().to_path_buf(), "cannot read"),
        (garbage, "holds no PEM certificate"),
    ] {
        let ps = problems(&config(&path));
        assert!(
            ps.iter()
                .any(|p| p.key == "upstream.ca_file" && p.message.contains(needle)),
            "{}: {ps:#?}",
            path.display()
        );
    }
    let s = parse_str(&config(&good), Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.upstream.ca_file, Some(good));
}

#[test]
fn redis_tls_files_are_named_by_their_own_key() {
    // A client key that was no key was reported at `store.url`, as redis-rs's "Unable to
    // extract private key from PEM file", and a client certificate that was none not at all.
    let dir = tempfile::tempdir().expect("dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let cert = file(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let key = file(
        "key.pem",
        "-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----\n",
    );
    let garbage = file("garbage.pem", "not PEM\n");
    let encrypted = file(
        "enc.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let config = |c: &str, k: &str| {
        format!(
            "{AUTH}[store]\nkind = \"redis\"\nurl = \"rediss://r:6379\"\n[store.tls]\n\
             client_cert_file = \"{c}\"\nclient_key_file = \"{k}\"\n"
        )
    };
    let ps = problems(&config(&garbage, &garbage));
    names(
        &ps,
        "store.tls.client_cert_file",
        "holds no PEM certificate",
    );
    names(
        &ps,
        "store.tls.client_key_file",
        "holds no unencrypted PEM private key",
    );
    assert!(!ps.iter().any(|p| p.key == "store.url"), "{ps:#?}");
    // A certificate is no key, and a key that needs a passphrase cannot be read.
    let ps = problems(&config(&cert, &cert));
    names(&ps, "store.tls.client_key_file", "private key");
    let ps = problems(&config(&cert, &encrypted));
    names(&ps, "store.tls.client_key_file", "unencrypted");
    let s = parse_str(&config(&cert, &key), &dir.path().join("edge.toml")).expect("valid");
    let StoreSettings::Redis(r) = s.store else {
        panic!("not redis")
    };
    assert!(r.tls.client_cert.is_some());
}

#[test]
fn redis_urls_that_do_not_parse_are_named_with_their_place() {
    // A Sentinel that was no URL was found only at `check`'s client build, as
    // "<unparsable redis url>" under `store.sentinel`, after every other problem was mended.
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\n\
         nodes = [\"redis://10.0.0.1:26379\", \"redis://[zz:26379\", \"redis://:pw@/\", \"http://x\"]\n"
    ));
    names(&ps, "store.sentinel.nodes[1]", "is not a valid URL");
    names(&ps, "store.sentinel.nodes[2]", "host");
    names(
        &ps,
        "store.sentinel.nodes[3]",
        "is not a redis:// or rediss:// URL",
    );
    assert!(!ps.iter().any(|p| p.message.contains("pw")), "{ps:#?}");
    // A password with an unencoded `/`, `?` or `@` leaves pieces of itself in the path, the
    // host or the query: refused, and never quoted (they were, here or once Redis was used).
    for (url, says) in [
        ("redis://u:secret@[::1", "is not a valid URL"),
        ("redis://u:secret@:6379/0", "host"),
        ("redis:///0", "names no host"),
        (
            "redis://edge:9/Zk3+secret=@10.0.0.1:6379/0",
            "holds an @ past its host",
        ),
        (
            "redis://edge:1234?secret@10.0.0.1:6379/0",
            "holds an @ past its host",
        ),
        (
            "redis://edge:a@Host?secret@10.0.0.1/0",
            "holds an @ past its host",
        ),
    ] {
        let ps = problems(&format!(
            "{AUTH}[store]\nkind = \"redis\"\nurl = \"{url}\"\n"
        ));
        names(&ps, "store.url", says);
        names(&ps, "store.url", "must be percent-encoded");
        assert!(
            !ps.iter().any(|p| p.message.contains("secret")),
            "{url}: {ps:#?}"
        );
    }
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\n\
         nodes = [\"redis://edge:26379/secret@10.0.0.1:26379\", \"redis://e:1?secret@10.0.0.2\"]\n"
    ));
    names(&ps, "store.sentinel.nodes[0]", "holds an @ past its host");
    names(&ps, "store.sentinel.nodes[1]", "holds an @ past its host");
    assert!(!ps.iter().any(|p| p.message.contains("secret")), "{ps:#?}");
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\n\
         nodes = [\"redis://:secret@s1:26379\", \"redis://:secret@s1:26379\"]\n"
    ));
    names(&ps, "store.sentinel.nodes[1]", "is listed twice");
    assert!(!ps.iter().any(|p| p.message.contains("secret")), "{ps:#?}");
    // A database on a Sentinel's URL means nothing, but was always taken.
    let ok = parse_str(
        &format!(
            "{AUTH}[store]\nkind = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\n\
             nodes = [\"redis://s1:26379/0\"]\n"
        ),
        Path::new("/etc/nexus/edge.toml"),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn a_month_meant_as_a_minute_is_pointed_out() {
    let ps = problems(&format!("{MINIMAL}poll_interval = \"1M\"\n"));
    names(&ps, "store.poll_interval", "M is months, m minutes");
    let ps = problems(&format!("{MINIMAL}poll_interval = \"2h\"\n"));
    names(&ps, "store.poll_interval", "out of range (10ms to 1h)");
    assert!(!ps.iter().any(|p| p.message.contains("months")), "{ps:#?}");
}

#[test]
fn the_key_file_is_polled_as_often_as_configured() {
    let with = |v: &str| {
        MINIMAL.replace(
            "jwks_file = \"keys/jwks.json\"\n",
            &format!("jwks_file = \"keys/jwks.json\"\njwks_poll_interval = {v}\n"),
        )
    };
    let s = parse_str(&with("\"250ms\""), Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.auth.jwks_poll_interval, Duration::from_millis(250));
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.auth.jwks_poll_interval, Duration::from_secs(1));
    names(
        &problems(&with("\"2h\"")),
        "auth.jwks_poll_interval",
        "out of range (10ms to 1h)",
    );
    names(&problems(&with("5")), "auth.jwks_poll_interval", "");
}

#[test]
fn each_mode_refuses_the_paths_it_lists_none_by_default() {
    let at = Path::new("/etc/nexus/edge.toml");
    let s = parse_str(MINIMAL, at).expect("valid");
    assert_eq!(s.tenancy.refused_paths, ModePaths::default());
    let with = |tenancy: &str| format!("[tenancy]\n{tenancy}{MINIMAL}");
    // Kept lowercase: matched without case.
    let s = parse_str(
        &with(
            "isolated_refused_paths = [\"/API/Integrations/\", \"/ci/\"]\n\
             cooperative_refused_paths = [\"/labs/\"]\n",
        ),
        at,
    )
    .expect("valid");
    assert_eq!(
        s.tenancy.refused_paths.isolated,
        ["/api/integrations/", "/ci/"]
    );
    assert_eq!(s.tenancy.refused_paths.cooperative, ["/labs/"]);

    names(
        &problems(&with("isolated_refused_paths = [\"/\"]\n")),
        "tenancy.isolated_refused_paths",
        "every path",
    );
    // A recovery path taken in, in any case.
    for refused in ["/admin", "/Admin/Recovery"] {
        names(
            &problems(&with(&format!(
                "recovery_paths = [\"/admin/recovery\"]\ncooperative_refused_paths = [{refused:?}]\n"
            ))),
            "tenancy.cooperative_refused_paths",
            "takes in the recovery path \"/admin/recovery\"",
        );
    }
    names(
        &problems(&with("isolated_refused_paths = [\"api\"]\n")),
        "tenancy.isolated_refused_paths[0]",
        "must start with '/'",
    );
}

#[test]
fn a_key_set_url_is_read_with_its_settings_and_their_bounds() {
    let with = |lines: &str| {
        MINIMAL.replace(
            "jwks_file = \"keys/jwks.json\"\n",
            &format!("jwks_url = \"https://id.example.com/jwks\"\n{lines}"),
        )
    };
    let at = Path::new("/etc/nexus/edge.toml");
    let s = parse_str(&with(""), at).expect("valid");
    let JwksSource::Url(r) = &s.auth.jwks else {
        panic!("{:?}", s.auth.jwks)
    };
    assert_eq!(r.url.as_str(), "https://id.example.com/jwks");
    assert_eq!(r.refresh_interval, Duration::from_secs(300));
    assert_eq!(r.min_refresh_interval, Duration::from_secs(30));
    assert_eq!(r.timeout, Duration::from_secs(5));
    assert_eq!(r.max_staleness, Duration::from_secs(3600));
    assert_eq!((r.ca_file.as_ref(), r.cache_file.as_ref()), (None, None));
    let s = parse_str(
        &with(
            "jwks_ca_file = \"ca.pem\"\njwks_cache_file = \"/var/lib/nexus/jwks.json\"\n\
             jwks_refresh_interval = \"2h\"\njwks_min_refresh_interval = \"1s\"\n\
             jwks_fetch_timeout = \"2s\"\n",
        ),
        at,
    )
    .expect("valid");
    let JwksSource::Url(r) = &s.auth.jwks else {
        panic!("{:?}", s.auth.jwks)
    };
    assert_eq!(r.ca_file.as_deref(), Some(Path::new("/etc/nexus/ca.pem")));
    assert_eq!(
        r.cache_file.as_deref(),
        Some(Path::new("/var/lib/nexus/jwks.json"))
    );
    assert_eq!(r.refresh_interval, Duration::from_secs(7200));
    assert_eq!(r.min_refresh_interval, Duration::from_secs(1));
    assert_eq!(r.timeout, Duration::from_secs(2));
    // Three refreshes by default when that is more than an hour.
    assert_eq!(r.max_staleness, Duration::from_secs(3 * 7200));

    names(
        &problems(&with("jwks_min_refresh_interval = \"10m\"\n")),
        "auth.jwks_min_refresh_interval",
        "not be longer than auth.jwks_refresh_interval",
    );
    names(
        &problems(&with("jwks_max_staleness = \"5m\"\n")),
        "auth.jwks_max_staleness",
        "must be longer than auth.jwks_refresh_interval",
    );
    names(
        &problems(&with("jwks_poll_interval = \"1s\"\n")),
        "auth.jwks_poll_interval",
        "applies to auth.jwks_file",
    );
    names(
        &problems(&with("jwks_fetch_timeout = \"5m\"\n")),
        "auth.jwks_fetch_timeout",
        "out of range",
    );
    let plain = MINIMAL.replace(
        "jwks_file = \"keys/jwks.json\"\n",
        "jwks_url = \"http://id.example.com/jwks\"\n",
    );
    names(&problems(&plain), "auth.jwks_url", "plain http");
    let both = MINIMAL.replace(
        "jwks_file = \"keys/jwks.json\"\n",
        "jwks_file = \"keys/jwks.json\"\njwks_url = \"https://id.example.com/jwks\"\n",
    );
    names(&problems(&both), "auth.jwks_url", "keep one of the two");
    let both_timed = both.replace("[auth]\n", "[auth]\njwks_refresh_interval = \"1m\"\n");
    assert_eq!(
        problems(&both_timed).len(),
        1,
        "{:#?}",
        problems(&both_timed)
    );
    let beside_file = MINIMAL.replace(
        "jwks_file = \"keys/jwks.json\"\n",
        "jwks_file = \"keys/jwks.json\"\njwks_cache_file = \"c.json\"\n",
    );
    names(
        &problems(&beside_file),
        "auth.jwks_cache_file",
        "not to auth.jwks_file",
    );
    let neither = MINIMAL.replace("jwks_file = \"keys/jwks.json\"\n", "");
    names(&problems(&neither), "auth.jwks_file", "or auth.jwks_url");
    // The cache file is the router's own: not the bindings file, nor their audit log.
    for cache in ["bindings.json", "bindings.json.audit.jsonl", "edge.toml"] {
        names(
            &problems(&with(&format!("jwks_cache_file = {cache:?}\n"))),
            "auth.jwks_cache_file",
            "every fetch would write the key set over it",
        );
    }
    parse_str(&with("jwks_cache_file = \"jwks-cache.json\"\n"), at).expect("its own file");
}

#[test]
fn the_past_due_notice_cannot_be_a_framing_or_router_header() {
    for name in [
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-authorization",
        "x-request-id",
        "cache-control",
        "x-tenant-id",
        "access-control-allow-origin",
    ] {
        let ps = problems(&format!(
            "{MINIMAL}[tenancy]\npast_due_header = \"{name}\"\n"
        ));
        has(&ps, "tenancy.past_due_header", 9, "frames the response");
    }
    let text = format!("{MINIMAL}[tenancy]\npast_due_header = \"x-billing-state\"\n");
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.tenancy.past_due_header, "x-billing-state");
}

#[test]
fn extension_methods_with_bodies_are_extension_method_names() {
    for (bad, why) in [
        ("PROP FIND", "not a method name"),
        ("", "not a method name"),
        ("POST", "standard method"),
        ("patch", "standard method"),
        ("Trace", "standard method"),
    ] {
        let ps = problems(&format!(
            "{MINIMAL}[upstream]\nextension_methods_with_bodies = [\"{bad}\"]\n"
        ));
        has(&ps, "upstream.extension_methods_with_bodies[0]", 9, why);
    }
    let text = format!(
        "{MINIMAL}[upstream]\nextension_methods_with_bodies = [\"PROPFIND\", \"REPORT\"]\n"
    );
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        s.upstream.extension_methods_with_bodies,
        ["PROPFIND", "REPORT"]
    );
}

#[test]
fn methods_kept_alive_are_among_those_with_bodies() {
    let ps = problems(&format!(
        "{MINIMAL}[upstream]\nextension_methods_with_bodies = [\"PROPFIND\"]\n\
         extension_methods_kept_alive = [\"PROPFIND\", \"REPORT\", \"GET\"]\n"
    ));
    assert_eq!(ps.len(), 2, "{ps:#?}");
    has(
        &ps,
        "upstream.extension_methods_kept_alive[1]",
        10,
        "not in extension_methods_with_bodies",
    );
    has(
        &ps,
        "upstream.extension_methods_kept_alive[2]",
        10,
        "standard method",
    );
    let text = format!(
        "{MINIMAL}[upstream]\nextension_methods_with_bodies = [\"PROPFIND\", \"REPORT\"]\n\
         extension_methods_kept_alive = [\"PROPFIND\"]\n"
    );
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.upstream.extension_methods_kept_alive, ["PROPFIND"]);
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert!(s.upstream.extension_methods_kept_alive.is_empty());
}

#[test]
fn trusted_origins_are_origins_as_browsers_send_them() {
    for bad in [
        "console.nexus.example",
        "https://console.nexus.example/",
        "https://Console.nexus.example",
        "https://console.nexus.example:443",
        "http://console.nexus.example:80",
        "https://console.nexus.example:0",
        "https://console.nexus.example:080",
        "https://console.nexus.example:99999",
        "https://user@console.nexus.example",
        "wss://console.nexus.example",
        "null",
    ] {
        let ps = problems(&format!(
            "{MINIMAL}[tenancy]\ntrusted_origins = [\"{bad}\"]\n"
        ));
        has(
            &ps,
            "tenancy.trusted_origins[0]",
            9,
            "not an origin as browsers send it",
        );
    }
    let ps = problems(&format!(
        "{MINIMAL}[tenancy]\ntrusted_origins = [\"https://a.example\", \"https://a.example\"]\n"
    ));
    has(&ps, "tenancy.trusted_origins[1]", 9, "listed twice");
    let text = format!(
        "{MINIMAL}[tenancy]\ntrusted_origins = [\"https://console.nexus.example\", \"http://localhost.example:8080\"]\n"
    );
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        s.tenancy.trusted_origins,
        [
            "https://console.nexus.example",
            "http://localhost.example:8080"
        ]
    );
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert!(s.tenancy.trusted_origins.is_empty());
}

#[test]
fn listeners_ips_and_messages_a_reader_can_act_on() {
    let ps = problems(&format!(
        "{MINIMAL}[server]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:8080\"\nthreads = 99999999999999999999\n\
         [tenancy]\nbase_domains = [\"127.0.0.1\"]\n[store.x]\n"
    ));
    has(&ps, "server.admin_listen", 10, "already takes this port");
    has(&ps, "server.threads", 11, "out of range (1..=1024)");
    has(&ps, "tenancy.base_domains[0]", 13, "is an IP address");
    let lines: Vec<usize> = ps.iter().map(|p| p.line.unwrap_or(usize::MAX)).collect();
    assert!(lines.is_sorted(), "in file order: {ps:#?}");
    let unknown = ps
        .iter()
        .find(|p| p.message.contains("expected one of"))
        .expect("an unknown key");
    assert_eq!(
        unknown.message.matches("kind").count(),
        1,
        "each name once: {unknown:?}"
    );

    for (listen, admin) in [
        ("127.0.0.1:8080", "127.0.0.2:8080"),
        ("127.0.0.1:0", "127.0.0.2:0"),
        ("127.0.0.1:0", "127.0.0.1:9090"),
    ] {
        let text =
            format!("{MINIMAL}[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("separate listeners");
    }
    // `serve` could not tell these two apart: `check` says so.
    let ps = problems(&format!(
        "{MINIMAL}[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n"
    ));
    has(&ps, "server.admin_listen", 10, "give one of them a port");
    // Left to its default (127.0.0.1:9090), admin_listen clashes at listen's line.
    let ps = problems(&format!(
        "{MINIMAL}[server]\nthreads = 2\nlisten = \"0.0.0.0:9090\"\n"
    ));
    has(&ps, "server.admin_listen", 10, "already takes this port");
}

#[test]
fn key_line_finds_a_key_or_its_section() {
    let text = format!("{MINIMAL}[upstream]\nconnect_timeout = \"1s\"\n");
    assert_eq!(key_line(&text, "auth.jwks_file"), Some(3));
    assert_eq!(key_line(&text, "store.path"), Some(7));
    // Left to its default: the section's header; no section: no line.
    assert_eq!(key_line(&text, "upstream.ca_file"), Some(8));
    assert_eq!(key_line(&text, "log.filter"), None);
    assert_eq!(key_line("not = [toml", "auth.jwks_file"), None);
    // A key given twice elsewhere takes no line from the others (the check reads on past it).
    let twice = "[server]\nthreads = 1\nthreads = 2\n[auth]\njwks_file = \"x\"\n";
    assert_eq!(key_line(twice, "auth.jwks_file"), Some(5));
}

#[test]
fn a_file_that_is_not_utf8_is_named_with_its_line() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, b"[server]\nthreads = 2\n# caf\xe9\n").expect("write");
    match load_file(&path) {
        Err(ConfigError::Invalid { problems, .. }) => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].line, Some(3), "{problems:?}");
            assert!(problems[0].message.contains("not UTF-8"), "{problems:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_redis_replica_s_grace_leaves_time_for_its_last_steps() {
    // Its goodbye heartbeat and last snapshot are written in the grace's last 2 s: a `0s`
    // grace cut them, and a restart from that snapshot served an older table. A rule for
    // serving only: the admin commands read the same file.
    let redis = |grace: &str| {
        let text = format!(
            "[server]\nshutdown_grace = \"{grace}\"\n{AUTH}[store]\nkind = \"redis\"\n\
             url = \"redis://127.0.0.1:6379\"\n"
        );
        parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("parses")
    };
    for grace in ["0s", "1s"] {
        let s = redis(grace);
        let (key, why) = serving_problem(&s.server, &s.store).expect("too short");
        assert_eq!(key, "server.shutdown_grace");
        assert!(
            why.contains("too short to serve from the Redis store"),
            "{why}"
        );
    }
    let s = redis("2s");
    assert_eq!(serving_problem(&s.server, &s.store), None);
    // A bindings file has no last steps.
    let file = "[server]\nshutdown_grace = \"0s\"\n[auth]\njwks_file = \"k.json\"\n[store]\nkind = \"file\"\npath = \"b.json\"\n";
    let s = parse_str(file, Path::new("/etc/nexus/edge.toml")).expect("parses");
    assert_eq!(serving_problem(&s.server, &s.store), None);
}

#[test]
fn values_the_router_could_only_misread_are_refused() {
    // Whole seconds where the consumer counts seconds: "999ms" of grace would be 0 s.
    let ps = problems(
        "[server]\nshutdown_grace = \"999ms\"\n[auth]\njwks_file = \"k.json\"\nleeway = \"500ms\"\n[store]\nkind = \"file\"\npath = \"b.json\"\n",
    );
    has(&ps, "server.shutdown_grace", 2, "not whole seconds");
    has(&ps, "auth.leeway", 5, "not whole seconds");
    // Retry-After is whole seconds: "1999ms" was sent as 1.
    let ps = problems(&format!(
        "{MINIMAL}\n[tenancy]\nprovisioning_retry_after = \"1999ms\"\n"
    ));
    assert!(
        ps.iter()
            .any(|p| p.key == "tenancy.provisioning_retry_after"
                && p.message.contains("not whole seconds")),
        "{ps:#?}"
    );
    // A prefix with a byte no request path holds raw could never match.
    let ps = problems(&format!(
        "{MINIMAL}\n[tenancy]\nrecovery_paths = [\"/billing{{x}}\", \"/a/..;x/b\"]\napi_prefix = \"/api|v1/\"\n"
    ));
    assert_eq!(
        ps.iter()
            .filter(|p| p.key.starts_with("tenancy.recovery_paths") || p.key == "tenancy.api_prefix")
            .count(),
        3,
        "{ps:#?}"
    );
    // Next.js's data routes serve any page's data: never public or a recovery path.
    let ps = problems(&format!(
        "{MINIMAL}\n[tenancy]\npublic_paths = [\"/_next/\", \"/_next/static/\", \"/_next/data/b1\", \"/_nextx\", \"/app/_next\", \"/_next/database\"]\nrecovery_paths = [\"/_next\"]\n"
    ));
    has(&ps, "tenancy.public_paths[0]", 10, "Next.js's data routes");
    has(&ps, "tenancy.public_paths[2]", 10, "Next.js's data routes");
    // Under a `basePath`.
    has(&ps, "tenancy.public_paths[4]", 10, "Next.js's data routes");
    has(&ps, "tenancy.recovery_paths[0]", 11, "/_next/static/");
    assert_eq!(ps.len(), 4, "{ps:#?}");
    // A key prefix Redis would read as a pattern.
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"redis://x\"\nkey_prefix = \"edge[eu]\"\n"
    ));
    has(&ps, "store.key_prefix", 6, "wildcard");
    let ok = parse_str(
        &format!("[server]\nshutdown_grace = \"2s\"\n{MINIMAL}\n[tenancy]\nrecovery_paths = [\"/billing\", \"/admin/re-covery;v=1\"]\n"),
        Path::new("/etc/nexus/edge.toml"),
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn problems_without_a_value_still_have_a_line_and_no_spurious_unknown_keys() {
    // A [store] without kind: said once, at the section; its keys are not called unknown.
    let ps = problems("[auth]\njwks_file = \"k.json\"\n[store]\npath = \"b.json\"\n");
    assert_eq!(ps.len(), 1, "{ps:#?}");
    has(&ps, "store.kind", 3, "required");
    // A mistyped kind is still named, as the likely reason kind is missing.
    let ps = problems("[auth]\njwks_file = \"k.json\"\n[store]\nknid = \"file\"\n");
    has(&ps, "store.knid", 4, "did you mean `kind`");
    // url and [store.sentinel] both: one problem, at the url.
    let ps = problems(&format!(
        "{AUTH}[store]\nkind = \"redis\"\nurl = \"redis://x\"\n[store.sentinel]\nmaster_name = \"m\"\nnodes = [\"redis://a:1\"]\n"
    ));
    assert_eq!(ps.len(), 1, "{ps:#?}");
    has(&ps, "store.url", 5, "not both");
    // Rules between keys are said at a key's line.
    let ps = problems(
        &format!("{MINIMAL}\n[auth]\ntenant_claim = \"t\"\norg_claim = \"t\"\n")
            .replacen("[auth]\njwks_file = \"keys/jwks.json\"\n", "", 1)
            .replacen("[auth]\n", "[auth]\njwks_file = \"k.json\"\n", 1),
    );
    assert!(
        ps.iter()
            .any(|p| p.key == "auth.org_claim" && p.line.is_some()),
        "{ps:#?}"
    );
    let ps = problems(&format!("{MINIMAL}\n[tenancy]\nbase_domains = []\n"));
    assert!(
        ps.iter()
            .any(|p| p.key == "tenancy.base_domains" && p.line == Some(10)),
        "{ps:#?}"
    );
}

#[test]
fn a_section_that_is_no_table_yields_no_settings() {
    // `check` runs its file checks on the sections that parsed: a section that is no table
    // must not stand in as defaults for the one written.
    for name in ["server", "tenancy", "upstream", "log"] {
        let text = format!("{name} = \"debug\"\n{MINIMAL}");
        let (sections, problems) = parse_sections(&text, Path::new("/etc/nexus/edge.toml"));
        assert!(
            problems
                .iter()
                .any(|p| p.key == name && p.message.contains("must be a table")),
            "{name}: {problems:#?}"
        );
        let parsed = match name {
            "server" => sections.server.is_some(),
            "tenancy" => sections.tenancy.is_some(),
            "upstream" => sections.upstream.is_some(),
            _ => sections.log.is_some(),
        };
        assert!(!parsed, "{name} parsed as defaults");
        assert!(
            sections.auth.is_some() && sections.store.is_some(),
            "{name}"
        );
    }
}

#[test]
fn a_duplicate_key_or_table_is_named() {
    let ps = problems(&format!("{MINIMAL}\n[server]\nthreads = 2\nthreads = 3\n"));
    assert!(
        ps.iter()
            .any(|p| p.key == "server.threads" && p.message.contains("duplicate key")),
        "{ps:#?}"
    );
    let ps = problems(&format!("{MINIMAL}\n[auth]\nleeway = \"1s\"\n"));
    assert!(
        ps.iter()
            .any(|p| p.key == "auth" && p.message.contains("[auth] twice")),
        "{ps:#?}"
    );
    let ps = problems("a = 1\na = 2\n");
    assert!(ps.iter().any(|p| p.key == "a"), "{ps:#?}");
    // Named from the parser's own reading, not the text's lines: a header inside a string is
    // no header, and a key is in the inline table or dotted key it is written in.
    for quotes in ["'''", "\"\"\""] {
        let text = format!(
            "[log]\nfilter = {quotes}\n[server]\n{quotes}\nformat = \"text\"\nformat = \"json\"\n"
        );
        has(&problems(&text), "log.format", 6, "duplicate key");
    }
    let ps = problems("server = { threads = 1, threads = 2 }\n");
    has(&ps, "server.threads", 1, "duplicate key");
    let ps = problems("[server]\na.b = 1\na.b = 2\n");
    has(&ps, "server.a.b", 3, "duplicate key");
    let ps = problems(
        "[auth]\n[[auth.hmac_keys]]\nkid = \"a\"\n[[auth.hmac_keys]]\nkid = \"b\"\nkid = \"c\"\n",
    );
    has(&ps, "auth.hmac_keys[1].kid", 6, "duplicate key");
    let ps = problems("[auth]\nhmac_keys = [{ kid = \"a\" }, { kid = \"b\", kid = \"c\" }]\n");
    has(&ps, "auth.hmac_keys[1].kid", 2, "duplicate key");
    let ps = problems("[[a]]\n[[a.b]]\n[[a]]\n[[a.b]]\n[[a.b]]\nc = 1\nc = 2\n");
    has(&ps, "a[1].b[1].c", 7, "duplicate key");
    let ps = problems("[\"log\"]\nformat = \"text\"\n[ log ]\n");
    has(&ps, "log", 3, "[log] twice");
    // A header naming a key set to a value is no table declared twice.
    let ps = problems(&format!(
        "{MINIMAL}[server]\nthreads = 1\n[server.threads]\n"
    ));
    has(&ps, "server.threads", 10, "names a key already set above");
    assert!(!ps.iter().any(|p| p.message.contains("twice")), "{ps:#?}");
}

#[test]
fn every_duplicate_of_many_is_named_at_its_line() {
    // Each was found by a pass of its own over the whole file: 20,000 repeated keys took
    // minutes to report.
    let mut text = format!("{MINIMAL}[server]\n");
    for _ in 0..2_000 {
        text.push_str("threads = 1\n");
    }
    let ps = problems(&text);
    let duplicates: Vec<usize> = ps
        .iter()
        .filter(|p| p.key == "server.threads" && p.message.contains("duplicate key"))
        .filter_map(|p| p.line)
        .collect();
    assert_eq!(duplicates, (10..2_009).collect::<Vec<_>>());
}

#[test]
fn names_the_file_and_settings_way_would_never_work_are_refused() {
    let ps = problems(&format!(
        "{}[auth]\njwks_file = \"keys/jwks.json\"\ntenant_claim = \" tenant\"\n\
         org_claim = \"o\\u0000rg\"\nissuers = [\"a\"]\n[auth.issuer_keys]\na = [\"k\", \"k\"]\n\
         [[auth.hmac_keys]]\nkid = \"h\"\nsecret_file = \"\"\n\
         [[auth.hmac_keys]]\nkid = \"i\"\nsecret_file = \"secrets/missing\"\n\
         [upstream]\nidle_connections = 18446744073709551615\n",
        "[store]\nkind = \"file\"\npath = \"bindings.json\"\n"
    ));
    has(&ps, "auth.tenant_claim", 6, "has blanks at an end");
    has(&ps, "auth.org_claim", 7, "control characters");
    has(&ps, "auth.issuer_keys.\"a\"", 10, "lists key \"k\" twice");
    has(
        &ps,
        "auth.hmac_keys[0].secret_file",
        13,
        "must not be empty",
    );
    // Resolved against the config's folder, as it is read.
    has(
        &ps,
        "auth.hmac_keys[1].secret_file",
        16,
        "cannot read /etc/nexus/secrets/missing",
    );
    has(
        &ps,
        "upstream.idle_connections",
        18,
        "18446744073709551615 is out of range",
    );
    // A clash of the two claims names the one the file sets.
    let ps = problems(
        "[store]\nkind = \"file\"\npath = \"b.json\"\n[auth]\njwks_file = \"j\"\n\
         tenant_claim = \"org_id\"\n",
    );
    has(
        &ps,
        "auth.tenant_claim",
        6,
        "must differ from auth.org_claim",
    );
}

#[test]
fn a_duplicate_key_hides_no_other_problem_and_a_syntax_error_is_all_said() {
    // The rest of the file was checked only once the duplicate was mended: a second run.
    let ps = problems(&format!(
        "{MINIMAL}\n[server]\nthreads = 2\nthreads = 3\nkeepalive_timeout = \"x\"\n"
    ));
    has(&ps, "server.threads", 11, "duplicate key");
    has(&ps, "server.keepalive_timeout", 12, "is not a duration");
    // Past a syntax error the reading is a guess: only the syntax is said, every error of it.
    let ps = problems("[server]\nthreads = \nkeepalive_timeout = \"x\"\n[auth\n");
    assert!(ps.iter().all(|p| p.key == "(syntax)"), "{ps:#?}");
    assert_eq!(ps.len(), 2, "{ps:#?}");
}

#[test]
fn an_hmac_key_problem_is_said_at_the_line_of_its_field() {
    let text = format!(
        "{MINIMAL}[[auth.hmac_keys]]\nkid = \"a\"\n\nalg = \"HS999\"\nsecret_env = \"NEXUS_TEST_SURELY_UNSET_VAR\"\n\
         [[auth.hmac_keys]]\nkid = \"b\"\nsecret_env = \"NEXUS_TEST_SURELY_UNSET_VAR\"\n\
         [[auth.hmac_keys]]\nkid = \"b\"\nsecret_file = \"/nonexistent/secret\"\n\
         [[auth.hmac_keys]]\nkid = \"c\"\nsecret_file = \"/nonexistent/secret\"\n"
    );
    let ps = problems(&text);
    has(&ps, "auth.hmac_keys[0].alg", 11, "is not one of");
    has(&ps, "auth.hmac_keys[1].secret_env", 15, "is not set");
    has(&ps, "auth.hmac_keys[2].kid", 17, "listed twice");
    has(&ps, "auth.hmac_keys[3].secret_file", 21, "cannot read");
    // Every problem of one table, not the first only: table 0's alg and its unset variable.
    has(&ps, "auth.hmac_keys[0].secret_env", 12, "is not set");
}

#[test]
fn a_secret_pasted_where_a_variable_name_goes_is_not_repeated() {
    // `secret_env` (and a Sentinel's `password_env`) name a variable; a secret pasted there by
    // mistake would otherwise be printed by `check` and logged by `serve`.
    let secret = "hunter2-s3cret/with+base64==";
    let text = format!("{MINIMAL}[[auth.hmac_keys]]\nkid = \"a\"\nsecret_env = \"{secret}\"\n");
    let ps = problems(&text);
    has(
        &ps,
        "auth.hmac_keys[0].secret_env",
        10,
        "not the name of an environment variable",
    );
    assert!(ps.iter().all(|p| !p.message.contains(secret)), "{ps:#?}");
    assert!(!format!("{ps:?}").contains("hunter2"), "{ps:#?}");
}

#[test]
fn the_tenant_and_org_claims_are_not_date_claims() {
    // The router reads exp, nbf and iat as NumericDates (numbers), and the tenant and org
    // claims must be strings: with one of these names every token would be refused.
    for claim in ["exp", "nbf", "iat"] {
        for key in ["tenant_claim", "org_claim"] {
            let text = MINIMAL.replacen(
                "jwks_file = \"keys/jwks.json\"\n",
                &format!("jwks_file = \"keys/jwks.json\"\n{key} = \"{claim}\"\n"),
                1,
            );
            has(
                &problems(&text),
                &format!("auth.{key}"),
                4,
                &format!("{claim:?} is a date claim"),
            );
        }
    }
    let text = MINIMAL.replacen(
        "jwks_file = \"keys/jwks.json\"\n",
        "jwks_file = \"keys/jwks.json\"\ntenant_claim = \"tid\"\norg_claim = \"expiry\"\n",
        1,
    );
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        (&*s.auth.tenant_claim, &*s.auth.org_claim),
        ("tid", "expiry")
    );
}

#[test]
fn listeners_clash_as_linux_binds_them() {
    // What Linux refuses (checked by binding, SO_REUSEADDR on both as std sets it, IPV6_V6ONLY
    // off as it is by default): an IPv4-mapped IPv6 address is its IPv4 address, 0.0.0.0 takes
    // every IPv4 address, `::` every address of both families.
    for (listen, admin) in [
        ("127.0.0.1:18190", "[::ffff:127.0.0.1]:18190"),
        ("[::ffff:127.0.0.1]:18190", "127.0.0.1:18190"),
        ("127.0.0.1:18190", "[::ffff:0.0.0.0]:18190"),
        ("[::ffff:0.0.0.0]:18190", "127.0.0.2:18190"),
        ("0.0.0.0:18190", "[::ffff:0.0.0.0]:18190"),
        ("0.0.0.0:18190", "127.0.0.1:18190"),
        ("[::]:18190", "127.0.0.1:18190"),
        ("[::]:18190", "[::1]:18190"),
        ("[::ffff:127.0.0.1]:18190", "[::]:18190"),
    ] {
        let text =
            format!("{MINIMAL}[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        has(
            &problems(&text),
            "server.admin_listen",
            10,
            "already takes this port",
        );
    }
    // What it lets both have: 0.0.0.0 is IPv4 only, and two IPv4 (or IPv6) addresses are two.
    for (listen, admin) in [
        ("0.0.0.0:18190", "[::1]:18190"),
        ("[::1]:18190", "[::ffff:0.0.0.0]:18190"),
        ("[::1]:18190", "127.0.0.1:18190"),
        ("[::ffff:127.0.0.1]:18190", "[::1]:18190"),
        ("[::ffff:127.0.0.1]:18190", "127.0.0.2:18190"),
    ] {
        let text =
            format!("{MINIMAL}[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n");
        parse_str(&text, Path::new("/etc/nexus/edge.toml"))
            .unwrap_or_else(|e| panic!("{listen} and {admin} are two listeners: {e}"));
    }
}

#[test]
fn each_of_many_problems_names_its_own_line() {
    // Lines are found by binary search over newline offsets found once (a scan from the
    // file start per problem took about a minute for 20,000 of them; speed is not asserted
    // here, machines are noisy): every problem still gets its own line.
    let mut text = format!("{MINIMAL}[log]\n");
    for i in 0..20_000 {
        text.push_str(&format!("unknown_{i} = 1\n"));
    }
    let (_, ps) = parse_sections(&text, Path::new("/etc/nexus/edge.toml"));
    assert_eq!(ps.len(), 20_000);
    let line_of = |key: &str| ps.iter().find(|p| p.key == key).and_then(|p| p.line);
    assert_eq!(line_of("log.unknown_0"), Some(9));
    assert_eq!(line_of("log.unknown_19999"), Some(20_008));
}

#[test]
fn values_the_router_or_the_fleet_could_not_use_are_refused_before_start() {
    // A base domain ending in a number: every name under it is an IP address to the router.
    for bad in ["nexus.123", "127.1", "1.2.3", "edge.0x7f"] {
        let ps = problems(&format!(
            "{MINIMAL}\n[tenancy]\nbase_domains = [\"{bad}\"]\n"
        ));
        assert!(
            ps.iter().any(|p| p.key.starts_with("tenancy.base_domains")
                && (p.message.contains("ends in a number") || p.message.contains("IP address"))),
            "{bad}: {ps:#?}"
        );
    }
    let ok = parse_str(
        &format!("{MINIMAL}\n[tenancy]\nbase_domains = [\"edge.0xg\", \"a1.b2\"]\n"),
        Path::new("/etc/nexus/edge.toml"),
    );
    assert!(ok.is_ok(), "{ok:?}");
    // An empty or blank issuer or audience would accept a token whose claim is empty.
    let ps = problems(
        "[auth]\njwks_file = \"k.json\"\nissuers = [\"\"]\naudiences = [\"nexus\", \" nexus\"]\n[store]\nkind = \"file\"\npath = \"b.json\"\n",
    );
    assert!(
        ps.iter().any(|p| p.key.starts_with("auth.issuers")),
        "{ps:#?}"
    );
    assert!(
        ps.iter().any(|p| p.key.starts_with("auth.audiences")),
        "{ps:#?}"
    );
    // The fleet's names: no empty or blank replica id, no empty key prefix.
    for (key, value, says) in [
        ("replica_id", "", "1 to 128 bytes"),
        ("replica_id", "edge 1", "no blanks"),
        ("replica_id", "edge\\n1", "no blanks"),
        ("key_prefix", "", "is empty"),
        ("key_prefix", "a b", "no blanks"),
    ] {
        let ps = problems(&format!(
            "{AUTH}[store]\nkind = \"redis\"\nurl = \"redis://x\"\n{key} = \"{value}\"\n"
        ));
        has(&ps, &format!("store.{key}"), 6, says);
    }
    // A Redis URL's port 0, or a database that is no number from 0 to 1023.
    for (url, says) in [
        ("redis://x:0", "port 0"),
        ("redis://x/99999", "database"),
        ("rediss://x:6379/-1", "database"),
        ("redis://x/db", "database"),
    ] {
        let ps = problems(&format!(
            "{AUTH}[store]\nkind = \"redis\"\nurl = \"{url}\"\n"
        ));
        has(&ps, "store.url", 5, says);
    }
    for url in [
        "redis://x:6379/0",
        "redis://x/1023",
        "redis://x",
        "redis://x/",
        // A password's `/` and `?` encoded; query parameters, which redis-rs reads or passes
        // over (other programs' URLs carry some); a socket's password with an `@`.
        "redis://u:p%2Fq%3F@10.0.0.1:6379/2?protocol=resp3",
        "rediss://:pw@10.0.0.1:6380?ssl_cert_reqs=required&timeout=5",
        "redis+unix:///run/redis.sock?db=2&user=u&pass=p@ss",
    ] {
        let ok = parse_str(
            &format!("{AUTH}[store]\nkind = \"redis\"\nurl = \"{url}\"\n"),
            Path::new("/etc/nexus/edge.toml"),
        );
        assert!(ok.is_ok(), "{url}: {ok:?}");
    }
}

#[test]
fn a_config_path_that_is_no_regular_file_is_refused_not_read() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("edge.toml");
    crate::files::mkfifo(&fifo);
    for path in [fifo.as_path(), Path::new("/dev/zero"), dir.path()] {
        let e = load_file(path).expect_err("refused");
        assert!(
            e.to_string().contains("not a regular file"),
            "{}: {e}",
            path.display()
        );
    }
}

#[test]
fn token_places_are_names_read_as_apps_read_them_and_none_the_router_reads_or_sets() {
    let auth = |lines: &str| {
        format!("[auth]\njwks_file = \"k.json\"\n{lines}\n[store]\nkind = \"file\"\npath = \"b.json\"\n")
    };
    let s = parse_str(
        &auth(
            "token_headers = [\"X-Access-Token\", \"X_Api.Jwt\"]\n\
             token_cookies = [\"JWT\", \"access.token_cookie\"]\n\
             token_query_parameters = [\"Token\", \"jwt\"]",
        ),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert_eq!(s.auth.token_headers, ["x-access-token", "x-api-jwt"]);
    assert_eq!(s.auth.token_cookies, ["jwt", "access_token_cookie"]);
    assert_eq!(s.auth.token_query_parameters, ["token", "jwt"]);
    let defaults = parse_str(&auth(""), Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert!(defaults.auth.token_headers.is_empty());
    assert!(defaults.auth.token_cookies.is_empty());
    assert!(defaults.auth.token_query_parameters.is_empty());

    let ps = problems(&auth(
        "token_headers = [\"Authorization\", \"cookie\", \"X-Forwarded-User\", \"Host\", \
         \"X Token\", \"x-token\", \"X_TOKEN\", \"Sec-Fetch-Site\"]\n\
         token_cookies = [\"Nexus.Session\", \"a;b\", \"jwt\", \"JWT\"]\n\
         token_query_parameters = [\"access.token\", \"a&b\", \"\", \"Bearer_Token\"]\n\
         session_cookie = \"nexus_session\"",
    ));
    has(&ps, "auth.token_headers[0]", 3, "read already");
    has(&ps, "auth.token_headers[1]", 3, "auth.token_cookies");
    has(&ps, "auth.token_headers[2]", 3, "router's own");
    has(&ps, "auth.token_headers[3]", 3, "frames the request");
    has(&ps, "auth.token_headers[4]", 3, "not a header name");
    has(&ps, "auth.token_headers[6]", 3, "listed twice");
    has(&ps, "auth.token_headers[7]", 3, "set by the browser");
    has(&ps, "auth.token_cookies[0]", 4, "is auth.session_cookie");
    has(&ps, "auth.token_cookies[1]", 4, "not a valid cookie name");
    has(&ps, "auth.token_cookies[3]", 4, "listed twice");
    has(&ps, "auth.token_query_parameters[0]", 5, "always held");
    has(&ps, "auth.token_query_parameters[3]", 5, "always held");
    has(
        &ps,
        "auth.token_query_parameters[1]",
        5,
        "not a query parameter",
    );
    has(
        &ps,
        "auth.token_query_parameters[2]",
        5,
        "not a query parameter",
    );
    let wrong_type = problems(&auth("token_headers = \"X-Token\""));
    has(
        &wrong_type,
        "auth.token_headers",
        3,
        "must be a list of strings",
    );
}

#[test]
fn cors_is_off_unless_origins_are_given() {
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.cors.origins, None);
    assert_eq!(s.cors, crate::embedded_default().cors);
    let text = format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"https://app.example\"]\ntenant_origins = true\n\
         allow_credentials = true\nallowed_methods = [\"GET\", \"PROPFIND\"]\n\
         allowed_headers = [\"authorization\", \"x-csrf-token\"]\nexpose_headers = [\"etag\"]\n\
         max_age = \"1h\"\n"
    );
    let s = parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(
        s.cors.origins,
        Some(CorsOrigins::Listed {
            origins: vec!["https://app.example".to_owned()],
            tenant_pages: true,
            credentials: true,
        })
    );
    assert_eq!(s.cors.allowed_methods, ["GET", "PROPFIND"]);
    assert_eq!(s.cors.allowed_headers, ["authorization", "x-csrf-token"]);
    assert_eq!(s.cors.expose_headers, ["etag"]);
    assert_eq!(s.cors.max_age, std::time::Duration::from_secs(3600));
    // The tenants' own pages alone are a policy; "*" is one.
    let s = parse_str(
        &format!("{MINIMAL}[cors]\ntenant_origins = true\n"),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert!(matches!(
        s.cors.origins,
        Some(CorsOrigins::Listed { ref origins, tenant_pages: true, credentials: false })
            if origins.is_empty()
    ));
    let s = parse_str(
        &format!("{MINIMAL}[cors]\nallowed_origins = [\"*\"]\n"),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert_eq!(s.cors.origins, Some(CorsOrigins::Any));
}

#[test]
fn cors_policies_browsers_would_not_follow_are_refused() {
    let ps = problems(&format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n"
    ));
    has(&ps, "cors.allow_credentials", 10, "refuse credentials");
    let ps = problems(&format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"*\", \"https://app.example\"]\n"
    ));
    has(&ps, "cors.allowed_origins", 9, "nothing beside it");
    let ps = problems(&format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"*\"]\ntenant_origins = true\n"
    ));
    has(&ps, "cors.tenant_origins", 10, "already allows");
    let ps = problems(&format!("{MINIMAL}[cors]\nallow_credentials = true\n"));
    has(&ps, "cors.allow_credentials", 9, "to no origin");
    for bad in [
        "app.example",
        "https://app.example/",
        "https://App.example",
        "null",
    ] {
        let ps = problems(&format!("{MINIMAL}[cors]\nallowed_origins = [\"{bad}\"]\n"));
        has(&ps, "cors.allowed_origins[0]", 9, "not an origin");
    }
    let ps = problems(&format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"https://a.example\"]\n\
         allowed_methods = [\"GET\", \"TRACE\", \"con nect\", \"put\", \"*\"]\n\
         allowed_headers = [\"*\", \"X-Token\"]\nexpose_headers = [\"a b\"]\nmax_age = \"2d\"\n\
         allow_origins = []\n"
    ));
    has(&ps, "cors.allowed_methods[1]", 10, "refused by the router");
    has(&ps, "cors.allowed_methods[2]", 10, "not a method name");
    has(&ps, "cors.allowed_methods[3]", 10, "case-sensitive");
    has(&ps, "cors.allowed_methods[4]", 10, "not a method name");
    has(&ps, "cors.allowed_headers[0]", 11, "list the header names");
    has(
        &ps,
        "cors.allowed_headers[1]",
        11,
        "not a lowercase header name",
    );
    has(
        &ps,
        "cors.expose_headers[0]",
        12,
        "not a lowercase header name",
    );
    has(&ps, "cors.max_age", 13, "out of range (0s to 24h)");
    has(
        &ps,
        "cors.allow_origins",
        14,
        "did you mean `allowed_origins`",
    );
}

#[test]
fn cors_origins_under_a_base_domain_must_be_the_operators() {
    // `app.nexus.localhost` could be a tenant's page (a tenant named `app`).
    let text = format!(
        "{MINIMAL}[cors]\nallowed_origins = [\"https://example.com\", \"https://app.nexus.localhost\"]\n"
    );
    let ps = problems(&text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    has(&ps, "cors.allowed_origins[1]", 9, "tenancy.trusted_origins");
    // The base domain itself is no tenant's; a listed trusted origin is the operator's.
    let text = format!(
        "{MINIMAL}[tenancy]\ntrusted_origins = [\"https://app.nexus.localhost\"]\n\
         [cors]\nallowed_origins = [\"https://nexus.localhost\", \"https://app.nexus.localhost\"]\n"
    );
    parse_str(&text, Path::new("/etc/nexus/edge.toml")).expect("valid");
}

#[test]
fn frame_ancestors_is_any_or_tenant() {
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.tenancy.frame_ancestors, FrameAncestors::Any);
    let s = parse_str(
        &format!("{MINIMAL}[tenancy]\nframe_ancestors = \"tenant\"\n"),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert_eq!(s.tenancy.frame_ancestors, FrameAncestors::Tenant);
    let ps = problems(&format!("{MINIMAL}[tenancy]\nframe_ancestors = \"self\"\n"));
    has(
        &ps,
        "tenancy.frame_ancestors",
        9,
        "\"self\" is not a framing policy; expected \"any\" or \"tenant\"",
    );
}

#[test]
fn tls_is_off_unless_its_section_names_a_listener_and_certificates() {
    let origin = Path::new("/etc/nexus/edge.toml");
    let s = parse_str(MINIMAL, origin).expect("valid");
    assert_eq!(s.tls, None);
    let text = format!(
        "{MINIMAL}[tls]\nlisten = \"0.0.0.0:443\"\ncertificates = [\"certs\", \"/srv/acme.pem\"]\n"
    );
    let s = parse_str(&text, origin).expect("valid");
    assert_eq!(
        s.tls,
        Some(TlsListenerSettings {
            listen: "0.0.0.0:443".parse().unwrap(),
            certificates: vec!["/etc/nexus/certs".into(), "/srv/acme.pem".into()],
            reload_interval: Duration::from_secs(10),
        })
    );
    // Line 8 is `[tls]`, 9 its first key.
    let ps = problems(&format!("{MINIMAL}[tls]\ncertificates = []\n"));
    names(&ps, "tls.listen", "is required in [tls]");
    has(&ps, "tls.certificates", 9, "lists no certificate");
    let ps = problems(&format!(
        "{MINIMAL}[tls]\nlisten = \"0.0.0.0:8080\"\ncertificates = [\"\"]\nreload_interval = \"1ms\"\nciphers = []\n"
    ));
    has(&ps, "tls.listen", 9, "server.listen");
    has(&ps, "tls.certificates[0]", 10, "must not be empty");
    has(&ps, "tls.reload_interval", 11, "out of range");
    has(&ps, "tls.ciphers", 12, "unknown");
    let ps = problems(&format!(
        "[server]\nadmin_listen = \"127.0.0.1:9090\"\n{MINIMAL}[tls]\nlisten = \"127.0.0.1:9090\"\ncertificates = [\"c\"]\n"
    ));
    names(&ps, "tls.listen", "server.admin_listen");
}

#[test]
fn the_admin_api_is_off_unless_its_section_names_a_listener_and_a_tokens_file() {
    let origin = Path::new("/etc/nexus/edge.toml");
    assert_eq!(parse_str(MINIMAL, origin).expect("valid").admin_api, None);
    let text = format!(
        "{MINIMAL}[admin_api]\nlisten = \"127.0.0.1:9091\"\ntokens_file = \"admin-tokens.toml\"\n"
    );
    assert_eq!(
        parse_str(&text, origin).expect("valid").admin_api,
        Some(AdminApiSettings {
            listen: "127.0.0.1:9091".parse().unwrap(),
            tokens_file: "/etc/nexus/admin-tokens.toml".into(),
            tls: None,
        })
    );
    // HTTPS with certificates of its own, read again as [tls]'s are.
    let https = format!("{text}certificates = [\"admin.pem\", \"/pki/admin\"]\n");
    assert_eq!(
        parse_str(&https, origin).expect("valid").admin_api,
        Some(AdminApiSettings {
            listen: "127.0.0.1:9091".parse().unwrap(),
            tokens_file: "/etc/nexus/admin-tokens.toml".into(),
            tls: Some(AdminApiTls {
                certificates: vec!["/etc/nexus/admin.pem".into(), "/pki/admin".into()],
                reload_interval: Duration::from_secs(10),
            }),
        })
    );
    let reloaded = parse_str(&format!("{https}reload_interval = \"2s\"\n"), origin)
        .expect("valid")
        .admin_api
        .and_then(|a| a.tls)
        .expect("tls");
    assert_eq!(reloaded.reload_interval, Duration::from_secs(2));
    // A reload interval without certificates, or an empty list, names the missing key.
    for extra in ["reload_interval = \"2s\"\n", "certificates = []\n"] {
        let ps = problems(&format!("{text}{extra}"));
        names(&ps, "admin_api.certificates", "lists no certificate");
    }
    let ps = problems(&format!(
        "{text}certificates = [\"\"]\nreload_interval = \"1h1s\"\n"
    ));
    names(&ps, "admin_api.certificates[0]", "must not be empty");
    names(&ps, "admin_api.reload_interval", "");
    // Line 8 is `[admin_api]`, 9 its first key.
    let ps = problems(&format!("{MINIMAL}[admin_api]\ntoken = \"secret\"\n"));
    names(&ps, "admin_api.listen", "is required in [admin_api]");
    names(&ps, "admin_api.tokens_file", "is required in [admin_api]");
    has(&ps, "admin_api.token", 9, "unknown");
    let ps = problems(&format!(
        "{MINIMAL}[admin_api]\nlisten = \"here\"\ntokens_file = \"\"\n"
    ));
    has(&ps, "admin_api.listen", 9, "not an address");
    has(&ps, "admin_api.tokens_file", 10, "must not be empty");
    // Not on another listener's port: the public one, the ops one, the HTTPS one.
    for (before, named) in [
        ("[server]\nlisten = \"0.0.0.0:9091\"\n", "server.listen"),
        (
            "[server]\nadmin_listen = \"127.0.0.1:9091\"\n",
            "server.admin_listen",
        ),
        (
            "[tls]\nlisten = \"0.0.0.0:9091\"\ncertificates = [\"c\"]\n",
            "tls.listen",
        ),
    ] {
        let ps = problems(&format!(
            "{before}{MINIMAL}[admin_api]\nlisten = \"127.0.0.1:9091\"\ntokens_file = \"t\"\n"
        ));
        names(&ps, "admin_api.listen", named);
    }
}

#[test]
fn metrics_settings_default_to_the_briefs_triggers_and_are_checked() {
    let origin = Path::new("/etc/nexus/edge.toml");
    let s = parse_str(MINIMAL, origin).expect("valid");
    assert_eq!(s.metrics, embedded_default().metrics);
    assert_eq!(s.metrics.latency_slo, Duration::from_millis(200));
    assert_eq!(s.metrics.slo_intervals, 3);
    assert!((s.metrics.queue_delay_factor - 2.0).abs() < f64::EPSILON);
    let text = format!(
        "{MINIMAL}[metrics]\ninterval = \"10s\"\nlatency_slo = \"150ms\"\nslo_intervals = 5\n\
         min_requests = 1\nqueue_delay_factor = 3\nqueue_delay_floor = \"0s\"\n\
         baseline_window = \"20s\"\nmax_instances = 0\n"
    );
    let s = parse_str(&text, origin).expect("valid");
    assert_eq!(
        s.metrics,
        MetricsSettings {
            interval: Duration::from_secs(10),
            latency_slo: Duration::from_millis(150),
            slo_intervals: 5,
            min_requests: 1,
            queue_delay_factor: 3.0,
            queue_delay_floor: Duration::ZERO,
            baseline_window: Duration::from_secs(20),
            max_instances: 0,
        }
    );
    // Line 8 is `[metrics]`, 9 its first key.
    let ps = problems(&format!(
        "{MINIMAL}[metrics]\ninterval = \"0s\"\nqueue_delay_factor = 1.0\nslo_intervals = 0\n\
         max_instances = \"all\"\nqueue_delay = 2\n"
    ));
    has(&ps, "metrics.interval", 9, "out of range");
    has(&ps, "metrics.queue_delay_factor", 10, "out of range");
    has(&ps, "metrics.slo_intervals", 11, "out of range");
    has(&ps, "metrics.max_instances", 12, "must be an integer");
    has(&ps, "metrics.queue_delay", 13, "unknown");
    let ps = problems(&format!(
        "{MINIMAL}[metrics]\ninterval = \"1m\"\nbaseline_window = \"90s\"\n"
    ));
    has(&ps, "metrics.baseline_window", 10, "two intervals");
    let ps = problems(&format!(
        "{MINIMAL}[metrics]\nqueue_delay_factor = \"2x\"\n"
    ));
    has(&ps, "metrics.queue_delay_factor", 9, "must be a number");
    let ps = problems(&format!(
        "{MINIMAL}[metrics]\nmax_instances = 10001\nqueue_delay_factor = 0x10000\n"
    ));
    has(&ps, "metrics.max_instances", 9, "out of range (0..=10000)");
    // Read as the integer it is (65536), whatever its radix.
    has(&ps, "metrics.queue_delay_factor", 10, "out of range");
    let s = parse_str(
        &format!("{MINIMAL}[metrics]\nqueue_delay_factor = 0x10\n"),
        origin,
    )
    .expect("valid");
    assert!((s.metrics.queue_delay_factor - 16.0).abs() < f64::EPSILON);
}

#[test]
fn revocations_come_from_a_file_named_or_else_a_redis_store() {
    let origin = Path::new("/etc/nexus/edge.toml");
    let s = parse_str(MINIMAL, origin).expect("valid");
    assert_eq!(s.revocation, embedded_default().revocation);
    assert_eq!(s.revocation.source, RevocationSource::None);
    assert_eq!(s.revocation.max_staleness, Duration::from_secs(300));
    let s = parse_str(
        "[auth]\njwks_file = \"k.json\"\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1/\"\n",
        origin,
    )
    .expect("valid");
    assert_eq!(s.revocation.source, RevocationSource::Store);
    let text = format!(
        "{MINIMAL}[revocation]\nfile = \"revoked.json\"\nmax_staleness = \"1m\"\n\
         poll_interval = \"250ms\"\n"
    );
    let s = parse_str(&text, origin).expect("valid");
    assert_eq!(
        s.revocation,
        RevocationSettings {
            source: RevocationSource::File(std::path::PathBuf::from("/etc/nexus/revoked.json")),
            max_staleness: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
        }
    );
    // Line 8 is `[revocation]`, 9 its first key.
    let ps = problems(&format!(
        "{MINIMAL}[revocation]\nfile = \"\"\nmax_staleness = \"1s\"\npoll_interval = 5\nsource = \"redis\"\n"
    ));
    has(&ps, "revocation.file", 9, "must not be empty");
    has(&ps, "revocation.max_staleness", 10, "out of range");
    has(&ps, "revocation.poll_interval", 11, "");
    has(&ps, "revocation.source", 12, "unknown");
    let ps = problems(&format!(
        "{MINIMAL}[revocation]\nfile = \"r.json\"\nmax_staleness = \"10s\"\npoll_interval = \"10s\"\n"
    ));
    has(
        &ps,
        "revocation.poll_interval",
        11,
        "shorter than revocation.max_staleness",
    );
}

#[test]
fn the_upgrade_socket_is_off_unless_set_and_must_fit_a_socket_address() {
    let s = parse_str(MINIMAL, Path::new("/etc/nexus/edge.toml")).expect("valid");
    assert_eq!(s.server.upgrade_socket, None);
    let s = parse_str(
        &format!("{MINIMAL}[server]\nupgrade_socket = \"run/upgrade.sock\"\n"),
        Path::new("/etc/nexus/edge.toml"),
    )
    .expect("valid");
    assert_eq!(
        s.server.upgrade_socket.as_deref(),
        Some(Path::new("/etc/nexus/run/upgrade.sock")),
        "relative to the config file's directory"
    );
    let long = format!("/run/{}/upgrade.sock", "n".repeat(100));
    let ps = problems(&format!("{MINIMAL}[server]\nupgrade_socket = \"{long}\"\n"));
    has(&ps, "server.upgrade_socket", 9, "may be at most 107");
    let ps = problems(&format!("{MINIMAL}[server]\nupgrade_socket = \"\"\n"));
    has(&ps, "server.upgrade_socket", 9, "must not be empty");
}
