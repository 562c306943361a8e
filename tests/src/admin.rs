//! The admin CLI (`nexus-edge tenant …`) run as a separate process against a store, the way an
//! operator runs it.

use std::path::PathBuf;

use crate::edge::cli;

/// An admin config file for one store.
pub struct Admin {
    _dir: tempfile::TempDir,
    /// The admin config file.
    pub config: PathBuf,
}

impl Admin {
    /// An admin whose config holds `store` (a whole `[store]` section, with sub-tables).
    pub fn new(store: &str) -> Admin {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("admin.toml");
        std::fs::write(
            &config,
            format!("[auth]\njwks_file = \"unused.json\"\n\n{store}"),
        )
        .expect("write");
        Admin { _dir: dir, config }
    }

    /// Runs `nexus-edge tenant ARGS --config admin.toml`; returns (exit code, stdout, stderr).
    pub fn tenant(&self, args: &[&str]) -> (i32, String, String) {
        as_admin("tenant", &self.config, args)
    }

    /// `list` and `export` each print `kept` and not `left_out`, and exit 1 saying so: every
    /// line of `said` on stderr, and `1 record(s) left out`.
    pub fn assert_one_left_out(&self, kept: &str, left_out: &str, said: &[&str]) {
        for read in ["list", "export"] {
            let (code, out, err) = self.tenant(&[read]);
            assert_eq!(code, 1, "{read}: {err}");
            assert!(
                out.contains(kept) && !out.contains(left_out),
                "{read}: {out}"
            );
            assert!(
                said.iter().all(|s| err.contains(s)) && err.contains("1 record(s) left out"),
                "{read}: {err}"
            );
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.tenant(args);
        assert_eq!(code, 0, "tenant {args:?} failed: {err}{out}");
        out
    }

    /// `tenant FLAGS put` of one record; returns (exit code, stdout, stderr).
    pub fn try_put(&self, flags: &[&str], record: &serde_json::Value) -> (i32, String, String) {
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("record.json");
        std::fs::write(&f, record.to_string()).expect("write");
        let mut args = flags.to_vec();
        args.extend(["put", f.to_str().expect("utf8")]);
        self.tenant(&args)
    }

    /// `tenant FLAGS put` of one record, which must succeed.
    pub fn put_with(&self, flags: &[&str], record: &serde_json::Value) {
        let (code, out, err) = self.try_put(flags, record);
        assert_eq!(code, 0, "tenant {flags:?} put failed: {err}{out}");
    }

    /// `tenant put` of one record.
    pub fn put(&self, record: &serde_json::Value) {
        self.put_with(&[], record);
    }
}

/// Runs `nexus-edge COMMAND --config CONFIG --actor test-admin ARGS`; returns (exit code,
/// stdout, stderr).
pub fn as_admin(command: &str, config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        command,
        "--config",
        config.to_str().expect("utf8"),
        "--actor",
        "test-admin",
    ];
    all.extend_from_slice(args);
    let out = cli(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
