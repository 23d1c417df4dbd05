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
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};

/// Writes `contents` to `path` atomically, creating parent folders. An existing
/// file keeps its mode; a new one gets `new_mode`.
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<()> {
    write_with_mode(path, contents, |old| old.unwrap_or(new_mode), || true).map(drop)
}

/// [`write_atomic`] for a file that holds a secret: readable by its owner
/// only (an existing file loses its group and other bits; a new one is 0600).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_with_mode(
        path,
        contents,
        |old| old.map_or(0o600, |m| m & 0o7700),
        || true,
    )
    .map(drop)
}

/// Writes a file a command was asked to make (`import`, `kube -o`): only
/// ever a regular file, never the `input` it was made from, an existing
/// one only with `force` (kept as FILE.bak unless one exists; without
/// `force` the check and the write are one step: of two runs at once, one
/// wins and the other is told). `private`: 0600.
pub fn write_output(
    path: &Path,
    contents: &[u8],
    private: bool,
    force: bool,
    input: Option<&Path>,
) -> Result<()> {
    if let Ok(meta) = fs_err::metadata(path) {
        if !meta.is_file() {
            bail!(
                "{} is {}, not a regular file: podstack writes only regular files",
                path.display(),
                kind_of(&meta)
            );
        }
        if let Some(input) = input
            && fs_err::canonicalize(path).ok() == fs_err::canonicalize(input).ok()
        {
            bail!(
                "{} is the file being converted: write elsewhere",
                path.display()
            );
        }
        if !force {
            bail!(
                "{} exists; it is left alone (--force replaces it)",
                path.display()
            );
        }
    }
    let mode = if private { 0o600 } else { 0o644 };
    if force {
        // The file replaced is kept once as FILE.bak (the first one seen).
        if let Some(bak) = backup_once(path)? {
            crate::log::say(&format!("kept the file it replaces as {}", bak.display()));
        }
        return write_with_mode(path, contents, |_| mode, || true).map(drop);
    }
    let dir = parent(path);
    fs_err::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder for {}", path.display()))?;
    let tmp =
        staged(dir, contents, mode).with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} exists; it is left alone (--force replaces it)",
                path.display()
            )
        } else {
            anyhow::Error::new(e.error).context(format!("cannot write {}", path.display()))
        }
    })?;
    sync_dir(dir);
    Ok(())
}

/// `contents` in a new temporary file of mode `mode` in `dir`, synced:
/// ready to be renamed over its target.
fn staged(dir: &Path, contents: &[u8], mode: u32) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
        .and_then(|()| tmp.as_file().sync_all())?;
    Ok(tmp)
}

/// What a file that is not a regular one is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Replaces `path` with `contents` only if it still holds `expected` at the
/// last moment (checked after the new file is written, right before the
/// rename): a writer that appended meanwhile, outside any lock (another
/// hook's `>>`), is not overwritten. `private`: owner-only mode. Returns
/// whether it replaced the file.
pub fn replace_if_unchanged(
    path: &Path,
    expected: &[u8],
    contents: &[u8],
    private: bool,
) -> Result<bool> {
    let still = || fs_err::read(path).is_ok_and(|now| now == expected);
    if private {
        write_with_mode(
            path,
            contents,
            |old| old.map_or(0o600, |m| m & 0o7700),
            still,
        )
    } else {
        write_with_mode(path, contents, |old| old.unwrap_or(0o644), still)
    }
}

fn write_with_mode(
    path: &Path,
    contents: &[u8],
    mode_of: impl FnOnce(Option<u32>) -> u32,
    still: impl FnOnce() -> bool,
) -> Result<bool> {
    let path = resolve_link(path)?;
    let dir = parent(&path);
    fs_err::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder for {}", path.display()))?;
    let mode = mode_of(
        fs_err::metadata(&path)
            .ok()
            .map(|meta| meta.permissions().mode() & 0o7777),
    );
    let tmp = staged(dir, contents, mode)
        .with_context(|| format!("cannot write {} (it is as it was)", path.display()))?;
    if !still() {
        return Ok(false);
    }
    tmp.persist(&path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    sync_dir(dir);
    Ok(true)
}

/// Why [`read_bounded`] read nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The file does not exist.
    Missing,
    /// Not a regular file: what it is instead (`a folder`, `a FIFO`, ...).
    NotAFile(&'static str),
    /// More than the limit.
    TooBig(u64),
    /// Another error.
    Io(std::io::Error),
}

/// Reads a regular file of at most `max` bytes, never blocking: a FIFO, a
/// device (`/dev/zero`), a socket or a folder is refused without being
/// read, and no more than `max + 1` bytes are ever read.
pub fn read_bounded(path: &Path, max: u64) -> std::result::Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(kind_of(&meta)));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooBig(meta.len().max(max + 1)));
    }
    Ok(bytes)
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

/// The new bytes of one file, for [`commit`].
pub struct NewFile {
    /// The file to replace (or create).
    pub path: PathBuf,
    /// Its new contents.
    pub bytes: Vec<u8>,
    /// The mode of a file that does not exist yet.
    pub new_mode: u32,
}

/// Replaces several files, all or nothing: every new version is written to a
/// temp file beside its target and fsynced, every target is checked to be
/// replaceable, the first version podstack saw of each is kept as `.bak`
/// (once), and only then are the temp files renamed over their targets. If a
/// rename still fails, the files already replaced get their old bytes back.
/// Returns the backups made, in order (`None` where none was made).
pub fn commit(files: &[NewFile]) -> Result<Vec<Option<PathBuf>>> {
    commit_via(files, &|tmp, target| {
        tmp.persist(target).map(drop).map_err(|e| e.error)
    })
}

type Persist = dyn Fn(tempfile::NamedTempFile, &Path) -> std::io::Result<()>;

fn commit_via(files: &[NewFile], persist: &Persist) -> Result<Vec<Option<PathBuf>>> {
    struct Staged {
        target: PathBuf,
        tmp: tempfile::NamedTempFile,
        old: Option<Vec<u8>>,
    }
    let mut staged = Vec::new();
    for f in files {
        let target = resolve_link(&f.path)?;
        let dir = parent(&target);
        fs_err::create_dir_all(dir)
            .with_context(|| format!("cannot create the folder for {}", target.display()))?;
        if target.is_dir() {
            bail!("{} is a folder, where a file should be", target.display());
        }
        let old = match fs_err::read(&target) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if old.is_some() {
            // An immutable (chattr +i) or read-only file fails here, before anything changed.
            OpenOptions::new()
                .append(true)
                .open(&target)
                .with_context(|| format!("cannot write {}", target.display()))?;
        }
        let mode = match fs_err::metadata(&target) {
            Ok(meta) => meta.permissions().mode() & 0o7777,
            Err(_) => f.new_mode,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&temp_prefix())
            .tempfile_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        tmp.write_all(&f.bytes)
            .and_then(|()| tmp.as_file().set_permissions(Permissions::from_mode(mode)))
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        staged.push(Staged { target, tmp, old });
    }
    let mut backups = Vec::new();
    for s in &staged {
        backups.push(backup_once(&s.target)?);
    }
    // A journal beside every target, so a run killed between two renames is
    // undone by the next one (see `recover`).
    let journal = Journal {
        files: staged
            .iter()
            .zip(files)
            .map(|(s, f)| JournalEntry {
                path: s.target.clone(),
                old: s
                    .old
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
                new_hash: digest(&f.bytes),
            })
            .collect(),
    };
    let journal_text = serde_json::to_vec(&journal)?;
    if staged.len() > 1 {
        for s in &staged {
            write_atomic(&journal_path(&s.target), &journal_text, 0o600)?;
        }
    }
    let mut done: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
    let targets: Vec<PathBuf> = staged.iter().map(|s| s.target.clone()).collect();
    for s in staged {
        let target = s.target.clone();
        if let Err(e) = persist(s.tmp, &target) {
            for (path, old) in done.iter().rev() {
                let _ = match old {
                    Some(bytes) => write_atomic(path, bytes, 0o644),
                    None => fs_err::remove_file(path).map_err(Into::into),
                };
            }
            remove_journals(&targets);
            return Err(e).with_context(|| {
                format!(
                    "cannot replace {}; the files already replaced were put back",
                    target.display()
                )
            });
        }
        sync_dir(parent(&target));
        done.push((target, s.old));
    }
    remove_journals(&targets);
    Ok(backups)
}

/// What a multi-file commit is about to do, kept beside each file until it
/// is done.
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    files: Vec<JournalEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct JournalEntry {
    path: PathBuf,
    /// The text before (`None`: the file did not exist).
    old: Option<String>,
    /// SHA-256 of the new bytes.
    new_hash: String,
}

fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `.NAME.podstack-journal` beside `target`.
fn journal_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    parent(target).join(format!(".{name}.podstack-journal"))
}

fn remove_journals(targets: &[PathBuf]) {
    for t in targets {
        let _ = fs_err::remove_file(journal_path(t));
    }
}

/// The prefix of podstack's temp files beside a target: `.podstack-PID-`.
fn temp_prefix() -> String {
    format!(".podstack-{}-", std::process::id())
}

/// Finishes what a killed podstack left beside `target`: when its journal
/// says a multi-file commit was cut short, every file of it gets its old
/// bytes back (all or nothing holds across kill -9); temp files of podstacks
/// that no longer run are removed. Returns what it did, for the log.
pub fn recover(target: &Path) -> Result<Vec<String>> {
    let target = resolve_link(target)?;
    let mut did = Vec::new();
    let jp = journal_path(&target);
    if let Ok(text) = fs_err::read(&jp) {
        let journal: Option<Journal> = serde_json::from_slice(&text).ok();
        let files = journal.map(|j| j.files).unwrap_or_default();
        let complete = files
            .iter()
            .all(|f| fs_err::read(&f.path).is_ok_and(|b| digest(&b) == f.new_hash));
        if !complete {
            for f in &files {
                match &f.old {
                    Some(old) => write_atomic(&f.path, old.as_bytes(), 0o644)?,
                    None => {
                        let _ = fs_err::remove_file(&f.path);
                    }
                }
                did.push(format!(
                    "put {} back as it was before a podstack that was killed while writing it",
                    f.path.display()
                ));
            }
        }
        let all: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        remove_journals(&all);
        let _ = fs_err::remove_file(&jp);
    }
    if let Ok(entries) = fs_err::read_dir(parent(&target)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(".podstack-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
                && fs_err::remove_file(e.path()).is_ok()
            {
                did.push(format!(
                    "removed {}, left by a killed podstack",
                    e.path().display()
                ));
            }
        }
    }
    Ok(did)
}

fn resolve_link(path: &Path) -> Result<PathBuf> {
    // A symlinked file (a dotfiles checkout, say) is written where it points:
    // renaming over the link would replace the user's link with a copy.
    if fs_err::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return fs_err::canonicalize(path)
            .with_context(|| format!("{} is a symlink to nowhere", path.display()));
    }
    Ok(path.to_path_buf())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        // Durability of the rename; a failure here loses nothing already visible.
        let _ = d.sync_all();
    }
}

/// An exclusive advisory lock on a sidecar file, released on drop. The file
/// names its holder (pid and command line) for whoever waits.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// The sidecar lock of `target`: `.NAME.podstack-lock` in the same folder, so
/// every podstack that writes `target` meets the same lock, whatever its
/// state folder.
pub fn lock_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    parent(target).join(format!(".{name}.podstack-lock"))
}

impl Lock {
    /// Takes the lock of the file `target`: its sidecar [`lock_path`], or,
    /// where its folder may not be written (then podstack cannot replace the
    /// file either, but may still read it), a lock in `fallback_dir` named
    /// after the file's path.
    pub async fn for_file(
        target: &Path,
        fallback_dir: &Path,
        deadline: Duration,
        what: &str,
    ) -> Result<Lock> {
        // One file, one lock, whichever path (or symlink) names it.
        let target = &resolve_link(target).unwrap_or_else(|_| target.to_path_buf());
        let sidecar = lock_path(target);
        let dir = parent(&sidecar);
        if dir.exists() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
            return Lock::in_dir(target, fallback_dir, deadline, what).await;
        }
        Lock::acquire(&sidecar, deadline, what).await
    }

    /// The lock of the file `target`, kept in `dir` under a name made of the
    /// target's path: for files whose folder must hold nothing else (Claude
    /// Code runs every file in its session-env folder as shell code).
    pub async fn in_dir(target: &Path, dir: &Path, deadline: Duration, what: &str) -> Result<Lock> {
        let target = resolve_link(target).unwrap_or_else(|_| target.to_path_buf());
        let name: String = target
            .to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // A name fits a file system's 255 bytes: long paths keep their tail.
        let name = &name[name.len().saturating_sub(200)..];
        Lock::acquire(&dir.join(format!("{name}.lock")), deadline, what).await
    }

    /// Takes the lock at `path` if nobody holds it; `None` if someone does.
    pub fn try_acquire(path: &Path) -> Result<Option<Lock>> {
        let mut file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {
                stamp(&mut file);
                Ok(Some(Lock { _file: file }))
            }
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// Takes the lock at `path`, waiting up to `deadline`. While it waits it
    /// says once on stderr who holds it; past the deadline the error names
    /// the lock file and its holder.
    pub async fn acquire(path: &Path, deadline: Duration, what: &str) -> Result<Lock> {
        let mut file = open_lock_file(path)?;
        let start = Instant::now();
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => {
                    stamp(&mut file);
                    return Ok(Lock { _file: file });
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
            let holder = holder(path);
            if start.elapsed() >= deadline {
                bail!(
                    "{holder} has held {} for more than {} s ({what}); wait for it to finish, stop it, or allow longer with --lock-timeout",
                    path.display(),
                    deadline.as_secs()
                );
            }
            if !said {
                crate::log::say(&format!(
                    "waiting for {holder} ({what}: lock {})",
                    path.display()
                ));
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Opens (creating) the lock file at `path`: never through a symlink, never
/// anything but a regular file (a link planted where the lock goes must not
/// make podstack write elsewhere).
fn open_lock_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs_err::create_dir_all(parent(path))?;
    let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot open the lock file {} (if it is a symlink, remove it: podstack never follows one there)",
                    path.display()
                )
            })?;
    if !file.metadata()?.is_file() {
        bail!(
            "the lock file {} is not a regular file: remove it",
            path.display()
        );
    }
    Ok(file)
}

/// Writes the holder (pid and command line) into a lock just taken.
fn stamp(file: &mut std::fs::File) {
    let me = format!(
        "pid {}: {}\n",
        std::process::id(),
        crate::proc::cmdline_of("self")
    );
    let _ = file.set_len(0).and_then(|()| {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(me.as_bytes())
    });
}

/// Who holds a lock, as its file says.
fn holder(path: &Path) -> String {
    let text = fs_err::read_to_string(path).unwrap_or_default();
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "another podstack".to_string()
    } else {
        format!("podstack ({})", crate::proc::cut(line, 200))
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

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn second_lock_waits_then_fails_naming_the_path_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("containers.conf"));
        assert!(path.ends_with(".containers.conf.podstack-lock"));
        let first = block_on(Lock::acquire(&path, Duration::from_secs(1), "test")).unwrap();
        let err = block_on(Lock::acquire(&path, Duration::from_millis(120), "test")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("containers.conf.podstack-lock"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("--lock-timeout"), "{msg}");
        drop(first);
        block_on(Lock::acquire(&path, Duration::from_millis(120), "test")).unwrap();
    }

    #[test]
    fn bounded_reads_refuse_fifos_devices_and_big_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            read_bounded(&fifo, 10),
            Err(ReadError::NotAFile("a FIFO"))
        ));
        assert!(matches!(
            read_bounded(Path::new("/dev/zero"), 10),
            Err(ReadError::NotAFile("a device"))
        ));
        assert!(matches!(
            read_bounded(dir.path(), 10),
            Err(ReadError::NotAFile("a folder"))
        ));
        assert!(matches!(
            read_bounded(&dir.path().join("nope"), 10),
            Err(ReadError::Missing)
        ));
        let f = dir.path().join("f");
        fs_err::write(&f, "0123456789A").unwrap();
        assert!(matches!(read_bounded(&f, 10), Err(ReadError::TooBig(11))));
        assert_eq!(read_bounded(&f, 11).unwrap(), b"0123456789A");
    }

    #[test]
    fn a_commit_cut_short_by_kill_9_is_undone_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        fs_err::write(&a, "old a").unwrap();
        fs_err::write(&b, "old b").unwrap();
        // The state a kill between the two renames leaves: a is new, b is old,
        // both journals are there, and a temp file of a dead pid lies beside.
        let journal = Journal {
            files: vec![
                JournalEntry {
                    path: a.clone(),
                    old: Some("old a".into()),
                    new_hash: digest(b"new a"),
                },
                JournalEntry {
                    path: b.clone(),
                    old: Some("old b".into()),
                    new_hash: digest(b"new b"),
                },
            ],
        };
        let text = serde_json::to_vec(&journal).unwrap();
        fs_err::write(journal_path(&a), &text).unwrap();
        fs_err::write(journal_path(&b), &text).unwrap();
        fs_err::write(&a, "new a").unwrap();
        fs_err::write(dir.path().join(".podstack-99999999-abc"), "x").unwrap();
        let did = recover(&b).unwrap();
        assert_eq!(did.len(), 3, "{did:?}");
        assert_eq!(fs_err::read_to_string(&a).unwrap(), "old a");
        assert_eq!(fs_err::read_to_string(&b).unwrap(), "old b");
        assert!(!journal_path(&a).exists() && !journal_path(&b).exists());
        assert!(!dir.path().join(".podstack-99999999-abc").exists());
        // A complete commit whose journals were not yet removed stays.
        fs_err::write(&a, "new a").unwrap();
        fs_err::write(&b, "new b").unwrap();
        fs_err::write(journal_path(&a), &text).unwrap();
        assert!(recover(&a).unwrap().is_empty());
        assert_eq!(fs_err::read_to_string(&b).unwrap(), "new b");
    }

    #[test]
    fn a_symlink_where_the_lock_goes_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs_err::write(&victim, "precious").unwrap();
        let lock = lock_path(&dir.path().join("containers.conf"));
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let err = block_on(Lock::acquire(&lock, Duration::from_millis(50), "t")).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        assert_eq!(fs_err::read_to_string(&victim).unwrap(), "precious");
        // A symlinked config file and its target share one lock.
        let real = dir.path().join("real.conf");
        fs_err::write(&real, "").unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let state = dir.path().join("state");
        let held = block_on(Lock::for_file(&real, &state, Duration::from_secs(1), "t")).unwrap();
        assert!(
            block_on(Lock::for_file(
                &link,
                &state,
                Duration::from_millis(100),
                "t"
            ))
            .is_err()
        );
        drop(held);
    }

    #[test]
    fn commit_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        fs_err::write(&a, "old a").unwrap();
        let b = dir.path().join("b.conf");
        let files = [
            NewFile {
                path: a.clone(),
                bytes: b"new a".to_vec(),
                new_mode: 0o644,
            },
            NewFile {
                path: b.clone(),
                bytes: b"new b".to_vec(),
                new_mode: 0o644,
            },
        ];
        // The second rename fails after the first succeeded: the first is put back.
        let failing_second = |tmp: tempfile::NamedTempFile, target: &Path| {
            if target.ends_with("b.conf") {
                return Err(std::io::Error::other("disk full"));
            }
            tmp.persist(target).map(drop).map_err(|e| e.error)
        };
        let err = commit_via(&files, &failing_second).unwrap_err();
        assert!(format!("{err:#}").contains("put back"), "{err:#}");
        assert_eq!(fs_err::read_to_string(&a).unwrap(), "old a");
        assert!(!b.exists());
        // A folder where a file should be is refused before anything changes.
        fs_err::create_dir_all(b.join("inside")).unwrap();
        assert!(commit(&files).is_err());
        assert_eq!(fs_err::read_to_string(&a).unwrap(), "old a");
        fs_err::remove_dir_all(&b).unwrap();
        let backups = commit(&files).unwrap();
        assert_eq!(fs_err::read_to_string(&a).unwrap(), "new a");
        assert_eq!(fs_err::read_to_string(&b).unwrap(), "new b");
        // The backup of the first version was made by the failed attempt, once.
        assert_eq!(backups, vec![None, None]);
        assert_eq!(fs_err::read_to_string(bak_path(&a)).unwrap(), "old a");
    }
}
