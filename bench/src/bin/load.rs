//! The load harness: the same workload against a bare Pingora proxy (and the same proxy with
//! nexus-edge's default timeouts, to show what Pingora's timers cost), Nexus Edge (tokens in
//! rotation, and every token verified in full) and, when installed, HAProxy doing RS256
//! `jwt_verify` plus a map lookup and nginx routing by a host map (no token check: its
//! open-source build has none) — side by side in one run, with the ratios printed.
//!
//! Workload: HTTP/1.1 keep-alive, 10,000 tenants, RS256 tokens. Each proxy runs one worker
//! thread pinned to core 0 and wrk is pinned to core 1, so the proxy's core is the
//! bottleneck. The backend runs in this process, unpinned (the scheduler places it alike for
//! every target). Run with `scripts/bench-load.sh` (builds release binaries first).
//!
//! All targets are started first; then 7 rounds each give every target a 3-second wrk burst,
//! back to back, starting at a different target each round. A shared VM's speed drifts over a
//! minute by more than the differences measured, so ratios are taken between bursts of the
//! same round and printed as the median of the rounds with their range.
//!
//! `load [--smoke] [--callgrind] [--distinct N] [--addresses]`: `--smoke` runs one 1 s round
//! on 1,000 tenants (CI keeps it from rotting). `--callgrind` runs every proxy under `valgrind --tool=callgrind`
//! and prints the instructions each executes per request, counted only while its own bursts
//! run (after start-up and warm-up): a figure that does not change with whatever else the
//! machine is doing. Its profiles stay in the printed directory for `callgrind_annotate`.
//! `--distinct N` makes the 1,000-request rotation cycle through only N distinct tenants and
//! tokens (1..=1000): with a few, everything a request touches stays in the core's caches, so
//! comparing it with the default shows what cache misses cost.
//! `--addresses` gives each tenant in the rotation an instance of its own address (`127.1.x.y`,
//! as in production, where every tenant runs on its own instance); by default all tenants
//! share one (the worst case for nexus-edge, which keeps each tenant's instance connections
//! apart). Bare Pingora keeps its one fixed upstream; HAProxy's map then names a backend per
//! instance, so it too keeps connections per instance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nexus_bench::*;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} missing: run scripts/bench-load.sh (it builds it)",
        p.display()
    );
    p
}

/// The baseline every ratio is taken against; it is started first.
const BARE: &str = "bare Pingora proxy (no auth)";
/// The baseline with nexus-edge's default timeouts.
const BARE_TIMED: &str = "bare Pingora + nexus-edge's timeouts";
/// nexus-edge with its token cache on.
const ROTATION: &str = "nexus-edge, 1,000 tokens in rotation";
/// nexus-edge with its token cache off.
const EVERY_TOKEN: &str = "nexus-edge, every token verified (cache off)";
/// HAProxy, when installed.
const HAPROXY: &str = "HAProxy 2.6 (jwt_verify RS256 + map)";
/// nginx, when installed: routing by host alone (its open-source build verifies no JWT).
const NGINX: &str = "nginx (host map, no token check)";

/// Where callgrind profiles go, when the run is under callgrind.
static CALLGRIND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn pinned(core: &str, program: &Path) -> Command {
    let mut c = if Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core);
        c
    } else {
        Command::new("env")
    };
    if let Some(dir) = CALLGRIND.get() {
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        c.arg("valgrind").arg("--tool=callgrind").arg(format!(
            "--callgrind-out-file={}/callgrind.{name}.%p",
            dir.display()
        ));
    }
    c.arg(program);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Waits until `addr` answers an HTTP request for `host` with any status.
fn wait_http(addr: SocketAddr, host: &str) {
    let slow_start = if CALLGRIND.get().is_some() { 300 } else { 30 };
    let deadline = Instant::now() + Duration::from_secs(slow_start);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 16];
            if s.write_all(req.as_bytes()).is_ok() && s.read(&mut buf).unwrap_or(0) > 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// Upstream connections the backend accepted (a proxy that reuses connections opens few).
static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The backend addresses that accepted a connection since last cleared: shows that a target
/// reached each tenant's own instance under `--addresses`.
static REACHED: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());

/// A minimal keep-alive HTTP backend (fixed 200) listening on each of `ips` (port chosen by
/// the system), so the proxy, not the backend, is measured. One thread serves every
/// connection of every address from an event loop, as an instance's server would: a thread
/// per connection made a proxy that keeps many connections (one tenant's each) pay to wake a
/// different cold thread for every request, which no production instance asks of it.
fn start_backends(ips: &[IpAddr]) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = ips
        .iter()
        .map(|ip| {
            let l = TcpListener::bind((*ip, 0)).unwrap();
            l.set_nonblocking(true).unwrap();
            l
        })
        .collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut accepting = Vec::new();
            for listener in listeners {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                accepting.push(tokio::spawn(async move {
                    loop {
                        if let Ok((stream, _)) = listener.accept().await {
                            ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if let Ok(local) = stream.local_addr() {
                                REACHED.lock().unwrap().push(local);
                            }
                            tokio::spawn(serve(stream));
                        }
                    }
                }));
            }
            for a in accepting {
                let _ = a.await;
            }
        });
    });
    addrs
}

/// The loopback address of the instance of rotation slot `j` under `--addresses`
/// (`127.1.0.1` up to `127.1.3.250`: all of `127.0.0.0/8` reaches this host on Linux).
fn slot_ip(j: usize) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        1,
        (j / 250) as u8,
        (j % 250 + 1) as u8,
    ))
}

async fn serve(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16384];
    let mut filled = 0;
    const RESP: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
    loop {
        match s.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        // Answer every complete request head in the buffer (GETs, no bodies).
        let mut start = 0;
        while let Some(end) = buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            if s.write_all(RESP).await.is_err() {
                return;
            }
            start += end + 4;
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return;
        }
    }
}

const LUA: &str = r#"
local lines = {}
for l in io.lines(os.getenv("NEXUS_LOAD_REQS")) do lines[#lines + 1] = l end
local i = math.random(#lines)
request = function()
  i = i % #lines + 1
  local host, tok = lines[i]:match("(%S+) (%S+)")
  return wrk.format("GET", "/api/items", { ["Host"] = host, ["Authorization"] = "Bearer " .. tok })
end
"#;

/// CPU time (user + system) a process has used so far, in microseconds, from /proc.
fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1e6 / clock_ticks())
}

/// Clock ticks per second for /proc times (asked once).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One wrk burst against one target.
struct Burst {
    rps: f64,
    requests: f64,
    /// The proxy's own CPU time over the burst (user + system), in µs.
    cpu_us: f64,
    errors: u64,
    /// Under `--callgrind`: instructions the proxy executed during the burst.
    instructions: Option<f64>,
}

impl Burst {
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu_us / self.requests.max(1.0)
    }
}

/// A running target and what was measured of it.
struct Target {
    label: &'static str,
    addr: SocketAddr,
    proc: Proc,
    bursts: Vec<Burst>,
}

impl Target {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    /// CPU per request over every burst. Unlike requests/s this does not move when the VM's
    /// other tenants steal cycles, so it is the steadier comparison.
    fn cpu_us_per_req(&self) -> f64 {
        let cpu: f64 = self.bursts.iter().map(|b| b.cpu_us).sum();
        cpu / self.requests().max(1.0)
    }

    fn requests(&self) -> f64 {
        self.bursts.iter().map(|b| b.requests).sum()
    }

    fn median_rps(&self) -> f64 {
        median(self.bursts.iter().map(|b| b.rps).collect())
    }

    fn errors(&self) -> u64 {
        self.bursts.iter().map(|b| b.errors).sum()
    }

    /// Under `--callgrind`: instructions per request over every burst (counted only while
    /// the target's own burst runs, so no idle time of the others is charged to it).
    fn instructions_per_req(&self) -> Option<f64> {
        let total: Option<f64> = self.bursts.iter().map(|b| b.instructions).sum();
        total.map(|i| i / self.requests().max(1.0))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-round ratios of `t` against `base` (same round, back to back): by requests/s and by
/// CPU per request (`base`'s over `t`'s, so above 1 means `t` is cheaper).
fn round_ratios(t: &Target, base: &Target) -> (Vec<f64>, Vec<f64>) {
    t.bursts
        .iter()
        .zip(&base.bursts)
        .map(|(a, b)| (a.rps / b.rps, b.cpu_us_per_req() / a.cpu_us_per_req()))
        .unzip()
}

/// `median (min–max)` of ratios, as percentages or as a factor.
fn spread(v: &[f64], percent: bool) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(v.to_vec());
    if percent {
        format!("{:.1}% ({:.1}–{:.1})", m * 100.0, lo * 100.0, hi * 100.0)
    } else {
        format!("{m:.2}x ({lo:.2}–{hi:.2})")
    }
}

/// Under callgrind: zeroes the counters of `pid` (before a burst: only the burst is counted).
fn callgrind_zero(pid: u32) {
    if CALLGRIND.get().is_some() {
        let ok = Command::new("callgrind_control")
            .arg("-z")
            .arg(pid.to_string())
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "callgrind_control -z {pid} failed");
    }
}

/// Under callgrind: dumps the counters of `pid` and returns the instructions since the zero.
fn callgrind_total(pid: u32) -> Option<f64> {
    let dir = CALLGRIND.get()?;
    let before: Vec<PathBuf> = callgrind_files(dir, pid);
    let ok = Command::new("callgrind_control")
        .arg("-d")
        .arg(pid.to_string())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "callgrind_control -d {pid} failed");
    let dump = callgrind_files(dir, pid)
        .into_iter()
        .find(|p| !before.contains(p))?;
    let text = std::fs::read_to_string(dump).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn callgrind_files(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let suffix = format!(".{pid}");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(&suffix))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sends every request of the rotation once (so the measured run sees the steady state of
/// 1,000 tokens in rotation: a verified-token cache, if on, holds them all).
fn warm_up(dir: &Path, addr: SocketAddr) {
    let reqs = std::fs::read_to_string(dir.join("requests.txt")).unwrap();
    for line in reqs.lines() {
        let Some((host, token)) = line.split_once(' ') else {
            continue;
        };
        let Ok(mut s) = TcpStream::connect(addr) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let req = format!(
            "GET /api/items HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        let mut sink = Vec::new();
        if s.write_all(req.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut sink);
        }
    }
}

/// Runs wrk on core 1 for `secs` against the proxy `pid` at `addr`.
fn burst(dir: &Path, addr: SocketAddr, pid: u32, secs: u64) -> Burst {
    let accepted_before = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
    callgrind_zero(pid);
    let cpu_before = cpu_us(pid).unwrap_or(0.0);
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c32", &format!("-d{secs}s"), "-s"])
        .arg(dir.join("rotate.lua"))
        .arg(format!("http://{addr}/"))
        .env("NEXUS_LOAD_REQS", dir.join("requests.txt"))
        .output()
        .expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "wrk output without a rate:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let cpu_us = cpu_us(pid).unwrap_or(0.0) - cpu_before;
    let instructions = callgrind_total(pid);
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse::<f64>().ok())
        .unwrap_or(rps * secs as f64);
    let opened = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) - accepted_before;
    let b = Burst {
        rps,
        requests,
        cpu_us,
        errors,
        instructions,
    };
    eprintln!(
        "  {addr}: {rps:.0} req/s, {:.1} µs proxy CPU per request, {opened} upstream connections opened",
        b.cpu_us_per_req()
    );
    b
}

const USAGE: &str = "usage: load [--smoke] [--callgrind] [--distinct N] [--addresses] \
                     (see the head of bench/src/bin/load.rs, or docs/benchmarks.md)";

/// Stops at `--help` (and at an argument it does not know) before anything starts: the
/// harness otherwise ran its whole benchmark, minutes of load, for `load --help`.
fn check_args() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--smoke" | "--callgrind" | "--addresses" => {}
            "--distinct" => i += 1,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => {
                eprintln!("load: unknown argument {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
}

fn main() {
    check_args();
    let smoke = std::env::args().any(|a| a == "--smoke");
    let callgrind = std::env::args().any(|a| a == "--callgrind");
    let distinct = distinct_tokens();
    let per_address = std::env::args().any(|a| a == "--addresses");
    // Rounds of short bursts, every target once per round: the VM's speed drifts over a
    // minute, and a ratio is only fair between bursts run back to back. Under callgrind the
    // counts do not drift, so one long burst each.
    let (tenants, rounds, secs) = match (smoke, callgrind) {
        (true, _) => (1_000, 1, 1),
        (false, true) => (10_000, 1, 10),
        (false, false) => (10_000, 7, 3),
    };
    let dir = tempfile::tempdir().unwrap();
    if callgrind {
        let have = |tool: &str| {
            Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(
            have("valgrind") && have("callgrind_control"),
            "--callgrind needs valgrind (apt-get install valgrind)"
        );
        let out = std::env::temp_dir().join(format!("nexus-load-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        eprintln!("callgrind profiles: {}", out.display());
        let _ = CALLGRIND.set(out);
    }
    // The shared backend (bare Pingora's fixed upstream, and every tenant's instance unless
    // `--addresses`), and under `--addresses` one address per rotation slot: one event loop.
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if per_address {
        ips.extend((0..1000).map(slot_ip));
    }
    let mut slots = start_backends(&ips);
    let backend = slots.remove(0);
    // Rotation slot `j` addresses tenant `j * step`: 1,000 tenants spread over all of them.
    // Under `--addresses` each has an instance of its own; the other tenants share one.
    let step = (tenants / 1000).max(1);
    let own_slot =
        |t: usize| (t.is_multiple_of(step) && t / step < slots.len()).then_some(t / step);
    let instance = |t: usize| own_slot(t).map_or(backend, |j| slots[j]);

    // Bindings, keys and 1,000 RS256 tokens in rotation (one per tenant slot).
    let bindings: Vec<_> = (0..tenants)
        .map(|i| record(i, &format!("http://{}", instance(i))))
        .collect();
    std::fs::write(
        dir.path().join("bindings.json"),
        serde_json::json!({ "format": "nexus-edge.bindings/v1", "bindings": bindings }).to_string(),
    )
    .unwrap();
    let key = rs256_key();
    let _ = auth_settings(&dir.path().join("jwks.json"), &[&key], 0);
    let mut reqs = String::new();
    for j in (0..1000).map(|j| j % distinct) {
        let t = j * step % tenants;
        reqs.push_str(&format!(
            "{}.{BASE} {}\n",
            tenant(t),
            key.sign(&claims(t, j as u64)).unwrap()
        ));
    }
    std::fs::write(dir.path().join("requests.txt"), reqs).unwrap();
    std::fs::write(dir.path().join("rotate.lua"), LUA).unwrap();
    let first_host = format!("{}.{BASE}", tenant(0));

    let mut targets: Vec<Target> = Vec::new();
    let target = |label, addr, proc| Target {
        label,
        addr,
        proc,
        bursts: Vec::new(),
    };

    // 1. Bare Pingora: no auth, fixed upstream; every ratio is against this one. Then the
    // same with nexus-edge's default timeouts, which cost Pingora timers on every request.
    for (label, extra) in [(BARE, None), (BARE_TIMED, Some("timeouts"))] {
        let addr = free_addr();
        let mut cmd = pinned("0", &sibling("bare-proxy"));
        cmd.args([addr.to_string(), backend.to_string(), "1".to_owned()]);
        cmd.args(extra);
        let p = Proc(cmd.spawn().unwrap());
        wait_http(addr, &first_host);
        targets.push(target(label, addr, p));
    }

    // 2 and 3. Nexus Edge, token cache on (1,000 tokens in rotation) and off (every request
    // pays the full RS256 verification, as if every token were new).
    for (label, cache) in [(ROTATION, 100_000), (EVERY_TOKEN, 0)] {
        let addr = free_addr();
        let ops = free_addr();
        let config = format!(
            "[server]\nlisten = \"{addr}\"\nadmin_listen = \"{ops}\"\nthreads = 1\nshutdown_grace = \"0s\"\n\
             [tenancy]\nbase_domains = [\"{BASE}\"]\n\
             [auth]\njwks_file = \"jwks.json\"\nissuers = [\"https://id.nexus.bench\"]\naudiences = [\"nexus\"]\ntoken_cache_capacity = {cache}\n\
             [store]\nkind = \"file\"\npath = \"bindings.json\"\n[log]\nfilter = \"warn\"\n"
        );
        let cfg = dir.path().join(format!("edge-{cache}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let p = Proc(
            pinned("0", &sibling("nexus-edge"))
                .arg("serve")
                .arg("--config")
                .arg(&cfg)
                .spawn()
                .unwrap(),
        );
        wait_http(addr, &first_host);
        targets.push(target(label, addr, p));
    }

    // 4. HAProxy 2.6: jwt_verify RS256 + map lookup per request, no token cache.
    if Command::new("haproxy").arg("-v").output().is_ok() {
        let addr = free_addr();
        let pubkey = dir.path().join("rs256-pub.pem");
        let ok = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(repo_root().join("deploy/demo/demo-rs256-key.pem"))
            .arg("-out")
            .arg(&pubkey)
            .status()
            .is_ok_and(|s| s.success());
        // The map names the backend: `be`, the shared instance, or under `--addresses` one
        // backend per instance (HAProxy reuses connections per server).
        let map: String = (0..tenants)
            .map(|i| match own_slot(i) {
                Some(j) => format!("{}.{BASE} i{j}\n", tenant(i)),
                None => format!("{}.{BASE} be\n", tenant(i)),
            })
            .collect();
        let instances: String = slots
            .iter()
            .enumerate()
            .map(|(j, a)| format!("backend i{j}\n  server s {a}\n"))
            .collect();
        std::fs::write(dir.path().join("hosts.map"), map).unwrap();
        let cfg = format!(
            "global\n  nbthread 1\n  maxconn 4096\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  option http-keep-alive\n\
             frontend fe\n  bind {addr}\n\
             \x20 http-request set-var(txn.bearer) http_auth_bearer\n\
             \x20 http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')\n\
             \x20 http-request deny unless {{ var(txn.alg) -m str RS256 }}\n\
             \x20 http-request deny unless {{ var(txn.bearer),jwt_verify(txn.alg,\"{pk}\") -m int 1 }}\n\
             \x20 http-request set-var(txn.instance) req.hdr(host),lower,map({map})\n\
             \x20 http-request deny unless {{ var(txn.instance) -m found }}\n\
             \x20 use_backend %[var(txn.instance)]\n\
             backend be\n  server s1 {backend}\n{instances}",
            pk = pubkey.display(),
            map = dir.path().join("hosts.map").display(),
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&cfg_path)
            .output();
        if ok && check.as_ref().is_ok_and(|o| o.status.success()) {
            let mut cmd = pinned("0", Path::new("/usr/sbin/haproxy"));
            cmd.arg("-f").arg(&cfg_path).stderr(Stdio::inherit());
            let p = Proc(cmd.spawn().unwrap());
            wait_http(addr, &first_host);
            targets.push(target(HAPROXY, addr, p));
        } else {
            eprintln!(
                "HAProxy skipped: its config did not validate: {}",
                check
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            );
        }
    }

    // 5. nginx: the host looked up in a map naming the upstream (the shared instance, or
    // under `--addresses` the tenant's own), keep-alive to it; no token check, which its
    // open-source build cannot do: a peer for the bare proxies, not for nexus-edge's auth.
    // Found where Debian puts it, off a non-root user's PATH, or on the PATH.
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap_or(Path::new("nginx"));
    if Command::new(nginx).arg("-v").output().is_ok() {
        let addr = free_addr();
        let map: String = (0..tenants)
            .map(|i| match own_slot(i) {
                Some(j) => format!("{}.{BASE} i{j};\n", tenant(i)),
                None => format!("{}.{BASE} be;\n", tenant(i)),
            })
            .collect();
        std::fs::write(dir.path().join("nginx-hosts.map"), map).unwrap();
        let instances: String = slots
            .iter()
            .enumerate()
            .map(|(j, a)| {
                format!(
                    "  upstream i{j} {{ server {a}; keepalive 4; keepalive_requests 1000000; }}\n"
                )
            })
            .collect();
        let d = dir.path().display();
        // One process (no master), so that the pinned pid is the one serving and its CPU
        // time is what is counted. An upstream connection serves 1,000 requests by default,
        // then closes: unbounded here, as the other proxies keep theirs.
        let cfg = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/nginx-error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n\
             \x20 client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
             \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n\
             \x20 scgi_temp_path {d}/nginx-scgi;\n\
             \x20 keepalive_requests 1000000;\n\
             \x20 map_hash_max_size 65536;\n  map_hash_bucket_size 128;\n\
             \x20 map $host $instance {{\n    hostnames;\n    default \"\";\n    include {d}/nginx-hosts.map;\n  }}\n\
             \x20 upstream be {{ server {backend}; keepalive 64; keepalive_requests 1000000; }}\n\
             {instances}\
             \x20 server {{\n    listen {addr};\n    location / {{\n\
             \x20     if ($instance = \"\") {{ return 404; }}\n\
             \x20     proxy_pass http://$instance;\n      proxy_http_version 1.1;\n\
             \x20     proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        let cfg_path = dir.path().join("nginx.conf");
        std::fs::write(&cfg_path, cfg).unwrap();
        let check = Command::new(nginx)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&cfg_path)
            .output();
        match check {
            Ok(o) if o.status.success() => {
                let mut cmd = pinned("0", nginx);
                cmd.arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(&cfg_path)
                    .stderr(Stdio::inherit());
                let p = Proc(cmd.spawn().unwrap());
                wait_http(addr, &first_host);
                targets.push(target(NGINX, addr, p));
            }
            other => eprintln!(
                "nginx skipped: its config did not validate: {}",
                other
                    .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                    .unwrap_or_default()
            ),
        }
    }

    // Every target runs from here on, idle but for its own burst; all share core 0.
    for t in &targets {
        REACHED.lock().unwrap().clear();
        warm_up(dir.path(), t.addr);
        let mut reached = std::mem::take(&mut *REACHED.lock().unwrap());
        reached.sort_unstable();
        reached.dedup();
        eprintln!(
            "{}: warm-up opened connections to {} instance address(es)",
            t.label,
            reached.len()
        );
    }
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        // Each round starts at a different target, so none always follows the same one.
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let b = burst(dir.path(), targets[i].addr, targets[i].pid(), secs);
            targets[i].bursts.push(b);
        }
    }
    report(&targets, tenants, rounds, secs);
    if per_address {
        println!("\n(--addresses: each of the 1,000 tenants in rotation has an instance of its own address; bare Pingora keeps its one upstream)");
    }
    if distinct < 1000 {
        println!("\n(--distinct {distinct}: the 1,000-request rotation cycles through {distinct} tenants and tokens)");
    }
}

/// `--distinct N`: how many distinct tenants and tokens the rotation cycles through.
fn distinct_tokens() -> usize {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--distinct") else {
        return 1000;
    };
    match args.get(i + 1).and_then(|v| v.parse::<usize>().ok()) {
        Some(n @ 1..=1000) => n,
        _ => {
            eprintln!("load: --distinct takes a number from 1 to 1000");
            std::process::exit(2);
        }
    }
}

fn report(targets: &[Target], tenants: usize, rounds: usize, secs: u64) {
    let Some(bare) = targets.iter().find(|t| t.label == BARE) else {
        return;
    };
    println!("\nload harness: {tenants} tenants, RS256, HTTP/1.1 keep-alive, 32 connections, {rounds} rounds of {secs}s per target");
    println!("proxy: 1 worker pinned to core 0; wrk on core 1, the backend unpinned; every target runs in each round, back to back");
    println!("requests/s: the median of the rounds; CPU µs/req: over all rounds");
    println!("vs bare = requests/s against bare Pingora's in the same round; capacity = bare's CPU per request / this target's,");
    println!("in the same round (steal-proof; 100% = as cheap as bare); both the median of the rounds (min–max)\n");
    println!(
        "{:<46} {:>11} {:>22} {:>11} {:>22} {:>8}",
        "target", "requests/s", "vs bare", "CPU µs/req", "capacity", "non-2xx"
    );
    for t in targets {
        let (rps, cpu) = round_ratios(t, bare);
        println!(
            "{:<46} {:>11.0} {:>22} {:>11.1} {:>22} {:>8}",
            t.label,
            t.median_rps(),
            spread(&rps, true),
            t.cpu_us_per_req(),
            spread(&cpu, true),
            t.errors()
        );
    }
    if let Some(h) = targets.iter().find(|t| t.label == HAPROXY) {
        let (rps, cpu) = round_ratios(bare, h);
        println!(
            "\nbare Pingora / HAProxy = {} by requests/s, {} by CPU per request",
            spread(&rps, false),
            spread(&cpu, false)
        );
        for t in targets
            .iter()
            .filter(|t| [ROTATION, EVERY_TOKEN].contains(&t.label))
        {
            let (rps, cpu) = round_ratios(t, h);
            println!(
                "{} / HAProxy = {} by requests/s, {} by CPU per request",
                t.label,
                spread(&rps, false),
                spread(&cpu, false)
            );
        }
    }
    if let Some(n) = targets.iter().find(|t| t.label == NGINX) {
        let (rps, cpu) = round_ratios(bare, n);
        println!(
            "\nbare Pingora / nginx = {} by requests/s, {} by CPU per request",
            spread(&rps, false),
            spread(&cpu, false)
        );
        if let Some(t) = targets.iter().find(|t| t.label == ROTATION) {
            let (rps, cpu) = round_ratios(t, n);
            println!(
                "{} / nginx = {} by requests/s, {} by CPU per request (nginx checks no token)",
                t.label,
                spread(&rps, false),
                spread(&cpu, false)
            );
        }
    }
    let timed = targets.iter().find(|t| t.label == BARE_TIMED);
    let rotation = targets.iter().find(|t| t.label == ROTATION);
    if let (Some(timed), Some(rotation)) = (timed, rotation) {
        let (rps, cpu) = round_ratios(rotation, timed);
        println!(
            "\n{} / {} = {} by requests/s, {} by CPU per request",
            rotation.label,
            timed.label,
            spread(&rps, true),
            spread(&cpu, true)
        );
    }
    if targets.iter().all(|t| t.instructions_per_req().is_some()) {
        let bare_ir = bare.instructions_per_req().unwrap_or(1.0);
        println!("\ninstructions per request (callgrind; requests/s above are under valgrind):");
        for t in targets {
            let ir = t.instructions_per_req().unwrap_or(0.0);
            println!(
                "{:<46} {ir:>10.0}   capacity {:>5.1}%",
                t.label,
                bare_ir / ir * 100.0
            );
        }
    }
    if targets.iter().any(|t| t.errors() > 0) {
        eprintln!("warning: some targets answered non-2xx: their rates are not comparable");
    }
}
