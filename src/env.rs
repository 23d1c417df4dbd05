//! A snapshot of the process environment.
//!
//! Everything that depends on environment variables takes an [`Env`] instead
//! of reading `std::env`, so tests can describe any host without touching the
//! real environment, and the binary reads the environment exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Environment variables and the working folder, read once at start-up.
/// Its `Debug` shows names only: values may be secrets.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    /// Names of variables whose values are not UTF-8 (kept out of `vars`).
    not_utf8: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .field("cwd", &self.cwd)
            .finish()
    }
}

impl Env {
    /// The environment of this process (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        let mut not_utf8 = std::collections::BTreeSet::new();
        let mut pairs = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Ok(k) = k.into_string() else { continue };
            match v.into_string() {
                Ok(v) => pairs.push((k, v)),
                Err(_) => {
                    not_utf8.insert(k);
                }
            }
        }
        Self {
            cwd: std::env::current_dir().ok(),
            not_utf8,
            ..Self::from_pairs(pairs)
        }
    }

    /// Whether `key` is set to a value that is not UTF-8.
    pub fn not_utf8(&self, key: &str) -> bool {
        self.not_utf8.contains(key)
    }

    /// The same environment with `key` set to a value that is not UTF-8.
    #[cfg(test)]
    pub fn with_not_utf8(mut self, key: &str) -> Self {
        self.not_utf8.insert(key.to_string());
        self
    }

    /// The working folder podstack started in.
    pub fn cwd(&self) -> Option<PathBuf> {
        self.cwd.clone()
    }

    /// `p` as an absolute path (a relative one taken from the working folder).
    pub fn absolute(&self, p: &std::path::Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// The same environment seen from working folder `cwd`.
    #[cfg(test)]
    pub fn with_cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// An environment made of the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            cwd: None,
            not_utf8: std::collections::BTreeSet::new(),
        }
    }

    /// The value of `key`, if set and not empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` as an absolute path (podman ignores relative XDG paths too).
    pub fn abs_path(&self, key: &str) -> Option<PathBuf> {
        self.get(key).map(PathBuf::from).filter(|p| p.is_absolute())
    }

    /// The value of `key` as a path, a relative one taken from the working
    /// folder, as podman takes `XDG_CONFIG_HOME` and `XDG_DATA_HOME`.
    pub fn path_from_cwd(&self, key: &str) -> Option<PathBuf> {
        let p = PathBuf::from(self.get(key)?);
        if p.is_absolute() {
            Some(p)
        } else {
            Some(self.cwd.as_ref()?.join(p))
        }
    }

    /// Whether `key` holds a true-ish value (`1`, `true`, `yes`, any case).
    pub fn truthy(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    }

    /// `$HOME`; podstack never falls back to a user database look-up.
    pub fn home(&self) -> Option<PathBuf> {
        self.abs_path("HOME")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("A", ""), ("B", "x")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("x"));
    }

    #[test]
    fn relative_paths_are_ignored() {
        let env = Env::from_pairs([("XDG_CONFIG_HOME", "rel/dir"), ("HOME", "/h")]);
        assert_eq!(env.abs_path("XDG_CONFIG_HOME"), None);
        assert_eq!(env.home(), Some(PathBuf::from("/h")));
    }

    #[test]
    fn relative_xdg_paths_follow_the_working_folder_as_in_podman() {
        let env = Env::from_pairs([("XDG_CONFIG_HOME", "rel/dir")]).with_cwd("/work");
        assert_eq!(
            env.path_from_cwd("XDG_CONFIG_HOME"),
            Some(PathBuf::from("/work/rel/dir"))
        );
        let no_cwd = Env::from_pairs([("XDG_CONFIG_HOME", "rel")]);
        assert_eq!(no_cwd.path_from_cwd("XDG_CONFIG_HOME"), None);
    }

    #[test]
    fn debug_shows_names_never_values() {
        let env = Env::from_pairs([("PGPASSWORD", "hunter2")]);
        let shown = format!("{env:?}");
        assert!(
            shown.contains("PGPASSWORD") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn truthy_values() {
        let env = Env::from_pairs([("A", "TRUE"), ("B", "1"), ("C", "false"), ("D", "0")]);
        assert!(env.truthy("A") && env.truthy("B"));
        assert!(!env.truthy("C") && !env.truthy("D") && !env.truthy("E"));
    }
}
