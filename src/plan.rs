//! Stage 2, plan: from the host's facts, the podman settings this host needs.
//!
//! A pure function of [`Facts`]: what storage driver, which containers.conf
//! keys and why. The canary (see `canary`) can add settings it proves are
//! needed; [`Plan::apply`] records those with the error text that triggered them.

use serde::Serialize;

use crate::conf::ConfValue;
use crate::detect::parse::kernel_version;
use crate::detect::{ContainerKind, Facts};

/// The storage driver the user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// vfs where overlay cannot work (gVisor, containers, no overlay support); else leave it.
    Auto,
    /// Always vfs: slow, but works everywhere.
    Vfs,
    /// Always overlay.
    Overlay,
}

/// The network containers get by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// podman's own default (a bridge, or slirp4netns/pasta rootless).
    Default,
    /// The host's network namespace.
    Host,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::Default => "default",
            Network::Host => "host",
        })
    }
}

/// One containers.conf key podstack wants set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The TOML table: `engine` or `containers`.
    pub table: &'static str,
    /// The key.
    pub key: &'static str,
    /// The value.
    pub value: ConfValue,
    /// Why, in a sentence.
    pub reason: String,
    /// The error text that proved it was needed (canary findings only).
    pub trigger: Option<String>,
}

/// What to do with storage.conf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoragePlan {
    /// The driver to configure; `None` leaves the user's (or podman's) choice alone.
    pub driver: Option<String>,
    /// Why.
    pub reason: String,
    /// Rootful storage.conf files must name runroot and graphroot
    /// (podman 4.3 fails with "runroot must be set" otherwise).
    pub needs_roots: bool,
}

/// The decision record of one `configure`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// storage.conf.
    pub storage: StoragePlan,
    /// containers.conf keys, in the order they were decided.
    pub settings: Vec<Setting>,
}

impl Plan {
    /// Adds or replaces the setting for the same table and key.
    pub fn apply(&mut self, setting: Setting) {
        match self
            .settings
            .iter_mut()
            .find(|s| s.table == setting.table && s.key == setting.key)
        {
            Some(existing) => *existing = setting,
            None => self.settings.push(setting),
        }
    }

    /// The setting for `table.key`, if planned.
    pub fn get(&self, table: &str, key: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .find(|s| s.table == table && s.key == key)
    }

    /// `host` when containers default to the host's network, else `default`.
    pub fn network(&self) -> Network {
        match self.get("containers", "netns").map(|s| &s.value) {
            Some(ConfValue::Str(v)) if v == "host" => Network::Host,
            _ => Network::Default,
        }
    }
}

/// Plans the configuration for `facts`.
pub fn plan(facts: &Facts, choice: DriverChoice) -> Plan {
    let storage = StoragePlan {
        needs_roots: facts.layout.as_ref().is_some_and(|l| !l.rootless),
        ..storage_driver(facts, choice)
    };
    let mut plan = Plan {
        storage,
        settings: Vec::new(),
    };
    if !facts.systemd_pid1 {
        plan.apply(setting(
            "engine",
            "cgroup_manager",
            "cgroupfs",
            "PID 1 is not systemd: the systemd cgroup manager has no sd-bus to talk to",
        ));
        plan.apply(setting(
            "engine",
            "events_logger",
            "file",
            "PID 1 is not systemd: no journald to receive podman's events",
        ));
    }
    if facts.gvisor {
        plan.apply(setting(
            "containers",
            "netns",
            "host",
            "gVisor: only host networking works for nested containers",
        ));
        if facts.tool("runc").is_some() {
            plan.apply(setting(
                "engine",
                "runtime",
                "runc",
                "gVisor has no /proc/self/setgroups, on which crun before 1.25.1 fails; runc copes",
            ));
        }
    }
    plan
}

/// A plain string setting.
pub fn setting(table: &'static str, key: &'static str, value: &str, reason: &str) -> Setting {
    Setting {
        table,
        key,
        value: ConfValue::Str(value.to_string()),
        reason: reason.to_string(),
        trigger: None,
    }
}

fn storage_driver(facts: &Facts, choice: DriverChoice) -> StoragePlan {
    let pick = |driver: &str, reason: String| StoragePlan {
        driver: Some(driver.to_string()),
        reason,
        needs_roots: false,
    };
    match choice {
        DriverChoice::Vfs => return pick("vfs", "asked for with --storage-driver vfs".into()),
        DriverChoice::Overlay => {
            return pick("overlay", "asked for with --storage-driver overlay".into());
        }
        DriverChoice::Auto => {}
    }
    if facts.gvisor {
        return pick(
            "vfs",
            "gVisor: overlay mounts do not work on its root file system".into(),
        );
    }
    if facts.container != ContainerKind::None {
        return pick(
            "vfs",
            format!(
                "inside a {} container: overlay on top of the container's own overlay usually fails",
                facts.container
            ),
        );
    }
    if let Err(why) = overlay_possible(facts) {
        return pick("vfs", why);
    }
    let current = facts
        .storage
        .driver
        .as_deref()
        .unwrap_or("podman's default");
    StoragePlan {
        driver: None,
        reason: format!("overlay can work here; the configured driver ({current}) is left alone"),
        needs_roots: false,
    }
}

/// The drivers whose data lies in the graphroot beside the one in use
/// (`target`; when podman picks it, any second driver counts). podman 4.3
/// does not always refuse such a store: it may silently hide the other
/// driver's images and make every container start wait 20 s for conmon.
pub fn other_drivers(target: Option<&str>, on_disk: &[String]) -> Vec<String> {
    match target {
        Some(t) => on_disk.iter().filter(|d| *d != t).cloned().collect(),
        None if on_disk.len() > 1 => on_disk.to_vec(),
        None => Vec::new(),
    }
}

/// The warning for a graphroot that holds `others` beside the driver in use.
pub fn mixed_storage_warning(graphroot: &std::path::Path, others: &[String]) -> String {
    format!(
        "podman's storage at {} also holds {} data from an earlier storage driver: podman hides those images and may wait 20 s for conmon at every container start; `podstack configure --reset-storage` wipes the store (its containers, images and volumes)",
        graphroot.display(),
        others.join(", ")
    )
}

/// Whether overlay storage can work for this user, and if not, why.
pub fn overlay_possible(facts: &Facts) -> Result<(), String> {
    let fuse = facts.tool("fuse-overlayfs").is_some() && facts.dev_fuse;
    if !facts.overlay_fs && !fuse {
        return Err(
            "the kernel has no overlay file system and fuse-overlayfs is not usable".into(),
        );
    }
    if facts.storage.graphroot_fs.as_deref() == Some("overlay") && !fuse {
        return Err(
            "podman's graphroot is itself on overlay, which overlay cannot stack on".into(),
        );
    }
    let old_kernel = facts
        .kernel
        .as_deref()
        .and_then(kernel_version)
        .is_some_and(|v| v < (5, 13));
    if facts.rootless && old_kernel && !fuse {
        return Err(
            "rootless overlay needs kernel 5.13 or newer, or fuse-overlayfs with /dev/fuse".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::detect::parse::CgroupLayout;
    use crate::detect::{Binary, Limit, Rlimits, StorageFacts};
    use crate::layout::Layout;
    use std::path::PathBuf;

    /// The facts of this project's machines: a Firecracker VM, root, hybrid cgroups.
    pub fn vm_root() -> Facts {
        let bin = |n: &str| Binary {
            name: n.into(),
            path: PathBuf::from(format!("/usr/bin/{n}")),
            version: None,
        };
        Facts {
            schema: 1,
            kernel: Some("6.18.44-fc-v657".into()),
            gvisor: false,
            gvisor_markers: vec![],
            vm: crate::detect::Vm::Firecracker,
            container: ContainerKind::None,
            container_markers: vec![],
            euid: 0,
            user: Some("root".into()),
            rootless: false,
            rootless_reasons: vec![],
            subuid: vec![],
            subgid: vec![],
            systemd_pid1: false,
            cgroup: CgroupLayout::Hybrid,
            rlimits: Rlimits {
                nofile: Limit {
                    soft: Some(20000),
                    hard: Some(20000),
                },
                nproc: Limit {
                    soft: Some(96365),
                    hard: Some(96365),
                },
            },
            can_raise_rlimits: false,
            pid_max: Some(32768),
            dev_net_tun: true,
            dev_fuse: true,
            overlay_fs: true,
            podman: Some(bin("podman")),
            docker: Some(bin("docker")),
            runtimes: vec![bin("crun"), bin("runc")],
            helpers: vec![bin("conmon"), bin("slirp4netns"), bin("fuse-overlayfs")],
            sockets: vec![],
            layout: Some(Layout {
                rootless: false,
                storage_conf: "/etc/containers/storage.conf".into(),
                storage_conf_required: false,
                storage_fallbacks: vec![],
                containers_conf: "/etc/containers/containers.conf".into(),
                default_graphroot: "/var/lib/containers/storage".into(),
                default_runroot: "/run/containers/storage".into(),
                state_dir: "/root/.local/state/podstack".into(),
            }),
            storage: StorageFacts {
                graphroot_fs: Some("ext4".into()),
                ..StorageFacts::default()
            },
            claude_code_remote: false,
            ci: false,
        }
    }

    fn keys(plan: &Plan) -> Vec<String> {
        plan.settings
            .iter()
            .map(|s| format!("{}.{}={}", s.table, s.key, s.value))
            .collect()
    }

    #[test]
    fn vm_root_keeps_overlay_and_drops_systemd_integration() {
        let p = plan(&vm_root(), DriverChoice::Auto);
        assert_eq!(p.storage.driver, None);
        assert!(p.storage.needs_roots);
        assert_eq!(
            keys(&p),
            vec![
                "engine.cgroup_manager=\"cgroupfs\"",
                "engine.events_logger=\"file\""
            ]
        );
        assert_eq!(p.network(), Network::Default);
    }

    #[test]
    fn systemd_hosts_need_nothing() {
        let mut f = vm_root();
        f.systemd_pid1 = true;
        assert!(plan(&f, DriverChoice::Auto).settings.is_empty());
    }

    #[test]
    fn gvisor_gets_vfs_host_network_and_runc() {
        let mut f = vm_root();
        f.gvisor = true;
        let p = plan(&f, DriverChoice::Auto);
        assert_eq!(p.storage.driver.as_deref(), Some("vfs"));
        assert_eq!(p.network(), Network::Host);
        assert!(keys(&p).contains(&"engine.runtime=\"runc\"".to_string()));
        f.runtimes.retain(|b| b.name != "runc");
        assert!(
            plan(&f, DriverChoice::Auto)
                .get("engine", "runtime")
                .is_none()
        );
    }

    #[test]
    fn containers_and_hosts_without_overlay_get_vfs() {
        let mut f = vm_root();
        f.container = ContainerKind::Docker;
        assert_eq!(
            plan(&f, DriverChoice::Auto).storage.driver.as_deref(),
            Some("vfs")
        );

        let mut f = vm_root();
        f.overlay_fs = false;
        f.helpers.retain(|b| b.name != "fuse-overlayfs");
        assert!(
            plan(&f, DriverChoice::Auto)
                .storage
                .reason
                .contains("no overlay")
        );

        let mut f = vm_root();
        f.storage.graphroot_fs = Some("overlay".into());
        f.dev_fuse = false;
        assert_eq!(
            plan(&f, DriverChoice::Auto).storage.driver.as_deref(),
            Some("vfs")
        );
        f.dev_fuse = true;
        assert_eq!(plan(&f, DriverChoice::Auto).storage.driver, None);
    }

    #[test]
    fn old_kernels_need_fuse_for_rootless_overlay() {
        let mut f = vm_root();
        f.rootless = true;
        f.kernel = Some("5.10.0-28-amd64".into());
        f.dev_fuse = false;
        assert_eq!(
            plan(&f, DriverChoice::Auto).storage.driver.as_deref(),
            Some("vfs")
        );
        f.kernel = Some("5.15.0".into());
        assert_eq!(plan(&f, DriverChoice::Auto).storage.driver, None);
    }

    #[test]
    fn explicit_choice_wins_and_rootless_needs_no_roots() {
        let mut f = vm_root();
        f.gvisor = true;
        let p = plan(&f, DriverChoice::Overlay);
        assert_eq!(p.storage.driver.as_deref(), Some("overlay"));
        f.layout.as_mut().unwrap().rootless = true;
        assert!(!plan(&f, DriverChoice::Vfs).storage.needs_roots);
    }

    #[test]
    fn other_drivers_in_the_graphroot() {
        let disk = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            other_drivers(Some("vfs"), &disk(&["overlay", "vfs"])),
            vec!["overlay"]
        );
        assert_eq!(
            other_drivers(Some("vfs"), &disk(&["overlay"])),
            vec!["overlay"]
        );
        assert!(other_drivers(Some("vfs"), &disk(&["vfs"])).is_empty());
        assert!(other_drivers(None, &disk(&["overlay"])).is_empty());
        assert_eq!(other_drivers(None, &disk(&["overlay", "vfs"])).len(), 2);
        assert!(other_drivers(Some("vfs"), &[]).is_empty());
    }

    #[test]
    fn apply_replaces_the_same_key() {
        let mut p = plan(&vm_root(), DriverChoice::Auto);
        p.apply(setting("engine", "runtime", "runc", "a"));
        p.apply(setting("engine", "runtime", "crun", "b"));
        assert_eq!(p.settings.len(), 3);
        assert_eq!(p.get("engine", "runtime").unwrap().reason, "b");
    }
}
