//! Child processes with a deadline: a command that hangs (a regression, a server that never
//! answers) fails its test, naming the command and what it printed, instead of hanging the
//! suite.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`output`] lets a command run.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `cmd` (stdin closed) to its end and returns its output, like [`Command::output`];
/// panics if it runs past [`DEADLINE`], after killing it.
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, DEADLINE)
}

/// [`output`] with another deadline.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    Running::spawn(cmd).finish(timeout)
}

/// A running child whose stdout and stderr are read as they come (on threads, so it never
/// blocks on a full pipe); killed on drop.
pub struct Running {
    child: Child,
    what: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts `cmd` with stdin closed and stdout and stderr captured.
    pub fn spawn(cmd: &mut Command) -> Running {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(collect(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(collect(pipe, Arc::clone(&stderr)));
        }
        Running {
            child,
            what,
            stdout,
            stderr,
            readers,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout")).into_owned()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr")).into_owned()
    }

    /// The command and everything it printed so far, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "{}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.what,
            self.stdout(),
            self.stderr()
        )
    }

    /// Polls `cond` on (stdout, stderr) until it returns `Some`; panics, naming the command
    /// and its output, if the process exits first or `timeout` passes.
    pub fn wait_for<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&str, &str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(v) = cond(&self.stdout(), &self.stderr()) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it printed just before exiting may still be in the pipes.
                self.join_readers(deadline);
                if let Some(v) = cond(&self.stdout(), &self.stderr()) {
                    return v;
                }
                panic!("exited ({status}) before {what}: {}", self.describe());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}: {}",
                self.describe()
            );
            std::thread::park_timeout(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it and panics (naming the command
    /// and its output) if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers(deadline.max(Instant::now() + Duration::from_secs(5)));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {timeout:?}, killed: {}",
                    self.describe()
                );
            }
            std::thread::park_timeout(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit (see [`Running::wait_exit`]) and returns its output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let status = self.wait_exit(timeout);
        Output {
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().expect("stdout")),
            stderr: std::mem::take(&mut *self.stderr.lock().expect("stderr")),
        }
    }

    /// Lets the reader threads reach the end of the pipes (all of it, once the process has
    /// exited), until `deadline`: a grandchild holding a pipe open must not hang the test.
    fn join_readers(&mut self, deadline: Instant) {
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::park_timeout(Duration::from_millis(1));
        }
        for r in std::mem::take(&mut self.readers) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends what `pipe` yields to `into` until its end.
fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => into.lock().expect("output").extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed_and_named_with_its_output() {
        let started = Instant::now();
        let failed = std::panic::catch_unwind(|| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo said-so; exec sleep 30"]);
            output_within(&mut cmd, Duration::from_millis(300));
        });
        let msg = failed
            .err()
            .and_then(|e| e.downcast::<String>().ok())
            .expect("a panic with a message");
        assert!(
            msg.contains("still running") && msg.contains("sleep 30") && msg.contains("said-so"),
            "{msg}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_command_that_ends_gives_all_it_printed() {
        let out = output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
