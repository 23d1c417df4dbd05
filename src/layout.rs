//! Where podman's configuration and storage live for this user, resolved the
//! way podman 4 resolves them, as a pure function of the environment and euid.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::env::Env;

/// The files and folders podstack reads and writes for one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Podman's own notion of rootless: euid != 0 or already inside its user namespace.
    pub rootless: bool,
    /// The storage.conf podman reads and podstack edits.
    pub storage_conf: PathBuf,
    /// `CONTAINERS_STORAGE_CONF` names it: podman refuses to start while it is missing.
    pub storage_conf_required: bool,
    /// Files podman falls back to when `storage_conf` does not exist.
    pub storage_fallbacks: Vec<PathBuf>,
    /// The containers.conf podstack edits (podman merges it over the system files).
    pub containers_conf: PathBuf,
    /// podman's graphroot when storage.conf does not set one.
    pub default_graphroot: PathBuf,
    /// podman's runroot when storage.conf does not set one.
    pub default_runroot: PathBuf,
    /// podstack's own state folder (locks, later the stack's records).
    pub state_dir: PathBuf,
}

const SYSTEM_STORAGE: &str = "/etc/containers/storage.conf";
const VENDOR_STORAGE: &str = "/usr/share/containers/storage.conf";

/// Resolves the layout. `CONTAINERS_STORAGE_CONF` and `CONTAINERS_CONF` win, as they
/// do for podman; rootless paths follow XDG with `$HOME` as the only fallback.
pub fn resolve(env: &Env, euid: u32) -> Result<Layout> {
    for var in [
        "CONTAINERS_CONF",
        "CONTAINERS_STORAGE_CONF",
        "CONTAINERS_CONF_OVERRIDE",
        "HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
        "PODSTACK_STATE_DIR",
    ] {
        if env.not_utf8(var) {
            bail!(
                "{var} is not UTF-8 text, so podstack cannot name the file podman would use: set it to a UTF-8 path"
            );
        }
    }
    let rootless = euid != 0 || env.get("_CONTAINERS_USERNS_CONFIGURED").is_some();
    let home = env.home();
    let need_home = |what: &str| -> Result<PathBuf> {
        match &home {
            Some(h) => Ok(h.clone()),
            None => bail!(
                "HOME is not set (or not absolute) and {what} is not given: set HOME, or set {what}"
            ),
        }
    };
    // podman takes a relative XDG_CONFIG_HOME or XDG_DATA_HOME from the working
    // folder (measured with podman 4.3), so podstack does too.
    let config_home = || match env.path_from_cwd("XDG_CONFIG_HOME") {
        Some(p) => Ok(p),
        None => need_home("XDG_CONFIG_HOME").map(|h| h.join(".config")),
    };

    // podman takes these relative to the working folder too.
    let storage_conf = match env.path_from_cwd("CONTAINERS_STORAGE_CONF") {
        Some(p) => p,
        None if rootless => config_home()?.join("containers/storage.conf"),
        None => PathBuf::from(SYSTEM_STORAGE),
    };
    let storage_fallbacks = if env.path_from_cwd("CONTAINERS_STORAGE_CONF").is_some() {
        Vec::new()
    } else if rootless {
        vec![PathBuf::from(SYSTEM_STORAGE), PathBuf::from(VENDOR_STORAGE)]
    } else {
        vec![PathBuf::from(VENDOR_STORAGE)]
    };
    let containers_conf = match env.path_from_cwd("CONTAINERS_CONF") {
        Some(p) => p,
        None if rootless => config_home()?.join("containers/containers.conf"),
        None => PathBuf::from("/etc/containers/containers.conf"),
    };
    let (default_graphroot, default_runroot) = if rootless {
        let data = match env.path_from_cwd("XDG_DATA_HOME") {
            Some(p) => p,
            None => need_home("XDG_DATA_HOME")?.join(".local/share"),
        };
        let run = match env.abs_path("XDG_RUNTIME_DIR") {
            Some(p) => p.join("containers"),
            None => PathBuf::from(format!("/tmp/containers-user-{euid}/containers")),
        };
        (data.join("containers/storage"), run)
    } else {
        (
            PathBuf::from("/var/lib/containers/storage"),
            PathBuf::from("/run/containers/storage"),
        )
    };
    let state_dir = match (
        env.abs_path("PODSTACK_STATE_DIR"),
        env.abs_path("XDG_STATE_HOME"),
    ) {
        (Some(p), _) => p,
        (None, Some(p)) => p.join("podstack"),
        // Root needs no HOME for podman; podstack's own state then goes to /var/lib.
        (None, None) if !rootless && home.is_none() => PathBuf::from("/var/lib/podstack"),
        (None, None) => need_home("XDG_STATE_HOME")?.join(".local/state/podstack"),
    };
    Ok(Layout {
        rootless,
        storage_conf_required: env.path_from_cwd("CONTAINERS_STORAGE_CONF").is_some(),
        storage_conf,
        storage_fallbacks,
        containers_conf,
        default_graphroot,
        default_runroot,
        state_dir,
    })
}

/// The containers.conf files podman 4.3 reads, lowest precedence first
/// (measured): the vendor file, the system file, the system drop-ins
/// (`containers.conf.d/*.conf`, by name), then for rootless the user's file
/// and the user's drop-ins. `CONTAINERS_CONF` alone when it is set.
/// `CONTAINERS_CONF_OVERRIDE` is not in the chain: podman 4.3 ignores it
/// (newer podman reads it last, see [`override_file`]).
pub fn containers_conf_chain(env: &Env, layout: &Layout) -> Vec<PathBuf> {
    if env.path_from_cwd("CONTAINERS_CONF").is_some() {
        return vec![layout.containers_conf.clone()];
    }
    let system = PathBuf::from("/etc/containers/containers.conf");
    let mut chain = vec![
        PathBuf::from("/usr/share/containers/containers.conf"),
        system.clone(),
    ];
    chain.extend(drop_ins(&system));
    if layout.containers_conf != system {
        chain.push(layout.containers_conf.clone());
        chain.extend(drop_ins(&layout.containers_conf));
    }
    chain
}

/// `CONTAINERS_CONF_OVERRIDE`, which podman 4.5 and later read after every
/// other file.
pub fn override_file(env: &Env) -> Option<PathBuf> {
    env.path_from_cwd("CONTAINERS_CONF_OVERRIDE")
}

/// The drop-ins of `conf`: `conf.d/*.conf` (hidden ones too), sorted by name
/// as podman sorts them; folders are skipped.
pub fn drop_ins(conf: &std::path::Path) -> Vec<PathBuf> {
    let mut dir = conf.as_os_str().to_os_string();
    dir.push(".d");
    let mut files: Vec<PathBuf> = fs_err::read_dir(PathBuf::from(dir))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_uses_system_files() {
        let l = resolve(&Env::from_pairs([("HOME", "/root")]), 0).unwrap();
        assert!(!l.rootless);
        assert_eq!(
            l.storage_conf,
            PathBuf::from("/etc/containers/storage.conf")
        );
        assert_eq!(l.storage_fallbacks, vec![PathBuf::from(VENDOR_STORAGE)]);
        assert_eq!(
            l.containers_conf,
            PathBuf::from("/etc/containers/containers.conf")
        );
        assert_eq!(
            l.default_graphroot,
            PathBuf::from("/var/lib/containers/storage")
        );
        assert_eq!(l.state_dir, PathBuf::from("/root/.local/state/podstack"));
    }

    #[test]
    fn rootless_follows_xdg_then_home() {
        let env = Env::from_pairs([("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "/run/user/1001")]);
        let l = resolve(&env, 1001).unwrap();
        assert!(l.rootless);
        assert_eq!(
            l.storage_conf,
            PathBuf::from("/home/u/.config/containers/storage.conf")
        );
        assert_eq!(
            l.containers_conf,
            PathBuf::from("/home/u/.config/containers/containers.conf")
        );
        assert_eq!(
            l.default_graphroot,
            PathBuf::from("/home/u/.local/share/containers/storage")
        );
        assert_eq!(
            l.default_runroot,
            PathBuf::from("/run/user/1001/containers")
        );

        let env = Env::from_pairs([
            ("HOME", "/home/u"),
            ("XDG_CONFIG_HOME", "/cfg"),
            ("XDG_DATA_HOME", "/data"),
        ]);
        let l = resolve(&env, 1001).unwrap();
        assert_eq!(
            l.storage_conf,
            PathBuf::from("/cfg/containers/storage.conf")
        );
        assert_eq!(
            l.default_graphroot,
            PathBuf::from("/data/containers/storage")
        );
        assert_eq!(
            l.default_runroot,
            PathBuf::from("/tmp/containers-user-1001/containers")
        );
    }

    #[test]
    fn explicit_files_win() {
        let env = Env::from_pairs([
            ("HOME", "/root"),
            ("CONTAINERS_STORAGE_CONF", "/t/s.conf"),
            ("CONTAINERS_CONF", "/t/c.conf"),
        ]);
        let l = resolve(&env, 0).unwrap();
        assert_eq!(l.storage_conf, PathBuf::from("/t/s.conf"));
        assert!(l.storage_fallbacks.is_empty());
        assert_eq!(l.containers_conf, PathBuf::from("/t/c.conf"));
    }

    #[test]
    fn userns_marker_means_rootless_even_as_uid_0() {
        let env = Env::from_pairs([
            ("HOME", "/home/u"),
            ("_CONTAINERS_USERNS_CONFIGURED", "done"),
        ]);
        assert!(resolve(&env, 0).unwrap().rootless);
    }

    #[test]
    fn drop_ins_are_read_in_name_order_and_folders_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("containers.conf");
        let d = dir.path().join("containers.conf.d");
        fs_err::create_dir_all(d.join("99-sub.conf")).unwrap();
        for f in ["50-a.conf", "10-b.conf", ".99-hidden.conf", "90-x.toml"] {
            fs_err::write(d.join(f), "").unwrap();
        }
        let names: Vec<String> = drop_ins(&conf)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![".99-hidden.conf", "10-b.conf", "50-a.conf"]);
    }

    #[test]
    fn a_relative_config_home_is_taken_from_the_working_folder() {
        let env = Env::from_pairs([("HOME", "/home/u"), ("XDG_CONFIG_HOME", "rel")]).with_cwd("/w");
        let l = resolve(&env, 1001).unwrap();
        assert_eq!(
            l.storage_conf,
            PathBuf::from("/w/rel/containers/storage.conf")
        );
    }

    #[test]
    fn containers_conf_chains() {
        let root = resolve(&Env::from_pairs([("HOME", "/root")]), 0).unwrap();
        let env = Env::from_pairs([("HOME", "/root")]);
        assert!(containers_conf_chain(&env, &root).len() >= 2);
        let env = Env::from_pairs([("HOME", "/home/u")]);
        let user = resolve(&env, 1001).unwrap();
        let chain = containers_conf_chain(&env, &user);
        assert!(chain.contains(&user.containers_conf));
        let env = Env::from_pairs([("HOME", "/root"), ("CONTAINERS_CONF", "/t/c.conf")]);
        let only = resolve(&env, 0).unwrap();
        assert_eq!(
            containers_conf_chain(&env, &only),
            vec![PathBuf::from("/t/c.conf")]
        );
    }

    #[test]
    fn relative_and_non_utf8_file_variables_are_taken_as_podman_takes_them() {
        let env = Env::from_pairs([("CONTAINERS_CONF", "rel/my.conf")]).with_cwd("/w");
        let l = resolve(&env, 0).unwrap();
        assert_eq!(l.containers_conf, PathBuf::from("/w/rel/my.conf"));
        assert_eq!(
            containers_conf_chain(&env, &l),
            vec![PathBuf::from("/w/rel/my.conf")]
        );
        // Root needs no HOME.
        assert_eq!(l.state_dir, PathBuf::from("/var/lib/podstack"));
        let env = Env::from_pairs([("HOME", "/root")]).with_not_utf8("CONTAINERS_CONF");
        let e = resolve(&env, 0).unwrap_err().to_string();
        assert!(e.contains("CONTAINERS_CONF is not UTF-8"), "{e}");
    }

    #[test]
    fn rootless_without_home_says_what_to_set() {
        let err = resolve(&Env::default(), 1001).unwrap_err().to_string();
        assert!(err.contains("HOME is not set"), "{err}");
    }
}
