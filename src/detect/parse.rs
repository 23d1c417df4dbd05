//! Pure parsers over the text of files under /proc, /sys and /etc.
//!
//! Each takes the text (or bytes) it needs and returns plain data; none reads
//! a file, so each is tested against real samples copied from real hosts.

use serde::Serialize;

/// The build string of gVisor's emulated kernel: a constant in its source,
/// reported by every runsc release whatever the version number before it.
const GVISOR_BUILD: &str = "#1 SMP Sun Jan 10 15:06:54 PST 2016";

/// The gVisor markers found in `/proc/version` and `/proc/cmdline`.
/// A real `4.4.0-NNN-generic` kernel carries neither.
pub fn gvisor_markers(proc_version: Option<&str>, proc_cmdline: Option<&str>) -> Vec<String> {
    let mut markers = Vec::new();
    if let Some(v) = proc_version {
        if v.contains(GVISOR_BUILD) {
            markers.push(format!("/proc/version: {}", v.trim()));
        } else if let Some(release) = v.split_whitespace().nth(2)
            && release.ends_with("-gvisor")
        {
            markers.push(format!("/proc/version: kernel {release}"));
        }
    }
    if let Some(c) = proc_cmdline
        && c.split_whitespace()
            .any(|w| w.starts_with("BOOT_IMAGE=") && w.ends_with("-gvisor"))
    {
        markers.push(format!("/proc/cmdline: {}", c.trim()));
    }
    markers
}

/// Whether PID 1's NUL-separated command line is Firecracker's init.
pub fn is_firecracker_init(pid1_cmdline: &[u8]) -> bool {
    pid1_cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == b"--firecracker-init")
}

/// Whether the CPU flags in `/proc/cpuinfo` say a hypervisor runs this kernel.
pub fn cpuinfo_has_hypervisor(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
}

/// The value of `container=` in a NUL-separated environ (PID 1's).
pub fn environ_container(environ: &[u8]) -> Option<String> {
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"container="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .filter(|v| !v.is_empty())
}

/// The container engine named by a `/proc/self/cgroup` text, if any (v1 paths
/// name it; on v2 the path is usually `/` and says nothing).
pub fn cgroup_container_hint(proc_self_cgroup: &str) -> Option<&'static str> {
    for line in proc_self_cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        if path.contains("libpod") {
            return Some("podman");
        }
        if path.contains("/docker") || path.contains("docker-") {
            return Some("docker");
        }
        if path.contains("kubepods") || path.contains("/lxc") || path.contains("containerd") {
            return Some("other");
        }
    }
    None
}

/// One line of `/proc/self/uid_map` (or gid_map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside.
    pub outside: u32,
    /// How many ids.
    pub count: u64,
}

/// Parses `/proc/self/uid_map`.
pub fn parse_id_map(text: &str) -> Vec<IdMap> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some(IdMap {
                inside: it.next()?.parse().ok()?,
                outside: it.next()?.parse().ok()?,
                count: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Whether a uid map is the initial namespace's full identity map.
pub fn is_full_identity(map: &[IdMap]) -> bool {
    matches!(
        map,
        [IdMap {
            inside: 0,
            outside: 0,
            count: 4_294_967_295
        }]
    )
}

/// The effective uid from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn status_euid(status: &str) -> Option<u32> {
    status_field(status, "Uid:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The effective capability mask from `/proc/self/status`.
pub fn status_cap_eff(status: &str) -> Option<u64> {
    u64::from_str_radix(status_field(status, "CapEff:")?.trim(), 16).ok()
}

/// CAP_SYS_ADMIN's bit in a capability mask.
pub const CAP_SYS_ADMIN: u32 = 21;
/// CAP_SYS_RESOURCE's bit: without it even root cannot raise a hard rlimit.
pub const CAP_SYS_RESOURCE: u32 = 24;

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name))
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IdRange {
    /// First subordinate id.
    pub start: u64,
    /// How many ids.
    pub count: u64,
}

/// The ranges in an /etc/subuid-style text that belong to `user` or `uid`
/// (entries may name the user or give the numeric uid).
pub fn parse_subid(text: &str, user: Option<&str>, uid: u32) -> Vec<IdRange> {
    let uid = uid.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.trim().split(':');
            let owner = it.next()?;
            if owner != uid && Some(owner) != user {
                return None;
            }
            Some(IdRange {
                start: it.next()?.trim().parse().ok()?,
                count: it.next()?.trim().parse().ok()?,
            })
        })
        .collect()
}

/// The user name of `uid` in an /etc/passwd text (read as a file: no NSS).
pub fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    let uid = uid.to_string();
    passwd.lines().find_map(|l| {
        let mut it = l.split(':');
        let name = it.next()?;
        it.next()?;
        (it.next()? == uid).then(|| name.to_string())
    })
}

/// How cgroups are mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only the unified hierarchy, at /sys/fs/cgroup.
    V2,
    /// Legacy controllers, with the unified hierarchy beside them: crun refuses this.
    Hybrid,
    /// Legacy controllers only.
    V1,
    /// No cgroup file system at all (gVisor's `runsc do`, for one).
    None,
}

/// The cgroup layout from `/proc/self/mountinfo`.
pub fn cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let mut v2_root = false;
    let mut v2_elsewhere = false;
    let mut v1 = false;
    for m in mounts(mountinfo) {
        match m.fstype {
            "cgroup2" if m.mount_point == "/sys/fs/cgroup" => v2_root = true,
            "cgroup2" => v2_elsewhere = true,
            "cgroup" => v1 = true,
            _ => {}
        }
    }
    match (v2_root, v1, v2_elsewhere) {
        (true, _, _) => CgroupLayout::V2,
        (false, true, true) => CgroupLayout::Hybrid,
        (false, true, false) => CgroupLayout::V1,
        (false, false, true) => CgroupLayout::V2,
        (false, false, false) => CgroupLayout::None,
    }
}

/// One mount from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    /// Where it is mounted.
    pub mount_point: &'a str,
    /// Its file system type.
    pub fstype: &'a str,
    /// Its per-mount options (`rw,nosuid,noexec,relatime`).
    pub options: &'a str,
}

/// The mounts in a mountinfo text (`... mount_point ... - fstype source opts`).
pub fn mounts(mountinfo: &str) -> impl Iterator<Item = Mount<'_>> {
    mountinfo.lines().filter_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut left = left.split_whitespace();
        Some(Mount {
            mount_point: left.nth(4)?,
            options: left.next()?,
            fstype: right.split_whitespace().next()?,
        })
    })
}

/// The mount holding `path`: the longest mount-point prefix, the last one
/// mounted when several share it.
pub fn mount_of<'a>(mountinfo: &'a str, path: &str) -> Option<Mount<'a>> {
    mounts(mountinfo)
        .filter(|m| {
            m.mount_point == "/"
                || path == m.mount_point
                || path
                    .strip_prefix(m.mount_point)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|m| m.mount_point.len())
}

/// The file system type of the mount holding `path`.
pub fn fstype_of<'a>(mountinfo: &'a str, path: &str) -> Option<&'a str> {
    mount_of(mountinfo, path).map(|m| m.fstype)
}

/// Whether the mount holding `path` forbids executing files (`noexec`).
pub fn noexec_at(mountinfo: &str, path: &str) -> bool {
    mount_of(mountinfo, path).is_some_and(|m| m.options.split(',').any(|o| o == "noexec"))
}

/// Whether `/proc/filesystems` lists `name`.
pub fn has_filesystem(proc_filesystems: &str, name: &str) -> bool {
    proc_filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(name))
}

/// `(major, minor)` of a kernel release such as `6.18.44-fc-v657`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The version number in `NAME --version` output: `podman version 4.3.1`,
/// `Docker version 28.2.2, build e6534b4`, `runc version 1.1.5`,
/// `runsc version release-20221219.0`. Only a line that names the binary,
/// then `version`, then something that starts like a version counts, so a
/// binary that prints an error or nonsense has no version.
pub fn version_of(output: &str, name: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        if !first.eq_ignore_ascii_case(name) || !words.next()?.eq_ignore_ascii_case("version") {
            return None;
        }
        let v = words.next()?.trim_end_matches(',');
        ((v.starts_with(|c: char| c.is_ascii_digit()) || v.starts_with("release-"))
            && v.len() <= 64
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+_~".contains(c)))
        .then(|| v.to_string())
    })
}

/// The storage drivers that have data in a graphroot, from its entry names
/// (containers/storage keeps `<driver>-layers`, `<driver>-images`, ...).
pub fn drivers_on_disk<S: AsRef<str>>(entries: &[S]) -> Vec<String> {
    let mut drivers: Vec<String> = entries
        .iter()
        .filter_map(|e| e.as_ref().strip_suffix("-layers"))
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    drivers.sort();
    drivers.dedup();
    drivers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gvisor_version_strings_are_recognised() {
        let old = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016\n";
        assert_eq!(gvisor_markers(Some(old), None).len(), 1);
        let newer = "Linux version 4.19.0-gvisor #1 SMP Sun Jan 10 15:06:54 PST 2016\n";
        assert_eq!(gvisor_markers(Some(newer), None).len(), 1);
        let cmdline = "BOOT_IMAGE=/vmlinuz-4.4.0-gvisor quiet\n";
        assert_eq!(gvisor_markers(Some(old), Some(cmdline)).len(), 2);
    }

    #[test]
    fn real_kernels_are_not_gvisor() {
        let ubuntu = "Linux version 4.4.0-210-generic (buildd@lgw01-amd64-009) (gcc version 5.4.0 20160609 (Ubuntu 5.4.0-6ubuntu1~16.04.12) ) #242-Ubuntu SMP Fri Apr 16 09:57:56 UTC 2021\n";
        let fc = "Linux version 6.18.44-fc-v657 (builder@sandboxing) (gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46) #1 SMP PREEMPT_DYNAMIC @0\n";
        let cmdline = "BOOT_IMAGE=/boot/vmlinuz-4.4.0-210-generic root=UUID=x ro quiet";
        assert!(gvisor_markers(Some(ubuntu), Some(cmdline)).is_empty());
        assert!(gvisor_markers(Some(fc), None).is_empty());
        assert!(gvisor_markers(None, None).is_empty());
    }

    #[test]
    fn firecracker_init_is_recognised() {
        let pid1 = b"/process_api\0--firecracker-init\0--addr\x000.0.0.0:2024\0";
        assert!(is_firecracker_init(pid1));
        assert!(!is_firecracker_init(b"/sbin/init\0splash\0"));
        assert!(!is_firecracker_init(b"/bin/x\0--firecracker-initx\0"));
    }

    #[test]
    fn hypervisor_flag() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n";
        assert!(cpuinfo_has_hypervisor(cpuinfo));
        assert!(!cpuinfo_has_hypervisor("flags\t\t: fpu vme\n"));
    }

    #[test]
    fn container_env_and_cgroup_hints() {
        assert_eq!(
            environ_container(b"PATH=/bin\0container=podman\0HOME=/"),
            Some("podman".to_string())
        );
        assert_eq!(environ_container(b"PATH=/bin\0container=\0"), None);
        let docker_v1 = "12:pids:/docker/3f2a9c\n11:memory:/docker/3f2a9c\n";
        assert_eq!(cgroup_container_hint(docker_v1), Some("docker"));
        let podman = "0::/machine.slice/libpod-3f2a.scope\n";
        assert_eq!(cgroup_container_hint(podman), Some("podman"));
        let host = "12:pids:/\n11:cpu,cpuacct:/user.slice\n0::/init.scope\n";
        assert_eq!(cgroup_container_hint(host), None);
    }

    #[test]
    fn uid_maps() {
        let full = parse_id_map("         0          0 4294967295\n");
        assert!(is_full_identity(&full));
        let rootless =
            parse_id_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(rootless.len(), 2);
        assert_eq!(rootless[1].outside, 100_000);
        assert!(!is_full_identity(&rootless));
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tcat\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(status_euid(status), Some(1001));
        let caps = status_cap_eff(status).unwrap();
        assert!(caps & (1 << CAP_SYS_ADMIN) != 0);
        assert!(caps & (1 << CAP_SYS_RESOURCE) == 0);
    }

    #[test]
    fn subids_by_name_or_uid() {
        let text = "podstack-test:100000:65536\n# comment\n1002:200000:65536\nother:300000:10\n";
        assert_eq!(
            parse_subid(text, Some("podstack-test"), 1001),
            vec![IdRange {
                start: 100_000,
                count: 65_536
            }]
        );
        assert_eq!(parse_subid(text, None, 1002)[0].start, 200_000);
        assert!(parse_subid(text, Some("nobody"), 5).is_empty());
    }

    #[test]
    fn passwd_lookup_reads_the_file() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npodstack-test:x:1001:1001::/home/podstack-test:/bin/bash\n";
        assert_eq!(passwd_name(passwd, 1001).as_deref(), Some("podstack-test"));
        assert_eq!(passwd_name(passwd, 7), None);
    }

    const HYBRID: &str = "\
24 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 24 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 30 0:35 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
40 30 0:36 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn cgroup_layouts() {
        assert_eq!(cgroup_layout(HYBRID), CgroupLayout::Hybrid);
        let v2 = "24 1 254:0 / / rw - ext4 /dev/vda rw\n30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup_layout(v2), CgroupLayout::V2);
        let v1 = "30 24 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup_layout(v1), CgroupLayout::V1);
        assert_eq!(
            cgroup_layout("1 0 0:1 / / rw - overlay none rw\n"),
            CgroupLayout::None
        );
    }

    #[test]
    fn fstype_of_longest_prefix() {
        let mi = "1 0 0:1 / / rw - overlay none rw\n2 1 0:2 / /var/lib rw - ext4 /dev/x rw\n3 1 0:3 / /var/libx rw - tmpfs t rw\n";
        assert_eq!(fstype_of(mi, "/var/lib/containers/storage"), Some("ext4"));
        assert_eq!(fstype_of(mi, "/var/libx/a"), Some("tmpfs"));
        assert_eq!(fstype_of(mi, "/home/u"), Some("overlay"));
    }

    #[test]
    fn noexec_mounts_are_seen() {
        let mi = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                  30 22 0:26 / /tmp rw,nosuid,nodev,noexec shared:5 - tmpfs tmpfs rw\n\
                  31 30 0:27 / /tmp/ok rw,nosuid shared:6 - tmpfs tmpfs rw\n";
        assert!(noexec_at(mi, "/tmp/x"));
        assert!(noexec_at(mi, "/tmp"));
        assert!(!noexec_at(mi, "/tmp/ok/y"));
        assert!(!noexec_at(mi, "/tmpfoo"));
        assert!(!noexec_at(mi, "/var/tmp"));
        assert_eq!(fstype_of(mi, "/tmp/ok"), Some("tmpfs"));
    }

    #[test]
    fn filesystems_and_kernel_versions() {
        let fs = "nodev\tsysfs\nnodev\toverlay\n\text4\n\tfuseblk\nnodev\tfuse\n";
        assert!(has_filesystem(fs, "overlay") && has_filesystem(fs, "ext4"));
        assert!(!has_filesystem(fs, "btrfs"));
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("4.4.0"), Some((4, 4)));
        assert_eq!(kernel_version("x"), None);
    }

    #[test]
    fn version_lines() {
        assert_eq!(
            version_of("podman version 4.3.1\n", "podman").as_deref(),
            Some("4.3.1")
        );
        assert_eq!(
            version_of("Docker version 28.2.2, build e6534b4\n", "docker").as_deref(),
            Some("28.2.2")
        );
        assert_eq!(
            version_of(
                "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nspec: 1.0.2-dev\n",
                "runc"
            )
            .as_deref(),
            Some("1.1.5+ds1")
        );
        assert_eq!(
            version_of("crun version 1.8.1\ncommit: x\n", "crun").as_deref(),
            Some("1.8.1")
        );
        assert_eq!(
            version_of("runsc version release-20221219.0\nspec: 1.0.2\n", "runsc").as_deref(),
            Some("release-20221219.0")
        );
        assert_eq!(version_of("", "podman"), None);
        assert_eq!(version_of("2: cannot run\n", "podman"), None);
        assert_eq!(version_of("podman version\n", "podman"), None);
        assert_eq!(
            version_of("Error: podman version mismatch\n", "podman"),
            None
        );
    }

    #[test]
    fn drivers_from_graphroot_entries() {
        let entries = [
            "libpod",
            "overlay",
            "overlay-images",
            "overlay-layers",
            "vfs-layers",
            "volumes",
        ];
        assert_eq!(drivers_on_disk(&entries), vec!["overlay", "vfs"]);
        assert!(drivers_on_disk::<&str>(&[]).is_empty());
    }
}
