//! A real `redis-server` per test: unix socket in a temp dir, TCP off, append-only file so a
//! restart keeps the data, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::wait;

/// A running (or stopped, restartable) Redis.
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> RedisServer {
        let dir = tempfile::tempdir().expect("redis dir");
        let mut r = RedisServer { dir, child: None };
        r.restart();
        r
    }

    /// The socket path.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix://` URL for the default user.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// `redis+unix://` URL for an ACL user.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!(
            "redis+unix://{}?user={user}&pass={password}",
            self.socket().display()
        )
    }

    /// (Re)starts the server on the same socket and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): apt-get install redis-server")
            });
        self.child = Some(child);
        wait::until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || self.cli(&["PING"]).status.success().then_some(()),
        );
    }

    /// Stops the server (data stays in the append-only file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `redis-cli` against the server.
    pub fn cli(&self, args: &[&str]) -> Output {
        crate::process::output(
            Command::new("redis-cli")
                .arg("-s")
                .arg(self.socket())
                .args(args),
        )
    }

    /// Runs `redis-cli` and returns its stdout, trimmed; panics if it reports an error.
    pub fn cmd(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && !text.starts_with("ERR"),
            "redis-cli {args:?}: {text}"
        );
        text
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `heartbeat_interval` [`store_section`] sets: short, so tests see replicas soon.
pub const HEARTBEAT: &str = "100ms";

/// A `[store]` section for replica `replica` following the Redis at `url` under `prefix`
/// (hourly reconciles, so a test sees the change feed at work), with a `snapshot_path` when
/// given.
pub fn store_section(prefix: &str, url: &str, replica: &str, snapshot: Option<&str>) -> String {
    let snap = snapshot
        .map(|s| format!("snapshot_path = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        "[store]\nkind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\nreconcile_interval = \"1h\"\n\
         heartbeat_interval = \"{HEARTBEAT}\"\nreplica_id = \"{replica}\"\n{snap}"
    )
}
