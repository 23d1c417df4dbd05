//! Compose files in: discovery, errors with file:line, the third-party
//! fixtures in tests/compose/fixtures (kept byte for byte, sources in
//! SOURCES.md), and real runs of compose files on podman and Docker.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Sandbox, docker_here, free_port, json, project_of};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compose/fixtures");

fn fixture(name: &str) -> String {
    fs_err::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture")
}

/// The nearest folder with a stack file wins, and podstack.toml wins over a
/// compose file in the same folder.
#[test]
fn discovery_prefers_the_nearest_folder_then_podstack_toml() {
    let sb = Sandbox::plain();
    sb.write(
        &sb.path("compose.yaml"),
        "services:\n  top:\n    image: busybox\n",
    );
    sb.write(
        &sb.path("sub/docker-compose.yml"),
        "services:\n  sub:\n    image: busybox\n",
    );
    fs_err::create_dir_all(sb.path("sub/deeper")).unwrap();
    let bin = sb.bin.display().to_string();
    let config = |dir: &str| {
        sb.run_with(
            "/bin/sh",
            &[
                "-c",
                &format!("cd '{}' && '{bin}' status --json", sb.path(dir).display()),
            ],
            &[],
        )
    };
    let file_of = |dir: &str| -> String {
        let r = config(dir);
        let v = json(&r);
        v["file"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", r.all()))
            .to_string()
    };
    assert!(file_of("sub/deeper").ends_with("sub/docker-compose.yml"));
    assert!(file_of("").ends_with("/compose.yaml"));
    sb.write(
        &sb.path("sub/podstack.toml"),
        "[services.toml]\nimage = \"busybox\"\n",
    );
    assert!(file_of("sub/deeper").ends_with("sub/podstack.toml"));
}

/// YAML errors carry line and column; unsupported keys are all listed with
/// file:line:column, and nothing starts (exit 2).
#[test]
fn bad_compose_files_are_named_at_their_lines() {
    let sb = Sandbox::plain();
    let f = sb.path("compose.yaml");
    sb.write(&f, "services:\n  db:\n    image: [postgres\n");
    let r = sb.podstack(&["up", "-f", "compose.yaml"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("compose.yaml:4:1: not valid YAML"),
        "{}",
        r.all()
    );

    sb.write(
        &f,
        "services:\n  db:\n    image: postgres\n    privileged: true\n    deploy:\n      replicas: 2\n    depends_on:\n      cache:\n        condition: service_ready\nsecrets:\n  pw:\n    file: ./pw\n",
    );
    let r = sb.podstack(&["up", "-f", "compose.yaml"]);
    assert_eq!(r.code, 2, "{}", r.all());
    for want in [
        "compose.yaml:10:1: `secrets` in the top level is not supported",
        "compose.yaml:4:5: `privileged` in service db is not supported",
        "compose.yaml:5:5: `deploy` in service db is not supported",
        "compose.yaml:9:20: service db depends_on cache: condition service_ready is not one of",
        "which is not an active service",
    ] {
        assert!(r.stderr.contains(want), "{want:?} missing in\n{}", r.all());
    }
    // Problems found by the stack file's own checks still point into the
    // compose file.
    sb.write(
        &f,
        "services:\n  a:\n    image: x\n    ports: [\"5000:5000\"]\n  b:\n    image: y\n    ports: [\"5000:5000\"]\n",
    );
    let r = sb.podstack(&["config"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("compose.yaml:7:"), "{}", r.all());
    // A required variable that is not set.
    sb.write(&f, "services:\n  a:\n    image: \"x:${TAG:?set TAG}\"\n");
    let r = sb.podstack(&["config"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains("compose.yaml:3:12: service a image: the variable TAG must be set: set TAG"),
        "{}",
        r.all()
    );
}

/// `${VAR:-default}`, `.env` beside the file (the caller's environment
/// wins), env_file, the list forms, anchors and merge keys.
#[test]
fn variables_env_files_and_merge_keys_follow_the_specification() {
    let sb = Sandbox::plain();
    sb.write(&sb.path(".env"), "DB_PORT=15432\nTAG=16\n# comment\n");
    sb.write(&sb.path("db.env"), "FROM_FILE=1\nOVERRIDDEN=file\n");
    sb.write(
        &sb.path("compose.yaml"),
        r#"version: "3.9"
x-base: &base
  restart: unless-stopped
  labels: { team: qa }
services:
  db:
    <<: *base
    image: "postgres:${TAG}"
    env_file: [db.env]
    environment:
      - OVERRIDDEN=env
      - LITERAL=$$HOME
      - PASSED
    ports: ["${DB_PORT:-5432}:5432"]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U postgres"]
      interval: 30s
      retries: 5
      start_period: 10s
  migrate:
    image: "postgres:${TAG}"
    command: psql -c "select 1"
    profiles: [tools]
  app:
    image: app
    depends_on:
      db: { condition: service_healthy }
"#,
    );
    let r = sb.run_with(
        &sb.bin.display().to_string(),
        &["import", "-o", "-"],
        &[("TAG", "17"), ("PASSED", "from-caller")],
    );
    assert!(r.ok(), "{}", r.all());
    let t = &r.stdout;
    for want in [
        r#"image = "postgres:17""#,
        r#"FROM_FILE = "1""#,
        r#"OVERRIDDEN = "env""#,
        r#"LITERAL = "$HOME""#,
        r#"PASSED = "from-caller""#,
        r#"ports = ["15432:5432"]"#,
        r#"restart = "unless-stopped""#,
        r#"labels = { "team" = "qa" }"#,
        r#"ready = { container = ["/bin/sh", "-c", "pg_isready -U postgres"] }"#,
        // 10 s + 5 x 30 s: as long as compose would wait before calling it unhealthy.
        r#"timeout = "160s""#,
        r#"depends_on = { db = "ready" }"#,
    ] {
        assert!(t.contains(want), "{want:?} missing in\n{t}");
    }
    assert!(!t.contains("[services.migrate]"), "{t}");
    assert!(r.stderr.contains("service migrate left out"), "{}", r.all());
    let with_profile = sb.run_with(
        &sb.bin.display().to_string(),
        &["import", "-o", "-"],
        &[("COMPOSE_PROFILES", "tools")],
    );
    assert!(
        with_profile.stdout.contains("[services.migrate]"),
        "{}",
        with_profile.all()
    );
    assert!(
        with_profile
            .stdout
            .contains(r#"command = ["psql", "-c", "select 1"]"#),
        "{}",
        with_profile.all()
    );
    // import writes podstack.toml beside the file, and then leaves it alone.
    let w = sb.podstack(&["import"]);
    assert!(w.ok(), "{}", w.all());
    assert!(sb.path("podstack.toml").is_file());
    let again = sb.podstack(&["import"]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("--force"), "{}", again.all());
}

/// The third-party fixtures: each converts, or is refused with exactly the
/// keys podstack does not support.
#[test]
fn third_party_fixtures_convert_or_are_refused_precisely() {
    let sb = Sandbox::plain();
    // A fixture, and the lines its import has (Ok) or the problems listed (Err).
    type Case<'a> = (&'a str, Result<&'a [&'a str], &'a [&'a str]>);
    let cases: &[Case<'_>] = &[
        (
            "umami.yaml",
            Ok(&[
                "[services.db]",
                "ready = { container = [\"/bin/sh\", \"-c\", \"pg_isready -U $${POSTGRES_USER} -d $${POSTGRES_DB}\"], check_timeout = \"5s\" }",
                "depends_on = { db = \"ready\" }",
                "init = true",
            ]),
        ),
        (
            "outline-dev.yaml",
            Ok(&[
                "ports = [\"127.0.0.1:6379:6379\"]",
                "user = \"postgres:postgres\"",
            ]),
        ),
        (
            "compose-e2e-restart-depends-on.yaml",
            Ok(&[
                "depends_on = { nginx = \"ready\" }",
                "stop_signal = \"SIGTERM\"",
                "labels = { \"TEST\" = \"test\" }",
            ]),
        ),
        (
            "awesome-nginx-golang-postgres.yaml",
            Err(&[
                ":46:1: `secrets` in the top level",
                ":6:5: `secrets` in service backend",
                ":16:5: `secrets` in service db",
            ]),
        ),
        (
            "compose-e2e-logs-deploy.yaml",
            Err(&[":9:5: `deploy` in service hello"]),
        ),
        (
            "compose-e2e-volume-test.yaml",
            Err(&[
                ":27:1: `configs` in the top level",
                ":31:1: `secrets` in the top level",
                ":17:5: `configs` in service nginx2",
                ":19:5: `secrets` in service nginx2",
            ]),
        ),
        (
            "docker-cli-e2e-registry.yaml",
            Err(&[":8:7: `privileged` in service engine"]),
        ),
        (
            "redash-dev.yaml",
            // Its anchored env_file, merged into three services.
            Err(&[
                ":11:7: service server env_file",
                ":11:7: service scheduler env_file",
                ":11:7: service worker env_file",
            ]),
        ),
    ];
    for (name, want) in cases {
        sb.write(&sb.path(&format!("fx/{name}")), &fixture(name));
        let r = sb.podstack(&["import", &format!("fx/{name}"), "-o", "-"]);
        match want {
            Ok(lines) => {
                assert!(r.ok(), "{name}: {}", r.all());
                for l in *lines {
                    assert!(
                        r.stdout.contains(l),
                        "{name}: {l:?} missing in\n{}",
                        r.stdout
                    );
                }
            }
            Err(problems) => {
                assert_eq!(r.code, 2, "{name}: {}", r.all());
                let listed = r.stderr.lines().filter(|l| l.starts_with("  ")).count();
                // Exactly these problems, each listed once.
                assert_eq!(listed, problems.len(), "{name}: {}", r.stderr);
                for p in *problems {
                    assert!(
                        r.stderr.contains(p),
                        "{name}: {p:?} missing in\n{}",
                        r.stderr
                    );
                }
            }
        }
    }
}

/// Seed 000 as a compose file (podstack's own settings under `x-podstack`),
/// its import, and the hand-written podstack.toml: one stack, the same
/// containers (the second and third are warm), the same exports.
fn seed_000_three_ways(sb: &Sandbox, engine: &str) {
    let (pg, reg, proxy) = (free_port(), free_port(), free_port());
    let p = project_of(sb);
    let image = format!("localhost/{p}-registry-proxy:latest");
    let build = format!("'{}' __demo-image {image}", sb.bin.display());
    let compose = format!(
        r#"name: {p}
x-podstack:
  engine: {engine}
  secrets:
    pg_password: {{ generate: 32 }}
  env:
    PGHOST: 127.0.0.1
    PGPORT: ${{services.postgres.host_port}}
    PGUSER: postgres
    PGPASSWORD: ${{secrets.pg_password}}
    PGDATABASE: eval_results
    AGENT_PGHOST: ${{services.postgres.host}}
    PROPS_DOCKER_NETWORK: ${{net.name.agents}}
    REGISTRY_PROXY: http://${{services.registry-proxy.host}}:${{services.registry-proxy.port}}
services:
  postgres:
    image: localhost/podstack-test/postgres:15
    command: ["-c", "max_connections=200", "-p", "{pg}"]
    environment:
      POSTGRES_PASSWORD: ${{secrets.pg_password}}
      POSTGRES_DB: eval_results
    volumes: [eval_results_data:/var/lib/postgresql/data]
    networks: [internal, agents]
    ports: ["{pg}:{pg}"]
    x-podstack:
      ready: {{ postgres: "127.0.0.1:{pg}", user: postgres, password: "${{secrets.pg_password}}", database: eval_results }}
      timeout: 90s
  registry:
    image: localhost/podstack-test/registry:2
    environment:
      REGISTRY_HTTP_ADDR: "${{net.bind}}:{reg}"
    networks: [internal]
    ports: ["{reg}:{reg}"]
    x-podstack:
      ready: {{ http: "http://127.0.0.1:{reg}/v2/", status: [200, 401] }}
  registry-proxy:
    image: {image}
    command: ["__serve", "tcp", "${{net.bind}}:{proxy}"]
    environment:
      PGHOST: ${{services.postgres.host}}
      PGPORT: ${{services.postgres.port}}
      PGPASSWORD: ${{secrets.pg_password}}
      UPSTREAM: http://${{services.registry.host}}:${{services.registry.port}}
    depends_on:
      postgres: {{ condition: service_healthy }}
      registry: {{ condition: service_healthy }}
    networks: [internal, agents]
    ports: ["{proxy}:{proxy}"]
    x-podstack:
      build: "{build_yaml}"
      ready: {{ tcp: "127.0.0.1:{proxy}" }}
volumes:
  eval_results_data:
networks:
  internal:
    name: {p}-internal
  agents:
    name: {p}-agents
"#,
        build_yaml = build.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let hand = common::seed_000_toml(sb, Some(engine), pg, reg, proxy);
    sb.write(&sb.path("compose.yaml"), &compose);
    sb.write(&sb.path("hand/podstack.toml"), &hand);

    // 1. The compose file, found on its own.
    let up = sb.podstack(&["up", "--json"]);
    assert!(up.ok(), "{}", up.all());
    let v = json(&up);
    assert_eq!(v["warm"], false, "{}", up.all());
    assert!(
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ready"] == true),
        "{}",
        up.all()
    );
    let exports = |name: &str, args: &[&str]| -> String {
        let path = sb.path(name).display().to_string();
        let mut a = vec!["env", "--write", &path];
        a.extend_from_slice(args);
        let r = sb.podstack(&a);
        assert!(r.ok(), "{}", r.all());
        sb.read(&sb.path(name))
    };
    let env1 = exports("env1.sh", &[]);
    // The exports reach postgres, and it runs with the compose file's command.
    let psql = sb.sh(". ./env1.sh && psql -Atc 'SHOW max_connections' -U postgres");
    assert_eq!(psql.stdout.trim(), "200", "{}", psql.all());

    // 2. Its import: the same definition, so the stack is already up.
    let imp = sb.podstack(&["import"]);
    assert!(imp.ok(), "{}", imp.all());
    let up2 = sb.podstack(&["up", "--json"]);
    assert_eq!(
        json(&up2)["warm"],
        true,
        "{}\n{}",
        up2.all(),
        sb.read(&sb.path("podstack.toml"))
    );
    assert_eq!(exports("env2.sh", &[]), env1);

    // 3. The hand-written file: the same again.
    let up3 = sb.podstack(&["up", "-f", "hand/podstack.toml", "--json"]);
    assert_eq!(json(&up3)["warm"], true, "{}", up3.all());
    assert_eq!(exports("env3.sh", &["-f", "hand/podstack.toml"]), env1);

    let down = sb.podstack(&["down", "--volumes"]);
    assert!(down.ok(), "{}", down.all());
}

#[test]
fn seed_000_from_compose_runs_like_the_stack_file_rootful() {
    if let Some(sb) = Sandbox::rootful() {
        sb.write_stock();
        sb.use_test_images();
        seed_000_three_ways(&sb, "podman");
    }
}

#[test]
fn seed_000_from_compose_runs_like_the_stack_file_on_docker() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    seed_000_three_ways(&sb, "docker");
}

#[test]
fn seed_000_from_compose_runs_like_the_stack_file_rootless() {
    if let Some(sb) = Sandbox::rootless() {
        sb.write_stock();
        sb.use_test_images();
        seed_000_three_ways(&sb, "podman");
    }
}

/// Tags a test image under public names in the sandbox's own store (in one
/// call: podman 4.3 copying a read-only store's image keeps only the names
/// of the last tag).
fn tag(sb: &Sandbox, from: &str, to: &[&str]) {
    let mut args = vec!["tag", from];
    args.extend_from_slice(to);
    let r = sb.podman(&args);
    assert!(r.ok(), "{}", r.all());
}

/// Third-party files run unchanged where their images can be had here:
/// look-alikes tagged with the public names (no registry is reachable).
#[test]
fn third_party_fixtures_run_unchanged_rootful() {
    let Some(sb) = Sandbox::rootful() else {
        return;
    };
    sb.write_stock();
    sb.use_test_images();
    tag(
        &sb,
        "localhost/podstack-test/postgres:15",
        &[
            "docker.io/library/postgres:15-alpine",
            "docker.io/library/postgres:latest",
        ],
    );
    tag(
        &sb,
        "localhost/podstack-test/redis:7",
        &["docker.io/library/redis:latest"],
    );
    let ports_free = [5432u16, 6379]
        .iter()
        .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
    assert!(
        ports_free,
        "outline's file publishes 127.0.0.1:5432 and :6379, which are taken here"
    );

    // umami: its database, whose healthcheck (pg_isready in the container,
    // `$${POSTGRES_USER}` left to the container's shell) gates readiness.
    sb.write(&sb.path("umami/compose.yaml"), &fixture("umami.yaml"));
    let up = sb.podstack(&["up", "-f", "umami/compose.yaml", "db"]);
    assert!(up.ok(), "{}", up.all());
    let isready = sb.podman(&[
        "exec",
        "umami-db",
        "pg_isready",
        "-U",
        "umami",
        "-d",
        "umami",
    ]);
    assert!(isready.ok(), "ready before postgres was: {}", isready.all());
    assert!(
        sb.podstack(&["down", "-f", "umami/compose.yaml", "--volumes"])
            .ok()
    );

    // outline's development stack: redis and postgres as users of their own.
    sb.write(
        &sb.path("outline/docker-compose.yml"),
        &fixture("outline-dev.yaml"),
    );
    let bin = sb.bin.display().to_string();
    let up = sb.run_with(
        "/bin/sh",
        &["-c", &format!("cd outline && '{bin}' up --json")],
        &[],
    );
    assert!(up.ok(), "{}", up.all());
    let ping = sb.run_with(
        "bash",
        &[
            "-c",
            "exec 3<>/dev/tcp/127.0.0.1/6379; printf 'PING\\r\\n' >&3; head -c 7 <&3",
        ],
        &[],
    );
    assert!(ping.stdout.contains("+PONG"), "{}", ping.all());
    let psql = sb.run_with(
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "user",
            "-d",
            "outline",
            "-Atc",
            "select current_user",
        ],
        &[("PGPASSWORD", "pass")],
    );
    assert_eq!(psql.stdout.trim(), "user", "{}", psql.all());
    let who = sb.podman(&["exec", "outline-redis", "id", "-un"]);
    assert_eq!(who.stdout.trim(), "redis", "{}", who.all());
    assert!(
        sb.run_with(
            "/bin/sh",
            &["-c", &format!("cd outline && '{bin}' down --volumes")],
            &[]
        )
        .ok()
    );
}

/// Healthchecks run in the container for real (a failing one fails the
/// service, naming the command), and a job others wait to complete runs
/// to its end first.
#[test]
fn healthchecks_and_jobs_rootful() {
    let Some(sb) = Sandbox::rootful() else {
        return;
    };
    sb.write_stock();
    sb.use_test_images();
    healthchecks_and_jobs(&sb, "podman");
}

#[test]
fn healthchecks_and_jobs_on_docker() {
    if docker_here() {
        healthchecks_and_jobs(&Sandbox::plain(), "docker");
    }
}

fn healthchecks_and_jobs(sb: &Sandbox, engine: &str) {
    let p = project_of(sb);
    sb.write(
        &sb.path("compose.yaml"),
        &format!(
            "x-podstack:\n  engine: {engine}\n{}",
            r#"services:
  db:
    image: localhost/podstack-test/postgres:15
    environment: { POSTGRES_PASSWORD: pw }
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 30s
  migrate:
    image: localhost/podstack-test/postgres:15
    entrypoint: ["/bin/sh", "-c", "sleep 1; echo migrated as one argument"]
    depends_on:
      db: { condition: service_healthy }
  app:
    image: localhost/podstack-test/postgres:15
    entrypoint: ["sleep", "600"]
    volumes: ["precious:/precious", "scratch:/scratch"]
    depends_on:
      migrate: { condition: service_completed_successfully }
  broken:
    image: localhost/podstack-test/postgres:15
    entrypoint: ["sleep", "600"]
    healthcheck:
      test: ["CMD-SHELL", "echo checked-inside >&2; exit 3"]
    x-podstack: { timeout: 3s }
volumes:
  precious:
    external: true
    name: {p}-precious
  scratch:
"#
        )
        .replace("{p}", &p),
    );
    // A volume of the user's, which the file names as external.
    let engine_bin = if engine == "docker" {
        "docker"
    } else {
        "podman"
    };
    let made = sb.run_with(
        engine_bin,
        &["volume", "create", &format!("{p}-precious")],
        &[],
    );
    assert!(made.ok(), "{}", made.all());
    let up = sb.podstack(&["up", "db", "app"]);
    assert!(up.ok(), "{}", up.all());
    let line = |needle: &str| {
        up.stderr
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", up.stderr))
    };
    // A 30 s interval is no 30 s wait: checked at once, polled fast. The
    // job's entrypoint (sh -c "...") ran as written.
    assert!(
        line("migrate: started") > line("db: ready"),
        "{}",
        up.stderr
    );
    assert!(
        line("app: started") > line("migrate: completed"),
        "{}",
        up.stderr
    );
    let status = sb.podstack(&["status", "--json"]);
    // The same stack without the service that was never started: up, a
    // completed job included (exit 0).
    let text = sb.read(&sb.path("compose.yaml"));
    let cut = text.find("  broken:").unwrap();
    let rest = &text[cut..];
    let end = rest.find("\nvolumes:").unwrap();
    sb.write(
        &sb.path("up-only.yaml"),
        &format!("{}{}", &text[..cut], &rest[end + 1..]),
    );
    let only = sb.podstack(&["status", "-f", "up-only.yaml"]);
    assert!(only.ok(), "{}", only.all());
    let v = json(&status);
    let state = |n: &str| {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("migrate"), "completed", "{}", status.all());
    let logs = sb.run_with(engine_bin, &["logs", &format!("{p}-migrate")], &[]);
    assert!(logs.ok(), "{}", logs.all());
    assert!(
        logs.stdout.contains("migrated as one argument"),
        "{}",
        logs.all()
    );
    // The stack is up: a completed job does not make the next up cold.
    let warm = sb.podstack(&["up", "db", "app", "--json"]);
    assert_eq!(json(&warm)["warm"], true, "{}", warm.all());
    let bad = sb.podstack(&["up", "broken"]);
    assert_eq!(bad.code, 1, "{}", bad.all());
    assert!(
        bad.stdout.contains("exit 3") || bad.stdout.contains("exit status 3"),
        "{}",
        bad.all()
    );
    assert!(
        bad.stdout.contains(&format!("{p}-broken")) || bad.stdout.contains("broken"),
        "{}",
        bad.all()
    );
    // down --volumes removes the volumes podstack made, never the user's.
    let down = sb.podstack(&["down", "--volumes"]);
    assert!(down.ok(), "{}", down.all());
    let vol = |n: &str| sb.run_with(engine_bin, &["volume", "inspect", n], &[]).ok();
    assert!(
        vol(&format!("{p}-precious")),
        "the external volume was removed: {}",
        down.all()
    );
    assert!(
        !vol(&format!("{p}_scratch")),
        "the stack's own volume stayed: {}",
        down.all()
    );
    assert!(
        down.stdout.contains("not made by podstack"),
        "{}",
        down.all()
    );
    let _ = sb.run_with(engine_bin, &["volume", "rm", &format!("{p}-precious")], &[]);
}

/// Found by an outside attack: each of these once misbehaved.
#[test]
fn hostile_compose_files_and_outputs() {
    let sb = Sandbox::plain();
    let f = sb.path("compose.yaml");
    let bin = sb.bin.display().to_string();
    // A secret on a healthcheck's command line is refused (kube printed it).
    sb.write(
        &f,
        "x-podstack: {secrets: {pw: {generate: 16}}}\nservices:\n  db:\n    image: postgres\n    environment: {P: \"${secrets.pw}\"}\n    healthcheck: {test: [\"CMD\", \"check\", \"${secrets.pw}\"]}\n",
    );
    let r = sb.podstack(&["kube"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("compose.yaml:6:") && r.stderr.contains("filled in only in `env`"),
        "{}",
        r.all()
    );
    // An image that reads as a flag.
    sb.write(&f, "services:\n  a:\n    image: \"--privileged\"\n");
    assert_eq!(sb.podstack(&["import", "-o", "-"]).code, 2);
    // A small file whose aliases expand to gigabytes.
    let bomb = format!(
        "x-a: &a \"{}\"\nx-b: [{}]\nservices:\n  a:\n    image: x\n",
        "z".repeat(1_000_000),
        vec!["*a"; 5000].join(",")
    );
    sb.write(&f, &bomb);
    let r = sb.podstack(&["import", "-o", "-"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("expands to more than"), "{}", r.all());
    // Outputs: never a device, never the input, an existing file only
    // with --force, and of concurrent writers one wins.
    sb.write(&f, "x-podstack: {secrets: {pw: {generate: 16}}}\nservices:\n  a:\n    image: x\n    environment: {P: \"${secrets.pw}\", Q: \"$$(A)\"}\n    volumes: [\".:/app\"]\n    ports: [\"8080:80\"]\n  1db:\n    image: y\n");
    let r = sb.run_with(
        "/bin/sh",
        &["-c", "mkfifo fifo && exec \"$0\" kube -o fifo", &bin],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("a FIFO, not a regular file"),
        "{}",
        r.all()
    );
    let r = sb.podstack(&["kube", "-o", "compose.yaml", "--force"]);
    assert!(
        r.stderr.contains("is the file being converted"),
        "{}",
        r.all()
    );
    let r = sb.podstack(&["import", "-o", "compose.yaml", "--force"]);
    assert!(
        r.stderr.contains("is the file being converted"),
        "{}",
        r.all()
    );
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    std::process::Command::new(&sb.bin)
                        .args(["import", "-o", "race.toml"])
                        .current_dir(sb.path(""))
                        .env("HOME", sb.path("home"))
                        .env("XDG_STATE_HOME", sb.path("state"))
                        .status()
                        .unwrap()
                        .success()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(wins, 1, "one import may create race.toml");
    // The YAML: secrets referenced, `$` kept literal, `.` a host path, a
    // Pod's host port onto another container port, a Service name that
    // starts with a letter; 0600 when it holds the secrets.
    let pod = sb.podstack(&["kube"]);
    assert!(pod.ok(), "{}", pod.all());
    assert!(pod.stdout.contains("value: \"$$(A)\""), "{}", pod.stdout);
    assert!(
        pod.stdout.contains(&format!(
            "path: {}",
            sb.path("").display().to_string().trim_end_matches('/')
        )),
        "{}",
        pod.stdout
    );
    assert!(
        pod.stdout
            .contains("containerPort: 80\n          hostPort: 8080"),
        "{}",
        pod.stdout
    );
    let cluster = sb.podstack(&["kube", "--mode", "cluster"]);
    assert!(cluster.stdout.contains("name: s-1db"), "{}", cluster.stdout);
    let w = sb.podstack(&["kube", "--inline-secrets", "-o", "k.yaml"]);
    assert!(w.ok(), "{}", w.all());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &fs_err::metadata(sb.path("k.yaml")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Strings where compose takes booleans; a bare env_file name passes the
    // caller's value on.
    sb.write(&sb.path("e.env"), "FROM_CALLER\nLITERAL=\"\\$HOME\"\n");
    sb.write(&f, "services:\n  a:\n    image: x\n    env_file: e.env\n    volumes:\n      - {type: bind, source: /etc, target: /x, read_only: \"${RO:-true}\"}\n");
    let r = sb.run_with(&bin, &["import", "-o", "-"], &[("FROM_CALLER", "yes")]);
    assert!(r.ok(), "{}", r.all());
    for want in [
        "\"/etc:/x:ro\"",
        "FROM_CALLER = \"yes\"",
        "LITERAL = \"$HOME\"",
    ] {
        assert!(r.stdout.contains(want), "{want} missing in\n{}", r.stdout);
    }
}

/// `build:` (context, dockerfile, args) runs the engine's build, in the
/// compose file's folder, when the image is missing.
#[test]
fn build_runs_the_engines_build_rootful() {
    let Some(sb) = Sandbox::rootful() else {
        return;
    };
    sb.write_stock();
    sb.use_test_images();
    let p = project_of(&sb);
    sb.write(
        &sb.path("app/build.Dockerfile"),
        "FROM localhost/podstack-test/redis:7\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n",
    );
    sb.write(
        &sb.path("compose.yaml"),
        "services:\n  app:\n    build:\n      context: ./app\n      dockerfile: build.Dockerfile\n      args:\n        GREETING: hello from the build\n    command: [\"sleep\", \"600\"]\n",
    );
    let up = sb.podstack(&["up"]);
    assert!(up.ok(), "{}", up.all());
    assert!(
        up.stderr.contains("is missing; building it with"),
        "{}",
        up.all()
    );
    let got = sb.podman(&["exec", &format!("{p}-app"), "cat", "/greeting"]);
    assert_eq!(got.stdout.trim(), "hello from the build", "{}", got.all());
    assert!(sb.podstack(&["down"]).ok());
    let _ = sb.podman(&["rmi", "-f", &format!("{p}-app")]);
}
