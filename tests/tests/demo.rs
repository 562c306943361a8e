//! `nexus-edge demo`, a newcomer's first five minutes: every `curl` command it prints does
//! what its comment says, against the real binary and its demo instances. Also `serve` on the
//! embedded default: how it starts, and how it refuses to.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use nexus_e2e::edge::{binary, is_ready, serving_addrs, OPS_LISTEN, PUBLIC_LISTEN};
use nexus_e2e::http::{get, Response};
use nexus_e2e::process::{self, Running};

/// How long the binary may take to start, listen, or refuse to.
const START: Duration = Duration::from_secs(20);

/// The demo process (killed on drop, before its directory goes).
struct Demo {
    _run: Running,
    dir: tempfile::TempDir,
    /// The printed `nexus-edge token` command, split into its words.
    mint: Vec<String>,
}

/// One printed command: its comment and the request it makes.
#[derive(Debug)]
struct Example {
    comment: String,
    host: String,
    headers: Vec<(String, String)>,
    addr: SocketAddr,
    path: String,
}

impl Example {
    /// Parses `curl -s[i] -H 'Name: value' ... http://ADDR/PATH`.
    fn parse(comment: &str, line: &str) -> Example {
        let mut headers = Vec::new();
        for (i, part) in line.split('\'').enumerate() {
            if i % 2 == 1 {
                let (name, value) = part.split_once(": ").expect("a header");
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        let url = line.rsplit(' ').next().expect("a url");
        let rest = url.strip_prefix("http://").expect("http url");
        let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
        let host = headers
            .iter()
            .position(|(k, _)| k == "Host")
            .map(|i| headers.remove(i).1)
            .expect("a Host header");
        Example {
            comment: comment.to_owned(),
            host,
            headers,
            addr: authority.parse().expect("an address"),
            path: path.to_owned(),
        }
    }

    fn send(&self) -> Response {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        get(self.addr, &self.host, &self.path, &headers)
    }
}

/// Starts the demo on ports the system picks and returns it with its printed examples and
/// the public address its router bound.
fn start_demo() -> (Demo, Vec<Example>, SocketAddr) {
    start_demo_in(tempfile::tempdir().expect("dir"))
}

/// [`start_demo`] with `--dir` the directory given.
fn start_demo_in(dir: tempfile::TempDir) -> (Demo, Vec<Example>, SocketAddr) {
    let mut run = Running::spawn(
        Command::new(binary())
            .args(["demo", "--listen", &PUBLIC_LISTEN.to_string()])
            .args(["--admin-listen", &OPS_LISTEN.to_string()])
            .arg("--dir")
            .arg(dir.path()),
    );
    let printed = run.wait_for(START, "the demo's commands", |out, _| {
        out.contains("\nCtrl-C").then(|| out.to_owned())
    });
    let mut examples = Vec::new();
    let mut comment = String::new();
    let mut mint = Vec::new();
    for line in printed.lines() {
        if let Some(c) = line.strip_prefix("# ") {
            comment = c.to_owned();
        } else if line.starts_with("curl ") {
            examples.push(Example::parse(&comment, line));
        } else if line.contains(" token --tenant ") {
            mint = line.split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with("Ctrl-C") {
            break;
        }
    }
    let (listen, ops) = wait_serving(&mut run, "the demo router ready");
    // The ops address it printed is the one its router bound (the commands' is checked by
    // the test).
    assert!(
        printed.contains(&format!("ops http://{ops}/metrics")),
        "{printed}"
    );
    (
        Demo {
            _run: run,
            dir,
            mint,
        },
        examples,
        listen,
    )
}

#[test]
fn every_printed_demo_command_does_what_its_comment_says() {
    let (_demo, examples, listen) = start_demo();
    assert_eq!(examples.len(), 7, "{examples:#?}");
    for e in &examples {
        assert_eq!(e.addr, listen, "{}", e.comment);
    }
    let r: Vec<Response> = examples.iter().map(Example::send).collect();
    let context = |i: usize| format!("#{} {}: {}", i + 1, examples[i].comment, r[i].text());

    assert_eq!(r[0].status, 200, "{}", context(0));
    assert_eq!(r[0].json()["instance"], "demo-instance-a", "{}", context(0));
    assert_eq!(r[0].json()["x-tenant-id"], "acme", "{}", context(0));
    assert_eq!(r[0].json()["x-user-id"], "alice", "{}", context(0));
    assert_eq!(r[1].status, 403, "{}", context(1));
    assert_eq!(r[2].status, 401, "{}", context(2));
    assert!(
        r[2].header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{}",
        context(2)
    );
    assert_eq!(r[3].status, 200, "{}", context(3));
    assert!(
        r[3].headers.iter().any(|(_, v)| v == "past_due"),
        "{}",
        context(3)
    );
    assert_eq!(r[4].status, 403, "{}", context(4));
    assert!(
        r[4].text().contains("plan does not include"),
        "{}",
        context(4)
    );
    assert_eq!(r[5].status, 503, "{}", context(5));
    assert!(r[5].header("retry-after").is_some(), "{}", context(5));
    assert_eq!(r[6].status, 200, "{}", context(6));
    assert_eq!(r[6].json()["instance"], "demo-instance-a", "{}", context(6));
}

#[test]
fn the_printed_token_command_mints_for_a_tenant_the_reader_activates() {
    // The demo's key lived in memory only: a tenant the reader set active (as the demo
    // invites) could never be reached with a token. It is saved now, for this user only.
    let (demo, _, listen) = start_demo();
    let key = demo.dir.path().join("signing-key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // The command is pasted as printed: this binary, then its arguments.
    assert_eq!(
        std::fs::canonicalize(&demo.mint[0]).ok(),
        std::fs::canonicalize(binary()).ok(),
        "{:?}",
        demo.mint
    );
    let minted = process::output(Command::new(&demo.mint[0]).args(&demo.mint[1..]));
    assert!(minted.status.success(), "{minted:?}");
    let token = String::from_utf8(minted.stdout).unwrap().trim().to_owned();
    let bindings = demo.dir.path().join("bindings.json");
    let text = std::fs::read_to_string(&bindings).unwrap();
    assert!(text.contains("\"provisioning\""), "{text}");
    nexus_e2e::edge::write_atomically(&bindings, &text.replace("\"provisioning\"", "\"active\""));
    let auth = format!("Bearer {token}");
    let r = nexus_e2e::wait::until(START, "initech served with the minted token", || {
        let r = get(
            listen,
            "initech.nexus.localhost",
            "/dashboard",
            &[("Authorization", &auth)],
        );
        (r.status == 200).then_some(r)
    });
    assert_eq!(r.json()["instance"], "demo-instance-b", "{}", r.text());
    assert_eq!(r.json()["x-tenant-id"], "initech", "{}", r.text());
}

/// `nexus-edge serve` with no config file: the embedded default (demo keys, demo bindings)
/// loads and decides requests, on ports given on the command line.
#[test]
fn serve_without_a_config_runs_the_embedded_default() {
    let mut run = Running::spawn(&mut serve(PUBLIC_LISTEN, OPS_LISTEN));
    let (listen, _) = wait_serving(&mut run, "the router ready");
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/demo/demo-es256-key.pem"
    );
    let minted = nexus_e2e::edge::cli(&[
        "token",
        "--tenant",
        "acme",
        "--org",
        "org-acme",
        "--key",
        key,
        "--kid",
        "demo-es256",
    ]);
    assert!(minted.status.success(), "{minted:?}");
    // A tenant id that is not canonical would never match: no token is minted for it.
    let refused = nexus_e2e::edge::cli(&["token", "--tenant", "ACME", "--key", key]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    // Nor for claims the router would refuse or read otherwise than meant.
    for bad in [
        &["--tenant-claim", "exp"][..],
        &["--tenant-claim", "nbf"],
        &["--org-claim", "sub", "--org", "o"],
        &["--org-claim", "tenant_id", "--org", "o"],
        &["--sub", " admin"],
        &["--sub", ""],
        &["--org", "org\tx\n"],
        &["--org", "org\u{85}x"],
        // A token valid for less than a second, or for more than a year.
        &["--ttl", "0s"],
        &["--ttl", "500ms"],
        &["--ttl", "400d"],
    ] {
        let mut args = vec!["token", "--tenant", "acme", "--key", key];
        args.extend_from_slice(bad);
        let out = nexus_e2e::edge::cli(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
        // The reason names the claim the flag sets.
        if bad[0] == "--org" {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("org claim"), "{bad:?}: {stderr}");
        }
    }
    // A key that is no regular file is refused, not waited on.
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("key.pem");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let out = process::output_within(
        Command::new(binary())
            .args(["token", "--tenant", "acme", "--key"])
            .arg(&fifo),
        START,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a regular file"),
        "{out:?}"
    );
    let token = String::from_utf8(minted.stdout).expect("utf8");
    let bearer = format!("Bearer {}", token.trim());
    let auth = [("Authorization", bearer.as_str())];

    let no_token = get(listen, "acme.nexus.localhost", "/dashboard", &[]);
    assert_eq!(no_token.status, 401);
    let cross = get(listen, "globex.nexus.localhost", "/dashboard", &auth);
    assert_eq!(cross.status, 403, "{}", cross.text());
    let provisioning = get(listen, "initech.nexus.localhost", "/", &[]);
    assert_eq!(provisioning.status, 503);
    // Accepted and routed to acme's demo instance, by its custom domain too. Nothing listens
    // on the demo instance's port here, so the answer is the router's 502 (or the instance's
    // own answer, should something run there).
    for host in ["acme.nexus.localhost", "acme.example.test"] {
        let routed = get(listen, host, "/dashboard", &auth);
        assert!(
            routed.status == 502 || routed.status == 200,
            "{host}: {} {}",
            routed.status,
            routed.text()
        );
    }
}

/// `serve` on an address it cannot have stops at once with an error naming the address and
/// the listener; it used to live on for 30 s of bind retries, then without that listener (and
/// with its ops listener reporting ready).
#[test]
fn serve_stops_when_a_listen_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    for (role, listen, ops) in [
        ("public", taken_addr, OPS_LISTEN),
        ("ops", PUBLIC_LISTEN, taken_addr),
    ] {
        let out = process::output_within(&mut serve(listen, ops), START);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{role}: {err}");
        assert!(
            err.contains(&format!("cannot listen on {taken_addr} ({role}): ")),
            "{role}: {err}"
        );
    }
}

/// `nexus-edge serve` on the embedded default (no config).
fn serve(listen: SocketAddr, ops: SocketAddr) -> Command {
    let mut cmd = Command::new(binary());
    cmd.args(["serve", "--listen", &listen.to_string()])
        .args(["--admin-listen", &ops.to_string()])
        .env_remove("NEXUS_EDGE_CONFIG");
    cmd
}

/// Waits until the router `run` logs the addresses it bound, then until its own ops listener
/// answers `/readyz` with 200; returns (public, ops). Panics if it exits first.
fn wait_serving(run: &mut Running, what: &str) -> (SocketAddr, SocketAddr) {
    let (listen, ops) = run.wait_for(START, what, |_, err| match serving_addrs(err) {
        Some((listen, Some(ops))) => Some((listen, ops)),
        _ => None,
    });
    run.wait_for(START, what, |_, _| is_ready(ops).then_some(()));
    (listen, ops)
}

#[test]
fn a_demo_whose_port_is_taken_prints_no_commands_for_it() {
    // The printed lines would reach whatever holds the port.
    let dir = tempfile::tempdir().expect("dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let public = taken.local_addr().unwrap().to_string();
    let stderr = demo_refused(&public, &OPS_LISTEN.to_string(), dir.path());
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    // It says how to pick another, and it wrote nothing: no key left behind a failed start.
    assert!(stderr.contains("--listen ADDR picks another"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Runs the demo on `listen` and `admin_listen` in `dir`, expecting it to stop (exit 1)
/// before it prints any command; returns what it said on stderr.
fn demo_refused(listen: &str, admin_listen: &str, dir: &std::path::Path) -> String {
    let out = process::output_within(
        Command::new(binary())
            .args(["demo", "--listen", listen, "--admin-listen", admin_listen])
            .arg("--dir")
            .arg(dir),
        START,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stdout.contains("curl"), "{stdout}");
    stderr
}

#[test]
fn a_demo_given_one_address_for_both_listeners_prints_no_commands() {
    // Each port was tried alone, so one address given twice passed, the commands were
    // printed, and only then did the router refuse it.
    let dir = tempfile::tempdir().expect("dir");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let stderr = demo_refused(&addr, &addr, dir.path());
    // Refused for the ops listener, the second on the address: the public one had it.
    assert!(stderr.contains("(ops)"), "{stderr}");
}

#[test]
fn the_demo_replaces_links_in_its_directory_instead_of_writing_through_them() {
    // `--dir` holding links named like the demo's files: it wrote its key set and bindings
    // into the files they named.
    let dir = tempfile::tempdir().expect("dir");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    for name in ["jwks.json", "bindings.json", "signing-key.pem"] {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
    }
    let (demo, _, _) = start_demo_in(dir);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    for name in ["jwks.json", "bindings.json", "signing-key.pem"] {
        let made = std::fs::symlink_metadata(demo.dir.path().join(name)).unwrap();
        assert!(made.file_type().is_file(), "{name}: {made:?}");
    }
}
