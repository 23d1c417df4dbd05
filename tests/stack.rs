//! `podstack up/down/status/logs` against real podman, rootful and rootless:
//! services made of the podstack binary (its demo image, built by a build
//! command), real probes, real re-runs, concurrent runs, kill -9, failures.

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Run, Sandbox, free_port, json, project_of};
use serde_json::Value;

/// The demo image under a name of this test's, made by the build command.
fn image_lines(sb: &Sandbox) -> (String, String) {
    let image = "localhost/podstack-test-service:1".to_string();
    let build = format!("'{}' __demo-image {image}", sb.bin.display());
    (image, build)
}

/// A service serving `kind` (http or tcp) on `port`.
fn service(sb: &Sandbox, name: &str, kind: &str, port: u16, extra: &str) -> String {
    let (image, build) = image_lines(sb);
    let ready = if kind == "http" {
        format!("{{ http = \"http://127.0.0.1:{port}/\" }}")
    } else {
        format!("{{ tcp = \"127.0.0.1:{port}\" }}")
    };
    format!(
        "[services.{name}]\nimage = \"{image}\"\nbuild = \"{}\"\ncommand = [\"__serve\", \"{kind}\", \"127.0.0.1:{port}\"]\nports = [{port}]\nready = {ready}\ntimeout = \"20s\"\n{extra}\n",
        build.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn write_stack(sb: &Sandbox, text: &str) {
    sb.write(&sb.path("podstack.toml"), text);
}

/// The sandbox's containers: name -> (id, started at).
fn containers(sb: &Sandbox) -> Vec<(String, String, String)> {
    let r = sb.podman(&["ps", "-a", "--format", "{{.Names}} {{.ID}} {{.State}}"]);
    assert!(r.ok(), "{}", r.all());
    let mut v: Vec<(String, String, String)> = r
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                w.next()?.to_string(),
                w.next()?.to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

fn started_at(sb: &Sandbox, name: &str) -> String {
    sb.podman(&["inspect", "--format", "{{.State.StartedAt}}", name])
        .stdout
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_demo_runs_rootful_then_rootless() {
    let _ports = common::demo_ports_lock();
    for sb in [Sandbox::rootful(), Sandbox::rootless()]
        .into_iter()
        .flatten()
    {
        sb.write_stock();
        let up = sb.podstack(&["demo", "up"]);
        assert!(up.ok(), "{}", up.all());
        assert!(
            up.stdout.contains("every service is ready"),
            "{}",
            up.stdout
        );
        assert!(http_get(47080).ends_with("hello from the podstack demo\n"));
        let warm = sb.podstack(&["demo", "up"]);
        assert!(
            warm.stdout.contains("warm: no engine call"),
            "{}",
            warm.all()
        );
        let status = json(&sb.podstack(&["demo", "status", "--json"]));
        let states: Vec<&str> = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["ready", "ready"], "{status:#}");
        let down = sb.podstack(&["demo", "down"]);
        assert!(down.ok(), "{}", down.all());
        assert!(containers(&sb).is_empty());
        let gone = sb.podstack(&["demo", "status"]);
        assert_eq!(gone.code, 1, "{}", gone.all());
    }
}

#[test]
fn a_rerun_keeps_everything_and_a_changed_service_alone_is_recreated() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let (a, b, c) = (free_port(), free_port(), free_port());
    let stack = |c_env: &str| {
        format!(
            "{}{}{}",
            service(&sb, "a", "http", a, ""),
            service(&sb, "b", "tcp", b, "depends_on = [\"a\"]"),
            service(&sb, "c", "tcp", c, c_env)
        )
    };
    write_stack(&sb, &stack(""));
    let first = sb.podstack(&["up"]);
    assert!(first.ok(), "{}", first.all());
    assert!(
        first
            .stderr
            .contains("checking that podman can run containers here"),
        "{}",
        first.all()
    );
    let before = containers(&sb);
    assert_eq!(before.len(), 3, "{before:?}");
    let started: Vec<String> = before.iter().map(|(n, _, _)| started_at(&sb, n)).collect();

    // The warm path: no podman call at all (a podman that would log every
    // call and fail is first on PATH), same containers, same start times.
    let calls = sb.path("podman-calls.log");
    let fake = sb.path("fakebin");
    fs_err::create_dir_all(&fake).unwrap();
    fs_err::write(
        fake.join("podman"),
        format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", calls.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(fake.join("podman"))
        .status()
        .unwrap();
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        fake.display()
    );
    let warm = sb.run_with(
        &sb.bin.display().to_string(),
        &["up", "--json"],
        &[("PATH", &path)],
    );
    assert!(warm.ok(), "{}", warm.all());
    assert_eq!(json(&warm)["warm"], true);
    assert!(
        !calls.exists(),
        "the warm path called podman: {}",
        sb.read(&calls)
    );
    assert_eq!(containers(&sb), before);
    let again: Vec<String> = before.iter().map(|(n, _, _)| started_at(&sb, n)).collect();
    assert_eq!(again, started);

    // A container stopped behind podstack's back is caught and started again.
    let p = project_of(&sb);
    assert!(sb.podman(&["stop", "-t", "0", &format!("{p}-b")]).ok());
    let healed = json(&sb.podstack(&["up", "--json"]));
    assert_eq!(healed["warm"], false);
    let action = |r: &Value, n: &str| {
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["action"]
            .clone()
    };
    assert_eq!(action(&healed, "b"), "restarted", "{healed:#}");
    assert_eq!(action(&healed, "a"), "kept");

    // One service's definition changes: only it is recreated.
    write_stack(&sb, &stack("env = { LEVEL = \"debug\" }"));
    let changed = sb.podstack(&["up", "--json"]);
    assert!(changed.ok(), "{}", changed.all());
    // The proof recorded by the first run still holds: no canary this time.
    assert!(
        !changed.stderr.contains("checking that podman can run"),
        "{}",
        changed.all()
    );
    let r = json(&changed);
    assert_eq!(action(&r, "a"), "kept");
    assert_eq!(action(&r, "b"), "kept");
    assert_eq!(action(&r, "c"), "recreated");
    let after = containers(&sb);
    assert_eq!(after.len(), 3);
    let id = |list: &[(String, String, String)], n: &str| {
        list.iter()
            .find(|(name, _, _)| name.ends_with(n))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(id(&after, "-a"), id(&before, "-a"));
    assert_ne!(id(&after, "-c"), id(&before, "-c"));
}

#[test]
fn eight_concurrent_ups_make_one_stack() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let (a, b) = (free_port(), free_port());
    write_stack(
        &sb,
        &format!(
            "{}{}",
            service(&sb, "a", "http", a, ""),
            service(&sb, "b", "tcp", b, "depends_on = [\"a\"]")
        ),
    );
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| sb.podstack(&["up"]))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &runs {
        assert!(r.ok(), "{}", r.all());
    }
    let list = containers(&sb);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .all(|(_, _, state)| state == "Up" || state == "running"),
        "{list:?}"
    );
}

#[test]
fn kill_9_during_up_then_up_completes_and_keeps_the_volume() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let (a, b) = (free_port(), free_port());
    let p = project_of(&sb);
    let vol = format!("{p}_data");
    write_stack(
        &sb,
        &format!(
            "{}{}",
            service(&sb, "a", "http", a, &format!("volumes = [\"{vol}:/data\"]")),
            service(&sb, "b", "tcp", b, "depends_on = [\"a\"]")
        ),
    );
    assert!(sb.podman(&["volume", "create", &vol]).ok());
    let mount = sb
        .podman(&["volume", "inspect", "--format", "{{.Mountpoint}}", &vol])
        .stdout
        .trim()
        .to_string();
    fs_err::write(std::path::Path::new(&mount).join("keep.txt"), "data").unwrap();
    let mut child = common::spawn(
        std::process::Command::new(&sb.bin)
            .arg("up")
            .env_clear()
            .envs(sb.env())
            .current_dir(sb.path(""))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let up = sb.podstack(&["up"]);
    assert!(up.ok(), "{}", up.all());
    let list = containers(&sb);
    assert_eq!(list.len(), 2, "no duplicates: {list:?}");
    assert_eq!(
        fs_err::read_to_string(std::path::Path::new(&mount).join("keep.txt")).unwrap(),
        "data"
    );
    let down = sb.podstack(&["down"]);
    assert!(down.ok(), "{}", down.all());
    assert!(
        sb.podman(&["volume", "exists", &vol]).ok(),
        "down keeps volumes"
    );
    // The volume was made here, before podstack: even --volumes keeps it
    // (and says so); only volumes `up` made go.
    let down = sb.podstack(&["down", "--volumes"]);
    assert!(down.ok(), "{}", down.all());
    assert!(
        sb.podman(&["volume", "exists", &vol]).ok(),
        "--volumes removed a volume podstack did not make"
    );
    assert!(
        down.stdout.contains(&format!(
            "not made by podstack (external, or made before it labelled its own): {vol}"
        )),
        "{}",
        down.all()
    );
    assert!(sb.podman(&["volume", "rm", &vol]).ok());
}

#[test]
fn a_container_that_exits_at_start_is_reported_with_its_logs_at_once() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let (a, held) = (free_port(), free_port());
    write_stack(&sb, &service(&sb, "a", "http", a, ""));
    assert!(sb.podstack(&["up"]).ok());
    // `b` cannot listen (the address is not local), so its container exits at once.
    let bad = service(&sb, "b", "tcp", held, "")
        .replace(&format!("\"127.0.0.1:{held}\"]"), "\"192.0.2.1:9\"]");
    write_stack(&sb, &format!("{}{bad}", service(&sb, "a", "http", a, "")));
    let start = Instant::now();
    let r = sb.podstack(&["up"]);
    let took = start.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(took < Duration::from_secs(2), "took {took:?}:\n{}", r.all());
    assert!(
        r.stdout.contains("failed     b") && r.stdout.contains("exit code 2"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("cannot listen on 192.0.2.1:9"),
        "the container's own log line:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("podstack logs b"), "{}", r.stdout);
}

#[test]
fn a_port_held_by_another_process_is_named_before_anything_starts() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = free_port();
    write_stack(
        &sb,
        &format!(
            "{}{}",
            service(&sb, "a", "http", a, ""),
            service(&sb, "b", "tcp", port, "")
        ),
    );
    let r = sb.podstack(&["up"]);
    assert_eq!(r.code, 2, "{}", r.all());
    let want = format!("port {port} is held by pid {}", std::process::id());
    assert!(r.stderr.contains(&want), "no {want:?}:\n{}", r.stderr);
    assert!(containers(&sb).is_empty(), "nothing may start");
}

#[test]
fn stack_file_errors_and_name_clashes_start_nothing() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let a = free_port();
    write_stack(
        &sb,
        &format!(
            "{}\n[services.z]\nimage = \"x\"\ndepends_on = [\"zz\"]\n",
            service(&sb, "a", "http", a, "")
        ),
    );
    let r = sb.podstack(&["up"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("podstack.toml:") && r.stderr.contains("`zz`, which is not a service"),
        "{}",
        r.stderr
    );
    assert!(containers(&sb).is_empty());

    // A container of the same name that podstack did not make is never touched.
    write_stack(&sb, &service(&sb, "a", "http", a, ""));
    let name = format!("{}-a", project_of(&sb));
    sb.import_tiny_image("localhost/podstack-tiny");
    assert!(
        sb.podman(&["create", "--name", &name, "localhost/podstack-tiny", "true"])
            .ok()
    );
    let r = sb.podstack(&["up"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains(&format!(
            "a container named {name} exists and was not made by podstack"
        )),
        "{}",
        r.stderr
    );
    assert_eq!(containers(&sb).len(), 1);
    let d = sb.podstack(&["down"]);
    assert!(d.ok());
    assert_eq!(
        containers(&sb).len(),
        1,
        "down leaves containers without the project's label alone"
    );
}

#[test]
fn a_stack_runs_rootless_on_the_host_network() {
    let Some(sb) = Sandbox::rootless() else {
        return;
    };
    sb.write_stock();
    let (a, b) = (free_port(), free_port());
    write_stack(
        &sb,
        &format!(
            "{}{}",
            service(&sb, "a", "http", a, ""),
            service(&sb, "b", "tcp", b, "depends_on = [\"a\"]")
        ),
    );
    let up = sb.podstack(&["up"]);
    assert!(up.ok(), "{}", up.all());
    assert!(http_get(a).contains("200 OK"));
    let logs = sb.podstack(&["logs", "a", "--tail", "5"]);
    assert!(logs.ok(), "{}", logs.all());
    let warm = sb.podstack(&["up", "--json"]);
    assert_eq!(json(&warm)["warm"], true, "{}", warm.all());
    assert!(sb.podstack(&["down"]).ok());
}

/// Seed 000's stack from real images: PostgreSQL 15, a registry, and the
/// proxy (the podstack binary, made by its build command) that depends on both.
fn seed_000(sb: &Sandbox) {
    sb.write_stock();
    sb.use_test_images();
    let (pg, reg, proxy) = (free_port(), free_port(), free_port());
    let p = project_of(sb);
    let proxy_image = format!("localhost/{p}-registry-proxy:latest");
    let build = format!("'{}' __demo-image {proxy_image}", sb.bin.display());
    write_stack(
        sb,
        &format!(
            r#"[secrets]
pg_password = {{ generate = 32 }}

[services.postgres]
image = "localhost/podstack-test/postgres:15"
command = ["-c", "max_connections=200", "-p", "{pg}"]
env = {{ POSTGRES_PASSWORD = "${{secrets.pg_password}}", POSTGRES_DB = "eval_results" }}
volumes = ["{p}_eval_results_data:/var/lib/postgresql/data"]
ports = [{pg}]
ready = {{ postgres = "127.0.0.1:{pg}", user = "postgres", password = "${{secrets.pg_password}}", database = "eval_results" }}
timeout = "90s"

[services.registry]
image = "localhost/podstack-test/registry:2"
env = {{ REGISTRY_HTTP_ADDR = "127.0.0.1:{reg}" }}
ports = [{reg}]
ready = {{ http = "http://127.0.0.1:{reg}/v2/", status = [200, 401] }}

[services.registry-proxy]
image = "{proxy_image}"
build = "{}"
command = ["__serve", "tcp", "127.0.0.1:{proxy}"]
depends_on = ["postgres", "registry"]
ports = [{proxy}]
ready = {{ tcp = "127.0.0.1:{proxy}" }}
"#,
            build.replace('\\', "\\\\").replace('"', "\\\"")
        ),
    );
    let up = sb.podstack(&["up"]);
    assert!(up.ok(), "{}", up.all());
    // Right when up returns: max_connections is 200 over 127.0.0.1.
    let secrets: Value = serde_json::from_str(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/secrets.json"))),
    )
    .unwrap();
    let pw = secrets["pg_password"].as_str().unwrap();
    assert!(
        !up.stdout.contains(pw) && !up.stderr.contains(pw),
        "a secret was printed"
    );
    let psql = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.to_string(),
            "-U",
            "postgres",
            "-d",
            "eval_results",
            "-Atc",
            "SHOW max_connections",
        ])
        .env("PGPASSWORD", pw)
        .output()
        .expect("psql (postgresql-client)");
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let v2 = http_get_path(reg, "/v2/");
    let code = v2.split_whitespace().nth(1).unwrap_or("");
    assert!(code == "200" || code == "401", "{v2}");
    // The proxy started only once both were ready, and its image came from its build command.
    let line = |needle: &str| {
        up.stderr
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{}", up.stderr))
    };
    assert!(
        line("registry-proxy: started") > line("postgres: ready"),
        "{}",
        up.stderr
    );
    assert!(
        line("registry-proxy: started") > line("registry: ready"),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("is missing; building it with"),
        "{}",
        up.stderr
    );
    let warm = sb.podstack(&["up", "--json"]);
    assert_eq!(json(&warm)["warm"], true, "{}", warm.all());
    // A new password over a volume made with the old one: the probe says
    // exactly that, at once, instead of waiting out the timeout.
    let secrets_path = sb.path(&format!("state/podstack/stacks/{p}/secrets.json"));
    let changed = sb
        .read(&secrets_path)
        .replace(pw, "AnotherPasswordOfThirtyTwoChars0");
    sb.write(&secrets_path, &changed);
    let start = Instant::now();
    let wrong = sb.podstack(&["up"]);
    assert_eq!(wrong.code, 1, "{}", wrong.all());
    assert!(
        wrong.stdout.contains("refuses the password"),
        "{}",
        wrong.stdout
    );
    assert!(
        wrong.stdout.contains("initialised with another password"),
        "{}",
        wrong.stdout
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "it waited out the timeout"
    );
    assert!(sb.podstack(&["down", "--volumes"]).ok());
}

fn http_get_path(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn seed_000_runs_rootful() {
    if let Some(sb) = Sandbox::rootful() {
        seed_000(&sb);
    }
}

#[test]
fn seed_000_runs_rootless() {
    if let Some(sb) = Sandbox::rootless() {
        seed_000(&sb);
    }
}

#[test]
fn a_pull_is_retried_until_a_late_registry_answers() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    sb.use_test_images();
    assert!(sb.podstack(&["configure"]).ok());
    let (reg, svc) = (free_port(), free_port());
    let p = project_of(&sb);
    // A registry of the test's own, on loopback, without TLS: podman refuses
    // plain HTTP unless registries.conf marks it insecure, as a user would.
    let conf = sb.path("registries.conf");
    sb.write(
        &conf,
        &format!("[[registry]]\nlocation = \"127.0.0.1:{reg}\"\ninsecure = true\n"),
    );
    let conf = conf.display().to_string();
    let with_conf =
        |args: &[&str]| sb.run_with("podman", args, &[("CONTAINERS_REGISTRIES_CONF", &conf)]);
    let registry = format!("{p}-test-registry");
    let r = with_conf(&[
        "run",
        "-d",
        "--network=host",
        "--name",
        &registry,
        "-e",
        &format!("REGISTRY_HTTP_ADDR=127.0.0.1:{reg}"),
        "localhost/podstack-test/registry:2",
    ]);
    assert!(r.ok(), "{}", r.all());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", reg)).is_err() {
        assert!(Instant::now() < deadline, "the test registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // An image only the registry has.
    let remote = format!("127.0.0.1:{reg}/podstack/{p}:1");
    let made = sb.run_with(
        &sb.bin.display().to_string(),
        &["__demo-image", &remote],
        &[],
    );
    assert!(made.ok(), "{}", made.all());
    let pushed = with_conf(&["push", &remote]);
    assert!(pushed.ok(), "{}", pushed.all());
    assert!(with_conf(&["rmi", &remote]).ok());
    assert!(with_conf(&["stop", "-t", "0", &registry]).ok());
    write_stack(
        &sb,
        &format!(
            "[services.svc]\nimage = \"{remote}\"\ncommand = [\"__serve\", \"tcp\", \"127.0.0.1:{svc}\"]\nports = [{svc}]\nready = {{ tcp = \"127.0.0.1:{svc}\" }}\n"
        ),
    );
    // up starts while the registry is down; it comes back 12 s later (podman
    // itself retries a pull for a few seconds: the outage must outlast that).
    let up = std::thread::scope(|s| {
        let up = s.spawn(|| {
            sb.run_with(
                &sb.bin.display().to_string(),
                &["up"],
                &[("CONTAINERS_REGISTRIES_CONF", &conf)],
            )
        });
        std::thread::sleep(Duration::from_secs(12));
        assert!(with_conf(&["start", &registry]).ok());
        up.join().unwrap()
    });
    assert!(up.ok(), "{}", up.all());
    assert!(up.stderr.contains("pull failed"), "{}", up.stderr);
    assert!(up.stderr.contains("retrying in"), "{}", up.stderr);
    // An image that does not exist is not retried.
    write_stack(
        &sb,
        &format!("[services.svc2]\nimage = \"127.0.0.1:{reg}/podstack/nope:1\"\n"),
    );
    let start = Instant::now();
    let r = sb.run_with(
        &sb.bin.display().to_string(),
        &["up"],
        &[("CONTAINERS_REGISTRIES_CONF", &conf)],
    );
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("a retry would not help"), "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn init_writes_the_starter_once() {
    let sb = Sandbox::plain();
    let r = sb.podstack(&["init"]);
    assert!(r.ok(), "{}", r.all());
    let text = sb.read(&sb.path("podstack.toml"));
    assert!(text.contains("[services.registry-proxy]") && text.contains("max_connections=200"));
    let again = sb.podstack(&["init"]);
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    // The starter parses; nothing runs yet.
    let status = sb.podstack(&["status", "--json"]);
    assert_eq!(status.code, 1, "{}", status.all());
    let v = json(&status);
    assert_eq!(v["project"], "props");
    assert_eq!(v["services"].as_array().unwrap().len(), 3);
}

#[test]
fn a_stack_not_ready_within_up_timeout_gets_its_report_and_status_tells_the_truth() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let (a, b) = (free_port(), free_port());
    // `a` listens for TCP but its probe wants HTTP: it never gets ready.
    let never = service(&sb, "a", "tcp", a, "").replace(
        &format!("ready = {{ tcp = \"127.0.0.1:{a}\" }}"),
        &format!("ready = {{ http = \"http://127.0.0.1:{a}/\" }}"),
    );
    write_stack(
        &sb,
        &format!(
            "{never}{}",
            service(&sb, "b", "tcp", b, "depends_on = [\"a\"]")
        ),
    );
    // Podman configured and the image made first: the 3 s are the probes'.
    assert!(sb.podstack(&["configure"]).ok());
    let (image, _) = image_lines(&sb);
    assert!(sb.podstack(&["__demo-image", &image]).ok());
    let start = Instant::now();
    let r = sb.podstack(&["up", "--timeout", "3", "--json"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let v = json(&r);
    assert_eq!(v["failures"][0]["service"], "a", "{v:#}");
    assert!(
        v["failures"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--timeout"),
        "{v:#}"
    );
    assert!(v["failures"][0]["probe_error"].as_str().is_some(), "{v:#}");
    assert_eq!(v["failures"][0]["state"], "running", "{v:#}");
    let actions: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "skipped"], "{v:#}");
    let st = json(&sb.podstack(&["status", "--json"]));
    let states: Vec<&str> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "not started"], "{st:#}");
    // An empty stack file is not a stack that is up.
    write_stack(&sb, "");
    let empty = sb.podstack(&["up"]);
    assert_eq!(empty.code, 2, "{}", empty.all());
    assert!(
        empty.stderr.contains("declares no service"),
        "{}",
        empty.stderr
    );
}
