//! `podstack detect` on this machine, as the test user, and inside a real
//! gVisor sandbox (`runsc do`).

mod common;

use std::time::{Duration, Instant};

use common::{Run, Sandbox, have, in_ci, require};
use serde_json::Value;

fn json(run: &Run) -> Value {
    assert!(run.ok(), "{}", run.all());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// Runs `podstack ARGS` inside gVisor with the sandbox's environment.
fn in_gvisor(sb: &Sandbox, args: &[&str]) -> Option<Run> {
    if !require("runsc", have("runsc")) || !require("root", common::is_root()) {
        return None;
    }
    let mut argv: Vec<String> = vec![
        "--network=host".into(),
        "do".into(),
        "env".into(),
        "-i".into(),
    ];
    argv.extend(sb.env().into_iter().map(|(k, v)| format!("{k}={v}")));
    argv.push(sb.bin.display().to_string());
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // `timeout` guards the test against a hang; podstack's own deadlines should never need it.
    let mut full = vec!["120", "runsc"];
    full.extend(argv);
    Some(sb.run_with("timeout", &full, &[]))
}

#[test]
fn json_has_every_documented_field() {
    let sb = Sandbox::plain();
    let facts = json(&sb.podstack(&["detect", "--json"]));
    for key in [
        "schema",
        "kernel",
        "gvisor",
        "gvisor_markers",
        "vm",
        "container",
        "container_markers",
        "euid",
        "user",
        "rootless",
        "rootless_reasons",
        "subuid",
        "subgid",
        "systemd_pid1",
        "cgroup",
        "rlimits",
        "can_raise_rlimits",
        "pid_max",
        "dev_net_tun",
        "dev_fuse",
        "overlay_fs",
        "podman",
        "docker",
        "runtimes",
        "helpers",
        "sockets",
        "layout",
        "storage",
        "claude_code_remote",
        "ci",
    ] {
        assert!(facts.get(key).is_some(), "missing {key} in {facts:#}");
    }
    assert_eq!(facts["schema"], 1);
    assert_eq!(facts["gvisor"], false);
    // podstack inherits this process's limits: it must report exactly them.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let shown = |v: u64| {
        if v == nix::sys::resource::RLIM_INFINITY {
            Value::Null
        } else {
            Value::from(v)
        }
    };
    assert_eq!(facts["rlimits"]["nofile"]["soft"], shown(soft), "{facts:#}");
    assert_eq!(facts["rlimits"]["nofile"]["hard"], shown(hard), "{facts:#}");
    if common::is_root() {
        assert_eq!(facts["rootless"], false, "{facts:#}");
        assert_eq!(facts["euid"], 0);
    }
    // CI is set by the CI runner; the sandbox passes no CI variable, so this is false.
    assert_eq!(facts["ci"], false);
    let with_ci = sb.run_with(
        &sb.bin.display().to_string(),
        &["detect", "--json"],
        &[("CI", "true")],
    );
    assert_eq!(json(&with_ci)["ci"], true);
}

#[test]
fn this_machine_is_a_firecracker_vm_not_a_container() {
    let sb = Sandbox::plain();
    let facts = json(&sb.podstack(&["detect", "--json"]));
    let pid1 = fs_err::read("/proc/1/cmdline").unwrap_or_default();
    if pid1.windows(18).any(|w| w == b"--firecracker-init") {
        assert_eq!(facts["vm"], "firecracker");
        // These VMs carry a stale /.dockerenv from their image build.
        assert_eq!(facts["container"], "none", "{facts:#}");
    } else {
        assert!(!in_ci(), "CI machines are Firecracker VMs: {facts:#}");
    }
}

#[test]
fn rootless_is_true_for_the_test_user() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    let facts = json(&sb.podstack(&["detect", "--json"]));
    assert_eq!(facts["rootless"], true);
    assert_ne!(facts["euid"], 0);
    assert_eq!(facts["user"], common::test_user().as_str());
    assert!(
        facts["subuid"].as_array().is_some_and(|a| !a.is_empty()),
        "the test user has subuids: {facts:#}"
    );
    assert_eq!(
        facts["layout"]["containers_conf"],
        sb.containers_conf().display().to_string(),
        "CONTAINERS_CONF wins"
    );
}

#[test]
fn text_output_is_an_aligned_table() {
    let sb = Sandbox::plain();
    let run = sb.podstack(&["detect"]);
    assert!(run.ok(), "{}", run.all());
    let value_column: Vec<usize> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("    "))
        .map(|l| {
            let label_end = 2 + l[2..].find("  ").expect("two spaces after the label");
            label_end + l[label_end..].find(|c: char| c != ' ').expect("a value")
        })
        .collect();
    assert!(value_column.len() > 15, "{}", run.stdout);
    assert!(
        value_column.iter().all(|c| *c == value_column[0]),
        "misaligned:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("gvisor") && run.stdout.contains("cgroup"));
}

#[test]
fn deep_reports_versions() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let facts = json(&sb.podstack(&["detect", "--json", "--deep"]));
    let version = facts["podman"]["version"].as_str().unwrap_or("");
    assert!(
        version.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{facts:#}"
    );
    let shallow = json(&sb.podstack(&["detect", "--json"]));
    assert!(
        shallow["podman"]["version"].is_null(),
        "no podman call without --deep"
    );
}

#[test]
fn sockets_are_found_and_pinged() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    // A real podman API service on a socket of the sandbox's.
    let sock = sb.path("podman.sock");
    let url = format!("unix://{}", sock.display());
    let mut service = std::process::Command::new("podman")
        .args(["system", "service", "--time=0", &url])
        .env_clear()
        .envs(sb.env())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("podman system service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let facts = json(&sb.run_with(
        &sb.bin.display().to_string(),
        &["detect", "--json"],
        &[("CONTAINER_HOST", &url)],
    ));
    let _ = service.kill();
    let _ = service.wait();
    let sockets = facts["sockets"].as_array().expect("sockets");
    let ours = sockets
        .iter()
        .find(|s| s["url"] == url.as_str())
        .unwrap_or_else(|| panic!("{facts:#}"));
    assert_eq!(ours["answers"], true, "{ours}");
    assert_eq!(ours["source"], "CONTAINER_HOST");

    // The Docker daemon these machines run must show up too.
    let docker = sockets
        .iter()
        .find(|s| s["url"] == "unix:///var/run/docker.sock");
    if require(
        "a Docker daemon on /var/run/docker.sock",
        std::path::Path::new("/var/run/docker.sock").exists(),
    ) {
        assert_eq!(
            docker.expect("docker socket listed")["answers"],
            true,
            "{facts:#}"
        );
    }
}

#[test]
fn gvisor_is_detected_inside_runsc() {
    let sb = Sandbox::plain();
    let Some(run) = in_gvisor(&sb, &["detect", "--json"]) else {
        return;
    };
    let facts = json(&run);
    assert_eq!(facts["gvisor"], true, "{facts:#}");
    let markers = facts["gvisor_markers"].as_array().expect("markers");
    assert!(
        markers.iter().any(|m| m
            .as_str()
            .is_some_and(|m| m.contains("Jan 10 15:06:54 PST 2016"))),
        "{facts:#}"
    );
}

#[test]
fn gvisor_dry_run_plans_vfs_and_host_networking() {
    let sb = Sandbox::plain();
    sb.write_stock();
    let Some(run) = in_gvisor(&sb, &["configure", "--dry-run", "--json"]) else {
        return;
    };
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.all()));
    assert_eq!(report["storage"]["driver"], "vfs", "{report:#}");
    assert_eq!(report["network"], "host", "{report:#}");
    assert!(
        report["storage"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("gVisor")
    );
    // This runsc cannot nest containers: the dry run says so instead of claiming success.
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(
        report["canary"]["diagnosis"]["finding"]["kind"], "gvisor_nested",
        "{report:#}"
    );
    // Nothing written.
    assert!(!sb.read(&sb.storage_conf()).contains("vfs"));
}

#[test]
fn gvisor_doctor_explains_instead_of_hanging() {
    let sb = Sandbox::plain();
    sb.write_stock();
    let start = Instant::now();
    let Some(run) = in_gvisor(&sb, &["doctor", "--timeout", "60"]) else {
        return;
    };
    assert!(
        start.elapsed() < Duration::from_secs(100),
        "doctor took {:?}",
        start.elapsed()
    );
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(
        run.stdout.contains("containers cannot run here"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("inside gVisor"), "{}", run.stdout);
    assert!(
        run.stdout.contains("cause") && run.stdout.contains("gVisor"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("fix"), "{}", run.stdout);
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let sb = Sandbox::plain();
    for args in [["detect", ""], ["detect", "--json"]] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let mut child = common::spawn(
            std::process::Command::new(&sb.bin)
                .args(&args)
                .env_clear()
                .envs(sb.env())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped()),
        );
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
