//! Isolation between a stack's podman networks that does not come and go.
//!
//! netavark 1.4 (podman 4.3) isolates `isolate=true` networks through one
//! jump, `FORWARD -j NETAVARK_ISOLATION_1`, that it adds when a container
//! joins such a network and deletes when ANY such container is torn down,
//! while others still run (measured: start one container on each of two
//! isolated networks, remove one, and the jump is gone). Seed 000's agent
//! containers come and go, so the first agent that exits would open the
//! internal network to every other. podstack therefore adds its own DROP
//! rules, one per ordered pair of the stack's bridges, marked with a
//! comment naming the project, and removes them on `down`.

use anyhow::{Result, bail};

use crate::proc::Cmd;

/// The comment that marks the rules of `project`.
pub fn mark(project: &str) -> String {
    format!("podstack:{project}")
}

/// The rules for the stack's bridges (pure): traffic from one bridge to
/// another is dropped, in both directions.
pub fn rules(project: &str, bridges: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for a in bridges {
        for b in bridges {
            if a != b {
                out.push(
                    [
                        "FORWARD",
                        "-i",
                        a,
                        "-o",
                        b,
                        "-m",
                        "comment",
                        "--comment",
                        &mark(project),
                        "-j",
                        "DROP",
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                );
            }
        }
    }
    out
}

/// The `-D` arguments of every rule of `project` in `iptables -S FORWARD`
/// output (pure).
pub fn to_delete(listing: &str, project: &str) -> Vec<Vec<String>> {
    let needle = mark(project);
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|l| l.split_whitespace().any(|w| w.trim_matches('"') == needle))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

fn iptables() -> Result<std::path::PathBuf> {
    which::which("iptables").or_else(|_| {
        ["/usr/sbin/iptables", "/sbin/iptables"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| anyhow::anyhow!("iptables is not installed"))
    })
}

/// Adds the rules that are missing.
pub async fn ensure(project: &str, bridges: &[String]) -> Result<()> {
    let bin = iptables()?;
    for rule in rules(project, bridges) {
        let check = Cmd::new(&bin).arg("-C").args(&rule).run().await?;
        if check.success() {
            continue;
        }
        let add = Cmd::new(&bin).arg("-I").args(&rule).run().await?;
        if !add.success() {
            bail!("`{}` failed: {}", add.display, add.tail(2));
        }
    }
    Ok(())
}

/// Removes every rule of `project`.
pub async fn remove(project: &str) -> Result<()> {
    let Ok(bin) = iptables() else {
        return Ok(());
    };
    let listing = Cmd::new(&bin).args(["-S", "FORWARD"]).run().await?;
    if !listing.success() {
        return Ok(());
    }
    for rule in to_delete(&listing.stdout, project) {
        let del = Cmd::new(&bin).arg("-D").args(&rule).run().await?;
        if !del.success() {
            bail!("`{}` failed: {}", del.display, del.tail(2));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_both_ways_and_deletes_only_the_projects_own() {
        let r = rules("props", &["podman3".into(), "podman4".into()]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0][..5], ["FORWARD", "-i", "podman3", "-o", "podman4"]);
        assert_eq!(r[1][2..5], ["podman4", "-o", "podman3"]);
        let listing = "-P FORWARD DROP\n-A FORWARD -i podman3 -o podman4 -m comment --comment podstack:props -j DROP\n-A FORWARD -i podman5 -o podman6 -m comment --comment podstack:props2 -j DROP\n-A FORWARD -j DOCKER-USER\n";
        let d = to_delete(listing, "props");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0], r[0]);
    }
}
