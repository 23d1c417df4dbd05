//! Who holds a port: listening sockets from /proc/net/tcp and tcp6, their
//! owners from /proc/PID/fd (pure parsing, thin reading).

use std::collections::BTreeSet;

/// A process listening on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The port.
    pub port: u16,
    /// Its pid, when podstack may see it.
    pub pid: Option<u32>,
    /// Its command line.
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(
                f,
                "port {} is held by pid {pid} ({})",
                self.port, self.command
            ),
            None => write!(
                f,
                "port {} is held by a process podstack cannot see (another user's, or in another namespace)",
                self.port
            ),
        }
    }
}

/// The socket inodes listening on `port` in a /proc/net/tcp(6) text (pure).
pub fn listening_inodes(proc_net_tcp: &str, port: u16) -> BTreeSet<u64> {
    proc_net_tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let state = f.get(3)?;
            let inode = f.get(9)?.parse().ok()?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            // 0A is TCP_LISTEN.
            (p == port && *state == "0A").then_some(inode)
        })
        .collect()
}

/// Who listens on each of `ports` (ports nobody holds are left out).
pub fn holders(ports: &[u16]) -> Vec<Holder> {
    let tables: String = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| fs_err::read_to_string(p).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for &port in ports {
        let inodes = listening_inodes(&tables, port);
        if inodes.is_empty() {
            continue;
        }
        let (pid, command) = owner(&inodes).unwrap_or((0, String::new()));
        out.push(Holder {
            port,
            pid: (pid != 0).then_some(pid),
            command,
        });
    }
    out
}

/// The first process with one of `inodes` open, and its command line.
fn owner(inodes: &BTreeSet<u64>) -> Option<(u32, String)> {
    let procs = fs_err::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            let hit = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| inodes.contains(&n));
            if hit {
                let cmd = crate::proc::cmdline_of(&pid.to_string());
                return Some((pid, crate::proc::cut(&cmd, 200)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_by_port() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1539 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:1539 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(listening_inodes(tcp, 5433), BTreeSet::from([12345]));
        assert!(listening_inodes(tcp, 5432).is_empty());
    }

    #[test]
    fn a_real_listener_is_named() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = holders(&[port]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].pid, Some(std::process::id()));
        assert!(
            h[0].to_string()
                .contains(&format!("port {port} is held by pid"))
        );
        drop(l);
        // A child another test thread forked may hold the socket until it
        // execs (close-on-exec): give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !holders(&[port]).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} still held"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
