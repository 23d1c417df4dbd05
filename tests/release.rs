//! The release binary, built and installed by install.sh exactly as a user
//! does it: static, within the size budget, installed idempotently.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Sandbox, have, is_root, require};

/// The size budget of the release binary.
const BUDGET: u64 = 3_500_000;

fn install(prefix: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("sh")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .args(extra)
        .output()
        .expect("sh install.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn install_builds_a_small_static_binary_and_is_idempotent() {
    let prefix = tempfile::tempdir().unwrap();
    let (ok, log) = install(prefix.path(), &[]);
    assert!(ok, "install.sh failed:\n{log}");
    let bin = prefix.path().join("bin/podstack");
    assert!(log.contains("installed"), "{log}");

    let size = fs_err::metadata(&bin).unwrap().len();
    println!("release binary: {size} bytes (budget {BUDGET})");
    assert!(
        size <= BUDGET,
        "{size} bytes is over the {BUDGET}-byte budget"
    );

    let (ok, log) = install(prefix.path(), &[]);
    assert!(ok, "{log}");
    assert!(
        log.contains("already up to date"),
        "second install must not rewrite: {log}"
    );

    // Static: it runs in a root file system that holds nothing else.
    if require("root (for chroot)", is_root()) {
        let jail = tempfile::tempdir().unwrap();
        fs_err::copy(&bin, jail.path().join("podstack")).unwrap();
        let out = Command::new("/usr/sbin/chroot")
            .arg(jail.path())
            .args(["/podstack", "--version"])
            .env_clear()
            .output()
            .expect("chroot");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "not static? {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("podstack "), "{stdout}");
    }
}

#[test]
fn with_podman_installs_nothing_when_everything_is_there() {
    if !require("podman", have("podman")) {
        return;
    }
    let prefix = tempfile::tempdir().unwrap();
    let (ok, log) = install(prefix.path(), &["--with-podman"]);
    assert!(ok, "{log}");
    assert!(log.contains("already installed"), "{log}");
}

#[test]
fn unknown_options_are_refused() {
    let prefix = tempfile::tempdir().unwrap();
    let (ok, log) = install(prefix.path(), &["--frobnicate"]);
    assert!(!ok);
    assert!(log.contains("unknown option '--frobnicate'"), "{log}");
}

#[test]
fn the_readme_first_command_ends_with_the_demo() {
    // `sh install.sh --with-podman --run`, in a sandbox: podman's files and
    // the state folder are the sandbox's, the install prefix too.
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let _ports = common::demo_ports_lock();
    let prefix = sb.path("prefix").display().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/install.sh");
    // The sandbox's HOME is its own: cargo and its crate cache are named.
    let env = common::install_env(&prefix);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = sb.run_with(
        "sh",
        &[script, "--prefix", &prefix, "--with-podman", "--run"],
        &env,
    );
    assert!(r.ok(), "{}", r.all());
    for want in [
        "podstack configure: podman configured",
        "podstack doctor: containers can run here",
        "podstack up: podstack-demo: every service is ready",
        "podstack status: podstack-demo",
        "hello from the podstack demo",
        "podstack down: podstack-demo: removed 2 container(s)",
    ] {
        assert!(r.stdout.contains(want), "no {want:?} in:\n{}", r.all());
    }
}
