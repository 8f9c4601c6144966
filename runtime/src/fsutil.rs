//! File-system helpers shared by the writers: atomic replacement of a file,
//! creation and exclusive locking of output directories, and removal of
//! the temporary files a killed writer leaves behind.
//!
//! A write goes to a temporary file in the destination's own folder (so the
//! final `rename` never crosses file systems), is flushed to disk, and only
//! then renamed over the destination. Readers therefore see either the old
//! file or the complete new one, never a torn mix, and a failed write leaves
//! the old file exactly as it was.

use crate::error::io_reason;
use crate::RuntimeError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files made by concurrent writers in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Reads a whole file, with an error that names it.
pub fn read_file(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    fs::read(path).map_err(|e| RuntimeError::read(path, &e))
}

/// Atomically replaces `path` with `bytes` (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Atomically replaces `path` with what `fill` writes. If `fill` fails, or
/// anything after it does, the temporary file is removed, `path` keeps its
/// old contents (or stays absent) and the error names `path`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), RuntimeError> {
    let err = |reason: String| RuntimeError::Write { path: path.display().to_string(), reason };
    let name = path.file_name().ok_or_else(|| err("the path does not name a file".into()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.is_dir() {
        return Err(err("it is a directory".into()));
    }
    let (tmp, file) = create_temp(dir, &name.to_string_lossy()).map_err(|e| err(io_reason(&e)))?;
    let written = (|| {
        let mut w = BufWriter::new(file);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        // Data must be on disk before the rename makes it visible.
        file.sync_all()
    })();
    let result = written.and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = result {
        // Best effort: the temp file is ours and useless now.
        let _ = fs::remove_file(&tmp);
        return Err(err(io_reason(&e)));
    }
    sync_dir(dir);
    Ok(())
}

/// Creates `.{name}.{pid}.{n}.tmp` in `dir`, never reusing an existing file
/// ([`is_temp_name`] recognizes the pattern).
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    // Collisions only come from stale files of an earlier process with the
    // same pid; a bounded number of retries steps past them.
    let mut last = None;
    for _ in 0..64 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a temporary file")))
}

/// Flushes the directory entry of a rename (POSIX needs this for the rename
/// itself to survive a crash). Failure only weakens durability, so it is ignored.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Creates `path` (and its parents) as an output directory and checks that
/// files can be created in it, so a run fails before any work, with an
/// error that says why.
pub fn create_output_dir(path: &Path) -> Result<(), RuntimeError> {
    let err = |reason: String| RuntimeError::OutputDir { path: path.display().to_string(), reason };
    if path.exists() && !path.is_dir() {
        return Err(err("it exists and is not a directory".into()));
    }
    fs::create_dir_all(path).map_err(|e| err(io_reason(&e)))?;
    let (probe, file) = create_temp(path, "kiln-write-test")
        .map_err(|e| err(format!("it is not writable: {}", io_reason(&e))))?;
    drop(file);
    let _ = fs::remove_file(probe);
    Ok(())
}

/// Whether `name` is a temporary file of [`write_atomic`]'s pattern
/// (`.{name}.{pid}.{n}.tmp`).
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let digits = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    digits(parts.next()) && digits(parts.next()) && parts.next().is_some_and(|n| !n.is_empty())
}

/// Removes the temporary files that writes killed midway left in `dir`
/// (best effort). Only call it while holding `dir`'s [`DirLock`]: a live
/// writer's temporary files look the same.
pub fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(is_temp_name) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The lock file inside a locked directory.
pub const LOCK_FILE: &str = ".kiln.lock";

/// An exclusive advisory lock on a directory, held until dropped; the
/// operating system releases it when the process dies, however it dies.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Locks the existing directory `dir` for this process; fails at once
/// (without waiting) when another process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock, RuntimeError> {
    let err = |reason: String| RuntimeError::OutputDir { path: dir.display().to_string(), reason };
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("cannot create its lock file: {}", io_reason(&e))))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file, path }),
        Err(fs::TryLockError::WouldBlock) => {
            Err(err("another kiln process is writing to it (it holds the lock on `.kiln.lock`)".into()))
        }
        Err(fs::TryLockError::Error(e)) => Err(err(format!("cannot lock it: {}", io_reason(&e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognized_and_nothing_else() {
        assert!(is_temp_name(".checkpoint.json.123.4.tmp"));
        assert!(is_temp_name(".params-00000002.safetensors.9.0.tmp"));
        for other in ["checkpoint.json", ".checkpoint.json", ".a.tmp", ".1.2.tmp", "x.1.2.tmp", ".a.1.x.tmp", ".a..2.tmp"] {
            assert!(!is_temp_name(other), "{other}");
        }
    }

    #[test]
    fn a_locked_directory_refuses_a_second_lock_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let e = lock_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another kiln process is writing to it"), "{e}");
        drop(held);
        lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn temp_files_of_killed_writes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for f in [".loss.csv.77.0.tmp", "loss.csv", "notes.tmp"] {
            fs::write(dir.path().join(f), "x").unwrap();
        }
        remove_temp_files(dir.path());
        let mut left: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["loss.csv", "notes.tmp"]);
    }
}
