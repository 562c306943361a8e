//! The real `nexus-edge` binary, started on a generated config, killed on drop.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait;

/// Path of the `nexus-edge` binary built by this `cargo test` run (override: NEXUS_EDGE_BIN).
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_EDGE_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; the binary in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("nexus-edge");
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (which builds the binary) or set NEXUS_EDGE_BIN",
        bin.display()
    );
    bin
}

/// Where a router's public listener is configured: port 0, the system picks a free port and
/// the router logs it (see [`serving_addrs`]), so no other process can be handed the same one.
///
/// The harness keeps loopback addresses apart: 127.0.0.1 for every server a test starts
/// (routers' public listeners, instances, Redis), [`OPS_LISTEN`]'s 127.0.0.2 for routers' ops
/// listeners, [`HTTPS_LISTEN`]'s 127.0.0.4 and [`ADMIN_API_LISTEN`]'s 127.0.0.5 for routers'
/// HTTPS and admin API listeners, and [`UNBOUND_IP`] for nothing at all. None binds a wildcard
/// address.
pub const PUBLIC_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// Where a router's ops listener is configured: port 0 on another loopback address than
/// [`PUBLIC_LISTEN`], since a router sets its listeners apart by their configured address and
/// refuses `127.0.0.1:0` for both.
pub const OPS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 0));

/// Where a router's HTTPS listener is configured (`[tls] listen`), when a test gives it one:
/// port 0 on a loopback address of its own, for the reason [`OPS_LISTEN`] has one.
pub const HTTPS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 4), 0));

/// Where a router's admin API listens (`[admin_api] listen`), when a test gives it one: port 0
/// on a loopback address of its own, for the reason [`OPS_LISTEN`] has one.
pub const ADMIN_API_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 5), 0));

/// A loopback address no harness server ever binds (see [`dead_addr`]).
pub const UNBOUND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// An address where nothing listens, for an unreachable instance: a connection to it is
/// refused at once.
///
/// A port the system just gave on [`UNBOUND_IP`], then released: nothing in the harness binds
/// that address (its servers bind 127.0.0.1 or 127.0.0.2 by name, never a wildcard), so no
/// other test can be listening there now or later; and the system hands out no port a
/// wildcard listener holds, so only an unrelated process binding `0.0.0.0` on that very port
/// from now on could answer.
pub fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind((UNBOUND_IP, 0)).expect("bind 127.0.0.3:0");
    l.local_addr().expect("local addr")
}

/// The addresses a router says it bound, from its log's `nexus-edge serving listen=ADDR
/// admin=Some(ADDR)` line (text format): the public listener and the ops listener, if any.
/// Only whole lines count, so a line still being written is not misread.
pub fn serving_addrs(log: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let line = log
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .find(|l| l.contains("nexus-edge serving listen="))?;
    let field = |name: &str| {
        line.split(&format!(" {name}="))
            .nth(1)?
            .split_whitespace()
            .next()
    };
    let listen = field("listen")?.parse().ok()?;
    let admin = match field("admin")? {
        "None" => None,
        a => Some(a.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()?),
    };
    Some((listen, admin))
}

/// The HTTPS listener's address a router says it bound (`https=Some(ADDR)` in the line
/// [`serving_addrs`] reads), when it has one.
pub fn serving_https(log: &str) -> Option<SocketAddr> {
    let line = log
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .find(|l| l.contains("nexus-edge serving listen="))?;
    let value = line.split(" https=").nth(1)?.split_whitespace().next()?;
    value.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()
}

/// The admin API's address a router says it bound (`admin_api=Some(ADDR)` in the line
/// [`serving_addrs`] reads), when it has one.
pub fn serving_admin_api(log: &str) -> Option<SocketAddr> {
    let line = log
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .find(|l| l.contains("nexus-edge serving listen="))?;
    let value = line
        .split(" admin_api=")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let addr = value
        .strip_prefix("Some(")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(value);
    addr.parse().ok()
}

/// Whether the router whose ops listener is `ops` answers `/readyz` with 200.
pub fn is_ready(ops: SocketAddr) -> bool {
    crate::http::send_raw(
        ops,
        b"GET /readyz HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n",
    )
    .is_ok_and(|r| r.status == 200)
}

/// What to put in the generated config.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    /// The JWKS the router verifies with.
    pub jwks: serde_json::Value,
    /// The bindings file content.
    pub bindings: serde_json::Value,
    /// Extra lines in `[tenancy]`.
    pub tenancy_extra: String,
    /// Extra TOML appended to `[tenancy]`/`[auth]`/`[upstream]` defaults (whole sections).
    pub extra: String,
    /// `[upstream] read_timeout`.
    pub read_timeout: &'static str,
    /// `[server] shutdown_grace`.
    pub shutdown_grace: &'static str,
    /// A whole `[store]` section replacing the default file store (e.g. Redis).
    pub store: Option<String>,
    /// Extra `[server]` keys (e.g. `trusted_proxies = [...]`).
    pub server_extra: String,
    /// Extra `[upstream]` keys (e.g. `ca_file = "..."`).
    pub upstream_extra: String,
    /// Extra `[auth]` keys (e.g. `max_token_lifetime = "1h"`).
    pub auth_extra: String,
    /// Where `[auth]` takes its keys from, replacing `jwks_file = "jwks.json"` (e.g.
    /// `jwks_url = "..."`); the `jwks` file is written either way.
    pub jwks_source: Option<String>,
    /// `[auth] issuers` (the test tokens' issuer alone by default).
    pub issuers: Vec<String>,
    /// Start the router with this soft open-file limit (`ulimit -S -n`).
    pub open_files: Option<u64>,
    /// With [`Self::open_files`]: make it the hard limit too, which the router cannot raise.
    pub open_files_hard: bool,
    /// More environment variables for the router (e.g. [`crate::clock::skewed`]).
    pub env: Vec<(String, String)>,
    /// More files written into the config's directory before the router starts: (name
    /// relative to that directory, content), e.g. an `[admin_api] tokens_file`.
    pub files: Vec<(String, String)>,
}

impl EdgeOptions {
    /// Options with the given keys and bindings.
    pub fn new(jwks: serde_json::Value, bindings: serde_json::Value) -> Self {
        Self {
            jwks,
            bindings,
            tenancy_extra: String::new(),
            extra: String::new(),
            read_timeout: "5s",
            shutdown_grace: "5s",
            store: None,
            server_extra: String::new(),
            upstream_extra: String::new(),
            auth_extra: String::new(),
            jwks_source: None,
            issuers: vec!["https://id.edge.test".to_owned()],
            open_files: None,
            open_files_hard: false,
            env: Vec::new(),
            files: Vec::new(),
        }
    }
}

/// A running router process.
pub struct Edge {
    child: Child,
    /// Proxy listener, as bound: set by [`Edge::wait_listening`] (which [`Edge::start`] and
    /// [`Edge::wait_ready`] call); until then the configured [`PUBLIC_LISTEN`].
    pub addr: SocketAddr,
    /// Ops listener (metrics, probes), as bound: like `addr`, [`OPS_LISTEN`] until then.
    pub ops_addr: SocketAddr,
    /// Config, keys and bindings live here.
    pub dir: tempfile::TempDir,
    /// The bindings file the router watches.
    pub bindings_path: PathBuf,
    /// The JWKS file the router watches.
    pub jwks_path: PathBuf,
    /// The generated config file.
    pub config_path: PathBuf,
}

/// The base domain every test config uses.
pub const BASE: &str = "edge.test";

impl Edge {
    /// Writes the config and starts the binary; returns once `/readyz` answers.
    pub fn start(opts: &EdgeOptions) -> Edge {
        Self::try_start(opts).unwrap_or_else(|e| panic!("nexus-edge did not start: {e}"))
    }

    /// Like [`Edge::start`] but returns the failure (with the router's log) instead of panicking.
    pub fn try_start(opts: &EdgeOptions) -> Result<Edge, String> {
        let mut edge = Self::spawn(opts)?;
        edge.wait_ready(Duration::from_secs(20))?;
        Ok(edge)
    }

    /// Writes the config and starts the binary, without waiting for it to be ready (nor to
    /// listen: `addr` and `ops_addr` are known once [`Edge::wait_listening`] returns).
    pub fn spawn(opts: &EdgeOptions) -> Result<Edge, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let jwks_path = dir.path().join("jwks.json");
        let bindings_path = dir.path().join("bindings.json");
        std::fs::write(&jwks_path, opts.jwks.to_string()).map_err(|e| e.to_string())?;
        write_atomically(&bindings_path, &opts.bindings.to_string());
        for (name, content) in &opts.files {
            std::fs::write(dir.path().join(name), content).map_err(|e| e.to_string())?;
        }
        let (addr, ops_addr) = (PUBLIC_LISTEN, OPS_LISTEN);
        let config = format!(
            r#"[server]
listen = "{addr}"
admin_listen = "{ops_addr}"
threads = 2
shutdown_grace = "{shutdown_grace}"
{server_extra}

[tenancy]
base_domains = ["{BASE}"]
public_paths = ["/login", "/assets/"]
recovery_paths = ["/billing", "/admin/recovery"]
api_prefix = "/api/"
provisioning_retry_after = "30s"
past_due_header = "x-nexus-billing-notice"
{tenancy_extra}

[auth]
{jwks_source}
issuers = {issuers:?}
audiences = ["nexus"]
leeway = "5s"
session_cookie = "nexus_session"
{auth_extra}

[upstream]
connect_timeout = "1s"
read_timeout = "{read_timeout}"
{upstream_extra}

{store}

[log]
filter = "info"
{extra}
"#,
            read_timeout = opts.read_timeout,
            shutdown_grace = opts.shutdown_grace,
            server_extra = opts.server_extra,
            upstream_extra = opts.upstream_extra,
            auth_extra = opts.auth_extra,
            jwks_source = opts
                .jwks_source
                .as_deref()
                .unwrap_or("jwks_file = \"jwks.json\""),
            tenancy_extra = opts.tenancy_extra,
            issuers = opts.issuers,
            extra = opts.extra,
            store = opts.store.clone().unwrap_or_else(|| {
                "[store]\nkind = \"file\"\npath = \"bindings.json\"\npoll_interval = \"50ms\""
                    .to_owned()
            }),
        );
        let config_path = dir.path().join("nexus-edge.toml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("edge.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = match opts.open_files {
            None => Command::new(binary()),
            Some(n) => {
                // The shell sets the limit and becomes the router (same process id).
                let mut c = Command::new("sh");
                let hard = if opts.open_files_hard {
                    format!(" && ulimit -H -n {n}")
                } else {
                    String::new()
                };
                c.arg("-c")
                    .arg(format!("ulimit -S -n {n}{hard} && exec \"$0\" \"$@\""))
                    .arg(binary());
                c
            }
        };
        let child = command
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(Edge {
            child,
            addr,
            ops_addr,
            dir,
            bindings_path,
            jwks_path,
            config_path,
        })
    }

    /// Waits until the router has bound its listeners and logged where (see
    /// [`serving_addrs`]), and sets `addr` and `ops_addr` to those addresses. Fails if the
    /// process exits first or `timeout` passes.
    pub fn wait_listening(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            // The line is read before the exit status: a router that exits after logging
            // it still listened.
            if let Some((addr, Some(ops))) = serving_addrs(&self.log()) {
                self.addr = addr;
                self.ops_addr = ops;
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if Instant::now() >= deadline {
                return Err(format!("not listening after {timeout:?}: {}", self.log()));
            }
            // Short pauses: a test may want to act just as the listeners accept.
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }

    /// Waits for the router to listen (see [`Edge::wait_listening`]), then polls `/readyz` on
    /// its own ops listener until it answers 200, the process exits, or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        self.wait_listening(timeout)?;
        let rest = deadline.saturating_duration_since(Instant::now());
        let ready = crate::wait::poll(rest, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(Err(format!("exited with {status}: {}", self.log())));
            }
            // Ready implies the public port accepts: both listeners are bound before start-up.
            is_ready(self.ops_addr).then_some(Ok(()))
        });
        ready.unwrap_or_else(|| Err(format!("not ready after {timeout:?}: {}", self.log())))
    }

    /// The HTTPS listener's address, as bound (the router must have a `[tls]` section, and
    /// be listening: see [`Edge::wait_listening`]).
    pub fn https_addr(&self) -> SocketAddr {
        serving_https(&self.log())
            .unwrap_or_else(|| panic!("no HTTPS listener in the log: {}", self.log()))
    }

    /// The admin API's address, as bound (the router must have an `[admin_api]` section, and
    /// be listening: see [`Edge::wait_listening`]).
    pub fn admin_api_addr(&self) -> SocketAddr {
        serving_admin_api(&self.log())
            .unwrap_or_else(|| panic!("no admin API listener in the log: {}", self.log()))
    }

    /// The router's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("edge.log")).unwrap_or_default()
    }

    /// Replaces the bindings file (atomically, as documented for writers).
    pub fn write_bindings(&self, bindings: &serde_json::Value) {
        write_atomically(&self.bindings_path, &bindings.to_string());
    }

    /// GET on the ops listener.
    pub fn ops_get(&self, path: &str) -> crate::http::Response {
        crate::http::get(self.ops_addr, "ops", path, &[])
    }

    /// The value the router's `/metrics` give for the series `name` (with its labels, if any).
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.ops_get("/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    }

    /// The binding table revision the router serves.
    pub fn revision(&self) -> u64 {
        self.ops_get("/bindings/revision")
            .text()
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Polls until `cond` holds for a GET of `host` `path` with `token`.
    pub fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        wait::until(Duration::from_secs(10), what, || cond().then_some(()));
    }

    /// The router's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (graceful drain).
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    /// The exit status, if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit, with a deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait::until(timeout, "nexus-edge to exit", || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- nexus-edge log ----\n{}", self.log());
        }
    }
}

/// Runs `nexus-edge ARGS` (e.g. `tenant rebind ...`) and returns its output; panics if it
/// runs past [`crate::process::DEADLINE`].
pub fn cli(args: &[&str]) -> std::process::Output {
    crate::process::output(Command::new(binary()).args(args))
}

/// Writes a file the way the docs tell writers to: temp file, then rename.
pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A binding record for tests.
pub fn binding(tenant: &str, url: &str, status: &str, org: Option<&str>) -> serde_json::Value {
    let mut b = serde_json::json!({
        "tenant_id": tenant,
        "subscription_id": format!("sub-{tenant}"),
        "instance_id": format!("inst-{tenant}"),
        "instance_url": url,
        "status": status,
        "plan": "team",
        "region": "local",
    });
    if let Some(o) = org {
        b["identity_org_id"] = serde_json::Value::String(o.to_owned());
    }
    b
}

/// A bindings file body.
pub fn bindings_file(records: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({ "format": "nexus-edge.bindings/v1", "bindings": records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_line_gives_the_bound_addresses_once_whole() {
        let line = "2026-01-01T00:00:00.000000Z  INFO nexus_edge::server: nexus-edge serving \
                    listen=127.0.0.1:41899 admin=Some(127.0.0.2:40919)";
        let log = format!("earlier line: serving the embedded demo default\n{line}\n");
        let want: (SocketAddr, SocketAddr) = (
            "127.0.0.1:41899".parse().expect("addr"),
            "127.0.0.2:40919".parse().expect("addr"),
        );
        assert_eq!(serving_addrs(&log), Some((want.0, Some(want.1))));
        // Still being written: not read as a shorter port.
        assert_eq!(serving_addrs(&log[..log.len() - 4]), None);
        let no_ops = "x nexus-edge serving listen=127.0.0.1:1 admin=None\n";
        assert_eq!(
            serving_addrs(no_ops),
            Some(("127.0.0.1:1".parse().expect("addr"), None))
        );
    }

    #[test]
    fn the_serving_line_gives_the_admin_api_address_when_there_is_one() {
        let line = "x nexus-edge serving listen=127.0.0.1:1 admin=Some(127.0.0.2:2) https=None \
                    admin_api=Some(127.0.0.5:40919)\n";
        assert_eq!(
            serving_admin_api(line),
            Some("127.0.0.5:40919".parse().expect("addr"))
        );
        // The ops listener is not read for it, nor it for the ops listener.
        assert_eq!(
            serving_addrs(line).and_then(|(_, ops)| ops),
            Some("127.0.0.2:2".parse().expect("addr"))
        );
        let none = "x nexus-edge serving listen=127.0.0.1:1 admin=None https=None admin_api=None\n";
        assert_eq!(serving_admin_api(none), None);
        assert_eq!(serving_admin_api(&line[..line.len() - 1]), None);
    }
}
