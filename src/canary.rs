//! The canary: a tiny container that proves podman can run containers here.
//!
//! Its whole root file system is a fresh folder holding a copy of this very
//! binary (static, so it needs nothing else), run with `podman run --rootfs`.
//! No image, no registry, no network. When it fails, [`diagnose`] maps
//! podman's error text to a known cause and, where one exists, a setting that
//! fixes it; `configure` runs the canary again against candidate copies of
//! the configuration files holding that setting, so nothing is written until
//! a fix is proven.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::conf::ConfValue;
use crate::detect::Facts;
use crate::engine::{self, ContainerSpec, Engine, Image};
use crate::plan::{Plan, Setting};
use crate::proc::{Cmd, Output};
use crate::scratch;

/// What the payload prints; the canary passed only if stdout has it.
pub const MARKER: &str = "podstack canary: ok";

/// The payload run inside the container: prints [`MARKER`].
pub fn payload() {
    println!("{MARKER}");
}

/// Configuration files to try instead of the real ones: podman reads them
/// through `CONTAINERS_STORAGE_CONF` and `CONTAINERS_CONF`, so a fix is proven
/// before it is written (podman 4.3 ignores `--ulimit` with `--rootfs`, so
/// flags cannot stand in for containers.conf).
#[derive(Clone, Debug, Default)]
pub struct Candidate {
    /// The storage.conf to try; `None` keeps podman's own look-up (a missing
    /// file and an empty one are not the same to podman).
    pub storage_conf: Option<PathBuf>,
    /// The containers.conf to try (the merged chain plus the plan); `None`
    /// keeps podman's own chain.
    pub containers_conf: Option<PathBuf>,
}

impl Candidate {
    /// Whether the candidate replaces anything.
    pub fn is_empty(&self) -> bool {
        self.storage_conf.is_none() && self.containers_conf.is_none()
    }
}

/// Runs the canary once, its root folder in `scratch`. `Ok` holds podman's
/// output whether or not the canary passed (see [`passed`]); `Err` means it
/// could not even be started.
pub async fn run(
    podman: &Path,
    candidate: &Candidate,
    timeout: Duration,
    scratch: &scratch::Base,
) -> Result<Output> {
    run_with(podman, candidate, timeout, scratch, |_| {}).await
}

/// [`run`], with the container's spec changed by `tweak` (the network
/// canary joins a network and publishes a port).
pub async fn run_with(
    podman: &Path,
    candidate: &Candidate,
    timeout: Duration,
    scratch: &scratch::Base,
    tweak: impl FnOnce(&mut ContainerSpec),
) -> Result<Output> {
    let exe = own_binary()?;
    let rootfs = scratch.make("canary")?;
    let bin = rootfs.path().join("podstack");
    // A hard link when the scratch folder is on the binary's file system,
    // else a copy; never the whole binary in memory.
    if fs_err::hard_link(exe, &bin).is_err() {
        fs_err::copy(exe, &bin)?;
        fs_err::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut spec = ContainerSpec::new(Image::Rootfs(rootfs.path().to_path_buf()));
    spec.remove = true;
    spec.command = vec!["/podstack".into(), "canary".into()];
    tweak(&mut spec);
    let argv = engine::run_argv(Engine::Podman, &spec)?;
    let mut cmd = Cmd::new(podman).args(&argv.args).timeout(timeout);
    if let Some(path) = &candidate.storage_conf {
        cmd = cmd.env("CONTAINERS_STORAGE_CONF", path);
    }
    if let Some(path) = &candidate.containers_conf {
        cmd = cmd.env("CONTAINERS_CONF", path);
    }
    let out = cmd.run().await?;
    crate::log::info(|| {
        let verdict = if passed(&out) {
            "passed".to_string()
        } else {
            format!("failed, {}: {}", out.ending(), out.tail(1))
        };
        let with = if candidate.is_empty() {
            ""
        } else {
            " with candidate configuration"
        };
        format!(
            "canary{with}: `{}` {verdict} ({} ms)",
            out.display,
            out.elapsed.as_millis()
        )
    });
    Ok(out)
}

/// This binary's path, checked once per process to be static (a configure
/// may start several canaries). Only its headers are read.
fn own_binary() -> Result<&'static Path> {
    use std::io::Read;
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = EXE.get() {
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the podstack binary for the canary")?;
    let mut head = Vec::new();
    fs_err::File::open(&exe)?
        .take(64 * 1024)
        .read_to_end(&mut head)?;
    if !is_static_elf(&head) {
        bail!(
            "{} is dynamically linked, so it cannot serve as the canary's root file system; build podstack with install.sh (a static build)",
            exe.display()
        );
    }
    Ok(EXE.get_or_init(|| exe))
}

/// A canary slower than this points at a problem even when it passes.
const SLOW_MS: u64 = 5_000;

/// The warning for a canary that passed but took `ms` (none when fast):
/// podman 4.3 waits 20 s for conmon at every start when its store's database
/// and storage.conf disagree about the driver, even about the same one.
pub fn slow_warning(ms: u64) -> Option<String> {
    (ms > SLOW_MS).then(|| {
        format!(
            "starting the canary took {:.1} s (normal: well under 1 s): podman waited for something, and every container start will too; seen here when storage.conf names a driver (even podman's own default) over a store made without one: remove that line, or wipe the store with `podstack configure --reset-storage`; `podman --log-level=debug run` shows what it waits for",
            ms as f64 / 1000.0
        )
    })
}

/// Whether a canary run passed.
pub fn passed(out: &Output) -> bool {
    out.success() && out.stdout.contains(MARKER)
}

/// Whether an ELF file has no program interpreter (statically linked).
pub fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64, little endian: all podstack builds for.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..usize::from(phnum))
        .all(|i| u32_at(phoff + i * usize::from(phentsize)).is_some_and(|t| t != PT_INTERP))
}

/// A resource limit podman sets for containers by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rlimit {
    /// RLIMIT_NOFILE (type 7).
    Nofile,
    /// RLIMIT_NPROC (type 6).
    Nproc,
}

impl Rlimit {
    /// The name in `--ulimit name=soft:hard`.
    pub fn name(self) -> &'static str {
        match self {
            Rlimit::Nofile => "nofile",
            Rlimit::Nproc => "nproc",
        }
    }
}

/// What a canary failure means.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The OCI runtime cannot work here (crun on hybrid cgroups, crun in gVisor).
    Runtime,
    /// podman's default rlimit is above what this host lets it set.
    Ulimit {
        /// Which limit.
        rlimit: Rlimit,
    },
    /// Rootless networking (slirp4netns, pasta) cannot start.
    Network,
    /// The systemd cgroup manager has no systemd.
    CgroupManager,
    /// Events go to a journald that is not there.
    EventsLogger,
    /// The log driver is journald and there is none.
    LogDriver,
    /// Storage already holds data of another driver.
    StorageMismatch,
    /// The user has no subordinate ids for the user namespace.
    SubIds,
    /// gVisor cannot nest containers (this runsc cannot).
    GvisorNested,
    /// podman did not answer in time.
    Timeout,
    /// podman is not installed.
    NoPodman,
    /// podman cannot read one of its configuration files.
    ConfigFile,
    /// The canary's root folder is on a noexec mount.
    NoExec,
    /// Nothing podstack knows.
    Unknown,
}

/// A failure explained: the error line, its cause, what fixes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// What it means.
    pub finding: Finding,
    /// The line of podman's output that said so.
    pub error: String,
    /// The cause, in plain words.
    pub cause: String,
    /// What fixes it.
    pub fix: String,
}

/// Explains a failed canary from its output.
pub fn diagnose(out: &Output, facts: &Facts) -> Diagnosis {
    if out.status.is_none() {
        return Diagnosis {
            finding: Finding::Timeout,
            error: out.tail(3),
            cause: format!("`{}` {}", out.display, out.ending()),
            fix: "see whether another podman holds its storage lock (ps -ef | grep podman), then run podstack doctor again".into(),
        };
    }
    let text = format!("{}\n{}", out.stderr, out.stdout);
    let mut d = diagnose_text(&text, facts);
    if out.bytes > crate::proc::CAP as u64 * 2 {
        d.cause = format!(
            "{} (podman printed {} bytes; the last lines are shown)",
            d.cause, out.bytes
        );
    }
    d
}

/// One known failure: what podman says, what it means, what fixes it.
pub struct Signature {
    /// What it means.
    pub finding: Finding,
    /// Matches when one line holds every word of one group.
    pub lines: &'static [&'static [&'static str]],
    /// Does not match when the text holds any of these.
    pub unless: &'static [&'static str],
    /// What podman says, for the README's table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub says: &'static str,
    /// The cause. `{rlimit}` is the limit's name.
    pub cause: &'static str,
    /// The fix. `{rlimit}`, `{user}` and `{graphroot}` are filled in.
    pub fix: &'static str,
    /// What `podstack configure` sets, for the README's table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub sets: &'static str,
}

/// The known failures, tried in order: the one source for [`diagnose_text`]
/// and the README's table.
pub const SIGNATURES: &[Signature] = &[
    Signature {
        finding: Finding::ConfigFile,
        lines: &[&["got '\\ufeff'"]],
        unless: &[],
        says: "`expected '.' or '=', but got '\\ufeff'`",
        cause: "a configuration file podman reads starts with a UTF-8 byte-order mark, which its TOML parser rejects",
        fix: "remove the first three bytes of the file podman names (sed -i '1s/^\\xEF\\xBB\\xBF//' FILE)",
        sets: "nothing: names the file",
    },
    Signature {
        finding: Finding::ConfigFile,
        lines: &[
            &["decode configuration"],
            &["Failed to read", "toml:"],
            &["reading system config"],
        ],
        unless: &[],
        says: "`reading system config ...: toml: line N`",
        cause: "podman cannot read one of its configuration files",
        fix: "fix the file and line podman names (podstack configure names them too)",
        sets: "nothing: names the file and line",
    },
    Signature {
        finding: Finding::NoExec,
        lines: &[&["exec /podstack", "permission denied"]],
        unless: &[],
        says: "`exec /podstack: permission denied`",
        cause: "the canary's root folder is on a mount where programs may not run (noexec)",
        fix: "set TMPDIR to a folder on a mount without noexec",
        sets: "nothing: podstack already avoids noexec folders it can see",
    },
    Signature {
        finding: Finding::Runtime,
        lines: &[&["cgroups in hybrid mode not supported"]],
        unless: &[],
        says: "`crun: cgroups in hybrid mode not supported`",
        cause: "crun refuses hosts whose cgroups are mounted in hybrid mode (v1 controllers plus the unified hierarchy)",
        fix: "use runc: containers.conf [engine] runtime = \"runc\" (podstack configure sets it)",
        sets: "`[engine] runtime = \"runc\"`",
    },
    Signature {
        finding: Finding::Runtime,
        lines: &[&["/proc/self/setgroups"]],
        unless: &[],
        says: "`/proc/self/setgroups`",
        cause: "crun before 1.25.1 needs /proc/self/setgroups, which this kernel (gVisor) does not have",
        fix: "use runc: containers.conf [engine] runtime = \"runc\" (podstack configure sets it)",
        sets: "`[engine] runtime = \"runc\"`",
    },
    Signature {
        finding: Finding::Ulimit {
            rlimit: Rlimit::Nofile,
        },
        lines: &[&["RLIMIT_NOFILE"], &["rlimit type 7"]],
        unless: &[],
        says: "`setrlimit RLIMIT_NOFILE` / `error setting rlimit type 7`",
        cause: "podman asks for a {rlimit} limit above the ceiling this host allows (no CAP_SYS_RESOURCE to raise it)",
        fix: "cap it: containers.conf [containers] default_ulimits = [\"{rlimit}=N:N\"] with N at most the ceiling (podstack configure finds N)",
        sets: "`[containers] default_ulimits`: the highest value the canary accepts (the hard limit, then powers of two)",
    },
    Signature {
        finding: Finding::Ulimit {
            rlimit: Rlimit::Nproc,
        },
        lines: &[&["RLIMIT_NPROC"], &["rlimit type 6"]],
        unless: &[],
        says: "`setrlimit RLIMIT_NPROC` / `error setting rlimit type 6`",
        cause: "podman asks for a {rlimit} limit above the ceiling this host allows (no CAP_SYS_RESOURCE to raise it)",
        fix: "cap it: containers.conf [containers] default_ulimits = [\"{rlimit}=N:N\"] with N at most the ceiling (podstack configure finds N)",
        sets: "`[containers] default_ulimits`: the highest value the canary accepts (the hard limit, `pid_max`, then powers of two)",
    },
    Signature {
        finding: Finding::Network,
        lines: &[
            &["/dev/net/tun"],
            &["slirp4netns failed"],
            &["pasta failed"],
            &["rootlessport"],
        ],
        unless: &[],
        says: "`slirp4netns ... /dev/net/tun`, `pasta failed`",
        cause: "rootless networking cannot start: slirp4netns and pasta need /dev/net/tun, which this user cannot open",
        fix: "use the host's network: containers.conf [containers] netns = \"host\" (podstack configure sets it); publish no ports, bind services to 127.0.0.1",
        sets: "`[containers] netns = \"host\"`",
    },
    Signature {
        finding: Finding::CgroupManager,
        lines: &[
            &["cannot open sd-bus"],
            &["systemd not running on this host"],
            &["/run/systemd/private"],
        ],
        unless: &[],
        says: "`cannot open sd-bus`, `systemd not running`",
        cause: "the systemd cgroup manager needs systemd, which is not PID 1 here",
        fix: "containers.conf [engine] cgroup_manager = \"cgroupfs\" (podstack configure sets it)",
        sets: "`[engine] cgroup_manager = \"cgroupfs\"`",
    },
    Signature {
        finding: Finding::LogDriver,
        lines: &[&["journal", "log"]],
        unless: &["events"],
        says: "journald log-driver errors",
        cause: "the journald log driver needs journald, which is not running here",
        fix: "containers.conf [containers] log_driver = \"k8s-file\" (podstack configure sets it)",
        sets: "`[containers] log_driver = \"k8s-file\"`",
    },
    Signature {
        finding: Finding::EventsLogger,
        lines: &[&["journal"]],
        unless: &[],
        says: "journald event errors",
        cause: "podman's events go to journald, which is not running here",
        fix: "containers.conf [engine] events_logger = \"file\" (podstack configure sets it)",
        sets: "`[engine] events_logger = \"file\"`",
    },
    Signature {
        finding: Finding::StorageMismatch,
        lines: &[
            &["does not match our graph driver"],
            &["overwritten by graph driver"],
            &["database configuration mismatch"],
        ],
        unless: &[],
        says: "`database configuration mismatch`, `overwritten by graph driver`",
        cause: "{graphroot} already holds data of another storage driver than the configured one",
        fix: "wipe that storage with `podstack configure --reset-storage` (deletes its containers, images and volumes), or configure the driver it holds with --storage-driver",
        sets: "nothing: says to use `--reset-storage`",
    },
    Signature {
        finding: Finding::SubIds,
        lines: &[
            &["newuidmap"],
            &["not enough IDs available"],
            &["cannot set up namespace"],
            &["no subuid ranges"],
        ],
        unless: &[],
        says: "`newuidmap`, `not enough IDs available`",
        cause: "rootless podman needs subordinate uids and gids for its user namespace (and the uidmap package)",
        fix: "as root: apt-get install uidmap; usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}; then as {user}: podman system migrate",
        sets: "nothing: names the commands",
    },
];

/// Explains podman's error text (pure): the first matching [`SIGNATURES`]
/// row, else gVisor's own explanation inside gVisor, else "unknown".
pub fn diagnose_text(text: &str, facts: &Facts) -> Diagnosis {
    let text = &printable(text);
    for sig in SIGNATURES {
        if sig.unless.iter().any(|u| text.contains(u)) {
            continue;
        }
        let Some(line) = text.lines().find(|l| {
            sig.lines
                .iter()
                .any(|group| group.iter().all(|w| l.contains(w)))
        }) else {
            continue;
        };
        let rlimit = match &sig.finding {
            Finding::Ulimit { rlimit } => rlimit.name(),
            _ => "",
        };
        let graphroot = facts
            .storage
            .graphroot
            .as_ref()
            .map_or("podman's graphroot".to_string(), |p| {
                p.display().to_string()
            });
        let fill = |t: &str| {
            t.replace("{rlimit}", rlimit)
                .replace("{user}", facts.user.as_deref().unwrap_or("USER"))
                .replace("{graphroot}", &graphroot)
        };
        let mut fix = fill(sig.fix);
        if sig.finding == Finding::Runtime && facts.tool("runc").is_none() {
            fix = "install runc (apt-get install runc), then run podstack configure".into();
        }
        return Diagnosis {
            finding: sig.finding.clone(),
            error: cut_front(line.trim(), 500),
            cause: fill(sig.cause),
            fix,
        };
    }
    if facts.gvisor {
        let first = text
            .lines()
            .find(|l| l.starts_with("Error"))
            .unwrap_or("")
            .trim()
            .to_string();
        return Diagnosis {
            finding: Finding::GvisorNested,
            error: if first.is_empty() {
                last_line(text)
            } else {
                cut_front(&first, 500)
            },
            cause: "this gVisor sandbox cannot create containers inside itself: its runsc lacks mounts and namespaces podman's runtime needs (older runsc releases cannot even apply image layers)".into(),
            fix: "no podman setting changes that: podman here needs vfs storage and host networking (podstack configure sets both), and the containers themselves need a newer gVisor or a VM; run the container-backed tests where podstack doctor passes".into(),
        };
    }
    Diagnosis {
        finding: Finding::Unknown,
        error: last_line(text),
        cause: "podman failed for a reason podstack does not recognise".into(),
        fix:
            "read podman's message above; `podstack detect` shows what podstack found on this host"
                .into(),
    }
}

/// The README's table of known failures, rendered from [`SIGNATURES`].
#[cfg(test)]
pub fn signatures_markdown() -> String {
    let mut s = String::from("| podman says | cause | podstack sets |\n| --- | --- | --- |\n");
    for sig in SIGNATURES {
        let cause = sig
            .cause
            .replace("{rlimit}", "the")
            .replace("{graphroot}", "the graphroot");
        s.push_str(&format!("| {} | {} | {} |\n", sig.says, cause, sig.sets));
    }
    s.push_str("| anything, inside gVisor | this runsc cannot nest containers | nothing: says so honestly |\n");
    s
}

/// `text` with control characters other than newline and tab shown as `\u{fffd}`:
/// podman's messages can carry raw bytes that would garble a terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

fn last_line(text: &str) -> String {
    cut_front(
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim(),
        500,
    )
}

/// The last `max` characters of `s` (the end of podman's line holds its
/// message), with `…` in front when cut.
fn cut_front(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - max).collect();
    format!("…{tail}")
}

/// The values to try, highest first, for a limit podman could not set:
/// this process's hard limit (root cannot raise it without CAP_SYS_RESOURCE),
/// the pid ceiling for nproc, then powers of two.
pub fn ulimit_candidates(rlimit: Rlimit, hard: Option<u64>, pid_max: Option<u64>) -> Vec<u64> {
    const PODMAN_DEFAULT: u64 = 1_048_576;
    let mut c: Vec<u64> = hard.into_iter().collect();
    if rlimit == Rlimit::Nproc {
        c.extend(pid_max);
    }
    c.extend([65_536, 32_768, 16_384, 8_192, 4_096, 1_024]);
    c.retain(|v| *v < PODMAN_DEFAULT && hard.is_none_or(|h| *v <= h));
    c.sort_unstable_by(|a, b| b.cmp(a));
    c.dedup();
    c
}

/// `default_ulimits` with `name=value:value` replacing any entry for the same
/// limit and other entries kept in their order.
pub fn merge_ulimit(existing: &[String], name: &str, value: u64) -> Vec<String> {
    let entry = format!("{name}={value}:{value}");
    let mut out: Vec<String> = Vec::with_capacity(existing.len() + 1);
    let mut placed = false;
    for e in existing {
        if e.split('=').next() == Some(name) {
            if !placed {
                out.push(entry.clone());
                placed = true;
            }
        } else {
            out.push(e.clone());
        }
    }
    if !placed {
        out.push(entry);
    }
    out
}

/// The setting that fixes `finding` on top of `plan`, if one exists.
/// `next_ulimit` gives the next value to try for a limit.
pub fn fix_for(
    diagnosis: &Diagnosis,
    facts: &Facts,
    plan: &Plan,
    current_ulimits: &[String],
    next_ulimit: &mut dyn FnMut(Rlimit) -> Option<u64>,
) -> Option<Setting> {
    let mk = |table, key, value: ConfValue| Setting {
        table,
        key,
        value,
        reason: diagnosis.cause.clone(),
        trigger: Some(diagnosis.error.clone()),
    };
    match &diagnosis.finding {
        Finding::Runtime if facts.tool("runc").is_some() => {
            Some(mk("engine", "runtime", ConfValue::Str("runc".into())))
        }
        Finding::Ulimit { rlimit } => {
            let value = next_ulimit(*rlimit)?;
            let existing = match plan.get("containers", "default_ulimits").map(|s| &s.value) {
                Some(ConfValue::List(l)) => l.clone(),
                _ => current_ulimits.to_vec(),
            };
            let list = merge_ulimit(&existing, rlimit.name(), value);
            let ours: Vec<&str> = [Rlimit::Nofile, Rlimit::Nproc]
                .into_iter()
                .map(Rlimit::name)
                .filter(|n| list.iter().any(|e| e.starts_with(&format!("{n}="))))
                .collect();
            Some(Setting {
                reason: format!(
                    "podman's default {} limit (1048576) is above what this host lets it set (no CAP_SYS_RESOURCE); capped at the highest value the canary accepted",
                    ours.join(" and ")
                ),
                ..mk("containers", "default_ulimits", ConfValue::List(list))
            })
        }
        Finding::Network => Some(mk("containers", "netns", ConfValue::Str("host".into()))),
        Finding::CgroupManager => Some(mk(
            "engine",
            "cgroup_manager",
            ConfValue::Str("cgroupfs".into()),
        )),
        Finding::EventsLogger => Some(mk("engine", "events_logger", ConfValue::Str("file".into()))),
        Finding::LogDriver => Some(mk(
            "containers",
            "log_driver",
            ConfValue::Str("k8s-file".into()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::vm_root;
    use crate::plan::{DriverChoice, plan};

    // Real messages, copied from podman 4.3.1 on this project's machines.
    const CRUN_NOFILE: &str =
        "Error: crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI permission denied";
    const RUNC_NOFILE: &str = "Error: runc: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 7: operation not permitted: OCI permission denied";
    const RUNC_NPROC: &str = "Error: runc: runc create failed: unable to start container process: error during container init: error setting rlimits for ready process: error setting rlimit type 6: operation not permitted: OCI permission denied";
    const CRUN_HYBRID: &str = "Error: OCI runtime error: crun: cgroups in hybrid mode not supported, drop all controllers from cgroupv2";
    const SLIRP: &str = "Error: /usr/bin/slirp4netns failed: \"open(\\\"/dev/net/tun\\\"): Permission denied\\nWARNING: Support for seccomp is experimental\\nchild failed(1)\\n\"";
    const SYSTEMD: &str = "time=\"2026-11-23T10:59:25Z\" level=warning msg=\"Failed to add conmon to systemd sandbox cgroup: dial unix /run/systemd/private: connect: no such file or directory\"\nError: OCI runtime error: runc: runc create failed: systemd not running on this host, cannot use systemd cgroups manager";
    const GVISOR: &str = "Your kernel does not support pids limit capabilities or the cgroup is not mounted. PIDs limit discarded.\ntime=\"2026-11-23T11:06:06Z\" level=warning msg=\"Failed to add conmon to cgroupfs sandbox cgroup: creating cgroup for cpu: mkdir /sys/fs/cgroup/cpu: operation not permitted\"\nError: container create failed (no logs from conmon): conmon bytes \"\": readObjectStart: expect { or n, but found  , error found in #0 byte of ...||..., bigger context ...||...";
    const MISMATCH_OLD: &str = "Error: User-selected graph driver \"vfs\" overwritten by graph driver \"overlay\" from database - delete libpod local files to resolve";
    const MISMATCH_NEW: &str = "Error: database graph driver \"\" does not match our graph driver \"vfs\": database configuration mismatch";

    fn finding(text: &str) -> Finding {
        diagnose_text(text, &vm_root()).finding
    }

    #[test]
    fn real_messages_map_to_findings() {
        assert_eq!(
            finding(CRUN_NOFILE),
            Finding::Ulimit {
                rlimit: Rlimit::Nofile
            }
        );
        assert_eq!(
            finding(RUNC_NOFILE),
            Finding::Ulimit {
                rlimit: Rlimit::Nofile
            }
        );
        assert_eq!(
            finding(RUNC_NPROC),
            Finding::Ulimit {
                rlimit: Rlimit::Nproc
            }
        );
        assert_eq!(finding(CRUN_HYBRID), Finding::Runtime);
        assert_eq!(finding(SLIRP), Finding::Network);
        assert_eq!(finding(SYSTEMD), Finding::CgroupManager);
        assert_eq!(finding(MISMATCH_OLD), Finding::StorageMismatch);
        assert_eq!(finding(MISMATCH_NEW), Finding::StorageMismatch);
        assert_eq!(finding("Error: something new"), Finding::Unknown);
    }

    #[test]
    fn gvisor_failures_are_explained_as_such() {
        let mut f = vm_root();
        f.gvisor = true;
        let d = diagnose_text(GVISOR, &f);
        assert_eq!(d.finding, Finding::GvisorNested);
        assert!(
            d.error.starts_with("Error: container create failed"),
            "{}",
            d.error
        );
        assert!(d.cause.contains("gVisor"));
        let raw = diagnose_text(
            "Error: container create failed: found \u{0}, x\u{1b}[31m",
            &f,
        );
        assert_eq!(
            raw.error,
            "Error: container create failed: found \u{fffd}, x\u{fffd}[31m"
        );
        // The same text outside gVisor is not blamed on gVisor.
        assert_eq!(finding(GVISOR), Finding::Unknown);
    }

    #[test]
    fn diagnosis_quotes_the_error_line() {
        let d = diagnose_text(&format!("noise\n{CRUN_HYBRID}\nmore"), &vm_root());
        assert_eq!(d.error, CRUN_HYBRID);
        assert!(d.fix.contains("runc"));
        let mut f = vm_root();
        f.runtimes.retain(|b| b.name != "runc");
        assert!(
            diagnose_text(CRUN_HYBRID, &f)
                .fix
                .contains("apt-get install runc")
        );
    }

    #[test]
    fn ulimit_candidates_start_at_the_ceiling() {
        assert_eq!(
            ulimit_candidates(Rlimit::Nofile, Some(20_000), Some(32_768)),
            vec![20_000, 16_384, 8_192, 4_096, 1_024]
        );
        assert_eq!(
            ulimit_candidates(Rlimit::Nproc, Some(96_365), Some(32_768)),
            vec![96_365, 65_536, 32_768, 16_384, 8_192, 4_096, 1_024]
        );
        assert_eq!(ulimit_candidates(Rlimit::Nofile, None, None)[0], 65_536);
    }

    #[test]
    fn merging_ulimits_keeps_foreign_entries() {
        let existing = vec!["core=0:0".to_string(), "nofile=1:1".to_string()];
        assert_eq!(
            merge_ulimit(&existing, "nofile", 20_000),
            vec!["core=0:0", "nofile=20000:20000"]
        );
        assert_eq!(
            merge_ulimit(&existing, "nproc", 9),
            vec!["core=0:0", "nofile=1:1", "nproc=9:9"]
        );
    }

    #[test]
    fn fixes_walk_the_ulimit_candidates() {
        let facts = vm_root();
        let mut p = plan(&facts, DriverChoice::Auto);
        let mut tries = vec![96_365, 32_768].into_iter();
        let mut next = |_| tries.next();
        let d = diagnose_text(RUNC_NPROC, &facts);
        let s = fix_for(&d, &facts, &p, &[], &mut next).unwrap();
        assert_eq!(s.value, ConfValue::List(vec!["nproc=96365:96365".into()]));
        assert_eq!(
            s.trigger.as_deref(),
            Some(RUNC_NPROC.trim_start_matches(' '))
        );
        p.apply(s);
        let s = fix_for(&d, &facts, &p, &[], &mut next).unwrap();
        assert_eq!(s.value, ConfValue::List(vec!["nproc=32768:32768".into()]));
        p.apply(s);
        assert!(fix_for(&d, &facts, &p, &[], &mut next).is_none());
        let unknown = diagnose_text("Error: x", &facts);
        assert!(fix_for(&unknown, &facts, &p, &[], &mut next).is_none());
        // The file's own entries survive.
        let fresh = plan(&facts, DriverChoice::Auto);
        let mut once = Some(20_000);
        let nofile = diagnose_text(CRUN_NOFILE, &facts);
        let s = fix_for(&nofile, &facts, &fresh, &["core=0:0".into()], &mut |_| {
            once.take()
        })
        .unwrap();
        assert_eq!(
            s.value,
            ConfValue::List(vec!["core=0:0".into(), "nofile=20000:20000".into()])
        );
        assert!(s.reason.contains("default nofile limit"), "{}", s.reason);
        let mut both = fresh.clone();
        both.apply(s);
        let mut again = Some(32_768);
        let nproc = diagnose_text(RUNC_NPROC, &facts);
        let s = fix_for(&nproc, &facts, &both, &[], &mut |_| again.take()).unwrap();
        assert!(
            s.reason.contains("default nofile and nproc limit"),
            "{}",
            s.reason
        );
    }

    #[test]
    fn the_readme_table_is_rendered_from_the_signatures() {
        // The table may sit indented in a list item.
        let readme: String = include_str!("../README.md")
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let table = signatures_markdown();
        assert!(
            readme.contains(&table),
            "README.md must hold this table of known failures:\n{table}"
        );
    }

    #[test]
    fn config_file_errors_and_boms_are_named() {
        let bom = "time=\"x\" level=error msg=\"reading system config \\\"/c.conf\\\": decode configuration /c.conf: toml: line 1: expected '.' or '=', but got '\\ufeff' instead\"";
        let d = diagnose_text(bom, &vm_root());
        assert_eq!(d.finding, Finding::ConfigFile);
        assert!(d.cause.contains("byte-order mark"), "{}", d.cause);
        let toml = "level=error msg=\"reading system config \\\"/c.conf\\\": decode configuration /c.conf: toml: line 2 (last key \\\"engine.runtime\\\"): incompatible types\"";
        assert_eq!(finding(toml), Finding::ConfigFile);
        assert_eq!(
            finding(
                "Error: crun: executable file `/podstack` not found: exec /podstack: permission denied"
            ),
            Finding::NoExec
        );
    }

    #[test]
    fn static_elf_detection() {
        let own = fs_err::read(std::env::current_exe().unwrap()).unwrap();
        // Every podstack build is static (.cargo/config.toml), test binaries too.
        assert!(is_static_elf(&own));
        let sh = fs_err::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&sh));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
