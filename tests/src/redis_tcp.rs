//! Real `redis-server` nodes on loopback TCP, for what a unix socket cannot show: TLS,
//! replication and Sentinel (Sentinel hands out `host:port` addresses).
//!
//! Redis cannot report a port it chose itself, so a node's port is picked by the harness
//! ([`free_port`]: bound, released and passed on) and another process may take it in between.
//! That race is caught, never served: a node counts as up only once the server answering on
//! its port reports the node's own process id, so a test never talks to another test's Redis;
//! a node whose port was taken fails to bind and exits, and is restarted on another port.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::tls::TestPki;
use crate::wait;

/// One `redis-server` (or Sentinel) process, killed on drop.
pub struct RedisNode {
    child: Option<Child>,
    /// Its TCP port.
    pub port: u16,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    _dir: tempfile::TempDir,
}

impl RedisNode {
    fn spawn(args: &[String], conf: Option<&str>, tls: Option<&TestPki>) -> RedisNode {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("dir");
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            if let Some(conf) = conf {
                let path = dir.path().join("node.conf");
                std::fs::write(&path, conf.replace("{port}", &port.to_string()))
                    .expect("write conf");
                cmd.arg(path);
            }
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path());
            let tls_files = tls.map(|pki| {
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(&pki.server_cert)
                    .arg("--tls-key-file")
                    .arg(&pki.server_key)
                    .arg("--tls-ca-cert-file")
                    .arg(&pki.ca);
                (
                    pki.ca.clone(),
                    pki.client_cert.clone(),
                    pki.client_key.clone(),
                )
            });
            if tls.is_none() {
                cmd.args(["--port", &port.to_string()]);
            }
            cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): apt-get install redis-server")
            });
            let mut node = RedisNode {
                child: Some(child),
                port,
                tls: tls_files,
                _dir: dir,
            };
            // Up when the server on the port is this node (a Sentinel answers INFO too).
            let pid = node.child.as_ref().map(Child::id).unwrap_or_default();
            let own = format!("process_id:{pid}");
            let up = wait::poll(Duration::from_secs(10), || {
                if node.exited() {
                    return Some(false);
                }
                let out = node.cli(&["INFO", "server"]);
                let info = String::from_utf8_lossy(&out.stdout);
                (out.status.success() && info.lines().any(|l| l.trim() == own)).then_some(true)
            });
            match up {
                Some(true) => return node,
                // Another process holds the port (or this node never came up): try another.
                _ => last = format!("redis-server (pid {pid}) did not come up on port {port}"),
            }
        }
        panic!("{last}");
    }

    /// A primary on plain TCP.
    pub fn primary() -> RedisNode {
        Self::spawn(&[], None, None)
    }

    /// A primary that only speaks TLS, with certificates from `pki`. With `require_client_cert`
    /// the server demands a client certificate issued by the same CA.
    pub fn tls_primary(pki: &TestPki, require_client_cert: bool) -> RedisNode {
        let auth = if require_client_cert { "yes" } else { "no" };
        Self::spawn(
            &["--tls-auth-clients".to_owned(), auth.to_owned()],
            None,
            Some(pki),
        )
    }

    /// A replica of `primary`.
    pub fn replica_of(primary: &RedisNode) -> RedisNode {
        Self::spawn(
            &[
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                primary.port.to_string(),
            ],
            None,
            None,
        )
    }

    /// A Sentinel watching `primary` under `name`, quorum 1, failing over after 500 ms down.
    pub fn sentinel(name: &str, primary: &RedisNode) -> RedisNode {
        Self::sentinel_after(name, primary, 500)
    }

    /// A Sentinel as [`RedisNode::sentinel`], failing over after `down_after_ms` down.
    pub fn sentinel_after(name: &str, primary: &RedisNode, down_after_ms: u64) -> RedisNode {
        let conf = format!(
            "port {{port}}\n\
             sentinel monitor {name} 127.0.0.1 {p} 1\n\
             sentinel down-after-milliseconds {name} {down_after_ms}\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            p = primary.port
        );
        Self::spawn(&["--sentinel".to_owned()], Some(&conf), None)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://` for a TLS node).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against the node (with the client certificate on TLS nodes).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some((ca, cert, key)) = &self.tls {
            cmd.arg("--tls")
                .arg("--cacert")
                .arg(ca)
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key);
        }
        crate::process::output(cmd.args(args))
    }

    /// `redis-cli` stdout, trimmed.
    pub fn cmd(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli(args).stdout)
            .trim()
            .to_owned()
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the node's process: a stopped node keeps its
    /// connections open and answers nothing, as a frozen host does.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// Kills the node (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port that was free a moment ago, for a node to listen on.
///
/// Picked below the kernel's ephemeral range when there is room: a port from that range can
/// be taken, between this pick and the node's bind, as the source port of any test's
/// outgoing connection (or by any server on port 0), and then sits in TIME_WAIT for a minute,
/// refusing the bind.
fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > LOWEST + 1_000);
    if let Some(low) = below {
        for _ in 0..100 {
            let port = LOWEST + (random_u64() % u64::from(low - LOWEST)) as u16;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr().expect("local addr").port();
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// Random bits from std's per-instance hash keys: parallel test processes pick apart.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}
