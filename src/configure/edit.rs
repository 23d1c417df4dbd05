//! The new text of storage.conf and containers.conf, computed from the old
//! text and the plan (pure). Keys podstack does not own are never touched.

use std::path::PathBuf;

use toml_edit::DocumentMut;

use crate::conf::{self, ConfValue};
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

/// Applies the storage plan. `roots` are the runroot and graphroot to add when
/// the file must name them and does not; existing values are kept.
/// Returns the keys that changed, as `[table] key = value`.
pub fn storage(
    doc: &mut DocumentMut,
    plan: &StoragePlan,
    roots: Option<(PathBuf, PathBuf)>,
) -> Vec<String> {
    let mut changed = Vec::new();
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
    for (key, value, note) in wanted {
        if conf::set(doc, "storage", key, &value, note) {
            changed.push(format!("[storage] {key} = {value}"));
        }
    }
    changed
}

/// Applies the containers.conf settings. Returns the keys that changed.
pub fn containers(doc: &mut DocumentMut, settings: &[Setting]) -> Vec<String> {
    settings
        .iter()
        .filter(|s| conf::set(doc, s.table, s.key, &s.value, &note(s)))
        .map(|s| format!("[{}] {} = {}", s.table, s.key, s.value))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::setting;
    use std::path::Path;

    fn doc(text: &str) -> DocumentMut {
        conf::parse(Path::new("x"), text).unwrap()
    }

    #[test]
    fn storage_driver_and_missing_roots() {
        let mut d = doc("[storage]\ndriver = \"overlay\"\ngraphroot = \"/mine\"\n");
        let plan = StoragePlan {
            driver: Some("vfs".into()),
            reason: "gVisor".into(),
            needs_roots: true,
        };
        let changed = storage(&mut d, &plan, Some(("/run/s".into(), "/var/s".into())));
        assert_eq!(
            changed,
            vec![
                "[storage] driver = \"vfs\"",
                "[storage] runroot = \"/run/s\""
            ]
        );
        let text = d.to_string();
        assert!(text.contains("graphroot = \"/mine\""));
        assert!(!text.contains("/var/s"));
        assert!(storage(&mut d, &plan, Some(("/run/s".into(), "/var/s".into()))).is_empty());
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
        assert!(storage(&mut d, &plan, None).is_empty());
        assert_eq!(d.to_string(), text);
    }

    #[test]
    fn containers_settings_report_only_what_changes() {
        let mut d = doc("[engine]\nruntime = \"runc\"\n");
        let settings = vec![
            setting("engine", "runtime", "runc", "r"),
            setting("engine", "cgroup_manager", "cgroupfs", "c"),
        ];
        assert_eq!(
            containers(&mut d, &settings),
            vec!["[engine] cgroup_manager = \"cgroupfs\""]
        );
        assert!(containers(&mut d, &settings).is_empty());
        let mut proven = setting("containers", "netns", "host", "no tun");
        proven.trigger = Some("Error: slirp4netns failed\nmore".into());
        containers(&mut d, &[proven]);
        let want = "# podstack: no tun\n# podstack: proven by: Error: slirp4netns failed\nnetns = \"host\"\n";
        assert!(d.to_string().contains(want), "{d}");
    }
}
