//! A snapshot of the process environment.
//!
//! Everything that depends on environment variables takes an [`Env`] instead
//! of reading `std::env`, so tests can describe any host without touching the
//! real environment, and the binary reads the environment exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Environment variables, read once at start-up.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The environment of this process (variables that are not UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self::from_pairs(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
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
    fn truthy_values() {
        let env = Env::from_pairs([("A", "TRUE"), ("B", "1"), ("C", "false"), ("D", "0")]);
        assert!(env.truthy("A") && env.truthy("B"));
        assert!(!env.truthy("C") && !env.truthy("D") && !env.truthy("E"));
    }
}
