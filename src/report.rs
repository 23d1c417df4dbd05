//! Stage 7, report: what podstack prints. Human text is an aligned table read
//! in one glance; `--json` documents are the same data, stable and documented
//! in the README. Results go to stdout, logs to stderr.

use std::fmt::Write as _;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::configure;
use crate::detect::{Binary, Facts, Limit};
use crate::doctor::Verdict;

/// Writes `value` as pretty JSON and a newline to stdout.
pub fn json<T: Serialize>(value: &T) -> Result<()> {
    // Rendered first, so a closed stdout surfaces as a plain io::Error (a broken
    // pipe, which is not an error) rather than inside a serde_json error.
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    text(&s)
}

/// Writes text to stdout.
pub fn text(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// `s` with control characters other than newline shown as U+FFFD: what
/// podman or a file says never drives the terminal (colours, titles, links).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Rows of `label  value`, the labels padded to one width; control
/// characters shown as U+FFFD.
pub fn table(rows: &[(String, String)]) -> String {
    let rows: Vec<(String, String)> = rows
        .iter()
        .map(|(k, v)| (printable(k), printable(v)))
        .collect();
    let rows = rows.as_slice();
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for (k, v) in rows {
        let mut lines = v.lines();
        let _ = writeln!(s, "  {k:<width$}  {}", lines.next().unwrap_or(""));
        for more in lines {
            let _ = writeln!(s, "  {:<width$}  {more}", "");
        }
    }
    s
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn limit(l: &Limit) -> String {
    let v = |x: Option<u64>| x.map_or("unlimited".to_string(), |n| n.to_string());
    format!("{}:{}", v(l.soft), v(l.hard))
}

fn binary(b: Option<&Binary>) -> String {
    match b {
        None => "not found".into(),
        Some(b) => match &b.version {
            Some(v) => format!("{v} ({})", b.path.display()),
            None => b.path.display().to_string(),
        },
    }
}

/// `podstack detect` as text: one row per fact, in groups.
pub fn facts(f: &Facts) -> String {
    let mut rows = sandbox_rows(f);
    rows.extend(host_rows(f));
    rows.extend(binary_rows(f));
    rows.push(("sockets".into(), sockets(&f.sockets)));
    rows.push(("storage".into(), storage(f)));
    rows.push(("claude code remote".into(), yes(f.claude_code_remote)));
    rows.push(("ci".into(), yes(f.ci)));
    table(&rows)
}

fn with_markers(v: String, m: &[String]) -> String {
    if m.is_empty() {
        v
    } else {
        format!("{v} ({})", m.join("; "))
    }
}

fn usable(b: bool) -> String {
    if b { "usable" } else { "not usable" }.to_string()
}

/// What kind of sandbox, and who runs in it.
fn sandbox_rows(f: &Facts) -> Vec<(String, String)> {
    vec![
        (
            "kernel".to_string(),
            f.kernel.clone().unwrap_or_else(|| "unknown".into()),
        ),
        (
            "gvisor".into(),
            with_markers(yes(f.gvisor), &f.gvisor_markers),
        ),
        ("vm".into(), f.vm.to_string()),
        (
            "container".into(),
            with_markers(f.container.to_string(), &f.container_markers),
        ),
        (
            "user".into(),
            format!("{} (euid {})", f.user.as_deref().unwrap_or("?"), f.euid),
        ),
        (
            "rootless".into(),
            if f.rootless {
                format!("yes ({})", f.rootless_reasons.join("; "))
            } else {
                "no".into()
            },
        ),
        (
            "subuid/subgid".into(),
            format!("{} / {}", ranges(&f.subuid), ranges(&f.subgid)),
        ),
    ]
}

/// What the kernel and devices allow.
fn host_rows(f: &Facts) -> Vec<(String, String)> {
    vec![
        ("systemd pid 1".into(), yes(f.systemd_pid1)),
        ("cgroup".into(), format!("{:?}", f.cgroup).to_lowercase()),
        (
            "rlimits".into(),
            format!(
                "nofile {}, nproc {}{}",
                limit(&f.rlimits.nofile),
                limit(&f.rlimits.nproc),
                if f.can_raise_rlimits {
                    ""
                } else {
                    " (cannot be raised: no CAP_SYS_RESOURCE)"
                }
            ),
        ),
        ("/dev/net/tun".into(), usable(f.dev_net_tun)),
        ("/dev/fuse".into(), usable(f.dev_fuse)),
        ("overlay fs".into(), yes(f.overlay_fs)),
    ]
}

fn binary_rows(f: &Facts) -> Vec<(String, String)> {
    let list = |bins: &[Binary]| {
        if bins.is_empty() {
            "none".to_string()
        } else {
            bins.iter()
                .map(|b| match &b.version {
                    Some(v) => format!("{} {v}", b.name),
                    None => b.name.clone(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    vec![
        ("podman".into(), binary(f.podman.as_ref())),
        ("docker".into(), binary(f.docker.as_ref())),
        ("runtimes".into(), list(&f.runtimes)),
        ("helpers".into(), list(&f.helpers)),
    ]
}

fn sockets(found: &[crate::detect::Socket]) -> String {
    if found.is_empty() {
        return "none".to_string();
    }
    found
        .iter()
        .map(|s| match (&s.url, &s.error) {
            (Some(url), _) => {
                let state = match s.answers {
                    Some(true) => "answers",
                    Some(false) => "no answer",
                    None => "not asked",
                };
                format!("{url} ({}, {state})", s.engine)
            }
            (None, e) => format!("invalid: {}", e.as_deref().unwrap_or(&s.source)),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn storage(f: &Facts) -> String {
    let st = &f.storage;
    format!(
        "{} in {}{}\nconfig {}{}",
        st.driver.as_deref().unwrap_or("podman's default driver"),
        st.graphroot
            .as_ref()
            .map_or("?".into(), |p| p.display().to_string()),
        if st.drivers_on_disk.is_empty() {
            String::new()
        } else {
            format!(" (holds {} data)", st.drivers_on_disk.join(", "))
        },
        st.conf
            .as_ref()
            .map_or("?".into(), |p| p.display().to_string()),
        st.error
            .as_ref()
            .map_or(String::new(), |e| format!("\nerror {e}")),
    )
}

fn ranges(r: &[crate::detect::parse::IdRange]) -> String {
    if r.is_empty() {
        return "none".into();
    }
    r.iter()
        .map(|r| format!("{}+{}", r.start, r.count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `podstack configure` as text.
pub fn configured(r: &configure::Report) -> String {
    let mut s = String::new();
    let scope = if r.rootless { "rootless" } else { "rootful" };
    let head = if r.held_back() {
        "podstack configure: containers still cannot run here, so nothing was written"
    } else {
        match (r.dry_run, r.changed()) {
            (true, true) => "podstack configure --dry-run: these changes would be made",
            (true, false) => "podstack configure --dry-run: nothing would change",
            (false, true) => "podstack configure: podman configured",
            (false, false) => "podstack configure: nothing to change, every byte is already right",
        }
    };
    let _ = writeln!(s, "{head} ({scope})");
    let mut rows = Vec::new();
    for f in &r.files {
        let mut v = format!("{}  {}", f.status, f.path.display());
        for c in &f.changes {
            let _ = write!(v, "\n  {c}");
        }
        if let Some(b) = &f.backup {
            let _ = write!(v, "\nprevious version kept as {}", b.display());
        }
        rows.push((f.name.to_string(), v));
    }
    rows.push((
        "storage driver".into(),
        format!(
            "{}: {}",
            r.storage.driver.as_deref().unwrap_or("unchanged"),
            r.storage.reason
        ),
    ));
    rows.push(("network".into(), r.network.to_string()));
    for set in &r.settings {
        let mut v = format!("{}: {}", set.value, set.reason);
        if let Some(t) = &set.trigger {
            let _ = write!(v, "\n  proven by: {t}");
        }
        rows.push((format!("{}.{}", set.table, set.key), v));
    }
    match r.storage_reset {
        configure::Reset::None => {}
        configure::Reset::Wiped => {
            rows.push(("storage reset".into(), "wiped (--reset-storage)".into()))
        }
        configure::Reset::WouldWipe => rows.push((
            "storage reset".into(),
            "would wipe (--reset-storage); nothing was wiped".into(),
        )),
    }
    let c = &r.canary;
    let store = if c.throwaway_store {
        ", on a throwaway store"
    } else {
        ""
    };
    let canary = if !c.ran {
        "not run (--no-canary)".to_string()
    } else if c.passed {
        format!(
            "passed ({} run{}{store}, last {} ms)",
            c.runs,
            if c.runs == 1 { "" } else { "s" },
            c.last_ms
        )
    } else {
        "FAILED: containers still cannot run here".to_string()
    };
    rows.push(("canary".into(), canary));
    if let Some(d) = &c.diagnosis
        && !c.passed
    {
        rows.extend(diagnosis_rows(d));
    }
    rows.extend(
        r.warnings
            .iter()
            .map(|w| ("warning".to_string(), w.clone())),
    );
    s.push_str(&table(&rows));
    s
}

fn diagnosis_rows(d: &crate::canary::Diagnosis) -> Vec<(String, String)> {
    vec![
        ("error".into(), d.error.clone()),
        ("cause".into(), d.cause.clone()),
        ("fix".into(), d.fix.clone()),
    ]
}

/// `podstack doctor` as text.
pub fn verdict(v: &Verdict) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "podstack doctor: {}",
        match (v.can_run, v.docker.as_ref().and_then(|d| d.can_run)) {
            (true, _) => "containers can run here",
            (false, Some(true)) =>
                "podman cannot run containers here as it is configured; the Docker daemon can (podstack up uses it when podman cannot)",
            (false, _) => "containers cannot run here",
        }
    );
    let mut rows = vec![
        ("podman".to_string(), binary(v.podman.as_ref())),
        (
            "mode".into(),
            format!(
                "{}{}",
                if v.rootless { "rootless" } else { "rootful" },
                if v.gvisor { ", inside gVisor" } else { "" }
            ),
        ),
        (
            "storage driver".into(),
            v.storage_driver
                .clone()
                .unwrap_or_else(|| "podman's default".into()),
        ),
    ];
    for e in &v.settings {
        rows.push((
            e.key.clone(),
            format!("{}  ({})", e.value, e.source.display()),
        ));
    }
    if let Some(ms) = v.canary_ms {
        rows.push((
            "canary".into(),
            format!("{} in {ms} ms", if v.can_run { "ran" } else { "failed" }),
        ));
    }
    if let Some(d) = &v.diagnosis {
        rows.extend(diagnosis_rows(d));
    }
    if let Some(d) = &v.docker {
        let mut line = if d.answers {
            format!(
                "{} answers: Docker {} (API {}), storage driver {}",
                d.url,
                d.server_version.as_deref().unwrap_or("?"),
                d.api_version.as_deref().unwrap_or("?"),
                d.storage_driver.as_deref().unwrap_or("?")
            )
        } else {
            format!("{} does not answer", d.url)
        };
        match (d.can_run, d.canary_ms) {
            (Some(true), Some(ms)) => {
                let _ = write!(line, "; a container ran in {ms} ms");
            }
            (Some(false), _) => line.push_str("; a container could not run"),
            _ => {}
        }
        if let Some(e) = &d.error {
            let _ = write!(line, "\n{e}");
        }
        rows.push(("docker".into(), line));
    }
    rows.extend(
        v.warnings
            .iter()
            .map(|w| ("warning".to_string(), w.clone())),
    );
    s.push_str(&table(&rows));
    s
}

/// `podstack up` as text: one row per service, then each failure on one screen.
pub fn up(r: &crate::stack::up::Report) -> String {
    use crate::stack::up::Action;
    let mut s = String::new();
    let head = match (r.ready(), r.warm) {
        (true, true) => format!(
            "podstack up: {}: every service already up (warm: no engine call)",
            r.project
        ),
        (true, false) => format!("podstack up: {}: every service is ready", r.project),
        (false, _) => format!("podstack up: {}: NOT READY", r.project),
    };
    let _ = writeln!(s, "{head} ({} ms)", r.elapsed_ms);
    let rows: Vec<(String, String)> = r
        .services
        .iter()
        .map(|sv| {
            let what = match sv.action {
                Action::Kept => "kept",
                Action::Restarted => "restarted",
                Action::Recreated => "recreated",
                Action::Created => "created",
                Action::Skipped => "not started",
            };
            let state = if sv.ready {
                match sv.ready_ms {
                    Some(ms) if !r.warm => format!("ready after {:.2} s", ms as f64 / 1000.0),
                    _ => "ready".to_string(),
                }
            } else {
                "not ready".to_string()
            };
            let ports = ports(&sv.ports);
            (
                sv.name.clone(),
                format!("{state} ({what}, {}{ports})", sv.container),
            )
        })
        .collect();
    s.push_str(&table(&rows));
    for f in &r.failures {
        let mut rows = vec![
            ("failed".to_string(), f.service.clone()),
            ("why".into(), f.reason.clone()),
        ];
        if let Some(e) = &f.probe_error {
            rows.push(("last probe".into(), e.clone()));
        }
        if let Some(st) = &f.state {
            rows.push((
                "container".into(),
                match f.exit_code {
                    Some(c) => format!("{st}, exit code {c}"),
                    None => st.clone(),
                },
            ));
        }
        if !f.logs.is_empty() {
            rows.push(("last logs".into(), f.logs.join("\n")));
        }
        rows.push((
            "next".into(),
            format!(
                "podstack logs {} shows more; podstack status shows every service",
                f.service
            ),
        ));
        s.push_str(&table(&rows));
    }
    s
}

/// `, 127.0.0.1:5433,5434` for a service's ports (empty without ports).
fn ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(", 127.0.0.1:{}", list.join(","))
}

/// `podstack status` as text.
pub fn status(st: &crate::stack::cmd::Status) -> String {
    let mut s = format!("podstack status: {} ({})\n", st.project, st.file.display());
    let rows: Vec<(String, String)> = st
        .services
        .iter()
        .map(|sv| {
            let mut v = sv.state.clone();
            if let Some(a) = sv.age_s {
                let _ = write!(v, ", up {a} s");
            }
            v.push_str(&ports(&sv.ports));
            if let Some(e) = &sv.error {
                let _ = write!(v, "\n{e}");
            }
            (sv.name.clone(), v)
        })
        .collect();
    s.push_str(&table(&rows));
    s
}

/// `podstack config` as text.
pub fn config(c: &crate::stack::cmd::Config) -> String {
    let mut s = format!("podstack config: {} ({})\n", c.project, c.file.display());
    let mut rows: Vec<(String, String)> = vec![
        ("engine".into(), format!("{}: {}", c.engine, c.engine_why)),
        ("network".into(), format!("{}: {}", c.mode, c.mode_why)),
    ];
    for sv in &c.services {
        let mut v = format!("{} as {}", sv.image, sv.container);
        let _ = write!(v, "\nnetworks: {}", sv.networks.join(", "));
        if !sv.aliases.is_empty() {
            let _ = write!(v, " (also named {})", sv.aliases.join(", "));
        }
        if !sv.ports.is_empty() {
            let _ = write!(v, "\nports: {}", sv.ports.join(", "));
        }
        if let Some(ep) = &sv.entrypoint {
            let _ = write!(v, "\nentrypoint: {}", ep.join(" "));
        }
        if !sv.command.is_empty() {
            let _ = write!(v, "\ncommand: {}", sv.command.join(" "));
        }
        if !sv.volumes.is_empty() {
            let _ = write!(v, "\nvolumes: {}", sv.volumes.join(", "));
        }
        for (k, val) in &sv.env {
            let _ = write!(v, "\n{k}={val}");
        }
        if !sv.depends_on.is_empty() {
            let _ = write!(v, "\nafter: {}", sv.depends_on.join(", "));
        }
        if !sv.options.is_empty() {
            let _ = write!(v, "\noptions: {}", sv.options.join(" "));
        }
        if sv.job {
            v.push_str("\njob: ready when it exits 0");
        }
        rows.push((sv.name.clone(), v));
    }
    s.push_str(&table(&rows));
    s.push_str("variables:\n");
    let vars: Vec<(String, String)> = c
        .vars
        .iter()
        .map(|(k, v)| (format!("${{{k}}}"), v.clone()))
        .collect();
    s.push_str(&table(&vars));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_never_pass_terminal_escapes() {
        let t = table(&[("error".into(), "red \u{1b}[31m\u{7}x".into())]);
        assert_eq!(t, "  error  red \u{fffd}[31m\u{fffd}x\n");
    }

    #[test]
    fn table_aligns_labels_and_continuation_lines() {
        let t = table(&[
            ("a".into(), "1".into()),
            ("long label".into(), "x\ny".into()),
        ]);
        assert_eq!(t, "  a           1\n  long label  x\n              y\n");
    }

    #[test]
    fn facts_text_has_one_row_per_fact() {
        let f = crate::plan::tests::vm_root();
        let t = facts(&f);
        for label in [
            "gvisor", "vm", "rootless", "cgroup", "rlimits", "podman", "sockets", "storage",
        ] {
            assert!(
                t.lines().any(|l| l.trim_start().starts_with(label)),
                "{label} missing in\n{t}"
            );
        }
        assert!(t.contains("firecracker"));
        assert!(t.contains("hybrid"));
    }
}
