//! Temporary folders: canary root file systems, candidate configuration
//! files, throwaway podman stores.
//!
//! Guarantees: a folder lives on a mount where files may be executed (a
//! canary root on a `noexec` TMPDIR would make podman fail for a reason that
//! has nothing to do with podman); it is removed when dropped, which covers
//! errors, deadlines and Ctrl-C; its name carries the pid of the podstack
//! that made it, so a later run removes what a killed one (kill -9) left.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::detect::parse;
use crate::env::Env;

/// Every scratch folder's name starts with this, then `KIND-PID-`.
const PREFIX: &str = "podstack-";

/// Where scratch folders go: the first of `$TMPDIR`, `/tmp`, `/var/tmp` and
/// `fallback` (podstack's state folder) that is writable and not `noexec`.
#[derive(Clone, Debug)]
pub struct Base {
    dir: PathBuf,
}

impl Base {
    /// Picks the base folder. The error says which folders were refused and why.
    pub fn pick(env: &Env, mountinfo: &str, fallback: &Path) -> Result<Base> {
        let mut refused = Vec::new();
        let candidates = env
            .abs_path("TMPDIR")
            .into_iter()
            .chain([PathBuf::from("/tmp"), PathBuf::from("/var/tmp")])
            .chain(std::iter::once(fallback.join("tmp")));
        for dir in candidates {
            if dir == fallback.join("tmp") {
                let _ = fs_err::create_dir_all(&dir);
            }
            let real = fs_err::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if parse::noexec_at(mountinfo, &real.to_string_lossy()) {
                refused.push(format!("{} is on a noexec mount", dir.display()));
                continue;
            }
            if nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_err() {
                refused.push(format!("{} is not writable", dir.display()));
                continue;
            }
            return Ok(Base { dir });
        }
        bail!(
            "no folder for temporary files where programs may run: {}; set TMPDIR to a writable folder on a mount without noexec",
            refused.join(", ")
        )
    }

    /// A base at `dir`, as is (tests).
    #[cfg(test)]
    pub fn at(dir: &Path) -> Base {
        Base {
            dir: dir.to_path_buf(),
        }
    }

    /// The folder.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A new folder `podstack-KIND-PID-XXXXXX`, removed on drop.
    pub fn make(&self, kind: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{kind}-{}-", std::process::id()))
            .tempdir_in(&self.dir)
            .with_context(|| format!("cannot create a temporary folder in {}", self.dir.display()))
    }

    /// Removes the scratch folders of podstack processes that no longer run
    /// (a run killed with SIGKILL cannot clean up after itself). Returns what
    /// was removed.
    pub fn sweep(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs_err::read_dir(&self.dir) else {
            return Vec::new();
        };
        let me = nix::unistd::geteuid().as_raw();
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(owner_pid) else {
                continue;
            };
            let ours = std::os::unix::fs::MetadataExt::uid(&match entry.metadata() {
                Ok(m) if m.is_dir() => m,
                _ => continue,
            }) == me;
            if ours && !Path::new(&format!("/proc/{pid}")).exists() {
                let path = entry.path();
                if fs_err::remove_dir_all(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}

/// The pid in a scratch folder's name `podstack-KIND-PID-XXXXXX`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.rsplitn(3, '-');
    let _random = parts.next()?;
    let pid = parts.next()?;
    let kind = parts.next()?;
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid() {
        assert_eq!(owner_pid("podstack-canary-1234-AbC12x"), Some(1234));
        assert_eq!(owner_pid("podstack-candidate-7-x"), Some(7));
        assert_eq!(owner_pid("podstack-canary-x-AbC"), None);
        assert_eq!(owner_pid("podstack-test-abc"), None);
        assert_eq!(owner_pid("other-canary-1-x"), None);
    }

    #[test]
    fn folders_of_dead_processes_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let base = Base::at(dir.path());
        let live = base.make("canary").unwrap();
        fs_err::write(live.path().join("podstack"), "x").unwrap();
        // pid_max is at most 2^22: this pid cannot be running.
        let dead = dir.path().join("podstack-canary-99999999-AbCdEf");
        fs_err::create_dir_all(dead.join("dev")).unwrap();
        let foreign = dir.path().join("podstack-test-keep");
        fs_err::create_dir_all(&foreign).unwrap();
        assert_eq!(base.sweep(), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(live.path().exists() && foreign.exists());
        let kept = live.path().to_path_buf();
        drop(live);
        assert!(!kept.exists(), "dropping removes the folder");
    }

    #[test]
    fn a_noexec_tmpdir_is_passed_over() {
        let state = tempfile::tempdir().unwrap();
        let env = Env::from_pairs([("TMPDIR", "/tmp")]);
        let mi = "1 0 1:1 / / rw - ext4 /dev/vda rw\n2 1 1:2 / /tmp rw,noexec - tmpfs t rw\n";
        let base = Base::pick(&env, mi, state.path()).unwrap();
        assert_eq!(base.path(), Path::new("/var/tmp"));
        let all = "1 0 1:1 / / rw,noexec - ext4 /dev/vda rw\n";
        let err = Base::pick(&env, all, state.path()).unwrap_err().to_string();
        assert!(err.contains("/tmp is on a noexec mount"), "{err}");
        assert!(err.contains("set TMPDIR"), "{err}");
    }
}
