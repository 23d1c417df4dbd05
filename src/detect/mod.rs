//! Stage 1, detect: facts about the host, read cheaply.
//!
//! Files under /proc, /sys and /etc, `PATH` look-ups and the environment; no
//! podman call unless `deep` is asked for. Reading goes through a root folder
//! (`/` in real use) so tests can lay out a fake host; all interpretation is
//! done by the pure parsers in [`parse`].

pub mod parse;
pub mod sockets;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit};
use serde::Serialize;

use crate::conf;
use crate::env::Env;
use crate::layout::{self, Layout};
use crate::proc::Cmd;
use parse::{CgroupLayout, IdRange};
pub use sockets::Socket;

/// Version of the `detect --json` document; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

/// Everything podstack knows about the host before it changes anything.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    /// See [`SCHEMA`].
    pub schema: u32,
    /// Kernel release (`uname -r`).
    pub kernel: Option<String>,
    /// Running under gVisor.
    pub gvisor: bool,
    /// The markers that said so.
    pub gvisor_markers: Vec<String>,
    /// `firecracker`, `hypervisor` (some other VM) or `none`.
    pub vm: Vm,
    /// `podman`, `docker`, `other` or `none`.
    pub container: ContainerKind,
    /// The markers that said so.
    pub container_markers: Vec<String>,
    /// Effective uid.
    pub euid: u32,
    /// User name from /etc/passwd (read as a file), else `$USER`.
    pub user: Option<String>,
    /// Rootless: euid != 0, or a uid map that is not the full identity, or
    /// already inside podman's user namespace.
    pub rootless: bool,
    /// Why `rootless` is what it is.
    pub rootless_reasons: Vec<String>,
    /// The user's /etc/subuid ranges.
    pub subuid: Vec<IdRange>,
    /// The user's /etc/subgid ranges.
    pub subgid: Vec<IdRange>,
    /// PID 1 is systemd (else: cgroupfs and file events, no healthcheck timers).
    pub systemd_pid1: bool,
    /// `v2`, `hybrid`, `v1` or `none`.
    pub cgroup: CgroupLayout,
    /// This process's resource limits.
    pub rlimits: Rlimits,
    /// Whether this process may raise hard rlimits (CAP_SYS_RESOURCE).
    pub can_raise_rlimits: bool,
    /// `/proc/sys/kernel/pid_max`.
    pub pid_max: Option<u64>,
    /// /dev/net/tun opens read-write (slirp4netns and pasta need it).
    pub dev_net_tun: bool,
    /// /dev/fuse opens read-write (fuse-overlayfs needs it).
    pub dev_fuse: bool,
    /// The kernel lists overlay in /proc/filesystems.
    pub overlay_fs: bool,
    /// The podman binary.
    pub podman: Option<Binary>,
    /// The docker client binary.
    pub docker: Option<Binary>,
    /// OCI runtimes found: crun, runc, runsc.
    pub runtimes: Vec<Binary>,
    /// Helpers podman may need: conmon, slirp4netns, pasta, fuse-overlayfs, newuidmap, newgidmap.
    pub helpers: Vec<Binary>,
    /// Container API sockets and whether they answer `GET /_ping`.
    pub sockets: Vec<Socket>,
    /// Where podman keeps its configuration and storage for this user.
    pub layout: Option<Layout>,
    /// What podman's storage configuration and graphroot say.
    pub storage: StorageFacts,
    /// `CLAUDE_CODE_REMOTE=true`: a Claude Code cloud session.
    pub claude_code_remote: bool,
    /// Running in CI (`CI` or `GITHUB_ACTIONS`).
    pub ci: bool,
}

/// The kind of virtual machine podstack runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vm {
    /// PID 1 is Firecracker's init (Claude Code's cloud VMs, these machines).
    Firecracker,
    /// The CPU says a hypervisor runs this kernel.
    Hypervisor,
    /// Bare metal, or nothing seen.
    None,
}

/// The kind of container podstack runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerKind {
    /// A podman container (`/run/.containerenv`, `container=podman`).
    Podman,
    /// A Docker container (`/.dockerenv`, cgroup paths).
    Docker,
    /// Another engine (`container=lxc`, Kubernetes, containerd).
    Other,
    /// Not in a container.
    None,
}

impl std::fmt::Display for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Vm::Firecracker => "firecracker",
            Vm::Hypervisor => "hypervisor",
            Vm::None => "none",
        })
    }
}

impl std::fmt::Display for ContainerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerKind::Podman => "podman",
            ContainerKind::Docker => "docker",
            ContainerKind::Other => "other",
            ContainerKind::None => "none",
        })
    }
}

/// A binary found on the search path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binary {
    /// Its name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its version, when asked for (`--deep`).
    pub version: Option<String>,
}

/// A soft/hard pair; `null` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// Soft limit.
    pub soft: Option<u64>,
    /// Hard limit.
    pub hard: Option<u64>,
}

/// The rlimits containers inherit their ceilings from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Rlimits {
    /// RLIMIT_NOFILE.
    pub nofile: Limit,
    /// RLIMIT_NPROC.
    pub nproc: Limit,
}

/// podman's storage as configured and as found on disk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StorageFacts {
    /// The storage.conf podman reads (podstack's target), or the fallback it read instead.
    pub conf: Option<PathBuf>,
    /// The driver it configures, if any.
    pub driver: Option<String>,
    /// The graphroot in use (configured or podman's default).
    pub graphroot: Option<PathBuf>,
    /// File system type under the graphroot.
    pub graphroot_fs: Option<String>,
    /// Drivers that already have data in the graphroot.
    pub drivers_on_disk: Vec<String>,
    /// Why the configuration could not be read, if it could not.
    pub error: Option<String>,
}

/// Where to read from and what to ask.
pub struct Probe<'a> {
    /// `/` on a real host; a fake tree in tests.
    pub root: &'a Path,
    /// The environment.
    pub env: &'a Env,
    /// Ping the API sockets.
    pub ping: bool,
}

impl Probe<'_> {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }
    fn text(&self, p: &str) -> Option<String> {
        fs_err::read_to_string(self.path(p)).ok()
    }
    fn bytes(&self, p: &str) -> Option<Vec<u8>> {
        fs_err::read(self.path(p)).ok()
    }
    fn exists(&self, p: &str) -> bool {
        self.path(p).exists()
    }
}

/// How long all socket pings together may take.
pub const PING_BUDGET: Duration = Duration::from_millis(500);

/// Gathers the facts (no child process; `--deep` adds [`versions`]).
pub fn gather(probe: &Probe<'_>) -> Facts {
    let env = probe.env;
    let version = probe.text("/proc/version");
    let cmdline = probe.text("/proc/cmdline");
    let gvisor_markers = parse::gvisor_markers(version.as_deref(), cmdline.as_deref());
    let kernel = probe
        .text("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .or_else(|| {
            version
                .as_deref()
                .and_then(|v| v.split_whitespace().nth(2))
                .map(str::to_string)
        });
    let vm = vm(probe);
    let (container, container_markers) = container(probe, vm);
    let id = identity(probe);
    let mountinfo = probe.text("/proc/self/mountinfo").unwrap_or_default();
    let layout = layout::resolve(env, id.euid).ok();
    let storage = storage_facts(probe, layout.as_ref(), &mountinfo);
    let bins = binaries(env);
    let sockets = sockets(probe);

    Facts {
        schema: SCHEMA,
        kernel,
        gvisor: !gvisor_markers.is_empty(),
        gvisor_markers,
        vm,
        container,
        container_markers,
        euid: id.euid,
        rootless: !id.rootless_reasons.is_empty(),
        rootless_reasons: id.rootless_reasons,
        subuid: id.subuid,
        subgid: id.subgid,
        user: id.user,
        systemd_pid1: probe
            .text("/proc/1/comm")
            .is_some_and(|c| c.trim() == "systemd")
            || probe.exists("/run/systemd/system"),
        cgroup: parse::cgroup_layout(&mountinfo),
        rlimits: rlimits(),
        can_raise_rlimits: id.caps & (1 << parse::CAP_SYS_RESOURCE) != 0,
        pid_max: probe
            .text("/proc/sys/kernel/pid_max")
            .and_then(|t| t.trim().parse().ok()),
        dev_net_tun: opens_rw(&probe.path("/dev/net/tun")),
        dev_fuse: opens_rw(&probe.path("/dev/fuse")),
        overlay_fs: probe
            .text("/proc/filesystems")
            .is_some_and(|t| parse::has_filesystem(&t, "overlay")),
        podman: bins.podman,
        docker: bins.docker,
        runtimes: bins.runtimes,
        helpers: bins.helpers,
        sockets,
        layout,
        storage,
        claude_code_remote: env
            .get("CLAUDE_CODE_REMOTE")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        ci: env.truthy("CI") || env.truthy("GITHUB_ACTIONS"),
    }
}

/// Asks every binary found for its `--version`, all at once, within `budget`
/// in all; a binary that fails, prints no version or does not answer in time
/// gets none.
pub async fn versions(facts: &mut Facts, budget: Duration) {
    let mut bins: Vec<&mut Binary> = facts
        .podman
        .iter_mut()
        .chain(facts.docker.iter_mut())
        .chain(facts.runtimes.iter_mut())
        .chain(facts.helpers.iter_mut())
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, b) in bins.iter().enumerate() {
        let (path, name) = (b.path.clone(), b.name.clone());
        set.spawn(async move { (i, binary_version(&path, &name, budget).await) });
    }
    while let Some(Ok((i, version))) = set.join_next().await {
        bins[i].version = version;
    }
}

fn vm(probe: &Probe<'_>) -> Vm {
    if probe
        .bytes("/proc/1/cmdline")
        .is_some_and(|c| parse::is_firecracker_init(&c))
    {
        Vm::Firecracker
    } else if probe
        .text("/proc/cpuinfo")
        .is_some_and(|c| parse::cpuinfo_has_hypervisor(&c))
    {
        Vm::Hypervisor
    } else {
        Vm::None
    }
}

/// Who podstack runs as.
struct Identity {
    euid: u32,
    caps: u64,
    user: Option<String>,
    rootless_reasons: Vec<String>,
    subuid: Vec<IdRange>,
    subgid: Vec<IdRange>,
}

fn identity(probe: &Probe<'_>) -> Identity {
    let env = probe.env;
    let status = probe.text("/proc/self/status").unwrap_or_default();
    let euid = parse::status_euid(&status).unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let caps = parse::status_cap_eff(&status).unwrap_or(0);
    let uid_map = probe
        .text("/proc/self/uid_map")
        .map(|t| parse::parse_id_map(&t));
    let mut rootless_reasons = Vec::new();
    if euid != 0 {
        rootless_reasons.push(format!("euid is {euid}"));
    }
    if let Some(map) = &uid_map
        && !parse::is_full_identity(map)
    {
        rootless_reasons.push("uid_map is not the full identity map".to_string());
    }
    if euid == 0 && caps & (1 << parse::CAP_SYS_ADMIN) == 0 {
        rootless_reasons.push("uid 0 without CAP_SYS_ADMIN".to_string());
    }
    if env.get("_CONTAINERS_USERNS_CONFIGURED").is_some() {
        rootless_reasons
            .push("inside podman's user namespace (_CONTAINERS_USERNS_CONFIGURED)".to_string());
    }
    let user = probe
        .text("/etc/passwd")
        .and_then(|p| parse::passwd_name(&p, euid))
        .or_else(|| env.get("USER").map(str::to_string));
    let subid = |file| {
        probe
            .text(file)
            .map(|t| parse::parse_subid(&t, user.as_deref(), euid))
            .unwrap_or_default()
    };
    Identity {
        euid,
        caps,
        subuid: subid("/etc/subuid"),
        subgid: subid("/etc/subgid"),
        user,
        rootless_reasons,
    }
}

/// The binaries podstack looks for.
struct Binaries {
    podman: Option<Binary>,
    docker: Option<Binary>,
    runtimes: Vec<Binary>,
    helpers: Vec<Binary>,
}

/// podman and docker as a shell finds them (PATH); runtimes and helpers also
/// where podman itself looks for them.
fn binaries(env: &Env) -> Binaries {
    let path_only = std::ffi::OsString::from(env.get("PATH").unwrap_or(""));
    let search = search_path(env);
    let find_in = |name: &str, dirs: &std::ffi::OsStr| {
        which::which_in(name, Some(dirs), "/")
            .ok()
            .map(|path| Binary {
                name: name.to_string(),
                version: None,
                path,
            })
    };
    let find = |name: &str| find_in(name, &search);
    let runtimes = ["crun", "runc", "runsc"]
        .into_iter()
        .filter_map(&find)
        .collect();
    let helpers = [
        "conmon",
        "slirp4netns",
        "pasta",
        "fuse-overlayfs",
        "newuidmap",
        "newgidmap",
    ]
    .into_iter()
    .filter_map(|n| {
        find(n).or_else(|| {
            // conmon lives outside PATH on Debian.
            let p = PathBuf::from(format!("/usr/libexec/podman/{n}"));
            p.exists().then(|| Binary {
                name: n.to_string(),
                path: p,
                version: None,
            })
        })
    })
    .collect();
    Binaries {
        podman: find_in("podman", &path_only),
        docker: find_in("docker", &path_only),
        runtimes,
        helpers,
    }
}

/// The API sockets, pinged all at once within [`PING_BUDGET`] in all.
fn sockets(probe: &Probe<'_>) -> Vec<Socket> {
    let found = sockets::candidates(probe.env, probe.root);
    let answers = if probe.ping {
        sockets::ping_all(found.iter().map(|c| c.url.as_deref()), PING_BUDGET)
    } else {
        vec![None; found.len()]
    };
    found
        .into_iter()
        .zip(answers)
        .map(|(c, answers)| Socket { answers, ..c })
        .collect()
}

impl Facts {
    /// The binary called `name` among runtimes and helpers.
    pub fn tool(&self, name: &str) -> Option<&Binary> {
        self.runtimes
            .iter()
            .chain(&self.helpers)
            .find(|b| b.name == name)
    }
}

fn container(probe: &Probe<'_>, vm: Vm) -> (ContainerKind, Vec<String>) {
    let mut markers = Vec::new();
    let mut kind = ContainerKind::None;
    if probe.exists("/run/.containerenv") {
        markers.push("/run/.containerenv".to_string());
        kind = ContainerKind::Podman;
    }
    if probe.exists("/.dockerenv") {
        markers.push("/.dockerenv".to_string());
        if kind == ContainerKind::None {
            kind = ContainerKind::Docker;
        }
    }
    let pid1_env = probe
        .bytes("/proc/1/environ")
        .and_then(|e| parse::environ_container(&e));
    if let Some(v) = pid1_env.or_else(|| probe.env.get("container").map(str::to_string)) {
        markers.push(format!("container={v}"));
        if kind == ContainerKind::None {
            kind = match v.as_str() {
                "podman" => ContainerKind::Podman,
                "docker" => ContainerKind::Docker,
                _ => ContainerKind::Other,
            };
        }
    }
    if let Some(hint) = probe
        .text("/proc/self/cgroup")
        .and_then(|c| parse::cgroup_container_hint(&c))
    {
        markers.push(format!("/proc/self/cgroup names {hint}"));
        if kind == ContainerKind::None {
            kind = match hint {
                "podman" => ContainerKind::Podman,
                "docker" => ContainerKind::Docker,
                _ => ContainerKind::Other,
            };
        }
    }
    if vm == Vm::Firecracker && kind != ContainerKind::None {
        // PID 1 is the VM's own init, so this is the VM's first PID namespace, not a
        // container: marker files such as /.dockerenv are left over from building
        // the VM image with Docker (as on Claude Code's cloud VMs).
        kind = ContainerKind::None;
        markers.push("ignored: PID 1 is the VM's init".to_string());
    }
    (kind, markers)
}

fn storage_facts(probe: &Probe<'_>, layout: Option<&Layout>, mountinfo: &str) -> StorageFacts {
    let Some(layout) = layout else {
        return StorageFacts {
            error: Some("HOME is not set: cannot tell where podman's files are".into()),
            ..StorageFacts::default()
        };
    };
    let mut facts = StorageFacts::default();
    let candidates = std::iter::once(&layout.storage_conf).chain(&layout.storage_fallbacks);
    let mut settings = conf::StorageSettings::default();
    for path in candidates {
        match conf::load(&probe.path(&path.to_string_lossy()), conf::Kind::Storage) {
            Ok(None) => continue,
            Ok(Some(l)) => settings = conf::storage_settings(&l.doc),
            Err(e) => facts.error = Some(format!("{e:#}")),
        }
        facts.conf = Some(path.clone());
        break;
    }
    if facts.conf.is_none() {
        facts.conf = Some(layout.storage_conf.clone());
    }
    // Rootless podman never takes graphroot from a system file.
    let from_own_file = facts.conf.as_ref() == Some(&layout.storage_conf) || !layout.rootless;
    let graphroot = settings
        .graphroot
        .filter(|_| from_own_file)
        .unwrap_or_else(|| layout.default_graphroot.clone());
    let on_disk = probe
        .root
        .join(graphroot.strip_prefix("/").unwrap_or(&graphroot));
    let entries: Vec<String> = fs_err::read_dir(&on_disk)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    facts.drivers_on_disk = parse::drivers_on_disk(&entries);
    facts.graphroot_fs =
        parse::fstype_of(mountinfo, &graphroot.to_string_lossy()).map(str::to_string);
    facts.graphroot = Some(graphroot);
    facts.driver = settings.driver;
    facts
}

/// `PATH` plus the folders where podman looks for runtimes and helpers, so a
/// user whose PATH lacks /usr/sbin still finds runc.
pub fn search_path(env: &Env) -> OsString {
    let mut dirs: Vec<PathBuf> = env
        .get("PATH")
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for extra in [
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/bin",
        "/sbin",
    ] {
        let p = PathBuf::from(extra);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// `NAME --version`'s version, only from a successful run that prints a
/// version line (a failing or lying binary has none).
pub async fn binary_version(path: &Path, name: &str, timeout: Duration) -> Option<String> {
    let out = Cmd::new(path)
        .arg("--version")
        .timeout(timeout)
        .run()
        .await
        .ok()?;
    out.success()
        .then(|| parse::version_of(&out.stdout, name))
        .flatten()
}

fn rlimits() -> Rlimits {
    let get = |r| {
        getrlimit(r).map_or(Limit::default(), |(soft, hard)| {
            let finite = |v: u64| (v != nix::sys::resource::RLIM_INFINITY).then_some(v);
            Limit {
                soft: finite(soft),
                hard: finite(hard),
            }
        })
    };
    Rlimits {
        nofile: get(Resource::RLIMIT_NOFILE),
        nproc: get(Resource::RLIMIT_NPROC),
    }
}

fn opens_rw(p: &Path) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of a fake host made of `files` (paths relative to its root).
    fn facts_of(files: &[(&str, &[u8])], env: &[(&str, &str)]) -> Facts {
        let root = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let p = root.path().join(rel);
            fs_err::create_dir_all(p.parent().unwrap()).unwrap();
            fs_err::write(p, content).unwrap();
        }
        let env = Env::from_pairs(env.iter().copied());
        gather(&Probe {
            root: root.path(),
            env: &env,
            ping: false,
        })
    }

    #[test]
    fn a_fake_gvisor_host_is_recognised() {
        let facts = facts_of(
            &[
                (
                    "proc/version",
                    b"Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n",
                ),
                ("proc/cmdline", b"BOOT_IMAGE=/vmlinuz-4.4.0-gvisor quiet\n"),
                (
                    "proc/self/status",
                    b"Uid:\t0\t0\t0\t0\nCapEff:\t0000003fffffdfff\n",
                ),
                ("proc/self/uid_map", b"         0          0 4294967295\n"),
                ("proc/1/comm", b"sh\n"),
            ],
            &[("HOME", "/root")],
        );
        assert!(facts.gvisor);
        assert_eq!(facts.gvisor_markers.len(), 2);
        assert!(!facts.rootless);
        assert!(!facts.systemd_pid1);
        assert_eq!(facts.cgroup, CgroupLayout::None);
        assert_eq!(facts.kernel.as_deref(), Some("4.4.0"));
        assert_eq!(facts.vm, Vm::None);
    }

    #[test]
    fn a_fake_rootless_container_host_is_recognised() {
        let facts = facts_of(
            &[
                (
                    "proc/version",
                    b"Linux version 6.8.0-45-generic (buildd@x) #45-Ubuntu SMP\n",
                ),
                (
                    "proc/self/status",
                    b"Uid:\t1001\t1001\t1001\t1001\nCapEff:\t0000000000000000\n",
                ),
                ("proc/self/uid_map", b"0 1001 1\n1 100000 65536\n"),
                ("proc/1/cmdline", b"/sbin/catatonit\0-P\0"),
                ("proc/1/environ", b"container=podman\0"),
                ("run/.containerenv", b""),
                (
                    "etc/passwd",
                    b"root:x:0:0::/root:/bin/sh\nu:x:1001:1001::/home/u:/bin/sh\n",
                ),
                ("etc/subuid", b"u:100000:65536\n"),
                (
                    "home/u/.local/share/containers/storage/vfs-layers/layers.json",
                    b"[]",
                ),
            ],
            &[("HOME", "/home/u"), ("CI", "true")],
        );
        assert!(!facts.gvisor);
        assert!(facts.rootless);
        assert_eq!(facts.rootless_reasons.len(), 2);
        assert_eq!(facts.user.as_deref(), Some("u"));
        assert_eq!(
            facts.subuid,
            vec![IdRange {
                start: 100_000,
                count: 65_536
            }]
        );
        assert_eq!(facts.vm, Vm::None);
        assert_eq!(facts.container, ContainerKind::Podman);
        assert_eq!(facts.container_markers.len(), 2);
        assert_eq!(facts.storage.drivers_on_disk, vec!["vfs"]);
        assert!(facts.ci);
    }

    #[test]
    fn a_stale_dockerenv_in_a_firecracker_vm_is_not_a_container() {
        let facts = facts_of(
            &[
                (
                    "proc/1/cmdline",
                    b"/process_api\0--firecracker-init\0--addr\x000.0.0.0:2024\0",
                ),
                (".dockerenv", b""),
            ],
            &[("HOME", "/root")],
        );
        assert_eq!(facts.vm, Vm::Firecracker);
        assert_eq!(facts.container, ContainerKind::None);
        assert!(facts.container_markers.iter().any(|m| m == "/.dockerenv"));
    }
}
