//! Zero-downtime upgrade: `nexus-edge serve --upgrade` takes the listening sockets over from
//! the running router, which drains and exits; the real binary on both sides, requests
//! flowing throughout.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nexus_e2e::backend::Backend;
use nexus_e2e::edge::{
    binary, binding, bindings_file, cli, is_ready, Edge, EdgeOptions, ADMIN_API_LISTEN, BASE,
};
use nexus_e2e::http::{get, get_with_token, read_response, send_raw, Response};
use nexus_e2e::keys::TestKeys;
use nexus_e2e::process::Running;
use nexus_e2e::wait;
use nexus_edge::handover::wire;

const UPGRADE: &str = "upgrade_socket = \"upgrade.sock\"";

/// Long enough for the keep-alive clients to be told to reconnect before the old router's
/// idle connections are closed.
const DELAY: &str = "shutdown_delay = \"1s\"";

/// The admin API's token in the routers' tokens file: its listener is handed over too.
const ADMIN_TOKEN: &str = "nxa_handover-test-token";

fn host() -> String {
    format!("acme.{BASE}")
}

/// What the routers tell systemd: a stand-in for its notify socket (`NOTIFY_SOCKET`).
struct Systemd {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    heard: Mutex<Vec<String>>,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_nonblocking(true).unwrap();
        Systemd {
            socket,
            path,
            _dir: dir,
            heard: Mutex::new(Vec::new()),
        }
    }

    /// Every message so far, in order.
    fn heard(&self) -> Vec<String> {
        let mut heard = self.heard.lock().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        heard.clone()
    }

    /// The process systemd would take as the service's main one: the last `MAINPID`, if any.
    fn main_pid(&self) -> Option<u32> {
        self.heard().iter().rev().find_map(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MAINPID="))
                .and_then(|p| p.parse().ok())
        })
    }
}

fn world(systemd: &Systemd) -> (TestKeys, Backend, Edge) {
    let keys = TestKeys::new();
    let backend = Backend::start("instance-a");
    let mut opts = EdgeOptions::new(
        keys.jwks(),
        bindings_file(vec![binding("acme", &backend.url(), "active", None)]),
    );
    opts.server_extra = format!("{UPGRADE}\n{DELAY}");
    opts.extra = format!(
        "\n[admin_api]\nlisten = \"{ADMIN_API_LISTEN}\"\ntokens_file = \"admin-tokens.toml\"\n"
    );
    let digest: String = ring::digest::digest(&ring::digest::SHA256, ADMIN_TOKEN.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    opts.files = vec![(
        "admin-tokens.toml".to_owned(),
        format!("[[token]]\nname = \"ci\"\nsha256 = \"{digest}\"\n"),
    )];
    // Room for a slow request in flight across a handover.
    opts.read_timeout = "30s";
    opts.env = vec![(
        "NOTIFY_SOCKET".to_owned(),
        systemd.path.display().to_string(),
    )];
    let edge = Edge::start(&opts);
    (keys, backend, edge)
}

/// `nexus-edge serve --upgrade` with `config`, under `systemd`.
fn successor(config: &Path, systemd: &Systemd) -> Running {
    Running::spawn(
        Command::new(binary())
            .env("NOTIFY_SOCKET", &systemd.path)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--upgrade"),
    )
}

/// Clients sending requests until stopped, half of them each on a new connection, half on
/// keep-alive connections (reconnecting when told to close): what they got.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<JoinHandle<()>>,
}

/// Sends `raw` on `conn` (a new connection when there is none) and reads the answer; drops
/// the connection when the answer says it closes.
fn keep_alive_get(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    raw: &[u8],
) -> std::io::Result<Response> {
    let mut s = match conn.take() {
        Some(s) => s,
        None => {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s
        }
    };
    s.write_all(raw)?;
    let r = read_response(&mut s)?;
    if !r
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close"))
    {
        *conn = Some(s);
    }
    Ok(r)
}

impl Load {
    fn start(addr: SocketAddr, token: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients =
            (0..clients)
                .map(|i| {
                    let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                    let keep_alive = i % 2 == 1;
                    let raw =
                        format!(
                    "GET /work HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n{}\r\n",
                    host(),
                    if keep_alive { "" } else { "Connection: close\r\n" }
                );
                    std::thread::spawn(move || {
                        let mut conn: Option<TcpStream> = None;
                        while !stop.load(Ordering::Relaxed) {
                            let answer = if keep_alive {
                                keep_alive_get(&mut conn, addr, raw.as_bytes())
                            } else {
                                send_raw(addr, raw.as_bytes())
                            };
                            match answer {
                                Ok(r) if r.status == 200 => {
                                    ok.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(r) => failures.lock().unwrap().push(format!(
                                    "{}: {}",
                                    r.status,
                                    r.text()
                                )),
                                Err(e) => failures.lock().unwrap().push(format!(
                                    "{}: {e}",
                                    if keep_alive {
                                        "keep-alive"
                                    } else {
                                        "new connection"
                                    }
                                )),
                            }
                        }
                    })
                })
                .collect();
        Load {
            stop,
            ok,
            failures,
            clients,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits for `n` more answered requests.
    fn wait_more(&self, n: u64) {
        let from = self.ok();
        wait::until(Duration::from_secs(30), "requests answered", || {
            (self.ok() >= from + n).then_some(())
        });
    }

    /// Stops the clients; the requests answered, and every failure.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn an_upgrade_takes_the_listeners_over_without_failing_a_request_and_applies_the_new_config() {
    let systemd = Systemd::new();
    let (keys, _backend, mut edge) = world(&systemd);
    assert_eq!(systemd.heard(), ["READY=1\nSTATUS=serving"]);
    let token = keys.token("acme", None);
    // Not public yet: the new config makes it so.
    assert_eq!(get(edge.addr, &host(), "/open/page", &[]).status, 401);
    let config = std::fs::read_to_string(&edge.config_path).unwrap();
    let changed = config.replace(
        "public_paths = [\"/login\", \"/assets/\"]",
        "public_paths = [\"/login\", \"/assets/\", \"/open/\"]",
    );
    assert_ne!(changed, config);

    let load = Load::start(edge.addr, &token, 4);
    load.wait_more(50);
    // A request in flight across the handover is answered by the router that took it.
    let addr = edge.addr;
    let slow_token = token.clone();
    let in_flight =
        std::thread::spawn(move || get_with_token(addr, &host(), "/slow/6000", &slow_token));

    std::fs::write(&edge.config_path, &changed).unwrap();
    let mut next = successor(&edge.config_path, &systemd);
    next.wait_for(Duration::from_secs(30), "the take-over", |_, err| {
        err.contains("took the listeners over").then_some(())
    });
    // Told before the old router could exit: systemd never sees the service's main process end.
    assert_eq!(systemd.main_pid(), Some(next.pid()));
    // A signal to the old router once it drains (a supervisor stopping whatever is left) does
    // not cut what is in flight there: the first is only noted.
    edge.wait_for("the drain", || {
        edge.log().contains("INFO nexus_edge::signals: draining")
    });
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight"
    );
    edge.terminate();
    edge.wait_for("the signal noted", || {
        edge.log()
            .contains("a signal after the handover: already draining")
    });
    let old = edge.wait_exit(Duration::from_secs(20));
    assert!(old.success(), "the old router exits 0 once drained: {old}");
    assert_eq!(in_flight.join().unwrap().status, 200);
    // The successor alone now: the same ports, the new config.
    load.wait_more(50);
    let (answered, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the handover: {:?}\n{}",
        failures.len(),
        answered + failures.len() as u64,
        &failures[..failures.len().min(5)],
        next.describe()
    );
    assert_eq!(get(edge.addr, &host(), "/open/page", &[]).status, 200);
    assert!(
        is_ready(edge.ops_addr),
        "the ops listener is the successor's"
    );
    let api = edge.admin_api_addr();
    let listed = get_with_token(api, "admin", "/v1/tenants/acme", ADMIN_TOKEN);
    assert_eq!(
        listed.status, 200,
        "the admin API is the successor's: {listed:?}"
    );
    let log = edge.log();
    assert!(log.contains("handed over: the successor serves"), "{log}");
    assert!(
        log.contains(&format!("successor_pid={}", next.pid())),
        "{log}"
    );

    // The successor offers the listeners in turn: a second upgrade, by `nexus-edge upgrade`,
    // which returns once the new router has taken over and leaves it running.
    let load = Load::start(edge.addr, &token, 2);
    load.wait_more(20);
    // Its output to files: the new router inherits them, and outlives it.
    let (out, err) = (
        edge.dir.path().join("upgrade.out"),
        edge.dir.path().join("upgrade.err"),
    );
    let mut upgrading = Command::new(binary())
        .env("NOTIFY_SOCKET", &systemd.path)
        .arg("upgrade")
        .arg("--config")
        .arg(&edge.config_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = wait::poll(Duration::from_secs(60), || {
        upgrading.try_wait().ok().flatten()
    });
    let said = std::fs::read_to_string(&out).unwrap();
    let logged = std::fs::read_to_string(&err).unwrap();
    let Some(status) = status else {
        let _ = upgrading.kill();
        panic!("`nexus-edge upgrade` still running after 60 s: {said}{logged}");
    };
    assert!(status.success(), "{said}{logged}");
    let third: u32 = said
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    let _third = Detached(third);
    assert!(said.contains("took the listeners over"), "{said}");
    assert_eq!(systemd.main_pid(), Some(third));
    assert!(next.wait_exit(Duration::from_secs(20)).success());
    load.wait_more(20);
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        next.stderr().contains(&format!("successor_pid={third}")),
        "{}",
        next.describe()
    );
    assert!(is_ready(edge.ops_addr), "the third router serves");
}

/// A router started by `nexus-edge upgrade` (not this test's child): killed on drop.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn a_successor_that_fails_after_taking_the_sockets_leaves_the_running_router_serving() {
    let systemd = Systemd::new();
    let (keys, _backend, mut edge) = world(&systemd);
    let token = keys.token("acme", None);
    // The successor's config moves the ops listener to an address another socket holds:
    // it takes the public listener, then cannot bind that one, and exits.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = std::fs::read_to_string(&edge.config_path).unwrap();
    let ops_line = config
        .lines()
        .find(|l| l.starts_with("admin_listen"))
        .unwrap()
        .to_owned();
    let broken = edge.dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        config.replace(
            &ops_line,
            &format!("admin_listen = \"{}\"", held.local_addr().unwrap()),
        ),
    )
    .unwrap();

    let load = Load::start(edge.addr, &token, 2);
    load.wait_more(20);
    let failed = successor(&broken, &systemd).finish(Duration::from_secs(30));
    assert!(!failed.status.success());
    let said = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(said.contains("cannot listen on"), "{said}");
    edge.wait_for("the handover given up", || {
        edge.log()
            .contains("handover not done: this router goes on serving")
    });
    load.wait_more(20);
    let (_, failures) = load.finish();
    assert!(failures.is_empty(), "{failures:?}");
    assert!(edge.try_exit_status().is_none(), "{}", edge.log());
    assert_eq!(systemd.main_pid(), None, "{:?}", systemd.heard());

    // And it still hands over to a successor that can serve.
    let mut next = successor(&edge.config_path, &systemd);
    next.wait_for(Duration::from_secs(30), "the take-over", |_, err| {
        err.contains("took the listeners over").then_some(())
    });
    assert!(edge.wait_exit(Duration::from_secs(20)).success());
    assert_eq!(get_with_token(edge.addr, &host(), "/x", &token).status, 200);
}

#[test]
fn the_upgrade_socket_is_one_routers_and_an_upgrade_needs_one() {
    let systemd = Systemd::new();
    let (_keys, _backend, edge) = world(&systemd);
    // A second router with the same config: refused before it binds anything.
    let beside = cli(&["serve", "--config", &edge.config_path.display().to_string()]);
    assert!(!beside.status.success());
    let said = String::from_utf8_lossy(&beside.stderr).into_owned();
    assert!(
        said.contains("a router is already running with upgrade_socket")
            && said.contains("serve --upgrade"),
        "{said}"
    );

    // Nothing to take over.
    let dir = tempfile::tempdir().unwrap();
    let lonely = edge.dir.path().join("lonely.toml");
    let nobody = format!(
        "upgrade_socket = {:?}",
        dir.path().join("nobody.sock").display().to_string()
    );
    let config = std::fs::read_to_string(&edge.config_path)
        .unwrap()
        .replace(UPGRADE, &nobody);
    std::fs::write(&lonely, &config).unwrap();
    let alone = successor(&lonely, &systemd).finish(Duration::from_secs(30));
    assert!(!alone.status.success());
    let said = String::from_utf8_lossy(&alone.stderr).into_owned();
    assert!(
        said.contains("no router answers at upgrade_socket"),
        "{said}"
    );

    // `nexus-edge upgrade` says when the new router gave up.
    let gave_up = cli(&["upgrade", "--config", &lonely.display().to_string()]);
    assert!(!gave_up.status.success());
    let said = String::from_utf8_lossy(&gave_up.stderr).into_owned();
    assert!(
        said.contains("no router answers at upgrade_socket")
            && said.contains("without taking the listeners over"),
        "{said}"
    );

    // No upgrade socket in the config.
    let without = edge.dir.path().join("without.toml");
    std::fs::write(&without, config.replace(&nobody, "")).unwrap();
    let refused = successor(&without, &systemd).finish(Duration::from_secs(30));
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        said.contains("--upgrade takes the listeners over through [server] upgrade_socket"),
        "{said}"
    );
    // The running router noticed none of it.
    assert!(is_ready(edge.ops_addr));
    assert!(!edge.log().contains("handover not done"), "{}", edge.log());
    assert_eq!(systemd.heard(), ["READY=1\nSTATUS=serving"]);
}

/// A router's config, with no router: the test plays the predecessor at its upgrade socket,
/// with listeners of its own at the config's addresses.
struct Predecessor {
    door: std::os::unix::net::UnixListener,
    public: std::net::TcpListener,
    ops: std::net::TcpListener,
}

impl Predecessor {
    fn instead_of(edge: &mut Edge) -> Predecessor {
        edge.terminate();
        assert!(edge.wait_exit(Duration::from_secs(20)).success());
        let path = edge.dir.path().join("upgrade.sock");
        assert!(!path.exists(), "a stopped router leaves its upgrade socket");
        Predecessor {
            door: std::os::unix::net::UnixListener::bind(&path).unwrap(),
            public: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            ops: std::net::TcpListener::bind("127.0.0.2:0").unwrap(),
        }
    }

    /// Takes the successor's request.
    fn asked(&self) -> std::os::unix::net::UnixStream {
        let (mut conn, _) = self.door.accept().unwrap();
        assert_eq!(wire::read_line(&mut conn).unwrap(), wire::REQUEST);
        conn
    }

    /// Sends copies of its listeners.
    fn hand_over(&self, conn: &mut std::os::unix::net::UnixStream) {
        wire::send_answer(
            conn,
            &wire::Answer::Listeners(vec!["127.0.0.1:0".to_owned(), "127.0.0.2:0".to_owned()]),
            &[
                self.public.try_clone().unwrap(),
                self.ops.try_clone().unwrap(),
            ],
        )
        .unwrap();
    }
}

/// A successor started against a predecessor the test plays, which has its request.
struct Staged {
    systemd: Systemd,
    _backend: Backend,
    _edge: Edge,
    predecessor: Predecessor,
    /// The predecessor's public listener.
    addr: SocketAddr,
    next: Running,
    conn: std::os::unix::net::UnixStream,
}

fn staged() -> Staged {
    let systemd = Systemd::new();
    let (_keys, backend, mut edge) = world(&systemd);
    let predecessor = Predecessor::instead_of(&mut edge);
    let addr = predecessor.public.local_addr().unwrap();
    let next = successor(&edge.config_path, &systemd);
    let conn = predecessor.asked();
    Staged {
        systemd,
        _backend: backend,
        _edge: edge,
        predecessor,
        addr,
        next,
        conn,
    }
}

#[test]
fn a_successor_whose_predecessor_never_confirms_drains_and_exits_1() {
    let mut s = staged();
    s.predecessor.hand_over(&mut s.conn);
    assert_eq!(wire::read_line(&mut s.conn).unwrap(), wire::SERVING);
    // It serves on the socket it was given.
    let r = get(s.addr, &host(), "/login", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), s.next.describe());
    // And hears nothing back.
    drop(s.conn);
    let status = s.next.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", s.next.describe());
    assert!(
        s.next.stderr().contains("handover not confirmed"),
        "{}",
        s.next.describe()
    );
    // The sockets are the predecessor's still: open, queueing connections for it.
    let _queued = TcpStream::connect(s.addr).unwrap();
    assert!(!s.systemd.heard().iter().any(|m| m.contains("MAINPID")));
}

#[test]
fn a_successor_told_to_stop_before_it_confirms_leaves_the_sockets_to_its_predecessor() {
    let mut s = staged();
    // The operator calls the upgrade off while the successor waits for the sockets.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(s.next.pid().to_string())
        .status();
    s.predecessor.hand_over(&mut s.conn);
    // It never says it serves: the connection ends without a word.
    let said = wire::read_line(&mut s.conn).map_err(|e| e.to_string());
    assert!(
        said.as_ref().is_err_and(|e| e.contains("closed")),
        "{said:?}\n{}",
        s.next.describe()
    );
    let status = s.next.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", s.next.describe());
    assert!(
        s.next
            .stderr()
            .contains("called off before the handover was confirmed"),
        "{}",
        s.next.describe()
    );
    let _queued = TcpStream::connect(s.addr).unwrap();
}
