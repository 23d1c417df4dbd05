//! The project's shell scripts pass shellcheck.

mod common;

use std::process::Command;

use common::{have, require};

#[test]
fn scripts_pass_shellcheck() {
    if !require("shellcheck", have("shellcheck")) {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("shellcheck")
        .args([
            "install.sh",
            ".ci/run",
            "bench/run",
            "bench/stack",
            "tests/run",
            "tests/images/build",
            "tests/claude/fetch",
            "tests/kube/fetch",
            "hooks/claude-cloud-setup.sh",
        ])
        .current_dir(root)
        .output()
        .expect("shellcheck");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
