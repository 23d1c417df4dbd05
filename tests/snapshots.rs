//! Whole outputs as snapshots (temporary paths filtered), so any change to
//! what a person or a machine reads shows up in review, not just the bits a
//! substring check happens to look at.

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::Sandbox;
use serde_json::Value;

/// Runs `f` with the sandbox's folder shown as `[SANDBOX]`.
fn filtered(sb: &Sandbox, f: impl FnOnce()) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(
        &regex_escape(&sb.path("").display().to_string()),
        "[SANDBOX]/",
    );
    settings.bind(f);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[test]
fn help() {
    let sb = Sandbox::plain();
    let r = sb.podstack(&["--help"]);
    assert!(r.ok());
    insta::assert_snapshot!("help", r.stdout);
}

#[test]
fn configure_refuses_a_file_podman_cannot_read() {
    let sb = Sandbox::plain();
    sb.write_stock();
    sb.write(
        &sb.containers_conf(),
        "# mine\n[engine]\nruntime = \"runc\"\nevents_logger = { kind = \"file\",\n  path = \"/x\" }\n",
    );
    let r = sb.podstack(&["configure", "--no-canary"]);
    assert_eq!(r.code, 2);
    filtered(&sb, || insta::assert_snapshot!("refused_toml_11", r.stderr));
    let j = sb.podstack(&["configure", "--no-canary", "--json"]);
    filtered(&sb, || {
        insta::assert_snapshot!("refused_toml_11_json", j.stdout)
    });
}

/// The shape of a JSON document: every value replaced by its type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

#[test]
fn detect_json_schema() {
    let sb = Sandbox::plain();
    // The sandbox's own storage: the machine's podman store (present or
    // not) must not change the shape.
    sb.write_stock();
    let r = sb.podstack(&["detect", "--json"]);
    assert!(r.ok(), "{}", r.all());
    let mut doc: Value = serde_json::from_str(&r.stdout).unwrap();
    // Fields whose type depends on the machine (found or not, limited or not).
    for k in ["podman", "docker", "user", "pid_max", "kernel"] {
        doc[k] = Value::Null;
    }
    doc["rlimits"] = Value::Null;
    doc["sockets"] = Value::Null;
    doc["storage"]["graphroot_fs"] = Value::Null;
    doc["storage"]["driver"] = Value::Null;
    insta::assert_snapshot!(
        "detect_schema",
        serde_json::to_string_pretty(&shape(&doc)).unwrap()
    );
}
