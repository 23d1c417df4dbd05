//! One stack file on two engines and in two network modes, for real: seed
//! 000's stack (PostgreSQL 15, a registry, the proxy) on the machine's
//! Docker daemon and on podman (rootful: host and isolated; rootless: host),
//! reached from the host through the exported addresses and from an agent
//! container on the agents network, which must not reach the registry in
//! isolated mode. Also: the engine chosen when podman cannot run, a dockerd
//! podstack starts itself, re-runs and `down` leaving others' things alone.

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Run, Sandbox, docker_here, free_port, json, project_of, require};
use serde_json::Value;

/// Makes the test images present in Docker (tests/images/build --docker:
/// a no-op when .ci/run already did it).
fn docker_test_images() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/build");
    let out = Command::new("sh")
        .args([
            script,
            "--store",
            "/var/cache/podstack-test/store-root",
            "--driver",
            "overlay",
            "--docker",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tests/images/build --docker failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn docker(args: &[&str]) -> Run {
    Command::new("docker").args(args).output().unwrap().into()
}

/// Runs the engine's command line in the sandbox (podman with the
/// sandbox's configuration; Docker as the machine has it).
fn engine_cmd(sb: &Sandbox, engine: &str, args: &[&str]) -> Run {
    match engine {
        "docker" => docker(args),
        _ => sb.podman(args),
    }
}

/// Removes what a test made, even when it failed half-way.
struct Cleanup<'a> {
    sb: &'a Sandbox,
    engine: &'static str,
    extra: Vec<Vec<String>>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self
            .sb
            .podstack(&["--engine", self.engine, "down", "--volumes"]);
        for args in &self.extra {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = engine_cmd(self.sb, self.engine, &args);
        }
    }
}

/// Seed 000's stack in `network` mode: postgres and the proxy on both
/// networks, the registry on the internal one only.
fn seed_file(sb: &Sandbox, network: &str, pg: u16, reg: u16, proxy: u16) -> String {
    let p = project_of(sb);
    let proxy_image = format!("localhost/{p}-registry-proxy:latest");
    let build = format!("'{}' __demo-image {proxy_image}", sb.bin.display());
    format!(
        r#"[stack]
network = "{network}"

[secrets]
pg_password = {{ generate = 32 }}

[networks.internal]
[networks.agents]

[env]
PGHOST = "${{services.postgres.host}}"

[services.postgres]
image = "localhost/podstack-test/postgres:15"
command = ["-c", "max_connections=200", "-p", "{pg}"]
env = {{ POSTGRES_PASSWORD = "${{secrets.pg_password}}", POSTGRES_DB = "eval_results" }}
volumes = ["{p}_data:/var/lib/postgresql/data"]
networks = ["internal", "agents"]
aliases = ["{p}-pg"]
ports = [{pg}]
ready = {{ postgres = "127.0.0.1:{pg}", user = "postgres", password = "${{secrets.pg_password}}", database = "eval_results" }}
timeout = "90s"

[services.registry]
image = "localhost/podstack-test/registry:2"
env = {{ REGISTRY_HTTP_ADDR = "${{net.bind}}:{reg}" }}
networks = ["internal"]
ports = [{reg}]
ready = {{ http = "http://127.0.0.1:{reg}/v2/", status = [200, 401] }}

[services.registry-proxy]
image = "{proxy_image}"
build = "{}"
command = ["__serve", "tcp", "${{net.bind}}:{proxy}"]
env = {{ UPSTREAM = "http://${{services.registry.host}}:${{services.registry.port}}", PGHOST = "${{services.postgres.host}}" }}
depends_on = ["postgres", "registry"]
networks = ["internal", "agents"]
ports = [{proxy}]
ready = {{ tcp = "127.0.0.1:{proxy}" }}
"#,
        build.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// The names of the containers and networks carrying the project's label.
fn labelled(sb: &Sandbox, engine: &str, p: &str) -> (Vec<String>, Vec<String>) {
    let filter = format!("label=io.podstack.project={p}");
    let lines = |r: Run| -> Vec<String> {
        assert!(r.ok(), "{}", r.all());
        let mut v: Vec<String> = r.stdout.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    (
        lines(engine_cmd(
            sb,
            engine,
            &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        )),
        lines(engine_cmd(
            sb,
            engine,
            &[
                "network",
                "ls",
                "--filter",
                &filter,
                "--format",
                "{{.Name}}",
            ],
        )),
    )
}

/// The agent's check, run in a container on the agents network: postgres
/// and the proxy answer; in isolated mode the registry, by name and by IP,
/// does not.
const AGENT: &str = r#"
set -u
[ "$(psql -h "$PGHOST" -p "$PGPORT" -U postgres -d eval_results -Atc 'select 1')" = 1 ] || { echo "agent: postgres unreachable at $PGHOST:$PGPORT"; exit 10; }
timeout 5 bash -c 'exec 3<>/dev/tcp/$PROXY_HOST/$PROXY_PORT' || { echo "agent: proxy unreachable at $PROXY_HOST:$PROXY_PORT"; exit 11; }
if [ "$MODE" = isolated ]; then
    if timeout 4 bash -c 'exec 3<>/dev/tcp/$REG_HOST/$REG_PORT' 2>/dev/null; then echo "agent: registry reachable by name"; exit 12; fi
    if timeout 4 bash -c 'exec 3<>/dev/tcp/$REG_IP/$REG_PORT' 2>/dev/null; then echo "agent: registry reachable at $REG_IP"; exit 13; fi
fi
echo agent-ok
"#;

/// Brings seed 000's stack up on `engine` in `network` mode and checks it
/// from the host and from an agent container; then re-run and `down`.
fn seed_000_on(sb: &Sandbox, engine: &'static str, network: &str, expect_mode: &str) {
    sb.write_stock();
    if engine == "podman" {
        sb.use_test_images();
    } else {
        docker_test_images();
    }
    let p = project_of(sb);
    let (pg, reg, proxy) = (free_port(), free_port(), free_port());
    sb.write(
        &sb.path("podstack.toml"),
        &seed_file(sb, network, pg, reg, proxy),
    );
    let proxy_image = format!("localhost/{p}-registry-proxy:latest");
    let mine_net = format!("{p}-agents-mine");
    let mine_ctr = format!("{p}-postgres-mine");
    let _cleanup = Cleanup {
        sb,
        engine,
        extra: vec![
            vec!["rm".into(), "-f".into(), mine_ctr.clone()],
            vec!["network".into(), "rm".into(), mine_net.clone()],
            vec!["rmi".into(), proxy_image.clone()],
        ],
    };

    let up = sb.podstack(&["--engine", engine, "up"]);
    assert!(up.ok(), "{}", up.all());
    let config = sb.podstack(&["--engine", engine, "config", "--json"]);
    assert!(config.ok(), "{}", config.all());
    let c = json(&config);
    assert_eq!(c["engine"], engine, "{}", config.stdout);
    assert_eq!(c["mode"], expect_mode, "{}", config.stdout);
    let var = |k: &str| {
        c["vars"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k}"))
            .to_string()
    };
    assert_eq!(var("services.postgres.host_port"), pg.to_string());
    if expect_mode == "isolated" {
        assert_eq!(var("services.postgres.host"), format!("{p}-pg"));
        assert_eq!(var("net.name.agents"), format!("{p}-agents"));
    } else {
        assert_eq!(var("services.postgres.host"), "127.0.0.1");
        assert_eq!(var("net.name.agents"), "host");
    }
    let secrets: Value = serde_json::from_str(
        &sb.read(&sb.path(&format!("state/podstack/stacks/{p}/secrets.json"))),
    )
    .unwrap();
    let pw = secrets["pg_password"].as_str().unwrap().to_string();
    assert!(!config.stdout.contains(&pw), "config printed a secret");

    // From the host: the host-side variables reach postgres and the registry.
    let psql = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &var("services.postgres.host_port"),
            "-U",
            "postgres",
            "-d",
            "eval_results",
            "-Atc",
            "SHOW max_connections",
        ])
        .env("PGPASSWORD", &pw)
        .output()
        .expect("psql (postgresql-client)");
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let curl = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!(
                "http://127.0.0.1:{}/v2/",
                var("services.registry.host_port")
            ),
        ])
        .output()
        .expect("curl");
    let code = String::from_utf8_lossy(&curl.stdout).to_string();
    assert!(code == "200" || code == "401", "registry answered {code}");

    // From an agent container on the agents network, with the variables.
    let reg_ip = engine_cmd(
        sb,
        engine,
        &[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            &format!("{p}-registry"),
        ],
    );
    assert!(reg_ip.ok(), "{}", reg_ip.all());
    let reg_ip = reg_ip
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("127.0.0.1")
        .to_string();
    let agent_env = [
        ("PGHOST", var("services.postgres.host")),
        ("PGPORT", var("services.postgres.port")),
        ("PGPASSWORD", pw.clone()),
        ("PROXY_HOST", var("services.registry-proxy.host")),
        ("PROXY_PORT", var("services.registry-proxy.port")),
        ("REG_HOST", var("services.registry.host")),
        ("REG_PORT", var("services.registry.port")),
        ("REG_IP", reg_ip),
        ("MODE", var("net.mode")),
    ];
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        var("net.name.agents"),
    ];
    for (k, v) in &agent_env {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    args.extend([
        "--entrypoint".into(),
        "bash".into(),
        "localhost/podstack-test/postgres:15".into(),
        "-c".into(),
        AGENT.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Twice: the first agent's exit tears down its network setup, which on
    // netavark 1.4 takes podman's own isolation rule with it; the second
    // finds the registry still out of reach.
    for _ in 0..2 {
        let agent = engine_cmd(sb, engine, &args);
        assert!(
            agent.ok() && agent.stdout.contains("agent-ok"),
            "{}",
            agent.all()
        );
    }

    // A re-run keeps everything: no second container or network.
    let again = sb.podstack(&["--engine", engine, "up", "--json"]);
    assert!(again.ok(), "{}", again.all());
    assert_eq!(json(&again)["warm"], true, "{}", again.all());
    let (ctrs, nets) = labelled(sb, engine, &p);
    assert_eq!(ctrs.len(), 3, "{ctrs:?}");
    assert_eq!(
        nets.len(),
        if expect_mode == "isolated" { 2 } else { 0 },
        "{nets:?}"
    );

    // A cold re-run (the record gone) adopts what runs, makes nothing twice.
    fs_err::remove_file(sb.path(&format!("state/podstack/stacks/{p}/record.json"))).unwrap();
    let adopt = sb.podstack(&["--engine", engine, "up", "--json"]);
    assert!(adopt.ok(), "{}", adopt.all());
    let adopted = json(&adopt);
    let actions: Vec<&str> = adopted["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["kept", "kept", "kept"], "{}", adopt.all());
    assert_eq!(labelled(sb, engine, &p), (ctrs, nets));

    // The same file switched to host mode: recreated on the host network,
    // and the networks it no longer has are gone.
    if expect_mode == "isolated" {
        let text = sb.read(&sb.path("podstack.toml"));
        sb.write(
            &sb.path("podstack.toml"),
            &text.replacen(&format!("network = \"{network}\""), "network = \"host\"", 1),
        );
        let st = sb.podstack(&["status", "--json"]);
        let states: Vec<String> = json(&st)["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect();
        assert!(states.iter().all(|s| s == "outdated"), "{}", st.all());
        // The exports follow the file at once, before the stack is recreated.
        let exported = sb.podstack(&["--engine", engine, "env", "--format", "json"]);
        assert_eq!(json(&exported)["PGHOST"], "127.0.0.1", "{}", exported.all());
        let host = sb.podstack(&["--engine", engine, "up", "--json"]);
        assert!(host.ok(), "{}", host.all());
        assert_eq!(json(&host)["mode"], "host", "{}", host.all());
        let (ctrs, nets) = labelled(sb, engine, &p);
        assert_eq!((ctrs.len(), nets.len()), (3, 0), "{ctrs:?} {nets:?}");
    }

    // down removes only what carries the label; volumes stay unless asked.
    let theirs = engine_cmd(sb, engine, &["network", "create", &mine_net]);
    assert!(theirs.ok(), "{}", theirs.all());
    let theirs = engine_cmd(
        sb,
        engine,
        &[
            "create",
            "--name",
            &mine_ctr,
            "localhost/podstack-test/postgres:15",
            "true",
        ],
    );
    assert!(theirs.ok(), "{}", theirs.all());
    let down = sb.podstack(&["--engine", engine, "down"]);
    assert!(down.ok(), "{}", down.all());
    if engine == "podman" && common::is_root() {
        let rules = Command::new("iptables")
            .args(["-S", "FORWARD"])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&rules.stdout).contains(&format!("podstack:{p}")),
            "down left isolation rules behind"
        );
    }
    assert_eq!(labelled(sb, engine, &p), (vec![], vec![]));
    assert!(engine_cmd(sb, engine, &["network", "inspect", &mine_net]).ok());
    assert!(engine_cmd(sb, engine, &["inspect", &mine_ctr]).ok());
    let vols = engine_cmd(sb, engine, &["volume", "ls", "--format", "{{.Name}}"]);
    assert!(
        vols.stdout.lines().any(|v| v == format!("{p}_data")),
        "{}",
        vols.all()
    );
    let gone = sb.podstack(&["--engine", engine, "down", "--volumes"]);
    assert!(gone.ok(), "{}", gone.all());
    let vols = engine_cmd(sb, engine, &["volume", "ls", "--format", "{{.Name}}"]);
    assert!(
        !vols.stdout.lines().any(|v| v == format!("{p}_data")),
        "{}",
        vols.all()
    );
}

#[test]
fn seed_000_on_docker_isolated() {
    if docker_here() {
        let sb = Sandbox::plain();
        seed_000_on(&sb, "docker", "isolated", "isolated");
    }
}

#[test]
fn seed_000_on_docker_host() {
    if docker_here() {
        let sb = Sandbox::plain();
        seed_000_on(&sb, "docker", "host", "host");
    }
}

#[test]
fn seed_000_on_rootful_podman_auto_is_isolated() {
    if let Some(sb) = Sandbox::rootful() {
        seed_000_on(&sb, "podman", "auto", "isolated");
    }
}

#[test]
fn seed_000_on_rootful_podman_host() {
    if let Some(sb) = Sandbox::rootful() {
        seed_000_on(&sb, "podman", "host", "host");
    }
}

#[test]
fn seed_000_on_rootless_podman_auto_is_host() {
    if let Some(sb) = Sandbox::rootless() {
        seed_000_on(&sb, "podman", "auto", "host");
        let why = sb.podstack(&["config", "--json"]);
        let why = json(&why)["mode_why"].as_str().unwrap().to_string();
        assert!(why.contains("/dev/net/tun"), "{why}");
    }
}

/// A stack file for the demo image on the host network.
fn demo_file(sb: &Sandbox, port: u16) -> String {
    let p = project_of(sb);
    let image = format!("localhost/{p}-web:1");
    let build = format!("'{}' __demo-image {image}", sb.bin.display());
    format!(
        "[services.web]\nimage = \"{image}\"\nbuild = \"{}\"\ncommand = [\"__serve\", \"http\", \"127.0.0.1:{port}\"]\nports = [{port}]\nready = {{ http = \"http://127.0.0.1:{port}/\" }}\ntimeout = \"30s\"\n",
        build.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[test]
fn podman_that_cannot_run_makes_auto_choose_docker_and_say_why() {
    let Some(sb) = Sandbox::rootful() else { return };
    if !docker_here() {
        return;
    }
    sb.write_stock();
    // Every runtime podman could be pointed at fails.
    let conf = sb.containers_conf();
    let mut text = sb.read(&conf);
    text = text.replace(
        "[engine]\n",
        "[engine]\nruntime = \"runc\"\n[engine.runtimes]\nrunc = [\"/bin/false\"]\ncrun = [\"/bin/false\"]\nrunsc = [\"/bin/false\"]\nkrun = [\"/bin/false\"]\n",
    );
    sb.write(&conf, &text);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &demo_file(&sb, port));
    let p = project_of(&sb);
    let _cleanup = Cleanup {
        sb: &sb,
        engine: "docker",
        extra: vec![vec!["rmi".into(), format!("localhost/{p}-web:1")]],
    };
    let up = sb.podstack(&["up", "--json"]);
    assert!(up.ok(), "{}", up.all());
    assert_eq!(json(&up)["engine"], "docker", "{}", up.all());
    assert!(up.stderr.contains("using Docker: "), "{}", up.stderr);
    let ps = docker(&[
        "ps",
        "--filter",
        &format!("name={p}-web"),
        "--format",
        "{{.Names}}",
    ]);
    assert!(ps.stdout.contains(&format!("{p}-web")), "{}", ps.all());
    let status = sb.podstack(&["status", "--json"]);
    assert_eq!(json(&status)["engine"], "docker", "{}", status.all());
}

/// A private dockerd beside the machine's, stopped and removed on drop.
struct PrivateDockerd {
    dir: tempfile::TempDir,
}

impl PrivateDockerd {
    /// A `dockerd` on PATH that runs the real one with private roots (the
    /// machine's /etc/docker/daemon.json is not read), no bridge, no iptables.
    fn new() -> PrivateDockerd {
        let dir = tempfile::Builder::new()
            .prefix("pd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display().to_string();
        fs_err::create_dir_all(dir.path().join("bin")).unwrap();
        fs_err::write(dir.path().join("daemon.json"), "{}\n").unwrap();
        let real = which("dockerd");
        let wrapper = dir.path().join("bin/dockerd");
        fs_err::write(
            &wrapper,
            format!(
                "#!/bin/sh\nenv > '{d}/env.txt'\nls -l /proc/self/fd > '{d}/fds.txt'\nexec '{real}' --config-file '{d}/daemon.json' --data-root '{d}/data' --exec-root '{d}/exec' --pidfile '{d}/dockerd.pid' --bridge none --iptables=false --storage-driver vfs \"$@\"\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        PrivateDockerd { dir }
    }

    fn socket(&self) -> String {
        format!("unix://{}/docker.sock", self.dir.path().display())
    }

    fn pid(&self) -> Option<i32> {
        fs_err::read_to_string(self.dir.path().join("dockerd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("docker")
                .args(["-H", &self.socket(), "rm", "-f"])
                .args(
                    String::from_utf8_lossy(
                        &Command::new("docker")
                            .args(["-H", &self.socket(), "ps", "-aq"])
                            .output()
                            .map(|o| o.stdout)
                            .unwrap_or_default(),
                    )
                    .split_whitespace(),
                )
                .output();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            for _ in 0..200 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        let _ = Command::new("umount")
            .arg(self.dir.path().join("exec/netns/default"))
            .output();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path().join("data"))
            .output();
    }
}

fn which(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn up_starts_dockerd_when_none_answers_and_down_leaves_it_running() {
    if !require("root", common::is_root())
        || !require("dockerd", !which("dockerd").is_empty())
        || !docker_here()
    {
        return;
    }
    let sb = Sandbox::plain();
    let pd = PrivateDockerd::new();
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &demo_file(&sb, port));
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        pd.dir.path().join("bin").display()
    );
    let sock = pd.socket();
    let wrapper = pd.dir.path().join("bin/dockerd").display().to_string();
    let env = [
        ("PATH", path.as_str()),
        ("DOCKER_HOST", sock.as_str()),
        // Another socket than the default: podstack runs the command named
        // here, never plain dockerd over the system's data root.
        ("PODSTACK_DOCKERD", wrapper.as_str()),
        ("HTTPS_PROXY", "http://proxy.example:3128"),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let bin = sb.bin.display().to_string();
    // Without PODSTACK_DOCKERD, a socket other than the default gets no
    // daemon started for it; `config` starts none either.
    let refused = sb.run_with(
        &bin,
        &["--engine", "docker", "up"],
        &[("DOCKER_HOST", sock.as_str()), ("PATH", path.as_str())],
    );
    assert_eq!(refused.code, 1, "{}", refused.all());
    assert!(
        refused.stderr.contains("set PODSTACK_DOCKERD"),
        "{}",
        refused.all()
    );
    let config = sb.run_with(&bin, &["--engine", "docker", "config"], &env);
    assert!(
        config.stderr.contains("does not start it"),
        "{}",
        config.all()
    );
    assert!(pd.pid().is_none(), "config started dockerd");
    let up = sb.run_with(&bin, &["--engine", "docker", "up"], &env);
    assert!(up.ok(), "{}", up.all());
    assert!(up.stderr.contains("started dockerd (pid"), "{}", up.stderr);
    let pid = pd.pid().expect("dockerd wrote its pid file");
    // Started the right way: its own session, stdin /dev/null, output to
    // the log in the state folder, the proxy passed on.
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "dockerd leads its own session");
    let fd0 = fs_err::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(fd0, Path::new("/dev/null"));
    let fd1 = fs_err::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert!(
        fd1.ends_with("state/podstack/dockerd.log"),
        "{}",
        fd1.display()
    );
    let fds = sb.read(&pd.dir.path().join("fds.txt"));
    let inherited: Vec<&str> = fds
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter(|l| {
            let fd = l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap();
            fd.parse::<u32>().is_ok_and(|n| n > 2)
        })
        .collect();
    // `ls` lists its own descriptors: the folder it reads is its own.
    assert!(
        inherited.iter().all(|l| l.contains("/proc/")),
        "dockerd inherited descriptors:\n{fds}"
    );
    let env_seen = sb.read(&pd.dir.path().join("env.txt"));
    assert!(
        env_seen.contains("HTTPS_PROXY=http://proxy.example:3128"),
        "{env_seen}"
    );
    assert!(
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/")])
            .output()
            .unwrap()
            .status
            .success()
    );
    let down = sb.run_with(&bin, &["--engine", "docker", "down"], &env);
    assert!(down.ok(), "{}", down.all());
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "down stopped dockerd"
    );
    // A second up finds it answering and starts no other.
    let again = sb.run_with(&bin, &["--engine", "docker", "up"], &env);
    assert!(again.ok(), "{}", again.all());
    assert!(
        !again.stderr.contains("started dockerd"),
        "{}",
        again.stderr
    );
    assert_eq!(pd.pid(), Some(pid));
    let _ = sb.run_with(&bin, &["--engine", "docker", "down"], &env);
}

/// A stack of the demo image on two networks of its own (Docker).
fn networked_demo_file(sb: &Sandbox, port: u16) -> String {
    let p = project_of(sb);
    let image = format!("localhost/{p}-web:1");
    let build = format!("'{}' __demo-image {image}", sb.bin.display());
    format!(
        "[networks.front]\n[networks.back]\n[services.web]\nimage = \"{image}\"\nbuild = \"{}\"\ncommand = [\"__serve\", \"http\", \"${{net.bind}}:{port}\"]\nnetworks = [\"front\", \"back\"]\nports = [{port}]\nready = {{ http = \"http://127.0.0.1:{port}/\" }}\ntimeout = \"30s\"\n",
        build.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

#[test]
fn down_names_a_users_container_that_holds_a_stack_network_and_removes_the_rest() {
    if !docker_here() {
        return;
    }
    let sb = Sandbox::plain();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &networked_demo_file(&sb, port));
    let theirs = format!("{p}-agent-mine");
    let _cleanup = Cleanup {
        sb: &sb,
        engine: "docker",
        extra: vec![
            vec!["rm".into(), "-f".into(), theirs.clone()],
            vec!["rmi".into(), format!("localhost/{p}-web:1")],
        ],
    };
    let up = sb.podstack(&["--engine", "docker", "up", "--json"]);
    assert!(up.ok(), "{}", up.all());
    assert_eq!(json(&up)["mode"], "isolated", "{}", up.all());
    // Running: Docker attaches a created container only when it starts.
    let made = docker(&[
        "run",
        "-d",
        "--name",
        &theirs,
        "--network",
        &format!("{p}-back"),
        &format!("localhost/{p}-web:1"),
        "__serve",
        "tcp",
        "127.0.0.1:9",
    ]);
    assert!(made.ok(), "{}", made.all());
    let down = sb.podstack(&["--engine", "docker", "down"]);
    assert_eq!(down.code, 2, "{}", down.all());
    assert!(
        down.stderr
            .contains(&format!("network {p}-back is still used by {theirs}")),
        "{}",
        down.all()
    );
    let (ctrs, nets) = labelled(&sb, "docker", &p);
    assert_eq!((ctrs.len(), nets.len()), (0, 1), "{ctrs:?} {nets:?}");
    assert!(docker(&["rm", "-f", &theirs]).ok());
    let again = sb.podstack(&["--engine", "docker", "down"]);
    assert!(again.ok(), "{}", again.all());
    assert_eq!(labelled(&sb, "docker", &p), (vec![], vec![]));
}

#[test]
fn ctrl_c_during_an_isolated_up_leaves_no_port_forwarding_behind() {
    let Some(sb) = Sandbox::rootful() else { return };
    sb.write_stock();
    let p = project_of(&sb);
    let port = free_port();
    sb.write(&sb.path("podstack.toml"), &networked_demo_file(&sb, port));
    let _cleanup = Cleanup {
        sb: &sb,
        engine: "podman",
        extra: vec![],
    };
    // Configured and imaged first, so the interrupt lands in the network setup.
    let first = sb.podstack(&["up"]);
    assert!(first.ok(), "{}", first.all());
    for delay in [150u64, 300, 500] {
        assert!(sb.podstack(&["down"]).ok());
        let mut cmd = Command::new(&sb.bin);
        cmd.arg("up")
            .env_clear()
            .envs(sb.env())
            .current_dir(sb.path(""))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = common::spawn(&mut cmd);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = child.wait();
        // What podman was doing finishes on its own; then down takes it all.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let down = sb.podstack(&["down"]);
        assert!(down.ok(), "{}", down.all());
        let nat = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .unwrap();
        let nat = String::from_utf8_lossy(&nat.stdout);
        assert!(
            !nat.lines().any(|l| l.contains(&format!("--dport {port} "))),
            "port forwarding for {port} left behind after Ctrl-C at {delay} ms:\n{nat}"
        );
        let up = sb.podstack(&["up"]);
        assert!(up.ok(), "after Ctrl-C at {delay} ms: {}", up.all());
    }
    let _ = p;
}
