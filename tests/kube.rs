//! `podstack kube`: the Pod output run for real by `podman kube play`, and
//! the cluster output checked against Kubernetes' OpenAPI schema.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Sandbox, free_port, project_of, require};

#[test]
fn the_pod_plays_on_podman_and_podstack_sees_it_ready() {
    let Some(sb) = Sandbox::rootful() else {
        return;
    };
    if !require(
        "catatonit (podman kube play's pause image)",
        std::path::Path::new("/usr/libexec/podman/catatonit").exists() || common::have("catatonit"),
    ) {
        return;
    }
    sb.write_stock();
    sb.use_test_images();
    let _serial = common::kube_play_lock();
    let (pg, reg, proxy) = (free_port(), free_port(), free_port());
    sb.write(
        &sb.path("podstack.toml"),
        &common::seed_000_toml(&sb, None, pg, reg, proxy),
    );
    let p = project_of(&sb);
    // The YAML written for people carries no secret.
    let yaml = sb.podstack(&["kube", "--mode", "pod", "-o", "pod.yaml"]);
    assert!(yaml.ok(), "{}", yaml.all());
    let text = sb.read(&sb.path("pod.yaml"));
    let secrets: serde_json::Value = serde_json::from_str(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/secrets.json"))),
    )
    .unwrap();
    let pw = secrets["pg_password"].as_str().unwrap().to_string();
    assert!(!text.contains(&pw), "a secret in the YAML:\n{text}");
    assert!(text.contains("secretKeyRef"), "{text}");
    let inline = sb.podstack(&["kube", "--inline-secrets"]);
    assert!(
        inline.stdout.contains(&pw) && inline.stdout.contains("kind: Secret"),
        "{}",
        inline.all()
    );

    let play = sb.podstack(&["kube", "--play"]);
    let cleanup = || {
        let _ = sb.podstack(&["kube", "--down"]);
        let _ = sb.podman(&["volume", "rm", "-f", &format!("{p}-eval-results-data")]);
        let _ = sb.podman(&["network", "rm", "podman-default-kube-network"]);
    };
    if !play.ok() {
        cleanup();
        panic!("{}", play.all());
    }
    assert!(play.stdout.contains("ready"), "{}", play.all());
    // postgres answers through the stack's own exports, with the file's
    // command line (max_connections 200).
    let env = sb.podstack(&["env", "--write", &sb.path("env.sh").display().to_string()]);
    assert!(env.ok(), "{}", env.all());
    let psql = sb.sh(". ./env.sh && psql -Atc 'SHOW max_connections'");
    // The proxy reached postgres by 127.0.0.1 inside the Pod.
    let ps = sb.podman(&["pod", "ps", "--format", "{{.Name}} {{.Status}}"]);
    // A second play finds the volume made by the first (its claim is left out).
    let down = sb.podstack(&["kube", "--down"]);
    let again = sb.podstack(&["kube", "--play"]);
    let again_ok = again.ok();
    cleanup();
    assert_eq!(psql.stdout.trim(), "200", "{}", psql.all());
    assert!(ps.stdout.contains(&format!("{p} Running")), "{}", ps.all());
    assert!(down.ok(), "{}", down.all());
    assert!(again_ok, "{}", again.all());
    let left = sb.podman(&["pod", "ps", "-q"]);
    assert!(left.stdout.trim().is_empty(), "{}", left.all());
}

/// The cluster output against Kubernetes' own OpenAPI schema (offline: the
/// kubernetes-validate package bundles the schemas of each release).
#[test]
fn the_cluster_output_validates_against_the_kubernetes_schema() {
    let validator = std::env::var("PODSTACK_KUBE_VALIDATE").unwrap_or_else(|_| {
        "/var/cache/podstack-test/kube-validate/bin/kubernetes-validate".into()
    });
    if !require(
        "kubernetes-validate (tests/kube/fetch)",
        std::path::Path::new(&validator).exists(),
    ) {
        return;
    }
    let sb = Sandbox::plain();
    sb.write(
        &sb.path("podstack.toml"),
        &common::seed_000_toml(&sb, None, 5433, 5050, 5051),
    );
    for (mode, file) in [("cluster", "cluster.yaml"), ("pod", "pod.yaml")] {
        let r = sb.podstack(&["kube", "--mode", mode, "--inline-secrets", "-o", file]);
        assert!(r.ok(), "{}", r.all());
        let v = sb.run_with(&validator, &["--strict", "-k", "1.37.0", file], &[]);
        assert!(v.ok(), "{mode}: {}\n{}", v.all(), sb.read(&sb.path(file)));
    }
    let text = sb.read(&sb.path("cluster.yaml"));
    for want in [
        "kind: Deployment",
        "kind: Service",
        "kind: NetworkPolicy",
        "kind: PersistentVolumeClaim",
        // Other services find postgres by its Service's name.
        "value: postgres",
        "podstack.io/net-agents",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
    // The registry admits only the internal network: agents cannot reach it.
    let reg_policy = text
        .split("---\n")
        .find(|d| d.contains("kind: NetworkPolicy") && d.contains("name: registry-ingress"))
        .expect("the registry's policy");
    assert!(
        reg_policy.contains("podstack.io/net-internal") && !reg_policy.contains("net-agents"),
        "{reg_policy}"
    );
}

/// A compose file played as a Pod: its healthcheck runs in the Pod's
/// container, a remapped port holds, a job runs first as an init
/// container; a second play is refused before anything changes.
#[test]
fn a_compose_file_plays_with_its_healthchecks_and_jobs() {
    let Some(sb) = Sandbox::rootful() else {
        return;
    };
    sb.write_stock();
    sb.use_test_images();
    let _serial = common::kube_play_lock();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(
        &sb.path("compose.yaml"),
        &format!(
            r#"services:
  db:
    image: localhost/podstack-test/postgres:15
    environment: {{ POSTGRES_PASSWORD: pw }}
    ports: ["{port}:5432"]
    volumes: [data:/var/lib/postgresql/data]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]
      interval: 30s
  migrate:
    image: localhost/podstack-test/redis:7
    entrypoint: ["sh", "-c", "echo migrated"]
  app:
    image: localhost/podstack-test/redis:7
    command: ["sleep", "600"]
    depends_on:
      migrate: {{ condition: service_completed_successfully }}
volumes:
  data:
"#
        ),
    );
    let play = sb.podstack(&["kube", "--play"]);
    let cleanup = || {
        let _ = sb.podstack(&["kube", "--down"]);
        let _ = sb.podman(&["volume", "rm", "-f", &format!("{p}-data")]);
        let _ = sb.podman(&["network", "rm", "podman-default-kube-network"]);
    };
    if !play.ok() {
        cleanup();
        panic!("{}", play.all());
    }
    // Right when it returns, postgres answers on the remapped host port.
    let psql = sb.run_with(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-Atc",
            "select 1",
        ],
        &[("PGPASSWORD", "pw")],
    );
    let again = sb.podstack(&["kube", "--play"]);
    let down = sb.podstack(&["kube", "--down"]);
    let down2 = sb.podstack(&["kube", "--down"]);
    cleanup();
    assert_eq!(psql.stdout.trim(), "1", "{}\n{}", psql.all(), play.all());
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("runs already"), "{}", again.all());
    assert!(
        down.ok() && down.stdout.contains("removed the pod"),
        "{}",
        down.all()
    );
    assert!(down2.stdout.contains("no pod"), "{}", down2.all());
}
