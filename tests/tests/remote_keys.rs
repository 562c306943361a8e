//! A key set fetched from the identity provider (`[auth] jwks_url`): the real binary against
//! a real HTTP(S) key set endpoint whose answer each test sets. Keys rotated in are taken at
//! the first token that needs them; keys withdrawn stop verifying at the next fetch; an
//! endpoint that fails or answers nonsense keeps the keys in use; a restart while it is away
//! starts from the cache file, if that is from the same URL and not stale.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{binding, bindings_file, cli, Edge, EdgeOptions};
use nexus_e2e::http::get_with_token;
use nexus_e2e::key_server::{Answer, KeyServer};
use nexus_e2e::keys::{claims, now, TestKeys};
use nexus_e2e::probe::host;
use nexus_e2e::tls::TestPki;
use nexus_e2e::wait;
use nexus_edge::auth::mint::SigningKey;
use serde_json::Value;

/// A router for tenant acme at `instance`, its keys fetched from `url` with `settings`
/// (more `[auth]` lines).
fn options(instance: &Backend, keys: &TestKeys, url: &str, settings: &str) -> EdgeOptions {
    let bindings = bindings_file(vec![binding("acme", &instance.url(), "active", None)]);
    let mut opts = EdgeOptions::new(keys.jwks(), bindings);
    opts.jwks_source = Some(format!("jwks_url = {url:?}\n{settings}"));
    opts
}

fn status(edge: &Edge, token: &str) -> u16 {
    get_with_token(edge.addr, &host("acme"), "/", token).status
}

fn wait_status(edge: &Edge, token: &str, want: u16, what: &str) {
    wait::until(Duration::from_secs(15), what, || {
        (status(edge, token) == want).then_some(())
    });
}

fn jwks(keys: &[&SigningKey]) -> Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

fn token(key: &SigningKey) -> String {
    key.sign(&claims("acme", None)).unwrap()
}

/// A token whose `kid` the provider never published.
fn made_up() -> String {
    token(&SigningKey::generate_es256("made-up").unwrap())
}

/// The cache file's record: the key set, as JSON, and the whole record.
fn cached(path: &Path) -> Option<(Value, Value)> {
    let record: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let set = serde_json::from_str(record["jwks"].as_str()?).ok()?;
    Some((set, record))
}

/// Polls until `jwks_min_refresh_interval` (`interval`) has passed since the last fetch, so
/// the next token naming an unknown kid may ask for one.
fn wait_interval(server: &KeyServer, interval: Duration) {
    wait::until(
        Duration::from_secs(10),
        "the interval since the last fetch",
        || (server.since_last_request() > interval + Duration::from_millis(100)).then_some(()),
    );
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn keys_rotated_in_are_taken_at_once_and_keys_withdrawn_stop_verifying() {
    let instance = Backend::start("acme-1");
    let keys = TestKeys::new();
    let rotated = SigningKey::generate_es256("rotated-in").unwrap();
    // A long max-age and refresh interval: only a token's unknown kid can cause a fetch.
    let server = KeyServer::start(
        Answer::keys(&jwks(&[&keys.es])).with_header("cache-control", "public, max-age=3600"),
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("jwks-cache.json");
    let edge = Edge::start(&options(
        &instance,
        &keys,
        &server.url,
        &format!(
            "jwks_refresh_interval = \"1h\"\njwks_min_refresh_interval = \"1s\"\n\
             jwks_cache_file = {:?}",
            cache.display().to_string()
        ),
    ));
    assert_eq!(server.requests(), 1, "one fetch at start");
    assert_eq!(server.paths(), ["/.well-known/jwks.json"]);
    assert_eq!(status(&edge, &token(&keys.es)), 200);
    assert_eq!(edge.metric("nexus_edge_verification_keys"), 1);
    assert_eq!(edge.metric("nexus_edge_jwks_stale"), 0);
    assert_eq!(edge.metric("nexus_edge_jwks_fetch_failures_total"), 0);
    let (set, record) = cached(&cache).unwrap();
    assert_eq!(set, jwks(&[&keys.es]));
    assert_eq!(record["url"], server.url.as_str());
    let confirmed = record["confirmed_unix_ms"].as_u64().unwrap() / 1000;
    assert!(confirmed.abs_diff(now()) < 60, "{record}");

    // The provider rotates a key in (sent in chunks this time): the first tokens it signed,
    // several at once, are served, by one fetch made for them.
    let mut both =
        Answer::keys(&jwks(&[&keys.es, &rotated])).with_header("cache-control", "max-age=3600");
    both.chunked = Some(64);
    server.set(both);
    wait_interval(&server, SECOND);
    let fetched = server.requests();
    let decided = edge.metric("nexus_edge_decision_duration_seconds_count");
    let rotated_token = token(&rotated);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..6)
            .map(|_| s.spawn(|| status(&edge, &rotated_token)))
            .collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert_eq!(statuses, [200; 6], "the rotated-in key at once");
    assert_eq!(server.requests(), fetched + 1, "one fetch for all of them");
    assert_eq!(
        edge.metric("nexus_edge_decision_duration_seconds_count"),
        decided + 6,
        "each decision timed once, not again after the fetch"
    );
    assert_eq!(status(&edge, &token(&keys.es)), 200, "the old key still");
    assert_eq!(edge.metric("nexus_edge_verification_keys"), 2);
    wait::until(Duration::from_secs(5), "the cache file follows", || {
        (cached(&cache)?.0 == jwks(&[&keys.es, &rotated])).then_some(())
    });

    // A flood of made-up kids: refused, and at most one fetch a second for all of them.
    let before = server.requests();
    let start = Instant::now();
    for _ in 0..40 {
        assert_eq!(status(&edge, &made_up()), 401);
    }
    let allowed = start.elapsed().as_secs() + 1;
    let made = server.requests() - before;
    assert!(made <= allowed, "{made} fetches in {:?}", start.elapsed());

    // The provider withdraws the old key and asks for fetches every second: the old key's
    // token (cached) is refused once a fetch brings the new set.
    server.set(Answer::keys(&jwks(&[&rotated])).with_header("cache-control", "max-age=1"));
    // (A fetch now, or at the end of the interval the flood's last one began.)
    assert_eq!(status(&edge, &made_up()), 401);
    wait_status(&edge, &token(&keys.es), 401, "the withdrawn key refused");
    assert_eq!(status(&edge, &token(&rotated)), 200);
    // max-age=1 now drives the fetches, with no request asking for one.
    let before = server.requests();
    wait::until(Duration::from_secs(10), "fetches every second", || {
        (server.requests() >= before + 2).then_some(())
    });
    server
        .set(Answer::keys(&jwks(&[&keys.es, &rotated])).with_header("cache-control", "max-age=1"));
    let before = server.requests();
    wait::until(
        Duration::from_secs(10),
        "the key back after a fetch",
        || (server.requests() > before + 1).then_some(()),
    );
    assert_eq!(status(&edge, &token(&keys.es)), 200);
    assert_eq!(edge.metric("nexus_edge_jwks_fetch_failures_total"), 0);
    assert!(edge.metric("nexus_edge_jwks_age_seconds") <= 5);
}

/// A provider that tags its key set (`ETag`) is asked `If-None-Match`: its `304` confirms
/// the set in use, and a set changed (a new tag) comes whole.
#[test]
fn an_unchanged_key_set_is_confirmed_by_a_304_and_a_changed_one_comes_whole() {
    let instance = Backend::start("acme-1");
    let keys = TestKeys::new();
    let rotated = SigningKey::generate_es256("rotated-in").unwrap();
    let tagged = |set: Value, tag: &str| {
        Answer::keys(&set)
            .with_header("cache-control", "max-age=1")
            .with_header("etag", tag)
    };
    let server = KeyServer::start(tagged(jwks(&[&keys.es]), "\"v1\""));
    let edge = Edge::start(&options(
        &instance,
        &keys,
        &server.url,
        "jwks_refresh_interval = \"1h\"\njwks_min_refresh_interval = \"1s\"",
    ));
    // max-age=1 drives the fetches; each after the first is conditional, and confirms.
    wait::until(Duration::from_secs(15), "fetches answered 304", || {
        (server.not_modified() >= 3).then_some(())
    });
    assert_eq!(status(&edge, &token(&keys.es)), 200);
    assert_eq!(edge.metric("nexus_edge_jwks_fetch_failures_total"), 0);
    assert!(
        edge.metric("nexus_edge_jwks_age_seconds") <= 3,
        "confirmed by each 304"
    );

    server.set(tagged(jwks(&[&rotated]), "\"v2\""));
    wait_status(&edge, &token(&rotated), 200, "the new set");
    wait_status(&edge, &token(&keys.es), 401, "the old key withdrawn");
    let before = server.not_modified();
    wait::until(
        Duration::from_secs(15),
        "the new set confirmed by 304",
        || (server.not_modified() >= before + 2).then_some(()),
    );
    assert_eq!(status(&edge, &token(&rotated)), 200);
    assert_eq!(edge.metric("nexus_edge_jwks_fetch_failures_total"), 0);
}

/// A key rotated in just after a fetch: its token is refused within the interval, and the
/// fetch it asked for is made when the interval ends, with no request asking again (the
/// refresh interval is an hour).
#[test]
fn a_key_rotated_in_within_the_interval_is_fetched_when_it_ends() {
    let instance = Backend::start("acme-1");
    let keys = TestKeys::new();
    let later = SigningKey::generate_es256("rotated-later").unwrap();
    let server = KeyServer::start(Answer::keys(&jwks(&[&keys.es])));
    let edge = Edge::start(&options(
        &instance,
        &keys,
        &server.url,
        "jwks_refresh_interval = \"1h\"\njwks_min_refresh_interval = \"4s\"",
    ));
    assert_eq!(server.requests(), 1);
    server.set(Answer::keys(&jwks(&[&keys.es, &later])));
    // Well within the 4 s since the fetch at start.
    assert_eq!(status(&edge, &token(&later)), 401);
    assert_eq!(server.requests(), 1);
    wait::until(Duration::from_secs(10), "the fetch asked for", || {
        (server.requests() >= 2).then_some(())
    });
    wait_status(&edge, &token(&later), 200, "the key rotated in");
    assert_eq!(server.requests(), 2);
}

#[test]
fn a_failing_provider_keeps_the_keys_and_a_restart_starts_from_a_fresh_cache_file() {
    let instance = Backend::start("acme-1");
    let keys = TestKeys::new();
    let good = Answer::keys(&jwks(&[&keys.es]));
    let server = KeyServer::start(good.clone());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("jwks-cache.json");
    let settings = format!(
        "jwks_refresh_interval = \"1h\"\njwks_min_refresh_interval = \"1s\"\n\
         jwks_fetch_timeout = \"1s\"\njwks_cache_file = {:?}",
        cache.display().to_string()
    );
    let opts = options(&instance, &keys, &server.url, &settings);
    let edge = Edge::start(&opts);
    let es = token(&keys.es);
    assert_eq!(status(&edge, &es), 200);

    // Each bad answer in turn, a fetch asked for by a made-up kid: counted as a failure,
    // said in the log, and the keys in use stay; then the provider recovers, and the fetch
    // retried (after a second: no token hurries it) succeeds.
    let mut huge = Answer::keys(&serde_json::json!({
        "keys": [], "padding": "x".repeat(2 << 20)
    }));
    huge.chunked = Some(64 * 1024);
    let mut slow = good.clone();
    slow.delay = Duration::from_secs(3);
    let refused = Answer {
        body: br#"{"keys": "none"}"#.to_vec(),
        ..good.clone()
    };
    let bad = [
        (Answer::status(500), "answered 500"),
        (
            Answer::status(302).with_header("location", "http://elsewhere.test/jwks"),
            "redirects are not followed",
        ),
        (huge, "larger than"),
        (slow, "no answer within"),
        (refused, "the key set it serves is refused"),
    ];
    for (n, (answer, said)) in bad.into_iter().enumerate() {
        let failures = edge.metric("nexus_edge_jwks_fetch_failures_total");
        server.set(answer);
        wait_interval(&server, SECOND);
        assert_eq!(status(&edge, &made_up()), 401);
        wait::until(Duration::from_secs(10), said, || {
            (edge.metric("nexus_edge_jwks_fetch_failures_total") > failures
                && edge.log().contains(said))
            .then_some(())
        });
        assert_eq!(status(&edge, &es), 200, "after {said}");
        if said.contains("refused") {
            assert_eq!(edge.metric("nexus_edge_key_set_refused"), 1);
        }
        server.set(good.clone());
        wait::until(Duration::from_secs(10), "fetched again", || {
            (edge.log().matches("the key set was fetched again").count() > n).then_some(())
        });
    }
    assert_eq!(edge.metric("nexus_edge_key_set_refused"), 0);
    assert_eq!(edge.metric("nexus_edge_verification_keys"), 1);
    assert_eq!(cached(&cache).unwrap().0, jwks(&[&keys.es]));
    drop(edge);

    // A restart while the provider fails: the cache file's keys, ready at once.
    server.set(Answer::status(503));
    let edge = Edge::start(&opts);
    assert_eq!(status(&edge, &es), 200);
    assert!(edge.log().contains("taken from auth.jwks_cache_file"));
    drop(edge);

    // A cache last confirmed past jwks_max_staleness (three refresh intervals, 3 h), or kept
    // from another URL: not started from. Up but not ready, every token refused, until the
    // provider answers; then ready without a restart.
    let (_, record) = cached(&cache).unwrap();
    for (field, value, said) in [
        (
            "url_sha256",
            Value::from("0".repeat(64)),
            "not from auth.jwks_url",
        ),
        (
            "confirmed_unix_ms",
            Value::from((now() - 4 * 3600) * 1000),
            "past auth.jwks_max_staleness",
        ),
    ] {
        let mut old = record.clone();
        old[field] = value;
        std::fs::write(&cache, old.to_string()).unwrap();
        let mut edge = Edge::spawn(&opts).unwrap();
        edge.wait_listening(Duration::from_secs(20)).unwrap();
        let ready = edge.ops_get("/readyz");
        assert_eq!(ready.status, 503, "{}", ready.text());
        assert_eq!(ready.json()["keys_awaited"], true);
        assert!(edge.log().contains(said), "{}", edge.log());
        assert_eq!(status(&edge, &es), 401);
        assert_eq!(edge.metric("nexus_edge_jwks_stale"), 1);
        server.set(good.clone());
        edge.wait_ready(Duration::from_secs(20)).unwrap();
        assert_eq!(status(&edge, &es), 200);
        assert_eq!(edge.metric("nexus_edge_jwks_stale"), 0);
        assert!(edge.log().contains("the key set was fetched again"));
        drop(edge);
        server.set(Answer::status(503));
    }
}

#[test]
fn an_https_provider_is_verified_against_jwks_ca_file() {
    let instance = Backend::start("acme-1");
    let keys = TestKeys::new();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let server = KeyServer::start_tls(
        Answer::keys(&jwks(&[&keys.es])),
        &pki.server_cert,
        &pki.server_key,
    );
    assert!(server.url.starts_with("https://localhost:"));
    let ca = format!("jwks_ca_file = {:?}", pki.ca.display().to_string());
    let opts = options(&instance, &keys, &server.url, &ca);
    let edge = Edge::start(&opts);
    assert_eq!(status(&edge, &token(&keys.es)), 200);
    // `check` fetches it too, through the same CA.
    let out = cli(&["check", "--config", &edge.config_path.display().to_string()]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("ok (1 verification key)"), "{said}");
    drop(edge);

    // A certificate from the trusted CA for another name: refused as much as one from an
    // unknown CA (no CA given: the system's roots).
    let elsewhere = KeyServer::start_tls(
        Answer::keys(&jwks(&[&keys.es])),
        &pki.other_name_cert,
        &pki.other_name_key,
    );
    for (url, settings) in [
        (elsewhere.url.as_str(), ca.as_str()),
        (server.url.as_str(), ""),
    ] {
        let opts = options(&instance, &keys, url, settings);
        let mut edge = Edge::spawn(&opts).unwrap();
        edge.wait_listening(Duration::from_secs(20)).unwrap();
        assert_eq!(edge.ops_get("/readyz").status, 503, "{url} {settings}");
        assert_eq!(status(&edge, &token(&keys.es)), 401);
        assert!(
            edge.log().contains("the key set could not be fetched"),
            "{}",
            edge.log()
        );
        let out = cli(&["check", "--config", &edge.config_path.display().to_string()]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("warning: auth.jwks_url: the key set could not be fetched"),
            "{said}"
        );
    }
    assert_eq!(
        elsewhere.requests(),
        0,
        "no request over a refused handshake"
    );
}
