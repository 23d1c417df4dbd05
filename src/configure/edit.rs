//! The new text of storage.conf and containers.conf, computed from the old
//! text and the plan (pure). Keys podstack does not own are never touched.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use toml_edit::DocumentMut;

use crate::conf::{self, Change, ConfValue};
use crate::plan::{Setting, StoragePlan};

/// The header of a containers.conf that podstack creates.
pub const CONTAINERS_HEADER: &str = "\
# podman settings this host needs, written by `podstack configure`.
# Each key says why above it; `podstack doctor` checks that containers run.
# podman merges this file over the system's containers.conf.
";

/// The header of a storage.conf that podstack creates from scratch.
pub const STORAGE_HEADER: &str = "\
# podman storage, written by `podstack configure`.
# Files do not merge: this one replaces the system's storage.conf.
";

/// One key podstack sets, as the report shows it: "was X, now Y, because".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// `[table] key`.
    pub key: String,
    /// The new value, as TOML.
    pub value: String,
    /// The value the user had set, as TOML; `null` for a key podstack adds.
    pub was: Option<String>,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.key, self.value)?;
        if let Some(was) = &self.was {
            write!(
                f,
                " (was {was}, now {}, because {})",
                self.value, self.reason
            )?;
        }
        Ok(())
    }
}

fn apply(
    doc: &mut DocumentMut,
    table: &str,
    key: &str,
    value: &ConfValue,
    reason: &str,
    note: &str,
) -> Result<Option<Changed>> {
    let change = conf::set(doc, table, key, value, note)
        .map_err(|e| anyhow::anyhow!("cannot set [{table}] {key}: {e}"))?;
    Ok(match change {
        Change::Unchanged => None,
        Change::Added => Some(Changed {
            key: format!("[{table}] {key}"),
            value: value.to_string(),
            was: None,
            reason: reason.to_string(),
        }),
        Change::Replaced { was } => Some(Changed {
            key: format!("[{table}] {key}"),
            value: value.to_string(),
            was: Some(was),
            reason: reason.to_string(),
        }),
    })
}

/// Applies the storage plan. `roots` are the runroot and graphroot to add when
/// the file must name them and does not; existing values are kept.
/// Returns the keys that changed.
pub fn storage(
    doc: &mut DocumentMut,
    plan: &StoragePlan,
    roots: Option<(PathBuf, PathBuf)>,
) -> Result<Vec<Changed>> {
    let current = conf::storage_settings(doc);
    let mut wanted: Vec<(&str, ConfValue, &str)> = Vec::new();
    if let Some(driver) = &plan.driver {
        wanted.push(("driver", ConfValue::Str(driver.clone()), &plan.reason));
    }
    if let Some((runroot, graphroot)) = roots {
        if current.runroot.is_none() {
            wanted.push((
                "runroot",
                ConfValue::Str(runroot.display().to_string()),
                "rootful podman needs runroot set",
            ));
        }
        if current.graphroot.is_none() {
            wanted.push((
                "graphroot",
                ConfValue::Str(graphroot.display().to_string()),
                "rootful podman needs graphroot set",
            ));
        }
    }
    let mut changed = Vec::new();
    for (key, value, reason) in wanted {
        changed.extend(apply(doc, "storage", key, &value, reason, reason)?);
    }
    Ok(changed)
}

/// Applies the containers.conf settings. Returns the keys that changed.
pub fn containers(doc: &mut DocumentMut, settings: &[Setting]) -> Result<Vec<Changed>> {
    let mut changed = Vec::new();
    for s in settings {
        changed.extend(apply(doc, s.table, s.key, &s.value, &s.reason, &note(s))?);
    }
    Ok(changed)
}

/// The comment above a key podstack adds: why, and the error that proved it.
fn note(s: &Setting) -> String {
    match &s.trigger {
        None => s.reason.clone(),
        Some(t) => {
            let t: String = t.lines().next().unwrap_or("").chars().take(200).collect();
            format!("{}\n# podstack: proven by: {t}", s.reason)
        }
    }
}

/// Points a storage document at a throwaway store (for proving a driver
/// change without touching the real one).
pub fn throwaway_roots(
    doc: &mut DocumentMut,
    graphroot: &std::path::Path,
    runroot: &std::path::Path,
    driver: Option<&str>,
) -> Result<()> {
    let mut set = |key: &str, v: String| {
        conf::set(doc, "storage", key, &ConfValue::Str(v), "")
            .map_err(|e| anyhow::anyhow!("cannot set [storage] {key}: {e}"))
    };
    set("graphroot", graphroot.display().to_string())?;
    set("runroot", runroot.display().to_string())?;
    set("rootless_storage_path", graphroot.display().to_string())?;
    if let Some(d) = driver {
        set("driver", d.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::setting;
    use std::path::Path;

    fn doc(text: &str) -> DocumentMut {
        conf::parse(Path::new("x"), text, conf::Kind::Containers)
            .unwrap()
            .doc
    }

    #[test]
    fn storage_driver_and_missing_roots() {
        let mut d = doc("[storage]\ndriver = \"overlay\"\ngraphroot = \"/mine\"\n");
        let plan = StoragePlan {
            driver: Some("vfs".into()),
            reason: "gVisor".into(),
            needs_roots: true,
        };
        let changed = storage(&mut d, &plan, Some(("/run/s".into(), "/var/s".into()))).unwrap();
        let shown: Vec<String> = changed.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "[storage] driver = \"vfs\" (was \"overlay\", now \"vfs\", because gVisor)",
                "[storage] runroot = \"/run/s\""
            ]
        );
        let text = d.to_string();
        assert!(text.contains("graphroot = \"/mine\""));
        assert!(!text.contains("/var/s"));
        assert!(
            storage(&mut d, &plan, Some(("/run/s".into(), "/var/s".into())))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn leaving_the_driver_alone_changes_nothing() {
        let text = "# mine\n[storage]\ndriver = \"btrfs\"\n";
        let mut d = doc(text);
        let plan = StoragePlan {
            driver: None,
            reason: String::new(),
            needs_roots: false,
        };
        assert!(storage(&mut d, &plan, None).unwrap().is_empty());
        assert_eq!(d.to_string(), text);
    }

    #[test]
    fn containers_settings_report_only_what_changes() {
        let mut d = doc("[engine]\nruntime = \"runc\"\n");
        let settings = vec![
            setting("engine", "runtime", "runc", "r"),
            setting("engine", "cgroup_manager", "cgroupfs", "c"),
        ];
        let changed = containers(&mut d, &settings).unwrap();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            changed[0].to_string(),
            "[engine] cgroup_manager = \"cgroupfs\""
        );
        assert!(containers(&mut d, &settings).unwrap().is_empty());
        let mut proven = setting("containers", "netns", "host", "no tun");
        proven.trigger = Some("Error: slirp4netns failed\nmore".into());
        containers(&mut d, &[proven]).unwrap();
        let want = "# podstack: no tun\n# podstack: proven by: Error: slirp4netns failed\nnetns = \"host\"\n";
        assert!(d.to_string().contains(want), "{d}");
    }
}
