//! Helpers for the CLI tests: running the binary, temporary directories,
//! and assertions shared by every test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("kiln-cli-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `self/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The absolute path of a file in the repository, e.g. `models/gpt.kl`.
pub fn repo(rel: &str) -> PathBuf {
    kiln_tests::repo_root().join(rel)
}

/// What one run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        let run = Run {
            code: out.status.code().expect("kiln was killed by a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for bad in ["internal error", "panicked"] {
            assert!(!run.stderr.contains(bad), "stderr contains `{bad}`:\n{}", run.stderr);
        }
        run
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts exit 1, nothing on stdout, and a single `error: ...` line on
    /// stderr that contains every one of `words`. Returns that line.
    #[track_caller]
    pub fn one_line_error(&self, words: &[&str]) -> String {
        assert_eq!(self.code, 1, "expected exit code 1\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(self.stdout.is_empty(), "expected nothing on stdout, got:\n{}", self.stdout);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "expected a one-line error, got:\n{}", self.stderr);
        let line = lines[0];
        assert!(line.starts_with("error: "), "expected `error: ...`, got: {line}");
        for w in words {
            assert!(line.contains(w), "expected `{w}` in the error, got: {line}");
        }
        line.to_string()
    }
}

/// Runs `kiln` with `args` in a fresh temporary working directory (so no
/// test depends on, or writes to, the current directory).
pub fn kiln<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let cwd = TempDir::new();
    kiln_in(cwd.path(), args)
}

/// Runs `kiln` with `args` in `cwd`.
pub fn kiln_in<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(cwd).output().expect("run kiln");
    Run::from(out)
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write(dir: &TempDir, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

/// A path as a `&str` argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
