//! The one way podstack writes a file and the one way it locks.
//!
//! Writes are atomic: a temp file in the same folder gets the new bytes and
//! the old file's mode, is fsynced and renamed over the target, so a reader
//! sees the old file or the new one, never half of either. The first time
//! podstack changes a file it keeps the previous version as `FILE.bak`, once.

use std::fs::{File, OpenOptions, Permissions, TryLockError};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Writes `contents` to `path` atomically, creating parent folders. An existing
/// file keeps its mode; a new one gets `new_mode`.
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<()> {
    // A symlinked file (a dotfiles checkout, say) is written where it points:
    // renaming over the link would replace the user's link with a copy.
    let resolved;
    let path = if fs_err::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        resolved = fs_err::canonicalize(path)
            .with_context(|| format!("{} is a symlink to nowhere", path.display()))?;
        resolved.as_path()
    } else {
        path
    };
    let dir = parent(path);
    fs_err::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder for {}", path.display()))?;
    let mode = match fs_err::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(_) => new_mode,
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".podstack-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        // Durability of the rename; a failure here loses nothing already visible.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Copies `path` to `path.bak` unless that backup already exists (the first
/// version podstack saw is the one worth keeping). Returns the backup's path
/// when one was made.
pub fn backup_once(path: &Path) -> Result<Option<PathBuf>> {
    let bak = bak_path(path);
    if !path.exists() || bak.exists() {
        return Ok(None);
    }
    let bytes = fs_err::read(path)?;
    write_atomic(&bak, &bytes, 0o600)?;
    Ok(Some(bak))
}

/// `FILE.bak` beside `FILE`.
pub fn bak_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock on a sidecar file, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock at `path`, waiting up to `deadline`. While it waits it says
    /// so once on stderr; past the deadline the error names the lock file.
    pub fn acquire(path: &Path, deadline: Duration, what: &str) -> Result<Lock> {
        fs_err::create_dir_all(parent(path))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let start = Instant::now();
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Lock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            if start.elapsed() >= deadline {
                bail!(
                    "another podstack has held {} for {} s ({what}); wait for it to finish or stop it",
                    path.display(),
                    deadline.as_secs()
                );
            }
            if !said {
                eprintln!(
                    "podstack: waiting for another podstack ({what}, lock {})",
                    path.display()
                );
                said = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_folders_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.conf");
        write_atomic(&path, b"one", 0o640).unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "one");
        let mode = |p: &Path| fs_err::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o640);
        fs_err::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs_err::read_to_string(&path).unwrap(), "two");
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> = fs_err::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".podstack-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn symlinks_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("dotfiles/containers.conf");
        fs_err::create_dir_all(target.parent().unwrap()).unwrap();
        fs_err::write(&target, "old").unwrap();
        let link = dir.path().join("containers.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_atomic(&link, b"new", 0o644).unwrap();
        assert!(
            fs_err::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs_err::read_to_string(&target).unwrap(), "new");
    }

    #[test]
    fn backup_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storage.conf");
        assert_eq!(backup_once(&path).unwrap(), None);
        fs_err::write(&path, "original").unwrap();
        let bak = backup_once(&path).unwrap().unwrap();
        fs_err::write(&path, "second").unwrap();
        assert_eq!(backup_once(&path).unwrap(), None);
        assert_eq!(fs_err::read_to_string(bak).unwrap(), "original");
    }

    #[test]
    fn second_lock_waits_then_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let first = Lock::acquire(&path, Duration::from_secs(1), "test").unwrap();
        let err = Lock::acquire(&path, Duration::from_millis(120), "test").unwrap_err();
        assert!(err.to_string().contains("x.lock"));
        drop(first);
        Lock::acquire(&path, Duration::from_millis(120), "test").unwrap();
    }
}
