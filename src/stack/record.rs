//! What `up` started, kept in the state folder so the next `up` (a resumed
//! session, a second hook) can tell without asking podman that everything
//! is still in place: each service's container id, main pid, the pid's start
//! time in /proc (so a reused pid is not mistaken for the service) and its
//! definition hash.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The record of one stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The engine that ran them.
    #[serde(default)]
    pub engine: Option<crate::engine::Engine>,
    /// How they were networked.
    #[serde(default)]
    pub mode: Option<crate::stack::net::Mode>,
    /// Services that were up, by name.
    pub services: BTreeMap<String, Started>,
}

/// One started service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The container.
    pub id: String,
    /// Its main process on the host.
    pub pid: u32,
    /// That process's start time (clock ticks after boot, /proc/PID/stat field 22).
    pub start_time: u64,
    /// The definition hash it was made from.
    pub hash: String,
    /// When it became ready (seconds since the Unix epoch).
    pub ready_at: u64,
}

const FILE: &str = "record.json";

/// Reads the record (an absent or damaged one is empty: the cold path
/// rebuilds it).
pub fn load(state_dir: &Path) -> Record {
    fs_err::read_to_string(state_dir.join(FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Writes the record atomically.
pub fn save(state_dir: &Path, record: &Record) -> Result<()> {
    crate::fsx::write_atomic(
        &state_dir.join(FILE),
        serde_json::to_string_pretty(record)?.as_bytes(),
        0o600,
    )
}

/// Forgets the record.
pub fn clear(state_dir: &Path) {
    let _ = fs_err::remove_file(state_dir.join(FILE));
}

/// The start time of `pid` (field 22 of /proc/PID/stat), if it runs and is
/// not a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a /proc/PID/stat text; `None` for a zombie (pure). The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the recorded process still runs (same pid, same start time)
/// and, where its cgroup names a podman container, is that container's.
pub fn alive(s: &Started) -> bool {
    s.pid != 0 && start_time(s.pid) == Some(s.start_time) && in_container(s.pid, &s.id)
}

/// Whether `pid`'s cgroup, when it names a container (podman's `libpod-ID`,
/// Docker's `/docker/ID` or `docker-ID.scope`), names container `id`
/// (rootless podman on cgroup v1 puts containers in no cgroup of their own:
/// then there is nothing to check).
fn in_container(pid: u32, id: &str) -> bool {
    let Ok(cgroup) = fs_err::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    cgroup_names(&cgroup, id)
}

/// The pure half of [`in_container`].
pub fn cgroup_names(cgroup: &str, id: &str) -> bool {
    let short = &id[..id.len().min(12)];
    let marks = ["libpod-", "/docker/", "/docker-"];
    !marks.iter().any(|m| cgroup.contains(m))
        || (!short.is_empty()
            && marks
                .iter()
                .any(|m| cgroup.contains(&format!("{m}{short}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let zombie = "1234 (x) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_start_time(zombie), None);
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }

    #[test]
    fn a_pid_of_another_container_is_not_the_service() {
        let ours = "0123456789abcdef0123";
        let cg = "7:cpu:/libpod_parent/libpod-0123456789abcdef0123456789abcdef\n";
        assert!(cgroup_names(cg, ours));
        assert!(!cgroup_names(cg, "fedcba9876543210"));
        assert!(cgroup_names("0::/user.slice/session-1.scope\n", ours));
        assert!(cgroup_names("12:pids:/docker/0123456789abcdef0123\n", ours));
        assert!(!cgroup_names(
            "12:pids:/docker/fedcba98765432100000\n",
            ours
        ));
        assert!(cgroup_names(
            "0::/system.slice/docker-0123456789abcdef.scope\n",
            ours
        ));
        let none = Started {
            id: ours.into(),
            pid: 0,
            start_time: 0,
            hash: "h".into(),
            ready_at: 0,
        };
        assert!(!alive(&none));
    }

    #[test]
    fn records_round_trip_and_damage_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Record::default();
        r.services.insert(
            "web".into(),
            Started {
                id: "abc".into(),
                pid: 1,
                start_time: 2,
                hash: "h".into(),
                ready_at: 3,
            },
        );
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()), r);
        fs_err::write(dir.path().join(FILE), "{ not json").unwrap();
        assert_eq!(load(dir.path()), Record::default());
    }
}
